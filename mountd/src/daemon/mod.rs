//! Startup and lifetime of the mount daemon. The vault flags are
//! [`VaultArgs`], the same struct `sealfs` parses, on every platform; what
//! differs per platform is in `unix` (FUSE) and `windows` (WinFsp).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use sealfs::cli_common::{Store, VaultArgs};
use sealfs::SecretStore;

#[cfg(unix)]
mod unix;
#[cfg(windows)]
mod windows;

#[cfg(unix)]
pub use unix::{check_policy, recover_stale_mount, run, Args};
#[cfg(windows)]
pub use windows::{run, Args};

/// The fleet watch thread: stopped and joined when the daemon returns.
#[derive(Default)]
pub struct WatchGuard {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The store `--backend` names, the local vault created if missing. The
/// fleet vault comes with a thread watching its prefix, so every open sees
/// changes made on any host; it stops when the guard drops.
/// How often the daemon looks for expired secrets and sessions (a look is
/// one read of the vault record unless something has expired).
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

fn open_store(vault: &VaultArgs) -> Result<(Arc<dyn SecretStore>, WatchGuard)> {
    let dir = vault.vault_dir()?;
    let store = vault
        .open_store(true)
        .with_context(|| format!("cannot open the vault at {}", dir.display()))?;
    #[cfg_attr(
        not(feature = "fleet"),
        expect(unused_mut, reason = "only the fleet starts a watch thread")
    )]
    let mut watch = WatchGuard::default();
    let store: Arc<dyn SecretStore> = match store {
        Store::Local(v) => Arc::new(v),
        #[cfg(feature = "fleet")]
        Store::Fleet(f) => {
            let fleet = Arc::new(f);
            let (f, stop) = (Arc::clone(&fleet), Arc::clone(&watch.stop));
            watch.thread = Some(
                std::thread::Builder::new()
                    .name("fleet-watch".into())
                    .spawn(move || f.run_watch(&stop))
                    .context("cannot start the fleet watch thread")?,
            );
            fleet
        }
    };
    Ok((store, watch))
}

/// `--print-vault-args`: the vault flags as this daemon sees them, `-v`
/// counts handed on by `sealfs` included.
fn print_vault_args(vault: &VaultArgs) {
    let seen = VaultArgs {
        verbose: vault.effective_verbose(),
        ..vault.clone()
    };
    #[expect(clippy::print_stdout, reason = "the flag's whole point")]
    {
        println!("{seen:#?}");
    }
}
