//! The bad-input matrix: malformed refs, scopes, keys, values, options and
//! config files. Every case gets its own clear one-line error (exit 2 for
//! usage, 1 otherwise), no panic, and changes nothing. The mount's path
//! cases are in `mountd/tests/write.rs`, the policy cases in
//! `mountd/src/policy.rs`.

use std::fs;

use crate::util::Sandbox;

struct Case {
    args: Vec<String>,
    stdin: Vec<u8>,
    code: i32,
    needle: String,
}

fn case(args: &[&str], stdin: &[u8], code: i32, needle: &str) -> Case {
    Case {
        args: args.iter().map(|s| s.to_string()).collect(),
        stdin: stdin.to_vec(),
        code,
        needle: needle.to_owned(),
    }
}

const BAD_REFS: &[(&str, &str)] = &[
    ("", "invalid ref"),
    ("global", "invalid ref"),
    ("global/", "must not be empty"),
    ("/k", "invalid scope"),
    ("global/UPPER", "only a-z"),
    ("global/Mixed_case", "only a-z"),
    ("global/..", "reserved"),
    ("global/.", "reserved"),
    ("global/a/b", "only a-z"),
    ("global/a b", "only a-z"),
    ("global/ k", "only a-z"),
    ("global/k ", "only a-z"),
    ("global/k\t", "only a-z"),
    ("global/k\n", "only a-z"),
    ("global/ключ", "only a-z"),
    ("global/k$", "only a-z"),
    ("global/k*", "only a-z"),
    ("principal:/k", "must not be empty"),
    ("principal:../k", "reserved"),
    ("principal:a b/k", "only A-Z"),
    ("principal:a:b/k", "only A-Z"),
    ("session:s!/k", "only A-Z"),
    ("team:x/k", "invalid scope"),
    ("Global/k", "invalid scope"),
    ("global:x/k", "invalid scope"),
    ("principal/k", "invalid scope"),
    ("vault:/global/k", "invalid scope"),
    ("vault://", "invalid ref"),
];

fn matrix(sb: &Sandbox) -> Vec<Case> {
    let mut cases = Vec::new();
    let long_key = format!("global/{}", "k".repeat(129));
    let long_id = format!("session:{}/k", "i".repeat(129));
    let mut refs: Vec<(String, &str)> = BAD_REFS.iter().map(|(r, n)| (r.to_string(), *n)).collect();
    refs.push((long_key, "longer than 128 bytes"));
    refs.push((long_id, "longer than 128 bytes"));
    for (r, needle) in &refs {
        for cmd in ["set", "get", "delete"] {
            cases.push(case(&[cmd, r], b"value", 2, needle));
        }
    }
    for scope in [
        "principal",
        "principal:",
        "session:..",
        "global:x",
        "nope",
        "GLOBAL",
        "session:a/b",
    ] {
        cases.push(case(&["list", scope], b"", 2, "invalid"));
    }
    // Values.
    cases.push(case(&["set", "global/v"], b"", 1, "empty value"));
    cases.push(case(
        &["set", "global/v"],
        &vec![b'x'; 65_537],
        1,
        "over the limit of 65536 bytes",
    ));
    cases.push(case(
        &["--max-value-size", "3", "set", "global/v"],
        b"four",
        1,
        "over the limit of 3 bytes",
    ));
    cases.push(case(
        &["set", "global/v", "--generate", "0"],
        b"",
        2,
        "--generate",
    ));
    cases.push(case(
        &["set", "global/v", "--generate", "99999999999"],
        b"",
        2,
        "--generate",
    ));
    cases.push(case(
        &["set", "global/v", "--from-file", "/nonexistent/file"],
        b"",
        1,
        "cannot open /nonexistent/file",
    ));
    cases.push(case(
        &["set", "global/v", "--from-file", "."],
        b"",
        1,
        "cannot read .",
    ));
    cases.push(case(
        &["set", "global/v", "hunter2"],
        b"",
        2,
        "never from an argument",
    ));
    cases.push(case(
        &["set", "global/v", "--", "-hunter2"],
        b"",
        2,
        "never from an argument",
    ));
    // Options.
    cases.push(case(
        &["--backend", "nope", "list"],
        b"",
        2,
        "unknown backend",
    ));
    cases.push(case(
        &["--max-value-size", "-1", "list"],
        b"",
        2,
        "unexpected argument '-1'",
    ));
    cases.push(case(
        &["--max-value-size", "lots", "list"],
        b"",
        2,
        "--max-value-size",
    ));
    cases.push(case(
        &["--keystore-timeout", "0", "list"],
        b"",
        2,
        "seconds",
    ));
    cases.push(case(
        &["migrate", "--to", "nope"],
        b"",
        2,
        "unknown backend",
    ));
    cases.push(case(&["frobnicate"], b"", 2, "unrecognized subcommand"));
    // Config files for configure and audit.
    let write = |name: &str, text: &[u8]| {
        fs::write(sb.path().join(name), text).unwrap();
        name.to_owned()
    };
    let invalid_toml = write("invalid.toml", b"a = = 1\n");
    let not_utf8 = write("binary.toml", b"a_vault_ref = \"global/a\"\n\xff\xfe\n");
    let deep = write(
        "deep.toml",
        format!("x = {}{}\n", "[".repeat(5000), "]".repeat(5000)).as_bytes(),
    );
    let deep_tables = write(
        "deep2.toml",
        format!("{} = 1\n", vec!["a"; 3000].join(".")).as_bytes(),
    );
    let unclosed = write("unclosed.toml", b"[table\n");
    let dup = write("dup.toml", b"a = 1\na = 2\n");
    // Each broken file gets its own reason, naming the file; none of them
    // is rewritten (checked byte for byte at the end).
    let bad_files = [
        (&invalid_toml, " is not valid TOML: extra `=`"),
        (&not_utf8, ": stream did not contain valid UTF-8"),
        (&deep, " is not valid TOML: cannot recurse further"),
        (&deep_tables, " is not valid TOML: recursion limit"),
        (&unclosed, " is not valid TOML: unclosed table"),
        (&dup, " is not valid TOML: duplicate key"),
    ];
    for (file, reason) in bad_files {
        let needle = format!("{file}{reason}");
        cases.push(case(&["audit", "--config", file], b"", 1, &needle));
        cases.push(case(
            &["configure", "--config", file, "a_vault_ref", "global/a"],
            b"secret",
            1,
            &needle,
        ));
    }
    cases.push(case(
        &["audit", "--config", "/nonexistent.toml"],
        b"",
        1,
        "cannot read config",
    ));
    let ok = write("ok.toml", b"x = 1\n");
    for (field, needle) in [
        ("", "invalid field name"),
        ("no_suffix", "invalid field name"),
        ("a..b_vault_ref", "invalid field name"),
        (".a_vault_ref", "invalid field name"),
        ("a.\"b\"_vault_ref", "invalid field name"),
        ("x.k_vault_ref", "is not a table"),
        ("_vault_ref", "invalid field name"),
    ] {
        cases.push(case(
            &["configure", "--config", &ok, field, "global/a"],
            b"secret",
            1,
            needle,
        ));
    }
    cases.push(case(
        &["configure", "--config", &ok, "a_vault_ref", "global/A"],
        b"secret",
        2,
        "invalid secret key",
    ));
    cases.push(case(
        &["configure", "--config", &ok, "a_vault_ref", "global/a"],
        b"",
        1,
        "empty value",
    ));
    cases
}

#[test]
fn over_a_hundred_malformed_inputs_each_get_a_clear_error_and_change_nothing() {
    let sb = Sandbox::new();
    sb.set("global/keep", b"kept");
    let cases = matrix(&sb);
    assert!(cases.len() >= 100, "only {} cases", cases.len());
    // Every config file, good and broken, byte for byte.
    let configs_before: Vec<(std::path::PathBuf, Vec<u8>)> = fs::read_dir(sb.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| {
            let bytes = fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    assert_eq!(configs_before.len(), 7, "{configs_before:?}");
    let list_before = sb.run(&["list", "--json"], b"").ok().stdout;
    for c in &cases {
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        let out = sb.run(&args, &c.stdin);
        assert_eq!(out.code, Some(c.code), "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains(&c.needle),
            "{args:?}: {:?} lacks {:?}",
            out.stderr,
            c.needle
        );
        assert!(
            !out.stderr.contains("panicked") && !out.stderr.contains("RUST_BACKTRACE"),
            "{args:?}"
        );
        let first = out.stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("sealfs: ") || first.starts_with("error: "),
            "{args:?}: {}",
            out.stderr
        );
        if c.code == 1 {
            assert_eq!(
                out.stderr.trim_end().lines().count(),
                1,
                "{args:?}: one line: {}",
                out.stderr
            );
        }
        assert!(
            !out.stderr.contains("hunter2") && !out.stderr.contains("secret\n"),
            "{args:?}"
        );
    }
    assert_eq!(
        sb.run(&["list", "--json"], b"").ok().stdout,
        list_before,
        "nothing changed"
    );
    assert_eq!(sb.get("global/keep"), b"kept");
    for (file, before) in &configs_before {
        assert_eq!(
            &fs::read(file).unwrap(),
            before,
            "{} changed",
            file.display()
        );
    }
    eprintln!("bad-input matrix: {} cases", cases.len());
}

#[test]
fn values_of_any_bytes_are_fine() {
    // Binary and invalid UTF-8 are values like any other: stored, not rejected.
    let sb = Sandbox::new();
    for (i, v) in [
        &b"\xff\xfe\x00"[..],
        b"\x00",
        b"\xc3\x28",
        b"\r\n",
        &[0x80; 100],
    ]
    .iter()
    .enumerate()
    {
        sb.set(&format!("global/v{i}"), v);
        assert_eq!(sb.get(&format!("global/v{i}")), *v);
    }
}
