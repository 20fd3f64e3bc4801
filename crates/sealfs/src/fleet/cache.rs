//! This host's copies of the fleet records it has read, exactly as etcd
//! holds them (sealed under the fleet key or age-encrypted to this host;
//! never plaintext), and the highest counter verified per index shard.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::FleetError;
use crate::fsutil::PrivateDir;
use crate::VaultScope;

/// `<vault-dir>/fleet-cache/{records,counters,tmp}`, each a
/// [`PrivateDir`] opened once with O_NOFOLLOW: a symlink planted in the
/// vault directory is refused, never written through.
pub(super) struct Cache {
    /// The etcd prefix: counters of two fleets never mix.
    prefix: String,
    records: PrivateDir,
    counters: PrivateDir,
    tmp: PrivateDir,
}

/// The file name of a cached etcd key: its hex, or (past what a file name
/// holds: a grant wrap's key names a 256-bit id and a recipient) `h` and
/// its SHA-256, which no hex name starts with.
fn name(text: &str) -> String {
    if text.len() <= MAX_HEX_NAME / 2 {
        return crate::hex::hex(text.as_bytes());
    }
    use sha2::Digest;
    format!(
        "h{}",
        crate::hex::hex(&sha2::Sha256::digest(text.as_bytes()))
    )
}

/// Well under the 255 bytes file systems allow a name.
const MAX_HEX_NAME: usize = 200;

impl Cache {
    pub(super) fn open(dir: PathBuf, prefix: &str) -> Result<Self, FleetError> {
        let err = |path: &Path| {
            let path = path.to_owned();
            move |source| FleetError::Cache { path, source }
        };
        // The vault directory's owner was checked when the vault was opened.
        let parent = crate::fsutil::parent_dir(&dir);
        let base = PrivateDir::create(parent, true)
            .and_then(|p| {
                let name = dir.file_name().ok_or_else(|| {
                    std::io::Error::new(ErrorKind::InvalidInput, "no directory name")
                })?;
                p.subdir(name, true)
            })
            .map_err(err(&dir))?;
        let sub = |n: &str| base.subdir(n, true).map_err(err(&dir.join(n)));
        Ok(Cache {
            prefix: prefix.to_owned(),
            records: sub("records")?,
            counters: sub("counters")?,
            tmp: sub("tmp")?,
        })
    }

    fn err(path: &Path) -> impl Fn(std::io::Error) -> FleetError + '_ {
        move |source| FleetError::Cache {
            path: path.to_owned(),
            source,
        }
    }

    fn write(&self, dir: &PrivateDir, name: &str, bytes: &[u8]) -> Result<(), FleetError> {
        dir.write_atomic(&self.tmp, name, bytes)
            .map_err(Self::err(&dir.join(name)))
    }

    fn read(&self, dir: &PrivateDir, name: &str) -> Result<Option<Vec<u8>>, FleetError> {
        match dir.read(name) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::err(&dir.join(name))(e)),
        }
    }

    /// Keeps the record at etcd key `key`, unless the same bytes are there.
    pub(super) fn put(&self, key: &str, value: &[u8]) -> Result<(), FleetError> {
        let n = name(key);
        if self.read(&self.records, &n)?.as_deref() == Some(value) {
            return Ok(());
        }
        self.write(&self.records, &n, value)
    }

    /// Keeps each record (etcd key, bytes) whose bytes differ from the
    /// cached copy, all with one flush ([`PrivateDir::write_atomic_many`]).
    pub(super) fn put_many(&self, records: &[(&str, &[u8])]) -> Result<(), FleetError> {
        let mut changed = Vec::new();
        for (key, value) in records {
            let n = name(key);
            if self.read(&self.records, &n)?.as_deref() != Some(*value) {
                changed.push((n, *value));
            }
        }
        self.records
            .write_atomic_many(&self.tmp, &changed)
            .map_err(Self::err(self.records.path()))
    }

    pub(super) fn get(&self, key: &str) -> Result<Option<Vec<u8>>, FleetError> {
        self.read(&self.records, &name(key))
    }

    pub(super) fn remove(&self, key: &str) -> Result<(), FleetError> {
        let n = name(key);
        match self.records.remove_file(&n) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(Self::err(&self.records.join(&n))(e)),
            _ => Ok(()),
        }
    }

    /// The lock every read-check-store of a pin holds, so that two
    /// processes of this host never move a pin backwards.
    pub(super) fn lock_pins(&self) -> Result<std::fs::File, FleetError> {
        let f = self
            .counters
            .open_or_create("pins.lock")
            .map_err(Self::err(&self.counters.join("pins.lock")))?;
        f.lock()
            .map_err(Self::err(&self.counters.join("pins.lock")))?;
        Ok(f)
    }

    /// When this host last reached etcd, in ms since the epoch (0: never).
    pub(super) fn contact(&self) -> Result<u64, FleetError> {
        Ok(self
            .read(&self.counters, "last-contact")?
            .and_then(|b| std::str::from_utf8(&b).ok()?.trim().parse().ok())
            .unwrap_or(0))
    }

    pub(super) fn set_contact(&self, ms: u64) -> Result<(), FleetError> {
        self.write(&self.counters, "last-contact", ms.to_string().as_bytes())
    }

    /// `counters/<scope>/`: the scope's shard counters, a file each.
    fn scope_counters(
        &self,
        scope: &VaultScope,
        create: bool,
    ) -> Result<Option<PrivateDir>, FleetError> {
        let n = name(&format!("{}/{scope}", self.prefix));
        match self.counters.subdir(&n, create) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == ErrorKind::NotFound && !create => Ok(None),
            Err(e) => Err(Self::err(&self.counters.join(&n))(e)),
        }
    }

    /// The highest counter verified for shard `shard` of `scope` (0: none
    /// yet), and the key epoch of the keyring it was verified under.
    pub(super) fn high_water(
        &self,
        scope: &VaultScope,
        shard: &str,
    ) -> Result<(u64, u64), FleetError> {
        let Some(dir) = self.scope_counters(scope, false)? else {
            return Ok((0, 0));
        };
        match self.read(&dir, shard)? {
            None => Ok((0, 0)),
            Some(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| {
                    let (counter, epoch) = s.trim().split_once(' ')?;
                    Some((counter.parse().ok()?, epoch.parse().ok()?))
                })
                .ok_or_else(|| {
                    FleetError::Corrupt(format!("the counter file {}", dir.join(shard).display()))
                }),
        }
    }

    /// Forgets every shard counter of `scope` (the caller holds the pin
    /// lock).
    pub(super) fn forget_counters(&self, scope: &VaultScope) -> Result<(), FleetError> {
        let Some(dir) = self.scope_counters(scope, false)? else {
            return Ok(());
        };
        for n in dir.entries().map_err(Self::err(dir.path()))? {
            match dir.remove_file(&n) {
                Err(e) if e.kind() != ErrorKind::NotFound => {
                    return Err(Self::err(&dir.join(&n))(e))
                }
                _ => {}
            }
        }
        dir.sync().map_err(Self::err(dir.path()))
    }

    /// The shards of `scope` this host has verified a counter for, of
    /// names `hex` hex digits long (the fleet's): a listing that lacks one
    /// of them is missing a shard.
    pub(super) fn seen_shards(
        &self,
        scope: &VaultScope,
        hex: u8,
    ) -> Result<Vec<String>, FleetError> {
        let Some(dir) = self.scope_counters(scope, false)? else {
            return Ok(Vec::new());
        };
        let mut out: Vec<String> = dir
            .entries()
            .map_err(Self::err(dir.path()))?
            .into_iter()
            .filter_map(|n| n.into_string().ok())
            .filter(|n| n.len() == usize::from(hex) && n.bytes().all(|b| b.is_ascii_hexdigit()))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Records `counter` for `shard` of `scope`, verified under the key of
    /// `epoch`, if higher than the one recorded; a counter recorded under
    /// an epoch before `recovered` (`fleet recover` re-anchored the scope
    /// since) no longer counts.
    pub(super) fn set_high_water(
        &self,
        scope: &VaultScope,
        shard: &str,
        (counter, epoch): (u64, u64),
        recovered: Option<u64>,
    ) -> Result<(), FleetError> {
        self.set_high_waters(scope, &[(shard, counter)], epoch, recovered)
    }

    /// [`Self::set_high_water`] for several shards of `scope` verified
    /// under the key of `epoch` (a listing): one lock, and the changed
    /// counters written with one flush.
    pub(super) fn set_high_waters(
        &self,
        scope: &VaultScope,
        shards: &[(&str, u64)],
        epoch: u64,
        recovered: Option<u64>,
    ) -> Result<(), FleetError> {
        let _lock = self.lock_pins()?;
        let mut lines = Vec::new();
        for &(shard, counter) in shards {
            let (mut seen, seen_epoch) = self.high_water(scope, shard)?;
            if recovered.is_some_and(|r| seen_epoch < r) {
                seen = 0;
            }
            if counter <= seen && epoch <= seen_epoch {
                continue;
            }
            let line = format!("{} {}", counter.max(seen), epoch.max(seen_epoch));
            lines.push((shard.to_owned(), line.into_bytes()));
        }
        if lines.is_empty() {
            return Ok(());
        }
        let dir = self
            .scope_counters(scope, true)?
            .expect("created on demand");
        let files: Vec<(String, &[u8])> = lines
            .iter()
            .map(|(n, l)| (n.clone(), l.as_slice()))
            .collect();
        dir.write_atomic_many(&self.tmp, &files)
            .map_err(Self::err(dir.path()))
    }
}
