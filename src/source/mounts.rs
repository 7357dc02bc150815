//! The mount table: which directories under the root are other filesystems,
//! and which of those are pseudo or volatile.
//!
//! Sits before the walk: [`crate::source::walk`] asks [`MountTable::at`] for
//! every directory, and [`crate::select::policy`] decides from the answer
//! whether to cross. The table comes from `/proc/self/mountinfo`, which also
//! sees bind mounts of the same device (a `st_dev` comparison does not) and
//! names each filesystem type. Inside a chroot with `/proc` bind-mounted (DRP
//! image-builder's tasks) the kernel shows mount points relative to the chroot,
//! which is what we want. Without `/proc` the walk falls back to comparing
//! `st_dev` and `statfs` magic numbers.
//!
//! The parser is pure and table-tested. This module must never mount,
//! unmount or touch a filesystem.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Mount point, as an absolute host path.
    pub point: PathBuf,
    /// Filesystem type (`ext4`, `proc`, `tmpfs`, …).
    pub fstype: String,
    /// Mount source (device, or a pseudo name).
    pub source: String,
    /// The directory of the filesystem that is mounted here: `/` for a whole
    /// filesystem, a subdirectory for a bind mount of part of one.
    pub fs_root: PathBuf,
}

impl Mount {
    /// Whether this filesystem is pseudo or volatile and is never archived.
    pub fn is_pseudo(&self) -> bool {
        is_pseudo_fstype(&self.fstype)
    }

    /// Whether this mount is another part of the same storage as `root`: a
    /// btrfs subvolume of the same filesystem (same device), or a ZFS
    /// dataset of the same pool. Distributions split their root this way
    /// (openSUSE mounts `/var`, `/opt`, `/srv` … as subvolumes; Ubuntu on
    /// ZFS mounts `/var/lib`, `/var/log` … as datasets), and an image
    /// without them does not boot.
    pub fn same_storage(&self, root: &Mount) -> bool {
        match (self.fstype.as_str(), root.fstype.as_str()) {
            ("btrfs", "btrfs") => self.source == root.source,
            ("zfs", "zfs") => pool(&self.source) == pool(&root.source),
            _ => false,
        }
    }
}

fn pool(dataset: &str) -> &str {
    dataset.split('/').next().unwrap_or(dataset)
}

/// Filesystem types whose content is never archived: kernel views,
/// memory-backed scratch space, and automounter placeholders.
pub const PSEUDO_FSTYPES: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "sysfs",
    "tmpfs",
    "tracefs",
];

/// Whether `fstype` is pseudo or volatile (see [`PSEUDO_FSTYPES`]).
pub fn is_pseudo_fstype(fstype: &str) -> bool {
    PSEUDO_FSTYPES.contains(&fstype) || fstype.starts_with("fuse.gvfs")
}

/// Pseudo filesystem magic numbers (`statfs.f_type`), for the fallback when
/// `/proc` is not mounted.
pub fn pseudo_fstype_from_magic(magic: i64) -> Option<&'static str> {
    Some(match magic {
        0x9fa0 => "proc",
        0x6265_6572 => "sysfs",
        0x0102_1994 => "tmpfs",
        0x1cd1 => "devpts",
        0x0027_e0eb => "cgroup",
        0x6367_7270 => "cgroup2",
        0x7363_6673 => "securityfs",
        0x6462_6720 => "debugfs",
        0x7472_6163 => "tracefs",
        0x6165_676c => "pstore",
        0xcafe_4a11 => "bpf",
        0x1980_0202 => "mqueue",
        0x9584_58f6 => "hugetlbfs",
        0x6e73_6673 => "nsfs",
        0xde5e_81e4 => "efivarfs",
        0x8584_58f6 => "ramfs",
        0x0187 => "autofs",
        _ => return None,
    })
}

/// The mounts visible to this process, by mount point.
#[derive(Debug, Clone, Default)]
pub struct MountTable {
    by_point: HashMap<PathBuf, Mount>,
}

impl MountTable {
    /// Reads `/proc/self/mountinfo`; `None` when it cannot be read (no
    /// `/proc` in a chroot).
    pub fn load() -> Option<MountTable> {
        let text = std::fs::read("/proc/self/mountinfo").ok()?;
        Some(MountTable::parse(&text))
    }

    /// Parses mountinfo text. Later lines win for the same mount point
    /// (they are stacked on top).
    pub fn parse(text: &[u8]) -> MountTable {
        let mut by_point = HashMap::new();
        for line in text.split(|&b| b == b'\n') {
            if let Some(m) = parse_line(line) {
                by_point.insert(m.point.clone(), m);
            }
        }
        MountTable { by_point }
    }

    /// The mount whose mount point is exactly `path` (absolute host path).
    pub fn at(&self, path: &Path) -> Option<&Mount> {
        self.by_point.get(path)
    }

    /// The mounts at or below `path`, parents before their children.
    pub fn below(&self, path: &Path) -> Vec<&Mount> {
        let mut v: Vec<&Mount> = self
            .by_point
            .values()
            .filter(|m| m.point.starts_with(path))
            .collect();
        v.sort_by(|a, b| a.point.cmp(&b.point));
        v
    }

    /// The mount holding `path` (the longest mount point that is a prefix).
    pub fn containing(&self, path: &Path) -> Option<&Mount> {
        path.ancestors().find_map(|p| self.by_point.get(p))
    }

    /// Estimated content bytes of a capture of `root`: the used blocks of
    /// its filesystem and of each crossed mount (`include`, root-relative)
    /// — only when the root is a whole mounted filesystem (a live `/` or a
    /// mounted image); a directory on a shared filesystem gets no estimate
    /// (a spinner) rather than a wrong one.
    pub fn used_estimate(&self, root: &Path, include: &[Vec<u8>]) -> Option<u64> {
        // A bind mount of a subdirectory reports the whole filesystem's usage.
        if self.at(root)?.fs_root != Path::new("/") {
            return None;
        }
        let mut total = used_bytes(root)?;
        for rel in include {
            let p = root.join(std::ffi::OsStr::from_bytes(rel));
            if self.at(&p).is_some_and(|m| m.fs_root == Path::new("/")) {
                total += used_bytes(&p).unwrap_or(0);
            }
        }
        Some(total)
    }
}

/// Bytes in use on the filesystem holding `p` (`statvfs`).
fn used_bytes(p: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(p).ok()?;
    Some(s.f_blocks.saturating_sub(s.f_bfree) * s.f_frsize)
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root
/// rw,errors=continue`
fn parse_line(line: &[u8]) -> Option<Mount> {
    let mut fields = line.split(|&b| b == b' ');
    let fs_root = fields.nth(3)?;
    let point = fields.next()?;
    // Optional fields end at the lone "-" separator.
    let mut rest = fields.skip_while(|f| *f != b"-");
    rest.next()?;
    let fstype = rest.next()?;
    let source = rest.next().unwrap_or(b"");
    Some(Mount {
        point: PathBuf::from(OsString::from_vec(unescape_octal(point))),
        fstype: String::from_utf8_lossy(&unescape_octal(fstype)).into_owned(),
        source: String::from_utf8_lossy(&unescape_octal(source)).into_owned(),
        fs_root: PathBuf::from(OsString::from_vec(unescape_octal(fs_root))),
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\'
            && i + 3 < s.len()
            && s[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b))
        {
            out.push(((s[i + 1] - b'0') << 6) | ((s[i + 2] - b'0') << 3) | (s[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
23 22 0:21 / /proc rw,nosuid shared:2 - proc proc rw
24 22 0:22 / /sys rw shared:3 - sysfs sysfs rw
25 22 254:1 / /boot rw shared:4 - ext4 /dev/vda1 rw
26 25 254:2 / /boot/efi rw shared:5 - vfat /dev/vda2 rw,fmask=0077
27 22 0:30 / /mnt/with\\040space rw - tmpfs tmpfs rw
28 22 254:0 /srv/a /mnt/bind rw master:9 propagate_from:1 - ext4 /dev/vda rw
29 22 0:40 / /run rw - tmpfs tmpfs rw
30 29 0:41 / /run rw - tmpfs other rw
";

    #[test]
    fn parses_mountinfo() {
        let t = MountTable::parse(SAMPLE);
        assert_eq!(t.at(Path::new("/proc")).unwrap().fstype, "proc");
        assert!(t.at(Path::new("/proc")).unwrap().is_pseudo());
        let efi = t.at(Path::new("/boot/efi")).unwrap();
        assert_eq!(
            (efi.fstype.as_str(), efi.source.as_str()),
            ("vfat", "/dev/vda2")
        );
        assert!(!efi.is_pseudo());
        // Escaped space; optional fields of any count.
        assert_eq!(t.at(Path::new("/mnt/with space")).unwrap().fstype, "tmpfs");
        assert_eq!(t.at(Path::new("/mnt/bind")).unwrap().fstype, "ext4");
        assert_eq!(
            t.at(Path::new("/mnt/bind")).unwrap().fs_root,
            Path::new("/srv/a")
        );
        assert_eq!(t.at(Path::new("/boot")).unwrap().fs_root, Path::new("/"));
        // Stacked mounts: the last one is visible.
        assert_eq!(t.at(Path::new("/run")).unwrap().source, "other");
        assert!(t.at(Path::new("/etc")).is_none());
        assert_eq!(t.at(Path::new("/boot/efi")).unwrap().fstype, "vfat");
        assert_eq!(t.by_point.len(), 8, "each mount point once");
    }

    #[test]
    fn same_storage_table() {
        let m = |fstype: &str, source: &str| Mount {
            point: PathBuf::from("/x"),
            fstype: fstype.into(),
            source: source.into(),
            fs_root: PathBuf::from("/"),
        };
        let btrfs_root = m("btrfs", "/dev/sda2");
        assert!(m("btrfs", "/dev/sda2").same_storage(&btrfs_root));
        assert!(!m("btrfs", "/dev/sdb1").same_storage(&btrfs_root));
        assert!(!m("ext4", "/dev/sda2").same_storage(&btrfs_root));
        let zfs_root = m("zfs", "rpool/ROOT/ubuntu_abc");
        assert!(m("zfs", "rpool/ROOT/ubuntu_abc/var/lib").same_storage(&zfs_root));
        assert!(m("zfs", "rpool/USERDATA/home_abc").same_storage(&zfs_root));
        assert!(!m("zfs", "bpool/BOOT/ubuntu_abc").same_storage(&zfs_root));
        assert!(
            !m("ext4", "/dev/sda1").same_storage(&m("ext4", "/dev/sda1")),
            "ext4 bind mounts are not subvolumes"
        );
        let t = MountTable::parse(SAMPLE);
        assert_eq!(
            t.containing(Path::new("/boot/efi/EFI")).unwrap().point,
            Path::new("/boot/efi")
        );
        assert_eq!(
            t.containing(Path::new("/etc")).unwrap().point,
            Path::new("/")
        );
    }

    #[test]
    fn pseudo_classification() {
        for f in [
            "proc", "sysfs", "devtmpfs", "tmpfs", "cgroup2", "devpts", "mqueue",
        ] {
            assert!(is_pseudo_fstype(f), "{f}");
        }
        for f in ["ext4", "xfs", "btrfs", "vfat", "nfs4", "zfs", "overlay"] {
            assert!(!is_pseudo_fstype(f), "{f}");
        }
        assert_eq!(pseudo_fstype_from_magic(0x9fa0), Some("proc"));
        assert_eq!(pseudo_fstype_from_magic(0xef53), None); // ext4
    }
}
