//! sealfs: a secrets vault that keeps API keys, tokens and credentials
//! encrypted at rest and hands them out on demand.
//!
//! # Modules
//!
//! One concept each, in layers: a module imports only from the layers
//! below it (`scripts/check-layers.sh` finds any import cycle between
//! modules; `docs/architecture.md` draws the picture and gives the
//! reasons). `cargo doc --document-private-items` renders this map, and
//! `scripts/test.sh` fails on a link in it that no longer resolves.
//!
//! Leaves, importing nothing of the crate (but `ids`, which uses `hex`):
//! - [`error`]: [`ErrorKind`], the one classification every layer's error
//!   maps to, and [`Chain`], the one cause-chain formatter.
//! - [`ids`]: [`ObjectId`] (where a sealed blob is kept) and [`KeyId`].
//! - [`hex`], [`clock`]: hex text; milliseconds since the epoch and
//!   RFC 3339 times.
//! - [`scope`]: [`VaultScope`], [`ScopeId`], [`SecretKey`], [`VaultRef`]:
//!   the ref grammar (`<scope>/<key>`), checked in the constructors, so an
//!   invalid value cannot exist.
//! - [`secret`]: [`SensitiveBytes`], every plaintext in memory: wiped on
//!   drop (spare capacity too), redacted `Debug`, no `Display` or `Clone`.
//!
//! Files and keys:
//! - [`fsutil`]: owner-only files and directories, atomic durable
//!   replacement, and `PrivateDir`, a directory opened and checked once
//!   (owner, mode, not a symlink) through which every file of the vault,
//!   identity and audit directories is opened `O_NOFOLLOW`
//!   (`fsutil/unix_dir.rs`; `other_dir.rs` elsewhere).
//! - [`crypto`]: HKDF key derivation, HMAC object and record ids, the
//!   AES-256-GCM envelope; pure functions over bytes.
//! - [`identity`]: the 32-byte device identity: load, create race-free,
//!   refuse lax modes.
//!
//! Storage:
//! - [`backend`]: the [`BlobBackend`] trait, [`BackendKind`], probing and
//!   choosing; one file per backend (`encrypted_file.rs`,
//!   `secret_service.rs` on Linux, `keychain.rs` on macOS, `dpapi.rs` on
//!   Windows).
//! - [`index`]: the SQLite index (format 2): records sealed under an
//!   identity-derived key and looked up by an HMAC of their name
//!   (`records.rs`), 256 bucket digests with their root in the sealed
//!   vault record, checked on every read (`read.rs`) and updated in one
//!   transaction per commit (`write.rs`), the earlier versions of secrets
//!   and the retired records of deleted ones (`versions.rs`), the upgrade
//!   from format 1 (`upgrade.rs`).
//! - [`anchor`]: the rollback anchor, the index's commit counter and root
//!   under a MAC, beside the identity or in the keystore.
//! - [`audit`]: the audit log, JSON lines appended by the CLI, the console
//!   and the daemon; never a value.
//!
//! The vault:
//! - [`vault`]: [`Vault`]: how to open one (`config.rs`, [`VaultConfig`]),
//!   opening and creating (`open.rs`), the anchor checks and deliberate
//!   rollbacks or moves (`anchoring.rs`), put/get/delete/rename/list
//!   (`ops.rs`), history, rollback and purge (`versions.rs`), the writer
//!   lock (`lock.rs`), backend migration (`migrate.rs`), [`VaultError`]
//!   (`error.rs`).
//! - [`writer`]: [`Writer`], who wrote a value, kept with each version.
//! - `fleet` (feature `fleet`): the fleet vault in etcd (`docs/fleet.md`):
//!   the etcd client (`etcd.rs`), age host identities and fleet keys
//!   (`keys.rs`), sealed copies of read records (`cache.rs`), the records
//!   in etcd (`records.rs`), the signed membership chain, host cards and
//!   pins (`trust.rs`, pure), checking etcd against the pins
//!   (`verify.rs`), membership changes (`members.rs`), the in-memory state
//!   a watch keeps valid (`memo.rs`), this host's credentials and pins in
//!   its local vault (`local.rs`), `FleetVault`'s reads and writes
//!   (`mod.rs`).
//!
//! Front-end services:
//! - [`store`]: [`SecretStore`], what the command line and the mount need
//!   of a vault, implemented by [`Vault`] and (in `store/fleet.rs`) by the
//!   fleet vault, with its one error type [`StoreError`].
//! - [`config`]: `*_vault_ref` fields of TOML files: find at any depth,
//!   resolve, edit in place, check ([`check_refs`]); plaintext secret
//!   fields found and replaced by refs where they stand (`import.rs`).
//! - [`template`]: whole files with secrets inside: the `{{ REF | filter }}`
//!   grammar, rendering into wiping buffers, where templates are stored,
//!   and a `.env` file split into secrets and the template that renders it.
//! - [`doctor`]: the findings of `sealfs doctor`.
//! - `cli_common` (feature `cli-common`): `VaultArgs`, the flags both
//!   binaries share, and `export_env`, which hands them from `sealfs mount`
//!   to the daemon.
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
//! - `cli-common`: `cli_common`, the vault flags and logging set-up of
//!   the `sealfs` and `sealfs-mountd` binaries (brings in `clap` and
//!   `tracing-subscriber`).
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]
#![warn(missing_docs)]

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
pub mod template;
mod vault;
mod writer;

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
    check_value, default_identity_dir, default_vault_dir, Entry, Expected, IdentityStore,
    MigrateReport, MigrateStage, PutOptions, ScopeInfo, Vault, VaultConfig, VaultError, Version,
    DEFAULT_LOCK_TIMEOUT, DEFAULT_MAX_VALUE_SIZE, MAX_VALUE_SIZE_LIMIT,
};
pub use writer::{WriteSource, Writer};

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
