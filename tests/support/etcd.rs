//! Real etcd for tests, shared by the integration tests of both packages
//! (included with `#[path]`): members on free loopback ports with temp
//! data directories, killed by pid on drop.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

/// Whether every tool in `bins` is on PATH. Missing ones are a skip with a
/// message locally, and a failure when `CI` is set.
pub fn have_tools(bins: &[&str]) -> bool {
    let have = |bin: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
    };
    let missing: Vec<&str> = bins.iter().copied().filter(|b| !have(b)).collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but {missing:?} is missing (scripts/setup.sh installs it)"
    );
    eprintln!("skipping: {missing:?} not installed here");
    false
}

/// A free TCP port on loopback (bound, then released for the caller).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One etcd member on loopback with a temp data directory, killed by pid
/// on drop (and restartable on the same data).
pub struct EtcdMember {
    pub name: String,
    pub client_url: String,
    peer_url: String,
    cluster: String,
    data: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl EtcdMember {
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        let log = std::fs::File::create(&self.log).unwrap();
        let child = Command::new("etcd")
            .args(["--name", &self.name])
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--listen-client-urls", &self.client_url])
            .args(["--advertise-client-urls", &self.client_url])
            .args(["--listen-peer-urls", &self.peer_url])
            .args(["--initial-advertise-peer-urls", &self.peer_url])
            .args(["--initial-cluster", &self.cluster])
            .args(["--initial-cluster-token", "sealfs-test"])
            .args(["--initial-cluster-state", "new"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
    }

    /// SIGKILL, as a crashed host would go.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for EtcdMember {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An etcd cluster of `n` members on free loopback ports.
pub struct Etcd {
    pub members: Vec<EtcdMember>,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts the cluster and waits until it answers, or `None` where etcd
    /// is not installed outside CI.
    pub fn start(n: usize) -> Option<Etcd> {
        if !have_tools(&["etcd", "etcdctl"]) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<EtcdMember> = ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| EtcdMember {
                name: format!("m{i}"),
                client_url: format!("http://127.0.0.1:{client}"),
                peer_url: format!("http://127.0.0.1:{peer}"),
                cluster: cluster.clone(),
                data: dir.path().join(format!("m{i}")),
                child: None,
                log: dir.path().join(format!("m{i}.log")),
            })
            .collect();
        for m in &mut members {
            m.start();
        }
        let etcd = Etcd { members, _dir: dir };
        etcd.wait_healthy();
        Some(etcd)
    }

    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.client_url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits (up to 30 s) until the cluster serves a linearizable read.
    pub fn wait_healthy(&self) {
        let running: Vec<&str> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.client_url.as_str())
            .collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let ok = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args([
                    "--endpoints",
                    &running.join(","),
                    "--command-timeout=2s",
                    "get",
                    "/probe",
                ])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return;
            }
            if std::time::Instant::now() >= deadline {
                let logs: Vec<String> = self
                    .members
                    .iter()
                    .map(|m| {
                        let log = std::fs::read_to_string(&m.log).unwrap_or_default();
                        let mut tail: Vec<&str> = log.lines().rev().take(8).collect();
                        tail.reverse();
                        format!("{}:\n{}", m.name, tail.join("\n"))
                    })
                    .collect();
                panic!(
                    "etcd did not become healthy in 30 s; logs:\n{}",
                    logs.join("\n")
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// `etcdctl` against the cluster.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoints()])
            .args(args)
            .output()
            .expect("run etcdctl")
    }
}
