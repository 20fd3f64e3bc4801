//! `completions` and the man pages: the shell conventions, generated from
//! the same command-line definitions as `--help`.

use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::args::Cli;
use crate::output::{write_stdout, Status};

/// The completion script for `shell`, on stdout.
pub(super) fn completions(shell: clap_complete::Shell) -> Result<Status> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "sealfs", &mut out);
    write_stdout(&out)?;
    Ok(Status::Done)
}

/// `sealfs.1` and `sealfs-<subcommand>.1` for every visible subcommand.
pub(super) fn man_pages(dir: &Path) -> Result<Status> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
    Ok(Status::Done)
}
