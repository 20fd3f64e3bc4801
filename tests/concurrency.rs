//! Several processes writing one vault at once lose nothing.

use std::collections::HashSet;
use std::thread;

use crate::util::{assert_no_leftovers, assert_only_referenced, Sandbox};

const WRITERS: usize = 8;

#[test]
fn eight_processes_writing_fifty_distinct_keys_each() {
    let sb = Sandbox::new();
    thread::scope(|s| {
        for w in 0..WRITERS {
            let sb = &sb;
            s.spawn(move || {
                for k in 0..50 {
                    let r = format!("principal:w{w}/key-{k}");
                    // Nothing on stderr: another writer's write in flight
                    // is nothing to warn about.
                    let out = sb
                        .run(&["set", &r], format!("value {w} {k}").as_bytes())
                        .ok();
                    assert_eq!(out.stderr, "", "{r}");
                }
            });
        }
    });
    let vault = sb.vault();
    let entries = vault.list(None).unwrap();
    assert_eq!(entries.len(), WRITERS * 50);
    for w in 0..WRITERS {
        for k in 0..50 {
            let r = format!("principal:w{w}/key-{k}").parse().unwrap();
            assert_eq!(
                vault.get(&r).unwrap().expose(),
                format!("value {w} {k}").as_bytes()
            );
        }
    }
    assert_no_leftovers(&sb, WRITERS * 50);
}

#[test]
fn eight_processes_rewriting_one_key() {
    let sb = Sandbox::new();
    const ROUNDS: usize = 20;
    let written: HashSet<String> = (0..WRITERS)
        .flat_map(|w| (0..ROUNDS).map(move |i| format!("writer {w} round {i}")))
        .collect();
    thread::scope(|s| {
        for w in 0..WRITERS {
            let (sb, written) = (&sb, &written);
            s.spawn(move || {
                for i in 0..ROUNDS {
                    sb.set("global/hot", format!("writer {w} round {i}").as_bytes());
                    // Readers run alongside the writers and always see a
                    // whole value that some writer wrote.
                    let v = String::from_utf8(sb.get("global/hot")).unwrap();
                    assert!(written.contains(&v), "{v:?} was never written");
                }
            });
        }
    });
    let vault = sb.vault();
    let r = "global/hot".parse().unwrap();
    let last = String::from_utf8(vault.get(&r).unwrap().expose().to_vec()).unwrap();
    assert!(written.contains(&last), "{last}");
    // Every acknowledged write took its own version: none was lost.
    assert_eq!(
        vault.entry(&r).unwrap().unwrap().version as usize,
        WRITERS * ROUNDS
    );
    // The current value and the ten before it, nothing else.
    assert_only_referenced(&sb);
    assert_no_leftovers(&sb, 11);
}

/// 8 processes storing one new key with `--if-absent` at once: exactly one
/// stores, the others are told it exists, and its value is the one kept.
#[test]
fn eight_processes_racing_if_absent_store_exactly_once() {
    let sb = Sandbox::new();
    let wins: Vec<usize> = thread::scope(|s| {
        let runs: Vec<_> = (0..WRITERS)
            .map(|w| {
                let sb = &sb;
                s.spawn(move || {
                    let out = sb.run(
                        &["set", "global/claim", "--if-absent"],
                        format!("writer {w}").as_bytes(),
                    );
                    match out.code {
                        Some(0) => Some(w),
                        _ => {
                            out.fails(1, "it exists already, at version 1 (--if-absent)");
                            None
                        }
                    }
                })
            })
            .collect();
        runs.into_iter().filter_map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(wins.len(), 1, "{wins:?}");
    assert_eq!(
        sb.get("global/claim"),
        format!("writer {}", wins[0]).into_bytes()
    );
}

/// 8 processes at a time, 500 mixed operations each (put/get/list/delete on
/// shared and own keys): no acknowledged update lost, no corruption, no
/// deadlock, bounded time.
#[test]
fn eight_processes_five_hundred_mixed_operations_each() {
    use crate::util::XorShift;
    let sb = Sandbox::new();
    sb.set("global/shared", b"shared 0");
    let started = std::time::Instant::now();
    /// Per writer: its index, its own keys' acknowledged values, and the
    /// values it wrote to the shared key.
    type Outcome = (
        usize,
        std::collections::BTreeMap<String, Vec<u8>>,
        Vec<String>,
    );
    let results: Vec<Outcome> = thread::scope(|s| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|w| {
                let sb = &sb;
                s.spawn(move || {
                    let mut rng = XorShift(0x5eed_0000 + w as u64 * 7919);
                    let mut own = std::collections::BTreeMap::new();
                    let mut shared_written = Vec::new();
                    for i in 0..500 {
                        let k = format!("principal:w{w}/k{}", rng.below(20));
                        match rng.below(10) {
                            0..=2 => {
                                let v = format!("w{w} i{i}").into_bytes();
                                sb.set(&k, &v);
                                own.insert(k, v);
                            }
                            3 => {
                                let v = format!("shared w{w} i{i}");
                                sb.set("global/shared", v.as_bytes());
                                shared_written.push(v);
                            }
                            4..=5 => {
                                let out = sb.run(&["get", &k], b"");
                                match own.get(&k) {
                                    Some(v) => assert_eq!(&out.ok().stdout, v, "{k}"),
                                    None => {
                                        out.fails(1, &format!("secret not found: {k}"));
                                    }
                                }
                            }
                            6 => {
                                let v = sb.run(&["get", "global/shared"], b"").ok().stdout;
                                let v = String::from_utf8(v).unwrap();
                                assert!(is_a_shared_write(&v), "{v:?} was never written");
                            }
                            7..=8 => {
                                let list = sb
                                    .run(&["list", &format!("principal:w{w}")], b"")
                                    .ok()
                                    .stdout_str();
                                assert_eq!(list.lines().count(), own.len(), "{list}");
                            }
                            _ => {
                                let out = sb.run(&["delete", "--force", &k], b"");
                                out.ok();
                                own.remove(&k);
                            }
                        }
                    }
                    (w, own, shared_written)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let took = started.elapsed();
    let vault = sb.vault();
    let mut all_shared = vec!["shared 0".to_owned()];
    for (w, own, shared) in results {
        let listed = vault
            .list(Some(&format!("principal:w{w}").parse().unwrap()))
            .unwrap();
        assert_eq!(listed.len(), own.len(), "writer {w}");
        for (k, v) in own {
            assert_eq!(
                vault.get(&k.parse().unwrap()).unwrap().expose(),
                v.as_slice(),
                "{k} lost"
            );
        }
        all_shared.extend(shared);
    }
    let shared = String::from_utf8(
        vault
            .get(&"global/shared".parse().unwrap())
            .unwrap()
            .expose()
            .to_vec(),
    )
    .unwrap();
    assert!(all_shared.contains(&shared), "{shared}");
    assert_only_referenced(&sb);
    assert!(took < std::time::Duration::from_secs(300), "took {took:?}");
    eprintln!("8 x 500 mixed CLI operations in {took:?}");
}

/// Whether `v` is a value the mixed test writes to `global/shared`: its seed
/// or `shared w{writer} i{op}` exactly, so a torn or spliced value fails.
fn is_a_shared_write(v: &str) -> bool {
    if v == "shared 0" {
        return true;
    }
    let Some((w, i)) = v
        .strip_prefix("shared w")
        .and_then(|rest| rest.split_once(" i"))
    else {
        return false;
    };
    matches!((w.parse::<usize>(), i.parse::<usize>()), (Ok(w), Ok(i)) if w < WRITERS && i < 500 && v == format!("shared w{w} i{i}"))
}

/// `Vault::load_or_create` from 8 processes at once: each generates its
/// own value, and all of them return the one stored. (This test runs
/// itself as the 8 processes, told apart by `SEALFS_LOAD_OR_CREATE`.)
#[test]
fn load_or_create_from_eight_processes_yields_one_value() {
    const NAME: &str = "concurrency::load_or_create_from_eight_processes_yields_one_value";
    let r: sealfs::VaultRef = "global/signing_key".parse().unwrap();
    if let Some(dir) = std::env::var_os("SEALFS_LOAD_OR_CREATE") {
        let dir = std::path::PathBuf::from(dir);
        let go = dir.join("go");
        while !go.exists() {
            thread::sleep(std::time::Duration::from_millis(1));
        }
        let vault = sealfs::Vault::open(sealfs::VaultConfig::new(dir.join("vault"))).unwrap();
        let mine = format!("generated by {}", std::process::id());
        let got = vault
            .load_or_create(&r, || sealfs::SensitiveBytes::from_slice(mine.as_bytes()))
            .unwrap();
        println!("LOADED={}", String::from_utf8_lossy(got.expose()));
        return;
    }
    let sb = Sandbox::new();
    sb.set("global/other", b"o");
    let children: Vec<_> = (0..WRITERS)
        .map(|_| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", NAME, "--nocapture", "--test-threads", "1"])
                .env("SEALFS_LOAD_OR_CREATE", sb.path())
                .env("SEALFS_BACKEND", "encrypted-file")
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    std::fs::write(sb.path().join("go"), b"").unwrap();
    let mut seen = HashSet::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let line = text
            .lines()
            // libtest prints `test NAME ... ` before the output.
            .find_map(|l| l.split_once("LOADED=").map(|(_, v)| v))
            .unwrap_or_else(|| panic!("no value in {text}"))
            .to_owned();
        seen.insert(line);
    }
    assert_eq!(seen.len(), 1, "{seen:?}");
    let stored = sb.vault().get(&r).unwrap();
    assert!(seen.contains(&*String::from_utf8_lossy(stored.expose())));
    // Stored once: the first version, nothing kept before it.
    assert_eq!(sb.vault().entry(&r).unwrap().unwrap().version, 1);
    assert_eq!(
        sb.run(&["history", "global/signing_key", "--json"], b"")
            .ok()
            .stdout_str()
            .matches("\"version\"")
            .count(),
        1
    );
}
