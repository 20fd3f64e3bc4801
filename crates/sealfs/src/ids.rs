//! The ids every layer passes around: [`ObjectId`] (where a sealed blob is
//! kept) and [`KeyId`] (which key sealed it). A leaf but for [`crate::hex`].

use std::fmt;

use crate::hex::{hex, unhex};

/// Bytes in a [`KeyId`].
pub const KEY_ID_LEN: usize = 8;

/// The address of one sealed blob: 64 lower-case hex digits (an HMAC-SHA256).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(String);

impl ObjectId {
    /// The reserved id under which a platform store keeps the vault's device
    /// identity (never an HMAC output in practice).
    pub fn identity() -> Self {
        ObjectId("0".repeat(64))
    }

    /// The reserved id under which a platform store keeps the vault's
    /// rollback anchor (`anchor.rs`).
    pub fn anchor() -> Self {
        ObjectId(format!("{}1", "0".repeat(63)))
    }

    pub(crate) fn from_digest(digest: &[u8]) -> Self {
        ObjectId(hex(digest))
    }

    /// Accepts exactly 64 lower-case hex digits.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| ObjectId(s.to_owned()))
    }

    /// The id as its 64 hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({})", self.0)
    }
}

/// Identifies the sealing key an envelope was made with. Not secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyId(pub(crate) [u8; KEY_ID_LEN]);

impl KeyId {
    /// The id's bytes.
    pub fn to_bytes(self) -> [u8; KEY_ID_LEN] {
        self.0
    }

    /// The id as lower-case hex.
    pub fn to_hex(self) -> String {
        hex(&self.0)
    }

    /// Parses the hex form of a key id; `None` if it is not exactly
    /// [`KEY_ID_LEN`] bytes of hex.
    pub fn from_hex(s: &str) -> Option<KeyId> {
        let bytes = unhex(s)?;
        Some(KeyId(bytes.try_into().ok()?))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}
