//! Tar headers: ustar blocks from the `tar` crate, and the PAX records that
//! carry what ustar cannot.
//!
//! Pure: callers pass numbers and bytes, this module builds a
//! [`tar::Header`] and a list of [`Pax`] records. Conventions (proved by the
//! GNU tar and bsdtar round-trip tests):
//!
//! * names are `./`-prefixed like DRP image-builder's `tar … .` (root is
//!   `./`, directories end in `/`); the ustar `name` field gets the raw bytes
//!   when they fit in 100, otherwise PAX `path` carries them (the `prefix`
//!   field is never used, so a name is spelled the same in every place);
//! * names or link targets that are not UTF-8 go into PAX `path`/`linkpath`
//!   with `hdrcharset=BINARY`, so bsdtar does not try to convert them;
//! * a link target over 100 bytes goes into PAX `linkpath`, with a
//!   truncated copy in the header (bsdtar turns a symlink with an empty
//!   header link name into a regular file);
//! * `mtime` with nanoseconds, or outside the octal range (before 1970,
//!   after 2242), goes into PAX `mtime`; no atime/ctime, so output is
//!   deterministic;
//! * uid/gid over 2097151 go into PAX `uid`/`gid`, device numbers over it
//!   into `SCHILY.devmajor`/`devminor`, sizes of 8 GiB and more into `size`.
//!
//! Must never write a header whose fields disagree with its PAX records.

use std::fmt::Write as _;
use tar::{EntryType, Header};

/// Largest value of a 7-digit octal ustar field (uid, gid, devices).
pub const MAX_OCTAL7: u64 = 0o7777777;
/// Largest value of an 11-digit octal ustar field (size, mtime).
pub const MAX_OCTAL11: u64 = 0o77777777777;

/// One PAX extended-header record.
pub type Pax = (String, Vec<u8>);

/// The metadata every entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds since the epoch (may be negative).
    pub mtime: i64,
    /// Nanoseconds.
    pub mtime_nsec: u32,
}

/// Formats a PAX time: `sec` or `sec.nnnnnnnnn`, negative values written
/// as the signed decimal value (−1.5 s is `-1.500000000`).
pub fn pax_time(sec: i64, nsec: u32) -> String {
    if nsec == 0 {
        sec.to_string()
    } else if sec >= 0 {
        format!("{sec}.{nsec:09}")
    } else {
        // sec + nsec/1e9 with sec < 0: the magnitude is (-sec-1) + (1e9-nsec)/1e9.
        format!("-{}.{:09}", -(sec + 1), 1_000_000_000 - nsec)
    }
}

/// The ustar header that precedes a PAX extended-header body of `len`
/// bytes. Its name is the fixed `././@PaxHeader` (as Python's tarfile
/// writes), so it is deterministic and never needs escaping.
pub fn pax_header(len: u64) -> Header {
    let mut h = Header::new_ustar();
    h.set_entry_type(EntryType::XHeader);
    let name = b"././@PaxHeader";
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_mode(0o644);
    h.set_size(len);
    h.set_mtime(0);
    h.set_cksum();
    h
}

/// Builds the ustar header for an entry and the PAX records it needs.
pub struct HeaderBuilder {
    pub header: Header,
    /// PAX records, in the order they will be written.
    pub pax: Vec<Pax>,
    binary: bool,
}

impl HeaderBuilder {
    /// A header of `kind` for `name` with `meta`.
    pub fn new(kind: EntryType, name: &[u8], meta: &Meta) -> HeaderBuilder {
        let mut b = HeaderBuilder {
            header: Header::new_ustar(),
            pax: Vec::new(),
            binary: false,
        };
        b.header.set_entry_type(kind);
        b.set_name(name);
        b.header.set_mode(meta.mode & 0o7777);
        b.header.set_uid(meta.uid);
        b.header.set_gid(meta.gid);
        if meta.uid > MAX_OCTAL7 {
            b.pax
                .push(("uid".into(), meta.uid.to_string().into_bytes()));
        }
        if meta.gid > MAX_OCTAL7 {
            b.pax
                .push(("gid".into(), meta.gid.to_string().into_bytes()));
        }
        let in_range = u64::try_from(meta.mtime).is_ok_and(|m| m <= MAX_OCTAL11);
        b.header
            .set_mtime(if in_range { meta.mtime as u64 } else { 0 });
        if !in_range || meta.mtime_nsec != 0 {
            b.pax.push((
                "mtime".into(),
                pax_time(meta.mtime, meta.mtime_nsec).into_bytes(),
            ));
        }
        b.header.set_size(0);
        b
    }

    /// Sets the name (see the module docs).
    pub fn set_name(&mut self, name: &[u8]) {
        let field = &mut self.header.as_old_mut().name;
        field.fill(0);
        let n = name.len().min(field.len());
        field[..n].copy_from_slice(&name[..n]);
        if name.len() > 100 || std::str::from_utf8(name).is_err() {
            self.binary |= std::str::from_utf8(name).is_err();
            self.pax.retain(|(k, _)| k != "path");
            self.pax.push(("path".into(), name.to_vec()));
        }
    }

    /// Sets the link target of a symlink or hard link.
    pub fn set_link(&mut self, target: &[u8]) {
        let field = &mut self.header.as_old_mut().linkname;
        field.fill(0);
        let n = target.len().min(field.len());
        field[..n].copy_from_slice(&target[..n]);
        if target.len() > 100 || std::str::from_utf8(target).is_err() {
            self.binary |= std::str::from_utf8(target).is_err();
            self.pax.push(("linkpath".into(), target.to_vec()));
        }
    }

    /// Sets the body size.
    pub fn set_size(&mut self, size: u64) {
        self.header.set_size(size);
        if size > MAX_OCTAL11 {
            self.pax
                .push(("size".into(), size.to_string().into_bytes()));
        }
    }

    /// Sets device numbers.
    pub fn set_device(&mut self, major: u64, minor: u64) {
        let clamp = |v: u64| u32::try_from(v.min(MAX_OCTAL7)).unwrap_or(0);
        // Unwrap expectation: ustar headers always have device fields.
        self.header
            .set_device_major(clamp(major))
            .expect("ustar header");
        self.header
            .set_device_minor(clamp(minor))
            .expect("ustar header");
        if major > MAX_OCTAL7 || minor > MAX_OCTAL7 {
            self.pax
                .push(("SCHILY.devmajor".into(), major.to_string().into_bytes()));
            self.pax
                .push(("SCHILY.devminor".into(), minor.to_string().into_bytes()));
        }
    }

    /// Sets owner and group names (skipped when they do not fit).
    pub fn set_owner_names(&mut self, user: Option<&str>, group: Option<&str>) {
        if let Some(u) = user {
            let _ = self.header.set_username(u);
        }
        if let Some(g) = group {
            let _ = self.header.set_groupname(g);
        }
    }

    /// Adds a record.
    pub fn push(&mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) {
        self.pax.push((key.into(), value.into()));
    }

    /// Finishes: adds `hdrcharset` when needed, computes the checksum.
    pub fn finish(mut self) -> (Header, Vec<Pax>) {
        if self.binary {
            self.pax
                .insert(0, ("hdrcharset".into(), b"BINARY".to_vec()));
        }
        self.header.set_cksum();
        (self.header, self.pax)
    }
}

/// Length of one record `"<len> <key>=<value>\n"` whose length field counts
/// itself.
fn record_len(kv: usize) -> usize {
    let rest = kv + 3; // space, '=', newline
    let mut len = rest + 1;
    while rest + digits(len) != len {
        len = rest + digits(len);
    }
    len
}

fn digits(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// Encodes PAX records as the body of an extended header.
pub fn encode_pax(records: &[Pax]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let len = record_len(k.len() + v.len());
        let mut head = String::new();
        let _ = write!(head, "{len} {k}=");
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

/// Splits `st_rdev` into major and minor as glibc does.
pub fn split_dev(rdev: u64) -> (u64, u64) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    (major, minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta {
            mode: 0o104755,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            mtime_nsec: 0,
        }
    }

    #[test]
    fn times() {
        assert_eq!(pax_time(1, 0), "1");
        assert_eq!(pax_time(1_612_325_106, 123_456_789), "1612325106.123456789");
        assert_eq!(pax_time(-315_619_200, 0), "-315619200");
        assert_eq!(pax_time(-2, 500_000_000), "-1.500000000");
        assert_eq!(pax_time(-1, 250_000_000), "-0.750000000");
    }

    #[test]
    fn plain_entry_needs_no_pax() {
        let (h, pax) = HeaderBuilder::new(EntryType::Regular, b"./usr/bin/su", &meta()).finish();
        assert!(pax.is_empty(), "{pax:?}");
        assert_eq!(h.mode().unwrap(), 0o4755);
        assert_eq!(&h.as_old().name[..13], b"./usr/bin/su\0");
        assert_eq!(h.mtime().unwrap(), 1_700_000_000);
    }

    #[test]
    fn pax_table() {
        let long = [b"./".as_slice(), &[b'n'; 200]].concat();
        let m = Meta {
            uid: 3_000_000,
            gid: 3_000_001,
            mtime: -315_619_200,
            mtime_nsec: 5,
            ..meta()
        };
        let mut b = HeaderBuilder::new(EntryType::Symlink, &long, &m);
        b.set_link(b"\xe9\xff");
        let (h, pax) = b.finish();
        let keys: Vec<&str> = pax.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["hdrcharset", "path", "uid", "gid", "mtime", "linkpath"]
        );
        assert_eq!(pax[1].1, long);
        assert_eq!(pax[4].1, b"-315619199.999999995");
        assert_eq!(h.mtime().unwrap(), 0);
        // The header keeps a truncated, non-empty copy.
        assert_eq!(&h.as_old().name[..], &long[..100]);
        assert_eq!(&h.as_old().linkname[..2], b"\xe9\xff");

        let mut b = HeaderBuilder::new(EntryType::Regular, b"./big", &meta());
        b.set_size(10 << 30);
        assert_eq!(
            b.finish().1,
            vec![("size".to_string(), b"10737418240".to_vec())]
        );

        let mut b = HeaderBuilder::new(EntryType::Char, b"./dev/x", &meta());
        b.set_device(240, 1_048_575);
        let (h, pax) = b.finish();
        assert!(pax.is_empty());
        assert_eq!(h.device_minor().unwrap(), Some(1_048_575));
        let mut b = HeaderBuilder::new(EntryType::Char, b"./dev/y", &meta());
        b.set_device(1, 4_000_000);
        assert_eq!(b.finish().1.len(), 2);
    }

    #[test]
    fn record_lengths_count_themselves() {
        for kv in [
            0usize, 1, 5, 6, 7, 90, 93, 94, 95, 96, 97, 98, 99, 100, 994, 995, 996, 997, 9993,
            9994, 9995,
        ] {
            let key = "k".to_string();
            let v = vec![b'v'; kv];
            let enc = encode_pax(&[(key.clone(), v)]);
            let stated: usize =
                std::str::from_utf8(&enc[..enc.iter().position(|&c| c == b' ').unwrap()])
                    .unwrap()
                    .parse()
                    .unwrap();
            assert_eq!(stated, enc.len(), "kv={kv}");
        }
    }

    #[test]
    fn device_split_matches_libc() {
        for (maj, min) in [
            (1u32, 3u32),
            (8, 0),
            (240, 1_048_575),
            (259, 7),
            (4095, 255),
        ] {
            let dev = libc::makedev(maj, min);
            assert_eq!(split_dev(dev), (u64::from(maj), u64::from(min)));
        }
    }
}
