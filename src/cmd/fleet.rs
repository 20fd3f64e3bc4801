//! `sealfs fleet ...`: membership of the fleet vault in etcd and this
//! host's credentials for it. Its secrets are set, read, listed and
//! deleted by the ordinary commands with `--backend etcd`.

use anyhow::{bail, Context, Result};
use sealfs::cli_common::VaultArgs;
use sealfs::fleet;
use sealfs::{SensitiveBytes, VaultRef};

use super::record;
use crate::args::FleetCommand;
use crate::output::{note, write_json, write_stdout, Status};

pub(super) fn run(v: &VaultArgs, command: FleetCommand) -> Result<Status> {
    match command {
        FleetCommand::Recipient => {
            // Local only: no etcd needed to learn one's own recipient.
            let card = fleet::host_card(&v.open_local(true)?)?;
            write_stdout(format!("{card}\n").as_bytes())?;
        }
        FleetCommand::Login { user } => {
            if user.is_empty() || user.len() > 256 {
                bail!("--user must be 1 to 256 characters");
            }
            let r: VaultRef = fleet::password_ref();
            let password: SensitiveBytes = crate::input::read_stdin_value(&r, 4096)?;
            if password.is_empty() {
                bail!("refusing an empty password; nothing was stored");
            }
            fleet::store_credentials(&v.open_local(true)?, &user, password)?;
            note(&format!(
                "stored the etcd credentials of {user} in this host's local vault"
            ));
        }
        FleetCommand::Tls { ca, cert, key } => {
            let ca = read_pem(&ca, "CERTIFICATE")?;
            let cert = read_pem(&cert, "CERTIFICATE")?;
            let key = SensitiveBytes::from(read_pem(&key, "PRIVATE KEY")?);
            fleet::store_tls(&v.open_local(true)?, fleet::EtcdTls { ca, cert, key })?;
            note(
                "stored etcd's CA and this host's client certificate and key in its local vault; \
                 the key file is no longer needed",
            );
        }
        FleetCommand::Init => {
            let f = v.open_fleet()?;
            let id = f.init()?;
            write_stdout(format!("{id}\n").as_bytes())?;
            note(&format!(
                "fleet {id} ready under /{}/ with this host as its member; \
                 `sealfs fleet enroll` prints the token another host joins with",
                v.etcd.prefix,
            ));
        }
        FleetCommand::Join {
            token,
            replace_pin,
            forget_scope,
        } => {
            // The etcd login it may carry is needed to read etcd at all;
            // it is kept only once the fleet it leads to is verified.
            let local = v.open_local(true)?;
            let login = fleet::login_of_token(&local, &token, &v.etcd.prefix)?;
            let duplicate = |(u, p): &(String, SensitiveBytes)| {
                (u.clone(), SensitiveBytes::from_slice(p.expose()))
            };
            let joined = v.open_fleet_as(login.as_ref().map(duplicate))?.join(
                &token,
                replace_pin,
                &forget_scope,
            )?;
            if let Some((user, password)) = login {
                fleet::store_credentials(&local, &user, password)?;
                note(&format!(
                    "stored this host's own etcd login ({user}) from the token in its local vault"
                ));
            }
            warn_missing(&joined.missing, "fleet join --replace-pin");
            note(if joined.member {
                "joined the fleet; this host is a member"
            } else {
                "pinned the fleet; this host is not a member yet: give a member \
                 the output of `sealfs fleet recipient` for `sealfs fleet enroll`"
            });
        }
        FleetCommand::Enroll {
            recipient,
            etcd_user,
        } => {
            let f = v.open_fleet()?;
            let token = f.enroll(&recipient, etcd_user)?;
            record(v, "fleet-enroll", recipient.trim(), None);
            write_stdout(format!("{token}\n").as_bytes())?;
            let card = recipient.trim();
            note(&if etcd_user {
                let user = f.host_etcd_user(&fleet::HostCard::parse(card)?.recipient);
                format!(
                    "enrolled {card} with its own etcd user {user}; on that host, run \
                     `sealfs fleet join` with the token above (it carries the login, sealed to that host)"
                )
            } else {
                format!(
                    "enrolled {card}; on that host, run `sealfs fleet join` with the token above"
                )
            });
        }
        FleetCommand::Revoke { recipient } => {
            let done = v.open_fleet()?.revoke(&recipient)?;
            record(v, "fleet-revoke", recipient.trim(), None);
            let user = &done.etcd_user;
            let etcd = match &done.etcd_user_removed {
                Ok(true) => format!("; removed its etcd user {user}"),
                Ok(false) => String::new(),
                Err(e) => format!(
                    "; WARNING: whether it has its own etcd user {user} could not be checked ({e}); \
                     if it has, remove it as etcd root (`etcdctl user delete {user}`)"
                ),
            };
            note(&format!(
                "revoked {}; rotated the fleet key of {} scope(s){etcd}",
                recipient.trim(),
                done.rotated
            ));
        }
        FleetCommand::Grant { scope, hosts, all } => {
            let to = (!all).then_some(hosts.as_slice());
            let changed = v.open_fleet()?.grant_scope(&scope, to)?;
            record(v, "fleet-grant", &scope.to_string(), None);
            let who = if all {
                "every member".to_owned()
            } else {
                format!("{} member(s)", hosts.len())
            };
            note(&if changed {
                format!("granted scope {scope} to {who}, under a new key")
            } else {
                format!("scope {scope} was granted to {who} already")
            });
        }
        FleetCommand::Recover { forget_scope } => {
            let done = v.open_fleet()?.recover(&forget_scope)?;
            let (token, scopes) = (done.token, done.rekeyed);
            record(v, "fleet-recover", &v.etcd.prefix, None);
            write_stdout(format!("{token}\n").as_bytes())?;
            warn_missing(&done.missing, "fleet recover");
            note(&format!(
                "took over the restored state and re-keyed {scopes} scope(s); a host that \
                 now refuses the membership chain re-joins with `sealfs fleet join --replace-pin` \
                 and the token above"
            ));
        }
        FleetCommand::Compact => {
            let (before, after) = v.open_fleet()?.compact()?;
            note(&format!(
                "etcd compacted and defragmented: database {} -> {}; alarms: {}",
                mib(before.db_size),
                mib(after.db_size),
                alarms(&after.alarms)
            ));
        }
        FleetCommand::Status { json } => {
            let s = v.open_fleet()?.status()?;
            if json {
                write_json(&s)?;
            } else {
                let mut out = format!(
                    "fleet: {} (membership entry {})\njoin token: {}\nthis host: {} ({})\nmembers: {}\n",
                    s.fleet_id,
                    s.chain_seq,
                    s.join_token,
                    s.recipient,
                    if s.enrolled {
                        "enrolled"
                    } else {
                        "not enrolled"
                    },
                    s.members.len()
                );
                for m in &s.members {
                    out.push_str(&format!("  {m}\n"));
                }
                match &s.etcd {
                    Some(e) => out.push_str(&format!(
                        "etcd {}: database {} ({} in use) of {}; alarms: {}\n",
                        e.version,
                        mib(e.db_size),
                        mib(e.db_in_use),
                        e.quota.map_or_else(
                            || "a quota this etcd does not report (its default is 2 GiB)".into(),
                            |q| format!("a {} quota", mib(q))
                        ),
                        alarms(&e.alarms)
                    )),
                    None => out.push_str("etcd: space not shown (this etcd user may not ask)\n"),
                }
                for sc in &s.scopes {
                    out.push_str(&format!(
                        "scope {}: key epoch {} ({}), {} secret(s){}{}\n",
                        sc.scope,
                        sc.epoch,
                        sc.key_id,
                        sc.secrets,
                        match &sc.audience {
                            Some(a) => format!(", granted to {}", a.join(" ")),
                            None => String::new(),
                        },
                        match (&sc.problem, sc.readable) {
                            (Some(p), _) => format!(", refused: {p}"),
                            (None, true) => String::new(),
                            (None, false) => ", not readable by this host".into(),
                        }
                    ));
                }
                write_stdout(out.as_bytes())?;
            }
        }
    }
    Ok(Status::Done)
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

/// Bytes as MiB, one decimal.
fn mib(bytes: i64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn alarms(list: &[String]) -> String {
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

/// Says which scopes this host pinned have no keyring in the etcd it just
/// took over, and how to forget them if that is the restore's doing.
fn warn_missing(missing: &[sealfs::VaultScope], command: &str) {
    if missing.is_empty() {
        return;
    }
    let names: Vec<String> = missing.iter().map(ToString::to_string).collect();
    let flags: Vec<String> = names
        .iter()
        .map(|n| format!("--forget-scope {n}"))
        .collect();
    note(&format!(
        "WARNING: this host has seen scope(s) {} and etcd has no keyring of them, so they stay \
         refused as tampering; if they were made after the backup etcd was restored from, run \
         `sealfs {command} {}` again with the same arguments; otherwise etcd was tampered with",
        names.join(", "),
        flags.join(" ")
    ));
}
