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
