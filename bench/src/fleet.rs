//! The fleet measurements behind `docs/fleet-benchmarks.md` (driven by
//! `scripts/bench-fleet.sh`, on a 3-node etcd cluster on loopback). Each
//! host stood for here is a directory of its own (its local vault, so its
//! own identity, and its fleet cache) and, where the issue asks for
//! separate hosts, a process or an etcd connection of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sealfs::fleet::{EtcdOptions, EtcdStore, FleetVault};
use sealfs::{SensitiveBytes, VaultRef, VaultScope};
use serde_json::json;

use crate::{open_vault, stats};

/// etcd options for `endpoints` (comma-separated) under `prefix`.
fn options(endpoints: &str, prefix: &str) -> EtcdOptions {
    EtcdOptions {
        endpoints: endpoints.split(',').map(str::to_owned).collect(),
        prefix: prefix.to_owned(),
        timeout: Duration::from_secs(10),
        credentials: None,
        tls: None,
    }
}

/// The host whose directory is `dir` (created on first use).
pub(crate) fn host(dir: &Path, endpoints: &str, prefix: &str) -> Result<FleetVault> {
    std::fs::create_dir_all(dir)?;
    let local = open_vault(&dir.join("vault"))?;
    Ok(FleetVault::open(
        local,
        options(endpoints, prefix),
        dir.join("fleet-cache"),
        sealfs::DEFAULT_MAX_VALUE_SIZE,
    )?)
}

/// Its card, for `enroll`.
fn card(dir: &Path) -> Result<String> {
    std::fs::create_dir_all(dir)?;
    Ok(sealfs::fleet::host_card(&open_vault(&dir.join("vault"))?)?.to_string())
}

/// A fleet under `prefix`: `dirs[0]` initialises it and enrolls the others,
/// which join it; returns the founder.
fn fleet(dirs: &[PathBuf], endpoints: &str, prefix: &str) -> Result<FleetVault> {
    let founder = host(&dirs[0], endpoints, prefix)?;
    founder.init()?;
    for d in &dirs[1..] {
        let token = founder.enroll(&card(d)?, false)?;
        host(d, endpoints, prefix)?.join(&token, false, &[])?;
    }
    Ok(founder)
}

fn r(s: &str) -> Result<VaultRef> {
    s.parse().context("a ref")
}

fn value(i: usize, len: usize) -> SensitiveBytes {
    let mut v = format!("value-{i:08}-").into_bytes();
    v.resize(len, b'x');
    SensitiveBytes::from(v)
}

/// Puts the secret `name(i)` for each `i` in `from..to`, on `threads`
/// threads.
fn fill(
    v: &FleetVault,
    (from, to): (usize, usize),
    threads: usize,
    name: impl Fn(usize) -> String + Sync,
) -> Result<()> {
    let next = AtomicUsize::new(from);
    let failed = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while failed.lock().unwrap().is_none() {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= to {
                        return;
                    }
                    let out =
                        r(&name(i)).and_then(|k| v.put(&k, &value(i, 64)).map_err(Into::into));
                    if let Err(e) = out {
                        *failed.lock().unwrap() = Some(e);
                    }
                }
            });
        }
    });
    match failed.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// One scope filled to each count in turn: put and get times there, each
/// as a fresh process (a CLI call) sees them, and as a long-running one
/// (the mount) does.
pub(crate) fn scale(
    dir: &Path,
    endpoints: &str,
    counts: &[usize],
    samples: usize,
    threads: usize,
) -> Result<serde_json::Value> {
    // h1 only lists, each count once cold (shards it has not read yet)
    // and once warm, as a host's `sealfs list` does.
    let v = fleet(&[dir.join("h0"), dir.join("h1")], endpoints, "bench-scale")?;
    let lister = host(&dir.join("h1"), endpoints, "bench-scale")?;
    let mut filled = 0;
    let mut rows = Vec::new();
    for &count in counts {
        let t = Instant::now();
        fill(&v, (filled, count), threads, |i| format!("global/s{i:07}"))?;
        let fill_s = t.elapsed().as_secs_f64();
        eprintln!(
            "scale: {count} secrets ({} added in {fill_s:.1} s)",
            count - filled
        );
        filled = count;
        let (mut puts, mut gets, mut cold_gets) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..samples {
            // Rewrites of secrets spread over the scope.
            let k = r(&format!("global/s{:07}", (i * 7919) % count))?;
            let t = Instant::now();
            v.put(&k, &value(i, 64))?;
            puts.push(t.elapsed());
            let t = Instant::now();
            v.get(&k)?;
            gets.push(t.elapsed());
        }
        // A fresh process: nothing memoised.
        for i in 0..samples.min(50) {
            let k = r(&format!("global/s{:07}", (i * 104_729) % count))?;
            let t = Instant::now();
            host(&dir.join("h0"), endpoints, "bench-scale")?.get(&k)?;
            cold_gets.push(t.elapsed());
        }
        let global = VaultScope::Global;
        let t = Instant::now();
        let listed = lister.list(Some(&global))?.len();
        let list_cold_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        lister.list(Some(&global))?;
        let list_warm_s = t.elapsed().as_secs_f64();
        if listed != count {
            bail!("listed {listed} secrets of {count}");
        }
        eprintln!(
            "scale: listing {count} secrets took {list_cold_s:.2} s cold, {list_warm_s:.2} s warm"
        );
        // What a write rewrites (and sends each watcher): one shard.
        let raw = EtcdStore::new(options(endpoints, "bench-scale"))?;
        let sizes: Vec<usize> = raw
            .get_prefix(&raw.key("index/global/"))?
            .iter()
            .map(|(_, rec)| rec.value.len())
            .collect();
        let shards = json!({
            "count": sizes.len(),
            "mean_bytes": sizes.iter().sum::<usize>() / sizes.len().max(1),
            "max_bytes": sizes.iter().max().copied().unwrap_or(0),
        });
        eprintln!("scale: {count} secrets in {shards}");
        rows.push(json!({
            "count": count,
            "fill_s": fill_s,
            "put": stats(puts),
            "get": stats(gets),
            "get_fresh_process": stats(cold_gets),
            "shards": shards,
            "list_cold_s": list_cold_s,
            "list_warm_s": list_warm_s,
        }));
    }
    Ok(json!({ "scale": rows }))
}

/// `procs` processes, each a host of its own, each putting `puts` secrets
/// of its own into one scope at once: aggregate puts per second, and
/// every acknowledged put read back.
pub(crate) fn writers(
    dir: &Path,
    endpoints: &str,
    procs: usize,
    puts: usize,
) -> Result<serde_json::Value> {
    let dirs: Vec<PathBuf> = (0..=procs).map(|i| dir.join(format!("w{i}"))).collect();
    let founder = fleet(&dirs, endpoints, "bench-writers")?;
    // The scope exists before the race (its keyring is one write).
    founder.put(&r("global/ready")?, &value(0, 8))?;
    let exe = std::env::current_exe()?;
    let at = std::time::SystemTime::now() + Duration::from_secs(2);
    let at_ms = at
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis()
        .to_string();
    let children: Vec<_> = dirs[1..]
        .iter()
        .enumerate()
        .map(|(w, d)| {
            Command::new(&exe)
                .args(["fleet-writer", "--dir"])
                .arg(d)
                .args(["--endpoints", endpoints, "--writer", &w.to_string()])
                .args(["--puts", &puts.to_string(), "--start-ms", &at_ms])
                .stdout(Stdio::piped())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let mut acked = 0;
    let mut retries = 0;
    let mut ends = Vec::new();
    for c in children {
        let out = c.wait_with_output()?;
        if !out.status.success() {
            bail!("a writer failed: {}", String::from_utf8_lossy(&out.stdout));
        }
        let o: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        acked += o["acked"].as_u64().unwrap_or(0);
        retries += o["failed"].as_u64().unwrap_or(0);
        ends.push(o["end_ms"].as_f64().unwrap_or(0.0));
    }
    let at_ms: f64 = at_ms.parse()?;
    let wall_s = (ends.iter().copied().fold(0.0, f64::max) - at_ms) / 1e3;
    // Every acknowledged put is there, with its value.
    let check = host(&dirs[0], endpoints, "bench-writers")?;
    let mut lost = 0;
    for w in 0..procs {
        for i in 0..puts {
            let k = r(&format!("global/w{w:03}-{i:05}"))?;
            match check.get(&k) {
                Ok(v) if v.expose() == value(w * 1_000_000 + i, 64).expose() => {}
                _ => lost += 1,
            }
        }
    }
    Ok(json!({
        "writers": procs,
        "puts_each": puts,
        "acked": acked,
        "failed": retries,
        "lost": lost,
        "wall_s": wall_s,
        "puts_per_s": acked as f64 / wall_s,
    }))
}

/// One writer process of [`writers`].
pub(crate) fn writer(
    dir: &Path,
    endpoints: &str,
    w: usize,
    puts: usize,
    start_ms: u128,
) -> Result<serde_json::Value> {
    let v = host(dir, endpoints, "bench-writers")?;
    v.get(&r("global/ready")?)?;
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    };
    while now_ms() < start_ms {
        std::thread::sleep(Duration::from_millis(1));
    }
    let (mut acked, mut failed) = (0, 0);
    for i in 0..puts {
        let k = r(&format!("global/w{w:03}-{i:05}"))?;
        match v.put(&k, &value(w * 1_000_000 + i, 64)) {
            Ok(_) => acked += 1,
            Err(e) => {
                eprintln!("writer {w}: {e}");
                failed += 1;
            }
        }
    }
    Ok(json!({ "acked": acked, "failed": failed, "end_ms": now_ms() as f64 }))
}

/// What a watcher saw of a rotation: when the rotated shard reached it,
/// and the keys of the events it received meanwhile.
type Seen = (Option<Instant>, Vec<String>);

/// `watchers` separate etcd connections watching as mounts do, while one
/// host rotates a secret `rotations` times (one second apart): how long
/// each rotation takes to reach every watcher, and the bytes each receives
/// for it (keys and values of the events: the index shard, never the
/// value), for two value sizes and with another scope busy meanwhile;
/// then with that scope granted to the writing host only, the watchers
/// watching what a host left out of it watches.
pub(crate) fn watch(
    dir: &Path,
    endpoints: &str,
    watchers: usize,
    rotations: usize,
) -> Result<serde_json::Value> {
    let v = fleet(&[dir.join("h0"), dir.join("h1")], endpoints, "bench-watch")?;
    let target = r("global/rotated")?;
    v.put(&target, &value(0, 64))?;
    v.put(&r("principal:other/k")?, &value(0, 64))?;
    let plan = host(&dir.join("h1"), endpoints, "bench-watch")?.watch_plan()?;
    let w = Watch {
        v: &v,
        endpoints,
        watchers,
        rotations,
    };
    let mut rows = w.cases(&plan, &[(64, false), (65_536, false), (64, true)])?;
    // The busy scope granted to the writer only: a host left out of it
    // watches the index of the others alone.
    let other: VaultScope = "principal:other".parse()?;
    v.grant_scope(&other, Some(&[v.card().to_string()]))?;
    let plan = host(&dir.join("h1"), endpoints, "bench-watch")?.watch_plan()?;
    for mut row in w.cases(&plan, &[(64, true)])? {
        row["other_scope_granted_elsewhere"] = true.into();
        rows.push(row);
    }
    Ok(json!({ "watchers": watchers, "rotations": rotations, "rows": rows }))
}

/// The setting of [`watch`].
struct Watch<'a> {
    v: &'a FleetVault,
    endpoints: &'a str,
    watchers: usize,
    rotations: usize,
}

impl Watch<'_> {
    /// One row per case (value size, whether another scope is written
    /// meanwhile), the watchers watching the key ranges `plan`.
    fn cases(
        &self,
        plan: &[(String, String)],
        cases: &[(usize, bool)],
    ) -> Result<Vec<serde_json::Value>> {
        let (v, endpoints, watchers) = (self.v, self.endpoints, self.watchers);
        let target = r("global/rotated")?;
        let shard = format!(
            "index/global/{}",
            sealfs::fleet::keys::shard_of(&VaultScope::Global, "rotated")
        );
        let stop = Arc::new(AtomicBool::new(false));
        // Per watcher: (when it saw the rotated shard change, event payload
        // bytes since the last reset).
        let seen: Arc<Vec<Mutex<Seen>>> = Arc::new(
            (0..watchers)
                .map(|_| Mutex::new((None, Vec::new())))
                .collect(),
        );
        let raw = EtcdStore::new(options(endpoints, "bench-watch"))?;
        let shard_key = raw.key(&shard);
        let ready = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        for w in 0..watchers {
            let (stop, seen, ready) = (stop.clone(), seen.clone(), ready.clone());
            let (endpoints, shard_key) = (endpoints.to_owned(), shard_key.clone());
            let plan = plan.to_vec();
            threads.push(std::thread::spawn(move || -> Result<()> {
                let store = EtcdStore::new(options(&endpoints, "bench-watch"))?;
                let rev = store.revision()?;
                ready.fetch_add(1, Ordering::SeqCst);
                store.watch_ranges(rev, &stop, &plan, |events| {
                    let now = Instant::now();
                    let mut s = seen[w].lock().unwrap();
                    if events.iter().any(|(k, _)| *k == shard_key) && s.0.is_none() {
                        s.0 = Some(now);
                    }
                    s.1.extend(events.into_iter().map(|(k, _)| k));
                    std::ops::ControlFlow::Continue(())
                })?;
                Ok(())
            }));
        }
        while ready.load(Ordering::SeqCst) < watchers {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_secs(1));
        let mut rows = Vec::new();
        for &(size, busy) in cases {
            let mut latencies = Vec::new();
            let mut bytes = Vec::new();
            for i in 0..self.rotations {
                for s in seen.iter() {
                    *s.lock().unwrap() = (None, Vec::new());
                }
                if busy {
                    // Another scope written meanwhile: its shards reach
                    // every watcher whose watch covers that scope.
                    for j in 0..10 {
                        v.put(&r(&format!("principal:other/k{j}"))?, &value(i, 64))?;
                    }
                }
                let t0 = Instant::now();
                v.put(&target, &value(i, size))?;
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    let all = seen.iter().all(|s| s.lock().unwrap().0.is_some());
                    if all || Instant::now() > deadline {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                std::thread::sleep(Duration::from_millis(300));
                // Each event carries the record's key and value as written
                // (read back now: nothing has changed them since).
                let mut sizes = std::collections::HashMap::new();
                for s in seen.iter() {
                    let s = s.lock().unwrap();
                    match s.0 {
                        Some(at) => latencies.push(at - t0),
                        None => bail!("a rotation did not reach a watcher within 10 s"),
                    }
                    let mut total = 0;
                    for k in &s.1 {
                        if !sizes.contains_key(k) {
                            let len = raw.get(k)?.map_or(0, |r| r.value.len());
                            sizes.insert(k.clone(), k.len() + len);
                        }
                        total += sizes[k];
                    }
                    bytes.push(total);
                }
                std::thread::sleep(Duration::from_millis(700));
            }
            bytes.sort_unstable();
            rows.push(json!({
                "value_bytes": size,
                "other_scope_busy": busy,
                "watched_ranges": plan.len(),
                "reach": stats(latencies),
                "bytes_per_watcher_median": bytes[bytes.len() / 2],
                "bytes_per_watcher_max": bytes[bytes.len() - 1],
            }));
        }
        stop.store(true, Ordering::SeqCst);
        for t in threads {
            t.join().expect("a watcher thread")?;
        }
        Ok(rows)
    }
}

/// A fleet of `members` hosts and `scopes` scopes (one secret each): the
/// time `fleet revoke` of one member takes.
pub(crate) fn revoke(
    dir: &Path,
    endpoints: &str,
    members: usize,
    scopes: usize,
    threads: usize,
) -> Result<serde_json::Value> {
    let founder = host(&dir.join("m0"), endpoints, "bench-revoke")?;
    founder.init()?;
    let t = Instant::now();
    let mut victim = String::new();
    for i in 1..members {
        let c = card(&dir.join(format!("m{i}")))?;
        founder.enroll(&c, false)?;
        victim = c;
    }
    let enroll_s = t.elapsed().as_secs_f64();
    eprintln!("revoke: {members} members enrolled in {enroll_s:.1} s");
    let t = Instant::now();
    fill(&founder, (0, scopes), threads, |i| {
        format!("principal:s{i:04}/k")
    })?;
    let scopes_s = t.elapsed().as_secs_f64();
    eprintln!("revoke: {scopes} scopes made in {scopes_s:.1} s");
    let t = Instant::now();
    let done = founder.revoke(&victim)?;
    let revoke_s = t.elapsed().as_secs_f64();
    Ok(json!({
        "members": members,
        "scopes": scopes,
        "enroll_all_s": enroll_s,
        "make_scopes_s": scopes_s,
        "revoke_s": revoke_s,
        "rotated": done.rotated,
    }))
}
