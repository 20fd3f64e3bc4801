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
    /// A signal for `sealfs run` came before anything was consumed: the
    /// run ends by it, as the command would have.
    #[cfg_attr(not(unix), allow(dead_code, reason = "no signals to end by"))]
    signal: Option<i32>,
}

impl Failure {
    fn new(status: u8, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
            signal: None,
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
    #[cfg(unix)]
    let checkpoint = || signals.stop_before_start();
    #[cfg(not(unix))]
    let checkpoint = || None;
    let prepared = match prepare(v, &args, &checkpoint) {
        Ok(p) => p,
        #[cfg(unix)]
        Err(Failure {
            signal: Some(sig), ..
        }) => return signals.die_by_number(sig),
        Err(f) => return fail(f),
    };
    let Prepared {
        process,
        values,
        consumed,
        session,
    } = prepared;
    #[cfg(unix)]
    if consumed.is_empty() {
        // A signal while the values were read ends the run here; once a
        // read-once secret is consumed, the command starts and gets it.
        if let Some(sig) = signals.stop_before_start() {
            drop(values);
            end_session(v, session.as_ref());
            return signals.die_by_number(sig);
        }
    }
    #[cfg(unix)]
    let process = signals.as_inherited(process);
    let child = start(process, &args.command[0], &consumed);
    drop(values);
    let child = match child {
        Ok(c) => c,
        Err(f) => {
            end_session(v, session.as_ref());
            return fail(f);
        }
    };
    #[cfg(unix)]
    {
        let ended = signals.wait(child);
        end_session(v, session.as_ref());
        signals.finish(ended)
    }
    #[cfg(not(unix))]
    {
        let mut child = child;
        let status = child.wait();
        end_session(v, session.as_ref());
        match status {
            Ok(status) => match status.code() {
                Some(code) if (0..=255).contains(&code) => Status::Exit(code as u8),
                // A status beyond a byte (a Windows crash code) as it is.
                Some(code) => std::process::exit(code),
                None => Status::Exit(1),
            },
            Err(e) => fail(Failure::new(1, format!("cannot wait for the command: {e}"))),
        }
    }
}

/// The variable that gives the command its session's id.
const SESSION_VAR: &str = "SEALFS_SESSION";

/// Creates a fresh session for the run (`session:run-<random>`), owned by
/// this user and ending after `ttl`; its scope and id.
fn start_session(
    v: &VaultArgs,
    ttl: std::time::Duration,
) -> anyhow::Result<(sealfs::VaultScope, String)> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let id = format!(
        "run-{}",
        random
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let scope: sealfs::VaultScope = format!("session:{id}")
        .parse()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    super::session::create(
        v,
        &scope,
        super::session::current_uid(),
        Some(std::time::SystemTime::now() + ttl),
    )?;
    Ok((scope, id))
}

/// Ends the run's session, if it has one; a failure is reported (the
/// session then ends with its lifetime) but does not change the status.
fn end_session(v: &VaultArgs, session: Option<&sealfs::VaultScope>) {
    if let Some(scope) = session {
        if let Err(e) = super::session::end(v, scope) {
            note(&format!(
                "{e:#}; it ends by itself at the end of its lifetime"
            ));
        }
    }
}

fn fail(f: Failure) -> Status {
    note(&f.message);
    Status::Exit(f.status)
}

/// The command, ready to start with every value in its environment.
struct Prepared {
    process: Process,
    /// The values (wiped when dropped).
    values: Vec<SensitiveBytes>,
    /// The read-once secrets this run consumed.
    consumed: Vec<VaultRef>,
    /// The run's session (`--session`), made for it.
    session: Option<sealfs::VaultScope>,
}

/// Everything up to the start: `checkpoint` is asked, just before the
/// first read-once secret is consumed, whether a signal ends the run.
fn prepare(
    v: &VaultArgs,
    args: &RunArgs,
    checkpoint: &dyn Fn() -> Option<i32>,
) -> Result<Prepared, Failure> {
    let specs = collect(args)?;
    let program = find_program(&args.command[0])?;
    // The session comes before any value is read: a store that cannot make
    // one (the fleet's) fails the run before a read-once secret is
    // consumed. It is ended if the run stops before the command starts.
    let session = if args.session {
        Some(start_session(v, args.ttl).map_err(|e| Failure::new(FAILED, format!("{e:#}")))?)
    } else {
        None
    };
    let read = if specs.is_empty() {
        Ok(Default::default())
    } else {
        read_values(v, &specs, &args.command, checkpoint)
    };
    let (values, consumed) = match read {
        Ok(read) => read,
        Err(f) => {
            end_session(v, session.as_ref().map(|(scope, _)| scope));
            return Err(f);
        }
    };
    let mut process = Process::new(&program);
    process.args(&args.command[1..]);
    #[cfg(unix)]
    std::os::unix::process::CommandExt::arg0(&mut process, &args.command[0]);
    for spec in &specs {
        process.env(&spec.name, env_value(&values[&spec.vault_ref]));
    }
    if let Some((scope, id)) = &session {
        process.env(SESSION_VAR, id);
        note(&format!(
            "{scope} is this run's session ({SESSION_VAR}={id}); it ends when the command does, or in {}",
            humantime::format_duration(args.ttl)
        ));
    }
    Ok(Prepared {
        process,
        values: values.into_values().collect(),
        consumed,
        session: session.map(|(scope, _)| scope),
    })
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
    if args.session {
        seen.insert(SESSION_VAR, "--session".into());
    }
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
    use std::io::Read;
    let shown = file.display();
    let cannot =
        |e: &dyn std::fmt::Display| Failure::new(FAILED, format!("cannot read {shown}: {e}"));
    // Any readable file, a pipe (`<(...)`, /dev/stdin) included.
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(MAX_ENV_FILE + 1).read_to_end(&mut bytes))
        .map_err(|e| cannot(&e))?;
    if bytes.len() as u64 > MAX_ENV_FILE {
        return Err(cannot(&"larger than 1 MiB"));
    }
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

/// The value of every ref, read from the vault, and the read-once secrets
/// consumed. Everything that can be checked is checked before the first
/// read-once secret is consumed: that each ref exists, that the values fit
/// in an environment, that the other values can be carried there, and
/// `checkpoint` (a signal). Each ref is read once, however many variables
/// name it.
fn read_values(
    v: &VaultArgs,
    specs: &[EnvSpec],
    command: &[OsString],
    checkpoint: &dyn Fn() -> Option<i32>,
) -> Result<(BTreeMap<VaultRef, SensitiveBytes>, Vec<VaultRef>), Failure> {
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
    let mut entries: BTreeMap<&VaultRef, sealfs::Entry> = BTreeMap::new();
    for spec in specs {
        match vault.entry(&spec.vault_ref) {
            Ok(Some(e)) => {
                entries.insert(&spec.vault_ref, e);
            }
            Ok(None) => return Err(failed(spec, "secret not found".into())),
            Err(e) => return Err(failed(spec, chain(&e))),
        }
    }
    fits_environment(specs, &entries, command)?;
    let mut order: Vec<&EnvSpec> = specs.iter().collect();
    order.sort_by_key(|s| entries[&s.vault_ref].once);
    let mut read: BTreeMap<VaultRef, SensitiveBytes> = BTreeMap::new();
    let mut consumed = Vec::new();
    for spec in &order {
        let r = &spec.vault_ref;
        if read.contains_key(r) {
            continue;
        }
        if entries[r].once && consumed.is_empty() {
            if let Some(sig) = checkpoint() {
                return Err(Failure {
                    signal: Some(sig),
                    ..Failure::new(FAILED, "")
                });
            }
        }
        let result = vault.read(r);
        let op = match &result {
            Ok((_, true)) => "consume",
            _ => "run",
        };
        record_result(v, &store, op, r, &result);
        let (value, was_consumed) = result.map_err(|e| failed(spec, chain(&e)))?;
        if was_consumed {
            consumed.push(r.clone());
        }
        check_value(&value).map_err(|why| {
            let gone = gone(&consumed);
            failed(spec, format!("{why}{gone}"))
        })?;
        read.insert(r.clone(), value);
    }
    Ok((read, consumed))
}

/// For messages: the read-once secrets a failed run consumed.
fn gone(consumed: &[VaultRef]) -> String {
    if consumed.is_empty() {
        return String::new();
    }
    let refs: Vec<String> = consumed.iter().map(ToString::to_string).collect();
    format!(
        " ({} read once and gone: read-once values are consumed when read)",
        refs.join(", ")
    )
}

/// The kernel's limit on one environment string (`MAX_ARG_STRLEN`, 32
/// pages on Linux).
const MAX_ENV_STRING: u64 = 32 * 4096;

/// Whether the values, with the environment inherited and the command's
/// arguments, fit what `execve` takes, from the lengths alone: a run that
/// would fail with E2BIG fails before anything is consumed.
fn fits_environment(
    specs: &[EnvSpec],
    entries: &BTreeMap<&VaultRef, sealfs::Entry>,
    command: &[OsString],
) -> Result<(), Failure> {
    let string = |len: u64| len + 1 + std::mem::size_of::<usize>() as u64;
    let mut total: u64 = command.iter().map(|a| string(a.len() as u64)).sum();
    total += std::env::vars_os()
        .map(|(k, v)| string((k.len() + 1 + v.len()) as u64))
        .sum::<u64>();
    for spec in specs {
        let len = spec.name.len() as u64 + 1 + entries[&spec.vault_ref].len;
        if len + 1 > MAX_ENV_STRING {
            return Err(Failure::new(
                FAILED,
                format!(
                    "{}={}: the value ({} bytes) is longer than one environment variable may be ({} bytes); the command was not started",
                    spec.name, spec.vault_ref, entries[&spec.vault_ref].len, MAX_ENV_STRING - 1
                ),
            ));
        }
        total += string(len);
    }
    #[cfg(unix)]
    let limit = nix::unistd::sysconf(nix::unistd::SysconfVar::ARG_MAX)
        .ok()
        .flatten()
        .and_then(|n| u64::try_from(n).ok());
    #[cfg(not(unix))]
    let limit: Option<u64> = None;
    if let Some(limit) = limit {
        if total > limit {
            return Err(Failure::new(
                FAILED,
                format!(
                    "the values, the environment and the arguments come to {total} bytes, more than a command may be started with here ({limit}); the command was not started"
                ),
            ));
        }
    }
    Ok(())
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
fn start(
    mut process: Process,
    command: &OsString,
    consumed: &[VaultRef],
) -> Result<std::process::Child, Failure> {
    process.spawn().map_err(|e| {
        let status = if e.kind() == std::io::ErrorKind::NotFound {
            NOT_FOUND
        } else {
            CANNOT_RUN
        };
        Failure::new(
            status,
            format!(
                "cannot run {}: {e}{}",
                Path::new(command).display(),
                gone(consumed)
            ),
        )
    })
}

#[cfg(unix)]
mod signals {
    //! The signals `sealfs run` passes on, and waiting for the command.

    use std::os::unix::process::ExitStatusExt;
    use std::process::{Child, Command as Process};

    use nix::sys::signal::{kill, raise, SigHandler, SigSet, SigmaskHow, Signal};
    use nix::unistd::Pid;

    use crate::output::Status;

    /// How the command ended.
    pub(super) enum Ended {
        /// With this status (or one that stands for it).
        Status(Status),
        /// By this signal.
        Signal(Signal),
    }

    /// Passed on to the command.
    const FORWARDED: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

    /// The forwarded signals and SIGCHLD, blocked in this thread (and in
    /// every thread it starts from now on) and taken from a queue instead.
    pub(super) struct Signals {
        /// The signal mask this process was started with.
        old: SigSet,
        /// The signals this process was started with ignored.
        ignored: SigSet,
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
            let ignored = ignored_signals();
            if ignored.contains(Signal::SIGCHLD) {
                // Ignored, the kernel would reap the command itself and its
                // status would be lost; the command gets it back ignored.
                set_disposition(Signal::SIGCHLD, SigHandler::SigDfl)?;
            }
            #[cfg(target_os = "linux")]
            {
                use nix::sys::signalfd::{SfdFlags, SignalFd};
                let queue =
                    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
                Ok(Signals {
                    old,
                    ignored,
                    queue,
                })
            }
            #[cfg(not(target_os = "linux"))]
            Ok(Signals { old, ignored, set })
        }

        /// `process`, set to start with the signal mask, the ignored
        /// SIGCHLD and the umask this process was started with (a child
        /// inherits all three, and this process changed them).
        #[expect(
            unsafe_code,
            reason = "Command::pre_exec: the child's signal mask, SIGCHLD and umask"
        )]
        pub(super) fn as_inherited(&self, mut process: Process) -> Process {
            use std::os::unix::process::CommandExt;
            let umask = crate::INHERITED_UMASK.get().copied();
            let mask = self.old;
            let chld_ignored = self.ignored.contains(Signal::SIGCHLD);
            // SAFETY: the closure runs in the child between fork and exec;
            // it calls only pthread_sigmask, sigaction (to SIG_IGN: no
            // handler) and umask, which are async-signal-safe, and
            // allocates nothing.
            unsafe {
                process.pre_exec(move || {
                    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&mask), None)?;
                    if chld_ignored {
                        nix::sys::signal::signal(Signal::SIGCHLD, SigHandler::SigIgn)?;
                    }
                    if let Some(umask) = umask {
                        nix::sys::stat::umask(umask);
                    }
                    Ok(())
                });
            }
            process
        }

        /// A forwarded signal, not ignored when this process started,
        /// that came while the values were read: the run then ends by it
        /// before anything is consumed.
        pub(super) fn stop_before_start(&self) -> Option<i32> {
            #[cfg(target_os = "linux")]
            while let Ok(Some(info)) = self.queue.read_signal() {
                let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                    continue;
                };
                if FORWARDED.contains(&sig) && !self.ignored.contains(sig) {
                    return Some(sig as i32);
                }
            }
            None
        }

        /// Ends this process by signal `number`.
        pub(super) fn die_by_number(&self, number: i32) -> Status {
            match Signal::try_from(number) {
                Ok(sig) => self.die_by(sig),
                Err(_) => Status::Exit(1),
            }
        }

        /// Ends this process by `sig` (as the command was), or, where `sig`
        /// is not one it passes on or is ignored here, with 128 + its
        /// number, as a shell reports it.
        fn die_by(&self, sig: Signal) -> Status {
            // Queued signals are dropped first: they must not end this
            // process instead of `sig` once the mask is restored.
            #[cfg(target_os = "linux")]
            while let Ok(Some(_)) = self.queue.read_signal() {}
            if FORWARDED.contains(&sig) && !self.ignored.contains(sig) {
                let _ = nix::sys::signal::pthread_sigmask(
                    SigmaskHow::SIG_SETMASK,
                    Some(&self.old),
                    None,
                );
                let mut only = SigSet::empty();
                only.add(sig);
                let _ = only.thread_unblock();
                let _ = raise(sig);
            }
            Status::Exit((128 + sig as i32) as u8)
        }

        /// This process's end as `ended` says: with the status, or by the
        /// command's signal.
        pub(super) fn finish(&self, ended: Ended) -> Status {
            match ended {
                Ended::Status(status) => status,
                Ended::Signal(sig) => self.die_by(sig),
            }
        }

        /// Passes signals on to `child` until it ends.
        pub(super) fn wait(&self, mut child: Child) -> Ended {
            let pid = Pid::from_raw(child.id() as i32);
            // What came before the command existed reaches it now, whoever
            // sent it (a terminal's ^C then did not reach the command).
            #[cfg(target_os = "linux")]
            while let Ok(Some(info)) = self.queue.read_signal() {
                if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                    if FORWARDED.contains(&sig) {
                        let _ = kill(pid, sig);
                    }
                }
            }
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
                        // A terminal sends ^C to its whole foreground
                        // process group: the command has it already. (Not
                        // its hangup, which goes to the session leader.)
                        let has_it = sig == Signal::SIGINT
                            && from_terminal
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

        fn ended_or_failed(&self, status: std::io::Result<std::process::ExitStatus>) -> Ended {
            match status {
                Ok(status) => self.ended(status),
                Err(e) => {
                    crate::output::note(&format!("cannot wait for the command: {e}"));
                    Ended::Status(Status::Exit(1))
                }
            }
        }

        fn ended(&self, status: std::process::ExitStatus) -> Ended {
            if let Some(code) = status.code() {
                return Ended::Status(Status::Exit(code.clamp(0, 255) as u8));
            }
            match status.signal().and_then(|s| Signal::try_from(s).ok()) {
                Some(sig) => Ended::Signal(sig),
                None => Ended::Status(Status::Exit(1)),
            }
        }

        /// The next signal (blocking), and whether the kernel sent it
        /// (a terminal) rather than a process.
        #[cfg(target_os = "linux")]
        fn next(&self) -> Option<(Signal, bool)> {
            use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
            use std::os::fd::AsFd;
            loop {
                match self.queue.read_signal() {
                    Ok(Some(info)) => {
                        let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                            continue;
                        };
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

        /// The next signal (blocking). sigwait does not say who sent it,
        /// so here a terminal's ^C reaches the command twice.
        #[cfg(not(target_os = "linux"))]
        fn next(&self) -> Option<(Signal, bool)> {
            self.set.wait().ok().map(|sig| (sig, false))
        }
    }

    /// `si_code` of a signal the kernel sent (a terminal's ^C, ^\, hangup).
    #[cfg(target_os = "linux")]
    const SI_KERNEL: i32 = 0x80;

    /// The signals this process was started with ignored (inherited across
    /// exec: `nohup`, a shell's background job), from `/proc/self/status`.
    fn ignored_signals() -> SigSet {
        #[cfg(target_os = "linux")]
        {
            let mut out = SigSet::empty();
            let mask = std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|status| {
                    let m = status.lines().find_map(|l| l.strip_prefix("SigIgn:"))?;
                    u64::from_str_radix(m.trim(), 16).ok()
                })
                .unwrap_or(0);
            for sig in Signal::iterator() {
                let n = sig as i32;
                if (1..=64).contains(&n) && mask & (1u64 << (n - 1)) != 0 {
                    out.add(sig);
                }
            }
            out
        }
        // Elsewhere none is known to be ignored.
        #[cfg(not(target_os = "linux"))]
        SigSet::empty()
    }

    #[expect(unsafe_code, reason = "sigaction, to SIG_DFL only")]
    fn set_disposition(sig: Signal, handler: SigHandler) -> nix::Result<()> {
        // SAFETY: SIG_DFL and SIG_IGN install no handler function, so no
        // code of this process runs in signal context.
        debug_assert!(matches!(handler, SigHandler::SigDfl | SigHandler::SigIgn));
        unsafe { nix::sys::signal::signal(sig, handler) }.map(|_| ())
    }
}
