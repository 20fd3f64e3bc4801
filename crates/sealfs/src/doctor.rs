//! `sealfs doctor`: what is in use, and what is wrong, in plain findings.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use crate::backend::BackendKind;
use crate::identity::DeviceIdentity;
use crate::vault::{IdentityStore, Vault, VaultConfig, VaultError};

/// How serious a finding is, from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Information; nothing is wrong.
    Ok,
    /// Something will not work, but the vault is sound.
    Warn,
    /// Something is wrong with the vault or its files.
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Error => "error",
        })
    }
}

/// One thing `sealfs doctor` found.
#[derive(Debug, Clone)]
pub struct Finding {
    /// How serious it is.
    pub level: Level,
    /// What it is about: `vault`, `backend`, `permissions`, `fuse`, ...
    pub topic: &'static str,
    /// What was found, in plain words.
    pub message: String,
}

/// Everything [`diagnose`] found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The findings, in the order they were made.
    pub findings: Vec<Finding>,
}

impl Report {
    fn add(&mut self, level: Level, topic: &'static str, message: impl Into<String>) {
        self.findings.push(Finding {
            level,
            topic,
            message: message.into(),
        });
    }

    /// The worst level found.
    pub fn worst(&self) -> Level {
        self.findings
            .iter()
            .map(|f| f.level)
            .max()
            .unwrap_or(Level::Ok)
    }
}

/// Checks the vault described by `config` without creating anything.
pub fn diagnose(config: &VaultConfig) -> Report {
    let mut report = Report::default();
    let dir = &config.vault_dir;
    let identity_dir = config.identity_dir();
    let config = VaultConfig {
        create: false,
        ..config.clone()
    };
    let ctx = |vault_id: &str| crate::backend::BackendContext {
        vault_dir: dir.clone(),
        vault_id: vault_id.to_owned(),
        options: config.backend_options.clone(),
        vault_handle: None,
    };
    let probe =
        BackendKind::platform().map(|kind| crate::backend::probe(kind, &ctx("doctor-probe")));
    if let Some(p) = &probe {
        match &p.result {
            Ok(took) => report.add(
                Level::Ok,
                "probe",
                format!(
                    "{}: stored, read back and deleted a probe item in {} ms",
                    p.kind,
                    took.as_millis()
                ),
            ),
            Err(why) => report.add(Level::Ok, "probe", format!("{}: not usable: {why}", p.kind)),
        }
    }
    match Vault::open(config) {
        Ok(vault) => {
            let count = vault.list(None).map(|l| l.len());
            report.add(
                Level::Ok,
                "vault",
                match count {
                    Ok(n) => format!("{} ({n} secrets)", dir.display()),
                    Err(e) => format!("{} (cannot list: {e})", dir.display()),
                },
            );
            let choice = vault.backend_choice();
            report.add(
                Level::Ok,
                "backend",
                format!("{}: {}", choice.kind, choice.reason),
            );
            let identity = match vault.identity_store() {
                IdentityStore::File => format!(
                    "in the owner-only file {} (key id {})",
                    DeviceIdentity::path_in(&identity_dir).display(),
                    vault.key_id()
                ),
                IdentityStore::Backend => format!(
                    "in the {} store beside the blobs (key id {}); the vault directory alone cannot be decrypted",
                    choice.kind,
                    vault.key_id()
                ),
            };
            report.add(Level::Ok, "identity", identity);
        }
        Err(VaultError::NoVault(_)) => {
            report.add(
                Level::Ok,
                "vault",
                format!(
                    "no vault yet at {} (`sealfs set` creates it)",
                    dir.display()
                ),
            );
            let choice = crate::backend::choice_after(probe);
            report.add(
                Level::Ok,
                "backend",
                format!("{} would be used: {}", choice.kind, choice.reason),
            );
        }
        Err(e) => report.add(Level::Error, "vault", error_chain(&e)),
    }
    for (what, root) in [
        ("vault directory", dir.as_path()),
        ("identity directory", identity_dir.as_path()),
    ] {
        if root.exists() {
            let problems = private_tree_problems(root);
            if problems.is_empty() {
                report.add(
                    Level::Ok,
                    "permissions",
                    format!("{what} {} is owner-only", root.display()),
                );
            }
            for p in problems {
                report.add(Level::Error, "permissions", p);
            }
        }
    }
    let (level, message) = fuse_status();
    report.add(level, "fuse", message);
    report.add(Level::Ok, "allow-other", allow_other_status());
    report
}

/// Whether a mount can be opened to other users (`sealfs mount --allow-other`).
pub fn allow_other_status() -> String {
    #[cfg(unix)]
    {
        if nix::unistd::geteuid().is_root() {
            return "other users can reach a mount made with --allow-other (the daemon runs as root); each sees only what it is granted".into();
        }
        let conf = fs::read_to_string("/etc/fuse.conf").unwrap_or_default();
        if conf.lines().any(|l| l.trim() == "user_allow_other") {
            "--allow-other is permitted: /etc/fuse.conf has user_allow_other".into()
        } else {
            "--allow-other needs `user_allow_other` in /etc/fuse.conf (without it only you can reach your mount)".into()
        }
    }
    #[cfg(not(unix))]
    {
        "not applicable on this platform".into()
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

const MAX_PROBLEMS: usize = 20;

/// Everything under `root` that is not owned by us with owner-only modes
/// (directories 0700, files 0600), or is a symlink.
pub fn private_tree_problems(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mut stack: Vec<PathBuf> = vec![root.to_owned()];
    let mut extra = 0usize;
    while let Some(path) = stack.pop() {
        let problem = match fs::symlink_metadata(&path) {
            Err(e) => Some(format!("{}: cannot inspect: {e}", path.display())),
            Ok(meta) => {
                if meta.is_dir() {
                    match fs::read_dir(&path) {
                        Ok(rd) => stack.extend(rd.filter_map(|e| e.ok()).map(|e| e.path())),
                        Err(e) => problems.push(format!("{}: cannot list: {e}", path.display())),
                    }
                }
                check_meta(&path, &meta)
            }
        };
        if let Some(p) = problem {
            if problems.len() < MAX_PROBLEMS {
                problems.push(p);
            } else {
                extra += 1;
            }
        }
    }
    if extra > 0 {
        problems.push(format!("... and {extra} more"));
    }
    problems
}

#[cfg(unix)]
fn check_meta(path: &Path, meta: &fs::Metadata) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let euid = nix::unistd::geteuid().as_raw();
    let mode = meta.mode() & 0o7777;
    if meta.file_type().is_symlink() {
        return Some(format!(
            "{} is a symlink (not expected here)",
            path.display()
        ));
    }
    if meta.uid() != euid {
        return Some(format!(
            "{} is owned by uid {}, not by you (uid {euid})",
            path.display(),
            meta.uid()
        ));
    }
    if mode & 0o077 != 0 {
        let want = if meta.is_dir() { "0700" } else { "0600" };
        return Some(format!(
            "{} has mode {mode:04o}: others can reach it; run `chmod {want} {}`",
            path.display(),
            path.display()
        ));
    }
    None
}

#[cfg(not(unix))]
fn check_meta(_path: &Path, _meta: &fs::Metadata) -> Option<String> {
    None
}

/// Whether a FUSE mount can be made here, and if not, why.
pub fn fuse_status() -> (Level, String) {
    #[cfg(target_os = "linux")]
    {
        let dev = Path::new("/dev/fuse");
        if !dev.exists() {
            return (Level::Warn, "not possible: /dev/fuse does not exist (load the fuse module or pass --device /dev/fuse to the container)".into());
        }
        if let Err(e) = fs::OpenOptions::new().read(true).write(true).open(dev) {
            return (
                Level::Warn,
                format!("not possible: cannot open /dev/fuse: {e}"),
            );
        }
        let in_kernel = fs::read_to_string("/proc/filesystems")
            .map(|s| {
                s.lines()
                    .any(|l| l.split_whitespace().last() == Some("fuse"))
            })
            .unwrap_or(false);
        if !in_kernel {
            return (
                Level::Warn,
                "not possible: the kernel lists no `fuse` file system".into(),
            );
        }
        let helper = ["fusermount3", "fusermount"]
            .into_iter()
            .find(|name| on_path(name));
        let root = nix::unistd::geteuid().is_root();
        match (helper, root) {
            (Some(h), _) => (
                Level::Ok,
                format!("possible: /dev/fuse is usable, {h} is installed"),
            ),
            (None, true) => (
                Level::Ok,
                "possible as root: /dev/fuse is usable (install fuse3 for unprivileged mounts)"
                    .into(),
            ),
            (None, false) => (
                Level::Warn,
                "not possible: no fusermount3 on PATH (install the fuse3 package)".into(),
            ),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        (
            Level::Warn,
            "FUSE mounting is supported on Linux only in this build".into(),
        )
    }
}

#[cfg(target_os = "linux")]
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}
