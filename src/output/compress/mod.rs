//! The compressor stage: gzip (`.tgz`) or zstd (`.tar.zst`) over the tar
//! stream, in parallel blocks.
//!
//! Between the tar writer and the hash tee. Both formats cut the stream
//! into fixed blocks compressed by one pool ([`parblock`]), each block a
//! self-contained piece written in input order: a 1 MiB gzip member
//! ([`pgzip`]; libdeflate cannot chain blocks inside one member) or a 2 MiB
//! zstd frame ([`pzstd`]). Either way the bytes depend on the input and
//! the level only, never on the thread count. Every layer is a concrete
//! type with an explicit `finish()` that returns the inner writer and any
//! error — no `Box<dyn Write>`, no auto-finish on drop, so a failed final
//! flush (full disk) is an error, not a silently truncated artifact;
//! dropping a layer without `finish()` stops its threads and never hangs.

pub mod parblock;
pub mod pgzip;
pub mod pzstd;

use pgzip::ParGzEncoder;
use pzstd::ZstdEncoder;
use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::str::FromStr;

/// Compression format of the artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// gzip (`.tgz`): what curtin and DRP image-deploy can stream.
    Tgz,
    /// zstd (`.tar.zst`): for Eikon and local use.
    Tzst,
}

impl Format {
    /// File extension, with the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Tgz => ".tgz",
            Format::Tzst => ".tar.zst",
        }
    }

    /// Default compression level (gzip 6 like `pigz -6`; zstd 3).
    pub fn default_level(self) -> i32 {
        match self {
            Format::Tgz => 6,
            Format::Tzst => 3,
        }
    }

    /// Accepted levels.
    pub fn levels(self) -> std::ops::RangeInclusive<i32> {
        match self {
            Format::Tgz => 1..=9,
            Format::Tzst => 1..=19,
        }
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tgz" | "gz" | "gzip" | "tar.gz" => Ok(Format::Tgz),
            "tzst" | "zst" | "zstd" | "tar.zst" => Ok(Format::Tzst),
            _ => Err(format!("unknown format {s:?} (use tgz or tzst)")),
        }
    }
}

/// Default compression threads: every core, at most this many (memory grows
/// with each zstd worker; more rarely pays on the disks fleets use).
pub const MAX_DEFAULT_THREADS: u32 = 4;

/// gzip or zstd over `W`.
pub enum Compressor<W: Write> {
    /// gzip: parallel 1 MiB members (see [`pgzip`]).
    Gzip(ParGzEncoder<W>),
    /// zstd: parallel frames (see [`pzstd`]).
    Zstd(ZstdEncoder<W>),
}

impl<W: Write> Compressor<W> {
    /// A compressor for `format` at `level` on `threads` workers. Both
    /// always run on the pool (at least one worker) with a fixed block
    /// size, so the output does not depend on the number of cores.
    pub fn new(inner: W, format: Format, level: i32, threads: u32) -> io::Result<Self> {
        Ok(match format {
            Format::Tgz => Compressor::Gzip(crate::output::compress::pgzip::encoder(
                inner, level, threads,
            )?),
            Format::Tzst => Compressor::Zstd(crate::output::compress::pzstd::encoder(
                inner, level, threads,
            )?),
        })
    }

    /// Ends the compressed stream and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Gzip(g) => g.finish(),
            Compressor::Zstd(z) => z.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Gzip(g) => g.write(buf),
            Compressor::Zstd(z) => z.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Gzip(g) => g.flush(),
            Compressor::Zstd(z) => z.flush(),
        }
    }
}

/// `data` compressed whole as goldcap writes it (independent 1 MiB gzip
/// members or 2 MiB zstd frames), for the tests of the readers of that
/// layout.
#[cfg(test)]
pub fn compress_all(data: &[u8], format: Format) -> Vec<u8> {
    let mut c = Compressor::new(Vec::new(), format, 1, 2).unwrap();
    c.write_all(data).unwrap();
    c.finish().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::digest::hex;
    use crate::output::tee::HashTee;
    use md5_reference::Md5;
    use sha2::{Digest, Sha256};
    use std::io::Read;

    struct Full(usize);

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
            }
            let n = buf.len().min(self.0);
            self.0 -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    #[test]
    fn inner_errors_surface_through_the_stack() {
        let mut t = HashTee::new(Full(100));
        assert_eq!(t.write(&[0; 500]).unwrap(), 100, "hashes what was taken");
        let e = t.write_all(&[0; 500]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        drop(t);

        let data: Vec<u8> = (0..5_000_000u32).flat_map(|i| i.to_le_bytes()).collect();
        for format in [Format::Tgz, Format::Tzst] {
            let mut c = Compressor::new(HashTee::new(Full(50_000)), format, 1, 2).unwrap();
            let r = c.write_all(&data).and_then(|()| c.finish().map(drop));
            let e = r.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::StorageFull, "{format:?}: {e}");
        }
    }
    #[test]
    fn gzip_through_the_tee_hashes_the_compressed_bytes() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        let mut c = Compressor::new(HashTee::new(Vec::new()), Format::Tgz, 6, 2).unwrap();
        c.write_all(&data).unwrap();
        let (gz, d) = c.finish().unwrap().finish().unwrap();
        assert_eq!(d.size, gz.len() as u64);
        assert_eq!(d.sha256, hex(&Sha256::digest(&gz)));
        assert_eq!(d.md5, hex(&Md5::digest(&gz)));
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }
    #[test]
    fn compressors_round_trip_and_are_deterministic() {
        // Several blocks of either codec, so the pool has work to reorder.
        let data: Vec<u8> = (0..1_300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for format in [Format::Tgz, Format::Tzst] {
            let run = |threads| {
                let mut c =
                    Compressor::new(Vec::new(), format, format.default_level(), threads).unwrap();
                c.write_all(&data).unwrap();
                c.finish().unwrap()
            };
            let a = run(1);
            assert_eq!(a, run(2), "{format:?} output depends on threads");
            assert_eq!(a, run(4), "{format:?} output depends on threads");
            let mut back = Vec::new();
            match format {
                Format::Tgz => flate2::read::MultiGzDecoder::new(&a[..])
                    .read_to_end(&mut back)
                    .unwrap(),
                Format::Tzst => zstd::stream::read::Decoder::new(&a[..])
                    .unwrap()
                    .read_to_end(&mut back)
                    .unwrap(),
            };
            assert_eq!(back, data);
        }
    }
}
