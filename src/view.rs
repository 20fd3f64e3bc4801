//! The wire shapes of `--json` output, shared by the command line and the
//! web console so both print the same fields.

use sealfs::config::{RefCheck, RefStatus};
use sealfs::{Chain, Entry, VaultRef};
use serde::Serialize;

/// A secret's metadata (`sealfs list --json`, the console).
#[derive(Serialize)]
pub(crate) struct EntryJson {
    #[serde(rename = "ref")]
    vault_ref: VaultRef,
    scope: String,
    key: String,
    length: u64,
    created: String,
    updated: String,
    version: u64,
    once: bool,
    /// When it expires, if it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<String>,
}

impl EntryJson {
    pub(crate) fn of(e: &Entry) -> EntryJson {
        EntryJson {
            scope: e.vault_ref.scope().to_string(),
            key: e.vault_ref.key().to_string(),
            vault_ref: e.vault_ref.clone(),
            length: e.len,
            created: sealfs::rfc3339(e.created, false),
            updated: sealfs::rfc3339(e.updated, false),
            version: e.version,
            once: e.once,
            expires: e.expires.map(|t| sealfs::rfc3339(t, false)),
        }
    }
}

/// One checked `*_vault_ref` field (`sealfs audit --json`, the console).
#[derive(Serialize)]
pub(crate) struct RefCheckJson {
    pub field: String,
    #[serde(rename = "ref")]
    pub vault_ref: Option<String>,
    /// resolved, missing, invalid or error
    pub status: &'static str,
    pub detail: Option<String>,
}

impl RefCheckJson {
    pub(crate) fn of(c: &RefCheck) -> RefCheckJson {
        RefCheckJson {
            field: c.field.clone(),
            vault_ref: c.vault_ref.as_ref().map(ToString::to_string),
            status: c.status.as_str(),
            detail: match &c.status {
                RefStatus::Invalid(problem) => Some(problem.to_string()),
                RefStatus::Error(e) => Some(Chain(e).to_string()),
                _ => None,
            },
        }
    }
}

/// One version of a secret (`sealfs history --json`, the console).
#[derive(Serialize)]
pub(crate) struct VersionJson {
    version: u64,
    length: u64,
    written: String,
    /// cli, mount, console or library; absent for a value written before
    /// sealfs kept writers.
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exe: Option<String>,
    current: bool,
    /// The version a rollback brought back with this write.
    #[serde(skip_serializing_if = "Option::is_none")]
    restored_from: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<String>,
}

impl VersionJson {
    pub(crate) fn of(v: &sealfs::Version) -> VersionJson {
        VersionJson {
            version: v.version,
            length: v.len,
            written: sealfs::rfc3339(v.written, false),
            source: v.writer.as_ref().map(|w| w.source.as_str()),
            uid: v.writer.as_ref().and_then(|w| w.uid),
            // Named by whoever wrote through the mount: escaped as in the
            // audit log (no control or bidi characters reach a terminal).
            exe: v
                .writer
                .as_ref()
                .and_then(|w| w.exe.as_deref())
                .map(sealfs::audit::escaped),
            current: v.current,
            restored_from: v.restored_from,
            expires: v.expires.map(|t| sealfs::rfc3339(t, false)),
        }
    }
}
