//! The MANIFEST: DRP image-builder's info block and goldcap's facts, as text
//! for people and as JSON for machines.
//!
//! The last piece of the output stage: written once the artifact's size and
//! digests are known, and published after the artifact (it is the "capture is
//! complete" marker). The text starts with image-builder's block, same labels
//! and layout (labels right-aligned to 16 columns, `:  `, a line of 80 dashes),
//! so anything that scrapes DRP manifests keeps working; then sha256, tool,
//! source facts, packages, what was left out, warnings, and the archived paths.
//! The JSON twin carries the same data.
//!
//! The path list can be as long as the tree, so it is never held in memory:
//! [`PathList`] spools it to an unnamed temporary file during the capture
//! and both renderers stream it back. Paths are escaped with
//! [`crate::report::escape`]; the encoding is stated in both forms. This module
//! must never read the artifact back.

pub mod read;

use crate::output::compress::Format;
use crate::output::digest::Digests;
use crate::prepare::hooks::HookRun;
use crate::prepare::inject::Injected;
use crate::report::escape::{PATH_ENCODING, escape};
use crate::report::ui::human;
use crate::report::{Pruned, Report, ScrubRecord, Stats, Warning};
use crate::select::scrub::{MachineIdMode, OffOp, Plan, PlannedOp};
use crate::source::facts::Facts;
use serde::Deserialize;
use serde::ser::{Error as _, SerializeSeq};
use serde::{Serialize, Serializer};
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};

/// Version of the JSON layout.
pub const MANIFEST_VERSION: u32 = 1;

const DASHES: &str =
    "--------------------------------------------------------------------------------";

/// The version of the JSON MANIFEST's `entries` records (`entries_schema`).
pub const ENTRIES_SCHEMA: u32 = 1;

/// One archived entry as the JSON MANIFEST's `entries` lists it (schema
/// [`ENTRIES_SCHEMA`]): what `goldcap diff` compares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryRecord {
    /// Escaped, relative to the root (`.` for the root itself).
    pub path: String,
    /// `file`, `dir`, `symlink`, `hardlink`, `char`, `block`, `fifo`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Permission bits in octal (`0755`, `4755`).
    pub mode: String,
    pub uid: u64,
    pub gid: u64,
    /// Regular files: the size as archived (after any scrub edit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Regular files: sha256 of the content as archived, computed as it
    /// was written (a sparse file's data segments, holes left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Stored as a sparse file (its `sha256` covers the data segments).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sparse: bool,
    /// A symlink's target or the name a hard link points to (escaped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// Archived paths and their records, spooled to temporary files.
pub struct PathList {
    out: BufWriter<File>,
    records: BufWriter<File>,
    count: u64,
}

impl PathList {
    /// A spool in `dir` (unnamed files: they never appear in the directory).
    pub fn new(dir: &std::path::Path) -> io::Result<PathList> {
        Ok(PathList {
            out: BufWriter::new(tempfile::tempfile_in(dir)?),
            records: BufWriter::new(tempfile::tempfile_in(dir)?),
            count: 0,
        })
    }

    /// Appends one archive name (escaped) and its record.
    pub fn push(&mut self, escaped: &str, record: &EntryRecord) -> io::Result<()> {
        self.count += 1;
        self.out.write_all(escaped.as_bytes())?;
        self.out.write_all(b"\n")?;
        serde_json::to_writer(&mut self.records, record)?;
        self.records.write_all(b"\n")
    }

    /// Finishes spooling; returns the files for reading.
    pub fn finish(self) -> io::Result<Paths> {
        let count = self.count;
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        let records = self.records.into_inner().map_err(|e| e.into_error())?;
        Ok(Paths {
            file,
            records: Some(records),
            count,
        })
    }
}

/// The finished path spool.
pub struct Paths {
    file: File,
    /// The records, one JSON object a line (`None` in tests without them).
    records: Option<File>,
    count: u64,
}

/// The spooled records, serialised as a JSON array without holding them.
struct Records<'a>(&'a File, u64);

impl Serialize for Records<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut f = self.0;
        f.seek(SeekFrom::Start(0)).map_err(S::Error::custom)?;
        let mut seq = s.serialize_seq(Some(self.1 as usize))?;
        for line in BufReader::new(f).lines() {
            // Written by `PathList::push` as one JSON object a line: taken
            // as it is, not parsed and written again.
            let line = line.map_err(S::Error::custom)?;
            let r = serde_json::value::RawValue::from_string(line).map_err(S::Error::custom)?;
            seq.serialize_element(&r)?;
        }
        seq.end()
    }
}

impl Paths {
    /// Number of paths.
    pub fn count(&self) -> u64 {
        self.count
    }

    fn lines(&self) -> io::Result<impl Iterator<Item = io::Result<String>> + '_> {
        let mut f = &self.file;
        f.seek(SeekFrom::Start(0))?;
        Ok(BufReader::new(f).lines())
    }
}

impl Serialize for Paths {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.count as usize))?;
        for line in self.lines().map_err(S::Error::custom)? {
            seq.serialize_element(&line.map_err(S::Error::custom)?)?;
        }
        seq.end()
    }
}

/// The tool that wrote the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct Tool {
    /// `goldcap`.
    pub name: &'static str,
    pub version: &'static str,
}

impl Tool {
    pub fn current() -> Tool {
        Tool {
            name: env!("CARGO_PKG_NAME"),
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

/// Where the image came from.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    /// The captured root (escaped host path).
    pub root: String,
    /// A live capture of the running system's `/`.
    pub live: bool,
    /// Read without the privilege to read every file
    /// (`--allow-unreadable`): what could not be read is missing.
    pub unprivileged: bool,
    /// `{os}` as used in names.
    pub os_tag: Option<String>,
    /// Facts read from the root.
    #[serde(flatten)]
    pub facts: Facts,
}

/// One scrub operation's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct OpReport {
    /// The planned operation.
    #[serde(flatten)]
    pub op: PlannedOp,
    /// Entries acted on.
    pub items: u64,
    pub bytes_removed: u64,
}

/// What the identity scrub did.
#[derive(Debug, Clone, Serialize)]
pub struct ScrubSection {
    /// What `/etc/machine-id` became.
    pub machine_id: Option<MachineIdMode>,
    /// `--operations` as given (empty: the defaults).
    pub selection: Vec<String>,
    /// Every selected operation, with its totals.
    pub operations: Vec<OpReport>,
    /// Operations on by default that the selection switched off.
    pub off: Vec<OffOp>,
    /// What leaves machine identity in the image (see
    /// [`Plan::identity_off`]): identity, secret and network operations
    /// switched off, and operations whose guarantee failed. Empty for a
    /// clone-safe image; `goldcap upload` refuses others without
    /// `--allow-identity`.
    pub identity_off: Vec<String>,
    /// Per item (up to the detail cap).
    pub items: Vec<ScrubRecord>,
    /// Items in all.
    pub item_count: u64,
    /// Bytes removed in all.
    pub bytes_removed: u64,
}

impl ScrubSection {
    /// Builds the section from the plan and what the report recorded.
    pub fn new(plan: Option<&Plan>, report: &mut Report<'_>) -> ScrubSection {
        let totals = &report.scrub_totals;
        let operations: Vec<OpReport> = plan
            .map(|p| {
                p.ops
                    .iter()
                    .map(|op| {
                        let t = totals.get(&op.id).cloned().unwrap_or_default();
                        OpReport {
                            op: op.clone(),
                            items: t.items,
                            bytes_removed: t.bytes_removed,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        ScrubSection {
            machine_id: plan.map(|p| p.machine_id),
            selection: plan.map(|p| p.selection.clone()).unwrap_or_default(),
            operations,
            off: plan.map(|p| p.off.clone()).unwrap_or_default(),
            identity_off: plan.map(Plan::identity_off).unwrap_or_default(),
            item_count: totals.values().map(|t| t.items).sum(),
            bytes_removed: totals.values().map(|t| t.bytes_removed).sum(),
            items: std::mem::take(&mut report.scrub),
        }
    }

    /// What the scrub guaranteed, in a few words: the machine-id, and every
    /// identity operation that was off or failed.
    pub fn headline(&self) -> String {
        let mid_selected = self.operations.iter().any(|o| o.op.id == "machine-id");
        let mid = match self.machine_id {
            Some(MachineIdMode::Empty) if mid_selected => "machine-id emptied",
            Some(MachineIdMode::Uninitialized) if mid_selected => {
                "machine-id set to 'uninitialized'"
            }
            _ => "machine-id KEPT",
        };
        match self.identity_off.as_slice() {
            [] => format!("{mid}; every identity operation on"),
            off => format!("{mid}; IDENTITY KEPT by {}", off.join(", ")),
        }
    }

    /// The text form (also printed by `goldcap scrub`).
    pub fn write_text(&self, out: &mut impl Write) -> io::Result<()> {
        for o in &self.operations {
            let what = if !o.op.active {
                String::new()
            } else if o.items == 0 {
                "nothing to do".into()
            } else {
                format!(
                    "{} item{}, {} removed",
                    o.items,
                    if o.items == 1 { "" } else { "s" },
                    human(o.bytes_removed)
                )
            };
            let sep = if what.is_empty() { "" } else { "; " };
            let note =
                o.op.note
                    .as_deref()
                    .map(|n| format!("{sep}{n}"))
                    .unwrap_or_default();
            writeln!(
                out,
                "{:<22} {:<9} {what}{note}",
                o.op.id,
                o.op.category.to_string()
            )?;
        }
        for o in &self.off {
            writeln!(
                out,
                "{:<22} {:<9} OFF: on by default, switched off by --operations",
                o.id,
                o.category.to_string()
            )?;
        }
        if !self.items.is_empty() {
            writeln!(out)?;
        }
        for i in &self.items {
            if i.action == "add" {
                writeln!(out, "{}  [{}] added", i.path, i.op)?;
            } else {
                writeln!(
                    out,
                    "{}  [{}] {}, {} removed",
                    i.path,
                    i.op,
                    i.action,
                    human(i.bytes_removed)
                )?;
            }
        }
        more(out, self.item_count, self.items.len())
    }
}

/// What the user added to the archive (never to the root).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Added {
    /// `--inject`, each entry.
    pub injected: Vec<Injected>,
    /// `--firstboot` scripts, as named in the image, in the order they run.
    pub firstboot: Vec<String>,
    /// `--hostname` (a name, or a template set on first boot).
    pub hostname: Option<String>,
}

/// Everything in the MANIFEST except the path list.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    /// JSON layout version.
    pub manifest_version: u32,
    pub tool: Tool,
    /// Artifact file name.
    pub filename: String,
    /// Image ident (10 hex).
    pub ident: String,
    /// Capture date, RFC 3339 UTC.
    pub date: String,
    /// `{date}` as used in names.
    pub date_stamp: String,
    /// Artifact size and digests.
    #[serde(flatten)]
    pub digests: Digests,
    pub format: Format,
    pub level: i32,
    /// Upload name of the artifact.
    pub upload_tarball: String,
    /// Upload name of the text manifest.
    pub upload_manifest: String,
    pub source: Source,
    pub stats: Stats,
    /// What was left out (up to the detail cap).
    pub pruned: Vec<Pruned>,
    /// `--exclude` patterns that matched nothing (a typo, or a path that is
    /// not there).
    pub excludes_unmatched: Vec<String>,
    /// How many entries were left out in all.
    pub pruned_count: u64,
    /// Warnings (up to the detail cap).
    pub warnings: Vec<Warning>,
    /// How many warnings in all.
    pub warning_count: u64,
    /// How many of each kind (`unreadable`: not archived, or not in full;
    /// `attributes`: xattrs or ACLs missing): `verify` fails an artifact
    /// with either.
    pub warnings_by_kind: std::collections::BTreeMap<String, u64>,
    /// Hooks run in the root before it was read, in order.
    pub hooks: Vec<HookRun>,
    /// What `--inject`, `--firstboot` and `--hostname` added to the archive.
    pub added: Added,
    pub scrub: ScrubSection,
    /// How paths are written.
    pub path_encoding: &'static str,
}

fn label(out: &mut impl Write, name: &str, value: impl std::fmt::Display) -> io::Result<()> {
    writeln!(out, "{name:>16}:  {value}")
}

/// `... and N more` after a capped list of `shown` of `count` items.
fn more(out: &mut impl Write, count: u64, shown: usize) -> io::Result<()> {
    if count > shown as u64 {
        writeln!(out, "... and {} more", count - shown as u64)?;
    }
    Ok(())
}

fn section(out: &mut impl Write, title: String) -> io::Result<()> {
    writeln!(out)?;
    writeln!(out, "{title}")?;
    writeln!(out, "{DASHES}")
}

impl Manifest {
    /// Writes the text MANIFEST: DRP image-builder's block, then one
    /// section each for the source, packages, what was left out, the
    /// identity scrub, warnings and the archived paths.
    pub fn write_text(&self, paths: &Paths, out: &mut impl Write) -> io::Result<()> {
        self.write_drp_block(out)?;
        self.write_source(out)?;
        self.write_packages(out)?;
        self.write_left_out(out)?;
        self.write_hooks(out)?;
        self.write_added(out)?;
        self.write_scrub(out)?;
        self.write_warnings(out)?;
        section(
            out,
            format!("Archived paths ({}; {PATH_ENCODING})", paths.count()),
        )?;
        for line in paths.lines()? {
            writeln!(out, "{}", line?)?;
        }
        Ok(())
    }

    /// DRP image-builder's block, byte for byte (including the trailing
    /// space after the colon on the first line), then goldcap's labels.
    fn write_drp_block(&self, out: &mut impl Write) -> io::Result<()> {
        writeln!(out, "Image Builder created image information: ")?;
        writeln!(out, "{DASHES}")?;
        label(out, "filename", &self.filename)?;
        label(out, "ident", &self.ident)?;
        label(
            out,
            "date",
            crate::output::naming::drp_date(&parse_date(&self.date)),
        )?;
        label(out, "size", self.digests.size)?;
        label(out, "md5sum", &self.digests.md5)?;
        label(out, "upload tarball", &self.upload_tarball)?;
        label(out, "upload manifest", &self.upload_manifest)?;
        label(out, "sha256sum", &self.digests.sha256)?;
        label(
            out,
            "tool",
            format!("{} {}", self.tool.name, self.tool.version),
        )?;
        let algo = match self.format {
            Format::Tgz => "gzip",
            Format::Tzst => "zstd",
        };
        label(
            out,
            "format",
            format!(
                "{} ({algo} level {})",
                self.format.extension().trim_start_matches('.'),
                self.level
            ),
        )
    }

    /// The source: root, OS, kernels, boot modes, counts.
    fn write_source(&self, out: &mut impl Write) -> io::Result<()> {
        let s = &self.source;
        section(out, "Source".into())?;
        label(
            out,
            "root",
            format!(
                "{}{}{}",
                s.root,
                if s.live { " (live system)" } else { "" },
                if s.unprivileged {
                    " (read WITHOUT the privilege to read every file: --allow-unreadable)"
                } else {
                    ""
                }
            ),
        )?;
        let os = match &s.facts.os {
            Some(os) => format!(
                "{} [{}] from {}",
                os.pretty_name.as_deref().unwrap_or(&os.id),
                s.os_tag.as_deref().unwrap_or("?"),
                os.path
            ),
            None => format!(
                "unknown (no os-release) [{}]",
                s.os_tag.as_deref().unwrap_or("?")
            ),
        };
        label(out, "os", os)?;
        if s.facts.kernels.is_empty() {
            label(out, "kernels", "none found in /boot or /lib/modules")?;
        }
        for k in &s.facts.kernels {
            let parts: Vec<&str> = [
                (k.image, "image"),
                (k.initramfs, "initramfs"),
                (k.modules, "modules"),
            ]
            .iter()
            .filter(|(has, _)| *has)
            .map(|(_, what)| *what)
            .collect();
            label(
                out,
                "kernel",
                format!("{} ({})", k.version, parts.join(", ")),
            )?;
        }
        let b = &s.facts.boot;
        let yn = |v: bool| if v { "yes" } else { "no" };
        label(
            out,
            "boot modes",
            format!(
                "BIOS grub: {}, EFI grub: {}, EFI shim: {}",
                yn(b.bios_grub),
                yn(b.efi_grub),
                yn(b.efi_shim)
            ),
        )?;
        for p in &s.facts.deploy_problems {
            label(out, "DEPLOY PROBLEM", p)?;
        }
        self.write_counts(out)
    }

    fn write_counts(&self, out: &mut impl Write) -> io::Result<()> {
        let st = &self.stats;
        label(
            out,
            "archived",
            format!(
                "{} entries: {} dirs, {} files ({} sparse), {} hardlinks, {} symlinks, {} devices, {} fifos, {} added",
                st.entries,
                st.directories,
                st.files,
                st.sparse_files,
                st.hardlinks,
                st.symlinks,
                st.char_devices + st.block_devices,
                st.fifos,
                st.synthetic
            ),
        )?;
        label(
            out,
            "content",
            format!(
                "{} read, {} tar stream",
                human(st.content_bytes),
                human(st.tar_bytes)
            ),
        )?;
        label(out, "skipped", format!("{} sockets", st.sockets_skipped))
    }

    fn write_packages(&self, out: &mut impl Write) -> io::Result<()> {
        let p = &self.source.facts.packages;
        section(
            out,
            format!("Packages ({}, {} installed)", p.database, p.list.len()),
        )?;
        if let Some(note) = &p.note {
            writeln!(out, "note: {note}")?;
        }
        for pkg in &p.list {
            writeln!(out, "{} {} {}", pkg.name, pkg.version, pkg.arch)?;
        }
        Ok(())
    }

    fn write_left_out(&self, out: &mut impl Write) -> io::Result<()> {
        section(out, format!("Left out ({})", self.pruned_count))?;
        for x in &self.pruned {
            let what = if x.dir_kept {
                "directory kept, content left out"
            } else {
                "left out"
            };
            writeln!(out, "{}  [{}] {what}: {}", x.path, x.kind, x.reason)?;
        }
        more(out, self.pruned_count, self.pruned.len())?;
        for p in &self.excludes_unmatched {
            writeln!(out, "--exclude {:?} matched nothing", escape(p.as_bytes()))?;
        }
        Ok(())
    }

    fn write_hooks(&self, out: &mut impl Write) -> io::Result<()> {
        if self.hooks.is_empty() {
            return Ok(());
        }
        section(
            out,
            format!("Hooks ({}, run before the capture)", self.hooks.len()),
        )?;
        for h in &self.hooks {
            writeln!(
                out,
                "{}  [{}] in the {}, {:.1}s, sha256 {}",
                h.name,
                escape(h.source.as_bytes()),
                h.ran_in,
                h.seconds,
                h.sha256
            )?;
        }
        Ok(())
    }

    fn write_added(&self, out: &mut impl Write) -> io::Result<()> {
        let a = &self.added;
        let n = a.injected.len() + a.firstboot.len() + usize::from(a.hostname.is_some());
        if n == 0 {
            return Ok(());
        }
        section(out, format!("Added to the image ({n})"))?;
        for i in &a.injected {
            writeln!(
                out,
                "{}  [inject] {} {} {}:{}, {} bytes{} from {}",
                i.path,
                i.kind,
                i.mode,
                i.uid,
                i.gid,
                i.size,
                i.sha256
                    .as_deref()
                    .map(|s| format!(", sha256 {s}"))
                    .unwrap_or_default(),
                escape(i.from.as_bytes())
            )?;
        }
        for f in &a.firstboot {
            writeln!(out, "{f}  [firstboot] runs once on each clone's first boot")?;
        }
        if let Some(h) = &a.hostname {
            writeln!(out, "hostname  {h}")?;
        }
        Ok(())
    }

    fn write_scrub(&self, out: &mut impl Write) -> io::Result<()> {
        let sc = &self.scrub;
        section(
            out,
            format!(
                "Identity scrub ({}; {} items, {} removed)",
                sc.headline(),
                sc.item_count,
                human(sc.bytes_removed)
            ),
        )?;
        sc.write_text(out)
    }

    fn write_warnings(&self, out: &mut impl Write) -> io::Result<()> {
        let kinds: Vec<String> = self
            .warnings_by_kind
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        section(
            out,
            match kinds.as_slice() {
                [] => format!("Warnings ({})", self.warning_count),
                [one] => format!("Warnings ({one})"),
                k => format!("Warnings ({}: {})", self.warning_count, k.join(", ")),
            },
        )?;
        for w in &self.warnings {
            writeln!(out, "{}  [{}] {}", w.path, w.kind, w.message)?;
        }
        more(out, self.warning_count, self.warnings.len())
    }

    /// Writes the JSON twin: every field above plus `paths`.
    pub fn write_json(&self, paths: &Paths, out: &mut impl Write) -> io::Result<()> {
        #[derive(Serialize)]
        struct WithPaths<'a> {
            #[serde(flatten)]
            manifest: &'a Manifest,
            paths: &'a Paths,
            #[serde(skip_serializing_if = "Option::is_none")]
            entries_schema: Option<u32>,
            #[serde(skip_serializing_if = "Option::is_none")]
            entries: Option<Records<'a>>,
        }
        let entries = paths.records.as_ref().map(|f| Records(f, paths.count));
        serde_json::to_writer_pretty(
            &mut *out,
            &WithPaths {
                manifest: self,
                paths,
                entries_schema: entries.as_ref().map(|_| ENTRIES_SCHEMA),
                entries,
            },
        )?;
        writeln!(out)
    }
}

fn parse_date(s: &str) -> chrono::DateTime<chrono::Utc> {
    // Unwrap expectation: `date` is always written by goldcap from a DateTime.
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&chrono::Utc))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::facts::{OsRelease, Package, Packages};

    fn sample() -> Manifest {
        Manifest {
            manifest_version: MANIFEST_VERSION,
            tool: Tool::current(),
            filename: "debian-12-rootfs-20190827-184435-cf99cd80eb.tgz".into(),
            ident: "cf99cd80eb".into(),
            date: "2019-08-27T18:44:35Z".into(),
            date_stamp: "20190827-184435".into(),
            digests: Digests {
                size: 517_036_600,
                md5: "1f40ac1bac2eb3ea99cebc38b807c15f".into(),
                sha256: "ab".repeat(32),
            },
            format: Format::Tgz,
            level: 6,
            upload_tarball: "images/debian-12-rootfs-20190827-184435-cf99cd80eb.tgz".into(),
            upload_manifest: "images/debian-12-MANIFEST-20190827-184435-cf99cd80eb.txt".into(),
            source: Source {
                root: "/".into(),
                live: true,
                unprivileged: false,
                os_tag: Some("debian-12".into()),
                facts: Facts {
                    os: Some(OsRelease {
                        id: "debian".into(),
                        version_id: Some("12".into()),
                        path: "/etc/os-release".into(),
                        ..Default::default()
                    }),
                    packages: Packages {
                        database: "dpkg".into(),
                        note: None,
                        list: vec![Package {
                            name: "bash".into(),
                            version: "5.2".into(),
                            arch: "amd64".into(),
                        }],
                    },
                    ..Default::default()
                },
            },
            stats: Stats::default(),
            pruned: vec![],
            excludes_unmatched: vec![],
            pruned_count: 0,
            warnings: vec![],
            warning_count: 0,
            warnings_by_kind: Default::default(),
            hooks: vec![],
            added: Added::default(),
            scrub: ScrubSection {
                machine_id: None,
                selection: vec![],
                operations: vec![],
                off: vec![],
                identity_off: vec![],
                items: vec![],
                item_count: 0,
                bytes_removed: 0,
            },
            path_encoding: PATH_ENCODING,
        }
    }

    fn paths(list: &[&str]) -> Paths {
        let d = tempfile::tempdir().unwrap();
        let mut p = PathList::new(d.path()).unwrap();
        for l in list {
            let record = EntryRecord {
                path: l.to_string(),
                kind: "dir".into(),
                mode: "0755".into(),
                uid: 0,
                gid: 0,
                size: None,
                sha256: None,
                sparse: false,
                link: None,
            };
            p.push(l, &record).unwrap();
        }
        p.finish().unwrap()
    }

    #[test]
    fn text_starts_with_drp_block_exactly() {
        let mut out = Vec::new();
        sample()
            .write_text(&paths(&["./", "./etc/"]), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        let want = "Image Builder created image information: \n\
--------------------------------------------------------------------------------\n        filename:  debian-12-rootfs-20190827-184435-cf99cd80eb.tgz\n           ident:  cf99cd80eb\n            date:  Tue Aug 27 18:44:35 UTC 2019\n            size:  517036600\n          md5sum:  1f40ac1bac2eb3ea99cebc38b807c15f\n  upload tarball:  images/debian-12-rootfs-20190827-184435-cf99cd80eb.tgz\n upload manifest:  images/debian-12-MANIFEST-20190827-184435-cf99cd80eb.txt\n       sha256sum:  ";
        assert!(text.starts_with(want), "{text}");
        assert!(text.contains("\nbash 5.2 amd64\n"), "{text}");
        assert!(text.ends_with("--------------------------------------------------------------------------------\n./\n./etc/\n"), "{text}");
    }

    #[test]
    fn json_streams_paths_twice() {
        let p = paths(&["./", "./caf\\351"]);
        for _ in 0..2 {
            let mut out = Vec::new();
            sample().write_json(&p, &mut out).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["paths"], serde_json::json!(["./", "./caf\\351"]));
            assert_eq!(v["md5"], "1f40ac1bac2eb3ea99cebc38b807c15f");
            assert_eq!(v["size"], 517_036_600);
            assert_eq!(v["source"]["os"]["id"], "debian");
            assert_eq!(v["manifest_version"], 1);
        }
    }
}
