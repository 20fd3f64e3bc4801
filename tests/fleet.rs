//! The fleet vault on a real etcd started by the tests: hosts sharing
//! secrets, enrolment and revocation, concurrent writers, replay, and
//! member failures.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use sealfs::fleet::etcd::{Change, EtcdStore};
use sealfs::fleet::keys::{shard_mac_input, shard_of, FleetKey, HostIdentity};
use sealfs::fleet::{EtcdOptions, FleetError, FleetVault};
use sealfs::{SensitiveBytes, VaultRef, VaultScope};

use crate::util::{Etcd, Run, Sandbox, TestPki};

/// One host: its own local vault (and so its own identity) and cache.
pub(crate) struct Host {
    pub(crate) sb: Sandbox,
    pub(crate) endpoints: String,
}

impl Host {
    pub(crate) fn new(etcd: &Etcd) -> Host {
        Host {
            sb: Sandbox::new(),
            endpoints: etcd.endpoints(),
        }
    }

    pub(crate) fn run(&self, args: &[&str], stdin: &[u8]) -> Run {
        let mut all = vec![
            "--backend",
            "etcd",
            "--etcd-endpoints",
            &self.endpoints,
            "--etcd-timeout",
            "2",
        ];
        all.extend_from_slice(args);
        self.sb.run(&all, stdin)
    }

    pub(crate) fn recipient(&self) -> String {
        self.run(&["fleet", "recipient"], b"")
            .ok()
            .stdout_str()
            .trim()
            .to_owned()
    }

    /// `sealfs fleet init`; the fleet id it prints.
    pub(crate) fn init(&self) -> String {
        let id = self
            .run(&["fleet", "init"], b"")
            .ok()
            .stdout_str()
            .trim()
            .to_owned();
        assert_eq!(id.len(), 64, "{id}");
        id
    }

    pub(crate) fn set(&self, r: &str, v: &[u8]) {
        self.run(&["set", r], v).ok();
    }

    pub(crate) fn get(&self, r: &str) -> Vec<u8> {
        self.run(&["get", r], b"").ok().stdout
    }

    /// Enrolls `new` (this host being a member), which then joins.
    pub(crate) fn enroll(&self, new: &Host) {
        let token = self
            .run(&["fleet", "enroll", &new.recipient()], b"")
            .ok()
            .stdout_str();
        new.run(&["fleet", "join", token.trim()], b"").ok();
    }

    /// `sealfs fleet grant SCOPE` to the hosts `to`.
    pub(crate) fn grant(&self, scope: &str, to: &[&Host]) -> Run {
        let cards: Vec<String> = to.iter().map(|h| h.recipient()).collect();
        let mut args = vec!["fleet", "grant", scope];
        args.extend(cards.iter().map(String::as_str));
        self.run(&args, b"")
    }

    /// The library's view, as a long-running process (the mount) has it.
    pub(crate) fn vault(&self) -> FleetVault {
        // The default time limit: long enough to ride out a leader
        // election when a member dies.
        self.vault_with(&self.endpoints, Duration::from_secs(5))
    }

    /// As [`Host::vault`], through `endpoints` with time limit `timeout`.
    pub(crate) fn vault_with(&self, endpoints: &str, timeout: Duration) -> FleetVault {
        let local = self.sb.vault();
        FleetVault::open(
            local,
            EtcdOptions {
                endpoints: endpoints.split(',').map(str::to_owned).collect(),
                prefix: "sealfs".into(),
                timeout,
                credentials: None,
                tls: None,
            },
            self.sb.vault_dir().join("fleet-cache"),
            sealfs::DEFAULT_MAX_VALUE_SIZE,
        )
        .expect("open the fleet vault")
    }
}

/// A fleet of `n` hosts on one etcd, the first one initialising it and
/// enrolling the others, which then join it with the token the
/// enrolment printed.
pub(crate) fn fleet(etcd: &Etcd, n: usize) -> Vec<Host> {
    let hosts: Vec<Host> = (0..n).map(|_| Host::new(etcd)).collect();
    hosts[0].init();
    for h in &hosts[1..] {
        hosts[0].enroll(h);
    }
    hosts
}

fn r(s: &str) -> VaultRef {
    s.parse().unwrap()
}

#[test]
fn hosts_share_secrets_and_one_not_enrolled_gets_a_clear_error() {
    let Some(etcd) = Etcd::start(1) else { return };
    let hosts = fleet(&etcd, 2);
    let (a, b) = (&hosts[0], &hosts[1]);
    a.set("global/db_password", b"hunter2");
    assert_eq!(b.get("global/db_password"), b"hunter2");
    b.set("principal:ci/token", b"from-b");
    assert_eq!(a.get("principal:ci/token"), b"from-b");
    assert!(a
        .run(&["list"], b"")
        .ok()
        .stdout_str()
        .contains("principal:ci/token\t6\t"));

    let stranger = Host::new(&etcd);
    let who = stranger.recipient();
    stranger
        .run(&["get", "global/db_password"], b"")
        .fails(1, "this host has not joined the fleet under this prefix");
    let token = scope_status(a)["join_token"].as_str().unwrap().to_owned();
    stranger
        .run(&["fleet", "join", "not-a-token"], b"")
        .fails(1, "not a join token");
    stranger.run(&["fleet", "join", &token], b"").ok();
    stranger.run(&["get", "global/db_password"], b"").fails(
        1,
        &format!("this host ({who}) is not enrolled in scope global"),
    );
    stranger
        .run(&["set", "global/db_password"], b"evil")
        .fails(1, "is not enrolled");
    stranger
        .run(&["fleet", "init"], b"")
        .fails(1, "a fleet exists under this prefix already");
    assert_eq!(a.get("global/db_password"), b"hunter2");
    // A member cannot enroll garbage; enrolling a member again writes its
    // copy of the grant key anew (the mend for one replaced or deleted).
    a.run(&["fleet", "enroll", "age1notarecipient"], b"")
        .fails(1, "not a host card");
    a.run(&["fleet", "enroll", &b.recipient()], b"").ok();
    assert_eq!(b.get("global/db_password"), b"hunter2");
    // Values never reach etcd in the clear.
    let dump = etcd.ctl(&["get", "--prefix", "/sealfs"]);
    assert!(dump.status.success());
    assert!(!String::from_utf8_lossy(&dump.stdout).contains("hunter2"));
}

#[test]
fn revoke_rotates_the_key_so_the_revoked_host_cannot_read_new_values() {
    let Some(etcd) = Etcd::start(1) else { return };
    let hosts = fleet(&etcd, 3);
    let (a, b, c) = (&hosts[0], &hosts[1], &hosts[2]);
    a.set("global/api_key", b"before");
    assert_eq!(b.get("global/api_key"), b"before");
    let objects_before = etcd.ctl(&["get", "--prefix", "/sealfs/obj/"]).stdout;

    // The fleet key B holds: its copy in the keyring, unwrapped with B's
    // own identity (what a revoked host keeps).
    let b_identity = host_identity(b);
    let old_key = keyring_key(&etcd, &b_identity).expect("B is in the keyring");
    let status = scope_status(a);
    assert_eq!(status["epoch"], 1, "{status}");
    assert_eq!(status["key_id"], old_key.id().as_str(), "{status}");
    // The check below can tell: today B's key opens the data key.
    assert!(opens_data_key(&etcd, &old_key, "global/api_key"));

    a.run(&["fleet", "revoke", &b.recipient()], b"").ok();
    let status = scope_status(a);
    assert_eq!(status["epoch"], 2, "{status}");
    // A new key: another fingerprint, in the keyring and in the status.
    let new_key = keyring_key(&etcd, &host_identity(a)).expect("A is in the keyring");
    assert_eq!(status["key_id"], new_key.id().as_str(), "{status}");
    assert_ne!(new_key.id(), old_key.id(), "revoke kept the fleet key");
    assert!(keyring_key(&etcd, &b_identity).is_none());
    // Only the data keys were re-wrapped: the stored values are unchanged.
    assert_eq!(
        etcd.ctl(&["get", "--prefix", "/sealfs/obj/"]).stdout,
        objects_before
    );
    // B's old key neither opens the re-wrapped data key nor authenticates
    // the index shard; the new key does both; and the keyring no longer
    // carries the old key once every shard has moved.
    assert!(!opens_data_key(&etcd, &old_key, "global/api_key"));
    assert!(opens_data_key(&etcd, &new_key, "global/api_key"));
    let ring = etcd_json(&etcd, "/sealfs/keyring/global");
    assert!(!ring["body"].as_str().unwrap().contains("older"), "{ring}");
    assert_eq!(c.get("global/api_key"), b"before");
    // The keyring as it was while the rotation ran (validly signed by A,
    // same epoch and key, still carrying B's old key), found in etcd's
    // history and written back: refused by hosts that saw it dropped.
    let now = etcd.ctl(&["get", "/sealfs/keyring/global", "-w", "json"]);
    let now: serde_json::Value = serde_json::from_slice(&now.stdout).unwrap();
    let mut rev = now["header"]["revision"].as_i64().unwrap();
    let carrying = loop {
        rev -= 1;
        assert!(rev > 0, "no keyring carrying the old key in etcd's history");
        let out = etcd.ctl(&[
            "get",
            "--print-value-only",
            "/sealfs/keyring/global",
            &format!("--rev={rev}"),
        ]);
        if String::from_utf8_lossy(&out.stdout).contains("older") {
            break out.stdout;
        }
    };
    let settled = etcd
        .ctl(&["get", "--print-value-only", "/sealfs/keyring/global"])
        .stdout;
    let put_keyring = |v: &[u8]| {
        let v = String::from_utf8_lossy(v).trim_end().to_owned();
        assert!(etcd
            .ctl(&["put", "/sealfs/keyring/global", &v])
            .status
            .success());
    };
    put_keyring(&carrying);
    for h in [a, c] {
        h.run(&["get", "global/api_key"], b"").fails(
            1,
            "it carries the keys its rotation replaced, which this host has seen dropped",
        );
    }
    put_keyring(&settled);
    assert_eq!(c.get("global/api_key"), b"before");

    a.set("global/api_key", b"after");
    assert!(!opens_data_key(&etcd, &old_key, "global/api_key"));
    assert!(opens_data_key(&etcd, &new_key, "global/api_key"));
    b.run(&["get", "global/api_key"], b"")
        .fails(1, "is not enrolled in scope global");
    b.run(&["set", "global/api_key"], b"x")
        .fails(1, "is not enrolled");
    assert_eq!(c.get("global/api_key"), b"after");
    assert_eq!(a.get("global/api_key"), b"after");
    a.run(&["fleet", "revoke", &a.recipient()], b"")
        .fails(1, "refusing to revoke this host itself");
    a.run(&["fleet", "revoke", &b.recipient()], b"")
        .fails(1, "is not a member");
}

/// A keyring holds its scope's key once, sealed under the fleet's grant
/// key, whatever the number of members: enrolling a host wraps the grant
/// key to it and rewrites no keyring, and revoking one gives the others a
/// new grant key, which the revoked host has no copy of, and every scope
/// a key sealed under it.
#[test]
fn a_keyring_holds_its_key_once_and_enrolling_a_host_rewrites_none() {
    let Some(etcd) = Etcd::start(1) else { return };
    let hosts = fleet(&etcd, 3);
    let (a, b, c) = (&hosts[0], &hosts[1], &hosts[2]);
    for scope in ["global", "principal:ci", "session:s1"] {
        a.set(&format!("{scope}/k"), scope.as_bytes());
    }
    let store = raw(&etcd, "sealfs");
    let keyrings = |store: &EtcdStore| {
        store
            .get_prefix(&store.key("keyring/"))
            .unwrap()
            .into_iter()
            .map(|(k, r)| (k, r.mod_revision, r.value.len()))
            .collect::<Vec<_>>()
    };
    let before = keyrings(&store);
    assert_eq!(before.len(), 3);
    for (k, _, len) in &before {
        let body = etcd_json(&etcd, k)["body"].as_str().unwrap().to_owned();
        assert!(!body.contains("\"wrapped\""), "{k}: {body}");
        assert!(body.contains("\"grant\""), "{k}: {body}");
        // The same size as with one member: one sealed key, not a copy
        // per member.
        assert!(*len < 900, "{k}: {len} bytes");
    }
    let grant_wraps = |store: &EtcdStore| store.keys_under(&store.key("grant/")).unwrap();
    assert_eq!(grant_wraps(&store).len(), 3);

    // A fourth host: one wrap of the grant key, no keyring written.
    let d = Host::new(&etcd);
    a.enroll(&d);
    assert_eq!(keyrings(&store), before);
    assert_eq!(grant_wraps(&store).len(), 4);
    for scope in ["global", "principal:ci", "session:s1"] {
        assert_eq!(d.get(&format!("{scope}/k")), scope.as_bytes());
    }

    // Revoking C: a new grant key, wrapped to A, B and D only, and every
    // keyring sealed under it; C's copy of the old one opens none, and
    // the old one's wraps are gone once no keyring is under it.
    let c_id = host_identity(c);
    assert!(scope_key(&store, &c_id, "global").is_some());
    let old: Vec<String> = grant_wraps(&store);
    a.run(&["fleet", "revoke", &c.recipient()], b"").ok();
    let wraps = grant_wraps(&store);
    assert_eq!(wraps.len(), 3, "{wraps:?}");
    assert!(wraps.iter().all(|w| !old.contains(w)), "{wraps:?}");
    let c_age = c_id.recipient();
    assert!(wraps.iter().all(|w| !w.ends_with(&c_age)), "{wraps:?}");
    for scope in ["global", "principal:ci", "session:s1"] {
        assert!(scope_key(&store, &c_id, scope).is_none(), "{scope}");
        assert!(scope_key(&store, &host_identity(&d), scope).is_some());
        assert_eq!(b.get(&format!("{scope}/k")), scope.as_bytes());
        c.run(&["get", &format!("{scope}/k")], b"")
            .fails(1, "is not enrolled");
    }
    assert!(keyrings(&store)
        .iter()
        .zip(&before)
        .all(|(now, then)| now.1 > then.1));
}

/// A scope granted to some members (`fleet grant`, an audience entry in
/// the chain): only they read and write it, its keyring wraps its key to
/// them alone (none sealed under the grant key), the other hosts list
/// every scope but it and cannot change who it is granted to, a host
/// enrolled later is not in it, a revocation keeps it to those still
/// members (run by one of them), and `--all` gives it back to every member.
#[test]
fn a_scope_granted_to_some_members_is_read_by_them_alone() {
    let Some(etcd) = Etcd::start(1) else { return };
    let hosts = fleet(&etcd, 3);
    let (a, b, c) = (&hosts[0], &hosts[1], &hosts[2]);
    a.set("principal:ci/token", b"ci-secret");
    a.set("global/k", b"shared");
    assert_eq!(c.get("principal:ci/token"), b"ci-secret");
    let store = raw(&etcd, "sealfs");
    let c_key = scope_key(&store, &host_identity(c), "principal:ci").unwrap();

    a.grant("principal:ci", &[a, b]).ok();
    let not_granted = "scope principal:ci is not granted to this host";
    assert_eq!(b.get("principal:ci/token"), b"ci-secret");
    c.run(&["get", "principal:ci/token"], b"")
        .fails(1, not_granted);
    c.run(&["set", "principal:ci/other"], b"x")
        .fails(1, not_granted);
    let listed = c.run(&["list"], b"").ok().stdout_str();
    assert!(listed.contains("global/k"), "{listed}");
    assert!(!listed.contains("principal:ci"), "{listed}");
    // The keyring: a new key, wrapped to A and B, and nothing else.
    let ring = etcd_json(&etcd, "/sealfs/keyring/principal:ci");
    let body: serde_json::Value = serde_json::from_str(ring["body"].as_str().unwrap()).unwrap();
    assert!(body.get("grant").is_none(), "{body}");
    let (a_age, b_age) = (host_identity(a).recipient(), host_identity(b).recipient());
    let mut wrapped: Vec<&String> = body["wrapped"].as_object().unwrap().keys().collect();
    wrapped.sort();
    let mut want = vec![&a_age, &b_age];
    want.sort();
    assert_eq!(wrapped, want);
    assert!(scope_key(&store, &host_identity(c), "principal:ci").is_none());
    assert_ne!(
        scope_key(&store, &host_identity(b), "principal:ci")
            .unwrap()
            .id(),
        c_key.id()
    );
    // Its shards moved to the new key: C's old copy opens none.
    assert!(!opens_data_key(&etcd, &c_key, "principal:ci/token"));
    let status = c.run(&["fleet", "status"], b"").ok().stdout_str();
    assert!(
        status.contains("granted to") && status.contains(&a_age),
        "{status}"
    );
    // A member it is not granted to cannot change that.
    c.grant("principal:ci", &[c, a]).fails(1, not_granted);
    // Nor can a member leave itself out of what it grants.
    a.grant("principal:ci", &[b]).fails(1, "without this host");
    // Members of it write and read as before.
    b.set("principal:ci/token", b"rotated");
    assert_eq!(a.get("principal:ci/token"), b"rotated");

    // A host enrolled later is not in it, and reads the rest.
    let d = Host::new(&etcd);
    a.enroll(&d);
    d.run(&["get", "principal:ci/token"], b"")
        .fails(1, not_granted);
    assert_eq!(d.get("global/k"), b"shared");

    // A revocation run by a host outside the audience cannot rotate it,
    // and says so; run again on a member of it, it does.
    c.run(&["fleet", "revoke", &b.recipient()], b"")
        .fails(1, not_granted);
    a.run(&["get", "principal:ci/token"], b"")
        .fails(1, "still has its key from before the last revocation");
    // Nor does a grant go on before the revocation is finished.
    a.run(&["fleet", "grant", "principal:ci", "--all"], b"")
        .fails(1, "still has its key from before the last revocation");
    a.run(&["fleet", "revoke", &b.recipient()], b"").ok();
    assert_eq!(a.get("principal:ci/token"), b"rotated");
    let ring = etcd_json(&etcd, "/sealfs/keyring/principal:ci");
    let body: serde_json::Value = serde_json::from_str(ring["body"].as_str().unwrap()).unwrap();
    let wrapped: Vec<&String> = body["wrapped"].as_object().unwrap().keys().collect();
    assert_eq!(wrapped, vec![&a_age]);

    // Bad input changes nothing.
    a.run(&["fleet", "grant", "principal:ci"], b"")
        .fails(2, "required");
    a.grant("principal:ci", &[a, b]).fails(1, "is not a member");
    a.run(&["fleet", "grant", "principal:ci", "nonsense"], b"")
        .fails_with("not a host card");
    assert_eq!(a.get("principal:ci/token"), b"rotated");

    // Back to every member, later ones included.
    a.run(&["fleet", "grant", "principal:ci", "--all"], b"")
        .ok();
    for h in [a, c, &d] {
        assert_eq!(h.get("principal:ci/token"), b"rotated");
    }
    let ring = etcd_json(&etcd, "/sealfs/keyring/principal:ci");
    let body: serde_json::Value = serde_json::from_str(ring["body"].as_str().unwrap()).unwrap();
    assert!(
        body.get("grant").is_some() && body.get("audience").is_none(),
        "{body}"
    );
}

/// A host watches the index of the scopes it serves only: not that of a
/// scope granted to other members, whose writes it never receives. A
/// grant that gives it the scope restarts its running watch over it, and
/// it reads each new value of the scope from then on.
#[test]
fn a_host_watches_only_the_scopes_it_is_granted() {
    let Some(etcd) = Etcd::start(1) else { return };
    let hosts = fleet(&etcd, 2);
    let (a, b) = (&hosts[0], &hosts[1]);
    a.set("global/k", b"shared");
    a.set("principal:ci/k", b"one");
    let v = Arc::new(b.vault_with(&etcd.endpoints(), Duration::from_secs(2)));
    let covered = |plan: &[(String, String)], key: &str| {
        plan.iter()
            .any(|(start, end)| start.as_str() <= key && key < end.as_str())
    };
    let shard_key = |scope: &str| {
        let vr = r(&format!("{scope}/k"));
        format!("/sealfs/index/{scope}/{}", shard_of(vr.scope(), "k"))
    };
    // Every scope served: one range, the whole index in it.
    let plan = v.watch_plan().unwrap();
    assert_eq!(plan.len(), 1, "{plan:?}");
    assert!(covered(&plan, &shard_key("principal:ci")));

    a.grant("principal:ci", &[a]).ok();
    let plan = v.watch_plan().unwrap();
    assert!(covered(&plan, &shard_key("global")), "{plan:?}");
    assert!(!covered(&plan, &shard_key("principal:ci")), "{plan:?}");
    for k in [
        "/sealfs/chain/00000000000000000000",
        "/sealfs/keyring/principal:ci",
    ] {
        assert!(covered(&plan, k), "{k}: {plan:?}");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let watch = {
        let (v, stop) = (Arc::clone(&v), Arc::clone(&stop));
        std::thread::spawn(move || v.run_watch(&stop))
    };
    assert_eq!(v.get(&r("global/k")).unwrap().expose(), b"shared");
    let watching = |want: Option<Vec<&str>>| {
        let want: Option<std::collections::BTreeSet<VaultScope>> =
            want.map(|w| w.iter().map(|s| s.parse().unwrap()).collect());
        let deadline = Instant::now() + Duration::from_secs(5);
        while v.watching() != Some(want.clone()) {
            assert!(Instant::now() < deadline, "watching {:?}", v.watching());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // The running watch covers the index of global only...
    watching(Some(vec!["global"]));
    a.run(&["fleet", "grant", "principal:ci", "--all"], b"")
        .ok();
    assert_eq!(v.watch_plan().unwrap().len(), 1);
    // ... and, the scope granted to every member, restarts over them all.
    watching(None);
    let reads = |want: &[u8]| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = v.get(&r("principal:ci/k")).unwrap();
            if got.expose() == want {
                return;
            }
            assert!(Instant::now() < deadline, "still reads {:?}", got.expose());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    for i in 0..3 {
        let value = format!("value-{i}");
        a.set("principal:ci/k", value.as_bytes());
        reads(value.as_bytes());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    watch.join().unwrap();
}

/// etcd as the attacker sees it: raw keys under `/<prefix>/`.
pub(crate) fn raw(etcd: &Etcd, prefix: &str) -> EtcdStore {
    EtcdStore::new(EtcdOptions {
        endpoints: vec![etcd.members[0].client_url.clone()],
        prefix: prefix.into(),
        timeout: Duration::from_secs(2),
        credentials: None,
        tls: None,
    })
    .unwrap()
}

/// A host's age identity, from its local vault.
pub(crate) fn host_identity(h: &Host) -> HostIdentity {
    let id =
        h.sb.vault()
            .get(&r("principal:sealfs-fleet/age-identity"))
            .unwrap();
    HostIdentity::parse(id.expose()).unwrap()
}

/// The value of an etcd key, as JSON.
fn etcd_json(etcd: &Etcd, key: &str) -> serde_json::Value {
    let out = etcd.ctl(&["get", "--print-value-only", key]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn b64(s: &serde_json::Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s.as_str().unwrap())
        .unwrap()
}

/// The global scope's fleet key as the host with identity `id` opens it
/// from the keyring ([`scope_key`]); `None` if `id` cannot.
fn keyring_key(etcd: &Etcd, id: &HostIdentity) -> Option<FleetKey> {
    scope_key(&raw(etcd, "sealfs"), id, "global")
}

/// The key of `scope` as the host with identity `id` (what a revoked
/// host keeps) opens it from the keyring etcd holds: through its copy of
/// the grant key the keyring is sealed under, or its own wrapped copy;
/// checked against the keyring's fingerprint. `None` if `id` has no copy.
pub(crate) fn scope_key(store: &EtcdStore, id: &HostIdentity, scope: &str) -> Option<FleetKey> {
    let rec = store
        .get(&store.key(&format!("keyring/{scope}")))
        .unwrap()?;
    let signed: serde_json::Value = serde_json::from_slice(&rec.value).unwrap();
    let ring: serde_json::Value = serde_json::from_str(signed["body"].as_str().unwrap()).unwrap();
    let key = match ring.get("grant") {
        Some(g) => {
            let path = format!("grant/{}/{}", g["id"].as_str().unwrap(), id.recipient());
            let wrap = store.get(&store.key(&path)).unwrap()?;
            let grant = FleetKey::unwrap_for(id, &wrap.value).unwrap();
            assert_eq!(g["id"], grant.commitment().as_str());
            let epoch = ring["epoch"].as_u64().unwrap();
            grant
                .open_scope_key(&b64(&g["sealed"]), &scope.parse().unwrap(), epoch)
                .unwrap()
        }
        None => FleetKey::unwrap_for(id, &b64(ring["wrapped"].get(id.recipient())?)).unwrap(),
    };
    assert_eq!(ring["key_id"], key.id().as_str());
    Some(key)
}

/// Whether `key` unwraps the data key of `vault_ref` in its index shard
/// as etcd holds it (and, checked to agree, authenticates the shard).
fn opens_data_key(etcd: &Etcd, key: &FleetKey, vault_ref: &str) -> bool {
    let vr = r(vault_ref);
    let shard = shard_of(vr.scope(), vr.key().as_str());
    let stored = etcd_json(etcd, &format!("/sealfs/index/{}/{shard}", vr.scope()));
    let body_text = stored["body"].as_str().unwrap();
    let mac_ok = key.verify_mac(
        &shard_mac_input(vr.scope(), &shard, body_text.as_bytes()),
        &b64(&stored["mac"]),
    );
    let body: serde_json::Value = serde_json::from_str(body_text).unwrap();
    let e = &body["entries"][vr.key().as_str()];
    let unwrapped = key
        .unwrap_data_key(
            &b64(&e["dek"]),
            &vr,
            e["version"].as_u64().unwrap(),
            body["epoch"].as_u64().unwrap(),
        )
        .is_some();
    assert_eq!(mac_ok, unwrapped, "MAC and data key disagree");
    unwrapped
}

/// The global scope in `fleet status --json` of host `h`, with the
/// fleet's id and join token.
pub(crate) fn scope_status(h: &Host) -> serde_json::Value {
    let out = h.run(&["fleet", "status", "--json"], b"").ok().stdout;
    let status: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let mut scope = status["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["scope"] == "global")
        .cloned()
        .unwrap();
    scope["fleet_id"] = status["fleet_id"].clone();
    scope["join_token"] = status["join_token"].clone();
    scope
}

#[test]
fn concurrent_writers_on_two_hosts_lose_no_acknowledged_write() {
    let Some(etcd) = Etcd::start(1) else { return };
    let hosts = fleet(&etcd, 2);
    let vaults: Vec<Arc<FleetVault>> = hosts.iter().map(|h| Arc::new(h.vault())).collect();
    const WRITES: usize = 25;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let v = Arc::clone(&vaults[t % 2]);
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let mut own_before = 0;
                for i in 0..WRITES {
                    // Every writer rewrites the shared key and its own one.
                    let value = format!("t{t}-{i}");
                    let shared = v
                        .put(
                            &r("global/shared"),
                            &SensitiveBytes::from_slice(value.as_bytes()),
                        )
                        .unwrap();
                    let own = v
                        .put(
                            &r(&format!("global/own{t}")),
                            &SensitiveBytes::from_slice(value.as_bytes()),
                        )
                        .unwrap();
                    acked.push((shared.version, value.clone()));
                    // Each write of a secret has a higher version.
                    assert!(own.version > own_before);
                    own_before = own.version;
                }
                acked
            })
        })
        .collect();
    let mut versions = BTreeMap::new();
    for t in threads {
        for (version, value) in t.join().unwrap() {
            // Each acknowledged write got a version of its own.
            assert!(
                versions.insert(version, value).is_none(),
                "version {version} given twice"
            );
        }
    }
    assert_eq!(versions.len(), 4 * WRITES);
    // The shared key holds the last acknowledged write, on both hosts.
    let (last_version, last_value) = versions.last_key_value().unwrap();
    for v in &vaults {
        assert_eq!(
            v.get(&r("global/shared")).unwrap().expose(),
            last_value.as_bytes()
        );
        let e = v.list(None).unwrap();
        assert_eq!(
            e.iter()
                .find(|e| e.vault_ref == r("global/shared"))
                .unwrap()
                .version,
            *last_version
        );
        for t in 0..4 {
            let own = v.get(&r(&format!("global/own{t}"))).unwrap();
            assert_eq!(own.expose(), format!("t{t}-{}", WRITES - 1).as_bytes());
        }
    }
    // Exactly one object per live secret: no half-written or orphaned ones.
    let keys = etcd
        .ctl(&["get", "--prefix", "/sealfs/obj/", "--keys-only"])
        .stdout;
    let objects = String::from_utf8_lossy(&keys)
        .lines()
        .filter(|l| !l.is_empty())
        .count();
    assert_eq!(objects, 5);
}

#[test]
fn an_older_record_written_back_into_etcd_is_refused() {
    let Some(etcd) = Etcd::start(1) else { return };
    let hosts = fleet(&etcd, 2);
    let (a, b) = (&hosts[0], &hosts[1]);
    let store = raw(&etcd, "sealfs");
    let shard = shard_of(&VaultScope::Global, "k");
    let manifest = store.key(&format!("index/global/{shard}"));
    let objects = || store.get_prefix(&store.key("obj/")).unwrap();
    a.set("global/k", b"old");
    assert_eq!(b.get("global/k"), b"old");
    let old_manifest = store.get(&manifest).unwrap().unwrap().value;
    let (_, old_object) = objects().pop().unwrap();
    a.set("global/k", b"new");
    assert_eq!(b.get("global/k"), b"new");

    // The old value's object put under the current object's key: it was
    // sealed for another record version (and data key), so it does not open.
    let (current_key, current_object) = objects().pop().unwrap();
    assert!(store
        .apply(&[], &[Change::Put(current_key.clone(), old_object.value)])
        .unwrap());
    b.run(&["get", "global/k"], b"")
        .fails(1, "integrity check failed for global/k");
    assert!(store
        .apply(&[], &[Change::Put(current_key, current_object.value)])
        .unwrap());
    assert_eq!(b.get("global/k"), b"new");

    // The old index shard (validly authenticated, but older) put back.
    let current_manifest = store.get(&manifest).unwrap().unwrap().value;
    assert!(store
        .apply(&[], &[Change::Put(manifest.clone(), old_manifest)])
        .unwrap());
    for h in [a, b] {
        h.run(&["get", "global/k"], b"").fails(
            1,
            &format!("refusing shard {shard} of the index of scope global: its counter 1 is older than 2"),
        );
    }
    // A forged shard (one length changed) does not authenticate.
    let mut forged = current_manifest.clone();
    let pos = forged.windows(5).position(|w| w == b"\\\"len").unwrap();
    forged[pos + 8] ^= 1;
    assert!(store
        .apply(&[], &[Change::Put(manifest.clone(), forged)])
        .unwrap());
    a.run(&["get", "global/k"], b"").fails(
        1,
        &format!("integrity check failed for shard {shard} of the index of global"),
    );
    assert!(store
        .apply(&[], &[Change::Put(manifest, current_manifest)])
        .unwrap());
    assert_eq!(a.get("global/k"), b"new");
}

#[test]
fn a_member_down_changes_nothing_and_all_down_serves_cached_reads() {
    let Some(mut etcd) = Etcd::start(3) else {
        return;
    };
    let hosts = fleet(&etcd, 2);
    let a = hosts[0].vault();
    a.put(
        &r("global/k"),
        &SensitiveBytes::from_slice(b"value-one-0001"),
    )
    .unwrap();
    assert_eq!(a.get(&r("global/k")).unwrap().expose(), b"value-one-0001");

    etcd.members[0].kill();
    a.put(
        &r("global/k"),
        &SensitiveBytes::from_slice(b"value-two-0002"),
    )
    .unwrap();
    assert_eq!(a.get(&r("global/k")).unwrap().expose(), b"value-two-0002");
    assert_eq!(hosts[1].get("global/k"), b"value-two-0002");

    for m in &mut etcd.members {
        m.kill();
    }
    // Reads this host has made before keep working from its sealed cache.
    assert_eq!(a.get(&r("global/k")).unwrap().expose(), b"value-two-0002");
    assert_eq!(hosts[0].get("global/k"), b"value-two-0002");
    let err = a
        .put(
            &r("global/k"),
            &SensitiveBytes::from_slice(b"value-three-03"),
        )
        .unwrap_err();
    assert!(matches!(err, FleetError::Unreachable { .. }), "{err}");
    hosts[0]
        .run(&["set", "global/k"], b"value-three-03")
        .fails(1, "etcd is unreachable at");
    // Nothing in the cache is plaintext.
    let cache = hosts[0].sb.vault_dir().join("fleet-cache");
    for f in walk(&cache) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes.windows(14).any(|w| w == b"value-two-0002"),
            "{} holds the value",
            f.display()
        );
    }

    for m in &mut etcd.members {
        m.start();
    }
    etcd.wait_healthy();
    // The same process reconnects by itself.
    a.put(
        &r("global/k"),
        &SensitiveBytes::from_slice(b"value-three-03"),
    )
    .unwrap();
    assert_eq!(hosts[1].get("global/k"), b"value-three-03");
}

/// A member that stalls (SIGSTOP) under a long-running process that talks
/// only to it: the process stops vouching for what its watch held, serves
/// its sealed cache for at most `--max-offline-age`, then refuses; it
/// never serves a value etcd no longer holds beyond those bounds, and once
/// the member runs again it reads the new value.
#[test]
fn a_stalled_member_bounds_how_stale_a_long_running_process_may_be() {
    let Some(etcd) = Etcd::start(3) else { return };
    let hosts = fleet(&etcd, 2);
    let (a, b) = (&hosts[0], &hosts[1]);
    a.set("global/k", b"value-one");
    let max_offline = Duration::from_secs(4);
    let v = Arc::new(
        a.vault_with(&etcd.members[0].client_url, Duration::from_secs(2))
            .with_max_offline_age(max_offline),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let watch = {
        let (v, stop) = (Arc::clone(&v), Arc::clone(&stop));
        std::thread::spawn(move || v.run_watch(&stop))
    };
    assert_eq!(v.get(&r("global/k")).unwrap().expose(), b"value-one");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(v.get(&r("global/k")).unwrap().expose(), b"value-one");

    etcd.members[0].pause();
    let paused = Instant::now();
    // B writes through the two members that still run.
    let others = format!(
        "{},{}",
        etcd.members[1].client_url, etcd.members[2].client_url
    );
    b.sb.run(
        &[
            "--backend",
            "etcd",
            "--etcd-endpoints",
            &others,
            "set",
            "global/k",
        ],
        b"value-two",
    )
    .ok();
    let refused_after = loop {
        match v.get(&r("global/k")) {
            Ok(value) => assert_eq!(value.expose(), b"value-one"),
            Err(FleetError::TooStale { max_secs, .. }) => {
                assert_eq!(max_secs, 4);
                break paused.elapsed();
            }
            Err(e) => panic!("unexpected: {e}"),
        }
        assert!(
            paused.elapsed() < Duration::from_secs(30),
            "still serving the old value 30 s after etcd went quiet"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // The watch's silence bound (3 s) plus the offline limit (4 s) plus one
    // time limit (2 s), with room: well before the 15 s a dead connection
    // would take to be noticed.
    assert!(
        refused_after < Duration::from_secs(12),
        "refused only after {refused_after:?}"
    );

    etcd.members[0].resume();
    let resumed = Instant::now();
    loop {
        match v.get(&r("global/k")) {
            Ok(value) if value.expose() == b"value-two" => break,
            Ok(value) => assert_eq!(value.expose(), b"value-one"),
            Err(e) => eprintln!("after resume {:?}: {e}", resumed.elapsed()),
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(30),
            "the new value never arrived"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    watch.join().unwrap();
}

/// etcd compacting its history while a long-running process watches (a
/// physical compaction to the newest revision after every write, on three
/// members) never leaves the process serving an old value: each value
/// another host writes is what it reads next, within the bound its watch
/// keeps; and a watch that etcd ends because the history it was to send
/// was compacted away ends with an error, not in silence (the process then
/// drops what it held and reads afresh).
#[test]
fn compaction_during_a_watch_never_leaves_an_old_value_served() {
    let Some(etcd) = Etcd::start(3) else { return };
    let hosts = fleet(&etcd, 2);
    let (a, b) = (&hosts[0], &hosts[1]);
    a.set("global/k", b"value-0");
    let v = Arc::new(a.vault_with(&etcd.members[0].client_url, Duration::from_secs(2)));
    let stop = Arc::new(AtomicBool::new(false));
    let watch = {
        let (v, stop) = (Arc::clone(&v), Arc::clone(&stop));
        std::thread::spawn(move || v.run_watch(&stop))
    };
    assert_eq!(v.get(&r("global/k")).unwrap().expose(), b"value-0");
    let store = raw(&etcd, "sealfs");
    let first = store.revision().unwrap();
    for i in 1..=6 {
        let value = format!("value-{i}");
        b.set("global/k", value.as_bytes());
        store.compact_to(store.revision().unwrap(), true).unwrap();
        let written = Instant::now();
        loop {
            let got = v.get(&r("global/k")).unwrap();
            if got.expose() == value.as_bytes() {
                break;
            }
            assert!(
                written.elapsed() < Duration::from_secs(5),
                "still serving an old value 5 s after a write and a compaction"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    watch.join().unwrap();

    // A watch from a revision compacted away: etcd ends it, and that is
    // an error at once, never a watch that stays open and hears nothing.
    let give_up = Arc::new(AtomicBool::new(false));
    {
        let give_up = Arc::clone(&give_up);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(5));
            give_up.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    }
    let started = Instant::now();
    let mut heard = Vec::new();
    let err = store
        .watch(first, &give_up, |keys| heard.extend(keys))
        .expect_err("the watch stayed open 5 s");
    assert!(err.to_string().contains("compacted"), "{err}");
    assert!(heard.is_empty(), "{heard:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// Compare-and-swap on the fleet: two hosts, four threads each, storing one
/// new key with `Expected::Absent`: exactly one stores. Then only a write
/// naming the current version goes through, from the CLI too.
#[test]
fn conditional_writes_on_two_hosts_store_exactly_once() {
    let Some(etcd) = Etcd::start(1) else { return };
    let hosts = fleet(&etcd, 2);
    let vaults: Vec<Arc<FleetVault>> = hosts.iter().map(|h| Arc::new(h.vault())).collect();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let v = Arc::clone(&vaults[t % 2]);
            std::thread::spawn(move || {
                v.put_if(
                    &r("global/claim"),
                    &SensitiveBytes::from_slice(format!("t{t}").as_bytes()),
                    Some(sealfs::Expected::Absent),
                )
                .map(|e| (t, e.version))
            })
        })
        .collect();
    let mut won = Vec::new();
    for t in threads {
        match t.join().unwrap() {
            Ok(w) => won.push(w),
            Err(FleetError::NotAsExpected { found: Some(_), .. }) => {}
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!(won.len(), 1, "{won:?}");
    let (t, version) = won[0];
    assert_eq!(hosts[1].get("global/claim"), format!("t{t}").into_bytes());
    let wrong = (version + 5).to_string();
    hosts[0]
        .run(&["set", "global/claim", "--if-version", &wrong], b"x")
        .fails(1, &format!("it is at version {version}, not {wrong}"));
    hosts[1]
        .run(
            &["set", "global/claim", "--if-version", &version.to_string()],
            b"next",
        )
        .ok();
    assert_eq!(hosts[0].get("global/claim"), b"next");
}

/// A write whose answer is lost is settled by re-reading: one that
/// committed is reported stored; one that did not is fenced, written again
/// and stored, and its first attempt never lands later; one whose outcome
/// cannot be settled, etcd having stalled, is reported as unknown, never
/// as not stored. Deletes and renames are settled the same way.
#[test]
fn a_write_whose_answer_is_lost_is_settled_by_re_reading() {
    use sealfs::fleet::etcd::TxnFault;
    let Some(etcd) = Etcd::start(1) else { return };
    let hosts = fleet(&etcd, 1);
    let a = &hosts[0];
    let v = a.vault_with(&etcd.endpoints(), Duration::from_secs(2));
    let put = |val: &[u8]| v.put(&r("global/k"), &SensitiveBytes::from_slice(val));
    put(b"one").unwrap();

    v.inject_txn_fault(TxnFault::LoseReply, None);
    put(b"two").expect("committed, and settled as stored");
    assert_eq!(a.get("global/k"), b"two");

    // Held back (no answer): settled as not committed (its requirements
    // fenced), written again, stored; the first attempt, delivered late,
    // does not land over it.
    v.inject_txn_fault(TxnFault::HoldBack, None);
    put(b"three").expect("settled as not committed, then written again");
    assert_eq!(a.get("global/k"), b"three");
    assert!(!v.deliver_held_back().unwrap(), "the late write landed");
    assert_eq!(a.get("global/k"), b"three");

    // Deletes are settled the same way: a lost answer to one that landed
    // is settled as done; one held back is fenced, done again, and does not
    // land late over a newer write.
    v.inject_txn_fault(TxnFault::LoseReply, None);
    v.delete(&r("global/k"))
        .expect("committed, and settled as deleted");
    a.run(&["get", "global/k"], b"")
        .fails(1, "secret not found");
    put(b"five").unwrap();
    v.inject_txn_fault(TxnFault::HoldBack, None);
    v.delete(&r("global/k"))
        .expect("settled as not committed, then deleted again");
    a.run(&["get", "global/k"], b"")
        .fails(1, "secret not found");
    put(b"six").unwrap();
    assert!(!v.deliver_held_back().unwrap(), "the late delete landed");
    assert_eq!(a.get("global/k"), b"six");

    // Renames too.
    v.inject_txn_fault(TxnFault::LoseReply, None);
    v.rename(&r("global/k"), &r("global/moved"), false)
        .expect("committed, and settled as moved");
    assert_eq!(a.get("global/moved"), b"six");
    put(b"seven").unwrap();
    v.inject_txn_fault(TxnFault::HoldBack, None);
    v.rename(&r("global/k"), &r("global/moved"), false)
        .expect("settled as not committed, then moved again");
    assert_eq!(a.get("global/moved"), b"seven");
    put(b"eight").unwrap();
    assert!(!v.deliver_held_back().unwrap(), "the late rename landed");
    assert_eq!(a.get("global/k"), b"eight");
    assert_eq!(a.get("global/moved"), b"seven");

    v.inject_txn_fault(
        TxnFault::LoseReply,
        Some(Box::new(etcd.members[0].pauser())),
    );
    let err = put(b"nine").unwrap_err();
    assert!(matches!(err, FleetError::Ambiguous { .. }), "{err}");
    assert!(err
        .to_string()
        .contains("whether global/k was stored is unknown"));
    etcd.members[0].resume();
    etcd.wait_healthy();
    // It had landed: "unknown" was the honest answer.
    assert_eq!(a.get("global/k"), b"nine");
}

/// Read-once secrets, rename and empty scopes work on the fleet as on a
/// local vault: two hosts reading a read-once secret at once, exactly one
/// gets it; it is never served from the offline cache; a rename moves a
/// secret (to another scope too) in one step, sealed anew for its new
/// name, and replaces only when asked; an empty scope made on one host
/// shows on the other.
#[test]
fn read_once_rename_and_empty_scopes_work_on_the_fleet() {
    let Some(etcd) = Etcd::start(1) else { return };
    let hosts = fleet(&etcd, 2);
    let (a, b) = (&hosts[0], &hosts[1]);
    let (va, vb) = (a.vault(), b.vault());
    // Templates stay in local vaults: refused on the fleet, nothing stored.
    a.run(&["template", "set", "t"], b"{{ global/otp }}")
        .fails(1, "templates are kept in local vaults only");
    for round in 0..5 {
        let value = format!("otp-{round}");
        a.run(&["set", "--once", "global/otp"], value.as_bytes())
            .ok();
        let (ra, rb) = std::thread::scope(|s| {
            let ha = s.spawn(|| va.read_secret(&r("global/otp")));
            let hb = s.spawn(|| vb.read_secret(&r("global/otp")));
            (ha.join().unwrap(), hb.join().unwrap())
        });
        let got: Vec<_> = [ra, rb]
            .into_iter()
            .filter_map(|x| match x {
                Ok((v, consumed)) => Some((v.expose().to_vec(), consumed)),
                Err(FleetError::NotFound(_)) => None,
                Err(e) => panic!("unexpected: {e}"),
            })
            .collect();
        assert_eq!(got, vec![(value.into_bytes(), true)], "round {round}");
    }
    a.run(&["get", "global/otp"], b"")
        .fails(1, "secret not found");
    // Through the CLI, and never from the cache while etcd is away: the
    // read that cannot remove it does not get it, and it stays.
    a.run(&["set", "--once", "global/otp"], b"cli-otp").ok();
    a.set("global/plain", b"plain");
    assert_eq!(b.get("global/plain"), b"plain");
    b.run(&["list"], b"").ok();
    etcd.members[0].pause();
    assert_eq!(b.get("global/plain"), b"plain");
    b.run(&["get", "global/otp"], b"")
        .fails(1, "etcd is unreachable");
    // Not even its writer keeps it.
    a.run(&["get", "global/otp"], b"")
        .fails(1, "etcd is unreachable");
    etcd.members[0].resume();
    etcd.wait_healthy();
    assert_eq!(b.get("global/otp"), b"cli-otp");
    a.run(&["get", "global/otp"], b"")
        .fails(1, "secret not found");

    // Rename: within a scope, then to another scope; the old name is gone,
    // the value follows, and its times with it.
    a.set("global/old", b"moving");
    let before = va.list(None).unwrap();
    let created = before
        .iter()
        .find(|e| e.vault_ref == r("global/old"))
        .unwrap()
        .created;
    va.rename(&r("global/old"), &r("global/new"), false)
        .unwrap();
    assert_eq!(b.get("global/new"), b"moving");
    b.run(&["get", "global/old"], b"")
        .fails(1, "secret not found");
    let moved = va
        .rename(&r("global/new"), &r("principal:app/moved"), false)
        .unwrap();
    assert_eq!(moved.created, created);
    assert_eq!(b.get("principal:app/moved"), b"moving");
    // Replacing only when asked.
    a.set("principal:app/taken", b"keep");
    let err = va
        .rename(&r("principal:app/moved"), &r("principal:app/taken"), true)
        .unwrap_err();
    assert!(matches!(err, FleetError::NotAsExpected { .. }), "{err}");
    assert_eq!(b.get("principal:app/taken"), b"keep");
    va.rename(&r("principal:app/moved"), &r("principal:app/taken"), false)
        .unwrap();
    assert_eq!(b.get("principal:app/taken"), b"moving");
    let err = va
        .rename(&r("principal:app/moved"), &r("global/x"), false)
        .unwrap_err();
    assert!(matches!(err, FleetError::NotFound(_)), "{err}");
    // A read-once secret keeps being one, and moving it does not consume
    // it.
    a.run(&["set", "--once", "global/otp"], b"moved-otp").ok();
    va.rename(&r("global/otp"), &r("global/otp2"), false)
        .unwrap();
    assert_eq!(b.get("global/otp2"), b"moved-otp");
    a.run(&["get", "global/otp2"], b"")
        .fails(1, "secret not found");

    // An empty scope made on one host is there on the other.
    assert!(va
        .create_scope(&"principal:empty".parse().unwrap())
        .unwrap());
    assert!(!va
        .create_scope(&"principal:empty".parse().unwrap())
        .unwrap());
    let status = b.run(&["fleet", "status", "--json"], b"").ok().stdout;
    let status: serde_json::Value = serde_json::from_slice(&status).unwrap();
    assert!(
        status["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["scope"] == "principal:empty"),
        "{status}"
    );
    b.set("principal:empty/first", b"one");
    assert_eq!(a.get("principal:empty/first"), b"one");
}

/// The leader killed while a host writes: every write acknowledged is
/// there afterwards, every write reported not stored is not, and any
/// reported unknown is one or the other.
#[test]
fn the_leader_killed_during_puts_loses_no_acknowledged_write() {
    let Some(mut etcd) = Etcd::start(3) else {
        return;
    };
    let hosts = fleet(&etcd, 1);
    let v = Arc::new(hosts[0].vault());
    let stop = Arc::new(AtomicBool::new(false));
    // Writes acknowledged so far.
    let acks = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // Writes go on, one new key each, until the leader is back: each with
    // when it ended.
    let writer = {
        let (v, stop, acks) = (Arc::clone(&v), Arc::clone(&stop), Arc::clone(&acks));
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let res = v.put(
                    &r(&format!("global/k{i}")),
                    &SensitiveBytes::from_slice(format!("v{i}").as_bytes()),
                );
                if res.is_ok() {
                    acks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                out.push((res.map(|_| ()), Instant::now()));
                i += 1;
            }
            out
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let leader = etcd.leader();
    let killed = Instant::now();
    let acked_before = acks.load(std::sync::atomic::Ordering::SeqCst);
    etcd.members[leader].kill();
    // Down for at least 5 s, and until the two others have elected a
    // leader and taken writes (the election takes longer on a loaded
    // machine; at most 60 s).
    while killed.elapsed() < Duration::from_secs(5)
        || acks.load(std::sync::atomic::Ordering::SeqCst) < acked_before + 2
            && killed.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let restarted = Instant::now();
    etcd.members[leader].start();
    etcd.wait_healthy();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let results = writer.join().unwrap();
    // The two members left took writes while the leader was gone.
    let during = results
        .iter()
        .filter(|(res, at)| res.is_ok() && *at > killed && *at < restarted)
        .count();
    assert!(
        during > 0,
        "no write was acknowledged while the leader was down"
    );
    let (mut acked, mut unknown) = (0, 0);
    for (i, (res, _)) in results.iter().enumerate() {
        let got = v.get(&r(&format!("global/k{i}")));
        match res {
            Ok(()) => {
                acked += 1;
                assert_eq!(got.unwrap().expose(), format!("v{i}").as_bytes(), "k{i}");
            }
            Err(FleetError::Ambiguous { .. }) => unknown += 1,
            Err(FleetError::Unreachable { .. } | FleetError::Conflict(_)) => {
                assert!(
                    matches!(got, Err(FleetError::NotFound(_))),
                    "k{i} was reported not stored"
                );
            }
            Err(e) => panic!("k{i}: {e}"),
        }
    }
    eprintln!(
        "{acked} of {} acknowledged ({during} while the leader was down), {unknown} unknown",
        results.len()
    );
    assert!(acked > 0);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Turns etcd's authentication on, with root's password `root-pw-0001`.
fn enable_auth(etcd: &Etcd) {
    for args in [
        &["user", "add", "root:root-pw-0001"][..],
        &["auth", "enable"][..],
    ] {
        let out = etcd.ctl(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn etcd_credentials_come_from_the_local_vault_never_from_argv() {
    let Some(etcd) = Etcd::start(1) else { return };
    let hosts = fleet(&etcd, 1);
    let a = &hosts[0];
    a.set("global/k", b"before-auth");
    enable_auth(&etcd);
    // Refused for what it is: no credentials, then a wrong password (not
    // "unreachable", nor a generic etcd error).
    a.run(&["get", "global/k"], b"").fails(
        1,
        "etcd authentication failed: no user and password are stored on this host \
         (etcdserver: user name is empty); store them with `sealfs fleet login --user NAME`",
    );
    a.run(&["fleet", "login", "--user", "root"], b"wrong-pw-0002")
        .ok();
    a.run(&["get", "global/k"], b"").fails(
        1,
        "etcd authentication failed: the password stored for root was refused \
         (etcdserver: authentication failed, invalid user ID or password)",
    );

    a.run(&["fleet", "login", "--user", "root"], b"root-pw-0001")
        .ok();
    assert_eq!(a.get("global/k"), b"before-auth");
    a.set("global/k", b"after-auth");
    // The password sits sealed in the host's local vault, nowhere in clear.
    for f in walk(&a.sb.vault_dir()) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes.windows(12).any(|w| w == b"root-pw-0001"),
            "{} holds the password",
            f.display()
        );
    }
    a.run(&["fleet", "login", "--user", "root"], b"")
        .fails(1, "refusing an empty password");
    // The password never goes over plain http:// to another host.
    a.sb.run(
        &[
            "--backend",
            "etcd",
            "--etcd-endpoints",
            "http://10.255.255.1:2379",
            "get",
            "global/k",
        ],
        b"",
    )
    .fails(
        1,
        "refusing to send the etcd password over plain http:// to http://10.255.255.1:2379",
    );
}

/// With etcd auth on, `fleet enroll --etcd-user` gives a host its own
/// etcd user, which may read and write under the fleet's prefix and
/// nothing else, and whose login only that host can open from the token;
/// `fleet revoke` removes it, so a revoked host keeps no way into etcd.
/// Managing users needs etcd root: a member without it is refused and
/// nothing changes, or (revoking) is told to remove the user by hand.
#[test]
fn each_host_gets_its_own_etcd_user_at_enroll_and_loses_it_at_revoke() {
    let Some(etcd) = Etcd::start(1) else { return };
    let admin = Host::new(&etcd);
    admin.init();
    admin.set("global/k", b"v1");
    enable_auth(&etcd);
    admin
        .run(&["fleet", "login", "--user", "root"], b"root-pw-0001")
        .ok();
    let (b, c) = (Host::new(&etcd), Host::new(&etcd));
    let (b_card, c_card) = (b.recipient(), c.recipient());
    let enrolled = admin
        .run(&["fleet", "enroll", &b_card, "--etcd-user"], b"")
        .ok();
    let token = enrolled.stdout_str().trim().to_owned();
    let user = enrolled
        .stderr
        .split("its own etcd user ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .expect("the enrolment names the etcd user")
        .to_owned();
    assert!(user.starts_with("sealfs-"), "{user}");
    // The login in the token is sealed to b: another host cannot use it.
    c.run(&["fleet", "join", &token], b"")
        .fails(1, "the etcd login in this join token is not for this host");
    b.run(&["fleet", "join", &token], b"").ok();
    assert_eq!(b.get("global/k"), b"v1");
    b.set("global/k", b"from-b");
    assert_eq!(admin.get("global/k"), b"from-b");
    // Its user reaches nothing outside the prefix, and manages no users:
    // enrolling with it is refused, and changes nothing.
    b.run(&["--etcd-prefix", "other", "fleet", "init"], b"")
        .fails(1, "permission denied");
    b.run(&["fleet", "enroll", &c_card, "--etcd-user"], b"")
        .fails(1, "needs etcd root rights");
    let status = admin.run(&["fleet", "status", "--json"], b"").ok().stdout;
    let status: serde_json::Value = serde_json::from_slice(&status).unwrap();
    assert_eq!(status["members"].as_array().unwrap().len(), 2, "{status}");

    // Run again for a member: a new password, in a new token; the old
    // login stops working, and the new one is kept only once it worked.
    let again = admin
        .run(&["fleet", "enroll", &b_card, "--etcd-user"], b"")
        .ok()
        .stdout_str();
    b.run(&["get", "global/k"], b"")
        .fails(1, "etcd authentication failed");
    b.run(
        &["--etcd-prefix", "other", "fleet", "join", again.trim()],
        b"",
    )
    .fails(1, "is not for this host under --etcd-prefix other");
    b.run(&["fleet", "join", again.trim()], b"").ok();
    assert_eq!(b.get("global/k"), b"from-b");

    let token = admin
        .run(&["fleet", "enroll", &c_card, "--etcd-user"], b"")
        .ok()
        .stdout_str();
    c.run(&["fleet", "join", token.trim()], b"").ok();
    assert_eq!(c.get("global/k"), b"from-b");
    // Revoked by a member without root: the keys rotate, and it is told
    // that the user could not be removed.
    let revoked = b.run(&["fleet", "revoke", &c_card], b"").ok();
    assert!(
        revoked
            .stderr
            .contains("WARNING: whether it has its own etcd user"),
        "{}",
        revoked.stderr
    );
    c.run(&["get", "global/k"], b"").fails(1, "is not enrolled");
    // Revoked by root, the user goes.
    let revoked = admin.run(&["fleet", "revoke", &b_card], b"").ok();
    assert!(
        revoked
            .stderr
            .contains(&format!("removed its etcd user {user}")),
        "{}",
        revoked.stderr
    );
    b.run(&["get", "global/k"], b"").fails(
        1,
        &format!("etcd authentication failed: the password stored for {user} was refused"),
    );
    let revoked = admin.run(&["fleet", "revoke", &c_card], b"").ok();
    assert!(
        revoked.stderr.contains("removed its etcd user sealfs-"),
        "{}",
        revoked.stderr
    );
    assert_eq!(admin.get("global/k"), b"from-b");
}

/// A long-running process (as the mount is) whose etcd auth token expires
/// while it is idle logs in again by itself, and loses nothing.
#[test]
fn an_auth_token_that_expires_in_a_long_running_process_is_renewed() {
    let Some(etcd) = Etcd::start_flags(1, &["--auth-token=simple", "--auth-token-ttl=2"]) else {
        return;
    };
    let hosts = fleet(&etcd, 1);
    let a = &hosts[0];
    a.set("global/k", b"before-expiry");
    enable_auth(&etcd);
    a.run(&["fleet", "login", "--user", "root"], b"root-pw-0001")
        .ok();
    let v = a.vault();
    assert_eq!(v.get(&r("global/k")).unwrap().expose(), b"before-expiry");
    // Idle past the token's lifetime: etcd forgets the token.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(v.get(&r("global/k")).unwrap().expose(), b"before-expiry");
    v.put(&r("global/k"), &SensitiveBytes::from_slice(b"after-expiry"))
        .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    v.put(&r("global/k"), &SensitiveBytes::from_slice(b"after-second"))
        .unwrap();
    assert_eq!(a.get("global/k"), b"after-second");
}

/// etcd's history stays bounded (sealfs compacts it), and an etcd at its
/// quota is a clear error until `sealfs fleet compact`, after which writes
/// go on and nothing acknowledged is lost; `fleet status` shows the space.
#[test]
fn etcd_history_is_compacted_and_a_full_etcd_is_a_clear_error_until_compact() {
    let Some(etcd) = Etcd::start_flags(1, &["--quota-backend-bytes=8388608"]) else {
        return;
    };
    let hosts = fleet(&etcd, 1);
    let a = &hosts[0];
    let v = a.vault();
    v.put(&r("global/small"), &SensitiveBytes::from_slice(b"first"))
        .unwrap();
    // Other writes (cheap ones, raw) take etcd to just below revision
    // 2000; the sealfs write committed at 2000, a multiple of
    // COMPACT_EVERY, compacts away all but the last 1000 revisions.
    let raw = raw(&etcd, "unrelated");
    while raw
        .apply_at(&[], &[Change::Put(raw.key("k"), b"x".to_vec())])
        .unwrap()
        .unwrap()
        < 1999
    {}
    let old = etcd.ctl(&["get", "--prefix", "/sealfs/index/global/", "--rev=5"]);
    assert!(old.status.success(), "compacted too early");
    v.put(&r("global/small"), &SensitiveBytes::from_slice(b"second"))
        .unwrap();
    let old = etcd.ctl(&["get", "--prefix", "/sealfs/index/global/", "--rev=5"]);
    assert!(!old.status.success());
    assert!(
        String::from_utf8_lossy(&old.stderr).contains("compacted"),
        "{}",
        String::from_utf8_lossy(&old.stderr)
    );

    // Large values until etcd's 8 MiB quota refuses one.
    let big = vec![b'x'; 60 * 1024];
    let mut acked = 0;
    let err = loop {
        match v.put(&r("global/big"), &SensitiveBytes::from_slice(&big)) {
            Ok(_) => acked += 1,
            Err(e) => break e,
        }
        assert!(acked < 2000, "etcd never reached its quota");
    };
    assert!(matches!(err, FleetError::NoSpace), "{err}");
    assert!(acked > 0);
    a.run(&["set", "global/other"], b"refused").fails(
        1,
        "etcd is out of space (its quota, --quota-backend-bytes, is reached)",
    );
    let status = a.run(&["fleet", "status"], b"").ok().stdout_str();
    assert!(status.contains("alarms: NOSPACE"), "{status}");
    // Reads go on; compaction and defragmentation bring writes back.
    assert_eq!(a.get("global/big"), big);
    a.run(&["fleet", "compact"], b"").ok();
    a.set("global/other", b"after-compact");
    assert_eq!(a.get("global/other"), b"after-compact");
    assert_eq!(a.get("global/big"), big);
    let status = a.run(&["fleet", "status"], b"").ok().stdout_str();
    assert!(status.contains("alarms: none"), "{status}");
}

/// etcd with `--client-cert-auth`: a host without a certificate is refused
/// with a clear error; `sealfs fleet tls` keeps the CA, certificate and key
/// sealed in the local vault (paths in argv, never key material), and then
/// the fleet works over TLS.
#[test]
fn a_client_certificate_from_the_local_vault_opens_a_tls_etcd() {
    let certs = tempfile::tempdir().unwrap();
    let Some(pki) = TestPki::new(certs.path()) else {
        return;
    };
    let Some(etcd) = Etcd::start_tls(&pki) else {
        return;
    };
    let a = Host::new(&etcd);
    assert!(a.endpoints.starts_with("https://"));
    // Without a CA and certificate the handshake fails, and says so (not
    // "unreachable").
    let no_tls = format!(
        "TLS handshake with etcd at {} failed: invalid peer certificate: UnknownIssuer; \
         this host has no CA or client certificate stored",
        a.endpoints
    );
    a.run(&["fleet", "init"], b"").fails(1, &no_tls);
    // The TLS entries of the local vault, as `sealfs list` shows them.
    let tls_entries = || {
        let list = a.sb.run(&["list"], b"").ok().stdout_str();
        assert!(
            list.contains("principal:sealfs-fleet/age-identity\t"),
            "{list}"
        );
        list.lines()
            .filter_map(|l| l.split('\t').next())
            .filter(|r| r.starts_with("principal:sealfs-fleet/etcd-tls"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };

    // Not PEM, or the wrong kind of block: refused, nothing stored.
    let (ca, cert, key) = (
        pki.file("ca.pem"),
        pki.file("client.pem"),
        pki.file("client.key"),
    );
    a.run(
        &["fleet", "tls", "--ca", &ca, "--cert", &cert, "--key", &cert],
        b"",
    )
    .fails(1, "PRIVATE KEY block; nothing was stored");
    assert_eq!(tls_entries(), Vec::<String>::new());
    a.run(&["fleet", "init"], b"").fails(1, &no_tls);

    a.run(
        &["fleet", "tls", "--ca", &ca, "--cert", &cert, "--key", &key],
        b"",
    )
    .ok();
    assert_eq!(
        tls_entries(),
        [
            "principal:sealfs-fleet/etcd-tls-ca",
            "principal:sealfs-fleet/etcd-tls-cert",
            "principal:sealfs-fleet/etcd-tls-key",
        ]
    );
    a.run(&["fleet", "init"], b"").ok();
    a.set("global/over_tls", b"tls-value");
    assert_eq!(a.get("global/over_tls"), b"tls-value");
    // What etcd holds is sealed, and the key sits nowhere in clear.
    let stored = etcd.ctl(&["get", "--prefix", "/sealfs/"]);
    assert!(
        stored.status.success(),
        "{}",
        String::from_utf8_lossy(&stored.stderr)
    );
    assert!(!String::from_utf8_lossy(&stored.stdout).contains("tls-value"));
    let key_pem = std::fs::read_to_string(&key).unwrap();
    let body_line = key_pem.lines().nth(1).unwrap().to_owned();
    for f in walk(&a.sb.vault_dir()) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes
                .windows(body_line.len())
                .any(|w| w == body_line.as_bytes()),
            "{} holds the private key",
            f.display()
        );
    }
    // http:// endpoints with a stored certificate: a clear error.
    let plain = etcd.endpoints().replace("https://", "http://");
    let r = a.sb.run(
        &[
            "--backend",
            "etcd",
            "--etcd-endpoints",
            &plain,
            "--etcd-timeout",
            "2",
            "get",
            "global/over_tls",
        ],
        b"",
    );
    r.fails(1, "must be https://");
}

/// A scope's index is sharded: a write rewrites one small shard, whatever
/// the scope holds, writers of different shards never race, and a scope
/// larger than one etcd read page is listed whole.
#[test]
fn a_large_scope_is_sharded_so_a_write_rewrites_only_a_small_shard() {
    let Some(etcd) = Etcd::start(1) else { return };
    let hosts = fleet(&etcd, 2);
    let (a, b) = (&hosts[0], &hosts[1]);
    let v = a.vault();
    // More secrets than one page of a range read (1,000).
    let n = 1200;
    for i in 0..n {
        v.put(
            &r(&format!("global/k{i:05}")),
            &SensitiveBytes::from_slice(format!("value-{i}").as_bytes()),
        )
        .unwrap();
    }
    let store = raw(&etcd, "sealfs");
    let prefix = store.key("index/global/");
    let shards = store.get_prefix(&prefix).unwrap();
    let largest = shards.iter().map(|(_, rec)| rec.value.len()).max().unwrap();
    // 65,536 shards (four hex digits) in a fleet made now: about one
    // secret per shard here, about fifteen at 1,000,000.
    assert!(shards.iter().all(|(k, _)| k.len() == prefix.len() + 4));
    assert!(shards.len() > 1100, "{} shards", shards.len());
    assert!(largest < 1024, "a shard of {largest} bytes");
    assert_eq!(store.get_prefix(&store.key("obj/")).unwrap().len(), n);
    // Another host lists the whole scope and reads any of it.
    let listed = b.run(&["list", "global"], b"").ok().stdout_str();
    assert_eq!(
        listed.lines().filter(|l| l.contains("k0")).count(),
        n,
        "{listed}"
    );
    assert_eq!(b.get("global/k01199"), b"value-1199");
    let status = scope_status(b);
    assert_eq!(status["secrets"], n, "{status}");
}

/// An index shard copied over another shard's slot, or over the same
/// slot of another scope, does not authenticate there.
#[test]
fn an_index_shard_moved_to_another_slot_is_refused() {
    let Some(etcd) = Etcd::start(1) else { return };
    let hosts = fleet(&etcd, 2);
    let (a, b) = (&hosts[0], &hosts[1]);
    let store = raw(&etcd, "sealfs");
    // Two secrets in different shards.
    let global = VaultScope::Global;
    let mut names = (0..).map(|i| format!("k{i}"));
    let first = names.next().unwrap();
    let other = names
        .find(|n| shard_of(&global, n) != shard_of(&global, &first))
        .unwrap();
    a.set(&format!("global/{first}"), b"first");
    a.set(&format!("global/{other}"), b"other");
    assert_eq!(b.get(&format!("global/{other}")), b"other");
    let (s1, s2) = (shard_of(&global, &first), shard_of(&global, &other));
    let k2 = store.key(&format!("index/global/{s2}"));
    let rec1 = store
        .get(&store.key(&format!("index/global/{s1}")))
        .unwrap()
        .unwrap();
    let rec2 = store.get(&k2).unwrap().unwrap();
    assert!(store
        .apply(&[], &[Change::Put(k2.clone(), rec1.value)])
        .unwrap());
    // The moved shard's MAC names its own slot: it does not authenticate in
    // another (and claims a secret of another shard).
    a.run(&["get", &format!("global/{other}")], b"")
        .fails(1, &format!("shard {s2} of the index of global"));
    assert!(store.apply(&[], &[Change::Put(k2, rec2.value)]).unwrap());
    assert_eq!(a.get(&format!("global/{other}")), b"other");
}
