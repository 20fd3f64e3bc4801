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
