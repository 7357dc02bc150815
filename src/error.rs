//! The error type of a whole command, and how it maps to an exit code.
//!
//! Sits at the edge: pipeline stages return `anyhow` errors with context
//! (path and cause), or one of the typed variants here when the caller must
//! branch on it (usage vs. failure vs. interruption). Non-fatal problems are
//! never errors: they are warnings counted by [`crate::report`]. This module
//! must never format a secret or a raw, unescaped path.

use crate::exit::ExitCode;

/// Why a command stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line or an input is wrong; nothing was done.
    #[error("{0}")]
    Usage(String),
    /// A signal asked us to stop; temporary files were removed.
    #[error("interrupted by signal {0}; temporary files removed")]
    Interrupted(i32),
    /// Anything else: the run failed.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl Error {
    /// Shorthand for a usage error.
    pub fn usage(msg: impl Into<String>) -> Self {
        Error::Usage(msg.into())
    }

    /// The exit code this error maps to.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage(_) => ExitCode::Usage,
            Error::Interrupted(sig) => ExitCode::Interrupted(*sig),
            Error::Failed(_) => ExitCode::Failure,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Failed(e.into())
    }
}

/// Result alias for whole commands.
pub type Result<T, E = Error> = std::result::Result<T, E>;
