//! Templates through the mount: `templates/<name>` rendered on every open
//! for a caller who may read every ref in it, invisible to anyone else,
//! and an open that fails (`EIO`, audited with the ref) rather than
//! rendering a hole when a ref is missing or expired.

use crate::util::{sh, sh_as, shell_as, Mounted};

const ALICE: u32 = 1234;
const BOB: u32 = 1235;

/// `name`'s rendering as `uid` sees it through `cat`.
fn cat_as(m: &Mounted, uid: u32, name: &str) -> String {
    sh_as(uid, &format!("cat {}/templates/{name}", m.mnt.display()))
        .ok()
        .text()
}

#[test]
fn a_dotenv_template_is_sourced_by_a_shell_and_shows_a_rotation_on_the_next_open() {
    let Some(m) = Mounted::start(&[]) else { return };
    let mnt = m.mnt.display();
    let scope = format!("principal:{ALICE}");
    m.set(&format!("{scope}/db_password"), b"pw one'two");
    m.set(&format!("{scope}/api_key"), b"  sk-1  \n");
    let template = format!(
        "# rendered by sealfs\nDB_PASSWORD=\"{{{{ {scope}/db_password }}}}\"\n\
         API_KEY={{{{ vault://{scope}/api_key | trim }}}}\n"
    );
    m.cli(&["template", "set", "app.env"], template.as_bytes())
        .ok();
    // A real reader: the shell sources it (bash reads st_size bytes after
    // fstat, so the size must be the rendering's once it is open).
    let source =
        format!("set -a; . {mnt}/templates/app.env; printf '%s|%s' \"$DB_PASSWORD\" \"$API_KEY\"");
    let run_bash = |uid: u32| shell_as(uid, "bash", &source).ok().stdout_str();
    assert_eq!(run_bash(ALICE), "pw one'two|sk-1");
    assert_eq!(
        cat_as(&m, ALICE, "app.env"),
        format!("# rendered by sealfs\nDB_PASSWORD=\"pw one'two\"\nAPI_KEY=sk-1\n")
    );
    // Read-only, private to the caller, not cached by the kernel.
    let file = format!("{mnt}/templates/app.env");
    assert_eq!(
        sh_as(ALICE, &format!("stat -c '%a %u' {file}"))
            .ok()
            .text()
            .trim(),
        format!("400 {ALICE}")
    );
    for write in [
        format!("printf x > {file}"),
        format!("rm {file}"),
        format!("mv {file} {mnt}/templates/other"),
        format!("printf x > {mnt}/templates/new"),
        format!("mkdir {mnt}/templates/dir"),
    ] {
        sh(&write).fails_with("");
    }
    // A rotation shows on the next open; an open handle keeps its rendering.
    let sealfs = crate::util::sealfs_bin();
    let rotate = format!(
        "exec 3< {file}; printf sk-2 | SEALFS_BACKEND=encrypted-file SEALFS_VAULT_DIR={} {} set {scope}/api_key; cat <&3",
        m.vault_dir().display(),
        sealfs.display()
    );
    // Root rotates while the handle is open (the handle is root's too).
    assert!(sh(&rotate).ok().text().contains("API_KEY=sk-1"));
    assert_eq!(run_bash(ALICE), "pw one'two|sk-2");

    // The audit log: one open of the template, one render of each ref.
    let events = m.audit_events();
    let by_alice = |op: &str, target: &str| {
        events
            .iter()
            .filter(|e| e["uid"] == ALICE && e["op"] == op && e["ref"] == target)
            .count()
    };
    let opens = by_alice("open", "template:app.env");
    assert!(opens >= 3, "{events:?}");
    assert_eq!(by_alice("render", &format!("{scope}/db_password")), opens);
    assert!(events
        .iter()
        .any(|e| e["op"] == "render" && e["to"] == "template:app.env" && e["outcome"] == "ok"));
}

#[test]
fn a_caller_who_cannot_read_every_ref_does_not_see_the_template() {
    let Some(m) = Mounted::start(&[]) else { return };
    let mnt = m.mnt.display();
    m.set(&format!("principal:{ALICE}/token"), b"alice-token");
    m.set("global/shared", b"root-only");
    m.cli(
        &["template", "set", "mine"],
        format!("t={{{{ principal:{ALICE}/token }}}}").as_bytes(),
    )
    .ok();
    m.cli(
        &["template", "set", "mixed"],
        format!("t={{{{ principal:{ALICE}/token }}}} s={{{{ global/shared }}}}").as_bytes(),
    )
    .ok();
    // No ref at all: its text is its own, for root and the vault owner.
    m.cli(&["template", "set", "inline"], b"password=inline-secret")
        .ok();

    let listing = |uid: u32| sh_as(uid, &format!("ls {mnt}/templates")).ok().text();
    assert_eq!(
        listing(ALICE).split_whitespace().collect::<Vec<_>>(),
        ["mine"]
    );
    assert_eq!(listing(BOB).trim(), "");
    assert_eq!(
        listing(0).split_whitespace().collect::<Vec<_>>(),
        ["inline", "mine", "mixed"]
    );
    assert_eq!(cat_as(&m, ALICE, "mine"), "t=alice-token");
    assert_eq!(cat_as(&m, 0, "mixed"), "t=alice-token s=root-only");
    for (uid, name) in [
        (ALICE, "mixed"),
        (ALICE, "inline"),
        (BOB, "mine"),
        (BOB, "mixed"),
    ] {
        let path = format!("{mnt}/templates/{name}");
        let out = sh_as(uid, &format!("cat {path}; stat {path}"))
            .fails_with("No such file or directory")
            .text();
        assert!(
            !out.contains("alice-token") && !out.contains("root-only"),
            "{out}"
        );
    }
    let denied = m
        .audit_events()
        .into_iter()
        .filter(|e| e["uid"] == BOB && e["ref"] == "template:mine" && e["outcome"] == "denied")
        .count();
    assert!(denied >= 1, "a hidden template's lookup is audited");
}

#[test]
fn a_missing_or_expired_ref_fails_the_open_with_eio_and_an_audit_record() {
    let Some(m) = Mounted::start(&[]) else { return };
    let mnt = m.mnt.display();
    m.set("global/present", b"here");
    m.cli(&["set", "global/soon", "--ttl", "1s"], b"brief").ok();
    m.cli(
        &["template", "set", "gaps"],
        b"a={{ global/present }}\nb={{ global/soon }}\nc={{ global/present | base64 }}\n",
    )
    .ok();
    assert_eq!(cat_as(&m, 0, "gaps"), "a=here\nb=brief\nc=aGVyZQ==\n");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let out = sh(&format!("cat {mnt}/templates/gaps")).fails_with("Input/output error");
    assert!(out.stdout.is_empty(), "no partial rendering");
    let events = m.audit_events();
    assert!(
        events.iter().any(|e| e["op"] == "render"
            && e["ref"] == "global/soon"
            && e["to"] == "template:gaps"
            && e["outcome"] == "error"
            && e["detail"] == "missing or expired"),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e["op"] == "open"
        && e["ref"] == "template:gaps"
        && e["outcome"] == "error"
        && e["detail"] == "EIO"));
    // Missing outright: the same.
    m.cli(&["template", "set", "gone"], b"{{ global/never }}")
        .ok();
    sh(&format!("cat {mnt}/templates/gone")).fails_with("Input/output error");
    // Back once the ref is.
    m.set("global/soon", b"again");
    assert_eq!(cat_as(&m, 0, "gaps"), "a=here\nb=again\nc=aGVyZQ==\n");
}

#[test]
fn a_private_mount_never_caches_a_templates_size() {
    let Some(m) = Mounted::start_private(&[]) else {
        return;
    };
    m.set("global/k", b"v1");
    m.cli(&["template", "set", "t"], b"K={{ global/k }}\n").ok();
    // bash reads as many bytes as fstat says: a size the kernel kept from
    // the last rendering would cut this one short.
    let source = format!(
        "set -a; . {}/templates/t; printf %s \"$K\"",
        m.mnt.display()
    );
    let bash = || {
        let out = std::process::Command::new("bash")
            .args(["-c", &source])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(bash(), "v1");
    m.set("global/k", b"a-longer-value-2");
    assert_eq!(bash(), "a-longer-value-2");
}

#[test]
fn listing_and_stat_decrypt_a_template_once_per_stored_version_and_never_a_value() {
    let Some(mut m) = Mounted::start(&["-v"]) else {
        return;
    };
    let mnt = m.mnt.display();
    m.set("global/a", b"alpha");
    m.cli(&["template", "set", "t"], b"{{ global/a }}").ok();
    // Stored by hand, not by `template set`: it does not parse, and is
    // not decrypted again for that at every request either.
    m.set("principal:sealfs-templates/broken", b"{{ nope");
    let look =
        format!("ls -la {mnt}/templates && stat {mnt}/templates/t && test -r {mnt}/templates/t");
    for _ in 0..3 {
        sh(&look).ok();
        sh_as(BOB, &format!("ls {mnt}/templates; stat {mnt}/templates/t")).fails_with("");
        sh(&format!("stat {mnt}/templates/broken")).fails_with("Input/output error");
    }
    m.cli(&["template", "set", "t"], b"a={{ global/a }}").ok();
    sh(&look).ok();
    assert_eq!(cat_as(&m, 0, "t"), "a=alpha");
    m.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(m.wait_exit().success());
    assert_eq!(
        crate::read::decrypted_refs(&m.take_stderr()),
        [
            "principal:sealfs-templates/broken",
            "principal:sealfs-templates/t",
            "principal:sealfs-templates/t",
            // The open: the template, then its one ref.
            "principal:sealfs-templates/t",
            "global/a",
        ],
        "metadata decrypts a template once per stored version, and no value"
    );
}
