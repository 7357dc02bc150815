//! Reading an artifact for `goldcap verify`: decompressed as it streams
//! (gzip, zstd or plain tar), its compressed bytes hashed on the way in,
//! entries walked once.
//!
//! Part of verify; [`Decoder`] is shared with `apply`. Only the few small files the identity checks want are
//! read into memory (their first MiB), and metadata headers up to
//! [`guard::MAX_META`](super::guard::MAX_META); a second pass happens only when one
//! of them is a hard link, to read the entry it links to. Reads only.

use super::Check;
use super::guard::Guard;
use super::identity::{Body, Found, Patterns, machine_id_gap};
use super::pardecode::{Codec, ParDecoder};
use super::shape::Shape;
use crate::output::digest::{Hasher, HashingReader};
use crate::report::escape::escape;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

/// The decompressed tar stream behind a buffered reader.
pub(in crate::cmd) enum Decoder<R: BufRead> {
    /// gzip or zstd that starts as goldcap's own artifacts do: their
    /// independent members decompressed in parallel while that lasts.
    Parallel(Box<super::pardecode::ParDecoder<R>>),
    /// Any other gzip.
    Gzip(Box<flate2::bufread::MultiGzDecoder<R>>),
    Plain(R),
}

impl<R: BufRead> Decoder<R> {
    /// Recognises gzip and zstd by their magic numbers; anything else is
    /// read as plain tar.
    pub(in crate::cmd) fn new(input: R) -> io::Result<Decoder<R>> {
        Self::with_threads(input, None)
    }

    /// As [`Decoder::new`], with this many threads for goldcap's layout
    /// (`None`: all cores, at most [`MAX_THREADS`](super::pardecode::MAX_THREADS)).
    pub(in crate::cmd) fn with_threads(
        mut input: R,
        threads: Option<usize>,
    ) -> io::Result<Decoder<R>> {
        let magic = {
            let b = input.fill_buf()?;
            b[..b.len().min(10)].to_vec()
        };
        Ok(if let Some(codec) = Codec::sniff(&magic) {
            Decoder::Parallel(Box::new(ParDecoder::new(input, codec, threads)))
        } else if magic.starts_with(&[0x1f, 0x8b]) {
            Decoder::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(input)))
        } else {
            Decoder::Plain(input)
        })
    }

    /// The compression found, by the names artifacts carry.
    pub(in crate::cmd) fn format(&self) -> &'static str {
        match self {
            Decoder::Parallel(d) => match d.codec() {
                Codec::Gzip => "gzip",
                Codec::Zstd => "zstd",
            },
            Decoder::Gzip(_) => "gzip",
            Decoder::Plain(_) => "uncompressed",
        }
    }

    /// The size of the members [`Decoder::take_member`] hands on (goldcap's
    /// layout), if it does.
    pub(in crate::cmd) fn member_size(&self) -> Option<usize> {
        match self {
            Decoder::Parallel(d) => Some(d.codec().block()),
            _ => None,
        }
    }

    /// Members decompressed in parallel so far (goldcap's layout only).
    pub(in crate::cmd) fn parallel_members(&self) -> u64 {
        match self {
            Decoder::Parallel(d) => d.parallel_members,
            _ => 0,
        }
    }

    /// The next piece of the stream as a whole member decompressed in
    /// parallel (no copy), or `None`: read on with `read`.
    pub(in crate::cmd) fn take_member(&mut self) -> io::Result<Option<Vec<u8>>> {
        match self {
            Decoder::Parallel(d) => d.take_member(),
            _ => Ok(None),
        }
    }

    /// A buffer the caller is done with, for a later member (only
    /// goldcap's layout keeps it).
    pub(in crate::cmd) fn recycle(&mut self, buf: Vec<u8>) {
        if let Decoder::Parallel(d) = self {
            d.recycle(buf);
        }
    }

    pub(in crate::cmd) fn into_inner(self) -> R {
        match self {
            Decoder::Parallel(d) => d.into_inner(),
            Decoder::Gzip(d) => d.into_inner(),
            Decoder::Plain(r) => r,
        }
    }
}

impl<R: BufRead> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Parallel(d) => d.read(buf),
            Decoder::Gzip(d) => d.read(buf),
            Decoder::Plain(r) => r.read(buf),
        }
    }
}

/// The bytes [`Decoder::new`] looks at to recognise the compression.
const SNIFF: usize = 10;

/// A reader whose first read fills the caller's buffer up to [`SNIFF`]
/// bytes (or the end): a network body may deliver a few bytes first, and
/// the decoder recognises the compression by what its first `fill_buf`
/// holds. Goes beneath the `BufReader` a [`Decoder`] reads.
pub(in crate::cmd) struct SniffFirst<R> {
    inner: R,
    first: bool,
}

impl<R> SniffFirst<R> {
    pub(in crate::cmd) fn new(inner: R) -> SniffFirst<R> {
        SniffFirst { inner, first: true }
    }
}

impl<R: Read> Read for SniffFirst<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !std::mem::take(&mut self.first) {
            return self.inner.read(buf);
        }
        let want = buf.len().min(SNIFF);
        let mut n = 0;
        while n < want {
            match self.inner.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // What came is handed on; the next read meets the error.
                Err(_) if n > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }
}

/// What one read of an artifact gives: the entry count (or why the archive
/// could not be read to its end), the checks of its shape (when it could),
/// its compression and the digests of the whole file.
pub(super) struct ReadBack {
    pub(super) entries: io::Result<u64>,
    pub(super) shape: Vec<Check>,
    pub(super) format: &'static str,
    pub(super) digests: crate::output::digest::Digests,
}

/// The decompressed stream's length and the offset of its last non-zero
/// byte, for the end-of-archive check.
struct Probe<R> {
    inner: R,
    total: u64,
    last_nonzero: Option<u64>,
}

impl<R: Read> Read for Probe<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b != 0) {
            self.last_nonzero = Some(self.total + i as u64);
        }
        self.total += n as u64;
        Ok(n)
    }
}

/// Reads `artifact` once: walks its entries into `found` and `shape` and
/// hashes every byte of the file, including what the decompressor did not
/// need.
pub(super) fn read_artifact(artifact: &Path, found: &mut Found) -> io::Result<ReadBack> {
    let file = File::open(artifact)?;
    let input = BufReader::with_capacity(1 << 20, HashingReader::new(file));
    let decoder = Decoder::new(input)?;
    let format = decoder.format();
    let mut ar = tar::Archive::new(Probe {
        inner: Guard::new(decoder),
        total: 0,
        last_nonzero: None,
    });
    let mut shape = Shape::default();
    let walked = walk(&mut ar, found, &mut shape);
    let mut probe = ar.into_inner();
    // Read to the end of the compressed stream (trailer, padding).
    let entries = walked
        .and_then(|n| io::copy(&mut probe, &mut io::sink()).map(|_| n))
        .and_then(|n| resolve_links(artifact, found).map(|_| n))
        .and_then(|n| resolve_machine_id(artifact, found).map(|_| n));
    let shape = match &entries {
        Ok(_) => shape.checks(probe.total, probe.last_nonzero),
        Err(_) => Vec::new(),
    };
    // The compressed bytes the decompressor took were hashed as they came
    // in (bytes left in the buffer had passed too); hash the rest, if any.
    let mut rest = probe.inner.into_inner().into_inner().into_inner();
    io::copy(&mut rest, &mut io::sink())?;
    let (_, hasher): (File, Hasher) = rest.into_inner();
    Ok(ReadBack {
        entries,
        shape,
        format,
        digests: hasher.finish(),
    })
}

/// An entry's name as extractors use it: the header's (or PAX `path`), or
/// the real name of a PAX sparse entry.
fn entry_name<R: Read>(e: &mut tar::Entry<'_, R>) -> Vec<u8> {
    let mut raw = e.path_bytes().into_owned();
    if let Ok(Some(exts)) = e.pax_extensions() {
        for ext in exts.flatten() {
            if ext.key() == Ok("GNU.sparse.name") {
                raw = ext.value_bytes().to_vec();
            }
        }
    }
    raw
}

/// A name relative to the root (`./` and a trailing `/` removed).
fn rel_of(raw: &[u8]) -> Vec<u8> {
    let rel = raw.strip_prefix(b"./").unwrap_or(raw);
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
fn walk<R: Read>(
    ar: &mut tar::Archive<R>,
    found: &mut Found,
    shape: &mut Shape,
) -> io::Result<u64> {
    let pats = Patterns::new();
    let mut n = 0u64;
    for entry in ar.entries()? {
        let mut e = entry?;
        n += 1;
        let raw = entry_name(&mut e);
        let link = e.link_name_bytes().map(|l| l.into_owned());
        let data_end = e.raw_file_position() + e.size().next_multiple_of(512);
        shape.note(&raw, e.header().entry_type(), link.as_deref(), data_end);
        let rel_bytes = rel_of(&raw);
        let rel = String::from_utf8_lossy(&rel_bytes).into_owned();
        let shown = format!("./{}", escape(&rel_bytes));
        let et = e.header().entry_type();
        if !found.note(&rel, &shown, et, &pats) {
            continue;
        }
        let body = body(&mut e)?;
        found.items.insert(rel, (shown, body));
    }
    Ok(n)
}

/// An entry as the identity checks keep it: a regular file's first MiB, a
/// link's target.
fn body<R: Read>(e: &mut tar::Entry<'_, R>) -> io::Result<Body> {
    let et = e.header().entry_type();
    let link = || {
        e.link_name_bytes()
            .map(|t| t.into_owned())
            .unwrap_or_default()
    };
    Ok(if et.is_hard_link() {
        let target = link();
        Body::Link(String::from_utf8_lossy(&rel_of(&target)).into_owned())
    } else if et.is_symlink() {
        Body::Symlink(link())
    } else if et.is_file() || et.is_contiguous() {
        Body::Regular(read_small(e)?)
    } else {
        Body::Other
    })
}

/// Another pass, only when the first left something out: the entries
/// named, as the identity checks keep them.
fn read_entries(artifact: &Path, names: &BTreeSet<String>) -> io::Result<BTreeMap<String, Body>> {
    let mut out = BTreeMap::new();
    let input = BufReader::with_capacity(1 << 20, File::open(artifact)?);
    let mut ar = tar::Archive::new(Guard::new(Decoder::new(input)?));
    for entry in ar.entries()? {
        let mut e = entry?;
        let rel = String::from_utf8_lossy(&rel_of(&entry_name(&mut e))).into_owned();
        if names.contains(&rel) {
            let body = body(&mut e)?;
            out.insert(rel, body);
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
    let contents = read_entries(artifact, &targets)?;
    for (_, body) in found.items.values_mut() {
        if let Body::Link(t) = body {
            *body = match contents.get(t.as_str()) {
                Some(Body::Regular(c)) => Body::Regular(c.clone()),
                _ => Body::Other,
            };
        }
    }
    Ok(())
}

/// Fetches, a pass each, the entries a linked `/etc/machine-id` leads
/// through that the first pass did not keep (as many as links are
/// followed, at most).
fn resolve_machine_id(artifact: &Path, found: &mut Found) -> io::Result<()> {
    let mut fetched = BTreeSet::new();
    while let Some(rel) = machine_id_gap(found) {
        if !fetched.insert(rel.clone()) || fetched.len() > 40 {
            break;
        }
        let Some((rel, body)) = read_entries(artifact, &BTreeSet::from([rel]))?
            .into_iter()
            .next()
        else {
            break;
        };
        let shown = format!("./{}", escape(rel.as_bytes()));
        found.items.insert(rel, (shown, body));
    }
    Ok(())
}
