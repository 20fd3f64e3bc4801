//! Earlier versions of secrets: history, reading a version, rollback,
//! purge, and the vault-wide keep limit.

use std::time::SystemTime;

use super::{now_ms, time_of, Entry, PutOptions, Vault, VaultError};
use crate::backend::BackendError;
use crate::index::{Row, Slot, VersionRow, DEFAULT_KEEP_VERSIONS};
use crate::scope::{SecretKey, VaultRef, VaultScope};
use crate::secret::SensitiveBytes;
use crate::writer::Writer;

/// One version of a secret: never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// The version number (the record version of that write).
    pub version: u64,
    /// Length of the value, in bytes.
    pub len: u64,
    /// When it was written.
    pub written: SystemTime,
    /// Who wrote it, when known (not for values written before sealfs
    /// kept writers).
    pub writer: Option<Writer>,
    /// The version a rollback brought back with this write.
    pub restored_from: Option<u64>,
    /// Whether this is the live value.
    pub current: bool,
    /// When it expires.
    pub expires: Option<SystemTime>,
}

impl Version {
    fn of_row(row: &Row) -> Version {
        Version {
            version: row.version,
            len: row.len,
            written: time_of(row.updated_ms),
            writer: row.writer.clone(),
            restored_from: row.restored_from,
            current: true,
            expires: row.expires_ms.map(time_of),
        }
    }

    fn of_version(v: &VersionRow) -> Version {
        Version {
            version: v.version,
            len: v.len,
            written: time_of(v.written_ms),
            writer: v.writer.clone(),
            restored_from: v.restored_from,
            current: false,
            expires: v.expires_ms.map(time_of),
        }
    }
}

/// A slot as a reader sees it at `now`: expired values and versions left
/// out.
/// Each value has its own lifetime: an expired live value goes alone.
fn live_slot(mut slot: Slot, now: i64) -> Slot {
    if slot.live.as_ref().is_some_and(|l| l.expired(now)) {
        slot.live = None;
    }
    slot.versions.retain(|v| !v.expired(now));
    slot
}

/// What `slot` keeps, said for an error message.
fn kept_of(slot: &Slot) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !slot.versions.is_empty() {
        let list: Vec<String> = slot
            .versions
            .iter()
            .map(|v| v.version.to_string())
            .collect();
        parts.push(format!("kept: {}", list.join(", ")));
    }
    match &slot.live {
        Some(l) => parts.push(format!("current: {}", l.version)),
        None => parts.push("deleted".into()),
    }
    if slot.versions.is_empty() {
        parts.insert(0, "no earlier version kept".into());
    }
    parts.join("; ")
}

impl Vault {
    /// The versions of `r`, oldest first: the kept earlier ones, then the
    /// live value (if not deleted). [`VaultError::NotFound`] if `r` has
    /// neither.
    pub fn history(&self, r: &VaultRef) -> Result<Vec<Version>, VaultError> {
        let slot = live_slot(self.verified(|ix| ix.slot(r))?, now_ms());
        if slot.live.is_none() && slot.versions.is_empty() {
            return Err(VaultError::NotFound(r.clone()));
        }
        let mut out: Vec<Version> = slot.versions.iter().map(Version::of_version).collect();
        out.extend(slot.live.as_ref().map(Version::of_row));
        Ok(out)
    }

    /// The value of version `n` of `r`: a kept earlier one, or the live
    /// one (unless read-once: that is read with [`Vault::get`]).
    pub fn get_version(&self, r: &VaultRef, n: u64) -> Result<SensitiveBytes, VaultError> {
        let now = now_ms();
        let found = self.verified(|ix| ix.version(r, n))?;
        if let Some(v) = found.filter(|v| !v.expired(now)) {
            let blob = self.blob_of(r, &v)?;
            return self.open_version(r, n, &blob);
        }
        let row = self.live_or_expired(r)?.filter(|row| !row.expired(now));
        match row {
            Some(row) if row.version == n && row.once => Err(VaultError::Unsupported(
                "reading a read-once secret by version (read it with get)",
            )),
            // The blob of the row read, opened as version n: never a value
            // written since (which may be read-once, and would be consumed).
            Some(row) if row.version == n => match self.backend.get_blob(&row.object_id) {
                Ok(blob) => self.open_version(r, n, &blob),
                Err(BackendError::NotFound(_)) => Err(self.no_such_version(r, n)),
                Err(e) => Err(e.into()),
            },
            _ => Err(self.no_such_version(r, n)),
        }
    }

    fn live_or_expired(&self, r: &VaultRef) -> Result<Option<Row>, VaultError> {
        self.verified(|ix| ix.row(r))
    }

    fn no_such_version(&self, r: &VaultRef, n: u64) -> VaultError {
        match self.verified(|ix| ix.slot(r)) {
            Ok(slot) => VaultError::NoSuchVersion {
                vault_ref: r.clone(),
                version: n,
                kept: kept_of(&live_slot(slot, now_ms())),
            },
            Err(e) => e,
        }
    }

    fn blob_of(&self, r: &VaultRef, v: &VersionRow) -> Result<Vec<u8>, VaultError> {
        match self.backend.get_blob(&v.object_id) {
            Err(BackendError::NotFound(_)) => Err(VaultError::BlobMissing(r.clone())),
            other => Ok(other?),
        }
    }

    /// Opens a version's blob: sealed to `r` and version `n`, so no other
    /// slot's or version's blob opens here.
    fn open_version(
        &self,
        r: &VaultRef,
        n: u64,
        blob: &[u8],
    ) -> Result<SensitiveBytes, VaultError> {
        self.keys
            .open(r, n, blob)
            .map_err(|source| VaultError::Integrity {
                vault_ref: r.clone(),
                source,
            })
    }

    /// The keys of `scope` that keep earlier versions, live or deleted,
    /// sorted (the mount's `.history` directory).
    pub fn versioned_keys(&self, scope: &VaultScope) -> Result<Vec<SecretKey>, VaultError> {
        let now = now_ms();
        let mut keys: Vec<SecretKey> = self
            .verified(|ix| ix.all_versions(Some(scope)))?
            .into_iter()
            .filter(|(_, v)| !v.expired(now))
            .map(|(r, _)| r.into_key())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    /// Writes a new version of `r` equal to version `to` (by default the
    /// newest kept one: the value before the current one, or the deleted
    /// value), so history only grows. The value comes back with the
    /// lifetime it was written with (capped by its session's end).
    pub fn rollback(
        &self,
        r: &VaultRef,
        to: Option<u64>,
        writer: Option<Writer>,
    ) -> Result<(Entry, u64), VaultError> {
        let w = self.writer();
        let _lock = self.lock_and_recover(&w)?;
        let now = now_ms();
        let (slot, _) = w.slot(r)?;
        let slot = live_slot(slot, now);
        let target = match to {
            Some(n) => {
                if let Some(live) = slot.live.as_ref().filter(|l| l.version == n) {
                    return Err(VaultError::AlreadyCurrent {
                        vault_ref: r.clone(),
                        version: live.version,
                    });
                }
                slot.versions
                    .iter()
                    .find(|v| v.version == n)
                    .ok_or_else(|| VaultError::NoSuchVersion {
                        vault_ref: r.clone(),
                        version: n,
                        kept: kept_of(&slot),
                    })?
            }
            None => slot.versions.last().ok_or_else(|| {
                // A secret that never was is not found; one deleted (or
                // purged) with nothing kept has no history.
                match (&slot.live, &slot.retired) {
                    (None, None) => VaultError::NotFound(r.clone()),
                    _ => VaultError::NoHistory(r.clone()),
                }
            })?,
        };
        let value = self.open_version(r, target.version, &self.blob_of(r, target)?)?;
        // The value comes back with the lifetime it was written with (and
        // no other): never longer, and not cut short by the value it
        // replaces.
        let options = PutOptions {
            allow_empty: true,
            expires: target.expires_ms.map(time_of),
            no_expiry: target.expires_ms.is_none(),
            writer,
            ..PutOptions::default()
        };
        let entry = self.put_locked(&w, r, &value, options, Some(target.version))?;
        Ok((entry, target.version))
    }

    /// Destroys `r` and every kept version of it at once (a leaked
    /// credential). Its version number stays, so none of its old blobs is
    /// ever accepted again. [`VaultError::NotFound`] if nothing is left.
    pub fn purge(&self, r: &VaultRef) -> Result<(), VaultError> {
        let w = self.writer();
        let _lock = self.lock_and_recover(&w)?;
        let (slot, _) = w.slot(r)?;
        let c = match &slot.live {
            Some(row) => w.commit_delete(r, row, true)?,
            None if !slot.versions.is_empty() => w.commit_purge(r)?,
            None => return Err(VaultError::NotFound(r.clone())),
        };
        self.committed(c.state)?;
        self.discard_all(&w, &c.discard);
        Ok(())
    }

    /// How many earlier versions of each secret are kept (unless a secret
    /// was given its own limit with [`PutOptions::keep_versions`]).
    pub fn keep_versions(&self) -> Result<u32, VaultError> {
        let keep = self.verified(|ix| {
            let record = ix.vault_record()?;
            Ok((record.keep_versions, record.state()?))
        })?;
        Ok(keep.unwrap_or(DEFAULT_KEEP_VERSIONS))
    }

    /// Sets [`Vault::keep_versions`]; a secret keeping more versions than
    /// that sheds the oldest at its next write.
    pub fn set_keep_versions(&self, keep: u32) -> Result<(), VaultError> {
        let w = self.writer();
        let _lock = self.lock_and_recover(&w)?;
        let state = w.commit_keep_versions(keep)?;
        self.committed(state)
    }
}
