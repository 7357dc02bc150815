//! What a deployed system gets back: captures of the sample root extracted
//! with GNU tar (curtin's exact command, with and without --acls) and
//! bsdtar, compared entry by entry with the source by an independent tool
//! (tests/tools/treesnap.py: lstat, ns mtime, content, xattrs, hardlink
//! groups, sparse allocation) and spot-checked with getcap/getfacl.

use crate::common::*;
use std::process::Command;

/// Differences every capture has on purpose: `curtin/` is added, the socket
/// is skipped, the volatile directories are emptied.
fn expected_differences() -> Vec<(&'static str, &'static str)> {
    vec![("curtin", "*"), ("srv/sock", "*")]
}

/// Fidelity is measured without the identity scrub (tests/scrub.rs covers
/// what it changes).
const NO_SCRUB: &[&str] = &["--operations", "none"];

fn source_snapshot(env: &Env) -> std::collections::BTreeMap<String, serde_json::Value> {
    snapshot(&env.root(), VOLATILE)
}

#[test]
fn gnu_tar_with_curtin_flags_and_acls_restores_the_tree_exactly() {
    require_tool("tar");
    let env = Env::new();
    let run = env.capture("out", NO_SCRUB);
    run.ok();
    let dest = env.path("x");
    let out = gnu_extract(&run.artifact(), &dest, &["--acls"]);
    assert_restored(
        "GNU tar --acls",
        out,
        &source_snapshot(&env),
        &dest,
        &expected_differences(),
    );

    // curtin/ is a real directory at the top.
    let snap = snapshot(&dest, &[]);
    assert_eq!(snap["curtin"]["type"], "dir");
    assert_eq!(snap["curtin"]["mode"], 0o755);
    // Volatile directories are there, with their modes, and empty.
    for v in VOLATILE {
        assert_eq!(snap[*v]["type"], "dir", "{v}");
        assert!(
            !snap
                .keys()
                .any(|k| k.starts_with(&format!("{v}/")) && !k.starts_with("var/tmpx")),
            "{v} not empty"
        );
    }
    assert_eq!(snap["tmp"]["mode"], 0o1777);

    // Independent tools agree on the details a deploy depends on.
    let caps = sh(Command::new("getcap").arg(dest.join("usr/bin/ping")));
    assert!(caps.contains("cap_net_raw=ep"), "{caps}");
    let acl = sh(Command::new("getfacl")
        .args(["-n", "-c"])
        .arg(dest.join("srv/acl-dir")));
    assert!(acl.contains("default:user:1234:rwx"), "{acl}");
    assert!(acl.contains("default:group:2345:r-x"), "{acl}");
    let x = sh(Command::new("getfattr")
        .args(["-h", "-d", "-m", "-", "-e", "text"])
        .arg(dest.join("usr/bin/xattrs")));
    for want in [
        "user.comment=\"hello world\"",
        "trusted.overlay.opaque=\"y\"",
        "security.selinux=\"system_u:object_r:bin_t:s0",
    ] {
        assert!(x.contains(want), "{want} missing in {x}");
    }
    // Sparse: 1 GiB apparent, about 2 MiB allocated, like the source.
    let alloc = snap["var/lib/sparse.img"]["alloc"].as_u64().unwrap();
    assert!(
        alloc <= 4 << 20,
        "sparse file came back with {alloc} bytes allocated"
    );
    assert_eq!(snap["var/lib/sparse.img"]["size"], 1u64 << 30);
}

#[test]
fn curtins_exact_command_without_acls_keeps_acls_caps_and_labels() {
    let env = Env::new();
    let run = env.capture("out", NO_SCRUB);
    run.ok();
    let dest = env.path("x");
    // extract.py: tar -C T --xattrs --xattrs-include=* -Sxpf F --numeric-owner
    let out = gnu_extract(&run.artifact(), &dest, &[]);
    assert_restored(
        "curtin's extraction",
        out,
        &source_snapshot(&env),
        &dest,
        &expected_differences(),
    );
    let acl = sh(Command::new("getfacl")
        .args(["-n", "-c"])
        .arg(dest.join("srv/acl-file")));
    assert!(
        acl.contains("user:1234:rwx") && acl.contains("group:2345:r-x"),
        "{acl}"
    );
}

#[test]
fn curtin_streaming_from_stdin_works() {
    // Remote sources: wget URL -O - | smtar -C T --xattrs --xattrs-include=* -Sxpf - --numeric-owner
    let env = Env::new();
    let run = env.capture("out", NO_SCRUB);
    run.ok();
    let dest = env.path("x");
    std::fs::create_dir_all(&dest).unwrap();
    let mime = sh(Command::new("file")
        .args(["--mime-type", "-b"])
        .arg(run.artifact()));
    assert_eq!(
        mime.trim(),
        "application/gzip",
        "smtar sniffs the MIME type to pick -z"
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg("cat \"$1\" | tar -C \"$2\" --xattrs --xattrs-include='*' -Sxpzf - --numeric-owner")
        .arg("sh")
        .arg(run.artifact())
        .arg(&dest)
        .output()
        .unwrap();
    assert_restored(
        "streamed extraction",
        out,
        &source_snapshot(&env),
        &dest,
        &expected_differences(),
    );
}

#[test]
fn bsdtar_restores_the_tree() {
    require_tool("bsdtar");
    let env = Env::new();
    let run = env.capture("out", NO_SCRUB);
    run.ok();
    let dest = env.path("x");
    let out = bsd_extract(&run.artifact(), &dest);
    let mut ignore = expected_differences();
    // bsdtar never restores the mtime of the extraction directory itself.
    ignore.push((".", "mtime_ns"));
    assert_restored("bsdtar", out, &source_snapshot(&env), &dest, &ignore);
}

#[test]
fn zstd_artifact_restores_the_tree() {
    require_tool("zstd");
    let env = Env::new();
    let run = env.capture("out", &["--format", "tzst", "--operations", "none"]);
    run.ok();
    let artifact = run.out.join(ARTIFACT.replace(".tgz", ".tar.zst"));
    sh(Command::new("zstd").arg("-t").arg(&artifact));
    let dest = env.path("x");
    let out = gnu_extract(&artifact, &dest, &["--acls", "--zstd"]);
    assert_restored(
        "GNU tar --zstd",
        out,
        &source_snapshot(&env),
        &dest,
        &expected_differences(),
    );
}

#[test]
fn archive_layout_is_sorted_prefixed_and_stores_hardlinks_once() {
    let env = Env::new();
    let run = env.capture("out", NO_SCRUB);
    run.ok();
    let names = tar_list(&run.artifact());
    assert_eq!(names[0], "./");
    assert!(
        names.iter().all(|n| n.starts_with("./")),
        "every name is ./-prefixed"
    );
    assert!(names.contains(&"./curtin/".to_owned()));
    assert!(
        names.contains(&"./proc/".to_owned()) && !names.iter().any(|n| n.starts_with("./proc/1"))
    );
    assert!(
        !names.iter().any(|n| n == "./srv/sock"),
        "sockets are skipped"
    );
    // Hardlinks: one body, links after it (GNU tar -tv shows "link to").
    let verbose = sh(Command::new("tar").args(["-tvf"]).arg(run.artifact()));
    let links: Vec<&str> = verbose
        .lines()
        .filter(|l| l.contains(" link to "))
        .collect();
    assert_eq!(links.len(), 2, "{links:?}");
    assert!(
        links.iter().all(|l| l.ends_with("link to ./etc/hl-c")),
        "{links:?}"
    );
    // Device nodes keep their numbers, owners their numeric ids and names.
    let n = sh(Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(run.artifact()));
    assert!(
        n.lines().any(|l| l.starts_with("crw")
            && l.contains("240,1048575")
            && l.ends_with("./usr/share/devnodes/bigminor")),
        "{n}"
    );
    assert!(
        n.lines()
            .any(|l| l.contains("3000000/3000001") && l.ends_with("./srv/owned-bigid")),
        "{n}"
    );
    assert!(
        verbose
            .lines()
            .any(|l| l.contains("bigid/bigid") && l.ends_with("./srv/owned-bigid")),
        "names from the root's passwd"
    );
}

#[test]
fn xattr_names_with_equals_and_percent_survive_gnu_tar() {
    let env = Env::new();
    let f = env.root().join("srv/odd-xattrs");
    std::fs::write(&f, "x").unwrap();
    for (name, value) in [("user.a=b", "v1"), ("user.50%", "v2")] {
        sh(Command::new("setfattr")
            .args(["-n", name, "-v", value])
            .arg(&f));
    }
    let run = env.capture("out", NO_SCRUB);
    run.ok();
    let dest = env.path("x");
    assert!(gnu_extract(&run.artifact(), &dest, &[]).status.success());
    let got = sh(Command::new("getfattr")
        .args(["-d", "-m", "^user\\."])
        .arg(dest.join("srv/odd-xattrs")));
    // getfattr prints '=' inside a name as \075.
    assert!(
        got.contains("user.a\\075b=\"v1\"") && got.contains("user.50%=\"v2\""),
        "{got}"
    );
}

/// Large files the page cache does not hold are read with `O_DIRECT`; what
/// is archived must not depend on it. Sizes around the 64 KiB threshold and
/// the 4 KiB alignment, and a sparse file whose last data ends unaligned,
/// restore exactly; a second capture with everything cached gives the same
/// bytes.
#[test]
fn uncached_large_files_restore_exactly_and_identically_to_cached_ones() {
    use std::os::unix::fs::FileExt;
    require_tool("tar");
    let env = Env::new();
    let dir = env.root().join("srv/cold");
    std::fs::create_dir(&dir).unwrap();
    let sizes = [
        65_535,
        65_536,
        1 << 20,
        (1 << 20) + 1,
        3 * (1 << 20) + 4095,
        5_000_000,
    ];
    for (i, n) in sizes.into_iter().enumerate() {
        std::fs::write(dir.join(format!("f{n}")), noise(n, i as u64 + 7)).unwrap();
    }
    let sparse = std::fs::File::create(dir.join("sparse.img")).unwrap();
    sparse.write_all_at(&noise(200 << 10, 1), 0).unwrap();
    sparse.write_all_at(&noise(300_001, 2), 6 << 20).unwrap();
    drop(sparse);
    drop_page_cache();

    let cold = env.capture("cold", NO_SCRUB);
    cold.ok();
    // Five plain files of 64 KiB or more, and both data segments of
    // sparse.img (more if the sample root has other large files).
    let direct = cold.count("direct_reads");
    assert!(
        direct >= 7,
        "only {direct} ranges read with O_DIRECT: is the test directory on a disk?"
    );
    let dest = env.path("x");
    let out = gnu_extract(&cold.artifact(), &dest, &["--acls"]);
    assert_restored(
        "GNU tar",
        out,
        &source_snapshot(&env),
        &dest,
        &expected_differences(),
    );

    sh(Command::new("sh")
        .arg("-c")
        .arg("cat -- * >/dev/null")
        .current_dir(&dir));
    let warm = env.capture("warm", NO_SCRUB);
    warm.ok();
    assert_eq!(
        md5sum(&cold.artifact()),
        md5sum(&warm.artifact()),
        "the read path changed the archive"
    );
}
