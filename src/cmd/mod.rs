//! What each `sealfs` subcommand does, one module per group. Data goes to
//! stdout, messages to stderr (`output`); a secret value only ever goes to
//! stdout from `get`.

mod config;
#[cfg(feature = "fleet")]
mod fleet;
mod history;
mod log;
mod mount;
mod run;
mod secret;
mod session;
mod shell;
mod template;
mod vault;

use anyhow::Result;
use sealfs::cli_common::VaultArgs;
use sealfs::{audit, ErrorKind};

use crate::args::{Cli, Command};
use crate::output::Status;

pub(crate) fn run(cli: Cli) -> Result<Status> {
    let v = &cli.vault;
    match cli.command {
        Command::Set(args) => secret::set(v, args),
        Command::Get { vault_ref, version } => match version {
            None => secret::get(v, &vault_ref),
            Some(n) => history::get_version(v, &vault_ref, n),
        },
        Command::History { vault_ref, json } => history::history(v, &vault_ref, json),
        Command::Rollback {
            vault_ref,
            to,
            into_others_session,
        } => history::rollback(v, &vault_ref, to, into_others_session),
        Command::Settings { keep_versions } => history::settings(v, keep_versions),
        Command::List { scope, json } => secret::list(v, scope.as_ref(), json),
        Command::Delete {
            vault_ref,
            force,
            purge,
        } => secret::delete(v, &vault_ref, force, purge),
        Command::Configure {
            config,
            field,
            vault_ref,
            into_others_session,
        } => config::configure(v, &config, &field, &vault_ref, into_others_session),
        Command::Audit { config, json } => config::audit(v, &config, json),
        Command::Import {
            config: Some(config),
            scope,
            fields,
            dry_run,
            ..
        } => config::import(v, &config, &scope, fields, dry_run),
        Command::Import {
            env_file: Some(file),
            template: Some(name),
            scope,
            replace,
            dry_run,
            ..
        } => template::import_env(v, &file, &scope, &name, replace, dry_run),
        Command::Import { .. } => {
            unreachable!("clap requires --config, or --env-file with --template")
        }
        Command::Doctor => vault::doctor(v),
        Command::AuditLog { follow, json } => log::audit_log(v, follow, json),
        Command::Migrate { to } => vault::migrate(v, to),
        Command::Recover {
            accept_rollback,
            accept_move,
        } => vault::recover(v, accept_rollback, accept_move),
        Command::Mount { args } => mount::mount(v, args),
        Command::Completions { shell } => shell::completions(shell),
        Command::ManPages { dir } => shell::man_pages(&dir),
        Command::Run(args) => Ok(run::run(v, args)),
        Command::Session { command } => session::run(v, command),
        Command::Template { command } => template::run(v, command),
        Command::Console(args) => vault::console(v, args),
        #[cfg(feature = "fleet")]
        Command::Fleet { command } => fleet::run(v, command),
        #[cfg(not(feature = "fleet"))]
        Command::Fleet { .. } => {
            anyhow::bail!("this sealfs was built without the fleet (etcd) backend")
        }
    }
}

/// Appends a command-line event to the audit log (`failure`: the kind of
/// error it ended in). The log never holds values; a failure to write it
/// is a warning, not an error. The default log belongs to a vault: none is
/// started where there is no vault.
pub(crate) fn record(v: &VaultArgs, op: &str, target: &str, failure: Option<ErrorKind>) {
    let Ok(path) = v.audit_path() else { return };
    if v.audit_log.is_none() && !v.vault_dir().is_ok_and(|d| d.exists()) {
        return;
    }
    let event = audit::Event::new("cli", op, target.to_owned(), audit::Caller::current());
    let event = match failure {
        None => event,
        Some(kind) => event.failed(kind.audit_label()),
    };
    match audit::AuditLog::open_checked(&path, v.allow_foreign_vault_dir) {
        Ok(log) => log.record(&event),
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot open the audit log"),
    }
}
