//! `VaultError`, the errors of the vault layer, and their classification.

use std::path::PathBuf;
use std::time::Duration;

use super::{FaultPoint, VAULT_FORMAT};
use crate::anchor::AnchorError;
use crate::backend::{BackendError, BackendKind, ObjectId};
use crate::crypto::{CryptoError, KeyId};
use crate::identity::IdentityError;
use crate::index::IndexError;
use crate::scope::{VaultRef, VaultScope};

/// Why a vault operation failed; [`VaultError::kind`] classifies it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// The directory holds no vault, and the config did not ask to create one.
    #[error("no vault at {0}")]
    NoVault(PathBuf),
    /// No secret is stored under this ref.
    #[error("secret not found: {0}")]
    NotFound(VaultRef),
    /// The secret keeps no such version.
    #[error("{vault_ref} has no version {version} ({kept})")]
    NoSuchVersion {
        /// The secret.
        vault_ref: VaultRef,
        /// The version asked for.
        version: u64,
        /// What it does keep, said for the reader.
        kept: String,
    },
    /// No secret is stored under this key (the mount's `.history`).
    #[error("{0}: the key `.history` is reserved (the mount shows earlier versions under it)")]
    ReservedKey(VaultRef),
    /// A rollback with nothing to go back to.
    #[error("{0} has no earlier version to roll back to")]
    NoHistory(VaultRef),
    /// A rollback to the value the secret holds now.
    #[error("{vault_ref} is at version {version} already")]
    AlreadyCurrent {
        /// The secret.
        vault_ref: VaultRef,
        /// Its current version.
        version: u64,
    },
    /// An empty value was given to store under this ref.
    #[error("refusing to store an empty value for {0}")]
    EmptyValue(VaultRef),
    /// The value is over the vault's largest value size.
    #[error("value for {vault_ref} is {len} bytes, over the limit of {max} bytes")]
    TooLarge {
        /// The ref the value was for.
        vault_ref: VaultRef,
        /// The value's length, in bytes.
        len: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// A sealed blob did not decrypt or authenticate.
    #[error("integrity check failed for {vault_ref}")]
    Integrity {
        /// The secret whose blob failed.
        vault_ref: VaultRef,
        /// Why the blob did not open.
        #[source]
        source: CryptoError,
    },
    /// The scope to create exists already.
    #[error("scope {0} exists already")]
    ScopeExists(VaultScope),
    /// The scope to remove does not exist.
    #[error("scope {0} does not exist")]
    NoSuchScope(VaultScope),
    /// The session has ended: nothing more is stored in it.
    #[error("{0} has ended; nothing more is stored in it")]
    SessionEnded(VaultScope),
    /// The scope to remove still holds secrets.
    #[error("scope {0} is not empty")]
    ScopeNotEmpty(VaultScope),
    /// An attempt to create or remove the `global` scope.
    #[error("the global scope always exists and cannot be created or removed")]
    GlobalScope,
    /// Another process migrated the vault to another backend after this
    /// one opened it.
    #[error(
        "the vault at {dir} was migrated to the {to} backend since it was opened; open it again"
    )]
    Migrated {
        /// The vault directory.
        dir: PathBuf,
        /// The backend the vault uses now.
        to: String,
    },
    /// A blob copied during a migration read back from the new backend
    /// differs from what was written.
    #[error("migration check failed: blob {0} read back from the new backend differs from what was written")]
    MigrationVerify(ObjectId),
    /// A migration would keep the vault's device identity in this identity
    /// directory, but it holds a different one.
    #[error("{0} already holds a different device identity; choose another --identity-dir for this vault")]
    IdentityConflict(PathBuf),
    /// A test's fault hook stopped the write at this point.
    #[error("injected fault at {0:?}")]
    Fault(FaultPoint),
    /// For a [`Vault::migrate_with`](crate::Vault::migrate_with) hook to
    /// stop the migration, naming where; sealfs never returns it itself.
    #[error("migration interrupted at {0}")]
    Interrupted(&'static str),
    /// A rename that must not replace found a secret at its target.
    #[error("secret {0} exists already")]
    Exists(VaultRef),
    /// A conditional write found its slot otherwise than expected; nothing
    /// was stored.
    #[error("refusing to store {vault_ref}: {}", crate::vault::mismatch(*expected, *found))]
    NotAsExpected {
        /// The ref written.
        vault_ref: VaultRef,
        /// What the write required.
        expected: crate::Expected,
        /// The version found (`None`: no secret).
        found: Option<u64>,
    },
    /// An operation this vault cannot do; the text names it.
    #[error("{0} is not supported by this vault")]
    Unsupported(&'static str),
    /// The index names a blob for this secret that the backend does not
    /// hold.
    #[error("the sealed blob of {0} is missing from the backend")]
    BlobMissing(VaultRef),
    /// The device identity derives another key than the one the vault
    /// records.
    #[error("the device identity in {identity_dir} does not belong to the vault at {vault_dir} (the vault's key is {expected}, this identity derives {found})")]
    WrongIdentity {
        /// The vault directory.
        vault_dir: PathBuf,
        /// The identity directory used.
        identity_dir: PathBuf,
        /// The key id the vault records.
        expected: KeyId,
        /// The key id this identity derives.
        found: KeyId,
    },
    /// The backend requested explicitly is not the one the vault uses.
    #[error("the vault at {dir} uses backend `{recorded}`, but `{requested}` was requested (use --backend {recorded} or auto)")]
    BackendConflict {
        /// The vault directory.
        dir: PathBuf,
        /// The backend the vault records.
        recorded: BackendKind,
        /// The backend requested.
        requested: BackendKind,
    },
    /// The vault records a backend this build does not know.
    #[error(
        "the vault at {dir} uses backend `{name}`, which this build of sealfs does not support"
    )]
    UnsupportedBackend {
        /// The vault directory.
        dir: PathBuf,
        /// The backend's name as recorded.
        name: String,
    },
    /// The index is in a vault format this build does not read.
    #[error("the vault at {dir} has format {found:?}; this build reads format {VAULT_FORMAT:?} (upgrade sealfs)")]
    UnsupportedFormat {
        /// The vault directory.
        dir: PathBuf,
        /// The format the index records (empty if none).
        found: String,
    },
    /// A required clear hint of the index is missing or unreadable.
    #[error("the vault index at {dir} is incomplete: {what} is missing or invalid")]
    BadMeta {
        /// The vault directory.
        dir: PathBuf,
        /// The name of the hint at fault.
        what: &'static str,
    },
    /// The index does not match its rollback anchor: it is older than the
    /// anchor, differs from it at the same commit, or is more than one
    /// commit ahead (the anchor was replaced); a write was built on an index
    /// that had been put back; a format-1 index stands beside a format-2
    /// anchor; or the anchor is missing or corrupt. In every case an older
    /// or foreign copy of the vault is in place.
    #[error("vault rolled back: {why} (restore the newest copy of {dir}, or accept this one with `sealfs recover --accept-rollback`)")]
    RolledBack {
        /// The vault directory.
        dir: PathBuf,
        /// What the check found.
        why: String,
    },
    /// The rollback anchor binds the vault to another path: it was moved,
    /// or another vault was put in its place.
    #[error("the vault at {dir} was last used at another path ({at} says so): refusing a vault put in its place (if you moved or restored it here on purpose, run `sealfs recover --accept-move`)")]
    Elsewhere {
        /// The vault directory.
        dir: PathBuf,
        /// Where the anchor that says so is kept.
        at: String,
    },
    /// The rollback anchor could not be read or advanced.
    #[error(transparent)]
    Anchor(AnchorError),
    /// Another process held the writer lock for longer than the lock
    /// timeout.
    #[error("another process has held the writer lock {path} for over {timeout:?}; try again, or find the process holding it (fuser {path})")]
    LockTimeout {
        /// The lock file.
        path: PathBuf,
        /// How long the write waited.
        timeout: Duration,
    },
    /// The index is missing or empty while `objects/` still holds sealed
    /// blobs.
    #[error("the vault index at {dir} is missing or empty, but objects/ holds {blobs} sealed blobs: refusing to start a new vault over them (restore index.sqlite3 from a backup)")]
    IndexLost {
        /// The vault directory.
        dir: PathBuf,
        /// How many sealed blobs are there.
        blobs: usize,
    },
    /// An I/O operation on the vault's files failed.
    #[error("cannot {what} {path}")]
    Io {
        /// What was being done when it failed.
        what: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Loading or creating the device identity failed.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The blob backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The index failed: SQLite, its schema or an integrity check.
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
            E::NoVault(_)
            | E::NotFound(_)
            | E::NoSuchScope(_)
            | E::SessionEnded(_)
            | E::NoSuchVersion { .. }
            | E::NoHistory(_) => K::NotFound,
            E::AlreadyCurrent { .. } => K::InvalidInput,
            E::EmptyValue(_)
            | E::ReservedKey(_)
            | E::BackendConflict { .. }
            | E::IdentityConflict(_) => K::InvalidInput,
            E::TooLarge { .. } => K::TooLarge,
            E::Exists(_) | E::ScopeExists(_) | E::NotAsExpected { .. } => K::Exists,
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
