//! Running a command to the end (killed after a deadline, so a hung mount
//! or daemon cannot hang the suite) and checking how it ended.

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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
pub fn run(mut cmd: Command, stdin: &[u8]) -> Run {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    feed(&mut child, stdin);
    let deadline = Instant::now() + DEADLINE;
    loop {
        if child.try_wait().expect("wait for the command").is_some() {
            return child.wait_with_output().expect("collect the output").into();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("command timed out: {cmd:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
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
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid",
        &uid.to_string(),
        "--regid",
        &uid.to_string(),
        "--clear-groups",
        "sh",
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
