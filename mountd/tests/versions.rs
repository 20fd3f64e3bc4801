//! Versions through the mount: `echo`, `rm` and `mv` keep what they
//! replace; `<scope>/.history/<key>/<N>` serves each kept version
//! read-only under the rules of the key itself, hidden from `ls`; and
//! `sealfs rollback` undoes a wrong `echo` or an `rm`.

use crate::util::{sh, sh_as, Mounted};

const ALICE: u32 = 1234;
const BOB: u32 = 1235;

/// The contents of `<dir>/.history/<key>/*`, oldest first, as `uid`.
fn kept(uid: u32, dir: &str, key: &str) -> Vec<String> {
    let ls = sh_as(uid, &format!("ls -v {dir}/.history/{key}"))
        .ok()
        .text();
    ls.split_whitespace()
        .map(|n| {
            sh_as(uid, &format!("cat {dir}/.history/{key}/{n}"))
                .ok()
                .text()
        })
        .collect()
}

#[test]
fn echo_rm_and_mv_are_undone_and_history_is_served_read_only() {
    let Some(m) = Mounted::start(&[]) else { return };
    let g = format!("{}/global", m.mnt.display());
    // Each `>` stores the emptied file, then the content: one version.
    sh(&format!("printf right > {g}/db && printf wrong > {g}/db")).ok();
    assert_eq!(kept(0, &g, "db"), ["right", "wrong"]);
    let json = m.cli(&["history", "global/db", "--json"], b"").ok().stdout;
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&json).unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for row in &rows {
        assert_eq!(row["source"], "mount");
        assert_eq!(row["uid"], 0);
        // The writer is the shell that ran printf (a builtin).
        assert!(row["exe"].as_str().unwrap().ends_with("sh"), "{row}");
    }
    // A wrong echo, undone.
    m.cli(&["rollback", "global/db"], b"").ok();
    assert_eq!(m.get("global/db"), b"right");
    // An rm, undone.
    sh(&format!("rm {g}/db")).ok();
    sh(&format!("cat {g}/db")).fails_with("No such file or directory");
    assert_eq!(kept(0, &g, "db"), ["right", "wrong", "right"]);
    m.cli(&["rollback", "global/db"], b"").ok();
    assert_eq!(sh(&format!("cat {g}/db")).ok().stdout, b"right");
    // A mv keeps the value under its old name.
    sh(&format!("printf moved > {g}/a && mv {g}/a {g}/b")).ok();
    assert_eq!(kept(0, &g, "a"), ["moved"]);
    m.cli(&["rollback", "global/a"], b"").ok();
    assert_eq!(m.get("global/a"), b"moved");
    assert_eq!(m.get("global/b"), b"moved");

    // Hidden from ls, even -a; there by name.
    let ls = sh(&format!("ls -a {g}")).ok().text();
    assert!(!ls.contains(".history"), "{ls}");
    let keys = sh(&format!("ls {g}/.history")).ok().text();
    // The keys with earlier versions (b has only its first).
    assert_eq!(keys.split_whitespace().collect::<Vec<_>>(), ["a", "db"]);
    // Read-only, to everyone.
    let file = sh(&format!("ls {g}/.history/db | head -1")).ok().text();
    let file = format!("{g}/.history/db/{}", file.trim());
    assert_eq!(sh(&format!("stat -c %a {file}")).ok().text().trim(), "400");
    for write in [
        format!("printf x > {file}"),
        format!("rm {file}"),
        format!("mkdir {g}/.history/new"),
        format!("printf x > {g}/.history/db/99"),
        format!("printf x > {g}/.history"),
    ] {
        sh(&write).fails_with("");
    }
    assert_eq!(kept(0, &g, "db"), ["right", "wrong", "right", "right"]);
    sh(&format!("cat {g}/.history/db/77")).fails_with("No such file or directory");
    sh(&format!("cat {g}/.history/nothing/1")).fails_with("No such file or directory");
    let log = std::fs::read_to_string(m.audit_log()).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains(r#""op":"open""#) && l.contains("global/db@")),
        "opening a version is audited"
    );
}

#[test]
fn history_follows_the_per_caller_rules_of_its_key() {
    let Some(m) = Mounted::start(&[]) else { return };
    let mnt = m.mnt.display();
    let mine = format!("{mnt}/principal/{ALICE}");
    m.set(&format!("principal:{ALICE}/token"), b"alice-1");
    m.set(&format!("principal:{ALICE}/token"), b"alice-2");
    m.set("global/shared", b"root-1");
    m.set("global/shared", b"root-2");
    // The owner reads her history.
    assert_eq!(kept(ALICE, &mine, "token"), ["alice-1", "alice-2"]);
    // Another uid sees none of it, as with the key itself.
    for path in [
        format!("{mine}/.history"),
        format!("{mine}/.history/token"),
        format!("{mine}/.history/token/1"),
    ] {
        sh_as(BOB, &format!("cat {path}; ls {path}")).fails_with("");
        let out = sh_as(BOB, &format!("cat {path} 2>&1; ls {path} 2>&1")).text();
        assert!(!out.contains("alice-1"), "{out}");
    }
    sh_as(BOB, &format!("cat {mine}/token")).fails_with("");
    sh_as(ALICE, &format!("cat {mnt}/global/.history/shared/1")).fails_with("");
    assert_eq!(
        sh(&format!("cat {mnt}/global/.history/shared/1"))
            .ok()
            .stdout,
        b"root-1"
    );
}
