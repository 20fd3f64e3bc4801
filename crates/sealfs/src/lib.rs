//! sealfs: a secrets vault that keeps API keys, tokens and credentials
//! encrypted at rest and hands them out on demand.
//!
//! # Design overview
//!
//! The layers, each importing only from those below it (checked by
//! `scripts/check-layers.sh`; `docs/architecture.md` draws the picture):
//!
//! 1. Leaves: [`error`] (the [`ErrorKind`] every error maps to, the
//!    [`Chain`] formatter), [`ids`] ([`ObjectId`], [`KeyId`]), `hex`,
//!    `clock`, and the grammar of scopes, keys and refs (`<scope>/<key>`:
//!    [`VaultScope`], [`SecretKey`], [`VaultRef`]) and [`SensitiveBytes`],
//!    the wiping type every secret value lives in.
//! 2. `fsutil` (owner-only files and directories reached through checked
//!    handles) and `crypto` (key derivation, object ids, the sealed
//!    envelope).
//! 3. [`backend`]: where sealed blobs are kept ([`BlobBackend`]), and the
//!    device identity the keys are derived from.
//! 4. `index` (the SQLite index of metadata, sealed and digested) and
//!    `anchor` (its commit counter kept with the identity, against
//!    rollback).
//! 5. [`Vault`]: the put/get/delete/list flow over the above.
//! 6. [`fleet`]: the fleet vault in etcd, which keeps this host's fleet
//!    identity and cache in a local [`Vault`].
//! 7. [`SecretStore`]: what the front ends need of either, with its one
//!    error type [`StoreError`]; [`config`] (`*_vault_ref` fields of TOML
//!    files), [`audit`] (the audit log) and [`doctor`] use it.
//! 8. [`cli_common`]: the flags both binaries share.
//!
//! ```no_run
//! use sealfs::{SensitiveBytes, Vault, VaultConfig, VaultRef};
//! let vault = Vault::open(VaultConfig::new("/var/lib/app/vault"))?;
//! let r = VaultRef::parse("global/openai_api_key")?;
//! vault.put(&r, SensitiveBytes::from_slice(b"sk-..."))?;
//! assert_eq!(vault.get(&r)?.expose(), b"sk-...");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Crate features
//!
//! - `bundled-sqlite` (default): build SQLite from source, nothing to
//!   install.
//! - `fleet`: the fleet vault in etcd (`sealfs::fleet`); needs `protoc` at
//!   build time, and brings in etcd-client's gRPC stack (tonic, with its
//!   axum router and rustls).
//! - `cli-common`: [`cli_common`], the vault flags and logging set-up of
//!   the `sealfs` and `sealfs-mountd` binaries (brings in `clap` and
//!   `tracing-subscriber`).
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

mod anchor;
pub mod audit;
pub mod backend;
#[cfg(feature = "cli-common")]
pub mod cli_common;
mod clock;
pub mod config;
mod crypto;
pub mod doctor;
pub mod error;
#[cfg(feature = "fleet")]
pub mod fleet;
mod fsutil;
mod hex;
mod identity;
pub mod ids;
mod index;
mod scope;
mod secret;
mod store;
mod vault;

// The public interface is:
pub use backend::{
    choose_auto_backend, select_backend, BackendChoice, BackendError, BackendKind,
    BackendPreference, BlobBackend,
};
pub use clock::rfc3339;
pub use config::{check_refs, find_vault_refs, resolve_config_refs, ConfigError};
pub use error::{Chain, ErrorKind};
pub use fsutil::{describe_uid, open_read_nofollow};
pub use identity::IdentityError;
pub use ids::{KeyId, ObjectId};
pub use scope::{RefError, ScopeId, SecretKey, VaultRef, VaultScope};
pub use secret::SensitiveBytes;
pub use store::{SecretStore, StoreError};
pub use vault::{
    check_value, default_identity_dir, default_vault_dir, Entry, IdentityStore, MigrateReport,
    MigrateStage, PutOptions, ScopeInfo, Vault, VaultConfig, VaultError, DEFAULT_LOCK_TIMEOUT,
    DEFAULT_MAX_VALUE_SIZE, MAX_VALUE_SIZE_LIMIT,
};

/// Where a test can make a write stop as a crash would
/// ([`Vault::set_fault_hook`]); not for production use.
#[doc(hidden)]
pub use vault::FaultPoint;

/// Hooks for tests, fuzzing and benchmarks. They DO NOT form part of the
/// stable interface.
#[doc(hidden)]
pub mod __private {
    pub use crate::anchor::{AnchorError, AnchorStore};
    /// The sealed envelope, for the fuzz target.
    pub mod crypto {
        pub use crate::crypto::{
            parse_header, KeyRing, FORMAT_VERSION, HEADER_LEN, MAGIC, OVERHEAD,
        };
    }
    pub use crate::identity::DeviceIdentity;
    pub use crate::index::State as IndexState;
}
