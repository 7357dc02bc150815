//! Arguments → a validated configuration, one per command.
//!
//! Sits between the command line and the commands (flags → config → run,
//! as ripgrep does): every check that can fail before any work starts
//! happens here — a root that is a directory (and, for an in-place scrub,
//! not the booted system), templates that expand to usable names, patterns
//! that compile, included mounts that are mounts, a MANIFEST that names
//! files next to it — and every name is resolved once. A command only sees
//! its [`Config`]. Nothing here writes, except creating a missing output
//! directory; every failure is a usage error (exit status 2).

use crate::cli::{
    ApplyArgs, CaptureArgs, Cli, Command, ConnArgs, DeployerArg, FormatArg, ProfileArgs, ScrubArgs,
    ScrubCmdArgs, TokenArgs, UploadArgs, UploadCmdArgs, VerifyArgs,
};
use crate::entry::{Candidate, Decide, Decision, FileKind, MountKind};
use crate::entry::{SynthKind, Synthetic};
use crate::output::compress::{Format, MAX_DEFAULT_THREADS};
use crate::output::manifest::read::{Summary, read_json};
use crate::output::naming::{self, Vars};
use crate::prepare::firstboot::{self, Hostname};
use crate::prepare::hooks::{self, Hook};
use crate::prepare::inject::{self, Injected};
use crate::report::error::{Error, Result};
use crate::report::escape::escape;
use crate::select::policy::{DEFAULT_INCLUDE_MOUNTS, Excludes, Policy};
use crate::select::scrub::{Catalogue, Plan, PlanOptions};
use crate::source::facts::{self, OsRelease};
use crate::source::mounts::MountTable;
use crate::source::rootfs::RootFs;
use crate::upload::{Files, Options, Target};
use crate::util::io_reason;
use anyhow::Context as _;
use chrono::{DateTime, SubsecRound, Utc};
use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a command runs with.
pub enum Config {
    Capture(Box<CaptureConfig>),
    Scrub(ScrubConfig),
    Verify(VerifyConfig),
    Apply(ApplyConfig),
    Upload(Box<UploadConfig>),
    Token(TokenConfig),
    Profile(Box<ProfileConfig>),
    /// `goldcap man`: the directory to write the pages into.
    Man(PathBuf),
    /// `goldcap inspect TARGET [--list]`.
    Inspect {
        target: PathBuf,
        list: bool,
        json: bool,
    },
    /// `goldcap diff A B`.
    Diff {
        a: PathBuf,
        b: PathBuf,
        json: bool,
    },
    /// `goldcap completions SHELL`.
    Completions(clap_complete::Shell),
}

impl Config {
    /// Validates the command line.
    pub fn from_cli(cli: &Cli) -> Result<Config> {
        if cli.verbose > 1 {
            return Err(Error::usage(
                "-v given more than once: goldcap has one level of detail (-v)",
            ));
        }
        Ok(match &cli.command {
            Command::Capture(a) => Config::Capture(Box::new(CaptureConfig::from_args(a)?)),
            Command::Scrub(a) => Config::Scrub(ScrubConfig::from_args(a)?),
            Command::Verify(a) => Config::Verify(VerifyConfig::from_args(a)?),
            Command::Apply(a) => Config::Apply(ApplyConfig::from_args(a)?),
            Command::Upload(a) => Config::Upload(Box::new(UploadConfig::from_args(a)?)),
            Command::Token(a) => Config::Token(TokenConfig::from_args(a)?),
            Command::Profile(a) => Config::Profile(Box::new(ProfileConfig::from_args(a)?)),
            Command::Man { output_dir } => Config::Man(output_dir.clone()),
            Command::Completions { shell } => Config::Completions(*shell),
            Command::Inspect(a) => Config::Inspect {
                target: a.target.clone(),
                list: a.list,
                json: a.json,
            },
            Command::Diff(a) => Config::Diff {
                a: a.a.clone(),
                b: a.b.clone(),
                json: a.json,
            },
        })
    }
}

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
    pub format: Format,
    pub level: i32,
    /// Compression worker threads (gzip and zstd); the output does not
    /// depend on it.
    pub threads: u32,
    pub ident: String,
    /// Capture date (whole seconds, UTC).
    pub date: DateTime<Utc>,
    /// The root's os-release, if any.
    pub os_release: Option<OsRelease>,
    /// `{os}`.
    pub os_tag: Option<String>,
    pub names: Names,
    /// What to keep (with the identity-scrub plan).
    pub policy: Policy,
    /// The mount table, when `/proc` is readable.
    pub mounts: Option<MountTable>,
    /// Root-relative mount points crossed.
    pub include_mounts: Vec<Vec<u8>>,
    /// Replace existing files.
    pub force: bool,
    /// Captured without the privilege to read every file
    /// (`--allow-unreadable`).
    pub unprivileged: bool,
    pub upload: Option<(Target, Options)>,
    /// Keep a local copy when streaming to the upload target.
    pub keep_local: bool,
    /// Print one JSON object on stdout.
    pub json: bool,
    /// Hooks to run in the root before it is read, in order.
    pub hooks: Vec<Hook>,
    /// What `--inject`, `--firstboot` and `--hostname` add to the archive.
    pub added: Additions,
    /// How the scrub plan is made (again, after hooks changed the root).
    pub scrub_args: ScrubArgs,
    /// `--allow-identity`.
    pub allow_identity: bool,
    /// `--dry-run`: report, write nothing.
    pub dry_run: bool,
}

/// The capture's file and upload names, resolved from the templates.
#[derive(Debug, Clone)]
pub struct Names {
    /// Artifact file name (with extension).
    pub artifact: String,
    /// Text MANIFEST file name.
    pub manifest: String,
    /// JSON MANIFEST file name.
    pub manifest_json: String,
    /// Upload name of the artifact (`images/x.tgz`).
    pub upload_tarball: String,
    /// Upload name of the text MANIFEST.
    pub upload_manifest: String,
}

impl CaptureConfig {
    pub fn from_args(args: &CaptureArgs) -> Result<CaptureConfig> {
        let root = root_dir(&args.root)?;
        let unprivileged = privilege_check(&root, args.allow_unreadable)?;
        let live = root == Path::new("/");
        let rootfs = RootFs::new(&root);
        let (format, level) = compression(args.format, args.level)?;
        let threads = args.threads.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1);
            cores.min(MAX_DEFAULT_THREADS)
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
            None => os_release
                .as_ref()
                .and_then(|o| naming::os_tag(&o.id, o.version_id.as_deref())),
        };
        let vars = Vars {
            os: os_tag.as_deref(),
            date: &naming::date_stamp(&date),
            ident: &ident,
        };
        let names = Names::resolve(args, &vars, format)?;
        let added = Additions::from_args(args, &rootfs, date.timestamp())?;
        let excludes = capture_excludes(args)?;
        let mounts = MountTable::load();
        let include_mounts = include_mounts(&args.include_mount, &root, mounts.as_ref())?;
        let plan = scrub_plan(
            &args.scrub,
            &rootfs,
            os_release.as_ref(),
            live,
            false,
            date.timestamp(),
        )?;
        identity_upload_gate(&plan, args.upload.is_some(), args.allow_identity)?;
        let hooks = capture_hooks(args, live)?;
        added.check_against(&plan)?;
        let policy = Policy::new(excludes, include_mounts.clone()).with_scrub(plan);
        // The output directory last: a wrong command line creates nothing.
        let out = prepare_output_dir(
            &args.output_dir,
            &root,
            &policy,
            mounts.as_ref(),
            &names,
            args.dry_run,
        )?;
        let (output_dir, output_id) = (out.path, out.id);
        let policy = policy.with_own_output(out.own);
        Ok(CaptureConfig {
            root,
            live,
            output_dir,
            output_id,
            format,
            level,
            threads,
            ident,
            date,
            os_release,
            os_tag,
            names,
            policy,
            mounts,
            include_mounts,
            force: args.force,
            unprivileged,
            upload: args.upload.clone().map(|t| {
                let opts = Options {
                    force: args.force,
                    ..upload_options(&args.upload_opts)
                };
                (t, opts)
            }),
            keep_local: args.keep_local,
            json: args.json,
            hooks,
            added,
            scrub_args: args.scrub.clone(),
            allow_identity: args.allow_identity,
            dry_run: args.dry_run,
        })
    }

    /// Makes the scrub plan again: hooks may have changed what it found
    /// (an sshd installed, a swap file added).
    pub fn replan(&mut self) -> Result<()> {
        let plan = scrub_plan(
            &self.scrub_args,
            &RootFs::new(&self.root),
            self.os_release.as_ref(),
            self.live,
            false,
            self.date.timestamp(),
        )?;
        identity_upload_gate(&plan, self.upload.is_some(), self.allow_identity)?;
        self.added.check_against(&plan)?;
        self.policy.set_scrub(plan);
        Ok(())
    }
}

/// Refuses a capture that cannot read every file, unless
/// `--allow-unreadable`; whether it is such a capture.
fn privilege_check(root: &Path, allow: bool) -> Result<bool> {
    let unprivileged = !crate::source::fsx::can_read_everything();
    if unprivileged && !allow {
        return Err(Error::usage(format!(
            "cannot capture {}: goldcap is not running as root (nor with CAP_DAC_READ_SEARCH), so \
             files only root may read (/etc/shadow, SSH host keys, /root, private keys) would be \
             missing from the image. Run it as root, or pass --allow-unreadable to capture what \
             this user can read (the MANIFEST and verify will say the image is incomplete)",
            root.display()
        )));
    }
    Ok(unprivileged)
}

/// `--exclude` and `--exclude-from` patterns, and goldcap's own: a
/// template's first-boot scripts and stamp, which `--firstboot` replaces.
fn capture_excludes(args: &CaptureArgs) -> Result<Excludes> {
    let mut exclude = args.exclude.clone();
    for f in &args.exclude_from {
        let text = crate::input::read_to_string(f, 1 << 20).map_err(|e| {
            Error::usage(format!("--exclude-from {}: {}", f.display(), io_reason(&e)))
        })?;
        exclude.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    let mut own = Vec::new();
    if !args.firstboot.is_empty() {
        own.push(format!("/{}", firstboot::SCRIPT_DIR));
        own.push(format!("/{}", firstboot::STAMP));
    }
    Excludes::with_own(&exclude, &own).map_err(|e| Error::usage(e.0))
}

/// `capture --upload` refuses, before anything is read, an image whose
/// plan keeps identity, unless `--allow-identity`.
fn identity_upload_gate(plan: &Plan, upload: bool, allow: bool) -> Result<()> {
    let kept = plan.identity_off();
    if upload && !kept.is_empty() && !allow {
        return Err(Error::usage(format!(
            "--upload: identity would be kept in the image by {}: every clone of it would \
             share it. Capture without switching them off, or pass --allow-identity to \
             upload such an image",
            kept.join(", ")
        )));
    }
    Ok(())
}

/// Entries the user adds to the archive (never to the root).
#[derive(Debug, Clone, Default)]
pub struct Additions {
    /// Synthetic entries, merged into the walk (they replace what the root
    /// has under the same names).
    pub entries: Vec<Synthetic>,
    /// `--inject`, for the MANIFEST.
    pub injected: Vec<Injected>,
    /// `--firstboot` scripts as named in the image.
    pub firstboot: Vec<String>,
    pub hostname: Option<Hostname>,
}

impl Additions {
    fn from_args(args: &CaptureArgs, root: &RootFs, mtime: i64) -> Result<Additions> {
        let (mut entries, injected) =
            inject::read_all(&args.inject).map_err(|e| Error::usage(format!("--inject {e}")))?;
        let systemd = ["/usr/lib/systemd/systemd", "/lib/systemd/systemd"]
            .iter()
            .any(|p| root.exists(p));
        let needs_systemd = |what: &str| {
            Error::usage(format!(
                "{what} needs systemd in the image, and {} has none",
                root.root().display()
            ))
        };
        let mut firstboot_names = Vec::new();
        if !args.firstboot.is_empty() {
            if !systemd {
                return Err(needs_systemd("--firstboot"));
            }
            let fb = firstboot::firstboot_entries(&args.firstboot, mtime)
                .map_err(|e| Error::usage(format!("--firstboot {e}")))?;
            firstboot_names = fb
                .iter()
                .filter(|e| {
                    e.rel
                        .strip_prefix(firstboot::SCRIPT_DIR.as_bytes())
                        .is_some_and(|r| r.starts_with(b"/"))
                })
                .map(|e| crate::report::archive_path(&e.rel))
                .collect();
            entries.extend(fb);
        }
        if let Some(h) = &args.hostname {
            if matches!(h, Hostname::Template(_)) && !systemd {
                return Err(needs_systemd("--hostname with a template"));
            }
            entries.extend(firstboot::hostname_entries(h, mtime));
        }
        let mut seen = BTreeSet::new();
        for e in &entries {
            through_symlink(root.root(), &e.rel)?;
            if !seen.insert(e.rel.clone()) {
                return Err(Error::usage(format!(
                    "{} would be added twice (--inject, --firstboot, --hostname)",
                    crate::report::archive_path(&e.rel)
                )));
            }
        }
        Ok(Additions {
            entries,
            injected,
            firstboot: firstboot_names,
            hostname: args.hostname.clone(),
        })
    }

    /// Refuses additions the scrub would act on: injecting
    /// `/etc/machine-id` or an SSH host key would put identity back.
    pub fn check_against(&self, plan: &Plan) -> Result<()> {
        for e in &self.entries {
            let kind = match e.kind {
                SynthKind::Dir => FileKind::Dir,
                SynthKind::File(_) => FileKind::File,
                SynthKind::Symlink(_) => FileKind::Symlink,
            };
            let ops: Vec<&str> = plan
                .hits(&e.rel, kind)
                .into_iter()
                .filter_map(|i| plan.rules.get(i).and_then(|r| plan.ops.get(r.op)))
                .map(|o| o.id.as_str())
                .collect();
            if plan.synthetic.iter().any(|s| s.rel == e.rel) {
                return Err(Error::usage(format!(
                    "{} is added by the scrub itself (a first-boot guarantee); it cannot be \
                     added again",
                    crate::report::archive_path(&e.rel)
                )));
            }
            if let Some(op) = ops.first()
                && !(e.rel == b"etc/hostname" && self.hostname.is_some())
            {
                return Err(Error::usage(format!(
                    "{} is what the scrub operation {op} removes from the image: adding it \
                     would put identity back (switch the operation off with --operations -{op} \
                     if that is really meant)",
                    crate::report::archive_path(&e.rel)
                )));
            }
        }
        Ok(())
    }
}

/// Refuses an addition below a symlink of the root (`/lib` → `usr/lib`): in
/// the archive it would be a member "through" a symlink, which extraction
/// writes elsewhere and `verify` fails.
fn through_symlink(root: &Path, rel: &[u8]) -> Result<()> {
    let mut end = 0;
    while let Some(i) = rel[end..].iter().position(|&b| b == b'/') {
        end += i;
        let ancestor = &rel[..end];
        end += 1;
        let host = root.join(std::ffi::OsStr::from_bytes(ancestor));
        if std::fs::symlink_metadata(&host).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(Error::usage(format!(
                "{} would be added below {}, a symlink in the image: name the path it \
                 points to instead",
                crate::report::archive_path(rel),
                crate::report::archive_path(ancestor)
            )));
        }
    }
    Ok(())
}

/// `--hook` values expanded; hooks on a live root only with `--live-hooks`.
fn capture_hooks(args: &CaptureArgs, live: bool) -> Result<Vec<Hook>> {
    let mut hooks = Vec::new();
    for h in &args.hook {
        let found = hooks::expand(h)
            .map_err(|why| Error::usage(format!("--hook {}: {why}", h.display())))?;
        hooks.extend(found);
    }
    if live && !hooks.is_empty() && !args.live_hooks {
        return Err(Error::usage(
            "--hook on a live root (/) runs on this running server and changes it: \
             pass --live-hooks to do that (in a chroot, hooks run inside it)",
        ));
    }
    if args.live_hooks && !live {
        return Err(Error::usage(
            "--live-hooks is for a live root (/); in a chroot hooks run inside it",
        ));
    }
    Ok(hooks)
}

impl Names {
    fn resolve(args: &CaptureArgs, vars: &Vars<'_>, format: Format) -> Result<Names> {
        fn bad(opt: &'static str) -> impl Fn(naming::TemplateError) -> Error {
            move |e| Error::usage(format!("{opt}: {e}"))
        }
        let stem = naming::file_stem(&args.rootfs_name, vars).map_err(bad("--rootfs-name"))?;
        let mstem = naming::file_stem(&args.manifest_name, vars).map_err(bad("--manifest-name"))?;
        let upath = naming::upload_path(&args.upload_path, vars).map_err(bad("--upload-path"))?;
        let artifact = format!("{stem}{}", format.extension());
        let manifest = format!("{mstem}.txt");
        if artifact == manifest {
            return Err(Error::usage(
                "--rootfs-name and --manifest-name give the same file name",
            ));
        }
        Ok(Names {
            upload_tarball: naming::upload_name(&upath, &artifact),
            upload_manifest: naming::upload_name(&upath, &manifest),
            artifact,
            manifest,
            manifest_json: format!("{mstem}.json"),
        })
    }
}

/// `--format` and `--level`, checked against each other.
fn compression(format: FormatArg, level: Option<i32>) -> Result<(Format, i32)> {
    let (f, name) = match format {
        FormatArg::Tgz => (Format::Tgz, "tgz"),
        FormatArg::Tzst => (Format::Tzst, "tzst"),
    };
    let level = level.unwrap_or(f.default_level());
    let r = f.levels();
    if !r.contains(&level) {
        return Err(Error::usage(format!(
            "--level {level}: {name} takes {}-{}",
            r.start(),
            r.end()
        )));
    }
    Ok((f, level))
}

/// `--root`, canonical; it must be a directory.
fn root_dir(given: &Path) -> Result<PathBuf> {
    let root = std::fs::canonicalize(given)
        .map_err(|e| Error::usage(format!("--root {}: {}", given.display(), io_reason(&e))))?;
    if !root.is_dir() {
        return Err(Error::usage(format!(
            "--root {}: not a directory",
            given.display()
        )));
    }
    Ok(root)
}

fn excludes(patterns: &[String]) -> Result<Excludes> {
    Excludes::new(patterns).map_err(|e| Error::usage(e.0))
}

fn default_include_mounts() -> Vec<Vec<u8>> {
    DEFAULT_INCLUDE_MOUNTS
        .iter()
        .map(|m| m.as_bytes().to_vec())
        .collect()
}

/// The mount points crossed: the defaults plus `--include-mount`, each of
/// which must be a mount point in the root and not a pseudo filesystem.
fn include_mounts(
    given: &[String],
    root: &Path,
    mounts: Option<&MountTable>,
) -> Result<Vec<Vec<u8>>> {
    let mut include = default_include_mounts();
    for m in given {
        let rel = m.trim_start_matches("./").trim_matches('/').as_bytes();
        let host = root.join(std::ffi::OsStr::from_bytes(rel));
        if rel.is_empty() || !host.is_dir() {
            return Err(Error::usage(format!(
                "--include-mount {m}: no such directory in the root"
            )));
        }
        match mounts.map(|t| t.at(&host)) {
            Some(None) => {
                return Err(Error::usage(format!(
                    "--include-mount {m}: not a mount point (its content is archived anyway)"
                )));
            }
            Some(Some(mt)) if mt.is_pseudo() => {
                return Err(Error::usage(format!(
                    "--include-mount {m}: {} is a pseudo/volatile filesystem and is never archived",
                    mt.fstype
                )));
            }
            _ => {}
        }
        if !include.iter().any(|i| i == rel) {
            include.push(rel.to_vec());
        }
    }
    Ok(include)
}

/// Compiles the identity-scrub plan for a root from `--operations`,
/// `--machine-id` and `--scrub-profile`; `in_place` for `goldcap scrub`,
/// which also cleans what the capture never archives (`/tmp`).
fn scrub_plan(
    args: &ScrubArgs,
    root: &RootFs,
    os: Option<&OsRelease>,
    live: bool,
    in_place: bool,
    mtime: i64,
) -> Result<Plan> {
    let cat = catalogue(args)?;
    let opts = PlanOptions {
        operations: args.operations.clone(),
        machine_id: args.machine_id,
        live,
        mtime,
        in_place,
    };
    Plan::new(&cat, root, os, &opts).map_err(|e| Error::usage(e.0))
}

/// The largest `--scrub-profile` read (the built-in catalogue is 30 KiB).
const PROFILE_LIMIT: u64 = 4 << 20;

/// The built-in catalogue plus `--scrub-profile`.
fn catalogue(args: &ScrubArgs) -> Result<Catalogue> {
    let mut cat = Catalogue::builtin();
    if let Some(p) = &args.scrub_profile {
        let text = crate::input::read_to_string(p, PROFILE_LIMIT).map_err(|e| {
            Error::usage(format!(
                "--scrub-profile {}: {}",
                p.display(),
                io_reason(&e)
            ))
        })?;
        let user =
            Catalogue::parse(&text, &p.display().to_string()).map_err(|e| Error::usage(e.0))?;
        cat.merge(user);
    }
    Ok(cat)
}

/// The output directory, checked.
struct OutputDir {
    /// Canonical path.
    path: PathBuf,
    /// `(st_dev, st_ino)`.
    id: (u64, u64),
    /// goldcap's own files in it, when the walk passes through it.
    own: BTreeSet<Vec<u8>>,
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
    names: &Names,
    dry_run: bool,
) -> Result<OutputDir> {
    if dry_run && !dir.exists() {
        // Nothing is created: the walk cannot meet a directory that is not
        // there.
        return Ok(OutputDir {
            path: std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()),
            id: (0, 0),
            own: BTreeSet::new(),
        });
    }
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the output directory {}", dir.display()))?;
    }
    let out = std::fs::canonicalize(dir)
        .with_context(|| format!("output directory {}", dir.display()))?;
    let st = crate::source::fsx::lstat(&out)
        .with_context(|| format!("output directory {}", dir.display()))?;
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
    let own = match out.strip_prefix(root) {
        Ok(rel) if is_walked(rel.as_os_str().as_bytes(), root, policy, mounts) => {
            own_output(dir, &out, names)?
        }
        _ => BTreeSet::new(),
    };
    Ok(OutputDir {
        path: out,
        id: (st.dev, st.ino),
        own,
    })
}

/// The files in an output directory the walk passes through that goldcap
/// wrote, which it leaves out: its temporaries, this run's names, earlier
/// captures' MANIFESTs (JSON with `tool.name` goldcap, or text with
/// image-builder's header and a goldcap `tool` line) and the files they
/// name. Anything else there is refused (say `-o .` run from `/root`):
/// never captured with a hole in it, never silently left out.
fn own_output(dir: &Path, out: &Path, names: &Names) -> Result<BTreeSet<Vec<u8>>> {
    let listed: Vec<std::ffi::OsString> = std::fs::read_dir(out)
        .with_context(|| format!("cannot list the output directory {}", out.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    let mut own: BTreeSet<Vec<u8>> = [&names.artifact, &names.manifest, &names.manifest_json]
        .into_iter()
        .map(|n| n.as_bytes().to_vec())
        .collect();
    for name in &listed {
        let bytes = name.as_bytes();
        if bytes.starts_with(b".goldcap-") {
            own.insert(bytes.to_vec());
            continue;
        }
        let path = out.join(name);
        if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
            continue;
        }
        if let Some(named) = goldcap_manifest(&path) {
            own.insert(bytes.to_vec());
            own.extend(named.into_iter().map(String::into_bytes));
        }
    }
    let mut others: Vec<String> = listed
        .iter()
        .filter(|n| !own.contains(n.as_bytes()))
        .map(|n| escape(n.as_bytes()))
        .collect();
    if others.is_empty() {
        return Ok(own);
    }
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
    Err(Error::usage(format!(
        "--output-dir {} is inside the captured root and holds other files ({shown}{more}); \
         use an empty or dedicated directory, or one outside the root",
        dir.display()
    )))
}

/// When `path` is a MANIFEST goldcap wrote, the files of its capture it
/// names (the artifact, and the text MANIFEST a JSON one names).
fn goldcap_manifest(path: &Path) -> Option<Vec<String>> {
    use std::io::Read as _;
    let mut head = Vec::new();
    let mut f = crate::input::open(path).ok()?;
    (&mut f).take(4096).read_to_end(&mut head).ok()?;
    let text = String::from_utf8_lossy(&head);
    if text.starts_with("Image Builder created image information: ") {
        let field = |label: &str| {
            text.lines().find_map(|l| {
                l.trim_start()
                    .strip_prefix(label)
                    .map(|v| v.trim().to_owned())
            })
        };
        let tool = field("tool:")?;
        if !tool.starts_with("goldcap ") {
            return None;
        }
        return Some(field("filename:").into_iter().collect());
    }
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let m = read_json(path)
        .ok()
        .filter(|m| m.is_goldcap() && m.check().is_ok())?;
    Some(
        m.filename
            .clone()
            .into_iter()
            .chain(m.text_name().map(str::to_owned))
            .collect(),
    )
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
            kind: FileKind::Dir,
            mount,
            in_output_dir: false,
        };
        if policy.decide(&c) != Decision::Keep {
            return false;
        }
    }
    true
}

/// `goldcap scrub`: list the catalogue, or scrub a root in place.
pub enum ScrubConfig {
    List { catalogue: Catalogue, json: bool },
    InPlace(Box<InPlace>),
}

/// `goldcap scrub --root DIR`.
pub struct InPlace {
    /// Canonical root (a chroot or mounted image, never the booted `/`).
    pub root: PathBuf,
    /// What to walk and how (with the scrub plan).
    pub policy: Policy,
    pub mounts: Option<MountTable>,
    pub dry_run: bool,
    pub json: bool,
}

impl ScrubConfig {
    pub fn from_args(args: &ScrubCmdArgs) -> Result<ScrubConfig> {
        if args.list {
            return Ok(ScrubConfig::List {
                catalogue: catalogue(&args.scrub)?,
                json: args.json,
            });
        }
        // Unwrap expectation: clap requires --list or --root.
        let given = args.root.as_ref().expect("--root");
        let root = root_dir(given)?;
        refuse_booted_root(given, &root)?;
        let rootfs = RootFs::new(&root);
        let os = facts::read_os_release(&rootfs);
        let now = Utc::now().timestamp();
        let plan = scrub_plan(&args.scrub, &rootfs, os.as_ref(), false, true, now)?;
        let policy =
            Policy::new(excludes(&args.exclude)?, default_include_mounts()).with_scrub(plan);
        Ok(ScrubConfig::InPlace(Box::new(InPlace {
            root,
            policy,
            mounts: MountTable::load(),
            dry_run: args.dry_run,
            json: args.json,
        })))
    }
}

/// Refuses to scrub the booted system's own root in place, under any path.
fn refuse_booted_root(given: &Path, root: &Path) -> Result<()> {
    let booted = is_booted_root(root)
        .with_context(|| format!("cannot tell whether {} is the booted root", given.display()))?;
    match booted {
        Ok(false) => Ok(()),
        Ok(true) => Err(Error::usage(format!(
            "--root {}: refusing to scrub the running system in place (it is PID 1's root); \
             `goldcap capture` scrubs in the archive stream without touching it, or run this inside the gold chroot",
            given.display()
        ))),
        Err(why) => Err(Error::usage(format!(
            "--root {}: refusing: cannot tell whether it is the running system ({why})",
            given.display()
        ))),
    }
}

/// Whether `root` is the booted system's own root: `Ok(true)` / `Ok(false)`,
/// or `Err(reason)` when it cannot be told. First PID 1's root
/// (`/proc/1/root`, as systemd's `running_in_chroot()` checks); when that
/// cannot be inspected, a chroot of a plain directory still shows: the
/// kernel hides mounts above the process root, so there is no mount at `/`.
fn is_booted_root(root: &Path) -> std::io::Result<std::result::Result<bool, String>> {
    use std::os::unix::fs::MetadataExt;
    let r = std::fs::metadata(root)?;
    // Our own `/`: a bind mount of it elsewhere is the same directory.
    let own = std::fs::metadata("/")?;
    let is_own_root = (own.dev(), own.ino()) == (r.dev(), r.ino());
    match std::fs::metadata("/proc/1/root") {
        Ok(init) => Ok(Ok((init.dev(), init.ino()) == (r.dev(), r.ino()))),
        Err(_) if !is_own_root => Ok(Ok(false)),
        Err(e) => match MountTable::load() {
            Some(t) if t.at(Path::new("/")).is_none() => Ok(Ok(false)),
            Some(_) => Ok(Err(format!(
                "cannot inspect PID 1 (/proc/1/root: {})",
                io_reason(&e)
            ))),
            None => Ok(Err("/proc is not mounted; mount /proc in the chroot".into())),
        },
    }
}

/// `goldcap verify`.
pub struct VerifyConfig {
    pub artifact: PathBuf,
    /// `--manifest`; otherwise the goldcap MANIFEST next to the artifact.
    pub manifest: Option<PathBuf>,
    pub json: bool,
}

impl VerifyConfig {
    /// A `.json` named without `--manifest` is the MANIFEST: the artifact
    /// is the one it names in its own directory (a plain name, a regular
    /// file, as `upload` takes it).
    fn from_args(args: &VerifyArgs) -> Result<VerifyConfig> {
        let given_manifest =
            args.manifest.is_none() && args.artifact.extension().is_some_and(|e| e == "json");
        let (artifact, manifest) = if given_manifest {
            let files = Files::from_manifest(&args.artifact)?;
            (files.artifact, Some(args.artifact.clone()))
        } else {
            (args.artifact.clone(), args.manifest.clone())
        };
        Ok(VerifyConfig {
            artifact,
            manifest,
            json: args.json,
        })
    }
}

/// `goldcap apply`. The source and target are checked when the command
/// runs: a target is created there.
pub struct ApplyConfig {
    /// The MANIFEST .json or the artifact: a path or an http(s) URL.
    pub source: PathBuf,
    /// `--manifest`.
    pub manifest: Option<PathBuf>,
    pub target: PathBuf,
    pub force: bool,
    pub json: bool,
    /// TLS and timeout for an http(s) source.
    pub http: Options,
    /// `--hostname`: written to /etc/hostname.
    pub hostname: Option<String>,
    /// `--machine-id`: /etc/machine-id's content.
    pub machine_id: Option<crate::select::scrub::MachineIdMode>,
    /// `--ssh-authorized-key`, read and checked.
    pub ssh_keys: Vec<crate::prepare::machine::SshKeys>,
    /// `--nocloud`: the seed's files (name, content, mode in the target).
    pub nocloud: Option<Vec<crate::prepare::machine::SeedFile>>,
    /// `--hook`, expanded.
    pub hooks: Vec<Hook>,
    /// `--fstab`.
    pub fstab: bool,
    /// `--threads`: decompression threads (`None`: all cores, at most 4).
    pub threads: Option<usize>,
}

impl ApplyConfig {
    fn from_args(args: &ApplyArgs) -> Result<ApplyConfig> {
        let hostname = match &args.hostname {
            None => None,
            Some(Hostname::Literal(h)) => Some(h.clone()),
            Some(Hostname::Template(t)) => {
                return Err(Error::usage(format!(
                    "--hostname {t}: apply writes a literal name (templates are for capture's first boot)"
                )));
            }
        };
        let ssh_keys = args
            .ssh_authorized_key
            .iter()
            .map(|k| crate::prepare::machine::ssh_keys(k))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|why| Error::usage(format!("--ssh-authorized-key {why}")))?;
        let nocloud = match &args.nocloud {
            Some(d) => Some(
                crate::prepare::machine::nocloud(d)
                    .map_err(|why| Error::usage(format!("--nocloud {why}")))?,
            ),
            None => None,
        };
        let mut hooks = Vec::new();
        for h in &args.hook {
            let found = hooks::expand(h)
                .map_err(|why| Error::usage(format!("--hook {}: {why}", h.display())))?;
            hooks.extend(found);
        }
        Ok(ApplyConfig {
            ssh_keys,
            nocloud,
            hooks,
            fstab: args.fstab,
            threads: args.threads.map(|n| n as usize),
            hostname,
            machine_id: args.machine_id,
            source: args.source.clone(),
            manifest: args.manifest.clone(),
            target: args.target.clone(),
            force: args.force,
            json: args.json,
            http: Options {
                token_file: args.token_file.clone(),
                ca_cert: args.ca_cert.clone(),
                insecure: args.insecure,
                timeout: Duration::from_secs(args.timeout),
                ..Options::default()
            },
        })
    }
}

/// Upload options from their flags.
pub fn upload_options(args: &UploadArgs) -> Options {
    Options {
        part_size: args.s3.part_size.map(|m| m << 20),
        presign_get: args.s3.presign_get.map(Duration::from_secs),
        ..connection_options(&args.conn)
    }
}

/// Connection options from their flags (no S3 options).
pub fn connection_options(args: &ConnArgs) -> Options {
    Options {
        token_file: args.token_file.clone(),
        ca_cert: args.ca_cert.clone(),
        insecure: args.insecure,
        timeout: Duration::from_secs(args.timeout),
        attempts: args.attempts,
        part_size: None,
        presign_get: None,
        force: false,
    }
}

/// `goldcap upload`: a finished capture, named by its JSON MANIFEST.
pub struct UploadConfig {
    pub files: Files,
    pub target: Target,
    pub opts: Options,
    pub json: bool,
}

/// The identity gate of `goldcap upload`: an image whose MANIFEST shows
/// identity kept (or does not say) is refused unless `--allow-identity`.
fn identity_gate(files: &Files, manifest: &Path, allow: bool) -> Result<()> {
    let why = match files.identity_off.as_deref() {
        Some([]) => return Ok(()),
        _ if allow => return Ok(()),
        Some(off) => format!(
            "it shows identity kept in the image by {}: every clone of it shares it",
            off.iter()
                .map(|o| crate::input::clip(o, 60))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => "it does not record what the identity scrub did (an older or foreign MANIFEST)"
            .to_owned(),
    };
    Err(Error::usage(format!(
        "{}: {why}; nothing was sent (--allow-identity uploads it anyway)",
        manifest.display()
    )))
}

impl UploadConfig {
    fn from_args(args: &UploadCmdArgs) -> Result<UploadConfig> {
        let files = Files::from_manifest(&args.manifest)?;
        identity_gate(&files, &args.manifest, args.allow_identity)?;
        Ok(UploadConfig {
            files,
            target: args.to.clone(),
            opts: Options {
                force: args.force,
                ..upload_options(&args.upload)
            },
            json: args.json,
        })
    }
}

/// `goldcap token`.
pub struct TokenConfig {
    pub json: bool,
    pub user: String,
    pub ttl: u64,
    /// Files paths the token may post and get (at least one).
    pub paths: Vec<String>,
    pub endpoint: Option<String>,
    pub opts: Options,
}

impl TokenConfig {
    fn from_args(args: &TokenArgs) -> Result<TokenConfig> {
        let paths: Vec<String> = args
            .paths
            .iter()
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect();
        if paths.is_empty() {
            return Err(Error::usage(
                "--paths: give at least one files path, e.g. images/debian-12-rootfs-20261122-101500-cf99cd80eb.tgz",
            ));
        }
        Ok(TokenConfig {
            json: args.json,
            user: args.user.clone(),
            ttl: args.ttl,
            paths,
            endpoint: args.endpoint.clone(),
            opts: connection_options(&args.conn),
        })
    }
}

/// `goldcap profile`.
pub struct ProfileConfig {
    /// The JSON MANIFEST, for messages.
    pub manifest_path: PathBuf,
    /// What it says.
    pub manifest: Summary,
    pub endpoint: Option<String>,
    /// Where to write the profile (stdout when `None`).
    pub output: Option<PathBuf>,
    /// image-deploy or Eikon.
    pub deployer: DeployerArg,
    /// JSON instead of YAML.
    pub json: bool,
}

impl ProfileConfig {
    fn from_args(args: &ProfileArgs) -> Result<ProfileConfig> {
        let path = &args.manifest;
        let manifest =
            read_json(path).map_err(|why| Error::usage(format!("{}: {why}", path.display())))?;
        Ok(ProfileConfig {
            manifest_path: path.clone(),
            manifest,
            endpoint: args.image_base.clone(),
            output: args.output.clone(),
            deployer: args.deployer,
            json: args.json,
        })
    }
}
