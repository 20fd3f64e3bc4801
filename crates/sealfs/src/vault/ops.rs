//! Reading and writing secrets and scopes: put, get, delete, rename, list.

use std::sync::Arc;
use std::time::Duration;

use super::{
    check_value, ms_of, now_ms, scope_info, time_of, write_lock, Entry, FaultPoint, PutOptions,
    ScopeInfo, Vault, VaultError, WriteLock,
};
use crate::backend::{BackendError, ObjectId};
use crate::index::{Index, Row, VaultRecord};
use crate::scope::{SecretKey, VaultRef, VaultScope};
use crate::secret::SensitiveBytes;

impl Vault {
    pub(super) fn check_not_migrated(&self, record: &VaultRecord) -> Result<(), VaultError> {
        if record.backend != self.choice.kind.as_str() {
            return Err(VaultError::Migrated {
                dir: self.dir.clone(),
                to: record.backend.clone(),
            });
        }
        Ok(())
    }

    /// Deletes what interrupted writes left behind. Caller holds the lock.
    pub(super) fn recover_locked(&self, w: &Index) -> Result<(), VaultError> {
        // What `pending` names is deleted only if no record (checked whole:
        // the clear object ids too) still references it.
        w.verify_all()?;
        self.backend.recover()?;
        w.forget_referenced_pending()?;
        // `pending` is not authenticated: never let it name the reserved
        // items (identity, anchor) of a keystore.
        let reserved = [ObjectId::identity(), ObjectId::anchor()];
        for id in w.orphans()?.into_iter().filter(|id| !reserved.contains(id)) {
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
        if !(options.allow_empty && value.is_empty()) {
            self.check_value(r, &value)?;
        }
        if r.key().is_reserved() {
            return Err(VaultError::ReservedKey(r.clone()));
        }
        let w = self.writer();
        let _lock = self.lock_and_recover(&w)?;
        self.put_locked(&w, r, &value, options, None)
    }

    /// [`Vault::put_with`] under the writer lock; `restored_from`: the
    /// version a rollback brings back.
    pub(super) fn put_locked(
        &self,
        w: &Index,
        r: &VaultRef,
        value: &SensitiveBytes,
        options: PutOptions,
        restored_from: Option<u64>,
    ) -> Result<Entry, VaultError> {
        // An expired value is not there for `expect`, nor carries its
        // creation time or lifetime over; its version and blob still count.
        let (current, _) = w.row(r)?;
        let live = current.clone().filter(|c| !c.expired(now_ms()));
        let asked = match (options.expires, options.no_expiry) {
            (Some(t), _) => Some(ms_of(t)),
            (None, true) => None,
            (None, false) => live.as_ref().and_then(|c| c.expires_ms),
        };
        let expires_ms = self.expiry_in(w, r.scope(), asked)?;
        if let Some(expected) = options.expect {
            // Checked under the writer lock, so no other write comes between.
            let found = live.as_ref().map(|c| c.version);
            if !expected.holds(found) {
                return Err(VaultError::NotAsExpected {
                    vault_ref: r.clone(),
                    expected,
                    found,
                });
            }
        }
        let mut row = self.store_blob(w, r, value, live.as_ref(), options.once)?;
        row.expires_ms = expires_ms;
        row.keep = options
            .keep_versions
            .or_else(|| live.as_ref().and_then(|c| c.keep));
        row.writer = options.writer.clone();
        row.restored_from = restored_from;
        self.fault(FaultPoint::PutAfterBlob)?;
        let keep_old =
            options.amends.is_none() || options.amends != live.as_ref().map(|c| c.version);
        let c = w.commit_put(r, &row, current.as_ref(), live.is_some(), keep_old)?;
        self.fault(FaultPoint::PutAfterCommit)?;
        self.committed(c.state)?;
        self.discard_all(w, &c.discard);
        Ok(self.entry_of(r.clone(), &row))
    }

    /// The value of `r`, or, if there is none, `generate()` stored under
    /// `r` and returned: one value however many processes ask at once (the
    /// store is a compare-and-swap, and a loser reads the winner's value).
    /// A read-once secret is not loaded this way (it would be consumed).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let mut config = sealfs::VaultConfig::new(dir.path().join("vault"));
    /// # config.backend = sealfs::BackendPreference::Explicit(sealfs::BackendKind::EncryptedFile);
    /// use sealfs::{SensitiveBytes, Vault, VaultRef};
    ///
    /// let vault = Vault::open(config)?;
    /// let r = VaultRef::parse("global/session_signing_key")?;
    /// let first = vault.load_or_create(&r, || SensitiveBytes::from_slice(b"generated once"))?;
    /// // Later (or in another process): the stored value, not a new one.
    /// let again = vault.load_or_create(&r, || SensitiveBytes::from_slice(b"never used"))?;
    /// assert_eq!(first.expose(), again.expose());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn load_or_create(
        &self,
        r: &VaultRef,
        generate: impl FnOnce() -> SensitiveBytes,
    ) -> Result<SensitiveBytes, VaultError> {
        let stored = |vault: &Vault| -> Result<Option<SensitiveBytes>, VaultError> {
            match vault.live_row(r)? {
                None => Ok(None),
                Some(row) if row.once => Err(VaultError::Unsupported(
                    "load_or_create of a read-once secret (it would be consumed)",
                )),
                Some(_) => match vault.get(r) {
                    Ok(v) => Ok(Some(v)),
                    Err(VaultError::NotFound(_)) => Ok(None),
                    Err(e) => Err(e),
                },
            }
        };
        if let Some(v) = stored(self)? {
            return Ok(v);
        }
        let value = generate();
        let options = PutOptions {
            expect: Some(super::Expected::Absent),
            ..PutOptions::default()
        };
        match self.put_with(r, SensitiveBytes::from_slice(value.expose()), options) {
            Ok(_) => Ok(value),
            // Another process stored one first: that one is the value.
            Err(VaultError::NotAsExpected { .. }) => {
                stored(self)?.ok_or_else(|| VaultError::NotFound(r.clone()))
            }
            Err(e) => Err(e),
        }
    }

    pub(super) fn check_value(
        &self,
        r: &VaultRef,
        value: &SensitiveBytes,
    ) -> Result<(), VaultError> {
        check_value(r, value, self.max_value_size)
    }

    /// Takes the writer lock and sweeps what interrupted writers left.
    /// Refuses to write through a backend the vault has migrated away from.
    /// The index must agree with the anchor here (no writer can move
    /// either), and an anchor one commit behind (a writer stopped between
    /// its commit and its anchor) is brought up to date first.
    pub(super) fn lock_and_recover(&self, w: &Index) -> Result<WriteLock, VaultError> {
        self.lock_and_recover_within(w, self.lock_timeout)
    }

    pub(super) fn lock_and_recover_within(
        &self,
        w: &Index,
        timeout: Duration,
    ) -> Result<WriteLock, VaultError> {
        let lock = write_lock(&self.dir_handle, timeout)?;
        let record = w.vault_record()?;
        self.check_not_migrated(&record)?;
        let state = record.state()?;
        self.check_anchor(state, true)?;
        if *self.anchored.lock().unwrap_or_else(|e| e.into_inner()) != Some(state) {
            self.anchor_to(state)?;
        }
        if w.has_pending()? {
            self.recover_locked(w)?;
        }
        if record.next_expiry_ms.is_some_and(|t| t <= now_ms()) {
            self.sweep_locked(w)?;
        }
        Ok(lock)
    }

    /// Seals `value` for the next version of `r` and writes the blob, recorded
    /// as pending until the caller commits a row pointing at it. `current`
    /// is the live row of `r`, whose creation time carries over.
    pub(super) fn store_blob(
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
            expires_ms: None,
            keep: None,
            writer: None,
            restored_from: None,
        })
    }

    /// Best-effort removal of a replaced blob after the commit point: the
    /// write already succeeded, so a failure here only leaves the id in
    /// `pending` for the next writer to sweep.
    pub(super) fn discard_all(&self, w: &Index, ids: &[ObjectId]) {
        for id in ids {
            self.discard(w, id);
        }
    }

    pub(super) fn discard(&self, w: &Index, id: &ObjectId) {
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
        // Taken before the checks below: a change during them shows in
        // the next read's stamp.
        let stamp = self.read_stamp();
        if let Some((row, blob)) = stamp.and_then(|s| self.read_cache.get(&s, r)) {
            if row.expired(now_ms()) {
                return Err(VaultError::NotFound(r.clone()));
            }
            return self.open_blob(r, &row, &blob).map(|v| (v, false));
        }
        let mut row = self
            .live_row(r)?
            .ok_or_else(|| VaultError::NotFound(r.clone()))?;
        loop {
            if row.once {
                return self.consume(r).map(|v| (v, true));
            }
            match self.backend.get_blob(&row.object_id) {
                Ok(blob) => {
                    let value = self.open_blob(r, &row, &blob)?;
                    if let Some(stamp) = stamp {
                        self.read_cache.put(stamp, r, &row, &blob);
                    }
                    return Ok((value, false));
                }
                Err(BackendError::NotFound(_)) => {
                    // A concurrent put or delete may have replaced the blob
                    // between our index read and the backend read: look again.
                    // (Bound first: the reader lock must be released before
                    // the check below takes it again.)
                    let current = self.live_row(r)?;
                    match current {
                        None => return Err(VaultError::NotFound(r.clone())),
                        Some(now) if now == row => {
                            self.check_not_migrated(&self.reader().vault_record()?)?;
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
    pub(super) fn consume(&self, r: &VaultRef) -> Result<SensitiveBytes, VaultError> {
        let w = self.writer();
        let _lock = self.lock_and_recover(&w)?;
        let row = w.row(r)?.0.filter(|row| !row.expired(now_ms()));
        let row = row.ok_or_else(|| VaultError::NotFound(r.clone()))?;
        let blob = match self.backend.get_blob(&row.object_id) {
            Err(BackendError::NotFound(_)) => return Err(VaultError::BlobMissing(r.clone())),
            other => other?,
        };
        let value = self.open_blob(r, &row, &blob)?;
        // Rewritten as an ordinary secret since we looked: nothing to consume.
        if row.once {
            // Consumed: not kept, but the plain values before it are.
            let c = w.commit_delete(r, &row, false)?;
            self.committed(c.state)?;
            self.discard_all(&w, &c.discard);
        }
        Ok(value)
    }

    pub(super) fn open_blob(
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
    /// Its value is kept as its last version: [`Vault::rollback`] brings
    /// it back (see [`Vault::purge`]).
    pub fn delete(&self, r: &VaultRef) -> Result<(), VaultError> {
        let w = self.writer();
        let _lock = self.lock_and_recover(&w)?;
        let row = w.row(r)?.0.filter(|row| !row.expired(now_ms()));
        let row = row.ok_or_else(|| VaultError::NotFound(r.clone()))?;
        let c = w.commit_delete(r, &row, false)?;
        self.fault(FaultPoint::DeleteAfterCommit)?;
        self.committed(c.state)?;
        self.discard_all(&w, &c.discard);
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
        if to.key().is_reserved() {
            return Err(VaultError::ReservedKey(to.clone()));
        }
        let w = self.writer();
        let _lock = self.lock_and_recover(&w)?;
        let from_row = w
            .row(from)?
            .0
            .filter(|row| !row.expired(now_ms()))
            .ok_or_else(|| VaultError::NotFound(from.clone()))?;
        if from == to {
            return Ok(self.entry_of(to.clone(), &from_row));
        }
        let expires_ms = self.expiry_in(&w, to.scope(), from_row.expires_ms)?;
        let (target, _) = w.row(to)?;
        if no_replace && target.as_ref().is_some_and(|t| !t.expired(now_ms())) {
            return Err(VaultError::Exists(to.clone()));
        }
        let value = match self.backend.get_blob(&from_row.object_id) {
            Err(BackendError::NotFound(_)) => return Err(VaultError::BlobMissing(from.clone())),
            other => self.open_blob(from, &from_row, &other?)?,
        };
        let target_live = target.as_ref().is_some_and(|t| !t.expired(now_ms()));
        let mut to_row = self.store_blob(&w, to, &value, Some(&from_row), from_row.once)?;
        to_row.updated_ms = from_row.updated_ms;
        to_row.expires_ms = expires_ms;
        to_row.writer = from_row.writer.clone();
        to_row.keep = target.as_ref().and_then(|t| t.keep);
        let c = w.commit_rename(from, &from_row, to, &to_row, target.as_ref(), target_live)?;
        self.committed(c.state)?;
        self.discard_all(&w, &c.discard);
        Ok(self.entry_of(to.clone(), &to_row))
    }

    /// Registers an empty scope (a directory made through the mount).
    pub fn create_scope(
        &self,
        scope: &VaultScope,
        owner_uid: Option<u32>,
    ) -> Result<(), VaultError> {
        self.create_scope_until(scope, owner_uid, None)
    }

    /// Registers an empty scope that ends at `expires` (a session with a
    /// lifetime): from then on it and everything stored in it are gone for
    /// every reader, and the next writer removes them.
    pub fn create_scope_until(
        &self,
        scope: &VaultScope,
        owner_uid: Option<u32>,
        expires: Option<std::time::SystemTime>,
    ) -> Result<(), VaultError> {
        if *scope == VaultScope::Global {
            return Err(VaultError::GlobalScope);
        }
        if expires.is_some() && !matches!(scope, VaultScope::Session(_)) {
            return Err(VaultError::Unsupported("only a session scope can end"));
        }
        let w = self.writer();
        let _lock = self.lock_and_recover(&w)?;
        // An ended session's record (emptied by the sweep under this lock)
        // gives way to a new session of that id.
        let replace = match w.scope_row(scope)?.0 {
            Some(s) if s.ended(now_ms()) => true,
            Some(_) => return Err(VaultError::ScopeExists(scope.clone())),
            None => false,
        };
        let expires_ms = expires.map(ms_of);
        match w.register_scope(scope, owner_uid, now_ms(), expires_ms, replace)? {
            Some(state) => self.committed(state)?,
            None => return Err(VaultError::ScopeExists(scope.clone())),
        }
        Ok(())
    }

    /// Removes an empty scope.
    pub fn remove_scope(&self, scope: &VaultScope) -> Result<(), VaultError> {
        if *scope == VaultScope::Global {
            return Err(VaultError::GlobalScope);
        }
        let w = self.writer();
        let _lock = self.lock_and_recover(&w)?;
        if w.scope_has_secrets(scope)? {
            return Err(VaultError::ScopeNotEmpty(scope.clone()));
        }
        if matches!(scope, VaultScope::Session(_)) {
            // A session removed is a session ended: its record stays, so
            // that nothing is stored in it afterwards (see `sweep_locked`).
            match w.scope_row(scope)?.0 {
                Some(s) if s.registered && !s.ended(now_ms()) => {}
                _ => return Err(VaultError::NoSuchScope(scope.clone())),
            }
            let versions = w.all_versions(Some(scope))?.0;
            let c = w.commit_end_scope(scope, &[], &versions, Some(now_ms()))?;
            self.committed(c.state)?;
            self.discard_all(&w, &c.discard);
            return Ok(());
        }
        // The history of what it held stays (a `rm -r` through the mount
        // is undone like each `rm`); `delete --purge` destroys it.
        if !w.scope_row(scope)?.0.is_some_and(|s| s.registered) {
            return Err(VaultError::NoSuchScope(scope.clone()));
        }
        let c = w.commit_end_scope(scope, &[], &[], None)?;
        self.committed(c.state)?;
        self.discard_all(&w, &c.discard);
        Ok(())
    }

    /// The uid that created `scope` (a session) through the mount, when
    /// that is not this process's effective uid: it reads everything
    /// stored there, so the CLI and the console ask before writing into it.
    pub fn others_session(&self, scope: &VaultScope) -> Result<Option<u32>, VaultError> {
        if !matches!(scope, VaultScope::Session(_)) {
            return Ok(None);
        }
        let owner = self.scope(scope)?.and_then(|s| s.owner_uid);
        #[cfg(unix)]
        return Ok(owner.filter(|uid| *uid != crate::fsutil::euid()));
        #[cfg(not(unix))]
        return Ok(owner);
    }

    /// Whether `scope` exists, and who registered it: `None` if it does
    /// not (`global` always does).
    pub fn scope(&self, scope: &VaultScope) -> Result<Option<ScopeInfo>, VaultError> {
        if *scope == VaultScope::Global {
            return Ok(Some(ScopeInfo {
                scope: VaultScope::Global,
                owner_uid: None,
                registered: true,
                expires: None,
            }));
        }
        Ok(self
            .verified(|ix| ix.scope_row(scope))?
            .filter(|s| !s.ended(now_ms()))
            .map(scope_info))
    }

    /// Ends session `scope` now: every secret in it and its registration
    /// are removed in one commit, and their blobs deleted.
    pub fn end_session(&self, scope: &VaultScope) -> Result<(), VaultError> {
        if !matches!(scope, VaultScope::Session(_)) {
            return Err(VaultError::Unsupported("only a session scope can be ended"));
        }
        let w = self.writer();
        let _lock = self.lock_and_recover(&w)?;
        match w.scope_row(scope)?.0 {
            Some(s) if !s.ended(now_ms()) => {}
            _ => return Err(VaultError::NoSuchScope(scope.clone())),
        }
        let rows = w.list(Some(scope))?.0;
        let versions = w.all_versions(Some(scope))?.0;
        // Its record stays, ended now, as after its lifetime.
        let c = w.commit_end_scope(scope, &rows, &versions, Some(now_ms()))?;
        self.committed(c.state)?;
        self.discard_all(&w, &c.discard);
        Ok(())
    }

    /// Every scope that exists (registered or holding secrets), sorted;
    /// `global` first.
    pub fn scopes(&self) -> Result<Vec<ScopeInfo>, VaultError> {
        let mut out = vec![ScopeInfo {
            scope: VaultScope::Global,
            owner_uid: None,
            registered: true,
            expires: None,
        }];
        out.extend(
            self.verified(|ix| ix.scopes())?
                .into_iter()
                .filter(|s| s.scope != VaultScope::Global)
                .filter(|s| !s.ended(now_ms()))
                .map(scope_info),
        );
        Ok(out)
    }

    /// Metadata of every secret in `scope` (all scopes for `None`), sorted.
    pub fn list(&self, scope: Option<&VaultScope>) -> Result<Vec<Entry>, VaultError> {
        Ok(self
            .verified(|ix| ix.list(scope))?
            .into_iter()
            .filter(|(_, row)| !row.expired(now_ms()))
            .map(|(r, row)| self.entry_of(r, &row))
            .collect())
    }

    /// Calls `f` with each key of `scope`, in order, without building the
    /// metadata [`Vault::list`] returns (directory listings of big scopes).
    pub fn for_each_key(
        &self,
        scope: &VaultScope,
        mut f: impl FnMut(SecretKey),
    ) -> Result<(), VaultError> {
        let stamp = self.read_stamp();
        let keys = match stamp.and_then(|s| self.read_cache.keys(&s, scope)) {
            Some(keys) => keys,
            None => {
                let (keys, soonest) = self.verified(|ix| {
                    let (keys, soonest, state) = ix.keys_of(scope, now_ms())?;
                    Ok(((keys, soonest), state))
                })?;
                let keys: Arc<[SecretKey]> = keys.into();
                // A listing with secrets that expire is not kept: it would
                // go stale with the clock, not with the index.
                if let (Some(stamp), None) = (stamp, soonest) {
                    self.read_cache.put_keys(stamp, scope, &keys);
                }
                keys
            }
        };
        for key in keys.iter() {
            f(key.clone());
        }
        Ok(())
    }

    /// Metadata of `r` without decrypting it.
    pub fn entry(&self, r: &VaultRef) -> Result<Option<Entry>, VaultError> {
        Ok(self.live_row(r)?.map(|row| self.entry_of(r.clone(), &row)))
    }

    /// The row of `r`, unless it has expired.
    fn live_row(&self, r: &VaultRef) -> Result<Option<Row>, VaultError> {
        Ok(self
            .verified(|ix| ix.row(r))?
            .filter(|row| !row.expired(now_ms())))
    }

    /// The object id of `r`'s current blob (object ids are HMACs and reveal
    /// nothing; tests use it to find the blob they attack).
    #[doc(hidden)]
    pub fn blob_id(&self, r: &VaultRef) -> Result<Option<ObjectId>, VaultError> {
        Ok(self.verified(|ix| ix.row(r))?.map(|row| row.object_id))
    }

    /// The object id of every blob the index references: live secrets
    /// (expired ones not yet swept too) and kept versions. Tests check the
    /// backend holds exactly these.
    #[doc(hidden)]
    pub fn object_ids(&self) -> Result<Vec<ObjectId>, VaultError> {
        Ok(self.reader().object_ids()?)
    }

    /// Whether a secret is stored under `r`.
    pub fn exists(&self, r: &VaultRef) -> Result<bool, VaultError> {
        Ok(self.live_row(r)?.is_some())
    }

    pub(super) fn entry_of(&self, vault_ref: VaultRef, row: &Row) -> Entry {
        Entry {
            vault_ref,
            len: row.len,
            created: time_of(row.created_ms),
            updated: time_of(row.updated_ms),
            version: row.version,
            once: row.once,
            expires: row.expires_ms.map(time_of),
        }
    }
}
