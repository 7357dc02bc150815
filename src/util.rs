//! Small helpers shared by several stages. Nothing here does I/O.

use std::io;

/// The reason part of an I/O error, without Rust's "(os error N)" suffix,
/// for messages that already name the path.
pub fn io_reason(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// The first error of a writer stage, returned again by every later call,
/// so a caller that goes on after a failure never gets a silent success.
#[derive(Debug, Default)]
pub struct StickyError(Option<(io::ErrorKind, String)>);

impl StickyError {
    /// `Err` with the first recorded error, if there is one.
    pub fn check(&self) -> io::Result<()> {
        match &self.0 {
            Some((kind, msg)) => Err(io::Error::new(*kind, msg.clone())),
            None => Ok(()),
        }
    }

    /// Records `e` unless an earlier error was recorded.
    pub fn record(&mut self, e: &io::Error) {
        self.0.get_or_insert_with(|| (e.kind(), e.to_string()));
    }
}

/// Copies the host's `/usr/lib/systemd/system` into `root`, so unit tests
/// can run `systemd-analyze verify` on goldcap's units next to a real unit
/// tree.
#[cfg(test)]
pub(crate) fn copy_host_units(root: &std::path::Path) {
    std::fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg("/usr/lib/systemd/system")
        .arg(root.join("usr/lib/systemd"))
        .status()
        .unwrap();
    assert!(st.success(), "cp -a /usr/lib/systemd/system: {st}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_os_error_suffix() {
        let e = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(io_reason(&e), "No such file or directory");
        assert_eq!(io_reason(&io::Error::other("plain")), "plain");
    }

    #[test]
    fn sticky_error_keeps_the_first() {
        let mut s = StickyError::default();
        assert!(s.check().is_ok());
        s.record(&io::Error::new(io::ErrorKind::StorageFull, "disk full"));
        s.record(&io::Error::other("later"));
        for _ in 0..2 {
            let e = s.check().unwrap_err();
            assert_eq!(
                (e.kind(), e.to_string()),
                (io::ErrorKind::StorageFull, "disk full".into())
            );
        }
    }
}
