//! What a scrubbed file becomes: the matching rules applied, in order, to
//! its size and (when a rule needs it) its content.
//!
//! Part of the select stage, called by the tar writer for the stream and by
//! `goldcap scrub` in place, so both act alike. Pure and table-tested: it
//! must never do I/O.

use super::plan::Plan;
use super::rule::Action;
use crate::report::Effect;
use regex::bytes::Regex;

/// What a file becomes after its matching rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Left out.
    Drop,
    /// Kept with this content.
    Content(Vec<u8>),
    /// Replaced by a symlink to this target.
    Symlink(Vec<u8>),
    /// Kept as it is.
    Unchanged,
}

/// Whether [`decide`] will need the file's content for these hits.
pub fn needs_content(plan: &Plan, hits: &[usize]) -> bool {
    for &h in hits {
        let a = &plan.rules[h].action;
        if a.needs_content() {
            return true;
        }
        if matches!(
            a,
            Action::Drop | Action::Truncate | Action::Replace(_) | Action::Symlink(_)
        ) {
            return false;
        }
    }
    false
}

/// Applies `hits` (match order) to a regular file of `size` bytes whose
/// content is given when [`needs_content`] said so. The first terminal
/// action (drop, truncate, replace, symlink, a matching drop-if-matches)
/// decides; line edits before it compose. Pure.
pub fn decide(
    plan: &Plan,
    hits: &[usize],
    size: u64,
    content: Option<&[u8]>,
) -> (Outcome, Vec<Effect>) {
    let mut effects = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    let effect = |h: usize, action: &'static str, bytes: u64| Effect {
        op: plan.op_id(h).to_owned(),
        action,
        bytes_removed: bytes,
    };
    for &h in hits {
        let action = &plan.rules[h].action;
        let text: &[u8] = current.as_deref().or(content).unwrap_or(&[]);
        let now = text.len() as u64;
        match action {
            Action::Drop => {
                effects.push(effect(
                    h,
                    "drop",
                    if current.is_some() { now } else { size },
                ));
                return (Outcome::Drop, effects);
            }
            Action::Truncate => {
                effects.push(effect(
                    h,
                    "truncate",
                    if current.is_some() { now } else { size },
                ));
                return (Outcome::Content(Vec::new()), effects);
            }
            Action::Replace(new) => {
                let before = if current.is_some() { now } else { size };
                effects.push(effect(h, "replace", before));
                return (Outcome::Content(new.clone()), effects);
            }
            Action::Symlink(t) => {
                effects.push(effect(
                    h,
                    "symlink",
                    if current.is_some() { now } else { size },
                ));
                return (Outcome::Symlink(t.clone()), effects);
            }
            Action::DropIfMatches(res) => {
                if res.iter().any(|r| r.is_match(text)) {
                    effects.push(effect(h, "drop", now));
                    return (Outcome::Drop, effects);
                }
            }
            Action::DeleteLines(res) => {
                let out = delete_lines(text, res);
                if out.len() != text.len() {
                    let e = effect(h, "delete-lines", (text.len() - out.len()) as u64);
                    merge(&mut effects, e);
                    current = Some(out);
                }
            }
            Action::ReplaceLines(re, rep) => {
                let out = re.replace_all(text, rep.as_slice()).into_owned();
                if out != text {
                    let removed = text.len().saturating_sub(out.len()) as u64;
                    merge(&mut effects, effect(h, "replace-lines", removed));
                    current = Some(out);
                }
            }
            Action::Add(_) => {}
        }
    }
    match current {
        Some(c) => (Outcome::Content(c), effects),
        None => (Outcome::Unchanged, effects),
    }
}

/// Adds an effect; an operation's several rules of one kind on one file
/// (edits computed line by line) are one item, their bytes summed.
fn merge(effects: &mut Vec<Effect>, e: Effect) {
    match effects
        .iter_mut()
        .find(|x| x.op == e.op && x.action == e.action)
    {
        Some(x) => x.bytes_removed += e.bytes_removed,
        None => effects.push(e),
    }
}

/// Removes every line (with its newline) on which one of `res` matches.
pub fn delete_lines(text: &[u8], res: &[Regex]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for line in text.split_inclusive(|&b| b == b'\n') {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        if !res.iter().any(|r| r.is_match(body)) {
            out.extend_from_slice(line);
        }
    }
    out
}
