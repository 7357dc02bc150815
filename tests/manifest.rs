//! The MANIFEST and the names: what an operator and DRP read.

use crate::common::*;
use serde_json::Value;

#[test]
fn checksums_and_size_match_independent_tools() {
    let env = Env::new();
    let run = env.capture("out", &["--json"]);
    run.ok();
    let a = run.artifact();
    let (md5, sha, size) = (
        md5sum(&a),
        sha256sum(&a),
        std::fs::metadata(&a).unwrap().len(),
    );

    let text = run.manifest_text();
    assert!(
        text.contains(&format!("\n          md5sum:  {md5}\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!("\n       sha256sum:  {sha}\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!("\n            size:  {size}\n")),
        "{text}"
    );

    let j = run.manifest_json();
    assert_eq!(
        (j["md5"].as_str(), j["sha256"].as_str(), j["size"].as_u64()),
        (Some(md5.as_str()), Some(sha.as_str()), Some(size))
    );

    let out: Value =
        serde_json::from_str(run.stdout().trim()).expect("--json prints one JSON object");
    assert_eq!(out["md5"], md5);
    assert_eq!(out["sha256"], sha);
    assert_eq!(out["size"], size);
    assert_eq!(out["artifact"], a.to_str().unwrap());
    assert_eq!(out["manifest"], run.file(MANIFEST).to_str().unwrap());
    assert_eq!(
        out["manifest_json"],
        run.file(MANIFEST_JSON).to_str().unwrap()
    );
    assert_eq!(out["ident"], IDENT);
    assert_eq!(out["date"], DATE);
    assert_eq!(out["upload_tarball"], format!("images/{ARTIFACT}"));
    assert_eq!(out["upload_manifest"], format!("images/{MANIFEST}"));
    assert_eq!(out["warnings"], 0);
    assert_eq!(out["entries"].as_u64().unwrap(), tar_list(&a).len() as u64);
}

#[test]
fn text_manifest_has_drp_block_facts_packages_and_paths() {
    let env = Env::new();
    let run = env.capture("out", &[]);
    run.ok();
    let text = run.manifest_text();
    let head: Vec<&str> = text.lines().take(9).collect();
    assert_eq!(head[0], "Image Builder created image information: ");
    assert_eq!(head[1], "-".repeat(80));
    assert_eq!(head[2], format!("        filename:  {ARTIFACT}"));
    assert_eq!(head[3], format!("           ident:  {IDENT}"));
    assert_eq!(head[4], "            date:  Sun Nov 22 10:15:00 UTC 2026");
    assert_eq!(head[7], format!("  upload tarball:  images/{ARTIFACT}"));
    assert_eq!(head[8], format!(" upload manifest:  images/{MANIFEST}"));
    assert!(
        text.contains("              os:  Debian GNU/Linux 12 (bookworm) [debian-12]"),
        "{text}"
    );
    assert!(
        text.contains("          kernel:  6.1.0-13-amd64 (image, initramfs, modules)"),
        "{text}"
    );
    assert!(
        text.contains("      boot modes:  BIOS grub: yes, EFI grub: yes, EFI shim: yes"),
        "{text}"
    );
    assert!(text.contains(&format!(
        "            tool:  goldcap {}",
        env!("CARGO_PKG_VERSION")
    )));
    // Installed packages only: the removed kernel (config-files) is not listed.
    assert!(text.contains("\nPackages (dpkg, 6 installed)\n"), "{text}");
    assert!(
        text.contains("\nopenssh-server 1:9.2p1-2+deb12u1 amd64\n"),
        "{text}"
    );
    assert!(!text.contains("linux-image-6.1.0-12-amd64"), "{text}");
    // The path list is the archive's, in order, escaped like GNU tar.
    let listed: Vec<&str> = text
        .split_once("\nArchived paths (")
        .unwrap()
        .1
        .lines()
        .skip(2)
        .collect();
    assert_eq!(listed, tar_list(&run.artifact()));
    assert!(
        listed.contains(&"./srv/caf\\351\\377.txt"),
        "non-UTF-8 names are octal-escaped"
    );
}

#[test]
fn json_manifest_carries_the_same_data() {
    let env = Env::new();
    let run = env.capture("out", &[]);
    run.ok();
    let j = run.manifest_json();
    assert_eq!(j["manifest_version"], 1);
    assert_eq!(j["filename"], ARTIFACT);
    assert_eq!(j["date_stamp"], "20261122-101500");
    assert_eq!(j["format"], "tgz");
    assert_eq!(j["source"]["os_tag"], "debian-12");
    assert_eq!(j["source"]["os"]["version_id"], "12");
    assert_eq!(j["source"]["live"], false);
    assert_eq!(j["source"]["kernels"][0]["version"], "6.1.0-13-amd64");
    assert_eq!(j["source"]["boot"]["bios_grub"], true);
    assert_eq!(j["source"]["packages"]["database"], "dpkg");
    assert_eq!(j["source"]["packages"]["list"].as_array().unwrap().len(), 6);
    assert_eq!(j["stats"]["sockets_skipped"], 1);
    assert_eq!(j["stats"]["sparse_files"], 1);
    assert_eq!(j["stats"]["hardlinks"], 2);
    assert_eq!(j["stats"]["synthetic"], 1);
    let paths: Vec<String> = j["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(paths, tar_list(&run.artifact()));
    assert_eq!(j["stats"]["entries"].as_u64().unwrap(), paths.len() as u64);
    let pruned: Vec<(&str, &str)> = j["pruned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["path"].as_str().unwrap(), p["kind"].as_str().unwrap()))
        .collect();
    assert!(pruned.contains(&("./proc", "volatile")), "{pruned:?}");
    assert!(pruned.contains(&("./srv/sock", "socket")), "{pruned:?}");
    assert!(j["path_encoding"].as_str().unwrap().contains("octal"));
}

#[test]
fn names_follow_drp_templates_and_flags() {
    let env = Env::new();
    // DRP's own param values, pasted verbatim, and an upload path with slashes.
    let run = env.capture(
        "out",
        &[
            "--rootfs-name",
            "$TAG-rootfs-$DSTAMP-$RS_IMAGE_IDENT",
            "--manifest-name",
            "gold-${RS_IMAGE_IDENT}.txt",
            "--upload-path",
            "/images/gold/",
        ],
    );
    run.ok();
    assert_eq!(
        run.listing(),
        vec![
            ARTIFACT.to_owned(),
            "gold-cf99cd80eb.json".into(),
            "gold-cf99cd80eb.txt".into()
        ]
    );
    let j: Value =
        serde_json::from_slice(&std::fs::read(run.file("gold-cf99cd80eb.json")).unwrap()).unwrap();
    assert_eq!(j["upload_tarball"], format!("images/gold/{ARTIFACT}"));
    assert_eq!(j["upload_manifest"], "images/gold/gold-cf99cd80eb.txt");

    // --os overrides os-release; zstd gets .tar.zst.
    let run = env.capture("out2", &["--os", "Gold Linux 1", "--format", "tzst"]);
    run.ok();
    assert_eq!(
        run.listing(),
        vec![
            "gold-linux-1-MANIFEST-20261122-101500-cf99cd80eb.json".to_owned(),
            "gold-linux-1-MANIFEST-20261122-101500-cf99cd80eb.txt".into(),
            "gold-linux-1-rootfs-20261122-101500-cf99cd80eb.tar.zst".into(),
        ]
    );
}

#[test]
fn default_ident_is_random_hex_and_date_is_now() {
    let env = Env::new();
    let out = env.path("out");
    let o = goldcap(&[
        "capture".as_ref(),
        "--root".as_ref(),
        env.root().as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "--json".as_ref(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    let ident = j["ident"].as_str().unwrap();
    assert!(
        ident.len() == 10
            && ident
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{ident}"
    );
    let name = j["artifact"].as_str().unwrap();
    let stamp = chrono::Utc::now().format("%Y%m%d").to_string();
    assert!(
        name.contains(&format!("/debian-12-rootfs-{stamp}-"))
            && name.ends_with(&format!("-{ident}.tgz")),
        "{name}"
    );
}

#[test]
fn rpm_database_is_listed_without_touching_it() {
    require_tool("rpmbuild");
    let env = Env::new();
    std::fs::remove_file(env.root().join("var/lib/dpkg/status")).unwrap();
    // A real rpm database with one package, built with rpm itself.
    let work = env.path("rpmbuild");
    std::fs::create_dir_all(&work).unwrap();
    let spec = work.join("t.spec");
    std::fs::write(&spec, "Name: gold-test\nVersion: 1.2\nRelease: 3.el9\nEpoch: 1\nSummary: t\nLicense: MIT\nBuildArch: noarch\n%description\nt\n%files\n").unwrap();
    sh(std::process::Command::new("rpmbuild")
        .args(["-bb", "--quiet", "--define"])
        .arg(format!("_topdir {}", work.display()))
        .arg(&spec));
    let db = env.root().join("var/lib/rpm");
    sh(std::process::Command::new("rpm")
        .arg("--dbpath")
        .arg(&db)
        .arg("--initdb"));
    let rpm_file = work.join("RPMS/noarch/gold-test-1.2-3.el9.noarch.rpm");
    sh(std::process::Command::new("rpm")
        .arg("--dbpath")
        .arg(&db)
        .args(["-i", "--justdb", "--nodeps"])
        .arg(&rpm_file));
    let before = (
        snapshot(&db, &[]),
        sh(std::process::Command::new("find")
            .arg(&db)
            .args(["-printf", "%P %C@\n"])),
    );

    let run = env.capture("out", &[]);
    run.ok();
    let p = &run.manifest_json()["source"]["packages"];
    assert_eq!(p["database"], "rpm", "{p}");
    assert_eq!(
        p["list"],
        serde_json::json!([{"name": "gold-test", "version": "1:1.2-3.el9", "arch": "noarch"}])
    );
    assert!(
        run.manifest_text()
            .contains("\nPackages (rpm, 1 installed)\n")
    );
    let after = (
        snapshot(&db, &[]),
        sh(std::process::Command::new("find")
            .arg(&db)
            .args(["-printf", "%P %C@\n"])),
    );
    assert!(
        diff(&before.0, &after.0, &[]).is_empty() && before.1 == after.1,
        "rpm touched the source database"
    );
}

#[test]
fn what_keeps_an_image_from_booting_is_said_on_stderr_and_in_the_manifest() {
    // The sample root is a bootable system: nothing to say.
    let env = Env::new();
    let run = env.capture("good", &[]);
    run.ok();
    assert!(!run.stderr().contains("warning"), "{}", run.stderr());
    assert_eq!(
        run.manifest_json()["source"]["deploy_problems"],
        serde_json::json!([])
    );

    // A container's root: no kernel, no boot loader, no fstab root entry.
    let r = env.root();
    for dir in ["boot", "usr/lib/grub", "usr/lib/shim"] {
        let _ = std::fs::remove_dir_all(r.join(dir));
    }
    std::fs::create_dir(r.join("boot")).unwrap();
    std::fs::write(r.join("etc/fstab"), "proc /proc proc defaults 0 0\n").unwrap();
    std::fs::write(r.join(".dockerenv"), "").unwrap();
    let run = env.capture("bad", &[]);
    run.ok();
    let err = run.stderr();
    for said in [
        "warning: no kernel in /boot",
        "warning: no boot loader for BIOS or UEFI",
        "warning: no root (/) entry in /etc/fstab",
        "warning: /.dockerenv is in the root",
    ] {
        assert!(err.contains(said), "{said:?} missing from:\n{err}");
    }
    let listed = run.manifest_json()["source"]["deploy_problems"].clone();
    assert_eq!(listed.as_array().map(Vec::len), Some(4), "{listed}");
    let text = run.manifest_text();
    assert_eq!(text.matches("DEPLOY PROBLEM:").count(), 4, "{text}");
}

#[test]
fn inspect_shows_the_summary_and_lists_entries_as_tar_does() {
    let env = Env::new();
    let run = env.capture("out", &[]);
    run.ok();
    let o = goldcap(&[
        std::ffi::OsStr::new("inspect"),
        run.file(MANIFEST_JSON).as_os_str(),
    ]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    for want in [
        "os:  Debian GNU/Linux 12 (bookworm)",
        "kernel:  6.1.0-13-amd64",
        "packages:  6 (dpkg)",
        "every identity operation on",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
    // --list: the same names, types and owners GNU tar lists.
    let o = goldcap(&[
        std::ffi::OsStr::new("inspect"),
        std::ffi::OsStr::new("--list"),
        std::ffi::OsStr::new("--json"),
        run.artifact().as_os_str(),
    ]);
    assert!(o.status.success());
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let ours: Vec<(String, String)> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["path"].as_str().unwrap().to_owned(),
                format!("{}/{}", m["uid"], m["gid"]),
            )
        })
        .collect();
    let tar = sh(std::process::Command::new("tar")
        .args(["--numeric-owner", "-tvzf"])
        .arg(run.artifact()));
    let theirs: Vec<(String, String)> = tar
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let name = f[5].trim_start_matches("./").trim_end_matches('/');
            (
                if name.is_empty() {
                    ".".into()
                } else {
                    name.to_owned()
                },
                f[1].to_owned(),
            )
        })
        .collect();
    // Names with spaces or escapes are compared by count only.
    assert_eq!(ours.len(), theirs.len());
    let plain: Vec<_> = theirs.iter().filter(|(n, _)| !n.contains('\\')).collect();
    for t in plain {
        assert!(ours.contains(t), "{t:?} not listed by inspect");
    }
}

#[test]
fn diff_lists_exactly_the_upgraded_package_and_the_changed_file() {
    let env = Env::new();
    let before = env.capture("before", &[]);
    before.ok();
    let status = env.root().join("var/lib/dpkg/status");
    let text = std::fs::read_to_string(&status).unwrap();
    let upgraded = text.replacen("Version: 5.2.15-2+b2", "Version: 5.2.15-3", 1);
    assert_ne!(text, upgraded, "the sample's bash version moved");
    std::fs::write(&status, upgraded).unwrap();
    let motd = env.root().join("etc/default/grub");
    let mut issue = std::fs::read(&motd).unwrap();
    issue.extend_from_slice(b"changed\n");
    std::fs::write(&motd, issue).unwrap();
    let after = env.capture("after", &[]);
    after.ok();
    let o = goldcap(&[
        std::ffi::OsStr::new("diff"),
        std::ffi::OsStr::new("--json"),
        before.file(MANIFEST_JSON).as_os_str(),
        after.file(MANIFEST_JSON).as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(1), "they differ");
    let d: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        d["packages_upgraded"],
        serde_json::json!([["bash", "5.2.15-2+b2", "5.2.15-3"]])
    );
    assert_eq!(d["packages_added"], serde_json::json!([]));
    assert_eq!(d["packages_removed"], serde_json::json!([]));
    assert_eq!(d["paths_added"], serde_json::json!([]));
    assert_eq!(d["paths_removed"], serde_json::json!([]));
    let changed: Vec<&str> = d["paths_changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1]["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        changed,
        vec!["etc/default/grub", "var/lib/dpkg/status"],
        "{d}"
    );
    // Without MANIFESTs the archives themselves are compared: the same.
    let bare = env.path("bare");
    std::fs::create_dir_all(&bare).unwrap();
    let (a, b) = (bare.join("a.tgz"), bare.join("b.tgz"));
    std::fs::copy(before.artifact(), &a).unwrap();
    std::fs::copy(after.artifact(), &b).unwrap();
    let o = goldcap(&[
        std::ffi::OsStr::new("diff"),
        std::ffi::OsStr::new("--json"),
        a.as_os_str(),
        b.as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let bare: Value = serde_json::from_slice(&o.stdout).unwrap();
    let changed_bare: Vec<&str> = bare["paths_changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1]["path"].as_str().unwrap())
        .collect();
    assert_eq!(changed_bare, changed, "{bare}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("packages not compared"));
    // The same capture twice: no difference, exit 0.
    let o = goldcap(&[
        std::ffi::OsStr::new("diff"),
        after.artifact().as_os_str(),
        after.file(MANIFEST_JSON).as_os_str(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn json_manifest_records_each_entry_with_the_digest_of_what_was_archived() {
    let env = Env::new();
    let run = env.capture("out", &[]);
    run.ok();
    let j = run.manifest_json();
    assert_eq!(j["entries_schema"], 1);
    let entries = j["entries"].as_array().unwrap();
    assert_eq!(entries.len(), j["paths"].as_array().unwrap().len());
    assert_eq!(
        entries.len() as u64,
        j["stats"]["entries"].as_u64().unwrap()
    );
    let dest = env.path("x");
    std::fs::create_dir_all(&dest).unwrap();
    sh(std::process::Command::new("tar")
        .arg("-C")
        .arg(&dest)
        .args([
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
            "-Sxpzf",
        ])
        .arg(run.artifact()));
    let mut files = 0;
    for e in entries {
        let path = e["path"].as_str().unwrap();
        if path.contains('\\') {
            continue;
        }
        let p = dest.join(path);
        let m = std::fs::symlink_metadata(&p).unwrap_or_else(|_| panic!("{path}"));
        use std::os::unix::fs::MetadataExt;
        assert_eq!(e["uid"], m.uid(), "{path}");
        assert_eq!(e["gid"], m.gid(), "{path}");
        assert_eq!(
            e["mode"].as_str().unwrap(),
            format!("{:04o}", m.mode() & 0o7777),
            "{path}"
        );
        match e["type"].as_str().unwrap() {
            "file" if e["sparse"] != true => {
                files += 1;
                assert_eq!(e["size"], m.len(), "{path}");
                assert_eq!(e["sha256"].as_str().unwrap(), sha256sum(&p), "{path}");
            }
            "symlink" => assert_eq!(
                e["link"].as_str().unwrap(),
                std::fs::read_link(&p).unwrap().to_str().unwrap(),
                "{path}"
            ),
            "dir" => assert!(m.is_dir(), "{path}"),
            _ => {}
        }
    }
    assert!(files > 20, "{files} regular files checked");
    // A scrubbed file is recorded as archived (machine-id emptied).
    let mid = entries
        .iter()
        .find(|e| e["path"] == "etc/machine-id")
        .unwrap();
    assert_eq!(mid["size"], 0);
}
