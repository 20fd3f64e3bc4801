//! `sealfs console` over a real vault: the HTTP API (sessions, CSRF, every
//! action, bad input, headers) with a plain HTTP client, and the page end to
//! end in headless Chromium.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::util::{have_tools, Sandbox};

/// A running console on a sandbox's vault; stopped with SIGINT on drop.
struct Console {
    child: Child,
    /// `http` or `https`
    scheme: String,
    /// `127.0.0.1:PORT`, or `HOSTNAME:PORT` when listening on all interfaces
    addr: String,
    /// The printed URL's one-time token.
    token: String,
}

impl Console {
    fn start(sb: &Sandbox, extra: &[&str]) -> Console {
        let mut args = vec!["console"];
        args.extend_from_slice(extra);
        let mut child = sb
            .cmd(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sealfs console");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let (scheme, url) = line
            .trim()
            .strip_prefix("sealfs console: ")
            .and_then(|u| u.split_once("://"))
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        let (addr, token) = url.split_once("/?token=").unwrap();
        Console {
            child,
            scheme: scheme.to_owned(),
            addr: addr.to_owned(),
            token: token.to_owned(),
        }
    }

    fn url(&self) -> String {
        format!("{}://{}/?token={}", self.scheme, self.addr, self.token)
    }

    /// Uses the one-time link; returns the session cookie and the page
    /// key (CSRF token) that the redirect carries in its fragment.
    fn sign_in(&self) -> (String, String) {
        let r = self.request("GET", &format!("/?token={}", self.token), &[], b"");
        assert_eq!(r.status, 303, "{}", r.text());
        let cookie = r.header("set-cookie").unwrap();
        for part in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(cookie.contains(part), "{cookie}");
        }
        let port = self.addr.rsplit(':').next().unwrap();
        let cookie = cookie.split(';').next().unwrap().to_owned();
        assert!(
            cookie.starts_with(&format!("sealfs_console_{port}=")),
            "the cookie is named for this console's port: {cookie}"
        );
        let csrf = r
            .header("location")
            .and_then(|l| l.strip_prefix("/#csrf="))
            .unwrap_or_else(|| panic!("redirect without the page key: {:?}", r.header("location")))
            .to_owned();
        assert_eq!(csrf.len(), 64);
        (cookie, csrf)
    }

    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        http(&self.addr, &self.addr, method, path, headers, body)
    }

    /// A signed-in call with the CSRF token.
    fn call(&self, s: &(String, String), method: &str, path: &str, body: &str) -> Resp {
        self.request(
            method,
            path,
            &[
                ("Cookie", &s.0),
                ("X-CSRF-Token", &s.1),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
    }

    /// Ctrl-C: the console must exit cleanly.
    fn interrupt(mut self) -> std::process::ExitStatus {
        let sent = std::process::Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        wait_timeout(&mut self.child, Duration::from_secs(10))
    }
}

fn wait_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the console did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.text()))
    }

    fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
}

/// One HTTP/1.1 request over a fresh connection.
fn http(
    addr: &str,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers end");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v == "chunked")
    {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..end]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[end + 2..end + 2 + n]);
        b = &b[end + 4 + n..];
    }
}

fn signed_in(c: &Console) -> (String, String) {
    c.sign_in()
}

/// Event handler attributes (`onclick=` and the like) in HTML.
fn inline_handlers(html: &str) -> Vec<&str> {
    html.split(|ch: char| ch.is_whitespace())
        .filter(|w| {
            w.strip_prefix("on")
                .and_then(|rest| rest.split_once('='))
                .is_some_and(|(name, _)| {
                    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase())
                })
        })
        .collect()
}

#[test]
fn sessions_tokens_and_headers() {
    let sb = Sandbox::new();
    sb.set("global/k", b"v");
    let c = Console::start(&sb, &[]);
    // No session: 401, for the page and the API.
    assert_eq!(c.request("GET", "/", &[], b"").status, 401);
    let r = c.request("GET", "/api/secrets?scope=global", &[], b"");
    assert_eq!(r.status, 401);
    assert!(r.error().contains("not signed in"), "{}", r.text());
    // A wrong token does not sign in and does not spend the right one.
    assert_eq!(c.request("GET", "/?token=00", &[], b"").status, 401);
    let s = signed_in(&c);
    // The link works once; in the browser that used it, it leads to the
    // page again, without a new key.
    assert_eq!(
        c.request("GET", &format!("/?token={}", c.token), &[], b"")
            .status,
        401
    );
    let again = c.request(
        "GET",
        &format!("/?token={}", c.token),
        &[("Cookie", &s.0)],
        b"",
    );
    assert_eq!((again.status, again.header("location")), (303, Some("/")));
    assert!(again.header("set-cookie").is_none());
    // The cookie alone (which a browser also sends to other ports of this
    // host) opens no API call, reads included; the session answer holds
    // no key either.
    for path in ["/api/session", "/api/secrets?scope=global", "/api/audit"] {
        let r = c.request("GET", path, &[("Cookie", &s.0)], b"");
        assert_eq!(r.status, 403, "{path}: {}", r.text());
    }
    let session = c.call(&s, "GET", "/api/session", "");
    assert_eq!(session.status, 200);
    assert!(!session.text().contains(&s.1));
    // Unknown API paths and methods are JSON errors too.
    let r = c.call(&s, "GET", "/api/nope", "");
    assert_eq!(r.status, 404);
    assert_eq!(r.error(), "no such page");
    let r = c.call(&s, "PUT", "/api/secrets", "{}");
    assert_eq!(r.status, 405);
    assert!(r.error().contains("method"), "{}", r.text());
    let page = c.request("GET", "/", &[("Cookie", &s.0)], b"");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<script src=\"/app.js\""));
    // Every response, errors included, carries the protective headers.
    for r in [
        page,
        c.request("GET", "/api/session", &[], b""),
        c.request("GET", "/app.js", &[], b""),
    ] {
        let csp = r.header("content-security-policy").unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"));
        assert_eq!(r.header("x-frame-options"), Some("DENY"));
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    }
    // The page holds no inline script, handler or style (the CSP above
    // would block them), and its script builds no HTML from strings.
    let html = include_str!("../src/console/assets/index.html");
    assert_eq!(html.matches("<script").count(), 1);
    assert_eq!(html.matches("<script src=").count(), 1);
    assert_eq!(inline_handlers(html), Vec::<&str>::new());
    assert!(!html.contains("style=") && !html.contains("<style") && !html.contains("javascript:"));
    let js = include_str!("../src/console/assets/app.js");
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(!js.contains(sink), "app.js uses {sink}");
    }
    // The store form cannot be sent by the browser itself (into a URL).
    assert!(!html.contains("name=\"value\"") && !html.contains("name=\"ref\""));
    assert!(html.contains("<fieldset id=\"store-fields\" disabled>"));
    // A foreign Host (DNS rebinding) is refused even with a session.
    let r = http(
        &c.addr,
        "evil.example:80",
        "GET",
        "/api/session",
        &[("Cookie", &s.0)],
        b"",
    );
    assert_eq!(r.status, 421);
    // A client stalled halfway through its request does not keep the
    // console from stopping.
    let mut stalled = TcpStream::connect(&c.addr).unwrap();
    stalled
        .write_all(b"GET /api/session HTTP/1.1\r\nHost: ")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let asked = std::time::Instant::now();
    assert!(c.interrupt().success(), "Ctrl-C stops the console cleanly");
    assert!(asked.elapsed() < Duration::from_secs(8));
    drop(stalled);
}

#[test]
fn list_inspect_store_reveal_delete_over_the_api() {
    let sb = Sandbox::new();
    sb.set("global/seed", b"seed-value");
    sb.run(&["set", "principal:alice/token", "--once"], b"once-value")
        .ok();
    let c = Console::start(&sb, &[]);
    let s = signed_in(&c);

    let scopes = c.call(&s, "GET", "/api/scopes", "").json();
    assert_eq!(
        scopes["scopes"],
        serde_json::json!(["global", "principal:alice"])
    );
    let list = c.call(&s, "GET", "/api/secrets?scope=global", "").json();
    assert_eq!(list["entries"][0]["ref"], "global/seed");
    assert_eq!(list["entries"][0]["length"], 10);
    assert!(!list.to_string().contains("seed-value"));

    let r = c.call(
        &s,
        "POST",
        "/api/secrets",
        r#"{"ref":"global/api_key","value":"sk-123"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(!r.text().contains("sk-123"));
    assert_eq!(sb.get("global/api_key"), b"sk-123");
    let r = c.call(&s, "GET", "/api/inspect?ref=global/api_key", "");
    assert_eq!(r.json()["entry"]["length"], 6);
    assert!(!r.text().contains("sk-123"));

    let r = c.call(&s, "POST", "/api/reveal", r#"{"ref":"global/api_key"}"#);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["value"], "sk-123");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    // Revealing a read-once secret consumes it (and says so).
    let r = c.call(
        &s,
        "POST",
        "/api/reveal",
        r#"{"ref":"principal:alice/token"}"#,
    );
    assert_eq!(r.json()["consumed"], true);
    assert_eq!(
        c.call(
            &s,
            "POST",
            "/api/reveal",
            r#"{"ref":"principal:alice/token"}"#
        )
        .status,
        404
    );

    let r = c.call(&s, "POST", "/api/delete", r#"{"ref":"global/api_key"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    sb.run(&["get", "global/api_key"], b"")
        .fails(1, "not found");
    let r = c.call(&s, "POST", "/api/delete", r#"{"ref":"global/api_key"}"#);
    assert_eq!(r.status, 404);
    assert!(
        r.error().contains("secret not found: global/api_key"),
        "{}",
        r.text()
    );

    // Every reveal, store and delete is in the audit log, from the console,
    // and no value is.
    let log = std::fs::read_to_string(sb.path().join("audit.log")).unwrap();
    for op in [
        "\"op\":\"set\"",
        "\"op\":\"reveal\"",
        "\"op\":\"consume\"",
        "\"op\":\"delete\"",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("\"source\":\"console\"") && l.contains(op)),
            "{op} missing from {log}"
        );
    }
    assert!(!log.contains("sk-123") && !log.contains("once-value"));
    let audit = c.call(&s, "GET", "/api/audit?limit=3", "").json();
    assert_eq!(audit["events"].as_array().unwrap().len(), 3);
}

/// Storing into a session another uid created through the mount (that
/// uid reads it) is 409, naming the uid, until the request confirms it.
#[test]
fn storing_into_another_uids_session_asks_first() {
    let sb = Sandbox::new();
    sb.set("global/seed", b"x");
    let v = sealfs::Vault::open(sealfs::VaultConfig::new(sb.vault_dir())).unwrap();
    v.create_scope(&"session:ci-7".parse().unwrap(), Some(4242))
        .unwrap();
    drop(v);
    let c = Console::start(&sb, &[]);
    let s = signed_in(&c);
    let body = r#"{"ref":"session:ci-7/token","value":"tok"}"#;
    let r = c.call(&s, "POST", "/api/secrets", body);
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(
        r.text().contains("session:ci-7 belongs to uid 4242"),
        "{}",
        r.text()
    );
    assert!(!r.text().contains("tok\""));
    sb.run(&["get", "session:ci-7/token"], b"")
        .fails(1, "not found");
    let confirmed = r#"{"ref":"session:ci-7/token","value":"tok","into_others_session":true}"#;
    let r = c.call(&s, "POST", "/api/secrets", confirmed);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(sb.get("session:ci-7/token"), b"tok");
    // The CLI asks the same way.
    let r = sb.run(&["set", "session:ci-7/other"], b"v");
    r.fails(1, "belongs to uid 4242");
    sb.run(
        &["set", "--into-others-session", "session:ci-7/other"],
        b"v",
    )
    .ok();
    let cfg = sb.path().join("app.toml");
    sb.run(
        &[
            "configure",
            "--config",
            cfg.to_str().unwrap(),
            "app.token_vault_ref",
            "session:ci-7/cfg",
        ],
        b"v",
    )
    .fails(1, "belongs to uid 4242");
    assert!(!cfg.exists(), "a refused configure changes nothing");
}

#[test]
fn csrf_bad_refs_limits_and_a_broken_vault_change_nothing() {
    let sb = Sandbox::new();
    sb.set("global/keep", b"keep-me");
    let c = Console::start(&sb, &["--max-value-size", "16"]);
    let s = signed_in(&c);
    let body = r#"{"ref":"global/keep","value":"changed"}"#;
    let json = ("Content-Type", "application/json");
    // No CSRF token, or a wrong one: 403 and nothing changed.
    for headers in [
        vec![("Cookie", s.0.as_str()), json],
        vec![("Cookie", s.0.as_str()), ("X-CSRF-Token", "0000"), json],
    ] {
        for (path, b) in [
            ("/api/secrets", body),
            ("/api/delete", r#"{"ref":"global/keep"}"#),
            ("/api/reveal", r#"{"ref":"global/keep"}"#),
        ] {
            let r = c.request("POST", path, &headers, b.as_bytes());
            assert_eq!(r.status, 403, "{}", r.text());
            assert!(r.error().contains("CSRF"));
        }
    }
    assert_eq!(sb.get("global/keep"), b"keep-me");
    let log = sb.path().join("audit.log");
    let console_events = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"source\":\"console\""))
            .count()
    };
    assert_eq!(console_events(), 0, "refused requests reach no handler");

    // A secret pasted into the ref field is not echoed back.
    let r = c.call(
        &s,
        "POST",
        "/api/secrets",
        r#"{"ref":"sk-live-pasted-by-mistake","value":"x"}"#,
    );
    assert_eq!(r.status, 400);
    assert!(
        r.error().starts_with("bad ref: expected `<scope>/<key>`"),
        "{}",
        r.error()
    );
    assert!(!r.text().contains("sk-live-pasted"), "{}", r.text());
    let r = c.call(&s, "GET", "/api/secrets?scope=sk-live-pasted", "");
    assert_eq!(r.status, 400);
    assert!(!r.text().contains("sk-live-pasted"), "{}", r.text());
    // A body over the server's limit is a JSON error naming the limit.
    let huge = format!(r#"{{"ref":"global/k","value":"{}"}}"#, "x".repeat(10_000));
    let r = c.call(&s, "POST", "/api/secrets", &huge);
    assert_eq!(r.status, 413);
    assert!(r.error().contains("limited to 16 bytes"), "{}", r.text());
    // A query string that does not fit: a JSON error.
    let r = c.call(&s, "GET", "/api/inspect", "");
    assert_eq!(r.status, 400);
    assert!(r.error().contains("query string"), "{}", r.text());

    for (b, status, needle) in [
        (r#"{"ref":"global/bad ref","value":"x"}"#, 400, "bad ref"),
        (r#"{"ref":"nowhere/k","value":"x"}"#, 400, "bad ref"),
        (r#"{"ref":"global/k","value":""}"#, 400, "empty value"),
        (
            r#"{"ref":"global/k","value":"0123456789abcdefX"}"#,
            413,
            "over the limit of 16 bytes",
        ),
        (
            r#"{"ref":"global/k","value":12345678}"#,
            400,
            "not the JSON",
        ),
        ("not json", 400, "not the JSON"),
    ] {
        let r = c.call(&s, "POST", "/api/secrets", b);
        assert_eq!(r.status, status, "{b}: {}", r.text());
        assert!(r.error().contains(needle), "{b}: {}", r.error());
        assert!(!r.text().contains("12345678") && !r.text().contains("0123456789"));
    }
    let r = c.call(&s, "GET", "/api/inspect?ref=global/missing", "");
    assert_eq!(r.status, 404);
    let r = c.call(&s, "GET", "/api/secrets?scope=nowhere", "");
    assert_eq!(r.status, 400);
    let listed = c.call(&s, "GET", "/api/secrets", "").json();
    assert_eq!(listed["entries"].as_array().unwrap().len(), 1);
    assert_eq!(sb.get("global/keep"), b"keep-me");
    // Refused stores of a valid ref are audited as failures.
    let failed_sets = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| {
            l.contains("\"source\":\"console\"")
                && l.contains("\"op\":\"set\"")
                && l.contains("global/k")
                && !l.contains("\"outcome\":\"ok\"")
        })
        .count();
    assert_eq!(failed_sets, 2, "the empty and the over-limit value");

    // Reveals are rate limited per session.
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(
            c.call(&s, "POST", "/api/reveal", r#"{"ref":"global/keep"}"#)
                .status,
        );
    }
    assert_eq!(statuses[..10], [200; 10]);
    assert_eq!(statuses[10..], [429, 429]);

    // A vault that cannot be opened: a clear message, nothing changed.
    std::fs::write(
        sb.vault_dir().join("index.sqlite3"),
        b"not a database, not at all",
    )
    .unwrap();
    let r = c.call(&s, "GET", "/api/secrets?scope=global", "");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.error().contains("cannot open the vault"), "{}", r.error());
    let before = console_events();
    let r = c.call(
        &s,
        "POST",
        "/api/secrets",
        r#"{"ref":"global/new","value":"v"}"#,
    );
    assert_eq!(r.status, 503);
    assert!(r.error().contains("cannot open the vault"), "{}", r.error());
    let r = c.call(&s, "POST", "/api/delete", r#"{"ref":"global/keep"}"#);
    assert_eq!(r.status, 503);
    assert_eq!(
        console_events(),
        before + 2,
        "failed store and delete are audited"
    );
    assert_eq!(
        std::fs::read(sb.vault_dir().join("index.sqlite3")).unwrap(),
        b"not a database, not at all",
        "nothing was written"
    );
}

#[test]
fn configured_refs_show_resolved_missing_and_invalid() {
    let sb = Sandbox::new();
    sb.set("global/openai_api_key", b"sk");
    let config = sb.path().join("app.toml");
    std::fs::write(
        &config,
        "openai_api_key_vault_ref = \"global/openai_api_key\"\n[db]\npassword_vault_ref = \"global/db_password\"\nbroken_vault_ref = \"sk-live-raw-secret\"\n",
    )
    .unwrap();
    let c = Console::start(&sb, &["--config", config.to_str().unwrap()]);
    let s = signed_in(&c);
    let r = c.call(&s, "GET", "/api/config", "");
    let fields = r.json()["fields"].as_array().unwrap().clone();
    let status = |f: &str| {
        fields
            .iter()
            .find(|x| x["field"] == f)
            .map(|x| x["status"].as_str().unwrap().to_owned())
    };
    assert_eq!(
        status("openai_api_key_vault_ref").as_deref(),
        Some("resolved")
    );
    assert_eq!(status("db.password_vault_ref").as_deref(), Some("missing"));
    assert_eq!(status("db.broken_vault_ref").as_deref(), Some("invalid"));
    assert!(
        !r.text().contains("sk-live-raw-secret"),
        "an invalid ref's text is not echoed"
    );
}

#[test]
fn the_listen_address_is_loopback_unless_remote_is_asked_for_with_tls() {
    let sb = Sandbox::new();
    sb.run(&["console", "--listen", "0.0.0.0:0"], b"")
        .fails(1, "serves loopback only");
    sb.run(&["console", "--listen", "0.0.0.0:0", "--allow-remote"], b"")
        .fails(1, "needs --tls-cert and --tls-key");
}

/// `--allow-remote` with a certificate: HTTPS on every interface, a
/// `Secure` cookie, no plain HTTP; a bad certificate is refused up front.
#[test]
fn remote_access_is_served_over_tls_only() {
    if !have_tools(&["openssl", "curl"]) {
        return;
    }
    let sb = Sandbox::new();
    sb.set("global/seed", b"seed-value");
    let (cert, key) = (sb.path().join("cert.pem"), sb.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let (cert_s, key_s) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let remote = ["--listen", "0.0.0.0:0", "--allow-remote"];

    // Not a certificate: a clear error naming the file, and no server.
    let r = sb.run(
        &[
            &["console"],
            &remote[..],
            &["--tls-cert", key_s, "--tls-key", key_s],
        ]
        .concat(),
        b"",
    );
    r.fails(1, "holds no PEM certificate");

    let c = Console::start(
        &sb,
        &[&remote[..], &["--tls-cert", cert_s, "--tls-key", key_s]].concat(),
    );
    assert_eq!(c.scheme, "https");
    let port = c.addr.rsplit(':').next().unwrap().to_owned();
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "20", "--cacert", cert_s])
            .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
            .args(["-D", "-"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let base = format!("https://localhost:{port}");
    let (ok, signed_in) = curl(&[&format!("{base}/?token={}", c.token)]);
    assert!(ok && signed_in.starts_with("HTTP/1.1 303"), "{signed_in}");
    let cookie_line = signed_in
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap();
    for part in ["HttpOnly", "SameSite=Strict", "Secure"] {
        assert!(cookie_line.contains(part), "{cookie_line}");
    }
    let cookie = cookie_line
        .split_once(':')
        .unwrap()
        .1
        .split(';')
        .next()
        .unwrap()
        .trim();
    let csrf = signed_in
        .lines()
        .find_map(|l| l.strip_prefix("location: /#csrf="))
        .unwrap_or_else(|| panic!("no page key in {signed_in}"))
        .trim();
    let (ok, session) = curl(&[
        "-H",
        &format!("Cookie: {cookie}"),
        "-H",
        &format!("X-CSRF-Token: {csrf}"),
        &format!("{base}/api/secrets"),
    ]);
    assert!(ok && session.starts_with("HTTP/1.1 200"), "{session}");
    assert!(session.contains("global/seed"), "{session}");
    assert!(!session.contains("seed-value"));

    // Plain HTTP on the same port gets no page.
    let plain = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!("http://127.0.0.1:{port}/api/secrets"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&plain.stdout), "000", "{plain:?}");
    assert!(c.interrupt().success());
}

/// The page in a real browser. Needs node, Debian's chromium and
/// `npm ci` in tests/e2e (scripts/test.sh does it).
#[test]
fn the_page_end_to_end_in_headless_chromium() {
    let e2e = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e");
    if !have_tools(&["node", "chromium"]) {
        return;
    }
    if !e2e.join("node_modules/playwright-core").is_dir() {
        crate::util::missing(
            "playwright-core in tests/e2e/node_modules (scripts/test.sh runs npm ci there)",
        );
        return;
    }
    let sb = Sandbox::new();
    sb.set("global/seed", b"seed-value");
    sb.set("global/openai_api_key", b"sk-openai");
    let config = sb.path().join("app.toml");
    std::fs::write(
        &config,
        "[model_provider]\n\
         openai_api_key_vault_ref = \"global/openai_api_key\"\n\
         e2e_token_vault_ref = \"global/e2e_token\"\n\
         broken_vault_ref = \"global/has space\"\n",
    )
    .unwrap();
    let c = Console::start(&sb, &["--config", config.to_str().unwrap()]);
    let shot = std::env::var_os("SEALFS_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| sb.path().join("console.png"));
    let out = std::process::Command::new("node")
        .arg(e2e.join("console.mjs"))
        // The CLI calls in the script see the sandbox's vault only.
        .env_remove("SEALFS_IDENTITY_DIR")
        .env_remove("SEALFS_MAX_VALUE_SIZE")
        .env("CONSOLE_URL", c.url())
        .env("SEALFS_BIN", crate::util::BIN)
        .env("SEALFS_VAULT_DIR", sb.vault_dir())
        .env("SEALFS_BACKEND", "encrypted-file")
        .env("SCREENSHOT", &shot)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "e2e failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("e2e: all checks passed"), "{stdout}");
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "a screenshot was taken"
    );
    assert!(c.interrupt().success());
}
