//! Fleet keys: a random key per scope, sealed under the fleet's grant key
//! (itself wrapped once to each member's age X25519 recipient) or wrapped
//! to each host's recipient directly; per-secret data keys wrapped under
//! it; the keys it
//! replaced, sealed under it; and the MAC that authenticates a shard of a
//! scope's index.
//!
//! Every AES-GCM use binds what the bytes are for (scope, key, record
//! version, key epoch) as associated data, so nothing sealed for one slot
//! opens in another.

use std::str::FromStr;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::FleetError;
use crate::{SensitiveBytes, VaultRef, VaultScope};

const NONCE_LEN: usize = 12;
const OBJECT_MAGIC: &[u8; 6] = b"SLFF\x01\x01";

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the OS random source works");
    b
}

/// This host's age identity (its private key).
pub struct HostIdentity(age::x25519::Identity);

impl HostIdentity {
    /// A new random identity.
    pub fn generate() -> Self {
        HostIdentity(age::x25519::Identity::generate())
    }

    /// From the `AGE-SECRET-KEY-1...` text.
    pub fn parse(text: &[u8]) -> Result<Self, FleetError> {
        let text = std::str::from_utf8(text)
            .map_err(|_| FleetError::Corrupt("the stored host identity is not text".into()))?;
        age::x25519::Identity::from_str(text.trim())
            .map(HostIdentity)
            .map_err(|_| {
                FleetError::Corrupt("the stored host identity is not an age identity".into())
            })
    }

    /// The `AGE-SECRET-KEY-1...` text, as kept in the local vault.
    pub fn to_secret(&self) -> SensitiveBytes {
        use age::secrecy::ExposeSecret;
        SensitiveBytes::from_slice(self.0.to_string().expose_secret().as_bytes())
    }

    /// The public `age1...` recipient of this identity.
    pub fn recipient(&self) -> String {
        self.0.to_public().to_string()
    }

    /// Opens an etcd login sealed to this host ([`seal_login`]) for
    /// fleet `fleet_id` under `prefix`: the user and password; `None` if it
    /// is not for this host, or for another fleet or prefix, or malformed.
    pub fn open_login(
        &self,
        sealed: &[u8],
        fleet_id: &str,
        prefix: &str,
    ) -> Option<(String, SensitiveBytes)> {
        let plain = Zeroizing::new(age::decrypt(&self.0, sealed).ok()?);
        let mut parts = plain.strip_prefix(LOGIN_DOMAIN)?.splitn(4, |b| *b == 0);
        let (id, pfx, user, password) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if id != fleet_id.as_bytes() || pfx != prefix.as_bytes() || password.is_empty() {
            return None;
        }
        let user = std::str::from_utf8(user).ok()?.to_owned();
        Some((user, SensitiveBytes::from_slice(password)))
    }

    fn unwrap(&self, wrapped: &[u8]) -> Option<FleetKey> {
        let plain = Zeroizing::new(age::decrypt(&self.0, wrapped).ok()?);
        let key: [u8; 32] = plain.as_slice().try_into().ok()?;
        Some(FleetKey(Zeroizing::new(key)))
    }
}

impl std::fmt::Debug for HostIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostIdentity({})", self.recipient())
    }
}

const LOGIN_DOMAIN: &[u8] = b"sealfs etcd login v1\0";

/// An etcd user and password for fleet `fleet_id` under `prefix`, sealed
/// to `recipient` (age), as a join token carries them; only that host
/// opens them, and only for that fleet and prefix
/// ([`HostIdentity::open_login`]).
pub fn seal_login(
    recipient: &str,
    (fleet_id, prefix): (&str, &str),
    user: &str,
    password: &SensitiveBytes,
) -> Result<Vec<u8>, FleetError> {
    let r = parse_recipient(recipient)?;
    let plain = Zeroizing::new(
        [
            LOGIN_DOMAIN,
            fleet_id.as_bytes(),
            b"\0",
            prefix.as_bytes(),
            b"\0",
            user.as_bytes(),
            b"\0",
            password.expose(),
        ]
        .concat(),
    );
    age::encrypt(&r, &plain).map_err(|e| FleetError::Etcd(format!("age encryption failed: {e}")))
}

/// A new random etcd password: 32 random bytes, base64url.
pub fn random_password() -> SensitiveBytes {
    use base64::Engine;
    let raw = Zeroizing::new(random::<32>());
    SensitiveBytes::from(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(raw.as_slice())
            .into_bytes(),
    )
}

/// Checks an `age1...` recipient string.
pub fn parse_recipient(s: &str) -> Result<age::x25519::Recipient, FleetError> {
    age::x25519::Recipient::from_str(s.trim())
        .map_err(|_| FleetError::BadRecipient(s.chars().take(80).collect()))
}

/// A scope's fleet key.
#[derive(Clone)]
pub struct FleetKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for FleetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FleetKey(..)")
    }
}

impl FleetKey {
    /// A new random key.
    pub fn generate() -> Self {
        FleetKey(Zeroizing::new(random()))
    }

    fn derive(&self, label: &[u8]) -> Zeroizing<[u8; 32]> {
        let hk = Hkdf::<Sha256>::new(Some(b"sealfs fleet v1"), self.0.as_slice());
        let mut out = Zeroizing::new([0u8; 32]);
        hk.expand(label, out.as_mut_slice())
            .expect("32 bytes is a valid HKDF output length");
        out
    }

    /// This key wrapped to `recipient` (age).
    pub fn wrap_to(&self, recipient: &str) -> Result<Vec<u8>, FleetError> {
        let r = parse_recipient(recipient)?;
        age::encrypt(&r, self.0.as_slice())
            .map_err(|e| FleetError::Etcd(format!("age encryption failed: {e}")))
    }

    /// Unwraps the copy wrapped to `host`; `None` if it is not for `host`.
    pub fn unwrap_for(host: &HostIdentity, wrapped: &[u8]) -> Option<FleetKey> {
        host.unwrap(wrapped)
    }

    /// A short public fingerprint of the key (for status output and pins).
    pub fn id(&self) -> String {
        crate::hex::hex(&self.derive(b"id")[..8])
    }

    /// A full-length public commitment to the key (256 bits, hex): what
    /// the membership chain names a grant key by. A copy of a grant key
    /// is taken only if it matches, so finding another key that does is
    /// as hard as a preimage of SHA-256, where [`FleetKey::id`]'s 64 bits
    /// would be within reach of a determined attacker.
    pub fn commitment(&self) -> String {
        crate::hex::hex(self.derive(b"grant commitment").as_slice())
    }

    /// MAC of an index shard's canonical bytes ([`shard_mac_input`]).
    pub fn mac(&self, bytes: &[u8]) -> [u8; 32] {
        let key = self.derive(b"index mac");
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key.as_slice()).expect("any key length");
        m.update(bytes);
        m.finalize().into_bytes().into()
    }

    /// Whether `mac` is the MAC of `bytes` under this key, compared in
    /// constant time.
    pub fn verify_mac(&self, bytes: &[u8], mac: &[u8]) -> bool {
        let key = self.derive(b"index mac");
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key.as_slice()).expect("any key length");
        m.update(bytes);
        m.verify_slice(mac).is_ok()
    }

    fn cipher(&self) -> Aes256Gcm {
        self.cipher_for(b"data key wrap")
    }

    fn cipher_for(&self, label: &[u8]) -> Aes256Gcm {
        let key = self.derive(label);
        Aes256Gcm::new_from_slice(key.as_slice()).expect("32-byte key")
    }

    /// `older`, the key this one replaced at `epoch` in `scope`, sealed
    /// under this key: a keyring carries the keys it replaced this way, so
    /// index shards not rewritten since stay readable to current members.
    pub fn seal_older(&self, older: &FleetKey, scope: &VaultScope, epoch: u64) -> Vec<u8> {
        self.seal_key(b"older key wrap", older, &older_aad(scope, epoch))
    }

    /// The key [`FleetKey::seal_older`] sealed for the same `scope` and
    /// `epoch`; `None` if it does not authenticate.
    pub fn open_older(&self, sealed: &[u8], scope: &VaultScope, epoch: u64) -> Option<FleetKey> {
        self.open_key(b"older key wrap", sealed, &older_aad(scope, epoch))
    }

    /// `scope_key`, the key of `scope` at `epoch`, sealed under this key,
    /// the fleet's grant key: a keyring of a scope every member reads
    /// holds its key this way, once, whatever the number of members.
    pub fn seal_scope_key(&self, scope_key: &FleetKey, scope: &VaultScope, epoch: u64) -> Vec<u8> {
        self.seal_key(b"scope key wrap", scope_key, &scope_key_aad(scope, epoch))
    }

    /// The key [`FleetKey::seal_scope_key`] sealed for the same `scope` and
    /// `epoch`; `None` if it does not authenticate.
    pub fn open_scope_key(
        &self,
        sealed: &[u8],
        scope: &VaultScope,
        epoch: u64,
    ) -> Option<FleetKey> {
        self.open_key(b"scope key wrap", sealed, &scope_key_aad(scope, epoch))
    }

    fn seal_key(&self, label: &[u8], key: &FleetKey, aad: &[u8]) -> Vec<u8> {
        let nonce = random::<NONCE_LEN>();
        let ct = self
            .cipher_for(label)
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: key.0.as_slice(),
                    aad,
                },
            )
            .expect("AES-GCM encryption of 32 bytes cannot fail");
        [nonce.as_slice(), &ct].concat()
    }

    fn open_key(&self, label: &[u8], sealed: &[u8], aad: &[u8]) -> Option<FleetKey> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let plain = Zeroizing::new(
            self.cipher_for(label)
                .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
                .ok()?,
        );
        let key: [u8; 32] = plain.as_slice().try_into().ok()?;
        Some(FleetKey(Zeroizing::new(key)))
    }

    /// Wraps a secret's data key for record `version` of `r` in `epoch`.
    pub fn wrap_data_key(&self, dek: &DataKey, r: &VaultRef, version: u64, epoch: u64) -> Vec<u8> {
        let nonce = random::<NONCE_LEN>();
        let aad = dek_aad(r, version, epoch);
        let ct = self
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: dek.0.as_slice(),
                    aad: &aad,
                },
            )
            .expect("AES-GCM encryption of 32 bytes cannot fail");
        [nonce.as_slice(), &ct].concat()
    }

    /// The data key [`FleetKey::wrap_data_key`] wrapped for the same `r`,
    /// `version` and `epoch`; `None` if it does not authenticate.
    pub fn unwrap_data_key(
        &self,
        wrapped: &[u8],
        r: &VaultRef,
        version: u64,
        epoch: u64,
    ) -> Option<DataKey> {
        if wrapped.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ct) = wrapped.split_at(NONCE_LEN);
        let aad = dek_aad(r, version, epoch);
        let plain = Zeroizing::new(
            self.cipher()
                .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
                .ok()?,
        );
        let key: [u8; 32] = plain.as_slice().try_into().ok()?;
        Some(DataKey(Zeroizing::new(key)))
    }
}

fn dek_aad(r: &VaultRef, version: u64, epoch: u64) -> Vec<u8> {
    format!(
        "sealfs-fleet-dek/v1\0{}\0{}\0{version}\0{epoch}",
        r.scope(),
        r.key()
    )
    .into_bytes()
}

fn older_aad(scope: &VaultScope, epoch: u64) -> Vec<u8> {
    format!("sealfs-fleet-older-key/v1\0{scope}\0{epoch}").into_bytes()
}

fn scope_key_aad(scope: &VaultScope, epoch: u64) -> Vec<u8> {
    format!("sealfs-fleet-scope-key/v1\0{scope}\0{epoch}").into_bytes()
}

fn object_aad(r: &VaultRef, version: u64) -> Vec<u8> {
    format!("sealfs-fleet-obj/v1\0{}\0{}\0{version}", r.scope(), r.key()).into_bytes()
}

/// A secret's own key: encrypts its value once; re-wrapped, never
/// re-encrypted, when the fleet key rotates.
pub struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    /// A new random key.
    pub fn generate() -> Self {
        DataKey(Zeroizing::new(random()))
    }

    /// The object stored in etcd for record `version` of `r`.
    pub fn seal(&self, r: &VaultRef, version: u64, value: &SensitiveBytes) -> Vec<u8> {
        let nonce = random::<NONCE_LEN>();
        let aad = object_aad(r, version);
        let cipher = Aes256Gcm::new_from_slice(self.0.as_slice()).expect("32-byte key");
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value.expose(),
                    aad: &aad,
                },
            )
            .expect("AES-GCM encryption of a bounded value cannot fail");
        [OBJECT_MAGIC.as_slice(), &nonce, &ct].concat()
    }

    /// The value [`DataKey::seal`] sealed for the same `r` and `version`;
    /// `None` if it does not authenticate.
    pub fn open(&self, r: &VaultRef, version: u64, object: &[u8]) -> Option<SensitiveBytes> {
        let rest = object.strip_prefix(OBJECT_MAGIC.as_slice())?;
        if rest.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        let aad = object_aad(r, version);
        let cipher = Aes256Gcm::new_from_slice(self.0.as_slice()).expect("32-byte key");
        cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .ok()
            .map(SensitiveBytes::new)
    }
}

/// Canonical bytes of what an index shard's MAC covers: scope and shard
/// are included so a shard cannot be moved to another scope or slot.
pub fn shard_mac_input(scope: &VaultScope, shard: &str, body: &[u8]) -> Vec<u8> {
    [
        b"sealfs-fleet-shard/v1\0".as_slice(),
        scope.to_string().as_bytes(),
        b"\0",
        shard.as_bytes(),
        b"\0",
        body,
    ]
    .concat()
}

/// How many hex digits name an index shard in a fleet made now: 65,536
/// shards, so a write rewrites one holding about 1/65,536 of the scope's
/// secrets (a kilobyte or two with 1,000,000 secrets in one scope). A
/// fleet records its own at `fleet init` (entry 0 of its signed chain).
pub const SHARD_HEX: u8 = 4;

/// The shard names of fleets made before the count was recorded: 4,096
/// shards, a few kilobytes per write with 100,000 secrets in one scope.
pub const LEGACY_SHARD_HEX: u8 = 3;

/// The index shard of `key` in `scope`, in a fleet whose shards are named
/// with [`SHARD_HEX`] digits ([`shard_in`]).
pub fn shard_of(scope: &VaultScope, key: &str) -> String {
    shard_in(scope, key, SHARD_HEX)
}

/// The index shard of `key` in `scope`: `hex` (3 or 4) hex digits, from a
/// hash of both, so secrets spread evenly whatever their names.
pub fn shard_in(scope: &VaultScope, key: &str, hex: u8) -> String {
    use sha2::Digest;
    let h = Sha256::new()
        .chain_update(b"sealfs-fleet-shard/v1\0")
        .chain_update(scope.to_string().as_bytes())
        .chain_update(b"\0")
        .chain_update(key.as_bytes())
        .finalize();
    let n = u16::from_be_bytes([h[0], h[1]]);
    if hex == LEGACY_SHARD_HEX {
        format!("{:03x}", n % 4096)
    } else {
        format!("{n:04x}")
    }
}

/// SHA-256 of a stored object, in hex (what a shard entry names).
pub fn object_digest(object: &[u8]) -> String {
    use sha2::Digest;
    crate::hex::hex(&Sha256::digest(object))
}

/// A new random object id: 32 hex digits.
pub fn random_object_id() -> String {
    crate::hex::hex(&random::<16>())
}
