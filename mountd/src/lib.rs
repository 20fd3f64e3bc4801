//! sealfs-mountd: serves a sealfs vault as a file system.
//!
//! - [`fs`]: what the mount means (tree, permissions, handles, audit), with
//!   no dependency on FUSE, so every adapter is thin.
//! - [`policy`]: who may read or write which scope.
//! - [`buffer`]: per-handle plaintext buffers, locked in memory and wiped.
//! - [`daemon`]: startup (flags shared with `sealfs` through
//!   `sealfs::cli_common::VaultArgs`), hardening, signals, per platform.
//! - `fuse` (Unix): the `fuser` adapter; `winfsp` (Windows): the WinFsp
//!   adapter.

pub mod buffer;
pub mod fs;
pub mod memlock;
pub mod policy;

pub mod daemon;
#[cfg(unix)]
pub mod fuse;
#[cfg(windows)]
pub mod winfsp;
