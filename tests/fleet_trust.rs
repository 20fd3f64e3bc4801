//! Attacks on the fleet by someone who can write etcd (an etcd admin, a
//! host holding the etcd login, a revoked host that kept its credentials):
//! forged keyrings, injected members, restored snapshots, another fleet
//! copied in, deleted records. Each is made with raw etcd writes against
//! real etcd and real `sealfs` hosts; each must be refused, and no forged
//! or old value ever returned. `docs/fleet.md` and `docs/threat-model.md`
//! name these tests.

use base64::Engine;
use sealfs::fleet::etcd::{Change, EtcdStore};
use sealfs::fleet::keys::{shard_of, FleetKey};

use sealfs::fleet::FleetError;

use crate::fleet::{fleet, host_identity, raw, scope_key, scope_status, Host};
use crate::util::Etcd;

/// Every key and value under `/<prefix>/<sub>`.
fn snapshot(store: &EtcdStore, sub: &str) -> Vec<(String, Vec<u8>)> {
    store
        .get_prefix(&store.key(sub))
        .unwrap()
        .into_iter()
        .map(|(k, r)| (k, r.value))
        .collect()
}

/// Replaces everything under `/<prefix>/<sub>` with `snap`, whose keys
/// are renamed from `from` (another prefix) if given.
fn restore(store: &EtcdStore, sub: &str, snap: &[(String, Vec<u8>)], from: Option<&str>) {
    for (k, _) in snapshot(store, sub) {
        assert!(store.apply(&[], &[Change::Delete(k)]).unwrap());
    }
    for (k, v) in snap {
        let k = match from {
            Some(f) => k.replacen(f, &store.key(""), 1),
            None => k.clone(),
        };
        assert!(store.apply(&[], &[Change::Put(k, v.clone())]).unwrap());
    }
}

fn put(store: &EtcdStore, sub: &str, value: Vec<u8>) {
    assert!(store
        .apply(&[], &[Change::Put(store.key(sub), value)])
        .unwrap());
}

/// `h` gets `r` refused with `needle`, and nothing on stdout.
fn refused(h: &Host, r: &str, needle: &str) {
    let out = h.run(&["get", r], b"").fails(1, needle);
    assert!(out.stdout.is_empty(), "printed {:?}", out.stdout);
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A host's card, split: its age recipient and its signing key (hex).
fn card(h: &Host) -> (String, String) {
    let card = h.recipient();
    let (age, vk) = card.split_once(':').unwrap();
    (age.to_owned(), vk.to_owned())
}

/// A secret of a host's own local vault (`principal:sealfs-fleet/<key>`),
/// as someone who took the host over would have it.
fn local(h: &Host, key: &str) -> sealfs::SensitiveBytes {
    h.sb.vault()
        .get(&format!("principal:sealfs-fleet/{key}").parse().unwrap())
        .unwrap()
}

/// `key` wrapped (age) to each host in `hosts`, as a keyring holds it.
fn wrapped_to(key: &FleetKey, hosts: &[&Host]) -> serde_json::Map<String, serde_json::Value> {
    hosts
        .iter()
        .map(|h| {
            let (age, _) = card(h);
            let w = b64(&key.wrap_to(&age).unwrap());
            (age, w.into())
        })
        .collect()
}

/// `body` signed for `domain` with host `h`'s own signing key, as stored.
fn signed_by(h: &Host, domain: &[u8], body: &str) -> Vec<u8> {
    use ed25519_dalek::Signer;
    let key =
        ed25519_dalek::SigningKey::from_bytes(local(h, "signing-key").expose().try_into().unwrap());
    let sig = key.sign(&[domain, body.as_bytes()].concat());
    serde_json::json!({"body": body, "sig": b64(&sig.to_bytes())})
        .to_string()
        .into_bytes()
}

/// The body (JSON text) of the signed or MACed record at `sub`.
fn body_of(store: &EtcdStore, sub: &str) -> String {
    let rec = store.get(&store.key(sub)).unwrap().unwrap();
    serde_json::from_slice::<serde_json::Value>(&rec.value).unwrap()["body"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A keyring for a key of the attacker's own, wrapped to every member
/// (their recipients are public), in the shape hosts expect, claiming to be
/// signed by `signer`, with signature `sig`.
fn forged_keyring(
    fleet_id: &str,
    hosts: &[&Host],
    signer: &str,
    sig: &[u8],
    epoch: u64,
) -> Vec<u8> {
    let key = FleetKey::generate();
    let wrapped = wrapped_to(&key, hosts);
    let body = serde_json::json!({
        "fleet": fleet_id, "scope": "global", "epoch": epoch, "key_id": key.id(),
        "seq": 0, "signer": signer, "wrapped": wrapped,
    });
    serde_json::to_vec(&serde_json::json!({"body": body.to_string(), "sig": b64(sig)})).unwrap()
}

#[test]
fn a_forged_keyring_is_refused_and_nothing_is_sealed_to_it() {
    let Some(etcd) = Etcd::start(1) else { return };
    let hosts = fleet(&etcd, 2);
    let (a, b) = (&hosts[0], &hosts[1]);
    a.set("global/k", b"genuine");
    assert_eq!(b.get("global/k"), b"genuine");
    let store = raw(&etcd, "sealfs");
    let genuine = snapshot(&store, "keyring/");
    let id = scope_status(a)["fleet_id"].as_str().unwrap().to_owned();
    let (a_age, a_key) = card(a);
    let stranger = Host::new(&etcd);
    let (_, s_key) = card(&stranger);

    // The first design's keyring: unsigned JSON, a key of the attacker's.
    let key = FleetKey::generate();
    let old_style = serde_json::json!({
        "epoch": 1_000_000, "key_id": key.id(),
        "wrapped": { a_age.clone(): b64(&key.wrap_to(&a_age).unwrap()) },
    });
    for (forged, why) in [
        (
            serde_json::to_vec(&old_style).unwrap(),
            "refusing the keyring of global: not a signed record",
        ),
        // Claims a member signed it; the signature is the attacker's guess.
        (
            forged_keyring(&id, &[a, b], &a_key, &[7u8; 64], 9),
            "refusing the keyring of global: its signature does not verify",
        ),
        // Signed by a key that is not a member's.
        (
            forged_keyring(&id, &[a, b], &s_key, &[7u8; 64], 9),
            "refusing the keyring of global: it is not signed by a member",
        ),
        // Another fleet's id.
        (
            forged_keyring(&"0".repeat(64), &[a, b], &a_key, &[7u8; 64], 9),
            "refusing the keyring of global: it belongs to another fleet or scope",
        ),
    ] {
        put(&store, "keyring/global", forged);
        for h in [a, b] {
            refused(h, "global/k", why);
            // Nothing new is sealed under it either.
            h.run(&["set", "global/k"], b"sealed-to-attacker")
                .fails(1, why);
        }
    }
    restore(&store, "keyring/", &genuine, None);
    assert_eq!(b.get("global/k"), b"genuine");
    assert_eq!(a.get("global/k"), b"genuine");
}

/// Someone who can write etcd replaces a member's copy of the grant key
/// with a key of their own (the member's recipient is public), or deletes
/// it: the chain names the grant key's id, so the member refuses the
/// substitute and never opens a keyring, or seals a new scope's key, under
/// it.
#[test]
fn a_grant_key_replaced_in_etcd_is_refused_and_nothing_is_sealed_under_it() {
    let Some(etcd) = Etcd::start(1) else { return };
    let hosts = fleet(&etcd, 2);
    let (a, b) = (&hosts[0], &hosts[1]);
    a.set("global/k", b"genuine");
    let store = raw(&etcd, "sealfs");
    let (b_age, _) = card(b);
    let wraps = snapshot(&store, "grant/");
    let (b_wrap, genuine) = wraps
        .iter()
        .find(|(k, _)| k.ends_with(&b_age))
        .cloned()
        .unwrap();
    let attackers = FleetKey::generate();
    let forged = attackers.wrap_to(&b_age).unwrap();
    assert!(store
        .apply(&[], &[Change::Put(b_wrap.clone(), forged)])
        .unwrap());
    let why = "refusing the grant key wrapped to this host: it is not the key";
    refused(b, "global/k", why);
    b.run(&["set", "principal:new/k"], b"sealed-to-attacker")
        .fails(1, why);
    assert!(store
        .get(&store.key("keyring/principal:new"))
        .unwrap()
        .is_none());
    // A member enrolling B again writes B's copy anew.
    a.run(&["fleet", "enroll", &b.recipient()], b"").ok();
    assert_eq!(b.get("global/k"), b"genuine");
    // Deleted: a clear error, the same refusal of new scopes.
    assert!(store.apply(&[], &[Change::Delete(b_wrap.clone())]).unwrap());
    refused(b, "global/k", "is not enrolled");
    // Put back, everything reads again.
    assert!(store.apply(&[], &[Change::Put(b_wrap, genuine)]).unwrap());
    assert_eq!(b.get("global/k"), b"genuine");
    assert_eq!(a.get("global/k"), b"genuine");
    // A's own copy deleted: A seals no new scope under the key it holds
    // (it reads its copy afresh first).
    let (a_age, _) = card(a);
    let (a_wrap, _) = wraps.iter().find(|(k, _)| k.ends_with(&a_age)).unwrap();
    assert!(store.apply(&[], &[Change::Delete(a_wrap.clone())]).unwrap());
    a.run(&["set", "principal:new/k"], b"x")
        .fails(1, "is not enrolled");
    assert!(store
        .get(&store.key("keyring/principal:new"))
        .unwrap()
        .is_none());
}

#[test]
fn an_injected_member_is_refused_and_no_key_is_wrapped_to_it() {
    let Some(etcd) = Etcd::start(1) else { return };
    let hosts = fleet(&etcd, 2);
    let (a, b) = (&hosts[0], &hosts[1]);
    a.set("global/k", b"genuine");
    let store = raw(&etcd, "sealfs");
    let intruder = Host::new(&etcd);
    let (age, vk) = card(&intruder);
    // The next chain entry, adding the intruder, signed by the intruder
    // (or carrying a member's key with a made-up signature).
    let chain = snapshot(&store, "chain/");
    assert_eq!(chain.len(), 2, "init and one enrolment");
    let prev_body = body_of(&store, &format!("chain/{:020}", 1));
    let prev = {
        use sha2::Digest;
        hex(&sha2::Sha256::digest(prev_body.as_bytes()))
    };
    let id = scope_status(a)["fleet_id"].as_str().unwrap().to_owned();
    let (_, a_vk) = card(a);
    for signer in [vk.clone(), a_vk] {
        let body = serde_json::json!({
            "fleet": id, "seq": 2, "prev": prev, "op": "add",
            "member": {"recipient": age, "signing_key": vk},
            "signer": signer, "time_ms": 0,
        });
        let entry =
            serde_json::json!({"body": body.to_string(), "sig": b64(&[1u8; 64])}).to_string();
        put(&store, &format!("chain/{:020}", 2), entry.into_bytes());
        for h in [a, b] {
            h.run(&["get", "global/k"], b"")
                .fails(1, "refusing entry 2 of the membership chain");
            // A member's new scope is not wrapped to the intruder.
            h.run(&["set", "principal:new/k"], b"v")
                .fails(1, "refusing entry 2 of the membership chain");
        }
        assert!(snapshot(&store, "keyring/principal:new").is_empty());
    }
    // The first design's member list is no longer read at all.
    put(
        &store,
        "members",
        format!("{{\"recipients\":[\"{age}\"]}}").into_bytes(),
    );
    assert!(store
        .apply(
            &[],
            &[Change::Delete(store.key(&format!("chain/{:020}", 2)))]
        )
        .unwrap());
    assert_eq!(b.get("global/k"), b"genuine");
    let token = scope_status(a)["join_token"].as_str().unwrap().to_owned();
    intruder.run(&["fleet", "join", &token], b"").ok();
    intruder
        .run(&["get", "global/k"], b"")
        .fails(1, "is not enrolled in scope global");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn a_revoked_host_restoring_the_old_membership_and_keys_is_refused() {
    let Some(etcd) = Etcd::start(1) else { return };
    let hosts = fleet(&etcd, 3);
    let (a, b, c) = (&hosts[0], &hosts[1], &hosts[2]);
    a.set("global/k", b"before-revoke");
    assert_eq!(c.get("global/k"), b"before-revoke");
    let store = raw(&etcd, "sealfs");
    // What B keeps: a copy of everything, and its etcd write access.
    let before = snapshot(&store, "");

    a.run(&["fleet", "revoke", &b.recipient()], b"").ok();
    a.set("global/k", b"after-revoke");
    assert_eq!(c.get("global/k"), b"after-revoke");
    b.run(&["get", "global/k"], b"")
        .fails(1, "is not enrolled in scope global");
    // B, still with etcd access, cannot write through sealfs either.
    b.run(&["set", "global/k"], b"from-b")
        .fails(1, "is not enrolled");

    // B puts the whole pre-revocation state back (its own membership and
    // the keyrings it can open).
    let after = snapshot(&store, "");
    restore(&store, "", &before, None);
    for h in [a, c] {
        refused(
            h,
            "global/k",
            "refusing the membership chain: it ends at entry 2, and this host has seen entry 3",
        );
    }
    // B puts back only the old keyrings and manifests, under the current
    // membership: their key epoch is older than the one pinned.
    restore(&store, "", &after, None);
    let old_rings: Vec<_> = before
        .iter()
        .filter(|(k, _)| k.contains("/keyring/") || k.contains("/index/") || k.contains("/obj/"))
        .cloned()
        .collect();
    for (k, v) in &old_rings {
        put(&store, k.strip_prefix("/sealfs/").unwrap(), v.clone());
    }
    for h in [a, c] {
        refused(
            h,
            "global/k",
            "refusing the keyring of global: its key epoch 1 is older than epoch 2",
        );
    }
    restore(&store, "", &after, None);
    assert_eq!(c.get("global/k"), b"after-revoke");
}

#[test]
fn every_fleet_key_restored_from_an_earlier_snapshot_is_refused() {
    let Some(etcd) = Etcd::start(1) else { return };
    let hosts = fleet(&etcd, 3);
    let (a, b, c) = (&hosts[0], &hosts[1], &hosts[2]);
    a.set("global/k", b"old-value");
    a.set("principal:svc/k", b"old-svc");
    assert_eq!(b.get("global/k"), b"old-value");
    assert_eq!(b.get("principal:svc/k"), b"old-svc");
    let store = raw(&etcd, "sealfs");
    let (rings, indexes, objects) = (
        snapshot(&store, "keyring/"),
        snapshot(&store, "index/"),
        snapshot(&store, "obj/"),
    );
    a.run(&["fleet", "revoke", &c.recipient()], b"").ok();
    a.set("global/k", b"new-value");
    for h in [a, b] {
        assert_eq!(h.get("global/k"), b"new-value");
        assert_eq!(h.get("principal:svc/k"), b"old-svc");
    }
    // Every keyring and manifest (and the objects) as they were before the
    // revocation: each validly signed by a member, at the time.
    let current = snapshot(&store, "");
    restore(&store, "keyring/", &rings, None);
    restore(&store, "index/", &indexes, None);
    for (k, v) in &objects {
        assert!(store
            .apply(&[], &[Change::Put(k.clone(), v.clone())])
            .unwrap());
    }
    for h in [a, b] {
        refused(
            h,
            "global/k",
            "refusing the keyring of global: its key epoch 1 is older than epoch 2",
        );
        refused(
            h,
            "principal:svc/k",
            "refusing the keyring of principal:svc: its key epoch 1 is older than epoch 2",
        );
    }
    restore(&store, "", &current, None);
    assert_eq!(b.get("global/k"), b"new-value");
}

#[test]
fn another_fleets_data_copied_over_the_prefix_is_refused() {
    let Some(etcd) = Etcd::start(1) else { return };
    let hosts = fleet(&etcd, 2);
    let (a, b) = (&hosts[0], &hosts[1]);
    a.set("global/k", b"ours");
    // Another fleet, under another prefix, with the same names.
    let x = Host::new(&etcd);
    x.run(&["--etcd-prefix", "other", "fleet", "init"], b"")
        .ok();
    x.run(&["--etcd-prefix", "other", "set", "global/k"], b"theirs")
        .ok();
    let theirs = snapshot(&raw(&etcd, "other"), "");
    let store = raw(&etcd, "sealfs");
    let ours = snapshot(&store, "");
    restore(&store, "", &theirs, Some("/other/"));
    for h in [a, b] {
        refused(h, "global/k", "this prefix holds fleet ");
        h.run(&["set", "global/k"], b"x")
            .fails(1, "this prefix holds fleet ");
    }
    restore(&store, "", &ours, None);
    assert_eq!(b.get("global/k"), b"ours");
}

#[test]
fn a_deleted_index_keyring_or_chain_is_tampering_not_an_empty_scope() {
    let Some(etcd) = Etcd::start(1) else { return };
    let hosts = fleet(&etcd, 2);
    let (a, b) = (&hosts[0], &hosts[1]);
    a.set("global/k", b"value");
    assert_eq!(b.get("global/k"), b"value");
    let store = raw(&etcd, "sealfs");
    let all = snapshot(&store, "");
    let shard = shard_of(&sealfs::VaultScope::Global, "k");
    let gone_shard = format!(
        "refusing shard {shard} of the index of global: it is missing, and this host has seen its counter 1"
    );
    for (sub, why) in [
        ("index/", gone_shard.as_str()),
        (
            "keyring/",
            "refusing the keyring of global: it is missing, and this host has seen its key epoch 1",
        ),
        (
            "chain/",
            "refusing the membership chain: it is missing, and this host has seen entry 1",
        ),
    ] {
        restore(&store, sub, &[], None);
        for h in [a, b] {
            refused(h, "global/k", why);
            // Not an empty scope: neither listed as one nor written afresh.
            h.run(&["list", "global"], b"").fails(1, why);
            h.run(&["set", "global/k"], b"new").fails(1, why);
        }
        restore(&store, "", &all, None);
        assert_eq!(b.get("global/k"), b"value");
    }
}

/// A long-running process (a mount) looks for a scope before it exists;
/// another process of the same host (the CLI) then makes it. A keyring
/// deleted after that is tampering in the long-running process too, not
/// a scope that does not exist yet: it reads whether the scope is pinned
/// afresh rather than remember that it was not. Listings of every scope
/// and `fleet revoke` take the scopes this host has pinned too, so they
/// report the scope rather than leave it out.
#[test]
fn a_keyring_deleted_after_another_process_of_the_host_saw_it_is_refused_everywhere() {
    let Some(etcd) = Etcd::start(1) else { return };
    let hosts = fleet(&etcd, 2);
    let (a, b) = (&hosts[0], &hosts[1]);
    let v = a.vault();
    let r: sealfs::VaultRef = "principal:ci/token".parse().unwrap();
    assert!(matches!(v.get(&r), Err(FleetError::NotFound(_))));
    a.set("principal:ci/token", b"from-the-cli");
    let store = raw(&etcd, "sealfs");
    restore(&store, "keyring/principal:ci", &[], None);
    let why = "refusing the keyring of principal:ci: it is missing, and this host has seen its key epoch 1";
    let err = v.get(&r).unwrap_err().to_string();
    assert!(err.contains(why), "{err}");
    let err = v
        .put(&r, &sealfs::SensitiveBytes::from_slice(b"new"))
        .unwrap_err()
        .to_string();
    assert!(err.contains(why), "{err}");
    refused(a, "principal:ci/token", why);
    let err = v.list(None).unwrap_err().to_string();
    assert!(err.contains(why), "{err}");
    a.run(&["list"], b"").fails(1, why);
    a.run(&["fleet", "revoke", &b.recipient()], b"").fails(
        1,
        "could not: principal:ci (refusing the keyring of principal:ci: it is missing, and this host has seen it",
    );
}

/// A revoked host signs, with its own still-valid key and as of an entry
/// where it was a member, a keyring for a key of its own at a huge epoch.
/// Hosts refuse it without pinning it (no scope is bricked), and running
/// the revocation again, as the error advises, refuses to take over what
/// was written under the old key after the revocation.
#[test]
fn a_revoked_hosts_own_signature_is_refused_and_not_taken_over_by_rotation() {
    let Some(etcd) = Etcd::start(1) else { return };
    let hosts = fleet(&etcd, 3);
    let (a, b, c) = (&hosts[0], &hosts[1], &hosts[2]);
    a.set("global/k", b"genuine");
    assert_eq!(b.get("global/k"), b"genuine");
    let id = scope_status(a)["fleet_id"].as_str().unwrap().to_owned();
    let (_, b_vk) = card(b);
    a.run(&["fleet", "revoke", &b.recipient()], b"").ok();
    assert_eq!(c.get("global/k"), b"genuine");
    let store = raw(&etcd, "sealfs");
    let after_revoke = snapshot(&store, "keyring/");

    // B's keyring: entry 2 (B was a member there), epoch 10^6, a key of
    // B's, wrapped to A and C, validly signed by B.
    let key = FleetKey::generate();
    let body = serde_json::json!({
        "fleet": id, "scope": "global", "epoch": 1_000_000, "key_id": key.id(),
        "seq": 2, "signer": b_vk, "wrapped": wrapped_to(&key, &[a, c]),
    })
    .to_string();
    put(
        &store,
        "keyring/global",
        signed_by(b, b"sealfs-fleet-keyring/v1\0", &body),
    );
    for h in [a, c] {
        refused(
            h,
            "global/k",
            "scope global still has its key from before the last revocation",
        );
    }
    // Running the revocation again does not take B's key over.
    a.run(&["fleet", "revoke", &b.recipient()], b"").fails(
        1,
        "global (refusing the keyring of global: it was written under the old key after the revocation",
    );
    // Nothing was pinned: the genuine keyring put back is read again.
    restore(&store, "keyring/", &after_revoke, None);
    assert_eq!(a.get("global/k"), b"genuine");
    assert_eq!(c.get("global/k"), b"genuine");
}

/// etcd restored from a backup on purpose looks like a rollback, and is
/// refused as one, until a member runs `sealfs fleet recover`: then every
/// host reads the restored values again (re-joining with the token it
/// prints where the restored chain is older than its pin), and a host
/// enrolled after the backup is enrolled again.
#[test]
fn a_deliberate_restore_is_refused_until_a_member_runs_fleet_recover() {
    let Some(etcd) = Etcd::start(1) else { return };
    let hosts = fleet(&etcd, 2);
    let (a, b) = (&hosts[0], &hosts[1]);
    a.set("global/k", b"in-backup");
    a.set("principal:svc/k", b"svc-in-backup");
    assert_eq!(b.get("global/k"), b"in-backup");
    let store = raw(&etcd, "sealfs");
    let backup = snapshot(&store, "");

    // After the backup: more writes (in shards the backup lacks, which
    // every host reads), and a third host.
    a.set("global/k", b"lost-in-restore");
    // A scope made after the backup, which A and B pin.
    a.set("principal:late/k", b"lost-in-restore");
    assert_eq!(b.get("principal:late/k"), b"lost-in-restore");
    for i in 0..5 {
        a.set(&format!("global/new{i}"), b"lost-in-restore");
    }
    assert_eq!(
        b.run(&["list", "global"], b"")
            .ok()
            .stdout_str()
            .lines()
            .count(),
        6
    );
    let c = Host::new(&etcd);
    let token = a
        .run(&["fleet", "enroll", &c.recipient()], b"")
        .ok()
        .stdout_str();
    c.run(&["fleet", "join", token.trim()], b"").ok();
    for h in [a, b, &c] {
        assert_eq!(h.get("global/k"), b"lost-in-restore");
    }

    restore(&store, "", &backup, None);
    for h in [a, b, &c] {
        refused(
            h,
            "global/k",
            "refusing the membership chain: it ends at entry 1, and this host has seen entry 2",
        );
    }
    // A member takes the restored state over. The scope made after the
    // backup, which A pinned, is missing from etcd: that is said, and it
    // stays refused as tampering until the operator names it (an etcd
    // writer could delete a keyring just before a recover).
    let seen = "it is missing, and this host has seen";
    let out = a.run(&["fleet", "recover"], b"").ok();
    assert!(
        out.stderr
            .contains("WARNING: this host has seen scope(s) principal:late"),
        "{}",
        out.stderr
    );
    let token = out.stdout_str();
    assert_eq!(a.get("global/k"), b"in-backup");
    a.run(&["get", "principal:late/k"], b"").fails(1, seen);
    // Naming a scope etcd has a keyring of changes nothing.
    a.run(
        &["fleet", "recover", "--forget-scope", "principal:svc"],
        b"",
    )
    .fails(1, "refusing to forget scope principal:svc");
    assert_eq!(a.get("principal:svc/k"), b"svc-in-backup");
    // Named, it is forgotten: absent, and listings of every scope work.
    let out = a
        .run(
            &["fleet", "recover", "--forget-scope", "principal:late"],
            b"",
        )
        .ok();
    assert!(!out.stderr.contains("WARNING"), "{}", out.stderr);
    let token2 = out.stdout_str();
    let late = "secret not found";
    a.run(&["get", "principal:late/k"], b"").fails(1, late);
    assert_eq!(a.run(&["list"], b"").ok().stdout_str().lines().count(), 2);
    // B's pin is newer than the restored chain: a plain join does not move
    // it back; replacing it, as recover says, does, and B is told of the
    // scope it pinned that etcd lacks, just as A was.
    b.run(&["fleet", "join", token.trim()], b"")
        .fails(1, "run `sealfs fleet join --replace-pin`");
    b.run(
        &[
            "fleet",
            "join",
            "--forget-scope",
            "principal:late",
            token.trim(),
        ],
        b"",
    )
    .fails(2, "--replace-pin");
    let out = b
        .run(&["fleet", "join", "--replace-pin", token2.trim()], b"")
        .ok();
    assert!(out.stderr.contains("principal:late"), "{}", out.stderr);
    assert_eq!(b.get("global/k"), b"in-backup");
    assert_eq!(b.get("principal:svc/k"), b"svc-in-backup");
    b.run(&["get", "principal:late/k"], b"").fails(1, seen);
    b.run(
        &[
            "fleet",
            "join",
            "--replace-pin",
            "--forget-scope",
            "principal:late",
            token2.trim(),
        ],
        b"",
    )
    .ok();
    b.run(&["get", "principal:late/k"], b"").fails(1, late);
    assert_eq!(b.run(&["list"], b"").ok().stdout_str().lines().count(), 2);
    // The shards the restore took away are gone for good, not tampering.
    assert_eq!(
        b.run(&["list", "global"], b"")
            .ok()
            .stdout_str()
            .lines()
            .count(),
        1
    );
    b.run(&["get", "global/new0"], b"")
        .fails(1, "secret not found");
    // C was enrolled after the backup: it joins, is told it is no member,
    // and is enrolled again.
    c.run(&["fleet", "join", "--replace-pin", token.trim()], b"")
        .ok();
    c.run(&["get", "global/k"], b"")
        .fails(1, "is not enrolled in scope global");
    let token = a
        .run(&["fleet", "enroll", &c.recipient()], b"")
        .ok()
        .stdout_str();
    c.run(&["fleet", "join", token.trim()], b"").ok();
    assert_eq!(c.get("global/k"), b"in-backup");
    // Writes go on above every counter seen before.
    b.set("global/k", b"after-recover");
    assert_eq!(a.get("global/k"), b"after-recover");
}

/// The window between a revocation's chain entry and its rotation (the
/// revoking process died in between): the revoked host, which still holds
/// the old key, writes a value of its own under it, and then writes the
/// removal entry again, byte for byte, to make its write look older. Hosts
/// keep refusing the scope, and running the revocation again does not take
/// the value over.
#[test]
fn writes_under_the_old_key_after_a_revocation_are_never_taken_over() {
    let Some(etcd) = Etcd::start(1) else { return };
    let hosts = fleet(&etcd, 3);
    let (a, b, c) = (&hosts[0], &hosts[1], &hosts[2]);
    a.set("global/k", b"genuine");
    assert_eq!(c.get("global/k"), b"genuine");
    let store = raw(&etcd, "sealfs");
    let id = scope_status(a)["fleet_id"].as_str().unwrap().to_owned();

    // A's revocation of B got as far as its chain entry (entry 3).
    let prev = body_of(&store, &format!("chain/{:020}", 2));
    let (b_age, b_vk) = card(b);
    let body = serde_json::json!({
        "fleet": id, "seq": 3, "prev": hex(&{ use sha2::Digest; sha2::Sha256::digest(prev.as_bytes()) }),
        "op": "remove", "member": {"recipient": b_age, "signing_key": b_vk},
        "signer": card(a).1, "time_ms": 0,
    })
    .to_string();
    let removal = signed_by(a, b"sealfs-fleet-chain/v1\0", &body);
    put(&store, &format!("chain/{:020}", 3), removal.clone());

    // B, with the old key from the keyring, writes its own value under it.
    let old_key = scope_key(&store, &host_identity(b), "global").unwrap();
    let shard = write_under(&store, &old_key, "global/k", b"from-b");
    // ... and writes the removal entry again, unchanged.
    put(&store, &format!("chain/{:020}", 3), removal);

    for h in [a, c] {
        refused(
            h,
            "global/k",
            "scope global still has its key from before the last revocation",
        );
    }
    // Running the revocation again rotates the key (the keyring was
    // written before the revocation), and the new keyring takes shards under
    // the old key only as etcd held them then: B's shard is refused, left
    // behind under the old key (which the keyring then drops), and the
    // revocation names it.
    a.run(&["fleet", "revoke", &b.recipient()], b"")
        .fails(1, "after the revocation that retired it");
    for h in [a, c] {
        refused(
            h,
            "global/k",
            &format!("refusing shard {shard} of the index of global: its key epoch 1 is not one the keyring knows"),
        );
        h.run(&["set", "global/k"], b"x")
            .fails(1, "its key epoch 1 is not one the keyring knows");
        let out = h.run(&["get", "global/k"], b"");
        assert!(!out.stdout.windows(6).any(|w| w == b"from-b"));
    }
}

/// Writes `value` at `vault_ref` as a holder of `key` (the scope's key of
/// the epoch its shard is under) would, with raw etcd writes: a new
/// object, and the shard with the entry, its counter one on, MACed under
/// `key`. Returns the shard's name.
fn write_under(store: &EtcdStore, key: &FleetKey, vault_ref: &str, value: &[u8]) -> String {
    use sealfs::fleet::keys::{object_digest, random_object_id, shard_mac_input, DataKey};
    let r: sealfs::VaultRef = vault_ref.parse().unwrap();
    let shard = shard_of(r.scope(), r.key().as_str());
    let shard_key = format!("index/{}/{shard}", r.scope());
    let mut manifest: serde_json::Value =
        serde_json::from_str(&body_of(store, &shard_key)).unwrap();
    let version = manifest["counter"].as_u64().unwrap() + 1;
    let epoch = manifest["epoch"].as_u64().unwrap();
    let dek = DataKey::generate();
    let object = random_object_id();
    let sealed = dek.seal(&r, version, &sealfs::SensitiveBytes::from_slice(value));
    put(store, &format!("obj/{object}"), sealed.clone());
    manifest["counter"] = version.into();
    manifest["entries"][r.key().as_str()] = serde_json::json!({
        "version": version, "object": object, "sha256": object_digest(&sealed),
        "dek": b64(&key.wrap_data_key(&dek, &r, version, epoch)),
        "len": value.len(), "created_ms": 0, "updated_ms": 0,
    });
    let body = manifest.to_string();
    let mac = key.mac(&shard_mac_input(r.scope(), &shard, body.as_bytes()));
    put(
        store,
        &shard_key,
        serde_json::json!({"body": body, "mac": b64(&mac)})
            .to_string()
            .into_bytes(),
    );
    shard
}

/// A member dropped from a scope's audience keeps the scope's old key.
/// What it writes under that key after the change is refused, while the
/// new keyring still carries the old key too (the change cut short before
/// moving the shards), and running the change again does not take it
/// over.
#[test]
fn a_member_dropped_from_a_scopes_audience_cannot_write_under_the_old_key() {
    use sealfs::fleet::etcd::TxnFault;
    let Some(etcd) = Etcd::start(1) else { return };
    let hosts = fleet(&etcd, 3);
    let (a, b, c) = (&hosts[0], &hosts[1], &hosts[2]);
    a.set("principal:ci/k", b"genuine");
    a.set("principal:ci/other", b"genuine-other");
    assert_eq!(c.get("principal:ci/k"), b"genuine");
    let store = raw(&etcd, "sealfs");
    let old_key = scope_key(&store, &host_identity(c), "principal:ci").unwrap();

    // A grants the scope to A and B; the answer to its one transaction
    // (the chain entry and the new keyring) is lost: the new keyring
    // carries the old key, and no shard has moved.
    let scope: sealfs::VaultScope = "principal:ci".parse().unwrap();
    let v = a.vault_with(&etcd.endpoints(), std::time::Duration::from_secs(2));
    let to = [a.recipient(), b.recipient()];
    // Held back, a legitimate write lands before it: sent late, the grant
    // fails (it takes shards under the old key only as they were when it
    // read them), and the write stands.
    v.inject_txn_fault(TxnFault::HoldBack, None);
    assert!(matches!(
        v.grant_scope(&scope, Some(&to[..])),
        Err(FleetError::NoAnswer { .. })
    ));
    b.set("principal:ci/other", b"genuine-other");
    assert!(!v.deliver_held_back().unwrap(), "the late grant landed");
    assert_eq!(c.get("principal:ci/other"), b"genuine-other");
    v.inject_txn_fault(TxnFault::LoseReply, None);
    assert!(matches!(
        v.grant_scope(&scope, Some(&to[..])),
        Err(FleetError::NoAnswer { .. })
    ));
    drop(v);
    let ring = body_of(&store, "keyring/principal:ci");
    assert!(ring.contains("\"older\""), "{ring}");
    assert!(scope_key(&store, &host_identity(c), "principal:ci").is_none());
    // Meanwhile the scope reads on for its audience, under the old key.
    assert_eq!(b.get("principal:ci/other"), b"genuine-other");

    // C writes its own value under the old key.
    let shard = write_under(&store, &old_key, "principal:ci/k", b"from-c");
    let after = "after the change of audience that retired it";
    for h in [a, b] {
        refused(h, "principal:ci/k", after);
    }
    // The change run again moves the shards, names C's, and drops the old
    // key: C's value is refused for good, never served.
    a.grant("principal:ci", &[a, b]).fails(1, after);
    assert!(!body_of(&store, "keyring/principal:ci").contains("\"older\""));
    assert_eq!(b.get("principal:ci/other"), b"genuine-other");
    for h in [a, b] {
        refused(
            h,
            "principal:ci/k",
            &format!("refusing shard {shard} of the index of principal:ci: its key epoch 1 is not one the keyring knows"),
        );
        let out = h.run(&["get", "principal:ci/k"], b"");
        assert!(!out.stdout.windows(6).any(|w| w == b"from-c"));
    }
    // Written again after the change: refused the same way.
    write_under(&store, &old_key, "principal:ci/other", b"from-c");
    for h in [a, b] {
        let out = h.run(&["get", "principal:ci/other"], b"");
        assert!(!out.stdout.windows(6).any(|w| w == b"from-c"));
        assert_ne!(out.code, Some(0));
    }
}

/// Who a scope is granted to is the membership chain's word. Someone who
/// can write etcd puts back the keyring from before the scope was
/// restricted (its key known to the member left out, and sealed under the
/// grant key every member holds): hosts refuse it, a host that never read
/// the scope since included, and seal nothing under it. The member left
/// out signs a keyring of its own for the scope, or appends a chain entry
/// granting the scope to itself: both refused.
#[test]
fn a_scope_audience_cannot_be_rolled_back_or_widened_by_etcd_or_by_a_member_outside_it() {
    let Some(etcd) = Etcd::start(1) else { return };
    let hosts = fleet(&etcd, 3);
    let (a, b, c) = (&hosts[0], &hosts[1], &hosts[2]);
    a.set("global/k", b"shared");
    a.set("principal:ci/k", b"before");
    let store = raw(&etcd, "sealfs");
    let before = snapshot(&store, "keyring/principal:ci");
    a.grant("principal:ci", &[a, b]).ok();
    a.set("principal:ci/k", b"after");
    let genuine = snapshot(&store, "keyring/principal:ci");

    // The keyring from before the change, put back: B has not read the
    // scope since the change, and refuses it all the same.
    restore(&store, "keyring/principal:ci", &before, None);
    // (A has seen the newer keyring: its pin refuses it first.)
    let stale = "it is from before the last change of who the scope is granted to";
    for (h, why) in [(a, "refusing the keyring of principal:ci"), (b, stale)] {
        refused(h, "principal:ci/k", why);
        h.run(&["set", "principal:ci/new"], b"sealed-to-c")
            .fails(1, why);
    }
    restore(&store, "keyring/principal:ci", &genuine, None);
    assert_eq!(b.get("principal:ci/k"), b"after");

    // C signs a keyring of a key of its own, for A and B (and for C too).
    let id = scope_status(a)["fleet_id"].as_str().unwrap().to_owned();
    let seq = scope_status(a)["join_token"]
        .as_str()
        .unwrap()
        .split(':')
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap();
    let (_, c_vk) = card(c);
    for to in [vec![a, b], vec![a, b, c]] {
        let key = FleetKey::generate();
        let wrapped = wrapped_to(&key, &to);
        let audience: Vec<&String> = wrapped.keys().collect();
        let body = serde_json::json!({
            "fleet": id, "scope": "principal:ci", "epoch": 1_000_000, "key_id": key.id(),
            "seq": seq, "signer": c_vk, "wrapped": wrapped, "audience": audience,
        })
        .to_string();
        put(
            &store,
            "keyring/principal:ci",
            signed_by(c, b"sealfs-fleet-keyring/v1\0", &body),
        );
        for h in [a, b] {
            refused(h, "principal:ci/k", "refusing the keyring of principal:ci");
        }
    }
    restore(&store, "keyring/principal:ci", &genuine, None);
    assert_eq!(a.get("principal:ci/k"), b"after");

    // C appends a chain entry granting the scope to itself.
    let prev = body_of(&store, &format!("chain/{seq:020}"));
    let (c_age, _) = card(c);
    let body = serde_json::json!({
        "fleet": id, "seq": seq + 1,
        "prev": hex(&{ use sha2::Digest; sha2::Sha256::digest(prev.as_bytes()) }),
        "op": "audience", "member": {"recipient": c_age, "signing_key": c_vk},
        "signer": c_vk, "time_ms": 0, "scope": "principal:ci",
        "audience": [card(a).0, card(b).0, c_age],
    })
    .to_string();
    let entry = format!("chain/{:020}", seq + 1);
    put(
        &store,
        &entry,
        signed_by(c, b"sealfs-fleet-chain/v1\0", &body),
    );
    for h in [a, b, c] {
        refused(
            h,
            "principal:ci/k",
            "it is signed by a member the scope is not granted to",
        );
    }
    assert!(store
        .apply(&[], &[Change::Delete(store.key(&entry))])
        .unwrap());
    assert_eq!(b.get("principal:ci/k"), b"after");
    c.run(&["get", "principal:ci/k"], b"")
        .fails(1, "scope principal:ci is not granted to this host");
}

/// A host that has seen a revocation does not go back to an older pin when
/// given its first join token again, unless told to replace its pin.
#[test]
fn joining_again_with_an_old_token_never_moves_the_pin_back() {
    let Some(etcd) = Etcd::start(1) else { return };
    let hosts = fleet(&etcd, 2);
    let (a, b) = (&hosts[0], &hosts[1]);
    a.set("global/k", b"before");
    let old_token = scope_status(a)["join_token"].as_str().unwrap().to_owned();
    let c = Host::new(&etcd);
    let token = a
        .run(&["fleet", "enroll", &c.recipient()], b"")
        .ok()
        .stdout_str();
    c.run(&["fleet", "join", token.trim()], b"").ok();
    a.run(&["fleet", "revoke", &c.recipient()], b"").ok();
    a.set("global/k", b"after-revoke");
    assert_eq!(b.get("global/k"), b"after-revoke");
    // The chain put back to before C's revocation: B refuses it, and the
    // old token does not talk B into it.
    let store = raw(&etcd, "sealfs");
    let chain = snapshot(&store, "chain/");
    let before: Vec<_> = chain[..2].to_vec();
    restore(&store, "chain/", &before, None);
    refused(
        b,
        "global/k",
        "refusing the membership chain: it ends at entry 1",
    );
    b.run(&["fleet", "join", &old_token], b"")
        .fails(1, "run `sealfs fleet join --replace-pin`");
    refused(
        b,
        "global/k",
        "refusing the membership chain: it ends at entry 1",
    );
    restore(&store, "chain/", &chain, None);
    assert_eq!(b.get("global/k"), b"after-revoke");
}

/// A revoked host kept the data keys it could unwrap: it seals a value of
/// its own under one and writes it over the secret's object. The shard
/// names the exact bytes of the object, so no host serves it.
#[test]
fn a_value_sealed_under_a_data_key_a_revoked_host_kept_is_refused() {
    use sealfs::fleet::keys::shard_of;
    let Some(etcd) = Etcd::start(1) else { return };
    let hosts = fleet(&etcd, 3);
    let (a, b, c) = (&hosts[0], &hosts[1], &hosts[2]);
    a.set("global/k", b"genuine");
    assert_eq!(b.get("global/k"), b"genuine");
    let store = raw(&etcd, "sealfs");
    // What B can take with it: its fleet key, and so every data key.
    let old_key = scope_key(&store, &host_identity(b), "global").unwrap();
    let r: sealfs::VaultRef = "global/k".parse().unwrap();
    let shard = shard_of(r.scope(), "k");
    let body: serde_json::Value =
        serde_json::from_str(&body_of(&store, &format!("index/global/{shard}"))).unwrap();
    let e = &body["entries"]["k"];
    let version = e["version"].as_u64().unwrap();
    let dek = old_key
        .unwrap_data_key(
            &base64::engine::general_purpose::STANDARD
                .decode(e["dek"].as_str().unwrap())
                .unwrap(),
            &r,
            version,
            body["epoch"].as_u64().unwrap(),
        )
        .unwrap();
    let object = format!("obj/{}", e["object"].as_str().unwrap());

    a.run(&["fleet", "revoke", &b.recipient()], b"").ok();
    // The revocation re-wrapped the data key, which stays the same: B seals
    // its own value for the same secret and version under it.
    let forged = dek.seal(&r, version, &sealfs::SensitiveBytes::from_slice(b"from-b"));
    put(&store, &object, forged);
    for h in [a, c] {
        let out = h
            .run(&["get", "global/k"], b"")
            .fails(1, "integrity check failed for global/k");
        assert!(out.stdout.is_empty());
    }
}
