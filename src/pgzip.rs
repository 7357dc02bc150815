//! Parallel gzip: the `.tgz` compressor stage of the sink.
//!
//! Sits between the tar writer and the hash tee (walk → policy → tar writer
//! → **compressor** → hash tee → file). The tar stream is cut into fixed
//! [`BLOCK_SIZE`] blocks; a pool of worker threads compresses each block
//! with libdeflate into its own complete gzip member (RFC 1952 allows a
//! file to be a series of members; GNU gzip, GNU tar `-z`, bsdtar, zlib's
//! `gzread` and Python's `gzip`/`tarfile.open(p)` read them all), and the
//! calling thread writes the members to the inner writer in input order.
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
//! and level are constants, members are written in input order, the header
//! has MTIME 0 and a fixed OS byte); hold more than a bounded number of
//! blocks in memory (at most two per worker in flight, buffers recycled);
//! lose an error (a worker or inner-writer failure is returned by every
//! later `write` and by `finish`); or hang or panic when dropped without
//! `finish` (the pool is told to stop and joined).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

/// Uncompressed bytes per gzip member. A constant: the output depends on
/// it, never on the thread count. Measured on a 450 MB root at level 6,
/// 1 MiB blocks give 0.14 % more output than 4 MiB ones (512 KiB: 0.33 %,
/// 256 KiB: 0.7 %) at the same speed and a quarter of the memory.
pub const BLOCK_SIZE: usize = 1 << 20;

/// Blocks handed to the pool but not yet written, per worker.
const IN_FLIGHT_PER_WORKER: usize = 2;

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

struct Job {
    seq: u64,
    input: Vec<u8>,
    output: Vec<u8>,
}

struct Done {
    seq: u64,
    input: Vec<u8>,
    output: io::Result<Vec<u8>>,
}

/// A gzip encoder that compresses [`BLOCK_SIZE`] blocks on `threads`
/// worker threads and writes one gzip member per block, in order.
pub struct ParGzEncoder<W: Write> {
    inner: Option<W>,
    block: Vec<u8>,
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    /// Number of the next block handed to the pool.
    next_seq: u64,
    /// Number of the next block to write to `inner`.
    next_write: u64,
    /// Compressed blocks that came back before their predecessors.
    ready: BTreeMap<u64, Vec<u8>>,
    max_in_flight: usize,
    spare_in: Vec<Vec<u8>>,
    spare_out: Vec<Vec<u8>>,
    /// The first error; every later call returns it again.
    failed: Option<(io::ErrorKind, String)>,
}

impl<W: Write> ParGzEncoder<W> {
    /// An encoder at gzip `level` (1–9) with `threads` workers (at least 1).
    pub fn new(inner: W, level: i32, threads: u32) -> io::Result<Self> {
        let lvl = libdeflater::CompressionLvl::new(libdeflate_level(level))
            .map_err(|e| io::Error::other(format!("gzip level {level}: {e:?}")))?;
        let threads = threads.max(1) as usize;
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let (jobs, done, stop) = (Arc::clone(&job_rx), done_tx.clone(), Arc::clone(&stop));
            let spawned = std::thread::Builder::new()
                .name(format!("gzip-{i}"))
                .spawn(move || worker(lvl, &jobs, &done, &stop));
            match spawned {
                Ok(h) => workers.push(h),
                Err(e) => {
                    // Dropping the sender makes the started workers exit.
                    drop(job_tx);
                    for w in workers {
                        let _ = w.join();
                    }
                    return Err(e);
                }
            }
        }
        Ok(ParGzEncoder {
            inner: Some(inner),
            block: Vec::with_capacity(BLOCK_SIZE),
            jobs: Some(job_tx),
            done: done_rx,
            stop,
            workers,
            next_seq: 0,
            next_write: 0,
            ready: BTreeMap::new(),
            max_in_flight: threads * IN_FLIGHT_PER_WORKER,
            spare_in: Vec::new(),
            spare_out: Vec::new(),
            failed: None,
        })
    }

    /// Compresses what is left, writes every member in order, stops the
    /// workers and returns the inner writer. An empty input gives one empty
    /// member, so the result is always a valid gzip file.
    pub fn finish(mut self) -> io::Result<W> {
        self.check()?;
        let r = self.finish_inner();
        self.fail_on(r)?;
        // Unwrap expectation: `inner` is only taken here, and self is consumed.
        Ok(self.inner.take().expect("finish once"))
    }

    fn finish_inner(&mut self) -> io::Result<()> {
        if !self.block.is_empty() || self.next_seq == 0 {
            self.submit()?;
        }
        while self.next_write < self.next_seq {
            self.wait_one()?;
        }
        self.jobs = None;
        let mut panicked = false;
        for w in self.workers.drain(..) {
            panicked |= w.join().is_err();
        }
        if panicked {
            return Err(io::Error::other("a gzip worker thread panicked"));
        }
        self.inner_mut().flush()
    }

    fn inner_mut(&mut self) -> &mut W {
        // Unwrap expectation: `inner` is Some until `finish` returns it.
        self.inner
            .as_mut()
            .expect("inner writer present until finish")
    }

    fn check(&self) -> io::Result<()> {
        match &self.failed {
            Some((kind, msg)) => Err(io::Error::new(*kind, msg.clone())),
            None => Ok(()),
        }
    }

    fn fail_on<T>(&mut self, r: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &r {
            if self.failed.is_none() {
                self.failed = Some((e.kind(), e.to_string()));
            }
            self.stop.store(true, Ordering::Relaxed);
        }
        r
    }

    /// Hands the current block to the pool, first waiting (and writing)
    /// while too many blocks are in flight.
    fn submit(&mut self) -> io::Result<()> {
        while self.next_seq - self.next_write >= self.max_in_flight as u64 {
            self.wait_one()?;
        }
        let next = self
            .spare_in
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BLOCK_SIZE));
        let input = std::mem::replace(&mut self.block, next);
        let job = Job {
            seq: self.next_seq,
            input,
            output: self.spare_out.pop().unwrap_or_default(),
        };
        let sent = self.jobs.as_ref().map(|tx| tx.send(job));
        if !matches!(sent, Some(Ok(()))) {
            return Err(io::Error::other("the gzip worker threads have exited"));
        }
        self.next_seq += 1;
        // Write whatever is already done without blocking.
        while let Ok(d) = self.done.try_recv() {
            self.take_done(d)?;
        }
        Ok(())
    }

    /// Blocks until one more block is compressed, then writes what is in
    /// order.
    fn wait_one(&mut self) -> io::Result<()> {
        match self.done.recv() {
            Ok(d) => self.take_done(d),
            Err(_) => Err(io::Error::other("the gzip worker threads have exited")),
        }
    }

    fn take_done(&mut self, d: Done) -> io::Result<()> {
        let mut input = d.input;
        input.clear();
        if self.spare_in.len() < self.max_in_flight {
            self.spare_in.push(input);
        }
        self.ready.insert(d.seq, d.output?);
        while let Some(out) = self.ready.remove(&self.next_write) {
            self.inner_mut().write_all(&out)?;
            self.next_write += 1;
            if self.spare_out.len() < self.max_in_flight {
                self.spare_out.push(out);
            }
        }
        Ok(())
    }
}

impl<W: Write> Write for ParGzEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check()?;
        let n = buf.len().min(BLOCK_SIZE - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == BLOCK_SIZE {
            let r = self.submit();
            self.fail_on(r)?;
        }
        Ok(n)
    }

    /// Writes the members finished so far and flushes the inner writer. It
    /// does not end the current block (that would make the output depend on
    /// when flush is called).
    fn flush(&mut self) -> io::Result<()> {
        self.check()?;
        let r = (|| {
            while let Ok(d) = self.done.try_recv() {
                self.take_done(d)?;
            }
            self.inner_mut().flush()
        })();
        self.fail_on(r)
    }
}

impl<W: Write> Drop for ParGzEncoder<W> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(
    level: libdeflater::CompressionLvl,
    jobs: &Mutex<Receiver<Job>>,
    done: &Sender<Done>,
    stop: &AtomicBool,
) {
    let mut c = libdeflater::Compressor::new(level);
    loop {
        let job = {
            let rx = jobs.lock().unwrap_or_else(PoisonError::into_inner);
            match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            }
        };
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Job { seq, input, output } = job;
        let output = catch_unwind(AssertUnwindSafe(|| gzip_member(&mut c, &input, output)))
            .unwrap_or_else(|_| Err(io::Error::other("gzip compression panicked")));
        if done.send(Done { seq, input, output }).is_err() {
            return;
        }
    }
}

/// One complete gzip member holding `input`, built in `out`'s allocation.
fn gzip_member(
    c: &mut libdeflater::Compressor,
    input: &[u8],
    mut out: Vec<u8>,
) -> io::Result<Vec<u8>> {
    out.clear();
    out.resize(c.gzip_compress_bound(input.len()), 0);
    let n = c
        .gzip_compress(input, &mut out)
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
    Ok(out)
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
        let mut e = ParGzEncoder::new(Vec::new(), level, threads).unwrap();
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
        let mut e = ParGzEncoder::new(Vec::new(), 6, 2).unwrap();
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
        let mut e = ParGzEncoder::new(inner, 6, 2).unwrap();
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
        let mut e = ParGzEncoder::new(inner, 6, 2).unwrap();
        e.write_all(&data[..1000]).unwrap();
        let err = e.finish().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{err}");

        // Fails only at the final flush: finish returns it.
        let inner = Failing {
            ok: usize::MAX,
            written: 0,
            fail_flush: true,
        };
        let mut e = ParGzEncoder::new(inner, 6, 2).unwrap();
        e.write_all(&data[..1000]).unwrap();
        let err = e.finish().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{err}");
    }

    #[test]
    fn drop_without_finish_stops_the_pool() {
        let data = sample(6 * BLOCK_SIZE + 5);
        for threads in [1, 4] {
            let mut e = ParGzEncoder::new(Vec::new(), 1, threads).unwrap();
            e.write_all(&data).unwrap();
            drop(e);
        }
        // And a failed one.
        let mut e = ParGzEncoder::new(
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
