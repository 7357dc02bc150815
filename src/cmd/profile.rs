//! `goldcap profile`: the DRP image-deploy profile for a capture, as the
//! image-builder documentation's example, made for you, or RackN Eikon's.
//!
//! After the pipeline: reads the JSON MANIFEST and writes YAML with
//! `image-deploy/image-os: linux`, `image-deploy/image-type: tgz`,
//! `image-deploy/image-url` (DRP's own `{{.ProvisionerURL}}/files/<upload
//! path>`, or a given base URL) and `kexec-ok: true` only when the captured
//! kernel and kexec-tools support it. A `.tar.zst` artifact is refused for
//! image-deploy: its curtin cannot stream zstd. With `--deployer eikon` the
//! params are Eikon's, `eikon/image-type` (`tgz`, or `tar-zst` for a
//! `.tar.zst`) and `eikon/image-url`; their names and values are from
//! RackN's parameter reference,
//! <https://docs.rackn.io/stable/resources/objects/params/eikon-image-type>
//! and `…/params/eikon-image-url` (which says the URL may use
//! `{{ .ProvisionerURL }}`). Pure apart from reading the manifest; it never
//! writes a MANIFEST value it has not checked into the YAML.

use super::print_text;
use crate::cli::DeployerArg;
use crate::cli::config::ProfileConfig;
use crate::output::atomic::AtomicFile;
use crate::output::manifest::read::Summary;
use crate::report::error::{Error, Result};
use crate::report::exit::ExitCode;
use anyhow::Context as _;
use std::io::Write;
use std::path::Path;

/// Runs `goldcap profile`: the YAML on stdout or into `--output`.
pub(super) fn run(cfg: &ProfileConfig) -> Result<ExitCode> {
    let profile = profile_of(&cfg.manifest, cfg.endpoint.as_deref(), cfg.deployer)
        .map_err(|e| Error::usage(format!("{}: {e}", cfg.manifest_path.display())))?;
    let yaml = if cfg.json {
        let mut j = serde_json::to_string_pretty(&profile.json())
            .map_err(|e| Error::from(anyhow::anyhow!("cannot write the profile: {e}")))?;
        j.push('\n');
        j
    } else {
        profile.yaml()
    };
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

/// A YAML double-quoted scalar: JSON's string syntax is one (quotes,
/// backslashes and control characters escaped), so no value can break out
/// of its line.
fn quote(s: &str) -> String {
    // Unwrap expectation: serialising a string cannot fail.
    serde_json::to_string(s).expect("a string serialises")
}

/// A MANIFEST value that goes into the profile: no control characters
/// (they could end the line they are on) and no `{{`/`}}` (DRP expands
/// those as Go templates).
fn value<'a>(m: &'a Summary, v: &'a Option<String>, name: &str) -> Result<&'a str> {
    let v = m.field(v, name).map_err(Error::usage)?;
    if v.chars().any(char::is_control) || v.contains("{{") || v.contains("}}") {
        return Err(Error::usage(format!(
            "{name:?} holds control characters or a template ({{{{ … }}}}); not written into a profile"
        )));
    }
    Ok(v)
}

/// The image type the deployer is told: image-deploy's
/// `image-deploy/image-type` or Eikon's `eikon/image-type`.
fn image_type(m: &Summary, filename: &str, deployer: DeployerArg) -> Result<&'static str> {
    match (deployer, m.format.as_deref()) {
        (_, Some("tgz")) => Ok("tgz"),
        (DeployerArg::Eikon, Some("tzst")) => Ok("tar-zst"),
        (DeployerArg::ImageDeploy, Some("tzst")) => Err(Error::usage(format!(
            "{filename}: image-deploy cannot deploy a .tar.zst (curtin only streams gzip, bzip2 and xz); \
             capture with --format tgz, or deploy with RackN Eikon (--deployer eikon: image type tar-zst)"
        ))),
        (_, f) => Err(Error::usage(format!(
            "{filename}: unknown format {:?} in the MANIFEST (goldcap writes tgz or tzst)",
            f.unwrap_or("")
        ))),
    }
}

/// DRP's template for its own address, as the profile may use it.
const PROVISIONER_URL: &str = "{{.ProvisionerURL}}";

/// Where the deployer fetches the artifact:
/// * no `--endpoint`: `{{.ProvisionerURL}}/files/<upload path>`;
/// * a base ending in DRP's `/files` root (`{{.ProvisionerURL}}/files/`,
///   `https://drp:8090/files`): the upload path below it;
/// * any other http(s) base: the file name below it;
/// * a URL whose path already ends in the file name (a presigned GET with
///   its query string): as given.
///
/// Only http and https are accepted (what image-deploy and Eikon fetch);
/// a base with a query string that does not name the file is refused,
/// since appending to a signed URL breaks its signature.
fn image_url(endpoint: Option<&str>, upload_path: &str, filename: &str) -> Result<String> {
    let Some(e) = endpoint else {
        return Ok(format!("{PROVISIONER_URL}/files/{upload_path}"));
    };
    let bad = |why: String| Error::usage(format!("--endpoint {:?}: {why}", e));
    if e.chars().any(char::is_control) {
        return Err(bad("holds control characters".into()));
    }
    // DRP expands its own address when it renders the profile: the rest
    // is a path.
    if let Some(rest) = e.strip_prefix(PROVISIONER_URL) {
        if rest.contains(['?', '#'])
            || rest.contains("{{")
            || !rest.starts_with(['/']) && !rest.is_empty()
        {
            return Err(bad(format!(
                "after {PROVISIONER_URL} only a path may follow (e.g. {PROVISIONER_URL}/files/)"
            )));
        }
        let base = rest.trim_end_matches('/');
        return Ok(if base.ends_with(&format!("/{filename}")) {
            format!("{PROVISIONER_URL}{base}")
        } else if base.ends_with("/files") {
            format!("{PROVISIONER_URL}{base}/{upload_path}")
        } else {
            format!("{PROVISIONER_URL}{base}/{filename}")
        });
    }
    let mut url = url::Url::parse(e).map_err(|why| bad(format!("not a URL: {why}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(format!(
            "scheme {:?}: image-deploy and Eikon fetch http or https",
            url.scheme()
        )));
    }
    if url
        .path()
        .trim_end_matches('/')
        .ends_with(&format!("/{filename}"))
    {
        return Ok(url.into());
    }
    if url.query().is_some() {
        return Err(bad(format!(
            "a URL with a query string must name {filename} itself (give the artifact's presigned URL)"
        )));
    }
    let files_root = url.path().trim_end_matches('/').ends_with("/files");
    let below = if files_root { upload_path } else { filename };
    url.path_segments_mut()
        .map_err(|_| bad("cannot hold a path".into()))?
        .pop_if_empty()
        .extend(below.split('/'));
    Ok(url.into())
}

/// The profile YAML for a manifest. `endpoint`: base URL the artifact is
/// served from (its file name is appended), or a full URL ending in it.
fn profile_of(m: &Summary, endpoint: Option<&str>, deployer: DeployerArg) -> Result<Profile> {
    if !m.is_goldcap() {
        return Err(Error::usage("not a goldcap JSON MANIFEST"));
    }
    m.check().map_err(Error::usage)?;
    let filename = value(m, &m.filename, "filename")?;
    let kind = image_type(m, filename, deployer)?;
    let url = image_url(
        endpoint,
        value(m, &m.upload_tarball, "upload_tarball")?,
        filename,
    )?;
    let name = filename
        .strip_suffix(".tgz")
        .or_else(|| filename.strip_suffix(".tar.zst"))
        .unwrap_or(filename);
    let os = m
        .source
        .os
        .as_ref()
        .and_then(|o| o.pretty_name.as_deref())
        .or(m.source.os_tag.as_deref())
        .filter(|o| !o.contains("{{") && !o.contains("}}"))
        .unwrap_or("Linux");
    let kexec = m.source.kexec.as_ref().is_some_and(|k| k.supported);
    let (ident, date) = (value(m, &m.ident, "ident")?, value(m, &m.date, "date")?);
    let (md5, sha256) = (value(m, &m.md5, "md5")?, value(m, &m.sha256, "sha256")?);
    let description = format!("Deploy {os} gold image {ident} captured {date} by goldcap");
    let mut documentation = format!("Image {filename} (md5 {md5}, sha256 {sha256}).\n");
    let mut params: Vec<(&'static str, serde_json::Value)> = Vec::new();
    match deployer {
        DeployerArg::ImageDeploy => {
            documentation.push_str("Attach to a machine and run an image-deploy workflow.\n");
            params.push(("image-deploy/image-os", "linux".into()));
            params.push(("image-deploy/image-type", kind.into()));
            params.push(("image-deploy/image-url", url.into()));
        }
        DeployerArg::Eikon => {
            documentation
                .push_str("Attach to a machine and run the eikon-image-deploy pipeline.\n");
            params.push(("eikon/image-type", kind.into()));
            params.push(("eikon/image-url", url.into()));
        }
    }
    if kexec {
        params.push(("kexec-ok", true.into()));
    }
    Ok(Profile {
        name: name.to_owned(),
        description,
        documentation,
        params,
    })
}

/// A DRP profile object, written as YAML (what `drpcli profiles create`
/// and content packs take) or JSON (`--json`).
pub(super) struct Profile {
    name: String,
    description: String,
    /// Lines, each ending in a newline; no control characters otherwise.
    documentation: String,
    params: Vec<(&'static str, serde_json::Value)>,
}

impl Profile {
    /// The YAML document: scalars JSON-quoted where they carry MANIFEST
    /// values, the documentation a literal block.
    pub(super) fn yaml(&self) -> String {
        let mut y = String::new();
        y.push_str("---\n");
        y.push_str(&format!("Name: {}\n", quote(&self.name)));
        y.push_str(&format!("Description: {}\n", quote(&self.description)));
        // A literal block: every value in it was checked to hold no
        // control character, so none can end its line.
        y.push_str("Documentation: |\n");
        for line in self.documentation.lines() {
            y.push_str(&format!("  {line}\n"));
        }
        y.push_str("Params:\n");
        for (k, v) in &self.params {
            let v = match v {
                serde_json::Value::String(s) if !s.contains(['{', ':', '"', '#']) => s.clone(),
                other => other.to_string(),
            };
            y.push_str(&format!("  {k}: {v}\n"));
        }
        y.push_str("Meta:\n  icon: image\n  color: blue\n");
        y
    }

    /// The same object as JSON.
    pub(super) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "Name": self.name,
            "Description": self.description,
            "Documentation": self.documentation,
            "Params": self.params.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect::<serde_json::Map<_, _>>(),
            "Meta": {"icon": "image", "color": "blue"},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::manifest::read::parse_json;
    use serde_json::json;

    const ID: DeployerArg = DeployerArg::ImageDeploy;

    fn render(m: &Summary, endpoint: Option<&str>, deployer: DeployerArg) -> Result<String> {
        profile_of(m, endpoint, deployer).map(|p| p.yaml())
    }

    #[test]
    fn json_is_the_same_object_as_the_yaml() {
        let p = profile_of(&manifest("tgz", true), None, ID).unwrap();
        let j = p.json();
        assert_eq!(j["Name"], "debian-12-rootfs-20261122-101500-cf99cd80eb");
        assert_eq!(j["Params"]["image-deploy/image-type"], "tgz");
        assert_eq!(j["Params"]["kexec-ok"], true);
        assert_eq!(
            j["Params"]["image-deploy/image-url"],
            "{{.ProvisionerURL}}/files/images/debian-12-rootfs-20261122-101500-cf99cd80eb.tgz"
        );
        assert!(
            j["Documentation"]
                .as_str()
                .unwrap()
                .starts_with("Image debian-12")
        );
    }

    fn manifest(format: &str, kexec: bool) -> Summary {
        let v = json!({
            "tool": {"name": "goldcap"}, "filename": "debian-12-rootfs-20261122-101500-cf99cd80eb.tgz",
            "upload_tarball": "images/debian-12-rootfs-20261122-101500-cf99cd80eb.tgz", "format": format,
            "ident": "cf99cd80eb", "date": "2026-11-22T10:15:00Z",
            "md5": "900150983cd24fb0d6963f7d28e17f72",
            "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "source": {"os": {"pretty_name": "Debian GNU/Linux 12 (bookworm)"}, "kexec": {"supported": kexec}}
        });
        parse_json(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn profile_table() {
        let y = render(&manifest("tgz", true), None, ID).unwrap();
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
        let y = render(
            &manifest("tgz", false),
            Some("https://s3.example/gold/"),
            ID,
        )
        .unwrap();
        assert!(y.contains("image-url: \"https://s3.example/gold/debian-12-rootfs-20261122-101500-cf99cd80eb.tgz\""), "{y}");
        assert!(!y.contains("kexec-ok"), "{y}");
        let signed = "https://s3.example/gold/debian-12-rootfs-20261122-101500-cf99cd80eb.tgz?X-Amz-Signature=ab";
        let y = render(&manifest("tgz", false), Some(signed), ID).unwrap();
        assert!(y.contains(&format!("image-url: \"{signed}\"\n")), "{y}");
        let e = render(&manifest("tzst", false), None, ID).unwrap_err();
        assert!(e.to_string().contains("cannot deploy a .tar.zst"), "{e}");
    }

    #[test]
    fn image_url_table() {
        let up = "images/debian-12-rootfs-20261122-101500-cf99cd80eb.tgz";
        let f = "debian-12-rootfs-20261122-101500-cf99cd80eb.tgz";
        let ok = [
            (None, format!("{{{{.ProvisionerURL}}}}/files/{up}")),
            (Some("{{.ProvisionerURL}}/files/"), format!("{{{{.ProvisionerURL}}}}/files/{up}")),
            (Some("{{.ProvisionerURL}}/files"), format!("{{{{.ProvisionerURL}}}}/files/{up}")),
            (Some("{{.ProvisionerURL}}/mirror/"), format!("{{{{.ProvisionerURL}}}}/mirror/{f}")),
            (Some("https://drp.example:8090/files/"), format!("https://drp.example:8090/files/{up}")),
            (Some("https://s3.example/gold/"), format!("https://s3.example/gold/{f}")),
            (Some("https://s3.example/gold"), format!("https://s3.example/gold/{f}")),
            (Some("http://10.0.0.1"), format!("http://10.0.0.1/{f}")),
            (
                Some("https://s3.example/gold/debian-12-rootfs-20261122-101500-cf99cd80eb.tgz?X-Amz-Signature=ab&X-Amz-Expires=60"),
                "https://s3.example/gold/debian-12-rootfs-20261122-101500-cf99cd80eb.tgz?X-Amz-Signature=ab&X-Amz-Expires=60".into(),
            ),
        ];
        for (endpoint, want) in ok {
            assert_eq!(image_url(endpoint, up, f).unwrap(), want, "{endpoint:?}");
        }
        for (endpoint, why) in [
            ("ftp://mirror/images/", "scheme \"ftp\""),
            ("file:///srv/images/", "scheme \"file\""),
            (
                "https://s3.example/gold/?X-Amz-Signature=ab",
                "query string",
            ),
            ("not a url", "not a URL"),
            ("{{.ProvisionerURL}}?x=1", "only a path"),
            ("{{.ProvisionerURL}}/files/{{.Machine.Name}}", "only a path"),
            ("https://x/\n", "control characters"),
        ] {
            let e = image_url(Some(endpoint), up, f).unwrap_err().to_string();
            assert!(e.contains(why), "{endpoint}: {e}");
        }
    }

    #[test]
    fn eikon_profile_names_its_image_type() {
        let eikon = DeployerArg::Eikon;
        let mut m = manifest("tzst", true);
        m.filename = Some("debian-12-rootfs-20261122-101500-cf99cd80eb.tar.zst".into());
        m.upload_tarball =
            Some("images/debian-12-rootfs-20261122-101500-cf99cd80eb.tar.zst".into());
        let y = render(&m, None, eikon).unwrap();
        assert!(
            y.starts_with("---\nName: \"debian-12-rootfs-20261122-101500-cf99cd80eb\"\n"),
            "{y}"
        );
        assert!(y.contains("  eikon/image-type: tar-zst\n  eikon/image-url: \"{{.ProvisionerURL}}/files/images/debian-12-rootfs-20261122-101500-cf99cd80eb.tar.zst\"\n"), "{y}");
        assert!(!y.contains("image-deploy/"), "{y}");
        assert!(y.contains("eikon-image-deploy"), "{y}");
        let y = render(&manifest("tgz", false), None, eikon).unwrap();
        assert!(y.contains("  eikon/image-type: tgz\n"), "{y}");
        let e = render(&manifest("zip", false), None, eikon).unwrap_err();
        assert!(e.to_string().contains("unknown format"), "{e}");
        // A hostile value is refused for Eikon as for image-deploy.
        m.ident = Some("a\nEvil: true".into());
        assert!(render(&m, None, eikon).is_err());
    }

    #[test]
    fn manifest_values_cannot_break_the_yaml() {
        // A newline would add top-level keys; braces reach DRP's template
        // engine; both are refused.
        for (key, value) in [
            ("filename", "x.tgz\nEvil: true"),
            ("filename", "{{.Machine.Name}}.tgz"),
            ("upload_tarball", "images/{{.Env}}.tgz"),
            ("ident", "a\nb"),
        ] {
            let mut m = manifest("tgz", false);
            match key {
                "filename" => m.filename = Some(value.into()),
                "upload_tarball" => m.upload_tarball = Some(value.into()),
                _ => m.ident = Some(value.into()),
            }
            let e = render(&m, None, ID).unwrap_err();
            assert_eq!(
                e.exit_code(),
                crate::report::exit::ExitCode::Usage,
                "{key}: {e}"
            );
        }
        // Quotes and backslashes in a value stay inside its scalar.
        let mut m = manifest("tgz", false);
        m.source.os.as_mut().unwrap().pretty_name = Some("Evil\" \\ OS\u{7}".into());
        let y = render(&m, None, ID).unwrap();
        assert!(
            y.contains("Description: \"Deploy Evil\\\" \\\\ OS\\u0007 gold image"),
            "{y}"
        );
        // ---, Name, Description, Documentation, Params, Meta.
        assert_eq!(y.lines().filter(|l| !l.starts_with(' ')).count(), 6, "{y}");
    }

    #[test]
    fn mutated_manifests_never_break_the_yaml() {
        use crate::output::manifest::read::fuzz::SEED_MANIFEST;
        use crate::testkit::{JSON_PIECES, Rng, mutate};
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut rendered = 0;
        for _ in 0..3000 {
            let input = mutate(&mut rng, SEED_MANIFEST.as_bytes(), JSON_PIECES);
            let Ok(m) = parse_json(&input[..]) else {
                continue;
            };
            for deployer in [ID, DeployerArg::Eikon] {
                if let Ok(y) = render(&m, None, deployer) {
                    rendered += 1;
                    // ---, Name, Description, Documentation, Params, Meta.
                    assert_eq!(y.lines().filter(|l| !l.starts_with(' ')).count(), 6, "{y}");
                    let url = y.lines().find(|l| l.contains("image-url:")).unwrap();
                    assert_eq!(url.matches("{{").count(), 1, "{url}");
                }
            }
        }
        assert!(rendered > 50, "{rendered} rendered");
    }
}
