//! `goldcap upload`: a finished capture (artifact and MANIFEST, named by
//! its JSON MANIFEST) to DRP, S3 or presigned PUT URLs, verified there.
//!
//! After the pipeline. Progress and the summary go to stderr; `--json` or
//! an asked-for presigned GET URL to stdout. Credentials never appear in
//! either.

use super::capture::uploaded_where;
use super::{print_json, print_text, show};
use crate::cli::config::UploadConfig;
use crate::output::digest::{Digests, HashingReader};
use crate::report::error::Result;
use crate::report::exit::ExitCode;
use crate::report::ui::{Ui, human};
use crate::signals::Cancel;
use crate::upload::Files;
use anyhow::Context as _;
use std::io::{IsTerminal, Read};

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
    check_local(files, &mut ui, &cancel)?;
    ui.start_transfer(files.size, "uploading");
    let result = crate::upload::upload_files(&cfg.target, &cfg.opts, files, &ui, &cancel);
    ui.finish_progress();
    let up = result?;
    let sent = |i: usize| up.objects.get(i).is_none_or(|o| o.sent);
    let (verb, note) = match (sent(0), sent(1)) {
        (true, true) => ("uploaded", ""),
        (false, false) => (
            "found",
            " (both already there with the same sha256: nothing sent)",
        ),
        (false, true) => (
            "found",
            " (the artifact already there with the same sha256: only the MANIFEST sent)",
        ),
        (true, false) => (
            "uploaded",
            " (the MANIFEST already there with the same sha256)",
        ),
    };
    ui.say(&format!(
        "goldcap: {verb} {} ({}) and its MANIFEST {} {}{note} in {:.1}s; verified: {}",
        show(&files.artifact),
        human(files.size),
        if verb == "found" { "on" } else { "to" },
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

/// The artifact must be what its MANIFEST says before a byte is sent: a
/// damaged or replaced local file must never overwrite a good copy on the
/// store. Read once, hashed as it is read.
fn check_local(files: &Files, ui: &mut Ui, cancel: &Cancel) -> Result<()> {
    ui.start_transfer(files.size, "checking");
    let result = (|| -> std::io::Result<Digests> {
        let f = std::fs::File::open(&files.artifact)?;
        let mut r = HashingReader::new(f).with_progress(ui);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            if cancel.signal().is_some() {
                break;
            }
            if r.read(&mut buf)? == 0 {
                break;
            }
        }
        Ok(r.hasher().digests())
    })();
    ui.finish_progress();
    cancel.check()?;
    let got = result.with_context(|| format!("cannot read {}", files.artifact.display()))?;
    if (got.size, got.md5.as_str(), got.sha256.as_str())
        != (files.size, files.md5.as_str(), files.sha256.as_str())
    {
        return Err(anyhow::anyhow!(
            "{} does not match its MANIFEST (size {}, sha256 {}; MANIFEST: size {}, sha256 {}): \
             it changed since the capture; nothing was sent",
            files.artifact.display(),
            got.size,
            got.sha256,
            files.size,
            files.sha256
        )
        .into());
    }
    Ok(())
}
