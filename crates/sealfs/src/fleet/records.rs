//! The JSON records of the fleet in etcd (members, keyrings, manifests)
//! and how a host encodes and checks them.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::etcd::Record;
use super::keys::FleetKey;
use super::{b64, corrupt, keys, FleetError, FleetVault};
use crate::VaultScope;

#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Members {
    pub(super) recipients: BTreeSet<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Keyring {
    pub(super) epoch: u64,
    pub(super) key_id: String,
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

impl FleetVault {
    pub(super) fn parse_keyring(
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

    pub(super) fn parse_manifest(
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

    pub(super) fn encode_keyring(
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
}
