//! The run's report: warnings, what was left out, and counts.
//!
//! Sits beside the pipeline: the walk and the tar writer record here
//! whatever a user must hear about without failing the run — a file that
//! vanished, changed, shrank or grew while it was read, an unreadable entry,
//! a mount not crossed. Each warning is printed as it happens (through
//! [`Ui`]) and kept for the MANIFEST; the count decides exit status 3.
//! Detail lists are capped so memory stays bounded on a pathological tree;
//! counts never are. This module must never decide anything about the
//! archive: it only records.

pub mod error;
pub mod escape;
pub mod exit;
pub mod ui;

use escape::escape;
use serde::Serialize;
use std::fmt;
use ui::Ui;

/// Detail entries kept per list; counts go on beyond this.
pub const DETAIL_CAP: usize = 10_000;

/// What kind of trouble an entry had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WarningKind {
    /// It disappeared between being listed and being read; not archived.
    Vanished,
    /// Its content or metadata changed while it was read.
    Changed,
    /// It got shorter while read; the archived body was padded with zeros.
    Shrank,
    /// It got longer while read; only the size seen at open was archived.
    Grew,
    /// It could not be read (permissions, I/O error); not archived, or
    /// archived with zeros where the read failed.
    Unreadable,
    /// Its extended attributes or ACLs could not be read in full.
    Attributes,
    /// It was replaced by something goldcap had to add (e.g. `curtin`).
    Replaced,
}

impl fmt::Display for WarningKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WarningKind::Vanished => "vanished",
            WarningKind::Changed => "changed",
            WarningKind::Shrank => "shrank",
            WarningKind::Grew => "grew",
            WarningKind::Unreadable => "unreadable",
            WarningKind::Attributes => "attributes",
            WarningKind::Replaced => "replaced",
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Warning {
    /// The archive path (`./var/log/syslog`), escaped.
    pub path: String,
    pub kind: WarningKind,
    /// What happened, for people.
    pub message: String,
}

/// An entry whose content (or which itself) was left out.
#[derive(Debug, Clone, Serialize)]
pub struct Pruned {
    /// The archive path, escaped.
    pub path: String,
    /// `excluded`, `socket`, `output-dir`, `pseudo-fs`, `other-mount`,
    /// `volatile`.
    pub kind: String,
    /// Whether the directory entry itself is in the archive.
    pub dir_kept: bool,
    /// For people.
    pub reason: String,
}

/// Counts of what went into the archive.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Archive entries (not counting PAX headers).
    pub entries: u64,
    pub directories: u64,
    /// Regular files with a body.
    pub files: u64,
    /// Of those, stored sparse.
    pub sparse_files: u64,
    /// Hard links to an earlier entry.
    pub hardlinks: u64,
    pub symlinks: u64,
    pub char_devices: u64,
    pub block_devices: u64,
    pub fifos: u64,
    /// Entries goldcap added (e.g. `curtin/`).
    pub synthetic: u64,
    /// Sockets skipped.
    pub sockets_skipped: u64,
    /// Bytes of file content read from the source.
    pub content_bytes: u64,
    /// Bytes of the uncompressed tar stream.
    pub tar_bytes: u64,
}

/// One scrub operation's effect on one entry, as the scrub reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Effect {
    pub op: String,
    pub action: &'static str,
    /// Bytes of the original no longer in the image.
    pub bytes_removed: u64,
}

/// One scrub action on one entry.
#[derive(Debug, Clone, Serialize)]
pub struct ScrubRecord {
    pub op: String,
    /// Archive path, escaped.
    pub path: String,
    pub action: &'static str,
    /// Bytes of the original no longer in the image.
    pub bytes_removed: u64,
}

/// Totals for one operation.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScrubTotal {
    /// Entries acted on.
    pub items: u64,
    pub bytes_removed: u64,
}

/// Collects warnings, pruned entries and counts for one run.
pub struct Report<'u> {
    ui: &'u Ui,
    /// Warnings, up to [`DETAIL_CAP`].
    pub warnings: Vec<Warning>,
    /// All warnings, including those beyond the cap.
    pub warning_count: u64,
    /// All warnings by kind (`unreadable`, `vanished`, …).
    pub warning_kinds: std::collections::BTreeMap<String, u64>,
    /// Pruned entries, up to [`DETAIL_CAP`].
    pub pruned: Vec<Pruned>,
    /// All pruned entries.
    pub pruned_count: u64,
    pub stats: Stats,
    /// Scrub actions, up to [`DETAIL_CAP`].
    pub scrub: Vec<ScrubRecord>,
    /// Scrub totals per operation (never capped).
    pub scrub_totals: std::collections::BTreeMap<String, ScrubTotal>,
}

/// Formats a root-relative path as it appears in the archive, escaped.
pub fn archive_path(rel: &[u8]) -> String {
    if rel.is_empty() {
        "./".to_owned()
    } else {
        let mut v = Vec::with_capacity(rel.len() + 2);
        v.extend_from_slice(b"./");
        v.extend_from_slice(rel);
        escape(&v)
    }
}

impl<'u> Report<'u> {
    /// An empty report printing through `ui`.
    pub fn new(ui: &'u Ui) -> Self {
        Report {
            ui,
            warnings: Vec::new(),
            warning_count: 0,
            warning_kinds: std::collections::BTreeMap::new(),
            pruned: Vec::new(),
            pruned_count: 0,
            stats: Stats::default(),
            scrub: Vec::new(),
            scrub_totals: std::collections::BTreeMap::new(),
        }
    }

    /// Records scrub effects on the entry at `rel`.
    pub fn scrubbed(&mut self, rel: &[u8], effects: &[Effect]) {
        for e in effects {
            self.scrubbed_path(archive_path(rel), e);
        }
    }

    /// Records a scrub effect on an already formatted archive path.
    pub fn scrubbed_path(&mut self, path: String, e: &Effect) {
        self.ui.info(&format!(
            "{path}: {} ({}, {} bytes)",
            e.op, e.action, e.bytes_removed
        ));
        let t = self.scrub_totals.entry(e.op.clone()).or_default();
        t.items += 1;
        t.bytes_removed += e.bytes_removed;
        if self.scrub.len() < DETAIL_CAP {
            self.scrub.push(ScrubRecord {
                op: e.op.clone(),
                path,
                action: e.action,
                bytes_removed: e.bytes_removed,
            });
        }
    }

    /// Records (and prints) a warning about the entry at `rel`.
    pub fn warn(&mut self, rel: &[u8], kind: WarningKind, message: impl Into<String>) {
        let w = Warning {
            path: archive_path(rel),
            kind,
            message: message.into(),
        };
        self.ui.warn(&format!("{}: {}", w.path, w.message));
        self.warning_count += 1;
        *self.warning_kinds.entry(kind.to_string()).or_default() += 1;
        if self.warnings.len() < DETAIL_CAP {
            self.warnings.push(w);
        }
    }

    /// Records an entry left out (or kept without its content).
    pub fn prune(&mut self, rel: &[u8], kind: &str, dir_kept: bool, reason: String) {
        let path = archive_path(rel);
        self.ui.info(&format!("{path}: {reason}"));
        self.pruned_count += 1;
        if self.pruned.len() < DETAIL_CAP {
            self.pruned.push(Pruned {
                path,
                kind: kind.to_owned(),
                dir_kept,
                reason,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_detail_not_counts() {
        let ui = Ui::new(-1, false);
        let mut r = Report::new(&ui);
        for i in 0..(DETAIL_CAP + 5) {
            r.warn(format!("f{i}").as_bytes(), WarningKind::Vanished, "gone");
        }
        assert_eq!(r.warnings.len(), DETAIL_CAP);
        assert_eq!(r.warning_count, DETAIL_CAP as u64 + 5);
        assert_eq!(r.warning_kinds["vanished"], DETAIL_CAP as u64 + 5);
        assert_eq!(r.warnings[0].path, "./f0");
    }

    #[test]
    fn archive_paths_are_escaped() {
        assert_eq!(archive_path(b""), "./");
        assert_eq!(archive_path(b"srv/caf\xe9"), "./srv/caf\\351");
        assert_eq!(archive_path(b"a\nb"), "./a\\012b");
    }
}
