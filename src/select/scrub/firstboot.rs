//! First-boot jobs goldcap adds beside what it removes: a POSIX sh script
//! and a systemd unit that runs it, enabled — the snakeoil certificate,
//! `/etc/mailname` and swap files (the SSH host-key job is [`super::ssh`]'s).
//!
//! Part of planning: a [`Job`] becomes [`Synthetic`] entries, added in the
//! stream and in place like any other. The rule for all of them: nothing
//! is removed that a clone needs unless something recreates it before the
//! services that use it start. Each script is idempotent — it does nothing
//! when the thing exists and is not empty (an empty file, left by a power
//! cut during an earlier first boot, counts as missing), writes under a
//! temporary name and renames, and syncs. Units exist only on systemd
//! roots; the plan checks that. Pure: texts and entries, no I/O.

use crate::entry::{SynthKind, Synthetic};

/// Where goldcap's scripts live in the image.
pub const SCRIPT_DIR: &str = "/usr/lib/goldcap";

/// A first-boot job: a script, a unit that runs it, the target that wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The scrub operation it serves (named in the report).
    pub op: &'static str,
    /// The unit's file name (`goldcap-….service`).
    pub unit_name: &'static str,
    /// The unit's text.
    pub unit: String,
    /// The script's path in the image, and its text.
    pub script_path: &'static str,
    pub script: &'static str,
    /// The target whose `.wants` directory enables the unit.
    pub wanted_by: &'static str,
}

impl Job {
    /// `/etc/systemd/system/<unit>`.
    pub fn unit_path(&self) -> String {
        format!("/etc/systemd/system/{}", self.unit_name)
    }

    /// The entries that put the job into an image: script, unit, enablement.
    pub fn synthetic(&self, mtime: i64) -> Vec<Synthetic> {
        let entry = |rel: String, kind: SynthKind, mode: u32, replace: bool| Synthetic {
            rel: rel.trim_start_matches('/').as_bytes().to_vec(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime,
            replace,
            op: Some(self.op.to_owned()),
        };
        let wants = format!("/etc/systemd/system/{}.wants", self.wanted_by);
        vec![
            entry(SCRIPT_DIR.into(), SynthKind::Dir, 0o755, false),
            entry(
                self.script_path.into(),
                SynthKind::File(self.script.as_bytes().to_vec()),
                0o755,
                true,
            ),
            entry(
                self.unit_path(),
                SynthKind::File(self.unit.clone().into_bytes()),
                0o644,
                true,
            ),
            entry(wants.clone(), SynthKind::Dir, 0o755, false),
            entry(
                format!("{wants}/{}", self.unit_name),
                SynthKind::Symlink(self.unit_path().into_bytes()),
                0o777,
                true,
            ),
        ]
    }
}

/// The snakeoil regenerator's script.
pub const SNAKEOIL_SCRIPT_PATH: &str = "/usr/lib/goldcap/regenerate-ssl-snakeoil";

/// Regenerates Debian's snakeoil pair with the distribution's own tool when
/// either file is missing or empty. `make-ssl-cert` names the certificate
/// after `hostname -f` at that moment and links it into the hash directory.
pub const SNAKEOIL_SCRIPT: &str = r#"#!/bin/sh
# Added by goldcap: the image left out the template's snakeoil key and
# certificate (every clone would have shared them). Make this machine's own
# with Debian's make-ssl-cert when either is missing or empty, then sync.
set -u
key=/etc/ssl/private/ssl-cert-snakeoil.key
pem=/etc/ssl/certs/ssl-cert-snakeoil.pem
if [ -s "$key" ] && [ -s "$pem" ]; then
    exit 0
fi
DEBIAN_FRONTEND=noninteractive make-ssl-cert generate-default-snakeoil --force-overwrite || exit 1
sync
exit 0
"#;

/// Runs early, without default dependencies (which would order it after
/// `basic.target`), before `sockets.target`: so before every service and
/// socket-activated daemon that serves the snakeoil certificate (postfix,
/// dovecot, apache, nginx, PostgreSQL), after local filesystems (debconf
/// and `/tmp` are on them).
pub fn snakeoil() -> Job {
    Job {
        op: "ssl-snakeoil",
        unit_name: "goldcap-ssl-snakeoil.service",
        unit: format!(
            "[Unit]\nDescription=Regenerate the missing snakeoil TLS key and certificate (added by goldcap)\n\
             DefaultDependencies=no\nAfter=local-fs.target\nBefore=sockets.target basic.target shutdown.target\n\
             Conflicts=shutdown.target\nConditionPathExists={SNAKEOIL_SCRIPT_PATH}\n\n\
             [Service]\nType=oneshot\nExecStart={SNAKEOIL_SCRIPT_PATH}\nRemainAfterExit=yes\n\n\
             [Install]\nWantedBy=multi-user.target\n"
        ),
        script_path: SNAKEOIL_SCRIPT_PATH,
        script: SNAKEOIL_SCRIPT,
        wanted_by: "multi-user.target",
    }
}

/// The mailname writer's script.
pub const MAILNAME_SCRIPT_PATH: &str = "/usr/lib/goldcap/write-mailname";

/// Writes this machine's fully qualified name (its short name without one)
/// to `/etc/mailname` when that is missing or empty.
pub const MAILNAME_SCRIPT: &str = r#"#!/bin/sh
# Added by goldcap: the image left out the template's /etc/mailname. Debian's
# postfix reads it as myorigin and does not start without it: write this
# machine's name there when it is missing or empty, then sync.
# Usage: write-mailname [FILE]   (default /etc/mailname)
set -u
file=${1:-/etc/mailname}
if [ -s "$file" ]; then
    exit 0
fi
name=$(hostname --fqdn 2>/dev/null) || name=
case "$name" in
    '' | localhost | localhost.*) name=$(hostname 2>/dev/null) || name= ;;
esac
[ -n "$name" ] || exit 1
tmp="$file.goldcap-tmp"
if printf '%s\n' "$name" > "$tmp" && chmod 644 "$tmp" && mv -f "$tmp" "$file"; then
    sync
    exit 0
fi
rm -f "$tmp"
exit 1
"#;

/// After the network (the clone's name comes from DHCP or cloud-init, as
/// postfix's own unit waits for), before the mail servers that read it.
pub fn mailname() -> Job {
    Job {
        op: "mailname",
        unit_name: "goldcap-mailname.service",
        unit: format!(
            "[Unit]\nDescription=Write the missing /etc/mailname from this machine's name (added by goldcap)\n\
             After=network-online.target nss-lookup.target\n\
             Before=postfix.service postfix@-.service exim4.service\n\
             ConditionPathExists={MAILNAME_SCRIPT_PATH}\n\n\
             [Service]\nType=oneshot\nExecStart={MAILNAME_SCRIPT_PATH}\nRemainAfterExit=yes\n\n\
             [Install]\nWantedBy=multi-user.target\n"
        ),
        script_path: MAILNAME_SCRIPT_PATH,
        script: MAILNAME_SCRIPT,
        wanted_by: "multi-user.target",
    }
}

/// The swap-file script.
pub const SWAP_SCRIPT_PATH: &str = "/usr/lib/goldcap/create-swap-file";
/// Its unit.
pub const SWAP_UNIT_PATH: &str = "/etc/systemd/system/goldcap-swap-files.service";

/// Creates a swap file of a size when it is missing or empty, as curtin
/// does: no copy-on-write (btrfs), zeros written (a preallocated or sparse
/// file is refused by swapon on some filesystems), mode 600, mkswap.
pub const SWAP_SCRIPT: &str = r#"#!/bin/sh
# Added by goldcap: the image left out the template's swap file (it held the
# template's memory) and kept its fstab line. Create it again, empty, when it
# is missing or empty, before swap is enabled.
# Usage: create-swap-file FILE BYTES
set -u
if [ "$#" -ne 2 ]; then
    echo "usage: create-swap-file FILE BYTES" >&2
    exit 2
fi
file=$1
bytes=$2
if [ -s "$file" ]; then
    exit 0
fi
mib=$(( (bytes + 1048575) / 1048576 ))
tmp="$file.goldcap-tmp"
rm -f "$file" "$tmp"
umask 077
if : > "$tmp" \
    && { chattr +C "$tmp" 2>/dev/null || true; } \
    && dd if=/dev/zero of="$tmp" bs=1048576 count="$mib" 2>/dev/null \
    && chmod 600 "$tmp" \
    && mkswap "$tmp" >/dev/null \
    && sync && mv -f "$tmp" "$file"; then
    sync
    exit 0
fi
rm -f "$tmp"
exit 1
"#;

/// `systemd-escape --path`: the unit name stem systemd gives a path (the
/// fstab generator names `/swapfile`'s unit `swapfile.swap`).
pub fn escape_path(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        return "-".into();
    }
    let mut out = String::new();
    for (i, b) in parts.join("/").bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || b == b':' || b == b'_' || b == b'.' => {
                out.push(b as char)
            }
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// One word for a unit file, quoted: systemd unquotes `"…"` with C
/// escapes and expands `%` specifiers; command lines (`ExecStart=`) also
/// expand `$` variables.
fn quoted(s: &str, command: bool) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' if command => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Recreates `files` (path, bytes) before their swap units and
/// `swap.target`, after the filesystems holding them are mounted and the
/// root is writable; without default dependencies (swap comes before
/// `sysinit.target`).
pub fn swap(files: &[(String, u64)]) -> Job {
    let mut before = vec!["swap.target".to_owned()];
    let mut mounts = Vec::new();
    let mut exec = String::new();
    for (path, bytes) in files {
        before.push(format!("{}.swap", escape_path(path)));
        if let Some((dir, _)) = path.rsplit_once('/')
            && !dir.is_empty()
            && !mounts.iter().any(|m| m == dir)
        {
            mounts.push(dir.to_owned());
        }
        exec.push_str(&format!(
            "ExecStart={SWAP_SCRIPT_PATH} {} {bytes}\n",
            quoted(path, true)
        ));
    }
    before.push("shutdown.target".into());
    let mounts = if mounts.is_empty() {
        String::new()
    } else {
        let words: Vec<String> = mounts.iter().map(|m| quoted(m, false)).collect();
        format!("RequiresMountsFor={}\n", words.join(" "))
    };
    Job {
        op: "swap-files",
        unit_name: "goldcap-swap-files.service",
        unit: format!(
            "[Unit]\nDescription=Recreate the swap files the image left out (added by goldcap)\n\
             DefaultDependencies=no\n{mounts}After=systemd-remount-fs.service\nBefore={}\n\
             Conflicts=shutdown.target\nConditionPathExists={SWAP_SCRIPT_PATH}\n\n\
             [Service]\nType=oneshot\n{exec}RemainAfterExit=yes\n\n\
             [Install]\nWantedBy=swap.target\n",
            before.join(" ")
        ),
        script_path: SWAP_SCRIPT_PATH,
        script: SWAP_SCRIPT,
        wanted_by: "swap.target",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::process::Command;

    fn sh(script: &str, args: &[&std::ffi::OsStr]) -> std::process::Output {
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("goldcap-test")
            .args(args)
            .output()
            .unwrap()
    }

    #[test]
    fn escape_path_table() {
        // As `systemd-escape --path` prints them.
        for (path, want) in [
            ("/swapfile", "swapfile"),
            ("/swap.img", "swap.img"),
            ("/var/swap file", "var-swap\\x20file"),
            ("/var//lib/swap-1/", "var-lib-swap\\x2d1"),
            ("/.swap", "\\x2eswap"),
            ("/", "-"),
        ] {
            assert_eq!(escape_path(path), want, "{path}");
        }
    }

    #[test]
    fn swap_unit_names_each_file_and_its_size() {
        let j = swap(&[
            ("/swapfile".into(), 1 << 30),
            ("/var/swap file%1".into(), 4096),
        ]);
        assert!(
            j.unit.contains(
                "Before=swap.target swapfile.swap var-swap\\x20file\\x251.swap shutdown.target\n"
            ),
            "{}",
            j.unit
        );
        assert!(
            j.unit
                .contains("ExecStart=/usr/lib/goldcap/create-swap-file \"/swapfile\" 1073741824\n")
        );
        assert!(
            j.unit.contains(
                "ExecStart=/usr/lib/goldcap/create-swap-file \"/var/swap file%%1\" 4096\n"
            )
        );
        assert!(j.unit.contains("RequiresMountsFor=\"/var\"\n"));
        assert!(j.unit.contains("WantedBy=swap.target"));
        let s = j.synthetic(0);
        assert!(s.iter().any(|e| e.rel
            == b"etc/systemd/system/swap.target.wants/goldcap-swap-files.service"
            && e.kind == SynthKind::Symlink(SWAP_UNIT_PATH.as_bytes().to_vec())));
        assert_eq!(j.unit_path(), SWAP_UNIT_PATH);
    }

    #[test]
    fn swap_script_creates_a_swap_file_once() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("swap file");
        // Missing, then empty (a power cut): created with the size, mode
        // 600 and a swap signature.
        for _ in 0..2 {
            let o = sh(SWAP_SCRIPT, &[f.as_os_str(), "3000000".as_ref()]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let m = fs::metadata(&f).unwrap();
            assert_eq!(m.len(), 3 << 20, "rounded up to whole MiB");
            assert_eq!(m.permissions().mode() & 0o777, 0o600);
            let head = fs::read(&f).unwrap();
            assert_eq!(&head[4086..4096], b"SWAPSPACE2");
            fs::write(&f, "").unwrap();
        }
        // An existing file is left alone.
        fs::write(&f, "in use").unwrap();
        let ino = fs::metadata(&f).unwrap().ino();
        let o = sh(SWAP_SCRIPT, &[f.as_os_str(), "3000000".as_ref()]);
        assert!(o.status.success());
        assert_eq!(fs::read(&f).unwrap(), b"in use");
        assert_eq!(fs::metadata(&f).unwrap().ino(), ino);
        assert_eq!(
            fs::read_dir(t.path()).unwrap().count(),
            1,
            "no temporary left"
        );
        // Usage errors and failures leave nothing behind.
        assert_eq!(sh(SWAP_SCRIPT, &[]).status.code(), Some(2));
        let bad = t.path().join("no-such-dir/swap");
        assert!(
            !sh(SWAP_SCRIPT, &[bad.as_os_str(), "4096".as_ref()])
                .status
                .success()
        );
    }

    #[test]
    fn mailname_script_writes_this_machines_name_once() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("mailname");
        let o = sh(MAILNAME_SCRIPT, &[f.as_os_str()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let fqdn = Command::new("hostname").arg("--fqdn").output().unwrap();
        let short = Command::new("hostname").output().unwrap();
        let got = fs::read_to_string(&f).unwrap();
        let fqdn = String::from_utf8_lossy(&fqdn.stdout).trim().to_owned();
        let short = String::from_utf8_lossy(&short.stdout).trim().to_owned();
        let want = if fqdn.is_empty() || fqdn == "localhost" || fqdn.starts_with("localhost.") {
            short
        } else {
            fqdn
        };
        assert_eq!(got, format!("{want}\n"));
        assert_eq!(
            fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o644
        );
        fs::write(&f, "example.com\n").unwrap();
        assert!(sh(MAILNAME_SCRIPT, &[f.as_os_str()]).status.success());
        assert_eq!(fs::read_to_string(&f).unwrap(), "example.com\n");
    }

    #[test]
    fn scripts_are_posix_sh() {
        // dash is Debian's /bin/sh: `-n` parses without running.
        for s in [SNAKEOIL_SCRIPT, MAILNAME_SCRIPT, SWAP_SCRIPT] {
            let o = Command::new("dash").args(["-n", "-c", s]).output().unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            assert!(s.starts_with("#!/bin/sh\n"));
        }
    }

    #[test]
    fn units_run_their_script_and_are_enabled() {
        for j in [snakeoil(), mailname(), swap(&[("/swapfile".into(), 4096)])] {
            assert!(
                j.unit
                    .contains(&format!("ConditionPathExists={}", j.script_path))
            );
            assert!(j.unit.contains(&format!("WantedBy={}", j.wanted_by)));
            assert!(j.unit.contains("Type=oneshot"));
            let s = j.synthetic(7);
            assert!(
                s.iter()
                    .all(|e| e.op.as_deref() == Some(j.op) && e.mtime == 7)
            );
            assert!(s.iter().any(
                |e| e.rel == j.script_path.trim_start_matches('/').as_bytes() && e.mode == 0o755
            ));
        }
        assert!(snakeoil().unit.contains("Before=sockets.target"));
        assert!(
            mailname()
                .unit
                .contains("Before=postfix.service postfix@-.service")
        );
    }
}

#[cfg(test)]
mod systemd_tests {
    //! `systemd-analyze verify` of a boot (multi-user.target) with every
    //! unit goldcap adds enabled beside the services they must precede:
    //! no ordering cycle (systemd would break one by dropping a unit).

    use super::*;
    use crate::select::scrub::ssh;
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::process::Command;

    /// A distribution unit: its file name, its text, and the `.wants`
    /// link that enables it (directory, link name), if any.
    type Unit<'a> = (&'a str, &'a str, Option<(&'a str, &'a str)>);

    fn cycles(jobs: &[Job], units: &[Unit<'_>]) -> String {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        let sys = r.join("usr/lib/systemd/system");
        crate::util::copy_host_units(r);
        let etc = r.join("etc/systemd/system");
        fs::create_dir_all(&etc).unwrap();
        fs::create_dir_all(r.join(SCRIPT_DIR.trim_start_matches('/'))).unwrap();
        let link = |wants: &str, name: &str, target: String| {
            let d = etc.join(format!("{wants}.wants"));
            fs::create_dir_all(&d).unwrap();
            symlink(target, d.join(name)).unwrap();
        };
        for (name, text, enable) in units {
            fs::write(sys.join(name), text).unwrap();
            if let Some((wants, as_name)) = enable {
                link(wants, as_name, format!("/usr/lib/systemd/system/{name}"));
            }
        }
        for j in jobs {
            for s in j.synthetic(0) {
                let p = r.join(std::str::from_utf8(&s.rel).unwrap());
                match s.kind {
                    SynthKind::Dir => fs::create_dir_all(&p).unwrap(),
                    SynthKind::File(c) => fs::write(&p, c).unwrap(),
                    SynthKind::Symlink(t) => symlink(std::str::from_utf8(&t).unwrap(), &p).unwrap(),
                }
            }
        }
        let o = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(format!("--root={}", r.display()))
            .arg(sys.join("multi-user.target"))
            .output()
            .expect("systemd-analyze (scripts/install-deps installs systemd)");
        String::from_utf8_lossy(&o.stderr)
            .lines()
            .filter(|l| l.contains("cycle") || l.contains("deleted"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    const SWAP: Unit<'static> = (
        "swapfile.swap",
        "[Unit]\nSourcePath=/etc/fstab\n[Swap]\nWhat=/swapfile\n",
        Some(("swap.target", "swapfile.swap")),
    );

    /// Debian's postfix units, as packaged in bookworm.
    const POSTFIX: [Unit<'static>; 2] = [
        (
            "postfix.service",
            "[Unit]\nConflicts=sendmail.service exim4.service\nConditionPathExists=/etc/postfix/main.cf\n\
             [Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
            Some(("multi-user.target", "postfix.service")),
        ),
        (
            "postfix@.service",
            "[Unit]\nPartOf=postfix.service\nBefore=postfix.service\nAfter=network-online.target nss-lookup.target\n\
             Wants=network-online.target\n[Service]\nType=forking\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
            Some(("multi-user.target", "postfix@-.service")),
        ),
    ];

    #[test]
    fn no_ordering_cycle_on_debian_with_socket_activated_sshd() {
        let units = [
            (
                "ssh.socket",
                "[Unit]\nBefore=sockets.target ssh.service\n[Socket]\nListenStream=22\n[Install]\nWantedBy=sockets.target\n",
                Some(("sockets.target", "ssh.socket")),
            ),
            (
                "ssh.service",
                "[Unit]\nAfter=network.target auditd.service\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
                Some(("multi-user.target", "ssh.service")),
            ),
            (
                "apache2.service",
                "[Unit]\nAfter=network.target remote-fs.target nss-lookup.target\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
                Some(("multi-user.target", "apache2.service")),
            ),
            (
                "dovecot.socket",
                "[Socket]\nListenStream=143\n[Install]\nWantedBy=sockets.target\n",
                Some(("sockets.target", "dovecot.socket")),
            ),
            POSTFIX[0],
            POSTFIX[1],
            SWAP,
        ];
        let jobs = [
            ssh::job(false),
            snakeoil(),
            mailname(),
            swap(&[("/swapfile".into(), 1 << 20)]),
        ];
        assert_eq!(cycles(&jobs, &units), "");
    }

    #[test]
    fn no_ordering_cycle_after_fedora_keygen() {
        let units = [
            (
                "sshd-keygen@.service",
                "[Unit]\nConditionFileNotEmpty=|!/etc/ssh/ssh_host_%i_key\n[Service]\nType=oneshot\nExecStart=/bin/true\n[Install]\nWantedBy=sshd-keygen.target\n",
                None,
            ),
            (
                "sshd-keygen.target",
                "[Unit]\nWants=sshd-keygen@rsa.service sshd-keygen@ecdsa.service sshd-keygen@ed25519.service\nPartOf=sshd.service\n",
                None,
            ),
            (
                "sshd.service",
                "[Unit]\nAfter=network.target sshd-keygen.target\nWants=sshd-keygen.target\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
                Some(("multi-user.target", "sshd.service")),
            ),
            SWAP,
        ];
        let jobs = [ssh::job(true), swap(&[("/swapfile".into(), 1 << 20)])];
        assert_eq!(cycles(&jobs, &units), "");
    }

    #[test]
    fn the_check_sees_a_cycle() {
        // A unit ordered both before sockets.target and after basic.target:
        // the check must report it, or it proves nothing.
        let bad = Job {
            unit: "[Unit]\nDefaultDependencies=no\nAfter=basic.target\nBefore=sockets.target\n\
                   [Service]\nType=oneshot\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"
                .into(),
            ..snakeoil()
        };
        assert!(cycles(&[bad], &[]).contains("cycle"));
    }
}
