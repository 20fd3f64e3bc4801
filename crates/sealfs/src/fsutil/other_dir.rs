//! `PrivateDir` elsewhere (Windows): a path with the same operations and
//! only the symlink check.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;

use super::{check_name, symlink_refused, PrivateDir};

impl PrivateDir {
    pub(super) fn open_unchecked(path: &Path) -> io::Result<PrivateDir> {
        let path = super::strip_trailing_slashes(path);
        let meta = fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            return Err(symlink_refused(&path));
        }
        if !meta.is_dir() {
            return Err(io::Error::other(format!(
                "refusing {}: not a directory",
                path.display()
            )));
        }
        Ok(PrivateDir { path })
    }

    pub fn open(path: &Path, allow_foreign_owner: bool) -> io::Result<PrivateDir> {
        let _ = allow_foreign_owner;
        Self::open_unchecked(path)
    }

    pub fn subdir(&self, name: impl AsRef<OsStr>, create: bool) -> io::Result<PrivateDir> {
        let name = name.as_ref();
        check_name(name)?;
        let path = self.path.join(name);
        if create {
            match fs::create_dir(&path) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
        }
        Self::open_unchecked(&path)
    }

    pub fn refuse_symlink(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        let name = name.as_ref();
        check_name(name)?;
        super::refuse_symlink(&self.path.join(name))
    }

    fn file(&self, name: &OsStr) -> io::Result<std::path::PathBuf> {
        check_name(name)?;
        let path = self.path.join(name);
        super::refuse_symlink(&path)?;
        Ok(path)
    }

    pub fn open_read(&self, name: impl AsRef<OsStr>) -> io::Result<File> {
        File::open(self.file(name.as_ref())?)
    }

    pub fn open_or_create(&self, name: impl AsRef<OsStr>) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.file(name.as_ref())?)
    }

    pub fn open_append(&self, name: impl AsRef<OsStr>) -> io::Result<File> {
        OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.file(name.as_ref())?)
    }

    pub fn create_temp(&self, prefix: &str) -> io::Result<(File, OsString)> {
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(io::Error::other)?;
        let name = OsString::from(format!("{prefix}{}.tmp", crate::hex::hex(&suffix)));
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.path.join(&name))?;
        Ok((f, name))
    }

    pub fn rename(
        &self,
        from: impl AsRef<OsStr>,
        to_dir: &PrivateDir,
        to: impl AsRef<OsStr>,
    ) -> io::Result<()> {
        let (from, to) = (from.as_ref(), to.as_ref());
        check_name(from)?;
        check_name(to)?;
        fs::rename(self.path.join(from), to_dir.path.join(to))
    }

    pub fn hard_link(
        &self,
        from: impl AsRef<OsStr>,
        to_dir: &PrivateDir,
        to: impl AsRef<OsStr>,
    ) -> io::Result<()> {
        let (from, to) = (from.as_ref(), to.as_ref());
        check_name(from)?;
        check_name(to)?;
        fs::hard_link(self.path.join(from), to_dir.path.join(to))
    }

    pub fn remove_file(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        let name = name.as_ref();
        check_name(name)?;
        fs::remove_file(self.path.join(name))
    }

    pub fn entries(&self) -> io::Result<Vec<OsString>> {
        fs::read_dir(&self.path)?
            .map(|e| e.map(|e| e.file_name()))
            .collect()
    }

    pub fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}
