//! File bodies: the bytes of a regular file, exactly as many as its header
//! announces, read from the page cache or straight from the disk.
//!
//! Part of the tar writer. Data is read in [`BUF_SIZE`] pieces into one
//! reusable, page-aligned buffer, whatever the file size. A large file the
//! page cache does not hold is read with `O_DIRECT` (see
//! [`crate::source::prefetch`] for why), falling back to ordinary reads
//! where the filesystem refuses it or an unaligned piece remains. A file
//! that shrinks is padded with zeros, one that grows is cut at the
//! announced size, a read error is zero-filled — each a warning, never a
//! corrupt archive. Sparse files are stored as GNU PAX 1.0 sparse entries
//! ([`super::sparse`]); their holes are never read. This module must never
//! write to the source.

use super::header::{HeaderBuilder, Meta};
use super::xattrs::XSource;
use super::{BUF_SIZE, Ctx, Kind, TarWriter, meta_of, sparse, sparse_name, write_err};
use crate::entry::{SourceEntry, Stat};
use crate::report::WarningKind;
use crate::report::error::Error;
use crate::source::fsx;
use crate::source::prefetch::{ColdReads, DIRECT_MIN};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use tar::EntryType;

/// What the first read of a range found in the page cache.
enum FirstRead {
    /// This many bytes (more than 0), read.
    Cached(usize),
    /// Nothing of the range is cached (found without a read that starts
    /// read-ahead): worth a direct read.
    Uncached,
    /// Read it the ordinary way: the read would have waited for the disk
    /// (and has started read-ahead), or nobody can tell.
    Ordinary,
}

/// Where a regular file's data is.
enum Layout {
    /// All of it, from byte 0.
    Dense,
    /// The data segments `(offset, length)` of a sparse file, and the PAX
    /// 1.0 map block that goes before them.
    Sparse { segs: Vec<(u64, u64)>, map: Vec<u8> },
}

impl Layout {
    /// Bytes of the entry's body in the archive.
    fn body_len(&self, size: u64) -> u64 {
        match self {
            Layout::Dense => size,
            Layout::Sparse { segs, map } => {
                map.len() as u64 + segs.iter().map(|s| s.1).sum::<u64>()
            }
        }
    }
}

/// What went wrong while a body was read: bytes zero-filled because the
/// file ended early, and the first read error (its offset; zero-filled too).
#[derive(Default)]
struct ReadTrouble {
    short: u64,
    error: Option<(u64, io::Error)>,
}

impl<W: Write> TarWriter<W> {
    /// Reports to `cold` each file whose first read would have waited for
    /// the disk (see [`crate::source::prefetch`]).
    pub fn set_cold_reads(&mut self, cold: ColdReads) {
        self.cold = Some(cold);
    }

    /// Writes an open regular file: header from its `fstat`, body streamed
    /// (sparse where it has holes), size kept exact whatever happens to it.
    pub(super) fn write_file(
        &mut self,
        e: &SourceEntry,
        name: Vec<u8>,
        file: &File,
        before: &Stat,
        same_inode: bool,
        ctx: &mut Ctx<'_, '_>,
    ) -> Result<Option<Kind>, Error> {
        let size = before.size;
        let segs = if size > 0 && before.blocks.saturating_mul(512) < size {
            sparse::data_segments(file, size).unwrap_or(None)
        } else {
            None
        };
        let layout = match segs {
            None => Layout::Dense,
            Some(segs) => Layout::Sparse {
                map: sparse::map_block(&segs, size),
                segs,
            },
        };
        self.file_header(e, &name, file, before, &layout, ctx)?;
        crate::testhook::pause("read", &e.rel);
        let trouble = self.file_body(file, size, &layout, ctx)?;
        check_read(e, file, before, same_inode, trouble, ctx);
        // Later names of this inode link to this body — only if it is the
        // inode the walk saw under them.
        if same_inode {
            self.register_link(before, name);
        }
        Ok(Some(Kind::File {
            sparse: matches!(layout, Layout::Sparse { .. }),
        }))
    }

    /// The header of a regular file (a GNU PAX 1.0 sparse one for a sparse
    /// layout), with its xattrs.
    fn file_header(
        &mut self,
        e: &SourceEntry,
        name: &[u8],
        file: &File,
        before: &Stat,
        layout: &Layout,
        ctx: &mut Ctx<'_, '_>,
    ) -> Result<(), Error> {
        let size = before.size;
        let meta: Meta = meta_of(before);
        // The size first: over 8 GiB it is a PAX record too, and records
        // are written in the order they are added.
        let mut b = match layout {
            Layout::Dense => {
                let mut b = HeaderBuilder::new(EntryType::Regular, name, &meta);
                b.set_size(size);
                b
            }
            Layout::Sparse { .. } => {
                let mut b = HeaderBuilder::new(EntryType::Regular, &sparse_name(name), &meta);
                b.set_size(layout.body_len(size));
                b.push("GNU.sparse.major", "1");
                b.push("GNU.sparse.minor", "0");
                b.push("GNU.sparse.name", name.to_vec());
                b.push("GNU.sparse.realsize", size.to_string());
                b
            }
        };
        self.add_xattrs(&mut b, XSource::Fd(file), &e.rel, ctx);
        self.emit(b, &meta).map_err(write_err)
    }

    /// The body of a regular file of `size` bytes: its data (after the map
    /// of a sparse one), padded to the block.
    fn file_body(
        &mut self,
        file: &File,
        size: u64,
        layout: &Layout,
        ctx: &mut Ctx<'_, '_>,
    ) -> Result<ReadTrouble, Error> {
        let mut trouble = ReadTrouble::default();
        let mut copy = |w: &mut Self, off: u64, len: u64| -> Result<(), Error> {
            let (short, err) = w.copy_range(file, off, len, ctx)?;
            trouble.short += short;
            if trouble.error.is_none() {
                trouble.error = err;
            }
            Ok(())
        };
        match layout {
            Layout::Dense => {
                self.begin_body();
                copy(self, 0, size)?;
            }
            Layout::Sparse { segs, map } => {
                self.put(map).map_err(write_err)?;
                self.begin_body();
                for &(off, len) in segs {
                    copy(self, off, len)?;
                }
            }
        }
        self.end_body();
        self.pad(layout.body_len(size)).map_err(write_err)?;
        Ok(trouble)
    }

    /// The first read (`want` bytes at `off`) of a range of `len` bytes,
    /// from the page cache alone when someone listens for cold reads (a
    /// wait for the disk, or a partly cached start, is reported to them). A
    /// range that may be read with `O_DIRECT` is first checked with
    /// [`Self::is_cold`], which starts no read-ahead (or a few pages of it)
    /// into the cache the direct read then bypasses; only a range found
    /// wholly uncached that way is read direct.
    fn first_read(&mut self, file: &File, want: usize, off: u64, len: u64) -> FirstRead {
        let Some(cold) = self.cold.clone() else {
            return FirstRead::Ordinary;
        };
        if len >= DIRECT_MIN && cold.direct() && self.is_cold(file, off, want) {
            cold.note();
            return FirstRead::Uncached;
        }
        match fsx::read_at_cached(file, &mut self.buf()[..want], off) {
            Ok(n) if n > 0 => {
                if n < want {
                    cold.note();
                }
                FirstRead::Cached(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                cold.note();
                FirstRead::Ordinary
            }
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                cold.cannot_tell();
                self.cold = None;
                FirstRead::Ordinary
            }
            _ => FirstRead::Ordinary,
        }
    }

    /// Whether none of `want` bytes at `off` is in the page cache, asked
    /// with `cachestat(2)`, or where the kernel lacks it with a one-byte
    /// `RWF_NOWAIT` read (a miss then starts read-ahead of a few pages, not
    /// the megabytes a 1 MiB probe would).
    fn is_cold(&mut self, file: &File, off: u64, want: usize) -> bool {
        if self.cachestat {
            match fsx::cached_pages(file, off, want as u64) {
                Ok(pages) => return pages == 0,
                Err(e) if e.kind() == io::ErrorKind::Unsupported => self.cachestat = false,
                Err(_) => {}
            }
        }
        matches!(fsx::read_at_cached(file, &mut self.buf()[..1], off),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Switches `file` to `O_DIRECT` for a range at `off` that
    /// [`Self::first_read`] found uncached, if the offset allows; whether it
    /// did.
    fn start_direct(&mut self, file: &File, off: u64) -> bool {
        if !off.is_multiple_of(fsx::DIRECT_ALIGN as u64) {
            return false;
        }
        let refused = fsx::set_direct(file, true).is_err();
        if let (true, Some(cold)) = (refused, &self.cold) {
            cold.direct_refused();
        }
        !refused
    }

    /// One direct read of up to `want` bytes at `off` (aligned): the length
    /// asked of the kernel is rounded up to [`fsx::DIRECT_ALIGN`] and what
    /// comes beyond `want` is not used.
    fn read_direct(&mut self, file: &File, want: usize, off: u64) -> io::Result<usize> {
        let ask = want.next_multiple_of(fsx::DIRECT_ALIGN);
        let n = file.read_at(&mut self.buf()[..ask], off)?;
        Ok(n.min(want))
    }

    /// Copies `len` bytes at `off` from `file` into the stream, always
    /// writing exactly `len` bytes. Returns how many had to be zero-filled
    /// because the file ended early, and the first read error (zero-filled
    /// too).
    fn copy_range(
        &mut self,
        file: &File,
        off: u64,
        len: u64,
        ctx: &mut Ctx<'_, '_>,
    ) -> Result<(u64, Option<(u64, io::Error)>), Error> {
        let mut direct = false;
        let r = self.copy_range_with(file, off, len, ctx, &mut direct);
        if direct {
            // Back to ordinary reads for the rest of the file; the
            // descriptor is closed soon anyway.
            let _ = fsx::set_direct(file, false);
        }
        r
    }

    /// [`Self::copy_range`]; `direct` says whether `file` is in `O_DIRECT`
    /// mode.
    fn copy_range_with(
        &mut self,
        file: &File,
        off: u64,
        len: u64,
        ctx: &mut Ctx<'_, '_>,
        direct: &mut bool,
    ) -> Result<(u64, Option<(u64, io::Error)>), Error> {
        let mut done = 0u64;
        // The first read is tried once per range: a failed direct read is
        // retried the ordinary way, never direct again.
        let mut first = true;
        let mut counted = false;
        while done < len {
            ctx.cancel.check()?;
            let want = (len - done).min(BUF_SIZE as u64) as usize;
            let at = off + done;
            let mut got = None;
            if std::mem::take(&mut first) {
                match self.first_read(file, want, at, len) {
                    FirstRead::Cached(n) => got = Some(Ok(n)),
                    FirstRead::Uncached => *direct = self.start_direct(file, at),
                    FirstRead::Ordinary => {}
                }
            }
            let read = match got {
                Some(r) => r,
                None if *direct => self.read_direct(file, want, at),
                None => file.read_at(&mut self.buf()[..want], at),
            };
            let n = match read {
                Ok(0) => {
                    self.zeros(len - done).map_err(write_err)?;
                    return Ok((len - done, None));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if *direct => {
                    // Read this piece again the ordinary way: a filesystem
                    // may take the flag and refuse the read (EINVAL), and a
                    // real read error is then reported as usual.
                    *direct = false;
                    let _ = fsx::set_direct(file, false);
                    if let (Some(libc::EINVAL), Some(cold)) = (e.raw_os_error(), &self.cold) {
                        cold.direct_refused();
                    }
                    continue;
                }
                Err(e) => {
                    self.zeros(len - done).map_err(write_err)?;
                    return Ok((0, Some((at, e))));
                }
            };
            if *direct && !std::mem::replace(&mut counted, true) {
                self.direct_reads += 1;
            }
            if *direct && !(at + n as u64).is_multiple_of(fsx::DIRECT_ALIGN as u64) {
                // A short read left an unaligned offset: the rest, if any,
                // is read the ordinary way.
                *direct = false;
                let _ = fsx::set_direct(file, false);
            }
            let start = self.buf_start;
            let data = &self.buf[start..start + n];
            self.out.write_all(data).map_err(write_err)?;
            if let Some((h, len)) = &mut self.body {
                sha2::Digest::update(h, data);
                *len += n as u64;
            }
            self.written += n as u64;
            done += n as u64;
            ctx.report.stats.content_bytes += n as u64;
            ctx.ui.add_bytes(n as u64);
        }
        Ok((0, None))
    }
}

/// Warns about a file that could not be read in full, or that changed
/// while it was read (size, mtime, ctime against `before`); a file that
/// was already replaced when opened (`!same_inode`) was warned about then.
fn check_read(
    e: &SourceEntry,
    file: &File,
    before: &Stat,
    same_inode: bool,
    trouble: ReadTrouble,
    ctx: &mut Ctx<'_, '_>,
) {
    let size = before.size;
    let mut changed = !same_inode;
    if let Some((off, err)) = trouble.error {
        let why = crate::util::io_reason(&err);
        ctx.report.warn(
            &e.rel,
            WarningKind::Unreadable,
            format!("read error at byte {off}: {why}; the rest was archived as zeros"),
        );
        changed = true;
    } else if trouble.short > 0 {
        let short = trouble.short;
        ctx.report.warn(&e.rel, WarningKind::Shrank, format!("shrank by {short} bytes while being read; archived padded with zeros to {size} bytes"));
        changed = true;
    }
    let after = fsx::fstat(file).ok();
    if !changed && after.is_some_and(|a| a.size > size) {
        ctx.report.warn(
            &e.rel,
            WarningKind::Grew,
            format!("grew while being read; archived its first {size} bytes"),
        );
        changed = true;
    }
    let same = |a: &Stat| {
        (a.mtime, a.mtime_nsec, a.ctime, a.ctime_nsec)
            == (
                before.mtime,
                before.mtime_nsec,
                before.ctime,
                before.ctime_nsec,
            )
    };
    if !changed && !after.as_ref().is_some_and(same) {
        ctx.report
            .warn(&e.rel, WarningKind::Changed, "file changed as we read it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::Owners;
    use crate::report::Report;
    use crate::report::ui::Ui;
    use crate::signals::Cancel;

    /// The PAX records of a header a 9 GiB regular file gets (its size does
    /// not fit ustar), in the order written.
    fn pax_keys(layout: Layout) -> Vec<String> {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("big");
        std::fs::write(&path, b"x").unwrap();
        let file = File::open(&path).unwrap();
        let mut before = fsx::fstat(&file).unwrap();
        before.size = 9 << 30;
        before.mtime_nsec = 0;
        let e = SourceEntry {
            abs: path,
            rel: b"big".to_vec(),
            stat: before,
            parent: None,
            name: std::ffi::CString::new("big").unwrap(),
        };
        let ui = Ui::new(-1, false);
        let mut report = Report::new(&ui);
        let mut ctx = Ctx {
            report: &mut report,
            cancel: &Cancel::never(),
            ui: &ui,
        };
        let mut w = TarWriter::new(Vec::new(), Owners::default());
        w.file_header(&e, b"./big", &file, &before, &layout, &mut ctx)
            .unwrap();
        let out = w.finish().unwrap();
        let body = &out[512..];
        let end = body.iter().position(|&b| b == 0).unwrap();
        String::from_utf8_lossy(&body[..end])
            .lines()
            .filter_map(|l| {
                l.split_once(' ')?
                    .1
                    .split_once('=')
                    .map(|(k, _)| k.to_owned())
            })
            .filter(|k| !k.starts_with("SCHILY.") && !k.starts_with("RHT."))
            .collect()
    }

    #[test]
    fn the_size_record_comes_first() {
        // The order is part of the bytes: byte-identical output for the
        // same tree depends on it.
        assert_eq!(pax_keys(Layout::Dense), ["size"]);
        let segs = vec![(0, 9 << 30)];
        let map = sparse::map_block(&segs, 9 << 30);
        assert_eq!(
            pax_keys(Layout::Sparse { segs, map }),
            [
                "size",
                "GNU.sparse.major",
                "GNU.sparse.minor",
                "GNU.sparse.name",
                "GNU.sparse.realsize"
            ]
        );
    }
}
