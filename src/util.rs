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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_os_error_suffix() {
        let e = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(io_reason(&e), "No such file or directory");
        assert_eq!(io_reason(&io::Error::other("plain")), "plain");
    }
}
