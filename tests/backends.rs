//! One vault behaviour suite, run against every backend this machine has:
//! the embedded encrypted-file store, and the Secret Service of a real
//! gnome-keyring in a private D-Bus session. Plus what is specific to
//! keystores: automatic selection, timeouts, migration both ways.

use std::time::{Duration, Instant};

use sealfs::backend::{self, BackendContext, BackendOptions, BlobBackend};
use sealfs::{
    BackendKind, BackendPreference, IdentityStore, MigrateStage, SensitiveBytes, Vault,
    VaultConfig, VaultError, VaultRef,
};

use crate::util::{Keyring, Sandbox};

/// A backend to run the suite against, with what it needs running.
enum Fixture {
    EncryptedFile,
    SecretService(Keyring),
}

impl Fixture {
    fn kind(&self) -> BackendKind {
        match self {
            Fixture::EncryptedFile => BackendKind::EncryptedFile,
            Fixture::SecretService(_) => BackendKind::SecretService,
        }
    }

    fn options(&self) -> BackendOptions {
        BackendOptions {
            timeout: Duration::from_secs(10),
            session_bus: match self {
                Fixture::SecretService(k) => Some(k.address().to_owned()),
                Fixture::EncryptedFile => None,
            },
        }
    }

    fn config(&self, sb: &Sandbox) -> VaultConfig {
        VaultConfig {
            backend: BackendPreference::Explicit(self.kind()),
            backend_options: self.options(),
            ..VaultConfig::new(sb.vault_dir())
        }
    }

    /// The backend itself, for tampering with what it stores.
    fn raw(&self, sb: &Sandbox) -> Box<dyn BlobBackend> {
        let conn = rusqlite::Connection::open(sb.vault_dir().join("index.sqlite3")).unwrap();
        let vault_id: String = conn
            .query_row("SELECT value FROM meta WHERE name = 'vault_id'", [], |r| {
                r.get(0)
            })
            .unwrap();
        let ctx = BackendContext {
            vault_dir: sb.vault_dir(),
            vault_id,
            options: self.options(),
            vault_handle: None,
        };
        backend::build(self.kind(), &ctx).unwrap()
    }
}

fn object_id(vault: &Vault, r: &str) -> sealfs::ObjectId {
    vault
        .blob_id(&self::r(r))
        .unwrap()
        .expect("secret is in the index")
}

fn r(s: &str) -> VaultRef {
    VaultRef::parse(s).unwrap()
}

fn value(v: &[u8]) -> SensitiveBytes {
    SensitiveBytes::from_slice(v)
}

// ---- the shared suite -------------------------------------------------

fn round_trip(f: &Fixture) {
    let sb = Sandbox::new();
    let vault = Vault::open(f.config(&sb)).unwrap();
    assert_eq!(vault.backend_choice().kind, f.kind());
    let all: Vec<u8> = (0..=255).collect();
    for (name, v) in [
        ("global/bin", &all[..]),
        ("principal:a/multi", b"x\ny\n"),
        ("session:s/one", b"1"),
    ] {
        vault.put(&r(name), value(v)).unwrap();
        assert_eq!(vault.get(&r(name)).unwrap().expose(), v, "{name}");
    }
    vault.put(&r("global/bin"), value(b"replaced")).unwrap();
    assert_eq!(vault.get(&r("global/bin")).unwrap().expose(), b"replaced");
    // Reopening finds everything (and the identity, wherever it is kept).
    drop(vault);
    let vault = Vault::open(f.config(&sb)).unwrap();
    assert_eq!(
        vault.get(&r("principal:a/multi")).unwrap().expose(),
        b"x\ny\n"
    );
}

fn list_and_delete(f: &Fixture) {
    let sb = Sandbox::new();
    let vault = Vault::open(f.config(&sb)).unwrap();
    for name in ["global/b", "global/a", "session:s/c"] {
        vault.put(&r(name), value(b"v")).unwrap();
    }
    let names: Vec<String> = vault
        .list(None)
        .unwrap()
        .iter()
        .map(|e| e.vault_ref.to_string())
        .collect();
    assert_eq!(names, ["global/a", "global/b", "session:s/c"]);
    vault.delete(&r("global/a")).unwrap();
    assert!(matches!(
        vault.get(&r("global/a")),
        Err(VaultError::NotFound(_))
    ));
    assert!(matches!(
        vault.delete(&r("global/a")),
        Err(VaultError::NotFound(_))
    ));
    assert_eq!(
        vault.list(Some(&"global".parse().unwrap())).unwrap().len(),
        1
    );
    // The deleted blob is kept as the secret's last version, and a purge
    // removes it from the backend too.
    let raw = f.raw(&sb);
    vault.put(&r("global/z"), value(b"v")).unwrap();
    let id = object_id(&vault, "global/z");
    vault.delete(&r("global/z")).unwrap();
    assert!(raw.get_blob(&id).is_ok());
    vault.purge(&r("global/z")).unwrap();
    assert!(matches!(
        raw.get_blob(&id),
        Err(sealfs::BackendError::NotFound(_))
    ));
}

fn tamper_detection(f: &Fixture) {
    let sb = Sandbox::new();
    let vault = Vault::open(f.config(&sb)).unwrap();
    vault.put(&r("global/a"), value(b"value a")).unwrap();
    vault.put(&r("global/b"), value(b"value b")).unwrap();
    let raw = f.raw(&sb);
    let (ia, ib) = (object_id(&vault, "global/a"), object_id(&vault, "global/b"));
    let a = raw.get_blob(&ia).unwrap();
    let b = raw.get_blob(&ib).unwrap();
    for i in [0, 5, 13, 21, 30, a.len() / 2, a.len() - 1] {
        let mut bad = a.clone();
        bad[i] ^= 0x40;
        raw.put_blob(&ia, &bad).unwrap();
        assert!(
            matches!(vault.get(&r("global/a")), Err(VaultError::Integrity { .. })),
            "byte {i}"
        );
    }
    // Swapped between slots.
    raw.put_blob(&ia, &b).unwrap();
    raw.put_blob(&ib, &a).unwrap();
    assert!(matches!(
        vault.get(&r("global/a")),
        Err(VaultError::Integrity { .. })
    ));
    assert!(matches!(
        vault.get(&r("global/b")),
        Err(VaultError::Integrity { .. })
    ));
    raw.put_blob(&ia, &a).unwrap();
    // Replayed: an older version into the slot.
    vault.put(&r("global/a"), value(b"newer")).unwrap();
    raw.put_blob(&object_id(&vault, "global/a"), &a).unwrap();
    assert!(matches!(
        vault.get(&r("global/a")),
        Err(VaultError::Integrity { .. })
    ));
}

fn size_limit(f: &Fixture) {
    let sb = Sandbox::new();
    let vault = Vault::open(VaultConfig {
        max_value_size: 1000,
        ..f.config(&sb)
    })
    .unwrap();
    vault.put(&r("global/at"), value(&[7; 1000])).unwrap();
    assert!(matches!(
        vault.put(&r("global/over"), value(&[7; 1001])),
        Err(VaultError::TooLarge { .. })
    ));
    assert!(matches!(
        vault.put(&r("global/empty"), value(b"")),
        Err(VaultError::EmptyValue(_))
    ));
    assert_eq!(vault.list(None).unwrap().len(), 1);
}

fn concurrency(f: &Fixture) {
    let sb = Sandbox::new();
    drop(Vault::open(f.config(&sb)).unwrap());
    std::thread::scope(|s| {
        for w in 0..8 {
            let (sb, f) = (&sb, f);
            s.spawn(move || {
                // Each writer has its own vault handle, as separate processes would.
                let vault = Vault::open(f.config(sb)).unwrap();
                for k in 0..10 {
                    vault
                        .put(
                            &r(&format!("principal:w{w}/k{k}")),
                            value(format!("{w}-{k}").as_bytes()),
                        )
                        .unwrap();
                    vault
                        .put(&r("global/hot"), value(format!("hot {w} {k}").as_bytes()))
                        .unwrap();
                }
            });
        }
    });
    let vault = Vault::open(f.config(&sb)).unwrap();
    assert_eq!(vault.list(None).unwrap().len(), 81);
    for w in 0..8 {
        for k in 0..10 {
            let got = vault.get(&r(&format!("principal:w{w}/k{k}"))).unwrap();
            assert_eq!(got.expose(), format!("{w}-{k}").as_bytes());
        }
    }
    assert_eq!(vault.entry(&r("global/hot")).unwrap().unwrap().version, 80);
    assert!(vault
        .get(&r("global/hot"))
        .unwrap()
        .expose()
        .starts_with(b"hot "));
}

macro_rules! suite {
    ($backend:ident, $fixture:expr) => {
        mod $backend {
            use super::*;

            fn fixture() -> Option<Fixture> {
                $fixture
            }

            #[test]
            fn round_trip() {
                if let Some(f) = fixture() {
                    super::round_trip(&f);
                }
            }

            #[test]
            fn list_and_delete() {
                if let Some(f) = fixture() {
                    super::list_and_delete(&f);
                }
            }

            #[test]
            fn tamper_detection() {
                if let Some(f) = fixture() {
                    super::tamper_detection(&f);
                }
            }

            #[test]
            fn size_limit() {
                if let Some(f) = fixture() {
                    super::size_limit(&f);
                }
            }

            #[test]
            fn concurrency() {
                if let Some(f) = fixture() {
                    super::concurrency(&f);
                }
            }
        }
    };
}

suite!(encrypted_file, Some(Fixture::EncryptedFile));
suite!(secret_service, Keyring::start().map(Fixture::SecretService));

// ---- keystore specifics ----------------------------------------------

#[test]
fn secret_service_keeps_the_identity_and_blobs_out_of_the_vault_directory() {
    let Some(k) = Keyring::start() else { return };
    let f = Fixture::SecretService(k);
    let sb = Sandbox::new();
    let vault = Vault::open(f.config(&sb)).unwrap();
    vault.put(&r("global/k"), value(b"in the keyring")).unwrap();
    assert_eq!(vault.identity_store(), IdentityStore::Backend);
    assert!(
        !sb.identity_dir().exists(),
        "no identity file with a keystore"
    );
    assert!(!sb.vault_dir().join("objects").exists());
    // The item is labelled with the product only, never the secret's name.
    let Fixture::SecretService(k) = &f else {
        unreachable!()
    };
    let out = std::process::Command::new("secret-tool")
        .args(["search", "--all", "application", "sealfs"])
        .env("DBUS_SESSION_BUS_ADDRESS", k.address())
        .output()
        .unwrap();
    let listing =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(listing.contains("sealfs sealed secret"), "{listing}");
    assert!(
        !listing.contains("global/k") && !listing.contains("in the keyring"),
        "{listing}"
    );
    // Threat model: the vault and identity directories together are not
    // enough. A copy of both, opened where that keyring does not answer,
    // gives an error and no value, whichever backend is asked for.
    drop(vault);
    let copy = Sandbox::new();
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(sb.vault_dir())
        .arg(copy.path())
        .status()
        .unwrap();
    assert!(cp.success());
    if sb.identity_dir().exists() {
        let cp = std::process::Command::new("cp")
            .arg("-a")
            .arg(sb.identity_dir())
            .arg(copy.path())
            .status()
            .unwrap();
        assert!(cp.success());
    }
    let elsewhere = BackendOptions {
        timeout: Duration::from_secs(2),
        session_bus: Some("unix:path=/nonexistent/bus".to_owned()),
    };
    for backend in [
        BackendPreference::Auto,
        BackendPreference::Explicit(BackendKind::SecretService),
    ] {
        let err = Vault::open(VaultConfig {
            backend,
            backend_options: elsewhere.clone(),
            ..VaultConfig::new(copy.vault_dir())
        })
        .err()
        .expect("a copy of the directories opened without the keyring");
        let msg = err.to_string();
        assert!(
            msg.contains("secret-service backend is unavailable"),
            "{backend:?}: {msg}"
        );
    }
    let err = Vault::open(VaultConfig {
        backend: BackendPreference::Explicit(BackendKind::EncryptedFile),
        ..VaultConfig::new(copy.vault_dir())
    })
    .err()
    .expect("the copy opened as an encrypted-file vault");
    assert!(
        err.to_string().contains("uses backend `secret-service`"),
        "{err}"
    );
    // And the CLI says the same in one line, printing nothing.
    let out = copy
        .cmd(&["get", "global/k"])
        .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .env("SEALFS_KEYSTORE_TIMEOUT", "2")
        .env("SEALFS_BACKEND", "auto")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("secret-service backend is unavailable"),
        "{stderr}"
    );
}

#[test]
fn auto_picks_the_secret_service_when_it_answers_and_says_why() {
    let Some(k) = Keyring::start() else { return };
    let sb = Sandbox::new();
    let vault = Vault::open(VaultConfig {
        backend_options: BackendOptions {
            timeout: Duration::from_secs(10),
            session_bus: Some(k.address().to_owned()),
        },
        ..VaultConfig::new(sb.vault_dir())
    })
    .unwrap();
    let choice = vault.backend_choice();
    assert_eq!(choice.kind, BackendKind::SecretService);
    assert!(
        choice.reason.contains("answered a probe"),
        "{}",
        choice.reason
    );
    drop(vault);
    // doctor, through the CLI on the same bus.
    let out = sb
        .cmd(&["doctor"])
        .env_remove("SEALFS_BACKEND")
        .env("DBUS_SESSION_BUS_ADDRESS", k.address())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("probe: secret-service: stored, read back and deleted"),
        "{text}"
    );
    assert!(
        text.contains(
            "backend: secret-service: recorded in the vault: auto: secret-service answered a probe"
        ),
        "{text}"
    );
    assert!(
        text.contains("identity: in the secret-service store"),
        "{text}"
    );
    // And the CLI reads it back on that bus.
    let out = sb
        .cmd(&["get", "global/nothing"])
        .env_remove("SEALFS_BACKEND")
        .env("DBUS_SESSION_BUS_ADDRESS", k.address())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("secret not found"));
}

#[test]
fn auto_falls_back_to_encrypted_file_without_a_session_bus_and_says_why() {
    let sb = Sandbox::new();
    let no_bus = "unix:path=/nonexistent/sealfs-test-bus";
    let vault = Vault::open(VaultConfig {
        backend_options: BackendOptions {
            timeout: Duration::from_secs(5),
            session_bus: Some(no_bus.into()),
        },
        ..VaultConfig::new(sb.vault_dir())
    })
    .unwrap();
    let choice = vault.backend_choice();
    assert_eq!(choice.kind, BackendKind::EncryptedFile);
    assert!(
        choice.reason.contains("secret-service is not usable"),
        "{}",
        choice.reason
    );
    assert_eq!(vault.identity_store(), IdentityStore::File);
    let out = sb
        .cmd(&["doctor"])
        .env_remove("SEALFS_BACKEND")
        .env("DBUS_SESSION_BUS_ADDRESS", no_bus)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("probe: secret-service: not usable"), "{text}");
    assert!(
        text.contains(
            "backend: encrypted-file: recorded in the vault: auto: secret-service is not usable"
        ),
        "{text}"
    );
    assert!(text.contains("identity: in the owner-only file"), "{text}");
}

#[test]
fn an_unresponsive_secret_service_is_a_clear_error_within_the_timeout() {
    let Some(k) = Keyring::start() else { return };
    let sb = Sandbox::new();
    let config = VaultConfig {
        backend: BackendPreference::Explicit(BackendKind::SecretService),
        backend_options: BackendOptions {
            timeout: Duration::from_millis(1500),
            session_bus: Some(k.address().to_owned()),
        },
        ..VaultConfig::new(sb.vault_dir())
    };
    let vault = Vault::open(config.clone()).unwrap();
    vault.put(&r("global/k"), value(b"v")).unwrap();
    k.freeze(true);
    for op in ["get", "put"] {
        let started = Instant::now();
        let err = match op {
            "get" => vault.get(&r("global/k")).map(drop).unwrap_err(),
            _ => vault
                .put(&r("global/k2"), value(b"w"))
                .map(drop)
                .unwrap_err(),
        };
        let took = started.elapsed();
        // It waited for the limit (the error is the timeout, not an early
        // failure of another kind), and not much longer.
        assert!(
            took >= Duration::from_millis(1400) && took < Duration::from_millis(2500),
            "{op} took {took:?} for a 1.5 s limit"
        );
        let msg = format!("{:#}", anyhow::Error::from(err));
        assert!(msg.contains("did not answer within"), "{op}: {msg}");
    }
    // The CLI too: one line, nothing on stdout, within the limit it was given.
    let started = Instant::now();
    let out = std::process::Command::new(crate::util::BIN)
        .args([
            "--backend",
            "secret-service",
            "--keystore-timeout",
            "1.5",
            "get",
            "global/k",
        ])
        .env("SEALFS_VAULT_DIR", sb.vault_dir())
        .env("DBUS_SESSION_BUS_ADDRESS", k.address())
        .output()
        .unwrap();
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("did not answer within"), "{stderr}");
    assert!(took < Duration::from_millis(4000), "the CLI took {took:?}");
    k.freeze(false);
    // Once it answers again, so does the vault.
    assert_eq!(vault.get(&r("global/k")).unwrap().expose(), b"v");
    assert!(matches!(
        vault.get(&r("global/k2")),
        Err(VaultError::NotFound(_))
    ));
}

#[test]
fn a_locked_collection_is_a_clear_error() {
    let Some(k) = Keyring::start() else { return };
    let sb = Sandbox::new();
    let f = Fixture::SecretService(k);
    let vault = Vault::open(f.config(&sb)).unwrap();
    vault.put(&r("global/k"), value(b"v")).unwrap();
    let Fixture::SecretService(k) = &f else {
        unreachable!()
    };
    let locked = std::process::Command::new("dbus-send")
        .args([
            "--session",
            "--print-reply",
            "--dest=org.freedesktop.secrets",
            "/org/freedesktop/secrets",
            "org.freedesktop.Secret.Service.Lock",
            "array:objpath:/org/freedesktop/secrets/collection/login",
        ])
        .env("DBUS_SESSION_BUS_ADDRESS", k.address())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(locked.success());
    let started = Instant::now();
    let err = vault.get(&r("global/k")).map(drop).unwrap_err();
    let msg = format!("{:#}", anyhow::Error::from(err));
    assert!(msg.contains("secret-service backend is locked"), "{msg}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no prompt is waited for"
    );
    let err = vault
        .put(&r("global/k3"), value(b"v"))
        .map(drop)
        .unwrap_err();
    let msg = format!("{:#}", anyhow::Error::from(err));
    assert!(msg.contains("secret-service backend is locked"), "{msg}");
}

/// Fills a vault, migrates it to `to` with an interruption at `stop`, checks
/// nothing was lost, re-runs, and checks everything moved.
fn migrate_interrupted(from: &Fixture, to: &Fixture, stop: MigrateStage) {
    let sb = Sandbox::new();
    let options = from.options().session_bus.or(to.options().session_bus);
    let config = VaultConfig {
        backend_options: BackendOptions {
            timeout: Duration::from_secs(10),
            session_bus: options,
        },
        ..from.config(&sb)
    };
    let vault = Vault::open(config.clone()).unwrap();
    let names: Vec<String> = (0..5).map(|i| format!("global/k{i}")).collect();
    for n in &names {
        vault.put(&r(n), value(n.as_bytes())).unwrap();
    }
    let old_ids: Vec<_> = names.iter().map(|n| object_id(&vault, n)).collect();
    drop(vault);
    let any = VaultConfig {
        backend: BackendPreference::Auto,
        ..config.clone()
    };
    let err = Vault::migrate_with(any.clone(), to.kind(), |stage| {
        if stage == stop {
            Err(VaultError::Interrupted("test"))
        } else {
            Ok(())
        }
    })
    .unwrap_err();
    assert!(matches!(err, VaultError::Interrupted(_)));
    // Interrupted: every value still readable, through whichever backend is current.
    let vault = Vault::open(any.clone()).unwrap();
    for n in &names {
        assert_eq!(
            vault.get(&r(n)).unwrap().expose(),
            n.as_bytes(),
            "{n} after interruption at {stop:?}"
        );
    }
    drop(vault);
    let report = Vault::migrate(any.clone(), to.kind()).unwrap();
    assert!(report.resumed);
    let vault = Vault::open(any).unwrap();
    assert_eq!(vault.backend_choice().kind, to.kind());
    for n in &names {
        assert_eq!(vault.get(&r(n)).unwrap().expose(), n.as_bytes());
    }
    assert_eq!(
        vault.identity_store(),
        if to.kind().is_platform_store() {
            IdentityStore::Backend
        } else {
            IdentityStore::File
        }
    );
    // Nothing is left in the old backend.
    let raw_old = {
        let conn = rusqlite::Connection::open(sb.vault_dir().join("index.sqlite3")).unwrap();
        let vault_id: String = conn
            .query_row("SELECT value FROM meta WHERE name = 'vault_id'", [], |r| {
                r.get(0)
            })
            .unwrap();
        backend::build(
            from.kind(),
            &BackendContext {
                vault_dir: sb.vault_dir(),
                vault_id,
                options: config.backend_options.clone(),
                vault_handle: None,
            },
        )
        .unwrap()
    };
    for id in old_ids {
        assert!(matches!(
            raw_old.get_blob(&id),
            Err(sealfs::BackendError::NotFound(_))
        ));
    }
    // Writing after the move goes to the new backend.
    vault.put(&r("global/after"), value(b"x")).unwrap();
    assert_eq!(vault.get(&r("global/after")).unwrap().expose(), b"x");
}

#[test]
fn migrate_between_encrypted_file_and_secret_service_both_ways_with_interruptions() {
    let Some(k) = Keyring::start() else { return };
    let ss = Fixture::SecretService(k);
    let file = Fixture::EncryptedFile;
    migrate_interrupted(&file, &ss, MigrateStage::Copied(2));
    migrate_interrupted(&file, &ss, MigrateStage::Committed);
    migrate_interrupted(&ss, &file, MigrateStage::Copied(3));
    migrate_interrupted(&ss, &file, MigrateStage::Deleted(1));
}

#[test]
fn migrate_through_the_cli() {
    let Some(k) = Keyring::start() else { return };
    let sb = Sandbox::new();
    sb.set("global/a", b"alpha");
    let run = |args: &[&str]| {
        let out = sb
            .cmd(args)
            .env_remove("SEALFS_BACKEND")
            .env("DBUS_SESSION_BUS_ADDRESS", k.address())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, err) = run(&["migrate", "--to", "secret-service"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("moved 1 secret(s) from encrypted-file to secret-service"),
        "{err}"
    );
    let (_, out, _) = run(&["get", "global/a"]);
    assert_eq!(out, "alpha");
    // Naming the old backend explicitly is now a conflict, not a silent switch.
    let (code, _, err) = run(&["--backend", "encrypted-file", "get", "global/a"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("uses backend `secret-service`, but `encrypted-file` was requested"),
        "{err}"
    );
    let (code, _, err) = run(&["migrate", "--to", "secret-service"]);
    assert_eq!(code, Some(0));
    assert!(err.contains("nothing to migrate"), "{err}");
    let (code, _, err) = run(&["migrate", "--to", "keychain"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("not supported on this platform"), "{err}");
    let (_, out, _) = run(&["get", "global/a"]);
    assert_eq!(out, "alpha", "a failed migration changes nothing");
}

/// Review finding M1 of format 2: a copy of the vault directory taken in
/// the middle of a migration from the encrypted-file store to a keystore
/// (its index still names the old backend, every blob is there) is put
/// back after the migration. The file anchor the old backend used has
/// moved past that copy, so it is refused as a rollback instead of
/// reopening the old vault with its old values.
#[test]
fn a_copy_from_inside_a_migration_to_a_keystore_is_refused_after_it() {
    let Some(k) = Keyring::start() else { return };
    let ss = Fixture::SecretService(k);
    let sb = Sandbox::new();
    let config = VaultConfig {
        backend: BackendPreference::Auto,
        backend_options: ss.options(),
        ..VaultConfig::new(sb.vault_dir())
    };
    let vault = Vault::open(VaultConfig {
        backend: BackendPreference::Explicit(BackendKind::EncryptedFile),
        ..config.clone()
    })
    .unwrap();
    vault.put(&r("global/a"), value(b"value-old")).unwrap();
    drop(vault);
    let copy = sb.path().join("copy");
    let (dir, to) = (sb.vault_dir(), copy.clone());
    Vault::migrate_with(config.clone(), BackendKind::SecretService, |stage| {
        if stage == MigrateStage::Copied(1) {
            assert!(std::process::Command::new("cp")
                .arg("-a")
                .arg(&dir)
                .arg(&to)
                .status()
                .unwrap()
                .success());
            for f in ["index.sqlite3", "index.sqlite3-wal", "index.sqlite3-shm"] {
                let _ = std::fs::remove_file(to.join(f));
            }
            rusqlite::Connection::open(dir.join("index.sqlite3"))
                .unwrap()
                .execute(
                    "VACUUM INTO ?1",
                    [to.join("index.sqlite3").to_str().unwrap()],
                )
                .unwrap();
        }
        Ok(())
    })
    .unwrap();
    let vault = Vault::open(config.clone()).unwrap();
    vault.put(&r("global/a"), value(b"value-new")).unwrap();
    drop(vault);

    std::fs::remove_dir_all(sb.vault_dir()).unwrap();
    std::fs::rename(&copy, sb.vault_dir()).unwrap();
    let err = Vault::open(config)
        .and_then(|v| v.get(&r("global/a")))
        .map(|v| v.expose().to_vec())
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("vault rolled back:"), "{err}");
}
