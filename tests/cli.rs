//! The command-line surface: help, man pages, what goes to stdout and
//! stderr.

use crate::common::*;

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
