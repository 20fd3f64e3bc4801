//! The daemon on Unix: arguments, hardening before any secret is read,
//! stale-mount recovery, the FUSE mount itself, and signals (SIGTERM/SIGINT
//! unmount and exit 0, SIGHUP reloads the policy).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use fuser::{Config, MountOption, SessionACL};
use sealfs::audit::AuditLog;
use sealfs::cli_common::VaultArgs;

use crate::fs::{Options, SealFs};
use crate::fuse::FuseAdapter;
use crate::policy::Policy;

/// Serve a sealfs vault as a file system: scopes as directories, secrets as
/// files decrypted only when opened.
#[derive(Debug, Parser)]
#[command(name = "sealfs-mountd", version, max_term_width = 100)]
pub struct Args {
    /// Where to mount (an existing directory)
    #[arg(required_unless_present_any = ["check_policy", "print_vault_args", "write_man_pages"])]
    pub mountpoint: Option<PathBuf>,

    /// Check a policy file and exit (0 if it loads, 1 with the error if
    /// not), without mounting: run it before `systemctl reload`
    #[arg(long, value_name = "FILE", conflicts_with = "policy")]
    pub check_policy: Option<PathBuf>,

    #[command(flatten)]
    pub vault: VaultArgs,

    /// Policy file granting scopes to users and groups (TOML; reloaded on SIGHUP)
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,

    /// Let users other than the mounting one reach the mount (each still
    /// sees only what the rules grant); a non-root daemon needs
    /// `user_allow_other` in /etc/fuse.conf
    #[arg(long)]
    pub allow_other: bool,

    /// Refuse every write with EROFS
    #[arg(long)]
    pub read_only: bool,

    /// Rotate the audit log when it would grow past this many bytes
    #[arg(long, default_value_t = 64 << 20, value_name = "BYTES")]
    pub audit_log_max_size: u64,

    /// Rotated audit logs to keep (audit.log.1 ... audit.log.N)
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub audit_log_keep: usize,

    /// Open files one uid may hold at once (root and the vault owner are
    /// not limited); more opens get EMFILE
    #[arg(long, default_value_t = Options::default().max_handles_per_uid, value_name = "N")]
    pub max_handles_per_uid: usize,

    /// Open files and directories all those uids may hold together (a user
    /// with many uids gets the per-uid caps once per uid); more get ENFILE
    #[arg(long, default_value_t = Options::default().max_handles, value_name = "N")]
    pub max_handles: usize,

    /// Bytes of plaintext buffers the daemon holds at once (a root daemon
    /// has no memlock limit); more opens get ENOMEM
    #[arg(long, default_value_t = 256 << 20, value_name = "BYTES")]
    pub max_locked_bytes: usize,

    /// How long a session made with mkdir lasts (e.g. 30m, 8h, 2d): then it
    /// ends with every secret in it
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = sealfs::cli_common::parse_ttl)]
    pub session_ttl: Duration,

    /// Sessions one uid may create through the mount; more get EDQUOT
    #[arg(long, default_value_t = Options::default().max_sessions_per_uid, value_name = "N")]
    pub max_sessions_per_uid: usize,

    /// Secrets one uid's sessions may hold; more get EDQUOT
    #[arg(long, default_value_t = Options::default().max_session_secrets_per_uid, value_name = "N")]
    pub max_session_secrets_per_uid: usize,

    /// Bytes of values one uid's sessions may hold; more get ENOSPC
    #[arg(long, default_value_t = Options::default().max_session_bytes_per_uid, value_name = "BYTES")]
    pub max_session_bytes_per_uid: u64,

    /// When the memlock limit is reached, serve plaintext from memory that
    /// may be swapped (warned once) instead of refusing opens with ENOMEM
    #[arg(long)]
    pub allow_unlocked_memory: bool,

    /// Threads serving requests (more help only where requests block for
    /// long: a slow backend or etcd)
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: u16,

    /// Print the vault flags as parsed (with those handed on by `sealfs
    /// mount`) and exit: for the test that every flag reaches the daemon
    #[arg(long, hide = true)]
    pub print_vault_args: bool,

    /// Write this command's man page into DIR and exit (scripts/man.sh)
    #[arg(long, hide = true, value_name = "DIR")]
    pub write_man_pages: Option<PathBuf>,
}

/// No core dumps, no ptrace by other users, no `/proc/<pid>/mem` for them:
/// done before the identity or any secret is read.
fn harden() -> Result<()> {
    sys::set_non_dumpable()?;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)
        .context("cannot disable core dumps")?;
    Ok(())
}

/// The calls that differ between Linux and macOS.
mod sys {
    use std::path::Path;

    use anyhow::Result;

    #[cfg(target_os = "linux")]
    pub(super) fn set_non_dumpable() -> Result<()> {
        use anyhow::Context;
        nix::sys::prctl::set_dumpable(false).context("cannot mark the process non-dumpable")
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn set_non_dumpable() -> Result<()> {
        // No PR_SET_DUMPABLE here; the zero core limit still applies.
        Ok(())
    }

    /// Detaches the mount at `path` even if it is busy or its daemon died.
    #[cfg(target_os = "linux")]
    pub(super) fn detach(path: &Path) -> bool {
        nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH).is_ok()
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn detach(path: &Path) -> bool {
        nix::mount::unmount(path, nix::mount::MntFlags::MNT_FORCE).is_ok()
    }
}

/// A daemon killed with SIGKILL leaves its mount behind, answering ENOTCONN;
/// detach it so a new mount can take its place.
pub fn recover_stale_mount(mountpoint: &Path) -> Result<()> {
    match std::fs::metadata(mountpoint) {
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENOTCONN as i32) => {
            tracing::warn!(mountpoint = %mountpoint.display(), "stale mount from a dead daemon; detaching it");
            let detached = sys::detach(mountpoint)
                || std::process::Command::new("fusermount3")
                    .arg("-uz")
                    .arg(mountpoint)
                    .status()
                    .is_ok_and(|s| s.success());
            if !detached {
                bail!(
                    "{} is a stale mount and could not be detached; run `fusermount3 -uz {}`",
                    mountpoint.display(),
                    mountpoint.display()
                );
            }
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("cannot use mountpoint {}", mountpoint.display())),
        Ok(m) if !m.is_dir() => bail!("mountpoint {} is not a directory", mountpoint.display()),
        Ok(_) => Ok(()),
    }
}

fn check_allow_other() -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let conf = std::fs::read_to_string("/etc/fuse.conf").unwrap_or_default();
    if !conf.lines().any(|l| l.trim() == "user_allow_other") {
        bail!("--allow-other needs `user_allow_other` in /etc/fuse.conf when sealfs-mountd does not run as root");
    }
    Ok(())
}

/// `--check-policy FILE`: loads it as a reload would and prints what it
/// grants (numeric ids) and what it skips; an error is the exit status.
pub fn check_policy(path: &Path) -> Result<()> {
    let policy = Policy::load(path)?;
    for skipped in policy.skipped() {
        eprintln!("sealfs-mountd: warning: {skipped}");
    }
    print!("{}", policy.to_toml());
    Ok(())
}

/// Loads the policy file (at start, or on SIGHUP), logging grants skipped
/// for a user or group that does not exist.
fn load_policy(path: &Path) -> Result<Policy, crate::policy::PolicyError> {
    let policy = Policy::load(path)?;
    for skipped in policy.skipped() {
        tracing::warn!("{skipped}");
    }
    tracing::debug!(resolved = %policy.to_toml(), "policy");
    Ok(policy)
}

pub fn run(args: Args) -> Result<()> {
    if args.print_vault_args {
        super::print_vault_args(&args.vault);
        return Ok(());
    }
    if let Some(dir) = &args.write_man_pages {
        use clap::CommandFactory;
        return clap_mangen::generate_to(Args::command(), dir)
            .with_context(|| format!("cannot write man pages into {}", dir.display()));
    }
    if let Some(p) = &args.check_policy {
        return check_policy(p);
    }
    let mountpoint = args
        .mountpoint
        .clone()
        .context("a mountpoint is required")?;
    harden()?;
    crate::memlock::set_allow_unlocked(args.allow_unlocked_memory);
    crate::memlock::set_limit(args.max_locked_bytes);
    let vault_dir = args.vault.vault_dir()?;
    if args.allow_other {
        check_allow_other()?;
    }
    recover_stale_mount(&mountpoint)?;
    let policy = match &args.policy {
        Some(p) => load_policy(p)?,
        None => Policy::default(),
    };
    let (store, _watch) = super::open_store(&args.vault)?;
    let owner_uid = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&vault_dir)
            .with_context(|| format!("cannot stat {}", vault_dir.display()))?
            .uid()
    };
    let audit_path = args
        .vault
        .audit_log
        .clone()
        .unwrap_or_else(|| sealfs::audit::daemon_default_path(&vault_dir));
    let audit = AuditLog::open_checked(&audit_path, args.vault.allow_foreign_vault_dir)
        .with_context(|| {
            format!(
                "cannot open the audit log {} (choose another with --audit-log)",
                audit_path.display()
            )
        })?
        .with_rotation(args.audit_log_max_size, args.audit_log_keep);
    let fs = Arc::new(SealFs::new(
        store,
        owner_uid,
        policy,
        audit,
        Options {
            read_only: args.read_only,
            max_value_size: args.vault.max_value_size,
            max_handles_per_uid: args.max_handles_per_uid,
            max_handles: args.max_handles,
            max_sessions_per_uid: args.max_sessions_per_uid,
            max_session_secrets_per_uid: args.max_session_secrets_per_uid,
            max_session_bytes_per_uid: args.max_session_bytes_per_uid,
            session_ttl: args.session_ttl,
        },
    ));

    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("sealfs".into()),
        MountOption::Subtype("sealfs".into()),
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::NoExec,
        MountOption::NoAtime,
        if args.read_only {
            MountOption::RO
        } else {
            MountOption::RW
        },
    ];
    // No DefaultPermissions: the daemon decides every request itself.
    config.acl = if args.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(usize::from(args.threads));

    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .context("cannot install signal handlers")?;
    let mut signals = signals;
    let adapter = FuseAdapter::new(
        Arc::clone(&fs),
        crate::fuse::cache_ttl(args.allow_other),
        args.read_only,
    );
    let notifier = adapter.notifier_slot();
    let session = fuser::spawn_mount(adapter, &mountpoint, &config)
        .with_context(|| format!("cannot mount on {}", mountpoint.display()))?;
    let _ = notifier.set(session.notifier());
    tracing::info!(
        vault = %vault_dir.display(),
        mountpoint = %mountpoint.display(),
        read_only = args.read_only,
        allow_other = args.allow_other,
        "mounted"
    );

    let mut last_sweep = std::time::Instant::now();
    loop {
        for sig in signals.pending() {
            match sig {
                signal_hook::consts::SIGHUP => match &args.policy {
                    Some(p) => match load_policy(p) {
                        Ok(policy) => {
                            fs.set_policy(policy);
                            fs.record_policy_reload(p, None);
                            tracing::info!(policy = %p.display(), "policy reloaded");
                        }
                        Err(e) => {
                            // Fail closed: a file that cannot be read or
                            // parsed grants nothing until it is fixed.
                            fs.set_policy(Policy::default());
                            fs.record_policy_reload(p, Some("unreadable or invalid"));
                            tracing::error!(error = %format!("{e:#}"), "policy not reloaded: only the built-in rules apply until a valid file is loaded")
                        }
                    },
                    None => tracing::info!("SIGHUP: no --policy file to reload"),
                },
                _ => {
                    tracing::info!(signal = sig, "unmounting");
                    if let Err(e) = session.umount_and_join() {
                        tracing::warn!(error = %e, "clean unmount failed; detaching lazily");
                        let _ = sys::detach(&mountpoint);
                    }
                    return Ok(());
                }
            }
        }
        fs.audit_tick();
        if last_sweep.elapsed() >= super::SWEEP_EVERY {
            fs.sweep_expired();
            last_sweep = std::time::Instant::now();
        }
        if session.guard.is_finished() {
            tracing::info!("unmounted from outside; exiting");
            return session.join().context("the file system thread failed");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn harden_makes_the_process_non_dumpable_without_core_dumps() {
        super::harden().unwrap();
        assert!(!nix::sys::prctl::get_dumpable().unwrap());
        let (soft, hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_CORE).unwrap();
        assert_eq!((soft, hard), (0, 0));
    }
}
