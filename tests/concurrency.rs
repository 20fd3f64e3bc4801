//! Several processes writing one vault at once lose nothing.

use std::collections::HashSet;
use std::thread;

use crate::util::{assert_no_leftovers, Sandbox};

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
                    sb.set(&r, format!("value {w} {k}").as_bytes());
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
    thread::scope(|s| {
        for w in 0..WRITERS {
            let sb = &sb;
            s.spawn(move || {
                for i in 0..ROUNDS {
                    sb.set("global/hot", format!("writer {w} round {i}").as_bytes());
                    // Readers run alongside the writers and always see a whole value.
                    let v = String::from_utf8(sb.get("global/hot")).unwrap();
                    assert!(v.starts_with("writer "), "{v}");
                }
            });
        }
    });
    let written: HashSet<String> = (0..WRITERS)
        .flat_map(|w| (0..ROUNDS).map(move |i| format!("writer {w} round {i}")))
        .collect();
    let vault = sb.vault();
    let r = "global/hot".parse().unwrap();
    let last = String::from_utf8(vault.get(&r).unwrap().expose().to_vec()).unwrap();
    assert!(written.contains(&last), "{last}");
    // Every acknowledged write took its own version: none was lost.
    assert_eq!(
        vault.entry(&r).unwrap().unwrap().version as usize,
        WRITERS * ROUNDS
    );
    assert_no_leftovers(&sb, 1);
}
