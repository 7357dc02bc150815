//! Commands: a validated configuration in, an exit code out.
//!
//! The front of the crate, after `cli`: [`run`] turns the parsed command
//! line into its configuration (`cli::config`), runs the command, and maps
//! errors to exit codes. Each command prints its own result — `--json` or
//! its listing on stdout, a summary line on stderr; commands are the only
//! modules that write to stdout.

mod apply;
mod capture;
mod dry_run;
mod inspect;
mod profile;
mod scrub;
mod token;
mod upload;
mod verify;

use crate::cli::Cli;
use crate::cli::config::Config;
use crate::report::error::Result;
use crate::report::escape::escape;
use crate::report::exit::ExitCode;
use serde::Serialize;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    let verbosity = cli.verbosity();
    let result = Config::from_cli(&cli).and_then(|config| match config {
        Config::Capture(mut cfg) => capture::run(&mut cfg, verbosity),
        Config::Scrub(cfg) => scrub::run(&cfg, verbosity),
        Config::Verify(cfg) => verify::run(&cfg, verbosity),
        Config::Apply(cfg) => apply::run(&cfg, verbosity),
        Config::Upload(cfg) => upload::run(&cfg, verbosity),
        Config::Token(cfg) => token::run(&cfg),
        Config::Profile(cfg) => profile::run(&cfg),
        Config::Man(dir) => crate::cli::man::write_all(&dir).map(|_| ExitCode::Success),
        Config::Completions(shell) => completions(shell),
        Config::Inspect { target, list, json } => inspect::run_inspect(&target, list, json),
        Config::Diff { a, b, json } => inspect::run_diff(&a, &b, json),
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            crate::report::ui::eprint_line(&format!("goldcap: error: {e}"));
            let code = e.exit_code();
            if cli.json() {
                // Whoever reads stdout as JSON gets an object on failure
                // too; the message is on stderr as well.
                let _ = print_json(&JsonError {
                    error: e.to_string(),
                    exit: code.code(),
                });
            }
            code
        }
    }
}

/// What `--json` prints on stdout when a command fails.
#[derive(Serialize)]
struct JsonError {
    error: String,
    exit: i32,
}

/// Prints the completion script for `shell` on stdout.
fn completions(shell: clap_complete::Shell) -> Result<ExitCode> {
    let mut script = Vec::new();
    clap_complete::generate(
        shell,
        &mut crate::cli::docs::command(),
        "goldcap",
        &mut script,
    );
    let mut stdout = std::io::stdout().lock();
    stdout_result(stdout.write_all(&script).and_then(|_| stdout.flush()))?;
    Ok(ExitCode::Success)
}

/// A host path for messages, escaped.
fn show(p: &Path) -> String {
    escape(p.as_os_str().as_bytes())
}

/// Pretty JSON on stdout. A closed stdout (`| head`) is not a failure.
fn print_json(v: &impl Serialize) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    let written = serde_json::to_writer_pretty(&mut stdout, v)
        .map_err(std::io::Error::from)
        .and_then(|_| writeln!(stdout));
    stdout_result(written)
}

/// Text on stdout. A closed stdout (`| head`) is not a failure.
fn print_text(text: &str) -> Result<()> {
    stdout_result(std::io::stdout().lock().write_all(text.as_bytes()))
}

fn stdout_result(written: std::io::Result<()>) -> Result<()> {
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(anyhow::Error::new(e)
            .context("cannot write to stdout")
            .into()),
        _ => Ok(()),
    }
}

/// `Warnings` (exit status 3) when there were any.
fn warnings_status(warnings: u64) -> ExitCode {
    if warnings > 0 {
        ExitCode::Warnings
    } else {
        ExitCode::Success
    }
}

/// `"; N warnings (exit status 3)"` for a summary line, or nothing.
fn warnings_tail(warnings: u64) -> String {
    if warnings > 0 {
        format!(
            "; {} (exit status 3)",
            crate::report::ui::count(warnings, "warning", "warnings")
        )
    } else {
        String::new()
    }
}
