//! Scopes granted to some members only (`sealfs fleet grant`). Such a
//! scope's keyring names its audience and wraps the scope's key (age) to
//! exactly those members, instead of sealing it under the fleet's grant
//! key; the keyring is signed like any other, so only a member can set or
//! change an audience, and hosts outside it verify the keyring (and pin
//! it) without being able to open it.
//!
//! Changing an audience gives the scope a new key, wrapped to the new
//! audience, that carries the old one until the index shards have moved
//! to it (as a revocation's rotation does): a member dropped from the
//! audience keeps the old key, so shards under it are taken over only as
//! etcd held them when the audience changed (the change's transaction
//! requires that no shard of the scope was written since that revision).

use std::collections::BTreeSet;

use super::etcd::{Change, Expect};
use super::keys::FleetKey;
use super::records::KeyringUse;
use super::{FleetError, FleetVault};
use crate::VaultScope;

impl FleetVault {
    /// `sealfs fleet grant`: grants `scope` to the members with these
    /// cards or recipients only (`None`: to every member, through the
    /// grant key), under a new key; creates the scope if it has no keyring
    /// yet. This host must be able to read the scope (or create it). Run
    /// again after an interruption, it finishes moving the shards. Returns
    /// whether the audience changed.
    pub fn grant_scope(
        &self,
        scope: &VaultScope,
        to: Option<&[String]>,
    ) -> Result<bool, FleetError> {
        let audience: Option<BTreeSet<String>> = match to {
            None => None,
            Some(hosts) => {
                let mut set = BTreeSet::new();
                for who in hosts {
                    let recipient = who.trim().split(':').next().unwrap_or_default();
                    super::keys::parse_recipient(recipient)?;
                    set.insert(recipient.to_owned());
                }
                if set.is_empty() {
                    return Err(FleetError::NoAudience(scope.clone()));
                }
                Some(set)
            }
        };
        let m = self.membership(false)?;
        self.require_member(&m)?;
        let members = m.recipients_at(m.seq());
        if let Some(r) = audience.iter().flatten().find(|r| !members.contains(*r)) {
            return Err(FleetError::NotMember(r.clone()));
        }
        let changed = self.retry(&format!("the keys of {scope}"), || {
            let m = self.membership(false)?;
            let Some(rec) = self.read(&self.keyring_key(scope), false)? else {
                return self.create_granted(scope, &m, audience.as_ref());
            };
            let ring = self.verify_keyring(scope, &rec, &m, KeyringUse::Current)?;
            if ring.audience == audience {
                return Ok(Some(false));
            }
            let key = self.open_keyring(scope, &ring)?;
            // The line: shards under the old key are taken as etcd holds
            // them now; the transaction fails if one is written before it.
            let line = self.store.revision()?;
            let epoch = ring.epoch.checked_add(1).ok_or_else(|| {
                FleetError::Forged(format!("the keys of {scope}: the epoch is at its limit"))
            })?;
            let new_key = FleetKey::generate();
            let mut new_ring = self.new_keyring(scope, &new_key, epoch, &m, audience.as_ref())?;
            new_ring.older = Self::retire(scope, &ring, &key, &new_key, (Some(line), None))?;
            new_ring.recovered = ring.recovered;
            let ok = self.store.apply(
                &[
                    (self.keyring_key(scope), Expect::Revision(rec.mod_revision)),
                    (self.chain_key(m.seq() + 1), Expect::Absent),
                    self.own_grant_wrap(&m)?,
                    (self.index_prefix(scope), Expect::NothingSince(line)),
                ],
                &[Change::Put(
                    self.keyring_key(scope),
                    self.sign_keyring(&new_ring),
                )],
            )?;
            if !ok {
                return Ok(None);
            }
            self.store_scope_pin(scope, &new_ring)?;
            Ok(Some(true))
        })?;
        self.reset_memo_scopes();
        // Also after an interrupted run: the shards move to the new key,
        // and the old one is dropped.
        self.move_shards(scope, None)?;
        Ok(changed)
    }

    /// The first keyring of `scope`, for `audience`.
    fn create_granted(
        &self,
        scope: &VaultScope,
        m: &super::trust::Membership,
        audience: Option<&BTreeSet<String>>,
    ) -> Result<Option<bool>, FleetError> {
        // A keyring this host has seen does not disappear.
        if self.scope_pin(scope)?.is_some() {
            return Err(FleetError::Forged(format!(
                "the keyring of {scope}: it is missing, and this host has seen it"
            )));
        }
        if let Some(id) = m.grant() {
            self.trust().grant_keys.remove(id);
        }
        let key = FleetKey::generate();
        let ring = self.new_keyring(scope, &key, 1, m, audience)?;
        let ok = self.store.apply(
            &[
                (self.keyring_key(scope), Expect::Absent),
                (self.chain_key(m.seq() + 1), Expect::Absent),
                self.own_grant_wrap(m)?,
            ],
            &[Change::Put(
                self.keyring_key(scope),
                self.sign_keyring(&ring),
            )],
        )?;
        if !ok {
            return Ok(None);
        }
        self.store_scope_pin(scope, &ring)?;
        Ok(Some(true))
    }
}
