//! `FleetError`, the errors of the fleet layer, and their classification.

use std::path::PathBuf;

use super::MAX_ATTEMPTS;
use crate::{VaultError, VaultRef, VaultScope};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    #[error("no etcd endpoints: give --etcd-endpoints or set SEALFS_ETCD_ENDPOINTS")]
    NoEndpoints,
    #[error("etcd is unreachable at {endpoints} ({why})")]
    Unreachable { endpoints: String, why: String },
    #[error("etcd: {0}")]
    Etcd(String),
    /// etcd wants a user and password this host does not have, or refused
    /// the stored ones.
    #[error("etcd authentication failed: {0}")]
    Auth(String),
    /// The TLS handshake failed: etcd's certificate is not trusted, or etcd
    /// refused this host's client certificate (or its lack of one).
    #[error("TLS handshake with etcd at {endpoints} failed: {why}")]
    Tls { endpoints: String, why: String },
    #[error("no fleet under this prefix yet: run `sealfs fleet init` on the first host")]
    NotInitialised,
    #[error("a fleet exists under this prefix already and this host is not in it; ask a member to run `sealfs fleet enroll {0}`")]
    InitialisedElsewhere(String),
    #[error("this host ({recipient}) is not enrolled{}; ask a member to run `sealfs fleet enroll {recipient}`",
            scope.as_ref().map(|s| format!(" in scope {s}")).unwrap_or_default())]
    NotEnrolled {
        recipient: String,
        scope: Option<VaultScope>,
    },
    #[error("{0} is enrolled already")]
    AlreadyMember(String),
    #[error("{0} is not a member of the fleet")]
    NotMember(String),
    #[error("refusing to revoke this host itself; run the revoke on another member")]
    RevokeSelf,
    #[error("not an age X25519 recipient (age1...): {0:?}")]
    BadRecipient(String),
    #[error("a fleet record is corrupt: {0}")]
    Corrupt(String),
    #[error(
        "integrity check failed for {0}: the record does not authenticate under the fleet key"
    )]
    Integrity(String),
    #[error("refusing the manifest of scope {scope}: its counter {got} is older than {seen}, which this host has seen; etcd was rolled back or tampered with")]
    Replay {
        scope: VaultScope,
        seen: u64,
        got: u64,
    },
    #[error(
        "gave up on {0} after {MAX_ATTEMPTS} conflicting concurrent writes; nothing was changed"
    )]
    Conflict(String),
    #[error("secret not found: {0}")]
    NotFound(VaultRef),
    #[error("etcd is unreachable and {0} is not in this host's cache")]
    NotCached(String),
    #[error("refusing to store an empty value for {0}")]
    EmptyValue(VaultRef),
    #[error("value for {vault_ref} is {len} bytes, over the limit of {max} bytes")]
    TooLarge {
        vault_ref: VaultRef,
        len: usize,
        max: usize,
    },
    #[error("local cache {path}: {source}")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Local(#[from] VaultError),
}

impl FleetError {
    /// This error's [`ErrorKind`](crate::ErrorKind).
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind as K;
        use FleetError as E;
        match self {
            E::NotFound(_) | E::NotCached(_) | E::NotInitialised | E::NotMember(_) => K::NotFound,
            E::EmptyValue(_) | E::BadRecipient(_) | E::RevokeSelf | E::NoEndpoints => {
                K::InvalidInput
            }
            E::TooLarge { .. } => K::TooLarge,
            E::AlreadyMember(_) | E::InitialisedElsewhere(_) => K::Exists,
            E::NotEnrolled { .. } | E::Auth(_) | E::Tls { .. } => K::Denied,
            E::Unreachable { .. } | E::Conflict(_) => K::Unavailable,
            E::Corrupt(_) | E::Integrity(_) | E::Replay { .. } => K::Integrity,
            E::Etcd(_) | E::Cache { .. } => K::Other,
            E::Local(e) => e.kind(),
        }
    }
}

pub(crate) fn corrupt(what: &str, e: impl std::fmt::Display) -> FleetError {
    FleetError::Corrupt(format!("{what}: {e}"))
}
