//! The command-line surface: help, man pages, what goes to stdout and
//! stderr.

use crate::common::*;
use std::ffi::OsStr;
use std::path::Path;

#[test]
fn help_documents_every_exit_status() {
    for args in [vec!["--help"], vec!["capture", "--help"]] {
        let o = goldcap(&args);
        assert!(o.status.success());
        let text = String::from_utf8(o.stdout).unwrap();
        for line in [
            "0    success",
            "1    failure",
            "2    usage error",
            "3    completed with warnings",
            "130  interrupted",
        ] {
            assert!(text.contains(line), "{args:?} --help lacks {line:?}");
        }
    }
}

#[test]
fn committed_man_pages_match_the_code() {
    let dir = tempfile::tempdir_in(test_tmp()).unwrap();
    let o = goldcap(&[
        "man".as_ref(),
        "--output-dir".as_ref(),
        dir.path().as_os_str(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let generated = list_dir(dir.path());
    assert_eq!(
        generated,
        vec![
            "goldcap-apply.1",
            "goldcap-capture.1",
            "goldcap-completions.1",
            "goldcap-diff.1",
            "goldcap-inspect.1",
            "goldcap-profile.1",
            "goldcap-scrub.1",
            "goldcap-token.1",
            "goldcap-upload.1",
            "goldcap-verify.1",
            "goldcap.1"
        ]
    );
    assert_eq!(
        list_dir(&project().join("man")),
        generated,
        "man/ holds exactly the generated pages"
    );
    for name in generated {
        let want = std::fs::read(dir.path().join(&name)).unwrap();
        let have = std::fs::read(project().join("man").join(&name)).unwrap();
        assert!(
            want == have,
            "man/{name} is stale: run `cargo run -- man --output-dir man`"
        );
    }
    let page = std::fs::read_to_string(project().join("man/goldcap-capture.1")).unwrap();
    assert!(page.contains("include\\-mount") && page.contains("completed with warnings"));
    // Every page has the sections a man reader looks for, and SEE ALSO
    // names no page that is not shipped (goldcap-help(1) was).
    let shipped = list_dir(&project().join("man"));
    for name in &shipped {
        let page = std::fs::read_to_string(project().join("man").join(name)).unwrap();
        for section in ["EXAMPLES", "\"EXIT STATUS\""] {
            assert!(
                page.contains(&format!(".SH {section}")),
                "{name}: no {section}"
            );
        }
        for refd in page.split("\\fBgoldcap").skip(1).filter_map(|r| {
            let (n, rest) = r.split_once("\\fR(")?;
            rest.starts_with('1')
                .then(|| format!("goldcap{}.1", n.replace("\\-", "-")))
        }) {
            assert!(
                shipped.contains(&refd),
                "{name} refers to {refd}, which is not shipped"
            );
        }
    }
    let upload = std::fs::read_to_string(project().join("man/goldcap-upload.1")).unwrap();
    assert!(upload.contains(".SH ENVIRONMENT") && upload.contains("AWS_ENDPOINT_URL"));
}

#[test]
fn without_a_terminal_stdout_is_empty_and_stderr_has_one_summary_line() {
    let env = Env::new();
    let run = env.capture("out", &[]);
    run.ok();
    assert_eq!(run.stdout(), "");
    let stderr = run.stderr();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("goldcap: captured ")
            && lines[0].contains(ARTIFACT)
            && lines[0].contains("md5 "),
        "{}",
        lines[0]
    );

    let quiet = env.capture("out-q", &["-q"]);
    quiet.ok();
    assert_eq!((quiet.stdout().as_str(), quiet.stderr().as_str()), ("", ""));

    let verbose = env.capture("out-v", &["-v"]);
    verbose.ok();
    assert!(
        verbose
            .stderr()
            .contains("goldcap: ./proc: volatile directory: content never archived"),
        "{}",
        verbose.stderr()
    );
}

#[test]
fn version_is_printed() {
    let o = goldcap(&["--version"]);
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        format!("goldcap {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn json_commands_print_a_json_error_object_when_they_fail() {
    let env = Env::new();
    let missing = env.path("no-such-root");
    let cases: Vec<(Vec<std::ffi::OsString>, i32, &str)> = vec![
        (
            vec![
                "capture".into(),
                "--root".into(),
                missing.clone().into(),
                "--json".into(),
            ],
            2,
            "no-such-root",
        ),
        (
            vec![
                "verify".into(),
                env.path("none.tgz").into(),
                "--json".into(),
            ],
            2,
            "none.tgz",
        ),
        (
            vec![
                "upload".into(),
                env.path("m.json").into(),
                "--to".into(),
                "drp".into(),
                "--json".into(),
            ],
            2,
            "m.json",
        ),
        (
            vec![
                "token".into(),
                "--user".into(),
                "u".into(),
                "--paths".into(),
                "images/x".into(),
                "--endpoint".into(),
                "https://127.0.0.1:9".into(),
                "--attempts".into(),
                "1".into(),
                "--json".into(),
            ],
            1,
            "token for u on https://127.0.0.1:9 (given): connection refused (gave up after 1 attempt)",
        ),
    ];
    let mut cases = cases;
    cases.push((
        vec!["profile".into(), env.path("p.json").into(), "--json".into()],
        2,
        "p.json",
    ));
    cases.push((
        vec!["inspect".into(), env.path("i.json").into(), "--json".into()],
        2,
        "i.json",
    ));
    for (args, exit, names) in cases {
        let o = goldcap_cmd(&args).env("RS_KEY", "u:p").output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(
            o.status.code(),
            Some(exit),
            "{args:?}: {out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out:?}"));
        assert_eq!(v["exit"], exit, "{v}");
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains(names), "{args:?}: {msg}");
        // The same message on stderr, for a person.
        assert!(String::from_utf8_lossy(&o.stderr).contains(msg), "{args:?}");
    }
    // Without --json, stdout stays empty on failure.
    let o = goldcap(&[
        OsStr::new("capture"),
        OsStr::new("--root"),
        missing.as_os_str(),
    ]);
    assert_eq!((o.status.code(), o.stdout.len()), (Some(2), 0));
}

#[test]
fn more_than_one_v_is_refused() {
    let o = goldcap(&["-vv", "scrub", "--list"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("one level of detail"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(goldcap(&["-v", "scrub", "--list"]).status.success());
}

#[test]
fn verify_json_says_ok_overall() {
    // The planted root: every check passes on its capture.
    let env = identity_env("debian");
    let run = env.capture("out", &[]);
    run.ok();
    let v = |art: &Path| -> serde_json::Value {
        let o = goldcap(&[OsStr::new("verify"), OsStr::new("--json"), art.as_os_str()]);
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let art = run.any_artifact();
    let good = v(&art);
    assert_eq!(good["ok"], true, "{good}");
    let mut bytes = std::fs::read(&art).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&art, bytes).unwrap();
    let bad = v(&art);
    assert_eq!(bad["ok"], false, "{bad}");
}

#[test]
fn completions_complete_commands_and_options_in_bash() {
    let o = goldcap(&["completions", "bash"]);
    assert!(o.status.success());
    let script = std::env::temp_dir().join(format!("goldcap-compl-{}.bash", std::process::id()));
    std::fs::write(&script, &o.stdout).unwrap();
    // Ask the completion function what `goldcap ca<TAB>` and
    // `goldcap capture --ro<TAB>` complete to, as bash would.
    let ask = |words: &str| -> String {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}}-1)); \
                 COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}; \
                 _goldcap goldcap \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; \
                 printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                script.display()
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let subs = ask("goldcap ca");
    assert!(subs.lines().any(|l| l == "capture"), "{subs}");
    let opts = ask("goldcap capture --ro");
    assert!(opts.lines().any(|l| l == "--root"), "{opts}");
    std::fs::remove_file(&script).unwrap();
    for shell in ["zsh", "fish"] {
        let o = goldcap(&["completions", shell]);
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && text.contains("capture") && text.contains("allow-identity"),
            "{shell}"
        );
    }
    assert_eq!(goldcap(&["completions", "tcsh"]).status.code(), Some(2));
}

#[test]
fn a_terminal_shows_a_bar_whose_total_is_what_will_be_read() {
    let env = Env::new();
    // 64 MiB in /tmp: never archived, so never in the total.
    let big = std::fs::File::create(env.root().join("tmp/scratch.bin")).unwrap();
    std::io::Write::write_all(&mut &big, &noise(64 << 20, 7)).unwrap();
    drop(big);
    let flag = env.path("pause-flag");
    let session = format!("goldcap-bar-{}", std::process::id());
    let cmd = format!(
        "env -i PATH=\"$PATH\" TERM=xterm LC_ALL=C AWS_EC2_METADATA_DISABLED=true \
         GOLDCAP_TEST_PAUSE=open:usr/sbin/kexec GOLDCAP_TEST_PAUSE_FILE={flag} \
         {bin} capture --root {root} -o {out} --ident cf99cd80eb --date 2026-11-22T10:15:00Z; sleep 30",
        flag = flag.display(),
        bin = env!("CARGO_BIN_EXE_goldcap"),
        root = env.root().display(),
        out = env.path("out").display(),
    );
    let tmux = |args: &[&str]| {
        std::process::Command::new("tmux")
            .args(["-L", &session])
            .args(args)
            .output()
            .unwrap()
    };
    assert!(
        tmux(&["new-session", "-d", "-x", "160", "-y", "10", &cmd])
            .status
            .success()
    );
    let start = std::time::Instant::now();
    while !flag.exists() && start.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(flag.exists(), "the capture never reached its pause point");
    // Let the bar draw a few times with the paused capture.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let pane = String::from_utf8_lossy(&tmux(&["capture-pane", "-p"]).stdout).into_owned();
    std::fs::remove_file(&flag).unwrap();
    let _ = tmux(&["kill-server"]);
    let line = pane
        .lines()
        .find(|l| l.contains("capturing ["))
        .unwrap_or_else(|| panic!("no progress bar on the terminal:\n{pane}"));
    assert!(line.contains("ETA"), "{line}");
    // "… 1.2 MiB/~5.0 MiB, …": the total is the sample root's few MiB,
    // not the 64 MiB in /tmp.
    let total = line
        .split("/~")
        .nth(1)
        .and_then(|t| t.split(',').next())
        .unwrap_or_else(|| panic!("no total in {line}"));
    let (num, unit) = total.trim().split_once(' ').unwrap();
    let mib = num.parse::<f64>().unwrap()
        * match unit {
            "KiB" => 1.0 / 1024.0,
            "MiB" => 1.0,
            "GiB" => 1024.0,
            _ => panic!("unit {unit} in {line}"),
        };
    assert!((1.0..20.0).contains(&mib), "total {total} in {line}");
}
