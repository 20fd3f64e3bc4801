//! Helpers of the CLI's integration tests: a sandbox with its own vault
//! and identity directories, and the real binary run in it. What both
//! packages' tests share (running commands, etcd, skips) is in
//! `sealfs-test-support`, re-exported here.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use sealfs::{Vault, VaultConfig, VaultRef};
pub(crate) use sealfs_test_support::*;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_sealfs");

/// A temp dir holding `vault/` and `identity/`, removed on drop.
pub(crate) struct Sandbox {
    pub root: tempfile::TempDir,
}

impl Sandbox {
    pub(crate) fn new() -> Self {
        Sandbox {
            root: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.root.path()
    }

    pub(crate) fn vault_dir(&self) -> PathBuf {
        self.path().join("vault")
    }

    pub(crate) fn identity_dir(&self) -> PathBuf {
        self.path().join("identity")
    }

    /// The binary with this sandbox's vault and a clean environment.
    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.program(BIN);
        c.args(args);
        c
    }

    /// `program` (which starts the binary in its turn: `sh`, `script`)
    /// with the environment and directory of [`Sandbox::cmd`].
    pub(crate) fn program(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env_remove("SEALFS_IDENTITY_DIR")
            // Hermetic on desktops too, where `auto` would find a keyring.
            .env("SEALFS_BACKEND", "encrypted-file")
            .env_remove("SEALFS_MAX_VALUE_SIZE")
            .env("SEALFS_VAULT_DIR", self.vault_dir())
            .current_dir(self.path());
        c
    }

    /// Runs the binary with `stdin` as its standard input.
    pub(crate) fn run(&self, args: &[&str], stdin: &[u8]) -> Run {
        run(self.cmd(args), stdin)
    }

    pub(crate) fn set(&self, r: &str, value: &[u8]) {
        self.run(&["set", r], value).ok();
    }

    pub(crate) fn get(&self, r: &str) -> Vec<u8> {
        self.run(&["get", r], b"").ok().stdout
    }

    /// The library's view of the same vault.
    pub(crate) fn vault(&self) -> Vault {
        Vault::open(VaultConfig::new(self.vault_dir())).expect("open vault")
    }

    /// Where the encrypted-file backend keeps the current blob of `r`.
    pub(crate) fn blob_path(&self, r: &str) -> PathBuf {
        let r = VaultRef::parse(r).unwrap();
        let id = self
            .vault()
            .blob_id(&r)
            .unwrap()
            .expect("secret is in the index");
        let id = id.as_str();
        self.vault_dir().join("objects").join(&id[..2]).join(id)
    }

    /// Runs SQL against the index, for forging states the CLI refuses to make.
    pub(crate) fn index_exec(&self, sql: &str) {
        let conn = rusqlite::Connection::open(self.vault_dir().join("index.sqlite3")).unwrap();
        conn.execute_batch(sql).unwrap();
    }
}

/// Exactly the blobs the index references (live secrets and kept
/// versions), and no temp files: nothing was left behind.
pub(crate) fn assert_only_referenced(sb: &Sandbox) {
    let mut files = Vec::new();
    for fan in std::fs::read_dir(sb.vault_dir().join("objects")).unwrap() {
        for f in std::fs::read_dir(fan.unwrap().path()).unwrap() {
            files.push(f.unwrap().file_name().to_string_lossy().into_owned());
        }
    }
    files.sort();
    let referenced: Vec<String> = sb
        .vault()
        .object_ids()
        .unwrap()
        .iter()
        .map(|id| id.as_str().to_owned())
        .collect();
    assert_eq!(files, referenced, "blob files vs referenced blobs");
    assert_eq!(
        std::fs::read_dir(sb.vault_dir().join("tmp"))
            .unwrap()
            .count(),
        0
    );
}

/// Exactly one blob per live secret, and no temp files.
pub(crate) fn assert_no_leftovers(sb: &Sandbox, live: usize) {
    let mut blobs = 0;
    for fan in std::fs::read_dir(sb.vault_dir().join("objects")).unwrap() {
        blobs += std::fs::read_dir(fan.unwrap().path()).unwrap().count();
    }
    assert_eq!(blobs, live, "blob files vs live secrets");
    assert_eq!(
        std::fs::read_dir(sb.vault_dir().join("tmp"))
            .unwrap()
            .count(),
        0
    );
}

/// A private D-Bus session with a real gnome-keyring Secret Service,
/// unlocked with a throwaway password, in temp HOME and XDG_RUNTIME_DIR.
/// Both daemons are killed on drop.
pub(crate) struct Keyring {
    _home: tempfile::TempDir,
    bus: Child,
    keyring: Child,
    address: String,
}

impl Keyring {
    /// Starts the session, or `None` where the tools are missing outside CI
    /// (under CI that is a failure, not a skip).
    pub(crate) fn start() -> Option<Keyring> {
        if !have_tools(&["dbus-daemon", "gnome-keyring-daemon"]) {
            return None;
        }
        use std::io::{BufRead, BufReader};
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::tempdir().unwrap();
        let runtime = home.path().join("run");
        std::fs::create_dir(&runtime).unwrap();
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
        // A bus of our own with no service activation: nothing but the
        // daemon started below may answer for the Secret Service.
        let config = home.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:dir={}</listen>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                runtime.display()
            ),
        )
        .unwrap();
        let mut bus = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dbus-daemon");
        let mut line = String::new();
        BufReader::new(bus.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line.trim().to_owned();
        assert!(
            address.starts_with("unix:"),
            "dbus-daemon printed {address:?}"
        );
        let mut keyring = Command::new("gnome-keyring-daemon")
            .args(["--foreground", "--unlock", "--components=secrets"])
            .env("HOME", home.path())
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start gnome-keyring-daemon");
        // The unlock password, then EOF.
        keyring
            .stdin
            .take()
            .unwrap()
            .write_all(b"test-password")
            .unwrap();
        let k = Keyring {
            _home: home,
            bus,
            keyring,
            address,
        };
        k.wait_ready();
        Some(k)
    }

    /// Waits until the Secret Service answers on the bus.
    fn wait_ready(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let owned = Command::new("dbus-send")
                .args([
                    "--session",
                    "--print-reply",
                    "--dest=org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus.NameHasOwner",
                    "string:org.freedesktop.secrets",
                ])
                .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("boolean true"));
            if owned {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the Secret Service did not come up"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) the keyring daemon: an
    /// unresponsive Secret Service.
    pub(crate) fn freeze(&self, frozen: bool) {
        let sig = if frozen { "-STOP" } else { "-CONT" };
        let ok = Command::new("kill")
            .args([sig, &self.keyring.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Keyring {
    fn drop(&mut self) {
        self.freeze(false);
        let _ = self.keyring.kill();
        let _ = self.keyring.wait();
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}

/// Every file under `root` (directories included), depth first.
pub(crate) fn walk(root: &Path, out: &mut Vec<PathBuf>) {
    out.push(root.to_owned());
    if root.is_dir() {
        for e in std::fs::read_dir(root).unwrap() {
            walk(&e.unwrap().path(), out);
        }
    }
}

/// Fails if any file under `root` holds `marker`.
#[track_caller]
pub(crate) fn assert_nowhere_on_disk(root: &Path, marker: &[u8]) {
    let mut paths = Vec::new();
    walk(root, &mut paths);
    for p in paths.iter().filter(|p| p.is_file()) {
        let bytes = std::fs::read(p).unwrap();
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker),
            "plaintext found in {}",
            p.display()
        );
    }
}
