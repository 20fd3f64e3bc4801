//! [`SecretStore`]: what the mount daemon needs of a vault, so it serves a
//! local [`Vault`] and the fleet vault alike.

use crate::vault::{Entry, PutOptions, ScopeInfo};
use crate::{
    BackendPreference, SecretKey, SensitiveBytes, Vault, VaultError, VaultRef, VaultScope,
};

pub trait SecretStore: Send + Sync {
    /// The value of `r`, and whether this read consumed a read-once secret.
    fn read(&self, r: &VaultRef) -> Result<(SensitiveBytes, bool), VaultError>;
    fn entry(&self, r: &VaultRef) -> Result<Option<Entry>, VaultError>;
    fn exists(&self, r: &VaultRef) -> Result<bool, VaultError> {
        Ok(self.entry(r)?.is_some())
    }
    fn for_each_key(
        &self,
        scope: &VaultScope,
        f: &mut dyn FnMut(SecretKey),
    ) -> Result<(), VaultError>;
    fn scopes(&self) -> Result<Vec<ScopeInfo>, VaultError>;
    fn scope(&self, scope: &VaultScope) -> Result<Option<ScopeInfo>, VaultError>;
    fn put_with(
        &self,
        r: &VaultRef,
        value: SensitiveBytes,
        options: PutOptions,
    ) -> Result<Entry, VaultError>;
    fn put(&self, r: &VaultRef, value: SensitiveBytes) -> Result<Entry, VaultError> {
        self.put_with(r, value, PutOptions::default())
    }
    fn delete(&self, r: &VaultRef) -> Result<(), VaultError>;
    fn rename(&self, from: &VaultRef, to: &VaultRef, no_replace: bool)
        -> Result<Entry, VaultError>;
    fn create_scope(&self, scope: &VaultScope, owner_uid: Option<u32>) -> Result<(), VaultError>;
    fn remove_scope(&self, scope: &VaultScope) -> Result<(), VaultError>;
}

impl SecretStore for Vault {
    fn read(&self, r: &VaultRef) -> Result<(SensitiveBytes, bool), VaultError> {
        Vault::read(self, r)
    }
    fn entry(&self, r: &VaultRef) -> Result<Option<Entry>, VaultError> {
        Vault::entry(self, r)
    }
    fn exists(&self, r: &VaultRef) -> Result<bool, VaultError> {
        Vault::exists(self, r)
    }
    fn for_each_key(
        &self,
        scope: &VaultScope,
        f: &mut dyn FnMut(SecretKey),
    ) -> Result<(), VaultError> {
        Vault::for_each_key(self, scope, f)
    }
    fn scopes(&self) -> Result<Vec<ScopeInfo>, VaultError> {
        Vault::scopes(self)
    }
    fn scope(&self, scope: &VaultScope) -> Result<Option<ScopeInfo>, VaultError> {
        Vault::scope(self, scope)
    }
    fn put_with(
        &self,
        r: &VaultRef,
        value: SensitiveBytes,
        options: PutOptions,
    ) -> Result<Entry, VaultError> {
        Vault::put_with(self, r, value, options)
    }
    fn delete(&self, r: &VaultRef) -> Result<(), VaultError> {
        Vault::delete(self, r)
    }
    fn rename(
        &self,
        from: &VaultRef,
        to: &VaultRef,
        no_replace: bool,
    ) -> Result<Entry, VaultError> {
        Vault::rename(self, from, to, no_replace)
    }
    fn create_scope(&self, scope: &VaultScope, owner_uid: Option<u32>) -> Result<(), VaultError> {
        Vault::create_scope(self, scope, owner_uid)
    }
    fn remove_scope(&self, scope: &VaultScope) -> Result<(), VaultError> {
        Vault::remove_scope(self, scope)
    }
}

/// Where secrets live: a local vault's backend, or the fleet in etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendArg {
    Local(BackendPreference),
    Etcd,
}

impl BackendArg {
    /// The backend of the local vault (with etcd, the one holding this
    /// host's fleet identity).
    pub fn local(self) -> BackendPreference {
        match self {
            BackendArg::Local(p) => p,
            BackendArg::Etcd => BackendPreference::Auto,
        }
    }
}

impl std::str::FromStr for BackendArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "etcd" {
            return Ok(BackendArg::Etcd);
        }
        s.parse()
            .map(BackendArg::Local)
            .map_err(|e| format!("{e} (or etcd)"))
    }
}

impl std::fmt::Display for BackendArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendArg::Local(p) => p.fmt(f),
            BackendArg::Etcd => f.write_str("etcd"),
        }
    }
}

/// An etcd key prefix, as `--etcd-prefix` takes it: without slashes at
/// either end; letters, digits, `-`, `_`, `.` and inner `/`.
pub fn parse_etcd_prefix(s: &str) -> Result<String, String> {
    let p = s.trim_matches('/');
    let ok = |b: u8| b.is_ascii_alphanumeric() || b"-_./".contains(&b);
    if p.is_empty() || p.len() > 128 || !p.bytes().all(ok) {
        return Err(
            "expected letters, digits, '-', '_', '.' or '/', at most 128 characters".into(),
        );
    }
    Ok(p.to_owned())
}
