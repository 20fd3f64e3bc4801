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
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::backend::{
    self, BackendChoice, BackendContext, BackendError, BackendKind, BackendOptions,
    BackendPreference, BlobBackend, ObjectId,
};
use crate::crypto::{self, CryptoError, KeyId, KeyRing};
use crate::fsutil;
use crate::identity::{DeviceIdentity, IdentityError};
use crate::index::{Index, IndexError, Row};
use crate::scope::{SecretKey, VaultRef, VaultScope};
use crate::secret::SensitiveBytes;

/// The default largest value, in bytes.
pub const DEFAULT_MAX_VALUE_SIZE: usize = 64 * 1024;
/// The on-disk vault format this build writes (recorded in the index).
pub const VAULT_FORMAT: &str = "1";
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
}

impl VaultConfig {
    pub fn new(vault_dir: impl Into<PathBuf>) -> Self {
        VaultConfig {
            vault_dir: vault_dir.into(),
            identity_dir: None,
            backend: BackendPreference::Auto,
            backend_options: BackendOptions::default(),
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
            create: true,
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
    #[cfg(feature = "fleet")]
    #[error(transparent)]
    Fleet(Box<crate::fleet::FleetError>),
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
}

type FaultHook = Box<dyn Fn(FaultPoint) -> bool + Send + Sync>;

/// An open vault. `Send + Sync`: share it across threads by reference.
pub struct Vault {
    fault: Option<FaultHook>,
    dir: PathBuf,
    identity_dir: PathBuf,
    reader: Mutex<Index>,
    writer: Mutex<Index>,
    backend: Box<dyn BlobBackend>,
    keys: KeyRing,
    choice: BackendChoice,
    identity_store: IdentityStore,
    max_value_size: usize,
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

fn write_lock(dir: &Path) -> Result<WriteLock, VaultError> {
    let path = dir.join(LOCK_FILE);
    let f = fsutil::open_private_file(&path).map_err(io("open the lock file", &path))?;
    f.lock().map_err(io("lock", &path))?;
    Ok(WriteLock(f))
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
    ) -> Result<DeviceIdentity, VaultError> {
        match self {
            IdentityStore::File => Ok(DeviceIdentity::load(identity_dir)?),
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

/// What the index's `meta` table records about a vault.
struct Meta {
    vault_id: Vec<u8>,
    key_id: KeyId,
    backend: BackendKind,
    backend_reason: String,
    identity_store: IdentityStore,
}

impl Meta {
    fn read(index: &Index, dir: &Path) -> Result<Meta, VaultError> {
        let format = index.meta("format")?.unwrap_or_default();
        if format != VAULT_FORMAT {
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
            .and_then(|s| crypto::unhex(&s))
            .ok_or_else(|| bad("vault_id"))?;
        let key_id = index
            .meta("key_id")?
            .and_then(|s| KeyId::from_hex(&s))
            .ok_or_else(|| bad("key_id"))?;
        let recorded = index.meta("backend")?.ok_or_else(|| bad("backend"))?;
        let backend = recorded
            .parse()
            .map_err(|_| VaultError::UnsupportedBackend {
                dir: dir.to_owned(),
                name: recorded.clone(),
            })?;
        let identity_store = match index.meta("identity_store")?.as_deref() {
            None | Some("file") => IdentityStore::File,
            Some("backend") => IdentityStore::Backend,
            Some(_) => return Err(bad("identity_store")),
        };
        Ok(Meta {
            vault_id,
            key_id,
            backend,
            backend_reason: index
                .meta("backend_reason")?
                .unwrap_or_else(|| "chosen when the vault was created".into()),
            identity_store,
        })
    }

    fn context(&self, config: &VaultConfig) -> BackendContext {
        BackendContext {
            vault_dir: config.vault_dir.clone(),
            vault_id: crypto::hex(&self.vault_id),
            options: config.backend_options.clone(),
        }
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
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
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
        let dir = config.vault_dir.clone();
        let identity_dir = config.identity_dir();
        let index_path = Index::path_in(&dir);
        // Checked before SQLite touches the file: opening writes to it.
        if std::fs::metadata(&index_path).map_or(true, |m| m.len() == 0) {
            refuse_lost_index(&dir)?;
        }
        if !index_path.exists() {
            if !config.create {
                return Err(VaultError::NoVault(dir));
            }
            fsutil::create_private_dir_all(&dir).map_err(io("create the vault directory", &dir))?;
            // Create the file owner-only before SQLite does: its -wal and -shm
            // files take the database file's mode.
            fsutil::open_private_file(&index_path).map_err(io("create the index", &index_path))?;
        }
        let mut writer = Index::open(&index_path)?;
        if writer.is_initialised()? && writer.schema_version()? < crate::index::SCHEMA_VERSION {
            let _lock = write_lock(&dir)?;
            writer.init()?;
        }
        if !writer.is_initialised()? {
            refuse_lost_index(&dir)?;
            if !config.create {
                return Err(VaultError::NoVault(dir));
            }
            let _lock = write_lock(&dir)?;
            writer.init()?;
            if writer.meta("key_id")?.is_none() {
                Self::initialise(&writer, &config, &identity_dir)?;
            }
        }
        writer.check_schema()?;
        let meta = Meta::read(&writer, &dir)?;

        let kind = meta.backend;
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
                reason: format!("recorded in the vault: {}", meta.backend_reason),
            },
        };
        tracing::debug!(backend = %choice.kind, reason = %choice.reason, "backend selected");
        let backend = backend::build(kind, &meta.context(&config))?;

        let identity = meta.identity_store.load(&identity_dir, &*backend)?;
        let keys = KeyRing::derive(&identity, &meta.vault_id);
        drop(identity);
        if keys.key_id() != meta.key_id {
            return Err(VaultError::WrongIdentity {
                vault_dir: dir,
                identity_dir,
                expected: meta.key_id,
                found: keys.key_id(),
            });
        }
        let reader = Index::open(&index_path)?;

        let vault = Vault {
            fault: None,
            dir,
            identity_dir,
            reader: Mutex::new(reader),
            writer: Mutex::new(writer),
            backend,
            keys,
            choice,
            identity_store: meta.identity_store,
            max_value_size: config.max_value_size,
        };
        {
            // Sweeping what a dead writer left is a write; if it cannot
            // happen now (a full disk), reading must still work, and the
            // next writer sweeps instead.
            let w = vault.writer();
            let swept = w
                .has_pending()
                .map_err(VaultError::from)
                .and_then(|pending| {
                    if pending {
                        let _lock = write_lock(&vault.dir)?;
                        vault.recover_locked(&w)?;
                    }
                    Ok(())
                });
            if let Err(e) = swept {
                tracing::warn!(error = %e, "could not sweep leftovers of an interrupted write; the next write will");
            }
        }
        Ok(vault)
    }

    /// Records a new vault's identity, keys and backend (writer lock held).
    /// With a platform store, the device identity goes into that store, not
    /// into a file.
    fn initialise(
        writer: &Index,
        config: &VaultConfig,
        identity_dir: &Path,
    ) -> Result<(), VaultError> {
        let mut vault_id = [0u8; 16];
        getrandom::fill(&mut vault_id).map_err(|e| {
            io("read random bytes for", &config.vault_dir)(std::io::Error::other(e))
        })?;
        let ctx = BackendContext {
            vault_dir: config.vault_dir.clone(),
            vault_id: crypto::hex(&vault_id),
            options: config.backend_options.clone(),
        };
        let (backend, choice) = backend::select_backend(config.backend, &ctx)?;
        tracing::debug!(backend = %choice.kind, reason = %choice.reason, "backend chosen for a new vault");
        let (identity, store) = if choice.kind.is_platform_store() {
            let identity = DeviceIdentity::generate()?;
            backend.put_blob(&ObjectId::identity(), identity.expose())?;
            (identity, IdentityStore::Backend)
        } else {
            (
                DeviceIdentity::load_or_create(identity_dir)?,
                IdentityStore::File,
            )
        };
        let keys = KeyRing::derive(&identity, &vault_id);
        writer.meta_init("format", VAULT_FORMAT)?;
        writer.meta_init("vault_id", &crypto::hex(&vault_id))?;
        writer.meta_init("backend", choice.kind.as_str())?;
        writer.meta_init("backend_reason", &choice.reason)?;
        writer.meta_init("identity_store", store.as_str())?;
        writer.meta_init("created_ms", &now_ms().to_string())?;
        // Written last: its presence marks the vault as initialised.
        writer.meta_init("key_id", &keys.key_id().to_hex())?;
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

    fn check_not_migrated(&self, index: &Index) -> Result<(), VaultError> {
        match index.meta("backend")? {
            Some(now) if now != self.choice.kind.as_str() => Err(VaultError::Migrated {
                dir: self.dir.clone(),
                to: now,
            }),
            _ => Ok(()),
        }
    }

    /// Deletes what interrupted writes left behind. Caller holds the lock.
    fn recover_locked(&self, w: &Index) -> Result<(), VaultError> {
        self.backend.recover()?;
        w.forget_referenced_pending()?;
        for id in w.orphans()? {
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
        self.check_value(r, &value)?;
        let mut w = self.writer();
        let _lock = self.lock_and_recover(&w)?;
        let current = w.row(r)?;
        let row = self.store_blob(&w, r, &value, current.as_ref(), options.once)?;
        self.fault(FaultPoint::PutAfterBlob)?;
        w.commit_put(r, &row, current.as_ref().map(|c| &c.object_id))?;
        self.fault(FaultPoint::PutAfterCommit)?;
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
    fn lock_and_recover(&self, w: &Index) -> Result<WriteLock, VaultError> {
        let lock = write_lock(&self.dir)?;
        self.check_not_migrated(w)?;
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
            .reader()
            .row(r)?
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
                    let current = self.reader().row(r)?;
                    match current {
                        None => return Err(VaultError::NotFound(r.clone())),
                        Some(now) if now == row => {
                            self.check_not_migrated(&self.reader())?;
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
        let mut w = self.writer();
        let _lock = self.lock_and_recover(&w)?;
        let row = w.row(r)?.ok_or_else(|| VaultError::NotFound(r.clone()))?;
        let blob = match self.backend.get_blob(&row.object_id) {
            Err(BackendError::NotFound(_)) => return Err(VaultError::BlobMissing(r.clone())),
            other => other?,
        };
        let value = self.open_blob(r, &row, &blob)?;
        // Rewritten as an ordinary secret since we looked: nothing to consume.
        if row.once {
            w.commit_delete(r, &row)?;
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
        let mut w = self.writer();
        let _lock = self.lock_and_recover(&w)?;
        let row = w.row(r)?.ok_or_else(|| VaultError::NotFound(r.clone()))?;
        w.commit_delete(r, &row)?;
        self.fault(FaultPoint::DeleteAfterCommit)?;
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
        let mut w = self.writer();
        let _lock = self.lock_and_recover(&w)?;
        let from_row = w
            .row(from)?
            .ok_or_else(|| VaultError::NotFound(from.clone()))?;
        if from == to {
            return Ok(self.entry_of(to.clone(), &from_row));
        }
        let target = w.row(to)?;
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
        w.commit_rename(from, &from_row, to, &to_row, replaced)?;
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
        let mut w = self.writer();
        let _lock = self.lock_and_recover(&w)?;
        if w.scope_row(scope)?.is_some() || !w.register_scope(scope, owner_uid, now_ms())? {
            return Err(VaultError::ScopeExists(scope.clone()));
        }
        Ok(())
    }

    /// Removes an empty scope.
    pub fn remove_scope(&self, scope: &VaultScope) -> Result<(), VaultError> {
        if *scope == VaultScope::Global {
            return Err(VaultError::GlobalScope);
        }
        let mut w = self.writer();
        let _lock = self.lock_and_recover(&w)?;
        if w.scope_has_secrets(scope)? {
            return Err(VaultError::ScopeNotEmpty(scope.clone()));
        }
        if !w.unregister_scope(scope)? {
            return Err(VaultError::NoSuchScope(scope.clone()));
        }
        Ok(())
    }

    /// Whether `scope` exists, and who registered it.
    pub fn scope(&self, scope: &VaultScope) -> Result<Option<ScopeInfo>, VaultError> {
        if *scope == VaultScope::Global {
            return Ok(Some(ScopeInfo {
                scope: VaultScope::Global,
                owner_uid: None,
                registered: true,
            }));
        }
        Ok(self.reader().scope_row(scope)?.map(scope_info))
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
            self.reader()
                .scopes()?
                .into_iter()
                .filter(|s| s.scope != VaultScope::Global)
                .map(scope_info),
        );
        Ok(out)
    }

    /// Metadata of every secret in `scope` (all scopes for `None`), sorted.
    pub fn list(&self, scope: Option<&VaultScope>) -> Result<Vec<Entry>, VaultError> {
        Ok(self
            .reader()
            .list(scope)?
            .into_iter()
            .map(|(r, row)| self.entry_of(r, &row))
            .collect())
    }

    /// Calls `f` with each key of `scope`, in order, without building the
    /// metadata [`Vault::list`] returns (directory listings of big scopes).
    pub fn for_each_key(
        &self,
        scope: &VaultScope,
        f: impl FnMut(SecretKey),
    ) -> Result<(), VaultError> {
        Ok(self.reader().for_each_key(scope, f)?)
    }

    /// Metadata of `r` without decrypting it.
    pub fn entry(&self, r: &VaultRef) -> Result<Option<Entry>, VaultError> {
        Ok(self
            .reader()
            .row(r)?
            .map(|row| self.entry_of(r.clone(), &row)))
    }

    pub fn exists(&self, r: &VaultRef) -> Result<bool, VaultError> {
        Ok(self.reader().row(r)?.is_some())
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
        let mut w = vault.writer();
        let _lock = vault.lock_and_recover(&w)?;
        let meta = Meta::read(&w, &vault.dir)?;
        let from = meta.backend;
        let ctx = meta.context(&config);
        let ids = w.object_ids()?;
        let mut report = MigrateReport {
            from,
            to,
            blobs: ids.len(),
            resumed: w.meta("migration_target")?.is_some(),
        };

        if from == to {
            // Finish the clean-up of a migration that committed and stopped.
            let Some(old) = w.meta("migration_cleanup")? else {
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
            Self::clean_up(&mut w, &*old_backend, &ids, &mut hook)?;
            return Ok(report);
        }

        let identity = meta
            .identity_store
            .load(&vault.identity_dir, &*vault.backend)?;
        let target = backend::build(to, &ctx)?;
        w.set_meta(&[("migration_target", Some(to.as_str()))])?;
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
        let store = if to.is_platform_store() {
            copy_verified(&*target, &ObjectId::identity(), identity.expose())?;
            IdentityStore::Backend
        } else {
            match DeviceIdentity::load(&vault.identity_dir) {
                Ok(existing) if existing.expose() == identity.expose() => {}
                Ok(_) => return Err(VaultError::IdentityConflict(vault.identity_dir.clone())),
                Err(IdentityError::Missing(_)) => {
                    if !identity.save_new(&vault.identity_dir)? {
                        return Err(VaultError::IdentityConflict(vault.identity_dir.clone()));
                    }
                }
                Err(e) => return Err(e.into()),
            }
            IdentityStore::File
        };
        drop(identity);
        let reason = format!("migrated from {from} with `sealfs migrate`");
        w.set_meta(&[
            ("backend", Some(to.as_str())),
            ("backend_reason", Some(&reason)),
            ("identity_store", Some(store.as_str())),
            ("migration_cleanup", Some(from.as_str())),
            ("migration_target", None),
        ])?;
        hook(MigrateStage::Committed)?;
        let mut old_ids = ids;
        if meta.identity_store == IdentityStore::Backend {
            old_ids.push(ObjectId::identity());
        }
        Self::clean_up(&mut w, &*vault.backend, &old_ids, &mut hook)?;
        Ok(report)
    }

    /// Deletes the migrated blobs from the old backend, then forgets it.
    fn clean_up(
        w: &mut Index,
        old: &dyn BlobBackend,
        ids: &[ObjectId],
        hook: &mut impl FnMut(MigrateStage) -> Result<(), VaultError>,
    ) -> Result<(), VaultError> {
        let mut ids = ids.to_vec();
        if !ids.contains(&ObjectId::identity()) && old.kind().is_platform_store() {
            ids.push(ObjectId::identity());
        }
        for (n, id) in ids.iter().enumerate() {
            old.delete_blob(id)?;
            hook(MigrateStage::Deleted(n + 1))?;
        }
        w.set_meta(&[("migration_cleanup", None)])?;
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
