//! Safety: the source is never modified, output is atomic and private, the
//! same input gives the same bytes, a live system changing under the
//! capture gives warnings and a valid archive, bad input gives a clear error
//! and no output.

use crate::common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

/// Content and metadata of every entry, plus ctime (which any write, chmod,
/// chown or xattr change would bump).
fn digest(
    root: &std::path::Path,
) -> (
    std::collections::BTreeMap<String, serde_json::Value>,
    String,
) {
    let ctimes = sh(Command::new("find")
        .arg(root)
        .args(["-printf", "%P %C@ %i\n"]));
    (snapshot(root, &[]), ctimes)
}

#[test]
fn capture_never_modifies_the_source() {
    let env = Env::new();
    // Let ctime/mtime granularity pass so a change could not hide in the same tick.
    std::thread::sleep(Duration::from_millis(20));
    let before = digest(&env.root());
    env.capture("out", &[]).ok();
    env.capture("out-z", &["--format", "tzst"]).ok();
    let after = digest(&env.root());
    let d = diff(&before.0, &after.0, &[]);
    assert!(d.is_empty(), "source changed:\n{}", d.join("\n"));
    assert_eq!(before.1, after.1, "ctimes or inodes changed");
}

#[test]
fn outputs_are_private_and_complete() {
    let env = Env::new();
    let run = env.capture("out", &[]);
    run.ok();
    assert_eq!(
        run.listing(),
        vec![MANIFEST_JSON.to_owned(), MANIFEST.into(), ARTIFACT.into()]
    );
    for name in run.listing() {
        let mode = std::fs::metadata(run.file(&name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{name} holds /etc/shadow and must be 0600");
    }
    sh(Command::new("gzip").arg("-t").arg(run.artifact()));
}

#[test]
fn same_tree_same_ident_and_date_gives_identical_bytes() {
    let env = Env::new();
    for (fmt, ext) in [("tgz", ".tgz"), ("tzst", ".tar.zst")] {
        let a = env.capture(&format!("a-{fmt}"), &["--format", fmt]);
        let b = env.capture(&format!("b-{fmt}"), &["--format", fmt, "--threads", "1"]);
        a.ok();
        b.ok();
        let name = ARTIFACT.replace(".tgz", ext);
        assert_eq!(
            sha256sum(&a.out.join(&name)),
            sha256sum(&b.out.join(&name)),
            "{fmt} output differs between runs"
        );
    }
}

#[test]
fn existing_output_is_never_replaced_without_force() {
    let env = Env::new();
    env.capture("out", &[]).ok();
    let first = sha256sum(&env.path("out").join(ARTIFACT));
    std::fs::write(env.root().join("srv/new-file"), "changed").unwrap();
    let again = env.capture("out", &[]);
    assert_eq!(again.code(), 1, "{}", again.stderr());
    assert!(
        again.stderr().contains("already exists (use --force"),
        "{}",
        again.stderr()
    );
    assert_eq!(sha256sum(&again.artifact()), first);
    assert_eq!(
        again.listing().len(),
        3,
        "no temporary files left: {:?}",
        again.listing()
    );
    let forced = env.capture("out", &["--force"]);
    forced.ok();
    assert_ne!(sha256sum(&forced.artifact()), first);
    assert!(tar_list(&forced.artifact()).contains(&"./srv/new-file".to_owned()));
}

/// A root with an 8 MiB incompressible file, at which [`start_capture`]
/// holds the capture (the test pause point) so that signals reach it
/// mid-stream however fast the machine is.
fn slow_env() -> Env {
    let env = Env::new();
    sh(Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "count=8", "status=none"])
        .arg(format!("of={}", env.root().join("srv/big.bin").display())));
    env
}

/// The capture command for [`slow_env`] into `out`, set to pause before the body of
/// `srv/big.bin` until [`resume`]. The interrupting signals start at their
/// default disposition: a test harness started in the background of a
/// non-interactive shell inherits SIGINT ignored, which goldcap (rightly)
/// keeps ignored.
fn paused_capture(env: &Env) -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = capture_paused_at(env, "read:srv/big.bin");
    cmd.arg("-q");
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::signal(sig, libc::SIG_DFL);
            }
            Ok(())
        });
    }
    cmd
}

fn start_capture(env: &Env) -> std::process::Child {
    paused_capture(env).spawn().unwrap()
}

/// A capture of `env`'s root into `out` that stops at `spec`
/// (`point:path`) until the pause flag is removed.
fn capture_paused_at(env: &Env, spec: &str) -> Command {
    let mut cmd = goldcap_cmd(&[
        "capture".as_ref(),
        "--root".as_ref(),
        env.root().as_os_str(),
        "-o".as_ref(),
        env.path("out").as_os_str(),
    ]);
    cmd.env("GOLDCAP_TEST_PAUSE", spec)
        .env("GOLDCAP_TEST_PAUSE_FILE", env.path("pause-flag"));
    cmd
}

/// Waits until `child` is held at its pause point (the flag exists).
fn wait_paused(env: &Env, child: &mut std::process::Child) {
    let start = Instant::now();
    while !env.path("pause-flag").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the capture never reached the pause point"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the capture ended before the pause point"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until the capture is held mid-stream with its temporary artifact
/// in `out`.
fn wait_for_partial(env: &Env, child: &mut std::process::Child) {
    let start = Instant::now();
    loop {
        let partial = list_dir(&env.path("out"))
            .iter()
            .any(|n| n.starts_with(".goldcap-"));
        if partial && env.path("pause-flag").exists() {
            return;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "capture finished before it reached the pause point"
        );
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the capture never reached the pause point"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Lets a held capture go on.
fn resume(env: &Env) {
    std::fs::remove_file(env.path("pause-flag")).unwrap();
}

#[test]
fn a_killed_capture_leaves_nothing_under_a_final_name() {
    let env = slow_env();
    let mut child = start_capture(&env);
    wait_for_partial(&env, &mut child);
    child.kill().unwrap(); // SIGKILL: no cleanup code runs
    child.wait().unwrap();
    let left = list_dir(&env.path("out"));
    assert!(
        !left.is_empty(),
        "the partial file should still be there to prove the kill hit mid-capture"
    );
    assert!(
        left.iter()
            .all(|n| n.starts_with(".goldcap-") && n.ends_with(".part")),
        "final names after a kill: {left:?}"
    );
}

/// `kill -9` at each rename of the publication: an artifact under its
/// final name always has both its MANIFESTs (it is renamed last), and the
/// next run in the directory removes what the killed one left, saying so.
#[test]
fn a_kill_at_any_rename_never_leaves_an_artifact_without_its_manifests() {
    let env = Env::new();
    let out = env.path("out");
    let order = [MANIFEST, MANIFEST_JSON, ARTIFACT];
    for (i, at) in order.iter().enumerate() {
        let _ = std::fs::remove_dir_all(&out);
        let mut child = capture_paused_at(&env, &format!("publish:{at}"))
            .args(["--ident", IDENT, "--date", DATE, "-q"])
            .spawn()
            .unwrap();
        wait_paused(&env, &mut child);
        child.kill().unwrap(); // SIGKILL at the rename of `at`
        child.wait().unwrap();
        std::fs::remove_file(env.path("pause-flag")).unwrap();
        let finals: Vec<String> = list_dir(&out)
            .into_iter()
            .filter(|n| !n.starts_with(".goldcap-"))
            .collect();
        let mut want: Vec<String> = order[..i].iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(finals, want, "killed at the rename of {at}");
        assert!(!finals.contains(&ARTIFACT.to_owned()));
        // The next run cleans up the killed one's temporaries.
        let next = env.capture("out", &["--force"]);
        next.ok();
        assert!(
            next.stderr().contains("left by killed runs"),
            "{}",
            next.stderr()
        );
        assert_eq!(next.listing(), {
            let mut v = order.map(String::from).to_vec();
            v.sort();
            v
        });
    }
}

/// A second capture into the same directory leaves the temporaries of one
/// still running alone.
#[test]
fn a_running_capture_keeps_its_temporaries() {
    let env = slow_env();
    let mut child = start_capture(&env);
    wait_for_partial(&env, &mut child);
    let other = env.capture("out", &["-q"]);
    other.ok();
    assert!(
        list_dir(&env.path("out"))
            .iter()
            .any(|n| n.starts_with(".goldcap-") && n.ends_with(".part")),
        "the running capture's temporary was removed"
    );
    resume(&env);
    assert!(child.wait().unwrap().success());
}

#[test]
fn an_interrupted_capture_removes_its_temporary_files() {
    let env = slow_env();
    let mut child = start_capture(&env);
    wait_for_partial(&env, &mut child);
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    resume(&env);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "SIGINT exits 130");
    assert_eq!(list_dir(&env.path("out")), Vec::<String>::new());
}

/// Runs a capture paused at `point` for `rel`, applies `change`, resumes.
fn capture_with_change(env: &Env, point: &str, rel: &str, change: impl FnOnce()) -> Run {
    let out = env.path("out");
    let mut child = capture_paused_at(env, &format!("{point}:{rel}"))
        .args(["--ident", IDENT, "--date", DATE])
        .env("GOLDCAP_TEST_COUNTS", out.with_extension("counts"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_paused(env, &mut child);
    change();
    std::fs::remove_file(env.path("pause-flag")).unwrap();
    Run {
        out,
        output: child.wait_with_output().unwrap(),
    }
}

/// A chroot's directory swapped for a symlink to the host while the
/// capture is inside it (renameat2 RENAME_EXCHANGE, as an attacker in the
/// chroot would loop it): attributes are still read from the directory
/// the walk listed, never from the host's.
#[test]
fn a_directory_swapped_for_a_symlink_never_leaks_host_attributes() {
    let env = Env::new();
    let root = env.root();
    let host = env.path("host");
    for d in [
        root.join("srv/swap/inner/deeper"),
        host.join("inner/deeper"),
    ] {
        std::fs::create_dir_all(&d).unwrap();
    }
    std::os::unix::fs::symlink(&host, root.join("srv/link")).unwrap();
    for p in [host.join("inner"), host.join("inner/deeper")] {
        sh(Command::new("setfattr")
            .args(["-n", "user.host", "-v", "leaked"])
            .arg(p));
    }
    let run = capture_with_change(&env, "attrs", "srv/swap/inner", || {
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            root.join("srv/swap"),
            rustix::fs::CWD,
            root.join("srv/link"),
            rustix::fs::RenameFlags::EXCHANGE,
        )
        .unwrap();
    });
    run.ok();
    let names = tar_list(&run.artifact());
    assert!(
        names.contains(&"./srv/swap/inner/deeper/".to_owned()),
        "{names:?}"
    );
    let stream = sh(Command::new("sh").arg("-c").arg(format!(
        "gzip -dc '{}' | grep -ac user.host || true",
        run.artifact().display()
    )));
    assert_eq!(stream.trim(), "0", "host attributes in the archive");
}

/// Paths longer than PATH_MAX (4096 bytes) keep the attributes of their
/// directories and symlinks (read through the parent's descriptor).
#[test]
fn entries_deeper_than_path_max_keep_their_attributes() {
    use rustix::fs::{Mode, OFlags};
    use xattr::FileExt as _;
    let env = Env::new();
    let name = "d".repeat(250);
    let mut dir = rustix::fs::open(
        env.root().join("srv"),
        OFlags::RDONLY | OFlags::DIRECTORY,
        Mode::empty(),
    )
    .unwrap();
    for _ in 0..20 {
        rustix::fs::mkdirat(&dir, name.as_str(), Mode::from_raw_mode(0o755)).unwrap();
        dir = rustix::fs::openat(
            &dir,
            name.as_str(),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
    }
    let deep = std::fs::File::from(dir);
    deep.set_xattr("user.deep", b"dir").unwrap();
    rustix::fs::symlinkat("target", &deep, "link").unwrap();
    let fd_path = format!(
        "/proc/self/fd/{}/link",
        std::os::fd::AsRawFd::as_raw_fd(&deep)
    );
    xattr::set(&fd_path, "trusted.deep", b"link").unwrap();
    let run = env.capture("out", &[]);
    run.ok();
    let stream = sh(Command::new("sh").arg("-c").arg(format!(
        "gzip -dc '{}' | grep -aoE 'SCHILY.xattr.(user|trusted).deep=(dir|link)' | sort",
        run.artifact().display()
    )));
    assert_eq!(
        stream.lines().collect::<Vec<_>>(),
        [
            "SCHILY.xattr.trusted.deep=link",
            "SCHILY.xattr.user.deep=dir"
        ]
    );
}

fn assert_valid_with_warning(run: &Run, env: &Env, path: &str, kind: &str) {
    assert_eq!(
        run.code(),
        3,
        "completed with warnings is exit status 3; stderr:\n{}",
        run.stderr()
    );
    assert!(
        run.stderr()
            .contains(&format!("goldcap: warning: ./{path}: ")),
        "{}",
        run.stderr()
    );
    // The archive is valid: listing and full extraction succeed.
    tar_list(&run.artifact());
    let out = gnu_extract(&run.artifact(), &env.path("x"), &["--acls"]);
    assert!(
        out.status.success(),
        "extraction failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = run.manifest_json();
    assert_eq!(j["warning_count"], 1, "{}", j["warnings"]);
    assert_eq!(j["warnings"][0]["path"], format!("./{path}"));
    assert_eq!(j["warnings"][0]["kind"], kind);
    assert!(run.manifest_text().contains(&format!(
        "\nWarnings (1 {kind})\n{}\n./{path}  [{kind}]",
        "-".repeat(80)
    )));
}

#[test]
fn a_file_that_vanishes_is_a_warning_and_left_out() {
    let env = Env::new();
    let victim = env.root().join("srv/owned-1234");
    let run = capture_with_change(&env, "open", "srv/owned-1234", || {
        std::fs::remove_file(&victim).unwrap()
    });
    assert_valid_with_warning(&run, &env, "srv/owned-1234", "vanished");
    assert!(!tar_list(&run.artifact()).contains(&"./srv/owned-1234".to_owned()));
}

#[test]
fn a_file_that_shrinks_is_padded_to_its_announced_size() {
    let env = Env::new();
    let f = env.root().join("usr/lib/libbig.so");
    let size = std::fs::metadata(&f).unwrap().len();
    let run = capture_with_change(&env, "read", "usr/lib/libbig.so", || {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&f)
            .unwrap()
            .set_len(1000)
            .unwrap()
    });
    assert_valid_with_warning(&run, &env, "usr/lib/libbig.so", "shrank");
    let got = std::fs::read(env.path("x/usr/lib/libbig.so")).unwrap();
    assert_eq!(got.len() as u64, size);
    assert_eq!(&got[..1000], &std::fs::read(&f).unwrap()[..]);
    assert!(got[1000..].iter().all(|&b| b == 0));
}

#[test]
fn a_file_that_grows_is_cut_at_its_announced_size() {
    let env = Env::new();
    let f = env.root().join("usr/share/doc/base-files/README");
    let original = std::fs::read(&f).unwrap();
    let run = capture_with_change(&env, "read", "usr/share/doc/base-files/README", || {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&f)
            .unwrap()
            .write_all(b"a new log line\n")
            .unwrap()
    });
    assert_valid_with_warning(&run, &env, "usr/share/doc/base-files/README", "grew");
    assert_eq!(
        std::fs::read(env.path("x/usr/share/doc/base-files/README")).unwrap(),
        original
    );
}

/// The same two changes to a large file the page cache does not hold, which
/// is read with `O_DIRECT` in 4 KiB-aligned pieces: growth past an
/// unaligned size is cut, and a shrink to an unaligned size is padded.
#[test]
fn an_uncached_file_that_grows_or_shrinks_keeps_its_announced_size() {
    let size = (1 << 20) + 100;
    let original = noise(size, 3);
    for grows in [true, false] {
        let env = Env::new();
        let f = env.root().join("srv/cold.bin");
        std::fs::write(&f, &original).unwrap();
        drop_page_cache();
        let run = capture_with_change(&env, "read", "srv/cold.bin", || {
            let mut w = std::fs::OpenOptions::new().append(true).open(&f).unwrap();
            if grows {
                use std::io::Write;
                w.write_all(&noise(10_000, 4)).unwrap();
            } else {
                w.set_len(70_000).unwrap();
            }
        });
        let kind = if grows { "grew" } else { "shrank" };
        assert_valid_with_warning(&run, &env, "srv/cold.bin", kind);
        assert!(run.count("direct_reads") >= 1, "not read with O_DIRECT");
        let got = std::fs::read(env.path("x/srv/cold.bin")).unwrap();
        assert_eq!(got.len(), size, "{kind}: the announced size");
        if grows {
            assert!(got == original, "grew: the original bytes");
        } else {
            assert!(got[..70_000] == original[..70_000], "shrank: what is left");
            assert!(got[70_000..].iter().all(|&b| b == 0), "shrank: zeros");
        }
    }
}

#[test]
fn unreadable_entries_are_warnings_and_the_archive_stays_valid() {
    let env = Env::new();
    let out = env.path("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // An unprivileged user cannot read root's 0700 directories or /etc/shadow.
    let unprivileged = |extra: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_goldcap"))
            .args(["capture", "--ident", IDENT, "--date", DATE])
            .args(extra)
            .arg("--root")
            .arg(env.root())
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap()
    };
    // Refused before it starts unless asked for (it made an image without
    // /etc/shadow, /root … and called it valid).
    let o = unprivileged(&[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("not running as root (nor with CAP_DAC_READ_SEARCH)")
            && stderr.contains("--allow-unreadable"),
        "{stderr}"
    );
    assert_eq!(list_dir(&out), Vec::<String>::new());
    let o = unprivileged(&["--allow-unreadable"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(
            "goldcap: warning: ./etc/shadow: cannot read: Permission denied; not archived\n"
        ),
        "{stderr}"
    );
    for dir in ["./root", "./srv/private"] {
        let want = format!(
            "goldcap: warning: {dir}: cannot list directory: Permission denied; its content is not archived\n"
        );
        assert!(stderr.contains(&want), "{dir}: {stderr}");
    }
    let run = Run { out, output: o };
    // The unlistable directories themselves are archived, with their modes.
    let names = tar_list(&run.artifact());
    assert!(
        names.contains(&"./root/".to_owned()) && !names.contains(&"./etc/shadow".to_owned()),
        "{names:?}"
    );
    let j = run.manifest_json();
    assert!(j["warning_count"].as_u64().unwrap() >= 3);
    assert!(
        j["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["kind"] == "unreadable"),
        "{}",
        j["warnings"]
    );
    assert_eq!(j["source"]["unprivileged"], true);
    assert!(j["warnings_by_kind"]["unreadable"].as_u64().unwrap() >= 3);
    // The image is incomplete, and verify says so by name.
    let v = goldcap(&["verify".as_ref(), run.artifact().as_os_str()]);
    let text = String::from_utf8_lossy(&v.stdout);
    assert_eq!(v.status.code(), Some(4), "{text}");
    assert!(
        text.contains("FAIL  complete") && text.contains("./etc/shadow (unreadable)"),
        "{text}"
    );
}

fn assert_usage_error(o: &std::process::Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
}

#[test]
fn bad_input_is_a_clear_usage_error_with_no_output() {
    let env = Env::new();
    let out = env.path("out");
    let root = env.root();
    let file = root.join("etc/hostname");
    let base = |extra: &[&std::ffi::OsStr]| {
        let mut a: Vec<&std::ffi::OsStr> = vec!["capture".as_ref(), "-o".as_ref(), out.as_os_str()];
        a.extend_from_slice(extra);
        goldcap(&a)
    };
    let r = root.as_os_str();
    let cases: Vec<(Vec<&std::ffi::OsStr>, &str)> = vec![
        (
            vec!["--root".as_ref(), file.as_os_str()],
            "etc/hostname: not a directory",
        ),
        (
            vec!["--root".as_ref(), "/nonexistent/x".as_ref()],
            "--root /nonexistent/x: No such file or directory",
        ),
        (
            vec![
                "--root".as_ref(),
                r,
                "--rootfs-name".as_ref(),
                "{os}-{nope}".as_ref(),
            ],
            "unknown placeholder \"nope\"",
        ),
        (
            vec![
                "--root".as_ref(),
                r,
                "--rootfs-name".as_ref(),
                "a/b".as_ref(),
            ],
            "cannot contain '/'",
        ),
        (
            vec![
                "--root".as_ref(),
                r,
                "--manifest-name".as_ref(),
                "$HOME".as_ref(),
            ],
            "unknown placeholder \"HOME\"",
        ),
        (
            vec!["--root".as_ref(), r, "--ident".as_ref(), "xyz".as_ref()],
            "must be exactly 10 hexadecimal characters",
        ),
        (
            vec![
                "--root".as_ref(),
                r,
                "--ident".as_ref(),
                "cf99cd80ebb".as_ref(),
            ],
            "must be exactly 10 hexadecimal characters",
        ),
        (
            vec![
                "--root".as_ref(),
                r,
                "--date".as_ref(),
                "yesterday".as_ref(),
            ],
            "is not an RFC 3339 date",
        ),
        (
            vec!["--root".as_ref(), r, "--level".as_ref(), "12".as_ref()],
            "--level 12: tgz takes 1-9",
        ),
        (
            vec!["--root".as_ref(), r, "--exclude".as_ref(), "./".as_ref()],
            "would exclude the whole root",
        ),
        (
            vec![
                "--root".as_ref(),
                r,
                "--include-mount".as_ref(),
                "/srv".as_ref(),
            ],
            "--include-mount /srv: not a mount point",
        ),
        (
            vec![
                "--root".as_ref(),
                r,
                "--include-mount".as_ref(),
                "/nope".as_ref(),
            ],
            "no such directory in the root",
        ),
    ];
    for (extra, needle) in cases {
        let o = base(&extra);
        assert_usage_error(&o, needle);
        assert!(
            list_dir(&out).is_empty(),
            "output after {extra:?}: {:?}",
            list_dir(&out)
        );
    }
    // The root without os-release and a template that needs {os}.
    std::fs::remove_file(root.join("etc/os-release")).unwrap();
    std::fs::remove_file(root.join("usr/lib/os-release")).unwrap();
    assert_usage_error(&base(&["--root".as_ref(), r]), "pass --os NAME");
    // Output directory = root.
    let o = goldcap(&[
        "capture".as_ref(),
        "--root".as_ref(),
        r,
        "-o".as_ref(),
        r,
        "--os".as_ref(),
        "x".as_ref(),
    ]);
    assert_usage_error(&o, "is the root being captured");
}

#[test]
fn an_unwritable_output_directory_fails_before_reading_the_root() {
    let env = Env::new();
    let ro = env.path("ro");
    let _m = MountGuard::mount(&["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"], &ro);
    let run = env.capture("ro", &[]);
    assert_eq!(run.code(), 1, "{}", run.stderr());
    assert!(
        run.stderr().contains(&format!(
            "cannot create files in the output directory {}",
            ro.display()
        )),
        "{}",
        run.stderr()
    );
    assert!(
        run.stderr().contains("Read-only file system"),
        "{}",
        run.stderr()
    );
}

#[test]
fn a_full_disk_fails_cleanly_with_nothing_left_behind() {
    let env = Env::new();
    let small = env.path("small");
    let _m = MountGuard::mount(&["-t", "tmpfs", "-o", "size=512k", "tmpfs"], &small);
    let run = env.capture("small", &[]);
    assert_eq!(run.code(), 1, "{}", run.stderr());
    assert!(
        run.stderr().contains("No space left on device"),
        "{}",
        run.stderr()
    );
    assert!(
        run.stderr().contains(ARTIFACT),
        "the message names the file: {}",
        run.stderr()
    );
    assert_eq!(
        run.listing(),
        Vec::<String>::new(),
        "nothing left on the full disk"
    );
}

#[test]
fn capture_leaves_atimes_alone() {
    let env = Env::new();
    // Raw bytes: the tree has a name that is not UTF-8.
    let paths = Command::new("find")
        .arg(env.root())
        .arg("-print0")
        .output()
        .unwrap()
        .stdout;
    let each = |cmd: &str| {
        let mut c = Command::new("xargs")
            .args(["-0", "sh", "-c", cmd, "sh"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin.take().unwrap().write_all(&paths).unwrap();
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{cmd} failed");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // Older than every mtime: relatime would update it on any read.
    each("touch -h -a -d @946684800 \"$@\"");
    env.capture("out", &[]).ok();
    let atimes = each("stat -c '%X %F %n' \"$@\"");
    // readlink(2) always updates a symlink's atime (there is no O_NOATIME
    // for it; GNU tar does the same), so symlinks are exempt.
    let moved: Vec<&str> = atimes
        .lines()
        .filter(|l| !l.starts_with("946684800 ") && !l.contains(" symbolic link "))
        .collect();
    assert!(moved.is_empty(), "capture changed atimes: {moved:?}");
}

#[test]
fn sighup_is_ignored_under_nohup() {
    use std::os::unix::process::CommandExt;
    let env = slow_env();
    let out = env.path("out");
    let mut cmd = paused_capture(&env);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    wait_for_partial(&env, &mut child);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(100));
    resume(&env);
    assert_eq!(
        child.wait().unwrap().code(),
        Some(0),
        "a nohup'd capture must survive SIGHUP"
    );
    assert_eq!(list_dir(&out).len(), 3);
}

#[test]
fn a_closed_stderr_does_not_abort_the_capture() {
    let env = Env::new();
    let out = env.path("out");
    let mut child = goldcap_cmd(&[
        "capture".as_ref(),
        "--root".as_ref(),
        env.root().as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "-v".as_ref(),
    ])
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    drop(child.stderr.take()); // like `2>&1 | head -1` after one line
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert_eq!(list_dir(&out).len(), 3);
}

/// Builds `depth` nested directories `d/d/d/…` under `base` (through
/// descriptors: the path soon passes PATH_MAX), a file at the bottom, and
/// a file `zz` after `d` in the first ten levels (the walk comes back to
/// those after it closed them).
fn deep_tree(base: &std::path::Path, depth: usize) {
    use rustix::fs::{Mode, OFlags};
    let mut dir =
        rustix::fs::open(base, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
    for level in 0..depth {
        if level < 10 {
            let flags = OFlags::WRONLY | OFlags::CREATE;
            drop(rustix::fs::openat(&dir, "zz", flags, Mode::from_raw_mode(0o644)).unwrap());
        }
        rustix::fs::mkdirat(&dir, "d", Mode::from_raw_mode(0o755)).unwrap();
        dir = rustix::fs::openat(&dir, "d", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
            .unwrap();
    }
    let f = rustix::fs::openat(
        &dir,
        "bottom",
        OFlags::WRONLY | OFlags::CREATE,
        Mode::from_raw_mode(0o644),
    )
    .unwrap();
    rustix::io::write(&f, b"deep").unwrap();
}

/// A deep tree is archived whole under a small descriptor limit, with
/// memory that follows the path's length, not depth × length.
#[test]
fn a_deep_tree_is_archived_whole_with_few_descriptors_and_little_memory() {
    let env = Env::new();
    let depth = 4000;
    deep_tree(&env.root().join("srv"), depth);
    let out = env.path("out");
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 256 && exec /usr/bin/time -f 'maxrss %M' '{}' capture --root '{}' -o '{}' --ident {IDENT} --date {DATE} -q",
            env!("CARGO_BIN_EXE_goldcap"),
            env.root().display(),
            out.display()
        ))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let rss_kib: u64 = err
        .lines()
        .find_map(|l| l.strip_prefix("maxrss "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eprintln!("peak RSS at depth {depth}: {} MiB", rss_kib >> 10);
    // The debug binary's own size is most of this.
    assert!(rss_kib < 120 << 10, "peak RSS {} MiB", rss_kib >> 10);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join(MANIFEST_JSON)).unwrap()).unwrap();
    let bottom = format!("./srv/{}bottom", "d/".repeat(depth));
    let paths = m["paths"].as_array().unwrap();
    assert!(
        paths.iter().any(|p| p == bottom.as_str()),
        "the bottom file is missing"
    );
    for level in 0..10 {
        let zz = format!("./srv/{}zz", "d/".repeat(level));
        assert!(paths.iter().any(|p| p == zz.as_str()), "{zz} is missing");
    }
    assert_eq!(m["warning_count"], 0);
}
