//! The mount under load and over time: many readers against a rotating
//! value, a long create/read/delete soak, and the daemon killed mid-work.
//! Memory and open files of the daemon must come back to where they were.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sealfs::{SensitiveBytes, Vault, VaultConfig};

use crate::util::Mounted;

/// (resident KiB, open fds) of process `pid`.
fn usage(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    (rss, fds)
}

/// A load knob: `default` unless `var` is set (to shorten a run while
/// iterating). Never below `floor`, where the before/after comparison would
/// measure next to nothing, and never below `default` under CI.
fn knob(var: &str, default: u64, floor: u64) -> u64 {
    let Ok(v) = std::env::var(var) else {
        return default;
    };
    let n: u64 = v
        .parse()
        .unwrap_or_else(|_| panic!("{var}={v:?} is not a number"));
    if std::env::var_os("CI").is_some() {
        assert!(
            n >= default,
            "{var}={n}: CI runs at least the default {default}"
        );
    }
    assert!(
        n >= floor,
        "{var}={n} is below {floor}: too short a run to compare anything"
    );
    n
}

#[test]
fn sixteen_readers_while_a_writer_rotates_the_value_every_10ms() {
    let Some(m) = Mounted::start(&["--threads", "8"]) else {
        return;
    };
    let a = vec![b'a'; 700];
    let b = vec![b'b'; 1900];
    m.set("global/rot", &a);
    for _ in 0..200 {
        std::fs::read(m.path("global/rot")).unwrap();
    }
    let before = usage(m.pid());
    let stop = AtomicBool::new(false);
    let reads = AtomicU64::new(0);
    let rotations = AtomicU64::new(0);
    let run_for = Duration::from_secs(knob("SEALFS_LOAD_SECS", 30, 5));
    std::thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let v = std::fs::read(m.path("global/rot")).unwrap();
                    assert!(v == a || v == b, "torn read: {} bytes", v.len());
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        s.spawn(|| {
            let vault = Vault::open(VaultConfig::new(m.vault_dir())).unwrap();
            let r = "global/rot".parse().unwrap();
            let started = Instant::now();
            let mut i = 0u64;
            while started.elapsed() < run_for {
                let v = if i.is_multiple_of(2) { &b } else { &a };
                vault.put(&r, SensitiveBytes::from_slice(v)).unwrap();
                rotations.fetch_add(1, Ordering::Relaxed);
                i += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            stop.store(true, Ordering::Relaxed);
        });
    });
    std::thread::sleep(Duration::from_millis(500));
    let after = usage(m.pid());
    let (reads, rotations) = (
        reads.load(Ordering::Relaxed),
        rotations.load(Ordering::Relaxed),
    );
    eprintln!(
        "16 readers for {run_for:?}: {reads} whole reads, {rotations} rotations; daemon RSS {} -> {} KiB, fds {} -> {}",
        before.0, after.0, before.1, after.1
    );
    assert!(
        reads > 1000 && rotations > 100,
        "{reads} reads, {rotations} rotations"
    );
    assert_eq!(
        after.1, before.1,
        "the daemon's open files came back to their start"
    );
    assert!(
        after.0 < before.0 + 4 * 1024,
        "RSS grew from {} to {} KiB",
        before.0,
        after.0
    );
}

#[test]
fn ten_thousand_create_read_delete_cycles_with_flat_memory() {
    let Some(m) = Mounted::start(&[]) else { return };
    let cycles = knob("SEALFS_SOAK_CYCLES", 10_000, 1_000) as usize;
    let mut at_warm = (0, 0);
    let started = Instant::now();
    for i in 0..cycles {
        let p = m.path(&format!("global/soak-{i}"));
        let v = format!("value {i}");
        std::fs::write(&p, &v).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), v.as_bytes());
        std::fs::remove_file(&p).unwrap();
        if i == cycles / 10 {
            at_warm = usage(m.pid());
        }
    }
    let at_end = usage(m.pid());
    eprintln!(
        "{cycles} create/read/delete cycles in {:?}; daemon RSS {} KiB at 10% -> {} KiB at the end, fds {} -> {}",
        started.elapsed(),
        at_warm.0,
        at_end.0,
        at_warm.1,
        at_end.1
    );
    assert_eq!(at_end.1, at_warm.1);
    assert!(
        at_end.0 < at_warm.0 + 4 * 1024,
        "RSS grew from {} to {} KiB",
        at_warm.0,
        at_end.0
    );
    assert_eq!(m.cli(&["list"], b"").ok().text(), "");
}

/// `v{n}` exactly (so one of the values the writer wrote), else `None`.
fn written_n(v: &[u8]) -> Option<u64> {
    let n: u64 = std::str::from_utf8(v)
        .ok()?
        .strip_prefix('v')?
        .parse()
        .ok()?;
    (format!("v{n}").as_bytes() == v).then_some(n)
}

#[test]
fn kill_9_of_the_daemon_during_reads_and_writes_then_a_clean_restart() {
    let Some(mut m) = Mounted::start(&[]) else {
        return;
    };
    m.set("global/k", b"v0");
    let acked = AtomicU64::new(0);
    let killed = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    // Whole reads each reader finished before the kill.
    let done_reads: Vec<AtomicU64> = (0..4).map(|_| AtomicU64::new(0)).collect();
    let reads: Vec<u64> = std::thread::scope(|s| {
        s.spawn(|| {
            let mut n = 1u64;
            while !stop.load(Ordering::Relaxed) {
                // Acknowledged once fsync() returned OK (std's close
                // ignores errors, so fs::write cannot tell).
                let written = std::fs::File::create(m.path("global/k")).and_then(|mut f| {
                    use std::io::Write;
                    f.write_all(format!("v{n}").as_bytes())?;
                    f.sync_all()
                });
                if let Err(e) = written {
                    assert!(
                        killed.load(Ordering::SeqCst),
                        "writing v{n} failed before the kill: {e}"
                    );
                    break;
                }
                acked.store(n, Ordering::SeqCst);
                n += 1;
            }
        });
        let readers: Vec<_> = done_reads
            .iter()
            .map(|done_reads| {
                s.spawn(|| {
                    let mut reads = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        match std::fs::read(m.path("global/k")) {
                            Ok(v) => {
                                // Loaded after the read: the writer may have
                                // committed one value it has not acked yet.
                                let done = acked.load(Ordering::SeqCst);
                                let n = written_n(&v).unwrap_or_else(|| {
                                    panic!(
                                        "read {:?}, which was never written",
                                        String::from_utf8_lossy(&v)
                                    )
                                });
                                assert!(
                                    n <= done + 1,
                                    "read v{n}, but the writer had acknowledged only v{done}"
                                );
                                if !killed.load(Ordering::SeqCst) {
                                    reads += 1;
                                    done_reads.store(reads, Ordering::SeqCst);
                                }
                            }
                            Err(e) => {
                                assert!(
                                    killed.load(Ordering::SeqCst),
                                    "a read failed before the kill: {e}"
                                );
                                break;
                            }
                        }
                    }
                    reads
                })
            })
            .collect();
        // The kill comes once every reader has read and the writer has
        // had a few writes acknowledged (at least 700 ms, longer on a
        // loaded machine), so it lands among reads and writes.
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_millis(700)
            || (acked.load(Ordering::SeqCst) <= 5
                || done_reads.iter().any(|r| r.load(Ordering::SeqCst) == 0))
                && started.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        killed.store(true, Ordering::SeqCst);
        m.signal(nix::sys::signal::Signal::SIGKILL);
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        readers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    m.reap();
    let last = acked.load(Ordering::SeqCst);
    eprintln!("before the kill: {last} acknowledged writes, reads per reader {reads:?}");
    assert!(
        reads.iter().all(|&r| r > 0),
        "every reader read before the kill: {reads:?}"
    );
    assert!(last > 5, "only {last} writes before the kill");
    // A new daemon on the same mountpoint, no manual cleanup.
    m.mount(&[]);
    let now = std::fs::read(m.path("global/k")).unwrap();
    let n = written_n(&now)
        .unwrap_or_else(|| panic!("the vault holds {:?}", String::from_utf8_lossy(&now)));
    assert!(
        (last..=last + 1).contains(&n),
        "acknowledged v{last} but the vault holds v{n}"
    );
    std::fs::write(m.path("global/k"), b"after restart").unwrap();
    assert_eq!(m.get("global/k"), b"after restart");
    let blobs = walk_count(&m.vault_dir().join("objects"));
    // The current value and the earlier ones kept: nothing else.
    let history = m.cli(&["history", "global/k", "--json"], b"").ok().stdout;
    let kept = serde_json::from_slice::<Vec<serde_json::Value>>(&history)
        .unwrap()
        .len();
    assert_eq!(blobs, kept, "leftovers of the killed writes are swept");
    assert!(kept > 1, "the history holds the writes before: {kept}");
    let tmp = walk_count(&m.vault_dir().join("tmp"));
    assert_eq!(tmp, 0, "temp files of the killed writes are swept");
}

fn walk_count(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk_count(&p)
            } else {
                1
            }
        })
        .sum()
}
