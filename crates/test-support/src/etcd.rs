//! Real etcd for tests, shared by the integration tests of both packages
//! (`sealfs-test-support`): members on free loopback ports with temp
//! data directories, killed by pid on drop.

use std::path::PathBuf;

use crate::skip::have_tools;
use std::process::{Child, Command, Output, Stdio};

/// A free TCP port on loopback (bound, then released for the caller).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until every thread of process `pid` has stopped. `kill` returns
/// once SIGSTOP is queued; the process stops when one of its threads next
/// runs and takes the signal, and on a busy machine its other threads go
/// on serving requests until then.
fn wait_stopped(pid: i32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("read the tasks of etcd");
        let all_stopped = tasks.flatten().all(|t| {
            // `pid (comm) S ...`: the state follows the last ')'.
            std::fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.trim_start().chars().next())
                    .is_some_and(|state| state == 'T' || state == 't')
            })
        });
        if all_stopped {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "etcd (pid {pid}) did not stop within 10 s of SIGSTOP"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
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
    /// More etcd flags (TLS).
    extra: Vec<String>,
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
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
    }

    /// SIGSTOP: the member hangs, its connections stay open (a stalled
    /// host or VM). Returns once every thread of it has stopped.
    pub fn pause(&self) {
        self.pauser()();
    }

    /// SIGCONT after [`EtcdMember::pause`].
    pub fn resume(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    /// A closure that pauses this member (SIGSTOP) when called, for a test
    /// to hand to code that runs it at the right moment.
    pub fn pauser(&self) -> impl FnOnce() + Send + 'static {
        let c = self.child.as_ref().expect("the member runs");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(c.id()).expect("a pid fits i32"));
        move || {
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("signal etcd");
            wait_stopped(pid.as_raw());
        }
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        let c = self.child.as_ref().expect("the member runs");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(c.id()).expect("a pid fits i32"));
        nix::sys::signal::kill(pid, sig).expect("signal etcd");
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
        // A paused member does not die of SIGKILL until it runs again.
        if self.child.is_some() {
            self.resume();
        }
        self.kill();
    }
}

impl Etcd {
    /// The index of the member that is the raft leader now.
    pub fn leader(&self) -> usize {
        for (i, m) in self.members.iter().enumerate() {
            let out = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(&self.ctl_tls)
                .args([
                    "--endpoints",
                    &m.client_url,
                    "endpoint",
                    "status",
                    "-w",
                    "json",
                ])
                .output()
                .expect("run etcdctl");
            let text = String::from_utf8_lossy(&out.stdout);
            // [{"Endpoint":..,"Status":{"header":{..,"member_id":A,..},..,"leader":B,..}}]
            let field = |name: &str| {
                text.split(&format!("\"{name}\":")).nth(1).and_then(|rest| {
                    rest.split(|c: char| !c.is_ascii_digit())
                        .next()
                        .map(str::to_owned)
                })
            };
            if out.status.success()
                && field("member_id").is_some()
                && field("member_id") == field("leader")
            {
                return i;
            }
        }
        panic!("no member says it leads");
    }
}

/// An etcd cluster of `n` members on free loopback ports.
pub struct Etcd {
    pub members: Vec<EtcdMember>,
    /// etcdctl's TLS flags, when the cluster wants client certificates.
    ctl_tls: Vec<String>,
    _dir: tempfile::TempDir,
}

/// A throwaway CA, a server certificate for 127.0.0.1 and a client
/// certificate, made with `openssl` (PEM files in `dir`).
pub struct TestPki {
    pub dir: PathBuf,
}

impl TestPki {
    pub fn new(dir: &std::path::Path) -> Option<TestPki> {
        if !have_tools(&["openssl"]) {
            return None;
        }
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(&[
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "1",
                "-subj",
                "/CN=sealfs-test-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        ]
        .concat());
        for (name, ext) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
            run(&[
                &["req"][..],
                &ec,
                &[
                    "-subj",
                    &format!("/CN={name}"),
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                ],
            ]
            .concat());
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ]);
        }
        Some(TestPki {
            dir: dir.to_owned(),
        })
    }

    pub fn file(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }
}

impl Etcd {
    /// Starts the cluster and waits until it answers, or `None` where etcd
    /// is not installed outside CI.
    pub fn start(n: usize) -> Option<Etcd> {
        Etcd::start_with(n, None, &[])
    }

    /// As [`Etcd::start`], with more flags for every member (e.g.
    /// `--auth-token-ttl=2`).
    pub fn start_flags(n: usize, flags: &[&str]) -> Option<Etcd> {
        Etcd::start_with(n, None, flags)
    }

    /// One member that serves clients over TLS only and asks each for a
    /// certificate signed by `pki`'s CA (`--client-cert-auth`).
    pub fn start_tls(pki: &TestPki) -> Option<Etcd> {
        Etcd::start_with(1, Some(pki), &[])
    }

    fn start_with(n: usize, pki: Option<&TestPki>, flags: &[&str]) -> Option<Etcd> {
        if !have_tools(&["etcd", "etcdctl"]) {
            return None;
        }
        let scheme = if pki.is_some() { "https" } else { "http" };
        let mut extra: Vec<String> = match pki {
            Some(p) => vec![
                "--client-cert-auth".into(),
                "--trusted-ca-file".into(),
                p.file("ca.pem"),
                "--cert-file".into(),
                p.file("server.pem"),
                "--key-file".into(),
                p.file("server.key"),
            ],
            None => Vec::new(),
        };
        extra.extend(flags.iter().map(|f| (*f).to_owned()));
        let ctl_tls: Vec<String> = match pki {
            Some(p) => vec![
                format!("--cacert={}", p.file("ca.pem")),
                format!("--cert={}", p.file("client.pem")),
                format!("--key={}", p.file("client.key")),
            ],
            None => Vec::new(),
        };
        // A port found free may be taken by another test before etcd binds
        // it; that member then exits, and another test's etcd may answer
        // on its client port. Only a cluster that is ours is used: else
        // new ports, up to three times.
        for attempt in 1..=3 {
            let dir = tempfile::tempdir().unwrap();
            let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
            let cluster = ports
                .iter()
                .enumerate()
                .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
                .collect::<Vec<_>>()
                .join(",");
            let members: Vec<EtcdMember> = ports
                .iter()
                .enumerate()
                .map(|(i, (client, peer))| EtcdMember {
                    name: format!("m{i}"),
                    client_url: format!("{scheme}://127.0.0.1:{client}"),
                    peer_url: format!("http://127.0.0.1:{peer}"),
                    cluster: cluster.clone(),
                    data: dir.path().join(format!("m{i}")),
                    child: None,
                    log: dir.path().join(format!("m{i}.log")),
                    extra: extra.clone(),
                })
                .collect();
            let mut etcd = Etcd {
                members,
                ctl_tls: ctl_tls.clone(),
                _dir: dir,
            };
            for m in &mut etcd.members {
                m.start();
            }
            if etcd.wait_ours() {
                return Some(etcd);
            }
            eprintln!("etcd: a port was taken (attempt {attempt} of 3); trying other ports");
        }
        panic!("etcd could not start on free ports three times");
    }

    /// Waits until the cluster is healthy and every member is ours (its
    /// process runs, and the member list its client port gives names our
    /// peer ports); `false` if a member exited because a port was taken.
    /// A member that exited for any other reason fails the test, with the
    /// logs.
    fn wait_ours(&mut self) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let mut exited = false;
            for m in &mut self.members {
                if let Some(c) = m.child.as_mut() {
                    exited |= c.try_wait().is_ok_and(|s| s.is_some());
                }
            }
            if exited {
                let taken = self.members.iter().any(|m| {
                    std::fs::read_to_string(&m.log)
                        .is_ok_and(|log| log.contains("address already in use"))
                });
                if taken {
                    return false;
                }
                self.panic_with_logs();
            }
            if self.healthy() {
                let ours = self.members.iter().all(|m| {
                    Command::new("etcdctl")
                        .env("ETCDCTL_API", "3")
                        .args(&self.ctl_tls)
                        .args([
                            "--endpoints",
                            &m.client_url,
                            "--command-timeout=2s",
                            "member",
                            "list",
                        ])
                        .output()
                        .is_ok_and(|o| {
                            let list = String::from_utf8_lossy(&o.stdout);
                            // `<id>, started, <name>, <peer URL>, <client URL>, ...`
                            o.status.success()
                                && self
                                    .members
                                    .iter()
                                    .all(|p| list.contains(&format!(", {}, ", p.peer_url)))
                        })
                });
                if ours {
                    return true;
                }
            }
            if std::time::Instant::now() >= deadline {
                self.panic_with_logs();
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
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
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !self.healthy() {
            if std::time::Instant::now() >= deadline {
                self.panic_with_logs();
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Whether the running members serve a linearizable read now.
    fn healthy(&self) -> bool {
        let running: Vec<&str> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.client_url.as_str())
            .collect();
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(&self.ctl_tls)
            .args([
                "--endpoints",
                &running.join(","),
                "--command-timeout=2s",
                "get",
                "/probe",
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn panic_with_logs(&self) -> ! {
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
            "etcd did not become healthy (or a member exited); logs:\n{}",
            logs.join("\n")
        );
    }

    /// `etcdctl` against the cluster.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(&self.ctl_tls)
            .args(["--endpoints", &self.endpoints()])
            .args(args)
            .output()
            .expect("run etcdctl")
    }
}
