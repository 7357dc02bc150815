//! The tar writer: one source entry in, ustar + PAX blocks out, with every
//! piece of metadata GNU tar and bsdtar restore.
//!
//! Third stage of the pipeline (walk → policy → **tar writer** → hash →
//! compressor → sink). The `tar` crate builds ustar header blocks; its own
//! `append_path*` helpers are never used on a root filesystem (they drop
//! nanoseconds, hardlinks, device names and ACLs). Per entry this module:
//!
//! * opens regular files relative to their directory's descriptor with
//!   `O_NOFOLLOW|O_NONBLOCK|O_NOATIME` ([`crate::fsx`]) and takes the header
//!   from `fstat` of the open file, so header and body describe the same
//!   inode, and reading does not touch the source's atimes;
//! * writes exactly the size the header announces: a file that shrinks is
//!   padded with zeros, one that grows is cut at the announced size, a read
//!   error is zero-filled — each a warning, never a corrupt archive;
//! * stores hard links as one body and link entries after it, keyed by
//!   `(st_dev, st_ino)`; an inode leaves the table once all its links are
//!   seen, so it holds only groups still open (the only state that grows
//!   with the file count);
//! * stores sparse files as GNU PAX 1.0 sparse entries ([`sparse`]);
//! * stores every xattr as `SCHILY.xattr.<name>` (raw bytes; `%` and `=`
//!   in names encoded as `%25`/`%3D`, as GNU tar does), ACLs also as
//!   `SCHILY.acl.access`/`.default` text with numeric ids ([`acl`]), and
//!   `security.selinux` also as `RHT.security.selinux`.
//!
//! File data is read in 1 MiB pieces into one reusable, page-aligned
//! buffer, whatever the file size. A large file the page cache does not
//! hold is read with `O_DIRECT` (see [`crate::prefetch`] for why), falling
//! back to ordinary reads where the filesystem refuses it or an unaligned
//! piece remains.
//! This module must never write to the source, follow a symlink, or open a
//! device or FIFO.

pub mod acl;
pub mod header;
pub mod sparse;

use crate::error::Error;
use crate::fsx::{self, Kind as FileKind, Stat};
use crate::prefetch::{ColdReads, DIRECT_MIN};
use crate::report::{Report, WarningKind};
use crate::rootfs::RootFs;
use crate::scrub::{self, Effect, Outcome, Plan};
use crate::signals::Cancel;
use crate::ui::Ui;
use crate::walk::{SourceEntry, SynthKind, Synthetic};
use header::{HeaderBuilder, Meta, encode_pax, pax_header, split_dev};
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::io::Read as _;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use tar::EntryType;
use xattr::FileExt as _;

const BUF_SIZE: usize = 1 << 20;
/// Largest file a line-editing scrub action reads into memory.
const EDIT_LIMIT: u64 = 16 << 20;
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// What an entry became in the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file with its body.
    File {
        /// Stored as a sparse file.
        sparse: bool,
    },
    /// A hard link to an earlier entry.
    Hardlink,
    /// A symbolic link.
    Symlink,
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A FIFO.
    Fifo,
}

/// Owner and group names from the captured root's `/etc/passwd` and
/// `/etc/group` (not the host's: a chroot has its own).
#[derive(Debug, Default, Clone)]
pub struct Owners {
    users: HashMap<u64, String>,
    groups: HashMap<u64, String>,
}

impl Owners {
    /// Reads the root's user and group databases; empty when missing.
    pub fn from_root(root: &RootFs) -> Owners {
        let read = |p: &str| root.read(p, 64 << 20).ok().flatten().unwrap_or_default();
        Owners {
            users: parse_ids(&read("/etc/passwd")),
            groups: parse_ids(&read("/etc/group")),
        }
    }

    fn user(&self, uid: u64) -> Option<&str> {
        self.users.get(&uid).map(String::as_str)
    }

    fn group(&self, gid: u64) -> Option<&str> {
        self.groups.get(&gid).map(String::as_str)
    }
}

/// `name:x:id:…` lines → id → name (first name wins).
fn parse_ids(text: &[u8]) -> HashMap<u64, String> {
    let mut map = HashMap::new();
    for line in text.split(|&b| b == b'\n') {
        let mut f = line.split(|&b| b == b':');
        let (Some(name), Some(_), Some(id)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let (Ok(name), Some(id)) = (
            std::str::from_utf8(name),
            std::str::from_utf8(id).ok().and_then(|s| s.parse().ok()),
        ) else {
            continue;
        };
        if !name.is_empty() && !name.starts_with('#') {
            map.entry(id).or_insert_with(|| name.to_owned());
        }
    }
    map
}

/// What the writer needs from the run for each entry.
pub struct Ctx<'a, 'u> {
    /// Where warnings and counts go.
    pub report: &'a mut Report<'u>,
    /// Checked between chunks.
    pub cancel: &'a Cancel,
    /// Progress.
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

/// A PAX key for an xattr: GNU tar's encoding of `%` and `=` in names.
fn xattr_key(name: &str) -> String {
    let mut key = String::from("SCHILY.xattr.");
    for c in name.chars() {
        match c {
            '%' => key.push_str("%25"),
            '=' => key.push_str("%3D"),
            c => key.push(c),
        }
    }
    key
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

/// Where xattrs are read from.
enum XSource<'a> {
    Fd(&'a File),
    Path(&'a Path),
}

fn is_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENOSYS))
        || e.kind() == io::ErrorKind::Unsupported
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
    /// Multiply-linked inodes the scrub acts on ([`Plan::prescan`]).
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
}

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
        Ok(())
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
        if !body.is_empty() {
            self.put(body).map_err(write_err)?;
            self.pad(body.len() as u64).map_err(write_err)?;
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
        self.add_xattrs(&mut b, XSource::Path(&e.abs), &e.rel, ctx);
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

    /// Writes an open regular file: header from its `fstat`, body streamed
    /// (sparse where it has holes), size kept exact whatever happens to it.
    fn write_file(
        &mut self,
        e: &SourceEntry,
        name: Vec<u8>,
        file: &File,
        before: &Stat,
        same_inode: bool,
        ctx: &mut Ctx<'_, '_>,
    ) -> Result<Option<Kind>, Error> {
        let mut changed = !same_inode;
        let size = before.size;
        let segs = if size > 0 && before.blocks.saturating_mul(512) < size {
            sparse::data_segments(file, size).unwrap_or(None)
        } else {
            None
        };
        let meta = meta_of(before);
        let mut b;
        let map;
        match &segs {
            None => {
                b = HeaderBuilder::new(EntryType::Regular, &name, &meta);
                b.set_size(size);
                map = Vec::new();
            }
            Some(segs) => {
                b = HeaderBuilder::new(EntryType::Regular, &sparse_name(&name), &meta);
                map = sparse::map_block(segs, size);
                let data: u64 = segs.iter().map(|s| s.1).sum();
                b.set_size(map.len() as u64 + data);
                b.push("GNU.sparse.major", "1");
                b.push("GNU.sparse.minor", "0");
                b.push("GNU.sparse.name", name.clone());
                b.push("GNU.sparse.realsize", size.to_string());
            }
        }
        self.add_xattrs(&mut b, XSource::Fd(file), &e.rel, ctx);
        self.emit(b, &meta).map_err(write_err)?;
        crate::testhook::pause("read", &e.rel);

        let mut short = 0u64;
        let mut read_error = None;
        let body_len = match &segs {
            None => {
                let (s, err) = self.copy_range(file, 0, size, ctx)?;
                short += s;
                read_error = read_error.or(err);
                size
            }
            Some(segs) => {
                self.put(&map).map_err(write_err)?;
                for &(off, len) in segs {
                    let (s, err) = self.copy_range(file, off, len, ctx)?;
                    short += s;
                    read_error = read_error.or(err);
                }
                map.len() as u64 + segs.iter().map(|s| s.1).sum::<u64>()
            }
        };
        self.pad(body_len).map_err(write_err)?;

        if let Some((off, err)) = read_error {
            let why = crate::util::io_reason(&err);
            ctx.report.warn(
                &e.rel,
                WarningKind::Unreadable,
                format!("read error at byte {off}: {why}; the rest was archived as zeros"),
            );
            changed = true;
        } else if short > 0 {
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
        // Later names of this inode link to this body — only if it is the
        // inode the walk saw under them.
        if same_inode {
            self.register_link(before, name);
        }
        Ok(Some(Kind::File {
            sparse: segs.is_some(),
        }))
    }

    /// Whether this inode's content is scrubbed under another name: one
    /// dropped earlier, or (with `prescanned`) one the prescan found. This
    /// name is then left out too: it holds the same secret.
    fn is_dropped_secret(
        &mut self,
        st: &Stat,
        rel: &[u8],
        prescanned: bool,
        ctx: &mut Ctx<'_, '_>,
    ) -> bool {
        let key = (st.dev, st.ino);
        if st.nlink < 2
            || !(self.dropped.contains(&key) || (prescanned && self.scrubbed.contains_key(&key)))
        {
            return false;
        }
        let effect = Effect {
            op: "hardlink".into(),
            action: "drop",
            bytes_removed: st.size,
        };
        ctx.report.scrubbed(rel, std::slice::from_ref(&effect));
        true
    }

    /// Reports to `cold` each file whose first read would have waited for
    /// the disk (see [`crate::prefetch`]).
    pub fn set_cold_reads(&mut self, cold: ColdReads) {
        self.cold = Some(cold);
    }

    /// Sets the result of [`Plan::prescan`].
    pub fn set_prescanned(&mut self, scrubbed: HashMap<(u64, u64), bool>) {
        self.scrubbed = scrubbed;
    }

    /// Remembers an inode whose content the scrub left out.
    pub fn forbid(&mut self, st: &Stat) {
        if st.nlink > 1 && st.kind != FileKind::Dir {
            self.dropped.insert((st.dev, st.ino));
        }
    }

    /// Appends a regular file transformed by scrub rules `hits` of `plan`.
    pub fn append_scrubbed(
        &mut self,
        e: &SourceEntry,
        hits: &[usize],
        plan: &Plan,
        ctx: &mut Ctx<'_, '_>,
    ) -> Result<Option<Kind>, Error> {
        let name = archive_name(&e.rel, false);
        if self.is_dropped_secret(&e.stat, &e.rel, false, ctx) {
            return Ok(None);
        }
        let Some((file, before, same_inode)) = self.open_checked(e, ctx) else {
            return Ok(None);
        };
        let content = if scrub::needs_content(plan, hits) {
            if before.size > EDIT_LIMIT {
                let msg = format!("too large to edit ({} bytes); left out", before.size);
                ctx.report.warn(&e.rel, WarningKind::Unreadable, msg);
                self.forbid(&before);
                return Ok(None);
            }
            let mut buf = Vec::with_capacity(before.size as usize);
            if let Err(err) = (&file).take(EDIT_LIMIT).read_to_end(&mut buf) {
                self.forbid(&before);
                let why = crate::util::io_reason(&err);
                ctx.report.warn(
                    &e.rel,
                    WarningKind::Unreadable,
                    format!("cannot read: {why}; left out"),
                );
                return Ok(None);
            }
            Some(buf)
        } else {
            None
        };
        let (outcome, effects) = scrub::decide(plan, hits, before.size, content.as_deref());
        ctx.report.scrubbed(&e.rel, &effects);
        let meta = meta_of(&before);
        match outcome {
            Outcome::Drop => {
                self.forbid(&before);
                Ok(None)
            }
            Outcome::Unchanged => match content {
                Some(bytes) => {
                    self.write_bytes(&e.rel, name, &file, &before, same_inode, &bytes, ctx)
                }
                None => self.write_file(e, name, &file, &before, same_inode, ctx),
            },
            Outcome::Content(bytes) => {
                self.write_bytes(&e.rel, name, &file, &before, same_inode, &bytes, ctx)
            }
            Outcome::Symlink(target) => {
                // Other names of the inode would still hold the old content.
                self.forbid(&before);
                let mut b = HeaderBuilder::new(
                    EntryType::Symlink,
                    &name,
                    &Meta {
                        mode: 0o777,
                        ..meta
                    },
                );
                b.set_link(&target);
                self.emit(b, &meta).map_err(write_err)?;
                Ok(Some(Kind::Symlink))
            }
        }
    }

    /// Writes a regular file whose body is `bytes` (a scrubbed version):
    /// metadata and xattrs from the open file.
    #[allow(clippy::too_many_arguments)]
    fn write_bytes(
        &mut self,
        rel: &[u8],
        name: Vec<u8>,
        file: &File,
        before: &Stat,
        same_inode: bool,
        bytes: &[u8],
        ctx: &mut Ctx<'_, '_>,
    ) -> Result<Option<Kind>, Error> {
        let meta = meta_of(before);
        let mut b = HeaderBuilder::new(EntryType::Regular, &name, &meta);
        b.set_size(bytes.len() as u64);
        self.add_xattrs(&mut b, XSource::Fd(file), rel, ctx);
        self.emit(b, &meta).map_err(write_err)?;
        self.put(bytes).map_err(write_err)?;
        self.pad(bytes.len() as u64).map_err(write_err)?;
        ctx.report.stats.content_bytes += before.size;
        ctx.ui.add_bytes(before.size);
        // Later names of this inode link to the scrubbed body.
        if same_inode {
            self.register_link(before, name);
        }
        Ok(Some(Kind::File { sparse: false }))
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
            self.out
                .write_all(&self.buf[start..start + n])
                .map_err(write_err)?;
            self.written += n as u64;
            done += n as u64;
            ctx.report.stats.content_bytes += n as u64;
            ctx.ui.add_bytes(n as u64);
        }
        Ok((0, None))
    }

    /// Adds `SCHILY.xattr.*`, `SCHILY.acl.*` and `RHT.security.selinux`.
    fn add_xattrs(
        &self,
        b: &mut HeaderBuilder,
        src: XSource<'_>,
        rel: &[u8],
        ctx: &mut Ctx<'_, '_>,
    ) {
        let names: Vec<OsString> = match &src {
            XSource::Fd(f) => f.list_xattr().map(|x| x.collect()),
            XSource::Path(p) => xattr::list(p).map(|x| x.collect()),
        }
        .or_else(|e| {
            if is_unsupported(&e) {
                Ok(Vec::new())
            } else {
                Err(e)
            }
        })
        .unwrap_or_else(|e| {
            ctx.report.warn(
                rel,
                WarningKind::Attributes,
                format!("cannot list extended attributes: {e}"),
            );
            Vec::new()
        });
        let mut names = names;
        names.sort();
        for n in names {
            let value = match &src {
                XSource::Fd(f) => f.get_xattr(&n),
                XSource::Path(p) => xattr::get(p, &n),
            };
            let value = match value {
                Ok(Some(v)) => v,
                Ok(None) => continue, // removed since listed
                Err(e) => {
                    let shown = crate::escape::escape(n.as_bytes());
                    ctx.report.warn(
                        rel,
                        WarningKind::Attributes,
                        format!("cannot read extended attribute {shown}: {e}"),
                    );
                    continue;
                }
            };
            let Some(key) = n.to_str() else {
                let shown = crate::escape::escape(n.as_bytes());
                ctx.report.warn(rel, WarningKind::Attributes, format!("extended attribute name {shown} is not UTF-8 and cannot be stored in PAX; skipped"));
                continue;
            };
            match key {
                "system.posix_acl_access" | "system.posix_acl_default" => {
                    let access = key.ends_with("access");
                    match acl::to_text(&value, access) {
                        Some(text) if text.is_empty() => {}
                        Some(text) => b.push(
                            if access {
                                "SCHILY.acl.access"
                            } else {
                                "SCHILY.acl.default"
                            },
                            text,
                        ),
                        None => ctx.report.warn(
                            rel,
                            WarningKind::Attributes,
                            format!("{key} is malformed; stored raw only"),
                        ),
                    }
                }
                "security.selinux" => {
                    let label = value.strip_suffix(b"\0").unwrap_or(&value);
                    b.push("RHT.security.selinux", label.to_vec());
                }
                _ => {}
            }
            b.push(xattr_key(key), value);
        }
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

    #[test]
    fn id_tables() {
        let m = parse_ids(b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/:/x\n#c:x:5:\nbad\nroot2:x:0:0::/:/x\nbig:x:3000000:1::/:\n");
        assert_eq!(m.get(&0).map(String::as_str), Some("root"));
        assert_eq!(m.get(&1).map(String::as_str), Some("daemon"));
        assert_eq!(m.get(&3_000_000).map(String::as_str), Some("big"));
        assert_eq!(m.len(), 3);
    }
}
