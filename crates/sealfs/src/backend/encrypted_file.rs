//! The embedded default backend: each sealed blob is one owner-only file.
//!
//! ```text
//! <vault-dir>/objects/<first two hex digits>/<object id>   0700 dirs, 0600 files
//! <vault-dir>/tmp/                                          writes in progress
//! ```
//! A put writes a temp file, fsyncs it, renames it into place and fsyncs the
//! directory, so a blob is whole or absent. The fan-out keeps directories
//! small at 100,000 secrets.
//!
//! Every directory here is a [`PrivateDir`]: `objects/`, `tmp/` and each
//! `objects/<xx>/` are opened with O_NOFOLLOW relative to their parent's
//! descriptor and checked, and blobs and temp files are opened, renamed and
//! removed relative to those descriptors. A symlinked `tmp`, `objects` or
//! `objects/<xx>` (or blob) is an error naming it; the temp-file sweep
//! lists and removes entries of the `tmp/` it opened, so it cannot be sent
//! out of the vault directory.
//!
//! Who owns the vault directory is checked once by [`crate::Vault::open`]
//! (`fsutil::check_vault_dir`, with `--allow-foreign-vault-dir`); here the
//! directory is accepted as its owner left it, but its entries must belong
//! to that owner, this process's uid or root, and nothing may be writable
//! by group or others.

use std::io;
use std::path::PathBuf;

use super::{BackendContext, BackendError, BackendKind, BlobBackend, ObjectId};
use crate::fsutil::PrivateDir;

/// The encrypted-file backend: blobs as files under `objects/`.
pub struct EncryptedFile {
    objects: PrivateDir,
    tmp: PrivateDir,
}

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> BackendError {
    move |source| BackendError::Io {
        backend: BackendKind::EncryptedFile,
        op,
        source,
    }
}

impl EncryptedFile {
    /// The directory, in the vault directory, that holds the blobs.
    pub const OBJECTS_DIR: &'static str = "objects";
    /// The directory, in the vault directory, that holds writes in progress.
    pub const TMP_DIR: &'static str = "tmp";

    /// Opens the `objects/` and `tmp/` of the vault in `ctx`, creating them
    /// if missing.
    pub fn open(ctx: &BackendContext) -> Result<Self, BackendError> {
        Self::open_in(ctx, Self::OBJECTS_DIR)
    }

    /// The same layout under another directory name (the DPAPI backend
    /// keeps its protected files beside, not among, these).
    pub fn open_in(ctx: &BackendContext, objects_dir: &str) -> Result<Self, BackendError> {
        match &ctx.vault_handle {
            Some(vault) => Self::open_at(vault, objects_dir),
            // The owner of the vault directory was checked by Vault::open;
            // symlinks and loose modes are refused here too.
            None => Self::open_at(
                &PrivateDir::create(&ctx.vault_dir, true)
                    .map_err(io_err("opening the vault directory"))?,
                objects_dir,
            ),
        }
    }

    /// The layout inside an opened vault directory.
    pub fn open_at(vault: &PrivateDir, objects_dir: &str) -> Result<Self, BackendError> {
        let open = |what| io_err(what);
        let objects = vault
            .subdir(objects_dir, true)
            .map_err(open("opening the blob directory"))?;
        let tmp = vault
            .subdir(Self::TMP_DIR, true)
            .map_err(open("opening the temp directory"))?;
        Ok(EncryptedFile { objects, tmp })
    }

    /// Where the blob `id` is kept (for messages and tests).
    pub fn blob_path(&self, id: &ObjectId) -> PathBuf {
        let id = id.as_str();
        self.objects.join(&id[..2]).join(id)
    }

    /// The fan-out directory of `id`, created if `create`.
    fn fan(&self, id: &ObjectId, create: bool) -> io::Result<PrivateDir> {
        self.objects.subdir(&id.as_str()[..2], create)
    }
}

impl BlobBackend for EncryptedFile {
    fn kind(&self) -> BackendKind {
        BackendKind::EncryptedFile
    }

    fn put_blob(&self, id: &ObjectId, blob: &[u8]) -> Result<(), BackendError> {
        let fan = match self.fan(id, false) {
            Ok(fan) => fan,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let fan = self
                    .fan(id, true)
                    .map_err(io_err("creating a blob directory"))?;
                self.objects
                    .sync()
                    .map_err(io_err("syncing the blob directory"))?;
                fan
            }
            Err(e) => return Err(io_err("opening a blob directory")(e)),
        };
        fan.write_atomic(&self.tmp, id.as_str(), blob)
            .map_err(io_err("writing a blob"))
    }

    fn get_blob(&self, id: &ObjectId) -> Result<Vec<u8>, BackendError> {
        let read = self.fan(id, false).and_then(|fan| fan.read(id.as_str()));
        match read {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(BackendError::NotFound(id.clone()))
            }
            Err(e) => Err(io_err("reading a blob")(e)),
        }
    }

    fn delete_blob(&self, id: &ObjectId) -> Result<bool, BackendError> {
        let fan = match self.fan(id, false) {
            Ok(fan) => fan,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_err("opening a blob directory")(e)),
        };
        match fan.remove_file(id.as_str()) {
            Ok(()) => {
                fan.sync().map_err(io_err("syncing a blob directory"))?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("deleting a blob")(e)),
        }
    }

    fn recover(&self) -> Result<(), BackendError> {
        // Listed and removed through the handle of the tmp/ opened (and
        // checked) at open: whatever `tmp` now names, nothing outside it is
        // touched, and a symlink in it is removed, not followed.
        let names = self.tmp.entries().map_err(io_err("listing temp files"))?;
        for name in names {
            match self.tmp.remove_file(&name) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("removing a temp file")(e)),
            }
        }
        Ok(())
    }
}
