//! Shared helpers for the mount tests: a vault and a mounted daemon in a
//! temp dir, the `sealfs` CLI, and commands run as other uids. Every mount
//! is unmounted when its `Mounted` is dropped, also when a test fails.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub(crate) use sealfs_test_support::*;

pub(crate) const MOUNTD: &str = env!("CARGO_BIN_EXE_sealfs-mountd");

/// The `sealfs` CLI, built beside `sealfs-mountd` by `cargo test --workspace`.
pub(crate) fn sealfs_bin() -> PathBuf {
    let p = Path::new(MOUNTD).with_file_name("sealfs");
    assert!(
        p.is_file(),
        "{} is missing: run the tests with --workspace",
        p.display()
    );
    p
}

/// Whether FUSE tests can run here. They must: a missing /dev/fuse or root
/// fails the test unless skips were allowed (`sealfs_test_support::skip`).
pub(crate) fn fuse_usable() -> bool {
    if !Path::new("/dev/fuse").exists() {
        missing("FUSE (/dev/fuse)");
        return false;
    }
    have_root("FUSE mounts with --allow-other")
}

/// A process of `uid` holding up to `n` opens of `path` (read-write if
/// `write`), until [`Holder::release`].
pub(crate) struct Holder {
    child: Child,
    /// How many opens succeeded.
    pub opened: usize,
    /// The error of each open that failed (`strerror` text).
    pub errors: Vec<String>,
}

impl Holder {
    pub(crate) fn open(uid: u32, path: &std::path::Path, n: usize, write: bool) -> Holder {
        use std::io::BufRead;
        let mode = if write { "+<" } else { "<" };
        let mut child = Command::new("setpriv")
            .args(["--reuid", &uid.to_string(), "--regid", &uid.to_string(), "--clear-groups"])
            .args(["perl", "-e"])
            .arg(format!(
                r#"my @held; for (1..{n}) {{ if (open(my $f, "{mode}", $ARGV[0])) {{ push @held, $f }} else {{ print "error $!
" }} }}
                   print "opened ", scalar(@held), "
"; STDOUT->flush; <STDIN>;"#
            ))
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let (mut opened, mut errors) = (None, Vec::new());
        while opened.is_none() {
            let mut line = String::new();
            assert!(out.read_line(&mut line).unwrap() > 0, "holder ended early");
            match line.trim_end().split_once(' ') {
                Some(("error", e)) => errors.push(e.to_owned()),
                Some(("opened", k)) => opened = Some(k.parse().unwrap()),
                _ => panic!("holder said {line:?}"),
            }
        }
        Holder {
            child,
            opened: opened.unwrap(),
            errors,
        }
    }

    /// Closes every handle (the process exits).
    pub(crate) fn release(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// A vault and its mount in a temp dir (traversable by other uids; the
/// vault directory itself stays 0700).
pub(crate) struct Mounted {
    pub root: tempfile::TempDir,
    pub mnt: PathBuf,
    child: Option<Child>,
    stderr: Option<std::thread::JoinHandle<String>>,
    args: Vec<String>,
    /// A command the daemon is started through (`prlimit`, `setpriv`).
    wrapper: Vec<String>,
}

impl Mounted {
    /// A vault with no mount yet.
    pub(crate) fn vault_only() -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let mnt = root.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        std::fs::set_permissions(&mnt, std::fs::Permissions::from_mode(0o755)).unwrap();
        Mounted {
            root,
            mnt,
            child: None,
            stderr: None,
            args: Vec::new(),
            wrapper: Vec::new(),
        }
    }

    /// A mounted vault whose daemon is started through `wrapper` (e.g.
    /// `prlimit --memlock=...`), with `--allow-other`.
    pub(crate) fn start_through(wrapper: &[&str], extra: &[&str]) -> Option<Self> {
        if !fuse_usable() {
            return None;
        }
        let mut m = Self::vault_only();
        m.wrapper = wrapper.iter().map(|s| s.to_string()).collect();
        m.mount(extra);
        Some(m)
    }

    /// A mounted vault (with `--allow-other`, so other uids can reach it),
    /// or `None` where FUSE tests are skipped.
    pub(crate) fn start(extra: &[&str]) -> Option<Self> {
        if !fuse_usable() {
            return None;
        }
        let mut m = Self::vault_only();
        m.mount(extra);
        Some(m)
    }

    pub(crate) fn vault_dir(&self) -> PathBuf {
        self.root.path().join("vault")
    }

    /// The audit log: `audit.log` beside the vault directory, the CLI's
    /// default. The daemon runs as root here, whose own default is
    /// /var/log/sealfs/audit.log, so it is given this path explicitly.
    pub(crate) fn audit_log(&self) -> PathBuf {
        self.root.path().join("audit.log")
    }

    /// A mounted vault that only its owner can reach (no `--allow-other`).
    pub(crate) fn start_private(extra: &[&str]) -> Option<Self> {
        if !fuse_usable() {
            return None;
        }
        let mut m = Self::vault_only();
        m.mount_with(extra, false);
        Some(m)
    }

    /// Starts the daemon (with `--allow-other`) and waits until the mount is live.
    pub(crate) fn mount(&mut self, extra: &[&str]) {
        self.mount_with(extra, true);
    }

    /// Starts the daemon for its owner only and waits until the mount is live.
    pub(crate) fn mount_private(&mut self, extra: &[&str]) {
        self.mount_with(extra, false);
    }

    fn mount_with(&mut self, extra: &[&str], allow_other: bool) {
        assert!(self.child.is_none());
        let mut args = Vec::new();
        if allow_other {
            args.push("--allow-other".to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        self.args = args.clone();
        let mut command = match self.wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(MOUNTD);
                c
            }
            None => Command::new(MOUNTD),
        };
        let child = command
            .arg(&self.mnt)
            .args(&args)
            .env("SEALFS_VAULT_DIR", self.vault_dir())
            .env("SEALFS_BACKEND", "encrypted-file")
            .env_remove("SEALFS_IDENTITY_DIR")
            .env("SEALFS_AUDIT_LOG", self.audit_log())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sealfs-mountd");
        let mut child = child;
        // Drained by a thread so a chatty daemon never blocks on a full pipe.
        let mut stderr = child.stderr.take().unwrap();
        self.stderr = Some(std::thread::spawn(move || {
            let mut out = String::new();
            use std::io::Read;
            let _ = stderr.read_to_string(&mut out);
            out
        }));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.is_mounted() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                // Its stderr went to the draining thread, which ends with it.
                let err = self.take_stderr();
                panic!("sealfs-mountd exited with {status} before mounting: {err}");
            }
            assert!(Instant::now() < deadline, "mount did not appear");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether a live sealfs mount sits on `mnt`.
    pub(crate) fn is_mounted(&self) -> bool {
        mounted_at(&self.mnt) && std::fs::metadata(&self.mnt).is_ok()
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// The daemon's process, for signals.
    pub(crate) fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), sig).unwrap();
    }

    /// Waits for the daemon to exit (at most 20 s).
    pub(crate) fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        let child = self.child.as_mut().expect("daemon running");
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                self.child = None;
                return s;
            }
            assert!(Instant::now() < deadline, "sealfs-mountd did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the (exited) daemon wrote to stderr.
    pub(crate) fn take_stderr(&mut self) -> String {
        self.stderr
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Forgets the daemon without stopping it (after a kill -9).
    pub(crate) fn reap(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// The `sealfs` CLI on this vault.
    pub(crate) fn cli(&self, args: &[&str], stdin: &[u8]) -> Run {
        let mut c = Command::new(sealfs_bin());
        c.args(args)
            .env("SEALFS_VAULT_DIR", self.vault_dir())
            .env("SEALFS_BACKEND", "encrypted-file")
            .env_remove("SEALFS_IDENTITY_DIR")
            .env_remove("SEALFS_AUDIT_LOG");
        run(c, stdin)
    }

    pub(crate) fn set(&self, r: &str, value: &[u8]) {
        self.cli(&["set", r], value).ok();
    }

    pub(crate) fn get(&self, r: &str) -> Vec<u8> {
        self.cli(&["get", r], b"").ok().stdout
    }

    /// The audit log's events, parsed.
    pub(crate) fn audit_events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.audit_log())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Whether `/proc/self/mountinfo` lists a mount at `path`.
pub(crate) fn mounted_at(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let p = path.to_string_lossy();
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(p.as_ref()))
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Whatever happened, leave no mount behind.
        while mounted_at(&self.mnt) {
            if nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH).is_err() {
                break;
            }
        }
    }
}
