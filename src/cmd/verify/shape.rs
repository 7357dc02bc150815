//! The shape of an artifact: what extracting it would do to a target, and
//! whether it is whole.
//!
//! Part of verify. GNU tar and curtin's `tar -xpf` trust an archive: a
//! member named `../../x` or `/etc/x` lands outside the target, a file
//! after a symlink of the same prefix is written through the symlink, a
//! hard link may name anything. goldcap never writes such members, so
//! each one in an artifact is a failure, listed. So is a stream without
//! the end-of-archive blocks (a truncated artifact that tar would extract
//! without complaint), or with data after them. The reader tells [`Shape`]
//! about every entry; memory grows with the number of symlinks and of
//! names (8 bytes a name), never with their content. Pure: no I/O.

use super::Check;
use crate::report::escape::escape;
use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use tar::EntryType;

/// Members listed per failed check; the count goes on.
pub(super) const LISTED: usize = 100;

/// Paths (with a reason, for `apply`), up to [`LISTED`] of them, and how
/// many in all.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub(in crate::cmd) struct Listed {
    pub(in crate::cmd) count: u64,
    pub(in crate::cmd) paths: Vec<String>,
}

impl Listed {
    pub(in crate::cmd) fn push(&mut self, what: String) {
        self.count += 1;
        if self.paths.len() < LISTED {
            self.paths.push(what);
        }
    }
}

/// What the walk over the archive found about its structure.
#[derive(Default)]
pub(super) struct Shape {
    outside: Listed,
    through: Listed,
    links: Listed,
    /// Archived symlinks (root-relative), which nothing may be below.
    symlinks: HashSet<Vec<u8>>,
    /// Hashes of the names archived so far that are not directories (a
    /// hard link must name one); keyed per run, so a crafted archive cannot
    /// aim at a collision.
    earlier: HashSet<u64>,
    keys: RandomState,
    /// Where the data of the last entry ends in the tar stream.
    end_of_last: u64,
}

/// A member name as a root-relative path: `None` when it leaves the root
/// (absolute, or a `..` component). Shared with `apply`, which extracts
/// only what this accepts.
pub(in crate::cmd) fn relative(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.starts_with(b"/") {
        return None;
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for p in raw.split(|&b| b == b'/') {
        match p {
            b"" | b"." => {}
            b".." => return None,
            p => parts.push(p),
        }
    }
    Some(parts.join(&b'/'))
}

impl Shape {
    /// Notes one member: its raw name, type, hard-link target (raw) and
    /// where its data ends in the stream.
    pub(super) fn note(&mut self, raw: &[u8], et: EntryType, link: Option<&[u8]>, data_end: u64) {
        self.end_of_last = data_end;
        let shown = escape(raw);
        let Some(rel) = relative(raw) else {
            self.outside.push(shown);
            return;
        };
        let mut prefix = rel.as_slice();
        while let Some(i) = prefix.iter().rposition(|&b| b == b'/') {
            prefix = &prefix[..i];
            if self.symlinks.contains(prefix) {
                self.through
                    .push(format!("{shown} (below the symlink ./{})", escape(prefix)));
                break;
            }
        }
        if et.is_hard_link() {
            let target = link.unwrap_or_default();
            match relative(target) {
                Some(t) if self.earlier.contains(&self.keys.hash_one(&t)) => {}
                Some(_) => self.links.push(format!(
                    "{shown} (to {}, which is not archived before it)",
                    escape(target)
                )),
                None => self.links.push(format!(
                    "{shown} (to {}, outside the target)",
                    escape(target)
                )),
            }
        }
        if et.is_symlink() {
            self.symlinks.insert(rel.clone());
        } else if self.symlinks.contains(&rel) {
            // Replaced by what comes later under the same name.
            self.symlinks.remove(&rel);
        }
        if !et.is_dir() {
            self.earlier.insert(self.keys.hash_one(&rel));
        }
    }

    /// The checks: names, links, and (given what follows the last entry:
    /// how many bytes the stream held and where its last non-zero byte
    /// was) the end-of-archive marker.
    pub(super) fn checks(&self, total: u64, last_nonzero: Option<u64>) -> Vec<Check> {
        let list = |name: &'static str, l: &Listed, bad: &str| Check {
            name,
            ok: l.count == 0,
            detail: if l.count == 0 {
                "none".into()
            } else {
                format!("{} {bad}", l.count)
            },
            paths: l.paths.clone(),
        };
        let trailing_data = last_nonzero.is_some_and(|p| p >= self.end_of_last);
        let marker = total >= self.end_of_last + 1024;
        vec![
            list(
                "member-names",
                &self.outside,
                "member(s) named outside the target (absolute or with '..')",
            ),
            list(
                "through-symlink",
                &self.through,
                "member(s) below a symlink in the archive: extracting would write through it",
            ),
            list(
                "hard-links",
                &self.links,
                "hard link(s) to nothing archived before them, or outside the target",
            ),
            Check {
                name: "end-of-archive",
                ok: marker && !trailing_data,
                detail: match (marker, trailing_data) {
                    (_, true) => {
                        "data after the last member where the end-of-archive blocks belong".into()
                    }
                    (false, false) => "no end-of-archive blocks: the archive is truncated".into(),
                    (true, false) => "present".into(),
                },
                paths: vec![],
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(members: &[(&str, EntryType, Option<&str>)]) -> Vec<(bool, String)> {
        let mut s = Shape::default();
        let mut end = 0;
        for (name, et, link) in members {
            end += 512;
            s.note(name.as_bytes(), *et, link.map(str::as_bytes), end);
        }
        s.checks(end + 1024, None)
            .into_iter()
            .map(|c| (c.ok, c.paths.join(" | ")))
            .collect()
    }

    #[test]
    fn a_goldcap_archive_passes() {
        use EntryType::*;
        let r = shape(&[
            ("./", Directory, None),
            ("./etc/", Directory, None),
            ("./etc/passwd", Regular, None),
            ("./etc/passwd-", Link, Some("./etc/passwd")),
            ("./lib", Symlink, Some("usr/lib")),
            ("./usr/lib/x", Regular, None),
        ]);
        assert!(r.iter().all(|(ok, _)| *ok), "{r:?}");
    }

    #[test]
    fn hostile_members_are_listed() {
        use EntryType::*;
        let r = shape(&[
            ("./../../x", Regular, None),
            ("/etc/x", Regular, None),
            ("./etc", Symlink, Some("/etc")),
            ("./etc/cron.d/evil", Regular, None),
            ("./a", Link, Some("/etc/shadow")),
            ("./b", Link, Some("./later")),
            ("./later", Regular, None),
            ("./c", Link, Some("../x")),
        ]);
        assert_eq!(r[0], (false, "./../../x | /etc/x".into()));
        assert_eq!(
            r[1],
            (false, "./etc/cron.d/evil (below the symlink ./etc)".into())
        );
        assert!(!r[2].0);
        assert_eq!(r[2].1.matches(" | ").count(), 2, "{}", r[2].1);
        assert!(r[3].0);
    }

    #[test]
    fn the_end_marker_is_checked() {
        let mut s = Shape::default();
        s.note(b"./", EntryType::Directory, None, 512);
        let end = |total, last| s.checks(total, last)[3].ok;
        assert!(end(512 + 1024, Some(100)));
        assert!(end(512 + 10240, None));
        assert!(!end(512, Some(100)), "truncated");
        assert!(!end(512 + 1023, None), "half a marker");
        assert!(!end(512 + 1024, Some(700)), "data after the last member");
    }
}
