//! The fleet's grant key: one random key per grant era (from entry 0, and
//! from each removal, to the next removal), wrapped once to each member at
//! `grant/<id>/<recipient>`. The keys of scopes every member reads are
//! sealed under it, once, so a keyring does not grow with the fleet, an
//! enrolment wraps one key instead of one per scope, and a revocation
//! wraps one new key per member and seals one new key per scope, instead
//! of members times scopes.
//!
//! The chain names each era's key by a 256-bit commitment to it
//! ([`FleetKey::commitment`]; a removal's entry names the new one, written
//! to every remaining member before the entry), so the wraps need no
//! signature: a wrap that does not open to the key the verified chain
//! names is refused. A revoked host keeps the key of
//! the eras it belonged to; keyrings sealed under one are from before its
//! removal, which a host refuses but to rotate them.

use super::etcd::{Change, Expect};
use super::keys::FleetKey;
use super::trust::Membership;
use super::{FleetError, FleetVault};
use crate::VaultScope;

/// How many wraps one etcd transaction writes (etcd refuses more than
/// 128 operations in one by default).
const WRAPS_PER_TXN: usize = 100;

impl FleetVault {
    /// Where the grant key `id` wrapped to `recipient` is kept.
    fn grant_wrap_key(&self, id: &str, recipient: &str) -> String {
        self.store.key(&format!("grant/{id}/{recipient}"))
    }

    /// The grant key `id`, unwrapped from this host's copy (read from
    /// etcd, or the cache while etcd is unreachable) and checked against
    /// the id; kept in memory once verified (an id names one key for
    /// good). `scope`: the scope it was needed for, for the error.
    pub(super) fn grant_key(
        &self,
        id: &str,
        scope: Option<&VaultScope>,
    ) -> Result<FleetKey, FleetError> {
        if let Some(k) = self.trust().grant_keys.get(id) {
            return Ok(k.clone());
        }
        let path = self.grant_wrap_key(id, &self.recipient());
        let not_enrolled = || FleetError::NotEnrolled {
            recipient: self.card().to_string(),
            scope: scope.cloned(),
        };
        let rec = self.read(&path, true)?.ok_or_else(not_enrolled)?;
        let key = FleetKey::unwrap_for(&self.host, &rec.value).ok_or_else(not_enrolled)?;
        if key.commitment() != id {
            return Err(FleetError::Forged(format!(
                "the grant key wrapped to this host: it is not the key {id} the membership chain names"
            )));
        }
        self.keep(&path, &rec)?;
        self.trust().grant_keys.insert(id.to_owned(), key.clone());
        Ok(key)
    }

    /// Writes `key` (a new grant key) wrapped to each of `recipients`, a
    /// hundred to a transaction, before the chain entry that names it:
    /// nothing refers to these wraps until that entry lands, and a
    /// run that loses the race for the entry leaves them unread. The key
    /// is not kept in memory: whatever is sealed under it later is sealed
    /// under this host's copy as read back from etcd, so a copy that went
    /// missing stops the run instead of sealing scopes to a key only this
    /// process holds.
    pub(super) fn write_grant_wraps<'a>(
        &self,
        key: &FleetKey,
        recipients: impl IntoIterator<Item = &'a String>,
    ) -> Result<(), FleetError> {
        let id = key.commitment();
        let mut batch = Vec::with_capacity(WRAPS_PER_TXN);
        for r in recipients {
            batch.push(Change::Put(self.grant_wrap_key(&id, r), key.wrap_to(r)?));
            if batch.len() == WRAPS_PER_TXN {
                self.store.apply(&[], &std::mem::take(&mut batch))?;
            }
        }
        if !batch.is_empty() {
            self.store.apply(&[], &batch)?;
        }
        Ok(())
    }

    /// The compare that this host's wrap of the grant key in force in `m`
    /// is still in etcd, for a transaction that seals under that key or
    /// relies on it: a key whose every wrap was deleted would otherwise
    /// live on only in this process, and what is sealed under it be lost
    /// when the process ends. A fleet without grant keys needs none (the
    /// chain's next entry being absent stands in for it).
    pub(super) fn own_grant_wrap(&self, m: &Membership) -> Result<(String, Expect), FleetError> {
        Ok(match m.grant() {
            Some(id) => (self.grant_wrap_key(id, &self.recipient()), Expect::Present),
            None => (self.chain_key(m.seq() + 1), Expect::Absent),
        })
    }

    /// Deletes every wrap of the grant key `id`: one this host made for an
    /// entry that lost the race, which nothing names.
    pub(super) fn drop_grant_wraps(&self, id: &str) -> Result<(), FleetError> {
        let wraps: Vec<Change> = self
            .store
            .keys_under(&self.store.key(&format!("grant/{id}/")))?
            .into_iter()
            .map(Change::Delete)
            .collect();
        for batch in wraps.chunks(WRAPS_PER_TXN) {
            self.store.apply(&[], batch)?;
        }
        Ok(())
    }

    /// Wraps the grant key in force in `m` to `recipient`, a member of `m`
    /// (an enrolment), unless it has a wrap of it already; only while the
    /// chain has not moved past `m` (a removal landing first brings a new
    /// grant key, which is wrapped instead). `Some(true)`: written;
    /// `Some(false)`: no grant key, or a wrap is there; `None`: the chain
    /// moved, look again.
    pub(super) fn wrap_grant_to(
        &self,
        m: &Membership,
        recipient: &str,
    ) -> Result<Option<bool>, FleetError> {
        let Some(id) = m.grant() else {
            return Ok(Some(false));
        };
        let path = self.grant_wrap_key(id, recipient);
        // Written again even if there is one: a wrap of someone else's key
        // put there (anyone who can write etcd knows the recipient and the
        // key's commitment) would leave the host refusing every scope.
        let there = self.store.get(&path)?.map(|r| r.mod_revision);
        let wrapped = self.grant_key(id, None)?.wrap_to(recipient)?;
        let ok = self.store.apply(
            &[
                (path.clone(), there.map_or(Expect::Absent, Expect::Revision)),
                (self.chain_key(m.seq() + 1), Expect::Absent),
                self.own_grant_wrap(m)?,
            ],
            &[Change::Put(path, wrapped)],
        )?;
        Ok(ok.then_some(true))
    }

    /// Deletes the wraps of the grant keys of `m`'s past eras that no
    /// keyring is sealed under: what a revocation leaves of the eras
    /// before it once every scope has moved on (they would otherwise add a
    /// record per member at every revocation). Only keys the verified
    /// chain names as past are ever deleted, never one it does not name
    /// (a revocation running elsewhere writes its new key's wraps before
    /// its entry), and only while the chain has not moved past `m`. A
    /// keyring under an era before `m`'s cannot be written any more, so
    /// none comes to need a key deleted here.
    pub(super) fn prune_grant_wraps(&self, m: &Membership) -> Result<usize, FleetError> {
        let mut past = m.past_grants();
        if past.is_empty() {
            return Ok(0);
        }
        let mut keep = std::collections::BTreeSet::new();
        for (_, rec) in self.scopes_with_keyrings()? {
            let ring = super::trust::Signed::parse("a keyring", &rec.value)
                .ok()
                .and_then(|s| serde_json::from_str::<super::Keyring>(&s.body).ok());
            match ring {
                Some(r) => keep.extend(r.grant.map(|g| g.id)),
                // Unreadable: which key it needs is unknown, so nothing goes.
                None => return Ok(0),
            }
        }
        past.retain(|id| !keep.contains(id));
        let mut stale = Vec::new();
        for id in &past {
            let prefix = self.store.key(&format!("grant/{id}/"));
            stale.extend(
                self.store
                    .keys_under(&prefix)?
                    .into_iter()
                    .map(Change::Delete),
            );
        }
        let guard = [
            (self.chain_key(m.seq() + 1), Expect::Absent),
            self.own_grant_wrap(m)?,
        ];
        let mut deleted = 0;
        for batch in stale.chunks(WRAPS_PER_TXN) {
            if !self.store.apply(&guard, batch)? {
                break;
            }
            deleted += batch.len();
        }
        Ok(deleted)
    }
}
