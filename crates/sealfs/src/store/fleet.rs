//! The fleet vault behind [`SecretStore`]: what it cannot do (removing a
//! scope) is [`StoreError::Unsupported`].

use super::{SecretStore, StoreError};
use crate::fleet::{to_entry, FleetError, FleetVault};
use crate::{SecretKey, SensitiveBytes, VaultRef, VaultScope};

impl SecretStore for FleetVault {
    fn list(&self, scope: Option<&VaultScope>) -> Result<Vec<crate::Entry>, StoreError> {
        Ok(FleetVault::list(self, scope)?
            .into_iter()
            .map(to_entry)
            .collect())
    }

    fn read(&self, r: &VaultRef) -> Result<(SensitiveBytes, bool), StoreError> {
        FleetVault::read_secret(self, r).map_err(StoreError::Fleet)
    }

    fn entry(&self, r: &VaultRef) -> Result<Option<crate::Entry>, StoreError> {
        Ok(FleetVault::entry(self, r)?.map(to_entry))
    }

    fn for_each_key(
        &self,
        scope: &VaultScope,
        f: &mut dyn FnMut(SecretKey),
    ) -> Result<(), StoreError> {
        for e in FleetVault::list(self, Some(scope))? {
            f(e.vault_ref.key().clone());
        }
        Ok(())
    }

    fn scopes(&self) -> Result<Vec<crate::ScopeInfo>, StoreError> {
        let mut out = vec![crate::ScopeInfo {
            scope: VaultScope::Global,
            owner_uid: None,
            registered: true,
            expires: None,
        }];
        // A scope granted to other hosts does not exist here.
        let left_out = self.scopes_left_out(true).map_err(StoreError::Fleet)?;
        for scope in self.scope_names().map_err(StoreError::Fleet)? {
            if scope != VaultScope::Global && !left_out.contains(&scope) {
                out.push(crate::ScopeInfo {
                    scope,
                    owner_uid: None,
                    registered: true,
                    expires: None,
                });
            }
        }
        Ok(out)
    }

    fn scope(&self, scope: &VaultScope) -> Result<Option<crate::ScopeInfo>, StoreError> {
        if *scope == VaultScope::Global {
            return Ok(Some(crate::ScopeInfo {
                scope: VaultScope::Global,
                owner_uid: None,
                registered: true,
                expires: None,
            }));
        }
        let exists =
            !self.scopes_left_out(true)?.contains(scope) && self.keys_for_read(scope)?.is_some();
        Ok(exists.then(|| crate::ScopeInfo {
            scope: scope.clone(),
            owner_uid: None,
            registered: true,
            expires: None,
        }))
    }

    fn put_with(
        &self,
        r: &VaultRef,
        value: SensitiveBytes,
        options: crate::PutOptions,
    ) -> Result<crate::Entry, StoreError> {
        if !options.allow_empty && value.is_empty() {
            return Err(StoreError::Fleet(FleetError::EmptyValue(r.clone())));
        }
        if options.expires.is_some() {
            return Err(StoreError::Unsupported("an expiry in the fleet vault"));
        }
        FleetVault::put_with(self, r, &value, options.expect, options.once)
            .map(to_entry)
            .map_err(StoreError::Fleet)
    }

    fn delete(&self, r: &VaultRef) -> Result<(), StoreError> {
        FleetVault::delete(self, r).map_err(StoreError::Fleet)
    }

    fn rename(
        &self,
        from: &VaultRef,
        to: &VaultRef,
        no_replace: bool,
    ) -> Result<crate::Entry, StoreError> {
        FleetVault::rename(self, from, to, no_replace)
            .map(to_entry)
            .map_err(StoreError::Fleet)
    }

    fn create_scope_until(
        &self,
        scope: &VaultScope,
        owner_uid: Option<u32>,
        expires: Option<std::time::SystemTime>,
    ) -> Result<(), StoreError> {
        match expires {
            None => SecretStore::create_scope(self, scope, owner_uid),
            Some(_) => Err(StoreError::Unsupported(
                "a session lifetime in the fleet vault",
            )),
        }
    }
    fn end_session(&self, _scope: &VaultScope) -> Result<(), StoreError> {
        Err(StoreError::Unsupported(
            "ending a session in the fleet vault",
        ))
    }
    /// Nothing in the fleet vault expires.
    fn sweep_expired(&self) -> Result<(), StoreError> {
        Ok(())
    }
    fn history(&self, _r: &VaultRef) -> Result<Vec<crate::Version>, StoreError> {
        Err(StoreError::Unsupported("history in the fleet vault"))
    }
    fn get_version(&self, _r: &VaultRef, _n: u64) -> Result<SensitiveBytes, StoreError> {
        Err(StoreError::Unsupported(
            "earlier versions in the fleet vault",
        ))
    }
    fn versioned_keys(&self, _scope: &VaultScope) -> Result<Vec<SecretKey>, StoreError> {
        Err(StoreError::Unsupported("history in the fleet vault"))
    }
    fn create_scope(&self, scope: &VaultScope, _owner_uid: Option<u32>) -> Result<(), StoreError> {
        // Fleet scopes have no owner: who may use them is the mount's
        // policy, on every host alike.
        FleetVault::create_scope(self, scope)
            .map(|_| ())
            .map_err(StoreError::Fleet)
    }

    fn records_scope_owners(&self) -> bool {
        false
    }

    fn remove_scope(&self, _scope: &VaultScope) -> Result<(), StoreError> {
        Err(StoreError::Unsupported(
            "removing a scope of the fleet vault",
        ))
    }
}
