//! md5, sha256 and size of a byte stream, and their hex form.
//!
//! Part of the output stage. The artifact's digests are what DRP
//! image-builder records (md5) and what DRP's files API reports (sha256);
//! goldcap computes both over the compressed bytes as they pass — in the
//! capture's [`super::tee`] (one thread per hash), through a
//! [`HashingReader`] while an upload sends a finished file or `verify`
//! decompresses one — and never reads a file a second time to hash it.
//! This module must never hash anything but the bytes that actually passed.

use super::md5::Md5;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::io::{self, Read};

use crate::report::ui::Ui;

/// md5, sha256 and size of a byte stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Digests {
    pub size: u64,
    /// Lowercase hex md5 (what DRP image-builder records).
    pub md5: String,
    /// Lowercase hex sha256 (what DRP's files API reports).
    pub sha256: String,
}

pub use crate::util::hex;

/// The md5 of `data`, raw (S3 parts: `Content-MD5` and the multipart ETag
/// are built from it).
pub fn md5(data: &[u8]) -> [u8; 16] {
    Md5::digest(data)
}

/// md5 and sha256 of a stream, fed piece by piece, with its size.
#[derive(Clone, Default)]
pub struct Hasher {
    md5: Md5,
    sha256: Sha256,
    size: u64,
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        self.md5.update(data);
        self.sha256.update(data);
        self.size += data.len() as u64;
    }

    /// Bytes hashed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The digests of what was fed so far.
    pub fn digests(&self) -> Digests {
        self.clone().finish()
    }

    pub fn finish(self) -> Digests {
        Digests {
            size: self.size,
            md5: hex(&self.md5.finalize()),
            sha256: hex(&self.sha256.finalize()),
        }
    }
}

/// A reader that hashes what passes through it, and shows it as progress
/// when given a [`Ui`].
pub struct HashingReader<'u, R> {
    inner: R,
    hasher: Hasher,
    progress: Option<&'u Ui>,
}

impl<'u, R: Read> HashingReader<'u, R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::default(),
            progress: None,
        }
    }

    /// Also advances `ui`'s progress bar by every byte read.
    pub fn with_progress(mut self, ui: &'u Ui) -> Self {
        self.progress = Some(ui);
        self
    }

    /// What was read so far.
    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    pub fn into_inner(self) -> (R, Hasher) {
        (self.inner, self.hasher)
    }
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        if let Some(ui) = self.progress {
            ui.add_bytes(n as u64);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_table() {
        assert_eq!(hex(&[]), "");
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }

    #[test]
    fn known_digests_whatever_the_pieces() {
        let mut one = Hasher::default();
        one.update(b"abc");
        let mut three = Hasher::default();
        for b in b"abc" {
            three.update(&[*b]);
        }
        let want = Digests {
            size: 3,
            md5: "900150983cd24fb0d6963f7d28e17f72".into(),
            sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
        };
        assert_eq!(one.digests(), want);
        assert_eq!(three.finish(), want);
        assert_eq!(hex(&md5(b"abc")), want.md5);
    }

    #[test]
    fn reader_hashes_exactly_what_was_read() {
        let mut r = HashingReader::new(&b"abcdef"[..]);
        let mut buf = [0u8; 3];
        r.read_exact(&mut buf).unwrap();
        assert_eq!(r.hasher().size(), 3);
        let (rest, h) = r.into_inner();
        assert_eq!(rest, b"def");
        assert_eq!(h.finish().md5, "900150983cd24fb0d6963f7d28e17f72");
    }
}
