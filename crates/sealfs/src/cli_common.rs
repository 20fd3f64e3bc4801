//! What the `sealfs` command and the `sealfs-mountd` daemon share (feature
//! `cli-common`, like age's): the vault flags ([`VaultArgs`]), flattened
//! into both binaries so they cannot drift, their one hand-off from
//! `sealfs mount` to the daemon ([`VaultArgs::export_env`]), and logging.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::backend::{BackendOptions, BackendPreference};
use crate::{audit, SecretStore, StoreError, Vault, VaultConfig, VaultError};
use crate::{DEFAULT_MAX_VALUE_SIZE, MAX_VALUE_SIZE_LIMIT};

/// Which store the commands work on: a local vault (with the backend it
/// names), or the fleet vault in etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreTarget {
    /// A local vault, its sealed blobs in this backend.
    Local(BackendPreference),
    /// The fleet vault in etcd; the local vault keeps this host's fleet
    /// identity and a sealed cache.
    Fleet,
}

impl StoreTarget {
    /// The backend of the local vault (with the fleet, the one holding
    /// this host's fleet identity).
    pub fn local(self) -> BackendPreference {
        match self {
            StoreTarget::Local(p) => p,
            StoreTarget::Fleet => BackendPreference::Auto,
        }
    }
}

impl std::str::FromStr for StoreTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "etcd" {
            return Ok(StoreTarget::Fleet);
        }
        s.parse().map(StoreTarget::Local).map_err(|_| {
            format!(
                "unknown backend {s:?} (this build knows: auto, {}, etcd)",
                crate::backend::known_list()
            )
        })
    }
}

impl std::fmt::Display for StoreTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreTarget::Local(p) => p.fmt(f),
            StoreTarget::Fleet => f.write_str("etcd"),
        }
    }
}

/// The help section of the etcd flags. Set on each flag rather than as the
/// struct's `next_help_heading`, which would also file every flag declared
/// after them (the daemon's mount options) under it.
const FLEET_HEADING: &str = "Fleet (etcd)";

/// The flags of the fleet vault in etcd (used with `--backend etcd`).
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct EtcdArgs {
    /// etcd endpoints of the fleet (with --backend etcd), comma-separated, e.g. http://10.0.0.5:2379
    #[arg(
        long = "etcd-endpoints",
        env = "SEALFS_ETCD_ENDPOINTS",
        global = true,
        value_delimiter = ',',
        value_name = "URLS",
        help_heading = FLEET_HEADING
    )]
    pub endpoints: Vec<String>,

    /// Key prefix of the fleet in etcd
    #[arg(long = "etcd-prefix", env = "SEALFS_ETCD_PREFIX", global = true, default_value = "sealfs",
          value_name = "PREFIX", value_parser = parse_etcd_prefix, help_heading = FLEET_HEADING)]
    pub prefix: String,

    /// Time limit for one etcd call, in seconds
    #[arg(long = "etcd-timeout", env = "SEALFS_ETCD_TIMEOUT", global = true, default_value_t = 5.0,
          value_name = "SECONDS", value_parser = parse_timeout, help_heading = FLEET_HEADING)]
    pub timeout: f64,

    /// How long after etcd was last reached this host may still serve its sealed cached copies, in seconds (0: never)
    #[arg(long = "max-offline-age", env = "SEALFS_MAX_OFFLINE_AGE", global = true, default_value_t = 86_400,
          value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(0..=31_536_000),
          help_heading = FLEET_HEADING)]
    pub max_offline_age: u64,
}

/// The vault flags of both binaries. Each has an environment variable,
/// which is how `sealfs mount` hands them to `sealfs-mountd`.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct VaultArgs {
    /// Vault directory [default: $XDG_STATE_HOME/sealfs/vault, else ~/.local/state/sealfs/vault]
    #[arg(long, env = "SEALFS_VAULT_DIR", global = true, value_name = "DIR")]
    pub vault_dir: Option<PathBuf>,

    /// Device identity directory [default: the `identity` directory beside the vault directory]
    #[arg(long, env = "SEALFS_IDENTITY_DIR", global = true, value_name = "DIR")]
    pub identity_dir: Option<PathBuf>,

    /// Backend for sealed blobs: auto, encrypted-file, secret-service (Linux),
    /// keychain (macOS) or dpapi (Windows). A vault keeps the backend it was
    /// created with; naming another one is an error (see `sealfs migrate`).
    /// `etcd`: the fleet vault in etcd (see `sealfs fleet`); the local vault
    /// then keeps this host's fleet identity and a sealed cache.
    #[arg(
        long,
        env = "SEALFS_BACKEND",
        global = true,
        default_value = "auto",
        value_name = "BACKEND"
    )]
    pub backend: StoreTarget,

    /// Largest value accepted, in bytes
    #[arg(long, env = "SEALFS_MAX_VALUE_SIZE", global = true, default_value_t = DEFAULT_MAX_VALUE_SIZE,
          value_name = "BYTES", value_parser = parse_size)]
    pub max_value_size: usize,

    /// Time limit for one call to an OS keystore, in seconds
    #[arg(long, env = "SEALFS_KEYSTORE_TIMEOUT", global = true, default_value_t = 5.0, value_name = "SECONDS",
          value_parser = parse_timeout)]
    pub keystore_timeout: f64,

    /// Audit log file [default for sealfs: audit.log beside the vault
    /// directory, i.e. <vault-dir>/../audit.log; sealfs-mountd run as root:
    /// /var/log/sealfs/audit.log]
    #[arg(long, env = "SEALFS_AUDIT_LOG", global = true, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,

    /// Accept a vault directory (and its identity and audit directories)
    /// owned by another uid, e.g. root working on a user's vault. Without
    /// it such a directory is refused; symlinks are refused either way.
    #[arg(long, env = "SEALFS_ALLOW_FOREIGN_VAULT_DIR", global = true,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_foreign_vault_dir: bool,

    /// The flags of the fleet vault in etcd.
    #[command(flatten)]
    pub etcd: EtcdArgs,

    /// More log output on stderr, once per -v (sealfs: warnings, then info,
    /// debug; sealfs-mountd: info, then debug, trace). Never includes values.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

/// Why the flags did not lead to a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// No `--vault-dir` and no XDG_STATE_HOME or HOME to find the default.
    #[error("cannot find the default vault directory: neither XDG_STATE_HOME nor HOME is set to an absolute path; use --vault-dir")]
    NoDefaultDir,
    /// `--backend etcd` in a build without the fleet.
    #[error("this build was made without the fleet (etcd) backend")]
    NoFleet,
    /// Opening the vault or the fleet failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<VaultError> for OpenError {
    fn from(e: VaultError) -> Self {
        OpenError::Store(e.into())
    }
}

#[cfg(feature = "fleet")]
impl From<crate::fleet::FleetError> for OpenError {
    fn from(e: crate::fleet::FleetError) -> Self {
        OpenError::Store(e.into())
    }
}

impl OpenError {
    /// This error's [`ErrorKind`](crate::ErrorKind).
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            OpenError::NoDefaultDir => crate::ErrorKind::InvalidInput,
            OpenError::NoFleet => crate::ErrorKind::Unsupported,
            OpenError::Store(e) => e.kind(),
        }
    }
}

/// An opened store: the local vault, or the fleet vault.
#[cfg_attr(
    feature = "fleet",
    expect(
        clippy::large_enum_variant,
        reason = "made once per process and never moved in a loop"
    )
)]
pub enum Store {
    /// A local vault.
    Local(Vault),
    /// The fleet vault in etcd.
    #[cfg(feature = "fleet")]
    Fleet(crate::fleet::FleetVault),
}

impl Store {
    /// The local vault, when that is the store.
    pub fn local(&self) -> Option<&Vault> {
        match self {
            Store::Local(v) => Some(v),
            #[cfg(feature = "fleet")]
            Store::Fleet(_) => None,
        }
    }

    /// The store behind the common interface.
    pub fn as_dyn(&self) -> &dyn SecretStore {
        match self {
            Store::Local(v) => v,
            #[cfg(feature = "fleet")]
            Store::Fleet(f) => f,
        }
    }
}

impl VaultArgs {
    /// `--vault-dir`, else the default.
    pub fn vault_dir(&self) -> Result<PathBuf, OpenError> {
        match &self.vault_dir {
            Some(d) => Ok(d.clone()),
            None => crate::vault::default_vault_dir().ok_or(OpenError::NoDefaultDir),
        }
    }

    /// The local vault's configuration (`create`: make it if missing).
    pub fn vault_config(&self, create: bool) -> Result<VaultConfig, OpenError> {
        Ok(VaultConfig {
            identity_dir: self.identity_dir.clone(),
            backend: self.backend.local(),
            backend_options: BackendOptions {
                timeout: Duration::from_secs_f64(self.keystore_timeout),
                session_bus: None,
            },
            max_value_size: self.max_value_size,
            create,
            allow_foreign_owner: self.allow_foreign_vault_dir,
            ..VaultConfig::new(self.vault_dir()?)
        })
    }

    /// `--audit-log`, else `audit.log` beside the vault directory.
    pub fn audit_path(&self) -> Result<PathBuf, OpenError> {
        match &self.audit_log {
            Some(p) => Ok(p.clone()),
            None => Ok(audit::default_path(&self.vault_dir()?)),
        }
    }

    /// The local vault; `create`: made (with its identity) if missing.
    pub fn open_local(&self, create: bool) -> Result<Vault, OpenError> {
        Ok(Vault::open(self.vault_config(create)?)?)
    }

    /// The fleet vault, through this host's local vault (created if
    /// missing: it keeps the host's fleet identity and sealed cache).
    #[cfg(feature = "fleet")]
    pub fn open_fleet(&self) -> Result<crate::fleet::FleetVault, OpenError> {
        self.open_fleet_as(None)
    }

    /// As [`VaultArgs::open_fleet`], logging in to etcd with `credentials`
    /// rather than those stored (`fleet join` with a token carrying a
    /// login, which it stores only once the join succeeded).
    #[cfg(feature = "fleet")]
    pub fn open_fleet_as(
        &self,
        credentials: Option<(String, crate::SensitiveBytes)>,
    ) -> Result<crate::fleet::FleetVault, OpenError> {
        let local = self.open_local(true)?;
        let opts = crate::fleet::EtcdOptions {
            endpoints: self.etcd.endpoints.clone(),
            prefix: self.etcd.prefix.clone(),
            timeout: Duration::from_secs_f64(self.etcd.timeout),
            credentials,
            tls: None,
        };
        Ok(
            crate::fleet::FleetVault::open_beside(local, opts, self.max_value_size)?
                .with_max_offline_age(Duration::from_secs(self.etcd.max_offline_age)),
        )
    }

    /// The store `--backend` names. A local vault is opened as it is
    /// (`create`: made if missing); the fleet always through a local vault.
    pub fn open_store(&self, create: bool) -> Result<Store, OpenError> {
        match self.backend {
            StoreTarget::Local(_) => Ok(Store::Local(self.open_local(create)?)),
            #[cfg(feature = "fleet")]
            StoreTarget::Fleet => Ok(Store::Fleet(self.open_fleet()?)),
            #[cfg(not(feature = "fleet"))]
            StoreTarget::Fleet => Err(OpenError::NoFleet),
        }
    }

    /// As [`VaultArgs::open_store`], for a command that does one thing and
    /// exits: a local vault opens one SQLite connection, not two (see
    /// [`VaultConfig::separate_reader`]).
    pub fn open_store_once(&self, create: bool) -> Result<Store, OpenError> {
        match self.backend {
            StoreTarget::Local(_) => Ok(Store::Local(Vault::open(VaultConfig {
                separate_reader: false,
                ..self.vault_config(create)?
            })?)),
            StoreTarget::Fleet => self.open_store(create),
        }
    }

    /// The environment that hands these flags to another process of
    /// sealfs (`sealfs mount` runs `sealfs-mountd` with it): one variable
    /// per flag, each the one its `env` attribute names. Set on purpose
    /// for every flag, defaults included, so the child sees exactly what
    /// this process parsed.
    pub fn export_env(&self) -> Vec<(&'static str, OsString)> {
        // Destructured without `..`: a new flag does not compile until it
        // is handed on here.
        let VaultArgs {
            vault_dir,
            identity_dir,
            backend,
            max_value_size,
            keystore_timeout,
            audit_log,
            allow_foreign_vault_dir,
            etcd:
                EtcdArgs {
                    endpoints,
                    prefix,
                    timeout,
                    max_offline_age,
                },
            verbose,
        } = self;
        let mut env: Vec<(&'static str, OsString)> = Vec::new();
        if let Some(d) = vault_dir {
            env.push(("SEALFS_VAULT_DIR", d.into()));
        }
        if let Some(d) = identity_dir {
            env.push(("SEALFS_IDENTITY_DIR", d.into()));
        }
        env.push(("SEALFS_BACKEND", backend.to_string().into()));
        env.push(("SEALFS_MAX_VALUE_SIZE", max_value_size.to_string().into()));
        env.push((
            "SEALFS_KEYSTORE_TIMEOUT",
            keystore_timeout.to_string().into(),
        ));
        if let Some(p) = audit_log {
            env.push(("SEALFS_AUDIT_LOG", p.into()));
        }
        env.push((
            "SEALFS_ALLOW_FOREIGN_VAULT_DIR",
            allow_foreign_vault_dir.to_string().into(),
        ));
        if !endpoints.is_empty() {
            env.push(("SEALFS_ETCD_ENDPOINTS", endpoints.join(",").into()));
        }
        env.push(("SEALFS_ETCD_PREFIX", prefix.into()));
        env.push(("SEALFS_ETCD_TIMEOUT", timeout.to_string().into()));
        env.push(("SEALFS_MAX_OFFLINE_AGE", max_offline_age.to_string().into()));
        env.push(("SEALFS_VERBOSE", verbose.to_string().into()));
        env
    }

    /// `-v` given here plus those a parent `sealfs` handed on.
    pub fn effective_verbose(&self) -> u8 {
        self.verbose.saturating_add(inherited_verbosity())
    }

    /// The level `-v` asks for, one step per `-v` above `default`.
    pub fn log_level(&self, default: tracing::Level) -> tracing::Level {
        use tracing::Level;
        let ladder = [
            Level::ERROR,
            Level::WARN,
            Level::INFO,
            Level::DEBUG,
            Level::TRACE,
        ];
        let start = ladder.iter().position(|l| *l == default).unwrap_or(1);
        let at = (start + usize::from(self.effective_verbose())).min(ladder.len() - 1);
        ladder[at]
    }
}

/// `-v` counts given to a parent `sealfs` (`SEALFS_VERBOSE`, set by
/// [`VaultArgs::export_env`]): clap cannot take a count from the
/// environment.
fn inherited_verbosity() -> u8 {
    std::env::var("SEALFS_VERBOSE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Logs to stderr at `level`, without targets; `with_time` for a daemon.
pub fn init_logging(level: tracing::Level, with_time: bool) {
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false);
    if with_time {
        builder.init();
    } else {
        builder.without_time().init();
    }
}

/// An etcd key prefix, as `--etcd-prefix` takes it: without slashes at
/// either end; letters, digits, `-`, `_`, `.` and inner `/`.
pub fn parse_etcd_prefix(s: &str) -> Result<String, String> {
    let p = s.trim_matches('/');
    let ok = |b: u8| b.is_ascii_alphanumeric() || b"-_./".contains(&b);
    if p.is_empty() || p.len() > 128 || !p.bytes().all(ok) {
        return Err(
            "expected letters, digits, '-', '_', '.' or '/', at most 128 characters".into(),
        );
    }
    Ok(p.to_owned())
}

/// A time limit in seconds, above 0 and at most 600.
pub fn parse_timeout(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 600.0 => Ok(v),
        _ => Err("expected a number of seconds above 0 and at most 600".into()),
    }
}

/// A size in bytes, 1 to [`MAX_VALUE_SIZE_LIMIT`] (values live in memory
/// whole).
pub fn parse_size(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(v) if (1..=MAX_VALUE_SIZE_LIMIT).contains(&v) => Ok(v),
        _ => Err(format!(
            "expected a number of bytes from 1 to {MAX_VALUE_SIZE_LIMIT}"
        )),
    }
}

/// The longest lifetime `--ttl` takes: a secret meant to last longer
/// should not expire at all.
pub const MAX_TTL: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

/// A lifetime such as `90s`, `10m`, `1h` or `2d` (humantime's syntax),
/// above 0 and at most [`MAX_TTL`].
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("expected a lifetime such as 90s, 10m, 1h or 2d ({e})"))?;
    if d.is_zero() {
        return Err("a lifetime must be longer than 0".into());
    }
    if d > MAX_TTL {
        return Err(
            "a lifetime is at most 10 years; leave it out for one that does not end".into(),
        );
    }
    Ok(d)
}
