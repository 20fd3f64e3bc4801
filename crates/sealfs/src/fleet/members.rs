//! Fleet membership: init, enroll, revoke and status.

use std::collections::BTreeSet;

use base64::Engine;

use super::etcd::{Change, Expect, Record};
use super::keys::FleetKey;
use super::{
    b64, corrupt, keys, FleetError, FleetStatus, FleetVault, Keyring, Members, ScopeStatus,
};
use crate::{SecretKey, VaultRef, VaultScope};

impl FleetVault {
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

    pub(super) fn require_member(&self, members: &Members) -> Result<(), FleetError> {
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

    /// `sealfs fleet status`: this host, the members and every scope that
    /// has a keyring.
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
}
