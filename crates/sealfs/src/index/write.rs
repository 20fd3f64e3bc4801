//! Writing the index: one `BEGIN IMMEDIATE` transaction per commit, which
//! updates the records, their buckets and the vault record together.

use rusqlite::{params, Connection, TransactionBehavior};

use super::records::version_name;
use super::{
    bucket_digests, bucket_of, insert_stored, ref_name, root_of, write_hints, Index, IndexError,
    RetiredRecord, Row, ScopeRecord, SecretRecord, State, Stored, VaultRecord, VersionRecord,
    VersionRow, DEFAULT_KEEP_VERSIONS, ENDED_SESSION_KEPT_MS, KIND_RETIRED, KIND_SCOPE,
    KIND_SECRET, KIND_VERSION, VAULT_RECORD_ID,
};
use crate::backend::ObjectId;
use crate::crypto::KeyRing;
use crate::scope::{VaultRef, VaultScope};

impl Index {
    /// The version a new write to `r` gets: one past the live or retired
    /// one. Writer only (the caller checked the state under the lock).
    pub(crate) fn next_version(&self, r: &VaultRef) -> Result<u64, IndexError> {
        if let (Some(row), _) = self.row(r)? {
            return Ok(row.version + 1);
        }
        Ok(self.retired(r)?.map_or(1, |t| t.version + 1))
    }

    pub(crate) fn add_pending(&self, id: &ObjectId) -> Result<(), IndexError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO pending (object_id) VALUES (?1)",
                [id.as_str()],
            )
            .map(drop)
            .map_err(self.err())
    }

    pub(crate) fn remove_pending(&self, id: &ObjectId) -> Result<(), IndexError> {
        self.conn
            .execute("DELETE FROM pending WHERE object_id = ?1", [id.as_str()])
            .map(drop)
            .map_err(self.err())
    }

    /// Pending ids that no live secret references: safe to delete from the
    /// backend (with the writer lock held).
    pub(crate) fn orphans(&self) -> Result<Vec<ObjectId>, IndexError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT object_id FROM pending
                 WHERE object_id NOT IN (SELECT object_id FROM records WHERE object_id IS NOT NULL)",
            )
            .map_err(self.err())?;
        let ids = st
            .query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(self.err())?;
        Ok(ids.iter().filter_map(|s| ObjectId::parse(s)).collect())
    }

    /// Removes pending ids that a live secret references (never deletable).
    pub(crate) fn forget_referenced_pending(&self) -> Result<(), IndexError> {
        self.conn
            .execute(
                "DELETE FROM pending WHERE object_id IN
                 (SELECT object_id FROM records WHERE object_id IS NOT NULL)",
                [],
            )
            .map(drop)
            .map_err(self.err())
    }

    pub(crate) fn has_pending(&self) -> Result<bool, IndexError> {
        self.conn
            .query_row("SELECT EXISTS (SELECT 1 FROM pending)", [], |r| r.get(0))
            .map_err(self.err())
    }

    pub(super) fn write_tx<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, IndexError> {
        let path = self.path.clone();
        let err = |source| IndexError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let out = f(&tx).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(out)
    }

    /// One authenticated commit: checks the vault record and the buckets
    /// `edit` will touch, applies `edit`, recomputes those buckets and the
    /// root, and seals the vault record with the counter advanced (and
    /// `update` applied). Returns the new state.
    pub(super) fn commit(
        &self,
        what: &str,
        edit: impl FnOnce(&Edit<'_>) -> Result<(), IndexError>,
        update: impl FnOnce(&mut VaultRecord),
    ) -> Result<Committed, IndexError> {
        let keys = self.keys();
        let tx = ImmediateTx::begin(&self.conn).map_err(self.err())?;
        let mut record = self.vault_record_in(&self.conn)?;
        let edits = Edit {
            conn: &self.conn,
            keys,
            touched: std::cell::RefCell::new(Vec::new()),
            index: self,
            what,
            keep_default: record.keep_versions.unwrap_or(DEFAULT_KEEP_VERSIONS),
            discard: std::cell::RefCell::new(Vec::new()),
        };
        edit(&edits)?;
        let mut discard = edits.discard.into_inner();
        discard.sort();
        discard.dedup();
        for b in edits.touched.into_inner() {
            let (computed, _) = bucket_digests(&self.conn, b).map_err(self.err())?;
            self.conn
                .execute(
                    "UPDATE buckets SET digest = ?2 WHERE bucket = ?1",
                    params![b, computed.as_slice()],
                )
                .map_err(self.err())?;
        }
        update(&mut record);
        record.counter += 1;
        record.root = crate::hex::hex(&root_of(&self.conn).map_err(self.err())?);
        let vault_id = self.meta_vault_id(&self.conn)?;
        write_hints(&self.conn, &vault_id, &record).map_err(self.err())?;
        self.conn
            .execute(
                "UPDATE vault SET sealed = ?1 WHERE one = 1",
                [keys.seal_record(
                    VAULT_RECORD_ID,
                    &serde_json::to_vec(&record).expect("plain data"),
                )],
            )
            .map_err(self.err())?;
        tx.commit().map_err(self.err())?;
        Ok(Committed {
            state: record.state()?,
            discard,
        })
    }

    pub(super) fn meta_vault_id(&self, conn: &Connection) -> Result<String, IndexError> {
        conn.query_row("SELECT value FROM meta WHERE name = 'vault_id'", [], |r| {
            r.get(0)
        })
        .map_err(self.err())
    }

    /// Commits a new value for `r`: the row now points at `row.object_id`,
    /// which leaves `pending`. The value it replaces (`current`, read
    /// under the lock; `live` unless it had expired) becomes an earlier
    /// version; versions past the keep limit, and the whole history of
    /// an expired value, enter `pending` for deletion. This is the commit
    /// point of a put.
    pub(crate) fn commit_put(
        &self,
        r: &VaultRef,
        row: &Row,
        current: Option<&Row>,
        live: bool,
        keep_old: bool,
    ) -> Result<Committed, IndexError> {
        self.commit(
            &r.to_string(),
            |e| e.install(r, row, current, live, keep_old),
            |rec| expires_by(rec, row.expires_ms),
        )
    }

    /// Destroys every kept version of `r` (a `delete --purge` of a secret
    /// deleted already).
    pub(crate) fn commit_purge(&self, r: &VaultRef) -> Result<Committed, IndexError> {
        self.commit(&r.to_string(), |e| e.prune(r, 0), |_| {})
    }

    /// Sets how many earlier versions of each secret are kept, vault-wide.
    pub(crate) fn commit_keep_versions(&self, keep: u32) -> Result<State, IndexError> {
        self.commit(
            "vault settings",
            |_| Ok(()),
            |rec| rec.keep_versions = Some(keep),
        )
        .map(|c| c.state)
    }

    /// Removes every secret of `scope` (`rows`, read under the lock) and
    /// its registration, in one commit: ending a session, or sweeping an
    /// expired one.
    /// `ended_ms`: the registration stays, ending then (nothing more is
    /// stored in the session); `None`: it goes.
    /// Kept versions of its secrets (`versions`, live or deleted) go too.
    pub(crate) fn commit_end_scope(
        &self,
        scope: &VaultScope,
        rows: &[(VaultRef, Row)],
        versions: &[(VaultRef, VersionRow)],
        ended_ms: Option<i64>,
    ) -> Result<Committed, IndexError> {
        let name = scope.to_string();
        let kept = match ended_ms {
            Some(t) => {
                let old = self.read(|| self.scope_record_in(scope))?;
                Some(ScopeRecord {
                    scope: name.clone(),
                    owner_uid: old.as_ref().and_then(|o| o.owner_uid),
                    created_ms: old.as_ref().map_or(t, |o| o.created_ms),
                    expires_ms: Some(old.and_then(|o| o.expires_ms).map_or(t, |e| e.min(t))),
                })
            }
            None => None,
        };
        self.commit(
            &name,
            |e| {
                for (r, row) in rows {
                    e.retire(r, row, Retire::Purge)?;
                }
                for (r, v) in versions {
                    e.drop_version(r, v)?;
                }
                e.remove(KIND_SCOPE, name.as_bytes())?;
                kept.map_or(Ok(()), |rec| e.put(rec.seal(e.keys)))
            },
            // The kept record is forgotten a while after the end.
            |rec| {
                expires_by(
                    rec,
                    ended_ms.map(|t| t.saturating_add(ENDED_SESSION_KEPT_MS)),
                )
            },
        )
    }

    /// Removes the expired secrets `rows` and the expired versions
    /// `versions` in one commit, and sets when the next one expires. An
    /// expired value goes alone: each earlier version keeps the lifetime it
    /// was written with.
    pub(crate) fn commit_expired(
        &self,
        rows: &[(VaultRef, Row)],
        versions: &[(VaultRef, VersionRow)],
        next_expiry_ms: Option<i64>,
    ) -> Result<Committed, IndexError> {
        self.commit(
            "expired secrets",
            |e| {
                for (r, row) in rows {
                    e.retire(r, row, Retire::Release)?;
                }
                for (r, v) in versions {
                    e.drop_version(r, v)?;
                }
                Ok(())
            },
            |rec| rec.next_expiry_ms = next_expiry_ms,
        )
    }

    /// Removes `r`, remembering its version. Its value becomes its last
    /// kept version, unless `purge` (or it was read-once): then it and
    /// every earlier version are marked for deletion. This is the commit
    /// point of a delete.
    pub(crate) fn commit_delete(
        &self,
        r: &VaultRef,
        row: &Row,
        purge: bool,
    ) -> Result<Committed, IndexError> {
        let how = if purge { Retire::Purge } else { Retire::Keep };
        self.commit(&r.to_string(), |e| e.retire(r, row, how), |_| {})
    }

    /// Moves `from` to `to` in one commit: `from` is removed as by a delete
    /// (its value kept as its last version), and `to` points at its
    /// freshly sealed object as by a put over `target`.
    pub(crate) fn commit_rename(
        &self,
        from: &VaultRef,
        from_row: &Row,
        to: &VaultRef,
        to_row: &Row,
        target: Option<&Row>,
        target_live: bool,
    ) -> Result<Committed, IndexError> {
        self.commit(
            &from.to_string(),
            |e| {
                e.retire(from, from_row, Retire::Keep)?;
                e.install(to, to_row, target, target_live, true)
            },
            |rec| expires_by(rec, to_row.expires_ms),
        )
    }

    /// Changes vault-wide fields (migration) in one commit.
    pub(crate) fn commit_vault(
        &self,
        update: impl FnOnce(&mut VaultRecord),
    ) -> Result<State, IndexError> {
        self.commit("vault metadata", |_| Ok(()), update)
            .map(|c| c.state)
    }

    /// Registers `scope` with an owner; `None` (nothing committed) if it
    /// was registered already.
    pub(crate) fn register_scope(
        &self,
        scope: &VaultScope,
        owner_uid: Option<u32>,
        now_ms: i64,
        expires_ms: Option<i64>,
        replace: bool,
    ) -> Result<Option<State>, IndexError> {
        let name = scope.to_string();
        let id = self.keys().name_id(KIND_SCOPE, name.as_bytes());
        self.read(|| self.check_bucket(&self.conn, bucket_of(&id), &name))?;
        if !replace && self.stored(&self.conn, &id)?.is_some() {
            return Ok(None);
        }
        let rec = ScopeRecord {
            scope: name.clone(),
            owner_uid,
            created_ms: now_ms,
            expires_ms,
        };
        self.commit(
            &name,
            |e| {
                if replace {
                    e.remove(KIND_SCOPE, name.as_bytes())?;
                }
                e.put(rec.seal(e.keys))
            },
            |vault| expires_by(vault, expires_ms),
        )
        .map(|c| Some(c.state))
    }
}

/// What becomes of a removed secret's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retire {
    /// Kept as its last version (a delete; a read-once value is released).
    Keep,
    /// Released, the earlier versions kept (an expired value).
    Release,
    /// Released with every earlier version (a purge, a session's end).
    Purge,
}

/// What a commit did: the state it made, and the blobs it left to delete
/// (in `pending` until deleted).
#[must_use]
pub(crate) struct Committed {
    pub state: State,
    pub discard: Vec<ObjectId>,
}

/// Makes `record` say that something expires at `expires_ms`, if sooner
/// than what it says.
fn expires_by(record: &mut VaultRecord, expires_ms: Option<i64>) {
    if let Some(t) = expires_ms {
        record.next_expiry_ms = Some(record.next_expiry_ms.map_or(t, |n| n.min(t)));
    }
}

/// A `BEGIN IMMEDIATE` transaction on a shared connection, rolled back on
/// drop unless committed.
pub(super) struct ImmediateTx<'a> {
    conn: &'a Connection,
    done: bool,
}

impl<'a> ImmediateTx<'a> {
    pub(super) fn begin(conn: &'a Connection) -> rusqlite::Result<Self> {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(ImmediateTx { conn, done: false })
    }

    pub(super) fn commit(mut self) -> rusqlite::Result<()> {
        self.done = true;
        self.conn.execute_batch("COMMIT")
    }
}

impl Drop for ImmediateTx<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// The edits of one commit; remembers the buckets they touch.
pub(super) struct Edit<'a> {
    conn: &'a Connection,
    keys: &'a KeyRing,
    touched: std::cell::RefCell<Vec<u8>>,
    index: &'a Index,
    what: &'a str,
    /// How many earlier versions a secret keeps unless it says otherwise.
    keep_default: u32,
    /// The objects this commit marked for deletion.
    discard: std::cell::RefCell<Vec<ObjectId>>,
}

impl Edit<'_> {
    /// Before a bucket is first changed, its current records must match its
    /// digest: a tampered bucket is never re-digested into a valid one.
    pub(super) fn touch(&self, id: &[u8]) -> Result<(), IndexError> {
        let b = bucket_of(id);
        if !self.touched.borrow().contains(&b) {
            self.index.check_bucket(self.conn, b, self.what)?;
            self.touched.borrow_mut().push(b);
        }
        Ok(())
    }

    pub(super) fn put(&self, s: Stored) -> Result<(), IndexError> {
        self.touch(&s.id)?;
        insert_stored(self.conn, &s).map_err(self.index.err())
    }

    pub(super) fn remove(&self, kind: u8, name: &[u8]) -> Result<(), IndexError> {
        let id = self.keys.name_id(kind, name);
        self.touch(&id)?;
        self.conn
            .execute("DELETE FROM records WHERE id = ?1", [id.as_slice()])
            .map(drop)
            .map_err(self.index.err())
    }

    pub(super) fn upsert_secret(&self, r: &VaultRef, row: &Row) -> Result<(), IndexError> {
        let rec = SecretRecord {
            scope: r.scope().to_string(),
            key: r.key().as_str().to_owned(),
            object_id: row.object_id.as_str().to_owned(),
            len: row.len,
            created_ms: row.created_ms,
            updated_ms: row.updated_ms,
            version: row.version,
            once: row.once,
            expires_ms: row.expires_ms,
            keep: row.keep,
            writer: row.writer.clone(),
            restored_from: row.restored_from,
        };
        self.put(rec.seal(self.keys, r))
    }

    /// Makes `row` the live value of `r` over `current` (see
    /// [`Index::commit_put`]). A secret brought back after a delete keeps
    /// the versions and the keep limit it had.
    fn install(
        &self,
        r: &VaultRef,
        row: &Row,
        current: Option<&Row>,
        live: bool,
        keep_old: bool,
    ) -> Result<(), IndexError> {
        let mut row = row.clone();
        match current {
            Some(c) if live && keep_old => self.keep_version(r, c)?,
            Some(c) if live => self.pend(&c.object_id)?,
            // Expired: it is not there any more; its earlier versions keep
            // their own lifetimes.
            Some(c) => self.pend(&c.object_id)?,
            None => {
                if let Some(t) = self.index.retired_in(r)? {
                    row.keep = row.keep.or(t.keep);
                }
            }
        }
        self.upsert_secret(r, &row)?;
        self.remove(KIND_RETIRED, &ref_name(r))?;
        self.unpend(&row.object_id)?;
        self.prune(r, self.keep_of(r, &row))
    }

    /// How many earlier versions of `r` are kept: its own limit, else the
    /// vault's; none in a session unless the secret says so (sessions are
    /// temporary, and their quotas count live values), and never any of
    /// sealfs's own secrets (a pin or a rotated credential stays rotated).
    fn keep_of(&self, r: &VaultRef, row: &Row) -> usize {
        if r.scope().is_reserved() {
            return 0;
        }
        let default = match r.scope() {
            VaultScope::Session(_) => 0,
            _ => self.keep_default,
        };
        row.keep.unwrap_or(default) as usize
    }

    /// Files the value `row` of `r` as an earlier version (a read-once
    /// value is never kept: it is marked for deletion).
    fn keep_version(&self, r: &VaultRef, row: &Row) -> Result<(), IndexError> {
        if row.once {
            return self.pend(&row.object_id);
        }
        let rec = VersionRecord {
            scope: r.scope().to_string(),
            key: r.key().as_str().to_owned(),
            version: row.version,
            object_id: row.object_id.as_str().to_owned(),
            len: row.len,
            written_ms: row.updated_ms,
            expires_ms: row.expires_ms,
            writer: row.writer.clone(),
            restored_from: row.restored_from,
        };
        self.put(rec.seal(self.keys, r))
    }

    /// Keeps the newest `keep` earlier versions of `r`; the others are
    /// removed and their objects marked for deletion.
    pub(super) fn prune(&self, r: &VaultRef, keep: usize) -> Result<(), IndexError> {
        let versions = self.index.versions_in(r)?;
        let extra = versions.len().saturating_sub(keep);
        for v in &versions[..extra] {
            self.drop_version(r, v)?;
        }
        Ok(())
    }

    /// Removes version `v` of `r` and marks its object for deletion.
    pub(super) fn drop_version(&self, r: &VaultRef, v: &VersionRow) -> Result<(), IndexError> {
        self.remove(KIND_VERSION, &version_name(r, v.version))?;
        self.pend(&v.object_id)
    }

    /// Deletes the live record and remembers its version; its value is
    /// kept, released or purged with the whole history (see [`Retire`]).
    pub(super) fn retire(&self, r: &VaultRef, row: &Row, how: Retire) -> Result<(), IndexError> {
        self.remove(KIND_SECRET, &ref_name(r))?;
        let rec = RetiredRecord {
            scope: r.scope().to_string(),
            key: r.key().as_str().to_owned(),
            version: row.version,
            // A purged name starts again with the default limit.
            keep: if how == Retire::Purge { None } else { row.keep },
        };
        self.put(rec.seal(self.keys, r))?;
        match how {
            Retire::Keep => {
                self.keep_version(r, row)?;
                self.prune(r, self.keep_of(r, row))
            }
            Retire::Release => self.pend(&row.object_id),
            Retire::Purge => {
                self.pend(&row.object_id)?;
                self.prune(r, 0)
            }
        }
    }

    pub(super) fn pend(&self, id: &ObjectId) -> Result<(), IndexError> {
        self.discard.borrow_mut().push(id.clone());
        self.conn
            .execute(
                "INSERT OR IGNORE INTO pending (object_id) VALUES (?1)",
                [id.as_str()],
            )
            .map(drop)
            .map_err(self.index.err())
    }

    pub(super) fn unpend(&self, id: &ObjectId) -> Result<(), IndexError> {
        self.conn
            .execute("DELETE FROM pending WHERE object_id = ?1", [id.as_str()])
            .map(drop)
            .map_err(self.index.err())
    }
}
