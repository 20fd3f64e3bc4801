//! How a host checks what etcd serves against what it has pinned: the
//! membership chain from the fleet id on, and each scope's key epoch.

use super::local::{load_pin, pin_key, store_pin, LOCAL_SCOPE};
use super::records::Keyring;
use super::trust::{hash, FleetPin, Membership, ScopePin, Signed};
use super::{FleetError, FleetVault, Trust};
use crate::VaultScope;

impl FleetVault {
    pub(super) fn trust(&self) -> std::sync::MutexGuard<'_, Trust> {
        self.trust.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn fleet_pin_key(&self) -> String {
        pin_key("fleet", &[&self.store.options().prefix])
    }

    fn scope_pin_key(&self, scope: &VaultScope) -> String {
        pin_key("scope", &[&self.store.options().prefix, &scope.to_string()])
    }

    /// The fleet this host has joined under this prefix, if any.
    pub(super) fn fleet_pin(&self) -> Result<Option<FleetPin>, FleetError> {
        if let Some(p) = &self.trust().fleet_pin {
            return Ok(Some(p.clone()));
        }
        let pin: Option<FleetPin> = load_pin(&self.local, &self.fleet_pin_key())?;
        self.trust().fleet_pin.clone_from(&pin);
        Ok(pin)
    }

    /// Pins `m`'s newest entry, unless the stored pin (which another
    /// process of this host may have moved on) is newer; refuses `m` if it
    /// is behind or forked from the stored pin.
    pub(super) fn advance_fleet_pin(&self, m: &Membership) -> Result<(), FleetError> {
        let _lock = self.cache.lock_pins()?;
        let stored: Option<FleetPin> = load_pin(&self.local, &self.fleet_pin_key())?;
        if let Some(p) = &stored {
            m.check_pin(p)?;
            if p.seq >= m.seq() && (p.removal.is_some() || m.removal_rev.is_none()) {
                self.trust().fleet_pin = Some(p.clone());
                return Ok(());
            }
        }
        let mut pin = FleetPin::of(m);
        // The revision a removal entry was first seen at stays.
        if let Some((seq, rev)) = stored.and_then(|p| p.removal) {
            if seq == m.last_removal {
                pin.removal = Some((seq, rev));
            }
        }
        store_pin(&self.local, &self.fleet_pin_key(), &pin)?;
        self.trust().fleet_pin = Some(pin);
        Ok(())
    }

    /// Pins the removal entry `seq` this host has just created, at the
    /// revision `rev` its own transaction committed at: the line its
    /// rotation holds shards under the old key to, whoever deletes and
    /// writes the entry again before this host reads it back.
    pub(super) fn pin_own_removal(&self, seq: u64, rev: i64) -> Result<(), FleetError> {
        let _lock = self.cache.lock_pins()?;
        let Some(mut pin) = load_pin::<FleetPin>(&self.local, &self.fleet_pin_key())? else {
            return Err(FleetError::NotJoined);
        };
        pin.removal = Some((seq, rev));
        store_pin(&self.local, &self.fleet_pin_key(), &pin)?;
        self.trust().fleet_pin = Some(pin);
        Ok(())
    }

    /// The membership, verified from the pinned fleet id to etcd's newest
    /// chain entry (or, while etcd is unreachable and `offline_ok`, to the
    /// pinned entry from the cache). Refuses a chain that is behind the
    /// pin, forked from it, or not this fleet's.
    pub(super) fn membership(&self, offline_ok: bool) -> Result<Membership, FleetError> {
        match self.membership_once(offline_ok) {
            // Another process of this host may have pinned a newer entry
            // between this read and the check: one fresh look settles it.
            Err(FleetError::Forged(_)) => {
                self.trust().fleet_pin = None;
                self.membership_once(offline_ok)
            }
            other => other,
        }
    }

    fn membership_once(&self, offline_ok: bool) -> Result<Membership, FleetError> {
        let pin = self.fleet_pin()?.ok_or(FleetError::NotJoined)?;
        let base = self
            .trust()
            .membership
            .clone()
            .filter(|m| m.fleet_id == pin.fleet_id);
        let from = base.as_ref().map_or(0, Membership::seq);
        let prefix = self.store.key("chain/");
        let entries = match self.store.get_from(&self.chain_key(from), &prefix) {
            Ok(e) => {
                self.reached_etcd()?;
                e
            }
            Err(FleetError::Unreachable { .. }) if offline_ok => {
                return self.offline_membership(&pin, base);
            }
            Err(e) => return Err(e),
        };
        let mut entries = entries.into_iter();
        let first = entries.next();
        let mut m = match (base, first) {
            (Some(mut m), Some((_, rec))) => {
                let raw = rec.value;
                // The entry verified last must still be there, unchanged.
                let same = Signed::parse("the membership chain", &raw)
                    .is_ok_and(|s| hash(s.body.as_bytes()) == m.head());
                if !same {
                    return Err(FleetError::Forged(format!(
                        "the membership chain: entry {} differs from the one this host verified",
                        m.seq()
                    )));
                }
                if m.last_removal == m.seq() && m.removal_rev.is_none() {
                    m.removal_rev = Some(rec.create_revision);
                }
                m
            }
            (None, Some((_, rec))) => {
                let raw = rec.value;
                let m = Membership::genesis(&pin.fleet_id, &raw)?;
                self.cache.put(&self.chain_key(0), &raw)?;
                m
            }
            (_, None) => {
                return Err(FleetError::Forged(format!(
                    "the membership chain: it is missing, and this host has seen entry {}",
                    pin.seq
                )))
            }
        };
        for (key, rec) in entries {
            m.apply(&rec.value)?;
            if m.last_removal == m.seq() {
                m.removal_rev = Some(rec.create_revision);
            }
            self.cache.put(&key, &rec.value)?;
        }
        m.check_pin(&pin)?;
        let removal_unpinned =
            m.removal_rev.is_some() && pin.removal.is_none_or(|(s, _)| s != m.last_removal);
        if m.seq() > pin.seq || removal_unpinned {
            self.advance_fleet_pin(&m)?;
        }
        self.trust().membership = Some(m.clone());
        Ok(m)
    }

    /// The membership as this host last verified it, from memory or from
    /// the chain entries in its cache.
    fn offline_membership(
        &self,
        pin: &FleetPin,
        base: Option<Membership>,
    ) -> Result<Membership, FleetError> {
        if let Some(m) = base {
            return Ok(m);
        }
        let cached = |seq| {
            let key = self.chain_key(seq);
            self.cache.get(&key)?.ok_or(FleetError::NotCached(key))
        };
        let mut m = Membership::genesis(&pin.fleet_id, &cached(0)?)?;
        for seq in 1..=pin.seq {
            m.apply(&cached(seq)?)?;
        }
        m.check_pin(pin)?;
        Ok(m)
    }

    /// The key epoch and key id this host has pinned for `scope`.
    pub(super) fn scope_pin(&self, scope: &VaultScope) -> Result<Option<ScopePin>, FleetError> {
        if let Some(Some(p)) = self.trust().scope_pins.get(scope) {
            return Ok(Some(p.clone()));
        }
        // No pin is read afresh each time: another process of this host
        // may pin the scope at any moment, and a keyring missing after
        // that is tampering, not a scope that does not exist yet.
        let pin: Option<ScopePin> = load_pin(&self.local, &self.scope_pin_key(scope))?;
        if pin.is_some() {
            self.trust().scope_pins.insert(scope.clone(), pin.clone());
        }
        Ok(pin)
    }

    /// Drops this host's pin of `scope` and its shard counters: `fleet
    /// recover` after a restore from before the scope was made.
    pub(super) fn forget_scope(&self, scope: &VaultScope) -> Result<(), FleetError> {
        let _lock = self.cache.lock_pins()?;
        match self
            .local
            .delete(&super::local::local_ref(&self.scope_pin_key(scope)))
        {
            Ok(()) | Err(crate::VaultError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        self.trust().scope_pins.remove(scope);
        self.cache.forget_counters(scope)
    }

    /// Every scope of this fleet (this prefix) this host has pinned.
    pub(super) fn pinned_scopes(&self) -> Result<Vec<VaultScope>, FleetError> {
        let mut out = Vec::new();
        let local: VaultScope = LOCAL_SCOPE.parse().expect("a valid scope");
        for e in self.local.list(Some(&local))? {
            let key = e.vault_ref.key().as_str();
            if !key.starts_with("pin-scope-") {
                continue;
            }
            let Some(pin) = load_pin::<ScopePin>(&self.local, key)? else {
                continue;
            };
            // The key hashes the prefix and the scope: a pin of the same
            // scope under another prefix (another fleet) is not this one's.
            match pin.scope.parse::<VaultScope>() {
                Ok(scope) if self.scope_pin_key(&scope) == key => out.push(scope),
                _ => {}
            }
        }
        Ok(out)
    }

    /// Refuses `ring` if its epoch is below the pinned one, or it holds
    /// another key at the pinned epoch; `true` if it is newer than the pin.
    pub(super) fn check_scope_pin(
        &self,
        scope: &VaultScope,
        ring: &Keyring,
    ) -> Result<bool, FleetError> {
        match self.scope_pin(scope)? {
            Some(p) => compare_scope_pin(scope, ring, &p),
            None => Ok(true),
        }
    }

    /// Pins `ring`'s epoch and key id, under the pin lock, unless the
    /// stored pin (another process of this host may have moved it on) is
    /// as new; refuses `ring` if the stored pin is newer.
    pub(super) fn store_scope_pin(
        &self,
        scope: &VaultScope,
        ring: &Keyring,
    ) -> Result<(), FleetError> {
        let _lock = self.cache.lock_pins()?;
        let key = self.scope_pin_key(scope);
        let stored: Option<ScopePin> = load_pin(&self.local, &key)?;
        if let Some(p) = &stored {
            if !compare_scope_pin(scope, ring, p)? {
                self.trust().scope_pins.insert(scope.clone(), stored);
                return Ok(());
            }
        }
        let pin = ScopePin {
            scope: scope.to_string(),
            epoch: ring.epoch,
            key_id: ring.key_id.clone(),
            settled: ring.older.is_empty(),
        };
        store_pin(&self.local, &key, &pin)?;
        self.trust().scope_pins.insert(scope.clone(), Some(pin));
        Ok(())
    }
}

/// `true` if `ring` is newer than pin `p` (a newer epoch, or the pinned
/// epoch's keyring once its rotation dropped the replaced keys), `false`
/// if the same; an older epoch, another key at the same epoch, or the
/// replaced keys carried again after this host saw them dropped, is
/// refused.
fn compare_scope_pin(scope: &VaultScope, ring: &Keyring, p: &ScopePin) -> Result<bool, FleetError> {
    if ring.epoch < p.epoch {
        return Err(FleetError::Forged(format!(
            "the keyring of {scope}: its key epoch {} is older than epoch {}, which this host has seen",
            ring.epoch, p.epoch
        )));
    }
    if ring.epoch == p.epoch && ring.key_id != p.key_id {
        return Err(FleetError::Forged(format!(
            "the keyring of {scope}: it holds another key at epoch {} than the one this host has seen",
            ring.epoch
        )));
    }
    if ring.epoch == p.epoch && p.settled && !ring.older.is_empty() {
        return Err(FleetError::Forged(format!(
            "the keyring of {scope}: it carries the keys its rotation replaced, which this host has seen dropped"
        )));
    }
    Ok(ring.epoch > p.epoch || (!p.settled && ring.older.is_empty()))
}
