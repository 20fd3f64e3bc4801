//! The etcd v3 store under a fleet vault: blocking calls with a time limit
//! over the async `etcd-client`, on a runtime owned by the store.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Pause between attempts while etcd does not answer.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// After a call gave up, how long further calls fail at once.
const DOWN_PAUSE: Duration = Duration::from_secs(1);

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp, WatchOptions,
};

use super::FleetError;
use crate::SensitiveBytes;

/// What `sealfs fleet status` shows of etcd's space.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EtcdSpace {
    /// The etcd server's version.
    pub version: String,
    /// The size of its database file, in bytes.
    pub db_size: i64,
    /// The bytes of it in use (the rest is free after compaction until a
    /// defragmentation gives it back).
    pub db_in_use: i64,
    /// Its quota (`--quota-backend-bytes`), if the server reports it
    /// (etcd 3.6 and later; the default is 2 GiB).
    pub quota: Option<i64>,
    /// Its active alarms (`NOSPACE` once the quota is reached).
    pub alarms: Vec<String>,
}

/// How often a quiet watch asks etcd for a progress report.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How long a watch may hear nothing before it is given up.
const WATCH_SILENCE: Duration = Duration::from_secs(5);
/// How many records a range read asks for at once.
const PAGE: i64 = 1000;

/// A record read from etcd: its value and the revision that last changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The stored bytes.
    pub value: Vec<u8>,
    /// The revision that last changed the key (0 for a copy from the
    /// local cache).
    pub mod_revision: i64,
    /// The revision that created the key (a put of the same key keeps it;
    /// only a delete and a new put change it); 0 for a cached copy.
    pub create_revision: i64,
}

/// What a transaction requires of a key before it applies.
#[derive(Debug, Clone)]
pub enum Expect {
    /// The key does not exist.
    Absent,
    /// The key was last changed at this revision.
    Revision(i64),
    /// The key exists.
    Present,
    /// No key under this prefix was written after this revision.
    NothingSince(i64),
}

/// One change in a transaction.
#[derive(Debug, Clone)]
pub enum Change {
    /// Sets the key to the value.
    Put(String, Vec<u8>),
    /// Removes the key.
    Delete(String),
}

/// How to reach etcd.
pub struct EtcdOptions {
    /// etcd's URLs; all must be `https://` when a client certificate is set.
    pub endpoints: Vec<String>,
    /// Key prefix, without slashes at either end, e.g. `sealfs`.
    pub prefix: String,
    /// The time limit of a connection attempt and of each call, retries
    /// included.
    pub timeout: Duration,
    /// User and password, when etcd has authentication on.
    pub credentials: Option<(String, crate::SensitiveBytes)>,
    /// A client certificate, when etcd asks for one (`--client-cert-auth`).
    pub tls: Option<EtcdTls>,
}

/// etcd's CA certificate and this host's client certificate and private
/// key, PEM. Kept in the host's local vault (`sealfs fleet tls`).
pub struct EtcdTls {
    /// etcd's CA certificate, PEM.
    pub ca: Vec<u8>,
    /// This host's client certificate, PEM.
    pub cert: Vec<u8>,
    /// This host's client private key, PEM.
    pub key: crate::SensitiveBytes,
}

impl EtcdTls {
    fn duplicate(&self) -> EtcdTls {
        EtcdTls {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: crate::SensitiveBytes::from_slice(self.key.expose()),
        }
    }
}

impl EtcdOptions {
    /// A copy (for a second connection, such as the watch's).
    pub fn duplicate(&self) -> EtcdOptions {
        EtcdOptions {
            endpoints: self.endpoints.clone(),
            prefix: self.prefix.clone(),
            timeout: self.timeout,
            credentials: self
                .credentials
                .as_ref()
                .map(|(u, p)| (u.clone(), crate::SensitiveBytes::from_slice(p.expose()))),
            tls: self.tls.as_ref().map(EtcdTls::duplicate),
        }
    }
}

impl std::fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdOptions")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .finish()
    }
}

/// A connection to etcd under a key prefix: blocking calls on a runtime
/// of its own, reconnecting after a transport failure.
pub struct EtcdStore {
    rt: tokio::runtime::Runtime,
    opts: EtcdOptions,
    /// Dropped after a transport error, so the next call reconnects.
    client: Mutex<Option<Client>>,
    down_until: Mutex<Option<Instant>>,
    /// A fault the next transaction meets (tests only).
    fault: Mutex<Option<(TxnFault, Option<AfterFault>)>>,
    /// A transaction [`TxnFault::HoldBack`] held back (tests only).
    held: Mutex<Option<Txn>>,
}

/// What an injected fault does to the next transaction (tests only): the
/// two ways a transaction's outcome can be lost.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnFault {
    /// It commits, and its answer is lost.
    LoseReply,
    /// No answer comes, and it is held back, to be delivered late
    /// ([`EtcdStore::deliver_held_back`]).
    HoldBack,
}

/// Run once the fault has struck (e.g. to stop etcd before the outcome can
/// be settled).
type AfterFault = Box<dyn FnOnce() + Send>;

fn unreachable(opts: &EtcdOptions, why: impl std::fmt::Display) -> FleetError {
    FleetError::Unreachable {
        endpoints: opts.endpoints.join(","),
        why: why.to_string(),
    }
}

impl EtcdStore {
    /// A store for `opts`, connecting on first use; fails without endpoints.
    pub fn new(opts: EtcdOptions) -> Result<Self, FleetError> {
        if opts.endpoints.is_empty() {
            return Err(FleetError::NoEndpoints);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| FleetError::Etcd(format!("cannot start the I/O runtime: {e}")))?;
        Ok(EtcdStore {
            rt,
            opts,
            client: Mutex::new(None),
            down_until: Mutex::new(None),
            fault: Mutex::new(None),
            held: Mutex::new(None),
        })
    }

    /// Makes the next transaction meet `fault`, then runs `after` (tests
    /// only).
    #[doc(hidden)]
    pub fn inject_txn_fault(&self, fault: TxnFault, after: Option<AfterFault>) {
        *self.fault.lock().unwrap_or_else(|e| e.into_inner()) = Some((fault, after));
    }

    /// The options it was made with.
    pub fn options(&self) -> &EtcdOptions {
        &self.opts
    }

    /// `<prefix>/<rest>`, the full etcd key.
    pub fn key(&self, rest: &str) -> String {
        format!("/{}/{rest}", self.opts.prefix)
    }

    fn client(&self) -> Result<Client, FleetError> {
        let mut slot = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = self.connect(self.opts.endpoints.clone())?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// A new client to `endpoints`, with this store's credentials, TLS and
    /// connection settings.
    fn connect(&self, endpoints: Vec<String>) -> Result<Client, FleetError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.opts.timeout)
            .with_timeout(self.opts.timeout)
            // A member cut off from the leader answers nothing rather than
            // serve old state or hold a watch that never fires.
            .with_require_leader(true)
            // A black-holed connection is noticed within 15 s, also while
            // only a watch is open.
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        if let Some((user, password)) = &self.opts.credentials {
            if let Some(plain) = self
                .opts
                .endpoints
                .iter()
                .find(|e| !e.starts_with("https://") && !is_loopback(e))
            {
                return Err(FleetError::Etcd(format!(
                    "refusing to send the etcd password over plain http:// to {plain}: \
                     use https:// endpoints (see `sealfs fleet tls`), or a loopback address"
                )));
            }
            let password = String::from_utf8_lossy(password.expose()).into_owned();
            // A long-running process outlives its auth token (300 s by
            // default, however busy it is for JWT tokens): log in again.
            options = options
                .with_user(user.clone(), password)
                .with_auto_token_refresh(true);
        }
        if let Some(tls) = &self.opts.tls {
            if let Some(plain) = self
                .opts
                .endpoints
                .iter()
                .find(|e| !e.starts_with("https://"))
            {
                return Err(FleetError::Etcd(format!(
                    "a client certificate is stored, so every endpoint must be https://, not {plain}"
                )));
            }
            // tonic copies the key into its own buffer for the handshake.
            let config = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(&tls.ca))
                .identity(etcd_client::Identity::from_pem(&tls.cert, tls.key.expose()));
            options = options.with_tls(config);
        }
        self.rt
            .block_on(async {
                tokio::time::timeout(self.opts.timeout, Client::connect(endpoints, Some(options)))
                    .await
            })
            .map_err(|_| unreachable(&self.opts, "timed out connecting"))?
            .map_err(|e| self.classify(e))
    }

    fn classify(&self, e: etcd_client::Error) -> FleetError {
        use etcd_client::Error as E;
        // etcd at its quota refuses every write (and raises its NOSPACE
        // alarm) until space is reclaimed.
        if e.to_string().contains("database space exceeded") {
            return FleetError::NoSpace;
        }
        // Before "unreachable": a refused handshake shows as a transport
        // failure, but retrying cannot fix it and the cause is the setup.
        if let Some(cause) = tls_failure(&e) {
            let hint = if self.opts.tls.is_some() {
                "check etcd's CA and the client certificate stored with `sealfs fleet tls`"
            } else {
                "this host has no CA or client certificate stored; store them with `sealfs fleet tls`"
            };
            return FleetError::Tls {
                endpoints: self.opts.endpoints.join(","),
                why: format!("{cause}; {hint}"),
            };
        }
        match &e {
            E::TransportError(_) | E::IoError(_) => unreachable(&self.opts, e),
            // gRPC codes: 1 cancelled, 4 deadline exceeded, 14 unavailable.
            // 2 (unknown) is what a connection broken mid-call shows as.
            E::GRpcStatus(s)
                if matches!(s.code() as i32, 1 | 4 | 14)
                    || (s.code() as i32 == 2 && s.message().contains("transport")) =>
            {
                unreachable(&self.opts, s.message())
            }
            // 16: unauthenticated; 3 (invalid argument) is what etcd says
            // to a missing user or a wrong password.
            E::GRpcStatus(s)
                if s.code() as i32 == 16
                    || (s.code() as i32 == 3
                        && (s.message().contains("user name is empty")
                            || s.message().contains("authentication failed"))) =>
            {
                FleetError::Auth(match &self.opts.credentials {
                    None => format!(
                        "no user and password are stored on this host ({}); \
                         store them with `sealfs fleet login --user NAME`",
                        s.message()
                    ),
                    Some((user, _)) => format!(
                        "the password stored for {user} was refused ({}); \
                         store the right one with `sealfs fleet login --user {user}`",
                        s.message()
                    ),
                })
            }
            _ => FleetError::Etcd(e.to_string()),
        }
    }

    /// Runs one call with the time limit; a transport failure drops the
    /// client so the next call reconnects.
    fn call<T, F, Fut>(&self, f: F) -> Result<T, FleetError>
    where
        F: FnOnce(Client) -> Fut + Clone,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        // Just after etcd was found unreachable, fail at once rather than
        // wait out the time limit again for every record of a read.
        if let Some(until) = *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) {
            if Instant::now() < until {
                return Err(unreachable(&self.opts, "unreachable a moment ago"));
            }
        }
        // A call may land on a member that just went down, or during a
        // leader election: fresh connections keep trying, within the limit.
        let deadline = Instant::now() + self.opts.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let out = match self.client() {
                Ok(client) => match self
                    .rt
                    .block_on(async { tokio::time::timeout(left, f.clone()(client)).await })
                {
                    Err(_) => Err(unreachable(&self.opts, "timed out")),
                    Ok(r) => r.map_err(|e| self.classify(e)),
                },
                Err(e) => Err(e),
            };
            match out {
                Err(e @ FleetError::Unreachable { .. }) => {
                    *self.client.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    if Instant::now() + RETRY_PAUSE >= deadline {
                        *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(Instant::now() + DOWN_PAUSE);
                        return Err(e);
                    }
                    std::thread::sleep(RETRY_PAUSE);
                }
                other => return other,
            }
        }
    }

    /// The record at `key`, a full key ([`EtcdStore::key`]), if there is one.
    pub fn get(&self, key: &str) -> Result<Option<Record>, FleetError> {
        let key = key.to_owned();
        let resp = self.call(|mut c| async move { c.get(key, None).await })?;
        Ok(resp.kvs().first().map(|kv| Record {
            value: kv.value().to_vec(),
            mod_revision: kv.mod_revision(),
            create_revision: kv.create_revision(),
        }))
    }

    /// Every record under `prefix`, in key order ([`EtcdStore::get_from`]).
    pub fn get_prefix(&self, prefix: &str) -> Result<Vec<(String, Record)>, FleetError> {
        self.get_from(prefix, prefix)
    }

    /// Every record under `prefix` from key `start` on, in key order: read
    /// a page of up to [`PAGE`] records at a time (fewer where records are
    /// large: a page must fit gRPC's 4 MiB message limit), every page at
    /// the revision of the first, so the whole is one consistent view
    /// however large.
    pub fn get_from(&self, start: &str, prefix: &str) -> Result<Vec<(String, Record)>, FleetError> {
        self.range(start, prefix, false)
    }

    /// The keys under `prefix`, in key order, without their values (one
    /// consistent view, as [`EtcdStore::get_from`]).
    pub fn keys_under(&self, prefix: &str) -> Result<Vec<String>, FleetError> {
        Ok(self
            .range(prefix, prefix, true)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    fn range(
        &self,
        start: &str,
        prefix: &str,
        keys_only: bool,
    ) -> Result<Vec<(String, Record)>, FleetError> {
        let mut end = prefix.as_bytes().to_vec();
        // The first key after every key with this prefix (the prefix ends
        // in `/`, so the last byte never overflows).
        *end.last_mut().expect("a non-empty prefix") += 1;
        let mut from = start.as_bytes().to_vec();
        let mut revision = 0;
        let mut limit = PAGE;
        let mut out = Vec::new();
        loop {
            let (page_from, page_end) = (from.clone(), end.clone());
            let resp = self.call(move |mut c| async move {
                let mut o = GetOptions::new().with_range(page_end).with_limit(limit);
                if revision > 0 {
                    o = o.with_revision(revision);
                }
                if keys_only {
                    o = o.with_keys_only();
                }
                c.get(page_from, Some(o)).await
            });
            let resp = match resp {
                // Too large for one message: smaller pages.
                Err(FleetError::Etcd(m)) if m.contains("message length too large") && limit > 1 => {
                    limit = (limit / 4).max(1);
                    continue;
                }
                other => other?,
            };
            if revision == 0 {
                revision = resp.header().map_or(0, |h| h.revision());
            }
            let page = keyed_records(&resp);
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    from = [last.key(), b"\0"].concat();
                }
                _ => {
                    out.extend(page);
                    return Ok(out);
                }
            }
            out.extend(page);
        }
    }

    /// Applies `changes` atomically if every expectation holds; `false`
    /// (nothing applied) if another writer got there first.
    pub fn apply(
        &self,
        expect: &[(String, Expect)],
        changes: &[Change],
    ) -> Result<bool, FleetError> {
        Ok(self.apply_at(expect, changes)?.is_some())
    }

    /// As [`EtcdStore::apply`], with the revision the changes were
    /// committed at.
    pub fn apply_at(
        &self,
        expect: &[(String, Expect)],
        changes: &[Change],
    ) -> Result<Option<i64>, FleetError> {
        let compares: Vec<Compare> = expect
            .iter()
            .map(|(k, e)| match e {
                Expect::Absent => Compare::version(k.as_str(), CompareOp::Equal, 0),
                Expect::Revision(r) => Compare::mod_revision(k.as_str(), CompareOp::Equal, *r),
                Expect::Present => Compare::version(k.as_str(), CompareOp::Greater, 0),
                Expect::NothingSince(r) => {
                    Compare::mod_revision(k.as_str(), CompareOp::Less, r.saturating_add(1))
                        .with_prefix()
                }
            })
            .collect();
        let ops: Vec<TxnOp> = changes
            .iter()
            .map(|c| match c {
                Change::Put(k, v) => TxnOp::put(k.as_str(), v.clone(), None),
                Change::Delete(k) => TxnOp::delete(k.as_str(), None),
            })
            .collect();
        let txn = Txn::new().when(compares).and_then(ops);
        // Sent once, never again by a retry: a second send of a write that
        // committed would fail its compare and hide that it landed.
        if let Some(until) = *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) {
            if Instant::now() < until {
                return Err(unreachable(&self.opts, "unreachable a moment ago"));
            }
        }
        let client = self.client()?;
        let fault = self.fault.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((TxnFault::HoldBack, after)) = fault {
            *self.held.lock().unwrap_or_else(|e| e.into_inner()) = Some(txn);
            after.into_iter().for_each(|f| f());
            return Err(self.no_answer("held back (injected)"));
        }
        let sent = self.rt.block_on(async move {
            let mut c = client;
            tokio::time::timeout(self.opts.timeout, c.txn(txn)).await
        });
        let resp = match sent {
            Err(_) => return Err(self.no_answer("timed out")),
            Ok(Err(e)) => {
                return Err(match self.classify(e) {
                    FleetError::Unreachable { why, .. } => self.no_answer(&why),
                    // etcd answered: it did not commit.
                    other => other,
                });
            }
            Ok(Ok(resp)) => resp,
        };
        if let Some((TxnFault::LoseReply, after)) = fault {
            after.into_iter().for_each(|f| f());
            return Err(self.no_answer("the answer was lost (injected)"));
        }
        Ok(resp
            .succeeded()
            .then(|| resp.header().map_or(0, |h| h.revision())))
    }

    /// A sent transaction with no answer; the connection is dropped, so
    /// the next call reconnects.
    fn no_answer(&self, why: &str) -> FleetError {
        *self.client.lock().unwrap_or_else(|e| e.into_inner()) = None;
        FleetError::NoAnswer {
            endpoints: self.opts.endpoints.join(","),
            why: why.to_owned(),
        }
    }

    /// Sends the transaction a [`TxnFault::HoldBack`] held back, late
    /// (tests only): whether it committed.
    #[doc(hidden)]
    pub fn deliver_held_back(&self) -> Result<bool, FleetError> {
        let txn = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .expect("a transaction was held back");
        let resp = self.call(|mut c| async move { c.txn(txn).await })?;
        Ok(resp.succeeded())
    }

    /// Drops etcd's history before `revision` (its MVCC compaction); a
    /// revision compacted already is no error. `physical`: returns only
    /// once the space is actually freed (else etcd frees it in the
    /// background, and a defragmentation right after gains nothing).
    pub fn compact_to(&self, revision: i64, physical: bool) -> Result<(), FleetError> {
        let options = physical.then(|| etcd_client::CompactionOptions::new().with_physical());
        match self.call(move |mut c| async move { c.compact(revision, options).await }) {
            Ok(_) => Ok(()),
            Err(FleetError::Etcd(m)) if m.contains("compacted") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// etcd's active alarms, on every member.
    fn alarm_list(&self) -> Result<etcd_client::AlarmResponse, FleetError> {
        self.call(|mut c| async move {
            c.alarm(
                etcd_client::AlarmAction::Get,
                etcd_client::AlarmType::None,
                None,
            )
            .await
        })
    }

    /// How much space etcd uses, its quota (etcd 3.6 and later report it)
    /// and its alarms.
    pub fn space(&self) -> Result<EtcdSpace, FleetError> {
        let st = self.call(|mut c| async move { c.status().await })?;
        let alarms = self.alarm_list()?;
        Ok(EtcdSpace {
            version: st.version().to_owned(),
            db_size: st.db_size(),
            db_in_use: st.raft_used_db_size(),
            quota: Some(st.db_size_quota()).filter(|q| *q > 0),
            alarms: alarms
                .alarms()
                .iter()
                .map(|a| format!("{:?}", a.alarm()).to_uppercase())
                .collect(),
        })
    }

    /// Reclaims the space compaction freed, on every endpoint (one at a
    /// time: a member defragmenting does not answer), and clears etcd's
    /// NOSPACE alarm so writes are taken again.
    pub fn defragment_and_disarm(&self) -> Result<(), FleetError> {
        // Every member, by the client URLs the cluster lists: endpoints
        // behind one address (a VIP) or a subset would leave some out.
        let members = self.call(|mut c| async move { c.member_list().await })?;
        let mut urls: Vec<String> = members
            .members()
            .iter()
            .filter_map(|m| m.client_urls().first().cloned())
            .collect();
        if urls.is_empty() {
            urls.clone_from(&self.opts.endpoints);
        }
        for ep in &urls {
            let c = self.connect(vec![ep.clone()])?;
            let deadline = self.opts.timeout.max(Duration::from_secs(60));
            self.rt
                .block_on(async move {
                    let mut c = c;
                    tokio::time::timeout(deadline, c.defragment()).await
                })
                .map_err(|_| unreachable(&self.opts, "timed out defragmenting"))?
                .map_err(|e| self.classify(e))?;
        }
        let alarms = self.alarm_list()?;
        for a in alarms.alarms() {
            if a.alarm() != etcd_client::AlarmType::Nospace {
                continue;
            }
            let member = a.member_id();
            self.call(move |mut c| async move {
                let mut o = etcd_client::AlarmOptions::new();
                o.with_member(member);
                c.alarm(
                    etcd_client::AlarmAction::Deactivate,
                    etcd_client::AlarmType::Nospace,
                    Some(o),
                )
                .await
            })?;
        }
        // Done once no member reports the alarm any more (each member
        // answers from its own applied state).
        let deadline = Instant::now() + self.opts.timeout;
        loop {
            let space = self.space()?;
            if !space.alarms.iter().any(|a| a == "NOSPACE") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(FleetError::Etcd(
                    "etcd still reports its NOSPACE alarm after it was cleared".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The etcd role every host's own user holds: read and write of the
    /// keys under the prefix, nothing else (no other prefix, no users or
    /// roles, no defragmentation).
    pub fn host_role(&self) -> String {
        format!("sealfs-host:{}", self.opts.prefix)
    }

    /// Creates the etcd user `user` holding only [`EtcdStore::host_role`]
    /// (created too if missing), or, if it exists, sets its password.
    /// Needs etcd root rights ([`FleetError::NeedsRoot`] otherwise).
    pub fn put_host_user(&self, user: &str, password: &SensitiveBytes) -> Result<(), FleetError> {
        let what = || format!("creating the etcd user {user}");
        let role = self.host_role();
        let from = self.key("").into_bytes();
        let mut end = from.clone();
        // The first key after every key under `/<prefix>/`.
        *end.last_mut().expect("a non-empty prefix") += 1;
        let r = role.clone();
        match self.call(move |mut c| async move { c.role_add(r).await }) {
            Ok(_) => {}
            Err(FleetError::Etcd(m)) if m.contains("role name already exists") => {}
            Err(e) => return Err(needs_root(e, what())),
        }
        let r = role.clone();
        self.call(move |mut c| async move {
            c.role_grant_permission(
                r,
                etcd_client::Permission::read_write(from).with_range_end(end),
            )
            .await
        })
        .map_err(|e| needs_root(e, what()))?;
        let pw = || String::from_utf8_lossy(password.expose()).into_owned();
        let (u, p) = (user.to_owned(), pw());
        match self.call(move |mut c| async move { c.user_add(u, p, None).await }) {
            Ok(_) => {}
            Err(FleetError::Etcd(m)) if m.contains("user name already exists") => {
                let (u, p) = (user.to_owned(), pw());
                self.call(move |mut c| async move { c.user_change_password(u, p).await })
                    .map_err(|e| needs_root(e, what()))?;
            }
            Err(e) => return Err(needs_root(e, what())),
        }
        let u = user.to_owned();
        self.call(move |mut c| async move { c.user_grant_role(u, role).await })
            .map_err(|e| needs_root(e, what()))?;
        Ok(())
    }

    /// Deletes the etcd user `user`; `false` if there was none. Needs etcd
    /// root rights ([`FleetError::NeedsRoot`] otherwise).
    pub fn delete_user(&self, user: &str) -> Result<bool, FleetError> {
        let u = user.to_owned();
        match self.call(move |mut c| async move { c.user_delete(u).await }) {
            Ok(_) => Ok(true),
            Err(FleetError::Etcd(m)) if m.contains("user name not found") => Ok(false),
            Err(e) => Err(needs_root(e, format!("removing the etcd user {user}"))),
        }
    }

    /// The store's current revision.
    pub fn revision(&self) -> Result<i64, FleetError> {
        let key = self.key("chain/");
        let resp = self.call(|mut c| async move { c.get(key, None).await })?;
        resp.header()
            .map(|h| h.revision())
            .ok_or_else(|| FleetError::Etcd("a response without a header".into()))
    }

    /// Calls `on` with the keys of the chain, the keyrings and the index
    /// shards changed after `revision` (never the sealed values: a write
    /// sends each watcher its small shard, whatever the value's size)
    /// (and with none for each progress report, at least every second),
    /// until `stop` is set (`Ok`) or the watch breaks (`Err`: compaction,
    /// cancellation or a lost connection; the caller resynchronises).
    pub fn watch(
        &self,
        revision: i64,
        stop: &AtomicBool,
        mut on: impl FnMut(Vec<String>),
    ) -> Result<(), FleetError> {
        // `chain/`, `grant/`, `index/` and `keyring/` sort together,
        // before `obj/`.
        let range = [(self.key("chain/"), self.key("keyring0"))];
        self.watch_ranges(revision, stop, &range, |events| {
            on(events.into_iter().map(|(k, _)| k).collect());
            ControlFlow::Continue(())
        })
    }

    /// As [`Self::watch`], over the key ranges `[start, end)` given, on
    /// one stream, calling `on` with each changed key and its new value
    /// (empty for a delete); `on` breaking ends the watch (`Ok`).
    pub fn watch_ranges(
        &self,
        revision: i64,
        stop: &AtomicBool,
        ranges: &[(String, String)],
        mut on: impl FnMut(Vec<(String, Vec<u8>)>) -> ControlFlow<()>,
    ) -> Result<(), FleetError> {
        let Some(((first, first_end), rest)) = ranges.split_first() else {
            return Ok(());
        };
        let mut client = self.client()?;
        let options = |end: &String| {
            WatchOptions::new()
                .with_range(end.as_str())
                .with_start_revision(revision + 1)
        };
        let result = self.rt.block_on(async {
            let mut stream = client
                .watch(first.as_str(), Some(options(first_end)))
                .await?;
            for (start, end) in rest {
                stream.watch(start.as_str(), Some(options(end))).await?;
            }
            // While quiet, ask etcd for a progress report every second; a
            // watch that hears nothing for WATCH_SILENCE is given up (a
            // stopped or cut-off member), and the caller starts afresh.
            let mut heard = Instant::now();
            let mut asked = Instant::now();
            loop {
                if stop.load(Ordering::Relaxed) {
                    return Ok(None);
                }
                if heard.elapsed() > WATCH_SILENCE {
                    return Ok(Some("etcd stopped answering the watch"));
                }
                if heard.elapsed() >= PROGRESS_EVERY && asked.elapsed() >= PROGRESS_EVERY {
                    stream.request_progress().await?;
                    asked = Instant::now();
                }
                match tokio::time::timeout(Duration::from_millis(200), stream.message()).await {
                    Err(_) => continue,
                    Ok(Ok(Some(resp))) => {
                        heard = Instant::now();
                        if resp.canceled() || resp.compact_revision() > 0 {
                            return Ok(Some("the watch was cancelled or compacted"));
                        }
                        let events = resp
                            .events()
                            .iter()
                            .filter_map(|e| e.kv())
                            .map(|kv| {
                                (
                                    String::from_utf8_lossy(kv.key()).into_owned(),
                                    kv.value().to_vec(),
                                )
                            })
                            .collect::<Vec<_>>();
                        // Empty for a progress report: still news that etcd
                        // is there and nothing was missed.
                        if on(events).is_break() {
                            return Ok(None);
                        }
                    }
                    Ok(Ok(None)) => return Ok(Some("the watch stream ended")),
                    Ok(Err(e)) => return Err(e),
                }
            }
        });
        match result {
            Ok(None) => Ok(()),
            Ok(Some(why)) => Err(unreachable(&self.opts, why)),
            Err(e) => {
                *self.client.lock().unwrap_or_else(|e| e.into_inner()) = None;
                Err(self.classify(e))
            }
        }
    }
}

/// The TLS failure (rustls's words) in `e` or its causes, if it is one: a
/// certificate this host does not trust, or an alert from etcd refusing
/// this host's certificate.
/// `e`, if it is etcd refusing a call for want of rights, as
/// [`FleetError::NeedsRoot`] for `what`.
fn needs_root(e: FleetError, what: String) -> FleetError {
    match e {
        FleetError::Etcd(why) if why.contains("permission denied") => {
            FleetError::NeedsRoot { what, why }
        }
        e => e,
    }
}

fn tls_failure(e: &etcd_client::Error) -> Option<String> {
    use etcd_client::Error as E;
    let is_tls = |text: &str| {
        [
            "invalid peer certificate",
            "peer sent no certificates",
            "received fatal alert",
        ]
        .iter()
        .any(|m| text.contains(m))
    };
    let mut cur: Option<&(dyn std::error::Error + 'static)> = match e {
        // A status's own text is its message; its cause is below.
        E::GRpcStatus(s) if is_tls(s.message()) => return Some(s.message().to_owned()),
        E::GRpcStatus(s) => std::error::Error::source(s),
        E::TransportError(t) => Some(t),
        E::IoError(io) => Some(io),
        _ => None,
    };
    while let Some(err) = cur {
        let text = err.to_string();
        if is_tls(&text) {
            return Some(text);
        }
        cur = err.source();
    }
    None
}

/// The records of a range read, with their keys.
fn keyed_records(resp: &etcd_client::GetResponse) -> Vec<(String, Record)> {
    resp.kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                Record {
                    value: kv.value().to_vec(),
                    mod_revision: kv.mod_revision(),
                    create_revision: kv.create_revision(),
                },
            )
        })
        .collect()
}

/// Whether an endpoint URL names this host's loopback interface
/// (`localhost`, `127.0.0.0/8`, `::1`); a name is never looked up.
fn is_loopback(endpoint: &str) -> bool {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_loopback_endpoints_count_as_loopback() {
        for ep in [
            "http://127.0.0.1:2379",
            "http://127.9.0.1:2379",
            "http://localhost:2379",
            "http://[::1]:2379",
            "127.0.0.1:2379",
        ] {
            assert!(super::is_loopback(ep), "{ep}");
        }
        for ep in [
            "http://10.0.0.5:2379",
            "http://etcd.example:2379",
            "http://localhost.evil.example:2379",
            "http://[::2]:2379",
            "http://127.0.0.1.nip.io:2379",
        ] {
            assert!(!super::is_loopback(ep), "{ep}");
        }
    }
}
