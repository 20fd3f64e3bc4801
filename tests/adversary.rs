//! The vault-directory writer as an adversary (issue 12, item 4; review
//! finding H4): symlinks planted in the vault directory and its neighbours,
//! a vault directory owned by another user while root works on it, loose
//! modes. Each test performs the attack on a real vault and checks that
//! sealfs refuses it with an error naming the path, and that the files the
//! symlinks point at (a "canary" directory outside the vault) are untouched.
//!
//! The foreign-owner tests run as root and hand the sandbox to uid 1301,
//! the way a user owns the vault directory that root serves.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use sealfs::audit::{self, AuditLog};
use sealfs::{FaultPoint, SensitiveBytes, Vault, VaultConfig, VaultError, VaultRef};

use crate::util::{feed, have_root, Run, Sandbox};

/// The user who owns the vault directory root is asked to work on.
const OWNER: u32 = 1301;

fn r(s: &str) -> VaultRef {
    VaultRef::parse(s).unwrap()
}

/// The binary on the sandbox's vault; `--allow-foreign-vault-dir` if
/// `allow`. The flag's variable is cleared so the caller's environment
/// cannot turn it on.
fn run(sb: &Sandbox, allow: bool, args: &[&str], stdin: &[u8]) -> Run {
    let mut all = Vec::new();
    if allow {
        all.push("--allow-foreign-vault-dir");
    }
    all.extend_from_slice(args);
    let mut child = sb
        .cmd(&all)
        .env_remove("SEALFS_ALLOW_FOREIGN_VAULT_DIR")
        .env_remove("SEALFS_AUDIT_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sealfs");
    feed(&mut child, stdin);
    child.wait_with_output().expect("wait for sealfs").into()
}

/// The library on the sandbox's vault, as `--allow-foreign-vault-dir` would.
fn config(sb: &Sandbox, allow: bool) -> VaultConfig {
    VaultConfig {
        allow_foreign_owner: allow,
        create: false,
        ..VaultConfig::new(sb.vault_dir())
    }
}

/// An error with its causes, as the CLI prints it.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[track_caller]
fn open_fails(sb: &Sandbox, allow: bool, needle: &str) {
    match Vault::open(config(sb, allow)) {
        Ok(_) => panic!("the vault opened; expected {needle:?}"),
        Err(e) => {
            let text = chain(&e);
            assert!(text.contains(needle), "{text:?} lacks {needle:?}");
        }
    }
}

fn refused(path: &Path) -> String {
    format!("refusing to follow the symlink {}", path.display())
}

/// A directory outside the vault with files in it: what a planted symlink
/// points at (`/etc` in the review's examples).
struct Canary {
    dir: PathBuf,
}

impl Canary {
    fn new(sb: &Sandbox) -> Self {
        let dir = sb.path().join("canary");
        std::fs::create_dir(&dir).unwrap();
        for (name, body) in [
            ("passwd", "root:x:0:0"),
            ("ld.so.preload", ""),
            ("keep", "k"),
        ] {
            std::fs::write(dir.join(name), body).unwrap();
        }
        Canary { dir }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Every entry with its bytes, sorted.
    fn snapshot(&self) -> Vec<(String, String)> {
        let mut all: Vec<_> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let text = if e.file_type().unwrap().is_file() {
                    describe(&std::fs::read(e.path()).unwrap())
                } else {
                    "<dir>".to_owned()
                };
                (e.file_name().to_string_lossy().into_owned(), text)
            })
            .collect();
        all.sort();
        all
    }

    #[track_caller]
    fn assert_untouched(&self, before: &[(String, String)]) {
        assert_eq!(
            self.snapshot(),
            before,
            "the files behind the symlink changed (count or contents)"
        );
    }
}

/// Short text as itself, anything else by length and hash.
fn describe(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if text.len() <= 80 => text.to_owned(),
        _ => {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut h);
            format!("<{} bytes, hash {:016x}>", bytes.len(), h.finish())
        }
    }
}

/// `chown -R uid:uid path`, symlinks themselves included.
fn chown_r(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
    if std::fs::symlink_metadata(path).unwrap().is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            chown_r(&e.unwrap().path(), uid);
        }
    }
}

/// A vault made by root with `global/k`, then handed to uid [`OWNER`]:
/// the vault and identity directories and the directory holding them (where
/// the default audit log goes), as under a user's home.
fn foreign_vault() -> Option<Sandbox> {
    if !have_root("chown a vault directory to another uid") {
        return None;
    }
    let sb = Sandbox::new();
    sb.set("global/k", b"the-value");
    chown_r(sb.path(), OWNER);
    Some(sb)
}

/// Replaces `path` (file or directory) by a symlink to `target`.
fn plant(path: &Path, target: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).unwrap(),
        Ok(_) => std::fs::remove_file(path).unwrap(),
        Err(_) => {}
    }
    symlink(target, path).unwrap();
    std::os::unix::fs::lchown(path, Some(OWNER), Some(OWNER)).unwrap();
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn root_refuses_a_vault_directory_another_user_owns_unless_told() {
    let Some(sb) = foreign_vault() else { return };
    let before = entries(&sb.vault_dir());
    let why = format!(
        "refusing the vault directory {}: it is owned by uid {OWNER} and root must not work in a directory another user controls; pass --allow-foreign-vault-dir",
        sb.vault_dir().display()
    );
    run(&sb, false, &["get", "global/k"], b"").fails(1, &why);
    run(&sb, false, &["set", "global/new"], b"v").fails(1, &why);
    open_fails(&sb, false, &why);
    assert_eq!(
        entries(&sb.vault_dir()),
        before,
        "a refused open created nothing"
    );
    // Told so, it works: by the flag and by its variable.
    let got = run(&sb, true, &["get", "global/k"], b"").ok().stdout;
    assert_eq!(got, b"the-value");
    let got = sb
        .cmd(&["get", "global/k"])
        .env("SEALFS_ALLOW_FOREIGN_VAULT_DIR", "1")
        .output()
        .unwrap();
    assert_eq!(Run::from(got).ok().stdout, b"the-value");
    let vault = Vault::open(config(&sb, true)).unwrap();
    assert_eq!(vault.get(&r("global/k")).unwrap().expose(), b"the-value");
}

#[test]
fn a_symlinked_lock_is_refused_and_its_target_neither_created_nor_touched() {
    let Some(sb) = foreign_vault() else { return };
    let canary = Canary::new(&sb);
    let lock = sb.vault_dir().join("lock");
    // `lock -> /etc/nologin` (missing: root would create it) and
    // `lock -> /etc/passwd` (present).
    for target in [canary.file("nologin"), canary.file("passwd")] {
        let before = canary.snapshot();
        plant(&lock, &target);
        let set = run(&sb, true, &["set", "global/new"], b"v");
        let delete = run(&sb, true, &["delete", "global/k"], b"");
        canary.assert_untouched(&before);
        set.fails(1, &refused(&lock));
        delete.fails(1, &refused(&lock));
    }
    // Reading takes no lock and still works.
    assert_eq!(
        run(&sb, true, &["get", "global/k"], b"").ok().stdout,
        b"the-value"
    );
}

#[test]
fn a_symlinked_tmp_is_refused_and_the_directory_behind_it_untouched() {
    let Some(sb) = foreign_vault() else { return };
    let canary = Canary::new(&sb);
    let before = canary.snapshot();
    let tmp = sb.vault_dir().join("tmp");
    plant(&tmp, &canary.dir);
    let get = run(&sb, true, &["get", "global/k"], b"");
    let set = run(&sb, true, &["set", "global/new"], b"v");
    canary.assert_untouched(&before);
    get.fails(1, &refused(&tmp));
    set.fails(1, &refused(&tmp));
    open_fails(&sb, true, &refused(&tmp));
    canary.assert_untouched(&before);
}

/// The review's `tmp -> /etc` plus one row in `pending`: the next open (a
/// daemon start) or the next write sweeps temp files. The sweep lists and
/// removes only through the `tmp/` it opened and checked.
#[test]
fn the_pending_sweep_never_deletes_outside_the_vault_directory() {
    let Some(sb) = foreign_vault() else { return };
    let canary = Canary::new(&sb);
    let before = canary.snapshot();
    let tmp = sb.vault_dir().join("tmp");
    let pending = || {
        let mut v = Vault::open(config(&sb, true)).unwrap();
        v.set_fault_hook(|p| p == FaultPoint::PutAfterPending);
        let err = v
            .put(&r("global/stopped"), SensitiveBytes::from_slice(b"x"))
            .unwrap_err();
        assert!(matches!(err, VaultError::Fault(_)), "{err}");
    };

    // 1. A pending row, then `tmp -> canary`: the next open is refused.
    pending();
    plant(&tmp, &canary.dir);
    let opened = Vault::open(config(&sb, true)).map(drop);
    let set = run(&sb, true, &["set", "global/new"], b"v");
    canary.assert_untouched(&before);
    assert!(opened.is_err(), "the vault opened over a symlinked tmp");
    open_fails(&sb, true, &refused(&tmp));
    set.fails(1, &refused(&tmp));

    // 2. A vault opened while `tmp` was sound, which is swapped for the
    // symlink afterwards (the real tmp/ renamed away): the next write
    // sweeps the tmp/ it opened, not the canary.
    std::fs::remove_file(&tmp).unwrap();
    std::fs::create_dir(&tmp).unwrap();
    let vault = Vault::open(config(&sb, true)).unwrap();
    pending();
    let real = sb.vault_dir().join("tmp.real");
    std::fs::rename(&tmp, &real).unwrap();
    std::fs::write(real.join("leftover.tmp"), b"").unwrap();
    symlink(&canary.dir, &tmp).unwrap();
    vault
        .put(&r("global/after"), SensitiveBytes::from_slice(b"after"))
        .unwrap();
    canary.assert_untouched(&before);
    assert_eq!(vault.get(&r("global/after")).unwrap().expose(), b"after");
    assert!(entries(&real).is_empty(), "the sweep emptied the real tmp/");
}

/// `objects/ab -> /etc/sudoers.d`: a put would rename its blob into the
/// target. Every fan-out directory is planted, so whichever a blob lands
/// in is a symlink.
#[test]
fn symlinked_object_directories_are_refused() {
    let Some(sb) = foreign_vault() else { return };
    let canary = Canary::new(&sb);
    let objects = sb.vault_dir().join("objects");
    // The blob of global/k, copied into the canary so a read through the
    // symlink would even succeed.
    let fan = entries(&objects).pop().unwrap();
    for blob in entries(&objects.join(&fan)) {
        std::fs::copy(objects.join(&fan).join(&blob), canary.file(&blob)).unwrap();
    }
    let before = canary.snapshot();
    for i in 0..=255u8 {
        plant(&objects.join(format!("{i:02x}")), &canary.dir);
    }
    let fan_of_k = objects.join(&fan);
    let get = run(&sb, true, &["get", "global/k"], b"");
    let set = run(&sb, true, &["set", "global/new"], b"v");
    let replace = run(&sb, true, &["set", "global/k"], b"replaced");
    let _ = run(&sb, true, &["delete", "global/k"], b"");
    canary.assert_untouched(&before);
    get.fails(1, &refused(&fan_of_k));
    assert_eq!(set.code, Some(1), "{}", set.stderr);
    assert!(
        set.stderr.contains(&format!(
            "refusing to follow the symlink {}/",
            objects.display()
        )),
        "{}",
        set.stderr
    );
    replace.fails(1, "refusing to follow the symlink");
}

/// `audit.log -> /etc/ld.so.preload`. The log is no longer in the vault
/// directory (a symlink left there is not used), and where it is, in the
/// directory the vault's owner controls here, a symlink is refused.
#[test]
fn a_symlinked_audit_log_is_refused_and_its_target_untouched() {
    let Some(sb) = foreign_vault() else { return };
    let canary = Canary::new(&sb);
    let before = canary.snapshot();
    let log = audit::default_path(&sb.vault_dir());
    assert_eq!(log, sb.path().join("audit.log"));
    plant(
        &sb.vault_dir().join("audit.log"),
        &canary.file("ld.so.preload"),
    );
    plant(&log, &canary.file("ld.so.preload"));
    let set = run(&sb, true, &["set", "global/new"], b"v");
    let show = run(&sb, true, &["audit-log"], b"");
    // The daemon and the console open it with the same call (and stop).
    let opened = AuditLog::open_checked(&log, true).map(drop);
    // Dangling to a file that does not exist yet: not created either.
    plant(&log, &canary.file("profile"));
    let created = AuditLog::open_checked(&log, true).map(drop);
    canary.assert_untouched(&before);
    // The CLI warns and goes on (an audit failure never fails an operation).
    let set = set.ok();
    assert!(set.stderr.contains(&refused(&log)), "{}", set.stderr);
    show.fails(1, &refused(&log));
    assert_eq!(opened.unwrap_err().to_string(), refused(&log));
    assert_eq!(created.unwrap_err().to_string(), refused(&log));
    // Without the flag, the other user's directory is refused first.
    std::fs::remove_file(&log).unwrap();
    let err = AuditLog::open_checked(&log, false).err().expect("opened");
    assert!(
        err.to_string().contains(&format!(
            "refusing {}: it is owned by uid {OWNER}",
            sb.path().display()
        )),
        "{err}"
    );
}

/// `index.sqlite3 -> ...`: SQLite would open (or create) the target.
#[test]
fn a_symlinked_index_is_refused_and_its_target_not_created() {
    let Some(sb) = foreign_vault() else { return };
    let canary = Canary::new(&sb);
    let before = canary.snapshot();
    let index = sb.vault_dir().join("index.sqlite3");
    std::fs::rename(&index, canary.file("stolen.sqlite3")).unwrap();
    let before_with_index = canary.snapshot();
    for target in [
        canary.file("stolen.sqlite3"),
        canary.file("created.sqlite3"),
    ] {
        plant(&index, &target);
        let get = run(&sb, true, &["get", "global/k"], b"");
        let set = run(&sb, true, &["set", "global/new"], b"v");
        canary.assert_untouched(&before_with_index);
        get.fails(1, &refused(&index));
        set.fails(1, &refused(&index));
    }
    assert_ne!(before, before_with_index);
}

/// The identity directory and `device.key` are checked like the vault's.
#[test]
fn a_symlinked_identity_is_refused() {
    let Some(sb) = foreign_vault() else { return };
    let canary = Canary::new(&sb);
    let key = sb.identity_dir().join("device.key");
    std::fs::copy(&key, canary.file("device.key")).unwrap();
    let before = canary.snapshot();
    plant(&key, &canary.file("device.key"));
    let by_file = run(&sb, true, &["get", "global/k"], b"");
    plant(&sb.identity_dir(), &canary.dir);
    let by_dir = run(&sb, true, &["get", "global/k"], b"");
    canary.assert_untouched(&before);
    by_file.fails(1, &refused(&key));
    by_dir.fails(1, &refused(&sb.identity_dir()));
}

#[test]
fn a_symlinked_vault_directory_is_refused_even_with_the_flag() {
    let sb = Sandbox::new();
    sb.set("global/k", b"the-value");
    let canary = Canary::new(&sb);
    let before = canary.snapshot();
    let link = sb.path().join("link");
    // To a real vault (it would open), and to a directory that is not one
    // (a vault would be created in it).
    for target in [sb.vault_dir(), canary.dir.clone()] {
        let _ = std::fs::remove_file(&link);
        symlink(&target, &link).unwrap();
        for allow in [false, true] {
            let link_arg = link.to_str().unwrap();
            for args in [
                vec!["--vault-dir", link_arg, "get", "global/k"],
                vec!["--vault-dir", &format!("{link_arg}/"), "set", "global/new"],
            ] {
                let out = run(&sb, allow, &args, b"v");
                canary.assert_untouched(&before);
                out.fails(1, &refused(&link));
            }
        }
    }
}

#[test]
fn a_group_or_world_writable_vault_or_identity_directory_is_refused() {
    let sb = Sandbox::new();
    sb.set("global/k", b"the-value");
    let vault = sb.vault_dir();
    for (mode, who) in [(0o770, "its group"), (0o703, "others")] {
        std::fs::set_permissions(&vault, std::fs::Permissions::from_mode(mode)).unwrap();
        for allow in [false, true] {
            run(&sb, allow, &["get", "global/k"], b"").fails(
                1,
                &format!(
                    "refusing {}: it is writable by {who} (mode {mode:04o}); run `chmod go-w {}`",
                    vault.display(),
                    vault.display()
                ),
            );
        }
    }
    std::fs::set_permissions(&vault, std::fs::Permissions::from_mode(0o700)).unwrap();
    let identity = sb.identity_dir();
    std::fs::set_permissions(&identity, std::fs::Permissions::from_mode(0o730)).unwrap();
    run(&sb, false, &["get", "global/k"], b"").fails(
        1,
        &format!(
            "refusing {}: it is writable by its group (mode 0730)",
            identity.display()
        ),
    );
    std::fs::set_permissions(&identity, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(sb.get("global/k"), b"the-value");
}

/// Review finding L4 of format 2: whoever can write the vault directory
/// can take the writer lock (`flock` on `lock`) and keep it. Writers then
/// fail with a clear error after their time limit instead of hanging;
/// reads go on; once the lock is let go, writes work again.
#[test]
fn a_lock_held_forever_makes_writers_fail_within_their_limit() {
    let sb = Sandbox::new();
    sb.set("global/a", b"value-a");
    // A writer that died mid-put leaves work for the next opener to sweep.
    {
        let mut v = Vault::open(VaultConfig::new(sb.vault_dir())).unwrap();
        v.set_fault_hook(|p| p == FaultPoint::PutAfterBlob);
        v.put(&r("global/c"), SensitiveBytes::from_slice(b"value-c"))
            .unwrap_err();
    }
    let held = std::fs::File::open(sb.vault_dir().join("lock")).unwrap();
    held.lock().unwrap();
    // Reads never wait for the lock: opening (which would sweep) and
    // reading take the default 30 s limit, and finish well inside it.
    let started = std::time::Instant::now();
    let reader = Vault::open(VaultConfig::new(sb.vault_dir())).unwrap();
    assert_eq!(reader.get(&r("global/a")).unwrap().expose(), b"value-a");
    let read_in = started.elapsed();
    assert!(
        read_in < std::time::Duration::from_secs(10),
        "read took {read_in:?}"
    );
    let vault = Vault::open(VaultConfig {
        lock_timeout: std::time::Duration::from_millis(500),
        ..VaultConfig::new(sb.vault_dir())
    })
    .unwrap();
    let started = std::time::Instant::now();
    let err = vault
        .put(&r("global/b"), SensitiveBytes::from_slice(b"value-b"))
        .unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err, VaultError::LockTimeout { .. }), "{err}");
    assert!(err.to_string().contains("held the writer lock"), "{err}");
    assert!(
        waited >= std::time::Duration::from_millis(500)
            && waited < std::time::Duration::from_secs(20),
        "waited {waited:?}"
    );
    assert_eq!(vault.get(&r("global/a")).unwrap().expose(), b"value-a");
    drop(held);
    vault
        .put(&r("global/b"), SensitiveBytes::from_slice(b"value-b"))
        .unwrap();
}
