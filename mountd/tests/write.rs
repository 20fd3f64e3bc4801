//! Quick edits through the mount, checked through the CLI, and the errors
//! the shell sees for bad ones.

use crate::util::{sh, Mounted};

#[test]
fn echo_printf_append_rm_mv_mkdir_rmdir() {
    let Some(m) = Mounted::start(&[]) else { return };
    m.set("global/key", b"old");
    let mnt = m.mnt.display();
    sh(&format!("echo new > {mnt}/global/key")).ok();
    assert_eq!(m.get("global/key"), b"new\n");
    // The shell's redirection closes a duplicate of the truncated file before
    // writing: that is not a refused empty value.
    assert!(
        m.audit_events().iter().all(|e| e["outcome"] == "ok"),
        "{:?}",
        m.audit_events()
    );
    // Emptying a file empties the secret (the mount stores an empty value);
    // the old value is never kept behind an exit status of 0.
    sh(&format!(": > {mnt}/global/key")).ok();
    assert_eq!(m.get("global/key"), b"");
    sh(&format!(
        "echo again > {mnt}/global/key && truncate -s 0 {mnt}/global/key"
    ))
    .ok();
    assert_eq!(m.get("global/key"), b"");
    sh(&format!("echo new > {mnt}/global/key")).ok();
    sh(&format!("printf x > {mnt}/global/newkey")).ok();
    assert_eq!(m.get("global/newkey"), b"x");
    sh(&format!("printf yz >> {mnt}/global/newkey")).ok();
    assert_eq!(m.get("global/newkey"), b"xyz");
    sh(&format!("mv {mnt}/global/newkey {mnt}/global/renamed")).ok();
    assert_eq!(m.get("global/renamed"), b"xyz");
    m.cli(&["get", "global/newkey"], b"")
        .fails_with("secret not found");
    sh(&format!(
        "mkdir {mnt}/session/run-7 && mv {mnt}/global/renamed {mnt}/session/run-7/moved"
    ))
    .ok();
    assert_eq!(m.get("session:run-7/moved"), b"xyz");
    sh(&format!("rmdir {mnt}/session/run-7")).fails_with("not empty");
    sh(&format!(
        "rm {mnt}/session/run-7/moved && rmdir {mnt}/session/run-7"
    ))
    .ok();
    assert!(!m.path("session/run-7").exists());
    sh(&format!("rm {mnt}/global/key")).ok();
    let list = m.cli(&["list"], b"").ok().text();
    assert_eq!(list, "", "everything was removed: {list}");
    // Writes are audited, values are not.
    let ops: Vec<String> = m
        .audit_events()
        .iter()
        .filter(|e| e["source"] == "mount")
        .map(|e| e["op"].as_str().unwrap().to_owned())
        .collect();
    for op in ["write", "create", "rename", "mkdir", "delete", "rmdir"] {
        assert!(ops.iter().any(|o| o == op), "{op} not in {ops:?}");
    }
    assert!(!std::fs::read_to_string(m.audit_log())
        .unwrap()
        .contains("xyz"));
}

#[test]
fn bad_writes_get_the_right_errno_and_change_nothing() {
    let Some(m) = Mounted::start(&["--max-value-size", "100"]) else {
        return;
    };
    m.set("global/k", b"keep");
    let mnt = m.mnt.display();
    sh(&format!("head -c 101 /dev/zero >> {mnt}/global/k")).fails_with("File too large");
    assert_eq!(m.get("global/k"), b"keep");
    // Through `>`, the shell's O_TRUNC empties the file before the write
    // is refused, as on any file system (docs/policy.md).
    m.set("global/t", b"keep");
    sh(&format!("head -c 101 /dev/zero > {mnt}/global/t")).fails_with("File too large");
    assert_eq!(m.get("global/t"), b"");
    m.cli(&["delete", "global/t"], b"").ok();
    // A new file exists (empty) from its creation on, as on any file system.
    sh(&format!("head -c 101 /dev/zero > {mnt}/global/fresh")).fails_with("File too large");
    assert_eq!(m.get("global/fresh"), b"");
    m.cli(&["delete", "global/fresh"], b"").ok();
    sh(&format!(
        "head -c 101 /dev/zero | tee {mnt}/global/teed >/dev/null"
    ))
    .fails_with("File too large");
    m.cli(&["get", "global/teed"], b"")
        .fails_with("secret not found");
    sh(&format!("printf x > {mnt}/global/Bad_Name")).fails_with("Invalid argument");
    // (mv words EINVAL from rename(2) as "a subdirectory of itself": ask the syscall.)
    let err = std::fs::rename(m.path("global/k"), m.path("global/UPPER")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(nix::errno::Errno::EINVAL as i32));
    sh(&format!("ln -s k {mnt}/global/link")).fails_with("Operation not permitted");
    sh(&format!("ln {mnt}/global/k {mnt}/global/hard")).fails_with("Operation not permitted");
    sh(&format!("mknod {mnt}/global/dev c 1 3")).fails_with("Operation not permitted");
    sh(&format!("chmod 644 {mnt}/global/k")).fails_with("Operation not permitted");
    sh(&format!("chown 1:1 {mnt}/global/k")).fails_with("Operation not permitted");
    sh(&format!("mkdir {mnt}/global/sub")).fails_with("Operation not permitted");
    sh(&format!("mkdir {mnt}/session/..bad..%")).fails_with("Invalid argument");
    sh(&format!("mv {mnt}/session {mnt}/x")).fails_with("Operation not permitted");
    // Paths: overlong, invalid, and dot names.
    let long = "k".repeat(129);
    sh(&format!("printf x > {mnt}/global/{long}")).fails_with("Invalid argument");
    sh(&format!("cat {mnt}/global/{long}")).fails_with("No such file");
    let too_long = "k".repeat(300);
    sh(&format!("printf x > {mnt}/global/{too_long}")).fails_with("Invalid argument");
    let max = sh(&format!("getconf NAME_MAX {mnt}/global")).ok().text();
    assert_eq!(max.trim(), "128", "statfs tells programs the real limit");
    for name in ["with space", "tab\tname", "UPPER", "a:b", "é"] {
        sh(&format!("printf x > \"{mnt}/global/{name}\"")).fails_with("Invalid argument");
    }
    sh(&format!("printf x > {mnt}/global/..")).fails_with("Is a directory");
    sh(&format!("printf x > {mnt}/global/.")).fails_with("Is a directory");
    sh(&format!("mkdir {mnt}/session/{}", "s".repeat(129))).fails_with("Invalid argument");
    sh(&format!("mkdir {mnt}/principal/..")).fails_with("File exists");
    assert_eq!(m.get("global/k"), b"keep");
    assert_eq!(m.cli(&["list"], b"").ok().text().lines().count(), 1);
}

#[test]
fn read_only_mounts_refuse_every_write() {
    let Some(m) = Mounted::start(&["--read-only"]) else {
        return;
    };
    m.set("global/k", b"v");
    let mnt = m.mnt.display();
    assert_eq!(std::fs::read(m.path("global/k")).unwrap(), b"v");
    for cmd in [
        format!("echo x > {mnt}/global/k"),
        format!("printf x > {mnt}/global/new"),
        format!("rm {mnt}/global/k"),
        format!("mv {mnt}/global/k {mnt}/global/k2"),
        format!("mkdir {mnt}/session/s"),
    ] {
        sh(&cmd).fails_with("Read-only file system");
    }
    assert_eq!(
        sh(&format!("stat -c %a {mnt}/global/k")).ok().text().trim(),
        "400"
    );
    assert_eq!(m.get("global/k"), b"v");
}

/// Honest file semantics (issue 13): emptying through every path, a
/// read-once secret that stays read-once, an O_TRUNC open with no write,
/// escaped audit-log lines, and quiet extended-attribute answers.
#[test]
fn emptying_read_once_escaping_and_xattrs_behave_as_documented() {
    let Some(mut m) = Mounted::start(&[]) else {
        return;
    };
    let mnt = m.mnt.display();

    // O_TRUNC with no write, by a program that is not a shell.
    m.set("global/k", b"old");
    drop(
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(m.path("global/k"))
            .unwrap(),
    );
    assert_eq!(m.get("global/k"), b"");

    // Read-once: an update open (it would consume it) is refused and
    // changes nothing; a replacement stays read-once.
    m.cli(&["set", "--once", "global/once"], b"one-time").ok();
    sh(&format!("exec 3<> {mnt}/global/once")).fails_with("not permitted");
    let once = |m: &Mounted| {
        let listed: Vec<serde_json::Value> =
            serde_json::from_str(&m.cli(&["list", "--json"], b"").ok().text()).unwrap();
        listed
            .iter()
            .find(|e| e["ref"] == "global/once")
            .map(|e| e["once"] == true)
    };
    assert_eq!(once(&m), Some(true));
    sh(&format!("printf replaced > {mnt}/global/once")).ok();
    assert_eq!(std::fs::read(m.path("global/once")).unwrap(), b"replaced");
    assert!(
        !m.path("global/once").exists(),
        "read-once was lost by a write"
    );

    // A name with a carriage return and an escape sequence is refused, and
    // its audit line prints inert.
    let evil = "ev\ril\x1b[2J";
    let r = sh(&format!("printf x > '{mnt}/global/{evil}'"));
    assert_ne!(r.code, Some(0));
    let printed = m.cli(&["audit-log"], b"").ok().stdout;
    assert!(
        !printed.contains(&b'\r') && !printed.contains(&0x1b),
        "{printed:?}"
    );
    let printed = String::from_utf8(printed).unwrap();
    assert!(printed.contains("ev\\x0dil\\x1b[2J"), "{printed}");
    assert_eq!(printed.lines().count(), m.audit_events().len());

    // Extended attributes: none, answered quietly.
    let x = sh(&format!("getfattr -n security.selinux {mnt}/global/k"));
    assert!(x.stderr.contains("No such attribute"), "{}", x.stderr);
    sh(&format!("setfattr -n user.a -v b {mnt}/global/k")).fails_with("not supported");
    for _ in 0..20 {
        sh(&format!("ls -l {mnt}/global >/dev/null")).ok();
    }
    m.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(m.wait_exit().success());
    let log = m.take_stderr();
    assert!(!log.contains("Not Implemented"), "{log}");
    assert!(!log.contains("xattr"), "{log}");
}
