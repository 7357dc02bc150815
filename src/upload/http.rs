//! HTTP for every upload target: one agent, one retry loop, and redaction
//! of anything that could carry a credential.
//!
//! Part of the upload stage. The agent verifies TLS against the platform's
//! roots (plus `--ca-cert`) unless `--insecure`, never follows a redirect,
//! and leaves statuses to the caller, which classifies each attempt
//! ([`Attempt`]): connection errors, timeouts and 5xx/408/429 are retried
//! with backoff, anything else fails at once with the server's message.
//! Every URL shown passes through [`redact`]; this module must never put a
//! query string, a token or user info into a message.

use super::Options;
use crate::report::error::{Error, Result};
use crate::signals::Cancel;
use std::io::Read;
use std::time::Duration;

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
        let msg = transport_message(&e);
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

/// A ureq error as a message: "connection refused", not "io: Connection
/// refused (os error 111)"; URLs in it without their query string.
pub fn transport_message(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) if io.kind() != std::io::ErrorKind::InvalidData => {
            let r = crate::util::io_reason(io);
            let mut c = r.chars();
            c.next()
                .map(|f| f.to_lowercase().chain(c).collect())
                .unwrap_or(r)
        }
        _ => redact_error(&e.to_string()),
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
                    crate::report::ui::eprint_line(&format!(
                        "goldcap: {what}: {last}; retrying ({n}/{attempts})"
                    ));
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(8));
                }
            }
        }
    }
    let attempts = attempts.max(1);
    let plural = if attempts == 1 { "attempt" } else { "attempts" };
    Err(anyhow::anyhow!("{what}: {last} (gave up after {attempts} {plural})").into())
}

/// The HTTP agent: TLS verified against the platform's roots (plus
/// `--ca-cert`), unless `--insecure`; statuses handled by the caller.
pub fn agent(opts: &Options) -> Result<ureq::Agent> {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let roots = match &opts.ca_cert {
        Some(p) => {
            // A bundle of a few hundred certificates is well under this.
            let pem = crate::input::read(p, 4 << 20).map_err(|e| {
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

#[cfg(test)]
mod tests {
    use super::*;

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
