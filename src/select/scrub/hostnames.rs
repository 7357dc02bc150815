//! The template's host names, and the rules that take them out of the
//! files that announce them beyond `/etc/hostname`: static `/etc/hosts`
//! lines, postfix's `main.cf` and `/etc/mailname`.
//!
//! Part of planning ([`super::Plan::new`]). The names come from the root:
//! `/etc/hostname`, its short form, the fully qualified forms `/etc/hosts`
//! gives that short name, and the kernel's name on a live capture. Each
//! rule is computed from those names — for postfix from `main.cf` as it is,
//! so the edit is exact and any other setting stays byte for byte. Parsers
//! and rule builders are pure and table-tested; the only I/O is reading
//! the root's small files. Must never modify the root.

use super::sources::rule;
use super::{ActionKind, RuleSpec};
use crate::source::rootfs::RootFs;

/// Rules computed for one operation, with what the plan says about them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Computed {
    pub rules: Vec<RuleSpec>,
    pub note: Option<String>,
}

/// A syntactically valid host name (letters, digits, `-` and `.`).
fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && !s.starts_with(['-', '.'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// The host's names from `/etc/hostname` text and `/etc/hosts` text,
/// lowercase, longest first: the name, its short form, and every name in
/// `hosts` that is the short form with a domain. None for `localhost` or
/// a name that is not a host name. Pure.
pub fn names(hostname: &str, hosts: &str) -> Vec<String> {
    let first = hostname
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or("")
        .to_ascii_lowercase();
    let name = first.trim_end_matches('.');
    let short = name.split('.').next().unwrap_or("");
    if !is_hostname(name) || short.is_empty() || short == "localhost" {
        return Vec::new();
    }
    let mut out = vec![name.to_owned(), short.to_owned()];
    for line in hosts.lines() {
        let line = line.split('#').next().unwrap_or("");
        for t in line.split_whitespace().skip(1) {
            let t = t.to_ascii_lowercase();
            let t = t.trim_end_matches('.');
            if is_hostname(t) && t.strip_prefix(short).is_some_and(|d| d.starts_with('.')) {
                out.push(t.to_owned());
            }
        }
    }
    out.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    out.dedup();
    out
}

/// The template's names, read from the root (and, live, from the kernel).
pub fn source_names(root: &RootFs, live: bool) -> Vec<String> {
    let text = |p: &str| {
        String::from_utf8_lossy(&root.read(p, 1 << 20).ok().flatten().unwrap_or_default())
            .into_owned()
    };
    let hosts = text("/etc/hosts");
    let mut out = names(&text("/etc/hostname"), &hosts);
    if live && let Ok(k) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        out.extend(names(&k, &hosts));
        out.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        out.dedup();
    }
    out
}

/// `(?i:a|b)` over the escaped names (longest first, so a fully
/// qualified name is preferred over its short form).
fn alternation(names: &[String]) -> String {
    let alts: Vec<String> = names.iter().map(|n| regex::escape(n)).collect();
    format!("(?i:{})", alts.join("|"))
}

fn said(names: &[String]) -> String {
    format!("names of this host: {}", names.join(", "))
}

/// `/etc/hosts`: every word naming the host is removed from its line, and
/// a line left with only an address is deleted — the template's own
/// address mapping goes, `127.0.0.1 localhost` stays. Comments are left as
/// they are.
pub fn hosts(names: &[String]) -> Computed {
    if names.is_empty() {
        return Computed::default();
    }
    let alt = alternation(names);
    let mut words = rule(vec!["/etc/hosts".into()], ActionKind::ReplaceLines, vec![]);
    // Before the comment, preceded by blanks (never the address), followed
    // by a blank, a comment or the end of the line (never a longer name).
    // One run of names per line and pass: one pass per name covers runs
    // split by other words.
    words.pattern = Some(format!(
        r"^([^#\n]*?)[ \t]+{alt}(?:[ \t]+{alt})*([ \t#][^\n]*)?$"
    ));
    words.replacement = Some("${1}${2}".into());
    let bare = rule(
        vec!["/etc/hosts".into()],
        ActionKind::DeleteLines,
        vec![r"^\s*[^\s#]+\s*(#.*)?$".into()],
    );
    let mut rules = vec![words; names.len()];
    rules.push(bare);
    Computed {
        rules,
        note: Some(said(names)),
    }
}

/// Postfix's `main.cf` logical lines: (the text, with continuation lines
/// and the final newline; the parameter name; its value).
fn logical_lines(text: &str) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = Vec::new();
    let mut open = false;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let continues = body.starts_with([' ', '\t']) && !body.trim().is_empty();
        if continues && open {
            // Unwrap expectation: `open` means a logical line was pushed.
            let last = out.last_mut().expect("an open logical line");
            last.0.push_str(line);
            last.2.push(' ');
            last.2.push_str(body.trim());
            continue;
        }
        open = false;
        if body.starts_with('#') || body.trim().is_empty() || continues {
            continue;
        }
        if let Some((key, value)) = body.split_once('=') {
            out.push((
                line.to_owned(),
                key.trim().to_owned(),
                value.trim().to_owned(),
            ));
            open = true;
        }
    }
    out
}

/// A rule replacing exactly `block` (whole lines) with `new`.
fn replace_block(path: &str, block: &str, new: &str) -> RuleSpec {
    let mut r = rule(vec![path.into()], ActionKind::ReplaceLines, vec![]);
    r.pattern = Some(format!("^{}", regex::escape(block)));
    r.replacement = Some(new.replace('$', "$$"));
    r
}

/// Postfix's `main.cf`: `myhostname` or `myorigin` set to a name of this
/// host are deleted, so postfix falls back to the clone's kernel host name
/// (`myorigin` to `$myhostname`); in `mydestination` each such name becomes
/// `$myhostname`, so a clone still takes mail for its own name and every
/// other destination stays. Computed from the file as it is. Pure.
pub fn postfix(main_cf: &str, names: &[String]) -> Computed {
    const PATH: &str = "/etc/postfix/main.cf";
    let is_name = |t: &str| {
        let t = t.trim_end_matches('.');
        names.iter().any(|n| n.eq_ignore_ascii_case(t))
    };
    let mut rules = Vec::new();
    for (block, key, value) in logical_lines(main_cf) {
        match key.as_str() {
            "myhostname" | "myorigin" if is_name(&value) => {
                rules.push(replace_block(PATH, &block, ""));
            }
            "mydestination" => {
                let words: Vec<&str> = value
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|w| !w.is_empty())
                    .collect();
                if !words.iter().any(|w| is_name(w)) {
                    continue;
                }
                let mut new: Vec<&str> = Vec::new();
                for w in words {
                    let w = if is_name(w) { "$myhostname" } else { w };
                    if !new.contains(&w) {
                        new.push(w);
                    }
                }
                let end = if block.ends_with('\n') { "\n" } else { "" };
                let line = format!("{key} = {}{end}", new.join(", "));
                rules.push(replace_block(PATH, &block, &line));
            }
            _ => {}
        }
    }
    let note = (!names.is_empty()).then(|| said(names));
    Computed { rules, note }
}

/// `/etc/mailname` naming this host is dropped (a first-boot unit writes
/// the clone's name; see [`super::firstboot`]); a mail domain that is not
/// this host's name is the site's setting and stays. Pure.
pub fn mailname(text: Option<&str>, names: &[String]) -> Computed {
    let Some(text) = text else {
        return Computed::default();
    };
    let first = text.lines().next().unwrap_or("").trim();
    let lower = first.to_ascii_lowercase();
    if names.iter().any(|n| *n == lower.trim_end_matches('.')) {
        Computed {
            rules: vec![rule(vec!["/etc/mailname".into()], ActionKind::Drop, vec![])],
            note: None,
        }
    } else if first.is_empty() {
        Computed::default()
    } else {
        Computed {
            rules: Vec::new(),
            note: Some(format!(
                "kept: it names {:?}, not this host (a mail domain is the site's setting)",
                crate::input::clip(first, 80)
            )),
        }
    }
}

/// The computed rules of the operations naming the host, read from the
/// root: `which` is the operation's source.
pub fn compute(which: &str, root: &RootFs, names: &[String]) -> Computed {
    let text = |p: &str| {
        root.read(p, 4 << 20)
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    match which {
        "hostname-in-hosts" => hosts(names),
        "hostname-in-postfix" => match text("/etc/postfix/main.cf") {
            Some(t) => postfix(&t, names),
            None => Computed::default(),
        },
        "hostname-in-mailname" => mailname(text("/etc/mailname").as_deref(), names),
        _ => Computed::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::scrub::rule::{Action, Vars, compile_rule};
    use crate::select::scrub::spec::RuleSpec;

    fn apply(rules: &[RuleSpec], text: &str) -> String {
        let mut t = text.as_bytes().to_vec();
        for r in rules {
            match compile_rule(r, 0, Vars::default()).unwrap().action {
                Action::ReplaceLines(re, rep) => {
                    t = re.replace_all(&t, rep.as_slice()).into_owned();
                }
                Action::DeleteLines(res) => {
                    t = crate::select::scrub::decide::delete_lines(&t, &res);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        String::from_utf8(t).unwrap()
    }

    #[test]
    fn names_table() {
        let hosts = "127.0.0.1 localhost\n127.0.1.1 gold-template.example.com gold-template\n\
                     10.0.0.5 Gold-Template.corp.example.net. # static\n10.0.0.9 gold-template-db.example.com\n";
        let rows: &[(&str, &str, &[&str])] = &[
            (
                "gold-template\n",
                hosts,
                &[
                    "gold-template.corp.example.net",
                    "gold-template.example.com",
                    "gold-template",
                ],
            ),
            (
                "# comment\nGold.Example.com.\n",
                "",
                &["gold.example.com", "gold"],
            ),
            ("localhost\n", hosts, &[]),
            ("localhost.localdomain\n", hosts, &[]),
            ("", hosts, &[]),
            ("bad name!\n", hosts, &[]),
            ("-x\n", "", &[]),
        ];
        for (hostname, hosts, want) in rows {
            assert_eq!(names(hostname, hosts), *want, "{hostname:?}");
        }
    }

    fn gold() -> Vec<String> {
        names(
            "gold-template\n",
            "127.0.1.1 gold-template.example.com gold-template\n",
        )
    }

    #[test]
    fn hosts_table() {
        let c = hosts(&gold());
        let rows: &[(&str, &str)] = &[
            (
                "127.0.0.1\tlocalhost\n127.0.1.1\tgold-template.example.com gold-template\n::1 localhost ip6-localhost\n",
                "127.0.0.1\tlocalhost\n::1 localhost ip6-localhost\n",
            ),
            // RHEL style: the name on the loopback line; only it goes.
            (
                "127.0.0.1 localhost localhost.localdomain gold-template\n",
                "127.0.0.1 localhost localhost.localdomain\n",
            ),
            // The template's static address: the whole line goes.
            (
                "10.0.0.5   GOLD-TEMPLATE.example.com   gold-template  # me\n",
                "",
            ),
            ("10.0.0.5 a gold-template b\n", "10.0.0.5 a b\n"),
            // Longer names and other hosts stay; comments stay.
            (
                "10.0.0.9 gold-template-db gold-templatex db.gold-template.example.com\n# gold-template was here\n",
                "10.0.0.9 gold-template-db gold-templatex db.gold-template.example.com\n# gold-template was here\n",
            ),
            (
                "10.0.0.7 gold-template#x\nno newline gold-template",
                "no newline",
            ),
            // Runs of names split by other words.
            (
                "10.0.0.5 gold-template.example.com other gold-template\n",
                "10.0.0.5 other\n",
            ),
        ];
        for (text, want) in rows {
            assert_eq!(apply(&c.rules, text), *want, "{text:?}");
        }
        assert_eq!(hosts(&[]), Computed::default());
    }

    #[test]
    fn postfix_table() {
        let debian = "# See /usr/share/postfix/main.cf.dist\nsmtpd_banner = $myhostname ESMTP $mail_name (Debian/GNU)\n\
                      myhostname = gold-template.example.com\nalias_maps = hash:/etc/aliases\nmyorigin = /etc/mailname\n\
                      mydestination = $myhostname, gold-template.example.com, gold-template, localhost.localdomain, localhost\n\
                      relayhost =\n";
        let rows: &[(&str, &str)] = &[
            (
                debian,
                "# See /usr/share/postfix/main.cf.dist\nsmtpd_banner = $myhostname ESMTP $mail_name (Debian/GNU)\n\
                 alias_maps = hash:/etc/aliases\nmyorigin = /etc/mailname\n\
                 mydestination = $myhostname, localhost.localdomain, localhost\nrelayhost =\n",
            ),
            // Continuation lines, other destinations, a literal myorigin.
            (
                "myorigin = Gold-Template.example.com\nmydestination = example.com\n    gold-template,\n\tmail.example.com\nx = 1",
                "mydestination = example.com, $myhostname, mail.example.com\nx = 1",
            ),
            // A service name that is not this host's stays, as do comments.
            (
                "myhostname = mail.example.com\n#mydestination = gold-template\nmydestination = $myhostname, localhost\n",
                "myhostname = mail.example.com\n#mydestination = gold-template\nmydestination = $myhostname, localhost\n",
            ),
            // The last line without a newline.
            (
                "mydestination = gold-template",
                "mydestination = $myhostname",
            ),
        ];
        for (text, want) in rows {
            let c = postfix(text, &gold());
            assert_eq!(apply(&c.rules, text), *want, "{text:?}");
        }
        assert!(postfix("myhostname = x\n", &gold()).rules.is_empty());
    }

    #[test]
    fn mailname_table() {
        let drop = |t: Option<&str>| !mailname(t, &gold()).rules.is_empty();
        assert!(drop(Some("gold-template.example.com\n")));
        assert!(drop(Some("GOLD-TEMPLATE\n")));
        assert!(!drop(Some("example.com\n")));
        assert!(!drop(Some("")));
        assert!(!drop(None));
        assert!(
            mailname(Some("example.com\n"), &gold())
                .note
                .unwrap()
                .contains("\"example.com\", not this host")
        );
    }
}
