//! `goldcap apply`: a capture of the sample root applied to a target comes
//! back as the source (treesnap, entry by entry) and as GNU tar's restore
//! of the same artifact; a damaged artifact fails with exit 4 and leaves
//! the marker; hostile archives (built with Python's tarfile) write
//! nothing outside the target; an artifact without a MANIFEST is applied
//! but said to be unverified.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MARKER: &str = ".goldcap-apply-incomplete";

/// Fidelity is measured without the identity scrub.
const NO_SCRUB: &[&str] = &["--operations", "none"];

fn apply(source: &Path, target: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<std::ffi::OsString> = vec![
        "apply".into(),
        source.into(),
        "--target".into(),
        target.into(),
    ];
    args.extend(extra.iter().map(Into::into));
    goldcap(&args)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stderr:\n{}\nstdout:\n{}",
        stderr(o),
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn apply_restores_the_sample_root_as_the_source_and_as_gnu_tar_does() {
    require_tool("tar");
    let env = Env::new();
    let run = env.capture("out", NO_SCRUB);
    run.ok();
    let dest = env.path("applied");
    let out = apply(&run.file(MANIFEST_JSON), &dest, &[]);
    assert_code(&out, 0);
    let err = stderr(&out);
    assert!(
        err.contains("size, md5 and sha256 match the MANIFEST"),
        "{err}"
    );
    assert!(
        !dest.join(MARKER).exists(),
        "the marker is removed after success"
    );

    // Against the source: only what every capture changes on purpose.
    let applied = snapshot(&dest, &[]);
    let d = diff(
        &snapshot(&env.root(), VOLATILE),
        &applied,
        &[("curtin", "*"), ("srv/sock", "*")],
    );
    assert!(
        d.is_empty(),
        "apply differs from the source:\n{}",
        d.join("\n")
    );

    // Against GNU tar's restore of the same artifact, entry by entry.
    let gnu = env.path("gnu");
    let x = gnu_extract(&run.artifact(), &gnu, &["--acls"]);
    assert!(x.status.success(), "{}", String::from_utf8_lossy(&x.stderr));
    let d = diff(&snapshot(&gnu, &[]), &applied, &[]);
    assert!(
        d.is_empty(),
        "apply differs from GNU tar:\n{}",
        d.join("\n")
    );

    // Independent tools on what a deploy depends on.
    let caps = sh(Command::new("getcap").arg(dest.join("usr/bin/ping")));
    assert!(caps.contains("cap_net_raw=ep"), "{caps}");
    let acl = sh(Command::new("getfacl")
        .args(["-n", "-c"])
        .arg(dest.join("srv/acl-dir")));
    assert!(acl.contains("default:user:1234:rwx"), "{acl}");
    let x = sh(Command::new("getfattr")
        .args(["-h", "-d", "-m", "-", "-e", "text"])
        .arg(dest.join("usr/bin/xattrs")));
    assert!(
        x.contains("security.selinux=\"system_u:object_r:bin_t:s0"),
        "{x}"
    );
    let alloc = applied["var/lib/sparse.img"]["alloc"].as_u64().unwrap();
    assert!(
        alloc <= 4 << 20,
        "sparse file applied with {alloc} bytes allocated"
    );
    assert_eq!(applied["var/lib/sparse.img"]["size"], 1u64 << 30);

    // --json: verified, the digests, no failure.
    let again = env.path("applied-json");
    let out = apply(&run.artifact(), &again, &["--json", "-q"]);
    assert_code(&out, 0);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["verified"], true, "{j}");
    assert_eq!(j["format"], "gzip");
    assert_eq!(
        j["digests"]["sha256"].as_str(),
        Some(sha256sum(&run.artifact()).as_str())
    );
    assert_eq!(j["refused"]["count"], 0);
    assert!(j["failure"].is_null());
}

#[test]
fn a_zstd_artifact_named_directly_is_found_verified_and_applied() {
    let env = Env::new();
    let run = env.capture("out", &["--format", "tzst", "--operations", "none"]);
    run.ok();
    let artifact = run.any_artifact();
    assert!(artifact.to_string_lossy().ends_with(".tar.zst"));
    let dest = env.path("applied");
    // The artifact itself: its MANIFEST is found next to it.
    let out = apply(&artifact, &dest, &[]);
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("match the MANIFEST"),
        "{}",
        stderr(&out)
    );
    let d = diff(
        &snapshot(&env.root(), VOLATILE),
        &snapshot(&dest, &[]),
        &[("curtin", "*"), ("srv/sock", "*")],
    );
    assert!(d.is_empty(), "{}", d.join("\n"));
}

#[test]
fn a_corrupted_artifact_exits_4_names_the_mismatch_and_leaves_the_marker() {
    let env = Env::new();
    let run = env.capture("out", NO_SCRUB);
    run.ok();
    let art = run.artifact();
    let mut bytes = std::fs::read(&art).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&art, &bytes).unwrap();
    let dest = env.path("applied");
    // -q: the failure is an error, said all the same.
    let out = apply(&run.file(MANIFEST_JSON), &dest, &["-q"]);
    assert_code(&out, 4);
    let err = stderr(&out);
    assert!(err.contains("does not match its MANIFEST"), "{err}");
    assert!(err.contains("sha256") && err.contains("md5"), "{err}");
    let marker = std::fs::read_to_string(dest.join(MARKER)).unwrap();
    assert!(
        marker.contains("FAILED: the artifact does not match its MANIFEST"),
        "{marker}"
    );
    let promised = run.manifest_json()["sha256"].as_str().unwrap().to_owned();
    assert!(marker.contains(&promised), "{marker}");

    // A rerun onto it is refused without --force, and names the marker.
    let out = apply(&run.file(MANIFEST_JSON), &dest, &[]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains(MARKER), "{}", stderr(&out));

    // A MANIFEST that promises fewer bytes: refused as soon as they pass.
    let json = run.file(MANIFEST_JSON);
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    m["size"] = serde_json::json!(1000);
    std::fs::write(&json, m.to_string()).unwrap();
    let short = env.path("short");
    let out = apply(&json, &short, &[]);
    assert_code(&out, 4);
    assert!(
        stderr(&out).contains("larger than its size, 1000 bytes"),
        "{}",
        stderr(&out)
    );
    assert!(short.join(MARKER).exists());
}

#[test]
fn without_a_manifest_it_applies_and_says_nothing_was_verified() {
    let env = Env::new();
    let run = env.capture("out", NO_SCRUB);
    run.ok();
    let alone = env.path("alone");
    std::fs::create_dir(&alone).unwrap();
    let art = alone.join("image.tgz");
    std::fs::copy(run.artifact(), &art).unwrap();
    let dest = env.path("applied");
    let out = apply(&art, &dest, &["--json"]);
    assert_code(&out, 0);
    let err = stderr(&out);
    assert!(err.contains("nothing will be verified"), "{err}");
    assert!(err.contains("NOT verified: no MANIFEST"), "{err}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["verified"], false);
    assert!(j["manifest"].is_null());
    assert!(dest.join("etc/hl-c").is_file());
    assert!(!dest.join(MARKER).exists());
}

/// Writes `script` (Python, with `t` an open `tarfile` and helpers `f`,
/// `sym`, `hard`, `d`) into the archive `path`.
fn python_tar(path: &Path, script: &str) {
    let prog = format!(
        r#"
import io, sys, tarfile
t = tarfile.open(sys.argv[1], "w:gz", format=tarfile.PAX_FORMAT)
def f(name, data=b"x"):
    i = tarfile.TarInfo(name); i.size = len(data); t.addfile(i, io.BytesIO(data))
def sym(name, target):
    i = tarfile.TarInfo(name); i.type = tarfile.SYMTYPE; i.linkname = target; t.addfile(i)
def hard(name, target):
    i = tarfile.TarInfo(name); i.type = tarfile.LNKTYPE; i.linkname = target; t.addfile(i)
def d(name):
    i = tarfile.TarInfo(name); i.type = tarfile.DIRTYPE; i.mode = 0o755; t.addfile(i)
{script}
t.close()
"#
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(prog)
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every name and content under `dir`.
fn contents(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                stack.push(e.path());
                v.push((e.path(), Vec::new()));
            } else {
                v.push((e.path(), std::fs::read(e.path()).unwrap_or_default()));
            }
        }
    }
    v.sort();
    v
}

#[test]
fn hostile_archives_write_nothing_outside_the_target() {
    require_root();
    let t = tempfile::Builder::new()
        .prefix("goldcap-apply-")
        .tempdir_in(test_tmp())
        .unwrap();
    let sentinel = t.path().join("sentinel");
    std::fs::create_dir(&sentinel).unwrap();
    std::fs::write(sentinel.join("keep"), "unchanged").unwrap();
    let before = contents(&sentinel);
    let passwd_links = std::fs::metadata("/etc/passwd").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.nlink()
    });
    let s = sentinel.display().to_string();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "dotdot",
            "f('../sentinel/dotdot')".into(),
            "../sentinel/dotdot (outside the target)",
        ),
        (
            "deep-dotdot",
            "f('./a/../../sentinel/deep')".into(),
            "outside the target",
        ),
        ("absolute", format!("f('{s}/abs')"), "outside the target"),
        (
            "through-symlink",
            format!("sym('./esc', '{s}')\nf('./esc/through')"),
            "./esc/through (through the symlink ./esc",
        ),
        (
            "relative-escape",
            "sym('up', '../../sentinel')\nd('up/sub/')\nf('up/sub/x')".into(),
            "up/sub/x (through the symlink",
        ),
        (
            "hardlink-out",
            "hard('./pw', '/etc/passwd')".into(),
            "./pw (hard link to /etc/passwd, outside the target)",
        ),
        (
            "hardlink-not-earlier",
            "hard('./pw2', 'etc/passwd')\nf('etc/passwd')".into(),
            "./pw2 (hard link to etc/passwd, which was not extracted before it)",
        ),
        (
            "hardlink-dotdot",
            "hard('./pw3', '../sentinel/keep')".into(),
            "outside the target",
        ),
        (
            "symlink-replaced-then-write",
            format!("d('./x/')\nsym('./x2', '{s}')\nf('./x2/keep', b'overwritten')"),
            "through the symlink ./x2",
        ),
        (
            "marker",
            format!("f('./{MARKER}', b'fake')"),
            "goldcap's own marker",
        ),
        (
            "empty-symlink",
            "sym('./e', '')".into(),
            "./e (a symlink to an empty",
        ),
        (
            "file-then-dir-then-link",
            "f('./fd')\nd('./fd/')\nhard('./fdl', './fd')".into(),
            "./fdl (hard link to ./fd, which was not extracted before it)",
        ),
    ];
    for (name, script, want) in &cases {
        let art = t.path().join(format!("{name}.tgz"));
        python_tar(&art, &format!("f('./ok.txt', b'fine')\n{script}"));
        let target = t.path().join(format!("targets/{name}/root"));
        let out = apply(&art, &target, &[]);
        assert_code(&out, 4);
        let err = stderr(&out);
        assert!(
            err.contains("refused") && err.contains(want),
            "{name}: {err}"
        );
        assert!(
            err.contains("NOT verified") || err.contains("nothing will be verified"),
            "{name}: {err}"
        );
        // The honest entry is there, the marker says the run failed.
        assert_eq!(
            std::fs::read(target.join("ok.txt")).unwrap(),
            b"fine",
            "{name}"
        );
        let marker = std::fs::read_to_string(target.join(MARKER)).unwrap();
        assert!(
            marker.contains("FAILED") && marker.contains("refused"),
            "{name}: {marker}"
        );
        // Nothing beside the target, nothing in the sentinel.
        let beside: Vec<String> = list_dir(&t.path().join(format!("targets/{name}")));
        assert_eq!(beside, ["root"], "{name}");
        assert_eq!(contents(&sentinel), before, "{name}");
    }
    let after = std::fs::metadata("/etc/passwd").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.nlink()
    });
    assert_eq!(passwd_links.ok(), after.ok(), "/etc/passwd gained a link");
}

#[test]
fn the_target_must_be_empty_unless_forced_and_never_the_running_root() {
    let env = Env::new();
    let run = env.capture("out", NO_SCRUB);
    run.ok();
    let out = apply(&run.file(MANIFEST_JSON), Path::new("/"), &["--force"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("running system's /"),
        "{}",
        stderr(&out)
    );
    let dest = env.path("busy");
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(dest.join("old"), "x").unwrap();
    let out = apply(&run.file(MANIFEST_JSON), &dest, &[]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    let out = apply(&run.file(MANIFEST_JSON), &dest, &["--force"]);
    assert_code(&out, 0);
    assert!(dest.join("old").exists() && dest.join("usr/bin/ping").exists());
}

/// A static HTTP server for `dir` on a free port of 127.0.0.1 (Python's
/// http.server); killed on drop.
struct Http {
    child: std::process::Child,
    port: u16,
}

impl Http {
    fn serve(dir: &Path) -> Http {
        use std::io::BufRead;
        let prog = r#"
import functools, http.server, sys
h = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), h)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(prog)
            .arg(dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        Http {
            child,
            port: line.trim().parse().unwrap(),
        }
    }

    fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_http_source_is_streamed_and_verified() {
    let env = Env::new();
    let run = env.capture("out", NO_SCRUB);
    run.ok();
    let http = Http::serve(&run.out);
    // The MANIFEST's URL: the artifact is its filename, next to it.
    let dest = env.path("from-json");
    let out = apply(Path::new(&http.url(MANIFEST_JSON)), &dest, &["--json"]);
    assert_code(&out, 0);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["verified"], true, "{j}");
    assert_eq!(j["artifact"], http.url(ARTIFACT));
    let d = diff(
        &snapshot(&env.root(), VOLATILE),
        &snapshot(&dest, &[]),
        &[("curtin", "*"), ("srv/sock", "*")],
    );
    assert!(d.is_empty(), "{}", d.join("\n"));

    // The artifact's URL with a local --manifest; a query string is kept
    // for the GET and never shown.
    let dest = env.path("from-url");
    let url = format!("{}?X-Amz-Signature=secret", http.url(ARTIFACT));
    let manifest = run.file(MANIFEST_JSON);
    let out = apply(
        Path::new(&url),
        &dest,
        &["--manifest", manifest.to_str().unwrap()],
    );
    assert_code(&out, 0);
    let err = stderr(&out);
    assert!(err.contains("match the MANIFEST"), "{err}");
    assert!(!err.contains("secret"), "{err}");

    // Without a MANIFEST: applied, not verified.
    let out = apply(Path::new(&http.url(ARTIFACT)), &env.path("bare"), &[]);
    assert_code(&out, 0);
    assert!(stderr(&out).contains("NOT verified"), "{}", stderr(&out));

    // A missing object: exit 1, nothing applied, no marker.
    let dest = env.path("missing");
    let out = apply(Path::new(&http.url("nope.tgz")), &dest, &[]);
    assert_code(&out, 1);
    assert!(stderr(&out).contains("HTTP 404"), "{}", stderr(&out));
    assert!(!dest.join(MARKER).exists());
}

#[test]
fn hostname_and_machine_id_are_written_and_never_through_a_symlink() {
    let env = Env::new();
    let run = env.capture("out", NO_SCRUB);
    run.ok();
    let dest = env.path("applied");
    let out = apply(
        &run.file(MANIFEST_JSON),
        &dest,
        &[
            "--hostname",
            "clone-1",
            "--machine-id",
            "uninitialized",
            "--json",
        ],
    );
    assert_code(&out, 0);
    assert_eq!(
        std::fs::read_to_string(dest.join("etc/hostname")).unwrap(),
        "clone-1\n"
    );
    let mid = dest.join("etc/machine-id");
    assert_eq!(std::fs::read_to_string(&mid).unwrap(), "uninitialized\n");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&mid).unwrap().permissions().mode() & 0o7777,
        0o444
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["personalised"][0], "/etc/hostname: clone-1", "{j}");
    // /etc itself keeps the archive's mtime.
    let src = snapshot(&env.root(), VOLATILE);
    assert_eq!(
        snapshot(&dest, &[])["etc"]["mtime_ns"],
        src["etc"]["mtime_ns"]
    );

    // An image whose /etc is a symlink out: the hostname is refused, the
    // sentinel untouched, the marker left.
    let t = env.path("hostile");
    std::fs::create_dir_all(t.join("sentinel")).unwrap();
    let s = t.join("sentinel");
    let art = t.join("etc-out.tgz");
    python_tar(&art, &format!("sym('./etc', '{}')", s.display()));
    let target = t.join("target");
    let out = apply(&art, &target, &["--hostname", "evil"]);
    assert_code(&out, 4);
    assert!(
        stderr(&out).contains("./etc/hostname: refused (through the symlink ./etc)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(list_dir(&s), Vec::<String>::new());
    assert!(target.join(MARKER).exists());

    // A template is capture's, not apply's.
    let out = apply(
        &run.file(MANIFEST_JSON),
        &env.path("t"),
        &["--hostname", "c-{mac6}"],
    );
    assert_code(&out, 2);
}

#[test]
fn a_gnu_tar_archive_with_acl_text_only_is_restored_too() {
    require_tool("tar");
    let env = Env::new();
    let art = env.path("gnu.tgz");
    // GNU tar --acls carries ACLs as SCHILY.acl.* text (newline-separated,
    // which tar-rs's PAX parser splits), not raw xattrs; sparse files as
    // PAX 1.0, as goldcap does.
    sh(Command::new("tar")
        .args([
            "--xattrs",
            "--xattrs-include=*",
            "--acls",
            "--numeric-owner",
            "--format=posix",
            "--sparse",
            "--sparse-version=1.0",
            "-cpzf",
        ])
        .arg(&art)
        .arg("-C")
        .arg(env.root())
        .args(["--exclude=./srv/sock", "."]));
    let listed = sh(Command::new("tar").arg("--acls").arg("-tvvzf").arg(&art));
    assert!(listed.contains("srv/acl-dir"), "{listed}");
    let dest = env.path("applied");
    let out = apply(&art, &dest, &[]);
    assert_code(&out, 0);
    let acl = sh(Command::new("getfacl")
        .args(["-n", "-c"])
        .arg(dest.join("srv/acl-dir")));
    assert!(acl.contains("default:user:1234:rwx"), "{acl}");
    assert!(acl.contains("default:group:2345:r-x"), "{acl}");
    let acl = sh(Command::new("getfacl")
        .args(["-n", "-c"])
        .arg(dest.join("srv/acl-file")));
    assert!(
        acl.contains("user:1234:rwx") && acl.contains("group:2345:r-x"),
        "{acl}"
    );
    let d = diff(
        &snapshot(&env.root(), &[]),
        &snapshot(&dest, &[]),
        &[("srv/sock", "*")],
    );
    assert!(
        d.is_empty(),
        "apply of GNU tar's archive differs:\n{}",
        d.join("\n")
    );
}

#[test]
fn gnu_tar_sparse_formats_come_back_with_their_holes() {
    require_tool("tar");
    let t = tempfile::Builder::new()
        .prefix("goldcap-apply-")
        .tempdir_in(test_tmp())
        .unwrap();
    let root = t.path().join("root");
    std::fs::create_dir(&root).unwrap();
    // 64 MiB, data at 1 MiB and 40 MiB, a hole at the end.
    let f = std::fs::File::create(root.join("s.img")).unwrap();
    f.set_len(64 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&noise(70_000, 1), 1 << 20).unwrap();
    f.write_all_at(&noise(5_000, 2), 40 << 20).unwrap();
    drop(f);
    let src = snapshot(&root, &[]);
    assert_eq!(src["s.img"]["sparse"], true, "{}", src["s.img"]);
    for version in ["0.0", "0.1", "1.0"] {
        let art = t.path().join(format!("s-{version}.tgz"));
        sh(Command::new("tar")
            .args(["--format=posix", "--sparse", "--numeric-owner"])
            .arg(format!("--sparse-version={version}"))
            .arg("-cpzf")
            .arg(&art)
            .arg("-C")
            .arg(&root)
            .arg("."));
        let dest = t.path().join(format!("applied-{version}"));
        let out = apply(&art, &dest, &[]);
        assert_code(&out, 0);
        let d = diff(&src, &snapshot(&dest, &[]), &[]);
        assert!(d.is_empty(), "sparse {version}:\n{}", d.join("\n"));
    }
}
