//! Upload targets as the command line names them: `drp[:URL]`,
//! `s3://BUCKET/PREFIX`, `put:URL,URL` or `put:@FILE`.
//!
//! Part of the upload stage. Parsing is pure apart from reading a
//! `put:@FILE`; a presigned URL or a `user:pass@` endpoint is a credential,
//! so every message about a target shows it redacted.

use super::http::redact;

/// The largest `put:@FILE` read: two presigned URLs are a few KiB.
const URLS_LIMIT: u64 = 64 << 10;

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
                Some(file) => crate::input::read_to_string(std::path::Path::new(file), URLS_LIMIT)
                    .map_err(|e| format!("put:@{file}: {}", crate::util::io_reason(&e)))?,
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
}
