//! What a scrub plan knows about the root it is for: distribution
//! families, init system, live or not, in place or in the stream — and
//! whether an operation's predicate holds there.
//!
//! Part of planning. Reads only `RootFs` existence checks; must never
//! modify the root.

use super::spec::{Mode, When};
use crate::source::facts::OsRelease;
use crate::source::rootfs::RootFs;
use serde::Serialize;
use std::collections::BTreeSet;

/// What a plan knows about the root it is for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RootTraits {
    /// Distribution families (`debian`, `rhel`, …).
    pub families: BTreeSet<String>,
    /// `systemd`, `openrc` or `unknown`.
    pub init: String,
    /// A live capture of the running system.
    pub live: bool,
    /// `goldcap scrub` in place (not the archive stream).
    pub in_place: bool,
}

impl RootTraits {
    /// Reads the traits from the root.
    pub fn detect(root: &RootFs, os: Option<&OsRelease>, live: bool, in_place: bool) -> RootTraits {
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
            in_place,
        }
    }

    pub(super) fn matches(&self, when: &When, root: &RootFs) -> bool {
        (when.family.is_empty() || when.family.iter().any(|f| self.families.contains(f)))
            && when.init.as_ref().is_none_or(|i| *i == self.init)
            && (when.exists.is_empty() || when.exists.iter().any(|p| root.exists(p)))
            && when
                .mode
                .is_none_or(|m| (m == Mode::InPlace) == self.in_place)
    }
}
