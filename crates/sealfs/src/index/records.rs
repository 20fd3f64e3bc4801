//! The sealed records of the index and the digests of their buckets.

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    VaultRecord, KIND_RETIRED, KIND_SCOPE, KIND_SCOPE_MEMBERS, KIND_SECRET, KIND_VERSION,
    KIND_VERSIONS_OF,
};
use crate::crypto::KeyRing;
use crate::scope::VaultRef;
use crate::writer::Writer;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SecretRecord {
    pub(super) scope: String,
    pub(super) key: String,
    pub(super) object_id: String,
    pub(super) len: u64,
    pub(super) created_ms: i64,
    pub(super) updated_ms: i64,
    pub(super) version: u64,
    pub(super) once: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) expires_ms: Option<i64>,
    /// How many earlier versions to keep, if not the vault's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) keep: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) writer: Option<Writer>,
    /// The version this value was rolled back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) restored_from: Option<u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RetiredRecord {
    pub(super) scope: String,
    pub(super) key: String,
    pub(super) version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) keep: Option<u32>,
}

/// An earlier value of a secret, kept for `history` and `rollback`. Its
/// blob stays sealed to the ref and the version it was written as.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VersionRecord {
    pub(super) scope: String,
    pub(super) key: String,
    pub(super) version: u64,
    pub(super) object_id: String,
    pub(super) len: u64,
    /// When this value was written.
    pub(super) written_ms: i64,
    /// When this value expires (it had a lifetime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) expires_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) writer: Option<Writer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) restored_from: Option<u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ScopeRecord {
    pub(super) scope: String,
    pub(super) owner_uid: Option<u32>,
    pub(super) created_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) expires_ms: Option<i64>,
}

/// A record sealed under its lookup id, with the clear columns its kind
/// has: the one place where records are built (writes and the upgrade).
pub(super) fn seal(
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
    pub(super) fn seal(&self, keys: &KeyRing, r: &VaultRef) -> Stored {
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
    pub(super) fn seal(&self, keys: &KeyRing, r: &VaultRef) -> Stored {
        seal(keys, KIND_RETIRED, &ref_name(r), None, None, self)
    }
}

impl VersionRecord {
    /// Clear columns: its object id (so that its blob is never an orphan),
    /// and, as its scope id, the id of its secret's versions
    /// ([`versions_id`]).
    pub(super) fn seal(&self, keys: &KeyRing, r: &VaultRef) -> Stored {
        let id = keys.name_id(KIND_VERSION, &version_name(r, self.version));
        Stored {
            id: id.to_vec(),
            kind: KIND_VERSION,
            scope_id: Some(versions_id(keys, r).to_vec()),
            object_id: Some(self.object_id.clone()),
            sealed: keys.seal_record(&id, &serde_json::to_vec(self).expect("plain data")),
        }
    }
}

impl ScopeRecord {
    pub(super) fn seal(&self, keys: &KeyRing) -> Stored {
        seal(keys, KIND_SCOPE, self.scope.as_bytes(), None, None, self)
    }
}

/// One row of `records` as stored.
pub(super) struct Stored {
    pub(super) id: Vec<u8>,
    pub(super) kind: u8,
    pub(super) scope_id: Option<Vec<u8>>,
    pub(super) object_id: Option<String>,
    pub(super) sealed: Vec<u8>,
}

impl Stored {
    /// What the bucket digest covers: every column.
    pub(super) fn leaf(&self) -> [u8; 32] {
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

/// `len(scope) scope len(key) key`: no two refs give the same bytes.
pub(super) fn ref_name(r: &VaultRef) -> Vec<u8> {
    let scope = r.scope().to_string();
    let mut out = Vec::with_capacity(4 + scope.len() + r.key().as_str().len());
    for part in [scope.as_bytes(), r.key().as_str().as_bytes()] {
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// The name of version `v` of `r`: its ref name, then the version.
pub(super) fn version_name(r: &VaultRef, v: u64) -> Vec<u8> {
    let mut out = ref_name(r);
    out.extend_from_slice(&v.to_be_bytes());
    out
}

/// The clear id shared by the versions of `r` (in the `scope_id` column),
/// by which they are found.
pub(super) fn versions_id(keys: &KeyRing, r: &VaultRef) -> [u8; 32] {
    keys.name_id(KIND_VERSIONS_OF, &ref_name(r))
}

pub(super) fn bucket_of(id: &[u8]) -> u8 {
    id[0]
}

pub(super) fn empty_bucket() -> [u8; 32] {
    Sha256::digest(b"sealfs bucket v2").into()
}

pub(super) fn insert_stored(tx: &Connection, s: &Stored) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT OR REPLACE INTO records (id, kind, scope_id, object_id, sealed)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![s.id, s.kind, s.scope_id, s.object_id, s.sealed],
    )
    .map(drop)
}

/// The clear hints: format, vault id, backend and key id (each checked
/// against the sealed vault record when it is read).
pub(super) fn write_hints(
    tx: &Connection,
    vault_id: &str,
    record: &VaultRecord,
) -> rusqlite::Result<()> {
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

pub(super) fn stored_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Stored> {
    Ok(Stored {
        id: r.get(0)?,
        kind: r.get(1)?,
        scope_id: r.get(2)?,
        object_id: r.get(3)?,
        sealed: r.get(4)?,
    })
}

/// Bucket `b`'s digest computed from its records, and the one stored.
pub(super) fn bucket_digests(
    conn: &Connection,
    b: u8,
) -> rusqlite::Result<([u8; 32], Option<[u8; 32]>)> {
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
        .prepare_cached("SELECT digest FROM buckets WHERE bucket = ?1")?
        .query_row([b], |r| r.get(0))
        .optional()?;
    Ok((h.finalize().into(), stored.and_then(|d| d.try_into().ok())))
}

/// The root over the 256 stored bucket digests (a missing one counts as
/// all zeros, which never matches).
pub(super) fn root_of(conn: &Connection) -> rusqlite::Result<[u8; 32]> {
    let mut digests = [[0u8; 32]; 256];
    let mut st = conn.prepare_cached("SELECT bucket, digest FROM buckets")?;
    let mut rows = st.query([])?;
    let mut seen = 0usize;
    while let Some(row) = rows.next()? {
        let b: i64 = row.get(0)?;
        // Borrowed from the row: no copy per bucket.
        let d = row.get_ref(1)?.as_blob()?;
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
