//! Extended attributes and ACLs, as the PAX records GNU tar and bsdtar
//! restore.
//!
//! Part of the tar writer. Every xattr goes in as `SCHILY.xattr.<name>`
//! (raw bytes; `%` and `=` in names encoded as `%25`/`%3D`, as GNU tar
//! does) — including `security.capability` and the raw
//! `system.posix_acl_*` values, the only form curtin's extraction without
//! `--acls` restores. ACLs also go in as `SCHILY.acl.access`/`.default`
//! text with numeric ids ([`super::acl`]), `security.selinux` also as
//! `RHT.security.selinux`. A failed read is a warning on the entry, never
//! an error of the run. This module must never write an attribute.

use super::header::HeaderBuilder;
use super::{Ctx, TarWriter, acl};
use crate::entry::SourceEntry;
use crate::report::WarningKind;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use xattr::FileExt as _;

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

/// Where xattrs are read from.
pub(super) enum XSource<'a> {
    /// A regular file, open.
    Fd(&'a File),
    /// Anything else, by a path whose last component is not followed.
    Path(&'a Path),
}

/// Whether `/proc/self/fd` can name an open directory (not in a chroot
/// without `/proc`).
pub(super) fn proc_fd_available() -> bool {
    Path::new("/proc/self/fd").is_dir()
}

/// The path to read the xattrs of an entry that is not a regular file:
/// its name under its parent's open descriptor (`/proc/self/fd/N/name`).
/// The parent is the directory the walk listed, so one swapped for a
/// symlink meanwhile cannot lead to the host's attributes (the last
/// component is not followed either), and no path gets longer than
/// `PATH_MAX`. Directories, symlinks, devices and FIFOs are not opened
/// for this: opening a mount point would trigger an automount, opening a
/// device or FIFO has effects. Without `/proc` (a chroot that lacks it), or
/// for the root itself, the host path.
pub(super) fn attr_path(e: &SourceEntry, proc_fd: bool) -> PathBuf {
    match &e.parent {
        Some(dir) if proc_fd => {
            let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
            p.extend_from_slice(e.name.to_bytes());
            PathBuf::from(OsString::from_vec(p))
        }
        _ => e.abs.clone(),
    }
}

fn is_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENOSYS))
        || e.kind() == io::ErrorKind::Unsupported
}

impl<W: Write> TarWriter<W> {
    /// Adds `SCHILY.xattr.*`, `SCHILY.acl.*` and `RHT.security.selinux`.
    pub(super) fn add_xattrs(
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
                    let shown = crate::report::escape::escape(n.as_bytes());
                    ctx.report.warn(
                        rel,
                        WarningKind::Attributes,
                        format!("cannot read extended attribute {shown}: {e}"),
                    );
                    continue;
                }
            };
            let Some(key) = n.to_str() else {
                let shown = crate::report::escape::escape(n.as_bytes());
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
