//! How to open a vault: `VaultConfig`, its defaults and the limits.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::backend::{BackendOptions, BackendPreference};

/// The default largest value, in bytes.
pub const DEFAULT_MAX_VALUE_SIZE: usize = 64 * 1024;
/// The largest `max_value_size` anything accepts (16 MiB): values live in
/// memory whole.
pub const MAX_VALUE_SIZE_LIMIT: usize = 16 * 1024 * 1024;
/// The on-disk vault format this build writes (recorded in the index).
pub(super) const VAULT_FORMAT: &str = crate::index::FORMAT;
pub(super) const LOCK_FILE: &str = "lock";
const IDENTITY_DIR_NAME: &str = "identity";

/// How to open a vault.
#[derive(Debug, Clone)]
pub struct VaultConfig {
    /// The vault directory: the index, the lock file and, with the
    /// encrypted-file backend, the sealed blobs.
    pub vault_dir: PathBuf,
    /// Where the device identity lives; `None` means the sibling `identity`
    /// directory of the vault directory (`<vault-dir>/../identity`).
    pub identity_dir: Option<PathBuf>,
    /// The backend to use: `Auto`, or one requested explicitly, which must
    /// be the one an existing vault records.
    pub backend: BackendPreference,
    /// How to reach OS keystores (timeout, D-Bus address).
    pub backend_options: BackendOptions,
    /// The largest value, in bytes, a put accepts.
    pub max_value_size: usize,
    /// Create the vault (and the identity) if there is none.
    pub create: bool,
    /// Accept a vault directory (and identity and audit directories) owned
    /// by another uid: `--allow-foreign-vault-dir`. Off by default, so root
    /// refuses a directory a user controls; symlinks are refused either way.
    pub allow_foreign_owner: bool,
    /// How long a write waits for the writer lock before it fails (a
    /// writer holds it for milliseconds; a `lock` held longer is a stuck
    /// process or someone who can write the vault directory).
    pub lock_timeout: Duration,
    /// A second SQLite connection for reads, so a read never waits behind
    /// a write's syncs: for long-lived processes (the mount daemon, the
    /// console). A one-shot command turns it off and opens one connection.
    pub separate_reader: bool,
}

/// [`VaultConfig::lock_timeout`] by default.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

impl VaultConfig {
    /// The defaults for the vault in `vault_dir`: the backend recorded or
    /// chosen automatically, created if missing, default limits.
    pub fn new(vault_dir: impl Into<PathBuf>) -> Self {
        VaultConfig {
            vault_dir: vault_dir.into(),
            identity_dir: None,
            backend: BackendPreference::Auto,
            backend_options: BackendOptions::default(),
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
            create: true,
            allow_foreign_owner: false,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            separate_reader: true,
        }
    }

    /// The identity directory in force for this config.
    pub fn identity_dir(&self) -> PathBuf {
        self.identity_dir
            .clone()
            .unwrap_or_else(|| default_identity_dir(&self.vault_dir))
    }
}

/// `$XDG_STATE_HOME/sealfs/vault`, else `~/.local/state/sealfs/vault`;
/// `None` when neither variable holds an absolute path.
pub fn default_vault_dir() -> Option<PathBuf> {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    if let Some(state) = std::env::var_os("XDG_STATE_HOME").and_then(absolute) {
        return Some(state.join("sealfs").join("vault"));
    }
    std::env::var_os("HOME")
        .and_then(absolute)
        .map(|home| home.join(".local/state/sealfs/vault"))
}

/// `<vault-dir>/../identity`, computed lexically.
pub fn default_identity_dir(vault_dir: &Path) -> PathBuf {
    match vault_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.join(IDENTITY_DIR_NAME),
        Some(_) => PathBuf::from(IDENTITY_DIR_NAME),
        None => vault_dir.join("..").join(IDENTITY_DIR_NAME),
    }
}
