//! Mounts of the fleet vault on two "hosts" sharing one etcd: a change on
//! one (a write, `mv`, `mkdir`) reaches the other's next open; a read-once
//! secret is read once; reads go on from the sealed cache while etcd is
//! down, and the daemon reconnects by itself.

use std::time::{Duration, Instant};

use crate::util::{sh, sh_as, Etcd, Mounted};

/// `--backend etcd` and the endpoints of `etcd`, then `rest`.
fn fleet_args(etcd: &Etcd, rest: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "--backend",
        "etcd",
        "--etcd-endpoints",
        &etcd.endpoints(),
        "--etcd-timeout",
        "2",
    ]
    .map(String::from)
    .to_vec();
    v.extend(rest.iter().map(|s| s.to_string()));
    v
}

/// The CLI of host `m` on the fleet.
fn fleet(m: &Mounted, etcd: &Etcd, rest: &[&str], stdin: &[u8]) -> crate::util::Run {
    let args = fleet_args(etcd, rest);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    m.cli(&args, stdin)
}

/// Two hosts of one fleet: separate local vaults, so separate identities
/// and caches; the first founded it and enrolled the second.
fn two_hosts(etcd: &Etcd) -> (Mounted, Mounted) {
    let (a, b) = (Mounted::vault_only(), Mounted::vault_only());
    fleet(&a, etcd, &["fleet", "init"], b"").ok();
    let rb = fleet(&b, etcd, &["fleet", "recipient"], b"").ok().text();
    let token = fleet(&a, etcd, &["fleet", "enroll", rb.trim()], b"")
        .ok()
        .text();
    fleet(&b, etcd, &["fleet", "join", token.trim()], b"").ok();
    (a, b)
}

/// How long a change may take to reach the other mount (measured: about
/// 10 ms; generous for a loaded debug run).
const PROPAGATION: Duration = Duration::from_secs(10);

/// The record version of `r` in the fleet, as host `m`'s CLI lists it.
fn version(m: &Mounted, etcd: &Etcd, r: &str) -> u64 {
    let out = fleet(m, etcd, &["list", "--json"], b"").ok().stdout;
    let list: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["ref"] == r)
        .unwrap_or_else(|| panic!("{r} is not listed: {list}"));
    entry["version"].as_u64().unwrap()
}

/// Writes `value` to `path` and fsyncs it: the outcome of the commit
/// (close(2) would report it too, but std ignores close errors).
fn write_synced(path: &std::path::Path, value: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(value)?;
    f.sync_all()
}

#[test]
fn a_rotation_on_one_host_reaches_the_other_mount_and_cached_reads_survive_etcd() {
    if !crate::util::fuse_usable() {
        return;
    }
    let Some(mut etcd) = Etcd::start(1) else {
        return;
    };
    let (mut a, mut b) = two_hosts(&etcd);
    fleet(&a, &etcd, &["set", "global/api_key"], b"value-v1").ok();

    let mount_args = fleet_args(&etcd, &[]);
    let mount_args: Vec<&str> = mount_args.iter().map(String::as_str).collect();
    a.mount_private(&mount_args);
    b.mount_private(&mount_args);
    let read = |m: &Mounted| std::fs::read(m.path("global/api_key")).unwrap();
    assert_eq!(read(&b), b"value-v1");
    assert_eq!(read(&a), b"value-v1");
    assert!(sh(&format!("ls {}", b.path("global").display()))
        .ok()
        .text()
        .contains("api_key"));

    // Rotation on A (through the CLI): B's next opens see it.
    fleet(&a, &etcd, &["set", "global/api_key"], b"value-v2").ok();
    let t = Instant::now();
    while read(&b) != b"value-v2" {
        assert!(
            t.elapsed() < PROPAGATION,
            "B still reads the old value after {PROPAGATION:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("rotation reached the other mount in {:?}", t.elapsed());

    // A write through B's mount reaches A's.
    write_synced(&b.path("global/api_key"), b"value-v3").unwrap();
    let t = Instant::now();
    while read(&a) != b"value-v3" {
        assert!(
            t.elapsed() < PROPAGATION,
            "A still reads the old value after {PROPAGATION:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let v3_version = version(&a, &etcd, "global/api_key");

    // etcd down: what B has read stays readable; a write fails with EIO.
    etcd.members[0].kill();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(read(&b), b"value-v3");
    let err = write_synced(&b.path("global/api_key"), b"value-v4").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(nix::libc::EIO), "{err}");

    // etcd back: the daemon reconnects by itself (a write of another key
    // goes through).
    etcd.members[0].start();
    etcd.wait_healthy();
    let t = Instant::now();
    loop {
        if write_synced(&b.path("global/probe"), b"probe").is_ok() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the daemon did not reconnect"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The refused v4 was not kept for later: it did not land when the
    // daemon reconnected...
    assert_eq!(
        fleet(&a, &etcd, &["get", "global/api_key"], b"")
            .ok()
            .text(),
        "value-v3"
    );
    assert_eq!(version(&a, &etcd, "global/api_key"), v3_version);
    // ...nor with the next write: v5 is the one record after v3 in the
    // key's index shard (which counts every write of the key).
    write_synced(&b.path("global/api_key"), b"value-v5").unwrap();
    assert_eq!(version(&a, &etcd, "global/api_key"), v3_version + 1);
    let t = Instant::now();
    while read(&a) != b"value-v5" {
        assert!(
            t.elapsed() < PROPAGATION,
            "A does not see B's write after etcd came back"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        fleet(&a, &etcd, &["get", "global/api_key"], b"")
            .ok()
            .stdout,
        b"value-v5"
    );
    // O_CREAT|O_EXCL on both hosts at once: the first close stores its
    // value, the other fails with EEXIST, and nothing is overwritten.
    let open_excl = |m: &Mounted| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(m.path("global/claimed"))
            .unwrap()
    };
    let (mut fa, mut fb) = (open_excl(&a), open_excl(&b));
    std::io::Write::write_all(&mut fa, b"from-a").unwrap();
    std::io::Write::write_all(&mut fb, b"from-b").unwrap();
    let close = |f: std::fs::File| nix::unistd::close(std::os::fd::IntoRawFd::into_raw_fd(f));
    assert_eq!(close(fa), Ok(()));
    assert_eq!(close(fb), Err(nix::errno::Errno::EEXIST));
    assert_eq!(
        fleet(&a, &etcd, &["get", "global/claimed"], b"")
            .ok()
            .stdout,
        b"from-a"
    );
    // mv, mkdir and read-once work on the fleet as on a local vault, and
    // show on the other host.
    std::fs::rename(a.path("global/api_key"), a.path("global/renamed")).unwrap();
    assert!(!a.path("global/api_key").exists());
    assert_eq!(
        std::fs::read(a.path("global/renamed")).unwrap(),
        b"value-v5"
    );
    std::fs::create_dir(a.path("session/team")).unwrap();
    std::fs::rename(a.path("global/renamed"), a.path("session/team/api_key")).unwrap();
    fleet(&a, &etcd, &["set", "--once", "global/otp"], b"one-time").ok();
    let t = Instant::now();
    loop {
        let moved = std::fs::read(b.path("session/team/api_key"));
        if moved.as_deref().ok() == Some(&b"value-v5"[..]) {
            break;
        }
        assert!(
            t.elapsed() < PROPAGATION,
            "the move did not reach B: {moved:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(std::fs::read(b.path("global/otp")).unwrap(), b"one-time");
    let again = std::fs::read(b.path("global/otp")).unwrap_err();
    assert_eq!(again.raw_os_error(), Some(nix::libc::ENOENT), "{again}");
    fleet(&a, &etcd, &["get", "global/otp"], b"").fails(1, "secret not found");
}

/// On the fleet, whose scopes record no owner (uids are per host), only
/// root, the vault owner or a `create` grant makes a session scope through
/// the mount: one made in a user's own namespace would be neither theirs
/// nor counted against their quota, and would stay in every host's
/// keyrings.
#[test]
fn on_the_fleet_only_root_or_a_create_grant_makes_a_session() {
    const ALICE: u32 = 1234;
    const BOB: u32 = 1235;
    if !crate::util::fuse_usable() {
        return;
    }
    let Some(etcd) = Etcd::start(1) else {
        return;
    };
    let mut a = Mounted::vault_only();
    fleet(&a, &etcd, &["fleet", "init"], b"").ok();
    let policy = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        policy.path(),
        format!("[[grant]]\nscope = \"session:ci-*\"\nusers = [{BOB}]\naccess = \"create\"\n"),
    )
    .unwrap();
    let args = fleet_args(&etcd, &["--policy", policy.path().to_str().unwrap()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    a.mount(&args);
    let mnt = a.mnt.display();
    sh_as(ALICE, &format!("mkdir {mnt}/session/{ALICE}.x")).fails_with("Permission denied");
    sh_as(BOB, &format!("mkdir {mnt}/session/ci-1")).ok();
    sh(&format!("mkdir {mnt}/session/made-by-root")).ok();
    let status = fleet(&a, &etcd, &["fleet", "status", "--json"], b"")
        .ok()
        .stdout;
    let status: serde_json::Value = serde_json::from_slice(&status).unwrap();
    let mut scopes: Vec<&str> = status["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["scope"].as_str())
        .collect();
    scopes.sort_unstable();
    assert_eq!(scopes, ["session:ci-1", "session:made-by-root"], "{status}");
}

/// A scope granted to other members only (`sealfs fleet grant`) does not
/// exist in this host's mount, while the other scopes read on; granted to
/// every member again, it appears in the running mount, with its values.
#[test]
fn a_scope_granted_to_other_members_is_absent_from_the_mount() {
    if !crate::util::fuse_usable() {
        return;
    }
    let Some(etcd) = Etcd::start(1) else {
        return;
    };
    let (a, mut b) = two_hosts(&etcd);
    fleet(&a, &etcd, &["set", "global/k"], b"shared").ok();
    fleet(&a, &etcd, &["set", "principal:ci/k"], b"ci-only").ok();
    let ra = fleet(&a, &etcd, &["fleet", "recipient"], b"").ok().text();
    fleet(
        &a,
        &etcd,
        &["fleet", "grant", "principal:ci", ra.trim()],
        b"",
    )
    .ok();

    let mount_args = fleet_args(&etcd, &[]);
    let mount_args: Vec<&str> = mount_args.iter().map(String::as_str).collect();
    b.mount_private(&mount_args);
    assert_eq!(std::fs::read(b.path("global/k")).unwrap(), b"shared");
    let err = std::fs::read(b.path("principal/ci/k")).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
    let listed = sh(&format!("ls {}", b.path("principal").display()))
        .ok()
        .text();
    assert!(!listed.contains("ci"), "{listed}");

    fleet(&a, &etcd, &["fleet", "grant", "principal:ci", "--all"], b"").ok();
    let t = Instant::now();
    while std::fs::read(b.path("principal/ci/k")).ok().as_deref() != Some(&b"ci-only"[..]) {
        assert!(
            t.elapsed() < PROPAGATION,
            "B's mount does not show the scope after {PROPAGATION:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
