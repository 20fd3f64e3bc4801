//! Per-caller permissions with real other uids (setpriv), the audit trail of
//! denials, policy grants and reloads.

use std::time::{Duration, Instant};

use crate::util::{sh, sh_as, Mounted};

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
    let run = format!("{ALICE}.run");
    sh_as(
        ALICE,
        &format!("mkdir {mnt}/session/{run} && printf v > {mnt}/session/{run}/k"),
    )
    .ok();
    assert_eq!(m.get(&format!("session:{run}/k")), b"v");
    assert_eq!(
        sh_as(ALICE, &format!("ls {mnt}/session"))
            .ok()
            .text()
            .trim(),
        run
    );
    assert_eq!(
        sh_as(BOB, &format!("ls {mnt}/session")).ok().text().trim(),
        ""
    );
    sh_as(BOB, &format!("cat {mnt}/session/{run}/k")).fails_with("No such file or directory");
    sh_as(BOB, &format!("rmdir {mnt}/session/{run}")).fails_with("No such file or directory");
    sh_as(BOB, &format!("mkdir {mnt}/principal/{ALICE}")).fails_with("Permission denied");
    sh_as(
        ALICE,
        &format!("rm {mnt}/session/{run}/k && rmdir {mnt}/session/{run}"),
    )
    .ok();
}

/// Review finding M1 (the squatting sequence): an ordinary user may create
/// only sessions in its own namespace (`<login>.<tag>`, `<uid>.<tag>`);
/// another id needs a `create` grant. Root writing into a session another
/// uid owns is refused naming that uid. And `mkdir` of a scope the caller
/// may not see says `Permission denied` whether it exists or not.
#[test]
fn a_session_meant_for_someone_else_cannot_be_squatted_or_probed() {
    let policy = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        policy.path(),
        format!("[[grant]]\nscope = \"session:ci-*\"\nusers = [{BOB}]\naccess = \"create\"\n"),
    )
    .unwrap();
    let Some(m) = Mounted::start(&["--policy", policy.path().to_str().unwrap()]) else {
        return;
    };
    let mnt = m.mnt.display();

    // 1. The squat fails at its first step, and leaves nothing behind.
    sh_as(ALICE, &format!("mkdir {mnt}/session/ci-4242")).fails_with("Permission denied");
    sh_as(ALICE, &format!("mkdir {mnt}/session/01234.x")).fails_with("Permission denied");
    sh_as(ALICE, &format!("mkdir {mnt}/session/{BOB}.x")).fails_with("Permission denied");
    assert_eq!(m.cli(&["list"], b"").ok().text(), "");

    // 2. Root's secret in a session the squatter could not make: unreadable.
    m.set("session:ci-4242/deploy_token", b"root's token");
    sh_as(ALICE, &format!("cat {mnt}/session/ci-4242/deploy_token"))
        .fails_with("No such file or directory");

    // 3. No oracle: an existing session and a missing one answer alike.
    for id in ["ci-4242", "ci-9999"] {
        sh_as(ALICE, &format!("mkdir {mnt}/session/{id}")).fails_with("Permission denied");
    }
    m.set(&format!("principal:{BOB}/k"), b"bob's");
    for id in [BOB, 4321] {
        sh_as(ALICE, &format!("mkdir {mnt}/principal/{id}")).fails_with("Permission denied");
    }

    // 4. A `create` grant: bob makes ci-* sessions (an existing one he may
    // now see is EEXIST), and owns what he makes.
    sh_as(
        BOB,
        &format!("mkdir {mnt}/session/ci-77 && printf b > {mnt}/session/ci-77/k"),
    )
    .ok();
    sh_as(BOB, &format!("mkdir {mnt}/session/ci-4242")).fails_with("File exists");
    sh_as(BOB, &format!("mkdir {mnt}/session/run-1")).fails_with("Permission denied");

    // 5. Her own namespace, by uid and by login name.
    sh_as(ALICE, &format!("mkdir {mnt}/session/{ALICE}.build")).ok();
    let daemon_uid = crate::util::uid_of("daemon");
    sh_as(daemon_uid, &format!("mkdir {mnt}/session/daemon.job")).ok();
    sh_as(ALICE, &format!("mkdir {mnt}/session/daemon.other")).fails_with("Permission denied");

    // 6. Root storing into a session another uid made is refused, naming
    // the owner, until confirmed.
    let r = format!("session:{ALICE}.build/deploy_token");
    let refused = m.cli(&["set", &r], b"for alice?");
    assert_eq!(refused.code, Some(1), "{}", refused.stderr);
    assert!(
        refused.stderr.contains(&format!("uid {ALICE}")),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("--into-others-session"),
        "{}",
        refused.stderr
    );
    m.cli(&["get", &r], b"").fails_with("not found");
    m.cli(&["set", "--into-others-session", &r], b"for alice")
        .ok();
    assert_eq!(
        sh_as(
            ALICE,
            &format!("cat {mnt}/session/{ALICE}.build/deploy_token")
        )
        .ok()
        .stdout,
        b"for alice"
    );
    let refused = m.cli(&["set", "session:daemon.job/k"], b"v");
    assert!(refused.stderr.contains("(daemon)"), "{}", refused.stderr);

    // A session removed under a shell that still sits in it does not come
    // back (ownerless) through a create there.
    sh_as(
        ALICE,
        &format!(
            "mkdir {mnt}/session/{ALICE}.gone && cd {mnt}/session/{ALICE}.gone && rmdir ../{ALICE}.gone && printf x | tee k"
        ),
    )
    .fails_with("No such file or directory");
    m.cli(&["get", &format!("session:{ALICE}.gone/k")], b"")
        .fails_with("not found");
}

/// Secrets sealfs keeps for itself (`principal:sealfs-*`, the fleet's host
/// identity and etcd credentials) are never served or listed through the
/// mount: not to a `*` or `principal:*` grant, not to root.
#[test]
fn reserved_scopes_are_invisible_through_the_mount_whatever_the_policy() {
    let policy = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        policy.path(),
        format!(
            "[[grant]]\nscope = \"*\"\nusers = [{ALICE}]\naccess = \"read-write\"\n\n\
             [[grant]]\nscope = \"principal:*\"\nusers = [{BOB}]\naccess = \"read\"\n"
        ),
    )
    .unwrap();
    let Some(m) = Mounted::start(&["--policy", policy.path().to_str().unwrap()]) else {
        return;
    };
    m.set("principal:sealfs-fleet/etcd_password", b"fleet secret");
    m.set("principal:sealfs-other/k", b"later secret");
    m.set(&format!("principal:{BOB}/k"), b"bob's");
    m.set("global/x", b"x");
    let mnt = m.mnt.display();
    for uid in [ALICE, BOB, 0] {
        let ls = sh_as(uid, &format!("ls -a {mnt}/principal")).ok().text();
        assert!(
            !ls.contains("sealfs-"),
            "uid {uid} lists a reserved scope: {ls}"
        );
        assert!(ls.contains(&BOB.to_string()), "uid {uid}: {ls}");
        for path in [
            "principal/sealfs-fleet/etcd_password",
            "principal/sealfs-fleet",
            "principal/sealfs-other/k",
        ] {
            sh_as(uid, &format!("cat {mnt}/{path} || ls {mnt}/{path}"))
                .fails_with("No such file or directory");
        }
    }
    sh_as(0, &format!("mkdir {mnt}/principal/sealfs-new")).fails_with("Permission denied");
    sh_as(
        ALICE,
        &format!("mv {mnt}/global/x {mnt}/principal/sealfs-fleet/x"),
    )
    .fails_with("No such file or directory");
    sh_as(
        ALICE,
        &format!("printf evil | tee {mnt}/principal/sealfs-fleet/etcd_password"),
    )
    .fails_with("No such file or directory");
    // The CLI, which runs as the vault's owner, still reaches them.
    assert_eq!(
        m.get("principal:sealfs-fleet/etcd_password"),
        b"fleet secret"
    );
    assert_eq!(m.get("global/x"), b"x");
}

/// Revocation bites a writer that opened before it: after the grant is
/// removed and the policy reloaded, its `pwrite` + `fsync` fails with
/// EACCES and the value stays. A reload of a broken file fails closed
/// (only the built-in rules), is audited, and `--check-policy` tells first.
#[test]
fn a_revoked_writer_cannot_commit_and_a_bad_reload_fails_closed() {
    use std::io::{BufRead, BufReader, Write};
    let policy = tempfile::NamedTempFile::new().unwrap();
    let grants = |alice: bool| {
        let mut text =
            format!("[[grant]]\nscope = \"global\"\nusers = [{BOB}]\naccess = \"read\"\n");
        if alice {
            text.push_str(&format!(
                "\n[[grant]]\nscope = \"global\"\nusers = [{ALICE}]\naccess = \"read-write\"\n"
            ));
        }
        text
    };
    std::fs::write(policy.path(), grants(true)).unwrap();
    let Some(m) = Mounted::start(&["--policy", policy.path().to_str().unwrap()]) else {
        return;
    };
    m.set("global/k", b"original");
    let mnt = m.mnt.display();
    let reload_until = |uid: u32, readable: bool| {
        m.signal(nix::sys::signal::Signal::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(10);
        while (sh_as(uid, &format!("cat {mnt}/global/k")).code == Some(0)) != readable {
            assert!(Instant::now() < deadline, "policy was not reloaded");
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    // Alice opens for writing while she may.
    let path = m.path("global/k");
    let mut writer = std::process::Command::new("setpriv")
        .args([
            "--reuid",
            &ALICE.to_string(),
            "--regid",
            &ALICE.to_string(),
            "--clear-groups",
        ])
        .args(["perl", "-MIO::Handle", "-e"])
        .arg(
            r#"open(my $f, "+<", $ARGV[0]) or die "open: $!\n"; print "opened\n"; STDOUT->flush;
               <STDIN>; sysseek($f, 0, 0); defined(syswrite($f, "revoked!")) or die "write: $!\n";
               $f->sync or die "fsync: $!\n"; close($f) or die "close: $!\n";"#,
        )
        .arg(&path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(writer.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "opened\n");

    // Her grant is removed; the reload takes effect; then she writes.
    std::fs::write(policy.path(), grants(false)).unwrap();
    reload_until(ALICE, false);
    writer.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let out = writer.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("fsync: Permission denied"), "{stderr}");
    assert_eq!(m.get("global/k"), b"original");
    assert_eq!(
        sh_as(BOB, &format!("cat {mnt}/global/k")).ok().stdout,
        b"original"
    );

    // A broken file: --check-policy says so, and a reload fails closed.
    std::fs::write(policy.path(), "[[grant]\nscope = ").unwrap();
    let check = std::process::Command::new(crate::util::MOUNTD)
        .args(["--check-policy", policy.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&check.stderr).contains("line 1"));
    reload_until(BOB, false);
    let reloads: Vec<_> = m
        .audit_events()
        .into_iter()
        .filter(|e| e["op"] == "policy-reload")
        .collect();
    assert_eq!(reloads.len(), 2, "{reloads:?}");
    assert_eq!(reloads[0]["outcome"], "ok");
    assert_ne!(reloads[1]["outcome"], "ok");
    // Root (a built-in rule) still reads; a fixed file restores the grant.
    assert_eq!(m.get("global/k"), b"original");
    std::fs::write(policy.path(), grants(false)).unwrap();
    let check = std::process::Command::new(crate::util::MOUNTD)
        .args(["--check-policy", policy.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(check.status.success());
    assert!(String::from_utf8_lossy(&check.stdout).contains(&format!("users = [{BOB}]")));
    reload_until(BOB, true);
}

/// The daemon's locked memory, in bytes (`VmLck` of /proc/<pid>/status).
fn locked_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// Per-uid limits: 1,000 write opens by one uid stop at its cap (EMFILE,
/// audited) while another uid still reads, its plaintext locked; sessions,
/// secrets and bytes in a uid's sessions stop at theirs (EDQUOT, ENOSPC),
/// and another uid's quota is its own.
#[test]
fn one_uid_at_its_limits_stops_there_and_never_stops_another() {
    use crate::util::Holder;
    let policy = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        policy.path(),
        format!(
            "[[grant]]\nscope = \"global\"\nusers = [{ALICE}]\naccess = \"read-write\"\n\n\
             [[grant]]\nscope = \"global\"\nusers = [{BOB}]\naccess = \"read\"\n"
        ),
    )
    .unwrap();
    let Some(m) = Mounted::start(&[
        "--policy",
        policy.path().to_str().unwrap(),
        "--max-handles",
        "100",
        "--max-sessions-per-uid",
        "2",
        "--max-session-secrets-per-uid",
        "3",
        "--max-session-bytes-per-uid",
        "100",
    ]) else {
        return;
    };
    m.set("global/k", b"value");
    let mnt = m.mnt.display();
    let page = 4096;

    let alice = Holder::open(ALICE, &m.path("global/k"), 1000, true);
    assert_eq!(alice.opened, 64, "{:?}", alice.errors.first());
    assert_eq!(alice.errors.len(), 936);
    assert!(
        alice.errors.iter().all(|e| e == "Too many open files"),
        "{:?}",
        alice.errors[0]
    );
    assert_eq!(
        sh_as(BOB, &format!("cat {mnt}/global/k")).ok().stdout,
        b"value"
    );
    // The daemon-wide cap (--max-handles 100) bounds what many uids hold.
    let bob = Holder::open(BOB, &m.path("global/k"), 40, false);
    assert_eq!(bob.opened, 36);
    assert!(
        bob.errors
            .iter()
            .all(|e| e == "Too many open files in system"),
        "{:?}",
        bob.errors
    );
    assert!(
        locked_bytes(m.pid()) >= 100 * page,
        "each open's plaintext is in locked pages of its own: {} bytes locked",
        locked_bytes(m.pid())
    );
    bob.release();
    alice.release();
    // Open directories hold a slot too (a listing is memory kept for it).
    let dirs = sh_as(
        ALICE,
        &format!(
            "perl -e 'my @d; for (1..100) {{ if (opendir(my $h, $ARGV[0])) {{ push @d, $h }} else {{ print \"$!\\n\" }} }} print scalar(@d), \"\\n\"' {mnt}/global"
        ),
    )
    .ok()
    .text();
    let mut lines: Vec<&str> = dirs.lines().collect();
    assert_eq!(lines.pop(), Some("64"), "{dirs}");
    assert!(lines.iter().all(|l| *l == "Too many open files"), "{dirs}");
    assert_eq!(
        sh_as(ALICE, &format!("cat {mnt}/global/k")).ok().stdout,
        b"value",
        "her slots came back when her files closed"
    );
    // Every refusal is audited; identical ones folded into counts.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let emfile: Vec<_> = m
            .audit_events()
            .into_iter()
            .filter(|e| e["uid"] == ALICE && e["detail"] == "EMFILE" && e["ref"] == "global/k")
            .collect();
        let counted: u64 = emfile
            .iter()
            .map(|e| e["repeated"].as_u64().unwrap_or(1))
            .sum();
        if counted == 936 {
            assert!(
                emfile.len() <= 100, // folded: two records per second of refusals at most
                "{} records for 936 refusals",
                emfile.len()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{counted} of 936 refusals audited"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Sessions, secrets and bytes.
    for s in ["s1", "s2"] {
        sh_as(ALICE, &format!("mkdir {mnt}/session/{ALICE}.{s}")).ok();
    }
    sh_as(ALICE, &format!("mkdir {mnt}/session/{ALICE}.s3")).fails_with("Disk quota exceeded");
    let put = |uid: u32, path: String, value: &str| {
        sh_as(
            uid,
            &format!("printf {value} | tee {mnt}/{path} >/dev/null"),
        )
    };
    put(ALICE, format!("session/{ALICE}.s1/a"), "1").ok();
    put(ALICE, format!("session/{ALICE}.s1/b"), "2").ok();
    put(ALICE, format!("session/{ALICE}.s2/c"), "3").ok();
    put(ALICE, format!("session/{ALICE}.s2/d"), "4").fails_with("Disk quota exceeded");
    m.cli(&["get", &format!("session:{ALICE}.s2/d")], b"")
        .fails_with("not found");
    put(ALICE, format!("session/{ALICE}.s1/a"), &"x".repeat(99))
        .fails_with("No space left on device");
    assert_eq!(m.get(&format!("session:{ALICE}.s1/a")), b"1");
    put(ALICE, format!("session/{ALICE}.s1/a"), &"x".repeat(98)).ok();
    // Bob's quota is his own.
    sh_as(BOB, &format!("mkdir {mnt}/session/{BOB}.s1")).ok();
    for k in ["a", "b", "c"] {
        put(BOB, format!("session/{BOB}.s1/{k}"), "v").ok();
    }
    // A rename into a session counts too.
    sh_as(
        ALICE,
        &format!("mv {mnt}/global/k {mnt}/session/{ALICE}.s2/moved"),
    )
    .fails_with("Disk quota exceeded");
    assert_eq!(m.get("global/k"), b"value");
    // Root is not limited.
    for k in ["e", "f"] {
        sh(&format!("printf v > {mnt}/session/{ALICE}.s2/{k}")).ok();
    }
}

/// A flood of distinct denials by one uid leaves a bounded audit log: it
/// rotates at its size, keeps N files, and says so in each new file.
#[test]
fn a_flood_of_denials_leaves_a_bounded_log() {
    let Some(m) = Mounted::start(&["--audit-log-max-size", "4096", "--audit-log-keep", "2"]) else {
        return;
    };
    let mnt = m.mnt.display();
    // `sealfs audit-log --follow` keeps following across rotations.
    let mut follower = std::process::Command::new(crate::util::sealfs_bin())
        .args(["audit-log", "--follow", "--json", "--audit-log"])
        .arg(m.audit_log())
        .env("SEALFS_VAULT_DIR", m.vault_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let followed = {
        let out = follower.stdout.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            std::io::BufReader::new(out)
                .lines()
                .map_while(Result::ok)
                .find(|l| l.contains("session:ci-400"))
                .is_some()
        })
    };
    sh_as(
        ALICE,
        &format!("for i in $(seq 1 400); do mkdir {mnt}/session/ci-$i 2>/dev/null; done; true"),
    )
    .ok();
    let dir = m.audit_log().parent().unwrap().to_owned();
    let mut total = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("audit.log") {
            let len = entry.metadata().unwrap().len();
            assert!(len <= 4096, "{name}: {len} bytes");
            assert!(
                ["audit.log", "audit.log.1", "audit.log.2"].contains(&name.as_str()),
                "{name}"
            );
            total += len;
        }
    }
    assert!(total <= 3 * 4096);
    let first = &m.audit_events()[0];
    assert_eq!(first["op"], "rotate", "{first}");
    assert_eq!(m.audit_events().last().unwrap()["ref"], "session:ci-400");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !followed.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the follower lost the log at a rotation"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(followed.join().unwrap());
}

/// At the memlock limit the daemon refuses new opens with ENOMEM rather
/// than hold plaintext in memory that may be swapped; with
/// `--allow-unlocked-memory` it serves them unlocked and warns once. The
/// daemon runs without CAP_IPC_LOCK (which would lift the limit) and with
/// 64 KiB of locked memory (16 pages).
#[test]
fn at_the_memlock_limit_opens_get_enomem_unless_unlocked_is_allowed() {
    use crate::util::Holder;
    let limited = [
        "prlimit",
        "--memlock=65536:65536",
        "setpriv",
        "--bounding-set=-ipc_lock",
        "--inh-caps=-ipc_lock",
    ];
    let Some(m) = Mounted::start_through(&limited, &[]) else {
        return;
    };
    m.set("global/k", b"value");
    let held = Holder::open(0, &m.path("global/k"), 40, false);
    assert!(
        held.opened >= 1 && held.opened <= 16,
        "{} opened",
        held.opened
    );
    assert_eq!(held.errors.len(), 40 - held.opened);
    assert!(
        held.errors.iter().all(|e| e == "Cannot allocate memory"),
        "{:?}",
        held.errors
    );
    held.release();
    assert_eq!(std::fs::read(m.path("global/k")).unwrap(), b"value");
    drop(m);

    let Some(mut m) = Mounted::start_through(&limited, &["--allow-unlocked-memory"]) else {
        return;
    };
    m.set("global/k", b"value");
    let held = Holder::open(0, &m.path("global/k"), 40, false);
    assert_eq!((held.opened, held.errors.len()), (40, 0));
    held.release();
    m.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(m.wait_exit().success());
    let log = m.take_stderr();
    assert_eq!(log.matches("serving unlocked").count(), 1, "{log}");
}

/// A uid deleted and given to another user does not inherit
/// `principal:<old name>`: login names are looked up again after 3 s.
#[test]
fn a_recycled_uid_does_not_inherit_the_old_name() {
    const UID: u32 = 4711;
    struct Users;
    impl Drop for Users {
        fn drop(&mut self) {
            for name in ["slfold4711", "slfnew4711"] {
                let _ = std::process::Command::new("userdel").arg(name).output();
            }
        }
    }
    let Some(m) = Mounted::start(&[]) else { return };
    let _users = Users;
    sh(&format!(
        "useradd -u {UID} -M -N -s /usr/sbin/nologin slfold4711"
    ))
    .ok();
    m.set("principal:slfold4711/token", b"the old user's");
    let mnt = m.mnt.display();
    let read = || sh_as(UID, &format!("cat {mnt}/principal/slfold4711/token"));
    assert_eq!(read().ok().stdout, b"the old user's");
    sh(&format!(
        "userdel slfold4711 && useradd -u {UID} -M -N -s /usr/sbin/nologin slfnew4711"
    ))
    .ok();
    std::thread::sleep(Duration::from_millis(3500));
    read().fails_with("No such file or directory");
}
