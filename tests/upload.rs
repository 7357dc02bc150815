//! Uploads against real servers: the DRP contract server
//! (tests/servers/drp_server.py, the documented files and token API) and
//! s3s-fs, a real S3 implementation that checks SigV4 signatures
//! (tests/servers/s3_server.py starts it, with a fault-injecting proxy when
//! asked). What was stored is read back independently: from the servers'
//! storage directories with md5sum, with GNU tar, with boto3.

use crate::common::*;
use serde_json::{Value, json};
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

const UPLOAD_TARBALL: &str = "images/debian-12-rootfs-20261122-101500-cf99cd80eb.tgz";
const UPLOAD_MANIFEST: &str = "images/debian-12-MANIFEST-20261122-101500-cf99cd80eb.txt";
const TOKEN: &str = "gc-test-token-5f1d2a9c0b7e4c31a8d6";

/// A running DRP contract server; stopped on drop (also used by
/// `drp_pack`).
pub(crate) struct Drp {
    child: Child,
    _stdin: ChildStdin,
    port: u16,
    tls: bool,
    dir: tempfile::TempDir,
}

impl Drp {
    /// Users: rocketskates (everything). Tokens: TOKEN (files, all actions,
    /// any path), plus `tokens` from the caller.
    pub(crate) fn start(extra: Value) -> Drp {
        Drp::start_with(extra, None)
    }

    fn start_with(extra: Value, tls: Option<(&Path, &Path)>) -> Drp {
        let dir = tempfile::Builder::new()
            .prefix("goldcap-drp-")
            .tempdir_in(test_tmp())
            .unwrap();
        let mut config = json!({
            "users": {
                "rocketskates": {"password": "r0cketsk8ts", "claims": [{"scope": "*", "action": "*", "specific": "*"}]},
                "builder": {"password": "b", "claims": [{"scope": "files", "action": "*", "specific": "*"}]}
            },
            "tokens": {TOKEN: {"claims": [{"scope": "files", "action": "*", "specific": "*"}]}},
            "faults": []
        });
        for (k, v) in extra.as_object().unwrap() {
            match k.as_str() {
                "tokens" => {
                    for (t, c) in v.as_object().unwrap() {
                        config["tokens"][t] = c.clone();
                    }
                }
                _ => config[k] = v.clone(),
            }
        }
        std::fs::create_dir(dir.path().join("store")).unwrap();
        std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        let mut c = Command::new("python3");
        c.arg(project().join("tests/servers/drp_server.py"))
            .arg("--dir")
            .arg(dir.path().join("store"))
            .arg("--config")
            .arg(dir.path().join("config.json"))
            .arg("--log")
            .arg(dir.path().join("log.jsonl"));
        if let Some((cert, key)) = tls {
            c.arg("--tls").arg(cert).arg(key);
        }
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .expect("the DRP contract server did not start");
        Drp {
            child,
            _stdin: stdin,
            port,
            tls: tls.is_some(),
            dir,
        }
    }

    pub(crate) fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    fn target(&self) -> String {
        format!("drp:{}", self.url())
    }

    /// A file in the server's store.
    pub(crate) fn stored(&self, rel: &str) -> PathBuf {
        self.dir.path().join("store").join(rel)
    }

    /// Every name under the store's images/ (dot files included).
    pub(crate) fn images(&self) -> Vec<String> {
        list_dir(&self.stored("images"))
    }

    /// Requests in the order they started (a stalled one is written
    /// when it ends).
    pub(crate) fn log(&self) -> Vec<Value> {
        let mut log: Vec<Value> = std::fs::read_to_string(self.dir.path().join("log.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        log.sort_by(|a, b| {
            a["started"]
                .as_f64()
                .partial_cmp(&b["started"].as_f64())
                .unwrap()
        });
        log
    }
}

impl Drop for Drp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running s3s-fs (plus fault proxy); stopped on drop.
struct S3 {
    child: Child,
    stdin: Option<ChildStdin>,
    info: Value,
    data: tempfile::TempDir,
}

fn venv_python() -> PathBuf {
    let p = project().join("target/test-venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/install-deps",
        p.display()
    );
    p
}

impl S3 {
    fn start(faults: Value) -> S3 {
        let bin = project().join("target/test-tools/bin/s3s-fs");
        assert!(
            bin.exists(),
            "{} is missing: run scripts/install-deps",
            bin.display()
        );
        let data = tempfile::Builder::new()
            .prefix("goldcap-s3-")
            .tempdir_in(test_tmp())
            .unwrap();
        let mut child = Command::new(venv_python())
            .arg(project().join("tests/servers/s3_server.py"))
            .arg("serve")
            .arg("--bin")
            .arg(&bin)
            .arg("--data")
            .arg(data.path())
            .arg("--faults")
            .arg(faults.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let info: Value = serde_json::from_str(&line).expect("the S3 server did not start");
        S3 {
            child,
            stdin: Some(stdin),
            info,
            data,
        }
    }

    fn env(&self, c: &mut Command) {
        c.env("AWS_ACCESS_KEY_ID", self.info["key"].as_str().unwrap())
            .env(
                "AWS_SECRET_ACCESS_KEY",
                self.info["secret"].as_str().unwrap(),
            )
            .env("AWS_ENDPOINT_URL", self.info["endpoint"].as_str().unwrap())
            .env("AWS_REGION", "us-east-1");
    }

    /// The stored object, as s3s-fs keeps it on disk.
    fn object(&self, key: &str) -> PathBuf {
        self.data.path().join("goldcap-test").join(key)
    }

    /// Multipart uploads in progress (their state files in the data dir).
    fn open_uploads(&self) -> Vec<String> {
        list_dir(self.data.path())
            .into_iter()
            .filter(|n| n.starts_with(".upload"))
            .collect()
    }

    /// boto3, talking to the server directly (not through the proxy).
    fn boto(&self, args: &[&str]) -> String {
        let mut c = Command::new(venv_python());
        c.arg(project().join("tests/servers/s3_server.py"))
            .args(args);
        self.env(&mut c);
        c.env("AWS_ENDPOINT_URL", self.info["direct"].as_str().unwrap());
        sh(&mut c)
    }

    fn keys(&self) -> Vec<String> {
        serde_json::from_str(&self.boto(&["keys", "goldcap-test"])).unwrap()
    }
}

impl S3 {
    /// Runs goldcap with this server's credentials and endpoint.
    fn goldcap(&self, args: &[OsString], out: &Path) -> Run {
        let mut c = goldcap_cmd(args);
        self.env(&mut c);
        Run {
            out: out.to_path_buf(),
            output: c.output().unwrap(),
        }
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        // Closing stdin makes the wrapper stop s3s-fs and exit; if it
        // lingers it is killed (and s3s-fs, by its parent-death signal).
        self.stdin.take();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A goldcap command with extra environment.
fn run(args: &[OsString], envs: &[(&str, &str)], out: &Path) -> Run {
    let mut c = goldcap_cmd(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    Run {
        out: out.to_path_buf(),
        output: c.output().unwrap(),
    }
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// The sample root with an incompressible file, so the artifact spans
/// several S3 parts of 5 MiB.
fn big_env(mib: usize) -> Env {
    let env = Env::new();
    sh(Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "status=none"])
        .arg(format!("count={mib}"))
        .arg(format!(
            "of={}",
            env.root().join("srv/random.bin").display()
        )));
    env
}

/// Captures the sample root into `out` (no upload).
fn captured(env: &Env, out: &str) -> Run {
    let r = env.capture(out, &["-q"]);
    r.ok();
    r
}

fn capture_args(env: &Env, out: &str, extra: &[&str]) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![
        "capture".into(),
        "--root".into(),
        env.root().into(),
        "-o".into(),
        env.path(out).into(),
        "--ident".into(),
        IDENT.into(),
        "--date".into(),
        DATE.into(),
    ];
    a.extend(extra.iter().map(OsString::from));
    a
}

/// Every byte goldcap wrote that a user or log could see: stdout, stderr
/// and every file in `dirs`.
fn assert_token_absent(token: &str, runs: &[&Run], dirs: &[&Path]) {
    for r in runs {
        for (what, bytes) in [("stdout", &r.output.stdout), ("stderr", &r.output.stderr)] {
            assert!(
                !String::from_utf8_lossy(bytes).contains(token),
                "the token appears in goldcap's {what}:\n{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
    for d in dirs {
        for name in list_dir(d) {
            let p = d.join(&name);
            if p.is_file() {
                let bytes = std::fs::read(&p).unwrap();
                assert!(
                    !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
                    "the token appears in {}",
                    p.display()
                );
            }
        }
    }
}

// ------------------------------------------------------------------ DRP

#[test]
fn drp_upload_sends_the_size_and_verifies_with_head() {
    let env = Env::new();
    let cap = captured(&env, "out");
    let drp = Drp::start(json!({}));
    let r = run(
        &[
            "upload".into(),
            cap.file(MANIFEST_JSON).into(),
            "--to".into(),
            drp.target().into(),
            "--json".into(),
        ],
        &[("RS_TOKEN", TOKEN)],
        &cap.out,
    );
    r.ok();
    let manifest = cap.manifest_json();
    // What DRP stored is the artifact and the MANIFEST, byte for byte.
    assert_eq!(
        md5sum(&drp.stored(UPLOAD_TARBALL)),
        manifest["md5"].as_str().unwrap()
    );
    assert_eq!(
        md5sum(&drp.stored(UPLOAD_MANIFEST)),
        md5sum(&cap.file(MANIFEST))
    );
    assert_eq!(
        drp.images(),
        vec![
            "debian-12-MANIFEST-20261122-101500-cf99cd80eb.txt",
            "debian-12-rootfs-20261122-101500-cf99cd80eb.tgz"
        ]
    );
    // Both names checked up front (HEAD: the token may read them back),
    // then POST with a Content-Length and the raw-body type, then HEAD; the
    // MANIFEST after the artifact.
    let log = drp.log();
    let calls: Vec<String> = log
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["method"].as_str().unwrap(),
                e["path"].as_str().unwrap()
            )
        })
        .collect();
    let art = format!("/api/v3/files/{UPLOAD_TARBALL}");
    let man = format!("/api/v3/files/{UPLOAD_MANIFEST}");
    assert_eq!(
        calls,
        vec![
            format!("HEAD {art}"),
            format!("HEAD {man}"),
            format!("POST {art}"),
            format!("HEAD {art}"),
            format!("POST {man}"),
            format!("HEAD {man}")
        ]
    );
    let post = &log[2];
    assert_eq!(
        post["content_length"],
        manifest["size"].as_u64().unwrap().to_string()
    );
    assert_eq!(post["content_type"], "application/octet-stream");
    assert_eq!(post["auth"], "Bearer");
    assert_eq!(post["status"], 201);
    let out: Value = serde_json::from_str(&r.stdout()).unwrap();
    assert_eq!(out["objects"][0]["name"], format!("/{UPLOAD_TARBALL}"));
    assert_eq!(out["objects"][0]["size"], manifest["size"]);
    assert!(
        out["objects"][0]["verified"]
            .as_str()
            .unwrap()
            .contains("X-DRP-SHA256SUM")
    );
    assert_token_absent(TOKEN, &[&r], &[&cap.out]);
}

#[test]
fn drp_basic_credentials_from_rs_key() {
    let env = Env::new();
    let cap = captured(&env, "out");
    let drp = Drp::start(json!({}));
    let args = args_for(&cap, &drp);
    run(&args, &[("RS_KEY", "builder:b")], &cap.out).ok();
    assert_eq!(drp.log()[1]["auth"], "Basic");
    assert!(drp.stored(UPLOAD_TARBALL).is_file());
    // RS_ENDPOINT when --to names no endpoint, as drpcli.
    let drp2 = Drp::start(json!({}));
    let r = run(
        &[
            "upload".into(),
            cap.file(MANIFEST_JSON).into(),
            "--to".into(),
            "drp".into(),
        ],
        &[("RS_KEY", "builder:b"), ("RS_ENDPOINT", &drp2.url())],
        &cap.out,
    );
    r.ok();
    assert!(drp2.stored(UPLOAD_TARBALL).is_file());
    // A wrong password is refused before anything is sent.
    let drp3 = Drp::start(json!({}));
    let r = run(
        &args_for(&cap, &drp3),
        &[("RS_KEY", "builder:wrong")],
        &cap.out,
    );
    assert_eq!(r.code(), 1, "{}", r.stderr());
    assert!(drp3.images().is_empty());
    assert_token_absent("builder:wrong", &[&r], &[]);
    assert_token_absent("YnVpbGRlcjp3cm9uZw", &[&r], &[]);
}

fn args_for(cap: &Run, drp: &Drp) -> Vec<OsString> {
    vec![
        "upload".into(),
        cap.file(MANIFEST_JSON).into(),
        "--to".into(),
        drp.target().into(),
    ]
}

#[test]
fn drp_capture_streams_to_the_endpoint_without_a_local_copy() {
    let env = big_env(12);
    let drp = Drp::start(json!({}));
    let r = run(
        &capture_args(&env, "out", &["--upload", &drp.target(), "--json"]),
        &[("RS_TOKEN", TOKEN)],
        &env.path("out"),
    );
    r.ok();
    // No local artifact: only the MANIFESTs.
    assert_eq!(
        r.listing(),
        vec![MANIFEST_JSON.to_owned(), MANIFEST.to_owned()]
    );
    let manifest = r.manifest_json();
    let stored = drp.stored(UPLOAD_TARBALL);
    assert_eq!(md5sum(&stored), manifest["md5"].as_str().unwrap());
    assert_eq!(sha256sum(&stored), manifest["sha256"].as_str().unwrap());
    assert_eq!(
        md5sum(&drp.stored(UPLOAD_MANIFEST)),
        md5sum(&r.file(MANIFEST))
    );
    // Chunked (the size is not known while streaming), then HEAD-verified.
    let log = drp.log();
    let post = log
        .iter()
        .find(|e| e["method"] == "POST" && e["path"] == format!("/api/v3/files/{UPLOAD_TARBALL}"))
        .unwrap();
    assert_eq!(post["transfer_encoding"], "chunked");
    assert_eq!(post["expect"], "100-continue");
    assert!(
        log.iter()
            .any(|e| e["method"] == "HEAD" && e["path"] == post["path"] && e["status"] == 200)
    );
    // The stored artifact is a good one: goldcap verify against the local
    // MANIFEST, and curtin's tar restores the root.
    let copy = env.path("out").join(ARTIFACT);
    std::fs::copy(&stored, &copy).unwrap();
    let v = goldcap(&["verify".as_ref(), copy.as_os_str(), "--json".as_ref()]);
    let v: Value = serde_json::from_slice(&v.stdout).unwrap();
    for check in v["checks"].as_array().unwrap() {
        if ["size", "md5", "sha256", "archive", "curtin"].contains(&check["name"].as_str().unwrap())
        {
            assert_eq!(check["ok"], true, "{check}");
        }
    }
    let x = gnu_extract(&copy, &env.path("x"), &["--acls"]);
    assert!(x.status.success(), "{}", String::from_utf8_lossy(&x.stderr));
    assert_eq!(
        md5sum(&env.path("x/srv/random.bin")),
        md5sum(&env.root().join("srv/random.bin"))
    );
    let out: Value = serde_json::from_str(&r.stdout()).unwrap();
    assert_eq!(out["artifact"], Value::Null);
    assert_eq!(
        out["upload"]["objects"][0]["name"],
        format!("/{UPLOAD_TARBALL}")
    );
    assert_token_absent(TOKEN, &[&r], &[&env.path("out")]);
}

#[test]
fn drp_capture_keep_local_keeps_an_identical_copy() {
    let env = Env::new();
    let drp = Drp::start(json!({}));
    let r = run(
        &capture_args(&env, "out", &["--upload", &drp.target(), "--keep-local"]),
        &[("RS_TOKEN", TOKEN)],
        &env.path("out"),
    );
    r.ok();
    // Both copies came from the one stream: no fallback upload of the file.
    assert!(
        !r.stderr().contains("the streamed upload failed"),
        "{}",
        r.stderr()
    );
    let posts: Vec<Value> = drp
        .log()
        .into_iter()
        .filter(|e| e["method"] == "POST" && e["path"] == format!("/api/v3/files/{UPLOAD_TARBALL}"))
        .collect();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0]["transfer_encoding"], "chunked", "{posts:?}");
    assert_eq!(md5sum(&r.artifact()), md5sum(&drp.stored(UPLOAD_TARBALL)));
    assert_eq!(
        md5sum(&r.artifact()),
        r.manifest_json()["md5"].as_str().unwrap()
    );
}

#[test]
fn drp_409_of_our_own_failed_attempt_is_waited_out() {
    // The first attempt fails while DRP still holds its .part: the 409s
    // that follow are goldcap's own upload, not someone else's.
    let env = Env::new();
    let cap = captured(&env, "out");
    let art = format!("/{UPLOAD_TARBALL}");
    let drp = Drp::start(json!({"faults": [
        {"kind": "500-hold", "method": "POST", "path": art, "times": 1, "seconds": 1.2}
    ]}));
    let r = run(&args_for(&cap, &drp), &[("RS_TOKEN", TOKEN)], &cap.out);
    r.ok();
    let statuses: Vec<String> = drp
        .log()
        .into_iter()
        .filter(|e| e["method"] == "POST" && e["path"] == format!("/api/v3/files{art}"))
        .map(|e| e["status"].to_string())
        .collect();
    assert_eq!(statuses[..2], ["500", "409"], "{statuses:?}");
    assert_eq!(statuses.last().unwrap(), "201", "{statuses:?}");
    assert!(r.stderr().contains("previous attempt"), "{}", r.stderr());
    assert_eq!(md5sum(&drp.stored(UPLOAD_TARBALL)), md5sum(&cap.artifact()));
}

#[test]
fn drp_stream_whose_answer_is_lost_is_checked_and_kept() {
    // DRP stored the whole stream but the connection dropped before its
    // 201: the body cannot be sent again, so goldcap asks DRP what it has.
    let env = Env::new();
    let art = format!("/{UPLOAD_TARBALL}");
    let drp = Drp::start(
        json!({"faults": [{"kind": "lose-answer", "method": "POST", "path": art, "times": 1}]}),
    );
    let r = run(
        &capture_args(&env, "out", &["--upload", &drp.target(), "--json"]),
        &[("RS_TOKEN", TOKEN)],
        &env.path("out"),
    );
    r.ok();
    let out: Value = serde_json::from_str(&r.stdout()).unwrap();
    let verified = out["upload"]["objects"][0]["verified"].as_str().unwrap();
    assert!(verified.contains("answer was lost"), "{out}");
    assert_eq!(
        md5sum(&drp.stored(UPLOAD_TARBALL)),
        r.manifest_json()["md5"].as_str().unwrap()
    );
    assert!(drp.stored(UPLOAD_MANIFEST).exists());
}

#[test]
fn upload_targets_with_credentials_are_never_echoed() {
    // clap would quote a bad value back; presigned URLs and user:pass@
    // endpoints are credentials.
    let env = Env::new();
    for (flag, value) in [
        (
            "--to",
            "put:https://s3.example/b/k?X-Amz-Signature=SECRETSIG",
        ),
        ("--to", "https://s3.example/b/k?X-Amz-Signature=SECRETSIG"),
        ("--to", "drp:ftp://admin:SECRETPW@drp.example/"),
    ] {
        let r = run(&os(&["upload", "x.json", flag, value]), &[], &env.path("."));
        assert_eq!(r.code(), 2, "{value}");
        assert!(
            r.stderr().contains("invalid value for '--to"),
            "{}",
            r.stderr()
        );
        assert!(!r.stderr().contains("SECRET"), "{}", r.stderr());
    }
    let r = run(
        &capture_args(&env, "out", &["--upload", "put:https://s/a?sig=SECRETSIG"]),
        &[],
        &env.path("out"),
    );
    assert_eq!(r.code(), 2);
    assert!(!r.stderr().contains("SECRET"), "{}", r.stderr());
}

#[test]
fn drp_refused_token_fails_before_the_root_is_read() {
    let env = big_env(24);
    // One token that may only read, one that may write another path only
    // (claims match exact paths), one unknown.
    let drp = Drp::start(json!({"tokens": {
        "read-only": {"claims": [{"scope": "files", "action": "get", "specific": "*"}]},
        "other-path": {"claims": [{"scope": "files", "action": "post,get", "specific": "/images/other.tgz"}]}
    }}));
    let flag = env.path("pause-flag");
    for (token, expect) in [
        (
            "read-only",
            format!(
                "permission denied: the credentials lack the claim `files post /{UPLOAD_TARBALL}`"
            ),
        ),
        (
            "other-path",
            format!("lack the claim `files get /{UPLOAD_TARBALL}`"),
        ),
        ("unknown-token", "invalid or expired".to_owned()),
    ] {
        let mut c = goldcap_cmd(&capture_args(&env, "out", &["--upload", &drp.target()]));
        // A late entry: reaching it would mean the root was read first.
        c.env("RS_TOKEN", token)
            .env("GOLDCAP_TEST_PAUSE", "open:usr/sbin/kexec")
            .env("GOLDCAP_TEST_PAUSE_FILE", &flag);
        let out = c.output().unwrap();
        let r = Run {
            out: env.path("out"),
            output: out,
        };
        assert_eq!(r.code(), 1, "{token}: {}", r.stderr());
        assert!(r.stderr().contains(&expect), "{token}: {}", r.stderr());
        assert!(
            !flag.exists(),
            "{token}: the capture read the root before failing"
        );
        assert!(r.listing().is_empty(), "{token}: {:?}", r.listing());
        assert_token_absent(token, &[&r], &[]);
    }
    assert!(drp.images().is_empty(), "{:?}", drp.images());
    // No body was accepted: refusals came before 100 Continue.
    assert!(
        drp.log().iter().all(|e| e["received"] == 0),
        "{:?}",
        drp.log()
    );
}

#[test]
fn drp_missing_credentials_is_a_usage_error() {
    let env = Env::new();
    let cap = captured(&env, "out");
    let r = run(&args_for(&cap, &Drp::start(json!({}))), &[], &cap.out);
    assert_eq!(r.code(), 2);
    assert!(
        r.stderr().contains("no DRP credentials: set RS_TOKEN"),
        "{}",
        r.stderr()
    );
}

#[test]
fn drp_upload_in_progress_is_a_clear_409() {
    let env = Env::new();
    let cap = captured(&env, "out");
    let drp = Drp::start(json!({}));
    std::fs::create_dir_all(drp.stored("images")).unwrap();
    let part = drp.stored("images/debian-12-rootfs-20261122-101500-cf99cd80eb.tgz.part");
    std::fs::write(&part, b"someone else's upload").unwrap();
    let r = run(&args_for(&cap, &drp), &[("RS_TOKEN", TOKEN)], &cap.out);
    assert_eq!(r.code(), 1);
    assert!(
        r.stderr().contains(&format!(
            "HTTP 409: POST: files/{UPLOAD_TARBALL}: File already uploading"
        )),
        "{}",
        r.stderr()
    );
    // A 409 for a first attempt is not retried (it is someone else's
    // upload), and the other upload is left alone.
    assert_eq!(
        drp.log().iter().filter(|e| e["method"] == "POST").count(),
        1
    );
    assert_eq!(std::fs::read(&part).unwrap(), b"someone else's upload");
    assert!(!drp.stored(UPLOAD_TARBALL).exists());
}

#[test]
fn drp_faults_are_retried_then_verified() {
    let env = big_env(3);
    let cap = captured(&env, "out");
    let art = format!("/{UPLOAD_TARBALL}");
    let drp = Drp::start(json!({"faults": [
        {"kind": "reset", "method": "POST", "path": art, "times": 1, "after": 65536},
        {"kind": "500", "method": "POST", "path": art, "times": 2},
        {"kind": "stall", "method": "POST", "path": art, "times": 1, "seconds": 6}
    ]}));
    let mut args = args_for(&cap, &drp);
    // The stall outlasts --timeout by 4 s, and the attempts left after it
    // (backing off 2 s, then 4 s) outlast the stalled handler's .part.
    args.extend(os(&["--timeout", "2", "--attempts", "8"]));
    let r = run(&args, &[("RS_TOKEN", TOKEN)], &cap.out);
    r.ok();
    let err = r.stderr();
    assert!(err.contains("HTTP 500"), "{err}");
    assert!(
        err.contains("no progress within --timeout") || err.contains("broken pipe"),
        "{err}"
    );
    assert_eq!(md5sum(&drp.stored(UPLOAD_TARBALL)), md5sum(&cap.artifact()));
    let posts: Vec<Value> = drp
        .log()
        .into_iter()
        .filter(|e| e["method"] == "POST" && e["path"] == format!("/api/v3/files{art}"))
        .collect();
    let statuses: Vec<String> = posts.iter().map(|p| p["status"].to_string()).collect();
    // When goldcap's timeout fires before the stalled handler gives up, its
    // next attempt meets that attempt's .part (409) and waits it out.
    assert!(
        statuses[..4] == ["\"reset\"", "500", "500", "\"stalled\""]
            && statuses[4..statuses.len() - 1].iter().all(|s| s == "409")
            && statuses[statuses.len() - 1] == "201",
        "{posts:?}"
    );
    assert_eq!(err.matches("retrying").count(), statuses.len() - 1, "{err}");
    // Nothing half-written is left behind by the failed attempts.
    assert_eq!(drp.images().len(), 2, "{:?}", drp.images());
}

#[test]
fn drp_persistent_failure_fails_clearly_and_leaves_nothing() {
    let env = Env::new();
    let cap = captured(&env, "out");
    let man = format!("/{UPLOAD_MANIFEST}");
    // The artifact goes up, the MANIFEST never does: the artifact is
    // withdrawn again, so no artifact without its MANIFEST is published.
    let drp = Drp::start(
        json!({"faults": [{"kind": "500", "method": "POST", "path": man, "times": 100}]}),
    );
    let mut args = args_for(&cap, &drp);
    args.extend(os(&["--attempts", "3"]));
    let r = run(&args, &[("RS_TOKEN", TOKEN)], &cap.out);
    assert_eq!(r.code(), 1);
    assert!(
        r.stderr().contains("gave up after 3 attempts"),
        "{}",
        r.stderr()
    );
    assert!(drp.images().is_empty(), "{:?}", drp.images());
    assert!(
        drp.log()
            .iter()
            .any(|e| e["method"] == "DELETE" && e["status"] == 204)
    );
    // The local capture is untouched.
    assert_eq!(
        md5sum(&cap.artifact()),
        cap.manifest_json()["md5"].as_str().unwrap()
    );
}

#[test]
fn drp_failure_without_delete_right_says_what_is_left() {
    let env = Env::new();
    let cap = captured(&env, "out");
    let man = format!("/{UPLOAD_MANIFEST}");
    let drp = Drp::start(json!({
        "tokens": {"post-get": {"claims": [{"scope": "files", "action": "post,get", "specific": "*"}]}},
        "faults": [{"kind": "500", "method": "POST", "path": man, "times": 100}]
    }));
    let mut args = args_for(&cap, &drp);
    args.extend(os(&["--attempts", "1"]));
    let r = run(&args, &[("RS_TOKEN", "post-get")], &cap.out);
    assert_eq!(r.code(), 1);
    assert!(
        r.stderr()
            .contains(&format!("/{UPLOAD_TARBALL} is left on the endpoint")),
        "{}",
        r.stderr()
    );
    assert!(r.stderr().contains("files delete"), "{}", r.stderr());
}

#[test]
fn drp_stream_cut_off_mid_body() {
    let env = big_env(6);
    let art = format!("/{UPLOAD_TARBALL}");
    let faults = json!({"faults": [
        {"kind": "reset", "method": "POST", "path": art, "times": 1, "after": 262144}
    ]});
    // Streaming only: the bytes sent are gone, so a clear failure and
    // nothing stored anywhere.
    let drp = Drp::start(faults.clone());
    let r = run(
        &capture_args(&env, "out", &["--upload", &drp.target()]),
        &[("RS_TOKEN", TOKEN)],
        &env.path("out"),
    );
    assert_eq!(r.code(), 1, "{}", r.stderr());
    assert!(r.stderr().contains("cannot be resent"), "{}", r.stderr());
    assert!(drp.images().is_empty(), "{:?}", drp.images());
    assert!(r.listing().is_empty(), "{:?}", r.listing());
    // With --keep-local nothing is lost: the capture completes and the
    // finished file is uploaded instead.
    let drp = Drp::start(faults);
    let r = run(
        &capture_args(&env, "out2", &["--upload", &drp.target(), "--keep-local"]),
        &[("RS_TOKEN", TOKEN)],
        &env.path("out2"),
    );
    r.ok();
    assert!(
        r.stderr().contains("the streamed upload failed"),
        "{}",
        r.stderr()
    );
    assert_eq!(md5sum(&drp.stored(UPLOAD_TARBALL)), md5sum(&r.artifact()));
    assert_eq!(
        md5sum(&drp.stored(UPLOAD_MANIFEST)),
        md5sum(&r.file(MANIFEST))
    );
}

#[test]
fn drp_interrupted_stream_stores_nothing() {
    for signal in [libc::SIGKILL, libc::SIGTERM] {
        let env = big_env(8);
        let drp = Drp::start(json!({}));
        let flag = env.path("pause-flag");
        let mut child = goldcap_cmd(&capture_args(
            &env,
            "out",
            &["--upload", &drp.target(), "-q"],
        ))
        .env("RS_TOKEN", TOKEN)
        .env("GOLDCAP_TEST_PAUSE", "open:usr/sbin/kexec")
        .env("GOLDCAP_TEST_PAUSE_FILE", &flag)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        let part = drp.stored("images/debian-12-rootfs-20261122-101500-cf99cd80eb.tgz.part");
        // Paused after the random file: DRP is receiving the stream.
        let start = Instant::now();
        while !(flag.exists()
            && part
                .metadata()
                .map(|m| m.len() > (4 << 20))
                .unwrap_or(false))
        {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the stream never reached DRP"
            );
            assert!(child.try_wait().unwrap().is_none(), "goldcap ended early");
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        // Resume: a terminated goldcap notices the signal and cleans up.
        std::fs::remove_file(&flag).unwrap();
        let status = child.wait().unwrap();
        if signal == libc::SIGTERM {
            assert_eq!(status.code(), Some(143));
        }
        let start = Instant::now();
        while part.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "DRP kept the partial upload"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            drp.images().is_empty(),
            "signal {signal}: {:?}",
            drp.images()
        );
        let post = loop {
            // The server logs a request when it is done with it.
            match drp.log().into_iter().find(|e| e["method"] == "POST") {
                Some(p) => break p,
                None => {
                    assert!(
                        start.elapsed() < Duration::from_secs(30),
                        "the POST never ended"
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        };
        assert_eq!(
            post["status"], 507,
            "a cut-off body is a failed copy: {post}"
        );
        // Nothing under a final name locally either (SIGKILL may leave
        // temporary names; SIGTERM cleans up).
        let left = list_dir(&env.path("out"));
        assert!(left.iter().all(|n| n.starts_with(".goldcap-")), "{left:?}");
        if signal == libc::SIGTERM {
            assert!(left.is_empty(), "{left:?}");
        }
    }
}

/// A CA and a server certificate for 127.0.0.1 signed by it.
fn test_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |n: &str| dir.join(n);
    sh(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=goldcap test CA",
        ])
        .arg("-keyout")
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.pem")));
    sh(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(p("server.key"))
        .arg("-out")
        .arg(p("server.csr")));
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    sh(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
        .arg("-in")
        .arg(p("server.csr"))
        .arg("-CA")
        .arg(p("ca.pem"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .arg("-extfile")
        .arg(p("ext.cnf"))
        .arg("-out")
        .arg(p("server.pem")));
    (p("ca.pem"), p("server.pem"), p("server.key"))
}

#[test]
fn drp_tls_is_verified_unless_told_otherwise() {
    require_tool("openssl");
    let env = Env::new();
    let cap = captured(&env, "out");
    let (ca, cert, key) = test_ca(env.dir.path());
    let drp = Drp::start_with(json!({}), Some((&cert, &key)));
    // Unknown issuer: refused at once (not retried), nothing sent.
    let r = run(&args_for(&cap, &drp), &[("RS_TOKEN", TOKEN)], &cap.out);
    assert_eq!(r.code(), 1);
    assert!(
        r.stderr().to_lowercase().contains("certificate"),
        "{}",
        r.stderr()
    );
    assert!(!r.stderr().contains("retrying"), "{}", r.stderr());
    assert!(drp.log().is_empty());
    // Trusted with --ca-cert.
    let mut args = args_for(&cap, &drp);
    args.extend(["--ca-cert".into(), ca.into()]);
    run(&args, &[("RS_TOKEN", TOKEN)], &cap.out).ok();
    assert_eq!(md5sum(&drp.stored(UPLOAD_TARBALL)), md5sum(&cap.artifact()));
    // Or not verified, when asked explicitly.
    let drp2 = Drp::start_with(json!({}), Some((&cert, &key)));
    let mut args = args_for(&cap, &drp2);
    args.push("--insecure".into());
    run(&args, &[("RS_TOKEN", TOKEN)], &cap.out).ok();
    assert!(drp2.stored(UPLOAD_TARBALL).is_file());
}

#[test]
fn token_mints_a_files_only_token_for_exact_paths() {
    let env = Env::new();
    let cap = captured(&env, "out");
    let drp = Drp::start(json!({}));
    let paths = format!("{UPLOAD_TARBALL},{UPLOAD_MANIFEST}");
    let t = run(
        &os(&[
            "token",
            "--user",
            "rocketskates",
            "--ttl",
            "600",
            "--paths",
            &paths,
            "--endpoint",
            &drp.url(),
        ]),
        &[("RS_KEY", "rocketskates:r0cketsk8ts")],
        &cap.out,
    );
    t.ok();
    // Only the token, on stdout.
    let token = t.stdout();
    assert!(
        token.ends_with('\n')
            && token.trim().len() > 20
            && !token.trim().contains(char::is_whitespace),
        "{token:?}"
    );
    let token = token.trim().to_owned();
    assert!(!t.stderr().contains(&token));
    let minted = drp
        .log()
        .into_iter()
        .find(|e| e["minted"].is_object())
        .unwrap();
    assert_eq!(
        minted["minted"],
        json!({"scope": "files", "action": "post,get", "specific": format!("/{UPLOAD_TARBALL},/{UPLOAD_MANIFEST}")})
    );
    assert_eq!(minted["ttl"], 600);
    // A wrong password is said as such, not as a bad token.
    let bad = run(
        &os(&[
            "token",
            "--user",
            "rocketskates",
            "--paths",
            &paths,
            "--endpoint",
            &drp.url(),
        ]),
        &[("RS_KEY", "rocketskates:wrong")],
        &cap.out,
    );
    assert_eq!(bad.code(), 1);
    assert!(
        bad.stderr().contains("wrong user or password (RS_KEY)"),
        "{}",
        bad.stderr()
    );
    assert!(
        !bad.stderr().contains("token was refused"),
        "{}",
        bad.stderr()
    );
    // --json: the same kind of token in an object that says what it is for.
    let j = run(
        &os(&[
            "token",
            "--user",
            "rocketskates",
            "--paths",
            &paths,
            "--endpoint",
            &drp.url(),
            "--json",
        ]),
        &[("RS_KEY", "rocketskates:r0cketsk8ts")],
        &cap.out,
    );
    j.ok();
    let v: Value = serde_json::from_str(&j.stdout()).unwrap();
    assert!(v["token"].as_str().is_some_and(|t| t.len() > 20), "{v}");
    assert_eq!(
        (&v["user"], &v["ttl"], &v["paths"]),
        (
            &json!("rocketskates"),
            &json!(3600),
            &json!([UPLOAD_TARBALL, UPLOAD_MANIFEST])
        )
    );
    // It uploads exactly these two files, from a file (never argv) …
    let tf = env.path("token");
    std::fs::write(&tf, format!("{token}\n")).unwrap();
    let mut args = args_for(&cap, &drp);
    args.extend(["--token-file".into(), tf.clone().into(), "-v".into()]);
    let up = run(&args, &[], &cap.out);
    up.ok();
    assert_eq!(md5sum(&drp.stored(UPLOAD_TARBALL)), md5sum(&cap.artifact()));
    // … and nothing else: another capture's name is refused, naming the claim.
    let other = captured_with_ident(&env, "out2", "0123456789");
    let mut args: Vec<OsString> = vec![
        "upload".into(),
        other.into(),
        "--to".into(),
        drp.target().into(),
    ];
    args.extend(["--token-file".into(), tf.into()]);
    let denied = run(&args, &[], &cap.out);
    assert_eq!(denied.code(), 1);
    assert!(
        denied.stderr().contains(
            "lack the claim `files get /images/debian-12-rootfs-20261122-101500-0123456789.tgz`"
        ),
        "{}",
        denied.stderr()
    );
    assert_token_absent(&token, &[&up, &denied], &[&cap.out, &env.path("out2")]);
    // A token argument does not exist, so it can never land in argv.
    let r = run(
        &os(&["upload", "x.json", "--to", "drp", "--token", "abc"]),
        &[],
        &cap.out,
    );
    assert_eq!(r.code(), 2);
}

fn captured_with_ident(env: &Env, out: &str, ident: &str) -> PathBuf {
    let r = run(
        &[
            "capture".into(),
            "--root".into(),
            env.root().into(),
            "-o".into(),
            env.path(out).into(),
            "--ident".into(),
            ident.into(),
            "--date".into(),
            DATE.into(),
            "-q".into(),
        ],
        &[],
        &env.path(out),
    );
    r.ok();
    env.path(out)
        .join(format!("debian-12-MANIFEST-20261122-101500-{ident}.json"))
}

#[test]
fn token_refused_for_a_user_without_the_rights() {
    let drp = Drp::start(json!({}));
    let dir = tempfile::tempdir_in(test_tmp()).unwrap();
    let r = run(
        &os(&[
            "token",
            "--user",
            "rocketskates",
            "--paths",
            "images/a.tgz",
            "--endpoint",
            &drp.url(),
        ]),
        &[("RS_KEY", "builder:b")],
        dir.path(),
    );
    assert_eq!(r.code(), 1);
    assert!(
        r.stderr()
            .contains("lack the claim `users token rocketskates`"),
        "{}",
        r.stderr()
    );
    assert!(r.stdout().is_empty());
}

#[test]
fn tokens_never_appear_in_anything_goldcap_writes() {
    let env = Env::new();
    let drp = Drp::start(json!({"faults": [
        {"kind": "500", "method": "POST", "times": 2}
    ]}));
    let secret_file = env.path("token");
    std::fs::write(&secret_file, TOKEN).unwrap();
    let mut runs = Vec::new();
    // Verbose capture with streaming upload and retries, JSON out.
    runs.push(run(
        &capture_args(
            &env,
            "out",
            &["--upload", &drp.target(), "--keep-local", "--json", "-v"],
        ),
        &[("RS_TOKEN", TOKEN)],
        &env.path("out"),
    ));
    runs[0].ok();
    // Failures of every kind: refused endpoint, unreachable, bad claims.
    let manifest = env.path("out").join(MANIFEST_JSON);
    for (target, envs) in [
        ("drp:http://127.0.0.1:1", vec![("RS_TOKEN", TOKEN)]),
        (&drp.target()[..], vec![("RS_TOKEN", "x")]),
        (
            &drp.target()[..],
            vec![("RS_KEY", "rocketskates:pw-9d8c7b")],
        ),
    ] {
        runs.push(run(
            &[
                "upload".into(),
                manifest.clone().into(),
                "--to".into(),
                target.into(),
                "--attempts".into(),
                "2".into(),
                "-v".into(),
            ],
            &envs,
            &env.path("out"),
        ));
    }
    let r = run(
        &[
            "upload".into(),
            manifest.clone().into(),
            "--to".into(),
            drp.target().into(),
            "--token-file".into(),
            secret_file.into(),
            "--json".into(),
        ],
        &[],
        &env.path("out"),
    );
    r.ok();
    runs.push(r);
    let refs: Vec<&Run> = runs.iter().collect();
    assert_token_absent(TOKEN, &refs, &[&env.path("out")]);
    assert_token_absent("pw-9d8c7b", &refs[3..4], &[]);
}

// ------------------------------------------------------------------- S3

#[test]
fn s3_capture_streams_a_multipart_upload() {
    let env = big_env(20);
    let s3 = S3::start(json!([]));
    let r = s3.goldcap(
        &capture_args(
            &env,
            "out",
            &[
                "--upload",
                "s3://goldcap-test/fleet/a",
                "--part-size",
                "5",
                "--json",
            ],
        ),
        &env.path("out"),
    );
    r.ok();
    assert_eq!(
        r.listing(),
        vec![MANIFEST_JSON.to_owned(), MANIFEST.to_owned()]
    );
    let manifest = r.manifest_json();
    let key = format!("fleet/a/{ARTIFACT}");
    assert_eq!(md5sum(&s3.object(&key)), manifest["md5"].as_str().unwrap());
    assert_eq!(
        sha256sum(&s3.object(&key)),
        manifest["sha256"].as_str().unwrap()
    );
    // A real multipart object: its ETag is the md5 of the part md5s, -N.
    let got: Value = serde_json::from_str(&s3.boto(&[
        "get",
        "goldcap-test",
        &key,
        env.path("dl").to_str().unwrap(),
    ]))
    .unwrap();
    let etag = got["etag"].as_str().unwrap();
    let parts: u64 = etag.rsplit_once('-').unwrap().1.parse().unwrap();
    let size = manifest["size"].as_u64().unwrap();
    assert_eq!(parts, size.div_ceil(5 << 20), "{etag}");
    assert!(parts >= 4);
    assert_eq!(md5sum(&env.path("dl")), manifest["md5"].as_str().unwrap());
    assert_eq!(
        s3.keys(),
        vec![
            format!("fleet/a/{MANIFEST_JSON}"),
            format!("fleet/a/{MANIFEST}"),
            key.clone()
        ]
    );
    assert!(s3.open_uploads().is_empty(), "{:?}", s3.open_uploads());
    let out: Value = serde_json::from_str(&r.stdout()).unwrap();
    assert_eq!(out["upload"]["objects"][0]["name"], key);
    assert!(
        out["upload"]["objects"][0]["verified"]
            .as_str()
            .unwrap()
            .contains(&format!("object ETag {etag}"))
    );
    assert_token_absent(
        s3.info["secret"].as_str().unwrap(),
        &[&r],
        &[&env.path("out")],
    );
}

#[test]
fn s3_upload_with_a_presigned_get_for_image_deploy() {
    let env = big_env(6);
    let cap = captured(&env, "out");
    let s3 = S3::start(json!([]));
    let mut c = goldcap_cmd(&[
        "upload".as_ref(),
        cap.file(MANIFEST_JSON).as_os_str(),
        "--to".as_ref(),
        "s3://goldcap-test".as_ref(),
        "--presign-get".as_ref(),
        "600".as_ref(),
        "--json".as_ref(),
    ]);
    s3.env(&mut c);
    let r = Run {
        out: cap.out.clone(),
        output: c.output().unwrap(),
    };
    r.ok();
    let out: Value = serde_json::from_str(&r.stdout()).unwrap();
    let url = out["presigned_get"].as_str().unwrap();
    assert!(url.contains("X-Amz-Signature="), "{url}");
    // The URL is on stdout only (it is a credential), never in the log.
    assert!(!r.stderr().contains("X-Amz-Signature"), "{}", r.stderr());
    // Anyone can fetch the image with it, as image-deploy would.
    let dl = env.path("fetched");
    sh(Command::new("python3")
        .args(["-c", "import sys, urllib.request; open(sys.argv[2], 'wb').write(urllib.request.urlopen(sys.argv[1]).read())", url])
        .arg(&dl));
    assert_eq!(md5sum(&dl), md5sum(&cap.artifact()));
    assert_eq!(md5sum(&s3.object(MANIFEST)), md5sum(&cap.file(MANIFEST)));
    // And `goldcap profile` can use it as the unauthenticated image-url.
    let p = goldcap(&[
        "profile".as_ref(),
        cap.file(MANIFEST_JSON).as_os_str(),
        "--image-base".as_ref(),
        url.as_ref(),
    ]);
    assert!(p.status.success());
    assert!(
        String::from_utf8_lossy(&p.stdout).contains(&format!("image-deploy/image-url: \"{url}\""))
    );
}

#[test]
fn s3_parts_are_retried_individually() {
    let env = big_env(16);
    let s3 = S3::start(json!([
        {"kind": "500", "method": "PUT", "query": "partNumber=2&", "times": 2},
        {"kind": "reset", "method": "PUT", "query": "partNumber=3&", "times": 1},
        {"kind": "stall", "method": "PUT", "query": "partNumber=1&", "times": 1, "seconds": 8}
    ]));
    let r = s3.goldcap(
        &capture_args(
            &env,
            "out",
            &[
                "--upload",
                "s3://goldcap-test/x",
                "--part-size",
                "5",
                "--timeout",
                "2",
            ],
        ),
        &env.path("out"),
    );
    r.ok();
    let err = r.stderr();
    // The stream itself recovered: no local copy exists to fall back on.
    assert!(!err.contains("the streamed upload failed"), "{err}");
    assert_eq!(
        err.matches("part 2 of s3://goldcap-test/x/").count(),
        2,
        "{err}"
    );
    assert_eq!(
        err.matches("part 3 of s3://goldcap-test/x/").count(),
        1,
        "{err}"
    );
    assert_eq!(
        err.matches("part 1 of s3://goldcap-test/x/").count(),
        1,
        "{err}"
    );
    assert_eq!(
        md5sum(&s3.object(&format!("x/{ARTIFACT}"))),
        r.manifest_json()["md5"].as_str().unwrap()
    );
    assert!(!env.path("out").join(ARTIFACT).exists());
    assert!(s3.open_uploads().is_empty());
}

#[test]
fn s3_failed_upload_is_aborted_and_leaves_nothing() {
    let env = big_env(16);
    let s3 = S3::start(json!([
        {"kind": "500", "method": "PUT", "query": "partNumber=3&", "times": 100}
    ]));
    let r = s3.goldcap(
        &capture_args(
            &env,
            "out",
            &[
                "--upload",
                "s3://goldcap-test/x",
                "--part-size",
                "5",
                "--attempts",
                "2",
            ],
        ),
        &env.path("out"),
    );
    assert_eq!(r.code(), 1, "{}", r.stderr());
    assert!(
        r.stderr().contains("part 3 of s3://goldcap-test/x/"),
        "{}",
        r.stderr()
    );
    assert!(
        r.stderr().contains("gave up after 2 attempts"),
        "{}",
        r.stderr()
    );
    // Aborted: no object, no orphaned parts, no local files under final names.
    assert!(s3.keys().is_empty(), "{:?}", s3.keys());
    assert!(s3.open_uploads().is_empty(), "{:?}", s3.open_uploads());
    assert!(r.listing().is_empty(), "{:?}", r.listing());
}

#[test]
fn s3_wrong_credentials_fail_before_the_root_is_read() {
    let env = big_env(8);
    let s3 = S3::start(json!([]));
    let flag = env.path("pause-flag");
    let mut c = goldcap_cmd(&capture_args(
        &env,
        "out",
        &["--upload", "s3://goldcap-test/x"],
    ));
    s3.env(&mut c);
    c.env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        .env("GOLDCAP_TEST_PAUSE", "open:srv/random.bin")
        .env("GOLDCAP_TEST_PAUSE_FILE", &flag);
    let r = Run {
        out: env.path("out"),
        output: c.output().unwrap(),
    };
    assert_eq!(r.code(), 1);
    assert!(
        r.stderr().contains("SignatureDoesNotMatch"),
        "{}",
        r.stderr()
    );
    assert!(
        !r.stderr().contains("retrying"),
        "4xx is final: {}",
        r.stderr()
    );
    assert!(
        !flag.exists(),
        "the root was read before the credentials were checked"
    );
    assert!(r.listing().is_empty());
    assert!(s3.keys().is_empty());
    assert_token_absent("not-the-secret", &[&r], &[]);
    // No credentials at all: a usage error.
    let mut c = goldcap_cmd(&capture_args(
        &env,
        "out",
        &["--upload", "s3://goldcap-test/x"],
    ));
    let r = Run {
        out: env.path("out"),
        output: c.output().unwrap(),
    };
    assert_eq!(r.code(), 2);
    assert!(r.stderr().contains("AWS_ACCESS_KEY_ID"), "{}", r.stderr());
}

#[test]
fn presigned_put_urls_upload_artifact_and_manifest() {
    let env = Env::new();
    let cap = captured(&env, "out");
    let s3 = S3::start(json!([]));
    let a = s3.boto(&["presign-put", "goldcap-test", "handed/image.tgz"]);
    let m = s3.boto(&["presign-put", "goldcap-test", "handed/image-MANIFEST.txt"]);
    let urls = env.path("urls");
    std::fs::write(&urls, format!("{a}{m}")).unwrap();
    let target = format!("put:@{}", urls.display());
    let r = goldcap(&[
        "upload".as_ref(),
        cap.file(MANIFEST_JSON).as_os_str(),
        "--to".as_ref(),
        target.as_ref(),
        "--json".as_ref(),
    ]);
    let run_ = Run {
        out: cap.out.clone(),
        output: r,
    };
    run_.ok();
    assert_eq!(
        md5sum(&s3.object("handed/image.tgz")),
        md5sum(&cap.artifact())
    );
    assert_eq!(
        md5sum(&s3.object("handed/image-MANIFEST.txt")),
        md5sum(&cap.file(MANIFEST))
    );
    // Signatures never show.
    assert!(
        !run_.stdout().contains("X-Amz-Signature") && !run_.stderr().contains("X-Amz-Signature")
    );
    // A URL signed for something else is refused with the server's reason.
    let tampered = a.trim().replace("handed/image.tgz", "handed/other.tgz");
    let target = format!("put:{tampered},{}", m.trim());
    let r = goldcap(&[
        "upload".as_ref(),
        cap.file(MANIFEST_JSON).as_os_str(),
        "--to".as_ref(),
        target.as_ref(),
    ]);
    assert_eq!(r.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("SignatureDoesNotMatch"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(!s3.object("handed/other.tgz").exists());
}

#[test]
fn capture_with_presigned_put_keeps_the_local_file() {
    let env = Env::new();
    let s3 = S3::start(json!([]));
    let a = s3.boto(&["presign-put", "goldcap-test", "p/image.tgz"]);
    let m = s3.boto(&["presign-put", "goldcap-test", "p/MANIFEST.txt"]);
    let target = format!("put:{},{}", a.trim(), m.trim());
    let r = Run {
        out: env.path("out"),
        output: goldcap_cmd(&capture_args(&env, "out", &["--upload", &target]))
            .output()
            .unwrap(),
    };
    r.ok();
    assert_eq!(md5sum(&s3.object("p/image.tgz")), md5sum(&r.artifact()));
    assert_eq!(
        md5sum(&r.artifact()),
        r.manifest_json()["md5"].as_str().unwrap()
    );
}

// -------------------------------------------------------------- profile

#[test]
fn profile_is_the_image_deploy_example_made_for_the_capture() {
    let env = Env::new();
    let cap = captured(&env, "out");
    let p = goldcap(&["profile".as_ref(), cap.file(MANIFEST_JSON).as_os_str()]);
    assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));
    let y = String::from_utf8(p.stdout).unwrap();
    assert!(
        y.starts_with("---\nName: \"debian-12-rootfs-20261122-101500-cf99cd80eb\"\n"),
        "{y}"
    );
    let params: Vec<&str> = y
        .lines()
        .skip_while(|l| *l != "Params:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .collect();
    assert_eq!(
        params,
        vec![
            "  image-deploy/image-os: linux",
            "  image-deploy/image-type: tgz",
            &format!(
                "  image-deploy/image-url: \"{{{{.ProvisionerURL}}}}/files/{UPLOAD_TARBALL}\""
            ),
            // The sample kernel has CONFIG_KEXEC=y and kexec-tools is there.
            "  kexec-ok: true",
        ]
    );
    assert!(y.contains(cap.manifest_json()["sha256"].as_str().unwrap()));
    // Without kexec-tools in the image, no kexec-ok.
    std::fs::remove_file(env.root().join("usr/sbin/kexec")).unwrap();
    let cap2 = run(&capture_args(&env, "out2", &["-q"]), &[], &env.path("out2"));
    cap2.ok();
    let file = env.path("profile.yaml");
    let p = goldcap(&[
        "profile".as_ref(),
        cap2.file(MANIFEST_JSON).as_os_str(),
        "--image-base".as_ref(),
        "http://images.example:8091/files/images".as_ref(),
        "-o".as_ref(),
        file.as_os_str(),
    ]);
    assert!(p.status.success() && p.stdout.is_empty());
    let y = std::fs::read_to_string(&file).unwrap();
    assert!(
        y.contains(&format!(
            "image-url: \"http://images.example:8091/files/images/{ARTIFACT}\"\n"
        )),
        "{y}"
    );
    assert!(!y.contains("kexec-ok"), "{y}");
    // A zstd capture cannot go through image-deploy's curtin.
    let z = run(
        &capture_args(&env, "out3", &["-q", "--format", "tzst"]),
        &[],
        &env.path("out3"),
    );
    z.ok();
    let p = goldcap(&["profile".as_ref(), z.file(MANIFEST_JSON).as_os_str()]);
    assert_eq!(p.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&p.stderr).contains("curtin only streams gzip"));
}

#[allow(dead_code)]
fn write_all(p: &Path, data: &[u8]) {
    std::fs::File::create(p).unwrap().write_all(data).unwrap();
}

// ------------------------------------------------------------------ hostile input

/// A MANIFEST is input: names that point outside its directory, or upload
/// names that climb out of the files tree, are refused before a request.
#[test]
fn a_manifest_naming_files_outside_its_directory_sends_nothing() {
    let env = Env::new();
    let cap = captured(&env, "out");
    let drp = Drp::start(json!({}));
    let good = cap.manifest_json();
    for (key, value) in [
        ("filename", "/etc/shadow"),
        ("filename", "../root/etc/shadow"),
        ("upload_tarball", "/etc/x.tgz"),
        ("upload_tarball", "images/../../x.tgz"),
        ("upload_manifest", "images/../x.txt"),
    ] {
        let mut m = good.clone();
        m[key] = json!(value);
        let crafted = cap.out.join("crafted.json");
        std::fs::write(&crafted, m.to_string()).unwrap();
        let r = run(
            &[
                "upload".into(),
                crafted.into(),
                "--to".into(),
                drp.target().into(),
            ],
            &[("RS_TOKEN", TOKEN)],
            &cap.out,
        );
        assert_eq!(r.code(), 2, "{key}={value}: {}", r.stderr());
        assert!(r.stderr().contains(key), "{}", r.stderr());
    }
    assert!(drp.log().is_empty(), "requests were sent: {:?}", drp.log());
    // A symlink in the MANIFEST's directory is not the artifact either.
    let art = cap.artifact();
    let moved = cap.out.join("elsewhere.tgz");
    std::fs::rename(&art, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &art).unwrap();
    let r = run(
        &[
            "upload".into(),
            cap.file(MANIFEST_JSON).into(),
            "--to".into(),
            drp.target().into(),
        ],
        &[("RS_TOKEN", TOKEN)],
        &cap.out,
    );
    assert_eq!(r.code(), 2, "{}", r.stderr());
    assert!(r.stderr().contains("not a regular file"), "{}", r.stderr());
    assert!(drp.log().is_empty());
}

/// A local artifact that no longer matches its MANIFEST is found before a
/// byte is sent, so the good copy already on the endpoint stays.
#[test]
fn a_damaged_local_artifact_never_replaces_the_good_copy() {
    let env = Env::new();
    let cap = captured(&env, "out");
    let drp = Drp::start(json!({}));
    let args = args_for(&cap, &drp);
    run(&args, &[("RS_TOKEN", TOKEN)], &cap.out).ok();
    let good = md5sum(&drp.stored(UPLOAD_TARBALL));
    let sent_before = drp.log().len();
    // One byte flipped in the middle.
    let mut bytes = std::fs::read(cap.artifact()).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(cap.artifact(), &bytes).unwrap();
    let r = run(&args, &[("RS_TOKEN", TOKEN)], &cap.out);
    assert_eq!(r.code(), 1, "{}", r.stderr());
    assert!(
        r.stderr().contains("does not match its MANIFEST")
            && r.stderr().contains("nothing was sent"),
        "{}",
        r.stderr()
    );
    assert_eq!(drp.log().len(), sent_before, "{:?}", drp.log());
    assert_eq!(md5sum(&drp.stored(UPLOAD_TARBALL)), good);
}

/// Input files that are not regular files, or far too large, fail at once
/// with a clear message instead of hanging or filling memory.
#[test]
fn input_files_are_regular_and_bounded() {
    let env = Env::new();
    let cap = captured(&env, "out");
    let fifo = cap.out.join("fifo.json");
    sh(Command::new("mkfifo").arg(&fifo));
    let big = cap.out.join("big.toml");
    std::fs::write(&big, format!("x = \"{}\"\n", "y".repeat(5 << 20))).unwrap();
    let long_line = cap.out.join("long.toml");
    std::fs::write(
        &long_line,
        format!("[[operation]]\nid = \"x\" {}\n", "z".repeat(1 << 20)),
    )
    .unwrap();
    let art = cap.artifact();
    let token = cap.out.join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let cases: Vec<(Vec<OsString>, &str)> = vec![
        (
            os(&["verify", art.to_str().unwrap(), "--manifest", "/dev/zero"]),
            "not a regular file",
        ),
        (
            vec![
                "verify".into(),
                art.clone().into(),
                "--manifest".into(),
                fifo.clone().into(),
            ],
            "not a regular file",
        ),
        (
            vec![
                "upload".into(),
                fifo.clone().into(),
                "--to".into(),
                "drp:https://127.0.0.1:9".into(),
            ],
            "not a regular file",
        ),
        (
            vec!["profile".into(), fifo.clone().into()],
            "not a regular file",
        ),
        (
            os(&["scrub", "--list", "--scrub-profile", "/dev/zero"]),
            "not a regular file",
        ),
        (
            vec![
                "scrub".into(),
                "--list".into(),
                "--scrub-profile".into(),
                big.into(),
            ],
            "larger than 4 MiB",
        ),
        (
            os(&[
                "token",
                "--user",
                "u",
                "--paths",
                "x",
                "--token-file",
                "/dev/zero",
            ]),
            "not a regular file",
        ),
        (
            vec![
                "token".into(),
                "--user".into(),
                "u".into(),
                "--paths".into(),
                "x".into(),
                "--token-file".into(),
                token.clone().into(),
                "--ca-cert".into(),
                "/dev/zero".into(),
            ],
            "not a regular file",
        ),
        (
            os(&[
                "upload",
                cap.file(MANIFEST_JSON).to_str().unwrap(),
                "--to",
                "put:@/dev/zero",
            ]),
            "not a regular file",
        ),
    ];
    for (args, want) in cases {
        let start = Instant::now();
        let o = goldcap(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{args:?} took {:?}",
            start.elapsed()
        );
    }
    // A FIFO named like a MANIFEST next to the artifact is skipped, not
    // waited on: verify finds the real one.
    let o = goldcap(&[OsString::from("verify"), art.clone().into()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.lines()
            .next()
            .is_some_and(|l| l.starts_with("ok    manifest") && l.ends_with(MANIFEST_JSON)),
        "{out}"
    );
    // A parse error quotes the offending line, clipped.
    let o = goldcap(&[
        OsString::from("scrub"),
        "--list".into(),
        "--scrub-profile".into(),
        long_line.into(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stderr.len() < 4096, "{} bytes on stderr", o.stderr.len());
}

/// A signal while the MANIFEST is being sent ends the upload with the
/// signal's exit status (143 for SIGTERM), after withdrawing the artifact
/// that went up before it.
#[test]
fn an_upload_interrupted_at_the_manifest_exits_with_the_signal_status() {
    let env = Env::new();
    let cap = captured(&env, "out");
    let man = format!("/{UPLOAD_MANIFEST}");
    let drp = Drp::start(json!({"faults": [
        {"kind": "stall", "method": "POST", "path": man, "times": 1, "seconds": 4, "after": 1}
    ]}));
    let mut child = goldcap_cmd(&[
        OsString::from("upload"),
        cap.file(MANIFEST_JSON).into(),
        "--to".into(),
        drp.target().into(),
        "--timeout".into(),
        "60".into(),
    ])
    .env("RS_TOKEN", TOKEN)
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let part = drp.stored(&format!("{UPLOAD_MANIFEST}.part"));
    let start = Instant::now();
    while !(drp.stored(UPLOAD_TARBALL).exists() && part.exists()) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the MANIFEST never started"
        );
        assert!(child.try_wait().unwrap().is_none(), "goldcap ended early");
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(err.contains("interrupted by signal 15"), "{err}");
    assert!(drp.images().is_empty(), "{:?}", drp.images());
}

/// The calls the DRP contract server saw, from the `n`th on, as
/// "METHOD path".
fn calls_since(drp: &Drp, n: usize) -> Vec<String> {
    drp.log()[n..]
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["method"].as_str().unwrap(),
                e["path"].as_str().unwrap()
            )
        })
        .collect()
}

/// A name DRP already holds: the same bytes are not sent again; other
/// bytes are replaced only with --force, and nothing is sent without it;
/// a MANIFEST that then fails to go up never takes the artifact that was
/// there before with it.
#[test]
fn drp_reupload_keeps_the_same_bytes_and_replaces_others_only_with_force() {
    let env = Env::new();
    let cap = captured(&env, "out");
    let drp = Drp::start(json!({}));
    let args = |extra: &[&str]| -> Vec<OsString> {
        let mut a = args_for(&cap, &drp);
        a.push("--json".into());
        a.extend(extra.iter().map(OsString::from));
        a
    };
    run(&args(&[]), &[("RS_TOKEN", TOKEN)], &cap.out).ok();
    let good = md5sum(&cap.artifact());
    // Again: both are there with the same sha256, nothing is sent.
    let n = drp.log().len();
    let r = run(&args(&[]), &[("RS_TOKEN", TOKEN)], &cap.out);
    r.ok();
    let art = format!("/api/v3/files/{UPLOAD_TARBALL}");
    let man = format!("/api/v3/files/{UPLOAD_MANIFEST}");
    assert_eq!(
        calls_since(&drp, n),
        [format!("HEAD {art}"), format!("HEAD {man}")]
    );
    assert!(r.stderr().contains("both already there"), "{}", r.stderr());
    let out: Value = serde_json::from_str(&r.stdout()).unwrap();
    assert_eq!(out["objects"][0]["sent"], false);
    assert_eq!(out["objects"][1]["sent"], false);
    // Other bytes under the artifact's name: refused, nothing sent.
    std::fs::write(drp.stored(UPLOAD_TARBALL), b"another image").unwrap();
    let other = sha256sum(&drp.stored(UPLOAD_TARBALL));
    let n = drp.log().len();
    let r = run(&args(&[]), &[("RS_TOKEN", TOKEN)], &cap.out);
    assert_eq!(r.code(), 1, "{}", r.stderr());
    let want = format!(
        "/{UPLOAD_TARBALL} on the endpoint already holds sha256 {other}, not the {} goldcap would send; nothing was sent (--force replaces it)",
        sha256sum(&cap.artifact())
    );
    assert!(r.stderr().contains(&want), "{}", r.stderr());
    assert!(
        calls_since(&drp, n).iter().all(|c| c.starts_with("HEAD")),
        "{:?}",
        calls_since(&drp, n)
    );
    assert_eq!(
        std::fs::read(drp.stored(UPLOAD_TARBALL)).unwrap(),
        b"another image"
    );
    // With --force: replaced, the MANIFEST (the same) not sent again.
    let n = drp.log().len();
    let r = run(&args(&["--force"]), &[("RS_TOKEN", TOKEN)], &cap.out);
    r.ok();
    assert_eq!(md5sum(&drp.stored(UPLOAD_TARBALL)), good);
    let calls = calls_since(&drp, n);
    assert!(calls.contains(&format!("POST {art}")), "{calls:?}");
    assert!(!calls.contains(&format!("POST {man}")), "{calls:?}");
    assert!(
        r.stderr().contains("the MANIFEST already there"),
        "{}",
        r.stderr()
    );
    // The artifact there and good, the MANIFEST gone and refused by the
    // endpoint: the upload fails and the artifact stays.
    std::fs::remove_file(drp.stored(UPLOAD_MANIFEST)).unwrap();
    let failing = Drp::start(json!({"faults": [
        {"kind": "500", "method": "POST", "path": format!("/{UPLOAD_MANIFEST}"), "times": 100}
    ]}));
    let stored = failing.stored(UPLOAD_TARBALL);
    std::fs::create_dir_all(stored.parent().unwrap()).unwrap();
    std::fs::copy(cap.artifact(), &stored).unwrap();
    let mut a = args(&["--attempts", "1"]);
    a[3] = failing.target().into();
    let r = run(&a, &[("RS_TOKEN", TOKEN)], &cap.out);
    assert_eq!(r.code(), 1, "{}", r.stderr());
    assert_eq!(md5sum(&stored), good, "{}", r.stderr());
    assert!(
        calls_since(&failing, 0)
            .iter()
            .all(|c| !c.starts_with("DELETE")),
        "{:?}",
        calls_since(&failing, 0)
    );
}

/// A streamed capture cannot know its checksum before it is sent: a name
/// DRP already holds makes it fail before the root is read, unless
/// --force.
#[test]
fn drp_capture_stream_refuses_a_name_already_there_unless_forced() {
    let env = Env::new();
    let cap = captured(&env, "first");
    let drp = Drp::start(json!({}));
    let stored = drp.stored(UPLOAD_TARBALL);
    std::fs::create_dir_all(stored.parent().unwrap()).unwrap();
    std::fs::write(&stored, b"an older image").unwrap();
    let args = |extra: &[&str]| -> Vec<OsString> {
        let mut a = capture_args(&env, "out", &["--upload", &drp.target()]);
        a.extend(extra.iter().map(OsString::from));
        a
    };
    let out = env.path("out");
    let r = run(&args(&[]), &[("RS_TOKEN", TOKEN)], &out);
    assert_eq!(r.code(), 1, "{}", r.stderr());
    assert!(
        r.stderr().contains(&format!(
            "/{UPLOAD_TARBALL} on the endpoint already holds sha256 {};",
            sha256sum(&stored)
        )) && r.stderr().contains("--force replaces it"),
        "{}",
        r.stderr()
    );
    assert_eq!(std::fs::read(&stored).unwrap(), b"an older image");
    assert!(drp.log().iter().all(|e| e["method"] == "HEAD"));
    let r = run(&args(&["--force"]), &[("RS_TOKEN", TOKEN)], &out);
    r.ok();
    assert_eq!(md5sum(&stored), md5sum(&cap.artifact()));
}

/// S3: goldcap records the sha256 it uploaded on each object, so the same
/// capture is not sent twice; an object it did not write is replaced only
/// with --force.
#[test]
fn s3_reupload_keeps_the_same_bytes_and_replaces_others_only_with_force() {
    let env = Env::new();
    let cap = captured(&env, "out");
    let s3 = S3::start(json!([]));
    let args = |extra: &[&str]| -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            "upload".into(),
            cap.file(MANIFEST_JSON).into(),
            "--to".into(),
            "s3://goldcap-test".into(),
            "--json".into(),
        ];
        a.extend(extra.iter().map(OsString::from));
        a
    };
    s3.goldcap(&args(&[]), &cap.out).ok();
    let fetched = env.path("fetched");
    let got: Value = serde_json::from_str(&s3.boto(&[
        "get",
        "goldcap-test",
        ARTIFACT,
        fetched.to_str().unwrap(),
    ]))
    .unwrap();
    let sha = sha256sum(&cap.artifact());
    assert_eq!(got["metadata"]["goldcap-sha256"], sha.as_str(), "{got}");
    let mtime = |k: &str| std::fs::metadata(s3.object(k)).unwrap().modified().unwrap();
    let before = [ARTIFACT, MANIFEST, MANIFEST_JSON].map(mtime);
    let r = s3.goldcap(&args(&[]), &cap.out);
    r.ok();
    let out: Value = serde_json::from_str(&r.stdout()).unwrap();
    for o in out["objects"].as_array().unwrap() {
        assert_eq!(o["sent"], false, "{o}");
    }
    assert_eq!([ARTIFACT, MANIFEST, MANIFEST_JSON].map(mtime), before);
    // An object goldcap did not write (no recorded sha256).
    let other = env.path("other");
    std::fs::write(&other, b"another image").unwrap();
    s3.boto(&["put", "goldcap-test", ARTIFACT, other.to_str().unwrap()]);
    let r = s3.goldcap(&args(&[]), &cap.out);
    assert_eq!(r.code(), 1, "{}", r.stderr());
    assert!(
        r.stderr().contains(&format!(
            "s3://goldcap-test/{ARTIFACT} already holds an object goldcap did not record a sha256 for, not the {sha} goldcap would send; nothing was sent (--force replaces it)"
        )),
        "{}",
        r.stderr()
    );
    assert_eq!(
        std::fs::read(s3.object(ARTIFACT)).unwrap(),
        b"another image"
    );
    s3.goldcap(&args(&["--force"]), &cap.out).ok();
    assert_eq!(md5sum(&s3.object(ARTIFACT)), md5sum(&cap.artifact()));
}

/// An image whose clones would share identity is not published by
/// accident: `upload` refuses a MANIFEST that shows identity operations
/// off (or does not say) and `capture --upload` refuses before the root
/// is read, unless `--allow-identity`.
#[test]
fn an_image_that_keeps_identity_is_uploaded_only_when_allowed() {
    let env = Env::new();
    let r = run(
        &capture_args(&env, "out", &["--operations", "none"]),
        &[],
        &env.path("out"),
    );
    r.ok();
    let drp = Drp::start(json!({}));
    let args = args_for(&r, &drp);
    let refused = run(&args, &[("RS_TOKEN", TOKEN)], &r.out);
    assert_eq!(refused.code(), 2, "{}", refused.stderr());
    assert!(
        refused
            .stderr()
            .contains("it shows identity kept in the image by machine-id, dbus-machine-id,")
            && refused
                .stderr()
                .contains("nothing was sent (--allow-identity uploads it anyway)"),
        "{}",
        refused.stderr()
    );
    assert!(drp.log().is_empty(), "{:?}", drp.log());
    let mut allowed = args.clone();
    allowed.push("--allow-identity".into());
    run(&allowed, &[("RS_TOKEN", TOKEN)], &r.out).ok();
    assert!(drp.stored(UPLOAD_TARBALL).is_file());
    // A MANIFEST that does not record the scrub (an older goldcap's).
    let json = r.file(MANIFEST_JSON);
    let mut m: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    m["scrub"].as_object_mut().unwrap().remove("identity_off");
    std::fs::write(&json, m.to_string()).unwrap();
    let other = Drp::start(json!({}));
    let refused = run(&args_for(&r, &other), &[("RS_TOKEN", TOKEN)], &r.out);
    assert_eq!(refused.code(), 2, "{}", refused.stderr());
    assert!(
        refused
            .stderr()
            .contains("it does not record what the identity scrub did"),
        "{}",
        refused.stderr()
    );
    assert!(other.log().is_empty());
    // Streaming: refused before anything is read or sent.
    let stream = Drp::start(json!({}));
    let r = run(
        &capture_args(
            &env,
            "streamed",
            &[
                "--operations",
                "-ssh-hostkeys",
                "--upload",
                &stream.target(),
            ],
        ),
        &[("RS_TOKEN", TOKEN)],
        &env.path("streamed"),
    );
    assert_eq!(r.code(), 2, "{}", r.stderr());
    assert!(
        r.stderr()
            .contains("--upload: identity would be kept in the image by ssh-hostkeys"),
        "{}",
        r.stderr()
    );
    assert!(stream.log().is_empty());
    assert!(!env.path("streamed").exists());
}

#[test]
fn s3_credentials_come_from_aws_files_and_profiles_as_the_aws_tools_find_them() {
    let env = Env::new();
    let cap = captured(&env, "out");
    let s3 = S3::start(json!([]));
    let (key, secret) = (
        s3.info["key"].as_str().unwrap(),
        s3.info["secret"].as_str().unwrap(),
    );
    let home = env.path("home");
    std::fs::create_dir_all(home.join(".aws")).unwrap();
    // The default profile holds wrong keys: AWS_PROFILE must be what counts.
    std::fs::write(
        home.join(".aws/credentials"),
        format!(
            "[default]\naws_access_key_id = WRONG\naws_secret_access_key = wrong\n\n\
             [ci]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        home.join(".aws/config"),
        format!(
            "[default]\nregion = us-east-1\nendpoint_url = {0}\n\n[profile ci]\nregion = us-east-1\nendpoint_url = {0}\n",
            s3.info["endpoint"].as_str().unwrap()
        ),
    )
    .unwrap();
    let upload = |prefix: &str, envs: &[(&str, &OsStr)]| {
        let mut c = goldcap_cmd(&[
            "upload".as_ref(),
            cap.file(MANIFEST_JSON).as_os_str(),
            "--to".as_ref(),
            format!("s3://goldcap-test/{prefix}").as_ref(),
            "-v".as_ref(),
        ]);
        c.env("HOME", &home);
        for (k, v) in envs {
            c.env(k, v);
        }
        Run {
            out: cap.out.clone(),
            output: c.output().unwrap(),
        }
    };
    let r = upload("profile", &[("AWS_PROFILE", OsStr::new("ci"))]);
    r.ok();
    assert!(
        s3.keys().contains(&format!("profile/{ARTIFACT}")),
        "{:?}",
        s3.keys()
    );
    assert_token_absent(secret, &[&r], &[]);
    // Without AWS_PROFILE, the default profile's (wrong) keys are used.
    let r = upload("default", &[]);
    assert_eq!(r.code(), 1, "{}", r.stderr());
    assert!(
        r.stderr().contains("InvalidAccessKeyId") || r.stderr().contains("403"),
        "{}",
        r.stderr()
    );
    assert!(!s3.keys().iter().any(|k| k.starts_with("default/")));
    // An unknown profile names the files it looked in.
    let r = upload("none", &[("AWS_PROFILE", OsStr::new("nope"))]);
    assert_eq!(r.code(), 2);
    assert!(
        r.stderr().contains("\"nope\" is in neither"),
        "{}",
        r.stderr()
    );

    // The instance metadata service (IMDSv2), when nothing else has keys.
    let mut imds = Command::new(venv_python())
        .arg(project().join("tests/servers/imds_server.py"))
        .args([key, secret, "imds-session-token"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(imds.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let endpoint: Value = serde_json::from_str(&line).unwrap();
    let mut c = goldcap_cmd(&[
        "upload".as_ref(),
        cap.file(MANIFEST_JSON).as_os_str(),
        "--to".as_ref(),
        "s3://goldcap-test/imds".as_ref(),
    ]);
    c.env_remove("AWS_EC2_METADATA_DISABLED")
        .env(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            endpoint["endpoint"].as_str().unwrap(),
        )
        .env("AWS_ENDPOINT_URL", s3.info["endpoint"].as_str().unwrap())
        .env("AWS_REGION", "us-east-1");
    let r = Run {
        out: cap.out.clone(),
        output: c.output().unwrap(),
    };
    drop(imds.stdin.take());
    let log = imds.wait_with_output().unwrap();
    let log: Vec<Value> = String::from_utf8_lossy(&log.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    r.ok();
    assert!(
        s3.keys().contains(&format!("imds/{ARTIFACT}")),
        "{:?}",
        s3.keys()
    );
    // A session token first, then every read with it (IMDSv2).
    assert_eq!(log[0]["method"], "PUT", "{log:?}");
    assert!(
        log[1..]
            .iter()
            .all(|e| e["method"] == "GET" && e["session"] == true),
        "{log:?}"
    );
    assert_token_absent(secret, &[&r], &[]);
    assert_token_absent("imds-session-token", &[&r], &[]);
}

#[test]
fn apply_reads_what_upload_put_on_drp_and_s3() {
    let env = Env::new();
    let cap = captured(&env, "out");
    // What GNU tar restores of the same artifact, for comparison (the
    // apply adds its report under var/log).
    let reference = env.path("gnu");
    assert!(
        gnu_extract(&cap.artifact(), &reference, &[])
            .status
            .success()
    );
    let same_as_tar = |dest: &Path| {
        let d = diff(
            &snapshot(&reference, &[]),
            &snapshot(dest, &[]),
            &[("var/log/goldcap-apply.json", "*"), ("var/log", "mtime_ns")],
        );
        assert!(d.is_empty(), "{}", d.join("\n"));
    };

    // DRP: the artifact by its files path, verified against the text
    // MANIFEST upload put beside it, with the job's credentials.
    let drp = Drp::start(json!({}));
    run(&args_for(&cap, &drp), &[("RS_TOKEN", TOKEN)], &cap.out).ok();
    let dest = env.path("from-drp");
    let source = format!("drp:{UPLOAD_TARBALL}");
    let a = run(
        &os(&[
            "apply",
            &source,
            "--target",
            dest.to_str().unwrap(),
            "--json",
        ]),
        &[("RS_ENDPOINT", &drp.url()), ("RS_TOKEN", TOKEN)],
        &cap.out,
    );
    a.ok();
    let j: Value = serde_json::from_str(&a.stdout()).unwrap();
    assert_eq!(j["verified"], true, "{j}");
    assert!(
        j["manifest"].as_str().unwrap().ends_with(UPLOAD_MANIFEST),
        "{j}"
    );
    same_as_tar(&dest);
    assert_token_absent(TOKEN, &[&a], &[&dest]);
    // A token the endpoint refuses: exit 1, nothing applied.
    let dest = env.path("refused");
    let r = run(
        &os(&["apply", &source, "--target", dest.to_str().unwrap()]),
        &[("RS_ENDPOINT", &drp.url()), ("RS_TOKEN", "not-a-token")],
        &cap.out,
    );
    assert_eq!(r.code(), 1, "{}", r.stderr());
    assert!(r.stderr().contains("HTTP 403"), "{}", r.stderr());
    assert!(!dest.join("etc").exists());

    // S3: the JSON MANIFEST's key; the artifact is the object beside it,
    // both read with signed GETs.
    let s3 = S3::start(json!([]));
    let mut c = goldcap_cmd(&os(&[
        "upload",
        cap.file(MANIFEST_JSON).to_str().unwrap(),
        "--to",
        "s3://goldcap-test/gold",
    ]));
    s3.env(&mut c);
    assert!(c.output().unwrap().status.success());
    let dest = env.path("from-s3");
    let mut c = goldcap_cmd(&os(&[
        "apply",
        &format!("s3://goldcap-test/gold/{MANIFEST_JSON}"),
        "--target",
        dest.to_str().unwrap(),
        "--json",
    ]));
    s3.env(&mut c);
    let a = Run {
        out: cap.out.clone(),
        output: c.output().unwrap(),
    };
    a.ok();
    let j: Value = serde_json::from_str(&a.stdout()).unwrap();
    assert_eq!(j["verified"], true, "{j}");
    assert!(!a.stderr().contains("X-Amz-Signature"), "{}", a.stderr());
    same_as_tar(&dest);
}
