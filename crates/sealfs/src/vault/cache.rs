//! What a long-lived vault (the mount daemon) keeps between reads of a
//! secret: the authenticated index row and the sealed blob, never the
//! plaintext. Every read still decrypts and authenticates the blob afresh.
//! And the keys of a scope between two listings of it.
//!
//! The cache holds only while the index is unchanged since the reads that
//! filled it were checked (the vault record, the bucket, the anchor). Two
//! ways of telling, the first where it can be had:
//! - **Notified** (Linux): the kernel's change notification on the vault
//!   directory and the identity directory (`fsutil::DirWatch`, inotify)
//!   reports every write, truncation, creation, removal, rename or
//!   attribute change of the index file, its log and journal, and the
//!   vault's anchor file, made through any path or handle, before the
//!   system call that made it returns. A read that finds no report costs
//!   one `read` of the notification queue. The index and its log are
//!   watched as files too, and must stay the files this process has open;
//!   a writer touches the log once each commit is visible (its log writes
//!   are reported before). Lost reports (the queue overflowed) count as a
//!   change, and end notification unless everything watched is still
//!   where it was; a creation, removal or rename of the index's or the
//!   log's name, a watched directory moved or removed, or a commit this
//!   vault could not mark ends it for good, and the vault polls instead.
//!   A vault-directory writer can make reports, each of which only ends
//!   what was kept, or the notification (slower reads, never staler).
//! - **Polled**, on every read:
//!   - the rollback anchor, read afresh (kept handles: one `fstatat`, one
//!     `pread`): every commit of sealfs moves it, and a vault-directory
//!     writer cannot;
//!   - SQLite's `data_version` on the reader connection, which changes
//!     with every commit of any other connection (another process's
//!     `sealfs set`, this vault's own writer, the `sqlite3` tool);
//!   - the stamps (device, inode, size, times to the nanosecond) of the
//!     index file and its write-ahead log, which change when either is
//!     written, replaced or removed behind SQLite's back.
//!
//! Any difference empties the cache and the next read checks everything
//! again. The stamp is taken before a read that fills the cache, so a
//! change during that read is seen by the next one.
//!
//! Polling, the anchor is what makes the cache safe against a writer of
//! the vault directory: SQLite's `data_version` comes from the
//! shared-memory file, which that writer can rewrite, and file times may
//! be too coarse to tell two writes apart. Whatever they hide, a commit by
//! sealfs moves the anchor, so the read after it checks the index again
//! (and finds it older than its anchor if SQLite was made to miss the
//! commit). The one commit the anchor does not show, one whose anchor
//! write failed after it was durable, `data_version` and the file stamps
//! do, unless that writer hides it from both. An anchor moved or retired
//! (`recover --accept-move`, another vault created at this path) fails to
//! read here or differs, so nothing is served from the cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::index::Row;
use crate::scope::{SecretKey, VaultRef, VaultScope};

/// Memory kept for rows and blobs at most (each entry charged its blob
/// and [`ENTRY_OVERHEAD`]); past it they start again empty.
const MAX_BYTES: usize = 4 << 20;
/// What an entry costs besides its blob: the ref, the row, the map slot.
const ENTRY_OVERHEAD: usize = 256;
/// Blobs larger than this are read from the backend every time.
const MAX_BLOB: usize = 64 << 10;
/// Memory kept for the keys of listed scopes at most (each key charged
/// its length and [`KEY_OVERHEAD`]); past it the listings start again
/// empty, and a scope whose keys alone exceed it is never kept.
const MAX_KEY_BYTES: usize = 8 << 20;
/// What a key costs besides its name: the string and the allocator's share.
const KEY_OVERHEAD: usize = 48;

/// The index as a read cache entry was verified against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "one stamp per read, one kept by the cache: boxing would allocate at every read"
)]
pub(super) enum Stamp {
    /// The kernel's change notification (Linux): how many times it has
    /// reported a change of the index, its log or the anchor.
    #[cfg_attr(
        not(target_os = "linux"),
        allow(dead_code, reason = "made only where the kernel notifies changes")
    )]
    Notified(u64),
    /// Looked at on every read.
    #[cfg_attr(
        not(unix),
        allow(dead_code, reason = "no read cache where files have no stamps")
    )]
    Polled {
        /// SQLite's `data_version` on the reader connection.
        data_version: i64,
        /// The index file's and its log's stamps.
        #[cfg(unix)]
        files: [Option<crate::fsutil::FileStamp>; 2],
        /// The rollback anchor, read afresh.
        anchor: Option<crate::index::State>,
    },
}

#[derive(Default)]
pub(super) struct ReadCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    stamp: Option<Stamp>,
    entries: HashMap<VaultRef, (Row, Vec<u8>)>,
    bytes: usize,
    /// The sorted keys of listed scopes (directory listings).
    listings: HashMap<VaultScope, Arc<[SecretKey]>>,
    key_bytes: usize,
}

fn key_bytes(keys: &[SecretKey]) -> usize {
    keys.iter().map(|k| k.as_str().len() + KEY_OVERHEAD).sum()
}

impl ReadCache {
    /// The row and sealed blob of `r`, if cached at `stamp`.
    pub(super) fn get(&self, stamp: &Stamp, r: &VaultRef) -> Option<(Row, Vec<u8>)> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.stamp.as_ref() != Some(stamp) {
            return None;
        }
        inner.entries.get(r).cloned()
    }

    /// The keys of `scope`, if listed at `stamp`.
    pub(super) fn keys(&self, stamp: &Stamp, scope: &VaultScope) -> Option<Arc<[SecretKey]>> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.stamp.as_ref() != Some(stamp) {
            return None;
        }
        inner.listings.get(scope).cloned()
    }

    /// Keeps the keys of `scope`, listed at an index that `stamp` was
    /// taken before.
    pub(super) fn put_keys(&self, stamp: Stamp, scope: &VaultScope, keys: &Arc<[SecretKey]>) {
        let cost = key_bytes(keys);
        if cost > MAX_KEY_BYTES {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.stamp != Some(stamp) {
            *inner = Inner {
                stamp: Some(stamp),
                ..Inner::default()
            };
        }
        if inner.key_bytes + cost > MAX_KEY_BYTES {
            inner.listings.clear();
            inner.key_bytes = 0;
        }
        inner.key_bytes += cost;
        if let Some(old) = inner.listings.insert(scope.clone(), Arc::clone(keys)) {
            inner.key_bytes -= key_bytes(&old);
        }
    }

    /// Keeps `row` and `blob` of `r`, verified at an index that `stamp`
    /// was taken before.
    pub(super) fn put(&self, stamp: Stamp, r: &VaultRef, row: &Row, blob: &[u8]) {
        if row.once || blob.len() > MAX_BLOB {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.stamp != Some(stamp) {
            *inner = Inner {
                stamp: Some(stamp),
                ..Inner::default()
            };
        }
        let cost = blob.len() + ENTRY_OVERHEAD;
        if inner.bytes + cost > MAX_BYTES {
            inner.entries.clear();
            inner.bytes = 0;
        }
        inner.bytes += cost;
        if let Some((_, old)) = inner
            .entries
            .insert(r.clone(), (row.clone(), blob.to_vec()))
        {
            inner.bytes -= old.len() + ENTRY_OVERHEAD;
        }
    }
}
