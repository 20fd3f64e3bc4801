//! The `sealfs` command. Thin: parse, set up logging, run, map the outcome
//! to an exit status (see `output`).

mod args;
mod cmd;
#[cfg(feature = "console")]
mod console;
mod input;
mod output;
mod view;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Everything this process creates is owner-only, whatever the caller's umask.
    #[cfg(unix)]
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let cli = args::Cli::parse();
    sealfs::cli_common::init_logging(cli.vault.log_level(tracing::Level::WARN), false);
    match cmd::run(cli) {
        Ok(status) => status.into(),
        Err(e) => output::fail(&e),
    }
}
