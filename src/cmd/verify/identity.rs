//! The identity checks of `goldcap verify`: what in an artifact would make
//! every clone the same machine.
//!
//! Part of verify. The archive reader ([`super::read`]) tells [`Found`]
//! about every entry and keeps the few small files these checks read;
//! [`identity_checks`] then judges them: `/etc/machine-id` empty or
//! `uninitialized` (followed through symlinks), the D-Bus id not a regular
//! file with an id, no SSH host keys unless something regenerates them, no
//! random seed or `credential.secret`, no MAC-pinned network configuration,
//! no leases. Pure: it must never do I/O.

use super::Check;
use crate::report::escape::escape;
use regex::bytes::Regex;
use std::collections::BTreeMap;
use tar::EntryType;

/// An entry an identity check reads, as stored.
#[derive(Debug, Clone)]
pub(super) enum Body {
    /// A regular file: its first MiB.
    Regular(Vec<u8>),
    /// A hard link to an earlier entry (root-relative path).
    Link(String),
    /// A symlink, with its target.
    Symlink(Vec<u8>),
    Other,
}

/// What the walk over the archive found.
#[derive(Default)]
pub(super) struct Found {
    curtin: bool,
    /// Entries whose content the identity checks need, by path.
    pub(super) items: BTreeMap<String, (String, Body)>,
    ssh_keys: Vec<String>,
    regenerators: Vec<String>,
    sshd: bool,
    cloud_init_disabled: bool,
    /// cloud-init's per-instance state: with it, a clone is the same
    /// instance to cloud-init, which then keeps the host keys.
    cloud_instance: Vec<String>,
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

pub(super) struct Patterns {
    ifcfg: Regex,
    nm: Regex,
    netplan: Regex,
    networkd: Regex,
    ifupdown: Regex,
}

impl Patterns {
    pub(super) fn new() -> Patterns {
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

/// Whether the identity checks read this entry's content.
fn interesting(rel: &str, pats: &Patterns) -> bool {
    rel.ends_with("machine-id")
        || rel == "etc/udev/rules.d/70-persistent-net.rules"
        || pats.for_path(rel).is_some()
        || is_lease(rel)
}

impl Found {
    /// Notes an entry at `rel` (root-relative; `shown` is its escaped
    /// archive path) of type `et`; whether its content is wanted (then the
    /// reader adds it to [`Found::items`]).
    pub(super) fn note(&mut self, rel: &str, shown: &str, et: EntryType, pats: &Patterns) -> bool {
        if rel == "curtin" && et.is_dir() {
            self.curtin = true;
        }
        if rel.starts_with("etc/ssh/ssh_host_") && !et.is_dir() {
            self.ssh_keys.push(shown.to_owned());
        }
        if let Some((_, what)) = REGENERATORS.iter().find(|(p, _)| *p == rel) {
            self.regenerators.push((*what).to_owned());
        }
        if matches!(rel, "usr/sbin/sshd" | "usr/bin/sshd" | "sbin/sshd") {
            self.sshd = true;
        }
        if rel == "etc/cloud/cloud-init.disabled" {
            self.cloud_init_disabled = true;
        }
        if rel == "var/lib/cloud/instance"
            || rel == "var/lib/cloud/data/instance-id"
            || rel
                .strip_prefix("var/lib/cloud/instances/")
                .is_some_and(|r| !r.is_empty() && !r.contains('/'))
        {
            self.cloud_instance.push(shown.to_owned());
        }
        if SEEDS.contains(&rel) && !et.is_dir() {
            self.seeds.push(shown.to_owned());
        }
        interesting(rel, pats)
    }
}

/// Where following `/etc/machine-id` led.
enum Step {
    Done(MachineId),
    /// To this root-relative path, which the walk did not keep.
    Need(String),
}

/// The most links followed, as the kernel's `ELOOP` limit.
const MAX_LINKS: usize = 40;

/// Follows `/etc/machine-id` through symlinks and hard links inside the
/// archive.
fn follow_machine_id(f: &Found) -> Step {
    let mut rel = "etc/machine-id".to_owned();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..MAX_LINKS {
        if !seen.insert(rel.clone()) {
            return Step::Done(MachineId::Broken(format!(
                "is a symlink loop (through /{rel})"
            )));
        }
        match f.items.get(&rel).map(|(_, b)| b) {
            None if rel == "etc/machine-id" => return Step::Done(MachineId::Absent),
            None if rel.starts_with("run/") => {
                return Step::Done(MachineId::Runtime(format!("/{rel}")));
            }
            None => return Step::Need(rel),
            Some(Body::Regular(c)) => return Step::Done(MachineId::Content(c.clone())),
            Some(Body::Link(t)) => rel = t.clone(),
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
            Some(_) => return Step::Done(MachineId::Broken("is not a regular file".into())),
        }
    }
    Step::Done(MachineId::Broken(format!(
        "leads through more than {MAX_LINKS} links"
    )))
}

/// A path on `/etc/machine-id`'s chain of links that the walk did not
/// keep, for the reader to fetch.
pub(super) fn machine_id_gap(f: &Found) -> Option<String> {
    match follow_machine_id(f) {
        Step::Need(rel) => Some(rel),
        Step::Done(_) => None,
    }
}

/// What `/etc/machine-id` is, once every link on its chain was fetched.
fn machine_id(f: &Found) -> MachineId {
    match follow_machine_id(f) {
        Step::Done(m) => m,
        Step::Need(rel) => {
            MachineId::Broken(format!("is a symlink to /{rel}, which is not in the image"))
        }
    }
}

/// Every identity check, in order.
pub(super) fn identity_checks(f: &Found) -> Vec<Check> {
    let pats = Patterns::new();
    let (mac_pinned, leases) = network_state(f, &pats);
    vec![
        curtin_check(f),
        machine_id_check(f),
        list(
            "dbus-machine-id",
            &dbus_ids(f),
            "regular D-Bus machine id file(s) with an id: systemd would copy it back into /etc/machine-id",
            "not a regular file with an id",
        ),
        ssh_check(f),
        list(
            "random-seed",
            &f.seeds,
            "random seed / credential secret file(s) of the template",
            "none",
        ),
        list(
            "network-mac",
            &mac_pinned,
            "network configuration file(s) pinned to the template's MAC addresses",
            "none",
        ),
        list(
            "leases",
            &leases,
            "DHCP lease / DUID / NetworkManager secret file(s) of the template",
            "none",
        ),
    ]
}

fn check(name: &'static str, ok: bool, detail: impl Into<String>, paths: Vec<String>) -> Check {
    Check {
        name,
        ok,
        detail: detail.into(),
        paths,
    }
}

/// Passes when `paths` is empty; otherwise fails, listing them sorted.
fn list(name: &'static str, paths: &[String], bad: &str, good: &str) -> Check {
    if paths.is_empty() {
        return check(name, true, good, vec![]);
    }
    let mut paths = paths.to_vec();
    paths.sort();
    check(name, false, format!("{} {bad}", paths.len()), paths)
}

fn curtin_check(f: &Found) -> Check {
    if f.curtin {
        check("curtin", true, "./curtin/ present", vec![])
    } else {
        check(
            "curtin",
            false,
            "no top-level ./curtin/ directory (image-deploy needs it)",
            vec![],
        )
    }
}

fn machine_id_check(f: &Found) -> Check {
    let ok = |detail: String| check("machine-id", true, detail, vec![]);
    let bad = |detail: String| check("machine-id", false, detail, vec!["./etc/machine-id".into()]);
    match machine_id(f) {
        MachineId::Absent => ok("absent".into()),
        MachineId::Runtime(t) => ok(format!("a symlink to {t}, created at boot")),
        MachineId::Content(c) if c.is_empty() => ok("empty".into()),
        MachineId::Content(c) if c == b"uninitialized\n" || c == b"uninitialized" => {
            ok("uninitialized".into())
        }
        MachineId::Content(c) => bad(format!(
            "holds an id ({}): every clone would share it",
            // An id is 32 characters; a hostile one is clipped.
            crate::input::clip(&escape(c.trim_ascii()), 64)
        )),
        MachineId::Broken(why) => bad(format!("{why}: the clone would have no machine id")),
    }
}

/// D-Bus machine id files that are regular files with an id in them.
fn dbus_ids(f: &Found) -> Vec<String> {
    ["var/lib/dbus/machine-id", "etc/dbus-1/machine-id"]
        .iter()
        .filter_map(|r| match f.items.get(*r) {
            Some((shown, Body::Regular(c))) if !c.iter().all(u8::is_ascii_whitespace) => {
                Some(shown.clone())
            }
            _ => None,
        })
        .collect()
}

/// Network configuration pinned to MAC addresses, and DHCP leases.
fn network_state(f: &Found, pats: &Patterns) -> (Vec<String>, Vec<String>) {
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
    (mac_pinned, leases)
}

/// SSH host keys: none of the template's, unless cloud-init replaces them
/// per instance — which it does only on a new instance, so not when the
/// archive holds its instance state —; and without them, something that
/// regenerates them.
fn ssh_check(f: &Found) -> Check {
    let cloud_init = f.regenerators.iter().any(|r| r == "cloud-init") && !f.cloud_init_disabled;
    if !f.ssh_keys.is_empty() && cloud_init && !f.cloud_instance.is_empty() {
        let mut paths = f.ssh_keys.clone();
        paths.sort();
        paths.extend(f.cloud_instance.iter().cloned());
        return check(
            "ssh-host-keys",
            false,
            format!(
                "{} host key file(s) of the template, and cloud-init's instance state: to \
                 cloud-init a clone is the same instance, so it keeps them",
                f.ssh_keys.len()
            ),
            paths,
        );
    }
    let regenerator = f
        .regenerators
        .iter()
        .find(|r| *r != "cloud-init" || cloud_init);
    if !f.ssh_keys.is_empty() && !cloud_init {
        let mut paths = f.ssh_keys.clone();
        paths.sort();
        return check(
            "ssh-host-keys",
            false,
            format!(
                "{} host key file(s) of the template: clones could impersonate each other",
                f.ssh_keys.len()
            ),
            paths,
        );
    }
    if f.ssh_keys.is_empty() && f.sshd && regenerator.is_none() {
        return check(
            "ssh-host-keys",
            false,
            "no host keys and nothing regenerates them: sshd will not start",
            vec![],
        );
    }
    let detail = match (f.ssh_keys.is_empty(), regenerator) {
        (true, Some(r)) => format!("none; regenerated on first boot by {r}"),
        (true, None) => "none (no sshd)".into(),
        (false, _) => "present, replaced per instance by cloud-init".into(),
    };
    check("ssh-host-keys", true, detail, vec![])
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// cloud-init replaces host keys only on a new instance: an archive
    /// that carries its instance state is no excuse for kept keys.
    #[test]
    fn cloud_init_excuses_kept_keys_only_without_its_instance_state() {
        let pats = Patterns::new();
        let mut f = Found::default();
        for rel in [
            "usr/bin/cloud-init",
            "usr/sbin/sshd",
            "etc/ssh/ssh_host_ed25519_key",
        ] {
            f.note(rel, &format!("./{rel}"), EntryType::Regular, &pats);
        }
        let c = ssh_check(&f);
        assert!(c.ok, "{}", c.detail);
        for (rel, et) in [
            ("var/lib/cloud/instances/iid-1", EntryType::Directory),
            ("var/lib/cloud/instances/iid-1/sem", EntryType::Directory),
            ("var/lib/cloud/instance", EntryType::Symlink),
        ] {
            f.note(rel, &format!("./{rel}"), et, &pats);
        }
        let c = ssh_check(&f);
        assert!(!c.ok);
        assert_eq!(
            c.paths,
            [
                "./etc/ssh/ssh_host_ed25519_key",
                "./var/lib/cloud/instances/iid-1",
                "./var/lib/cloud/instance"
            ]
        );
        // cloud-init switched off excuses nothing either.
        let mut g = Found::default();
        for rel in [
            "usr/bin/cloud-init",
            "etc/cloud/cloud-init.disabled",
            "etc/ssh/ssh_host_rsa_key",
        ] {
            g.note(rel, &format!("./{rel}"), EntryType::Regular, &pats);
        }
        assert!(!ssh_check(&g).ok);
    }
}
