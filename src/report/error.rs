//! The error type of a whole command, and how it maps to an exit code.
//!
//! Sits at the edge: stages return `anyhow` errors with context (path and
//! cause), or one of the typed variants here when the caller must branch
//! on it (usage vs. failure vs. interruption). There is deliberately no
//! conversion from a bare `io::Error`: every I/O failure gets its context
//! (what goldcap was doing, on which path) before it becomes an `Error`.
//! Non-fatal problems are never errors: they are warnings counted by the
//! report. This module must never format a secret or a raw, unescaped
//! path.

use super::exit::ExitCode;

/// Why a command stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line or an input is wrong; nothing was done.
    #[error("{0}")]
    Usage(String),
    /// A signal asked us to stop; temporary files were removed. The note
    /// says what else the clean-up found (`"; <what is left>"`, or empty).
    #[error("interrupted by signal {0}; temporary files removed{1}")]
    Interrupted(i32, String),
    /// Anything else: the run failed. Shown with its whole chain of causes
    /// ("cannot publish the output: …: Permission denied").
    #[error("{0:#}")]
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        Error::Failed(e)
    }
}

impl Error {
    /// Shorthand for a usage error.
    pub fn usage(msg: impl Into<String>) -> Self {
        Error::Usage(msg.into())
    }

    /// This error with `tail` added to its message — what a clean-up after
    /// it left behind, what is complete anyway — and still of its kind: an
    /// interruption stays one (exit status 128 + N), a usage error one.
    pub fn append(self, tail: &str) -> Error {
        match self {
            Error::Usage(m) => Error::Usage(format!("{m}{tail}")),
            Error::Interrupted(sig, note) => Error::Interrupted(sig, format!("{note}{tail}")),
            Error::Failed(e) => Error::Failed(anyhow::anyhow!("{e:#}{tail}")),
        }
    }

    /// The exit code this error maps to.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage(_) => ExitCode::Usage,
            Error::Interrupted(sig, _) => ExitCode::Interrupted(*sig),
            Error::Failed(_) => ExitCode::Failure,
        }
    }
}

/// Result alias for whole commands.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn failures_show_their_causes() {
        let io = std::io::Error::from_raw_os_error(libc::EACCES);
        let e: Error = Err::<(), _>(io)
            .context("cannot publish the output")
            .unwrap_err()
            .into();
        let shown = e.to_string();
        assert!(shown.starts_with("cannot publish the output: "), "{shown}");
        assert!(shown.contains("Permission denied"), "{shown}");
        // A message built from it keeps the cause too.
        let again = anyhow::anyhow!("{e}; the artifact is left on the store");
        assert!(again.to_string().contains("Permission denied"));
        assert_eq!(e.exit_code(), ExitCode::Failure);
    }

    #[test]
    fn appending_keeps_the_kind() {
        let e = Error::Interrupted(15, String::new()).append("; /images/x.tgz is left");
        assert_eq!(e.exit_code(), ExitCode::Interrupted(15));
        assert_eq!(
            e.to_string(),
            "interrupted by signal 15; temporary files removed; /images/x.tgz is left"
        );
        assert_eq!(Error::usage("bad").append("!").exit_code(), ExitCode::Usage);
        let f = Error::from(anyhow::anyhow!("x")).append(" (y)");
        assert_eq!(
            (f.to_string().as_str(), f.exit_code()),
            ("x (y)", ExitCode::Failure)
        );
    }
}
