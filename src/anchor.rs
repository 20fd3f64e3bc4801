//! The rollback anchor: the index's commit counter and root digest, MACed
//! under a key derived from the identity and kept where the identity is
//! (the identity directory, or the platform keystore), out of reach of a
//! vault-directory writer. The vault compares the index with it, so an
//! older copy of the index, or of one record, is refused
//! (`docs/format.md`, "Rollback anchor").
//!
//! File layout: two 128-byte slots; a commit overwrites the slot of its
//! counter's parity and syncs, so a torn write leaves the other slot, and
//! the valid slot with the higher counter wins. A keystore holds one slot
//! as an item of its own (replaced atomically).

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::backend::{BackendError, BlobBackend, ObjectId};
use crate::crypto::KeyRing;
use crate::fsutil::PrivateDir;
use crate::index::State;

const MAGIC: &[u8; 4] = b"SLFA";
const VERSION: u8 = 1;
/// magic, version, key id, counter, root, then the MAC.
const BODY_LEN: usize = 4 + 1 + 8 + 8 + 32;
const SLOT_LEN: usize = 128;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnchorError {
    #[error("the rollback anchor at {0} is corrupt or does not belong to this vault")]
    Corrupt(String),
    #[error("cannot {what} the rollback anchor at {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("refusing to move the rollback anchor at {at} back from commit {current} to {new}")]
    Backward { at: String, current: u64, new: u64 },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Where a vault's anchor is kept.
pub enum AnchorStore<'a> {
    /// `<identity-dir>/anchor-<vault id>`, beside `device.key`: opened
    /// through the checked identity directory, `O_NOFOLLOW`
    /// (`allow_foreign_owner` as for the vault).
    File {
        dir: PathBuf,
        name: String,
        allow_foreign_owner: bool,
    },
    /// An item of the platform keystore that holds the identity.
    Backend(&'a dyn BlobBackend),
}

impl AnchorStore<'_> {
    pub fn file_in(identity_dir: &Path, vault_id: &str, allow_foreign_owner: bool) -> Self {
        AnchorStore::File {
            dir: identity_dir.to_owned(),
            name: format!("anchor-{vault_id}"),
            allow_foreign_owner,
        }
    }

    /// Where, for messages.
    pub fn describe(&self) -> String {
        match self {
            AnchorStore::File { dir, name, .. } => dir.join(name).display().to_string(),
            AnchorStore::Backend(b) => format!("the {} store", b.kind()),
        }
    }

    /// The anchored state, `None` if no anchor was ever written.
    pub fn read(&self, keys: &KeyRing) -> Result<Option<State>, AnchorError> {
        let bytes = match self {
            AnchorStore::File {
                dir,
                name,
                allow_foreign_owner,
            } => {
                let path = &dir.join(name);
                let opened =
                    PrivateDir::open(dir, *allow_foreign_owner).and_then(|d| d.open_read(name));
                let mut f = match opened {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(source) => return Err(io_err("open", path, source)),
                };
                let mut bytes = Vec::new();
                f.read_to_end(&mut bytes)
                    .map_err(|source| io_err("read", path, source))?;
                bytes
            }
            AnchorStore::Backend(b) => match b.get_blob(&ObjectId::anchor()) {
                Ok(bytes) => bytes,
                Err(BackendError::NotFound(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            },
        };
        bytes
            .chunks(SLOT_LEN)
            .filter_map(|slot| parse(keys, slot))
            .max_by_key(|s| s.counter)
            .map(Some)
            .ok_or_else(|| AnchorError::Corrupt(self.describe()))
    }

    /// Records `state` (durable when this returns).
    pub fn write(&self, keys: &KeyRing, state: State) -> Result<(), AnchorError> {
        // Forward only: an index forked under a writer (same counter,
        // another root) must never overwrite the anchor it contradicts.
        match self.read(keys) {
            Ok(Some(current)) if current.counter >= state.counter && current != state => {
                return Err(AnchorError::Backward {
                    at: self.describe(),
                    current: current.counter,
                    new: state.counter,
                })
            }
            Ok(Some(current)) if current == state => return Ok(()),
            _ => {}
        }
        let slot = encode(keys, state);
        match self {
            AnchorStore::File {
                dir,
                name,
                allow_foreign_owner,
            } => {
                let path = &dir.join(name);
                let mut f = PrivateDir::open(dir, *allow_foreign_owner)
                    .and_then(|d| d.open_or_create(name))
                    .map_err(|source| io_err("open", path, source))?;
                let offset = (state.counter % 2) * SLOT_LEN as u64;
                f.seek(SeekFrom::Start(offset))
                    .and_then(|_| f.write_all(&slot))
                    .and_then(|()| f.sync_data())
                    .map_err(|source| io_err("write", path, source))
            }
            AnchorStore::Backend(b) => Ok(b.put_blob(&ObjectId::anchor(), &slot)?),
        }
    }
}

fn io_err(what: &'static str, path: &Path, source: io::Error) -> AnchorError {
    AnchorError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

fn encode(keys: &KeyRing, state: State) -> Vec<u8> {
    let mut out = Vec::with_capacity(SLOT_LEN);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&keys.key_id().to_bytes());
    out.extend_from_slice(&state.counter.to_be_bytes());
    out.extend_from_slice(&state.root);
    let mac = keys.anchor_mac(&out);
    out.extend_from_slice(&mac);
    out.resize(SLOT_LEN, 0);
    out
}

fn parse(keys: &KeyRing, slot: &[u8]) -> Option<State> {
    if slot.len() < BODY_LEN + 32 || &slot[..4] != MAGIC || slot[4] != VERSION {
        return None;
    }
    let (body, mac) = (&slot[..BODY_LEN], &slot[BODY_LEN..BODY_LEN + 32]);
    if !keys.verify_anchor_mac(body, mac) || body[5..13] != keys.key_id().to_bytes() {
        return None;
    }
    Some(State {
        counter: u64::from_be_bytes(body[13..21].try_into().ok()?),
        root: body[21..53].try_into().ok()?,
    })
}
