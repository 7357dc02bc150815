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
        &[&[("curtin", "*"), ("srv/sock", "*")][..], REPORTED].concat(),
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
    let d = diff(&snapshot(&gnu, &[]), &applied, REPORTED);
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
        &[&[("curtin", "*"), ("srv/sock", "*")][..], REPORTED].concat(),
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

#[test]
fn an_archive_cut_inside_a_file_exits_4_and_says_where() {
    require_tool("tar");
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(src.join("first"), b"whole").unwrap();
    std::fs::write(src.join("big"), &body).unwrap();
    let tar = env.path("cut.tar");
    sh(Command::new("tar")
        .arg("-C")
        .arg(&src)
        .args(["-cf"])
        .arg(&tar)
        .args(["first", "big"]));
    // GNU tar: headers and bodies in 512-byte blocks; cut 1 MB into big's.
    let whole = std::fs::read(&tar).unwrap();
    std::fs::write(&tar, &whole[..1_000_000]).unwrap();
    let dest = env.path("applied");
    let out = apply(&tar, &dest, &[]);
    assert_code(&out, 4);
    let err = stderr(&out);
    assert!(err.contains("cut short inside big"), "{err}");
    assert!(dest.join(MARKER).is_file());
    assert_eq!(std::fs::read(dest.join("first")).unwrap(), b"whole");
}

#[test]
fn a_full_target_exits_1_names_the_file_and_leaves_the_marker() {
    // 5 MiB of noise does not fit a 1 MiB filesystem.
    let (env, _) = multi_block_env();
    let run = env.capture("out", NO_SCRUB);
    run.ok();
    let dest = env.path("small");
    let _small = MountGuard::mount(&["-t", "tmpfs", "-o", "size=1m", "tmpfs"], &dest);
    let out = apply(&run.file(MANIFEST_JSON), &dest, &[]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("cannot write ./"), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    let marker = std::fs::read_to_string(dest.join(MARKER)).unwrap();
    assert!(marker.contains("No space left on device"), "{marker}");
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
    // Empty directories (mount points made ready) are not in the way.
    let ready = env.path("ready");
    std::fs::create_dir_all(ready.join("boot/efi/lost+found")).unwrap();
    let out = apply(&run.file(MANIFEST_JSON), &ready, &[]);
    assert_code(&out, 0);
    let dest = env.path("busy");
    std::fs::create_dir_all(dest.join("boot/efi")).unwrap();
    std::fs::write(dest.join("boot/efi/old"), "x").unwrap();
    let out = apply(&run.file(MANIFEST_JSON), &dest, &[]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    let out = apply(&run.file(MANIFEST_JSON), &dest, &["--force"]);
    assert_code(&out, 0);
    assert!(dest.join("boot/efi/old").exists() && dest.join("usr/bin/ping").exists());
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
        &[&[("curtin", "*"), ("srv/sock", "*")][..], REPORTED].concat(),
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

    // The artifact's URL alone: the text MANIFEST beside it (as upload
    // puts it on DRP) verifies it.
    let out = apply(Path::new(&http.url(ARTIFACT)), &env.path("beside"), &[]);
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("match the MANIFEST"),
        "{}",
        stderr(&out)
    );

    // Without a MANIFEST anywhere: applied, not verified.
    let alone = env.path("alone");
    std::fs::create_dir_all(&alone).unwrap();
    std::fs::copy(run.file(ARTIFACT), alone.join(ARTIFACT)).unwrap();
    let http_alone = Http::serve(&alone);
    let out = apply(Path::new(&http_alone.url(ARTIFACT)), &env.path("bare"), &[]);
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
        &[&[("srv/sock", "*")][..], REPORTED].concat(),
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
        let d = diff(
            &src,
            &snapshot(&dest, &[]),
            &[&[("var", "*"), ("var/log", "*")][..], REPORTED].concat(),
        );
        assert!(d.is_empty(), "sparse {version}:\n{}", d.join("\n"));
    }
}

/// What the apply report and its directory change in an applied sample
/// root: ignored where an apply is compared with its source.
const REPORTED: &[(&str, &str)] = &[("var/log/goldcap-apply.json", "*"), ("var/log", "mtime_ns")];

/// A key pair made by ssh-keygen: (private, public).
fn key_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let private = dir.join(name);
    sh(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&private));
    let public = dir.join(format!("{name}.pub"));
    (private, public)
}

fn owner_mode(p: &Path) -> (u32, u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

#[test]
fn ssh_keys_go_to_the_target_users_home_with_its_owner_and_modes() {
    require_tool("ssh-keygen");
    let env = Env::new();
    let run = env.capture("out", NO_SCRUB);
    run.ok();
    let keys = env.path("keys");
    std::fs::create_dir(&keys).unwrap();
    let (private, root_pub) = key_pair(&keys, "ops");
    let (_, big_pub) = key_pair(&keys, "big");
    let dest = env.path("applied");
    let root_arg = root_pub.to_str().unwrap().to_owned();
    let big_arg = format!("{}:bigid", big_pub.display());
    let alice_arg = format!("{}:alice", root_pub.display());
    let out = apply(
        &run.file(MANIFEST_JSON),
        &dest,
        &[
            "--ssh-authorized-key",
            &root_arg,
            "--ssh-authorized-key",
            &big_arg,
            "--ssh-authorized-key",
            &alice_arg,
            "--json",
        ],
    );
    assert_code(&out, 0);
    let key = std::fs::read_to_string(&root_pub).unwrap();
    // root: /root from the target's passwd, 0700 / 0600, root-owned.
    let ak = dest.join("root/.ssh/authorized_keys");
    assert_eq!(std::fs::read_to_string(&ak).unwrap(), key);
    assert_eq!(owner_mode(&ak), (0, 0, 0o600));
    assert_eq!(owner_mode(&dest.join("root/.ssh")), (0, 0, 0o700));
    assert_eq!(owner_mode(&dest.join("root")), (0, 0, 0o700), "/root kept");
    // A user only the image knows (uid 3000000, home /nonexistent): its
    // home and .ssh are made for it.
    let ak = dest.join("nonexistent/.ssh/authorized_keys");
    assert_eq!(
        std::fs::read_to_string(&ak).unwrap(),
        std::fs::read_to_string(&big_pub).unwrap()
    );
    assert_eq!(owner_mode(&ak), (3000000, 3000001, 0o600));
    assert_eq!(
        owner_mode(&dest.join("nonexistent/.ssh")),
        (3000000, 3000001, 0o700)
    );
    assert_eq!(
        owner_mode(&dest.join("home/alice/.ssh/authorized_keys")),
        (1000, 1000, 0o600)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let done: Vec<&str> = j["personalised"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        done[0].starts_with("/root/.ssh/authorized_keys: 1 key for root from "),
        "{j}"
    );
    assert!(
        done[1].starts_with("/nonexistent/.ssh/authorized_keys: 1 key for bigid"),
        "{j}"
    );
    // The report, in the target: what was applied and done.
    assert_eq!(j["report"], "/var/log/goldcap-apply.json", "{j}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dest.join("var/log/goldcap-apply.json")).unwrap())
            .unwrap();
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(
        report["sha256"].as_str(),
        Some(sha256sum(&run.artifact()).as_str())
    );
    assert_eq!(report["personalised"], j["personalised"]);
    assert!(
        report["applied"].as_str().unwrap().ends_with('Z'),
        "{report}"
    );
    assert_eq!(
        owner_mode(&dest.join("var/log/goldcap-apply.json")).2,
        0o644
    );
    // Otherwise the source, and the ssh files are all that is new.
    let d = diff(
        &snapshot(&env.root(), VOLATILE),
        &snapshot(&dest, &[]),
        &[
            &[("curtin", "*"), ("srv/sock", "*")][..],
            REPORTED,
            &[
                ("root/.ssh", "*"),
                ("root/.ssh/authorized_keys", "*"),
                ("home/alice/.ssh", "*"),
                ("home/alice/.ssh/authorized_keys", "*"),
                ("nonexistent", "*"),
                ("nonexistent/.ssh", "*"),
                ("nonexistent/.ssh/authorized_keys", "*"),
            ],
        ]
        .concat(),
    );
    assert!(d.is_empty(), "{}", d.join("\n"));

    // Again onto it: the key is there already, not added twice.
    let out = apply(
        &run.file(MANIFEST_JSON),
        &dest,
        &["--force", "--ssh-authorized-key", &root_arg],
    );
    assert_code(&out, 0);
    assert_eq!(
        std::fs::read_to_string(dest.join("root/.ssh/authorized_keys")).unwrap(),
        key
    );
    assert!(
        stderr(&out).contains("(1 already there)"),
        "{}",
        stderr(&out)
    );

    // A user the image does not have: exit 2, the marker says why.
    let t = env.path("nouser");
    let spec = format!("{}:nosuchuser", root_pub.display());
    let out = apply(
        &run.file(MANIFEST_JSON),
        &t,
        &["--ssh-authorized-key", &spec],
    );
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("no user \"nosuchuser\" in the target's /etc/passwd"),
        "{}",
        stderr(&out)
    );
    let marker = std::fs::read_to_string(t.join(MARKER)).unwrap();
    assert!(
        marker.contains("FAILED") && marker.contains("nosuchuser"),
        "{marker}"
    );

    // The private key, or a file that is no key: refused before anything
    // is applied.
    let t = env.path("private");
    let out = apply(
        &run.file(MANIFEST_JSON),
        &t,
        &["--ssh-authorized-key", private.to_str().unwrap()],
    );
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("is a private key"),
        "{}",
        stderr(&out)
    );
    assert!(!t.exists());
    let junk = keys.join("junk.pub");
    std::fs::write(&junk, "hello world\n").unwrap();
    let out = apply(
        &run.file(MANIFEST_JSON),
        &t,
        &["--ssh-authorized-key", junk.to_str().unwrap()],
    );
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("line 1 is not an OpenSSH public key"),
        "{}",
        stderr(&out)
    );
    let out = apply(
        &run.file(MANIFEST_JSON),
        &t,
        &["--ssh-authorized-key", "/dev/zero"],
    );
    assert_code(&out, 2);
    assert!(!t.exists());
}

#[test]
fn ssh_keys_never_go_through_a_symlink_in_the_image() {
    require_tool("ssh-keygen");
    let t = tempfile::Builder::new()
        .prefix("goldcap-apply-")
        .tempdir_in(test_tmp())
        .unwrap();
    let (_, public) = key_pair(t.path(), "k");
    let sentinel = t.path().join("sentinel");
    std::fs::create_dir(&sentinel).unwrap();
    let s = sentinel.display();
    let passwd =
        "f('./etc/passwd', b'root:x:0:0:root:/root:/bin/sh\\nu:x:1000:1000::/home/u:/bin/sh\\n')";
    let cases = [
        ("root-out", format!("sym('./root', '{s}')"), "root", "through the symlink ./root"),
        (
            "ssh-out",
            format!("d('./home/')\nd('./home/u/')\nsym('./home/u/.ssh', '{s}')"),
            "u",
            "through the symlink ./home/u/.ssh",
        ),
        (
            "keys-out",
            format!("d('./root/')\nd('./root/.ssh/')\nsym('./root/.ssh/authorized_keys', '{s}/keys')"),
            "root",
            "./root/.ssh/authorized_keys: refused (a symlink)",
        ),
        (
            "keys-hardlinked",
            "f('./etc/shadow', b'secret')\nd('./root/')\nd('./root/.ssh/')\nhard('./root/.ssh/authorized_keys', './etc/shadow')".to_owned(),
            "root",
            "./root/.ssh/authorized_keys: refused (it has other hard links)",
        ),
    ];
    for (name, script, user, want) in &cases {
        let art = t.path().join(format!("{name}.tgz"));
        python_tar(&art, &format!("d('./etc/')\n{passwd}\n{script}"));
        let target = t.path().join(format!("targets/{name}"));
        let spec = format!("{}:{user}", public.display());
        let out = apply(&art, &target, &["--ssh-authorized-key", &spec]);
        assert_code(&out, 4);
        assert!(stderr(&out).contains(want), "{name}: {}", stderr(&out));
        assert_eq!(list_dir(&sentinel), Vec::<String>::new(), "{name}");
        let marker = std::fs::read_to_string(target.join(MARKER)).unwrap();
        assert!(marker.contains(want), "{name}: {marker}");
        assert!(!target.join("var/log/goldcap-apply.json").exists());
    }
    assert_eq!(
        std::fs::read(t.path().join("targets/keys-hardlinked/etc/shadow")).unwrap(),
        b"secret"
    );

    // An archived .ssh that sshd would refuse (0755, root's) becomes the
    // user's, 0700; the home keeps what the archive says.
    let art = t.path().join("ssh-dir.tgz");
    python_tar(
        &art,
        &format!("d('./etc/')\n{passwd}\nd('./home/')\nd('./home/u/')\nd('./home/u/.ssh/')"),
    );
    let target = t.path().join("targets/ssh-dir");
    let spec = format!("{}:u", public.display());
    let out = apply(&art, &target, &["--ssh-authorized-key", &spec]);
    assert_code(&out, 0);
    assert_eq!(owner_mode(&target.join("home/u/.ssh")), (1000, 1000, 0o700));
    assert_eq!(owner_mode(&target.join("home/u")), (0, 0, 0o755));
    assert_eq!(
        owner_mode(&target.join("home/u/.ssh/authorized_keys")),
        (1000, 1000, 0o600)
    );
}

#[test]
fn a_nocloud_seed_is_copied_where_cloud_init_looks() {
    let env = Env::new();
    let run = env.capture("out", NO_SCRUB);
    run.ok();
    let seed = env.path("seed");
    std::fs::create_dir(&seed).unwrap();
    std::fs::write(seed.join("user-data"), "#cloud-config\npassword: s3cret\n").unwrap();
    std::fs::write(seed.join("meta-data"), "instance-id: clone-1\n").unwrap();
    std::fs::write(seed.join("vendor-data"), "#cloud-config\n").unwrap();
    std::fs::write(seed.join("ignored.txt"), "not part of a seed").unwrap();
    let dest = env.path("applied");
    let out = apply(
        &run.file(MANIFEST_JSON),
        &dest,
        &["--nocloud", seed.to_str().unwrap(), "--json"],
    );
    assert_code(&out, 0);
    let nc = dest.join("var/lib/cloud/seed/nocloud");
    assert_eq!(
        std::fs::read_to_string(nc.join("user-data")).unwrap(),
        "#cloud-config\npassword: s3cret\n"
    );
    assert_eq!(owner_mode(&nc.join("user-data")), (0, 0, 0o600));
    assert_eq!(owner_mode(&nc.join("vendor-data")), (0, 0, 0o600));
    assert_eq!(owner_mode(&nc.join("meta-data")), (0, 0, 0o644));
    assert_eq!(list_dir(&nc), ["meta-data", "user-data", "vendor-data"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        j["personalised"][0],
        "/var/lib/cloud/seed/nocloud/: meta-data, user-data, vendor-data"
    );
    // The report names the files, never their content.
    let report = std::fs::read_to_string(dest.join("var/log/goldcap-apply.json")).unwrap();
    assert!(
        report.contains("nocloud") && !report.contains("s3cret"),
        "{report}"
    );

    // A seed without vendor-data over it: the old one is gone.
    std::fs::remove_file(seed.join("vendor-data")).unwrap();
    std::fs::write(seed.join("network-config"), "version: 2\n").unwrap();
    let out = apply(
        &run.file(MANIFEST_JSON),
        &dest,
        &["--force", "--nocloud", seed.to_str().unwrap()],
    );
    assert_code(&out, 0);
    assert_eq!(list_dir(&nc), ["meta-data", "network-config", "user-data"]);

    // Host input: regular files only, user-data and meta-data required.
    let bad = env.path("bad-seed");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(bad.join("meta-data"), "").unwrap();
    let t = env.path("never");
    let out = apply(
        &run.file(MANIFEST_JSON),
        &t,
        &["--nocloud", bad.to_str().unwrap()],
    );
    assert_code(&out, 2);
    assert!(stderr(&out).contains("no user-data"), "{}", stderr(&out));
    std::os::unix::fs::symlink("/etc/shadow", bad.join("user-data")).unwrap();
    let out = apply(
        &run.file(MANIFEST_JSON),
        &t,
        &["--nocloud", bad.to_str().unwrap()],
    );
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("not a regular file"),
        "{}",
        stderr(&out)
    );
    assert!(!t.exists());

    // An image whose seed directory is a symlink out: refused.
    let h = env.path("hostile");
    std::fs::create_dir_all(h.join("sentinel")).unwrap();
    let art = h.join("seed-out.tgz");
    python_tar(
        &art,
        &format!(
            "d('./var/')\nd('./var/lib/')\nsym('./var/lib/cloud', '{}')",
            h.join("sentinel").display()
        ),
    );
    std::fs::remove_file(bad.join("user-data")).unwrap();
    std::fs::write(bad.join("user-data"), "#cloud-config\n").unwrap();
    let out = apply(
        &art,
        &h.join("target"),
        &["--nocloud", bad.to_str().unwrap()],
    );
    assert_code(&out, 4);
    assert!(
        stderr(&out).contains("refused (through the symlink ./var/lib/cloud)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(list_dir(&h.join("sentinel")), Vec::<String>::new());
}

#[test]
fn hooks_run_in_the_applied_target_and_a_failing_one_leaves_the_marker() {
    require_root();
    require_tool("tar");
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::Builder::new()
        .prefix("goldcap-apply-")
        .tempdir_in(test_tmp())
        .unwrap();
    // A runnable image: busybox as /bin/sh, the mount points.
    let root = t.path().join("image");
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "var/log"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "echo", "test"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let art = t.path().join("image.tgz");
    sh(Command::new("tar")
        .args(["--numeric-owner", "-cpzf"])
        .arg(&art)
        .arg("-C")
        .arg(&root)
        .arg("."));
    let hook = t.path().join("10-finish");
    std::fs::write(
        &hook,
        r#"#!/bin/sh
test -r /proc/self/status || exit 7
test -c /dev/null || exit 8
test -d /sys/kernel || exit 9
test "$(cat /etc/hostname)" = "clone-7" || exit 10
test -k /tmp || exit 11
echo "finished by $GOLDCAP_HOOK for $GOLDCAP_SHA256" > /etc/finished
echo "hook says hello"
"#,
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dest = t.path().join("target");
    let out = apply(
        &art,
        &dest,
        &[
            "--hostname",
            "clone-7",
            "--hook",
            hook.to_str().unwrap(),
            "--json",
        ],
    );
    assert_code(&out, 0);
    let sha = sha256sum(&art);
    assert_eq!(
        std::fs::read_to_string(dest.join("etc/finished")).unwrap(),
        format!("finished by 10-finish for {sha}\n")
    );
    assert!(
        stderr(&out).contains("10-finish| hook says hello"),
        "{}",
        stderr(&out)
    );
    assert_eq!(mounts_below(&dest), Vec::<String>::new());
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        j["personalised"][1]
            .as_str()
            .unwrap()
            .starts_with("hook 10-finish ("),
        "{j}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dest.join("var/log/goldcap-apply.json")).unwrap())
            .unwrap();
    assert_eq!(report["hooks"][0]["name"], "10-finish", "{report}");
    assert_eq!(report["verified"], false, "{report}");

    // A failing hook: exit 1, its last output shown, the marker says so,
    // no report, no mount left.
    let bad = t.path().join("20-fail");
    std::fs::write(
        &bad,
        "#!/bin/sh\necho 'E: grub-install failed' >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dest = t.path().join("failed");
    let out = apply(&art, &dest, &["--hook", bad.to_str().unwrap()]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("hook 20-fail exited with status 3") && err.contains("E: grub-install failed"),
        "{err}"
    );
    let marker = std::fs::read_to_string(dest.join(MARKER)).unwrap();
    assert!(
        marker.contains("FAILED: hook 20-fail exited with status 3")
            && marker.contains("the target is left incomplete"),
        "{marker}"
    );
    assert!(!dest.join("var/log/goldcap-apply.json").exists());
    assert_eq!(mounts_below(&dest), Vec::<String>::new());

    // A hook that is not executable: refused before anything is applied.
    let out = apply(&art, &t.path().join("never"), &["--hook", "/etc/passwd"]);
    assert_code(&out, 2);
    assert!(!t.path().join("never").exists());
}

#[test]
fn fstab_names_the_filesystems_mounted_under_the_target_by_uuid() {
    require_root();
    require_tool("mkfs.ext4");
    require_tool("blkid");
    let env = Env::new();
    let run = env.capture("out", NO_SCRUB);
    run.ok();
    let dir = env.path("disks");
    std::fs::create_dir(&dir).unwrap();
    let mut uuids = Vec::new();
    for (name, size) in [("root.img", "160M"), ("boot.img", "32M")] {
        let img = dir.join(name);
        sh(Command::new("truncate").args(["-s", size]).arg(&img));
        sh(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img));
        let u = sh(Command::new("blkid")
            .args(["-s", "UUID", "-o", "value"])
            .arg(&img));
        uuids.push(u.trim().to_owned());
    }
    let target = dir.join("target");
    let _root = MountGuard::mount(
        &["-o", "loop", dir.join("root.img").to_str().unwrap()],
        &target,
    );
    let _boot = MountGuard::mount(
        &["-o", "loop", dir.join("boot.img").to_str().unwrap()],
        &target.join("boot"),
    );
    let _tmp = MountGuard::mount(&["-t", "tmpfs", "tmpfs"], &target.join("tmp"));
    // /boot and /tmp are mount points in it already (empty but for
    // lost+found): no --force needed.
    let out = apply(&run.file(MANIFEST_JSON), &target, &["--fstab", "--json"]);
    assert_code(&out, 0);
    let fstab = std::fs::read_to_string(target.join("etc/fstab")).unwrap();
    let body: Vec<&str> = fstab.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        body,
        [
            format!("UUID={} / ext4 errors=remount-ro 0 1", uuids[0]),
            format!("UUID={} /boot ext4 defaults 0 2", uuids[1]),
        ],
        "{fstab}"
    );
    assert_eq!(owner_mode(&target.join("etc/fstab")), (0, 0, 0o644));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["personalised"][0], "/etc/fstab: 2 filesystems", "{j}");

    // A target that is no mount point: refused before anything is applied.
    let plain = env.path("plain");
    let out = apply(&run.file(MANIFEST_JSON), &plain, &["--fstab"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("is not a mount point"),
        "{}",
        stderr(&out)
    );
    assert!(!plain.join(MARKER).exists());
}

#[test]
fn goldcaps_own_members_are_decompressed_in_parallel_and_foreign_streams_still_apply() {
    // Several 1 MiB gzip members / 2 MiB zstd frames: the parallel path,
    // with one worker and with three, the same tree as the root's.
    let (env, _) = multi_block_env();
    for (format, ext, tool, min_members) in
        [("tgz", "tgz", "gzip", 8), ("tzst", "tar.zst", "zstd", 4)]
    {
        let run = env.capture(format, &[NO_SCRUB, &["--format", format]].concat());
        run.ok();
        let manifest = run.file(MANIFEST_JSON);
        let mut trees = Vec::new();
        for threads in ["1", "3"] {
            let counts = env.path(&format!("{format}-{threads}.counts"));
            let dest = env.path(&format!("{format}-applied-{threads}"));
            let mut args: Vec<std::ffi::OsString> = vec!["apply".into(), manifest.clone().into()];
            args.extend(["--target".into(), dest.clone().into()]);
            args.extend(["--threads".into(), threads.into()]);
            let out = goldcap_cmd(&args)
                .env("GOLDCAP_TEST_COUNTS", &counts)
                .output()
                .unwrap();
            assert_code(&out, 0);
            let text = std::fs::read_to_string(&counts).unwrap();
            let members: u64 = text
                .lines()
                .find_map(|l| l.strip_prefix("parallel_members "))
                .unwrap()
                .parse()
                .unwrap();
            assert!(
                members >= min_members,
                "{format}, {threads} thread(s): {members} members in parallel"
            );
            let d = diff(
                &snapshot(&env.root(), VOLATILE),
                &snapshot(&dest, &[]),
                &[&[("curtin", "*"), ("srv/sock", "*")][..], REPORTED].concat(),
            );
            assert!(d.is_empty(), "{format}: {}", d.join("\n"));
            trees.push(dest);
        }

        // The same tar recompressed by gzip -n / zstd (one member, one
        // frame): one stream, the same tree.
        let tar = env.path(&format!("{format}-plain.tar"));
        let z = env.path(&format!("foreign.{ext}"));
        sh(std::process::Command::new("sh").arg("-c").arg(format!(
            "{tool} -dc {} > {} && {tool} -q -c {} {} > {}",
            run.any_artifact().display(),
            tar.display(),
            if tool == "gzip" { "-n" } else { "" },
            tar.display(),
            z.display()
        )));
        let dest2 = env.path(&format!("{format}-foreign"));
        let out = apply(&z, &dest2, &[]);
        assert_code(&out, 0);
        let d = diff(&snapshot(&trees[0], &[]), &snapshot(&dest2, &[]), REPORTED);
        assert!(d.is_empty(), "{format}: {}", d.join("\n"));
    }
}
