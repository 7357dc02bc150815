//! The scrub catalogue: the built-in operations plus a user's profile,
//! validated, and the `--operations` selection language over them.
//!
//! Part of the select stage. The catalogue is data
//! (`manifests/scrub/default.toml`, embedded; `--scrub-profile` adds or
//! overrides operations by id); every rule is compiled once here to catch
//! mistakes before a root is read. Pure: it must never do I/O.

use super::rule::{Vars, compile_rule};
use super::spec::{CatalogueFile, Category, OperationSpec, ScrubError};
use serde::Serialize;
use std::collections::BTreeSet;

/// The default catalogue.
pub const DEFAULT_CATALOGUE: &str = include_str!("../../../manifests/scrub/default.toml");

/// The operations goldcap knows.
#[derive(Debug, Clone)]
pub struct Catalogue {
    /// In catalogue order (which is match order).
    pub operations: Vec<OperationSpec>,
}

const SOURCES: &[&str] = &[
    "swap-files",
    "user-accounts",
    "snakeoil-hash-links",
    "hostname-in-hosts",
    "hostname-in-postfix",
    "hostname-in-mailname",
];
const GUARANTEES: &[&str] = &[
    "ssh-regenerator",
    "snakeoil-regenerator",
    "mailname-regenerator",
];
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
            // TOML's message quotes the offending line: clipped, so a
            // hostile profile cannot fill the terminal.
            toml::from_str(text).map_err(|e| {
                ScrubError(format!("{origin}: {}", crate::input::clip(&e.to_string(), 600)))
            })?;
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
    /// `defaults`. Unlike virt-sysprep, a selection that starts with `+id`
    /// or `-id` changes the defaults (virt-sysprep starts from nothing, so
    /// `-logfiles` alone switched every identity operation off); an empty
    /// spec is an error, so only `none` switches everything off.
    /// virt-sysprep's names are accepted where they mean the same
    /// ([`ALIASES`]).
    pub fn select(&self, specs: &[String]) -> Result<BTreeSet<String>, ScrubError> {
        let mut tokens = Vec::new();
        for spec in specs {
            let before = tokens.len();
            tokens.extend(spec.split(',').map(str::trim).filter(|t| !t.is_empty()));
            if tokens.len() == before {
                return Err(ScrubError(format!(
                    "--operations {spec:?} names no operation: give defaults, all, none, \
                     +ID or -ID (to change the defaults) or a list of ids (see `goldcap scrub --list`)"
                )));
            }
        }
        let defaults = || {
            self.operations
                .iter()
                .filter(|o| o.default)
                .map(|o| o.id.clone())
        };
        let mut set: BTreeSet<String> = match tokens.first() {
            None => defaults().collect(),
            Some(t) if t.starts_with(['+', '-']) => defaults().collect(),
            Some(_) => BTreeSet::new(),
        };
        for t in tokens {
            match t {
                "defaults" => set.extend(defaults()),
                "all" => set.extend(self.operations.iter().map(|o| o.id.clone())),
                "none" => set.clear(),
                _ => {
                    let (add, name) = match t.strip_prefix('-') {
                        Some(id) => (false, id),
                        None => (true, t.strip_prefix('+').unwrap_or(t)),
                    };
                    let id = self.resolve(name)?;
                    if add {
                        set.insert(id);
                    } else {
                        set.remove(&id);
                    }
                }
            }
        }
        Ok(set)
    }

    /// An operation id from a name in `--operations`: an id, or
    /// virt-sysprep's name for the same operation.
    fn resolve(&self, name: &str) -> Result<String, ScrubError> {
        let known = |id: &str| self.operations.iter().any(|o| o.id == id);
        if known(name) {
            return Ok(name.to_owned());
        }
        if let Some((_, id)) = ALIASES.iter().find(|(a, _)| *a == name)
            && known(id)
        {
            return Ok((*id).to_owned());
        }
        let nearest = self
            .operations
            .iter()
            .map(|o| o.id.as_str())
            .chain(ALIASES.iter().map(|(a, _)| *a))
            .map(|id| (distance(name, id), id))
            .min()
            .filter(|(d, id)| *d <= 2 + id.len() / 6);
        let hint = match nearest {
            Some((_, id)) => format!("did you mean {id:?}? "),
            None => String::new(),
        };
        Err(ScrubError(format!(
            "--operations: unknown operation {name:?} ({hint}see `goldcap scrub --list`)"
        )))
    }
}

/// virt-sysprep's operation names that mean the same as one of goldcap's
/// (its other names either have the same id here or do something else).
pub const ALIASES: &[(&str, &str)] = &[
    ("abrt-data", "crash-dumps"),
    ("crash-data", "crash-dumps"),
    ("bash-history", "shell-history"),
    ("blkid-tab", "blkid-cache"),
    ("dhcp-client-state", "dhcp-leases"),
    ("kerberos-hostkeytab", "kerberos-keytab"),
    ("net-hwaddr", "ifcfg-mac"),
    ("net-hostname", "ifcfg-hostname"),
    ("package-manager-cache", "package-cache"),
    ("rh-subscription-manager", "rhsm"),
    ("sssd-db-log", "sssd"),
    ("user-account", "user-accounts"),
];

/// Edit distance (insertions, deletions, substitutions), for suggestions.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The catalogue as rows for `goldcap scrub --list`.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    pub id: String,
    pub category: Category,
    /// On by default.
    pub default: bool,
    /// Where it applies.
    pub applies_to: String,
    pub why: String,
    /// Paths it acts on (computed sources say so).
    pub paths: Vec<String>,
    /// virt-sysprep's names for it, accepted by `--operations`.
    pub aliases: Vec<String>,
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
                if let Some(m) = o.when.mode {
                    applies.push(format!("{m} only"));
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
                    aliases: ALIASES
                        .iter()
                        .filter(|(_, id)| *id == o.id)
                        .map(|(a, _)| (*a).to_owned())
                        .collect(),
                }
            })
            .collect()
    }
}
