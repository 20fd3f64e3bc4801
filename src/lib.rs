//! sealfs: a secrets vault that keeps API keys, tokens and credentials
//! encrypted at rest and hands them out on demand.
//!
//! - [`scope`]: scopes, keys and refs (`<scope>/<key>`), the grammar everything
//!   else relies on.
//! - [`secret`]: [`SensitiveBytes`], the wiping type every secret value lives in.
//! - [`crypto`]: key derivation, object ids and the sealed envelope.
//! - [`identity`]: the device identity the keys are derived from.
//! - [`index`]: the SQLite index of secrets' metadata, sealed and digested.
//! - [`anchor`]: the index's commit counter kept with the identity (rollback).
//! - [`backend`]: where sealed blobs are kept ([`BlobBackend`]).
//! - [`vault`]: [`Vault`], the put/get/delete/list flow.
//! - [`config`]: resolving `*_vault_ref` fields of TOML config files.
//!
//! ```no_run
//! use sealfs::{SensitiveBytes, Vault, VaultConfig, VaultRef};
//! let vault = Vault::open(VaultConfig::new("/var/lib/app/vault"))?;
//! let r = VaultRef::parse("global/openai_api_key")?;
//! vault.put(&r, SensitiveBytes::from_slice(b"sk-..."))?;
//! assert_eq!(vault.get(&r)?.expose(), b"sk-...");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod anchor;
pub mod audit;
pub mod backend;
pub mod config;
pub mod crypto;
pub mod doctor;
#[cfg(feature = "fleet")]
pub mod fleet;
pub mod fsutil;
pub mod identity;
pub mod index;
pub mod scope;
pub mod secret;
pub mod store;
pub mod vault;

pub use backend::{
    choose_auto_backend, select_backend, BackendChoice, BackendError, BackendKind,
    BackendPreference, BlobBackend, ObjectId,
};
pub use config::{find_vault_refs, resolve_config_refs, ConfigError};
pub use scope::{RefError, SecretKey, VaultRef, VaultScope};
pub use secret::SensitiveBytes;
pub use store::SecretStore;
pub use vault::{
    Entry, FaultPoint, IdentityStore, MigrateReport, MigrateStage, PutOptions, ScopeInfo, Vault,
    VaultConfig, VaultError, DEFAULT_MAX_VALUE_SIZE,
};
