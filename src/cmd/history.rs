//! `history`, `get --version`, `rollback` and `settings`: the earlier
//! versions a local vault keeps of each secret.

use anyhow::{bail, Result};
use sealfs::cli_common::{Store, VaultArgs};
use sealfs::{StoreError, Vault, VaultRef, WriteSource, Writer};

use super::record;
use super::secret::{no_vault_dir, open_existing, refuse_others_session};
use crate::output::{write_json, write_stdout, Status};
use crate::view::VersionJson;

/// The local vault of `store`, or a one-line error: the fleet keeps no
/// versions.
fn local<'a>(store: &'a Store, what: &str) -> Result<&'a Vault> {
    match store.local() {
        Some(vault) => Ok(vault),
        None => bail!("{what} is not supported by the fleet vault (it keeps no earlier versions)"),
    }
}

fn existing(v: &VaultArgs, r: &VaultRef) -> Result<Store> {
    match open_existing(v)? {
        Some(store) => Ok(store),
        None => bail!(
            "secret not found: {r} (there is no vault at {} yet)",
            no_vault_dir(v).display()
        ),
    }
}

pub(super) fn history(v: &VaultArgs, r: &VaultRef, json: bool) -> Result<Status> {
    let store = existing(v, r)?;
    let versions = local(&store, "history")?.history(r)?;
    if json {
        let rows: Vec<VersionJson> = versions.iter().map(VersionJson::of).collect();
        write_json(&rows)?;
        return Ok(Status::Done);
    }
    let mut out = String::new();
    for ver in &versions {
        let (source, uid, exe) = match &ver.writer {
            Some(w) => (
                w.source.as_str(),
                w.uid.map_or("-".into(), sealfs::describe_uid),
                // Named by whoever wrote through the mount: escaped, so
                // it cannot forge a line or move the cursor.
                w.exe
                    .as_deref()
                    .map_or_else(|| "-".into(), sealfs::audit::escaped),
            ),
            None => ("-", "-".into(), "-".into()),
        };
        let mut notes = Vec::new();
        if ver.current {
            notes.push("current".to_owned());
        }
        if let Some(n) = ver.restored_from {
            notes.push(format!("rollback to {n}"));
        }
        out.push_str(&format!(
            "{}\t{}\t{}\t{source}\t{uid}\t{exe}\t{}\n",
            ver.version,
            ver.len,
            sealfs::rfc3339(ver.written, false),
            notes.join(", ")
        ));
    }
    write_stdout(out.as_bytes())?;
    Ok(Status::Done)
}

pub(super) fn get_version(v: &VaultArgs, r: &VaultRef, n: u64) -> Result<Status> {
    let store = existing(v, r)?;
    let result = local(&store, "get --version")?
        .get_version(r, n)
        .map_err(StoreError::from);
    record(
        v,
        "get-version",
        &format!("{r}@{n}"),
        result.as_ref().err().map(StoreError::kind),
    );
    write_stdout(result?.expose())?;
    Ok(Status::Done)
}

pub(super) fn rollback(
    v: &VaultArgs,
    r: &VaultRef,
    to: Option<u64>,
    into_others_session: bool,
) -> Result<Status> {
    let store = existing(v, r)?;
    let vault = local(&store, "rollback")?;
    if !into_others_session {
        refuse_others_session(vault, r)?;
    }
    let result = vault
        .rollback(r, to, Some(Writer::this_process(WriteSource::Cli)))
        .map_err(StoreError::from);
    // The version brought back, when known.
    let target = match (&result, to) {
        (Ok((_, from)), _) => format!("{r}@{from}"),
        (Err(_), Some(from)) => format!("{r}@{from}"),
        (Err(_), None) => r.to_string(),
    };
    record(
        v,
        "rollback",
        &target,
        result.as_ref().err().map(StoreError::kind),
    );
    match result {
        Ok((entry, from)) => {
            crate::output::note(&format!(
                "{r}: version {} now holds the value of version {from}",
                entry.version
            ));
            Ok(Status::Done)
        }
        Err(e) => bail!("{}; nothing was changed", sealfs::Chain(&e)),
    }
}

pub(super) fn settings(v: &VaultArgs, keep_versions: Option<u32>) -> Result<Status> {
    let Some(store) = open_existing(v)? else {
        bail!("there is no vault at {} yet", no_vault_dir(v).display());
    };
    let vault = local(&store, "settings")?;
    if let Some(n) = keep_versions {
        let result = vault.set_keep_versions(n).map_err(StoreError::from);
        record(
            v,
            "settings",
            &format!("keep-versions={n}"),
            result.as_ref().err().map(StoreError::kind),
        );
        result?;
    }
    write_stdout(format!("keep-versions\t{}\n", vault.keep_versions()?).as_bytes())?;
    Ok(Status::Done)
}
