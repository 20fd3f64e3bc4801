//! Moving a vault's blobs to another backend, resumably.

use std::sync::Arc;

use super::{identity_store_of, IdentityStore, Vault, VaultConfig, VaultError};
use crate::anchor::AnchorStore;
use crate::backend::{
    self, BackendContext, BackendError, BackendKind, BackendPreference, BlobBackend, ObjectId,
};
use crate::identity::{DeviceIdentity, IdentityError};
use crate::index::{Index, State as IndexState};

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
    /// The backend the blobs moved from.
    pub from: BackendKind,
    /// The backend the vault uses now.
    pub to: BackendKind,
    /// Secrets moved (0 when there was nothing to do).
    pub blobs: usize,
    /// Whether this run finished an interrupted one.
    pub resumed: bool,
}

pub(super) fn copy_verified(
    target: &dyn BlobBackend,
    id: &ObjectId,
    blob: &[u8],
) -> Result<(), VaultError> {
    target.put_blob(id, blob)?;
    let back = zeroize::Zeroizing::new(target.get_blob(id)?);
    if back.as_slice() != blob {
        return Err(VaultError::MigrationVerify(id.clone()));
    }
    Ok(())
}

impl Vault {
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
    pub(super) fn clean_up(
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
}
