//! Commands: parsed arguments in, an exit code out.
//!
//! Sits between `main` and the library: builds the configuration, runs the
//! command, prints the result (`--json` on stdout, a summary line on
//! stderr) and maps errors to [`ExitCode`]s. This is the only module that
//! writes to stdout.

use crate::capture::{self, Outcome};
use crate::cli::{Cli, Command};
use crate::config::CaptureConfig;
use crate::error::{Error, Result};
use crate::escape::escape;
use crate::exit::ExitCode;
use crate::manifest::human;
use crate::signals::Cancel;
use crate::ui::Ui;
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    let verbosity = cli.verbosity();
    let result = match &cli.command {
        Command::Capture(args) => {
            CaptureConfig::from_args(args).and_then(|cfg| run_capture(&cfg, args.json, verbosity))
        }
        Command::Man { output_dir } => crate::man::write_all(output_dir).map(|_| ExitCode::Success),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            crate::ui::eprint_line(&format!("goldcap: error: {}", format_error(&e)));
            e.exit_code()
        }
    }
}

fn format_error(e: &Error) -> String {
    match e {
        Error::Failed(inner) => format!("{inner:#}"),
        other => other.to_string(),
    }
}

fn show(p: &Path) -> String {
    escape(p.as_os_str().as_bytes())
}

/// What `--json` prints.
#[derive(Serialize)]
struct JsonResult<'a> {
    artifact: String,
    manifest: String,
    manifest_json: String,
    ident: &'a str,
    date: &'a str,
    size: u64,
    md5: &'a str,
    sha256: &'a str,
    format: crate::sink::Format,
    upload_tarball: &'a str,
    upload_manifest: &'a str,
    entries: u64,
    warnings: u64,
    warning_details: &'a [crate::report::Warning],
}

fn run_capture(cfg: &CaptureConfig, json: bool, verbosity: i8) -> Result<ExitCode> {
    let cancel = Cancel::install()?;
    let mut ui = Ui::new(verbosity, std::io::stderr().is_terminal());
    ui.info(&format!(
        "capturing {} into {} ({})",
        show(&cfg.root),
        show(&cfg.output_dir.join(&cfg.artifact_name)),
        if cfg.live { "live system" } else { "directory" }
    ));
    let out: Outcome = capture::run(cfg, &mut ui, &cancel)?;
    let d = &out.data;
    ui.say(&format!(
        "goldcap: captured {} entries ({} read) from {} into {} ({}, md5 {}) in {:.1}s{}",
        d.stats.entries,
        human(d.stats.content_bytes),
        show(&cfg.root),
        show(&out.artifact),
        human(d.digests.size),
        d.digests.md5,
        out.elapsed.as_secs_f64(),
        if d.warning_count > 0 {
            format!("; {} warnings (exit status 3)", d.warning_count)
        } else {
            String::new()
        }
    ));
    if json {
        let r = JsonResult {
            artifact: show(&out.artifact),
            manifest: show(&out.manifest),
            manifest_json: show(&out.manifest_json),
            ident: &d.ident,
            date: &d.date,
            size: d.digests.size,
            md5: &d.digests.md5,
            sha256: &d.digests.sha256,
            format: d.format,
            upload_tarball: &d.upload_tarball,
            upload_manifest: &d.upload_manifest,
            entries: d.stats.entries,
            warnings: d.warning_count,
            warning_details: &d.warnings,
        };
        let mut stdout = std::io::stdout().lock();
        let written = serde_json::to_writer(&mut stdout, &r)
            .map_err(std::io::Error::from)
            .and_then(|_| writeln!(stdout));
        // A closed stdout (`| head`) is not a failed capture.
        if let Err(e) = written
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            return Err(e.into());
        }
    }
    Ok(if d.warning_count > 0 {
        ExitCode::Warnings
    } else {
        ExitCode::Success
    })
}
