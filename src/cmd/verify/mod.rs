//! `goldcap verify`: read an artifact back and check what a deploy relies
//! on — its checksums against the MANIFEST, a top-level `curtin/`, and that
//! no machine identity leaked into it.
//!
//! After the pipeline: the artifact is read once ([`read`]), its
//! compressed bytes hashed (md5, sha256, size) while they are decompressed
//! and walked entry by entry; only the few small files the identity checks
//! ([`identity`]) look at are read into memory. No anchor tool checks its
//! own output (virt-sysprep's machine-id refill shipped for years
//! unnoticed); this one lists every failure by path. It never writes
//! anything.

pub(super) mod guard;
mod identity;
mod pardecode;
pub(super) mod read;
pub(super) mod shape;

use super::{print_json, print_text};
use crate::cli::config::VerifyConfig;
use crate::input;
use crate::output::digest::Digests;
use crate::output::manifest::read::{Summary, read_any, read_json};
use crate::report::error::{Error, Result};
use crate::report::escape::escape;
use crate::report::exit::ExitCode;
use crate::util::io_reason;
use identity::{Found, identity_checks};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Runs `goldcap verify` and prints its result: every check, or with `-q`
/// only the failed ones.
pub(super) fn run(cfg: &VerifyConfig, verbosity: i8) -> Result<ExitCode> {
    let v = verify(&cfg.artifact, cfg.manifest.as_deref())?;
    let quiet = verbosity < 0;
    if cfg.json {
        print_json(&v)?;
    } else {
        let mut t = String::new();
        for c in v.checks.iter().filter(|c| !(quiet && c.ok)) {
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
        if n > 0 {
            t.push_str(&format!(
                "{}: {} failed\n",
                v.artifact,
                crate::report::ui::count(n as u64, "check", "checks")
            ));
        } else if !quiet {
            t.push_str(&format!(
                "{}: all {} checks passed\n",
                v.artifact,
                v.checks.len()
            ));
        }
        print_text(&t)?;
    }
    Ok(if v.failures() > 0 {
        ExitCode::VerifyFailed
    } else {
        ExitCode::Success
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// The archive paths at fault (escaped).
    pub paths: Vec<String>,
}

/// The result of verifying one artifact.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// Every check passed.
    pub ok: bool,
    pub artifact: String,
    /// The manifest used, if any.
    pub manifest: Option<String>,
    /// Every check, in order.
    pub checks: Vec<Check>,
}

impl Verification {
    /// Number of failed checks.
    pub fn failures(&self) -> usize {
        self.checks.iter().filter(|c| !c.ok).count()
    }
}

/// What a manifest promises, and what it says of the capture (`apply`
/// checks the artifact against the first three).
pub(super) struct Expected {
    pub(super) size: u64,
    pub(super) md5: String,
    pub(super) sha256: Option<String>,
    /// (unreadable, attributes) warnings, and the first paths of those
    /// kinds; `None` when the MANIFEST does not say (DRP's text form).
    incomplete: Option<((u64, u64), Vec<String>)>,
    /// Operations that left identity in the image; `None` when the
    /// MANIFEST does not say.
    identity_off: Option<Vec<String>>,
}

impl Expected {
    pub(super) fn of(m: Summary) -> Option<Expected> {
        let incomplete = m.incomplete().map(|n| {
            let paths = m
                .warnings
                .iter()
                .filter(|w| matches!(w.kind.as_str(), "unreadable" | "attributes"))
                .take(shape::LISTED)
                .map(|w| format!("{} ({})", input::clip(&w.path, 300), w.kind))
                .collect();
            (n, paths)
        });
        Some(Expected {
            size: m.size?,
            md5: m.md5?,
            sha256: m.sha256,
            incomplete,
            identity_off: m.scrub.identity_off,
        })
    }

    /// What the MANIFEST says of the capture: every entry read in full,
    /// and every identity operation on and met.
    fn capture_checks(&self) -> [Check; 2] {
        let complete = match &self.incomplete {
            None => check("complete", true, "not recorded by this MANIFEST".into()),
            Some(((0, 0), _)) => check("complete", true, "every entry read in full".into()),
            Some(((u, a), paths)) => Check {
                name: "complete",
                ok: false,
                detail: format!(
                    "the capture could not read {u} entr{} and the attributes of {a}: \
                     the image lacks them",
                    if *u == 1 { "y" } else { "ies" }
                ),
                paths: paths.clone(),
            },
        };
        let identity = match self.identity_off.as_deref() {
            None => check(
                "identity-scrub",
                true,
                "not recorded by this MANIFEST".into(),
            ),
            Some([]) => check("identity-scrub", true, "every identity operation on".into()),
            Some(off) => Check {
                name: "identity-scrub",
                ok: false,
                detail: "identity kept by operations switched off or whose guarantee failed".into(),
                paths: off.iter().map(|o| input::clip(o, 100)).collect(),
            },
        };
        [complete, identity]
    }
}

/// Finds and reads the manifest: `--manifest` (goldcap's JSON or DRP
/// image-builder's text), or the goldcap JSON manifest next to the
/// artifact whose `filename` names it. Only regular files are read, and
/// only as far as a MANIFEST can reach.
pub(super) fn manifest(
    artifact: &Path,
    given: Option<&Path>,
) -> Result<Option<(PathBuf, Expected)>> {
    if let Some(p) = given {
        let read = read_any(p)
            .map_err(|why| Error::usage(format!("--manifest {}: {why}", p.display())))?;
        return match Expected::of(read) {
            Some(e) => Ok(Some((p.to_path_buf(), e))),
            None => Err(Error::usage(format!(
                "--manifest {}: not a goldcap or DRP image-builder MANIFEST",
                p.display()
            ))),
        };
    }
    let name = artifact
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = artifact
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(None);
    };
    let mut candidates: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    candidates.sort();
    for p in candidates {
        let Ok(m) = read_json(&p) else {
            continue;
        };
        if m.is_goldcap()
            && m.filename.as_deref() == Some(name.as_str())
            && let Some(e) = Expected::of(m)
        {
            return Ok(Some((p, e)));
        }
    }
    Ok(None)
}

/// Verifies an artifact.
pub(in crate::cmd) fn verify(artifact: &Path, given: Option<&Path>) -> Result<Verification> {
    let meta = std::fs::metadata(artifact)
        .map_err(|e| Error::usage(format!("{}: {}", artifact.display(), io_reason(&e))))?;
    if !meta.is_file() {
        return Err(Error::usage(format!("{}: not a file", artifact.display())));
    }
    let found_manifest = manifest(artifact, given)?;
    let mut found = Found::default();
    let read = read::read_artifact(artifact, &mut found)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", artifact.display()))?;
    let mut checks = checksum_checks(found_manifest.as_ref(), &read.digests);
    if let Some((_, e)) = &found_manifest {
        checks.extend(e.capture_checks());
    }
    checks.push(format_check(artifact, read.format));
    checks.push(match read.entries {
        Ok(n) => check("archive", true, format!("{n} entries, read to the end")),
        Err(e) => check("archive", false, format!("unreadable: {e}")),
    });
    checks.extend(read.shape);
    checks.extend(identity_checks(&found));
    Ok(Verification {
        ok: checks.iter().all(|c| c.ok),
        artifact: escape(artifact.as_os_str().as_encoded_bytes()),
        manifest: found_manifest.map(|(p, _)| escape(p.as_os_str().as_encoded_bytes())),
        checks,
    })
}

/// The compression its name promises (curtin and image-deploy go by the
/// name: a `.tgz` holding zstd cannot be deployed).
fn format_check(artifact: &Path, found: &'static str) -> Check {
    let name = artifact.to_string_lossy();
    let expected = [
        (".tgz", "gzip"),
        (".tar.gz", "gzip"),
        (".tar.zst", "zstd"),
        (".tzst", "zstd"),
        (".tar", "uncompressed"),
    ]
    .into_iter()
    .find(|(ext, _)| name.ends_with(ext));
    match expected {
        Some((ext, want)) if want != found => check(
            "format",
            false,
            format!("{found} data named {ext}: whatever deploys it by its name will fail"),
        ),
        Some((ext, _)) => check("format", true, format!("{found}, as {ext} says")),
        None => check("format", true, format!("{found} (the name says nothing)")),
    }
}

fn check(name: &'static str, ok: bool, detail: String) -> Check {
    Check {
        name,
        ok,
        detail,
        paths: vec![],
    }
}

/// The MANIFEST found, and the artifact's size, md5 and sha256 against it.
fn checksum_checks(found: Option<&(PathBuf, Expected)>, got: &Digests) -> Vec<Check> {
    let Some((p, exp)) = found else {
        return vec![check(
            "manifest",
            false,
            "no goldcap MANIFEST names this artifact next to it (give one with --manifest)".into(),
        )];
    };
    vec![
        check("manifest", true, format!("{}", p.display())),
        check(
            "size",
            exp.size == got.size,
            format!("{} bytes (MANIFEST: {})", got.size, exp.size),
        ),
        check(
            "md5",
            exp.md5 == got.md5,
            format!("{} (MANIFEST: {})", got.md5, exp.md5),
        ),
        match &exp.sha256 {
            Some(s) => check(
                "sha256",
                *s == got.sha256,
                format!("{} (MANIFEST: {s})", got.sha256),
            ),
            None => check(
                "sha256",
                true,
                format!("{} (not in the MANIFEST)", got.sha256),
            ),
        },
    ]
}
