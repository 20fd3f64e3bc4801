//! The embedded default backend: each sealed blob is one owner-only file.
//!
//! ```text
//! <vault-dir>/objects/<first two hex digits>/<object id>   0700 dirs, 0600 files
//! <vault-dir>/tmp/                                          writes in progress
//! ```
//! A put writes a temp file, fsyncs it, renames it into place and fsyncs the
//! directory, so a blob is whole or absent. The fan-out keeps directories
//! small at 100,000 secrets.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{BackendError, BackendKind, BlobBackend, ObjectId};
use crate::fsutil;

pub struct EncryptedFile {
    objects: PathBuf,
    tmp: PathBuf,
}

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> BackendError {
    move |source| BackendError::Io {
        backend: BackendKind::EncryptedFile,
        op,
        source,
    }
}

impl EncryptedFile {
    pub const OBJECTS_DIR: &'static str = "objects";
    pub const TMP_DIR: &'static str = "tmp";

    pub fn open(vault_dir: &Path) -> Result<Self, BackendError> {
        Self::open_in(vault_dir, Self::OBJECTS_DIR)
    }

    /// The same layout under another directory name (the DPAPI backend
    /// keeps its protected files beside, not among, these).
    pub fn open_in(vault_dir: &Path, objects_dir: &str) -> Result<Self, BackendError> {
        let objects = vault_dir.join(objects_dir);
        let tmp = vault_dir.join(Self::TMP_DIR);
        for dir in [&objects, &tmp] {
            fsutil::create_private_dir_all(dir).map_err(io_err("creating the blob directories"))?;
        }
        Ok(EncryptedFile { objects, tmp })
    }

    /// Where the blob `id` is kept.
    pub fn blob_path(&self, id: &ObjectId) -> PathBuf {
        let id = id.as_str();
        self.objects.join(&id[..2]).join(id)
    }
}

impl BlobBackend for EncryptedFile {
    fn kind(&self) -> BackendKind {
        BackendKind::EncryptedFile
    }

    fn put_blob(&self, id: &ObjectId, blob: &[u8]) -> Result<(), BackendError> {
        let path = self.blob_path(id);
        let fan = path.parent().expect("blob paths have a parent");
        if !fan.exists() {
            fsutil::create_private_dir_all(fan).map_err(io_err("creating a blob directory"))?;
            fsutil::fsync_dir(&self.objects).map_err(io_err("syncing the blob directory"))?;
        }
        fsutil::write_atomic(&self.tmp, &path, blob, None).map_err(io_err("writing a blob"))
    }

    fn get_blob(&self, id: &ObjectId) -> Result<Vec<u8>, BackendError> {
        match fs::read(self.blob_path(id)) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(BackendError::NotFound(id.clone()))
            }
            Err(e) => Err(io_err("reading a blob")(e)),
        }
    }

    fn delete_blob(&self, id: &ObjectId) -> Result<bool, BackendError> {
        let path = self.blob_path(id);
        match fs::remove_file(&path) {
            Ok(()) => {
                let fan = path.parent().expect("blob paths have a parent");
                fsutil::fsync_dir(fan).map_err(io_err("syncing a blob directory"))?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("deleting a blob")(e)),
        }
    }

    fn recover(&self) -> Result<(), BackendError> {
        for entry in fs::read_dir(&self.tmp).map_err(io_err("listing temp files"))? {
            let entry = entry.map_err(io_err("listing temp files"))?;
            match fs::remove_file(entry.path()) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("removing a temp file")(e)),
            }
        }
        Ok(())
    }
}
