//! The scrub catalogue as written: operations, rules and their predicates,
//! in the TOML form of `manifests/scrub/default.toml`.
//!
//! Part of the select stage. These are the serde types a catalogue and a
//! user's `--scrub-profile` parse into; [`super::catalogue`] validates
//! them and [`super::rule`] compiles them. Data only: this module must
//! never do I/O.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How an operation is filed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    /// What identifies the machine (machine-id, hostname, seeds).
    Identity,
    /// Keys, tokens and enrolments.
    Secret,
    /// Network bindings and leases.
    Network,
    /// Logs, histories, caches, swap.
    Hygiene,
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Category::Identity => "identity",
            Category::Secret => "secret",
            Category::Network => "network",
            Category::Hygiene => "hygiene",
        })
    }
}

/// Predicate of an operation.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// Distribution families (any of).
    #[serde(default)]
    pub family: Vec<String>,
    /// Init system.
    #[serde(default)]
    pub init: Option<String>,
    /// Paths in the root (any of).
    #[serde(default)]
    pub exists: Vec<String>,
    /// Where the scrub runs: `in-place` (`goldcap scrub`) or `capture`
    /// (the archive stream); both when unset.
    #[serde(default)]
    pub mode: Option<Mode>,
}

/// Where a scrub runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// `goldcap scrub --root DIR`: the filesystem is edited.
    InPlace,
    /// `goldcap capture`: the archive stream is edited.
    Capture,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::InPlace => "in place",
            Mode::Capture => "capture",
        })
    }
}

/// Which entries a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Only {
    File,
    Dir,
    Symlink,
    Any,
}

/// Action names in the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    /// Leave the entry (and a directory's content) out.
    Drop,
    /// Keep the file, empty (owner, mode, xattrs kept).
    Truncate,
    /// Keep the file with new content.
    Replace,
    /// Remove lines matching `patterns`.
    DeleteLines,
    /// Rewrite lines matching `pattern` with `replacement`.
    ReplaceLines,
    /// Leave the file out if a line matches `patterns`.
    DropIfMatches,
    /// Replace the file by a symlink to `target`.
    Symlink,
    /// Add an entry (file, directory or symlink).
    Add,
}

/// Kind of an added entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AddKind {
    /// A regular file with `content`.
    File,
    Dir,
    /// A symlink to `target`.
    Symlink,
}

/// One rule as written in the catalogue.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Globs anchored at the root; a leading `~/` stands for every home
    /// directory (see [`super::sources::homes`]).
    pub paths: Vec<String>,
    /// Globs left alone (`~/` as in `paths`).
    #[serde(default)]
    pub except: Vec<String>,
    /// Entry kinds it applies to.
    #[serde(default)]
    pub only: Option<Only>,
    /// Families it applies to (all when empty).
    #[serde(default)]
    pub family: Vec<String>,
    pub action: ActionKind,
    /// New content (replace, add).
    #[serde(default)]
    pub content: Option<String>,
    /// Line regexes (delete-lines, drop-if-matches).
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Line regex (replace-lines).
    #[serde(default)]
    pub pattern: Option<String>,
    /// Replacement (replace-lines), `$1` style groups.
    #[serde(default)]
    pub replacement: Option<String>,
    /// Symlink target (symlink, add).
    #[serde(default)]
    pub target: Option<String>,
    /// What `add` creates.
    #[serde(default)]
    pub kind: Option<AddKind>,
    /// Octal mode for `add` (`"0644"`).
    #[serde(default)]
    pub mode: Option<String>,
    /// `add` only when the root has no entry of that name.
    #[serde(default)]
    pub if_missing: bool,
    /// When a (literal) path is a symlink, act on its target inside the
    /// root as well (a symlinked `/etc/machine-id` still gets emptied).
    #[serde(default)]
    pub follow: bool,
}

/// One operation as written in the catalogue.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OperationSpec {
    /// Name for `--operations`.
    pub id: String,
    pub category: Category,
    /// On by default.
    pub default: bool,
    /// Why, in one line.
    pub why: String,
    /// Predicate.
    #[serde(default)]
    pub when: When,
    /// Rules computed from the root.
    #[serde(default)]
    pub source: Option<String>,
    /// A precondition for dropping (`ssh-regenerator`).
    #[serde(default)]
    pub guarantee: Option<String>,
    /// Rules.
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CatalogueFile {
    #[serde(default)]
    pub(super) operation: Vec<OperationSpec>,
}

/// A catalogue, selection or plan that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubError(pub String);

impl fmt::Display for ScrubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
