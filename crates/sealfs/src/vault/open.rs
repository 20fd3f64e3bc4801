//! Opening a vault: reading the hints, loading the identity, checking the
//! sealed vault record, upgrading format 1, creating a new vault.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{
    io, now_ms, retire_others, write_lock, Anchoring, FaultPoint, Vault, VaultConfig, VaultError,
    VAULT_FORMAT,
};
use crate::anchor::AnchorStore;
use crate::backend::{
    self, BackendChoice, BackendContext, BackendError, BackendKind, BackendPreference, BlobBackend,
    ObjectId,
};
use crate::crypto::{KeyId, KeyRing};
use crate::fsutil;
use crate::identity::{DeviceIdentity, IdentityError};
use crate::index::{Index, IndexError, VaultRecord, INDEX_FILE};

/// Where a vault's device identity is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityStore {
    /// `<identity-dir>/device.key`, an owner-only file.
    File,
    /// The platform keystore that holds the vault's blobs.
    Backend,
}

impl IdentityStore {
    /// Its name: `file` or `backend`.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityStore::File => "file",
            IdentityStore::Backend => "backend",
        }
    }

    pub(super) fn load(
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
pub(super) struct Hints {
    format: String,
    vault_id: Vec<u8>,
    key_id: Option<KeyId>,
    backend: BackendKind,
}

impl Hints {
    pub(super) fn read(index: &Index, dir: &Path) -> Result<Hints, VaultError> {
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

    pub(super) fn context(
        &self,
        config: &VaultConfig,
        dir: &Arc<fsutil::PrivateDir>,
    ) -> BackendContext {
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
pub(super) fn identity_store_of(kind: BackendKind) -> IdentityStore {
    if kind.is_platform_store() {
        IdentityStore::Backend
    } else {
        IdentityStore::File
    }
}

/// A vault directory whose index is gone or empty while sealed blobs remain
/// lost its index: starting a fresh vault there would orphan every value
/// without a word, so it is an error instead.
pub(super) fn refuse_lost_index(dir: &Path) -> Result<(), VaultError> {
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

    pub(super) fn open_with(
        config: VaultConfig,
        anchoring: Anchoring,
    ) -> Result<Vault, VaultError> {
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
        let reader = if config.separate_reader {
            let mut reader = Index::open(&index_path)?;
            reader.set_keys(Arc::clone(&keys));
            Some(Mutex::new(reader))
        } else {
            None
        };
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
        let vault_id = crate::hex::hex(&hints.vault_id);
        #[cfg(target_os = "linux")]
        let watch = if config.separate_reader && identity_store == IdentityStore::File {
            change_watch(
                &dir_handle,
                &identity_dir,
                config.allow_foreign_owner,
                &vault_id,
            )
        } else {
            None
        };
        let mut vault = Vault {
            fault: None,
            dir,
            dir_handle,
            allow_foreign_owner: config.allow_foreign_owner,
            identity_dir,
            vault_id,
            reader,
            writer: Mutex::new(writer),
            backend,
            keys,
            choice,
            identity_store,
            max_value_size: config.max_value_size,
            anchored: Mutex::new(None),
            anchor_cache: crate::anchor::ReadCache::default(),
            read_cache: super::cache::ReadCache::default(),
            place,
            lock_timeout: config.lock_timeout,
            #[cfg(target_os = "linux")]
            watch,
        };
        if hints.format == "1" {
            vault.upgrade_from_v1(anchoring != Anchoring::AcceptRollback)?;
        }
        vault.writer().check_schema()?;
        // Read as the anchor check reads it: the bucket digests are summed
        // once at open, not once for the hints and again for the anchor.
        let record = if enforce_anchor {
            vault.verified(|ix| {
                let record = ix.vault_record()?;
                let state = record.state()?;
                Ok((record, state))
            })?
        } else {
            vault.writer().vault_record()?
        };
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
            match swept {
                Ok(()) => {}
                // The lock is held: a live writer, whose pending write that
                // was (it finishes or sweeps it itself). Nothing to report.
                Err(e @ VaultError::LockTimeout { .. }) => {
                    tracing::debug!(error = %e, "pending write belongs to a live writer; not swept now");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not sweep leftovers of an interrupted write; the next write will");
                }
            }
        }
        Ok(vault)
    }

    /// Converts a format-1 vault (names in the clear, metadata not
    /// authenticated) to format 2 under the writer lock, in one SQLite
    /// transaction, then anchors it. A format-1 index beside an existing
    /// anchor is an older copy: refused.
    pub(super) fn upgrade_from_v1(&mut self, enforce_anchor: bool) -> Result<(), VaultError> {
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
            next_expiry_ms: None,
            keep_versions: None,
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
    pub(super) fn move_v1_audit_log(&self) {
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

    /// Creates a new vault's identity, keys, index and anchor (writer lock
    /// held). With a platform store, the device identity goes into that
    /// store, not into a file.
    pub(super) fn initialise(
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
            next_expiry_ms: None,
            keep_versions: None,
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
}

/// The kernel's change notification for a long-lived vault's read cache:
/// the index, its log and journal in the vault directory, by name and
/// (the index and its log) as files, and the anchor in the identity
/// directory. `None` where it cannot be set up (a directory not on a local
/// file system, the index or its log not the files this process has open,
/// the limit on watches reached): the cache then looks at the files on
/// every read.
#[cfg(target_os = "linux")]
fn change_watch(
    dir: &fsutil::PrivateDir,
    identity_dir: &Path,
    allow_foreign_owner: bool,
    vault_id: &str,
) -> Option<fsutil::DirWatch> {
    let names = vec![
        INDEX_FILE.into(),
        crate::index::WAL_FILE.into(),
        format!("{INDEX_FILE}-journal").into(),
        crate::anchor::file_name(vault_id).into(),
    ];
    let files = [(dir, INDEX_FILE), (dir, crate::index::WAL_FILE)];
    let made = fsutil::PrivateDir::open(identity_dir, allow_foreign_owner)
        .and_then(|identity| fsutil::DirWatch::new(&[dir, &identity], &files, names));
    match made {
        Ok(watch) => Some(watch),
        Err(e) => {
            tracing::debug!(error = %e, "no change notification for the read cache: it looks at the index files on every read");
            None
        }
    }
}
