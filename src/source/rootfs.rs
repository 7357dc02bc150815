//! Reading small files inside the root being captured, confined to it.
//!
//! Sits before the pipeline: [`crate::source::facts`] and [`crate::archive`]
//! (owner names) read `/etc/os-release`, `/etc/passwd`, the dpkg status file …
//! *as the captured system sees them*. In a chroot those are often symlinks
//! (`/etc/os-release -> ../usr/lib/os-release`, `/lib -> usr/lib`) and an
//! absolute link must resolve inside the root, not on the host running goldcap.
//! [`RootFs::resolve`] follows links component by component with the root as
//! `/`, like `chroot` would.
//!
//! This module only reads. It must never write, and never follow a link
//! out of the root.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Links followed before giving up, as Linux does (`ELOOP`).
const MAX_LINKS: usize = 40;

/// A root directory, seen from inside.
#[derive(Debug, Clone)]
pub struct RootFs {
    root: PathBuf,
}

impl RootFs {
    /// Wraps an (absolute, canonical) root directory.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RootFs { root: root.into() }
    }

    /// The root directory on the host.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves `path` (absolute or relative, interpreted inside the root)
    /// to a host path, following symlinks with the root as `/`. The last
    /// component need not exist; missing intermediate directories give
    /// `NotFound`.
    pub fn resolve(&self, path: impl AsRef<Path>) -> io::Result<PathBuf> {
        let mut todo: Vec<OsString> = components(path.as_ref());
        todo.reverse();
        let mut done: Vec<OsString> = Vec::new();
        let mut links = 0;
        while let Some(name) = todo.pop() {
            if name == ".." {
                done.pop();
                continue;
            }
            let host = self.host_path(&done).join(&name);
            match fs::symlink_metadata(&host) {
                Ok(m) if m.file_type().is_symlink() => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(io::Error::other(format!(
                            "too many levels of symbolic links at {}",
                            host.display()
                        )));
                    }
                    let target = fs::read_link(&host)?;
                    if target.is_absolute() {
                        done.clear();
                    }
                    let mut more = components(&target);
                    more.reverse();
                    todo.extend(more);
                }
                Ok(_) => done.push(name),
                Err(e) if e.kind() == io::ErrorKind::NotFound && todo.is_empty() => done.push(name),
                Err(e) => return Err(e),
            }
        }
        Ok(self.host_path(&done))
    }

    fn host_path(&self, parts: &[OsString]) -> PathBuf {
        let mut p = self.root.clone();
        for part in parts {
            p.push(part);
        }
        p
    }

    /// Reads a file inside the root, at most `limit` bytes. `Ok(None)` when
    /// it does not exist.
    pub fn read(&self, path: impl AsRef<Path>, limit: u64) -> io::Result<Option<Vec<u8>>> {
        let host = match self.resolve(path) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        // Never block on a FIFO or take a tty planted where a config file
        // should be, never touch the atime, never follow a last-moment link.
        let f = match crate::source::fsx::open_file(&host) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if crate::source::fsx::fstat(&f)?.kind != crate::entry::FileKind::File {
            return Err(io::Error::other(format!(
                "{} is not a regular file",
                host.display()
            )));
        }
        let mut buf = Vec::new();
        f.take(limit).read_to_end(&mut buf)?;
        Ok(Some(buf))
    }

    /// The names in a directory inside the root, sorted; empty when it does
    /// not exist.
    pub fn list(&self, path: impl AsRef<Path>) -> Vec<OsString> {
        use std::os::fd::AsFd;
        use std::os::unix::ffi::OsStringExt;
        let Ok(host) = self.resolve(path) else {
            return Vec::new();
        };
        // O_NOATIME: gathering facts must not touch the source either.
        let Ok(fd) = crate::source::fsx::open_dir_at(rustix::fs::CWD, &host_cstr(&host)) else {
            return Vec::new();
        };
        crate::source::fsx::list_dir(fd.as_fd())
            .map(|names| {
                names
                    .into_iter()
                    .map(|n| OsString::from_vec(n.into_bytes()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether a path exists inside the root (following links inside it).
    pub fn exists(&self, path: impl AsRef<Path>) -> bool {
        self.resolve(path)
            .map(|p| fs::metadata(p).is_ok())
            .unwrap_or(false)
    }

    /// Whether a path inside the root is a directory.
    pub fn is_dir(&self, path: impl AsRef<Path>) -> bool {
        self.resolve(path).map(|p| p.is_dir()).unwrap_or(false)
    }
}

fn host_cstr(p: &Path) -> std::ffi::CString {
    // Unwrap expectation: a path from the filesystem holds no NUL byte.
    std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

fn components(p: &Path) -> Vec<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_resolve_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("usr/lib/modules/6.1")).unwrap();
        fs::create_dir_all(r.join("etc")).unwrap();
        fs::write(r.join("usr/lib/os-release"), "ID=test\n").unwrap();
        symlink("../usr/lib/os-release", r.join("etc/os-release")).unwrap();
        symlink("usr/lib", r.join("lib")).unwrap();
        // An absolute link must stay in the root, not reach the host's /etc.
        symlink("/usr/lib/os-release", r.join("etc/abs")).unwrap();
        symlink("../../../../../../etc/hostname", r.join("etc/escape")).unwrap();
        symlink("loop", r.join("etc/loop")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            r.join("etc/fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();

        let fs_ = RootFs::new(r);
        assert_eq!(
            fs_.read("/etc/os-release", 100).unwrap().unwrap(),
            b"ID=test\n"
        );
        assert_eq!(fs_.read("etc/abs", 100).unwrap().unwrap(), b"ID=test\n");
        assert_eq!(fs_.resolve("/etc/escape").unwrap(), r.join("etc/hostname"));
        assert_eq!(fs_.read("/etc/escape", 100).unwrap(), None);
        assert_eq!(fs_.list("/lib/modules"), vec![OsString::from("6.1")]);
        assert!(fs_.is_dir("/lib/modules/6.1"));
        assert!(fs_.resolve("/etc/loop").is_err());
        // A FIFO where a config file should be is an error, not a hang.
        assert!(fs_.read("/etc/fifo", 10).is_err());
        assert_eq!(fs_.read("/nope/x", 10).unwrap(), None);
        assert_eq!(fs_.read("/etc/os-release", 2).unwrap().unwrap(), b"ID");
    }
}
