//! Multithreaded zstd: the `.tar.zst` compressor stage of the sink.
//!
//! Sits between the tar writer and the hash tee (walk → policy → tar writer
//! → **compressor** → hash tee → file). libzstd's own worker pool compresses
//! fixed [`JOB_SIZE`] jobs; the calling thread hands it the tar stream and
//! writes the compressed bytes, in order, to the inner writer.
//!
//! Why not the `zstd` crate's encoder: one parameter this stage needs is not
//! reachable through it. zstd 1.5.7 (the library `zstd-sys` builds) added a
//! pre-block splitter that, at level 3, cuts 128 KiB blocks where the data
//! changes; each extra block builds its own Huffman and FSE tables. On a
//! debootstrap root it cost 7–9 % of the compression CPU for 0.7 % less
//! output, and the `zstd` command line most operators have (Debian 12's
//! 1.5.4) has no such splitter. The parameter (`ZSTD_c_blockSplitterLevel`,
//! experimental) is set here through libzstd's C API; the functions are the
//! stable streaming ones, linked from the `zstd-sys` build the `zstd` crate
//! already brings in (the decoder side still uses that crate).
//!
//! Must never: let the output depend on the number of threads or on when
//! `flush` is called (job size, level and parameters are fixed; `flush`
//! does not end a job); hold more than libzstd's bounded job buffers; lose
//! an error (a libzstd or inner-writer failure is returned by every later
//! `write` and by `finish`); or leak the context (freed on drop).

use std::ffi::{CStr, c_char, c_int, c_void};
use std::io::{self, Write};
use std::ptr::NonNull;

// The library is linked through the `zstd` crate's `zstd-sys`; naming it
// here keeps it linked even if nothing else in the binary used it.
use zstd::zstd_safe::zstd_sys as _;

/// zstd's multithreaded job size. Memory is a few jobs per worker, and it is
/// the job buffers that decide goldcap's peak RSS: the default (4 × the
/// window) used 115 MB with two workers; 4 MiB peaked at 51 MiB on a
/// debootstrap root but 67–70 MiB on a copy of `/usr` (more jobs queue
/// behind large files); 2 MiB peaks at 35 MiB and 41 MiB there (49 MiB with
/// four workers), for 0.4–0.7 % more output than 4 MiB — still 1–2 %
/// smaller than `zstd -3 -T0` — and no loss of speed. Output depends on the
/// job size, not on the number of workers, so it is fixed.
pub const JOB_SIZE: u32 = 2 << 20;

/// Output buffer handed to libzstd per call (its `ZSTD_CStreamOutSize` is
/// one block plus framing; larger means fewer, larger writes to the tee).
const OUT_BUF: usize = 256 << 10;

// Parameter numbers from zstd.h (`ZSTD_cParameter`). They are part of the
// library's ABI: the stable ones never change, and an experimental one that
// a library does not know is refused with an error, never misread.
const C_COMPRESSION_LEVEL: c_int = 100;
const C_CHECKSUM_FLAG: c_int = 201;
const C_NB_WORKERS: c_int = 400;
const C_JOB_SIZE: c_int = 401;
/// `ZSTD_c_blockSplitterLevel` (`ZSTD_c_experimentalParam20`, zstd ≥ 1.5.7).
const C_BLOCK_SPLITTER_LEVEL: c_int = 1017;
/// `ZSTD_c_blockSplitterLevel` value "no splitting".
const BLOCK_SPLITTER_OFF: c_int = 1;

// ZSTD_EndDirective.
const E_CONTINUE: c_int = 0;
const E_END: c_int = 2;

#[repr(C)]
struct InBuffer {
    src: *const c_void,
    size: usize,
    pos: usize,
}

#[repr(C)]
struct OutBuffer {
    dst: *mut c_void,
    size: usize,
    pos: usize,
}

#[repr(C)]
struct Cctx {
    _opaque: [u8; 0],
}

unsafe extern "C" {
    fn ZSTD_createCCtx() -> *mut Cctx;
    fn ZSTD_freeCCtx(cctx: *mut Cctx) -> usize;
    fn ZSTD_CCtx_setParameter(cctx: *mut Cctx, param: c_int, value: c_int) -> usize;
    fn ZSTD_compressStream2(
        cctx: *mut Cctx,
        output: *mut OutBuffer,
        input: *mut InBuffer,
        end: c_int,
    ) -> usize;
    fn ZSTD_isError(code: usize) -> u32;
    fn ZSTD_getErrorName(code: usize) -> *const c_char;
}

/// The error libzstd's return `code` stands for, if it is one.
fn check(code: usize, what: &str) -> io::Result<usize> {
    // SAFETY: both functions only inspect the integer; the name is a static
    // NUL-terminated string owned by libzstd.
    unsafe {
        if ZSTD_isError(code) == 0 {
            return Ok(code);
        }
        let name = CStr::from_ptr(ZSTD_getErrorName(code)).to_string_lossy();
        Err(io::Error::other(format!("zstd {what}: {name}")))
    }
}

/// A zstd frame compressed by libzstd's worker pool, written to `W`.
pub struct ZstdMtEncoder<W: Write> {
    cctx: NonNull<Cctx>,
    /// `Some` until `finish` returns it.
    inner: Option<W>,
    out: Vec<u8>,
    /// The first error; every later call returns it again.
    failed: Option<(io::ErrorKind, String)>,
}

// SAFETY: the context is owned by this value alone and libzstd contexts may
// be used from any thread, one at a time (`&mut self` guarantees that).
unsafe impl<W: Write + Send> Send for ZstdMtEncoder<W> {}

impl<W: Write> ZstdMtEncoder<W> {
    /// An encoder at `level` (1–19) with `threads` workers (at least one:
    /// the frame is always cut into the same jobs), an XXH64 content
    /// checksum, and the pre-block splitter off.
    pub fn new(inner: W, level: i32, threads: u32) -> io::Result<Self> {
        // SAFETY: plain constructor; NULL (allocation failure) is handled.
        let cctx = NonNull::new(unsafe { ZSTD_createCCtx() })
            .ok_or_else(|| io::Error::other("zstd: cannot allocate a compression context"))?;
        let enc = ZstdMtEncoder {
            cctx,
            inner: Some(inner),
            out: vec![0; OUT_BUF],
            failed: None,
        };
        let workers = c_int::try_from(threads.max(1)).unwrap_or(c_int::MAX);
        enc.set(C_COMPRESSION_LEVEL, level, "level")?;
        enc.set(C_NB_WORKERS, workers, "workers")?;
        enc.set(C_JOB_SIZE, JOB_SIZE as c_int, "job size")?;
        enc.set(C_CHECKSUM_FLAG, 1, "checksum")?;
        // A libzstd older than 1.5.7 has no pre-block splitter to turn off
        // and refuses the parameter: nothing to do then.
        let _ = enc.set(C_BLOCK_SPLITTER_LEVEL, BLOCK_SPLITTER_OFF, "block splitter");
        Ok(enc)
    }

    fn set(&self, param: c_int, value: c_int, what: &str) -> io::Result<()> {
        // SAFETY: the context is valid until drop; libzstd checks the
        // parameter number and the value's bounds itself.
        let r = unsafe { ZSTD_CCtx_setParameter(self.cctx.as_ptr(), param, value) };
        check(r, what).map(drop)
    }

    fn fail_on<T>(&mut self, r: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &r {
            self.failed.get_or_insert((e.kind(), e.to_string()));
        }
        r
    }

    fn check_failed(&self) -> io::Result<()> {
        match &self.failed {
            Some((kind, msg)) => Err(io::Error::new(*kind, msg.clone())),
            None => Ok(()),
        }
    }

    /// One `ZSTD_compressStream2` call over `input[*pos..]`; writes what it
    /// produced. Returns libzstd's hint (for `E_END`: bytes left to flush).
    fn step(&mut self, input: &[u8], pos: &mut usize, end: c_int) -> io::Result<usize> {
        let mut i = InBuffer {
            src: input.as_ptr().cast(),
            size: input.len(),
            pos: *pos,
        };
        let mut o = OutBuffer {
            dst: self.out.as_mut_ptr().cast(),
            size: self.out.len(),
            pos: 0,
        };
        // SAFETY: `i` describes `input` (alive for the call; libzstd copies
        // what it consumes into its own job buffers before returning) and
        // `o` the owned output buffer; the context is valid and used by this
        // thread only.
        let r = unsafe { ZSTD_compressStream2(self.cctx.as_ptr(), &mut o, &mut i, end) };
        *pos = i.pos;
        let hint = check(r, "compression")?;
        if o.pos > 0 {
            let inner = self
                .inner
                .as_mut()
                .expect("inner writer present until finish");
            inner.write_all(&self.out[..o.pos])?;
        }
        Ok(hint)
    }

    /// Ends the frame, flushes the inner writer and returns it.
    pub fn finish(mut self) -> io::Result<W> {
        self.check_failed()?;
        let r = (|| {
            let mut pos = 0;
            while self.step(&[], &mut pos, E_END)? != 0 {}
            self.inner.as_mut().expect("inner writer present").flush()
        })();
        self.fail_on(r)?;
        Ok(self.inner.take().expect("inner writer present"))
    }
}

impl<W: Write> Write for ZstdMtEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check_failed()?;
        let mut pos = 0;
        let r = (|| {
            while pos < buf.len() {
                self.step(buf, &mut pos, E_CONTINUE)?;
            }
            Ok(buf.len())
        })();
        self.fail_on(r)
    }

    /// Flushes the inner writer only. It does not end the current job
    /// (`ZSTD_e_flush` would, and the output would then depend on when
    /// flush is called).
    fn flush(&mut self) -> io::Result<()> {
        self.check_failed()?;
        let r = self.inner.as_mut().map_or(Ok(()), |w| w.flush());
        self.fail_on(r)
    }
}

impl<W: Write> Drop for ZstdMtEncoder<W> {
    fn drop(&mut self) {
        // SAFETY: the context was created by ZSTD_createCCtx and is freed
        // once; freeing stops and joins its worker pool.
        unsafe {
            ZSTD_freeCCtx(self.cctx.as_ptr());
        }
    }
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
        let mut e = ZstdMtEncoder::new(Vec::new(), 3, threads).unwrap();
        for piece in data.chunks(300_001) {
            e.write_all(piece).unwrap();
            e.flush().unwrap();
        }
        e.finish().unwrap()
    }

    /// The number of non-empty blocks in the single frame of `z` (RFC 8878
    /// §3.1.1; a multithreaded frame ends with an empty last block).
    fn blocks(z: &[u8]) -> usize {
        assert_eq!(&z[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd magic");
        let fhd = z[4];
        let single_segment = fhd & 0x20 != 0;
        let fcs = match fhd >> 6 {
            0 => usize::from(single_segment),
            1 => 2,
            2 => 4,
            _ => 8,
        };
        let did = [0, 1, 2, 4][usize::from(fhd & 3)];
        let mut p = 5 + usize::from(!single_segment) + did + fcs;
        let mut n = 0;
        loop {
            let h = u32::from(z[p]) | u32::from(z[p + 1]) << 8 | u32::from(z[p + 2]) << 16;
            let size = (h >> 3) as usize;
            p += 3 + if (h >> 1) & 3 == 1 { 1 } else { size };
            n += usize::from(size > 0);
            if h & 1 == 1 {
                break;
            }
        }
        let checksum = if fhd & 4 != 0 { 4 } else { 0 };
        assert_eq!(p + checksum, z.len(), "one frame, nothing after it");
        n
    }

    #[test]
    fn round_trips_and_does_not_depend_on_threads_or_flushes() {
        let data = mixed();
        let a = compress(&data, 1);
        assert_eq!(a, compress(&data, 2), "output depends on threads");
        assert_eq!(a, compress(&data, 3), "output depends on threads");
        let mut back = Vec::new();
        zstd::stream::read::Decoder::new(&a[..])
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        assert!(a.len() < data.len() / 2, "compressed: {}", a.len());
    }

    #[test]
    fn blocks_are_not_split() {
        // Without the pre-block splitter every block but the last of each
        // job holds 128 KiB: 10 MiB is 80 blocks. zstd 1.5.7's default
        // splitter cuts this data into 222.
        let z = compress(&mixed(), 2);
        assert_eq!(blocks(&z), 80);
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
        let mut e = ZstdMtEncoder::new(Full(10_000), 3, 2).unwrap();
        // libzstd may hold every job until the end of the frame; then only
        // `finish` sees the error.
        if let Err(first) = data.chunks(1 << 20).try_for_each(|c| e.write_all(c)) {
            assert_eq!(first.kind(), io::ErrorKind::StorageFull);
            let again = e.write(b"more").unwrap_err();
            assert_eq!(again.kind(), io::ErrorKind::StorageFull);
            assert_eq!(e.flush().unwrap_err().kind(), io::ErrorKind::StorageFull);
        }
        assert_eq!(e.finish().unwrap_err().kind(), io::ErrorKind::StorageFull);
    }
}
