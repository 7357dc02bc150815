//! The back of the pipeline: compressor → hash tee → output file, and
//! atomic publication of finished files.
//!
//! Last stages of walk → policy → tar writer → **compressor → hash → sink**.
//! md5 and sha256 are computed over the compressed bytes as they are
//! written (the artifact is never read back), together with its size. Every
//! layer is a concrete type with an explicit `finish()` that returns the
//! inner writer and any error — no `Box<dyn Write>`, no auto-finish on drop,
//! so a failed final flush (full disk) is an error, not a silently truncated
//! artifact.
//!
//! [`AtomicFile`] writes under a hidden temporary name in the output
//! directory (mode 0600: archives hold `/etc/shadow`), fsyncs, and renames
//! to the final name only when asked; dropping it removes the temporary.
//! This module must never leave a partial file under a final name.

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

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

/// Hashes everything written through it.
pub struct HashTee<W: Write> {
    inner: W,
    md5: Md5,
    sha256: Sha256,
    size: u64,
}

impl<W: Write> HashTee<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashTee {
            inner,
            md5: Md5::new(),
            sha256: Sha256::new(),
            size: 0,
        }
    }

    /// Flushes and returns the inner writer with the digests.
    pub fn finish(mut self) -> io::Result<(W, Digests)> {
        self.inner.flush()?;
        let d = Digests {
            size: self.size,
            md5: hex(&self.md5.finalize()),
            sha256: hex(&self.sha256.finalize()),
        };
        Ok((self.inner, d))
    }
}

impl<W: Write> Write for HashTee<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.md5.update(&buf[..n]);
        self.sha256.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// zstd's multithreaded job size. Memory is a few jobs per worker (the
/// default, 4 × the window, used 115 MB with two workers; 4 MiB uses 62 MB
/// for about 1 % more output). Output depends on it, not on the number of
/// workers, so it is fixed.
pub const ZSTD_JOB_SIZE: u32 = 4 << 20;

/// Default compression threads: every core, at most this many (memory grows
/// with each zstd worker; more rarely pays on the disks fleets use).
pub const MAX_DEFAULT_THREADS: u32 = 4;

/// gzip or zstd over `W`.
pub enum Compressor<W: Write> {
    /// gzip.
    Gzip(flate2::write::GzEncoder<W>),
    /// zstd, multithreaded.
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Compressor<W> {
    /// A compressor for `format` at `level`. zstd always runs its
    /// multithreaded mode (at least one worker) so its output does not
    /// depend on the number of cores.
    pub fn new(inner: W, format: Format, level: i32, threads: u32) -> io::Result<Self> {
        Ok(match format {
            Format::Tgz => {
                let level = flate2::Compression::new(level.clamp(1, 9) as u32);
                // A fixed header (no name, mtime 0) keeps output deterministic.
                Compressor::Gzip(flate2::GzBuilder::new().write(inner, level))
            }
            Format::Tzst => {
                let mut enc = zstd::stream::write::Encoder::new(inner, level)?;
                enc.multithread(threads.max(1))?;
                enc.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB_SIZE))?;
                enc.include_checksum(true)?;
                Compressor::Zstd(enc)
            }
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
}

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

    /// Flushes and fsyncs the data (still under the temporary name).
    pub fn sync(&mut self) -> io::Result<()> {
        self.out.flush().map_err(|e| self.err(e))?;
        self.out.get_ref().sync_all().map_err(|e| self.err(e))
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

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf).map_err(|e| self.err(e))
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush().map_err(|e| self.err(e))
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
    fn compressors_round_trip_and_are_deterministic() {
        let data: Vec<u8> = (0..200_000u32)
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
            let mut back = Vec::new();
            match format {
                Format::Tgz => flate2::read::GzDecoder::new(&a[..])
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
