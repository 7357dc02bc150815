//! The scrub applied in place: `goldcap scrub --root DIR` on a chroot or a
//! mounted image, for gold builds (DRP image-builder runs its tasks inside
//! the chroot, so there `--root /` is the gold root).
//!
//! The same walk, policy and [`super::decide`] as the capture, acting on the
//! filesystem instead of the stream:
//!
//! * an edited file is replaced atomically (new content in a temporary file
//!   beside it, owner, mode and xattrs — ACLs, SELinux label, capabilities —
//!   copied, fsynced, renamed over), so a crash never leaves an empty
//!   `/etc/fstab`; a file with several names is edited through its inode
//!   instead, so every name changes;
//! * other names of an inode the scrub drops are removed too;
//! * a dropped directory is removed only on its own filesystem: a mount
//!   point (bind mounts included, per the mount table) is never entered or
//!   removed — what is mounted there belongs to someone else;
//! * synthetic entries are created, with missing parent directories.
//!
//! With `dry_run` nothing changes and the same per-item report is produced.
//! Every path is reached through its parent directory's descriptor, never
//! by following a link. The caller must refuse the booted system's root.

use super::{Effect, Outcome, Plan, decide, needs_content};
use crate::error::{Error, Result};
use crate::fsx::{self, Kind, Stat};
use crate::mounts::MountTable;
use crate::policy::{Policy, Reason};
use crate::report::{Report, WarningKind};
use crate::signals::Cancel;
use crate::util::io_reason;
use crate::walk::{Event, SynthKind, Synthetic, Walker};
use rustix::fs::{AtFlags, Mode, OFlags};
use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const EDIT_LIMIT: u64 = 16 << 20;

struct Ctx<'a, 'r, 'u> {
    root: &'a Path,
    plan: &'a Plan,
    mounts: Option<&'a MountTable>,
    scrubbed: HashMap<(u64, u64), bool>,
    dry_run: bool,
    report: &'r mut Report<'u>,
}

/// Scrubs `root` in place (or, with `dry_run`, reports what it would do).
pub fn run(
    root: &Path,
    policy: &Policy,
    plan: &Plan,
    mounts: Option<MountTable>,
    dry_run: bool,
    report: &mut Report<'_>,
    cancel: &Cancel,
) -> Result<()> {
    let root_fd = fsx::open_root(root)
        .map_err(|e| Error::usage(format!("--root {}: {}", root.display(), io_reason(&e))))?;
    let mut cx = Ctx {
        root,
        plan,
        mounts: mounts.as_ref(),
        scrubbed: plan.prescan(root),
        dry_run,
        report,
    };
    let walker = Walker::new(root, policy, mounts.clone(), None, plan.synthetic.clone());
    for event in walker {
        cancel.check()?;
        match event {
            Event::Entry { entry, scrub, .. } if !scrub.is_empty() => {
                let Some(parent) = &entry.parent else {
                    continue;
                };
                edit_file(&mut cx, parent.as_fd(), &entry.name, &entry.rel, &scrub);
            }
            Event::Entry { entry, .. } => {
                // Another name of an inode the scrub drops elsewhere (its
                // link count may already be down to one if that name went first).
                let st = &entry.stat;
                if !st.is_dir() && cx.scrubbed.get(&(st.dev, st.ino)) == Some(&true) {
                    let Some(parent) = &entry.parent else {
                        continue;
                    };
                    let done = if dry_run {
                        Ok(())
                    } else {
                        unlink(parent.as_fd(), &entry.name)
                    };
                    let effect = Effect {
                        op: "hardlink".into(),
                        action: "drop",
                        bytes_removed: st.size,
                    };
                    finish(&mut cx, &entry.rel, done, &[effect], "cannot remove");
                }
            }
            Event::Dropped {
                rel,
                reason: Reason::Scrub(op),
                stat,
                subtree,
                parent,
                name,
            } => {
                let bytes = subtree.map_or(
                    if stat.kind == Kind::File {
                        stat.size
                    } else {
                        0
                    },
                    |(b, _)| b,
                );
                let abs = root.join(OsStr::from_bytes(&rel));
                let done = if dry_run {
                    Ok(())
                } else if stat.is_dir() {
                    let parent_dev = fsx::fstat(parent.as_fd()).map(|s| s.dev);
                    parent_dev
                        .and_then(|dev| remove_tree(&cx, parent.as_fd(), &name, &abs, dev, &stat))
                } else {
                    unlink(parent.as_fd(), &name)
                };
                finish(
                    &mut cx,
                    &rel,
                    done,
                    &[Effect {
                        op,
                        action: "drop",
                        bytes_removed: bytes,
                    }],
                    "cannot remove",
                );
            }
            Event::Dropped { .. } => {}
            Event::Synthetic(s) => {
                let done = if dry_run {
                    Ok(())
                } else {
                    create(root_fd.as_fd(), &s)
                };
                let effects: Vec<Effect> =
                    s.op.iter()
                        .map(|op| Effect {
                            op: op.clone(),
                            action: "add",
                            bytes_removed: 0,
                        })
                        .collect();
                finish(&mut cx, &s.rel, done, &effects, "cannot create");
            }
            Event::Problem { rel, kind, message } => cx.report.warn(&rel, kind, message),
        }
    }
    if !dry_run {
        rustix::fs::syncfs(&root_fd)
            .map_err(|e| anyhow::anyhow!("cannot sync {}: {e}", root.display()))?;
    }
    Ok(())
}

fn finish(
    cx: &mut Ctx<'_, '_, '_>,
    rel: &[u8],
    done: std::io::Result<()>,
    effects: &[Effect],
    what: &str,
) {
    match done {
        Ok(()) => cx.report.scrubbed(rel, effects),
        Err(e) => cx.report.warn(
            rel,
            WarningKind::Unreadable,
            format!("{what}: {}", io_reason(&e)),
        ),
    }
}

fn unlink(dir: BorrowedFd<'_>, name: &CStr) -> std::io::Result<()> {
    rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(Into::into)
}

fn edit_file(
    cx: &mut Ctx<'_, '_, '_>,
    dir: BorrowedFd<'_>,
    name: &CStr,
    rel: &[u8],
    hits: &[usize],
) {
    let file = match fsx::open_file_at(dir, name) {
        Ok(f) => f,
        Err(e) => {
            return cx.report.warn(
                rel,
                WarningKind::Unreadable,
                format!("cannot open: {}", io_reason(&e)),
            );
        }
    };
    let Ok(st) = fsx::fstat(&file) else { return };
    if st.kind != Kind::File {
        return;
    }
    let content = if needs_content(cx.plan, hits) {
        if st.size > EDIT_LIMIT {
            let msg = format!("too large to edit ({} bytes); left as it is", st.size);
            return cx.report.warn(rel, WarningKind::Unreadable, msg);
        }
        let mut buf = Vec::new();
        if let Err(e) = (&file).take(EDIT_LIMIT).read_to_end(&mut buf) {
            return cx.report.warn(
                rel,
                WarningKind::Unreadable,
                format!("cannot read: {}", io_reason(&e)),
            );
        }
        Some(buf)
    } else {
        None
    };
    let (outcome, effects) = decide(cx.plan, hits, st.size, content.as_deref());
    let done: std::io::Result<()> = if cx.dry_run {
        Ok(())
    } else {
        match &outcome {
            Outcome::Unchanged => Ok(()),
            Outcome::Drop => unlink(dir, name),
            Outcome::Content(bytes) if st.nlink > 1 => rewrite_inode(dir, name, bytes),
            Outcome::Content(bytes) => replace_atomically(dir, name, &file, &st, bytes),
            Outcome::Symlink(target) => rustix::fs::unlinkat(dir, name, AtFlags::empty())
                .and_then(|_| rustix::fs::symlinkat(target.as_slice(), dir, name))
                .and_then(|_| {
                    let (u, g) = (
                        rustix::fs::Uid::from_raw(st.uid),
                        rustix::fs::Gid::from_raw(st.gid),
                    );
                    rustix::fs::chownat(dir, name, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW)
                })
                .map_err(Into::into),
        }
    };
    finish(cx, rel, done, &effects, "cannot change");
}

/// Rewrites a multiply-linked file through its inode, so all names change.
fn rewrite_inode(dir: BorrowedFd<'_>, name: &CStr, bytes: &[u8]) -> std::io::Result<()> {
    let flags = OFlags::WRONLY | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut f = std::fs::File::from(rustix::fs::openat(dir, name, flags, Mode::empty())?);
    f.write_all(bytes)?;
    f.sync_all()
}

/// Writes `bytes` to a temporary file beside `name` with the original's
/// owner, mode and extended attributes, fsyncs it and renames it over.
fn replace_atomically(
    dir: BorrowedFd<'_>,
    name: &CStr,
    orig: &std::fs::File,
    st: &Stat,
    bytes: &[u8],
) -> std::io::Result<()> {
    use xattr::FileExt as _;
    let tmp = CString::new([b".goldcap-edit-".as_slice(), name.to_bytes()].concat())?;
    let _ = rustix::fs::unlinkat(dir, &tmp, AtFlags::empty());
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, &tmp, flags, Mode::from_raw_mode(0o600))?;
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::from(fd);
        f.write_all(bytes)?;
        rustix::fs::fchown(
            &f,
            Some(rustix::fs::Uid::from_raw(st.uid)),
            Some(rustix::fs::Gid::from_raw(st.gid)),
        )?;
        // After chown, which clears setuid bits and capabilities.
        rustix::fs::fchmod(&f, Mode::from_raw_mode(st.perm))?;
        if let Ok(names) = orig.list_xattr() {
            for n in names {
                if let Ok(Some(v)) = orig.get_xattr(&n) {
                    f.set_xattr(&n, &v)?;
                }
            }
        }
        f.sync_all()?;
        rustix::fs::renameat(dir, &tmp, dir, name)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = rustix::fs::unlinkat(dir, &tmp, AtFlags::empty());
    }
    result
}

fn is_mount(cx: &Ctx<'_, '_, '_>, abs: &Path) -> bool {
    cx.mounts.is_some_and(|t| t.at(abs).is_some())
}

/// Removes directory `name` in `dir` with everything below it, on the
/// filesystem `dev` only: a mount point (another device, or a bind mount
/// named in the mount table) is never entered or removed.
fn remove_tree(
    cx: &Ctx<'_, '_, '_>,
    dir: BorrowedFd<'_>,
    name: &CStr,
    abs: &Path,
    dev: u64,
    st: &Stat,
) -> std::io::Result<()> {
    if st.dev != dev || is_mount(cx, abs) {
        return Err(std::io::Error::other("is a mount point; left alone"));
    }
    let fd: OwnedFd = fsx::open_dir_at(dir, name)?;
    let mut kept = Vec::new();
    for child in fsx::list_dir(fd.as_fd())? {
        let cst = fsx::stat_at(fd.as_fd(), &child)?;
        let cabs = abs.join(OsStr::from_bytes(child.to_bytes()));
        if cst.is_dir() {
            if cst.dev != dev || is_mount(cx, &cabs) {
                kept.push(crate::escape::escape(
                    cabs.strip_prefix(cx.root)
                        .unwrap_or(&cabs)
                        .as_os_str()
                        .as_bytes(),
                ));
                continue;
            }
            if let Err(e) = remove_tree(cx, fd.as_fd(), &child, &cabs, dev, &cst) {
                kept.push(format!(
                    "{} ({})",
                    crate::escape::escape(child.to_bytes()),
                    io_reason(&e)
                ));
            }
        } else {
            unlink(fd.as_fd(), &child)?;
        }
    }
    if !kept.is_empty() {
        return Err(std::io::Error::other(format!(
            "mount points inside were left alone, with the directories holding them: ./{}",
            kept.join(", ./")
        )));
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    Ok(())
}

/// Creates a synthetic entry (its parent must exist), owned by root with
/// its mode; an existing non-directory of that name is replaced.
fn create(root: BorrowedFd<'_>, s: &Synthetic) -> std::io::Result<()> {
    let (parent_rel, leaf) = match s.rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&s.rel[..i], &s.rel[i + 1..]),
        None => (&b""[..], &s.rel[..]),
    };
    let mut dir: OwnedFd = rustix::fs::openat(
        root,
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for part in parent_rel.split(|&b| b == b'/').filter(|p| !p.is_empty()) {
        dir = fsx::open_dir_at(dir.as_fd(), &CString::new(part)?)?;
    }
    let leaf = CString::new(leaf)?;
    let mode = Mode::from_raw_mode(s.mode);
    let exists = fsx::stat_at(dir.as_fd(), &leaf).ok();
    let root_owned = (Some(rustix::fs::Uid::ROOT), Some(rustix::fs::Gid::ROOT));
    match &s.kind {
        SynthKind::Dir => {
            if exists.is_none() {
                rustix::fs::mkdirat(dir.as_fd(), leaf.as_c_str(), mode)?;
                let fd = fsx::open_dir_at(dir.as_fd(), &leaf)?;
                rustix::fs::fchmod(&fd, mode)?;
                rustix::fs::fchown(&fd, root_owned.0, root_owned.1)?;
            }
        }
        SynthKind::File(content) => {
            if exists.is_some_and(|e| !e.is_dir()) {
                unlink(dir.as_fd(), &leaf)?;
            }
            let flags =
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let fd = rustix::fs::openat(dir.as_fd(), leaf.as_c_str(), flags, mode)?;
            rustix::fs::fchmod(&fd, mode)?;
            rustix::fs::fchown(&fd, root_owned.0, root_owned.1)?;
            let mut f = std::fs::File::from(fd);
            f.write_all(content)?;
            f.sync_all()?;
        }
        SynthKind::Symlink(target) => {
            if exists.is_some_and(|e| !e.is_dir()) {
                unlink(dir.as_fd(), &leaf)?;
            }
            rustix::fs::symlinkat(target.as_slice(), dir.as_fd(), leaf.as_c_str())?;
        }
    }
    Ok(())
}
