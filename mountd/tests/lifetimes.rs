//! Lifetimes through the mount: an expired secret cannot be opened (even
//! one the daemon has just served from its cache), a session made with
//! `mkdir` ends after `--session-ttl` and a file opened in it before its end
//! cannot bring it back, and the daemon removes what expired from the vault
//! directory within a minute although nothing writes.

use std::time::{Duration, Instant};

use crate::util::{eventually, sh, sh_as, until_past, Mounted};

const ALICE: u32 = 1234;

/// The blob files in the vault's objects directory.
fn blobs(m: &Mounted) -> usize {
    std::fs::read_dir(m.vault_dir().join("objects"))
        .unwrap()
        .map(|fan| std::fs::read_dir(fan.unwrap().path()).unwrap().count())
        .sum()
}

#[test]
fn an_expired_secret_cannot_be_opened_through_the_mount() {
    let Some(m) = Mounted::start(&[]) else { return };
    let mnt = m.mnt.display();
    m.set("global/keep", b"kept");
    m.cli(&["set", "global/short", "--ttl", "4s"], b"short-lived")
        .ok();
    // Its end was set before the command returned.
    let expired = Instant::now() + Duration::from_millis(4100);
    // An edit through the mount keeps its lifetime.
    sh(&format!("printf edited > {mnt}/global/short")).ok();
    let json = m.cli(&["list", "--json"], b"").ok().stdout_str();
    assert_eq!(json.matches(r#""expires""#).count(), 1, "{json}");
    // A file opened for writing before the end and closed after it cannot
    // bring the secret back.
    let late = std::thread::spawn({
        let script = format!("exec 3<>{mnt}/global/short && sleep 5 && printf X >&3 && exec 3>&-");
        move || sh(&script)
    });
    // Served once, so the daemon's read cache holds it.
    assert_eq!(
        sh(&format!("cat {mnt}/global/short")).ok().stdout,
        b"edited"
    );
    until_past(expired);
    sh(&format!("cat {mnt}/global/short")).fails_with("No such file or directory");
    let ls = sh(&format!("ls {mnt}/global")).ok().text();
    assert_eq!(ls.trim(), "keep");
    late.join().unwrap();
    m.cli(&["get", "global/short"], b"")
        .fails(1, "secret not found");
    // Nothing writes, yet the daemon removes its blob.
    eventually(
        Duration::from_secs(30),
        "the daemon never removed the expired blob",
        || blobs(&m) == 1,
    );
}

#[test]
fn a_session_made_with_mkdir_ends_after_the_session_ttl() {
    let Some(m) = Mounted::start(&["--session-ttl", "4s"]) else {
        return;
    };
    let mnt = m.mnt.display();
    let run = format!("{ALICE}.build");
    sh_as(ALICE, &format!("mkdir {mnt}/session/{run}")).ok();
    // The mkdir returned after the session's end was set.
    let ended = Instant::now() + Duration::from_millis(4100);
    sh_as(ALICE, &format!("printf v > {mnt}/session/{run}/k")).ok();
    // A file opened before the end and written after it does not bring the
    // session back.
    let late = std::thread::spawn({
        let script =
            format!("exec 3>{mnt}/session/{run}/late && sleep 5 && printf late >&3 && exec 3>&-");
        move || sh_as(ALICE, &script)
    });
    assert_eq!(
        sh_as(ALICE, &format!("cat {mnt}/session/{run}/k"))
            .ok()
            .stdout,
        b"v"
    );
    let list = m.cli(&["session", "list"], b"").ok().stdout_str();
    assert!(
        list.starts_with(&format!("{run}\tuid {ALICE}")) && !list.contains("\t-\t"),
        "{list}"
    );
    until_past(ended);
    sh_as(ALICE, &format!("cat {mnt}/session/{run}/k")).fails_with("No such file or directory");
    assert_eq!(
        sh_as(ALICE, &format!("ls {mnt}/session"))
            .ok()
            .text()
            .trim(),
        ""
    );
    m.cli(&["get", &format!("session:{run}/k")], b"")
        .fails(1, "secret not found");
    // (Its close reports the refusal, which a shell does not check.)
    late.join().unwrap();
    eventually(
        Duration::from_secs(30),
        "the daemon never removed the ended session",
        || blobs(&m) == 0 && m.cli(&["session", "list"], b"").ok().stdout.is_empty(),
    );
    m.cli(&["get", &format!("session:{run}/late")], b"")
        .fails(1, "secret not found");
    // Bad input to the daemon: refused before it mounts.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_sealfs-mountd"))
        .args(["--session-ttl", "0s", "/nonexistent"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("longer than 0"));
}

#[test]
fn a_handle_cannot_undo_a_later_lifetime_or_reach_a_new_session() {
    let Some(m) = Mounted::start(&[]) else { return };
    let mnt = m.mnt.display();
    m.set("global/a", b"old");
    m.cli(&["session", "create", "s1", "--ttl", "1h"], b"").ok();
    m.set("session:s1/k", b"old session value");
    // Both opened for an edit now, written to later.
    let edits = std::thread::spawn({
        let script = format!(
                        "exec 3<>{mnt}/global/a 4<>{mnt}/session/s1/k 5>{mnt}/session/s1/new && sleep 5 && printf X >&3 && printf X >&4 && printf N >&5 && exec 3>&- 4>&- 5>&-"
        );
        move || sh(&script)
    });
    std::thread::sleep(Duration::from_millis(500));
    // Rotated with a lifetime after the open, which ends before the close.
    m.cli(&["set", "global/a", "--ttl", "3s"], b"rotated").ok();
    // The session is ended and another made under its id.
    m.cli(&["session", "end", "s1"], b"").ok();
    m.cli(
        &["session", "create", "s1", "--ttl", "1h", "--owner", "4321"],
        b"",
    )
    .ok();
    edits.join().unwrap();
    m.cli(&["get", "global/a"], b"")
        .fails(1, "secret not found");
    m.cli(&["get", "session:s1/k"], b"")
        .fails(1, "secret not found");
    m.cli(&["get", "session:s1/new"], b"")
        .fails(1, "secret not found");
    assert!(
        !m.cli(&["list", "--json"], b"")
            .ok()
            .stdout_str()
            .contains("global/a"),
        "the old value came back"
    );
}
