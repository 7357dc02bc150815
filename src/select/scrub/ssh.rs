//! SSH host keys may only be dropped with a first-boot guarantee.
//!
//! Part of planning. Deleting host keys is safe only if something
//! regenerates them before sshd starts: Fedora/RHEL's
//! `sshd-keygen@.service`, SUSE's `sshd-gen-keys-start`, cloud-init's
//! `cc_ssh`, OpenRC's sshd script. Debian and Ubuntu without cloud-init have
//! none, so sshd would not start. Then goldcap adds, in the stream, a small
//! systemd unit and script that regenerate missing **or empty** keys (a
//! power cut during first boot leaves empty files, which `ssh-keygen -A`
//! skips) and `sync` before sshd. Without systemd nothing can be added and
//! the keys are kept, with a warning.

use super::RootTraits;
use super::firstboot::Job;
use crate::entry::Synthetic;
use crate::source::rootfs::RootFs;

/// What will give the clone new host keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Regenerator {
    /// The image's own mechanism (named).
    Distro(String),
    /// None in the image; goldcap adds its unit.
    Inject,
    /// No sshd in the image: nothing needs keys.
    NoSshd,
    /// None, and no systemd to add one: keys are kept.
    Missing,
}

/// The unit goldcap adds.
pub const UNIT_PATH: &str = "/etc/systemd/system/goldcap-ssh-host-keys.service";
/// The script it runs.
pub const SCRIPT_PATH: &str = "/usr/lib/goldcap/regenerate-ssh-host-keys";

/// The regeneration script. `DIR` defaults to /etc/ssh (tests pass one).
pub const SCRIPT: &str = r#"#!/bin/sh
# Added by goldcap: regenerate SSH host keys that are missing or empty, then
# sync, before sshd starts. An empty key file (left by a power cut during an
# earlier first boot) counts as missing; `ssh-keygen -A` would skip it.
# Usage: regenerate-ssh-host-keys [DIR]   (default /etc/ssh)
set -u
dir=${1:-/etc/ssh}
changed=0
for type in rsa ecdsa ed25519; do
    key="$dir/ssh_host_${type}_key"
    if [ ! -s "$key" ] || [ ! -s "$key.pub" ]; then
        rm -f "$key" "$key.pub"
        ssh-keygen -q -t "$type" -N '' -C '' -f "$key" || exit 1
        changed=1
    fi
done
if [ "$changed" = 1 ]; then
    sync
fi
exit 0
"#;

/// The unit goldcap adds. `after_distro`: the image has its own
/// regenerator (`sshd-keygen@`), so this one runs after it and only fills
/// what is still missing. Otherwise it runs early, without default
/// dependencies (which order a service after `basic.target`, itself after
/// `sockets.target` — with `Before=ssh.socket` that is an ordering cycle), so
/// it precedes socket-activated sshd (Ubuntu's `ssh.socket`, Debian's
/// `Accept=yes` instances) as well as `ssh.service`.
pub fn unit(after_distro: bool) -> String {
    let order = if after_distro {
        "After=sshd-keygen.target\nBefore=sshd.service ssh.service\n"
    } else {
        "DefaultDependencies=no\nAfter=local-fs.target\n\
         Before=ssh.socket sshd.socket ssh.service sshd.service sockets.target shutdown.target\n\
         Conflicts=shutdown.target\n"
    };
    format!(
        "[Unit]\nDescription=Regenerate missing or empty SSH host keys (added by goldcap)\n{order}\
         ConditionPathExists={SCRIPT_PATH}\n\n[Service]\nType=oneshot\nExecStart={SCRIPT_PATH}\nRemainAfterExit=yes\n\n\
         [Install]\nWantedBy=multi-user.target\n"
    )
}

/// Finds what regenerates host keys in the root.
pub fn detect(root: &RootFs, traits: &RootTraits) -> Regenerator {
    let unit_dirs = [
        "/etc/systemd/system",
        "/usr/lib/systemd/system",
        "/lib/systemd/system",
    ];
    for unit in ["sshd-keygen@.service", "sshd-keygen.service"] {
        // The first unit file found wins, as systemd reads them; a mask
        // (a link to /dev/null, or an empty file) means no regenerator.
        let found = unit_dirs.iter().find_map(|d| {
            let p = format!("{d}/{unit}");
            root.exists(&p).then(|| root.resolve(&p).ok()).flatten()
        });
        if let Some(host) = found
            && std::fs::metadata(&host).is_ok_and(|m| m.is_file() && m.len() > 0)
        {
            return Regenerator::Distro(unit.to_owned());
        }
    }
    if [
        "/usr/sbin/sshd-gen-keys-start",
        "/usr/lib/ssh/sshd-gen-keys-start",
    ]
    .iter()
    .any(|p| root.exists(p))
    {
        return Regenerator::Distro("sshd-gen-keys-start".into());
    }
    if root.exists("/usr/bin/cloud-init") && !root.exists("/etc/cloud/cloud-init.disabled") {
        return Regenerator::Distro("cloud-init (cc_ssh)".into());
    }
    if let Ok(Some(script)) = root.read("/etc/init.d/sshd", 1 << 20)
        && traits.init == "openrc"
        && script.windows(10).any(|w| w == b"ssh-keygen")
    {
        return Regenerator::Distro("the OpenRC sshd script".into());
    }
    if !has_sshd(root) {
        return Regenerator::NoSshd;
    }
    if traits.init == "systemd" {
        Regenerator::Inject
    } else {
        Regenerator::Missing
    }
}

/// Whether the root holds SSH host keys (`/etc/ssh/ssh_host_*`).
pub fn has_host_keys(root: &RootFs) -> bool {
    root.list("/etc/ssh")
        .iter()
        .any(|n| n.as_encoded_bytes().starts_with(b"ssh_host_"))
}

/// Whether the root has an OpenSSH server.
pub fn has_sshd(root: &RootFs) -> bool {
    ["/usr/sbin/sshd", "/usr/bin/sshd", "/sbin/sshd"]
        .iter()
        .any(|p| root.exists(p))
}

/// goldcap's job: the script, the unit, its enablement.
pub fn job(after_distro: bool) -> Job {
    Job {
        op: "ssh-hostkeys",
        unit_name: "goldcap-ssh-host-keys.service",
        unit: unit(after_distro),
        script_path: SCRIPT_PATH,
        script: SCRIPT,
        wanted_by: "multi-user.target",
    }
}

/// The entries goldcap adds: script, unit, and its enablement.
pub fn synthetic(mtime: i64, after_distro: bool) -> Vec<Synthetic> {
    job(after_distro).synthetic(mtime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::SynthKind;
    use std::fs;

    fn root_with(files: &[&str]) -> (tempfile::TempDir, RootFs) {
        let t = tempfile::tempdir().unwrap();
        for f in files {
            // A trailing '!' makes an empty file (a mask).
            let (f, empty) = f.strip_suffix('!').map_or((*f, false), |f| (f, true));
            let p = t.path().join(f.trim_start_matches('/'));
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, if empty { "" } else { "x ssh-keygen -A" }).unwrap();
        }
        let r = RootFs::new(t.path());
        (t, r)
    }

    fn traits(init: &str) -> RootTraits {
        RootTraits {
            init: init.into(),
            ..Default::default()
        }
    }

    #[test]
    fn detection_table() {
        let rows: &[(&[&str], &str, Regenerator)] = &[
            (
                &[
                    "/usr/lib/systemd/system/sshd-keygen@.service",
                    "/usr/sbin/sshd",
                ],
                "systemd",
                Regenerator::Distro("sshd-keygen@.service".into()),
            ),
            // Masked: an empty override in /etc.
            (
                &[
                    "/usr/lib/systemd/system/sshd-keygen@.service",
                    "/etc/systemd/system/sshd-keygen@.service!",
                    "/usr/sbin/sshd",
                ],
                "systemd",
                Regenerator::Inject,
            ),
            (
                &["/usr/sbin/sshd-gen-keys-start", "/usr/sbin/sshd"],
                "systemd",
                Regenerator::Distro("sshd-gen-keys-start".into()),
            ),
            (
                &["/usr/bin/cloud-init", "/usr/sbin/sshd"],
                "systemd",
                Regenerator::Distro("cloud-init (cc_ssh)".into()),
            ),
            (
                &[
                    "/usr/bin/cloud-init",
                    "/etc/cloud/cloud-init.disabled",
                    "/usr/sbin/sshd",
                ],
                "systemd",
                Regenerator::Inject,
            ),
            (
                &["/etc/init.d/sshd", "/usr/sbin/sshd"],
                "openrc",
                Regenerator::Distro("the OpenRC sshd script".into()),
            ),
            (&["/usr/sbin/sshd"], "systemd", Regenerator::Inject),
            (&["/usr/sbin/sshd"], "unknown", Regenerator::Missing),
            (&[], "systemd", Regenerator::NoSshd),
        ];
        for (files, init, want) in rows {
            let (_t, r) = root_with(files);
            assert_eq!(detect(&r, &traits(init)), *want, "{files:?} {init}");
        }
    }

    #[test]
    fn script_regenerates_missing_and_empty_keys() {
        if std::process::Command::new("ssh-keygen")
            .arg("-?")
            .output()
            .is_err()
        {
            panic!("ssh-keygen is missing: run scripts/install-deps");
        }
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        let script = d.join("regen");
        fs::write(&script, SCRIPT).unwrap();
        // rsa: empty files (power cut); ecdsa: missing; ed25519: present.
        fs::write(d.join("ssh_host_rsa_key"), "").unwrap();
        fs::write(d.join("ssh_host_rsa_key.pub"), "").unwrap();
        let st = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(d.join("ssh_host_ed25519_key"))
            .status()
            .unwrap();
        assert!(st.success());
        let kept = fs::read(d.join("ssh_host_ed25519_key")).unwrap();
        let st = std::process::Command::new("sh")
            .arg(&script)
            .arg(d)
            .status()
            .unwrap();
        assert!(st.success());
        for t in ["rsa", "ecdsa", "ed25519"] {
            let key = fs::read_to_string(d.join(format!("ssh_host_{t}_key"))).unwrap();
            assert!(key.contains("PRIVATE KEY"), "{t} key not generated");
            assert!(
                !fs::read(d.join(format!("ssh_host_{t}_key.pub")))
                    .unwrap()
                    .is_empty()
            );
        }
        assert_eq!(
            fs::read(d.join("ssh_host_ed25519_key")).unwrap(),
            kept,
            "a good key is left alone"
        );
    }

    #[test]
    fn unit_orders_before_sshd_and_is_enabled() {
        assert!(
            unit(false)
                .contains("Before=ssh.socket sshd.socket ssh.service sshd.service sockets.target")
        );
        assert!(unit(false).contains("DefaultDependencies=no"));
        assert!(unit(true).contains("After=sshd-keygen.target"));
        assert!(unit(true).contains(&format!("ExecStart={SCRIPT_PATH}")));
        let s = synthetic(0, false);
        assert!(s.iter().any(|e| {
            e.rel
                .ends_with(b"multi-user.target.wants/goldcap-ssh-host-keys.service")
                && e.kind == SynthKind::Symlink(UNIT_PATH.as_bytes().to_vec())
        }));
    }
}
