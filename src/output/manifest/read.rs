//! A MANIFEST read back as input: goldcap's JSON MANIFEST, or the info
//! block of DRP image-builder's text MANIFEST — for `verify`, `upload` and
//! `profile`.
//!
//! Part of the output stage, which knows the format it writes. A MANIFEST
//! may be hostile. It must be a regular file; a JSON MANIFEST lists every
//! archived path, so it is legitimately large: it is parsed as it streams,
//! up to [`JSON_LIMIT`], and only the fields below are kept. Of a text
//! MANIFEST only the first [`TEXT_LIMIT`] is read (the info block is at the
//! top). The names in it are checked ([`Summary::check`]) before anything
//! uses them: a MANIFEST must never make goldcap send or name a file
//! outside its own directory.

use crate::input;
use serde::Deserialize;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// The largest JSON MANIFEST read (about twelve million archived paths).
pub const JSON_LIMIT: u64 = 1 << 30;
/// How much of a text MANIFEST is read: its info block is at the top.
pub const TEXT_LIMIT: u64 = 64 << 10;

/// What goldcap uses of a MANIFEST. Fields a text MANIFEST or a foreign
/// JSON lacks are `None`.
#[derive(Debug, Default, Deserialize)]
pub struct Summary {
    #[serde(default)]
    pub tool: ToolRef,
    pub filename: Option<String>,
    pub upload_tarball: Option<String>,
    pub upload_manifest: Option<String>,
    pub format: Option<String>,
    pub ident: Option<String>,
    pub date: Option<String>,
    pub size: Option<u64>,
    pub md5: Option<String>,
    pub sha256: Option<String>,
    #[serde(default)]
    pub source: SourceRef,
    /// The warnings listed (the first thousand or so).
    #[serde(default)]
    pub warnings: Vec<WarningRef>,
    /// Warnings by kind (absent in older MANIFESTs).
    pub warnings_by_kind: Option<std::collections::BTreeMap<String, u64>>,
    #[serde(default)]
    pub scrub: ScrubRef,
}

#[derive(Debug, Default, Deserialize)]
pub struct WarningRef {
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub kind: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct ScrubRef {
    /// Operations that left identity in the image (absent in older MANIFESTs).
    pub identity_off: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ToolRef {
    pub name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct SourceRef {
    pub os: Option<OsRef>,
    pub os_tag: Option<String>,
    pub kexec: Option<KexecRef>,
}

#[derive(Debug, Default, Deserialize)]
pub struct OsRef {
    pub pretty_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct KexecRef {
    #[serde(default)]
    pub supported: bool,
}

/// Reads a JSON MANIFEST; the error says why it is not one.
pub fn read_json(path: &Path) -> Result<Summary, String> {
    let file = input::open(path).map_err(|e| crate::util::io_reason(&e))?;
    parse_json(input::Limited::new(file, JSON_LIMIT))
}

/// Parses JSON MANIFEST text as it streams.
pub fn parse_json(r: impl Read) -> Result<Summary, String> {
    serde_json::from_reader(BufReader::new(r)).map_err(|e| match e.io_error_kind() {
        Some(std::io::ErrorKind::FileTooLarge) => format!("the MANIFEST is {e}"),
        Some(_) => e.to_string(),
        None => format!(
            "not a goldcap JSON MANIFEST ({})",
            input::clip(&e.to_string(), 200)
        ),
    })
}

/// Reads a MANIFEST of either form: JSON when it starts with `{`, else
/// DRP image-builder's text block (`size`, `md5sum`, `sha256sum`).
pub fn read_any(path: &Path) -> Result<Summary, String> {
    let file = input::open(path).map_err(|e| crate::util::io_reason(&e))?;
    let mut r = BufReader::new(file);
    let starts_json = r
        .fill_buf()
        .map_err(|e| crate::util::io_reason(&e))?
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        == Some(&b'{');
    if starts_json {
        return parse_json(input::Limited::new(r, JSON_LIMIT));
    }
    let mut head = Vec::new();
    r.take(TEXT_LIMIT)
        .read_to_end(&mut head)
        .map_err(|e| crate::util::io_reason(&e))?;
    parse_text(&String::from_utf8_lossy(&head))
        .ok_or_else(|| "not a goldcap or DRP image-builder MANIFEST".to_owned())
}

/// DRP image-builder's info block: its `size`, `md5sum` and `sha256sum`
/// labels (goldcap adds the last).
pub fn parse_text(t: &str) -> Option<Summary> {
    let field = |label: &str| {
        t.lines().find_map(|l| {
            l.trim_start()
                .strip_prefix(label)
                .map(|v| v.trim().to_owned())
        })
    };
    Some(Summary {
        size: Some(field("size:")?.parse().ok()?),
        md5: Some(field("md5sum:")?),
        sha256: field("sha256sum:"),
        ..Summary::default()
    })
}

impl Summary {
    /// Written by goldcap.
    pub fn is_goldcap(&self) -> bool {
        self.tool.name.as_deref() == Some("goldcap")
    }

    /// A field every goldcap MANIFEST has; the error names it.
    pub fn field<'a>(&self, value: &'a Option<String>, name: &str) -> Result<&'a str, String> {
        value
            .as_deref()
            .ok_or_else(|| format!("not a goldcap JSON MANIFEST (no {name:?})"))
    }

    /// Checks what a MANIFEST names before anything uses it: the artifact
    /// and the text MANIFEST are plain file names (they must be in the
    /// MANIFEST's own directory), the upload names relative paths without
    /// `.` or `..`, nothing holds a control character, and the digests are
    /// lowercase hex of their length.
    pub fn check(&self) -> Result<(), String> {
        if let Some(f) = &self.filename {
            plain_name(f).map_err(|why| format!("\"filename\" {f:?}: {why}"))?;
        }
        for (key, value) in [
            ("upload_tarball", &self.upload_tarball),
            ("upload_manifest", &self.upload_manifest),
        ] {
            if let Some(v) = value {
                upload_name(v).map_err(|why| format!("{key:?} {v:?}: {why}"))?;
            }
        }
        for (key, value, len) in [("md5", &self.md5, 32), ("sha256", &self.sha256, 64)] {
            if let Some(v) = value
                && (v.len() != len || !v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            {
                return Err(format!(
                    "{key:?} {:?}: not {len} lowercase hex digits",
                    input::clip(v, 80)
                ));
            }
        }
        for (key, value) in [
            ("ident", &self.ident),
            ("date", &self.date),
            ("format", &self.format),
        ] {
            if let Some(v) = value
                && v.chars().any(char::is_control)
            {
                return Err(format!("{key:?}: holds control characters"));
            }
        }
        Ok(())
    }

    /// Entries not archived, or not in full: (unreadable, attributes)
    /// warnings; `None` when the MANIFEST does not say.
    pub fn incomplete(&self) -> Option<(u64, u64)> {
        let k = self.warnings_by_kind.as_ref()?;
        let n = |kind: &str| k.get(kind).copied().unwrap_or(0);
        Some((n("unreadable"), n("attributes")))
    }

    /// The text MANIFEST's file name: the last component of
    /// `upload_manifest`.
    pub fn text_name(&self) -> Option<&str> {
        self.upload_manifest
            .as_deref()
            .map(|m| m.rsplit('/').next().unwrap_or(m))
    }
}

/// A file name in the MANIFEST's own directory.
fn plain_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name == "." || name == ".." {
        return Err("not a file name");
    }
    if name.contains('/') {
        return Err("not a plain file name (it holds '/')");
    }
    if name.starts_with('.') {
        return Err("starts with '.'");
    }
    if name.chars().any(char::is_control) {
        return Err("holds control characters");
    }
    if name.len() > 255 {
        return Err("longer than 255 bytes");
    }
    Ok(())
}

/// A name on the upload target: relative, no `.` or `..` component, no
/// control character, and a plain file name at its end.
fn upload_name(name: &str) -> Result<(), &'static str> {
    if name.starts_with('/') {
        return Err("not a relative path");
    }
    let parts: Vec<&str> = name.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err("has an empty, '.' or '..' component");
    }
    if name.chars().any(char::is_control) {
        return Err("holds control characters");
    }
    // Unwrap expectation: split yields at least one part.
    plain_name(parts.last().expect("a part"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(json: &str) -> Result<Summary, String> {
        parse_json(json.as_bytes())
    }

    const GOOD: &str = r#"{"tool": {"name": "goldcap", "version": "0.1.0"},
        "filename": "debian-12-rootfs-20261122-101500-cf99cd80eb.tgz",
        "upload_tarball": "images/debian-12-rootfs-20261122-101500-cf99cd80eb.tgz",
        "upload_manifest": "images/debian-12-MANIFEST-20261122-101500-cf99cd80eb.txt",
        "size": 3, "md5": "900150983cd24fb0d6963f7d28e17f72",
        "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "paths": ["./", "./etc/"], "format": "tgz"}"#;

    #[test]
    fn a_goldcap_manifest_reads_and_checks() {
        let s = summary(GOOD).unwrap();
        assert!(s.is_goldcap());
        assert_eq!(s.size, Some(3));
        assert_eq!(
            s.text_name(),
            Some("debian-12-MANIFEST-20261122-101500-cf99cd80eb.txt")
        );
        s.check().unwrap();
    }

    #[test]
    fn names_that_leave_the_directory_are_refused() {
        let rows: &[(&str, &str, &str)] = &[
            ("filename", "/etc/shadow", "'/'"),
            ("filename", "../x.tgz", "'/'"),
            ("filename", "..", "not a file name"),
            ("filename", ".hidden.tgz", "starts with '.'"),
            ("filename", "a\nb.tgz", "control"),
            ("upload_tarball", "/etc/x.tgz", "not a relative path"),
            ("upload_tarball", "images/../../x.tgz", "'..'"),
            ("upload_tarball", "images//x.tgz", "empty"),
            ("upload_manifest", "images/a\u{1b}[31m.txt", "control"),
            ("md5", "../../etc", "hex"),
            ("sha256", "AB", "hex"),
        ];
        for (key, value, why) in rows {
            let mut v: serde_json::Value = serde_json::from_str(GOOD).unwrap();
            v[*key] = serde_json::Value::String((*value).into());
            let e = summary(&v.to_string()).unwrap().check().unwrap_err();
            assert!(e.contains(why) && e.contains(key), "{key}={value:?}: {e}");
        }
    }

    #[test]
    fn hostile_json_fails_cleanly() {
        for bad in [
            "",
            "[]",
            "{\"size\": \"x\"}",
            "{{{{",
            "\"str\"",
            &"[".repeat(10_000),
        ] {
            let e = summary(bad).unwrap_err();
            assert!(
                e.starts_with("not a goldcap JSON MANIFEST ("),
                "{bad:?}: {e}"
            );
            assert!(e.len() < 400, "{e}");
        }
        // Past the limit: an error, not memory.
        let reader = input::Limited::new(std::io::repeat(b' '), 1 << 10);
        assert_eq!(
            parse_json(reader).unwrap_err(),
            "the MANIFEST is larger than 1 KiB"
        );
    }

    #[test]
    fn text_manifest_block_parses() {
        let t = "Image Builder created image information: \n----\n        filename:  x.tgz\n            size:  517036600\n          md5sum:  1f40ac1bac2eb3ea99cebc38b807c15f\n       sha256sum:  ab\n";
        let s = parse_text(t).unwrap();
        assert_eq!(
            (s.size, s.md5.as_deref(), s.sha256.as_deref()),
            (
                Some(517_036_600),
                Some("1f40ac1bac2eb3ea99cebc38b807c15f"),
                Some("ab")
            )
        );
        // DRP's own manifest has no sha256.
        assert!(
            parse_text("size:  1\nmd5sum:  x\n")
                .unwrap()
                .sha256
                .is_none()
        );
        assert!(parse_text("nothing here\n").is_none());
    }
}

/// A seeded property test: random and mutated MANIFEST text never makes the
/// parser panic, and what it accepts is checked without panicking either.
/// The inputs are small, so neither can take long or allocate much.
#[cfg(test)]
pub(crate) mod fuzz {
    use super::*;
    use crate::testkit::{JSON_PIECES, Rng, mutate};

    pub const SEED_MANIFEST: &str = r#"{"manifest_version": 1, "tool": {"name": "goldcap", "version": "0.1.0"},
        "filename": "debian-12-rootfs-20261122-101500-cf99cd80eb.tgz", "ident": "cf99cd80eb",
        "date": "2026-11-22T10:15:00Z", "format": "tgz",
        "upload_tarball": "images/debian-12-rootfs-20261122-101500-cf99cd80eb.tgz",
        "upload_manifest": "images/debian-12-MANIFEST-20261122-101500-cf99cd80eb.txt",
        "size": 4226292, "md5": "86de97fd26fad0194b1f003913f587fc",
        "sha256": "de2866c5c52b005924da52817b32e0ffc604963e616db61ca2a90ab900156be7",
        "source": {"os": {"pretty_name": "Debian"}, "os_tag": "debian-12", "kexec": {"supported": true}},
        "paths": ["./", "./etc/", "./etc/fstab"]}"#;

    #[test]
    fn random_and_mutated_manifests_never_panic() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut accepted = 0;
        for round in 0..4000 {
            let input = if round % 10 == 0 {
                (0..rng.below(300)).map(|_| rng.next() as u8).collect()
            } else {
                mutate(&mut rng, SEED_MANIFEST.as_bytes(), JSON_PIECES)
            };
            if let Ok(m) = parse_json(&input[..]) {
                accepted += 1;
                let _ = m.check();
                let _ = m.text_name();
            }
            let _ = parse_text(&String::from_utf8_lossy(&input));
        }
        // The mutations must not all be rejected outright: then only the
        // JSON parser would be under test.
        assert!(accepted > 100, "{accepted} accepted");
    }
}
