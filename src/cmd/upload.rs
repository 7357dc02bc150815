//! `goldcap upload`: a finished capture (artifact and MANIFEST, named by
//! its JSON MANIFEST) to DRP, S3 or presigned PUT URLs, verified there.
//!
//! After the pipeline. Progress and the summary go to stderr; `--json` or
//! an asked-for presigned GET URL to stdout. Credentials never appear in
//! either.

use super::capture::uploaded_where;
use super::{print_json, print_text, show};
use crate::cli::config::UploadConfig;
use crate::report::error::Result;
use crate::report::exit::ExitCode;
use crate::report::ui::{Ui, human};
use crate::signals::Cancel;
use anyhow::Context as _;
use std::io::IsTerminal;

/// Runs `goldcap upload`.
pub(super) fn run(cfg: &UploadConfig, verbosity: i8) -> Result<ExitCode> {
    let cancel = Cancel::install().context("cannot install signal handlers")?;
    let files = &cfg.files;
    let mut ui = Ui::new(verbosity, std::io::stderr().is_terminal());
    ui.info(&format!(
        "uploading {} ({}) to {}",
        show(&files.artifact),
        human(files.size),
        cfg.target.describe()
    ));
    let started = std::time::Instant::now();
    ui.start_progress(Some(files.size), "uploading");
    let result = crate::upload::upload_files(&cfg.target, &cfg.opts, files, &ui, &cancel);
    ui.finish_progress();
    let up = result?;
    ui.say(&format!(
        "goldcap: uploaded {} ({}) and its MANIFEST to {} in {:.1}s; verified: {}",
        show(&files.artifact),
        human(files.size),
        uploaded_where(&up),
        started.elapsed().as_secs_f64(),
        up.objects.first().map_or("", |o| o.verified.as_str())
    ));
    if cfg.json {
        print_json(&up)?;
    } else if let Some(url) = &up.presigned_get {
        // Asked for: it is the command's output, so stdout (never stderr).
        print_text(&format!("{url}\n"))?;
    }
    Ok(ExitCode::Success)
}
