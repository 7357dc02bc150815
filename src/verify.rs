//! `goldcap verify`: read an artifact back and check what a deploy relies
//! on — its checksums against the MANIFEST, a top-level `curtin/`, and that
//! no machine identity leaked into it.
//!
//! Beside the pipeline, after it: the artifact is read once, its compressed
//! bytes hashed (md5, sha256, size) while they are decompressed and walked
//! entry by entry; only the few small files the identity checks look at are
//! read into memory. No anchor tool checks its own output (virt-sysprep's
//! machine-id refill shipped for years unnoticed); this one lists every
//! failure by path. It never writes anything.

use crate::error::{Error, Result};
use crate::escape::escape;
use md5::{Digest, Md5};
use regex::bytes::Regex;
use serde::Serialize;
use sha2::Sha256;
use std::cell::RefCell;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// One check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Short name.
    pub name: &'static str,
    /// Passed.
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// The archive paths at fault (escaped).
    pub paths: Vec<String>,
}

/// The result of verifying one artifact.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// The artifact.
    pub artifact: String,
    /// The manifest used, if any.
    pub manifest: Option<String>,
    /// Every check, in order.
    pub checks: Vec<Check>,
}

impl Verification {
    /// Number of failed checks.
    pub fn failures(&self) -> usize {
        self.checks.iter().filter(|c| !c.ok).count()
    }
}

/// What a manifest promises.
struct Expected {
    size: u64,
    md5: String,
    sha256: Option<String>,
}

fn from_json(v: &serde_json::Value) -> Option<Expected> {
    Some(Expected {
        size: v["size"].as_u64()?,
        md5: v["md5"].as_str()?.to_owned(),
        sha256: v["sha256"].as_str().map(str::to_owned),
    })
}

fn from_text(t: &str) -> Option<Expected> {
    let field = |label: &str| {
        t.lines().find_map(|l| {
            l.trim_start()
                .strip_prefix(label)
                .map(|v| v.trim().to_owned())
        })
    };
    Some(Expected {
        size: field("size:")?.parse().ok()?,
        md5: field("md5sum:")?,
        sha256: field("sha256sum:"),
    })
}

/// Finds and reads the manifest: `--manifest`, or the goldcap JSON manifest
/// next to the artifact whose `filename` names it.
fn manifest(artifact: &Path, given: Option<&Path>) -> Result<Option<(PathBuf, Expected)>> {
    let read = |p: &Path| -> Result<Option<Expected>> {
        let bytes = std::fs::read(p).map_err(|e| {
            Error::usage(format!(
                "--manifest {}: {}",
                p.display(),
                crate::util::io_reason(&e)
            ))
        })?;
        Ok(match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(v) => from_json(&v),
            Err(_) => from_text(&String::from_utf8_lossy(&bytes)),
        })
    };
    if let Some(p) = given {
        return match read(p)? {
            Some(e) => Ok(Some((p.to_path_buf(), e))),
            None => Err(Error::usage(format!(
                "--manifest {}: not a goldcap or DRP image-builder MANIFEST",
                p.display()
            ))),
        };
    }
    let name = artifact
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = artifact
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(None);
    };
    let mut candidates: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    candidates.sort();
    for p in candidates {
        let Ok(bytes) = std::fs::read(&p) else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        if v["tool"]["name"] == "goldcap"
            && v["filename"] == name.as_str()
            && let Some(e) = from_json(&v)
        {
            return Ok(Some((p, e)));
        }
    }
    Ok(None)
}

#[derive(Default)]
struct HashState {
    md5: Md5,
    sha256: Sha256,
    size: u64,
}

/// Hashes the compressed bytes as the decompressor reads them.
struct HashingReader {
    inner: File,
    state: Rc<RefCell<HashState>>,
}

impl Read for HashingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut s = self.state.borrow_mut();
        s.md5.update(&buf[..n]);
        s.sha256.update(&buf[..n]);
        s.size += n as u64;
        Ok(n)
    }
}

/// An entry an identity check reads, as stored.
#[derive(Debug, Clone)]
enum Body {
    /// A regular file: its first MiB.
    Regular(Vec<u8>),
    /// A hard link to an earlier entry (root-relative path).
    Link(String),
    /// A symlink, with its target.
    Symlink(Vec<u8>),
    /// Anything else.
    Other,
}

/// What the walk over the archive found.
#[derive(Default)]
struct Found {
    curtin: bool,
    /// Entries whose content the identity checks need, by path.
    items: std::collections::BTreeMap<String, (String, Body)>,
    ssh_keys: Vec<String>,
    regenerators: Vec<String>,
    sshd: bool,
    cloud_init_disabled: bool,
    seeds: Vec<String>,
}

/// What `/etc/machine-id` turned out to be.
enum MachineId {
    Absent,
    Content(Vec<u8>),
    /// A symlink to a runtime file (`/run/machine-id`, stateless systems).
    Runtime(String),
    Broken(String),
}

const SEEDS: &[&str] = &[
    "var/lib/systemd/random-seed",
    "var/lib/random-seed",
    "var/lib/urandom/random-seed",
    "var/lib/misc/random-seed",
    "etc/random-seed",
    "boot/efi/loader/random-seed",
    "efi/loader/random-seed",
    "boot/loader/random-seed",
    "var/lib/systemd/credential.secret",
];

const REGENERATORS: &[(&str, &str)] = &[
    (
        "usr/lib/systemd/system/sshd-keygen@.service",
        "sshd-keygen@.service",
    ),
    (
        "lib/systemd/system/sshd-keygen@.service",
        "sshd-keygen@.service",
    ),
    (
        "usr/lib/systemd/system/sshd-keygen.service",
        "sshd-keygen.service",
    ),
    (
        "etc/systemd/system/goldcap-ssh-host-keys.service",
        "goldcap-ssh-host-keys.service",
    ),
    ("usr/sbin/sshd-gen-keys-start", "sshd-gen-keys-start"),
    ("usr/lib/ssh/sshd-gen-keys-start", "sshd-gen-keys-start"),
    ("usr/bin/cloud-init", "cloud-init"),
    ("etc/init.d/sshd", "OpenRC sshd script"),
];

struct Patterns {
    ifcfg: Regex,
    nm: Regex,
    netplan: Regex,
    networkd: Regex,
    ifupdown: Regex,
}

impl Patterns {
    fn new() -> Patterns {
        // Unwrap expectation: constant patterns.
        let re = |p: &str| Regex::new(p).expect("valid pattern");
        Patterns {
            ifcfg: re(r"(?m)^\s*(HWADDR|MACADDR|LLADDR)\s*=\s*\S"),
            nm: re(r"(?m)^\s*(mac-address|cloned-mac-address)\s*=\s*\S"),
            netplan: re(r#"(?m)(^|[\s{,])["']?macaddress["']?\s*:"#),
            networkd: re(r"(?m)^\s*(MACAddress|PermanentMACAddress)\s*=\s*\S"),
            ifupdown: re(r"(?m)^\s*hwaddress\s"),
        }
    }

    /// The pattern for a network configuration file, if `rel` is one.
    fn for_path(&self, rel: &str) -> Option<&Regex> {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        if (rel.starts_with("etc/sysconfig/network-scripts/")
            || rel.starts_with("etc/sysconfig/network/"))
            && name.starts_with("ifcfg-")
        {
            Some(&self.ifcfg)
        } else if rel.starts_with("etc/NetworkManager/system-connections/") {
            Some(&self.nm)
        } else if rel.starts_with("etc/netplan/") {
            Some(&self.netplan)
        } else if rel.starts_with("etc/systemd/network/")
            && [".network", ".link", ".netdev", ".conf"]
                .iter()
                .any(|x| name.ends_with(x))
        {
            Some(&self.networkd)
        } else if rel == "etc/network/interfaces" || rel.starts_with("etc/network/interfaces.d/") {
            Some(&self.ifupdown)
        } else {
            None
        }
    }
}

fn is_lease(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    [
        "var/lib/dhclient/",
        "var/lib/dhcp/",
        "var/lib/dhcpcd/",
        "var/lib/dhcpcd5/",
        "var/db/dhcpcd/",
        "var/lib/wicked/",
    ]
    .iter()
    .any(|d| rel.starts_with(d) && rel.len() > d.len())
        || (rel.starts_with("var/lib/NetworkManager/")
            && (name.ends_with(".lease") || name == "secret_key"))
        || rel == "etc/dhcpcd.duid"
}

/// Verifies an artifact.
pub fn run(artifact: &Path, given: Option<&Path>) -> Result<Verification> {
    let meta = std::fs::metadata(artifact).map_err(|e| {
        Error::usage(format!(
            "{}: {}",
            artifact.display(),
            crate::util::io_reason(&e)
        ))
    })?;
    if !meta.is_file() {
        return Err(Error::usage(format!("{}: not a file", artifact.display())));
    }
    let found_manifest = manifest(artifact, given)?;
    let state = Rc::new(RefCell::new(HashState::default()));
    let file = File::open(artifact)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", artifact.display()))?;
    let input = BufReader::with_capacity(
        1 << 20,
        HashingReader {
            inner: file,
            state: Rc::clone(&state),
        },
    );
    let decoder = decoder(input)?;
    let mut found = Found::default();
    let archive_result =
        walk(decoder, &mut found).and_then(|n| resolve_links(artifact, &mut found).map(|_| n));

    // Hash whatever the decompressor did not need to read (trailing bytes).
    let mut st = state.borrow_mut();
    if st.size < meta.len() {
        let mut f = File::open(artifact)?;
        f.seek(SeekFrom::Start(st.size))?;
        let mut rest = Vec::new();
        f.read_to_end(&mut rest)?;
        st.md5.update(&rest);
        st.sha256.update(&rest);
        st.size += rest.len() as u64;
    }
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let (md5, sha256) = (
        hex(&st.md5.clone().finalize()),
        hex(&st.sha256.clone().finalize()),
    );

    let mut checks = Vec::new();
    let check = |name, ok, detail: String, paths: Vec<String>| Check {
        name,
        ok,
        detail,
        paths,
    };
    match &found_manifest {
        None => checks.push(check(
            "manifest",
            false,
            "no goldcap MANIFEST names this artifact next to it (give one with --manifest)".into(),
            vec![],
        )),
        Some((p, exp)) => {
            checks.push(check("manifest", true, format!("{}", p.display()), vec![]));
            checks.push(check(
                "size",
                exp.size == st.size,
                format!("{} bytes (MANIFEST: {})", st.size, exp.size),
                vec![],
            ));
            checks.push(check(
                "md5",
                exp.md5 == md5,
                format!("{md5} (MANIFEST: {})", exp.md5),
                vec![],
            ));
            match &exp.sha256 {
                Some(s) => checks.push(check(
                    "sha256",
                    *s == sha256,
                    format!("{sha256} (MANIFEST: {s})"),
                    vec![],
                )),
                None => checks.push(check(
                    "sha256",
                    true,
                    format!("{sha256} (not in the MANIFEST)"),
                    vec![],
                )),
            }
        }
    }
    drop(st);
    match archive_result {
        Ok(n) => checks.push(check(
            "archive",
            true,
            format!("{n} entries, read to the end"),
            vec![],
        )),
        Err(e) => checks.push(check("archive", false, format!("unreadable: {e}"), vec![])),
    }
    checks.extend(identity_checks(&found));
    Ok(Verification {
        artifact: escape(artifact.as_os_str().as_encoded_bytes()),
        manifest: found_manifest.map(|(p, _)| escape(p.as_os_str().as_encoded_bytes())),
        checks,
    })
}

/// Walks the tar stream, collecting what the identity checks need.
/// The decompressed tar stream behind `input` (gzip, zstd or plain).
fn decoder<R: BufRead + 'static>(mut input: R) -> io::Result<Box<dyn Read>> {
    let magic = input
        .fill_buf()?
        .get(..4)
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    Ok(if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(input))
    } else if magic == [0x28, 0xb5, 0x2f, 0xfd] {
        Box::new(zstd::stream::read::Decoder::with_buffer(input)?)
    } else {
        Box::new(input)
    })
}

/// An entry's path relative to the root (`./` and a trailing `/` removed;
/// the real name of a PAX sparse entry).
fn entry_rel(e: &mut tar::Entry<'_, Box<dyn Read>>) -> Vec<u8> {
    let mut raw = e.path_bytes().into_owned();
    if let Ok(Some(exts)) = e.pax_extensions() {
        for ext in exts.flatten() {
            if ext.key() == Ok("GNU.sparse.name") {
                raw = ext.value_bytes().to_vec();
            }
        }
    }
    let rel = raw.strip_prefix(b"./").unwrap_or(&raw);
    rel.strip_suffix(b"/").unwrap_or(rel).to_vec()
}

fn read_small(e: &mut tar::Entry<'_, Box<dyn Read>>) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    e.take(1 << 20).read_to_end(&mut v)?;
    Ok(v)
}

/// Whether the identity checks read this entry's content.
fn interesting(rel: &str, pats: &Patterns) -> bool {
    rel.ends_with("machine-id")
        || rel == "etc/udev/rules.d/70-persistent-net.rules"
        || pats.for_path(rel).is_some()
        || is_lease(rel)
}

fn walk(decoder: Box<dyn Read>, found: &mut Found) -> io::Result<u64> {
    let pats = Patterns::new();
    let mut ar = tar::Archive::new(decoder);
    let mut n = 0u64;
    for entry in ar.entries()? {
        let mut e = entry?;
        n += 1;
        let rel_bytes = entry_rel(&mut e);
        let rel = String::from_utf8_lossy(&rel_bytes).into_owned();
        let shown = format!("./{}", escape(&rel_bytes));
        let et = e.header().entry_type();
        if rel == "curtin" && et.is_dir() {
            found.curtin = true;
        }
        if rel.starts_with("etc/ssh/ssh_host_") && !et.is_dir() {
            found.ssh_keys.push(shown.clone());
        }
        if let Some((_, what)) = REGENERATORS.iter().find(|(p, _)| *p == rel) {
            found.regenerators.push((*what).to_owned());
        }
        if matches!(rel.as_str(), "usr/sbin/sshd" | "usr/bin/sshd" | "sbin/sshd") {
            found.sshd = true;
        }
        if rel == "etc/cloud/cloud-init.disabled" {
            found.cloud_init_disabled = true;
        }
        if SEEDS.contains(&rel.as_str()) && !et.is_dir() {
            found.seeds.push(shown.clone());
        }
        if interesting(&rel, &pats) {
            let body = if et.is_file() || et.is_contiguous() {
                Body::Regular(read_small(&mut e)?)
            } else if et.is_hard_link() {
                let target = e
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let t = target.strip_prefix(b"./").unwrap_or(&target);
                Body::Link(String::from_utf8_lossy(t).into_owned())
            } else if et.is_symlink() {
                Body::Symlink(
                    e.link_name_bytes()
                        .map(|t| t.into_owned())
                        .unwrap_or_default(),
                )
            } else {
                Body::Other
            };
            found.items.insert(rel, (shown, body));
        }
    }
    // Read to the end of the compressed stream (trailer, padding).
    io::copy(&mut ar.into_inner(), &mut io::sink())?;
    Ok(n)
}

/// Second pass, only when an interesting entry is a hard link: reads the
/// entries it links to.
fn read_targets(
    artifact: &Path,
    targets: &std::collections::BTreeSet<String>,
) -> io::Result<std::collections::BTreeMap<String, Vec<u8>>> {
    let mut out = std::collections::BTreeMap::new();
    let mut ar = tar::Archive::new(decoder(BufReader::with_capacity(
        1 << 20,
        File::open(artifact)?,
    ))?);
    for entry in ar.entries()? {
        let mut e = entry?;
        let rel = String::from_utf8_lossy(&entry_rel(&mut e)).into_owned();
        let et = e.header().entry_type();
        if targets.contains(&rel) && (et.is_file() || et.is_contiguous()) {
            out.insert(rel, read_small(&mut e)?);
        }
    }
    Ok(out)
}

/// Replaces hard-link bodies by their targets' content.
fn resolve_links(artifact: &Path, found: &mut Found) -> io::Result<()> {
    let targets: std::collections::BTreeSet<String> = found
        .items
        .values()
        .filter_map(|(_, b)| {
            if let Body::Link(t) = b {
                Some(t.clone())
            } else {
                None
            }
        })
        .collect();
    if targets.is_empty() {
        return Ok(());
    }
    let contents = read_targets(artifact, &targets)?;
    for (_, body) in found.items.values_mut() {
        if let Body::Link(t) = body {
            *body = contents
                .get(t.as_str())
                .map_or(Body::Other, |c| Body::Regular(c.clone()));
        }
    }
    Ok(())
}

/// Follows `/etc/machine-id` through symlinks inside the archive.
fn machine_id(f: &Found) -> MachineId {
    let mut rel = "etc/machine-id".to_owned();
    for _ in 0..8 {
        match f.items.get(&rel).map(|(_, b)| b) {
            None if rel == "etc/machine-id" => return MachineId::Absent,
            None if rel.starts_with("run/") => return MachineId::Runtime(format!("/{rel}")),
            None => {
                return MachineId::Broken(format!(
                    "is a symlink to /{rel}, which is not in the image"
                ));
            }
            Some(Body::Regular(c)) => return MachineId::Content(c.clone()),
            Some(Body::Symlink(t)) => {
                let t = String::from_utf8_lossy(t);
                let dir = rel.rsplit_once('/').map_or("", |(d, _)| d);
                let joined = if let Some(abs) = t.strip_prefix('/') {
                    abs.to_owned()
                } else {
                    format!("{dir}/{t}")
                };
                let mut parts: Vec<&str> = Vec::new();
                for p in joined.split('/') {
                    match p {
                        "" | "." => {}
                        ".." => {
                            parts.pop();
                        }
                        p => parts.push(p),
                    }
                }
                rel = parts.join("/");
            }
            Some(_) => return MachineId::Broken("is not a regular file".into()),
        }
    }
    MachineId::Broken("is a symlink loop".into())
}

fn identity_checks(f: &Found) -> Vec<Check> {
    let mut v = Vec::new();
    let list = |name, paths: &[String], bad: &str, good: &str| {
        if paths.is_empty() {
            Check {
                name,
                ok: true,
                detail: good.into(),
                paths: vec![],
            }
        } else {
            let mut paths = paths.to_vec();
            paths.sort();
            Check {
                name,
                ok: false,
                detail: format!("{} {bad}", paths.len()),
                paths,
            }
        }
    };
    v.push(Check {
        name: "curtin",
        ok: f.curtin,
        detail: if f.curtin {
            "./curtin/ present".into()
        } else {
            "no top-level ./curtin/ directory (image-deploy needs it)".into()
        },
        paths: vec![],
    });
    let ok = |detail: String| Check {
        name: "machine-id",
        ok: true,
        detail,
        paths: vec![],
    };
    v.push(match machine_id(f) {
        MachineId::Absent => ok("absent".into()),
        MachineId::Runtime(t) => ok(format!("a symlink to {t}, created at boot")),
        MachineId::Content(c) if c.is_empty() => ok("empty".into()),
        MachineId::Content(c) if c == b"uninitialized\n" || c == b"uninitialized" => {
            ok("uninitialized".into())
        }
        MachineId::Content(c) => Check {
            name: "machine-id",
            ok: false,
            detail: format!(
                "holds an id ({}): every clone would share it",
                escape(c.trim_ascii())
            ),
            paths: vec!["./etc/machine-id".into()],
        },
        MachineId::Broken(why) => Check {
            name: "machine-id",
            ok: false,
            detail: format!("{why}: the clone would have no machine id"),
            paths: vec!["./etc/machine-id".into()],
        },
    });
    let pats = Patterns::new();
    let regular = |rel: &str| match f.items.get(rel) {
        Some((shown, Body::Regular(c))) => Some((shown.clone(), c)),
        _ => None,
    };
    let dbus_ids: Vec<String> = ["var/lib/dbus/machine-id", "etc/dbus-1/machine-id"]
        .iter()
        .filter_map(|r| regular(r))
        .filter(|(_, c)| !c.iter().all(u8::is_ascii_whitespace))
        .map(|(s, _)| s)
        .collect();
    let mut mac_pinned = Vec::new();
    let mut leases = Vec::new();
    for (rel, (shown, body)) in &f.items {
        let Body::Regular(c) = body else { continue };
        if c.is_empty() {
            continue;
        }
        if rel == "etc/udev/rules.d/70-persistent-net.rules"
            || pats.for_path(rel).is_some_and(|re| re.is_match(c))
        {
            mac_pinned.push(shown.clone());
        } else if is_lease(rel) {
            leases.push(shown.clone());
        }
    }
    v.push(list(
        "dbus-machine-id",
        &dbus_ids,
        "regular D-Bus machine id file(s) with an id: systemd would copy it back into /etc/machine-id",
        "not a regular file with an id",
    ));
    let cloud_init = f.regenerators.iter().any(|r| r == "cloud-init") && !f.cloud_init_disabled;
    let regenerator = f
        .regenerators
        .iter()
        .find(|r| *r != "cloud-init" || cloud_init);
    v.push(if !f.ssh_keys.is_empty() && !cloud_init {
        Check {
            name: "ssh-host-keys",
            ok: false,
            detail: format!(
                "{} host key file(s) of the template: clones could impersonate each other",
                f.ssh_keys.len()
            ),
            paths: {
                let mut p = f.ssh_keys.clone();
                p.sort();
                p
            },
        }
    } else if f.ssh_keys.is_empty() && f.sshd && regenerator.is_none() {
        Check {
            name: "ssh-host-keys",
            ok: false,
            detail: "no host keys and nothing regenerates them: sshd will not start".into(),
            paths: vec![],
        }
    } else {
        let detail = match (f.ssh_keys.is_empty(), regenerator) {
            (true, Some(r)) => format!("none; regenerated on first boot by {r}"),
            (true, None) => "none (no sshd)".into(),
            (false, _) => "present, replaced per instance by cloud-init".into(),
        };
        Check {
            name: "ssh-host-keys",
            ok: true,
            detail,
            paths: vec![],
        }
    });
    v.push(list(
        "random-seed",
        &f.seeds,
        "random seed / credential secret file(s) of the template",
        "none",
    ));
    v.push(list(
        "network-mac",
        &mac_pinned,
        "network configuration file(s) pinned to the template's MAC addresses",
        "none",
    ));
    v.push(list(
        "leases",
        &leases,
        "DHCP lease / DUID / NetworkManager secret file(s) of the template",
        "none",
    ));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_text_block_parses() {
        let t = "Image Builder created image information: \n----\n        filename:  x.tgz\n            size:  517036600\n          md5sum:  1f40ac1bac2eb3ea99cebc38b807c15f\n       sha256sum:  ab\n";
        let e = from_text(t).unwrap();
        assert_eq!(
            (e.size, e.md5.as_str(), e.sha256.as_deref()),
            (517_036_600, "1f40ac1bac2eb3ea99cebc38b807c15f", Some("ab"))
        );
        // DRP's own manifest has no sha256.
        assert!(
            from_text("size:  1\nmd5sum:  x\n")
                .unwrap()
                .sha256
                .is_none()
        );
    }

    #[test]
    fn classifies_paths() {
        let p = Patterns::new();
        assert!(
            p.for_path("etc/sysconfig/network-scripts/ifcfg-eth0")
                .unwrap()
                .is_match(b"HWADDR=52:54:00:00:00:01\n")
        );
        assert!(
            !p.for_path("etc/sysconfig/network-scripts/ifcfg-eth0")
                .unwrap()
                .is_match(b"HWADDR=\n")
        );
        assert!(
            p.for_path("etc/sysconfig/network-scripts/route-eth0")
                .is_none()
        );
        assert!(
            p.for_path("etc/netplan/50-cloud-init.yaml")
                .unwrap()
                .is_match(b"      match:\n        macaddress: aa\n")
        );
        assert!(
            p.for_path("etc/systemd/network/10-a.link")
                .unwrap()
                .is_match(b"[Match]\nMACAddress=aa\n")
        );
        assert!(
            p.for_path("etc/systemd/network/10-a.network.d/m.conf")
                .unwrap()
                .is_match(b"MACAddress=aa\n")
        );
        assert!(
            p.for_path("etc/netplan/x.yaml")
                .unwrap()
                .is_match(b"network: {ethernets: {e: {match: {\"macaddress\": 'x'}}}}")
        );
        assert!(
            p.for_path("etc/sysconfig/network/ifcfg-eth0")
                .unwrap()
                .is_match(b"LLADDR='52:54:00:00:00:01'\n")
        );
        assert!(
            p.for_path("etc/network/interfaces")
                .unwrap()
                .is_match(b"iface e inet dhcp\n  hwaddress ether 52:54:00:00:00:01\n")
        );
        for l in [
            "var/lib/dhcp/dhclient.eth0.leases",
            "var/lib/NetworkManager/secret_key",
            "etc/dhcpcd.duid",
            "var/lib/wicked/duid.xml",
        ] {
            assert!(is_lease(l), "{l}");
        }
        assert!(!is_lease("var/lib/dhcp"));
        assert!(!is_lease("var/lib/NetworkManager/NetworkManager.state"));
    }
}
