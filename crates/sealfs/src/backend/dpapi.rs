//! Windows: sealed blobs wrapped once more with DPAPI (`CryptProtectData`,
//! user scope) and kept as owner-only files in `<vault-dir>/dpapi/`, in the
//! encrypted-file layout. Only the current Windows user on this machine can
//! unwrap them, so the vault directory alone is useless elsewhere.
//!
//! The file handling and the wrapping compose through [`Protector`]; the
//! composition is tested on every platform with a test protector, and only
//! the DPAPI calls are Windows code.

use super::{BackendError, BackendKind, BlobBackend, EncryptedFile, ObjectId};

#[cfg_attr(
    not(any(windows, test)),
    expect(
        dead_code,
        reason = "DPAPI is built on Windows only; the tests read its name"
    )
)]
const KIND: BackendKind = BackendKind::WindowsDpapi;
/// The directory, in the vault directory, that holds the protected files.
pub const DPAPI_DIR: &str = "dpapi";

/// Wraps and unwraps blobs before they are stored.
pub trait Protector: Send + Sync {
    /// `data` wrapped, to be stored.
    fn protect(&self, data: &[u8]) -> Result<Vec<u8>, BackendError>;
    /// The original of wrapped `data` read back.
    fn unprotect(&self, data: &[u8]) -> Result<Vec<u8>, BackendError>;
}

/// Files holding protected blobs.
pub struct ProtectedFiles<P> {
    files: EncryptedFile,
    protector: P,
    kind: BackendKind,
}

impl<P: Protector> ProtectedFiles<P> {
    /// Blobs kept in `files`, wrapped by `protector`, reported as `kind`.
    pub fn new(files: EncryptedFile, protector: P, kind: BackendKind) -> Self {
        ProtectedFiles {
            files,
            protector,
            kind,
        }
    }
}

impl<P: Protector> BlobBackend for ProtectedFiles<P> {
    fn kind(&self) -> BackendKind {
        self.kind
    }

    fn put_blob(&self, id: &ObjectId, blob: &[u8]) -> Result<(), BackendError> {
        self.files.put_blob(id, &self.protector.protect(blob)?)
    }

    fn get_blob(&self, id: &ObjectId) -> Result<Vec<u8>, BackendError> {
        self.protector.unprotect(&self.files.get_blob(id)?)
    }

    fn delete_blob(&self, id: &ObjectId) -> Result<bool, BackendError> {
        self.files.delete_blob(id)
    }

    fn recover(&self) -> Result<(), BackendError> {
        self.files.recover()
    }
}

#[cfg(windows)]
pub use win::{Dpapi, WindowsDpapi};

#[cfg(windows)]
mod win {
    #![expect(
        unsafe_code,
        reason = "CryptProtectData and LocalFree are Win32 calls on raw buffers"
    )]

    use windows::Win32::Foundation::{LocalFree, HLOCAL};
    use windows::Win32::Security::Cryptography::{
        CryptProtectData, CryptUnprotectData, CRYPTPROTECT_UI_FORBIDDEN, CRYPT_INTEGER_BLOB,
    };

    use super::*;
    use crate::backend::BackendContext;

    /// `CryptProtectData` in the current user's scope, never prompting.
    pub struct Dpapi;

    /// The Windows backend: DPAPI-protected files.
    pub type WindowsDpapi = ProtectedFiles<Dpapi>;

    impl WindowsDpapi {
        /// Opens the `dpapi/` files of the vault in `ctx`, creating the
        /// directories if missing.
        pub fn open(ctx: &BackendContext) -> Result<Self, BackendError> {
            Ok(ProtectedFiles::new(
                EncryptedFile::open_in(ctx, DPAPI_DIR)?,
                Dpapi,
                KIND,
            ))
        }
    }

    fn failed(op: &str, e: windows::core::Error) -> BackendError {
        BackendError::Other {
            backend: KIND,
            message: format!("{op} failed: {e}"),
        }
    }

    fn call(
        data: &[u8],
        op: &str,
        f: impl FnOnce(*const CRYPT_INTEGER_BLOB, *mut CRYPT_INTEGER_BLOB) -> windows::core::Result<()>,
    ) -> Result<Vec<u8>, BackendError> {
        let input = CRYPT_INTEGER_BLOB {
            cbData: u32::try_from(data.len()).map_err(|_| BackendError::Other {
                backend: KIND,
                message: "blob too large for DPAPI".into(),
            })?,
            pbData: data.as_ptr() as *mut u8,
        };
        let mut output = CRYPT_INTEGER_BLOB::default();
        f(&input, &mut output).map_err(|e| failed(op, e))?;
        // SAFETY: on success DPAPI returns a LocalAlloc'ed buffer of
        // cbData bytes, which we copy and then free exactly once.
        let out =
            unsafe { std::slice::from_raw_parts(output.pbData, output.cbData as usize) }.to_vec();
        unsafe {
            LocalFree(Some(HLOCAL(output.pbData as *mut core::ffi::c_void)));
        }
        Ok(out)
    }

    impl Protector for Dpapi {
        fn protect(&self, data: &[u8]) -> Result<Vec<u8>, BackendError> {
            call(data, "CryptProtectData", |i, o| {
                // SAFETY: `i` points at a live blob; `o` is written by the call.
                unsafe {
                    CryptProtectData(
                        i,
                        windows::core::w!("sealfs"),
                        None,
                        None,
                        None,
                        CRYPTPROTECT_UI_FORBIDDEN,
                        o,
                    )
                }
            })
        }

        fn unprotect(&self, data: &[u8]) -> Result<Vec<u8>, BackendError> {
            call(data, "CryptUnprotectData", |i, o| {
                // SAFETY: as above.
                unsafe {
                    CryptUnprotectData(i, None, None, None, None, CRYPTPROTECT_UI_FORBIDDEN, o)
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stands in for DPAPI: a reversible, visible transformation.
    struct Flip;

    impl Protector for Flip {
        fn protect(&self, data: &[u8]) -> Result<Vec<u8>, BackendError> {
            Ok(data.iter().map(|b| !b).collect())
        }
        fn unprotect(&self, data: &[u8]) -> Result<Vec<u8>, BackendError> {
            self.protect(data)
        }
    }

    #[test]
    fn protected_files_store_only_protected_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let files = EncryptedFile::open_at(
            &crate::fsutil::PrivateDir::create(dir.path(), false).unwrap(),
            DPAPI_DIR,
        )
        .unwrap();
        let path_of = files.blob_path(&ObjectId::parse(&"1".repeat(64)).unwrap());
        let b = ProtectedFiles::new(files, Flip, KIND);
        let id = ObjectId::parse(&"1".repeat(64)).unwrap();
        b.put_blob(&id, b"blob").unwrap();
        assert_eq!(std::fs::read(&path_of).unwrap(), b"blob".map(|x| !x));
        assert_eq!(b.get_blob(&id).unwrap(), b"blob");
        assert!(b.delete_blob(&id).unwrap());
        assert!(matches!(b.get_blob(&id), Err(BackendError::NotFound(_))));
        assert_eq!(b.kind(), BackendKind::WindowsDpapi);
    }
}
