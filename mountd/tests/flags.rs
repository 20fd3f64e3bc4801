//! The vault flags are one struct (`sealfs::cli_common::VaultArgs`) parsed
//! by both binaries; these tests prove the hand-off from `sealfs mount` to
//! `sealfs-mountd` loses none of them.

use std::collections::BTreeSet;
use std::process::Command;

use clap::{Args, CommandFactory as _};
use sealfs::cli_common::VaultArgs;

use crate::util::{sealfs_bin, Run, MOUNTD};

/// A non-default value for every flag of [`VaultArgs`].
const SAMPLES: &[(&str, &[&str])] = &[
    ("vault_dir", &["--vault-dir", "/srv/flag-test/vault"]),
    (
        "identity_dir",
        &["--identity-dir", "/srv/flag-test/identity"],
    ),
    ("backend", &["--backend", "encrypted-file"]),
    ("max_value_size", &["--max-value-size", "1234"]),
    ("keystore_timeout", &["--keystore-timeout", "30"]),
    ("audit_log", &["--audit-log", "/srv/flag-test/audit.log"]),
    ("allow_foreign_vault_dir", &["--allow-foreign-vault-dir"]),
    (
        "endpoints",
        &[
            "--etcd-endpoints",
            "http://10.0.0.5:2379,http://10.0.0.6:2379",
        ],
    ),
    ("prefix", &["--etcd-prefix", "team/flag-test"]),
    ("timeout", &["--etcd-timeout", "7.5"]),
    ("max_offline_age", &["--max-offline-age", "123"]),
    ("verbose", &["-vv"]),
];

/// Runs `program args` with no inherited `SEALFS_*` variables.
fn run(program: &std::path::Path, args: &[&str]) -> Run {
    let out = Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent-home")
        .output()
        .expect("spawn");
    Run::from(out)
}

/// The daemon's view of the vault flags when given `flags` directly, and
/// when given them through `sealfs FLAGS mount`.
fn views(flags: &[&str]) -> (String, String) {
    let mut direct = flags.to_vec();
    direct.push("--print-vault-args");
    let direct = run(std::path::Path::new(MOUNTD), &direct).ok().text();
    let mut through = flags.to_vec();
    through.extend(["mount", "--print-vault-args"]);
    let through = run(&sealfs_bin(), &through).ok().text();
    (direct, through)
}

#[test]
fn every_vault_flag_given_to_sealfs_mount_reaches_the_daemon() {
    // Every flag the struct defines has a sample here: a new flag fails
    // this test until it is added.
    let defined: BTreeSet<String> = VaultArgs::augment_args(clap::Command::new("probe"))
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect();
    let sampled: BTreeSet<String> = SAMPLES.iter().map(|(id, _)| id.to_string()).collect();
    assert_eq!(defined, sampled, "every VaultArgs flag needs a sample");
    // Both binaries flatten the same struct.
    for id in &defined {
        let in_daemon = sealfs_mountd::daemon::Args::command()
            .get_arguments()
            .any(|a| a.get_id().as_str() == id);
        assert!(in_daemon, "sealfs-mountd lacks --{id}");
    }

    let (baseline, baseline_through) = views(&[]);
    assert_eq!(baseline, baseline_through);
    let mut all: Vec<&str> = Vec::new();
    for (id, flag) in SAMPLES {
        let (direct, through) = views(flag);
        assert_ne!(direct, baseline, "--{id} changed nothing in the daemon");
        assert_eq!(
            through,
            direct,
            "`sealfs {} mount` did not hand --{id} to the daemon",
            flag.join(" ")
        );
        all.extend_from_slice(flag);
    }
    let (direct, through) = views(&all);
    assert_eq!(through, direct, "all flags together");
    // The bug this replaced: the keystore timeout was dropped on the way.
    assert!(through.contains("keystore_timeout: 30.0"), "{through}");
}
