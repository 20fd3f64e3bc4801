//! `configure` (store a secret and point a config field at it) and `audit`
//! (check every `*_vault_ref` field of a config file).

use std::path::Path;

use anyhow::{bail, Context, Result};
use sealfs::cli_common::{OpenError, VaultArgs};
use sealfs::config::{self, ConfigFile, RefStatus};
use sealfs::{StoreError, VaultError, VaultRef};

use crate::output::{write_json, write_stdout, Status};
use crate::view::RefCheckJson;

pub(super) fn configure(
    v: &VaultArgs,
    path: &Path,
    field: &str,
    r: &VaultRef,
    into_others_session: bool,
) -> Result<Status> {
    // Everything that can be checked is checked before the secret is read
    // or stored, so bad input changes nothing.
    let mut file = ConfigFile::load_or_new(path)?;
    config::set_ref_field(file.document_mut(), field, r)?;
    let value = crate::input::read_stdin_value(r, v.max_value_size)?;
    if value.is_empty() {
        bail!("refusing to store an empty value for {r}");
    }
    super::secret::store_for_config(v, r, value, into_others_session)?;
    file.save()
        .with_context(|| format!("the secret was stored as {r}, but `{field}` was not set"))?;
    Ok(Status::Done)
}

/// Exit status 3 when a field is not resolved.
pub(super) fn audit(v: &VaultArgs, path: &Path, json: bool) -> Result<Status> {
    let doc = config::load_document(path)?;
    let store = match v.open_store_once(false) {
        Ok(s) => Some(s),
        Err(OpenError::Store(StoreError::Vault(VaultError::NoVault(_)))) => None,
        Err(e) => return Err(e.into()),
    };
    let checks = sealfs::check_refs(store.as_ref().map(|s| s.as_dyn()), &doc);
    let all_resolved = checks
        .iter()
        .all(|c| matches!(c.status, RefStatus::Resolved));
    let rows: Vec<RefCheckJson> = checks.iter().map(RefCheckJson::of).collect();
    if json {
        write_json(&rows)?;
    } else {
        let mut out = String::new();
        for row in &rows {
            out.push_str(&format!(
                "{}\t{}\t{}",
                row.field,
                row.vault_ref.as_deref().unwrap_or("-"),
                row.status
            ));
            if let Some(d) = &row.detail {
                out.push('\t');
                out.push_str(d);
            }
            out.push('\n');
        }
        write_stdout(out.as_bytes())?;
    }
    Ok(if all_resolved {
        Status::Done
    } else {
        Status::FoundProblems
    })
}
