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

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::backend::{BackendChoice, BlobBackend};
use crate::crypto::{KeyId, KeyRing};
use crate::fsutil;
use crate::index::{Index, State as IndexState};
use crate::scope::{VaultRef, VaultScope};
use crate::secret::SensitiveBytes;

mod anchoring;
mod cache;
mod config;
mod error;
mod lifetimes;
mod lock;
mod migrate;
mod open;
mod ops;
mod versions;

pub use versions::Version;

use anchoring::retire_others;
pub use config::{
    default_identity_dir, default_vault_dir, VaultConfig, DEFAULT_LOCK_TIMEOUT,
    DEFAULT_MAX_VALUE_SIZE, MAX_VALUE_SIZE_LIMIT,
};
use config::{LOCK_FILE, VAULT_FORMAT};
pub use error::VaultError;
use lock::{write_lock, WriteLock};
pub use migrate::{MigrateReport, MigrateStage};
use open::identity_store_of;
pub use open::IdentityStore;

/// Metadata of one secret. Never holds the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The ref the secret is stored under.
    pub vault_ref: VaultRef,
    /// Length of the value, in bytes.
    pub len: u64,
    /// When the secret was first stored; replacing or renaming it keeps
    /// this time.
    pub created: SystemTime,
    /// When the value was last written (a rename keeps it).
    pub updated: SystemTime,
    /// The record version of the value: one more than that of the last
    /// value stored under the ref, even a deleted one.
    pub version: u64,
    /// Read-once: the first successful read consumes it.
    pub once: bool,
    /// When it expires: from then on no reader gets it, and the next writer
    /// (or a mount daemon, within a minute) removes it.
    pub expires: Option<SystemTime>,
}

/// How to store a value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Read-once: the first successful `get` returns the value and deletes it.
    pub once: bool,
    /// Stores an empty value rather than refusing it: the mount, where a
    /// file emptied by `: > key` or `truncate -s 0` must hold nothing
    /// rather than keep its old value (`docs/policy.md`).
    pub allow_empty: bool,
    /// Compare-and-swap: store only if the slot is as expected, checked
    /// and written as one step.
    pub expect: Option<Expected>,
    /// When the value expires (see [`Entry::expires`]). `None` keeps the
    /// expiry of the value it replaces, if any (a rotation does not make a
    /// secret with a lifetime last for ever); see `no_expiry`. A value
    /// stored in a session that ends sooner expires with the session.
    pub expires: Option<SystemTime>,
    /// With `expires` `None`: the value does not expire, whatever the one
    /// it replaces did.
    pub no_expiry: bool,
    /// How many earlier versions of this secret to keep from now on;
    /// `None` keeps what it had (by default, the vault's setting).
    pub keep_versions: Option<u32>,
    /// Who is writing, kept with the value (see [`Vault::history`]).
    pub writer: Option<crate::writer::Writer>,
    /// The version this writer stored itself a moment ago and now
    /// completes (one open file written in steps): if it is still the
    /// current one, it is replaced rather than kept as an earlier version.
    pub amends: Option<u64>,
}

/// What a conditional write requires of its slot (`sealfs set
/// --if-absent`, `--if-version`; `O_EXCL` through the mount).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// No secret is stored under the ref.
    Absent,
    /// The secret under the ref is at this version.
    Version(u64),
}

/// Says how a slot differs from what a conditional write expected.
pub(crate) fn mismatch(expected: Expected, found: Option<u64>) -> String {
    match (expected, found) {
        (Expected::Absent, Some(v)) => format!("it exists already, at version {v} (--if-absent)"),
        (Expected::Version(want), Some(v)) => {
            format!("it is at version {v}, not {want} (--if-version)")
        }
        (Expected::Version(want), None) => {
            format!("it does not exist (--if-version {want})")
        }
        (Expected::Absent, None) => "it is as expected".into(),
    }
}

impl Expected {
    /// Whether a slot holding a secret at `found` (`None`: no secret) is
    /// as expected.
    pub fn holds(self, found: Option<u64>) -> bool {
        match self {
            Expected::Absent => found.is_none(),
            Expected::Version(v) => found == Some(v),
        }
    }
}

/// A scope that exists: registered (an empty directory made with mkdir, with
/// its owner) and/or holding secrets. `global` always exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeInfo {
    /// The scope this describes.
    pub scope: VaultScope,
    /// The uid that created the scope through the mount, if recorded.
    pub owner_uid: Option<u32>,
    /// Made explicitly (stays while empty) rather than implied by its secrets.
    pub registered: bool,
    /// When the scope (a session) ends: from then on it and every secret in
    /// it are gone for every reader.
    pub expires: Option<SystemTime>,
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
    /// Not a stop: while the hook returns true for it, the read cache sees
    /// the index files as unchanged, as on a file system whose timestamps
    /// are too coarse to tell two writes apart.
    IndexFilesLookUnchanged,
    /// Not a stop: while the hook returns true for it, the read cache
    /// looks at the index on every read, as where the kernel offers no
    /// change notification.
    NoChangeNotification,
    /// A commit is durable in the index; writing its anchor fails (a full
    /// disk): the write is still acknowledged, the anchor lags one commit.
    AnchorWriteFails,
    /// Expired secrets or an ended session are gone from the index; their
    /// blobs are not deleted yet.
    SweepAfterCommit,
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
    /// `None`: reads use the writer's connection (`separate_reader` off).
    reader: Option<Mutex<Index>>,
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
    /// Rows and sealed blobs kept between reads while the index is
    /// unchanged (`cache.rs`).
    read_cache: cache::ReadCache,
    /// The kernel's word on changes of the index files and the anchor,
    /// for the read cache (a long-lived vault on Linux, if it could be set
    /// up; else the cache looks at the files on every read).
    #[cfg(target_os = "linux")]
    watch: Option<fsutil::DirWatch>,
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

fn scope_info(row: crate::index::ScopeRow) -> ScopeInfo {
    ScopeInfo {
        scope: row.scope,
        owner_uid: row.owner_uid,
        registered: row.registered,
        expires: row.expires_ms.map(time_of),
    }
}

/// The wall clock in milliseconds since the Unix epoch. (Not clamped to
/// never go back: lifetimes are set by other processes from their own
/// clock, and a process ahead of them would delete what they just stored.)
fn now_ms() -> i64 {
    i64::try_from(crate::clock::now_ms()).unwrap_or(i64::MAX)
}

/// `t` in milliseconds since the Unix epoch (0 before it).
fn ms_of(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn time_of(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

impl Vault {
    fn writer(&self) -> std::sync::MutexGuard<'_, Index> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The reads' connection: the writer's when there is no separate one
    /// (never called with the writer's guard held).
    fn reader(&self) -> std::sync::MutexGuard<'_, Index> {
        match &self.reader {
            Some(reader) => reader.lock().unwrap_or_else(|e| e.into_inner()),
            None => self.writer(),
        }
    }

    /// The index as the read cache sees it now; `None` when it cannot
    /// tell (then nothing is served from the cache or kept in it). Only
    /// with the anchor in a file: in a keystore, reading it is a round
    /// trip to the keystore, which every read then pays twice (and twice
    /// the keystore's timeout when it does not answer).
    fn read_stamp(&self) -> Option<cache::Stamp> {
        // One connection: its own commits leave its data_version as it
        // was, and a one-shot process has nothing to keep anyway.
        if self.identity_store != IdentityStore::File || self.reader.is_none() {
            return None;
        }
        #[cfg(unix)]
        {
            // The kernel reports every write of the index, its log and the
            // anchor; what a vault-directory writer does to the reports
            // only ends what was kept, or the notification (`DirWatch`):
            // nothing else to read.
            if let Some(generation) = self.notified_generation() {
                return Some(cache::Stamp::Notified(generation));
            }
            let files = if self.fault(FaultPoint::IndexFilesLookUnchanged).is_err() {
                [None, None]
            } else {
                [
                    self.dir_handle.stamp_of(crate::index::INDEX_FILE).ok()?,
                    self.dir_handle.stamp_of(crate::index::WAL_FILE).ok()?,
                ]
            };
            let data_version = self.reader().data_version().ok()?;
            // Beyond the attacker's reach, unlike the files above and the
            // shared-memory file SQLite's data_version comes from.
            let anchor = self.anchor_store().read(&self.keys).ok()?;
            Some(cache::Stamp::Polled {
                data_version,
                files,
                anchor,
            })
        }
        #[cfg(not(unix))]
        None
    }

    /// The change notification's count, if this vault has one that works.
    fn notified_generation(&self) -> Option<u64> {
        #[cfg(target_os = "linux")]
        if self.fault(FaultPoint::NoChangeNotification).is_ok() {
            return self.watch.as_ref()?.generation();
        }
        None
    }

    /// Whether the read cache takes the kernel's change notification for
    /// the index (tests: that the path under test is the one taken).
    #[doc(hidden)]
    pub fn notified_of_changes(&self) -> bool {
        self.notified_generation().is_some()
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

    /// The vault directory, as given in the config.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The identity directory in force: the configured one, or the default
    /// beside the vault directory.
    pub fn identity_dir(&self) -> &Path {
        &self.identity_dir
    }

    /// The backend in use, and why.
    pub fn backend_choice(&self) -> &BackendChoice {
        &self.choice
    }

    /// Where this vault's device identity is kept.
    pub fn identity_store(&self) -> IdentityStore {
        self.identity_store
    }

    /// The id of this vault's sealing key (not secret; the index records it).
    pub fn key_id(&self) -> KeyId {
        self.keys.key_id()
    }

    /// The largest value, in bytes, a put accepts.
    pub fn max_value_size(&self) -> usize {
        self.max_value_size
    }
}
