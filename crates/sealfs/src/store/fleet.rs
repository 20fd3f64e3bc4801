//! The fleet vault behind [`SecretStore`]: what it cannot do (read-once
//! secrets, rename, empty scopes) is [`StoreError::Unsupported`].

use std::time::{Duration, UNIX_EPOCH};

use super::{SecretStore, StoreError};
use crate::fleet::{corrupt, to_entry, FleetEntry, FleetError, FleetVault};
use crate::{SecretKey, SensitiveBytes, VaultRef, VaultScope};

impl SecretStore for FleetVault {
    fn list(&self, scope: Option<&VaultScope>) -> Result<Vec<crate::Entry>, StoreError> {
        Ok(FleetVault::list(self, scope)?
            .into_iter()
            .map(to_entry)
            .collect())
    }

    fn read(&self, r: &VaultRef) -> Result<(SensitiveBytes, bool), StoreError> {
        self.get(r).map(|v| (v, false)).map_err(StoreError::Fleet)
    }

    fn entry(&self, r: &VaultRef) -> Result<Option<crate::Entry>, StoreError> {
        let state = self
            .scope_state_for_read(r.scope())
            .map_err(StoreError::Fleet)?;
        Ok(state.and_then(|s| {
            s.manifest.entries.get(r.key().as_str()).map(|e| {
                to_entry(FleetEntry {
                    vault_ref: r.clone(),
                    len: e.len,
                    version: e.version,
                    created: UNIX_EPOCH + Duration::from_millis(e.created_ms),
                    updated: UNIX_EPOCH + Duration::from_millis(e.updated_ms),
                })
            })
        }))
    }

    fn for_each_key(
        &self,
        scope: &VaultScope,
        f: &mut dyn FnMut(SecretKey),
    ) -> Result<(), StoreError> {
        let state = self
            .scope_state_for_read(scope)
            .map_err(StoreError::Fleet)?;
        for k in state.iter().flat_map(|s| s.manifest.entries.keys()) {
            let key = SecretKey::new(k.as_str())
                .map_err(|e| StoreError::Fleet(corrupt("manifest key", e)))?;
            f(key);
        }
        Ok(())
    }

    fn scopes(&self) -> Result<Vec<crate::ScopeInfo>, StoreError> {
        let mut out = vec![crate::ScopeInfo {
            scope: VaultScope::Global,
            owner_uid: None,
            registered: true,
        }];
        for (scope, _) in self.scopes_with_keyrings().map_err(StoreError::Fleet)? {
            if scope != VaultScope::Global {
                out.push(crate::ScopeInfo {
                    scope,
                    owner_uid: None,
                    registered: true,
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
            }));
        }
        let exists = self
            .scope_state_for_read(scope)
            .map_err(StoreError::Fleet)?
            .is_some();
        Ok(exists.then(|| crate::ScopeInfo {
            scope: scope.clone(),
            owner_uid: None,
            registered: true,
        }))
    }

    fn put_with(
        &self,
        r: &VaultRef,
        value: SensitiveBytes,
        options: crate::PutOptions,
    ) -> Result<crate::Entry, StoreError> {
        if options.once {
            return Err(StoreError::Unsupported(
                "read-once secrets in the fleet vault",
            ));
        }
        if !options.allow_empty && value.is_empty() {
            return Err(StoreError::Fleet(FleetError::EmptyValue(r.clone())));
        }
        FleetVault::put_if(self, r, &value, options.expect)
            .map(to_entry)
            .map_err(StoreError::Fleet)
    }

    fn delete(&self, r: &VaultRef) -> Result<(), StoreError> {
        FleetVault::delete(self, r).map_err(StoreError::Fleet)
    }

    fn rename(
        &self,
        _from: &VaultRef,
        _to: &VaultRef,
        _no_replace: bool,
    ) -> Result<crate::Entry, StoreError> {
        Err(StoreError::Unsupported("rename in the fleet vault"))
    }

    fn create_scope(&self, _scope: &VaultScope, _owner_uid: Option<u32>) -> Result<(), StoreError> {
        Err(StoreError::Unsupported(
            "creating an empty scope in the fleet vault (a scope appears with its first secret)",
        ))
    }

    fn remove_scope(&self, _scope: &VaultScope) -> Result<(), StoreError> {
        Err(StoreError::Unsupported(
            "removing a scope of the fleet vault",
        ))
    }
}
