//! A vault shared by a fleet of hosts, kept in etcd.
//!
//! Layout under `/<prefix>/`:
//! - `chain/<seq>`: the membership chain, signed entry by entry back to
//!   the fleet's start, which every host pins ([`trust`]).
//! - `grant/<id>/<recipient>`: the fleet's grant key of an era (entry 0
//!   or a removal names its id), age-encrypted to one member ([`grant`]).
//! - `keyring/<scope>`: the scope's fleet key, sealed once under the grant
//!   key (in a fleet made before grant keys: once per member, each copy
//!   age-encrypted to that member); with the key's epoch and fingerprint,
//!   signed by a member.
//! - `index/<scope>/<shard>`: one of the 65,536 shards (4,096 in fleets
//!   made before entry 0 recorded the count) of the scope's
//!   index (which shard a secret is in is a hash of scope and name): for
//!   each secret of the shard its record version, object id and digest,
//!   length, times and data key (wrapped under the fleet key), plus the
//!   shard's counter;
//!   authenticated by an HMAC under the fleet key over scope, shard and
//!   body.
//! - `obj/<object-id>`: a value, AES-256-GCM under its data key, with the
//!   scope, key and record version as associated data.
//!
//! Every write is one etcd transaction that checks the revisions it read
//! of the keyring and of its shard (compare-and-swap) and replaces shard
//! and object together; a writer that loses the race reads again and
//! retries, and writers of other shards never race it. Each host remembers
//! the highest counter it has verified per shard and refuses an older
//! shard, so a rolled-back or replayed record is noticed; a shard it has
//! seen that is gone is tampering. A rotation writes a keyring that
//! carries the keys it replaced, sealed under the new one, moves every
//! shard to the new key, one write each, then drops them. Records
//! this host has read are kept, as stored (sealed), in a local cache that
//! serves reads while etcd is unreachable.
//!
//! The host's age identity, signing key, etcd credentials and trust pins
//! live in the host's own local vault, in the reserved scope
//! `principal:sealfs-fleet`.

mod audience;
mod cache;
mod error;
pub mod etcd;
mod grant;
pub mod keys;
mod local;
mod members;
mod memo;
mod records;
mod trust;
mod verify;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde::Serialize;

use crate::clock::now_ms;
use crate::{SensitiveBytes, Vault, VaultRef, VaultScope};
use cache::Cache;
pub(crate) use error::corrupt;
pub use error::FleetError;
use etcd::{Change, Expect, Record};
pub use etcd::{EtcdOptions, EtcdSpace, EtcdStore, EtcdTls};
use keys::{DataKey, FleetKey, HostIdentity};
pub use local::{
    host_card, host_etcd_user, host_identity, login_of_token, password_ref, store_credentials,
    store_tls, stored_credentials, stored_tls, ETCD_PASSWORD_KEY, ETCD_TLS_KEY_KEY, ETCD_USER_KEY,
};
use memo::Memo;
use records::{EntryRecord, Keyring, KeyringUse, ShardBody};
pub use trust::HostCard;
use trust::{FleetPin, HostSigner, Membership, ScopePin};

/// Attempts of a write that keeps losing compare-and-swap races.
const MAX_ATTEMPTS: u32 = 50;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Metadata of a fleet secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetEntry {
    /// The ref the secret is stored under.
    pub vault_ref: VaultRef,
    /// Length of the value, in bytes.
    pub len: u64,
    /// The counter of the secret's index shard at the write that stored
    /// the value (it grows at every write of the secret).
    pub version: u64,
    /// When the secret was first stored; replacing it keeps this time.
    pub created: SystemTime,
    /// When the value was last written.
    pub updated: SystemTime,
    /// Read-once: the first read consumes it ([`FleetVault::read_secret`]).
    pub once: bool,
}

/// What `sealfs fleet revoke` did.
#[derive(Debug)]
pub struct Revoked {
    /// How many scopes it rotated.
    pub rotated: usize,
    /// The revoked host's own etcd user name (whether or not it had one).
    pub etcd_user: String,
    /// Whether that user was removed (`false`: there was none), or why
    /// that could not be done or told.
    pub etcd_user_removed: Result<bool, FleetError>,
}

/// What `sealfs fleet join` did.
#[derive(Debug)]
pub struct Joined {
    /// Whether this host is a member of the fleet it pinned.
    pub member: bool,
    /// Scopes this host has pinned that have no keyring in etcd, and that
    /// it was not told to forget (with `--replace-pin` only): reads of
    /// them stay refused as tampering.
    pub missing: Vec<VaultScope>,
}

/// What `sealfs fleet recover` did.
#[derive(Debug)]
pub struct Recovered {
    /// The join token other hosts re-pin with.
    pub token: String,
    /// How many scopes it re-keyed.
    pub rekeyed: usize,
    /// As [`Joined::missing`].
    pub missing: Vec<VaultScope>,
}

/// What `sealfs fleet status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct FleetStatus {
    /// The fleet's id (the hash of its first membership entry), which a
    /// new host pins with `sealfs fleet join`.
    pub fleet_id: String,
    /// This host's card (`age1...:<hex>`).
    pub recipient: String,
    /// Whether this host is a member of the fleet.
    pub enrolled: bool,
    /// The cards of the members.
    pub members: Vec<String>,
    /// The number of entries in the membership chain, less one.
    pub chain_seq: u64,
    /// The token a newly enrolled host joins with (`sealfs fleet join`):
    /// the fleet id and the newest chain entry.
    pub join_token: String,
    /// etcd's space and alarms, if this host may ask (not with an etcd
    /// user that lacks the rights).
    pub etcd: Option<EtcdSpace>,
    /// Every scope that has a keyring.
    pub scopes: Vec<ScopeStatus>,
}

/// One scope in a [`FleetStatus`].
#[derive(Debug, Clone, Serialize)]
pub struct ScopeStatus {
    /// The scope's name.
    pub scope: String,
    /// The epoch of the scope's fleet key: 1 at first, one more at every
    /// rotation.
    pub epoch: u64,
    /// The fingerprint of the scope's current fleet key.
    pub key_id: String,
    /// How many secrets the scope holds (0 when this host cannot read it).
    pub secrets: usize,
    /// Whether this host holds a copy of the scope's fleet key.
    pub readable: bool,
    /// The members (age recipients) the scope is granted to, when not
    /// every member (`sealfs fleet grant`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<Vec<String>>,
    /// Why the scope failed its checks (tampering, an unfinished
    /// revocation), if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// A scope's verified keys as read.
#[derive(Clone)]
pub(crate) struct ScopeKeys {
    key: FleetKey,
    keyring: Keyring,
    keyring_rev: Option<i64>,
    /// The newest chain entry of the membership this state was verified
    /// under: a write requires that no entry has joined since.
    chain_seq: u64,
}

/// A scope's keys and every shard of its index, by name.
type ScopeIndex = (ScopeKeys, Vec<(String, ShardState)>);

/// One shard of a scope's index, verified, as read.
#[derive(Clone)]
pub(crate) struct ShardState {
    pub(crate) body: ShardBody,
    /// The key it is under: the scope's, or one a rotation replaced.
    key: FleetKey,
    /// Its revision in etcd (`None`: not there yet; 0: a cached copy).
    rev: Option<i64>,
}

/// The fleet vault: secrets shared by the enrolled hosts through etcd,
/// read from a sealed local cache while etcd is unreachable.
pub struct FleetVault {
    store: EtcdStore,
    /// This host's local vault: its keys and its trust pins.
    local: Vault,
    host: HostIdentity,
    signer: HostSigner,
    cache: Cache,
    max_value_size: usize,
    memo: Mutex<Memo>,
    /// The membership as last verified, and the pins as last read.
    trust: Mutex<Trust>,
    /// How long after etcd was last reached cached copies may be served.
    max_offline_age: Duration,
    /// When this process last recorded reaching etcd (ms since the epoch).
    contact_ms: std::sync::atomic::AtomicU64,
    /// How many hex digits name an index shard in this fleet, once read
    /// from its verified chain (fixed when the fleet was made).
    shard_hex: std::sync::OnceLock<u8>,
}

/// One write in this many revisions compacts etcd's history.
pub const COMPACT_EVERY: i64 = 1000;
/// How many revisions of history a compaction keeps (a watch further
/// behind starts afresh from a full read).
pub const HISTORY_KEPT: i64 = 1000;

/// The default of `--max-offline-age`: a day.
pub const DEFAULT_MAX_OFFLINE_AGE: Duration = Duration::from_secs(86_400);

/// What a [`FleetVault`] holds of the fleet's trust between calls.
#[derive(Default)]
struct Trust {
    membership: Option<Membership>,
    fleet_pin: Option<FleetPin>,
    scope_pins: HashMap<VaultScope, Option<ScopePin>>,
    /// Grant keys verified against the id the chain names, by id.
    grant_keys: HashMap<String, FleetKey>,
}

impl std::fmt::Debug for FleetVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetVault")
            .field("etcd", self.store.options())
            .field("host", &self.host)
            .finish()
    }
}

impl FleetVault {
    /// [`FleetVault::open`] with the sealed cache in its usual place, the
    /// `fleet-cache` directory of the local vault.
    pub fn open_beside(
        local: Vault,
        opts: EtcdOptions,
        max_value_size: usize,
    ) -> Result<Self, FleetError> {
        let cache_dir = local.dir().join("fleet-cache");
        Self::open(local, opts, cache_dir, max_value_size)
    }

    /// Opens the fleet vault of this host: `local` holds its identity and
    /// `cache_dir` its sealed copies of records.
    pub fn open(
        local: Vault,
        mut opts: EtcdOptions,
        cache_dir: PathBuf,
        max_value_size: usize,
    ) -> Result<Self, FleetError> {
        let host = host_identity(&local)?;
        let signer = local::host_signer(&local)?;
        if opts.credentials.is_none() {
            opts.credentials = stored_credentials(&local)?;
        }
        if opts.tls.is_none() {
            opts.tls = stored_tls(&local)?;
        }
        let cache = Cache::open(cache_dir, &opts.prefix)?;
        Ok(FleetVault {
            store: EtcdStore::new(opts)?,
            local,
            host,
            signer,
            cache,
            max_value_size,
            memo: Mutex::new(Memo::default()),
            trust: Mutex::new(Trust::default()),
            max_offline_age: DEFAULT_MAX_OFFLINE_AGE,
            contact_ms: std::sync::atomic::AtomicU64::new(0),
            shard_hex: std::sync::OnceLock::new(),
        })
    }

    /// Keeps etcd's history bounded: the write committed at a multiple of
    /// [`COMPACT_EVERY`] revisions (one write in that many, whichever host
    /// made it) compacts away all but the last [`HISTORY_KEPT`]. A failure
    /// is logged; the write stands.
    fn compact_now_and_then(&self, revision: i64) {
        if revision % COMPACT_EVERY != 0 || revision <= HISTORY_KEPT {
            return;
        }
        if let Err(e) = self.store.compact_to(revision - HISTORY_KEPT, false) {
            tracing::warn!(error = %e, revision, "cannot compact etcd's history");
        }
    }

    /// `sealfs fleet compact`: compacts etcd's history to now, defragments
    /// every endpoint and clears the NOSPACE alarm, so an etcd at its quota
    /// takes writes again; etcd's space before and after. Needs etcd's
    /// root rights where auth is on.
    pub fn compact(&self) -> Result<(EtcdSpace, EtcdSpace), FleetError> {
        let before = self.store.space()?;
        self.store.compact_to(self.store.revision()?, true)?;
        self.store.defragment_and_disarm()?;
        Ok((before, self.store.space()?))
    }

    /// Sends the transaction a [`etcd::TxnFault::HoldBack`] held back,
    /// late (tests only): whether it committed.
    #[doc(hidden)]
    pub fn deliver_held_back(&self) -> Result<bool, FleetError> {
        self.store.deliver_held_back()
    }

    /// Makes the next etcd transaction meet `fault`, then runs `after`
    /// (tests only).
    #[doc(hidden)]
    pub fn inject_txn_fault(&self, fault: etcd::TxnFault, after: Option<Box<dyn FnOnce() + Send>>) {
        self.store.inject_txn_fault(fault, after);
    }

    /// Serves cached copies for at most `age` after etcd was last reached
    /// (zero: never); [`DEFAULT_MAX_OFFLINE_AGE`] unless set.
    pub fn with_max_offline_age(mut self, age: Duration) -> Self {
        self.max_offline_age = age;
        self
    }

    /// Notes that etcd answered: recorded in the cache at most once a
    /// second, so an offline read in any process knows how stale it is.
    pub(super) fn reached_etcd(&self) -> Result<(), FleetError> {
        use std::sync::atomic::Ordering;
        let now = now_ms();
        if now.saturating_sub(self.contact_ms.load(Ordering::Relaxed)) >= 1000 {
            self.contact_ms.store(now, Ordering::Relaxed);
            self.cache.set_contact(now)?;
        }
        Ok(())
    }

    /// Refuses to serve from the cache once etcd has been out of reach for
    /// longer than `--max-offline-age`.
    pub(super) fn check_offline_age(&self) -> Result<(), FleetError> {
        let last = self.cache.contact()?;
        let age = Duration::from_millis(now_ms().saturating_sub(last));
        if last == 0 || age > self.max_offline_age {
            return Err(FleetError::TooStale {
                since: if last == 0 {
                    "never".into()
                } else {
                    crate::clock::rfc3339(UNIX_EPOCH + Duration::from_millis(last), false)
                },
                max_secs: self.max_offline_age.as_secs(),
            });
        }
        Ok(())
    }

    /// This host's age recipient (`age1...`).
    pub fn recipient(&self) -> String {
        self.host.recipient()
    }

    /// This host's card (`age1...:<hex>`), its name in the fleet.
    pub fn card(&self) -> HostCard {
        HostCard {
            recipient: self.host.recipient(),
            signing_key: self.signer.public_hex(),
        }
    }

    fn chain_key(&self, seq: u64) -> String {
        self.store.key(&format!("chain/{seq:020}"))
    }

    fn keyring_key(&self, scope: &VaultScope) -> String {
        self.store.key(&format!("keyring/{scope}"))
    }

    fn shard_key(&self, scope: &VaultScope, shard: &str) -> String {
        self.store.key(&format!("index/{scope}/{shard}"))
    }

    fn index_prefix(&self, scope: &VaultScope) -> String {
        self.store.key(&format!("index/{scope}/"))
    }

    fn object_key(&self, id: &str) -> String {
        self.store.key(&format!("obj/{id}"))
    }

    /// Reads `key` from etcd; while etcd is unreachable, the cached copy.
    /// What is read is cached by the caller once verified ([`Self::keep`]),
    /// so an etcd writer cannot replace good cached copies with bad ones.
    fn read(&self, key: &str, offline_ok: bool) -> Result<Option<Record>, FleetError> {
        match self.store.get(key) {
            Ok(got) => {
                self.reached_etcd()?;
                Ok(got)
            }
            Err(FleetError::Unreachable { .. }) if offline_ok => {
                let value = self
                    .cache
                    .get(key)?
                    .ok_or_else(|| FleetError::NotCached(key.to_owned()))?;
                self.check_offline_age()?;
                Ok(Some(Record {
                    value,
                    mod_revision: 0,
                    create_revision: 0,
                }))
            }
            Err(e) => Err(e),
        }
    }

    /// Keeps a verified record from etcd in the cache (a cached copy read
    /// back has no revision, and is there already).
    fn keep(&self, key: &str, rec: &Record) -> Result<(), FleetError> {
        if rec.mod_revision != 0 {
            self.cache.put(key, &rec.value)?;
        }
        Ok(())
    }

    /// The index shard of `key` in `scope`, named as this fleet names them
    /// (its entry 0 fixes how: [`keys::shard_in`]).
    pub(super) fn shard_name(&self, scope: &VaultScope, key: &str) -> Result<String, FleetError> {
        Ok(keys::shard_in(scope, key, self.shard_hex()?))
    }

    /// How many hex digits name an index shard in this fleet.
    pub(super) fn shard_hex(&self) -> Result<u8, FleetError> {
        if let Some(hex) = self.shard_hex.get() {
            return Ok(*hex);
        }
        // Entry 0 never changes, and its hash is the fleet id this host
        // pinned: the cached copy, checked against the pin, answers
        // without a round trip to etcd (a CLI call pays for one process).
        let pinned = match self.fleet_pin()? {
            Some(pin) => self
                .cache
                .get(&self.chain_key(0))?
                .and_then(|raw| Membership::genesis(&pin.fleet_id, &raw).ok()),
            None => None,
        };
        let hex = match pinned {
            Some(m) => m.shard_hex,
            None => self.membership(true)?.shard_hex,
        };
        Ok(*self.shard_hex.get_or_init(|| hex))
    }

    /// After a write committed at `revision`: etcd's history compacted
    /// now and then, what this process holds of the fleet dropped, and for
    /// each shard it wrote (scope, the keys it was written under, shard,
    /// counter, bytes) the counter recorded and the shard kept in the
    /// cache; a keyring the write made is pinned ([`Self::pin_made_keyring`]).
    fn after_commit(
        &self,
        revision: i64,
        written: &[(&VaultScope, &ScopeKeys, &str, u64, &[u8])],
    ) -> Result<(), FleetError> {
        self.compact_now_and_then(revision);
        self.reset_memo_scopes();
        for &(scope, keys, shard, counter, encoded) in written {
            self.pin_made_keyring(scope, keys);
            self.cache.set_high_water(
                scope,
                shard,
                (counter, keys.keyring.epoch),
                keys.keyring.recovered,
            )?;
            self.cache.put(&self.shard_key(scope, shard), encoded)?;
        }
        Ok(())
    }

    /// After a write that stored `keys`' keyring, new (the scope's first
    /// write): this host pins it as it would a keyring it read, so that its
    /// going missing is tampering here too. The write has committed: a pin
    /// that cannot be stored is logged, never reported as the write
    /// failing (the next read of the keyring pins it).
    fn pin_made_keyring(&self, scope: &VaultScope, keys: &ScopeKeys) {
        if keys.keyring_rev.is_none() {
            if let Err(e) = self.store_scope_pin(scope, &keys.keyring) {
                tracing::warn!(%scope, error = %e, "cannot pin the keyring this write made");
            }
        }
    }

    /// The verified keys of `scope`. `create`: a scope with no keyring yet
    /// gets a fresh key for every member (a write will store it).
    fn scope_keys(
        &self,
        scope: &VaultScope,
        create: bool,
        offline_ok: bool,
    ) -> Result<Option<ScopeKeys>, FleetError> {
        // A keyring read just before another process of this host pinned a
        // newer one looks older than the pin: one more look, with the pins
        // read afresh, settles that.
        match self.scope_keys_once(scope, create, offline_ok) {
            Err(FleetError::Forged(_)) => {
                self.trust().scope_pins.remove(scope);
                self.scope_keys_once(scope, create, offline_ok)
            }
            other => other,
        }
    }

    fn scope_keys_once(
        &self,
        scope: &VaultScope,
        create: bool,
        offline_ok: bool,
    ) -> Result<Option<ScopeKeys>, FleetError> {
        let m = self.membership(offline_ok)?;
        // Read before etcd, as a shard's counter ([`Self::read_shard`]).
        let pinned = self.scope_pin(scope)?;
        let (keyring, key, keyring_rev) = match self.read(&self.keyring_key(scope), offline_ok)? {
            Some(rec) => {
                let (ring, key) = self.parse_keyring(scope, &rec, &m, KeyringUse::Current)?;
                self.keep(&self.keyring_key(scope), &rec)?;
                (ring, key, Some(rec.mod_revision))
            }
            None => {
                // A keyring this host has seen does not disappear.
                if let Some(pin) = pinned {
                    return Err(FleetError::Forged(format!(
                        "the keyring of {scope}: it is missing, and this host has seen its key epoch {}",
                        pin.epoch
                    )));
                }
                if !create {
                    return Ok(None);
                }
                self.require_member(&m)?;
                // Sealed under this host's copy of the grant key as etcd
                // holds it now, not one held in memory since (whose wraps
                // may be gone).
                if let Some(id) = m.grant() {
                    self.trust().grant_keys.remove(id);
                }
                let key = FleetKey::generate();
                let ring = self.new_keyring(scope, &key, 1, &m)?;
                (ring, key, None)
            }
        };
        Ok(Some(ScopeKeys {
            key,
            keyring,
            keyring_rev,
            chain_seq: m.seq(),
        }))
    }

    /// Shard `shard` of `scope`, verified under `keys`; an empty one if etcd
    /// has none and this host never saw it. `Ok(None)`: it does not
    /// authenticate under `keys` (read across a rotation, or forged).
    fn read_shard(
        &self,
        scope: &VaultScope,
        keys: &ScopeKeys,
        shard: &str,
        offline_ok: bool,
        replay_ok: bool,
    ) -> Result<Option<ShardState>, FleetError> {
        let k = self.shard_key(scope, shard);
        // Read before etcd: a counter another thread or process of this
        // host records after this read began may be of a shard this read
        // was too early to see. One recorded before it began was committed
        // before it, so a (linearizable) read that misses it is a rollback.
        let seen = self.seen_counter(scope, shard, &keys.keyring)?;
        let Some(rec) = self.read(&k, offline_ok)? else {
            // A shard this host has seen does not disappear: an emptied one
            // stays, empty.
            if seen > 0 && !replay_ok {
                return Err(FleetError::Forged(format!(
                    "shard {shard} of the index of {scope}: it is missing, and this host has seen its counter {seen}"
                )));
            }
            // Seen only since the read began: this read may have been too
            // early, or the shard was deleted just after; another look
            // (the caller's) tells which.
            let since = self.seen_counter(scope, shard, &keys.keyring)?;
            if since > 0 && !replay_ok {
                return Err(FleetError::Replay {
                    scope: scope.clone(),
                    shard: shard.to_owned(),
                    seen: since,
                    got: 0,
                });
            }
            return Ok(Some(ShardState {
                body: ShardBody {
                    epoch: keys.keyring.epoch,
                    ..ShardBody::default()
                },
                key: keys.key.clone(),
                rev: None,
            }));
        };
        let Some((body, key)) = self.parse_shard(scope, shard, keys, &rec, (replay_ok, true))?
        else {
            return Ok(None);
        };
        self.keep(&k, &rec)?;
        Ok(Some(ShardState {
            body,
            key,
            rev: Some(rec.mod_revision),
        }))
    }

    /// The verified keys of `scope` and its shard `shard`. Keyring and
    /// shard are two reads: a rotation in between shows as a shard that
    /// does not authenticate, and another look settles it. Likewise a read
    /// that raced another writer of this host can be older than the counter
    /// that writer just recorded: only a shard that stays older is a replay.
    fn scope_shard(
        &self,
        scope: &VaultScope,
        shard: &str,
        create: bool,
        offline_ok: bool,
    ) -> Result<Option<(ScopeKeys, ShardState)>, FleetError> {
        let mut last = FleetError::Integrity(format!("shard {shard} of the index of {scope}"));
        for _ in 0..5 {
            let Some(keys) = self.scope_keys(scope, create, offline_ok)? else {
                return Ok(None);
            };
            match self.read_shard(scope, &keys, shard, offline_ok, false) {
                Ok(Some(st)) => return Ok(Some((keys, st))),
                Ok(None) => {}
                Err(e @ FleetError::Replay { .. }) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Every shard of `scope` that etcd holds (`replay_ok`: `fleet recover`
    /// takes restored ones over), verified, with their names; `None` if the
    /// scope has no keyring. A shard this host has seen that is not among
    /// them is tampering.
    fn scope_shards(
        &self,
        scope: &VaultScope,
        offline_ok: bool,
        replay_ok: bool,
    ) -> Result<Option<ScopeIndex>, FleetError> {
        self.scope_shards_with(scope, (offline_ok, replay_ok), None)
    }

    /// [`Self::scope_shards`]; with `refused`, a shard that is refused
    /// (forged, or not authenticating under keys that stay the same) is
    /// described there and left out rather than failing the whole.
    fn scope_shards_with(
        &self,
        scope: &VaultScope,
        (offline_ok, replay_ok): (bool, bool),
        mut refused: Option<&mut Vec<String>>,
    ) -> Result<Option<ScopeIndex>, FleetError> {
        let mut last = FleetError::Integrity(format!("the index of {scope}"));
        'look: for _ in 0..5 {
            let Some(keys) = self.scope_keys(scope, false, offline_ok)? else {
                return Ok(None);
            };
            // Read before the shards: a shard first seen by another process
            // of this host after this read may be missing from a read made
            // before it.
            let seen = self.cache.seen_shards(scope, self.shard_hex()?)?;
            let prefix = self.index_prefix(scope);
            let records = match self.store.get_prefix(&prefix) {
                Ok(records) => {
                    self.reached_etcd()?;
                    records
                }
                Err(FleetError::Unreachable { .. }) if offline_ok => {
                    let mut out = Vec::new();
                    for shard in &seen {
                        let k = self.shard_key(scope, shard);
                        let value = self
                            .cache
                            .get(&k)?
                            .ok_or_else(|| FleetError::NotCached(k.clone()))?;
                        out.push((
                            k,
                            etcd::Record {
                                value,
                                mod_revision: 0,
                                create_revision: 0,
                            },
                        ));
                    }
                    self.check_offline_age()?;
                    out
                }
                Err(e) => return Err(e),
            };
            let mut shards = Vec::with_capacity(records.len());
            // Refused and left out (with `refused`), but there.
            let mut left_out = Vec::new();
            // Verified records (etcd key, bytes), kept together once all
            // are read, with their counters: one flush, not two per shard.
            let mut kept = Vec::with_capacity(records.len());
            let hex = usize::from(self.shard_hex()?);
            for (k, rec) in records {
                let shard = &k[prefix.len()..];
                if shard.len() != hex || !shard.bytes().all(|b| b.is_ascii_hexdigit()) {
                    tracing::warn!(key = %k.escape_debug(), "ignoring a record that names no shard");
                    continue;
                }
                match self.parse_shard(scope, shard, &keys, &rec, (replay_ok, false)) {
                    Ok(Some((body, key))) => {
                        shards.push((
                            shard.to_owned(),
                            ShardState {
                                body,
                                key,
                                rev: Some(rec.mod_revision),
                            },
                        ));
                        if rec.mod_revision != 0 {
                            kept.push((k, rec.value));
                        }
                    }
                    Ok(None) => match refused.as_deref_mut() {
                        Some(out) => {
                            out.push(format!(
                                "shard {shard} of the index of {scope} does not authenticate"
                            ));
                            left_out.push(shard.to_owned());
                        }
                        None => continue 'look,
                    },
                    Err(e @ FleetError::Replay { .. }) if refused.is_none() => {
                        last = e;
                        continue 'look;
                    }
                    Err(e @ (FleetError::Forged(_) | FleetError::Replay { .. }))
                        if refused.is_some() =>
                    {
                        if let Some(out) = refused.as_deref_mut() {
                            out.push(e.to_string());
                        }
                        left_out.push(shard.to_owned());
                    }
                    Err(e) => return Err(e),
                }
            }
            if !replay_ok {
                let counters: Vec<(&str, u64)> = shards
                    .iter()
                    .map(|(name, st)| (name.as_str(), st.body.counter))
                    .collect();
                self.cache.set_high_waters(
                    scope,
                    &counters,
                    keys.keyring.epoch,
                    keys.keyring.recovered,
                )?;
            }
            let kept: Vec<(&str, &[u8])> = kept
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect();
            self.cache.put_many(&kept)?;
            if !replay_ok {
                // A set: a listing of a large scope has tens of thousands
                // of shards, seen and read.
                let have: std::collections::HashSet<&str> = shards
                    .iter()
                    .map(|(name, _)| name.as_str())
                    .chain(left_out.iter().map(String::as_str))
                    .collect();
                for gone in seen.iter().filter(|s| !have.contains(s.as_str())) {
                    let counter = self.seen_counter(scope, gone, &keys.keyring)?;
                    if counter > 0 {
                        return Err(FleetError::Forged(format!(
                            "shard {gone} of the index of {scope}: it is missing, and this host has seen its counter {counter}"
                        )));
                    }
                }
            }
            return Ok(Some((keys, shards)));
        }
        Err(last)
    }

    fn expect(key: String, rev: Option<i64>) -> (String, Expect) {
        (key, rev.map_or(Expect::Absent, Expect::Revision))
    }

    /// Runs `attempt` until its transaction applies, re-reading each time.
    fn retry<T>(
        &self,
        what: &str,
        mut attempt: impl FnMut() -> Result<Option<T>, FleetError>,
    ) -> Result<T, FleetError> {
        for n in 0..MAX_ATTEMPTS {
            if let Some(done) = attempt()? {
                return Ok(done);
            }
            // Lost a race: back off a little, with jitter, and read again.
            let mut b = [0u8; 1];
            let _ = getrandom::fill(&mut b);
            std::thread::sleep(Duration::from_millis(
                u64::from(n.min(10)) * 2 + u64::from(b[0] % 8),
            ));
        }
        Err(FleetError::Conflict(what.to_owned()))
    }

    /// Stores `value` under `r`, replacing any value there; refuses an empty
    /// value. A scope's first secret creates its fleet key.
    pub fn put(&self, r: &VaultRef, value: &SensitiveBytes) -> Result<FleetEntry, FleetError> {
        if value.is_empty() {
            return Err(FleetError::EmptyValue(r.clone()));
        }
        self.put_any(r, value)
    }

    /// As [`FleetVault::put`], an empty value included (the mount stores
    /// what a file emptied with `: > key` holds).
    pub fn put_any(&self, r: &VaultRef, value: &SensitiveBytes) -> Result<FleetEntry, FleetError> {
        self.put_if(r, value, None)
    }

    /// As [`FleetVault::put_any`], and only if the slot is as `condition`
    /// says (compare-and-swap): the check is made on the state the write's
    /// own transaction requires unchanged, so no other write comes between.
    pub fn put_if(
        &self,
        r: &VaultRef,
        value: &SensitiveBytes,
        condition: Option<crate::Expected>,
    ) -> Result<FleetEntry, FleetError> {
        self.put_with(r, value, condition, false)
    }

    /// As [`FleetVault::put_if`]; `once`: a read-once secret, which the
    /// first [`FleetVault::read_secret`] consumes.
    pub fn put_with(
        &self,
        r: &VaultRef,
        value: &SensitiveBytes,
        condition: Option<crate::Expected>,
        once: bool,
    ) -> Result<FleetEntry, FleetError> {
        if value.len() > self.max_value_size {
            return Err(FleetError::TooLarge {
                vault_ref: r.clone(),
                len: value.len(),
                max: self.max_value_size,
            });
        }
        let scope = r.scope();
        let key_name = r.key().as_str().to_owned();
        let shard = self.shard_name(scope, &key_name)?;
        let shard_key = self.shard_key(scope, &shard);
        self.retry(&r.to_string(), || {
            let (sk, mut st) = self
                .scope_shard(scope, &shard, true, false)?
                .expect("created on demand");
            let expect = [
                Self::expect(self.keyring_key(scope), sk.keyring_rev),
                Self::expect(shard_key.clone(), st.rev),
                // Written under the membership as verified: no entry may
                // join the chain before it is stored, or a revocation
                // running now could miss this write's key, and an
                // enrolment could miss a new scope.
                (self.chain_key(sk.chain_seq + 1), Expect::Absent),
            ];
            let mut changes = Vec::new();
            if sk.keyring_rev.is_none() {
                changes.push(Change::Put(
                    self.keyring_key(scope),
                    self.sign_keyring(&sk.keyring),
                ));
            }
            // A shard still under a key a rotation replaced moves to the
            // current key now.
            Self::rewrap_shard(scope, &mut st.body, &st.key, &sk.key, sk.keyring.epoch)?;
            // What fences this write if its answer is lost: the shard as
            // read, one counter on, under the current key.
            let fence = st.rev.map(|_| {
                let mut b = st.body.clone();
                b.counter = b.counter.saturating_add(1);
                Self::encode_shard(scope, &shard, &sk.key, &b)
            });
            let body = &mut st.body;
            if let Some(expected) = condition {
                let found = body.entries.get(&key_name).map(|e| e.version);
                if !expected.holds(found) {
                    return Err(FleetError::NotAsExpected {
                        vault_ref: r.clone(),
                        expected,
                        found,
                    });
                }
            }
            body.counter = next_counter(scope, &shard, body.counter)?;
            let version = body.counter;
            let dek = DataKey::generate();
            let object = keys::random_object_id();
            let now = now_ms();
            let previous = body.entries.get(&key_name).cloned();
            let created_ms = previous.as_ref().map_or(now, |p| p.created_ms);
            body.entries.insert(
                key_name.clone(),
                EntryRecord {
                    version,
                    object: object.clone(),
                    dek: b64().encode(sk.key.wrap_data_key(&dek, r, version, body.epoch)),
                    sha256: String::new(),
                    len: value.len() as u64,
                    created_ms,
                    updated_ms: now,
                    once,
                },
            );
            let sealed = dek.seal(r, version, value);
            if let Some(e) = body.entries.get_mut(&key_name) {
                e.sha256 = keys::object_digest(&sealed);
            }
            changes.push(Change::Put(self.object_key(&object), sealed.clone()));
            let encoded = Self::encode_shard(scope, &shard, &sk.key, body);
            changes.push(Change::Put(shard_key.clone(), encoded.clone()));
            if let Some(p) = &previous {
                changes.push(Change::Delete(self.object_key(&p.object)));
            }
            let at = (shard.as_str(), st.rev, fence.as_deref());
            let Some(revision) = self.apply_settled((&expect, &changes), r, &sk, at, &object)?
            else {
                return Ok(None);
            };
            self.after_commit(revision, &[(scope, &sk, &shard, version, &encoded)])?;
            // A read-once value is never kept for offline reads, not even
            // by its writer.
            if !once {
                self.cache.put(&self.object_key(&object), &sealed)?;
            }
            Ok(Some(FleetEntry {
                vault_ref: r.clone(),
                len: value.len() as u64,
                version,
                created: UNIX_EPOCH + Duration::from_millis(created_ms),
                updated: UNIX_EPOCH + Duration::from_millis(now),
                once,
            }))
        })
    }

    /// Applies a write that stores `object` as `r` in `shard` (on the keys
    /// `sk`, the shard as read at `shard_rev`, `fence` as for
    /// [`Self::settle`]): the revision it committed at, or `None` if it did
    /// not (lost a race, or sent with no answer and settled as not
    /// committed, and now never to be): the caller tries again from a
    /// fresh read.
    fn apply_settled(
        &self,
        (expect, changes): (&[(String, Expect)], &[Change]),
        r: &VaultRef,
        sk: &ScopeKeys,
        (shard, shard_rev, fence): (&str, Option<i64>, Option<&[u8]>),
        object: &str,
    ) -> Result<Option<i64>, FleetError> {
        match self.store.apply_at(expect, changes) {
            Err(FleetError::NoAnswer { .. }) => {
                let landed = |rec: &Record| {
                    Self::shard_names(r.scope(), shard, &sk.key, rec, r.key().as_str(), object)
                };
                self.settle(r, sk, (shard, shard_rev, fence), &landed, "stored")
            }
            other => other,
        }
    }

    /// A write of `r` (on the keys `sk` and the shard revision `shard_rev`
    /// it was checked against) that was sent with no answer: re-reads
    /// until etcd answers, within three time limits. The shard as the
    /// write left it (`landed`: for a put, its object named in the shard,
    /// verified under the scope's key): it committed,
    /// and the shard's revision is returned. Else, everything the write
    /// required still as it was: that is fenced (`fence`, the shard as read
    /// one counter on under the current key, written under the same
    /// requirements), so the write can never commit,
    /// and `None` is returned (the caller tries again). Something the write
    /// required gone (the chain or the keyring moved on): it cannot commit,
    /// `None`. Otherwise, or with etcd still away: [`FleetError::Ambiguous`]
    /// (whether `r` was `done`).
    fn settle(
        &self,
        r: &VaultRef,
        sk: &ScopeKeys,
        (shard, shard_rev, fence): (&str, Option<i64>, Option<&[u8]>),
        landed: &dyn Fn(&Record) -> bool,
        done: &'static str,
    ) -> Result<Option<i64>, FleetError> {
        let scope = r.scope();
        let shard_key = self.shard_key(scope, shard);
        let keyring_key = self.keyring_key(scope);
        let chain_next = self.chain_key(sk.chain_seq + 1);
        let deadline = std::time::Instant::now() + self.store.options().timeout * 3;
        let ambiguous = |why: String| FleetError::Ambiguous {
            vault_ref: r.clone(),
            done,
            why,
        };
        enum Settled {
            Committed(i64),
            CannotCommit,
            LookAgain,
        }
        loop {
            let attempt = || -> Result<Settled, FleetError> {
                let current = self.store.get(&shard_key)?;
                if let Some(rec) = current.as_ref().filter(|rec| landed(rec)) {
                    return Ok(Settled::Committed(rec.mod_revision));
                }
                if current.as_ref().map(|c| c.mod_revision) != shard_rev {
                    return Err(ambiguous(
                        "another write has replaced its index shard since, so whether this one landed first is not known".into(),
                    ));
                }
                let (Some(rec), Some(fence)) = (current, fence) else {
                    return Err(ambiguous(
                        "it was its index shard's first write, and is not there yet".into(),
                    ));
                };
                let fenced = self.store.apply(
                    &[
                        (shard_key.clone(), Expect::Revision(rec.mod_revision)),
                        Self::expect(keyring_key.clone(), sk.keyring_rev),
                        (chain_next.clone(), Expect::Absent),
                    ],
                    &[Change::Put(shard_key.clone(), fence.to_vec())],
                )?;
                if fenced {
                    return Ok(Settled::CannotCommit);
                }
                // The fence lost: if the keyring or the chain moved on, the
                // write (which required them unchanged too) cannot commit.
                let ring_now = self.store.get(&keyring_key)?.map(|k| k.mod_revision);
                let chain_moved = self.store.get(&chain_next)?.is_some();
                if chain_moved || ring_now != sk.keyring_rev {
                    return Ok(Settled::CannotCommit);
                }
                Ok(Settled::LookAgain)
            };
            match attempt() {
                Ok(Settled::Committed(rev)) => return Ok(Some(rev)),
                Ok(Settled::CannotCommit) => return Ok(None),
                Ok(Settled::LookAgain) => {}
                Err(FleetError::Unreachable { .. } | FleetError::NoAnswer { .. })
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e @ FleetError::Ambiguous { .. }) => return Err(e),
                // Whatever else etcd says now, the write may have landed.
                Err(e) => return Err(ambiguous(format!("it was sent, and then: {e}"))),
            }
        }
    }

    /// The value of `r`; from the local sealed cache while etcd is
    /// unreachable. A read-once secret is consumed ([`FleetVault::read_secret`]).
    pub fn get(&self, r: &VaultRef) -> Result<SensitiveBytes, FleetError> {
        self.read_secret(r).map(|(value, _)| value)
    }

    /// The value of `r`, and whether this read consumed it: a read-once
    /// secret is returned only to the one read whose removal of it
    /// commits (a compare-and-swap on its shard and version), so two
    /// hosts reading it at once never both get it; and never from the
    /// cache, since it cannot be removed while etcd is away.
    pub fn read_secret(&self, r: &VaultRef) -> Result<(SensitiveBytes, bool), FleetError> {
        for _ in 0..MAX_ATTEMPTS {
            let (value, once) = self.open_value(r)?;
            let Some(version) = once else {
                return Ok((value, false));
            };
            match self.delete_version(r, Some(version)) {
                Ok(()) => return Ok((value, true)),
                // Consumed by another read, or written again since: what
                // is there now (if anything) is the answer.
                Err(FleetError::NotFound(_)) => self.reset_memo_scopes(),
                // Whether it was removed is unknown: not served (it may be
                // gone, and then no read gets it).
                Err(e) => return Err(e),
            }
        }
        Err(FleetError::Conflict(r.to_string()))
    }

    /// The value of `r`, and its version if it is read-once.
    fn open_value(&self, r: &VaultRef) -> Result<(SensitiveBytes, Option<u64>), FleetError> {
        let shard = self.shard_name(r.scope(), r.key().as_str())?;
        for _ in 0..MAX_ATTEMPTS {
            let st = self
                .shard_for_read(r.scope(), &shard)?
                .ok_or_else(|| FleetError::NotFound(r.clone()))?;
            let e = st
                .body
                .entries
                .get(r.key().as_str())
                .ok_or_else(|| FleetError::NotFound(r.clone()))?;
            // A concurrent rewrite may delete the object we were told about:
            // read the shard again.
            let Some(value) = self.open_entry(r, &st, e)? else {
                self.reset_memo_scopes();
                continue;
            };
            return Ok((value, e.once.then_some(e.version)));
        }
        Err(FleetError::Conflict(r.to_string()))
    }

    /// The value the entry `e` of `r` in the shard `st` names; `None` if
    /// its object is gone (rewritten since the shard was read).
    fn open_entry(
        &self,
        r: &VaultRef,
        st: &ShardState,
        e: &EntryRecord,
    ) -> Result<Option<SensitiveBytes>, FleetError> {
        let Some((obj, from_etcd)) = self.object_for_read(&e.object)? else {
            return Ok(None);
        };
        if keys::object_digest(&obj) != e.sha256 {
            return Err(FleetError::Integrity(r.to_string()));
        }
        let wrapped = b64().decode(&e.dek).map_err(|e| corrupt("data key", e))?;
        let dek = st
            .key
            .unwrap_data_key(&wrapped, r, e.version, st.body.epoch)
            .ok_or_else(|| FleetError::Integrity(r.to_string()))?;
        let value = dek
            .open(r, e.version, &obj)
            .ok_or_else(|| FleetError::Integrity(r.to_string()))?;
        // A read-once value is never kept for offline reads.
        if from_etcd && !e.once {
            self.cache.put(&self.object_key(&e.object), &obj)?;
        }
        Ok(Some(value))
    }

    /// Moves the secret at `from` to `to`, replacing any secret there
    /// unless `no_replace` ([`FleetError::NotAsExpected`] then): one
    /// transaction that takes it out of its shard and puts its value,
    /// sealed anew for its new name (the name is bound into a secret's
    /// encryption), into the other's, on both shards and keyrings as read.
    /// It keeps its creation and update times and whether it is
    /// read-once; reading it to move it does not consume it.
    pub fn rename(
        &self,
        from: &VaultRef,
        to: &VaultRef,
        no_replace: bool,
    ) -> Result<FleetEntry, FleetError> {
        let shard_of = |r: &VaultRef| self.shard_name(r.scope(), r.key().as_str());
        let (from_shard, to_shard) = (shard_of(from)?, shard_of(to)?);
        let same = from.scope() == to.scope() && from_shard == to_shard;
        self.retry(&from.to_string(), || {
            let Some((fk, mut fs)) = self.scope_shard(from.scope(), &from_shard, false, false)?
            else {
                return Err(FleetError::NotFound(from.clone()));
            };
            Self::rewrap_shard(
                from.scope(),
                &mut fs.body,
                &fs.key,
                &fk.key,
                fk.keyring.epoch,
            )?;
            fs.key = fk.key.clone();
            let Some(old) = fs.body.entries.get(from.key().as_str()).cloned() else {
                return Err(FleetError::NotFound(from.clone()));
            };
            if from == to {
                return Ok(Some(fleet_entry(to.clone(), &old)));
            }
            let Some(value) = self.open_entry(from, &fs, &old)? else {
                return Ok(None);
            };
            let (tk, mut ts) = if same {
                (fk.clone(), fs.clone())
            } else {
                let (tk, mut ts) = self
                    .scope_shard(to.scope(), &to_shard, true, false)?
                    .expect("created on demand");
                Self::rewrap_shard(to.scope(), &mut ts.body, &ts.key, &tk.key, tk.keyring.epoch)?;
                (tk, ts)
            };
            // What fences this rename if its answer is lost: the
            // destination shard as read, one counter on, under its key.
            let fence = ts.rev.map(|_| {
                let mut b = ts.body.clone();
                b.counter = b.counter.saturating_add(1);
                Self::encode_shard(to.scope(), &to_shard, &tk.key, &b)
            });
            let replaced = ts.body.entries.get(to.key().as_str()).cloned();
            if let (true, Some(found)) = (no_replace, &replaced) {
                return Err(FleetError::NotAsExpected {
                    vault_ref: to.clone(),
                    expected: crate::Expected::Absent,
                    found: Some(found.version),
                });
            }
            // Out of the one, into the other (one body if they are one).
            let to_body = &mut ts.body;
            if same {
                to_body.entries.remove(from.key().as_str());
            } else {
                fs.body.entries.remove(from.key().as_str());
                fs.body.counter = next_counter(from.scope(), &from_shard, fs.body.counter)?;
            }
            to_body.counter = next_counter(to.scope(), &to_shard, to_body.counter)?;
            let version = to_body.counter;
            let dek = DataKey::generate();
            let object = keys::random_object_id();
            let sealed = dek.seal(to, version, &value);
            to_body.entries.insert(
                to.key().as_str().to_owned(),
                EntryRecord {
                    version,
                    object: object.clone(),
                    dek: b64().encode(tk.key.wrap_data_key(&dek, to, version, to_body.epoch)),
                    sha256: keys::object_digest(&sealed),
                    len: old.len,
                    created_ms: old.created_ms,
                    updated_ms: old.updated_ms,
                    once: old.once,
                },
            );
            let to_key = self.shard_key(to.scope(), &to_shard);
            let from_key = self.shard_key(from.scope(), &from_shard);
            let mut expect = vec![
                Self::expect(self.keyring_key(to.scope()), tk.keyring_rev),
                Self::expect(to_key.clone(), ts.rev),
                (self.chain_key(tk.chain_seq + 1), Expect::Absent),
            ];
            let mut changes = Vec::new();
            if tk.keyring_rev.is_none() {
                changes.push(Change::Put(
                    self.keyring_key(to.scope()),
                    self.sign_keyring(&tk.keyring),
                ));
            }
            let to_encoded = Self::encode_shard(to.scope(), &to_shard, &tk.key, &ts.body);
            changes.push(Change::Put(self.object_key(&object), sealed.clone()));
            changes.push(Change::Put(to_key.clone(), to_encoded.clone()));
            let mut from_encoded = None;
            if !same {
                // Also within one scope: its keyring was read twice, and a
                // rotation in between must fail the write, not leave the
                // source shard under a key the rotation replaced.
                expect.push(Self::expect(self.keyring_key(from.scope()), fk.keyring_rev));
                expect.push(Self::expect(from_key.clone(), fs.rev));
                if fk.chain_seq != tk.chain_seq {
                    expect.push((self.chain_key(fk.chain_seq + 1), Expect::Absent));
                }
                let encoded = Self::encode_shard(from.scope(), &from_shard, &fk.key, &fs.body);
                changes.push(Change::Put(from_key.clone(), encoded.clone()));
                from_encoded = Some(encoded);
            }
            changes.push(Change::Delete(self.object_key(&old.object)));
            if let Some(p) = &replaced {
                changes.push(Change::Delete(self.object_key(&p.object)));
            }
            // A lost answer is settled as a put's is, on the destination
            // shard (a rename requires it unchanged, so fencing it is
            // enough).
            let at = (to_shard.as_str(), ts.rev, fence.as_deref());
            let Some(revision) = self.apply_settled((&expect, &changes), to, &tk, at, &object)?
            else {
                return Ok(None);
            };
            let mut written = vec![(to.scope(), &tk, to_shard.as_str(), version, &to_encoded[..])];
            if let Some(encoded) = &from_encoded {
                written.push((from.scope(), &fk, &from_shard, fs.body.counter, encoded));
            }
            self.after_commit(revision, &written)?;
            if !old.once {
                self.cache.put(&self.object_key(&object), &sealed)?;
            }
            self.cache.remove(&self.object_key(&old.object))?;
            let e = &ts.body.entries[to.key().as_str()];
            Ok(Some(fleet_entry(to.clone(), e)))
        })
    }

    /// The metadata of `r`, if it is stored.
    pub(crate) fn entry(&self, r: &VaultRef) -> Result<Option<FleetEntry>, FleetError> {
        let shard = self.shard_name(r.scope(), r.key().as_str())?;
        let Some(st) = self.shard_for_read(r.scope(), &shard)? else {
            return Ok(None);
        };
        Ok(st
            .body
            .entries
            .get(r.key().as_str())
            .map(|e| fleet_entry(r.clone(), e)))
    }

    /// Removes `r`; [`FleetError::NotFound`] if there is no such secret.
    pub fn delete(&self, r: &VaultRef) -> Result<(), FleetError> {
        self.delete_version(r, None)
    }

    /// Removes `r` if it is at `version` (any, if `None`);
    /// [`FleetError::NotFound`] if there is no such secret (or not at that
    /// version: consumed, or written again, by someone else).
    fn delete_version(&self, r: &VaultRef, version: Option<u64>) -> Result<(), FleetError> {
        let scope = r.scope();
        let shard = self.shard_name(scope, r.key().as_str())?;
        let shard_key = self.shard_key(scope, &shard);
        self.retry(&r.to_string(), || {
            let Some((sk, mut st)) = self.scope_shard(scope, &shard, false, false)? else {
                return Err(FleetError::NotFound(r.clone()));
            };
            Self::rewrap_shard(scope, &mut st.body, &st.key, &sk.key, sk.keyring.epoch)?;
            let mut fence = st.body.clone();
            fence.counter = fence.counter.saturating_add(1);
            let fence = Self::encode_shard(scope, &shard, &sk.key, &fence);
            let Some(old) = st.body.entries.remove(r.key().as_str()) else {
                return Err(FleetError::NotFound(r.clone()));
            };
            if version.is_some_and(|v| v != old.version) {
                return Err(FleetError::NotFound(r.clone()));
            }
            st.body.counter = next_counter(scope, &shard, st.body.counter)?;
            let encoded = Self::encode_shard(scope, &shard, &sk.key, &st.body);
            let committed = self.store.apply_at(
                &[
                    Self::expect(self.keyring_key(scope), sk.keyring_rev),
                    Self::expect(shard_key.clone(), st.rev),
                    (self.chain_key(sk.chain_seq + 1), Expect::Absent),
                ],
                &[
                    Change::Put(shard_key.clone(), encoded.clone()),
                    Change::Delete(self.object_key(&old.object)),
                ],
            );
            // A lost answer is settled as a put's is: the shard exactly as
            // this delete wrote it means it committed.
            let committed = match committed {
                Err(FleetError::NoAnswer { .. }) => {
                    let landed = |rec: &Record| rec.value == encoded;
                    match self.settle(r, &sk, (&shard, st.rev, Some(&fence)), &landed, "deleted")? {
                        None => return Ok(None),
                        Some(rev) => Some(rev),
                    }
                }
                other => other?,
            };
            let ok = committed.is_some();
            if let Some(revision) = committed {
                self.after_commit(revision, &[(scope, &sk, &shard, st.body.counter, &encoded)])?;
                self.cache.remove(&self.object_key(&old.object))?;
            }
            Ok(ok.then_some(()))
        })
    }

    /// Makes `scope` exist with no secret in it (its keyring, as its first
    /// secret would make it): `mkdir` through the mount. `false` if it
    /// existed.
    pub fn create_scope(&self, scope: &VaultScope) -> Result<bool, FleetError> {
        let shard = self.shard_name(scope, "")?;
        self.retry(&scope.to_string(), || {
            let (sk, _) = self
                .scope_shard(scope, &shard, true, false)?
                .expect("created on demand");
            if sk.keyring_rev.is_some() {
                return Ok(Some(false));
            }
            let keyring = self.keyring_key(scope);
            let ok = self.store.apply(
                &[
                    (keyring.clone(), Expect::Absent),
                    (self.chain_key(sk.chain_seq + 1), Expect::Absent),
                ],
                &[Change::Put(keyring, self.sign_keyring(&sk.keyring))],
            )?;
            self.reset_memo_scopes();
            if ok {
                self.pin_made_keyring(scope, &sk);
            }
            Ok(ok.then_some(true))
        })
    }

    /// Secrets of `scope` (or of every scope this host can read).
    pub fn list(&self, scope: Option<&VaultScope>) -> Result<Vec<FleetEntry>, FleetError> {
        let scopes = match scope {
            Some(s) => vec![s.clone()],
            // Every scope this host can read: not one granted to others.
            None => {
                let left_out = self.scopes_left_out(true)?;
                let mut all = self.scope_names()?;
                all.retain(|s| !left_out.contains(s));
                all
            }
        };
        let mut out = Vec::new();
        for scope in scopes {
            if let Some(entries) = self.list_for_read(&scope)? {
                out.extend(entries);
            }
        }
        Ok(out)
    }
}

/// The counter after `counter`, for a write of `shard`.
pub(super) fn next_counter(
    scope: &VaultScope,
    shard: &str,
    counter: u64,
) -> Result<u64, FleetError> {
    counter.checked_add(1).ok_or_else(|| {
        FleetError::Forged(format!(
            "shard {shard} of the index of {scope}: its counter is at its limit"
        ))
    })
}

pub(crate) fn fleet_entry(vault_ref: VaultRef, e: &EntryRecord) -> FleetEntry {
    FleetEntry {
        vault_ref,
        len: e.len,
        version: e.version,
        created: UNIX_EPOCH + Duration::from_millis(e.created_ms),
        updated: UNIX_EPOCH + Duration::from_millis(e.updated_ms),
        once: e.once,
    }
}

impl From<FleetEntry> for crate::Entry {
    fn from(e: FleetEntry) -> crate::Entry {
        to_entry(e)
    }
}

pub(crate) fn to_entry(e: FleetEntry) -> crate::Entry {
    crate::Entry {
        vault_ref: e.vault_ref,
        len: e.len,
        created: e.created,
        updated: e.updated,
        version: e.version,
        once: e.once,
        expires: None,
    }
}
