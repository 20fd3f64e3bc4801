//! The rollback anchor: the index's commit counter and root digest, MACed
//! under a key derived from the identity and kept where the identity is
//! (the identity directory, or the platform keystore), out of reach of a
//! vault-directory writer. The vault compares the index with it, so an
//! older copy of the index, or of one record, is refused
//! (`docs/format.md`, "Rollback anchor").
//!
//! The anchor also binds the vault to its place: a digest of the vault
//! directory's canonical path, so two vaults sharing one identity cannot be
//! swapped for each other; a vault moved on purpose is accepted with
//! `sealfs recover --accept-move`.
//!
//! File layout: two 128-byte slots; a commit overwrites the slot of its
//! counter's parity and syncs, so a torn write leaves the other slot, and
//! the valid slot with the higher counter wins. A write that would
//! overwrite the newest slot (binding a place at the same counter, a
//! counter that jumped) replaces the whole file atomically instead. A keystore holds one slot
//! as an item of its own (replaced atomically).

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::backend::{BackendError, BlobBackend, ObjectId};
use crate::crypto::KeyRing;
use crate::fsutil::PrivateDir;
use crate::index::State;

const MAGIC: &[u8; 4] = b"SLFA";
/// Version 1 (no place) is read, and replaced by version 2 at the next
/// anchor write.
const VERSION_UNPLACED: u8 = 1;
const VERSION: u8 = 2;
/// magic, version, key id, counter, root, [place, in version 2], then the MAC.
const BODY_LEN_UNPLACED: usize = 4 + 1 + 8 + 8 + 32;
const BODY_LEN: usize = BODY_LEN_UNPLACED + 32;
const SLOT_LEN: usize = 128;

/// Why the rollback anchor could not be read or written; [`AnchorError::kind`]
/// classifies it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnchorError {
    /// No slot of the anchor is valid under this vault's key; holds
    /// where the anchor is kept.
    #[error("the rollback anchor at {0} is corrupt or does not belong to this vault")]
    Corrupt(String),
    /// An I/O operation on the anchor file failed.
    #[error("cannot {what} the rollback anchor at {path}")]
    Io {
        /// What was being done when it failed.
        what: &'static str,
        /// The anchor file, or the identity directory that holds it.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// A write would take the anchor to an older commit, or to another
    /// state at the same commit.
    #[error("refusing to move the rollback anchor at {at} back from commit {current} to {new}")]
    Backward {
        /// Where the anchor is kept.
        at: String,
        /// The commit counter the anchor holds.
        current: u64,
        /// The commit counter of the refused write.
        new: u64,
    },
    /// The anchor binds the vault to another vault directory path.
    #[error("the vault was last used at another path ({at} says so): a vault put in its place is refused (if you moved it here, run `sealfs recover --accept-move`)")]
    Elsewhere {
        /// Where the anchor is kept.
        at: String,
    },
    /// The keystore holding the anchor failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl AnchorError {
    /// This error's [`ErrorKind`](crate::ErrorKind).
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            AnchorError::Io { .. } => crate::ErrorKind::Other,
            AnchorError::Backend(e) => e.kind(),
            AnchorError::Corrupt(_)
            | AnchorError::Backward { .. }
            | AnchorError::Elsewhere { .. } => crate::ErrorKind::Integrity,
        }
    }
}

/// A vault's anchor: where it is kept, and the place (a digest of the
/// vault directory's canonical path) it binds the vault to.
pub struct AnchorStore<'a> {
    home: Home<'a>,
    place: [u8; 32],
    /// Kept across reads by a long-lived vault (file home only).
    cache: Option<&'a ReadCache>,
}

/// What a vault keeps between reads of its anchor file, so a fresh read
/// (at every check) is one `fstatat` and one `pread`: the identity
/// directory's handle, and the anchor file open, reopened when it is
/// replaced (another inode). Every read still reads the bytes; their MACs
/// are checked again unless they are, byte for byte, the bytes last
/// checked under the same key.
#[derive(Default)]
pub struct ReadCache {
    #[cfg(unix)]
    open: std::sync::Mutex<Option<Opened>>,
    verified: std::sync::Mutex<Option<Verified>>,
}

/// The anchor bytes last read and checked, and what they decoded to.
struct Verified {
    bytes: Vec<u8>,
    key_id: crate::ids::KeyId,
    slot: Slot,
}

impl ReadCache {
    /// What `bytes` decoded to when they were last checked under `keys`.
    fn verified(&self, bytes: &[u8], keys: &KeyRing) -> Option<Slot> {
        let v = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        v.as_ref()
            .filter(|v| v.bytes == bytes && v.key_id == keys.key_id())
            .map(|v| v.slot)
    }

    fn remember(&self, bytes: Vec<u8>, keys: &KeyRing, slot: Slot) {
        *self.verified.lock().unwrap_or_else(|e| e.into_inner()) = Some(Verified {
            bytes,
            key_id: keys.key_id(),
            slot,
        });
    }
}

#[cfg(unix)]
struct Opened {
    dir: PrivateDir,
    /// The anchor file and its (device, inode).
    file: Option<(std::fs::File, (u64, u64))>,
}

/// Where an anchor is kept.
pub(crate) enum Home<'a> {
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

/// The anchor file of vault `vault_id` (hex) in its identity directory.
pub(crate) fn file_name(vault_id: &str) -> String {
    format!("anchor-{vault_id}")
}

/// The place of a vault directory: SHA-256 of its canonical path.
pub(crate) fn place_of(canonical_vault_dir: &Path) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"sealfs vault place\0");
    h.update(canonical_vault_dir.as_os_str().as_encoded_bytes());
    h.finalize().into()
}

/// One decoded slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    state: State,
    /// `None` in a version-1 slot.
    place: Option<[u8; 32]>,
}

impl<'a> AnchorStore<'a> {
    /// The anchor of vault `vault_id` as the file `anchor-<vault id>` in
    /// `identity_dir`, binding the vault to `place`.
    pub fn file_in(
        identity_dir: &Path,
        vault_id: &str,
        allow_foreign_owner: bool,
        place: [u8; 32],
    ) -> Self {
        AnchorStore {
            home: Home::File {
                dir: identity_dir.to_owned(),
                name: file_name(vault_id),
                allow_foreign_owner,
            },
            place,
            cache: None,
        }
    }

    /// The anchor as an item of the keystore `backend`, binding the vault
    /// to `place`.
    pub fn in_backend(backend: &'a dyn BlobBackend, place: [u8; 32]) -> Self {
        AnchorStore {
            home: Home::Backend(backend),
            place,
            cache: None,
        }
    }

    /// Reads through `cache` (see [`ReadCache`]).
    pub fn cached(self, cache: &'a ReadCache) -> Self {
        AnchorStore {
            cache: Some(cache),
            ..self
        }
    }

    /// Where, for messages.
    pub fn describe(&self) -> String {
        match &self.home {
            Home::File { dir, name, .. } => dir.join(name).display().to_string(),
            Home::Backend(b) => format!("the {} store", b.kind()),
        }
    }

    /// The anchored state, `None` if no anchor was ever written. An anchor
    /// that binds the vault to another place is [`AnchorError::Elsewhere`].
    pub fn read(&self, keys: &KeyRing) -> Result<Option<State>, AnchorError> {
        match self.read_slot(keys)? {
            Some(Slot {
                place: Some(place), ..
            }) if place != self.place => Err(AnchorError::Elsewhere {
                at: self.describe(),
            }),
            slot => Ok(slot.map(|s| s.state)),
        }
    }

    /// The anchored state wherever the vault was, for accepting a move.
    pub fn read_anywhere(&self, keys: &KeyRing) -> Result<Option<State>, AnchorError> {
        Ok(self.read_slot(keys)?.map(|s| s.state))
    }

    /// Whether the anchor binds the vault to a place (false for a
    /// version-1 anchor, or none).
    pub fn is_placed(&self, keys: &KeyRing) -> Result<bool, AnchorError> {
        Ok(self.read_slot(keys)?.is_some_and(|s| s.place.is_some()))
    }

    /// The anchor file's bytes (`None`: there is none), through the cache
    /// if there is one.
    fn file_bytes(
        &self,
        dir: &Path,
        name: &str,
        allow_foreign_owner: bool,
    ) -> Result<Option<Vec<u8>>, AnchorError> {
        let path = &dir.join(name);
        #[cfg(unix)]
        if let Some(cache) = self.cache {
            return cache
                .read(dir, name, allow_foreign_owner)
                .map_err(|source| io_err("read", path, source));
        }
        #[cfg(not(unix))]
        let _ = self.cache; // no inode numbers to tell a replaced file by
        read_file(dir, name, allow_foreign_owner, path)
    }

    fn read_slot(&self, keys: &KeyRing) -> Result<Option<Slot>, AnchorError> {
        let bytes = match &self.home {
            Home::File {
                dir,
                name,
                allow_foreign_owner,
            } => match self.file_bytes(dir, name, *allow_foreign_owner)? {
                Some(bytes) => bytes,
                None => return Ok(None),
            },
            Home::Backend(b) => match b.get_blob(&ObjectId::anchor()) {
                Ok(bytes) => bytes,
                Err(BackendError::NotFound(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            },
        };
        if let Some(slot) = self.cache.and_then(|c| c.verified(&bytes, keys)) {
            return Ok(Some(slot));
        }
        // Empty or zeros: a first write cut short by an earlier build,
        // which created the file before writing it. Not an anchor.
        if bytes.iter().all(|b| *b == 0) {
            return Ok(None);
        }
        let slot = bytes
            .chunks(SLOT_LEN)
            .filter_map(|slot| parse(keys, slot))
            .max_by_key(|s| s.state.counter)
            .ok_or_else(|| AnchorError::Corrupt(self.describe()))?;
        if let Some(cache) = self.cache {
            cache.remember(bytes, keys, slot);
        }
        Ok(Some(slot))
    }

    /// Records `state` at this store's place (durable when this returns).
    /// An anchor that cannot be read (I/O, keystore, corrupt) is the error:
    /// only a missing one is written afresh.
    pub fn write(&self, keys: &KeyRing, state: State) -> Result<(), AnchorError> {
        // Forward only: an index forked under a writer (same counter,
        // another root) must never overwrite the anchor it contradicts.
        // Nor is the place of a vault changed here (`rebind` does that).
        match self.read_slot(keys)? {
            Some(Slot {
                place: Some(place), ..
            }) if place != self.place => Err(AnchorError::Elsewhere {
                at: self.describe(),
            }),
            Some(current) if current.state.counter >= state.counter && current.state != state => {
                Err(AnchorError::Backward {
                    at: self.describe(),
                    current: current.state.counter,
                    new: state.counter,
                })
            }
            Some(current) if current.state == state && current.place.is_some() => Ok(()),
            _ => self.put(keys, state),
        }
    }

    /// Records `state` and binds the vault to this store's place, wherever
    /// the anchor placed it before: the owner accepted a move or a restore
    /// (`sealfs recover`). Still forward only.
    pub fn rebind(&self, keys: &KeyRing, state: State) -> Result<(), AnchorError> {
        match self.read_slot(keys)? {
            Some(current)
                if current.state.counter > state.counter
                    || (current.state.counter == state.counter && current.state != state) =>
            {
                Err(AnchorError::Backward {
                    at: self.describe(),
                    current: current.state.counter,
                    new: state.counter,
                })
            }
            _ => self.put(keys, state),
        }
    }

    fn put(&self, keys: &KeyRing, state: State) -> Result<(), AnchorError> {
        let slot = encode(keys, state, &self.place);
        match &self.home {
            Home::File {
                dir,
                name,
                allow_foreign_owner,
            } => {
                let path = &dir.join(name);
                let d = PrivateDir::open(dir, *allow_foreign_owner)
                    .map_err(|source| io_err("open", path, source))?;
                let offset = (state.counter % 2) * SLOT_LEN as u64;
                match d.open_read(name) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        // The first anchor appears whole or not at all (a
                        // crash never leaves a file without a valid slot).
                        let mut both = vec![0u8; 2 * SLOT_LEN];
                        both[offset as usize..offset as usize + SLOT_LEN].copy_from_slice(&slot);
                        return d
                            .write_atomic(&d, name, &both)
                            .map_err(|source| io_err("write", path, source));
                    }
                    Err(source) => return Err(io_err("open", path, source)),
                    Ok(mut f) => {
                        // Only the older slot is overwritten in place: a
                        // torn write then leaves the newest. Rewriting the
                        // newest (a place bound at the same commit, or a
                        // counter that jumped) replaces the whole file
                        // atomically instead.
                        let mut bytes = Vec::new();
                        f.read_to_end(&mut bytes)
                            .map_err(|source| io_err("read", path, source))?;
                        let at = offset as usize..offset as usize + SLOT_LEN;
                        let other = (SLOT_LEN as u64 - offset) as usize;
                        let counter_at = |range: std::ops::Range<usize>| {
                            bytes
                                .get(range)
                                .and_then(|slot| parse(keys, slot))
                                .map(|s| s.state.counter)
                        };
                        let target = counter_at(at.clone());
                        let older = counter_at(other..other + SLOT_LEN);
                        let newest_at_target = match (target, older) {
                            (None, _) => false,
                            (Some(_), None) => true,
                            (Some(t), Some(o)) => t >= o,
                        };
                        if newest_at_target {
                            bytes.resize(2 * SLOT_LEN, 0);
                            bytes[at].copy_from_slice(&slot);
                            return d
                                .write_atomic(&d, name, &bytes)
                                .map_err(|source| io_err("write", path, source));
                        }
                    }
                }
                let mut f = d
                    .open_or_create(name)
                    .map_err(|source| io_err("open", path, source))?;
                f.seek(SeekFrom::Start(offset))
                    .and_then(|_| f.write_all(&slot))
                    .and_then(|()| f.sync_data())
                    .map_err(|source| io_err("write", path, source))
            }
            Home::Backend(b) => Ok(b.put_blob(&ObjectId::anchor(), &slot)?),
        }
    }
}

/// The place of an anchor whose vault was replaced at its path: a vault
/// anchored here is refused everywhere until its owner accepts a move.
const NOWHERE: [u8; 32] = [0xff; 32];

/// A vault created (or accepted) at `place` retires every other vault of
/// the same identity directory still anchored there, so an old vault put
/// back at the path is refused (its anchor no longer names the path).
/// Anchors that do not parse under their own keys are not ours to touch.
/// Returns the vault ids retired.
pub(crate) fn retire_others_at(
    identity_dir: &Path,
    identity: &crate::identity::DeviceIdentity,
    own_vault_id: &str,
    allow_foreign_owner: bool,
    place: [u8; 32],
) -> Result<Vec<String>, AnchorError> {
    let d = PrivateDir::open(identity_dir, allow_foreign_owner)
        .map_err(|source| io_err("list", identity_dir, source))?;
    let entries = d
        .entries()
        .map_err(|source| io_err("list", identity_dir, source))?;
    let mut retired = Vec::new();
    for name in entries {
        let Some(id) = name.to_str().and_then(|n| n.strip_prefix("anchor-")) else {
            continue;
        };
        let Some(raw) = crate::hex::unhex(id).filter(|r| r.len() == 16) else {
            continue;
        };
        if id == own_vault_id {
            continue;
        }
        let keys = KeyRing::derive(identity, &raw);
        let there = AnchorStore::file_in(identity_dir, id, allow_foreign_owner, NOWHERE);
        match there.read_slot(&keys) {
            Ok(Some(slot)) if slot.place == Some(place) => {
                there.put(&keys, slot.state)?;
                retired.push(id.to_owned());
            }
            _ => {}
        }
    }
    Ok(retired)
}

/// Reads the whole anchor file (`None`: there is none).
fn read_file(
    dir: &Path,
    name: &str,
    allow_foreign_owner: bool,
    path: &Path,
) -> Result<Option<Vec<u8>>, AnchorError> {
    let opened = PrivateDir::open(dir, allow_foreign_owner).and_then(|d| d.open_read(name));
    let mut f = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io_err("open", path, source)),
    };
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)
        .map_err(|source| io_err("read", path, source))?;
    Ok(Some(bytes))
}

#[cfg(unix)]
impl ReadCache {
    /// The anchor file's bytes (`None`: there is none), through the kept
    /// handles.
    fn read(
        &self,
        dir: &Path,
        name: &str,
        allow_foreign_owner: bool,
    ) -> io::Result<Option<Vec<u8>>> {
        use std::os::unix::fs::FileExt;
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.is_none() {
            *open = Some(Opened {
                dir: PrivateDir::open(dir, allow_foreign_owner)?,
                file: None,
            });
        }
        let opened = open.as_mut().expect("set above");
        let id = match opened.dir.identity_of(name) {
            Ok(id) => id,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                opened.file = None;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if opened.file.as_ref().map(|(_, at)| *at) != Some(id) {
            let f = opened.dir.open_read(name)?;
            opened.file = Some((f, id));
        }
        let (f, _) = opened.file.as_ref().expect("set above");
        // Two slots; one more byte tells a longer (foreign) file apart.
        let mut buf = vec![0u8; 2 * SLOT_LEN + 1];
        let mut filled = 0;
        while filled < buf.len() {
            match f.read_at(&mut buf[filled..], filled as u64)? {
                0 => break,
                // A regular file reads short only at its end: no second
                // call to be told so.
                n if n < buf.len() - filled => {
                    filled += n;
                    break;
                }
                n => filled += n,
            }
        }
        buf.truncate(filled);
        Ok(Some(buf))
    }
}

fn io_err(what: &'static str, path: &Path, source: io::Error) -> AnchorError {
    AnchorError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

fn encode(keys: &KeyRing, state: State, place: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SLOT_LEN);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&keys.key_id().to_bytes());
    out.extend_from_slice(&state.counter.to_be_bytes());
    out.extend_from_slice(&state.root);
    out.extend_from_slice(place);
    let mac = keys.anchor_mac(&out);
    out.extend_from_slice(&mac);
    out.resize(SLOT_LEN, 0);
    out
}

fn parse(keys: &KeyRing, slot: &[u8]) -> Option<Slot> {
    if slot.len() < 5 || &slot[..4] != MAGIC {
        return None;
    }
    let len = match slot[4] {
        VERSION => BODY_LEN,
        VERSION_UNPLACED => BODY_LEN_UNPLACED,
        _ => return None,
    };
    if slot.len() < len + 32 {
        return None;
    }
    let (body, mac) = (&slot[..len], &slot[len..len + 32]);
    if !keys.verify_anchor_mac(body, mac) || body[5..13] != keys.key_id().to_bytes() {
        return None;
    }
    Some(Slot {
        state: State {
            counter: u64::from_be_bytes(body[13..21].try_into().ok()?),
            root: body[21..53].try_into().ok()?,
        },
        place: (len == BODY_LEN)
            .then(|| body[53..85].try_into().ok())
            .flatten(),
    })
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::identity::DeviceIdentity;
    use std::os::unix::fs::FileExt;

    fn state(counter: u64) -> State {
        State {
            counter,
            root: [counter as u8; 32],
        }
    }

    /// A long-lived vault's read through its kept handles answers what the
    /// file holds now: each commit, a slot broken and put right, another
    /// key. Only bytes identical to those last checked under the same key
    /// skip the MAC check.
    #[test]
    fn a_kept_read_answers_what_the_file_holds_now() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyRing::derive(&DeviceIdentity::from_bytes([7; 32]), b"t");
        let writer = AnchorStore::file_in(dir.path(), "v", false, [1; 32]);
        let cache = ReadCache::default();
        let reader = AnchorStore::file_in(dir.path(), "v", false, [1; 32]).cached(&cache);
        assert_eq!(reader.read(&keys).unwrap(), None);
        writer.write(&keys, state(1)).unwrap();
        assert_eq!(reader.read(&keys).unwrap(), Some(state(1)));
        writer.write(&keys, state(2)).unwrap();
        assert_eq!(reader.read(&keys).unwrap(), Some(state(2)));
        assert_eq!(reader.read(&keys).unwrap(), Some(state(2)));

        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.path().join("anchor-v"))
            .unwrap();
        let flip = |at: usize| {
            let mut b = [0u8; 1];
            file.read_exact_at(&mut b, at as u64).unwrap();
            file.write_all_at(&[b[0] ^ 1], at as u64).unwrap();
        };
        // Commit 2 is in the first slot: with its MAC broken, commit 1 is
        // the newest that authenticates.
        let mac_of = |slot: usize| slot * SLOT_LEN + BODY_LEN;
        flip(mac_of(0));
        assert_eq!(reader.read(&keys).unwrap(), Some(state(1)));
        flip(mac_of(1));
        assert!(matches!(reader.read(&keys), Err(AnchorError::Corrupt(_))));
        flip(mac_of(0));
        flip(mac_of(1));
        assert_eq!(reader.read(&keys).unwrap(), Some(state(2)));
        let other = KeyRing::derive(&DeviceIdentity::from_bytes([8; 32]), b"t");
        assert!(matches!(reader.read(&other), Err(AnchorError::Corrupt(_))));
        assert_eq!(reader.read(&keys).unwrap(), Some(state(2)));
    }
}
