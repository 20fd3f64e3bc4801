//! sealfs-mountd: serves a sealfs vault as a file system.
//!
//! - [`fs`]: what the mount means (tree, permissions, handles, audit), with
//!   no dependency on FUSE, so every adapter is thin.
//! - [`policy`]: who may read or write which scope.
//! - [`buffer`]: per-handle plaintext buffers, locked in memory and wiped.
//! - `fuse` (Unix): the `fuser` adapter; `daemon` (Unix): startup,
//!   hardening, signals; `winfsp` (Windows): the WinFsp adapter.

pub mod buffer;
pub mod fs;
pub mod memlock;
pub mod policy;

#[cfg(unix)]
pub mod daemon;
#[cfg(unix)]
pub mod fuse;
#[cfg(windows)]
pub mod winfsp;
