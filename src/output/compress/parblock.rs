//! Parallel block compression: the engine of both compressor stages.
//!
//! Inside the compressor stage (after the tar writer, before the hash tee). The
//! tar stream is cut into blocks of a fixed size (a [`Codec`] constant); a pool
//! of worker threads turns each block into a self-contained piece of the output
//! format — a gzip member ([`super::pgzip`]) or a zstd frame ([`super::pzstd`])
//! — and the calling thread writes the pieces to the inner writer in input
//! order. Both formats define a file as a series of such pieces, so the result
//! is one ordinary `.tgz` or `.tar.zst`.
//!
//! Why one pool of our own rather than a library's: the workers take blocks
//! from a shared queue, so none waits while a block is queued, and the
//! calling thread only waits when [`IN_FLIGHT_PER_WORKER`] blocks per
//! worker are out. libzstd's own multithreaded mode keeps at most two jobs
//! beyond its workers and hands out the next one only when the caller is
//! woken by progress on the *oldest* job; on two cores its workers sat idle
//! about a fifth of the time (measured on a copy of `/usr`).
//!
//! Must never: let the output depend on the number of threads or on when
//! `flush` is called (block size and codec settings are constants, pieces
//! are written in input order, `flush` does not end a block); hold more
//! than a bounded number of blocks in memory (at most
//! [`IN_FLIGHT_PER_WORKER`] per worker in flight, buffers recycled); lose
//! an error (a worker or inner-writer failure is returned by every later
//! `write` and by `finish`); or hang or panic when dropped without `finish`
//! (the pool is told to stop and joined).

use crate::util::StickyError;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

/// Blocks handed to the pool but not yet written, per worker.
pub const IN_FLIGHT_PER_WORKER: usize = 2;

/// A block compressor: the format-specific half of a [`ParEncoder`].
pub trait Codec: Send + Sync + 'static {
    /// One worker's compression context.
    type State: Send + 'static;
    /// The format's name, for thread names and messages ("gzip", "zstd").
    const NAME: &'static str;
    /// Uncompressed bytes per block. The output depends on it, so it is a
    /// constant of the codec, never derived from the thread count.
    const BLOCK_SIZE: usize;

    /// A context for one worker (created on the calling thread, used on
    /// the worker's).
    fn state(&self) -> io::Result<Self::State>;

    /// Replaces `out`'s content with `input` as one complete piece of the
    /// format (an empty `input` gives a valid empty piece).
    fn compress(&self, state: &mut Self::State, input: &[u8], out: &mut Vec<u8>) -> io::Result<()>;
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

/// An encoder that compresses [`Codec::BLOCK_SIZE`] blocks on `threads`
/// worker threads and writes one piece per block, in order.
pub struct ParEncoder<W: Write, C: Codec> {
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
    failed: StickyError,
    _codec: std::marker::PhantomData<C>,
}

impl<W: Write, C: Codec> ParEncoder<W, C> {
    /// An encoder with `threads` workers (at least 1) running `codec`.
    pub fn new(inner: W, codec: C, threads: u32) -> io::Result<Self> {
        let threads = threads.max(1) as usize;
        let mut states = Vec::with_capacity(threads);
        for _ in 0..threads {
            states.push(codec.state()?);
        }
        let codec = Arc::new(codec);
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::with_capacity(threads);
        for (i, state) in states.into_iter().enumerate() {
            let (jobs, done, stop) = (Arc::clone(&job_rx), done_tx.clone(), Arc::clone(&stop));
            let codec = Arc::clone(&codec);
            let spawned = std::thread::Builder::new()
                .name(format!("{}-{i}", C::NAME))
                .spawn(move || worker(&*codec, state, &jobs, &done, &stop));
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
        Ok(ParEncoder {
            inner: Some(inner),
            block: Vec::with_capacity(C::BLOCK_SIZE),
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
            failed: StickyError::default(),
            _codec: std::marker::PhantomData,
        })
    }

    /// Compresses what is left, writes every piece in order, stops the
    /// workers and returns the inner writer. An empty input gives one empty
    /// piece, so the result is always a valid file of the format.
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
            return Err(io::Error::other(format!(
                "a {} worker thread panicked",
                C::NAME
            )));
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
        self.failed.check()
    }

    fn fail_on<T>(&mut self, r: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &r {
            self.failed.record(e);
            self.stop.store(true, Ordering::Relaxed);
        }
        r
    }

    fn exited() -> io::Error {
        io::Error::other(format!("the {} worker threads have exited", C::NAME))
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
            .unwrap_or_else(|| Vec::with_capacity(C::BLOCK_SIZE));
        let input = std::mem::replace(&mut self.block, next);
        let job = Job {
            seq: self.next_seq,
            input,
            output: self.spare_out.pop().unwrap_or_default(),
        };
        let sent = self.jobs.as_ref().map(|tx| tx.send(job));
        if !matches!(sent, Some(Ok(()))) {
            return Err(Self::exited());
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
            Err(_) => Err(Self::exited()),
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

impl<W: Write, C: Codec> Write for ParEncoder<W, C> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check()?;
        let n = buf.len().min(C::BLOCK_SIZE - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == C::BLOCK_SIZE {
            let r = self.submit();
            self.fail_on(r)?;
        }
        Ok(n)
    }

    /// Writes the pieces finished so far and flushes the inner writer. It
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

impl<W: Write, C: Codec> Drop for ParEncoder<W, C> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker<C: Codec>(
    codec: &C,
    mut state: C::State,
    jobs: &Mutex<Receiver<Job>>,
    done: &Sender<Done>,
    stop: &AtomicBool,
) {
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
        let Job {
            seq,
            input,
            mut output,
        } = job;
        let r = catch_unwind(AssertUnwindSafe(|| {
            codec.compress(&mut state, &input, &mut output)
        }))
        .unwrap_or_else(|_| {
            Err(io::Error::other(format!(
                "{} compression panicked",
                C::NAME
            )))
        });
        let output = r.map(|()| output);
        if done.send(Done { seq, input, output }).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Wraps each block in `<` `>` after a delay that differs from block to
    /// block (so later blocks often finish first); a block starting with
    /// `!` fails, one starting with `P` panics. Counts blocks begun.
    struct Test {
        begun: Arc<AtomicUsize>,
        written: Arc<AtomicUsize>,
        limit: usize,
    }

    impl Codec for Test {
        type State = ();
        const NAME: &'static str = "test";
        const BLOCK_SIZE: usize = 1000;

        fn state(&self) -> io::Result<()> {
            Ok(())
        }

        fn compress(&self, (): &mut (), input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
            let begun = self.begun.fetch_add(1, Ordering::SeqCst) + 1;
            let written = self.written.load(Ordering::SeqCst);
            assert!(
                begun - written <= self.limit,
                "{begun} begun, {written} written"
            );
            match input.first() {
                Some(b'!') => return Err(io::Error::other("bad block")),
                Some(b'P') => panic!("test panic"),
                Some(b) => std::thread::sleep(std::time::Duration::from_millis(u64::from(b % 4))),
                None => {}
            }
            out.clear();
            out.push(b'<');
            out.extend_from_slice(input);
            out.push(b'>');
            Ok(())
        }
    }

    /// Collects the output, counting the pieces (`>`) written.
    struct Sink(Vec<u8>, Arc<AtomicUsize>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let pieces = buf.iter().filter(|&&b| b == b'>').count();
            self.0.extend_from_slice(buf);
            self.1.fetch_add(pieces, Ordering::SeqCst);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn encoder(threads: u32) -> ParEncoder<Sink, Test> {
        let written = Arc::new(AtomicUsize::new(0));
        let codec = Test {
            begun: Arc::new(AtomicUsize::new(0)),
            written: Arc::clone(&written),
            // Blocks handed out and not yet written.
            limit: threads as usize * IN_FLIGHT_PER_WORKER,
        };
        ParEncoder::new(Sink(Vec::new(), written), codec, threads).unwrap()
    }

    /// `n` blocks of the test codec's size, block `i` filled with a letter
    /// that sets its delay.
    fn blocks(n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| std::iter::repeat_n(b'a' + (i * 7 % 26) as u8, Test::BLOCK_SIZE))
            .collect()
    }

    fn expected(data: &[u8]) -> Vec<u8> {
        let mut want = Vec::new();
        for b in data.chunks(Test::BLOCK_SIZE) {
            want.push(b'<');
            want.extend_from_slice(b);
            want.push(b'>');
        }
        want
    }

    #[test]
    fn pieces_come_out_in_input_order_with_bounded_blocks_in_flight() {
        for threads in [1, 2, 4] {
            let mut data = blocks(40);
            data.extend_from_slice(b"tail");
            let mut e = encoder(threads);
            for piece in data.chunks(333) {
                e.write_all(piece).unwrap();
            }
            let out = e.finish().unwrap().0;
            assert_eq!(out, expected(&data), "{threads} threads");
        }
        // Nothing written: one empty piece.
        assert_eq!(encoder(2).finish().unwrap().0, b"<>");
    }

    #[test]
    fn a_codec_error_is_returned_and_stays() {
        let mut data = blocks(12);
        data[5 * Test::BLOCK_SIZE] = b'!';
        let mut e = encoder(2);
        let err = match e.write_all(&data) {
            Err(err) => err,
            Ok(()) => e.finish().map(drop).unwrap_err(),
        };
        assert!(err.to_string().contains("bad block"), "{err}");
        let mut e = encoder(2);
        if e.write_all(&data).is_err() {
            let again = e.write(b"x").unwrap_err();
            assert!(again.to_string().contains("bad block"), "{again}");
        }
        let last = e.finish().map(drop).unwrap_err();
        assert!(last.to_string().contains("bad block"), "{last}");
    }

    #[test]
    fn a_panicking_codec_is_an_error_not_a_hang() {
        let mut data = blocks(9);
        data[3 * Test::BLOCK_SIZE] = b'P';
        for threads in [1, 3] {
            let mut e = encoder(threads);
            let r = e.write_all(&data).and_then(|()| e.finish().map(drop));
            let err = r.unwrap_err();
            assert!(
                err.to_string().contains("test compression panicked"),
                "{err}"
            );
        }
        // Dropped without finish after the failure: joins, no hang.
        let mut e = encoder(2);
        let _ = e.write_all(&data);
        drop(e);
    }
}
