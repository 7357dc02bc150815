//! This machine's files in an applied target: SSH authorized keys, with the
//! user looked up in the target's own `/etc/passwd`.
//!
//! Part of apply, after the artifact is extracted and verified, before the
//! marker goes. Every read and write goes through [`Target`]'s directory
//! descriptors and one final name opened with `O_NOFOLLOW`, as entries are:
//! an image whose `/root`, home or `.ssh` is a symlink out is refused,
//! never followed. The host's user database is never consulted. This
//! module must never write outside the target.

use super::beneath::{Fault, Target};
use super::extract::split;
use crate::input::Limited;
use crate::prepare::machine::SshKeys;
use crate::report::escape::escape;
use crate::report::exit::ExitCode;
use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsFd, OwnedFd};

/// Why a per-machine step failed, and the exit status it means.
pub(super) type Failed = (ExitCode, String);

/// The largest `/etc/passwd` or `authorized_keys` read from the target.
const READ_LIMIT: u64 = 4 << 20;

fn refused(shown: &str, why: impl std::fmt::Display) -> Failed {
    (ExitCode::VerifyFailed, format!("{shown}: refused ({why})"))
}

fn failed(shown: &str, e: impl std::fmt::Display) -> Failed {
    (ExitCode::Failure, format!("{shown}: {e}"))
}

/// A regular file beneath the target, read (bounded) without following a
/// symlink; `None` when it or its directory is missing.
fn read_beneath(t: &mut Target, rel: &[u8]) -> Result<Option<Vec<u8>>, Failed> {
    let shown = format!("./{}", escape(rel));
    let (parent, name) = split(rel);
    let dir = match t.existing_dir(parent) {
        Ok(fd) => fd,
        Err(Fault::Refused(why)) => return Err(refused(&shown, why)),
        Err(Fault::Io(e)) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(Fault::Io(e)) => return Err(failed(&shown, e)),
    };
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(&dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(Errno::LOOP) => return Err(refused(&shown, "a symlink")),
        Err(e) => return Err(failed(&shown, io::Error::from(e))),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| failed(&shown, io::Error::from(e)))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(refused(&shown, "not a regular file"));
    }
    let mut out = Vec::new();
    Limited::new(File::from(fd), READ_LIMIT)
        .read_to_end(&mut out)
        .map_err(|e| failed(&shown, e))?;
    Ok(Some(out))
}

/// A user of the target's `/etc/passwd`.
struct User {
    uid: u32,
    gid: u32,
    home: String,
}

/// `name` in the target's `/etc/passwd`.
fn user(t: &mut Target, name: &str) -> Result<User, Failed> {
    let passwd = read_beneath(t, b"etc/passwd")?.unwrap_or_default();
    let text = String::from_utf8_lossy(&passwd);
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 7 && f[0] == name {
            let (Ok(uid), Ok(gid)) = (f[2].parse(), f[3].parse()) else {
                return Err(failed(
                    "./etc/passwd",
                    format!("the entry of {name} has no numeric uid and gid"),
                ));
            };
            return Ok(User {
                uid,
                gid,
                home: f[5].to_owned(),
            });
        }
    }
    Err((
        ExitCode::Usage,
        format!("--ssh-authorized-key: no user {name:?} in the target's /etc/passwd"),
    ))
}

/// A home directory from `/etc/passwd` as a root-relative name: absolute,
/// without `..`.
fn home_rel(home: &str) -> Option<Vec<u8>> {
    if !home.starts_with('/') {
        return None;
    }
    let mut parts = Vec::new();
    for c in home.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => parts.push(c),
        }
    }
    Some(parts.join("/").into_bytes())
}

/// Opens the directory `rel`, made (0700, owned by `owner`) if missing.
fn dir_for(t: &mut Target, rel: &[u8], owner: (u32, u32)) -> Result<OwnedFd, Failed> {
    let shown = format!("./{}", escape(rel));
    match t.existing_dir(rel) {
        Ok(fd) => return Ok(fd),
        Err(Fault::Refused(why)) => return Err(refused(&shown, why)),
        Err(Fault::Io(e)) if e.kind() == io::ErrorKind::NotFound => {}
        Err(Fault::Io(e)) => return Err(failed(&shown, e)),
    }
    let fd = match t.dir(rel) {
        Ok(fd) => fd,
        Err(Fault::Refused(why)) => return Err(refused(&shown, why)),
        Err(Fault::Io(e)) => return Err(failed(&shown, e)),
    };
    t.forget();
    let fd =
        rustix::io::fcntl_dupfd_cloexec(&*fd, 0).map_err(|e| failed(&shown, io::Error::from(e)))?;
    own(&fd, owner, 0o700).map_err(|e| failed(&shown, e))?;
    Ok(fd)
}

fn own(fd: impl AsFd, (uid, gid): (u32, u32), mode: u32) -> io::Result<()> {
    rustix::fs::fchown(
        &fd,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
    Ok(())
}

/// Appends `keys` to their user's `~/.ssh/authorized_keys` (lines already
/// there are not added again); what was done, and the `.ssh` directory
/// (root-relative), whose owner and mode this sets whatever the archive
/// says.
pub(super) fn authorized_keys(t: &mut Target, keys: &SshKeys) -> Result<(String, Vec<u8>), Failed> {
    let u = user(t, &keys.user)?;
    let owner = (u.uid, u.gid);
    let Some(home) = home_rel(&u.home) else {
        return Err(refused(
            &format!("the home of {} ({})", keys.user, u.home),
            "not an absolute path without ..",
        ));
    };
    let ssh = if home.is_empty() {
        b".ssh".to_vec()
    } else {
        [&home[..], b"/.ssh"].concat()
    };
    dir_for(t, &home, owner)?;
    let ssh_fd = dir_for(t, &ssh, owner)?;
    let shown_dir = format!("./{}", escape(&ssh));
    own(&ssh_fd, owner, 0o700).map_err(|e| failed(&shown_dir, e))?;
    let shown = format!("{shown_dir}/authorized_keys");
    let flags =
        OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(
        &ssh_fd,
        "authorized_keys",
        flags,
        Mode::from_raw_mode(0o600),
    ) {
        Ok(fd) => fd,
        Err(Errno::LOOP) => return Err(refused(&shown, "a symlink")),
        Err(e) => return Err(failed(&shown, io::Error::from(e))),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| failed(&shown, io::Error::from(e)))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(refused(&shown, "not a regular file"));
    }
    if st.st_nlink > 1 {
        return Err(refused(&shown, "it has other hard links"));
    }
    let mut f = File::from(fd);
    let mut old = Vec::new();
    Limited::new(&mut f, READ_LIMIT)
        .read_to_end(&mut old)
        .map_err(|e| failed(&shown, e))?;
    let present: std::collections::HashSet<&[u8]> =
        old.split(|&b| b == b'\n').map(|l| l.trim_ascii()).collect();
    let new: Vec<&String> = keys
        .lines
        .iter()
        .filter(|l| !present.contains(l.as_bytes()))
        .collect();
    let mut text = String::new();
    if !new.is_empty() && old.last().is_some_and(|&b| b != b'\n') {
        text.push('\n');
    }
    for l in &new {
        text.push_str(l);
        text.push('\n');
    }
    (|| -> io::Result<()> {
        f.seek(io::SeekFrom::End(0))?;
        f.write_all(text.as_bytes())?;
        own(&f, owner, 0o600)
    })()
    .map_err(|e| failed(&shown, e))?;
    let done = format!(
        "{}/.ssh/authorized_keys: {} key{} for {} from {}{}",
        u.home.trim_end_matches('/'),
        new.len(),
        if new.len() == 1 { "" } else { "s" },
        keys.user,
        keys.file.display(),
        if new.len() < keys.lines.len() {
            format!(" ({} already there)", keys.lines.len() - new.len())
        } else {
            String::new()
        }
    );
    Ok((done, ssh))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn homes_become_relative_names() {
        assert_eq!(home_rel("/home/alice").unwrap(), b"home/alice");
        assert_eq!(home_rel("//root/./").unwrap(), b"root");
        assert_eq!(home_rel("/").unwrap(), b"");
        assert!(home_rel("/home/../etc").is_none());
        assert!(home_rel("home").is_none());
    }
}
