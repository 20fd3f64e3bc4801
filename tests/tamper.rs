//! Sealed blobs cannot be modified, moved between slots, replayed, or opened
//! with another device identity: each fails with a clear error, never with
//! wrong plaintext.

use std::fs;

use sealfs::{Vault, VaultConfig, VaultError, VaultRef};

use crate::util::Sandbox;

fn r(s: &str) -> VaultRef {
    VaultRef::parse(s).unwrap()
}

#[track_caller]
fn assert_integrity_error(vault: &Vault, name: &str) {
    match vault.get(&r(name)) {
        Err(VaultError::Integrity { vault_ref, .. }) => assert_eq!(vault_ref, r(name)),
        Err(e) => panic!("expected an integrity error, got {e}"),
        Ok(_) => panic!("tampered blob of {name} opened"),
    }
}

#[test]
fn flipping_any_single_byte_of_a_blob_fails() {
    let sb = Sandbox::new();
    sb.set("global/k", b"a secret value");
    let path = sb.blob_path("global/k");
    let original = fs::read(&path).unwrap();
    let vault = sb.vault();
    for i in 0..original.len() {
        for mask in [0x01u8, 0x80] {
            let mut bad = original.clone();
            bad[i] ^= mask;
            fs::write(&path, &bad).unwrap();
            assert_integrity_error(&vault, "global/k");
        }
    }
    for len in [0, 1, original.len() / 2, original.len() - 1] {
        fs::write(&path, &original[..len]).unwrap();
        assert_integrity_error(&vault, "global/k");
    }
    fs::write(&path, &original).unwrap();
    assert_eq!(
        vault.get(&r("global/k")).unwrap().expose(),
        b"a secret value"
    );

    // Through the CLI: one line, exit 1, the ref named, no plaintext.
    let mut bad = original.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    fs::write(&path, &bad).unwrap();
    let out = sb
        .run(&["get", "global/k"], b"")
        .fails(1, "integrity check failed for global/k");
    assert_eq!(out.stdout, b"");
    assert_eq!(out.stderr.trim_end().lines().count(), 1, "{}", out.stderr);
}

#[test]
fn swapping_blobs_between_slots_fails() {
    let sb = Sandbox::new();
    sb.set("global/a", b"value of a");
    sb.set("principal:alice/a", b"value of alice");
    let (pa, pb) = (sb.blob_path("global/a"), sb.blob_path("principal:alice/a"));
    let (a, b) = (fs::read(&pa).unwrap(), fs::read(&pb).unwrap());
    fs::write(&pa, &b).unwrap();
    fs::write(&pb, &a).unwrap();
    let vault = sb.vault();
    assert_integrity_error(&vault, "global/a");
    assert_integrity_error(&vault, "principal:alice/a");
    sb.run(&["get", "global/a"], b"")
        .fails(1, "authentication failed");
}

#[test]
fn replaying_an_older_blob_fails() {
    let sb = Sandbox::new();
    sb.set("global/k", b"old value");
    let old = fs::read(sb.blob_path("global/k")).unwrap();
    sb.set("global/k", b"new value");
    fs::write(sb.blob_path("global/k"), &old).unwrap();
    assert_integrity_error(&sb.vault(), "global/k");
    sb.run(&["get", "global/k"], b"")
        .fails(1, "stale or replayed");

    // Nor does a blob from before a delete come back into a re-created slot.
    let sb = Sandbox::new();
    sb.set("global/k", b"before delete");
    let old = fs::read(sb.blob_path("global/k")).unwrap();
    sb.run(&["delete", "global/k"], b"").ok();
    sb.set("global/k", b"after");
    fs::write(sb.blob_path("global/k"), &old).unwrap();
    assert_integrity_error(&sb.vault(), "global/k");
}

#[test]
fn another_device_identity_cannot_open_the_vault() {
    let sb = Sandbox::new();
    sb.set("global/k", b"v");
    // A second vault makes a second identity.
    let other = Sandbox::new();
    other.set("global/k", b"w");
    let config = VaultConfig {
        identity_dir: Some(other.identity_dir()),
        ..VaultConfig::new(sb.vault_dir())
    };
    match Vault::open(config) {
        Err(VaultError::WrongIdentity { .. }) => {}
        Err(e) => panic!("expected WrongIdentity, got {e}"),
        Ok(_) => panic!("opened with another identity"),
    }
    let dir = other.identity_dir();
    sb.run(
        &["--identity-dir", dir.to_str().unwrap(), "get", "global/k"],
        b"",
    )
    .fails(1, "does not belong to the vault");
    // The same through the environment variable.
    let out = sb
        .cmd(&["get", "global/k"])
        .env("SEALFS_IDENTITY_DIR", &dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(out.stdout, b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{} does not belong to the vault", dir.display())),
        "{stderr}"
    );
}

#[test]
fn a_missing_identity_is_an_error_not_a_new_identity() {
    let sb = Sandbox::new();
    sb.set("global/k", b"v");
    let key = sb.identity_dir().join("device.key");
    let saved = fs::read(&key).unwrap();
    fs::remove_file(&key).unwrap();
    sb.run(&["get", "global/k"], b"")
        .fails(1, "device identity not found");
    sb.run(&["set", "global/x"], b"v")
        .fails(1, "device identity not found");
    assert!(
        !key.exists(),
        "a new identity must not replace the lost one"
    );
    fs::write(&key, &saved).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    sb.run(&["get", "global/k"], b"")
        .fails(1, "accessible by other users");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(sb.get("global/k"), b"v");
    fs::write(&key, &saved[..31]).unwrap();
    sb.run(&["get", "global/k"], b"").fails(1, "corrupt");
}

#[test]
fn the_vault_directory_alone_does_not_carry_its_key() {
    let sb = Sandbox::new();
    sb.set("global/k", b"v");
    let copy = Sandbox::new();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(sb.vault_dir())
        .arg(copy.vault_dir())
        .status()
        .unwrap();
    assert!(status.success());
    copy.run(&["get", "global/k"], b"")
        .fails(1, "device identity not found");
}
