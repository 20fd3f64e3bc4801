//! What a host holds in memory while a watch on the prefix runs.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use super::{EtcdStore, FleetError, FleetVault, ScopeState};
use crate::VaultScope;

/// How long the memo is trusted after the watch last heard from etcd (an
/// event or a progress report, asked for every second while quiet).
const MEMO_FRESH: Duration = Duration::from_secs(3);

/// Verified scope states and sealed objects held in memory, valid only
/// while a watch on the prefix runs ([`FleetVault::run_watch`]) and has
/// heard from etcd within [`MEMO_FRESH`]: every change it reports drops
/// what it touches, and a broken or silent watch drops it all, so reads
/// never serve what etcd no longer holds for longer than that.
#[derive(Default)]
pub(super) struct Memo {
    /// Whether a watch runs (it may have gone quiet: see `usable`).
    pub(super) live: bool,
    /// When the watch last heard from etcd.
    pub(super) heard: Option<Instant>,
    /// Bumped by every change; a read started before one does not store
    /// what it read.
    pub(super) generation: u64,
    pub(super) scopes: HashMap<VaultScope, ScopeState>,
    pub(super) objects: HashMap<String, Vec<u8>>,
}

impl Memo {
    /// Whether the memo may serve and store: a watch runs and has heard
    /// from etcd within [`MEMO_FRESH`].
    pub(super) fn usable(&self) -> bool {
        self.live && self.heard.is_some_and(|h| h.elapsed() <= MEMO_FRESH)
    }
}

impl FleetVault {
    pub(super) fn memo(&self) -> std::sync::MutexGuard<'_, Memo> {
        let mut m = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        let held = !(m.scopes.is_empty() && m.objects.is_empty());
        if held && !m.usable() {
            // The watch has gone quiet: what it vouched for may be stale.
            m.generation += 1;
            m.scopes.clear();
            m.objects.clear();
        }
        m
    }

    /// Keeps the changes under the prefix flowing into the in-memory state
    /// until `stop` is set: after any change on any host, the next read
    /// here sees it. A watch that breaks (compaction, lost connection)
    /// drops everything held and starts again from a fresh read.
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
            let revision = match store.revision() {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "fleet watch: etcd not reachable yet");
                    self.reset_memo(false);
                    std::thread::sleep(Duration::from_millis(300));
                    continue;
                }
            };
            self.reset_memo(true);
            tracing::info!(revision, "fleet watch running");
            let result = store.watch(revision, stop, |keys| {
                self.invalidate(&prefix, &keys);
                // Heard from etcd: cached copies are as fresh as this.
                if let Err(e) = self.reached_etcd() {
                    tracing::warn!(error = %e, "cannot record reaching etcd");
                }
            });
            self.reset_memo(false);
            if let Err(e) = result {
                tracing::warn!(error = %e, "fleet watch interrupted; resynchronising");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    pub(super) fn reset_memo(&self, live: bool) {
        let mut m = self.memo();
        m.live = live;
        m.heard = live.then(Instant::now);
        m.generation += 1;
        m.scopes.clear();
        m.objects.clear();
    }

    pub(super) fn reset_memo_scopes(&self) {
        let mut m = self.memo();
        m.generation += 1;
        m.scopes.clear();
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
            match k.strip_prefix(prefix) {
                Some(rest) if rest.starts_with("obj/") => {
                    m.objects.remove(&rest["obj/".len()..]);
                }
                _ => m.scopes.clear(),
            }
        }
    }

    /// The generation to store a read under, if the memo is live.
    pub(super) fn memo_generation(&self) -> Option<u64> {
        let m = self.memo();
        m.usable().then_some(m.generation)
    }

    /// For reads: the memo's copy while the watch runs, else a fresh read.
    pub(crate) fn scope_state_for_read(
        &self,
        scope: &VaultScope,
    ) -> Result<Option<ScopeState>, FleetError> {
        let generation = {
            let m = self.memo();
            if let Some(s) = m.scopes.get(scope).filter(|_| m.usable()) {
                return Ok(Some(s.clone()));
            }
            m.usable().then_some(m.generation)
        };
        let state = self.scope_state(scope, false, true)?;
        // A state served from the cache (etcd unreachable) is not news the
        // watch vouches for: never memoized.
        let fresh = state.as_ref().filter(|st| !st.served_from_cache());
        if let (Some(g), Some(st)) = (generation, fresh) {
            let mut m = self.memo();
            if m.usable() && m.generation == g {
                m.scopes.insert(scope.clone(), st.clone());
            }
        }
        Ok(state)
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
