//! Reading through the mount: what shell tools see, decrypt-on-open, and
//! changes made with the CLI showing up on the next open.

use std::io::Read;

use crate::util::{sh, Mounted};

#[test]
fn shell_tools_see_the_vault() {
    let Some(m) = Mounted::start(&[]) else { return };
    let binary: Vec<u8> = (0..=255u8).rev().collect();
    m.set("global/openai_api_key", b"sk-live-123\n");
    m.set("principal:alice/github_token", &binary);
    m.set("session:run-42/db_password", b"pw");
    let mnt = m.mnt.display();

    let ls = sh(&format!(
        "ls {mnt} {mnt}/global {mnt}/principal {mnt}/principal/alice {mnt}/session/run-42"
    ))
    .ok()
    .text();
    for name in [
        "global",
        "principal",
        "session",
        "openai_api_key",
        "alice",
        "github_token",
        "db_password",
    ] {
        assert!(ls.contains(name), "{ls}");
    }
    assert_eq!(
        sh(&format!("cat {mnt}/global/openai_api_key")).ok().stdout,
        b"sk-live-123\n"
    );
    assert_eq!(
        sh(&format!("cat {mnt}/principal/alice/github_token"))
            .ok()
            .stdout,
        binary
    );
    assert_eq!(
        sh(&format!("head -c 3 {mnt}/global/openai_api_key"))
            .ok()
            .stdout,
        b"sk-"
    );
    assert_eq!(
        sh(&format!("wc -c < {mnt}/principal/alice/github_token"))
            .ok()
            .text()
            .trim(),
        "256"
    );
    // stat: true length from the index, owner-only mode, owned by the caller.
    let st = sh(&format!(
        "stat -c '%s %a %u %g %F' {mnt}/global/openai_api_key"
    ))
    .ok()
    .text();
    assert_eq!(st.trim(), "12 600 0 0 regular file");
    // cp out, diff, read in a script.
    let out = m.root.path().join("copy");
    sh(&format!(
        "cp {mnt}/principal/alice/github_token {}",
        out.display()
    ))
    .ok();
    assert_eq!(std::fs::read(&out).unwrap(), binary);
    sh(&format!(
        "printf 'sk-live-123\\n' | diff - {mnt}/global/openai_api_key"
    ))
    .ok();
    let read = sh(&format!(
        "read -r v < {mnt}/session/run-42/db_password; echo \"got:$v\""
    ))
    .ok()
    .text();
    assert_eq!(read, "got:pw\n");
    // The mtime is the value's updated time.
    let updated = m.cli(&["list", "--json"], b"").ok().text();
    let mtime = sh(&format!(
        "date -u -d @$(stat -c %Y {mnt}/global/openai_api_key) +%Y-%m-%dT%H:%M:%SZ"
    ))
    .ok()
    .text();
    assert!(updated.contains(mtime.trim()), "{updated} vs {mtime}");
}

/// The refs the daemon asked its vault to decrypt, in order, from its debug
/// log (`-v`): counted where values leave the store, whatever code path
/// asked, so a decryption without an audit event is seen too.
pub(crate) fn decrypted_refs(daemon_log: &str) -> Vec<String> {
    daemon_log
        .lines()
        .filter(|l| l.contains("decrypting a value"))
        .map(|l| {
            let (_, rest) = l
                .split_once("vault_ref=")
                .unwrap_or_else(|| panic!("no vault_ref in {l:?}"));
            rest.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[test]
fn nothing_is_decrypted_without_an_open() {
    let Some(mut m) = Mounted::start(&["-v"]) else {
        return;
    };
    for (k, v) in [
        ("a", "alpha"),
        ("b", "beta"),
        ("r", "read me"),
        ("w", "append to me"),
        ("t", "truncate me"),
    ] {
        m.set(&format!("global/{k}"), v.as_bytes());
    }
    let mnt = m.mnt.display();
    // lookup, getattr, readdir and access on every name.
    sh(&format!(
        "ls -la {mnt} {mnt}/global && stat {mnt}/global/* && test -f {mnt}/global/a \
         && test -r {mnt}/global/b && test -w {mnt}/global/t"
    ))
    .ok();
    let opens = |m: &Mounted| {
        m.audit_events()
            .iter()
            .filter(|e| e["op"] == "open" && e["source"] == "mount")
            .count()
    };
    assert_eq!(opens(&m), 0);
    sh(&format!("cat {mnt}/global/r > /dev/null")).ok();
    assert_eq!(opens(&m), 1);
    let e = m
        .audit_events()
        .into_iter()
        .find(|e| e["op"] == "open")
        .unwrap();
    assert_eq!(e["ref"], "global/r");
    assert_eq!(e["uid"], 0);
    assert!(e["exe"].as_str().unwrap().ends_with("/cat"), "{e}");
    // Write-opens: appending keeps the value, so it is decrypted; a
    // truncating open replaces it unread.
    sh(&format!(
        "printf + >> {mnt}/global/w && printf new > {mnt}/global/t"
    ))
    .ok();
    assert_eq!(m.get("global/w"), b"append to me+");
    assert_eq!(m.get("global/t"), b"new");

    m.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(m.wait_exit().success());
    let log = m.take_stderr();
    assert_eq!(
        decrypted_refs(&log),
        ["global/r", "global/w"],
        "each open that needs the value decrypts it exactly once; nothing else does"
    );
    assert!(!std::fs::read_to_string(m.audit_log())
        .unwrap()
        .contains("alpha"));
}

#[test]
fn a_change_made_with_the_cli_shows_on_the_next_open_and_not_in_an_open_one() {
    let Some(m) = Mounted::start(&[]) else { return };
    m.set("global/k", b"old value");
    let mut early = std::fs::File::open(m.path("global/k")).unwrap();
    m.set("global/k", b"new!");
    assert_eq!(std::fs::read(m.path("global/k")).unwrap(), b"new!");
    assert_eq!(std::fs::metadata(m.path("global/k")).unwrap().len(), 4);
    let mut old = Vec::new();
    early.read_to_end(&mut old).unwrap();
    assert_eq!(
        old, b"old value",
        "an open handle keeps the value it opened"
    );
    m.cli(&["delete", "global/k"], b"").ok();
    assert!(!m.path("global/k").exists());
}

#[test]
fn read_once_secrets_are_consumed_by_the_first_open() {
    let Some(m) = Mounted::start(&[]) else { return };
    m.cli(&["set", "global/otp", "--once"], b"one-time").ok();
    m.cli(&["set", "global/otp2", "--once"], b"two").ok();
    let stat = sh(&format!("stat -c %s {}", m.path("global/otp").display()))
        .ok()
        .text();
    assert_eq!(stat.trim(), "8", "stat does not consume");
    // With cat, which fstat()s what it opened.
    assert_eq!(
        sh(&format!("cat {}", m.path("global/otp").display()))
            .ok()
            .stdout,
        b"one-time"
    );
    let err = std::fs::read(m.path("global/otp")).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    assert!(!m.path("global/otp").exists());
    // `sealfs get` consumes too.
    assert_eq!(m.get("global/otp2"), b"two");
    m.cli(&["get", "global/otp2"], b"")
        .fails_with("secret not found");
    let consumed: Vec<_> = m
        .audit_events()
        .into_iter()
        .filter(|e| e["op"] == "consume")
        .collect();
    assert_eq!(consumed.len(), 2, "{consumed:?}");
    assert_eq!(consumed[0]["source"], "mount");
    assert_eq!(consumed[1]["source"], "cli");
}

#[test]
fn concurrent_readers_see_whole_values_while_it_is_rewritten() {
    let Some(m) = Mounted::start(&[]) else { return };
    let a = vec![b'a'; 3000];
    let b = vec![b'b'; 5000];
    m.set("global/rot", &a);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..10)
            .map(|_| {
                s.spawn(|| {
                    let mut n = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let v = std::fs::read(m.path("global/rot")).unwrap();
                        assert!(v == a || v == b, "torn read of {} bytes", v.len());
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        for i in 0..30 {
            m.set("global/rot", if i % 2 == 0 { &b } else { &a });
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let total: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
        assert!(total >= 10, "readers made {total} reads");
    });
}

#[test]
fn a_private_mount_caches_names_but_every_open_reads_the_current_value() {
    // Without --allow-other the kernel may cache entries and attributes for
    // a second (only the owner can reach the mount); contents never.
    let Some(m) = Mounted::start_private(&[]) else {
        return;
    };
    m.set("global/k", b"abcd");
    assert_eq!(std::fs::read(m.path("global/k")).unwrap(), b"abcd");
    m.set("global/k", b"a longer value");
    assert_eq!(
        std::fs::read(m.path("global/k")).unwrap(),
        b"a longer value"
    );
    m.set("global/k", b"xy");
    assert_eq!(
        sh(&format!("cat {}", m.path("global/k").display()))
            .ok()
            .stdout,
        b"xy"
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(std::fs::metadata(m.path("global/k")).unwrap().len(), 2);
}

#[test]
fn a_large_scope_lists_completely_in_one_pass() {
    let Some(m) = Mounted::start(&[]) else { return };
    let vault = sealfs::Vault::open(sealfs::VaultConfig::new(m.vault_dir())).unwrap();
    for i in 0..1500 {
        let r = format!("global/key-{i:05}").parse().unwrap();
        vault
            .put(&r, sealfs::SensitiveBytes::from_slice(b"v"))
            .unwrap();
    }
    // Many readdir requests, one listing taken at opendir.
    let out = sh(&format!("ls {} | wc -l", m.path("global").display()))
        .ok()
        .text();
    assert_eq!(out.trim(), "1500");
    let names = sh(&format!(
        "ls {} | sort | uniq | wc -l",
        m.path("global").display()
    ))
    .ok()
    .text();
    assert_eq!(names.trim(), "1500", "no name twice");
}

/// Kernel page-cache events for one inode, read from tracefs (mounted here
/// if it is not). Only this test enables these events.
struct PageCacheTrace {
    dir: std::path::PathBuf,
}

impl PageCacheTrace {
    const EVENTS: [&'static str; 2] = [
        "mm_filemap_add_to_page_cache",
        "mm_filemap_delete_from_page_cache",
    ];

    fn start(path: &std::path::Path) -> PageCacheTrace {
        use std::os::unix::fs::MetadataExt;
        let dir = std::path::PathBuf::from("/sys/kernel/tracing");
        if !dir.join("events").exists() {
            sh("mount -t tracefs nodev /sys/kernel/tracing").ok();
        }
        let meta = std::fs::metadata(path).unwrap();
        // The kernel's dev_t: major << 20 | minor.
        let (major, minor) = (
            nix::sys::stat::major(meta.dev()),
            nix::sys::stat::minor(meta.dev()),
        );
        let filter = format!(
            "i_ino == {} && s_dev == {}",
            meta.ino(),
            (major << 20) | minor
        );
        for event in Self::EVENTS {
            let e = dir.join("events/filemap").join(event);
            std::fs::write(e.join("filter"), &filter).unwrap();
            std::fs::write(e.join("enable"), "1").unwrap();
        }
        std::fs::write(dir.join("trace"), "").unwrap();
        PageCacheTrace { dir }
    }

    /// (pages added, pages deleted) so far.
    fn counts(&self) -> (usize, usize) {
        let trace = std::fs::read_to_string(self.dir.join("trace")).unwrap();
        let n = |event: &str| {
            trace
                .lines()
                .filter(|l| l.contains(&format!("{event}:")))
                .count()
        };
        (n(Self::EVENTS[0]), n(Self::EVENTS[1]))
    }
}

impl Drop for PageCacheTrace {
    fn drop(&mut self) {
        for event in Self::EVENTS {
            let e = self.dir.join("events/filemap").join(event);
            let _ = std::fs::write(e.join("enable"), "0");
            let _ = std::fs::write(e.join("filter"), "0");
        }
    }
}

/// Reads are direct I/O, but a private `mmap` fills the page cache: once
/// the last handle is closed, every page of it is dropped (watched with
/// the kernel's own page-cache trace events, since opening the file again
/// to look would itself drop them). On a read-write mount a shared
/// mapping is refused (ENODEV) by the kernel before the daemon is asked,
/// so for every caller alike; a `--read-only` mount, where no mapping can
/// write, allows shared read-only mappings (`FUSE_DIRECT_IO_ALLOW_MMAP`,
/// Linux 6.6+) and drops their pages the same way. (One test: the trace
/// events are global.)
#[test]
#[expect(unsafe_code, reason = "mmap of the mounted file, as a reader would")]
fn no_plaintext_stays_in_the_page_cache_after_the_last_close_mmap_included() {
    use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
    let value = vec![b'p'; 3 * 4096 + 100];
    let len = std::num::NonZeroUsize::new(value.len()).unwrap();
    let map_read_and_close = |path: &std::path::Path, flags: MapFlags| {
        let trace = PageCacheTrace::start(path);
        let f = std::fs::File::open(path).unwrap();
        // SAFETY: a new read-only mapping of an open file, read and
        // unmapped below while `f` is alive.
        let ptr = unsafe { mmap(None, len, ProtFlags::PROT_READ, flags, &f, 0) }.unwrap();
        // SAFETY: the mapping is `len` readable bytes until the munmap.
        let mapped = unsafe { std::slice::from_raw_parts(ptr.as_ptr().cast::<u8>(), len.get()) };
        assert_eq!(mapped, &value[..]);
        let (added, _) = trace.counts();
        assert!(
            added >= 4,
            "the mapping's pages went through the page cache ({added} added)"
        );
        // SAFETY: unmapping the mapping made above, no longer borrowed.
        unsafe { munmap(ptr, len.get()) }.unwrap();
        drop(f);
        // The release arrives after close(2) returns.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let (added, deleted) = trace.counts();
            if deleted >= added {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{flags:?}: {added} pages cached, {deleted} dropped after the last close"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };

    let Some(m) = Mounted::start(&[]) else { return };
    m.cli(&["set", "global/k"], &value).ok();
    let path = m.path("global/k");
    map_read_and_close(&path, MapFlags::MAP_PRIVATE);
    let f = std::fs::File::open(&path).unwrap();
    // SAFETY: as above; the call fails, so no mapping is made.
    let shared = unsafe { mmap(None, len, ProtFlags::PROT_READ, MapFlags::MAP_SHARED, &f, 0) };
    assert_eq!(shared.unwrap_err(), nix::errno::Errno::ENODEV);
    drop(f);
    drop(m);

    let Some(ro) = Mounted::start(&["--read-only"]) else {
        return;
    };
    ro.cli(&["set", "global/k"], &value).ok();
    let path = ro.path("global/k");
    map_read_and_close(&path, MapFlags::MAP_SHARED);
    map_read_and_close(&path, MapFlags::MAP_PRIVATE);
}
