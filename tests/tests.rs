//! Integration tests: the real `sealfs` binary and the library against real
//! vault directories in temp dirs. Shared helpers live in `util.rs`.

#![cfg(unix)]

mod util;

mod adversary;
mod at_rest;
mod backends;
mod badinput;
mod cli;
mod concurrency;
mod config;
#[cfg(feature = "console")]
mod console;
mod corrupt;
mod crash;
mod docs;
mod faults;
mod files;
#[cfg(feature = "fleet")]
mod fleet;
#[cfg(feature = "fleet")]
mod fleet_trust;
mod lifetimes;
mod run;
mod snapshots;
mod tamper;
mod templates;
mod versions;
