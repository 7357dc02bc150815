//! The command line: clap definitions ([`Cli`]), and the validated
//! configuration each command runs with (`config`: flags → config → run).
//!
//! Before the commands, after every stage: the configuration names the
//! stages' own types (a policy, a scrub plan, upload targets). Nothing
//! here does work beyond validating and resolving names.

mod args;
pub(crate) mod config;
pub(crate) mod man;

pub use args::Cli;
pub(crate) use args::{
    CaptureArgs, Command, FormatArg, ProfileArgs, ScrubArgs, ScrubCmdArgs, TokenArgs, UploadArgs,
    UploadCmdArgs, VerifyArgs,
};
