//! The command line: clap definitions ([`Cli`]), and the validated
//! configuration each command runs with (`config`: flags → config → run).
//!
//! Before the commands, after every stage: the configuration names the
//! stages' own types (a policy, a scrub plan, upload targets). Nothing
//! here does work beyond validating and resolving names.

mod args;
pub(crate) mod config;
pub(crate) mod docs;
mod file;
pub(crate) mod man;

pub use args::Cli;

/// Parses the process's command line, with the config file's settings for
/// `capture` put in front of the typed ones; exits with status 2 on an
/// error, as clap does.
pub fn parse() -> Cli {
    use clap::FromArgMatches;
    let mut cmd = docs::command();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let capture = cmd.find_subcommand("capture").cloned();
    let args = match capture.map(|c| file::expand(args.clone(), &c)) {
        Some(Ok(a)) => a,
        Some(Err(e)) => {
            crate::report::ui::eprint_line(&format!("goldcap: error: {e}"));
            crate::report::exit::ExitCode::Usage.exit()
        }
        None => args,
    };
    let matches = cmd
        .try_get_matches_from_mut(args)
        .unwrap_or_else(|e| e.exit());
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}
pub(crate) use args::{
    ApplyArgs, CaptureArgs, Command, ConnArgs, DeployerArg, FormatArg, ProfileArgs, ScrubArgs,
    ScrubCmdArgs, TokenArgs, UploadArgs, UploadCmdArgs, VerifyArgs,
};
