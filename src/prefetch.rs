//! Read-ahead for the tar writer, so file reads do not stall it on a cold
//! disk.
//!
//! Sits between the walk and the tar writer: [`Lookahead`] keeps the walk a
//! few dozen entries (at most [`AHEAD_BYTES`] of file data) ahead of the
//! writer and hands each regular file it passes to one background thread,
//! which opens it (`O_NOFOLLOW|O_NONBLOCK|O_NOATIME`, as the writer does)
//! and asks the kernel to start reading its first [`HINT_BYTES`]
//! (`posix_fadvise(POSIX_FADV_WILLNEED)`). The writer then finds the data in
//! the page cache instead of waiting for one small read after another: the
//! disk sees several requests at once, as it would from a parallel reader,
//! while the archive keeps its order. Larger files are left to the kernel's
//! own sequential read-ahead once the writer reaches them.
//!
//! A hint is only a hint: it never reads data into goldcap's memory, never
//! changes what or in which order things are archived, and is dropped when
//! the thread is behind. This module must never write to the source or
//! block the writer.

use crate::fsx::Kind;
use crate::walk::Event;
use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::mpsc;

/// How far the walk may run ahead of the writer, in file bytes.
pub const AHEAD_BYTES: u64 = 32 << 20;
/// How far ahead, in entries.
pub const AHEAD_ENTRIES: usize = 64;
/// How much of each file is hinted.
pub const HINT_BYTES: u64 = 4 << 20;

/// The background thread that turns paths into read-ahead requests.
struct Hinter {
    tx: Option<mpsc::SyncSender<PathBuf>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Hinter {
    fn new() -> Hinter {
        let (tx, rx) = mpsc::sync_channel::<PathBuf>(AHEAD_ENTRIES * 2);
        let thread = std::thread::Builder::new()
            .name("goldcap-readahead".into())
            .spawn(move || {
                for path in rx {
                    if let Ok(f) = crate::fsx::open_file(&path) {
                        // SAFETY: a valid open descriptor; fadvise only
                        // schedules reads into the page cache.
                        unsafe {
                            libc::posix_fadvise(
                                f.as_raw_fd(),
                                0,
                                HINT_BYTES as libc::off_t,
                                libc::POSIX_FADV_WILLNEED,
                            );
                        }
                    }
                }
            })
            .ok();
        Hinter {
            tx: thread.as_ref().map(|_| tx),
            thread,
        }
    }

    fn hint(&self, path: &std::path::Path) {
        if let Some(tx) = &self.tx {
            // Never wait: a hint the thread has no room for is dropped.
            let _ = tx.try_send(path.to_owned());
        }
    }
}

impl Drop for Hinter {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The walk's events, in their order, with read-ahead for the files among
/// the next few.
pub struct Lookahead<I: Iterator<Item = Event>> {
    inner: I,
    queue: VecDeque<Event>,
    bytes: u64,
    done: bool,
    hinter: Hinter,
}

fn file_bytes(e: &Event) -> Option<u64> {
    match e {
        Event::Entry { entry, .. } if entry.stat.kind == Kind::File && entry.stat.size > 0 => {
            Some(entry.stat.size.min(HINT_BYTES))
        }
        _ => None,
    }
}

impl<I: Iterator<Item = Event>> Lookahead<I> {
    /// Wraps the walk.
    pub fn new(inner: I) -> Self {
        Lookahead {
            inner,
            queue: VecDeque::with_capacity(AHEAD_ENTRIES),
            bytes: 0,
            done: false,
            hinter: Hinter::new(),
        }
    }
}

impl<I: Iterator<Item = Event>> Iterator for Lookahead<I> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        while !self.done
            && (self.queue.is_empty()
                || (self.queue.len() < AHEAD_ENTRIES && self.bytes < AHEAD_BYTES))
        {
            match self.inner.next() {
                Some(e) => {
                    if let (Some(n), Event::Entry { entry, .. }) = (file_bytes(&e), &e) {
                        self.hinter.hint(&entry.abs);
                        self.bytes += n;
                    }
                    self.queue.push_back(e);
                }
                None => self.done = true,
            }
        }
        let e = self.queue.pop_front()?;
        if let Some(n) = file_bytes(&e) {
            self.bytes -= n;
        }
        Some(e)
    }
}
