//! The index: which object holds which secret, with its length, times and
//! version, kept so that a copy of the vault directory reveals no name and
//! an edit made outside sealfs is an integrity error (format 2,
//! `docs/format.md`).
//!
//! SQLite in WAL mode: many readers alongside one writer across processes,
//! crash-safe commits, B-tree lookups.
//!
//! - `meta`: clear hints only: format, vault id (the key-derivation salt),
//!   backend and key id. Each is checked against the sealed vault record.
//! - `vault`: the vault record, sealed: format, key id, backend, migration
//!   state, and the commit counter and root digest of every record.
//! - `records`: one row per secret, retired slot or registered scope,
//!   looked up by an HMAC of kind and name (`KeyRing::name_id`) and sealed
//!   (names, object id, version, read-once flag, owner, times) with that id
//!   as additional data. Clear columns (kind, a scope id, the object id)
//!   serve queries and are checked against the sealed copy.
//! - `buckets`: 256 digests, one per first byte of the record id, each over
//!   the records of its bucket; the root digest over all of them is in the
//!   vault record. A read checks the bucket of what it reads (and a listing
//!   checks them all), so a record deleted, restored from an older copy or
//!   edited is found. The vault checks the counter and root against the
//!   anchor kept with the identity (`anchor.rs`).
//! - `pending`: object ids that may exist in the backend without being
//!   referenced (a put or delete in flight); swept under the writer lock.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::backend::ObjectId;
use crate::crypto::KeyRing;
use crate::scope::{VaultRef, VaultScope};

/// The schema this build writes and reads (vault format 2).
pub const SCHEMA_VERSION: i64 = 3;
/// The last schema of vault format 1 (names in the clear), migrated on open.
pub const SCHEMA_V1: i64 = 2;
pub const INDEX_FILE: &str = "index.sqlite3";
/// The vault format this build writes (the clear `meta.format`).
pub const FORMAT: &str = "2";

const KIND_SECRET: u8 = 1;
const KIND_RETIRED: u8 = 2;
const KIND_SCOPE: u8 = 3;
/// Domain of the clear scope id that lists a scope's secrets.
const KIND_SCOPE_MEMBERS: u8 = 4;
/// The additional data of the sealed vault record.
const VAULT_RECORD_ID: &[u8] = b"\0vault record";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    #[error("index {path} has schema version {found}; this build reads version {SCHEMA_VERSION} (upgrade sealfs)")]
    UnsupportedSchema { path: PathBuf, found: i64 },
    #[error("index {path} is not a sealfs index (no `meta` table)")]
    NotAnIndex { path: PathBuf },
    /// A record or the vault record does not authenticate, or does not
    /// match the digests: changed outside sealfs.
    #[error("integrity check failed for {what}: the index was changed outside sealfs ({why})")]
    Tampered { what: String, why: &'static str },
    #[error("index {path}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

impl IndexError {
    /// This error's [`ErrorKind`](crate::ErrorKind).
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            IndexError::UnsupportedSchema { .. } => crate::ErrorKind::Unsupported,
            IndexError::NotAnIndex { .. } | IndexError::Tampered { .. } => {
                crate::ErrorKind::Integrity
            }
            IndexError::Sqlite { .. } => crate::ErrorKind::Other,
        }
    }
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

/// The commit counter and root digest of the index: what the anchor keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    pub counter: u64,
    pub root: [u8; 32],
}

/// The sealed vault-wide fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultRecord {
    pub format: String,
    pub key_id: String,
    pub backend: String,
    pub backend_reason: String,
    pub created_ms: i64,
    pub counter: u64,
    /// Hex of the root digest.
    pub root: String,
    pub migration_target: Option<String>,
    pub migration_cleanup: Option<String>,
}

impl VaultRecord {
    pub fn state(&self) -> Result<State, IndexError> {
        let root = crate::hex::unhex(&self.root)
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| tampered("vault metadata", "root digest"))?;
        Ok(State {
            counter: self.counter,
            root,
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretRecord {
    scope: String,
    key: String,
    object_id: String,
    len: u64,
    created_ms: i64,
    updated_ms: i64,
    version: u64,
    once: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetiredRecord {
    scope: String,
    key: String,
    version: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeRecord {
    scope: String,
    owner_uid: Option<u32>,
    created_ms: i64,
}

/// A record sealed under its lookup id, with the clear columns its kind
/// has: the one place where records are built (writes and the upgrade).
fn seal(
    keys: &KeyRing,
    kind: u8,
    name: &[u8],
    scope: Option<&str>,
    object_id: Option<&str>,
    rec: &impl Serialize,
) -> Stored {
    let id = keys.name_id(kind, name);
    Stored {
        id: id.to_vec(),
        kind,
        scope_id: scope.map(|sc| keys.name_id(KIND_SCOPE_MEMBERS, sc.as_bytes()).to_vec()),
        object_id: object_id.map(str::to_owned),
        sealed: keys.seal_record(&id, &serde_json::to_vec(rec).expect("plain data")),
    }
}

impl SecretRecord {
    fn seal(&self, keys: &KeyRing, r: &VaultRef) -> Stored {
        seal(
            keys,
            KIND_SECRET,
            &ref_name(r),
            Some(&self.scope),
            Some(&self.object_id),
            self,
        )
    }
}

impl RetiredRecord {
    fn seal(&self, keys: &KeyRing, r: &VaultRef) -> Stored {
        seal(keys, KIND_RETIRED, &ref_name(r), None, None, self)
    }
}

impl ScopeRecord {
    fn seal(&self, keys: &KeyRing) -> Stored {
        seal(keys, KIND_SCOPE, self.scope.as_bytes(), None, None, self)
    }
}

/// One row of `records` as stored.
struct Stored {
    id: Vec<u8>,
    kind: u8,
    scope_id: Option<Vec<u8>>,
    object_id: Option<String>,
    sealed: Vec<u8>,
}

impl Stored {
    /// What the bucket digest covers: every column.
    fn leaf(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"sealfs leaf v2");
        for part in [
            self.id.as_slice(),
            &[self.kind],
            self.scope_id.as_deref().unwrap_or(b""),
            self.object_id.as_deref().unwrap_or("").as_bytes(),
            self.sealed.as_slice(),
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.finalize().into()
    }
}

pub struct Index {
    conn: Connection,
    path: PathBuf,
    keys: Option<Arc<KeyRing>>,
    /// The last whole-index check that passed: SQLite's `data_version`
    /// for this connection and the state read. While neither changed, the
    /// database file did not change under this connection (any other
    /// connection's commit, or an edit with the sqlite3 tool, changes
    /// `data_version`), so a listing need not check all 256 buckets again.
    all_checked: std::cell::Cell<Option<(i64, State)>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS vault (
    one    INTEGER PRIMARY KEY CHECK (one = 1),
    sealed BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    id        BLOB PRIMARY KEY,
    kind      INTEGER NOT NULL,
    scope_id  BLOB,
    object_id TEXT,
    sealed    BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_by_scope ON records (scope_id) WHERE scope_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS records_by_object ON records (object_id) WHERE object_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS buckets (
    bucket INTEGER PRIMARY KEY,
    digest BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS pending (
    object_id TEXT PRIMARY KEY
) WITHOUT ROWID;
";

fn tampered(what: impl Into<String>, why: &'static str) -> IndexError {
    IndexError::Tampered {
        what: what.into(),
        why,
    }
}

/// `len(scope) scope len(key) key`: no two refs give the same bytes.
fn ref_name(r: &VaultRef) -> Vec<u8> {
    let scope = r.scope().to_string();
    let mut out = Vec::with_capacity(4 + scope.len() + r.key().as_str().len());
    for part in [scope.as_bytes(), r.key().as_str().as_bytes()] {
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

fn bucket_of(id: &[u8]) -> u8 {
    id[0]
}

fn empty_bucket() -> [u8; 32] {
    Sha256::digest(b"sealfs bucket v2").into()
}

impl Index {
    pub fn path_in(vault_dir: &Path) -> PathBuf {
        vault_dir.join(INDEX_FILE)
    }

    /// Opens the index of an existing vault (the file must exist). Records
    /// can be read once [`Index::set_keys`] has given it the vault's keys.
    pub fn open(path: &Path) -> Result<Self, IndexError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )
        .map_err(|source| IndexError::Sqlite {
            path: path.to_owned(),
            source,
        })?;
        let index = Index {
            conn,
            path: path.to_owned(),
            keys: None,
            all_checked: std::cell::Cell::new(None),
        };
        index.configure()?;
        Ok(index)
    }

    pub fn set_keys(&mut self, keys: Arc<KeyRing>) {
        self.keys = Some(keys);
    }

    fn keys(&self) -> &KeyRing {
        self.keys
            .as_deref()
            .expect("the vault gives the index its keys before using it")
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
        // Freed pages are zeroed: a deleted record (or the clear tables of
        // an upgraded format-1 index) does not linger in the file.
        self.conn
            .pragma_update(None, "secure_delete", "ON")
            .map_err(self.err())?;
        Ok(())
    }

    /// The schema version recorded in the file (0 for a new, empty file).
    pub fn schema_version(&self) -> Result<i64, IndexError> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(self.err())
    }

    /// Fails unless this is a sealfs index of a schema this build reads.
    pub fn check_schema(&self) -> Result<(), IndexError> {
        match self.schema_version()? {
            0 => Err(IndexError::NotAnIndex {
                path: self.path.clone(),
            }),
            SCHEMA_VERSION => Ok(()),
            found => Err(IndexError::UnsupportedSchema {
                path: self.path.clone(),
                found,
            }),
        }
    }

    /// True once a vault has been fully created in this index (format 2:
    /// its vault record exists; format 1: its key id). Fails on an index of
    /// an unknown schema.
    pub fn is_initialised(&self) -> Result<bool, IndexError> {
        match self.schema_version()? {
            0 => Ok(false),
            SCHEMA_VERSION => self
                .conn
                .query_row("SELECT EXISTS (SELECT 1 FROM vault)", [], |r| r.get(0))
                .map_err(self.err()),
            1 | SCHEMA_V1 => Ok(self.meta("key_id")?.is_some()),
            found => Err(IndexError::UnsupportedSchema {
                path: self.path.clone(),
                found,
            }),
        }
    }

    /// A clear `meta` value: a hint, never trusted alone.
    pub fn meta(&self, name: &str) -> Result<Option<String>, IndexError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(self.err())
    }

    /// Creates a new vault's tables, clear hints, empty buckets and sealed
    /// vault record (counter 1) in one transaction. Writer lock held.
    pub fn create(&mut self, vault_id: &str, record: &VaultRecord) -> Result<State, IndexError> {
        let keys = Arc::clone(self.keys.as_ref().expect("keys set before create"));
        self.write_tx(|tx| {
            tx.execute_batch(SCHEMA)?;
            for b in 0..=255u8 {
                tx.execute(
                    "INSERT OR REPLACE INTO buckets (bucket, digest) VALUES (?1, ?2)",
                    params![b, empty_bucket().as_slice()],
                )?;
            }
            let mut record = record.clone();
            record.counter = 1;
            record.root = crate::hex::hex(&root_of(tx)?);
            write_hints(tx, vault_id, &record)?;
            tx.execute(
                "INSERT INTO vault (one, sealed) VALUES (1, ?1)",
                [keys.seal_record(
                    VAULT_RECORD_ID,
                    &serde_json::to_vec(&record).expect("plain data"),
                )],
            )?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            Ok(record)
        })?
        .state()
    }

    /// Reads and authenticates the vault record, and checks the bucket
    /// digests against its root.
    pub fn vault_record(&self) -> Result<VaultRecord, IndexError> {
        self.read(|| self.vault_record_in(&self.conn))
    }

    fn vault_record_in(&self, conn: &Connection) -> Result<VaultRecord, IndexError> {
        let sealed: Option<Vec<u8>> = conn
            .query_row("SELECT sealed FROM vault WHERE one = 1", [], |r| r.get(0))
            .optional()
            .map_err(self.err())?;
        let sealed = sealed.ok_or_else(|| tampered("vault metadata", "no vault record"))?;
        let plain = self
            .keys()
            .open_record(VAULT_RECORD_ID, &sealed)
            .map_err(|_| tampered("vault metadata", "the vault record does not authenticate"))?;
        let record: VaultRecord = serde_json::from_slice(&plain)
            .map_err(|_| tampered("vault metadata", "the vault record is malformed"))?;
        let root = root_of(conn).map_err(self.err())?;
        if crate::hex::hex(&root) != record.root {
            return Err(tampered(
                "vault metadata",
                "the bucket digests do not match the vault record",
            ));
        }
        for (name, value) in [
            ("format", Some(record.format.as_str())),
            ("backend", Some(record.backend.as_str())),
            ("key_id", Some(record.key_id.as_str())),
        ] {
            let clear: Option<String> = conn
                .query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(self.err())?;
            if clear.as_deref() != value {
                return Err(tampered(
                    "vault metadata",
                    "a clear hint differs from the vault record",
                ));
            }
        }
        Ok(record)
    }

    /// Runs `f` in one read transaction, so everything it reads is one
    /// snapshot.
    fn read<T>(&self, f: impl FnOnce() -> Result<T, IndexError>) -> Result<T, IndexError> {
        let tx = self.conn.unchecked_transaction().map_err(self.err())?;
        let out = f()?;
        tx.finish().map_err(self.err())?;
        Ok(out)
    }

    fn stored(&self, conn: &Connection, id: &[u8]) -> Result<Option<Stored>, IndexError> {
        conn.prepare_cached(
            "SELECT id, kind, scope_id, object_id, sealed FROM records WHERE id = ?1",
        )
        .and_then(|mut st| st.query_row([id], stored_row).optional())
        .map_err(self.err())
    }

    /// Recomputes bucket `b` from its records and compares it with the
    /// stored digest (which the root covers).
    fn check_bucket(&self, conn: &Connection, b: u8, what: &str) -> Result<(), IndexError> {
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
    pub fn verify_all(&self) -> Result<(), IndexError> {
        self.read(|| {
            self.vault_record_in(&self.conn)?;
            self.check_all_buckets(&self.conn)
        })
    }

    /// Every bucket, for listings: a record hidden from a listing is found.
    fn check_all_buckets(&self, conn: &Connection) -> Result<(), IndexError> {
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

    fn open_secret(&self, what: &str, s: &Stored) -> Result<(VaultRef, Row), IndexError> {
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
            || s.scope_id.as_deref()
                != Some(
                    keys.name_id(KIND_SCOPE_MEMBERS, rec.scope.as_bytes())
                        .as_slice(),
                )
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
        };
        Ok((r, row))
    }

    fn secret_id(&self, r: &VaultRef) -> [u8; 32] {
        self.keys().name_id(KIND_SECRET, &ref_name(r))
    }

    /// The live row of `r`, with the index state it was read at (bucket,
    /// root and vault record checked in the same snapshot).
    pub fn row(&self, r: &VaultRef) -> Result<(Option<Row>, State), IndexError> {
        self.read(|| {
            let record = self.vault_record_in(&self.conn)?;
            let id = self.secret_id(r);
            self.check_bucket(&self.conn, bucket_of(&id), &r.to_string())?;
            let row = match self.stored(&self.conn, &id)? {
                None => None,
                Some(s) => {
                    let (found, row) = self.open_secret(&r.to_string(), &s)?;
                    if &found != r {
                        return Err(tampered(
                            r.to_string(),
                            "a record is filed under another name",
                        ));
                    }
                    Some(row)
                }
            };
            Ok((row, record.state()?))
        })
    }

    /// Every live secret (of `scope`, or all), sorted by scope then key,
    /// with the state read; every bucket is checked.
    pub fn list(
        &self,
        scope: Option<&VaultScope>,
    ) -> Result<(Vec<(VaultRef, Row)>, State), IndexError> {
        self.read(|| self.list_in(scope))
    }

    /// [`Index::list`] inside a read transaction the caller holds.
    /// Checks every bucket against its digest, unless this connection
    /// already did at this state and the file has not changed since
    /// (`all_checked`).
    fn checked_whole(&self, state: State) -> Result<(), IndexError> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(self.err())?;
        if self.all_checked.get() != Some((version, state)) {
            self.check_all_buckets(&self.conn)?;
            self.all_checked.set(Some((version, state)));
        }
        Ok(())
    }

    /// Whether `scope` holds any secret: counted, once every record is
    /// known to be authentic (a forged or hidden row fails the whole-index
    /// check), so no record needs opening.
    fn has_secrets_in(&self, scope: &VaultScope) -> Result<(bool, State), IndexError> {
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

    fn list_in(
        &self,
        scope: Option<&VaultScope>,
    ) -> Result<(Vec<(VaultRef, Row)>, State), IndexError> {
        {
            let record = self.vault_record_in(&self.conn)?;
            self.checked_whole(record.state()?)?;
            let mut out = Vec::new();
            let mut each = |s: Stored| -> Result<(), IndexError> {
                let (r, row) = self.open_secret("the index", &s)?;
                if scope.is_some_and(|sc| r.scope() != sc) {
                    return Err(tampered(
                        r.to_string(),
                        "a record is listed under another scope",
                    ));
                }
                out.push((r, row));
                Ok(())
            };
            match scope {
                Some(sc) => {
                    let sid = self
                        .keys()
                        .name_id(KIND_SCOPE_MEMBERS, sc.to_string().as_bytes());
                    let mut st = self
                        .conn
                        .prepare_cached(
                            "SELECT id, kind, scope_id, object_id, sealed FROM records
                             WHERE scope_id = ?1 AND kind = ?2",
                        )
                        .map_err(self.err())?;
                    let rows = st
                        .query_map(params![sid.as_slice(), KIND_SECRET], stored_row)
                        .map_err(self.err())?;
                    for s in rows {
                        each(s.map_err(self.err())?)?;
                    }
                }
                None => {
                    let mut st = self
                        .conn
                        .prepare_cached(
                            "SELECT id, kind, scope_id, object_id, sealed FROM records WHERE kind = ?1",
                        )
                        .map_err(self.err())?;
                    let rows = st
                        .query_map([KIND_SECRET], stored_row)
                        .map_err(self.err())?;
                    for s in rows {
                        each(s.map_err(self.err())?)?;
                    }
                }
            }
            out.sort_by_cached_key(|(r, _)| (r.scope().to_string(), r.key().as_str().to_owned()));
            Ok((out, record.state()?))
        }
    }

    /// The version a new write to `r` gets: one past the live or retired
    /// one. Writer only (the caller checked the state under the lock).
    pub fn next_version(&self, r: &VaultRef) -> Result<u64, IndexError> {
        if let (Some(row), _) = self.row(r)? {
            return Ok(row.version + 1);
        }
        let id = self.keys().name_id(KIND_RETIRED, &ref_name(r));
        let Some(s) = self.stored(&self.conn, &id)? else {
            return Ok(1);
        };
        let plain = self
            .keys()
            .open_record(&s.id, &s.sealed)
            .map_err(|_| tampered(r.to_string(), "a retired record does not authenticate"))?;
        let rec: RetiredRecord = serde_json::from_slice(&plain)
            .map_err(|_| tampered(r.to_string(), "a retired record is malformed"))?;
        if s.kind != KIND_RETIRED
            || rec.scope != r.scope().to_string()
            || rec.key != r.key().as_str()
        {
            return Err(tampered(
                r.to_string(),
                "a retired record is filed under another name",
            ));
        }
        Ok(rec.version + 1)
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
    pub fn forget_referenced_pending(&self) -> Result<(), IndexError> {
        self.conn
            .execute(
                "DELETE FROM pending WHERE object_id IN
                 (SELECT object_id FROM records WHERE object_id IS NOT NULL)",
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

    /// One authenticated commit: checks the vault record and the buckets
    /// `edit` will touch, applies `edit`, recomputes those buckets and the
    /// root, and seals the vault record with the counter advanced (and
    /// `update` applied). Returns the new state.
    fn commit(
        &self,
        what: &str,
        edit: impl FnOnce(&Edit<'_>) -> Result<(), IndexError>,
        update: impl FnOnce(&mut VaultRecord),
    ) -> Result<State, IndexError> {
        let keys = self.keys();
        let tx = ImmediateTx::begin(&self.conn).map_err(self.err())?;
        let mut record = self.vault_record_in(&self.conn)?;
        let edits = Edit {
            conn: &self.conn,
            keys,
            touched: std::cell::RefCell::new(Vec::new()),
            index: self,
            what,
        };
        edit(&edits)?;
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
        record.state()
    }

    fn meta_vault_id(&self, conn: &Connection) -> Result<String, IndexError> {
        conn.query_row("SELECT value FROM meta WHERE name = 'vault_id'", [], |r| {
            r.get(0)
        })
        .map_err(self.err())
    }

    /// Commits a new value for `r`: the row now points at `row.object_id`,
    /// which leaves `pending`, and the replaced object (if any) enters
    /// `pending` for deletion. This is the commit point of a put.
    pub fn commit_put(
        &self,
        r: &VaultRef,
        row: &Row,
        replaced: Option<&ObjectId>,
    ) -> Result<State, IndexError> {
        self.commit(
            &r.to_string(),
            |e| {
                e.upsert_secret(r, row)?;
                e.remove(KIND_RETIRED, &ref_name(r))?;
                e.unpend(&row.object_id)?;
                replaced.map_or(Ok(()), |old| e.pend(old))
            },
            |_| {},
        )
    }

    /// Removes `r`, remembering its version and marking its object for
    /// deletion. This is the commit point of a delete.
    pub fn commit_delete(&self, r: &VaultRef, row: &Row) -> Result<State, IndexError> {
        self.commit(&r.to_string(), |e| e.retire(r, row), |_| {})
    }

    /// Moves `from` to `to` in one commit: `from` is removed as by a delete,
    /// `to` points at its freshly sealed object, and a value `to` held
    /// before is marked for deletion.
    pub fn commit_rename(
        &self,
        from: &VaultRef,
        from_row: &Row,
        to: &VaultRef,
        to_row: &Row,
        replaced: Option<&ObjectId>,
    ) -> Result<State, IndexError> {
        self.commit(
            &from.to_string(),
            |e| {
                e.retire(from, from_row)?;
                e.upsert_secret(to, to_row)?;
                e.remove(KIND_RETIRED, &ref_name(to))?;
                e.unpend(&to_row.object_id)?;
                replaced.map_or(Ok(()), |old| e.pend(old))
            },
            |_| {},
        )
    }

    /// Changes vault-wide fields (migration) in one commit.
    pub fn commit_vault(&self, update: impl FnOnce(&mut VaultRecord)) -> Result<State, IndexError> {
        self.commit("vault metadata", |_| Ok(()), update)
    }

    /// Registers `scope` with an owner; `None` (nothing committed) if it
    /// was registered already.
    pub fn register_scope(
        &self,
        scope: &VaultScope,
        owner_uid: Option<u32>,
        now_ms: i64,
    ) -> Result<Option<State>, IndexError> {
        let name = scope.to_string();
        let id = self.keys().name_id(KIND_SCOPE, name.as_bytes());
        self.read(|| self.check_bucket(&self.conn, bucket_of(&id), &name))?;
        if self.stored(&self.conn, &id)?.is_some() {
            return Ok(None);
        }
        let rec = ScopeRecord {
            scope: name.clone(),
            owner_uid,
            created_ms: now_ms,
        };
        self.commit(&name, |e| e.put(rec.seal(e.keys)), |_| {})
            .map(Some)
    }

    /// Forgets a registered scope; `None` if it was not registered.
    pub fn unregister_scope(&self, scope: &VaultScope) -> Result<Option<State>, IndexError> {
        let name = scope.to_string();
        if self.read(|| self.scope_record_in(scope))?.is_none() {
            return Ok(None);
        }
        self.commit(&name, |e| e.remove(KIND_SCOPE, name.as_bytes()), |_| {})
            .map(Some)
    }

    /// The registration record of `scope` (inside a read or write
    /// transaction the caller holds).
    fn scope_record_in(&self, scope: &VaultScope) -> Result<Option<ScopeRecord>, IndexError> {
        let name = scope.to_string();
        let id = self.keys().name_id(KIND_SCOPE, name.as_bytes());
        self.check_bucket(&self.conn, bucket_of(&id), &name)?;
        let Some(s) = self.stored(&self.conn, &id)? else {
            return Ok(None);
        };
        self.open_scope(&name, &s).map(Some)
    }

    fn open_scope(&self, what: &str, s: &Stored) -> Result<ScopeRecord, IndexError> {
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
    pub fn scope_has_secrets(&self, scope: &VaultScope) -> Result<bool, IndexError> {
        Ok(!self.list(Some(scope))?.0.is_empty())
    }

    /// The registration of `scope`, if any, and whether it holds secrets,
    /// read in one snapshot, with the state read.
    pub fn scope_row(&self, scope: &VaultScope) -> Result<(Option<ScopeRow>, State), IndexError> {
        self.read(|| {
            let owner = self.scope_record_in(scope)?.map(|r| r.owner_uid);
            let (has_secrets, state) = self.has_secrets_in(scope)?;
            let registered = owner.is_some();
            let row = (registered || has_secrets).then(|| ScopeRow {
                scope: scope.clone(),
                owner_uid: owner.flatten(),
                registered,
            });
            Ok((row, state))
        })
    }

    /// Every scope that is registered or holds secrets, sorted, read in
    /// one snapshot, with the state read.
    pub fn scopes(&self) -> Result<(Vec<ScopeRow>, State), IndexError> {
        self.read(|| self.scopes_in())
    }

    fn scopes_in(&self) -> Result<(Vec<ScopeRow>, State), IndexError> {
        let (secrets, state) = self.list_in(None)?;
        let registered: Vec<ScopeRecord> = {
            let mut st = self
                .conn
                .prepare_cached(
                    "SELECT id, kind, scope_id, object_id, sealed FROM records WHERE kind = ?1",
                )
                .map_err(self.err())?;
            let rows = st
                .query_map([KIND_SCOPE], stored_row)
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(self.err())?;
            rows.iter()
                .map(|s| self.open_scope("the index", s))
                .collect::<Result<_, _>>()?
        };
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
                },
            );
        }
        for (r, _) in secrets {
            out.entry(r.scope().to_string())
                .or_insert_with(|| ScopeRow {
                    scope: r.scope().clone(),
                    owner_uid: None,
                    registered: false,
                });
        }
        Ok((out.into_values().collect(), state))
    }

    /// The object id of every live secret.
    pub fn object_ids(&self) -> Result<Vec<ObjectId>, IndexError> {
        let (rows, _) = self.list(None)?;
        let mut ids: Vec<ObjectId> = rows.into_iter().map(|(_, row)| row.object_id).collect();
        ids.sort();
        Ok(ids)
    }

    /// Converts a format-1 index (names in the clear) to format 2 in one
    /// transaction: every secret, retired slot and scope is sealed under
    /// `keys`, the old tables are dropped and the vault record is written.
    /// The caller holds the writer lock and has checked the identity.
    pub fn migrate_from_v1(&mut self, record: &VaultRecord) -> Result<State, IndexError> {
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
    pub fn v1_meta(&self) -> Result<V1Meta, IndexError> {
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
pub struct V1Meta {
    pub backend_reason: Option<String>,
    pub created_ms: Option<i64>,
    /// A backend migration in progress (finish it with the old build first).
    pub migration: Option<String>,
}

/// A `BEGIN IMMEDIATE` transaction on a shared connection, rolled back on
/// drop unless committed.
struct ImmediateTx<'a> {
    conn: &'a Connection,
    done: bool,
}

impl<'a> ImmediateTx<'a> {
    fn begin(conn: &'a Connection) -> rusqlite::Result<Self> {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(ImmediateTx { conn, done: false })
    }

    fn commit(mut self) -> rusqlite::Result<()> {
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
struct Edit<'a> {
    conn: &'a Connection,
    keys: &'a KeyRing,
    touched: std::cell::RefCell<Vec<u8>>,
    index: &'a Index,
    what: &'a str,
}

impl Edit<'_> {
    /// Before a bucket is first changed, its current records must match its
    /// digest: a tampered bucket is never re-digested into a valid one.
    fn touch(&self, id: &[u8]) -> Result<(), IndexError> {
        let b = bucket_of(id);
        if !self.touched.borrow().contains(&b) {
            self.index.check_bucket(self.conn, b, self.what)?;
            self.touched.borrow_mut().push(b);
        }
        Ok(())
    }

    fn put(&self, s: Stored) -> Result<(), IndexError> {
        self.touch(&s.id)?;
        insert_stored(self.conn, &s).map_err(self.index.err())
    }

    fn remove(&self, kind: u8, name: &[u8]) -> Result<(), IndexError> {
        let id = self.keys.name_id(kind, name);
        self.touch(&id)?;
        self.conn
            .execute("DELETE FROM records WHERE id = ?1", [id.as_slice()])
            .map(drop)
            .map_err(self.index.err())
    }

    fn upsert_secret(&self, r: &VaultRef, row: &Row) -> Result<(), IndexError> {
        let rec = SecretRecord {
            scope: r.scope().to_string(),
            key: r.key().as_str().to_owned(),
            object_id: row.object_id.as_str().to_owned(),
            len: row.len,
            created_ms: row.created_ms,
            updated_ms: row.updated_ms,
            version: row.version,
            once: row.once,
        };
        self.put(rec.seal(self.keys, r))
    }

    /// Deletes the live record, remembers its version, and marks its object
    /// for deletion.
    fn retire(&self, r: &VaultRef, row: &Row) -> Result<(), IndexError> {
        self.remove(KIND_SECRET, &ref_name(r))?;
        let rec = RetiredRecord {
            scope: r.scope().to_string(),
            key: r.key().as_str().to_owned(),
            version: row.version,
        };
        self.put(rec.seal(self.keys, r))?;
        self.pend(&row.object_id)
    }

    fn pend(&self, id: &ObjectId) -> Result<(), IndexError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO pending (object_id) VALUES (?1)",
                [id.as_str()],
            )
            .map(drop)
            .map_err(self.index.err())
    }

    fn unpend(&self, id: &ObjectId) -> Result<(), IndexError> {
        self.conn
            .execute("DELETE FROM pending WHERE object_id = ?1", [id.as_str()])
            .map(drop)
            .map_err(self.index.err())
    }
}

fn insert_stored(tx: &Connection, s: &Stored) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT OR REPLACE INTO records (id, kind, scope_id, object_id, sealed)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![s.id, s.kind, s.scope_id, s.object_id, s.sealed],
    )
    .map(drop)
}

/// The clear hints: format, vault id, backend and key id (each checked
/// against the sealed vault record when it is read).
fn write_hints(tx: &Connection, vault_id: &str, record: &VaultRecord) -> rusqlite::Result<()> {
    for (name, value) in [
        ("format", record.format.as_str()),
        ("vault_id", vault_id),
        ("backend", record.backend.as_str()),
        ("key_id", record.key_id.as_str()),
    ] {
        tx.execute(
            "INSERT INTO meta (name, value) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            [name, value],
        )?;
    }
    Ok(())
}

fn stored_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Stored> {
    Ok(Stored {
        id: r.get(0)?,
        kind: r.get(1)?,
        scope_id: r.get(2)?,
        object_id: r.get(3)?,
        sealed: r.get(4)?,
    })
}

/// Bucket `b`'s digest computed from its records, and the one stored.
fn bucket_digests(conn: &Connection, b: u8) -> rusqlite::Result<([u8; 32], Option<[u8; 32]>)> {
    let mut h = Sha256::new();
    h.update(b"sealfs bucket v2");
    {
        let lo = [b];
        let mut st;
        let mut rows = if b == 255 {
            st = conn.prepare_cached(
                "SELECT id, kind, scope_id, object_id, sealed FROM records WHERE id >= ?1 ORDER BY id",
            )?;
            st.query(params![lo.as_slice()])?
        } else {
            st = conn.prepare_cached(
                "SELECT id, kind, scope_id, object_id, sealed FROM records
                 WHERE id >= ?1 AND id < ?2 ORDER BY id",
            )?;
            st.query(params![lo.as_slice(), [b + 1].as_slice()])?
        };
        while let Some(row) = rows.next()? {
            h.update(stored_row(row)?.leaf());
        }
    }
    let stored: Option<Vec<u8>> = conn
        .query_row("SELECT digest FROM buckets WHERE bucket = ?1", [b], |r| {
            r.get(0)
        })
        .optional()?;
    Ok((h.finalize().into(), stored.and_then(|d| d.try_into().ok())))
}

/// The root over the 256 stored bucket digests (a missing one counts as
/// all zeros, which never matches).
fn root_of(conn: &Connection) -> rusqlite::Result<[u8; 32]> {
    let mut digests = [[0u8; 32]; 256];
    let mut st = conn.prepare_cached("SELECT bucket, digest FROM buckets")?;
    let mut rows = st.query([])?;
    let mut seen = 0usize;
    while let Some(row) = rows.next()? {
        let b: i64 = row.get(0)?;
        let d: Vec<u8> = row.get(1)?;
        if let (Ok(b), Ok(d)) = (usize::try_from(b), <[u8; 32]>::try_from(d)) {
            if b < 256 {
                digests[b] = d;
                seen += 1;
            }
        }
    }
    let mut h = Sha256::new();
    h.update(b"sealfs root v2");
    h.update((seen as u64).to_be_bytes());
    for d in &digests {
        h.update(d);
    }
    Ok(h.finalize().into())
}
