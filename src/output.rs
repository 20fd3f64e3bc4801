//! Everything `sealfs` writes: data to stdout (a closed pipe ends the
//! command quietly), messages to stderr behind one `sealfs: ` prefix, and
//! the exit status.

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};

/// How a command ended, as its exit status: 0 done, 1 failed (an error,
/// printed by [`fail`]), 2 usage error, 3 ran and found problems.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Done,
    Usage,
    FoundProblems,
    /// This status, as it is (`sealfs run` passing its command's on).
    Exit(u8),
}

impl From<Status> for ExitCode {
    fn from(s: Status) -> ExitCode {
        ExitCode::from(match s {
            Status::Done => 0,
            Status::Usage => 2,
            Status::FoundProblems => 3,
            Status::Exit(code) => code,
        })
    }
}

/// Prints a failed command's error (one line: the message and its causes,
/// never a backtrace) and returns exit status 1.
pub(crate) fn fail(e: &anyhow::Error) -> ExitCode {
    note(&format!("{e:#}"));
    ExitCode::FAILURE
}

/// A message for the user, on stderr.
pub(crate) fn note(message: &str) {
    let _ = writeln!(io::stderr().lock(), "sealfs: {message}");
}

/// Writes to stdout; a closed pipe (`| head -c 3`) is not an error.
pub(crate) fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to stdout"),
    }
}

/// `value` as pretty JSON and a newline, to stdout.
pub(crate) fn write_json(value: &impl serde::Serialize) -> Result<()> {
    let mut out = serde_json::to_string_pretty(value)?;
    out.push('\n');
    write_stdout(out.as_bytes())
}
