//! Scopes granted to some members only (`sealfs fleet grant`). Who a scope
//! is granted to is the membership chain's word: an audience entry, signed
//! by a member the scope is granted to (by any member while it is granted
//! to every member, or to no member left), names the scope and its members
//! (or every member again). From that entry on, a keyring of the scope
//! must be for exactly those members (less the hosts revoked since), wrap
//! the scope's key to each of them and to no one else, and be signed by
//! one of them; a keyring from before the entry is stale, as one from
//! before a revocation is. Every host verifies the chain from its pin, so
//! an etcd writer can neither put an older keyring back nor widen an
//! audience, and a member outside it cannot sign its way in.
//!
//! The change gives the scope a new key, wrapped to the new audience, that
//! carries the old one until the index shards have moved to it (as a
//! revocation's rotation does): a member dropped from the audience keeps
//! the old key, so shards under it are taken over only as etcd held them
//! when the audience entry was written (no write through sealfs can land
//! under the old key after it: every write requires the chain unchanged).

use std::collections::BTreeSet;

use super::etcd::{Change, Expect};
use super::keys::FleetKey;
use super::records::KeyringUse;
use super::trust::{self, Signed, CHAIN_DOMAIN};
use super::{FleetError, FleetVault};
use crate::VaultScope;

impl FleetVault {
    /// `sealfs fleet grant`: grants `scope` to the members with these
    /// cards or recipients only, this host among them (`None`: to every
    /// member again): appends the audience entry and the scope's new
    /// keyring for them in one transaction, then moves its shards to the
    /// new key. Run on a member the scope is granted to. Run again after
    /// an interruption, it finishes. Returns whether the chain changed.
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
                if !set.contains(&self.recipient()) {
                    return Err(FleetError::GrantLeavesOut(scope.clone()));
                }
                Some(set)
            }
        };
        let name = scope.to_string();
        let m = self.membership(false)?;
        self.require_member(&m)?;
        let members = m.recipients_at(m.seq());
        if let Some(r) = audience.iter().flatten().find(|r| !members.contains(*r)) {
            return Err(FleetError::NotMember(r.clone()));
        }
        if m.audience_now(&name)
            .is_some_and(|a| !a.is_empty() && !a.contains(&self.recipient()))
        {
            return Err(FleetError::NotGranted(scope.clone()));
        }
        // The entry and the scope's new keyring, in one transaction: no
        // host ever sees the one without the other, and the line for
        // shards under the old key is signed into the keyring.
        let changed = self.retry(&format!("the keys of {scope}"), || {
            let m = self.membership(false)?;
            let rec = self.read(&self.keyring_key(scope), false)?;
            // Refuses a keyring from before the last revocation (`fleet
            // revoke` finishes first) or from before the scope's last
            // audience entry (never written by a grant: tampering).
            let old = match &rec {
                Some(rec) => Some(self.parse_keyring(scope, rec, &m, KeyringUse::Current)?),
                None if self.scope_pin(scope)?.is_some() => {
                    return Err(FleetError::Forged(format!(
                        "the keyring of {scope}: it is missing, and this host has seen it"
                    )))
                }
                None => None,
            };
            let same = match m.scope_audience(&name) {
                Some(a) => a.audience == audience,
                None => audience.is_none(),
            };
            if same {
                return Ok(Some(false));
            }
            let body =
                trust::audience_entry(&m, self.card(), &self.signer, scope, audience.clone());
            let raw = Signed::encode(&self.signer, CHAIN_DOMAIN, &body);
            let mut after = m.clone();
            after.apply(&raw)?;
            let entry_key = self.chain_key(body.seq);
            let mut expect = vec![
                (entry_key.clone(), Expect::Absent),
                self.own_grant_wrap(&m)?,
            ];
            let mut changes = vec![Change::Put(entry_key, raw)];
            let mut made = None;
            match (&rec, old) {
                (Some(rec), Some((ring, key))) => {
                    let epoch = ring.epoch.checked_add(1).ok_or_else(|| {
                        FleetError::Forged(format!(
                            "the keys of {scope}: the epoch is at its limit"
                        ))
                    })?;
                    let new_key = FleetKey::generate();
                    let mut new_ring = self.new_keyring(scope, &new_key, epoch, &after)?;
                    // Shards under the old key are taken as etcd holds them
                    // now: the transaction, sent at once, fails if one is
                    // written before it.
                    let line = self.store.revision()?;
                    new_ring.older =
                        Self::retire(scope, &ring, &key, &new_key, (Some(line), None))?;
                    new_ring.recovered = ring.recovered;
                    expect.push((self.keyring_key(scope), Expect::Revision(rec.mod_revision)));
                    expect.push((self.index_prefix(scope), Expect::NothingSince(line)));
                    changes.push(Change::Put(
                        self.keyring_key(scope),
                        self.sign_keyring(&new_ring),
                    ));
                    made = Some(new_ring);
                }
                // No keyring yet: the first write makes it, for this
                // audience. A scope's keyring comes before its index: shards
                // without one were put there by someone else.
                _ => {
                    if !self.store.keys_under(&self.index_prefix(scope))?.is_empty() {
                        return Err(FleetError::Forged(format!(
                            "the index of {scope}: it has shards and no keyring"
                        )));
                    }
                    expect.push((self.keyring_key(scope), Expect::Absent));
                }
            }
            if !self.store.apply(&expect, &changes)? {
                return Ok(None);
            }
            if let Some(ring) = made {
                self.store_scope_pin(scope, &ring)?;
            }
            Ok(Some(true))
        })?;
        self.reset_memo_scopes();
        // Also after an interrupted run: the shards move to the new key,
        // and the old one is dropped.
        self.move_shards(scope, None)?;
        Ok(changed)
    }
}
