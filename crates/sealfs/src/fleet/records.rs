//! The JSON records of a scope in etcd (keyrings, index shards)
//! and how a host encodes and checks them.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::etcd::Record;
use super::keys::FleetKey;
use super::trust::{Membership, Signed, KEYRING_DOMAIN};
use super::{b64, corrupt, keys, FleetError, FleetVault, ScopeKeys};
use crate::{SecretKey, VaultRef, VaultScope};

/// A scope's fleet key, sealed once under the fleet's grant key (which
/// every member holds), or wrapped to each member of the scope's audience
/// (a scope granted to some hosts only), or, in a fleet or era without a
/// grant key, wrapped to each member; stored signed
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
    /// Recipient → the fleet key age-encrypted to it (base64); empty when
    /// `grant` seals it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) wrapped: BTreeMap<String, String>,
    /// The fleet key sealed under the grant key in force at `seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) grant: Option<GrantSealed>,
    /// The members (recipients) the scope is granted to, when not every
    /// member (`sealfs fleet grant`): `wrapped` holds the key for exactly
    /// these, and there is no `grant`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) audience: Option<BTreeSet<String>>,
    /// The keys this one replaced, each sealed under it, while a
    /// rotation moves the index shards still under them to this key; empty
    /// once it has.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) older: Vec<OlderKey>,
    /// The epoch at which `fleet recover` last re-anchored the scope: a
    /// host's shard counters from before it no longer hold (the restore
    /// may have taken shards away, and recover rewrote the rest above
    /// them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) recovered: Option<u64>,
}

/// A scope's key sealed under a grant key ([`FleetKey::seal_scope_key`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct GrantSealed {
    /// The grant key's id, as the chain names it.
    pub(super) id: String,
    /// The sealed key (base64).
    pub(super) sealed: String,
}

/// A key a rotation replaced, as its successor's keyring carries it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct OlderKey {
    pub(super) epoch: u64,
    pub(super) key_id: String,
    /// Shards under this key are taken only if etcd last wrote them at or
    /// before this revision: the revocation that retired the key, which the
    /// revoked host knows, as the rotating member first saw it. `None`: no
    /// revoked host ever held it (retired by `fleet recover`).
    pub(super) until_rev: Option<i64>,
    /// The removal entry whose revision `until_rev` is: a host that pinned
    /// that entry's revision itself holds shards to the lower of the two.
    pub(super) removal_seq: Option<u64>,
    /// The key sealed under the keyring's key ([`FleetKey::seal_older`]).
    pub(super) sealed: String,
}

/// One shard of a scope's index: the secrets whose names hash to it
/// ([`keys::shard_in`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ShardBody {
    /// The epoch of the key it is authenticated under, and that wraps its
    /// data keys.
    pub(super) epoch: u64,
    /// One more at every write of the shard: a host refuses a shard older
    /// than one it has verified.
    pub(super) counter: u64,
    pub(crate) entries: BTreeMap<String, EntryRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct EntryRecord {
    pub(crate) version: u64,
    pub(super) object: String,
    /// SHA-256 (hex) of the object as stored: a host that held the data
    /// key (a revoked one) cannot seal another value under it and pass it
    /// off, since the MACed shard names the exact bytes.
    pub(super) sha256: String,
    /// The data key wrapped under the fleet key (base64).
    pub(super) dek: String,
    pub(crate) len: u64,
    pub(crate) created_ms: u64,
    pub(crate) updated_ms: u64,
    /// Read-once: the first read that removes it gets the value.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) once: bool,
}

/// As stored: the body's exact bytes and their MAC.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ShardRecord {
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
        let ring = self.verify_keyring(scope, rec, m, usage)?;
        let key = self.open_keyring(scope, &ring)?;
        Ok((ring, key))
    }

    /// [`Self::parse_keyring`] without unwrapping the key: what a host
    /// that is not in the scope's audience can check.
    pub(super) fn verify_keyring(
        &self,
        scope: &VaultScope,
        rec: &Record,
        m: &Membership,
        usage: KeyringUse,
    ) -> Result<Keyring, FleetError> {
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
        if let Some(g) = &ring.grant {
            // Only the grant key of its own membership: an older one is
            // known to the hosts revoked since.
            if !ring.wrapped.is_empty() || m.grant_at(ring.seq) != Some(g.id.as_str()) {
                return Err(forged(
                    "its key is sealed under a grant key that is not the fleet's at its entry",
                ));
            }
        }
        // Who the scope is granted to is the chain's word: a keyring from
        // before the scope's last audience entry is stale (whoever that
        // entry left out may hold its key), and a later one must be for
        // exactly the members the entry names (less those revoked since),
        // signed by one of them, with no copy under the grant key.
        let chain = m.scope_audience(&ring.scope);
        let before_audience = chain.is_some_and(|c| ring.seq < c.seq);
        if !before_audience {
            let want = chain
                .and_then(|c| c.audience.as_ref())
                .map(|a| a & &members);
            if ring.audience != want {
                return Err(forged(
                    "it is not for the members the membership chain grants the scope to",
                ));
            }
        }
        if let Some(a) = &ring.audience {
            let signer = m.recipient_of(&ring.signer).unwrap_or_default();
            if a.is_empty()
                || ring.grant.is_some()
                || !ring.wrapped.keys().eq(a.iter())
                || !a.contains(signer)
            {
                return Err(forged(
                    "it is not wrapped to exactly its audience, by a member of it",
                ));
            }
        }
        // Refused if older than what this host has seen; pinned only once
        // known current: a keyring from before the last revocation (which
        // a revoked host can still sign), or from before the scope's last
        // audience entry, never moves a pin.
        if usage != KeyringUse::Recover {
            let newer = self.check_scope_pin(scope, &ring)?;
            if ring.seq < m.last_removal {
                if usage == KeyringUse::Current {
                    return Err(FleetError::NotRotated(scope.clone()));
                }
            } else if before_audience {
                if usage == KeyringUse::Current {
                    return Err(FleetError::NotRegranted(scope.clone()));
                }
            } else if newer {
                self.store_scope_pin(scope, &ring)?;
            }
        }
        Ok(ring)
    }

    /// This host's copy of the key of `ring` (verified by
    /// [`Self::verify_keyring`]).
    pub(super) fn open_keyring(
        &self,
        scope: &VaultScope,
        ring: &Keyring,
    ) -> Result<FleetKey, FleetError> {
        let what = format!("the keyring of {scope}");
        let forged = |why: &str| FleetError::Forged(format!("{what}: {why}"));
        let not_enrolled = || FleetError::NotEnrolled {
            recipient: self.card().to_string(),
            scope: Some(scope.clone()),
        };
        if ring
            .audience
            .as_ref()
            .is_some_and(|a| !a.contains(&self.recipient()))
        {
            return Err(FleetError::NotGranted(scope.clone()));
        }
        let key = match &ring.grant {
            Some(g) => {
                let sealed = b64()
                    .decode(&g.sealed)
                    .map_err(|_| forged("a sealed key is not base64"))?;
                let grant = self.grant_key(&g.id, Some(scope))?;
                grant
                    .open_scope_key(&sealed, scope, ring.epoch)
                    .ok_or_else(|| forged("its key does not open under the grant key"))?
            }
            None => {
                let wrapped = ring
                    .wrapped
                    .get(&self.recipient())
                    .ok_or_else(not_enrolled)?;
                let wrapped = b64()
                    .decode(wrapped)
                    .map_err(|_| forged("a wrapped key is not base64"))?;
                FleetKey::unwrap_for(&self.host, &wrapped).ok_or_else(not_enrolled)?
            }
        };
        if key.id() != ring.key_id {
            return Err(FleetError::Integrity(format!("the keyring of {scope}")));
        }
        Ok(key)
    }

    /// The key of `epoch` in `scope`: the keyring's own, or one it
    /// replaced if a shard last written at `rev` (0: a verified cached
    /// copy) may still be under it. `Ok(None)`: a newer epoch than the
    /// keyring's (read across a rotation: look again).
    pub(super) fn key_at_epoch(
        scope: &VaultScope,
        keys: &ScopeKeys,
        (epoch, rev): (u64, i64),
        pinned_removal: Option<(u64, i64)>,
        what: &dyn Fn() -> String,
    ) -> Result<Option<FleetKey>, FleetError> {
        let ring = &keys.keyring;
        if epoch == ring.epoch {
            return Ok(Some(keys.key.clone()));
        }
        if epoch > ring.epoch {
            return Ok(None);
        }
        let forged = |why: String| FleetError::Forged(format!("{}: {why}", what()));
        // A cached copy has no revision to hold to the line: while a
        // rotation runs, shards under a replaced key come from etcd only.
        if rev == 0 {
            return Err(FleetError::NotCached(what()));
        }
        let older = ring
            .older
            .iter()
            .find(|o| o.epoch == epoch)
            .ok_or_else(|| {
                forged(format!(
                    "its key epoch {epoch} is not one the keyring knows"
                ))
            })?;
        let own_line = pinned_removal
            .filter(|(seq, _)| Some(*seq) == older.removal_seq)
            .map(|(_, r)| r);
        let until = match (older.until_rev, own_line) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(until) = until {
            if rev > until {
                let by = if older.removal_seq.is_some() {
                    "the revocation"
                } else {
                    "the change of audience"
                };
                return Err(forged(format!(
                    "it was written under the key of epoch {epoch} after {by} that retired it"
                )));
            }
        }
        let sealed = b64()
            .decode(&older.sealed)
            .map_err(|e| corrupt("an older key", e))?;
        let key = keys
            .key
            .open_older(&sealed, scope, epoch)
            .filter(|k| k.id() == older.key_id)
            .ok_or_else(|| FleetError::Integrity(format!("the keyring of {scope}")))?;
        Ok(Some(key))
    }

    /// Checks the stored index shard `shard` of `scope` under the scope's
    /// keys (the current key, or an older one it names), and against the
    /// highest counter this host has verified for it. `Ok(None)`: it does
    /// not authenticate under the keys read (forged, or read across a
    /// rotation; the caller looks again before calling it forged).
    /// `replay_ok`: `fleet recover` takes a restored (older) shard over.
    /// `record`: the counter is recorded here (else the caller records
    /// it, with others: [`super::cache::Cache::set_high_waters`]).
    pub(super) fn parse_shard(
        &self,
        scope: &VaultScope,
        shard: &str,
        keys: &ScopeKeys,
        rec: &Record,
        (replay_ok, record): (bool, bool),
    ) -> Result<Option<(ShardBody, FleetKey)>, FleetError> {
        let what = || format!("shard {shard} of the index of {scope}");
        let stored: ShardRecord =
            serde_json::from_slice(&rec.value).map_err(|e| corrupt(&what(), e))?;
        let mac = b64().decode(&stored.mac).map_err(|e| corrupt(&what(), e))?;
        let body: ShardBody =
            serde_json::from_str(&stored.body).map_err(|e| corrupt(&what(), e))?;
        let pinned_removal = self.fleet_pin()?.and_then(|p| p.removal);
        let Some(key) = Self::key_at_epoch(
            scope,
            keys,
            (body.epoch, rec.mod_revision),
            pinned_removal,
            &what,
        )?
        else {
            return Ok(None);
        };
        if !key.verify_mac(
            &keys::shard_mac_input(scope, shard, stored.body.as_bytes()),
            &mac,
        ) {
            return Ok(None);
        }
        let hex = self.shard_hex()?;
        if body
            .entries
            .keys()
            .any(|k| keys::shard_in(scope, k, hex) != shard)
        {
            return Err(FleetError::Forged(format!(
                "{}: it lists a secret of another shard",
                what()
            )));
        }
        if !replay_ok {
            let seen = self.seen_counter(scope, shard, &keys.keyring)?;
            if body.counter < seen {
                return Err(FleetError::Replay {
                    scope: scope.clone(),
                    shard: shard.to_owned(),
                    seen,
                    got: body.counter,
                });
            }
            if record {
                self.cache.set_high_water(
                    scope,
                    shard,
                    (body.counter, keys.keyring.epoch),
                    keys.keyring.recovered,
                )?;
            }
        }
        Ok(Some((body, key)))
    }

    /// The highest counter this host has verified for `shard` of `scope`
    /// (0: none), unless `fleet recover` re-anchored the scope since.
    pub(super) fn seen_counter(
        &self,
        scope: &VaultScope,
        shard: &str,
        ring: &Keyring,
    ) -> Result<u64, FleetError> {
        let (counter, epoch) = self.cache.high_water(scope, shard)?;
        Ok(match ring.recovered {
            Some(r) if epoch < r => 0,
            _ => counter,
        })
    }

    /// Whether the shard `rec` (authenticated under `key`) names `object`
    /// for the secret `name`.
    pub(super) fn shard_names(
        scope: &VaultScope,
        shard: &str,
        key: &FleetKey,
        rec: &Record,
        name: &str,
        object: &str,
    ) -> bool {
        let Ok(stored) = serde_json::from_slice::<ShardRecord>(&rec.value) else {
            return false;
        };
        let mac_ok = b64().decode(&stored.mac).is_ok_and(|mac| {
            key.verify_mac(
                &keys::shard_mac_input(scope, shard, stored.body.as_bytes()),
                &mac,
            )
        });
        mac_ok
            && serde_json::from_str::<ShardBody>(&stored.body)
                .is_ok_and(|b| b.entries.get(name).is_some_and(|e| e.object == object))
    }

    pub(super) fn encode_shard(
        scope: &VaultScope,
        shard: &str,
        key: &FleetKey,
        body: &ShardBody,
    ) -> Vec<u8> {
        let body = serde_json::to_string(body).expect("a shard serialises");
        let mac = key.mac(&keys::shard_mac_input(scope, shard, body.as_bytes()));
        serde_json::to_vec(&ShardRecord {
            body,
            mac: b64().encode(mac),
        })
        .expect("a shard serialises")
    }

    /// `body` (read under `old`, at `old_epoch`) with every data key
    /// re-wrapped under `new` at `body.epoch`.
    pub(super) fn rewrap_shard(
        scope: &VaultScope,
        body: &mut ShardBody,
        old: &FleetKey,
        new: &FleetKey,
        new_epoch: u64,
    ) -> Result<(), FleetError> {
        if body.epoch == new_epoch {
            return Ok(());
        }
        for (k, e) in body.entries.iter_mut() {
            let r = VaultRef::new(
                scope.clone(),
                SecretKey::new(k.as_str()).map_err(|e| corrupt("index key", e))?,
            );
            let wrapped = b64().decode(&e.dek).map_err(|e| corrupt("data key", e))?;
            let dek = old
                .unwrap_data_key(&wrapped, &r, e.version, body.epoch)
                .ok_or_else(|| FleetError::Integrity(r.to_string()))?;
            e.dek = b64().encode(new.wrap_data_key(&dek, &r, e.version, new_epoch));
        }
        body.epoch = new_epoch;
        Ok(())
    }

    /// The older keys of the keyring `ring` (whose key is `key`), and
    /// `key` itself, retired with `until_rev` (which also bounds the older
    /// ones: whoever is revoked now held them as well), all sealed under
    /// `new`: the `older` of `new`'s keyring.
    pub(super) fn retire(
        scope: &VaultScope,
        ring: &Keyring,
        key: &FleetKey,
        new: &FleetKey,
        (until_rev, removal_seq): (Option<i64>, Option<u64>),
    ) -> Result<Vec<OlderKey>, FleetError> {
        let mut out = Vec::with_capacity(ring.older.len() + 1);
        for o in &ring.older {
            let sealed = b64()
                .decode(&o.sealed)
                .map_err(|e| corrupt("an older key", e))?;
            let k = key
                .open_older(&sealed, scope, o.epoch)
                .filter(|k| k.id() == o.key_id)
                .ok_or_else(|| FleetError::Integrity(format!("the keyring of {scope}")))?;
            // A host revoked now knew this key too.
            let until = match (o.until_rev, until_rev) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            out.push(OlderKey {
                epoch: o.epoch,
                key_id: o.key_id.clone(),
                until_rev: until,
                removal_seq: if until == o.until_rev {
                    o.removal_seq
                } else {
                    removal_seq
                },
                sealed: b64().encode(new.seal_older(&k, scope, o.epoch)),
            });
        }
        out.push(OlderKey {
            epoch: ring.epoch,
            key_id: key.id(),
            until_rev,
            removal_seq,
            sealed: b64().encode(new.seal_older(key, scope, ring.epoch)),
        });
        Ok(out)
    }

    /// A keyring of `key` at `epoch` for the members of `m` as they are
    /// now: wrapped to each member the chain grants the scope to, if it
    /// grants it to some only (this host must be one); else sealed once
    /// under the fleet's grant key, or in a fleet without one, wrapped to
    /// each member. Signed by this host when stored
    /// ([`Self::sign_keyring`]).
    pub(super) fn new_keyring(
        &self,
        scope: &VaultScope,
        key: &FleetKey,
        epoch: u64,
        m: &Membership,
    ) -> Result<Keyring, FleetError> {
        let mut wrapped = BTreeMap::new();
        let mut grant = None;
        // A scope granted to some members: wrapped to each of them, by one
        // of them.
        let audience = m.audience_now(&scope.to_string());
        if let Some(a) = &audience {
            if a.is_empty() {
                return Err(FleetError::NoAudience(scope.clone()));
            }
            if !a.contains(&self.recipient()) {
                return Err(FleetError::NotGranted(scope.clone()));
            }
            for r in a {
                wrapped.insert(r.clone(), b64().encode(key.wrap_to(r)?));
            }
        } else if let Some(id) = m.grant() {
            let sealed = self
                .grant_key(id, Some(scope))?
                .seal_scope_key(key, scope, epoch);
            grant = Some(GrantSealed {
                id: id.to_owned(),
                sealed: b64().encode(sealed),
            });
        } else {
            for r in m.recipients_at(m.seq()) {
                let w = b64().encode(key.wrap_to(&r)?);
                wrapped.insert(r, w);
            }
        }
        Ok(Keyring {
            fleet: m.fleet_id.clone(),
            scope: scope.to_string(),
            epoch,
            key_id: key.id(),
            seq: m.seq(),
            signer: self.signer.public_hex(),
            wrapped,
            grant,
            audience,
            older: Vec::new(),
            recovered: None,
        })
    }

    /// The keyring as stored: signed by this host.
    pub(super) fn sign_keyring(&self, ring: &Keyring) -> Vec<u8> {
        let mut ring = ring.clone();
        ring.signer = self.signer.public_hex();
        Signed::encode(&self.signer, KEYRING_DOMAIN, &ring)
    }
}
