//! The target of `goldcap apply`: directories opened beneath its root,
//! never through a symlink.
//!
//! Part of apply, between the tar reader and every write. Names reach it
//! already relative (no `/` in front, no `..`: `verify`'s `relative`);
//! each directory is opened with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)` from the root's descriptor, or, where `openat2`
//! is missing, one component at a time with `O_NOFOLLOW`. A symlink or a
//! non-directory on the way is a refusal ([`Fault::Refused`]), a missing
//! directory is created (0755, as GNU tar does). Writes then go through the
//! returned descriptor and a single final name, so nothing can land
//! outside the target whatever it holds. This module must never follow a
//! symlink in the target or resolve a name with a `/` or `..` in it.

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;

/// Why a directory could not be opened.
#[derive(Debug)]
pub(super) enum Fault {
    /// The name leads through a symlink or a non-directory: the entry is
    /// refused and listed.
    Refused(String),
    /// The target could not be written (disk full, I/O error).
    Io(io::Error),
}

impl From<Errno> for Fault {
    fn from(e: Errno) -> Self {
        Fault::Io(e.into())
    }
}

/// The target directory, open, with the last parent opened.
pub(super) struct Target {
    root: OwnedFd,
    /// `openat2` works here (Linux 5.6 and later, not filtered out).
    openat2: bool,
    /// The last directory opened (root-relative) and its descriptor.
    last: Option<(Vec<u8>, Rc<OwnedFd>)>,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl Target {
    /// Opens the target directory (the user named it: followed).
    pub(super) fn open(path: &std::path::Path) -> io::Result<Target> {
        let root = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Target {
            root,
            openat2: true,
            last: None,
        })
    }

    /// The root's descriptor.
    pub(super) fn root(&self) -> &OwnedFd {
        &self.root
    }

    /// Forgets the cached directory: something was removed, and the
    /// descriptor may name a directory no longer in the tree.
    pub(super) fn forget(&mut self) {
        self.last = None;
    }

    /// The directory `rel` (root-relative, `/`-separated, no `.` or `..`;
    /// empty for the root), opened without following a symlink and
    /// created where missing.
    pub(super) fn dir(&mut self, rel: &[u8]) -> Result<Rc<OwnedFd>, Fault> {
        if let Some((name, fd)) = &self.last
            && name == rel
        {
            return Ok(Rc::clone(fd));
        }
        let fd = Rc::new(self.open_dir(rel, true)?);
        self.last = Some((rel.to_vec(), Rc::clone(&fd)));
        Ok(fd)
    }

    /// Opens an existing directory `rel` without creating anything.
    pub(super) fn existing_dir(&mut self, rel: &[u8]) -> Result<OwnedFd, Fault> {
        self.open_dir(rel, false)
    }

    fn open_dir(&mut self, rel: &[u8], create: bool) -> Result<OwnedFd, Fault> {
        if rel.is_empty() {
            return Ok(rustix::io::fcntl_dupfd_cloexec(&self.root, 0)?);
        }
        if self.openat2 {
            let how =
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            match rustix::fs::openat2(&self.root, rel, DIR_FLAGS, Mode::empty(), how) {
                Ok(fd) => return Ok(fd),
                Err(Errno::NOSYS | Errno::PERM) => self.openat2 = false,
                // A missing component (created on the way), a rename
                // that raced the lookup, a symlink or a non-directory on
                // the way: the walk settles the first two and names the
                // component at fault for the others.
                Err(Errno::NOENT | Errno::AGAIN | Errno::LOOP | Errno::NOTDIR) => {}
                Err(e) => return Err(refusal(rel, e)),
            }
        }
        self.walk(rel, create)
    }

    /// One component at a time with `O_NOFOLLOW`, creating what is missing.
    fn walk(&self, rel: &[u8], create: bool) -> Result<OwnedFd, Fault> {
        let mut cur = rustix::io::fcntl_dupfd_cloexec(&self.root, 0)?;
        let mut done = 0;
        for comp in rel.split(|&b| b == b'/') {
            let at = &rel[..(done + comp.len()).min(rel.len())];
            done += comp.len() + 1;
            if comp.is_empty() || comp == b"." || comp == b".." {
                return Err(Fault::Refused(format!(
                    "a {:?} component",
                    String::from_utf8_lossy(comp)
                )));
            }
            let next = match rustix::fs::openat(&cur, comp, DIR_FLAGS, Mode::empty()) {
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&cur, comp, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(Fault::Io(e.into())),
                    }
                    rustix::fs::openat(&cur, comp, DIR_FLAGS, Mode::empty())
                }
                other => other,
            };
            cur = match next {
                Ok(fd) => fd,
                Err(e @ (Errno::LOOP | Errno::NOTDIR)) => {
                    // O_NOFOLLOW|O_DIRECTORY on a symlink gives either.
                    let st = rustix::fs::statat(&cur, comp, AtFlags::SYMLINK_NOFOLLOW)?;
                    let link = rustix::fs::FileType::from_raw_mode(st.st_mode)
                        == rustix::fs::FileType::Symlink;
                    return Err(refusal(at, if link { Errno::LOOP } else { e }));
                }
                Err(e) => return Err(refusal(at, e)),
            };
        }
        Ok(cur)
    }
}

/// What an error opening the directory `rel` means.
fn refusal(rel: &[u8], e: Errno) -> Fault {
    let shown = crate::report::escape::escape(rel);
    match e {
        Errno::LOOP => Fault::Refused(format!("through the symlink ./{shown}")),
        Errno::NOTDIR => Fault::Refused(format!("below ./{shown}, which is not a directory")),
        Errno::XDEV => Fault::Refused(format!("./{shown} resolves outside the target")),
        e => Fault::Io(io::Error::from(e)),
    }
}

/// Removes whatever is at `name` in `dir` (a directory only when empty).
/// `Ok(false)` when a non-empty directory is in the way.
pub(super) fn remove(dir: impl AsFd, name: &[u8]) -> io::Result<bool> {
    let dir = dir.as_fd();
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(true),
        Err(Errno::ISDIR) => match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
            Ok(()) => Ok(true),
            Err(Errno::NOTEMPTY | Errno::EXIST) => Ok(false),
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_are_never_followed_and_missing_dirs_are_made() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        symlink(&outside, root.join("esc")).unwrap();
        symlink("a", root.join("rel")).unwrap();
        std::fs::write(root.join("file"), "x").unwrap();
        for openat2 in [true, false] {
            let mut tg = Target::open(&root).unwrap();
            tg.openat2 = openat2;
            assert!(tg.dir(b"a/b").is_ok());
            assert!(tg.dir(b"").is_ok());
            for (rel, why) in [
                (&b"esc"[..], "symlink"),
                (b"esc/x/y", "symlink"),
                (b"rel/b", "symlink"),
                (b"file/x", "not a directory"),
            ] {
                match tg.dir(rel) {
                    Err(Fault::Refused(m)) => assert!(m.contains(why), "{openat2} {rel:?}: {m}"),
                    other => panic!("{openat2} {rel:?}: {other:?}"),
                }
            }
            tg.dir(b"new/deep").unwrap();
            assert!(root.join("new/deep").is_dir());
            std::fs::remove_dir_all(root.join("new")).unwrap();
            assert!(matches!(tg.existing_dir(b"new"), Err(Fault::Io(_))));
        }
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    }
}
