//! Helpers shared by the integration tests of both packages (`tests/` of
//! the `sealfs` CLI and `mountd/tests/`): running a command with a
//! deadline and checking how it ended, real etcd members on loopback, and
//! what a test does when a real component it needs is missing.
//!
//! Each package's own helpers (the CLI's `Sandbox`, the mount's `Mounted`)
//! stay in its `tests/util.rs` and build on these.
//!
//! Unix only, as the integration tests are.
#![cfg(unix)]

pub mod etcd;
pub mod run;
pub mod skip;

pub use etcd::{free_port, Etcd, EtcdMember, TestPki};
pub use run::{eventually, feed, run, sh, sh_as, shell_as, uid_of, until_past, Run, XorShift};
pub use skip::{have_root, have_tools, missing, skip_list, skips_allowed};
