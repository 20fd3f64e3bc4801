//! Lifetimes: when a value stored in a scope expires, and the sweep that
//! removes what has expired (secrets, sessions, and their versions).

use super::{now_ms, FaultPoint, Vault, VaultError};
use crate::index::Index;
use crate::scope::VaultScope;

impl Vault {
    /// When a value stored in `scope` now expires: at `asked`, or with its
    /// session if that ends sooner. A session that has ended takes nothing.
    /// Caller holds the lock.
    pub(super) fn expiry_in(
        &self,
        w: &Index,
        scope: &VaultScope,
        asked: Option<i64>,
    ) -> Result<Option<i64>, VaultError> {
        if !matches!(scope, VaultScope::Session(_)) {
            return Ok(asked);
        }
        // An ended session keeps its record (see `sweep_locked`), so a
        // late writer (a command's background child, a handle opened in
        // time) cannot bring it back without an end.
        let ends = w.scope_row(scope)?.0.and_then(|s| s.expires_ms);
        match ends {
            Some(t) if t <= now_ms() => Err(VaultError::SessionEnded(scope.clone())),
            Some(t) => Ok(Some(asked.map_or(t, |a| a.min(t)))),
            None => Ok(asked),
        }
    }

    /// Removes what has expired: sessions past their end with everything
    /// in them, then secrets past theirs, and notes when the next one
    /// expires. Caller holds the lock.
    pub(super) fn sweep_locked(&self, w: &Index) -> Result<(), VaultError> {
        let now = now_ms();
        let mut next: Option<i64> = None;
        let mut soonest = |t: i64| next = Some(next.map_or(t, |n: i64| n.min(t)));
        for s in w.scopes()?.0 {
            let Some(t) = s.expires_ms else { continue };
            if t > now {
                soonest(t);
                continue;
            }
            // Ended: its secrets go; its record stays for a while, so that
            // nothing is written into it, then goes too.
            let rows = w.list(Some(&s.scope))?.0;
            let versions = w.all_versions(Some(&s.scope))?.0;
            let forget = t.saturating_add(crate::index::ENDED_SESSION_KEPT_MS) <= now;
            if rows.is_empty() && versions.is_empty() && !forget {
                soonest(t.saturating_add(crate::index::ENDED_SESSION_KEPT_MS));
                continue;
            }
            let c = w.commit_end_scope(&s.scope, &rows, &versions, (!forget).then_some(t))?;
            self.committed(c.state)?;
            self.fault(FaultPoint::SweepAfterCommit)?;
            self.discard_all(w, &c.discard);
            if !forget {
                soonest(t.saturating_add(crate::index::ENDED_SESSION_KEPT_MS));
            }
        }
        let mut expired = Vec::new();
        for (r, row) in w.list(None)?.0 {
            match row.expires_ms {
                Some(t) if t <= now => expired.push((r, row)),
                Some(t) => soonest(t),
                None => {}
            }
        }
        let mut old = Vec::new();
        for (r, v) in w.all_versions(None)?.0 {
            match v.expires_ms {
                Some(t) if t <= now => old.push((r, v)),
                Some(t) => soonest(t),
                None => {}
            }
        }
        let c = w.commit_expired(&expired, &old, next)?;
        self.committed(c.state)?;
        self.fault(FaultPoint::SweepAfterCommit)?;
        self.discard_all(w, &c.discard);
        Ok(())
    }

    /// Removes expired secrets and sessions now, if any has expired (a
    /// mount daemon calls this every few seconds; writers do it anyway).
    pub fn sweep_expired(&self) -> Result<(), VaultError> {
        let due = self
            .reader()
            .vault_record()?
            .next_expiry_ms
            .is_some_and(|t| t <= now_ms());
        // Blobs a dead or failed sweep left to delete are swept too.
        if due || self.reader().has_pending()? {
            let w = self.writer();
            let _lock = self.lock_and_recover(&w)?;
        }
        Ok(())
    }
}
