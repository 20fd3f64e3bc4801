//! The CLI's contract: byte-exact values, listing, deleting, limits, and
//! clear errors for bad input that change nothing.

use crate::util::Sandbox;

#[test]
fn binary_and_multiline_values_round_trip_byte_exact() {
    let sb = Sandbox::new();
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let cases: [(&str, &[u8]); 6] = [
        ("global/multi", b"line one\nline two\n"),
        ("global/no-newline", b"sk-abc"),
        ("global/crlf", b"a\r\nb\r\n\r\n"),
        ("principal:alice@example.com/binary", &all_bytes),
        ("session:run-42/nuls", b"\0\0\0"),
        ("global/trailing.space", b"  padded  \n"),
    ];
    for (r, v) in cases {
        sb.set(r, v);
    }
    for (r, v) in cases {
        assert_eq!(sb.get(r), v, "{r}");
    }
    // vault:// refs address the same secret.
    assert_eq!(
        sb.run(&["get", "vault://global/multi"], b"").ok().stdout,
        b"line one\nline two\n"
    );
}

#[test]
fn list_shows_refs_lengths_and_times_never_values() {
    let sb = Sandbox::new();
    sb.set("global/b", b"secret-value-1");
    sb.set("global/a", b"xy");
    sb.set("principal:alice/token", b"secret-value-2");
    let all = sb.run(&["list"], b"").ok().stdout_str();
    let refs: Vec<&str> = all.lines().map(|l| l.split('\t').next().unwrap()).collect();
    assert_eq!(refs, ["global/a", "global/b", "principal:alice/token"]);
    assert!(
        all.lines().next().unwrap().starts_with("global/a\t2\t20"),
        "{all}"
    );
    assert!(!all.contains("secret-value"));

    let only = sb.run(&["list", "principal:alice"], b"").ok().stdout_str();
    assert_eq!(only.lines().count(), 1);

    let json: serde_json::Value =
        serde_json::from_slice(&sb.run(&["list", "--json"], b"").ok().stdout).unwrap();
    let first = &json.as_array().unwrap()[0];
    assert_eq!(first["ref"], "global/a");
    assert_eq!(first["length"], 2);
    assert_eq!(first["version"], 1);
    assert!(first["updated"].as_str().unwrap().ends_with('Z'));
    assert!(!json.to_string().contains("secret-value"));
}

#[test]
fn overwrite_bumps_version_and_keeps_created() {
    let sb = Sandbox::new();
    sb.set("global/k", b"one");
    let before = sb
        .vault()
        .entry(&"global/k".parse().unwrap())
        .unwrap()
        .unwrap();
    sb.set("global/k", b"two");
    let after = sb
        .vault()
        .entry(&"global/k".parse().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(sb.get("global/k"), b"two");
    assert_eq!((before.version, after.version), (1, 2));
    assert_eq!(before.created, after.created);
    assert!(after.updated >= before.updated);
}

#[test]
fn delete_removes_and_missing_is_an_error_unless_forced() {
    let sb = Sandbox::new();
    sb.set("global/k", b"v");
    sb.run(&["delete", "global/k"], b"").ok();
    sb.run(&["get", "global/k"], b"")
        .fails(1, "secret not found: global/k");
    sb.run(&["delete", "global/k"], b"")
        .fails(1, "secret not found: global/k");
    sb.run(&["delete", "--force", "global/k"], b"").ok();
    assert_eq!(sb.run(&["list"], b"").ok().stdout, b"");
    // A re-created secret continues the version sequence.
    sb.set("global/k", b"again");
    assert_eq!(
        sb.vault()
            .entry(&"global/k".parse().unwrap())
            .unwrap()
            .unwrap()
            .version,
        2
    );
}

#[test]
fn missing_secret_and_missing_vault() {
    let sb = Sandbox::new();
    sb.run(&["get", "global/nope"], b"")
        .fails(1, "secret not found: global/nope");
    assert!(!sb.vault_dir().exists(), "reading must not create a vault");
    assert_eq!(sb.run(&["list"], b"").ok().stdout, b"");
    sb.set("global/other", b"x");
    let r = sb
        .run(&["get", "global/nope"], b"")
        .fails(1, "secret not found: global/nope");
    assert_eq!(r.stdout, b"");
}

#[test]
fn size_limit_is_enforced_exactly_and_configurable() {
    let sb = Sandbox::new();
    let at = vec![b'a'; 64 * 1024];
    sb.set("global/at-limit", &at);
    assert_eq!(sb.get("global/at-limit"), at);
    let over = vec![b'b'; 64 * 1024 + 1];
    sb.run(&["set", "global/over"], &over)
        .fails(1, "over the limit of 65536 bytes");
    sb.run(&["get", "global/over"], b"")
        .fails(1, "secret not found");

    sb.run(&["--max-value-size", "4", "set", "global/small"], b"12345")
        .fails(1, "over the limit of 4 bytes");
    sb.run(&["set", "--max-value-size", "5", "global/small"], b"12345")
        .ok();
    // The environment variable sets the same limit: three bytes are refused
    // over a limit of two, and two bytes fit.
    let with_env_limit = |r: &str, value: &[u8]| {
        let mut child = sb
            .cmd(&["set", r])
            .env("SEALFS_MAX_VALUE_SIZE", "2")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        crate::util::feed(&mut child, value);
        let out = child.wait_with_output().unwrap();
        crate::util::Run {
            code: out.status.code(),
            stdout: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };
    with_env_limit("global/env-small", b"abc").fails(1, "over the limit of 2 bytes");
    sb.run(&["get", "global/env-small"], b"")
        .fails(1, "secret not found: global/env-small");
    with_env_limit("global/env-small", b"ab").ok();
    assert_eq!(sb.get("global/env-small"), b"ab");
    sb.run(&["--max-value-size", "0", "list"], b"")
        .fails(2, "--max-value-size");
}

#[test]
fn empty_values_are_rejected() {
    let sb = Sandbox::new();
    sb.run(&["set", "global/empty"], b"")
        .fails(1, "refusing to store an empty value for global/empty");
    std::fs::write(sb.path().join("empty"), b"").unwrap();
    sb.run(&["set", "global/empty", "--from-file", "empty"], b"")
        .fails(1, "empty value");
    sb.run(&["list"], b"").ok();
    sb.run(&["get", "global/empty"], b"")
        .fails(1, "secret not found");
}

#[test]
fn invalid_refs_and_scopes_are_usage_errors() {
    let sb = Sandbox::new();
    sb.set("global/keep", b"kept");
    let bad = [
        ("", "invalid ref"),
        ("global", "invalid ref"),
        ("global/", "must not be empty"),
        ("global/UPPER", "only a-z 0-9 . _ - are allowed"),
        ("global/..", "reserved"),
        ("global/.", "reserved"),
        ("global/a/b", "only a-z"),
        ("global/ key", "only a-z"),
        ("global/key ", "only a-z"),
        ("global/tab\t", "\\t"),
        ("principal:/k", "must not be empty"),
        ("principal:../k", "reserved"),
        ("principal:a b/k", "only A-Z"),
        ("team:x/k", "invalid scope"),
        ("Global/k", "invalid scope"),
        ("vault:/global/k", "invalid scope"),
    ];
    let long_key = format!("global/{}", "k".repeat(129));
    let long_id = format!("session:{}/k", "i".repeat(129));
    let mut cases: Vec<(&str, &str)> = bad.to_vec();
    cases.push((&long_key, "longer than 128 bytes"));
    cases.push((&long_id, "longer than 128 bytes"));
    for (r, needle) in cases {
        for args in [vec!["set", r], vec!["get", r], vec!["delete", r]] {
            sb.run(&args, b"value").fails(2, needle);
        }
    }
    for scope in ["principal", "principal:", "session:..", "global:x", "nope"] {
        sb.run(&["list", scope], b"").fails(2, "invalid");
    }
    // Nothing changed.
    assert_eq!(sb.run(&["list"], b"").ok().stdout_str().lines().count(), 1);
    assert_eq!(sb.get("global/keep"), b"kept");
}

#[test]
fn a_value_is_never_accepted_as_an_argument() {
    let sb = Sandbox::new();
    let out = sb
        .run(&["set", "global/k", "hunter2"], b"")
        .fails(2, "never from an argument");
    assert!(
        !out.stderr.contains("hunter2"),
        "the value is not echoed: {}",
        out.stderr
    );
    sb.run(&["get", "global/k"], b"")
        .fails(1, "secret not found");
}

#[test]
fn from_file_and_generate() {
    let sb = Sandbox::new();
    std::fs::write(sb.path().join("value.bin"), b"from\x00file\n").unwrap();
    sb.run(&["set", "global/f", "--from-file", "value.bin"], b"ignored")
        .ok();
    assert_eq!(sb.get("global/f"), b"from\x00file\n");
    sb.run(&["set", "global/f2", "--from-file", "missing.bin"], b"")
        .fails(1, "missing.bin");

    sb.run(&["set", "global/gen", "--generate", "32"], b"").ok();
    let v = sb.get("global/gen");
    assert_eq!(v.len(), 43, "32 bytes are 43 base64url characters");
    assert!(v
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_'));
    sb.run(&["set", "global/gen2", "--generate", "32"], b"")
        .ok();
    assert_ne!(sb.get("global/gen2"), v);
    sb.run(&["set", "global/g", "--generate", "0"], b"")
        .fails(2, "--generate");
    sb.run(&["set", "global/g", "--generate", "60000"], b"")
        .fails(1, "over the limit");
    sb.run(
        &[
            "set",
            "global/g",
            "--generate",
            "4",
            "--from-file",
            "value.bin",
        ],
        b"",
    )
    .fails(2, "cannot be used with");
}

#[test]
fn backend_flag_is_checked_and_recorded_choice_is_enforced() {
    let sb = Sandbox::new();
    sb.run(&["--backend", "nonsense", "list"], b"")
        .fails(2, "unknown backend \"nonsense\"");
    sb.run(&["--backend", "encrypted-file", "set", "global/k"], b"v")
        .ok();
    sb.run(&["--backend", "auto", "get", "global/k"], b"").ok();
    // A vault recorded with another backend is not silently opened with this one.
    sb.index_exec("UPDATE meta SET value = 'etcd' WHERE name = 'backend'");
    sb.run(&["--backend", "encrypted-file", "get", "global/k"], b"")
        .fails(
            1,
            "uses backend `etcd`, which this build of sealfs does not support",
        );
}

#[test]
fn doctor_reports_backend_permissions_and_fuse() {
    let sb = Sandbox::new();
    let fresh = sb.run(&["doctor"], b"").ok().stdout_str();
    assert!(fresh.contains("no vault yet"), "{fresh}");
    sb.set("global/k", b"v");
    let out = sb.run(&["doctor"], b"").ok().stdout_str();
    assert!(out.contains("backend: encrypted-file"), "{out}");
    assert!(out.contains("owner-only"), "{out}");
    assert!(out.lines().any(|l| l.contains("fuse:")), "{out}");
    assert!(out.contains("allow-other:"), "{out}");
    use std::os::unix::fs::PermissionsExt;
    let blob = sb.blob_path("global/k");
    std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o644)).unwrap();
    let bad = sb.run(&["doctor"], b"");
    assert_eq!(bad.code, Some(3), "found problems: exit 3");
    assert!(
        bad.stdout_str().contains("mode 0644"),
        "{}",
        bad.stdout_str()
    );
}

#[test]
fn broken_pipe_on_stdout_is_not_an_error() {
    let sb = Sandbox::new();
    // Far over a pipe's 64 KiB buffer, so sealfs is still writing when
    // head exits and the write really meets EPIPE.
    sb.run(
        &["--max-value-size", "2000000", "set", "global/big"],
        &vec![b'x'; 1_000_000],
    )
    .ok();
    let out = std::process::Command::new("bash")
        .arg("-c")
        // The pipeline's status is sealfs's own, not head's.
        .arg(format!(
            "'{}' get global/big | head -c 3; exit ${{PIPESTATUS[0]}}",
            crate::util::BIN
        ))
        .env("SEALFS_VAULT_DIR", sb.vault_dir())
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"xxx");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_eq!(out.status.code(), Some(0), "sealfs's own exit status");
}

#[test]
fn read_once_and_the_audit_log() {
    let sb = Sandbox::new();
    sb.run(&["set", "--once", "global/otp"], b"123456").ok();
    let json: serde_json::Value =
        serde_json::from_slice(&sb.run(&["list", "--json"], b"").ok().stdout).unwrap();
    assert_eq!(json[0]["once"], true);
    assert_eq!(sb.get("global/otp"), b"123456");
    sb.run(&["get", "global/otp"], b"")
        .fails(1, "secret not found: global/otp");
    let log = sb.run(&["audit-log"], b"").ok().stdout_str();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 3, "{log}");
    assert!(
        lines[0].contains(" set ") && lines[0].contains("global/otp") && lines[0].ends_with("ok"),
        "{log}"
    );
    assert!(
        lines[1].contains(" consume ") && lines[1].contains("uid="),
        "{log}"
    );
    assert!(
        lines[2].contains(" get ") && lines[2].contains("error (not found)"),
        "{log}"
    );
    assert!(!log.contains("123456"));
    let json = sb.run(&["audit-log", "--json"], b"").ok().stdout_str();
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(first["source"], "cli");
    assert_eq!(first["op"], "set");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(sb.path().join("audit.log"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        !sb.vault_dir().join("audit.log").exists(),
        "the audit log is kept beside the vault directory, not in it"
    );
}

#[test]
fn mount_runs_the_mount_daemon() {
    let sb = Sandbox::new();
    let daemon = std::path::Path::new(crate::util::BIN).with_file_name("sealfs-mountd");
    if !daemon.is_file() {
        // Built by `cargo test --workspace`, which is what scripts/test.sh runs.
        crate::util::missing("sealfs-mountd built beside sealfs (cargo test --workspace)");
        return;
    }
    let out = sb.run(&["mount", "--help"], b"").ok().stdout_str();
    assert!(
        out.contains("sealfs-mountd") && out.contains("--allow-other"),
        "{out}"
    );
    sb.run(&["mount", "/nonexistent/mountpoint"], b"")
        .fails(1, "/nonexistent/mountpoint");
}

#[test]
fn audit_log_follow_prints_new_entries() {
    use std::io::BufRead;
    let sb = Sandbox::new();
    sb.set("global/first", b"1");
    let mut child = sb
        .cmd(&["audit-log", "--follow"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let wait = std::time::Duration::from_secs(10);
    assert!(rx.recv_timeout(wait).unwrap().contains("global/first"));
    sb.set("global/second", b"2");
    let next = rx.recv_timeout(wait).unwrap();
    assert!(
        next.contains("set") && next.contains("global/second"),
        "{next}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// `set --if-absent` and `--if-version N` store only when the slot is as
/// expected, and otherwise change nothing and say why.
#[test]
fn set_if_absent_and_if_version_store_only_when_the_slot_is_as_expected() {
    let sb = Sandbox::new();
    sb.run(&["set", "global/k", "--if-absent"], b"first").ok();
    sb.run(&["set", "global/k", "--if-absent"], b"second").fails(
        1,
        "refusing to store global/k: it exists already, at version 1 (--if-absent); nothing was stored",
    );
    assert_eq!(sb.run(&["get", "global/k"], b"").ok().stdout, b"first");
    sb.run(&["set", "global/k", "--if-version", "7"], b"x")
        .fails(1, "it is at version 1, not 7 (--if-version)");
    sb.run(&["set", "global/k", "--if-version", "1"], b"third")
        .ok();
    assert_eq!(sb.run(&["get", "global/k"], b"").ok().stdout, b"third");
    sb.run(&["set", "global/nope", "--if-version", "1"], b"x")
        .fails(1, "it does not exist (--if-version 1)");
    assert!(!sb
        .run(&["list"], b"")
        .ok()
        .stdout_str()
        .contains("global/nope"));
    sb.run(
        &["set", "global/k", "--if-absent", "--if-version", "2"],
        b"x",
    )
    .fails(2, "cannot be used with");
}

#[test]
fn completions_load_in_bash_and_complete_subcommands_and_flags() {
    let sb = Sandbox::new();
    let script = sb.run(&["completions", "bash"], b"").ok().stdout;
    let file = sb.path().join("sealfs.bash");
    std::fs::write(&file, script).unwrap();
    let complete = |words: &str| {
        let mut c = std::process::Command::new("bash");
        c.arg("--norc").arg("-c").arg(format!(
            "source {} && complete -p sealfs >/dev/null && COMP_WORDS=({words}) && \
             COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)) && COMP_LINE=\"${{COMP_WORDS[*]}}\" && \
                          COMP_POINT=${{#COMP_LINE}} && \
             _sealfs sealfs \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\" && \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            file.display()
        ));
        crate::util::run(c, b"").ok().stdout_str()
    };
    let subs = complete("sealfs roll");
    assert_eq!(subs.trim(), "rollback", "{subs}");
    let flags = complete("sealfs delete --pu");
    assert_eq!(flags.trim(), "--purge", "{flags}");
    // The other shells' scripts are produced too; a bad name is a usage error.
    for shell in ["zsh", "fish", "powershell", "elvish"] {
        assert!(!sb.run(&["completions", shell], b"").ok().stdout.is_empty());
    }
    sb.run(&["completions", "tcsh"], b"")
        .fails(2, "invalid value 'tcsh'");
}
