//! `sealfs --backend etcd ...` and `sealfs fleet ...`: the same set/get/
//! list/delete, on the fleet vault in etcd.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sealfs::fleet::{self, EtcdOptions, FleetError, FleetVault};
use sealfs::{Entry, SensitiveBytes, Vault, VaultRef};

use crate::cli::{Cli, Command, FleetCommand, GlobalArgs, SetArgs};
use crate::commands::{
    generate_value, open_or_create, print_entries, read_file_value, read_stdin_value,
    record_outcome, vault_config, write_stdout,
};

pub fn run(cli: Cli) -> Result<ExitCode> {
    let g = &cli.global;
    match cli.command {
        Command::Fleet { command } => fleet(g, command),
        Command::Set(args) => set(g, args),
        Command::Get { vault_ref } => get(g, &vault_ref),
        Command::List { scope, json } => {
            let entries = open(g)?.list(scope.as_ref())?;
            print_entries(entries.into_iter().map(Entry::from).collect(), json)
        }
        Command::Delete { vault_ref, force } => {
            let result = open(g)?.delete(&vault_ref);
            record(g, "delete", &vault_ref, &result);
            match result {
                Err(FleetError::NotFound(_)) if force => Ok(ExitCode::SUCCESS),
                other => other.map(|()| ExitCode::SUCCESS).map_err(Into::into),
            }
        }
        Command::Mount { args } => crate::commands::mount(g, args),
        other => bail!(
            "`sealfs {}` does not work with --backend etcd yet; use set, get, list, delete or fleet",
            command_name(&other)
        ),
    }
}

fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Configure { .. } => "configure",
        Command::Audit { .. } => "audit",
        Command::Doctor => "doctor",
        Command::Migrate { .. } => "migrate",
        Command::AuditLog { .. } => "audit-log",
        Command::Console(_) => "console",
        _ => "this command",
    }
}

fn record<T>(g: &GlobalArgs, op: &str, r: &VaultRef, result: &Result<T, FleetError>) {
    let failure = match result {
        Ok(_) => None,
        Err(FleetError::NotFound(_)) => Some("not found"),
        Err(FleetError::NotEnrolled { .. }) => Some("not enrolled"),
        Err(FleetError::Unreachable { .. }) => Some("etcd unreachable"),
        Err(_) => Some("error"),
    };
    record_outcome(g, op, &format!("fleet:{r}"), failure);
}

/// The host's local vault (identity, credentials, cache), created if missing.
fn local(g: &GlobalArgs) -> Result<Vault> {
    open_or_create(g)
}

fn open(g: &GlobalArgs) -> Result<FleetVault> {
    let local = local(g)?;
    let cache_dir = vault_config(g, false)?.vault_dir.join("fleet-cache");
    let opts = EtcdOptions {
        endpoints: g.etcd_endpoints.clone(),
        prefix: g.etcd_prefix.clone(),
        timeout: Duration::from_secs_f64(g.etcd_timeout),
        credentials: None,
        tls: None,
    };
    Ok(FleetVault::open(&local, opts, cache_dir, g.max_value_size)?)
}

fn set(g: &GlobalArgs, args: SetArgs) -> Result<ExitCode> {
    let r = &args.vault_ref;
    if let Some(code) = crate::commands::refuse_stray_value(&args) {
        return Ok(code);
    }
    if args.once {
        bail!("--once is not supported by the fleet backend; nothing was stored");
    }
    let max = g.max_value_size;
    let value = match (&args.from_file, args.generate) {
        (Some(path), _) => read_file_value(r, path, max)?,
        (None, Some(n)) => generate_value(r, n, max)?,
        (None, None) => read_stdin_value(r, max)?,
    };
    let vault = open(g)?;
    let result = vault.put(r, &value);
    record(g, "set", r, &result);
    match result {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(e @ FleetError::Unreachable { .. }) => {
            bail!("{e}; writes need etcd, nothing was stored")
        }
        Err(e) => Err(e.into()),
    }
}

fn get(g: &GlobalArgs, r: &VaultRef) -> Result<ExitCode> {
    let result = open(g)?.get(r);
    record(g, "get", r, &result);
    write_stdout(result?.expose())?;
    Ok(ExitCode::SUCCESS)
}

fn fleet(g: &GlobalArgs, command: FleetCommand) -> Result<ExitCode> {
    match command {
        FleetCommand::Recipient => {
            // Local only: no etcd needed to learn one's own recipient.
            let id = fleet::host_identity(&local(g)?)?;
            println!("{}", id.recipient());
        }
        FleetCommand::Login { user } => {
            if user.is_empty() || user.len() > 256 {
                bail!("--user must be 1 to 256 characters");
            }
            let r: VaultRef =
                format!("principal:sealfs-fleet/{}", fleet::ETCD_PASSWORD_KEY).parse()?;
            let password: SensitiveBytes = read_stdin_value(&r, 4096)?;
            if password.is_empty() {
                bail!("refusing an empty password; nothing was stored");
            }
            fleet::store_credentials(&local(g)?, &user, password)?;
            eprintln!("stored the etcd credentials of {user} in this host's local vault");
        }
        FleetCommand::Tls { ca, cert, key } => {
            let ca = read_pem(&ca, "CERTIFICATE")?;
            let cert = read_pem(&cert, "CERTIFICATE")?;
            let key = SensitiveBytes::from(read_pem(&key, "PRIVATE KEY")?);
            fleet::store_tls(&local(g)?, fleet::EtcdTls { ca, cert, key })?;
            eprintln!(
                "stored etcd's CA and this host's client certificate and key in its local vault; \
                 the key file is no longer needed"
            );
        }
        FleetCommand::Init => {
            let v = open(g)?;
            v.init()?;
            eprintln!(
                "fleet ready under /{}/ with this host ({}) as a member",
                g.etcd_prefix,
                v.recipient()
            );
        }
        FleetCommand::Enroll { recipient } => {
            open(g)?.enroll(&recipient)?;
            record_outcome(g, "fleet-enroll", recipient.trim(), None);
            eprintln!("enrolled {}", recipient.trim());
        }
        FleetCommand::Revoke { recipient } => {
            let rotated = open(g)?.revoke(&recipient)?;
            record_outcome(g, "fleet-revoke", recipient.trim(), None);
            eprintln!(
                "revoked {}; rotated the fleet key of {rotated} scope(s)",
                recipient.trim()
            );
        }
        FleetCommand::Status { json } => {
            let s = open(g)?.status()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!(
                    "this host: {} ({})",
                    s.recipient,
                    if s.enrolled {
                        "enrolled"
                    } else {
                        "not enrolled"
                    }
                );
                println!("members: {}", s.members.len());
                for m in &s.members {
                    println!("  {m}");
                }
                for sc in &s.scopes {
                    println!(
                        "scope {}: key epoch {} ({}), {} secret(s){}",
                        sc.scope,
                        sc.epoch,
                        sc.key_id,
                        sc.secrets,
                        if sc.readable {
                            ""
                        } else {
                            ", not readable by this host"
                        }
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A PEM file holding a `-----BEGIN ...{label}-----` block. Errors name
/// the file, never its content.
fn read_pem(path: &std::path::Path, label: &str) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = std::str::from_utf8(&bytes).unwrap_or("");
    let has_block = text
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(&format!("{label}-----")));
    if !has_block {
        let mut bytes = bytes;
        zeroize::Zeroize::zeroize(&mut bytes);
        bail!(
            "{} is not a PEM file with a {label} block; nothing was stored",
            path.display()
        );
    }
    Ok(bytes)
}
