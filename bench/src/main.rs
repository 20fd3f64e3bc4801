//! `sealfs-bench`: the measuring half of `scripts/bench.sh`. Each subcommand
//! prints one JSON object on stdout; the script turns them into tables and
//! plots. Times are wall-clock, taken around each single operation.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sealfs::{SensitiveBytes, Vault, VaultConfig, VaultRef, VaultScope};
use serde_json::json;

#[cfg(target_os = "linux")]
mod barefs;
#[cfg(feature = "fleet")]
mod fleet;

#[derive(Parser)]
#[command(name = "sealfs-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fleet: one scope filled to each count, put and get times there.
    #[cfg(feature = "fleet")]
    FleetScale {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        endpoints: String,
        #[arg(long, value_delimiter = ',', default_value = "100,100000")]
        counts: Vec<usize>,
        #[arg(long, default_value_t = 200)]
        samples: usize,
        #[arg(long, default_value_t = 16)]
        threads: usize,
    },
    /// Fleet: P writer processes (hosts) on one scope at once.
    #[cfg(feature = "fleet")]
    FleetWriters {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        endpoints: String,
        #[arg(long, default_value_t = 50)]
        procs: usize,
        #[arg(long, default_value_t = 100)]
        puts: usize,
    },
    /// One writer process of fleet-writers.
    #[cfg(feature = "fleet")]
    #[command(hide = true)]
    FleetWriter {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        endpoints: String,
        #[arg(long)]
        writer: usize,
        #[arg(long)]
        puts: usize,
        #[arg(long)]
        start_ms: u128,
    },
    /// Fleet: W watching connections, how fast and how big a rotation reaches them.
    #[cfg(feature = "fleet")]
    FleetWatch {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        endpoints: String,
        #[arg(long, default_value_t = 200)]
        watchers: usize,
        #[arg(long, default_value_t = 10)]
        rotations: usize,
    },
    /// Fleet: `fleet revoke` with M members and S scopes.
    #[cfg(feature = "fleet")]
    FleetRevoke {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        endpoints: String,
        #[arg(long, default_value_t = 500)]
        members: usize,
        #[arg(long, default_value_t = 1000)]
        scopes: usize,
        #[arg(long, default_value_t = 16)]
        threads: usize,
    },
    /// One process opens, reads and closes each file in turn: per-file cost.
    OpenLoop {
        #[arg(long)]
        dir: PathBuf,
        /// Files named k0000..k{N-1}
        #[arg(long, default_value_t = 1000)]
        files: usize,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// T threads open+read+close files for S seconds: total opens per second.
    Concurrent {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 1000)]
        files: usize,
        #[arg(long)]
        threads: usize,
        #[arg(long, default_value_t = 3)]
        seconds: u64,
    },
    /// Fills a vault to each count and times put, get and list there.
    Scale {
        #[arg(long)]
        vault_dir: PathBuf,
        #[arg(long, value_delimiter = ',', default_value = "100,10000,100000")]
        counts: Vec<usize>,
        #[arg(long, default_value_t = 200)]
        samples: usize,
    },
    /// What the rollback anchor costs a put: the median put (which writes
    /// the anchor) beside the median anchor write alone, same file system.
    Anchor {
        #[arg(long)]
        vault_dir: PathBuf,
        #[arg(long, default_value_t = 200)]
        samples: usize,
    },
    /// The library's own part of an open through the mount: a long-lived
    /// vault reads (checks, decrypts) each of the first N filled secrets in turn
    ReadLoop {
        #[arg(long)]
        vault_dir: PathBuf,
        #[arg(long, default_value_t = 300)]
        files: usize,
        #[arg(long, default_value_t = 9)]
        rounds: usize,
    },
    /// Mounts the floor of the mount benches: a fuser fs with sealfs-mountd's
    /// mount options, flags, TTL and threads, serving global/k0000.. with
    /// fixed content; runs until SIGTERM.
    #[cfg(target_os = "linux")]
    BareFs {
        mountpoint: PathBuf,
        #[arg(long, default_value_t = 1000)]
        files: usize,
        /// sealfs-mountd's default
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Writes N secrets of 64 bytes as global/k0000.. (for the mount benches).
    Fill {
        #[arg(long)]
        vault_dir: PathBuf,
        #[arg(long, default_value_t = 1000)]
        files: usize,
    },
}

fn name(i: usize) -> String {
    format!("k{i:04}")
}

fn value64(i: usize) -> Vec<u8> {
    let mut v = format!("secret-{i:08}-").into_bytes();
    v.resize(64, b'x');
    v
}

/// Median, p99 and mean of `samples`, in microseconds.
fn stats(mut samples: Vec<Duration>) -> serde_json::Value {
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let n = samples.len();
    let mean = samples.iter().map(|d| us(*d)).sum::<f64>() / n as f64;
    json!({
        "n": n,
        "median_us": us(samples[n / 2]),
        "p99_us": us(samples[(n * 99 / 100).min(n - 1)]),
        "mean_us": mean,
    })
}

fn open_read_close(path: &Path, buf: &mut [u8]) -> Result<usize> {
    let mut f = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut total = 0;
    loop {
        let n = f.read(&mut buf[total..])?;
        if n == 0 {
            break;
        }
        total += n;
    }
    Ok(total)
}

fn open_loop(dir: &Path, files: usize, rounds: usize) -> Result<serde_json::Value> {
    let mut buf = vec![0u8; 4096];
    let paths: Vec<PathBuf> = (0..files).map(|i| dir.join(name(i))).collect();
    for p in &paths {
        open_read_close(p, &mut buf)?; // warm-up round
    }
    let mut samples = Vec::with_capacity(files * rounds);
    for _ in 0..rounds {
        for p in &paths {
            let t = Instant::now();
            let n = open_read_close(p, &mut buf)?;
            samples.push(t.elapsed());
            anyhow::ensure!(n == 64, "{} held {n} bytes, not 64", p.display());
        }
    }
    Ok(stats(samples))
}

fn concurrent(dir: &Path, files: usize, threads: usize, seconds: u64) -> Result<serde_json::Value> {
    let stop = AtomicBool::new(false);
    let opens = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (stop, opens) = (&stop, &opens);
                s.spawn(move || -> Result<()> {
                    let mut buf = vec![0u8; 4096];
                    let mut i = t * 97;
                    while !stop.load(Ordering::Relaxed) {
                        open_read_close(&dir.join(name(i % files)), &mut buf)?;
                        opens.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                    }
                    Ok(())
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().expect("worker panicked")?;
        }
        Ok(())
    })?;
    let secs = started.elapsed().as_secs_f64();
    Ok(json!({ "threads": threads, "opens_per_sec": opens.load(Ordering::Relaxed) as f64 / secs }))
}

fn open_vault(dir: &Path) -> Result<Vault> {
    Ok(Vault::open(VaultConfig {
        backend: sealfs::BackendPreference::Explicit(sealfs::BackendKind::EncryptedFile),
        ..VaultConfig::new(dir)
    })?)
}

fn fill(vault: &Vault, from: usize, to: usize) -> Result<()> {
    for i in from..to {
        let r = VaultRef::new(
            VaultScope::Global,
            sealfs::SecretKey::new(format!("s{i:06}"))?,
        );
        vault.put(&r, SensitiveBytes::new(value64(i)))?;
    }
    Ok(())
}

fn scale(dir: &Path, counts: &[usize], samples: usize) -> Result<serde_json::Value> {
    let vault = open_vault(dir)?;
    let mut have = 0;
    let mut rows = Vec::new();
    for &count in counts {
        fill(&vault, have, count)?;
        have = count;
        let step = (count / samples).max(1);
        let mut gets = Vec::new();
        for i in (0..count).step_by(step).take(samples) {
            let r: VaultRef = format!("global/s{i:06}").parse()?;
            let t = Instant::now();
            let v = vault.get(&r)?;
            gets.push(t.elapsed());
            anyhow::ensure!(v.len() == 64);
        }
        let mut puts = Vec::new();
        for i in 0..samples.min(count) {
            let r: VaultRef = format!("global/s{:06}", i * step).parse()?;
            let t = Instant::now();
            vault.put(&r, SensitiveBytes::new(value64(i)))?;
            puts.push(t.elapsed());
        }
        let mut lists = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let n = vault.list(Some(&VaultScope::Global))?.len();
            lists.push(t.elapsed());
            anyhow::ensure!(n == count);
        }
        rows.push(
            json!({ "count": count, "get": stats(gets), "put": stats(puts), "list": stats(lists) }),
        );
    }
    Ok(json!({ "rows": rows }))
}

fn read_loop(dir: &Path, files: usize, rounds: usize) -> Result<serde_json::Value> {
    let vault = open_vault(dir)?;
    let refs = (0..files)
        .map(|i| format!("global/k{i:04}").parse())
        .collect::<std::result::Result<Vec<VaultRef>, _>>()?;
    let mut reads = Vec::with_capacity(files * rounds);
    for round in 0..=rounds {
        for r in &refs {
            let t = Instant::now();
            let (v, _) = vault.read(r)?;
            let took = t.elapsed();
            anyhow::ensure!(!v.is_empty());
            // The first round fills the daemon's cache; it is not counted.
            if round > 0 {
                reads.push(took);
            }
        }
    }
    Ok(stats(reads))
}

fn anchor(dir: &Path, samples: usize) -> Result<serde_json::Value> {
    use sealfs::__private::crypto::KeyRing;
    use sealfs::__private::AnchorStore;
    use sealfs::__private::DeviceIdentity;
    let vault = open_vault(dir)?;
    fill(&vault, 0, 1000)?;
    let mut puts = Vec::new();
    for i in 0..samples {
        let r: VaultRef = format!("global/s{:06}", i % 1000).parse()?;
        let t = Instant::now();
        vault.put(&r, SensitiveBytes::new(value64(i)))?;
        puts.push(t.elapsed());
    }
    // The same write the vault does after each commit, beside the vault's
    // own anchor (same directory, same file system).
    let keys = KeyRing::derive(&DeviceIdentity::from_bytes([7; 32]), b"bench");
    let store = AnchorStore::file_in(vault.identity_dir(), "bench", false, [0; 32]);
    let mut anchors = Vec::new();
    for i in 0..samples {
        let state = sealfs::__private::IndexState {
            counter: i as u64 + 1,
            root: [i as u8; 32],
        };
        let t = Instant::now();
        store.write(&keys, state)?;
        anchors.push(t.elapsed());
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64()
    };
    let (put, anchor) = (median(&mut puts.clone()), median(&mut anchors.clone()));
    Ok(json!({
        "put": stats(puts),
        "anchor": stats(anchors),
        "share": anchor / put,
    }))
}

fn main() -> Result<()> {
    let out = match Cli::parse().command {
        #[cfg(feature = "fleet")]
        Command::FleetScale {
            dir,
            endpoints,
            counts,
            samples,
            threads,
        } => fleet::scale(&dir, &endpoints, &counts, samples, threads)?,
        #[cfg(feature = "fleet")]
        Command::FleetWriters {
            dir,
            endpoints,
            procs,
            puts,
        } => fleet::writers(&dir, &endpoints, procs, puts)?,
        #[cfg(feature = "fleet")]
        Command::FleetWriter {
            dir,
            endpoints,
            writer,
            puts,
            start_ms,
        } => fleet::writer(&dir, &endpoints, writer, puts, start_ms)?,
        #[cfg(feature = "fleet")]
        Command::FleetWatch {
            dir,
            endpoints,
            watchers,
            rotations,
        } => fleet::watch(&dir, &endpoints, watchers, rotations)?,
        #[cfg(feature = "fleet")]
        Command::FleetRevoke {
            dir,
            endpoints,
            members,
            scopes,
            threads,
        } => fleet::revoke(&dir, &endpoints, members, scopes, threads)?,
        Command::OpenLoop { dir, files, rounds } => open_loop(&dir, files, rounds)?,
        Command::Concurrent {
            dir,
            files,
            threads,
            seconds,
        } => concurrent(&dir, files, threads, seconds)?,
        Command::Scale {
            vault_dir,
            counts,
            samples,
        } => scale(&vault_dir, &counts, samples)?,
        Command::Anchor { vault_dir, samples } => anchor(&vault_dir, samples)?,
        Command::ReadLoop {
            vault_dir,
            files,
            rounds,
        } => read_loop(&vault_dir, files, rounds)?,
        #[cfg(target_os = "linux")]
        Command::BareFs {
            mountpoint,
            files,
            threads,
        } => {
            barefs::run(&mountpoint, files, threads)?;
            json!({ "unmounted": mountpoint })
        }
        Command::Fill { vault_dir, files } => {
            let vault = open_vault(&vault_dir)?;
            for i in 0..files {
                let r = VaultRef::new(VaultScope::Global, sealfs::SecretKey::new(name(i))?);
                vault.put(&r, SensitiveBytes::new(value64(i)))?;
            }
            json!({ "filled": files })
        }
    };
    println!("{out}");
    Ok(())
}
