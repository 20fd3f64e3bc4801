//! What a host holds in memory while a watch on the fleet's chain,
//! keyrings and index runs.

use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use super::{
    corrupt, fleet_entry, EtcdStore, FleetEntry, FleetError, FleetVault, ScopeKeys, ShardState,
};
use crate::{SecretKey, VaultRef, VaultScope};

/// How long the memo is trusted after the watch last heard from etcd (an
/// event or a progress report, asked for every second while quiet).
const MEMO_FRESH: Duration = Duration::from_secs(3);

/// Verified keys, index shards, scope listings and sealed objects held
/// in memory, valid only while a watch on the chain, keyrings and index
/// runs ([`FleetVault::run_watch`]) and has heard from etcd within
/// [`MEMO_FRESH`]: every change it reports drops what it touches, and a
/// broken or silent watch drops it all, so reads never serve what etcd no
/// longer holds for longer than that. Objects are never rewritten (a new
/// value is a new object id), so they need no watching.
#[derive(Default)]
pub(super) struct Memo {
    /// Whether a watch runs (it may have gone quiet: see `usable`).
    pub(super) live: bool,
    /// When the watch last heard from etcd.
    pub(super) heard: Option<Instant>,
    /// Bumped by every change; a read started before one does not store
    /// what it read.
    pub(super) generation: u64,
    pub(super) scopes: HashMap<VaultScope, ScopeKeys>,
    /// By etcd key.
    pub(super) shards: HashMap<String, ShardState>,
    pub(super) lists: HashMap<VaultScope, Vec<FleetEntry>>,
    pub(super) objects: HashMap<String, Vec<u8>>,
    /// The scopes whose index the watch covers (`None`: every scope's):
    /// shards and listings of others are never held.
    pub(super) watched: Option<BTreeSet<VaultScope>>,
}

impl Memo {
    fn clear(&mut self) {
        self.generation += 1;
        self.scopes.clear();
        self.shards.clear();
        self.lists.clear();
    }

    fn is_empty(&self) -> bool {
        self.scopes.is_empty()
            && self.shards.is_empty()
            && self.lists.is_empty()
            && self.objects.is_empty()
    }

    /// Whether the memo may serve and store: a watch runs and has heard
    /// from etcd within [`MEMO_FRESH`].
    pub(super) fn usable(&self) -> bool {
        self.live && self.heard.is_some_and(|h| h.elapsed() <= MEMO_FRESH)
    }

    /// Whether the memo may serve and store the index of `scope`: usable,
    /// and the watch covers it.
    fn covers(&self, scope: &VaultScope) -> bool {
        self.usable() && self.watched.as_ref().is_none_or(|w| w.contains(scope))
    }
}

impl FleetVault {
    pub(super) fn memo(&self) -> std::sync::MutexGuard<'_, Memo> {
        let mut m = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        if !m.is_empty() && !m.usable() {
            // The watch has gone quiet: what it vouched for may be stale.
            m.clear();
            m.objects.clear();
        }
        m
    }

    /// Keeps the changes of chain, keyrings and index flowing into the
    /// in-memory state until `stop` is set: after any change on any host,
    /// the next read here sees it. Only the index of the scopes this host
    /// serves is watched (all of them but those granted to other members
    /// only): a keyring that changes that set restarts the watch. A watch
    /// that breaks (compaction, lost connection) drops everything held and
    /// starts again from a fresh read.
    pub fn run_watch(&self, stop: &AtomicBool) {
        use std::sync::atomic::Ordering;
        let store = match EtcdStore::new(self.store.options().duplicate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the fleet watch");
                return;
            }
        };
        let prefix = self.store.key("");
        while !stop.load(Ordering::Relaxed) {
            // The revision first: a change after it is in the watch.
            let served = store
                .revision()
                .and_then(|r| Ok((r, self.served_scopes()?)));
            let (revision, served) = match served {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "fleet watch: etcd not reachable yet");
                    self.reset_memo(false);
                    std::thread::sleep(Duration::from_millis(300));
                    continue;
                }
            };
            self.reset_memo(true);
            self.memo().watched = served.as_ref().map(|(w, _)| w.clone());
            let ranges = self.watch_ranges(served.as_ref().map(|(w, _)| w));
            tracing::info!(revision, ranges = ranges.len(), "fleet watch running");
            let mut changed_scopes = false;
            let result = store.watch_ranges(revision, stop, &ranges, |events| {
                let keys: Vec<String> = events.iter().map(|(k, _)| k.clone()).collect();
                self.invalidate(&prefix, &keys);
                // Heard from etcd: cached copies are as fresh as this.
                if let Err(e) = self.reached_etcd() {
                    tracing::warn!(error = %e, "cannot record reaching etcd");
                }
                // Who a scope is granted to changed, or (while some are
                // left out) a scope was made: watch the scopes served now.
                let moved = events.iter().any(|(k, v)| {
                    is_audience_entry(k, v, &self.store.key("chain/"))
                        || served.as_ref().is_some_and(|(w, out)| {
                            self.keyring_scope(k)
                                .is_some_and(|s| !w.contains(&s) && !out.contains(&s))
                        })
                });
                changed_scopes = moved;
                if moved {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
            self.reset_memo(false);
            if let Err(e) = result {
                tracing::warn!(error = %e, "fleet watch interrupted; resynchronising");
                std::thread::sleep(Duration::from_millis(100));
            } else if changed_scopes {
                tracing::info!("fleet watch: the scopes served changed; watching them");
            }
        }
    }

    /// The scopes whose index this host watches, and those it leaves out
    /// (granted to other members only), as the verified membership chain
    /// says; `None` while it serves every scope.
    fn served_scopes(&self) -> Result<Option<Served>, FleetError> {
        let left_out = self.scopes_left_out(false)?;
        if left_out.is_empty() {
            return Ok(None);
        }
        let served = self
            .scope_names()?
            .into_iter()
            .filter(|s| !left_out.contains(s))
            .collect();
        Ok(Some((served, left_out)))
    }

    /// The scopes the verified membership chain grants to other members
    /// only: they do not exist on this host (listings, the mount) and its
    /// watch leaves their index out. `offline_ok`: as
    /// [`Self::membership`].
    pub(crate) fn scopes_left_out(
        &self,
        offline_ok: bool,
    ) -> Result<BTreeSet<VaultScope>, FleetError> {
        let m = self.membership(offline_ok)?;
        let me = self.recipient();
        Ok(m.restricted_scopes()
            .filter(|s| m.audience_now(s).is_some_and(|a| !a.contains(&me)))
            .filter_map(|s| s.parse().ok())
            .collect())
    }

    /// The scope of etcd key `key`, if it is a keyring's.
    fn keyring_scope(&self, key: &str) -> Option<VaultScope> {
        key.strip_prefix(&self.store.key("keyring/"))?.parse().ok()
    }

    /// What the running watch covers, if one runs and has heard from etcd:
    /// `Some(None)` every scope's index, `Some(Some(scopes))` those scopes'
    /// (for tests).
    #[doc(hidden)]
    pub fn watching(&self) -> Option<Option<BTreeSet<VaultScope>>> {
        let m = self.memo();
        m.usable().then(|| m.watched.clone())
    }

    /// The key ranges `[start, end)` a watch started now would cover
    /// ([`Self::run_watch`]; for tests).
    #[doc(hidden)]
    pub fn watch_plan(&self) -> Result<Vec<(String, String)>, FleetError> {
        Ok(self.watch_ranges(self.served_scopes()?.as_ref().map(|(w, _)| w)))
    }

    /// The ranges the watch covers: the chain, the grant keys' wraps and
    /// the keyrings, and the index of `served` (`None`: of every scope).
    fn watch_ranges(&self, served: Option<&BTreeSet<VaultScope>>) -> Vec<(String, String)> {
        let k = |s: &str| self.store.key(s);
        match served {
            // `chain/`, `grant/`, `index/` and `keyring/` sort together.
            None => vec![(k("chain/"), k("keyring0"))],
            Some(scopes) => {
                let mut out = vec![
                    (k("chain/"), k("chain0")),
                    (k("grant/"), k("grant0")),
                    (k("keyring/"), k("keyring0")),
                ];
                out.extend(
                    scopes
                        .iter()
                        .map(|s| (k(&format!("index/{s}/")), k(&format!("index/{s}0")))),
                );
                out
            }
        }
    }

    pub(super) fn reset_memo(&self, live: bool) {
        let mut m = self.memo();
        m.live = live;
        m.heard = live.then(Instant::now);
        m.clear();
        m.objects.clear();
    }

    /// Drops what this process holds of keys, shards and listings (after
    /// its own write, which the watch reports a moment later).
    pub(super) fn reset_memo_scopes(&self) {
        self.memo().clear();
    }

    /// A watch message: `keys` changed (none for a progress report).
    pub(super) fn invalidate(&self, prefix: &str, keys: &[String]) {
        let mut m = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        m.heard = Some(Instant::now());
        if keys.is_empty() {
            return;
        }
        m.generation += 1;
        for k in keys {
            let shard_of_scope = k
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix("index/"))
                .and_then(|rest| rest.rsplit_once('/'))
                .and_then(|(scope, _)| scope.parse::<VaultScope>().ok());
            match shard_of_scope {
                Some(scope) => {
                    m.shards.remove(k.as_str());
                    m.lists.remove(&scope);
                }
                // The chain or a keyring: every verified state may change.
                None => m.clear(),
            }
        }
    }

    /// The generation to store a read under, if the memo is live.
    pub(super) fn memo_generation(&self) -> Option<u64> {
        let m = self.memo();
        m.usable().then_some(m.generation)
    }

    /// For reads: the keys of `scope`, the memo's copy while the watch
    /// runs, else a fresh read.
    pub(crate) fn keys_for_read(
        &self,
        scope: &VaultScope,
    ) -> Result<Option<ScopeKeys>, FleetError> {
        let generation = {
            let m = self.memo();
            if let Some(s) = m.scopes.get(scope).filter(|_| m.usable()) {
                return Ok(Some(s.clone()));
            }
            m.usable().then_some(m.generation)
        };
        let keys = self.scope_keys(scope, false, true)?;
        // Keys served from the cache (etcd unreachable) are not news the
        // watch vouches for: never memoized.
        let fresh = keys.as_ref().filter(|k| k.keyring_rev != Some(0));
        if let (Some(g), Some(k)) = (generation, fresh) {
            let mut m = self.memo();
            if m.usable() && m.generation == g {
                m.scopes.insert(scope.clone(), k.clone());
            }
        }
        Ok(keys)
    }

    /// For reads: shard `shard` of `scope`, as [`Self::keys_for_read`].
    pub(super) fn shard_for_read(
        &self,
        scope: &VaultScope,
        shard: &str,
    ) -> Result<Option<ShardState>, FleetError> {
        let k = self.shard_key(scope, shard);
        let generation = {
            let m = self.memo();
            if let Some(s) = m.shards.get(&k).filter(|_| m.covers(scope)) {
                return Ok(Some(s.clone()));
            }
            m.covers(scope).then_some(m.generation)
        };
        let mut last = FleetError::Integrity(format!("shard {shard} of the index of {scope}"));
        for attempt in 0..5 {
            // After a shard that did not authenticate (a rotation between
            // the reads), the keys are read afresh.
            let keys = if attempt == 0 {
                self.keys_for_read(scope)?
            } else {
                self.reset_memo_scopes();
                self.scope_keys(scope, false, true)?
            };
            let Some(keys) = keys else {
                return Ok(None);
            };
            match self.read_shard(scope, &keys, shard, true, false) {
                Ok(Some(st)) => {
                    let fresh = keys.keyring_rev != Some(0) && st.rev != Some(0);
                    if let (Some(g), true) = (generation, fresh) {
                        let mut m = self.memo();
                        if m.covers(scope) && m.generation == g {
                            m.shards.insert(k, st.clone());
                        }
                    }
                    return Ok(Some(st));
                }
                Ok(None) => {}
                Err(e @ FleetError::Replay { .. }) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// For reads: the secrets of `scope` (`None`: it has no keyring), as
    /// [`Self::keys_for_read`].
    pub(super) fn list_for_read(
        &self,
        scope: &VaultScope,
    ) -> Result<Option<Vec<FleetEntry>>, FleetError> {
        let generation = {
            let m = self.memo();
            if let Some(l) = m.lists.get(scope).filter(|_| m.covers(scope)) {
                return Ok(Some(l.clone()));
            }
            m.covers(scope).then_some(m.generation)
        };
        let Some((keys, shards)) = self.scope_shards(scope, true, false)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        for (_, st) in &shards {
            for (k, e) in &st.body.entries {
                let key = SecretKey::new(k.as_str()).map_err(|e| corrupt("index key", e))?;
                out.push(fleet_entry(VaultRef::new(scope.clone(), key), e));
            }
        }
        out.sort_by(|a, b| a.vault_ref.key().as_str().cmp(b.vault_ref.key().as_str()));
        let fresh = keys.keyring_rev != Some(0) && shards.iter().all(|(_, st)| st.rev != Some(0));
        if let (Some(g), true) = (generation, fresh) {
            let mut m = self.memo();
            if m.covers(scope) && m.generation == g {
                m.lists.insert(scope.clone(), out.clone());
            }
        }
        Ok(Some(out))
    }

    /// A sealed object, from the memo while the watch runs; with whether
    /// it was just read from etcd (and so is for the cache, once it opens).
    pub(super) fn object_for_read(&self, id: &str) -> Result<Option<(Vec<u8>, bool)>, FleetError> {
        if let Some(o) = self.memo().objects.get(id).cloned() {
            return Ok(Some((o, false)));
        }
        let generation = self.memo_generation();
        let Some(rec) = self.read(&self.object_key(id), true)? else {
            return Ok(None);
        };
        let from_etcd = rec.mod_revision != 0;
        if let (Some(g), true) = (generation, from_etcd) {
            let mut m = self.memo();
            if m.usable() && m.generation == g {
                m.objects.insert(id.to_owned(), rec.value.clone());
            }
        }
        Ok(Some((rec.value, from_etcd)))
    }
}

/// The scopes a watch covers, and those it leaves out.
type Served = (BTreeSet<VaultScope>, BTreeSet<VaultScope>);

/// Whether the watched record `key` (under `chain_prefix`) with `value` is
/// an audience entry of the chain.
fn is_audience_entry(key: &str, value: &[u8], chain_prefix: &str) -> bool {
    key.starts_with(chain_prefix)
        && super::trust::Signed::parse("a chain entry", value)
            .ok()
            .and_then(|s| serde_json::from_str::<super::trust::ChainBody>(&s.body).ok())
            .is_some_and(|b| b.op == super::trust::Op::Audience)
}
