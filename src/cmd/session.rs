//! `sealfs session create|list|end`: session scopes with a lifetime.

use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use sealfs::cli_common::VaultArgs;
use sealfs::{ScopeInfo, StoreError, VaultScope};
use serde::Serialize;

use super::record;
use super::secret::open_existing;
use crate::args::SessionCommand;
use crate::output::{write_json, write_stdout, Status};

pub(super) fn run(v: &VaultArgs, command: SessionCommand) -> Result<Status> {
    match command {
        SessionCommand::Create { id, ttl, owner } => {
            let scope = session_scope(&id)?;
            let owner = match owner {
                Some(o) => Some(uid_of(&o)?),
                None => current_uid(),
            };
            create(v, &scope, owner, ttl.map(|t| SystemTime::now() + t))?;
            Ok(Status::Done)
        }
        SessionCommand::List { json } => list(v, json),
        SessionCommand::End { id } => {
            let scope = session_scope(&id)?;
            end(v, &scope)?;
            Ok(Status::Done)
        }
    }
}

/// `session:<id>`, or a one-line error naming what is wrong with `id`.
fn session_scope(id: &str) -> Result<VaultScope> {
    format!("session:{id}")
        .parse::<VaultScope>()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Creates session `scope` owned by `owner`, ending at `expires` (audited).
pub(super) fn create(
    v: &VaultArgs,
    scope: &VaultScope,
    owner: Option<u32>,
    expires: Option<SystemTime>,
) -> Result<()> {
    let store = v.open_store_once(true)?;
    let result = store.as_dyn().create_scope_until(scope, owner, expires);
    record(
        v,
        "session-create",
        &scope.to_string(),
        result.as_ref().err().map(StoreError::kind),
    );
    result.with_context(|| format!("cannot create {scope}"))
}

/// Ends session `scope`: every secret in it destroyed at once (audited).
pub(super) fn end(v: &VaultArgs, scope: &VaultScope) -> Result<()> {
    let Some(store) = open_existing(v)? else {
        bail!("no such scope: {scope}");
    };
    let result = store.as_dyn().end_session(scope);
    record(
        v,
        "session-end",
        &scope.to_string(),
        result.as_ref().err().map(StoreError::kind),
    );
    result.with_context(|| format!("cannot end {scope}"))
}

#[derive(Serialize)]
struct SessionJson {
    id: String,
    scope: String,
    owner_uid: Option<u32>,
    /// When it ends, if it has a lifetime.
    expires: Option<String>,
    secrets: usize,
}

fn list(v: &VaultArgs, json: bool) -> Result<Status> {
    let Some(store) = open_existing(v)? else {
        return if json {
            write_json(&Vec::<SessionJson>::new()).map(|()| Status::Done)
        } else {
            Ok(Status::Done)
        };
    };
    let vault = store.as_dyn();
    let mut rows = Vec::new();
    for ScopeInfo {
        scope,
        owner_uid,
        expires,
        ..
    } in vault.scopes()?
    {
        let VaultScope::Session(id) = &scope else {
            continue;
        };
        rows.push(SessionJson {
            id: id.to_string(),
            secrets: vault.list(Some(&scope))?.len(),
            scope: scope.to_string(),
            owner_uid,
            expires: expires.map(|t| sealfs::rfc3339(t, false)),
        });
    }
    if json {
        write_json(&rows)?;
    } else {
        let mut out = String::new();
        for s in rows {
            let owner = s.owner_uid.map_or("-".into(), sealfs::describe_uid);
            let ends = s.expires.unwrap_or_else(|| "-".into());
            out.push_str(&format!("{}\t{owner}\t{ends}\t{}\n", s.id, s.secrets));
        }
        write_stdout(out.as_bytes())?;
    }
    Ok(Status::Done)
}

/// The uid of user `name` (or a uid given as a number).
fn uid_of(name: &str) -> Result<u32> {
    if let Ok(uid) = name.parse::<u32>() {
        return Ok(uid);
    }
    #[cfg(unix)]
    {
        match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => Ok(u.uid.as_raw()),
            Ok(None) => bail!("no such user: {name:?}"),
            Err(e) => bail!("cannot look up user {name:?}: {e}"),
        }
    }
    #[cfg(not(unix))]
    bail!("--owner takes a numeric uid here, not {name:?}")
}

/// This process's effective uid (the owner of what it creates).
pub(super) fn current_uid() -> Option<u32> {
    #[cfg(unix)]
    return Some(nix::unistd::geteuid().as_raw());
    #[cfg(not(unix))]
    None
}
