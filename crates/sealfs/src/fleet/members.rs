//! Fleet membership: init, join, enroll, revoke and status. Each change of
//! membership is one signed chain entry, written with compare-and-swap,
//! followed by one small transaction per scope (its keyring); a run cut
//! short is finished by running the same command again.

use base64::Engine;

use super::etcd::{Change, Expect, Record};
use super::keys::FleetKey;
use super::records::KeyringUse;
use super::trust::{self, hash, HostCard, Membership, Op, Signed, CHAIN_DOMAIN};
use super::{
    b64, next_counter, FleetError, FleetStatus, FleetVault, Joined, Keyring, Recovered, Revoked,
    ScopeKeys, ScopeStatus, ShardState,
};
use crate::VaultScope;

impl FleetVault {
    /// `sealfs fleet init`: starts a fleet with this host as its member and
    /// pins it; returns the fleet id. Running it again on the founder, or
    /// on any member, only returns the id.
    pub fn init(&self) -> Result<String, FleetError> {
        let me = self.card();
        let grant = FleetKey::generate();
        let body = trust::genesis_entry(me.clone(), &self.signer, Some(grant.commitment()));
        let genesis = Signed::encode(&self.signer, trust::genesis_domain(&body), &body);
        let key = self.chain_key(0);
        let fresh = self.fleet_pin()?.is_none() && self.store.get(&key)?.is_none();
        // The grant key goes first: the entry that names it must never
        // land without it.
        if fresh {
            self.write_grant_wraps(&grant, [&me.recipient])?;
        }
        if fresh
            && self.store.apply(
                &[(key.clone(), Expect::Absent)],
                &[Change::Put(key.clone(), genesis.clone())],
            )?
        {
            let body = Signed::parse("the membership chain", &genesis)?.body;
            let m = Membership::genesis(&hash(body.as_bytes()), &genesis)?;
            self.cache.put(&key, &genesis)?;
            self.advance_fleet_pin(&m)?;
            self.trust().membership = Some(m.clone());
            return Ok(m.fleet_id);
        }
        if fresh {
            // Another host's entry 0 won: nothing names this key.
            self.drop_grant_wraps(&grant.commitment())?;
        }
        // A fleet exists: fine if this host is a member of it.
        match self.membership(false) {
            Ok(m) if m.has_recipient(&me.recipient) => Ok(m.fleet_id),
            Ok(_) | Err(FleetError::NotJoined) => {
                Err(FleetError::InitialisedElsewhere(me.to_string()))
            }
            Err(e) => Err(e),
        }
    }

    /// `sealfs fleet join`: verifies the whole chain against the join
    /// token (`<fleet id>:<seq>:<hash>`, printed by `fleet enroll` and
    /// `fleet status` on a member) and pins its newest entry; `true` if
    /// this host is a member. Run again with a token from a trusted member,
    /// it only moves this host's pin forward; with `replace`, it replaces
    /// it (the way back after a deliberate restore of etcd, or after this
    /// host was shown a forked chain).
    pub fn join(
        &self,
        token: &str,
        replace: bool,
        forget: &[VaultScope],
    ) -> Result<Joined, FleetError> {
        if !forget.is_empty() && !replace {
            return Err(FleetError::CannotForget(forget[0].clone()));
        }
        let want = trust::FleetPin::parse_token(token)?;
        let held = self.fleet_pin()?;
        if let Some(p) = &held {
            if p.fleet_id != want.fleet_id {
                return Err(FleetError::OtherFleet {
                    pinned: p.fleet_id.clone(),
                    found: want.fleet_id,
                });
            }
        }
        let mut entries = self
            .store
            .get_prefix(&self.store.key("chain/"))?
            .into_iter();
        let (_, first) = entries.next().ok_or(FleetError::NotInitialised)?;
        let mut m = Membership::genesis(&want.fleet_id, &first.value)?;
        let mut raw = vec![(self.chain_key(0), first.value)];
        for (key, rec) in entries {
            m.apply(&rec.value)?;
            if m.last_removal == m.seq() {
                m.removal_rev = Some(rec.create_revision);
            }
            raw.push((key, rec.value));
        }
        m.check_pin(&want)?;
        if let (Some(p), false) = (&held, replace) {
            m.check_pin(p).map_err(|e| {
                FleetError::Forged(format!(
                    "{}; if etcd was restored from a backup, or this host was shown a fork, \
                     run `sealfs fleet join --replace-pin` with a token from a member you trust",
                    e.to_string()
                        .trim_start_matches("refusing ")
                        .trim_end_matches("; etcd was rolled back or tampered with")
                ))
            })?;
        }
        let missing_now = if replace {
            self.missing_scopes(forget)?
        } else {
            Vec::new()
        };
        for (key, value) in &raw {
            self.cache.put(key, value)?;
        }
        let pin = trust::FleetPin::of(&m);
        {
            let _lock = self.cache.lock_pins()?;
            super::local::store_pin(&self.local, &self.fleet_pin_key(), &pin)?;
        }
        let member = m.has_recipient(&self.recipient());
        {
            let mut t = self.trust();
            t.fleet_pin = Some(pin);
            t.membership = Some(m);
        }
        // Only now, the pin being replaced on purpose: a scope pinned here
        // that etcd lacks is forgotten only if the operator names it.
        let mut missing = Vec::new();
        for scope in missing_now {
            if forget.contains(&scope) {
                self.forget_scope(&scope)?;
            } else {
                missing.push(scope);
            }
        }
        Ok(Joined { member, missing })
    }

    /// The scopes this host has pinned that have no keyring in etcd, after
    /// checking that each of `forget` is one of them (else nothing may
    /// change): what `--forget-scope` may name.
    fn missing_scopes(&self, forget: &[VaultScope]) -> Result<Vec<VaultScope>, FleetError> {
        let mut missing = Vec::new();
        for scope in self.pinned_scopes()? {
            if self.store.get(&self.keyring_key(&scope))?.is_none() {
                missing.push(scope);
            }
        }
        if let Some(s) = forget.iter().find(|s| !missing.contains(s)) {
            return Err(FleetError::CannotForget(s.clone()));
        }
        Ok(missing)
    }

    pub(super) fn require_member(&self, m: &Membership) -> Result<(), FleetError> {
        if m.has_recipient(&self.recipient()) {
            Ok(())
        } else {
            Err(FleetError::NotEnrolled {
                recipient: self.card().to_string(),
                scope: None,
            })
        }
    }

    /// Appends `op` on `card` to the chain (compare-and-swap on the next
    /// entry's key), unless `done` says the chain already holds it. A
    /// removal in a fleet with grant keys names a new one, wrapped first to
    /// every member that remains.
    fn append(
        &self,
        op: Op,
        card: &HostCard,
        mut done: impl FnMut(&Membership) -> Result<bool, FleetError>,
    ) -> Result<Membership, FleetError> {
        self.retry("the membership chain", || {
            let m = self.membership(false)?;
            self.require_member(&m)?;
            if done(&m)? {
                return Ok(Some(m));
            }
            // Grant keys are a fleet's from its start: one made by a build
            // without them keeps wrapping scope keys to each member, which
            // every build reads.
            let grant = if op == Op::Remove && m.grant_at(0).is_some() {
                let key = FleetKey::generate();
                let stay = m.recipients_at(m.seq());
                self.write_grant_wraps(&key, stay.iter().filter(|r| **r != card.recipient))?;
                Some(key.commitment())
            } else {
                None
            };
            let body = trust::entry(&m, op, card.clone(), &self.signer, grant.clone());
            let raw = Signed::encode(&self.signer, CHAIN_DOMAIN, &body);
            let key = self.chain_key(body.seq);
            // Legitimate writes under the old key all come before the entry:
            // if the answer is lost, the revision read before sending is
            // the line (stricter than the commit's), whoever writes the
            // entry again later.
            let before = if op == Op::Remove {
                self.store.revision()?
            } else {
                0
            };
            let sent = self
                .store
                .apply_at(&[(key.clone(), Expect::Absent)], &[Change::Put(key.clone(), raw)]);
            let rev = match sent {
                Ok(Some(rev)) => rev,
                Ok(None) => {
                    // Another entry won: nothing will ever name this key.
                    if let Some(id) = &grant {
                        self.drop_grant_wraps(id)?;
                    }
                    return Ok(None);
                }
                Err(e @ FleetError::NoAnswer { .. }) => {
                    if op == Op::Remove {
                        self.pin_own_removal(body.seq, before)?;
                    }
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            if op == Op::Remove {
                self.pin_own_removal(body.seq, rev)?;
            }
            // Read back through the checks, which also moves the pin on.
            let m = self.membership(false)?;
            if self.store.get(&key)?.map(|r| r.create_revision) != Some(rev) {
                return Err(FleetError::Forged(format!(
                    "entry {} of the membership chain: it was deleted and written again since this host wrote it",
                    body.seq
                )));
            }
            Ok(Some(m))
        })
    }

    /// Every scope that has a keyring, and every scope this host has
    /// pinned: one whose keyring has gone missing since is listed, so the
    /// callers (listings, `fleet revoke`, `fleet enroll`) report it as
    /// tampering instead of leaving it out.
    pub(crate) fn scope_names(&self) -> Result<Vec<VaultScope>, FleetError> {
        let prefix = self.store.key("keyring/");
        let mut out = std::collections::BTreeSet::new();
        for k in self.store.keys_under(&prefix)? {
            // Not a scope name: nothing sealfs wrote, and nothing to stop
            // the fleet's other scopes for.
            match k[prefix.len()..].parse::<VaultScope>() {
                Ok(scope) => {
                    out.insert(scope);
                }
                Err(_) => {
                    tracing::warn!(key = %k.escape_debug(), "ignoring a keyring that names no scope")
                }
            }
        }
        out.extend(self.pinned_scopes()?);
        Ok(out.into_iter().collect())
    }

    /// Every scope that has a keyring, with its keyring as read.
    pub(crate) fn scopes_with_keyrings(&self) -> Result<Vec<(VaultScope, Record)>, FleetError> {
        let prefix = self.store.key("keyring/");
        let mut out = Vec::new();
        for (k, rec) in self.store.get_prefix(&prefix)? {
            let name = &k[prefix.len()..];
            // Not a scope name: nothing sealfs wrote, and nothing to stop
            // the fleet's other scopes for.
            match name.parse::<VaultScope>() {
                Ok(scope) => out.push((scope, rec)),
                Err(_) => {
                    tracing::warn!(key = %k.escape_debug(), "ignoring a keyring that names no scope")
                }
            }
        }
        Ok(out)
    }

    /// The etcd user of the host `recipient` in this fleet
    /// ([`super::host_etcd_user`]).
    pub fn host_etcd_user(&self, recipient: &str) -> String {
        super::host_etcd_user(&self.store.options().prefix, recipient)
    }

    /// `sealfs fleet enroll`: lets the host with `card` (`age1...:<hex>`)
    /// read and write every scope; returns the join token, which that host
    /// pins with `sealfs fleet join`. Run again after an interruption, it
    /// finishes wrapping the keys. With `etcd_user`, first creates the
    /// host's own etcd user ([`Self::host_etcd_user`], holding only
    /// [`super::EtcdStore::host_role`]; run again, with a new password),
    /// which needs etcd root rights; the token then carries its login,
    /// sealed to the host, and `fleet join` stores it there.
    pub fn enroll(&self, card: &str, etcd_user: bool) -> Result<String, FleetError> {
        let card = HostCard::parse(card)?;
        let login = if etcd_user {
            // A host revoked before gets no login: the enrolment below
            // would refuse it anyway. The user is made before the host is
            // enrolled, so a revocation racing this one removes it.
            let m = self.membership(false)?;
            match m.card_of(&card.recipient) {
                Some((_, false)) => return Err(FleetError::Revoked(card.to_string())),
                Some((c, true)) if *c != card => {
                    return Err(FleetError::AlreadyMember(card.recipient.clone()))
                }
                _ => {}
            }
            let user = self.host_etcd_user(&card.recipient);
            let password = super::keys::random_password();
            self.store.put_host_user(&user, &password)?;
            let fleet = (m.fleet_id.as_str(), self.store.options().prefix.as_str());
            Some(super::keys::seal_login(
                &card.recipient,
                fleet,
                &user,
                &password,
            )?)
        } else {
            None
        };
        let token = match self.enroll_card(&card) {
            // A member given its own user (again, or instead of a shared
            // login): the token carries the new login.
            Err(FleetError::AlreadyMember(_)) if login.is_some() => {
                join_token(&self.membership(false)?)
            }
            other => other?,
        };
        Ok(match login {
            Some(sealed) => format!(
                "{token}:{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed)
            ),
            None => token,
        })
    }

    fn enroll_card(&self, card: &HostCard) -> Result<String, FleetError> {
        let card = card.clone();
        let mut was_member = false;
        let m = self.append(Op::Add, &card, |m| match m.card_of(&card.recipient) {
            Some((c, true)) if *c == card => {
                was_member = true;
                Ok(true)
            }
            Some((_, true)) => Err(FleetError::AlreadyMember(card.recipient.clone())),
            Some((_, false)) => Err(FleetError::Revoked(card.to_string())),
            None => Ok(false),
        })?;
        // The grant key opens every scope sealed under it.
        let mut wrapped = usize::from(self.retry("the grant key", || {
            let m = self.membership(false)?;
            if !m
                .card_of(&card.recipient)
                .is_some_and(|(c, current)| current && *c == card)
            {
                return Err(FleetError::Revoked(card.to_string()));
            }
            self.wrap_grant_to(&m, &card.recipient)
        })?);
        let mut failed = Vec::new();
        for scope in self.scope_names()? {
            let added = match self.retry(&format!("the keyring of {scope}"), || {
                let m = self.membership(false)?;
                // Revoked meanwhile: nothing more is wrapped to it.
                if !m
                    .card_of(&card.recipient)
                    .is_some_and(|(c, current)| current && *c == card)
                {
                    return Err(FleetError::Revoked(card.to_string()));
                }
                let Some(rec) = self.read(&self.keyring_key(&scope), false)? else {
                    // A keyring this host has seen does not disappear.
                    if self.scope_pin(&scope)?.is_some() {
                        return Err(FleetError::Forged(format!(
                            "the keyring of {scope}: it is missing, and this host has seen it"
                        )));
                    }
                    return Ok(Some(false));
                };
                let mut ring = self.verify_keyring(&scope, &rec, &m, KeyringUse::Current)?;
                // Sealed under the grant key (wrapped above), or granted to
                // some members only (a new host is not one of them).
                if ring.grant.is_some()
                    || ring.audience.is_some()
                    || ring.wrapped.contains_key(&card.recipient)
                {
                    return Ok(Some(false));
                }
                let key = self.open_keyring(&scope, &ring)?;
                ring.wrapped.insert(
                    card.recipient.clone(),
                    b64().encode(key.wrap_to(&card.recipient)?),
                );
                // The new host joined at or before `m`; the ring may name a
                // newer entry already (another enrolment).
                ring.seq = ring.seq.max(m.seq());
                let ok = self.store.apply(
                    &[
                        (self.keyring_key(&scope), Expect::Revision(rec.mod_revision)),
                        // Under this membership only: a revocation landing
                        // first makes this keyring one to rotate, not extend.
                        (self.chain_key(m.seq() + 1), Expect::Absent),
                    ],
                    &[Change::Put(
                        self.keyring_key(&scope),
                        self.sign_keyring(&ring),
                    )],
                )?;
                Ok(ok.then_some(true))
            }) {
                Ok(added) => added,
                Err(
                    e @ (FleetError::Unreachable { .. }
                    | FleetError::Auth(_)
                    | FleetError::Revoked(_)),
                ) => return Err(e),
                // One tampered scope does not stop the others.
                Err(e) => {
                    failed.push(format!("{scope} ({e})"));
                    false
                }
            };
            wrapped += usize::from(added);
        }
        if !failed.is_empty() {
            return Err(FleetError::Incomplete {
                op: "enroll",
                done: wrapped,
                failed: failed.join("; "),
            });
        }
        if was_member && wrapped == 0 {
            return Err(FleetError::AlreadyMember(card.recipient));
        }
        self.reset_memo_scopes();
        Ok(join_token(&m))
    }

    /// `sealfs fleet revoke`: drops the host with this card or recipient
    /// and rotates every scope's fleet key (one write per scope: the new
    /// keyring carries the old key for the shards not rewritten since, and
    /// takes shards under it only as etcd held them at the revocation);
    /// first removes the host's own etcd user, if it has one. Returns
    /// what it did. Run again after an interruption, it finishes the
    /// rotation.
    pub fn revoke(&self, who: &str) -> Result<Revoked, FleetError> {
        let recipient = who.trim().split(':').next().unwrap_or_default().to_owned();
        super::keys::parse_recipient(&recipient)?;
        if recipient == self.recipient() {
            return Err(FleetError::RevokeSelf);
        }
        let m = self.membership(false)?;
        let card = match m.card_of(&recipient) {
            Some((c, _)) => c.clone(),
            None => return Err(FleetError::NotMember(recipient)),
        };
        let mut was_removed = false;
        self.append(Op::Remove, &card, |m| {
            let removed = m.card_of(&recipient).is_some_and(|(_, current)| !current);
            was_removed = removed;
            Ok(removed)
        })?;
        // Its own etcd user goes first, before the rotation it could
        // otherwise disturb. A login that may not manage users cannot tell
        // whether there is one: that is reported, not fatal (the keys are
        // what keeps it out of new values).
        let etcd_user = self.host_etcd_user(&recipient);
        let etcd_user_removed = self.store.delete_user(&etcd_user);
        if let Err(e @ FleetError::Unreachable { .. }) = etcd_user_removed {
            return Err(e);
        }
        let mut rotated = 0;
        let mut failed = Vec::new();
        for scope in self.scope_names()? {
            // One scope that cannot be rotated (tampered with) does not stop
            // the others: the revoked host loses every scope it can.
            let rotated_scope = self
                .retry(&format!("the keys of {scope}"), || {
                    self.rotate(&scope, &self.membership(false)?)
                })
                .and_then(|done| {
                    self.move_shards(&scope, None)?;
                    Ok(done)
                });
            match rotated_scope {
                Ok(done) => rotated += usize::from(done),
                Err(e @ (FleetError::Unreachable { .. } | FleetError::Auth(_))) => return Err(e),
                Err(e) => failed.push(format!("{scope} ({e})")),
            }
        }
        self.reset_memo_scopes();
        if !failed.is_empty() {
            return Err(FleetError::Incomplete {
                op: "revoke",
                done: rotated,
                failed: failed.join("; "),
            });
        }
        // Every scope has moved on: the older grant keys' wraps go.
        let pruned = match self.prune_grant_wraps(&self.membership(false)?) {
            Ok(n) => n,
            Err(e @ (FleetError::Unreachable { .. } | FleetError::Auth(_))) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "cannot delete the wraps of older grant keys");
                0
            }
        };
        if was_removed && rotated == 0 && pruned == 0 && !matches!(etcd_user_removed, Ok(true)) {
            return Err(FleetError::NotMember(recipient));
        }
        Ok(Revoked {
            rotated,
            etcd_user,
            etcd_user_removed,
        })
    }

    /// One scope's rotation, if its key is older than the last removal:
    /// a new key at the next epoch, wrapped to the members now, carrying
    /// the keys it replaces (each shard moves to the new key at its next
    /// write). `Some(false)`: nothing to do; `None`: lost a race, read again.
    fn rotate(&self, scope: &VaultScope, m: &Membership) -> Result<Option<bool>, FleetError> {
        let Some(rec) = self.read(&self.keyring_key(scope), false)? else {
            if self.scope_pin(scope)?.is_some() {
                return Err(FleetError::Forged(format!(
                    "the keyring of {scope}: it is missing, and this host has seen it"
                )));
            }
            return Ok(Some(false));
        };
        let (ring, key) = self.parse_keyring(scope, &rec, m, KeyringUse::Rotate)?;
        if ring.seq >= m.last_removal {
            return Ok(Some(false));
        }
        // From before a change of who it is granted to as well: that
        // change's `fleet grant` finishes first (its line is earlier).
        if m.scope_audience(&scope.to_string())
            .is_some_and(|a| ring.seq < a.seq)
        {
            return Err(FleetError::NotRegranted(scope.clone()));
        }
        let line = self.written_before_removal(scope, m, &rec)?;
        let epoch = ring.epoch.checked_add(1);
        let retired = (Some(line), Some(m.last_removal));
        self.rekey(scope, m, &rec, (&ring, &key), (epoch, false), retired)
    }

    /// A keyring from before the last revocation is known to the revoked
    /// host: only what etcd holds from before the revocation entry landed
    /// is taken over, never what the revoked host (or anyone holding the
    /// old key) wrote since. Returns that line: the revision that created
    /// the removal entry.
    fn written_before_removal(
        &self,
        scope: &VaultScope,
        m: &Membership,
        rec: &Record,
    ) -> Result<i64, FleetError> {
        // The revision that created the removal entry, as this host first
        // saw it (a put of the same bytes keeps a key's creation revision;
        // creating it again is refused by the pin).
        let line = self
            .fleet_pin()?
            .and_then(|p| p.removal)
            .filter(|(seq, _)| *seq == m.last_removal)
            .map(|(_, rev)| rev)
            .or(m.removal_rev)
            .ok_or_else(|| {
                FleetError::Forged(format!(
                    "entry {} of the membership chain: when it was written is unknown",
                    m.last_removal
                ))
            })?;
        if rec.mod_revision > line {
            return Err(FleetError::Forged(format!(
                "the keyring of {scope}: it was written under the old key after the revocation"
            )));
        }
        Ok(line)
    }

    /// Writes the keyring of `scope` under a new key at `epoch` (`None`:
    /// at its limit; `recovering`: as `fleet recover` does), wrapped to the
    /// members of `m`, carrying the key of `ring` and those it carried
    /// until [`Self::move_shards`] has moved the shards under them (which
    /// are taken only as last written at or before the revision of
    /// `retired`, if given). One transaction, on the revision `rec` was
    /// read at and on the chain not having moved past `m`.
    pub(super) fn rekey(
        &self,
        scope: &VaultScope,
        m: &Membership,
        rec: &Record,
        (ring, key): (&Keyring, &FleetKey),
        (epoch, recovering): (Option<u64>, bool),
        retired: (Option<i64>, Option<u64>),
    ) -> Result<Option<bool>, FleetError> {
        let epoch = epoch.ok_or_else(|| {
            FleetError::Forged(format!("the keys of {scope}: the epoch is at its limit"))
        })?;
        let new_key = FleetKey::generate();
        let mut new_ring: Keyring = self.new_keyring(scope, &new_key, epoch, m)?;
        new_ring.older = Self::retire(scope, ring, key, &new_key, retired)?;
        new_ring.recovered = if recovering {
            Some(epoch)
        } else {
            ring.recovered
        };
        let ok = self.store.apply(
            &[
                (self.keyring_key(scope), Expect::Revision(rec.mod_revision)),
                // The new key is for this membership: a later entry (another
                // revocation) gets its own.
                (self.chain_key(m.seq() + 1), Expect::Absent),
                self.own_grant_wrap(m)?,
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
    }

    /// `sealfs fleet recover`, on a member right after etcd was restored
    /// from a backup on purpose: takes the membership chain etcd holds now
    /// (checked from the fleet id, not against this host's pin), re-pins
    /// it, gives every scope a new key at an epoch, and rewrites every
    /// index shard with a counter, above anything any host can have pinned
    /// (they are derived from the time), so every host accepts the
    /// restored state again. Returns the join token other hosts re-pin with
    /// (needed by those whose pin is newer than the restored chain) and how
    /// many scopes were re-anchored. Only ever what members signed is taken
    /// over.
    pub fn recover(&self, forget: &[VaultScope]) -> Result<Recovered, FleetError> {
        let pin = self.fleet_pin()?.ok_or(FleetError::NotJoined)?;
        let mut entries = self
            .store
            .get_prefix(&self.store.key("chain/"))?
            .into_iter();
        let (_, first) = entries.next().ok_or(FleetError::NotInitialised)?;
        let mut m = Membership::genesis(&pin.fleet_id, &first.value)?;
        for (_, rec) in entries {
            m.apply(&rec.value)?;
        }
        self.require_member(&m)?;
        let token = join_token(&m);
        let joined = self.join(&token, true, forget)?;
        let now = crate::clock::now_ms();
        let mut done = 0;
        let mut not_granted = Vec::new();
        for scope in self.scope_names()? {
            // Pinned here and missing from etcd: forgotten above if named,
            // else reported.
            if joined.missing.contains(&scope) {
                continue;
            }
            let re = self.retry(&format!("the keys of {scope}"), || {
                let m = self.membership(false)?;
                let Some(rec) = self.read(&self.keyring_key(&scope), false)? else {
                    return Ok(Some(false));
                };
                let (ring, key) = self.parse_keyring(&scope, &rec, &m, KeyringUse::Recover)?;
                let retired = if ring.seq < m.last_removal {
                    let line = self.written_before_removal(&scope, &m, &rec)?;
                    (Some(line), Some(m.last_removal))
                } else {
                    (None, None)
                };
                // From before the scope's last audience entry, which
                // `fleet grant` writes together with the keyring after it:
                // put there by someone else, and whatever a member the
                // entry left out wrote under its key since cannot be told
                // apart. Not taken over.
                if m.scope_audience(&scope.to_string())
                    .is_some_and(|a| ring.seq < a.seq)
                {
                    return Err(FleetError::NotRegranted(scope.clone()));
                }
                // Above any epoch a host saw before now: those were made
                // earlier, and never run ahead of the clock.
                let epoch = ring.epoch.checked_add(1).map(|e| e.max(now));
                self.rekey(&scope, &m, &rec, (&ring, &key), (epoch, true), retired)
            });
            let re = match re {
                // Granted to other members (one of them re-keys it), or its
                // keyring put back from before its audience entry.
                Err(e @ (FleetError::NotGranted(_) | FleetError::NotRegranted(_))) => {
                    not_granted.push(format!("{scope} ({e})"));
                    continue;
                }
                other => other?,
            };
            // Counters above any a host saw before now: those never run
            // ahead of the clock by more than one step per write.
            self.move_shards(&scope, Some(now.saturating_mul(1 << 16)))?;
            done += usize::from(re);
        }
        self.reset_memo_scopes();
        if !not_granted.is_empty() {
            return Err(FleetError::Incomplete {
                op: "recover",
                done,
                failed: not_granted.join("; "),
            });
        }
        Ok(Recovered {
            token,
            rekeyed: done,
            missing: joined.missing,
        })
    }

    /// Moves every index shard of `scope` still under a key its keyring
    /// replaced to its current key, one small write per shard, then drops
    /// the replaced keys from the keyring (the final compare-and-swap):
    /// from then on nothing under them is taken. `floor` (`fleet recover`):
    /// every shard is rewritten with a counter at least that, whatever
    /// this host's counters say.
    ///
    /// A shard refused on the way (written under a replaced key after the
    /// revocation, or not authenticating) is left behind, refused for
    /// good once the keys are dropped, and named in the error.
    pub(super) fn move_shards(
        &self,
        scope: &VaultScope,
        floor: Option<u64>,
    ) -> Result<(), FleetError> {
        let mut refused = Vec::new();
        self.retry(&format!("the index of {scope}"), || {
            refused.clear();
            let Some((sk, shards)) =
                self.scope_shards_with(scope, (false, floor.is_some()), Some(&mut refused))?
            else {
                return Ok(Some(()));
            };
            if sk.keyring.older.is_empty() && floor.is_none() {
                return Ok(Some(()));
            }
            for (shard, st) in shards {
                // Near the limit: only a member gone rogue writes that.
                let below =
                    floor.is_some_and(|f| st.body.counter < f || st.body.counter > u64::MAX / 2);
                if (st.body.epoch != sk.keyring.epoch || below)
                    && !self.rewrite_shard(scope, &sk, &shard, st, floor)?
                {
                    return Ok(None);
                }
            }
            if sk.keyring.older.is_empty() {
                return Ok(Some(()));
            }
            let mut ring = sk.keyring.clone();
            ring.older.clear();
            // From here on nothing opens but under the grant key.
            let guard = self.own_grant_wrap(&self.membership(false)?)?;
            let ok = self.store.apply(
                &[
                    Self::expect(self.keyring_key(scope), sk.keyring_rev),
                    (self.chain_key(sk.chain_seq + 1), Expect::Absent),
                    guard,
                ],
                &[Change::Put(
                    self.keyring_key(scope),
                    self.sign_keyring(&ring),
                )],
            )?;
            if ok {
                // Seen dropped: a replay of the keyring carrying them is
                // refused here from now on.
                self.store_scope_pin(scope, &ring)?;
            }
            Ok(ok.then_some(()))
        })?;
        if refused.is_empty() {
            Ok(())
        } else {
            Err(FleetError::Forged(refused.join("; ")))
        }
    }

    /// Writes shard `shard` of `scope` (as read, `st`) again under the
    /// current key of `sk`, its counter one on, or exactly `floor` if
    /// given (`fleet recover`: the keyring's recovery epoch voids every
    /// host's counters from before, however high a shard's was);
    /// `false` if another write got there first.
    fn rewrite_shard(
        &self,
        scope: &VaultScope,
        sk: &ScopeKeys,
        shard: &str,
        mut st: ShardState,
        floor: Option<u64>,
    ) -> Result<bool, FleetError> {
        Self::rewrap_shard(scope, &mut st.body, &st.key, &sk.key, sk.keyring.epoch)?;
        st.body.counter = match floor {
            Some(f) => f,
            None => next_counter(scope, shard, st.body.counter)?,
        };
        let shard_key = self.shard_key(scope, shard);
        let encoded = Self::encode_shard(scope, shard, &sk.key, &st.body);
        let ok = self.store.apply(
            &[
                Self::expect(self.keyring_key(scope), sk.keyring_rev),
                Self::expect(shard_key.clone(), st.rev),
                (self.chain_key(sk.chain_seq + 1), Expect::Absent),
            ],
            &[Change::Put(shard_key.clone(), encoded.clone())],
        )?;
        if ok {
            self.cache.set_high_water(
                scope,
                shard,
                (st.body.counter, sk.keyring.epoch),
                sk.keyring.recovered,
            )?;
            self.cache.put(&shard_key, &encoded)?;
        }
        Ok(ok)
    }

    /// `sealfs fleet status`: the fleet, this host, the members and every
    /// scope that has a keyring.
    pub fn status(&self) -> Result<FleetStatus, FleetError> {
        let me = self.card();
        let m = self.membership(false)?;
        let mut scopes = Vec::new();
        for (scope, rec) in self.scopes_with_keyrings()? {
            let ring: Option<Keyring> = Signed::parse("a keyring", &rec.value)
                .ok()
                .and_then(|s| serde_json::from_str(&s.body).ok());
            let counted = self.scope_shards(&scope, false, false).map(|s| {
                s.map(|(_, shards)| shards.iter().map(|(_, st)| st.body.entries.len()).sum())
            });
            let (readable, secrets, problem) = match counted {
                Ok(Some(n)) => (true, n, None),
                Ok(None) => (false, 0, None),
                Err(FleetError::NotEnrolled { .. } | FleetError::NotGranted(_)) => (false, 0, None),
                Err(e @ (FleetError::Unreachable { .. } | FleetError::Auth(_))) => return Err(e),
                Err(e) => (false, 0, Some(e.to_string())),
            };
            scopes.push(ScopeStatus {
                scope: scope.to_string(),
                epoch: ring.as_ref().map_or(0, |r| r.epoch),
                audience: m
                    .audience_now(&scope.to_string())
                    .map(|a| a.into_iter().collect()),
                key_id: ring.map(|r| r.key_id).unwrap_or_default(),
                secrets,
                readable,
                problem,
            });
        }
        let etcd = match self.store.space() {
            Ok(s) => Some(s),
            Err(e @ (FleetError::Unreachable { .. } | FleetError::Tls { .. })) => return Err(e),
            Err(e) => {
                tracing::info!(error = %e, "etcd's space is not shown");
                None
            }
        };
        Ok(FleetStatus {
            fleet_id: m.fleet_id.clone(),
            join_token: join_token(&m),
            etcd,
            enrolled: m.has_recipient(&me.recipient),
            recipient: me.to_string(),
            members: m.cards().map(ToString::to_string).collect(),
            chain_seq: m.seq(),
            scopes,
        })
    }
}

/// The join token naming `m`'s newest entry.
fn join_token(m: &Membership) -> String {
    trust::FleetPin::of(m).token()
}
