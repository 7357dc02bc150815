//! Presigned PUT: the artifact and the text MANIFEST to two URLs someone
//! else signed (`put:URL,URL` or `put:@FILE`).
//!
//! Part of the upload stage, for finished files only (a presigned PUT needs
//! the size up front). Each file is hashed as it is sent and checked
//! against the MANIFEST, and the ETag against its md5 where the store gives
//! one. A presigned PUT cannot be undone: once the artifact is up, a later
//! failure says where it is. The URLs are credentials: only their redacted
//! form is ever shown.

use super::http::{Attempt, agent, body_text, redact, retry, status_attempt};
use super::{Files, Options, Stored, Uploaded, s3};
use crate::output::digest::HashingReader;
use crate::report::error::{Error, Result};
use crate::report::ui::Ui;
use crate::signals::Cancel;
use std::path::Path;

/// Uploads through two presigned PUT URLs.
pub fn put_files(
    artifact_url: &str,
    manifest_url: &str,
    opts: &Options,
    files: &Files,
    ui: &Ui,
    cancel: &Cancel,
) -> Result<Uploaded> {
    let agent = agent(opts)?;
    let mut objects: Vec<Stored> = Vec::new();
    // A presigned PUT cannot be undone: once the artifact is up, a later
    // failure says where it is.
    let left = |objects: &[Stored], e: Error| -> Error {
        match objects.first() {
            Some(a) => e.append(&format!(
                "; the artifact is already at {} and goldcap cannot delete it (a presigned URL allows only PUT)",
                a.url
            )),
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
            || put_once(&agent, url, path, size, ui),
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
            sent: true,
        });
    }
    Ok(Uploaded {
        target: format!("presigned PUT {}", redact(artifact_url)),
        objects,
        presigned_get: None,
    })
}

/// One PUT of the file at `path` (`size` bytes); the md5 and sha256 of what
/// was sent, checked against the ETag where the store gives an md5.
fn put_once(
    agent: &ureq::Agent,
    url: &str,
    path: &Path,
    size: u64,
    ui: &Ui,
) -> std::result::Result<(String, String), Attempt> {
    let f = std::fs::File::open(path)
        .map_err(|e| Attempt::Fatal(format!("{}: {e}", path.display())))?;
    let mut r = HashingReader::new(f).with_progress(ui);
    let mut resp = agent
        .put(url)
        .header("Content-Length", size.to_string())
        // No Content-Type: URLs signed without one (SigV2 signs it) would
        // not match. A refusal comes before the body.
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
    let d = r.hasher().digests();
    if etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit()) && etag != d.md5 {
        return Err(Attempt::Fatal(format!(
            "the stored ETag {etag} is not the md5 of what was sent ({})",
            d.md5
        )));
    }
    Ok((d.md5, d.sha256))
}
