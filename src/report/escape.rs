//! Byte-path escaping: the one way goldcap turns a path into text.
//!
//! Sits beside the pipeline, used by every place that shows a path to a
//! person or writes it into the MANIFEST: warnings on stderr, the text and
//! JSON manifests, `--json` output. Paths are bytes end to end (a Linux file
//! name is any byte string without `/` and NUL), so text output needs a
//! reversible, injection-safe encoding:
//!
//! * valid UTF-8 that is printable is written as is, so ordinary names stay
//!   readable;
//! * a backslash is written `\\`;
//! * every control character (C0, DEL, C1) and every byte that is not part
//!   of valid UTF-8 is written as a three-digit octal escape `\ooo`, the
//!   style GNU tar uses in its listings (`\351\377`).
//!
//! The result never contains a newline or a terminal escape sequence, so a
//! hostile file name can neither forge a MANIFEST line nor drive the
//! operator's terminal. It is reversible (the tests below decode it back).
//!
//! This module must never lose information: decoding `escape(b)` gives `b`
//! back for every byte string (tested below).

/// Describes the encoding, for the MANIFEST header and the JSON twin.
pub const PATH_ENCODING: &str = "UTF-8; backslash as \\\\; control characters and bytes that are not valid UTF-8 as \\ooo (3-digit octal)";

/// Escapes a byte string for text output (see the module docs).
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else if c.is_control() {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    push_octal(&mut out, b);
                }
            } else {
                out.push(c);
            }
        }
        for &b in chunk.invalid() {
            push_octal(&mut out, b);
        }
    }
    out
}

fn push_octal(out: &mut String, b: u8) {
    out.push('\\');
    out.push(char::from(b'0' + (b >> 6)));
    out.push(char::from(b'0' + ((b >> 3) & 7)));
    out.push(char::from(b'0' + (b & 7)));
}

/// A path as one word of a shell command line the user can paste: as is
/// when it holds only safe characters, otherwise single-quoted. `None`
/// when it cannot be pasted as text (control characters, bytes that are
/// not UTF-8), so a hint is better left out than wrong.
pub fn shell_word(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    if text.chars().any(char::is_control) {
        return None;
    }
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+:,@=%".contains(c);
    Some(if !text.is_empty() && text.chars().all(safe) {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn shell_words_paste_back_as_the_same_path() {
        use super::shell_word;
        assert_eq!(
            shell_word(b"/var/lib/a-1.tgz").as_deref(),
            Some("/var/lib/a-1.tgz")
        );
        assert_eq!(shell_word(b"/tmp/a b").as_deref(), Some("'/tmp/a b'"));
        assert_eq!(shell_word(b"it's").as_deref(), Some("'it'\\''s'"));
        assert_eq!(shell_word(b"$(x)").as_deref(), Some("'$(x)'"));
        assert_eq!(shell_word(b"a\nb"), None);
        assert_eq!(shell_word(b"\xff"), None);
        // What the shell makes of the quoted word is the path again.
        for p in ["/tmp/a b", "it's", "$(x) `y` *", "x\\y"] {
            let w = shell_word(p.as_bytes()).unwrap();
            let o = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {w}"))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(o.stdout).unwrap(), p);
        }
    }

    use super::*;

    /// Reverses [`escape`]. Returns `None` for text that `escape` cannot have
    /// produced (a dangling or malformed backslash sequence).
    pub fn unescape(text: &str) -> Option<Vec<u8>> {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] != b'\\' {
                out.push(bytes[i]);
                i += 1;
                continue;
            }
            match bytes.get(i + 1)? {
                b'\\' => {
                    out.push(b'\\');
                    i += 2;
                }
                d0 @ b'0'..=b'3' => {
                    let d1 = *bytes.get(i + 2)?;
                    let d2 = *bytes.get(i + 3)?;
                    if !(b'0'..=b'7').contains(&d1) || !(b'0'..=b'7').contains(&d2) {
                        return None;
                    }
                    out.push(((d0 - b'0') << 6) | ((d1 - b'0') << 3) | (d2 - b'0'));
                    i += 4;
                }
                _ => return None,
            }
        }
        Some(out)
    }

    #[test]
    fn table() {
        let cases: &[(&[u8], &str)] = &[
            (b"./etc/fstab", "./etc/fstab"),
            (b"", ""),
            (b"back\\slash", "back\\\\slash"),
            (b"new\nline", "new\\012line"),
            (b"tab\there", "tab\\011here"),
            (b"esc\x1b[31m", "esc\\033[31m"),
            (b"del\x7f", "del\\177"),
            (b"caf\xc3\xa9", "caf\u{e9}"),
            (b"bad\xe9\xff", "bad\\351\\377"),
            // A C1 control (U+0085) is valid UTF-8 but still escaped.
            (b"c1\xc2\x85", "c1\\302\\205"),
            ("日本語".as_bytes(), "日本語"),
        ];
        for (raw, text) in cases {
            assert_eq!(escape(raw), *text, "escape({raw:?})");
            assert_eq!(unescape(text).as_deref(), Some(*raw), "unescape({text:?})");
        }
    }

    #[test]
    fn round_trips_every_byte() {
        let all: Vec<u8> = (0..=255u8).collect();
        let text = escape(&all);
        assert!(!text.contains('\n'));
        assert_eq!(unescape(&text).unwrap(), all);
        // Every pair too, which covers partial UTF-8 sequences.
        for a in 0..=255u8 {
            for b in [0u8, 0x41, 0x80, 0xbf, 0xc3, 0xe2, 0xff] {
                let raw = [a, b, 0xa9];
                assert_eq!(unescape(&escape(&raw)).unwrap(), raw);
            }
        }
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["\\", "\\x41", "\\4", "\\48", "\\400x", "a\\"] {
            assert_eq!(unescape(bad), None, "{bad:?}");
        }
    }
}
