//! The config file, `GOLDCAP_*` variables, `--exclude-from`, the warning
//! for excludes that match nothing, and `capture --dry-run`: a capture
//! driven by a file is the same capture as the equivalent flags, typed
//! options win over variables over the file, lists add up, a bad file is a
//! usage error naming it, and a dry run reads, runs, creates and sends
//! nothing.

use crate::common::*;
use std::path::Path;

fn write(p: &Path, text: &str) {
    std::fs::write(p, text).unwrap();
}

#[test]
fn a_config_file_is_the_same_capture_as_its_flags() {
    let env = Env::new();
    let cfg = env.path("goldcap.toml");
    let root = env.root();
    write(
        &cfg,
        &format!(
            r#"# a repeated capture
[capture]
root = "{}"
format = "tzst"
level = 5
exclude = ["/srv/docs", "*.log"]
operations = ["defaults", "-caches"]
force = true
"#,
            root.display()
        ),
    );
    let by_file = goldcap_cmd(&["capture", "--config", cfg.to_str().unwrap(), "-o"])
        .arg(env.path("a"))
        .args(["--ident", IDENT, "--date", DATE])
        .output()
        .unwrap();
    assert!(
        by_file.status.success(),
        "{}",
        String::from_utf8_lossy(&by_file.stderr)
    );
    let by_flags = env.capture(
        "b",
        &[
            "--format",
            "tzst",
            "--level",
            "5",
            "--exclude",
            "/srv/docs",
            "--exclude",
            "*.log",
            "--operations",
            "defaults",
            "--operations",
            "-caches",
            "--force",
        ],
    );
    by_flags.ok();
    let name = ARTIFACT.replace(".tgz", ".tar.zst");
    assert_eq!(
        md5sum(&env.path("a").join(&name)),
        md5sum(&env.path("b").join(&name)),
        "the same capture, byte for byte"
    );
    // Typed options win over the file; lists add up.
    let r = goldcap_cmd(&["capture", "--config", cfg.to_str().unwrap(), "-o"])
        .arg(env.path("c"))
        .args([
            "--ident",
            IDENT,
            "--date",
            DATE,
            "--format",
            "tgz",
            "--exclude",
            "/etc/hostname",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let run = Run {
        out: env.path("c"),
        output: r,
    };
    assert!(env.path("c").join(ARTIFACT).is_file());
    let names = tar_list(&run.artifact());
    assert!(
        !names
            .iter()
            .any(|n| n == "./etc/hostname" || n.starts_with("./srv/docs")),
        "{names:?}"
    );
    // A GOLDCAP_* variable wins over the file, a typed option over both.
    let r = goldcap_cmd(&["capture", "--config", cfg.to_str().unwrap(), "-o"])
        .arg(env.path("d"))
        .args(["--ident", IDENT, "--date", DATE])
        .env("GOLDCAP_FORMAT", "tgz")
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(env.path("d").join(ARTIFACT).is_file());
    // GOLDCAP_CONFIG names the file; --no-config ignores it.
    let r = goldcap_cmd(&["capture", "--no-config", "--root"])
        .arg(&root)
        .arg("-o")
        .arg(env.path("e"))
        .args(["--ident", IDENT, "--date", DATE])
        .env("GOLDCAP_CONFIG", &cfg)
        .output()
        .unwrap();
    assert!(r.status.success());
    assert!(
        env.path("e").join(ARTIFACT).is_file(),
        "tgz: the file was ignored"
    );
}

#[test]
fn a_bad_config_file_is_a_usage_error_naming_it() {
    let env = Env::new();
    let cfg = env.path("goldcap.toml");
    for (text, want) in [
        (
            "[capture]\nfromat = \"tgz\"\n",
            "[capture] \"fromat\": goldcap capture has no --fromat",
        ),
        (
            "[capture]\nforce = \"yes\"\n",
            "[capture] \"force\": true or false",
        ),
        (
            "[capture]\nformat = [\"tgz\"]\n",
            "takes one value, not a list",
        ),
        ("format = \"tgz\"\n", "settings go in [capture]"),
        (
            "[capture]\nformat = \"rar\"\n",
            "invalid value 'rar' for '--format",
        ),
        ("[capture\n", "config"),
    ] {
        write(&cfg, text);
        let o = goldcap_cmd(&["capture", "--config", cfg.to_str().unwrap(), "-o"])
            .arg(env.path("out"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{text}: {err}");
        assert!(err.contains(want), "{text}: {err}");
        assert!(!env.path("out").exists());
    }
    let o = goldcap_cmd(&["capture", "--config", "/dev/zero"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err.contains("config /dev/zero: not a regular file"),
        "{err}"
    );
}

#[test]
fn exclude_from_and_excludes_that_match_nothing() {
    let env = Env::new();
    let list = env.path("excludes");
    write(
        &list,
        "# scratch space\n/srv/docs\n\n/srv/typo-does-not-exist\n",
    );
    let run = env.capture(
        "out",
        &[
            "--exclude-from",
            list.to_str().unwrap(),
            "--exclude",
            "*.nomatch",
        ],
    );
    run.ok();
    assert!(
        !tar_list(&run.artifact())
            .iter()
            .any(|n| n.starts_with("./srv/docs"))
    );
    for p in ["/srv/typo-does-not-exist", "*.nomatch"] {
        assert!(
            run.stderr().contains(&format!(
                "goldcap: warning: --exclude {p:?} matched nothing"
            )),
            "{}",
            run.stderr()
        );
    }
    assert_eq!(
        run.manifest_json()["excludes_unmatched"],
        serde_json::json!(["*.nomatch", "/srv/typo-does-not-exist"])
    );
}

#[test]
fn a_dry_run_reads_runs_creates_and_sends_nothing() {
    let env = Env::new();
    let hook = env.path("hook.sh");
    write(&hook, "#!/bin/sh\ntouch /hook-ran\n");
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let before = tree_digest(&env.root());
    let o = goldcap_cmd(&["capture", "--dry-run", "--json", "--root"])
        .arg(env.root())
        .arg("-o")
        .arg(env.path("never"))
        .args(["--hook", hook.to_str().unwrap(), "--exclude", "/srv/docs"])
        .args(["--upload", "drp:http://127.0.0.1:9"])
        .env("RS_TOKEN", "t")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!env.path("never").exists());
    assert!(
        before == tree_digest(&env.root()),
        "the dry run changed the root"
    );
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["hooks"][0], "hook.sh");
    assert_eq!(j["output_dir_exists"], false);
    assert!(j["entries"].as_u64().unwrap() > 100);
    assert!(
        j["left_out_listed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["path"] == "./srv/docs")
    );
    assert!(
        j["scrub"]["machine-id"]["edited"].as_u64().unwrap() == 1,
        "{}",
        j["scrub"]
    );
    assert_eq!(j["identity_off"], serde_json::json!([]));
    // The same totals as a real capture of the root.
    let run = env.capture("real", &["--exclude", "/srv/docs", "--json"]);
    run.ok();
    let real: serde_json::Value = serde_json::from_str(&run.stdout()).unwrap();
    assert_eq!(j["entries"], real["entries"], "entries");
}
