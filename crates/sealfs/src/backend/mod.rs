//! Where sealed blobs are kept. The vault hands a backend opaque, already
//! sealed bytes under an opaque object id; a backend never sees a name or a
//! plaintext, and knows nothing of the index.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub mod dpapi;
pub mod encrypted_file;
pub mod keychain;
#[cfg(target_os = "linux")]
pub mod secret_service;

pub use crate::ids::ObjectId;
pub use encrypted_file::EncryptedFile;

/// Why a backend call failed; [`BackendError::kind`] classifies it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// No blob is stored under this id.
    #[error("blob {0} not found in the backend")]
    NotFound(ObjectId),
    /// An I/O operation of the backend failed.
    #[error("{backend} backend: {op} failed")]
    Io {
        /// The backend that failed.
        backend: BackendKind,
        /// What was being done when it failed.
        op: &'static str,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The backend cannot be used here: not built for this platform, or no
    /// service to talk to.
    #[error("{backend} backend is unavailable: {reason}")]
    Unavailable {
        /// The backend that failed.
        backend: BackendKind,
        /// Why it is unavailable.
        reason: String,
    },
    /// The store is locked, or an unlock prompt went unanswered.
    #[error("{backend} backend is locked: {reason}")]
    Locked {
        /// The backend that failed.
        backend: BackendKind,
        /// Why it is locked, and how to unlock it.
        reason: String,
    },
    /// The store did not answer within the time limit.
    #[error("{backend} backend did not answer within {timeout:?} (a locked keyring waiting on a prompt, or a hung service)")]
    Timeout {
        /// The backend that failed.
        backend: BackendKind,
        /// The time limit that passed.
        timeout: Duration,
    },
    /// Any other failure of the store; the message says what.
    #[error("{backend} backend: {message}")]
    Other {
        /// The backend that failed.
        backend: BackendKind,
        /// What went wrong.
        message: String,
    },
}

impl BackendError {
    /// This error's [`ErrorKind`](crate::ErrorKind).
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind as K;
        match self {
            BackendError::NotFound(_) => K::Integrity,
            BackendError::Unavailable { .. }
            | BackendError::Locked { .. }
            | BackendError::Timeout { .. } => K::Unavailable,
            BackendError::Io { .. } | BackendError::Other { .. } => K::Other,
        }
    }
}

/// Storage for sealed blobs. Every call is fallible (later backends talk to
/// OS keystores and remote stores), and one instance serves one vault.
pub trait BlobBackend: Send + Sync {
    /// Which backend this is.
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

/// The backends sealfs knows. Every name parses on every platform; building
/// one that this platform lacks is a clear `Unavailable` error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendKind {
    /// Every platform: one owner-only file per blob in the vault directory.
    EncryptedFile,
    /// Linux: the freedesktop Secret Service (gnome-keyring, KWallet) over D-Bus.
    SecretService,
    /// macOS: generic-password items in the login keychain.
    MacosKeychain,
    /// Windows: DPAPI-protected (user scope) files in the vault directory.
    WindowsDpapi,
}

impl BackendKind {
    /// Every backend, in the order messages list them.
    pub const ALL: &'static [BackendKind] = &[
        BackendKind::EncryptedFile,
        BackendKind::SecretService,
        BackendKind::MacosKeychain,
        BackendKind::WindowsDpapi,
    ];

    /// The backend's name, as `--backend` takes it and the vault records it.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::EncryptedFile => "encrypted-file",
            BackendKind::SecretService => "secret-service",
            BackendKind::MacosKeychain => "keychain",
            BackendKind::WindowsDpapi => "dpapi",
        }
    }

    /// An OS keystore: it also keeps the vault's device identity, so the
    /// vault directory alone (or with the identity directory) is not enough.
    pub fn is_platform_store(self) -> bool {
        self != BackendKind::EncryptedFile
    }

    /// The platform store of the OS this build is for, if any.
    pub fn platform() -> Option<BackendKind> {
        if cfg!(target_os = "linux") {
            Some(BackendKind::SecretService)
        } else if cfg!(target_os = "macos") {
            Some(BackendKind::MacosKeychain)
        } else if cfg!(windows) {
            Some(BackendKind::WindowsDpapi)
        } else {
            None
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

/// A backend name this build does not know; holds the name given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown backend {0:?} (this build knows: auto, {known})", known = known_list())]
pub struct UnknownBackend(pub String);

pub(crate) fn known_list() -> String {
    BackendKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the user asked for: `auto` or one backend by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendPreference {
    /// The platform store if a probe finds it usable, else encrypted-file.
    #[default]
    Auto,
    /// This backend, whatever a probe would say.
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

/// The default time limit for one call to an OS keystore.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach the platform stores.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// Limit for one keystore call; past it the call fails with `Timeout`
    /// (a locked keyring showing a prompt must not hang the CLI or daemon).
    pub timeout: Duration,
    /// D-Bus address of the session bus for the Secret Service; `None` uses
    /// `DBUS_SESSION_BUS_ADDRESS` / the default session bus.
    pub session_bus: Option<String>,
}

impl Default for BackendOptions {
    fn default() -> Self {
        BackendOptions {
            timeout: DEFAULT_TIMEOUT,
            session_bus: None,
        }
    }
}

/// What a backend needs to know about the vault it serves.
#[derive(Debug, Clone)]
pub struct BackendContext {
    /// The vault directory.
    pub vault_dir: PathBuf,
    /// The vault's id (hex): keystore items carry it, so several vaults can
    /// share one keystore without seeing each other's blobs.
    pub vault_id: String,
    /// How to reach the platform stores.
    pub options: BackendOptions,
    /// The vault directory as the vault opened and checked it: the
    /// encrypted-file store works through it rather than reopening the
    /// path (which a writer of a parent directory could have swapped).
    /// `None` outside a vault (probes): the path is opened then.
    pub vault_handle: Option<std::sync::Arc<crate::fsutil::PrivateDir>>,
}

/// A backend chosen for a vault, and the reason, for `doctor` and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendChoice {
    /// The backend chosen.
    pub kind: BackendKind,
    /// Why it was chosen, in one line.
    pub reason: String,
}

/// The outcome of probing the platform store: store, read back and delete a
/// probe item, within the timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The backend probed.
    pub kind: BackendKind,
    /// How long the probe took, or why it failed.
    pub result: Result<Duration, String>,
}

/// Probes `kind` for real with a throwaway item.
pub fn probe(kind: BackendKind, ctx: &BackendContext) -> Probe {
    let started = std::time::Instant::now();
    let result = (|| {
        let mut token = [0u8; 16];
        getrandom::fill(&mut token).map_err(|e| e.to_string())?;
        let ctx = BackendContext {
            vault_id: format!("probe-{}", crate::hex::hex(&token)),
            ..ctx.clone()
        };
        let backend = build(kind, &ctx).map_err(|e| e.to_string())?;
        let id = ObjectId::from_digest(&[7u8; 32]);
        let payload = b"sealfs probe";
        backend.put_blob(&id, payload).map_err(|e| e.to_string())?;
        let back = backend.get_blob(&id).map_err(|e| e.to_string());
        let deleted = backend.delete_blob(&id).map_err(|e| e.to_string());
        if back? != payload {
            return Err("the probe item read back differently".to_owned());
        }
        deleted?;
        Ok(started.elapsed())
    })();
    tracing::debug!(backend = %kind, ?result, "probed platform store");
    Probe { kind, result }
}

/// Picks the best backend usable here: the platform store when a real probe
/// succeeds, otherwise the embedded encrypted-file store. The reason says
/// which and why.
pub fn choose_auto_backend(ctx: &BackendContext) -> BackendChoice {
    choice_after(BackendKind::platform().map(|kind| probe(kind, ctx)))
}

/// The `auto` choice given the platform store's probe (`None`: no store).
pub fn choice_after(probe: Option<Probe>) -> BackendChoice {
    let Some(Probe { kind, result }) = probe else {
        return BackendChoice {
            kind: BackendKind::EncryptedFile,
            reason: "auto: this platform has no supported keystore; using encrypted-file".into(),
        };
    };
    match result {
        Ok(took) => BackendChoice {
            kind,
            reason: format!(
                "auto: {kind} answered a probe (store, read back, delete) in {} ms",
                took.as_millis()
            ),
        },
        Err(why) => BackendChoice {
            kind: BackendKind::EncryptedFile,
            reason: format!("auto: {kind} is not usable ({why}); using encrypted-file"),
        },
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

fn unavailable(kind: BackendKind) -> BackendError {
    BackendError::Unavailable {
        backend: kind,
        reason: "not supported on this platform".into(),
    }
}

/// Builds the backend of `kind` for the vault in `ctx`.
pub fn build(
    kind: BackendKind,
    ctx: &BackendContext,
) -> Result<Box<dyn BlobBackend>, BackendError> {
    match kind {
        BackendKind::EncryptedFile => Ok(Box::new(EncryptedFile::open(ctx)?)),
        #[cfg(target_os = "linux")]
        BackendKind::SecretService => {
            Ok(Box::new(secret_service::LinuxSecretService::connect(ctx)?))
        }
        #[cfg(target_os = "macos")]
        BackendKind::MacosKeychain => Ok(Box::new(keychain::MacosKeychain::new(ctx))),
        #[cfg(windows)]
        BackendKind::WindowsDpapi => Ok(Box::new(dpapi::WindowsDpapi::open(ctx)?)),
        other => Err(unavailable(other)),
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
