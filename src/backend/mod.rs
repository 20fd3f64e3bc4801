//! Where sealed blobs are kept. The vault hands a backend opaque, already
//! sealed bytes under an opaque object id; a backend never sees a name or a
//! plaintext, and knows nothing of the index.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

pub mod encrypted_file;

pub use encrypted_file::EncryptedFile;

/// The address of one sealed blob: 64 lower-case hex digits (an HMAC-SHA256).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(String);

impl ObjectId {
    pub(crate) fn from_digest(digest: &[u8]) -> Self {
        ObjectId(crate::crypto::hex(digest))
    }

    /// Accepts exactly 64 lower-case hex digits.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| ObjectId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({})", self.0)
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    #[error("blob {0} not found in the backend")]
    NotFound(ObjectId),
    #[error("{backend} backend: {op} failed")]
    Io {
        backend: BackendKind,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{backend} backend is unavailable: {reason}")]
    Unavailable {
        backend: BackendKind,
        reason: String,
    },
}

/// Storage for sealed blobs. Every call is fallible (later backends talk to
/// OS keystores and remote stores), and one instance serves one vault.
pub trait BlobBackend: Send + Sync {
    fn kind(&self) -> BackendKind;

    /// Stores `blob` under `id`, replacing any blob there, atomically: a
    /// reader sees the old blob or the new one, never a mix.
    fn put_blob(&self, id: &ObjectId, blob: &[u8]) -> Result<(), BackendError>;

    /// The blob stored under `id`, or [`BackendError::NotFound`].
    fn get_blob(&self, id: &ObjectId) -> Result<Vec<u8>, BackendError>;

    /// Removes the blob under `id`; `Ok(false)` if there was none.
    fn delete_blob(&self, id: &ObjectId) -> Result<bool, BackendError>;

    /// Cleans up what an interrupted `put_blob` may have left (temp files).
    /// Called with the vault's writer lock held, so no put is in flight.
    fn recover(&self) -> Result<(), BackendError> {
        Ok(())
    }
}

/// The backends this build can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendKind {
    EncryptedFile,
}

impl BackendKind {
    pub const ALL: &'static [BackendKind] = &[BackendKind::EncryptedFile];

    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::EncryptedFile => "encrypted-file",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendKind {
    type Err = UnknownBackend;
    fn from_str(s: &str) -> Result<Self, UnknownBackend> {
        BackendKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownBackend(s.to_owned()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown backend {0:?} (this build knows: auto, {known})", known = known_list())]
pub struct UnknownBackend(pub String);

fn known_list() -> String {
    BackendKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the user asked for: `auto` or one backend by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendPreference {
    #[default]
    Auto,
    Explicit(BackendKind),
}

impl fmt::Display for BackendPreference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendPreference::Auto => f.write_str("auto"),
            BackendPreference::Explicit(k) => k.fmt(f),
        }
    }
}

impl FromStr for BackendPreference {
    type Err = UnknownBackend;
    fn from_str(s: &str) -> Result<Self, UnknownBackend> {
        if s == "auto" {
            Ok(BackendPreference::Auto)
        } else {
            s.parse().map(BackendPreference::Explicit)
        }
    }
}

/// What a backend needs to know about the vault it serves.
#[derive(Debug, Clone)]
pub struct BackendContext {
    pub vault_dir: PathBuf,
}

/// A backend chosen for a vault, and the reason, for `doctor` and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendChoice {
    pub kind: BackendKind,
    pub reason: String,
}

/// Picks the best backend usable here. Platform keystores join this list in
/// later releases; today the embedded encrypted-file store is the only one.
pub fn choose_auto_backend(_ctx: &BackendContext) -> BackendChoice {
    BackendChoice {
        kind: BackendKind::EncryptedFile,
        reason: "auto: no platform keystore backend is built in yet, using the embedded encrypted-file store".into(),
    }
}

/// Resolves `pref` to a choice without regard to what a vault has recorded
/// (the vault enforces that), then builds the backend.
pub fn select_backend(
    pref: BackendPreference,
    ctx: &BackendContext,
) -> Result<(Box<dyn BlobBackend>, BackendChoice), BackendError> {
    let choice = match pref {
        BackendPreference::Auto => choose_auto_backend(ctx),
        BackendPreference::Explicit(kind) => BackendChoice {
            kind,
            reason: format!("requested explicitly (--backend {kind})"),
        },
    };
    Ok((build(choice.kind, ctx)?, choice))
}

/// Builds the backend of `kind` for the vault in `ctx`.
pub fn build(
    kind: BackendKind,
    ctx: &BackendContext,
) -> Result<Box<dyn BlobBackend>, BackendError> {
    match kind {
        BackendKind::EncryptedFile => Ok(Box::new(EncryptedFile::open(&ctx.vault_dir)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preference_parses_known_names_only() {
        assert_eq!(
            "auto".parse::<BackendPreference>().unwrap(),
            BackendPreference::Auto
        );
        assert_eq!(
            "encrypted-file".parse::<BackendPreference>().unwrap(),
            BackendPreference::Explicit(BackendKind::EncryptedFile)
        );
        let err = "keyring"
            .parse::<BackendPreference>()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("keyring") && err.contains("encrypted-file"),
            "{err}"
        );
        assert!("Encrypted-File".parse::<BackendPreference>().is_err());
    }

    #[test]
    fn object_id_parse_is_strict() {
        assert!(ObjectId::parse(&"a".repeat(64)).is_some());
        assert!(ObjectId::parse(&"A".repeat(64)).is_none());
        assert!(ObjectId::parse(&"a".repeat(63)).is_none());
        assert!(ObjectId::parse(&format!("../{}", "a".repeat(61))).is_none());
    }
}
