//! `.tar.zst` compatibility of the parallel zstd writer: the artifact is a
//! series of independent zstd frames, and every reader Eikon and people use
//! takes it as one stream — `zstd -t`/`-d`, GNU tar `--zstd` from a file
//! and from a pipe, bsdtar, and goldcap's own `verify` — and the bytes do
//! not depend on `--threads`.

use crate::common::*;
use std::path::Path;
use std::process::Command;

/// The number of frames the zstd command line counts in `p` (independent
/// of the library goldcap writes with).
fn zstd_frames(p: &Path) -> usize {
    let out = sh(Command::new("zstd").arg("-lv").arg(p));
    let line = out
        .lines()
        .find(|l| l.contains("Zstandard Frames:"))
        .unwrap_or_else(|| panic!("no frame count in zstd -lv output:\n{out}"));
    line.rsplit(':').next().unwrap().trim().parse().unwrap()
}

#[test]
fn multi_frame_tzst_is_read_by_every_extractor() {
    require_tool("zstd");
    require_tool("bsdtar");
    let (env, data) = multi_block_env();
    let run = env.capture("out", &["--format", "tzst", "--threads", "2"]);
    run.ok();
    let a = run.any_artifact();

    let frames = zstd_frames(&a);
    assert!(frames >= 4, "expected several zstd frames, got {frames}");
    sh(Command::new("zstd").arg("-t").arg(&a));

    // GNU tar reading the file, and from a pipe after zstd -dc.
    let names: Vec<String> = sh(Command::new("tar").arg("--zstd").arg("-tf").arg(&a))
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(names.iter().any(|n| n == "./srv/noise.bin"), "{names:?}");
    let piped = sh(Command::new("sh")
        .arg("-c")
        .arg("zstd -dc < \"$1\" | tar -tf -")
        .arg("sh")
        .arg(&a));
    assert_eq!(piped.lines().collect::<Vec<_>>(), names);
    let dest = env.path("x-gnu");
    let out = gnu_extract(&a, &dest, &["--zstd"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read(dest.join("srv/noise.bin")).unwrap() == data);
    assert_eq!(
        std::fs::read(dest.join("srv/text.txt")).unwrap(),
        std::fs::read(env.root().join("srv/text.txt")).unwrap()
    );

    // bsdtar finds zstd by itself.
    let bsd = sh(Command::new("bsdtar").arg("-tf").arg(&a));
    assert_eq!(bsd.lines().count(), names.len());
    let dest = env.path("x-bsd");
    let out = bsd_extract(&a, &dest);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read(dest.join("srv/noise.bin")).unwrap() == data);

    // goldcap's own reader: verify decompresses every frame and checks the
    // digests (its identity checks do not apply to this sample root).
    let v = goldcap(&["verify".as_ref(), a.as_os_str()]);
    let report = String::from_utf8_lossy(&v.stdout);
    let archive_line = format!("{} entries, read to the end", names.len());
    for check in ["md5", "sha256", "archive"] {
        assert!(
            report
                .lines()
                .any(|l| l.starts_with("ok") && l.split_whitespace().nth(1) == Some(check)),
            "verify did not pass {check}:\n{report}"
        );
    }
    assert!(report.contains(&archive_line), "{report}");
}

#[test]
fn tzst_bytes_do_not_depend_on_threads_and_digests_match() {
    let (env, _) = multi_block_env();
    assert_bytes_do_not_depend_on_threads(&env, "tzst");
}
