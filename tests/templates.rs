//! Templates from the command line (`sealfs template`) and `.env` files
//! moved into the vault (`sealfs import --env-file`). Through the mount:
//! mountd/tests/templates.rs.

use std::fs;

use crate::util::{assert_nowhere_on_disk, Sandbox};

#[test]
fn templates_are_stored_sealed_listed_rendered_and_deleted() {
    let sb = Sandbox::new();
    sb.set("global/db_password", b"pw-MARKER-1");
    sb.set("principal:alice/token", b" a b \n");
    // A template may hold a secret of its own: sealed like a value.
    let source = "# inline: INLINE-MARKER-9\n*:5432:*:app:{{ global/db_password }}\n\
                  T={{ vault://principal:alice/token | trim | urlencode }} J=\"{{ global/db_password|json }}\"\n";
    sb.run(&["template", "set", "pgpass"], source.as_bytes())
        .ok();
    let list = sb.run(&["template", "list"], b"").ok();
    assert_eq!(
        list.stdout_str(),
        "pgpass\tglobal/db_password principal:alice/token\n"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&sb.run(&["template", "list", "--json"], b"").ok().stdout).unwrap();
    assert_eq!(json[0]["refs"][1], "principal:alice/token");
    assert_eq!(
        sb.run(&["template", "show", "pgpass"], b"")
            .ok()
            .stdout_str(),
        source
    );
    let rendered = sb.run(&["template", "render", "pgpass"], b"").ok();
    assert_eq!(
        rendered.stdout_str(),
        "# inline: INLINE-MARKER-9\n*:5432:*:app:pw-MARKER-1\nT=a%20b J=\"pw-MARKER-1\"\n"
    );
    // A rotation shows in the next rendering.
    sb.set("global/db_password", b"pw-2");
    assert!(sb
        .run(&["template", "render", "pgpass"], b"")
        .ok()
        .stdout_str()
        .contains(":app:pw-2\n"));
    // Nothing of the template or its rendering is on disk in the clear.
    assert_nowhere_on_disk(sb.path(), b"INLINE-MARKER-9");
    assert_nowhere_on_disk(sb.path(), b"pw-MARKER-1");
    // From a file, replacing.
    let file = sb.path().join("t");
    fs::write(&file, "only {{ global/db_password }}").unwrap();
    sb.run(
        &[
            "template",
            "set",
            "pgpass",
            "--from",
            file.to_str().unwrap(),
        ],
        b"",
    )
    .ok();
    assert_eq!(
        sb.run(&["template", "render", "pgpass"], b"")
            .ok()
            .stdout_str(),
        "only pw-2"
    );

    // A missing ref: a one-line error naming it, no partial output.
    let note = sb
        .run(&["template", "set", "gap"], b"a={{ global/nothing }}")
        .ok();
    assert!(
        note.stderr
            .contains("template gap reads global/nothing, which does not exist"),
        "{}",
        note.stderr
    );
    let out = sb.run(&["template", "render", "gap"], b"").fails(
        1,
        "cannot render template gap: global/nothing: missing or expired",
    );
    assert!(out.stdout.is_empty());
    // A read-once secret is refused, not consumed.
    sb.run(&["set", "global/once", "--once"], b"one-time").ok();
    sb.run(&["template", "set", "once"], b"{{ global/once }}")
        .ok();
    sb.run(&["template", "render", "once"], b"")
        .fails(1, "global/once: it is read-once");
    assert_eq!(sb.get("global/once"), b"one-time");

    sb.run(&["template", "delete", "gap"], b"").ok();
    sb.run(&["template", "delete", "gap"], b"")
        .fails(1, "no template gap");
    sb.run(&["template", "render", "gap"], b"")
        .fails(1, "no template gap");
    assert_eq!(
        sb.run(&["template", "list"], b"").ok().stdout_str(),
        "once\tglobal/once\npgpass\tglobal/db_password\n"
    );
    // The secrets it read stay.
    assert_eq!(sb.get("global/db_password"), b"pw-2");
}

#[test]
fn bad_templates_are_refused_with_line_and_column_and_change_nothing() {
    let sb = Sandbox::new();
    sb.run(&["template", "set", "ok"], b"v={{ global/a }}").ok();
    for (source, want) in [
        (&b"line one\n  x={{ global/a"[..], "template ok refused: line 2, column 5: `{{` is never closed with `}}`"),
        (b"{{ sk-live-PASTED }}", "template ok refused: line 1, column 4: invalid ref: expected `<scope>/<key>`"),
        (b"a\nb\n{{ global/a | upper }}", "template ok refused: line 3, column 15: unknown filter (there are: json, base64, urlencode, shell, trim)"),
        (b"{{ principal:sealfs-fleet/etcd_password }}", "line 1, column 4: sealfs's own scopes cannot be named in a template"),
        (b"\xff", "line 1, column 1: the template is not UTF-8 here"),
        (b"", "refusing to store an empty template ok"),
    ] {
        let out = sb.run(&["template", "set", "ok"], source).fails(1, want);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert!(!out.stderr.contains("PASTED"), "{}", out.stderr);
    }
    let big = vec![b'x'; 64 * 1024 + 1];
    sb.run(&["template", "set", "ok"], &big)
        .fails(1, "template ok is over the limit of 65536 bytes");
    sb.run(&["template", "set", "Bad"], b"x")
        .fails(2, "invalid template name: only a-z 0-9 . _ - are allowed");
    // The stored one is untouched.
    assert_eq!(
        sb.run(&["template", "show", "ok"], b"").ok().stdout_str(),
        "v={{ global/a }}"
    );
}

const DOTENV: &str = "# app settings -- keep this comment\r\n\
export DB_PASSWORD='s3cr3t pw'  # the database\n\
API_KEY=sk-ENV-MARKER\n\
\n\
EMPTY=\n\
GREETING=\"hello {{ world }}\"\n";

#[test]
fn an_env_file_becomes_secrets_and_a_template_that_renders_it_byte_for_byte() {
    let sb = Sandbox::new();
    let path = sb.path().join("app.env");
    fs::write(&path, DOTENV).unwrap();
    let p = path.to_str().unwrap();
    let import = |extra: &[&str]| {
        let mut args = vec![
            "import",
            "--env-file",
            p,
            "--template",
            "app.env",
            "--scope",
            "principal:app",
        ];
        args.extend_from_slice(extra);
        sb.run(&args, b"")
    };
    let listing = "DB_PASSWORD\tprincipal:app/db_password\nAPI_KEY\tprincipal:app/api_key\n\
                   GREETING\tprincipal:app/greeting\ntemplate\tapp.env\n";
    // A dry run lists names and refs, never values, and changes nothing.
    let dry = import(&["--dry-run"]).ok();
    assert_eq!(dry.stdout_str(), listing);
    assert!(!dry.stderr.contains("MARKER") && !dry.stdout_str().contains("s3cr3t"));
    assert!(sb.run(&["template", "list"], b"").ok().stdout.is_empty());

    // A ref holding another value stops it before anything is stored.
    sb.set("principal:app/api_key", b"someone else's");
    import(&[]).fails(
        1,
        "principal:app/api_key (from API_KEY) holds another value already; nothing was changed",
    );
    assert_eq!(sb.vault().list(None).unwrap().len(), 1);
    assert!(sb.run(&["template", "list"], b"").ok().stdout.is_empty());
    sb.run(&["delete", "principal:app/api_key", "--purge"], b"")
        .ok();

    assert_eq!(import(&[]).ok().stdout_str(), listing);
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        DOTENV,
        "without --replace the file stays"
    );
    assert_eq!(sb.get("principal:app/db_password"), b"s3cr3t pw");
    assert_eq!(sb.get("principal:app/api_key"), b"sk-ENV-MARKER");
    assert_eq!(sb.get("principal:app/greeting"), b"hello {{ world }}");
    let render = || {
        sb.run(&["template", "render", "app.env"], b"")
            .ok()
            .stdout_str()
    };
    assert_eq!(render(), DOTENV);
    let template = sb
        .run(&["template", "show", "app.env"], b"")
        .ok()
        .stdout_str();
    assert!(
        !template.contains("MARKER") && !template.contains("s3cr3t"),
        "{template}"
    );

    // A re-run changes nothing: no new version of anything.
    let versions = |sb: &Sandbox| -> Vec<u64> {
        sb.vault()
            .list(None)
            .unwrap()
            .iter()
            .map(|e| e.version)
            .collect()
    };
    let before = versions(&sb);
    import(&[]).ok();
    assert_eq!(versions(&sb), before);

    // Another template under that name stops it.
    sb.run(&["template", "set", "other"], b"x").ok();
    sb.run(
        &[
            "import",
            "--env-file",
            p,
            "--template",
            "other",
            "--scope",
            "principal:app",
        ],
        b"",
    )
    .fails(
        1,
        "template other exists with other content; nothing was changed",
    );

    // A value that was single-quoted stays one shell word whatever is
    // written to it later.
    assert!(
        template.contains("export DB_PASSWORD={{ principal:app/db_password | shell }}"),
        "{template}"
    );
    sb.set("principal:app/db_password", b"x'; echo INJECTED; '");
    let sourced = std::process::Command::new("sh")
        .args([
            "-c",
            &format!("{}\nprintf %s \"$DB_PASSWORD\"", render().replace('\r', "")),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&sourced.stdout),
        "x'; echo INJECTED; '"
    );
    sb.set("principal:app/db_password", b"s3cr3t pw");

    // --replace refuses a file with other names, which would show zeros.
    let other = sb.path().join("other-name.env");
    fs::hard_link(&path, &other).unwrap();
    import(&["--replace"]).fails(1, "it has other names (hard links)");
    assert_eq!(fs::read_to_string(&path).unwrap(), DOTENV);
    fs::remove_file(&other).unwrap();

    // --replace: the file goes, once the template renders it.
    let out = import(&["--replace"]).ok();
    assert!(
        out.stderr
            .contains("it is now <mountpoint>/templates/app.env"),
        "{}",
        out.stderr
    );
    assert!(!path.exists());
    assert_eq!(render(), DOTENV);
    assert_nowhere_on_disk(sb.path(), b"sk-ENV-MARKER");

    // Bad files: one line naming the line, nothing stored.
    for (text, want) in [
        (
            "A=1\nthis is not a variable\n",
            "line 2: expected NAME=value, a comment or a blank line",
        ),
        (
            "A=\"unterminated\n",
            "line 1: a quoted value must end on its own line",
        ),
        (
            "A=1\na=2\n",
            "line 2: this variable (or one differing only in case) is set twice",
        ),
    ] {
        fs::write(&path, text).unwrap();
        let out = sb
            .run(
                &[
                    "import",
                    "--env-file",
                    p,
                    "--template",
                    "bad",
                    "--scope",
                    "session:none",
                ],
                b"",
            )
            .fails(1, want);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    }
    // Not a regular file, or through a symlink: refused, without blocking.
    let fifo = sb.path().join("fifo.env");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    sb.run(
        &[
            "import",
            "--env-file",
            fifo.to_str().unwrap(),
            "--template",
            "f",
        ],
        b"",
    )
    .fails(1, "not a regular file");
    fs::write(sb.path().join("real.env"), "A=1\n").unwrap();
    std::os::unix::fs::symlink("real.env", sb.path().join("link.env")).unwrap();
    let link = sb.path().join("link.env");
    sb.run(
        &[
            "import",
            "--env-file",
            link.to_str().unwrap(),
            "--template",
            "l",
            "--replace",
        ],
        b"",
    )
    .fails(1, "cannot open");
    assert!(sb.path().join("real.env").exists());
    sb.run(
        &["import", "--env-file", "missing.env", "--template", "x"],
        b"",
    )
    .fails(1, "cannot open missing.env");
    sb.run(&["import", "--env-file", p], b"")
        .fails(2, "--template <NAME>");
    sb.run(&["import", "--config", p, "--replace"], b"")
        .fails(2, "cannot be used with");
    assert!(!sb
        .run(&["template", "list"], b"")
        .ok()
        .stdout_str()
        .contains("bad"));
}
