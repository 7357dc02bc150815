//! Uploads: where the artifact and its MANIFEST go after (or while) they
//! are written — a Digital Rebar Provision endpoint's file store, S3 or an
//! S3-compatible store, or two presigned PUT URLs.
//!
//! The stage after output: `goldcap upload MANIFEST.json --to TARGET` reads a
//! finished artifact, `goldcap capture --upload TARGET` streams the
//! compressed bytes straight to DRP or S3 while they are hashed, so a
//! server without room for a local copy can still be captured. Every upload
//! is verified (DRP: `X-DRP-SHA256SUM` after a `HEAD`; S3: each part's
//! ETag against its md5, the final multipart ETag and the object size;
//! PUT: the ETag where the server gives an md5) and a failed one leaves
//! nothing under the final name (S3 abort; DRP `DELETE` when the token
//! allows it, otherwise the error says what is left).
//!
//! Credentials never leave this module's request headers: they are read
//! from the environment or a file, never from argv, and no message, log,
//! manifest or `--json` output contains them ([`http::redact`] strips presigned
//! query strings from every URL shown).

mod aws;
pub mod drp;
pub mod http;
mod put;
pub mod s3;
mod target;

pub use target::{Target, TargetParser};

use crate::output::digest::Digests;
use crate::output::manifest::read::read_json;
use crate::report::error::{Error, Result};
use crate::signals::Cancel;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Options shared by every upload.
#[derive(Debug, Clone)]
pub struct Options {
    /// A file holding the DRP token (else `RS_TOKEN` / `RS_KEY`).
    pub token_file: Option<PathBuf>,
    /// Extra CA certificate(s) (PEM) to trust.
    pub ca_cert: Option<PathBuf>,
    /// Do not verify TLS certificates.
    pub insecure: bool,
    /// Per-request inactivity timeout.
    pub timeout: Duration,
    /// Attempts per request (1 = no retry).
    pub attempts: u32,
    /// S3 part size in bytes (`None`: chosen from the expected size).
    pub part_size: Option<u64>,
    /// Also make a presigned GET URL valid this long (S3).
    pub presign_get: Option<Duration>,
    /// Replace objects the store already holds under the same names with
    /// other content (without it, such an upload is refused before a byte
    /// is sent).
    pub force: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            token_file: None,
            ca_cert: None,
            insecure: false,
            timeout: Duration::from_secs(60),
            attempts: 5,
            part_size: None,
            presign_get: None,
            force: false,
        }
    }
}

/// One stored object.
#[derive(Debug, Clone, Serialize)]
pub struct Stored {
    /// Name on the target (DRP path, S3 key).
    pub name: String,
    /// Where it can be fetched (no credentials in it).
    pub url: String,
    pub size: u64,
    /// How it was checked after the upload.
    pub verified: String,
    /// Whether goldcap sent it (false: the store already held these bytes).
    pub sent: bool,
}

/// The result of an upload.
#[derive(Debug, Clone, Serialize)]
pub struct Uploaded {
    pub target: String,
    /// Artifact, then MANIFEST(s).
    pub objects: Vec<Stored>,
    /// A presigned GET URL for the artifact, when asked for (it is a
    /// credential: shown only here, never logged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presigned_get: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::{Existing, existing, preflight};

    #[test]
    fn preflight_names_every_refusal_and_sends_nothing_for_them() {
        let look = |n: &str| {
            let held = match n {
                "same" => Some("aa".to_owned()),
                "other" => Some("bb".to_owned()),
                "unsummed" => Some(String::new()),
                _ => None,
            };
            Ok((format!("<{n}>"), held))
        };
        let names = [
            ("same", Some("aa")),
            ("new", Some("cc")),
            ("other", Some("aa")),
        ];
        let err = preflight(names, false, "no sum", look)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "<other> already holds sha256 bb, not the aa goldcap would send; nothing was sent (--force replaces it)"
        );
        let forced = preflight(names, true, "no sum", look).unwrap();
        assert_eq!(forced, [Existing::Keep, Existing::Send, Existing::Send]);
        let stream = [("unsummed", None), ("other", None), ("new", None)];
        let err = preflight(stream, false, "no sum", look)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "<unsummed> already holds no sum; <other> already holds sha256 bb; nothing was sent (--force replaces them)"
        );
    }

    #[test]
    fn existing_table() {
        let a = "ab".repeat(32);
        let b = "cd".repeat(32);
        let cases = [
            // remote, local, force → action
            (None, Some(a.as_str()), false, Existing::Send),
            (None, None, false, Existing::Send),
            (Some(a.as_str()), Some(a.as_str()), false, Existing::Keep),
            (Some(a.as_str()), Some(a.as_str()), true, Existing::Keep),
            (Some(b.as_str()), Some(a.as_str()), false, Existing::Refuse),
            (Some(b.as_str()), Some(a.as_str()), true, Existing::Send),
            // A store that gives no checksum cannot show the bytes match.
            (Some(""), Some(""), false, Existing::Refuse),
            (Some(""), Some(a.as_str()), true, Existing::Send),
            // A stream's checksum is not known before it is sent.
            (Some(a.as_str()), None, false, Existing::Refuse),
            (Some(a.as_str()), None, true, Existing::Send),
        ];
        for (remote, local, force, want) in cases {
            assert_eq!(
                existing(remote, local, force),
                want,
                "{remote:?} {local:?} {force}"
            );
        }
    }
}

/// Paths of a finished capture, as its JSON MANIFEST names them.
#[derive(Debug, Clone)]
pub struct Files {
    pub artifact: PathBuf,
    pub manifest: PathBuf,
    pub manifest_json: PathBuf,
    /// DRP upload name of the artifact (`images/x.tgz`).
    pub upload_tarball: String,
    /// DRP upload name of the text MANIFEST.
    pub upload_manifest: String,
    /// Expected size, md5 and sha256 of the artifact.
    pub size: u64,
    /// md5 hex.
    pub md5: String,
    /// sha256 hex.
    pub sha256: String,
    /// Operations that left identity in the image, as the MANIFEST says
    /// (`None`: it does not say).
    pub identity_off: Option<Vec<String>>,
}

impl Files {
    /// Reads a goldcap JSON MANIFEST; the artifact and text MANIFEST are
    /// next to it. A MANIFEST is input: the names in it must be plain file
    /// names in its own directory (regular files, not symlinks) and
    /// relative upload names, or nothing is done.
    pub fn from_manifest(json: &Path) -> Result<Files> {
        let bad = |why: String| Error::usage(format!("{}: {why}", json.display()));
        let m = read_json(json).map_err(bad)?;
        if !m.is_goldcap() {
            return Err(bad("not a goldcap JSON MANIFEST".into()));
        }
        m.check().map_err(bad)?;
        let dir = json
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let text = m
            .text_name()
            .ok_or_else(|| bad("not a goldcap JSON MANIFEST (no \"upload_manifest\")".into()))?;
        let files = Files {
            artifact: dir.join(m.field(&m.filename, "filename").map_err(bad)?),
            manifest: dir.join(text),
            manifest_json: json.to_path_buf(),
            upload_tarball: m
                .field(&m.upload_tarball, "upload_tarball")
                .map_err(bad)?
                .to_owned(),
            upload_manifest: m
                .field(&m.upload_manifest, "upload_manifest")
                .map_err(bad)?
                .to_owned(),
            size: m.size.ok_or_else(|| bad("no size".into()))?,
            md5: m.field(&m.md5, "md5").map_err(bad)?.to_owned(),
            sha256: m.field(&m.sha256, "sha256").map_err(bad)?.to_owned(),
            identity_off: m.scrub.identity_off.clone(),
        };
        for p in [&files.artifact, &files.manifest] {
            match std::fs::symlink_metadata(p) {
                Ok(meta) if meta.is_file() => {}
                Ok(_) => {
                    return Err(Error::usage(format!(
                        "{} is not a regular file (a MANIFEST names files next to it)",
                        p.display()
                    )));
                }
                Err(_) => {
                    return Err(Error::usage(format!(
                        "{} is missing (it should be next to {})",
                        p.display(),
                        json.display()
                    )));
                }
            }
        }
        Ok(files)
    }

    /// File name of a path.
    pub fn name(p: &std::path::Path) -> String {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// Uploads a finished capture.
pub fn upload_files(
    target: &Target,
    opts: &Options,
    files: &Files,
    ui: &crate::report::ui::Ui,
    cancel: &Cancel,
) -> Result<Uploaded> {
    match target {
        Target::Drp { endpoint } => {
            drp::Client::new(endpoint.as_deref(), opts)?.upload_files(files, ui, cancel)
        }
        Target::S3 { bucket, prefix } => {
            s3::Client::new(bucket, prefix, opts)?.upload_files(files, ui, cancel)
        }
        Target::Put { artifact, manifest } => {
            put::put_files(artifact, manifest, opts, files, ui, cancel)
        }
    }
}

/// A streaming upload of the artifact during a capture.
pub trait StreamUpload: std::io::Write {
    /// Ends the upload and verifies it against the digests of what was
    /// written.
    fn finish(self: Box<Self>, digests: &Digests, cancel: &Cancel) -> Result<Stored>;
    /// Abandons it, leaving nothing under the final name where possible;
    /// returns what could not be cleaned up.
    fn abort(self: Box<Self>) -> Option<String>;
}

/// Starts a streaming upload of `files.upload_tarball` (its name) to
/// `target`. `estimate` sizes S3 parts.
pub fn start_stream(
    target: &Target,
    opts: &Options,
    names: &StreamNames,
    estimate: Option<u64>,
    cancel: &Cancel,
) -> Result<Box<dyn StreamUpload>> {
    match target {
        Target::Drp { endpoint } => Ok(Box::new(
            drp::Client::new(endpoint.as_deref(), opts)?.start_stream(
                &names.upload_tarball,
                &names.upload_manifest,
                cancel,
            )?,
        )),
        Target::S3 { bucket, prefix } => Ok(Box::new(
            s3::Client::new(bucket, prefix, opts)?.start_stream(
                [&names.artifact, &names.manifest, &names.manifest_json],
                estimate,
                cancel,
            )?,
        )),
        Target::Put { .. } => Err(anyhow::anyhow!(
            "a presigned PUT needs the finished file; it cannot be streamed"
        )
        .into()),
    }
}

/// Names for a streaming upload.
#[derive(Debug, Clone)]
pub struct StreamNames {
    /// Artifact file name.
    pub artifact: String,
    /// Text and JSON MANIFEST file names (S3 keys under the prefix).
    pub manifest: String,
    pub manifest_json: String,
    /// DRP upload name of the artifact.
    pub upload_tarball: String,
    /// DRP upload name of the text MANIFEST.
    pub upload_manifest: String,
}

/// Uploads the MANIFEST(s) after a streamed artifact.
pub fn upload_manifests(
    target: &Target,
    opts: &Options,
    files: &Files,
    ui: &crate::report::ui::Ui,
    cancel: &Cancel,
) -> Result<Vec<Stored>> {
    match target {
        Target::Drp { endpoint } => drp::Client::new(endpoint.as_deref(), opts)?
            .upload_manifest(files, ui, cancel)
            .map(|s| vec![s]),
        Target::S3 { bucket, prefix } => {
            s3::Client::new(bucket, prefix, opts)?.upload_manifests(files, ui, cancel)
        }
        Target::Put { .. } => Ok(Vec::new()),
    }
}

/// A presigned GET URL for the artifact (S3 with `--presign-get`).
pub fn presigned_get(target: &Target, opts: &Options, files: &Files) -> Option<String> {
    match target {
        Target::S3 { bucket, prefix } => s3::Client::new(bucket, prefix, opts)
            .ok()?
            .presigned_get(&Files::name(&files.artifact)),
        _ => None,
    }
}

/// What an upload does about a name the store may already hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Nothing is there, or replacing it was asked for: send.
    Send,
    /// The same bytes are there (same sha256): nothing to send.
    Keep,
    /// Something else, or something goldcap cannot compare: refused
    /// without `--force`, so a good copy is never lost to a re-upload.
    Refuse,
}

/// Decides for one name. `remote`: `None` when the store holds nothing
/// under it, else the sha256 the store reports (empty when it reports
/// none); `local`: the sha256 of what would be sent, when known (not for
/// a stream). Pure.
pub fn existing(remote: Option<&str>, local: Option<&str>, force: bool) -> Existing {
    match remote {
        None => Existing::Send,
        Some(r) if !r.is_empty() && Some(r) == local => Existing::Keep,
        Some(_) if force => Existing::Send,
        Some(_) => Existing::Refuse,
    }
}

/// Decides, before any data moves, for every name with the sha256 goldcap
/// would send (`None` for a stream). `look` tells, for a name, how to show
/// it and what the store holds there (`None`: nothing; `Some("")`: an
/// object without a checksum goldcap can compare, described by
/// `no_sum`). Every name [`existing`] refuses is named in one error.
pub fn preflight<const N: usize>(
    names: [(&str, Option<&str>); N],
    force: bool,
    no_sum: &str,
    mut look: impl FnMut(&str) -> Result<(String, Option<String>)>,
) -> Result<[Existing; N]> {
    let mut refused = Vec::new();
    let mut out = [Existing::Send; N];
    for (slot, (name, local)) in out.iter_mut().zip(names) {
        let (shown, remote) = look(name)?;
        *slot = existing(remote.as_deref(), local, force);
        if *slot == Existing::Refuse {
            let held = match remote.as_deref() {
                Some("") | None => no_sum.to_owned(),
                Some(r) => format!("sha256 {r}"),
            };
            refused.push(match local {
                Some(l) => format!("{shown} already holds {held}, not the {l} goldcap would send"),
                None => format!("{shown} already holds {held}"),
            });
        }
    }
    if refused.is_empty() {
        return Ok(out);
    }
    Err(anyhow::anyhow!(
        "{}; nothing was sent (--force replaces {})",
        refused.join("; "),
        if refused.len() == 1 { "it" } else { "them" }
    )
    .into())
}

/// The sha256 of a local file (a MANIFEST), read as it streams.
pub(crate) fn sha256_of(path: &Path) -> Result<String> {
    let f = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let mut r = crate::output::digest::HashingReader::new(f);
    std::io::copy(&mut r, &mut std::io::sink())
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    Ok(r.hasher().digests().sha256)
}

/// The tail of an error message for what a clean-up (delete, abort,
/// [`withdraw`]) could not remove: `"; <what>"`, or nothing.
pub fn left_behind(what: Option<String>) -> String {
    what.map_or_else(String::new, |l| format!("; {l}"))
}

/// Removes an uploaded artifact after a later step failed; returns what
/// could not be removed. A clean-up: it runs to its end even after a
/// signal.
pub fn withdraw(target: &Target, opts: &Options, files: &Files) -> Option<String> {
    withdraw_name(
        target,
        opts,
        &files.upload_tarball,
        &Files::name(&files.artifact),
    )
}

/// [`withdraw`] by name: `upload_tarball` on DRP, `artifact` (the file
/// name) under the S3 prefix.
pub fn withdraw_name(
    target: &Target,
    opts: &Options,
    upload_tarball: &str,
    artifact: &str,
) -> Option<String> {
    let cannot = |e: Error| Some(format!("the uploaded artifact is left on the store ({e})"));
    match target {
        Target::Drp { endpoint } => match drp::Client::new(endpoint.as_deref(), opts) {
            Ok(c) => c.delete(upload_tarball),
            Err(e) => cannot(e),
        },
        Target::S3 { bucket, prefix } => match s3::Client::new(bucket, prefix, opts) {
            Ok(c) => c.delete(artifact),
            Err(e) => cannot(e),
        },
        Target::Put { .. } => {
            Some("the artifact uploaded to the presigned URL (goldcap cannot delete it)".into())
        }
    }
}
