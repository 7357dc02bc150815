//! One capture, start to finish: the only place the pipeline stages meet.
//!
//! walk → policy → tar writer → compressor → hash tee → atomic file, then
//! the MANIFEST (text and JSON), then publication: artifact renamed first,
//! manifests last, directory fsynced. Until the last rename succeeds
//! nothing exists under a final name; an error or a signal drops the
//! temporaries. This module must never write into the source root.

use crate::archive::{Ctx, Kind, Owners, TarWriter, archive_name};
use crate::config::CaptureConfig;
use crate::error::{Error, Result};
use crate::escape::{PATH_ENCODING, escape};
use crate::facts::Facts;
use crate::fsx::Kind as FileKind;
use crate::manifest::{MANIFEST_VERSION, Manifest, PathList, ScrubSection, Source, Tool};
use crate::policy::Reason;
use crate::report::Report;
use crate::rootfs::RootFs;
use crate::scrub::Effect;
use crate::signals::Cancel;
use crate::sink::{AtomicFile, Compressor, HashTee, sync_dir};
use crate::ui::Ui;
use crate::walk::{Event, SynthKind, Synthetic, Walker};
use anyhow::{Context as _, anyhow};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The result of a successful capture.
#[derive(Debug)]
pub struct Outcome {
    /// Published artifact (`None` when only uploaded).
    pub artifact: Option<PathBuf>,
    /// Published text manifest.
    pub manifest: PathBuf,
    /// Published JSON manifest.
    pub manifest_json: PathBuf,
    /// What the manifest says (without the path list).
    pub data: Manifest,
    /// Where it was uploaded.
    pub uploaded: Option<crate::upload::Uploaded>,
    /// Wall time.
    pub elapsed: Duration,
}

/// Runs a capture.
pub fn run(cfg: &CaptureConfig, ui: &mut Ui, cancel: &Cancel) -> Result<Outcome> {
    let started = Instant::now();
    let rootfs = RootFs::new(&cfg.root);
    let local_artifact = cfg.upload.as_ref().is_none_or(|(t, _)| !t.can_stream()) || cfg.keep_local;
    let final_names = [
        &cfg.artifact_name,
        &cfg.manifest_name,
        &cfg.manifest_json_name,
    ];
    if !cfg.force {
        for name in final_names.into_iter().skip(usize::from(!local_artifact)) {
            let p = cfg.output_dir.join(name);
            if p.symlink_metadata().is_ok() {
                return Err(
                    anyhow!("{} already exists (use --force to replace it)", p.display()).into(),
                );
            }
        }
    }
    let facts = Facts::gather(&rootfs, cfg.os_release.clone());

    let create = |name: &str| {
        AtomicFile::create(&cfg.output_dir, name).with_context(|| {
            format!(
                "cannot create files in the output directory {}",
                cfg.output_dir.display()
            )
        })
    };
    // Where the compressed bytes go: the local file, the upload stream
    // (DRP, S3), or both with --keep-local. Starting the upload first means
    // a refused token stops the capture before the root is read.
    let stream = match &cfg.upload {
        Some((target, opts)) if target.can_stream() => {
            let names = crate::upload::StreamNames {
                artifact: cfg.artifact_name.clone(),
                upload_tarball: cfg.upload_tarball.clone(),
                upload_manifest: cfg.upload_manifest.clone(),
            };
            Some(crate::upload::start_stream(
                target,
                opts,
                &names,
                estimate_total(cfg),
                cancel,
            )?)
        }
        _ => None,
    };
    let file = if stream.is_none() || cfg.keep_local {
        Some(create(&cfg.artifact_name)?)
    } else {
        None
    };
    let artifact = Output {
        file,
        stream,
        stream_error: None,
    };
    let mut paths = PathList::new(&cfg.output_dir).with_context(|| {
        format!(
            "cannot create files in the output directory {}",
            cfg.output_dir.display()
        )
    })?;
    let compressor = Compressor::new(HashTee::new(artifact), cfg.format, cfg.level, cfg.threads)
        .context("cannot start the compressor")?;
    let mut tar = TarWriter::new(compressor, Owners::from_root(&rootfs));

    ui.start_progress(estimate_total(cfg), "capturing");
    let curtin = Synthetic {
        rel: b"curtin".to_vec(),
        kind: SynthKind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: cfg.date.timestamp(),
        replace: false,
        op: None,
    };
    let plan = cfg.policy.scrub();
    if let Some(p) = plan {
        tar.set_prescanned(p.prescan(&cfg.root));
    }
    let mut synthetic = vec![curtin];
    synthetic.extend(plan.iter().flat_map(|p| p.synthetic.iter().cloned()));
    let mut report = Report::new(ui);
    let walker = Walker::new(
        &cfg.root,
        &cfg.policy,
        cfg.mounts.clone(),
        Some(cfg.output_id),
        synthetic,
    );
    let spool = |e: std::io::Error| {
        Error::from(anyhow::Error::new(e).context("cannot write the path list"))
    };
    let events = crate::prefetch::Lookahead::new(walker);
    tar.set_cold_reads(events.cold_reads());
    for event in events {
        cancel.check()?;
        match event {
            Event::Entry { entry, note, scrub } => {
                if let Some(reason) = note {
                    report.prune(&entry.rel, reason.kind(), true, reason.to_string());
                }
                let kind = {
                    let mut ctx = Ctx {
                        report: &mut report,
                        cancel,
                        ui,
                    };
                    match plan {
                        Some(plan) if !scrub.is_empty() => {
                            tar.append_scrubbed(&entry, &scrub, plan, &mut ctx)?
                        }
                        _ => tar.append(&entry, &mut ctx)?,
                    }
                };
                let Some(kind) = kind else { continue };
                count(&mut report, kind);
                paths
                    .push(&escape(&archive_name(&entry.rel, kind == Kind::Dir)))
                    .map_err(spool)?;
                ui.add_entry();
            }
            Event::Synthetic(s) => {
                let kind = tar.append_synthetic(&s)?;
                count(&mut report, kind);
                report.stats.synthetic += 1;
                if let Some(op) = &s.op {
                    let effect = Effect {
                        op: op.clone(),
                        action: "add",
                        bytes_removed: 0,
                    };
                    report.scrubbed(&s.rel, std::slice::from_ref(&effect));
                }
                paths
                    .push(&escape(&archive_name(&s.rel, kind == Kind::Dir)))
                    .map_err(spool)?;
                ui.add_entry();
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
                report.scrubbed(
                    &rel,
                    &[Effect {
                        op,
                        action: "drop",
                        bytes_removed: bytes,
                    }],
                );
                tar.forbid(&stat);
            }
            Event::Dropped { rel, reason, .. } => {
                if reason == Reason::Socket {
                    report.stats.sockets_skipped += 1;
                }
                report.prune(&rel, reason.kind(), false, reason.to_string());
            }
            Event::Problem { rel, kind, message } => report.warn(&rel, kind, message),
        }
    }

    report.stats.tar_bytes = tar.bytes_written() + 1024;
    crate::testhook::count("direct_reads", tar.direct_reads());
    let compressor = tar.finish().context("cannot finish the archive")?;
    let tee = compressor
        .finish()
        .context("cannot finish the compressed stream")?;
    let (mut output, digests) = tee.finish().context("cannot write the archive")?;
    if let Some(f) = &mut output.file {
        f.sync()?;
    }
    let paths = paths.finish().map_err(spool)?;
    cancel.check()?;

    let data = Manifest {
        manifest_version: MANIFEST_VERSION,
        tool: Tool::current(),
        filename: cfg.artifact_name.clone(),
        ident: cfg.ident.clone(),
        date: cfg.date.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        date_stamp: crate::naming::date_stamp(&cfg.date),
        digests,
        format: cfg.format,
        level: cfg.level,
        upload_tarball: cfg.upload_tarball.clone(),
        upload_manifest: cfg.upload_manifest.clone(),
        source: Source {
            root: escape(cfg.root.as_os_str().as_bytes()),
            live: cfg.live,
            os_tag: cfg.os_tag.clone(),
            facts,
        },
        stats: report.stats.clone(),
        pruned: std::mem::take(&mut report.pruned),
        pruned_count: report.pruned_count,
        scrub: ScrubSection::new(cfg.policy.scrub(), &mut report),
        warnings: std::mem::take(&mut report.warnings),
        warning_count: report.warning_count,
        path_encoding: PATH_ENCODING,
    };
    drop(report);
    ui.finish_progress();

    let mut text = create(&cfg.manifest_name)?;
    data.write_text(&paths, &mut text)
        .context("cannot write the MANIFEST")?;
    text.sync()?;
    let mut json = create(&cfg.manifest_json_name)?;
    data.write_json(&paths, &mut json)
        .context("cannot write the JSON MANIFEST")?;
    json.sync()?;
    cancel.check()?;

    // Only now, with every local file written and synced, is the streamed
    // artifact committed on the store (DRP renames it, S3 completes the
    // multipart upload): a failure before this point leaves nothing there.
    let streamed = match output.stream.take() {
        Some(s) => match s.finish(&data.digests, cancel) {
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

    let (artifact_path, manifest, manifest_json) =
        match publish(cfg, cancel, output.file, text, json) {
            Ok(p) => p,
            Err(e) => {
                let left = match (&streamed, &cfg.upload) {
                    (Some(_), Some((target, opts))) => crate::upload::withdraw_name(
                        target,
                        opts,
                        &cfg.upload_tarball,
                        &cfg.artifact_name,
                        cancel,
                    ),
                    _ => None,
                };
                return Err(match left {
                    Some(l) => anyhow!("{e}; {l}").into(),
                    None => e,
                });
            }
        };
    let uploaded = match &cfg.upload {
        Some((target, opts)) => {
            let files = crate::upload::Files {
                artifact: artifact_path
                    .clone()
                    .unwrap_or_else(|| cfg.output_dir.join(&cfg.artifact_name)),
                manifest: manifest.clone(),
                manifest_json: manifest_json.clone(),
                upload_tarball: cfg.upload_tarball.clone(),
                upload_manifest: cfg.upload_manifest.clone(),
                size: data.digests.size,
                md5: data.digests.md5.clone(),
                sha256: data.digests.sha256.clone(),
            };
            Some(upload_after(
                cfg,
                target,
                opts,
                &files,
                streamed,
                artifact_path.is_some(),
                ui,
                cancel,
            )?)
        }
        None => None,
    };
    Ok(Outcome {
        artifact: artifact_path,
        manifest,
        manifest_json,
        data,
        uploaded,
        elapsed: started.elapsed(),
    })
}

/// After the local files are published: the MANIFEST(s) to the store after
/// a streamed artifact, or everything for a presigned PUT. A failure leaves
/// nothing half-published: a streamed artifact is withdrawn, and local
/// MANIFESTs of an artifact that exists nowhere are removed.
#[allow(clippy::too_many_arguments)]
fn upload_after(
    cfg: &CaptureConfig,
    target: &crate::upload::Target,
    opts: &crate::upload::Options,
    files: &crate::upload::Files,
    streamed: Option<crate::upload::Stored>,
    local: bool,
    ui: &mut Ui,
    cancel: &Cancel,
) -> Result<crate::upload::Uploaded> {
    match streamed {
        Some(artifact) => match crate::upload::upload_manifests(target, opts, files, ui, cancel) {
            Ok(m) => {
                let mut objects = vec![artifact];
                objects.extend(m);
                Ok(crate::upload::Uploaded {
                    target: target.describe(),
                    objects,
                    presigned_get: crate::upload::presigned_get(target, opts, files),
                })
            }
            Err(e) => {
                let left = crate::upload::left_behind(crate::upload::withdraw(
                    target, opts, files, cancel,
                ));
                // Local MANIFESTs of an artifact that exists nowhere are
                // removed; if the store kept it, they are its only record.
                if !local && left.is_empty() {
                    let _ = std::fs::remove_file(&files.manifest);
                    let _ = std::fs::remove_file(&files.manifest_json);
                }
                Err(anyhow::anyhow!("{e}{left}").into())
            }
        },
        None => {
            ui.start_progress(Some(files.size), "uploading");
            let r = crate::upload::upload_files(target, opts, files, ui, cancel);
            ui.finish_progress();
            r.map_err(|e| {
                Error::Failed(anyhow::anyhow!(
                    "{e} (the capture itself is complete in {})",
                    cfg.output_dir.display()
                ))
            })
        }
    }
}

/// The artifact's destination: a local file, an upload stream, or both.
struct Output {
    file: Option<AtomicFile>,
    stream: Option<Box<dyn crate::upload::StreamUpload>>,
    /// Why the stream was given up while the local copy went on.
    stream_error: Option<String>,
}

impl std::io::Write for Output {
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

/// Publication: the artifact first, the MANIFEST last, then the directory
/// is fsynced. If any step fails, what this run already renamed is removed
/// again, so a failure leaves nothing under a final name. With `--force`,
/// old manifests are removed first, so an interruption can never pair a new
/// artifact with an old MANIFEST. A signal during publication waits.
fn publish(
    cfg: &CaptureConfig,
    cancel: &Cancel,
    artifact: Option<AtomicFile>,
    text: AtomicFile,
    json: AtomicFile,
) -> Result<(Option<PathBuf>, PathBuf, PathBuf)> {
    let _guard = cancel.publishing();
    if cfg.force {
        for name in [&cfg.manifest_name, &cfg.manifest_json_name] {
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
    for file in artifact.into_iter().chain([text, json]) {
        match file.persist(cfg.force) {
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
    let artifact = if has_artifact { it.next() } else { None };
    // Unwrap expectation: both manifests were published above.
    Ok((
        artifact,
        it.next().expect("manifest"),
        it.next().expect("json"),
    ))
}

fn count(report: &mut Report<'_>, kind: Kind) {
    let s = &mut report.stats;
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
}

/// Estimated content bytes for the progress bar: the used blocks of the
/// root's filesystem and of each crossed mount — only when the root is a
/// whole mounted filesystem (a live `/` or a mounted image); a directory on
/// a shared filesystem gets no estimate (a spinner) rather than a wrong one.
fn estimate_total(cfg: &CaptureConfig) -> Option<u64> {
    let table = cfg.mounts.as_ref()?;
    // A bind mount of a subdirectory reports the whole filesystem's usage.
    if table.at(&cfg.root)?.fs_root != Path::new("/") {
        return None;
    }
    let mut total = used_bytes(&cfg.root)?;
    for rel in &cfg.include_mounts {
        let p = cfg.root.join(std::ffi::OsStr::from_bytes(rel));
        if table.at(&p).is_some_and(|m| m.fs_root == Path::new("/")) {
            total += used_bytes(&p).unwrap_or(0);
        }
    }
    Some(total)
}

fn used_bytes(p: &Path) -> Option<u64> {
    let c = CString::new(p.as_os_str().as_bytes()).ok()?;
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: valid path, writable struct of the right size.
    if unsafe { libc::statvfs(c.as_ptr(), s.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0.
    let s = unsafe { s.assume_init() };
    Some((s.f_blocks.saturating_sub(s.f_bfree)) * s.f_frsize)
}
