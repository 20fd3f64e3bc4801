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

#[cfg(not(unix))]
fn main() -> ExitCode {
    eprintln!("sealfs-mountd: this build has no mount adapter for this platform");
    ExitCode::FAILURE
}
