//! Writing tar entries into the target, with the fidelity capture
//! archives: numeric owners, modes (setuid after chown), nanosecond mtimes
//! (directories last), hardlinks, symlinks, devices, FIFOs, sparse files
//! with their holes (PAX 1.0 as capture writes them, GNU tar's 0.0/0.1),
//! xattrs (`SCHILY.xattr.*`, including `security.capability`,
//! `security.selinux` and the raw ACLs), ACL text (`SCHILY.acl.*`) when
//! the raw form is absent, long and non-UTF-8 names. PAX records are read
//! by their lengths from the guard's copy ([`records`]), never through
//! tar-rs's parser, which splits values at newlines.
//!
//! Part of apply, after the tar reader: one entry at a time, each name
//! checked ([`relative`]) and its parent opened through [`Target`], so a
//! name that leaves the target, goes through a symlink, or a hardlink to
//! anything not extracted earlier in this run is refused and listed, never
//! written. Metadata that cannot be set is a warning. A plain file's body
//! goes from the decompressed stream to the file ([`Body`]), not through
//! tar-rs's copy. Memory: 8 bytes per extracted non-directory (for
//! hardlinks) and the metadata of each directory until the end. This module
//! must never write through a path: only through a directory descriptor and
//! one name.

use super::beneath::{Fault, Target, remove};
use crate::cmd::verify::guard::MAX_META;
use crate::cmd::verify::shape::relative;
use crate::report::escape::escape;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;
use std::collections::HashSet;
use std::fs::File;
use std::hash::{BuildHasher, RandomState};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// The marker at the target's root while an apply is under way or failed.
pub(super) const MARKER: &str = ".goldcap-apply-incomplete";

pub(super) use crate::cmd::verify::shape::Listed;

/// What a PAX header says of the entry that follows.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    mtime: Option<(i64, u32)>,
    uid: Option<u64>,
    gid: Option<u64>,
    devmajor: Option<u64>,
    devminor: Option<u64>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    acl_access: Option<String>,
    acl_default: Option<String>,
    selinux: Option<Vec<u8>>,
    sparse_name: Option<Vec<u8>>,
    sparse_version: (Option<Vec<u8>>, Option<Vec<u8>>),
    realsize: Option<u64>,
    /// A PAX 0.x sparse map (offset, length).
    sparse_map: Option<Vec<(u64, u64)>>,
}

/// A PAX time (`sec`, `sec.frac`, negative values as the signed decimal).
fn parse_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
    let sec: i64 = sec.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits = frac
        .as_bytes()
        .iter()
        .take(9)
        .map(|b| u32::from(b - b'0'))
        .collect::<Vec<_>>();
    digits.resize(9, 0);
    let nsec = digits.iter().fold(0u32, |a, d| a * 10 + d);
    Some(match (neg, nsec) {
        (false, n) => (sec, n),
        (true, 0) => (-sec, 0),
        (true, n) => (-sec - 1, 1_000_000_000 - n),
    })
}

/// GNU tar's decoding of `%25` and `%3D` in xattr names.
fn xattr_name(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len());
    let mut i = 0;
    while i < key.len() {
        match &key[i..] {
            [b'%', b'2', b'5', ..] => {
                out.push(b'%');
                i += 3;
            }
            [b'%', b'3', b'D', ..] => {
                out.push(b'=');
                i += 3;
            }
            [b, ..] => {
                out.push(*b);
                i += 1;
            }
            [] => break,
        }
    }
    out
}

fn number(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// PAX records (`LEN KEY=VALUE\n`, LEN counting the whole record), read
/// by their lengths — values may hold newlines (xattrs, GNU tar's ACL
/// text), which tar-rs's own parser splits at. Stops at the first
/// malformed record.
fn records(mut data: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut out = Vec::new();
    while let Some(sp) = data.iter().position(|&b| b == b' ') {
        let Some(len) = std::str::from_utf8(&data[..sp])
            .ok()
            .and_then(|l| l.parse::<usize>().ok())
            .filter(|&l| l > sp + 1 && l <= data.len() && data[l - 1] == b'\n')
        else {
            break;
        };
        let kv = &data[sp + 1..len - 1];
        let Some(eq) = kv.iter().position(|&b| b == b'=') else {
            break;
        };
        out.push((&kv[..eq], &kv[eq + 1..]));
        data = &data[len..];
    }
    out
}

/// What the member's PAX header (its raw records, from the guard) says.
fn pax_of(raw: Option<&[u8]>) -> Pax {
    let mut p = Pax::default();
    for (k, v) in records(raw.unwrap_or_default()) {
        match k {
            b"path" => p.path = Some(v.to_vec()),
            b"linkpath" => p.linkpath = Some(v.to_vec()),
            b"mtime" => p.mtime = parse_time(v),
            b"uid" => p.uid = number(v),
            b"gid" => p.gid = number(v),
            b"SCHILY.devmajor" => p.devmajor = number(v),
            b"SCHILY.devminor" => p.devminor = number(v),
            b"SCHILY.acl.access" => p.acl_access = Some(String::from_utf8_lossy(v).into_owned()),
            b"SCHILY.acl.default" => p.acl_default = Some(String::from_utf8_lossy(v).into_owned()),
            b"RHT.security.selinux" => p.selinux = Some(v.to_vec()),
            b"GNU.sparse.name" => p.sparse_name = Some(v.to_vec()),
            b"GNU.sparse.major" => p.sparse_version.0 = Some(v.to_vec()),
            b"GNU.sparse.minor" => p.sparse_version.1 = Some(v.to_vec()),
            b"GNU.sparse.realsize" | b"GNU.sparse.size" => p.realsize = number(v),
            // 0.1: "off,len,off,len…"; 0.0: offset and numbytes records.
            b"GNU.sparse.map" => {
                let n: Option<Vec<u64>> = std::str::from_utf8(v)
                    .ok()
                    .map(|t| {
                        t.split(',')
                            .filter(|x| !x.is_empty())
                            .map(|x| x.parse().ok())
                            .collect()
                    })
                    .and_then(|v: Vec<Option<u64>>| v.into_iter().collect());
                p.sparse_map = Some(match n {
                    Some(n) if n.len() % 2 == 0 => {
                        n.chunks_exact(2).map(|c| (c[0], c[1])).collect()
                    }
                    // Malformed: nothing is written from it.
                    _ => vec![(u64::MAX, u64::MAX)],
                });
            }
            b"GNU.sparse.offset" => {
                p.sparse_map
                    .get_or_insert_default()
                    .push((number(v).unwrap_or(u64::MAX), 0));
            }
            b"GNU.sparse.numbytes" => {
                if let Some(last) = p.sparse_map.get_or_insert_default().last_mut() {
                    last.1 = number(v).unwrap_or(u64::MAX);
                }
            }
            k => {
                if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                    p.xattrs.push((xattr_name(name), v.to_vec()));
                }
            }
        }
    }
    p
}

/// An entry's metadata, as it will be set.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: (i64, u32),
    /// Every xattr to set (the ACL text converted, SELinux's RHT record
    /// when no `SCHILY.xattr` carried it).
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A directory whose owner, xattrs, mode and mtime are set at the end.
struct DirFix {
    rel: Vec<u8>,
    meta: Meta,
}

/// What the entries did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub(super) struct Applied {
    /// Entries written.
    pub(super) entries: u64,
    /// Bytes of file content written.
    pub(super) bytes: u64,
    /// Entries not written, with why: names that leave the target, go
    /// through a symlink, hardlinks to nothing extracted before.
    pub(super) refused: Listed,
    /// Metadata that could not be set.
    pub(super) warnings: Listed,
}

/// Writes entries into the target.
pub(super) struct Extractor {
    target: Target,
    /// Hashes of the non-directories extracted so far (hardlink targets).
    earlier: HashSet<u64>,
    keys: RandomState,
    dirs: Vec<DirFix>,
    /// The root's metadata, once [`Extractor::finish_dirs`] set the others.
    root_dir: Option<DirFix>,
    buf: Vec<u8>,
    pub(super) applied: Applied,
}

/// A name split into its parent and last component.
pub(super) fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (b"", rel),
    }
}

/// An error writing the target (not reading the archive): the run fails
/// with exit status 1, not 4.
#[derive(Debug)]
pub(super) struct TargetError(String);

impl std::fmt::Display for TargetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TargetError {}

/// Whether `e` came from writing the target.
pub(super) fn is_target_error(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<TargetError>())
}

fn io_ctx(what: String) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), TargetError(format!("{what}: {e}")))
}

/// `e`, from writing the file `shown`, as a [`TargetError`].
pub(super) fn write_error(shown: &str, e: io::Error) -> io::Error {
    io_ctx(format!("cannot write {shown}"))(e)
}

/// The decompressed stream the tar reader reads, when a plain file's body
/// can be written to the file from it directly: tar-rs only copies a body
/// into its caller's buffer, one more pass over every byte extracted.
pub(super) trait Body {
    /// Writes the stream's next `len` bytes (fewer only at its end) to
    /// `w`, the file `shown`, and has the tar reader count them through without copying
    /// when it next skips them — as it does the rest of an entry's body,
    /// unread, before the next header. The bytes written. Once it was
    /// called, the entry must not be read: its reads would count bytes
    /// without filling the buffer.
    fn write_next(&self, w: &mut File, len: u64, shown: &str) -> io::Result<u64>;
}

fn ts((sec, nsec): (i64, u32)) -> Timestamps {
    let t = Timespec {
        tv_sec: sec,
        tv_nsec: nsec.into(),
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

impl Extractor {
    pub(super) fn new(target: Target) -> Extractor {
        Extractor {
            target,
            earlier: HashSet::new(),
            keys: RandomState::new(),
            dirs: Vec::new(),
            root_dir: None,
            buf: vec![0; 1 << 20],
            applied: Applied::default(),
        }
    }

    fn warn(&mut self, rel: &[u8], what: &str, e: impl std::fmt::Display) {
        self.applied
            .warnings
            .push(format!("./{}: {what}: {e}", escape(rel)));
    }

    /// Writes one entry. `Err` only when the target cannot be written or
    /// the archive cannot be read; refusals are listed.
    /// `body`: the stream `e` is read from, to write a plain file's body
    /// from directly.
    pub(super) fn entry<R: Read>(
        &mut self,
        e: &mut tar::Entry<'_, R>,
        pax_raw: Option<&[u8]>,
        body: Option<&dyn Body>,
    ) -> io::Result<()> {
        let et = e.header().entry_type();
        if et.is_pax_global_extensions() {
            return Ok(());
        }
        let pax = pax_of(pax_raw);
        let raw = match (&pax.sparse_name, &pax.path) {
            (Some(n), _) | (None, Some(n)) => n.clone(),
            (None, None) => e.path_bytes().into_owned(),
        };
        let shown = escape(&raw);
        let Some(rel) = relative(&raw) else {
            self.applied
                .refused
                .push(format!("{shown} (outside the target)"));
            return Ok(());
        };
        if rel.contains(&0) {
            self.applied
                .refused
                .push(format!("{shown} (the name holds a NUL byte)"));
            return Ok(());
        }
        if rel == MARKER.as_bytes() {
            self.applied
                .refused
                .push(format!("{shown} (goldcap's own marker)"));
            return Ok(());
        }
        let meta = self.meta(e, &pax, &rel);
        if et.is_dir() {
            return self.dir(rel, meta, &shown);
        }
        let (parent_rel, name) = split(&rel);
        let Some(parent) = self.parent(parent_rel, &shown)? else {
            return Ok(());
        };
        let parent = parent.as_fd();
        let link = || match &pax.linkpath {
            Some(l) => l.clone(),
            None => e
                .link_name_bytes()
                .map(|l| l.into_owned())
                .unwrap_or_default(),
        };
        let done = if et.is_hard_link() {
            let target = link();
            self.hardlink(&target, parent, name, &shown)?
        } else if et.is_symlink() {
            let target = link();
            if target.is_empty() || target.contains(&0) {
                self.applied.refused.push(format!(
                    "{shown} (a symlink to an empty or NUL-holding target)"
                ));
                return Ok(());
            }
            self.create(parent, name, &shown, |d| {
                rustix::fs::symlinkat(&target[..], d, name)
            })?;
            self.finish_at(parent, name, &rel, &meta, true);
            true
        } else if et.is_character_special() || et.is_block_special() || et.is_fifo() {
            let h = e.header();
            let major = pax
                .devmajor
                .or(h.device_major().ok().flatten().map(u64::from))
                .unwrap_or(0);
            let minor = pax
                .devminor
                .or(h.device_minor().ok().flatten().map(u64::from))
                .unwrap_or(0);
            let kind = if et.is_character_special() {
                FileType::CharacterDevice
            } else if et.is_block_special() {
                FileType::BlockDevice
            } else {
                FileType::Fifo
            };
            let dev = rustix::fs::makedev(major as u32, minor as u32);
            self.create(parent, name, &shown, |d| {
                rustix::fs::mknodat(d, name, kind, Mode::from_raw_mode(0o600), dev)
            })?;
            self.finish_at(parent, name, &rel, &meta, false);
            true
        } else if et.is_file() || et.is_contiguous() || et.is_gnu_sparse() {
            self.file(e, &pax, parent, name, &rel, &meta, &shown, body)?;
            true
        } else {
            self.applied.refused.push(format!(
                "{shown} (entry type {:?} is not extracted)",
                et.as_byte() as char
            ));
            false
        };
        if done {
            self.applied.entries += 1;
            self.earlier.insert(self.keys.hash_one(&rel));
        }
        Ok(())
    }

    fn meta<R: Read>(&mut self, e: &tar::Entry<'_, R>, pax: &Pax, rel: &[u8]) -> Meta {
        let h = e.header();
        let mut xattrs = pax.xattrs.clone();
        let has = |x: &[(Vec<u8>, Vec<u8>)], n: &[u8]| x.iter().any(|(k, _)| k == n);
        for (text, name) in [
            (&pax.acl_access, &b"system.posix_acl_access"[..]),
            (&pax.acl_default, b"system.posix_acl_default"),
        ] {
            if let Some(t) = text
                && !has(&xattrs, name)
            {
                match crate::archive::acl::from_text(t) {
                    Some(v) => xattrs.push((name.to_vec(), v)),
                    None => self.warn(rel, "ACL not restored", format!("cannot read {t:?}")),
                }
            }
        }
        if let Some(label) = &pax.selinux
            && !has(&xattrs, b"security.selinux")
        {
            let mut v = label.clone();
            v.push(0);
            xattrs.push((b"security.selinux".to_vec(), v));
        }
        let id = |v: Option<u64>, h: io::Result<u64>| {
            u32::try_from(v.or(h.ok()).unwrap_or(0)).unwrap_or(0)
        };
        Meta {
            uid: id(pax.uid, h.uid()),
            gid: id(pax.gid, h.gid()),
            mode: h.mode().unwrap_or(0o644) & 0o7777,
            mtime: pax.mtime.unwrap_or((
                h.mtime()
                    .ok()
                    .and_then(|m| i64::try_from(m).ok())
                    .unwrap_or(0),
                0,
            )),
            xattrs,
        }
    }

    /// Creates an object with `make`; what is in the way (not a non-empty
    /// directory) is removed first.
    fn create(
        &mut self,
        parent: std::os::fd::BorrowedFd<'_>,
        name: &[u8],
        shown: &str,
        make: impl Fn(std::os::fd::BorrowedFd<'_>) -> rustix::io::Result<()>,
    ) -> io::Result<()> {
        match make(parent) {
            Err(Errno::EXIST) => {
                if !remove(parent, name).map_err(io_ctx(format!("cannot replace {shown}")))? {
                    return Err(io::Error::other(format!(
                        "cannot replace the non-empty directory {shown}"
                    )));
                }
                self.target.forget();
                make(parent).map_err(|e| io_ctx(format!("cannot create {shown}"))(e.into()))
            }
            r => r.map_err(|e| io_ctx(format!("cannot create {shown}"))(e.into())),
        }
    }

    /// The directory an entry goes into, opened beneath the target; `None`
    /// when the way there is refused (listed under `refused`).
    fn parent(
        &mut self,
        parent_rel: &[u8],
        shown: &str,
    ) -> io::Result<Option<std::rc::Rc<OwnedFd>>> {
        match self.target.dir(parent_rel) {
            Ok(fd) => Ok(Some(fd)),
            Err(Fault::Refused(why)) => {
                self.applied.refused.push(format!("{shown} ({why})"));
                Ok(None)
            }
            Err(Fault::Io(e)) => Err(io_ctx(format!("cannot open the directory of {shown}"))(e)),
        }
    }

    /// A directory: made now, its metadata set at the end.
    fn dir(&mut self, rel: Vec<u8>, meta: Meta, shown: &str) -> io::Result<()> {
        if !rel.is_empty() {
            let (parent_rel, name) = split(&rel);
            let Some(parent) = self.parent(parent_rel, shown)? else {
                return Ok(());
            };
            match rustix::fs::mkdirat(&*parent, name, Mode::from_raw_mode(0o700)) {
                Ok(()) => {}
                Err(Errno::EXIST) => {
                    let st = rustix::fs::statat(&*parent, name, AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(|e| io_ctx(format!("cannot create {shown}"))(e.into()))?;
                    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                        rustix::fs::unlinkat(&*parent, name, AtFlags::empty())
                            .map_err(|e| io_ctx(format!("cannot replace {shown}"))(e.into()))?;
                        self.target.forget();
                        rustix::fs::mkdirat(&*parent, name, Mode::from_raw_mode(0o700))
                            .map_err(|e| io_ctx(format!("cannot create {shown}"))(e.into()))?;
                    }
                }
                Err(e) => return Err(io_ctx(format!("cannot create {shown}"))(e.into())),
            }
        }
        self.applied.entries += 1;
        // A file of that name extracted before is gone: no hard link to it.
        self.earlier.remove(&self.keys.hash_one(&rel));
        self.dirs.push(DirFix { rel, meta });
        Ok(())
    }

    fn hardlink(
        &mut self,
        raw: &[u8],
        parent: std::os::fd::BorrowedFd<'_>,
        name: &[u8],
        shown: &str,
    ) -> io::Result<bool> {
        let target = match relative(raw) {
            Some(t) if !t.is_empty() && self.earlier.contains(&self.keys.hash_one(&t)) => t,
            Some(_) => {
                self.applied.refused.push(format!(
                    "{shown} (hard link to {}, which was not extracted before it)",
                    escape(raw)
                ));
                return Ok(false);
            }
            None => {
                self.applied.refused.push(format!(
                    "{shown} (hard link to {}, outside the target)",
                    escape(raw)
                ));
                return Ok(false);
            }
        };
        let (tparent, tname) = split(&target);
        let tdir = match self.target.existing_dir(tparent) {
            Ok(fd) => fd,
            Err(Fault::Refused(why)) => {
                self.applied
                    .refused
                    .push(format!("{shown} (hard link to {}: {why})", escape(raw)));
                return Ok(false);
            }
            Err(Fault::Io(e)) => return Err(io_ctx(format!("cannot link {shown}"))(e)),
        };
        self.create(parent, name, shown, |d| {
            rustix::fs::linkat(&tdir, tname, d, name, AtFlags::empty())
        })?;
        Ok(true)
    }

    /// Owner, xattrs, mode and mtime of a non-directory that is not open
    /// (never opened: a device or FIFO would act), by its name.
    fn finish_at(
        &mut self,
        parent: std::os::fd::BorrowedFd<'_>,
        name: &[u8],
        rel: &[u8],
        m: &Meta,
        symlink: bool,
    ) {
        let nofollow = AtFlags::SYMLINK_NOFOLLOW;
        if let Err(e) = rustix::fs::chownat(
            parent,
            name,
            Some(rustix::fs::Uid::from_raw(m.uid)),
            Some(rustix::fs::Gid::from_raw(m.gid)),
            nofollow,
        ) {
            self.warn(rel, "cannot set the owner", e);
        }
        if !m.xattrs.is_empty() {
            let mut path = format!("/proc/self/fd/{}/", parent.as_raw_fd()).into_bytes();
            path.extend_from_slice(name);
            for (k, v) in &m.xattrs {
                if let Err(e) = rustix::fs::lsetxattr(&path[..], &k[..], v, XattrFlags::empty()) {
                    self.warn(rel, &format!("cannot set {}", escape(k)), e);
                }
            }
        }
        if !symlink
            && let Err(e) =
                rustix::fs::chmodat(parent, name, Mode::from_raw_mode(m.mode), AtFlags::empty())
        {
            self.warn(rel, "cannot set the mode", e);
        }
        if let Err(e) = rustix::fs::utimensat(parent, name, &ts(m.mtime), nofollow) {
            self.warn(rel, "cannot set the mtime", e);
        }
    }

    /// Owner, xattrs, mode (after the owner: chown clears setuid and
    /// capabilities) and mtime of an open file or directory.
    fn finish_fd(&mut self, fd: impl AsFd, rel: &[u8], m: &Meta) {
        let fd = fd.as_fd();
        if let Err(e) = rustix::fs::fchown(
            fd,
            Some(rustix::fs::Uid::from_raw(m.uid)),
            Some(rustix::fs::Gid::from_raw(m.gid)),
        ) {
            self.warn(rel, "cannot set the owner", e);
        }
        for (k, v) in &m.xattrs {
            if let Err(e) = rustix::fs::fsetxattr(fd, &k[..], v, XattrFlags::empty()) {
                self.warn(rel, &format!("cannot set {}", escape(k)), e);
            }
        }
        if let Err(e) = rustix::fs::fchmod(fd, Mode::from_raw_mode(m.mode)) {
            self.warn(rel, "cannot set the mode", e);
        }
        if let Err(e) = rustix::fs::futimens(fd, &ts(m.mtime)) {
            self.warn(rel, "cannot set the mtime", e);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn file<R: Read>(
        &mut self,
        e: &mut tar::Entry<'_, R>,
        pax: &Pax,
        parent: std::os::fd::BorrowedFd<'_>,
        name: &[u8],
        rel: &[u8],
        meta: &Meta,
        shown: &str,
        body: Option<&dyn Body>,
    ) -> io::Result<()> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let open = |d| rustix::fs::openat(d, name, flags, Mode::from_raw_mode(0o600));
        let fd: OwnedFd = match open(parent) {
            Err(Errno::EXIST) => {
                if !remove(parent, name).map_err(io_ctx(format!("cannot replace {shown}")))? {
                    return Err(io::Error::other(format!(
                        "cannot replace the non-empty directory {shown}"
                    )));
                }
                self.target.forget();
                open(parent)
            }
            r => r,
        }
        .map_err(|e| io_ctx(format!("cannot create {shown}"))(e.into()))?;
        let mut file = File::from(fd);
        let sparse = pax.sparse_version == (Some(b"1".to_vec()), Some(b"0".to_vec()));
        if sparse {
            let realsize = pax
                .realsize
                .ok_or_else(|| bad(shown, "no GNU.sparse.realsize"))?;
            self.sparse_body(e, &mut file, e.size(), realsize, shown)?;
        } else if let Some(segs) = &pax.sparse_map {
            // PAX 0.0 / 0.1: the map in the header, the data packed.
            let realsize = pax
                .realsize
                .ok_or_else(|| bad(shown, "no GNU.sparse.realsize or GNU.sparse.size"))?;
            self.segments(e, &mut file, segs, e.size(), realsize, shown)?;
        } else if let Some(body) = body.filter(|_| !e.header().entry_type().is_gnu_sparse()) {
            // The body, as it stands in the stream (an old GNU sparse
            // entry's is not: tar-rs puts its holes back).
            let n = body.write_next(&mut file, e.size(), shown)?;
            self.applied.bytes += n;
            if n < e.size() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("cut short inside {shown}"),
                ));
            }
        } else {
            self.copy(e, &mut file, u64::MAX, shown)?;
        }
        self.finish_fd(&file, rel, meta);
        Ok(())
    }

    /// Copies up to `len` bytes of `r` to `w` (the file `shown`); the
    /// number copied.
    fn copy(&mut self, r: &mut impl Read, w: &mut File, len: u64, shown: &str) -> io::Result<u64> {
        let mut left = len;
        while left > 0 {
            let want = self
                .buf
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = match r.read(&mut self.buf[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            w.write_all(&self.buf[..n])
                .map_err(|e| write_error(shown, e))?;
            left -= n as u64;
            self.applied.bytes += n as u64;
        }
        Ok(len - left)
    }

    /// A GNU PAX 1.0 sparse body: the map (decimal lines, padded to the
    /// block), then each data segment, written at its offset; the holes
    /// stay holes.
    fn sparse_body(
        &mut self,
        r: &mut impl Read,
        file: &mut File,
        body: u64,
        realsize: u64,
        shown: &str,
    ) -> io::Result<()> {
        let mut text = Vec::new();
        let mut nums: Vec<u64> = Vec::new();
        let mut want: Option<u64> = None;
        let mut block = [0u8; 512];
        while want.is_none_or(|w| (nums.len() as u64) < w) {
            if text.len() as u64 >= MAX_META.min(body) {
                return Err(bad(shown, "sparse map too large"));
            }
            r.read_exact(&mut block)?;
            text.extend_from_slice(&block);
            nums.clear();
            want = None;
            let complete = text.split(|&b| b == b'\n');
            let mut parts: Vec<&[u8]> = complete.collect();
            parts.pop(); // the unfinished line (or the padding)
            for p in parts {
                let n = number(p).ok_or_else(|| bad(shown, "malformed sparse map"))?;
                match want {
                    None => {
                        if n > MAX_META / 4 {
                            return Err(bad(shown, "sparse map too large"));
                        }
                        want = Some(1 + 2 * n);
                        nums.push(n);
                    }
                    Some(w) if (nums.len() as u64) < w => nums.push(n),
                    Some(_) => break,
                }
            }
        }
        let segs: Vec<(u64, u64)> = nums[1..].chunks_exact(2).map(|p| (p[0], p[1])).collect();
        self.segments(r, file, &segs, body - text.len() as u64, realsize, shown)
    }

    /// Writes each data segment `(offset, length)` of a sparse file from
    /// `r` (which holds `left` bytes) at its offset, then sets its size.
    fn segments(
        &mut self,
        r: &mut impl Read,
        file: &mut File,
        segs: &[(u64, u64)],
        mut left: u64,
        realsize: u64,
        shown: &str,
    ) -> io::Result<()> {
        let mut end = 0u64;
        for &(off, len) in segs {
            let stop = off
                .checked_add(len)
                .filter(|&s| s <= realsize && off >= end);
            let Some(stop) = stop.filter(|_| len <= left) else {
                return Err(bad(shown, "sparse map out of order or beyond the data"));
            };
            file.seek(SeekFrom::Start(off))
                .map_err(io_ctx(format!("cannot write {shown}")))?;
            if self.copy(r, file, len, shown)? != len {
                return Err(bad(shown, "sparse data cut short"));
            }
            left -= len;
            end = stop;
        }
        file.set_len(realsize)
            .map_err(io_ctx(format!("cannot write {shown}")))?;
        Ok(())
    }

    /// Writes a small file of this machine's (`--hostname`,
    /// `--machine-id`, the NoCloud seed, the apply report) at `rel`, owned by root with `mode`, replacing what
    /// the archive put there; through the same checks as an entry, so a
    /// symlink in the image cannot send it elsewhere.
    pub(super) fn put_file(&mut self, rel: &[u8], content: &[u8], mode: u32) -> Result<(), String> {
        let shown = format!("./{}", escape(rel));
        let (parent_rel, name) = split(rel);
        let parent = match self.target.dir(parent_rel) {
            Ok(fd) => fd,
            Err(Fault::Refused(why)) => return Err(format!("{shown}: refused ({why})")),
            Err(Fault::Io(e)) => return Err(format!("{shown}: {e}")),
        };
        let write = || -> io::Result<()> {
            if !remove(&*parent, name)? {
                return Err(io::Error::other("a non-empty directory is in the way"));
            }
            let flags =
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let mut f = File::from(rustix::fs::openat(
                &*parent,
                name,
                flags,
                Mode::from_raw_mode(0o600),
            )?);
            f.write_all(content)?;
            rustix::fs::fchown(&f, Some(rustix::fs::Uid::ROOT), Some(rustix::fs::Gid::ROOT))?;
            rustix::fs::fchmod(&f, Mode::from_raw_mode(mode))?;
            Ok(())
        };
        self.target.forget();
        write().map_err(|e| format!("{shown}: {e}"))
    }

    /// Removes the file `rel` if it is there (beneath the target, as
    /// [`Extractor::put_file`] writes).
    pub(super) fn remove_file(&mut self, rel: &[u8]) -> Result<(), String> {
        let shown = format!("./{}", escape(rel));
        let (parent_rel, name) = split(rel);
        let parent = match self.target.existing_dir(parent_rel) {
            Ok(fd) => fd,
            Err(Fault::Io(e)) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(Fault::Refused(why)) => return Err(format!("{shown}: refused ({why})")),
            Err(Fault::Io(e)) => return Err(format!("{shown}: {e}")),
        };
        self.target.forget();
        match remove(&parent, name) {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!("{shown}: a non-empty directory is in the way")),
            Err(e) => Err(format!("{shown}: {e}")),
        }
    }

    /// Leaves the directory `rel` as this machine's step set it: its
    /// archived metadata is not set at the end.
    pub(super) fn keep_dir(&mut self, rel: &[u8]) {
        self.dirs.retain(|d| d.rel != rel);
    }

    /// The target, for this machine's writes beneath it.
    pub(super) fn target(&mut self) -> &mut Target {
        &mut self.target
    }

    /// Sets the metadata of every directory but the root, deepest first.
    pub(super) fn finish_dirs(&mut self) {
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by(|a, b| b.rel.cmp(&a.rel));
        self.root_dir = dirs
            .iter()
            .position(|d| d.rel.is_empty())
            .map(|i| dirs.remove(i));
        for d in &dirs {
            match self.target.existing_dir(&d.rel) {
                Ok(fd) => self.finish_fd(&fd, &d.rel, &d.meta),
                Err(Fault::Refused(why)) => self.warn(&d.rel, "metadata not set", why),
                Err(Fault::Io(e)) => self.warn(&d.rel, "metadata not set", e),
            }
        }
    }

    /// Sets the root's metadata, after [`Extractor::finish_dirs`];
    /// `before` runs just before (the marker's removal, which changes the
    /// root's mtime).
    pub(super) fn finish_root(
        &mut self,
        before: impl FnOnce(&OwnedFd) -> io::Result<()>,
    ) -> io::Result<()> {
        before(self.target.root())?;
        if let Some(d) = self.root_dir.take() {
            let fd = rustix::io::fcntl_dupfd_cloexec(self.target.root(), 0)?;
            self.finish_fd(&fd, b"", &d.meta);
        }
        Ok(())
    }
}

fn bad(shown: &str, why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{shown}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        assert_eq!(
            parse_time(b"1612325106.123456789"),
            Some((1_612_325_106, 123_456_789))
        );
        assert_eq!(parse_time(b"5"), Some((5, 0)));
        assert_eq!(parse_time(b"5.5"), Some((5, 500_000_000)));
        assert_eq!(parse_time(b"-1.500000000"), Some((-2, 500_000_000)));
        assert_eq!(parse_time(b"-315619200"), Some((-315_619_200, 0)));
        assert_eq!(parse_time(b"x"), None);
        assert_eq!(parse_time(b"1.2x"), None);
    }

    #[test]
    fn pax_records_keep_their_newlines() {
        let body = crate::archive::header::encode_pax(&[
            ("SCHILY.xattr.user.a".into(), b"line1\nline2=x\n".to_vec()),
            ("path".into(), b"./a b".to_vec()),
            (
                "SCHILY.acl.access".into(),
                b"user::rwx\nother::r--\n".to_vec(),
            ),
        ]);
        let r = records(&body);
        assert_eq!(
            r,
            [
                (&b"SCHILY.xattr.user.a"[..], &b"line1\nline2=x\n"[..]),
                (b"path", b"./a b"),
                (b"SCHILY.acl.access", b"user::rwx\nother::r--\n"),
            ]
        );
        // tar-rs splits them.
        assert!(tar::PaxExtensions::new(&body).any(|e| e.is_err()));
        // Malformed: stops there.
        assert_eq!(records(b"9 a=b\n"), []);
        assert_eq!(records(b"6 a=b\n99 c=d\n").len(), 1);
        assert_eq!(records(b"x a=b\n"), []);
    }

    #[test]
    fn xattr_names_decode() {
        assert_eq!(xattr_name(b"user.a%3Db%25c"), b"user.a=b%c");
        assert_eq!(xattr_name(b"user.%"), b"user.%");
    }
}
