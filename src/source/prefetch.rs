//! Read-ahead for the tar writer, so file reads do not stall it on a cold
//! disk.
//!
//! Sits between the walk and the tar writer: [`Lookahead`] keeps the walk a
//! few dozen entries (at most [`AHEAD_BYTES`] of file data) ahead of the
//! writer and hands each regular file it passes to one background thread,
//! which opens it relative to its directory's descriptor
//! (`O_NOFOLLOW|O_NONBLOCK|O_NOATIME`, as the writer does)
//! and asks the kernel to start reading its first [`HINT_BYTES`]
//! (`posix_fadvise(POSIX_FADV_WILLNEED)`). The writer then finds the data in
//! the page cache instead of waiting for one small read after another: the
//! disk sees several requests at once, as it would from a parallel reader,
//! while the archive keeps its order. Larger files are left to the kernel's
//! own sequential read-ahead once the writer reaches them.
//!
//! Hints cost an `open`, an `fadvise` and a `close` per file, which on a warm
//! cache is pure overhead (about 40 % of a small-file capture's time). So they
//! are given only while the disk is in the way: the hint thread first checks
//! whether the range is already cached ([`fsx::read_at_cached`]
//! of its last byte) and stops being given hints after [`HOLD_FILES`] cached
//! files in a row; the writer tries the first read of each file from the page
//! cache alone and, when it would have had to wait, reports it through
//! [`ColdReads`], which starts hints again. Where the cache cannot be checked,
//! every file is hinted.
//!
//! Files of [`DIRECT_MIN`] bytes or more are not hinted: when the writer
//! finds one uncached it reads it with `O_DIRECT`, straight from the disk
//! into its buffer. Filling the page cache and copying out of it is most of
//! the CPU a cold read costs (on a 2-core VM, a cold `/usr` read buffered
//! took 15 s of system time, with `O_DIRECT` for files of 64 KiB and more
//! 6 s), and a cold capture needs those cores for compressing. Small files
//! stay buffered and hinted: for them a direct read's fixed cost is larger
//! than the copy it saves. Once a filesystem refuses `O_DIRECT`
//! ([`ColdReads::direct_refused`]), large files are hinted too.
//!
//! A hint is only a hint: it never reads data into goldcap's memory, never
//! changes what or in which order things are archived, and is dropped when
//! the thread is behind. This module must never write to the source or
//! block the writer.

use crate::entry::{FileKind, SourceEntry};
use crate::source::fsx;
use crate::source::walk::Event;
use std::collections::VecDeque;
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

/// How far the walk may run ahead of the writer, in file bytes.
pub const AHEAD_BYTES: u64 = 32 << 20;
/// How far ahead, in entries.
pub const AHEAD_ENTRIES: usize = 64;
/// How much of each file is hinted.
pub const HINT_BYTES: u64 = 4 << 20;
/// After this many hinted files in a row that were already in the page
/// cache, hints stop until a read has to wait for the disk again.
pub const HOLD_FILES: u64 = 1024;
/// Files this large are read with `O_DIRECT` when they are not cached, so
/// they are not hinted (a hint would fill the cache the read bypasses).
pub const DIRECT_MIN: u64 = 64 << 10;

/// What reads tell the read-ahead about the page cache; shared by the tar
/// writer, the hint thread and the [`Lookahead`].
#[derive(Clone, Default)]
pub struct ColdReads(Arc<ColdInner>);

#[derive(Default)]
struct ColdInner {
    /// Hinted files in a row found already cached.
    warm_streak: AtomicU64,
    /// The filesystem cannot say what is cached.
    unknown: AtomicBool,
    /// The filesystem refused a direct read.
    no_direct: AtomicBool,
}

impl ColdReads {
    /// A read had to wait for the disk (or found only part of what it asked
    /// for in the page cache): hint again.
    pub fn note(&self) {
        self.0.warm_streak.store(0, Ordering::Relaxed);
    }

    /// A hinted file was already cached.
    fn cached(&self) {
        self.0.warm_streak.fetch_add(1, Ordering::Relaxed);
    }

    /// The filesystem cannot tell: hint every file from now on.
    pub fn cannot_tell(&self) {
        self.0.unknown.store(true, Ordering::Relaxed);
    }

    /// The filesystem refused `O_DIRECT`: large files are read through the
    /// page cache, so hint them too.
    pub fn direct_refused(&self) {
        self.0.no_direct.store(true, Ordering::Relaxed);
    }

    /// Whether uncached large files are read with `O_DIRECT` (the cache can
    /// be checked and no filesystem refused).
    pub fn direct(&self) -> bool {
        !self.0.unknown.load(Ordering::Relaxed) && !self.0.no_direct.load(Ordering::Relaxed)
    }

    fn hinting(&self, size: u64) -> bool {
        should_hint(
            self.0.warm_streak.load(Ordering::Relaxed),
            self.0.unknown.load(Ordering::Relaxed),
            size >= DIRECT_MIN && self.direct(),
        )
    }
}

/// Whether to hint the next file, given how many hinted files in a row were
/// found cached, whether the cache can be checked at all, and whether the
/// file would be read with `O_DIRECT` if uncached. Pure, so it is
/// table-tested.
fn should_hint(warm_streak: u64, unknown: bool, read_direct: bool) -> bool {
    !read_direct && (unknown || warm_streak < HOLD_FILES)
}

/// Whether the hinted range of `f` (its last byte) is already cached.
fn is_cached(f: &std::fs::File, len: u64, cold: &ColdReads) -> bool {
    let mut byte = [0u8; 1];
    match fsx::read_at_cached(f, &mut byte, len.saturating_sub(1)) {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
            cold.cannot_tell();
            false
        }
        Err(_) => false,
    }
}

/// The background thread that turns paths into read-ahead requests.
/// A file to hint: its directory (a duplicate of the walk's descriptor,
/// so the thread opens it where the walk found it, never by a host path),
/// its name, and how much to read ahead.
type Hint = (OwnedFd, CString, u64);

struct Hinter {
    tx: Option<mpsc::SyncSender<Hint>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Hinter {
    fn new(cold: ColdReads) -> Hinter {
        let (tx, rx) = mpsc::sync_channel::<Hint>(AHEAD_ENTRIES * 2);
        let thread = std::thread::Builder::new()
            .name("goldcap-readahead".into())
            .spawn(move || {
                for (dir, name, len) in rx {
                    if let Ok(f) = fsx::open_file_at(dir.as_fd(), &name) {
                        if is_cached(&f, len, &cold) {
                            cold.cached();
                            continue;
                        }
                        cold.note();
                        // A hint: nothing to report if it is not taken.
                        let _ = rustix::fs::fadvise(
                            &f,
                            0,
                            std::num::NonZeroU64::new(len),
                            rustix::fs::Advice::WillNeed,
                        );
                    }
                }
            })
            .ok();
        Hinter {
            tx: thread.as_ref().map(|_| tx),
            thread,
        }
    }

    fn hint(&self, entry: &SourceEntry, len: u64) {
        let (Some(tx), Some(dir)) = (&self.tx, &entry.parent) else {
            return;
        };
        if let Ok(dir) = dir.try_clone() {
            // Never wait: a hint the thread has no room for is dropped.
            let _ = tx.try_send((dir, entry.name.clone(), len));
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
    cold: ColdReads,
}

/// The size of a regular file's data, if `e` is one with data.
fn file_size(e: &Event) -> Option<u64> {
    match e {
        Event::Entry { entry, .. } if entry.stat.kind == FileKind::File && entry.stat.size > 0 => {
            Some(entry.stat.size)
        }
        _ => None,
    }
}

impl<I: Iterator<Item = Event>> Lookahead<I> {
    pub fn new(inner: I) -> Self {
        let cold = ColdReads::default();
        Lookahead {
            inner,
            queue: VecDeque::with_capacity(AHEAD_ENTRIES),
            bytes: 0,
            done: false,
            hinter: Hinter::new(cold.clone()),
            cold,
        }
    }

    /// Where the tar writer reports reads that waited for the disk.
    pub fn cold_reads(&self) -> ColdReads {
        self.cold.clone()
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
                    if let (Some(size), Event::Entry { entry, .. }) = (file_size(&e), &e) {
                        if self.cold.hinting(size) {
                            self.hinter.hint(entry, size.min(HINT_BYTES));
                        }
                        self.bytes += size.min(HINT_BYTES);
                    }
                    self.queue.push_back(e);
                }
                None => self.done = true,
            }
        }
        let e = self.queue.pop_front()?;
        if let Some(size) = file_size(&e) {
            self.bytes -= size.min(HINT_BYTES);
        }
        Some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_until_enough_files_were_cached_and_always_when_unknown() {
        // (hinted files in a row found cached, cannot tell, read direct)
        // -> hint?
        let cases: &[(u64, bool, bool, bool)] = &[
            (0, false, false, true),              // the start, or after a cold read
            (HOLD_FILES - 1, false, false, true), // still finding some uncached
            (HOLD_FILES, false, false, false),    // warm: hints stop
            (HOLD_FILES * 10, true, false, true), // no RWF_NOWAIT: always
            (0, false, true, false),              // large file, read with O_DIRECT
        ];
        for &(streak, unknown, direct, want) in cases {
            assert_eq!(
                should_hint(streak, unknown, direct),
                want,
                "{streak} {unknown} {direct}"
            );
        }
        let (small, large) = (DIRECT_MIN - 1, DIRECT_MIN);
        let c = ColdReads::default();
        assert!(c.direct());
        assert!(!c.hinting(large), "large files are read direct when cold");
        for _ in 0..HOLD_FILES {
            assert!(c.hinting(small));
            c.cached();
        }
        assert!(!c.hinting(small), "warm: hints stop");
        c.note();
        assert!(
            c.hinting(small),
            "a read that waited for the disk starts them again"
        );
        c.direct_refused();
        assert!(!c.direct());
        assert!(c.hinting(large), "no O_DIRECT: large files are hinted too");
        for _ in 0..HOLD_FILES {
            c.cached();
        }
        c.cannot_tell();
        assert!(c.hinting(small) && c.hinting(large));
        assert!(!c.direct(), "cannot tell what is cached: never direct");
    }
}
