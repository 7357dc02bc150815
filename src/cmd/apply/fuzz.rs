//! The fuzz target `apply` and `verify` share: seeded hostile archives —
//! names with `..` or a `/` in front, files below symlinks that lead out,
//! hard links out, a PAX xattr and mtime, a PAX 1.0 sparse file, a GNU
//! long name, a machine-id and a hard link to it, a body sized by PAX
//! alone, a contiguous file, a hard link with a body — mutated as plain tar,
//! before and after gzip or zstd compression, and in goldcap's own layout
//! (several 1 MiB gzip members or 2 MiB zstd frames, the parallel
//! decoder's input) with their compressed bytes mutated; and random bytes.
//! Each input goes through both readers whole: `verify`'s read of an
//! artifact, and `apply`'s two-thread stream (the decoder, the tar guard,
//! the extractor) into a target next to a sentinel directory. Neither may
//! panic or hang, and nothing beside the target may change.
//!
//! Rounds: [`ROUNDS`], or `GOLDCAP_FUZZ_ROUNDS` for a longer campaign
//! (`GOLDCAP_FUZZ_SEED` for another sequence). Tests only; small inputs.

use super::beneath::Target;
use super::extract::Extractor;
use super::{Artifact, Source, stream};
use crate::output::compress::{Format, compress_all as goldcap};
use crate::report::ui::Ui;
use crate::testkit::{Rng, mutate};
use std::io::Write as _;
use std::path::Path;

/// Rounds in every test run.
const ROUNDS: usize = 400;

/// A ustar header with raw `name` and `link` bytes, then `data`.
fn member(out: &mut Vec<u8>, et: u8, name: &[u8], link: &[u8], data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::new(et));
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    h.set_mode(0o4755);
    h.set_size(data.len() as u64);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512), 0);
}

/// A header of `kind` (`x` PAX, `L` GNU long name) carrying `body`.
fn meta(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    let name: &[u8] = if kind == b'L' {
        b"././@LongLink"
    } else {
        b"./PaxHeaders/x"
    };
    member(out, kind, name, b"", body);
}

fn pax(out: &mut Vec<u8>, records: &[(&str, &[u8])]) {
    let body = crate::archive::header::encode_pax(
        &records
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
            .collect::<Vec<_>>(),
    );
    meta(out, b'x', &body);
}

/// The body of the seed's file sized by its PAX header alone.
const PAX_SIZED: [u8; 700] = {
    let mut b = [b'p'; 700];
    b[699] = b'!';
    b
};

/// The seed's filler file, `len` bytes.
fn fill(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

/// The seed: every entry kind the readers treat with care; `sentinel` is
/// the absolute path of the directory beside the target; `filler` bytes of
/// a regular file make it span several blocks when it is large.
fn seed(sentinel: &[u8], filler: usize) -> Vec<u8> {
    let mut a = Vec::new();
    member(&mut a, b'5', b"./curtin/", b"", b"");
    member(&mut a, b'5', b"./d/", b"", b"");
    pax(&mut a, &[("SCHILY.xattr.user.a", b"v"), ("mtime", b"1.5")]);
    member(&mut a, b'0', b"./d/f", b"", b"data");
    member(
        &mut a,
        b'0',
        b"./etc/machine-id",
        b"",
        b"0123456789abcdef0123456789abcdef\n",
    );
    member(&mut a, b'1', b"./etc/id2", b"./etc/machine-id", b"");
    meta(
        &mut a,
        b'L',
        format!("./srv/{}\0", "long".repeat(40)).as_bytes(),
    );
    member(&mut a, b'0', b"./srv/long", b"", b"x");
    member(&mut a, b'2', b"./s", sentinel, b"");
    member(&mut a, b'0', b"./s/x", b"", b"out");
    member(&mut a, b'2', b"./r", b"../sentinel", b"");
    member(&mut a, b'5', b"./r/sub/", b"", b"");
    member(&mut a, b'1', b"./h", b"./d/f", b"");
    member(&mut a, b'1', b"./h2", b"../sentinel/keep", b"");
    member(&mut a, b'0', b"../up", b"", b"up");
    pax(
        &mut a,
        &[
            ("GNU.sparse.major", b"1"),
            ("GNU.sparse.minor", b"0"),
            ("GNU.sparse.name", b"./d/sparse"),
            ("GNU.sparse.realsize", b"100000"),
        ],
    );
    let mut body = b"1\n4096\n3\n".to_vec();
    body.resize(512, 0);
    body.extend_from_slice(b"abc");
    member(&mut a, b'0', b"./d/GNUSparseFile.0/sparse", b"", &body);
    member(&mut a, b'6', b"./d/fifo", b"", b"");
    // A body whose size only the PAX header gives (the ustar one says 0),
    // a contiguous file, a hard link that carries a body.
    pax(&mut a, &[("size", b"700")]);
    member(&mut a, b'0', b"./d/paxsize", b"", b"");
    a.extend(PAX_SIZED);
    a.resize(a.len().next_multiple_of(512), 0);
    member(&mut a, b'7', b"./d/c7", b"", b"seven");
    member(&mut a, b'1', b"./h3", b"./d/f", b"skipped");
    if filler > 0 {
        member(&mut a, b'0', b"./srv/fill", b"", &fill(filler));
    }
    a.extend_from_slice(&[0; 1024]);
    a
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// The names in `dir`, in order.
fn names(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// What is in `dir`: names and contents, in order.
fn listing(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let c = std::fs::read(&p).unwrap_or_default();
            (p, c)
        })
        .collect();
    v.sort();
    v
}

/// `apply`'s read of `path` into `target`: the stream as `run` drives it,
/// then the directories' and the root's metadata. What it refused, and
/// whether the archive read to its end without an error.
fn apply_file(path: &Path, target: &Path, threads: usize) -> (u64, bool) {
    let src = Source {
        artifact: Artifact::File(path.to_owned()),
        shown: path.display().to_string(),
        manifest: None,
    };
    let ui = Ui::new(-1, false);
    let mut ex = Extractor::new(Target::open(target).unwrap());
    let input = Box::new(std::fs::File::open(path).unwrap());
    let read = stream(input, &src, Some(threads), &mut ex, &ui);
    ex.finish_dirs();
    let _ = ex.finish_root(|_| Ok(()));
    (ex.applied.refused.count, matches!(read, Ok((_, _, Ok(())))))
}

#[test]
fn hostile_archives_never_panic_nor_write_beside_the_target() {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let rounds = env("GOLDCAP_FUZZ_ROUNDS").map_or(ROUNDS, |n| n as usize);
    let mut rng = Rng(env("GOLDCAP_FUZZ_SEED").unwrap_or(0x2545_f491_4f6c_dd1d) | 1);
    let t = tempfile::tempdir().unwrap();
    let sentinel = t.path().join("sentinel");
    std::fs::create_dir(&sentinel).unwrap();
    std::fs::write(sentinel.join("keep"), "keep").unwrap();
    let before = listing(&sentinel);
    let s = sentinel.as_os_str().as_encoded_bytes().to_vec();
    let tar = seed(&s, 0);
    // Several members / frames: 5 MiB of tar.
    let big = seed(&s, 5 << 20);
    let layouts = [goldcap(&big, Format::Tgz), goldcap(&big, Format::Tzst)];
    let pieces: &[&[u8]] = &[
        b"../",
        b"/",
        b"\0",
        b"./s/",
        &s,
        b"..",
        b"1",
        b"./etc/machine-id",
    ];
    // Member and frame starts, for splitting and splicing members.
    let headers: &[&[u8]] = &[b"\x28\xb5\x2f\xfd", b"\x1f\x8b\x08\0\0\0\0\0\0\x03"];
    let path = t.path().join("artifact");
    let target = t.path().join("target");
    for round in 0..rounds {
        // The input, and whether it is the seed itself (plain, or in
        // goldcap's layout whole).
        let (bytes, pristine) = match round % 8 {
            0 if round == 0 => (tar.clone(), true),
            0 | 1 => (mutate(&mut rng, &tar, pieces), false),
            2 => (gzip(&mutate(&mut rng, &tar, pieces)), false),
            3 => (mutate(&mut rng, &gzip(&tar), &[]), false),
            4 => (
                zstd::encode_all(&*mutate(&mut rng, &tar, pieces), 1).unwrap(),
                false,
            ),
            // goldcap's layout, whole or with its compressed bytes
            // changed: the parallel decoder's input.
            5 | 6 if round < 16 => (layouts[round % 2].clone(), true),
            5 | 6 => (mutate(&mut rng, &layouts[round % 2], headers), false),
            _ => (
                (0..rng.below(4096)).map(|_| rng.next() as u8).collect(),
                false,
            ),
        };
        std::fs::write(&path, &bytes).unwrap();
        let _ = crate::cmd::verify::verify(&path, None);
        let _ = std::fs::remove_dir_all(&target);
        std::fs::create_dir(&target).unwrap();
        let (refused, read) = apply_file(&path, &target, 1 + round % 3);
        if pristine {
            // The four escapes refused, the rest written as it was.
            assert!(read, "round {round}: the archive read failed");
            assert_eq!(refused, 4, "round {round}");
            let file = |name: &str| std::fs::read(target.join(name)).unwrap();
            assert_eq!(file("h"), b"data");
            assert_eq!(file("h3"), b"data");
            assert_eq!(file("d/c7"), b"seven");
            assert_eq!(file("d/paxsize"), PAX_SIZED);
            let sparse = file("d/sparse");
            assert_eq!((sparse.len(), &sparse[4096..4099]), (100_000, &b"abc"[..]));
            if round % 8 != 0 {
                // goldcap's layout: the file that spans members.
                assert!(file("srv/fill") == fill(5 << 20), "round {round}: srv/fill");
            }
        }
        let beside = names(t.path());
        assert_eq!(
            beside,
            [path.clone(), sentinel.clone(), target.clone()],
            "round {round}"
        );
        assert_eq!(listing(&sentinel), before, "round {round}");
    }
}
