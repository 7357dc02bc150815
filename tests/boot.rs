//! End to end, as a fleet uses goldcap: a bootable Debian 12 template
//! (debootstrap, `tests/boot/make-root.sh`, cached under `target/boot-root`)
//! is captured, the artifact is verified and laid down three times — twice
//! with curtin's tar command, once with `goldcap apply` (named, with an
//! operator's key for root) — and each clone boots under QEMU (TCG) from its
//! own disk and kernel. Each clone must come up as a new machine: its own machine-id
//! (D-Bus's too) and SSH host keys, different from the other clone's and
//! the template's, sshd active and serving exactly the keys on its disk, no
//! failed unit, the system `running`, named by the `--hostname` template
//! (`clone-{mac6}`), and the `--firstboot` script run exactly once; and
//! after a reboot, the same machine-id and keys (they were committed to
//! disk) and the first-boot script not run again. The template is left
//! untouched.
//!
//! A report service, added to each extracted clone only, collects the facts
//! inside the guest once the boot is over, prints them on the serial
//! console between markers and powers off. Minutes long, so `#[ignore]`d:
//! `scripts/test` runs it as its own step.

use crate::common::*;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The clone laid down with `goldcap apply`, and the name it gives it.
const APPLIED: &str = "clone3";
const APPLIED_HOSTNAME: &str = "applied-clone3";

/// The template's hostname (`tests/boot/make-root.sh`).
const TEMPLATE_HOSTNAME: &str = "gold-template";
/// One boot, from power-on to power-off. A boot takes about a minute
/// under TCG on 2 cores; this only bounds a hang.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

const BEGIN: &str = "GOLDCAP-BOOT-REPORT-BEGIN";
const END: &str = "GOLDCAP-BOOT-REPORT-END";

/// The report service: started without holding up the boot (Type=simple),
/// it waits for the boot to finish, writes its report under /run, and only
/// then copies it to the serial console (serial-getty's vhangup would cut
/// off anything written before) and powers off.
const REPORT_UNIT: &str = "\
[Unit]
Description=goldcap boot test: report this boot on the serial console

[Service]
Type=simple
ExecStart=/usr/local/sbin/goldcap-boot-report
";

const REPORT_SCRIPT: &str = r#"#!/bin/sh
# goldcap boot test harness, added to the extracted clone only.
report=/run/goldcap-boot-report
running=$(systemctl is-system-running --wait 2>&1)
{
    echo "system-running $running"
    echo "machine-id $(cat /etc/machine-id)"
    echo "dbus-machine-id $(cat /var/lib/dbus/machine-id 2>&1)"
    echo "hostname $(hostname)"
    echo "ssh-active $(systemctl is-active ssh.service)"
    echo "keygen-unit $(systemctl is-active goldcap-ssh-host-keys.service)"
    echo "firstboot-runs $(cat /var/lib/goldcap-test/firstboot.log 2>/dev/null | wc -l)"
    echo "firstboot-done $(test -f /var/lib/goldcap/firstboot.done && echo yes || echo no)"
    echo "root-ssh $(stat -c '%a %u' /root/.ssh 2>/dev/null || echo none)"
    cut -d' ' -f1,2 /root/.ssh/authorized_keys 2>/dev/null | sed 's/^/authorized /'
    for f in /etc/ssh/ssh_host_*_key.pub; do
        echo "hostkey $(cut -d' ' -f1,2 "$f")"
    done
    ssh-keyscan -t rsa,ecdsa,ed25519 127.0.0.1 2>/dev/null | while read -r _ type key; do
        echo "served $type $key"
    done
    systemctl --failed --no-legend --plain | while read -r unit _; do
        echo "failed $unit"
        journalctl -b -u "$unit" --no-pager -n 15 -o cat | sed 's/^/log /'
    done
    ip -4 -brief address | sed 's/^/address /'
} >"$report" 2>&1
n=$(wc -l <"$report")
{ echo GOLDCAP-BOOT-REPORT-BEGIN; cat "$report"; echo "GOLDCAP-BOOT-REPORT-END $n"; } >/dev/ttyS0
systemctl poweroff
"#;

/// Installs the report service into an extracted clone.
fn inject_harness(clone: &Path) {
    let script = clone.join("usr/local/sbin/goldcap-boot-report");
    fs::create_dir_all(script.parent().unwrap()).unwrap();
    fs::write(&script, REPORT_SCRIPT).unwrap();
    sh(Command::new("chmod").arg("755").arg(&script));
    let units = clone.join("etc/systemd/system");
    fs::write(units.join("goldcap-boot-report.service"), REPORT_UNIT).unwrap();
    let wants = units.join("multi-user.target.wants");
    fs::create_dir_all(&wants).unwrap();
    symlink(
        "/etc/systemd/system/goldcap-boot-report.service",
        wants.join("goldcap-boot-report.service"),
    )
    .unwrap();
}

/// What one boot reported: `key value` lines.
#[derive(Debug)]
struct Report {
    lines: Vec<(String, String)>,
}

impl Report {
    /// The report between the markers of a serial log, if it is complete.
    fn parse(log: &str) -> Result<Report, String> {
        let start = log
            .rfind(BEGIN)
            .ok_or_else(|| format!("no {BEGIN} on the serial console"))?;
        let mut lines = log[start..].lines().map(|l| l.trim_end_matches('\r'));
        lines.next();
        let mut body = Vec::new();
        for l in lines {
            if let Some(n) = l.strip_prefix(END) {
                let n: usize = n.trim().parse().map_err(|_| format!("bad end: {l:?}"))?;
                if n != body.len() {
                    return Err(format!("{n} report lines sent, {} read", body.len()));
                }
                let lines = body
                    .into_iter()
                    .map(|l: &str| {
                        let (k, v) = l.split_once(' ').unwrap_or((l, ""));
                        (k.to_owned(), v.trim().to_owned())
                    })
                    .collect();
                return Ok(Report { lines });
            }
            body.push(l);
        }
        Err(format!("no {END} after {BEGIN}"))
    }

    fn all(&self, key: &str) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn one(&self, key: &str) -> &str {
        match self.all(key)[..] {
            [v] => v,
            ref vs => panic!("report has {} '{key}' lines: {self}", vs.len()),
        }
    }

    /// Host public keys on disk (`type base64`), sorted.
    fn host_keys(&self) -> Vec<String> {
        sorted(self.all("hostkey"))
    }

    /// Host keys sshd serves (ssh-keyscan), sorted.
    fn served_keys(&self) -> Vec<String> {
        sorted(self.all("served"))
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (k, v) in &self.lines {
            writeln!(f, "  {k} {v}")?;
        }
        Ok(())
    }
}

fn sorted(v: Vec<&str>) -> Vec<String> {
    let mut v: Vec<String> = v.into_iter().map(str::to_owned).collect();
    v.sort();
    v
}

/// The last `n` lines of a file, for failure messages.
fn tail(path: &Path, n: usize) -> String {
    let text = String::from_utf8_lossy(&fs::read(path).unwrap_or_default()).replace('\r', "");
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The one file in `dir` whose name starts with `prefix`.
fn only_file(dir: &Path, prefix: &str) -> PathBuf {
    let found: Vec<String> = list_dir(dir)
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect();
    assert_eq!(found.len(), 1, "{prefix}* in {}: {found:?}", dir.display());
    dir.join(&found[0])
}

/// A clone's disk: an ext4 image made from its tree (no loop device).
fn make_disk(tree: &Path, image: &Path) {
    let used_mib: u64 = sh(Command::new("du").args(["-s", "--block-size=1M"]).arg(tree))
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let f = fs::File::create(image).unwrap();
    f.set_len((used_mib + 1536) << 20).unwrap();
    drop(f);
    sh(Command::new("mkfs.ext4")
        .args(["-q", "-L", "clone", "-d"])
        .arg(tree)
        .arg(image));
}

/// Boots `image` with the kernel and initrd of `tree` (the clone's own),
/// the serial console going to `log`, and returns what the guest reported.
fn boot(what: &str, tree: &Path, image: &Path, log: &Path) -> (Report, Duration) {
    let kernel = only_file(&tree.join("boot"), "vmlinuz-");
    let initrd = only_file(&tree.join("boot"), "initrd.img-");
    for p in [image, log] {
        assert!(
            !p.to_string_lossy().contains(','),
            "QEMU option values cannot hold a comma: {}",
            p.display()
        );
    }
    let _ = fs::remove_file(log);
    let qemu_out = log.with_extension("qemu");
    let mut drive = OsString::from("file=");
    drive.push(image);
    drive.push(",format=raw,if=virtio");
    let mut serial = OsString::from("file:");
    serial.push(log);
    eprintln!("boot test: booting {what} (qemu -accel tcg; a minute or two)");
    let start = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-m", "1024", "-smp", "2", "-accel", "tcg"])
        .args(["-display", "none", "-monitor", "none", "-no-reboot"])
        .arg("-serial")
        .arg(&serial)
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "root=/dev/vda ro console=ttyS0"])
        .arg("-drive")
        .arg(&drive)
        .args(["-nic", "user,model=virtio-net-pci"])
        .stdin(Stdio::null())
        .stdout(fs::File::create(&qemu_out).unwrap())
        .stderr(Stdio::from(
            fs::File::options().append(true).open(&qemu_out).unwrap(),
        ))
        .spawn()
        .unwrap_or_else(|e| panic!("qemu-system-x86_64: {e}: run scripts/install-deps"));
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > BOOT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what}: no power-off within {} s; the end of its serial console ({}):\n{}",
                BOOT_TIMEOUT.as_secs(),
                log.display(),
                tail(log, 40)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let took = start.elapsed();
    let text = String::from_utf8_lossy(&fs::read(log).unwrap_or_default()).into_owned();
    let report = Report::parse(&text).unwrap_or_else(|e| {
        panic!(
            "{what}: {e} (qemu: {status}, {}); the end of its serial console ({}):\n{}",
            fs::read_to_string(&qemu_out).unwrap_or_default().trim(),
            log.display(),
            tail(log, 40)
        )
    });
    assert!(
        status.success(),
        "{what}: qemu exited with {status}: {}",
        fs::read_to_string(&qemu_out).unwrap_or_default()
    );
    eprintln!(
        "boot test: {what} booted, reported and powered off in {:.0} s: \
         machine-id {}, hostname {}, system {}, {} failed units",
        took.as_secs_f64(),
        report.all("machine-id").join(" "),
        report.all("hostname").join(" "),
        report.all("system-running").join(" "),
        report.all("failed").len(),
    );
    (report, took)
}

/// The template's identity files: name → (content, ctime), to show the
/// capture left them alone.
fn identity_files(root: &Path) -> BTreeMap<String, (Vec<u8>, i64, i64)> {
    let mut names = vec!["etc/machine-id".to_owned(), "etc/hostname".to_owned()];
    names.extend(
        list_dir(&root.join("etc/ssh"))
            .into_iter()
            .filter(|n| n.starts_with("ssh_host_"))
            .map(|n| format!("etc/ssh/{n}")),
    );
    names
        .into_iter()
        .map(|n| {
            let p = root.join(&n);
            let m = fs::symlink_metadata(&p).unwrap();
            (n, (fs::read(&p).unwrap(), m.ctime(), m.ctime_nsec()))
        })
        .collect()
}

/// `type base64` of the template's host public keys, sorted.
fn template_host_keys(root: &Path) -> Vec<String> {
    let mut keys: Vec<String> = list_dir(&root.join("etc/ssh"))
        .into_iter()
        .filter(|n| n.starts_with("ssh_host_") && n.ends_with(".pub"))
        .map(|n| {
            let text = fs::read_to_string(root.join("etc/ssh").join(n)).unwrap();
            let f: Vec<&str> = text.split_whitespace().collect();
            format!("{} {}", f[0], f[1])
        })
        .collect();
    keys.sort();
    keys
}

/// The template's identity, which no clone may carry.
struct Template {
    machine_id: String,
    host_keys: Vec<String>,
}

/// Everything one boot must show to count as a healthy new machine.
/// `hostname`: the name given to `goldcap apply`, or `None` for the
/// capture's `clone-{mac6}` template.
fn assert_new_machine(what: &str, r: &Report, template: &Template, hostname: Option<&str>) {
    let machine_id = r.one("machine-id");
    assert!(
        machine_id.len() == 32 && machine_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{what}: machine-id {machine_id:?}:\n{r}"
    );
    assert_ne!(
        machine_id, template.machine_id,
        "{what} kept the template's machine-id:\n{r}"
    );
    assert_eq!(
        r.one("dbus-machine-id"),
        machine_id,
        "{what}: D-Bus machine-id:\n{r}"
    );
    let keys = r.host_keys();
    let types: Vec<&str> = keys.iter().map(|k| k.split(' ').next().unwrap()).collect();
    assert_eq!(
        types,
        ["ecdsa-sha2-nistp256", "ssh-ed25519", "ssh-rsa"],
        "{what}: host keys on disk:\n{r}"
    );
    for k in &keys {
        assert!(
            !template.host_keys.contains(k),
            "{what} kept a template host key ({k}):\n{r}"
        );
    }
    assert_ne!(
        r.one("hostname"),
        TEMPLATE_HOSTNAME,
        "{what}: named after the template:\n{r}"
    );
    assert!(r.all("failed").is_empty(), "{what}: failed units:\n{r}");
    let host = r.one("hostname");
    match hostname {
        Some(name) => assert_eq!(host, name, "{what}: apply's --hostname:\n{r}"),
        None => assert!(
            host.len() == 12
                && host.starts_with("clone-")
                && host[6..].bytes().all(|b| b.is_ascii_hexdigit()),
            "{what}: hostname {host:?} is not the template clone-{{mac6}}:\n{r}"
        ),
    }
    // The first-boot script ran once, on the first boot only.
    assert_eq!(
        r.one("firstboot-runs"),
        "1",
        "{what}: first-boot runs:\n{r}"
    );
    assert_eq!(r.one("firstboot-done"), "yes", "{what}:\n{r}");
    assert_eq!(r.one("system-running"), "running", "{what}:\n{r}");
    assert_eq!(r.one("keygen-unit"), "active", "{what}:\n{r}");
    assert_eq!(r.one("ssh-active"), "active", "{what}: sshd:\n{r}");
    assert_eq!(
        r.served_keys(),
        keys,
        "{what}: sshd does not serve the keys on disk:\n{r}"
    );
}

fn secs(d: Duration) -> String {
    format!("{:.0} s", d.as_secs_f64())
}

/// Records a timing and prints it as it happens.
fn note(timings: &mut Vec<(String, Duration)>, what: String, took: Duration) {
    eprintln!("boot test: {what}: {}", secs(took));
    timings.push((what, took));
}

#[test]
#[ignore = "boots QEMU three times (about 5 minutes, 10 when the template is built); scripts/test runs it: cargo test --test integration boot:: -- --ignored"]
fn captured_clones_boot_as_new_machines() {
    let total = Instant::now();
    require_root();
    for t in [
        "debootstrap",
        "qemu-system-x86_64",
        "mkfs.ext4",
        "tar",
        "ssh-keygen",
    ] {
        require_tool(t);
    }
    let target = test_tmp().parent().unwrap().to_path_buf();
    let mut timings: Vec<(String, Duration)> = Vec::new();

    // The template, cached across runs.
    let start = Instant::now();
    let made = sh(Command::new("bash")
        .arg(project().join("tests/boot/make-root.sh"))
        .arg(target.join("boot-root"))
        .stderr(Stdio::inherit()));
    let (how, root) = made.trim().split_once(' ').unwrap();
    let root = PathBuf::from(root);
    note(&mut timings, format!("template ({how})"), start.elapsed());
    let template = Template {
        machine_id: fs::read_to_string(root.join("etc/machine-id"))
            .unwrap()
            .trim()
            .to_owned(),
        host_keys: template_host_keys(&root),
    };
    assert_eq!(
        template.host_keys.len(),
        3,
        "template host keys: {:?}",
        template.host_keys
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/hostname"))
            .unwrap()
            .trim(),
        TEMPLATE_HOSTNAME
    );

    let work = test_tmp().join("boot");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).unwrap();

    // Capture and verify, as the fleet's build does, with a first-boot
    // script that counts its runs and a hostname template.
    let firstboot = work.join("count-runs.sh");
    fs::write(
        &firstboot,
        "#!/bin/sh\nmkdir -p /var/lib/goldcap-test\n\
         echo \"$(cat /etc/machine-id) $(hostname)\" >> /var/lib/goldcap-test/firstboot.log\n",
    )
    .unwrap();
    let before = identity_files(&root);
    let start = Instant::now();
    let out = work.join("out");
    let capture = goldcap_cmd(&[
        OsString::from("capture"),
        "--root".into(),
        root.clone().into(),
        "-o".into(),
        out.clone().into(),
        "--firstboot".into(),
        firstboot.clone().into(),
        "--hostname".into(),
        "clone-{mac6}".into(),
        "--json".into(),
    ])
    .output()
    .unwrap();
    assert_eq!(
        capture.status.code(),
        Some(0),
        "capture: {}",
        String::from_utf8_lossy(&capture.stderr)
    );
    note(&mut timings, "capture".into(), start.elapsed());
    let json: serde_json::Value = serde_json::from_slice(&capture.stdout).unwrap();
    let artifact = PathBuf::from(json["artifact"].as_str().unwrap());
    assert_eq!(
        identity_files(&root),
        before,
        "the capture changed the template's identity files"
    );
    let verify = goldcap(&[OsString::from("verify"), artifact.clone().into()]);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    // Three deployments, a disk each: clone1 and clone2 with curtin's tar
    // command, clone3 with `goldcap apply` (verified as it streams, named,
    // with an operator's key for root).
    sh(Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "operator@goldcap-boot-test",
            "-f",
        ])
        .arg(work.join("operator")));
    let key = work.join("operator.pub");
    let operator_key = fs::read_to_string(&key).unwrap();
    let operator_key: String = operator_key
        .split(' ')
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let manifest = PathBuf::from(json["manifest_json"].as_str().unwrap());
    let clones = ["clone1", "clone2", APPLIED].map(|name| {
        let tree = work.join(name);
        let start = Instant::now();
        if name != APPLIED {
            let x = gnu_extract(&artifact, &tree, &[]);
            assert!(
                x.status.success(),
                "curtin's tar failed on {name}: {}",
                String::from_utf8_lossy(&x.stderr)
            );
        } else {
            let x = goldcap_cmd(&[
                OsString::from("apply"),
                manifest.clone().into(),
                "--target".into(),
                tree.clone().into(),
                "--hostname".into(),
                APPLIED_HOSTNAME.into(),
                "--ssh-authorized-key".into(),
                key.clone().into(),
            ])
            .output()
            .unwrap();
            assert_eq!(
                x.status.code(),
                Some(0),
                "goldcap apply failed on {name}: {}",
                String::from_utf8_lossy(&x.stderr)
            );
        }
        inject_harness(&tree);
        let image = work.join(format!("{name}.img"));
        make_disk(&tree, &image);
        note(
            &mut timings,
            format!("{name}: extract + harness + mkfs.ext4 -d"),
            start.elapsed(),
        );
        (name, tree, image)
    });
    assert!(
        !root
            .join("etc/systemd/system/goldcap-boot-report.service")
            .exists()
            && !root.join("usr/local/sbin/goldcap-boot-report").exists(),
        "the harness reached the template"
    );

    let mut reports = Vec::new();
    for (name, tree, image) in &clones {
        let (r, took) = boot(name, tree, image, &work.join(format!("{name}.serial")));
        timings.push((format!("{name}: first boot"), took));
        let applied = (*name == APPLIED).then_some(APPLIED_HOSTNAME);
        assert_new_machine(name, &r, &template, applied);
        if applied.is_some() {
            assert_eq!(r.one("root-ssh"), "700 0", "{name}: /root/.ssh:\n{r}");
            assert!(
                r.all("authorized").contains(&operator_key.as_str()),
                "{name}: the operator's key is not authorized:\n{r}"
            );
        }
        reports.push(r);
    }
    for (i, one) in reports.iter().enumerate() {
        for two in &reports[i + 1..] {
            assert_ne!(
                one.one("machine-id"),
                two.one("machine-id"),
                "two clones share a machine-id"
            );
            for k in one.host_keys() {
                assert!(
                    !two.host_keys().contains(&k),
                    "two clones share a host key: {k}"
                );
            }
        }
    }
    let one = &reports[0];

    // A reboot keeps the identity the first boot made.
    let (name, tree, image) = &clones[0];
    let (again, took) = boot(
        "clone1 (reboot)",
        tree,
        image,
        &work.join(format!("{name}.reboot.serial")),
    );
    timings.push(("clone1: second boot".into(), took));
    assert_new_machine("clone1 (reboot)", &again, &template, None);
    assert_eq!(
        again.one("machine-id"),
        one.one("machine-id"),
        "clone1's machine-id changed across a reboot"
    );
    assert_eq!(
        again.host_keys(),
        one.host_keys(),
        "clone1's host keys changed across a reboot"
    );

    assert_eq!(
        identity_files(&root),
        before,
        "the template's identity files changed"
    );
    // The disks and trees are large; the serial logs stay for reading.
    for (_, tree, image) in &clones {
        fs::remove_dir_all(tree).unwrap();
        fs::remove_file(image).unwrap();
    }
    fs::remove_dir_all(&out).unwrap();
    timings.push(("whole test".into(), total.elapsed()));
    eprintln!("boot test: passed; timings:");
    for (what, d) in &timings {
        eprintln!("  {what}: {}", secs(*d));
    }
}
