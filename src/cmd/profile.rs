//! `goldcap profile`: the DRP image-deploy profile for a capture, as the
//! image-builder documentation's example, made for you.
//!
//! After the pipeline: reads the JSON MANIFEST and writes YAML with
//! `image-deploy/image-os: linux`, `image-deploy/image-type: tgz`,
//! `image-deploy/image-url` (DRP's own `{{.ProvisionerURL}}/files/<upload
//! path>`, or a given base URL) and `kexec-ok: true` only when the captured
//! kernel and kexec-tools support it. A `.tar.zst` artifact is refused:
//! image-deploy's curtin cannot stream zstd. Pure apart from reading the
//! manifest.

use super::print_text;
use crate::cli::config::ProfileConfig;
use crate::output::atomic::AtomicFile;
use crate::report::error::{Error, Result};
use crate::report::exit::ExitCode;
use anyhow::Context as _;
use std::io::Write;
use std::path::Path;

/// Runs `goldcap profile`: the YAML on stdout or into `--output`.
pub(super) fn run(cfg: &ProfileConfig) -> Result<ExitCode> {
    let yaml = render(&cfg.manifest, cfg.endpoint.as_deref())
        .map_err(|e| Error::usage(format!("{}: {e}", cfg.manifest_path.display())))?;
    match &cfg.output {
        Some(p) => write_profile(p, &yaml)?,
        None => print_text(&yaml)?,
    }
    Ok(ExitCode::Success)
}

/// Writes the profile atomically (a temporary beside it, renamed over).
fn write_profile(p: &Path, yaml: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = p
        .file_name()
        .ok_or_else(|| Error::usage(format!("--output {}: not a file name", p.display())))?;
    let write = || -> std::io::Result<()> {
        let mut f = AtomicFile::create(dir, &name.to_string_lossy())?;
        f.write_all(yaml.as_bytes())?;
        // Not a secret, unlike the artifact: readable like any profile.
        std::fs::set_permissions(f.temp_path(), std::fs::Permissions::from_mode(0o644))?;
        f.sync()?;
        f.persist(true).map(drop)
    };
    write().with_context(|| format!("cannot write {}", p.display()))?;
    Ok(())
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The profile YAML for a manifest. `endpoint`: base URL the artifact is
/// served from (its file name is appended), or a full URL ending in it.
fn render(manifest: &serde_json::Value, endpoint: Option<&str>) -> Result<String> {
    let s = |k: &str| {
        manifest[k]
            .as_str()
            .ok_or_else(|| Error::usage(format!("not a goldcap JSON MANIFEST (no {k:?})")))
    };
    if manifest["tool"]["name"] != "goldcap" {
        return Err(Error::usage("not a goldcap JSON MANIFEST"));
    }
    let filename = s("filename")?;
    if manifest["format"] != "tgz" {
        return Err(Error::usage(format!(
            "{filename}: image-deploy cannot deploy a .tar.zst (curtin only streams gzip, bzip2 and xz); \
             capture with --format tgz, or deploy with RackN Eikon (image type tar-zst)"
        )));
    }
    let url = match endpoint {
        // A full URL, presigned ones included (their query string follows
        // the file name).
        Some(e)
            if e.split('?')
                .next()
                .unwrap_or(e)
                .trim_end_matches('/')
                .ends_with(filename) =>
        {
            e.to_owned()
        }
        Some(e) => format!("{}/{filename}", e.trim_end_matches('/')),
        None => format!("{{{{.ProvisionerURL}}}}/files/{}", s("upload_tarball")?),
    };
    let name = filename.trim_end_matches(".tgz");
    let os = manifest["source"]["os"]["pretty_name"]
        .as_str()
        .or(manifest["source"]["os_tag"].as_str())
        .unwrap_or("Linux");
    let kexec = manifest["source"]["kexec"]["supported"] == true;
    let mut y = String::new();
    y.push_str("---\n");
    y.push_str(&format!("Name: {}\n", quote(name)));
    y.push_str(&format!(
        "Description: {}\n",
        quote(&format!(
            "Deploy {os} gold image {} captured {} by goldcap",
            s("ident")?,
            s("date")?
        ))
    ));
    y.push_str("Documentation: |\n");
    y.push_str(&format!(
        "  Image {filename} (md5 {}, sha256 {}).\n",
        s("md5")?,
        s("sha256")?
    ));
    y.push_str("  Attach to a machine and run an image-deploy workflow.\n");
    y.push_str("Params:\n");
    y.push_str("  image-deploy/image-os: linux\n");
    y.push_str("  image-deploy/image-type: tgz\n");
    y.push_str(&format!("  image-deploy/image-url: {}\n", quote(&url)));
    if kexec {
        y.push_str("  kexec-ok: true\n");
    }
    y.push_str("Meta:\n  icon: image\n  color: blue\n");
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn manifest(format: &str, kexec: bool) -> serde_json::Value {
        json!({
            "tool": {"name": "goldcap"}, "filename": "debian-12-rootfs-20261122-101500-cf99cd80eb.tgz",
            "upload_tarball": "images/debian-12-rootfs-20261122-101500-cf99cd80eb.tgz", "format": format,
            "ident": "cf99cd80eb", "date": "2026-11-22T10:15:00Z", "md5": "m", "sha256": "s",
            "source": {"os": {"pretty_name": "Debian GNU/Linux 12 (bookworm)"}, "kexec": {"supported": kexec}}
        })
    }

    #[test]
    fn profile_table() {
        let y = render(&manifest("tgz", true), None).unwrap();
        assert!(y.contains("  image-deploy/image-url: \"{{.ProvisionerURL}}/files/images/debian-12-rootfs-20261122-101500-cf99cd80eb.tgz\"\n"), "{y}");
        assert!(
            y.contains("  image-deploy/image-type: tgz\n  image-deploy/image-url")
                && y.contains("kexec-ok: true"),
            "{y}"
        );
        assert!(
            y.starts_with("---\nName: \"debian-12-rootfs-20261122-101500-cf99cd80eb\"\n"),
            "{y}"
        );
        let y = render(&manifest("tgz", false), Some("https://s3.example/gold/")).unwrap();
        assert!(y.contains("image-url: \"https://s3.example/gold/debian-12-rootfs-20261122-101500-cf99cd80eb.tgz\""), "{y}");
        assert!(!y.contains("kexec-ok"), "{y}");
        let signed = "https://s3.example/gold/debian-12-rootfs-20261122-101500-cf99cd80eb.tgz?X-Amz-Signature=ab";
        let y = render(&manifest("tgz", false), Some(signed)).unwrap();
        assert!(y.contains(&format!("image-url: \"{signed}\"\n")), "{y}");
        let e = render(&manifest("tzst", false), None).unwrap_err();
        assert!(e.to_string().contains("cannot deploy a .tar.zst"), "{e}");
    }
}
