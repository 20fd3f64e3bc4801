//! A vault shared by a fleet of hosts, kept in etcd.
//!
//! Layout under `/<prefix>/`:
//! - `members`: the age recipients of the enrolled hosts (JSON).
//! - `keyring/<scope>`: the scope's fleet key, once per member, each copy
//!   age-encrypted to that member; with the key's epoch and fingerprint.
//! - `index/<scope>`: the scope's manifest: for every key its record
//!   version, object id, length, times and data key (wrapped under the
//!   fleet key), plus a scope-wide counter; authenticated by an HMAC under
//!   the fleet key.
//! - `obj/<object-id>`: a value, AES-256-GCM under its data key, with the
//!   scope, key and record version as associated data.
//!
//! Every write is one etcd transaction that checks the revisions it read
//! (compare-and-swap) and replaces manifest and object together; a writer
//! that loses the race reads again and retries. Each host remembers the
//! highest manifest counter it has verified per scope and refuses an older
//! manifest, so a rolled-back or replayed record is noticed. Records this
//! host has read are kept, as stored (sealed), in a local cache that serves
//! reads while etcd is unreachable.
//!
//! The host's age identity and etcd credentials live in the host's own
//! local vault, in the reserved scope `principal:sealfs-fleet`.

mod cache;
pub mod etcd;
pub mod keys;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::{SecretKey, SensitiveBytes, Vault, VaultError, VaultRef, VaultScope};
use cache::Cache;
use etcd::{Change, Expect, Record};
pub use etcd::{EtcdOptions, EtcdStore, EtcdTls};
use keys::{DataKey, FleetKey, HostIdentity};

/// Local-vault refs of this host's fleet credentials.
const LOCAL_SCOPE: &str = "principal:sealfs-fleet";
const IDENTITY_KEY: &str = "age-identity";
pub const ETCD_USER_KEY: &str = "etcd-user";
pub const ETCD_PASSWORD_KEY: &str = "etcd-password";

/// The local-vault ref of this host's etcd password.
pub fn password_ref() -> VaultRef {
    VaultRef::new(
        LOCAL_SCOPE.parse::<VaultScope>().expect("a valid scope"),
        SecretKey::new(ETCD_PASSWORD_KEY).expect("a valid key"),
    )
}
const ETCD_TLS_CA_KEY: &str = "etcd-tls-ca";
const ETCD_TLS_CERT_KEY: &str = "etcd-tls-cert";
pub const ETCD_TLS_KEY_KEY: &str = "etcd-tls-key";

/// Attempts of a write that keeps losing compare-and-swap races.
const MAX_ATTEMPTS: u32 = 50;

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

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

use crate::clock::now_ms;

pub(crate) fn corrupt(what: &str, e: impl std::fmt::Display) -> FleetError {
    FleetError::Corrupt(format!("{what}: {e}"))
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Members {
    recipients: BTreeSet<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Keyring {
    epoch: u64,
    key_id: String,
    /// Recipient → the fleet key age-encrypted to it (base64).
    wrapped: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ManifestBody {
    epoch: u64,
    counter: u64,
    pub(crate) entries: BTreeMap<String, EntryRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct EntryRecord {
    pub(crate) version: u64,
    object: String,
    /// The data key wrapped under the fleet key (base64).
    dek: String,
    pub(crate) len: u64,
    pub(crate) created_ms: u64,
    pub(crate) updated_ms: u64,
}

/// As stored: the body's exact bytes and their MAC.
#[derive(Debug, Serialize, Deserialize)]
struct ManifestRecord {
    body: String,
    mac: String,
}

/// Metadata of a fleet secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetEntry {
    pub vault_ref: VaultRef,
    pub len: u64,
    pub version: u64,
    pub created: SystemTime,
    pub updated: SystemTime,
}

/// What `sealfs fleet status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct FleetStatus {
    pub recipient: String,
    pub enrolled: bool,
    pub members: Vec<String>,
    pub scopes: Vec<ScopeStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScopeStatus {
    pub scope: String,
    pub epoch: u64,
    pub key_id: String,
    pub secrets: usize,
    pub readable: bool,
}

/// A scope's verified state as read.
#[derive(Clone)]
pub(crate) struct ScopeState {
    key: FleetKey,
    keyring: Keyring,
    keyring_rev: Option<i64>,
    pub(crate) manifest: ManifestBody,
    manifest_rev: Option<i64>,
}

pub struct FleetVault {
    store: EtcdStore,
    host: HostIdentity,
    cache: Cache,
    max_value_size: usize,
    memo: Mutex<Memo>,
}

/// Verified scope states and sealed objects held in memory, valid only
/// while a watch on the prefix runs ([`FleetVault::run_watch`]): every
/// change it reports drops what it touches, and a broken watch drops it
/// all, so reads never serve what etcd no longer holds.
#[derive(Default)]
struct Memo {
    live: bool,
    /// Bumped by every change; a read started before one does not store
    /// what it read.
    generation: u64,
    scopes: HashMap<VaultScope, ScopeState>,
    objects: HashMap<String, Vec<u8>>,
}

impl std::fmt::Debug for FleetVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetVault")
            .field("etcd", self.store.options())
            .field("host", &self.host)
            .finish()
    }
}

fn local_ref(key: &str) -> VaultRef {
    VaultRef::new(
        LOCAL_SCOPE.parse().expect("a valid scope"),
        SecretKey::new(key).expect("a valid key"),
    )
}

/// This host's age identity from its local vault, created on first use.
pub fn host_identity(local: &Vault) -> Result<HostIdentity, FleetError> {
    let r = local_ref(IDENTITY_KEY);
    match local.get(&r) {
        Ok(text) => HostIdentity::parse(text.expose()),
        Err(VaultError::NotFound(_)) => {
            let id = HostIdentity::generate();
            local.put(&r, id.to_secret())?;
            Ok(id)
        }
        Err(e) => Err(e.into()),
    }
}

/// etcd user and password kept in the local vault, if any.
pub fn stored_credentials(local: &Vault) -> Result<Option<(String, SensitiveBytes)>, FleetError> {
    let user = match local.get(&local_ref(ETCD_USER_KEY)) {
        Ok(u) => String::from_utf8_lossy(u.expose()).trim().to_owned(),
        Err(VaultError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let password = local.get(&local_ref(ETCD_PASSWORD_KEY))?;
    Ok(Some((user, password)))
}

/// Stores the etcd credentials in the local vault (never in argv).
pub fn store_credentials(
    local: &Vault,
    user: &str,
    password: SensitiveBytes,
) -> Result<(), FleetError> {
    local.put(
        &local_ref(ETCD_USER_KEY),
        SensitiveBytes::from_slice(user.as_bytes()),
    )?;
    local.put(&local_ref(ETCD_PASSWORD_KEY), password)?;
    Ok(())
}

/// etcd's CA and this host's client certificate and key, if stored.
pub fn stored_tls(local: &Vault) -> Result<Option<EtcdTls>, FleetError> {
    let ca = match local.get(&local_ref(ETCD_TLS_CA_KEY)) {
        Ok(ca) => ca.expose().to_vec(),
        Err(VaultError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let cert = local.get(&local_ref(ETCD_TLS_CERT_KEY))?.expose().to_vec();
    let key = local.get(&local_ref(ETCD_TLS_KEY_KEY))?;
    Ok(Some(EtcdTls { ca, cert, key }))
}

/// Stores etcd's CA and this host's client certificate and key in the
/// local vault; the key is written last, so a half-stored set is never
/// used (the CA marks a set as present, and reading it needs all three).
pub fn store_tls(local: &Vault, tls: EtcdTls) -> Result<(), FleetError> {
    local.put(&local_ref(ETCD_TLS_KEY_KEY), tls.key)?;
    local.put(
        &local_ref(ETCD_TLS_CERT_KEY),
        SensitiveBytes::from(tls.cert),
    )?;
    local.put(&local_ref(ETCD_TLS_CA_KEY), SensitiveBytes::from(tls.ca))?;
    Ok(())
}

impl FleetVault {
    /// Opens the fleet vault of this host: `local` holds its identity and
    /// `cache_dir` its sealed copies of records.
    /// [`FleetVault::open`] with the sealed cache in its usual place, the
    /// `fleet-cache` directory of the local vault.
    pub fn open_beside(
        local: &Vault,
        opts: EtcdOptions,
        max_value_size: usize,
    ) -> Result<Self, FleetError> {
        let cache_dir = local.dir().join("fleet-cache");
        Self::open(local, opts, cache_dir, max_value_size)
    }

    pub fn open(
        local: &Vault,
        mut opts: EtcdOptions,
        cache_dir: PathBuf,
        max_value_size: usize,
    ) -> Result<Self, FleetError> {
        let host = host_identity(local)?;
        if opts.credentials.is_none() {
            opts.credentials = stored_credentials(local)?;
        }
        if opts.tls.is_none() {
            opts.tls = stored_tls(local)?;
        }
        let cache = Cache::open(cache_dir)?;
        Ok(FleetVault {
            store: EtcdStore::new(opts)?,
            host,
            cache,
            max_value_size,
            memo: Mutex::new(Memo::default()),
        })
    }

    fn memo(&self) -> std::sync::MutexGuard<'_, Memo> {
        self.memo.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the changes under the prefix flowing into the in-memory state
    /// until `stop` is set: after any change on any host, the next read
    /// here sees it. A watch that breaks (compaction, lost connection)
    /// drops everything held and starts again from a fresh read.
    pub fn run_watch(&self, stop: &AtomicBool) {
        use std::sync::atomic::Ordering;
        let store = match EtcdStore::new(self.store.options().duplicate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the fleet watch");
                return;
            }
        };
        let prefix = self.store.key("");
        while !stop.load(Ordering::Relaxed) {
            let revision = match store.revision() {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "fleet watch: etcd not reachable yet");
                    self.reset_memo(false);
                    std::thread::sleep(Duration::from_millis(300));
                    continue;
                }
            };
            self.reset_memo(true);
            tracing::info!(revision, "fleet watch running");
            let result = store.watch(revision, stop, |keys| self.invalidate(&prefix, &keys));
            self.reset_memo(false);
            if let Err(e) = result {
                tracing::warn!(error = %e, "fleet watch interrupted; resynchronising");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn reset_memo(&self, live: bool) {
        let mut m = self.memo();
        m.live = live;
        m.generation += 1;
        m.scopes.clear();
        m.objects.clear();
    }

    fn reset_memo_scopes(&self) {
        let mut m = self.memo();
        m.generation += 1;
        m.scopes.clear();
    }

    fn invalidate(&self, prefix: &str, keys: &[String]) {
        let mut m = self.memo();
        m.generation += 1;
        for k in keys {
            match k.strip_prefix(prefix) {
                Some(rest) if rest.starts_with("obj/") => {
                    m.objects.remove(&rest["obj/".len()..]);
                }
                _ => m.scopes.clear(),
            }
        }
    }

    /// The generation to store a read under, if the memo is live.
    fn memo_generation(&self) -> Option<u64> {
        let m = self.memo();
        m.live.then_some(m.generation)
    }

    /// For reads: the memo's copy while the watch runs, else a fresh read.
    pub(crate) fn scope_state_for_read(
        &self,
        scope: &VaultScope,
    ) -> Result<Option<ScopeState>, FleetError> {
        let generation = {
            let m = self.memo();
            if let Some(s) = m.scopes.get(scope).filter(|_| m.live) {
                return Ok(Some(s.clone()));
            }
            m.live.then_some(m.generation)
        };
        let state = self.scope_state(scope, false, true)?;
        if let (Some(g), Some(st)) = (generation, &state) {
            let mut m = self.memo();
            if m.live && m.generation == g {
                m.scopes.insert(scope.clone(), st.clone());
            }
        }
        Ok(state)
    }

    /// A sealed object, from the memo while the watch runs.
    fn object_for_read(&self, id: &str) -> Result<Option<Vec<u8>>, FleetError> {
        if let Some(o) = self.memo().objects.get(id).cloned() {
            return Ok(Some(o));
        }
        let generation = self.memo_generation();
        let obj = self.read(&self.object_key(id), true)?.map(|r| r.value);
        if let (Some(g), Some(o)) = (generation, &obj) {
            let mut m = self.memo();
            if m.live && m.generation == g {
                m.objects.insert(id.to_owned(), o.clone());
            }
        }
        Ok(obj)
    }

    pub fn recipient(&self) -> String {
        self.host.recipient()
    }

    fn members_key(&self) -> String {
        self.store.key("members")
    }

    fn keyring_key(&self, scope: &VaultScope) -> String {
        self.store.key(&format!("keyring/{scope}"))
    }

    fn manifest_key(&self, scope: &VaultScope) -> String {
        self.store.key(&format!("index/{scope}"))
    }

    fn object_key(&self, id: &str) -> String {
        self.store.key(&format!("obj/{id}"))
    }

    /// Reads `key` from etcd, keeping a copy in the cache; while etcd is
    /// unreachable, the cached copy.
    fn read(&self, key: &str, offline_ok: bool) -> Result<Option<Record>, FleetError> {
        match self.store.get(key) {
            Ok(Some(rec)) => {
                self.cache.put(key, &rec.value)?;
                Ok(Some(rec))
            }
            Ok(None) => Ok(None),
            Err(FleetError::Unreachable { .. }) if offline_ok => match self.cache.get(key)? {
                Some(value) => Ok(Some(Record {
                    value,
                    mod_revision: 0,
                })),
                None => Err(FleetError::NotCached(key.to_owned())),
            },
            Err(e) => Err(e),
        }
    }

    fn members(&self) -> Result<(Members, i64), FleetError> {
        let rec = self
            .store
            .get(&self.members_key())?
            .ok_or(FleetError::NotInitialised)?;
        let m: Members = serde_json::from_slice(&rec.value).map_err(|e| corrupt("members", e))?;
        Ok((m, rec.mod_revision))
    }

    fn parse_keyring(
        &self,
        scope: &VaultScope,
        rec: &Record,
    ) -> Result<(Keyring, FleetKey), FleetError> {
        let ring: Keyring = serde_json::from_slice(&rec.value)
            .map_err(|e| corrupt(&format!("keyring of {scope}"), e))?;
        let not_enrolled = || FleetError::NotEnrolled {
            recipient: self.recipient(),
            scope: Some(scope.clone()),
        };
        let wrapped = ring
            .wrapped
            .get(&self.recipient())
            .ok_or_else(not_enrolled)?;
        let wrapped = b64()
            .decode(wrapped)
            .map_err(|e| corrupt(&format!("keyring of {scope}"), e))?;
        let key = FleetKey::unwrap_for(&self.host, &wrapped).ok_or_else(not_enrolled)?;
        if key.id() != ring.key_id {
            return Err(FleetError::Integrity(format!("the keyring of {scope}")));
        }
        Ok((ring, key))
    }

    fn parse_manifest(
        &self,
        scope: &VaultScope,
        key: &FleetKey,
        ring: &Keyring,
        rec: &Record,
    ) -> Result<Option<ManifestBody>, FleetError> {
        let what = || format!("the manifest of {scope}");
        let stored: ManifestRecord =
            serde_json::from_slice(&rec.value).map_err(|e| corrupt(&what(), e))?;
        let mac = b64().decode(&stored.mac).map_err(|e| corrupt(&what(), e))?;
        // Either forged, or read across a rotation (keyring before, manifest
        // after): the caller looks again before calling it forged.
        if !key.verify_mac(
            &keys::manifest_mac_input(scope, stored.body.as_bytes()),
            &mac,
        ) {
            return Ok(None);
        }
        let body: ManifestBody =
            serde_json::from_str(&stored.body).map_err(|e| corrupt(&what(), e))?;
        if body.epoch != ring.epoch {
            return Ok(None);
        }
        let seen = self.cache.high_water(scope)?;
        if body.counter < seen {
            return Err(FleetError::Replay {
                scope: scope.clone(),
                seen,
                got: body.counter,
            });
        }
        self.cache.set_high_water(scope, body.counter)?;
        Ok(Some(body))
    }

    fn encode_manifest(scope: &VaultScope, key: &FleetKey, body: &ManifestBody) -> Vec<u8> {
        let body = serde_json::to_string(body).expect("a manifest serialises");
        let mac = key.mac(&keys::manifest_mac_input(scope, body.as_bytes()));
        serde_json::to_vec(&ManifestRecord {
            body,
            mac: b64().encode(mac),
        })
        .expect("a manifest serialises")
    }

    fn encode_keyring(
        &self,
        key: &FleetKey,
        epoch: u64,
        members: &BTreeSet<String>,
    ) -> Result<Vec<u8>, FleetError> {
        let mut wrapped = BTreeMap::new();
        for m in members {
            wrapped.insert(m.clone(), b64().encode(key.wrap_to(m)?));
        }
        Ok(serde_json::to_vec(&Keyring {
            epoch,
            key_id: key.id(),
            wrapped,
        })
        .expect("a keyring serialises"))
    }

    /// The verified state of `scope`. `create`: a scope with no keyring
    /// yet gets a fresh key for every member (a write will store it).
    fn scope_state(
        &self,
        scope: &VaultScope,
        create: bool,
        offline_ok: bool,
    ) -> Result<Option<ScopeState>, FleetError> {
        // Keyring and manifest are two reads: a rotation in between shows
        // as differing epochs, and a second look settles it.
        // Likewise a read that raced another writer of this host can be
        // older than the counter that writer just recorded: only a record
        // that stays older is a replay.
        let mut last = FleetError::Integrity(format!("the manifest of {scope}"));
        for _ in 0..5 {
            match self.scope_state_once(scope, create, offline_ok) {
                Ok(Some(state)) => return Ok(state),
                Ok(None) => {}
                Err(e @ FleetError::Replay { .. }) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// `Ok(None)`: the manifest did not verify under the keyring read.
    #[allow(clippy::type_complexity)]
    fn scope_state_once(
        &self,
        scope: &VaultScope,
        create: bool,
        offline_ok: bool,
    ) -> Result<Option<Option<ScopeState>>, FleetError> {
        let ring_rec = self.read(&self.keyring_key(scope), offline_ok)?;
        let (keyring, key, keyring_rev) = match ring_rec {
            Some(rec) => {
                let (ring, key) = self.parse_keyring(scope, &rec)?;
                (ring, key, Some(rec.mod_revision))
            }
            None if create => {
                let (members, _) = self.members()?;
                if !members.recipients.contains(&self.recipient()) {
                    return Err(FleetError::NotEnrolled {
                        recipient: self.recipient(),
                        scope: None,
                    });
                }
                let key = FleetKey::generate();
                let ring = Keyring {
                    epoch: 1,
                    key_id: key.id(),
                    wrapped: BTreeMap::new(),
                };
                (ring, key, None)
            }
            None => return Ok(Some(None)),
        };
        let (manifest, manifest_rev) = match self.read(&self.manifest_key(scope), offline_ok)? {
            Some(rec) => match self.parse_manifest(scope, &key, &keyring, &rec)? {
                Some(body) => (body, Some(rec.mod_revision)),
                None => return Ok(None),
            },
            None => (
                ManifestBody {
                    epoch: keyring.epoch,
                    ..ManifestBody::default()
                },
                None,
            ),
        };
        Ok(Some(Some(ScopeState {
            key,
            keyring,
            keyring_rev,
            manifest,
            manifest_rev,
        })))
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

    /// `sealfs fleet init`: starts a fleet with this host as its member.
    pub fn init(&self) -> Result<(), FleetError> {
        let me = self.recipient();
        match self.members() {
            Ok((m, _)) if m.recipients.contains(&me) => return Ok(()),
            Ok(_) => return Err(FleetError::InitialisedElsewhere(me)),
            Err(FleetError::NotInitialised) => {}
            Err(e) => return Err(e),
        }
        let members = Members {
            recipients: BTreeSet::from([me.clone()]),
        };
        let value = serde_json::to_vec(&members).expect("members serialise");
        if self.store.apply(
            &[(self.members_key(), Expect::Absent)],
            &[Change::Put(self.members_key(), value)],
        )? {
            Ok(())
        } else {
            // Someone else initialised it at the same moment.
            match self.members() {
                Ok((m, _)) if m.recipients.contains(&me) => Ok(()),
                _ => Err(FleetError::InitialisedElsewhere(me)),
            }
        }
    }

    fn require_member(&self, members: &Members) -> Result<(), FleetError> {
        if members.recipients.contains(&self.recipient()) {
            Ok(())
        } else {
            Err(FleetError::NotEnrolled {
                recipient: self.recipient(),
                scope: None,
            })
        }
    }

    /// Every scope that has a keyring.
    pub(crate) fn scopes_with_keyrings(&self) -> Result<Vec<(VaultScope, Record)>, FleetError> {
        let prefix = self.store.key("keyring/");
        let mut out = Vec::new();
        for (k, rec) in self.store.get_prefix(&prefix)? {
            let name = &k[prefix.len()..];
            let scope: VaultScope = name
                .parse()
                .map_err(|_| corrupt("keyring name", name.escape_debug()))?;
            out.push((scope, rec));
        }
        Ok(out)
    }

    /// `sealfs fleet enroll`: lets `recipient` read every scope.
    pub fn enroll(&self, recipient: &str) -> Result<(), FleetError> {
        keys::parse_recipient(recipient)?;
        let recipient = recipient.trim().to_owned();
        self.retry("the fleet's members", || {
            let (mut members, members_rev) = self.members()?;
            self.require_member(&members)?;
            if !members.recipients.insert(recipient.clone()) {
                return Err(FleetError::AlreadyMember(recipient.clone()));
            }
            let mut expect = vec![(self.members_key(), Expect::Revision(members_rev))];
            let mut changes = vec![Change::Put(
                self.members_key(),
                serde_json::to_vec(&members).expect("members serialise"),
            )];
            for (scope, rec) in self.scopes_with_keyrings()? {
                let (mut ring, key) = self.parse_keyring(&scope, &rec)?;
                ring.wrapped
                    .insert(recipient.clone(), b64().encode(key.wrap_to(&recipient)?));
                expect.push((self.keyring_key(&scope), Expect::Revision(rec.mod_revision)));
                changes.push(Change::Put(
                    self.keyring_key(&scope),
                    serde_json::to_vec(&ring).expect("a keyring serialises"),
                ));
            }
            Ok(self.store.apply(&expect, &changes)?.then_some(()))
        })
    }

    /// `sealfs fleet revoke`: drops `recipient` and rotates every scope's
    /// fleet key, re-wrapping each secret's data key (values unchanged).
    pub fn revoke(&self, recipient: &str) -> Result<usize, FleetError> {
        keys::parse_recipient(recipient)?;
        let recipient = recipient.trim().to_owned();
        if recipient == self.recipient() {
            return Err(FleetError::RevokeSelf);
        }
        self.retry("the fleet's members", || {
            let (mut members, members_rev) = self.members()?;
            self.require_member(&members)?;
            if !members.recipients.remove(&recipient) {
                return Err(FleetError::NotMember(recipient.clone()));
            }
            let mut expect = vec![(self.members_key(), Expect::Revision(members_rev))];
            let mut changes = vec![Change::Put(
                self.members_key(),
                serde_json::to_vec(&members).expect("members serialise"),
            )];
            let mut rotated = 0;
            for (scope, _) in self.scopes_with_keyrings()? {
                let Some(state) = self.scope_state(&scope, false, false)? else {
                    continue;
                };
                let epoch = state.keyring.epoch + 1;
                let new_key = FleetKey::generate();
                let mut body = state.manifest.clone();
                for (k, e) in body.entries.iter_mut() {
                    let r = VaultRef::new(
                        scope.clone(),
                        SecretKey::new(k.as_str()).map_err(|e| corrupt("manifest key", e))?,
                    );
                    let wrapped = b64().decode(&e.dek).map_err(|e| corrupt("data key", e))?;
                    let dek = state
                        .key
                        .unwrap_data_key(&wrapped, &r, e.version, state.manifest.epoch)
                        .ok_or_else(|| FleetError::Integrity(r.to_string()))?;
                    e.dek = b64().encode(new_key.wrap_data_key(&dek, &r, e.version, epoch));
                }
                body.epoch = epoch;
                body.counter += 1;
                expect.push(Self::expect(self.keyring_key(&scope), state.keyring_rev));
                expect.push(Self::expect(self.manifest_key(&scope), state.manifest_rev));
                changes.push(Change::Put(
                    self.keyring_key(&scope),
                    self.encode_keyring(&new_key, epoch, &members.recipients)?,
                ));
                changes.push(Change::Put(
                    self.manifest_key(&scope),
                    Self::encode_manifest(&scope, &new_key, &body),
                ));
                rotated += 1;
            }
            Ok(self.store.apply(&expect, &changes)?.then_some(rotated))
        })
    }

    pub fn status(&self) -> Result<FleetStatus, FleetError> {
        let me = self.recipient();
        let (members, _) = match self.members() {
            Ok(m) => m,
            Err(FleetError::NotInitialised) => (Members::default(), 0),
            Err(e) => return Err(e),
        };
        let mut scopes = Vec::new();
        for (scope, rec) in self.scopes_with_keyrings()? {
            let ring: Keyring =
                serde_json::from_slice(&rec.value).map_err(|e| corrupt("keyring", e))?;
            let (readable, secrets) = match self.scope_state(&scope, false, false) {
                Ok(Some(s)) => (true, s.manifest.entries.len()),
                Ok(None) => (false, 0),
                Err(FleetError::NotEnrolled { .. }) => (false, 0),
                Err(e) => return Err(e),
            };
            scopes.push(ScopeStatus {
                scope: scope.to_string(),
                epoch: ring.epoch,
                key_id: ring.key_id,
                secrets,
                readable,
            });
        }
        Ok(FleetStatus {
            enrolled: members.recipients.contains(&me),
            recipient: me,
            members: members.recipients.into_iter().collect(),
            scopes,
        })
    }

    pub fn put(&self, r: &VaultRef, value: &SensitiveBytes) -> Result<FleetEntry, FleetError> {
        if value.is_empty() {
            return Err(FleetError::EmptyValue(r.clone()));
        }
        self.put_any(r, value)
    }

    /// As [`FleetVault::put`], an empty value included (the mount stores
    /// what a file emptied with `: > key` holds).
    pub fn put_any(&self, r: &VaultRef, value: &SensitiveBytes) -> Result<FleetEntry, FleetError> {
        if value.len() > self.max_value_size {
            return Err(FleetError::TooLarge {
                vault_ref: r.clone(),
                len: value.len(),
                max: self.max_value_size,
            });
        }
        let scope = r.scope();
        let key_name = r.key().as_str().to_owned();
        self.retry(&r.to_string(), || {
            let mut state = self
                .scope_state(scope, true, false)?
                .expect("created on demand");
            let mut expect = vec![
                Self::expect(self.keyring_key(scope), state.keyring_rev),
                Self::expect(self.manifest_key(scope), state.manifest_rev),
            ];
            let mut changes = Vec::new();
            if state.keyring_rev.is_none() {
                let (members, members_rev) = self.members()?;
                self.require_member(&members)?;
                expect.push((self.members_key(), Expect::Revision(members_rev)));
                changes.push(Change::Put(
                    self.keyring_key(scope),
                    self.encode_keyring(&state.key, state.keyring.epoch, &members.recipients)?,
                ));
            }
            let body = &mut state.manifest;
            body.counter += 1;
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
                    dek: b64().encode(state.key.wrap_data_key(&dek, r, version, body.epoch)),
                    len: value.len() as u64,
                    created_ms,
                    updated_ms: now,
                },
            );
            let sealed = dek.seal(r, version, value);
            changes.push(Change::Put(self.object_key(&object), sealed.clone()));
            let manifest = Self::encode_manifest(scope, &state.key, body);
            changes.push(Change::Put(self.manifest_key(scope), manifest.clone()));
            if let Some(p) = &previous {
                changes.push(Change::Delete(self.object_key(&p.object)));
            }
            if !self.store.apply(&expect, &changes)? {
                return Ok(None);
            }
            self.reset_memo_scopes();
            self.cache.set_high_water(scope, version)?;
            self.cache.put(&self.manifest_key(scope), &manifest)?;
            self.cache.put(&self.object_key(&object), &sealed)?;
            Ok(Some(FleetEntry {
                vault_ref: r.clone(),
                len: value.len() as u64,
                version,
                created: UNIX_EPOCH + Duration::from_millis(created_ms),
                updated: UNIX_EPOCH + Duration::from_millis(now),
            }))
        })
    }

    /// The value of `r`; from the local sealed cache while etcd is
    /// unreachable.
    pub fn get(&self, r: &VaultRef) -> Result<SensitiveBytes, FleetError> {
        for _ in 0..MAX_ATTEMPTS {
            let state = self
                .scope_state_for_read(r.scope())?
                .ok_or_else(|| FleetError::NotFound(r.clone()))?;
            let e = state
                .manifest
                .entries
                .get(r.key().as_str())
                .ok_or_else(|| FleetError::NotFound(r.clone()))?;
            // A concurrent rewrite may delete the object we were told about:
            // read the manifest again.
            let Some(obj) = self.object_for_read(&e.object)? else {
                self.reset_memo_scopes();
                continue;
            };
            let wrapped = b64().decode(&e.dek).map_err(|e| corrupt("data key", e))?;
            let dek = state
                .key
                .unwrap_data_key(&wrapped, r, e.version, state.manifest.epoch)
                .ok_or_else(|| FleetError::Integrity(r.to_string()))?;
            return dek
                .open(r, e.version, &obj)
                .ok_or_else(|| FleetError::Integrity(r.to_string()));
        }
        Err(FleetError::Conflict(r.to_string()))
    }

    pub fn delete(&self, r: &VaultRef) -> Result<(), FleetError> {
        let scope = r.scope();
        self.retry(&r.to_string(), || {
            let Some(mut state) = self.scope_state(scope, false, false)? else {
                return Err(FleetError::NotFound(r.clone()));
            };
            let Some(old) = state.manifest.entries.remove(r.key().as_str()) else {
                return Err(FleetError::NotFound(r.clone()));
            };
            state.manifest.counter += 1;
            let manifest = Self::encode_manifest(scope, &state.key, &state.manifest);
            let ok = self.store.apply(
                &[
                    Self::expect(self.keyring_key(scope), state.keyring_rev),
                    Self::expect(self.manifest_key(scope), state.manifest_rev),
                ],
                &[
                    Change::Put(self.manifest_key(scope), manifest.clone()),
                    Change::Delete(self.object_key(&old.object)),
                ],
            )?;
            if ok {
                self.reset_memo_scopes();
                self.cache.set_high_water(scope, state.manifest.counter)?;
                self.cache.put(&self.manifest_key(scope), &manifest)?;
                self.cache.remove(&self.object_key(&old.object))?;
            }
            Ok(ok.then_some(()))
        })
    }

    /// Secrets of `scope` (or of every scope this host can read).
    pub fn list(&self, scope: Option<&VaultScope>) -> Result<Vec<FleetEntry>, FleetError> {
        let scopes = match scope {
            Some(s) => vec![s.clone()],
            None => self
                .scopes_with_keyrings()?
                .into_iter()
                .map(|(s, _)| s)
                .collect(),
        };
        let mut out = Vec::new();
        for scope in scopes {
            let state = match self.scope_state_for_read(&scope) {
                Ok(Some(s)) => s,
                Ok(None) => continue,
                Err(e) => return Err(e),
            };
            for (k, e) in &state.manifest.entries {
                let key = SecretKey::new(k.as_str()).map_err(|e| corrupt("manifest key", e))?;
                out.push(FleetEntry {
                    vault_ref: VaultRef::new(scope.clone(), key),
                    len: e.len,
                    version: e.version,
                    created: UNIX_EPOCH + Duration::from_millis(e.created_ms),
                    updated: UNIX_EPOCH + Duration::from_millis(e.updated_ms),
                });
            }
        }
        Ok(out)
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
        once: false,
    }
}
