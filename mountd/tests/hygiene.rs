//! Secret hygiene, checked from outside: another local user gets nothing
//! without a grant, and no test secret's bytes end up anywhere but sealed
//! blobs: not in the vault or identity directory, the audit log, the
//! daemon's log, or `Debug` output.

use std::path::Path;

use crate::util::{sh, sh_as, Mounted};

const STRANGER: u32 = 1301;

#[test]
fn another_local_user_cannot_read_the_vault_identity_audit_log_or_mount() {
    let Some(m) = Mounted::start(&[]) else { return };
    m.set("global/db_password", b"hunter2-marker");
    m.set(&format!("principal:{}/own", STRANGER + 1), b"not-yours");
    sh(&format!(
        "cat {} > /dev/null",
        m.path("global/db_password").display()
    ))
    .ok();
    let vault = m.vault_dir();
    let identity = m.root.path().join("identity");
    for target in [
        vault.join("index.sqlite3"),
        vault.join("audit.log"),
        identity.join("device.key"),
    ] {
        sh_as(STRANGER, &format!("cat {}", target.display())).fails_with("Permission denied");
    }
    sh_as(STRANGER, &format!("ls {}", vault.display())).fails_with("Permission denied");
    sh_as(STRANGER, &format!("ls {}", identity.display())).fails_with("Permission denied");
    let blob = sh(&format!(
        "find {}/objects -type f | head -1",
        vault.display()
    ))
    .ok()
    .text();
    sh_as(STRANGER, &format!("cat {}", blob.trim())).fails_with("Permission denied");
    // Through the mount: invisible, unreadable, unwritable.
    sh_as(
        STRANGER,
        &format!("cat {}", m.path("global/db_password").display()),
    )
    .fails_with("No such file");
    sh_as(
        STRANGER,
        &format!(
            "cat {}",
            m.path(&format!("principal/{}/own", STRANGER + 1)).display()
        ),
    )
    .fails_with("No such file");
    let seen = sh_as(STRANGER, &format!("ls -R {} 2>&1; true", m.mnt.display()))
        .ok()
        .text();
    assert!(
        !seen.contains("db_password") && !seen.contains("own"),
        "{seen}"
    );
    sh_as(
        STRANGER,
        &format!("printf x > {}", m.path("global/new").display()),
    )
    .fails_with("nonexistent");
    assert!(
        m.audit_events()
            .iter()
            .any(|e| e["uid"] == STRANGER && e["outcome"] == "denied"),
        "the stranger's attempts are audited"
    );
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn scan_tree(root: &Path, needles: &[&[u8]]) {
    let mut stack = vec![root.to_owned()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if p.is_file() {
            let bytes = std::fs::read(&p).unwrap();
            for n in needles {
                assert!(
                    !contains(&bytes, n),
                    "a secret's bytes are in {}",
                    p.display()
                );
            }
        }
    }
}

#[test]
fn no_secret_reaches_any_file_log_or_debug_output() {
    let Some(mut m) = Mounted::start(&["-vv"]) else {
        return;
    };
    let values: [&[u8]; 4] = [
        b"MARKER-cli-set-91c2",
        b"MARKER-mount-write-5e7a",
        b"MARKER-once-33f0",
        b"MARKER-moved-8d11",
    ];
    m.set("global/a", values[0]);
    sh(&format!(
        "printf %s {} > {}",
        String::from_utf8_lossy(values[1]),
        m.path("global/b").display()
    ))
    .ok();
    m.cli(&["set", "--once", "global/c"], values[2]).ok();
    sh(&format!(
        "cat {} {} {} > /dev/null",
        m.path("global/a").display(),
        m.path("global/b").display(),
        m.path("global/c").display()
    ))
    .ok();
    m.set("session:s/d", values[3]);
    sh(&format!(
        "mv {} {}",
        m.path("session/s/d").display(),
        m.path("global/d").display()
    ))
    .ok();
    // Failures too: a too-large write and a refused name.
    let _ = sh(&format!(
        "printf %s {} > {}",
        String::from_utf8_lossy(values[1]),
        m.path("global/BAD").display()
    ));
    m.cli(&["audit", "--config", "/nonexistent"], b"")
        .fails_with("cannot read config");
    let audit_text = m.cli(&["audit-log"], b"").ok().text();
    let list = m.cli(&["list", "--json"], b"").ok().text();
    m.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(m.wait_exit().success());
    let daemon_log = m.take_stderr();
    assert!(
        daemon_log.contains("mounted"),
        "the daemon logged at debug level: {daemon_log}"
    );
    for v in values {
        assert!(!contains(daemon_log.as_bytes(), v), "daemon log");
        assert!(!contains(audit_text.as_bytes(), v), "audit-log output");
        assert!(!contains(list.as_bytes(), v), "list output");
    }
    scan_tree(&m.vault_dir(), &values);
    scan_tree(&m.root.path().join("identity"), &values);

    // Debug output of the types that hold or describe secrets.
    let vault = sealfs::Vault::open(sealfs::VaultConfig::new(m.vault_dir())).unwrap();
    let value = vault.get(&"global/a".parse().unwrap()).unwrap();
    let entry = vault.entry(&"global/a".parse().unwrap()).unwrap();
    let err = vault
        .put(
            &"global/x".parse().unwrap(),
            sealfs::SensitiveBytes::from_slice(&[0u8; 70_000]),
        )
        .unwrap_err();
    let debug = format!(
        "{value:?} {entry:?} {err:?} {err} {:?}",
        vault.list(None).unwrap()
    );
    for v in values {
        assert!(!contains(debug.as_bytes(), v), "Debug output: {debug}");
    }
}
