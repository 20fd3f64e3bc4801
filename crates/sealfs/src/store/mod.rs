//! [`SecretStore`]: what the command line and the mount daemon need of a
//! vault, so they serve a local [`Vault`] and the fleet vault alike, and
//! [`StoreError`], the one error type at that seam.

#[cfg(feature = "fleet")]
mod fleet;

use crate::vault::{Entry, PutOptions, ScopeInfo, Version};
use crate::{ErrorKind, SecretKey, SensitiveBytes, Vault, VaultError, VaultRef, VaultScope};

/// An error of a [`SecretStore`]: the local vault's or the fleet's, or an
/// operation the store does not have.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The local vault's error.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The fleet vault's error.
    #[cfg(feature = "fleet")]
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
    /// The store cannot do this (e.g. rename in the fleet vault).
    #[error("{0} is not supported")]
    Unsupported(&'static str),
}

impl StoreError {
    /// This error's [`ErrorKind`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Vault(e) => e.kind(),
            #[cfg(feature = "fleet")]
            StoreError::Fleet(e) => e.kind(),
            StoreError::Unsupported(_) => ErrorKind::Unsupported,
        }
    }

    /// Whether a write may or may not have landed: sent, with no answer,
    /// and not settled (so neither "stored" nor "nothing was stored").
    pub fn outcome_unknown(&self) -> bool {
        match self {
            #[cfg(feature = "fleet")]
            StoreError::Fleet(crate::fleet::FleetError::Ambiguous { .. }) => true,
            _ => false,
        }
    }
}

/// A vault, local or fleet. Each method is the like-named one of [`Vault`].
pub trait SecretStore: Send + Sync {
    /// The secrets of `scope` (or of every scope), never their values.
    fn list(&self, scope: Option<&VaultScope>) -> Result<Vec<Entry>, StoreError>;
    /// The value of `r`, and whether this read consumed a read-once secret.
    fn read(&self, r: &VaultRef) -> Result<(SensitiveBytes, bool), StoreError>;
    /// Metadata of `r` without decrypting it; `None` if there is no such
    /// secret.
    fn entry(&self, r: &VaultRef) -> Result<Option<Entry>, StoreError>;
    /// Whether a secret is stored under `r`.
    fn exists(&self, r: &VaultRef) -> Result<bool, StoreError> {
        Ok(self.entry(r)?.is_some())
    }
    /// Calls `f` with each key of `scope`, in order.
    fn for_each_key(
        &self,
        scope: &VaultScope,
        f: &mut dyn FnMut(SecretKey),
    ) -> Result<(), StoreError>;
    /// Every scope that exists; `global` first.
    fn scopes(&self) -> Result<Vec<ScopeInfo>, StoreError>;
    /// Whether `scope` exists, and who registered it: `None` if it does not.
    fn scope(&self, scope: &VaultScope) -> Result<Option<ScopeInfo>, StoreError>;
    /// Stores `value` under `r` with `options`, replacing any value there.
    fn put_with(
        &self,
        r: &VaultRef,
        value: SensitiveBytes,
        options: PutOptions,
    ) -> Result<Entry, StoreError>;
    /// Stores `value` under `r`, replacing any value there.
    fn put(&self, r: &VaultRef, value: SensitiveBytes) -> Result<Entry, StoreError> {
        self.put_with(r, value, PutOptions::default())
    }
    /// Removes the secret under `r`.
    fn delete(&self, r: &VaultRef) -> Result<(), StoreError>;
    /// Moves the secret at `from` to `to`, replacing any value at `to`
    /// unless `no_replace`.
    fn rename(&self, from: &VaultRef, to: &VaultRef, no_replace: bool)
        -> Result<Entry, StoreError>;
    /// Registers an empty scope, recording `owner_uid` as its creator.
    fn create_scope(&self, scope: &VaultScope, owner_uid: Option<u32>) -> Result<(), StoreError>;
    /// [`SecretStore::create_scope`] for a session that ends at `expires`
    /// (see [`Vault::create_scope_until`]).
    fn create_scope_until(
        &self,
        scope: &VaultScope,
        owner_uid: Option<u32>,
        expires: Option<std::time::SystemTime>,
    ) -> Result<(), StoreError>;
    /// Ends a session: every secret in it is removed, with it, at once.
    fn end_session(&self, scope: &VaultScope) -> Result<(), StoreError>;
    /// Removes what has expired, if anything has (see
    /// [`Vault::sweep_expired`]).
    fn sweep_expired(&self) -> Result<(), StoreError>;
    /// Removes an empty scope.
    fn remove_scope(&self, scope: &VaultScope) -> Result<(), StoreError>;
    /// The versions of `r`, oldest first (see [`Vault::history`]); a store
    /// that keeps none says so.
    fn history(&self, r: &VaultRef) -> Result<Vec<Version>, StoreError>;
    /// The value of version `n` of `r` (see [`Vault::get_version`]).
    fn get_version(&self, r: &VaultRef, n: u64) -> Result<SensitiveBytes, StoreError>;
    /// The keys of `scope` with earlier versions kept, live or deleted.
    fn versioned_keys(&self, scope: &VaultScope) -> Result<Vec<SecretKey>, StoreError>;
    /// Whether scopes record who made them (the local vault): the fleet's
    /// do not (uids are per host), so what rests on an owner (a session's
    /// maker using it, per-user session quotas) is not there.
    fn records_scope_owners(&self) -> bool;
}

impl SecretStore for Vault {
    fn list(&self, scope: Option<&VaultScope>) -> Result<Vec<Entry>, StoreError> {
        Ok(Vault::list(self, scope)?)
    }
    fn read(&self, r: &VaultRef) -> Result<(SensitiveBytes, bool), StoreError> {
        Ok(Vault::read(self, r)?)
    }
    fn entry(&self, r: &VaultRef) -> Result<Option<Entry>, StoreError> {
        Ok(Vault::entry(self, r)?)
    }
    fn exists(&self, r: &VaultRef) -> Result<bool, StoreError> {
        Ok(Vault::exists(self, r)?)
    }
    fn for_each_key(
        &self,
        scope: &VaultScope,
        f: &mut dyn FnMut(SecretKey),
    ) -> Result<(), StoreError> {
        Ok(Vault::for_each_key(self, scope, f)?)
    }
    fn scopes(&self) -> Result<Vec<ScopeInfo>, StoreError> {
        Ok(Vault::scopes(self)?)
    }
    fn scope(&self, scope: &VaultScope) -> Result<Option<ScopeInfo>, StoreError> {
        Ok(Vault::scope(self, scope)?)
    }
    fn put_with(
        &self,
        r: &VaultRef,
        value: SensitiveBytes,
        options: PutOptions,
    ) -> Result<Entry, StoreError> {
        Ok(Vault::put_with(self, r, value, options)?)
    }
    fn delete(&self, r: &VaultRef) -> Result<(), StoreError> {
        Ok(Vault::delete(self, r)?)
    }
    fn rename(
        &self,
        from: &VaultRef,
        to: &VaultRef,
        no_replace: bool,
    ) -> Result<Entry, StoreError> {
        Ok(Vault::rename(self, from, to, no_replace)?)
    }
    fn create_scope(&self, scope: &VaultScope, owner_uid: Option<u32>) -> Result<(), StoreError> {
        Ok(Vault::create_scope(self, scope, owner_uid)?)
    }
    fn create_scope_until(
        &self,
        scope: &VaultScope,
        owner_uid: Option<u32>,
        expires: Option<std::time::SystemTime>,
    ) -> Result<(), StoreError> {
        Ok(Vault::create_scope_until(self, scope, owner_uid, expires)?)
    }
    fn end_session(&self, scope: &VaultScope) -> Result<(), StoreError> {
        Ok(Vault::end_session(self, scope)?)
    }
    fn sweep_expired(&self) -> Result<(), StoreError> {
        Ok(Vault::sweep_expired(self)?)
    }
    fn remove_scope(&self, scope: &VaultScope) -> Result<(), StoreError> {
        Ok(Vault::remove_scope(self, scope)?)
    }
    fn records_scope_owners(&self) -> bool {
        true
    }
    fn history(&self, r: &VaultRef) -> Result<Vec<Version>, StoreError> {
        Ok(Vault::history(self, r)?)
    }
    fn get_version(&self, r: &VaultRef, n: u64) -> Result<SensitiveBytes, StoreError> {
        Ok(Vault::get_version(self, r, n)?)
    }
    fn versioned_keys(&self, scope: &VaultScope) -> Result<Vec<SecretKey>, StoreError> {
        Ok(Vault::versioned_keys(self, scope)?)
    }
}
