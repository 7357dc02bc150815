//! Arguments → a validated capture configuration.
//!
//! Sits between the command line and the pipeline: every check that can
//! fail before any work starts happens here (root is a directory, templates
//! expand to usable names, patterns compile, included mounts are mounts),
//! and every name is resolved once. The pipeline only sees
//! [`CaptureConfig`]. Nothing here writes, except creating a missing output
//! directory.

use crate::cli::{CaptureArgs, FormatArg, ScrubArgs};
use crate::error::{Error, Result};
use crate::facts::{self, OsRelease};
use crate::mounts::MountTable;
use crate::naming::{self, Vars};
use crate::policy::{Candidate, DEFAULT_INCLUDE_MOUNTS, Decision, Excludes, MountKind, Policy};
use crate::rootfs::RootFs;
use crate::scrub::{Catalogue, Plan, PlanOptions};
use crate::sink::Format;
use anyhow::Context as _;
use chrono::{DateTime, SubsecRound, Utc};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Everything a capture needs, checked.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// Canonical root.
    pub root: PathBuf,
    /// The root is the running system's `/`.
    pub live: bool,
    /// Canonical output directory.
    pub output_dir: PathBuf,
    /// Its `(st_dev, st_ino)`: how the walk recognises it, whatever path
    /// (bind mount, symlink) leads there.
    pub output_id: (u64, u64),
    /// Compression.
    pub format: Format,
    /// Compression level.
    pub level: i32,
    /// Compression worker threads (gzip and zstd); the output does not
    /// depend on it.
    pub threads: u32,
    /// Image ident.
    pub ident: String,
    /// Capture date (whole seconds, UTC).
    pub date: DateTime<Utc>,
    /// The root's os-release, if any.
    pub os_release: Option<OsRelease>,
    /// `{os}`.
    pub os_tag: Option<String>,
    /// Artifact file name (with extension).
    pub artifact_name: String,
    /// Text manifest file name.
    pub manifest_name: String,
    /// JSON manifest file name.
    pub manifest_json_name: String,
    /// Upload name of the artifact.
    pub upload_tarball: String,
    /// Upload name of the text manifest.
    pub upload_manifest: String,
    /// What to keep.
    pub policy: Policy,
    /// The mount table, when `/proc` is readable.
    pub mounts: Option<MountTable>,
    /// Root-relative mount points crossed.
    pub include_mounts: Vec<Vec<u8>>,
    /// Replace existing files.
    pub force: bool,
    /// Upload target and options.
    pub upload: Option<(crate::upload::Target, crate::upload::Options)>,
    /// Keep a local copy when streaming to the upload target.
    pub keep_local: bool,
}

fn rel_bytes(p: &str) -> Vec<u8> {
    let t = p.trim_start_matches("./").trim_matches('/');
    t.as_bytes().to_vec()
}

impl CaptureConfig {
    /// Validates `args`.
    pub fn from_args(args: &CaptureArgs) -> Result<CaptureConfig> {
        let root = std::fs::canonicalize(&args.root).map_err(|e| {
            Error::usage(format!(
                "--root {}: {}",
                args.root.display(),
                crate::util::io_reason(&e)
            ))
        })?;
        if !root.is_dir() {
            return Err(Error::usage(format!(
                "--root {}: not a directory",
                args.root.display()
            )));
        }
        let live = root == Path::new("/");
        let rootfs = RootFs::new(&root);

        let format = match args.format {
            FormatArg::Tgz => Format::Tgz,
            FormatArg::Tzst => Format::Tzst,
        };
        let level = args.level.unwrap_or(format.default_level());
        if !format.levels().contains(&level) {
            let r = format.levels();
            return Err(Error::usage(format!(
                "--level {level}: {} takes {}-{}",
                args.format.to_possible_value_name(),
                r.start(),
                r.end()
            )));
        }
        let threads = args.threads.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1);
            cores.min(crate::sink::MAX_DEFAULT_THREADS)
        });
        let ident = match &args.ident {
            Some(i) => i.clone(),
            None => naming::random_ident().context("cannot get random bytes for the ident")?,
        };
        let date = args.date.unwrap_or_else(Utc::now).trunc_subsecs(0);
        let os_release = facts::read_os_release(&rootfs);
        let os_tag = match &args.os {
            Some(os) => Some(
                naming::sanitize_tag(os)
                    .ok_or_else(|| Error::usage(format!("--os {os:?} is not a usable name")))?,
            ),
            None => os_release.as_ref().and_then(OsRelease::tag),
        };
        let stamp = naming::date_stamp(&date);
        let vars = Vars {
            os: os_tag.as_deref(),
            date: &stamp,
            ident: &ident,
        };
        fn bad(opt: &'static str) -> impl Fn(naming::TemplateError) -> Error {
            move |e| Error::usage(format!("{opt}: {e}"))
        }
        let stem = naming::file_stem(&args.rootfs_name, &vars).map_err(bad("--rootfs-name"))?;
        let mstem =
            naming::file_stem(&args.manifest_name, &vars).map_err(bad("--manifest-name"))?;
        let upath = naming::upload_path(&args.upload_path, &vars).map_err(bad("--upload-path"))?;
        let artifact_name = format!("{stem}{}", format.extension());
        let manifest_name = format!("{mstem}.txt");
        if artifact_name == manifest_name {
            return Err(Error::usage(
                "--rootfs-name and --manifest-name give the same file name",
            ));
        }

        let excludes = Excludes::new(&args.exclude).map_err(|e| Error::usage(e.0))?;
        let mounts = MountTable::load();
        let mut include_mounts: Vec<Vec<u8>> = DEFAULT_INCLUDE_MOUNTS
            .iter()
            .map(|m| m.as_bytes().to_vec())
            .collect();
        for m in &args.include_mount {
            let rel = rel_bytes(m);
            let host = root.join(std::ffi::OsStr::from_bytes(&rel));
            if rel.is_empty() || !host.is_dir() {
                return Err(Error::usage(format!(
                    "--include-mount {m}: no such directory in the root"
                )));
            }
            if let Some(table) = &mounts {
                match table.at(&host) {
                    None => {
                        return Err(Error::usage(format!(
                            "--include-mount {m}: not a mount point (its content is archived anyway)"
                        )));
                    }
                    Some(mt) if mt.is_pseudo() => {
                        return Err(Error::usage(format!(
                            "--include-mount {m}: {} is a pseudo/volatile filesystem and is never archived",
                            mt.fstype
                        )));
                    }
                    Some(_) => {}
                }
            }
            if !include_mounts.contains(&rel) {
                include_mounts.push(rel);
            }
        }
        let plan = scrub_plan(
            &args.scrub,
            &rootfs,
            os_release.as_ref(),
            live,
            date.timestamp(),
        )?;
        let policy = Policy::new(excludes, include_mounts.clone()).with_scrub(plan);
        // The output directory last: a wrong command line creates nothing.
        let (output_dir, output_id) =
            prepare_output_dir(&args.output_dir, &root, &policy, mounts.as_ref())?;

        Ok(CaptureConfig {
            root,
            live,
            output_dir,
            output_id,
            format,
            level,
            threads,
            upload_tarball: naming::upload_name(&upath, &artifact_name),
            upload_manifest: naming::upload_name(&upath, &manifest_name),
            artifact_name,
            manifest_name,
            manifest_json_name: format!("{mstem}.json"),
            ident,
            date,
            os_release,
            os_tag,
            policy,
            mounts,
            include_mounts,
            force: args.force,
            upload: args.upload.clone().map(|t| (t, args.upload_opts.options())),
            keep_local: args.keep_local,
        })
    }
}

/// Compiles the identity-scrub plan for a root from `--operations`,
/// `--machine-id` and `--scrub-profile`.
pub fn scrub_plan(
    args: &ScrubArgs,
    root: &RootFs,
    os: Option<&OsRelease>,
    live: bool,
    mtime: i64,
) -> Result<Plan> {
    let cat = catalogue(args)?;
    let opts = PlanOptions {
        operations: args.operations.clone(),
        machine_id: args.machine_id,
        live,
        mtime,
    };
    Plan::new(&cat, root, os, &opts).map_err(|e| Error::usage(e.0))
}

/// The built-in catalogue plus `--scrub-profile`.
pub fn catalogue(args: &ScrubArgs) -> Result<Catalogue> {
    let mut cat = Catalogue::builtin();
    if let Some(p) = &args.scrub_profile {
        let text = std::fs::read_to_string(p).map_err(|e| {
            Error::usage(format!(
                "--scrub-profile {}: {}",
                p.display(),
                crate::util::io_reason(&e)
            ))
        })?;
        let user =
            Catalogue::parse(&text, &p.display().to_string()).map_err(|e| Error::usage(e.0))?;
        cat.merge(user);
    }
    Ok(cat)
}

/// Creates the output directory if needed and checks it. Inside the root,
/// its content is archived except goldcap's own files; a directory holding
/// anything else (say `-o .` run from `/root`) is refused rather than
/// silently captured with holes or with old images inside.
fn prepare_output_dir(
    dir: &Path,
    root: &Path,
    policy: &Policy,
    mounts: Option<&MountTable>,
) -> Result<(PathBuf, (u64, u64))> {
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the output directory {}", dir.display()))?;
    }
    let out = std::fs::canonicalize(dir)
        .with_context(|| format!("output directory {}", dir.display()))?;
    let st =
        crate::fsx::lstat(&out).with_context(|| format!("output directory {}", dir.display()))?;
    if !st.is_dir() {
        return Err(Error::usage(format!(
            "--output-dir {}: not a directory",
            dir.display()
        )));
    }
    if out == root {
        return Err(Error::usage(format!(
            "--output-dir {} is the root being captured; choose a directory outside it or below it",
            dir.display()
        )));
    }
    if let Ok(rel) = out.strip_prefix(root)
        && is_walked(rel.as_os_str().as_bytes(), root, policy, mounts)
    {
        let mut others: Vec<String> = std::fs::read_dir(&out)
            .with_context(|| format!("cannot list the output directory {}", out.display()))?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .filter(|n| !crate::policy::is_goldcap_output(n.as_bytes()))
            .map(|n| crate::escape::escape(n.as_bytes()))
            .collect();
        if !others.is_empty() {
            others.sort();
            let shown = others
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            let more = if others.len() > 5 {
                format!(" and {} more", others.len() - 5)
            } else {
                String::new()
            };
            return Err(Error::usage(format!(
                "--output-dir {} is inside the captured root and holds other files ({shown}{more}); \
                 use an empty or dedicated directory, or one outside the root",
                dir.display()
            )));
        }
    }
    Ok((out, (st.dev, st.ino)))
}

/// Whether the walk would descend into `rel` (every ancestor kept).
fn is_walked(rel: &[u8], root: &Path, policy: &Policy, mounts: Option<&MountTable>) -> bool {
    let root_storage = mounts.and_then(|t| t.containing(root));
    let mut prefix = Vec::new();
    for part in rel.split(|&b| b == b'/') {
        if !prefix.is_empty() {
            prefix.push(b'/');
        }
        prefix.extend_from_slice(part);
        let host = root.join(std::ffi::OsStr::from_bytes(&prefix));
        let mount = mounts.and_then(|t| t.at(&host)).map(|m| MountKind {
            fstype: &m.fstype,
            pseudo: m.is_pseudo(),
            same_storage: root_storage.is_some_and(|r| m.same_storage(r)),
        });
        let c = Candidate {
            rel: &prefix,
            kind: crate::fsx::Kind::Dir,
            mount,
            in_output_dir: false,
        };
        if policy.decide(&c) != Decision::Keep {
            return false;
        }
    }
    true
}

trait PossibleName {
    fn to_possible_value_name(&self) -> String;
}

impl PossibleName for FormatArg {
    fn to_possible_value_name(&self) -> String {
        use clap::ValueEnum;
        self.to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default()
    }
}
