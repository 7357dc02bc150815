//! What each command's `--help` ends with and its man page holds beyond
//! the options: examples, environment, exit status, files, see also.
//!
//! Beside the pipeline, in the command line: one table ([`PAGES`]) feeds
//! both `--help` ([`command`]) and `goldcap man`, so the two never
//! disagree. Text only; it must never name an option the command does not
//! have (a test checks every example against the command's own parser).

use crate::cli::args::Cli;
use clap::CommandFactory;

/// One command's page beyond its options.
pub struct Page {
    /// The subcommand, or `""` for `goldcap` itself.
    pub command: &'static str,
    /// (what it does, the command line).
    pub examples: &'static [(&'static str, &'static str)],
    /// (variable, meaning).
    pub env: &'static [(&'static str, &'static str)],
    /// (status, meaning).
    pub exit: &'static [(&'static str, &'static str)],
    /// (path, what it is).
    pub files: &'static [(&'static str, &'static str)],
    /// Other pages, as `goldcap-verify(1)`.
    pub see_also: &'static [&'static str],
}

const ENV_DRP: &[(&str, &str)] = &[
    (
        "RS_ENDPOINT",
        "DRP endpoint when none is given (else the first of RS_ENDPOINTS, else https://127.0.0.1:8092), as drpcli",
    ),
    (
        "RS_TOKEN",
        "DRP token (inside a DRP task: the job's token); --token-file wins",
    ),
    ("RS_KEY", "user:password for DRP when there is no token"),
];

const ENV_S3: &[(&str, &str)] = &[
    (
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN",
        "S3 credentials (never taken from the command line, never printed)",
    ),
    (
        "AWS_PROFILE",
        "the profile in ~/.aws/credentials and ~/.aws/config (default: default) when no key is in the environment; then the instance role (IMDSv2)",
    ),
    (
        "AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE",
        "other places for those two files",
    ),
    (
        "AWS_EC2_METADATA_DISABLED, AWS_EC2_METADATA_SERVICE_ENDPOINT",
        "true: never ask the instance metadata service; or where it is",
    ),
    (
        "AWS_REGION",
        "S3 region (or AWS_DEFAULT_REGION, the profile's region; default us-east-1)",
    ),
    (
        "AWS_ENDPOINT_URL",
        "S3-compatible endpoint, path-style (MinIO, Ceph RGW); or AWS_ENDPOINT_URL_S3, or the profile's endpoint_url",
    ),
];

const ENV_CAPTURE: &[(&str, &str)] = &[
    (
        "GOLDCAP_CONFIG",
        "the config file (default /etc/goldcap/goldcap.toml when it exists)",
    ),
    ("GOLDCAP_OUTPUT_DIR", "--output-dir"),
    ("GOLDCAP_FORMAT", "--format"),
    ("GOLDCAP_LEVEL", "--level"),
    ("GOLDCAP_THREADS", "--threads"),
    ("GOLDCAP_UPLOAD", "--upload"),
    ("GOLDCAP_UPLOAD_PATH", "--upload-path"),
];

const EXIT_COMMON: &[(&str, &str)] = &[
    ("0", "success"),
    (
        "1",
        "failure (I/O error, full disk, output exists, upload refused ...); no file is left under a final name",
    ),
    (
        "2",
        "usage error: bad option or input (template, ident, date, root, MANIFEST ...)",
    ),
    (
        "130",
        "interrupted by SIGINT (143 SIGTERM, 129 SIGHUP); temporary files removed",
    ),
];

const EXIT_CAPTURE: &[(&str, &str)] = &[
    ("0", "success"),
    (
        "1",
        "failure (I/O error, full disk, output exists, a hook failed, upload refused ...); no file is left under a final name, except a complete local capture whose upload failed afterwards (the message says so)",
    ),
    (
        "2",
        "usage error: bad option or input (template, ident, date, root ...)",
    ),
    (
        "3",
        "completed with warnings: the artifact is complete and valid, but files vanished, changed or were unreadable during the capture (listed on stderr and in the MANIFEST)",
    ),
    (
        "130",
        "interrupted by SIGINT (143 SIGTERM, 129 SIGHUP); temporary files removed",
    ),
];

const EXIT_VERIFY: &[(&str, &str)] = &[
    ("0", "every check passed"),
    ("1", "the artifact or MANIFEST could not be read"),
    ("2", "usage error (no such file, not a MANIFEST)"),
    ("4", "the artifact failed a check (each failure is listed)"),
];

const FILES_CAPTURE: &[(&str, &str)] = &[
    (
        "/etc/goldcap/goldcap.toml",
        "settings for every capture: its [capture] table, keys named as the options",
    ),
    (
        "OUTPUT_DIR/<os>-rootfs-<date>-<ident>.tgz",
        "the artifact (.tar.zst with --format tzst), mode 0600",
    ),
    (
        "OUTPUT_DIR/<os>-MANIFEST-<date>-<ident>.txt, .json",
        "the MANIFEST and its JSON twin",
    ),
];

/// Every page, `goldcap` first.
pub const PAGES: &[Page] = &[
    Page {
        command: "",
        examples: &[
            (
                "Capture a chroot, check it, upload it to DRP and make its profile",
                "goldcap capture --root /srv/gold -o /srv/images && goldcap verify /srv/images/*MANIFEST*.json && goldcap upload /srv/images/*MANIFEST*.json --to drp && goldcap profile /srv/images/*MANIFEST*.json -o profile.yaml",
            ),
            ("List the identity-scrub operations", "goldcap scrub --list"),
        ],
        env: ENV_CAPTURE,
        exit: EXIT_CAPTURE,
        files: FILES_CAPTURE,
        see_also: &[
            "goldcap-capture(1)",
            "goldcap-scrub(1)",
            "goldcap-verify(1)",
            "goldcap-upload(1)",
            "goldcap-token(1)",
            "goldcap-profile(1)",
            "goldcap-apply(1)",
            "goldcap-inspect(1)",
            "goldcap-diff(1)",
            "goldcap-completions(1)",
            "tar(1)",
        ],
    },
    Page {
        command: "capture",
        examples: &[
            (
                "Capture the running server (as root) into /var/lib/goldcap",
                "goldcap capture --root / -o /var/lib/goldcap",
            ),
            (
                "Finalize a chroot: clean package caches, add curtin hooks and a first-boot script",
                "goldcap capture --root /srv/gold --hook builtin:package-cache --inject hooks/curtin-hooks:/curtin/curtin-hooks:0755 --firstboot enroll.sh -o /srv/images",
            ),
            (
                "Show what would be captured, scrubbed and added, reading nothing",
                "goldcap capture --root /srv/gold --dry-run",
            ),
            (
                "Inside a DRP task: stream the capture to the endpoint (RS_ENDPOINT, RS_TOKEN set)",
                "goldcap capture --root / --upload drp",
            ),
            (
                "zstd for Eikon, keeping the log files",
                "goldcap capture --root /srv/gold --format tzst --operations=-logfiles",
            ),
        ],
        env: &[],
        exit: EXIT_CAPTURE,
        files: FILES_CAPTURE,
        see_also: &[
            "goldcap-verify(1)",
            "goldcap-upload(1)",
            "goldcap-profile(1)",
            "goldcap-scrub(1)",
            "tar(1)",
        ],
    },
    Page {
        command: "scrub",
        examples: &[
            (
                "The catalogue, defaults starred, with virt-sysprep's names",
                "goldcap scrub --list",
            ),
            (
                "What a scrub in place would do to a chroot",
                "goldcap scrub --root /srv/gold --dry-run",
            ),
            (
                "Scrub a chroot in place, keeping its log files",
                "goldcap scrub --root /srv/gold --operations=-logfiles",
            ),
        ],
        env: &[],
        exit: EXIT_COMMON,
        files: &[],
        see_also: &["goldcap-capture(1)", "virt-sysprep(1)"],
    },
    Page {
        command: "verify",
        examples: &[
            (
                "Check a capture by its MANIFEST",
                "goldcap verify /srv/images/debian-12-MANIFEST-20261122-101500-cf99cd80eb.json",
            ),
            (
                "Check an artifact against DRP image-builder's text MANIFEST",
                "goldcap verify image.tgz --manifest MANIFEST.txt",
            ),
            (
                "In a script",
                "goldcap verify -q --json image.tgz | jq -e .ok",
            ),
        ],
        env: &[],
        exit: EXIT_VERIFY,
        files: &[],
        see_also: &["goldcap-capture(1)", "goldcap-upload(1)"],
    },
    Page {
        command: "apply",
        examples: &[
            (
                "Lay a capture onto a freshly made filesystem, verified as it streams",
                "goldcap apply /srv/images/debian-12-MANIFEST-20261122-101500-cf99cd80eb.json --target /mnt/target",
            ),
            (
                "From DRP's files API with the job's token (RS_ENDPOINT, RS_TOKEN), verified against the text MANIFEST beside it",
                "goldcap apply drp:images/debian-12-rootfs-20261122-101500-cf99cd80eb.tgz --target /mnt/target",
            ),
            (
                "From DRP's files URL, naming the clone",
                "goldcap apply https://drp.example:8090/files/images/debian-12-MANIFEST-20261122-101500-cf99cd80eb.json --target /mnt/target --hostname web-042 --machine-id uninitialized",
            ),
            (
                "With the operators' key for root and a deploy key for the user ansible",
                "goldcap apply debian-12-MANIFEST-20261122-101500-cf99cd80eb.json --target /mnt/target --ssh-authorized-key /etc/goldcap/ops.pub --ssh-authorized-key /etc/goldcap/deploy.pub:ansible",
            ),
            (
                "With a cloud-init NoCloud seed, then the boot loader and initramfs installed inside the clone",
                "goldcap apply debian-12-MANIFEST-20261122-101500-cf99cd80eb.json --target /mnt/target --nocloud ./seed --hook ./hooks.d --hook builtin:initramfs",
            ),
            (
                "Onto a disk's filesystems mounted at /mnt/target (/boot/efi below it), with an /etc/fstab naming them by UUID",
                "goldcap apply debian-12-MANIFEST-20261122-101500-cf99cd80eb.json --target /mnt/target --fstab",
            ),
        ],
        env: &[],
        exit: &[
            (
                "0",
                "applied and verified (or applied and said unverified, without a MANIFEST)",
            ),
            (
                "1",
                "the target could not be written, the source could not be fetched, or a --hook failed (the target keeps .goldcap-apply-incomplete, with the hook's last output)",
            ),
            (
                "2",
                "usage error (a target that is / or not empty without --force, a bad source, a --ssh-authorized-key that is no public key, a --nocloud DIR without user-data and meta-data, a hook that is not executable, --fstab on a target that is no mount point; or, once applied, a USER the target's /etc/passwd does not have)",
            ),
            ("3", "applied, but some metadata could not be set (listed)"),
            (
                "4",
                "the artifact does not match its MANIFEST, is unreadable, or holds entries that would leave the target (listed), or a per-machine file would go through a symlink in the image; the target keeps .goldcap-apply-incomplete, saying why",
            ),
            (
                "130",
                "interrupted; the target keeps .goldcap-apply-incomplete",
            ),
        ],
        files: &[
            (
                "TARGET/.goldcap-apply-incomplete",
                "present from the first entry until the run succeeded",
            ),
            (
                "TARGET/var/log/goldcap-apply.json",
                "the apply report: the artifact, its digests, whether it was verified, when, and what was done for this machine",
            ),
            (
                "TARGET/var/lib/cloud/seed/nocloud/",
                "where --nocloud puts the cloud-init seed",
            ),
        ],
        see_also: &["goldcap-verify(1)", "goldcap-capture(1)", "tar(1)"],
    },
    Page {
        command: "upload",
        examples: &[
            (
                "To the DRP endpoint in RS_ENDPOINT, with the token in RS_TOKEN",
                "goldcap upload /srv/images/debian-12-MANIFEST-20261122-101500-cf99cd80eb.json --to drp",
            ),
            (
                "To S3 (credentials in AWS_*)",
                "goldcap upload M.json --to s3://images/gold --presign-get 86400",
            ),
            (
                "To two presigned PUT URLs kept in a file (out of the process list)",
                "goldcap upload M.json --to put:@urls.txt",
            ),
        ],
        env: &[],
        exit: EXIT_COMMON,
        files: &[],
        see_also: &["goldcap-token(1)", "goldcap-profile(1)", "drpcli(1)"],
    },
    Page {
        command: "token",
        examples: &[(
            "A one-hour token that can upload exactly one capture",
            "RS_KEY=admin:secret goldcap token --user capture --paths images/debian-12-rootfs-20261122-101500-cf99cd80eb.tgz,images/debian-12-MANIFEST-20261122-101500-cf99cd80eb.txt > token",
        )],
        env: ENV_DRP,
        exit: EXIT_COMMON,
        files: &[],
        see_also: &["goldcap-upload(1)"],
    },
    Page {
        command: "profile",
        examples: &[
            (
                "The image-deploy profile for a capture, then load it into DRP",
                "goldcap profile M.json -o gold.yaml && drpcli profiles create gold.yaml",
            ),
            (
                "RackN Eikon's profile for a .tar.zst capture",
                "goldcap profile M.json --deployer eikon",
            ),
        ],
        env: &[],
        exit: EXIT_COMMON,
        files: &[],
        see_also: &["goldcap-upload(1)", "drpcli(1)"],
    },
    Page {
        command: "inspect",
        examples: &[
            (
                "What a capture holds, by its MANIFEST",
                "goldcap inspect /srv/images/debian-12-MANIFEST-20261122-101500-cf99cd80eb.json",
            ),
            (
                "Its entries, as tar -tv lists them (safe on any archive)",
                "goldcap inspect --list image.tgz",
            ),
        ],
        env: &[],
        exit: EXIT_COMMON,
        files: &[],
        see_also: &["goldcap-verify(1)", "goldcap-diff(1)", "tar(1)"],
    },
    Page {
        command: "diff",
        examples: &[(
            "What changed between last month's gold image and this one",
            "goldcap diff old/debian-12-MANIFEST-20261101-101500-0123456789.json new/debian-12-MANIFEST-20261201-101500-cf99cd80eb.json",
        )],
        env: &[],
        exit: &[
            ("0", "the captures are the same"),
            ("1", "they differ (or one could not be read)"),
            ("2", "usage error"),
        ],
        files: &[],
        see_also: &["goldcap-inspect(1)", "diff(1)"],
    },
    Page {
        command: "completions",
        examples: &[
            (
                "Install bash completion for every user",
                "goldcap completions bash > /usr/share/bash-completion/completions/goldcap",
            ),
            (
                "zsh (a directory on $fpath)",
                "goldcap completions zsh > /usr/local/share/zsh/site-functions/_goldcap",
            ),
            (
                "fish",
                "goldcap completions fish > /usr/share/fish/vendor_completions.d/goldcap.fish",
            ),
        ],
        env: &[],
        exit: &[("0", "printed"), ("2", "unknown shell")],
        files: &[],
        see_also: &["goldcap(1)"],
    },
];

/// The environment a command reads: its own, then the upload credentials
/// for those that upload.
pub fn environment(page: &Page) -> Vec<(&'static str, &'static str)> {
    let mut env = page.env.to_vec();
    if matches!(page.command, "" | "capture" | "upload") {
        if page.command == "capture" {
            env.extend_from_slice(ENV_CAPTURE);
        }
        env.extend_from_slice(ENV_DRP);
        env.extend_from_slice(ENV_S3);
    }
    env
}

/// The page of `command` (`""` for goldcap itself).
pub fn page(command: &str) -> Option<&'static Page> {
    PAGES.iter().find(|p| p.command == command)
}

/// The `--help` tail of a page: examples, environment, exit status.
pub fn help_tail(page: &Page) -> String {
    let mut t = String::new();
    if !page.examples.is_empty() {
        t.push_str("Examples:\n");
        for (what, cmd) in page.examples {
            t.push_str(&format!("  # {what}\n  {cmd}\n"));
        }
    }
    let env = environment(page);
    if !env.is_empty() {
        t.push_str("Environment:\n");
        for (var, what) in env {
            t.push_str(&format!("  {var}: {what}\n"));
        }
    }
    t.push_str("Exit status:\n");
    for (code, what) in page.exit {
        t.push_str(&format!("  {code:<4} {what}\n"));
    }
    t.trim_end().to_owned()
}

/// The clap command with each page's tail after its help.
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    for page in PAGES {
        let tail = help_tail(page);
        cmd = if page.command.is_empty() {
            cmd.after_help(tail)
        } else {
            cmd.mut_subcommand(page.command, |s| s.after_help(tail))
        };
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits an example into words the way a shell would for these
    /// (no quotes in them), without leading VAR=value assignments.
    fn words(line: &str) -> Vec<&str> {
        line.split_whitespace()
            .skip_while(|w| w.contains('=') && !w.starts_with('-'))
            .take_while(|w| !w.starts_with('>'))
            .collect()
    }

    #[test]
    fn every_example_parses_with_the_command_it_shows() {
        let cmd = command();
        for page in PAGES {
            for (what, line) in page.examples {
                for part in line.split(" && ").map(|p| p.split(" | ").next().unwrap()) {
                    let argv = words(part);
                    if argv.first() != Some(&"goldcap") {
                        continue;
                    }
                    // A value naming a file that only the reader has
                    // (put:@urls.txt) is fine; anything else is not.
                    if let Err(e) = cmd.clone().try_get_matches_from(&argv) {
                        use clap::error::ErrorKind::{InvalidValue, ValueValidation};
                        let missing_file = matches!(e.kind(), InvalidValue | ValueValidation)
                            && e.to_string().contains("No such file");
                        assert!(missing_file, "{what}: {part}: {e}");
                    }
                }
            }
        }
    }

    #[test]
    fn every_visible_command_has_a_page() {
        for sub in Cli::command()
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
        {
            assert!(page(sub.get_name()).is_some(), "{}", sub.get_name());
        }
    }

    #[test]
    fn see_also_names_only_pages_that_exist() {
        let ours: Vec<String> = PAGES
            .iter()
            .map(|p| match p.command {
                "" => "goldcap(1)".to_owned(),
                c => format!("goldcap-{c}(1)"),
            })
            .collect();
        for page in PAGES {
            for s in page.see_also.iter().filter(|s| s.starts_with("goldcap")) {
                assert!(ours.iter().any(|o| o == s), "{s} in {:?}", page.command);
            }
        }
    }
}
