//! The hash tee: md5 and sha256 of the compressed stream, in the pass that
//! writes it.
//!
//! Between the compressor and the artifact's destination. Writes go to the
//! inner writer on the calling thread; the written bytes, gathered into
//! [`HASH_CHUNK`] chunks, go to an md5 thread and on to a sha256 thread,
//! so hashing costs the writer nothing while a core is free, and the
//! artifact is never read back. Chunks are recycled and bounded
//! ([`HASH_BUFFERS`]), so memory does not grow with the artifact. Must
//! never report digests of anything but the bytes the inner writer took.

use super::digest::{Digests, Hasher, hex};
use super::md5::Md5;
use sha2::{Digest, Sha256};
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

/// Bytes of output the hash tee gathers before handing them to the hash
/// threads (tar headers arrive 512 bytes at a time).
pub const HASH_CHUNK: usize = 256 << 10;

/// Chunks in circulation between the tee and its hash threads; when all are
/// in use, the writer waits for the slower hash (bounds memory).
const HASH_BUFFERS: usize = 8;

/// md5 and sha256 on a thread each: chunks go calling thread → md5 thread
/// → sha256 thread → back to the calling thread for reuse.
struct HashThreads {
    to_md5: SyncSender<Vec<u8>>,
    recycled: Receiver<Vec<u8>>,
    allocated: usize,
    md5: JoinHandle<[u8; 16]>,
    sha256: JoinHandle<[u8; 32]>,
}

impl HashThreads {
    fn spawn() -> io::Result<HashThreads> {
        let (to_md5, md5_rx) = mpsc::sync_channel::<Vec<u8>>(HASH_BUFFERS);
        let (to_sha, sha_rx) = mpsc::sync_channel::<Vec<u8>>(HASH_BUFFERS);
        let (recycle, recycled) = mpsc::channel::<Vec<u8>>();
        let sha256 = std::thread::Builder::new()
            .name("sha256".into())
            .spawn(move || {
                let mut h = Sha256::new();
                for chunk in sha_rx {
                    h.update(&chunk);
                    let _ = recycle.send(chunk);
                }
                h.finalize().into()
            })?;
        // If this spawn fails, `to_sha` is dropped and the sha256 thread ends.
        let md5 = std::thread::Builder::new()
            .name("md5".into())
            .spawn(move || {
                let mut h = Md5::new();
                let mut forward = Some(to_sha);
                for chunk in md5_rx {
                    h.update(&chunk);
                    if let Some(tx) = &forward
                        && tx.send(chunk).is_err()
                    {
                        // The sha256 thread died; finish() reports it.
                        forward = None;
                    }
                }
                h.finalize()
            })?;
        Ok(HashThreads {
            to_md5,
            recycled,
            allocated: 0,
            md5,
            sha256,
        })
    }

    /// An empty buffer: a returned one, a new one while fewer than
    /// [`HASH_BUFFERS`] exist, else waits for one.
    fn buffer(&mut self) -> Vec<u8> {
        let reuse = match self.recycled.try_recv() {
            Ok(b) => Some(b),
            Err(_) if self.allocated < HASH_BUFFERS => None,
            Err(_) => self.recycled.recv().ok(),
        };
        match reuse {
            Some(mut b) => {
                b.clear();
                b
            }
            None => {
                self.allocated += 1;
                Vec::with_capacity(HASH_CHUNK)
            }
        }
    }

    fn send(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        self.to_md5
            .send(chunk)
            .map_err(|_| io::Error::other("the md5 thread exited"))
    }

    fn finish(self) -> io::Result<([u8; 16], [u8; 32])> {
        drop(self.to_md5);
        let md5 = self.md5.join();
        let sha256 = self.sha256.join();
        match (md5, sha256) {
            (Ok(m), Ok(s)) => Ok((m, s)),
            _ => Err(io::Error::other("a hash thread panicked")),
        }
    }
}

enum Hashers {
    Threads(HashThreads),
    /// When threads cannot be started: hash on the calling thread.
    Inline(Box<Hasher>),
}

/// Hashes everything written through it: writes go to the inner writer on
/// the calling thread, and the written bytes, gathered into
/// [`HASH_CHUNK`] chunks, to an md5 and a sha256 thread.
pub struct HashTee<W: Write> {
    inner: W,
    chunk: Vec<u8>,
    hashers: Hashers,
    size: u64,
}

impl<W: Write> HashTee<W> {
    pub fn new(inner: W) -> Self {
        let hashers = match HashThreads::spawn() {
            Ok(t) => Hashers::Threads(t),
            Err(_) => Hashers::Inline(Box::default()),
        };
        HashTee {
            inner,
            chunk: Vec::new(),
            hashers,
            size: 0,
        }
    }

    /// Flushes and returns the inner writer with the digests.
    pub fn finish(mut self) -> io::Result<(W, Digests)> {
        self.inner.flush()?;
        if !self.chunk.is_empty() {
            self.hash_chunk()?;
        }
        let d = match self.hashers {
            Hashers::Threads(t) => {
                let (md5, sha256) = t.finish()?;
                Digests {
                    size: self.size,
                    md5: hex(&md5),
                    sha256: hex(&sha256),
                }
            }
            Hashers::Inline(h) => h.finish(),
        };
        Ok((self.inner, d))
    }

    /// Hands the gathered chunk to the hashers.
    fn hash_chunk(&mut self) -> io::Result<()> {
        match &mut self.hashers {
            Hashers::Threads(t) => {
                let next = t.buffer();
                let full = std::mem::replace(&mut self.chunk, next);
                t.send(full)
            }
            Hashers::Inline(h) => {
                h.update(&self.chunk);
                self.chunk.clear();
                Ok(())
            }
        }
    }
}

impl<W: Write> Write for HashTee<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.size += n as u64;
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            if self.chunk.capacity() == 0 {
                self.chunk.reserve_exact(HASH_CHUNK);
            }
            let k = rest.len().min(HASH_CHUNK - self.chunk.len());
            self.chunk.extend_from_slice(&rest[..k]);
            rest = &rest[k..];
            if self.chunk.len() == HASH_CHUNK {
                self.hash_chunk()?;
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_of_known_input() {
        let mut t = HashTee::new(Vec::new());
        t.write_all(b"abc").unwrap();
        let (v, d) = t.finish().unwrap();
        assert_eq!(v, b"abc");
        assert_eq!(d.size, 3);
        assert_eq!(d.md5, "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            d.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn digests_of_multi_chunk_inputs() {
        // One million 'a' in tar-sized writes (coalesced into chunks).
        let mut t = HashTee::new(Vec::new());
        for _ in 0..1_000_000 / 500 {
            t.write_all(&[b'a'; 500]).unwrap();
        }
        let (v, d) = t.finish().unwrap();
        assert_eq!(v.len(), 1_000_000);
        assert_eq!(d.size, 1_000_000);
        assert_eq!(d.md5, "7707d6ae4e027c70eea2a935c2296f21");
        assert_eq!(
            d.sha256,
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );

        // 3 MB + 1 in one write, then again in odd pieces: more chunks than
        // buffers, so buffers are recycled.
        let data: Vec<u8> = (0..3_000_001usize)
            .map(|i| ((i * 7 + i / 1000) % 256) as u8)
            .collect();
        let pieces: [&[usize]; 2] = [&[3_000_001], &[1, 262_143, 262_144, 262_145, 77]];
        for sizes in pieces {
            let mut t = HashTee::new(Vec::new());
            let mut rest = &data[..];
            for &n in sizes.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (a, b) = rest.split_at(n.min(rest.len()));
                t.write_all(a).unwrap();
                rest = b;
            }
            let (v, d) = t.finish().unwrap();
            assert_eq!(v, data);
            assert_eq!(d.size, 3_000_001);
            assert_eq!(d.md5, "8a5f9cc71b75c133fb9a864dfdfbaf09");
            assert_eq!(
                d.sha256,
                "1066ab228e69b2b2dc742cd68daacc670eff6d4865fd5a8db911f281f2684cc7"
            );
        }

        // Nothing written.
        let (_, d) = HashTee::new(Vec::new()).finish().unwrap();
        assert_eq!(d.md5, "d41d8cd98f00b204e9800998ecf8427e");
    }
}
