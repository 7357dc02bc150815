//! Reading an artifact for `goldcap verify`: decompressed as it streams
//! (gzip, zstd or plain tar), its compressed bytes hashed on the way in,
//! entries walked once.
//!
//! Part of verify. Only the few small files the identity checks want are
//! read into memory (their first MiB); a second pass happens only when one
//! of them is a hard link, to read the entry it links to. Reads only.

use super::identity::{Body, Found, Patterns};
use crate::output::digest::{Hasher, HashingReader};
use crate::report::escape::escape;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

/// The decompressed tar stream behind a buffered reader.
pub(super) enum Decoder<R: BufRead> {
    Gzip(Box<flate2::bufread::MultiGzDecoder<R>>),
    Zstd(zstd::stream::read::Decoder<'static, R>),
    Plain(R),
}

impl<R: BufRead> Decoder<R> {
    /// Recognises gzip and zstd by their magic numbers; anything else is
    /// read as plain tar.
    pub(super) fn new(mut input: R) -> io::Result<Decoder<R>> {
        let magic = input
            .fill_buf()?
            .get(..4)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        Ok(if magic.starts_with(&[0x1f, 0x8b]) {
            Decoder::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(input)))
        } else if magic == [0x28, 0xb5, 0x2f, 0xfd] {
            Decoder::Zstd(zstd::stream::read::Decoder::with_buffer(input)?)
        } else {
            Decoder::Plain(input)
        })
    }

    pub(super) fn into_inner(self) -> R {
        match self {
            Decoder::Gzip(d) => d.into_inner(),
            Decoder::Zstd(d) => d.finish(),
            Decoder::Plain(r) => r,
        }
    }
}

impl<R: BufRead> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Gzip(d) => d.read(buf),
            Decoder::Zstd(d) => d.read(buf),
            Decoder::Plain(r) => r.read(buf),
        }
    }
}

/// What one read of an artifact gives: the entry count (or why the archive
/// could not be read to its end) and the digests of the whole file.
pub(super) struct ReadBack {
    pub(super) entries: io::Result<u64>,
    pub(super) digests: crate::output::digest::Digests,
}

/// Reads `artifact` once: walks its entries into `found` and hashes every
/// byte of the file, including what the decompressor did not need.
pub(super) fn read_artifact(artifact: &Path, found: &mut Found) -> io::Result<ReadBack> {
    let file = File::open(artifact)?;
    let input = BufReader::with_capacity(1 << 20, HashingReader::new(file));
    let mut ar = tar::Archive::new(Decoder::new(input)?);
    let walked = walk(&mut ar, found);
    let mut decoder = ar.into_inner();
    // Read to the end of the compressed stream (trailer, padding).
    let entries = walked
        .and_then(|n| io::copy(&mut decoder, &mut io::sink()).map(|_| n))
        .and_then(|n| resolve_links(artifact, found).map(|_| n));
    // The compressed bytes the decompressor took were hashed as they came
    // in (bytes left in the buffer had passed too); hash the rest, if any.
    let mut rest = decoder.into_inner().into_inner();
    io::copy(&mut rest, &mut io::sink())?;
    let (_, hasher): (File, Hasher) = rest.into_inner();
    Ok(ReadBack {
        entries,
        digests: hasher.finish(),
    })
}

/// An entry's path relative to the root (`./` and a trailing `/` removed;
/// the real name of a PAX sparse entry).
fn entry_rel<R: Read>(e: &mut tar::Entry<'_, R>) -> Vec<u8> {
    let mut raw = e.path_bytes().into_owned();
    if let Ok(Some(exts)) = e.pax_extensions() {
        for ext in exts.flatten() {
            if ext.key() == Ok("GNU.sparse.name") {
                raw = ext.value_bytes().to_vec();
            }
        }
    }
    let rel = raw.strip_prefix(b"./").unwrap_or(&raw);
    rel.strip_suffix(b"/").unwrap_or(rel).to_vec()
}

/// An entry's first MiB.
fn read_small<R: Read>(e: &mut tar::Entry<'_, R>) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    e.take(1 << 20).read_to_end(&mut v)?;
    Ok(v)
}

/// Walks the tar stream, telling `found` about every entry and keeping the
/// content of those it wants; the number of entries.
fn walk<R: Read>(ar: &mut tar::Archive<R>, found: &mut Found) -> io::Result<u64> {
    let pats = Patterns::new();
    let mut n = 0u64;
    for entry in ar.entries()? {
        let mut e = entry?;
        n += 1;
        let rel_bytes = entry_rel(&mut e);
        let rel = String::from_utf8_lossy(&rel_bytes).into_owned();
        let shown = format!("./{}", escape(&rel_bytes));
        let et = e.header().entry_type();
        if !found.note(&rel, &shown, et, &pats) {
            continue;
        }
        let body = if et.is_file() || et.is_contiguous() {
            Body::Regular(read_small(&mut e)?)
        } else if et.is_hard_link() {
            let target = e
                .link_name_bytes()
                .map(|t| t.into_owned())
                .unwrap_or_default();
            let t = target.strip_prefix(b"./").unwrap_or(&target);
            Body::Link(String::from_utf8_lossy(t).into_owned())
        } else if et.is_symlink() {
            Body::Symlink(
                e.link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default(),
            )
        } else {
            Body::Other
        };
        found.items.insert(rel, (shown, body));
    }
    Ok(n)
}

/// Second pass, only when an interesting entry is a hard link: reads the
/// entries it links to.
fn read_targets(
    artifact: &Path,
    targets: &BTreeSet<String>,
) -> io::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let input = BufReader::with_capacity(1 << 20, File::open(artifact)?);
    let mut ar = tar::Archive::new(Decoder::new(input)?);
    for entry in ar.entries()? {
        let mut e = entry?;
        let rel = String::from_utf8_lossy(&entry_rel(&mut e)).into_owned();
        let et = e.header().entry_type();
        if targets.contains(&rel) && (et.is_file() || et.is_contiguous()) {
            out.insert(rel, read_small(&mut e)?);
        }
    }
    Ok(out)
}

/// Replaces hard-link bodies by their targets' content.
fn resolve_links(artifact: &Path, found: &mut Found) -> io::Result<()> {
    let targets: BTreeSet<String> = found
        .items
        .values()
        .filter_map(|(_, b)| match b {
            Body::Link(t) => Some(t.clone()),
            _ => None,
        })
        .collect();
    if targets.is_empty() {
        return Ok(());
    }
    let contents = read_targets(artifact, &targets)?;
    for (_, body) in found.items.values_mut() {
        if let Body::Link(t) = body {
            *body = contents
                .get(t.as_str())
                .map_or(Body::Other, |c| Body::Regular(c.clone()));
        }
    }
    Ok(())
}
