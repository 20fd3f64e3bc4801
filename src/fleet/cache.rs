//! This host's copies of the fleet records it has read, exactly as etcd
//! holds them (sealed under the fleet key or age-encrypted to this host;
//! never plaintext), and the highest manifest counter verified per scope.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::FleetError;
use crate::fsutil;
use crate::VaultScope;

pub struct Cache {
    dir: PathBuf,
}

fn name(text: &str) -> String {
    crate::crypto::hex(text.as_bytes())
}

impl Cache {
    pub fn open(dir: PathBuf) -> Result<Self, FleetError> {
        for d in [dir.join("records"), dir.join("counters"), dir.join("tmp")] {
            fsutil::create_private_dir_all(&d).map_err(|source| FleetError::Cache {
                path: d.clone(),
                source,
            })?;
        }
        Ok(Cache { dir })
    }

    fn err(path: &Path) -> impl Fn(std::io::Error) -> FleetError + '_ {
        move |source| FleetError::Cache {
            path: path.to_owned(),
            source,
        }
    }

    fn write(&self, path: &Path, bytes: &[u8]) -> Result<(), FleetError> {
        fsutil::write_atomic(&self.dir.join("tmp"), path, bytes, Some(0o600))
            .map_err(Self::err(path))
    }

    fn read(&self, path: &Path) -> Result<Option<Vec<u8>>, FleetError> {
        match fs::read(path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::err(path)(e)),
        }
    }

    fn record_path(&self, key: &str) -> PathBuf {
        self.dir.join("records").join(name(key))
    }

    /// Keeps the record at etcd key `key`, unless the same bytes are there.
    pub fn put(&self, key: &str, value: &[u8]) -> Result<(), FleetError> {
        let path = self.record_path(key);
        if self.read(&path)?.as_deref() == Some(value) {
            return Ok(());
        }
        self.write(&path, value)
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, FleetError> {
        self.read(&self.record_path(key))
    }

    pub fn remove(&self, key: &str) -> Result<(), FleetError> {
        let path = self.record_path(key);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(Self::err(&path)(e)),
            _ => Ok(()),
        }
    }

    fn counter_path(&self, scope: &VaultScope) -> PathBuf {
        self.dir.join("counters").join(name(&scope.to_string()))
    }

    /// The highest manifest counter verified for `scope` (0: none yet).
    pub fn high_water(&self, scope: &VaultScope) -> Result<u64, FleetError> {
        let path = self.counter_path(scope);
        match self.read(&path)? {
            None => Ok(0),
            Some(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| FleetError::Corrupt(format!("the counter file {}", path.display()))),
        }
    }

    pub fn set_high_water(&self, scope: &VaultScope, counter: u64) -> Result<(), FleetError> {
        if counter <= self.high_water(scope)? {
            return Ok(());
        }
        self.write(&self.counter_path(scope), counter.to_string().as_bytes())
    }
}
