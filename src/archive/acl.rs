//! POSIX ACLs: the kernel's `system.posix_acl_*` xattr value, as the text
//! GNU tar and bsdtar read from `SCHILY.acl.access` / `SCHILY.acl.default`.
//!
//! Pure. The raw xattr is what goldcap already read for the entry (and also
//! archives as `SCHILY.xattr.system.posix_acl_*`, the only form curtin's
//! extraction without `--acls` restores), so decoding it here gives the
//! text form without a second read through libacl — and without the race
//! of reading twice. The value is a stable kernel ABI
//! (`include/uapi/linux/posix_acl_xattr.h`): a little-endian u32 version
//! (2), then 8-byte entries `{u16 tag, u16 perm, u32 id}`.
//!
//! [`from_text`] is the way back, for `goldcap apply` restoring an
//! archive that carries only the text form (GNU tar's and bsdtar's).
//!
//! Ids are written numerically (`user:1234:rwx`): both tars accept that,
//! and names would be the wrong ones for a chroot. Must never panic on a
//! malformed value: it returns `None` and the caller warns.

const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

/// One ACL entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AclEntry {
    tag: u16,
    perm: u16,
    id: u32,
}

fn parse(raw: &[u8]) -> Option<Vec<AclEntry>> {
    if raw.len() < 4 || !(raw.len() - 4).is_multiple_of(8) {
        return None;
    }
    if u32::from_le_bytes(raw[..4].try_into().ok()?) != VERSION {
        return None;
    }
    raw[4..]
        .chunks_exact(8)
        .map(|c| {
            let e = AclEntry {
                tag: u16::from_le_bytes([c[0], c[1]]),
                perm: u16::from_le_bytes([c[2], c[3]]),
                id: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            };
            matches!(e.tag, USER_OBJ | USER | GROUP_OBJ | GROUP | MASK | OTHER).then_some(e)
        })
        .collect()
}

/// The text form of a raw ACL xattr (`user::rw-,user:1234:rwx,…`), or
/// `None` when it is malformed. For an access ACL that holds only the three
/// base entries (nothing beyond the mode bits) it is `Some("")`: tars write
/// no record. A default ACL is always written, even a base-only one: its
/// presence is what makes new files inherit it.
pub fn to_text(raw: &[u8], access: bool) -> Option<String> {
    let entries = parse(raw)?;
    let extended = entries.iter().any(|e| matches!(e.tag, USER | GROUP | MASK));
    if access && !extended && entries.len() <= 3 {
        return Some(String::new());
    }
    let mut out = String::new();
    for e in entries {
        if !out.is_empty() {
            out.push(',');
        }
        let (tag, qual) = match e.tag {
            USER_OBJ => ("user", None),
            USER => ("user", Some(e.id)),
            GROUP_OBJ => ("group", None),
            GROUP => ("group", Some(e.id)),
            MASK => ("mask", None),
            _ => ("other", None),
        };
        out.push_str(tag);
        out.push(':');
        if let Some(id) = qual {
            out.push_str(&id.to_string());
        }
        out.push(':');
        out.push(if e.perm & 4 != 0 { 'r' } else { '-' });
        out.push(if e.perm & 2 != 0 { 'w' } else { '-' });
        out.push(if e.perm & 1 != 0 { 'x' } else { '-' });
    }
    Some(out)
}

/// The raw xattr value of an ACL's text form (`user::rw-,user:1234:rwx,…`,
/// entries separated by `,` or newlines; bsdtar's trailing `:id` field is
/// accepted), entries in the order the kernel requires. `None` when the
/// text is malformed or names a user or group by name (names would be the
/// host's, not the target's).
pub fn from_text(text: &str) -> Option<Vec<u8>> {
    let mut entries = Vec::new();
    for item in text.split([',', '\n']).map(str::trim) {
        if item.is_empty() || item.starts_with('#') {
            continue;
        }
        let item = item.strip_prefix("default:").unwrap_or(item);
        let mut f = item.split(':');
        let (kind, qual, perm) = (f.next()?, f.next()?, f.next()?);
        let extra_id = f.next();
        if f.next().is_some() || perm.len() != 3 {
            return None;
        }
        let id = match (qual, extra_id) {
            ("", _) => None,
            (q, _) if q.bytes().all(|b| b.is_ascii_digit()) => Some(q.parse::<u32>().ok()?),
            (_, Some(i)) => Some(i.parse::<u32>().ok()?),
            _ => return None,
        };
        let tag = match (kind, id.is_some()) {
            ("user" | "u", false) => USER_OBJ,
            ("user" | "u", true) => USER,
            ("group" | "g", false) => GROUP_OBJ,
            ("group" | "g", true) => GROUP,
            ("mask" | "m", false) => MASK,
            ("other" | "o", false) => OTHER,
            _ => return None,
        };
        let mut bits = 0u16;
        for (c, (want, bit)) in perm.chars().zip([('r', 4), ('w', 2), ('x', 1)]) {
            match c {
                c if c == want => bits |= bit,
                '-' => {}
                _ => return None,
            }
        }
        entries.push(AclEntry {
            tag,
            perm: bits,
            id: id.unwrap_or(u32::MAX),
        });
    }
    entries.sort_by_key(|e| (e.tag, e.id));
    let mut raw = VERSION.to_le_bytes().to_vec();
    for e in entries {
        raw.extend_from_slice(&e.tag.to_le_bytes());
        raw.extend_from_slice(&e.perm.to_le_bytes());
        raw.extend_from_slice(&e.id.to_le_bytes());
    }
    Some(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut v = VERSION.to_le_bytes().to_vec();
        for (t, p, i) in entries {
            v.extend_from_slice(&t.to_le_bytes());
            v.extend_from_slice(&p.to_le_bytes());
            v.extend_from_slice(&i.to_le_bytes());
        }
        v
    }

    #[test]
    fn table() {
        let u = u32::MAX; // ACL_UNDEFINED_ID
        let cases: Vec<(Vec<u8>, Option<&str>)> = vec![
            (
                raw(&[
                    (USER_OBJ, 6, u),
                    (USER, 7, 1234),
                    (GROUP_OBJ, 4, u),
                    (GROUP, 5, 2345),
                    (MASK, 7, u),
                    (OTHER, 4, u),
                ]),
                Some("user::rw-,user:1234:rwx,group::r--,group:2345:r-x,mask::rwx,other::r--"),
            ),
            (
                raw(&[(USER_OBJ, 6, u), (GROUP_OBJ, 4, u), (OTHER, 0, u)]),
                Some(""),
            ),
            (raw(&[]), Some("")),
            (vec![2, 0, 0], None),
            (raw(&[(0x40, 7, 0)]), None),
            (
                {
                    let mut v = raw(&[(USER_OBJ, 6, u)]);
                    v[0] = 1;
                    v
                },
                None,
            ),
            (raw(&[(USER_OBJ, 6, u)])[..10].to_vec(), None),
        ];
        for (bytes, want) in cases {
            assert_eq!(to_text(&bytes, true).as_deref(), want, "{bytes:?}");
        }
        // A base-only default ACL still matters (inheritance).
        let base = raw(&[(USER_OBJ, 7, u), (GROUP_OBJ, 5, u), (OTHER, 0, u)]);
        assert_eq!(
            to_text(&base, false).as_deref(),
            Some("user::rwx,group::r-x,other::---")
        );
    }

    #[test]
    fn text_goes_back_to_the_raw_value() {
        let u = u32::MAX;
        let full = raw(&[
            (USER_OBJ, 6, u),
            (USER, 7, 1234),
            (GROUP_OBJ, 4, u),
            (GROUP, 5, 2345),
            (MASK, 7, u),
            (OTHER, 4, u),
        ]);
        let text = to_text(&full, true).unwrap();
        assert_eq!(from_text(&text).unwrap(), full);
        // Out of order, newline-separated, bsdtar's trailing id.
        assert_eq!(
            from_text(
                "other::r--\ngroup:staff:r-x:2345\nmask::rwx\nuser::rw-\nuser:1234:rwx\ngroup::r--"
            )
            .unwrap(),
            full
        );
        for bad in [
            "user:bob:rwx",
            "user::rw",
            "user::rwz",
            "lord::rwx",
            "user:1:rwx:2:3",
        ] {
            assert_eq!(from_text(bad), None, "{bad}");
        }
    }

    #[test]
    fn matches_getfacl_on_a_real_file() {
        // Independent check against setfacl/getfacl when available (root CI).
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("f");
        std::fs::write(&f, "x").unwrap();
        let ok = std::process::Command::new("setfacl")
            .args(["-m", "u:1234:rwx,g:2345:r-x"])
            .arg(&f)
            .status();
        if !matches!(ok, Ok(s) if s.success()) {
            eprintln!("setfacl unavailable; skipped");
            return;
        }
        let raw = xattr::get(&f, "system.posix_acl_access").unwrap().unwrap();
        let text = to_text(&raw, true).unwrap();
        let out = std::process::Command::new("getfacl")
            .args(["-n", "-c", "-E"])
            .arg(&f)
            .output()
            .unwrap();
        let want: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split_whitespace().next().unwrap().to_owned())
            .collect();
        assert_eq!(text, want.join(","));
    }
}
