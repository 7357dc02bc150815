//! Table tests for the catalogue, the selection language, matching and
//! the content decisions. Pure: roots are tiny temporary trees.

use super::catalogue::*;
use super::decide::*;
use super::plan::*;
use super::rule::*;
use crate::entry::FileKind as Kind;
use crate::source::rootfs::RootFs;
use regex::bytes::Regex;
use std::collections::BTreeSet;
use std::fs;

fn root(files: &[(&str, &str)]) -> (tempfile::TempDir, RootFs) {
    let t = tempfile::tempdir().unwrap();
    for (f, c) in files {
        let p = t.path().join(f.trim_start_matches('/'));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, c).unwrap();
    }
    let r = RootFs::new(t.path());
    (t, r)
}

fn debian() -> (tempfile::TempDir, RootFs) {
    root(&[
        ("/etc/os-release", "ID=debian\nVERSION_ID=12\n"),
        ("/usr/lib/systemd/systemd", ""),
        ("/usr/sbin/sshd", ""),
        ("/swapfile", "template memory"),
        (
            "/etc/fstab",
            "UUID=x / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n",
        ),
    ])
}

fn plan_for(r: &RootFs, ops: &[&str], mid: MachineIdMode) -> Plan {
    let os = crate::source::facts::read_os_release(r);
    let opts = PlanOptions {
        operations: ops.iter().map(|s| s.to_string()).collect(),
        machine_id: mid,
        live: false,
        mtime: 0,
        in_place: false,
    };
    Plan::new(&Catalogue::builtin(), r, os.as_ref(), &opts).unwrap()
}

#[test]
fn builtin_catalogue_is_valid_and_documented() {
    let c = Catalogue::builtin();
    assert!(c.operations.len() >= 45, "{}", c.operations.len());
    for op in &c.operations {
        assert!(op.why.len() > 20, "{} needs a why", op.id);
        if !op.default {
            assert!(
                op.why.starts_with("off:"),
                "{}: an operation off by default says why first",
                op.id
            );
        }
    }
    for risky in [
        "ssh-userdir",
        "user-accounts",
        "firewall-rules",
        "tls-private-keys",
    ] {
        let op = c.operations.iter().find(|o| o.id == risky).unwrap();
        assert!(!op.default, "{risky} must be off by default");
    }
}

#[test]
fn selection_language() {
    let c = Catalogue::builtin();
    let defaults = c.select(&[]).unwrap();
    assert!(defaults.contains("machine-id") && !defaults.contains("ssh-userdir"));
    let s = c
        .select(&["defaults,-logfiles,+ssh-userdir".into()])
        .unwrap();
    assert!(!s.contains("logfiles") && s.contains("ssh-userdir") && s.contains("machine-id"));
    // Repeatable, applied left to right.
    let s = c
        .select(&[
            "none".into(),
            "machine-id".into(),
            "+hostname,-machine-id".into(),
        ])
        .unwrap();
    assert_eq!(s.into_iter().collect::<Vec<_>>(), vec!["hostname"]);
    assert_eq!(c.select(&["all".into()]).unwrap().len(), c.operations.len());
    let e = c.select(&["defaults,-nope".into()]).unwrap_err();
    assert!(e.0.contains("unknown operation \"nope\""), "{e}");
}

/// A selection can only switch everything off by saying `none`: a spec
/// that starts with `+ID`/`-ID` changes the defaults (virt-sysprep starts
/// from nothing), and an empty one is an error.
#[test]
fn selection_never_drops_the_defaults_by_accident() {
    let c = Catalogue::builtin();
    let defaults = c.select(&[]).unwrap();
    let minus = |id: &str| {
        let mut d = defaults.clone();
        d.remove(id);
        d
    };
    type Want = Result<BTreeSet<String>, &'static str>;
    let specs: &[(&[&str], Want)] = &[
        (&["-logfiles"], Ok(minus("logfiles"))),
        (
            &["-logfiles", "-caches"],
            Ok(minus("logfiles")
                .intersection(&minus("caches"))
                .cloned()
                .collect()),
        ),
        (&[" -logfiles , "], Ok(minus("logfiles"))),
        (
            &["+ssh-userdir"],
            Ok(defaults
                .iter()
                .cloned()
                .chain(["ssh-userdir".into()])
                .collect()),
        ),
        (&["none"], Ok(BTreeSet::new())),
        (
            &["none,+machine-id"],
            Ok(BTreeSet::from(["machine-id".into()])),
        ),
        (&["machine-id"], Ok(BTreeSet::from(["machine-id".into()]))),
        // virt-sysprep's names where they mean the same.
        (&["-bash-history"], Ok(minus("shell-history"))),
        (
            &["none,dhcp-client-state"],
            Ok(BTreeSet::from(["dhcp-leases".into()])),
        ),
        (&[""], Err("names no operation")),
        (&[","], Err("names no operation")),
        (&[" "], Err("names no operation")),
        (&["-logfiles", ""], Err("names no operation")),
        (
            &["-logfile"],
            Err("unknown operation \"logfile\" (did you mean \"logfiles\"?"),
        ),
        (&["+machineid"], Err("did you mean \"machine-id\"?")),
        (&["+tmp-file"], Err("unknown operation \"tmp-file\"")),
        (&["-zzzzzzzz"], Err("unknown operation \"zzzzzzzz\" (see")),
    ];
    for (spec, want) in specs {
        let got = c.select(&spec.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        match (got, want) {
            (Ok(g), Ok(w)) => assert_eq!(&g, w, "{spec:?}"),
            (Err(e), Err(w)) => assert!(e.0.contains(w), "{spec:?}: {e}"),
            (g, w) => panic!("{spec:?}: got {g:?}, want {w:?}"),
        }
    }
    // Every alias names an operation of the built-in catalogue.
    for (alias, id) in super::catalogue::ALIASES {
        assert!(c.operations.iter().any(|o| o.id == *id), "{alias} -> {id}");
        assert!(
            !c.operations.iter().any(|o| o.id == *alias),
            "{alias} is an id"
        );
    }
}

#[test]
fn bad_profiles_are_clear_errors() {
    let cases: &[(&str, &str)] = &[
        (
            "[[operation]]\nid='x'\ncategory='identity'\ndefault=true\nwhy='w'\n[[operation.rule]]\npaths=['etc/x']\naction='drop'\n",
            "must be absolute",
        ),
        (
            "[[operation]]\nid='x'\ncategory='identity'\ndefault=true\nwhy='w'\n[[operation.rule]]\npaths=['/x']\naction='explode'\n",
            "unknown variant `explode`",
        ),
        (
            "[[operation]]\nid='x'\ncategory='identity'\ndefault=true\nwhy='w'\n[[operation.rule]]\npaths=['/x']\naction='delete-lines'\npatterns=['(']\n",
            "pattern \"(\"",
        ),
        (
            "[[operation]]\nid='x'\ncategory='identity'\ndefault=true\nwhy='w'\nwhen={family=['beos']}\n[[operation.rule]]\npaths=['/x']\naction='drop'\n",
            "unknown family",
        ),
        (
            "[[operation]]\nid='x'\ncategory='identity'\ndefault=true\nwhy='w'\n[[operation.rule]]\npaths=['/x/*']\naction='add'\nkind='file'\ncontent=''\n",
            "must be literal",
        ),
        (
            "[[operation]]\nid='x'\ncategory='identity'\ndefault=true\nwhy='w'\n[[operation.rule]]\npaths=['/x']\naction='replace'\n",
            "needs content",
        ),
        (
            "[[operation]]\nid='Bad Id'\ncategory='identity'\ndefault=true\nwhy='w'\n[[operation.rule]]\npaths=['/x']\naction='drop'\n",
            "ids are lowercase",
        ),
        (
            "[[operation]]\nid='x'\ncategory='identity'\ndefault=true\nwhy='w'\ntypo=1\n",
            "unknown field `typo`",
        ),
    ];
    for (text, want) in cases {
        let e = Catalogue::parse(text, "p.toml").unwrap_err();
        assert!(
            e.0.contains(want) && e.0.starts_with("p.toml"),
            "{want:?} not in {e}"
        );
    }
}

#[test]
fn profiles_override_and_add() {
    let mut c = Catalogue::builtin();
    let user = Catalogue::parse(
        "[[operation]]\nid='hostname'\ncategory='identity'\ndefault=true\nwhy='set a fixed name instead'\n[[operation.rule]]\npaths=['/etc/hostname']\naction='replace'\ncontent=\"gold\\n\"\n\
         [[operation]]\nid='site-token'\ncategory='secret'\ndefault=true\nwhy='our own enrolment token'\n[[operation.rule]]\npaths=['/etc/site/token']\naction='drop'\n",
        "user",
    )
    .unwrap();
    let n = c.operations.len();
    c.merge(user);
    assert_eq!(c.operations.len(), n + 1);
    let (_t, r) = debian();
    let opts = PlanOptions::default();
    let plan = Plan::new(&c, &r, None, &opts).unwrap();
    let hits = plan.hits(b"etc/hostname", Kind::File);
    assert_eq!(
        decide(&plan, &hits, 14, None).0,
        Outcome::Content(b"gold\n".to_vec())
    );
    assert_eq!(
        plan.op_id(plan.hits(b"etc/site/token", Kind::File)[0]),
        "site-token"
    );
}

fn outcome(plan: &Plan, rel: &str, content: &str) -> (Outcome, Vec<String>) {
    let hits = plan.hits(rel.as_bytes(), Kind::File);
    let c = needs_content(plan, &hits).then_some(content.as_bytes());
    let (o, effects) = decide(plan, &hits, content.len() as u64, c);
    (
        o,
        effects
            .into_iter()
            .map(|e| format!("{}:{}:{}", e.op, e.action, e.bytes_removed))
            .collect(),
    )
}

/// One row per catalogue rule and edge case, so it is long by design.
#[test]
fn decisions_table() {
    let (_t, r) = debian();
    let plan = plan_for(&r, &["defaults"], MachineIdMode::Empty);
    let ifcfg = "DEVICE=eth0\nHWADDR=52:54:00:12:34:56\nDHCP_HOSTNAME=gold\nONBOOT=yes\n";
    let rows: Vec<(&str, &str, Outcome, Vec<&str>)> = vec![
        (
            "etc/machine-id",
            "0123456789abcdef0123456789abcdef\n",
            Outcome::Content(vec![]),
            vec!["machine-id:replace:33"],
        ),
        (
            "var/lib/dbus/machine-id",
            "0123456789abcdef0123456789abcdef\n",
            Outcome::Symlink(b"/etc/machine-id".to_vec()),
            vec!["dbus-machine-id:symlink:33"],
        ),
        (
            "etc/hostname",
            "gold-template\n",
            Outcome::Content(vec![]),
            vec!["hostname:truncate:14"],
        ),
        (
            "etc/hosts",
            "127.0.0.1 localhost\n127.0.1.1 gold-template\n",
            Outcome::Content(b"127.0.0.1 localhost\n".to_vec()),
            vec!["hosts-hostname:delete-lines:24"],
        ),
        // Two operations edit the same file: both apply.
        (
            "etc/sysconfig/network-scripts/ifcfg-eth0",
            ifcfg,
            Outcome::Content(b"DEVICE=eth0\nONBOOT=yes\n".to_vec()),
            vec![
                "ifcfg-mac:delete-lines:25",
                "ifcfg-hostname:delete-lines:19",
            ],
        ),
        (
            "etc/netplan/50-cloud-init.yaml",
            "network:\n  ethernets:\n    eth0:\n      match:\n        macaddress: 52:54:00:12:34:56\n",
            Outcome::Drop,
            vec!["netplan-mac:drop:83"],
        ),
        (
            "etc/netplan/01-netcfg.yaml",
            "network:\n  ethernets:\n    eth0:\n      dhcp4: true\n",
            Outcome::Unchanged,
            vec![],
        ),
        (
            "etc/NetworkManager/system-connections/Wired.nmconnection",
            "[ethernet]\nmac-address=52:54:00:12:34:56\n[ipv4]\n",
            Outcome::Content(b"[ethernet]\n[ipv4]\n".to_vec()),
            vec!["nm-connection-mac:delete-lines:30"],
        ),
        (
            "var/log/syslog",
            "Nov 22 gold-template sshd\n",
            Outcome::Content(vec![]),
            vec!["logfiles:truncate:26"],
        ),
        (
            "var/log/syslog.1",
            "old\n",
            Outcome::Drop,
            vec!["logfiles:drop:4"],
        ),
        (
            "var/log/apt/history.log.2.gz",
            "x",
            Outcome::Drop,
            vec!["logfiles:drop:1"],
        ),
        // systemd recreates the swap file: its fstab line stays.
        (
            "etc/fstab",
            "UUID=x / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n",
            Outcome::Unchanged,
            vec![],
        ),
        (
            "etc/iscsi/initiatorname.iscsi",
            "InitiatorName=iqn.1993-08.org.debian:01:abc\n",
            Outcome::Content(b"GenerateName=yes\n".to_vec()),
            vec!["iscsi-initiator:replace:44"],
        ),
        (
            "etc/resolv.conf",
            "nameserver 10.0.0.1\n",
            Outcome::Unchanged,
            vec![],
        ),
        (
            "etc/passwd",
            "root:x:0:0::/root:/bin/sh\n",
            Outcome::Unchanged,
            vec![],
        ),
    ];
    for (rel, content, want, effects) in rows {
        let (o, e) = outcome(&plan, rel, content);
        assert_eq!(o, want, "{rel}");
        assert_eq!(e, effects, "{rel}");
    }
    // Path-only drops are decided without content (the policy drops them).
    for rel in [
        "etc/ssh/ssh_host_rsa_key",
        "var/lib/systemd/random-seed",
        "swapfile",
        "var/lib/cloud/instances",
        "root/.bash_history",
    ] {
        let hits = plan.hits(rel.as_bytes(), Kind::File);
        assert!(matches!(plan.rules[hits[0]].action, Action::Drop), "{rel}");
    }
    // cloud-init keeps its seed; a symlinked resolv.conf or machine-id is left alone.
    assert!(plan.hits(b"var/lib/cloud/seed", Kind::Dir).is_empty());
    assert!(plan.hits(b"etc/machine-id", Kind::Symlink).is_empty());
}

#[test]
fn machine_id_uninitialized_and_rhel_rules() {
    let (_t, r) = root(&[(
        "/etc/os-release",
        "ID=rocky\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=9.4\n",
    )]);
    let plan = plan_for(&r, &["defaults"], MachineIdMode::Uninitialized);
    let os = crate::source::facts::read_os_release(&r);
    assert_eq!(
        super::RootTraits::detect(&r, os.as_ref(), false, false)
            .families
            .iter()
            .collect::<Vec<_>>(),
        vec!["rhel"]
    );
    assert_eq!(
        outcome(&plan, "etc/machine-id", "x").0,
        Outcome::Content(b"uninitialized\n".to_vec())
    );
    // RHEL: no GenerateName, the file is dropped (iscsi-init recreates it).
    assert_eq!(
        outcome(&plan, "etc/iscsi/initiatorname.iscsi", "x").0,
        Outcome::Drop
    );
    assert!(
        !plan
            .hits(b"etc/pki/consumer/cert.pem", Kind::File)
            .is_empty(),
        "rhsm applies to rhel"
    );
    let (_t, d) = debian();
    let dplan = plan_for(&d, &["defaults"], MachineIdMode::Empty);
    assert!(
        dplan
            .hits(b"etc/pki/consumer/cert.pem", Kind::File)
            .is_empty(),
        "rhsm does not apply to debian"
    );
    assert!(!dplan.ops.iter().find(|o| o.id == "rhsm").unwrap().active);
}

#[test]
fn ssh_keys_are_kept_without_a_possible_regenerator() {
    // sshd, no systemd, no distro mechanism: keys kept, and the plan says so
    // (and counts it as identity kept).
    let (_t, r) = root(&[
        ("/etc/os-release", "ID=debian\n"),
        ("/usr/sbin/sshd", ""),
        ("/etc/ssh/ssh_host_rsa_key", "k"),
    ]);
    let plan = plan_for(&r, &["defaults"], MachineIdMode::Empty);
    assert!(
        plan.hits(b"etc/ssh/ssh_host_rsa_key", Kind::File)
            .is_empty()
    );
    let op = plan.ops.iter().find(|o| o.id == "ssh-hostkeys").unwrap();
    assert!(
        !op.active && op.kept && op.note.as_deref().unwrap().starts_with("KEPT"),
        "{op:?}"
    );
    assert_eq!(plan.identity_off(), ["ssh-hostkeys"]);
    // Without host keys nothing is kept.
    let (_t, r) = root(&[("/etc/os-release", "ID=debian\n"), ("/usr/sbin/sshd", "")]);
    let plan = plan_for(&r, &["defaults"], MachineIdMode::Empty);
    let op = plan.ops.iter().find(|o| o.id == "ssh-hostkeys").unwrap();
    assert!(!op.kept, "{op:?}");
    assert!(plan.identity_off().is_empty());
    // With systemd, goldcap's unit is added.
    let (_t, d) = debian();
    let plan = plan_for(&d, &["defaults"], MachineIdMode::Empty);
    assert!(
        plan.synthetic
            .iter()
            .any(|s| s.rel == b"etc/systemd/system/goldcap-ssh-host-keys.service")
    );
    let plan = plan_for(&d, &["defaults,-ssh-hostkeys"], MachineIdMode::Empty);
    assert!(
        !plan
            .synthetic
            .iter()
            .any(|s| s.op.as_deref() == Some("ssh-hostkeys"))
    );
}

#[test]
fn delete_lines_keeps_other_lines_byte_exact() {
    let re = vec![Regex::new(r"(?m)^\s*HWADDR=").unwrap()];
    assert_eq!(
        delete_lines(b"A=1\nHWADDR=x\nB=\xff\nno newline", &re),
        b"A=1\nB=\xff\nno newline"
    );
    assert_eq!(delete_lines(b"HWADDR=x", &re), b"");
}

#[test]
fn a_symlinked_machine_id_empties_its_target_without_a_loop() {
    // /etc/machine-id -> ../var/lib/dbus/machine-id: emptying the link's
    // target must win over the D-Bus rule that would make the target a
    // symlink back to /etc/machine-id (a loop, and no machine id at all).
    let (t, r) = root(&[
        ("/etc/os-release", "ID=debian\n"),
        (
            "/var/lib/dbus/machine-id",
            "0123456789abcdef0123456789abcdef\n",
        ),
    ]);
    std::os::unix::fs::symlink(
        "../var/lib/dbus/machine-id",
        t.path().join("etc/machine-id"),
    )
    .unwrap();
    let plan = plan_for(&r, &["defaults"], MachineIdMode::Empty);
    assert!(
        plan.hits(b"etc/machine-id", Kind::Symlink).is_empty(),
        "the link itself stays"
    );
    let (o, e) = outcome(
        &plan,
        "var/lib/dbus/machine-id",
        "0123456789abcdef0123456789abcdef\n",
    );
    assert_eq!(o, Outcome::Content(vec![]));
    assert_eq!(e, vec!["machine-id:replace:33"]);
}

#[test]
fn netplan_mac_matches_in_any_yaml_style() {
    let (_t, r) = debian();
    let plan = plan_for(&r, &["defaults"], MachineIdMode::Empty);
    for yaml in [
        "network:\n  ethernets:\n    e:\n      match:\n        macaddress: 52:54:00:12:34:56\n",
        "network: {ethernets: {e: {match: {macaddress: \"52:54:00:12:34:56\"}}}}\n",
        "network:\n  ethernets:\n    e:\n      match: {\"macaddress\": '52:54:00:12:34:56'}\n",
    ] {
        assert_eq!(
            outcome(&plan, "etc/netplan/x.yaml", yaml).0,
            Outcome::Drop,
            "{yaml}"
        );
    }
    assert_eq!(
        outcome(
            &plan,
            "etc/netplan/x.yaml",
            "network: {ethernets: {e: {dhcp4: true}}}\n"
        )
        .0,
        Outcome::Unchanged
    );
}

fn synthetic_text(plan: &Plan, rel: &str) -> Option<String> {
    plan.synthetic.iter().find_map(|s| match &s.kind {
        crate::entry::SynthKind::File(c) if s.rel == rel.as_bytes() => {
            Some(String::from_utf8_lossy(c).into_owned())
        }
        _ => None,
    })
}

fn planned<'a>(plan: &'a Plan, id: &str) -> &'a PlannedOp {
    plan.ops.iter().find(|o| o.id == id).unwrap()
}

#[test]
fn swap_files_are_recreated_with_systemd_and_removed_loudly_without() {
    let (_t, r) = debian();
    let plan = plan_for(&r, &["defaults"], MachineIdMode::Empty);
    let unit = synthetic_text(&plan, "etc/systemd/system/goldcap-swap-files.service").unwrap();
    assert!(
        unit.contains("ExecStart=/usr/lib/goldcap/create-swap-file \"/swapfile\" 15\n"),
        "{unit}"
    );
    let op = planned(&plan, "swap-files");
    assert!(
        op.note
            .as_deref()
            .unwrap()
            .ends_with("fstab lines kept: /swapfile (15 bytes)"),
        "{op:?}"
    );
    assert!(plan.alerts().is_empty(), "{:?}", plan.alerts());

    let (_t, r) = root(&[
        ("/etc/os-release", "ID=debian\n"),
        ("/swapfile", "template memory"),
        (
            "/etc/fstab",
            "UUID=x / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n",
        ),
    ]);
    let plan = plan_for(&r, &["defaults"], MachineIdMode::Empty);
    assert!(synthetic_text(&plan, "etc/systemd/system/goldcap-swap-files.service").is_none());
    let (o, e) = outcome(
        &plan,
        "etc/fstab",
        "UUID=x / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n",
    );
    assert_eq!(
        o,
        Outcome::Content(b"UUID=x / ext4 defaults 0 1\n".to_vec())
    );
    assert_eq!(e, vec!["swap-files:delete-lines:27"]);
    assert_eq!(
        plan.alerts(),
        vec![
            "[swap-files] REMOVED: no systemd to recreate /swapfile (15 bytes) at first boot, so its fstab line was deleted: clones run without that swap"
        ]
    );
}

#[test]
fn user_keys_in_every_home_and_authorized_keys_kept() {
    let (_t, r) = root(&[
        ("/etc/os-release", "ID=debian\n"),
        (
            "/etc/passwd",
            "root:x:0:0::/root:/bin/sh\ndeploy:x:998:998::/srv/deploy/:/bin/sh\nweb:x:33:33::/:/bin/false\n",
        ),
    ]);
    let plan = plan_for(&r, &["defaults"], MachineIdMode::Empty);
    let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n";
    let rows: &[(&str, &str, Outcome)] = &[
        ("root/.ssh/id_ed25519", key, Outcome::Drop),
        (
            "root/.ssh/id_ed25519.pub",
            "ssh-ed25519 AAAA",
            Outcome::Drop,
        ),
        ("root/.ssh/known_hosts", "h ssh-ed25519 AAAA", Outcome::Drop),
        ("home/bob/.ssh/id_rsa", key, Outcome::Drop),
        ("srv/deploy/.ssh/id_rsa", key, Outcome::Drop),
        ("srv/deploy/.ssh/known_hosts.old", "h", Outcome::Drop),
        // Found by what it holds, whatever its name.
        ("home/bob/.ssh/deploy-key", key, Outcome::Drop),
        (
            "home/bob/.ssh/legacy",
            "-----BEGIN RSA PRIVATE KEY-----\nx\n",
            Outcome::Drop,
        ),
        ("home/bob/.ssh/config", "Host x\n", Outcome::Unchanged),
        (
            "root/.ssh/authorized_keys",
            "ssh-ed25519 AAAA",
            Outcome::Unchanged,
        ),
        ("srv/deploy/.ssh/authorized_keys", key, Outcome::Unchanged),
        // Homes of "/" are not homes; other paths are not homes.
        (".ssh/id_rsa", key, Outcome::Unchanged),
        ("srv/other/.ssh/id_rsa", key, Outcome::Unchanged),
        ("srv/deploy/.bash_history", "ls", Outcome::Drop),
    ];
    for (rel, content, want) in rows {
        assert_eq!(outcome(&plan, rel, content).0, *want, "{rel}");
    }
    assert!(
        plan.hits(b"srv/deploy/.ssh/authorized_keys", Kind::File)
            .is_empty()
    );
}

#[test]
fn tmp_is_entered_in_place_only() {
    use crate::entry::{Candidate, Decide, Decision, Reason};
    use crate::select::policy::{Excludes, Policy};
    let (_t, r) = debian();
    let os = crate::source::facts::read_os_release(&r);
    for in_place in [false, true] {
        let opts = PlanOptions {
            operations: vec![],
            in_place,
            ..PlanOptions::default()
        };
        let plan = Plan::new(&Catalogue::builtin(), &r, os.as_ref(), &opts).unwrap();
        let op = planned(&plan, "tmp-files").clone();
        let policy = Policy::new(Excludes::new(&[]).unwrap(), vec![]).with_scrub(plan);
        let dir = |rel: &'static str| Candidate {
            rel: rel.as_bytes(),
            kind: Kind::Dir,
            mount: None,
            in_output_dir: false,
        };
        let want = if in_place {
            Decision::Keep
        } else {
            Decision::KeepDirOnly(Reason::Volatile)
        };
        for rel in ["tmp", "var/tmp"] {
            assert_eq!(policy.decide(&dir(rel)), want, "{rel} in place: {in_place}");
        }
        // Never /run, /proc, /dev, /sys.
        assert_eq!(
            policy.decide(&dir("run")),
            Decision::KeepDirOnly(Reason::Volatile)
        );
        let sock = Candidate {
            kind: Kind::Socket,
            ..dir("tmp/agent.sock")
        };
        assert_eq!(
            policy.decide(&sock),
            if in_place {
                Decision::Drop(Reason::Scrub("tmp-files".into()))
            } else {
                Decision::Drop(Reason::Socket)
            }
        );
        assert_eq!(op.active, in_place);
        if !in_place {
            assert_eq!(op.note.as_deref(), Some("in place only"));
        }
    }
}

fn mail_root(systemd: bool) -> (tempfile::TempDir, RootFs) {
    let mut files = vec![
        ("/etc/os-release", "ID=debian\n"),
        ("/etc/hostname", "gold-template\n"),
        (
            "/etc/hosts",
            "127.0.0.1 localhost\n127.0.1.1 gold-template.example.com gold-template\n",
        ),
        ("/etc/mailname", "gold-template.example.com\n"),
        (
            "/etc/postfix/main.cf",
            "myhostname = gold-template.example.com\nmyorigin = /etc/mailname\nmydestination = $myhostname, gold-template.example.com, gold-template, localhost\n",
        ),
    ];
    if systemd {
        files.push(("/usr/lib/systemd/systemd", ""));
    }
    root(&files)
}

#[test]
fn the_template_name_leaves_hosts_postfix_and_mailname() {
    let (_t, r) = mail_root(true);
    let plan = plan_for(&r, &["defaults"], MachineIdMode::Empty);
    let (o, e) = outcome(
        &plan,
        "etc/postfix/main.cf",
        "myhostname = gold-template.example.com\nmyorigin = /etc/mailname\nmydestination = $myhostname, gold-template.example.com, gold-template, localhost\n",
    );
    assert_eq!(
        o,
        Outcome::Content(
            b"myorigin = /etc/mailname\nmydestination = $myhostname, localhost\n".to_vec()
        )
    );
    // Two edits, one item.
    assert_eq!(e, vec!["postfix-hostname:replace-lines:81"]);
    let (o, _) = outcome(
        &plan,
        "etc/hosts",
        "127.0.0.1 localhost gold-template\n10.1.1.1 Gold-Template.example.com\n",
    );
    assert_eq!(o, Outcome::Content(b"127.0.0.1 localhost\n".to_vec()));
    assert_eq!(outcome(&plan, "etc/mailname", "x").0, Outcome::Drop);
    let unit = synthetic_text(&plan, "etc/systemd/system/goldcap-mailname.service").unwrap();
    assert!(unit.contains("Before=postfix.service"), "{unit}");
    assert_eq!(
        planned(&plan, "hosts-hostname").note.as_deref(),
        Some("names of this host: gold-template.example.com, gold-template")
    );

    // Without systemd nothing writes the clone's mailname: kept, loudly.
    let (_t, r) = mail_root(false);
    let plan = plan_for(&r, &["defaults"], MachineIdMode::Empty);
    assert!(plan.hits(b"etc/mailname", Kind::File).is_empty());
    let op = planned(&plan, "mailname");
    assert!(!op.active && op.alert, "{op:?}");
    assert!(op.note.as_deref().unwrap().starts_with("KEPT: no systemd"));
    // A mail domain is not the host's name: kept, and said why.
    let (t, r) = mail_root(true);
    fs::write(t.path().join("etc/mailname"), "example.com\n").unwrap();
    let plan = plan_for(&r, &["defaults"], MachineIdMode::Empty);
    assert!(plan.hits(b"etc/mailname", Kind::File).is_empty());
    assert!(synthetic_text(&plan, "etc/systemd/system/goldcap-mailname.service").is_none());
}

#[test]
fn snakeoil_is_dropped_only_with_make_ssl_cert_and_systemd() {
    let key = ("/etc/ssl/private/ssl-cert-snakeoil.key", "k");
    let pem = ("/etc/ssl/certs/ssl-cert-snakeoil.pem", "c");
    let tool = ("/usr/sbin/make-ssl-cert", "");
    let systemd = ("/usr/lib/systemd/systemd", "");
    let os = ("/etc/os-release", "ID=debian\n");
    type Files<'a> = &'a [(&'a str, &'a str)];
    let rows: &[(Files<'_>, bool, &str)] = &[
        (
            &[os, key, pem, tool, systemd],
            true,
            "regenerated at first boot by make-ssl-cert",
        ),
        (&[os, key, pem, systemd], false, "KEPT: no make-ssl-cert"),
        (&[os, key, pem, tool], false, "KEPT: no systemd"),
        (&[os, tool, systemd], false, "does not apply to this root"),
    ];
    for (files, dropped, note) in rows {
        let (t, r) = root(files);
        if files.contains(&pem) {
            std::os::unix::fs::symlink(
                "ssl-cert-snakeoil.pem",
                t.path().join("etc/ssl/certs/ab12cd34.0"),
            )
            .unwrap();
            std::os::unix::fs::symlink("other.pem", t.path().join("etc/ssl/certs/ffff0000.0"))
                .unwrap();
        }
        let plan = plan_for(&r, &["defaults"], MachineIdMode::Empty);
        let op = planned(&plan, "ssl-snakeoil");
        assert!(op.note.as_deref().unwrap().starts_with(note), "{op:?}");
        let hit = |rel: &str, kind| !plan.hits(rel.as_bytes(), kind).is_empty();
        assert_eq!(
            hit("etc/ssl/private/ssl-cert-snakeoil.key", Kind::File),
            *dropped
        );
        assert_eq!(hit("etc/ssl/certs/ab12cd34.0", Kind::Symlink), *dropped);
        assert!(!hit("etc/ssl/certs/ffff0000.0", Kind::Symlink));
        assert_eq!(
            synthetic_text(&plan, "etc/systemd/system/goldcap-ssl-snakeoil.service").is_some(),
            *dropped
        );
        assert_eq!(op.alert, note.starts_with("KEPT"));
    }
}
