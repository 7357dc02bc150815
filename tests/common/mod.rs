//! Test environment: sample roots built at test time, the goldcap binary run
//! hermetically, and independent read-back tools (GNU tar, bsdtar,
//! treesnap.py, md5sum, getfattr/getfacl/getcap).
//!
//! These tests need root (mknod, chown, setcap, trusted.* xattrs, mounts)
//! and the tools `scripts/install-deps` installs; they fail loudly, never
//! skip, when either is missing.

use serde_json::Value;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

pub const IDENT: &str = "cf99cd80eb";
pub const DATE: &str = "2026-11-22T10:15:00Z";
pub const ARTIFACT: &str = "debian-12-rootfs-20261122-101500-cf99cd80eb.tgz";
pub const MANIFEST: &str = "debian-12-MANIFEST-20261122-101500-cf99cd80eb.txt";
pub const MANIFEST_JSON: &str = "debian-12-MANIFEST-20261122-101500-cf99cd80eb.json";

/// Volatile directories whose content a capture leaves out.
pub const VOLATILE: &[&str] = &["proc", "sys", "dev", "run", "tmp", "var/tmp"];

pub fn project() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests need root (mknod, chown, setcap, mounts); CI runs as root"
    );
}

pub fn require_tool(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(found, "{tool} is missing: run scripts/install-deps");
}

/// Where tests make their directories: `target/tmp`, on the disk the build
/// is on (a tmpfs `/tmp` refuses `O_DIRECT`, which captures use).
pub fn test_tmp() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A root built once per test run by `build` (into `target/tmp`,
/// `fixture-<name>.<pid>`; builds are serialised, and `build` must not ask
/// for another cached root) and copied for each test with `cp -a`, which
/// keeps everything the tests compare: owners, modes, ns mtimes, xattrs,
/// ACLs, capabilities, hardlinks, devices, sparse files
/// (`the_copied_sample_root_is_the_built_one` checks it).
fn cached_root(name: &str, build: impl FnOnce(&Path)) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get(name) {
        return p.clone();
    }
    let dir = test_tmp().join(format!("fixture-{name}.{}", std::process::id()));
    remove_stale_fixtures(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    build(&dir);
    built.insert(name.to_owned(), dir.clone());
    dir
}

/// Fixtures left by test runs that have ended (their pid is gone).
fn remove_stale_fixtures(ours: &Path) {
    for e in std::fs::read_dir(test_tmp()).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("fixture-")
            .and_then(|n| n.rsplit('.').next())
        else {
            continue;
        };
        if e.path() != ours && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Runs a fixture script, asserting it worked.
fn fixture(script: &str, args: &[&OsStr]) {
    let out = Command::new("bash")
        .arg(project().join("fixtures").join(script))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The sample root (`fixtures/make-sample-root.sh`), built once per run.
pub fn sample_root() -> PathBuf {
    cached_root("sample", |dir| {
        fixture("make-sample-root.sh", &[dir.as_os_str()])
    })
}

/// Copies a cached root to `to` (which must not exist).
fn copy_root(from: &Path, to: &Path) {
    sh(Command::new("cp").arg("-a").arg(from).arg(to));
}

/// A temporary directory holding a sample root and output directories.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    /// A copy of `template` in a new test directory.
    fn from_template(template: &Path) -> Env {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("goldcap-test-")
            .tempdir_in(test_tmp())
            .unwrap();
        let env = Env { dir };
        copy_root(template, &env.root());
        env
    }

    /// A copy of the sample root from `fixtures/make-sample-root.sh`.
    pub fn new() -> Env {
        require_root();
        Env::from_template(&sample_root())
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Runs `goldcap capture --root ROOT -o OUT --ident --date` plus `extra`.
    pub fn capture(&self, out: &str, extra: &[&str]) -> Run {
        let out_dir = self.path(out);
        let mut args: Vec<OsString> = vec![
            "capture".into(),
            "--root".into(),
            self.root().into(),
            "-o".into(),
            out_dir.clone().into(),
        ];
        args.extend(["--ident", IDENT, "--date", DATE].map(OsString::from));
        args.extend(extra.iter().map(OsString::from));
        let output = goldcap_cmd(&args)
            .env("GOLDCAP_TEST_COUNTS", out_dir.with_extension("counts"))
            .output()
            .unwrap();
        Run {
            out: out_dir,
            output,
        }
    }
}

/// A finished goldcap run.
pub struct Run {
    pub out: PathBuf,
    pub output: Output,
}

impl Run {
    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    /// A count the (debug) binary recorded through `GOLDCAP_TEST_COUNTS`,
    /// which runs started by this module point next to the output directory.
    pub fn count(&self, name: &str) -> u64 {
        let path = self.out.with_extension("counts");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (a debug build writes it)", path.display()));
        text.lines()
            .rev()
            .filter_map(|l| l.split_once(' '))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or_else(|| panic!("no count {name} in {text:?}"))
    }
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code(), 0, "goldcap failed:\n{}", self.stderr());
        self
    }
    pub fn artifact(&self) -> PathBuf {
        self.out.join(ARTIFACT)
    }
    /// The one artifact in the output directory, whatever its name.
    pub fn any_artifact(&self) -> PathBuf {
        let found: Vec<String> = self
            .listing()
            .into_iter()
            .filter(|n| n.ends_with(".tgz") || n.ends_with(".tar.zst"))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "artifacts in {}: {found:?}",
            self.out.display()
        );
        self.out.join(&found[0])
    }
    pub fn file(&self, name: &str) -> PathBuf {
        self.out.join(name)
    }
    pub fn manifest_json(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.out.join(MANIFEST_JSON)).unwrap()).unwrap()
    }
    pub fn manifest_text(&self) -> String {
        std::fs::read_to_string(self.out.join(MANIFEST)).unwrap()
    }
    /// Every name in the output directory.
    pub fn listing(&self) -> Vec<String> {
        list_dir(&self.out)
    }
}

pub fn list_dir(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(p) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Runs the goldcap binary with a clean environment.
pub fn goldcap<S: AsRef<OsStr>>(args: &[S]) -> Output {
    goldcap_cmd(args).output().unwrap()
}

pub fn goldcap_cmd<S: AsRef<OsStr>>(args: &[S]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_goldcap"));
    // No HOME (no ~/.aws of the host) and no instance metadata service:
    // S3 tests name their credentials.
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LC_ALL", "C")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args(args);
    c
}

/// Writes dirty data out and drops the clean page cache, so the next reads
/// of files on a disk must wait for it.
pub fn drop_page_cache() {
    sh(Command::new("sh").args(["-c", "sync && echo 1 >/proc/sys/vm/drop_caches"]));
}

/// `len` bytes that do not compress and differ with `seed` (xorshift).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The sample root plus 5 MiB of noise (`srv/noise.bin`, returned) and
/// 3 MiB of text (`srv/text.txt`): an archive of several compressor blocks
/// (≥ 8 gzip members, ≥ 4 zstd frames).
pub fn multi_block_env() -> (Env, Vec<u8>) {
    let env = Env::new();
    // Incompressible, so the archive spans several blocks.
    let data = noise(5 << 20, 0x9E37_79B9_7F4A_7C15);
    std::fs::write(env.root().join("srv/noise.bin"), &data).unwrap();
    let text: String = (0..60_000)
        .map(|i| format!("line {i}: the quick brown fox\n"))
        .collect();
    std::fs::write(env.root().join("srv/text.txt"), text).unwrap();
    (env, data)
}

/// Captures `env` in `format` with `--threads 1` and `--threads 3`: the two
/// artifacts must be the same bytes, and the MANIFEST's size, md5 and
/// sha256 must be those of the file (md5sum, sha256sum).
pub fn assert_bytes_do_not_depend_on_threads(env: &Env, format: &str) {
    let one = env.capture("t1", &["--format", format, "--threads", "1"]);
    one.ok();
    let three = env.capture("t3", &["--format", format, "--threads", "3"]);
    three.ok();
    let (a, b) = (one.any_artifact(), three.any_artifact());
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "{format}: --threads 1 and --threads 3 wrote different bytes"
    );
    let j = one.manifest_json();
    assert_eq!(j["md5"].as_str(), Some(md5sum(&a).as_str()));
    assert_eq!(j["sha256"].as_str(), Some(sha256sum(&a).as_str()));
    assert_eq!(
        j["size"].as_u64(),
        Some(std::fs::metadata(&a).unwrap().len())
    );
}

/// Runs a command, asserting success; returns stdout.
pub fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Extracts with GNU tar using curtin's exact flags, plus `extra`.
pub fn gnu_extract(archive: &Path, dest: &Path, extra: &[&str]) -> Output {
    std::fs::create_dir_all(dest).unwrap();
    Command::new("tar")
        .arg("-C")
        .arg(dest)
        .args(["--xattrs", "--xattrs-include=*"])
        .args(extra)
        .arg("-Sxpf")
        .arg(archive)
        .arg("--numeric-owner")
        .output()
        .unwrap()
}

/// Mount points of this (the host's) mount namespace at or below `dir`.
pub fn mounts_below(dir: &Path) -> Vec<String> {
    let dir = dir.to_str().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|m| m.starts_with(dir))
        .collect()
}

/// Extracts with bsdtar.
pub fn bsd_extract(archive: &Path, dest: &Path) -> Output {
    std::fs::create_dir_all(dest).unwrap();
    Command::new("bsdtar")
        .arg("-C")
        .arg(dest)
        .args(["--xattrs", "--acls", "--numeric-owner", "-xpf"])
        .arg(archive)
        .output()
        .unwrap()
}

/// treesnap.py of a tree: path → metadata.
pub fn snapshot(root: &Path, skip: &[&str]) -> BTreeMap<String, Value> {
    let mut c = Command::new("python3");
    c.arg(project().join("tests/tools/treesnap.py")).arg(root);
    for s in skip {
        c.args(["--skip", s]);
    }
    let v: Value = serde_json::from_str(&sh(&mut c)).unwrap();
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Differences between two snapshots, one line each, ignoring `ignore`
/// (path → field, or path → "*" for the whole entry).
pub fn diff(
    a: &BTreeMap<String, Value>,
    b: &BTreeMap<String, Value>,
    ignore: &[(&str, &str)],
) -> Vec<String> {
    let ignored = |p: &str, f: &str| {
        ignore
            .iter()
            .any(|(ip, iff)| *ip == p && (*iff == "*" || *iff == f))
    };
    let mut out = Vec::new();
    for k in a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))) {
        match (a.get(k), b.get(k)) {
            (Some(_), None) if !ignored(k, "*") => out.push(format!("missing after: {k}")),
            (None, Some(_)) if !ignored(k, "*") => out.push(format!("extra after: {k}")),
            (Some(x), Some(y)) => {
                for (f, xv) in x.as_object().unwrap() {
                    let yv = y.get(f).unwrap_or(&Value::Null);
                    if xv != yv && !ignored(k, f) {
                        out.push(format!("{k}: {f}: {xv} -> {yv}"));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

pub fn md5sum(p: &Path) -> String {
    sh(Command::new("md5sum").arg(p))
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

pub fn sha256sum(p: &Path) -> String {
    sh(Command::new("sha256sum").arg(p))
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// `tar -tf` names, in archive order.
pub fn tar_list(archive: &Path) -> Vec<String> {
    sh(Command::new("tar").arg("-tf").arg(archive))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Unmounts on drop.
pub struct MountGuard(pub PathBuf);

impl MountGuard {
    pub fn mount(args: &[&str], at: &Path) -> MountGuard {
        std::fs::create_dir_all(at).unwrap();
        sh(Command::new("mount").args(args).arg(at));
        MountGuard(at.to_path_buf())
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Asserts an extractor succeeded and the restored tree equals `source`
/// except for `ignore`.
pub fn assert_restored(
    what: &str,
    extract: Output,
    source: &BTreeMap<String, Value>,
    dest: &Path,
    ignore: &[(&str, &str)],
) {
    assert!(
        extract.status.success(),
        "{what} failed (status {:?}): {}",
        extract.status.code(),
        String::from_utf8_lossy(&extract.stderr)
    );
    let d = diff(source, &snapshot(dest, &[]), ignore);
    assert!(d.is_empty(), "differences after {what}:\n{}", d.join("\n"));
}

/// A sample root with the identity state of `flavor` (debian | rhel) added
/// (`fixtures/add-identity-state.sh`).
pub fn identity_env(flavor: &str) -> Env {
    require_root();
    // Outside `cached_root`'s lock, which is not reentrant.
    let sample = sample_root();
    let template = cached_root(&format!("identity-{flavor}"), |dir| {
        copy_root(&sample, dir);
        fixture(
            "add-identity-state.sh",
            &[dir.as_os_str(), OsStr::new(flavor)],
        );
    });
    Env::from_template(&template)
}

/// Content and metadata of every entry (treesnap) plus ctime and inode of
/// each (which any write, chmod, chown or xattr change would move).
pub fn tree_digest(root: &Path) -> (BTreeMap<String, Value>, String) {
    let times = sh(Command::new("find")
        .arg(root)
        .args(["-printf", "%P %C@ %i\n"]));
    (snapshot(root, &[]), times)
}

#[test]
fn the_copied_sample_root_is_the_built_one() {
    let env = Env::new();
    let built = snapshot(&sample_root(), &[]);
    assert!(built.len() > 100, "{} entries", built.len());
    let d = diff(&built, &snapshot(&env.root(), &[]), &[]);
    assert!(d.is_empty(), "cp -a lost:\n{}", d.join("\n"));
}
