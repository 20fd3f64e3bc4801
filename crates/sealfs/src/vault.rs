//! `Vault`: the put/get/delete/list flow over the index, the keys and a
//! backend.
//!
//! Writers (put, delete) hold an exclusive lock on `<vault-dir>/lock` for the
//! whole operation, so one write happens at a time across processes; readers
//! take no lock (SQLite WAL gives them a consistent view). A put:
//!
//! 1. records the new object id in `pending` (committed),
//! 2. writes the sealed blob to the backend (atomic per blob),
//! 3. commits the index row pointing at it (the commit point: from here on the
//!    write is acknowledged) and moves the replaced object id to `pending`,
//! 4. deletes the replaced blob and clears it from `pending`.
//!
//! A crash anywhere leaves the old value or the new one; whatever `pending`
//! still names and nothing references is deleted by the next writer.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::anchor::{AnchorError, AnchorStore};
use crate::backend::{
    self, BackendChoice, BackendContext, BackendError, BackendKind, BackendOptions,
    BackendPreference, BlobBackend, ObjectId,
};
use crate::crypto::{CryptoError, KeyId, KeyRing};
use crate::fsutil;
use crate::identity::{DeviceIdentity, IdentityError};
use crate::index::{Index, IndexError, Row, State as IndexState, VaultRecord, INDEX_FILE};
use crate::scope::{SecretKey, VaultRef, VaultScope};
use crate::secret::SensitiveBytes;

/// The default largest value, in bytes.
pub const DEFAULT_MAX_VALUE_SIZE: usize = 64 * 1024;
/// The largest `max_value_size` anything accepts (16 MiB): values live in
/// memory whole.
pub const MAX_VALUE_SIZE_LIMIT: usize = 16 * 1024 * 1024;
/// The on-disk vault format this build writes (recorded in the index).
pub const VAULT_FORMAT: &str = crate::index::FORMAT;
pub const LOCK_FILE: &str = "lock";
pub const IDENTITY_DIR_NAME: &str = "identity";

/// How to open a vault.
#[derive(Debug, Clone)]
pub struct VaultConfig {
    pub vault_dir: PathBuf,
    /// Where the device identity lives; `None` means the sibling `identity`
    /// directory of the vault directory (`<vault-dir>/../identity`).
    pub identity_dir: Option<PathBuf>,
    pub backend: BackendPreference,
    /// How to reach OS keystores (timeout, D-Bus address).
    pub backend_options: BackendOptions,
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
}

/// [`VaultConfig::lock_timeout`] by default.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

impl VaultConfig {
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

/// Metadata of one secret. Never holds the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub vault_ref: VaultRef,
    pub len: u64,
    pub created: SystemTime,
    pub updated: SystemTime,
    pub version: u64,
    /// Read-once: the first successful read consumes it.
    pub once: bool,
}

/// How to store a value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Read-once: the first successful `get` returns the value and deletes it.
    pub once: bool,
    /// Stores an empty value rather than refusing it: the mount, where a
    /// file emptied by `: > key` or `truncate -s 0` must hold nothing
    /// rather than keep its old value (`docs/policy.md`).
    pub allow_empty: bool,
}

/// A scope that exists: registered (an empty directory made with mkdir, with
/// its owner) and/or holding secrets. `global` always exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeInfo {
    pub scope: VaultScope,
    /// The uid that created the scope through the mount, if recorded.
    pub owner_uid: Option<u32>,
    /// Made explicitly (stays while empty) rather than implied by its secrets.
    pub registered: bool,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    #[error("no vault at {0}")]
    NoVault(PathBuf),
    #[error("secret not found: {0}")]
    NotFound(VaultRef),
    #[error("refusing to store an empty value for {0}")]
    EmptyValue(VaultRef),
    #[error("value for {vault_ref} is {len} bytes, over the limit of {max} bytes")]
    TooLarge {
        vault_ref: VaultRef,
        len: usize,
        max: usize,
    },
    #[error("integrity check failed for {vault_ref}")]
    Integrity {
        vault_ref: VaultRef,
        #[source]
        source: CryptoError,
    },
    #[error("scope {0} exists already")]
    ScopeExists(VaultScope),
    #[error("scope {0} does not exist")]
    NoSuchScope(VaultScope),
    #[error("scope {0} is not empty")]
    ScopeNotEmpty(VaultScope),
    #[error("the global scope always exists and cannot be created or removed")]
    GlobalScope,
    #[error(
        "the vault at {dir} was migrated to the {to} backend since it was opened; open it again"
    )]
    Migrated { dir: PathBuf, to: String },
    #[error("migration check failed: blob {0} read back from the new backend differs from what was written")]
    MigrationVerify(ObjectId),
    #[error("{0} already holds a different device identity; choose another --identity-dir for this vault")]
    IdentityConflict(PathBuf),
    #[error("injected fault at {0:?}")]
    Fault(FaultPoint),
    #[error("migration interrupted at {0}")]
    Interrupted(&'static str),
    #[error("secret {0} exists already")]
    Exists(VaultRef),
    #[error("{0} is not supported by this vault")]
    Unsupported(&'static str),
    #[error("the sealed blob of {0} is missing from the backend")]
    BlobMissing(VaultRef),
    #[error("the device identity in {identity_dir} does not belong to the vault at {vault_dir} (the vault's key is {expected}, this identity derives {found})")]
    WrongIdentity {
        vault_dir: PathBuf,
        identity_dir: PathBuf,
        expected: KeyId,
        found: KeyId,
    },
    #[error("the vault at {dir} uses backend `{recorded}`, but `{requested}` was requested (use --backend {recorded} or auto)")]
    BackendConflict {
        dir: PathBuf,
        recorded: BackendKind,
        requested: BackendKind,
    },
    #[error(
        "the vault at {dir} uses backend `{name}`, which this build of sealfs does not support"
    )]
    UnsupportedBackend { dir: PathBuf, name: String },
    #[error("the vault at {dir} has format {found:?}; this build reads format {VAULT_FORMAT:?} (upgrade sealfs)")]
    UnsupportedFormat { dir: PathBuf, found: String },
    #[error("the vault index at {dir} is incomplete: {what} is missing or invalid")]
    BadMeta { dir: PathBuf, what: &'static str },
    #[error("vault rolled back: {why} (restore the newest copy of {dir}, or accept this one with `sealfs recover --accept-rollback`)")]
    RolledBack { dir: PathBuf, why: String },
    #[error("the vault at {dir} was last used at another path ({at} says so): refusing a vault put in its place (if you moved or restored it here on purpose, run `sealfs recover --accept-move`)")]
    Elsewhere { dir: PathBuf, at: String },
    #[error(transparent)]
    Anchor(AnchorError),
    #[error("another process has held the writer lock {path} for over {timeout:?}; try again, or find the process holding it (fuser {path})")]
    LockTimeout { path: PathBuf, timeout: Duration },
    #[error("the vault index at {dir} is missing or empty, but objects/ holds {blobs} sealed blobs: refusing to start a new vault over them (restore index.sqlite3 from a backup)")]
    IndexLost { dir: PathBuf, blobs: usize },
    #[error("cannot {what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Index(#[from] IndexError),
}

impl VaultError {
    /// This error's [`ErrorKind`](crate::ErrorKind): what the mount, the
    /// console and the command line decide on.
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind as K;
        use VaultError as E;
        match self {
            E::NoVault(_) | E::NotFound(_) | E::NoSuchScope(_) => K::NotFound,
            E::EmptyValue(_) | E::BackendConflict { .. } | E::IdentityConflict(_) => {
                K::InvalidInput
            }
            E::TooLarge { .. } => K::TooLarge,
            E::Exists(_) | E::ScopeExists(_) => K::Exists,
            E::ScopeNotEmpty(_) => K::NotEmpty,
            E::GlobalScope
            | E::Unsupported(_)
            | E::UnsupportedBackend { .. }
            | E::UnsupportedFormat { .. } => K::Unsupported,
            E::Integrity { .. }
            | E::MigrationVerify(_)
            | E::BlobMissing(_)
            | E::WrongIdentity { .. }
            | E::BadMeta { .. }
            | E::RolledBack { .. }
            | E::Elsewhere { .. }
            | E::IndexLost { .. } => K::Integrity,
            E::LockTimeout { .. } => K::Unavailable,
            E::Anchor(e) => e.kind(),
            E::Backend(e) => e.kind(),
            E::Index(e) => e.kind(),
            E::Migrated { .. }
            | E::Fault(_)
            | E::Interrupted(_)
            | E::Io { .. }
            | E::Identity(_) => K::Other,
        }
    }
}

/// Points inside a write where a test can make the operation stop, as a
/// crash there would (the process dies, the lock is released, nothing after
/// the point happens). Not for production use.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// The new object id is recorded as pending; no blob yet.
    PutAfterPending,
    /// The new blob is written; the index does not point at it yet.
    PutAfterBlob,
    /// The index points at the new blob; the replaced blob is not deleted yet.
    PutAfterCommit,
    /// The row is gone from the index; its blob is not deleted yet.
    DeleteAfterCommit,
    /// A format-1 vault is about to be converted (nothing written yet).
    UpgradeBeforeCommit,
    /// The converted index is committed; its anchor is not written yet.
    UpgradeAfterCommit,
}

type FaultHook = Box<dyn Fn(FaultPoint) -> bool + Send + Sync>;

/// An open vault. `Send + Sync`: share it across threads by reference.
pub struct Vault {
    fault: Option<FaultHook>,
    dir: PathBuf,
    /// The vault directory as opened and checked once at open (not a
    /// symlink, owned by this uid unless allowed, not group/world-writable);
    /// the lock file is opened through it.
    dir_handle: Arc<fsutil::PrivateDir>,
    /// `VaultConfig::allow_foreign_owner`, for the identity directory.
    allow_foreign_owner: bool,
    identity_dir: PathBuf,
    /// Hex of the vault id (the key-derivation salt).
    vault_id: String,
    reader: Mutex<Index>,
    writer: Mutex<Index>,
    backend: Box<dyn BlobBackend>,
    keys: Arc<KeyRing>,
    choice: BackendChoice,
    identity_store: IdentityStore,
    max_value_size: usize,
    /// The last anchor this process read or wrote.
    anchored: Mutex<Option<IndexState>>,
    /// Kept handles for reading the anchor file afresh at every check.
    anchor_cache: crate::anchor::ReadCache,
    /// What the anchor binds the vault to: its canonical path's digest.
    place: [u8; 32],
    lock_timeout: Duration,
}

/// How [`Vault::open_with`] treats the rollback anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Anchoring {
    /// Refuse an index older than its anchor, or anchored elsewhere.
    Enforce,
    /// Open an index older than its anchor ([`Vault::accept_rollback`]).
    AcceptRollback,
    /// Open a vault anchored at another path ([`Vault::accept_move`]).
    AcceptMove,
}

/// A value `put` would accept for `r`: not empty, at most `max` bytes.
/// Callers that must refuse before opening a vault (the console) use it
/// directly.
pub fn check_value(r: &VaultRef, value: &SensitiveBytes, max: usize) -> Result<(), VaultError> {
    if value.is_empty() {
        return Err(VaultError::EmptyValue(r.clone()));
    }
    if value.len() > max {
        return Err(VaultError::TooLarge {
            vault_ref: r.clone(),
            len: value.len(),
            max,
        });
    }
    Ok(())
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> VaultError + 'a {
    move |source| VaultError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// The exclusive writer lock of a vault, released on drop (and by the kernel
/// if the process dies).
struct WriteLock(#[allow(dead_code)] File);

/// Takes the writer lock, waiting at most `timeout` for another holder.
/// Another vault of this identity directory still anchored at `place` is
/// retired (`anchor::retire_others_at`). Best effort, with a warning: the
/// vault being created or accepted works either way.
fn retire_others(
    identity_dir: &Path,
    identity: &DeviceIdentity,
    vault_id: &[u8],
    config: &VaultConfig,
    place: [u8; 32],
) {
    let own = crate::hex::hex(vault_id);
    match crate::anchor::retire_others_at(
        identity_dir,
        identity,
        &own,
        config.allow_foreign_owner,
        place,
    ) {
        Ok(retired) => {
            for id in retired {
                tracing::info!(vault_id = %id, "retired the anchor of the vault last used at this path: that vault is refused here from now on");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not retire the anchors of vaults last used at this path")
        }
    }
}

fn write_lock(dir: &fsutil::PrivateDir, timeout: Duration) -> Result<WriteLock, VaultError> {
    let path = dir.join(LOCK_FILE);
    let f = dir
        .open_lock_file(LOCK_FILE)
        .map_err(io("open the lock file", &path))?;
    let deadline = Instant::now() + timeout;
    // Writers hold the lock for a commit (a few ms): poll finely, so a
    // waiter gets it about as soon as a blocking lock would.
    let mut pause = Duration::from_micros(20);
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(WriteLock(f)),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(2));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(VaultError::LockTimeout { path, timeout })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("lock", &path)(e)),
        }
    }
}

/// A point in a migration, reported to [`Vault::migrate_with`]'s hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrateStage {
    /// This many blobs are copied and verified.
    Copied(usize),
    /// The vault now uses the new backend.
    Committed,
    /// This many blobs are deleted from the old backend.
    Deleted(usize),
}

/// What a migration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateReport {
    pub from: BackendKind,
    pub to: BackendKind,
    /// Secrets moved (0 when there was nothing to do).
    pub blobs: usize,
    /// Whether this run finished an interrupted one.
    pub resumed: bool,
}

fn copy_verified(target: &dyn BlobBackend, id: &ObjectId, blob: &[u8]) -> Result<(), VaultError> {
    target.put_blob(id, blob)?;
    let back = zeroize::Zeroizing::new(target.get_blob(id)?);
    if back.as_slice() != blob {
        return Err(VaultError::MigrationVerify(id.clone()));
    }
    Ok(())
}

/// Where a vault's device identity is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityStore {
    /// `<identity-dir>/device.key`, an owner-only file.
    File,
    /// The platform keystore that holds the vault's blobs.
    Backend,
}

impl IdentityStore {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityStore::File => "file",
            IdentityStore::Backend => "backend",
        }
    }

    fn load(
        self,
        identity_dir: &Path,
        backend: &dyn BlobBackend,
        allow_foreign_owner: bool,
    ) -> Result<DeviceIdentity, VaultError> {
        match self {
            IdentityStore::File => Ok(DeviceIdentity::load_checked(
                identity_dir,
                allow_foreign_owner,
            )?),
            IdentityStore::Backend => {
                let bytes =
                    zeroize::Zeroizing::new(match backend.get_blob(&ObjectId::identity()) {
                        Err(BackendError::NotFound(_)) => {
                            return Err(VaultError::Identity(IdentityError::MissingInStore(
                                backend.kind().to_string(),
                            )))
                        }
                        other => other?,
                    });
                Ok(DeviceIdentity::from_slice(&bytes)?)
            }
        }
    }
}

/// The clear hints of the index (`meta`): enough to find the identity and
/// derive the keys, never trusted alone: the sealed vault record must agree.
struct Hints {
    format: String,
    vault_id: Vec<u8>,
    key_id: Option<KeyId>,
    backend: BackendKind,
}

impl Hints {
    fn read(index: &Index, dir: &Path) -> Result<Hints, VaultError> {
        let format = index.meta("format")?.unwrap_or_default();
        if format != VAULT_FORMAT && format != "1" {
            return Err(VaultError::UnsupportedFormat {
                dir: dir.to_owned(),
                found: format,
            });
        }
        let bad = |what| VaultError::BadMeta {
            dir: dir.to_owned(),
            what,
        };
        let vault_id = index
            .meta("vault_id")?
            .and_then(|s| crate::hex::unhex(&s))
            .ok_or_else(|| bad("vault_id"))?;
        // A hint, but a required one: an absent or unreadable key id would
        // skip the identity check (and let a forged format-1 index upgrade).
        let key_id = Some(
            index
                .meta("key_id")?
                .and_then(|s| KeyId::from_hex(&s))
                .ok_or_else(|| bad("key_id"))?,
        );
        let recorded = index.meta("backend")?.ok_or_else(|| bad("backend"))?;
        let backend = recorded
            .parse()
            .map_err(|_| VaultError::UnsupportedBackend {
                dir: dir.to_owned(),
                name: recorded.clone(),
            })?;
        Ok(Hints {
            format,
            vault_id,
            key_id,
            backend,
        })
    }

    fn context(&self, config: &VaultConfig, dir: &Arc<fsutil::PrivateDir>) -> BackendContext {
        BackendContext {
            vault_dir: config.vault_dir.clone(),
            vault_id: crate::hex::hex(&self.vault_id),
            options: config.backend_options.clone(),
            vault_handle: Some(Arc::clone(dir)),
        }
    }
}

/// Where the identity of a vault on `kind` lives: decided by the kind alone
/// (a file for the encrypted-file backend, the keystore for the others),
/// never by data in the vault directory.
fn identity_store_of(kind: BackendKind) -> IdentityStore {
    if kind.is_platform_store() {
        IdentityStore::Backend
    } else {
        IdentityStore::File
    }
}

fn scope_info(row: crate::index::ScopeRow) -> ScopeInfo {
    ScopeInfo {
        scope: row.scope,
        owner_uid: row.owner_uid,
        registered: row.registered,
    }
}

fn now_ms() -> i64 {
    i64::try_from(crate::clock::now_ms()).unwrap_or(i64::MAX)
}

fn time_of(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// A vault directory whose index is gone or empty while sealed blobs remain
/// lost its index: starting a fresh vault there would orphan every value
/// without a word, so it is an error instead.
fn refuse_lost_index(dir: &Path) -> Result<(), VaultError> {
    let objects = dir.join(crate::backend::encrypted_file::EncryptedFile::OBJECTS_DIR);
    let Ok(fans) = std::fs::read_dir(&objects) else {
        return Ok(());
    };
    let blobs: usize = fans
        .flatten()
        .filter_map(|fan| std::fs::read_dir(fan.path()).ok())
        .map(|files| files.flatten().count())
        .sum();
    if blobs == 0 {
        return Ok(());
    }
    Err(VaultError::IndexLost {
        dir: dir.to_path_buf(),
        blobs,
    })
}

impl Vault {
    /// Opens the vault in `config.vault_dir`, creating it if allowed.
    pub fn open(config: VaultConfig) -> Result<Vault, VaultError> {
        Self::open_with(config, Anchoring::Enforce)
    }

    fn open_with(config: VaultConfig, anchoring: Anchoring) -> Result<Vault, VaultError> {
        let enforce_anchor = anchoring == Anchoring::Enforce;
        let dir = config.vault_dir.clone();
        let identity_dir = config.identity_dir();
        // The vault directory, opened once and checked before anything in
        // it is touched: not a symlink, owned by this uid (another only
        // with --allow-foreign-vault-dir), not writable by group or others.
        // Created 0700 if missing and `config.create`.
        let Some(dir_handle) =
            fsutil::open_vault_dir(&dir, config.create, config.allow_foreign_owner)
                .map_err(io("open the vault directory", &dir))?
        else {
            return Err(VaultError::NoVault(dir));
        };
        let dir_handle = Arc::new(dir_handle);
        let place = crate::anchor::place_of(
            &dir_handle
                .real_path()
                .map_err(io("resolve the path of", &dir))?,
        );
        let index_path = Index::path_in(&dir);
        // SQLite opens the index by path (and would follow a symlinked
        // database file): a symlink there is refused first.
        dir_handle
            .refuse_sqlite_symlinks(INDEX_FILE)
            .map_err(io("open the index", &index_path))?;
        // Checked before SQLite touches the file: opening writes to it.
        if std::fs::metadata(&index_path).map_or(true, |m| m.len() == 0) {
            refuse_lost_index(&dir)?;
        }
        if !index_path.exists() {
            if !config.create {
                return Err(VaultError::NoVault(dir));
            }
            // Create the file owner-only before SQLite does: its -wal and -shm
            // files take the database file's mode.
            dir_handle
                .open_or_create(INDEX_FILE)
                .map_err(io("create the index", &index_path))?;
        }
        let mut writer = Index::open(&index_path)?;
        if !writer.is_initialised()? {
            refuse_lost_index(&dir)?;
            if !config.create {
                return Err(VaultError::NoVault(dir));
            }
            let _lock = write_lock(&dir_handle, config.lock_timeout)?;
            if !writer.is_initialised()? {
                Self::initialise(&mut writer, &config, &identity_dir, &dir_handle, place)?;
            }
        }
        let hints = Hints::read(&writer, &dir)?;
        let kind = hints.backend;
        let choice = match config.backend {
            BackendPreference::Explicit(requested) if requested != kind => {
                return Err(VaultError::BackendConflict {
                    dir,
                    recorded: kind,
                    requested,
                })
            }
            BackendPreference::Explicit(_) => BackendChoice {
                kind,
                reason: format!(
                    "requested explicitly (--backend {kind}) and recorded in the vault"
                ),
            },
            BackendPreference::Auto => BackendChoice {
                kind,
                reason: "recorded in the vault".to_owned(),
            },
        };
        tracing::debug!(backend = %choice.kind, reason = %choice.reason, "backend selected");
        let backend = backend::build(kind, &hints.context(&config, &dir_handle))?;
        let identity_store = identity_store_of(kind);
        let identity = identity_store.load(&identity_dir, &*backend, config.allow_foreign_owner)?;
        let keys = Arc::new(KeyRing::derive(&identity, &hints.vault_id));
        drop(identity);
        if let Some(expected) = hints.key_id.filter(|k| *k != keys.key_id()) {
            return Err(VaultError::WrongIdentity {
                vault_dir: dir,
                identity_dir,
                expected,
                found: keys.key_id(),
            });
        }
        writer.set_keys(Arc::clone(&keys));
        let mut reader = Index::open(&index_path)?;
        reader.set_keys(Arc::clone(&keys));
        // SQLite opened the index by path: the path must still lead to the
        // directory checked (and whose place the anchor compares).
        if !dir_handle
            .still_at_path()
            .map_err(io("open the vault directory", &dir))?
        {
            return Err(io("open the vault directory", &dir)(std::io::Error::other(
                "it was moved or replaced while being opened",
            )));
        }
        let mut vault = Vault {
            fault: None,
            dir,
            dir_handle,
            allow_foreign_owner: config.allow_foreign_owner,
            identity_dir,
            vault_id: crate::hex::hex(&hints.vault_id),
            reader: Mutex::new(reader),
            writer: Mutex::new(writer),
            backend,
            keys,
            choice,
            identity_store,
            max_value_size: config.max_value_size,
            anchored: Mutex::new(None),
            anchor_cache: crate::anchor::ReadCache::default(),
            place,
            lock_timeout: config.lock_timeout,
        };
        if hints.format == "1" {
            vault.upgrade_from_v1(anchoring != Anchoring::AcceptRollback)?;
        }
        vault.writer().check_schema()?;
        let record = vault.writer().vault_record()?;
        if record.key_id != vault.keys.key_id().to_hex() || record.backend != kind.as_str() {
            return Err(IndexError::Tampered {
                what: "vault metadata".into(),
                why: "the vault record differs from the clear hints",
            }
            .into());
        }
        vault.choice.reason = match config.backend {
            BackendPreference::Auto => format!("recorded in the vault: {}", record.backend_reason),
            BackendPreference::Explicit(_) => vault.choice.reason.clone(),
        };
        if enforce_anchor {
            vault.verified(|ix| Ok(((), ix.vault_record()?.state()?)))?;
            vault.place_anchor();
            // Tried at every open until it is gone: an upgrade that could
            // not move it (another owner's directory) left it behind.
            vault.move_v1_audit_log();
        }
        {
            // Sweeping what a dead writer left is a write; if it cannot
            // happen now (a full disk), reading must still work, and the
            // next writer sweeps instead.
            let w = vault.writer();
            let swept = w
                .has_pending()
                .map_err(VaultError::from)
                .and_then(|pending| {
                    if pending && enforce_anchor {
                        // Never waits: a held lock must not delay a read.
                        let _lock = vault.lock_and_recover_within(&w, Duration::ZERO)?;
                    }
                    Ok(())
                });
            if let Err(e) = swept {
                tracing::warn!(error = %e, "could not sweep leftovers of an interrupted write; the next write will");
            }
        }
        Ok(vault)
    }

    /// Converts a format-1 vault (names in the clear, metadata not
    /// authenticated) to format 2 under the writer lock, in one SQLite
    /// transaction, then anchors it. A format-1 index beside an existing
    /// anchor is an older copy: refused.
    fn upgrade_from_v1(&mut self, enforce_anchor: bool) -> Result<(), VaultError> {
        let _lock = write_lock(&self.dir_handle, self.lock_timeout)?;
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if w.schema_version()? == crate::index::SCHEMA_VERSION {
            return Ok(()); // another process upgraded it meanwhile
        }
        let anchor = self.anchor_store();
        let anchored = anchor.read(&self.keys).map_err(|e| self.anchor_error(e))?;
        if let Some(a) = anchored.filter(|_| enforce_anchor) {
            return Err(VaultError::RolledBack {
                dir: self.dir.clone(),
                why: format!(
                    "the index is in format 1, but {} says the vault was at commit {} of format 2",
                    anchor.describe(),
                    a.counter
                ),
            });
        }
        let v1 = w.v1_meta()?;
        if let Some(m) = v1.migration {
            return Err(VaultError::Unsupported(if m.is_empty() {
                "upgrading a vault in the middle of a backend migration"
            } else {
                "upgrading a vault in the middle of a backend migration (finish `sealfs migrate` with the previous version first)"
            }));
        }
        let record = VaultRecord {
            format: VAULT_FORMAT.to_owned(),
            key_id: self.keys.key_id().to_hex(),
            backend: self.choice.kind.as_str().to_owned(),
            backend_reason: v1
                .backend_reason
                .unwrap_or_else(|| "chosen when the vault was created".into()),
            created_ms: v1.created_ms.unwrap_or_else(now_ms),
            counter: 0,
            root: String::new(),
            migration_target: None,
            migration_cleanup: None,
        };
        self.fault(FaultPoint::UpgradeBeforeCommit)?;
        let mut state = w.migrate_from_v1(&record)?;
        if let Some(a) = anchored {
            // Accepting an older format-1 copy: past the anchor it had.
            state = w.commit_vault(|r| r.counter = r.counter.max(a.counter))?;
        }
        self.fault(FaultPoint::UpgradeAfterCommit)?;
        drop(w);
        self.anchor_to(state)?;
        tracing::info!(vault = %self.dir.display(), "upgraded the vault to format 2");
        Ok(())
    }

    /// Format 1 kept its audit log (refs, uids, programs) in the vault
    /// directory; it moves to the default place beside it, tried at every
    /// open while it is there. Best effort: a failure is a warning. Only through checked directory handles: a
    /// symlink in its place is removed, never followed; a log already at
    /// the new place is never replaced or appended to (the old one then
    /// stays); and a process working on a directory another uid owns
    /// (root with `--allow-foreign-vault-dir`) moves nothing of theirs.
    fn move_v1_audit_log(&self) {
        let name = crate::audit::AUDIT_FILE;
        let old = self.dir.join(name);
        let new = crate::audit::default_path(&self.dir);
        let moved = || -> std::io::Result<()> {
            let kind = match std::fs::symlink_metadata(&old) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                other => other?.file_type(),
            };
            if kind.is_symlink() {
                return self.dir_handle.remove_file(name);
            }
            if !kind.is_file() {
                return Err(std::io::Error::other("it is not a regular file"));
            }
            #[cfg(unix)]
            if self.dir_handle.trusted_uid() != fsutil::euid() {
                return Err(std::io::Error::other(
                    "the vault directory belongs to another user, who moves it on their next run",
                ));
            }
            let to = fsutil::PrivateDir::open(fsutil::parent_dir(&new), false)?;
            // A hard link fails if a log is there already; then the
            // original goes.
            self.dir_handle.hard_link(name, &to, name)?;
            // What was linked is checked again through the new place: a
            // symlink or FIFO swapped in after the check above is taken
            // back out, never left as the log.
            let linked = to.open_read(name).and_then(|f| f.metadata());
            if !linked.as_ref().is_ok_and(|m| m.is_file()) {
                to.remove_file(name)?;
                return Err(std::io::Error::other(
                    "it was replaced by something other than a regular file while being moved",
                ));
            }
            self.dir_handle.remove_file(name)
        };
        if let Err(e) = moved() {
            tracing::warn!(from = %old.display(), to = %new.display(), error = %e, "could not move the format-1 audit log out of the vault directory");
        }
    }

    fn anchor_store(&self) -> AnchorStore<'_> {
        match self.identity_store {
            IdentityStore::File => AnchorStore::file_in(
                &self.identity_dir,
                &self.vault_id,
                self.allow_foreign_owner,
                self.place,
            )
            .cached(&self.anchor_cache),
            IdentityStore::Backend => AnchorStore::in_backend(&*self.backend, self.place),
        }
    }

    /// An anchor written before anchors bound the vault to its place
    /// (anchor version 1) is rewritten with the place, under the writer
    /// lock. Best effort: the next commit does it otherwise.
    fn place_anchor(&self) {
        let placed = || -> Result<(), VaultError> {
            if self
                .anchor_store()
                .is_placed(&self.keys)
                .map_err(|e| self.anchor_error(e))?
            {
                return Ok(());
            }
            let w = self.writer();
            // Best effort: never wait (a held lock must not delay a read).
            let _lock = write_lock(&self.dir_handle, Duration::ZERO)?;
            let state = w.vault_record()?.state()?;
            self.check_anchor(state, true)?;
            self.anchor_to(state)
        };
        if let Err(e) = placed() {
            tracing::warn!(error = %e, "could not bind the rollback anchor to the vault's path; the next write will");
        }
    }

    /// Records `state` in the anchor (writer lock held).
    fn anchor_to(&self, state: IndexState) -> Result<(), VaultError> {
        self.anchor_store()
            .write(&self.keys, state)
            .map_err(|e| self.anchor_error(e))?;
        *self.anchored.lock().unwrap_or_else(|e| e.into_inner()) = Some(state);
        Ok(())
    }

    /// After a commit: the write is durable in the index; an anchor that
    /// cannot be written now lags one commit, which the next writer
    /// settles, so the write is still acknowledged.
    ///
    /// An anchor that refuses to move (it is past this commit, or at it
    /// with another root: the index was put back under this writer) is
    /// the error: the commit forked the vault and is not acknowledged.
    fn committed(&self, state: IndexState) -> Result<(), VaultError> {
        self.settle(self.anchor_to(state))
    }

    /// The outcome of advancing an anchor after a commit: a fork or a
    /// foreign place is the error; anything else lags one commit.
    fn settle(&self, anchored: Result<(), VaultError>) -> Result<(), VaultError> {
        match anchored {
            Err(VaultError::Anchor(AnchorError::Backward { at, current, new })) => {
                Err(VaultError::RolledBack {
                    dir: self.dir.clone(),
                    why: format!(
                        "this write built commit {new} on an index put back under it; {at} is at commit {current}"
                    ),
                })
            }
            Err(e @ VaultError::Elsewhere { .. }) => Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "could not advance the rollback anchor; the next write will");
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    fn anchor_error(&self, e: AnchorError) -> VaultError {
        match e {
            AnchorError::Corrupt(at) => VaultError::RolledBack {
                dir: self.dir.clone(),
                why: format!("the rollback anchor at {at} is corrupt or belongs to another vault"),
            },
            AnchorError::Elsewhere { at } => VaultError::Elsewhere {
                dir: self.dir.clone(),
                at,
            },
            other => VaultError::Anchor(other),
        }
    }

    /// Compares an index state with the anchor. `Ok(false)`: the index is
    /// older than the anchor, which a reader racing a writer can see; the
    /// caller looks again under the writer lock (`locked`), where older
    /// means rolled back.
    fn check_anchor(&self, state: IndexState, locked: bool) -> Result<bool, VaultError> {
        let mut cached = self.anchored.lock().unwrap_or_else(|e| e.into_inner());
        // Always read afresh: a long-lived process must see another
        // process's commits and an index put back under it.
        *cached = self
            .anchor_store()
            .read(&self.keys)
            .map_err(|e| self.anchor_error(e))?;
        let rolled_back = |why: String| VaultError::RolledBack {
            dir: self.dir.clone(),
            why,
        };
        let Some(a) = *cached else {
            // No anchor yet: a vault whose creation (or upgrade) stopped
            // before its first anchor was written.
            if state.counter <= 1 {
                return Ok(true);
            }
            return Err(rolled_back(format!(
                "the index is at commit {}, but its rollback anchor in {} is missing",
                state.counter,
                self.anchor_store().describe()
            )));
        };
        if state.counter == a.counter {
            if state.root == a.root {
                return Ok(true);
            }
            return Err(rolled_back(format!(
                "the index differs from commit {} recorded in {}",
                a.counter,
                self.anchor_store().describe()
            )));
        }
        // One commit past the anchor: committed, not yet anchored.
        if state.counter == a.counter + 1 {
            return Ok(true);
        }
        if state.counter > a.counter + 1 {
            return Err(rolled_back(format!(
                "the index is at commit {}, but {} says {}: the anchor was replaced by an older one",
                state.counter,
                self.anchor_store().describe(),
                a.counter
            )));
        }
        if locked {
            return Err(rolled_back(format!(
                "the index is at commit {}, older than commit {} recorded in {}",
                state.counter,
                a.counter,
                self.anchor_store().describe()
            )));
        }
        Ok(false)
    }

    /// Runs a read of the index and checks the state it read at against
    /// the anchor; a read older than the anchor is repeated under the
    /// writer lock, where it must agree.
    fn verified<T>(
        &self,
        op: impl Fn(&Index) -> Result<(T, IndexState), IndexError>,
    ) -> Result<T, VaultError> {
        let (out, state) = op(&self.reader())?;
        if self.check_anchor(state, false)? {
            return Ok(out);
        }
        let _lock = write_lock(&self.dir_handle, self.lock_timeout)?;
        let (out, state) = op(&self.reader())?;
        self.check_anchor(state, true)?;
        Ok(out)
    }

    /// Creates a new vault's identity, keys, index and anchor (writer lock
    /// held). With a platform store, the device identity goes into that
    /// store, not into a file.
    fn initialise(
        writer: &mut Index,
        config: &VaultConfig,
        identity_dir: &Path,
        dir: &Arc<fsutil::PrivateDir>,
        place: [u8; 32],
    ) -> Result<(), VaultError> {
        let mut vault_id = [0u8; 16];
        getrandom::fill(&mut vault_id).map_err(|e| {
            io("read random bytes for", &config.vault_dir)(std::io::Error::other(e))
        })?;
        let ctx = BackendContext {
            vault_dir: config.vault_dir.clone(),
            vault_id: crate::hex::hex(&vault_id),
            options: config.backend_options.clone(),
            vault_handle: Some(Arc::clone(dir)),
        };
        let (backend, choice) = backend::select_backend(config.backend, &ctx)?;
        tracing::debug!(backend = %choice.kind, reason = %choice.reason, "backend chosen for a new vault");
        let identity = if choice.kind.is_platform_store() {
            let identity = DeviceIdentity::generate()?;
            backend.put_blob(&ObjectId::identity(), identity.expose())?;
            identity
        } else {
            DeviceIdentity::load_or_create_checked(identity_dir, config.allow_foreign_owner)?
        };
        let keys = Arc::new(KeyRing::derive(&identity, &vault_id));
        writer.set_keys(Arc::clone(&keys));
        let record = VaultRecord {
            format: VAULT_FORMAT.to_owned(),
            key_id: keys.key_id().to_hex(),
            backend: choice.kind.as_str().to_owned(),
            backend_reason: choice.reason.clone(),
            created_ms: now_ms(),
            counter: 0,
            root: String::new(),
            migration_target: None,
            migration_cleanup: None,
        };
        let state = writer.create(&crate::hex::hex(&vault_id), &record)?;
        let anchor = match identity_store_of(choice.kind) {
            IdentityStore::File => AnchorStore::file_in(
                identity_dir,
                &crate::hex::hex(&vault_id),
                config.allow_foreign_owner,
                place,
            ),
            IdentityStore::Backend => AnchorStore::in_backend(&*backend, place),
        };
        if let Err(e) = anchor.write(&keys, state) {
            // Counter 1 without an anchor opens (creation stopped here).
            tracing::warn!(error = %e, "could not write the first rollback anchor; the next write will");
        }
        if identity_store_of(choice.kind) == IdentityStore::File {
            retire_others(identity_dir, &identity, &vault_id, config, place);
        }
        Ok(())
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Index> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, Index> {
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes writes stop at the points where `hook` returns true (tests).
    #[doc(hidden)]
    pub fn set_fault_hook(&mut self, hook: impl Fn(FaultPoint) -> bool + Send + Sync + 'static) {
        self.fault = Some(Box::new(hook));
    }

    fn fault(&self, point: FaultPoint) -> Result<(), VaultError> {
        match &self.fault {
            Some(hook) if hook(point) => Err(VaultError::Fault(point)),
            _ => Ok(()),
        }
    }

    fn check_not_migrated(&self, record: &VaultRecord) -> Result<(), VaultError> {
        if record.backend != self.choice.kind.as_str() {
            return Err(VaultError::Migrated {
                dir: self.dir.clone(),
                to: record.backend.clone(),
            });
        }
        Ok(())
    }

    /// Deletes what interrupted writes left behind. Caller holds the lock.
    fn recover_locked(&self, w: &Index) -> Result<(), VaultError> {
        // What `pending` names is deleted only if no record (checked whole:
        // the clear object ids too) still references it.
        w.verify_all()?;
        self.backend.recover()?;
        w.forget_referenced_pending()?;
        // `pending` is not authenticated: never let it name the reserved
        // items (identity, anchor) of a keystore.
        let reserved = [ObjectId::identity(), ObjectId::anchor()];
        for id in w.orphans()?.into_iter().filter(|id| !reserved.contains(id)) {
            self.backend.delete_blob(&id)?;
            w.remove_pending(&id)?;
        }
        Ok(())
    }

    /// Stores `value` under `r`, replacing any value there. When this
    /// returns `Ok`, the value is durable.
    pub fn put(&self, r: &VaultRef, value: SensitiveBytes) -> Result<Entry, VaultError> {
        self.put_with(r, value, PutOptions::default())
    }

    /// [`Vault::put`] with options (read-once).
    pub fn put_with(
        &self,
        r: &VaultRef,
        value: SensitiveBytes,
        options: PutOptions,
    ) -> Result<Entry, VaultError> {
        if !(options.allow_empty && value.is_empty()) {
            self.check_value(r, &value)?;
        }
        let w = self.writer();
        let _lock = self.lock_and_recover(&w)?;
        let (current, _) = w.row(r)?;
        let row = self.store_blob(&w, r, &value, current.as_ref(), options.once)?;
        self.fault(FaultPoint::PutAfterBlob)?;
        let state = w.commit_put(r, &row, current.as_ref().map(|c| &c.object_id))?;
        self.fault(FaultPoint::PutAfterCommit)?;
        self.committed(state)?;
        if let Some(old) = current {
            self.discard(&w, &old.object_id);
        }
        Ok(self.entry_of(r.clone(), &row))
    }

    fn check_value(&self, r: &VaultRef, value: &SensitiveBytes) -> Result<(), VaultError> {
        check_value(r, value, self.max_value_size)
    }

    /// Takes the writer lock and sweeps what interrupted writers left.
    /// Refuses to write through a backend the vault has migrated away from.
    /// The index must agree with the anchor here (no writer can move
    /// either), and an anchor one commit behind (a writer stopped between
    /// its commit and its anchor) is brought up to date first.
    fn lock_and_recover(&self, w: &Index) -> Result<WriteLock, VaultError> {
        self.lock_and_recover_within(w, self.lock_timeout)
    }

    fn lock_and_recover_within(
        &self,
        w: &Index,
        timeout: Duration,
    ) -> Result<WriteLock, VaultError> {
        let lock = write_lock(&self.dir_handle, timeout)?;
        let record = w.vault_record()?;
        self.check_not_migrated(&record)?;
        let state = record.state()?;
        self.check_anchor(state, true)?;
        if *self.anchored.lock().unwrap_or_else(|e| e.into_inner()) != Some(state) {
            self.anchor_to(state)?;
        }
        if w.has_pending()? {
            self.recover_locked(w)?;
        }
        Ok(lock)
    }

    /// Seals `value` for the next version of `r` and writes the blob, recorded
    /// as pending until the caller commits a row pointing at it. `current`
    /// is the live row of `r`, whose creation time carries over.
    fn store_blob(
        &self,
        w: &Index,
        r: &VaultRef,
        value: &SensitiveBytes,
        current: Option<&Row>,
        once: bool,
    ) -> Result<Row, VaultError> {
        let version = w.next_version(r)?;
        let id = self.keys.object_id(r, version);
        w.add_pending(&id)?;
        self.fault(FaultPoint::PutAfterPending)?;
        let blob = self.keys.seal(r, version, value);
        self.backend.put_blob(&id, &blob)?;
        let now = now_ms();
        Ok(Row {
            object_id: id,
            len: value.len() as u64,
            created_ms: current.map_or(now, |c| c.created_ms),
            updated_ms: now,
            version,
            once,
        })
    }

    /// Best-effort removal of a replaced blob after the commit point: the
    /// write already succeeded, so a failure here only leaves the id in
    /// `pending` for the next writer to sweep.
    fn discard(&self, w: &Index, id: &ObjectId) {
        let result = self
            .backend
            .delete_blob(id)
            .map_err(VaultError::from)
            .and_then(|_| w.remove_pending(id).map_err(VaultError::from));
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not remove a replaced blob; it will be swept later");
        }
    }

    /// The value of `r`, decrypted and authenticated. A read-once secret is
    /// consumed: exactly one caller gets it, later calls get `NotFound`.
    pub fn get(&self, r: &VaultRef) -> Result<SensitiveBytes, VaultError> {
        Ok(self.read(r)?.0)
    }

    /// Like [`Vault::get`], also saying whether this read consumed a
    /// read-once secret (for the audit log).
    pub fn read(&self, r: &VaultRef) -> Result<(SensitiveBytes, bool), VaultError> {
        let mut row = self
            .verified(|ix| ix.row(r))?
            .ok_or_else(|| VaultError::NotFound(r.clone()))?;
        loop {
            if row.once {
                return self.consume(r).map(|v| (v, true));
            }
            match self.backend.get_blob(&row.object_id) {
                Ok(blob) => return self.open_blob(r, &row, &blob).map(|v| (v, false)),
                Err(BackendError::NotFound(_)) => {
                    // A concurrent put or delete may have replaced the blob
                    // between our index read and the backend read: look again.
                    // (Bound first: the reader lock must be released before
                    // the check below takes it again.)
                    let current = self.verified(|ix| ix.row(r))?;
                    match current {
                        None => return Err(VaultError::NotFound(r.clone())),
                        Some(now) if now == row => {
                            self.check_not_migrated(&self.reader().vault_record()?)?;
                            return Err(VaultError::BlobMissing(r.clone()));
                        }
                        Some(now) => row = now,
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reads and deletes `r` under the writer lock, so only one reader wins.
    fn consume(&self, r: &VaultRef) -> Result<SensitiveBytes, VaultError> {
        let w = self.writer();
        let _lock = self.lock_and_recover(&w)?;
        let row = w.row(r)?.0.ok_or_else(|| VaultError::NotFound(r.clone()))?;
        let blob = match self.backend.get_blob(&row.object_id) {
            Err(BackendError::NotFound(_)) => return Err(VaultError::BlobMissing(r.clone())),
            other => other?,
        };
        let value = self.open_blob(r, &row, &blob)?;
        // Rewritten as an ordinary secret since we looked: nothing to consume.
        if row.once {
            let state = w.commit_delete(r, &row)?;
            self.committed(state)?;
            self.discard(&w, &row.object_id);
        }
        Ok(value)
    }

    fn open_blob(
        &self,
        r: &VaultRef,
        row: &Row,
        blob: &[u8],
    ) -> Result<SensitiveBytes, VaultError> {
        self.keys
            .open(r, row.version, blob)
            .map_err(|source| VaultError::Integrity {
                vault_ref: r.clone(),
                source,
            })
    }

    /// Removes `r`; [`VaultError::NotFound`] if there is no such secret.
    pub fn delete(&self, r: &VaultRef) -> Result<(), VaultError> {
        let w = self.writer();
        let _lock = self.lock_and_recover(&w)?;
        let row = w.row(r)?.0.ok_or_else(|| VaultError::NotFound(r.clone()))?;
        let state = w.commit_delete(r, &row)?;
        self.fault(FaultPoint::DeleteAfterCommit)?;
        self.committed(state)?;
        self.discard(&w, &row.object_id);
        Ok(())
    }

    /// Moves `from` to `to`, re-sealed for the new slot, replacing any value
    /// at `to` (unless `no_replace`). Atomic: afterwards exactly one of the
    /// two names holds the value.
    pub fn rename(
        &self,
        from: &VaultRef,
        to: &VaultRef,
        no_replace: bool,
    ) -> Result<Entry, VaultError> {
        let w = self.writer();
        let _lock = self.lock_and_recover(&w)?;
        let from_row = w
            .row(from)?
            .0
            .ok_or_else(|| VaultError::NotFound(from.clone()))?;
        if from == to {
            return Ok(self.entry_of(to.clone(), &from_row));
        }
        let (target, _) = w.row(to)?;
        if no_replace && target.is_some() {
            return Err(VaultError::Exists(to.clone()));
        }
        let value = match self.backend.get_blob(&from_row.object_id) {
            Err(BackendError::NotFound(_)) => return Err(VaultError::BlobMissing(from.clone())),
            other => self.open_blob(from, &from_row, &other?)?,
        };
        let mut to_row = self.store_blob(&w, to, &value, Some(&from_row), from_row.once)?;
        to_row.updated_ms = from_row.updated_ms;
        let replaced = target.as_ref().map(|t| &t.object_id);
        let state = w.commit_rename(from, &from_row, to, &to_row, replaced)?;
        self.committed(state)?;
        self.discard(&w, &from_row.object_id);
        if let Some(t) = &target {
            self.discard(&w, &t.object_id);
        }
        Ok(self.entry_of(to.clone(), &to_row))
    }

    /// Registers an empty scope (a directory made through the mount).
    pub fn create_scope(
        &self,
        scope: &VaultScope,
        owner_uid: Option<u32>,
    ) -> Result<(), VaultError> {
        if *scope == VaultScope::Global {
            return Err(VaultError::GlobalScope);
        }
        let w = self.writer();
        let _lock = self.lock_and_recover(&w)?;
        if w.scope_row(scope)?.0.is_some() {
            return Err(VaultError::ScopeExists(scope.clone()));
        }
        match w.register_scope(scope, owner_uid, now_ms())? {
            Some(state) => self.committed(state)?,
            None => return Err(VaultError::ScopeExists(scope.clone())),
        }
        Ok(())
    }

    /// Removes an empty scope.
    pub fn remove_scope(&self, scope: &VaultScope) -> Result<(), VaultError> {
        if *scope == VaultScope::Global {
            return Err(VaultError::GlobalScope);
        }
        let w = self.writer();
        let _lock = self.lock_and_recover(&w)?;
        if w.scope_has_secrets(scope)? {
            return Err(VaultError::ScopeNotEmpty(scope.clone()));
        }
        match w.unregister_scope(scope)? {
            Some(state) => self.committed(state)?,
            None => return Err(VaultError::NoSuchScope(scope.clone())),
        }
        Ok(())
    }

    /// Whether `scope` exists, and who registered it.
    /// The uid that created `scope` (a session) through the mount, when
    /// that is not this process's effective uid: it reads everything
    /// stored there, so the CLI and the console ask before writing into it.
    pub fn others_session(&self, scope: &VaultScope) -> Result<Option<u32>, VaultError> {
        if !matches!(scope, VaultScope::Session(_)) {
            return Ok(None);
        }
        let owner = self.scope(scope)?.and_then(|s| s.owner_uid);
        #[cfg(unix)]
        return Ok(owner.filter(|uid| *uid != fsutil::euid()));
        #[cfg(not(unix))]
        return Ok(owner);
    }

    pub fn scope(&self, scope: &VaultScope) -> Result<Option<ScopeInfo>, VaultError> {
        if *scope == VaultScope::Global {
            return Ok(Some(ScopeInfo {
                scope: VaultScope::Global,
                owner_uid: None,
                registered: true,
            }));
        }
        Ok(self.verified(|ix| ix.scope_row(scope))?.map(scope_info))
    }

    /// Every scope that exists (registered or holding secrets), sorted;
    /// `global` first.
    pub fn scopes(&self) -> Result<Vec<ScopeInfo>, VaultError> {
        let mut out = vec![ScopeInfo {
            scope: VaultScope::Global,
            owner_uid: None,
            registered: true,
        }];
        out.extend(
            self.verified(|ix| ix.scopes())?
                .into_iter()
                .filter(|s| s.scope != VaultScope::Global)
                .map(scope_info),
        );
        Ok(out)
    }

    /// Metadata of every secret in `scope` (all scopes for `None`), sorted.
    pub fn list(&self, scope: Option<&VaultScope>) -> Result<Vec<Entry>, VaultError> {
        Ok(self
            .verified(|ix| ix.list(scope))?
            .into_iter()
            .map(|(r, row)| self.entry_of(r, &row))
            .collect())
    }

    /// Calls `f` with each key of `scope`, in order, without building the
    /// metadata [`Vault::list`] returns (directory listings of big scopes).
    pub fn for_each_key(
        &self,
        scope: &VaultScope,
        mut f: impl FnMut(SecretKey),
    ) -> Result<(), VaultError> {
        for (r, _) in self.verified(|ix| ix.list(Some(scope)))? {
            f(r.key().clone());
        }
        Ok(())
    }

    /// Metadata of `r` without decrypting it.
    pub fn entry(&self, r: &VaultRef) -> Result<Option<Entry>, VaultError> {
        Ok(self
            .verified(|ix| ix.row(r))?
            .map(|row| self.entry_of(r.clone(), &row)))
    }

    /// The object id of `r`'s current blob (object ids are HMACs and reveal
    /// nothing; tests use it to find the blob they attack).
    #[doc(hidden)]
    pub fn blob_id(&self, r: &VaultRef) -> Result<Option<ObjectId>, VaultError> {
        Ok(self.verified(|ix| ix.row(r))?.map(|row| row.object_id))
    }

    pub fn exists(&self, r: &VaultRef) -> Result<bool, VaultError> {
        Ok(self.verified(|ix| ix.row(r))?.is_some())
    }

    fn entry_of(&self, vault_ref: VaultRef, row: &Row) -> Entry {
        Entry {
            vault_ref,
            len: row.len,
            created: time_of(row.created_ms),
            updated: time_of(row.updated_ms),
            version: row.version,
            once: row.once,
        }
    }

    /// Moves every blob (and a keystore-held identity) to the `to` backend:
    /// copy, verify by reading back, switch the vault over in one commit,
    /// then delete from the old backend. An interruption at any point loses
    /// nothing; running it again finishes the job.
    pub fn migrate(config: VaultConfig, to: BackendKind) -> Result<MigrateReport, VaultError> {
        Self::migrate_with(config, to, |_| Ok(()))
    }

    /// [`Vault::migrate`], calling `hook` after each step (tests inject
    /// interruptions there).
    pub fn migrate_with(
        config: VaultConfig,
        to: BackendKind,
        mut hook: impl FnMut(MigrateStage) -> Result<(), VaultError>,
    ) -> Result<MigrateReport, VaultError> {
        let config = VaultConfig {
            backend: BackendPreference::Auto,
            create: false,
            ..config
        };
        let vault = Vault::open(config.clone())?;
        let w = vault.writer();
        let _lock = vault.lock_and_recover(&w)?;
        let record = w.vault_record()?;
        let from = vault.choice.kind;
        let ctx = BackendContext {
            vault_dir: config.vault_dir.clone(),
            vault_id: vault.vault_id.clone(),
            options: config.backend_options.clone(),
            vault_handle: Some(Arc::clone(&vault.dir_handle)),
        };
        let ids = w.object_ids()?;
        let mut report = MigrateReport {
            from,
            to,
            blobs: ids.len(),
            resumed: record.migration_target.is_some(),
        };

        if from == to {
            // Finish the clean-up of a migration that committed and stopped.
            let Some(old) = record.migration_cleanup else {
                report.blobs = 0;
                return Ok(report);
            };
            let old: BackendKind = old.parse().map_err(|_| VaultError::UnsupportedBackend {
                dir: vault.dir.clone(),
                name: old.clone(),
            })?;
            report.from = old;
            report.resumed = true;
            let old_backend = backend::build(old, &ctx)?;
            vault.clean_up(&w, &*old_backend, &ids, &vault.anchor_store(), &mut hook)?;
            return Ok(report);
        }

        let identity = vault.identity_store.load(
            &vault.identity_dir,
            &*vault.backend,
            vault.allow_foreign_owner,
        )?;
        let target = backend::build(to, &ctx)?;
        let state = w.commit_vault(|r| r.migration_target = Some(to.as_str().to_owned()))?;
        vault.committed(state)?;
        for (n, id) in ids.iter().enumerate() {
            let blob = match vault.backend.get_blob(id) {
                // Copied before an earlier run was interrupted after it
                // deleted the source? Then the target must hold it.
                Err(BackendError::NotFound(_)) => target.get_blob(id)?,
                other => other?,
            };
            copy_verified(&*target, id, &blob)?;
            hook(MigrateStage::Copied(n + 1))?;
        }
        let new_store = identity_store_of(to);
        if new_store == IdentityStore::Backend {
            copy_verified(&*target, &ObjectId::identity(), identity.expose())?;
        } else {
            match DeviceIdentity::load_checked(&vault.identity_dir, vault.allow_foreign_owner) {
                Ok(existing) if existing.expose() == identity.expose() => {}
                Ok(_) => return Err(VaultError::IdentityConflict(vault.identity_dir.clone())),
                Err(IdentityError::Missing(_)) => {
                    if !identity.save_new_checked(&vault.identity_dir, vault.allow_foreign_owner)? {
                        return Err(VaultError::IdentityConflict(vault.identity_dir.clone()));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        drop(identity);
        // The anchor goes to its new home before the switch, already at
        // the switch's commit (a switch changes the counter, not the root):
        // either side of the commit finds an anchor that agrees.
        let now = w.vault_record()?.state()?;
        let after = IndexState {
            counter: now.counter + 1,
            root: now.root,
        };
        let new_anchor = match new_store {
            IdentityStore::File => AnchorStore::file_in(
                &vault.identity_dir,
                &vault.vault_id,
                vault.allow_foreign_owner,
                vault.place,
            ),
            IdentityStore::Backend => AnchorStore::in_backend(&*target, vault.place),
        };
        new_anchor
            .write(&vault.keys, after)
            .map_err(|e| vault.anchor_error(e))?;
        let reason = format!("migrated from {from} with `sealfs migrate`");
        let state = w.commit_vault(|r| {
            r.backend = to.as_str().to_owned();
            r.backend_reason = reason;
            r.migration_cleanup = Some(from.as_str().to_owned());
            r.migration_target = None;
        })?;
        debug_assert_eq!(state, after);
        // The old file anchor moves past the index copies that still name
        // the old backend (the migration's first commit among them), so
        // none of them opens again.
        if vault.identity_store == IdentityStore::File && new_store != IdentityStore::File {
            vault.committed(after)?;
        }
        hook(MigrateStage::Committed)?;
        let mut old_ids = ids;
        if vault.identity_store == IdentityStore::Backend {
            old_ids.push(ObjectId::identity());
            old_ids.push(ObjectId::anchor());
        }
        vault.clean_up(&w, &*vault.backend, &old_ids, &new_anchor, &mut hook)?;
        Ok(report)
    }

    /// Deletes the migrated blobs from the old backend, then forgets it
    /// (a commit, anchored in `anchor`, the vault's new anchor store).
    fn clean_up(
        &self,
        w: &Index,
        old: &dyn BlobBackend,
        ids: &[ObjectId],
        anchor: &AnchorStore<'_>,
        hook: &mut impl FnMut(MigrateStage) -> Result<(), VaultError>,
    ) -> Result<(), VaultError> {
        let mut ids = ids.to_vec();
        if old.kind().is_platform_store() {
            for reserved in [ObjectId::identity(), ObjectId::anchor()] {
                if !ids.contains(&reserved) {
                    ids.push(reserved);
                }
            }
        }
        for (n, id) in ids.iter().enumerate() {
            old.delete_blob(id)?;
            hook(MigrateStage::Deleted(n + 1))?;
        }
        let state = w.commit_vault(|r| r.migration_cleanup = None)?;
        self.settle(
            anchor
                .write(&self.keys, state)
                .map_err(|e| self.anchor_error(e)),
        )
    }

    /// Accepts an index older than its anchor (a deliberate restore from a
    /// backup): the index must still authenticate; it is re-anchored at a
    /// commit past both, so no older copy is ever accepted again. Returns
    /// the index's and the anchor's commits before.
    pub fn accept_rollback(config: VaultConfig) -> Result<(u64, Option<u64>), VaultError> {
        let config = VaultConfig {
            create: false,
            ..config
        };
        let vault = Vault::open_with(config, Anchoring::AcceptRollback)?;
        let w = vault.writer();
        let _lock = write_lock(&vault.dir_handle, vault.lock_timeout)?;
        let state = w.vault_record()?.state()?;
        let anchor = vault.anchor_store();
        // A copy restored elsewhere is accepted at its new place too.
        let anchored = anchor
            .read_anywhere(&vault.keys)
            .map_err(|e| vault.anchor_error(e))?;
        let floor = anchored.map_or(0, |a| a.counter).max(state.counter);
        let new = w.commit_vault(|r| r.counter = floor)?;
        anchor
            .rebind(&vault.keys, new)
            .map_err(|e| vault.anchor_error(e))?;
        *vault.anchored.lock().unwrap_or_else(|e| e.into_inner()) = Some(new);
        vault.retire_others_here()?;
        Ok((state.counter, anchored.map(|a| a.counter)))
    }

    /// Accepts a vault moved (or copied) to its present path on purpose:
    /// its anchor is bound to the new path, so the vault left at the old
    /// one, or another put there, is refused from now on. The index must
    /// agree with the anchor (a move is never a rollback). Returns whether
    /// the vault was anchored elsewhere.
    pub fn accept_move(config: VaultConfig) -> Result<bool, VaultError> {
        let config = VaultConfig {
            create: false,
            ..config
        };
        let vault = Vault::open_with(config, Anchoring::AcceptMove)?;
        let w = vault.writer();
        let _lock = write_lock(&vault.dir_handle, vault.lock_timeout)?;
        let state = w.vault_record()?.state()?;
        let anchor = vault.anchor_store();
        let elsewhere = matches!(anchor.read(&vault.keys), Err(AnchorError::Elsewhere { .. }));
        let anchored = anchor
            .read_anywhere(&vault.keys)
            .map_err(|e| vault.anchor_error(e))?;
        if let Some(a) = anchored {
            // Neither older than the anchor nor more than the one commit an
            // anchor may lag: a move is never a rollback, of either.
            if state.counter < a.counter
                || state.counter > a.counter + 1
                || (state.counter == a.counter && state.root != a.root)
            {
                return Err(VaultError::RolledBack {
                    dir: vault.dir.clone(),
                    why: format!(
                        "the index is at commit {}, but {} says {}",
                        state.counter,
                        anchor.describe(),
                        a.counter
                    ),
                });
            }
        }
        anchor
            .rebind(&vault.keys, state)
            .map_err(|e| vault.anchor_error(e))?;
        vault.retire_others_here()?;
        Ok(elsewhere)
    }

    /// After a move or restore is accepted here: another vault of the same
    /// identity directory anchored at this path is retired.
    fn retire_others_here(&self) -> Result<(), VaultError> {
        if self.identity_store == IdentityStore::File {
            let identity =
                DeviceIdentity::load_checked(&self.identity_dir, self.allow_foreign_owner)?;
            let raw = crate::hex::unhex(&self.vault_id).unwrap_or_default();
            let config = VaultConfig {
                allow_foreign_owner: self.allow_foreign_owner,
                ..VaultConfig::new(&self.dir)
            };
            retire_others(&self.identity_dir, &identity, &raw, &config, self.place);
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn identity_dir(&self) -> &Path {
        &self.identity_dir
    }

    pub fn backend_choice(&self) -> &BackendChoice {
        &self.choice
    }

    /// Where this vault's device identity is kept.
    pub fn identity_store(&self) -> IdentityStore {
        self.identity_store
    }

    pub fn key_id(&self) -> KeyId {
        self.keys.key_id()
    }

    pub fn max_value_size(&self) -> usize {
        self.max_value_size
    }
}
