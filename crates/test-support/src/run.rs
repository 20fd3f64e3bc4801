//! Running a command to the end (killed after a deadline, so a hung mount
//! or daemon cannot hang the suite) and checking how it ended.

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// How long a command may run before it is killed and the test fails.
const DEADLINE: Duration = Duration::from_secs(60);

/// What a finished command did.
#[derive(Debug)]
pub struct Run {
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error, lossily decoded.
    pub stderr: String,
}

impl Run {
    /// Asserts exit 0.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code,
            Some(0),
            "expected success, stderr: {}",
            self.stderr
        );
        self
    }

    /// Asserts exit `code` with `needle` in stderr, and neither a panic nor
    /// a backtrace hint there.
    #[track_caller]
    pub fn fails(self, code: i32, needle: &str) -> Self {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit {code}, stderr: {}",
            self.stderr
        );
        self.fails_with(needle)
    }

    /// Asserts a failure (any exit but 0) with `needle` in stderr, and
    /// neither a panic nor a backtrace hint there.
    #[track_caller]
    pub fn fails_with(self, needle: &str) -> Self {
        assert_ne!(
            self.code,
            Some(0),
            "expected failure; stdout: {:?}",
            String::from_utf8_lossy(&self.stdout)
        );
        assert!(
            self.stderr.contains(needle),
            "stderr {:?} lacks {needle:?}",
            self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "panic: {}", self.stderr);
        assert!(
            !self.stderr.contains("RUST_BACKTRACE"),
            "backtrace hint: {}",
            self.stderr
        );
        self
    }

    /// Standard output as text; fails the test unless it is UTF-8.
    #[track_caller]
    pub fn stdout_str(&self) -> String {
        String::from_utf8(self.stdout.clone()).expect("stdout is UTF-8")
    }

    /// Standard output as text (lossily decoded).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code(),
            stdout: o.stdout,
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs `cmd` with `stdin` as its standard input, killed after 60 s.
///
/// Output is collected while the command runs (a pipe filled past its
/// buffer would otherwise stall it), and the end is awaited on a channel,
/// so a finished command is seen at once rather than at the next poll.
pub fn run(mut cmd: Command, stdin: &[u8]) -> Run {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("a pid fits i32"));
    let mut input = child.stdin.take().expect("piped stdin");
    let stdin = stdin.to_vec();
    // The child may exit early (bad input) and close its end: not our error.
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(out) => {
            let _ = feeder.join();
            out.expect("collect the output").into()
        }
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            panic!("command timed out after {DEADLINE:?}: {cmd:?}");
        }
    }
}

/// Writes `input` to the child's stdin and closes it.
pub fn feed(child: &mut Child, input: &[u8]) {
    let mut stdin = child.stdin.take().expect("piped stdin");
    // The child may exit early (bad input) and close its end: not our error.
    let _ = stdin.write_all(input);
}

/// `sh -c script` as this process's user.
pub fn sh(script: &str) -> Run {
    let mut c = Command::new("sh");
    c.args(["-c", script]);
    run(c, b"")
}

/// `sh -c script` as `uid` (and the same gid, no supplementary groups).
pub fn sh_as(uid: u32, script: &str) -> Run {
    shell_as(uid, "sh", script)
}

/// `shell -c script` (e.g. `bash`) as `uid`, like [`sh_as`].
pub fn shell_as(uid: u32, shell: &str, script: &str) -> Run {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid",
        &uid.to_string(),
        "--regid",
        &uid.to_string(),
        "--clear-groups",
        shell,
        "-c",
        script,
    ]);
    run(c, b"")
}

/// The uid of the system user `name` (e.g. `daemon`, there on every
/// Debian system): a uid with a login name, where a test needs one.
pub fn uid_of(name: &str) -> u32 {
    let out = Command::new("id")
        .args(["-u", name])
        .output()
        .expect("run id");
    assert!(out.status.success(), "no user {name} here");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a uid")
}

/// A small deterministic generator, so a failing run can be repeated.
#[derive(Debug)]
pub struct XorShift(pub u64);

impl XorShift {
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Sleeps until `t` has passed.
pub fn until_past(t: std::time::Instant) {
    std::thread::sleep(t.saturating_duration_since(std::time::Instant::now()));
}

/// Polls `done` every 10 ms until it holds; fails the test with `what`
/// after `limit`.
#[track_caller]
pub fn eventually(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
