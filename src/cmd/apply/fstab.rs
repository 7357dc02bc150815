//! `--fstab`: the clone's `/etc/fstab` from what is mounted under the
//! target, as curtin writes it.
//!
//! Part of apply, checked before the first entry (a target that is not a
//! mount point is a usage error) and written with this machine's other
//! files. The target's mount becomes `/`, each block-device mount below it
//! a line of its own, every filesystem named by `UUID=` (its device's link
//! in `/dev/disk/by-uuid`, or `blkid`'s answer where udev made none);
//! pseudo filesystems and bind mounts of part of a filesystem are left out.
//! This module only reads the host's mount table and asks `blkid`.

use crate::source::mounts::{Mount, MountTable};
use std::path::Path;

/// One fstab line's fields.
#[derive(Debug, PartialEq, Eq)]
struct Line {
    spec: String,
    point: String,
    fstype: String,
    options: String,
    pass: u8,
}

/// A mount point as fstab writes it: space, tab, newline and backslash as
/// octal escapes.
fn escape(point: &str) -> String {
    let mut out = String::new();
    for c in point.chars() {
        match c {
            ' ' | '\t' | '\n' | '\\' => out.push_str(&format!("\\{:03o}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The line for `m`, mounted at `point` in the clone, its filesystem
/// `uuid`; `None` for what fstab does not list.
fn line(m: &Mount, point: &str, uuid: &str) -> Option<Line> {
    if m.is_pseudo() || !m.source.starts_with("/dev/") {
        return None;
    }
    let mut options = Vec::new();
    let fs_root = m.fs_root.to_string_lossy();
    if fs_root != "/" {
        if m.fstype != "btrfs" {
            // A bind mount of part of a filesystem.
            return None;
        }
        options.push(format!("subvol={}", fs_root.trim_start_matches('/')));
    }
    let root = point == "/";
    let (extra, pass) = match m.fstype.as_str() {
        "ext2" | "ext3" | "ext4" if root => (Some("errors=remount-ro"), 1),
        "vfat" if point == "/boot/efi" => (Some("umask=0077"), 1),
        "xfs" | "btrfs" | "zfs" => (None, 0),
        _ if root => (None, 1),
        _ => (None, 2),
    };
    options.extend(extra.map(str::to_owned));
    if options.is_empty() {
        options.push("defaults".into());
    }
    Some(Line {
        spec: format!("UUID={uuid}"),
        point: escape(point),
        fstype: m.fstype.clone(),
        options: options.join(","),
        pass,
    })
}

/// The UUID of the filesystem on `device`.
fn uuid(device: &str) -> Option<String> {
    let dev = std::fs::canonicalize(device).ok()?;
    if let Ok(links) = std::fs::read_dir("/dev/disk/by-uuid") {
        for l in links.flatten() {
            if std::fs::canonicalize(l.path()).is_ok_and(|p| p == dev) {
                return Some(l.file_name().to_string_lossy().into_owned());
            }
        }
    }
    let out = std::process::Command::new("blkid")
        .args(["-s", "UUID", "-o", "value"])
        .arg(&dev)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let u = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !u.is_empty() && !u.contains(char::is_whitespace)).then_some(u)
}

/// The fstab for the clone mounted at `target` (a canonical path), or why
/// none can be written.
pub(super) fn generate(target: &Path) -> Result<String, String> {
    let table = MountTable::load().ok_or("cannot read /proc/self/mountinfo")?;
    generate_from(&table, target, &uuid)
}

fn generate_from(
    table: &MountTable,
    target: &Path,
    uuid: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let shown = target.display();
    let Some(root) = table.at(target) else {
        return Err(format!(
            "{shown} is not a mount point: mount the clone's root filesystem there \
             (and its /boot, /boot/efi …) so --fstab can name them"
        ));
    };
    if root.is_pseudo() || !root.source.starts_with("/dev/") {
        return Err(format!(
            "{shown} is a {} mount of {:?}, not a block device's filesystem",
            root.fstype, root.source
        ));
    }
    let mut lines = Vec::new();
    for m in table.below(target) {
        let rel = m.point.strip_prefix(target).unwrap_or(&m.point);
        let point = format!("/{}", rel.to_string_lossy());
        let point = if point == "/" {
            point
        } else {
            point.trim_end_matches('/').to_owned()
        };
        if m.is_pseudo() || !m.source.starts_with("/dev/") {
            continue;
        }
        let Some(u) = uuid(&m.source) else {
            return Err(format!(
                "no UUID for {} (mounted at {}): neither /dev/disk/by-uuid nor blkid names it",
                m.source,
                m.point.display()
            ));
        };
        lines.extend(line(m, &point, &u));
    }
    let mut text = format!(
        "# /etc/fstab: static file system information.\n\
         # Written by goldcap apply from the filesystems mounted under {shown}.\n\
         # <file system> <mount point> <type> <options> <dump> <pass>\n"
    );
    for l in lines {
        text.push_str(&format!(
            "{} {} {} {} 0 {}\n",
            l.spec, l.point, l.fstype, l.options, l.pass
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_as_curtin_writes_them() {
        let t = MountTable::parse(
            b"22 1 254:0 / / rw shared:1 - ext4 /dev/vda rw\n\
              30 22 7:0 / /mnt/t rw - ext4 /dev/loop0 rw\n\
              31 30 7:1 / /mnt/t/boot/efi rw - vfat /dev/loop1 rw\n\
              32 30 0:40 / /mnt/t/run rw - tmpfs tmpfs rw\n\
              33 30 7:2 /@var /mnt/t/var rw - btrfs /dev/loop2 rw\n\
              34 30 7:0 /srv /mnt/t/mnt/bind rw - ext4 /dev/loop0 rw\n\
              35 30 7:3 / /mnt/t/srv/my\\040data rw - ext4 /dev/loop3 rw\n\
              36 22 7:4 / /mnt/other rw - ext4 /dev/loop4 rw\n",
        );
        let uuid = |d: &str| Some(format!("u-{}", d.trim_start_matches("/dev/")));
        let text = generate_from(&t, Path::new("/mnt/t"), &uuid).unwrap();
        let body: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            body,
            [
                "UUID=u-loop0 / ext4 errors=remount-ro 0 1",
                "UUID=u-loop1 /boot/efi vfat umask=0077 0 1",
                "UUID=u-loop3 /srv/my\\040data ext4 defaults 0 2",
                "UUID=u-loop2 /var btrfs subvol=@var 0 0",
            ]
        );
        assert!(generate_from(&t, Path::new("/mnt"), &uuid).is_err());
        assert!(generate_from(&t, Path::new("/mnt/t/run"), &uuid).is_err());
        let none = |_: &str| None;
        assert!(
            generate_from(&t, Path::new("/mnt/t"), &none)
                .unwrap_err()
                .contains("no UUID for /dev/loop0")
        );
    }
}
