//! Per-machine inputs of `goldcap apply`: SSH public keys
//! (`--ssh-authorized-key FILE[:USER]`) and a cloud-init NoCloud seed
//! (`--nocloud DIR`), read from the host when the command line is checked.
//!
//! Before the run: every file is host input, read bounded and only when
//! regular ([`crate::input`]); a key file must hold OpenSSH public key
//! lines, so a private key given by mistake is refused (exit status 2)
//! before anything is extracted. This module only reads; apply writes what
//! it returns beneath the target.

use std::path::{Path, PathBuf};

/// The largest key file read.
const KEY_LIMIT: u64 = 64 << 10;
/// The largest NoCloud seed file read.
const SEED_LIMIT: u64 = 4 << 20;

/// Key types OpenSSH accepts in `authorized_keys`.
const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-ed25519-cert-v01@openssh.com",
    "ssh-rsa-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
];

/// The keys of one `--ssh-authorized-key`.
#[derive(Debug, Clone)]
pub struct SshKeys {
    /// The file, as given.
    pub file: PathBuf,
    /// Whose `authorized_keys` they go to.
    pub user: String,
    /// The key lines (no comments, no blank lines).
    pub lines: Vec<String>,
}

/// Splits `FILE[:USER]`: the part after the last `:` is the user when it
/// is a plausible user name (no `/`), else the whole is the file.
fn split_spec(spec: &str) -> (&str, &str) {
    match spec.rsplit_once(':') {
        Some((file, user))
            if !file.is_empty()
                && !user.is_empty()
                && user
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-$".contains(&b)) =>
        {
            (file, user)
        }
        _ => (spec, "root"),
    }
}

/// Whether `line` is an `authorized_keys` line: optional options, a key
/// type, base64 key data, an optional comment.
fn is_key_line(line: &str) -> bool {
    let words: Vec<&str> = line.split_ascii_whitespace().collect();
    // The type is the first word, or follows the options (which may hold
    // quoted spaces: `command="a b"`).
    (0..words.len()).any(|i| {
        KEY_TYPES.contains(&words[i])
            && words.get(i + 1).is_some_and(|d| {
                d.len() >= 16
                    && d.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
            })
    })
}

/// Reads one `--ssh-authorized-key FILE[:USER]`.
pub fn ssh_keys(spec: &str) -> Result<SshKeys, String> {
    let (file, user) = split_spec(spec);
    let path = Path::new(file);
    let bytes = crate::input::read(path, KEY_LIMIT)
        .map_err(|e| format!("{file}: {}", crate::util::io_reason(&e)))?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{file}: not UTF-8 text"))?;
    if text.contains("PRIVATE KEY") {
        return Err(format!(
            "{file} is a private key: give the public key (the .pub file next to it); \
             the private key never goes into an image"
        ));
    }
    let mut lines = Vec::new();
    for (n, l) in text.lines().enumerate() {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if !is_key_line(l) {
            return Err(format!(
                "{file}: line {} is not an OpenSSH public key (TYPE BASE64 [COMMENT], \
                 e.g. ssh-ed25519 AAAA… user@host)",
                n + 1
            ));
        }
        lines.push(l.to_owned());
    }
    if lines.is_empty() {
        return Err(format!("{file}: holds no public key"));
    }
    Ok(SshKeys {
        file: path.to_path_buf(),
        user: user.to_owned(),
        lines,
    })
}

/// The files of a NoCloud seed: name, required, mode in the target.
pub const NOCLOUD_FILES: &[(&str, bool, u32)] = &[
    ("meta-data", true, 0o644),
    ("user-data", true, 0o600),
    ("network-config", false, 0o644),
    ("vendor-data", false, 0o600),
];

/// A NoCloud seed file: its name, content and mode in the target.
pub type SeedFile = (&'static str, Vec<u8>, u32);

/// Reads a NoCloud seed directory: each of [`NOCLOUD_FILES`] present.
pub fn nocloud(dir: &Path) -> Result<Vec<SeedFile>, String> {
    let shown = dir.display();
    let meta =
        std::fs::metadata(dir).map_err(|e| format!("{shown}: {}", crate::util::io_reason(&e)))?;
    if !meta.is_dir() {
        return Err(format!("{shown}: not a directory"));
    }
    let mut out = Vec::new();
    for &(name, required, mode) in NOCLOUD_FILES {
        let p = dir.join(name);
        match std::fs::symlink_metadata(&p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!(
                    "{shown}: no {name} (a NoCloud seed needs user-data and meta-data; \
                     meta-data may be empty)"
                ));
            }
            Err(e) => return Err(format!("{}: {}", p.display(), crate::util::io_reason(&e))),
            Ok(m) if !m.is_file() => {
                return Err(format!("{}: not a regular file", p.display()));
            }
            Ok(_) => {}
        }
        let bytes = crate::input::read(&p, SEED_LIMIT)
            .map_err(|e| format!("{}: {}", p.display(), crate::util::io_reason(&e)))?;
        out.push((name, bytes, mode));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_and_key_lines() {
        assert_eq!(split_spec("/k.pub"), ("/k.pub", "root"));
        assert_eq!(split_spec("/k.pub:alice"), ("/k.pub", "alice"));
        assert_eq!(split_spec("a:b/k.pub"), ("a:b/k.pub", "root"));
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG9vb29vb29vb29vb29vb29vb29vb29vb29vb29vb29v a@b";
        assert!(is_key_line(key));
        assert!(is_key_line(&format!("no-pty,from=\"10.0.0.1\" {key}")));
        assert!(is_key_line(&format!("command=\"echo a b\" {key}")));
        assert!(!is_key_line("ssh-ed25519"));
        assert!(!is_key_line("hello world"));
    }
}
