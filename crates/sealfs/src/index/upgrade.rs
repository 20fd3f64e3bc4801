//! Converting a format-1 index (names in the clear) to format 2.

use std::sync::Arc;

use rusqlite::params;

use super::{
    bucket_digests, insert_stored, root_of, tampered, write_hints, Index, IndexError,
    RetiredRecord, ScopeRecord, SecretRecord, State, VaultRecord, SCHEMA, SCHEMA_V1,
    SCHEMA_VERSION, VAULT_RECORD_ID,
};
use crate::scope::{VaultRef, VaultScope};

impl Index {
    /// Converts a format-1 index (names in the clear) to format 2 in one
    /// transaction: every secret, retired slot and scope is sealed under
    /// `keys`, the old tables are dropped and the vault record is written.
    /// The caller holds the writer lock and has checked the identity.
    pub(crate) fn migrate_from_v1(&mut self, record: &VaultRecord) -> Result<State, IndexError> {
        let keys = Arc::clone(self.keys.as_ref().expect("keys set before migration"));
        let vault_id = self
            .meta("vault_id")?
            .ok_or_else(|| tampered("vault metadata", "no vault id"))?;
        let path = self.path.clone();
        let v1_version = self.schema_version()?;
        let record = self.write_tx(|tx| {
            if v1_version < SCHEMA_V1 {
                tx.execute_batch(
                    "ALTER TABLE secrets ADD COLUMN once INTEGER NOT NULL DEFAULT 0;
                     CREATE TABLE IF NOT EXISTS scopes (
                         scope TEXT PRIMARY KEY, owner_uid INTEGER, created_ms INTEGER NOT NULL
                     ) WITHOUT ROWID;",
                )?;
            }
            tx.execute_batch(SCHEMA)?;
            let mut records = Vec::new();
            {
                let mut st = tx.prepare(
                    "SELECT scope, key, object_id, len, created_ms, updated_ms, version, once FROM secrets",
                )?;
                let rows = st.query_map([], |r| {
                    Ok(SecretRecord {
                        scope: r.get(0)?,
                        key: r.get(1)?,
                        object_id: r.get(2)?,
                        len: r.get::<_, i64>(3)? as u64,
                        created_ms: r.get(4)?,
                        updated_ms: r.get(5)?,
                        version: r.get::<_, i64>(6)? as u64,
                                                once: r.get(7)?,
                                                expires_ms: None,
                        keep: None,
                        writer: None,
                        restored_from: None,
                    })
                })?;
                for rec in rows {
                    let rec = rec?;
                    let Ok(r) = VaultRef::parse(&format!("{}/{}", rec.scope, rec.key)) else {
                        continue;
                    };
                    records.push(rec.seal(&keys, &r));
                }
                let mut st = tx.prepare("SELECT scope, key, version FROM retired")?;
                let rows = st.query_map([], |r| {
                    Ok(RetiredRecord {
                        scope: r.get(0)?,
                        key: r.get(1)?,
                                                                        version: r.get::<_, i64>(2)? as u64,
                        keep: None,
                    })
                })?;
                for rec in rows {
                    let rec = rec?;
                    let Ok(r) = VaultRef::parse(&format!("{}/{}", rec.scope, rec.key)) else {
                        continue;
                    };
                    records.push(rec.seal(&keys, &r));
                }
                let mut st = tx.prepare("SELECT scope, owner_uid, created_ms FROM scopes")?;
                let rows = st.query_map([], |r| {
                    Ok(ScopeRecord {
                        scope: r.get(0)?,
                        owner_uid: r.get(1)?,
                        created_ms: r.get(2)?,
                        expires_ms: None,
                    })
                })?;
                for rec in rows {
                    let rec = rec?;
                    if rec.scope.parse::<VaultScope>().is_err() {
                        continue;
                    }
                    records.push(rec.seal(&keys));
                }
            }
            for s in &records {
                insert_stored(tx, s)?;
            }
            for b in 0..=255u8 {
                let (computed, _) = bucket_digests(tx, b)?;
                tx.execute(
                    "INSERT OR REPLACE INTO buckets (bucket, digest) VALUES (?1, ?2)",
                    params![b, computed.as_slice()],
                )?;
            }
            tx.execute_batch(
                "DROP TABLE secrets; DROP TABLE retired; DROP TABLE scopes;
                 DELETE FROM meta WHERE name NOT IN ('vault_id');",
            )?;
            let mut record = record.clone();
            record.counter = 1;
            record.root = crate::hex::hex(&root_of(tx)?);
            write_hints(tx, &vault_id, &record)?;
            tx.execute(
                "INSERT INTO vault (one, sealed) VALUES (1, ?1)",
                [keys.seal_record(VAULT_RECORD_ID, &serde_json::to_vec(&record).expect("plain data"))],
            )?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            Ok(record)
        })
        .map_err(|e| match e {
            IndexError::Sqlite { source, .. } => IndexError::Sqlite { path, source },
            other => other,
        })?;
        // The clear tables are dropped (zeroed, with secure_delete); rewrite
        // the file and empty the WAL so no page of them remains. Best
        // effort: a reader of another process can hold the WAL for now, and
        // the next checkpoint overwrites it.
        if let Err(e) = self
            .conn
            .execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")
        {
            tracing::warn!(error = %e, "could not compact the upgraded index yet");
        }
        record.state()
    }

    /// The format-1 fields a migration needs (clear, as that format kept
    /// them): key id, backend, backend reason, creation time.
    pub(crate) fn v1_meta(&self) -> Result<V1Meta, IndexError> {
        Ok(V1Meta {
            backend_reason: self.meta("backend_reason")?,
            created_ms: self.meta("created_ms")?.and_then(|v| v.parse().ok()),
            migration: self
                .meta("migration_target")?
                .or(self.meta("migration_cleanup")?),
        })
    }
}

/// What a format-1 index said about its vault.
pub(crate) struct V1Meta {
    pub backend_reason: Option<String>,
    pub created_ms: Option<i64>,
    /// A backend migration in progress (finish it with the old build first).
    pub migration: Option<String>,
}
