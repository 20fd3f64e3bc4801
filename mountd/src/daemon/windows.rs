//! The daemon on Windows: the vault served through WinFsp to the user the
//! daemon runs as (no per-uid rules, so no policy file; see `winfsp`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use sealfs::audit::AuditLog;
use sealfs::cli_common::VaultArgs;

use crate::fs::{Options, SealFs};
use crate::policy::Policy;

/// Serve a sealfs vault as a file system: scopes as directories, secrets
/// as files decrypted only when opened.
#[derive(Debug, clap::Parser)]
#[command(name = "sealfs-mountd", version, max_term_width = 100)]
pub struct Args {
    /// Where to mount: a free drive letter (`X:`) or a directory path that does not exist yet
    pub mountpoint: PathBuf,

    #[command(flatten)]
    pub vault: VaultArgs,

    /// Refuse every write
    #[arg(long)]
    pub read_only: bool,

    /// Print the vault flags as parsed and exit (see the Unix daemon)
    #[arg(long, hide = true)]
    pub print_vault_args: bool,
}

pub fn run(args: Args) -> Result<()> {
    if args.print_vault_args {
        super::print_vault_args(&args.vault);
        return Ok(());
    }
    let (store, _watch) = super::open_store(&args.vault)?;
    let audit_path = args.vault.audit_path()?;
    let audit = AuditLog::open_checked(&audit_path, args.vault.allow_foreign_vault_dir)
        .with_context(|| format!("cannot open the audit log {}", audit_path.display()))?;
    // No mlock here yet: plaintext is served from ordinary memory, with
    // one warning (memlock.rs).
    crate::memlock::set_allow_unlocked(true);
    // Every Windows request is made as uid 0, which is also the owner.
    let fs = Arc::new(SealFs::new(
        store,
        0,
        Policy::default(),
        audit,
        Options {
            read_only: args.read_only,
            max_value_size: args.vault.max_value_size,
            ..Options::default()
        },
    ));
    // What has expired is removed within seconds, as by the Unix daemon.
    {
        let fs = Arc::clone(&fs);
        std::thread::spawn(move || loop {
            std::thread::sleep(super::SWEEP_EVERY);
            fs.sweep_expired();
        });
    }
    crate::winfsp::run(fs, &args.mountpoint)
}
