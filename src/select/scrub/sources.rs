//! Scrub rules computed from the root: swap files, user accounts, home
//! directories.
//!
//! Part of planning ([`super::Plan::new`]). Swap files are named in the
//! root's `/etc/fstab`, dphys-swapfile's config and, on a live capture,
//! `/proc/swaps`; they are dropped (they hold the template's memory) and,
//! on systemd roots, recreated at first boot with their fstab lines kept
//! ([`swap_plan`]). User accounts are those in `UID_MIN..=UID_MAX` of the
//! root's `login.defs`. Homes (for `~/` in rules) come from the root's
//! `/etc/passwd`. Parsers are pure and table-tested; the only I/O is
//! reading the root's small files. Must never modify the root.

use super::{ActionKind, RuleSpec};
use crate::source::rootfs::RootFs;
use std::os::unix::ffi::OsStrExt;

/// A rule with only paths, an action and line patterns.
pub(super) fn rule(paths: Vec<String>, action: ActionKind, patterns: Vec<String>) -> RuleSpec {
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

/// Where goldcap found a swap file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapOrigin {
    /// A `swap` line in `/etc/fstab`.
    Fstab,
    /// dphys-swapfile's config (it recreates the file at boot).
    Dphys,
    /// Only in `/proc/swaps` (a live capture).
    Live,
}

/// A swap file of the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapFile {
    /// Absolute path inside the root.
    pub path: String,
    /// Its size when the root has it as a non-empty regular file.
    pub bytes: Option<u64>,
    pub origin: SwapOrigin,
}

/// What the swap-files operation does on one root.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SwapPlan {
    /// Rules: every swap file dropped; without systemd, its fstab line too.
    pub rules: Vec<RuleSpec>,
    /// Files a first-boot unit recreates: (path, bytes).
    pub recreate: Vec<(String, u64)>,
    /// What happens to each file, for the MANIFEST.
    pub note: Option<String>,
    /// The clone loses swap the template had: said loudly.
    pub alert: bool,
}

/// The swap files of the root: fstab's, dphys-swapfile's and, on a live
/// capture, those `/proc/swaps` lists; with their sizes.
pub fn swap_files(root: &RootFs, live: bool) -> Vec<SwapFile> {
    let fstab = root
        .read("/etc/fstab", 1 << 20)
        .ok()
        .flatten()
        .unwrap_or_default();
    let mut found: Vec<(String, SwapOrigin)> = fstab_swap_files(&String::from_utf8_lossy(&fstab))
        .into_iter()
        .map(|f| (f, SwapOrigin::Fstab))
        .collect();
    let dphys = root.read("/etc/dphys-swapfile", 1 << 20).ok().flatten();
    let dphys = dphys.as_deref().map(String::from_utf8_lossy);
    found.extend(
        dphys_swap_file(dphys.as_deref())
            .filter(|f| f.starts_with('/'))
            .map(|f| (f, SwapOrigin::Dphys)),
    );
    if live && let Ok(s) = std::fs::read_to_string("/proc/swaps") {
        found.extend(
            proc_swap_files(&s)
                .into_iter()
                .map(|f| (f, SwapOrigin::Live)),
        );
    }
    let mut files: Vec<SwapFile> = Vec::new();
    // The first origin found wins: fstab, then dphys-swapfile, then live.
    for (path, origin) in found {
        if !files.iter().any(|f| f.path == path) {
            let bytes = file_size(root, &path);
            files.push(SwapFile {
                path,
                bytes,
                origin,
            });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

/// The size of a non-empty regular file inside the root (its last
/// component not followed).
fn file_size(root: &RootFs, path: &str) -> Option<u64> {
    let (dir, name) = path.rsplit_once('/')?;
    let dir = root.resolve(if dir.is_empty() { "/" } else { dir }).ok()?;
    let m = std::fs::symlink_metadata(dir.join(name)).ok()?;
    (m.is_file() && m.len() > 0).then_some(m.len())
}

/// The swap-files operation for `files`. Every file is dropped (it holds
/// the template's memory). With systemd, an fstab file is recreated at
/// first boot with its size and its fstab line is kept, so clones keep the
/// swap the template had; without systemd nothing can recreate it, so the
/// line goes too (a missing file would fail the boot's swapon) and the
/// plan says loudly that clones run without it. dphys-swapfile recreates
/// its own file. Pure.
pub fn swap_plan(files: &[SwapFile], systemd: bool) -> SwapPlan {
    let mut plan = SwapPlan::default();
    let (mut recreated, mut removed, mut other) = (Vec::new(), Vec::new(), Vec::new());
    for f in files {
        plan.rules.push(rule(
            vec![globset::escape(&f.path)],
            ActionKind::Drop,
            vec![],
        ));
        let sized = |b: u64| format!("{} ({b} bytes)", f.path);
        match (f.origin, f.bytes) {
            (SwapOrigin::Fstab, Some(b)) if systemd => {
                plan.recreate.push((f.path.clone(), b));
                recreated.push(sized(b));
            }
            (SwapOrigin::Fstab, Some(b)) => {
                let line = format!(r"^\s*{}\s", regex::escape(&f.path).replace(' ', r"\\040"));
                plan.rules.push(rule(
                    vec!["/etc/fstab".into()],
                    ActionKind::DeleteLines,
                    vec![line],
                ));
                removed.push(sized(b));
            }
            (SwapOrigin::Fstab, None) => {
                other.push(format!("{} is in fstab but not in the root", f.path))
            }
            (SwapOrigin::Dphys, _) => {
                other.push(format!("{} is recreated at boot by dphys-swapfile", f.path))
            }
            (SwapOrigin::Live, _) => other.push(format!(
                "{} (active, not in fstab) is not recreated",
                f.path
            )),
        }
    }
    let mut notes = Vec::new();
    if !removed.is_empty() {
        plan.alert = true;
        notes.push(format!(
            "REMOVED: no systemd to recreate {} at first boot, so its fstab line was deleted: clones run without that swap",
            removed.join(", ")
        ));
    }
    if !recreated.is_empty() {
        notes.push(format!(
            "recreated at first boot by {} before swap.target, fstab lines kept: {}",
            super::firstboot::SWAP_UNIT_PATH,
            recreated.join(", ")
        ));
    }
    notes.extend(other);
    plan.note = (!notes.is_empty()).then(|| notes.join("; "));
    plan
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

/// The hash links (`<hash>.0`) `make-ssl-cert` and `openssl rehash` put
/// beside the snakeoil certificate in `/etc/ssl/certs`: dropped with it, or
/// the clone's own certificate (another name, another hash) would leave
/// them dangling.
pub fn snakeoil_hash_links(root: &RootFs) -> Vec<RuleSpec> {
    const DIR: &str = "/etc/ssl/certs";
    let Ok(host) = root.resolve(DIR) else {
        return Vec::new();
    };
    let mut paths = Vec::new();
    for name in root.list(DIR) {
        let Ok(target) = std::fs::read_link(host.join(&name)) else {
            continue;
        };
        let t = target.as_os_str().as_bytes();
        if (t == b"ssl-cert-snakeoil.pem" || t == b"/etc/ssl/certs/ssl-cert-snakeoil.pem")
            && let Some(name) = name.to_str()
        {
            paths.push(format!("{DIR}/{}", globset::escape(name)));
        }
    }
    if paths.is_empty() {
        return Vec::new();
    }
    let mut r = rule(paths, ActionKind::Drop, vec![]);
    r.only = Some(super::spec::Only::Symlink);
    vec![r]
}

/// Home directories as glob prefixes, for rules written with `~/`:
/// `/root`, `/home/*` (accounts from LDAP or SSSD have no passwd line),
/// and every other home in the root's `/etc/passwd` — service accounts
/// such as `/var/lib/postgresql` or `/srv/deploy` carry keys too.
pub fn homes(root: &RootFs) -> Vec<String> {
    let passwd = root
        .read("/etc/passwd", 64 << 20)
        .ok()
        .flatten()
        .unwrap_or_default();
    passwd_homes(&passwd)
}

/// The homes of passwd text (see [`homes`]): plain absolute paths only
/// (never `/`, no `.` or `..` components, none in `/tmp`, `/run`, `/dev`
/// …). A line that is not UTF-8 is skipped: globs are text, and `/home/*`
/// still covers it there.
pub fn passwd_homes(passwd: &[u8]) -> Vec<String> {
    let mut out = vec!["/root".to_owned(), "/home/*".to_owned()];
    for line in passwd.split(|&b| b == b'\n') {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        let Some(home) = line.split(':').nth(5).map(|h| h.trim_end_matches('/')) else {
            continue;
        };
        let plain = home.strip_prefix('/').is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .split('/')
                    .all(|c| !c.is_empty() && c != "." && c != "..")
        });
        // A home in a volatile directory (`sys`'s `/dev`, `/run/sshd`) holds
        // nothing an image keeps.
        let volatile = crate::select::policy::VOLATILE_DIRS.iter().any(|v| {
            home.strip_prefix('/')
                .and_then(|h| h.strip_prefix(v))
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        });
        let covered = volatile
            || home == "/root"
            || home
                .strip_prefix("/home/")
                .is_some_and(|n| !n.contains('/'));
        let g = globset::escape(home);
        if plain && !covered && !out.contains(&g) {
            out.push(g);
        }
    }
    out
}

/// `pattern` with a leading `~` expanded to each of `homes`.
pub fn expand_home(pattern: &str, homes: &[String]) -> Vec<String> {
    match pattern.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            homes.iter().map(|h| format!("{h}{rest}")).collect()
        }
        _ => vec![pattern.to_owned()],
    }
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
    fn homes_table() {
        let passwd = b"root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n\
                       pg:x:110:110::/var/lib/postgresql/:/bin/sh\nweb:x:33:33::/:/bin/false\n\
                       odd:x:5:5::/srv/../etc:/bin/sh\nrel:x:6:6::srv/x:/bin/sh\nshort:x:7:7\n\
                       glob:x:8:8::/srv/[a]*:/bin/sh\nbad:x:9:9::/srv/\xff:/bin/sh\n\
                       sys:x:3:3::/dev:/bin/false\nsshd:x:100:1::/run/sshd:/bin/false\nt:x:4:4::/tmpx:/bin/sh\n";
        assert_eq!(
            passwd_homes(passwd),
            vec![
                "/root",
                "/home/*",
                "/var/lib/postgresql",
                "/srv/[[]a[]][*]",
                "/tmpx"
            ]
        );
        assert_eq!(
            expand_home("~/.ssh/id_*", &["/root".into(), "/home/*".into()]),
            vec!["/root/.ssh/id_*", "/home/*/.ssh/id_*"]
        );
        assert_eq!(expand_home("~", &["/root".into()]), vec!["/root"]);
        assert_eq!(expand_home("~x/y", &["/root".into()]), vec!["~x/y"]);
        assert_eq!(expand_home("/etc/x", &["/root".into()]), vec!["/etc/x"]);
    }

    fn swap(path: &str, bytes: Option<u64>, origin: SwapOrigin) -> SwapFile {
        SwapFile {
            path: path.into(),
            bytes,
            origin,
        }
    }

    #[test]
    fn swap_plan_table() {
        let files = [
            swap("/swapfile", Some(1 << 30), SwapOrigin::Fstab),
            swap("/gone", None, SwapOrigin::Fstab),
            swap("/var/swap", Some(100), SwapOrigin::Dphys),
            swap("/tmp/manual", Some(4096), SwapOrigin::Live),
        ];
        let p = swap_plan(&files, true);
        assert_eq!(p.recreate, vec![("/swapfile".to_owned(), 1 << 30)]);
        assert!(!p.alert);
        assert_eq!(p.rules.len(), 4, "every file dropped, no fstab edit");
        assert!(p.rules.iter().all(|r| r.action == ActionKind::Drop));
        assert_eq!(
            p.note.as_deref(),
            Some(
                "recreated at first boot by /etc/systemd/system/goldcap-swap-files.service before swap.target, \
                 fstab lines kept: /swapfile (1073741824 bytes); /gone is in fstab but not in the root; \
                 /var/swap is recreated at boot by dphys-swapfile; /tmp/manual (active, not in fstab) is not recreated"
            )
        );
        let p = swap_plan(&files, false);
        assert!(p.recreate.is_empty() && p.alert);
        let edits: Vec<&RuleSpec> = p
            .rules
            .iter()
            .filter(|r| r.action == ActionKind::DeleteLines)
            .collect();
        assert_eq!(edits.len(), 1);
        assert_eq!(edits[0].patterns, vec![r"^\s*/swapfile\s"]);
        assert!(
            p.note
                .unwrap()
                .starts_with("REMOVED: no systemd to recreate /swapfile (1073741824 bytes)")
        );
        assert_eq!(swap_plan(&[], true), SwapPlan::default());
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
