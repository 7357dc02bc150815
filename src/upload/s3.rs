//! S3 and S3-compatible stores (MinIO, Ceph RGW): multipart uploads signed
//! with SigV4 by `rusty-s3` (sans-IO: it signs, `ureq` sends).
//!
//! Credentials, region and endpoint are found as the AWS tools find them
//! (`super::aws`: the environment, `~/.aws/credentials` and `config` with
//! `AWS_PROFILE`, the instance metadata service). A custom endpoint uses
//! path-style addressing (MinIO, Ceph), AWS itself virtual-host style.
//!
//! The artifact goes up in parts from a bounded buffer: while one part is
//! being sent by a background thread the next fills, so memory stays at a
//! few parts whatever the size. Each part is retried on its own and its ETag
//! checked against the md5 of what was sent; the completed object's ETag
//! (md5 of the part md5s, `-N`) and size are checked at the end. Anything
//! that fails aborts the multipart upload, so no orphaned parts remain and
//! nothing appears under the final key. MANIFESTs are single PUTs.

use super::http::{Attempt, agent, body_text, redact, retry, status_attempt};
use super::{Existing, Files, Options, Stored, Uploaded, sha256_of};
use crate::output::digest::{Digests, HashingReader, hex, md5};
use crate::report::error::{Error, Result};
use crate::signals::Cancel;
use anyhow::Context as _;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

/// Smallest part S3 accepts (but the last).
pub const MIN_PART: u64 = 5 << 20;
/// Default part size.
pub const DEFAULT_PART: u64 = 8 << 20;
/// S3's limit on parts.
pub const MAX_PARTS: u64 = 10_000;
const SIGN_FOR: Duration = Duration::from_secs(3600);

/// `<Code>` and `<Message>` of an S3 XML error, as a sentence.
pub fn error_message(body: &str) -> String {
    let tag = |t: &str| {
        let open = format!("<{t}>");
        let start = body.find(&open)? + open.len();
        let end = body[start..].find(&format!("</{t}>"))? + start;
        Some(body[start..end].to_owned())
    };
    match (tag("Code"), tag("Message")) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c,
        _ if body.is_empty() => "no details".into(),
        _ => body.chars().take(300).collect(),
    }
}

/// Part size: `--part-size` (at least S3's 5 MiB) or 8 MiB, and in any
/// case large enough that the expected size stays under 10,000 parts (with
/// room), in whole MiB. A 10,001st part cannot be sent, so a part size too
/// small for the image is raised rather than failing half-way.
pub fn part_size(given: Option<u64>, estimate: Option<u64>) -> u64 {
    let need = estimate.map_or(0, |e| e.div_ceil(9_000));
    let want = given.map_or(DEFAULT_PART, |p| p.max(MIN_PART));
    want.max(need).div_ceil(1 << 20) << 20
}

/// A bucket with credentials.
#[derive(Clone)]
pub struct Client {
    bucket: Bucket,
    /// The endpoint, for messages.
    at: String,
    creds: Credentials,
    prefix: String,
    agent: ureq::Agent,
    attempts: u32,
    presign_get: Option<Duration>,
    part_size: Option<u64>,
    /// Replace objects already under our keys.
    force: bool,
}

/// User metadata holding the sha256 goldcap uploaded: S3's own checksum of
/// a multipart object (its ETag) depends on the part size, so this is what
/// tells a later upload that the bucket already holds the same bytes.
const SHA256_META: &str = "x-amz-meta-goldcap-sha256";

/// What the bucket holds under a key.
enum Held {
    Nothing,
    /// An object, with the sha256 goldcap recorded on it ("" when none).
    Object(String),
    /// The credentials may not read it (HEAD refused).
    Unknown,
}

impl Client {
    /// A client for `bucket`, keys under `prefix`.
    pub fn new(bucket: &str, prefix: &str, opts: &Options) -> Result<Client> {
        let aws = super::aws::from_environment()?;
        let creds = match aws.token {
            Some(t) => Credentials::new_with_token(aws.key, aws.secret, t),
            None => Credentials::new(aws.key, aws.secret),
        };
        let region = aws.region;
        let (endpoint, style) = match aws.endpoint {
            Some(e) => (e, UrlStyle::Path),
            None => (
                format!("https://s3.{region}.amazonaws.com"),
                UrlStyle::VirtualHost,
            ),
        };
        let url = endpoint
            .parse()
            .map_err(|e| Error::usage(format!("AWS_ENDPOINT_URL {endpoint:?}: {e}")))?;
        let bucket = Bucket::new(url, style, bucket.to_owned(), region)
            .map_err(|e| Error::usage(format!("s3://{bucket}: {e}")))?;
        Ok(Client {
            at: super::http::redact(&endpoint),
            bucket,
            creds,
            prefix: prefix.to_owned(),
            agent: agent(opts)?,
            attempts: opts.attempts,
            presign_get: opts.presign_get,
            part_size: opts.part_size,
            force: opts.force,
        })
    }

    fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    fn object_url(&self, key: &str) -> String {
        redact(self.bucket.object_url(key).as_str())
    }

    /// Single PUT of a small file, ETag checked, its sha256 recorded.
    fn put_file(
        &self,
        path: &std::path::Path,
        sha256: &str,
        ui: &crate::report::ui::Ui,
        cancel: &Cancel,
    ) -> Result<Stored> {
        let name = Files::name(path);
        let key = self.key(&name);
        let size = std::fs::metadata(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .len();
        let verified = retry(
            &format!("PUT s3://{}/{key} on {}", self.bucket.name(), self.at),
            self.attempts,
            cancel,
            || {
                let mut put = self.bucket.put_object(Some(&self.creds), &key);
                put.headers_mut().insert(SHA256_META, sha256);
                let url = put.sign(SIGN_FOR);
                let f = std::fs::File::open(path)
                    .map_err(|e| Attempt::Fatal(format!("{}: {e}", path.display())))?;
                let mut r = HashingReader::new(f).with_progress(ui);
                let mut resp = self
                    .agent
                    .put(url.as_str())
                    .header(SHA256_META, sha256)
                    .header("Content-Length", size.to_string())
                    // A refusal (signature, permission) then comes before
                    // the body, with S3's reason, not as a broken pipe.
                    .header("Expect", "100-continue")
                    .send(ureq::SendBody::from_reader(&mut r))?;
                answer(&mut resp, false)?;
                etag_check(&resp, &r.hasher().digests().md5)
            },
        )?;
        Ok(Stored {
            name: key.clone(),
            url: self.object_url(&key),
            size,
            verified: verified.into(),
            sent: true,
        })
    }

    /// Uploads artifact (multipart), then text and JSON MANIFESTs. An
    /// object goldcap uploaded with the same sha256 is not sent again; any
    /// other object under these keys is replaced only with `--force`.
    pub fn upload_files(
        &self,
        files: &Files,
        ui: &crate::report::ui::Ui,
        cancel: &Cancel,
    ) -> Result<Uploaded> {
        let name = Files::name(&files.artifact);
        let manifests = [&files.manifest, &files.manifest_json];
        let [man_sha, json_sha] = [sha256_of(manifests[0])?, sha256_of(manifests[1])?];
        let [art, man, json] = self.preflight(
            [
                (&name, Some(files.sha256.as_str())),
                (&Files::name(manifests[0]), Some(man_sha.as_str())),
                (&Files::name(manifests[1]), Some(json_sha.as_str())),
            ],
            cancel,
        )?;
        let artifact = match art {
            Existing::Keep => self.kept(&name, files.size),
            _ => self.send_artifact(files, &name, ui, cancel)?,
        };
        let mut objects = vec![artifact];
        for (path, sha256, ex) in [
            (manifests[0], &man_sha, man),
            (manifests[1], &json_sha, json),
        ] {
            let stored = match ex {
                Existing::Keep => Ok(self.kept(
                    &Files::name(path),
                    std::fs::metadata(path).map_or(0, |m| m.len()),
                )),
                _ => self.put_file(path, sha256, ui, cancel),
            };
            match stored {
                Ok(s) => objects.push(s),
                // An artifact that was there before is not ours to remove.
                Err(e) if !objects[0].sent => return Err(e),
                Err(e) => {
                    let left = super::left_behind(self.delete(&name));
                    return Err(e.append(&left));
                }
            }
        }
        Ok(Uploaded {
            target: format!("s3://{}/{}", self.bucket.name(), self.prefix),
            objects,
            presigned_get: self.presigned_get(&name),
        })
    }

    /// The artifact as a multipart upload, checked against its MANIFEST
    /// before the upload is completed.
    fn send_artifact(
        &self,
        files: &Files,
        name: &str,
        ui: &crate::report::ui::Ui,
        cancel: &Cancel,
    ) -> Result<Stored> {
        let mut up = self
            .clone()
            .multipart(name, Some(files.size), Some(&files.sha256), cancel)?;
        let file = std::fs::File::open(&files.artifact)
            .with_context(|| format!("cannot read {}", files.artifact.display()))?;
        let mut r = HashingReader::new(file).with_progress(ui);
        let copied = std::io::copy(&mut r, &mut up);
        let digests = r.hasher().digests();
        if let Err(e) = copied {
            let left = super::left_behind(super::StreamUpload::abort(Box::new(up)));
            return Err(
                anyhow::anyhow!("uploading {}: {e}{left}", files.artifact.display()).into(),
            );
        }
        if digests.md5 != files.md5 || digests.sha256 != files.sha256 || digests.size != files.size
        {
            let left = super::left_behind(super::StreamUpload::abort(Box::new(up)));
            return Err(anyhow::anyhow!(
                "{} does not match its MANIFEST (sha256 {}, MANIFEST {}): it changed since the capture{left}",
                files.artifact.display(),
                digests.sha256,
                files.sha256
            )
            .into());
        }
        super::StreamUpload::finish(Box::new(up), &digests, cancel)
    }

    /// A key the bucket already holds with the sha256 goldcap would send.
    fn kept(&self, name: &str, size: u64) -> Stored {
        let key = self.key(name);
        Stored {
            url: self.object_url(&key),
            name: key,
            size,
            verified: format!(
                "already there: {SHA256_META} = the MANIFEST's sha256 (not sent again)"
            ),
            sent: false,
        }
    }

    /// What the bucket holds under `name`.
    fn held(&self, name: &str, cancel: &Cancel) -> Result<Held> {
        let key = self.key(name);
        retry(
            &format!("HEAD s3://{}/{key} on {}", self.bucket.name(), self.at),
            self.attempts,
            cancel,
            || {
                let url = self
                    .bucket
                    .head_object(Some(&self.creds), &key)
                    .sign(SIGN_FOR);
                let mut resp = self.agent.head(url.as_str()).call()?;
                match resp.status().as_u16() {
                    404 => return Ok(Held::Nothing),
                    // Without s3:ListBucket S3 answers 403 for a missing key.
                    403 => return Ok(Held::Unknown),
                    _ => {}
                }
                answer(&mut resp, false)?;
                let sha = resp
                    .headers()
                    .get(SHA256_META)
                    .and_then(|v| v.to_str().ok())
                    .map(|s| s.trim().to_ascii_lowercase())
                    .unwrap_or_default();
                Ok(Held::Object(sha))
            },
        )
    }

    /// Before any data moves: what to do about each key, given the sha256
    /// goldcap would send (`None` for a stream). Refuses, naming each, what
    /// `--force` would be needed for. A key the credentials may not read
    /// is sent, with a warning.
    fn preflight<const N: usize>(
        &self,
        names: [(&str, Option<&str>); N],
        cancel: &Cancel,
    ) -> Result<[Existing; N]> {
        let no_sum = "an object goldcap did not record a sha256 for";
        super::preflight(names, self.force, no_sum, |name| {
            let shown = format!("s3://{}/{}", self.bucket.name(), self.key(name));
            let remote = match self.held(name, cancel)? {
                Held::Nothing => None,
                Held::Object(sha) => Some(sha),
                Held::Unknown => {
                    crate::report::ui::eprint_line(&format!(
                        "goldcap: warning: cannot tell whether {shown} exists (HEAD refused: the credentials cannot read it); an object there is replaced"
                    ));
                    None
                }
            };
            Ok((shown, remote))
        })
    }

    /// A GET URL for `key` (a whole key, no prefix), signed for `ttl`:
    /// how `goldcap apply s3://…` reads an object.
    pub fn signed_get(&self, key: &str, ttl: Duration) -> String {
        self.bucket
            .get_object(Some(&self.creds), key)
            .sign(ttl)
            .to_string()
    }

    /// A presigned GET URL for `name`, when `--presign-get` asked for one.
    pub fn presigned_get(&self, name: &str) -> Option<String> {
        self.presign_get.map(|d| {
            self.bucket
                .get_object(Some(&self.creds), &self.key(name))
                .sign(d)
                .to_string()
        })
    }

    /// The text and JSON MANIFESTs.
    pub fn upload_manifests(
        &self,
        files: &Files,
        ui: &crate::report::ui::Ui,
        cancel: &Cancel,
    ) -> Result<Vec<Stored>> {
        let mut out = Vec::new();
        for path in [&files.manifest, &files.manifest_json] {
            out.push(self.put_file(path, &sha256_of(path)?, ui, cancel)?);
        }
        Ok(out)
    }

    /// Deletes an object; `None` when gone, else what is left.
    pub fn delete(&self, name: &str) -> Option<String> {
        let key = self.key(name);
        // A clean-up runs to its end even after a signal (a second signal
        // still ends goldcap at once).
        retry(
            &format!("DELETE s3://{}/{key} on {}", self.bucket.name(), self.at),
            self.attempts,
            &Cancel::never(),
            || {
                let url = self
                    .bucket
                    .delete_object(Some(&self.creds), &key)
                    .sign(SIGN_FOR);
                let mut resp = self.agent.delete(url.as_str()).call()?;
                answer(&mut resp, true).map(drop)
            },
        )
        .err()
        .map(|e| {
            format!(
                "s3://{}/{key} is left in the bucket ({e})",
                self.bucket.name()
            )
        })
    }

    /// Starts a capture's streamed upload: refused before a byte is read
    /// when the bucket holds anything under the artifact's or the
    /// MANIFESTs' keys (without `--force`).
    pub fn start_stream(
        self,
        names: [&str; 3],
        estimate: Option<u64>,
        cancel: &Cancel,
    ) -> Result<Multipart> {
        self.preflight(names.map(|n| (n, None)), cancel)?;
        self.multipart(names[0], estimate, None, cancel)
    }

    /// Starts a multipart upload of `name`, recording `sha256` when known.
    fn multipart(
        self,
        name: &str,
        estimate: Option<u64>,
        sha256: Option<&str>,
        cancel: &Cancel,
    ) -> Result<Multipart> {
        let key = self.key(name);
        let id = retry(
            &format!(
                "create upload s3://{}/{key} on {}",
                self.bucket.name(),
                self.at
            ),
            self.attempts,
            cancel,
            || {
                let mut create = self.bucket.create_multipart_upload(Some(&self.creds), &key);
                if let Some(sha) = sha256 {
                    create.headers_mut().insert(SHA256_META, sha);
                }
                let mut req = self.agent.post(create.sign(SIGN_FOR).as_str());
                if let Some(sha) = sha256 {
                    req = req.header(SHA256_META, sha);
                }
                let mut resp = req.send_empty()?;
                let body = answer(&mut resp, false)?;
                rusty_s3::actions::CreateMultipartUpload::parse_response(&body)
                    .map(|r| r.upload_id().to_owned())
                    .map_err(|e| Attempt::Fatal(format!("unexpected answer: {e}")))
            },
        )?;
        let part = part_size(self.part_size, estimate) as usize;
        // One part in flight while the next fills: memory is about 3 parts.
        let (tx, rx) = mpsc::sync_channel::<(u16, Vec<u8>)>(1);
        let worker = self.clone();
        let aborting = Arc::new(AtomicBool::new(false));
        let (wkey, wid, wcancel, waborting) =
            (key.clone(), id.clone(), *cancel, Arc::clone(&aborting));
        let thread = std::thread::spawn(move || -> std::result::Result<Parts, String> {
            let mut done = Parts::default();
            for (n, data) in rx {
                let md5 = md5(&data);
                let how = worker
                    .upload_part(&wkey, &wid, n, &data, &md5, &waborting, &wcancel)
                    .map_err(|e| e.to_string())?;
                done.md5_etags &= how == "ETag = md5 sent";
                done.list.push((n, md5));
            }
            Ok(done)
        });
        Ok(Multipart {
            client: self,
            key,
            id,
            part,
            buf: Vec::with_capacity(part),
            next: 1,
            tx: Some(tx),
            thread: Some(thread),
            aborting,
            size: 0,
        })
    }

    /// Sends one part with its `Content-MD5` (S3 refuses a part damaged on
    /// the way with `BadDigest`, and it is sent again); returns how the
    /// store confirmed it.
    #[allow(clippy::too_many_arguments)]
    fn upload_part(
        &self,
        key: &str,
        id: &str,
        n: u16,
        data: &[u8],
        md5: &[u8; 16],
        aborting: &AtomicBool,
        cancel: &Cancel,
    ) -> Result<&'static str> {
        use base64::Engine;
        let md5_hex = hex(md5);
        let content_md5 = base64::engine::general_purpose::STANDARD.encode(md5);
        retry(
            &format!(
                "part {n} of s3://{}/{key} on {}",
                self.bucket.name(),
                self.at
            ),
            self.attempts,
            cancel,
            || {
                if aborting.load(Ordering::SeqCst) {
                    return Err(Attempt::Fatal("the upload is being aborted".into()));
                }
                let url = self
                    .bucket
                    .upload_part(Some(&self.creds), key, n, id)
                    .sign(SIGN_FOR);
                let mut resp = self
                    .agent
                    .put(url.as_str())
                    .header("Content-MD5", &content_md5)
                    .header("Expect", "100-continue")
                    .send(data)?;
                answer(&mut resp, false)?;
                etag_check(&resp, &md5_hex)
            },
        )
    }

    fn abort_upload(&self, key: &str, id: &str) -> Option<String> {
        let never = Cancel::never();
        retry(&format!("abort upload s3://{}/{key} on {}", self.bucket.name(), self.at), self.attempts, &never, || {
            let url = self.bucket.abort_multipart_upload(Some(&self.creds), key, id).sign(SIGN_FOR);
            let mut resp = self.agent.delete(url.as_str()).call()?;
            answer(&mut resp, true).map(drop)
        })
        .err()
        .map(|e| format!("multipart upload {id} of s3://{}/{key} could not be aborted ({e}); its parts are billed until it is", self.bucket.name()))
    }
}

/// The body of a 2xx answer (or of a 404 when `gone_ok`: deleting what
/// is not there), else S3's error, to retry (5xx, and the 400s that mean
/// the transfer went wrong: `RequestTimeout`, `BadDigest`) or give up on
/// (other 4xx).
fn answer(
    resp: &mut ureq::http::Response<ureq::Body>,
    gone_ok: bool,
) -> std::result::Result<String, Attempt> {
    let status = resp.status().as_u16();
    let body = body_text(resp);
    if (200..300).contains(&status) || (gone_ok && status == 404) {
        return Ok(body);
    }
    let msg = format!("HTTP {status}: {}", error_message(&body));
    if status == 400 && (msg.contains("RequestTimeout") || msg.contains("BadDigest")) {
        return Err(Attempt::Retry(msg));
    }
    Err(status_attempt(status, msg))
}

/// Checks a stored object's or part's ETag against the md5 of what was
/// sent. Under SSE-KMS or SSE-C, and on stores whose ETags are not md5s,
/// the ETag says nothing about the content: accepted, and said so.
fn etag_check(
    resp: &ureq::http::Response<ureq::Body>,
    md5_hex: &str,
) -> std::result::Result<&'static str, Attempt> {
    let h = |k: &str| {
        resp.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase()
    };
    let etag = etag_of(resp);
    if h("x-amz-server-side-encryption").starts_with("aws:kms")
        || !h("x-amz-server-side-encryption-customer-algorithm").is_empty()
    {
        return Ok("accepted (SSE-KMS/SSE-C: the ETag is not an md5)");
    }
    if etag.len() != 32 || !etag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok("accepted (the store's ETag is not an md5)");
    }
    if etag != md5_hex {
        return Err(Attempt::Fatal(format!(
            "the stored ETag {etag} is not the md5 of what was sent ({md5_hex})"
        )));
    }
    Ok("ETag = md5 sent")
}

fn etag_of(resp: &ureq::http::Response<ureq::Body>) -> String {
    resp.headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim_matches('"')
        .to_ascii_lowercase()
}

/// Parts sent: number and md5; whether every part's ETag was its md5 (so
/// the object's ETag can be checked too).
struct Parts {
    list: Vec<(u16, [u8; 16])>,
    md5_etags: bool,
}

impl Default for Parts {
    fn default() -> Self {
        Parts {
            list: Vec::new(),
            md5_etags: true,
        }
    }
}

type PartThread = std::thread::JoinHandle<std::result::Result<Parts, String>>;

/// A multipart upload in progress.
pub struct Multipart {
    client: Client,
    key: String,
    id: String,
    part: usize,
    buf: Vec<u8>,
    next: u16,
    tx: Option<mpsc::SyncSender<(u16, Vec<u8>)>>,
    thread: Option<PartThread>,
    /// Tells the part thread to stop sending (queued parts, retries).
    aborting: Arc<AtomicBool>,
    size: u64,
}

impl Multipart {
    fn send_part(&mut self) -> std::io::Result<()> {
        if self.next as u64 > MAX_PARTS {
            return Err(std::io::Error::other(
                "more than 10,000 parts: use a larger --part-size",
            ));
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(self.part));
        let sent = self.tx.as_ref().map(|tx| tx.send((self.next, data)));
        if !matches!(sent, Some(Ok(()))) {
            // The uploader stopped: say why.
            let why = self
                .join()
                .err()
                .unwrap_or_else(|| "the part uploader stopped".into());
            return Err(std::io::Error::other(why));
        }
        self.next += 1;
        Ok(())
    }

    fn join(&mut self) -> std::result::Result<Parts, String> {
        self.tx.take();
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err("the part uploader panicked".into())),
            None => Err("the upload already ended".into()),
        }
    }
}

impl Write for Multipart {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = self.part - self.buf.len();
        let n = room.min(buf.len());
        self.buf.extend_from_slice(&buf[..n]);
        self.size += n as u64;
        if self.buf.len() == self.part {
            self.send_part()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Multipart {
    /// Sends the last part, completes the upload and checks the stored
    /// object against what was sent.
    fn complete_and_check(&mut self, digests: &Digests, cancel: &Cancel) -> Result<Stored> {
        if !self.buf.is_empty() || self.next == 1 {
            // Its error names the part and the object (or the limit hit).
            self.send_part().map_err(anyhow::Error::new)?;
        }
        let Parts {
            list: mut parts,
            md5_etags,
        } = self.join().map_err(|e| anyhow::anyhow!("{e}"))?;
        parts.sort_by_key(|p| p.0);
        let all: Vec<u8> = parts.iter().flat_map(|(_, m)| *m).collect();
        let expected = format!("{}-{}", hex(&md5(&all)), parts.len());
        let completed = self.complete(&parts, md5_etags, &expected, cancel)?;
        // Completed: there is no upload left to abort, only an object.
        self.id.clear();
        let note = self.check_object(completed, md5_etags, &expected, digests, cancel)?;
        let c = &self.client;
        Ok(Stored {
            name: self.key.clone(),
            url: c.object_url(&self.key),
            size: note.0,
            verified: if md5_etags {
                format!(
                    "{} part ETags = md5 sent; object ETag {expected}; {}",
                    parts.len(),
                    note.1
                )
            } else {
                format!(
                    "{} parts with Content-MD5 (the store's ETags are not md5s); {}",
                    parts.len(),
                    note.1
                )
            },
            sent: true,
        })
    }

    /// Completes the multipart upload; `false` when the answer to an
    /// earlier attempt was lost and the upload is gone (it may have
    /// worked: the object is checked instead).
    fn complete(
        &self,
        parts: &[(u16, [u8; 16])],
        md5_etags: bool,
        expected: &str,
        cancel: &Cancel,
    ) -> Result<bool> {
        let c = &self.client;
        let etags: Vec<String> = parts
            .iter()
            .map(|(_, m)| format!("\"{}\"", hex(m)))
            .collect();
        let mut tried = false;
        retry(
            &format!("complete s3://{}/{} on {}", c.bucket.name(), self.key, c.at),
            c.attempts,
            cancel,
            || {
                let first = !std::mem::replace(&mut tried, true);
                let action = c.bucket.complete_multipart_upload(
                    Some(&c.creds),
                    &self.key,
                    &self.id,
                    etags.iter().map(String::as_str),
                );
                let url = action.sign(SIGN_FOR);
                let mut resp = c.agent.post(url.as_str()).send(action.body())?;
                let status = resp.status().as_u16();
                let body = body_text(&mut resp);
                if status == 404 && !first && body.contains("NoSuchUpload") {
                    return Ok(false);
                }
                if !(200..300).contains(&status) || body.contains("<Error>") {
                    return Err(status_attempt(
                        if status < 300 { 500 } else { status },
                        format!("HTTP {status}: {}", error_message(&body)),
                    ));
                }
                let etag = rusty_s3::actions::CompleteMultipartUploadResponse::parse(&body)
                    .map(|r| r.etag().trim_matches('"').to_ascii_lowercase())
                    .unwrap_or_default();
                if md5_etags && !etag.is_empty() && etag != expected {
                    return Err(Attempt::Fatal(format!(
                        "object ETag {etag}, expected {expected} from the parts sent"
                    )));
                }
                Ok(true)
            },
        )
    }

    /// The stored object: its size, and its ETag when the complete's answer
    /// was lost. A HEAD that is refused (a token without GetObject) or
    /// fails leaves the complete's own check. Returns the stored size and
    /// how it was checked; a mismatch deletes the object.
    fn check_object(
        &self,
        completed: bool,
        md5_etags: bool,
        expected: &str,
        digests: &Digests,
        cancel: &Cancel,
    ) -> Result<(u64, &'static str)> {
        let c = &self.client;
        let name = self.key.rsplit('/').next().unwrap_or(&self.key).to_owned();
        let head = retry(
            &format!("HEAD s3://{}/{} on {}", c.bucket.name(), self.key, c.at),
            c.attempts,
            cancel,
            || {
                let url = c
                    .bucket
                    .head_object(Some(&c.creds), &self.key)
                    .sign(SIGN_FOR);
                let mut resp = c.agent.head(url.as_str()).call()?;
                if resp.status().as_u16() == 403 {
                    return Ok(None);
                }
                answer(&mut resp, false)?;
                let size = resp
                    .headers()
                    .get("content-length")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                Ok(Some((size, etag_of(&resp))))
            },
        );
        let (stored, note) = match head {
            Ok(Some((size, etag))) => {
                if !completed && md5_etags && etag != expected {
                    let left = super::left_behind(c.delete(&name));
                    return Err(anyhow::anyhow!(
                        "s3://{}/{}: the object's ETag is {etag}, expected {expected}{left}",
                        c.bucket.name(),
                        self.key
                    )
                    .into());
                }
                (size, "size")
            }
            _ if !completed => {
                return Err(anyhow::anyhow!(
                    "s3://{}/{}: the answer to the complete request was lost and the object cannot be read back; it may be left in the bucket",
                    c.bucket.name(),
                    self.key
                )
                .into());
            }
            Ok(None) => (digests.size, "size not read back (HEAD refused)"),
            Err(_) => (digests.size, "size not read back (HEAD failed)"),
        };
        if stored != digests.size || self.size != digests.size {
            let left = super::left_behind(c.delete(&name));
            return Err(anyhow::anyhow!(
                "s3://{}/{}: stored {stored} bytes of {}{left}",
                c.bucket.name(),
                self.key,
                digests.size
            )
            .into());
        }
        Ok((stored, note))
    }
}

impl super::StreamUpload for Multipart {
    fn finish(mut self: Box<Self>, digests: &Digests, cancel: &Cancel) -> Result<Stored> {
        let result = self.complete_and_check(digests, cancel);
        let id = std::mem::take(&mut self.id);
        match result {
            Err(e) if !id.is_empty() => match self.client.abort_upload(&self.key, &id) {
                Some(left) => Err(e.append(&format!("; {left}"))),
                None => Err(e),
            },
            r => r,
        }
    }

    fn abort(mut self: Box<Self>) -> Option<String> {
        self.aborting.store(true, Ordering::SeqCst);
        let _ = self.join();
        let id = std::mem::take(&mut self.id);
        self.client.abort_upload(&self.key, &id)
    }
}

impl Drop for Multipart {
    fn drop(&mut self) {
        if !self.id.is_empty() {
            self.aborting.store(true, Ordering::SeqCst);
            let _ = self.join();
            let id = std::mem::take(&mut self.id);
            let _ = self.client.abort_upload(&self.key, &id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes() {
        assert_eq!(part_size(None, None), 8 << 20);
        assert_eq!(part_size(None, Some(1 << 30)), 8 << 20);
        // 200 GiB: parts grow so that fewer than 10,000 are needed.
        let p = part_size(None, Some(200 << 30));
        assert!((200u64 << 30).div_ceil(p) < 10_000, "{p}");
        assert_eq!(p % (1 << 20), 0);
        // --part-size, but never below S3's minimum.
        assert_eq!(part_size(Some(1 << 20), None), MIN_PART);
        assert_eq!(part_size(Some(64 << 20), Some(1 << 30)), 64 << 20);
        // Too small for the image: raised to fit.
        let p = part_size(Some(5 << 20), Some(100 << 30));
        assert!((100u64 << 30).div_ceil(p) < 10_000, "{p}");
    }

    #[test]
    fn errors_table() {
        assert_eq!(
            error_message(
                "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match</Message></Error>"
            ),
            "SignatureDoesNotMatch: The request signature we calculated does not match"
        );
        assert_eq!(error_message(""), "no details");
    }
}
