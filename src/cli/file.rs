//! The config file: everything a repeated capture needs, in
//! `/etc/goldcap/goldcap.toml`, `GOLDCAP_CONFIG` or `--config FILE`.
//!
//! In front of the command line: the file's `[capture]` table uses the
//! long option names as keys (`output-dir = "/srv/images"`, `exclude =
//! ["/srv/scratch"]`, `force = true`) and becomes arguments placed before
//! the ones typed, so clap checks every value exactly as on the command
//! line, a capture driven by the file is the same capture as one with the
//! equivalent flags, typed options win over the file (a `GOLDCAP_*`
//! variable too), and lists add up (file first). The file is input: a
//! regular file, at most [`LIMIT`], unknown keys refused. This module only
//! reads the file; it never runs anything.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Read when neither `--config` nor `GOLDCAP_CONFIG` names a file.
pub const DEFAULT_PATH: &str = "/etc/goldcap/goldcap.toml";

/// The largest config file read.
pub const LIMIT: u64 = 1 << 20;

/// The command line with the config file's `[capture]` settings inserted
/// after the `capture` subcommand. Other commands are left as they are.
pub fn expand(args: Vec<OsString>, capture: &clap::Command) -> Result<Vec<OsString>, String> {
    let Some(sub) = args
        .iter()
        .skip(1)
        .position(|a| !a.as_encoded_bytes().starts_with(b"-"))
        .map(|i| i + 1)
    else {
        return Ok(args);
    };
    if args[sub] != "capture" {
        return Ok(args);
    }
    let Some(path) = config_path(&args[sub + 1..]) else {
        return Ok(args);
    };
    let text = crate::input::read_to_string(&path, LIMIT)
        .map_err(|e| format!("config {}: {}", path.display(), crate::util::io_reason(&e)))?;
    let inserted = arguments(&text, capture, &|k| {
        std::env::var_os(k).is_some_and(|v| !v.is_empty())
    })
    .map_err(|e| format!("config {}: {e}", path.display()))?;
    let mut out = args[..=sub].to_vec();
    out.extend(inserted);
    out.extend_from_slice(&args[sub + 1..]);
    Ok(out)
}

/// `--config FILE`, else `GOLDCAP_CONFIG`, else the default path when it
/// exists; none with `--no-config`.
fn config_path(rest: &[OsString]) -> Option<PathBuf> {
    let mut given = None;
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        let b = a.as_encoded_bytes();
        if b == b"--" {
            break;
        }
        if b == b"--no-config" {
            return None;
        }
        if b == b"--config" {
            given = it.next().map(PathBuf::from);
        } else if let Some(v) = b.strip_prefix(b"--config=") {
            given = Some(PathBuf::from(OsStr::from_bytes(v)));
        }
    }
    given
        .or_else(|| {
            std::env::var_os("GOLDCAP_CONFIG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .or_else(|| Some(PathBuf::from(DEFAULT_PATH)).filter(|p| Path::new(p).exists()))
}

/// The arguments a config file stands for. `env_set` tells whether a
/// variable is set (a `GOLDCAP_*` variable wins over the file). Pure.
pub fn arguments(
    text: &str,
    capture: &clap::Command,
    env_set: &dyn Fn(&str) -> bool,
) -> Result<Vec<OsString>, String> {
    let table: toml::Table =
        toml::from_str(text).map_err(|e| crate::input::clip(&e.to_string(), 600))?;
    let mut out = Vec::new();
    for (key, value) in &table {
        if key != "capture" {
            return Err(format!(
                "unknown table or key {key:?} (settings go in [capture])"
            ));
        }
        let Some(settings) = value.as_table() else {
            return Err("capture must be a table ([capture])".into());
        };
        for (k, v) in settings {
            let arg = capture
                .get_arguments()
                .find(|a| {
                    a.get_long() == Some(k.as_str())
                        && !matches!(k.as_str(), "config" | "no-config" | "help")
                })
                .ok_or_else(|| format!("[capture] {k:?}: goldcap capture has no --{k}"))?;
            if arg.get_env().is_some_and(|e| env_set(&e.to_string_lossy())) {
                continue;
            }
            let flag = !arg.get_action().takes_values();
            let mut one = |v: &toml::Value| -> Result<(), String> {
                match (v, flag) {
                    (toml::Value::Boolean(true), true) => out.push(format!("--{k}").into()),
                    (toml::Value::Boolean(false), true) => {}
                    (toml::Value::String(s), false) => out.push(format!("--{k}={s}").into()),
                    (toml::Value::Integer(i), false) => out.push(format!("--{k}={i}").into()),
                    (_, true) => return Err(format!("[capture] {k:?}: true or false")),
                    _ => return Err(format!("[capture] {k:?}: a string or a number")),
                }
                Ok(())
            };
            match v {
                toml::Value::Array(items) => {
                    if !matches!(arg.get_action(), clap::ArgAction::Append) {
                        return Err(format!("[capture] {k:?}: takes one value, not a list"));
                    }
                    items.iter().try_for_each(&mut one)?;
                }
                v => one(v)?,
            }
        }
    }
    Ok(out)
}
