//! `goldcap verify` as a gate: archives that would hurt a deploy — members
//! outside the target, files written through a symlink, hard links to
//! nothing, truncated or padded streams, zstd data named `.tgz`, a
//! `/etc/machine-id` that loops or leads to an id — are each a listed FAIL
//! (exit status 4). The archives are built with Python's `tarfile`, not
//! with goldcap.

use crate::common::*;
use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

/// Builds `name` in `dir` from a Python list of members: `(name, type,
/// data-or-link)` with type `f` (file), `d`, `l` (symlink), `h` (hard
/// link); `post` is Python run on `raw` (the tar bytes) before they are
/// gzipped (or written as they are when `name` ends in `.zst`).
fn archive(dir: &Path, name: &str, members: &str, post: &str) -> std::path::PathBuf {
    let out = dir.join(name);
    let script = format!(
        r#"
import gzip, io, tarfile, subprocess, sys
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
    for name, kind, arg in {members}:
        ti = tarfile.TarInfo(name)
        ti.type = {{"f": tarfile.REGTYPE, "d": tarfile.DIRTYPE, "l": tarfile.SYMTYPE, "h": tarfile.LNKTYPE}}[kind]
        data = arg.encode() if kind == "f" else b""
        ti.size = len(data)
        if kind in "lh":
            ti.linkname = arg
        t.addfile(ti, io.BytesIO(data) if kind == "f" else None)
raw = buf.getvalue()
{post}
out = sys.argv[1]
if out.endswith(".zst") or out.endswith("zst-named.tgz"):
    open(out, "wb").write(subprocess.run(["zstd", "-q", "-c"], input=raw, capture_output=True, check=True).stdout)
else:
    open(out, "wb").write(gzip.compress(raw))
"#
    );
    sh(Command::new("python3").arg("-c").arg(script).arg(&out));
    out
}

const BASE: &str = r#"[("./", "d", ""), ("./curtin/", "d", ""), ("./etc/", "d", ""), ("./etc/machine-id", "f", "")]"#;

/// Runs verify on `art` (no MANIFEST); the names of the failed checks.
fn failed(art: &Path) -> (i32, Vec<String>, String) {
    let o = goldcap(&[std::ffi::OsStr::new("verify"), art.as_os_str()]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let names = out
        .lines()
        .filter_map(|l| l.strip_prefix("FAIL  "))
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .filter(|n| n != "manifest")
        .collect();
    (o.status.code().unwrap(), names, out)
}

#[test]
fn archives_that_would_hurt_a_deploy_fail_by_name() {
    require_root();
    let t = tempfile::tempdir_in(test_tmp()).unwrap();
    let d = t.path();
    let with = |extra: &str| format!("{} + [{extra}]", BASE);
    let cases: Vec<(std::path::PathBuf, &[&str])> = vec![
        (archive(d, "ok.tgz", BASE, ""), &[]),
        (
            archive(
                d,
                "dotdot.tgz",
                &with(r#"("../../etc/cron.d/x", "f", "x")"#),
                "",
            ),
            &["member-names"],
        ),
        (
            archive(
                d,
                "absolute.tgz",
                &with(r#"("/etc/cron.d/x", "f", "x")"#),
                "",
            ),
            &["member-names"],
        ),
        (
            archive(
                d,
                "through.tgz",
                &with(r#"("./srv", "l", "/etc"), ("./srv/cron.d/x", "f", "x")"#),
                "",
            ),
            &["through-symlink"],
        ),
        (
            archive(
                d,
                "link-out.tgz",
                &with(r#"("./x", "h", "/etc/shadow")"#),
                "",
            ),
            &["hard-links"],
        ),
        (
            archive(
                d,
                "link-later.tgz",
                &with(r#"("./x", "h", "./y"), ("./y", "f", "y")"#),
                "",
            ),
            &["hard-links"],
        ),
        (
            archive(
                d,
                "truncated.tgz",
                BASE,
                "raw = raw[:(len(raw.rstrip(b'\\0')) + 511) // 512 * 512]",
            ),
            &["end-of-archive"],
        ),
        (
            archive(d, "trailing.tgz", BASE, "raw = raw + b'junk' + bytes(2044)"),
            &["end-of-archive"],
        ),
        (archive(d, "zst-named.tgz", BASE, ""), &["format"]),
        (
            archive(
                d,
                "loop.tgz",
                r#"[("./", "d", ""), ("./curtin/", "d", ""), ("./etc/", "d", ""),
                    ("./etc/machine-id", "l", "mid2"), ("./etc/mid2", "l", "machine-id")]"#,
                "",
            ),
            &["machine-id"],
        ),
        (
            archive(
                d,
                "chain.tgz",
                r#"[("./", "d", ""), ("./curtin/", "d", ""), ("./etc/", "d", ""),
                    ("./etc/machine-id", "l", "mid2"), ("./etc/mid2", "l", "/var/lib/id"),
                    ("./var/", "d", ""), ("./var/lib/", "d", ""),
                    ("./var/lib/id", "f", "0123456789abcdef0123456789abcdef\n")]"#,
                "",
            ),
            &["machine-id"],
        ),
    ];
    for (art, want) in cases {
        let (code, names, out) = failed(&art);
        assert_eq!(names, *want, "{}:\n{out}", art.display());
        // (No MANIFEST next to these: that check fails too.)
        assert_eq!(code, 4, "{out}");
    }
    let (_, _, out) = failed(&d.join("loop.tgz"));
    assert!(out.contains("is a symlink loop"), "{out}");
    let (_, _, out) = failed(&d.join("chain.tgz"));
    assert!(out.contains("holds an id (0123456789abcdef"), "{out}");
}

#[test]
fn a_leap_second_cannot_date_a_capture() {
    let o = goldcap(&["capture", "--date", "2016-12-31T23:59:60Z"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("leap second"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn quiet_verify_and_scrub_print_only_failures() {
    // (The plain sample root has sshd and no regenerator: a FAIL.)
    let env = identity_env("debian");
    let r = env.capture("out", &["-q"]);
    r.ok();
    let o = goldcap(&[
        std::ffi::OsString::from("-q"),
        "verify".into(),
        r.artifact().into(),
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert!(o.stdout.is_empty() && o.stderr.is_empty(), "{o:?}");
    std::fs::remove_file(r.file(MANIFEST_JSON)).unwrap();
    let o = goldcap(&[
        std::ffi::OsString::from("-q"),
        "verify".into(),
        r.artifact().into(),
    ]);
    assert_eq!(o.status.code(), Some(4));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.lines()
            .all(|l| l.starts_with("FAIL") || l.ends_with("1 check failed")),
        "{out}"
    );
    let o = goldcap(&[
        std::ffi::OsString::from("-q"),
        "scrub".into(),
        "--dry-run".into(),
        "--root".into(),
        env.root().into(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(o.stdout.is_empty() && o.stderr.is_empty(), "{o:?}");
}

/// Runs verify on `art` under `/usr/bin/time`: exit status, stdout, peak
/// RSS in MiB.
fn verify_rss(art: &Path) -> (i32, String, u64) {
    let o = Command::new("/usr/bin/time")
        .args(["-f", "maxrss %M"])
        .arg(env!("CARGO_BIN_EXE_goldcap"))
        .arg("verify")
        .arg(art)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    let kib: u64 = err
        .lines()
        .find_map(|l| l.strip_prefix("maxrss "))
        .unwrap_or_else(|| panic!("{err}"))
        .trim()
        .parse()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    (o.status.code().unwrap(), out, kib >> 10)
}

/// A 100 MiB PAX header or GNU long name is refused at its header, before
/// the tar reader buffers it (it cost 138 MB); 512 MiB of zeros after the
/// end of the archive stream through.
#[test]
fn huge_metadata_is_refused_and_trailing_zeros_stream() {
    require_root();
    let t = tempfile::tempdir_in(test_tmp()).unwrap();
    let d = t.path();
    let huge = 100 << 20;
    let pax = archive(
        d,
        "pax.tgz",
        BASE,
        &format!(
            "h = tarfile.TarInfo('./etc/x'); h.pax_headers = {{'comment': 'a' * {huge}}}\n\
             raw = h.tobuf(tarfile.PAX_FORMAT) + raw"
        ),
    );
    let long = archive(
        d,
        "long.tgz",
        BASE,
        &format!(
            "h = tarfile.TarInfo('./' + 'a' * {huge})\n\
             raw = h.tobuf(tarfile.GNU_FORMAT) + raw"
        ),
    );
    for (art, what) in [(&pax, "a PAX extended"), (&long, "a GNU long-name")] {
        let (code, out, rss) = verify_rss(art);
        assert_eq!(code, 4, "{out}");
        assert!(
            out.contains(&format!(
                "unreadable: {what} header at byte 0 is {} bytes, more than the 16 MiB",
                huge + if what.contains("GNU") { 3 } else { 19 }
            )),
            "{out}"
        );
        eprintln!("{}: peak RSS {rss} MiB", art.display());
        assert!(rss < 60, "peak RSS {rss} MiB");
    }
    // A good archive followed by a gzip member of 512 MiB of zeros.
    let zeros = archive(d, "zeros.tgz", BASE, "");
    sh(Command::new("sh").arg("-c").arg(format!(
        "head -c 512M /dev/zero | gzip -1 >> '{}'",
        zeros.display()
    )));
    let (_, out, rss) = verify_rss(&zeros);
    assert!(out.contains("ok    archive"), "{out}");
    assert!(out.contains("ok    end-of-archive"), "{out}");
    eprintln!("trailing zeros: peak RSS {rss} MiB");
    assert!(rss < 60, "peak RSS {rss} MiB");
}

/// The bound follows GNU tar's own archives member by member — old GNU
/// sparse members with extension blocks, PAX sparse members, long names —
/// so an oversized header after them is found at its offset, and the
/// archives themselves pass.
#[test]
fn the_header_bound_follows_gnu_tar_archives() {
    require_root();
    let t = tempfile::tempdir_in(test_tmp()).unwrap();
    let d = t.path();
    let src = d.join("src");
    std::fs::create_dir_all(src.join("curtin")).unwrap();
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/machine-id"), "").unwrap();
    std::fs::write(src.join(format!("{}.txt", "n".repeat(200))), "long name").unwrap();
    // 40 data regions: more than a GNU header's 4, so extension blocks.
    let f = std::fs::File::create(src.join("sparse")).unwrap();
    for i in 0..40u64 {
        std::os::unix::fs::FileExt::write_at(&f, &[b'x'; 1000], i * 65536).unwrap();
    }
    f.set_len(40 * 65536 + 4096).unwrap();
    for format in ["gnu", "pax"] {
        let art = d.join(format!("{format}.tgz"));
        sh(Command::new("tar")
            .arg(format!("--format={format}"))
            .args(["-S", "-C"])
            .arg(&src)
            .arg("-czf")
            .arg(&art)
            .arg("."));
        let (code, out, _) = verify_rss(&art);
        assert!(out.contains("ok    archive"), "{out}");
        assert!(out.contains("ok    end-of-archive"), "{out}");
        assert_eq!(code, 4, "{out}"); // no MANIFEST
        // The same members, then a PAX header of 20 MiB where the end of
        // the archive was.
        let script = r#"
import gzip, sys, tarfile
raw = gzip.decompress(open(sys.argv[1], "rb").read()).rstrip(b"\0")
raw += bytes(-len(raw) % 512)
h = tarfile.TarInfo("x"); h.type = tarfile.XHDTYPE; h.size = 20 << 20
print(len(raw))
open(sys.argv[1], "wb").write(gzip.compress(raw + h.tobuf(tarfile.USTAR_FORMAT) + bytes(20 << 20)))
"#;
        let at = sh(Command::new("python3").arg("-c").arg(script).arg(&art));
        let (code, out, _) = verify_rss(&art);
        assert_eq!(code, 4, "{out}");
        assert!(
            out.contains(&format!(
                "a PAX extended header at byte {} is 20971520 bytes",
                at.trim()
            )),
            "{format}: {out}"
        );
    }
}

#[test]
fn the_summary_names_the_manifest_and_verify_takes_it() {
    let env = Env::new();
    let run = env.capture("out", &["-v"]);
    run.ok();
    let json = run.file(MANIFEST_JSON);
    let err = run.stderr();
    let shown = json.to_str().unwrap();
    assert!(
        err.contains(&format!("; MANIFEST {shown})")),
        "the summary names the MANIFEST:\n{err}"
    );
    let next = err
        .lines()
        .find(|l| l.starts_with("goldcap: next: goldcap verify "))
        .unwrap_or_else(|| panic!("no next step in:\n{err}"));
    assert!(
        next.contains(&format!("goldcap upload {shown} --to ")),
        "{next}"
    );

    // The MANIFEST alone is enough: verify checks the artifact it names.
    let o = goldcap(&[OsStr::new("verify"), OsStr::new("--json"), json.as_os_str()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["artifact"], run.artifact().to_str().unwrap(), "{v}");
    let checks = v["checks"].as_array().unwrap();
    for name in ["manifest", "size", "md5", "sha256", "curtin"] {
        let c = checks.iter().find(|c| c["name"] == name).unwrap();
        assert_eq!(c["ok"], true, "{c}");
    }

    // A JSON that is not a goldcap MANIFEST is a usage error that says so.
    let bogus = env.path("x.json");
    std::fs::write(&bogus, "{}").unwrap();
    let o = goldcap(&[OsStr::new("verify"), bogus.as_os_str()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not a goldcap JSON MANIFEST"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
