//! First-boot work carried into the image: `--firstboot SCRIPT` and
//! `--hostname NAME|TEMPLATE`.
//!
//! Before the pipeline: the scripts are read from the host and become
//! entries of the archive only, with a systemd unit that runs them once on
//! each clone's first boot, in order, after the network is up, logging to
//! the journal (and the console), then disables itself and leaves a stamp
//! (`/var/lib/goldcap/firstboot.done`). A hostname template (`web-{mac}`)
//! is set by a unit of its own early on first boot, before the network, so
//! DHCP sends it; a plain name is written to `/etc/hostname`. Both need
//! systemd in the image. Pure but for reading the scripts; it must never
//! touch the root.

use crate::entry::{SynthKind, Synthetic};
use std::io::Read;
use std::path::PathBuf;

/// Where the scripts go, run in name order.
pub const SCRIPT_DIR: &str = "usr/lib/goldcap/firstboot";
/// The runner.
pub const RUNNER: &str = "usr/lib/goldcap/firstboot-run";
/// The unit.
pub const UNIT: &str = "etc/systemd/system/goldcap-firstboot.service";
/// Its enablement.
pub const WANTS: &str = "etc/systemd/system/multi-user.target.wants/goldcap-firstboot.service";
/// Written when the scripts have run: they never run again.
pub const STAMP: &str = "var/lib/goldcap/firstboot.done";
/// The hostname unit and its script.
pub const HOSTNAME_UNIT: &str = "etc/systemd/system/goldcap-hostname.service";
pub const HOSTNAME_WANTS: &str = "etc/systemd/system/sysinit.target.wants/goldcap-hostname.service";
pub const HOSTNAME_SCRIPT: &str = "usr/lib/goldcap/set-hostname";

/// The largest first-boot script read.
const SCRIPT_LIMIT: u64 = 16 << 20;

const RUNNER_SCRIPT: &str = r#"#!/bin/sh
# Added by goldcap: runs this image's first-boot scripts once, in name order,
# then disables itself. Output goes to the journal (goldcap-firstboot.service).
dir=/usr/lib/goldcap/firstboot
stamp=/var/lib/goldcap/firstboot.done
status=0
for s in "$dir"/*; do
    [ -f "$s" ] && [ -x "$s" ] || continue
    name=${s##*/}
    echo "goldcap-firstboot: running $name"
    if "$s"; then
        echo "goldcap-firstboot: $name done"
    else
        rc=$?
        echo "goldcap-firstboot: $name failed with status $rc"
        status=1
    fi
done
mkdir -p "${stamp%/*}"
date -u +%Y-%m-%dT%H:%M:%SZ > "$stamp"
sync
systemctl disable goldcap-firstboot.service >/dev/null 2>&1 || true
exit $status
"#;

const UNIT_TEXT: &str = "# Added by goldcap: this image's first-boot scripts, once per clone.
[Unit]
Description=goldcap first-boot scripts (once on each clone)
Wants=network-online.target
After=network-online.target
ConditionPathExists=!/var/lib/goldcap/firstboot.done

[Service]
Type=oneshot
ExecStart=/usr/lib/goldcap/firstboot-run
RemainAfterExit=yes
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
";

const HOSTNAME_UNIT_TEXT: &str =
    "# Added by goldcap: the clone's hostname from a template, on first boot.
[Unit]
Description=goldcap hostname from a template (first boot)
DefaultDependencies=no
After=systemd-remount-fs.service systemd-udev-trigger.service
Before=network-pre.target systemd-hostnamed.service
Wants=network-pre.target
ConditionFileNotEmpty=!/etc/hostname

[Service]
Type=oneshot
ExecStart=/usr/lib/goldcap/set-hostname
RemainAfterExit=yes

[Install]
WantedBy=sysinit.target
";

/// A hostname for the clones: literal, or a template set on first boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hostname {
    Literal(String),
    /// With `{mac}`, `{mac6}`, `{serial}` or `{machine-id}` placeholders.
    Template(String),
}

/// Checks `--hostname`: a hostname (labels of letters, digits and `-`, at
/// most 63 characters each, 253 in all) or such a template.
pub fn parse_hostname(v: &str) -> Result<Hostname, String> {
    const PLACEHOLDERS: &[&str] = &["{mac}", "{mac6}", "{serial}", "{machine-id}"];
    let mut plain = v.to_owned();
    for p in PLACEHOLDERS {
        plain = plain.replace(p, "x");
    }
    let ok_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if plain.contains(['{', '}']) {
        return Err(format!(
            "{v:?}: unknown placeholder (known: {})",
            PLACEHOLDERS.join(" ")
        ));
    }
    if plain.len() > 253 || !plain.split('.').all(ok_label) {
        return Err(format!(
            "{v:?} is not a hostname (letters, digits and '-' in dot-separated labels)"
        ));
    }
    Ok(if plain == v {
        Hostname::Literal(v.to_owned())
    } else {
        Hostname::Template(v.to_owned())
    })
}

/// The set-hostname script for a template.
fn hostname_script(template: &str) -> String {
    format!(
        r#"#!/bin/sh
# Added by goldcap: sets this clone's hostname from the template
# {template:?} on its first boot (when /etc/hostname is empty).
mac=
for i in 1 2 3 4 5 6 7 8 9 10; do
    for n in /sys/class/net/*; do
        [ -e "$n/device" ] || continue
        mac=$(tr -d ':' < "$n/address")
        break
    done
    [ -n "$mac" ] && break
    sleep 1
done
serial=$(cat /sys/class/dmi/id/product_serial 2>/dev/null | tr -cd 'A-Za-z0-9-' | tr 'A-Z' 'a-z')
mid=$(cut -c1-8 /etc/machine-id 2>/dev/null)
name='{template}'
mac6=$(printf %s "$mac" | tail -c 6)
name=$(printf %s "$name" | sed -e "s/{{mac}}/$mac/g" -e "s/{{mac6}}/$mac6/g" \
    -e "s/{{serial}}/${{serial:-noserial}}/g" -e "s/{{machine-id}}/$mid/g")
echo "$name" > /etc/hostname
hostname "$name"
echo "goldcap: hostname set to $name"
"#
    )
}

fn file(rel: &str, content: Vec<u8>, mode: u32, mtime: i64) -> Synthetic {
    Synthetic {
        rel: rel.as_bytes().to_vec(),
        kind: SynthKind::File(content),
        mode,
        uid: 0,
        gid: 0,
        mtime,
        replace: true,
        op: None,
    }
}

fn link(rel: &str, target: &str, mtime: i64) -> Synthetic {
    Synthetic {
        rel: rel.as_bytes().to_vec(),
        kind: SynthKind::Symlink(target.as_bytes().to_vec()),
        mode: 0o777,
        uid: 0,
        gid: 0,
        mtime,
        replace: true,
        op: None,
    }
}

/// The entries for `scripts` (host paths, run in this order): each script
/// as `NN-name`, the runner, the unit and its enablement.
pub fn firstboot_entries(scripts: &[PathBuf], mtime: i64) -> Result<Vec<Synthetic>, String> {
    let mut out = Vec::new();
    for (i, p) in scripts.iter().enumerate() {
        let err = |e: std::io::Error| format!("{}: {}", p.display(), crate::util::io_reason(&e));
        let f = crate::input::open(p).map_err(err)?;
        let mut v = Vec::new();
        f.take(SCRIPT_LIMIT + 1).read_to_end(&mut v).map_err(err)?;
        if v.len() as u64 > SCRIPT_LIMIT {
            return Err(format!(
                "{}: larger than {} MiB",
                p.display(),
                SCRIPT_LIMIT >> 20
            ));
        }
        if !v.starts_with(b"#!") {
            return Err(format!(
                "{}: a first-boot script must start with #! (its interpreter in the image)",
                p.display()
            ));
        }
        let base: String = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let name = format!("{SCRIPT_DIR}/{:02}-{base}", (i + 1) * 10);
        out.push(file(&name, v, 0o755, mtime));
    }
    out.push(file(
        RUNNER,
        RUNNER_SCRIPT.as_bytes().to_vec(),
        0o755,
        mtime,
    ));
    out.push(file(UNIT, UNIT_TEXT.as_bytes().to_vec(), 0o644, mtime));
    out.push(link(
        WANTS,
        "/etc/systemd/system/goldcap-firstboot.service",
        mtime,
    ));
    Ok(out)
}

/// The entries for `--hostname`.
pub fn hostname_entries(h: &Hostname, mtime: i64) -> Vec<Synthetic> {
    match h {
        Hostname::Literal(n) => vec![file(
            "etc/hostname",
            format!("{n}\n").into_bytes(),
            0o644,
            mtime,
        )],
        Hostname::Template(t) => vec![
            file(
                HOSTNAME_SCRIPT,
                hostname_script(t).into_bytes(),
                0o755,
                mtime,
            ),
            file(
                HOSTNAME_UNIT,
                HOSTNAME_UNIT_TEXT.as_bytes().to_vec(),
                0o644,
                mtime,
            ),
            link(
                HOSTNAME_WANTS,
                "/etc/systemd/system/goldcap-hostname.service",
                mtime,
            ),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_table() {
        assert_eq!(
            parse_hostname("web-01.example.com"),
            Ok(Hostname::Literal("web-01.example.com".into()))
        );
        assert_eq!(
            parse_hostname("web-{mac6}"),
            Ok(Hostname::Template("web-{mac6}".into()))
        );
        for bad in [
            "", "-web", "web-", "a..b", "we b", "web_1", "{nope}", "x{mac",
        ] {
            assert!(parse_hostname(bad).is_err(), "{bad:?}");
        }
        assert!(parse_hostname(&"a".repeat(64)).is_err());
    }

    #[test]
    fn the_template_script_fills_placeholders() {
        let t = tempfile::tempdir().unwrap();
        let s = hostname_script("web-{mac6}-{serial}");
        // The substitution part, with the values a machine would give.
        let body: String = s
            .lines()
            .skip_while(|l| !l.starts_with("name="))
            .take_while(|l| !l.starts_with("echo \"$name\" > /etc/hostname"))
            .collect::<Vec<_>>()
            .join("\n");
        let script = format!("mac=525400123456\nserial=abc1\nmid=\n{body}\nprintf %s \"$name\"\n");
        let p = t.path().join("s.sh");
        std::fs::write(&p, script).unwrap();
        let o = std::process::Command::new("sh").arg(&p).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout), "web-123456-abc1");
    }

    /// The units as systemd reads them next to a real unit tree: no
    /// error, no ordering cycle.
    #[test]
    fn units_verify_with_systemd() {
        use std::process::Command;
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        crate::util::copy_host_units(r);
        let script = t.path().join("x.sh");
        std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
        let mut entries = firstboot_entries(&[script], 0).unwrap();
        entries.extend(hostname_entries(
            &Hostname::Template("web-{mac6}".into()),
            0,
        ));
        for e in &entries {
            let p = r.join(std::str::from_utf8(&e.rel).unwrap());
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            match &e.kind {
                SynthKind::File(c) => {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::write(&p, c).unwrap();
                    let mode = std::fs::Permissions::from_mode(e.mode);
                    std::fs::set_permissions(&p, mode).unwrap();
                }
                SynthKind::Symlink(t) => {
                    std::os::unix::fs::symlink(std::str::from_utf8(t).unwrap(), &p).unwrap()
                }
                SynthKind::Dir => std::fs::create_dir_all(&p).unwrap(),
            }
        }
        let o = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(format!("--root={}", r.display()))
            .arg(r.join(UNIT))
            .arg(r.join(HOSTNAME_UNIT))
            .arg(r.join("usr/lib/systemd/system/multi-user.target"))
            .output()
            .expect("systemd-analyze (scripts/install-deps installs systemd)");
        let err = String::from_utf8_lossy(&o.stderr);
        let bad: Vec<&str> = err
            .lines()
            .filter(|l| l.contains("goldcap") || l.contains("cycle"))
            .collect();
        assert!(bad.is_empty(), "{err}");
    }
}
