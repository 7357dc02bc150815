//! The source layout `src/lib.rs` describes: folders are the stages of the
//! data flow, and a module imports only from the shared modules and from
//! earlier stages — never from a later stage or a command. Read from the
//! source text, so a new `use` that breaks the rule fails here.

use crate::common::project;
use std::collections::BTreeSet;
use std::path::Path;

/// Top-level modules in dependency order; a module may import from its own
/// group and from earlier ones. The shared modules come first.
const ORDER: &[&[&str]] = &[
    &[
        "util", "entry", "input", "report", "signals", "testhook", "testkit",
    ],
    &["prepare"],
    &["source"],
    &["select"],
    &["archive"],
    &["output"],
    &["upload"],
    &["cli"],
    &["cmd"],
];

fn rank(module: &str) -> Option<usize> {
    ORDER.iter().position(|g| g.contains(&module))
}

/// The top-level modules `text` (a source file) names as `crate::x`,
/// outside comments and test modules (tests may use anything).
fn imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let code = text.split("\n#[cfg(test)]").next().unwrap_or(text);
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or("");
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let names: Vec<&str> = match rest.strip_prefix('{') {
                // `use crate::{a, b::c}`
                Some(group) => group
                    .split('}')
                    .next()
                    .unwrap_or("")
                    .split(',')
                    .map(|p| p.trim().split("::").next().unwrap_or(""))
                    .collect(),
                None => vec![
                    rest.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .next()
                        .unwrap_or(""),
                ],
            };
            out.extend(
                names
                    .into_iter()
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned),
            );
        }
    }
    out
}

/// Every `(file, imported module)` pair that breaks the order.
fn violations(src: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p.strip_prefix(src).unwrap().to_string_lossy().into_owned();
            if !rel.ends_with(".rs")
                || rel == "main.rs"
                || rel == "lib.rs"
                || rel.ends_with("/tests.rs")
            {
                continue;
            }
            let top = rel
                .split('/')
                .next()
                .unwrap()
                .trim_end_matches(".rs")
                .to_owned();
            let Some(own) = rank(&top) else {
                bad.push(format!(
                    "{rel}: top-level module {top:?} is in no stage of ORDER"
                ));
                continue;
            };
            for m in imports(&std::fs::read_to_string(&p).unwrap()) {
                match rank(&m) {
                    Some(r) if r < own || m == top || (r == own && own == 0) => {}
                    Some(_) => bad.push(format!("{rel} imports from a later stage: crate::{m}")),
                    None => bad.push(format!("{rel}: crate::{m} is in no stage of ORDER")),
                }
            }
        }
    }
    bad.sort();
    bad
}

#[test]
fn modules_import_only_from_earlier_stages() {
    let bad = violations(&project().join("src"));
    assert!(bad.is_empty(), "layering broken:\n{}", bad.join("\n"));
}

#[test]
fn the_check_finds_a_backward_import() {
    // A stage that reaches forward, a command imported by a stage, and the
    // forms a `use` can take are all seen.
    let t = tempfile::tempdir().unwrap();
    let src = t.path();
    std::fs::create_dir_all(src.join("source")).unwrap();
    std::fs::create_dir_all(src.join("output")).unwrap();
    std::fs::write(
        src.join("source/walk.rs"),
        "use crate::entry::Stat;\nuse crate::{report::Report, select::policy};\n// crate::cmd in a comment\n",
    )
    .unwrap();
    std::fs::write(
        src.join("output/x.rs"),
        "fn f() { crate::cmd::run(); }\n#[cfg(test)]\nmod tests { use crate::cli::Cli; }\n",
    )
    .unwrap();
    std::fs::write(src.join("util.rs"), "use crate::report::ui::Ui;\n").unwrap();
    assert_eq!(
        violations(src),
        [
            "output/x.rs imports from a later stage: crate::cmd",
            "source/walk.rs imports from a later stage: crate::select",
        ]
    );
}
