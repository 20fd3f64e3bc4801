//! The JSON records of a scope in etcd (keyrings, manifests)
//! and how a host encodes and checks them.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::etcd::Record;
use super::keys::FleetKey;
use super::trust::{Membership, Signed, KEYRING_DOMAIN};
use super::{b64, corrupt, keys, FleetError, FleetVault};
use crate::VaultScope;

/// A scope's fleet key, wrapped to each member; stored signed
/// ([`super::trust::Signed`]) by the member who wrote it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Keyring {
    /// The fleet id.
    pub(super) fleet: String,
    pub(super) scope: String,
    pub(super) epoch: u64,
    pub(super) key_id: String,
    /// The chain entry whose membership the key is wrapped to.
    pub(super) seq: u64,
    /// The signing key (hex) of the member who wrote it.
    pub(super) signer: String,
    /// Recipient → the fleet key age-encrypted to it (base64).
    pub(super) wrapped: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ManifestBody {
    pub(super) epoch: u64,
    pub(super) counter: u64,
    pub(crate) entries: BTreeMap<String, EntryRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct EntryRecord {
    pub(crate) version: u64,
    pub(super) object: String,
    /// The data key wrapped under the fleet key (base64).
    pub(super) dek: String,
    pub(crate) len: u64,
    pub(crate) created_ms: u64,
    pub(crate) updated_ms: u64,
}

/// As stored: the body's exact bytes and their MAC.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ManifestRecord {
    pub(super) body: String,
    pub(super) mac: String,
}

/// What a keyring is read for, which decides what is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyringUse {
    /// Reads and writes: current (not older than the last revocation) and
    /// not older than this host's pin.
    Current,
    /// A revocation's rotation: also a keyring from before the last
    /// revocation (the rotation checks more).
    Rotate,
    /// `fleet recover` after a deliberate restore: whatever a member signed,
    /// older than this host's pins included.
    Recover,
}

impl FleetVault {
    /// Checks a stored keyring against the verified membership `m` and
    /// (but for [`KeyringUse::Recover`]) this host's pin of the scope, and
    /// unwraps this host's copy of the key.
    pub(super) fn parse_keyring(
        &self,
        scope: &VaultScope,
        rec: &Record,
        m: &Membership,
        usage: KeyringUse,
    ) -> Result<(Keyring, FleetKey), FleetError> {
        let what = format!("the keyring of {scope}");
        let forged = |why: &str| FleetError::Forged(format!("{what}: {why}"));
        let signed = Signed::parse(&what, &rec.value)?;
        let ring: Keyring =
            serde_json::from_str(&signed.body).map_err(|_| forged("it is not a keyring"))?;
        if ring.fleet != m.fleet_id || ring.scope != scope.to_string() {
            return Err(forged("it belongs to another fleet or scope"));
        }
        // Written by a member who saw a newer chain than `m` (an enrolment
        // between the two reads): check it against the chain as it is now.
        let fresh;
        let m = if ring.seq > m.seq() {
            fresh = self.membership(false)?;
            &fresh
        } else {
            m
        };
        m.verify_signed(&what, KEYRING_DOMAIN, &signed, &ring.signer, ring.seq)?;
        let members = m.recipients_at(ring.seq);
        if ring.wrapped.keys().any(|r| !members.contains(r)) {
            return Err(forged("it wraps the key to a host that is not a member"));
        }
        // Refused if older than what this host has seen; pinned only once
        // known current: a keyring from before the last revocation (which
        // a revoked host can still sign) never moves a pin.
        if usage != KeyringUse::Recover {
            let newer = self.check_scope_pin(scope, &ring)?;
            if ring.seq < m.last_removal {
                if usage == KeyringUse::Current {
                    return Err(FleetError::NotRotated(scope.clone()));
                }
            } else if newer {
                self.store_scope_pin(scope, &ring)?;
            }
        }
        let not_enrolled = || FleetError::NotEnrolled {
            recipient: self.card().to_string(),
            scope: Some(scope.clone()),
        };
        let wrapped = ring
            .wrapped
            .get(&self.recipient())
            .ok_or_else(not_enrolled)?;
        let wrapped = b64()
            .decode(wrapped)
            .map_err(|_| forged("a wrapped key is not base64"))?;
        let key = FleetKey::unwrap_for(&self.host, &wrapped).ok_or_else(not_enrolled)?;
        if key.id() != ring.key_id {
            return Err(FleetError::Integrity(format!("the keyring of {scope}")));
        }
        Ok((ring, key))
    }

    pub(super) fn parse_manifest(
        &self,
        scope: &VaultScope,
        key: &FleetKey,
        ring: &Keyring,
        rec: &Record,
        replay_ok: bool,
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
        // `replay_ok`: `fleet recover` takes a restored (older) manifest
        // over, and re-anchors it above every counter seen.
        if !replay_ok {
            let seen = self.cache.high_water(scope)?;
            if body.counter < seen {
                return Err(FleetError::Replay {
                    scope: scope.clone(),
                    seen,
                    got: body.counter,
                });
            }
            self.cache.set_high_water(scope, body.counter)?;
        }
        Ok(Some(body))
    }

    /// Whether the manifest `rec` (authenticated under `key`) names
    /// `object` for the secret `name`.
    pub(super) fn manifest_names(
        &self,
        scope: &VaultScope,
        key: &FleetKey,
        rec: &Record,
        name: &str,
        object: &str,
    ) -> bool {
        let Ok(stored) = serde_json::from_slice::<ManifestRecord>(&rec.value) else {
            return false;
        };
        let mac_ok = b64().decode(&stored.mac).is_ok_and(|mac| {
            key.verify_mac(
                &keys::manifest_mac_input(scope, stored.body.as_bytes()),
                &mac,
            )
        });
        mac_ok
            && serde_json::from_str::<ManifestBody>(&stored.body)
                .is_ok_and(|b| b.entries.get(name).is_some_and(|e| e.object == object))
    }

    pub(super) fn encode_manifest(
        scope: &VaultScope,
        key: &FleetKey,
        body: &ManifestBody,
    ) -> Vec<u8> {
        let body = serde_json::to_string(body).expect("a manifest serialises");
        let mac = key.mac(&keys::manifest_mac_input(scope, body.as_bytes()));
        serde_json::to_vec(&ManifestRecord {
            body,
            mac: b64().encode(mac),
        })
        .expect("a manifest serialises")
    }

    /// A keyring of `key` at `epoch`, wrapped to the members of `m` as
    /// they are now, signed by this host when stored ([`Self::sign_keyring`]).
    pub(super) fn new_keyring(
        &self,
        scope: &VaultScope,
        key: &FleetKey,
        epoch: u64,
        m: &Membership,
    ) -> Result<Keyring, FleetError> {
        let mut wrapped = BTreeMap::new();
        for r in m.recipients_at(m.seq()) {
            let w = b64().encode(key.wrap_to(&r)?);
            wrapped.insert(r, w);
        }
        Ok(Keyring {
            fleet: m.fleet_id.clone(),
            scope: scope.to_string(),
            epoch,
            key_id: key.id(),
            seq: m.seq(),
            signer: self.signer.public_hex(),
            wrapped,
        })
    }

    /// The keyring as stored: signed by this host.
    pub(super) fn sign_keyring(&self, ring: &Keyring) -> Vec<u8> {
        let mut ring = ring.clone();
        ring.signer = self.signer.public_hex();
        Signed::encode(&self.signer, KEYRING_DOMAIN, &ring)
    }
}
