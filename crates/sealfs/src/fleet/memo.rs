//! What a host holds in memory while a watch on the prefix runs.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::{EtcdStore, FleetError, FleetVault, ScopeState};
use crate::VaultScope;

/// Verified scope states and sealed objects held in memory, valid only
/// while a watch on the prefix runs ([`FleetVault::run_watch`]): every
/// change it reports drops what it touches, and a broken watch drops it
/// all, so reads never serve what etcd no longer holds.
#[derive(Default)]
pub(super) struct Memo {
    pub(super) live: bool,
    /// Bumped by every change; a read started before one does not store
    /// what it read.
    pub(super) generation: u64,
    pub(super) scopes: HashMap<VaultScope, ScopeState>,
    pub(super) objects: HashMap<String, Vec<u8>>,
}

impl FleetVault {
    pub(super) fn memo(&self) -> std::sync::MutexGuard<'_, Memo> {
        self.memo.lock().unwrap_or_else(|e| e.into_inner())
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
            let result = store.watch(revision, stop, |keys| self.invalidate(&prefix, &keys));
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
        m.generation += 1;
        m.scopes.clear();
        m.objects.clear();
    }

    pub(super) fn reset_memo_scopes(&self) {
        let mut m = self.memo();
        m.generation += 1;
        m.scopes.clear();
    }

    pub(super) fn invalidate(&self, prefix: &str, keys: &[String]) {
        let mut m = self.memo();
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
        m.live.then_some(m.generation)
    }

    /// For reads: the memo's copy while the watch runs, else a fresh read.
    pub(crate) fn scope_state_for_read(
        &self,
        scope: &VaultScope,
    ) -> Result<Option<ScopeState>, FleetError> {
        let generation = {
            let m = self.memo();
            if let Some(s) = m.scopes.get(scope).filter(|_| m.live) {
                return Ok(Some(s.clone()));
            }
            m.live.then_some(m.generation)
        };
        let state = self.scope_state(scope, false, true)?;
        if let (Some(g), Some(st)) = (generation, &state) {
            let mut m = self.memo();
            if m.live && m.generation == g {
                m.scopes.insert(scope.clone(), st.clone());
            }
        }
        Ok(state)
    }

    /// A sealed object, from the memo while the watch runs.
    pub(super) fn object_for_read(&self, id: &str) -> Result<Option<Vec<u8>>, FleetError> {
        if let Some(o) = self.memo().objects.get(id).cloned() {
            return Ok(Some(o));
        }
        let generation = self.memo_generation();
        let obj = self.read(&self.object_key(id), true)?.map(|r| r.value);
        if let (Some(g), Some(o)) = (generation, &obj) {
            let mut m = self.memo();
            if m.live && m.generation == g {
                m.objects.insert(id.to_owned(), o.clone());
            }
        }
        Ok(obj)
    }
}
