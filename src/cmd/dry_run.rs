//! `goldcap capture --dry-run`: what a capture would do, written nowhere.
//!
//! A command on top of the source and select stages: the same walk and
//! policy as a capture (so the same entries, left out and scrubbed), with
//! the same additions, counted instead of archived — no file is read, no
//! hook run, no directory created, no endpoint contacted. The result goes
//! to stdout (text or `--json`).

use super::capture::synthetic_entries;
use super::{print_json, print_text, show};
use crate::cli::config::CaptureConfig;
use crate::entry::{FileKind, Reason, SynthKind};
use crate::report::Warning;
use crate::report::archive_path;
use crate::report::error::Result;
use crate::report::exit::ExitCode;
use crate::report::ui::human;
use crate::signals::Cancel;
use crate::source::walk::{Event, Walker};
use serde::Serialize;
use std::collections::BTreeMap;

/// Listed per kind, at most; the counts go on.
const LISTED: usize = 50;

/// What one scrub operation would do.
#[derive(Debug, Default, Serialize)]
struct OpPlan {
    dropped: u64,
    edited: u64,
    added: u64,
    bytes_removed: u64,
}

#[derive(Debug, Serialize)]
struct Listed {
    path: String,
    why: String,
}

/// The dry run's result.
#[derive(Debug, Serialize)]
struct DryRun {
    root: String,
    live: bool,
    artifact: String,
    manifest: String,
    output_dir: String,
    output_dir_exists: bool,
    upload: Option<String>,
    upload_tarball: String,
    hooks: Vec<String>,
    entries: u64,
    files: u64,
    /// Bytes of file content that would be read (before compression).
    content_bytes: u64,
    left_out: u64,
    left_out_listed: Vec<Listed>,
    /// `--exclude` patterns that matched nothing.
    excludes_unmatched: Vec<String>,
    scrub: BTreeMap<String, OpPlan>,
    identity_off: Vec<String>,
    added: Vec<Listed>,
    problems: u64,
    problems_listed: Vec<Warning>,
}

/// Runs the walk and prints what it found.
pub(super) fn run(cfg: &CaptureConfig, cancel: &Cancel) -> Result<ExitCode> {
    let plan = cfg.policy.scrub();
    let mut d = DryRun {
        root: show(&cfg.root),
        live: cfg.live,
        artifact: cfg.names.artifact.clone(),
        manifest: cfg.names.manifest.clone(),
        output_dir: show(&cfg.output_dir),
        output_dir_exists: cfg.output_dir.is_dir(),
        upload: cfg.upload.as_ref().map(|(t, _)| t.describe()),
        upload_tarball: cfg.names.upload_tarball.clone(),
        hooks: cfg.hooks.iter().map(|h| h.name.clone()).collect(),
        entries: 0,
        files: 0,
        content_bytes: 0,
        left_out: 0,
        left_out_listed: Vec::new(),
        excludes_unmatched: Vec::new(),
        scrub: BTreeMap::new(),
        identity_off: plan.map(|p| p.identity_off()).unwrap_or_default(),
        added: Vec::new(),
        problems: 0,
        problems_listed: Vec::new(),
    };
    let walker = Walker::new(
        &cfg.root,
        &cfg.policy,
        cfg.mounts.clone(),
        Some(cfg.output_id),
        synthetic_entries(cfg, plan),
    );
    for event in walker {
        cancel.check()?;
        d.note(event, plan);
    }
    d.excludes_unmatched = cfg
        .policy
        .unmatched_excludes()
        .into_iter()
        .map(str::to_owned)
        .collect();
    if cfg.json {
        print_json(&d)?;
    } else {
        print_text(&text(&d))?;
    }
    Ok(ExitCode::Success)
}

impl DryRun {
    /// Counts one event of the walk.
    fn note(&mut self, event: Event, plan: Option<&crate::select::scrub::Plan>) {
        match event {
            Event::Entry { entry, scrub, .. } => {
                self.entries += 1;
                if entry.stat.kind == FileKind::File {
                    self.files += 1;
                    self.content_bytes += entry.stat.size;
                }
                let mut ops: Vec<&str> = scrub
                    .iter()
                    .filter_map(|&i| plan?.rules.get(i).and_then(|r| plan?.ops.get(r.op)))
                    .map(|o| o.id.as_str())
                    .collect();
                ops.dedup();
                for op in ops {
                    self.scrub.entry(op.to_owned()).or_default().edited += 1;
                }
            }
            Event::Dropped {
                reason: Reason::Scrub(op),
                stat,
                subtree,
                ..
            } => {
                let o = self.scrub.entry(op).or_default();
                o.dropped += 1;
                o.bytes_removed += subtree.map_or(
                    if stat.kind == FileKind::File {
                        stat.size
                    } else {
                        0
                    },
                    |(b, _)| b,
                );
            }
            Event::Dropped { rel, reason, .. } => {
                self.left_out += 1;
                if self.left_out_listed.len() < LISTED {
                    self.left_out_listed.push(Listed {
                        path: archive_path(&rel),
                        why: reason.to_string(),
                    });
                }
            }
            Event::Synthetic(s) => {
                self.entries += 1;
                if let SynthKind::File(c) = &s.kind {
                    self.files += 1;
                    self.content_bytes += c.len() as u64;
                }
                match &s.op {
                    Some(op) => self.scrub.entry(op.clone()).or_default().added += 1,
                    None if self.added.len() < LISTED => self.added.push(Listed {
                        path: archive_path(&s.rel),
                        why: "added".into(),
                    }),
                    None => {}
                }
            }
            Event::Problem { rel, kind, message } => {
                self.problems += 1;
                if self.problems_listed.len() < LISTED {
                    self.problems_listed.push(Warning {
                        path: archive_path(&rel),
                        kind,
                        message,
                    });
                }
            }
        }
    }
}

fn text(d: &DryRun) -> String {
    let mut t = String::new();
    let mut line = |label: &str, value: String| {
        t.push_str(&format!("{label:<12} {value}\n"));
    };
    line("dry run", "nothing was read, run, created or sent".into());
    line(
        "root",
        format!("{}{}", d.root, if d.live { " (live system)" } else { "" }),
    );
    line(
        "would write",
        format!(
            "{}/{} and its MANIFEST {} (.json too){}",
            d.output_dir,
            d.artifact,
            d.manifest,
            if d.output_dir_exists {
                ""
            } else {
                "; the directory would be created"
            }
        ),
    );
    line(
        "upload",
        d.upload.as_ref().map_or_else(
            || "none".to_owned(),
            |u| format!("{u} as {}", d.upload_tarball),
        ),
    );
    if !d.hooks.is_empty() {
        line(
            "hooks",
            format!("{} (run first, in this order)", d.hooks.join(", ")),
        );
    }
    line(
        "entries",
        format!(
            "{} ({} files, {} of content before compression)",
            d.entries,
            d.files,
            human(d.content_bytes)
        ),
    );
    line("left out", d.left_out.to_string());
    for l in &d.left_out_listed {
        line("", format!("{}  {}", l.path, l.why));
    }
    if d.left_out > d.left_out_listed.len() as u64 {
        line(
            "",
            format!(
                "... and {} more",
                d.left_out - d.left_out_listed.len() as u64
            ),
        );
    }
    for p in &d.excludes_unmatched {
        line("", format!("--exclude {p:?} matched nothing"));
    }
    line(
        "identity",
        match d.identity_off.as_slice() {
            [] => "every identity operation on".to_owned(),
            off => format!("KEPT by {}", off.join(", ")),
        },
    );
    for (op, p) in &d.scrub {
        let mut parts = Vec::new();
        if p.dropped > 0 {
            parts.push(format!("drop {} ({})", p.dropped, human(p.bytes_removed)));
        }
        if p.edited > 0 {
            parts.push(format!("edit {}", p.edited));
        }
        if p.added > 0 {
            parts.push(format!("add {}", p.added));
        }
        line("scrub", format!("{op:<22} {}", parts.join(", ")));
    }
    for a in &d.added {
        line("added", a.path.clone());
    }
    line("problems", d.problems.to_string());
    for p in &d.problems_listed {
        line("", format!("{}  [{}] {}", p.path, p.kind, p.message));
    }
    t
}
