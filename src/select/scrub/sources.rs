//! Scrub rules computed from the root: swap files and user accounts.
//!
//! Part of planning ([`super::Plan::new`]). Swap files are named in the
//! root's `/etc/fstab` (and, on a live capture, in `/proc/swaps`); they are
//! dropped and their fstab lines deleted, so the clone neither carries the
//! template's memory nor waits for a missing swap file. User accounts are
//! those in `UID_MIN..=UID_MAX` of the root's `login.defs`. Parsers are pure
//! and table-tested; the only I/O is reading the root's small files.

use super::{ActionKind, RuleSpec};
use crate::source::rootfs::RootFs;

fn rule(paths: Vec<String>, action: ActionKind, patterns: Vec<String>) -> RuleSpec {
    RuleSpec {
        paths,
        except: vec![],
        only: None,
        family: vec![],
        action,
        content: None,
        patterns,
        pattern: None,
        replacement: None,
        target: None,
        kind: None,
        mode: None,
        if_missing: false,
        follow: false,
    }
}

/// Swap files in fstab text: `spec` of `swap` lines that is a path (not a
/// device, UUID= or LABEL=).
pub fn fstab_swap_files(fstab: &str) -> Vec<String> {
    fstab
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.starts_with('#') {
                return None;
            }
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && f[2] == "swap" && f[0].starts_with('/') && !f[0].starts_with("/dev/"))
                .then(|| unescape_mount(f[0]))
        })
        .collect()
}

/// Swap files in `/proc/swaps` text (type `file`).
pub fn proc_swap_files(swaps: &str) -> Vec<String> {
    swaps
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 2 && f[1] == "file").then(|| unescape_mount(f[0]))
        })
        .collect()
}

/// fstab and /proc/swaps escape blanks as `\040`.
fn unescape_mount(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\134", "\\")
}

/// The swap file dphys-swapfile (Raspberry Pi OS) manages: `CONF_SWAPFILE`
/// in its config, `/var/swap` by default. `None` without the config.
pub fn dphys_swap_file(conf: Option<&str>) -> Option<String> {
    let conf = conf?;
    let set = conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("CONF_SWAPFILE="))
        .next_back();
    Some(set.map_or("/var/swap".to_owned(), |v| {
        v.trim().trim_matches(['"', '\'']).to_owned()
    }))
}

/// Rules for the root's swap files.
pub fn swap_files(root: &RootFs, live: bool) -> Vec<RuleSpec> {
    let fstab = root
        .read("/etc/fstab", 1 << 20)
        .ok()
        .flatten()
        .unwrap_or_default();
    let mut files = fstab_swap_files(&String::from_utf8_lossy(&fstab));
    let dphys = root.read("/etc/dphys-swapfile", 1 << 20).ok().flatten();
    let dphys = dphys.as_deref().map(String::from_utf8_lossy);
    files.extend(dphys_swap_file(dphys.as_deref()).filter(|f| f.starts_with('/')));
    if live && let Ok(s) = std::fs::read_to_string("/proc/swaps") {
        files.extend(proc_swap_files(&s));
    }
    files.sort();
    files.dedup();
    let mut rules = Vec::new();
    for f in files {
        rules.push(rule(vec![globset::escape(&f)], ActionKind::Drop, vec![]));
        let line = format!(r"^\s*{}\s", regex::escape(&f).replace(' ', r"\\040"));
        rules.push(rule(
            vec!["/etc/fstab".into()],
            ActionKind::DeleteLines,
            vec![line],
        ));
    }
    rules
}

/// `UID_MIN`/`UID_MAX` from login.defs text (defaults 1000/60000).
pub fn uid_range(login_defs: &str) -> (u32, u32) {
    let mut min = 1000;
    let mut max = 60000;
    for l in login_defs.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        match f.as_slice() {
            ["UID_MIN", v, ..] => min = v.parse().unwrap_or(min),
            ["UID_MAX", v, ..] => max = v.parse().unwrap_or(max),
            _ => {}
        }
    }
    (min, max)
}

/// Regular users of passwd text in the range: (name, home).
pub fn regular_users(passwd: &str, (min, max): (u32, u32)) -> Vec<(String, String)> {
    passwd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let uid: u32 = f.get(2)?.parse().ok()?;
            (f.len() >= 6 && (min..=max).contains(&uid) && uid != 65534 && !f[0].is_empty())
                .then(|| (f[0].to_owned(), f[5].to_owned()))
        })
        .collect()
}

/// Rules removing regular users, their private groups, homes and mail.
pub fn user_accounts(root: &RootFs) -> Vec<RuleSpec> {
    let read = |p: &str| {
        String::from_utf8_lossy(&root.read(p, 64 << 20).ok().flatten().unwrap_or_default())
            .into_owned()
    };
    let users = regular_users(&read("/etc/passwd"), uid_range(&read("/etc/login.defs")));
    let mut rules = Vec::new();
    if users.is_empty() {
        return rules;
    }
    let lines: Vec<String> = users
        .iter()
        .map(|(n, _)| format!("^{}:", regex::escape(n)))
        .collect();
    let dbs = ["/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow"]
        .map(String::from)
        .to_vec();
    rules.push(rule(dbs, ActionKind::DeleteLines, lines));
    for (name, home) in users {
        let mut paths = vec![
            format!("/var/spool/mail/{}", globset::escape(&name)),
            format!("/var/mail/{}", globset::escape(&name)),
        ];
        // Only real home directories: never "/", never a system path.
        if (home.starts_with("/home/") || home.starts_with("/var/home/")) && !home.contains("/../")
        {
            paths.push(globset::escape(home.trim_end_matches('/')));
        }
        rules.push(rule(paths, ActionKind::Drop, vec![]));
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstab_table() {
        let fstab = "UUID=abc / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n# /old.swap none swap sw 0 0\n\
                     /dev/sda3 none swap sw 0 0\nUUID=x none swap sw 0 0\n/var/swap\\040file none swap defaults 0 0\n/swap.img\tnone\tswap\tsw\t0\t0\n";
        assert_eq!(
            fstab_swap_files(fstab),
            vec!["/swapfile", "/var/swap file", "/swap.img"]
        );
    }

    #[test]
    fn dphys_table() {
        assert_eq!(dphys_swap_file(None), None);
        assert_eq!(
            dphys_swap_file(Some("# CONF_SWAPSIZE=100\n")).as_deref(),
            Some("/var/swap")
        );
        assert_eq!(
            dphys_swap_file(Some("CONF_SWAPFILE=/srv/swap\n")).as_deref(),
            Some("/srv/swap")
        );
    }

    #[test]
    fn proc_swaps_table() {
        let s = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/swapfile                               file\t\t2097148\t\t0\t\t-2\n/dev/dm-1                               partition\t8388604\t\t0\t\t-3\n";
        assert_eq!(proc_swap_files(s), vec!["/swapfile"]);
    }

    #[test]
    fn users_table() {
        assert_eq!(
            uid_range("# c\nUID_MIN\t\t\t 500\nUID_MAX 2000\n"),
            (500, 2000)
        );
        assert_eq!(uid_range(""), (1000, 60000));
        let passwd = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\nnobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\nsvc:x:999:999::/var/lib/svc:/bin/false\nbob:x:1001:1001::/:/bin/sh\n";
        assert_eq!(
            regular_users(passwd, (1000, 60000)),
            vec![
                ("alice".to_owned(), "/home/alice".to_owned()),
                ("bob".to_owned(), "/".to_owned())
            ]
        );
    }
}
