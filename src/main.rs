//! The `sealfs` command. Thin: parse, run, map errors to exit codes.

mod cli;
mod commands;
#[cfg(feature = "console")]
mod console;
#[cfg(feature = "fleet")]
mod fleet_cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Everything this process creates is owner-only, whatever the caller's umask.
    #[cfg(unix)]
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let cli = cli::Cli::parse();
    init_logging(cli.global.verbose);
    match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            // One line: the message and its causes, never a backtrace.
            eprintln!("sealfs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::INFO,
        2 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
}
