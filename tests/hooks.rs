//! Capture hooks: a gold build's finishing work, run inside a chroot root
//! (with /proc, /sys and /dev that the host's mount table never shows and
//! that are gone afterwards, even when the hook fails or goldcap is
//! signalled), in order, with the capture's names and without upload
//! credentials; a failing hook stops the capture before anything is
//! written; hooks on a live root need --live-hooks. The chroot is a real
//! one: busybox (static) is its shell.

use crate::common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A root a hook can run in: busybox as /bin/sh and its applets, the
/// mount points, an os-release.
fn runnable_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    for d in ["bin", "etc", "proc", "sys", "dev", "usr/sbin", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "cat", "echo", "test", "sleep", "ls", "rm", "grep", "mkdir",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(
        root.join("etc/os-release"),
        "ID=debian\nVERSION_ID=12\nPRETTY_NAME=\"hook test\"\n",
    )
    .unwrap();
    root
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn capture(root: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = goldcap_cmd(&["capture".as_ref(), "--root".as_ref(), root.as_os_str()]);
    c.arg("-o")
        .arg(out)
        .args(["--ident", IDENT, "--date", DATE])
        .args(extra);
    c
}

#[test]
fn hooks_run_inside_the_chroot_in_order_and_leave_no_mount() {
    require_root();
    let t = tempfile::tempdir_in(test_tmp()).unwrap();
    let root = runnable_root(t.path());
    let hooks = t.path().join("hooks.d");
    std::fs::create_dir(&hooks).unwrap();
    script(
        &hooks,
        "20-build",
        r#"echo "building $GOLDCAP_ARTIFACT for $GOLDCAP_OS"
test -r /proc/self/status || exit 7
test -c /dev/null || exit 8
test -d /sys/kernel || exit 9
test -z "$RS_TOKEN" || exit 10
test "$(cat /etc/marker)" = "hook 10 was here" || exit 11
echo "built by $GOLDCAP_HOOK ident $GOLDCAP_IDENT" > /etc/built
"#,
    );
    script(
        &hooks,
        "10-first",
        "echo 'hook 10 was here' > /etc/marker\n",
    );
    std::fs::write(hooks.join("README"), "not executable: skipped\n").unwrap();
    std::fs::write(root.join("usr/sbin/policy-rc.d"), "#!/bin/sh\nexit 101\n").unwrap();
    let out = t.path().join("out");
    let o = capture(
        &root,
        &out,
        &[
            "--hook",
            hooks.to_str().unwrap(),
            "--hook",
            "builtin:policy-rc.d",
            "--json",
        ],
    )
    .env("RS_TOKEN", "secret-token-for-the-upload")
    .output()
    .unwrap();
    let run = Run {
        out: out.clone(),
        output: o,
    };
    run.ok();
    let err = run.stderr();
    assert!(
        err.contains("goldcap: running hook 10-first in the chroot")
            && err.contains(
                "  20-build| building debian-12-rootfs-20261122-101500-cf99cd80eb.tgz for debian-12"
            )
            && err.contains("  builtin:policy-rc.d| removed /usr/sbin/policy-rc.d"),
        "{err}"
    );
    // What the hooks did is in the archive.
    let dest = t.path().join("x");
    assert!(gnu_extract(&run.artifact(), &dest, &[]).status.success());
    assert_eq!(
        std::fs::read_to_string(dest.join("etc/built")).unwrap(),
        format!("built by 20-build ident {IDENT}\n")
    );
    assert!(!dest.join("usr/sbin/policy-rc.d").exists());
    // No mount is left, and the host never saw one.
    assert_eq!(mounts_below(&root), Vec::<String>::new());
    assert_eq!(list_dir(&root.join("proc")), Vec::<String>::new());
    // The MANIFEST names each hook, where it ran and its digest.
    let j = run.manifest_json();
    let names: Vec<&str> = j["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["10-first", "20-build", "builtin:policy-rc.d"]);
    assert_eq!(j["hooks"][0]["ran_in"], "chroot");
    assert_eq!(
        j["hooks"][0]["sha256"].as_str().unwrap(),
        sha256sum(&hooks.join("10-first"))
    );
    assert!(
        run.manifest_text()
            .contains("\nHooks (3, run before the capture)\n")
    );
    // The credential never reached a hook, nor anything goldcap wrote.
    for f in list_dir(&out) {
        let bytes = std::fs::read(out.join(&f)).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("secret-token-for-the-upload"));
    }
}

#[test]
fn a_failing_hook_stops_the_capture_with_its_output() {
    require_root();
    let t = tempfile::tempdir_in(test_tmp()).unwrap();
    let root = runnable_root(t.path());
    let hook = script(
        t.path(),
        "fail.sh",
        "echo 'installing the agent'\necho 'E: package not found' >&2\nexit 3\n",
    );
    let out = t.path().join("out");
    let o = capture(&root, &out, &["--hook", hook.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("hook fail.sh exited with status 3 after")
            && err.contains("nothing was captured. Its last output:\n  installing the agent\n  E: package not found"),
        "{err}"
    );
    assert!(list_dir(&out).is_empty(), "{:?}", list_dir(&out));
    assert_eq!(mounts_below(&root), Vec::<String>::new());
}

#[test]
fn a_signal_during_a_hook_stops_it_and_leaves_no_mount() {
    require_root();
    let t = tempfile::tempdir_in(test_tmp()).unwrap();
    let root = runnable_root(t.path());
    let hook = script(
        t.path(),
        "slow.sh",
        "echo started > /tmp/started\nsleep 60\necho 'not reached' > /etc/late\n",
    );
    let out = t.path().join("out");
    let mut child = capture(&root, &out, &["--hook", hook.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !root.join("tmp/started").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the hook never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    assert!(start.elapsed() < Duration::from_secs(30));
    assert!(!root.join("etc/late").exists());
    assert_eq!(mounts_below(&root), Vec::<String>::new());
    assert!(list_dir(&out).is_empty());
}

#[test]
fn hooks_on_a_live_root_need_live_hooks() {
    let t = tempfile::tempdir_in(test_tmp()).unwrap();
    let hook = script(t.path(), "h.sh", "exit 0\n");
    let o = capture(
        Path::new("/"),
        &t.path().join("out"),
        &["--hook", hook.to_str().unwrap()],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("pass --live-hooks"), "{err}");
    let o = capture(
        &Env::new().root(),
        &t.path().join("out"),
        &["--hook", "builtin:nope"],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("unknown built-in hook \"nope\""), "{err}");
}

/// `--inject`, `--firstboot` and `--hostname` add to the archive only: the
/// source is untouched, the entries are there with their modes and owners,
/// a template's own first-boot scripts and stamp are replaced, and what
/// would put identity back or land below a symlink is refused.
#[test]
fn additions_go_into_the_archive_only() {
    let env = Env::new();
    let root = env.root();
    std::fs::create_dir_all(root.join("lib/systemd")).unwrap();
    std::fs::write(root.join("lib/systemd/systemd"), "").unwrap();
    // A template that was itself a clone of a goldcap image.
    std::fs::create_dir_all(root.join("usr/lib/goldcap/firstboot")).unwrap();
    std::fs::write(root.join("usr/lib/goldcap/firstboot/10-old"), "#!/bin/sh\n").unwrap();
    std::fs::create_dir_all(root.join("var/lib/goldcap")).unwrap();
    std::fs::write(root.join("var/lib/goldcap/firstboot.done"), "2026-01-01\n").unwrap();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("curtin")).unwrap();
    script(&src.join("curtin"), "curtin-hooks", "echo curtin\n");
    std::fs::write(src.join("curtin/finalize"), "not executable here\n").unwrap();
    let first = script(&src, "register.sh", "echo registering\n");
    let second = script(&src, "warm cache.sh", "echo warming\n");
    let before = tree_digest(&root);
    let run = env.capture(
        "out",
        &[
            "--inject",
            &format!("{}:/curtin:0750:0:0", src.join("curtin").display()),
            "--inject",
            &format!("{}:/etc/site/ca.pem", first.display()),
            "--firstboot",
            first.to_str().unwrap(),
            "--firstboot",
            second.to_str().unwrap(),
            "--hostname",
            "web-{mac6}",
        ],
    );
    run.ok();
    let after = tree_digest(&root);
    assert!(before == after, "the capture changed the source");
    let listing = sh(Command::new("tar")
        .args(["--numeric-owner", "-tvzf"])
        .arg(run.artifact()));
    let line = |path: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(" {path}")) || l.contains(&format!(" {path} -> ")))
            .unwrap_or_else(|| panic!("{path} not in:\n{listing}"))
            .to_owned()
    };
    assert!(
        line("./curtin/curtin-hooks").starts_with("-rwxr-x--- 0/0"),
        "{listing}"
    );
    assert!(
        line("./curtin/finalize").starts_with("-rwxr-x--- 0/0"),
        "{listing}"
    );
    assert!(
        line("./etc/site/").starts_with("drwxr-xr-x 0/0"),
        "{listing}"
    );
    assert!(line("./usr/lib/goldcap/firstboot/10-register.sh").starts_with("-rwxr-xr-x 0/0"));
    assert!(line("./usr/lib/goldcap/firstboot/20-warm_cache.sh").starts_with("-rwxr-xr-x"));
    assert!(
        line("./etc/systemd/system/multi-user.target.wants/goldcap-firstboot.service")
            .ends_with("-> /etc/systemd/system/goldcap-firstboot.service")
    );
    assert!(
        line("./etc/systemd/system/sysinit.target.wants/goldcap-hostname.service")
            .contains("goldcap-hostname.service")
    );
    assert!(!listing.contains("10-old"), "{listing}");
    assert!(!listing.contains("firstboot.done"), "{listing}");
    let dest = env.path("x");
    assert!(gnu_extract(&run.artifact(), &dest, &[]).status.success());
    assert_eq!(
        std::fs::read_to_string(dest.join("curtin/curtin-hooks")).unwrap(),
        "#!/bin/sh\necho curtin\n"
    );
    assert_eq!(std::fs::read(dest.join("etc/hostname")).unwrap(), b"");
    let j = run.manifest_json();
    assert_eq!(j["added"]["hostname"], "web-{mac6}");
    assert_eq!(
        j["added"]["firstboot"],
        serde_json::json!([
            "./usr/lib/goldcap/firstboot/10-register.sh",
            "./usr/lib/goldcap/firstboot/20-warm_cache.sh"
        ])
    );
    let inj = j["added"]["injected"].as_array().unwrap();
    assert!(inj.iter().any(|i| i["path"] == "./curtin/curtin-hooks"
        && i["sha256"] == sha256sum(&src.join("curtin/curtin-hooks"))));
    assert!(run.manifest_text().contains("\nAdded to the image ("));
    assert!(
        run.stderr().is_empty() || !run.stderr().contains("warning"),
        "{}",
        run.stderr()
    );
    // verify passes it (nothing through a symlink, nothing outside).
    let v = goldcap(&["verify".as_ref(), run.artifact().as_os_str()]);
    assert_eq!(
        v.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
    // Refused: identity back in, below a symlink, no systemd, bad names.
    std::os::unix::fs::symlink("usr/lib", root.join("libx")).unwrap();
    for (args, want) in [
        (
            vec![
                "--inject".to_owned(),
                format!("{}:/etc/machine-id", first.display()),
            ],
            "./etc/machine-id is what the scrub operation machine-id removes",
        ),
        (
            vec![
                "--inject".to_owned(),
                format!("{}:/libx/y", first.display()),
            ],
            "./libx/y would be added below ./libx, a symlink in the image",
        ),
        (
            vec!["--hostname".to_owned(), "bad_name".to_owned()],
            "is not a hostname",
        ),
        (
            vec![
                "--inject".to_owned(),
                format!("{}:relative", first.display()),
            ],
            "must be an absolute path",
        ),
    ] {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = env.capture("refused", &a);
        assert_eq!(r.code(), 2, "{args:?}: {}", r.stderr());
        assert!(r.stderr().contains(want), "{args:?}: {}", r.stderr());
    }
    std::fs::remove_file(root.join("lib/systemd/systemd")).unwrap();
    let r = env.capture("refused", &["--firstboot", first.to_str().unwrap()]);
    assert_eq!(r.code(), 2);
    assert!(
        r.stderr()
            .contains("--firstboot needs systemd in the image"),
        "{}",
        r.stderr()
    );
}

/// The runner goldcap adds runs the scripts in name order inside the image,
/// goes on past a failing one (and says so), and leaves the stamp that
/// keeps its unit from running again.
#[test]
fn the_firstboot_runner_runs_each_script_in_order_once() {
    require_root();
    let t = tempfile::tempdir_in(test_tmp()).unwrap();
    let root = runnable_root(t.path());
    let out = t.path().join("out");
    std::fs::create_dir_all(root.join("lib/systemd")).unwrap();
    std::fs::write(root.join("lib/systemd/systemd"), "").unwrap();
    for b in ["date", "sync", "tail"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(b)).unwrap();
    }
    let a = script(t.path(), "a.sh", "echo a >> /tmp/order\n");
    let b = script(t.path(), "b.sh", "echo b >> /tmp/order\nexit 4\n");
    let c = script(t.path(), "c.sh", "echo c >> /tmp/order\n");
    let o = capture(
        &root,
        &out,
        &[
            "--firstboot",
            a.to_str().unwrap(),
            "--firstboot",
            b.to_str().unwrap(),
            "--firstboot",
            c.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run = Run { out, output: o };
    let clone = t.path().join("clone");
    assert!(gnu_extract(&run.artifact(), &clone, &[]).status.success());
    let r = Command::new("chroot")
        .arg(&clone)
        .arg("/usr/lib/goldcap/firstboot-run")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert_eq!(r.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("goldcap-firstboot: 20-b.sh failed with status 4")
            && stdout.contains("goldcap-firstboot: 30-c.sh done"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(clone.join("tmp/order")).unwrap(),
        "a\nb\nc\n"
    );
    assert!(clone.join("var/lib/goldcap/firstboot.done").is_file());
    let unit = std::fs::read_to_string(clone.join("etc/systemd/system/goldcap-firstboot.service"))
        .unwrap();
    assert!(unit.contains("ConditionPathExists=!/var/lib/goldcap/firstboot.done"));
    assert!(unit.contains("After=network-online.target"));
}
