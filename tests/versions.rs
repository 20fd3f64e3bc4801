//! Versions: every write keeps the value it replaces (sealed like the
//! current one) up to a limit, `sealfs history` says who wrote each,
//! `get --version` reads one, `rollback` writes a new version equal to an
//! old one, a delete keeps the history and `delete --purge` destroys it.
//! An old version is never served as the current one. (Through the mount:
//! mountd's `versions` tests; in the console: its Chromium test.)

use std::time::{Duration, Instant};

use sealfs::VaultRef;

use crate::util::{assert_no_leftovers, until_past, Sandbox};

fn r(s: &str) -> VaultRef {
    VaultRef::parse(s).unwrap()
}

/// The version numbers `sealfs history --json` lists.
fn versions(sb: &Sandbox, r: &str) -> Vec<u64> {
    let json = sb.run(&["history", r, "--json"], b"").ok().stdout;
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&json).unwrap();
    rows.iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect()
}

/// Every file under the vault directory, read whole.
fn vault_bytes(sb: &Sandbox) -> Vec<u8> {
    let mut out = Vec::new();
    let mut dirs = vec![sb.vault_dir()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                out.extend(std::fs::read(p).unwrap());
            }
        }
    }
    out
}

#[test]
fn a_wrong_write_and_a_delete_are_undone_with_rollback() {
    let sb = Sandbox::new();
    sb.set("global/db", b"right-password");
    sb.set("global/db", b"wrong-password");
    let json = sb.run(&["history", "global/db", "--json"], b"").ok();
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(rows.len(), 2, "{}", json.stdout_str());
    for (row, current) in rows.iter().zip([false, true]) {
        assert_eq!(row["source"], "cli");
        assert_eq!(row["uid"], nix::unistd::getuid().as_raw());
        assert_eq!(row["exe"], crate::util::BIN);
        assert_eq!(row["current"], current);
    }
    assert_eq!(
        (rows[0]["length"].as_u64(), rows[1]["length"].as_u64()),
        (Some(14), Some(14))
    );
    let text = sb.run(&["history", "global/db"], b"").ok().stdout_str();
    assert!(!text.contains("password"), "history shows no value: {text}");

    assert_eq!(
        sb.run(&["get", "global/db", "--version", "1"], b"")
            .ok()
            .stdout,
        b"right-password"
    );
    assert_eq!(
        sb.run(&["get", "global/db", "--version", "2"], b"")
            .ok()
            .stdout,
        b"wrong-password"
    );
    let undo = sb.run(&["rollback", "global/db"], b"").ok();
    assert!(
        undo.stderr
            .contains("version 3 now holds the value of version 1"),
        "{}",
        undo.stderr
    );
    assert_eq!(sb.get("global/db"), b"right-password");
    assert_eq!(versions(&sb, "global/db"), [1, 2, 3]);

    // A delete keeps the history: the last value comes back.
    sb.run(&["delete", "global/db"], b"").ok();
    sb.run(&["get", "global/db"], b"")
        .fails(1, "secret not found");
    assert_eq!(versions(&sb, "global/db"), [1, 2, 3]);
    sb.run(&["rollback", "global/db"], b"").ok();
    assert_eq!(sb.get("global/db"), b"right-password");
    // Any kept version, by number.
    sb.run(&["rollback", "global/db", "--to", "2"], b"").ok();
    assert_eq!(sb.get("global/db"), b"wrong-password");
    assert_eq!(versions(&sb, "global/db"), [1, 2, 3, 4, 5]);
    let log = sb.run(&["audit-log", "--json"], b"").ok().stdout_str();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains(r#""op":"rollback""#) && l.contains("global/db"))
            .count(),
        3,
        "{log}"
    );
    assert!(!log.contains("password"));
}

#[test]
fn bad_versions_are_one_line_errors_that_change_nothing() {
    let sb = Sandbox::new();
    sb.set("global/k", b"v1");
    sb.set("global/k", b"v2");
    let before = sb.run(&["history", "global/k", "--json"], b"").ok().stdout;
    let counter = || sb.vault().list(None).unwrap();
    let listed = counter();
    for (args, code, needle) in [
        (
            &["get", "global/k", "--version", "7"][..],
            1,
            "global/k has no version 7 (kept: 1; current: 2)",
        ),
        (
            &["rollback", "global/k", "--to", "9"],
            1,
            "global/k has no version 9",
        ),
        (
            &["rollback", "global/k", "--to", "2"],
            1,
            "global/k is at version 2 already",
        ),
        (&["get", "global/k", "--version", "x"], 2, "invalid digit"),
        (
            &["set", "global/k", "--keep-versions", "-1"],
            2,
            "invalid value '-1'",
        ),
        (
            &["history", "global/nothing"],
            1,
            "secret not found: global/nothing",
        ),
        (
            &["rollback", "global/nothing"],
            1,
            "secret not found: global/nothing",
        ),
        (
            &["set", "global/.history"],
            1,
            "the key `.history` is reserved",
        ),
    ] {
        let out = sb.run(args, b"x").fails(code, needle);
        if code == 1 {
            assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
        }
    }
    assert_eq!(
        sb.run(&["history", "global/k", "--json"], b"").ok().stdout,
        before
    );
    assert_eq!(counter(), listed);
    assert_eq!(sb.get("global/k"), b"v2");
}

#[test]
fn purge_destroys_every_version_at_once() {
    let sb = Sandbox::new();
    sb.set("global/keep", b"other-value");
    for v in ["leaked-one", "leaked-two", "leaked-three"] {
        sb.set("global/token", v.as_bytes());
    }
    sb.run(&["delete", "global/token"], b"").ok();
    // Deleted, its three values are kept.
    assert_no_leftovers(&sb, 4);
    sb.run(&["delete", "global/token", "--purge"], b"").ok();
    assert_no_leftovers(&sb, 1);
    for v in ["leaked-one", "leaked-two", "leaked-three"] {
        assert!(
            !vault_bytes(&sb).windows(v.len()).any(|w| w == v.as_bytes()),
            "{v} is nowhere in the vault directory"
        );
    }
    sb.run(&["rollback", "global/token"], b"").fails(
        1,
        "global/token has no earlier version to roll back to; nothing was changed",
    );
    sb.run(&["get", "global/token", "--version", "1"], b"")
        .fails(1, "global/token has no version 1");
    sb.run(&["history", "global/token"], b"")
        .fails(1, "secret not found: global/token");
    sb.run(&["delete", "global/token", "--purge"], b"")
        .fails(1, "secret not found: global/token");
    // A live secret is purged with its history in one step; versions go
    // on from where they were, so no old blob fits the slot again.
    sb.set("global/token", b"fresh");
    assert_eq!(versions(&sb, "global/token"), [4]);
    sb.set("global/token", b"fresher");
    sb.run(&["delete", "global/token", "--purge"], b"").ok();
    assert_no_leftovers(&sb, 1);
    assert_eq!(sb.get("global/keep"), b"other-value");
}

#[test]
fn the_keep_limit_per_secret_and_vault_wide() {
    let sb = Sandbox::new();
    sb.set("global/a", b"a1");

    assert_eq!(
        sb.run(&["settings"], b"").ok().stdout_str(),
        "keep-versions\t10\n"
    );
    for n in 2..=12 {
        sb.set("global/a", format!("a{n}").as_bytes());
    }
    // Ten earlier versions and the current one.
    assert_eq!(versions(&sb, "global/a"), (2..=12).collect::<Vec<_>>());
    assert_no_leftovers(&sb, 11);

    sb.run(&["set", "global/b", "--keep-versions", "2"], b"b1")
        .ok();
    for n in 2..=5 {
        sb.set("global/b", format!("b{n}").as_bytes());
    }
    // The limit stays with the secret (plain sets keep it).
    assert_eq!(versions(&sb, "global/b"), [3, 4, 5]);

    sb.run(&["settings", "--keep-versions", "1"], b"").ok();
    assert_eq!(
        sb.run(&["settings"], b"").ok().stdout_str(),
        "keep-versions\t1\n"
    );
    sb.set("global/a", b"a13");
    assert_eq!(
        versions(&sb, "global/a"),
        [12, 13],
        "shed at its next write"
    );
    sb.set("global/b", b"b6");
    assert_eq!(versions(&sb, "global/b"), [4, 5, 6], "its own limit wins");
    sb.run(&["settings", "--keep-versions", "0"], b"").ok();
    sb.set("global/c", b"c1");
    sb.set("global/c", b"c2");
    assert_eq!(versions(&sb, "global/c"), [2]);
    sb.run(&["delete", "global/c"], b"").ok();
    sb.run(&["rollback", "global/c"], b"")
        .fails(1, "global/c has no earlier version to roll back to");
    assert_no_leftovers(&sb, 2 + 3);
    let log = sb.run(&["audit-log", "--json"], b"").ok().stdout_str();
    assert!(
        log.contains(r#""op":"settings""#) && log.contains("keep-versions=0"),
        "{log}"
    );
}

#[test]
fn an_old_version_is_never_served_as_the_current_one() {
    // Someone who can write the vault directory puts an old version's blob
    // where the current one is: both are sealed to the slot, but to
    // different versions, so it does not open as the current value.
    let sb = Sandbox::new();
    sb.set("global/key", b"revoked-key");
    sb.set("global/key", b"current-key");
    let vault = sb.vault();
    let current = sb.blob_path("global/key");
    let mut old = None;
    for fan in std::fs::read_dir(sb.vault_dir().join("objects")).unwrap() {
        for f in std::fs::read_dir(fan.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            if p != current {
                old = Some(p);
            }
        }
    }
    std::fs::copy(old.unwrap(), &current).unwrap();
    sb.run(&["get", "global/key"], b"")
        .fails(1, "integrity check failed for global/key");
    assert!(vault.get(&r("global/key")).is_err());
    // Read as what it is, the old version still opens.
    assert_eq!(
        sb.run(&["get", "global/key", "--version", "1"], b"")
            .ok()
            .stdout,
        b"revoked-key"
    );
}

#[test]
fn a_rollback_brings_a_value_back_with_its_lifetime_and_history_output_is_escaped() {
    let sb = Sandbox::new();
    sb.run(&["set", "global/k", "--ttl", "1h"], b"temporary")
        .ok();
    sb.run(&["set", "global/k", "--no-ttl"], b"lasting").ok();
    sb.run(&["rollback", "global/k", "--to", "1"], b"").ok();
    let entry = sb.vault().entry(&r("global/k")).unwrap().unwrap();
    assert!(
        entry.expires.is_some(),
        "the value keeps the end it was written with"
    );
    assert_eq!(sb.get("global/k"), b"temporary");

    // A value with a lifetime put over lasting ones (a `set --ttl`, a move
    // out of a session) takes only itself away when it ends.
    sb.set("global/db", b"good");
    sb.run(&["set", "global/db", "--ttl", "2s"], b"junk").ok();
    let ends = Instant::now() + Duration::from_millis(2100);
    sb.run(&["rollback", "global/db"], b"").ok();
    sb.run(&["set", "global/db", "--ttl", "2s"], b"junk again")
        .ok();
    until_past(ends + Duration::from_millis(100));
    until_past(Instant::now() + Duration::from_millis(2000));
    sb.run(&["get", "global/db"], b"")
        .fails(1, "secret not found");
    assert_eq!(versions(&sb, "global/db"), [1, 3]);
    sb.run(&["rollback", "global/db"], b"").ok();
    assert_eq!(sb.get("global/db"), b"good");
    let entry = sb.vault().entry(&r("global/db")).unwrap().unwrap();
    assert_eq!(
        entry.expires, None,
        "it comes back as it was written: lasting"
    );

    // An executable named to forge a line and colour the terminal.
    let dir = sb
        .path()
        .join("x\n9\t999\t2030-01-01T00:00:00Z\tcli\t-\t/usr/bin/admin\tcurrent\n\x1b[31m");
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("sealfs");
    std::fs::copy(crate::util::BIN, &exe).unwrap();
    let mut cmd = sb.program(exe.to_str().unwrap());
    cmd.args(["set", "global/k"]);
    crate::util::run(cmd, b"forged").ok();
    let text = sb.run(&["history", "global/k"], b"").ok().stdout_str();
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(!text.contains('\x1b'), "{text:?}");
}

#[test]
fn read_once_values_keep_no_history_and_lifetimes_reach_versions() {
    let sb = Sandbox::new();
    sb.run(&["set", "global/otp", "--once"], b"one-time").ok();
    sb.set("global/otp", b"plain");
    assert_eq!(versions(&sb, "global/otp"), [2]);
    sb.run(&["set", "global/otp", "--once"], b"again-once").ok();
    assert_eq!(sb.get("global/otp"), b"again-once");
    // Consumed: gone, and not kept.
    assert_eq!(versions(&sb, "global/otp"), [2]);
    sb.run(&["get", "global/otp", "--version", "3"], b"")
        .fails(1, "has no version 3");

    // Versions of a secret with a lifetime end with it.
    sb.set("global/keep", b"k");
    sb.run(&["set", "global/short", "--ttl", "3s"], b"s1").ok();
    let expires = Instant::now() + Duration::from_millis(3100);
    sb.set("global/short", b"s2");
    sb.run(&["delete", "global/short"], b"").ok();
    assert_eq!(versions(&sb, "global/short"), [1, 2]);
    until_past(expires);
    sb.run(&["history", "global/short"], b"")
        .fails(1, "secret not found");
    sb.run(&["get", "global/short", "--version", "2"], b"")
        .fails(1, "has no version 2");
    sb.run(&["rollback", "global/short"], b"")
        .fails(1, "global/short has no earlier version to roll back to");
    sb.vault().sweep_expired().unwrap();
    // global/keep, and the plain version 2 of global/otp.
    assert_no_leftovers(&sb, 2);
}

#[test]
fn ending_a_session_destroys_every_version_in_it() {
    let sb = Sandbox::new();
    sb.run(&["session", "create", "ci"], b"").ok();
    // A session keeps no earlier versions unless a secret asks for them.
    sb.set("session:ci/plain", b"p1");
    sb.set("session:ci/plain", b"p2");
    assert_eq!(versions(&sb, "session:ci/plain"), [2]);
    sb.run(&["set", "session:ci/token", "--keep-versions", "3"], b"t1")
        .ok();
    sb.set("session:ci/token", b"t2");
    sb.run(&["set", "session:ci/gone", "--keep-versions", "3"], b"g1")
        .ok();
    sb.run(&["delete", "session:ci/gone"], b"").ok();
    assert_eq!(versions(&sb, "session:ci/token"), [1, 2]);
    assert_eq!(versions(&sb, "session:ci/gone"), [1]);
    assert_no_leftovers(&sb, 4);
    sb.run(&["session", "end", "ci"], b"").ok();
    assert_no_leftovers(&sb, 0);
}
