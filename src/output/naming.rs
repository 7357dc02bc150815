//! Artifact names: templates, idents and date stamps, as DRP image-builder
//! spells them.
//!
//! Sits before the pipeline: [`crate::cli::config`] resolves every name once,
//! so the capture, the MANIFEST and a later upload all use the same strings.
//! Defaults follow `image-builder/upload-*` exactly — rootfs
//! `{os}-rootfs-{date}-{ident}`, manifest `{os}-MANIFEST-{date}-{ident}`,
//! upload path `images` — and templates accept DRP's shell spelling (`$TAG`,
//! `$DSTAMP`, `$RS_IMAGE_IDENT`, also `${…}`) so existing params paste in
//! unchanged. Pure code: no I/O except the random ident.
//!
//! Never produce a name with `/`, NUL, a leading `.`, or `.`/`..`: the
//! result is used as a file name in the output directory.

use chrono::{DateTime, Utc};
use std::fmt;

/// Default rootfs name template (DRP `image-builder/upload-rootfs-name`).
pub const DEFAULT_ROOTFS_TEMPLATE: &str = "{os}-rootfs-{date}-{ident}";
/// Default manifest name template (DRP `image-builder/upload-manifest-name`).
pub const DEFAULT_MANIFEST_TEMPLATE: &str = "{os}-MANIFEST-{date}-{ident}";
/// Default upload path (DRP `image-builder/upload-path`).
pub const DEFAULT_UPLOAD_PATH: &str = "images";

/// Values a template can refer to.
#[derive(Debug, Clone)]
pub struct Vars<'a> {
    /// `{os}` / `$TAG`: e.g. `debian-12`; `None` when unknown.
    pub os: Option<&'a str>,
    /// `{date}` / `$DSTAMP`: `YYYYMMDD-HHMMSS`.
    pub date: &'a str,
    /// `{ident}` / `$RS_IMAGE_IDENT`: 10 lowercase hex characters.
    pub ident: &'a str,
}

/// A template that cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const KNOWN: &str = "{os} {date} {ident} $TAG $DSTAMP $RS_IMAGE_IDENT";

fn lookup(name: &str, vars: &Vars<'_>, template: &str) -> Result<String, TemplateError> {
    match name {
        "os" | "TAG" => vars.os.map(str::to_owned).ok_or_else(|| {
            TemplateError(format!(
                "template {template:?} uses the OS name, but it is unknown: the root has no \
                 readable os-release; pass --os NAME"
            ))
        }),
        "date" | "DSTAMP" => Ok(vars.date.to_owned()),
        "ident" | "RS_IMAGE_IDENT" => Ok(vars.ident.to_owned()),
        _ => Err(TemplateError(format!(
            "template {template:?}: unknown placeholder {name:?} (known: {KNOWN})"
        ))),
    }
}

/// Expands `{os}`, `{date}`, `{ident}` and DRP's `$TAG`, `$DSTAMP`,
/// `$RS_IMAGE_IDENT` (bare or braced) in `template`.
pub fn expand(template: &str, vars: &Vars<'_>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(pos) = rest.find(['{', '$', '}']) {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        let (name, used) = if let Some(braced) = tail.strip_prefix("${") {
            let end = braced
                .find('}')
                .ok_or_else(|| TemplateError(format!("template {template:?}: unclosed \"${{\"")))?;
            (&braced[..end], end + 3)
        } else if let Some(var) = tail.strip_prefix('$') {
            let len = var
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(var.len());
            if len == 0 {
                return Err(TemplateError(format!(
                    "template {template:?}: \"$\" must be followed by a name ({KNOWN})"
                )));
            }
            (&var[..len], len + 1)
        } else if let Some(braced) = tail.strip_prefix('{') {
            let end = braced
                .find('}')
                .ok_or_else(|| TemplateError(format!("template {template:?}: unclosed \"{{\"")))?;
            (&braced[..end], end + 2)
        } else {
            return Err(TemplateError(format!(
                "template {template:?}: unmatched \"}}\""
            )));
        };
        out.push_str(&lookup(name, vars, template)?);
        rest = &tail[used..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Expands a name template and checks that the result is a usable file
/// name. A trailing extension the user typed out of habit (`.tgz`,
/// `.tar.gz`, `.tar.zst`, `.txt`, `.json`) is removed, since goldcap adds the
/// right one; DRP's own params strip `.tgz`/`.txt` the same way.
pub fn file_stem(template: &str, vars: &Vars<'_>) -> Result<String, TemplateError> {
    let mut name = expand(template, vars)?;
    for ext in [".tar.gz", ".tgz", ".tar.zst", ".tzst", ".txt", ".json"] {
        if name.len() > ext.len() && name.ends_with(ext) {
            name.truncate(name.len() - ext.len());
            break;
        }
    }
    check_file_name(&name)
        .map_err(|why| TemplateError(format!("template {template:?} gives {name:?}: {why}")))?;
    Ok(name)
}

fn check_file_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("the name is empty");
    }
    if name.contains('/') {
        return Err("a file name cannot contain '/' (use --upload-path for directories)");
    }
    if name.contains('\0') || name.chars().any(char::is_control) {
        return Err("the name contains control characters");
    }
    if name.starts_with('.') {
        return Err("the name must not start with '.'");
    }
    // Room for the extension and for the temporary name around it.
    if name.len() > 200 {
        return Err("the name is longer than 200 bytes");
    }
    Ok(())
}

/// Normalises an upload path (`images`, `/images/`, `images/{os}`):
/// expands the template, strips leading and trailing `/`, rejects `.`/`..`
/// components. DRP's files API takes it relative to its `files/` root.
pub fn upload_path(template: &str, vars: &Vars<'_>) -> Result<String, TemplateError> {
    let expanded = expand(template, vars)?;
    let trimmed = expanded.trim_matches('/');
    let mut parts = Vec::new();
    for part in trimmed.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." || part.chars().any(char::is_control) {
            return Err(TemplateError(format!(
                "upload path {template:?}: component {part:?} is not allowed"
            )));
        }
        parts.push(part);
    }
    Ok(parts.join("/"))
}

/// Joins an upload path and a file name.
pub fn upload_name(path: &str, file: &str) -> String {
    if path.is_empty() {
        file.to_owned()
    } else {
        format!("{path}/{file}")
    }
}

/// Parses `--ident`: exactly 10 hexadecimal characters, returned lowercase.
pub fn parse_ident(s: &str) -> Result<String, String> {
    if s.len() == 10 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!(
            "{s:?} is not an ident: it must be exactly 10 hexadecimal characters (e.g. cf99cd80eb)"
        ))
    }
}

/// A fresh random ident: 10 lowercase hex characters, like DRP's
/// `uuidgen | md5sum | cut -c 1-10`.
pub fn random_ident() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 5];
    getrandom::fill(&mut bytes)?;
    Ok(super::digest::hex(&bytes))
}

/// Parses `--date` (RFC 3339, any offset) into UTC.
pub fn parse_date(s: &str) -> Result<DateTime<Utc>, String> {
    let d = DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| {
            format!("{s:?} is not an RFC 3339 date ({e}); example: 2026-11-22T10:15:00Z")
        })?;
    // chrono takes a leap second (`:60`) as the second before it, a second
    // long: names and the MANIFEST would show `:59`, or DRP's date `:60`.
    if chrono::Timelike::nanosecond(&d) >= 1_000_000_000 {
        return Err(format!(
            "{s:?}: a leap second cannot name a capture; use :59 or the next minute"
        ));
    }
    Ok(d)
}

/// `{date}`: `YYYYMMDD-HHMMSS` in UTC (DRP's `date +%Y%m%d-%H%M%S`).
pub fn date_stamp(date: &DateTime<Utc>) -> String {
    date.format("%Y%m%d-%H%M%S").to_string()
}

/// The `date:` line of DRP's info block: the default format of `date(1)`
/// in the C locale, in UTC (`Tue Aug 27 18:44:35 UTC 2019`).
pub fn drp_date(date: &DateTime<Utc>) -> String {
    date.format("%a %b %e %H:%M:%S UTC %Y").to_string()
}

/// `{os}` from os-release fields: `ID-VERSION_ID` lowercased (`debian-12`,
/// `rocky-9.4`), or `ID` alone when there is no `VERSION_ID` (Arch, sid).
/// Characters outside `[a-z0-9._-]` become `-`.
pub fn os_tag(id: &str, version_id: Option<&str>) -> Option<String> {
    let raw = match version_id.filter(|v| !v.is_empty()) {
        Some(v) => format!("{id}-{v}"),
        None => id.to_owned(),
    };
    sanitize_tag(&raw)
}

/// Lowercases and sanitises an OS tag given with `--os` or from os-release.
pub fn sanitize_tag(raw: &str) -> Option<String> {
    let tag: String = raw
        .trim()
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let tag = tag.trim_matches('-').to_owned();
    (!tag.is_empty() && !tag.starts_with('.')).then_some(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars<'static> {
        Vars {
            os: Some("debian-12"),
            date: "20261122-101500",
            ident: "cf99cd80eb",
        }
    }

    #[test]
    fn expand_table() {
        let ok: &[(&str, &str)] = &[
            (
                DEFAULT_ROOTFS_TEMPLATE,
                "debian-12-rootfs-20261122-101500-cf99cd80eb",
            ),
            (
                DEFAULT_MANIFEST_TEMPLATE,
                "debian-12-MANIFEST-20261122-101500-cf99cd80eb",
            ),
            // DRP's own param default, pasted verbatim.
            (
                "$TAG-rootfs-$DSTAMP-$RS_IMAGE_IDENT",
                "debian-12-rootfs-20261122-101500-cf99cd80eb",
            ),
            ("${TAG}_x_${DSTAMP}", "debian-12_x_20261122-101500"),
            ("gold-{ident}", "gold-cf99cd80eb"),
            ("plain", "plain"),
        ];
        for (t, want) in ok {
            assert_eq!(expand(t, &vars()).unwrap(), *want, "{t}");
        }
        for bad in [
            "{nope}",
            "$HOME-x",
            "x-$",
            "{os",
            "${TAG",
            "a}b",
            "$DSTAMP_x",
        ] {
            assert!(expand(bad, &vars()).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn unknown_os_is_a_clear_error() {
        let v = Vars { os: None, ..vars() };
        let e = expand("{os}-x", &v).unwrap_err();
        assert!(e.0.contains("--os"), "{e}");
        assert_eq!(expand("{ident}", &v).unwrap(), "cf99cd80eb");
    }

    #[test]
    fn file_stem_table() {
        assert_eq!(
            file_stem("img-{ident}.tgz", &vars()).unwrap(),
            "img-cf99cd80eb"
        );
        assert_eq!(file_stem("img.tar.zst", &vars()).unwrap(), "img");
        assert_eq!(file_stem("m.txt", &vars()).unwrap(), "m");
        for bad in ["a/b", "", ".hidden", ".tgz", "x\ny"] {
            assert!(file_stem(bad, &vars()).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn upload_path_table() {
        let cases: &[(&str, &str)] = &[
            ("images", "images"),
            ("/images/", "images"),
            ("images//{os}/", "images/debian-12"),
            ("", ""),
            ("/", ""),
        ];
        for (t, want) in cases {
            assert_eq!(upload_path(t, &vars()).unwrap(), *want, "{t}");
        }
        assert!(upload_path("images/../etc", &vars()).is_err());
        assert_eq!(upload_name("images", "a.tgz"), "images/a.tgz");
        assert_eq!(upload_name("", "a.tgz"), "a.tgz");
    }

    #[test]
    fn ident_table() {
        assert_eq!(parse_ident("cf99cd80eb").unwrap(), "cf99cd80eb");
        assert_eq!(parse_ident("CF99CD80EB").unwrap(), "cf99cd80eb");
        for bad in ["", "cf99cd80e", "cf99cd80ebb", "cf99cd80eg", "cf99cd80e-"] {
            assert!(parse_ident(bad).is_err(), "{bad}");
        }
        let r = random_ident().unwrap();
        assert!(parse_ident(&r).is_ok(), "{r}");
        assert_ne!(r, random_ident().unwrap());
    }

    #[test]
    fn dates() {
        let d = parse_date("2019-08-27T18:44:35Z").unwrap();
        assert_eq!(date_stamp(&d), "20190827-184435");
        assert_eq!(drp_date(&d), "Tue Aug 27 18:44:35 UTC 2019");
        let d = parse_date("2019-08-05T20:44:35+02:00").unwrap();
        assert_eq!(drp_date(&d), "Mon Aug  5 18:44:35 UTC 2019");
        assert!(parse_date("yesterday").is_err());
        assert!(parse_date("2016-12-31T23:59:60Z").is_err());
        assert!(parse_date("2016-12-31T23:59:59.999Z").is_ok());
    }

    #[test]
    fn os_tags() {
        assert_eq!(os_tag("debian", Some("12")).unwrap(), "debian-12");
        assert_eq!(os_tag("rocky", Some("9.4")).unwrap(), "rocky-9.4");
        assert_eq!(os_tag("arch", None).unwrap(), "arch");
        assert_eq!(
            os_tag("opensuse-leap", Some("15.5")).unwrap(),
            "opensuse-leap-15.5"
        );
        assert_eq!(sanitize_tag("CentOS 8").unwrap(), "centos-8");
        assert_eq!(sanitize_tag("  "), None);
        assert_eq!(sanitize_tag("a/b").unwrap(), "a-b");
    }
}
