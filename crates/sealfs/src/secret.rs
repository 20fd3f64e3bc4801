//! `SensitiveBytes`: the one type every secret value lives in while in memory.
//!
//! The buffer is wiped (including spare capacity) when the value is dropped.
//! There is no `Display`, `Debug` prints only a redaction marker, and the bytes
//! are reachable only through [`SensitiveBytes::expose`]. Buffers that receive
//! plaintext are allocated once at their final size ([`SensitiveBytes::read_limited`],
//! [`SensitiveBytes::zeroed`]) so that no reallocation leaves an unwiped copy.

use std::fmt;
use std::io::{self, Read};

use zeroize::{Zeroize, Zeroizing};

/// A secret value in memory, zeroized on drop.
pub struct SensitiveBytes(Zeroizing<Vec<u8>>);

impl SensitiveBytes {
    /// Takes ownership of `bytes` without copying them.
    pub fn new(bytes: Vec<u8>) -> Self {
        SensitiveBytes(Zeroizing::new(bytes))
    }

    /// A buffer of `len` zero bytes, to be filled in place.
    pub fn zeroed(len: usize) -> Self {
        SensitiveBytes(Zeroizing::new(vec![0u8; len]))
    }

    /// Copies `bytes` into a new wiping buffer. The caller remains responsible
    /// for the source.
    pub fn from_slice(bytes: &[u8]) -> Self {
        let mut v = Vec::with_capacity(bytes.len());
        v.extend_from_slice(bytes);
        SensitiveBytes::new(v)
    }

    /// Reads everything from `reader`, refusing more than `limit` bytes.
    ///
    /// The buffer is allocated once (`limit + 1` bytes) so that no reallocation
    /// copies the secret; returns `Ok(None)` when the input exceeds `limit`.
    pub fn read_limited<R: Read>(mut reader: R, limit: usize) -> io::Result<Option<Self>> {
        let mut buf = SensitiveBytes::zeroed(limit.saturating_add(1));
        let mut filled = 0;
        loop {
            let dst = &mut buf.0[filled..];
            if dst.is_empty() {
                return Ok(None);
            }
            match reader.read(dst) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        buf.0.truncate(filled);
        Ok(Some(buf))
    }

    /// The secret bytes. Every call site is a place where plaintext is used.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Mutable access to the secret bytes, for in-place crypto. A slice,
    /// not the `Vec`: nothing can grow it and leave an unwiped copy behind.
    pub fn expose_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }

    /// Shortens the value to `len` bytes, wiping the bytes cut off.
    pub fn truncate(&mut self, len: usize) {
        if len < self.0.len() {
            zeroize::Zeroize::zeroize(&mut self.0[len..]);
            self.0.truncate(len);
        }
    }

    /// The value's length, in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Constant-time equality (for tests and confirmation prompts).
    pub fn ct_eq(&self, other: &SensitiveBytes) -> bool {
        use subtle::ConstantTimeEq;
        self.expose().ct_eq(other.expose()).into()
    }
}

impl From<String> for SensitiveBytes {
    fn from(s: String) -> Self {
        SensitiveBytes::new(s.into_bytes())
    }
}

impl From<Vec<u8>> for SensitiveBytes {
    fn from(v: Vec<u8>) -> Self {
        SensitiveBytes::new(v)
    }
}

impl fmt::Debug for SensitiveBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SensitiveBytes(<redacted>)")
    }
}

impl Zeroize for SensitiveBytes {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_content() {
        let s = SensitiveBytes::from_slice(b"hunter2");
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"));
        assert!(!shown.contains("104")); // 'h' as a number
    }

    #[test]
    fn read_limited_is_byte_exact_and_enforces_limit() {
        let data = b"line one\nline two\n\0\xff";
        let got = SensitiveBytes::read_limited(&data[..], data.len())
            .unwrap()
            .unwrap();
        assert_eq!(got.expose(), data);
        assert!(SensitiveBytes::read_limited(&data[..], data.len() - 1)
            .unwrap()
            .is_none());
    }

    #[test]
    fn ct_eq_compares_contents() {
        let a = SensitiveBytes::from_slice(b"abc");
        assert!(a.ct_eq(&SensitiveBytes::from_slice(b"abc")));
        assert!(!a.ct_eq(&SensitiveBytes::from_slice(b"abd")));
        assert!(!a.ct_eq(&SensitiveBytes::from_slice(b"ab")));
    }
}
