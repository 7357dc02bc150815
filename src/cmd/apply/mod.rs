//! `goldcap apply`: lay an artifact onto a target directory — verified as
//! it streams, safe against hostile archives, with capture's fidelity.
//!
//! After the pipeline, the deploy half. One read of the artifact: the
//! reading thread bounds its compressed bytes by the MANIFEST's size,
//! hashes them (md5, sha256: `output::digest`) and decompresses them (gzip
//! or zstd by magic: `verify`'s [`Decoder`]; goldcap's own members on
//! worker threads, handed on whole) into chunks (at most [`QUEUED`] bytes
//! queued); this thread bounds the tar headers (`verify`'s [`Guard`]) and
//! writes each entry with [`extract`] beneath the target ([`beneath`]), a
//! plain file's body straight from the decompressed members
//! ([`extract::Body`]). A marker file (`.goldcap-apply-incomplete`) is at
//! the target's root from before the first entry until everything is
//! written and the digests matched; a mismatch, a refused entry or an
//! unreadable archive leaves it, with why, and exits 4. Without a MANIFEST,
//! stderr and the summary say that nothing was verified. Once the entries
//! are written and checked, this machine's files ([`personalise`],
//! [`machine`]) go beneath the target through the same descriptors, the
//! directories get their metadata, `--hook`s run chrooted into it
//! (capture's runner, [`hooks`]), and the apply report ([`REPORT`]) is
//! written last, before the marker goes. This module must never write
//! outside the target, nor remove the marker of a run that failed.

mod beneath;
mod extract;
mod fstab;
#[cfg(test)]
mod fuzz;
mod machine;

use super::verify::guard::{Guard, PaxSink};
use super::verify::read::{Decoder, SniffFirst};
use super::verify::{Expected, manifest};
use super::{print_json, show};
use crate::cli::config::ApplyConfig;
use crate::input::Limited;
use crate::output::digest::{Digests, HashingReader};
use crate::output::manifest::read::{
    JSON_LIMIT, Summary as ManifestSummary, parse_json, read_json,
};
use crate::prepare::hooks::{self, HookRun, Place};
use crate::report::error::{Error, Result};
use crate::report::exit::ExitCode;
use crate::report::ui::{Ui, eprint_line, human};
use crate::select::scrub::MachineIdMode;
use crate::signals::Cancel;
use crate::upload::http::{redact, transport_message};
use crate::util::io_reason;
use anyhow::Context as _;
use beneath::Target;
use extract::{Applied, Extractor, MARKER, is_target_error};
use rustix::fs::{AtFlags, Mode, OFlags};
use serde::Serialize;
use std::io::{self, BufReader, IsTerminal, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// Where the artifact comes from.
enum Artifact {
    File(PathBuf),
    /// An http(s) URL, read with this agent (and this `Authorization`
    /// header: a DRP source).
    Url(String, ureq::Agent, Option<String>),
}

/// Where a name beside a remote source is: its URL and `Authorization`.
type Sibling = Box<dyn Fn(&str) -> Result<(String, Option<String>)>>;

/// A remote SOURCE: its URL and credentials, and how to reach the
/// artifact a MANIFEST names next to it.
struct Remote {
    url: String,
    auth: Option<String>,
    /// The URL and credentials of `name` beside this source.
    sibling: Sibling,
}

/// How long a signed S3 GET for `apply s3://…` stays valid: long enough
/// to stream a large image.
const S3_GET_TTL: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// `drp:PATH` (the DRP files API, credentials as `upload`'s), `s3://BUCKET/KEY`
/// (a signed GET, credentials as the AWS tools find them) or an http(s) URL
/// (a sibling replaces the last path segment); `None` for a local path.
fn remote(given: &str, opts: &crate::upload::Options) -> Result<Option<Remote>> {
    let parent = |p: &str| p[..p.rfind('/').map_or(0, |i| i + 1)].to_owned();
    if let Some(path) = given.strip_prefix("drp:") {
        let path = path.trim_start_matches('/');
        if path.is_empty() || path.split('/').any(|c| c == ".." || c == ".") {
            return Err(Error::usage(format!(
                "{given}: give a files path, e.g. drp:images/debian-12-MANIFEST-….json"
            )));
        }
        let (url, auth) = crate::upload::drp::files_get(path, opts)?;
        let (dir, opts) = (parent(path), opts.clone());
        return Ok(Some(Remote {
            url,
            auth: Some(auth),
            sibling: Box::new(move |name| {
                let (url, auth) = crate::upload::drp::files_get(&format!("{dir}{name}"), &opts)?;
                Ok((url, Some(auth)))
            }),
        }));
    }
    if let Some(rest) = given.strip_prefix("s3://") {
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty()
            || key.is_empty()
            || key.ends_with('/')
            || key.split('/').any(|c| c == ".." || c == ".")
        {
            return Err(Error::usage(format!(
                "{given}: give an object, e.g. s3://BUCKET/images/debian-12-MANIFEST-….json"
            )));
        }
        let client = std::rc::Rc::new(crate::upload::s3::Client::new(bucket, "", opts)?);
        let dir = parent(key);
        let url = client.signed_get(key, S3_GET_TTL);
        return Ok(Some(Remote {
            url,
            auth: None,
            sibling: Box::new(move |name| {
                Ok((client.signed_get(&format!("{dir}{name}"), S3_GET_TTL), None))
            }),
        }));
    }
    if given.starts_with("http://") || given.starts_with("https://") {
        let base = given.split(['?', '#']).next().unwrap_or(given);
        let dir = parent(base);
        return Ok(Some(Remote {
            url: given.to_owned(),
            auth: None,
            sibling: Box::new(move |name| Ok((format!("{dir}{name}"), None))),
        }));
    }
    Ok(None)
}

/// The artifact to apply and what its MANIFEST promises.
struct Source {
    artifact: Artifact,
    /// The artifact as messages show it (a URL without its query string).
    shown: String,
    /// The MANIFEST (as shown) and what it promises.
    manifest: Option<(String, Expected)>,
}

/// The `--json` summary.
#[derive(Serialize)]
struct Summary {
    artifact: String,
    target: String,
    manifest: Option<String>,
    /// Size, md5 and sha256 were checked against a MANIFEST and matched.
    verified: bool,
    format: &'static str,
    digests: Option<Digests>,
    #[serde(flatten)]
    applied: Applied,
    /// What was done for this machine after the artifact, in order
    /// (`/etc/hostname`, authorized keys, the NoCloud seed,
    /// `/etc/machine-id`, `/etc/fstab`, each hook run).
    personalised: Vec<String>,
    /// The apply report written in the target ([`REPORT`]), if the run
    /// got that far.
    report: Option<String>,
    /// Why the run failed (the marker stays), if it did.
    failure: Option<String>,
    seconds: f64,
}

/// Runs `goldcap apply`.
pub(super) fn run(cfg: &ApplyConfig, verbosity: i8) -> Result<ExitCode> {
    let src = source(cfg)?;
    prepare_target(&cfg.target, cfg.force)?;
    // The mounts are known now: a target that is no mount point is refused
    // before anything is written.
    let fstab = match cfg.fstab {
        true => Some(
            cfg.target
                .canonicalize()
                .map_err(|e| e.to_string())
                .and_then(|t| fstab::generate(&t))
                .map_err(|why| Error::usage(format!("--fstab: {why}")))?,
        ),
        false => None,
    };
    let mut ui = Ui::new(verbosity, std::io::stderr().is_terminal());
    match &src.manifest {
        Some((m, _)) => ui.info(&format!("checking {} against {m}", src.shown)),
        None => ui.warn(&format!(
            "no goldcap MANIFEST names {}: nothing will be verified (apply its MANIFEST .json, \
             or give --manifest, to check size, md5 and sha256)",
            src.shown
        )),
    }
    let (input, length) = open_artifact(&src)?;
    let size = src.manifest.as_ref().map(|(_, e)| e.size).or(length);
    let started = std::time::Instant::now();
    let target = Target::open(&cfg.target)
        .with_context(|| format!("cannot open the target {}", show(&cfg.target)))?;
    let marker = Marker::create(target.root(), &src, &cfg.target)?;
    ui.start_progress(size, "applying");
    let mut ex = Extractor::new(target);
    let read = stream(input, &src, cfg.threads, &mut ex, &ui);
    ui.finish_progress();
    let (format, digests, archive) = read.with_context(|| format!("cannot read {}", src.shown))?;
    let mismatched = src
        .manifest
        .as_ref()
        .and_then(|(_, exp)| mismatch(exp, &digests));
    let mut failure = match (archive, mismatched) {
        (Err(e), _) if e.kind() == io::ErrorKind::FileTooLarge && !is_target_error(&e) => {
            Some(format!(
                "the artifact does not match its MANIFEST: it is larger than its size, {} bytes",
                src.manifest.as_ref().map_or(0, |(_, e)| e.size)
            ))
        }
        (Ok(()), Some(m)) => Some(m),
        (Err(e), Some(m)) => Some(format!("{m} (and the archive failed to read: {e})")),
        (Err(e), None) if !is_target_error(&e) => Some(format!("the archive is unreadable: {e}")),
        (Err(e), None) => {
            marker.fail(&format!("cannot write the target: {e}"));
            return Err(anyhow::anyhow!("cannot apply {}: {e}", src.shown)
                .context(format!(
                    "the target {} is left incomplete ({MARKER})",
                    show(&cfg.target)
                ))
                .into());
        }
        (Ok(()), None) => None,
    };
    if failure.is_none() && ex.applied.refused.count > 0 {
        failure = Some(format!(
            "{} entr{} refused (they would have left the target or gone through a symlink)",
            ex.applied.refused.count,
            if ex.applied.refused.count == 1 {
                "y was"
            } else {
                "ies were"
            }
        ));
    }
    let mut personalised = Vec::new();
    // The exit status of a failure: 4 unless a per-machine step says.
    let mut code = ExitCode::VerifyFailed;
    let mut fail = |failure: &mut Option<String>, (c, why): machine::Failed| {
        code = c;
        *failure = Some(why);
    };
    if failure.is_none()
        && let Err(f) = personalise(cfg, fstab.as_deref(), &mut ex, &mut personalised)
    {
        fail(&mut failure, f);
    }
    let mut hook_runs = Vec::new();
    if failure.is_none() {
        // Hooks see the directories' modes and owners as the image has them.
        ex.finish_dirs();
        if let Err(e) = run_hooks(cfg, &src, &digests, &ui, &mut hook_runs, &mut personalised) {
            fail(&mut failure, (e.exit_code(), e.to_string()));
        }
    }
    let mut report = None;
    if failure.is_none() {
        let r = Report {
            goldcap: env!("CARGO_PKG_VERSION"),
            artifact: &src.shown,
            manifest: src.manifest.as_ref().map(|(p, _)| p.as_str()),
            verified: src.manifest.is_some(),
            format,
            size: digests.size,
            md5: &digests.md5,
            sha256: &digests.sha256,
            applied: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            entries: ex.applied.entries,
            warnings: ex.applied.warnings.count,
            personalised: &personalised,
            hooks: &hook_runs,
        };
        let mut json = serde_json::to_vec_pretty(&r).map_err(anyhow::Error::from)?;
        json.push(b'\n');
        match ex.put_file(REPORT.as_bytes(), &json, 0o644) {
            Ok(()) => report = Some(format!("/{REPORT}")),
            Err(why) => fail(&mut failure, (ExitCode::VerifyFailed, why)),
        }
    }
    if failure.is_none() {
        ex.finish_root(|root| marker.remove(root))
            .with_context(|| format!("cannot finish {}", show(&cfg.target)))?;
    } else if let Some(f) = &failure {
        marker.fail(f);
    }
    let applied = ex.applied.clone();
    for w in &applied.warnings.paths {
        ui.warn(w);
    }
    // Refusals and a failure are errors: shown even with -q.
    for r in &applied.refused.paths {
        eprint_line(&format!("goldcap: refused: {r}"));
    }
    if applied.refused.count > applied.refused.paths.len() as u64 {
        eprint_line(&format!(
            "goldcap: refused: … {} more",
            applied.refused.count - applied.refused.paths.len() as u64
        ));
    }
    let verified = src.manifest.is_some() && failure.is_none();
    let summary = Summary {
        artifact: src.shown.clone(),
        target: show(&cfg.target),
        manifest: src.manifest.as_ref().map(|(p, _)| p.clone()),
        verified,
        format,
        digests: Some(digests),
        applied,
        personalised,
        report,
        failure: failure.clone(),
        seconds: started.elapsed().as_secs_f64(),
    };
    match &failure {
        Some(f) => eprint_line(&format!(
            "goldcap: apply of {} FAILED: {f}; {} is incomplete ({MARKER} says why)",
            summary.artifact, summary.target
        )),
        None => ui.say(&format!(
            "goldcap: applied {} ({}, {} entries, {} of content) to {} in {:.1}s; {}{}{}",
            summary.artifact,
            human(summary.digests.as_ref().map_or(0, |d| d.size)),
            summary.applied.entries,
            human(summary.applied.bytes),
            summary.target,
            summary.seconds,
            if verified {
                "size, md5 and sha256 match the MANIFEST"
            } else {
                "NOT verified: no MANIFEST"
            },
            summary
                .personalised
                .iter()
                .map(|p| match p.strip_prefix("hook ") {
                    Some(h) => format!("; ran the hook {h}"),
                    None => format!("; wrote {p}"),
                })
                .chain(summary.report.iter().map(|r| format!("; report in {r}")))
                .collect::<String>(),
            if summary.applied.warnings.count > 0 {
                format!(
                    "; {} warnings (exit status 3)",
                    summary.applied.warnings.count
                )
            } else {
                String::new()
            }
        )),
    }
    if cfg.json {
        print_json(&summary)?;
    }
    Ok(if failure.is_some() {
        code
    } else if summary.applied.warnings.count > 0 {
        ExitCode::Warnings
    } else {
        ExitCode::Success
    })
}

/// The artifact and its MANIFEST. SOURCE is the MANIFEST `.json` (the
/// artifact is its `filename`, next to it: in the same directory, or the
/// same URL directory) or the artifact (its MANIFEST is `--manifest`, or
/// for a file the goldcap JSON next to it that names it, if any).
fn source(cfg: &ApplyConfig) -> Result<Source> {
    let given = &cfg.source;
    let remote = match given.to_str() {
        Some(g) => remote(g, &cfg.http)?,
        None => None,
    };
    let is_json = |p: &str| {
        p.split(['?', '#'])
            .next()
            .is_some_and(|p| p.ends_with(".json"))
    };
    let given_manifest = |json: bool| -> Result<Option<(String, Expected)>> {
        match &cfg.manifest {
            Some(_) if json => Err(Error::usage(
                "--manifest is for an artifact SOURCE, and SOURCE is a MANIFEST",
            )),
            Some(p) => Ok(manifest(Path::new(""), Some(p))?.map(|(p, e)| (show(&p), e))),
            None => Ok(None),
        }
    };
    if let Some(r) = remote {
        let agent = crate::upload::http::agent(&cfg.http)?;
        let shown = redact(&r.url);
        // The name says what it is (a signed URL's path still ends in it).
        if !is_json(given.to_str().unwrap_or_default()) {
            let manifest = match &cfg.manifest {
                Some(_) => given_manifest(false)?,
                None => text_sibling(&r, &agent, given.to_str().unwrap_or_default()),
            };
            return Ok(Source {
                artifact: Artifact::Url(r.url, agent, r.auth),
                shown,
                manifest,
            });
        }
        given_manifest(true)?;
        let bad = |why: String| Error::usage(format!("{shown}: {why}"));
        let (body, _) = get(&agent, &r.url, r.auth.as_deref())?;
        let m = parse_json(Limited::new(body, JSON_LIMIT)).map_err(bad)?;
        let (name, exp) = checked(m).map_err(bad)?;
        let (artifact, auth) = (r.sibling)(&name)?;
        return Ok(Source {
            shown: redact(&artifact),
            artifact: Artifact::Url(artifact, agent, auth),
            manifest: Some((shown, exp)),
        });
    }
    let bad = |why: String| Error::usage(format!("{}: {why}", show(given)));
    let meta = std::fs::metadata(given).map_err(|e| bad(io_reason(&e)))?;
    if !meta.is_file() {
        return Err(bad("not a file".into()));
    }
    if !given.to_str().is_some_and(is_json) {
        let found = match &cfg.manifest {
            Some(_) => given_manifest(false)?,
            None => manifest(given, None)?.map(|(p, e)| (show(&p), e)),
        };
        return Ok(Source {
            artifact: Artifact::File(given.clone()),
            shown: show(given),
            manifest: found,
        });
    }
    given_manifest(true)?;
    let (name, exp) = checked(read_json(given).map_err(bad)?).map_err(bad)?;
    let dir = given
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let artifact = dir.join(&name);
    match std::fs::symlink_metadata(&artifact) {
        Ok(a) if a.is_file() => {}
        Ok(_) => {
            return Err(bad(format!(
                "{} is not a regular file (a MANIFEST names a file next to it)",
                show(&artifact)
            )));
        }
        Err(e) => return Err(bad(format!("{}: {}", show(&artifact), io_reason(&e)))),
    }
    Ok(Source {
        shown: show(&artifact),
        artifact: Artifact::File(artifact),
        manifest: Some((show(given), exp)),
    })
}

/// The text MANIFEST uploaded beside a remote artifact under goldcap's
/// default names (`…-rootfs-…` → `…-MANIFEST-….txt`, as `upload` puts it
/// on DRP), if it is there and readable; `None` otherwise (the apply then
/// says it is not verified).
fn text_sibling(r: &Remote, agent: &ureq::Agent, given: &str) -> Option<(String, Expected)> {
    let base = given.split(['?', '#']).next().unwrap_or(given);
    let file = &base[base.rfind(['/', ':']).map_or(0, |i| i + 1)..];
    let stem = file
        .strip_suffix(".tgz")
        .or_else(|| file.strip_suffix(".tar.zst"))?;
    if !stem.contains("-rootfs-") {
        return None;
    }
    let name = stem.replacen("-rootfs-", "-MANIFEST-", 1) + ".txt";
    let (url, auth) = (r.sibling)(&name).ok()?;
    let (body, _) = get(agent, &url, auth.as_deref()).ok()?;
    let mut head = Vec::new();
    body.take(crate::output::manifest::read::TEXT_LIMIT)
        .read_to_end(&mut head)
        .ok()?;
    let summary = crate::output::manifest::read::parse_text(&String::from_utf8_lossy(&head))?;
    Some((redact(&url), Expected::of(summary)?))
}

/// A goldcap JSON MANIFEST's artifact name (checked: a plain file name)
/// and what it promises.
fn checked(m: ManifestSummary) -> std::result::Result<(String, Expected), String> {
    if !m.is_goldcap() {
        return Err("not a goldcap JSON MANIFEST".into());
    }
    m.check()?;
    let name = m.field(&m.filename, "filename")?.to_owned();
    let exp = Expected::of(m).ok_or("no size or md5")?;
    Ok((name, exp))
}

/// A GET that must answer 200: the body, and its length when the server
/// says.
fn get(
    agent: &ureq::Agent,
    url: &str,
    auth: Option<&str>,
) -> Result<(ureq::BodyReader<'static>, Option<u64>)> {
    let shown = redact(url);
    let mut req = agent.get(url);
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    let resp = req
        .call()
        .map_err(|e| anyhow::anyhow!("GET {shown}: {}", transport_message(&e)))?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(anyhow::anyhow!("GET {shown}: HTTP {status}").into());
    }
    let length = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    Ok((resp.into_body().into_reader(), length))
}

/// The artifact, open for reading, and its length when known.
fn open_artifact(src: &Source) -> Result<(Box<dyn Read + Send>, Option<u64>)> {
    match &src.artifact {
        Artifact::File(p) => {
            let f = crate::input::open(p)
                .map_err(|e| Error::usage(format!("{}: {}", src.shown, io_reason(&e))))?;
            let len = f.metadata().ok().map(|m| m.len());
            Ok((Box::new(f), len))
        }
        Artifact::Url(url, agent, auth) => {
            let (body, len) = get(agent, url, auth.as_deref())?;
            Ok((Box::new(body), len))
        }
    }
}

/// The apply report, root-relative: what was applied and what was done
/// for this machine, written last.
const REPORT: &str = "var/log/goldcap-apply.json";

/// The content of [`REPORT`].
#[derive(Serialize)]
struct Report<'a> {
    /// The goldcap version that applied it.
    goldcap: &'static str,
    artifact: &'a str,
    manifest: Option<&'a str>,
    verified: bool,
    format: &'static str,
    size: u64,
    md5: &'a str,
    sha256: &'a str,
    /// When the apply finished (UTC, RFC 3339).
    applied: String,
    entries: u64,
    warnings: u64,
    personalised: &'a [String],
    hooks: &'a [HookRun],
}

/// The NoCloud seed directory cloud-init reads, root-relative.
const NOCLOUD_SEED: &str = "var/lib/cloud/seed/nocloud";

/// This machine's settings, once the artifact is applied and verified;
/// what was written goes into `done`.
fn personalise(
    cfg: &ApplyConfig,
    fstab: Option<&str>,
    ex: &mut Extractor,
    done: &mut Vec<String>,
) -> std::result::Result<(), machine::Failed> {
    let put = |ex: &mut Extractor, rel: &str, content: &[u8], mode: u32| {
        ex.put_file(rel.as_bytes(), content, mode)
            .map_err(|why| (ExitCode::VerifyFailed, why))
    };
    if let Some(h) = &cfg.hostname {
        put(ex, "etc/hostname", format!("{h}\n").as_bytes(), 0o644)?;
        done.push(format!("/etc/hostname: {h}"));
    }
    for keys in &cfg.ssh_keys {
        let (what, ssh) = machine::authorized_keys(ex.target(), keys)?;
        // sshd's StrictModes: 0700 and the user's, not as archived.
        ex.keep_dir(&ssh);
        done.push(what);
    }
    if let Some(seed) = &cfg.nocloud {
        for (name, content, mode) in seed {
            put(ex, &format!("{NOCLOUD_SEED}/{name}"), content, *mode)?;
        }
        // An optional file the image's seed had and this one has not.
        for (name, _, _) in crate::prepare::machine::NOCLOUD_FILES {
            if !seed.iter().any(|(n, _, _)| n == name) {
                ex.remove_file(format!("{NOCLOUD_SEED}/{name}").as_bytes())
                    .map_err(|why| (ExitCode::VerifyFailed, why))?;
            }
        }
        done.push(format!(
            "/{NOCLOUD_SEED}/: {}",
            seed.iter()
                .map(|(n, _, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(m) = cfg.machine_id {
        let content = match m {
            MachineIdMode::Empty => "",
            MachineIdMode::Uninitialized => "uninitialized\n",
        };
        put(ex, "etc/machine-id", content.as_bytes(), 0o444)?;
        done.push(format!(
            "/etc/machine-id: {}",
            if content.is_empty() {
                "empty"
            } else {
                "uninitialized"
            }
        ));
    }
    if let Some(text) = fstab {
        put(ex, "etc/fstab", text.as_bytes(), 0o644)?;
        let n = text.lines().filter(|l| !l.starts_with('#')).count();
        done.push(format!(
            "/etc/fstab: {n} filesystem{}",
            if n == 1 { "" } else { "s" }
        ));
    }
    Ok(())
}

/// Runs `--hook`s chrooted into the target, in order; each run is added
/// to `runs` and `done`.
fn run_hooks(
    cfg: &ApplyConfig,
    src: &Source,
    digests: &Digests,
    ui: &Ui,
    runs: &mut Vec<HookRun>,
    done: &mut Vec<String>,
) -> Result<()> {
    if cfg.hooks.is_empty() {
        return Ok(());
    }
    let cancel = Cancel::install().context("cannot install signal handlers")?;
    let root = cfg
        .target
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", show(&cfg.target)))?;
    let mut vars = vec![
        ("GOLDCAP_ARTIFACT".to_owned(), src.shown.clone()),
        ("GOLDCAP_SHA256".to_owned(), digests.sha256.clone()),
        ("GOLDCAP_HOOK".to_owned(), String::new()),
    ];
    for hook in &cfg.hooks {
        if let Some(v) = vars.last_mut() {
            v.1.clone_from(&hook.name);
        }
        ui.say(&format!(
            "goldcap: running hook {} in the target",
            hook.name
        ));
        let run = hooks::run_then(
            hook,
            &Place::Chroot(&root),
            &vars,
            &cancel,
            &mut |l| ui.say(&format!("  {}| {l}", hook.name)),
            "the target is left incomplete",
        )?;
        done.push(format!("hook {} ({:.1}s)", run.name, run.seconds));
        runs.push(run);
    }
    Ok(())
}

/// The target: created if missing; refused when it is the running
/// system's `/`, or not empty (anything but `lost+found` and empty
/// directories, such as the mount point of a `/boot/efi` already mounted
/// for `--fstab`) without `--force`.
fn prepare_target(target: &Path, force: bool) -> Result<()> {
    std::fs::create_dir_all(target)
        .map_err(|e| Error::usage(format!("--target {}: {}", show(target), io_reason(&e))))?;
    let canon = target
        .canonicalize()
        .map_err(|e| Error::usage(format!("--target {}: {}", show(target), io_reason(&e))))?;
    let same = |a: &Path, b: &Path| match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => {
            use std::os::unix::fs::MetadataExt;
            (x.dev(), x.ino()) == (y.dev(), y.ino())
        }
        _ => false,
    };
    if canon == Path::new("/") || same(&canon, Path::new("/")) {
        return Err(Error::usage("--target is the running system's /: refused"));
    }
    let busy: Vec<String> = std::fs::read_dir(&canon)
        .map_err(|e| Error::usage(format!("--target {}: {}", show(target), io_reason(&e))))?
        .filter_map(|e| e.ok())
        .filter(|e| !scaffolding(&e.path(), 4))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if !busy.is_empty() && !force {
        let marker = if busy.iter().any(|n| n == MARKER) {
            format!(" (it holds {MARKER}: an earlier apply did not finish)")
        } else {
            String::new()
        };
        return Err(Error::usage(format!(
            "--target {} is not empty{marker}; give --force to apply over what is there",
            show(target)
        )));
    }
    Ok(())
}

/// Whether `path` holds nothing an apply would overwrite: it is a
/// `lost+found`, or a real directory (not a symlink) of at most `depth`
/// levels of such (at most 64 entries each).
fn scaffolding(path: &Path, depth: u32) -> bool {
    if path.file_name().is_some_and(|n| n == "lost+found") {
        return true;
    }
    if depth == 0 || !std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        return false;
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return false;
    };
    let mut n = 0;
    for e in entries {
        n += 1;
        if n > 64 || !e.is_ok_and(|e| scaffolding(&e.path(), depth - 1)) {
            return false;
        }
    }
    true
}

/// Decompressed bytes handed from the reading thread to the extracting
/// one per message, for a stream not in goldcap's layout (its members,
/// 1 or 2 MiB, are handed on as they are).
const CHUNK: usize = 1 << 20;
/// Decompressed bytes queued between the two threads, at most (members or
/// chunks): enough that the extractor's slow stretches (many small files)
/// do not stall the reading and decompressing, nor its fast ones starve.
const QUEUED: usize = 12 << 20;

/// Reads the artifact once: hashed and decompressed on a thread of its
/// own, extracted on this one while the next chunks decompress. The
/// compression, the digests of every byte of the file, and how the
/// archive read ended.
fn stream(
    input: Box<dyn Read + Send>,
    src: &Source,
    threads: Option<usize>,
    ex: &mut Extractor,
    ui: &Ui,
) -> io::Result<(&'static str, Digests, io::Result<()>)> {
    let limit = src.manifest.as_ref().map_or(u64::MAX, |(_, e)| e.size);
    let hashing = HashingReader::new(Limited::new(SniffFirst::new(input), limit)).with_progress(ui);
    let decoder = Decoder::with_threads(BufReader::with_capacity(1 << 20, hashing), threads)?;
    let queued = (QUEUED / decoder.member_size().unwrap_or(CHUNK)).max(2);
    let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(queued);
    let (spare_tx, spare_rx) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|s| {
        let reader = std::thread::Builder::new()
            .name("apply-read".into())
            .spawn_scoped(s, move || read_side(decoder, &tx, &spare_rx))?;
        let chunks = SharedChunks(std::rc::Rc::new(std::cell::RefCell::new(Chunks {
            rx,
            spare: spare_tx,
            cur: Vec::new(),
            pos: 0,
            written_ahead: 0,
        })));
        let pax = PaxSink::default();
        let mut ar = tar::Archive::new(Guard::new(chunks.clone()).with_pax_sink(pax.clone()));
        let walked = (|| -> io::Result<()> {
            for entry in ar.entries()? {
                let mut e = entry?;
                let records = pax.borrow_mut().take();
                ex.entry(&mut e, records.as_deref(), Some(&chunks))?;
                ui.add_entry();
            }
            Ok(())
        })();
        let mut guard = ar.into_inner();
        // The rest of the decompressed stream (end-of-archive blocks), once
        // the last body written straight from it was passed.
        let archive = walked
            .and_then(|()| match chunks.0.borrow().written_ahead {
                0 => Ok(()),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "internal error: the archive ended inside a file body",
                )),
            })
            .and_then(|()| io::copy(&mut guard, &mut io::sink()).map(drop));
        // Stops the reading thread's decompression if we stopped early; it
        // still hashes the rest of the file.
        drop(guard);
        drop(chunks);
        let (format, digests, rest) = reader
            .join()
            .map_err(|_| io::Error::other("the reading thread panicked"))??;
        let archive = match (archive, rest) {
            (Ok(()), Err(e)) => Err(e),
            (a, _) => a,
        };
        Ok((format, digests, archive))
    })
}

/// What the reading thread reads: file → size bound → md5/sha256 (and
/// progress) → decompressor.
type Reading<'u> = Decoder<BufReader<HashingReader<'u, Limited<SniffFirst<Box<dyn Read + Send>>>>>>;

/// The reading thread: the decompressed stream in members or chunks to the
/// extractor. Once the extractor hangs up (the end, or an error), the rest
/// of the file is hashed without decompressing it. The compression, the
/// digests, and how reading the rest ended.
fn read_side(
    mut decoder: Reading<'_>,
    tx: &mpsc::SyncSender<io::Result<Vec<u8>>>,
    spare: &mpsc::Receiver<Vec<u8>>,
) -> io::Result<(&'static str, Digests, io::Result<()>)> {
    let format = decoder.format();
    loop {
        // goldcap's members as they were decompressed; anything else in
        // chunks. Buffers the extractor is done with go round.
        let (buf, read) = match decoder.take_member() {
            Ok(Some(member)) => {
                while let Ok(done) = spare.try_recv() {
                    decoder.recycle(done);
                }
                (member, Ok(()))
            }
            Ok(None) => fill(&mut decoder, spare.try_recv().unwrap_or_default()),
            Err(e) => (Vec::new(), Err(e)),
        };
        let n = buf.len();
        let last = n == 0 || read.is_err();
        let sent = if n > 0 {
            tx.send(Ok(buf)).is_ok()
        } else {
            true
        };
        if let Err(e) = read {
            let _ = tx.send(Err(e));
        }
        if last || !sent {
            break;
        }
    }
    crate::testhook::count("parallel_members", decoder.parallel_members());
    let mut rest = decoder.into_inner().into_inner();
    let drained = io::copy(&mut rest, &mut io::sink()).map(drop);
    let (_, hasher) = rest.into_inner();
    Ok((format, hasher.finish(), drained))
}

/// Up to [`CHUNK`] bytes of the decompressed stream read into `buf`
/// (fewer only at its end or an error), and how reading ended.
fn fill<R: Read>(decoder: &mut R, mut buf: Vec<u8>) -> (Vec<u8>, io::Result<()>) {
    buf.resize(CHUNK, 0);
    let mut n = 0;
    let read = loop {
        match decoder.read(&mut buf[n..]) {
            Ok(0) => break Ok(()),
            Ok(k) => {
                n += k;
                if n == buf.len() {
                    break Ok(());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    buf.truncate(n);
    (buf, read)
}

/// The extracting side of the channel: the decompressed stream, read by
/// the tar reader and — a plain file's body — written straight to the file
/// by the extractor ([`extract::Body`]).
struct Chunks {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    spare: mpsc::Sender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    /// Bytes the extractor wrote from the stream that the tar reader has
    /// not yet passed: the rest of the body it is about to skip.
    written_ahead: u64,
}

impl Chunks {
    /// Makes `cur[pos..]` hold unread bytes; `false` at the stream's end.
    fn fill(&mut self) -> io::Result<bool> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(next)) => {
                    let done = std::mem::replace(&mut self.cur, next);
                    let _ = self.spare.send(done);
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(mpsc::RecvError) => return Ok(false),
            }
        }
        Ok(true)
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.written_ahead > 0 {
            // The tar reader skipping a body the extractor already wrote
            // (tar-rs reads a body it skips into a buffer it discards):
            // the bytes are counted through, not copied.
            let n = buf
                .len()
                .min(usize::try_from(self.written_ahead).unwrap_or(usize::MAX));
            self.written_ahead -= n as u64;
            return Ok(n);
        }
        if !self.fill()? {
            return Ok(0);
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// [`Chunks`], shared by the tar reader (through the guard) and the
/// extractor on the one extracting thread.
#[derive(Clone)]
struct SharedChunks(std::rc::Rc<std::cell::RefCell<Chunks>>);

impl Read for SharedChunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

impl extract::Body for SharedChunks {
    fn write_next(&self, w: &mut std::fs::File, len: u64, shown: &str) -> io::Result<u64> {
        let mut c = self.0.borrow_mut();
        if c.written_ahead != 0 {
            // A body written before the last was skipped: the next header
            // would be counted through, not read.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "internal error: a file body was written before the last one was passed",
            ));
        }
        let mut left = len;
        while left > 0 && c.fill()? {
            let n = (c.cur.len() - c.pos).min(usize::try_from(left).unwrap_or(usize::MAX));
            w.write_all(&c.cur[c.pos..c.pos + n])
                .map_err(|e| extract::write_error(shown, e))?;
            c.pos += n;
            c.written_ahead += n as u64;
            left -= n as u64;
        }
        Ok(len - left)
    }
}

/// What differs from the MANIFEST, or `None`.
fn mismatch(exp: &Expected, got: &Digests) -> Option<String> {
    let mut bad = Vec::new();
    if exp.size != got.size {
        bad.push(format!("size {} (MANIFEST: {})", got.size, exp.size));
    }
    if exp.md5 != got.md5 {
        bad.push(format!("md5 {} (MANIFEST: {})", got.md5, exp.md5));
    }
    if let Some(s) = &exp.sha256
        && *s != got.sha256
    {
        bad.push(format!("sha256 {} (MANIFEST: {s})", got.sha256));
    }
    (!bad.is_empty()).then(|| {
        format!(
            "the artifact does not match its MANIFEST: {}",
            bad.join(", ")
        )
    })
}

/// The marker file at the target's root.
struct Marker {
    fd: std::os::fd::OwnedFd,
    head: String,
}

impl Marker {
    /// Created (or replaced) before the first entry is written.
    fn create(root: &std::os::fd::OwnedFd, src: &Source, target: &Path) -> Result<Marker> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(root, MARKER, flags, Mode::from_raw_mode(0o644))
            .map_err(io::Error::from)
            .with_context(|| format!("cannot create {}/{MARKER}", show(target)))?;
        let head = format!(
            "goldcap apply of {} (MANIFEST: {}; sha256 {}) started {}\n",
            src.shown,
            src.manifest
                .as_ref()
                .map_or("none: not verified", |(p, _)| p.as_str()),
            src.manifest
                .as_ref()
                .and_then(|(_, e)| e.sha256.clone())
                .unwrap_or_else(|| "unknown".into()),
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
        let mut m = Marker { fd, head };
        m.write("in progress: this target is incomplete until goldcap removes this file\n")
            .with_context(|| format!("cannot write {}/{MARKER}", show(target)))?;
        Ok(m)
    }

    fn write(&mut self, status: &str) -> io::Result<()> {
        rustix::fs::ftruncate(&self.fd, 0)?;
        let mut f = std::fs::File::from(rustix::io::fcntl_dupfd_cloexec(&self.fd, 0)?);
        f.seek(io::SeekFrom::Start(0))?;
        f.write_all(format!("{}{status}", self.head).as_bytes())?;
        f.sync_all()
    }

    /// Records why the run failed (best effort: the marker is there).
    fn fail(mut self, why: &str) {
        let _ = self.write(&format!("FAILED: {why}\n"));
    }

    /// Removes the marker: the target is complete.
    fn remove(&self, root: &std::os::fd::OwnedFd) -> io::Result<()> {
        rustix::fs::unlinkat(root, MARKER, AtFlags::empty()).map_err(Into::into)
    }
}
