//! Reading the earlier versions of secrets and the retired records of
//! deleted ones.

use super::records::{version_name, versions_id};
use super::{
    bucket_of, ref_name, tampered, Index, IndexError, Retired, RetiredRecord, Row, State, Stored,
    VersionRecord, VersionRow, KIND_RETIRED, KIND_VERSION,
};
use crate::backend::ObjectId;
use crate::scope::{VaultRef, VaultScope};

impl VersionRow {
    /// Whether it has expired at `now_ms`.
    pub(crate) fn expired(&self, now_ms: i64) -> bool {
        self.expires_ms.is_some_and(|t| t <= now_ms)
    }
}

/// A secret's slot: its live value, what is left of it if deleted, and
/// its earlier versions (oldest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slot {
    pub live: Option<Row>,
    pub retired: Option<Retired>,
    pub versions: Vec<VersionRow>,
}

impl Index {
    /// The retired record of `r`, if any (inside a transaction the caller
    /// holds; its bucket checked).
    pub(super) fn retired_in(&self, r: &VaultRef) -> Result<Option<Retired>, IndexError> {
        let id = self.keys().name_id(KIND_RETIRED, &ref_name(r));
        self.check_bucket(&self.conn, bucket_of(&id), &r.to_string())?;
        let Some(s) = self.stored(&self.conn, &id)? else {
            return Ok(None);
        };
        let (found, retired) = self.open_retired(&r.to_string(), &s)?;
        if &found != r {
            return Err(tampered(
                r.to_string(),
                "a retired record is filed under another name",
            ));
        }
        Ok(Some(retired))
    }

    fn open_retired(&self, what: &str, s: &Stored) -> Result<(VaultRef, Retired), IndexError> {
        let plain = self
            .keys()
            .open_record(&s.id, &s.sealed)
            .map_err(|_| tampered(what, "a retired record does not authenticate"))?;
        let rec: RetiredRecord = serde_json::from_slice(&plain)
            .map_err(|_| tampered(what, "a retired record is malformed"))?;
        let r = VaultRef::parse(&format!("{}/{}", rec.scope, rec.key))
            .map_err(|_| tampered(what, "a retired record names an invalid ref"))?;
        if s.kind != KIND_RETIRED
            || self.keys().name_id(KIND_RETIRED, &ref_name(&r)).as_slice() != s.id.as_slice()
            || s.scope_id.is_some()
            || s.object_id.is_some()
        {
            return Err(tampered(
                what,
                "a retired record is filed under another name",
            ));
        }
        Ok((
            r,
            Retired {
                version: rec.version,
                keep: rec.keep,
            },
        ))
    }

    /// Opens and checks a version record; `r`, if given, is the secret it
    /// must belong to.
    pub(super) fn open_version(
        &self,
        what: &str,
        s: &Stored,
    ) -> Result<(VaultRef, VersionRow), IndexError> {
        let plain = self
            .keys()
            .open_record(&s.id, &s.sealed)
            .map_err(|_| tampered(what, "a version record does not authenticate"))?;
        let rec: VersionRecord = serde_json::from_slice(&plain)
            .map_err(|_| tampered(what, "a version record is malformed"))?;
        let r = VaultRef::parse(&format!("{}/{}", rec.scope, rec.key))
            .map_err(|_| tampered(what, "a version record names an invalid ref"))?;
        let keys = self.keys();
        if s.kind != KIND_VERSION
            || rec.version == 0
            || keys
                .name_id(KIND_VERSION, &version_name(&r, rec.version))
                .as_slice()
                != s.id.as_slice()
            || s.scope_id.as_deref() != Some(versions_id(keys, &r).as_slice())
            || s.object_id.as_deref() != Some(rec.object_id.as_str())
        {
            return Err(tampered(
                r.to_string(),
                "clear columns differ from a sealed version record",
            ));
        }
        let object_id = ObjectId::parse(&rec.object_id)
            .ok_or_else(|| tampered(r.to_string(), "invalid object id"))?;
        Ok((
            r,
            VersionRow {
                version: rec.version,
                object_id,
                len: rec.len,
                written_ms: rec.written_ms,
                expires_ms: rec.expires_ms,
                writer: rec.writer,
                restored_from: rec.restored_from,
            },
        ))
    }

    /// Version `v` of `r`, if kept, with the state read.
    pub(crate) fn version(
        &self,
        r: &VaultRef,
        v: u64,
    ) -> Result<(Option<VersionRow>, State), IndexError> {
        self.read(|| {
            let record = self.vault_record_in(&self.conn)?;
            let id = self.keys().name_id(KIND_VERSION, &version_name(r, v));
            self.check_bucket(&self.conn, bucket_of(&id), &r.to_string())?;
            let row = match self.stored(&self.conn, &id)? {
                None => None,
                Some(s) => {
                    let (found, row) = self.open_version(&r.to_string(), &s)?;
                    if &found != r || row.version != v {
                        return Err(tampered(
                            r.to_string(),
                            "a version record is filed under another name",
                        ));
                    }
                    Some(row)
                }
            };
            Ok((row, record.state()?))
        })
    }

    /// The versions of `r` as stored (inside a transaction the caller
    /// holds), oldest first. Their buckets are not checked here.
    pub(super) fn versions_in(&self, r: &VaultRef) -> Result<Vec<VersionRow>, IndexError> {
        let gid = versions_id(self.keys(), r);
        let mut out = Vec::new();
        self.for_each_in_group(&gid, KIND_VERSION, |s| {
            let (found, row) = self.open_version(&r.to_string(), &s)?;
            if &found != r {
                return Err(tampered(
                    r.to_string(),
                    "a version record is filed under another name",
                ));
            }
            out.push(row);
            Ok(())
        })?;
        out.sort_by_key(|v| v.version);
        Ok(out)
    }

    /// The whole slot of `r` in one snapshot, every bucket checked (so no
    /// version is hidden), with the state read.
    pub(crate) fn slot(&self, r: &VaultRef) -> Result<(Slot, State), IndexError> {
        self.read(|| {
            let record = self.vault_record_in(&self.conn)?;
            let state = record.state()?;
            self.checked_whole(state)?;
            let live = self.row_in(r)?;
            let retired = self.retired_in(r)?;
            let versions = self.versions_in(r)?;
            Ok((
                Slot {
                    live,
                    retired,
                    versions,
                },
                state,
            ))
        })
    }

    /// The retired record of `r`, if any.
    pub(crate) fn retired(&self, r: &VaultRef) -> Result<Option<Retired>, IndexError> {
        self.read(|| self.retired_in(r))
    }

    /// Every kept version of every secret (of `scope`, or all), every
    /// bucket checked: what a sweep or a session's end looks through.
    pub(crate) fn all_versions(
        &self,
        scope: Option<&VaultScope>,
    ) -> Result<(Vec<(VaultRef, VersionRow)>, State), IndexError> {
        self.read(|| {
            let record = self.vault_record_in(&self.conn)?;
            let state = record.state()?;
            self.checked_whole(state)?;
            let mut out = Vec::new();
            self.for_each_of_kind(KIND_VERSION, |s| {
                let (r, row) = self.open_version("the index", &s)?;
                if scope.is_none_or(|sc| r.scope() == sc) {
                    out.push((r, row));
                }
                Ok(())
            })?;
            Ok((out, state))
        })
    }
}
