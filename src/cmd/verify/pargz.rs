//! Parallel gunzip of goldcap's own `.tgz`: its members are independent
//! (1 MiB of tar each, see `output::compress::pgzip`), so a batch of them
//! is decompressed on several threads with libdeflate and handed on in
//! order.
//!
//! Part of the reading side of `verify` and `apply` (the decompressor
//! [`super::read::Decoder`] picks it when the stream starts with goldcap's
//! member header). Members are found by that header (`1f 8b 08 00`, MTIME
//! 0, OS 3) and each is checked by libdeflate as a whole gzip member (CRC
//! and length), its size bounded by the trailer's ISIZE, at most one
//! block. Anything else — a foreign single-stream gzip that happens to
//! start alike, a member larger than a block, a header look-alike inside
//! compressed data, a member that is not a whole block before the last,
//! bad data — falls back, from that member on, to the
//! sequential multi-member decoder, which reports errors as before. Must
//! never hold more than a batch (threads × [`PER_THREAD`] members, each
//! at most a block) nor read the input twice.

use std::collections::VecDeque;
use std::io::{self, BufRead, Chain, Cursor, Read};

/// The largest member goldcap writes, uncompressed (its block size).
const BLOCK: usize = 1 << 20;
/// Members decompressed per thread in one batch (8 threads: 16 MiB out,
/// about as much compressed in).
const PER_THREAD: usize = 2;
/// Compressed bytes that may pass without a member boundary before the
/// stream is treated as not goldcap's (a 1 MiB block of random data
/// stores in a little over 1 MiB).
const MAX_MEMBER: usize = BLOCK + BLOCK / 4;

/// A goldcap member header, but for XFL (byte 8, the level's hint).
fn is_header(b: &[u8]) -> bool {
    b.len() >= 10 && b[..8] == [0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0] && b[9] == 3
}

/// Whether `start` (the first bytes of a stream) looks like goldcap's
/// `.tgz`.
pub(super) fn looks_like_goldcap(start: &[u8]) -> bool {
    is_header(start)
}

/// Decompresses goldcap's members in parallel (see the module docs).
pub(in crate::cmd) struct ParGunzip<R: BufRead> {
    state: State<R>,
    /// Decompressed members ready, in order.
    ready: VecDeque<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    threads: usize,
    /// Members decompressed in parallel (for tests and the curious).
    pub(in crate::cmd) parallel_members: u64,
}

enum State<R: BufRead> {
    /// Compressed bytes read and not yet decompressed, and the source.
    Parallel {
        carry: Vec<u8>,
        input: R,
        eof: bool,
    },
    /// From some member on, one stream.
    Sequential(Box<flate2::bufread::MultiGzDecoder<Chain<Cursor<Vec<u8>>, R>>>),
    Poisoned,
}

impl<R: BufRead> ParGunzip<R> {
    pub(in crate::cmd) fn new(input: R) -> ParGunzip<R> {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 8);
        ParGunzip {
            state: State::Parallel {
                carry: Vec::new(),
                input,
                eof: false,
            },
            ready: VecDeque::new(),
            cur: Vec::new(),
            pos: 0,
            threads,
            parallel_members: 0,
        }
    }

    /// The source, for reading what is left of it.
    pub(in crate::cmd) fn into_inner(self) -> R {
        match self.state {
            State::Parallel { input, .. } => input,
            State::Sequential(d) => d.into_inner().into_inner().1,
            State::Poisoned => unreachable!("a poisoned ParGunzip is never kept"),
        }
    }

    /// Switches to one stream from `carry` on.
    fn fall_back(&mut self) {
        if let State::Parallel { carry, input, .. } =
            std::mem::replace(&mut self.state, State::Poisoned)
        {
            self.state = State::Sequential(Box::new(flate2::bufread::MultiGzDecoder::new(
                Cursor::new(carry).chain(input),
            )));
        }
    }

    /// Decompresses the next batch of members into `ready`; `false` at
    /// the end of the stream (or after falling back).
    fn refill(&mut self) -> io::Result<bool> {
        let want = self.threads * PER_THREAD;
        let State::Parallel { carry, input, eof } = &mut self.state else {
            return Ok(false);
        };
        // Read until `want` whole members are in `carry`, or the end; each
        // byte is scanned for a header once.
        let mut starts = Vec::new();
        let mut scanned = member_starts(carry, 0, &mut starts);
        while starts.len() <= want && !*eof {
            let buf = input.fill_buf()?;
            if buf.is_empty() {
                *eof = true;
                break;
            }
            let n = buf.len();
            carry.extend_from_slice(buf);
            input.consume(n);
            scanned = member_starts(carry, scanned, &mut starts);
            let since_last = carry.len() - starts.last().copied().unwrap_or(0);
            if since_last > MAX_MEMBER {
                break;
            }
        }
        if carry.is_empty() {
            return Ok(false);
        }
        // Whole members: each start up to the next; the last one only at
        // the end of the input.
        let mut bounds: Vec<(usize, usize)> = starts.windows(2).map(|w| (w[0], w[1])).collect();
        if let (true, Some(&last)) = (*eof, starts.last()) {
            bounds.push((last, carry.len()));
        }
        bounds.truncate(want);
        if bounds.is_empty() || starts.first() != Some(&0) {
            self.fall_back();
            return Ok(false);
        }
        let results = decompress_all(carry, &bounds, self.threads);
        let stream_end = if *eof { carry.len() } else { usize::MAX };
        let mut used = 0;
        for (out, &(start, end)) in results.into_iter().zip(&bounds) {
            // goldcap's members are whole blocks but the last: anything
            // else is not its layout (and tiny members would cost a batch
            // each), so one stream from there.
            match out.filter(|d| d.len() == BLOCK || end == stream_end) {
                Some(data) => {
                    self.ready.push_back(data);
                    self.parallel_members += 1;
                    used = end;
                }
                None => {
                    debug_assert_eq!(start, used);
                    break;
                }
            }
        }
        let State::Parallel { carry, .. } = &mut self.state else {
            unreachable!()
        };
        carry.drain(..used);
        if used == 0 || used < bounds.last().map_or(0, |b| b.1) {
            // A member that did not decompress on its own: one stream
            // from there (what it says is then the sequential decoder's).
            self.fall_back();
        }
        Ok(!self.ready.is_empty())
    }
}

/// Adds to `out` the offsets of member headers in `buf` at `from` or
/// later; returns where the next scan starts (a header needs 10 bytes, so
/// the last 9 are looked at again once more data came).
fn member_starts(buf: &[u8], from: usize, out: &mut Vec<usize>) -> usize {
    let end = buf.len().saturating_sub(9);
    let mut at = from;
    while at < end {
        let Some(i) = buf[at..end].iter().position(|&x| x == 0x1f) else {
            break;
        };
        let p = at + i;
        if is_header(&buf[p..]) {
            out.push(p);
        }
        at = p + 1;
    }
    end.max(from)
}

/// Each member of `buf[start..end]` decompressed, in order, on up to
/// `threads` threads; `None` for one that is not a whole member of at
/// most a block (its trailer's ISIZE).
fn decompress_all(buf: &[u8], bounds: &[(usize, usize)], threads: usize) -> Vec<Option<Vec<u8>>> {
    let one = |d: &mut libdeflater::Decompressor, (start, end): (usize, usize)| {
        let member = &buf[start..end];
        let isize = member
            .len()
            .checked_sub(4)
            .map(|t| u32::from_le_bytes(member[t..].try_into().expect("4 bytes")) as usize)?;
        if isize > BLOCK {
            return None;
        }
        let mut out = vec![0u8; isize];
        match d.gzip_decompress(member, &mut out) {
            Ok(n) if n == isize => Some(out),
            _ => None,
        }
    };
    let mut results: Vec<Option<Vec<u8>>> = vec![None; bounds.len()];
    std::thread::scope(|s| {
        let chunk = bounds.len().div_ceil(threads.max(1));
        let mut handles = Vec::new();
        for (slots, ranges) in results
            .chunks_mut(chunk.max(1))
            .zip(bounds.chunks(chunk.max(1)))
        {
            handles.push(s.spawn(move || {
                let mut d = libdeflater::Decompressor::new();
                for (slot, r) in slots.iter_mut().zip(ranges) {
                    *slot = one(&mut d, *r);
                    if slot.is_none() {
                        break;
                    }
                }
            }));
        }
        for h in handles {
            let _ = h.join();
        }
    });
    // Only the prefix before the first failure counts.
    if let Some(i) = results.iter().position(Option::is_none) {
        for r in &mut results[i..] {
            *r = None;
        }
    }
    results
}

impl<R: BufRead> Read for ParGunzip<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.cur.len() {
                let n = buf.len().min(self.cur.len() - self.pos);
                buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            if let Some(next) = self.ready.pop_front() {
                self.cur = next;
                self.pos = 0;
                continue;
            }
            if let State::Sequential(d) = &mut self.state {
                return d.read(buf);
            }
            if !self.refill()? && self.ready.is_empty() {
                if let State::Sequential(d) = &mut self.state {
                    return d.read(buf);
                }
                return Ok(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// `data` as goldcap writes it: 1 MiB members.
    fn goldcap_gz(data: &[u8]) -> Vec<u8> {
        use crate::output::compress::{Compressor, Format};
        let mut enc = Compressor::new(Vec::new(), Format::Tgz, 6, 2).unwrap();
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn gunzip(gz: &[u8]) -> (Vec<u8>, u64) {
        let mut p = ParGunzip::new(io::BufReader::with_capacity(1 << 16, gz));
        let mut out = Vec::new();
        p.read_to_end(&mut out).unwrap();
        (out, p.parallel_members)
    }

    #[test]
    fn goldcap_members_come_back_in_order_in_parallel() {
        let data: Vec<u8> = (0..(5 << 20) + 12_345u32)
            .map(|i| (i % 251) as u8 ^ (i >> 13) as u8)
            .collect();
        let gz = goldcap_gz(&data);
        assert!(looks_like_goldcap(&gz));
        let (out, members) = gunzip(&gz);
        assert!(out == data, "{} bytes back of {}", out.len(), data.len());
        assert_eq!(members, 6);
    }

    #[test]
    fn foreign_and_damaged_streams_fall_back_to_one_stream() {
        // gzip -n: goldcap's header, one big member: sequential, same bytes.
        let data = vec![7u8; 3 << 20];
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&data).unwrap();
        let gz = e.finish().unwrap();
        let (out, members) = gunzip(&gz);
        assert!(out == data);
        assert_eq!(members, 0);
        // A damaged member: an error from the sequential decoder, never
        // silently short data.
        let mut gz = goldcap_gz(&vec![9u8; 3 << 20]);
        let mid = gz.len() / 2;
        gz[mid] ^= 0x55;
        let mut p = ParGunzip::new(io::BufReader::new(&gz[..]));
        let mut out = Vec::new();
        assert!(p.read_to_end(&mut out).is_err() || out != vec![9u8; 3 << 20]);
    }
}
