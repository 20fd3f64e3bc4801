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

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::backend::ObjectId;
use crate::crypto::KeyRing;
use crate::scope::VaultScope;

mod read;
mod records;
mod upgrade;
mod versions;
mod write;

pub(crate) use versions::Slot;

use crate::writer::Writer;
use records::{
    bucket_digests, bucket_of, empty_bucket, insert_stored, ref_name, root_of, stored_row,
    write_hints, RetiredRecord, ScopeRecord, SecretRecord, Stored, VersionRecord,
};

/// The schema this build writes and reads (vault format 2).
pub(crate) const SCHEMA_VERSION: i64 = 3;
/// The last schema of vault format 1 (names in the clear), migrated on open.
pub(crate) const SCHEMA_V1: i64 = 2;
pub(crate) const INDEX_FILE: &str = "index.sqlite3";
/// SQLite's write-ahead log of [`INDEX_FILE`].
#[cfg(unix)]
pub(crate) const WAL_FILE: &str = "index.sqlite3-wal";
/// The vault format this build writes (the clear `meta.format`).
pub(crate) const FORMAT: &str = "2";

/// How long an ended session's record is kept (emptied), so that nothing
/// is written into the session after its end: a week.
pub(crate) const ENDED_SESSION_KEPT_MS: i64 = 7 * 24 * 3600 * 1000;

const KIND_SECRET: u8 = 1;
const KIND_RETIRED: u8 = 2;
const KIND_SCOPE: u8 = 3;
/// Domain of the clear scope id that lists a scope's secrets.
const KIND_SCOPE_MEMBERS: u8 = 4;
/// An earlier version of a secret.
const KIND_VERSION: u8 = 5;
/// Domain of the clear id shared by the versions of one secret.
const KIND_VERSIONS_OF: u8 = 6;

/// How many earlier versions of a secret are kept unless the vault or the
/// secret says otherwise.
pub(crate) const DEFAULT_KEEP_VERSIONS: u32 = 10;
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
pub(crate) struct Row {
    pub object_id: ObjectId,
    pub len: u64,
    /// Milliseconds since the Unix epoch.
    pub created_ms: i64,
    pub updated_ms: i64,
    pub version: u64,
    /// Read-once: the first successful read consumes it.
    pub once: bool,
    /// When it expires (milliseconds since the Unix epoch): from then on it
    /// is not there for any reader, and the next writer removes it.
    pub expires_ms: Option<i64>,
    /// How many earlier versions to keep, if not the vault's default.
    pub keep: Option<u32>,
    /// Who wrote this value.
    pub writer: Option<Writer>,
    /// The version this value was rolled back to.
    pub restored_from: Option<u64>,
}

/// A deleted secret: the version it had, and how many versions it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Retired {
    pub version: u64,
    pub keep: Option<u32>,
}

/// An earlier value of a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VersionRow {
    pub version: u64,
    pub object_id: ObjectId,
    pub len: u64,
    pub written_ms: i64,
    pub expires_ms: Option<i64>,
    pub writer: Option<Writer>,
    pub restored_from: Option<u64>,
}

impl Row {
    /// Whether it has expired at `now_ms`.
    pub(crate) fn expired(&self, now_ms: i64) -> bool {
        self.expires_ms.is_some_and(|t| t <= now_ms)
    }
}

/// A scope known to the index: registered (mkdir, with an owner) and/or
/// holding secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScopeRow {
    pub scope: VaultScope,
    pub owner_uid: Option<u32>,
    pub registered: bool,
    /// A session's end (milliseconds since the Unix epoch).
    pub expires_ms: Option<i64>,
}

impl ScopeRow {
    /// Whether it (a session) has ended at `now_ms`.
    pub(crate) fn ended(&self, now_ms: i64) -> bool {
        self.expires_ms.is_some_and(|t| t <= now_ms)
    }
}

/// The commit counter and root digest of the index: what the anchor keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// The commit counter, advanced by every commit.
    pub counter: u64,
    /// The root digest over the 256 bucket digests.
    pub root: [u8; 32],
}

/// The sealed vault-wide fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VaultRecord {
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
    /// No secret or scope expires before this (milliseconds since the Unix
    /// epoch): a writer looks for expired ones only from then on. Absent
    /// while nothing expires (and in vaults from before expiry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_expiry_ms: Option<i64>,
    /// How many earlier versions of each secret are kept, if not
    /// [`DEFAULT_KEEP_VERSIONS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_versions: Option<u32>,
}

impl VaultRecord {
    pub(crate) fn state(&self) -> Result<State, IndexError> {
        let root = crate::hex::unhex(&self.root)
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| tampered("vault metadata", "root digest"))?;
        Ok(State {
            counter: self.counter,
            root,
        })
    }
}

pub(crate) struct Index {
    conn: Connection,
    path: PathBuf,
    keys: Option<Arc<KeyRing>>,
    /// What the last whole-index check that passed saw
    /// ([`Index::checked_whole`]): while it is unchanged, a listing need
    /// not check all 256 buckets again.
    all_checked: std::cell::Cell<Option<WholeChecked>>,
}

/// SQLite's `data_version` for a connection, the state read, and the
/// stamps of the index file and its log, taken before a whole-index check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct WholeChecked {
    version: i64,
    state: State,
    #[cfg(unix)]
    files: [Option<crate::fsutil::FileStamp>; 2],
    #[cfg(not(unix))]
    files: [Option<()>; 2],
}

/// SQLite's write-ahead log beside the index at `path`.
#[cfg(unix)]
fn wal_path(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
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

impl Index {
    pub(crate) fn path_in(vault_dir: &Path) -> PathBuf {
        vault_dir.join(INDEX_FILE)
    }

    /// Opens the index of an existing vault (the file must exist). Records
    /// can be read once [`Index::set_keys`] has given it the vault's keys.
    pub(crate) fn open(path: &Path) -> Result<Self, IndexError> {
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

    pub(crate) fn set_keys(&mut self, keys: Arc<KeyRing>) {
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
        // before the caller is told it succeeded. Switching a new file to
        // WAL takes an exclusive lock, and two processes opening a new
        // vault at once can each hold the shared lock the other must wait
        // out: SQLite then answers one of them SQLITE_BUSY at once, without
        // its busy timeout (a deadlock it breaks). That one tries again.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match self.conn.pragma_update(None, "journal_mode", "WAL") {
                Ok(()) => break,
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(self.err()(e)),
            }
        }
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
    pub(crate) fn schema_version(&self) -> Result<i64, IndexError> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(self.err())
    }

    /// Fails unless this is a sealfs index of a schema this build reads.
    pub(crate) fn check_schema(&self) -> Result<(), IndexError> {
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
    pub(crate) fn is_initialised(&self) -> Result<bool, IndexError> {
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

    /// SQLite's `data_version`: changes whenever another connection
    /// commits to the file.
    #[cfg(unix)]
    pub(crate) fn data_version(&self) -> Result<i64, IndexError> {
        self.conn
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut st| st.query_row([], |r| r.get(0)))
            .map_err(self.err())
    }

    /// A clear `meta` value: a hint, never trusted alone.
    pub(crate) fn meta(&self, name: &str) -> Result<Option<String>, IndexError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(self.err())
    }

    /// Creates a new vault's tables, clear hints, empty buckets and sealed
    /// vault record (counter 1) in one transaction. Writer lock held.
    pub(crate) fn create(
        &mut self,
        vault_id: &str,
        record: &VaultRecord,
    ) -> Result<State, IndexError> {
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
    pub(crate) fn vault_record(&self) -> Result<VaultRecord, IndexError> {
        self.read(|| self.vault_record_in(&self.conn))
    }

    fn vault_record_in(&self, conn: &Connection) -> Result<VaultRecord, IndexError> {
        // Every read checks the vault record: its statements are kept
        // prepared, not parsed anew each time.
        let sealed: Option<Vec<u8>> = conn
            .prepare_cached("SELECT sealed FROM vault WHERE one = 1")
            .and_then(|mut st| st.query_row([], |r| r.get(0)).optional())
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
                .prepare_cached("SELECT value FROM meta WHERE name = ?1")
                .and_then(|mut st| st.query_row([name], |r| r.get(0)).optional())
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
}
