//! The DRP content pack in `manifests/drp/` and the Packer example in
//! `examples/packer/`, tested as their consumers would use them: every
//! YAML file parses and names what the others refer to; the task's script
//! template is rendered as dr-provision renders it (a small Go-template
//! evaluator for exactly the constructs the template uses; anything else
//! fails the test) and run with bash against the DRP contract server with a
//! job token limited to the task's `ExtraClaims`; `goldcap profile`'s
//! image-deploy and Eikon profiles parse; the Packer example only uses
//! options `goldcap capture --help` lists. Nothing here talks to a real
//! endpoint, and no token is written anywhere but the test's environment.

use crate::common::*;
use crate::upload::Drp;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn pack() -> PathBuf {
    project().join("manifests/drp")
}

/// image-builder's params the pack reads but does not define, with their
/// documented defaults (`../shared/reference/drp-image-builder.md` §1,
/// image-builder/params). image-builder is a prerequisite and owns them: a
/// second content pack defining the same object is refused by
/// dr-provision ("New layer violates key restrictions:
/// keysCannotBeOverridden: … is already in layer 1", digitalrebar/provision
/// cli/content_functional_test.go), so redefining them would keep the pack
/// from loading beside image-builder.
fn image_builder_params() -> BTreeMap<String, Value> {
    [
        ("image-builder/upload-path", json!("images")),
        (
            "image-builder/upload-rootfs-name",
            json!("$TAG-rootfs-$DSTAMP-$RS_IMAGE_IDENT"),
        ),
        (
            "image-builder/upload-manifest-name",
            json!("$TAG-MANIFEST-$DSTAMP-$RS_IMAGE_IDENT"),
        ),
        (
            "image-builder/additional-excludes",
            json!(["./etc/default/grub", "./boot/grub2/grub.cfg"]),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Stages the workflow may name that other content packs provide
/// (image-builder and drp-community-content, the pack's prerequisites).
const FOREIGN_STAGES: &[&str] = &[
    "image-builder-start",
    "centos-7-install",
    "ssh-access",
    "drp-agent",
    "image-builder-pre-builder-flexiflow",
    "image-builder-linux",
    "image-builder-post-builder-flexiflow",
    "complete-nobootenv",
];

/// The YAML files of one section (`params`, `tasks` ...), by file name.
fn section(name: &str) -> BTreeMap<String, serde_yaml_ng::Value> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(pack().join(name)).unwrap() {
        let p = e.unwrap().path();
        let file = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(file.ends_with(".yaml"), "{name}/{file}: not a .yaml file");
        let text = std::fs::read_to_string(&p).unwrap();
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
            .unwrap_or_else(|e| panic!("{name}/{file} does not parse: {e}"));
        out.insert(file, v);
    }
    assert!(!out.is_empty(), "{name}/ is empty");
    out
}

fn as_json(v: &serde_yaml_ng::Value) -> Value {
    serde_json::to_value(v).unwrap()
}

/// The pack's own params: name → default.
fn pack_params() -> BTreeMap<String, Value> {
    section("params")
        .into_iter()
        .map(|(file, v)| {
            let v = as_json(&v);
            let name = v["Name"].as_str().unwrap().to_owned();
            assert_eq!(file, format!("{}.yaml", name.replace('/', "-")), "{file}");
            assert!(name.starts_with("goldcap/"), "{name}: not goldcap's");
            let default = v["Schema"]["default"].clone();
            assert!(!default.is_null(), "{name}: no Schema.default");
            (name, default)
        })
        .collect()
}

fn template() -> String {
    std::fs::read_to_string(pack().join("templates/goldcap-capture.sh.tmpl")).unwrap()
}

// ---------------------------------------------------------------- Go templates

/// What a template sees: the machine's params (with defaults filled in, as
/// `.Param` does) and the endpoint's URL.
struct Machine {
    params: BTreeMap<String, Value>,
    provisioner_url: String,
}

impl Machine {
    fn param(&self, name: &str) -> &Value {
        self.params
            .get(name)
            .unwrap_or_else(|| panic!("template: no such machine parameter {name}"))
    }
}

/// `{{ … }}` actions and the text between them, with Go's `{{- ` and
/// ` -}}` whitespace trimming applied.
fn lex(tmpl: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut rest = tmpl;
    while let Some(i) = rest.find("{{") {
        let mut text = rest[..i].to_owned();
        let after = &rest[i + 2..];
        let j = after.find("}}").expect("an unclosed {{");
        let mut inner = &after[..j];
        if let Some(s) = inner.strip_prefix("- ") {
            text = text.trim_end().to_owned();
            inner = s;
        }
        let trim_next = inner.ends_with(" -");
        if trim_next {
            inner = &inner[..inner.len() - 2];
        }
        out.push((text, Some(inner.trim().to_owned())));
        rest = &after[j + 2..];
        if trim_next {
            rest = rest.trim_start();
        }
    }
    out.push((rest.to_owned(), None));
    out
}

/// `.Param "x"`, `.ParamAsJSON "x"` or `.ProvisionerURL`; anything else
/// is a construct this evaluator does not know, and fails the test.
fn eval(expr: &str, m: &Machine) -> Value {
    if expr == ".ProvisionerURL" {
        return json!(m.provisioner_url);
    }
    let (func, arg) = expr.split_once(' ').expect(expr);
    let name = arg
        .trim()
        .strip_prefix('"')
        .and_then(|a| a.strip_suffix('"'))
        .unwrap_or_else(|| panic!("template: {expr:?}: one quoted argument expected"));
    match func {
        ".Param" => m.param(name).clone(),
        // Go's encoding/json Encoder: HTML characters and the JavaScript
        // line separators escaped, a newline at the end.
        ".ParamAsJSON" => {
            let s = serde_json::to_string(m.param(name))
                .unwrap()
                .replace('<', "\\u003c")
                .replace('>', "\\u003e")
                .replace('&', "\\u0026")
                .replace('\u{2028}', "\\u2028")
                .replace('\u{2029}', "\\u2029");
            json!(format!("{s}\n"))
        }
        _ => panic!("template: {expr:?} is not a construct the test knows"),
    }
}

/// Go's `if`: false, 0, nil and empty strings and lists are false.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// What `{{ .Param }}` prints.
fn print(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(_) | Value::Number(_) => v.to_string(),
        _ => panic!("template: printing {v} the way Go would is not implemented"),
    }
}

/// Renders a template as dr-provision would for `m`.
fn render(tmpl: &str, m: &Machine) -> String {
    // One entry per open `if`: whether its branch is being output.
    let mut stack: Vec<(bool, bool)> = Vec::new(); // (outer active, condition)
    let active = |s: &[(bool, bool)]| s.last().is_none_or(|&(outer, cond)| outer && cond);
    let mut out = String::new();
    for (text, action) in lex(tmpl) {
        if active(&stack) {
            out.push_str(&text);
        }
        let Some(a) = action else { break };
        if let Some(expr) = a.strip_prefix("if ") {
            let outer = active(&stack);
            let cond = outer && truthy(&eval(expr.trim(), m));
            stack.push((outer, cond));
        } else if a == "else" {
            let (outer, cond) = stack.pop().expect("else without if");
            stack.push((outer, !cond));
        } else if a == "end" {
            stack.pop().expect("end without if");
        } else if active(&stack) {
            out.push_str(&print(&eval(&a, m)));
        }
    }
    assert!(stack.is_empty(), "template: an if without end");
    out
}

/// Every param name a template refers to.
fn param_refs(text: &str) -> Vec<String> {
    let re = regex::Regex::new(r#"\.(?:Param|ParamAsJSON|ParamExists|ParamExpand)\s+"([^"]+)""#)
        .unwrap();
    re.captures_iter(text).map(|c| c[1].to_owned()).collect()
}

/// The pack's defaults and image-builder's, then `set`.
fn machine(set: &[(&str, Value)], provisioner_url: &str) -> Machine {
    let mut params = image_builder_params();
    params.extend(pack_params());
    for (k, v) in set {
        assert!(params.contains_key(*k), "{k}: not a param the pack knows");
        params.insert((*k).to_owned(), v.clone());
    }
    Machine {
        params,
        provisioner_url: provisioner_url.to_owned(),
    }
}

/// The `[capture]` config the rendered script writes (its quoted
/// here-document), parsed as goldcap parses it.
fn rendered_config(script: &str) -> toml::Table {
    let start = script
        .find("<<'GOLDCAP_PARAMS_END'\n")
        .expect("no config here-document")
        + "<<'GOLDCAP_PARAMS_END'\n".len();
    let end = start
        + script[start..]
            .find("\nGOLDCAP_PARAMS_END\n")
            .expect("the here-document is not closed on a line of its own");
    toml::from_str(&script[start..end]).unwrap_or_else(|e| panic!("{e}\n{}", &script[start..end]))
}

// ---------------------------------------------------------------- the pack

/// Every file parses; the task, stage and workflow name each other and
/// only params, templates and stages that exist; the token's claims are
/// files post,get only; nothing weakens the scrub by default.
#[test]
fn drp_pack_parses_and_every_reference_resolves() {
    let meta = as_json(
        &serde_yaml_ng::from_str(&std::fs::read_to_string(pack().join("meta.yaml")).unwrap())
            .unwrap(),
    );
    assert_eq!(meta["Name"], "goldcap");
    // drpcli's bundle reads the metadata from `._<Field>.meta` files:
    // they say what meta.yaml says.
    let fields = meta.as_object().unwrap();
    for (k, v) in fields {
        let file = pack().join(format!("._{k}.meta"));
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(text.trim(), v.as_str().unwrap().trim(), "._{k}.meta");
    }
    for e in std::fs::read_dir(pack()).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(k) = name
            .strip_prefix("._")
            .and_then(|n| n.strip_suffix(".meta"))
        {
            assert!(fields.contains_key(k), "{name}: not in meta.yaml");
        }
    }
    assert!(
        meta["Prerequisites"]
            .as_str()
            .unwrap()
            .contains("image-builder")
    );
    let params = pack_params();
    let ib = image_builder_params();
    // The identity scrub is whole unless a machine says otherwise.
    assert_eq!(params["goldcap/operations"], json!(["defaults"]));
    assert_eq!(params["goldcap/allow-identity"], json!(false));
    assert_eq!(params["goldcap/tls-insecure"], json!(false));
    assert_eq!(params["goldcap/format"], json!("tgz"));
    // No object of image-builder's is defined again (see
    // image_builder_params).
    for name in params.keys() {
        assert!(!ib.contains_key(name), "{name} belongs to image-builder");
    }

    let tasks = section("tasks");
    assert_eq!(tasks.len(), 1);
    let task = as_json(&tasks["goldcap-capture.yaml"]);
    assert_eq!(task["Name"], "goldcap-capture");
    assert_eq!(task["Meta"]["feature-flags"], "sane-exit-codes");
    assert_eq!(
        task["ExtraClaims"],
        json!([{"scope": "files", "action": "post,get", "specific": "*"}]),
        "the job token may store and read back files, nothing else"
    );
    // Its templates exist, and every param they or the task name is the
    // pack's or a documented image-builder one.
    let mut used = Vec::new();
    for t in task["Templates"].as_array().unwrap() {
        let id = t["ID"].as_str().unwrap();
        let text = std::fs::read_to_string(pack().join("templates").join(id))
            .unwrap_or_else(|e| panic!("template {id}: {e}"));
        used.extend(param_refs(&text));
    }
    let declared: Vec<String> = task["OptionalParams"]
        .as_array()
        .unwrap()
        .iter()
        .chain(task["RequiredParams"].as_array().into_iter().flatten())
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    for p in used.iter().chain(&declared) {
        assert!(
            params.contains_key(p) || ib.contains_key(p),
            "{p}: neither defined in the pack nor a documented image-builder param"
        );
    }
    for p in params.keys().chain(ib.keys()) {
        assert!(used.contains(p), "{p}: the template never reads it");
        assert!(declared.contains(p), "{p}: not in the task's params");
    }
    for t in std::fs::read_dir(pack().join("templates")).unwrap() {
        let name = t.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            task["Templates"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["ID"] == name.as_str()),
            "templates/{name}: no task uses it"
        );
    }

    let stages = section("stages");
    let stage = as_json(&stages["goldcap-capture.yaml"]);
    assert_eq!(stage["Tasks"], json!(["goldcap-capture"]));
    let workflows = section("workflows");
    for (file, w) in &workflows {
        let w = as_json(w);
        let names: Vec<&str> = w["Stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        for s in &names {
            assert!(
                stages.contains_key(&format!("{s}.yaml")) || FOREIGN_STAGES.contains(s),
                "{file}: stage {s} is defined nowhere"
            );
        }
        // image-builder's flexiflow lists still run, and goldcap's capture
        // is where image-builder's was.
        assert!(!names.contains(&"image-builder-capture"), "{file}");
        let flex = names
            .iter()
            .position(|s| *s == "image-builder-post-builder-flexiflow")
            .unwrap();
        assert_eq!(names[flex + 1], "goldcap-capture", "{file}");
    }
}

/// Hostile param values reach goldcap as the same strings and nothing
/// else: the config here-document stays one TOML table whatever they hold.
#[test]
fn drp_template_params_cannot_escape_their_values() {
    let hostile = "x'; touch /tmp/pwned; '\"\nGOLDCAP_PARAMS_END\n[evil]\n$(id) `id` <&>\u{2028}";
    let m = machine(
        &[
            ("image-builder/upload-rootfs-name", json!(hostile)),
            ("image-builder/additional-excludes", json!([hostile, "./a"])),
            ("goldcap/hooks", json!([hostile])),
            ("goldcap/scrub-profile", json!(hostile)),
        ],
        "http://drp.example:8091",
    );
    let script = render(&template(), &m);
    let c = rendered_config(&script);
    assert_eq!(c.len(), 1, "{c:?}");
    let capture = c["capture"].as_table().unwrap();
    assert_eq!(capture["rootfs-name"].as_str(), Some(hostile));
    assert_eq!(capture["scrub-profile"].as_str(), Some(hostile));
    assert_eq!(
        capture["exclude"].as_array().unwrap()[0].as_str(),
        Some(hostile)
    );
    assert_eq!(
        capture["hook"].as_array().unwrap()[0].as_str(),
        Some(hostile)
    );
    assert!(!capture.contains_key("allow-identity"));
    assert!(!capture.contains_key("insecure"));
    // The defaults: no optional keys, no warnings.
    let script = render(&template(), &machine(&[], "http://drp.example:8091"));
    let c = rendered_config(&script);
    let capture = c["capture"].as_table().unwrap();
    let keys: Vec<&str> = capture.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "exclude",
            "format",
            "hook",
            "manifest-name",
            "operations",
            "root",
            "rootfs-name",
            "upload-path"
        ]
    );
    assert!(!script.contains("WARNING"), "{script}");
    assert!(!script.contains("ca.pem"), "{script}");
    assert!(script.contains("'http://drp.example:8091/files/goldcap/goldcap-x86_64'"));
    // Weakening is said in the job log.
    let script = render(
        &template(),
        &machine(
            &[
                ("goldcap/allow-identity", json!(true)),
                ("goldcap/tls-insecure", json!(true)),
            ],
            "http://drp.example:8091",
        ),
    );
    let capture = rendered_config(&script)["capture"]
        .as_table()
        .unwrap()
        .clone();
    assert_eq!(capture["allow-identity"].as_bool(), Some(true));
    assert_eq!(capture["insecure"].as_bool(), Some(true));
    assert!(script.contains("WARNING: goldcap/allow-identity is true"));
    assert!(script.contains("WARNING: goldcap/tls-insecure is true"));
    // The two values pasted as text, not JSON, are held by their schema
    // patterns (DRP checks a value against its param's schema when it is
    // set) to characters that cannot leave their quotes or here-document.
    let pattern = |name: &str| {
        let file = format!("{}.yaml", name.replace('/', "-"));
        let v = as_json(&section("params")[&file]);
        regex::Regex::new(v["Schema"]["pattern"].as_str().unwrap()).unwrap()
    };
    let pem = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU+/=\n-----END CERTIFICATE-----";
    let ca = pattern("goldcap/tls-ca-cert");
    assert!(ca.is_match(pem));
    for bad in [
        "GOLDCAP_CA_PEM_END",
        "x\nGOLDCAP_CA_PEM_END\ny",
        "$(id)",
        "'",
    ] {
        assert!(!ca.is_match(bad), "{bad:?}");
    }
    let script = render(
        &template(),
        &machine(
            &[("goldcap/tls-ca-cert", json!(pem))],
            "http://drp.example:8091",
        ),
    );
    assert!(
        script.contains(&format!(
            "<<'GOLDCAP_CA_PEM_END'\n{pem}\nGOLDCAP_CA_PEM_END\n"
        )),
        "{script}"
    );
    let bin = pattern("goldcap/binary-path");
    assert!(bin.is_match("goldcap/goldcap-x86_64"));
    for bad in ["x'y", "a b", "$(id)", "/abs", "x\ny", "../x`"] {
        assert!(!bin.is_match(bad), "{bad:?}");
    }
}

/// Renders the task's script for the sample root and runs it with bash as
/// the DRP runner would: RS_ENDPOINT and RS_TOKEN in the environment,
/// goldcap on PATH. Returns (exit code, stdout + stderr).
fn run_task(env: &Env, drp: &Drp, token: &str, set: &[(&str, Value)]) -> (i32, String) {
    let root = env.root().to_string_lossy().into_owned();
    let mut set = set.to_vec();
    set.push(("goldcap/root", json!(root)));
    let script = render(&template(), &machine(&set, &drp.url()));
    let dir = env.path("task");
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    let _ = std::fs::remove_file(dir.join("bin/goldcap"));
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_goldcap"), dir.join("bin/goldcap")).unwrap();
    std::fs::write(dir.join("goldcap-capture.sh"), &script).unwrap();
    let path = format!(
        "{}:{}",
        dir.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg(dir.join("goldcap-capture.sh"))
        .env_clear()
        .env("PATH", path)
        .env("LC_ALL", "C")
        .env("RS_ENDPOINT", drp.url())
        .env("RS_TOKEN", token)
        .env("RS_UUID", "3f1e0c9a-0000-4000-8000-000000000001")
        .current_dir(&dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains(token),
        "the token appears in the job log:\n{text}"
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Task runs one at a time: a test looks for task directories left in
/// /tmp, where a concurrent run's would be.
static TASKS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The job token the task's ExtraClaims give, and two that lack one of
/// its claims.
const JOB_TOKEN: &str = "job-token-files-post-get-7c2d";
const GET_ONLY: &str = "job-token-files-get-only-4a1b";
const POST_ONLY: &str = "job-token-files-post-only-9e3f";

fn job_server() -> Drp {
    Drp::start(json!({"tokens": {
        JOB_TOKEN: {"claims": [{"scope": "files", "action": "post,get", "specific": "*"}]},
        GET_ONLY: {"claims": [{"scope": "files", "action": "get", "specific": "*"}]},
        POST_ONLY: {"claims": [{"scope": "files", "action": "post", "specific": "*"}]},
    }}))
}

/// The rendered task captures the sample root and stores the artifact and
/// text MANIFEST under image-builder's names with a files post,get token;
/// what it stored is a good image without image-builder's default excludes.
#[test]
fn drp_task_script_uploads_with_a_files_only_job_token() {
    let _serial = TASKS.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::new();
    assert!(env.root().join("etc/default/grub").is_file());
    let drp = job_server();
    // Whole seconds: a directory's mtime may be coarser than the clock.
    let started = std::time::SystemTime::now() - std::time::Duration::from_secs(1);
    let (code, log) = run_task(&env, &drp, JOB_TOKEN, &[]);
    assert_eq!(code, 0, "{log}");
    // image-builder's default names: $TAG-rootfs-$DSTAMP-$RS_IMAGE_IDENT.tgz
    // and $TAG-MANIFEST-$DSTAMP-$RS_IMAGE_IDENT.txt under images/.
    let names: Vec<String> = drp.images();
    assert_eq!(names.len(), 2, "{names:?}\n{log}");
    let re =
        regex::Regex::new(r"^debian-12-(rootfs|MANIFEST)-(\d{8}-\d{6})-([0-9a-f]{10})\.(tgz|txt)$")
            .unwrap();
    let parts: Vec<_> = names
        .iter()
        .map(|n| {
            re.captures(n)
                .unwrap_or_else(|| panic!("{n}: not image-builder's name"))
        })
        .collect();
    assert_eq!(&parts[0][1], "MANIFEST");
    assert_eq!(&parts[1][1], "rootfs");
    assert_eq!(&parts[0][2], &parts[1][2], "{names:?}");
    assert_eq!(&parts[0][3], &parts[1][3], "{names:?}");
    // Only the files API, with the job token: POST and HEAD, no DELETE.
    for e in drp.log() {
        assert!(
            e["path"]
                .as_str()
                .unwrap()
                .starts_with("/api/v3/files/images/"),
            "{e}"
        );
        assert!(
            ["POST", "HEAD"].contains(&e["method"].as_str().unwrap()),
            "{e}"
        );
        assert_eq!(e["auth"], "Bearer", "{e}");
    }
    // The stored pair verifies, and image-builder's default excludes were
    // applied.
    let dl = env.path("stored");
    std::fs::create_dir_all(&dl).unwrap();
    let (artifact, manifest) = (dl.join(&names[1]), dl.join(&names[0]));
    std::fs::copy(drp.stored(&format!("images/{}", names[1])), &artifact).unwrap();
    std::fs::copy(drp.stored(&format!("images/{}", names[0])), &manifest).unwrap();
    let v = goldcap(&[
        "verify".as_ref(),
        artifact.as_os_str(),
        "--manifest".as_ref(),
        manifest.as_os_str(),
        "--json".as_ref(),
    ]);
    let v: Value = serde_json::from_slice(&v.stdout).unwrap();
    // The integrity checks (the sample root's own identity findings, e.g.
    // sshd without a host-key regenerator, are not the task's business).
    for name in ["size", "md5", "sha256", "archive", "curtin"] {
        let check = v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} check: {v}"));
        assert_eq!(check["ok"], true, "{check}");
    }
    let listing = tar_list(&artifact);
    assert!(
        listing.iter().any(|n| n == "./etc/os-release"),
        "{listing:?}"
    );
    assert!(
        !listing.iter().any(|n| n == "./etc/default/grub"),
        "image-builder/additional-excludes was not applied"
    );
    // The task's temporary directory is gone.
    let left: Vec<String> = std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("goldcap-task."))
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= started)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "the task left {left:?} in /tmp");
    // With goldcap/format tzst the same task stores a .tar.zst.
    let zst = job_server();
    let (code, log) = run_task(&env, &zst, JOB_TOKEN, &[("goldcap/format", json!("tzst"))]);
    assert_eq!(code, 0, "{log}");
    assert!(
        zst.images().iter().any(|n| n.ends_with(".tar.zst")),
        "{:?}",
        zst.images()
    );
}

/// A job token without files get (goldcap reads every upload back) or
/// without files post fails the task before the root is read, with the
/// missing claim named, and stores nothing.
#[test]
fn drp_task_script_is_refused_without_the_task_claims() {
    let _serial = TASKS.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::new();
    for (token, claim) in [(GET_ONLY, "files post"), (POST_ONLY, "files get")] {
        let drp = job_server();
        let (code, log) = run_task(&env, &drp, token, &[]);
        assert_eq!(code, 1, "{token}: {log}");
        assert!(log.contains(claim), "{token}: {log}");
        assert!(log.contains("goldcap capture failed"), "{token}: {log}");
        let stored: Vec<String> = drp.images();
        assert!(stored.is_empty(), "{token}: {stored:?}");
    }
    // An unknown token, as a job's expired one.
    let drp = job_server();
    let (code, log) = run_task(&env, &drp, "not-a-job-token", &[]);
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("invalid or expired"), "{log}");
    assert!(drp.images().is_empty());
}

// ---------------------------------------------------------------- profiles

fn profile(manifest: &Path, extra: &[&str]) -> serde_yaml_ng::Value {
    let mut args: Vec<std::ffi::OsString> = vec!["profile".into(), manifest.into()];
    args.extend(extra.iter().map(Into::into));
    let p = goldcap(&args);
    assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));
    serde_yaml_ng::from_slice(&p.stdout).unwrap()
}

/// `goldcap profile` writes YAML a YAML parser reads: image-deploy's for a
/// .tgz, Eikon's (`tar-zst`) for a .tar.zst with `--deployer eikon`.
#[test]
fn profile_yaml_parses_for_image_deploy_and_eikon() {
    let env = Env::new();
    let tgz = env.capture("tgz", &["-q"]);
    tgz.ok();
    let y = as_json(&profile(&tgz.file(MANIFEST_JSON), &[]));
    assert_eq!(y["Params"]["image-deploy/image-type"], "tgz");
    assert_eq!(y["Params"]["image-deploy/image-os"], "linux");
    let y = as_json(&profile(&tgz.file(MANIFEST_JSON), &["--deployer", "eikon"]));
    assert_eq!(y["Params"]["eikon/image-type"], "tgz");

    let zst = env.capture("tzst", &["-q", "--format", "tzst"]);
    zst.ok();
    let y = as_json(&profile(&zst.file(MANIFEST_JSON), &["--deployer", "eikon"]));
    let name = zst.manifest_json()["filename"].as_str().unwrap().to_owned();
    assert!(name.ends_with(".tar.zst"), "{name}");
    assert_eq!(y["Name"], name.trim_end_matches(".tar.zst"));
    assert_eq!(y["Params"]["eikon/image-type"], "tar-zst");
    assert_eq!(
        y["Params"]["eikon/image-url"],
        format!("{{{{.ProvisionerURL}}}}/files/images/{name}")
    );
    assert!(y["Params"].get("image-deploy/image-type").is_none(), "{y}");
    // image-deploy still refuses it, and says what to use.
    let p = goldcap(&["profile".as_ref(), zst.file(MANIFEST_JSON).as_os_str()]);
    assert_eq!(p.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&p.stderr).contains("--deployer eikon"));
}

// ---------------------------------------------------------------- Packer

/// Every `--option` of `goldcap capture` the Packer example uses is one
/// `goldcap capture --help` lists, and no credential is on its command line.
#[test]
fn packer_example_uses_only_real_capture_options() {
    let dir = project().join("examples/packer");
    let mut text = String::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "hcl" || x == "sh") {
            text.push_str(&std::fs::read_to_string(&p).unwrap());
        }
    }
    let help = goldcap(&["capture", "--help"]);
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    let long = regex::Regex::new(r"--[a-z][a-z0-9-]+").unwrap();
    let known: Vec<&str> = long.find_iter(&help).map(|m| m.as_str()).collect();
    // The goldcap capture command: from `goldcap capture` to the end of
    // its (backslash-continued) line.
    let mut used = Vec::new();
    for (i, _) in text.match_indices("goldcap capture") {
        let mut cmd = String::new();
        for line in text[i..].lines() {
            cmd.push_str(line);
            if !line.trim_end().ends_with('\\') {
                break;
            }
        }
        used.extend(long.find_iter(&cmd).map(|m| m.as_str().to_owned()));
        assert!(
            !cmd.contains("RS_TOKEN") && !cmd.contains("--token "),
            "a credential on goldcap's command line: {cmd}"
        );
    }
    assert!(used.contains(&"--upload".to_owned()), "{used:?}");
    for u in &used {
        assert!(
            known.contains(&u.as_str()),
            "{u}: goldcap capture has no such option"
        );
    }
}
