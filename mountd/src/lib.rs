//! sealfs-mountd: serves a sealfs vault as a file system.
//!
//! # Modules
//!
//! Layers, each importing only from those below (`scripts/check-layers.sh`
//! finds any import cycle):
//!
//! - [`daemon`]: startup. `mod.rs` opens the store the flags name (the
//!   flags are `sealfs::cli_common::VaultArgs`, shared with `sealfs`) and
//!   runs the fleet's watch thread; `unix.rs` hardens the process, recovers
//!   a stale mount, mounts, and handles signals; `windows.rs` starts
//!   WinFsp.
//! - `fuse` (Unix): the `fuser` adapter, request to [`fs::SealFs`] call and
//!   [`fs::FsError`] to errno; TTL 0 with `--allow-other`, direct I/O, no
//!   FLUSH for read-only opens. `winfsp` (Windows): the same translation
//!   for WinFsp (`mod.rs`, the adapter; `volume.rs`, starting the volume).
//! - [`fs`]: what the mount means, with no FUSE types, over any
//!   `SecretStore`: the inode table (`inodes.rs`), lookup, getattr,
//!   listings and name changes (`namespace.rs`), open/read/write/flush/
//!   release over per-handle buffers (`handles.rs`), `templates/<name>`
//!   rendered on open (`templates.rs`), every permission decision and
//!   audit event.
//! - [`policy`]: the built-in rules and the TOML policy file: `Access`
//!   (none, read, read-write) per caller and scope.
//! - [`buffer`]: `LockedBuf`, a handle's plaintext, grown as data arrives
//!   up to `--max-value-size`, wiped when outgrown or dropped.
//! - [`memlock`]: page-aligned regions of their own, `mlock`ed and wiped,
//!   kept in a small pool; with the WinFsp adapter, the crate's only
//!   `unsafe` code.

pub mod buffer;
pub mod fs;
pub mod memlock;
pub mod policy;

pub mod daemon;
#[cfg(unix)]
pub mod fuse;
#[cfg(windows)]
pub mod winfsp;
