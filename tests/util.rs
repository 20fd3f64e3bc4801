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
            .env_remove("SEALFS_BACKEND")
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
