//! The daemon's life: clean exit on SIGTERM and on an outside unmount,
//! recovery after kill -9, and the mount seen from another mount namespace
//! (the container volume case).

use nix::sys::signal::Signal;

use crate::util::{mounted_at, sh, Mounted};

#[test]
fn sigterm_unmounts_and_exits_zero() {
    let Some(mut m) = Mounted::start(&[]) else {
        return;
    };
    m.set("global/k", b"v");
    m.signal(Signal::SIGTERM);
    let status = m.wait_exit();
    assert!(status.success(), "{status}");
    assert!(!mounted_at(&m.mnt));
}

#[test]
fn an_outside_unmount_ends_the_daemon_cleanly() {
    let Some(mut m) = Mounted::start(&[]) else {
        return;
    };
    sh(&format!(
        "fusermount3 -u {} || umount {}",
        m.mnt.display(),
        m.mnt.display()
    ))
    .ok();
    let status = m.wait_exit();
    assert!(status.success(), "{status}");
}

#[test]
fn a_new_daemon_recovers_the_mountpoint_after_kill_9() {
    let Some(mut m) = Mounted::start(&[]) else {
        return;
    };
    m.set("global/k", b"still here");
    m.signal(Signal::SIGKILL);
    m.reap();
    let err = std::fs::metadata(&m.mnt).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(nix::errno::Errno::ENOTCONN as i32),
        "{err}"
    );
    m.mount(&[]);
    assert_eq!(std::fs::read(m.path("global/k")).unwrap(), b"still here");
    printf_through(&m);
}

fn printf_through(m: &Mounted) {
    sh(&format!("printf w > {}", m.path("global/after").display())).ok();
    assert_eq!(m.get("global/after"), b"w");
}

#[test]
fn a_scope_directory_bind_mounted_into_another_namespace() {
    let Some(m) = Mounted::start(&[]) else { return };
    m.set("global/db_password", b"from-the-host");
    let target = m.root.path().join("container-secrets");
    std::fs::create_dir(&target).unwrap();
    // A private mount namespace, like a container's, with the scope
    // directory bind-mounted read-only at /run/secrets-like path.
    let script = format!(
        "mount --bind {src} {dst} && mount -o remount,bind,ro {dst} && cat {dst}/db_password && ls {dst} && (printf x > {dst}/nope 2>/dev/null && echo WRITABLE || true)",
        src = m.path("global").display(),
        dst = target.display()
    );
    let out = sh(&format!(
        "unshare -m --propagation private sh -c '{script}'"
    ))
    .ok()
    .text();
    assert!(out.starts_with("from-the-host"), "{out}");
    assert!(out.contains("db_password"), "{out}");
    assert!(!out.contains("WRITABLE"), "{out}");
    // The bind existed only inside that namespace.
    assert!(!mounted_at(&target));
    // A rotation on the host is what the next read inside sees.
    m.set("global/db_password", b"rotated");
    let script = format!(
        "mount --bind {src} {dst} && cat {dst}/db_password",
        src = m.path("global").display(),
        dst = target.display()
    );
    assert_eq!(
        sh(&format!(
            "unshare -m --propagation private sh -c '{script}'"
        ))
        .ok()
        .stdout,
        b"rotated"
    );
}

#[test]
fn the_daemon_is_hardened_and_mounted_nosuid_nodev_noexec() {
    let Some(m) = Mounted::start(&[]) else { return };
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", m.pid())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(core.split_whitespace().nth(4), Some("0"), "{core}");
    // (PR_SET_DUMPABLE 0 is checked by a unit test of `daemon::harden`:
    // from outside, a root daemon's /proc files look the same either way.)
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(m.mnt.to_str().unwrap()))
        .unwrap();
    for opt in ["nosuid", "nodev", "noexec"] {
        assert!(
            line.split(' ').nth(5).unwrap().split(',').any(|o| o == opt),
            "{opt} missing: {line}"
        );
    }
    assert!(
        line.contains(" - fuse sealfs ") || line.contains(" - fuse.sealfs "),
        "{line}"
    );
    // Executing a secret is refused even for root.
    m.set("global/script", b"#!/bin/sh\necho ran\n");
    sh(&format!("{}", m.path("global/script").display())).fails_with("Permission denied");
}

/// Root serving a vault directory a user owns (review finding H4): refused
/// unless `--allow-foreign-vault-dir` says so; told so, it serves the vault,
/// and the audit log stays out of the vault directory.
#[test]
fn a_root_daemon_refuses_a_vault_directory_another_user_owns_unless_told() {
    if !crate::util::fuse_usable() {
        return;
    }
    // A real user (with a name): only such an owner acts as the vault's.
    let owner = crate::util::uid_of("daemon");
    let mut m = Mounted::vault_only();
    m.set("global/k", b"v");
    for dir in [m.vault_dir(), m.root.path().join("identity")] {
        sh(&format!("chown -R {owner}:{owner} {}", dir.display())).ok();
    }
    let refused = std::process::Command::new(crate::util::MOUNTD)
        .arg(&m.mnt)
        .env("SEALFS_VAULT_DIR", m.vault_dir())
        .env("SEALFS_BACKEND", "encrypted-file")
        .env("SEALFS_AUDIT_LOG", m.audit_log())
        .env_remove("SEALFS_IDENTITY_DIR")
        .env_remove("SEALFS_ALLOW_FOREIGN_VAULT_DIR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "refusing the vault directory {}: it is owned by uid {owner} and root must not work in a directory another user controls; pass --allow-foreign-vault-dir",
            m.vault_dir().display()
        )),
        "{stderr}"
    );
    assert!(!mounted_at(&m.mnt));
    m.mount(&["--allow-foreign-vault-dir"]);
    // The vault's owner is the owner the daemon serves.
    let seen = crate::util::sh_as(owner, &format!("cat {}", m.path("global/k").display()))
        .ok()
        .text();
    assert_eq!(seen, "v");
    assert!(!m.vault_dir().join("audit.log").exists());
    assert!(std::fs::read_to_string(m.audit_log())
        .unwrap()
        .contains("\"op\":\"open\""));
}

/// A vault directory owned by a uid with no name, or by the overflow uid
/// 65534 (what a bind mount into a user namespace shows for an unmapped
/// owner), gives that uid no owner rights; root still has them.
#[test]
fn an_owner_without_a_name_or_the_overflow_uid_is_not_the_vault_owner() {
    if !crate::util::fuse_usable() {
        return;
    }
    for owner in [4343u32, 65534] {
        let mut m = Mounted::vault_only();
        m.set("global/k", b"v");
        for dir in [m.vault_dir(), m.root.path().join("identity")] {
            sh(&format!("chown -R {owner}:{owner} {}", dir.display())).ok();
        }
        m.mount(&["--allow-foreign-vault-dir"]);
        crate::util::sh_as(owner, &format!("cat {}", m.path("global/k").display()))
            .fails_with("No such file or directory");
        crate::util::sh_as(owner, &format!("mkdir {}", m.path("session/x").display()))
            .fails_with("Permission denied");
        let seen = crate::util::sh_as(0, &format!("cat {}", m.path("global/k").display()))
            .ok()
            .text();
        assert_eq!(seen, "v", "owner {owner}");
    }
}
