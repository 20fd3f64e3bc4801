//! Helpers shared by every integration test: a sandbox with its own vault
//! and identity directories, and a runner for the real binary.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use sealfs::{Vault, VaultConfig, VaultRef};

pub const BIN: &str = env!("CARGO_BIN_EXE_sealfs");

/// A temp dir holding `vault/` and `identity/`, removed on drop.
pub struct Sandbox {
    pub root: tempfile::TempDir,
}

/// What a finished command did.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code,
            Some(0),
            "expected success, stderr: {}",
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn fails(self, code: i32, needle: &str) -> Self {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit {code}, stderr: {}",
            self.stderr
        );
        assert!(
            self.stderr.contains(needle),
            "stderr {:?} lacks {needle:?}",
            self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "panic: {}", self.stderr);
        assert!(
            !self.stderr.contains("RUST_BACKTRACE"),
            "backtrace hint: {}",
            self.stderr
        );
        self
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8(self.stdout.clone()).expect("stdout is UTF-8")
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code(),
            stdout: o.stdout,
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Sandbox {
    pub fn new() -> Self {
        Sandbox {
            root: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.root.path()
    }

    pub fn vault_dir(&self) -> PathBuf {
        self.path().join("vault")
    }

    pub fn identity_dir(&self) -> PathBuf {
        self.path().join("identity")
    }

    /// The binary with this sandbox's vault and a clean environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env_remove("SEALFS_IDENTITY_DIR")
            // Hermetic on desktops too, where `auto` would find a keyring.
            .env("SEALFS_BACKEND", "encrypted-file")
            .env_remove("SEALFS_MAX_VALUE_SIZE")
            .env("SEALFS_VAULT_DIR", self.vault_dir())
            .current_dir(self.path());
        c
    }

    /// Runs the binary with `stdin` as its standard input.
    pub fn run(&self, args: &[&str], stdin: &[u8]) -> Run {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sealfs");
        feed(&mut child, stdin);
        child.wait_with_output().expect("wait for sealfs").into()
    }

    pub fn set(&self, r: &str, value: &[u8]) {
        self.run(&["set", r], value).ok();
    }

    pub fn get(&self, r: &str) -> Vec<u8> {
        self.run(&["get", r], b"").ok().stdout
    }

    /// The library's view of the same vault.
    pub fn vault(&self) -> Vault {
        Vault::open(VaultConfig::new(self.vault_dir())).expect("open vault")
    }

    /// Where the encrypted-file backend keeps the current blob of `r`.
    pub fn blob_path(&self, r: &str) -> PathBuf {
        let r = VaultRef::parse(r).unwrap();
        let conn = rusqlite::Connection::open(self.vault_dir().join("index.sqlite3")).unwrap();
        let id: String = conn
            .query_row(
                "SELECT object_id FROM secrets WHERE scope = ?1 AND key = ?2",
                [r.scope().to_string(), r.key().to_string()],
                |row| row.get(0),
            )
            .expect("secret is in the index");
        self.vault_dir().join("objects").join(&id[..2]).join(&id)
    }

    /// Runs SQL against the index, for forging states the CLI refuses to make.
    pub fn index_exec(&self, sql: &str) {
        let conn = rusqlite::Connection::open(self.vault_dir().join("index.sqlite3")).unwrap();
        conn.execute_batch(sql).unwrap();
    }
}

/// Writes `input` to the child's stdin and closes it.
pub fn feed(child: &mut Child, input: &[u8]) {
    let mut stdin = child.stdin.take().expect("piped stdin");
    // The child may exit early (bad input) and close its end: not our error.
    let _ = stdin.write_all(input);
}

/// A small deterministic generator, so a failing run can be repeated.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Exactly one blob per live secret, and no temp files.
pub fn assert_no_leftovers(sb: &Sandbox, live: usize) {
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
pub struct Keyring {
    _home: tempfile::TempDir,
    bus: Child,
    keyring: Child,
    address: String,
}

impl Keyring {
    /// Starts the session, or `None` where the tools are missing outside CI
    /// (under CI that is a failure, not a skip).
    pub fn start() -> Option<Keyring> {
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

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) the keyring daemon: an
    /// unresponsive Secret Service.
    pub fn freeze(&self, frozen: bool) {
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

/// Whether every tool in `bins` is on PATH. Missing ones are a skip with a
/// message locally, and a failure when `CI` is set.
pub fn have_tools(bins: &[&str]) -> bool {
    let have = |bin: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
    };
    let missing: Vec<&str> = bins.iter().copied().filter(|b| !have(b)).collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but {missing:?} is missing (scripts/setup.sh installs it)"
    );
    eprintln!("skipping: {missing:?} not installed here");
    false
}

/// A free TCP port on loopback (bound, then released for the caller).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One etcd member on loopback with a temp data directory, killed by pid
/// on drop (and restartable on the same data).
pub struct EtcdMember {
    pub name: String,
    pub client_url: String,
    peer_url: String,
    cluster: String,
    data: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl EtcdMember {
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        let log = std::fs::File::create(&self.log).unwrap();
        let child = Command::new("etcd")
            .args(["--name", &self.name])
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--listen-client-urls", &self.client_url])
            .args(["--advertise-client-urls", &self.client_url])
            .args(["--listen-peer-urls", &self.peer_url])
            .args(["--initial-advertise-peer-urls", &self.peer_url])
            .args(["--initial-cluster", &self.cluster])
            .args(["--initial-cluster-token", "sealfs-test"])
            .args(["--initial-cluster-state", "new"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
    }

    /// SIGKILL, as a crashed host would go.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for EtcdMember {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An etcd cluster of `n` members on free loopback ports.
pub struct Etcd {
    pub members: Vec<EtcdMember>,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts the cluster and waits until it answers, or `None` where etcd
    /// is not installed outside CI.
    pub fn start(n: usize) -> Option<Etcd> {
        if !have_tools(&["etcd", "etcdctl"]) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<EtcdMember> = ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| EtcdMember {
                name: format!("m{i}"),
                client_url: format!("http://127.0.0.1:{client}"),
                peer_url: format!("http://127.0.0.1:{peer}"),
                cluster: cluster.clone(),
                data: dir.path().join(format!("m{i}")),
                child: None,
                log: dir.path().join(format!("m{i}.log")),
            })
            .collect();
        for m in &mut members {
            m.start();
        }
        let etcd = Etcd { members, _dir: dir };
        etcd.wait_healthy();
        Some(etcd)
    }

    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.client_url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits (up to 30 s) until the cluster serves a linearizable read.
    pub fn wait_healthy(&self) {
        let running: Vec<&str> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.client_url.as_str())
            .collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let ok = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args([
                    "--endpoints",
                    &running.join(","),
                    "--command-timeout=2s",
                    "get",
                    "/probe",
                ])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "etcd did not become healthy"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// `etcdctl` against the cluster.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoints()])
            .args(args)
            .output()
            .expect("run etcdctl")
    }
}
