//! The tar writer: one source entry in, ustar + PAX blocks out, with every
//! piece of metadata GNU tar and bsdtar restore.
//!
//! The stage after the policy; its output goes to the compressor. The
//! `tar` crate builds ustar header blocks ([`header`]); its own
//! `append_path*` helpers are never used on a root filesystem (they drop
//! nanoseconds, hardlinks, device names and ACLs). Per entry:
//!
//! * regular files are opened relative to their directory's descriptor
//!   with `O_NOFOLLOW|O_NONBLOCK|O_NOATIME` ([`crate::source::fsx`]) and the
//!   header is taken from `fstat` of the open file, so header and body
//!   describe the same inode and reading does not touch the source's
//!   atimes; the body is exactly the size the header announces ([`body`]);
//! * hard links are one body and link entries after it, keyed by
//!   `(st_dev, st_ino)`; an inode leaves the table once all its links are
//!   seen, so it holds only groups still open (the only state that grows
//!   with the file count);
//! * sparse files are GNU PAX 1.0 sparse entries ([`sparse`]);
//! * xattrs, ACLs and SELinux labels are PAX records ([`xattrs`], [`acl`]);
//! * owner names come from the root's own databases ([`owners`]);
//! * a file the identity scrub changes is written as the scrub decides
//!   ([`scrubbed`]).
//!
//! This module must never write to the source, follow a symlink, or open a
//! device or FIFO.

pub mod acl;
mod body;
pub mod header;
mod owners;
mod scrubbed;
pub mod sparse;
mod xattrs;

pub use owners::Owners;

use crate::entry::{FileKind, SourceEntry, Stat, SynthKind, Synthetic};
use crate::report::error::Error;
use crate::report::ui::Ui;
use crate::report::{Report, WarningKind};
use crate::signals::Cancel;
use crate::source::fsx;
use crate::source::prefetch::ColdReads;
use header::{HeaderBuilder, Meta, encode_pax, pax_header, split_dev};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use tar::EntryType;
use xattrs::XSource;

const BUF_SIZE: usize = 1 << 20;
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// What an entry became in the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    /// A regular file with its body.
    File {
        /// Stored as a sparse file.
        sparse: bool,
    },
    /// A hard link to an earlier entry.
    Hardlink,
    Symlink,
    Char,
    Block,
    Fifo,
}

/// What the writer needs from the run for each entry.
pub struct Ctx<'a, 'u> {
    /// Where warnings and counts go.
    pub report: &'a mut Report<'u>,
    /// Checked between chunks.
    pub cancel: &'a Cancel,
    pub ui: &'a Ui,
}

/// Converts the metadata goldcap stores.
pub fn meta_of(s: &Stat) -> Meta {
    Meta {
        mode: s.perm,
        uid: u64::from(s.uid),
        gid: u64::from(s.gid),
        mtime: s.mtime,
        mtime_nsec: s.mtime_nsec,
    }
}

/// The archive name of a root-relative path: `./rel`, `./rel/` for a
/// directory, `./` for the root.
pub fn archive_name(rel: &[u8], is_dir: bool) -> Vec<u8> {
    let mut n = Vec::with_capacity(rel.len() + 3);
    n.extend_from_slice(b"./");
    n.extend_from_slice(rel);
    if is_dir && !rel.is_empty() {
        n.push(b'/');
    }
    n
}

/// GNU's name for the header of a PAX 1.0 sparse entry:
/// `dir/GNUSparseFile.0/base` (the real name is in `GNU.sparse.name`).
fn sparse_name(name: &[u8]) -> Vec<u8> {
    let cut = name.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
    [&name[..cut], b"GNUSparseFile.0/", &name[cut..]].concat()
}

fn write_err(e: io::Error) -> Error {
    Error::Failed(anyhow::Error::new(e).context("cannot write the archive"))
}

/// The first archived name of a multiply-linked inode, and how many of its
/// links are still to come.
struct LinkGroup {
    name: Vec<u8>,
    remaining: u64,
}

/// The tar stream writer.
pub struct TarWriter<W: Write> {
    out: W,
    written: u64,
    links: HashMap<(u64, u64), LinkGroup>,
    /// Inodes the scrub left out: their other names are left out too.
    dropped: HashSet<(u64, u64)>,
    /// Multiply-linked inodes the scrub acts on ([`crate::select::scrub::Plan::prescan`]).
    scrubbed: HashMap<(u64, u64), bool>,
    owners: Owners,
    /// [`BUF_SIZE`] bytes from `buf_start` on are the read buffer, aligned
    /// for direct reads.
    buf: Vec<u8>,
    buf_start: usize,
    /// Where reads that had to wait for the disk are reported (for the
    /// read-ahead), if anywhere.
    cold: Option<ColdReads>,
    /// File ranges (a file, or a data segment of a sparse one) from which a
    /// direct read returned data so far.
    direct_reads: u64,
    /// `cachestat(2)` works here (until it fails once).
    cachestat: bool,
    /// Attributes are read through `/proc/self/fd` (see
    /// [`xattrs::attr_path`]).
    proc_fd: bool,
    /// The sha256 and length of the body being written, while one is.
    body: Option<(sha2::Sha256, u64)>,
    /// What the last entry's body and link were, for the MANIFEST.
    last: Written,
}

/// What the tar writer wrote for one entry beyond its metadata: the
/// body's sha256 and length (regular files; a sparse file's data
/// segments), and a link target.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Written {
    pub body: Option<([u8; 32], u64)>,
    pub link: Option<Vec<u8>>,
}

impl<W: Write> TarWriter<W> {
    /// A writer over `out`, naming owners from `owners`.
    pub fn new(out: W, owners: Owners) -> Self {
        let mut w = TarWriter {
            out,
            written: 0,
            links: HashMap::new(),
            dropped: HashSet::new(),
            scrubbed: HashMap::new(),
            owners,
            buf: vec![0; BUF_SIZE + fsx::DIRECT_ALIGN],
            buf_start: 0,
            cold: None,
            direct_reads: 0,
            cachestat: true,
            body: None,
            last: Written::default(),
            proc_fd: xattrs::proc_fd_available(),
        };
        // Were the buffer ever not alignable, direct reads would fail with
        // EINVAL and fall back to ordinary ones.
        w.buf_start = w
            .buf
            .as_ptr()
            .align_offset(fsx::DIRECT_ALIGN)
            .min(fsx::DIRECT_ALIGN);
        w
    }

    /// The read buffer: [`BUF_SIZE`] bytes, aligned for direct reads.
    fn buf(&mut self) -> &mut [u8] {
        &mut self.buf[self.buf_start..self.buf_start + BUF_SIZE]
    }

    /// How many file ranges (files, or data segments of sparse ones) were
    /// read with `O_DIRECT`.
    pub fn direct_reads(&self) -> u64 {
        self.direct_reads
    }

    /// Bytes of tar stream written so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Writes the end-of-archive marker and returns the inner writer. Must
    /// be called: nothing is written on drop.
    pub fn finish(mut self) -> io::Result<W> {
        self.put(&[0; 1024])?;
        Ok(self.out)
    }

    fn put(&mut self, data: &[u8]) -> io::Result<()> {
        self.out.write_all(data)?;
        self.written += data.len() as u64;
        if let Some((h, n)) = &mut self.body {
            sha2::Digest::update(h, data);
            *n += data.len() as u64;
        }
        Ok(())
    }

    /// From here on, what is written is an entry's body (hashed).
    fn begin_body(&mut self) {
        self.body = Some((sha2::Digest::new(), 0));
    }

    /// The body is complete: its digest is the last entry's.
    fn end_body(&mut self) {
        if let Some((h, n)) = self.body.take() {
            self.last.body = Some((sha2::Digest::finalize(h).into(), n));
        }
    }

    /// What was written for the entry appended last (taken: the next
    /// entry starts empty).
    pub fn take_written(&mut self) -> Written {
        std::mem::take(&mut self.last)
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        let rem = (len % 512) as usize;
        if rem != 0 {
            self.put(&ZEROS[..512 - rem])?;
        }
        Ok(())
    }

    fn zeros(&mut self, mut n: u64) -> io::Result<()> {
        while n > 0 {
            let k = n.min(ZEROS.len() as u64) as usize;
            self.put(&ZEROS[..k])?;
            n -= k as u64;
        }
        Ok(())
    }

    /// Writes the PAX header (if any) and the ustar header.
    fn emit(&mut self, mut b: HeaderBuilder, meta: &Meta) -> io::Result<()> {
        let names = (
            self.owners.user(meta.uid).map(str::to_owned),
            self.owners.group(meta.gid).map(str::to_owned),
        );
        b.set_owner_names(names.0.as_deref(), names.1.as_deref());
        let (header, pax) = b.finish();
        if !pax.is_empty() {
            let body = encode_pax(&pax);
            self.put(pax_header(body.len() as u64).as_bytes())?;
            self.put(&body)?;
            self.pad(body.len() as u64)?;
        }
        self.put(header.as_bytes())
    }

    /// Appends an entry goldcap adds (`curtin/`, the SSH regenerator unit).
    pub fn append_synthetic(&mut self, s: &Synthetic) -> Result<Kind, Error> {
        let meta = Meta {
            mode: s.mode,
            uid: u64::from(s.uid),
            gid: u64::from(s.gid),
            mtime: s.mtime,
            mtime_nsec: 0,
        };
        let (kind, b, body): (Kind, HeaderBuilder, &[u8]) = match &s.kind {
            SynthKind::Dir => (
                Kind::Dir,
                HeaderBuilder::new(EntryType::Directory, &archive_name(&s.rel, true), &meta),
                &[],
            ),
            SynthKind::File(content) => {
                let mut b =
                    HeaderBuilder::new(EntryType::Regular, &archive_name(&s.rel, false), &meta);
                b.set_size(content.len() as u64);
                (Kind::File { sparse: false }, b, content)
            }
            SynthKind::Symlink(target) => {
                let mut b =
                    HeaderBuilder::new(EntryType::Symlink, &archive_name(&s.rel, false), &meta);
                b.set_link(target);
                (Kind::Symlink, b, &[])
            }
        };
        self.emit(b, &meta).map_err(write_err)?;
        if let SynthKind::File(_) = &s.kind {
            self.begin_body();
            self.put(body).map_err(write_err)?;
            self.end_body();
            self.pad(body.len() as u64).map_err(write_err)?;
        }
        if let SynthKind::Symlink(target) = &s.kind {
            self.last.link = Some(target.clone());
        }
        Ok(kind)
    }

    /// Appends one source entry. `Ok(None)` when it was skipped with a
    /// warning (vanished, unreadable); `Err` only for a failed write or an
    /// interruption.
    pub fn append(
        &mut self,
        e: &SourceEntry,
        ctx: &mut Ctx<'_, '_>,
    ) -> Result<Option<Kind>, Error> {
        let st = &e.stat;
        if st.kind == FileKind::File {
            return self.append_file(e, ctx);
        }
        let meta = meta_of(st);
        let name = archive_name(&e.rel, st.is_dir());
        if !st.is_dir() && self.append_hardlink(st, &name, &meta)? {
            return Ok(Some(Kind::Hardlink));
        }
        if self.is_dropped_secret(st, &e.rel, true, ctx) {
            return Ok(None);
        }
        let (kind, mut b) = match st.kind {
            FileKind::Dir => (
                Kind::Dir,
                HeaderBuilder::new(EntryType::Directory, &name, &meta),
            ),
            FileKind::Symlink => {
                let Some(parent) = &e.parent else {
                    return Ok(None);
                };
                let target = match fsx::readlink_at(parent.as_fd(), &e.name) {
                    Ok(t) => t,
                    Err(err) => {
                        self.skipped(e, err, ctx);
                        return Ok(None);
                    }
                };
                let mut b = HeaderBuilder::new(EntryType::Symlink, &name, &meta);
                b.set_link(&target);
                self.last.link = Some(target.clone());
                (Kind::Symlink, b)
            }
            FileKind::Char | FileKind::Block => {
                let (kind, et) = if st.kind == FileKind::Char {
                    (Kind::Char, EntryType::Char)
                } else {
                    (Kind::Block, EntryType::Block)
                };
                let mut b = HeaderBuilder::new(et, &name, &meta);
                let (major, minor) = split_dev(st.rdev);
                b.set_device(major, minor);
                (kind, b)
            }
            FileKind::Fifo => (
                Kind::Fifo,
                HeaderBuilder::new(EntryType::Fifo, &name, &meta),
            ),
            // Sockets are dropped by the policy; anything else is unknown.
            _ => {
                ctx.report.warn(
                    &e.rel,
                    WarningKind::Unreadable,
                    "unsupported file type; not archived",
                );
                return Ok(None);
            }
        };
        crate::testhook::pause("attrs", &e.rel);
        let attrs = xattrs::attr_path(e, self.proc_fd);
        self.add_xattrs(&mut b, XSource::Path(&attrs), &e.rel, ctx);
        self.emit(b, &meta).map_err(write_err)?;
        if !st.is_dir() {
            self.register_link(st, name);
        }
        Ok(Some(kind))
    }

    /// Writes a link entry when an earlier entry holds the body.
    fn append_hardlink(&mut self, st: &Stat, name: &[u8], meta: &Meta) -> Result<bool, Error> {
        if st.nlink < 2 {
            return Ok(false);
        }
        let key = (st.dev, st.ino);
        let Some(group) = self.links.get_mut(&key) else {
            return Ok(false);
        };
        let target = group.name.clone();
        group.remaining = group.remaining.saturating_sub(1);
        if group.remaining == 0 {
            self.links.remove(&key);
        }
        let mut b = HeaderBuilder::new(EntryType::Link, name, meta);
        b.set_link(&target);
        self.emit(b, meta).map_err(write_err)?;
        self.last.link = Some(target);
        Ok(true)
    }

    /// Remembers the first name of a multiply-linked inode.
    fn register_link(&mut self, st: &Stat, name: Vec<u8>) {
        if st.nlink > 1 {
            self.links.insert(
                (st.dev, st.ino),
                LinkGroup {
                    name,
                    remaining: st.nlink - 1,
                },
            );
        }
    }

    fn skipped(&self, e: &SourceEntry, err: io::Error, ctx: &mut Ctx<'_, '_>) {
        let (kind, what) = match err.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => (
                WarningKind::Vanished,
                "vanished before it could be read".to_owned(),
            ),
            Some(libc::ELOOP) | Some(libc::EINVAL) => (
                WarningKind::Changed,
                "changed type while being read".to_owned(),
            ),
            _ => (
                WarningKind::Unreadable,
                format!("cannot read: {}", crate::util::io_reason(&err)),
            ),
        };
        ctx.report
            .warn(&e.rel, kind, format!("{what}; not archived"));
    }

    fn append_file(
        &mut self,
        e: &SourceEntry,
        ctx: &mut Ctx<'_, '_>,
    ) -> Result<Option<Kind>, Error> {
        let name = archive_name(&e.rel, false);
        // A later name of a scrubbed inode links to the scrubbed body, if
        // there is one; otherwise it is left out like the original.
        if self.append_hardlink(&e.stat, &name, &meta_of(&e.stat))? {
            return Ok(Some(Kind::Hardlink));
        }
        if self.is_dropped_secret(&e.stat, &e.rel, true, ctx) {
            return Ok(None);
        }
        let Some((file, before, same_inode)) = self.open_checked(e, ctx) else {
            return Ok(None);
        };
        self.write_file(e, name, &file, &before, same_inode, ctx)
    }

    /// Opens a regular file relative to its directory and checks it is
    /// still one; `None` after a warning.
    fn open_checked(&self, e: &SourceEntry, ctx: &mut Ctx<'_, '_>) -> Option<(File, Stat, bool)> {
        crate::testhook::pause("open", &e.rel);
        let parent = e.parent.as_ref()?;
        let file = match fsx::open_file_at(parent.as_fd(), &e.name) {
            Ok(f) => f,
            Err(err) => {
                self.skipped(e, err, ctx);
                return None;
            }
        };
        let before = match fsx::fstat(&file) {
            Ok(m) => m,
            Err(err) => {
                self.skipped(e, err, ctx);
                return None;
            }
        };
        if before.kind != FileKind::File {
            ctx.report.warn(
                &e.rel,
                WarningKind::Changed,
                "is no longer a regular file; not archived",
            );
            return None;
        }
        let same_inode = (before.dev, before.ino) == (e.stat.dev, e.stat.ino);
        if !same_inode {
            ctx.report.warn(
                &e.rel,
                WarningKind::Changed,
                "was replaced by another file while being read; archived the new one",
            );
        }
        Some((file, before, same_inode))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(archive_name(b"", true), b"./");
        assert_eq!(archive_name(b"etc", true), b"./etc/");
        assert_eq!(archive_name(b"etc/passwd", false), b"./etc/passwd");
        assert_eq!(
            sparse_name(b"./var/lib/sparse.img"),
            b"./var/lib/GNUSparseFile.0/sparse.img"
        );
    }
}
