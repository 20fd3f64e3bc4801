//! `set`, `get`, `list` and `delete`, written once over [`SecretStore`](sealfs::SecretStore):
//! the same code serves a local vault and the fleet vault (`--backend etcd`).

use std::path::PathBuf;

use anyhow::{bail, Result};
use sealfs::cli_common::{OpenError, Store, VaultArgs};
use sealfs::{Entry, ErrorKind, PutOptions, StoreError, Vault, VaultError, VaultRef, VaultScope};

use super::record;
use crate::args::SetArgs;
use crate::output::{write_json, write_stdout, Status};
use crate::view::EntryJson;

/// The store, or `None` for a local vault that does not exist yet.
pub(super) fn open_existing(v: &VaultArgs) -> Result<Option<Store>> {
    match v.open_store_once(false) {
        Ok(s) => Ok(Some(s)),
        Err(OpenError::Store(StoreError::Vault(VaultError::NoVault(_)))) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The audit target of `r` in `store` (fleet refs are marked as such).
fn target(store: &Store, r: &VaultRef) -> String {
    match store {
        Store::Local(_) => r.to_string(),
        #[cfg(feature = "fleet")]
        Store::Fleet(_) => format!("fleet:{r}"),
    }
}

pub(super) fn record_result<T>(
    v: &VaultArgs,
    store: &Store,
    op: &str,
    r: &VaultRef,
    result: &Result<T, StoreError>,
) {
    record(
        v,
        op,
        &target(store, r),
        result.as_ref().err().map(StoreError::kind),
    );
}

pub(super) fn no_vault_dir(v: &VaultArgs) -> PathBuf {
    v.vault_dir().unwrap_or_default()
}

pub(super) fn set(v: &VaultArgs, args: SetArgs) -> Result<Status> {
    if crate::input::refuses_stray_value(&args) {
        return Ok(Status::Usage);
    }
    let r = &args.vault_ref;
    let value = crate::input::value_for(&args, v.max_value_size)?;
    if value.is_empty() {
        bail!("refusing to store an empty value for {r}");
    }
    let store = v.open_store_once(true)?;
    if let Some(vault) = store.local() {
        if !args.into_others_session {
            refuse_others_session(vault, r)?;
        }
    }
    let expect = match (args.if_absent, args.if_version) {
        (true, _) => Some(sealfs::Expected::Absent),
        (false, Some(v)) => Some(sealfs::Expected::Version(v)),
        (false, None) => None,
    };
    let options = PutOptions {
        once: args.once,
        expect,
        expires: args.ttl.map(|ttl| std::time::SystemTime::now() + ttl),
        no_expiry: args.no_ttl,
        keep_versions: args.keep_versions,
        writer: Some(sealfs::Writer::this_process(sealfs::WriteSource::Cli)),
        ..PutOptions::default()
    };
    let result = store.as_dyn().put_with(r, value, options);
    record_result(v, &store, "set", r, &result);
    match result {
        Ok(_) => Ok(Status::Done),
        // Sent but unsettled: neither "stored" nor "nothing was stored".
        Err(e) if e.outcome_unknown() => bail!("{}", sealfs::Chain(&e)),
        Err(e) => bail!("{}; nothing was stored", sealfs::Chain(&e)),
    }
}

/// A session created through the mount belongs to the uid that made it,
/// who reads everything in it: storing a secret there for another uid is
/// refused unless confirmed (`--into-others-session`).
pub(super) fn refuse_others_session(vault: &Vault, r: &VaultRef) -> Result<()> {
    if let Some(uid) = vault.others_session(r.scope())? {
        bail!(
            "{} belongs to {}, who created it through the mount and can read what is stored there; pass --into-others-session to store {r} anyway",
            r.scope(),
            sealfs::describe_uid(uid)
        );
    }
    Ok(())
}

pub(super) fn get(v: &VaultArgs, r: &VaultRef) -> Result<Status> {
    let Some(store) = open_existing(v)? else {
        bail!(
            "secret not found: {r} (there is no vault at {} yet)",
            no_vault_dir(v).display()
        );
    };
    let result = store.as_dyn().read(r);
    let op = match &result {
        Ok((_, true)) => "consume",
        _ => "get",
    };
    record_result(v, &store, op, r, &result);
    let (value, _) = result?;
    write_stdout(value.expose())?;
    Ok(Status::Done)
}

pub(super) fn list(v: &VaultArgs, scope: Option<&VaultScope>, json: bool) -> Result<Status> {
    let entries: Vec<Entry> = match open_existing(v)? {
        Some(store) => store.as_dyn().list(scope)?,
        None => Vec::new(),
    };
    if json {
        let rows: Vec<EntryJson> = entries.iter().map(EntryJson::of).collect();
        write_json(&rows)?;
    } else {
        let mut out = String::new();
        for e in entries {
            out.push_str(&format!(
                "{}\t{}\t{}\n",
                e.vault_ref,
                e.len,
                sealfs::rfc3339(e.updated, false)
            ));
        }
        write_stdout(out.as_bytes())?;
    }
    Ok(Status::Done)
}

pub(super) fn delete(v: &VaultArgs, r: &VaultRef, force: bool, purge: bool) -> Result<Status> {
    let result = match open_existing(v)? {
        Some(store) => {
            let (op, result) = match store.local() {
                // The fleet keeps no earlier versions: a delete is a purge.
                Some(vault) if purge => ("purge", vault.purge(r).map_err(StoreError::from)),
                _ => ("delete", store.as_dyn().delete(r)),
            };
            record_result(v, &store, op, r, &result);
            result
        }
        None => Err(VaultError::NotFound(r.clone()).into()),
    };
    match result {
        Ok(()) => Ok(Status::Done),
        Err(e) if force && e.kind() == ErrorKind::NotFound => Ok(Status::Done),
        Err(e) => Err(e.into()),
    }
}

/// Stores `value` for `configure` (a local vault only), audited.
pub(super) fn store_for_config(
    v: &VaultArgs,
    r: &VaultRef,
    value: sealfs::SensitiveBytes,
    into_others_session: bool,
) -> Result<()> {
    let store = v.open_store_once(true)?;
    if let Some(vault) = store.local() {
        if !into_others_session {
            refuse_others_session(vault, r)?;
        }
    }
    let options = PutOptions {
        writer: Some(sealfs::Writer::this_process(sealfs::WriteSource::Cli)),
        ..PutOptions::default()
    };
    let result = store.as_dyn().put_with(r, value, options);
    record_result(v, &store, "set", r, &result);
    result?;
    Ok(())
}
