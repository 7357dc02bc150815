//! The walk: every entry under the root, in sorted order, with its `lstat`,
//! pruned by the policy, with synthetic entries merged in.
//!
//! First stage of the pipeline (walk → policy → tar writer → hash →
//! compressor → sink). Built on `walkdir` with `follow_links(false)` and
//! `sort_by_file_name()`, so output is deterministic: siblings in byte
//! order, depth first. That order is the lexicographic order of component
//! lists ([`walk_cmp`]), which lets synthetic entries (the top-level
//! `curtin/` directory, later scrub additions) be merged in where a real
//! entry would be.
//!
//! Mounts are decided per directory: [`crate::mounts::MountTable`] names
//! mount points (bind mounts included); without `/proc` a change of
//! `st_dev` marks one. The [`Policy`] decides whether to descend. A
//! directory kept without its content is still yielded (its mode matters to
//! the deployed system) and `walkdir` is told to skip its content.
//!
//! Memory: walkdir holds one sorted listing per open directory level, so
//! memory follows depth × width, never file sizes. This module must never
//! open a file for reading or follow a symlink, and never modify anything.

use crate::mounts::{MountTable, pseudo_fstype_from_magic};
use crate::policy::{Candidate, Decision, MountKind, Policy, Reason};
use crate::report::WarningKind;
use crate::util::io_reason;
use std::cmp::Ordering;
use std::collections::VecDeque;
use std::ffi::CString;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use walkdir::WalkDir;

/// An entry found on disk.
#[derive(Debug)]
pub struct SourceEntry {
    /// Host path.
    pub abs: PathBuf,
    /// Path relative to the root, no leading `./`; empty for the root.
    pub rel: Vec<u8>,
    /// `lstat` at the time it was found.
    pub meta: Metadata,
}

/// A directory the archive must contain whether or not the root has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticDir {
    /// Path relative to the root.
    pub rel: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time (seconds since the epoch).
    pub mtime: i64,
}

/// What the walk reports, in archive order.
#[derive(Debug)]
pub enum Event {
    /// Archive this entry. `note` says why a directory's content is left out.
    Entry {
        /// The entry.
        entry: SourceEntry,
        /// Set when only the directory itself is kept.
        note: Option<Reason>,
    },
    /// Left out, with everything below it.
    Dropped {
        /// Path relative to the root.
        rel: Vec<u8>,
        /// Why.
        reason: Reason,
    },
    /// A synthetic directory the root lacks.
    Synthetic(SyntheticDir),
    /// Something could not be read; the walk goes on.
    Problem {
        /// Path relative to the root.
        rel: Vec<u8>,
        /// Category.
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

/// The walk over one root.
pub struct Walker<'p> {
    it: walkdir::IntoIter,
    root: PathBuf,
    policy: &'p Policy,
    mounts: Option<MountTable>,
    /// `st_dev` of the directory at each depth of the current path.
    devs: Vec<u64>,
    synthetic: VecDeque<SyntheticDir>,
    peeked: Option<Event>,
}

impl<'p> Walker<'p> {
    /// Walks `root` (absolute, canonical). `synthetic` entries are merged
    /// in when the root lacks a directory of that name.
    pub fn new(
        root: &Path,
        policy: &'p Policy,
        mounts: Option<MountTable>,
        mut synthetic: Vec<SyntheticDir>,
    ) -> Self {
        synthetic.sort_by(|a, b| walk_cmp(&a.rel, &b.rel));
        let it = WalkDir::new(root)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter();
        Walker {
            it,
            root: root.to_path_buf(),
            policy,
            mounts,
            devs: Vec::new(),
            synthetic: synthetic.into(),
            peeked: None,
        }
    }

    fn rel_of(&self, p: &Path) -> Vec<u8> {
        p.strip_prefix(&self.root)
            .unwrap_or(p)
            .as_os_str()
            .as_bytes()
            .to_vec()
    }

    fn mount_kind(
        &self,
        path: &Path,
        meta: &Metadata,
        parent_dev: Option<u64>,
    ) -> Option<MountKind<'_>> {
        if let Some(table) = &self.mounts {
            return table.at(path).map(|m| MountKind {
                fstype: &m.fstype,
                pseudo: m.is_pseudo(),
            });
        }
        if parent_dev.is_some_and(|d| d != meta.dev()) {
            let fstype = statfs_magic(path).and_then(pseudo_fstype_from_magic);
            return Some(MountKind {
                fstype: fstype.unwrap_or(""),
                pseudo: fstype.is_some(),
            });
        }
        None
    }

    fn next_real(&mut self) -> Option<Event> {
        let dent = match self.it.next()? {
            Ok(d) => d,
            // walkdir reports a directory it cannot list after yielding the
            // directory itself, which is archived; only its content is lost.
            Err(e) => {
                let rel = e.path().map(|p| self.rel_of(p)).unwrap_or_default();
                let error = e
                    .into_io_error()
                    .unwrap_or_else(|| io::Error::other("filesystem loop"));
                let (kind, message) = if error.kind() == io::ErrorKind::NotFound {
                    (
                        WarningKind::Vanished,
                        "vanished while its directory was listed".to_owned(),
                    )
                } else {
                    let why = io_reason(&error);
                    (
                        WarningKind::Unreadable,
                        format!("cannot list directory: {why}; its content is not archived"),
                    )
                };
                return Some(Event::Problem { rel, kind, message });
            }
        };
        // walkdir has already opened (pushed) every directory it saw as one.
        let pushed = dent.file_type().is_dir();
        let depth = dent.depth();
        let rel = self.rel_of(dent.path());
        let meta = match fs::symlink_metadata(dent.path()) {
            Ok(m) => m,
            Err(error) => {
                if pushed {
                    self.it.skip_current_dir();
                }
                let (kind, message) = if error.kind() == io::ErrorKind::NotFound {
                    (
                        WarningKind::Vanished,
                        "vanished before it could be read; not archived".to_owned(),
                    )
                } else {
                    (
                        WarningKind::Unreadable,
                        format!("cannot stat: {}; not archived", io_reason(&error)),
                    )
                };
                return Some(Event::Problem { rel, kind, message });
            }
        };
        self.devs.truncate(depth);
        let parent_dev = depth.checked_sub(1).and_then(|d| self.devs.get(d).copied());
        let is_dir = meta.is_dir();
        if is_dir {
            self.devs.push(meta.dev());
        }
        let decision = {
            let mount = if is_dir && depth > 0 {
                self.mount_kind(dent.path(), &meta, parent_dev)
            } else {
                None
            };
            self.policy.decide(&Candidate {
                rel: &rel,
                is_dir,
                is_socket: meta.file_type().is_socket(),
                mount,
            })
        };
        let entry = SourceEntry {
            abs: dent.into_path(),
            rel,
            meta,
        };
        Some(match decision {
            Decision::Keep => Event::Entry { entry, note: None },
            Decision::KeepDirOnly(reason) => {
                if pushed {
                    self.it.skip_current_dir();
                }
                Event::Entry {
                    entry,
                    note: Some(reason),
                }
            }
            Decision::Drop(reason) => {
                if pushed {
                    self.it.skip_current_dir();
                }
                Event::Dropped {
                    rel: entry.rel,
                    reason,
                }
            }
        })
    }
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
            Ordering::Equal => match ev {
                // The root has it: the real directory wins.
                Event::Entry { ref entry, .. } if entry.meta.is_dir() => {
                    self.synthetic.pop_front();
                    Some(ev)
                }
                // Something else under that name: replace it, and say so.
                Event::Entry { entry, .. } => {
                    let synth = self.synthetic.pop_front().map(Event::Synthetic);
                    self.peeked = synth;
                    Some(Event::Problem {
                        rel: entry.rel,
                        kind: WarningKind::Replaced,
                        message: "not a directory; replaced by an empty directory in the archive"
                            .into(),
                    })
                }
                // Dropped by --exclude or unreadable: the synthetic one follows.
                other => Some(other),
            },
        }
    }
}

fn statfs_magic(path: &Path) -> Option<i64> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut s = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `s` points to writable
    // memory of the right size; statfs fills it on success.
    let rc = unsafe { libc::statfs(c.as_ptr(), s.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statfs returned 0, so the struct is initialised.
    #[allow(clippy::unnecessary_cast)]
    Some(unsafe { s.assume_init() }.f_type as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Excludes;

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

    fn events(root: &Path, excl: &[&str], synth: Vec<SyntheticDir>) -> Vec<String> {
        let ex = Excludes::new(&excl.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        let p = Policy::new(ex, vec![], None);
        Walker::new(root, &p, None, synth)
            .map(|e| match e {
                Event::Entry { entry, note: None } => {
                    format!("E {}", String::from_utf8_lossy(&entry.rel))
                }
                Event::Entry {
                    entry,
                    note: Some(r),
                } => format!("D {} ({})", String::from_utf8_lossy(&entry.rel), r.kind()),
                Event::Dropped { rel, reason } => {
                    format!("X {} ({})", String::from_utf8_lossy(&rel), reason.kind())
                }
                Event::Synthetic(s) => format!("S {}", String::from_utf8_lossy(&s.rel)),
                Event::Problem { rel, message, .. } => {
                    format!("P {} {message}", String::from_utf8_lossy(&rel))
                }
            })
            .collect()
    }

    fn curtin() -> SyntheticDir {
        SyntheticDir {
            rel: b"curtin".to_vec(),
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
        }
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
}
