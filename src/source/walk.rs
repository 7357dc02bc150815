//! The walk: every entry under the root, in sorted order, with its `lstat`,
//! pruned by the policy *before* anything below a pruned directory is
//! opened, with synthetic entries merged in.
//!
//! The first stage: it asks the policy about each entry (a [`Decide`]) and
//! hands what is kept to the tar writer. Siblings come in byte order, depth
//! first, so output is deterministic; that order is the lexicographic order of
//! component lists ([`walk_cmp`]), which lets synthetic entries (the top-level
//! `curtin/` directory, later scrub additions) be merged in where a real entry
//! would be.
//!
//! Why not `walkdir`: it opens and lists every directory as soon as it meets
//! it, before the caller can decide. On a live server that means listing
//! `/proc`, triggering automounts (a systemd automount of `/boot/efi`, autofs
//! home directories) and hanging on a dead NFS server just to then skip them.
//! Here the policy decides first and a directory is opened only to descend into
//! it — relative to its parent's descriptor with `O_NOFOLLOW|O_NOATIME`
//! ([`crate::source::fsx`]), so a symlink swapped in mid-capture cannot lead
//! outside the root and directory atimes stay as they were.
//!
//! Mounts: [`MountTable`] names mount points (bind mounts included); without
//! `/proc`, a change of `st_dev` marks one. Memory: one sorted name list and
//! one descriptor per directory level on the current path — depth × width,
//! never file sizes. This module must never read file content, follow a
//! symlink, or modify anything.

use crate::entry::{
    Candidate, Decide, Decision, FileKind, MountKind, Reason, SourceEntry, Stat, SynthKind,
    Synthetic,
};
use crate::report::WarningKind;
use crate::source::fsx;
use crate::source::mounts::{Mount, MountTable, pseudo_fstype_from_magic};
use crate::util::io_reason;
use std::cmp::Ordering;
use std::collections::VecDeque;
use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// What the walk reports, in archive order.
#[derive(Debug)]
pub enum Event {
    /// Archive this entry. `note` says why a directory's content is left out.
    Entry {
        entry: SourceEntry,
        /// Set when only the directory itself is kept.
        note: Option<Reason>,
        /// Scrub rules the writer applies (indices into the plan; empty for
        /// none).
        scrub: Vec<usize>,
    },
    /// Left out, with everything below it.
    Dropped {
        /// Path relative to the root.
        rel: Vec<u8>,
        reason: Reason,
        stat: Stat,
        /// For a directory dropped by the scrub: bytes and entries below it
        /// (same filesystem only), for the report.
        subtree: Option<(u64, u64)>,
        /// The directory holding it, open.
        parent: Rc<OwnedFd>,
        /// Its name in `parent`.
        name: CString,
    },
    /// An entry goldcap adds.
    Synthetic(Synthetic),
    /// Something could not be read; the walk goes on.
    Problem {
        /// Path relative to the root.
        rel: Vec<u8>,
        kind: WarningKind,
        /// What happened and what it means for the archive.
        message: String,
    },
}

impl Event {
    fn rel(&self) -> &[u8] {
        match self {
            Event::Entry { entry, .. } => &entry.rel,
            Event::Dropped { rel, .. } | Event::Problem { rel, .. } => rel,
            Event::Synthetic(s) => &s.rel,
        }
    }
}

/// Orders root-relative paths as the walk yields them: component by
/// component, bytewise, a parent before its children.
pub fn walk_cmp(a: &[u8], b: &[u8]) -> Ordering {
    if a.is_empty() || b.is_empty() {
        return a.len().min(1).cmp(&b.len().min(1));
    }
    let mut ai = a.split(|&c| c == b'/');
    let mut bi = b.split(|&c| c == b'/');
    loop {
        match (ai.next(), bi.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => match x.cmp(y) {
                Ordering::Equal => continue,
                o => return o,
            },
        }
    }
}

/// Levels of the current path that keep their directory open; a deeper
/// walk closes the oldest ones and reopens them on the way back up.
const OPEN_LEVELS: usize = 64;

/// One directory on the current path, listed.
struct Level {
    /// Open while it is among the [`OPEN_LEVELS`] deepest levels; reopened
    /// from its nearest open ancestor when the walk comes back to it.
    fd: Option<Rc<OwnedFd>>,
    names: Vec<CString>,
    next: usize,
    /// Its path's length in [`Walker::rel`] and [`Walker::abs`].
    rel_len: usize,
    abs_len: usize,
    /// Its name in its parent, and its identity, to reopen it safely.
    name: CString,
    dev: u64,
    ino: u64,
    is_output: bool,
}

/// The walk over one root.
pub struct Walker<'p> {
    root: PathBuf,
    policy: &'p dyn Decide,
    mounts: Option<MountTable>,
    /// The storage holding the root (for btrfs subvolume / ZFS dataset mounts).
    root_storage: Option<Mount>,
    /// `(st_dev, st_ino)` of goldcap's output directory.
    output_dir: Option<(u64, u64)>,
    stack: Vec<Level>,
    /// The path of the deepest level, root-relative and on the host: one
    /// buffer each, extended going down and cut going up, so memory follows
    /// the current path's length (not depth × length).
    rel: Vec<u8>,
    abs: Vec<u8>,
    started: bool,
    pending: VecDeque<Event>,
    synthetic: VecDeque<Synthetic>,
    peeked: Option<Event>,
}

fn join_rel(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut rel = Vec::with_capacity(dir.len() + name.len() + 1);
    rel.extend_from_slice(dir);
    if !dir.is_empty() {
        rel.push(b'/');
    }
    rel.extend_from_slice(name);
    rel
}

impl<'p> Walker<'p> {
    /// Walks `root` (absolute, canonical). `synthetic` entries are merged
    /// in when the root lacks a directory of that name; `output_dir` is the
    /// identity of goldcap's output directory, whose own files are left out.
    pub fn new(
        root: &Path,
        policy: &'p dyn Decide,
        mounts: Option<MountTable>,
        output_dir: Option<(u64, u64)>,
        mut synthetic: Vec<Synthetic>,
    ) -> Self {
        synthetic.sort_by(|a, b| walk_cmp(&a.rel, &b.rel));
        let root_storage = mounts.as_ref().and_then(|t| t.containing(root)).cloned();
        Walker {
            root: root.to_path_buf(),
            policy,
            mounts,
            root_storage,
            output_dir,
            stack: Vec::new(),
            rel: Vec::new(),
            abs: root.as_os_str().as_bytes().to_vec(),
            started: false,
            pending: VecDeque::new(),
            synthetic: synthetic.into(),
            peeked: None,
        }
    }

    #[allow(clippy::unnecessary_cast)] // f_type is i64 on x86_64, u32 elsewhere
    fn mount_kind(&self, path: &Path, stat: &Stat, parent_dev: u64) -> Option<MountKind<'_>> {
        if let Some(table) = &self.mounts {
            return table.at(path).map(|m| MountKind {
                fstype: &m.fstype,
                pseudo: m.is_pseudo(),
                same_storage: self
                    .root_storage
                    .as_ref()
                    .is_some_and(|r| m.same_storage(r)),
            });
        }
        if stat.dev != parent_dev {
            let magic = rustix::fs::statfs(path).ok().map(|s| s.f_type as i64);
            let fstype = magic.and_then(pseudo_fstype_from_magic);
            return Some(MountKind {
                fstype: fstype.unwrap_or(""),
                pseudo: fstype.is_some(),
                same_storage: false,
            });
        }
        None
    }

    /// Opens and lists a directory to descend into it; a failure is queued
    /// as a problem after the entry itself.
    fn descend(&mut self, parent: &Rc<OwnedFd>, name: &CStr, rel: &[u8], abs: &Path, stat: &Stat) {
        let listed = fsx::open_dir_at(parent.as_fd(), name).and_then(|fd| {
            // The directory must still be the one we stat'ed.
            let now = fsx::fstat(&fd)?;
            if (now.dev, now.ino) != (stat.dev, stat.ino) {
                return Err(io::Error::other("it was replaced while being read"));
            }
            let names = fsx::list_dir(fd.as_fd())?;
            Ok((fd, names))
        });
        match listed {
            Ok((fd, names)) => {
                self.rel.clear();
                self.rel.extend_from_slice(rel);
                self.abs.clear();
                self.abs.extend_from_slice(abs.as_os_str().as_bytes());
                self.stack.push(Level {
                    fd: Some(Rc::new(fd)),
                    names,
                    next: 0,
                    rel_len: self.rel.len(),
                    abs_len: self.abs.len(),
                    name: name.to_owned(),
                    dev: stat.dev,
                    ino: stat.ino,
                    is_output: self.output_dir == Some((stat.dev, stat.ino)),
                });
                self.close_old_levels();
            }
            Err(e) => self
                .pending
                .push_back(if e.kind() == io::ErrorKind::NotFound {
                    Event::Problem {
                        rel: rel.to_vec(),
                        kind: WarningKind::Vanished,
                        message: "vanished while being listed; its content is not archived".into(),
                    }
                } else {
                    Event::Problem {
                        rel: rel.to_vec(),
                        kind: WarningKind::Unreadable,
                        message: format!(
                            "cannot list directory: {}; its content is not archived",
                            io_reason(&e)
                        ),
                    }
                }),
        }
    }

    /// Keeps at most [`OPEN_LEVELS`] levels open: closes the oldest open
    /// one (never the deepest; entries still queued keep their own handle).
    fn close_old_levels(&mut self) {
        let open = self.stack.iter().filter(|l| l.fd.is_some()).count();
        if open > OPEN_LEVELS
            && let Some(old) = self.stack.iter_mut().find(|l| l.fd.is_some())
        {
            old.fd = None;
        }
    }

    /// Makes sure the deepest level is open: reopens it, when it was
    /// closed, from its nearest open ancestor (or the root), one component
    /// at a time with `O_NOFOLLOW`, checking each is still the directory the
    /// walk listed. A level that cannot be reopened that way is given up:
    /// the problem is returned, and the rest of its content is not archived.
    fn reopen_top(&mut self) -> Option<Event> {
        let i = self.stack.len().checked_sub(1)?;
        if self.stack[i].fd.is_some() {
            return None;
        }
        let start = self.stack[..i].iter().rposition(|l| l.fd.is_some());
        let mut fd: Rc<OwnedFd> = match start {
            Some(j) => Rc::clone(self.stack[j].fd.as_ref().expect("open")),
            None => match fsx::open_root(&self.root) {
                Ok(fd) => Rc::new(fd),
                Err(e) => return Some(self.give_up(&e)),
            },
        };
        let first = start.map_or(0, |j| j + 1);
        for k in first..=i {
            let level = &self.stack[k];
            let next = if k == 0 {
                Ok(Rc::clone(&fd))
            } else {
                fsx::open_dir_at(fd.as_fd(), &level.name).map(Rc::new)
            };
            let same = next.and_then(|n| {
                let st = fsx::fstat(n.as_fd())?;
                if (st.dev, st.ino) == (level.dev, level.ino) {
                    Ok(n)
                } else {
                    Err(io::Error::other("it was replaced while being read"))
                }
            });
            match same {
                Ok(n) => fd = n,
                Err(e) => return Some(self.give_up(&e)),
            }
        }
        self.stack[i].fd = Some(fd);
        None
    }

    /// The deepest level could not be reopened: the rest of its names are
    /// dropped with a problem.
    fn give_up(&mut self, e: &io::Error) -> Event {
        let level = self.stack.last_mut().expect("a level");
        level.next = level.names.len();
        Event::Problem {
            rel: self.rel.clone(),
            kind: WarningKind::Changed,
            message: format!(
                "could not be reopened to read the rest of it ({}); the rest of its content is not archived",
                io_reason(e)
            ),
        }
    }

    fn start(&mut self) -> Event {
        let stat = match fsx::lstat(&self.root) {
            Ok(s) => s,
            Err(e) => {
                return Event::Problem {
                    rel: Vec::new(),
                    kind: WarningKind::Unreadable,
                    message: format!("cannot stat the root: {}", io_reason(&e)),
                };
            }
        };
        match fsx::open_root(&self.root).and_then(|fd| fsx::list_dir(fd.as_fd()).map(|n| (fd, n))) {
            Ok((fd, names)) => self.stack.push(Level {
                fd: Some(Rc::new(fd)),
                names,
                next: 0,
                rel_len: 0,
                abs_len: self.abs.len(),
                name: CString::default(),
                dev: stat.dev,
                ino: stat.ino,
                is_output: false,
            }),
            Err(e) => self.pending.push_back(Event::Problem {
                rel: Vec::new(),
                kind: WarningKind::Unreadable,
                message: format!("cannot list the root: {}", io_reason(&e)),
            }),
        }
        let entry = SourceEntry {
            abs: self.root.clone(),
            rel: Vec::new(),
            stat,
            parent: None,
            name: CString::default(),
        };
        Event::Entry {
            entry,
            note: None,
            scrub: Vec::new(),
        }
    }

    fn next_real(&mut self) -> Option<Event> {
        if let Some(ev) = self.pending.pop_front() {
            return Some(ev);
        }
        if !self.started {
            self.started = true;
            return Some(self.start());
        }
        loop {
            let top = self.stack.last_mut()?;
            if top.next == top.names.len() {
                self.stack.pop();
                continue;
            }
            let name = top.names[top.next].clone();
            top.next += 1;
            let (rel_len, abs_len) = (top.rel_len, top.abs_len);
            self.rel.truncate(rel_len);
            self.abs.truncate(abs_len);
            if let Some(problem) = self.reopen_top() {
                return Some(problem);
            }
            // Unwrap expectation: the top level exists and was just reopened.
            let top = self.stack.last().expect("a level");
            // Unwrap expectation: `reopen_top` leaves the top level open.
            let fd = Rc::clone(top.fd.as_ref().expect("an open level"));
            let (parent_dev, in_output) = (top.dev, top.is_output);
            let rel = join_rel(&self.rel, name.to_bytes());
            let mut abs = PathBuf::from(OsStr::from_bytes(&self.abs));
            abs.push(OsStr::from_bytes(name.to_bytes()));
            let stat = match fsx::stat_at(fd.as_fd(), &name) {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Some(Event::Problem {
                        rel,
                        kind: WarningKind::Vanished,
                        message: "vanished before it could be read; not archived".into(),
                    });
                }
                Err(e) => {
                    let message = format!("cannot stat: {}; not archived", io_reason(&e));
                    return Some(Event::Problem {
                        rel,
                        kind: WarningKind::Unreadable,
                        message,
                    });
                }
            };
            let is_dir = stat.is_dir();
            let decision = {
                let mount = if is_dir {
                    self.mount_kind(&abs, &stat, parent_dev)
                } else {
                    None
                };
                self.policy.decide(&Candidate {
                    rel: &rel,
                    kind: stat.kind,
                    mount,
                    in_output_dir: in_output,
                })
            };
            let (note, scrub) = match decision {
                Decision::Keep => {
                    if is_dir {
                        self.descend(&fd, &name, &rel, &abs, &stat);
                    }
                    (None, Vec::new())
                }
                Decision::KeepDirOnly(reason) => (Some(reason), Vec::new()),
                Decision::Scrub(hits) => (None, hits),
                Decision::Drop(reason) => {
                    let subtree = (is_dir && matches!(reason, Reason::Scrub(_)))
                        .then(|| du(&fd, &name, parent_dev));
                    return Some(Event::Dropped {
                        rel,
                        reason,
                        stat,
                        subtree,
                        parent: fd,
                        name,
                    });
                }
            };
            let entry = SourceEntry {
                abs,
                rel,
                stat,
                parent: Some(fd),
                name,
            };
            return Some(Event::Entry { entry, note, scrub });
        }
    }
}

/// Bytes and entries below directory `name` in `parent`, on its own
/// filesystem only (stat only, never reading content). Unreadable parts are
/// not counted.
fn du(parent: &OwnedFd, name: &CStr, dev: u64) -> (u64, u64) {
    let (mut bytes, mut entries) = (0u64, 0u64);
    let Ok(fd) = fsx::open_dir_at(parent.as_fd(), name) else {
        return (0, 0);
    };
    let mut stack = vec![fd];
    while let Some(dir) = stack.pop() {
        let Ok(names) = fsx::list_dir(dir.as_fd()) else {
            continue;
        };
        for n in names {
            let Ok(st) = fsx::stat_at(dir.as_fd(), &n) else {
                continue;
            };
            if st.dev != dev {
                continue;
            }
            entries += 1;
            if st.is_dir() {
                if let Ok(sub) = fsx::open_dir_at(dir.as_fd(), &n) {
                    stack.push(sub);
                }
            } else if st.kind == FileKind::File {
                bytes += st.size;
            }
        }
    }
    (bytes, entries)
}

impl Iterator for Walker<'_> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        let real = self.peeked.take().or_else(|| self.next_real());
        let Some(front) = self.synthetic.front() else {
            return real;
        };
        let Some(ev) = real else {
            return self.synthetic.pop_front().map(Event::Synthetic);
        };
        match walk_cmp(&front.rel, ev.rel()) {
            Ordering::Greater => Some(ev),
            Ordering::Less => {
                self.peeked = Some(ev);
                self.synthetic.pop_front().map(Event::Synthetic)
            }
            Ordering::Equal => {
                // Unwrap expectation: `front` was just seen.
                let s = self.synthetic.pop_front().expect("front");
                match ev {
                    Event::Entry { entry, note, scrub } => {
                        let real_is_dir = entry.stat.is_dir();
                        match (&s.kind, real_is_dir) {
                            // The root has the directory: it wins.
                            (SynthKind::Dir, true) => Some(Event::Entry { entry, note, scrub }),
                            // A directory is never replaced by a file.
                            (_, true) => Some(Event::Problem {
                                rel: entry.rel,
                                kind: WarningKind::Replaced,
                                message:
                                    "is a directory; goldcap's entry of that name was not added"
                                        .into(),
                            }),
                            // A directory goldcap needs (curtin/) where a file is.
                            (SynthKind::Dir, false) => {
                                self.peeked = Some(Event::Synthetic(s));
                                Some(Event::Problem {
                                    rel: entry.rel,
                                    kind: WarningKind::Replaced,
                                    message: "not a directory; replaced by an empty directory in the archive".into(),
                                })
                            }
                            (_, false) if s.replace => Some(Event::Synthetic(s)),
                            (_, false) => Some(Event::Entry { entry, note, scrub }),
                        }
                    }
                    // Dropped by --exclude or the scrub, or unreadable: the
                    // synthetic entry follows it.
                    other => {
                        self.synthetic.push_front(s);
                        Some(other)
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::policy::{Excludes, Policy};
    use std::fs;

    #[test]
    fn walk_order_table() {
        use Ordering::*;
        let rows: &[(&str, &str, Ordering)] = &[
            ("", "a", Less),
            ("a", "", Greater),
            ("", "", Equal),
            ("a", "a/b", Less),
            ("a/b", "a.b", Less), // component order, not string order
            ("boot/x/y", "curtin", Less),
            ("curtin", "dev", Less),
            ("curtin", "curtin", Equal),
            ("etc", "curtin", Greater),
        ];
        for (a, b, want) in rows {
            assert_eq!(walk_cmp(a.as_bytes(), b.as_bytes()), *want, "{a} vs {b}");
        }
    }

    fn events(root: &Path, excl: &[&str], synth: Vec<Synthetic>) -> Vec<String> {
        let ex = Excludes::new(&excl.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        let p = Policy::new(ex, vec![]);
        Walker::new(root, &p, None, None, synth)
            .map(|e| match e {
                Event::Entry {
                    entry, note: None, ..
                } => {
                    format!("E {}", String::from_utf8_lossy(&entry.rel))
                }
                Event::Entry {
                    entry,
                    note: Some(r),
                    ..
                } => {
                    format!("D {} ({})", String::from_utf8_lossy(&entry.rel), r.kind())
                }
                Event::Dropped { rel, reason, .. } => {
                    format!("X {} ({})", String::from_utf8_lossy(&rel), reason.kind())
                }
                Event::Synthetic(s) => format!("S {}", String::from_utf8_lossy(&s.rel)),
                Event::Problem { rel, message, .. } => {
                    format!("P {} {message}", String::from_utf8_lossy(&rel))
                }
            })
            .collect()
    }

    fn curtin() -> Synthetic {
        Synthetic::dir(b"curtin".to_vec(), 0)
    }

    fn file(rel: &str, replace: bool) -> Synthetic {
        Synthetic {
            rel: rel.as_bytes().to_vec(),
            kind: SynthKind::File(b"x".to_vec()),
            replace,
            ..curtin()
        }
    }

    #[test]
    fn synthetic_files_replace_only_when_asked_and_never_a_directory() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("etc/d")).unwrap();
        fs::write(t.path().join("etc/keep"), "x").unwrap();
        fs::write(t.path().join("etc/swap"), "x").unwrap();
        let synth = vec![
            file("etc/d", true),
            file("etc/keep", false),
            file("etc/new", false),
            file("etc/swap", true),
        ];
        let got = events(t.path(), &[], synth);
        assert_eq!(
            got,
            [
                "E ",
                "E etc",
                "P etc/d is a directory; goldcap's entry of that name was not added",
                "E etc/keep",
                "S etc/new",
                "S etc/swap",
            ]
        );
    }

    #[test]
    fn sorted_pruned_and_merged() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for d in ["a.b", "a/b", "tmp/junk", "zz", "etc/x"] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        fs::write(r.join("a/b/f"), "x").unwrap();
        fs::write(r.join("etc/x/skip.log"), "x").unwrap();
        let got = events(r, &["*.log"], vec![curtin()]);
        let want = [
            "E ",
            "E a",
            "E a/b",
            "E a/b/f",
            "E a.b",
            "S curtin",
            "E etc",
            "E etc/x",
            "X etc/x/skip.log (excluded)",
            "D tmp (volatile)",
            "E zz",
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn existing_curtin_wins_and_a_file_is_replaced() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("curtin")).unwrap();
        assert_eq!(events(t.path(), &[], vec![curtin()]), ["E ", "E curtin"]);

        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("curtin"), "x").unwrap();
        let got = events(t.path(), &[], vec![curtin()]);
        assert_eq!(
            got[1],
            "P curtin not a directory; replaced by an empty directory in the archive"
        );
        assert_eq!(got[2], "S curtin");

        // Excluded: the synthetic one still appears, after it.
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("curtin/x")).unwrap();
        assert_eq!(
            events(t.path(), &["./curtin"], vec![curtin()]),
            ["E ", "X curtin (excluded)", "S curtin"]
        );
        // Empty root.
        let t = tempfile::tempdir().unwrap();
        assert_eq!(events(t.path(), &[], vec![curtin()]), ["E ", "S curtin"]);
    }

    #[test]
    fn directory_atimes_are_left_alone() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("d");
        fs::create_dir_all(d.join("e")).unwrap();
        // atime older than mtime: relatime would update it on any read.
        let old = rustix::fs::Timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 0,
        };
        let now = rustix::fs::Timespec {
            tv_sec: 2_000_000_000,
            tv_nsec: 0,
        };
        let times = rustix::fs::Timestamps {
            last_access: old,
            last_modification: now,
        };
        rustix::fs::utimensat(rustix::fs::CWD, &d, &times, rustix::fs::AtFlags::empty()).unwrap();
        let _ = events(t.path(), &[], vec![]);
        let after = rustix::fs::stat(&d).unwrap();
        assert_eq!(
            after.st_atime as i64, 1_000_000_000,
            "listing a directory changed its atime"
        );
    }
}
