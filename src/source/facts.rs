//! Source facts for the MANIFEST: OS identity, kernels, boot-mode support,
//! installed packages.
//!
//! Sits before the pipeline: gathered once from the root (through
//! [`RootFs`], so a chroot's links resolve inside it) and written into the
//! MANIFEST after the archive. It tells an operator what the image is
//! before deploying it: is there a kernel, can it boot on EFI machines,
//! which openssh is in it.
//!
//! Parsers are pure and table-tested; the only I/O is reading small files
//! and listing directories. This module must never modify the root: for an
//! rpm database it copies the database files to a private temporary
//! directory and queries the copy, so rpm cannot create lock or journal
//! files in the source.

use crate::source::rootfs::RootFs;
use serde::Serialize;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

/// Everything the MANIFEST says about the source.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Facts {
    /// Parsed os-release, if any.
    pub os: Option<OsRelease>,
    /// Kernel versions found under `/boot` and `/lib/modules`.
    pub kernels: Vec<Kernel>,
    /// Boot modes the image carries support for.
    pub boot: BootSupport,
    pub packages: Packages,
    /// Whether the image can be kexec'ed into (DRP's `kexec-ok`).
    pub kexec: Kexec,
    /// What would keep the image from deploying or booting as a machine
    /// (no kernel, no boot loader, no root in fstab, a container's root):
    /// said on stderr at capture, not only here.
    pub deploy_problems: Vec<String>,
}

/// kexec support: a kernel built with it, and kexec-tools installed.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Kexec {
    /// Both are present.
    pub supported: bool,
    /// What showed it (or what is missing).
    pub evidence: Vec<String>,
}

/// Reads `/boot/config-<version>` of each kernel for `CONFIG_KEXEC(_FILE)=y`
/// and looks for the `kexec` binary.
pub fn kexec(root: &RootFs, kernels: &[Kernel]) -> Kexec {
    let mut k = Kexec::default();
    let mut kernel_ok = false;
    for kern in kernels {
        // Debian, SUSE and RHEL keep it in /boot; Fedora, Arch and
        // merged-/usr layouts also next to the modules.
        let candidates = [
            format!("/boot/config-{}", kern.version),
            format!("/usr/lib/modules/{}/config", kern.version),
            format!("/lib/modules/{}/config", kern.version),
        ];
        let found = candidates
            .iter()
            .find_map(|p| root.read(p, 4 << 20).ok().flatten().map(|c| (p.clone(), c)));
        if let Some((p, cfg)) = found {
            let text = String::from_utf8_lossy(&cfg);
            if text
                .lines()
                .any(|l| l == "CONFIG_KEXEC=y" || l == "CONFIG_KEXEC_FILE=y")
            {
                kernel_ok = true;
                k.evidence.push(format!("{p}: CONFIG_KEXEC"));
            }
        }
    }
    let tool = ["/sbin/kexec", "/usr/sbin/kexec", "/usr/bin/kexec"]
        .into_iter()
        .find(|p| root.exists(p));
    match tool {
        Some(t) => k.evidence.push(t.to_owned()),
        None => k.evidence.push("no kexec binary (kexec-tools)".into()),
    }
    if !kernel_ok {
        k.evidence
            .push("no kernel config with CONFIG_KEXEC=y in /boot".into());
    }
    k.supported = kernel_ok && tool.is_some();
    k
}

/// The fields of os-release goldcap uses.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct OsRelease {
    /// `ID`, e.g. `debian`.
    pub id: String,
    /// `VERSION_ID`, e.g. `12`.
    pub version_id: Option<String>,
    /// `PRETTY_NAME`.
    pub pretty_name: Option<String>,
    /// `ID_LIKE`, e.g. `rhel centos fedora`.
    pub id_like: Option<String>,
    /// `VERSION_CODENAME`.
    pub version_codename: Option<String>,
    /// The path it was read from, inside the root.
    pub path: String,
}

/// One kernel version and where it was seen.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Kernel {
    /// Version string, e.g. `6.1.0-13-amd64`.
    pub version: String,
    /// A `/boot/vmlinuz-<version>` (or `vmlinux-`, `Image-`) exists.
    pub image: bool,
    /// A `/boot/initrd.img-<version>` or `initramfs-<version>.img` exists.
    pub initramfs: bool,
    /// `/lib/modules/<version>` exists.
    pub modules: bool,
}

/// Boot-mode support seen in the root.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct BootSupport {
    /// GRUB for BIOS (`i386-pc` modules).
    pub bios_grub: bool,
    /// GRUB for EFI (`x86_64-efi`/`arm64-efi` modules or an EFI binary).
    pub efi_grub: bool,
    /// A signed shim (Secure Boot).
    pub efi_shim: bool,
    /// The paths that showed it.
    pub evidence: Vec<String>,
}

/// The package list and where it came from.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Packages {
    /// `dpkg`, `rpm`, or `none`.
    pub database: String,
    /// Why the list is missing or partial, if it is.
    pub note: Option<String>,
    /// Installed packages, sorted by name.
    pub list: Vec<Package>,
}

/// One installed package.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    pub name: String,
    /// Version (with epoch and release where the format has them).
    pub version: String,
    pub arch: String,
}

impl Facts {
    /// Gathers every fact from the root (os-release already read by the
    /// configuration). Never fails: what cannot be read is left empty with
    /// a note.
    pub fn gather(root: &RootFs, os: Option<OsRelease>) -> Facts {
        let kernels = kernels(root);
        let boot = boot_support(root);
        let fstab = root.read("/etc/fstab", FSTAB_LIMIT).ok().flatten();
        let markers: Vec<&str> = CONTAINER_MARKERS
            .iter()
            .copied()
            .filter(|m| root.exists(m))
            .collect();
        Facts {
            os,
            kexec: kexec(root, &kernels),
            deploy_problems: deploy_problems(&kernels, &boot, fstab.as_deref(), &markers),
            kernels,
            boot,
            packages: packages(root),
        }
    }
}

/// The most of `/etc/fstab` read.
const FSTAB_LIMIT: u64 = 1024 * 1024;

/// Files that only a container's root has (Docker, Podman).
const CONTAINER_MARKERS: [&str; 2] = ["/.dockerenv", "/run/.containerenv"];

/// What would keep an image with these facts from deploying or booting as
/// a machine; empty when nothing does. `fstab` is `/etc/fstab`'s content,
/// `None` when the root has none; `markers` the container markers found.
pub fn deploy_problems(
    kernels: &[Kernel],
    boot: &BootSupport,
    fstab: Option<&[u8]>,
    markers: &[&str],
) -> Vec<String> {
    let mut out = Vec::new();
    if !kernels.iter().any(|k| k.image) {
        out.push(
            "no kernel in /boot (vmlinuz-*, Image-*): the image cannot boot unless the deploy adds one"
                .to_owned(),
        );
    }
    if !(boot.bios_grub || boot.efi_grub || boot.efi_shim) {
        out.push(
            "no boot loader for BIOS or UEFI (GRUB modules, grub*.efi, shim): curtin cannot install one from this image"
                .to_owned(),
        );
    }
    match fstab {
        None => out.push(
            "no /etc/fstab: curtin and image-deploy write one, any other deploy must".to_owned(),
        ),
        Some(text) if !fstab_has_root(text) => out.push(
            "no root (/) entry in /etc/fstab: curtin and image-deploy write one, any other deploy must"
                .to_owned(),
        ),
        Some(_) => {}
    }
    for m in markers {
        out.push(format!(
            "{m} is in the root: this is a container's root, not a bootable system"
        ));
    }
    out
}

/// Whether an fstab mounts something on `/` (comments and blank lines
/// skipped; fields separated by blanks).
pub fn fstab_has_root(text: &[u8]) -> bool {
    text.split(|&b| b == b'\n').any(|line| {
        let mut fields = line
            .split(|b| b.is_ascii_whitespace())
            .filter(|f| !f.is_empty());
        match (fields.next(), fields.next()) {
            (Some(spec), Some(dir)) => !spec.starts_with(b"#") && dir == b"/",
            _ => false,
        }
    })
}

/// Reads `/etc/os-release`, falling back to `/usr/lib/os-release`.
pub fn read_os_release(root: &RootFs) -> Option<OsRelease> {
    for path in ["/etc/os-release", "/usr/lib/os-release"] {
        if let Ok(Some(bytes)) = root.read(path, 64 * 1024)
            && let Some(mut os) = parse_os_release(&String::from_utf8_lossy(&bytes))
        {
            os.path = path.to_owned();
            return Some(os);
        }
    }
    None
}

/// Parses os-release text (shell-like `KEY=value` lines, values optionally
/// quoted). `None` without an `ID`.
pub fn parse_os_release(text: &str) -> Option<OsRelease> {
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        map.insert(k.trim().to_owned(), unquote(v.trim()));
    }
    let id = map.remove("ID").filter(|s| !s.is_empty())?;
    Some(OsRelease {
        id,
        version_id: map.remove("VERSION_ID"),
        pretty_name: map.remove("PRETTY_NAME"),
        id_like: map.remove("ID_LIKE"),
        version_codename: map.remove("VERSION_CODENAME"),
        path: String::new(),
    })
}

fn unquote(v: &str) -> String {
    let bytes = v.as_bytes();
    if bytes.len() >= 2
        && bytes[0] == bytes[bytes.len() - 1]
        && (bytes[0] == b'"' || bytes[0] == b'\'')
    {
        let inner = &v[1..v.len() - 1];
        if bytes[0] == b'\'' {
            return inner.to_owned();
        }
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else {
                out.push(c);
            }
        }
        return out;
    }
    v.to_owned()
}

fn name_str(n: &OsStr) -> String {
    String::from_utf8_lossy(n.as_bytes()).into_owned()
}

/// Kernel versions from `/boot/{vmlinuz,vmlinux,Image}-*`,
/// `/boot/{initrd.img-*,initramfs-*.img}` and `/lib/modules/*`.
pub fn kernels(root: &RootFs) -> Vec<Kernel> {
    let mut by_version: BTreeMap<String, Kernel> = BTreeMap::new();
    for name in root.list("/boot").iter().map(|n| name_str(n)) {
        let image = ["vmlinuz-", "vmlinux-", "Image-"]
            .iter()
            .find_map(|p| name.strip_prefix(p));
        let initrd = name.strip_prefix("initrd.img-").or_else(|| {
            name.strip_prefix("initramfs-")
                .and_then(|v| v.strip_suffix(".img"))
        });
        if let Some(v) = image.filter(|v| !is_rescue(v)) {
            entry(&mut by_version, v).image = true;
        } else if let Some(v) = initrd.filter(|v| !is_rescue(v)) {
            entry(&mut by_version, v).initramfs = true;
        }
    }
    for name in root.list("/lib/modules") {
        let v = name_str(&name);
        if root.is_dir(Path::new("/lib/modules").join(&name)) {
            entry(&mut by_version, &v).modules = true;
        }
    }
    by_version.into_values().collect()
}

fn is_rescue(v: &str) -> bool {
    v.starts_with("0-rescue-") || v.ends_with(".hmac") || v.ends_with(".old")
}

fn entry<'a>(map: &'a mut BTreeMap<String, Kernel>, v: &str) -> &'a mut Kernel {
    map.entry(v.to_owned()).or_insert_with(|| Kernel {
        version: v.to_owned(),
        ..Kernel::default()
    })
}

/// Which boot modes the root can serve, from GRUB module directories, EFI
/// binaries and shim.
pub fn boot_support(root: &RootFs) -> BootSupport {
    let mut b = BootSupport::default();
    for p in [
        "/boot/grub/i386-pc",
        "/boot/grub2/i386-pc",
        "/usr/lib/grub/i386-pc",
    ] {
        if root.is_dir(p) {
            b.bios_grub = true;
            b.evidence.push(p.to_owned());
        }
    }
    for p in [
        "/boot/grub/x86_64-efi",
        "/boot/grub2/x86_64-efi",
        "/usr/lib/grub/x86_64-efi",
        "/boot/grub/arm64-efi",
        "/usr/lib/grub/arm64-efi",
    ] {
        if root.is_dir(p) {
            b.efi_grub = true;
            b.evidence.push(p.to_owned());
        }
    }
    let mut efi_dirs: Vec<String> = ["/usr/lib/shim", "/usr/share/shim"]
        .map(String::from)
        .to_vec();
    efi_dirs.extend(
        root.list("/boot/efi/EFI")
            .iter()
            .map(|v| format!("/boot/efi/EFI/{}", name_str(v))),
    );
    for dir in efi_dirs {
        for name in root.list(&dir).iter().map(|n| name_str(n)) {
            let lower = name.to_ascii_lowercase();
            let is_efi = lower.ends_with(".efi") || lower.ends_with(".efi.signed");
            if lower.starts_with("shim") && is_efi {
                b.efi_shim = true;
                b.evidence.push(format!("{dir}/{name}"));
            } else if lower.starts_with("grub") && is_efi {
                b.efi_grub = true;
                b.evidence.push(format!("{dir}/{name}"));
            }
        }
    }
    b.evidence.sort();
    b.evidence.dedup();
    b
}

/// Installed packages: dpkg's status file, else an rpm database.
pub fn packages(root: &RootFs) -> Packages {
    if let Ok(Some(status)) = root.read("/var/lib/dpkg/status", 256 * 1024 * 1024) {
        return Packages {
            database: "dpkg".into(),
            note: None,
            list: parse_dpkg_status(&String::from_utf8_lossy(&status)),
        };
    }
    for db in ["/usr/lib/sysimage/rpm", "/var/lib/rpm"] {
        if root.is_dir(db) && !root.list(db).is_empty() {
            return rpm_packages(root, db);
        }
    }
    Packages {
        database: "none".into(),
        note: Some("no dpkg status file or rpm database found".into()),
        list: Vec::new(),
    }
}

/// Parses a dpkg status file: packages whose `Status` ends in `installed`.
pub fn parse_dpkg_status(text: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let (mut name, mut version, mut arch, mut installed) = (None, None, None, false);
        for line in stanza.lines() {
            if line.starts_with([' ', '\t']) {
                continue;
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            match k {
                "Package" => name = Some(v),
                "Version" => version = Some(v),
                "Architecture" => arch = Some(v),
                "Status" => installed = v.split_whitespace().last() == Some("installed"),
                _ => {}
            }
        }
        if let (true, Some(name)) = (installed, name) {
            out.push(Package {
                name: name.to_owned(),
                version: version.unwrap_or("").to_owned(),
                arch: arch.unwrap_or("").to_owned(),
            });
        }
    }
    out.sort();
    out
}

fn rpm_packages(root: &RootFs, db: &str) -> Packages {
    let fail = |note: String| Packages {
        database: "rpm".into(),
        note: Some(note),
        list: Vec::new(),
    };
    let Ok(host_db) = root.resolve(db) else {
        return fail(format!("cannot resolve {db}"));
    };
    // Query a private copy: rpm may create locks, journals or indexes in the
    // database directory, and the source must stay untouched.
    let Ok(tmp) = tempfile::tempdir() else {
        return fail("cannot create a temporary directory for the rpm database copy".into());
    };
    let copy = tmp.path().join("rpmdb");
    if let Err(e) = copy_dir_files(&host_db, &copy) {
        return fail(format!("cannot copy the rpm database {db}: {e}"));
    }
    let out = Command::new("rpm")
        .arg("--dbpath")
        .arg(&copy)
        .args([
            "-qa",
            "--qf",
            "%{NAME}\\t%|EPOCH?{%{EPOCH}:}|%{VERSION}-%{RELEASE}\\t%{ARCH}\\n",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => Packages {
            database: "rpm".into(),
            note: None,
            list: parse_rpm_query(&String::from_utf8_lossy(&o.stdout)),
        },
        Ok(o) => fail(format!(
            "rpm could not read the database in {db}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(_) => fail(format!(
            "the root has an rpm database ({db}) but `rpm` is not installed on this host; package list omitted"
        )),
    }
}

fn copy_dir_files(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_file() {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}

/// Parses `NAME\tVERSION\tARCH` lines from our rpm query format.
pub fn parse_rpm_query(text: &str) -> Vec<Package> {
    let mut out: Vec<Package> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let (name, version, arch) = (f.next()?, f.next()?, f.next().unwrap_or(""));
            (!name.is_empty() && name != "gpg-pubkey").then(|| Package {
                name: name.into(),
                version: version.into(),
                arch: if arch == "(none)" {
                    String::new()
                } else {
                    arch.into()
                },
            })
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstab_root_table() {
        for (text, want) in [
            ("UUID=abc / ext4 errors=remount-ro 0 1\n", true),
            ("# comment\n\n/dev/sda1\t/\text4\tdefaults\t0 1", true),
            ("  LABEL=root   /   xfs defaults 0 0\n", true),
            ("#UUID=abc / ext4 defaults 0 1\n", false),
            ("UUID=abc /boot ext4 defaults 0 2\n", false),
            (
                "proc /proc proc defaults 0 0\n/dev/sda2 /home ext4 0 2\n",
                false,
            ),
            ("/", false),
            ("", false),
        ] {
            assert_eq!(fstab_has_root(text.as_bytes()), want, "{text:?}");
        }
    }

    #[test]
    fn deploy_problems_table() {
        let kernel = Kernel {
            version: "6.1.0".into(),
            image: true,
            initramfs: true,
            modules: true,
        };
        let modules_only = Kernel {
            image: false,
            ..kernel.clone()
        };
        let grub = BootSupport {
            efi_grub: true,
            ..BootSupport::default()
        };
        let fstab = Some(&b"UUID=x / ext4 defaults 0 1\n"[..]);
        let ok = [kernel];
        let no_image = [modules_only];
        let none = BootSupport::default();
        let check = |kernels: &[Kernel], boot, fstab, markers: &[&str], want: &[&str]| {
            let got = deploy_problems(kernels, boot, fstab, markers);
            assert_eq!(got.len(), want.len(), "{got:?}");
            for (g, w) in got.iter().zip(want) {
                assert!(g.starts_with(w), "{g:?} should start with {w:?}");
            }
        };
        check(&ok, &grub, fstab, &[], &[]);
        check(&no_image, &grub, fstab, &[], &["no kernel in /boot"]);
        check(&[], &none, fstab, &[], &["no kernel", "no boot loader"]);
        check(&ok, &grub, None, &[], &["no /etc/fstab"]);
        let proc_only = Some(&b"proc /proc proc 0 0\n"[..]);
        check(&ok, &grub, proc_only, &[], &["no root (/) entry"]);
        check(
            &ok,
            &grub,
            fstab,
            &["/.dockerenv"],
            &["/.dockerenv is in the root"],
        );
    }

    #[test]
    fn os_release_table() {
        let d = parse_os_release(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n# c\n",
        )
        .unwrap();
        assert_eq!(d.id, "debian");
        assert_eq!(d.version_id.as_deref(), Some("12"));
        assert_eq!(
            d.pretty_name.as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(d.id, "debian");

        let r =
            parse_os_release("ID='rocky'\nVERSION_ID=\"9.4\"\nID_LIKE=\"rhel centos fedora\"\n")
                .unwrap();
        assert_eq!(
            (r.id.as_str(), r.version_id.as_deref()),
            ("rocky", Some("9.4"))
        );
        assert_eq!(r.id_like.as_deref(), Some("rhel centos fedora"));

        let a = parse_os_release("ID=arch\nBUILD_ID=rolling\n").unwrap();
        assert_eq!((a.id.as_str(), a.version_id.as_deref()), ("arch", None));
        assert_eq!(parse_os_release("NAME=x\n"), None);
        assert_eq!(unquote("\"a \\\"b\\\"\""), "a \"b\"");
    }

    #[test]
    fn dpkg_status_table() {
        let text = "Package: bash\nStatus: install ok installed\nArchitecture: amd64\nVersion: 5.2.15-2+b2\nDescription: GNU\n Bourne\n\n\
                    Package: old\nStatus: deinstall ok config-files\nVersion: 1\n\n\
                    Package: held\nStatus: hold ok installed\nArchitecture: all\nVersion: 2\n";
        let p = parse_dpkg_status(text);
        let names: Vec<_> = p
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str(), p.arch.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![("bash", "5.2.15-2+b2", "amd64"), ("held", "2", "all")]
        );
    }

    #[test]
    fn rpm_query_table() {
        let p = parse_rpm_query(
            "zlib\t1.2.11-40.el9\tx86_64\ngpg-pubkey\tx-y\t(none)\nbash\t5.1.8-6.el9\tx86_64\n",
        );
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name, "bash");
    }

    #[test]
    fn kernels_and_boot_from_a_tree() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for d in [
            "boot/grub/i386-pc",
            "usr/lib/modules/6.1.0-13-amd64",
            "usr/lib/modules/6.1.0-9-amd64",
            "usr/lib/shim",
            "boot/efi/EFI/debian",
        ] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::os::unix::fs::symlink("usr/lib", r.join("lib")).unwrap();
        for f in [
            "boot/vmlinuz-6.1.0-13-amd64",
            "boot/initrd.img-6.1.0-13-amd64",
            "usr/lib/shim/shimx64.efi.signed",
            "boot/efi/EFI/debian/grubx64.efi",
            "boot/vmlinuz-0-rescue-abc",
        ] {
            std::fs::write(r.join(f), "x").unwrap();
        }
        let root = RootFs::new(r);
        let k = kernels(&root);
        assert_eq!(
            k,
            vec![
                Kernel {
                    version: "6.1.0-13-amd64".into(),
                    image: true,
                    initramfs: true,
                    modules: true
                },
                Kernel {
                    version: "6.1.0-9-amd64".into(),
                    image: false,
                    initramfs: false,
                    modules: true
                },
            ]
        );
        let b = boot_support(&root);
        assert!(b.bios_grub && b.efi_grub && b.efi_shim, "{b:?}");
        assert!(
            b.evidence
                .contains(&"/boot/efi/EFI/debian/grubx64.efi".to_owned()),
            "{b:?}"
        );
    }
}
