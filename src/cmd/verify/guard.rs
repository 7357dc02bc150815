//! A bound on the metadata an archive can make verify hold in memory.
//!
//! Part of verify, between the decompressor and the tar reader. The tar
//! reader (tar-rs) reads a PAX extended header or a GNU long name into
//! memory whole, however large its header says it is: a crafted 100 MB
//! PAX header costs 100 MB or more. [`Guard`] follows the tar block
//! structure in the bytes as they pass — headers, the PAX `size` record
//! that overrides the next member's size, GNU sparse extension blocks —
//! exactly as the reader will, and fails the read that completes a
//! metadata header larger than [`MAX_META`], before the reader allocates
//! anything. Where the reader would stop or fail (end-of-archive block, bad
//! checksum, bad number) the guard stops looking and lets it. It never
//! changes a byte.

use std::io::{self, Read};

/// The largest PAX (`x`, `g`) or GNU long-name (`L`, `K`) header verify
/// reads. goldcap's own are a few KiB: a path, a link target, xattrs
/// (Linux caps a value at 64 KiB) and ACLs.
pub(super) const MAX_META: u64 = 16 << 20;

const BLOCK: usize = 512;

/// Where the stream is in the tar structure.
enum State {
    /// Collecting a header block.
    Header {
        block: Box<[u8; BLOCK]>,
        filled: usize,
    },
    /// Collecting a PAX extended header's records (up to [`MAX_META`]),
    /// then its padding.
    Pax { body: Vec<u8>, left: u64, pad: u64 },
    /// Collecting a GNU sparse extension block; member data follows them.
    SparseExt {
        block: Box<[u8; BLOCK]>,
        filled: usize,
        data: u64,
    },
    /// Passing member data and padding.
    Skip(u64),
    /// The reader stops or fails here; nothing more to follow.
    Done,
}

/// A reader that passes bytes through unchanged and fails on an oversized
/// metadata header.
pub(in crate::cmd) struct Guard<R> {
    inner: R,
    state: State,
    /// Bytes passed, for the offset in the message.
    offset: u64,
    /// The size a PAX header set for the next member that is not itself
    /// an extension header.
    pax_size: Option<u64>,
}

impl<R> Guard<R> {
    pub(in crate::cmd) fn new(inner: R) -> Guard<R> {
        Guard {
            inner,
            state: header(),
            offset: 0,
            pax_size: None,
        }
    }

    pub(super) fn into_inner(self) -> R {
        self.inner
    }

    /// Follows `buf` through the structure.
    fn feed(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let used = match &mut self.state {
                State::Done => return Ok(()),
                State::Skip(left) => {
                    let n = (*left).min(buf.len() as u64);
                    *left -= n;
                    if *left == 0 {
                        self.state = header();
                    }
                    n as usize
                }
                State::Header { block, filled } | State::SparseExt { block, filled, .. } => {
                    let n = (BLOCK - *filled).min(buf.len());
                    block[*filled..*filled + n].copy_from_slice(&buf[..n]);
                    *filled += n;
                    if *filled == BLOCK {
                        self.offset += n as u64;
                        self.block_done()?;
                        buf = &buf[n..];
                        continue;
                    }
                    n
                }
                State::Pax { body, left, pad } => {
                    let n = (*left).min(buf.len() as u64);
                    body.extend_from_slice(&buf[..n as usize]);
                    *left -= n;
                    if *left == 0 {
                        self.pax_size = size_record(body);
                        self.state = skip(*pad);
                    }
                    n as usize
                }
            };
            self.offset += used as u64;
            buf = &buf[used..];
        }
        Ok(())
    }

    /// A header or sparse extension block is complete.
    fn block_done(&mut self) -> io::Result<()> {
        self.state = match std::mem::replace(&mut self.state, State::Done) {
            State::Header { block, .. } => self.after_header(&block)?,
            State::SparseExt { block, data, .. } => {
                // `isextended`, after 21 sparse entries of 24 bytes.
                if block[504] == 1 {
                    State::SparseExt {
                        block,
                        filled: 0,
                        data,
                    }
                } else {
                    skip(data)
                }
            }
            other => other,
        };
        Ok(())
    }

    /// What follows a header, as tar-rs reads it.
    fn after_header(&mut self, block: &[u8; BLOCK]) -> io::Result<State> {
        if block.iter().all(|&b| b == 0) {
            return Ok(State::Done);
        }
        let h = tar::Header::from_byte_slice(block);
        let sum: u32 = block[..148]
            .iter()
            .chain(&block[156..])
            .map(|&b| u32::from(b))
            .sum::<u32>()
            + 8 * 32;
        if h.cksum().ok() != Some(sum) {
            return Ok(State::Done);
        }
        let et = h.entry_type();
        let recognised = h.as_gnu().is_some() || h.as_ustar().is_some();
        let meta = et.is_pax_local_extensions()
            || et.is_pax_global_extensions()
            || et.is_gnu_longname()
            || et.is_gnu_longlink();
        let Ok(mut size) = h.entry_size() else {
            return Ok(State::Done);
        };
        if meta && size > MAX_META {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} header at byte {} is {size} bytes, more than the {} MiB verify reads",
                    kind(et),
                    self.offset - BLOCK as u64,
                    MAX_META >> 20
                ),
            ));
        }
        if !meta {
            // tar-rs applies a PAX size to the next member that is not an
            // extension header and forgets it when it returns a member.
            size = self.pax_size.take().unwrap_or(size);
        } else if et.is_pax_global_extensions() || !recognised {
            // Returned to the caller as members: the PAX header is spent.
            self.pax_size = None;
        }
        let Some(padded) = size.checked_next_multiple_of(BLOCK as u64) else {
            return Ok(State::Done);
        };
        if recognised && et.is_pax_local_extensions() {
            if self.pax_size.is_some() {
                return Ok(State::Done); // tar-rs: two PAX headers for one member
            }
            return Ok(if size == 0 {
                header()
            } else {
                State::Pax {
                    body: Vec::new(),
                    left: size,
                    pad: padded - size,
                }
            });
        }
        if !meta && et.is_gnu_sparse() {
            let Some(gnu) = h.as_gnu() else {
                return Ok(State::Done);
            };
            if gnu.is_extended() {
                return Ok(State::SparseExt {
                    block: Box::new([0; BLOCK]),
                    filled: 0,
                    data: padded,
                });
            }
        }
        Ok(skip(padded))
    }
}

fn header() -> State {
    State::Header {
        block: Box::new([0; BLOCK]),
        filled: 0,
    }
}

fn skip(n: u64) -> State {
    if n == 0 { header() } else { State::Skip(n) }
}

/// The first `size` record of a PAX header, as tar-rs takes it (nothing
/// when a record before it is malformed).
fn size_record(body: &[u8]) -> Option<u64> {
    for ext in tar::PaxExtensions::new(body) {
        let ext = ext.ok()?;
        if ext.key() == Ok("size") {
            return ext.value().ok()?.parse().ok();
        }
    }
    None
}

fn kind(et: tar::EntryType) -> &'static str {
    if et.is_gnu_longname() {
        "a GNU long-name"
    } else if et.is_gnu_longlink() {
        "a GNU long-link"
    } else if et.is_pax_global_extensions() {
        "a PAX global"
    } else {
        "a PAX extended"
    }
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.feed(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks as a tar writer lays them out (no end-of-archive).
    fn padded(mut v: Vec<u8>) -> Vec<u8> {
        v.resize(v.len().next_multiple_of(BLOCK), 0);
        v
    }

    fn pax(records: &str) -> Vec<u8> {
        let mut a = claim(b'x', records.len() as u64);
        a.extend(padded(records.as_bytes().to_vec()));
        a
    }

    fn member(data: &[u8]) -> Vec<u8> {
        let mut a = claim(b'0', data.len() as u64);
        a.extend(padded(data.to_vec()));
        a
    }

    /// A header claiming `size` bytes of type `et`, with no body.
    fn claim(et: u8, size: u64) -> Vec<u8> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::new(et));
        h.set_path("x").unwrap();
        h.set_size(size);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    /// Reads `bytes` through a guard in `chunk`-sized reads.
    fn run(bytes: &[u8], chunk: usize) -> io::Result<u64> {
        let mut g = Guard::new(bytes);
        let mut buf = vec![0; chunk];
        let mut total = 0;
        loop {
            match g.read(&mut buf)? {
                0 => return Ok(total),
                n => total += n as u64,
            }
        }
    }

    #[test]
    fn oversized_metadata_fails_at_its_header() {
        for et in [b'x', b'g', b'L', b'K'] {
            let mut a = member(b"data");
            a.extend(claim(et, MAX_META + 1));
            let err = run(&a, 4096).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            let msg = err.to_string();
            assert!(msg.contains("at byte 1024 is 16777217 bytes"), "{msg}");
        }
    }

    #[test]
    fn at_the_limit_and_ordinary_members_pass() {
        let mut a = claim(b'x', MAX_META);
        a.extend(vec![b'\n'; MAX_META as usize]);
        // A regular member may be larger than the limit.
        a.extend(claim(b'0', MAX_META * 2));
        a.extend(vec![b'x'; MAX_META as usize * 2]);
        a.extend(claim(b'L', MAX_META + 1));
        for chunk in [1, 512, 7000] {
            let err = run(&a, chunk).unwrap_err().to_string();
            let at = a.len() - BLOCK;
            assert!(err.contains(&format!("at byte {at} ")), "{err}");
        }
    }

    #[test]
    fn pax_size_moves_the_next_header() {
        // A PAX size of 1024 for a member whose header says 0: the bytes
        // after the header are data, and a forged "header" inside them is
        // not one. Without the PAX record, it would be.
        let mut body = claim(b'x', MAX_META + 1);
        body.extend(vec![0; 512]);
        let mut a = pax("13 size=1024\n");
        a.extend(claim(b'0', 0));
        a.extend(&body);
        assert!(run(&a, 512).is_ok());
        // tar-rs agrees: one member of 1024 bytes.
        let sizes: Vec<u64> = tar::Archive::new(&a[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().size())
            .collect();
        assert_eq!(sizes, [1024]);
        let mut b = pax("14 comment=no\n");
        b.extend(claim(b'0', 0));
        b.extend(&body);
        assert!(run(&b, 512).is_err());
        // tar-rs gives the size to the member after a long name too.
        let mut c = pax("13 size=1024\n");
        c.extend(claim(b'L', 2));
        c.extend(b"n\0");
        c.extend(vec![0; 510]);
        c.extend(claim(b'0', 0));
        c.extend(&body);
        assert!(run(&c, 100).is_ok());
    }

    #[test]
    fn sparse_extension_blocks_come_before_the_data() {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNUSparse);
        h.set_path("s").unwrap();
        h.set_size(512);
        h.as_gnu_mut().unwrap().set_is_extended(true);
        h.set_cksum();
        let mut ext = tar::GnuExtSparseHeader::new();
        ext.set_is_extended(true);
        let mut a = h.as_bytes().to_vec();
        a.extend(ext.as_bytes());
        ext.set_is_extended(false);
        a.extend(ext.as_bytes());
        a.extend(claim(b'x', MAX_META + 1)); // the data block: not a header
        a.extend(claim(b'K', MAX_META + 1));
        let err = run(&a, 300).unwrap_err().to_string();
        assert!(err.contains("GNU long-link header at byte 2048"), "{err}");
    }

    #[test]
    fn stops_where_the_reader_stops() {
        let mut a = vec![0; 512];
        a.extend(claim(b'x', MAX_META + 1));
        assert!(run(&a, 512).is_ok());
        let mut bad = claim(b'x', MAX_META + 1);
        bad[0] ^= 1; // checksum no longer matches
        assert!(run(&bad, 512).is_ok());
    }
}
