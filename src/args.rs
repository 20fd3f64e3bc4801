//! Command-line definitions for `sealfs` (parsing only; `cmd` runs them).
//! The vault flags are [`VaultArgs`], shared with `sealfs-mountd`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use sealfs::cli_common::VaultArgs;
use sealfs::{VaultRef, VaultScope, MAX_VALUE_SIZE_LIMIT};

/// A secrets vault: secrets encrypted at rest, addressed by refs such as
/// `global/openai_api_key` or `principal:alice/github_token`.
///
/// Values are read from standard input (or a prompt, or a file), never from
/// arguments, so they do not show up in `ps` or shell history.
#[derive(Debug, Parser)]
#[command(
    name = "sealfs",
    version,
    propagate_version = true,
    max_term_width = 100,
    after_help = "Exit status: 0 done; 1 failed; 2 usage error; 3 ran and found problems (audit, doctor)."
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub vault: VaultArgs,
    #[command(subcommand)]
    pub command: Command,
}

// Each subcommand's arguments are built only when it runs (its help is
// asked for, or it is parsed): a `get` does not build the whole tree.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub(crate) enum Command {
    /// Store a secret: from stdin (byte-exact), a no-echo prompt on a terminal, a file, or generated.
    Set(SetArgs),
    /// Print a secret's raw value to stdout, with nothing added.
    #[command(disable_version_flag = true)]
    Get {
        /// The secret, e.g. global/openai_api_key
        #[arg(value_name = "REF")]
        vault_ref: VaultRef,
        /// An earlier version (see `sealfs history`)
        #[arg(long, value_name = "N")]
        version: Option<u64>,
    },
    /// A secret's versions (number, length, time, and who wrote it), never values.
    History {
        /// The secret, e.g. global/openai_api_key (deleted ones too)
        #[arg(value_name = "REF")]
        vault_ref: VaultRef,
        /// JSON output
        #[arg(long)]
        json: bool,
    },
    /// Write a new version equal to an earlier one (by default the one before the current, or the deleted value); audited.
    Rollback {
        /// The secret, e.g. global/openai_api_key (deleted ones too)
        #[arg(value_name = "REF")]
        vault_ref: VaultRef,
        /// The version to bring back
        #[arg(long, value_name = "N")]
        to: Option<u64>,
        /// Write into a session that another uid created through the mount
        /// (that uid can read it)
        #[arg(long)]
        into_others_session: bool,
    },
    /// Vault-wide settings: print them, or change them (audited).
    Settings {
        /// How many earlier versions of each secret to keep (default 10; `set --keep-versions` overrides it per secret); a secret keeping more sheds the oldest at its next write
        #[arg(long, value_name = "N")]
        keep_versions: Option<u32>,
    },
    /// List secrets (ref, length in bytes, updated time), never values.
    List {
        /// Only this scope: global, principal:<id> or session:<id>
        scope: Option<VaultScope>,
        /// JSON output
        #[arg(long)]
        json: bool,
    },
    /// Delete a secret; its value stays in its history (`sealfs rollback` brings it back) unless --purge.
    Delete {
        #[arg(value_name = "REF")]
        vault_ref: VaultRef,
        /// Succeed even if the secret does not exist
        #[arg(long)]
        force: bool,
        /// Destroy the value and every earlier version at once (a leaked credential)
        #[arg(long)]
        purge: bool,
    },
    /// Store a secret (from stdin) and point FIELD of a TOML config file at it.
    Configure {
        /// The TOML file to edit (comments and formatting are kept)
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Dotted field name ending in `_vault_ref`, e.g. model_provider.openai_api_key_vault_ref
        field: String,
        #[arg(value_name = "REF")]
        vault_ref: VaultRef,
        /// Store into a session that another uid created through the mount
        /// (that uid can read it)
        #[arg(long)]
        into_others_session: bool,
    },
    /// Move plaintext secrets out of a TOML config file (each field becomes `<field>_vault_ref`, comments and formatting kept), or out of a .env file (one secret per variable and a template that renders the file).
    #[command(group(clap::ArgGroup::new("input").required(true).args(["config", "env_file"])))]
    Import {
        /// The TOML file to edit (replaced atomically; a re-run changes nothing)
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// A .env file (NAME=value lines): each value is stored as <scope>/<name in lower case>, and template NAME renders the same file through the mount
        #[arg(long, value_name = "FILE", requires = "template")]
        env_file: Option<PathBuf>,
        /// With --env-file: the template to store (its file name under <mountpoint>/templates/)
        #[arg(long, value_name = "NAME", conflicts_with = "config", value_parser = parse_template_name)]
        template: Option<sealfs::SecretKey>,
        /// With --env-file: once everything is stored and the template renders the file byte for byte, overwrite the file and remove it
        #[arg(long, conflicts_with = "config")]
        replace: bool,
        /// The scope to store into
        #[arg(long, value_name = "SCOPE", default_value = "global")]
        scope: VaultScope,
        /// Only this field (its dotted name or its own name; repeatable), instead of every field named with key, token, secret, password, passwd, credential(s) or dsn
        #[arg(long = "field", value_name = "PATTERN", conflicts_with = "env_file")]
        fields: Vec<String>,
        /// List the fields and the refs they would get (never values), and change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Check every `*_vault_ref` field of a TOML config file against the vault.
    Audit {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// JSON output
        #[arg(long)]
        json: bool,
    },
    /// Show the backend in use and why, permission problems, and whether FUSE mounting works here.
    Doctor,
    /// Move every secret to another backend (copy, verify, switch, delete); safe to re-run after an interruption.
    Migrate {
        /// The backend to move to
        #[arg(long, value_name = "BACKEND")]
        to: sealfs::BackendKind,
    },
    /// Accept a vault directory restored from an earlier copy (refused as
    /// "vault rolled back" until then), or moved to its present path;
    /// audited.
    #[command(group(clap::ArgGroup::new("accept").required(true).args(["accept_rollback", "accept_move"])))]
    Recover {
        /// The vault's older state becomes the current one (at this path)
        #[arg(long)]
        accept_rollback: bool,
        /// The vault now lives at this path; the copy at its old path, or
        /// a vault put there, is refused from now on
        #[arg(long, conflicts_with = "accept_rollback")]
        accept_move: bool,
    },
    /// Print the audit log (who opened, wrote, consumed or was denied what), readably.
    AuditLog {
        /// Keep printing new entries as they are appended
        #[arg(long)]
        follow: bool,
        /// The raw JSON lines
        #[arg(long)]
        json: bool,
    },
    /// Serve the operator web console on loopback; prints a one-time URL (Ctrl-C stops it).
    Console(ConsoleArgs),
    /// Share secrets across hosts through etcd (use with --backend etcd --etcd-endpoints ...).
    Fleet {
        #[command(subcommand)]
        command: FleetCommand,
    },
    /// Whole files with secrets inside (.env, .pgpass, database.yml): stored sealed, rendered on open through the mount.
    Template {
        #[command(subcommand)]
        command: TemplateCommand,
    },
    /// Temporary scopes: create, list and end sessions.
    Session {
        #[command(subcommand)]
        command: SessionCommand,
    },
    /// Run a command with secrets in its environment (never in its arguments or a file).
    #[command(after_help = RUN_AFTER_HELP)]
    Run(RunArgs),
    /// Print a shell completion script: `source <(sealfs completions bash)`, or see the README to install one.
    Completions {
        /// bash, zsh, fish, powershell or elvish
        shell: clap_complete::Shell,
    },
    /// Write the man pages of sealfs and each subcommand into DIR (scripts/man.sh).
    #[command(hide = true)]
    ManPages {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Mount the vault with FUSE: runs `sealfs-mountd` with these arguments (see `sealfs mount --help`).
    #[command(disable_help_flag = true)]
    Mount {
        /// MOUNTPOINT and options for sealfs-mountd
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub(crate) enum FleetCommand {
    /// Print this host's card (age recipient and signing key, creating them on first use), to give to a member for `enroll`.
    Recipient,
    /// Start a fleet under the etcd prefix, with this host as its first member; prints the fleet id.
    Init,
    /// Pin the fleet after verifying its membership chain against a join token (from `fleet enroll` or `fleet status` on a member).
    Join {
        /// The join token (<fleet id>:<seq>:<hash>)
        token: String,
        /// Replace this host's pin even where the chain does not extend it (after a deliberate restore of etcd, or a fork this host was shown)
        #[arg(long)]
        replace_pin: bool,
        /// With --replace-pin: forget this host's pin of a scope that the restored etcd has no keyring of (a scope made after the backup); repeatable
        #[arg(long, value_name = "SCOPE", requires = "replace_pin")]
        forget_scope: Vec<sealfs::VaultScope>,
    },
    /// Let another host read and write the fleet's secrets (run by a member); prints the token it joins with.
    Enroll {
        /// The host's card, from `sealfs fleet recipient` on it (age1...:<hex>)
        recipient: String,
        /// Also create the host's own etcd user, with read and write under this prefix only (needs etcd root); the token then carries its login, sealed to that host
        #[arg(long)]
        etcd_user: bool,
    },
    /// Drop a host (and its own etcd user, if it has one) and rotate every scope's fleet key, so it cannot read new values.
    Revoke {
        /// The host's card or age recipient (age1...)
        recipient: String,
    },
    /// Grant a scope to some members only, this host among them (the scope gets a new key, wrapped to them), or with --all to every member again; run on a member the scope is granted to.
    Grant {
        /// The scope (global, principal:<id> or session:<id>)
        scope: sealfs::VaultScope,
        /// The members to grant it to: each one's card or age recipient (age1...)
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        hosts: Vec<String>,
        /// Grant it to every member, hosts enrolled later included
        #[arg(long)]
        all: bool,
    },
    /// After restoring etcd from a backup on purpose (run on one member): accept the restored state, re-key every scope above every host's pins, and print the token hosts re-join with.
    Recover {
        /// Forget this host's pin of a scope that the restored etcd has no keyring of (a scope made after the backup); repeatable
        #[arg(long, value_name = "SCOPE")]
        forget_scope: Vec<sealfs::VaultScope>,
    },
    /// Compact etcd's history, defragment every endpoint and clear its space alarm (when etcd reached its quota; needs etcd root rights).
    Compact,
    /// Members, this host's enrolment, etcd's space, and each scope's key epoch.
    Status {
        /// JSON output
        #[arg(long)]
        json: bool,
    },
    /// Store the etcd user and password (read from stdin) in this host's local vault.
    Login {
        /// etcd user name
        #[arg(long)]
        user: String,
    },
    /// Store etcd's CA certificate and this host's client certificate and
    /// key (PEM files) in this host's local vault, for `--client-cert-auth`
    Tls {
        /// CA certificate that signed etcd's server certificate
        #[arg(long, value_name = "FILE")]
        ca: PathBuf,
        /// This host's client certificate
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// This host's private key (delete the file once it is stored)
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ConsoleArgs {
    /// Address to serve on (port 0: any free port)
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR:PORT")]
    pub listen: std::net::SocketAddr,
    /// Allow a non-loopback --listen address (needs --tls-cert and --tls-key)
    #[arg(long)]
    pub allow_remote: bool,
    /// TLS certificate (PEM) for --allow-remote
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for --allow-remote
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// A TOML config file whose `*_vault_ref` fields the console checks
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

const RUN_AFTER_HELP: &str = "\
Every ref is read before COMMAND starts; a missing or unreadable ref stops the run there, naming it.
SIGINT, SIGTERM and SIGHUP sent to `sealfs run` are passed on to COMMAND (a terminal's ^C, which
COMMAND gets itself, is not; a signal sent to the whole process group reaches COMMAND twice).
Exit status: COMMAND's own; if a signal ended it, that signal ends `sealfs run` too (SIGINT, SIGTERM,
SIGHUP) or the status is 128 + its number (others). Before COMMAND starts: 125 the run failed (a ref,
an env file), 126 COMMAND cannot be run, 127 COMMAND not found; 2 usage error.";

// `sealfs run`: which secrets go into which variables, and the command.
// (No doc comment: it would replace the subcommand's about line.)
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("values").required(true).multiple(true).args(["env", "env_file", "session"])))]
pub(crate) struct RunArgs {
    /// Put the secret REF into the variable NAME, e.g. DB_PASSWORD=global/db_password; repeatable
    #[arg(long, value_name = "NAME=REF")]
    pub env: Vec<EnvSpec>,
    /// Read NAME=REF lines from FILE (blank lines and lines starting with # are skipped); repeatable
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Also create a fresh session scope for the run, owned by you: COMMAND gets its id as
    /// SEALFS_SESSION (also printed on stderr), and the session ends when COMMAND does
    #[arg(long)]
    pub session: bool,
    /// With --session: the session ends after this long even if `sealfs run` is killed
    #[arg(long, value_name = "DURATION", value_parser = sealfs::cli_common::parse_ttl, default_value = "1h", requires = "session")]
    pub ttl: std::time::Duration,
    /// The command and its arguments (after --)
    #[arg(
        last = true,
        required = true,
        value_name = "COMMAND",
        num_args = 1..
    )]
    pub command: Vec<std::ffi::OsString>,
}

/// One `NAME=REF`: an environment variable and the secret it gets.
#[derive(Debug, Clone)]
pub(crate) struct EnvSpec {
    pub name: String,
    pub vault_ref: VaultRef,
}

impl EnvSpec {
    /// Parses `NAME=REF`. `show`: whether an error may repeat the text; not
    /// for the lines of an env file, which may hold a plaintext value by
    /// mistake (a `.env` of values).
    pub(crate) fn parse(s: &str, show: bool) -> Result<Self, String> {
        let Some((name, r)) = s.split_once('=') else {
            return Err("expected NAME=REF, e.g. DB_PASSWORD=global/db_password".into());
        };
        let (name, r) = (name.trim(), r.trim());
        let mut chars = name.chars();
        let good = chars
            .next()
            .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
            && chars.all(|c| c == '_' || c.is_ascii_alphanumeric());
        if !good {
            let shown = if show {
                format!(" {name:?}")
            } else {
                String::new()
            };
            return Err(format!(
                "invalid variable name{shown}: letters, digits and _, not starting with a digit"
            ));
        }
        let vault_ref = match r.parse::<VaultRef>() {
            Ok(r) => r,
            Err(e) if show => return Err(e.to_string()),
            Err(_) => {
                return Err(format!(
                    "{name}= is not followed by a ref (<scope>/<key>, e.g. global/db_password); what follows is not shown, in case it is a secret"
                ))
            }
        };
        Ok(EnvSpec {
            name: name.to_owned(),
            vault_ref,
        })
    }
}

impl std::str::FromStr for EnvSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s, true)
    }
}

#[derive(Debug, Args)]
pub(crate) struct SetArgs {
    /// The secret to store, e.g. global/openai_api_key
    #[arg(value_name = "REF")]
    pub vault_ref: VaultRef,
    /// Read the value from this file instead of stdin (byte-exact)
    #[arg(long, value_name = "PATH", conflicts_with = "generate")]
    pub from_file: Option<PathBuf>,
    /// Anything after REF: refused without being echoed, since it is
    /// usually a secret typed where it must not go.
    #[arg(hide = true, value_name = "VALUE", allow_hyphen_values = true)]
    pub stray: Vec<std::ffi::OsString>,
    /// Read-once: the first read (an open through the mount or `sealfs get`) consumes it
    #[arg(long)]
    pub once: bool,
    /// Store N random bytes, encoded as URL-safe base64 text
    #[arg(long, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_VALUE_SIZE_LIMIT as u64))]
    pub generate: Option<usize>,
    /// Write into a session that another uid created through the mount
    /// (that uid can read what you store there)
    #[arg(long)]
    pub into_others_session: bool,
    /// Store only if no secret is stored under REF yet (checked and stored as one step)
    #[arg(long, conflicts_with = "if_version")]
    pub if_absent: bool,
    /// Store only if the secret under REF is at version N, as `sealfs list --json` shows it (checked and stored as one step)
    #[arg(long, value_name = "N")]
    pub if_version: Option<u64>,
    /// The secret expires after this long (e.g. 90s, 10m, 1h, 2d): from then on nothing reads it, and it is removed
    #[arg(long, value_name = "DURATION", value_parser = sealfs::cli_common::parse_ttl)]
    pub ttl: Option<std::time::Duration>,
    /// The new value does not expire (without --ttl or this, it keeps the lifetime of the value it replaces)
    #[arg(long, conflicts_with = "ttl")]
    pub no_ttl: bool,
    /// Keep this many earlier versions of this secret from now on (the vault's default: `sealfs settings`)
    #[arg(long, value_name = "N")]
    pub keep_versions: Option<u32>,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub(crate) enum TemplateCommand {
    /// Store template NAME (from FILE or stdin), sealed; refused with the line and column of an error.
    #[command(after_help = TEMPLATE_AFTER_HELP)]
    Set {
        /// The template's name (a-z 0-9 . _ -), its file name under <mountpoint>/templates/
        #[arg(value_parser = parse_template_name)]
        name: sealfs::SecretKey,
        /// Read the template from FILE instead of stdin
        #[arg(long = "from", value_name = "FILE")]
        from: Option<PathBuf>,
    },
    /// List the templates and the refs each one reads.
    List {
        /// JSON output
        #[arg(long)]
        json: bool,
    },
    /// Print a template's source (to edit it and `set` it again).
    Show {
        #[arg(value_parser = parse_template_name)]
        name: sealfs::SecretKey,
    },
    /// Print a template rendered with the current values (fails, naming the ref, if one is missing).
    Render {
        #[arg(value_parser = parse_template_name)]
        name: sealfs::SecretKey,
    },
    /// Delete a template (the secrets it reads stay).
    Delete {
        #[arg(value_parser = parse_template_name)]
        name: sealfs::SecretKey,
    },
}

const TEMPLATE_AFTER_HELP: &str = "\
Syntax: text is copied as it is; {{ REF }} is replaced by the value of REF,
e.g. {{ global/db_password }} or {{ vault://principal:alice/token }}.
Filters, left to right: {{ REF | trim | json }}
  json       escaped for the inside of a JSON string
  base64     standard base64
  urlencode  percent-encoded (for a URL's user or password)
  shell      one single-quoted shell word (for a file a shell sources)
  trim       leading and trailing white space removed
A literal {{ is written {{ \"{{\" }}. Nothing else: no includes, no environment.";

/// A template name: the key rules, said as a template name.
fn parse_template_name(s: &str) -> Result<sealfs::SecretKey, String> {
    sealfs::SecretKey::new(s).map_err(|e| match e {
        sealfs::RefError::BadKey { why, .. } => format!("invalid template name: {why}"),
        e => e.to_string(),
    })
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub(crate) enum SessionCommand {
    /// Create session scope session:ID, for temporary secrets; it ends at `session end` or after --ttl.
    Create {
        /// The session id (letters, digits, . _ @ -)
        id: String,
        /// The session ends after this long (e.g. 30m, 1h, 2d), with every secret in it; without it, at `session end`
        #[arg(long, value_name = "DURATION", value_parser = sealfs::cli_common::parse_ttl)]
        ttl: Option<std::time::Duration>,
        /// Who owns it (reads and writes it through the mount): a user name or uid; default: you
        #[arg(long, value_name = "USER")]
        owner: Option<String>,
    },
    /// List the sessions: id, owner, when they end, how many secrets they hold.
    List {
        /// JSON output
        #[arg(long)]
        json: bool,
    },
    /// End a session now: every secret in it is destroyed at once (audited).
    End {
        /// The session id
        id: String,
    },
}
