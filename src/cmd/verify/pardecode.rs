//! Parallel decompression of goldcap's own artifacts: a `.tgz` is
//! independent 1 MiB gzip members (`output::compress::pgzip`), a
//! `.tar.zst` independent 2 MiB zstd frames (`output::compress::pzstd`), so
//! they are decompressed on worker threads (libdeflate, libzstd) and handed
//! on in order, while this thread reads — and its caller hashes — the
//! compressed bytes of the members after them.
//!
//! Part of the reading side of `verify` and `apply` (the decompressor
//! [`super::read::Decoder`] picks it when the stream starts as goldcap's
//! does). gzip members are found by goldcap's member header (`1f 8b 08 00`,
//! MTIME 0, OS 3), each checked by libdeflate as a whole member (CRC and
//! length) of at most a block by its trailer's ISIZE; zstd frames are
//! walked by their own block headers (`ZSTD_findFrameCompressedSize`),
//! each with a content size of at most a block and its checksum checked by
//! libzstd. Every member but the last must be a whole block, as goldcap
//! writes them. Anything else — a foreign single-stream gzip that starts
//! alike, a larger member, a header look-alike inside compressed data,
//! tiny members, a frame without a content size, bad data — falls back,
//! from that member on, to the sequential decoder (flate2's multi-member
//! gzip, the `zstd` crate's), which reads everything else and reports
//! errors as it always did.
//!
//! Memory: a window of a member per worker and [`WINDOW_EXTRA`] more in
//! flight, each a compressed and a decompressed buffer of about a block,
//! the same buffers going round. Must never hold more, nor read the input twice,
//! nor let the output depend on the number of threads.

use crate::output::compress::{pgzip, pzstd};
use std::collections::VecDeque;
use std::io::{self, BufRead, Chain, Cursor, Read};
use std::sync::mpsc;

/// Worker threads by default, at most (libzstd and libdeflate each
/// decompress about 1 GB/s on one core: four outrun any disk).
pub(super) const MAX_THREADS: usize = 4;
/// Members in flight beyond one per worker, so that no worker idles
/// while this thread waits for the oldest.
const WINDOW_EXTRA: usize = 2;

/// Which of goldcap's two layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::cmd) enum Codec {
    Gzip,
    Zstd,
}

impl Codec {
    /// goldcap's layout, by the first bytes of a stream.
    pub(super) fn sniff(start: &[u8]) -> Option<Codec> {
        if is_gzip_header(start) {
            Some(Codec::Gzip)
        } else if start.starts_with(&ZSTD_MAGIC) {
            Some(Codec::Zstd)
        } else {
            None
        }
    }

    /// The uncompressed size of every member but the last.
    pub(in crate::cmd) fn block(self) -> usize {
        match self {
            Codec::Gzip => pgzip::BLOCK_SIZE,
            Codec::Zstd => pzstd::FRAME_SIZE,
        }
    }

    /// Compressed bytes that may pass without a whole member before the
    /// stream is treated as not goldcap's (a block of random data stores
    /// in a little more than a block).
    fn max_member(self) -> usize {
        self.block() + self.block() / 4
    }
}

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// A goldcap gzip member header, but for XFL (byte 8, the level's hint).
fn is_gzip_header(b: &[u8]) -> bool {
    b.len() >= 10 && b[..8] == [0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0] && b[9] == 3
}

/// Decompresses goldcap's members in parallel (see the module docs).
pub(in crate::cmd) struct ParDecoder<R: BufRead> {
    codec: Codec,
    state: State<R>,
    /// Members sent to the workers, oldest first.
    inflight: VecDeque<InFlight>,
    /// Members sent so far (the next goes to worker `sent % workers`).
    sent: usize,
    /// What follows the members in flight.
    ahead: Ahead,
    /// A worker failed: members are lost, so every later read is an error.
    broken: bool,
    /// Started with the first member.
    pool: Option<Pool>,
    /// The member being read with `read`.
    cur: Vec<u8>,
    pos: usize,
    /// Buffers done with, for the workers to decompress into and for
    /// members' compressed bytes.
    spare_out: Vec<Vec<u8>>,
    spare_in: Vec<Vec<u8>>,
    threads: usize,
    /// Members decompressed in parallel (for tests and the curious).
    pub(in crate::cmd) parallel_members: u64,
}

enum State<R: BufRead> {
    /// Compressed bytes read and not yet sent (from `head` on; `scanned`:
    /// where the search for the next gzip header goes on, from `head`),
    /// and the source.
    Parallel {
        carry: Vec<u8>,
        head: usize,
        scanned: usize,
        /// zstd: the size of the frame at `head` once walked, and how many
        /// bytes there were at the last walk that found it incomplete.
        frame: usize,
        tried: usize,
        input: R,
        eof: bool,
    },
    /// From some member on, one stream.
    Sequential(Sequential<R>),
    Poisoned,
}

type Rest<R> = Chain<Cursor<Vec<u8>>, R>;

enum Sequential<R: BufRead> {
    Gzip(Box<flate2::bufread::MultiGzDecoder<Rest<R>>>),
    Zstd(Box<zstd::stream::read::Decoder<'static, Rest<R>>>),
}

/// A member's compressed bytes and, if it decompressed as goldcap's
/// members do, its content.
struct Reply {
    input: Vec<u8>,
    output: Option<Vec<u8>>,
}

/// A member for a worker: its bytes, whether it ends the stream (only the
/// last may be short of a block), and a buffer to decompress into.
struct Job {
    input: Vec<u8>,
    last: bool,
    spare: Vec<u8>,
}

/// Where a member in flight is.
enum InFlight {
    /// With this worker; its replies come in the order it was sent them.
    Worker(usize),
    /// Done on this thread (no worker could be started).
    Done(Reply),
}

/// Worker threads that live as long as the decoder, each with its own
/// decompression context; they end when it is dropped.
struct Pool {
    workers: Vec<(mpsc::Sender<Job>, mpsc::Receiver<Reply>)>,
}

impl Pool {
    fn new(codec: Codec, threads: usize) -> Pool {
        let workers = (0..threads)
            .filter_map(|_| {
                let (jobs, rx) = mpsc::channel::<Job>();
                let (tx, replies) = mpsc::channel::<Reply>();
                std::thread::Builder::new()
                    .name("unpack".into())
                    .spawn(move || {
                        let mut ctx = Ctx::new(codec);
                        for job in rx {
                            let output = ctx.one(&job.input, job.last, job.spare);
                            let reply = Reply {
                                input: job.input,
                                output,
                            };
                            if tx.send(reply).is_err() {
                                break;
                            }
                        }
                    })
                    .ok()
                    .map(|_| (jobs, replies))
            })
            .collect();
        Pool { workers }
    }
}

/// What follows the members in flight.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ahead {
    /// More members (or not known yet).
    Members,
    /// The end of the input.
    End,
    /// Something that is not goldcap's layout, for the sequential decoder.
    Foreign,
}

/// What the input holds next.
enum Next {
    /// A whole member's bytes, and whether it ends the stream.
    Member(Vec<u8>, bool),
    End,
    /// Not goldcap's layout from here on.
    Foreign,
}

impl<R: BufRead> ParDecoder<R> {
    /// `threads` workers (`None`: one per core, at most [`MAX_THREADS`]).
    pub(in crate::cmd) fn new(input: R, codec: Codec, threads: Option<usize>) -> ParDecoder<R> {
        let threads = threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(MAX_THREADS)
        });
        ParDecoder {
            codec,
            state: State::Parallel {
                carry: Vec::new(),
                head: 0,
                scanned: 0,
                frame: 0,
                tried: 0,
                input,
                eof: false,
            },
            inflight: VecDeque::new(),
            sent: 0,
            ahead: Ahead::Members,
            broken: false,
            pool: None,
            cur: Vec::new(),
            pos: 0,
            spare_out: Vec::new(),
            spare_in: Vec::new(),
            threads: threads.max(1),
            parallel_members: 0,
        }
    }

    pub(in crate::cmd) fn codec(&self) -> Codec {
        self.codec
    }

    /// The source, for reading what is left of it (members in flight were
    /// read from it already).
    pub(in crate::cmd) fn into_inner(self) -> R {
        match self.state {
            State::Parallel { input, .. } => input,
            State::Sequential(Sequential::Gzip(d)) => d.into_inner().into_inner().1,
            State::Sequential(Sequential::Zstd(d)) => d.finish().into_inner().1,
            State::Poisoned => unreachable!("a poisoned ParDecoder is never kept"),
        }
    }

    /// The next member decompressed in parallel, handed over whole (no
    /// copy), or `None` when the rest is to be read with `read`: at the
    /// end, after `read` left part of a member, or once the stream fell
    /// back to one sequential stream.
    pub(in crate::cmd) fn take_member(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.pos < self.cur.len() {
            return Ok(None);
        }
        while let Some(m) = self.next_output()? {
            if !m.is_empty() {
                return Ok(Some(m));
            }
            self.recycle(m);
        }
        Ok(None)
    }

    /// Takes back a buffer the caller is done with (a member it took, or
    /// any other), for a later member: the same few buffers go round.
    pub(in crate::cmd) fn recycle(&mut self, buf: Vec<u8>) {
        if matches!(self.state, State::Parallel { .. })
            && self.spare_out.len() < self.window()
            && buf.capacity() >= self.codec.block()
        {
            self.spare_out.push(buf);
        }
    }

    /// Members in flight at most.
    fn window(&self) -> usize {
        self.threads + WINDOW_EXTRA
    }

    /// The oldest member's content once it is decompressed, after
    /// sending as many members as the window holds; `None` at the end or
    /// once the stream fell back to one sequential stream.
    fn next_output(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if self.broken {
                return Err(io::Error::other("a decompression thread failed"));
            }
            if !matches!(self.state, State::Parallel { .. }) {
                return Ok(None);
            }
            while self.ahead == Ahead::Members && self.inflight.len() < self.window() {
                match self.next_member()? {
                    Next::Member(input, last) => self.send(input, last),
                    Next::End => self.ahead = Ahead::End,
                    Next::Foreign => self.ahead = Ahead::Foreign,
                }
            }
            let Some(oldest) = self.inflight.pop_front() else {
                if self.ahead == Ahead::Foreign {
                    self.fall_back(Vec::new())?;
                }
                return Ok(None);
            };
            let reply = self.wait(oldest)?;
            match reply.output {
                Some(out) => {
                    self.parallel_members += 1;
                    if self.spare_in.len() < self.window() {
                        self.spare_in.push(reply.input);
                    }
                    return Ok(Some(out));
                }
                None => {
                    // One stream from this member on, those after it
                    // behind it.
                    let mut before = reply.input;
                    while let Some(f) = self.inflight.pop_front() {
                        before.extend_from_slice(&self.wait(f)?.input);
                    }
                    self.fall_back(before)?;
                }
            }
        }
    }

    /// The reply for a member in flight; a worker that is gone took the
    /// member with it, and the decoder is broken from then on.
    fn wait(&mut self, f: InFlight) -> io::Result<Reply> {
        let reply = match f {
            InFlight::Done(reply) => Some(reply),
            InFlight::Worker(i) => self.pool.as_ref().and_then(|p| p.workers[i].1.recv().ok()),
        };
        reply.ok_or_else(|| {
            self.broken = true;
            io::Error::other("a decompression thread failed")
        })
    }

    /// Sends a member to the next worker (or decompresses it here if no
    /// worker could be started).
    fn send(&mut self, input: Vec<u8>, last: bool) {
        let (codec, threads) = (self.codec, self.threads);
        let spare = self.spare_out.pop().unwrap_or_default();
        let pool = self.pool.get_or_insert_with(|| Pool::new(codec, threads));
        let job = Job { input, last, spare };
        let f = match pool.workers.len() {
            0 => {
                let output = Ctx::new(codec).one(&job.input, last, job.spare);
                InFlight::Done(Reply {
                    input: job.input,
                    output,
                })
            }
            n => {
                let i = self.sent % n;
                match pool.workers[i].0.send(job) {
                    Ok(()) => InFlight::Worker(i),
                    // A worker that is gone leaves its member undone: the
                    // sequential decoder takes it from there.
                    Err(mpsc::SendError(job)) => InFlight::Done(Reply {
                        input: job.input,
                        output: None,
                    }),
                }
            }
        };
        self.sent += 1;
        self.inflight.push_back(f);
    }

    /// Switches to one stream: `before`, then what was read and not sent,
    /// then the rest of the input.
    fn fall_back(&mut self, mut before: Vec<u8>) -> io::Result<()> {
        // The buffers of the parallel path are not needed any more.
        self.spare_out = Vec::new();
        self.spare_in = Vec::new();
        self.pool = None;
        if let State::Parallel {
            carry, head, input, ..
        } = std::mem::replace(&mut self.state, State::Poisoned)
        {
            before.extend_from_slice(&carry[head..]);
            let rest = Cursor::new(before).chain(input);
            self.state = State::Sequential(match self.codec {
                Codec::Gzip => {
                    Sequential::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(rest)))
                }
                Codec::Zstd => {
                    Sequential::Zstd(Box::new(zstd::stream::read::Decoder::with_buffer(rest)?))
                }
            });
        }
        Ok(())
    }

    /// Reads until a whole member starts the bytes not yet sent (or the
    /// end of the input) and takes it out of them.
    fn next_member(&mut self) -> io::Result<Next> {
        let codec = self.codec;
        let State::Parallel {
            carry,
            head,
            scanned,
            frame,
            tried,
            input,
            eof,
        } = &mut self.state
        else {
            return Ok(Next::End);
        };
        let end = loop {
            let rest = &carry[*head..];
            let found = match codec {
                Codec::Gzip if !rest.is_empty() && !is_gzip_header(rest) => {
                    if rest.len() >= 10 || *eof {
                        return Ok(Next::Foreign);
                    }
                    None
                }
                // Whole once the next header is seen (or the input ends).
                Codec::Gzip => {
                    let (at, next) = next_gzip_header(rest, (*scanned).max(1));
                    *scanned = at;
                    next.or((*eof && !rest.is_empty()).then_some(rest.len()))
                }
                // Whole by its own block headers, walked again only once
                // the bytes doubled (a frame of many tiny blocks costs a
                // walk each time), or at the end; whether it is the last
                // once a byte after it was read, or the input ended.
                Codec::Zstd => {
                    let walk = rest.len() >= 2 * *tried || *eof || rest.len() > codec.max_member();
                    if *frame == 0 && walk {
                        match zstd::zstd_safe::find_frame_compressed_size(rest) {
                            Ok(n) if n > 0 => *frame = n,
                            _ if *eof && !rest.is_empty() => return Ok(Next::Foreign),
                            _ => *tried = rest.len(),
                        }
                    }
                    (*frame > 0 && (rest.len() > *frame || *eof)).then_some(*frame)
                }
            };
            if let Some(n) = found {
                break *head + n;
            }
            if *eof {
                return Ok(Next::End);
            }
            if rest.len() > codec.max_member() {
                return Ok(Next::Foreign);
            }
            // Room for more: what was sent goes first.
            if *head > 0 {
                carry.drain(..*head);
                *head = 0;
            }
            let buf = input.fill_buf()?;
            if buf.is_empty() {
                *eof = true;
                continue;
            }
            let n = buf.len();
            carry.extend_from_slice(buf);
            input.consume(n);
        };
        let mut member = self.spare_in.pop().unwrap_or_default();
        member.clear();
        member.extend_from_slice(&carry[*head..end]);
        *head = end;
        (*scanned, *frame, *tried) = (0, 0, 0);
        let last = *eof && end == carry.len();
        Ok(Next::Member(member, last))
    }
}

/// The offset of the next goldcap gzip header in `buf` at `from` or
/// later, if there is one, and where to go on looking (a header needs 10
/// bytes, so the last 9 are looked at again once more data came).
fn next_gzip_header(buf: &[u8], from: usize) -> (usize, Option<usize>) {
    let end = buf.len().saturating_sub(9);
    let mut at = from;
    while at < end {
        let Some(i) = buf[at..end].iter().position(|&x| x == 0x1f) else {
            break;
        };
        let p = at + i;
        if is_gzip_header(&buf[p..]) {
            return (p, Some(p));
        }
        at = p + 1;
    }
    (end.max(from), None)
}

/// A worker's decompression context, kept from one member to the next
/// (`None`: it could not be made, and no member decompresses here).
enum Ctx {
    Gzip(Option<Inflater>),
    Zstd(Option<zstd::zstd_safe::DCtx<'static>>),
}

impl Ctx {
    fn new(codec: Codec) -> Ctx {
        match codec {
            Codec::Gzip => Ctx::Gzip(Inflater::new()),
            Codec::Zstd => Ctx::Zstd(zstd::zstd_safe::DCtx::try_create()),
        }
    }

    /// `member` decompressed into `buf` if it is a whole member as goldcap
    /// writes them: at most a block, exactly a block unless it is the
    /// stream's `last`.
    fn one(&mut self, member: &[u8], last: bool, buf: Vec<u8>) -> Option<Vec<u8>> {
        let block = match self {
            Ctx::Gzip(_) => Codec::Gzip.block(),
            Ctx::Zstd(_) => Codec::Zstd.block(),
        };
        let got = match self {
            Ctx::Gzip(Some(d)) => gunzip(d, member, block, buf),
            Ctx::Zstd(Some(d)) => unzstd(d, member, block, buf),
            Ctx::Gzip(None) | Ctx::Zstd(None) => None,
        };
        got.filter(|d| d.len() == block || last)
    }
}

/// libdeflate's decompressor, called through `libdeflate_gzip_decompress_ex`,
/// which says how many input bytes the member used: libdeflater's
/// `gzip_decompress` stops at the member's trailer and ignores what follows,
/// so bytes gzip(1) calls trailing garbage — or hides behind — would pass.
struct Inflater(std::ptr::NonNull<libdeflate_sys::libdeflate_decompressor>);

// SAFETY: a libdeflate decompressor has no thread affinity; it is only used
// through `&mut self`, one call at a time.
unsafe impl Send for Inflater {}

impl Inflater {
    fn new() -> Option<Inflater> {
        // SAFETY: takes nothing; returns null when it cannot allocate.
        std::ptr::NonNull::new(unsafe { libdeflate_sys::libdeflate_alloc_decompressor() })
            .map(Inflater)
    }

    /// Whether `member` is exactly one gzip member (every byte of it used,
    /// CRC and ISIZE checked by libdeflate) whose content fills `out`.
    fn gunzip_exact(&mut self, member: &[u8], out: &mut [u8]) -> bool {
        let (mut used, mut written) = (0usize, 0usize);
        // SAFETY: the decompressor is live (freed only in `drop`); the input
        // and output pointers and lengths come from live slices, and the two
        // counts are valid places to write.
        let r = unsafe {
            libdeflate_sys::libdeflate_gzip_decompress_ex(
                self.0.as_ptr(),
                member.as_ptr().cast(),
                member.len(),
                out.as_mut_ptr().cast(),
                out.len(),
                &mut used,
                &mut written,
            )
        };
        r == libdeflate_sys::libdeflate_result_LIBDEFLATE_SUCCESS
            && used == member.len()
            && written == out.len()
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        // SAFETY: allocated by `libdeflate_alloc_decompressor`, freed once.
        unsafe { libdeflate_sys::libdeflate_free_decompressor(self.0.as_ptr()) }
    }
}

/// One gzip member, of at most `block` bytes by its trailer, into `out`.
fn gunzip(d: &mut Inflater, member: &[u8], block: usize, mut out: Vec<u8>) -> Option<Vec<u8>> {
    let t = member.len().checked_sub(4)?;
    let isize = u32::from_le_bytes(member[t..].try_into().expect("4 bytes")) as usize;
    if isize > block {
        return None;
    }
    out.resize(isize, 0);
    d.gunzip_exact(member, &mut out).then_some(out)
}

/// One zstd frame, of at most `block` bytes by its header, into `out`.
fn unzstd(
    d: &mut zstd::zstd_safe::DCtx<'static>,
    frame: &[u8],
    block: usize,
    mut out: Vec<u8>,
) -> Option<Vec<u8>> {
    let size = usize::try_from(zstd::zstd_safe::get_frame_content_size(frame).ok()??).ok()?;
    if size > block {
        return None;
    }
    out.clear();
    out.reserve_exact(size);
    match d.decompress(&mut out, frame) {
        Ok(n) if n == size => Some(out),
        _ => None,
    }
}

impl<R: BufRead> Read for ParDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.cur.len() {
                let n = buf.len().min(self.cur.len() - self.pos);
                buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            match self.next_output()? {
                Some(next) => {
                    let done = std::mem::replace(&mut self.cur, next);
                    self.recycle(done);
                    self.pos = 0;
                }
                None => {
                    return match &mut self.state {
                        State::Sequential(Sequential::Gzip(d)) => d.read(buf),
                        State::Sequential(Sequential::Zstd(d)) => d.read(buf),
                        _ => Ok(0),
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::compress::{Format, compress_all as goldcap};
    use std::io::Write;

    fn data(len: usize) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i % 251) as u8 ^ (i >> 13) as u8)
            .collect()
    }

    /// Everything decoded with `threads` workers, and the members done
    /// in parallel.
    fn decode(z: &[u8], threads: usize) -> (io::Result<Vec<u8>>, u64) {
        let codec = Codec::sniff(z).unwrap_or(Codec::Gzip);
        let mut p = ParDecoder::new(
            io::BufReader::with_capacity(1 << 16, z),
            codec,
            Some(threads),
        );
        let mut out = Vec::new();
        let r = p.read_to_end(&mut out).map(|_| out);
        (r, p.parallel_members)
    }

    #[test]
    fn goldcap_members_come_back_in_order_whatever_the_threads() {
        // Three batches and a bit of gzip, two and a bit of zstd; a
        // stream of whole blocks; one short member.
        for (format, len, members) in [
            (Format::Tgz, (17 << 20) + 12_345, 18),
            (Format::Tzst, (17 << 20) + 12_345, 9),
            (Format::Tgz, 16 << 20, 16),
            (Format::Tzst, 16 << 20, 8),
            (Format::Tzst, 1000, 1),
        ] {
            let data = data(len);
            let z = goldcap(&data, format);
            for threads in [1, 3, 4] {
                let (out, n) = decode(&z, threads);
                let out = out.unwrap();
                assert!(out == data, "{format:?}: {} bytes back of {len}", out.len());
                assert_eq!(n, members, "{format:?} with {threads} threads");
            }
        }
    }

    #[test]
    fn foreign_streams_fall_back_to_one_stream() {
        let data = data(5 << 20);
        // gzip -n: goldcap's header, one big member.
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&data).unwrap();
        let gz = e.finish().unwrap();
        // zstd's own single frame (content size 5 MiB), and frames
        // without a content size (a streaming encoder's).
        let one = zstd::encode_all(&data[..], 3).unwrap();
        let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        e.write_all(&data).unwrap();
        let streamed = e.finish().unwrap();
        // goldcap's frames, then a foreign one: the first in parallel.
        let mut mixed = goldcap(&data[..2 << 20], Format::Tzst);
        mixed.extend(zstd::encode_all(&data[2 << 20..], 3).unwrap());
        for (z, parallel) in [(gz, 0), (one, 0), (streamed, 0), (mixed, 1)] {
            let (out, n) = decode(&z, 2);
            assert!(out.unwrap() == data);
            assert_eq!(n, parallel);
        }
    }

    #[test]
    fn damaged_members_are_errors_never_short_data() {
        for format in [Format::Tgz, Format::Tzst] {
            let data = data(13 << 20);
            let good = goldcap(&data, format);
            for at in [good.len() / 3, good.len() / 2, good.len() - 20] {
                let mut z = good.clone();
                z[at] ^= 0x55;
                let (out, _) = decode(&z, 2);
                assert!(
                    out.as_ref().map_or(true, |o| *o != data),
                    "{format:?}: damage at {at} went unnoticed"
                );
                assert!(out.is_err(), "{format:?}: damage at {at} is no error");
            }
            // Cut short: an error too.
            let (out, _) = decode(&good[..good.len() * 2 / 3], 2);
            assert!(out.is_err(), "{format:?} cut short");
        }
    }

    /// The sequential decoders' reading of `z`: what the parallel one must
    /// give, or fail on.
    fn sequential(z: &[u8], codec: Codec) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        match codec {
            Codec::Gzip => flate2::bufread::MultiGzDecoder::new(z).read_to_end(&mut out),
            Codec::Zstd => zstd::stream::read::Decoder::with_buffer(z)?.read_to_end(&mut out),
        }
        .map(|_| out)
    }

    #[test]
    fn bytes_beside_members_are_never_skipped() {
        let data = data(3 << 20);
        let gz = goldcap(&data, Format::Tgz);
        // Where the second member starts.
        let second = (1..gz.len()).find(|&i| is_gzip_header(&gz[i..])).unwrap();
        let named = |d: &[u8]| {
            let mut e = flate2::GzBuilder::new()
                .filename("x")
                .write(Vec::new(), flate2::Compression::fast());
            e.write_all(d).unwrap();
            e.finish().unwrap()
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            // A gzip member with a name (not goldcap's header) after one
            // of goldcap's, of a whole block: its content is gzip's too.
            (
                "named member after",
                [&gz[..], &named(&data[..1 << 20])].concat(),
            ),
            // gzip(1) calls these trailing garbage, or stops at them.
            ("trailer repeated", [&gz[..], &gz[gz.len() - 8..]].concat()),
            ("zeros after", [&gz[..], &[0u8; 16][..]].concat()),
            (
                "junk between",
                [&gz[..second], b"garbage!\0\0\x10\0", &gz[second..]].concat(),
            ),
            (
                "trailer copy between",
                [&gz[..second], &gz[second - 8..second], &gz[second..]].concat(),
            ),
        ];
        for (what, z) in cases {
            let want = sequential(&z, Codec::Gzip);
            for threads in [1, 2] {
                let (got, _) = decode(&z, threads);
                match (&want, &got) {
                    (Ok(w), Ok(g)) => assert!(w == g, "{what}: {} bytes, not {}", g.len(), w.len()),
                    (Err(_), Err(_)) => {}
                    _ => panic!(
                        "{what}: sequential {:?}, parallel {:?}",
                        want.as_ref().map(Vec::len),
                        got.as_ref().map(Vec::len)
                    ),
                }
            }
        }
    }

    #[test]
    fn the_format_is_recognised_whatever_the_first_read_holds() {
        /// Hands out one byte per read, as a slow network body may.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(1);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let data = data(3 << 20);
        for (format, name) in [(Format::Tgz, "gzip"), (Format::Tzst, "zstd")] {
            let z = goldcap(&data, format);
            let input = io::BufReader::new(super::super::read::SniffFirst::new(Trickle(&z)));
            let mut d = super::super::read::Decoder::new(input).unwrap();
            assert_eq!(d.format(), name);
            let mut out = Vec::new();
            d.read_to_end(&mut out).unwrap();
            assert!(out == data, "{name}");
        }
    }
}
