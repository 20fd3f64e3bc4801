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
    /// etcd refused a call that needs its root rights (managing users).
    #[error("{what} needs etcd root rights, which this host's etcd login has not ({why}); run it on a member logged in as etcd root (`sealfs fleet login --user root`)")]
    NeedsRoot {
        /// What was refused.
        what: String,
        /// etcd's answer.
        why: String,
    },
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
    /// This host has pinned no fleet under this prefix yet.
    #[error("this host has not joined the fleet under this prefix: run `sealfs fleet join <token>` with the join token that `sealfs fleet enroll` or `sealfs fleet status` prints on a member")]
    NotJoined,
    /// The prefix holds another fleet than the one this host pinned: a
    /// fleet copied in from elsewhere, or the wrong prefix.
    #[error("this prefix holds fleet {found}, not fleet {pinned}, which this host joined; etcd was tampered with, or this is the wrong --etcd-prefix")]
    OtherFleet {
        /// The fleet id this host pinned.
        pinned: String,
        /// The fleet id found.
        found: String,
    },
    /// A membership or keyring record fails a check against this host's
    /// pins or the verified membership; the text names it and why.
    #[error("refusing {0}; etcd was rolled back or tampered with")]
    Forged(String),
    /// A scope's key is older than the fleet's last revocation: the
    /// revocation did not finish.
    #[error("scope {0} still has its key from before the last revocation; run `sealfs fleet revoke` again on a member to finish it")]
    NotRotated(VaultScope),
    /// The host to enroll was revoked before; it needs a new identity.
    #[error("{0} was revoked from this fleet; a revoked host needs a new identity (a fresh local vault) to be enrolled again")]
    Revoked(String),
    /// Not a join token (`<fleet id>:<seq>:<hash>`); holds at most the
    /// first 160 characters given.
    #[error("not a join token (<fleet id>:<seq>:<hash>, as `sealfs fleet enroll` and `sealfs fleet status` print it on a member): {0:?}")]
    BadJoinToken(String),
    /// etcd has been unreachable for longer than this host may serve its
    /// cached copies (`--max-offline-age`).
    #[error("etcd has been unreachable since {since}, longer than --max-offline-age allows ({max_secs} s); refusing to serve this host's cached copy")]
    TooStale {
        /// When this host last reached etcd (RFC 3339), or "never".
        since: String,
        /// The limit, in seconds.
        max_secs: u64,
    },
    /// An enrolment or revocation changed the membership but could not
    /// bring some scopes along (each named with why); running it again
    /// finishes them.
    #[error("{op}: the membership changed and {done} scope(s) followed, but these could not: {failed}; run `sealfs fleet {op}` again once they are fixed (for a scope not granted to this host: on a member it is granted to)")]
    Incomplete {
        /// `enroll`, `revoke` or `recover`.
        op: &'static str,
        /// How many scopes were brought along.
        done: usize,
        /// The scopes that failed, with their errors.
        failed: String,
    },
    /// etcd reached its space quota and takes no writes.
    #[error("etcd is out of space (its quota, --quota-backend-bytes, is reached); run `sealfs fleet compact` on a member (etcd root rights), or raise the quota")]
    NoSpace,
    /// A conditional write found its slot otherwise than expected; nothing
    /// was stored.
    #[error("refusing to store {vault_ref}: {}", crate::vault::mismatch(*expected, *found))]
    NotAsExpected {
        /// The ref written.
        vault_ref: VaultRef,
        /// What the write required.
        expected: crate::Expected,
        /// The version found (`None`: no secret).
        found: Option<u64>,
    },
    /// A write was sent but its answer lost, and whether it committed
    /// could not be settled: it may or may not have landed.
    #[error("whether {vault_ref} was {done} is unknown: {why}; check with `sealfs get` (or `list --json` for its version) before writing it again")]
    Ambiguous {
        /// The ref written.
        vault_ref: VaultRef,
        /// What the write would have done: "stored" or "deleted".
        done: &'static str,
        /// Why it could not be settled.
        why: String,
    },
    /// A write was sent and no answer came: it may have committed. The
    /// fleet settles this before a caller sees it (as stored, not stored,
    /// or [`FleetError::Ambiguous`]).
    #[error("etcd at {endpoints} did not answer a write it was sent ({why})")]
    NoAnswer {
        /// The endpoints, comma-separated.
        endpoints: String,
        /// What went wrong.
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
    /// scope's fleet key; `recipient` is its card.
    #[error("this host ({recipient}) is not enrolled{}; ask a member to run `sealfs fleet enroll {recipient}`",
            scope.as_ref().map(|s| format!(" in scope {s}")).unwrap_or_default())]
    NotEnrolled {
        /// This host's age recipient.
        recipient: String,
        /// The scope whose key this host lacks; `None` when it is not a
        /// member at all.
        scope: Option<VaultScope>,
    },
    /// The scope is granted to some members only, and this host is not one
    /// of them.
    #[error("scope {0} is not granted to this host; a member it is granted to can grant it (`sealfs fleet grant`)")]
    NotGranted(VaultScope),
    /// `sealfs fleet grant` with no host to grant the scope to, or a scope
    /// whose every member it was granted to has been revoked.
    #[error(
        "scope {0} is granted to no member; a member can grant it anew (`sealfs fleet grant`)"
    )]
    NoAudience(VaultScope),
    /// `sealfs fleet grant` naming members without this host.
    #[error("refusing to grant scope {0} to members without this host; name this host too (and narrow it from one of the others), or run it on one of them")]
    GrantLeavesOut(VaultScope),
    /// A scope's keyring is from before the last change of who the scope
    /// is granted to, which `fleet grant` writes together with the new
    /// keyring: put back by someone else.
    #[error("refusing the keyring of {0}: it is from before the last change of who the scope is granted to (written together with a newer one); etcd was rolled back or tampered with")]
    NotRegranted(VaultScope),
    /// `--forget-scope` named a scope that is not one this host pinned and
    /// etcd lacks, or was given without `--replace-pin`.
    #[error("refusing to forget scope {0}: only a scope this host has pinned and that has no keyring in etcd, with --replace-pin, is forgotten; nothing was changed")]
    CannotForget(VaultScope),
    /// The recipient to enroll is a member already.
    #[error("{0} is enrolled already")]
    AlreadyMember(String),
    /// The recipient to revoke is not a member.
    #[error("{0} is not a member of the fleet")]
    NotMember(String),
    /// An attempt to revoke this host from itself.
    #[error("refusing to revoke this host itself; run the revoke on another member")]
    RevokeSelf,
    /// Not a host card (`age1...:<hex>`, which `sealfs fleet recipient`
    /// prints); holds at most the first 140 characters given.
    #[error(
        "not a host card (age1...:<64 hex digits>, as `sealfs fleet recipient` prints it): {0:?}"
    )]
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
    /// An index shard older than one this host has verified: etcd was
    /// rolled back or tampered with.
    #[error("refusing shard {shard} of the index of scope {scope}: its counter {got} is older than {seen}, which this host has seen; etcd was rolled back or tampered with")]
    Replay {
        /// The scope of the shard.
        scope: VaultScope,
        /// The shard (three or four hex digits, as the fleet names them).
        shard: String,
        /// The highest counter this host has verified for the shard.
        seen: u64,
        /// The counter of the shard read.
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
            E::NotFound(_)
            | E::NotCached(_)
            | E::NotInitialised
            | E::NotJoined
            | E::NotMember(_) => K::NotFound,
            E::EmptyValue(_)
            | E::BadRecipient(_)
            | E::BadJoinToken(_)
            | E::RevokeSelf
            | E::CannotForget(_)
            | E::NoAudience(_)
            | E::GrantLeavesOut(_)
            | E::NoEndpoints => K::InvalidInput,
            E::TooLarge { .. } => K::TooLarge,
            E::AlreadyMember(_) | E::InitialisedElsewhere(_) | E::NotAsExpected { .. } => K::Exists,
            E::NotEnrolled { .. }
            | E::NotGranted(_)
            | E::Auth(_)
            | E::NeedsRoot { .. }
            | E::Tls { .. }
            | E::Revoked(_) => K::Denied,
            E::Unreachable { .. }
            | E::Conflict(_)
            | E::TooStale { .. }
            | E::NoSpace
            | E::NoAnswer { .. }
            | E::Ambiguous { .. } => K::Unavailable,
            E::Corrupt(_)
            | E::Integrity(_)
            | E::Replay { .. }
            | E::Forged(_)
            | E::OtherFleet { .. }
            | E::NotRotated(_)
            | E::NotRegranted(_)
            | E::Incomplete { .. } => K::Integrity,
            E::Etcd(_) | E::Cache { .. } => K::Other,
            E::Local(e) => e.kind(),
        }
    }
}

pub(crate) fn corrupt(what: &str, e: impl std::fmt::Display) -> FleetError {
    FleetError::Corrupt(format!("{what}: {e}"))
}
