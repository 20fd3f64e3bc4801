//! `LockedBuf`: a fixed-capacity plaintext buffer for one open file, locked
//! into RAM (no swap) where the memlock limit allows, wiped when dropped.

use sealfs::SensitiveBytes;
use zeroize::Zeroize;

/// Plaintext owned by one file handle. The capacity is fixed at creation,
/// so writes never reallocate (which would leave an unwiped copy).
pub struct LockedBuf {
    buf: SensitiveBytes,
    len: usize,
    locked: bool,
    /// Names this buffer for [`wipe_watch`].
    #[cfg(test)]
    id: u64,
}

impl LockedBuf {
    /// Takes `value` as the content, with room to grow to `capacity`.
    pub fn with_value(value: &[u8], capacity: usize) -> Self {
        let mut buf = SensitiveBytes::zeroed(capacity.max(value.len()));
        buf.expose_mut()[..value.len()].copy_from_slice(value);
        let locked = crate::memlock::lock(buf.expose());
        LockedBuf {
            buf,
            len: value.len(),
            locked,
            #[cfg(test)]
            id: wipe_watch::next_id(),
        }
    }

    /// Adopts a decrypted value as is (read-only handles).
    pub fn adopt(value: SensitiveBytes) -> Self {
        let locked = crate::memlock::lock(value.expose());
        LockedBuf {
            len: value.len(),
            buf: value,
            locked,
            #[cfg(test)]
            id: wipe_watch::next_id(),
        }
    }

    pub fn locked(&self) -> bool {
        self.locked
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    pub fn content(&self) -> &[u8] {
        &self.buf.expose()[..self.len]
    }

    /// Writes `data` at `offset` (zero-filling a gap); `false` if it would
    /// not fit in the capacity.
    pub fn write_at(&mut self, offset: usize, data: &[u8]) -> bool {
        let Some(end) = offset
            .checked_add(data.len())
            .filter(|e| *e <= self.capacity())
        else {
            return false;
        };
        let bytes = self.buf.expose_mut();
        if offset > self.len {
            bytes[self.len..offset].fill(0);
        }
        bytes[offset..end].copy_from_slice(data);
        self.len = self.len.max(end);
        true
    }

    /// Truncates or zero-extends to `len`; `false` if over the capacity.
    pub fn set_len(&mut self, len: usize) -> bool {
        if len > self.capacity() {
            return false;
        }
        let bytes = self.buf.expose_mut();
        if len < self.len {
            bytes[len..self.len].zeroize();
        } else {
            bytes[self.len..len].fill(0);
        }
        self.len = len;
        true
    }
}

impl Drop for LockedBuf {
    fn drop(&mut self) {
        // Wipe in place (the buffer spans its whole allocation) while it is
        // still locked, so no plaintext can be swapped out after the unlock.
        self.buf.expose_mut().as_mut_slice().zeroize();
        #[cfg(test)]
        wipe_watch::observe(self);
        if self.locked {
            crate::memlock::unlock(self.buf.expose());
        }
    }
}

/// Test hook: a test names one buffer it wants watched, and the drop of that
/// buffer (and no other) records whether all its bytes were zero at the
/// point it is unlocked. Keyed by buffer, so tests running in parallel and
/// dropping their own buffers cannot answer for each other.
#[cfg(test)]
pub(crate) mod wipe_watch {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    use super::LockedBuf;

    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    /// Watched buffer id -> `None` while alive, `Some(all zero)` once dropped.
    static WATCHED: Mutex<BTreeMap<u64, Option<bool>>> = Mutex::new(BTreeMap::new());

    /// What became of a watched buffer.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Fate {
        /// Not dropped (yet).
        Alive,
        /// Dropped; every byte of its allocation was zero before the unlock.
        Wiped,
        /// Dropped with a non-zero byte left in it.
        Dirty,
    }

    pub(super) fn next_id() -> u64 {
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    }

    fn with<R>(f: impl FnOnce(&mut BTreeMap<u64, Option<bool>>) -> R) -> R {
        f(&mut WATCHED.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Starts watching `buf`; returns the id to ask [`fate`] about.
    pub fn watch(buf: &LockedBuf) -> u64 {
        with(|m| m.insert(buf.id, None));
        buf.id
    }

    /// Called by `Drop`, after the wipe, before the unlock.
    pub(super) fn observe(buf: &LockedBuf) {
        with(|m| {
            if let Some(slot) = m.get_mut(&buf.id) {
                *slot = Some(buf.buf.expose().iter().all(|&b| b == 0));
            }
        });
    }

    /// What happened to watched buffer `id` (watching it ends once dropped).
    pub fn fate(id: u64) -> Fate {
        with(|m| match m.get(&id).copied().flatten() {
            None => Fate::Alive,
            Some(clean) => {
                m.remove(&id);
                if clean {
                    Fate::Wiped
                } else {
                    Fate::Dirty
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_within_capacity() {
        let mut b = LockedBuf::with_value(b"abc", 8);
        assert!(b.write_at(3, b"def"));
        assert_eq!(b.content(), b"abcdef");
        assert!(b.write_at(1, b"X"));
        assert_eq!(b.content(), b"aXcdef");
        assert!(!b.write_at(6, b"123"));
        assert!(b.write_at(7, b"Z"));
        assert_eq!(b.content(), b"aXcdef\0Z");
        assert!(b.set_len(2));
        assert_eq!(b.content(), b"aX");
        assert!(!b.set_len(9));
    }

    #[test]
    fn a_dropped_buffer_is_all_zeros_before_it_is_unlocked() {
        use wipe_watch::Fate;
        // Plaintext at both ends of a larger allocation: all of it is wiped.
        let mut b = LockedBuf::with_value(b"plaintext", 64);
        assert!(b.write_at(60, b"tail"));
        let watched = wipe_watch::watch(&b);
        let other = LockedBuf::adopt(SensitiveBytes::from_slice(b"unwatched"));
        drop(other);
        assert_eq!(wipe_watch::fate(watched), Fate::Alive);
        drop(b);
        assert_eq!(wipe_watch::fate(watched), Fate::Wiped);
    }
}
