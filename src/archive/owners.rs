//! Owner and group names for tar headers, from the captured root's own
//! `/etc/passwd` and `/etc/group` (not the host's: a chroot has its own).
//!
//! Part of the tar writer. Ids stay authoritative (curtin extracts with
//! `--numeric-owner`); names are a courtesy for listings. Read once,
//! through `RootFs`, so a chroot's links resolve inside it. Pure apart
//! from that read.

use crate::source::rootfs::RootFs;
use std::collections::HashMap;

/// Owner and group names from the captured root's `/etc/passwd` and
/// `/etc/group` (not the host's: a chroot has its own).
#[derive(Debug, Default, Clone)]
pub struct Owners {
    users: HashMap<u64, String>,
    groups: HashMap<u64, String>,
}

impl Owners {
    /// Reads the root's user and group databases; empty when missing.
    pub fn from_root(root: &RootFs) -> Owners {
        let read = |p: &str| root.read(p, 64 << 20).ok().flatten().unwrap_or_default();
        Owners {
            users: parse_ids(&read("/etc/passwd")),
            groups: parse_ids(&read("/etc/group")),
        }
    }

    pub(super) fn user(&self, uid: u64) -> Option<&str> {
        self.users.get(&uid).map(String::as_str)
    }

    pub(super) fn group(&self, gid: u64) -> Option<&str> {
        self.groups.get(&gid).map(String::as_str)
    }
}

/// `name:x:id:…` lines → id → name (first name wins).
fn parse_ids(text: &[u8]) -> HashMap<u64, String> {
    let mut map = HashMap::new();
    for line in text.split(|&b| b == b'\n') {
        let mut f = line.split(|&b| b == b':');
        let (Some(name), Some(_), Some(id)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let (Ok(name), Some(id)) = (
            std::str::from_utf8(name),
            std::str::from_utf8(id).ok().and_then(|s| s.parse().ok()),
        ) else {
            continue;
        };
        if !name.is_empty() && !name.starts_with('#') {
            map.entry(id).or_insert_with(|| name.to_owned());
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_tables() {
        let m = parse_ids(b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/:/x\n#c:x:5:\nbad\nroot2:x:0:0::/:/x\nbig:x:3000000:1::/:\n");
        assert_eq!(m.get(&0).map(String::as_str), Some("root"));
        assert_eq!(m.get(&1).map(String::as_str), Some("daemon"));
        assert_eq!(m.get(&3_000_000).map(String::as_str), Some("big"));
        assert_eq!(m.len(), 3);
    }
}
