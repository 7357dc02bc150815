//! Files carried into the image: `--inject SRC:DEST[:MODE[:UID:GID]]`.
//!
//! Before the pipeline: a file or directory tree on the host (curtin's
//! `curtin/curtin-hooks`, as packer-maas ships it, a site CA, an agent) is
//! read once into entries the walk merges into the archive — the archive
//! only, never the source root. A directory keeps its tree (symlinks as
//! symlinks); the top `SRC` is followed if it is a symlink. Owner 0:0 unless
//! `UID:GID`; modes are the source's unless `MODE`, which applies to the
//! regular files. Bounded: [`MAX_BYTES`] and [`MAX_ENTRIES`] in all, other
//! file types refused. This module reads the host's files; it must never
//! touch the root.

use crate::entry::{SynthKind, Synthetic};
use serde::Serialize;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Content injected in all, at most.
pub const MAX_BYTES: u64 = 256 << 20;
/// Entries injected in all, at most.
pub const MAX_ENTRIES: usize = 10_000;

/// One `--inject` value, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectSpec {
    pub src: PathBuf,
    /// Root-relative destination (no leading `/`).
    pub dest: Vec<u8>,
    /// Mode for regular files.
    pub mode: Option<u32>,
    pub owner: (u32, u32),
}

/// What the MANIFEST says of one injected entry.
#[derive(Debug, Clone, Serialize)]
pub struct Injected {
    /// Archive path (`./curtin/curtin-hooks`), escaped.
    pub path: String,
    /// file, dir or symlink.
    pub kind: &'static str,
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// sha256 of a file's content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The host path it came from.
    pub from: String,
}

/// Parses `SRC:DEST[:MODE[:UID:GID]]`.
pub fn parse(value: &str) -> Result<InjectSpec, String> {
    let parts: Vec<&str> = value.split(':').collect();
    let (src, dest, rest) = match parts.as_slice() {
        [src, dest, rest @ ..] if rest.len() <= 3 && rest.len() != 2 => (*src, *dest, rest),
        _ => return Err("want SRC:DEST[:MODE[:UID:GID]]".into()),
    };
    if src.is_empty() {
        return Err("SRC is empty".into());
    }
    if !dest.starts_with('/') {
        return Err(format!(
            "DEST {dest:?} must be an absolute path in the image"
        ));
    }
    let rel = dest.trim_matches('/');
    if rel.is_empty()
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!(
            "DEST {dest:?} must name an entry below / without '.', '..' or '//'"
        ));
    }
    let mode = match rest.first() {
        Some(m) => Some(
            u32::from_str_radix(m, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| format!("MODE {m:?} is not an octal mode"))?,
        ),
        None => None,
    };
    let owner = match rest {
        [_, uid, gid] => (
            uid.parse()
                .map_err(|_| format!("UID {uid:?} is not a number"))?,
            gid.parse()
                .map_err(|_| format!("GID {gid:?} is not a number"))?,
        ),
        _ => (0, 0),
    };
    Ok(InjectSpec {
        src: PathBuf::from(src),
        dest: rel.as_bytes().to_vec(),
        mode,
        owner,
    })
}

/// Reads every spec's tree into synthetic entries (replacing what the root
/// has under the same names) and the MANIFEST's list. The budget is shared
/// by all specs.
pub fn read_all(specs: &[InjectSpec]) -> Result<(Vec<Synthetic>, Vec<Injected>), String> {
    let mut r = Reader::default();
    for spec in specs {
        let meta = std::fs::metadata(&spec.src)
            .map_err(|e| format!("{}: {}", spec.src.display(), crate::util::io_reason(&e)))?;
        r.add(spec, &spec.src, spec.dest.clone(), &meta)?;
    }
    Ok((r.entries, r.listed))
}

#[derive(Default)]
struct Reader {
    entries: Vec<Synthetic>,
    listed: Vec<Injected>,
    bytes: u64,
}

impl Reader {
    fn add(
        &mut self,
        spec: &InjectSpec,
        src: &Path,
        rel: Vec<u8>,
        meta: &std::fs::Metadata,
    ) -> Result<(), String> {
        if self.entries.len() >= MAX_ENTRIES {
            return Err(format!("more than {MAX_ENTRIES} entries to inject"));
        }
        let err = |e: std::io::Error| format!("{}: {}", src.display(), crate::util::io_reason(&e));
        let ft = meta.file_type();
        let (kind, mode, size, sha256) = if ft.is_symlink() {
            let target = std::fs::read_link(src).map_err(err)?;
            let t = target.as_os_str().as_bytes().to_vec();
            (SynthKind::Symlink(t), 0o777, 0, None)
        } else if ft.is_dir() {
            (SynthKind::Dir, meta.permissions().mode() & 0o7777, 0, None)
        } else if ft.is_file() {
            let left = MAX_BYTES - self.bytes;
            let mut v = Vec::new();
            // Non-blocking and checked again: a file swapped for a FIFO
            // since it was listed is refused, never waited on.
            let f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                .open(src)
                .map_err(err)?;
            if !f.metadata().map_err(err)?.is_file() {
                return Err(format!("{}: no longer a regular file", src.display()));
            }
            f.take(left + 1).read_to_end(&mut v).map_err(err)?;
            if v.len() as u64 > left {
                return Err(format!(
                    "{}: the files to inject hold more than {} MiB",
                    src.display(),
                    MAX_BYTES >> 20
                ));
            }
            self.bytes += v.len() as u64;
            let mode = spec.mode.unwrap_or(meta.permissions().mode() & 0o7777);
            let size = v.len() as u64;
            let digest = {
                use sha2::Digest as _;
                crate::util::hex(&sha2::Sha256::digest(&v))
            };
            (SynthKind::File(v), mode, size, Some(digest))
        } else {
            return Err(format!(
                "{}: only files, directories and symlinks can be injected",
                src.display()
            ));
        };
        let is_dir = matches!(kind, SynthKind::Dir);
        let kind_name = match kind {
            SynthKind::Dir => "dir",
            SynthKind::File(_) => "file",
            SynthKind::Symlink(_) => "symlink",
        };
        self.listed.push(Injected {
            path: crate::report::archive_path(&rel),
            kind: kind_name,
            mode: format!("{mode:04o}"),
            uid: spec.owner.0,
            gid: spec.owner.1,
            size,
            sha256,
            from: src.display().to_string(),
        });
        self.entries.push(Synthetic {
            rel: rel.clone(),
            kind,
            mode,
            uid: spec.owner.0,
            gid: spec.owner.1,
            mtime: meta.mtime(),
            replace: true,
            op: None,
        });
        if is_dir {
            let mut names: Vec<_> = std::fs::read_dir(src)
                .map_err(err)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .map_err(err)?;
            names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            for n in names {
                let child = src.join(&n);
                let m = std::fs::symlink_metadata(&child)
                    .map_err(|e| format!("{}: {}", child.display(), crate::util::io_reason(&e)))?;
                let mut r = rel.clone();
                r.push(b'/');
                r.extend_from_slice(n.as_bytes());
                self.add(spec, &child, r, &m)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_table() {
        let ok = |v: &str| parse(v).unwrap();
        assert_eq!(ok("a:/curtin/curtin-hooks").dest, b"curtin/curtin-hooks");
        assert_eq!(ok("a:/x/:0755").mode, Some(0o755));
        assert_eq!(ok("a:/x:0600:0:42").owner, (0, 42));
        for (bad, why) in [
            ("a", "want SRC:DEST"),
            ("a:/x:0755:1", "want SRC:DEST"),
            (":/x", "SRC is empty"),
            ("a:x", "absolute"),
            ("a:/", "below /"),
            ("a:/x/../etc", "'..'"),
            ("a:/x//y", "'//'"),
            ("a:/x:9", "octal"),
            ("a:/x:0755:u:0", "UID"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn trees_are_read_with_their_kinds_and_the_budget_holds() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("hooks");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("curtin-hooks"), "#!/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("curtin-hooks", d.join("finalize")).unwrap();
        let spec = parse(&format!("{}:/curtin:0700", d.display())).unwrap();
        let (entries, listed) = read_all(&[spec]).unwrap();
        let rels: Vec<&[u8]> = entries.iter().map(|e| e.rel.as_slice()).collect();
        assert_eq!(
            rels,
            [&b"curtin"[..], b"curtin/curtin-hooks", b"curtin/finalize"]
        );
        assert_eq!(entries[1].mode, 0o700);
        assert_eq!(
            entries[2].kind,
            SynthKind::Symlink(b"curtin-hooks".to_vec())
        );
        assert_eq!(listed[1].path, "./curtin/curtin-hooks");
        assert_eq!(listed[1].size, 10);
        let fifo = t.path().join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let e = read_all(&[parse(&format!("{}:/x", fifo.display())).unwrap()]).unwrap_err();
        assert!(e.contains("only files, directories and symlinks"), "{e}");
    }
}
