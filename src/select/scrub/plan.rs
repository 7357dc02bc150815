//! The scrub plan for one root: the selected operations whose predicates
//! hold, their rules compiled into one glob set, the entries to add, and
//! the hardlink prescan.
//!
//! Part of the select stage. [`Plan::new`] keeps the selected operations
//! whose predicates hold (distribution family, init system, files
//! present, in place or in the stream), adds the rules that must be
//! computed (swap files, user accounts, homes for `~/`:
//! [`super::sources`]; the template's host names: [`super::hostnames`]),
//! settles the first-boot guarantees — nothing a clone needs is dropped
//! unless something recreates it ([`super::ssh`], [`super::firstboot`]) —
//! and compiles every path glob into one set. The policy then asks
//! [`Plan::hits`] per entry — a pure lookup. The only I/O is reading the
//! root's small configuration files while planning and the stat-only
//! [`Plan::prescan`]; it must never modify the root.

use super::catalogue::Catalogue;
use super::rule::{Action, MachineIdMode, Rule, Vars, compile_rule, glob};
use super::spec::{Category, Only, OperationSpec, RuleSpec, ScrubError, When};
use super::traits::RootTraits;
use super::{firstboot, hostnames, sources, ssh};
use crate::entry::{FileKind, Synthetic};
use crate::source::facts::OsRelease;
use crate::source::fsx;
use crate::source::rootfs::RootFs;
use globset::{GlobSet, GlobSetBuilder};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A selected operation, as planned for one root.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedOp {
    pub id: String,
    pub category: Category,
    pub why: String,
    /// What the plan decided beyond the rules (the SSH regenerator, a
    /// predicate that did not hold).
    pub note: Option<String>,
    /// Whether its rules are active (false when a predicate or guarantee
    /// failed).
    pub active: bool,
    /// Its guarantee could not be met, so what it guards was kept (SSH host
    /// keys without a regenerator, the snakeoil key): the image is not
    /// clone-safe.
    pub kept: bool,
    /// The note says a clone loses something or keeps a secret: said on
    /// the terminal too, not only in the MANIFEST.
    #[serde(skip)]
    pub alert: bool,
}

/// An operation on by default that the selection switched off.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OffOp {
    pub id: String,
    pub category: Category,
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
    /// What `/etc/machine-id` becomes.
    pub machine_id: MachineIdMode,
    /// Operations on by default that `--operations` switched off.
    pub off: Vec<OffOp>,
    /// `--operations` as given (empty: the defaults).
    pub selection: Vec<String>,
    /// Where [`Plan::prescan`] looks: (literal directory prefix, depth).
    scan: Vec<(Vec<u8>, usize)>,
    /// The literal directory each rule's globs start in.
    reach: Vec<Vec<u8>>,
    /// Planned for `goldcap scrub` in place.
    in_place: bool,
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
    /// `goldcap scrub` in place rather than the archive stream.
    pub in_place: bool,
}

impl Plan {
    /// Plans the operations `opts` selects from `cat` for `root`.
    pub fn new(
        cat: &Catalogue,
        root: &RootFs,
        os: Option<&OsRelease>,
        opts: &PlanOptions,
    ) -> Result<Plan, ScrubError> {
        let selected = cat.select(&opts.operations)?;
        let off = cat
            .operations
            .iter()
            .filter(|o| o.default && !selected.contains(&o.id))
            .map(|o| OffOp {
                id: o.id.clone(),
                category: o.category,
            })
            .collect();
        let cx = Context {
            traits: RootTraits::detect(root, os, opts.live, opts.in_place),
            root,
            opts,
            homes: sources::homes(root),
            names: hostnames::source_names(root, opts.live),
        };
        let mut ops = Vec::new();
        let mut specs: Vec<(usize, RuleSpec)> = Vec::new();
        let mut synthetic = Vec::new();
        for op in cat.operations.iter().filter(|o| selected.contains(&o.id)) {
            let (planned, rules) = plan_op(op, &cx, &mut synthetic);
            specs.extend(rules.into_iter().map(|r| (ops.len(), r)));
            ops.push(planned);
        }
        let vars = Vars {
            machine_id: opts.machine_id,
            os_id: os.map_or("linux", |o| o.id.as_str()),
        };
        let compiled = Compiled::new(&specs, &ops, root, vars, opts.mtime, &mut synthetic)?;
        with_parents(&mut synthetic, opts.mtime);
        // Jobs share directories (`/usr/lib/goldcap`, `.wants`): one entry each.
        let mut seen = BTreeSet::new();
        synthetic.retain(|s| seen.insert(s.rel.clone()));
        Ok(Plan {
            ops,
            rules: compiled.rules,
            set: compiled.set,
            owners: compiled.owners,
            synthetic,
            machine_id: opts.machine_id,
            off,
            selection: opts.operations.clone(),
            scan: compiled.scan,
            reach: compiled.reach,
            in_place: opts.in_place,
        })
    }

    /// What leaves machine identity in the image: operations guarding it
    /// (every category but hygiene) that are on by default and were
    /// switched off, and selected ones whose guarantee failed. Empty for
    /// a clone-safe image.
    pub fn identity_off(&self) -> Vec<String> {
        self.off
            .iter()
            .filter(|o| o.category != Category::Hygiene)
            .map(|o| o.id.clone())
            .chain(self.ops.iter().filter(|o| o.kept).map(|o| o.id.clone()))
            .collect()
    }

    /// Whether the scrub, in place, acts inside the directory `rel`, which
    /// the walk would otherwise not enter (`/tmp`, `/var/tmp`): some rule's
    /// globs start at or below it. Never in the archive stream, which does
    /// not archive what is inside such directories at all.
    pub fn cleans_inside(&self, rel: &[u8]) -> bool {
        self.in_place
            && self.reach.iter().any(|p| {
                p.strip_prefix(rel)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"/"))
            })
    }

    /// What must be said on the terminal, not only in the MANIFEST: a
    /// secret kept, swap removed (`[id] note`).
    pub fn alerts(&self) -> Vec<String> {
        self.ops
            .iter()
            .filter(|o| o.alert)
            .filter_map(|o| o.note.as_ref().map(|n| format!("[{}] {n}", o.id)))
            .collect()
    }

    /// Multiply-linked inodes the scrub acts on, so that their *other*
    /// names never carry the original: a stat-only walk of the directories
    /// the bounded rules can reach (and of every directory they drop). The
    /// value says whether the content is left out entirely (drop, symlink,
    /// drop-if-matches) rather than edited. Rules with `**` (logs, backups)
    /// are not prescanned: their other names are only caught when they come
    /// after the scrubbed one.
    pub fn prescan(&self, root: &Path) -> HashMap<(u64, u64), bool> {
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
                    if st.kind != FileKind::Dir && st.nlink > 1 && (dropped || first.is_some()) {
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
    pub fn hits(&self, rel: &[u8], kind: FileKind) -> Vec<usize> {
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
                Only::File => kind == FileKind::File,
                Only::Dir => kind == FileKind::Dir,
                Only::Symlink => kind == FileKind::Symlink,
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

/// What planning knows about the root, read once.
struct Context<'a> {
    traits: RootTraits,
    root: &'a RootFs,
    opts: &'a PlanOptions,
    /// Home directories, for `~/`.
    homes: Vec<String>,
    /// The template's host names.
    names: Vec<String>,
}

/// One selected operation for this root: whether its predicate holds, and
/// its rules — the catalogue's for the root's families, those computed
/// from the root, none when a first-boot guarantee cannot be met.
fn plan_op(
    op: &OperationSpec,
    cx: &Context<'_>,
    synthetic: &mut Vec<Synthetic>,
) -> (PlannedOp, Vec<RuleSpec>) {
    let (traits, root, mtime) = (&cx.traits, cx.root, cx.opts.mtime);
    let mut planned = PlannedOp {
        id: op.id.clone(),
        category: op.category,
        why: op.why.clone(),
        note: None,
        active: true,
        kept: false,
        alert: false,
    };
    if !traits.matches(&op.when, root) {
        planned.active = false;
        let but_mode = When {
            mode: None,
            ..op.when.clone()
        };
        planned.note = Some(match op.when.mode {
            Some(m) if traits.matches(&but_mode, root) => format!("{m} only"),
            _ => "does not apply to this root".into(),
        });
        return (planned, Vec::new());
    }
    let mut rules: Vec<RuleSpec> = op
        .rules
        .iter()
        .filter(|r| r.family.is_empty() || r.family.iter().any(|f| traits.families.contains(f)))
        .cloned()
        .collect();
    match op.source.as_deref() {
        Some("swap-files") => {
            let files = sources::swap_files(root, cx.opts.live);
            let swap = sources::swap_plan(&files, traits.init == "systemd");
            rules.extend(swap.rules);
            if !swap.recreate.is_empty() {
                synthetic.extend(firstboot::swap(&swap.recreate).synthetic(mtime));
            }
            planned.note = swap.note;
            planned.alert = swap.alert;
        }
        Some("user-accounts") => rules.extend(sources::user_accounts(root)),
        Some("snakeoil-hash-links") => rules.extend(sources::snakeoil_hash_links(root)),
        Some(which) if which.starts_with("hostname-in-") => {
            let c = hostnames::compute(which, root, &cx.names);
            rules.extend(c.rules);
            planned.note = c.note;
        }
        _ => {}
    }
    for r in &mut rules {
        r.paths = expand(&r.paths, &cx.homes);
        r.except = expand(&r.except, &cx.homes);
    }
    let kept = match op.guarantee.as_deref() {
        Some("ssh-regenerator") => !ssh_guarantee(&mut planned, traits, root, mtime, synthetic),
        Some("snakeoil-regenerator") if !rules.is_empty() => {
            !snakeoil_guarantee(&mut planned, traits, root, mtime, synthetic)
        }
        Some("mailname-regenerator") if !rules.is_empty() => {
            !mailname_guarantee(&mut planned, traits, mtime, synthetic)
        }
        _ => false,
    };
    if kept {
        rules.clear();
    }
    (planned, rules)
}

fn expand(paths: &[String], homes: &[String]) -> Vec<String> {
    paths
        .iter()
        .flat_map(|p| sources::expand_home(p, homes))
        .collect()
}

/// A guarantee that cannot be met: the operation keeps what it would drop,
/// and says so loudly.
fn keep(planned: &mut PlannedOp, why: String) -> bool {
    planned.active = false;
    planned.alert = true;
    planned.kept = true;
    planned.note = Some(format!("KEPT: {why}"));
    false
}

/// Settles the SSH host-key guarantee for `planned`: notes what regenerates
/// the keys on first boot and adds goldcap's unit where needed. `false`
/// when nothing can, so the keys must be kept.
fn ssh_guarantee(
    planned: &mut PlannedOp,
    traits: &RootTraits,
    root: &RootFs,
    mtime: i64,
    synthetic: &mut Vec<Synthetic>,
) -> bool {
    match ssh::detect(root, traits) {
        // goldcap's unit only fills what is still missing, so it is added
        // as a fallback too: a distro unit may be disabled or not wired to
        // sshd.
        ssh::Regenerator::Distro(what) if traits.init == "systemd" && ssh::has_sshd(root) => {
            planned.note = Some(format!(
                "regenerated on first boot by {what}; {} added as a fallback after it",
                ssh::UNIT_PATH
            ));
            synthetic.extend(ssh::synthetic(mtime, true));
        }
        ssh::Regenerator::Distro(what) => {
            planned.note = Some(format!("regenerated on first boot by {what}"))
        }
        ssh::Regenerator::Inject => {
            planned.note = Some(format!(
                "no regenerator in the image: added {} (regenerates missing or empty keys before sshd)",
                ssh::UNIT_PATH
            ));
            synthetic.extend(ssh::synthetic(mtime, false));
        }
        ssh::Regenerator::NoSshd => planned.note = Some("no sshd in the image".into()),
        ssh::Regenerator::Missing => {
            keep(
                planned,
                "no regenerator found and no systemd to add one; clones share host keys until regenerated".into(),
            );
            // Kept (and loud) only when there are keys to share.
            planned.alert = ssh::has_host_keys(root);
            planned.kept = planned.alert;
            return false;
        }
    }
    true
}

/// The snakeoil pair is dropped only where Debian's `make-ssl-cert` can
/// make the clone's own and systemd can run it before the services using
/// it. Elsewhere it is kept, loudly (`tls-private-keys` drops it anyway).
fn snakeoil_guarantee(
    planned: &mut PlannedOp,
    traits: &RootTraits,
    root: &RootFs,
    mtime: i64,
    synthetic: &mut Vec<Synthetic>,
) -> bool {
    if !["/usr/sbin/make-ssl-cert", "/usr/bin/make-ssl-cert"]
        .iter()
        .any(|p| root.exists(p))
    {
        return keep(
            planned,
            "no make-ssl-cert in the image to make the clone's own; clones share this key".into(),
        );
    }
    if traits.init != "systemd" {
        return keep(
            planned,
            "no systemd to regenerate it at first boot; clones share this key".into(),
        );
    }
    let job = firstboot::snakeoil();
    planned.note = Some(format!(
        "regenerated at first boot by make-ssl-cert ({}, before sockets and services)",
        job.unit_path()
    ));
    synthetic.extend(job.synthetic(mtime));
    true
}

/// `/etc/mailname` naming the template is dropped only where systemd can
/// write the clone's before the mail servers start.
fn mailname_guarantee(
    planned: &mut PlannedOp,
    traits: &RootTraits,
    mtime: i64,
    synthetic: &mut Vec<Synthetic>,
) -> bool {
    if traits.init != "systemd" {
        return keep(
            planned,
            "no systemd to write the clone's name at first boot (Debian's postfix does not start without it)".into(),
        );
    }
    let job = firstboot::mailname();
    let names = planned
        .note
        .take()
        .map(|n| format!("; {n}"))
        .unwrap_or_default();
    planned.note = Some(format!(
        "written at first boot from the clone's name by {} (before postfix){names}",
        job.unit_path()
    ));
    synthetic.extend(job.synthetic(mtime));
    true
}

/// The planned rules compiled: one glob set over every path, the rule each
/// glob belongs to, and where the prescan looks.
struct Compiled {
    rules: Vec<Rule>,
    set: GlobSet,
    owners: Vec<usize>,
    scan: Vec<(Vec<u8>, usize)>,
    reach: Vec<Vec<u8>>,
}

impl Compiled {
    /// Compiles `specs` (operation index, rule); `add` rules become
    /// `synthetic` entries instead.
    fn new(
        specs: &[(usize, RuleSpec)],
        ops: &[PlannedOp],
        root: &RootFs,
        vars: Vars<'_>,
        mtime: i64,
        synthetic: &mut Vec<Synthetic>,
    ) -> Result<Compiled, ScrubError> {
        let mut rules = Vec::new();
        let mut scan = Vec::new();
        let mut reach = Vec::new();
        let mut b = GlobSetBuilder::new();
        let mut owners = Vec::new();
        for (op, spec) in specs {
            let mut rule = compile_rule(spec, *op, vars)
                .map_err(|e| ScrubError(format!("operation {:?}: {e}", ops[*op].id)))?;
            if let Action::Add(s) = &mut rule.action {
                s.mtime = mtime;
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
                reach.push(literal_dir(p));
            }
            rules.push(rule);
        }
        let set = b.build().map_err(|e| ScrubError(e.to_string()))?;
        reach.sort();
        reach.dedup();
        Ok(Compiled {
            rules,
            set,
            owners,
            scan,
            reach,
        })
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

/// The literal directory a glob starts in: its components before the
/// first with a wildcard, without its last.
fn literal_dir(pattern: &str) -> Vec<u8> {
    let parts: Vec<&str> = pattern.trim_matches('/').split('/').collect();
    parts[..parts.len() - 1]
        .iter()
        .take_while(|c| !c.contains(['*', '?', '[', '{', '\\']))
        .copied()
        .collect::<Vec<_>>()
        .join("/")
        .into_bytes()
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
                op,
                ..Synthetic::dir(d, mtime)
            });
        }
    }
}
