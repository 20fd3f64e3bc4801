//! What each `sealfs` subcommand does. Data goes to stdout, messages to
//! stderr; a secret value only ever goes to stdout from `get`.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use base64::Engine;
use sealfs::config::{self, ConfigFile};
use sealfs::doctor::{self, Level};
use sealfs::{audit, Entry, PutOptions, SensitiveBytes, Vault, VaultConfig, VaultError, VaultRef};
use serde::Serialize;

use crate::cli::{BackendArg, Cli, Command, ConsoleArgs, GlobalArgs, SetArgs};

pub fn run(cli: Cli) -> Result<ExitCode> {
    let g = &cli.global;
    if g.backend == BackendArg::Etcd || matches!(cli.command, Command::Fleet { .. }) {
        #[cfg(feature = "fleet")]
        return crate::fleet_cli::run(cli);
        #[cfg(not(feature = "fleet"))]
        bail!("this sealfs was built without the fleet (etcd) backend");
    }
    match cli.command {
        Command::Set(args) => set(g, args),
        Command::Get { vault_ref } => get(g, &vault_ref),
        Command::List { scope, json } => list(g, scope.as_ref(), json),
        Command::Delete { vault_ref, force } => delete(g, &vault_ref, force),
        Command::Configure {
            config,
            field,
            vault_ref,
            into_others_session,
        } => configure(g, &config, &field, &vault_ref, into_others_session),
        Command::Audit { config, json } => audit(g, &config, json),
        Command::Doctor => doctor(g),
        Command::AuditLog { follow, json } => audit_log(g, follow, json),
        Command::Migrate { to } => migrate(g, to),
        Command::Recover {
            accept_rollback,
            accept_move,
        } => recover(g, accept_rollback, accept_move),
        Command::Mount { args } => mount(g, args),
        Command::Fleet { .. } => unreachable!("handled above"),
        Command::Console(args) => console(g, args),
    }
}

/// The audit log: `--audit-log`, else `audit.log` beside the vault
/// directory (`audit::default_path`).
pub(crate) fn audit_path(g: &GlobalArgs) -> Result<PathBuf> {
    Ok(match &g.audit_log {
        Some(p) => p.clone(),
        None => audit::default_path(&vault_config(g, false)?.vault_dir),
    })
}

/// Appends a CLI event to the audit log of an existing vault. The log never
/// holds values; a failure to write it is a warning, not an error.
fn record(g: &GlobalArgs, op: &str, r: &VaultRef, outcome: &Result<impl Sized, VaultError>) {
    let failure = match outcome {
        Ok(_) => None,
        Err(VaultError::NotFound(_)) => Some("not found"),
        Err(_) => Some("error"),
    };
    record_outcome(g, op, &r.to_string(), failure);
}

/// Appends a CLI event (`failure`: why it failed, if it did).
pub(crate) fn record_outcome(g: &GlobalArgs, op: &str, target: &str, failure: Option<&str>) {
    let Ok(path) = audit_path(g) else { return };
    // The default log belongs to a vault: none is started where there is no vault.
    if g.audit_log.is_none() && !vault_config(g, false).is_ok_and(|c| c.vault_dir.exists()) {
        return;
    }
    let event = audit::Event::new("cli", op, target.to_owned(), audit::Caller::current());
    let event = match failure {
        None => event,
        Some(why) => event.failed(why),
    };
    match audit::AuditLog::open_checked(&path, g.allow_foreign_vault_dir) {
        Ok(log) => log.record(&event),
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot open the audit log"),
    }
}

fn default_vault_dir() -> Result<PathBuf> {
    sealfs::vault::default_vault_dir().ok_or_else(|| {
        anyhow::anyhow!("cannot find the default vault directory: neither XDG_STATE_HOME nor HOME is set to an absolute path; use --vault-dir")
    })
}

pub(crate) fn vault_config(g: &GlobalArgs, create: bool) -> Result<VaultConfig> {
    let vault_dir = match &g.vault_dir {
        Some(d) => d.clone(),
        None => default_vault_dir()?,
    };
    Ok(VaultConfig {
        identity_dir: g.identity_dir.clone(),
        backend: g.backend.local(),
        backend_options: sealfs::backend::BackendOptions {
            timeout: std::time::Duration::from_secs_f64(g.keystore_timeout),
            session_bus: None,
        },
        max_value_size: g.max_value_size,
        create,
        allow_foreign_owner: g.allow_foreign_vault_dir,
        ..VaultConfig::new(vault_dir)
    })
}

/// Opens the vault, creating it (and the device identity) if missing.
pub(crate) fn open_or_create(g: &GlobalArgs) -> Result<Vault> {
    let config = vault_config(g, true)?;
    Ok(Vault::open(config)?)
}

/// Opens an existing vault; `None` if there is none yet.
fn open_existing(g: &GlobalArgs) -> Result<Option<Vault>> {
    match Vault::open(vault_config(g, false)?) {
        Ok(v) => Ok(Some(v)),
        Err(VaultError::NoVault(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn too_large(r: &VaultRef, max: usize) -> anyhow::Error {
    anyhow::anyhow!("value for {r} is over the limit of {max} bytes (see --max-value-size)")
}

/// The value for `r`: from a no-echo prompt (twice) when stdin is a
/// terminal, otherwise all of stdin, byte-exact.
pub(crate) fn read_stdin_value(r: &VaultRef, max: usize) -> Result<SensitiveBytes> {
    let stdin = io::stdin();
    if stdin.is_terminal() {
        let first = SensitiveBytes::from(
            rpassword::prompt_password(format!("Value for {r}: "))
                .context("cannot read the value from the terminal")?,
        );
        let second = SensitiveBytes::from(
            rpassword::prompt_password("Again: ")
                .context("cannot read the value from the terminal")?,
        );
        if !first.ct_eq(&second) {
            bail!("the two entries differ; nothing was stored");
        }
        if first.len() > max {
            return Err(too_large(r, max));
        }
        return Ok(first);
    }
    SensitiveBytes::read_limited(stdin.lock(), max)
        .context("cannot read the value from stdin")?
        .ok_or_else(|| too_large(r, max))
}

pub(crate) fn read_file_value(r: &VaultRef, path: &Path, max: usize) -> Result<SensitiveBytes> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    SensitiveBytes::read_limited(file, max)
        .with_context(|| format!("cannot read {}", path.display()))?
        .ok_or_else(|| too_large(r, max))
}

/// `n` random bytes as URL-safe base64 without padding, built in place.
pub(crate) fn generate_value(r: &VaultRef, n: usize, max: usize) -> Result<SensitiveBytes> {
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let text_len = base64::encoded_len(n, false)
        .filter(|l| *l <= max)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--generate {n} would make a value for {r} over the limit of {max} bytes"
            )
        })?;
    let mut raw = SensitiveBytes::zeroed(n);
    getrandom::fill(raw.expose_mut()).context("the OS random number generator failed")?;
    let mut text = SensitiveBytes::zeroed(text_len);
    let written = engine
        .encode_slice(raw.expose(), text.expose_mut())
        .context("encoding the generated value")?;
    text.expose_mut().truncate(written);
    Ok(text)
}

/// `sealfs set REF VALUE`: refused with exit 2, the argument not echoed
/// (it is most likely the secret itself).
pub(crate) fn refuse_stray_value(args: &SetArgs) -> Option<ExitCode> {
    if args.stray.is_empty() {
        return None;
    }
    eprintln!(
        "error: `sealfs set` takes the value from stdin, a prompt, --from-file or --generate, never from an argument; nothing was stored (and the argument is now in your shell history)"
    );
    Some(ExitCode::from(2))
}

fn set(g: &GlobalArgs, args: SetArgs) -> Result<ExitCode> {
    let r = &args.vault_ref;
    if let Some(code) = refuse_stray_value(&args) {
        return Ok(code);
    }
    let max = g.max_value_size;
    let value = match (&args.from_file, args.generate) {
        (Some(path), _) => read_file_value(r, path, max)?,
        (None, Some(n)) => generate_value(r, n, max)?,
        (None, None) => read_stdin_value(r, max)?,
    };
    if value.is_empty() {
        bail!("refusing to store an empty value for {r}");
    }
    let options = PutOptions {
        once: args.once,
        ..PutOptions::default()
    };
    let vault = open_or_create(g)?;
    if !args.into_others_session {
        refuse_others_session(&vault, r)?;
    }
    let result = vault.put_with(r, value, options);
    record(g, "set", r, &result);
    result?;
    Ok(ExitCode::SUCCESS)
}

/// A session created through the mount belongs to the uid that made it,
/// who reads everything in it: storing a secret there for another uid is
/// refused unless confirmed (`--into-others-session`).
fn refuse_others_session(vault: &Vault, r: &VaultRef) -> Result<()> {
    if let Some(uid) = vault.others_session(r.scope())? {
        bail!(
            "{} belongs to {}, who created it through the mount and can read what is stored there; pass --into-others-session to store {r} anyway",
            r.scope(),
            sealfs::fsutil::describe_uid(uid)
        );
    }
    Ok(())
}

/// Writes to stdout; a closed pipe (`| head -c 3`) is not an error.
pub(crate) fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to stdout"),
    }
}

fn get(g: &GlobalArgs, r: &VaultRef) -> Result<ExitCode> {
    let Some(vault) = open_existing(g)? else {
        bail!(
            "secret not found: {r} (there is no vault at {} yet)",
            vault_config(g, false)?.vault_dir.display()
        );
    };
    let result = vault.read(r);
    let op = match &result {
        Ok((_, true)) => "consume",
        _ => "get",
    };
    record(g, op, r, &result);
    let (value, _) = result?;
    write_stdout(value.expose())?;
    Ok(ExitCode::SUCCESS)
}

/// A secret's metadata as JSON (`sealfs list --json`, the console).
#[derive(Serialize)]
pub(crate) struct EntryJson {
    #[serde(rename = "ref")]
    vault_ref: VaultRef,
    scope: String,
    key: String,
    length: u64,
    created: String,
    updated: String,
    version: u64,
    once: bool,
}

pub(crate) fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl EntryJson {
    pub(crate) fn of(e: &Entry) -> EntryJson {
        EntryJson {
            scope: e.vault_ref.scope().to_string(),
            key: e.vault_ref.key().to_string(),
            vault_ref: e.vault_ref.clone(),
            length: e.len,
            created: rfc3339(e.created),
            updated: rfc3339(e.updated),
            version: e.version,
            once: e.once,
        }
    }
}

fn list(g: &GlobalArgs, scope: Option<&sealfs::VaultScope>, json: bool) -> Result<ExitCode> {
    let entries: Vec<Entry> = match open_existing(g)? {
        Some(vault) => vault.list(scope)?,
        None => Vec::new(),
    };
    print_entries(entries, json)
}

/// `sealfs list` output: a line per secret, or JSON.
pub(crate) fn print_entries(entries: Vec<Entry>, json: bool) -> Result<ExitCode> {
    let mut out = String::new();
    if json {
        let rows: Vec<EntryJson> = entries.iter().map(EntryJson::of).collect();
        out = serde_json::to_string_pretty(&rows)?;
        out.push('\n');
    } else {
        for e in entries {
            out.push_str(&format!(
                "{}\t{}\t{}\n",
                e.vault_ref,
                e.len,
                rfc3339(e.updated)
            ));
        }
    }
    write_stdout(out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

fn delete(g: &GlobalArgs, r: &VaultRef, force: bool) -> Result<ExitCode> {
    let result = match open_existing(g)? {
        Some(vault) => {
            let result = vault.delete(r);
            record(g, "delete", r, &result);
            result
        }
        None => Err(VaultError::NotFound(r.clone())),
    };
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(VaultError::NotFound(_)) if force => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e.into()),
    }
}

fn configure(
    g: &GlobalArgs,
    path: &Path,
    field: &str,
    r: &VaultRef,
    into_others_session: bool,
) -> Result<ExitCode> {
    // Everything that can be checked is checked before the secret is read
    // or stored, so bad input changes nothing.
    let mut file = ConfigFile::load_or_new(path)?;
    config::set_ref_field(file.document_mut(), field, r)?;
    let value = read_stdin_value(r, g.max_value_size)?;
    if value.is_empty() {
        bail!("refusing to store an empty value for {r}");
    }
    let vault = open_or_create(g)?;
    if !into_others_session {
        refuse_others_session(&vault, r)?;
    }
    let result = vault.put(r, value);
    record(g, "set", r, &result);
    result?;
    file.save()
        .with_context(|| format!("the secret was stored as {r}, but `{field}` was not set"))?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
pub(crate) struct AuditRow {
    pub field: String,
    #[serde(rename = "ref")]
    pub vault_ref: Option<String>,
    /// resolved, missing, invalid or error
    pub status: &'static str,
    pub detail: Option<String>,
}

/// The status of every `*_vault_ref` field of `doc` against `vault`.
pub(crate) fn audit_rows(vault: Option<&Vault>, doc: &toml_edit::DocumentMut) -> Vec<AuditRow> {
    config::find_vault_refs(doc)
        .into_iter()
        .map(|f| {
            let (vault_ref, status, detail) = match f.vault_ref {
                Err(problem) => (None, "invalid", Some(problem.to_string())),
                Ok(r) => {
                    let outcome = match vault {
                        None => Err(VaultError::NotFound(r.clone())),
                        // Decrypting proves the secret is usable, not just
                        // listed; a read-once secret is only looked up, since
                        // reading it would consume it.
                        Some(v) => match v.entry(&r) {
                            Ok(Some(e)) if e.once => Ok(()),
                            Ok(_) => v.get(&r).map(drop),
                            Err(e) => Err(e),
                        },
                    };
                    match outcome {
                        Ok(()) => (Some(r.to_string()), "resolved", None),
                        Err(VaultError::NotFound(_)) => (Some(r.to_string()), "missing", None),
                        Err(e) => (
                            Some(r.to_string()),
                            "error",
                            Some(format!("{:#}", anyhow::Error::from(e))),
                        ),
                    }
                }
            };
            AuditRow {
                field: f.field,
                vault_ref,
                status,
                detail,
            }
        })
        .collect()
}

fn audit(g: &GlobalArgs, path: &Path, json: bool) -> Result<ExitCode> {
    let doc = config::load_document(path)?;
    let vault = open_existing(g)?;
    let rows = audit_rows(vault.as_ref(), &doc);
    let all_resolved = rows.iter().all(|r| r.status == "resolved");
    let mut out = String::new();
    if json {
        out = serde_json::to_string_pretty(&rows)?;
        out.push('\n');
    } else {
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
    }
    write_stdout(out.as_bytes())?;
    Ok(if all_resolved {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn doctor(g: &GlobalArgs) -> Result<ExitCode> {
    let report = doctor::diagnose(&vault_config(g, false)?);
    let mut out = String::new();
    for f in &report.findings {
        out.push_str(&format!("{:<5} {}: {}\n", f.level, f.topic, f.message));
    }
    write_stdout(out.as_bytes())?;
    Ok(if report.worst() == Level::Error {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn audit_log(g: &GlobalArgs, follow: bool, json: bool) -> Result<ExitCode> {
    use std::io::{BufRead, Seek};
    let path = audit_path(g)?;
    let file = match sealfs::fsutil::open_read_nofollow(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !follow => return Ok(ExitCode::SUCCESS),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot open the audit log {}", path.display()))
        }
    };
    let mut reader = io::BufReader::new(file);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .context("cannot read the audit log")?;
        if n == 0 || !line.ends_with('\n') {
            if !follow {
                return Ok(ExitCode::SUCCESS);
            }
            // A partial line is re-read whole once its writer finishes it.
            reader.seek_relative(-(n as i64))?;
            // Rotated (the path names another file now): the old file is
            // read to its end (this EOF), then the new one from its start.
            if n == 0 && rotated(reader.get_ref(), &path) {
                match sealfs::fsutil::open_read_nofollow(&path) {
                    Ok(f) => {
                        reader = io::BufReader::new(f);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(e).with_context(|| {
                            format!("cannot open the audit log {}", path.display())
                        })
                    }
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
            continue;
        }
        let out = if json {
            line.clone()
        } else {
            match serde_json::from_str::<audit::Event>(line.trim_end()) {
                Ok(e) => format!("{}\n", e.render()),
                Err(_) => format!("(unreadable line) {}\n", audit::escaped(line.trim_end())),
            }
        };
        write_stdout(out.as_bytes())?;
        let _ = reader.stream_position();
    }
}

/// Whether `path` names another file than `open` (the log was rotated).
fn rotated(open: &std::fs::File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (open.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => (a.dev(), a.ino()) != (b.dev(), b.ino()),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (open, path);
        false
    }
}

/// `sealfs mount ARGS` runs `sealfs-mountd ARGS`, found beside this binary
/// or on PATH, with this command's global options passed in the environment.
pub(crate) fn mount(g: &GlobalArgs, args: Vec<std::ffi::OsString>) -> Result<ExitCode> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("sealfs-mountd")))
        .filter(|p| p.is_file());
    let program = beside.unwrap_or_else(|| PathBuf::from("sealfs-mountd"));
    let mut cmd = std::process::Command::new(&program);
    cmd.args(&args);
    if let Some(d) = &g.vault_dir {
        cmd.env("SEALFS_VAULT_DIR", d);
    }
    if let Some(d) = &g.identity_dir {
        cmd.env("SEALFS_IDENTITY_DIR", d);
    }
    if let Some(p) = &g.audit_log {
        cmd.env("SEALFS_AUDIT_LOG", p);
    }
    if g.allow_foreign_vault_dir {
        cmd.env("SEALFS_ALLOW_FOREIGN_VAULT_DIR", "true");
    }
    cmd.env("SEALFS_BACKEND", g.backend.to_string());
    if !g.etcd_endpoints.is_empty() {
        cmd.env("SEALFS_ETCD_ENDPOINTS", g.etcd_endpoints.join(","));
    }
    cmd.env("SEALFS_ETCD_PREFIX", &g.etcd_prefix);
    cmd.env("SEALFS_ETCD_TIMEOUT", g.etcd_timeout.to_string());
    cmd.env("SEALFS_MAX_VALUE_SIZE", g.max_value_size.to_string());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let err = cmd.exec();
        Err(err).with_context(|| format!("cannot run {}", program.display()))
    }
    #[cfg(not(unix))]
    {
        let status = cmd
            .status()
            .with_context(|| format!("cannot run {}", program.display()))?;
        Ok(ExitCode::from(status.code().unwrap_or(1) as u8))
    }
}

fn migrate(g: &GlobalArgs, to: sealfs::BackendKind) -> Result<ExitCode> {
    let report = Vault::migrate(vault_config(g, false)?, to)?;
    if report.from == report.to && report.blobs == 0 {
        eprintln!("sealfs: the vault already uses {to}; nothing to migrate");
    } else {
        eprintln!(
            "sealfs: {} {} secret(s) from {} to {}",
            if report.resumed {
                "finished moving"
            } else {
                "moved"
            },
            report.blobs,
            report.from,
            report.to
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn recover(g: &GlobalArgs, accept_rollback: bool, accept_move: bool) -> Result<ExitCode> {
    if accept_move {
        let outcome = Vault::accept_move(vault_config(g, false)?);
        record_outcome(
            g,
            "recover",
            "accept-move",
            outcome.as_ref().err().map(|_| "error"),
        );
        if outcome? {
            eprintln!("sealfs: accepted the vault at its new path; the copy at its old path is refused from now on");
        } else {
            eprintln!("sealfs: the vault was already anchored at this path");
        }
        return Ok(ExitCode::SUCCESS);
    }
    debug_assert!(accept_rollback, "clap requires one of the two");
    let outcome = Vault::accept_rollback(vault_config(g, false)?);
    record_outcome(
        g,
        "recover",
        "accept-rollback",
        outcome.as_ref().err().map(|_| "error"),
    );
    let (index, anchor) = outcome?;
    match anchor {
        Some(anchor) if anchor > index => eprintln!(
            "sealfs: accepted the vault at commit {index} (its anchor was at {anchor}); older copies stay refused"
        ),
        _ => eprintln!("sealfs: accepted the vault at commit {index}; it was not rolled back"),
    }
    Ok(ExitCode::SUCCESS)
}

fn console(g: &GlobalArgs, args: ConsoleArgs) -> Result<ExitCode> {
    #[cfg(feature = "console")]
    {
        let vault = vault_config(g, false)?;
        crate::console::run(crate::console::ConsoleOptions {
            listen: args.listen,
            allow_remote: args.allow_remote,
            tls: args.tls_cert.zip(args.tls_key),
            config: args.config,
            audit_log: audit_path(g)?,
            vault,
        })?;
        Ok(ExitCode::SUCCESS)
    }
    #[cfg(not(feature = "console"))]
    {
        let _ = (g, args);
        bail!("this sealfs was built without the web console");
    }
}
