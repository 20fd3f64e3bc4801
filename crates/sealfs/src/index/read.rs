//! Reading the index: every read checks the bucket of what it reads.

use rusqlite::{params, Connection, OptionalExtension};

use super::{
    bucket_digests, bucket_of, ref_name, stored_row, tampered, Index, IndexError, Row, ScopeRecord,
    ScopeRow, SecretRecord, State, Stored, WholeChecked, KIND_SCOPE, KIND_SCOPE_MEMBERS,
    KIND_SECRET,
};
use crate::backend::ObjectId;
use crate::crypto::KeyRing;
use crate::scope::{SecretKey, VaultRef, VaultScope};

/// The clear member id (`KIND_SCOPE_MEMBERS`) of the last scope asked
/// for: the records of a listing share a few scopes, and each id is an
/// HMAC.
#[derive(Default)]
pub(super) struct ScopeIds(Option<(String, [u8; 32])>);

impl ScopeIds {
    fn of(&mut self, keys: &KeyRing, scope: &str) -> [u8; 32] {
        match &self.0 {
            Some((name, id)) if name == scope => *id,
            _ => {
                let id = keys.name_id(KIND_SCOPE_MEMBERS, scope.as_bytes());
                self.0 = Some((scope.to_owned(), id));
                id
            }
        }
    }
}

impl Index {
    /// Runs `f` in one read transaction, so everything it reads is one
    /// snapshot.
    pub(super) fn read<T>(
        &self,
        f: impl FnOnce() -> Result<T, IndexError>,
    ) -> Result<T, IndexError> {
        let tx = self.conn.unchecked_transaction().map_err(self.err())?;
        let out = f()?;
        tx.finish().map_err(self.err())?;
        Ok(out)
    }

    pub(super) fn stored(
        &self,
        conn: &Connection,
        id: &[u8],
    ) -> Result<Option<Stored>, IndexError> {
        conn.prepare_cached(
            "SELECT id, kind, scope_id, object_id, sealed FROM records WHERE id = ?1",
        )
        .and_then(|mut st| st.query_row([id], stored_row).optional())
        .map_err(self.err())
    }

    /// Recomputes bucket `b` from its records and compares it with the
    /// stored digest (which the root covers).
    pub(super) fn check_bucket(
        &self,
        conn: &Connection,
        b: u8,
        what: &str,
    ) -> Result<(), IndexError> {
        let (computed, stored) = bucket_digests(conn, b).map_err(self.err())?;
        if Some(computed) != stored {
            return Err(tampered(
                what,
                "index records were added, removed or changed",
            ));
        }
        Ok(())
    }

    /// The whole index against its vault record (before a sweep deletes
    /// what `pending` names, and for `doctor`).
    pub(crate) fn verify_all(&self) -> Result<(), IndexError> {
        self.read(|| {
            self.vault_record_in(&self.conn)?;
            self.check_all_buckets(&self.conn)
        })
    }

    /// Every bucket, for listings: a record hidden from a listing is found.
    pub(super) fn check_all_buckets(&self, conn: &Connection) -> Result<(), IndexError> {
        // A row whose id is not a 32-byte blob sorts outside every bucket's
        // range: it would be listed, yet covered by no digest.
        let strays: i64 = conn
            .query_row(
                "SELECT count(*) FROM records WHERE typeof(id) != 'blob' OR length(id) != 32",
                [],
                |r| r.get(0),
            )
            .map_err(self.err())?;
        if strays != 0 {
            return Err(tampered(
                "the index",
                "index records were added, removed or changed",
            ));
        }
        for b in 0..=255u8 {
            self.check_bucket(conn, b, "the index")?;
        }
        Ok(())
    }

    pub(super) fn open_secret(
        &self,
        what: &str,
        s: &Stored,
        scope_ids: &mut ScopeIds,
    ) -> Result<(VaultRef, Row), IndexError> {
        let plain = self
            .keys()
            .open_record(&s.id, &s.sealed)
            .map_err(|_| tampered(what, "a record does not authenticate"))?;
        let rec: SecretRecord =
            serde_json::from_slice(&plain).map_err(|_| tampered(what, "a record is malformed"))?;
        let r = VaultRef::parse(&format!("{}/{}", rec.scope, rec.key))
            .map_err(|_| tampered(what, "a record names an invalid ref"))?;
        let keys = self.keys();
        if s.kind != KIND_SECRET
            || keys.name_id(KIND_SECRET, &ref_name(&r)).as_slice() != s.id.as_slice()
            || s.scope_id.as_deref() != Some(scope_ids.of(keys, &rec.scope).as_slice())
            || s.object_id.as_deref() != Some(rec.object_id.as_str())
        {
            return Err(tampered(
                r.to_string(),
                "clear columns differ from the sealed record",
            ));
        }
        let object_id = ObjectId::parse(&rec.object_id)
            .ok_or_else(|| tampered(r.to_string(), "invalid object id"))?;
        if rec.version == 0 {
            return Err(tampered(r.to_string(), "invalid version"));
        }
        let row = Row {
            object_id,
            len: rec.len,
            created_ms: rec.created_ms,
            updated_ms: rec.updated_ms,
            version: rec.version,
            once: rec.once,
            expires_ms: rec.expires_ms,
            keep: rec.keep,
            writer: rec.writer,
            restored_from: rec.restored_from,
        };
        Ok((r, row))
    }

    pub(super) fn secret_id(&self, r: &VaultRef) -> [u8; 32] {
        self.keys().name_id(KIND_SECRET, &ref_name(r))
    }

    /// The live row of `r`, with the index state it was read at (bucket,
    /// root and vault record checked in the same snapshot).
    pub(crate) fn row(&self, r: &VaultRef) -> Result<(Option<Row>, State), IndexError> {
        self.read(|| {
            let record = self.vault_record_in(&self.conn)?;
            Ok((self.row_in(r)?, record.state()?))
        })
    }

    /// The live row of `r` (inside a transaction the caller holds; its
    /// bucket checked).
    pub(super) fn row_in(&self, r: &VaultRef) -> Result<Option<Row>, IndexError> {
        let id = self.secret_id(r);
        self.check_bucket(&self.conn, bucket_of(&id), &r.to_string())?;
        let Some(s) = self.stored(&self.conn, &id)? else {
            return Ok(None);
        };
        let (found, row) = self.open_secret(&r.to_string(), &s, &mut ScopeIds::default())?;
        if &found != r {
            return Err(tampered(
                r.to_string(),
                "a record is filed under another name",
            ));
        }
        Ok(Some(row))
    }

    /// Every live secret (of `scope`, or all), sorted by scope then key,
    /// with the state read; every bucket is checked.
    pub(crate) fn list(
        &self,
        scope: Option<&VaultScope>,
    ) -> Result<(Vec<(VaultRef, Row)>, State), IndexError> {
        self.read(|| self.list_in(scope))
    }

    /// Inside a read transaction the caller holds: checks every bucket
    /// against its digest, unless this connection already did at this
    /// state and nothing has changed since: neither SQLite's
    /// `data_version` (another connection's commit) nor the stamps of the
    /// index file and its log (a write behind SQLite's back, which
    /// `data_version`, read from the shared-memory file a vault-directory
    /// writer can rewrite, may not show). The stamps are taken before the
    /// check. Without stamps (not Unix) the check is never skipped.
    pub(super) fn checked_whole(&self, state: State) -> Result<(), IndexError> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(self.err())?;
        let seen = self.file_stamps().map(|files| WholeChecked {
            version,
            state,
            files,
        });
        if seen.is_none() || self.all_checked.get() != seen {
            self.check_all_buckets(&self.conn)?;
            self.all_checked.set(seen);
        }
        Ok(())
    }

    #[cfg(unix)]
    fn file_stamps(&self) -> Option<[Option<crate::fsutil::FileStamp>; 2]> {
        let wal = super::wal_path(&self.path);
        Some([
            crate::fsutil::stamp_of_path(&self.path).ok()?,
            crate::fsutil::stamp_of_path(&wal).ok()?,
        ])
    }

    #[cfg(not(unix))]
    fn file_stamps(&self) -> Option<[Option<()>; 2]> {
        None
    }

    /// Whether `scope` holds any secret: counted, once every record is
    /// known to be authentic (a forged or hidden row fails the whole-index
    /// check), so no record needs opening.
    pub(super) fn has_secrets_in(&self, scope: &VaultScope) -> Result<(bool, State), IndexError> {
        let record = self.vault_record_in(&self.conn)?;
        let state = record.state()?;
        self.checked_whole(state)?;
        let sid = self
            .keys()
            .name_id(KIND_SCOPE_MEMBERS, scope.to_string().as_bytes());
        let n: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM records WHERE scope_id = ?1 AND kind = ?2",
                params![sid.as_slice(), KIND_SECRET],
                |r| r.get(0),
            )
            .map_err(self.err())?;
        Ok((n > 0, state))
    }

    pub(super) fn list_in(
        &self,
        scope: Option<&VaultScope>,
    ) -> Result<(Vec<(VaultRef, Row)>, State), IndexError> {
        let mut out = Vec::new();
        let state = self.each_secret_in(scope, |r, row| out.push((r, row)))?;
        out.sort_by_cached_key(|(r, _)| (r.scope().to_string(), r.key().as_str().to_owned()));
        Ok((out, state))
    }

    /// The keys of `scope`, sorted, with the state read: the checks of
    /// [`Index::list`], without keeping each secret's metadata (a
    /// directory listing of a big scope).
    /// Secrets expired at `now_ms` are left out; the second value is when
    /// the soonest of the others expires.
    pub(crate) fn keys_of(
        &self,
        scope: &VaultScope,
        now_ms: i64,
    ) -> Result<(Vec<SecretKey>, Option<i64>, State), IndexError> {
        self.read(|| {
            let mut out = Vec::new();
            let mut soonest: Option<i64> = None;
            let state = self.each_secret_in(Some(scope), |r, row| {
                if !row.expired(now_ms) {
                    if let Some(t) = row.expires_ms {
                        soonest = Some(soonest.map_or(t, |s| s.min(t)));
                    }
                    out.push(r.into_key());
                }
            })?;
            out.sort_unstable();
            Ok((out, soonest, state))
        })
    }

    /// Opens and checks every live secret (of `scope`, or all), once every
    /// bucket is known to match its digest, and hands each to `f`.
    fn each_secret_in(
        &self,
        scope: Option<&VaultScope>,
        mut f: impl FnMut(VaultRef, Row),
    ) -> Result<State, IndexError> {
        let record = self.vault_record_in(&self.conn)?;
        self.checked_whole(record.state()?)?;
        let mut scope_ids = ScopeIds::default();
        let each = |s: Stored| -> Result<(), IndexError> {
            let (r, row) = self.open_secret("the index", &s, &mut scope_ids)?;
            if scope.is_some_and(|sc| r.scope() != sc) {
                return Err(tampered(
                    r.to_string(),
                    "a record is listed under another scope",
                ));
            }
            f(r, row);
            Ok(())
        };
        match scope {
            Some(sc) => {
                let sid = self
                    .keys()
                    .name_id(KIND_SCOPE_MEMBERS, sc.to_string().as_bytes());
                self.for_each_in_group(&sid, KIND_SECRET, each)?;
            }
            None => self.for_each_of_kind(KIND_SECRET, each)?,
        }
        record.state()
    }

    /// Hands each stored record of `kind` to `f`, stopping at the first
    /// error.
    pub(super) fn for_each_of_kind(
        &self,
        kind: u8,
        mut f: impl FnMut(Stored) -> Result<(), IndexError>,
    ) -> Result<(), IndexError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT id, kind, scope_id, object_id, sealed FROM records WHERE kind = ?1",
            )
            .map_err(self.err())?;
        let rows = st.query_map([kind], stored_row).map_err(self.err())?;
        for s in rows {
            f(s.map_err(self.err())?)?;
        }
        Ok(())
    }

    /// Hands each stored record of `kind` filed under the clear group id
    /// `group` (a scope's members, a secret's versions) to `f`, stopping
    /// at the first error.
    pub(super) fn for_each_in_group(
        &self,
        group: &[u8],
        kind: u8,
        mut f: impl FnMut(Stored) -> Result<(), IndexError>,
    ) -> Result<(), IndexError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT id, kind, scope_id, object_id, sealed FROM records
                 WHERE scope_id = ?1 AND kind = ?2",
            )
            .map_err(self.err())?;
        let rows = st
            .query_map(params![group, kind], stored_row)
            .map_err(self.err())?;
        for s in rows {
            f(s.map_err(self.err())?)?;
        }
        Ok(())
    }

    /// The registration record of `scope` (inside a read or write
    /// transaction the caller holds).
    pub(super) fn scope_record_in(
        &self,
        scope: &VaultScope,
    ) -> Result<Option<ScopeRecord>, IndexError> {
        let name = scope.to_string();
        let id = self.keys().name_id(KIND_SCOPE, name.as_bytes());
        self.check_bucket(&self.conn, bucket_of(&id), &name)?;
        let Some(s) = self.stored(&self.conn, &id)? else {
            return Ok(None);
        };
        self.open_scope(&name, &s).map(Some)
    }

    pub(super) fn open_scope(&self, what: &str, s: &Stored) -> Result<ScopeRecord, IndexError> {
        let plain = self
            .keys()
            .open_record(&s.id, &s.sealed)
            .map_err(|_| tampered(what, "a scope record does not authenticate"))?;
        let rec: ScopeRecord = serde_json::from_slice(&plain)
            .map_err(|_| tampered(what, "a scope record is malformed"))?;
        if s.kind != KIND_SCOPE
            || self
                .keys()
                .name_id(KIND_SCOPE, rec.scope.as_bytes())
                .as_slice()
                != s.id.as_slice()
        {
            return Err(tampered(what, "a scope record is filed under another name"));
        }
        Ok(rec)
    }

    /// Whether any secret lives in `scope`.
    pub(crate) fn scope_has_secrets(&self, scope: &VaultScope) -> Result<bool, IndexError> {
        Ok(!self.list(Some(scope))?.0.is_empty())
    }

    /// The registration of `scope`, if any, and whether it holds secrets,
    /// read in one snapshot, with the state read.
    pub(crate) fn scope_row(
        &self,
        scope: &VaultScope,
    ) -> Result<(Option<ScopeRow>, State), IndexError> {
        self.read(|| {
            let rec = self.scope_record_in(scope)?;
            let (has_secrets, state) = self.has_secrets_in(scope)?;
            let registered = rec.is_some();
            let row = (registered || has_secrets).then(|| ScopeRow {
                scope: scope.clone(),
                owner_uid: rec.as_ref().and_then(|r| r.owner_uid),
                registered,
                expires_ms: rec.as_ref().and_then(|r| r.expires_ms),
            });
            Ok((row, state))
        })
    }

    /// Every scope that is registered or holds secrets, sorted, read in
    /// one snapshot, with the state read.
    pub(crate) fn scopes(&self) -> Result<(Vec<ScopeRow>, State), IndexError> {
        self.read(|| self.scopes_in())
    }

    pub(super) fn scopes_in(&self) -> Result<(Vec<ScopeRow>, State), IndexError> {
        let (secrets, state) = self.list_in(None)?;
        let mut registered: Vec<ScopeRecord> = Vec::new();
        self.for_each_of_kind(KIND_SCOPE, |s| {
            registered.push(self.open_scope("the index", &s)?);
            Ok(())
        })?;
        let mut out: std::collections::BTreeMap<String, ScopeRow> = Default::default();
        for rec in registered {
            let scope: VaultScope = rec
                .scope
                .parse()
                .map_err(|_| tampered("the index", "a scope record names an invalid scope"))?;
            out.insert(
                rec.scope.clone(),
                ScopeRow {
                    scope,
                    owner_uid: rec.owner_uid,
                    registered: true,
                    expires_ms: rec.expires_ms,
                },
            );
        }
        for (r, _) in secrets {
            out.entry(r.scope().to_string())
                .or_insert_with(|| ScopeRow {
                    scope: r.scope().clone(),
                    owner_uid: None,
                    registered: false,
                    expires_ms: None,
                });
        }
        Ok((out.into_values().collect(), state))
    }

    /// The object id of every live secret and kept version.
    pub(crate) fn object_ids(&self) -> Result<Vec<ObjectId>, IndexError> {
        let (rows, _) = self.list(None)?;
        let mut ids: Vec<ObjectId> = rows.into_iter().map(|(_, row)| row.object_id).collect();
        ids.extend(
            self.all_versions(None)?
                .0
                .into_iter()
                .map(|(_, v)| v.object_id),
        );
        ids.sort();
        Ok(ids)
    }
}
