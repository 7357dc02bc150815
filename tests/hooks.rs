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

/// Mount points of this (the host's) mount namespace at or below `dir`.
fn mounts_below(dir: &Path) -> Vec<String> {
    let dir = dir.to_str().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|m| m.starts_with(dir))
        .collect()
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
