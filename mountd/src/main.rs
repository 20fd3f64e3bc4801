//! `sealfs-mountd MOUNTPOINT [options]`: mount a vault, serve it in the
//! foreground until SIGTERM/SIGINT or an external unmount.

use std::process::ExitCode;

#[cfg(unix)]
fn main() -> ExitCode {
    use clap::Parser;
    let args = sealfs_mountd::daemon::Args::parse();
    sealfs_mountd::daemon::init_logging(args.verbose);
    match sealfs_mountd::daemon::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sealfs-mountd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(windows)]
fn main() -> ExitCode {
    use clap::Parser;
    let args = win::Args::parse();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    match win::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sealfs-mountd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Windows: the vault served through WinFsp to the user the daemon runs as
/// (no per-uid rules, so no policy file; see `sealfs_mountd::winfsp`).
#[cfg(windows)]
mod win {
    use std::path::PathBuf;
    use std::sync::Arc;

    use anyhow::{Context, Result};
    use sealfs::audit::AuditLog;
    use sealfs::{Vault, VaultConfig, DEFAULT_MAX_VALUE_SIZE};
    use sealfs_mountd::fs::{Options, SealFs};
    use sealfs_mountd::policy::Policy;

    /// Serve a sealfs vault as a file system: scopes as directories, secrets
    /// as files decrypted only when opened.
    #[derive(Debug, clap::Parser)]
    #[command(name = "sealfs-mountd", version, max_term_width = 100)]
    pub struct Args {
        /// Where to mount: a free drive letter (`X:`) or a directory path that does not exist yet
        pub mountpoint: PathBuf,

        /// Vault directory
        #[arg(long, env = "SEALFS_VAULT_DIR", value_name = "DIR")]
        pub vault_dir: Option<PathBuf>,

        /// Largest value a write through the mount may make, in bytes
        #[arg(long, env = "SEALFS_MAX_VALUE_SIZE", default_value_t = DEFAULT_MAX_VALUE_SIZE, value_name = "BYTES")]
        pub max_value_size: usize,

        /// Refuse every write
        #[arg(long)]
        pub read_only: bool,
    }

    pub fn run(args: Args) -> Result<()> {
        let vault_dir = match args.vault_dir {
            Some(d) => d,
            None => sealfs::vault::default_vault_dir()
                .context("cannot find the default vault directory; use --vault-dir")?,
        };
        let vault = Vault::open(VaultConfig {
            max_value_size: args.max_value_size,
            create: true,
            ..VaultConfig::new(&vault_dir)
        })
        .with_context(|| format!("cannot open the vault at {}", vault_dir.display()))?;
        let audit_path = sealfs::audit::default_path(&vault_dir);
        let audit = AuditLog::open(&audit_path)
            .with_context(|| format!("cannot open the audit log {}", audit_path.display()))?;
        // No mlock here yet: plaintext is served from ordinary memory, with
        // one warning (memlock.rs).
        sealfs_mountd::memlock::set_allow_unlocked(true);
        // Every Windows request is made as uid 0, which is also the owner.
        let fs = Arc::new(SealFs::new(
            Arc::new(vault),
            0,
            Policy::default(),
            audit,
            Options {
                read_only: args.read_only,
                max_value_size: args.max_value_size,
                ..Options::default()
            },
        ));
        sealfs_mountd::winfsp::run(fs, &args.mountpoint)
    }
}

#[cfg(not(any(unix, windows)))]
fn main() -> ExitCode {
    eprintln!("sealfs-mountd: this build has no mount adapter for this platform");
    ExitCode::FAILURE
}
