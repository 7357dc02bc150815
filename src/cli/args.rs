//! The command line, as clap definitions and nothing else.
//!
//! Sits in front of everything: `main` parses a [`Cli`], [`crate::cli::config`]
//! turns its arguments into a validated configuration, and only that
//! reaches the pipeline. Value parsers here reject malformed values (ident,
//! date) so clap reports them with exit status 2. This module must never do
//! I/O; the man pages in `man/` are generated from it (`goldcap man`).

use crate::output::naming;
use crate::prepare::firstboot::{Hostname, parse_hostname};
use crate::prepare::inject::{InjectSpec, parse as parse_inject};
use crate::select::scrub::MachineIdMode;
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// goldcap: turn a Linux system into a deployable gold image.
#[derive(Debug, Parser)]
#[command(
    name = "goldcap",
    version,
    about = "Turn a Linux system into a deployable gold image",
    long_about = "goldcap captures a live root (/) or a chroot directory into one full-fidelity, \
                  curtin-ready tar archive with a MANIFEST, named for upload to Digital Rebar \
                  Provision, MAAS/curtin or Eikon.",
    propagate_version = true
)]
pub struct Cli {
    /// Print only errors (no progress, warnings or summary).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print more detail (every directory left out, each mount decision).
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Capture a root into a curtin-ready tarball with a MANIFEST.
    #[command(
        long_about = "Capture a root into one tar archive with complete fidelity (numeric owners, modes, \
                  nanosecond mtimes, hardlinks, devices, sparse files, xattrs, file capabilities, \
                  SELinux labels, POSIX ACLs), with a top-level curtin/ directory, plus a MANIFEST \
                  (.txt and .json). The source is only read. Other filesystems are not crossed \
                  except /boot and /boot/efi and those named by --include-mount; the content of \
                  /proc /sys /dev /run /tmp /var/tmp is never archived, their directories are. \
                  Files are written under hidden temporary names and renamed when complete, the \
                  artifact last."
    )]
    Capture(Box<CaptureArgs>),
    /// Scrub machine identity in place in a chroot or mounted image, or list
    /// the catalogue.
    #[command(
        long_about = "Apply the identity-scrub operations in place to a gold root (a chroot or a mounted \
                      image), or list them. `goldcap capture` applies the same operations in the archive \
                      stream without touching the source; use this for gold builds, e.g. inside DRP \
                      image-builder's chroot with --root /. The booted system's own / is refused. Every \
                      action is listed per item (operation, path, action, bytes removed).",
        group(clap::ArgGroup::new("what").required(true).args(["list", "root"]))
    )]
    Scrub(Box<ScrubCmdArgs>),
    /// Check an artifact: checksums against its MANIFEST, curtin/ present,
    /// and that no machine identity leaked into it.
    #[command(
        long_about = "Read an artifact back and check it: size, md5 and sha256 against its MANIFEST \
                      (found next to it unless --manifest is given), a top-level curtin/ directory, \
                      and the identity invariants: /etc/machine-id empty or 'uninitialized', the D-Bus \
                      machine id not a regular file with an id, no ssh_host_* keys unless a regenerator \
                      is present, no random seed or credential.secret, no MAC-pinned network \
                      configuration, no DHCP leases; and what extracting it would do: members named \
                      ../x or /x, members below an archived symlink, hard links to nothing earlier or \
                      outside, a missing end-of-archive, compression its name contradicts. PAX and GNU \
                      long-name headers over 16 MiB are refused. Every failure is listed; exit status 4 \
                      if any."
    )]
    Verify(Box<VerifyArgs>),
    /// Lay an artifact onto a target directory, checked against its
    /// MANIFEST as it streams.
    #[command(
        long_about = "Extract an artifact into a target directory with the fidelity of capture (numeric \
                      owners, modes with setuid, nanosecond mtimes, hardlinks, devices, FIFOs, sparse \
                      files with holes, xattrs including file capabilities and SELinux labels, POSIX \
                      ACLs, long and non-UTF-8 names). SOURCE is the MANIFEST .json (the artifact is \
                      the file it names, next to it) or the artifact (its MANIFEST is --manifest, or \
                      the goldcap JSON next to it that names it, if any; for a remote artifact, the \
                      text MANIFEST upload put beside it), each a file, an http(s) URL, drp:PATH or \
                      s3://BUCKET/KEY (streamed, nothing stored). The artifact is read once: its size, md5 and \
                      sha256 are checked against the MANIFEST as it is decompressed (gzip or zstd, by \
                      content) and extracted; without a MANIFEST nothing is verified, and stderr and \
                      the summary say so. Every entry is written beneath the target without following \
                      a symlink there: names that are absolute or hold '..', entries below a symlink, \
                      and hard links to anything not extracted earlier are refused and listed. \
                      TARGET/.goldcap-apply-incomplete exists from before the first entry until the \
                      run succeeded; a failed run leaves it, saying why. Then, for this machine: \
                      --hostname, --ssh-authorized-key (USER looked up in the target's /etc/passwd), \
                      --nocloud, --machine-id and --fstab are written beneath the target without following a \
                      symlink there; each --hook runs chrooted into the target; last, the apply \
                      report TARGET/var/log/goldcap-apply.json. Exit status 4: the artifact \
                      does not match its MANIFEST, is unreadable, or entries (or this machine's \
                      files) were refused; 3: metadata that could not be set (listed); 1: a hook \
                      failed."
    )]
    Apply(Box<ApplyArgs>),
    /// Upload a finished capture (artifact and MANIFEST) and verify it.
    #[command(
        long_about = "Upload a capture's artifact and MANIFEST, named by its JSON MANIFEST, to a Digital Rebar \
                      Provision endpoint (drp or drp:URL: POST /api/v3/files, then HEAD and compare \
                      X-DRP-SHA256SUM), to S3 or an S3-compatible store (s3://BUCKET/PREFIX: multipart, \
                      part ETags and final size checked, aborted on failure), or to two presigned PUT URLs \
                      (put:URL,URL or put:@FILE). The local artifact is checked against its MANIFEST \
                      before a byte is sent, and hashed again as it is sent. A name the target already \
                      holds with the MANIFEST's sha256 is not sent again; other content there is \
                      replaced only with --force. Credentials come from the environment (RS_TOKEN, RS_KEY, AWS_*) or \
                      --token-file, never from the command line."
    )]
    Upload(Box<UploadCmdArgs>),
    /// Ask a DRP endpoint for a token that can upload given files and
    /// nothing else.
    #[command(
        long_about = "Mint a DRP token for USER limited to scope files, actions post and get, on exactly the \
                      given paths (as DRP matches claims), for TTL seconds, and print only the token. Hand it \
                      to a brownfield server as RS_TOKEN or --token-file: it can upload its image and manifest \
                      and read them back, nothing else. Authenticates with RS_KEY=user:pass, RS_TOKEN or \
                      --token-file."
    )]
    Token(Box<TokenArgs>),
    /// Write the DRP image-deploy (or Eikon) profile for a capture.
    #[command(
        long_about = "Write the Digital Rebar Provision profile that deploys a capture with image-deploy, \
                      as in the image-builder documentation: image-deploy/image-os linux, image-type tgz, \
                      image-url {{.ProvisionerURL}}/files/<upload path> (or --image-base: a base URL or a \
                      full, e.g. presigned, URL), and kexec-ok only when the captured kernel has \
                      CONFIG_KEXEC and kexec-tools is installed. A .tar.zst capture is refused for \
                      image-deploy (its curtin only streams gzip, bzip2 and xz); --deployer eikon writes \
                      RackN Eikon's profile instead (eikon/image-type tar-zst or tgz, eikon/image-url)."
    )]
    Profile(Box<ProfileArgs>),
    /// Show what a capture holds: its MANIFEST's summary, and with --list
    /// its entries.
    #[command(
        long_about = "Show a capture's MANIFEST summary (OS, kernels, boot modes, packages, scrub, \
                      warnings) and, with --list, the archive's entries as tar -tv does (type and mode, \
                      owner, size, name, link target), read by goldcap's own reader: decompressed as it \
                      streams, metadata headers bounded, nothing extracted."
    )]
    Inspect(Box<InspectArgs>),
    /// Compare two captures: packages and paths added, removed, changed.
    #[command(
        long_about = "Compare two captures (artifacts or their JSON MANIFESTs): packages added, removed \
                      and upgraded (from the MANIFESTs), and entries added, removed or changed in type, \
                      mode, owner, size, link target or content (a sha256 of each member, computed as \
                      the two archives stream). Exit status 0 when they are the same, 1 when they \
                      differ, as diff(1)."
    )]
    Diff(Box<DiffArgs>),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(long_about = "Print the completion script for SHELL on stdout, e.g. \
                      goldcap completions bash > /usr/share/bash-completion/completions/goldcap")]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (goldcap.1, goldcap-COMMAND.1) into a directory.
    #[command(hide = true)]
    Man {
        /// Directory to write the pages into.
        #[arg(long, default_value = "man")]
        output_dir: PathBuf,
    },
}

/// Identity-scrub options, shared by `capture` and `scrub`.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Scrub")]
pub struct ScrubArgs {
    /// Scrub operations: defaults (the default), all, none, +ID, -ID, or a
    /// list of ids; comma-separated, repeatable, applied in order. A
    /// selection starting with +ID or -ID changes the defaults; only `none`
    /// switches everything off. virt-sysprep's operation names are accepted
    /// where they mean the same (see `goldcap scrub --list`).
    #[arg(long = "operations", value_name = "SPEC", allow_hyphen_values = true)]
    pub operations: Vec<String>,
    /// What /etc/machine-id becomes: empty (a new id on boot) or
    /// uninitialized (also a systemd first boot: presets and
    /// ConditionFirstBoot units run).
    #[arg(long, value_enum, default_value_t = MachineIdMode::Empty)]
    pub machine_id: MachineIdMode,
    /// A scrub profile (TOML, the format of manifests/scrub/default.toml)
    /// that adds operations or overrides them by id.
    #[arg(long, value_name = "FILE")]
    pub scrub_profile: Option<PathBuf>,
}

/// `goldcap scrub`.
#[derive(Debug, Clone, Args)]
pub struct ScrubCmdArgs {
    /// List the operations (id, category, default, applies to, why).
    #[arg(long)]
    pub list: bool,
    /// Root to scrub in place: a chroot or mounted image (not the booted
    /// system's own /).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Show every path and the action that would be taken; change nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Leave out paths matching a glob (as for capture).
    #[arg(long, value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// Scrub options.
    #[command(flatten)]
    pub scrub: ScrubArgs,
}

/// How goldcap talks to an endpoint, shared by `capture --upload`, `upload`
/// and `token`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Connection")]
pub struct ConnArgs {
    /// DRP token from this file (default: RS_TOKEN, or RS_KEY=user:pass).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Trust this CA certificate (PEM) for TLS.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Do not verify TLS certificates (drpcli's default; not goldcap's).
    #[arg(long)]
    pub insecure: bool,
    /// Seconds without progress before a request is given up (and retried).
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
    /// Attempts per request on connection errors, timeouts and 5xx.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub attempts: u32,
}

/// S3-only upload options, for `capture --upload` and `upload`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "S3")]
pub struct S3Args {
    /// S3 part size in MiB (default: 8, more for very large images).
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(5..=5120))]
    pub part_size: Option<u64>,
    /// Also print a presigned S3 GET URL valid this long (for image-deploy's
    /// unauthenticated image-url).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=604800))]
    pub presign_get: Option<u64>,
}

/// Upload options: the connection and, for S3, the parts and a presigned
/// GET.
#[derive(Debug, Clone, Args)]
pub struct UploadArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(flatten)]
    pub s3: S3Args,
}

/// `goldcap upload`.
#[derive(Debug, Clone, Args)]
pub struct UploadCmdArgs {
    /// The capture's JSON MANIFEST (the artifact and text MANIFEST are next to
    /// it).
    #[arg(value_name = "MANIFEST.json")]
    pub manifest: PathBuf,
    /// drp, drp:URL, s3://BUCKET/PREFIX, put:URL,URL or put:@FILE.
    #[arg(long, value_name = "TARGET", value_parser = crate::upload::TargetParser)]
    pub to: crate::upload::Target,
    /// Print one JSON object describing the upload on stdout.
    #[arg(long)]
    pub json: bool,
    /// Replace objects the target already holds under the same names with
    /// other content. Without it such an upload is refused before a byte is
    /// sent; an object with the MANIFEST's sha256 is kept and not sent again.
    #[arg(long)]
    pub force: bool,
    /// Upload even though the MANIFEST shows identity operations switched
    /// off or failed (an image whose clones share identity), or does not
    /// say.
    #[arg(long)]
    pub allow_identity: bool,
    /// Upload options.
    #[command(flatten)]
    pub upload: UploadArgs,
}

/// `goldcap token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The DRP user the token acts as.
    #[arg(long, value_name = "NAME")]
    pub user: String,
    /// Lifetime in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub ttl: u64,
    /// Files paths it may post and get, comma-separated (e.g.
    /// images/debian-12-rootfs-….tgz,images/debian-12-MANIFEST-….txt);
    /// `*` for any.
    #[arg(long, value_name = "P,…", value_delimiter = ',', required = true)]
    pub paths: Vec<String>,
    /// DRP endpoint (default: RS_ENDPOINT, else https://127.0.0.1:8092).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Connection options.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Print one JSON object (token, user, ttl, paths) on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `goldcap profile`.
#[derive(Debug, Clone, Args)]
pub struct ProfileArgs {
    /// The capture's JSON MANIFEST.
    #[arg(value_name = "MANIFEST.json")]
    pub manifest: PathBuf,
    /// Where the deployer fetches the image: a base URL (below DRP's
    /// /files root the upload path follows, below any other the file
    /// name), {{.ProvisionerURL}}/PATH, or the artifact's full (e.g.
    /// presigned) URL; http(s) only. Default:
    /// {{.ProvisionerURL}}/files/UPLOAD_PATH.
    #[arg(long, value_name = "URL", alias = "endpoint")]
    pub image_base: Option<String>,
    /// Write the profile here instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The deployer the profile is for.
    #[arg(long, value_enum, default_value_t = DeployerArg::ImageDeploy)]
    pub deployer: DeployerArg,
    /// Write the profile as JSON instead of YAML.
    #[arg(long)]
    pub json: bool,
}

/// `goldcap profile --deployer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeployerArg {
    /// DRP image-deploy (curtin): .tgz only.
    ImageDeploy,
    /// RackN Eikon: .tgz (image type tgz) or .tar.zst (image type tar-zst).
    Eikon,
}

/// `goldcap inspect`.
#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// The artifact (.tgz, .tar.zst) or its JSON MANIFEST.
    #[arg(value_name = "ARTIFACT|MANIFEST.json")]
    pub target: PathBuf,
    /// Also list the archive's entries.
    #[arg(long, short)]
    pub list: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `goldcap diff`.
#[derive(Debug, Clone, Args)]
pub struct DiffArgs {
    /// The older capture (artifact or JSON MANIFEST).
    #[arg(value_name = "A")]
    pub a: PathBuf,
    /// The newer capture.
    #[arg(value_name = "B")]
    pub b: PathBuf,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `goldcap verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// The artifact (.tgz or .tar.zst), or its goldcap JSON MANIFEST (the
    /// artifact it names, next to it, is verified against it).
    #[arg(value_name = "ARTIFACT|MANIFEST.json")]
    pub artifact: PathBuf,
    /// Its MANIFEST (.json or .txt); default: the goldcap manifest next to
    /// it that names it.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `goldcap apply`.
#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    /// The MANIFEST .json, or the artifact (.tgz or .tar.zst): a file, an
    /// http(s) URL, drp:PATH (the DRP files API; RS_ENDPOINT, RS_TOKEN or
    /// RS_KEY) or s3://BUCKET/KEY (signed GETs; AWS credentials as upload
    /// finds them). Streamed, never stored.
    #[arg(value_name = "SOURCE")]
    pub source: PathBuf,
    /// The MANIFEST to check the artifact against (goldcap's .json or DRP
    /// image-builder's text); default: for a file, the goldcap MANIFEST
    /// next to it that names it; for a URL, none.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// DRP token from this file for a drp: SOURCE (default: RS_TOKEN, or
    /// RS_KEY=user:pass).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Extra CA certificate(s) (PEM) to trust for an https SOURCE.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Do not verify the TLS certificate of an https SOURCE.
    #[arg(long)]
    pub insecure: bool,
    /// This machine's hostname, written to /etc/hostname once the
    /// artifact is applied and verified (a literal name: templates are for
    /// capture).
    #[arg(long, value_name = "NAME", value_parser = parse_hostname)]
    pub hostname: Option<Hostname>,
    /// Write /etc/machine-id (root, 0444) once the artifact is applied:
    /// empty (a new id at boot) or "uninitialized" (a new id, and systemd's
    /// first-boot units run); default: as the artifact holds it.
    #[arg(long, value_enum, value_name = "MODE")]
    pub machine_id: Option<MachineIdMode>,
    /// Append the OpenSSH public key(s) in FILE to USER's
    /// ~/.ssh/authorized_keys in the target (repeatable; USER default
    /// root): home, uid and gid from the target's /etc/passwd (a missing
    /// home is made, 0700); .ssh 0700 and authorized_keys 0600, owned by
    /// USER; keys already there are not added twice. FILE must hold public
    /// key lines (at most 64 KiB): a private key is refused.
    #[arg(long, value_name = "FILE[:USER]")]
    pub ssh_authorized_key: Vec<String>,
    /// Copy the cloud-init NoCloud seed in DIR (user-data and meta-data,
    /// optional network-config and vendor-data; regular files of at most 4
    /// MiB; other files ignored) to the target's
    /// /var/lib/cloud/seed/nocloud/ (root; user-data and vendor-data 0600,
    /// the others 0644); an optional file the image's seed has and DIR has
    /// not is removed.
    #[arg(long, value_name = "DIR")]
    pub nocloud: Option<PathBuf>,
    /// Write the target's /etc/fstab from what is mounted under it, as
    /// curtin does: TARGET's own mount as / (ext4: errors=remount-ro 0 1),
    /// each block-device filesystem mounted below it at its place (vfat
    /// /boot/efi: umask=0077 0 1), all by UUID=; pseudo filesystems
    /// (tmpfs) and bind mounts of a directory are left out. TARGET must be a
    /// mount point.
    #[arg(long)]
    pub fstab: bool,
    /// Run this hook in the target once the artifact is applied and this
    /// machine's files are written (repeatable, in order): an executable, a
    /// directory of them (run in name order) or builtin:NAME, run chrooted
    /// into the target with /proc, /sys and /dev mounted for it alone; a
    /// failing hook fails the run (exit status 1) and leaves the marker.
    #[arg(long, value_name = "PATH")]
    pub hook: Vec<PathBuf>,
    /// Seconds without progress before an http(s) SOURCE fails.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
    /// The directory to extract into (created if missing).
    #[arg(long, short = 't', value_name = "DIR")]
    pub target: PathBuf,
    /// Decompression threads for goldcap's own artifacts, gzip and zstd
    /// alike (default: all cores, at most 4, which keeps memory under 64
    /// MiB; up to 8; other archives use one). The tree is the same for any
    /// number.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=8))]
    pub threads: Option<u32>,
    /// Apply onto a target that is not empty (what the archive holds
    /// replaces what is there).
    #[arg(long)]
    pub force: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Compression format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// gzip (.tgz): what curtin and DRP image-deploy stream; the default.
    Tgz,
    /// zstd (.tar.zst): for Eikon and local use; curtin cannot stream it.
    Tzst,
}

/// `goldcap capture`.
///
/// The field docs are clap's help text, not rustdoc: brackets in them
/// (`[capture]`, `SRC:DEST[:MODE]`) are what the user types, not links.
#[derive(Debug, Clone, Args)]
#[command(args_override_self = true)]
#[allow(rustdoc::broken_intra_doc_links)]
pub struct CaptureArgs {
    /// Read settings from this TOML file (its [capture] table, keys named
    /// as these options); default: GOLDCAP_CONFIG, else
    /// /etc/goldcap/goldcap.toml when it exists. Options typed here win;
    /// lists add up.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Ignore any config file.
    #[arg(long, conflicts_with = "config")]
    pub no_config: bool,
    /// Print what would be captured, left out, scrubbed, added and
    /// uploaded, with the size to read; read no file, run no hook, write and
    /// send nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Root to capture: / for the running system, or a chroot directory.
    #[arg(help_heading = "Source", long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Where to write the artifact and MANIFEST (created if missing; never
    /// archived into itself).
    #[arg(
        help_heading = "Output",
        short,
        long,
        value_name = "DIR",
        default_value = ".",
        env = "GOLDCAP_OUTPUT_DIR"
    )]
    pub output_dir: PathBuf,
    /// Compression: tgz (gzip, curtin/image-deploy) or tzst (zstd, Eikon).
    #[arg(help_heading = "Output", long, value_enum, default_value_t = FormatArg::Tgz, env = "GOLDCAP_FORMAT")]
    pub format: FormatArg,
    /// Compression level (gzip 1-9, default 6; zstd 1-19, default 3).
    #[arg(help_heading = "Output", long, value_name = "N", env = "GOLDCAP_LEVEL")]
    pub level: Option<i32>,
    /// Compression threads, gzip and zstd alike (default: all cores, at most
    /// 4). The output is the same for any number.
    #[arg(help_heading = "Output", long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256), env = "GOLDCAP_THREADS")]
    pub threads: Option<u32>,
    /// OS name for {os}/$TAG (default: ID-VERSION_ID from the root's
    /// os-release, e.g. debian-12).
    #[arg(help_heading = "Names", long, value_name = "NAME")]
    pub os: Option<String>,
    /// Upload path the names are recorded under (DRP
    /// image-builder/upload-path).
    #[arg(help_heading = "Names", long, value_name = "PATH", default_value = naming::DEFAULT_UPLOAD_PATH, env = "GOLDCAP_UPLOAD_PATH")]
    pub upload_path: String,
    /// Artifact name template: {os} {date} {ident}, or DRP's $TAG $DSTAMP
    /// $RS_IMAGE_IDENT. The extension is added.
    #[arg(help_heading = "Names", long, value_name = "TEMPLATE", default_value = naming::DEFAULT_ROOTFS_TEMPLATE)]
    pub rootfs_name: String,
    /// MANIFEST name template (same placeholders); .txt and .json are added.
    #[arg(help_heading = "Names", long, value_name = "TEMPLATE", default_value = naming::DEFAULT_MANIFEST_TEMPLATE)]
    pub manifest_name: String,
    /// Leave out paths matching a glob relative to the root (repeatable).
    /// `./etc/default/grub` and `/etc/x` are anchored at the root, `*.log`
    /// matches at any depth; `*` does not cross `/`, `**` does. A matching
    /// directory is left out with everything below it.
    #[arg(help_heading = "Source", long, value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// Leave out the patterns listed in FILE, one per line (as --exclude;
    /// blank lines and lines starting with # are skipped).
    #[arg(help_heading = "Source", long, value_name = "FILE")]
    pub exclude_from: Vec<PathBuf>,
    /// Also cross into the filesystem mounted at PATH (inside the root;
    /// repeatable). /boot and /boot/efi are always crossed when they are
    /// mounts; pseudo filesystems (proc, tmpfs, ...) never are.
    #[arg(help_heading = "Source", long, value_name = "PATH")]
    pub include_mount: Vec<String>,
    /// Image ident: 10 hex characters (default: random).
    #[arg(help_heading = "Names", long, value_name = "HEX10", value_parser = naming::parse_ident)]
    pub ident: Option<String>,
    /// Capture date for names and the MANIFEST, RFC 3339 (default: now).
    /// With --ident it makes output byte-identical across runs.
    #[arg(help_heading = "Names", long, value_name = "RFC3339", value_parser = naming::parse_date)]
    pub date: Option<chrono::DateTime<chrono::Utc>>,
    /// Replace existing files with the same names, and with --upload,
    /// objects of the same names on the target.
    #[arg(help_heading = "Output", long)]
    pub force: bool,
    /// Run this hook before the capture reads the root (repeatable): an
    /// executable, a directory whose executables run in name order, or
    /// builtin:NAME (package-cache, policy-rc.d, initramfs). In a chroot a
    /// hook runs inside it, with /proc, /sys and /dev mounted for it alone;
    /// a failing hook stops the capture.
    #[arg(help_heading = "Prepare (hooks, additions)", long, value_name = "PATH")]
    pub hook: Vec<PathBuf>,
    /// Run hooks on a live root (/): they change the running server.
    #[arg(help_heading = "Prepare (hooks, additions)", long)]
    pub live_hooks: bool,
    /// Add a file or directory tree from this host to the archive (never to
    /// the source): SRC:DEST[:MODE[:UID:GID]] (repeatable), e.g.
    /// hooks/curtin-hooks:/curtin/curtin-hooks:0755. Owner 0:0 unless
    /// given; MODE applies to regular files.
    #[arg(help_heading = "Prepare (hooks, additions)", long, value_name = "SRC:DEST", value_parser = parse_inject)]
    pub inject: Vec<InjectSpec>,
    /// Run SCRIPT once on each clone's first boot, after the network is up
    /// (repeatable, in order; systemd images). It starts with #! naming its
    /// interpreter in the image; output goes to the journal.
    #[arg(
        help_heading = "Prepare (hooks, additions)",
        long,
        value_name = "SCRIPT"
    )]
    pub firstboot: Vec<PathBuf>,
    /// The clones' hostname: a name written to /etc/hostname, or a template
    /// set on first boot before the network starts ({mac}, {mac6},
    /// {serial}, {machine-id}; systemd images), for fleets where no
    /// DHCP or cloud-init names the machine.
    #[arg(help_heading = "Prepare (hooks, additions)", long, value_name = "NAME", value_parser = parse_hostname)]
    pub hostname: Option<Hostname>,
    /// Identity scrub in the stream.
    #[command(flatten)]
    pub scrub: ScrubArgs,
    /// Upload while capturing: drp, drp:URL or s3://BUCKET/PREFIX stream the
    /// compressed bytes straight to the store (no local copy unless
    /// --keep-local); put:URL,URL uploads the finished file.
    #[arg(help_heading = "Upload", long, value_name = "TARGET", value_parser = crate::upload::TargetParser, env = "GOLDCAP_UPLOAD")]
    pub upload: Option<crate::upload::Target>,
    /// With --upload to drp or s3, also keep the artifact in --output-dir.
    #[arg(help_heading = "Upload", long, requires = "upload")]
    pub keep_local: bool,
    /// Capture without the privilege to read every file (not root and
    /// without CAP_DAC_READ_SEARCH): what cannot be read is left out and
    /// listed, and the MANIFEST and `goldcap verify` say the image is
    /// incomplete. Without it such a capture is refused before it starts.
    #[arg(help_heading = "Source", long)]
    pub allow_unreadable: bool,
    /// With --upload, upload even though identity operations were switched
    /// off or could not be met (the MANIFEST lists them).
    #[arg(help_heading = "Upload", long, requires = "upload")]
    pub allow_identity: bool,
    /// Upload options.
    #[command(flatten)]
    pub upload_opts: UploadArgs,
    /// Print one JSON object describing the result on stdout.
    #[arg(help_heading = "Output", long)]
    pub json: bool,
}

impl Cli {
    /// Whether the command prints JSON on stdout (`--json`), so that a
    /// failure is a JSON object there too.
    pub fn json(&self) -> bool {
        match &self.command {
            Command::Capture(a) => a.json,
            Command::Scrub(a) => a.json,
            Command::Verify(a) => a.json,
            Command::Upload(a) => a.json,
            Command::Token(a) => a.json,
            Command::Inspect(a) => a.json,
            Command::Apply(a) => a.json,
            Command::Diff(a) => a.json,
            Command::Profile(a) => a.json,
            Command::Completions { .. } | Command::Man { .. } => false,
        }
    }

    /// -1 quiet, 0 normal, ≥1 verbose.
    pub fn verbosity(&self) -> i8 {
        if self.quiet {
            -1
        } else {
            i8::try_from(self.verbose).unwrap_or(i8::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_a_full_capture_line() {
        let cli = Cli::try_parse_from([
            "goldcap",
            "-v",
            "capture",
            "--root",
            "/mnt/gold",
            "-o",
            "/out",
            "--format",
            "tzst",
            "--exclude",
            "./etc/default/grub",
            "--exclude",
            "*.log",
            "--include-mount",
            "/srv",
            "--ident",
            "CF99CD80EB",
            "--date",
            "2026-11-22T10:15:00Z",
            "--json",
        ])
        .unwrap();
        assert_eq!(cli.verbosity(), 1);
        let Command::Capture(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.format, FormatArg::Tzst);
        assert_eq!(a.ident.as_deref(), Some("cf99cd80eb"));
        assert_eq!(a.exclude.len(), 2);
        assert!(a.json);
    }

    #[test]
    fn rejects_bad_values_with_usage_status() {
        for bad in [
            vec!["goldcap", "capture", "--ident", "xyz"],
            vec!["goldcap", "capture", "--date", "yesterday"],
            vec!["goldcap", "capture", "--format", "zip"],
            vec!["goldcap", "-q", "-v", "capture"],
        ] {
            let e = Cli::try_parse_from(&bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
    }
}
