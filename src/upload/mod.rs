//! Uploads: where the artifact and its MANIFEST go after (or while) they
//! are written — a Digital Rebar Provision endpoint's file store, S3 or an
//! S3-compatible store, or two presigned PUT URLs.
//!
//! Sits after the sink: `goldcap upload MANIFEST.json --to TARGET` reads a
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
//! manifest or `--json` output contains them ([`redact`] strips presigned
//! query strings from every URL shown).

pub mod drp;
pub mod s3;

use crate::error::{Error, Result};
use crate::signals::Cancel;
use serde::Serialize;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

/// Where to upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A DRP endpoint (`drp` or `drp:https://host:8092`).
    Drp {
        /// Endpoint URL; `None` means `RS_ENDPOINT` or the default.
        endpoint: Option<String>,
    },
    /// `s3://bucket/prefix`.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix (no leading or trailing `/`).
        prefix: String,
    },
    /// Two presigned PUT URLs: artifact, then text MANIFEST.
    Put {
        /// For the artifact.
        artifact: String,
        /// For the MANIFEST.
        manifest: String,
    },
}

impl Target {
    /// Parses `--to`/`--upload`. `put:@FILE` reads the two URLs from a file
    /// (one per line), which keeps them out of the process list.
    pub fn parse(s: &str) -> std::result::Result<Target, String> {
        if s == "drp" {
            return Ok(Target::Drp { endpoint: None });
        }
        if let Some(url) = s.strip_prefix("drp:") {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(format!(
                    "drp:{}: a DRP endpoint is an http(s) URL, e.g. drp:https://drp.example.com:8092",
                    redact(url)
                ));
            }
            return Ok(Target::Drp {
                endpoint: Some(url.trim_end_matches('/').to_owned()),
            });
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.len() < 3
                || !bucket
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            {
                return Err(format!("{bucket:?} is not an S3 bucket name"));
            }
            return Ok(Target::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
            });
        }
        if let Some(rest) = s.strip_prefix("put:") {
            let text = match rest.strip_prefix('@') {
                Some(file) => {
                    std::fs::read_to_string(file).map_err(|e| format!("put:@{file}: {e}"))?
                }
                None => rest.replace(',', "\n"),
            };
            let urls: Vec<&str> = text.split_whitespace().collect();
            return match urls.as_slice() {
                [a, m] if [a, m].iter().all(|u| u.starts_with("https://") || u.starts_with("http://")) => {
                    Ok(Target::Put { artifact: (*a).to_owned(), manifest: (*m).to_owned() })
                }
                _ => Err("put: takes two http(s) URLs, the artifact's then the MANIFEST's (put:URL,URL or put:@FILE with one per line)".into()),
            };
        }
        Err(format!(
            "{}: upload target must be drp, drp:URL, s3://BUCKET/PREFIX or put:URL,URL",
            redact(s)
        ))
    }

    /// For messages: never a presigned query string.
    pub fn describe(&self) -> String {
        match self {
            Target::Drp { endpoint } => match endpoint {
                Some(e) => format!("DRP {}", redact(e)),
                None => "DRP ($RS_ENDPOINT)".into(),
            },
            Target::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
            Target::Put { artifact, .. } => format!("presigned PUT {}", redact(artifact)),
        }
    }

    /// Whether a capture can stream to it (a presigned PUT needs the size
    /// up front, so it uploads the finished local file).
    pub fn can_stream(&self) -> bool {
        !matches!(self, Target::Put { .. })
    }
}

/// clap's parser for `--to`/`--upload`. clap's own error would quote the
/// value, and a presigned URL or a `user:pass@` endpoint is a credential, so
/// the message is built here from [`Target::parse`]'s (redacted) reason.
#[derive(Clone, Copy, Debug, Default)]
pub struct TargetParser;

impl clap::builder::TypedValueParser for TargetParser {
    type Value = Target;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> std::result::Result<Target, clap::Error> {
        let name = arg.map_or_else(|| "TARGET".to_owned(), |a| a.to_string());
        let fail = |why: String| {
            clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!("invalid value for '{name}': {why}\n"),
            )
            .with_cmd(cmd)
        };
        let s = value.to_str().ok_or_else(|| fail("not UTF-8".into()))?;
        Target::parse(s).map_err(fail)
    }
}

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
    /// Bytes.
    pub size: u64,
    /// How it was checked after the upload.
    pub verified: String,
}

/// The result of an upload.
#[derive(Debug, Clone, Serialize)]
pub struct Uploaded {
    /// The target, described.
    pub target: String,
    /// Artifact, then MANIFEST(s).
    pub objects: Vec<Stored>,
    /// A presigned GET URL for the artifact, when asked for (it is a
    /// credential: shown only here, never logged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presigned_get: Option<String>,
}

/// Shows a URL without its query string (presigned signatures, tokens) or
/// user info.
pub fn redact(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or(url);
    match no_query.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest
                .rsplit_once('@')
                .filter(|(u, _)| !u.contains('/'))
                .map_or(rest, |(_, h)| h);
            format!("{scheme}://{rest}")
        }
        None => no_query.to_owned(),
    }
}

/// One HTTP attempt's result, for the retry loop.
#[derive(Debug)]
pub enum Attempt {
    /// Worth another try (connection error, timeout, 5xx).
    Retry(String),
    /// Will not get better (4xx, a verification mismatch).
    Fatal(String),
}

impl From<ureq::Error> for Attempt {
    fn from(e: ureq::Error) -> Self {
        // Transport problems: connection refused or reset, timeouts, TLS
        // handshakes cut short. A certificate that does not verify is final.
        let msg = redact_error(&e.to_string());
        match e {
            ureq::Error::Timeout(_) => {
                Attempt::Retry(format!("{msg} (no progress within --timeout)"))
            }
            // rustls reports a certificate it cannot verify as invalid data:
            // trying again cannot help.
            ureq::Error::Io(ref io) if io.kind() == std::io::ErrorKind::InvalidData => {
                let hint = if msg.contains("certificate") {
                    " (trust the endpoint's CA with --ca-cert FILE, or skip verification with --insecure)"
                } else {
                    ""
                };
                Attempt::Fatal(format!("{msg}{hint}"))
            }
            ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::BadUri(_) => {
                Attempt::Fatal(msg)
            }
            _ => Attempt::Retry(msg),
        }
    }
}

pub(crate) fn redact_error(s: &str) -> String {
    // ureq may name the URL in an error; never show its query string.
    s.split_whitespace()
        .map(|w| {
            if w.contains("://") {
                redact(w.trim_matches(|c| c == '"' || c == '\''))
            } else {
                w.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Classifies an HTTP status: 5xx (and 408/429) retried, other non-2xx final.
pub fn status_attempt(status: u16, msg: String) -> Attempt {
    if status >= 500 || status == 408 || status == 429 {
        Attempt::Retry(msg)
    } else {
        Attempt::Fatal(msg)
    }
}

/// Runs `f` until it succeeds, fails for good, or `attempts` are used,
/// backing off 0.25, 0.5, 1, 2, 4 … s (capped at 8 s) between tries.
pub fn retry<T>(
    what: &str,
    attempts: u32,
    cancel: &Cancel,
    mut f: impl FnMut() -> std::result::Result<T, Attempt>,
) -> Result<T> {
    let mut delay = Duration::from_millis(250);
    let mut last = String::new();
    for n in 1..=attempts.max(1) {
        cancel.check()?;
        match f() {
            Ok(v) => return Ok(v),
            Err(Attempt::Fatal(msg)) => return Err(anyhow::anyhow!("{what}: {msg}").into()),
            Err(Attempt::Retry(msg)) => {
                last = msg;
                if n < attempts {
                    crate::ui::eprint_line(&format!(
                        "goldcap: {what}: {last}; retrying ({n}/{attempts})"
                    ));
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(8));
                }
            }
        }
    }
    Err(anyhow::anyhow!("{what}: {last} (gave up after {attempts} attempts)").into())
}

/// The HTTP agent: TLS verified against the platform's roots (plus
/// `--ca-cert`), unless `--insecure`; statuses handled by the caller.
pub fn agent(opts: &Options) -> Result<ureq::Agent> {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let roots = match &opts.ca_cert {
        Some(p) => {
            let pem = std::fs::read(p).map_err(|e| {
                Error::usage(format!(
                    "--ca-cert {}: {}",
                    p.display(),
                    crate::util::io_reason(&e)
                ))
            })?;
            let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|i| match i {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(Error::usage(format!(
                    "--ca-cert {}: no PEM certificate in it",
                    p.display()
                )));
            }
            RootCerts::new_with_certs(&certs)
        }
        None => RootCerts::PlatformVerifier,
    };
    let tls = TlsConfig::builder()
        .root_certs(roots)
        .disable_verification(opts.insecure)
        .build();
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(tls)
        .timeout_connect(Some(opts.timeout.min(Duration::from_secs(30))))
        .timeout_per_read(Some(opts.timeout))
        .timeout_per_write(Some(opts.timeout))
        .max_redirects(0)
        .user_agent(format!("goldcap/{}", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(config.new_agent())
}

/// Reads at most 64 KiB of a response body as text (error messages).
pub fn body_text(resp: &mut ureq::http::Response<ureq::Body>) -> String {
    let mut buf = Vec::new();
    let _ = resp
        .body_mut()
        .as_reader()
        .take(64 << 10)
        .read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).trim().to_owned()
}

/// A reader that hashes (md5, sha256) what passes through and counts it,
/// and reports progress.
pub struct HashingReader<'a, R: Read> {
    inner: R,
    md5: md5::Md5,
    sha256: sha2::Sha256,
    /// Bytes read.
    pub size: u64,
    ui: &'a crate::ui::Ui,
}

impl<'a, R: Read> HashingReader<'a, R> {
    /// Wraps `inner`.
    pub fn new(inner: R, ui: &'a crate::ui::Ui) -> Self {
        use md5::Digest;
        HashingReader {
            inner,
            md5: md5::Md5::new(),
            sha256: sha2::Sha256::new(),
            size: 0,
            ui,
        }
    }

    /// The lowercase hex md5 and sha256 of what was read.
    pub fn digests(&self) -> (String, String) {
        use md5::Digest;
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        (
            hex(&self.md5.clone().finalize()),
            hex(&self.sha256.clone().finalize()),
        )
    }
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use md5::Digest;
        let n = self.inner.read(buf)?;
        self.md5.update(&buf[..n]);
        self.sha256.update(&buf[..n]);
        self.size += n as u64;
        self.ui.add_bytes(n as u64);
        Ok(n)
    }
}

/// Paths of a finished capture, as its JSON MANIFEST names them.
#[derive(Debug, Clone)]
pub struct Files {
    /// The artifact.
    pub artifact: PathBuf,
    /// The text MANIFEST.
    pub manifest: PathBuf,
    /// The JSON MANIFEST.
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
}

impl Files {
    /// Reads a goldcap JSON MANIFEST; the artifact and text MANIFEST are
    /// next to it.
    pub fn from_manifest(json: &std::path::Path) -> Result<Files> {
        let bytes = std::fs::read(json).map_err(|e| {
            Error::usage(format!(
                "{}: {}",
                json.display(),
                crate::util::io_reason(&e)
            ))
        })?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            Error::usage(format!(
                "{}: not a goldcap JSON MANIFEST ({e})",
                json.display()
            ))
        })?;
        let s = |k: &str| {
            v[k].as_str().map(str::to_owned).ok_or_else(|| {
                Error::usage(format!(
                    "{}: not a goldcap JSON MANIFEST (no {k:?})",
                    json.display()
                ))
            })
        };
        if v["tool"]["name"] != "goldcap" {
            return Err(Error::usage(format!(
                "{}: not a goldcap JSON MANIFEST",
                json.display()
            )));
        }
        let dir = json
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let upload_manifest = s("upload_manifest")?;
        let txt_name = upload_manifest
            .rsplit('/')
            .next()
            .unwrap_or(&upload_manifest)
            .to_owned();
        let files = Files {
            artifact: dir.join(s("filename")?),
            manifest: dir.join(txt_name),
            manifest_json: json.to_path_buf(),
            upload_tarball: s("upload_tarball")?,
            upload_manifest,
            size: v["size"]
                .as_u64()
                .ok_or_else(|| Error::usage(format!("{}: no size", json.display())))?,
            md5: s("md5")?,
            sha256: s("sha256")?,
        };
        for p in [&files.artifact, &files.manifest] {
            if !p.is_file() {
                return Err(Error::usage(format!(
                    "{} is missing (it should be next to {})",
                    p.display(),
                    json.display()
                )));
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
    ui: &crate::ui::Ui,
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
            put_files(artifact, manifest, opts, files, ui, cancel)
        }
    }
}

/// Uploads through two presigned PUT URLs.
fn put_files(
    artifact_url: &str,
    manifest_url: &str,
    opts: &Options,
    files: &Files,
    ui: &crate::ui::Ui,
    cancel: &Cancel,
) -> Result<Uploaded> {
    let agent = agent(opts)?;
    let mut objects: Vec<Stored> = Vec::new();
    // A presigned PUT cannot be undone: once the artifact is up, a later
    // failure says where it is.
    let left = |objects: &[Stored], e: Error| -> Error {
        match objects.first() {
            Some(a) => anyhow::anyhow!(
                "{e}; the artifact is already at {} and goldcap cannot delete it (a presigned URL allows only PUT)",
                a.url
            )
            .into(),
            None => e,
        }
    };
    for (url, path, expect) in [
        (artifact_url, &files.artifact, Some(files)),
        (manifest_url, &files.manifest, None),
    ] {
        let size = std::fs::metadata(path)
            .map_err(|e| left(&objects, anyhow::anyhow!("{}: {e}", path.display()).into()))?
            .len();
        let (md5, sha256) = retry(
            &format!("PUT {}", redact(url)),
            opts.attempts,
            cancel,
            || {
                let f = std::fs::File::open(path)
                    .map_err(|e| Attempt::Fatal(format!("{}: {e}", path.display())))?;
                let mut r = HashingReader::new(f, ui);
                let mut resp = agent
                    .put(url)
                    .header("Content-Length", size.to_string())
                    // No Content-Type: URLs signed without one (SigV2 signs
                    // it) would not match. A refusal comes before the body.
                    .header("Expect", "100-continue")
                    .send(ureq::SendBody::from_reader(&mut r))
                    .map_err(Attempt::from)?;
                let status = resp.status().as_u16();
                if !(200..300).contains(&status) {
                    let body = body_text(&mut resp);
                    return Err(status_attempt(
                        status,
                        format!("HTTP {status}: {}", s3::error_message(&body)),
                    ));
                }
                let etag = resp
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .trim_matches('"')
                    .to_owned();
                let (md5, sha256) = r.digests();
                if etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit()) && etag != md5 {
                    return Err(Attempt::Fatal(format!(
                        "the stored ETag {etag} is not the md5 of what was sent ({md5})"
                    )));
                }
                Ok((md5, sha256))
            },
        )
        .map_err(|e| left(&objects, e))?;
        if let Some(f) = expect
            && (md5 != f.md5 || sha256 != f.sha256)
        {
            return Err(anyhow::anyhow!(
                "{} does not match its MANIFEST (sha256 {sha256}, MANIFEST {}); it changed since the capture",
                path.display(),
                f.sha256
            )
            .into());
        }
        objects.push(Stored {
            name: Files::name(path),
            url: redact(url),
            size,
            verified: "ETag = md5 of the bytes sent".into(),
        });
    }
    Ok(Uploaded {
        target: format!("presigned PUT {}", redact(artifact_url)),
        objects,
        presigned_get: None,
    })
}

/// A streaming upload of the artifact during a capture.
pub trait StreamUpload: std::io::Write {
    /// Ends the upload and verifies it against the digests of what was
    /// written.
    fn finish(self: Box<Self>, digests: &crate::sink::Digests, cancel: &Cancel) -> Result<Stored>;
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
                &names.artifact,
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
    ui: &crate::ui::Ui,
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

/// The tail of an error message for what a clean-up (delete, abort,
/// [`withdraw`]) could not remove: `"; <what>"`, or nothing.
pub fn left_behind(what: Option<String>) -> String {
    what.map_or_else(String::new, |l| format!("; {l}"))
}

/// Removes an uploaded artifact after a later step failed; returns what
/// could not be removed.
pub fn withdraw(target: &Target, opts: &Options, files: &Files, cancel: &Cancel) -> Option<String> {
    withdraw_name(
        target,
        opts,
        &files.upload_tarball,
        &Files::name(&files.artifact),
        cancel,
    )
}

/// [`withdraw`] by name: `upload_tarball` on DRP, `artifact` (the file
/// name) under the S3 prefix.
pub fn withdraw_name(
    target: &Target,
    opts: &Options,
    upload_tarball: &str,
    artifact: &str,
    cancel: &Cancel,
) -> Option<String> {
    let cannot = |e: Error| Some(format!("the uploaded artifact is left on the store ({e})"));
    match target {
        Target::Drp { endpoint } => match drp::Client::new(endpoint.as_deref(), opts) {
            Ok(c) => c.delete(upload_tarball, cancel),
            Err(e) => cannot(e),
        },
        Target::S3 { bucket, prefix } => match s3::Client::new(bucket, prefix, opts) {
            Ok(c) => c.delete(artifact, cancel),
            Err(e) => cannot(e),
        },
        Target::Put { .. } => {
            Some("the artifact uploaded to the presigned URL (goldcap cannot delete it)".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_table() {
        assert_eq!(
            Target::parse("drp").unwrap(),
            Target::Drp { endpoint: None }
        );
        assert_eq!(
            Target::parse("drp:https://drp.example.com:8092/").unwrap(),
            Target::Drp {
                endpoint: Some("https://drp.example.com:8092".into())
            }
        );
        assert_eq!(
            Target::parse("s3://gold-images/fleet/a").unwrap(),
            Target::S3 {
                bucket: "gold-images".into(),
                prefix: "fleet/a".into()
            }
        );
        assert_eq!(
            Target::parse("s3://gold-images").unwrap(),
            Target::S3 {
                bucket: "gold-images".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            Target::parse("put:https://s/a?X-Amz-Signature=1,https://s/m?sig=2").unwrap(),
            Target::Put {
                artifact: "https://s/a?X-Amz-Signature=1".into(),
                manifest: "https://s/m?sig=2".into()
            }
        );
        for bad in [
            "drp:ftp://x",
            "s3://A",
            "put:https://only-one",
            "ftp://x",
            "drp:",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redaction_table() {
        assert_eq!(
            redact("https://s3.example/b/k?X-Amz-Credential=AKIA&X-Amz-Signature=abc"),
            "https://s3.example/b/k"
        );
        assert_eq!(
            redact("https://user:secret@drp:8092/api/v3/files/x?token=t"),
            "https://drp:8092/api/v3/files/x"
        );
        assert_eq!(
            redact_error("error for https://h/p?sig=1: reset"),
            "error for https://h/p reset"
        );
    }

    #[test]
    fn statuses_table() {
        assert!(matches!(
            status_attempt(500, String::new()),
            Attempt::Retry(_)
        ));
        assert!(matches!(
            status_attempt(503, String::new()),
            Attempt::Retry(_)
        ));
        assert!(matches!(
            status_attempt(429, String::new()),
            Attempt::Retry(_)
        ));
        assert!(matches!(
            status_attempt(403, String::new()),
            Attempt::Fatal(_)
        ));
        assert!(matches!(
            status_attempt(409, String::new()),
            Attempt::Fatal(_)
        ));
    }
}
