//! Compiled scrub rules: what each catalogue action does, ready to match
//! paths and transform content.
//!
//! Part of the select stage. [`compile_rule`] turns a [`RuleSpec`] into a
//! [`Rule`]: globs anchored at the root, line regexes, new content with
//! `{machine_id}` and `{os_id}` filled in, or a [`Synthetic`] entry to add.
//! Pure: it must never touch the filesystem.

use super::spec::{ActionKind, AddKind, Only, RuleSpec, ScrubError};
use crate::entry::{SynthKind, Synthetic};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use regex::bytes::Regex;
use serde::Serialize;

/// What `/etc/machine-id` becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MachineIdMode {
    /// Empty: a new id is generated on boot; first-boot units do not run.
    #[default]
    Empty,
    /// `uninitialized`: a new id, and systemd treats the boot as a first
    /// boot (systemd ≥ 247: preset-all runs, ConditionFirstBoot units run).
    Uninitialized,
}

impl MachineIdMode {
    fn content(self) -> &'static str {
        match self {
            MachineIdMode::Empty => "",
            MachineIdMode::Uninitialized => "uninitialized\n",
        }
    }
}

#[derive(Debug, Clone)]
pub enum Action {
    /// Leave out.
    Drop,
    /// Empty the file.
    Truncate,
    /// New content.
    Replace(Vec<u8>),
    /// Remove matching lines.
    DeleteLines(Vec<Regex>),
    /// Rewrite matching lines.
    ReplaceLines(Regex, Vec<u8>),
    /// Leave out if a line matches.
    DropIfMatches(Vec<Regex>),
    /// Become a symlink.
    Symlink(Vec<u8>),
    /// An added entry (handled as a synthetic entry, never matched).
    Add(Synthetic),
}

impl Action {
    pub(super) fn needs_content(&self) -> bool {
        matches!(
            self,
            Action::DeleteLines(_) | Action::ReplaceLines(..) | Action::DropIfMatches(_)
        )
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    /// Index of its operation in [`super::Plan::ops`].
    pub op: usize,
    /// What to do.
    pub action: Action,
    pub(super) only: Only,
    pub(super) except: GlobSet,
}

pub(super) fn glob(pattern: &str) -> Result<globset::Glob, ScrubError> {
    // `~/` is expanded to each home when a plan is made; checked here as
    // one of them.
    let home = pattern
        .strip_prefix('~')
        .filter(|r| r.is_empty() || r.starts_with('/'))
        .map(|r| format!("/root{r}"));
    let p = home
        .as_deref()
        .unwrap_or(pattern)
        .strip_prefix('/')
        .ok_or_else(|| ScrubError(format!("path {pattern:?} must be absolute (start with /)")))?;
    GlobBuilder::new(p.trim_end_matches('/'))
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| ScrubError(format!("path {pattern:?}: {e}")))
}

fn regexes(patterns: &[String]) -> Result<Vec<Regex>, ScrubError> {
    patterns
        .iter()
        .map(|p| {
            Regex::new(&format!("(?m){p}")).map_err(|e| ScrubError(format!("pattern {p:?}: {e}")))
        })
        .collect()
}

fn parse_mode(m: Option<&str>, default: u32) -> Result<u32, ScrubError> {
    match m {
        None => Ok(default),
        Some(s) => u32::from_str_radix(s.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| ScrubError(format!("mode {s:?} is not an octal mode like \"0644\""))),
    }
}

/// Values substituted into `content`.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Vars<'a> {
    pub(super) machine_id: MachineIdMode,
    pub(super) os_id: &'a str,
}

fn expand(content: &str, v: Vars<'_>) -> String {
    content
        .replace("{machine_id}", v.machine_id.content())
        .replace("{os_id}", v.os_id)
}

pub(super) fn compile_rule(r: &RuleSpec, op: usize, vars: Vars<'_>) -> Result<Rule, ScrubError> {
    if r.paths.is_empty() {
        return Err(ScrubError("a rule needs paths".into()));
    }
    for p in &r.paths {
        glob(p)?;
    }
    let need = |v: &Option<String>, what: &str| {
        v.clone()
            .ok_or_else(|| ScrubError(format!("action {:?} needs {what}", r.action)))
    };
    let content_default = Only::File;
    let (action, only_default) = match r.action {
        ActionKind::Drop => (Action::Drop, Only::Any),
        ActionKind::Truncate => (Action::Truncate, content_default),
        ActionKind::Replace => {
            let c = expand(&need(&r.content, "content")?, vars);
            (Action::Replace(c.into_bytes()), content_default)
        }
        ActionKind::DeleteLines => {
            if r.patterns.is_empty() {
                return Err(ScrubError("delete-lines needs patterns".into()));
            }
            (Action::DeleteLines(regexes(&r.patterns)?), content_default)
        }
        ActionKind::DropIfMatches => {
            if r.patterns.is_empty() {
                return Err(ScrubError("drop-if-matches needs patterns".into()));
            }
            (
                Action::DropIfMatches(regexes(&r.patterns)?),
                content_default,
            )
        }
        ActionKind::ReplaceLines => {
            let p = need(&r.pattern, "pattern")?;
            let re = regexes(std::slice::from_ref(&p))?.remove(0);
            (
                Action::ReplaceLines(re, need(&r.replacement, "replacement")?.into_bytes()),
                content_default,
            )
        }
        ActionKind::Symlink => (
            Action::Symlink(need(&r.target, "target")?.into_bytes()),
            content_default,
        ),
        ActionKind::Add => {
            let [path] = r.paths.as_slice() else {
                return Err(ScrubError("add takes exactly one path".into()));
            };
            if path.contains(['*', '?', '[', '{']) || path.starts_with('~') {
                return Err(ScrubError(format!("add path {path:?} must be literal")));
            }
            let rel = path
                .trim_start_matches('/')
                .trim_end_matches('/')
                .as_bytes()
                .to_vec();
            let (kind, mode) = match r.kind.ok_or_else(|| ScrubError("add needs kind".into()))? {
                AddKind::File => (
                    SynthKind::File(expand(&need(&r.content, "content")?, vars).into_bytes()),
                    parse_mode(r.mode.as_deref(), 0o644)?,
                ),
                AddKind::Dir => (SynthKind::Dir, parse_mode(r.mode.as_deref(), 0o755)?),
                AddKind::Symlink => (
                    SynthKind::Symlink(need(&r.target, "target")?.into_bytes()),
                    0o777,
                ),
            };
            let s = Synthetic {
                rel,
                kind,
                mode,
                uid: 0,
                gid: 0,
                mtime: 0,
                replace: !r.if_missing,
                op: None,
            };
            (Action::Add(s), Only::Any)
        }
    };
    let mut ex = GlobSetBuilder::new();
    for e in &r.except {
        ex.add(glob(e)?);
    }
    let except = ex.build().map_err(|e| ScrubError(e.to_string()))?;
    Ok(Rule {
        op,
        action,
        only: r.only.unwrap_or(only_default),
        except,
    })
}
