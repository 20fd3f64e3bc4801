//! `sealfs run`: starts a command with secrets in its environment, never in
//! its arguments or a file, and passes its exit status and the signals
//! meant for it through.
//!
//! Everything that can fail is done before the command starts: the
//! variables are collected and checked, the command is looked up, and every
//! ref is read. Read-once secrets are read last, so a missing or unreadable
//! ref (or a command not found) does not consume one for nothing.
//!
//! The values pass through the standard library's `Command`, which copies
//! them into its own buffers and frees them unwiped after the start; the
//! command's environment then holds them for its whole life in any case
//! (readable, like its memory, by its own user and root).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command as Process;

use sealfs::cli_common::VaultArgs;
use sealfs::{SensitiveBytes, VaultRef};

use super::secret::{no_vault_dir, open_existing, record_result};
use crate::args::{EnvSpec, RunArgs};
use crate::output::{note, Status};

/// The run failed before the command started (a ref, an env file).
const FAILED: u8 = 125;
/// The command was found but cannot be run.
const CANNOT_RUN: u8 = 126;
/// The command was not found.
const NOT_FOUND: u8 = 127;

/// Why the command was not started, and the status that says so.
struct Failure {
    status: u8,
    message: String,
}

impl Failure {
    fn new(status: u8, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
        }
    }
}

pub(super) fn run(v: &VaultArgs, args: RunArgs) -> Status {
    // Blocked before the vault is opened, so that any thread it starts
    // leaves these signals to this one.
    #[cfg(unix)]
    let signals = match signals::Signals::block() {
        Ok(s) => s,
        Err(e) => return fail(Failure::new(FAILED, format!("cannot set up signals: {e}"))),
    };
    let (process, values) = match prepare(v, &args) {
        Ok(p) => p,
        Err(f) => return fail(f),
    };
    #[cfg(unix)]
    {
        if let Some(sig) = signals.stop_before_start() {
            drop(values);
            return signals.die_by(sig);
        }
    }
    #[cfg(unix)]
    let process = signals::as_inherited(process, signals.inherited());
    let child = start(process, &args.command[0]);
    drop(values);
    let child = match child {
        Ok(c) => c,
        Err(f) => return fail(f),
    };
    #[cfg(unix)]
    return signals.wait(child);
    #[cfg(not(unix))]
    {
        let mut child = child;
        match child.wait() {
            Ok(status) => Status::Exit(status.code().unwrap_or(1).clamp(0, 255) as u8),
            Err(e) => fail(Failure::new(1, format!("cannot wait for the command: {e}"))),
        }
    }
}

fn fail(f: Failure) -> Status {
    note(&f.message);
    Status::Exit(f.status)
}

/// The command, ready to start with every value in its environment, and
/// the values (wiped when dropped).
fn prepare(v: &VaultArgs, args: &RunArgs) -> Result<(Process, Vec<SensitiveBytes>), Failure> {
    let specs = collect(args)?;
    let program = find_program(&args.command[0])?;
    let values = read_values(v, &specs)?;
    let mut process = Process::new(&program);
    process.args(&args.command[1..]);
    #[cfg(unix)]
    std::os::unix::process::CommandExt::arg0(&mut process, &args.command[0]);
    for spec in &specs {
        process.env(&spec.name, env_value(&values[&spec.vault_ref]));
    }
    Ok((process, values.into_values().collect()))
}

#[cfg(unix)]
fn env_value(value: &SensitiveBytes) -> &std::ffi::OsStr {
    std::os::unix::ffi::OsStrExt::from_bytes(value.expose())
}

#[cfg(not(unix))]
fn env_value(value: &SensitiveBytes) -> &str {
    // Checked to be UTF-8 in `read_values`.
    std::str::from_utf8(value.expose()).unwrap_or_default()
}

/// A variable, and where it was given: `None` on the command line, or the
/// env file and line.
type Given = (EnvSpec, Option<(PathBuf, usize)>);

/// Where a variable was given, for messages.
fn origin(spec: &EnvSpec, from: Option<&(PathBuf, usize)>) -> String {
    match from {
        None => format!("--env {}={}", spec.name, spec.vault_ref),
        Some((file, line)) => format!("{}:{line}", file.display()),
    }
}

/// The variables of `--env` and `--env-file`, in order, each name once.
fn collect(args: &RunArgs) -> Result<Vec<EnvSpec>, Failure> {
    let mut all: Vec<Given> = args.env.iter().map(|s| (s.clone(), None)).collect();
    for file in &args.env_file {
        all.extend(read_env_file(file)?);
    }
    let mut seen: BTreeMap<&str, String> = BTreeMap::new();
    for (spec, from) in &all {
        let here = origin(spec, from.as_ref());
        if let Some(first) = seen.insert(&spec.name, here.clone()) {
            return Err(Failure::new(
                FAILED,
                format!("{} is given twice ({first}, {here})", spec.name),
            ));
        }
    }
    Ok(all.into_iter().map(|(s, _)| s).collect())
}

/// Env files are small: refs, never values.
const MAX_ENV_FILE: u64 = 1 << 20;

fn read_env_file(file: &Path) -> Result<Vec<Given>, Failure> {
    let shown = file.display();
    let cannot =
        |e: &dyn std::fmt::Display| Failure::new(FAILED, format!("cannot read {shown}: {e}"));
    let meta = std::fs::metadata(file).map_err(|e| cannot(&e))?;
    if !meta.is_file() {
        return Err(cannot(&"not a regular file"));
    }
    if meta.len() > MAX_ENV_FILE {
        return Err(cannot(&"larger than 1 MiB"));
    }
    let bytes = std::fs::read(file).map_err(|e| cannot(&e))?;
    let text = String::from_utf8(bytes).map_err(|_| cannot(&"not UTF-8 text"))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let spec = EnvSpec::parse(line, false)
            .map_err(|e| Failure::new(FAILED, format!("{shown}:{}: {e}", n + 1)))?;
        out.push((spec, Some((file.to_owned(), n + 1))));
    }
    Ok(out)
}

/// `command` as `execvp` would find it, so that a command not found is
/// reported before any secret is read.
fn find_program(command: &OsString) -> Result<PathBuf, Failure> {
    let shown = Path::new(command).display().to_string();
    let has_slash = Path::new(command).components().count() > 1
        || command
            .to_string_lossy()
            .contains(std::path::MAIN_SEPARATOR);
    if command.is_empty() {
        return Err(Failure::new(NOT_FOUND, "the command is empty"));
    }
    let candidates: Vec<PathBuf> = if has_slash {
        vec![PathBuf::from(command)]
    } else {
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
        std::env::split_paths(&path)
            .map(|dir| {
                // An empty entry means the current directory.
                let dir = if dir.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    dir
                };
                dir.join(command)
            })
            .collect()
    };
    let mut found_but_not_runnable = None;
    for candidate in candidates {
        match runnable(&candidate) {
            Ok(true) => return Ok(candidate),
            Ok(false) => {
                found_but_not_runnable.get_or_insert(candidate);
            }
            Err(_) => {}
        }
    }
    match found_but_not_runnable {
        Some(p) => Err(Failure::new(
            CANNOT_RUN,
            format!("cannot run {}: not an executable file", p.display()),
        )),
        None => Err(Failure::new(
            NOT_FOUND,
            format!("{shown}: command not found"),
        )),
    }
}

/// Whether `path` is a file this process may execute (`Err`: nothing there).
fn runnable(path: &Path) -> std::io::Result<bool> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Ok(false);
    }
    #[cfg(unix)]
    {
        Ok(nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok())
    }
    #[cfg(not(unix))]
    {
        Ok(true)
    }
}

/// The value of every ref, read from the vault; read-once secrets last.
/// Each ref is read once, however many variables name it.
fn read_values(
    v: &VaultArgs,
    specs: &[EnvSpec],
) -> Result<BTreeMap<VaultRef, SensitiveBytes>, Failure> {
    let failed = |spec: &EnvSpec, why: String| {
        Failure::new(
            FAILED,
            format!(
                "{}={}: {why}; the command was not started",
                spec.name, spec.vault_ref
            ),
        )
    };
    let chain = |e: &sealfs::StoreError| sealfs::Chain(e).to_string();
    let store = match open_existing(v) {
        Ok(Some(s)) => s,
        Ok(None) => {
            let spec = &specs[0];
            let why = format!(
                "secret not found (there is no vault at {} yet)",
                no_vault_dir(v).display()
            );
            return Err(failed(spec, why));
        }
        Err(e) => return Err(Failure::new(FAILED, format!("{e:#}"))),
    };
    let vault = store.as_dyn();
    // Every ref known to exist before anything is read (or consumed).
    let mut once: BTreeMap<&VaultRef, bool> = BTreeMap::new();
    for spec in specs {
        match vault.entry(&spec.vault_ref) {
            Ok(Some(e)) => {
                once.insert(&spec.vault_ref, e.once);
            }
            Ok(None) => return Err(failed(spec, "secret not found".into())),
            Err(e) => return Err(failed(spec, chain(&e))),
        }
    }
    let mut order: Vec<&EnvSpec> = specs.iter().collect();
    order.sort_by_key(|s| once[&s.vault_ref]);
    let mut read: BTreeMap<VaultRef, SensitiveBytes> = BTreeMap::new();
    for spec in &order {
        let r = &spec.vault_ref;
        if read.contains_key(r) {
            continue;
        }
        let result = vault.read(r);
        let op = match &result {
            Ok((_, true)) => "consume",
            _ => "run",
        };
        record_result(v, &store, op, r, &result);
        let (value, _) = result.map_err(|e| failed(spec, chain(&e)))?;
        check_value(&value).map_err(|why| failed(spec, why.into()))?;
        read.insert(r.clone(), value);
    }
    Ok(read)
}

/// Whether `value` can be carried by an environment variable.
fn check_value(value: &SensitiveBytes) -> Result<(), &'static str> {
    if value.expose().contains(&0) {
        return Err("the value holds a NUL byte, which an environment variable cannot carry");
    }
    #[cfg(not(unix))]
    if std::str::from_utf8(value.expose()).is_err() {
        return Err("the value is not UTF-8, which an environment variable here must be");
    }
    Ok(())
}

/// Starts `process`; a failure is the shell's 126 or 127.
fn start(mut process: Process, command: &OsString) -> Result<std::process::Child, Failure> {
    process.spawn().map_err(|e| {
        let status = if e.kind() == std::io::ErrorKind::NotFound {
            NOT_FOUND
        } else {
            CANNOT_RUN
        };
        Failure::new(
            status,
            format!("cannot run {}: {e}", Path::new(command).display()),
        )
    })
}

#[cfg(unix)]
mod signals {
    //! The signals `sealfs run` passes on, and waiting for the command.

    use std::os::unix::process::ExitStatusExt;
    use std::process::{Child, Command as Process};

    use nix::sys::signal::{kill, raise, SigSet, SigmaskHow, Signal};
    use nix::unistd::Pid;

    use crate::output::Status;

    /// `process`, set to start with the signal mask and the umask this
    /// process was started with (a child inherits both, and this process
    /// changed them).
    #[expect(
        unsafe_code,
        reason = "Command::pre_exec: the child's signal mask and umask"
    )]
    pub(super) fn as_inherited(mut process: Process, mask: SigSet) -> Process {
        use std::os::unix::process::CommandExt;
        let umask = crate::INHERITED_UMASK.get().copied();
        // SAFETY: the closure runs in the child between fork and exec; it
        // calls only pthread_sigmask and umask, which are async-signal-safe,
        // and allocates nothing.
        unsafe {
            process.pre_exec(move || {
                nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&mask), None)?;
                if let Some(umask) = umask {
                    nix::sys::stat::umask(umask);
                }
                Ok(())
            });
        }
        process
    }

    /// Passed on to the command.
    const FORWARDED: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

    /// The forwarded signals and SIGCHLD, blocked in this thread (and in
    /// every thread it starts from now on) and taken from a queue instead.
    pub(super) struct Signals {
        old: SigSet,
        #[cfg(target_os = "linux")]
        queue: nix::sys::signalfd::SignalFd,
        #[cfg(not(target_os = "linux"))]
        set: SigSet,
    }

    impl Signals {
        pub(super) fn block() -> nix::Result<Self> {
            let mut set = SigSet::empty();
            for s in FORWARDED {
                set.add(s);
            }
            set.add(Signal::SIGCHLD);
            let mut old = SigSet::empty();
            nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old))?;
            #[cfg(target_os = "linux")]
            {
                use nix::sys::signalfd::{SfdFlags, SignalFd};
                let queue =
                    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
                Ok(Signals { old, queue })
            }
            #[cfg(not(target_os = "linux"))]
            Ok(Signals { old, set })
        }

        /// The signal mask this thread had before [`Signals::block`].
        pub(super) fn inherited(&self) -> SigSet {
            self.old
        }

        /// A forwarded signal that came while the values were read: the
        /// command is then not started.
        pub(super) fn stop_before_start(&self) -> Option<Signal> {
            #[cfg(target_os = "linux")]
            while let Ok(Some(info)) = self.queue.read_signal() {
                let sig = Signal::try_from(info.ssi_signo as i32).ok()?;
                if FORWARDED.contains(&sig) {
                    return Some(sig);
                }
            }
            None
        }

        /// Ends this process by `sig` (as the command was), or, where `sig`
        /// is ignored here, with 128 + its number.
        pub(super) fn die_by(&self, sig: Signal) -> Status {
            let _ =
                nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.old), None);
            if FORWARDED.contains(&sig) {
                let _ = raise(sig);
            }
            Status::Exit((128 + sig as i32) as u8)
        }

        /// Passes signals on to `child` until it ends; its status becomes
        /// this process's.
        pub(super) fn wait(&self, mut child: Child) -> Status {
            let pid = Pid::from_raw(child.id() as i32);
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => return self.ended(status),
                    Ok(None) => {}
                    Err(e) => return self.ended_or_failed(Err(e)),
                }
                match self.next() {
                    // The queue failed: wait without passing signals on.
                    None => return self.ended_or_failed(child.wait()),
                    Some((sig, from_terminal)) if FORWARDED.contains(&sig) => {
                        // The terminal sends ^C to its whole foreground
                        // process group: the command has it already.
                        let has_it = from_terminal
                            && nix::unistd::getpgid(Some(pid)).ok() == Some(nix::unistd::getpgrp());
                        if !has_it {
                            let _ = kill(pid, sig);
                        }
                    }
                    // SIGCHLD: look at the child again.
                    Some(_) => {}
                }
            }
        }

        fn ended_or_failed(&self, status: std::io::Result<std::process::ExitStatus>) -> Status {
            match status {
                Ok(status) => self.ended(status),
                Err(e) => {
                    crate::output::note(&format!("cannot wait for the command: {e}"));
                    Status::Exit(1)
                }
            }
        }

        fn ended(&self, status: std::process::ExitStatus) -> Status {
            if let Some(code) = status.code() {
                return Status::Exit(code.clamp(0, 255) as u8);
            }
            match status.signal().and_then(|s| Signal::try_from(s).ok()) {
                Some(sig) => self.die_by(sig),
                None => Status::Exit(1),
            }
        }

        /// The next signal (blocking), and whether the kernel sent it
        /// (a terminal's ^C) rather than a process.
        #[cfg(target_os = "linux")]
        fn next(&self) -> Option<(Signal, bool)> {
            use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
            use std::os::fd::AsFd;
            loop {
                match self.queue.read_signal() {
                    Ok(Some(info)) => {
                        let sig = Signal::try_from(info.ssi_signo as i32).ok()?;
                        return Some((sig, info.ssi_code == SI_KERNEL));
                    }
                    Ok(None) => {
                        let mut fds = [PollFd::new(self.queue.as_fd(), PollFlags::POLLIN)];
                        let _ = poll(&mut fds, PollTimeout::NONE);
                    }
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(_) => return None,
                }
            }
        }

        #[cfg(not(target_os = "linux"))]
        fn next(&self) -> Option<(Signal, bool)> {
            self.set.wait().ok().map(|sig| (sig, false))
        }
    }

    /// `si_code` of a signal the kernel sent (a terminal's ^C, ^\).
    #[cfg(target_os = "linux")]
    const SI_KERNEL: i32 = 0x80;
}
