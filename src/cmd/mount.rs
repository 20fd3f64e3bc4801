//! `sealfs mount ARGS`: runs `sealfs-mountd ARGS` (found beside this
//! binary, else on PATH) with the vault flags handed on through the
//! environment, [`VaultArgs::export_env`]: the daemon parses the same
//! [`VaultArgs`], so every flag given to `sealfs` reaches it.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Context, Result};
use sealfs::cli_common::VaultArgs;

use crate::output::Status;

pub(super) fn mount(v: &VaultArgs, args: Vec<OsString>) -> Result<Status> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("sealfs-mountd")))
        .filter(|p| p.is_file());
    let program = beside.unwrap_or_else(|| PathBuf::from("sealfs-mountd"));
    let mut cmd = std::process::Command::new(&program);
    cmd.args(&args).envs(v.export_env());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let err = cmd.exec();
        Err(err).with_context(|| format!("cannot run {}", program.display()))
    }
    #[cfg(not(unix))]
    {
        let status = cmd
            .status()
            .with_context(|| format!("cannot run {}", program.display()))?;
        match status.code() {
            Some(0) => Ok(Status::Done),
            code => anyhow::bail!("{} exited with status {code:?}", program.display()),
        }
    }
}
