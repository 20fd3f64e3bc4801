//! `configure` and `audit`, and the library's config resolution, on real
//! TOML files.

use std::fs;

use sealfs::config::{resolve_config_refs, ConfigError};

use crate::util::Sandbox;

const COMMENTED: &str = r#"# sealfs test config -- keep this comment
title = "demo"   # inline comment

[model_provider]
# which provider
name = "openai"
openai_api_key_vault_ref = "global/old_key" # rotated by ops
timeout_secs = 30

[[servers]]
host = "db1"   # primary
"#;

#[test]
fn configure_keeps_comments_and_other_fields_byte_identical() {
    let sb = Sandbox::new();
    let cfg = sb.path().join("app.toml");
    fs::write(&cfg, COMMENTED).unwrap();
    sb.run(
        &[
            "configure",
            "--config",
            "app.toml",
            "model_provider.openai_api_key_vault_ref",
            "global/openai_api_key",
        ],
        b"sk-live-123",
    )
    .ok();
    let after = fs::read_to_string(&cfg).unwrap();
    assert_eq!(
        after,
        COMMENTED.replace("global/old_key", "global/openai_api_key")
    );
    assert!(!after.contains("sk-live-123"));
    assert_eq!(sb.get("global/openai_api_key"), b"sk-live-123");

    let audit = sb
        .run(&["audit", "--config", "app.toml"], b"")
        .ok()
        .stdout_str();
    assert_eq!(
        audit,
        "model_provider.openai_api_key_vault_ref\tglobal/openai_api_key\tresolved\n"
    );

    // A new field in a new table is appended; everything before stays put.
    sb.run(
        &[
            "configure",
            "--config",
            "app.toml",
            "db.password_vault_ref",
            "principal:svc/db",
        ],
        b"pw",
    )
    .ok();
    let after2 = fs::read_to_string(&cfg).unwrap();
    assert!(after2.starts_with(&after), "{after2}");
    assert!(
        after2.contains("[db]\npassword_vault_ref = \"principal:svc/db\"\n"),
        "{after2}"
    );
    let json: serde_json::Value = serde_json::from_slice(
        &sb.run(&["audit", "--config", "app.toml", "--json"], b"")
            .ok()
            .stdout,
    )
    .unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);
    assert!(json
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["status"] == "resolved"));
}

#[test]
fn configure_creates_a_missing_file_and_keeps_the_mode() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new();
    sb.run(
        &[
            "configure",
            "--config",
            "new.toml",
            "api_vault_ref",
            "global/api",
        ],
        b"v",
    )
    .ok();
    assert_eq!(
        fs::read_to_string(sb.path().join("new.toml")).unwrap(),
        "api_vault_ref = \"global/api\"\n"
    );
    let cfg = sb.path().join("shared.toml");
    fs::write(&cfg, "x = 1\n").unwrap();
    fs::set_permissions(&cfg, fs::Permissions::from_mode(0o644)).unwrap();
    sb.run(
        &[
            "configure",
            "--config",
            "shared.toml",
            "a_vault_ref",
            "global/a",
        ],
        b"v",
    )
    .ok();
    assert_eq!(
        fs::metadata(&cfg).unwrap().permissions().mode() & 0o777,
        0o644
    );
    // A symlinked config keeps being a symlink; its target is rewritten.
    std::os::unix::fs::symlink("shared.toml", sb.path().join("link.toml")).unwrap();
    sb.run(
        &[
            "configure",
            "--config",
            "link.toml",
            "b_vault_ref",
            "global/b",
        ],
        b"v",
    )
    .ok();
    assert!(fs::symlink_metadata(sb.path().join("link.toml"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(fs::read_to_string(&cfg).unwrap().contains("b_vault_ref"));
}

#[test]
fn configure_with_bad_input_changes_nothing() {
    let sb = Sandbox::new();
    let cfg = sb.path().join("app.toml");
    let invalid = "this is = = not toml\n";
    fs::write(&cfg, invalid).unwrap();
    sb.run(
        &[
            "configure",
            "--config",
            "app.toml",
            "a_vault_ref",
            "global/a",
        ],
        b"secret",
    )
    .fails(1, "not valid TOML");
    assert_eq!(fs::read_to_string(&cfg).unwrap(), invalid);
    assert!(
        !sb.vault_dir().exists(),
        "no secret may be stored when the config is invalid"
    );

    sb.run(
        &[
            "configure",
            "--config",
            "no/such/dir/app.toml",
            "a_vault_ref",
            "global/a",
        ],
        b"secret",
    )
    .fails(1, "cannot read config");
    assert!(!sb.vault_dir().exists());

    fs::write(&cfg, "scalar = 1\n").unwrap();
    for (field, needle) in [
        ("scalar.a_vault_ref", "is not a table"),
        ("plain_field", "invalid field name"),
        ("a..b_vault_ref", "invalid field name"),
    ] {
        sb.run(
            &["configure", "--config", "app.toml", field, "global/a"],
            b"secret",
        )
        .fails(1, needle);
    }
    sb.run(
        &[
            "configure",
            "--config",
            "app.toml",
            "a_vault_ref",
            "global/BAD",
        ],
        b"secret",
    )
    .fails(2, "invalid secret key");
    sb.run(
        &[
            "configure",
            "--config",
            "app.toml",
            "a_vault_ref",
            "global/a",
        ],
        b"",
    )
    .fails(1, "empty value");
    assert_eq!(fs::read_to_string(&cfg).unwrap(), "scalar = 1\n");
    assert!(!sb.vault_dir().exists());
}

#[test]
fn audit_reports_missing_and_invalid_without_showing_values() {
    let sb = Sandbox::new();
    sb.set("global/present", b"v");
    let cfg = sb.path().join("app.toml");
    fs::write(
        &cfg,
        r#"ok_vault_ref = "global/present"
gone_vault_ref = "vault://global/absent"
[nested.deeper]
raw_vault_ref = "sk-RAW-SECRET-PASTED-BY-MISTAKE"
number_vault_ref = 7
not_a_ref = "ignored"
"#,
    )
    .unwrap();
    let out = sb.run(&["audit", "--config", "app.toml"], b"");
    assert_eq!(out.code, Some(3), "found problems: exit 3");
    let text = out.stdout_str();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(lines[0], "ok_vault_ref\tglobal/present\tresolved");
    assert_eq!(lines[1], "gone_vault_ref\tglobal/absent\tmissing");
    assert!(
        lines[2].starts_with("nested.deeper.raw_vault_ref\t-\tinvalid\t"),
        "{text}"
    );
    assert!(
        lines[3].starts_with(
            "nested.deeper.number_vault_ref\t-\tinvalid\texpected a string ref, found integer"
        ),
        "{text}"
    );
    assert!(!text.contains("sk-RAW") && !out.stderr.contains("sk-RAW"));

    sb.run(&["audit", "--config", "missing.toml"], b"")
        .fails(1, "cannot read config");
    fs::write(sb.path().join("bad.toml"), "[unclosed\n").unwrap();
    sb.run(&["audit", "--config", "bad.toml"], b"")
        .fails(1, "not valid TOML");
}

#[test]
fn library_resolves_refs_at_any_depth_and_names_the_failing_field() {
    let sb = Sandbox::new();
    sb.set("global/a", b"value-a");
    sb.set("session:s1/b", b"value-b");
    let cfg = sb.path().join("app.toml");
    fs::write(
        &cfg,
        "a_vault_ref = \"global/a\"\n[x]\nlist = [{ b_vault_ref = \"session:s1/b\" }]\n",
    )
    .unwrap();
    let vault = sb.vault();
    let resolved = resolve_config_refs(&vault, &cfg).unwrap();
    assert_eq!(resolved.len(), 2);
    assert_eq!(resolved[1].field, "x.list[0].b_vault_ref");
    assert_eq!(resolved[1].value.expose(), b"value-b");

    fs::write(&cfg, "[deep]\nmissing_vault_ref = \"global/nope\"\n").unwrap();
    match resolve_config_refs(&vault, &cfg) {
        Err(e @ ConfigError::Resolve { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("deep.missing_vault_ref") && msg.contains("global/nope"),
                "{msg}"
            );
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("resolved a missing ref"),
    }
    fs::write(&cfg, "bad_vault_ref = \"Global/x\"\n").unwrap();
    let msg = resolve_config_refs(&vault, &cfg).err().unwrap().to_string();
    assert!(
        msg.contains("bad_vault_ref") && !msg.contains("Global/x"),
        "{msg}"
    );
}

const PLAINTEXT: &str = r#"# app config -- keep this comment
title = "demo"   # inline comment

[model_provider]
name = "openai"
# the key, in the clear (for now)
openai_api_key = "sk-plain-openai"   # trailing comment
timeout_secs = 30

[database]
host = "db.internal"
password = 'hunter2-plain'
pool = { size = 4, auth_token = "tok-plain-123" }
empty_secret = ""
"#;

#[test]
fn import_moves_plaintext_out_byte_identical_otherwise_and_reruns_change_nothing() {
    let sb = Sandbox::new();
    let path = sb.path().join("app.toml");
    fs::write(&path, PLAINTEXT).unwrap();
    let p = path.to_str().unwrap();

    // A dry run names fields and refs, never values, and changes nothing.
    let dry = sb.run(&["import", "--config", p, "--dry-run"], b"").ok();
    assert_eq!(
        dry.stdout_str(),
        "model_provider.openai_api_key\tglobal/model_provider.openai_api_key\n\
         database.password\tglobal/database.password\n\
         database.pool.auth_token\tglobal/database.pool.auth_token\n"
    );
    assert!(!dry.stdout_str().contains("plain") && !dry.stderr.contains("plain"));
    assert_eq!(fs::read_to_string(&path).unwrap(), PLAINTEXT);
    assert!(sb.vault().list(None).unwrap().is_empty());

    // A ref that holds another value stops it before anything changes.
    sb.set("global/database.password", b"someone else's");
    sb.run(&["import", "--config", p], b"").fails(
        1,
        "global/database.password holds another value already; nothing was changed",
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), PLAINTEXT);
    assert_eq!(sb.vault().list(None).unwrap().len(), 1);
    sb.run(&["delete", "global/database.password", "--purge"], b"")
        .ok();

    sb.run(&["import", "--config", p], b"").ok();
    let expected = PLAINTEXT
        .replace(
            r#"openai_api_key = "sk-plain-openai""#,
            r#"openai_api_key_vault_ref = "global/model_provider.openai_api_key""#,
        )
        .replace(
            "password = 'hunter2-plain'",
            r#"password_vault_ref = "global/database.password""#,
        )
        .replace(
            r#"auth_token = "tok-plain-123""#,
            r#"auth_token_vault_ref = "global/database.pool.auth_token""#,
        );
    assert_eq!(fs::read_to_string(&path).unwrap(), expected);
    assert_eq!(
        sb.get("global/model_provider.openai_api_key"),
        b"sk-plain-openai"
    );
    assert_eq!(sb.get("global/database.password"), b"hunter2-plain");
    assert_eq!(sb.get("global/database.pool.auth_token"), b"tok-plain-123");
    // The file resolves through the vault, and a re-run changes nothing.
    sb.run(&["audit", "--config", p], b"").ok();
    let versions: Vec<u64> = sb
        .vault()
        .list(None)
        .unwrap()
        .iter()
        .map(|e| e.version)
        .collect();
    sb.run(&["import", "--config", p], b"").ok();
    assert_eq!(fs::read_to_string(&path).unwrap(), expected);
    let again: Vec<u64> = sb
        .vault()
        .list(None)
        .unwrap()
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, again);
    let log = sb.run(&["audit-log", "--json"], b"").ok().stdout_str();
    assert_eq!(log.matches(r#""op":"import""#).count(), 3, "{log}");
    assert!(!log.contains("plain"));
}

#[test]
fn import_of_chosen_fields_into_a_scope() {
    let sb = Sandbox::new();
    let path = sb.path().join("app.toml");
    fs::write(&path, PLAINTEXT).unwrap();
    let p = path.to_str().unwrap();
    sb.run(
        &[
            "import",
            "--config",
            p,
            "--scope",
            "principal:app",
            "--field",
            "database.host",
        ],
        b"",
    )
    .ok();
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        PLAINTEXT.replace(
            r#"host = "db.internal""#,
            r#"host_vault_ref = "principal:app/database.host""#
        )
    );
    assert_eq!(sb.get("principal:app/database.host"), b"db.internal");
    sb.run(&["import", "--config", "missing.toml"], b"")
        .fails(1, "cannot read config missing.toml");
    sb.run(&["import", "--config", p, "--scope", "bad scope"], b"")
        .fails(2, "invalid value");
}
