//! Files goldcap takes as input — MANIFESTs, scrub profiles, token files,
//! CA certificates, URL lists — read as what they may be: hostile.
//!
//! Shared by every stage and command. A file is opened without blocking
//! and without becoming the controlling terminal, and must then be a
//! regular file: a FIFO named like a MANIFEST must not hang goldcap, and
//! `/dev/zero` must not fill its memory. Each caller sets a limit for what
//! the file can legitimately hold; past it the read fails with "larger
//! than N" instead of growing. Anything echoed back from an input into a
//! message is clipped ([`clip`]). This module must never read more than a
//! limit, or from anything but a regular file.

use rustix::fs::{Mode, OFlags};
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Opens `path` (following symlinks: the user named it) for reading; an
/// error unless it is a regular file.
pub fn open(path: &Path) -> io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let file = File::from(rustix::fs::open(path, flags, Mode::empty())?);
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(file)
}

/// The content of the regular file `path`, at most `limit` bytes.
pub fn read(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    Limited::new(open(path)?, limit).read_to_end(&mut out)?;
    Ok(out)
}

/// [`read`], as UTF-8 text.
pub fn read_to_string(path: &Path, limit: u64) -> io::Result<String> {
    String::from_utf8(read(path, limit)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// A reader that fails, rather than go on, once its input holds more than
/// `limit` bytes.
pub struct Limited<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Limited<R> {
    pub fn new(inner: R, limit: u64) -> Self {
        Limited {
            inner,
            left: limit,
            limit,
        }
    }
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // At the limit: more is an error, the end is not.
            let mut one = [0u8; 1];
            return match self.inner.read(&mut one)? {
                0 => Ok(0),
                _ => Err(io::Error::new(
                    io::ErrorKind::FileTooLarge,
                    format!("larger than {}", size(self.limit)),
                )),
            };
        }
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let got = self.inner.read(&mut buf[..n])?;
        self.left -= got as u64;
        Ok(got)
    }
}

/// A limit as people say it: `64 KiB`, `1 GiB`.
fn size(bytes: u64) -> String {
    for (unit, name) in [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")] {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{} {name}", bytes / unit);
        }
    }
    format!("{bytes} bytes")
}

/// `text` cut to at most `max` bytes (at a character boundary) with what
/// was left out said, for echoing input back in a message.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", &text[..end], text.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_and_only_up_to_the_limit() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("f");
        std::fs::write(&f, b"12345").unwrap();
        assert_eq!(read(&f, 5).unwrap(), b"12345");
        assert_eq!(read(&f, 100).unwrap(), b"12345");
        let e = read(&f, 4).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::FileTooLarge);
        assert_eq!(e.to_string(), "larger than 4 bytes");
        // A FIFO is refused at once, not waited on; so are devices and
        // directories.
        let fifo = t.path().join("p");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        for p in [fifo.as_path(), Path::new("/dev/zero"), t.path()] {
            let e = read(p, 1 << 30).unwrap_err();
            assert_eq!(e.to_string(), "not a regular file", "{}", p.display());
        }
        assert_eq!(size(64 << 10), "64 KiB");
        assert_eq!(size(1 << 30), "1 GiB");
        assert_eq!(size(1000), "1000 bytes");
    }

    #[test]
    fn clipping_keeps_characters_whole() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("aaaaé", 5), "aaaa… (2 more bytes)");
        assert_eq!(clip(&"x".repeat(1000), 3), "xxx… (997 more bytes)");
    }
}
