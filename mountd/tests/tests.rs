//! Mount tests: real FUSE mounts of real vaults, driven by real programs
//! (cat, stat, ls, sh) as root and as other uids. Helpers in `util.rs`.
#![cfg(target_os = "linux")]

mod util;

mod access;
mod flags;
#[cfg(feature = "fleet")]
mod fleet;
mod hygiene;
mod lifecycle;
mod lifetimes;
mod load;
mod read;
mod snapshots;
mod templates;
mod versions;
mod write;
