//! Digital Rebar Provision's files API, as drpcli uses it and the server
//! answers (`../shared/reference/drp-image-builder.md` §2–3).
//!
//! `POST /api/v3/files/<path>` with a raw body (`Content-Type:
//! application/octet-stream`, a `Content-Length` whenever the size is known
//! — drpcli sends none, so the server's size check never fires), answered
//! `201 {"Path","Size"}`; then `HEAD` the same URL and compare
//! `X-DRP-SHA256SUM` with the sha256 goldcap computed. Credentials follow
//! drpcli: `RS_TOKEN` (a job token inside a DRP task), `RS_KEY=user:pass`, or
//! `--token-file`; endpoint `RS_ENDPOINT`, default `https://127.0.0.1:8092`.
//! Unlike drpcli, TLS is verified (`--ca-cert`, explicit `--insecure`).
//!
//! DRP's error JSON (`{"Model","Key","Type","Messages","Code"}`) is shown
//! as a sentence; a 403 names the claim the credentials lack. A streamed upload
//! asks `Expect: 100-continue`, so a refused token is known before the first
//! byte of the root is read, and an aborted stream is cut off with an error
//! (never a final chunk), so DRP discards it instead of storing a truncated
//! artifact. The token never appears in a message.

use super::http::{Attempt, agent, body_text, redact, retry, status_attempt};
use super::{Existing, Files, Options, Stored, Uploaded};
use crate::output::digest::{Digests, HashingReader};
use crate::report::error::{Error, Result};
use crate::signals::Cancel;
use anyhow::Context as _;
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Default endpoint, as drpcli's.
pub const DEFAULT_ENDPOINT: &str = "https://127.0.0.1:8092";

/// Credentials, never shown.
#[derive(Clone)]
enum Auth {
    Bearer(String),
    Basic(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth(redacted)")
    }
}

impl Auth {
    /// RS_KEY's user:password rather than a token.
    fn is_password(&self) -> bool {
        matches!(self, Auth::Basic(_))
    }

    fn header(&self) -> String {
        use base64::Engine;
        match self {
            Auth::Bearer(t) => format!("Bearer {t}"),
            Auth::Basic(up) => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(up)
            ),
        }
    }
}

/// The largest token file read (DRP tokens are a few KiB).
const TOKEN_LIMIT: u64 = 64 << 10;

/// Reads credentials: `--token-file`, else `RS_TOKEN`, else `RS_KEY`.
fn credentials(opts: &Options) -> Result<Auth> {
    if let Some(p) = &opts.token_file {
        let t = crate::input::read_to_string(p, TOKEN_LIMIT).map_err(|e| {
            Error::usage(format!(
                "--token-file {}: {}",
                p.display(),
                crate::util::io_reason(&e)
            ))
        })?;
        let t = t.trim();
        if t.is_empty() {
            return Err(Error::usage(format!("--token-file {}: empty", p.display())));
        }
        return Ok(Auth::Bearer(t.to_owned()));
    }
    if let Ok(t) = std::env::var("RS_TOKEN")
        && !t.trim().is_empty()
    {
        return Ok(Auth::Bearer(t.trim().to_owned()));
    }
    if let Ok(k) = std::env::var("RS_KEY")
        && k.contains(':')
    {
        return Ok(Auth::Basic(k));
    }
    Err(Error::usage(
        "no DRP credentials: set RS_TOKEN (a job token inside a DRP task), RS_KEY=user:pass, or --token-file FILE",
    ))
}

/// `%`-encodes a files-API path (keeps `/` and unreserved characters).
pub fn encode_path(p: &str) -> String {
    let mut out = String::new();
    for b in p.trim_start_matches('/').bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `%`-encodes a query value (everything but unreserved characters).
pub fn encode_query(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// DRP's error JSON as a sentence. `path` is the files path; `password`:
/// the request logged in with RS_KEY's user:password, not a token.
pub fn error_message(status: u16, body: &str, action: &str, path: &str, password: bool) -> String {
    let claim = format!("files {action} /{}", path.trim_start_matches('/'));
    if status == 401 {
        return "the endpoint wants credentials (set RS_TOKEN, RS_KEY=user:pass or --token-file)"
            .into();
    }
    if status == 403 && body.is_empty() {
        return if password {
            "the login was refused: wrong user or password (RS_KEY)".into()
        } else {
            "the token was refused: it is invalid or has expired".into()
        };
    }
    let json: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let messages: Vec<String> = json
        .as_ref()
        .and_then(|v| v["Messages"].as_array())
        .map(|a| {
            a.iter()
                .filter_map(|m| m.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if status == 403 {
        let needs = messages
            .iter()
            .find_map(|m| m.strip_prefix("Requires: "))
            .map_or(claim, str::to_owned);
        return format!(
            "permission denied: the credentials lack the claim `{needs}` (DRP: {})",
            messages.join("; ")
        );
    }
    match json {
        Some(v) if !messages.is_empty() => {
            let model = v["Model"].as_str().unwrap_or("files");
            let key = v["Key"].as_str().unwrap_or(path).trim_start_matches('/');
            let kind = v["Type"].as_str().unwrap_or("ERROR");
            format!(
                "HTTP {status}: {kind}: {model}/{key}: {}",
                messages.join("; ")
            )
        }
        _ if body.is_empty() => format!("HTTP {status}"),
        _ => format!(
            "HTTP {status}: {}",
            body.chars().take(300).collect::<String>()
        ),
    }
}

/// A DRP endpoint with credentials.
pub struct Client {
    endpoint: String,
    /// The endpoint for messages, with where it came from:
    /// `https://drp:8092 (RS_ENDPOINT)`.
    at: String,
    auth: Auth,
    agent: ureq::Agent,
    attempts: u32,
    timeout: std::time::Duration,
    /// Replace what the endpoint holds under our names.
    force: bool,
}

/// Why an upload could not be confirmed.
enum Check {
    /// The endpoint holds something else (or nothing): remove it.
    Mismatch(String),
    /// The endpoint could not be asked: what it holds is unknown.
    Unknown(String),
}

/// How long a `HEAD` may take to answer: DRP reads and hashes the whole
/// file first (at 20 MB/s, the slow end of a busy disk), plus `--timeout`.
/// A file of unknown size may be any size: ten minutes.
fn head_timeout(timeout: std::time::Duration, size: Option<u64>) -> std::time::Duration {
    match size {
        Some(n) => timeout + std::time::Duration::from_secs(n / 20_000_000),
        None => timeout.max(std::time::Duration::from_secs(600)),
    }
}

/// The endpoint: the given one, `RS_ENDPOINT`, or the first of
/// `RS_ENDPOINTS`, or drpcli's default.
/// The URL of a files path on the DRP endpoint (`RS_ENDPOINT`, …) and the
/// `Authorization` header to GET it with (`RS_TOKEN`, `RS_KEY`,
/// `--token-file`), for `goldcap apply drp:PATH`.
pub fn files_get(path: &str, opts: &Options) -> Result<(String, String)> {
    let (endpoint, _) = endpoint_from(None);
    let auth = credentials(opts)?;
    Ok((
        format!("{endpoint}/api/v3/files/{}", encode_path(path)),
        auth.header(),
    ))
}

/// Also where it came from, for messages: `given`, or the variable it was
/// read from, or `default`.
fn endpoint_from(given: Option<&str>) -> (String, &'static str) {
    let var = |name: &str| std::env::var(name).ok().filter(|e| !e.is_empty());
    let (url, from) = if let Some(g) = given {
        (g.to_owned(), "given")
    } else if let Some(e) = var("RS_ENDPOINT") {
        (e, "RS_ENDPOINT")
    } else if let Some(e) =
        var("RS_ENDPOINTS").and_then(|l| l.split_whitespace().next().map(str::to_owned))
    {
        (e, "RS_ENDPOINTS")
    } else {
        (DEFAULT_ENDPOINT.to_owned(), "default")
    };
    (url.trim_end_matches('/').to_owned(), from)
}

impl Client {
    /// A client for `endpoint` (or `RS_ENDPOINT`, or the default).
    pub fn new(given: Option<&str>, opts: &Options) -> Result<Client> {
        let (endpoint, from) = endpoint_from(given);
        Ok(Client {
            at: format!("{} ({from})", redact(&endpoint)),
            endpoint,
            auth: credentials(opts)?,
            agent: agent(opts)?,
            attempts: opts.attempts,
            timeout: opts.timeout,
            force: opts.force,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v3/files/{}", self.endpoint, encode_path(path))
    }

    /// `HEAD`: the stored file's sha256, `None` if it does not exist.
    /// DRP hashes the whole file before it answers, so the wait for the
    /// answer grows with `size` (unknown: a file that may be large).
    pub fn sha256(&self, path: &str, size: Option<u64>, cancel: &Cancel) -> Result<Option<String>> {
        let wait = head_timeout(self.timeout, size);
        retry(
            &format!("HEAD /{path} on {}", self.at),
            self.attempts,
            cancel,
            || {
                let resp = self
                    .agent
                    .head(&self.url(path))
                    .header("Authorization", self.auth.header())
                    .config()
                    .timeout_per_read(Some(wait))
                    .build()
                    .call()?;
                let status = resp.status().as_u16();
                match status {
                    200 => Ok(resp
                        .headers()
                        .get("X-DRP-SHA256SUM")
                        .and_then(|v| v.to_str().ok())
                        .map(|s| s.trim().to_ascii_lowercase())
                        .or(Some(String::new()))),
                    404 => Ok(None),
                    // A HEAD answer has no body to tell the two apart.
                    403 => Err(Attempt::Fatal(format!(
                        "permission denied: {}, or the credentials lack the claim `files get /{}` \
                     (goldcap reads every upload back with HEAD, so it needs files post and get)",
                        if self.auth.is_password() {
                            "wrong user or password (RS_KEY)"
                        } else {
                            "the token is invalid or expired"
                        },
                        path.trim_start_matches('/')
                    ))),
                    _ => Err(status_attempt(
                        status,
                        error_message(status, "", "get", path, self.auth.is_password()),
                    )),
                }
            },
        )
    }

    /// Reads the stored file's sha256 back after an upload of `size` bytes.
    fn verify(
        &self,
        path: &str,
        sha256: &str,
        size: u64,
        cancel: &Cancel,
    ) -> std::result::Result<(), Check> {
        match self.sha256(path, Some(size), cancel) {
            Ok(Some(s)) if s == sha256 => Ok(()),
            Ok(Some(s)) if s.is_empty() => Err(Check::Unknown(format!(
                "/{path}: the endpoint's HEAD answer has no X-DRP-SHA256SUM, so the upload cannot be verified"
            ))),
            Ok(Some(s)) => Err(Check::Mismatch(format!(
                "/{path}: DRP reports sha256 {s}, but goldcap sent {sha256}"
            ))),
            Ok(None) => Err(Check::Mismatch(format!(
                "/{path}: not on the endpoint after the upload"
            ))),
            Err(e) => Err(Check::Unknown(e.to_string())),
        }
    }

    /// Turns a failed check into the error: a mismatch is deleted; a file
    /// that could not be read back is kept (it is most likely good) and
    /// the message says so.
    fn failed_check(&self, path: &str, check: Check) -> Error {
        match check {
            Check::Mismatch(e) => {
                let left = super::left_behind(self.delete(path));
                anyhow::anyhow!("{e}{left}").into()
            }
            Check::Unknown(e) => anyhow::anyhow!(
                "/{path} was uploaded but could not be verified ({e}); it is left on the endpoint: \
                 compare its X-DRP-SHA256SUM with the MANIFEST's sha256, or upload again"
            )
            .into(),
        }
    }

    /// Uploads a local file to `path`, sending its size, and verifies it.
    /// `expect` is the (size, md5, sha256) the MANIFEST promises.
    fn post_file(
        &self,
        path: &str,
        file: &std::path::Path,
        expect: Option<(u64, &str, &str)>,
        ui: &crate::report::ui::Ui,
        cancel: &Cancel,
    ) -> Result<Stored> {
        let size = std::fs::metadata(file)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?
            .len();
        // After an attempt of ours failed (a timeout, a reset), DRP may still
        // hold its `.part` for a while and answer 409 "File already
        // uploading": that is our own upload, so it is worth waiting for.
        let mut failed_before = false;
        let (md5, sha256) = retry(
            &format!("POST /{path} on {}", self.at),
            self.attempts,
            cancel,
            || {
                let outcome = self.post_once(path, file, size, ui);
                match &outcome {
                    Err(Attempt::Fatal(m)) if failed_before && m.starts_with("HTTP 409") => {
                        return Err(Attempt::Retry(format!(
                            "{m} (the server still holds goldcap's previous attempt)"
                        )));
                    }
                    Err(_) => failed_before = true,
                    Ok(_) => {}
                }
                outcome
            },
        )?;
        if let Some((esize, emd5, esha)) = expect
            && (esize != size || emd5 != md5 || esha != sha256)
        {
            let left = super::left_behind(self.delete(path));
            return Err(anyhow::anyhow!(
                "{} does not match its MANIFEST (sha256 {sha256}, MANIFEST {esha}): it changed since the capture{left}",
                file.display()
            )
            .into());
        }
        if let Err(check) = self.verify(path, &sha256, size, cancel) {
            return Err(self.failed_check(path, check));
        }
        Ok(Stored {
            name: format!("/{path}"),
            url: redact(&self.url(path)),
            size,
            verified: "X-DRP-SHA256SUM = sha256 sent".into(),
            sent: true,
        })
    }

    /// One POST of a local file; the (md5, sha256) of what was sent.
    fn post_once(
        &self,
        path: &str,
        file: &std::path::Path,
        size: u64,
        ui: &crate::report::ui::Ui,
    ) -> std::result::Result<(String, String), Attempt> {
        let f = std::fs::File::open(file)
            .map_err(|e| Attempt::Fatal(format!("{}: {e}", file.display())))?;
        let mut r = HashingReader::new(f).with_progress(ui);
        let mut resp = self
            .agent
            .post(&self.url(path))
            .header("Authorization", self.auth.header())
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", size.to_string())
            .header("Expect", "100-continue")
            .send(ureq::SendBody::from_reader(&mut r))?;
        let status = resp.status().as_u16();
        let body = body_text(&mut resp);
        if status != 201 {
            return Err(status_attempt(
                status,
                error_message(status, &body, "post", path, self.auth.is_password()),
            ));
        }
        check_created(&body, path, r.hasher().size())?;
        let d = r.hasher().digests();
        Ok((d.md5, d.sha256))
    }

    /// Uploads artifact and text MANIFEST (MANIFEST last). A name the
    /// endpoint already holds with the same sha256 is not sent again;
    /// with other content, only with `--force`.
    pub fn upload_files(
        &self,
        files: &Files,
        ui: &crate::report::ui::Ui,
        cancel: &Cancel,
    ) -> Result<Uploaded> {
        let manifest_sha256 = super::sha256_of(&files.manifest)?;
        let [art, man] = self.preflight(
            [
                (&files.upload_tarball, Some(files.sha256.as_str())),
                (&files.upload_manifest, Some(manifest_sha256.as_str())),
            ],
            cancel,
        )?;
        let artifact = match art {
            Existing::Keep => self.kept(&files.upload_tarball, files.size),
            _ => self.post_file(
                &files.upload_tarball,
                &files.artifact,
                Some((files.size, &files.md5, &files.sha256)),
                ui,
                cancel,
            )?,
        };
        let manifest = match man {
            Existing::Keep => Ok(self.kept(
                &files.upload_manifest,
                std::fs::metadata(&files.manifest).map_or(0, |m| m.len()),
            )),
            _ => self.upload_manifest(files, ui, cancel),
        };
        let manifest = match manifest {
            Ok(m) => m,
            // An artifact that was there before is not ours to remove.
            Err(e) if !artifact.sent => return Err(e),
            Err(e) => {
                let left = super::left_behind(self.delete(&files.upload_tarball));
                return Err(e.append(&left));
            }
        };
        Ok(Uploaded {
            target: format!("DRP {}", redact(&self.endpoint)),
            objects: vec![artifact, manifest],
            presigned_get: None,
        })
    }

    /// A name the endpoint already holds with the sha256 goldcap would send.
    fn kept(&self, path: &str, size: u64) -> Stored {
        Stored {
            name: format!("/{path}"),
            url: redact(&self.url(path)),
            size,
            verified: "already there: X-DRP-SHA256SUM = the MANIFEST's sha256 (not sent again)"
                .into(),
            sent: false,
        }
    }

    /// Uploads the text MANIFEST.
    pub fn upload_manifest(
        &self,
        files: &Files,
        ui: &crate::report::ui::Ui,
        cancel: &Cancel,
    ) -> Result<Stored> {
        self.post_file(&files.upload_manifest, &files.manifest, None, ui, cancel)
    }

    /// Before any data moves, for every name with the sha256 goldcap would
    /// send (`None` for a stream): whether the token can read it back (the
    /// verification needs `files get`), and what to do about what the
    /// endpoint already holds there. Refuses, naming each, what `--force`
    /// would be needed for.
    fn preflight<const N: usize>(
        &self,
        names: [(&str, Option<&str>); N],
        cancel: &Cancel,
    ) -> Result<[Existing; N]> {
        let no_sum = "content whose HEAD gives no X-DRP-SHA256SUM";
        super::preflight(names, self.force, no_sum, |path| {
            let remote = self.sha256(path, None, cancel)?;
            Ok((format!("/{path} on the endpoint"), remote))
        })
    }

    /// Deletes `path`; `None` when it is gone, else what is left and why.
    pub fn delete(&self, path: &str) -> Option<String> {
        // A clean-up runs to its end even after a signal (a second signal
        // still ends goldcap at once).
        let never = Cancel::never();
        let result = retry(
            &format!("DELETE /{path} on {}", self.at),
            self.attempts,
            &never,
            || {
                let mut resp = self
                    .agent
                    .delete(&self.url(path))
                    .header("Authorization", self.auth.header())
                    .call()?;
                let status = resp.status().as_u16();
                let body = body_text(&mut resp);
                match status {
                    200 | 204 | 404 => Ok(()),
                    _ => Err(status_attempt(
                        status,
                        error_message(status, &body, "delete", path, self.auth.is_password()),
                    )),
                }
            },
        );
        result
            .err()
            .map(|e| format!("/{path} is left on the endpoint ({e})"))
    }

    /// Mints a token for `user` limited to `files` `post,get` on `paths`.
    pub fn token(&self, user: &str, ttl: u64, paths: &[String], cancel: &Cancel) -> Result<String> {
        let specific = paths
            .iter()
            .map(|p| format!("/{}", p.trim_start_matches('/')))
            .collect::<Vec<_>>()
            .join(",");
        let specific = if paths.iter().any(|p| p == "*") {
            "*".to_owned()
        } else {
            specific
        };
        let url = format!(
            "{}/api/v3/users/{}/token?ttl={ttl}&scope=files&action={}&specific={}",
            self.endpoint,
            encode_path(user),
            encode_query("post,get"),
            encode_query(&specific)
        );
        retry(
            &format!("token for {user} on {}", self.at),
            self.attempts,
            cancel,
            || {
                let mut resp = self
                    .agent
                    .get(&url)
                    .header("Authorization", self.auth.header())
                    .header("Accept", "application/json")
                    .call()?;
                let status = resp.status().as_u16();
                let body = body_text(&mut resp);
                if status != 200 {
                    return Err(status_attempt(
                        status,
                        error_message(
                            status,
                            &body,
                            "token",
                            &format!("users/{user}"),
                            self.auth.is_password(),
                        ),
                    ));
                }
                let v: serde_json::Value = serde_json::from_str(&body)
                    .map_err(|_| Attempt::Fatal("the endpoint's answer has no Token".into()))?;
                v["Token"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| Attempt::Fatal("the endpoint's answer has no Token".into()))
            },
        )
    }

    /// Starts a streamed (chunked) upload of the artifact to `path`.
    /// `manifest` is the name the MANIFEST will have (checked up front).
    pub fn start_stream(self, path: &str, manifest: &str, cancel: &Cancel) -> Result<Stream> {
        self.preflight([(path, None), (manifest, None)], cancel)?;
        let (reader, writer) =
            std::io::pipe().context("cannot start the upload: no pipe for its body")?;
        let abort = Arc::new(AtomicBool::new(false));
        let complete = Arc::new(AtomicBool::new(false));
        let mut body = AbortableReader {
            inner: reader,
            abort: Arc::clone(&abort),
            complete: Arc::clone(&complete),
            consumed: 0,
        };
        let (agent, url, auth) = (self.agent.clone(), self.url(path), self.auth.header());
        let (path_owned, attempts, thread_cancel) = (path.to_owned(), self.attempts, *cancel);
        let at = self.at.clone();
        let thread = std::thread::spawn(move || -> std::result::Result<(u64, String), String> {
            // Until DRP has taken a byte of the body, a refusal (5xx, a
            // dropped connection) can be retried with the same stream;
            // after that the bytes are gone and the capture has to be rerun.
            let gone = "; a streamed upload cannot be resent once data has gone \
                        (capture with --keep-local, or capture first and use `goldcap upload`, which retries)";
            retry(
                &format!("DRP POST /{path_owned} on {at}"),
                attempts,
                &thread_cancel,
                || {
                    let sent = agent
                        .post(&url)
                        .header("Authorization", &auth)
                        .header("Content-Type", "application/octet-stream")
                        .header("Expect", "100-continue")
                        .send(ureq::SendBody::from_reader(&mut body));
                    let started = body.consumed > 0;
                    let mut resp = match sent {
                        Ok(r) => r,
                        Err(e) if started => {
                            return Err(Attempt::Fatal(format!(
                                "{}{gone}",
                                super::http::redact_error(&e.to_string())
                            )));
                        }
                        Err(e) => return Err(Attempt::from(e)),
                    };
                    let status = resp.status().as_u16();
                    let text = body_text(&mut resp);
                    if status != 201 {
                        let msg = error_message(
                            status,
                            &text,
                            "post",
                            &path_owned,
                            auth.starts_with("Basic "),
                        );
                        // Once data has gone, nothing can be retried: a
                        // new request would carry only what is left.
                        return Err(if started {
                            Attempt::Fatal(format!("{msg}{gone}"))
                        } else {
                            status_attempt(status, msg)
                        });
                    }
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    Ok((v["Size"].as_u64().unwrap_or(0), text))
                },
            )
            .map_err(|e| e.to_string())
        });
        Ok(Stream {
            client: self,
            path: path.to_owned(),
            writer: Some(writer),
            thread: Some(thread),
            abort,
            complete,
        })
    }
}

fn check_created(body: &str, path: &str, sent: u64) -> std::result::Result<(), Attempt> {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    match v["Size"].as_u64() {
        Some(n) if n == sent => Ok(()),
        Some(n) => Err(Attempt::Fatal(format!(
            "/{path}: DRP stored {n} bytes of {sent}"
        ))),
        None => Err(Attempt::Fatal(format!(
            "/{path}: unexpected answer to the upload: {body}"
        ))),
    }
}

/// The pipe's read side, as the request body: ends cleanly at EOF, or with
/// an error once aborted, so DRP never sees a complete but truncated body.
struct AbortableReader {
    inner: std::io::PipeReader,
    abort: Arc<AtomicBool>,
    /// Set at the clean end of the body: everything was handed over.
    complete: Arc<AtomicBool>,
    /// Bytes handed to the request so far.
    consumed: u64,
}

impl Read for AbortableReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            if self.abort.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("upload aborted"));
            }
            self.complete.store(true, Ordering::SeqCst);
        }
        self.consumed += n as u64;
        Ok(n)
    }
}

type StreamThread = std::thread::JoinHandle<std::result::Result<(u64, String), String>>;

/// A chunked upload in progress: writes go to the request body.
pub struct Stream {
    client: Client,
    path: String,
    writer: Option<std::io::PipeWriter>,
    thread: Option<StreamThread>,
    abort: Arc<AtomicBool>,
    complete: Arc<AtomicBool>,
}

impl Stream {
    /// The request's outcome (closing the body first).
    fn join(&mut self) -> std::result::Result<(u64, String), String> {
        self.writer.take();
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err("the upload thread panicked".into())),
            None => Err("the upload already ended".into()),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let Some(w) = self.writer.as_mut() else {
            return Err(std::io::Error::other("upload closed"));
        };
        match w.write(buf) {
            Ok(n) => Ok(n),
            // The request ended early (refused, connection lost): report why.
            Err(_) => {
                self.abort.store(true, Ordering::SeqCst);
                let why = match self.join() {
                    Err(e) => e,
                    Ok(_) => "the endpoint answered before the upload was complete".into(),
                };
                Err(std::io::Error::other(why))
            }
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl super::StreamUpload for Stream {
    fn finish(mut self: Box<Self>, digests: &Digests, cancel: &Cancel) -> Result<Stored> {
        let result = self.join();
        let path = self.path.clone();
        let size = match result {
            Ok((size, _)) => size,
            // The whole body went out but the answer was lost (a reset, a
            // proxy timeout while DRP renamed): DRP may well have it.
            Err(e) if self.complete.load(Ordering::SeqCst) => {
                return match self
                    .client
                    .verify(&path, &digests.sha256, digests.size, cancel)
                {
                    Ok(()) => Ok(Stored {
                        name: format!("/{path}"),
                        url: redact(&self.client.url(&path)),
                        size: digests.size,
                        verified:
                            "X-DRP-SHA256SUM = sha256 sent (the upload's own answer was lost)"
                                .into(),
                        sent: true,
                    }),
                    Err(_) => Err(anyhow::anyhow!("{e}").into()),
                };
            }
            Err(e) => return Err(anyhow::anyhow!("{e}").into()),
        };
        if size != digests.size {
            let left = super::left_behind(self.client.delete(&path));
            return Err(anyhow::anyhow!(
                "/{path}: DRP stored {size} bytes of {}{left}",
                digests.size
            )
            .into());
        }
        if let Err(check) = self
            .client
            .verify(&path, &digests.sha256, digests.size, cancel)
        {
            return Err(self.client.failed_check(&path, check));
        }
        Ok(Stored {
            name: format!("/{path}"),
            url: redact(&self.client.url(&path)),
            size,
            verified: "X-DRP-SHA256SUM = sha256 sent".into(),
            sent: true,
        })
    }

    fn abort(mut self: Box<Self>) -> Option<String> {
        self.abort.store(true, Ordering::SeqCst);
        match self.join() {
            // DRP kept it after all (it had the whole body): remove it.
            Ok(_) => self.client.delete(&self.path),
            Err(_) => None,
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.abort.store(true, Ordering::SeqCst);
            let _ = self.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_table() {
        assert!(error_message(401, "", "post", "images/a.tgz", false).contains("set RS_TOKEN"));
        assert_eq!(
            error_message(403, "", "post", "images/a.tgz", false),
            "the token was refused: it is invalid or has expired"
        );
        // A password login is not talked about as a token.
        let m = error_message(403, "", "post", "images/a.tgz", true);
        assert_eq!(m, "the login was refused: wrong user or password (RS_KEY)");
        let auth = r#"{"Type":"AUTH","Code":403,"Messages":["Cannot access /api/v3/files/images/a.tgz","Requires: files post /images/a.tgz"]}"#;
        let m = error_message(403, auth, "post", "images/a.tgz", false);
        assert!(
            m.starts_with(
                "permission denied: the credentials lack the claim `files post /images/a.tgz`"
            ),
            "{m}"
        );
        let busy = r#"{"Model":"files","Key":"/images/a.tgz","Type":"POST","Messages":["File already uploading"],"Code":409}"#;
        assert_eq!(
            error_message(409, busy, "post", "images/a.tgz", false),
            "HTTP 409: POST: files/images/a.tgz: File already uploading"
        );
        assert_eq!(
            error_message(502, "bad gateway", "post", "x", false),
            "HTTP 502: bad gateway"
        );
    }

    #[test]
    fn paths_are_encoded() {
        assert_eq!(
            encode_path("/images/debian-12-rootfs.tgz"),
            "images/debian-12-rootfs.tgz"
        );
        assert_eq!(encode_path("images/a b?.tgz"), "images/a%20b%3F.tgz");
        assert_eq!(
            encode_query("/images/a.tgz,/images/b.txt"),
            "%2Fimages%2Fa.tgz%2C%2Fimages%2Fb.txt"
        );
    }
}
