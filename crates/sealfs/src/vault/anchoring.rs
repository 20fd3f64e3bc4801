//! The rollback anchor as the vault uses it: checking every read and
//! write against it, and accepting a deliberate rollback or move.

use std::path::Path;
use std::time::Duration;

use super::{write_lock, Anchoring, IdentityStore, Vault, VaultConfig, VaultError};
use crate::anchor::{AnchorError, AnchorStore};
use crate::identity::DeviceIdentity;
use crate::index::{Index, IndexError, State as IndexState};

/// Another vault of this identity directory still anchored at `place` is
/// retired (`anchor::retire_others_at`). Best effort, with a warning: the
/// vault being created or accepted works either way.
pub(super) fn retire_others(
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

impl Vault {
    pub(super) fn anchor_store(&self) -> AnchorStore<'_> {
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
    pub(super) fn place_anchor(&self) {
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
    pub(super) fn anchor_to(&self, state: IndexState) -> Result<(), VaultError> {
        self.published();
        self.fault(super::FaultPoint::AnchorWriteFails)?;
        self.anchor_store()
            .write(&self.keys, state)
            .map_err(|e| self.anchor_error(e))?;
        *self.anchored.lock().unwrap_or_else(|e| e.into_inner()) = Some(state);
        Ok(())
    }

    /// After a commit, once it is visible: one more change for long-lived
    /// vaults that watch the index (`fsutil::DirWatch`). The events of the
    /// commit's own log writes may have come before it was visible, and
    /// the anchor write that follows, the other event, may fail. Where the
    /// log cannot be touched (its name moved or removed, which ends other
    /// processes' watches), this vault's own watch ends too: it could not
    /// report this commit.
    pub(super) fn published(&self) {
        #[cfg(target_os = "linux")]
        if let Err(e) = self.dir_handle.touch(crate::index::WAL_FILE) {
            tracing::debug!(error = %e, "could not touch the index log after a commit; polling from now on");
            if let Some(watch) = &self.watch {
                watch.end();
            }
        }
    }

    /// After a commit: the write is durable in the index; an anchor that
    /// cannot be written now lags one commit, which the next writer
    /// settles, so the write is still acknowledged.
    ///
    /// An anchor that refuses to move (it is past this commit, or at it
    /// with another root: the index was put back under this writer) is
    /// the error: the commit forked the vault and is not acknowledged.
    pub(super) fn committed(&self, state: IndexState) -> Result<(), VaultError> {
        self.settle(self.anchor_to(state))
    }

    /// The outcome of advancing an anchor after a commit: a fork or a
    /// foreign place is the error; anything else lags one commit.
    pub(super) fn settle(&self, anchored: Result<(), VaultError>) -> Result<(), VaultError> {
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

    pub(super) fn anchor_error(&self, e: AnchorError) -> VaultError {
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
    pub(super) fn check_anchor(&self, state: IndexState, locked: bool) -> Result<bool, VaultError> {
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
    pub(super) fn verified<T>(
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
        vault.published();
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
    pub(super) fn retire_others_here(&self) -> Result<(), VaultError> {
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
}
