//! `kill -9` of a writer at random instants: every acknowledged write
//! survives, at most the one in flight is lost, and the vault always opens.

use std::process::Stdio;
use std::time::Duration;

use crate::util::{assert_only_referenced, feed, Sandbox, XorShift};

#[test]
fn kill_9_of_writers_loses_no_acknowledged_write() {
    let sb = Sandbox::new();
    sb.set("global/hot", b"initial");
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut acked: Vec<(String, Vec<u8>)> = Vec::new();
    let mut hot_last = b"initial".to_vec();
    // Kill at a random instant within twice the time a `set` takes here
    // (a debug build under a loaded test run is much slower than a release
    // build alone), so that both outcomes happen often whatever the machine.
    let mut took: Vec<u128> = (0..5)
        .map(|_| {
            let t = std::time::Instant::now();
            sb.set("global/warmup", b"w");
            t.elapsed().as_micros()
        })
        .collect();
    took.sort_unstable();
    let window = u64::try_from(took[2] * 2).unwrap().max(1_000);
    let (mut killed, mut finished) = (0, 0);
    for i in 0..200 {
        // Half the writes create new keys, half overwrite one hot key.
        let (r, value) = if i % 2 == 0 {
            (format!("global/k{i}"), format!("value {i}").into_bytes())
        } else {
            ("global/hot".to_owned(), format!("hot {i}").into_bytes())
        };
        let mut child = sb
            .cmd(&["set", &r])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        feed(&mut child, &value);
        std::thread::sleep(Duration::from_micros(rng.below(window)));
        let _ = child.kill(); // SIGKILL; fails harmlessly if it already exited
        let status = child.wait().unwrap();
        if status.success() {
            finished += 1;
            if r == "global/hot" {
                hot_last = value.clone();
            } else {
                acked.push((r.clone(), value.clone()));
            }
        } else {
            // Only SIGKILL may stop a writer: a set that fails on its own
            // (state a previous kill left behind) is a bug, not a kill.
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                status.signal(),
                Some(9),
                "writer {i} for {r} failed on its own: {status}"
            );
            killed += 1;
        }
        // The vault opens, and the hot key holds the last acknowledged value
        // or the one whose writer was just killed.
        let vault = sb.vault();
        let hot = vault.get(&"global/hot".parse().unwrap()).unwrap();
        if hot.expose() != hot_last.as_slice() {
            assert!(!status.success() && r == "global/hot" && hot.expose() == value.as_slice());
            hot_last = value;
        }
        drop(vault);
    }
    let vault = sb.vault();
    for (r, v) in &acked {
        assert_eq!(
            vault.get(&r.parse().unwrap()).unwrap().expose(),
            v.as_slice(),
            "{r} lost"
        );
    }
    // A clean write afterwards sweeps anything the killed writers left.
    sb.set("global/after", b"x");
    assert_only_referenced(&sb);
    // The timing must actually exercise both outcomes.
    assert!(
        killed >= 20 && finished >= 20,
        "killed {killed}, finished {finished} (window {window} us)"
    );
    eprintln!("kill -9 loop: {killed} writers killed, {finished} acknowledged, none lost");
}
