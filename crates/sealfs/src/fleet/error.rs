//! `FleetError`, the errors of the fleet layer, and their classification.

use std::path::PathBuf;

use super::MAX_ATTEMPTS;
use crate::{VaultError, VaultRef, VaultScope};

/// Why a fleet vault operation failed; [`FleetError::kind`] classifies it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// No etcd endpoint was given.
    #[error("no etcd endpoints: give --etcd-endpoints or set SEALFS_ETCD_ENDPOINTS")]
    NoEndpoints,
    /// etcd did not answer within the time limit, or a call or watch broke
    /// off.
    #[error("etcd is unreachable at {endpoints} ({why})")]
    Unreachable {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// What went wrong.
        why: String,
    },
    /// Any other failure of etcd or of the client, described.
    #[error("etcd: {0}")]
    Etcd(String),
    /// etcd wants a user and password this host does not have, or refused
    /// the stored ones.
    #[error("etcd authentication failed: {0}")]
    Auth(String),
    /// The TLS handshake failed: etcd's certificate is not trusted, or etcd
    /// refused this host's client certificate (or its lack of one).
    #[error("TLS handshake with etcd at {endpoints} failed: {why}")]
    Tls {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// The TLS failure, with a hint at the fix.
        why: String,
    },
    /// No fleet exists under the prefix yet.
    #[error("no fleet under this prefix yet: run `sealfs fleet init` on the first host")]
    NotInitialised,
    /// A fleet exists under the prefix already and this host, whose
    /// recipient this is, is not in it.
    #[error("a fleet exists under this prefix already and this host is not in it; ask a member to run `sealfs fleet enroll {0}`")]
    InitialisedElsewhere(String),
    /// This host is not a member of the fleet, or holds no copy of a
    /// scope's fleet key.
    #[error("this host ({recipient}) is not enrolled{}; ask a member to run `sealfs fleet enroll {recipient}`",
            scope.as_ref().map(|s| format!(" in scope {s}")).unwrap_or_default())]
    NotEnrolled {
        /// This host's age recipient.
        recipient: String,
        /// The scope whose key this host lacks; `None` when it is not a
        /// member at all.
        scope: Option<VaultScope>,
    },
    /// The recipient to enroll is a member already.
    #[error("{0} is enrolled already")]
    AlreadyMember(String),
    /// The recipient to revoke is not a member.
    #[error("{0} is not a member of the fleet")]
    NotMember(String),
    /// An attempt to revoke this host from itself.
    #[error("refusing to revoke this host itself; run the revoke on another member")]
    RevokeSelf,
    /// Not an age X25519 recipient; holds at most the first 80 characters
    /// given.
    #[error("not an age X25519 recipient (age1...): {0:?}")]
    BadRecipient(String),
    /// A record, or something this host keeps, does not parse; the text
    /// says which and why.
    #[error("a fleet record is corrupt: {0}")]
    Corrupt(String),
    /// A record does not authenticate under the fleet key; the text names
    /// it.
    #[error(
        "integrity check failed for {0}: the record does not authenticate under the fleet key"
    )]
    Integrity(String),
    /// A manifest older than one this host has verified: etcd was rolled
    /// back or tampered with.
    #[error("refusing the manifest of scope {scope}: its counter {got} is older than {seen}, which this host has seen; etcd was rolled back or tampered with")]
    Replay {
        /// The scope of the manifest.
        scope: VaultScope,
        /// The highest counter this host has verified for the scope.
        seen: u64,
        /// The counter of the manifest read.
        got: u64,
    },
    /// Concurrent writes kept changing what this operation read, so it
    /// gave up; the text names what it was for.
    #[error(
        "gave up on {0} after {MAX_ATTEMPTS} conflicting concurrent writes; nothing was changed"
    )]
    Conflict(String),
    /// No secret is stored under this ref.
    #[error("secret not found: {0}")]
    NotFound(VaultRef),
    /// etcd is unreachable and this etcd key is not in the local cache.
    #[error("etcd is unreachable and {0} is not in this host's cache")]
    NotCached(String),
    /// An empty value was given to store under this ref.
    #[error("refusing to store an empty value for {0}")]
    EmptyValue(VaultRef),
    /// The value is over the fleet vault's largest value size.
    #[error("value for {vault_ref} is {len} bytes, over the limit of {max} bytes")]
    TooLarge {
        /// The ref the value was for.
        vault_ref: VaultRef,
        /// The value's length, in bytes.
        len: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// Reading or writing the local sealed cache failed.
    #[error("local cache {path}: {source}")]
    Cache {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The host's local vault, which keeps its fleet credentials, failed.
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
