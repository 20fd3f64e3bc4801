//! `LockedBuf`: the plaintext buffer of one open file, in a locked region
//! of its own pages ([`crate::memlock`]), grown as data arrives (never
//! `max_value_size` up front) and wiped when dropped or outgrown.

use sealfs::SensitiveBytes;

use crate::memlock::{NoMemory, Region};

/// Why a write into a buffer failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufError {
    /// Past the largest value a write may make.
    TooLarge,
    /// No locked memory to grow into.
    NoMemory,
}

impl From<NoMemory> for BufError {
    fn from(_: NoMemory) -> Self {
        BufError::NoMemory
    }
}

/// Plaintext owned by one file handle: `len` bytes of content in `region`,
/// at most `max` bytes.
pub struct LockedBuf {
    region: Region,
    len: usize,
    max: usize,
}

impl LockedBuf {
    /// Takes `value` as the content, growing up to `max` as writes arrive.
    pub fn with_value(value: &[u8], max: usize) -> Result<Self, NoMemory> {
        let mut region = Region::new(value.len())?;
        region.bytes_mut()[..value.len()].copy_from_slice(value);
        Ok(LockedBuf {
            region,
            len: value.len(),
            max: max.max(value.len()),
        })
    }

    /// Takes a decrypted value (read-only handles): copied into locked
    /// pages of its own, the heap copy wiped as it is dropped.
    pub fn adopt(value: SensitiveBytes) -> Result<Self, NoMemory> {
        Self::with_value(value.expose(), value.len())
    }

    /// A copy in locked pages of its own, with the same limit.
    pub fn try_clone(&self) -> Result<Self, NoMemory> {
        Self::with_value(self.content(), self.max)
    }

    pub fn locked(&self) -> bool {
        self.region.locked() || self.region.is_empty()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held now (whole pages), for accounting.
    pub fn capacity(&self) -> usize {
        self.region.len()
    }

    pub fn content(&self) -> &[u8] {
        &self.region.bytes()[..self.len]
    }

    /// The region holding the content now (tests watch it being wiped).
    #[cfg(test)]
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// Makes room for `end` bytes: a region twice as large (at most `max`,
    /// in whole pages) takes the content; the old one is wiped.
    fn reserve(&mut self, end: usize) -> Result<(), BufError> {
        if end > self.max {
            return Err(BufError::TooLarge);
        }
        if end <= self.region.len() {
            return Ok(());
        }
        let want = end.max(self.region.len() * 2).min(self.max.max(end));
        let mut bigger = Region::new(want)?;
        bigger.bytes_mut()[..self.len].copy_from_slice(self.content());
        self.region = bigger;
        Ok(())
    }

    /// Writes `data` at `offset` (zero-filling a gap).
    pub fn write_at(&mut self, offset: usize, data: &[u8]) -> Result<(), BufError> {
        let end = offset.checked_add(data.len()).ok_or(BufError::TooLarge)?;
        self.reserve(end)?;
        let len = self.len;
        let bytes = self.region.bytes_mut();
        if offset > len {
            bytes[len..offset].fill(0);
        }
        bytes[offset..end].copy_from_slice(data);
        self.len = len.max(end);
        Ok(())
    }

    /// Truncates or zero-extends to `len`.
    pub fn set_len(&mut self, len: usize) -> Result<(), BufError> {
        self.reserve(len)?;
        let old = self.len;
        let bytes = self.region.bytes_mut();
        if len < old {
            bytes[len..old].fill(0);
        } else {
            bytes[old..len].fill(0);
        }
        self.len = len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memlock::wipe_watch::{self, Fate};

    #[test]
    fn a_buffer_grows_as_data_arrives_up_to_its_limit() {
        let mut b = LockedBuf::with_value(b"abc", 1 << 20).unwrap();
        let first = b.capacity();
        assert!(first < 1 << 20, "not the limit up front");
        assert_eq!(b.write_at(3, b"def"), Ok(()));
        assert_eq!(b.content(), b"abcdef");
        assert_eq!(b.write_at(1, b"X"), Ok(()));
        assert_eq!(b.content(), b"aXcdef");
        assert_eq!(b.write_at(7, b"Z"), Ok(()));
        assert_eq!(b.content(), b"aXcdef\0Z");
        // Growing past a page moves the content to a bigger region.
        let watched = wipe_watch::watch(b.region());
        assert_eq!(b.write_at(first + 10, b"far"), Ok(()));
        assert_eq!(
            wipe_watch::fate(watched),
            Fate::Wiped,
            "the outgrown region is wiped"
        );
        assert_eq!(&b.content()[..8], b"aXcdef\0Z");
        assert_eq!(&b.content()[first + 10..], b"far");
        assert!(b.locked());
        assert_eq!(b.write_at(1 << 20, b"x"), Err(BufError::TooLarge));
        assert_eq!(b.set_len(2), Ok(()));
        assert_eq!(b.content(), b"aX");
        assert_eq!(b.set_len((1 << 20) + 1), Err(BufError::TooLarge));
        let mut small = LockedBuf::with_value(b"", 8).unwrap();
        assert_eq!(small.write_at(6, b"123"), Err(BufError::TooLarge));
        assert_eq!(small.write_at(5, b"123"), Ok(()));
    }

    #[test]
    fn a_dropped_buffer_is_all_zeros_before_it_is_unlocked() {
        // Plaintext at both ends of a region: all of it is wiped.
        let mut b = LockedBuf::with_value(b"plaintext", 64).unwrap();
        assert_eq!(b.write_at(60, b"tail"), Ok(()));
        let watched = wipe_watch::watch(b.region());
        let other = LockedBuf::adopt(SensitiveBytes::from_slice(b"unwatched")).unwrap();
        drop(other);
        assert_eq!(wipe_watch::fate(watched), Fate::Alive);
        drop(b);
        assert_eq!(wipe_watch::fate(watched), Fate::Wiped);
    }
}
