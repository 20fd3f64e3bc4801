//! Per-caller permissions with real other uids (setpriv), the audit trail of
//! denials, policy grants and reloads.

use std::time::{Duration, Instant};

use crate::util::{sh_as, Mounted};

const ALICE: u32 = 1234;
const BOB: u32 = 1235;

#[test]
fn other_uids_see_and_open_only_what_they_are_granted() {
    let Some(m) = Mounted::start(&[]) else { return };
    m.set("global/shared", b"for everyone granted");
    m.set(&format!("principal:{ALICE}/token"), b"alice's token");
    m.set(&format!("principal:{BOB}/token"), b"bob's token");
    let mnt = m.mnt.display();

    // Nothing granted: global is invisible, cat fails with ENOENT.
    let r = sh_as(ALICE, &format!("cat {mnt}/global/shared"));
    r.fails_with("No such file or directory");
    let ls = sh_as(ALICE, &format!("ls {mnt} {mnt}/principal"))
        .ok()
        .text();
    assert!(!ls.contains("global"), "{ls}");
    assert!(
        ls.contains(&ALICE.to_string()) && !ls.contains(&BOB.to_string()),
        "readdir hides others' scopes: {ls}"
    );

    // Principal self-access: read-write in its own scope, owned by the caller.
    assert_eq!(
        sh_as(ALICE, &format!("cat {mnt}/principal/{ALICE}/token"))
            .ok()
            .stdout,
        b"alice's token"
    );
    let st = sh_as(
        ALICE,
        &format!("stat -c '%a %u %g' {mnt}/principal/{ALICE}/token"),
    )
    .ok()
    .text();
    assert_eq!(st.trim(), format!("600 {ALICE} {ALICE}"));
    // Nothing she looked up is cached for bob (TTL 0): right after her
    // lookup, his stat of the same path goes to the daemon and is refused.
    // A run where his stat came later than 100 ms after hers proves nothing
    // about a cache, so it is repeated.
    let token = m.path(&format!("principal/{ALICE}/token"));
    let mut within_100ms = false;
    for _ in 0..10 {
        sh_as(ALICE, &format!("stat -c %u {}", token.display())).ok();
        let after_alice = Instant::now();
        sh_as(BOB, &format!("stat -c %u {}", token.display()))
            .fails_with("No such file or directory");
        if after_alice.elapsed() < Duration::from_millis(100) {
            within_100ms = true;
            break;
        }
    }
    assert!(
        within_100ms,
        "bob's stat never ran within 100 ms of alice's"
    );
    sh_as(
        ALICE,
        &format!("printf rotated > {mnt}/principal/{ALICE}/token"),
    )
    .ok();
    assert_eq!(m.get(&format!("principal:{ALICE}/token")), b"rotated");
    sh_as(ALICE, &format!("cat {mnt}/principal/{BOB}/token"))
        .fails_with("No such file or directory");
    sh_as(ALICE, &format!("printf x > {mnt}/principal/{BOB}/new")).fails_with("nonexistent");

    // Denials are audited with who asked.
    let denied: Vec<_> = m
        .audit_events()
        .into_iter()
        .filter(|e| e["outcome"] == "denied")
        .collect();
    // The lookup of `global` itself was refused: the scope is invisible to her.
    assert!(
        denied
            .iter()
            .any(|e| e["uid"] == ALICE && e["ref"] == "global" && e["op"] == "lookup"),
        "{denied:?}"
    );
    assert!(
        denied
            .iter()
            .all(|e| e["pid"].as_u64().unwrap() > 0 && e["exe"].is_string()),
        "{denied:?}"
    );
    assert!(denied.iter().any(|e| e["uid"] == ALICE
        && e["ref"]
            .as_str()
            .unwrap()
            .starts_with(&format!("principal:{BOB}"))));
}

#[test]
fn policy_grants_read_and_is_reloaded_on_sighup() {
    let policy_path = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        policy_path.path(),
        format!("[[grant]]\nscope = \"global\"\nusers = [{ALICE}]\naccess = \"read\"\n"),
    )
    .unwrap();
    let Some(m) = Mounted::start(&["--policy", policy_path.path().to_str().unwrap()]) else {
        return;
    };
    m.set("global/shared", b"s3cret");
    let mnt = m.mnt.display();
    assert_eq!(
        sh_as(ALICE, &format!("cat {mnt}/global/shared"))
            .ok()
            .stdout,
        b"s3cret"
    );
    assert_eq!(
        sh_as(ALICE, &format!("stat -c %a {mnt}/global/shared"))
            .ok()
            .text()
            .trim(),
        "400"
    );
    sh_as(ALICE, &format!("printf x > {mnt}/global/shared")).fails_with("Permission denied");
    sh_as(ALICE, &format!("rm {mnt}/global/shared")).fails_with("Permission denied");
    sh_as(BOB, &format!("cat {mnt}/global/shared")).fails_with("No such file or directory");
    assert_eq!(m.get("global/shared"), b"s3cret");

    // Grant bob read-write instead, reload, and the change holds at once.
    std::fs::write(
        policy_path.path(),
        format!("[[grant]]\nscope = \"glob*\"\nusers = [{BOB}]\naccess = \"read-write\"\n"),
    )
    .unwrap();
    m.signal(nix::sys::signal::Signal::SIGHUP);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while sh_as(BOB, &format!("test -e {mnt}/global/shared")).code != Some(0) {
        assert!(
            std::time::Instant::now() < deadline,
            "policy was not reloaded"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    sh_as(BOB, &format!("printf by-bob > {mnt}/global/shared")).ok();
    assert_eq!(m.get("global/shared"), b"by-bob");
    sh_as(ALICE, &format!("cat {mnt}/global/shared")).fails_with("No such file or directory");
}

#[test]
fn sessions_belong_to_the_uid_that_made_them() {
    let Some(m) = Mounted::start(&[]) else { return };
    let mnt = m.mnt.display();
    sh_as(
        ALICE,
        &format!("mkdir {mnt}/session/alice-run && printf v > {mnt}/session/alice-run/k"),
    )
    .ok();
    assert_eq!(m.get("session:alice-run/k"), b"v");
    assert_eq!(
        sh_as(ALICE, &format!("ls {mnt}/session"))
            .ok()
            .text()
            .trim(),
        "alice-run"
    );
    assert_eq!(
        sh_as(BOB, &format!("ls {mnt}/session")).ok().text().trim(),
        ""
    );
    sh_as(BOB, &format!("cat {mnt}/session/alice-run/k")).fails_with("No such file or directory");
    sh_as(BOB, &format!("rmdir {mnt}/session/alice-run")).fails_with("No such file or directory");
    sh_as(BOB, &format!("mkdir {mnt}/principal/{ALICE}")).fails_with("Permission denied");
    sh_as(
        ALICE,
        &format!("rm {mnt}/session/alice-run/k && rmdir {mnt}/session/alice-run"),
    )
    .ok();
}
