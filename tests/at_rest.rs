//! The vault at rest against someone who can read and write the vault
//! directory but not the identity: raw SQLite edits, copied rows and blobs,
//! a whole directory restored from an earlier copy, and an upgrade from the
//! format of e3c9f86 (a fixture written by that build) killed midway. Each
//! test performs the attack and checks that sealfs refuses, printing no
//! value.

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use sealfs::__private::crypto::KeyRing;
use sealfs::__private::DeviceIdentity;

use crate::util::{Run, Sandbox};

fn index(sb: &Sandbox) -> rusqlite::Connection {
    rusqlite::Connection::open(sb.vault_dir().join("index.sqlite3")).unwrap()
}

/// The hex lookup id of a row, found the way an attacker can: as the only
/// row that changed between two copies of the index.
fn changed_row(before: &[(Vec<u8>, Vec<u8>)], after: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let changed: Vec<_> = after.iter().filter(|r| !before.contains(r)).collect();
    assert_eq!(changed.len(), 1, "expected one changed row");
    changed[0].0.clone()
}

fn rows(sb: &Sandbox) -> Vec<(Vec<u8>, Vec<u8>)> {
    let conn = index(sb);
    let mut st = conn
        .prepare("SELECT id, sealed FROM records WHERE kind = 1 ORDER BY id")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A refusal: exit 1, nothing on stdout, one line naming `needle`, and no
/// value of the vault anywhere in the output.
#[track_caller]
fn refused(out: Run, needle: &str) {
    assert!(out.stdout.is_empty(), "printed {:?}", out.stdout_str());
    let out = out.fails(1, needle);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(!out.stderr.contains("value-"), "{}", out.stderr);
}

fn vault_with_three_secrets() -> Sandbox {
    let sb = Sandbox::new();
    sb.set("global/a", b"value-a");
    sb.set("global/b", b"value-b");
    sb.set("principal:alice/c", b"value-c");
    sb
}

/// Finding H3 of the review: plant an identity of the attacker's in a
/// blob slot, and point the index's hints at it. sealfs takes the identity
/// of an encrypted-file vault from the identity directory only, so the
/// forged key id is a wrong identity: nothing is sealed to the attacker.
#[test]
fn an_identity_planted_in_the_vault_directory_is_never_used() {
    let sb = vault_with_three_secrets();
    let vault_id: String = index(&sb)
        .query_row("SELECT value FROM meta WHERE name = 'vault_id'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let planted = [0x42u8; 32];
    let salt = (0..vault_id.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&vault_id[i..i + 2], 16).unwrap())
        .collect::<Vec<_>>();
    let forged = KeyRing::derive(&DeviceIdentity::from_bytes(planted), &salt).key_id();
    let slot = sb.vault_dir().join("objects/00");
    fs::create_dir_all(&slot).unwrap();
    fs::write(slot.join("0".repeat(64)), planted).unwrap();
    sb.index_exec(&format!(
        "INSERT OR REPLACE INTO meta VALUES ('identity_store', 'backend');
         UPDATE meta SET value = '{}' WHERE name = 'key_id';",
        forged.to_hex()
    ));
    let blobs_before = count_blobs(&sb);
    refused(
        sb.run(&["set", "global/new"], b"value-new"),
        "does not belong to the vault",
    );
    refused(
        sb.run(&["get", "global/a"], b""),
        "does not belong to the vault",
    );
    assert_eq!(count_blobs(&sb), blobs_before, "something was sealed");
}

fn count_blobs(sb: &Sandbox) -> usize {
    fs::read_dir(sb.vault_dir().join("objects"))
        .unwrap()
        .map(|fan| fs::read_dir(fan.unwrap().path()).unwrap().count())
        .sum()
}

/// Every field of the index edited in turn, each on a fresh vault: the
/// vault-wide record, the bucket digests, the clear hints, and every
/// column of a secret's record, plus a record deleted, one moved under
/// another secret's id, and a bucket re-digested to match an edit. Each is
/// a one-line error naming the ref (or the vault metadata), for get and
/// list alike; nothing prints a value.
#[test]
fn an_edit_of_any_index_field_is_an_integrity_error() {
    let a_id = |sb: &Sandbox| {
        let before = rows(sb);
        sb.set("global/a", b"value-a2");
        changed_row(&before, &rows(sb))
    };
    type Edit = Box<dyn Fn(&Sandbox, &[u8])>;
    let exec = |sql: &'static str| -> Edit {
        Box::new(move |sb: &Sandbox, id: &[u8]| {
            index(sb)
                .execute(sql, rusqlite::params![id])
                .map(drop)
                .or_else(|_| index(sb).execute_batch(sql))
                .unwrap()
        })
    };
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "the sealed vault record",
            exec("UPDATE vault SET sealed = randomblob(length(sealed))"),
            "integrity check failed for vault metadata",
        ),
        (
            "a bucket digest",
            exec("UPDATE buckets SET digest = zeroblob(32) WHERE bucket = 7"),
            "integrity check failed for vault metadata",
        ),
        (
            "the format hint",
            exec("UPDATE meta SET value = '1' WHERE name = 'format'"),
            "integrity check failed",
        ),
        (
            "the backend hint",
            exec("UPDATE meta SET value = 'secret-service' WHERE name = 'backend'"),
            "secret-service",
        ),
        (
            "the key id hint",
            exec("UPDATE meta SET value = '0011223344556677' WHERE name = 'key_id'"),
            "does not belong to the vault",
        ),
        (
            "the vault id",
            exec("UPDATE meta SET value = '00112233445566778899aabbccddeeff' WHERE name = 'vault_id'"),
            "does not belong to the vault",
        ),
        (
            "the record's sealed bytes",
            exec("UPDATE records SET sealed = randomblob(length(sealed)) WHERE id = ?1"),
            "integrity check failed for global/a",
        ),
        (
            "the record's clear object id",
            exec("UPDATE records SET object_id = (SELECT object_id FROM records r WHERE r.id <> ?1 AND r.kind = 1 LIMIT 1) WHERE id = ?1"),
            "integrity check failed for global/a",
        ),
        (
            "the record's kind",
            exec("UPDATE records SET kind = 2 WHERE id = ?1"),
            "integrity check failed for global/a",
        ),
        (
            "the record's scope id",
            exec("UPDATE records SET scope_id = randomblob(32) WHERE id = ?1"),
            "integrity check failed for global/a",
        ),
        (
            "the record deleted",
            exec("DELETE FROM records WHERE id = ?1"),
            "integrity check failed for global/a",
        ),
        (
            "another secret's record moved under this id",
            exec("UPDATE records SET sealed = (SELECT sealed FROM records r WHERE r.id <> ?1 AND r.kind = 1 LIMIT 1) WHERE id = ?1"),
            "integrity check failed for global/a",
        ),
    ];
    for (what, edit, needle) in cases {
        let sb = vault_with_three_secrets();
        let id = a_id(&sb);
        edit(&sb, &id);
        refused(sb.run(&["get", "global/a"], b""), needle);
        refused(
            sb.run(&["list"], b""),
            needle.trim_end_matches(" for global/a"),
        );
        eprintln!("refused: {what}");
    }
    // A bucket re-digested by the attacker to match their edit (the digest
    // is a plain hash): the root in the sealed vault record catches it.
    let sb = vault_with_three_secrets();
    let id = a_id(&sb);
    let conn = index(&sb);
    conn.execute("DELETE FROM records WHERE id = ?1", [&id])
        .unwrap();
    let digest = bucket_digest(&conn, id[0]);
    conn.execute(
        "UPDATE buckets SET digest = ?2 WHERE bucket = ?1",
        rusqlite::params![id[0], digest.as_slice()],
    )
    .unwrap();
    drop(conn);
    refused(
        sb.run(&["get", "global/a"], b""),
        "integrity check failed for vault metadata",
    );
}

/// The bucket digest as docs/format.md defines it (what an attacker can
/// compute without any key).
fn bucket_digest(conn: &rusqlite::Connection, b: u8) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"sealfs bucket v2");
    let mut st = conn
        .prepare("SELECT id, kind, scope_id, object_id, sealed FROM records ORDER BY id")
        .unwrap();
    let mut rows = st.query([]).unwrap();
    while let Some(r) = rows.next().unwrap() {
        let id: Vec<u8> = r.get(0).unwrap();
        if id[0] != b {
            continue;
        }
        let kind: u8 = r.get(1).unwrap();
        let scope_id: Option<Vec<u8>> = r.get(2).unwrap();
        let object_id: Option<String> = r.get(3).unwrap();
        let sealed: Vec<u8> = r.get(4).unwrap();
        let mut leaf = Sha256::new();
        leaf.update(b"sealfs leaf v2");
        for part in [
            id.as_slice(),
            &[kind],
            scope_id.as_deref().unwrap_or(b""),
            object_id.as_deref().unwrap_or("").as_bytes(),
            sealed.as_slice(),
        ] {
            leaf.update((part.len() as u64).to_be_bytes());
            leaf.update(part);
        }
        h.update(leaf.finalize());
    }
    h.finalize().into()
}

/// One secret rolled back: its old blob and old record restored from an
/// earlier copy, then also the old bucket digest, then also the old vault
/// record. Each step is refused; the last one by the anchor.
#[test]
fn one_secret_rolled_back_is_refused() {
    let sb = vault_with_three_secrets();
    // One record changes per rotation (no earlier version is kept in
    // another bucket): the attack restores exactly that one.
    sb.run(&["settings", "--keep-versions", "0"], b"").ok();
    let copy = sb.path().join("copy.sqlite3");
    let old_blob = fs::read(sb.blob_path("global/a")).unwrap();
    let old_blob_path = sb.blob_path("global/a");
    fs::copy(sb.vault_dir().join("index.sqlite3"), &copy).unwrap();
    let before = rows(&sb);
    sb.set("global/a", b"value-a-rotated");
    let id = changed_row(&before, &rows(&sb));
    // The old blob back in place, and the old record.
    fs::write(&old_blob_path, &old_blob).unwrap();
    let restore = |sql: &str| {
        let conn = index(&sb);
        conn.execute("ATTACH DATABASE ?1 AS old", [copy.to_str().unwrap()])
            .unwrap();
        conn.execute(sql, [&id]).unwrap();
    };
    restore("INSERT OR REPLACE INTO records SELECT * FROM old.records WHERE id = ?1");
    refused(
        sb.run(&["get", "global/a"], b""),
        "integrity check failed for global/a",
    );
    {
        let conn = index(&sb);
        conn.execute("ATTACH DATABASE ?1 AS old", [copy.to_str().unwrap()])
            .unwrap();
        conn.execute(
            "UPDATE buckets SET digest = (SELECT digest FROM old.buckets o WHERE o.bucket = ?1) WHERE bucket = ?1",
            [id[0]],
        )
        .unwrap();
    }
    refused(
        sb.run(&["get", "global/a"], b""),
        "integrity check failed for vault metadata",
    );
    restore("UPDATE vault SET sealed = (SELECT sealed FROM old.vault) WHERE ?1 IS NOT NULL");
    refused(
        sb.run(&["get", "global/a"], b""),
        "vault rolled back: the index is at commit",
    );
    refused(
        sb.run(&["set", "global/d"], b"value-d"),
        "vault rolled back",
    );
}

/// The whole vault directory restored from a copy taken before later
/// writes: refused until the owner accepts it with `sealfs recover
/// --accept-rollback` (audited), after which the vault works and an even
/// older copy is refused again.
#[test]
fn the_whole_directory_restored_from_an_earlier_copy_is_refused() {
    let sb = Sandbox::new();
    sb.set("global/a", b"value-a1");
    let oldest = sb.path().join("oldest");
    copy_dir(&sb.vault_dir(), &oldest);
    sb.set("global/a", b"value-a2");
    let older = sb.path().join("older");
    copy_dir(&sb.vault_dir(), &older);
    sb.set("global/a", b"value-a3");
    sb.set("global/b", b"value-b");

    replace_dir(&older, &sb.vault_dir());
    refused(
        sb.run(&["get", "global/a"], b""),
        "vault rolled back: the index is at commit",
    );
    refused(sb.run(&["list"], b""), "vault rolled back");
    refused(
        sb.run(&["set", "global/c"], b"value-c"),
        "vault rolled back",
    );
    sb.run(&["recover"], b"").fails(2, "--accept-rollback");
    let out = sb.run(&["recover", "--accept-rollback"], b"").ok();
    assert!(out.stderr.contains("accepted"), "{}", out.stderr);
    assert_eq!(sb.get("global/a"), b"value-a2");
    sb.run(&["get", "global/b"], b"")
        .fails(1, "secret not found: global/b");
    sb.set("global/c", b"value-c");
    assert_eq!(sb.get("global/c"), b"value-c");
    let log = sb.run(&["audit-log", "--json"], b"").ok().stdout_str();
    assert!(
        log.lines()
            .any(|l| l.contains("\"op\":\"recover\"") && l.contains("accept-rollback")),
        "{log}"
    );

    replace_dir(&oldest, &sb.vault_dir());
    refused(
        sb.run(&["get", "global/a"], b""),
        "vault rolled back: the index is at commit",
    );
}

fn copy_dir(from: &Path, to: &Path) {
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn replace_dir(copy: &Path, dir: &Path) {
    fs::remove_dir_all(dir).unwrap();
    copy_dir(copy, dir);
}

/// A copy of the fixture written by e3c9f86's `sealfs` (format 1): five
/// live secrets (one rewritten twice, one read-once, one binary), one
/// deleted. Git keeps no modes: owner-only, as sealfs wrote them.
fn format_1_vault() -> Sandbox {
    let sb = Sandbox::new();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vault-e3c9f86");
    for part in ["vault", "identity"] {
        copy_dir(&fixture.join(part), &sb.path().join(part));
    }
    let mut paths = Vec::new();
    walk(sb.path(), &mut paths);
    for p in paths {
        let mode = if p.is_dir() { 0o700 } else { 0o600 };
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }
    sb
}

fn walk(root: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        }
        out.push(p);
    }
}

const FIXTURE_VALUES: &[(&str, &[u8])] = &[
    ("global/openai_api_key", b"fixture-openai-value"),
    ("principal:alice/github_token", b"fixture-github-v3"),
    ("session:run-42/db_password", b"fixture-db-password"),
    ("global/binary_value", b"\x00\xff\xfebinary\n"),
];
const FIXTURE_NAMES: &[&str] = &[
    "openai_api_key",
    "github_token",
    "run-42",
    "db_password",
    "binary_value",
    "once_token",
    "deleted_key",
    "alice",
];

fn format_of(sb: &Sandbox) -> String {
    index(sb)
        .query_row("SELECT value FROM meta WHERE name = 'format'", [], |r| {
            r.get(0)
        })
        .unwrap()
}

/// Every value of the fixture, read-once semantics and the version
/// sequence of the deleted secret survive the upgrade; afterwards no file
/// of the vault directory holds a name.
#[test]
fn a_vault_of_format_1_upgrades_on_first_open_with_every_value_intact() {
    let sb = format_1_vault();
    assert_eq!(format_of(&sb), "1");
    let v1_copy = sb.path().join("v1-copy");
    copy_dir(&sb.vault_dir(), &v1_copy);
    let listed = sb.run(&["list"], b"").ok().stdout_str();
    assert_eq!(listed.lines().count(), 5, "{listed}");
    assert_eq!(format_of(&sb), "2");
    for (r, v) in FIXTURE_VALUES {
        assert_eq!(sb.get(r), *v, "{r}");
    }
    assert_eq!(sb.get("global/once_token"), b"fixture-read-once");
    sb.run(&["get", "global/once_token"], b"")
        .fails(1, "secret not found: global/once_token");
    let vault = sb.vault();
    let entry = |r: &str| vault.entry(&r.parse().unwrap()).unwrap().unwrap();
    assert_eq!(entry("principal:alice/github_token").version, 3);
    drop(vault);
    sb.set("global/deleted_key", b"value-again");
    let vault = sb.vault();
    assert_eq!(
        vault
            .entry(&"global/deleted_key".parse().unwrap())
            .unwrap()
            .unwrap()
            .version,
        2,
        "the retired version carried over"
    );
    drop(vault);
    let mut paths = Vec::new();
    walk(&sb.vault_dir(), &mut paths);
    for p in paths.iter().filter(|p| p.is_file()) {
        let bytes = fs::read(p).unwrap();
        for n in FIXTURE_NAMES {
            assert!(
                !bytes.windows(n.len()).any(|w| w == n.as_bytes()),
                "{n} in {} after the upgrade",
                p.display()
            );
        }
    }
    // The format-1 copy put back is a rollback like any other.
    replace_dir(&v1_copy, &sb.vault_dir());
    refused(
        sb.run(&["get", "global/openai_api_key"], b""),
        "vault rolled back: the index is in format 1",
    );
    sb.run(&["recover", "--accept-rollback"], b"").ok();
    assert_eq!(sb.get("global/once_token"), b"fixture-read-once");
    for (r, v) in FIXTURE_VALUES {
        assert_eq!(sb.get(r), *v, "{r}");
    }
}

/// `kill -9` of the first open at random instants: every time, the vault
/// is left in format 1 or format 2, and the next open reads every value.
/// Both outcomes must happen, so the timing really lands inside.
#[test]
fn an_upgrade_killed_at_any_instant_leaves_one_format_or_the_other() {
    // How long an upgrade takes here.
    let mut took = Vec::new();
    for _ in 0..3 {
        let sb = format_1_vault();
        let started = Instant::now();
        sb.run(&["list"], b"").ok();
        took.push(started.elapsed());
    }
    took.sort();
    let window = took[1] * 2;
    let mut rng = crate::util::XorShift(0x0a9_2de);
    let (mut old, mut new) = (0, 0);
    for _ in 0..60 {
        let sb = format_1_vault();
        let mut child = sb
            .cmd(&["list"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = rng.below(window.as_micros() as u64);
        std::thread::sleep(Duration::from_micros(delay));
        let _ = child.kill();
        let _ = child.wait();
        match format_of(&sb).as_str() {
            "1" => old += 1,
            "2" => new += 1,
            other => panic!("format {other:?} after a kill"),
        }
        for (r, v) in FIXTURE_VALUES {
            assert_eq!(sb.get(r), *v, "{r} after a kill");
        }
        assert_eq!(format_of(&sb), "2");
    }
    assert!(
        old >= 3 && new >= 3,
        "format 1 left {old} times, format 2 {new} times"
    );
}

/// What an attacker keeps of the vault at one instant: a consistent copy of
/// the index (`VACUUM INTO`, as a backup tool would take it) and the blobs.
fn snapshot(sb: &Sandbox, to: &Path) {
    fs::create_dir(to).unwrap();
    index(sb)
        .execute(
            "VACUUM INTO ?1",
            [to.join("index.sqlite3").to_str().unwrap()],
        )
        .unwrap();
    copy_dir(&sb.vault_dir().join("objects"), &to.join("objects"));
}

/// Puts a snapshot back into the live index in place, under the nose of
/// any process that has it open: every table replaced in one SQLite
/// transaction, the old blobs copied back beside the new ones.
fn put_back(vault_dir: &Path, from: &Path) {
    let conn = rusqlite::Connection::open(vault_dir.join("index.sqlite3")).unwrap();
    conn.execute(
        "ATTACH ?1 AS old",
        [from.join("index.sqlite3").to_str().unwrap()],
    )
    .unwrap();
    let mut sql = String::from("BEGIN IMMEDIATE;");
    for t in ["meta", "vault", "records", "buckets", "pending"] {
        sql += &format!("DELETE FROM main.{t}; INSERT INTO main.{t} SELECT * FROM old.{t};");
    }
    sql += "COMMIT;";
    conn.execute_batch(&sql).unwrap();
    copy_dir(&from.join("objects/."), &vault_dir.join("objects"));
}

fn r(s: &str) -> sealfs::VaultRef {
    s.parse().unwrap()
}

/// The keys of the global scope, as `vault` lists them.
fn global_keys(vault: &sealfs::Vault) -> Vec<String> {
    let mut out = Vec::new();
    vault
        .for_each_key(&sealfs::VaultScope::Global, |k| {
            out.push(k.as_str().to_owned())
        })
        .unwrap();
    out
}

/// Review finding H1 of format 2: a long-running process (the mount
/// daemon, the console) remembered the anchor it saw at open. Other
/// processes write; the attacker puts the index of that instant back in
/// place. The process must read the anchor afresh and refuse, never serve
/// the old value.
#[test]
fn a_long_running_process_refuses_an_index_put_back_under_it() {
    let sb = Sandbox::new();
    sb.set("global/a", b"value-a1");
    let daemon = sb.vault();
    assert_eq!(daemon.get(&r("global/a")).unwrap().expose(), b"value-a1");
    let old = sb.path().join("old");
    snapshot(&sb, &old);
    // Other processes write; this one does not look meanwhile.
    sb.set("global/a", b"value-a2");
    sb.set("global/a", b"value-a3");

    put_back(&sb.vault_dir(), &old);
    let err = daemon.get(&r("global/a")).unwrap_err().to_string();
    assert!(err.starts_with("vault rolled back:"), "{err}");
    assert!(!err.contains("value-"), "{err}");
    let err = daemon.list(None).unwrap_err().to_string();
    assert!(err.starts_with("vault rolled back:"), "{err}");
    refused(sb.run(&["get", "global/a"], b""), "vault rolled back");
}

/// Review finding H2 of format 2: the attacker puts an older index back
/// while a writer is between its checks and its commit, so the commit
/// lands on the old index and would carry it forward as the newest state.
/// The anchor moves forward only: the write is refused, not acknowledged,
/// and every later open finds the fork.
#[test]
fn a_write_forked_onto_an_index_put_back_under_it_is_refused() {
    let sb = Sandbox::new();
    sb.set("global/a", b"value-a1");
    let old = sb.path().join("old");
    snapshot(&sb, &old);
    sb.set("global/a", b"value-a2");

    let mut writer = sb.vault();
    let (dir, copy) = (sb.vault_dir(), old.clone());
    writer.set_fault_hook(move |point| {
        if point == sealfs::FaultPoint::PutAfterBlob {
            put_back(&dir, &copy);
        }
        false
    });
    let err = writer
        .put(
            &r("global/b"),
            sealfs::SensitiveBytes::from_slice(b"value-b"),
        )
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("vault rolled back:"), "{err}");
    drop(writer);
    refused(sb.run(&["get", "global/a"], b""), "vault rolled back");
    refused(sb.run(&["list"], b""), "vault rolled back");
}

/// Review finding H3 of format 2: the upgrade moves the format-1 audit log
/// (refs, uids, programs) out of the vault directory through checked
/// directory handles only: a log already beside the vault is neither
/// replaced nor appended to, and a symlink planted in the old log's place
/// is removed, what it points at untouched. A format-1 index whose key id
/// hint is forged to force an upgrade is refused.
#[test]
fn the_format_1_audit_log_is_moved_never_appended_or_followed() {
    let beside = |sb: &Sandbox| sb.path().join("audit.log");
    let in_vault = |sb: &Sandbox| sb.vault_dir().join("audit.log");

    // Nothing beside the vault yet: the old log moves there whole.
    let sb = format_1_vault();
    let old_log = fs::read(in_vault(&sb)).unwrap();
    assert!(!old_log.is_empty());
    sb.run(&["list"], b"").ok();
    assert!(fs::read(beside(&sb)).unwrap().starts_with(&old_log));
    assert!(fs::symlink_metadata(in_vault(&sb)).is_err());

    // A log already there: left as it was, the old one stays put.
    let sb = format_1_vault();
    fs::write(beside(&sb), b"an existing line\n").unwrap();
    fs::set_permissions(beside(&sb), fs::Permissions::from_mode(0o600)).unwrap();
    sb.run(&["list"], b"").ok();
    let now = fs::read(beside(&sb)).unwrap();
    assert!(now.starts_with(b"an existing line\n"));
    let first_old_line = old_log.split(|b| *b == b'\n').next().unwrap();
    assert!(
        !now.windows(first_old_line.len())
            .any(|w| w == first_old_line),
        "the format-1 log was appended"
    );
    assert_eq!(fs::read(in_vault(&sb)).unwrap(), old_log);
    // Once the way is clear, the next run moves it (every open tries).
    fs::remove_file(beside(&sb)).unwrap();
    sb.run(&["list"], b"").ok();
    assert!(fs::read(beside(&sb)).unwrap().starts_with(&old_log));
    assert!(fs::symlink_metadata(in_vault(&sb)).is_err());

    // A FIFO in the old log's place: never opened (no hang), never moved.
    let sb = format_1_vault();
    fs::remove_file(in_vault(&sb)).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(in_vault(&sb))
        .status()
        .unwrap();
    assert!(made.success());
    sb.run(&["list"], b"").ok();
    assert!(fs::symlink_metadata(in_vault(&sb))
        .unwrap()
        .file_type()
        .is_fifo());
    assert!(fs::symlink_metadata(beside(&sb))
        .map(|m| !m.file_type().is_fifo())
        .unwrap_or(true));

    // A symlink in the old log's place.
    let sb = format_1_vault();
    fs::remove_file(in_vault(&sb)).unwrap();
    let canary = sb.path().join("canary");
    fs::write(&canary, b"canary").unwrap();
    std::os::unix::fs::symlink(&canary, in_vault(&sb)).unwrap();
    sb.run(&["list"], b"").ok();
    assert_eq!(fs::read(&canary).unwrap(), b"canary");
    assert!(fs::symlink_metadata(in_vault(&sb)).is_err());
    assert!(!fs::read(beside(&sb))
        .unwrap_or_default()
        .starts_with(b"canary"));

    // A forged key id hint cannot force an upgrade past the identity check.
    let sb = format_1_vault();
    sb.index_exec("UPDATE meta SET value = 'zz' WHERE name = 'key_id'");
    refused(sb.run(&["list"], b""), "key_id is missing or invalid");
    assert_eq!(format_of(&sb), "1");
}

/// Runs the binary on the vault at `dir` (same identity directory, since
/// it is a sibling of the sandbox's vault).
fn run_at(sb: &Sandbox, dir: &Path, args: &[&str], stdin: &[u8]) -> Run {
    let mut child = sb
        .cmd(args)
        .env("SEALFS_VAULT_DIR", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    crate::util::feed(&mut child, stdin);
    child.wait_with_output().unwrap().into()
}

/// Review finding M2 of format 2: two vaults side by side share the
/// default identity directory (`<parent>/identity`), so each opens with
/// it. Someone who can write both swaps them; the anchor binds each vault
/// to its path, so both are refused. The owner accepts a deliberate move
/// with `sealfs recover --accept-move` (audited), after which the copy at
/// the old path is refused.
#[test]
fn two_vaults_sharing_an_identity_cannot_be_swapped() {
    let sb = Sandbox::new();
    let other = sb.path().join("other");
    sb.set("global/a", b"value-one");
    run_at(&sb, &other, &["set", "global/a"], b"value-two").ok();
    assert_eq!(
        run_at(&sb, &other, &["get", "global/a"], b"").ok().stdout,
        b"value-two"
    );

    let swap = sb.path().join("swap");
    fs::rename(sb.vault_dir(), &swap).unwrap();
    fs::rename(&other, sb.vault_dir()).unwrap();
    fs::rename(&swap, &other).unwrap();
    refused(
        sb.run(&["get", "global/a"], b""),
        "was last used at another path",
    );
    refused(
        run_at(&sb, &other, &["get", "global/a"], b""),
        "was last used at another path",
    );
    refused(sb.run(&["set", "global/b"], b"value-b"), "another path");

    // The owner moved them on purpose after all.
    let out = sb.run(&["recover", "--accept-move"], b"").ok();
    assert!(out.stderr.contains("accepted"), "{}", out.stderr);
    assert_eq!(sb.get("global/a"), b"value-two");
    let log = sb.run(&["audit-log", "--json"], b"").ok().stdout_str();
    assert!(
        log.lines()
            .any(|l| l.contains("\"op\":\"recover\"") && l.contains("accept-move")),
        "{log}"
    );

    // A move, then a copy left at the old path.
    let moved = sb.path().join("moved");
    fs::rename(&other, &moved).unwrap();
    refused(
        run_at(&sb, &moved, &["get", "global/a"], b""),
        "another path",
    );
    run_at(&sb, &moved, &["recover", "--accept-move"], b"").ok();
    assert_eq!(
        run_at(&sb, &moved, &["get", "global/a"], b"").ok().stdout,
        b"value-one"
    );
    copy_dir(&moved, &other);
    refused(
        run_at(&sb, &other, &["get", "global/a"], b""),
        "another path",
    );
    // A move is never a rollback.
    let older = sb.path().join("older");
    copy_dir(&moved, &older);
    run_at(&sb, &moved, &["set", "global/a"], b"value-one-b").ok();
    run_at(&sb, &older, &["recover", "--accept-move"], b"").fails(1, "vault rolled back");
}

/// An old vault put back at a path where a newer vault of the same identity
/// directory has since been created is refused: creating the newer one
/// retired the old one's claim on the path.
#[test]
fn an_old_vault_put_back_where_a_new_one_was_created_is_refused() {
    let sb = Sandbox::new();
    sb.set("global/a", b"old-value");
    let old = sb.path().join("old");
    copy_dir(&sb.vault_dir(), &old);
    fs::remove_dir_all(sb.vault_dir()).unwrap();
    sb.set("global/a", b"new-value");
    fs::remove_dir_all(sb.vault_dir()).unwrap();
    copy_dir(&old, &sb.vault_dir());
    refused(sb.run(&["get", "global/a"], b""), "another path");
    refused(sb.run(&["set", "global/b"], b"value-b"), "another path");
    // The owner wants the old vault back after all.
    sb.run(&["recover", "--accept-move"], b"").ok();
    assert_eq!(sb.get("global/a"), b"old-value");
}

/// Review finding L2 of format 2: a record whose id is not a 32-byte blob
/// sorts outside every bucket's range, so no digest would cover it; one
/// filed so (a copy of a live record) makes listings refuse, not show it.
#[test]
fn a_record_filed_outside_every_bucket_is_refused() {
    for id in ["CAST(id AS TEXT)", "x''", "CAST(id || x'00' AS BLOB)", "1"] {
        let sb = vault_with_three_secrets();
        sb.index_exec(&format!(
            "INSERT INTO records SELECT {id}, kind, scope_id, object_id, sealed FROM records WHERE kind = 1 LIMIT 1"
        ));
        refused(
            sb.run(&["list"], b""),
            "integrity check failed for the index",
        );
        // A lookup by name reads its own bucket: the value, or a refusal
        // where the stray row sorts into that bucket.
        let out = sb.run(&["get", "global/a"], b"");
        if out.code == Some(0) {
            assert_eq!(out.stdout, b"value-a", "{id}");
        } else {
            refused(out, "integrity check failed for global/a");
        }
    }
}

/// Issue #16: a long-running process (the mount daemon) keeps a secret's
/// row and sealed blob between reads while the index is unchanged, and
/// decrypts afresh each time. A write of the index file or of its log
/// behind SQLite's back (no commit, same size) ends that: the next read
/// checks the index, the anchor and the backend again. The blob deleted
/// meanwhile shows what was checked.
/// Both ways of telling: the kernel's change notification, and looking at
/// the files' stamps on every read where there is none.
#[test]
fn a_long_running_process_checks_again_once_the_index_files_are_written() {
    let sb = Sandbox::new();
    for (file, notified) in [
        ("index.sqlite3", true),
        ("index.sqlite3-wal", true),
        ("index.sqlite3", false),
        ("index.sqlite3-wal", false),
    ] {
        let daemon = long_running(&sb, notified, false);
        let file = &format!("{file}, notified: {notified}");
        // Written by another process while this one has the index open:
        // the commit stays in the log.
        sb.set("global/a", b"value-a1");
        let a = r("global/a");
        assert_eq!(daemon.get(&a).unwrap().expose(), b"value-a1");
        // The sealed blob removed: the index still names it.
        let blob = sb.blob_path("global/a");
        assert_eq!(daemon.get(&a).unwrap().expose(), b"value-a1");
        let sealed = fs::read(&blob).unwrap();
        fs::remove_file(&blob).unwrap();
        assert_eq!(daemon.get(&a).unwrap().expose(), b"value-a1", "{file}");

        // One byte of the file rewritten in place with itself: no SQLite
        // commit, nothing else changes. (Past the coarsest timestamp tick
        // of kernels without fine-grained change times.)
        std::thread::sleep(Duration::from_millis(20));
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(sb.vault_dir().join(file.split(',').next().unwrap()))
            .unwrap();
        let mut byte = [0u8; 1];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut byte, 0).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &byte, 0).unwrap();
        drop(f);
        let err = daemon.get(&a).unwrap_err().to_string();
        assert!(
            err.contains("sealed blob of global/a is missing"),
            "{file}: {err}"
        );
        fs::write(&blob, sealed).unwrap();
        assert_eq!(daemon.get(&a).unwrap().expose(), b"value-a1", "{file}");
    }
}

/// A long-running vault (the mount daemon's) that tells a changed index
/// from the kernel's change notification (`notified`) or by looking at
/// the index on every read; `blind`: looking, it sees the index files as
/// unchanged whatever happens to them (`IndexFilesLookUnchanged`).
fn long_running(sb: &Sandbox, notified: bool, blind: bool) -> sealfs::Vault {
    use sealfs::FaultPoint::{IndexFilesLookUnchanged, NoChangeNotification};
    let mut daemon = sb.vault();
    daemon.set_fault_hook(move |point| {
        (point == NoChangeNotification && !notified) || (point == IndexFilesLookUnchanged && blind)
    });
    assert_eq!(daemon.notified_of_changes(), notified);
    daemon
}

/// A long-running vault as [`long_running`] makes, after it served
/// `global/a` = `value-a1` twice (the second time from its cache).
fn serving_a1(sb: &Sandbox, notified: bool, blind: bool) -> (sealfs::Vault, sealfs::VaultRef) {
    let daemon = long_running(sb, notified, blind);
    sb.set("global/a", b"value-a1");
    let a = r("global/a");
    assert_eq!(daemon.get(&a).unwrap().expose(), b"value-a1");
    assert_eq!(daemon.get(&a).unwrap().expose(), b"value-a1");
    (daemon, a)
}

/// One that looks at the index on every read and sees the index files as
/// unchanged whatever happens to them.
fn daemon_blind_to_file_stamps_serving_a1(sb: &Sandbox) -> (sealfs::Vault, sealfs::VaultRef) {
    serving_a1(sb, false, true)
}

/// The other half of the read cache's check: where the index files'
/// timestamps cannot tell two writes apart (coarse file-system clocks, a
/// log rewritten at its old size), another process's commit still ends
/// what a long-running process kept, through SQLite's `data_version`.
#[test]
fn a_commit_is_seen_by_a_long_running_process_even_when_the_files_look_unchanged() {
    let sb = Sandbox::new();
    let (daemon, a) = daemon_blind_to_file_stamps_serving_a1(&sb);
    sb.set("global/a", b"value-a2");
    assert_eq!(daemon.get(&a).unwrap().expose(), b"value-a2");
}

/// Attack review of the read cache: a writer of the vault directory makes
/// SQLite miss another process's commit by writing the shared-memory
/// file's header back as it was, where file times are too coarse to show
/// the commit either. The rollback anchor, which that commit moved and
/// which the attacker cannot touch, still ends what the long-running
/// process kept: it never serves the value from before the commit.
#[test]
fn a_commit_hidden_from_sqlite_never_leaves_a_long_running_process_serving_the_old_value() {
    let sb = Sandbox::new();
    let (daemon, a) = daemon_blind_to_file_stamps_serving_a1(&sb);
    let shm = sb.vault_dir().join("index.sqlite3-shm");
    let header = fs::read(&shm).unwrap()[..136].to_vec();
    sb.set("global/a", b"value-a2");
    let f = fs::OpenOptions::new().write(true).open(&shm).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &header, 0).unwrap();
    drop(f);
    match daemon.get(&a) {
        Ok(v) => assert_eq!(v.expose(), b"value-a2"),
        Err(e) => {
            let e = e.to_string();
            assert!(e.starts_with("vault rolled back:"), "{e}");
        }
    }
}

/// A long-running process keeps a scope's keys between listings while
/// the index is unchanged (the mount's `ls` of a big scope): another
/// process's put and delete show in the next listing.
#[test]
fn a_long_running_process_lists_what_another_process_added_or_deleted() {
    let sb = Sandbox::new();
    let daemon = sb.vault();
    sb.set("global/a", b"value-a");
    assert_eq!(global_keys(&daemon), ["a"]);
    assert_eq!(global_keys(&daemon), ["a"]);
    sb.set("global/b", b"value-b");
    assert_eq!(global_keys(&daemon), ["a", "b"]);
    sb.run(&["delete", "global/a"], b"").ok();
    assert_eq!(global_keys(&daemon), ["b"]);
}

/// A one-shot command's vault reads through its writer's connection
/// (`separate_reader` off), whose own commits SQLite's `data_version`
/// does not count: such a vault keeps nothing between reads, so it reads
/// its own writes, another process's, and refuses an index put back
/// under it as a long-running one does.
#[test]
fn a_vault_of_one_connection_reads_its_own_writes_and_another_processs() {
    let sb = Sandbox::new();
    sb.set("global/a", b"value-a1");
    let once = sealfs::Vault::open(sealfs::VaultConfig {
        separate_reader: false,
        ..sealfs::VaultConfig::new(sb.vault_dir())
    })
    .unwrap();
    let a = r("global/a");
    assert_eq!(once.get(&a).unwrap().expose(), b"value-a1");
    once.put(&a, sealfs::SensitiveBytes::new(b"value-a2".to_vec()))
        .unwrap();
    assert_eq!(once.get(&a).unwrap().expose(), b"value-a2");
    once.put(
        &r("global/b"),
        sealfs::SensitiveBytes::new(b"value-b".to_vec()),
    )
    .unwrap();
    assert_eq!(global_keys(&once), ["a", "b"]);
    once.delete(&r("global/b")).unwrap();
    assert_eq!(global_keys(&once), ["a"]);

    let old = sb.path().join("old");
    snapshot(&sb, &old);
    sb.set("global/a", b"value-a3");
    assert_eq!(once.get(&a).unwrap().expose(), b"value-a3");
    put_back(&sb.vault_dir(), &old);
    let err = once.get(&a).unwrap_err().to_string();
    assert!(err.starts_with("vault rolled back:"), "{err}");
}

/// A vault other than `sb`'s command line whose commits are durable but
/// whose anchor writes fail (a full disk): its writes are acknowledged
/// with the anchor one commit behind, so only the index shows them.
fn writer_whose_anchor_lags(sb: &Sandbox) -> sealfs::Vault {
    let mut writer = sealfs::Vault::open(sealfs::VaultConfig {
        separate_reader: false,
        ..sealfs::VaultConfig::new(sb.vault_dir())
    })
    .unwrap();
    writer.set_fault_hook(|point| point == sealfs::FaultPoint::AnchorWriteFails);
    writer
}

/// A notified long-running process that has served and kept `global/a` =
/// `value-a1`, and a long-lived writer of the same vault whose anchor
/// writes fail, already holding the index and its log open.
fn notified_beside_a_lagging_writer(
    sb: &Sandbox,
) -> (sealfs::Vault, sealfs::Vault, sealfs::VaultRef) {
    let (daemon, a) = serving_a1(sb, true, false);
    let writer = writer_whose_anchor_lags(sb);
    assert_eq!(writer.get(&a).unwrap().expose(), b"value-a1");
    (daemon, writer, a)
}

/// `writer` stores `value-a2` as `a`, and `daemon` reads that next.
fn a2_from_one_is_read_by_the_other(
    writer: &sealfs::Vault,
    daemon: &sealfs::Vault,
    a: &sealfs::VaultRef,
    context: &str,
) {
    writer
        .put(a, sealfs::SensitiveBytes::new(b"value-a2".to_vec()))
        .unwrap();
    assert_eq!(daemon.get(a).unwrap().expose(), b"value-a2", "{context}");
}

/// Puts a copy of `path` in its place (a new file under the old name).
fn replace_with_a_copy(path: &Path) {
    let copy = path.with_extension("copy");
    fs::copy(path, &copy).unwrap();
    fs::rename(&copy, path).unwrap();
}

/// The one commit the rollback anchor does not show: the anchor write
/// after it failed, and the write was acknowledged. A long-running
/// process that kept the old value sees the commit anyway, from the
/// kernel's change notification or, without one, from SQLite and the
/// index files.
#[test]
fn a_commit_whose_anchor_write_failed_is_seen_by_a_long_running_process() {
    for notified in [true, false] {
        let sb = Sandbox::new();
        let (daemon, a) = serving_a1(&sb, notified, false);
        a2_from_one_is_read_by_the_other(
            &writer_whose_anchor_lags(&sb),
            &daemon,
            &a,
            &format!("notified: {notified}"),
        );
        assert_eq!(daemon.notified_of_changes(), notified);
    }
}

/// The kernel keeps a bounded queue of change events and drops what does
/// not fit, with an overflow event in their place (an idle daemon while a
/// script stores many secrets; or a vault-directory writer, to drop an
/// event that would have ended the watch). A long-running process whose
/// queue overflowed takes it as a change: the commit whose events were
/// dropped (its anchor write failed too) is seen. It goes on being
/// notified where every watched directory and file is still where it was;
/// where the log was replaced while the events were lost, it polls.
#[test]
fn a_long_running_process_whose_change_events_overflowed_checks_again() {
    for replaced in [false, true] {
        let sb = Sandbox::new();
        let (daemon, writer, a) = notified_beside_a_lagging_writer(&sb);
        let max: usize = fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Events of entries nobody watches for still take their place; two
        // files in turn, as the kernel merges an event into an identical
        // one just before it.
        let junk = ["junk-1", "junk-2"].map(|n| fs::File::create(sb.vault_dir().join(n)).unwrap());
        for i in 0..=max {
            std::os::unix::fs::FileExt::write_all_at(&junk[i % 2], b"x", 0).unwrap();
        }
        if replaced {
            replace_with_a_copy(&sb.vault_dir().join("index.sqlite3-wal"));
        }
        a2_from_one_is_read_by_the_other(&writer, &daemon, &a, &format!("replaced: {replaced}"));
        assert_eq!(daemon.notified_of_changes(), !replaced);
    }
}

/// A change notification the kernel can no longer give (a watched
/// directory moved, even back) is never trusted again: the process looks
/// at the index files on every read from then on, and still sees a commit
/// whose anchor write failed.
#[test]
fn a_long_running_process_whose_watch_was_dropped_looks_at_the_files_again() {
    let sb = Sandbox::new();
    let daemon = long_running(&sb, true, false);
    sb.set("global/a", b"value-a1");
    let a = r("global/a");
    assert_eq!(daemon.get(&a).unwrap().expose(), b"value-a1");
    let identity = sb.vault_dir().parent().unwrap().join("identity");
    let aside = sb.path().join("identity-aside");
    fs::rename(&identity, &aside).unwrap();
    fs::rename(&aside, &identity).unwrap();
    assert!(!daemon.notified_of_changes());
    assert_eq!(daemon.get(&a).unwrap().expose(), b"value-a1");
    a2_from_one_is_read_by_the_other(&writer_whose_anchor_lags(&sb), &daemon, &a, "");
}

/// The anchor alone written (here broken in place, as a failing disk
/// would): a long-running process that kept a value checks again, and
/// refuses, in both ways of telling a change.
#[test]
fn a_long_running_process_checks_again_once_the_anchor_is_written() {
    for notified in [true, false] {
        let sb = Sandbox::new();
        let (daemon, a) = serving_a1(&sb, notified, false);
        let identity = sb.vault_dir().parent().unwrap().join("identity");
        let anchor = fs::read_dir(&identity)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("anchor-")
            })
            .unwrap();
        let f = fs::OpenOptions::new().write(true).open(&anchor).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &[0xff; 256], 0).unwrap();
        drop(f);
        let err = daemon.get(&a).unwrap_err().to_string();
        assert!(err.contains("anchor"), "notified: {notified}: {err}");
        assert!(!err.contains("value-"), "{err}");
    }
}

/// Attack review of the change notification: a commit's log writes are
/// reported before the commit is visible (SQLite publishes it in shared
/// memory after its sync, which makes no event), so a read between the
/// two keeps what it read under the new count. The vault makes one more
/// change once each commit is visible, so the next read sees it even when
/// the anchor write, the other event, fails. Here the long-running process
/// adds secrets itself (writes through the mount; a new secret's commit is
/// the last write of its put) while three of its threads list the scope
/// all along. The window is the commit's sync: the readers hit it only
/// now and then (they share one connection, and each check after a change
/// takes about as long as the sync in a debug build), so this shows that
/// every acknowledged write is seen under concurrent readers, and catches
/// the race itself only sometimes.
#[test]
fn a_long_running_process_sees_its_own_writes_while_another_thread_reads() {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    let sb = Sandbox::new();
    let fail_anchor = std::sync::Arc::new(AtomicBool::new(false));
    let mut daemon = sb.vault();
    let fail = std::sync::Arc::clone(&fail_anchor);
    daemon.set_fault_hook(move |point| {
        point == sealfs::FaultPoint::AnchorWriteFails && fail.load(Relaxed)
    });
    assert!(daemon.notified_of_changes());
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                while !done.load(Relaxed) {
                    global_keys(&daemon);
                }
            });
        }
        for i in 1..=99 {
            let key = format!("k{i:02}");
            // The anchor fails every other write, so it lags one commit at
            // most, as it may.
            fail_anchor.store(i % 2 == 1, Relaxed);
            daemon
                .put(
                    &r(&format!("global/{key}")),
                    sealfs::SensitiveBytes::new(b"value".to_vec()),
                )
                .unwrap();
            assert_eq!(global_keys(&daemon).last(), Some(&key), "write {i}");
        }
        done.store(true, Relaxed);
    });
    assert!(daemon.notified_of_changes());
}

/// Attack review of the change notification: a vault-directory writer
/// moves the index's log aside while another long-lived writer holds it
/// open, so that writer's writes are no longer reported under the log's
/// name. The log is watched as a file too: moving it ends the
/// notification, and the long-running process, polling from then on, sees
/// the commit (whose anchor write failed) through SQLite.
#[test]
fn a_log_moved_aside_under_a_long_running_process_ends_its_notification() {
    let sb = Sandbox::new();
    let (daemon, writer, a) = notified_beside_a_lagging_writer(&sb);
    fs::rename(
        sb.vault_dir().join("index.sqlite3-wal"),
        sb.vault_dir().join("objects").join("aside"),
    )
    .unwrap();
    // Read after the move, before the commit.
    assert_eq!(daemon.get(&a).unwrap().expose(), b"value-a1");
    a2_from_one_is_read_by_the_other(&writer, &daemon, &a, "");
    assert!(!daemon.notified_of_changes());
}

/// Attack review of the change notification: the index's log removed, or
/// replaced by a copy, while the long-running process and a long-lived
/// writer keep the old one open: their writes go to a file no name leads
/// to, and the kernel reports no end of the watched file while it is open.
/// Any creation, removal or rename of the index's or the log's name ends
/// the notification: the process polls, and sees the commit (whose anchor
/// write failed) through SQLite.
#[test]
fn a_log_removed_or_replaced_under_a_long_running_process_ends_its_notification() {
    for replace in [false, true] {
        let sb = Sandbox::new();
        let (daemon, writer, a) = notified_beside_a_lagging_writer(&sb);
        let wal = sb.vault_dir().join("index.sqlite3-wal");
        if replace {
            replace_with_a_copy(&wal);
        } else {
            fs::remove_file(&wal).unwrap();
        }
        assert!(!daemon.notified_of_changes(), "replaced: {replace}");
        a2_from_one_is_read_by_the_other(&writer, &daemon, &a, &format!("replaced: {replace}"));
    }
}
