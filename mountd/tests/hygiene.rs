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
        m.audit_log(),
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
    const MAX: usize = 4096;
    let Some(mut m) = Mounted::start(&["-vv", "--max-value-size", &MAX.to_string()]) else {
        return;
    };
    let values: [&[u8]; 8] = [
        b"MARKER-cli-set-91c2",
        b"MARKER-mount-write-5e7a",
        b"MARKER-once-33f0",
        b"MARKER-moved-8d11",
        b"MARKER-too-large-4b19",
        b"MARKER-refused-name-c6d2",
        b"MARKER-config-ref-7a05",
        b"MARKER-config-toml-e3b8",
    ];
    let text = |v: &[u8]| String::from_utf8(v.to_vec()).unwrap();
    m.set("global/a", values[0]);
    sh(&format!(
        "printf %s {} > {}",
        text(values[1]),
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
    // Failures too: a too-large write (refused with EFBIG, the old value
    // kept) and a refused name.
    let too_large = values[4].repeat(MAX / values[4].len() + 1);
    assert!(too_large.len() > MAX);
    let err = std::fs::write(m.path("global/b"), &too_large)
        .expect_err("a write past --max-value-size succeeded");
    assert_eq!(
        err.raw_os_error(),
        Some(nix::errno::Errno::EFBIG as i32),
        "a write past --max-value-size is File too large: {err}"
    );
    assert_eq!(
        String::from_utf8_lossy(&m.get("global/b")),
        text(values[1]),
        "the refused write changed nothing"
    );
    sh(&format!(
        "printf %s {} > {}",
        text(values[5]),
        m.path("global/BAD").display()
    ))
    .fails_with("Invalid argument");
    // Config files holding a marker: in a `*_vault_ref` field (a raw secret
    // pasted by mistake) and as broken TOML.
    let bad_ref_cfg = m.root.path().join("bad-ref.toml");
    std::fs::write(
        &bad_ref_cfg,
        format!("db_password_vault_ref = \"{}\"\n", text(values[6])),
    )
    .unwrap();
    let bad_toml_cfg = m.root.path().join("bad-toml.toml");
    std::fs::write(&bad_toml_cfg, format!("password = {}\n", text(values[7]))).unwrap();
    let audit_bad_ref = m.cli(&["audit", "--config", bad_ref_cfg.to_str().unwrap()], b"");
    assert_eq!(audit_bad_ref.code, Some(3), "{}", audit_bad_ref.stderr);
    assert!(
        audit_bad_ref.text().contains("invalid"),
        "{}",
        audit_bad_ref.text()
    );
    let audit_bad_toml = m
        .cli(&["audit", "--config", bad_toml_cfg.to_str().unwrap()], b"")
        .fails_with("not valid TOML");
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
        let name = text(v);
        assert!(
            !contains(daemon_log.as_bytes(), v),
            "{name} in the daemon log"
        );
        assert!(
            !contains(audit_text.as_bytes(), v),
            "{name} in audit-log output"
        );
        assert!(!contains(list.as_bytes(), v), "{name} in list output");
        for (what, run) in [("bad ref", &audit_bad_ref), ("bad TOML", &audit_bad_toml)] {
            assert!(
                !contains(&run.stdout, v) && !run.stderr.contains(&name),
                "{name} in the output of `sealfs audit` on a config with a {what}: {} {}",
                run.text(),
                run.stderr
            );
        }
    }
    scan_tree(&m.vault_dir(), &values);
    scan_tree(&m.root.path().join("identity"), &values);

    // Debug and Display of the types that hold secrets, and of the errors
    // made from marker-bearing inputs.
    let vault = sealfs::Vault::open(sealfs::VaultConfig::new(m.vault_dir())).unwrap();
    let value = vault.get(&"global/a".parse().unwrap()).unwrap();
    let entry = vault.entry(&"global/a".parse().unwrap()).unwrap();
    let oversized = values[4].repeat(vault.max_value_size() / values[4].len() + 1);
    let too_large = vault
        .put(
            &"global/x".parse().unwrap(),
            sealfs::SensitiveBytes::from_slice(&oversized),
        )
        .unwrap_err();
    assert!(
        matches!(too_large, sealfs::VaultError::TooLarge { .. }),
        "{too_large:?}"
    );
    let Err(bad_field) = sealfs::resolve_config_refs(&vault, &bad_ref_cfg) else {
        panic!("a ref field holding a marker resolved");
    };
    let bad_toml = sealfs::config::load_document(&bad_toml_cfg).unwrap_err();
    // A ref's own error quotes it for the CLI; the console, where a value
    // may land in the ref field, shows `without_input`.
    let bad_ref = format!("global/{}", text(values[6]))
        .parse::<sealfs::VaultRef>()
        .unwrap_err();
    let debug = format!(
        "{value:?} {entry:?} {:?} | {too_large:?} {too_large} | {bad_field:?} {bad_field} | \
         {bad_toml:?} {bad_toml} | {}",
        vault.list(None).unwrap(),
        bad_ref.without_input()
    );
    for v in values {
        assert!(
            !contains(debug.as_bytes(), v),
            "{} in Debug/Display output: {debug}",
            text(v)
        );
    }
}

/// Names through the mount: a session made with mkdir, files created,
/// written, read, renamed and removed through the mount; afterwards no
/// file of the vault directory (index, WAL, temp files) holds any of the
/// names, and the audit log that does is outside it.
#[test]
fn no_name_reaches_the_vault_directory_through_a_mount_session() {
    let Some(mut m) = Mounted::start(&[]) else {
        return;
    };
    let names: [&[u8]; 5] = [
        b"sessname-marker-0f3a",
        b"keyname-marker-71c4",
        b"renamed-marker-aa92",
        b"removed-marker-5d06",
        b"globalkey-marker-e8b1",
    ];
    let session = m.path("session/sessname-marker-0f3a");
    std::fs::create_dir(&session).unwrap();
    std::fs::write(session.join("keyname-marker-71c4"), b"v1").unwrap();
    std::fs::write(session.join("removed-marker-5d06"), b"v2").unwrap();
    std::fs::write(m.path("global/globalkey-marker-e8b1"), b"v3").unwrap();
    assert_eq!(
        std::fs::read(session.join("keyname-marker-71c4")).unwrap(),
        b"v1"
    );
    std::fs::rename(
        session.join("keyname-marker-71c4"),
        session.join("renamed-marker-aa92"),
    )
    .unwrap();
    std::fs::remove_file(session.join("removed-marker-5d06")).unwrap();
    m.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(m.wait_exit().success());
    scan_tree(&m.vault_dir(), &names);
    // The audit log names them (that is its job), from outside the vault.
    let log = std::fs::read(m.audit_log()).unwrap();
    assert!(contains(&log, names[2]), "the audit log lacks the rename");
    assert!(!m.audit_log().starts_with(m.vault_dir()));
}
