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
        Command::Scrub(args) => run_scrub(args, verbosity),
        Command::Verify(args) => run_verify(args),
        Command::Upload(args) => run_upload(args, verbosity),
        Command::Token(args) => run_token(args),
        Command::Profile(args) => run_profile(args),
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
    /// `null` when the artifact was only uploaded.
    artifact: Option<String>,
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
    scrub: &'a crate::manifest::ScrubSection,
    #[serde(skip_serializing_if = "Option::is_none")]
    upload: Option<&'a crate::upload::Uploaded>,
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
        "goldcap: captured {} entries ({} read) from {} into {} ({}, md5 {}) in {:.1}s{}{}",
        d.stats.entries,
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
        out.elapsed.as_secs_f64(),
        if d.scrub.item_count > 0 {
            format!(
                "; scrubbed {} items ({} removed)",
                d.scrub.item_count,
                human(d.scrub.bytes_removed)
            )
        } else {
            String::new()
        },
        if d.warning_count > 0 {
            format!("; {} warnings (exit status 3)", d.warning_count)
        } else {
            String::new()
        }
    ));
    if json {
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
        // A closed stdout (`| head`) is not a failed capture.
        if let Err(e) = written
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            return Err(e.into());
        }
    }
    if !json && let Some(url) = out.uploaded.as_ref().and_then(|u| u.presigned_get.as_ref()) {
        // Asked for with --presign-get: output, so stdout, never the log.
        print_text(&format!("{url}\n"))?;
    }
    Ok(if d.warning_count > 0 {
        ExitCode::Warnings
    } else {
        ExitCode::Success
    })
}

fn print_json(v: &impl Serialize) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    let written = serde_json::to_writer_pretty(&mut stdout, v)
        .map_err(std::io::Error::from)
        .and_then(|_| writeln!(stdout));
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn print_text(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Whether `root` is the booted system's own root: `Ok(true)` / `Ok(false)`,
/// or `Err(reason)` when it cannot be told. First PID 1's root
/// (`/proc/1/root`, as systemd's `running_in_chroot()` checks); when that
/// cannot be inspected, a chroot of a plain directory still shows: the
/// kernel hides mounts above the process root, so there is no mount at `/`.
fn is_booted_root(root: &Path) -> std::io::Result<Result<bool, String>> {
    use std::os::unix::fs::MetadataExt;
    let r = std::fs::metadata(root)?;
    // Our own `/`: a bind mount of it elsewhere is the same directory.
    let own = std::fs::metadata("/")?;
    let is_own_root = (own.dev(), own.ino()) == (r.dev(), r.ino());
    match std::fs::metadata("/proc/1/root") {
        Ok(init) => Ok(Ok((init.dev(), init.ino()) == (r.dev(), r.ino()))),
        Err(_) if !is_own_root => Ok(Ok(false)),
        Err(e) => match crate::mounts::MountTable::load() {
            Some(t) if t.at(Path::new("/")).is_none() => Ok(Ok(false)),
            Some(_) => Ok(Err(format!(
                "cannot inspect PID 1 (/proc/1/root: {})",
                crate::util::io_reason(&e)
            ))),
            None => Ok(Err("/proc is not mounted; mount /proc in the chroot".into())),
        },
    }
}

fn run_scrub(args: &crate::cli::ScrubCmdArgs, verbosity: i8) -> Result<ExitCode> {
    if args.list {
        let cat = crate::config::catalogue(&args.scrub)?;
        let rows = cat.listing();
        if args.json {
            print_json(&rows)?;
        } else {
            let mut t = format!(
                "{:<22} {:<9} {:<8} {:<22} WHY\n",
                "ID", "CATEGORY", "DEFAULT", "APPLIES TO"
            );
            for r in rows {
                let d = if r.default { "*" } else { "" };
                t.push_str(&format!(
                    "{:<22} {:<9} {:<8} {:<22} {}\n",
                    r.id,
                    r.category.to_string(),
                    d,
                    r.applies_to,
                    r.why
                ));
            }
            print_text(&t)?;
        }
        return Ok(ExitCode::Success);
    }
    // Unwrap expectation: clap requires --list or --root.
    let given = args.root.as_ref().expect("--root");
    let root = std::fs::canonicalize(given).map_err(|e| {
        Error::usage(format!(
            "--root {}: {}",
            given.display(),
            crate::util::io_reason(&e)
        ))
    })?;
    if !root.is_dir() {
        return Err(Error::usage(format!(
            "--root {}: not a directory",
            given.display()
        )));
    }
    match is_booted_root(&root)? {
        Ok(false) => {}
        Ok(true) => {
            return Err(Error::usage(format!(
                "--root {}: refusing to scrub the running system in place (it is PID 1's root); \
                 `goldcap capture` scrubs in the archive stream without touching it, or run this inside the gold chroot",
                given.display()
            )));
        }
        Err(why) => {
            return Err(Error::usage(format!(
                "--root {}: refusing: cannot tell whether it is the running system ({why})",
                given.display()
            )));
        }
    }
    let rootfs = crate::rootfs::RootFs::new(&root);
    let os = crate::facts::read_os_release(&rootfs);
    let now = chrono::Utc::now().timestamp();
    let plan = crate::config::scrub_plan(&args.scrub, &rootfs, os.as_ref(), false, now)?;
    let excludes = crate::policy::Excludes::new(&args.exclude).map_err(|e| Error::usage(e.0))?;
    let includes = crate::policy::DEFAULT_INCLUDE_MOUNTS
        .iter()
        .map(|m| m.as_bytes().to_vec())
        .collect();
    let policy = crate::policy::Policy::new(excludes, includes).with_scrub(plan);
    let cancel = Cancel::install()?;
    // Per-item lines go to stdout (they are this command's output), so the
    // report itself stays quiet on stderr except for warnings.
    let ui = Ui::new(verbosity.min(0), false);
    let mut report = crate::report::Report::new(&ui);
    // Unwrap expectation: the policy was just given a plan.
    let plan = policy.scrub().expect("plan");
    crate::scrub::apply::run(
        &root,
        &policy,
        plan,
        crate::mounts::MountTable::load(),
        args.dry_run,
        &mut report,
        &cancel,
    )?;
    let warnings = report.warning_count;
    let section = crate::manifest::ScrubSection::new(Some(plan), &mut report);
    if args.json {
        #[derive(Serialize)]
        struct Out<'a> {
            root: String,
            dry_run: bool,
            #[serde(flatten)]
            scrub: &'a crate::manifest::ScrubSection,
            warnings: u64,
            warning_details: &'a [crate::report::Warning],
        }
        print_json(&Out {
            root: show(&root),
            dry_run: args.dry_run,
            scrub: &section,
            warnings,
            warning_details: &report.warnings,
        })?;
    } else {
        let mut buf = Vec::new();
        section.write_text(&mut buf)?;
        print_text(&String::from_utf8_lossy(&buf))?;
        ui.say(&format!(
            "goldcap: {} {} items in {} ({} removed){}",
            if args.dry_run {
                "would scrub"
            } else {
                "scrubbed"
            },
            section.item_count,
            show(&root),
            human(section.bytes_removed),
            if warnings > 0 {
                format!("; {warnings} warnings (exit status 3)")
            } else {
                String::new()
            }
        ));
    }
    Ok(if warnings > 0 {
        ExitCode::Warnings
    } else {
        ExitCode::Success
    })
}

fn run_verify(args: &crate::cli::VerifyArgs) -> Result<ExitCode> {
    let v = crate::verify::run(&args.artifact, args.manifest.as_deref())?;
    if args.json {
        print_json(&v)?;
    } else {
        let mut t = String::new();
        for c in &v.checks {
            t.push_str(&format!(
                "{:<5} {:<16} {}\n",
                if c.ok { "ok" } else { "FAIL" },
                c.name,
                c.detail
            ));
            for p in &c.paths {
                t.push_str(&format!("      {p}\n"));
            }
        }
        let n = v.failures();
        t.push_str(&if n == 0 {
            format!("{}: all {} checks passed\n", v.artifact, v.checks.len())
        } else {
            format!("{}: {n} check(s) failed\n", v.artifact)
        });
        print_text(&t)?;
    }
    Ok(if v.failures() > 0 {
        ExitCode::VerifyFailed
    } else {
        ExitCode::Success
    })
}

/// Where the artifact went, for summary lines.
fn uploaded_where(u: &crate::upload::Uploaded) -> String {
    u.objects
        .first()
        .map_or_else(|| u.target.clone(), |o| o.url.clone())
}

fn run_upload(args: &crate::cli::UploadCmdArgs, verbosity: i8) -> Result<ExitCode> {
    let cancel = Cancel::install()?;
    let opts = args.upload.options();
    let files = crate::upload::Files::from_manifest(&args.manifest)?;
    let mut ui = Ui::new(verbosity, std::io::stderr().is_terminal());
    ui.info(&format!(
        "uploading {} ({}) to {}",
        show(&files.artifact),
        human(files.size),
        args.to.describe()
    ));
    let started = std::time::Instant::now();
    ui.start_progress(Some(files.size), "uploading");
    let result = crate::upload::upload_files(&args.to, &opts, &files, &ui, &cancel);
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
    if args.json {
        print_json(&up)?;
    } else if let Some(url) = &up.presigned_get {
        // Asked for: it is the command's output, so stdout (never stderr).
        print_text(&format!("{url}\n"))?;
    }
    Ok(ExitCode::Success)
}

fn run_token(args: &crate::cli::TokenArgs) -> Result<ExitCode> {
    let cancel = Cancel::install()?;
    let paths: Vec<String> = args
        .paths
        .iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    if paths.is_empty() {
        return Err(Error::usage(
            "--paths: give at least one files path, e.g. images/debian-12-rootfs-20261122-101500-cf99cd80eb.tgz",
        ));
    }
    let client = crate::upload::drp::Client::new(args.endpoint.as_deref(), &args.upload.options())?;
    let token = client.token(&args.user, args.ttl, &paths, &cancel)?;
    // The token is this command's only output, for `RS_TOKEN=$(goldcap token …)`.
    print_text(&format!("{token}\n"))?;
    Ok(ExitCode::Success)
}

fn run_profile(args: &crate::cli::ProfileArgs) -> Result<ExitCode> {
    let bytes = std::fs::read(&args.manifest).map_err(|e| {
        Error::usage(format!(
            "{}: {}",
            args.manifest.display(),
            crate::util::io_reason(&e)
        ))
    })?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        Error::usage(format!(
            "{}: not a goldcap JSON MANIFEST ({e})",
            args.manifest.display()
        ))
    })?;
    let yaml = crate::profile::render(&v, args.endpoint.as_deref())
        .map_err(|e| Error::usage(format!("{}: {}", args.manifest.display(), format_error(&e))))?;
    match &args.output {
        Some(p) => {
            let dir = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let name = p.file_name().ok_or_else(|| {
                Error::usage(format!("--output {}: not a file name", p.display()))
            })?;
            let mut f = crate::sink::AtomicFile::create(dir, &name.to_string_lossy())?;
            f.write_all(yaml.as_bytes())?;
            // Not a secret, unlike the artifact: readable like any profile.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(f.temp_path(), std::fs::Permissions::from_mode(0o644))?;
            f.sync()?;
            f.persist(true)?;
        }
        None => print_text(&yaml)?,
    }
    Ok(ExitCode::Success)
}
