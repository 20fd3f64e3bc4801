//! Corrupted vault state: each kind gives its own clear error, never wrong
//! plaintext and never a panic.

use std::fs;

use crate::util::Sandbox;

fn two_vaults_sharing_an_identity() -> (Sandbox, std::path::PathBuf) {
    let sb = Sandbox::new();
    sb.set("global/k", b"value in vault one");
    // A second vault beside the first: same identity directory, its own vault id.
    let other = sb.path().join("vault2");
    let out = sb
        .cmd(&["set", "global/k"])
        .env("SEALFS_VAULT_DIR", &other)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"value in vault two")?;
            c.wait()
        })
        .unwrap();
    assert!(out.success());
    (sb, other)
}

#[test]
fn a_blob_from_another_vault_is_refused() {
    let (sb, other) = two_vaults_sharing_an_identity();
    let mine = sb.blob_path("global/k");
    let theirs = {
        let vault = sealfs::Vault::open(sealfs::VaultConfig {
            identity_dir: Some(sb.identity_dir()),
            ..sealfs::VaultConfig::new(&other)
        })
        .unwrap();
        let id = vault
            .blob_id(&"global/k".parse().unwrap())
            .unwrap()
            .unwrap();
        other
            .join("objects")
            .join(&id.as_str()[..2])
            .join(id.as_str())
    };
    fs::copy(&theirs, &mine).unwrap();
    let out = sb
        .run(&["get", "global/k"], b"")
        .fails(1, "integrity check failed for global/k");
    assert!(out.stderr.contains("sealed under key"), "{}", out.stderr);
    assert_eq!(out.stdout, b"");
}

#[test]
fn an_index_from_another_vault_is_refused() {
    let (sb, other) = two_vaults_sharing_an_identity();
    fs::copy(
        other.join("index.sqlite3"),
        sb.vault_dir().join("index.sqlite3"),
    )
    .unwrap();
    // The foreign index is the other vault's, anchored at the other path.
    let out = sb.run(&["get", "global/k"], b"");
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("was last used at another path"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("value in"));
    // Accepted as moved here, it names blobs this vault does not have.
    sb.run(&["recover", "--accept-move"], b"").ok();
    sb.run(&["get", "global/k"], b"")
        .fails(1, "missing from the backend");

    // An index from a vault with another identity does not even open.
    let one = Sandbox::new();
    one.set("global/k", b"x");
    let two = Sandbox::new();
    two.set("global/k", b"y");
    fs::copy(
        two.vault_dir().join("index.sqlite3"),
        one.vault_dir().join("index.sqlite3"),
    )
    .unwrap();
    one.run(&["get", "global/k"], b"")
        .fails(1, "does not belong to the vault");
}

#[test]
fn unknown_format_and_schema_versions_are_named() {
    let sb = Sandbox::new();
    sb.set("global/k", b"v");
    sb.index_exec("UPDATE meta SET value = '9' WHERE name = 'format'");
    sb.run(&["get", "global/k"], b"")
        .fails(1, "has format \"9\"; this build reads format \"2\"");
    sb.index_exec("UPDATE meta SET value = '2' WHERE name = 'format'; PRAGMA user_version = 99;");
    sb.run(&["get", "global/k"], b"")
        .fails(1, "schema version 99");
    sb.index_exec("PRAGMA user_version = 3;");
    // A blob of a future envelope format.
    let path = sb.blob_path("global/k");
    let mut blob = fs::read(&path).unwrap();
    blob[4] = 2;
    fs::write(&path, &blob).unwrap();
    sb.run(&["get", "global/k"], b"")
        .fails(1, "unsupported format version 2");
}

#[test]
fn a_damaged_index_file_is_a_clear_error() {
    let sb = Sandbox::new();
    sb.set("global/k", b"v");
    let index = sb.vault_dir().join("index.sqlite3");
    let mut bytes = fs::read(&index).unwrap();
    bytes[..16].copy_from_slice(b"not sqlite at al");
    fs::write(&index, &bytes).unwrap();
    let out = sb.run(&["get", "global/k"], b"").fails(1, "index");
    assert!(out.stderr.contains("not a database"), "{}", out.stderr);
    // An emptied or deleted index with sealed blobs left is lost data, not
    // a fresh vault: reads and writes both refuse, and no write starts a
    // new vault that would orphan every blob.
    let lost = "is missing or empty, but objects/ holds 1 sealed blobs";
    for damage in ["emptied", "deleted"] {
        if damage == "emptied" {
            fs::write(&index, b"").unwrap();
        } else {
            fs::remove_file(&index).unwrap();
        }
        sb.run(&["get", "global/k"], b"").fails(1, lost);
        sb.run(&["set", "global/other"], b"x").fails(1, lost);
        sb.run(&["list"], b"").fails(1, lost);
        assert!(
            !index.exists() || fs::metadata(&index).unwrap().len() == 0,
            "{damage}: a refused command re-initialised the index"
        );
    }
}
