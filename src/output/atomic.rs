//! The artifact's destination on disk: a hidden temporary file, renamed to
//! its final name only when complete.
//!
//! [`AtomicFile`] writes under `.goldcap-<name>-XXXXXX.part` in the output
//! directory (mode 0600: archives hold `/etc/shadow`), writes back and
//! drops from the page cache as it goes (so the final fsync is short and
//! the artifact does not evict the source's cache), fsyncs, and renames to
//! the final name only when asked; dropping it removes the temporary. This
//! module must never leave a partial file under a final name.

use crate::util::StickyError;
use rustix::fs::{Advice, CWD, FlockOperation, Mode, OFlags, RenameFlags};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::num::NonZeroU64;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

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
        // Held while this process lives: a later run tells a temporary of
        // a live capture from one a killed run left (`remove_stale`).
        rustix::fs::flock(tmp.as_file(), FlockOperation::NonBlockingLockExclusive)?;
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
    pub fn final_name(&self) -> String {
        self.final_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
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
            let _ = rustix::fs::fadvise(
                self.out.get_ref(),
                from,
                NonZeroU64::new(started_before - from),
                Advice::DontNeed,
            );
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
    match rustix::fs::renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        // Filesystems without RENAME_NOREPLACE: link(2) also refuses to
        // replace.
        Err(rustix::io::Errno::INVAL) => {
            std::fs::hard_link(from, to)?;
            std::fs::remove_file(from)
        }
        Err(e) => Err(e.into()),
    }
}

/// Removes the temporaries of runs that were killed (`kill -9`, a power
/// cut) from `dir`: those no live process holds locked. A temporary of a
/// capture still running here is left alone. Returns the names removed and
/// their bytes. Never follows a symlink or removes anything but a regular
/// file it recognises.
pub fn remove_stale(dir: &Path) -> io::Result<Vec<(String, u64)>> {
    let dirfd = rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
    let mut removed = Vec::new();
    for entry in rustix::fs::Dir::read_from(&dirfd)? {
        let entry = entry?;
        let name = entry.file_name();
        // `.goldcap-<name>-XXXXXX.part`, as `create` names them.
        let n = name.to_bytes();
        if !(n.starts_with(b".goldcap-") && n.ends_with(b".part")) {
            continue;
        }
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let Ok(fd) = rustix::fs::openat(&dirfd, name, flags, Mode::empty()) else {
            continue;
        };
        let Ok(st) = rustix::fs::fstat(&fd) else {
            continue;
        };
        let regular = rustix::fs::FileType::from_raw_mode(st.st_mode).is_file();
        if !regular || rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).is_err() {
            continue;
        }
        // Locked by us now: nobody else is writing it.
        if rustix::fs::unlinkat(&dirfd, name, rustix::fs::AtFlags::empty()).is_ok() {
            removed.push((
                String::from_utf8_lossy(name.to_bytes()).into_owned(),
                st.st_size as u64,
            ));
        }
    }
    removed.sort();
    Ok(removed)
}

/// fsyncs a directory so renames in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let page = rustix::param::page_size() as u64;

        // The control: the same bytes written plainly stay cached. Where
        // they do not (or cachestat is missing), the check means nothing.
        let plain = d.path().join("plain");
        {
            let mut w = BufWriter::new(File::create(&plain).unwrap());
            for _ in 0..40 {
                w.write_all(&piece).unwrap();
            }
        }
        let measurable =
            match crate::source::fsx::cached_pages(&File::open(&plain).unwrap(), 0, total) {
                Ok(c) => c >= total / page * 9 / 10,
                Err(_) => false,
            };

        let mut f = AtomicFile::create(d.path(), "big.tar.zst").unwrap();
        for _ in 0..40 {
            f.write_all(&piece).unwrap();
        }
        let tmp = File::open(f.temp_path()).unwrap();
        if measurable {
            let cached = crate::source::fsx::cached_pages(&tmp, 0, total).unwrap();
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

    #[test]
    fn stale_temporaries_go_and_live_ones_stay() {
        let d = tempfile::tempdir().unwrap();
        let live = AtomicFile::create(d.path(), "a.tgz").unwrap();
        // One a killed run left: the same name pattern, nobody holds it.
        let stale = d.path().join(".goldcap-a.tgz-XyZ123.part");
        std::fs::write(&stale, b"12345").unwrap();
        std::fs::write(d.path().join("keep.part"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join(".goldcap-l.part")).unwrap();
        let removed = remove_stale(d.path()).unwrap();
        assert_eq!(removed, [(".goldcap-a.tgz-XyZ123.part".to_owned(), 5)]);
        assert!(
            live.temp_path().exists(),
            "a live run's temporary was removed"
        );
        assert!(d.path().join("keep.part").exists());
        assert!(std::fs::symlink_metadata(d.path().join(".goldcap-l.part")).is_ok());
    }
}
