//! Interruption: SIGINT, SIGTERM and SIGHUP stop a run cleanly.
//!
//! Sits beside the pipeline: the capture loop and the file copy loop call
//! [`Cancel::check`] between entries and between chunks. On the first
//! signal the run unwinds with [`Error::Interrupted`], which drops the
//! temporary files (nothing ever reaches a final name); a second signal
//! exits at once (for a process stuck in I/O), leaving at most a hidden
//! temporary file — except while files are being published
//! ([`Cancel::publishing`]), when it waits, so the artifact is never left
//! without its MANIFEST by a signal. A signal that was ignored when goldcap
//! started (`nohup`) stays ignored. This module must never remove anything
//! itself.

use crate::report::error::Error;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The signals that interrupt a run.
pub const SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

static RECEIVED: AtomicUsize = AtomicUsize::new(0);
static PUBLISHING: AtomicBool = AtomicBool::new(false);

/// Interruption state (process-wide: signals are).
#[derive(Clone, Copy, Default)]
pub struct Cancel {
    installed: bool,
}

/// While alive, a second signal does not exit immediately.
pub struct Publishing(());

impl Drop for Publishing {
    fn drop(&mut self) {
        PUBLISHING.store(false, Ordering::SeqCst);
    }
}

fn is_ignored(sig: i32) -> io::Result<bool> {
    let mut old = std::mem::MaybeUninit::<libc::sigaction>::uninit();
    // SAFETY: a null `act` only queries the current disposition into `old`.
    let rc = unsafe { libc::sigaction(sig, std::ptr::null(), old.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sigaction succeeded and filled `old`.
    Ok(unsafe { old.assume_init() }.sa_sigaction == libc::SIG_IGN)
}

impl Cancel {
    pub fn install() -> io::Result<Cancel> {
        for sig in SIGNALS {
            if is_ignored(sig)? {
                continue;
            }
            // SAFETY: the handler only touches atomics and calls `_exit`,
            // both async-signal-safe.
            unsafe {
                signal_hook::low_level::register(sig, move || {
                    let first = RECEIVED.swap(sig as usize, Ordering::SeqCst) == 0;
                    if !first && !PUBLISHING.load(Ordering::SeqCst) {
                        signal_hook::low_level::exit(128 + sig);
                    }
                })?;
            }
        }
        Ok(Cancel { installed: true })
    }

    /// A `Cancel` that never fires (tests, library use).
    pub fn never() -> Cancel {
        Cancel { installed: false }
    }

    /// The signal received, if any.
    pub fn signal(&self) -> Option<i32> {
        if !self.installed {
            return None;
        }
        match RECEIVED.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s as i32),
        }
    }

    /// `Err(Interrupted)` once a signal has arrived.
    pub fn check(&self) -> Result<(), Error> {
        match self.signal() {
            None => Ok(()),
            Some(sig) => Err(Error::Interrupted(sig, String::new())),
        }
    }

    /// Marks the publication of finished files: until the guard is dropped,
    /// signals are recorded but never end the process.
    pub fn publishing(&self) -> Publishing {
        PUBLISHING.store(true, Ordering::SeqCst);
        Publishing(())
    }
}
