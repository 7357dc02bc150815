//! The vocabulary the stages share: what an entry on disk is, what goldcap
//! adds, and what the policy can answer about an entry.
//!
//! The walk (`source`) produces [`SourceEntry`]s and asks a [`Decide`] for
//! each; the policy and the scrub (`select`) implement it and name
//! [`Synthetic`] entries to add; the tar writer (`archive`) consumes both.
//! Keeping these types here, below all of them, is what lets each stage
//! import only from earlier ones. This module holds data and nothing else:
//! it must never do I/O.

use std::ffi::CString;
use std::fmt;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::rc::Rc;

/// What kind of entry, from `lstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Char,
    Block,
    Fifo,
    Socket,
    Unknown,
}

/// `struct stat`, the fields goldcap uses, in fixed-width types (the
/// architecture-independent copy `source::fsx` makes of the kernel's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub kind: FileKind,
    /// Permission bits incl. setuid/setgid/sticky (`st_mode & 0o7777`).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    pub nlink: u64,
    /// Device of the filesystem holding it.
    pub dev: u64,
    pub ino: u64,
    /// Device number, for device nodes.
    pub rdev: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub ctime: i64,
    pub ctime_nsec: u32,
}

impl Stat {
    pub fn is_dir(&self) -> bool {
        self.kind == FileKind::Dir
    }
}

/// An entry found on disk.
#[derive(Debug)]
pub struct SourceEntry {
    /// Host path (for messages and attribute reads).
    pub abs: PathBuf,
    /// Path relative to the root, no leading `./`; empty for the root.
    pub rel: Vec<u8>,
    /// `lstat` at the time it was found.
    pub stat: Stat,
    /// The directory holding it, open (`None` for the root itself).
    pub parent: Option<Rc<OwnedFd>>,
    /// Its name in `parent`.
    pub name: CString,
}

/// What a synthetic entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SynthKind {
    Dir,
    /// A regular file with this content.
    File(Vec<u8>),
    /// A symlink to this target.
    Symlink(Vec<u8>),
}

/// An entry goldcap adds to the archive: the top-level `curtin/`, the SSH
/// regenerator unit, a scrub `add`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synthetic {
    /// Path relative to the root.
    pub rel: Vec<u8>,
    pub kind: SynthKind,
    /// Permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time (seconds since the epoch).
    pub mtime: i64,
    /// Replace an entry of the same name (otherwise only added if missing;
    /// a directory is never replaced).
    pub replace: bool,
    /// The scrub operation that adds it, for the report.
    pub op: Option<String>,
}

impl Synthetic {
    /// A directory goldcap adds where the root has none: root's, 0755,
    /// never replacing one the root has, no scrub operation behind it.
    pub fn dir(rel: Vec<u8>, mtime: i64) -> Self {
        Self {
            rel,
            kind: SynthKind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime,
            replace: false,
            op: None,
        }
    }
}

/// What the walk knows about an entry when it asks what to do with it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// Path relative to the root, no leading `./` or `/`; empty for the root.
    pub rel: &'a [u8],
    /// Entry kind (from `lstat`).
    pub kind: FileKind,
    /// Set when this directory is a mount point (another filesystem, or a
    /// bind mount).
    pub mount: Option<MountKind<'a>>,
    /// Its parent is goldcap's output directory.
    pub in_output_dir: bool,
}

/// The filesystem mounted at a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountKind<'a> {
    /// Filesystem type, `""` when unknown.
    pub fstype: &'a str,
    /// Pseudo or volatile (proc, tmpfs, …).
    pub pseudo: bool,
    /// Part of the root's own storage (btrfs subvolume, ZFS dataset).
    pub same_storage: bool,
}

/// What to do with an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Archive it (and, for a directory, descend).
    Keep,
    /// Archive the directory entry itself, not what is below it.
    KeepDirOnly(Reason),
    /// Leave it and everything below it out.
    Drop(Reason),
    /// Archive it transformed by these scrub rules (indices into the plan's
    /// rules, match order); the writer applies them.
    Scrub(Vec<usize>),
}

/// Answers, for each entry the walk finds, what to do with it. The walk
/// asks before it opens anything below a directory. Implemented by
/// `select::policy::Policy`; must be pure.
pub trait Decide {
    fn decide(&self, c: &Candidate<'_>) -> Decision;
}

/// Why an entry was not archived in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Matched an `--exclude` pattern.
    Excluded(String),
    Socket,
    /// One of goldcap's own files in its output directory.
    OutputDir,
    /// Snapper's snapshots of the root.
    Snapshots,
    /// A pseudo or volatile filesystem (proc, tmpfs, …).
    PseudoFs(String),
    /// Another filesystem not named by `--include-mount`.
    OtherMount(String),
    /// One of the volatile directories (`/proc`, `/tmp`, …).
    Volatile,
    /// Dropped by this identity-scrub operation.
    Scrub(String),
}

impl Reason {
    /// A short machine-readable kind, for the JSON manifest.
    pub fn kind(&self) -> &'static str {
        match self {
            Reason::Excluded(_) => "excluded",
            Reason::Socket => "socket",
            Reason::OutputDir => "output-dir",
            Reason::Snapshots => "snapshots",
            Reason::PseudoFs(_) => "pseudo-fs",
            Reason::OtherMount(_) => "other-mount",
            Reason::Volatile => "volatile",
            Reason::Scrub(_) => "scrub",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Excluded(p) => write!(f, "matches --exclude {p:?}"),
            Reason::Socket => f.write_str("socket (cannot be archived)"),
            Reason::OutputDir => f.write_str("goldcap output (artifact, manifest or temporary)"),
            Reason::Snapshots => f.write_str("snapshots of the root (snapper), not crossed"),
            Reason::PseudoFs(t) => write!(f, "pseudo/volatile filesystem ({t}) not crossed"),
            Reason::OtherMount(t) if t.is_empty() => {
                f.write_str("another filesystem, not crossed (see --include-mount)")
            }
            Reason::OtherMount(t) => {
                write!(
                    f,
                    "another filesystem ({t}), not crossed (see --include-mount)"
                )
            }
            Reason::Volatile => f.write_str("volatile directory: content never archived"),
            Reason::Scrub(op) => write!(f, "identity scrub ({op})"),
        }
    }
}
