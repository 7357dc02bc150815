//! The back of the pipeline: compressor → hash tee → output file, and
//! atomic publication of finished files.
//!
//! Last stages of walk → policy → tar writer → **compressor → hash → sink**.
//! Both compressors cut the tar stream into fixed blocks compressed in
//! parallel by one pool ([`crate::parblock`]), each block a self-contained
//! piece written in input order: a 1 MiB gzip member ([`crate::pgzip`];
//! libdeflate cannot chain blocks inside one member) or a 2 MiB zstd frame
//! ([`crate::pzstd`]). Either way the bytes depend on the input and the
//! level only, never on the thread count. md5 and sha256 are computed over
//! the compressed bytes as they are written (the artifact is never read
//! back), each on its own thread fed with 256 KiB chunks, together with its
//! size; the writes to the file stay on the calling thread. Every layer is
//! a concrete type with an explicit `finish()` that returns the inner
//! writer and any error — no `Box<dyn Write>`, no auto-finish on drop, so a
//! failed final flush (full disk) is an error, not a silently truncated
//! artifact; dropping a layer without `finish()` stops its threads and
//! never hangs.
//!
//! [`AtomicFile`] writes under a hidden temporary name in the output
//! directory (mode 0600: archives hold `/etc/shadow`), writes back and
//! drops from the page cache as it goes (so the final fsync is short and
//! the artifact does not evict the source's cache), fsyncs, and renames to
//! the final name only when asked; dropping it removes the temporary.
//! This module must never leave a partial file under a final name.

use crate::pgzip::ParGzEncoder;
use crate::pzstd::ZstdEncoder;
use crate::util::StickyError;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

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

/// md5, sha256 and size of a byte stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Digests {
    /// Bytes.
    pub size: u64,
    /// Lowercase hex md5 (what DRP image-builder records).
    pub md5: String,
    /// Lowercase hex sha256 (what DRP's files API reports).
    pub sha256: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

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
                h.finalize().into()
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
    Inline(Box<(Md5, Sha256)>),
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
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        let hashers = match HashThreads::spawn() {
            Ok(t) => Hashers::Threads(t),
            Err(_) => Hashers::Inline(Box::new((Md5::new(), Sha256::new()))),
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
        let (md5, sha256) = match self.hashers {
            Hashers::Threads(t) => t.finish()?,
            Hashers::Inline(h) => {
                let (m, s) = *h;
                (m.finalize().into(), s.finalize().into())
            }
        };
        let d = Digests {
            size: self.size,
            md5: hex(&md5),
            sha256: hex(&sha256),
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
                h.0.update(&self.chunk);
                h.1.update(&self.chunk);
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

/// Default compression threads: every core, at most this many (memory grows
/// with each zstd worker; more rarely pays on the disks fleets use).
pub const MAX_DEFAULT_THREADS: u32 = 4;

/// gzip or zstd over `W`.
pub enum Compressor<W: Write> {
    /// gzip: parallel 1 MiB members (see [`crate::pgzip`]).
    Gzip(ParGzEncoder<W>),
    /// zstd: parallel frames (see [`crate::pzstd`]).
    Zstd(ZstdEncoder<W>),
}

impl<W: Write> Compressor<W> {
    /// A compressor for `format` at `level` on `threads` workers. Both
    /// always run on the pool (at least one worker) with a fixed block
    /// size, so the output does not depend on the number of cores.
    pub fn new(inner: W, format: Format, level: i32, threads: u32) -> io::Result<Self> {
        Ok(match format {
            Format::Tgz => Compressor::Gzip(crate::pgzip::encoder(inner, level, threads)?),
            Format::Tzst => Compressor::Zstd(crate::pzstd::encoder(inner, level, threads)?),
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

/// A file being written under a hidden temporary name, published by
/// [`AtomicFile::persist`]. Write errors carry the final file name.
pub struct AtomicFile {
    tmp: Option<tempfile::NamedTempFile>,
    out: BufWriter<File>,
    final_path: PathBuf,
    /// Bytes accepted so far.
    written: u64,
    /// Bytes whose write-back has been started.
    writeback: u64,
    /// Bytes written back and dropped from the page cache.
    dropped: u64,
    /// Write-behind is on (until the filesystem refuses `sync_file_range`).
    behind: bool,
    /// The first error; every later call returns it again (a write-back
    /// error, once waited for, is not reported by a later fsync).
    failed: StickyError,
}

/// Write-back of the file is started every this many bytes, so the fsync
/// at the end waits for the last few MiB, not for the whole artifact.
const WRITEBACK_STEP: u64 = 16 << 20;

impl AtomicFile {
    /// Creates `.goldcap-<name>-XXXXXX.part` (mode 0600) in `dir`.
    pub fn create(dir: &Path, name: &str) -> io::Result<AtomicFile> {
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".goldcap-{name}-"))
            .suffix(".part")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .tempfile_in(dir)?;
        let out = BufWriter::with_capacity(1 << 20, tmp.as_file().try_clone()?);
        Ok(AtomicFile {
            tmp: Some(tmp),
            out,
            final_path: dir.join(name),
            written: 0,
            writeback: 0,
            dropped: 0,
            behind: true,
            failed: StickyError::default(),
        })
    }

    /// The name it will have.
    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// The temporary path (for messages and tests).
    pub fn temp_path(&self) -> &Path {
        self.tmp.as_ref().map_or(&self.final_path, |t| t.path())
    }

    fn err(&self, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("{}: {e}", self.final_path.display()))
    }

    /// Remembers the first error (with the file name) and returns it. An
    /// interrupted call took nothing and may be retried: not remembered.
    fn fail<T>(&mut self, r: io::Result<T>) -> io::Result<T> {
        r.map_err(|e| {
            let e = self.err(e);
            if e.kind() != io::ErrorKind::Interrupted {
                self.failed.record(&e);
            }
            e
        })
    }

    /// Flushes and fsyncs the data (still under the temporary name).
    pub fn sync(&mut self) -> io::Result<()> {
        self.failed.check()?;
        let r = self.out.flush();
        self.fail(r)?;
        let r = self.out.get_ref().sync_all();
        self.fail(r)
    }

    /// Renames to the final name. With `replace == false` an existing file
    /// is an error (`EEXIST`), checked atomically by the kernel.
    pub fn persist(mut self, replace: bool) -> io::Result<PathBuf> {
        self.sync()?;
        // Unwrap expectation: `tmp` is only taken here, and self is consumed.
        let tmp = self.tmp.take().expect("persist once");
        let (_file, tmp_path) = tmp.keep().map_err(|e| e.error)?;
        if let Err(e) = rename(&tmp_path, &self.final_path, replace) {
            let _ = std::fs::remove_file(&tmp_path);
            return Err(self.err(e));
        }
        Ok(self.final_path.clone())
    }
}

impl AtomicFile {
    /// Keeps the artifact out of the page cache as it is written: starts
    /// write-back of what reached the file since the last call, then waits
    /// for the write-back started by the calls before (at least
    /// [`WRITEBACK_STEP`] ago) and drops those pages.
    ///
    /// Why: a capture writes gigabytes it does not read again (a presigned
    /// PUT or a failed streamed upload reads the file back, then from
    /// disk). Left in the page cache they push out a live server's working
    /// set, and on the VMs fleets and CI run on, filling fresh page-cache
    /// pages is slow — writing a 1.8 GB artifact cost 0.5–6.8 s of system
    /// time buffered (depending on what the host had reclaimed), 0.8–1.0 s
    /// this way. The wait only holds the writer when the disk is slower
    /// than the compressed stream.
    ///
    /// Errors: whether the filesystem takes `sync_file_range` at all is
    /// decided by the call that only starts write-back (it reports no
    /// stored write error); if it refuses, write-behind is off and the data
    /// is made durable by the final fsync alone. Every error of a call
    /// that waits is returned: the kernel counts it as reported, so the
    /// final fsync would not report it again.
    fn write_behind(&mut self) -> io::Result<()> {
        let on_disk = self.written - self.out.buffer().len() as u64;
        if on_disk <= self.writeback {
            return Ok(());
        }
        let fd = self.out.get_ref().as_raw_fd();
        let started_before = self.writeback;
        match sync_range(fd, self.writeback, on_disk, libc::SYNC_FILE_RANGE_WRITE) {
            Ok(()) => {}
            Err(e) if refused(&e) => {
                self.behind = false;
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        self.writeback = on_disk;
        if started_before > self.dropped {
            sync_range(
                fd,
                self.dropped,
                started_before,
                libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER,
            )?;
            // Only clean pages are dropped, and only whole folios: one
            // that crosses `dropped` was left out last time, so the range
            // starts a step earlier (those pages are clean by now too).
            let from = self.dropped.saturating_sub(WRITEBACK_STEP);
            // Best effort: nothing to report.
            // SAFETY: posix_fadvise only reads its integer arguments.
            unsafe {
                libc::posix_fadvise(
                    fd,
                    from as libc::off_t,
                    (started_before - from) as libc::off_t,
                    libc::POSIX_FADV_DONTNEED,
                );
            }
            self.dropped = started_before;
        }
        Ok(())
    }
}

/// Whether `sync_file_range` failed because it cannot be used here (an
/// old kernel, a seccomp filter, a file that is not a regular one), not
/// because of the data.
fn refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSYS | libc::EPERM | libc::EINVAL | libc::ESPIPE | libc::EOPNOTSUPP)
    )
}

/// `sync_file_range(2)` of bytes `from..to` of `fd` (retried when a signal
/// interrupts it).
fn sync_range(fd: i32, from: u64, to: u64, flags: libc::c_uint) -> io::Result<()> {
    let (Ok(off), Ok(len)) = (i64::try_from(from), i64::try_from(to - from)) else {
        return Ok(());
    };
    loop {
        // SAFETY: sync_file_range only reads its integer arguments; `fd` is
        // an open descriptor owned by the caller.
        if unsafe { libc::sync_file_range(fd, off, len, flags) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

impl Write for AtomicFile {
    /// Write-behind runs before new bytes are taken, so an error never
    /// follows bytes already accepted; after an error every call fails.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.failed.check()?;
        if self.behind && self.written - self.writeback >= WRITEBACK_STEP {
            let r = self.write_behind();
            self.fail(r)?;
        }
        let r = self.out.write(buf);
        let n = self.fail(r)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.failed.check()?;
        let r = self.out.flush();
        self.fail(r)
    }
}

fn rename(from: &Path, to: &Path, replace: bool) -> io::Result<()> {
    if replace {
        return std::fs::rename(from, to);
    }
    let c_from = CString::new(from.as_os_str().as_bytes())?;
    let c_to = CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: both are valid NUL-terminated paths; renameat2 only reads them.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c_from.as_ptr(),
            libc::AT_FDCWD,
            c_to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    // Filesystems without RENAME_NOREPLACE: link(2) also refuses to replace.
    if e.raw_os_error() == Some(libc::EINVAL) {
        std::fs::hard_link(from, to)?;
        return std::fs::remove_file(from);
    }
    Err(e)
}

/// fsyncs a directory so renames in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

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

    /// Takes `ok` bytes, then fails.
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

    #[test]
    fn atomic_file_keeps_only_its_last_steps_in_the_page_cache() {
        use std::os::unix::fs::MetadataExt;
        // Under target/, on the disk the build is on (the system's temp
        // directory may be tmpfs, whose pages are the file).
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        std::fs::create_dir_all(&base).unwrap();
        let d = tempfile::tempdir_in(&base).unwrap();
        let piece: Vec<u8> = (0..(3 << 20) + 17).map(|i| (i % 251) as u8).collect();
        let total = 40 * piece.len() as u64;
        // SAFETY: sysconf only reads its argument.
        let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap();

        // The control: the same bytes written plainly stay cached. Where
        // they do not (or cachestat is missing), the check means nothing.
        let plain = d.path().join("plain");
        {
            let mut w = BufWriter::new(File::create(&plain).unwrap());
            for _ in 0..40 {
                w.write_all(&piece).unwrap();
            }
        }
        let measurable = match crate::fsx::cached_pages(&File::open(&plain).unwrap(), 0, total) {
            Ok(c) => c >= total / page * 9 / 10,
            Err(_) => false,
        };

        let mut f = AtomicFile::create(d.path(), "big.tar.zst").unwrap();
        for _ in 0..40 {
            f.write_all(&piece).unwrap();
        }
        let tmp = File::open(f.temp_path()).unwrap();
        if measurable {
            let cached = crate::fsx::cached_pages(&tmp, 0, total).unwrap();
            // The last two steps, the write buffer, and a folio per step
            // at most.
            let at_most = (2 * WRITEBACK_STEP + (1 << 20) + 8 * (2 << 20)) / page;
            assert!(
                cached <= at_most,
                "{cached} pages of {} cached, at most {at_most} expected",
                total / page
            );
        } else {
            eprintln!(
                "the page cache cannot be measured under {} (no cachestat, or plain writes are not cached): cache use not checked",
                base.display()
            );
        }
        let p = f.persist(false).unwrap();
        let back = std::fs::read(&p).unwrap();
        assert_eq!(back.len() as u64, total);
        assert_eq!(std::fs::metadata(&p).unwrap().size(), total);
        assert!(back.chunks(piece.len()).all(|c| c == &piece[..]));
    }

    #[test]
    fn refusals_of_sync_file_range_are_told_from_write_errors() {
        let cases = [
            (libc::ENOSYS, true),
            (libc::EPERM, true),
            (libc::EINVAL, true),
            (libc::ESPIPE, true),
            (libc::EOPNOTSUPP, true),
            (libc::EIO, false),
            (libc::ENOSPC, false),
            (libc::EDQUOT, false),
        ];
        for (errno, want) in cases {
            assert_eq!(
                refused(&io::Error::from_raw_os_error(errno)),
                want,
                "{errno}"
            );
        }
    }

    #[test]
    fn atomic_file_errors_stay() {
        let d = tempfile::tempdir().unwrap();
        let mut f = AtomicFile::create(d.path(), "a.tgz").unwrap();
        f.failed.record(&io::Error::new(
            io::ErrorKind::StorageFull,
            "a.tgz: disk full",
        ));
        for e in [
            f.write(b"x").unwrap_err(),
            f.flush().unwrap_err(),
            f.sync().unwrap_err(),
        ] {
            assert_eq!(e.kind(), io::ErrorKind::StorageFull, "{e}");
        }
        assert_eq!(f.written, 0, "nothing accepted after the error");
        assert!(f.persist(false).is_err());
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            0,
            "nothing published"
        );
    }

    #[test]
    fn atomic_file_publishes_only_on_persist() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        {
            let mut f = AtomicFile::create(d.path(), "a.tgz").unwrap();
            f.write_all(b"x").unwrap();
            assert_eq!(
                std::fs::metadata(f.temp_path())
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o777,
                0o600
            );
        } // dropped: removed
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);

        let mut f = AtomicFile::create(d.path(), "a.tgz").unwrap();
        f.write_all(b"x").unwrap();
        let p = f.persist(false).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"x");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );

        let mut g = AtomicFile::create(d.path(), "a.tgz").unwrap();
        g.write_all(b"y").unwrap();
        let e = g.persist(false).unwrap_err();
        assert!(e.to_string().contains("a.tgz"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"x", "existing file kept");
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "temp removed"
        );

        let mut h = AtomicFile::create(d.path(), "a.tgz").unwrap();
        h.write_all(b"z").unwrap();
        h.persist(true).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"z");
    }
}
