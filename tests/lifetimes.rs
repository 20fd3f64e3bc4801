//! Lifetimes: a secret with `--ttl` and a session that ends (at its
//! lifetime, by `sealfs session end`, or with its `sealfs run --session`)
//! are gone for every reader from then on, and their blobs are removed by
//! the next writer. (Through the mount: mountd's `lifetimes` tests.)

use std::process::Stdio;
use std::time::{Duration, Instant};

use sealfs::{VaultError, VaultRef};

use crate::util::{assert_no_leftovers, eventually, until_past, Sandbox};

fn r(s: &str) -> VaultRef {
    VaultRef::parse(s).unwrap()
}

#[test]
fn a_secret_with_a_ttl_is_gone_for_every_reader_when_it_expires() {
    let sb = Sandbox::new();
    sb.set("global/keep", b"kept");
    sb.run(&["set", "global/short", "--ttl", "4s"], b"short-lived")
        .ok();
    // Its end was set before the command returned.
    let expired = Instant::now() + Duration::from_millis(4100);

    // Before: every path reads it. A long-lived library vault reads it
    // once, so its read cache holds it.
    let long_lived = sb.vault();
    assert_eq!(
        long_lived.get(&r("global/short")).unwrap().expose(),
        b"short-lived"
    );
    assert_eq!(sb.get("global/short"), b"short-lived");
    let json = sb.run(&["list", "--json"], b"").ok().stdout_str();
    assert!(json.contains(r#""expires""#), "{json}");
    sb.run(&["run", "--env", "S=global/short", "--", "true"], b"")
        .ok();
    // Another long-lived vault, which nothing disturbs from here to the
    // expiry: its next read comes from its read cache.
    let cached = sb.vault();
    assert_eq!(
        cached.get(&r("global/short")).unwrap().expose(),
        b"short-lived"
    );

    until_past(expired);
    assert!(matches!(
        cached.get(&r("global/short")),
        Err(VaultError::NotFound(_))
    ));
    sb.run(&["get", "global/short"], b"")
        .fails(1, "secret not found: global/short");
    assert!(!sb.run(&["list"], b"").ok().stdout_str().contains("short"));
    sb.run(&["run", "--env", "S=global/short", "--", "true"], b"")
        .fails(125, "S=global/short: secret not found");
    for v in [&long_lived, &sb.vault()] {
        assert!(matches!(
            v.get(&r("global/short")),
            Err(VaultError::NotFound(_))
        ));
        assert!(v.entry(&r("global/short")).unwrap().is_none());
        assert!(!v.exists(&r("global/short")).unwrap());
        assert_eq!(v.list(None).unwrap().len(), 1);
        let mut keys = Vec::new();
        v.for_each_key(&sealfs::VaultScope::Global, |k| keys.push(k.to_string()))
            .unwrap();
        assert_eq!(keys, ["keep"]);
    }
    // Its blob is there until a writer comes, which removes it.
    assert_no_leftovers(&sb, 2);
    sb.set("global/other", b"o");
    assert_no_leftovers(&sb, 2);
    // The slot's versions go on from where they were: an old blob of it
    // cannot be slipped in under a version it had.
    sb.set("global/short", b"again");
    let entry = sb.vault().entry(&r("global/short")).unwrap().unwrap();
    assert_eq!((entry.version, entry.expires), (2, None));
}

#[test]
fn a_rotation_keeps_the_lifetime_unless_told_otherwise() {
    let sb = Sandbox::new();
    let expires = |sb: &Sandbox| sb.vault().entry(&r("global/k")).unwrap().unwrap().expires;
    sb.run(&["set", "global/k", "--ttl", "1h"], b"v1").ok();
    let first = expires(&sb).expect("an expiry");
    sb.set("global/k", b"v2");
    assert_eq!(expires(&sb), Some(first), "a plain set kept it");
    sb.run(&["set", "global/k", "--ttl", "2h"], b"v3").ok();
    assert!(expires(&sb).unwrap() > first, "--ttl sets a new one");
    sb.run(&["set", "global/k", "--no-ttl"], b"v4").ok();
    assert_eq!(expires(&sb), None, "--no-ttl clears it");
    sb.run(&["set", "global/k", "--no-ttl", "--ttl", "1h"], b"v5")
        .fails(2, "cannot be used with");
    assert_eq!(sb.get("global/k"), b"v4");
}

#[test]
fn blobs_a_sweep_left_behind_are_removed() {
    // A sweep stopped after its commit, as a crash there would: the
    // expired blobs are still on disk, named in `pending`; the next sweep
    // (a mount daemon's, with nothing due) removes them.
    let sb = Sandbox::new();
    sb.set("global/keep", b"kept");
    sb.run(&["set", "global/a", "--ttl", "1s"], b"a").ok();
    sb.run(&["set", "global/b", "--ttl", "1s"], b"b").ok();
    until_past(Instant::now() + Duration::from_millis(1100));
    let mut stopped = sb.vault();
    stopped.set_fault_hook(|p| p == sealfs::FaultPoint::SweepAfterCommit);
    let err = stopped
        .put(&r("global/other"), sealfs::SensitiveBytes::from_slice(b"o"))
        .unwrap_err();
    assert!(matches!(err, VaultError::Fault(_)), "{err}");
    drop(stopped);
    assert_no_leftovers(&sb, 3);
    let vault = sb.vault();
    assert!(matches!(
        vault.get(&r("global/a")),
        Err(VaultError::NotFound(_))
    ));
    vault.sweep_expired().unwrap();
    assert_no_leftovers(&sb, 1);
}

#[test]
fn a_session_ends_at_its_ttl_or_when_it_is_ended() {
    let sb = Sandbox::new();
    sb.run(&["session", "create", "build-7", "--ttl", "4s"], b"")
        .ok();
    let made = Instant::now();
    sb.run(&["session", "create", "review"], b"").ok();
    sb.set("session:build-7/token", b"t1");
    sb.run(&["set", "session:build-7/later", "--ttl", "1h"], b"t2")
        .ok();
    sb.set("session:review/a", b"ra");
    sb.set("session:review/b", b"rb");
    let list = sb.run(&["session", "list"], b"").ok().stdout_str();
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    assert!(
        lines[0].starts_with("build-7\t") && lines[0].ends_with("\t2"),
        "{list}"
    );
    assert!(
        lines[1].starts_with("review\t") && lines[1].contains("\t-\t"),
        "{list}"
    );
    // A secret stored in a session ends with it, whatever its own --ttl.
    for key in ["token", "later"] {
        let e = sb
            .vault()
            .entry(&r(&format!("session:build-7/{key}")))
            .unwrap()
            .unwrap();
        assert!(e.expires.unwrap() < std::time::SystemTime::now() + Duration::from_secs(5));
    }

    until_past(made + Duration::from_millis(4100));
    sb.run(&["get", "session:build-7/token"], b"")
        .fails(1, "secret not found");
    let list = sb.run(&["session", "list"], b"").ok().stdout_str();
    assert!(!list.contains("build-7"), "{list}");
    assert!(sb
        .vault()
        .scope(&"session:build-7".parse().unwrap())
        .unwrap()
        .is_none());
    assert_no_leftovers(&sb, 4);
    sb.set("global/x", b"x");
    assert_no_leftovers(&sb, 3);
    // Nothing more goes into it (a late writer: a background child of the
    // run it was made for, a handle opened in time), however it comes.
    sb.run(&["set", "session:build-7/late"], b"late")
        .fails(1, "session:build-7 has ended; nothing more is stored in it");
    let moved = sb
        .vault()
        .rename(&r("global/x"), &r("session:build-7/x"), false);
    assert!(
        matches!(moved, Err(VaultError::SessionEnded(_))),
        "{moved:?}"
    );
    assert!(!sb
        .run(&["session", "list"], b"")
        .ok()
        .stdout_str()
        .contains("build-7"));
    // Its id can start a new session, explicitly.
    sb.run(&["session", "create", "build-7"], b"").ok();
    sb.set("session:build-7/again", b"a");
    sb.run(&["session", "end", "build-7"], b"").ok();
    assert_no_leftovers(&sb, 3);

    // Ended by hand: every secret at once, audited.
    sb.run(&["session", "end", "review"], b"").ok();
    sb.run(&["get", "session:review/a"], b"")
        .fails(1, "secret not found");
    assert_no_leftovers(&sb, 1);
    assert!(sb.run(&["session", "list"], b"").ok().stdout.is_empty());
    let log = std::fs::read_to_string(sb.path().join("audit.log")).unwrap();
    assert!(
        log.contains(r#""op":"session-end","ref":"session:review""#),
        "{log}"
    );
    assert!(
        log.contains(r#""op":"session-create","ref":"session:build-7""#),
        "{log}"
    );

    // Bad input: one line each, nothing changed.
    sb.run(&["session", "end", "review"], b"")
        .fails(1, "session:review does not exist");
    // A session removed empty (rmdir through the mount) has ended too.
    sb.run(&["session", "create", "gone"], b"").ok();
    sb.vault()
        .remove_scope(&"session:gone".parse().unwrap())
        .unwrap();
    sb.run(&["set", "session:gone/k"], b"k")
        .fails(1, "session:gone has ended");
    sb.run(&["set", "session:review/c"], b"c")
        .fails(1, "session:review has ended");
    sb.run(&["session", "create", "bad id"], b"")
        .fails(1, "invalid scope id");
    sb.run(&["session", "create", "x", "--ttl", "soon"], b"")
        .fails(2, "expected a lifetime");
    sb.run(
        &["session", "create", "x", "--owner", "no-such-user-here"],
        b"",
    )
    .fails(1, "no such user");
    sb.run(&["set", "global/y", "--ttl", "0s"], b"y")
        .fails(2, "longer than 0");
    sb.run(&["set", "global/y", "--ttl", "11y"], b"y")
        .fails(2, "at most 10 years");
    assert!(sb.run(&["session", "list"], b"").ok().stdout.is_empty());
    assert_no_leftovers(&sb, 1);
}

#[test]
fn run_session_ends_with_the_command() {
    let sb = Sandbox::new();
    let bin = crate::util::BIN;
    // The command writes into its session, which is gone afterwards.
    let script = format!(
        r#"printf %s "$SEALFS_SESSION" > id; printf tmp | {bin} set "session:$SEALFS_SESSION/scratch" && {bin} get "session:$SEALFS_SESSION/scratch" > got"#
    );
    let run = sb
        .run(&["run", "--session", "--", "sh", "-c", &script], b"")
        .ok();
    let id = std::fs::read_to_string(sb.path().join("id")).unwrap();
    assert!(id.starts_with("run-"), "{id}");
    assert!(
        run.stderr
            .contains(&format!("session:{id} is this run's session")),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read(sb.path().join("got")).unwrap(), b"tmp");
    sb.run(&["get", &format!("session:{id}/scratch")], b"")
        .fails(1, "secret not found");
    assert!(sb.run(&["session", "list"], b"").ok().stdout.is_empty());
    assert_no_leftovers(&sb, 0);
    sb.run(
        &[
            "run",
            "--env",
            "SEALFS_SESSION=global/x",
            "--session",
            "--",
            "true",
        ],
        b"",
    )
    .fails(125, "SEALFS_SESSION is given twice");
    sb.run(
        &["run", "--ttl", "5m", "--env", "A=global/a", "--", "true"],
        b"",
    )
    .fails(2, "--session");
    // A run that cannot start leaves no session and consumes nothing.
    sb.run(&["set", "global/once", "--once"], b"o").ok();
    sb.run(
        &[
            "run",
            "--session",
            "--env",
            "O=global/once",
            "--env",
            "M=global/missing",
            "--",
            "true",
        ],
        b"",
    )
    .fails(125, "M=global/missing: secret not found");
    assert!(sb.run(&["session", "list"], b"").ok().stdout.is_empty());
    assert_eq!(sb.get("global/once"), b"o");
}

#[test]
fn run_session_ends_after_a_signal_and_a_kill_9_leaves_it_to_its_ttl() {
    let sb = Sandbox::new();
    let ready = sb.path().join("ready");
    for kill in ["TERM", "KILL"] {
        let _ = std::fs::remove_file(&ready);
        let script = format!(
            r#"printf v | {} set "session:$SEALFS_SESSION/k"; echo $$ > {}.new; mv {}.new {}; exec sleep 30 >/dev/null 2>&1"#,
            crate::util::BIN,
            ready.display(),
            ready.display(),
            ready.display()
        );
        let started = Instant::now();
        let mut child = sb
            .cmd(&["run", "--session", "--ttl", "3s", "--", "sh", "-c", &script])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        eventually(Duration::from_secs(30), "the command never started", || {
            ready.exists()
        });
        assert!(!sb.run(&["session", "list"], b"").ok().stdout.is_empty());
        std::process::Command::new("kill")
            .args([&format!("-{kill}"), &child.id().to_string()])
            .status()
            .unwrap();
        child.wait().unwrap();
        if kill == "TERM" {
            // Passed on to the command, which ends; run ends the session.
            assert!(
                sb.run(&["session", "list"], b"").ok().stdout.is_empty(),
                "{kill}"
            );
        } else {
            // run could do nothing: the session stays until its lifetime.
            let command = std::fs::read_to_string(&ready).unwrap();
            std::process::Command::new("kill")
                .arg(command.trim())
                .status()
                .unwrap();
            assert!(
                !sb.run(&["session", "list"], b"").ok().stdout.is_empty(),
                "{kill}"
            );
            until_past(started + Duration::from_millis(3300));
            assert!(
                sb.run(&["session", "list"], b"").ok().stdout.is_empty(),
                "{kill}"
            );
            sb.set("global/sweep", b"s");
        }
    }
    assert_no_leftovers(&sb, 1);
}
