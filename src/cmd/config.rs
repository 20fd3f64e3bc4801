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

/// `import`: every plaintext secret field of `path` stored in `scope` and
/// replaced by its `*_vault_ref` field, the file rewritten atomically.
/// A ref that holds another value already stops the import before
/// anything changes; one that holds the same value (a re-run after an
/// interruption) is left as it is.
pub(super) fn import(
    v: &VaultArgs,
    path: &Path,
    scope: &sealfs::VaultScope,
    patterns: Vec<String>,
    dry_run: bool,
) -> Result<Status> {
    if !path.is_file() {
        bail!("cannot read config {}: no such file", path.display());
    }
    let mut file = ConfigFile::load_or_new(path)?;
    let filter = config::FieldFilter { patterns };
    let found = config::find_plaintext(file.document_mut(), &filter, scope);
    let mut refs: Vec<&VaultRef> = found.iter().map(|f| &f.vault_ref).collect();
    refs.sort();
    if let Some(w) = refs.windows(2).find(|w| w[0] == w[1]) {
        bail!(
            "two fields would both be stored as {}; import them one at a time with --field",
            w[0]
        );
    }
    if dry_run || found.is_empty() {
        let mut out = String::new();
        for f in &found {
            out.push_str(&format!("{}\t{}\n", f.dotted(), f.vault_ref));
        }
        write_stdout(out.as_bytes())?;
        if found.is_empty() {
            crate::output::note(&format!("no plaintext secret fields in {}", path.display()));
        }
        return Ok(Status::Done);
    }
    let store = v.open_store_once(true)?;
    // Checked, all of them, before anything is stored.
    let mut todo = Vec::new();
    for f in &found {
        let value = config::plaintext_of(file.document_mut(), f).expect("found just now");
        let value = sealfs::SensitiveBytes::from_slice(value.as_bytes());
        sealfs::check_value(&f.vault_ref, &value, v.max_value_size)?;
        if let Some(vault) = store.local() {
            super::secret::refuse_others_session(vault, &f.vault_ref)?;
        }
        match store.as_dyn().read(&f.vault_ref) {
            Ok((held, _)) if held.expose() == value.expose() => {}
            Ok(_) => bail!(
                "{} holds another value already; nothing was changed (choose another --scope, or --field)",
                f.vault_ref
            ),
            Err(e) if e.kind() == sealfs::ErrorKind::NotFound => todo.push((f, value)),
            Err(e) => return Err(e.into()),
        }
    }
    for (f, value) in todo {
        let options = sealfs::PutOptions {
            expect: Some(sealfs::Expected::Absent),
            writer: Some(sealfs::Writer::this_process(sealfs::WriteSource::Cli)),
            ..sealfs::PutOptions::default()
        };
        let result = store.as_dyn().put_with(&f.vault_ref, value, options);
        super::record(
            v,
            "import",
            &f.vault_ref.to_string(),
            result.as_ref().err().map(StoreError::kind),
        );
        result.with_context(|| format!("cannot store {} from `{}`", f.vault_ref, f.dotted()))?;
    }
    for f in &found {
        config::replace_with_ref(file.document_mut(), f);
    }
    file.save().with_context(|| {
        "the secrets were stored, but the config was not rewritten (run the import again)"
    })?;
    let mut out = String::new();
    for f in &found {
        out.push_str(&format!("{}\t{}\n", f.ref_field_dotted(), f.vault_ref));
    }
    write_stdout(out.as_bytes())?;
    Ok(Status::Done)
}
