//! Parallel gzip: the `.tgz` codec.
//!
//! One of the two codecs of the compressor stage (after the tar writer,
//! before the hash tee). The tar stream is cut into fixed
//! [`BLOCK_SIZE`] blocks; the pool of [`super::parblock`] compresses each
//! block with libdeflate into its own complete gzip member (RFC 1952 allows
//! a file to be a series of members; GNU gzip, GNU tar `-z`, bsdtar, zlib's
//! `gzread` and Python's `gzip`/`tarfile.open(p)` read them all), written
//! in input order. This module is the codec: levels and member layout.
//!
//! Why members and not one deflate stream: libdeflate (2–3× zlib's speed at
//! a better ratio) only compresses whole buffers and always ends with a
//! final block, so blocks cannot be chained inside one member. The cost is
//! the 32 KiB window lost at each 1 MiB boundary (a few tenths of a percent
//! of output) and 18 bytes of header and trailer per member. Known reader
//! that stops after the first member: Python's *streaming*
//! `tarfile.open(p, "r|gz")` — with "unexpected end of data" when the
//! member ends inside file data, but silently, as if the archive ended,
//! when it ends inside a tar header (`tests/gzip_compat.rs` pins it).
//!
//! Must never: let the output depend on the number of threads (block size
//! and level are constants, the header has MTIME 0 and a fixed OS byte;
//! the pool keeps the order and bounds memory); or write a member that is
//! not a complete gzip file on its own.

use crate::output::compress::parblock::{Codec, ParEncoder};
use std::io::{self, Write};

/// Uncompressed bytes per gzip member. A constant: the output depends on
/// it, never on the thread count. Measured on a 450 MB root at level 6,
/// 1 MiB blocks give 0.14 % more output than 4 MiB ones (512 KiB: 0.33 %,
/// 256 KiB: 0.7 %) at the same speed and a quarter of the memory.
pub const BLOCK_SIZE: usize = 1 << 20;

/// OS byte of every member header: 3 (Unix), what gzip and pigz write on
/// Linux (libdeflate writes 255, "unknown").
const GZIP_OS_UNIX: u8 = 3;

/// The libdeflate level (1–12) used for a gzip level (1–9): the same number.
/// With 1 MiB members libdeflate's 6 is already smaller than `gzip -9` and
/// about 3× faster than `pigz -6`; 5 would be 20 % faster but 0.7 % bigger
/// than 6, 7–9 cost 1.4–2.6× the time for 0.4–0.8 %; 10–12 (near-optimal
/// parsing) are not offered.
pub fn libdeflate_level(gzip_level: i32) -> i32 {
    gzip_level.clamp(1, 9)
}

/// gzip members by libdeflate at one level: the codec of [`ParGzEncoder`].
pub struct Gzip {
    level: libdeflater::CompressionLvl,
}

impl Gzip {
    /// The codec for gzip `level` (1–9).
    pub fn new(level: i32) -> io::Result<Gzip> {
        let level = libdeflater::CompressionLvl::new(libdeflate_level(level))
            .map_err(|e| io::Error::other(format!("gzip level {level}: {e:?}")))?;
        Ok(Gzip { level })
    }
}

impl Codec for Gzip {
    type State = libdeflater::Compressor;
    const NAME: &'static str = "gzip";
    const BLOCK_SIZE: usize = BLOCK_SIZE;

    fn state(&self) -> io::Result<libdeflater::Compressor> {
        Ok(libdeflater::Compressor::new(self.level))
    }

    fn compress(
        &self,
        c: &mut libdeflater::Compressor,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        gzip_member(c, input, out)
    }
}

/// A gzip encoder that compresses [`BLOCK_SIZE`] blocks on worker threads
/// and writes one gzip member per block, in order.
pub type ParGzEncoder<W> = ParEncoder<W, Gzip>;

/// A [`ParGzEncoder`] at gzip `level` (1–9) with `threads` workers (at
/// least 1).
pub fn encoder<W: Write>(inner: W, level: i32, threads: u32) -> io::Result<ParGzEncoder<W>> {
    ParEncoder::new(inner, Gzip::new(level)?, threads)
}

/// One complete gzip member holding `input`, built in `out`'s allocation.
fn gzip_member(c: &mut libdeflater::Compressor, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    out.clear();
    out.resize(c.gzip_compress_bound(input.len()), 0);
    let n = c
        .gzip_compress(input, out)
        .map_err(|e| io::Error::other(format!("gzip compression failed: {e:?}")))?;
    out.truncate(n);
    // Header: 1f 8b 08 FLG MTIME(4) XFL OS. FLG is 0 (no header CRC), so
    // the OS byte can be set after the fact.
    if out.len() < 10 || out[..4] != [0x1f, 0x8b, 8, 0] {
        return Err(io::Error::other(
            "libdeflate wrote an unexpected gzip header",
        ));
    }
    out[9] = GZIP_OS_UNIX;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Compressible but not trivially so: a repeating pattern with noise.
    fn sample(len: usize) -> Vec<u8> {
        let mut x: u32 = 0x1234_5678;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                if i % 7 == 0 {
                    x as u8
                } else {
                    b"goldcap "[i % 8]
                }
            })
            .collect()
    }

    fn compress(data: &[u8], threads: u32, level: i32) -> Vec<u8> {
        let mut e = encoder(Vec::new(), level, threads).unwrap();
        // Uneven write sizes, like a tar writer's.
        for chunk in data.chunks(70_001) {
            e.write_all(chunk).unwrap();
        }
        e.finish().unwrap()
    }

    fn decompress(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(gz)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    /// Number of gzip members, walking the trailers' ISIZE fields.
    fn members(gz: &[u8]) -> usize {
        let mut n = 0;
        let mut d = flate2::bufread::GzDecoder::new(gz);
        loop {
            let mut sink = Vec::new();
            d.read_to_end(&mut sink).unwrap();
            n += 1;
            let rest = d.into_inner();
            if rest.is_empty() {
                return n;
            }
            d = flate2::bufread::GzDecoder::new(rest);
        }
    }

    #[test]
    fn round_trips_at_block_edges() {
        for len in [
            0,
            1,
            BLOCK_SIZE - 1,
            BLOCK_SIZE,
            BLOCK_SIZE + 1,
            3 * BLOCK_SIZE + 12_345,
        ] {
            let data = sample(len);
            let gz = compress(&data, 2, 6);
            assert_eq!(decompress(&gz), data, "length {len}");
            assert_eq!(
                members(&gz),
                len.div_ceil(BLOCK_SIZE).max(1),
                "length {len}"
            );
            assert_eq!(&gz[..4], &[0x1f, 0x8b, 8, 0]);
            assert_eq!(&gz[4..8], &[0, 0, 0, 0], "MTIME 0");
            assert_eq!(gz[9], GZIP_OS_UNIX);
        }
    }

    #[test]
    fn output_does_not_depend_on_threads() {
        let data = sample(4 * BLOCK_SIZE + 999);
        for level in [1, 6] {
            let one = compress(&data, 1, level);
            assert_eq!(one, compress(&data, 2, level), "level {level}");
            assert_eq!(one, compress(&data, 4, level), "level {level}");
        }
    }

    #[test]
    fn flush_does_not_change_the_output() {
        let data = sample(2 * BLOCK_SIZE + 7);
        let mut e = encoder(Vec::new(), 6, 2).unwrap();
        for chunk in data.chunks(300_000) {
            e.write_all(chunk).unwrap();
            e.flush().unwrap();
        }
        assert_eq!(e.finish().unwrap(), compress(&data, 3, 6));
    }

    /// Accepts `ok` bytes, then fails every write (or only the flush).
    #[derive(Debug)]
    struct Failing {
        ok: usize,
        written: usize,
        fail_flush: bool,
    }

    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.written >= self.ok {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
            }
            let n = buf.len().min(self.ok - self.written);
            self.written += n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            if self.fail_flush {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "flush failed"));
            }
            Ok(())
        }
    }

    #[test]
    fn inner_errors_surface_from_write_and_finish() {
        let data = sample(12 * BLOCK_SIZE);
        // Fails during the writes: write_all returns it, and finish again.
        let inner = Failing {
            ok: 1000,
            written: 0,
            fail_flush: false,
        };
        let mut e = encoder(inner, 6, 2).unwrap();
        let err = e.write_all(&data).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{err}");
        let err = e.write_all(b"more").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        let err = e.finish().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);

        // Fails on the first write, which only finish does here.
        let inner = Failing {
            ok: 0,
            written: 0,
            fail_flush: false,
        };
        let mut e = encoder(inner, 6, 2).unwrap();
        e.write_all(&data[..1000]).unwrap();
        let err = e.finish().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{err}");

        // Fails only at the final flush: finish returns it.
        let inner = Failing {
            ok: usize::MAX,
            written: 0,
            fail_flush: true,
        };
        let mut e = encoder(inner, 6, 2).unwrap();
        e.write_all(&data[..1000]).unwrap();
        let err = e.finish().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{err}");
    }

    #[test]
    fn drop_without_finish_stops_the_pool() {
        let data = sample(6 * BLOCK_SIZE + 5);
        for threads in [1, 4] {
            let mut e = encoder(Vec::new(), 1, threads).unwrap();
            e.write_all(&data).unwrap();
            drop(e);
        }
        // And a failed one.
        let mut e = encoder(
            Failing {
                ok: 0,
                written: 0,
                fail_flush: false,
            },
            6,
            2,
        )
        .unwrap();
        assert!(e.write_all(&data).is_err());
        drop(e);
    }

    #[test]
    fn every_gzip_level_maps_to_libdeflate() {
        for level in 1..=9 {
            assert!(libdeflater::CompressionLvl::new(libdeflate_level(level)).is_ok());
        }
        assert_eq!(libdeflate_level(0), 1);
        assert_eq!(libdeflate_level(12), 9);
    }
}
