//! Which filesystems and paths go into the image: mounts not crossed unless
//! included, pseudo filesystems never, `--exclude`, and goldcap's own output
//! directory.

mod common;

use common::*;

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

#[test]
fn the_output_directory_is_never_archived_into_itself() {
    let env = Env::new();
    let inside = env.root().join("root/images");
    std::fs::create_dir_all(&inside).unwrap();
    std::fs::write(inside.join("old-capture.tgz"), "an earlier artifact").unwrap();
    let o = goldcap(&[
        "capture".as_ref(),
        "--root".as_ref(),
        env.root().as_os_str(),
        "-o".as_ref(),
        inside.as_os_str(),
        "--ident".as_ref(),
        IDENT.as_ref(),
        "--date".as_ref(),
        DATE.as_ref(),
    ]);
    let run = Run {
        out: inside.clone(),
        output: o,
    };
    run.ok();
    let n = names(&run);
    assert!(n.contains(&"./root/images/".to_owned()));
    assert!(
        !n.iter()
            .any(|x| x.starts_with("./root/images/") && x != "./root/images/"),
        "{n:?}"
    );
    assert!(pruned(&run).contains(&("./root/images".into(), "output-dir".into(), true)));
}
