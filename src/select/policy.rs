//! Policy: for each entry the walk finds, keep it, keep only the directory,
//! or drop it — and say why.
//!
//! Sits between the walk and the tar writer. The walk describes an entry
//! ([`Candidate`]: its root-relative path, whether it is a directory or a
//! socket, and which mount it is, if any); [`Policy::decide`] answers with a
//! [`Decision`] whose [`Reason`] goes into the MANIFEST. Rules, in order:
//!
//! 1. the root itself is always kept;
//! 2. `--exclude` globs drop the entry and everything below it;
//! 3. in goldcap's output directory, goldcap's own files are dropped: its
//!    `.goldcap-*` temporaries and the files it recognised there as its own
//!    (this run's names, earlier captures' MANIFESTs and the artifacts they
//!    name; [`Policy::with_own_output`]) — never a user's file that merely
//!    looks like one;
//! 4. the identity scrub ([`super::scrub::Plan`]): a rule whose first
//!    action is `drop` leaves the entry out (decided by path, never read);
//!    other actions on a regular file become [`Decision::Scrub`], applied
//!    by the tar writer with the file's content;
//! 5. other sockets are dropped (tar formats cannot carry them; counted);
//! 6. a mount point is never crossed if it is a pseudo or volatile
//!    filesystem (proc, sysfs, tmpfs, …); it is crossed if it is named by
//!    `--include-mount` (default `/boot`, `/boot/efi`) or is part of the
//!    root's own storage (a btrfs subvolume of the root's filesystem, a ZFS
//!    dataset of its pool — openSUSE's `/var`, Ubuntu's `/var/lib`), except
//!    snapper's `/.snapshots`; otherwise not. A mount point not crossed
//!    stays as a directory with its mode, so the deployed system has it;
//! 7. the content of `/proc /sys /dev /run /tmp /var/tmp` is never archived
//!    (DRP image-builder's `--exclude` set), the directories are. In place
//!    (`goldcap scrub`), a volatile directory that is not a mount is
//!    entered when the plan has rules inside it (`tmp-files`), so they
//!    remove what is there.
//!
//! This module is pure: it must never touch the filesystem, so every rule
//! is table-tested below.

use crate::entry::{Candidate, Decide, Decision, FileKind, Reason};
use crate::select::scrub::{Action, Plan};
use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Directories whose content is never archived (relative to the root).
pub const VOLATILE_DIRS: &[&str] = &["proc", "sys", "dev", "run", "tmp", "var/tmp"];

/// Mount points crossed by default when they are mounts.
pub const DEFAULT_INCLUDE_MOUNTS: &[&str] = &["boot", "boot/efi"];

/// A bad `--exclude` pattern.
#[derive(Debug)]
pub struct PatternError(pub String);

/// `--exclude` patterns, compiled.
///
/// Patterns are globs relative to the root. A leading `./` or `/` (DRP's
/// `./etc/default/grub` form) or any `/` inside anchors the pattern at the
/// root; a pattern without `/` (`*.log`) matches a name at any depth, as in
/// tar and rsync. `*` and `?` do not cross `/`; `**` does. A trailing `/` is
/// ignored. A matching directory is dropped with everything below it.
#[derive(Debug, Clone)]
pub struct Excludes {
    set: GlobSet,
    patterns: Vec<String>,
    /// Patterns the user gave (the first ones); the rest are goldcap's own.
    given: usize,
    /// Which patterns matched something, for the "matched nothing" warning
    /// (shared by clones: the walk sees the same policy).
    hit: std::sync::Arc<Vec<std::sync::atomic::AtomicBool>>,
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Excludes, PatternError> {
        Excludes::with_own(patterns, &[])
    }

    /// The user's `patterns`, then goldcap's `own` (never reported as
    /// unmatched).
    pub fn with_own(patterns: &[String], own: &[String]) -> Result<Excludes, PatternError> {
        let mut b = GlobSetBuilder::new();
        for p in patterns.iter().chain(own) {
            b.add(compile(p)?);
        }
        let set = b.build().map_err(|e| PatternError(e.to_string()))?;
        let all: Vec<String> = patterns.iter().chain(own).cloned().collect();
        Ok(Excludes {
            set,
            hit: std::sync::Arc::new(all.iter().map(|_| Default::default()).collect()),
            patterns: all,
            given: patterns.len(),
        })
    }

    /// The first pattern matching `rel`, if any.
    pub fn matches(&self, rel: &[u8]) -> Option<&str> {
        if self.patterns.is_empty() {
            return None;
        }
        let idx = self.set.matches(Path::new(OsStr::from_bytes(rel)));
        for &i in &idx {
            self.hit[i].store(true, std::sync::atomic::Ordering::Relaxed);
        }
        idx.first().map(|&i| self.patterns[i].as_str())
    }

    /// The user's patterns that matched nothing so far (a typo, or a path
    /// that is not there).
    pub fn unmatched(&self) -> Vec<&str> {
        self.patterns[..self.given]
            .iter()
            .zip(self.hit.iter())
            .filter(|(_, h)| !h.load(std::sync::atomic::Ordering::Relaxed))
            .map(|(p, _)| p.as_str())
            .collect()
    }
}

fn compile(raw: &str) -> Result<Glob, PatternError> {
    let mut p = raw.trim_end_matches('/');
    let mut anchored = false;
    loop {
        if let Some(s) = p.strip_prefix("./") {
            p = s;
            anchored = true;
        } else if let Some(s) = p.strip_prefix('/') {
            p = s;
            anchored = true;
        } else {
            break;
        }
    }
    if p.is_empty() || p == "." {
        return Err(PatternError(format!(
            "--exclude {raw:?} would exclude the whole root"
        )));
    }
    let glob = if anchored || p.contains('/') {
        p.to_owned()
    } else {
        format!("**/{p}")
    };
    GlobBuilder::new(&glob)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| PatternError(format!("--exclude {raw:?}: {e}")))
}

#[derive(Debug, Clone)]
pub struct Policy {
    excludes: Excludes,
    include_mounts: Vec<Vec<u8>>,
    scrub: Option<Plan>,
    /// Names in the output directory that are goldcap's own.
    own_output: BTreeSet<Vec<u8>>,
}

impl Policy {
    /// Builds a policy. `include_mounts` are root-relative (no leading `/`).
    pub fn new(excludes: Excludes, include_mounts: Vec<Vec<u8>>) -> Policy {
        Policy {
            excludes,
            include_mounts,
            scrub: None,
            own_output: BTreeSet::new(),
        }
    }

    /// Adds an identity-scrub plan.
    pub fn with_scrub(mut self, plan: Plan) -> Policy {
        self.scrub = Some(plan);
        self
    }

    /// The user's exclude patterns that matched nothing.
    pub fn unmatched_excludes(&self) -> Vec<&str> {
        self.excludes.unmatched()
    }

    /// Replaces the scrub plan (made again after hooks changed the root).
    pub fn set_scrub(&mut self, plan: Plan) {
        self.scrub = Some(plan);
    }

    /// The scrub plan, if any.
    pub fn scrub(&self) -> Option<&Plan> {
        self.scrub.as_ref()
    }

    /// Names the files in the output directory that goldcap wrote (besides
    /// its `.goldcap-*` temporaries): the walk leaves them out.
    pub fn with_own_output(mut self, names: BTreeSet<Vec<u8>>) -> Policy {
        self.own_output = names;
        self
    }

    fn is_own_output(&self, name: &[u8]) -> bool {
        name.starts_with(b".goldcap-") || self.own_output.contains(name)
    }
}

impl Decide for Policy {
    /// Decides for one entry (see the module docs for the rules).
    fn decide(&self, c: &Candidate<'_>) -> Decision {
        if c.rel.is_empty() {
            return Decision::Keep;
        }
        if let Some(p) = self.excludes.matches(c.rel) {
            return Decision::Drop(Reason::Excluded(p.to_owned()));
        }
        if c.in_output_dir
            && self.is_own_output(c.rel.rsplit(|&b| b == b'/').next().unwrap_or(c.rel))
        {
            return Decision::Drop(Reason::OutputDir);
        }
        if let Some(plan) = &self.scrub {
            let hits = plan.hits(c.rel, c.kind);
            if let Some(&first) = hits.first() {
                // A drop decided by path alone needs no content: the entry
                // (a directory with everything below it) is never read.
                if matches!(plan.rules[first].action, Action::Drop) {
                    return Decision::Drop(Reason::Scrub(plan.op_id(first).to_owned()));
                }
                if c.kind == FileKind::File {
                    return Decision::Scrub(hits);
                }
            }
        }
        // After the scrub: a socket it drops (in `/tmp`) is removed in place.
        if c.kind == FileKind::Socket {
            return Decision::Drop(Reason::Socket);
        }
        if c.kind != FileKind::Dir {
            return Decision::Keep;
        }
        if let Some(m) = c.mount {
            if m.pseudo {
                return Decision::KeepDirOnly(Reason::PseudoFs(m.fstype.to_owned()));
            }
            let included = self.include_mounts.iter().any(|i| i == c.rel);
            if m.same_storage && !included && c.rel == b".snapshots" {
                return Decision::KeepDirOnly(Reason::Snapshots);
            }
            if !included && !m.same_storage {
                return Decision::KeepDirOnly(Reason::OtherMount(m.fstype.to_owned()));
            }
        }
        if VOLATILE_DIRS.iter().any(|v| v.as_bytes() == c.rel) {
            // In place, the scrub empties `/tmp` and `/var/tmp` (entered
            // only when not a mount); the capture never archives them.
            if c.mount.is_none() && self.scrub.as_ref().is_some_and(|p| p.cleans_inside(c.rel)) {
                return Decision::Keep;
            }
            return Decision::KeepDirOnly(Reason::Volatile);
        }
        Decision::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::MountKind;

    fn policy(excl: &[&str]) -> Policy {
        let ex = Excludes::new(&excl.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        Policy::new(
            ex,
            vec![b"boot".to_vec(), b"boot/efi".to_vec(), b"srv/data".to_vec()],
        )
        .with_own_output(
            [
                "debian-12-rootfs-20261122-101500-cf99cd80eb.tgz",
                "old.tar.zst",
                "m.json",
            ]
            .map(|n| n.as_bytes().to_vec())
            .into(),
        )
    }

    fn file(rel: &str) -> Candidate<'_> {
        Candidate {
            rel: rel.as_bytes(),
            kind: FileKind::File,
            mount: None,
            in_output_dir: false,
        }
    }
    fn dir(rel: &str) -> Candidate<'_> {
        Candidate {
            kind: FileKind::Dir,
            ..file(rel)
        }
    }
    fn mnt<'a>(rel: &'a str, fstype: &'a str, pseudo: bool) -> Candidate<'a> {
        Candidate {
            mount: Some(MountKind {
                fstype,
                pseudo,
                same_storage: false,
            }),
            ..dir(rel)
        }
    }
    fn sub(rel: &str) -> Candidate<'_> {
        Candidate {
            mount: Some(MountKind {
                fstype: "btrfs",
                pseudo: false,
                same_storage: true,
            }),
            ..dir(rel)
        }
    }
    fn out(rel: &str) -> Candidate<'_> {
        Candidate {
            in_output_dir: true,
            ..file(rel)
        }
    }

    #[test]
    fn decision_table() {
        let p = policy(&["./etc/default/grub", "*.log", "./var/cache/*", "/opt/big/"]);
        use Decision::*;
        let rows: Vec<(Candidate<'_>, Decision)> = vec![
            (dir(""), Keep),
            (mnt("", "ext4", false), Keep),
            (file("etc/fstab"), Keep),
            (
                file("etc/default/grub"),
                Drop(Reason::Excluded("./etc/default/grub".into())),
            ),
            (file("etc/default/grub2"), Keep),
            (
                file("var/log/syslog.log"),
                Drop(Reason::Excluded("*.log".into())),
            ),
            (file("x.log"), Drop(Reason::Excluded("*.log".into()))),
            (
                dir("var/cache/apt"),
                Drop(Reason::Excluded("./var/cache/*".into())),
            ),
            (dir("var/cache"), Keep),
            (dir("opt/big"), Drop(Reason::Excluded("/opt/big/".into()))),
            (
                Candidate {
                    kind: FileKind::Socket,
                    ..file("srv/sock")
                },
                Drop(Reason::Socket),
            ),
            (
                out("root/out/debian-12-rootfs-20261122-101500-cf99cd80eb.tgz"),
                Drop(Reason::OutputDir),
            ),
            (
                out("root/out/.goldcap-x.tgz-AbC.part"),
                Drop(Reason::OutputDir),
            ),
            (out("root/out/old.tar.zst"), Drop(Reason::OutputDir)),
            (out("root/out/m.json"), Drop(Reason::OutputDir)),
            (out("root/out/notes.md"), Keep),
            // A user's file that only looks like goldcap's stays.
            (out("root/out/user.json"), Keep),
            (out("root/out/backup.tgz"), Keep),
            (file("root/x.tgz"), Keep),
            (sub("var"), Keep),
            (sub("home"), Keep),
            (sub(".snapshots"), KeepDirOnly(Reason::Snapshots)),
            (sub("srv/.snapshots"), Keep),
            (
                mnt("proc", "proc", true),
                KeepDirOnly(Reason::PseudoFs("proc".into())),
            ),
            (mnt("boot", "ext4", false), Keep),
            (mnt("boot/efi", "vfat", false), Keep),
            (mnt("srv/data", "xfs", false), Keep),
            (
                mnt("srv/data", "tmpfs", true),
                KeepDirOnly(Reason::PseudoFs("tmpfs".into())),
            ),
            (
                mnt("home", "ext4", false),
                KeepDirOnly(Reason::OtherMount("ext4".into())),
            ),
            (
                mnt("mnt/nfs", "nfs4", false),
                KeepDirOnly(Reason::OtherMount("nfs4".into())),
            ),
            (dir("proc"), KeepDirOnly(Reason::Volatile)),
            (dir("tmp"), KeepDirOnly(Reason::Volatile)),
            (dir("var/tmp"), KeepDirOnly(Reason::Volatile)),
            (dir("var/tmpx"), Keep),
            (dir("srv/tmp"), Keep),
            // /run as a symlink is kept as a symlink.
            (file("run"), Keep),
        ];
        for (c, want) in rows {
            assert_eq!(p.decide(&c), want, "{}", String::from_utf8_lossy(c.rel));
        }
    }

    #[test]
    fn pattern_forms() {
        let ex = Excludes::new(&[
            "etc/ssh/ssh_host_*".into(),
            "**/*.pyc".into(),
            "a\\*b".into(),
        ])
        .unwrap();
        assert!(ex.matches(b"etc/ssh/ssh_host_rsa_key").is_some());
        assert!(ex.matches(b"etc/ssh/sub/ssh_host_rsa_key").is_none());
        assert!(ex.matches(b"x/etc/ssh/ssh_host_rsa_key").is_none());
        assert!(ex.matches(b"usr/lib/python3/a.pyc").is_some());
        assert!(ex.matches(b"a*b").is_some());
        assert!(ex.matches(b"axb").is_none());
        // Non-UTF-8 names match byte-wise.
        let ex = Excludes::new(&["srv/caf*".into()]).unwrap();
        assert!(ex.matches(b"srv/caf\xe9\xff.txt").is_some());
        for bad in ["./", "/", ".", "[z-a"] {
            assert!(Excludes::new(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
