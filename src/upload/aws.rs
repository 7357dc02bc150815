//! S3 credentials, region and endpoint, found the way the AWS tools find
//! them: the environment, then the shared files (`~/.aws/credentials`,
//! `~/.aws/config`, profile `AWS_PROFILE`), then the instance metadata
//! service (IMDSv2).
//!
//! Part of the upload stage, before any S3 request. The files are input:
//! read bounded, regular files only, parsed as the AWS CLI's INI. Secrets
//! found here go only into the signer; this module must never put a key,
//! a secret or a session token into a message (the messages name where a
//! value came from, never the value).

use crate::report::error::{Error, Result};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

/// The most of a shared credentials or config file read.
const FILE_LIMIT: u64 = 1 << 20;
/// The most of an instance metadata answer read.
const IMDS_LIMIT: u64 = 64 << 10;
/// IMDS's own address, unless `AWS_EC2_METADATA_SERVICE_ENDPOINT`.
const IMDS_DEFAULT: &str = "http://169.254.169.254";

/// What S3 requests are signed and sent with.
#[derive(Debug, PartialEq, Eq)]
pub struct Settings {
    pub key: String,
    pub secret: String,
    pub token: Option<String>,
    /// Where the credentials came from, for messages.
    pub source: String,
    pub region: String,
    /// A custom (S3-compatible) endpoint.
    pub endpoint: Option<String>,
}

/// INI sections (`[default]`, `[profile x]`) of `key = value` lines, as
/// the AWS CLI reads them: `#`/`;` comments, keys lowercased, values
/// trimmed; nested (indented) lines ignored.
pub fn parse_ini(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut section: Option<String> = None;
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let l = line.trim();
        if l.is_empty() || l.starts_with(['#', ';']) {
            continue;
        }
        if let Some(name) = l.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            out.entry(name.clone()).or_default();
            section = Some(name);
        } else if let (Some(s), Some((k, v))) = (&section, l.split_once('=')) {
            out.entry(s.clone())
                .or_default()
                .insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    out
}

/// Key, secret and session token from the metadata service, or why not.
pub type Imds = std::result::Result<(String, String, String), String>;

/// The variables, files and metadata endpoint a lookup uses (the real
/// environment, or a table in tests).
pub struct Lookup<'a> {
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Reads a shared file; `Ok(None)` when it does not exist.
    pub read: &'a dyn Fn(&PathBuf) -> std::io::Result<Option<String>>,
    /// Asks the metadata service; `None` when it is switched off.
    pub imds: Option<&'a dyn Fn() -> Imds>,
}

/// Finds the settings: environment, shared credentials file, config file,
/// instance metadata; region and endpoint from the environment, else the
/// profile in the config file.
pub fn resolve(l: &Lookup<'_>) -> Result<Settings> {
    let env = |k: &str| (l.env)(k).filter(|v| !v.is_empty());
    // Without HOME (a bare service environment) only named files count.
    let home = env("HOME");
    let file = |var: &str, in_home: &str| {
        env(var)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| PathBuf::from(h).join(in_home)))
    };
    let creds_file = file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials");
    let config_file = file("AWS_CONFIG_FILE", ".aws/config");
    // How messages name them.
    let shown = |f: &Option<PathBuf>, default: &str| {
        f.as_ref().map_or_else(
            || format!("{default} (no HOME)"),
            |p| p.display().to_string(),
        )
    };
    let (creds_shown, config_shown) = (
        shown(&creds_file, "~/.aws/credentials"),
        shown(&config_file, "~/.aws/config"),
    );
    let explicit = env("AWS_PROFILE").or_else(|| env("AWS_DEFAULT_PROFILE"));
    let profile = explicit.clone().unwrap_or_else(|| "default".into());
    let load = |p: &Option<PathBuf>| -> Result<Option<BTreeMap<String, BTreeMap<String, String>>>> {
        let Some(p) = p else {
            return Ok(None);
        };
        (l.read)(p)
            .map(|t| t.as_deref().map(parse_ini))
            .map_err(|e| Error::usage(format!("{}: {}", p.display(), crate::util::io_reason(&e))))
    };
    let creds_ini = load(&creds_file)?;
    let config_ini = load(&config_file)?;
    let in_creds = creds_ini.as_ref().and_then(|i| i.get(&profile));
    let config_section = if profile == "default" {
        "default".to_owned()
    } else {
        format!("profile {profile}")
    };
    let in_config = config_ini.as_ref().and_then(|i| i.get(&config_section));
    if explicit.is_some() && in_creds.is_none() && in_config.is_none() {
        return Err(Error::usage(format!(
            "AWS profile {profile:?} is in neither {} nor {}",
            creds_shown, config_shown
        )));
    }
    let from_section = |s: Option<&BTreeMap<String, String>>| {
        let s = s?;
        let get = |k: &str| s.get(k).filter(|v| !v.is_empty()).cloned();
        Some((
            get("aws_access_key_id")?,
            get("aws_secret_access_key")?,
            get("aws_session_token"),
        ))
    };
    let (key, secret, token, source) =
        if let (Some(k), Some(s)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (
                k,
                s,
                env("AWS_SESSION_TOKEN"),
                "the environment (AWS_ACCESS_KEY_ID)".to_owned(),
            )
        } else if let Some((k, s, t)) = from_section(in_creds) {
            (k, s, t, format!("{} [{profile}]", creds_shown))
        } else if let Some((k, s, t)) = from_section(in_config) {
            (k, s, t, format!("{} [{config_section}]", config_shown))
        } else if let Some(ask) = l.imds.filter(|_| explicit.is_none()) {
            let (k, s, t) = ask().map_err(|why| {
                Error::usage(format!(
                    "S3 credentials missing: none in the environment (AWS_ACCESS_KEY_ID, \
                     AWS_SECRET_ACCESS_KEY), {} or {} [{profile}], and the instance metadata \
                     service gave none ({why})",
                    creds_shown, config_shown
                ))
            })?;
            (
                k,
                s,
                Some(t),
                "the instance metadata service (IMDSv2)".to_owned(),
            )
        } else {
            return Err(Error::usage(format!(
                "S3 credentials missing: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and \
                 AWS_SESSION_TOKEN for temporary ones), or put them in {} [{profile}]",
                creds_shown
            )));
        };
    let from_config = |k: &str| {
        in_config
            .and_then(|s| s.get(k))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    Ok(Settings {
        key,
        secret,
        token,
        source,
        region: env("AWS_REGION")
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .or_else(|| from_config("region"))
            .unwrap_or_else(|| "us-east-1".into()),
        endpoint: env("AWS_ENDPOINT_URL_S3")
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .or_else(|| from_config("endpoint_url")),
    })
}

/// The settings from this process's environment, files and, unless
/// `AWS_EC2_METADATA_DISABLED=true`, the metadata service.
pub fn from_environment() -> Result<Settings> {
    let env = |k: &str| std::env::var(k).ok();
    let read = |p: &PathBuf| match crate::input::read_to_string(p, FILE_LIMIT) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    };
    let endpoint = env("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| IMDS_DEFAULT.into());
    let ask = move || imds(&endpoint);
    let disabled = env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    resolve(&Lookup {
        env: &env,
        read: &read,
        imds: (!disabled).then_some(&ask as &dyn Fn() -> _),
    })
}

/// IMDSv2: a session token (PUT), the instance role's name, then its
/// temporary credentials. Short timeouts: off EC2 nothing answers.
fn imds(endpoint: &str) -> Imds {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .max_redirects(0)
        .build()
        .new_agent();
    let base = endpoint.trim_end_matches('/');
    let at = super::http::redact(base);
    let read =
        |resp: &mut ureq::http::Response<ureq::Body>| -> std::result::Result<String, String> {
            let status = resp.status().as_u16();
            let mut text = String::new();
            resp.body_mut()
                .as_reader()
                .take(IMDS_LIMIT)
                .read_to_string(&mut text)
                .map_err(|e| format!("{at}: {e}"))?;
            if status != 200 {
                return Err(format!("{at}: HTTP {status}"));
            }
            Ok(text)
        };
    let mut resp = agent
        .put(&format!("{base}/latest/api/token"))
        .header("X-aws-ec2-metadata-token-ttl-seconds", "21600")
        .send_empty()
        .map_err(|e| format!("{at}: {}", super::http::redact_error(&e.to_string())))?;
    let session = read(&mut resp)?;
    let get = |path: &str| -> std::result::Result<String, String> {
        let mut resp = agent
            .get(&format!("{base}{path}"))
            .header("X-aws-ec2-metadata-token", session.trim())
            .call()
            .map_err(|e| format!("{at}: {}", super::http::redact_error(&e.to_string())))?;
        read(&mut resp)
    };
    let roles = get("/latest/meta-data/iam/security-credentials/")?;
    let role = roles
        .lines()
        .next()
        .map(str::trim)
        .filter(|r| {
            !r.is_empty()
                && r.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
        })
        .ok_or_else(|| format!("{at}: no instance role"))?;
    let doc = get(&format!(
        "/latest/meta-data/iam/security-credentials/{role}"
    ))?;
    let v: serde_json::Value =
        serde_json::from_str(&doc).map_err(|_| format!("{at}: role {role}: not JSON"))?;
    let field = |k: &str| {
        v[k].as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| format!("{at}: role {role}: no {k}"))
    };
    Ok((
        field("AccessKeyId")?,
        field("SecretAccessKey")?,
        field("Token")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_table() {
        let ini = parse_ini(
            "# c\n[default]\naws_access_key_id = AKIA1\nAWS_Secret_Access_Key=s1\n\n\
             [profile  dev]\nregion = eu-west-1\ns3 =\n  addressing_style = path\n; x\n\
             orphan\n[broken\nkey = v\n",
        );
        assert_eq!(ini["default"]["aws_access_key_id"], "AKIA1");
        assert_eq!(ini["default"]["aws_secret_access_key"], "s1");
        assert_eq!(ini["profile dev"]["region"], "eu-west-1");
        assert!(!ini["profile dev"].contains_key("addressing_style"));
        assert_eq!(
            ini["profile dev"]["key"], "v",
            "a broken header keeps the section"
        );
    }

    fn run(vars: &[(&str, &str)], files: &[(&str, &str)], imds: Option<Imds>) -> Result<Settings> {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let files: BTreeMap<PathBuf, String> = files
            .iter()
            .map(|(k, v)| (PathBuf::from(k), v.to_string()))
            .collect();
        let env = |k: &str| vars.get(k).cloned();
        let read = |p: &PathBuf| Ok(files.get(p).cloned());
        let ask = || imds.clone().unwrap();
        resolve(&Lookup {
            env: &env,
            read: &read,
            imds: imds.is_some().then_some(&ask as &dyn Fn() -> _),
        })
    }

    const CREDS: &str = "[default]\naws_access_key_id=AKD\naws_secret_access_key=SD\n\
                         [ci]\naws_access_key_id=AKC\naws_secret_access_key=SC\naws_session_token=TC\n";
    const CONFIG: &str = "[default]\nregion=eu-north-1\n[profile ci]\nregion=ap-south-1\n\
                          endpoint_url=http://minio:9000\n[profile cfgonly]\n\
                          aws_access_key_id=AKF\naws_secret_access_key=SF\n";

    #[test]
    fn the_chain_in_order() {
        let home = [("HOME", "/h")];
        let files = [("/h/.aws/credentials", CREDS), ("/h/.aws/config", CONFIG)];
        let imds_ok = Some(Ok(("AKI".into(), "SI".into(), "TI".into())));
        // Environment first, whatever the files say.
        let s = run(
            &[
                ("HOME", "/h"),
                ("AWS_ACCESS_KEY_ID", "AKE"),
                ("AWS_SECRET_ACCESS_KEY", "SE"),
            ],
            &files,
            imds_ok.clone(),
        )
        .unwrap();
        assert_eq!(
            (s.key.as_str(), s.token, s.region.as_str()),
            ("AKE", None, "eu-north-1")
        );
        // Then the credentials file's default profile.
        let s = run(&home, &files, imds_ok.clone()).unwrap();
        assert_eq!(
            (s.key.as_str(), s.source.as_str()),
            ("AKD", "/h/.aws/credentials [default]")
        );
        // AWS_PROFILE: its credentials, its region and endpoint from config.
        let s = run(
            &[("HOME", "/h"), ("AWS_PROFILE", "ci")],
            &files,
            imds_ok.clone(),
        )
        .unwrap();
        assert_eq!(
            (
                s.key.as_str(),
                s.token.as_deref(),
                s.region.as_str(),
                s.endpoint.as_deref()
            ),
            ("AKC", Some("TC"), "ap-south-1", Some("http://minio:9000"))
        );
        // Credentials in the config file only.
        let s = run(&[("HOME", "/h"), ("AWS_PROFILE", "cfgonly")], &files, None).unwrap();
        assert_eq!(
            (s.key.as_str(), s.source.as_str()),
            ("AKF", "/h/.aws/config [profile cfgonly]")
        );
        // The environment's region and endpoint win over the profile's.
        let s = run(
            &[
                ("HOME", "/h"),
                ("AWS_PROFILE", "ci"),
                ("AWS_REGION", "us-west-2"),
                ("AWS_ENDPOINT_URL", "http://x:1"),
            ],
            &files,
            None,
        )
        .unwrap();
        assert_eq!(
            (s.region.as_str(), s.endpoint.as_deref()),
            ("us-west-2", Some("http://x:1"))
        );
        // No files: the metadata service.
        let s = run(&home, &[], imds_ok.clone()).unwrap();
        assert_eq!(
            (s.key.as_str(), s.token.as_deref(), s.region.as_str()),
            ("AKI", Some("TI"), "us-east-1")
        );
        assert!(s.source.contains("IMDSv2"));
        // Named files.
        let s = run(
            &[
                ("AWS_SHARED_CREDENTIALS_FILE", "/c"),
                ("AWS_CONFIG_FILE", "/g"),
            ],
            &[("/c", CREDS), ("/g", CONFIG)],
            None,
        )
        .unwrap();
        assert_eq!((s.key.as_str(), s.region.as_str()), ("AKD", "eu-north-1"));
    }

    #[test]
    fn failures_say_where_they_looked_and_never_a_secret() {
        let files = [("/h/.aws/credentials", CREDS)];
        let e = run(&[("HOME", "/h"), ("AWS_PROFILE", "nope")], &files, None).unwrap_err();
        assert!(
            e.to_string()
                .contains("\"nope\" is in neither /h/.aws/credentials nor /h/.aws/config"),
            "{e}"
        );
        let e = run(
            &[("HOME", "/h")],
            &[],
            Some(Err("http://169.254.169.254: timed out".into())),
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("instance metadata service gave none (http://169.254.169.254: timed out)"),
            "{msg}"
        );
        let e = run(&[("HOME", "/h")], &[], None).unwrap_err();
        assert!(
            e.to_string()
                .contains("put them in /h/.aws/credentials [default]"),
            "{e}"
        );
        // A half-filled profile is not used, and its secret is not shown.
        let half = [(
            "/h/.aws/credentials",
            "[default]\naws_secret_access_key=TOPSECRET\n",
        )];
        let e = run(&[("HOME", "/h")], &half, None).unwrap_err();
        assert!(!e.to_string().contains("TOPSECRET"), "{e}");
    }
}
