//! `goldcap capture`: one capture, start to finish — the only place the
//! pipeline stages meet.
//!
//! A [`CaptureRun`] goes through its phases in order:
//!
//! 1. **open** the destinations: the upload stream first (a refused token
//!    stops the capture before the root is read), then the local
//!    temporary file and the path-list spool;
//! 2. **archive**: walk → policy → tar writer → compressor → hash tee →
//!    destinations, every event recorded in the report;
//! 3. **manifest**: the MANIFEST (text and JSON) under temporary names;
//! 4. **commit** the streamed upload, now that everything local is written;
//! 5. **publish**: artifact renamed first, MANIFESTs last, directory
//!    fsynced — undone if any step fails;
//! 6. **upload** what was not streamed (the MANIFESTs, or everything for a
//!    presigned PUT).
//!
//! Until the last rename succeeds nothing exists under a final name; an
//! error or a signal drops the temporaries. This module must never write
//! into the source root.

use super::{print_text, show, warnings_status, warnings_tail};
use crate::archive::{Ctx, Kind, Owners, TarWriter, archive_name};
use crate::cli::config::CaptureConfig;
use crate::entry::{FileKind, Reason, Synthetic};
use crate::output::atomic::{AtomicFile, sync_dir};
use crate::output::compress::Compressor;
use crate::output::digest::Digests;
use crate::output::manifest::Added;
use crate::output::manifest::EntryRecord;
use crate::output::manifest::{
    MANIFEST_VERSION, Manifest, PathList, Paths, ScrubSection, Source, Tool,
};
use crate::output::tee::HashTee;
use crate::prepare::firstboot::Hostname;
use crate::prepare::hooks::{self, HookRun, Place};
use crate::report::error::{Error, Result};
use crate::report::escape::{PATH_ENCODING, escape};
use crate::report::exit::ExitCode;
use crate::report::ui::{Ui, human};
use crate::report::{Effect, Report};
use crate::select::scrub::Plan;
use crate::signals::Cancel;
use crate::source::facts::Facts;
use crate::source::precount;
use crate::source::prefetch::Lookahead;
use crate::source::rootfs::RootFs;
use crate::source::walk::{Event, Walker};
use crate::upload::{self, Files, Stored, StreamNames, StreamUpload, Uploaded};
use anyhow::{Context as _, anyhow};
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Runs `goldcap capture` and prints its result.
pub(super) fn run(cfg: &mut CaptureConfig, verbosity: i8) -> Result<ExitCode> {
    let cancel = Cancel::install().context("cannot install signal handlers")?;
    if cfg.dry_run {
        return super::dry_run::run(cfg, &cancel);
    }
    let mut ui = Ui::new(verbosity, std::io::stderr().is_terminal());
    let hooks = run_hooks(cfg, &ui, &cancel)?;
    let cfg = &*cfg;
    ui.info(&format!(
        "capturing {} into {} ({})",
        show(&cfg.root),
        show(&cfg.output_dir.join(&cfg.names.artifact)),
        if cfg.live { "live system" } else { "directory" }
    ));
    // A kept secret or a clone without swap is said up front, not only
    // in the MANIFEST.
    for alert in cfg.policy.scrub().map(|p| p.alerts()).unwrap_or_default() {
        ui.warn(&alert);
    }
    if let Some(off) = cfg.policy.scrub().and_then(identity_kept) {
        ui.warn(&format!(
            "identity kept in the image by {off}: every clone of it shares what they guard \
             (the MANIFEST says so; upload refuses it without --allow-identity, verify fails it)"
        ));
    }
    let out = CaptureRun {
        cfg,
        cancel: &cancel,
        hooks: &hooks,
    }
    .run(&mut ui)?;
    ui.say(&summary(cfg, &out));
    if let Some(next) = next_step(&out) {
        ui.hint(&next);
    }
    if cfg.json {
        print_result(&out)?;
    } else if let Some(url) = out.uploaded.as_ref().and_then(|u| u.presigned_get.as_ref()) {
        // Asked for with --presign-get: output, so stdout, never the log.
        print_text(&format!("{url}\n"))?;
    }
    Ok(warnings_status(out.data.warning_count))
}

/// The one summary line on stderr.
fn summary(cfg: &CaptureConfig, out: &Outcome) -> String {
    let d = &out.data;
    format!(
        "goldcap: captured {} ({} read) from {} into {} ({}, md5 {}; MANIFEST {}) in {:.1}s{}{}",
        crate::report::ui::count(d.stats.entries, "entry", "entries"),
        human(d.stats.content_bytes),
        show(&cfg.root),
        match (&out.artifact, &out.uploaded) {
            (Some(a), Some(u)) => format!("{} and {}", show(a), uploaded_where(u)),
            (Some(a), None) => show(a),
            (None, Some(u)) => uploaded_where(u),
            (None, None) => String::new(),
        },
        human(d.digests.size),
        d.digests.md5,
        show(&out.manifest_json),
        out.elapsed.as_secs_f64(),
        if d.scrub.item_count > 0 {
            format!(
                "; scrubbed {} ({} removed)",
                crate::report::ui::count(d.scrub.item_count, "item", "items"),
                human(d.scrub.bytes_removed)
            )
        } else {
            String::new()
        },
        warnings_tail(d.warning_count)
    ) + &match d.scrub.identity_off.as_slice() {
        [] => String::new(),
        off => format!("; IDENTITY KEPT by {}", off.join(", ")),
    }
}

/// The command a person runs next, with the MANIFEST this run wrote:
/// `profile` after an upload, otherwise `verify` and `upload`. `None` when
/// a path cannot be pasted as shell text.
fn next_step(out: &Outcome) -> Option<String> {
    let manifest = crate::report::escape::shell_word(out.manifest_json.as_os_str().as_bytes())?;
    Some(match (&out.uploaded, &out.artifact) {
        (Some(_), _) => {
            format!("goldcap: next: goldcap profile {manifest}  (the DRP profile that deploys it)")
        }
        (None, Some(_)) => format!(
            "goldcap: next: goldcap verify {manifest}; goldcap upload {manifest} --to drp|s3://BUCKET|put:URL"
        ),
        (None, None) => return None,
    })
}

/// The operations through which a plan leaves identity in place, listed;
/// `None` when it leaves none.
pub(super) fn identity_kept(plan: &crate::select::scrub::Plan) -> Option<String> {
    let off = plan.identity_off();
    (!off.is_empty()).then(|| off.join(", "))
}

/// Where the artifact went, for summary lines.
pub(super) fn uploaded_where(u: &Uploaded) -> String {
    u.objects
        .first()
        .map_or_else(|| u.target.clone(), |o| o.url.clone())
}

/// What `--json` prints: one line.
#[derive(Serialize)]
struct JsonResult<'a> {
    /// `null` when the artifact was only uploaded.
    artifact: Option<String>,
    manifest: String,
    manifest_json: String,
    ident: &'a str,
    date: &'a str,
    size: u64,
    md5: &'a str,
    sha256: &'a str,
    format: crate::output::compress::Format,
    upload_tarball: &'a str,
    upload_manifest: &'a str,
    entries: u64,
    warnings: u64,
    warning_details: &'a [crate::report::Warning],
    scrub: &'a ScrubSection,
    #[serde(skip_serializing_if = "Option::is_none")]
    upload: Option<&'a Uploaded>,
}

fn print_result(out: &Outcome) -> Result<()> {
    let d = &out.data;
    let r = JsonResult {
        artifact: out.artifact.as_deref().map(show),
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
        scrub: &d.scrub,
        upload: out.uploaded.as_ref(),
    };
    let mut stdout = std::io::stdout().lock();
    let written = serde_json::to_writer(&mut stdout, &r)
        .map_err(std::io::Error::from)
        .and_then(|_| writeln!(stdout));
    super::stdout_result(written)
}

/// The result of a successful capture.
struct Outcome {
    /// Published artifact (`None` when only uploaded).
    artifact: Option<PathBuf>,
    /// Published text manifest.
    manifest: PathBuf,
    /// Published JSON manifest.
    manifest_json: PathBuf,
    /// What the manifest says (without the path list).
    data: Manifest,
    uploaded: Option<Uploaded>,
    elapsed: Duration,
}

/// One capture.
struct CaptureRun<'a> {
    cfg: &'a CaptureConfig,
    cancel: &'a Cancel,
    /// The hooks that ran before, for the MANIFEST.
    hooks: &'a [HookRun],
}

/// Runs the capture's hooks in order, in the root (a chroot) or on the
/// host (a live root, `--live-hooks`), then plans the scrub again for the
/// root they left. A failing hook ends the capture before anything is read.
fn run_hooks(cfg: &mut CaptureConfig, ui: &Ui, cancel: &Cancel) -> Result<Vec<HookRun>> {
    if cfg.hooks.is_empty() {
        return Ok(Vec::new());
    }
    let place = if cfg.live {
        Place::Host
    } else {
        Place::Chroot(&cfg.root)
    };
    let mut vars = vec![
        ("GOLDCAP_ROOT".to_owned(), cfg.root.display().to_string()),
        ("GOLDCAP_LIVE".to_owned(), u8::from(cfg.live).to_string()),
        ("GOLDCAP_IDENT".to_owned(), cfg.ident.clone()),
        (
            "GOLDCAP_DATE".to_owned(),
            cfg.date.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ),
        (
            "GOLDCAP_DSTAMP".to_owned(),
            crate::output::naming::date_stamp(&cfg.date),
        ),
        (
            "GOLDCAP_OS".to_owned(),
            cfg.os_tag.clone().unwrap_or_default(),
        ),
        ("GOLDCAP_ARTIFACT".to_owned(), cfg.names.artifact.clone()),
        (
            "GOLDCAP_UPLOAD_TARBALL".to_owned(),
            cfg.names.upload_tarball.clone(),
        ),
        (
            "GOLDCAP_UPLOAD_MANIFEST".to_owned(),
            cfg.names.upload_manifest.clone(),
        ),
        ("GOLDCAP_HOOK".to_owned(), String::new()),
    ];
    let mut runs = Vec::new();
    for hook in &cfg.hooks {
        if let Some(v) = vars.last_mut() {
            v.1.clone_from(&hook.name);
        }
        ui.say(&format!(
            "goldcap: running hook {} {}",
            hook.name,
            match place {
                Place::Chroot(_) => "in the chroot",
                Place::Host => "on this host",
            }
        ));
        let run = hooks::run(hook, &place, &vars, cancel, &mut |l| {
            ui.say(&format!("  {}| {l}", hook.name));
        })?;
        ui.info(&format!("hook {} took {:.1}s", run.name, run.seconds));
        runs.push(run);
    }
    cfg.replan()?;
    Ok(runs)
}

impl CaptureRun<'_> {
    fn run(&self, ui: &mut Ui) -> Result<Outcome> {
        let started = Instant::now();
        let cfg = self.cfg;
        self.refuse_existing()?;
        self.remove_stale(ui);
        let rootfs = RootFs::new(&cfg.root);
        let facts = Facts::gather(&rootfs, cfg.os_release.clone());
        for p in &facts.deploy_problems {
            ui.warn(p);
        }
        let output = self.open()?;
        let (mut output, paths, data) = self.archive(output, &rootfs, facts, ui)?;
        let (text, json) = self.manifest(&data, &paths)?;
        let streamed = self.commit(&mut output, &data, ui)?;
        let (artifact, manifest, manifest_json) =
            self.publish_or_withdraw(output.file, text, json, streamed.is_some())?;
        let uploaded = match &cfg.upload {
            Some(_) => {
                let files = Files {
                    artifact: artifact
                        .clone()
                        .unwrap_or_else(|| cfg.output_dir.join(&cfg.names.artifact)),
                    manifest: manifest.clone(),
                    manifest_json: manifest_json.clone(),
                    upload_tarball: cfg.names.upload_tarball.clone(),
                    upload_manifest: cfg.names.upload_manifest.clone(),
                    size: data.digests.size,
                    md5: data.digests.md5.clone(),
                    sha256: data.digests.sha256.clone(),
                    identity_off: Some(data.scrub.identity_off.clone()),
                };
                Some(self.upload_after(&files, streamed, artifact.is_some(), ui)?)
            }
            None => None,
        };
        Ok(Outcome {
            artifact,
            manifest,
            manifest_json,
            data,
            uploaded,
            elapsed: started.elapsed(),
        })
    }

    /// Whether the artifact is kept in the output directory.
    fn local_artifact(&self) -> bool {
        let cfg = self.cfg;
        cfg.upload.as_ref().is_none_or(|(t, _)| !t.can_stream()) || cfg.keep_local
    }

    /// Refuses to run when a final name is taken (unless `--force`).
    fn refuse_existing(&self) -> Result<()> {
        let cfg = self.cfg;
        if cfg.force {
            return Ok(());
        }
        let names = [
            &cfg.names.artifact,
            &cfg.names.manifest,
            &cfg.names.manifest_json,
        ];
        for name in names.into_iter().skip(usize::from(!self.local_artifact())) {
            let p = cfg.output_dir.join(name);
            if p.symlink_metadata().is_ok() {
                let unfinished = self.local_artifact()
                    && name != &cfg.names.artifact
                    && cfg
                        .output_dir
                        .join(&cfg.names.artifact)
                        .symlink_metadata()
                        .is_err();
                return Err(anyhow!(
                    "{} already exists{} (use --force to replace it)",
                    p.display(),
                    if unfinished {
                        ", without its artifact: the publication of an earlier run was cut short"
                    } else {
                        ""
                    }
                )
                .into());
            }
        }
        Ok(())
    }

    /// Temporaries that killed runs left in the output directory go, with a
    /// line saying so; those of a capture still running there stay.
    fn remove_stale(&self, ui: &Ui) {
        let dir = &self.cfg.output_dir;
        match crate::output::atomic::remove_stale(dir) {
            Ok(gone) if !gone.is_empty() => ui.say(&format!(
                "goldcap: removed {} temporar{} left by killed runs from {} ({}): {}",
                gone.len(),
                if gone.len() == 1 { "y" } else { "ies" },
                show(dir),
                human(gone.iter().map(|(_, n)| n).sum()),
                gone.iter()
                    .map(|(n, _)| escape(n.as_bytes()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Ok(_) => {}
            Err(e) => ui.warn(&format!(
                "cannot look for temporaries of killed runs in {}: {}",
                show(dir),
                crate::util::io_reason(&e)
            )),
        }
    }

    /// A temporary file in the output directory.
    fn create(&self, name: &str) -> Result<AtomicFile> {
        let dir = &self.cfg.output_dir;
        Ok(AtomicFile::create(dir, name).with_context(|| {
            format!(
                "cannot create files in the output directory {}",
                dir.display()
            )
        })?)
    }

    /// Phase 1: where the compressed bytes go — the local file, the upload
    /// stream (DRP, S3), or both with `--keep-local`. The upload starts
    /// first, so a refused token stops the capture before the root is read.
    fn open(&self) -> Result<Output> {
        let cfg = self.cfg;
        let stream = match &cfg.upload {
            Some((target, opts)) if target.can_stream() => {
                let names = StreamNames {
                    artifact: cfg.names.artifact.clone(),
                    manifest: cfg.names.manifest.clone(),
                    manifest_json: cfg.names.manifest_json.clone(),
                    upload_tarball: cfg.names.upload_tarball.clone(),
                    upload_manifest: cfg.names.upload_manifest.clone(),
                };
                Some(upload::start_stream(
                    target,
                    opts,
                    &names,
                    self.estimate_total(),
                    self.cancel,
                )?)
            }
            _ => None,
        };
        let file = if stream.is_none() || cfg.keep_local {
            Some(self.create(&cfg.names.artifact)?)
        } else {
            None
        };
        Ok(Output {
            file,
            stream,
            stream_error: None,
        })
    }

    /// Phase 2: the archive, into `output`; returns it (flushed and
    /// synced), the archived paths and the MANIFEST's data.
    fn archive(
        &self,
        output: Output,
        rootfs: &RootFs,
        facts: Facts,
        ui: &mut Ui,
    ) -> Result<(Output, Paths, Manifest)> {
        let cfg = self.cfg;
        let mut paths = PathList::new(&cfg.output_dir).with_context(|| {
            format!(
                "cannot create files in the output directory {}",
                cfg.output_dir.display()
            )
        })?;
        let compressor = Compressor::new(HashTee::new(output), cfg.format, cfg.level, cfg.threads)
            .context("cannot start the compressor")?;
        let mut tar = TarWriter::new(compressor, Owners::from_root(rootfs));
        ui.start_progress(self.estimate_total(), "capturing");
        let plan = cfg.policy.scrub();
        if let Some(p) = plan {
            tar.set_prescanned(p.prescan(&cfg.root));
        }
        let mut report = Report::new(ui);
        let walker = Walker::new(
            &cfg.root,
            &cfg.policy,
            cfg.mounts.clone(),
            Some(cfg.output_id),
            synthetic_entries(self.cfg, plan),
        );
        let events = Lookahead::new(walker);
        tar.set_cold_reads(events.cold_reads());
        let mut archiver = Archiver {
            tar,
            report: &mut report,
            paths: &mut paths,
            plan,
            cancel: self.cancel,
            ui,
        };
        // On a terminal, the bar's total is counted beside the capture
        // (what the walk will read, not the filesystem's usage).
        let stop = std::sync::atomic::AtomicBool::new(false);
        let counted = std::thread::scope(|s| -> Result<()> {
            if let Some(total) = archiver.ui.total_handle() {
                let (root, policy, stop) = (&cfg.root, &cfg.policy, &stop);
                s.spawn(move || {
                    if let Some(n) = precount::content_bytes(root, policy, stop) {
                        total.set(n);
                    }
                });
            }
            let result = events.into_iter().try_for_each(|event| {
                self.cancel.check()?;
                archiver.event(event)
            });
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            result
        });
        counted?;
        let tar = archiver.tar;
        report.stats.tar_bytes = tar.bytes_written() + 1024;
        crate::testhook::count("direct_reads", tar.direct_reads());
        let compressor = tar.finish().context("cannot finish the archive")?;
        let tee = compressor
            .finish()
            .context("cannot finish the compressed stream")?;
        let (mut output, digests) = tee.finish().context("cannot write the archive")?;
        if let Some(f) = &mut output.file {
            f.sync().context("cannot write the archive")?;
        }
        let paths = paths.finish().map_err(path_list_error)?;
        self.cancel.check()?;
        let data = self.manifest_data(facts, digests, &mut report);
        drop(report);
        ui.finish_progress();
        for p in &data.excludes_unmatched {
            ui.warn(&format!("--exclude {p:?} matched nothing"));
        }
        Ok((output, paths, data))
    }

    /// Everything the MANIFEST says, from the configuration and the run.
    fn manifest_data(&self, facts: Facts, digests: Digests, report: &mut Report<'_>) -> Manifest {
        let cfg = self.cfg;
        Manifest {
            manifest_version: MANIFEST_VERSION,
            tool: Tool::current(),
            filename: cfg.names.artifact.clone(),
            ident: cfg.ident.clone(),
            date: cfg.date.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            date_stamp: crate::output::naming::date_stamp(&cfg.date),
            digests,
            format: cfg.format,
            level: cfg.level,
            upload_tarball: cfg.names.upload_tarball.clone(),
            upload_manifest: cfg.names.upload_manifest.clone(),
            source: Source {
                root: escape(cfg.root.as_os_str().as_bytes()),
                live: cfg.live,
                unprivileged: cfg.unprivileged,
                os_tag: cfg.os_tag.clone(),
                facts,
            },
            stats: report.stats.clone(),
            pruned: std::mem::take(&mut report.pruned),
            pruned_count: report.pruned_count,
            scrub: ScrubSection::new(cfg.policy.scrub(), report),
            warnings: std::mem::take(&mut report.warnings),
            warning_count: report.warning_count,
            warnings_by_kind: report.warning_kinds.clone(),
            hooks: self.hooks.to_vec(),
            excludes_unmatched: cfg
                .policy
                .unmatched_excludes()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            added: Added {
                injected: cfg.added.injected.clone(),
                firstboot: cfg.added.firstboot.clone(),
                hostname: cfg.added.hostname.as_ref().map(|h| match h {
                    Hostname::Literal(n) | Hostname::Template(n) => n.clone(),
                }),
            },
            path_encoding: PATH_ENCODING,
        }
    }

    /// Phase 3: the text and JSON MANIFESTs, written and synced under
    /// temporary names.
    fn manifest(&self, data: &Manifest, paths: &Paths) -> Result<(AtomicFile, AtomicFile)> {
        let names = &self.cfg.names;
        let mut text = self.create(&names.manifest)?;
        data.write_text(paths, &mut text)
            .and_then(|()| text.sync())
            .context("cannot write the MANIFEST")?;
        let mut json = self.create(&names.manifest_json)?;
        data.write_json(paths, &mut json)
            .and_then(|()| json.sync())
            .context("cannot write the JSON MANIFEST")?;
        self.cancel.check()?;
        Ok((text, json))
    }

    /// Phase 4: only now, with every local file written and synced, is the
    /// streamed artifact committed on the store (DRP renames it, S3
    /// completes the multipart upload): a failure before this point leaves
    /// nothing there. With a local copy, a failed stream is a warning and
    /// the finished file is uploaded instead.
    fn commit(&self, output: &mut Output, data: &Manifest, ui: &Ui) -> Result<Option<Stored>> {
        let streamed = match output.stream.take() {
            Some(s) => match s.finish(&data.digests, self.cancel) {
                Ok(stored) => Some(stored),
                Err(e) if output.file.is_some() => {
                    output.stream_error = Some(e.to_string());
                    None
                }
                Err(e) => return Err(e),
            },
            None => None,
        };
        if let Some(err) = &output.stream_error {
            // --keep-local: the capture is complete locally, so nothing is
            // lost; upload_after sends the finished file, with retries.
            ui.warn(&format!(
                "the streamed upload failed ({err}); the local copy is complete, uploading it instead"
            ));
        }
        Ok(streamed)
    }

    /// Phase 5: [`Self::publish`]; if it fails after the artifact was
    /// committed on the store, that is withdrawn too.
    fn publish_or_withdraw(
        &self,
        artifact: Option<AtomicFile>,
        text: AtomicFile,
        json: AtomicFile,
        streamed: bool,
    ) -> Result<(Option<PathBuf>, PathBuf, PathBuf)> {
        let cfg = self.cfg;
        self.publish(artifact, text, json).map_err(|e| {
            let left = match (streamed, &cfg.upload) {
                (true, Some((target, opts))) => upload::withdraw_name(
                    target,
                    opts,
                    &cfg.names.upload_tarball,
                    &cfg.names.artifact,
                ),
                _ => None,
            };
            match left {
                Some(l) => e.append(&format!("; {l}")),
                None => e,
            }
        })
    }

    /// Publication: the text MANIFEST, the JSON MANIFEST, the artifact
    /// last, then the directory is fsynced. So at every instant — a
    /// `kill -9` or a power cut included — an artifact under its final
    /// name has both its MANIFESTs; a MANIFEST without its artifact is an
    /// unfinished publication. (Without a local artifact, the JSON MANIFEST
    /// is the last file.) If any step fails, what this run already renamed
    /// is removed again, so a failure leaves nothing under a final name.
    /// With `--force`, the old files go first, artifact first, so a new
    /// MANIFEST is never paired with an old artifact. A signal during
    /// publication waits.
    fn publish(
        &self,
        artifact: Option<AtomicFile>,
        text: AtomicFile,
        json: AtomicFile,
    ) -> Result<(Option<PathBuf>, PathBuf, PathBuf)> {
        let cfg = self.cfg;
        let _guard = self.cancel.publishing();
        if cfg.force {
            for name in [
                &cfg.names.artifact,
                &cfg.names.manifest_json,
                &cfg.names.manifest,
            ] {
                match std::fs::remove_file(cfg.output_dir.join(name)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(anyhow::Error::new(e)
                            .context(format!("cannot replace {name}"))
                            .into());
                    }
                    _ => {}
                }
            }
        }
        let mut done: Vec<PathBuf> = Vec::new();
        let undo = |done: &[PathBuf]| {
            for p in done {
                let _ = std::fs::remove_file(p);
            }
        };
        let has_artifact = artifact.is_some();
        for file in [text, json].into_iter().chain(artifact) {
            crate::testhook::pause("publish", file.final_name().as_bytes());
            match file.persist(false) {
                Ok(p) => done.push(p),
                Err(e) => {
                    undo(&done);
                    return Err(anyhow::Error::new(e)
                        .context("cannot publish the output")
                        .into());
                }
            }
        }
        if let Err(e) = sync_dir(&cfg.output_dir) {
            undo(&done);
            return Err(anyhow::Error::new(e)
                .context(format!("cannot sync {}", cfg.output_dir.display()))
                .into());
        }
        let mut it = done.into_iter();
        // Unwrap expectation: both manifests were published above.
        let (text, json) = (it.next().expect("manifest"), it.next().expect("json"));
        let artifact = if has_artifact { it.next() } else { None };
        Ok((artifact, text, json))
    }

    /// Phase 6, after the local files are published: the MANIFEST(s) to
    /// the store after a streamed artifact, or everything for a presigned
    /// PUT. A failure leaves nothing half-published: a streamed artifact is
    /// withdrawn, and local MANIFESTs of an artifact that exists nowhere
    /// are removed.
    fn upload_after(
        &self,
        files: &Files,
        streamed: Option<Stored>,
        local: bool,
        ui: &mut Ui,
    ) -> Result<Uploaded> {
        let cfg = self.cfg;
        // Unwrap expectation: called only with an upload target.
        let (target, opts) = cfg.upload.as_ref().expect("upload target");
        let Some(artifact) = streamed else {
            ui.start_transfer(files.size, "uploading");
            let r = upload::upload_files(target, opts, files, ui, self.cancel);
            ui.finish_progress();
            return r.map_err(|e| {
                e.append(&format!(
                    " (the capture itself is complete in {})",
                    cfg.output_dir.display()
                ))
            });
        };
        match upload::upload_manifests(target, opts, files, ui, self.cancel) {
            Ok(m) => {
                let mut objects = vec![artifact];
                objects.extend(m);
                Ok(Uploaded {
                    target: target.describe(),
                    objects,
                    presigned_get: upload::presigned_get(target, opts, files),
                })
            }
            Err(e) => {
                let left = upload::left_behind(upload::withdraw(target, opts, files));
                // Local MANIFESTs of an artifact that exists nowhere are
                // removed; if the store kept it, they are its only record.
                if !local && left.is_empty() {
                    let _ = std::fs::remove_file(&files.manifest);
                    let _ = std::fs::remove_file(&files.manifest_json);
                }
                Err(e.append(&left))
            }
        }
    }

    /// Estimated content bytes for the progress bar and S3 part sizes (see
    /// [`crate::source::mounts::MountTable::used_estimate`]).
    fn estimate_total(&self) -> Option<u64> {
        let cfg = self.cfg;
        cfg.mounts
            .as_ref()?
            .used_estimate(&cfg.root, &cfg.include_mounts)
    }
}

fn path_list_error(e: std::io::Error) -> Error {
    anyhow::Error::new(e)
        .context("cannot write the path list")
        .into()
}

/// The archive loop's state: each walk event goes into the tar stream, the
/// report and the path list.
struct Archiver<'a, 'u, W: Write> {
    tar: TarWriter<W>,
    report: &'a mut Report<'u>,
    paths: &'a mut PathList,
    plan: Option<&'a Plan>,
    cancel: &'a Cancel,
    ui: &'a Ui,
}

impl<W: Write> Archiver<'_, '_, W> {
    fn event(&mut self, event: Event) -> Result<()> {
        match event {
            Event::Entry { entry, note, scrub } => {
                if let Some(reason) = note {
                    self.report
                        .prune(&entry.rel, reason.kind(), true, reason.to_string());
                }
                let mut ctx = Ctx {
                    report: &mut *self.report,
                    cancel: self.cancel,
                    ui: self.ui,
                };
                let kind = match self.plan {
                    Some(plan) if !scrub.is_empty() => {
                        self.tar.append_scrubbed(&entry, &scrub, plan, &mut ctx)?
                    }
                    _ => self.tar.append(&entry, &mut ctx)?,
                };
                if let Some(kind) = kind {
                    let st = &entry.stat;
                    let owner = (st.perm, u64::from(st.uid), u64::from(st.gid));
                    self.archived(&entry.rel, kind, owner)?;
                }
            }
            Event::Synthetic(s) => {
                let kind = self.tar.append_synthetic(&s)?;
                self.report.stats.synthetic += 1;
                if let Some(op) = &s.op {
                    let effect = Effect {
                        op: op.clone(),
                        action: "add",
                        bytes_removed: 0,
                    };
                    self.report.scrubbed(&s.rel, std::slice::from_ref(&effect));
                }
                self.archived(&s.rel, kind, (s.mode, u64::from(s.uid), u64::from(s.gid)))?;
            }
            Event::Dropped {
                rel,
                reason: Reason::Scrub(op),
                stat,
                subtree,
                ..
            } => {
                let bytes = subtree.map_or(
                    if stat.kind == FileKind::File {
                        stat.size
                    } else {
                        0
                    },
                    |(b, _)| b,
                );
                let effect = Effect {
                    op,
                    action: "drop",
                    bytes_removed: bytes,
                };
                self.report.scrubbed(&rel, &[effect]);
                self.tar.forbid(&stat);
            }
            Event::Dropped { rel, reason, .. } => {
                if reason == Reason::Socket {
                    self.report.stats.sockets_skipped += 1;
                }
                self.report
                    .prune(&rel, reason.kind(), false, reason.to_string());
            }
            Event::Problem { rel, kind, message } => self.report.warn(&rel, kind, message),
        }
        Ok(())
    }

    /// Counts an archived entry and lists its name and record (`meta`:
    /// permission bits, uid, gid).
    fn archived(&mut self, rel: &[u8], kind: Kind, meta: (u32, u64, u64)) -> Result<()> {
        let written = self.tar.take_written();
        let record = EntryRecord {
            path: if rel.is_empty() {
                ".".into()
            } else {
                escape(rel)
            },
            kind: match kind {
                Kind::Dir => "dir",
                Kind::File { .. } => "file",
                Kind::Hardlink => "hardlink",
                Kind::Symlink => "symlink",
                Kind::Char => "char",
                Kind::Block => "block",
                Kind::Fifo => "fifo",
            }
            .into(),
            mode: format!("{:04o}", meta.0 & 0o7777),
            uid: meta.1,
            gid: meta.2,
            size: written.body.map(|(_, n)| n),
            sha256: written.body.map(|(d, _)| crate::util::hex(&d)),
            sparse: matches!(kind, Kind::File { sparse: true }),
            link: written.link.map(|l| {
                // A hard link names an archive member: shown as a path.
                escape(l.strip_prefix(b"./").unwrap_or(&l))
            }),
        };
        let s = &mut self.report.stats;
        s.entries += 1;
        match kind {
            Kind::Dir => s.directories += 1,
            Kind::File { sparse } => {
                s.files += 1;
                s.sparse_files += u64::from(sparse);
            }
            Kind::Hardlink => s.hardlinks += 1,
            Kind::Symlink => s.symlinks += 1,
            Kind::Char => s.char_devices += 1,
            Kind::Block => s.block_devices += 1,
            Kind::Fifo => s.fifos += 1,
        }
        self.paths
            .push(&escape(&archive_name(rel, kind == Kind::Dir)), &record)
            .map_err(path_list_error)?;
        self.ui.add_entry();
        Ok(())
    }
}

/// The artifact's destination: a local file, an upload stream, or both.
struct Output {
    file: Option<AtomicFile>,
    stream: Option<Box<dyn StreamUpload>>,
    /// Why the stream was given up while the local copy went on.
    stream_error: Option<String>,
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(f) = &mut self.file {
            f.write_all(buf)?;
        }
        if let Some(s) = &mut self.stream
            && let Err(e) = s.write_all(buf)
        {
            // With a local copy (--keep-local) the capture goes on and the
            // finished file is uploaded afterwards; without one it fails.
            if self.file.is_none() {
                return Err(e);
            }
            let left = self.stream.take().and_then(|s| s.abort());
            self.stream_error = Some(match left {
                Some(l) => format!("{e}; {l}"),
                None => e.to_string(),
            });
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if let Some(f) = &mut self.file {
            f.flush()?;
        }
        Ok(())
    }
}

/// What the walk adds to the root's own entries: the top-level `curtin/`,
/// the scrub plan's entries (the SSH regenerator, `add` rules), and the
/// user's additions with the directories above them.
pub(super) fn synthetic_entries(cfg: &CaptureConfig, plan: Option<&Plan>) -> Vec<Synthetic> {
    let curtin = Synthetic::dir(b"curtin".to_vec(), cfg.date.timestamp());
    let mut synthetic = vec![curtin];
    synthetic.extend(plan.iter().flat_map(|p| p.synthetic.iter().cloned()));
    let added = &cfg.added.entries;
    // The directories above what the user adds, where the root has
    // none (never replacing one it has).
    let mut have: std::collections::BTreeSet<Vec<u8>> = synthetic
        .iter()
        .chain(added)
        .map(|s| s.rel.clone())
        .collect();
    for a in added {
        let mut end = 0;
        while let Some(i) = a.rel[end..].iter().position(|&b| b == b'/') {
            end += i;
            let parent = a.rel[..end].to_vec();
            end += 1;
            if have.insert(parent.clone()) {
                synthetic.push(Synthetic::dir(parent, cfg.date.timestamp()));
            }
        }
    }
    synthetic.extend(added.iter().cloned());
    synthetic
}
