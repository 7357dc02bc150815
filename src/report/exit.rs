//! Exit codes: the contract between goldcap and the scripts that run it.
//!
//! Sits at the very end of the pipeline: `main` maps the outcome of a run to
//! one of these and nothing else. Scripts branch on them (a DRP task with
//! `sane-exit-codes`, a CI job), so they are few, stable and documented here,
//! in `--help` and in the man page. This module must never grow a code that
//! means "partly written": every failure leaves nothing under a final name.

use std::process;

/// Every exit status goldcap can return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// 0: the command did everything it was asked to, without warnings.
    Success,
    /// 1: the command failed (I/O error, full disk, output already exists,
    /// upload refused, …). Nothing was left under a final name, except a
    /// complete local capture whose upload failed afterwards. For `apply`,
    /// also a `--hook` that failed; the target keeps
    /// `.goldcap-apply-incomplete`.
    Failure,
    /// 2: the command line or an input is wrong (bad option, template,
    /// ident, date, a root that is not a directory, …). Nothing was done —
    /// except by `apply` when a `--ssh-authorized-key` user is missing from
    /// the image's `/etc/passwd`, which is known only once it is extracted:
    /// the target keeps `.goldcap-apply-incomplete`.
    Usage,
    /// 3: the artifact was written and is valid, but with warnings: files
    /// that vanished, changed or could not be read during the capture. Each
    /// is listed on stderr and in the MANIFEST. For `apply`: every entry was
    /// written, but some metadata could not be set (listed).
    Warnings,
    /// 4: `goldcap verify` found problems (each is listed), or `goldcap
    /// apply` refused the artifact: it does not match its MANIFEST, cannot
    /// be read, or holds entries that would leave the target (listed). The
    /// target keeps `.goldcap-apply-incomplete`, saying why.
    VerifyFailed,
    /// 128 + N: interrupted by signal N (130 for SIGINT, 143 for SIGTERM).
    /// Temporary files were removed.
    Interrupted(i32),
}

impl ExitCode {
    pub fn code(self) -> i32 {
        match self {
            ExitCode::Success => 0,
            ExitCode::Failure => 1,
            ExitCode::Usage => 2,
            ExitCode::Warnings => 3,
            ExitCode::VerifyFailed => 4,
            ExitCode::Interrupted(sig) => 128 + sig,
        }
    }

    /// Exits the process with this status.
    pub fn exit(self) -> ! {
        process::exit(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        assert_eq!(ExitCode::Success.code(), 0);
        assert_eq!(ExitCode::Failure.code(), 1);
        assert_eq!(ExitCode::Usage.code(), 2);
        assert_eq!(ExitCode::Warnings.code(), 3);
        assert_eq!(ExitCode::VerifyFailed.code(), 4);
        assert_eq!(ExitCode::Interrupted(libc::SIGINT).code(), 130);
        assert_eq!(ExitCode::Interrupted(libc::SIGTERM).code(), 143);
    }
}
