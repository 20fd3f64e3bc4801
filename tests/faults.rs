//! Faults injected at each step of a put and a delete: reopening gives the
//! old state or the new one, never a mix, and no blob or temp file is left.

use sealfs::{FaultPoint, SensitiveBytes, Vault, VaultConfig, VaultError, VaultRef};

use crate::util::{assert_no_leftovers, assert_only_referenced, Sandbox};

fn r(s: &str) -> VaultRef {
    VaultRef::parse(s).unwrap()
}

fn open(sb: &Sandbox) -> Vault {
    Vault::open(VaultConfig::new(sb.vault_dir())).unwrap()
}

fn faulty(sb: &Sandbox, at: FaultPoint) -> Vault {
    let mut v = open(sb);
    v.set_fault_hook(move |p| p == at);
    v
}

#[test]
fn a_put_stopped_at_any_step_leaves_old_or_new() {
    for (at, committed) in [
        (FaultPoint::PutAfterPending, false),
        (FaultPoint::PutAfterBlob, false),
        (FaultPoint::PutAfterCommit, true),
    ] {
        for existing in [false, true] {
            let sb = Sandbox::new();
            let vault = open(&sb);
            vault
                .put(&r("global/other"), SensitiveBytes::from_slice(b"untouched"))
                .unwrap();
            if existing {
                vault
                    .put(&r("global/k"), SensitiveBytes::from_slice(b"old"))
                    .unwrap();
            }
            drop(vault);
            let err = faulty(&sb, at)
                .put(&r("global/k"), SensitiveBytes::from_slice(b"new"))
                .unwrap_err();
            assert!(matches!(err, VaultError::Fault(p) if p == at));
            // Reopening sweeps what the stopped writer left.
            let vault = open(&sb);
            let got = vault.get(&r("global/k"));
            match (committed, existing) {
                (true, _) => assert_eq!(got.unwrap().expose(), b"new", "{at:?}"),
                (false, true) => assert_eq!(got.unwrap().expose(), b"old", "{at:?}"),
                (false, false) => assert!(matches!(got, Err(VaultError::NotFound(_))), "{at:?}"),
            }
            assert_eq!(
                vault.get(&r("global/other")).unwrap().expose(),
                b"untouched"
            );
            // The live values, and "old" kept as a version once replaced.
            let kept = usize::from(committed && existing);
            assert_no_leftovers(&sb, vault.list(None).unwrap().len() + kept);
            assert_only_referenced(&sb);
            // And the vault takes writes again.
            vault
                .put(&r("global/k"), SensitiveBytes::from_slice(b"after"))
                .unwrap();
            assert_eq!(vault.get(&r("global/k")).unwrap().expose(), b"after");
        }
    }
}

#[test]
fn a_delete_stopped_after_its_commit_is_a_delete() {
    let sb = Sandbox::new();
    let vault = open(&sb);
    vault
        .put(&r("global/k"), SensitiveBytes::from_slice(b"v"))
        .unwrap();
    drop(vault);
    let err = faulty(&sb, FaultPoint::DeleteAfterCommit)
        .delete(&r("global/k"))
        .unwrap_err();
    assert!(matches!(err, VaultError::Fault(_)));
    let vault = open(&sb);
    assert!(matches!(
        vault.get(&r("global/k")),
        Err(VaultError::NotFound(_))
    ));
    // Its value is kept as its last version.
    assert_no_leftovers(&sb, 1);
    assert_only_referenced(&sb);
    vault.purge(&r("global/k")).unwrap();
    assert_no_leftovers(&sb, 0);
}

/// What a writer that died inside the blob write leaves (a pending id and a
/// temp file) is swept by the next open, and by the next write of a vault
/// that was already open when the writer died.
#[test]
fn a_dead_writers_temp_file_is_swept_on_open_and_by_the_next_writer() {
    let leave_a_dead_write = |sb: &Sandbox| {
        let _ = faulty(sb, FaultPoint::PutAfterPending)
            .put(&r("global/k"), SensitiveBytes::from_slice(b"w"));
        std::fs::write(
            sb.vault_dir().join("tmp").join(".sealfs-dead.tmp"),
            b"partial",
        )
        .unwrap();
    };
    // Swept on open.
    let sb = Sandbox::new();
    let vault = open(&sb);
    vault
        .put(&r("global/k"), SensitiveBytes::from_slice(b"v"))
        .unwrap();
    drop(vault);
    leave_a_dead_write(&sb);
    let vault = open(&sb);
    assert_eq!(vault.get(&r("global/k")).unwrap().expose(), b"v");
    assert_no_leftovers(&sb, 1);
    // Swept by a writer whose vault was open all along.
    let sb = Sandbox::new();
    let vault = open(&sb);
    vault
        .put(&r("global/k"), SensitiveBytes::from_slice(b"v"))
        .unwrap();
    leave_a_dead_write(&sb);
    assert!(
        std::fs::read_dir(sb.vault_dir().join("tmp"))
            .unwrap()
            .count()
            > 0,
        "the dead write left nothing to sweep"
    );
    vault
        .put(&r("global/other"), SensitiveBytes::from_slice(b"o"))
        .unwrap();
    assert_eq!(vault.get(&r("global/k")).unwrap().expose(), b"v");
    assert_no_leftovers(&sb, 2);
}

/// The vault directory on a tiny file system: a put that does not fit fails
/// with a clear error and every earlier value stays readable.
#[test]
fn a_full_disk_fails_the_put_and_keeps_earlier_values() {
    if !crate::util::have_root("mounting a small tmpfs") {
        return;
    }
    let sb = Sandbox::new();
    let small = sb.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=400k,mode=0700", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(mounted.success());
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _guard = Unmount(small.clone());
    let vault = Vault::open(VaultConfig::new(small.join("vault"))).unwrap();
    let mut stored = Vec::new();
    let err = loop {
        let i = stored.len();
        let v = vec![b'a' + (i % 26) as u8; 30_000];
        match vault.put(&r(&format!("global/k{i}")), SensitiveBytes::from_slice(&v)) {
            Ok(_) => stored.push(v),
            Err(e) => break e,
        }
        assert!(i < 100, "400 KiB never filled up");
    };
    let msg = format!("{:#}", anyhow::Error::from(err));
    assert!(
        msg.contains("full") || msg.contains("No space left"),
        "{msg}"
    );
    assert!(stored.len() >= 3, "only {} fit", stored.len());
    drop(vault);
    let vault = Vault::open(VaultConfig::new(small.join("vault"))).unwrap();
    for (i, v) in stored.iter().enumerate() {
        assert_eq!(
            vault.get(&r(&format!("global/k{i}"))).unwrap().expose(),
            v.as_slice()
        );
    }
    // With room again, the same vault works on.
    let grown = std::process::Command::new("mount")
        .args(["-o", "remount,size=2m"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(grown.success());
    vault
        .put(&r("global/again"), SensitiveBytes::from_slice(b"fits"))
        .unwrap();
    vault.delete(&r("global/k0")).unwrap();
    assert_eq!(vault.get(&r("global/again")).unwrap().expose(), b"fits");
    eprintln!("disk full after {} puts: {msg}", stored.len());
}
