//! The scrub applied in place: `goldcap scrub --root DIR` on a chroot or a
//! mounted image, for gold builds (DRP image-builder runs its tasks inside
//! the chroot, so there `--root /` is the gold root).
//!
//! The same walk, policy and [`super::decide`] as the capture, acting on the
//! filesystem instead of the stream: files are edited through their
//! existing inode (owner, mode, xattrs, ACLs and SELinux label stay),
//! dropped directories are removed without crossing into other
//! filesystems, synthetic entries are created. With `dry_run` nothing is
//! changed and the same per-item report is produced. Every path is reached
//! through its parent directory's descriptor, never by following a link.
//! The caller must refuse the booted system's own root.

use super::{Outcome, Plan, decide, needs_content};
use crate::error::{Error, Result};
use crate::fsx::{self, Kind};
use crate::mounts::MountTable;
use crate::policy::{Policy, Reason};
use crate::report::{Report, WarningKind};
use crate::signals::Cancel;
use crate::util::io_reason;
use crate::walk::{Event, SynthKind, Synthetic, Walker};
use rustix::fs::{AtFlags, Mode, OFlags};
use std::ffi::{CStr, CString};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

const EDIT_LIMIT: u64 = 16 << 20;

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
    let walker = Walker::new(root, policy, mounts, None, plan.synthetic.clone());
    let root_fd = fsx::open_root(root)
        .map_err(|e| Error::usage(format!("--root {}: {}", root.display(), io_reason(&e))))?;
    for event in walker {
        cancel.check()?;
        match event {
            Event::Entry { entry, scrub, .. } if !scrub.is_empty() => {
                let Some(parent) = &entry.parent else {
                    continue;
                };
                edit_file(
                    parent.as_fd(),
                    &entry.name,
                    &entry.rel,
                    &scrub,
                    plan,
                    dry_run,
                    report,
                );
            }
            Event::Entry { .. } => {}
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
                let done = if dry_run {
                    Ok(())
                } else if stat.is_dir() {
                    remove_tree(parent.as_fd(), &name, stat.dev)
                } else {
                    rustix::fs::unlinkat(parent.as_fd(), name.as_c_str(), AtFlags::empty())
                        .map_err(Into::into)
                };
                match done {
                    Ok(()) => report.scrubbed(
                        &rel,
                        &[super::Effect {
                            op,
                            action: "drop",
                            bytes_removed: bytes,
                        }],
                    ),
                    Err(e) => report.warn(
                        &rel,
                        WarningKind::Unreadable,
                        format!("cannot remove: {}", io_reason(&e)),
                    ),
                }
            }
            Event::Dropped { .. } => {}
            Event::Synthetic(s) => {
                let done = if dry_run {
                    Ok(())
                } else {
                    create(root_fd.as_fd(), &s)
                };
                match done {
                    Ok(()) => {
                        if let Some(op) = &s.op {
                            report.scrubbed(
                                &s.rel,
                                &[super::Effect {
                                    op: op.clone(),
                                    action: "add",
                                    bytes_removed: 0,
                                }],
                            );
                        }
                    }
                    Err(e) => report.warn(
                        &s.rel,
                        WarningKind::Unreadable,
                        format!("cannot create: {}", io_reason(&e)),
                    ),
                }
            }
            Event::Problem { rel, kind, message } => report.warn(&rel, kind, message),
        }
    }
    if !dry_run {
        rustix::fs::syncfs(&root_fd)
            .map_err(|e| anyhow::anyhow!("cannot sync {}: {e}", root.display()))?;
    }
    Ok(())
}

fn edit_file(
    dir: BorrowedFd<'_>,
    name: &CStr,
    rel: &[u8],
    hits: &[usize],
    plan: &Plan,
    dry_run: bool,
    report: &mut Report<'_>,
) {
    let warn = |report: &mut Report<'_>, what: &str, e: std::io::Error| {
        report.warn(
            rel,
            WarningKind::Unreadable,
            format!("{what}: {}", io_reason(&e)),
        );
    };
    let file = match fsx::open_file_at(dir, name) {
        Ok(f) => f,
        Err(e) => return warn(report, "cannot open", e),
    };
    let Ok(st) = fsx::fstat(&file) else { return };
    if st.kind != Kind::File {
        return;
    }
    let content = if needs_content(plan, hits) {
        if st.size > EDIT_LIMIT {
            report.warn(
                rel,
                WarningKind::Unreadable,
                format!("too large to edit ({} bytes); left as it is", st.size),
            );
            return;
        }
        let mut buf = Vec::new();
        if let Err(e) = (&file).take(EDIT_LIMIT).read_to_end(&mut buf) {
            return warn(report, "cannot read", e);
        }
        Some(buf)
    } else {
        None
    };
    drop(file);
    let (outcome, effects) = decide(plan, hits, st.size, content.as_deref());
    let done: std::io::Result<()> = if dry_run {
        Ok(())
    } else {
        match &outcome {
            Outcome::Unchanged => Ok(()),
            Outcome::Drop => rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(Into::into),
            // Through the same inode: owner, mode, xattrs and labels stay.
            Outcome::Content(bytes) => rustix::fs::openat(
                dir,
                name,
                OFlags::WRONLY | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(std::io::Error::from)
            .and_then(|fd| {
                let mut f = std::fs::File::from(fd);
                f.write_all(bytes)?;
                f.sync_all()
            }),
            Outcome::Symlink(target) => rustix::fs::unlinkat(dir, name, AtFlags::empty())
                .and_then(|_| rustix::fs::symlinkat(target.as_slice(), dir, name))
                .and_then(|_| {
                    rustix::fs::chownat(
                        dir,
                        name,
                        Some(rustix::fs::Uid::from_raw(st.uid)),
                        Some(rustix::fs::Gid::from_raw(st.gid)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                })
                .map_err(Into::into),
        }
    };
    match done {
        Ok(()) => report.scrubbed(rel, &effects),
        Err(e) => warn(report, "cannot change", e),
    }
}

/// Removes directory `name` in `dir` with everything below it, never
/// crossing into another filesystem (a mount point below is an error, and
/// what is on it is left alone).
fn remove_tree(dir: BorrowedFd<'_>, name: &CStr, dev: u64) -> std::io::Result<()> {
    let fd: OwnedFd = fsx::open_dir_at(dir, name)?;
    for child in fsx::list_dir(fd.as_fd())? {
        let st = fsx::stat_at(fd.as_fd(), &child)?;
        if st.dev != dev {
            return Err(std::io::Error::other(format!(
                "{} is another filesystem mounted inside; nothing there was removed",
                String::from_utf8_lossy(child.to_bytes())
            )));
        }
        if st.is_dir() {
            remove_tree(fd.as_fd(), &child, dev)?;
        } else {
            rustix::fs::unlinkat(fd.as_fd(), child.as_c_str(), AtFlags::empty())?;
        }
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
    match &s.kind {
        SynthKind::Dir => {
            if exists.is_none() {
                rustix::fs::mkdirat(dir.as_fd(), leaf.as_c_str(), mode)?;
                let fd = fsx::open_dir_at(dir.as_fd(), &leaf)?;
                rustix::fs::fchmod(&fd, mode)?;
                rustix::fs::fchown(
                    &fd,
                    Some(rustix::fs::Uid::ROOT),
                    Some(rustix::fs::Gid::ROOT),
                )?;
            }
        }
        SynthKind::File(content) => {
            if exists.is_some_and(|e| !e.is_dir()) {
                rustix::fs::unlinkat(dir.as_fd(), leaf.as_c_str(), AtFlags::empty())?;
            }
            let flags =
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let fd = rustix::fs::openat(dir.as_fd(), leaf.as_c_str(), flags, mode)?;
            rustix::fs::fchmod(&fd, mode)?;
            rustix::fs::fchown(
                &fd,
                Some(rustix::fs::Uid::ROOT),
                Some(rustix::fs::Gid::ROOT),
            )?;
            let mut f = std::fs::File::from(fd);
            f.write_all(content)?;
            f.sync_all()?;
        }
        SynthKind::Symlink(target) => {
            if exists.is_some_and(|e| !e.is_dir()) {
                rustix::fs::unlinkat(dir.as_fd(), leaf.as_c_str(), AtFlags::empty())?;
            }
            rustix::fs::symlinkat(target.as_slice(), dir.as_fd(), leaf.as_c_str())?;
        }
    }
    Ok(())
}
