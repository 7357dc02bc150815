//! Which filesystems and paths go into the image: mounts not crossed unless
//! included, pseudo filesystems never, `--exclude`, and goldcap's own output
//! directory.

use crate::common::*;

fn names(run: &Run) -> Vec<String> {
    tar_list(&run.artifact())
}

fn pruned(run: &Run) -> Vec<(String, String, bool)> {
    run.manifest_json()["pruned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["path"].as_str().unwrap().to_owned(),
                p["kind"].as_str().unwrap().to_owned(),
                p["dir_kept"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn other_mounts_keep_their_directory_but_not_their_content() {
    let env = Env::new();
    let data_src = env.path("data-src");
    std::fs::create_dir_all(&data_src).unwrap();
    std::fs::write(data_src.join("payload"), "not part of the image").unwrap();
    let _bind = MountGuard::mount(
        &["--bind", data_src.to_str().unwrap()],
        &env.root().join("mnt/data"),
    );
    let _tmp = MountGuard::mount(&["-t", "tmpfs", "tmpfs"], &env.root().join("srv/scratch"));
    std::fs::write(env.root().join("srv/scratch/junk"), "x").unwrap();

    let run = env.capture("out", &[]);
    run.ok();
    let n = names(&run);
    assert!(
        n.contains(&"./mnt/data/".to_owned()) && !n.contains(&"./mnt/data/payload".to_owned()),
        "{n:?}"
    );
    assert!(
        n.contains(&"./srv/scratch/".to_owned()) && !n.contains(&"./srv/scratch/junk".to_owned()),
        "{n:?}"
    );
    let p = pruned(&run);
    assert!(
        p.contains(&("./mnt/data".into(), "other-mount".into(), true)),
        "{p:?}"
    );
    assert!(
        p.contains(&("./srv/scratch".into(), "pseudo-fs".into(), true)),
        "{p:?}"
    );

    // Named with --include-mount, the bind mount is crossed.
    let run = env.capture("out2", &["--include-mount", "/mnt/data"]);
    run.ok();
    assert!(names(&run).contains(&"./mnt/data/payload".to_owned()));
    // A pseudo filesystem cannot be included.
    let run = env.capture("out3", &["--include-mount", "srv/scratch"]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(
        run.stderr()
            .contains("--include-mount srv/scratch: tmpfs is a pseudo/volatile filesystem"),
        "{}",
        run.stderr()
    );
}

#[test]
fn boot_and_boot_efi_mounts_are_crossed_by_default() {
    let env = Env::new();
    let boot_src = env.path("boot-src");
    let efi_src = env.path("efi-src");
    std::fs::create_dir_all(boot_src.join("efi")).unwrap();
    std::fs::create_dir_all(efi_src.join("EFI/debian")).unwrap();
    std::fs::write(boot_src.join("vmlinuz-6.1.0-99-amd64"), "kernel").unwrap();
    std::fs::write(efi_src.join("EFI/debian/grubx64.efi"), "efi").unwrap();
    let _boot = MountGuard::mount(
        &["--bind", boot_src.to_str().unwrap()],
        &env.root().join("boot"),
    );
    let _efi = MountGuard::mount(
        &["--bind", efi_src.to_str().unwrap()],
        &env.root().join("boot/efi"),
    );
    let run = env.capture("out", &[]);
    run.ok();
    let n = names(&run);
    assert!(
        n.contains(&"./boot/vmlinuz-6.1.0-99-amd64".to_owned()),
        "{n:?}"
    );
    assert!(
        n.contains(&"./boot/efi/EFI/debian/grubx64.efi".to_owned()),
        "{n:?}"
    );
    // The MANIFEST sees the mounted /boot too.
    let k = run.manifest_json()["source"]["kernels"].clone();
    assert!(
        k.as_array()
            .unwrap()
            .iter()
            .any(|k| k["version"] == "6.1.0-99-amd64"),
        "{k}"
    );
}

#[test]
fn excludes_accept_drp_and_glob_forms() {
    let env = Env::new();
    let run = env.capture(
        "out",
        &[
            "--exclude",
            "./etc/default/grub",
            "--exclude",
            "*.bash_history",
            "--exclude",
            "./var/cache/*",
            "--exclude",
            "/srv/long/",
        ],
    );
    run.ok();
    let n = names(&run);
    for gone in [
        "./etc/default/grub",
        "./root/.bash_history",
        "./home/alice/.bash_history",
        "./var/cache/apt/",
        "./srv/long/",
    ] {
        assert!(!n.contains(&gone.to_owned()), "{gone} should be excluded");
    }
    assert!(
        !n.iter().any(|x| x.starts_with("./srv/long/")),
        "a directory goes with its content"
    );
    assert!(n.contains(&"./var/cache/".to_owned()) && n.contains(&"./etc/default/".to_owned()));
    let p = pruned(&run);
    assert!(
        p.contains(&("./etc/default/grub".into(), "excluded".into(), false)),
        "{p:?}"
    );
    assert!(
        p.contains(&("./root/.bash_history".into(), "excluded".into(), false)),
        "{p:?}"
    );
}

fn capture_into(env: &Env, out: &std::path::Path, extra: &[&str]) -> Run {
    let mut args: Vec<std::ffi::OsString> = vec![
        "capture".into(),
        "--root".into(),
        env.root().into(),
        "-o".into(),
        out.into(),
    ];
    args.extend(["--ident", IDENT, "--date", DATE].map(Into::into));
    args.extend(extra.iter().map(Into::into));
    Run {
        out: out.to_path_buf(),
        output: goldcap(&args),
    }
}

#[test]
fn the_output_directory_is_never_archived_into_itself() {
    let env = Env::new();
    let inside = env.root().join("root/images");
    std::fs::create_dir_all(&inside).unwrap();
    // An earlier capture into the same directory, then this one.
    capture_into(
        &env,
        &inside,
        &[
            "--rootfs-name",
            "first-{ident}",
            "--manifest-name",
            "first-M-{ident}",
        ],
    )
    .ok();
    let earlier = list_dir(&inside);
    assert_eq!(earlier.len(), 3, "{earlier:?}");
    let run = capture_into(&env, &inside, &[]);
    run.ok();
    let n = names(&run);
    assert!(n.contains(&"./root/images/".to_owned()));
    assert!(
        !n.iter()
            .any(|x| x.starts_with("./root/images/") && x != "./root/images/"),
        "{n:?}"
    );
    let p = pruned(&run);
    for name in &earlier {
        assert!(
            p.contains(&(format!("./root/images/{name}"), "output-dir".into(), false)),
            "{name}: {p:?}"
        );
    }
}

/// Only files goldcap recognises as its own are left out of a capture of
/// its output directory: a user's `*.json`, `*.txt` or `*.tgz` there is
/// neither dropped silently nor captured with a hole: the run is refused.
#[test]
fn a_users_files_that_look_like_goldcap_output_are_not_left_out() {
    let env = Env::new();
    let inside = env.root().join("root/images");
    std::fs::create_dir_all(&inside).unwrap();
    for (name, content) in [
        ("notes.txt", "mine"),
        ("settings.json", "{\"tool\": {\"name\": \"other\"}}"),
        ("backup.tgz", "not goldcap's"),
    ] {
        std::fs::write(inside.join(name), content).unwrap();
        let run = capture_into(&env, &inside, &[]);
        assert_eq!(run.code(), 2, "{name}: {}", run.stderr());
        assert!(
            run.stderr()
                .contains(&format!("holds other files ({name})")),
            "{}",
            run.stderr()
        );
        std::fs::remove_file(inside.join(name)).unwrap();
    }
}

#[test]
fn an_output_directory_reached_through_a_bind_mount_is_recognised() {
    // The walk sees ROOT/var/out; goldcap writes through ALIAS/out.
    let env = Env::new();
    std::fs::create_dir_all(env.root().join("var/out")).unwrap();
    let alias = env.path("alias");
    let _m = MountGuard::mount(
        &["--bind", env.root().join("var").to_str().unwrap()],
        &alias,
    );
    let run = capture_into(&env, &alias.join("out"), &[]);
    run.ok();
    let n = names(&run);
    assert!(n.contains(&"./var/out/".to_owned()));
    assert!(
        !n.iter()
            .any(|x| x.starts_with("./var/out/") && x != "./var/out/"),
        "goldcap archived its own output: {n:?}"
    );
}

#[test]
fn an_output_directory_inside_the_root_with_other_files_is_refused() {
    // `cd /root && goldcap capture` would otherwise lose /root/.ssh silently.
    let env = Env::new();
    let before = list_dir(&env.root().join("root"));
    let run = capture_into(&env, &env.root().join("root"), &[]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(
        run.stderr()
            .contains("is inside the captured root and holds other files (.bash_history)"),
        "{}",
        run.stderr()
    );
    assert_eq!(
        list_dir(&env.root().join("root")),
        before,
        "nothing written into the source"
    );
    // A volatile or not-crossed output directory is fine: it is never walked.
    let run = capture_into(&env, &env.root().join("tmp"), &[]);
    run.ok();
}

#[test]
fn pruned_directories_are_never_opened() {
    // As an unprivileged user, opening these would fail with a warning;
    // pruned by the policy, they must not be opened at all.
    require_root();
    let dir = tempfile::tempdir_in(test_tmp()).unwrap();
    let root = dir.path().join("root");
    for d in ["etc", "skip/deeper", "tmp/deeper", "ok"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    for d in ["skip", "tmp"] {
        std::fs::set_permissions(root.join(d), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    for p in [dir.path(), root.as_path(), out.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let o = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_goldcap"))
        .args([
            "capture",
            "--allow-unreadable",
            "--os",
            "x",
            "--exclude",
            "./skip",
        ])
        .arg("--root")
        .arg(&root)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(0),
        "a pruned directory was opened: {stderr}"
    );
}

#[test]
fn btrfs_subvolume_mounts_of_the_root_filesystem_are_part_of_the_system() {
    // openSUSE's layout: /var, /srv, ... are subvolumes of the root's btrfs,
    // mounted separately; snapper's /.snapshots must not be crossed.
    require_tool("mkfs.btrfs");
    let dir = tempfile::tempdir_in(test_tmp()).unwrap();
    let img = dir.path().join("btrfs.img");
    sh(std::process::Command::new("truncate")
        .args(["-s", "300M"])
        .arg(&img));
    sh(std::process::Command::new("mkfs.btrfs").arg("-q").arg(&img));
    let root = dir.path().join("root");
    let img_s = img.to_str().unwrap();
    let _top = MountGuard::mount(&["-o", "loop", img_s], &root);
    for sub in ["@var", "@snapshots"] {
        sh(std::process::Command::new("btrfs")
            .args(["subvolume", "create"])
            .arg(root.join(sub)));
    }
    std::fs::write(root.join("@var/keep-me"), "state").unwrap();
    std::fs::write(root.join("@snapshots/old-copy"), "snapshot").unwrap();
    let _var = MountGuard::mount(&["-o", "loop,subvol=@var", img_s], &root.join("var"));
    let _snap = MountGuard::mount(
        &["-o", "loop,subvol=@snapshots", img_s],
        &root.join(".snapshots"),
    );
    // A separate filesystem (another btrfs) is still not crossed.
    let img2 = dir.path().join("other.img");
    sh(std::process::Command::new("truncate")
        .args(["-s", "300M"])
        .arg(&img2));
    sh(std::process::Command::new("mkfs.btrfs")
        .arg("-q")
        .arg(&img2));
    let _other = MountGuard::mount(&["-o", "loop", img2.to_str().unwrap()], &root.join("data"));
    std::fs::write(root.join("data/elsewhere"), "x").unwrap();

    let out = dir.path().join("out");
    let o = goldcap(&[
        "capture".as_ref(),
        "--root".as_ref(),
        root.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "--os".as_ref(),
        "x".as_ref(),
        "--json".as_ref(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names = tar_list(std::path::Path::new(j["artifact"].as_str().unwrap()));
    assert!(names.contains(&"./var/keep-me".to_owned()), "{names:?}");
    assert!(
        names.contains(&"./.snapshots/".to_owned())
            && !names.contains(&"./.snapshots/old-copy".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"./data/".to_owned()) && !names.contains(&"./data/elsewhere".to_owned()),
        "{names:?}"
    );
}
