//! The index: which object holds which secret, with its length, times and
//! version. SQLite in WAL mode: many readers alongside one writer across
//! processes, crash-safe commits, and B-tree lookups that stay O(log n) at
//! hundreds of thousands of secrets.
//!
//! Tables (see `docs/format.md`):
//! - `meta`: format, vault id, key id, backend.
//! - `secrets`: one row per live secret, keyed by (scope, key).
//! - `retired`: the last version of deleted slots, so a re-created secret
//!   continues the version sequence and a blob from before the delete can
//!   never be replayed into it.
//! - `pending`: object ids that may exist in the backend without being
//!   referenced (a put or delete in flight); swept under the writer lock.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::backend::ObjectId;
use crate::scope::{SecretKey, VaultRef, VaultScope};

/// The schema this build writes and reads.
pub const SCHEMA_VERSION: i64 = 2;
pub const INDEX_FILE: &str = "index.sqlite3";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    #[error("index {path} has schema version {found}; this build reads version {SCHEMA_VERSION} (upgrade sealfs)")]
    UnsupportedSchema { path: PathBuf, found: i64 },
    #[error("index {path} is not a sealfs index (no `meta` table)")]
    NotAnIndex { path: PathBuf },
    #[error("index entry for {vault_ref} is corrupt: {why}")]
    CorruptRow {
        vault_ref: String,
        why: &'static str,
    },
    #[error("index {path}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

/// One live secret's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub object_id: ObjectId,
    pub len: u64,
    /// Milliseconds since the Unix epoch.
    pub created_ms: i64,
    pub updated_ms: i64,
    pub version: u64,
    /// Read-once: the first successful read consumes it.
    pub once: bool,
}

/// A scope known to the index: registered (mkdir, with an owner) and/or
/// holding secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeRow {
    pub scope: VaultScope,
    pub owner_uid: Option<u32>,
    pub registered: bool,
}

pub struct Index {
    conn: Connection,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS secrets (
    scope      TEXT NOT NULL,
    key        TEXT NOT NULL,
    object_id  TEXT NOT NULL,
    len        INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    once       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS secrets_by_object ON secrets (object_id);
CREATE TABLE IF NOT EXISTS retired (
    scope   TEXT NOT NULL,
    key     TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending (
    object_id TEXT PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS scopes (
    scope      TEXT PRIMARY KEY,
    owner_uid  INTEGER,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Upgrades from each older schema version to the next.
const MIGRATIONS: &[(i64, &str)] = &[(
    1,
    "ALTER TABLE secrets ADD COLUMN once INTEGER NOT NULL DEFAULT 0;
     CREATE TABLE IF NOT EXISTS scopes (
         scope      TEXT PRIMARY KEY,
         owner_uid  INTEGER,
         created_ms INTEGER NOT NULL
     ) WITHOUT ROWID;",
)];

impl Index {
    pub fn path_in(vault_dir: &Path) -> PathBuf {
        vault_dir.join(INDEX_FILE)
    }

    /// Opens the index of an existing vault (the file must exist).
    pub fn open(path: &Path) -> Result<Self, IndexError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| IndexError::Sqlite {
            path: path.to_owned(),
            source,
        })?;
        let index = Index {
            conn,
            path: path.to_owned(),
        };
        index.configure()?;
        Ok(index)
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> IndexError + '_ {
        |source| IndexError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn configure(&self) -> Result<(), IndexError> {
        // Writers are serialised by the vault's lock file; the timeout covers
        // checkpoints and schema creation racing with readers.
        self.conn
            .busy_timeout(Duration::from_secs(10))
            .map_err(self.err())?;
        // WAL: readers never block the writer. FULL: a commit is on disk
        // before the caller is told it succeeded.
        self.conn
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(self.err())?;
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(self.err())?;
        Ok(())
    }

    /// Creates the tables if missing, or upgrades an older schema; idempotent.
    /// Call with the vault's writer lock held.
    pub fn init(&mut self) -> Result<(), IndexError> {
        let path = self.path.clone();
        let err = |source| IndexError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let mut version: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)?;
        if version == 0 {
            tx.execute_batch(SCHEMA).map_err(err)?;
            version = SCHEMA_VERSION;
        }
        for (from, sql) in MIGRATIONS {
            if version == *from {
                tx.execute_batch(sql).map_err(err)?;
                version = from + 1;
            }
        }
        if version != SCHEMA_VERSION {
            return Err(IndexError::UnsupportedSchema {
                path: self.path.clone(),
                found: version,
            });
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .and_then(|()| tx.commit())
            .map_err(err)
    }

    /// The schema version recorded in the file (0 for a new, empty file).
    pub fn schema_version(&self) -> Result<i64, IndexError> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(self.err())
    }

    /// Fails unless this is a sealfs index of a schema this build reads.
    pub fn check_schema(&self) -> Result<(), IndexError> {
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(self.err())?;
        if version == 0 {
            return Err(IndexError::NotAnIndex {
                path: self.path.clone(),
            });
        }
        if version != SCHEMA_VERSION {
            return Err(IndexError::UnsupportedSchema {
                path: self.path.clone(),
                found: version,
            });
        }
        Ok(())
    }

    /// True once a vault has been fully created in this index (its key id,
    /// written last, is present). Fails on an index of another schema.
    pub fn is_initialised(&self) -> Result<bool, IndexError> {
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(self.err())?;
        if version == 0 {
            return Ok(false);
        }
        if version > SCHEMA_VERSION {
            return Err(IndexError::UnsupportedSchema {
                path: self.path.clone(),
                found: version,
            });
        }
        Ok(self.meta("key_id")?.is_some())
    }

    pub fn meta(&self, name: &str) -> Result<Option<String>, IndexError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(self.err())
    }

    /// Sets `name` unless it is already set; returns the value in force.
    pub fn meta_init(&self, name: &str, value: &str) -> Result<String, IndexError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO meta (name, value) VALUES (?1, ?2)",
                [name, value],
            )
            .map_err(self.err())?;
        Ok(self.meta(name)?.unwrap_or_default())
    }

    pub fn row(&self, r: &VaultRef) -> Result<Option<Row>, IndexError> {
        let scope = r.scope().to_string();
        let raw = self
            .conn
            .prepare_cached(
                "SELECT object_id, len, created_ms, updated_ms, version, once
                 FROM secrets WHERE scope = ?1 AND key = ?2",
            )
            .and_then(|mut st| {
                st.query_row(params![scope, r.key().as_str()], raw_row)
                    .optional()
            })
            .map_err(self.err())?;
        raw.map(|raw| to_row(&r.to_string(), raw)).transpose()
    }

    /// Live secrets, ordered by scope then key; all scopes when `scope` is None.
    /// Calls `f` with each key of `scope` in order, reading only the key
    /// column: a listing of 100,000 keys holds one key at a time, not rows.
    pub fn for_each_key(
        &self,
        scope: &VaultScope,
        mut f: impl FnMut(SecretKey),
    ) -> Result<(), IndexError> {
        let scope_text = scope.to_string();
        let mut st = self
            .conn
            .prepare_cached("SELECT key FROM secrets WHERE scope = ?1 ORDER BY key")
            .map_err(self.err())?;
        let mut rows = st.query([&scope_text]).map_err(self.err())?;
        while let Some(row) = rows.next().map_err(self.err())? {
            let text = row
                .get_ref(0)
                .and_then(|v| Ok(v.as_str()?))
                .map_err(self.err())?;
            let key = SecretKey::new(text).map_err(|_| IndexError::CorruptRow {
                vault_ref: format!("{scope_text}/{}", text.escape_debug()),
                why: "invalid key",
            })?;
            f(key);
        }
        Ok(())
    }

    pub fn list(&self, scope: Option<&VaultScope>) -> Result<Vec<(VaultRef, Row)>, IndexError> {
        let sql_all = "SELECT object_id, len, created_ms, updated_ms, version, once, scope, key
                       FROM secrets ORDER BY scope, key";
        let sql_one = "SELECT object_id, len, created_ms, updated_ms, version, once, scope, key
                       FROM secrets WHERE scope = ?1 ORDER BY key";
        let scope_text = scope.map(|s| s.to_string());
        let mut st = self
            .conn
            .prepare_cached(if scope.is_some() { sql_one } else { sql_all })
            .map_err(self.err())?;
        let map = |r: &rusqlite::Row<'_>| -> rusqlite::Result<(RawRow, String, String)> {
            Ok((raw_row(r)?, r.get(6)?, r.get(7)?))
        };
        let rows = match &scope_text {
            Some(s) => st.query_map([s], map),
            None => st.query_map([], map),
        }
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(self.err())?;
        rows.into_iter()
            .map(|(raw, scope, key)| {
                let text = format!("{scope}/{key}");
                let r = VaultRef::parse(&text).map_err(|_| IndexError::CorruptRow {
                    vault_ref: text.escape_debug().to_string(),
                    why: "invalid scope or key",
                })?;
                Ok((r, to_row(&text, raw)?))
            })
            .collect()
    }

    /// The version a new write to `r` gets: one past the live or retired one.
    pub fn next_version(&self, r: &VaultRef) -> Result<u64, IndexError> {
        if let Some(row) = self.row(r)? {
            return Ok(row.version + 1);
        }
        let retired: Option<i64> = self
            .conn
            .query_row(
                "SELECT version FROM retired WHERE scope = ?1 AND key = ?2",
                params![r.scope().to_string(), r.key().as_str()],
                |row| row.get(0),
            )
            .optional()
            .map_err(self.err())?;
        Ok(retired.map_or(1, |v| v as u64 + 1))
    }

    pub fn add_pending(&self, id: &ObjectId) -> Result<(), IndexError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO pending (object_id) VALUES (?1)",
                [id.as_str()],
            )
            .map(drop)
            .map_err(self.err())
    }

    pub fn remove_pending(&self, id: &ObjectId) -> Result<(), IndexError> {
        self.conn
            .execute("DELETE FROM pending WHERE object_id = ?1", [id.as_str()])
            .map(drop)
            .map_err(self.err())
    }

    /// Pending ids that no live secret references: safe to delete from the
    /// backend (with the writer lock held).
    pub fn orphans(&self) -> Result<Vec<ObjectId>, IndexError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT object_id FROM pending
                 WHERE object_id NOT IN (SELECT object_id FROM secrets)",
            )
            .map_err(self.err())?;
        let ids = st
            .query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(self.err())?;
        Ok(ids.iter().filter_map(|s| ObjectId::parse(s)).collect())
    }

    /// Removes pending ids that a live secret references (never deletable).
    pub fn forget_referenced_pending(&self) -> Result<(), IndexError> {
        self.conn
            .execute(
                "DELETE FROM pending WHERE object_id IN (SELECT object_id FROM secrets)",
                [],
            )
            .map(drop)
            .map_err(self.err())
    }

    pub fn has_pending(&self) -> Result<bool, IndexError> {
        self.conn
            .query_row("SELECT EXISTS (SELECT 1 FROM pending)", [], |r| r.get(0))
            .map_err(self.err())
    }

    fn write_tx<T>(
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

    /// Commits a new value for `r` in one transaction: the row now points at
    /// `row.object_id`, which leaves `pending`, and the replaced object (if
    /// any) enters `pending` for deletion. This is the commit point of a put.
    pub fn commit_put(
        &mut self,
        r: &VaultRef,
        row: &Row,
        replaced: Option<&ObjectId>,
    ) -> Result<(), IndexError> {
        self.write_tx(|tx| {
            upsert_row(tx, r, row)?;
            unpend(tx, &row.object_id)?;
            replaced.map_or(Ok(()), |old| pend(tx, old))
        })
    }

    /// Removes `r` in one transaction, remembering its version and marking its
    /// object for deletion. This is the commit point of a delete.
    pub fn commit_delete(&mut self, r: &VaultRef, row: &Row) -> Result<(), IndexError> {
        self.write_tx(|tx| remove_row(tx, r, row))
    }

    /// Moves `from` to `to` in one transaction: `from` is removed as by a
    /// delete, `to` points at its freshly sealed object, and a value `to`
    /// held before is marked for deletion.
    pub fn commit_rename(
        &mut self,
        from: &VaultRef,
        from_row: &Row,
        to: &VaultRef,
        to_row: &Row,
        replaced: Option<&ObjectId>,
    ) -> Result<(), IndexError> {
        self.write_tx(|tx| {
            remove_row(tx, from, from_row)?;
            upsert_row(tx, to, to_row)?;
            unpend(tx, &to_row.object_id)?;
            replaced.map_or(Ok(()), |old| pend(tx, old))
        })
    }

    /// Sets (`Some`) or removes (`None`) several meta values in one
    /// transaction.
    pub fn set_meta(&mut self, values: &[(&str, Option<&str>)]) -> Result<(), IndexError> {
        self.write_tx(|tx| {
            for (name, value) in values {
                match value {
                    Some(v) => tx.execute(
                        "INSERT INTO meta (name, value) VALUES (?1, ?2)
                         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                        [name, v],
                    )?,
                    None => tx.execute("DELETE FROM meta WHERE name = ?1", [name])?,
                };
            }
            Ok(())
        })
    }

    /// The object id of every live secret.
    pub fn object_ids(&self) -> Result<Vec<ObjectId>, IndexError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT object_id FROM secrets ORDER BY object_id")
            .map_err(self.err())?;
        let ids = st
            .query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(self.err())?;
        ids.iter()
            .map(|s| {
                ObjectId::parse(s).ok_or_else(|| IndexError::CorruptRow {
                    vault_ref: s.escape_debug().to_string(),
                    why: "invalid object id",
                })
            })
            .collect()
    }

    /// Registers `scope` (an empty directory in the mount) with an owner;
    /// `false` if it was registered already.
    pub fn register_scope(
        &mut self,
        scope: &VaultScope,
        owner_uid: Option<u32>,
        now_ms: i64,
    ) -> Result<bool, IndexError> {
        self.write_tx(|tx| {
            tx.execute(
                "INSERT OR IGNORE INTO scopes (scope, owner_uid, created_ms) VALUES (?1, ?2, ?3)",
                params![scope.to_string(), owner_uid, now_ms],
            )
            .map(|n| n == 1)
        })
    }

    /// Forgets a registered scope; `false` if it was not registered.
    pub fn unregister_scope(&mut self, scope: &VaultScope) -> Result<bool, IndexError> {
        self.write_tx(|tx| {
            tx.execute("DELETE FROM scopes WHERE scope = ?1", [scope.to_string()])
                .map(|n| n == 1)
        })
    }

    /// Whether any secret lives in `scope`.
    pub fn scope_has_secrets(&self, scope: &VaultScope) -> Result<bool, IndexError> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM secrets WHERE scope = ?1)",
                [scope.to_string()],
                |r| r.get(0),
            )
            .map_err(self.err())
    }

    /// The registration of `scope`, if any, and whether it holds secrets.
    pub fn scope_row(&self, scope: &VaultScope) -> Result<Option<ScopeRow>, IndexError> {
        let owner: Option<Option<u32>> = self
            .conn
            .query_row(
                "SELECT owner_uid FROM scopes WHERE scope = ?1",
                [scope.to_string()],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())?;
        let registered = owner.is_some();
        if registered || self.scope_has_secrets(scope)? {
            Ok(Some(ScopeRow {
                scope: scope.clone(),
                owner_uid: owner.flatten(),
                registered,
            }))
        } else {
            Ok(None)
        }
    }

    /// Every scope that is registered or holds secrets, sorted.
    pub fn scopes(&self) -> Result<Vec<ScopeRow>, IndexError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT scope, MAX(owner_uid), MAX(registered) FROM (
                     SELECT scope, owner_uid, 1 AS registered FROM scopes
                     UNION ALL
                     SELECT DISTINCT scope, NULL, 0 FROM secrets
                 ) GROUP BY scope ORDER BY scope",
            )
            .map_err(self.err())?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<u32>>(1)?,
                    r.get::<_, bool>(2)?,
                ))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(self.err())?;
        rows.into_iter()
            .map(|(text, owner_uid, registered)| {
                let scope = text.parse().map_err(|_| IndexError::CorruptRow {
                    vault_ref: text.escape_debug().to_string(),
                    why: "invalid scope",
                })?;
                Ok(ScopeRow {
                    scope,
                    owner_uid,
                    registered,
                })
            })
            .collect()
    }
}

fn upsert_row(tx: &rusqlite::Transaction<'_>, r: &VaultRef, row: &Row) -> rusqlite::Result<()> {
    let scope = r.scope().to_string();
    tx.execute(
        "INSERT INTO secrets (scope, key, object_id, len, created_ms, updated_ms, version, once)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (scope, key) DO UPDATE SET
            object_id = excluded.object_id, len = excluded.len,
            updated_ms = excluded.updated_ms, version = excluded.version,
            once = excluded.once",
        params![
            scope,
            r.key().as_str(),
            row.object_id.as_str(),
            row.len as i64,
            row.created_ms,
            row.updated_ms,
            row.version as i64,
            row.once
        ],
    )?;
    tx.execute(
        "DELETE FROM retired WHERE scope = ?1 AND key = ?2",
        params![scope, r.key().as_str()],
    )?;
    Ok(())
}

/// Deletes the row, remembers its version, and marks its object for deletion.
fn remove_row(tx: &rusqlite::Transaction<'_>, r: &VaultRef, row: &Row) -> rusqlite::Result<()> {
    let scope = r.scope().to_string();
    tx.execute(
        "DELETE FROM secrets WHERE scope = ?1 AND key = ?2",
        params![scope, r.key().as_str()],
    )?;
    tx.execute(
        "INSERT INTO retired (scope, key, version) VALUES (?1, ?2, ?3)
         ON CONFLICT (scope, key) DO UPDATE SET version = excluded.version",
        params![scope, r.key().as_str(), row.version as i64],
    )?;
    pend(tx, &row.object_id)
}

fn pend(tx: &rusqlite::Transaction<'_>, id: &ObjectId) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO pending (object_id) VALUES (?1)",
        [id.as_str()],
    )
    .map(drop)
}

fn unpend(tx: &rusqlite::Transaction<'_>, id: &ObjectId) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM pending WHERE object_id = ?1", [id.as_str()])
        .map(drop)
}

type RawRow = (String, i64, i64, i64, i64, bool);

fn raw_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn to_row(
    vault_ref: &str,
    (object_id, len, created_ms, updated_ms, version, once): RawRow,
) -> Result<Row, IndexError> {
    let corrupt = |why| IndexError::CorruptRow {
        vault_ref: vault_ref.escape_debug().to_string(),
        why,
    };
    Ok(Row {
        object_id: ObjectId::parse(&object_id).ok_or_else(|| corrupt("invalid object id"))?,
        len: u64::try_from(len).map_err(|_| corrupt("negative length"))?,
        created_ms,
        updated_ms,
        version: u64::try_from(version)
            .ok()
            .filter(|v| *v > 0)
            .ok_or_else(|| corrupt("invalid version"))?,
        once,
    })
}
