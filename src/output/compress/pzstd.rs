//! Parallel zstd: the `.tar.zst` codec.
//!
//! One of the two codecs of the compressor stage (after the tar writer,
//! before the hash tee). The tar stream is cut into fixed
//! [`FRAME_SIZE`] blocks; the pool of [`super::parblock`] compresses each
//! into its own complete zstd frame (content size and XXH64 checksum in
//! it), and the frames are written in input order. RFC 8878 defines
//! zstd data as one or more frames: `zstd -d`, GNU tar `--zstd`, bsdtar,
//! libzstd's streaming decoder and the `zstd` crate read them as one
//! stream, and independent frames can be decompressed in parallel. Known
//! readers that stop after the first frame unless told otherwise:
//! python-zstandard's (`read_across_frames=True`).
//!
//! Why frames and not libzstd's own multithreaded mode (one frame cut into
//! jobs that share a window): its scheduling left the workers idle about a
//! fifth of the time on two cores (see [`super::parblock`]); with this pool
//! the machine went from 87 % to 92 % busy on a copy of `/usr`. The price
//! is the window lost at each frame start: 2 MiB frames gave 1.0 % more
//! output than its 2 MiB jobs there (1.80 GB of 5.15 GB), about what
//! `zstd -3 -T0` of Debian 12 (1.5.4, 8 MiB jobs) makes of the same trees
//! (0.998× on `/usr`, 1.007× on a debootstrap root). 4 MiB frames would
//! be 1 % smaller, but the frame buffers decide goldcap's peak RSS: 35 MiB
//! with two workers and 54 MiB with four for 2 MiB frames, 54 and 88 MiB
//! for 4 MiB ones.
//!
//! zstd 1.5.7 (the library `zstd-sys` builds) added a pre-block splitter
//! that, at level 3, cuts 128 KiB blocks where the data changes; each extra
//! block builds its own Huffman and FSE tables. On a debootstrap root it
//! cost 7–9 % of the compression CPU for 0.7 % less output, and the `zstd`
//! command line most operators have (Debian 12's 1.5.4) has no such
//! splitter. The `zstd` crate's encoder cannot reach that parameter
//! (`ZSTD_c_blockSplitterLevel`, experimental), so the contexts are driven
//! through libzstd's C API here, linked from the `zstd-sys` build the
//! `zstd` crate already brings in (the decoder side still uses that crate).
//!
//! Must never: let the output depend on the number of threads or on when
//! `flush` is called (frame size, level and parameters are fixed); lose an
//! error (a libzstd or inner-writer failure is returned by every later
//! `write` and by `finish`); or leak a context (freed on drop).

use crate::output::compress::parblock::{Codec, ParEncoder};
use std::ffi::c_int;
use std::io::{self, Write};
use std::ptr::NonNull;

// libzstd itself, as the `zstd` crate's `zstd-sys` builds and binds it.
use zstd::zstd_safe::zstd_sys::{
    ZSTD_CCtx, ZSTD_CCtx_setParameter, ZSTD_cParameter, ZSTD_compress2, ZSTD_createCCtx,
    ZSTD_freeCCtx, ZSTD_isError,
};

/// Uncompressed bytes per zstd frame (see the module docs for the choice).
/// The output depends on it, never on the thread count.
pub const FRAME_SIZE: usize = 2 << 20;

/// `ZSTD_c_blockSplitterLevel` (`ZSTD_c_experimentalParam20`, zstd ≥ 1.5.7):
/// an experimental parameter, which a library that does not know it
/// refuses with an error, never misreads.
const C_BLOCK_SPLITTER_LEVEL: ZSTD_cParameter = ZSTD_cParameter::ZSTD_c_experimentalParam20;
/// `ZSTD_c_blockSplitterLevel` value "no splitting".
const BLOCK_SPLITTER_OFF: c_int = 1;

/// The error libzstd's return `code` stands for, if it is one.
fn check(code: usize, what: &str) -> io::Result<usize> {
    // SAFETY: ZSTD_isError only inspects the integer.
    if unsafe { ZSTD_isError(code) } == 0 {
        return Ok(code);
    }
    let name = zstd::zstd_safe::get_error_name(code);
    Err(io::Error::other(format!("zstd {what}: {name}")))
}

/// One single-threaded libzstd compression context, freed on drop.
pub struct Cctx(NonNull<ZSTD_CCtx>);

// SAFETY: the context is owned by this value alone, and libzstd contexts
// may be used from any thread, one at a time (`&mut self` guarantees that).
unsafe impl Send for Cctx {}

impl Cctx {
    fn set(&mut self, param: ZSTD_cParameter, value: c_int, what: &str) -> io::Result<()> {
        // SAFETY: the context is valid until drop; libzstd checks the
        // parameter number and the value's bounds itself.
        let r = unsafe { ZSTD_CCtx_setParameter(self.0.as_ptr(), param, value) };
        check(r, what).map(drop)
    }
}

impl Drop for Cctx {
    fn drop(&mut self) {
        // SAFETY: created by ZSTD_createCCtx and freed once, here.
        unsafe {
            ZSTD_freeCCtx(self.0.as_ptr());
        }
    }
}

/// zstd frames at one level: the codec of [`ZstdEncoder`].
pub struct Zstd {
    level: i32,
}

impl Codec for Zstd {
    type State = Cctx;
    const NAME: &'static str = "zstd";
    const BLOCK_SIZE: usize = FRAME_SIZE;

    /// A context at the level, with an XXH64 content checksum and the
    /// pre-block splitter off.
    fn state(&self) -> io::Result<Cctx> {
        // SAFETY: plain constructor; NULL (allocation failure) is handled.
        let raw = NonNull::new(unsafe { ZSTD_createCCtx() })
            .ok_or_else(|| io::Error::other("zstd: cannot allocate a compression context"))?;
        let mut c = Cctx(raw);
        c.set(
            ZSTD_cParameter::ZSTD_c_compressionLevel,
            self.level,
            "level",
        )?;
        c.set(ZSTD_cParameter::ZSTD_c_checksumFlag, 1, "checksum")?;
        // A libzstd older than 1.5.7 has no pre-block splitter to turn off
        // and refuses the parameter: nothing to do then.
        let _ = c.set(C_BLOCK_SPLITTER_LEVEL, BLOCK_SPLITTER_OFF, "block splitter");
        Ok(c)
    }

    fn compress(&self, c: &mut Cctx, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        out.clear();
        let bound = zstd::zstd_safe::compress_bound(input.len());
        out.reserve(bound);
        // SAFETY: `out` has room for `bound` bytes (what libzstd may write,
        // never more); `input` is alive for the call; the context is valid
        // and used by this thread only. Only the `n` bytes libzstd reports
        // written become the vector's content.
        unsafe {
            let r = ZSTD_compress2(
                c.0.as_ptr(),
                out.as_mut_ptr().cast(),
                bound,
                input.as_ptr().cast(),
                input.len(),
            );
            let n = check(r, "compression")?;
            out.set_len(n.min(bound));
        }
        Ok(())
    }
}

/// A zstd encoder that compresses [`FRAME_SIZE`] blocks on worker threads
/// and writes one frame per block, in order.
pub type ZstdEncoder<W> = ParEncoder<W, Zstd>;

/// A [`ZstdEncoder`] at `level` (1–19; libzstd clamps others) with
/// `threads` workers (at least one).
pub fn encoder<W: Write>(inner: W, level: i32, threads: u32) -> io::Result<ZstdEncoder<W>> {
    ParEncoder::new(inner, Zstd { level }, threads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// 10 MiB that a block splitter would cut: 40 KiB stretches of text
    /// and of pseudo-random bytes in turn, so most 128 KiB blocks hold
    /// regions with different statistics.
    fn mixed() -> Vec<u8> {
        let mut x: u32 = 0x2545_f491;
        let mut v = Vec::with_capacity(10 << 20);
        let text = b"the quick brown fox jumps over the lazy dog; ";
        let mut region = 0;
        while v.len() < 10 << 20 {
            for j in 0..(40 << 10) {
                if region % 2 == 0 {
                    v.push(text[(j + region) % text.len()]);
                } else {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    v.push((x % 16) as u8);
                }
            }
            region += 1;
        }
        v.truncate(10 << 20);
        v
    }

    fn compress(data: &[u8], threads: u32) -> Vec<u8> {
        let mut e = encoder(Vec::new(), 3, threads).unwrap();
        for piece in data.chunks(300_001) {
            e.write_all(piece).unwrap();
            e.flush().unwrap();
        }
        e.finish().unwrap()
    }

    fn decompress(z: &[u8]) -> Vec<u8> {
        let mut back = Vec::new();
        zstd::stream::read::Decoder::new(z)
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        back
    }

    /// One frame of a zstd stream, as RFC 8878 §3.1.1 lays it out.
    #[derive(Debug, PartialEq)]
    struct Frame {
        /// Frame_Content_Size.
        content_size: Option<u64>,
        /// Non-empty blocks.
        blocks: usize,
        checksum: bool,
    }

    /// The frames of `z`, which must hold nothing else.
    fn frames(mut z: &[u8]) -> Vec<Frame> {
        let mut out = Vec::new();
        while !z.is_empty() {
            assert_eq!(&z[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd magic");
            let fhd = z[4];
            let single_segment = fhd & 0x20 != 0;
            let fcs_len = match fhd >> 6 {
                0 => usize::from(single_segment),
                1 => 2,
                2 => 4,
                _ => 8,
            };
            let did = [0, 1, 2, 4][usize::from(fhd & 3)];
            let mut p = 5 + usize::from(!single_segment) + did;
            let content_size = (fcs_len > 0).then(|| {
                let mut v = 0u64;
                for (i, b) in z[p..p + fcs_len].iter().enumerate() {
                    v |= u64::from(*b) << (8 * i);
                }
                if fcs_len == 2 { v + 256 } else { v }
            });
            p += fcs_len;
            let mut blocks = 0;
            loop {
                let h = u32::from(z[p]) | u32::from(z[p + 1]) << 8 | u32::from(z[p + 2]) << 16;
                let size = (h >> 3) as usize;
                p += 3 + if (h >> 1) & 3 == 1 { 1 } else { size };
                blocks += usize::from(size > 0);
                if h & 1 == 1 {
                    break;
                }
            }
            let checksum = fhd & 4 != 0;
            p += if checksum { 4 } else { 0 };
            out.push(Frame {
                content_size,
                blocks,
                checksum,
            });
            z = &z[p..];
        }
        out
    }

    #[test]
    fn round_trips_and_does_not_depend_on_threads_or_flushes() {
        let data = mixed();
        let a = compress(&data, 1);
        assert_eq!(a, compress(&data, 2), "output depends on threads");
        assert_eq!(a, compress(&data, 3), "output depends on threads");
        let mut unflushed = encoder(Vec::new(), 3, 2).unwrap();
        unflushed.write_all(&data).unwrap();
        assert_eq!(a, unflushed.finish().unwrap(), "output depends on flushes");
        assert_eq!(decompress(&a), data);
        assert!(a.len() < data.len() / 2, "compressed: {}", a.len());
    }

    #[test]
    fn one_frame_per_block_with_size_and_checksum() {
        for len in [0, 1, FRAME_SIZE - 1, FRAME_SIZE, FRAME_SIZE + 1, 10 << 20] {
            let data = &mixed()[..len];
            let z = compress(data, 2);
            assert_eq!(decompress(&z), data, "length {len}");
            let f = frames(&z);
            assert_eq!(f.len(), len.div_ceil(FRAME_SIZE).max(1), "length {len}");
            for (i, frame) in f.iter().enumerate() {
                let want = (len - i * FRAME_SIZE).min(FRAME_SIZE) as u64;
                assert_eq!(frame.content_size, Some(want), "length {len}, frame {i}");
                assert!(frame.checksum, "length {len}, frame {i}");
            }
        }
    }

    #[test]
    fn blocks_are_not_split() {
        // Without the pre-block splitter every block but the last of each
        // frame holds 128 KiB: 10 MiB is 80 blocks. zstd 1.5.7's default
        // splitter cuts this data into 222.
        let z = compress(&mixed(), 2);
        assert_eq!(frames(&z).iter().map(|f| f.blocks).sum::<usize>(), 80);
    }

    #[test]
    fn an_inner_write_error_is_returned_and_stays() {
        #[derive(Debug)]
        struct Full(usize);
        impl Write for Full {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::ErrorKind::StorageFull.into());
                }
                let n = b.len().min(self.0);
                self.0 -= n;
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let data = mixed();
        let mut e = encoder(Full(10_000), 3, 2).unwrap();
        let first = data
            .chunks(1 << 20)
            .try_for_each(|c| e.write_all(c))
            .unwrap_err();
        assert_eq!(first.kind(), io::ErrorKind::StorageFull);
        let again = e.write(b"more").unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::StorageFull);
        assert_eq!(e.flush().unwrap_err().kind(), io::ErrorKind::StorageFull);
        assert_eq!(e.finish().unwrap_err().kind(), io::ErrorKind::StorageFull);
    }
}
