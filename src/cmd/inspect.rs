//! `goldcap inspect` and `goldcap diff`: look inside artifacts.
//!
//! After the pipeline, beside verify. `inspect` prints what a capture's
//! JSON MANIFEST says (OS, kernels, boot modes, packages, scrub, warnings)
//! and, with `--list`, the archive's entries as `tar -tv` would, read by
//! goldcap's own reader (verify's decompressor and metadata guard, so a
//! hostile archive costs bounded memory). `diff` compares two captures:
//! packages from their MANIFESTs, entries from the archives themselves
//! (type, mode, owner, size, link target, and a sha256 of each member's
//! content computed as it streams). Both only read; neither extracts,
//! follows a link or writes a file.

use super::verify::guard::Guard;
use super::verify::read::Decoder;
use super::{print_json, print_text};
use crate::output::digest::hex;
use crate::output::manifest::{ENTRIES_SCHEMA, EntryRecord};
use crate::report::error::{Error, Result};
use crate::report::escape::escape;
use crate::report::exit::ExitCode;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use std::collections::BTreeMap;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

/// One archive member, as `tar -tv` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// Escaped name relative to the root (`.` for the root).
    pub path: String,
    /// `-` file, `d` dir, `l` symlink, `h` hard link, `c`/`b` device, `p` fifo.
    #[serde(rename = "type")]
    pub kind: char,
    pub mode: String,
    pub uid: u64,
    pub gid: u64,
    /// Content size (a sparse file's real size).
    pub size: u64,
    /// Symlink or hard-link target, escaped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// sha256 of the member's content as archived (`diff` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// Calls `each` for every member of `artifact`, in archive order; hashes
/// content when `digest`.
pub fn members(artifact: &Path, digest: bool, mut each: impl FnMut(Member)) -> io::Result<()> {
    let file = crate::input::open(artifact)?;
    let decoder = Decoder::new(BufReader::with_capacity(1 << 20, file))?;
    let mut ar = tar::Archive::new(Guard::new(decoder));
    for entry in ar.entries()? {
        let mut e = entry?;
        let h = e.header();
        let kind = match h.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => '-',
            tar::EntryType::Directory => 'd',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => 'h',
            tar::EntryType::Char => 'c',
            tar::EntryType::Block => 'b',
            tar::EntryType::Fifo => 'p',
            tar::EntryType::GNUSparse => '-',
            _ => '?',
        };
        let (mode, uid, gid, mut size) = (
            h.mode().unwrap_or(0),
            e.header().uid().unwrap_or(0),
            e.header().gid().unwrap_or(0),
            e.header().size().unwrap_or(0),
        );
        let mut name = e.path_bytes().into_owned();
        if let Ok(Some(exts)) = e.pax_extensions() {
            for ext in exts.flatten() {
                match ext.key() {
                    Ok("GNU.sparse.name") => name = ext.value_bytes().to_vec(),
                    Ok("GNU.sparse.realsize") => {
                        size = ext
                            .value()
                            .ok()
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(size)
                    }
                    _ => {}
                }
            }
        }
        let link = e
            .link_name_bytes()
            .map(|l| escape(l.strip_prefix(b"./").unwrap_or(&l)));
        let sha256 = if digest && kind == '-' {
            let mut h = sha2::Sha256::new();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = e.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            Some(hex(&h.finalize()))
        } else {
            None
        };
        let rel = name.strip_prefix(b"./").unwrap_or(&name);
        let rel = rel.strip_suffix(b"/").unwrap_or(rel);
        each(Member {
            path: if rel.is_empty() {
                ".".into()
            } else {
                escape(rel)
            },
            kind,
            mode: format!("{kind}{}", mode_string(mode)),
            uid,
            gid,
            size: if kind == '-' { size } else { 0 },
            link,
            sha256,
        });
    }
    Ok(())
}

/// `rwsr-xr-x` for permission bits, as `ls -l` writes them.
pub fn mode_string(mode: u32) -> String {
    let bit = |m: u32, c: char| if mode & m != 0 { c } else { '-' };
    let exec = |x: u32, special: u32, set: char| match (mode & x != 0, mode & special != 0) {
        (true, true) => set,
        (false, true) => set.to_ascii_uppercase(),
        (true, false) => 'x',
        (false, false) => '-',
    };
    [
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        exec(0o100, 0o4000, 's'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        exec(0o010, 0o2000, 's'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        exec(0o001, 0o1000, 't'),
    ]
    .iter()
    .collect()
}

/// What `inspect` and `diff` read of a JSON MANIFEST (the path list is
/// skipped as it streams).
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct Facts {
    #[serde(default)]
    pub filename: Option<String>,
    #[serde(default)]
    pub ident: Option<String>,
    #[serde(default)]
    pub date: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub source: Source,
    #[serde(default)]
    pub stats: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub scrub: Scrub,
    #[serde(default)]
    pub warning_count: Option<u64>,
    #[serde(default)]
    pub warnings_by_kind: Option<BTreeMap<String, u64>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct Source {
    #[serde(default)]
    pub os: Option<serde_json::Value>,
    #[serde(default)]
    pub kernels: Vec<serde_json::Value>,
    #[serde(default)]
    pub boot: Option<serde_json::Value>,
    #[serde(default)]
    pub packages: Packages,
    #[serde(default)]
    pub deploy_problems: Vec<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct Packages {
    #[serde(default)]
    pub database: String,
    #[serde(default)]
    pub list: Vec<Package>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub arch: String,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct Scrub {
    #[serde(default)]
    pub item_count: Option<u64>,
    #[serde(default)]
    pub identity_off: Option<Vec<String>>,
    #[serde(default)]
    pub off: Vec<serde_json::Value>,
}

/// An artifact and its JSON MANIFEST, from either.
pub struct Pair {
    pub artifact: PathBuf,
    pub manifest: Option<PathBuf>,
}

/// Resolves `given` (an artifact, or a goldcap JSON MANIFEST that names
/// its artifact next to it).
pub fn pair(given: &Path) -> Result<Pair> {
    if given.extension().is_some_and(|e| e == "json") {
        let files = crate::upload::Files::from_manifest(given)?;
        return Ok(Pair {
            artifact: files.artifact,
            manifest: Some(given.to_path_buf()),
        });
    }
    // The goldcap MANIFEST next to it that names it, as verify finds it.
    let manifest = super::verify::manifest(given, None)?.map(|(p, _)| p);
    Ok(Pair {
        artifact: given.to_path_buf(),
        manifest,
    })
}

/// Reads a JSON MANIFEST into `T`, bounded, skipping what `T` does not
/// name as it streams (the path list).
fn read_manifest<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bad = |why: String| Error::usage(format!("{}: {why}", path.display()));
    let file = crate::input::open(path).map_err(|e| bad(crate::util::io_reason(&e)))?;
    serde_json::from_reader(crate::input::Limited::new(
        BufReader::new(file),
        crate::output::manifest::read::JSON_LIMIT,
    ))
    .map_err(|e| bad(format!("not a goldcap JSON MANIFEST: {e}")))
}

/// Reads what `inspect` shows of a JSON MANIFEST.
pub fn read_facts(path: &Path) -> Result<Facts> {
    read_manifest(path)
}

/// Every member of `artifact` ([`members`]), or why it could not be read.
fn read_members(artifact: &Path, digest: bool) -> Result<Vec<Member>> {
    let mut v = Vec::new();
    members(artifact, digest, |m| v.push(m)).map_err(|e| {
        Error::from(anyhow::anyhow!(
            "cannot read {}: {}",
            artifact.display(),
            crate::util::io_reason(&e)
        ))
    })?;
    Ok(v)
}

/// Runs `goldcap inspect`.
pub(super) fn run_inspect(given: &Path, list: bool, json: bool) -> Result<ExitCode> {
    let p = pair(given)?;
    let facts = p.manifest.as_deref().map(read_facts).transpose()?;
    let listed = match list {
        true => read_members(&p.artifact, false)?,
        false => Vec::new(),
    };
    if json {
        print_json(&serde_json::json!({
            "artifact": escape(p.artifact.as_os_str().as_encoded_bytes()),
            "manifest": facts,
            "entries": list.then_some(&listed),
        }))?;
        return Ok(ExitCode::Success);
    }
    let mut t = String::new();
    match &facts {
        Some(f) => t.push_str(&summary(f)),
        None => t.push_str(&format!(
            "{}: no goldcap MANIFEST next to it (give the .json to see the summary)\n",
            escape(p.artifact.as_os_str().as_encoded_bytes())
        )),
    }
    for m in &listed {
        t.push_str(&format!(
            "{} {}/{} {:>12} {}{}\n",
            m.mode,
            m.uid,
            m.gid,
            m.size,
            m.path,
            match (&m.link, m.kind) {
                (Some(l), 'h') => format!(" link to {l}"),
                (Some(l), _) => format!(" -> {l}"),
                _ => String::new(),
            }
        ));
    }
    print_text(&t)?;
    Ok(ExitCode::Success)
}

/// The MANIFEST summary, one fact per line.
fn summary(f: &Facts) -> String {
    let s = |v: &Option<String>| v.clone().unwrap_or_else(|| "?".into());
    let clip = |v: &str| crate::input::clip(v, 200);
    let mut t = String::new();
    let mut line = |k: &str, v: String| t.push_str(&format!("{k:>16}:  {}\n", clip(&v)));
    line("artifact", s(&f.filename));
    line("ident", format!("{} captured {}", s(&f.ident), s(&f.date)));
    line(
        "size",
        format!(
            "{} bytes, {}, sha256 {}",
            f.size.unwrap_or(0),
            s(&f.format),
            s(&f.sha256)
        ),
    );
    let os = f
        .source
        .os
        .as_ref()
        .and_then(|o| o["pretty_name"].as_str())
        .unwrap_or("unknown");
    line("os", os.to_owned());
    for k in &f.source.kernels {
        line("kernel", k["version"].as_str().unwrap_or("?").to_owned());
    }
    if let Some(b) = &f.source.boot {
        let yn = |k: &str| {
            if b[k].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            }
        };
        line(
            "boot modes",
            format!(
                "BIOS grub: {}, EFI grub: {}, EFI shim: {}",
                yn("bios_grub"),
                yn("efi_grub"),
                yn("efi_shim")
            ),
        );
    }
    line(
        "packages",
        format!(
            "{} ({})",
            f.source.packages.list.len(),
            if f.source.packages.database.is_empty() {
                "none found"
            } else {
                &f.source.packages.database
            }
        ),
    );
    if let Some(st) = &f.stats {
        line(
            "entries",
            format!(
                "{} ({} bytes of content)",
                st.get("entries").and_then(|v| v.as_u64()).unwrap_or(0),
                st.get("content_bytes")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0)
            ),
        );
    }
    line(
        "scrub",
        match f.scrub.identity_off.as_deref() {
            Some([]) => format!(
                "{} items; every identity operation on",
                f.scrub.item_count.unwrap_or(0)
            ),
            Some(off) => format!("IDENTITY KEPT by {}", off.join(", ")),
            None => "not recorded".into(),
        },
    );
    line(
        "warnings",
        match &f.warnings_by_kind {
            Some(k) if !k.is_empty() => k
                .iter()
                .map(|(kind, n)| format!("{n} {kind}"))
                .collect::<Vec<_>>()
                .join(", "),
            _ => f.warning_count.unwrap_or(0).to_string(),
        },
    );
    for p in &f.source.deploy_problems {
        line("DEPLOY PROBLEM", p.clone());
    }
    t
}

/// The entries a JSON MANIFEST records (schema 1), as members; `None`
/// when it has none (older MANIFESTs, or no MANIFEST).
fn recorded(p: &Pair) -> Result<Option<Vec<Member>>> {
    #[derive(Deserialize)]
    struct Entries {
        entries_schema: Option<u32>,
        #[serde(default)]
        entries: Vec<EntryRecord>,
    }
    let Some(path) = &p.manifest else {
        return Ok(None);
    };
    let e: Entries = read_manifest(path)?;
    if e.entries_schema != Some(ENTRIES_SCHEMA) {
        return Ok(None);
    }
    Ok(Some(e.entries.into_iter().map(Member::from).collect()))
}

impl From<EntryRecord> for Member {
    fn from(r: EntryRecord) -> Member {
        let kind = match r.kind.as_str() {
            "file" => '-',
            "dir" => 'd',
            "symlink" => 'l',
            "hardlink" => 'h',
            "char" => 'c',
            "block" => 'b',
            "fifo" => 'p',
            _ => '?',
        };
        let mode = u32::from_str_radix(&r.mode, 8).unwrap_or(0);
        Member {
            path: r.path,
            kind,
            mode: format!("{kind}{}", mode_string(mode)),
            uid: r.uid,
            gid: r.gid,
            size: r.size.unwrap_or(0),
            link: r.link,
            sha256: r.sha256,
        }
    }
}

/// What changed between two captures.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Diff {
    pub packages_added: Vec<Package>,
    pub packages_removed: Vec<Package>,
    /// (name, old version, new version).
    pub packages_upgraded: Vec<(String, String, String)>,
    pub paths_added: Vec<Member>,
    pub paths_removed: Vec<Member>,
    /// (before, after).
    pub paths_changed: Vec<(Member, Member)>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        *self == Diff::default()
    }
}

/// Packages by name: added, removed, and upgraded (another version).
pub fn diff_packages(a: &[Package], b: &[Package], d: &mut Diff) {
    let key = |p: &Package| (p.name.clone(), p.arch.clone());
    let a: BTreeMap<_, _> = a.iter().map(|p| (key(p), p)).collect();
    let b: BTreeMap<_, _> = b.iter().map(|p| (key(p), p)).collect();
    for (k, p) in &b {
        match a.get(k) {
            None => d.packages_added.push((*p).clone()),
            Some(old) if old.version != p.version => {
                d.packages_upgraded
                    .push((p.name.clone(), old.version.clone(), p.version.clone()))
            }
            Some(_) => {}
        }
    }
    d.packages_removed.extend(
        a.iter()
            .filter(|(k, _)| !b.contains_key(*k))
            .map(|(_, p)| (*p).clone()),
    );
}

/// Entries by path: added, removed, changed in any listed attribute.
pub fn diff_members(a: Vec<Member>, b: Vec<Member>, d: &mut Diff) {
    let mut a: BTreeMap<String, Member> = a.into_iter().map(|m| (m.path.clone(), m)).collect();
    for m in b {
        match a.remove(&m.path) {
            None => d.paths_added.push(m),
            Some(old) if old != m => d.paths_changed.push((old, m)),
            Some(_) => {}
        }
    }
    d.paths_removed.extend(a.into_values());
}

/// Runs `goldcap diff`.
pub(super) fn run_diff(a: &Path, b: &Path, json: bool) -> Result<ExitCode> {
    let (pa, pb) = (pair(a)?, pair(b)?);
    let mut d = Diff::default();
    let facts = |p: &Pair| p.manifest.as_deref().map(read_facts).transpose();
    match (facts(&pa)?, facts(&pb)?) {
        (Some(fa), Some(fb)) => {
            diff_packages(&fa.source.packages.list, &fb.source.packages.list, &mut d)
        }
        _ => crate::report::ui::eprint_line(
            "goldcap: warning: packages not compared: a MANIFEST is missing",
        ),
    }
    let read = |p: &Pair| read_members(&p.artifact, true);
    // The MANIFESTs' own records when both have them (nothing to read
    // again); otherwise the two archives, hashed as they stream.
    match (recorded(&pa)?, recorded(&pb)?) {
        (Some(a), Some(b)) => diff_members(a, b, &mut d),
        _ => diff_members(read(&pa)?, read(&pb)?, &mut d),
    }
    if json {
        print_json(&d)?;
    } else {
        let mut t = String::new();
        for p in &d.packages_added {
            t.push_str(&format!("+ package {} {} {}\n", p.name, p.version, p.arch));
        }
        for p in &d.packages_removed {
            t.push_str(&format!("- package {} {} {}\n", p.name, p.version, p.arch));
        }
        for (n, old, new) in &d.packages_upgraded {
            t.push_str(&format!("~ package {n} {old} -> {new}\n"));
        }
        for m in &d.paths_added {
            t.push_str(&format!(
                "+ {} {} {}/{} {}\n",
                m.path, m.mode, m.uid, m.gid, m.size
            ));
        }
        for m in &d.paths_removed {
            t.push_str(&format!(
                "- {} {} {}/{} {}\n",
                m.path, m.mode, m.uid, m.gid, m.size
            ));
        }
        for (old, new) in &d.paths_changed {
            t.push_str(&format!(
                "~ {}: {}\n",
                new.path,
                changes(old, new).join(", ")
            ));
        }
        print_text(&t)?;
    }
    // As diff(1): 1 when they differ.
    Ok(if d.is_empty() {
        ExitCode::Success
    } else {
        ExitCode::Failure
    })
}

/// What differs between two versions of an entry.
fn changes(a: &Member, b: &Member) -> Vec<String> {
    let mut c = Vec::new();
    if a.mode != b.mode {
        c.push(format!("mode {} -> {}", a.mode, b.mode));
    }
    if (a.uid, a.gid) != (b.uid, b.gid) {
        c.push(format!("owner {}/{} -> {}/{}", a.uid, a.gid, b.uid, b.gid));
    }
    if a.size != b.size {
        c.push(format!("size {} -> {}", a.size, b.size));
    }
    if a.link != b.link {
        c.push(format!(
            "target {} -> {}",
            a.link.as_deref().unwrap_or("-"),
            b.link.as_deref().unwrap_or("-")
        ));
    }
    if a.sha256 != b.sha256 && a.size == b.size {
        c.push("content".into());
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_strings_as_ls_writes_them() {
        for (mode, want) in [
            (0o755, "rwxr-xr-x"),
            (0o4755, "rwsr-xr-x"),
            (0o4644, "rwSr--r--"),
            (0o2750, "rwxr-s---"),
            (0o1777, "rwxrwxrwt"),
            (0o1666, "rw-rw-rwT"),
            (0, "---------"),
        ] {
            assert_eq!(mode_string(mode), want, "{mode:o}");
        }
    }

    fn pkg(n: &str, v: &str) -> Package {
        Package {
            name: n.into(),
            version: v.into(),
            arch: "amd64".into(),
        }
    }

    fn member(path: &str, size: u64, sum: &str) -> Member {
        Member {
            path: path.into(),
            kind: '-',
            mode: "-rw-r--r--".into(),
            uid: 0,
            gid: 0,
            size,
            link: None,
            sha256: Some(sum.into()),
        }
    }

    #[test]
    fn diff_table() {
        let mut d = Diff::default();
        diff_packages(
            &[pkg("bash", "5.2"), pkg("vim", "9.0"), pkg("nano", "7")],
            &[pkg("bash", "5.3"), pkg("vim", "9.0"), pkg("htop", "3")],
            &mut d,
        );
        assert_eq!(d.packages_added, vec![pkg("htop", "3")]);
        assert_eq!(d.packages_removed, vec![pkg("nano", "7")]);
        assert_eq!(
            d.packages_upgraded,
            vec![("bash".into(), "5.2".into(), "5.3".into())]
        );
        let same = member("etc/a", 1, "x");
        let mut chmod = member("etc/b", 1, "x");
        let before_b = chmod.clone();
        chmod.mode = "-rwxr-xr-x".into();
        diff_members(
            vec![
                same.clone(),
                before_b.clone(),
                member("etc/c", 2, "y"),
                member("gone", 1, "z"),
            ],
            vec![
                same,
                chmod.clone(),
                member("etc/c", 2, "w"),
                member("new", 1, "n"),
            ],
            &mut d,
        );
        assert_eq!(d.paths_added, vec![member("new", 1, "n")]);
        assert_eq!(d.paths_removed, vec![member("gone", 1, "z")]);
        assert_eq!(d.paths_changed.len(), 2);
        assert_eq!(
            changes(&before_b, &chmod),
            vec!["mode -rw-r--r-- -> -rwxr-xr-x"]
        );
        assert_eq!(
            changes(&member("c", 2, "y"), &member("c", 2, "w")),
            vec!["content"]
        );
        assert!(!d.is_empty() && Diff::default().is_empty());
    }
}
