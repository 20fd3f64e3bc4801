//! `sealfs-mountd MOUNTPOINT [options]`: mount a vault, serve it in the
//! foreground until SIGTERM/SIGINT or an external unmount.

use std::process::ExitCode;

#[cfg(any(unix, windows))]
fn main() -> ExitCode {
    use clap::Parser;
    let args = sealfs_mountd::daemon::Args::parse();
    sealfs::cli_common::init_logging(args.vault.log_level(tracing::Level::INFO), true);
    match sealfs_mountd::daemon::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sealfs-mountd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(any(unix, windows)))]
fn main() -> ExitCode {
    eprintln!("sealfs-mountd: this build has no mount adapter for this platform");
    ExitCode::FAILURE
}
