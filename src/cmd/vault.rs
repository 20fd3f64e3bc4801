//! Commands on the vault as a whole: `doctor`, `migrate`, `recover`, and
//! `console`, the web console over it.

use anyhow::Result;
use sealfs::cli_common::VaultArgs;
use sealfs::doctor::{self, Level};
use sealfs::Vault;

use super::record;
use crate::args::ConsoleArgs;
use crate::output::{note, write_stdout, Status};

pub(super) fn migrate(v: &VaultArgs, to: sealfs::BackendKind) -> Result<Status> {
    let report = Vault::migrate(v.vault_config(false)?, to)?;
    if report.from == report.to && report.blobs == 0 {
        note(&format!("the vault already uses {to}; nothing to migrate"));
    } else {
        note(&format!(
            "{} {} secret(s) from {} to {}",
            if report.resumed {
                "finished moving"
            } else {
                "moved"
            },
            report.blobs,
            report.from,
            report.to
        ));
    }
    Ok(Status::Done)
}

pub(super) fn recover(v: &VaultArgs, accept_rollback: bool, accept_move: bool) -> Result<Status> {
    if accept_move {
        let outcome = Vault::accept_move(v.vault_config(false)?);
        record(
            v,
            "recover",
            "accept-move",
            outcome.as_ref().err().map(|e| e.kind()),
        );
        if outcome? {
            note("accepted the vault at its new path; the copy at its old path is refused from now on");
        } else {
            note("the vault was already anchored at this path");
        }
        return Ok(Status::Done);
    }
    debug_assert!(accept_rollback, "clap requires one of the two");
    let outcome = Vault::accept_rollback(v.vault_config(false)?);
    record(
        v,
        "recover",
        "accept-rollback",
        outcome.as_ref().err().map(|e| e.kind()),
    );
    let (index, anchor) = outcome?;
    match anchor {
        Some(anchor) if anchor > index => note(&format!(
            "accepted the vault at commit {index} (its anchor was at {anchor}); older copies stay refused"
        )),
        _ => note(&format!(
            "accepted the vault at commit {index}; it was not rolled back"
        )),
    }
    Ok(Status::Done)
}

pub(super) fn console(v: &VaultArgs, args: ConsoleArgs) -> Result<Status> {
    #[cfg(feature = "console")]
    {
        let vault = v.vault_config(false)?;
        crate::console::run(crate::console::ConsoleOptions {
            listen: args.listen,
            allow_remote: args.allow_remote,
            tls: args.tls_cert.zip(args.tls_key),
            config: args.config,
            audit_log: v.audit_path()?,
            vault,
        })?;
        Ok(Status::Done)
    }
    #[cfg(not(feature = "console"))]
    {
        let _ = (v, args);
        anyhow::bail!("this sealfs was built without the web console");
    }
}

/// Exit status 3 when a finding is an error.
pub(super) fn doctor(v: &VaultArgs) -> Result<Status> {
    let report = doctor::diagnose(&v.vault_config(false)?);
    let mut out = String::new();
    for f in &report.findings {
        out.push_str(&format!("{:<5} {}: {}\n", f.level, f.topic, f.message));
    }
    write_stdout(out.as_bytes())?;
    Ok(if report.worst() == Level::Error {
        Status::FoundProblems
    } else {
        Status::Done
    })
}
