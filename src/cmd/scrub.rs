//! `goldcap scrub`: list the identity-scrub catalogue, or apply it in
//! place to a chroot or a mounted image, for gold builds (DRP
//! image-builder runs its tasks inside the chroot, so there `--root /` is
//! the gold root).
//!
//! The same walk, policy and [`decide()`] as the capture, acting on the
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
//! With `--dry-run` nothing changes and the same per-item report is
//! produced. Every path is reached through its parent directory's
//! descriptor, never by following a link. The configuration has already
//! refused the booted system's root.

use super::{print_json, print_text, show, warnings_status, warnings_tail};
use crate::cli::config::{InPlace, ScrubConfig};
use crate::entry::{FileKind as Kind, Reason, SourceEntry, Stat, SynthKind, Synthetic};
use crate::output::manifest::ScrubSection;
use crate::report::error::{Error, Result};
use crate::report::exit::ExitCode;
use crate::report::ui::{Ui, human};
use crate::report::{Effect, Report, WarningKind};
use crate::select::policy::Policy;
use crate::select::scrub::{Catalogue, Outcome, Plan, decide, needs_content};
use crate::signals::Cancel;
use crate::source::fsx;
use crate::source::mounts::MountTable;
use crate::source::walk::{Event, Walker};
use crate::util::io_reason;
use anyhow::Context as _;
use rustix::fs::{AtFlags, Mode, OFlags};
use serde::Serialize;
use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Largest file a line-editing action reads into memory.
const EDIT_LIMIT: u64 = 16 << 20;

/// Runs `goldcap scrub` and prints its result.
pub(super) fn run(cfg: &ScrubConfig, verbosity: i8) -> Result<ExitCode> {
    match cfg {
        ScrubConfig::List { catalogue, json } => list(catalogue, *json),
        ScrubConfig::InPlace(cfg) => {
            let InPlace {
                root,
                policy,
                mounts,
                dry_run,
                json,
            } = &**cfg;
            let cancel = Cancel::install().context("cannot install signal handlers")?;
            // Per-item lines go to stdout (they are this command's output),
            // so the report itself stays quiet on stderr except for warnings.
            let ui = Ui::new(verbosity.min(0), false);
            let mut report = Report::new(&ui);
            // Unwrap expectation: the configuration gives the policy a plan.
            let plan = policy.scrub().expect("plan");
            for alert in plan.alerts() {
                ui.warn(&alert);
            }
            if let Some(off) = super::capture::identity_kept(plan) {
                ui.warn(&format!(
                    "identity kept in {} by {off}: every clone made from it shares what they guard",
                    show(root)
                ));
            }
            apply(
                root,
                policy,
                plan,
                mounts.clone(),
                *dry_run,
                &mut report,
                &cancel,
            )?;
            let warnings = report.warning_count;
            let section = ScrubSection::new(Some(plan), &mut report);
            if *json {
                #[derive(Serialize)]
                struct Out<'a> {
                    root: String,
                    dry_run: bool,
                    #[serde(flatten)]
                    scrub: &'a ScrubSection,
                    warnings: u64,
                    warning_details: &'a [crate::report::Warning],
                }
                print_json(&Out {
                    root: show(root),
                    dry_run: *dry_run,
                    scrub: &section,
                    warnings,
                    warning_details: &report.warnings,
                })?;
            } else if verbosity >= 0 {
                let mut buf = Vec::new();
                section
                    .write_text(&mut buf)
                    .context("cannot format the report")?;
                print_text(&String::from_utf8_lossy(&buf))?;
                ui.say(&format!(
                    "goldcap: {} {} in {} ({} removed){}",
                    if *dry_run { "would scrub" } else { "scrubbed" },
                    crate::report::ui::count(section.item_count, "item", "items"),
                    show(root),
                    human(section.bytes_removed),
                    warnings_tail(warnings)
                ));
            }
            Ok(warnings_status(warnings))
        }
    }
}

/// `goldcap scrub --list`: the catalogue, as a table or JSON.
fn list(catalogue: &Catalogue, json: bool) -> Result<ExitCode> {
    let rows = catalogue.listing();
    if json {
        print_json(&rows)?;
    } else {
        let mut t = format!(
            "{:<22} {:<9} {:<8} {:<22} WHY\n",
            "ID", "CATEGORY", "DEFAULT", "APPLIES TO"
        );
        for r in rows {
            let d = if r.default { "*" } else { "" };
            let aka = match r.aliases.as_slice() {
                [] => String::new(),
                a => format!(" (virt-sysprep: {})", a.join(", ")),
            };
            t.push_str(&format!(
                "{:<22} {:<9} {:<8} {:<22} {}{aka}\n",
                r.id,
                r.category.to_string(),
                d,
                r.applies_to,
                r.why
            ));
        }
        print_text(&t)?;
    }
    Ok(ExitCode::Success)
}

/// The in-place scrub's state.
struct Ctx<'a, 'r, 'u> {
    root: &'a Path,
    plan: &'a Plan,
    mounts: Option<&'a MountTable>,
    scrubbed: HashMap<(u64, u64), bool>,
    dry_run: bool,
    report: &'r mut Report<'u>,
}

/// Scrubs `root` in place (or, with `dry_run`, reports what it would do).
fn apply(
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
                if let Some(parent) = &entry.parent {
                    edit_file(&mut cx, parent.as_fd(), &entry.name, &entry.rel, &scrub);
                }
            }
            Event::Entry { entry, .. } => cx.other_name(&entry),
            Event::Dropped {
                rel,
                reason: Reason::Scrub(op),
                stat,
                subtree,
                parent,
                name,
            } => cx.drop(&rel, op, &stat, subtree, parent.as_fd(), &name),
            Event::Dropped { .. } => {}
            Event::Synthetic(s) => cx.add(root_fd.as_fd(), &s),
            Event::Problem { rel, kind, message } => cx.report.warn(&rel, kind, message),
        }
    }
    if !dry_run {
        rustix::fs::syncfs(&root_fd)
            .map_err(|e| anyhow::anyhow!("cannot sync {}: {e}", root.display()))?;
    }
    Ok(())
}

impl Ctx<'_, '_, '_> {
    /// Another name of an inode the scrub drops elsewhere (its link count
    /// may already be down to one if that name went first): removed too.
    fn other_name(&mut self, entry: &SourceEntry) {
        let st = &entry.stat;
        if st.is_dir() || self.scrubbed.get(&(st.dev, st.ino)) != Some(&true) {
            return;
        }
        let Some(parent) = &entry.parent else { return };
        let done = if self.dry_run {
            Ok(())
        } else {
            unlink(parent.as_fd(), &entry.name)
        };
        let effect = Effect {
            op: "hardlink".into(),
            action: "drop",
            bytes_removed: st.size,
        };
        finish(self, &entry.rel, done, &[effect], "cannot remove");
    }

    /// An entry the scrub drops by path: removed, a directory with
    /// everything below it on its own filesystem.
    fn drop(
        &mut self,
        rel: &[u8],
        op: String,
        stat: &Stat,
        subtree: Option<(u64, u64)>,
        parent: BorrowedFd<'_>,
        name: &CStr,
    ) {
        let bytes = subtree.map_or(
            if stat.kind == Kind::File {
                stat.size
            } else {
                0
            },
            |(b, _)| b,
        );
        let abs = self.root.join(OsStr::from_bytes(rel));
        let done = if self.dry_run {
            Ok(())
        } else if stat.is_dir() {
            let parent_dev = fsx::fstat(parent).map(|s| s.dev);
            parent_dev.and_then(|dev| remove_tree(self, parent, name, &abs, dev, stat))
        } else {
            unlink(parent, name)
        };
        let effect = Effect {
            op,
            action: "drop",
            bytes_removed: bytes,
        };
        finish(self, rel, done, &[effect], "cannot remove");
    }

    /// An entry the scrub adds.
    fn add(&mut self, root: BorrowedFd<'_>, s: &Synthetic) {
        let done = if self.dry_run {
            Ok(())
        } else {
            create(root, s)
        };
        let effects: Vec<Effect> =
            s.op.iter()
                .map(|op| Effect {
                    op: op.clone(),
                    action: "add",
                    bytes_removed: 0,
                })
                .collect();
        finish(self, &s.rel, done, &effects, "cannot create");
    }
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
                kept.push(crate::report::escape::escape(
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
                    crate::report::escape::escape(child.to_bytes()),
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
