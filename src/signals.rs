//! Interruption: SIGINT, SIGTERM and SIGHUP stop a run cleanly.
//!
//! Sits beside the pipeline: the capture loop and the file copy loop call
//! [`Cancel::check`] between entries and between chunks. On the first
//! signal the run unwinds with [`Error::Interrupted`], which drops the
//! temporary files (nothing ever reaches a final name); a second signal
//! exits at once (for a process stuck in I/O), leaving at most a hidden
//! temporary file. This module must never remove anything itself.

use crate::error::Error;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The signals that interrupt a run.
pub const SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Shared "a signal arrived" state.
#[derive(Clone, Default)]
pub struct Cancel {
    which: Arc<AtomicUsize>,
}

impl Cancel {
    /// Installs the handlers.
    pub fn install() -> io::Result<Cancel> {
        let c = Cancel::default();
        let seen = Arc::new(AtomicBool::new(false));
        for sig in SIGNALS {
            // Order matters: the shutdown check runs before the flag is set,
            // so only a second signal exits immediately.
            signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, Arc::clone(&seen))?;
            signal_hook::flag::register(sig, Arc::clone(&seen))?;
            signal_hook::flag::register_usize(sig, Arc::clone(&c.which), sig as usize)?;
        }
        Ok(c)
    }

    /// A `Cancel` that never fires (tests, library use).
    pub fn never() -> Cancel {
        Cancel::default()
    }

    /// The signal received, if any.
    pub fn signal(&self) -> Option<i32> {
        match self.which.load(Ordering::Relaxed) {
            0 => None,
            s => Some(s as i32),
        }
    }

    /// `Err(Interrupted)` once a signal has arrived.
    pub fn check(&self) -> Result<(), Error> {
        match self.signal() {
            None => Ok(()),
            Some(sig) => Err(Error::Interrupted(sig)),
        }
    }
}
