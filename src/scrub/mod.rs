//! Identity scrub: the catalogue of what makes a machine unique, compiled
//! into a plan for one root, applied in the archive stream or in place.
//!
//! Sits inside the policy stage (walk → **policy + scrub** → tar writer).
//! The catalogue is data (`manifests/scrub/default.toml`, embedded; a
//! user's `--scrub-profile` adds or overrides operations by id). For one
//! root, [`Plan::new`] keeps the selected operations whose predicates hold
//! (distribution family, init system, files present), adds the rules that
//! must be computed (swap files from fstab, user accounts), settles the SSH
//! host-key guarantee ([`ssh`]) and compiles every path glob into one set.
//! The policy then asks [`Plan::hits`] per entry — a pure lookup — and the
//! writer (or [`apply`] in place) calls [`decide`] with the file's content
//! when an action needs it.
//!
//! goldcap scrubs in the stream: the source is never touched, and deleted
//! data never enters the artifact. This module must never do I/O beyond
//! reading the root's small configuration files while planning.

pub mod apply;
pub mod sources;
pub mod ssh;

use crate::facts::OsRelease;
use crate::rootfs::RootFs;
use crate::walk::{SynthKind, Synthetic};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use regex::bytes::Regex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The default catalogue.
pub const DEFAULT_CATALOGUE: &str = include_str!("../../manifests/scrub/default.toml");

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
}

/// Which entries a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Only {
    /// Regular files.
    File,
    /// Directories.
    Dir,
    /// Symbolic links.
    Symlink,
    /// Anything.
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
    /// A directory.
    Dir,
    /// A symlink to `target`.
    Symlink,
}

/// One rule as written in the catalogue.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Globs anchored at the root.
    pub paths: Vec<String>,
    /// Globs left alone.
    #[serde(default)]
    pub except: Vec<String>,
    /// Entry kinds it applies to.
    #[serde(default)]
    pub only: Option<Only>,
    /// Families it applies to (all when empty).
    #[serde(default)]
    pub family: Vec<String>,
    /// The action.
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
    /// Category.
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
struct CatalogueFile {
    #[serde(default)]
    operation: Vec<OperationSpec>,
}

/// The operations goldcap knows.
#[derive(Debug, Clone)]
pub struct Catalogue {
    /// In catalogue order (which is match order).
    pub operations: Vec<OperationSpec>,
}

/// A catalogue, selection or plan that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubError(pub String);

impl fmt::Display for ScrubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const SOURCES: &[&str] = &["swap-files", "user-accounts"];
const GUARANTEES: &[&str] = &["ssh-regenerator"];
const FAMILIES: &[&str] = &["debian", "rhel", "suse", "arch", "alpine"];

impl Catalogue {
    /// The embedded default catalogue.
    pub fn builtin() -> Catalogue {
        // Unwrap expectation: the embedded catalogue is checked by a test.
        Catalogue::parse(DEFAULT_CATALOGUE, "built-in catalogue").expect("valid built-in catalogue")
    }

    /// Parses and validates catalogue text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Catalogue, ScrubError> {
        let file: CatalogueFile =
            toml::from_str(text).map_err(|e| ScrubError(format!("{origin}: {e}")))?;
        let c = Catalogue {
            operations: file.operation,
        };
        c.validate(origin)?;
        Ok(c)
    }

    /// Adds or replaces operations (by id) from a user's profile.
    pub fn merge(&mut self, other: Catalogue) {
        for op in other.operations {
            match self.operations.iter_mut().find(|o| o.id == op.id) {
                Some(slot) => *slot = op,
                None => self.operations.push(op),
            }
        }
    }

    fn validate(&self, origin: &str) -> Result<(), ScrubError> {
        let mut seen = BTreeSet::new();
        for op in &self.operations {
            let err = |m: String| ScrubError(format!("{origin}: operation {:?}: {m}", op.id));
            if op.id.is_empty()
                || !op
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(err("ids are lowercase letters, digits and '-'".into()));
            }
            if ["defaults", "all", "none"].contains(&op.id.as_str()) {
                return Err(err("this id is reserved".into()));
            }
            if !seen.insert(op.id.clone()) {
                return Err(err("defined twice".into()));
            }
            if let Some(s) = &op.source
                && !SOURCES.contains(&s.as_str())
            {
                return Err(err(format!(
                    "unknown source {s:?} (known: {})",
                    SOURCES.join(", ")
                )));
            }
            if let Some(g) = &op.guarantee
                && !GUARANTEES.contains(&g.as_str())
            {
                return Err(err(format!("unknown guarantee {g:?}")));
            }
            for f in op
                .when
                .family
                .iter()
                .chain(op.rules.iter().flat_map(|r| r.family.iter()))
            {
                if !FAMILIES.contains(&f.as_str()) {
                    return Err(err(format!(
                        "unknown family {f:?} (known: {})",
                        FAMILIES.join(", ")
                    )));
                }
            }
            if op.rules.is_empty() && op.source.is_none() {
                return Err(err("has no rules".into()));
            }
            for r in &op.rules {
                compile_rule(r, 0, Vars::default()).map_err(|e| err(e.0))?;
            }
        }
        Ok(())
    }

    /// The ids chosen by `--operations` specs (virt-sysprep's set language:
    /// `defaults`, `all`, `none`, `+id`/`id` to add, `-id` to remove;
    /// comma-separated, repeatable, applied left to right). No spec means
    /// `defaults`.
    pub fn select(&self, specs: &[String]) -> Result<BTreeSet<String>, ScrubError> {
        let mut set = BTreeSet::new();
        let tokens: Vec<&str> = if specs.is_empty() {
            vec!["defaults"]
        } else {
            specs
                .iter()
                .flat_map(|s| s.split(','))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect()
        };
        for t in tokens {
            match t {
                "defaults" => set.extend(
                    self.operations
                        .iter()
                        .filter(|o| o.default)
                        .map(|o| o.id.clone()),
                ),
                "all" => set.extend(self.operations.iter().map(|o| o.id.clone())),
                "none" => set.clear(),
                _ => {
                    let (add, id) = match t.strip_prefix('-') {
                        Some(id) => (false, id),
                        None => (true, t.strip_prefix('+').unwrap_or(t)),
                    };
                    if !self.operations.iter().any(|o| o.id == id) {
                        return Err(ScrubError(format!(
                            "--operations: unknown operation {id:?} (see `goldcap scrub --list`)"
                        )));
                    }
                    if add {
                        set.insert(id.to_owned());
                    } else {
                        set.remove(id);
                    }
                }
            }
        }
        Ok(set)
    }
}

/// A compiled action.
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
    /// The catalogue name.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Drop => "drop",
            Action::Truncate => "truncate",
            Action::Replace(_) => "replace",
            Action::DeleteLines(_) => "delete-lines",
            Action::ReplaceLines(..) => "replace-lines",
            Action::DropIfMatches(_) => "drop-if-matches",
            Action::Symlink(_) => "symlink",
            Action::Add(_) => "add",
        }
    }

    fn needs_content(&self) -> bool {
        matches!(
            self,
            Action::DeleteLines(_) | Action::ReplaceLines(..) | Action::DropIfMatches(_)
        )
    }
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Index of its operation in [`Plan::ops`].
    pub op: usize,
    /// What to do.
    pub action: Action,
    only: Only,
    except: GlobSet,
}

fn glob(pattern: &str) -> Result<globset::Glob, ScrubError> {
    let p = pattern
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
struct Vars<'a> {
    machine_id: MachineIdMode,
    os_id: &'a str,
}

fn expand(content: &str, v: Vars<'_>) -> String {
    content
        .replace("{machine_id}", v.machine_id.content())
        .replace("{os_id}", v.os_id)
}

fn compile_rule(r: &RuleSpec, op: usize, vars: Vars<'_>) -> Result<Rule, ScrubError> {
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
            if path.contains(['*', '?', '[', '{']) {
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

/// What a plan knows about the root it is for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RootTraits {
    /// Distribution families (`debian`, `rhel`, …).
    pub families: BTreeSet<String>,
    /// `systemd`, `openrc` or `unknown`.
    pub init: String,
    /// A live capture of the running system.
    pub live: bool,
}

impl RootTraits {
    /// Reads the traits from the root.
    pub fn detect(root: &RootFs, os: Option<&OsRelease>, live: bool) -> RootTraits {
        let mut families = BTreeSet::new();
        if let Some(os) = os {
            let ids: Vec<&str> = std::iter::once(os.id.as_str())
                .chain(os.id_like.iter().flat_map(|l| l.split_whitespace()))
                .collect();
            for id in ids {
                let fam = match id {
                    "debian" | "ubuntu" | "raspbian" | "linuxmint" | "pop" => "debian",
                    "rhel" | "centos" | "fedora" | "rocky" | "almalinux" | "ol" | "amzn"
                    | "circle" => "rhel",
                    s if s == "suse" || s.starts_with("sles") || s.starts_with("opensuse") => {
                        "suse"
                    }
                    "arch" | "manjaro" => "arch",
                    "alpine" => "alpine",
                    _ => continue,
                };
                families.insert(fam.to_owned());
            }
        }
        let init = if ["/usr/lib/systemd/systemd", "/lib/systemd/systemd"]
            .iter()
            .any(|p| root.exists(p))
        {
            "systemd"
        } else if ["/sbin/openrc", "/sbin/openrc-run", "/usr/sbin/openrc-run"]
            .iter()
            .any(|p| root.exists(p))
        {
            "openrc"
        } else {
            "unknown"
        };
        RootTraits {
            families,
            init: init.to_owned(),
            live,
        }
    }

    fn matches(&self, when: &When, root: &RootFs) -> bool {
        (when.family.is_empty() || when.family.iter().any(|f| self.families.contains(f)))
            && when.init.as_ref().is_none_or(|i| *i == self.init)
            && (when.exists.is_empty() || when.exists.iter().any(|p| root.exists(p)))
    }
}

/// A selected operation, as planned for one root.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedOp {
    /// Id.
    pub id: String,
    /// Category.
    pub category: Category,
    /// Why.
    pub why: String,
    /// What the plan decided beyond the rules (the SSH regenerator, a
    /// predicate that did not hold).
    pub note: Option<String>,
    /// Whether its rules are active (false when a predicate or guarantee
    /// failed).
    pub active: bool,
}

/// The compiled scrub for one root.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Selected operations, catalogue order.
    pub ops: Vec<PlannedOp>,
    /// Rules, match order.
    pub rules: Vec<Rule>,
    set: GlobSet,
    owners: Vec<usize>,
    /// Entries to add (regenerator unit, `add` rules).
    pub synthetic: Vec<Synthetic>,
    /// The root's traits.
    pub traits: RootTraits,
    /// What `/etc/machine-id` becomes.
    pub machine_id: MachineIdMode,
    /// Where [`Plan::prescan`] looks: (literal directory prefix, depth).
    scan: Vec<(Vec<u8>, usize)>,
}

/// Options for planning.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// `--operations` specs.
    pub operations: Vec<String>,
    /// `--machine-id`.
    pub machine_id: MachineIdMode,
    /// A live capture (swap files from /proc/swaps).
    pub live: bool,
    /// `mtime` for added entries.
    pub mtime: i64,
}

impl Plan {
    /// Plans `selected` operations of `cat` for `root`.
    pub fn new(
        cat: &Catalogue,
        root: &RootFs,
        os: Option<&OsRelease>,
        opts: &PlanOptions,
    ) -> Result<Plan, ScrubError> {
        let selected = cat.select(&opts.operations)?;
        let traits = RootTraits::detect(root, os, opts.live);
        let mut ops = Vec::new();
        let mut specs: Vec<(usize, RuleSpec)> = Vec::new();
        let mut synthetic = Vec::new();
        for op in cat.operations.iter().filter(|o| selected.contains(&o.id)) {
            let idx = ops.len();
            let mut planned = PlannedOp {
                id: op.id.clone(),
                category: op.category,
                why: op.why.clone(),
                note: None,
                active: true,
            };
            if !traits.matches(&op.when, root) {
                planned.active = false;
                planned.note = Some("does not apply to this root".into());
                ops.push(planned);
                continue;
            }
            let mut rules: Vec<RuleSpec> = op
                .rules
                .iter()
                .filter(|r| {
                    r.family.is_empty() || r.family.iter().any(|f| traits.families.contains(f))
                })
                .cloned()
                .collect();
            match op.source.as_deref() {
                Some("swap-files") => rules.extend(sources::swap_files(root, opts.live)),
                Some("user-accounts") => rules.extend(sources::user_accounts(root)),
                _ => {}
            }
            if op.guarantee.as_deref() == Some("ssh-regenerator") {
                match ssh::detect(root, &traits) {
                    // goldcap's unit only fills what is still missing, so it is
                    // added as a fallback too: a distro unit may be disabled
                    // or not wired to sshd.
                    ssh::Regenerator::Distro(what)
                        if traits.init == "systemd" && ssh::has_sshd(root) =>
                    {
                        planned.note = Some(format!(
                            "regenerated on first boot by {what}; {} added as a fallback after it",
                            ssh::UNIT_PATH
                        ));
                        synthetic.extend(ssh::synthetic(opts.mtime, true));
                    }
                    ssh::Regenerator::Distro(what) => {
                        planned.note = Some(format!("regenerated on first boot by {what}"))
                    }
                    ssh::Regenerator::Inject => {
                        planned.note = Some(format!(
                            "no regenerator in the image: added {} (regenerates missing or empty keys before sshd)",
                            ssh::UNIT_PATH
                        ));
                        synthetic.extend(ssh::synthetic(opts.mtime, false));
                    }
                    ssh::Regenerator::NoSshd => planned.note = Some("no sshd in the image".into()),
                    ssh::Regenerator::Missing => {
                        planned.active = false;
                        planned.note = Some(
                            "KEPT: no regenerator found and no systemd to add one; clones share host keys until regenerated"
                                .into(),
                        );
                        rules.clear();
                    }
                }
            }
            specs.extend(rules.into_iter().map(|r| (idx, r)));
            ops.push(planned);
        }
        let mut rules = Vec::new();
        let mut scan = Vec::new();
        let mut b = GlobSetBuilder::new();
        let mut owners = Vec::new();
        for (op, spec) in &specs {
            let vars = Vars {
                machine_id: opts.machine_id,
                os_id: os.map_or("linux", |o| o.id.as_str()),
            };
            let mut rule = compile_rule(spec, *op, vars)
                .map_err(|e| ScrubError(format!("operation {:?}: {e}", ops[*op].id)))?;
            if let Action::Add(s) = &mut rule.action {
                s.mtime = opts.mtime;
                s.op = Some(ops[*op].id.clone());
                synthetic.push(s.clone());
                continue;
            }
            let mut paths = spec.paths.clone();
            if spec.follow {
                paths.extend(followed(root, &spec.paths));
            }
            for p in &paths {
                b.add(glob(p)?);
                owners.push(rules.len());
                scan.extend(scan_root(p));
            }
            rules.push(rule);
        }
        with_parents(&mut synthetic, opts.mtime);
        let set = b.build().map_err(|e| ScrubError(e.to_string()))?;
        Ok(Plan {
            ops,
            rules,
            set,
            owners,
            synthetic,
            traits,
            machine_id: opts.machine_id,
            scan,
        })
    }

    /// Multiply-linked inodes the scrub acts on, so that their *other*
    /// names never carry the original: a stat-only walk of the directories
    /// the bounded rules can reach (and of every directory they drop). The
    /// value says whether the content is left out entirely (drop, symlink,
    /// drop-if-matches) rather than edited. Rules with `**` (logs, backups)
    /// are not prescanned: their other names are only caught when they come
    /// after the scrubbed one.
    pub fn prescan(&self, root: &Path) -> HashMap<(u64, u64), bool> {
        use crate::fsx::{self, Kind};
        use std::os::fd::AsFd;
        let mut out = HashMap::new();
        let mut scan = self.scan.clone();
        scan.sort();
        scan.dedup();
        for (prefix, depth) in scan {
            let Ok(mut fd) = fsx::open_root(root) else {
                return out;
            };
            let mut ok = true;
            for part in prefix.split(|&b| b == b'/').filter(|p| !p.is_empty()) {
                let Ok(name) = std::ffi::CString::new(part) else {
                    ok = false;
                    break;
                };
                match fsx::open_dir_at(fd.as_fd(), &name) {
                    Ok(next) => fd = next,
                    Err(_) => {
                        ok = false;
                        break;
                    }
                }
            }
            let Ok(top) = fsx::fstat(&fd) else { continue };
            if !ok {
                continue;
            }
            let mut stack = vec![(fd, prefix.clone(), depth, false)];
            while let Some((dir, rel, left, dropped)) = stack.pop() {
                let Ok(names) = fsx::list_dir(dir.as_fd()) else {
                    continue;
                };
                for name in names {
                    let Ok(st) = fsx::stat_at(dir.as_fd(), &name) else {
                        continue;
                    };
                    if st.dev != top.dev {
                        continue;
                    }
                    let child = if rel.is_empty() {
                        name.to_bytes().to_vec()
                    } else {
                        [&rel[..], b"/", name.to_bytes()].concat()
                    };
                    let first = if dropped {
                        None
                    } else {
                        self.hits(&child, st.kind).first().copied()
                    };
                    let gone = dropped
                        || first.is_some_and(|h| {
                            matches!(
                                self.rules[h].action,
                                Action::Drop | Action::Symlink(_) | Action::DropIfMatches(_)
                            )
                        });
                    if st.kind != Kind::Dir && st.nlink > 1 && (dropped || first.is_some()) {
                        out.insert((st.dev, st.ino), gone);
                    }
                    if st.is_dir()
                        && (gone || left > 1)
                        && let Ok(sub) = fsx::open_dir_at(dir.as_fd(), &name)
                    {
                        stack.push((sub, child, left.saturating_sub(1), gone));
                    }
                }
            }
        }
        out
    }

    /// Rules matching an entry, in match order (indices into `rules`).
    pub fn hits(&self, rel: &[u8], kind: crate::fsx::Kind) -> Vec<usize> {
        use crate::fsx::Kind;
        let path = Path::new(OsStr::from_bytes(rel));
        let mut idx: Vec<usize> = self
            .set
            .matches(path)
            .into_iter()
            .map(|g| self.owners[g])
            .collect();
        idx.sort_unstable();
        idx.dedup();
        idx.retain(|&i| {
            let r = &self.rules[i];
            let kind_ok = match r.only {
                Only::Any => true,
                Only::File => kind == Kind::File,
                Only::Dir => kind == Kind::Dir,
                Only::Symlink => kind == Kind::Symlink,
            };
            kind_ok && !r.except.is_match(path)
        });
        idx
    }

    /// The id of a rule's operation.
    pub fn op_id(&self, rule: usize) -> &str {
        &self.ops[self.rules[rule].op].id
    }
}

/// The targets, inside the root, of those literal `paths` that are symlinks.
fn followed(root: &RootFs, paths: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for p in paths.iter().filter(|p| !p.contains(['*', '?', '[', '{'])) {
        let host = root.root().join(p.trim_start_matches('/'));
        if !std::fs::symlink_metadata(&host).is_ok_and(|m| m.file_type().is_symlink()) {
            continue;
        }
        if let Ok(target) = root.resolve(p)
            && let Ok(rel) = target.strip_prefix(root.root())
            && target.is_file()
        {
            out.push(format!("/{}", globset::escape(&rel.to_string_lossy())));
        }
    }
    out
}

/// Where a glob can match, for the hardlink prescan: its leading literal
/// directory and how many levels below it. `None` for `**` globs (logs,
/// backups), which would mean walking whole trees.
fn scan_root(pattern: &str) -> Option<(Vec<u8>, usize)> {
    if pattern.contains("**") {
        return None;
    }
    let parts: Vec<&str> = pattern.trim_matches('/').split('/').collect();
    let literal = parts[..parts.len() - 1]
        .iter()
        .take_while(|c| !c.contains(['*', '?', '[', '{', '\\']))
        .count();
    Some((
        parts[..literal].join("/").into_bytes(),
        parts.len() - literal,
    ))
}

/// Adds a directory entry (added only if missing) for every ancestor of an
/// added entry, so `/etc/kernel/entry-token` brings `/etc/kernel` along in
/// the stream and in place.
fn with_parents(synthetic: &mut Vec<Synthetic>, mtime: i64) {
    let mut dirs: BTreeSet<Vec<u8>> = BTreeSet::new();
    for s in synthetic.iter() {
        let mut end = 0;
        while let Some(i) = s.rel[end..].iter().position(|&b| b == b'/') {
            end += i;
            dirs.insert(s.rel[..end].to_vec());
            end += 1;
        }
    }
    for d in dirs {
        if !synthetic.iter().any(|s| s.rel == d) {
            let op = synthetic
                .iter()
                .find(|s| s.rel.starts_with(&d))
                .and_then(|s| s.op.clone());
            synthetic.push(Synthetic {
                rel: d,
                kind: SynthKind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime,
                replace: false,
                op,
            });
        }
    }
}

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

/// One operation's effect on one entry, for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Effect {
    /// Operation id.
    pub op: String,
    /// Action name.
    pub action: &'static str,
    /// Bytes of the original no longer in the image.
    pub bytes_removed: u64,
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
                    effects.push(effect(h, "delete-lines", (text.len() - out.len()) as u64));
                    current = Some(out);
                }
            }
            Action::ReplaceLines(re, rep) => {
                let out = re.replace_all(text, rep.as_slice()).into_owned();
                if out != text {
                    let removed = text.len().saturating_sub(out.len()) as u64;
                    effects.push(effect(h, "replace-lines", removed));
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

/// The catalogue as rows for `goldcap scrub --list`.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    /// Id.
    pub id: String,
    /// Category.
    pub category: Category,
    /// On by default.
    pub default: bool,
    /// Where it applies.
    pub applies_to: String,
    /// Why.
    pub why: String,
    /// Paths it acts on (computed sources say so).
    pub paths: Vec<String>,
}

impl Catalogue {
    /// Rows for the listing.
    pub fn listing(&self) -> Vec<Listing> {
        self.operations
            .iter()
            .map(|o| {
                let mut applies = Vec::new();
                if !o.when.family.is_empty() {
                    applies.push(format!("{} family", o.when.family.join("/")));
                }
                if let Some(i) = &o.when.init {
                    applies.push(i.clone());
                }
                if !o.when.exists.is_empty() {
                    applies.push(format!("with {}", o.when.exists.join(" or ")));
                }
                let mut paths: Vec<String> = o
                    .rules
                    .iter()
                    .flat_map(|r| r.paths.iter().cloned())
                    .collect();
                paths.dedup();
                if let Some(s) = &o.source {
                    paths.push(format!("(computed: {s})"));
                }
                Listing {
                    id: o.id.clone(),
                    category: o.category,
                    default: o.default,
                    applies_to: if applies.is_empty() {
                        "all".into()
                    } else {
                        applies.join(", ")
                    },
                    why: o.why.clone(),
                    paths,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
