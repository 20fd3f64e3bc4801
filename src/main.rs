//! The `sealfs` command. Thin: parse, set up logging, run, map the outcome
//! to an exit status (see `output`).
//!
//! # Modules
//!
//! - [`args`]: the command line (clap), with the vault flags flattened from
//!   `sealfs::cli_common::VaultArgs`.
//! - [`cmd`]: one module per command group; `cmd/secret.rs` is
//!   set/get/list/delete, written once over `SecretStore` for a local vault
//!   and `--backend etcd` alike; `cmd/fleet.rs` is only `sealfs fleet ...`;
//!   `cmd/template.rs` is `sealfs template ...` and `import --env-file`.
//! - [`input`]: where a value comes from (stdin, a prompt, `--generate`).
//! - [`output`]: stdout that survives a closed pipe, the one `sealfs: `
//!   prefix, the exit statuses (0 done, 1 failed, 2 usage, 3 found
//!   problems).
//! - [`view`]: the `--json` shapes, shared with the console.
//! - `console` (feature `console`): the local web console; `guard.rs`
//!   checks every request, `api.rs` serves the JSON API.

mod args;
mod cmd;
#[cfg(feature = "console")]
mod console;
mod input;
mod output;
mod view;

use std::process::ExitCode;

use clap::Parser;

/// The umask this process was started with, before it set its own
/// (`sealfs run` gives it back to the command it starts).
#[cfg(unix)]
static INHERITED_UMASK: std::sync::OnceLock<nix::sys::stat::Mode> = std::sync::OnceLock::new();

fn main() -> ExitCode {
    // Everything this process creates is owner-only, whatever the caller's umask.
    #[cfg(unix)]
    INHERITED_UMASK
        .get_or_init(|| nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077)));
    let cli = args::Cli::parse();
    sealfs::cli_common::init_logging(cli.vault.log_level(tracing::Level::WARN), false);
    match cmd::run(cli) {
        Ok(status) => status.into(),
        Err(e) => output::fail(&e),
    }
}
