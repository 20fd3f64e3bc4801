//! The device identity: 32 random bytes in an owner-only file, the root from
//! which every vault key on this device is derived.
//!
//! It lives outside the vault directory (by default in the sibling
//! `identity/`), so a copy of the vault directory alone cannot be opened.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::fsutil::PrivateDir;

pub(crate) const IDENTITY_LEN: usize = 32;
pub(crate) const IDENTITY_FILE: &str = "device.key";

/// Why the device identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// No identity file is at this path.
    #[error("device identity not found at {0} (the vault exists, so it will not be replaced; restore the identity or set --identity-dir)")]
    Missing(PathBuf),
    /// The keystore that should hold the identity does not; holds the
    /// store's name.
    #[error("the vault's device identity is missing from the {0} store")]
    MissingInStore(String),
    /// The identity read from a keystore has the wrong length; holds the
    /// length found.
    #[error(
        "the device identity in the keystore is corrupt: expected {IDENTITY_LEN} bytes, found {0}"
    )]
    CorruptInStore(usize),
    /// The OS gave no random bytes for a new identity (only from
    /// [`DeviceIdentity::generate`]).
    #[error("cannot read random bytes for a new device identity")]
    Random,
    /// The identity file has the wrong length.
    #[error("device identity at {path} is corrupt: expected {IDENTITY_LEN} bytes, found {found}")]
    Corrupt {
        /// The identity file.
        path: PathBuf,
        /// Its length, in bytes.
        found: u64,
    },
    /// The identity file has group or other permission bits set
    /// (`mode & 0o077`).
    #[error("device identity at {path} is accessible by other users (mode {mode:04o}); run `chmod 600 {path}`")]
    Exposed {
        /// The identity file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// An I/O operation on the identity file or its directory failed.
    #[error("cannot access device identity at {path}")]
    Io {
        /// The identity file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
}

/// The device identity bytes, wiped on drop.
pub struct DeviceIdentity(Zeroizing<[u8; IDENTITY_LEN]>);

impl DeviceIdentity {
    /// An identity of these bytes.
    pub fn from_bytes(bytes: [u8; IDENTITY_LEN]) -> Self {
        DeviceIdentity(Zeroizing::new(bytes))
    }

    /// A fresh random identity (kept in a keystore by the caller).
    pub fn generate() -> Result<Self, IdentityError> {
        let mut bytes = Zeroizing::new([0u8; IDENTITY_LEN]);
        getrandom::fill(bytes.as_mut()).map_err(|_| IdentityError::Random)?;
        Ok(DeviceIdentity(bytes))
    }

    /// An identity read from a keystore.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, IdentityError> {
        let mut out = Zeroizing::new([0u8; IDENTITY_LEN]);
        if bytes.len() != IDENTITY_LEN {
            return Err(IdentityError::CorruptInStore(bytes.len()));
        }
        out.copy_from_slice(bytes);
        Ok(DeviceIdentity(out))
    }

    /// Writes this identity as the owner-only file in `dir`, unless one is
    /// there; `Ok(false)` if an identity file exists already.
    pub fn save_new(&self, dir: &Path) -> Result<bool, IdentityError> {
        self.save_new_checked(dir, false)
    }

    /// [`DeviceIdentity::save_new`] in an identity directory that may belong
    /// to another uid if `allow_foreign_owner` (`--allow-foreign-vault-dir`).
    /// The directory is created 0700 if missing, then opened once with
    /// O_NOFOLLOW and checked (`fsutil::PrivateDir`); the file is written
    /// relative to it, never through a symlink.
    pub fn save_new_checked(
        &self,
        dir: &Path,
        allow_foreign_owner: bool,
    ) -> Result<bool, IdentityError> {
        let path = Self::path_in(dir);
        let io_err = |source| IdentityError::Io {
            path: path.clone(),
            source,
        };
        let d = PrivateDir::create(dir, allow_foreign_owner).map_err(io_err)?;
        let (mut f, tmp) = d.create_temp(".device-").map_err(io_err)?;
        let written = f
            .write_all(self.expose())
            .and_then(|()| f.sync_all())
            .and_then(|()| d.hard_link(&tmp, &d, IDENTITY_FILE));
        let _ = d.remove_file(&tmp);
        match written {
            Ok(()) => {
                d.sync().map_err(io_err)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io_err(e)),
        }
    }

    /// The identity's bytes.
    pub fn expose(&self) -> &[u8] {
        self.0.as_ref()
    }

    /// The identity file in the identity directory `dir`.
    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join(IDENTITY_FILE)
    }

    /// Loads the identity from `dir`; a missing file is [`IdentityError::Missing`].
    pub fn load(dir: &Path) -> Result<Self, IdentityError> {
        Self::load_checked(dir, false)
    }

    /// [`DeviceIdentity::load`] from an identity directory that may belong
    /// to another uid if `allow_foreign_owner`. The directory is opened once
    /// with O_NOFOLLOW and checked (not a symlink, owned by this uid or root
    /// or the allowed owner, not writable by group or others), and
    /// `device.key` is opened relative to it with O_NOFOLLOW: a symlinked
    /// directory or file is refused, not followed.
    pub fn load_checked(dir: &Path, allow_foreign_owner: bool) -> Result<Self, IdentityError> {
        let path = Self::path_in(dir);
        let io_err = |source| IdentityError::Io {
            path: path.clone(),
            source,
        };
        let opened =
            PrivateDir::open(dir, allow_foreign_owner).and_then(|d| d.open_read(IDENTITY_FILE));
        let mut f = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(IdentityError::Missing(path))
            }
            Err(e) => return Err(io_err(e)),
        };
        let meta = f.metadata().map_err(io_err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(IdentityError::Exposed { path, mode });
            }
        }
        if meta.len() != IDENTITY_LEN as u64 {
            return Err(IdentityError::Corrupt {
                path,
                found: meta.len(),
            });
        }
        let mut bytes = Zeroizing::new([0u8; IDENTITY_LEN]);
        f.read_exact(bytes.as_mut()).map_err(io_err)?;
        Ok(DeviceIdentity(bytes))
    }

    /// Loads the identity from `dir`, creating it if there is none. Safe
    /// against concurrent creators: the file appears complete or not at all.
    pub fn load_or_create(dir: &Path) -> Result<Self, IdentityError> {
        Self::load_or_create_checked(dir, false)
    }

    /// [`DeviceIdentity::load_or_create`] with the checks of
    /// [`DeviceIdentity::load_checked`].
    pub fn load_or_create_checked(
        dir: &Path,
        allow_foreign_owner: bool,
    ) -> Result<Self, IdentityError> {
        match Self::load_checked(dir, allow_foreign_owner) {
            Err(IdentityError::Missing(_)) => {}
            other => return other,
        }
        let path = Self::path_in(dir);
        let io_err = |source| IdentityError::Io {
            path: path.clone(),
            source,
        };
        let d = PrivateDir::create(dir, allow_foreign_owner).map_err(io_err)?;
        let mut bytes = Zeroizing::new([0u8; IDENTITY_LEN]);
        getrandom::fill(bytes.as_mut()).map_err(|e| io_err(io::Error::other(e)))?;
        let (mut f, tmp) = d.create_temp(".device-").map_err(io_err)?;
        let written = f
            .write_all(bytes.as_ref())
            .and_then(|()| f.sync_all())
            // A hard link never replaces an existing file: if another process
            // won the race, its identity stands and we load it below.
            .and_then(|()| match d.hard_link(&tmp, &d, IDENTITY_FILE) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                other => other,
            });
        let _ = d.remove_file(&tmp);
        written.map_err(io_err)?;
        d.sync().map_err(io_err)?;
        Self::load_checked(dir, allow_foreign_owner)
    }
}
