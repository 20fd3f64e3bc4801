//! `LockedBuf`: a fixed-capacity plaintext buffer for one open file, locked
//! into RAM (no swap) where the memlock limit allows, wiped when dropped.

use std::sync::atomic::{AtomicU64, Ordering};

use sealfs::SensitiveBytes;
use zeroize::Zeroize;

/// Buffers dropped, and how many of them were found not all-zero after the
/// wipe (must stay 0): the hook the tests use to check wiping, not trust it.
static WIPED: AtomicU64 = AtomicU64::new(0);
static NOT_WIPED: AtomicU64 = AtomicU64::new(0);

/// (buffers wiped, buffers found dirty after wiping) since the process started.
pub fn wipe_stats() -> (u64, u64) {
    (
        WIPED.load(Ordering::SeqCst),
        NOT_WIPED.load(Ordering::SeqCst),
    )
}

/// Plaintext owned by one file handle. The capacity is fixed at creation,
/// so writes never reallocate (which would leave an unwiped copy).
pub struct LockedBuf {
    buf: SensitiveBytes,
    len: usize,
    locked: bool,
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
        }
    }

    /// Adopts a decrypted value as is (read-only handles).
    pub fn adopt(value: SensitiveBytes) -> Self {
        let locked = crate::memlock::lock(value.expose());
        LockedBuf {
            len: value.len(),
            buf: value,
            locked,
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
        // Wipe in place (the buffer spans its whole allocation), then look.
        self.buf.expose_mut().as_mut_slice().zeroize();
        let clean = self.buf.expose().iter().all(|&b| b == 0);
        WIPED.fetch_add(1, Ordering::SeqCst);
        if !clean {
            NOT_WIPED.fetch_add(1, Ordering::SeqCst);
        }
        if self.locked {
            crate::memlock::unlock(self.buf.expose());
        }
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
}
