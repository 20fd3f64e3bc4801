//! `sealfs run`: values reach the command's environment and nothing else,
//! its exit status and the signals meant for it pass through, and a run
//! that cannot start fails before the command does, consuming nothing.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::util::{eventually, have_tools, Sandbox};

/// Waits for `child`, killing it (and failing) after 30 s.
fn finish(mut child: Child) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sealfs run did not end");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A `script` that is killed (its terminal hung up, which ends what runs
/// in it) when the test ends, failed or not.
struct Terminal(Child);

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `path` exists (the command got to where it signals ready).
fn until_exists(path: &Path) {
    eventually(
        Duration::from_secs(30),
        &format!("{} never appeared", path.display()),
        || path.exists(),
    );
}

fn kill(child: &Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig}");
}

#[test]
fn values_reach_the_environment_only_and_the_exit_status_passes_through() {
    let sb = Sandbox::new();
    let value = b"p@ss word=with\nnewline and 'quotes' $HOME";
    sb.set("global/db_password", value);
    sb.set("principal:ci/token", b"tok-123");
    // The command writes what it got, and where the value is not: its own
    // arguments and those of `sealfs run`, which is its parent.
    let script = r#"printf %s "$DB_PASSWORD" > db; printf %s "$TOKEN" > token;
        printf %s "$AGAIN" > again; umask > umask;
        cat /proc/$$/cmdline /proc/$PPID/cmdline > argv; exit 7"#;
    // Started with umask 027 (through sh, which sets it and execs).
    let mut cmd = sb.program("sh");
    cmd.args(["-c", r#"umask 027; exec "$0" "$@""#, crate::util::BIN]);
    cmd.args([
        "run",
        "--env",
        "DB_PASSWORD=global/db_password",
        "--env=TOKEN=principal:ci/token",
        "--env",
        "AGAIN=vault://global/db_password",
        "--",
        "sh",
        "-c",
        script,
    ]);
    let run = crate::util::run(cmd, b"");
    assert_eq!(run.code, Some(7), "stderr: {}", run.stderr);
    let read = |name: &str| std::fs::read(sb.path().join(name)).unwrap();
    assert_eq!(read("db"), value);
    assert_eq!(read("again"), value);
    assert_eq!(read("token"), b"tok-123");
    let argv = read("argv");
    assert!(!argv.windows(7).any(|w| w == b"p@ss wo"), "value in argv");
    assert!(!argv.windows(7).any(|w| w == b"tok-123"), "value in argv");
    // sealfs makes its own files owner-only; the command gets the umask
    // run was started with.
    assert_eq!(String::from_utf8(read("umask")).unwrap().trim(), "0027");
    // Each read is audited, and never with the value.
    let log = std::fs::read_to_string(sb.path().join("audit.log")).unwrap();
    assert_eq!(
        log.matches(r#""op":"run","ref":"global/db_password""#)
            .count(),
        1,
        "{log}"
    );
    assert!(
        log.contains(r#""op":"run","ref":"principal:ci/token""#),
        "{log}"
    );
    assert!(!log.contains("p@ss") && !log.contains("tok-123"));
}

#[test]
fn an_env_file_names_refs_line_by_line() {
    let sb = Sandbox::new();
    sb.set("global/a", b"value-a");
    sb.run(&["set", "global/once", "--once"], b"value-once")
        .ok();
    std::fs::write(
        sb.path().join("app.env"),
        "# the app's secrets\n\nA=global/a\n  ONCE = global/once  \nALSO_ONCE=global/once\n",
    )
    .unwrap();
    let run = sb
        .run(
            &[
                "run",
                "--env-file",
                "app.env",
                "--",
                "sh",
                "-c",
                r#"printf '%s|%s|%s' "$A" "$ONCE" "$ALSO_ONCE""#,
            ],
            b"",
        )
        .ok();
    // A read-once secret named twice is read once and given to both.
    assert_eq!(run.stdout_str(), "value-a|value-once|value-once");
    sb.run(&["get", "global/once"], b"").fails(1, "not found");
}

#[test]
fn a_run_that_cannot_start_fails_first_and_consumes_nothing() {
    let sb = Sandbox::new();
    sb.set("global/a", b"value-a");
    sb.run(&["set", "global/once", "--once"], b"value-once")
        .ok();
    sb.set("global/nul", b"a\0b");
    let started = sb.path().join("started");
    let marker = format!("touch {}", started.display());
    let run = |env: &[&str], command: &[&str]| {
        let mut args = vec!["run"];
        for e in env {
            args.extend(["--env", e]);
        }
        args.push("--");
        args.extend(command);
        sb.run(&args, b"")
    };
    let touch = ["sh", "-c", marker.as_str()];

    // A missing ref, even after a read-once one: named, nothing consumed.
    run(&["O=global/once", "X=global/missing"], &touch).fails(
        125,
        "X=global/missing: secret not found; the command was not started",
    );
    // A value an environment variable cannot hold.
    run(&["O=global/once", "N=global/nul"], &touch)
        .fails(125, "N=global/nul: the value holds a NUL byte");
    // A command that is not there, or not runnable, before any read.
    run(&["O=global/once"], &["no-such-command-here"])
        .fails(127, "no-such-command-here: command not found");
    std::fs::write(sb.path().join("plain"), "not a program").unwrap();
    run(&["O=global/once"], &["./plain"]).fails(126, "not an executable file");
    // Bad variables.
    run(&["O=global/once", "O=global/a"], &touch).fails(125, "O is given twice");
    run(&["global/once"], &touch).fails(2, "expected NAME=REF");
    run(&["1X=global/a"], &touch).fails(2, "invalid variable name \"1X\"");
    run(&["X=nope"], &touch).fails(2, "invalid ref");
    std::fs::write(sb.path().join("bad.env"), "A=global/a\nthis is not it\n").unwrap();
    sb.run(&["run", "--env-file", "bad.env", "--", "true"], b"")
        .fails(125, "bad.env:2: expected NAME=REF");
    // A .env of values by mistake: the value is not repeated.
    std::fs::write(sb.path().join("values.env"), "A=global/a\nDB=hunter2\n").unwrap();
    let out = sb.run(&["run", "--env-file", "values.env", "--", "true"], b"");
    assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);
    out.fails(125, "values.env:2: DB= is not followed by a ref");
    sb.run(&["run", "--env-file", "absent.env", "--", "true"], b"")
        .fails(125, "cannot read absent.env");
    sb.run(&["run", "--", "true"], b"").fails(2, "--env");
    sb.run(&["run", "--env", "A=global/a"], b"")
        .fails(2, "COMMAND");

    // Values too long for the environment: found from their lengths.
    let long = vec![b'x'; 65_000];
    sb.set("global/long", &long);
    let many: Vec<String> = (0..40).map(|i| format!("L{i}=global/long")).collect();
    let mut env: Vec<&str> = many.iter().map(String::as_str).collect();
    env.push("O=global/once");
    run(&env, &touch).fails(125, "more than a command may be started with here");
    sb.run(
        &["set", "--max-value-size", "200000", "global/huge"],
        &[b'x'; 140_000],
    )
    .ok();
    sb.run(
        &[
            "run",
            "--max-value-size",
            "200000",
            "--env",
            "H=global/huge",
            "--env",
            "O=global/once",
            "--",
            "true",
        ],
        b"",
    )
    .fails(125, "longer than one environment variable may be");

    assert!(!started.exists(), "the command ran");
    assert_eq!(
        sb.get("global/once"),
        b"value-once",
        "the read-once secret was consumed"
    );

    // What only the value shows: the read-once secret is gone, and the
    // message says so.
    sb.run(&["set", "global/once-nul", "--once"], b"a\0b").ok();
    run(&["N=global/once-nul"], &touch).fails(125, "global/once-nul read once and gone");
    assert!(!started.exists(), "the command ran");
}

#[test]
fn signals_sent_to_run_reach_the_command() {
    let sb = Sandbox::new();
    sb.set("global/a", b"value-a");
    for sig in ["TERM", "HUP", "INT"] {
        let ready = sb.path().join(format!("ready-{sig}"));
        let _ = std::fs::remove_file(&ready);
        // `sleep & wait` so the trap runs at once; the trap says which
        // signal it got and exits 9.
        let script = format!(
            r#"trap 'echo got-{sig}; kill $!; exit 9' {sig}; touch {ready}; sleep 30 >/dev/null & wait $!"#,
            ready = ready.display()
        );
        let child = sb
            .cmd(&["run", "--env", "A=global/a", "--", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        until_exists(&ready);
        kill(&child, sig);
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(9), "{sig}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("got-{sig}\n"));
    }
}

#[test]
fn a_command_ended_by_a_signal_ends_run_the_same_way() {
    let sb = Sandbox::new();
    sb.set("global/a", b"value-a");
    let ready = sb.path().join("ready");
    // perl, unlike sh, leaves the signal mask it was started with as it
    // is: a command must not start with run's signals blocked.
    let script = format!(r#"open F, ">{}"; close F; sleep 30"#, ready.display());
    let child = sb
        .cmd(&["run", "--env", "A=global/a", "--", "perl", "-e", &script])
        .spawn()
        .unwrap();
    until_exists(&ready);
    kill(&child, "TERM");
    assert_eq!(finish(child).signal(), Some(libc_sigterm()));

    // A signal run does not pass on: 128 + its number, as a shell says.
    let run = sb.run(
        &[
            "run",
            "--env",
            "A=global/a",
            "--",
            "sh",
            "-c",
            "kill -SEGV $$",
        ],
        b"",
    );
    assert_eq!(run.code, Some(128 + 11), "{}", run.stderr);
}

fn libc_sigterm() -> i32 {
    nix::sys::signal::Signal::SIGTERM as i32
}

/// perl that counts the signals `sig` its handler sees into `count`
/// (rewritten after each; `then` runs after), having first made `ready`;
/// it ends after `secs`.
fn counting_perl(sig: &str, then: &str, ready: &Path, count: &Path, secs: u32) -> String {
    format!(
        r#"$n = 0; $SIG{{{sig}}} = sub {{ $n++; open C, ">{count}.new"; print C $n; close C; rename "{count}.new", "{count}"; {then} }}; open F, ">{ready}"; close F; select(undef, undef, undef, 0.05) for 1..{rounds}"#,
        ready = ready.display(),
        count = count.display(),
        rounds = secs * 20
    )
}

/// The count `counting_perl` wrote last (0 before any).
fn count_of(count: &Path) -> u32 {
    std::fs::read_to_string(count).map_or(0, |c| c.trim().parse().unwrap())
}

/// `sealfs run ... -- <perl>` in a terminal of its own (`script`, with
/// `flags`), where perl counts the signals `sig` it gets (see
/// [`counting_perl`]); `wrap` makes the shell line from run's. Returns once
/// the command is ready, with the terminal and the count's file.
fn counting_in_a_terminal(
    sb: &Sandbox,
    sig: &str,
    then: &str,
    flags: &[&str],
    wrap: impl Fn(&str) -> String,
) -> (Terminal, std::path::PathBuf) {
    sb.set("global/a", b"value-a");
    let (ready, count) = (sb.path().join("ready"), sb.path().join("count"));
    std::fs::write(
        sb.path().join("count.pl"),
        counting_perl(sig, then, &ready, &count, 30),
    )
    .unwrap();
    let line = wrap(&format!("{} run --env A=global/a --", crate::util::BIN));
    let mut script = sb.program("script");
    script
        .args(flags)
        .args(["-c", &line, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let terminal = Terminal(script.spawn().expect("script (util-linux) runs"));
    until_exists(&ready);
    (terminal, count)
}

#[test]
fn a_terminal_interrupt_reaches_the_command_once() {
    // ^C typed at a terminal goes to its whole foreground process group,
    // the command included: run must not send it a second one. The command
    // (perl, counting every SIGINT its handler sees) runs on the other CPU,
    // where it takes each signal at once, so that a second one does not
    // merge with the first. Each ^C is typed once the last one is counted;
    // a second SIGINT would come within a few milliseconds of the first.
    if !have_tools(&["script", "perl", "taskset"]) {
        return;
    }
    let sb = Sandbox::new();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = |cpu: usize| {
        if cpus > 1 {
            format!("taskset -c {cpu} ")
        } else {
            String::new()
        }
    };
    let (mut terminal, count) = counting_in_a_terminal(&sb, "INT", "", &["-q", "-e"], |run| {
        format!("{}{run} {}perl count.pl", pin(0), pin(1))
    });
    use std::io::Write;
    for typed in 1..=5 {
        terminal
            .0
            .stdin
            .as_mut()
            .unwrap()
            .write_all(b"\x03")
            .unwrap();
        eventually(
            Duration::from_secs(10),
            &format!("^C {typed} never reached the command"),
            || count_of(&count) >= typed,
        );
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            count_of(&count),
            typed,
            "^C {typed} reached the command twice"
        );
    }
}

#[test]
fn a_terminal_hangup_reaches_the_command() {
    // `ssh -t host sealfs run ...`: run is the session leader, the only
    // process the kernel sends the terminal's hangup to.
    if !have_tools(&["script", "perl"]) {
        return;
    }
    let sb = Sandbox::new();
    let (terminal, count) = counting_in_a_terminal(&sb, "HUP", "exit 0", &["-q"], |run| {
        format!("exec {run} perl count.pl")
    });
    // The terminal goes away with script.
    drop(terminal);
    eventually(
        Duration::from_secs(10),
        "the hangup never reached the command",
        || count_of(&count) >= 1,
    );
}

#[test]
fn an_ignored_sigchld_does_not_lose_the_status() {
    // Started with SIGCHLD ignored, the kernel would reap the command
    // itself and its status would be gone; the command still gets it
    // ignored, as it would without run.
    if !have_tools(&["perl"]) {
        return;
    }
    let sb = Sandbox::new();
    sb.set("global/a", b"value-a");
    let ignoring = |command: &[&str]| {
        let mut cmd = sb.program("perl");
        cmd.args([
            "-e",
            r#"$SIG{CHLD} = "IGNORE"; exec @ARGV"#,
            crate::util::BIN,
        ])
        .args(["run", "--env", "A=global/a", "--"])
        .args(command);
        crate::util::run(cmd, b"")
    };
    let run = ignoring(&["sh", "-c", "exit 3"]);
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    let run = ignoring(&["grep", "SigIgn", "/proc/self/status"]).ok();
    let ignored = run.stdout_str();
    let mask =
        u64::from_str_radix(ignored.trim().trim_start_matches("SigIgn:").trim(), 16).unwrap();
    assert_ne!(
        mask & (1 << (17 - 1)),
        0,
        "SIGCHLD not ignored in the command: {ignored}"
    );
}
