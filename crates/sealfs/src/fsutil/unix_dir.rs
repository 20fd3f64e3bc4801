//! `PrivateDir` on Unix: every open relative to the checked directory
//! handle, with `O_NOFOLLOW`, and every file checked for owner and type.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{self, OFlag, AT_FDCWD};
use nix::sys::stat::Mode;

use super::{
    check_mode, check_name, euid, is_symlink_errno, symlink_refused, FileStamp, PrivateDir,
};

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// O_NOFOLLOW, O_CLOEXEC, and O_NONBLOCK so a planted FIFO cannot block
/// the open (regular files ignore it; the type is checked right after).
const FILE_FLAGS: OFlag = OFlag::O_NOFOLLOW
    .union(OFlag::O_CLOEXEC)
    .union(OFlag::O_NONBLOCK);

fn mode(bits: u32) -> Mode {
    Mode::from_bits_truncate(bits as nix::libc::mode_t)
}

/// An errno as an `io::Error`, a symlink as the refusal naming `path`.
fn os_err(e: Errno, path: &Path) -> io::Error {
    let e = io::Error::from(e);
    if is_symlink_errno(&e) {
        symlink_refused(path)
    } else {
        e
    }
}

impl PrivateDir {
    /// Opens `path` with O_DIRECTORY|O_NOFOLLOW; no owner or mode check.
    pub(super) fn open_unchecked(path: &Path) -> io::Result<PrivateDir> {
        let path = super::strip_trailing_slashes(path);
        let fd =
            fcntl::openat(AT_FDCWD, path.as_path(), DIR_FLAGS, Mode::empty()).map_err(|e| {
                match e {
                    // O_DIRECTORY on a symlink to a file may say ENOTDIR.
                    Errno::ENOTDIR if super::refuse_symlink(&path).is_err() => {
                        symlink_refused(&path)
                    }
                    e => os_err(e, &path),
                }
            })?;
        Ok(PrivateDir {
            path,
            dir: File::from(fd),
            trusted_uid: euid(),
        })
    }

    /// Opens the directory `path` and checks it: not a symlink; owned
    /// by the effective uid or root (any uid with
    /// `allow_foreign_owner`); not writable by group or others.
    pub fn open(path: &Path, allow_foreign_owner: bool) -> io::Result<PrivateDir> {
        let mut dir = Self::open_unchecked(path)?;
        let meta = dir.dir.metadata()?;
        let owner = meta.uid();
        if !(allow_foreign_owner || owner == euid() || owner == 0) {
            return Err(dir.foreign(owner));
        }
        check_mode(&dir.path, meta.mode())?;
        dir.trusted_uid = owner;
        Ok(dir)
    }

    fn foreign(&self, owner: u32) -> io::Error {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "refusing {}: it is owned by uid {owner}, not by uid {} that sealfs runs as",
                self.path.display(),
                euid()
            ),
        )
    }

    fn trusts(&self, uid: u32) -> bool {
        uid == euid() || uid == 0 || uid == self.trusted_uid
    }

    /// The uid whose entries this handle trusts besides the effective
    /// uid and root (the owner of the directory first checked).
    pub fn trusted_uid(&self) -> u32 {
        self.trusted_uid
    }

    /// The subdirectory `name`, created 0700 first if `create` (an
    /// existing one is kept), opened with O_NOFOLLOW and checked like
    /// its parent. `NotFound` if it is missing and `!create`.
    pub fn subdir(&self, name: impl AsRef<OsStr>, create: bool) -> io::Result<PrivateDir> {
        let name = name.as_ref();
        check_name(name)?;
        let path = self.path.join(name);
        if create {
            match nix::sys::stat::mkdirat(&self.dir, name, mode(super::DIR_MODE)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(os_err(e, &path)),
            }
        }
        let fd = fcntl::openat(&self.dir, name, DIR_FLAGS, Mode::empty()).map_err(|e| match e {
            Errno::ENOTDIR if self.is_symlink(name) => symlink_refused(&path),
            e => os_err(e, &path),
        })?;
        let sub = PrivateDir {
            path,
            dir: File::from(fd),
            trusted_uid: self.trusted_uid,
        };
        let meta = sub.dir.metadata()?;
        if !self.trusts(meta.uid()) {
            return Err(sub.foreign(meta.uid()));
        }
        check_mode(&sub.path, meta.mode())?;
        Ok(sub)
    }

    fn is_symlink(&self, name: &OsStr) -> bool {
        nix::sys::stat::fstatat(&self.dir, name, fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).is_ok_and(
            |st| {
                nix::sys::stat::SFlag::from_bits_truncate(st.st_mode)
                    .intersection(nix::sys::stat::SFlag::S_IFMT)
                    == nix::sys::stat::SFlag::S_IFLNK
            },
        )
    }

    /// Refuses `name` in here if it is a symlink (missing is fine).
    pub fn refuse_symlink(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        let name = name.as_ref();
        check_name(name)?;
        if self.is_symlink(name) {
            return Err(symlink_refused(&self.path.join(name)));
        }
        Ok(())
    }

    fn open_at(&self, name: &OsStr, flags: OFlag) -> io::Result<File> {
        check_name(name)?;
        let path = self.path.join(name);
        let fd = fcntl::openat(&self.dir, name, flags | FILE_FLAGS, mode(super::FILE_MODE))
            .map_err(|e| os_err(e, &path))?;
        let f = File::from(fd);
        if !f.metadata()?.is_file() {
            return Err(io::Error::other(format!(
                "refusing {}: not a regular file",
                path.display()
            )));
        }
        Ok(f)
    }

    /// A file this process writes into and keeps using: owned by a
    /// trusted uid and with no other hard link (a link to a file
    /// elsewhere would make the write land there).
    fn check_writable_file(&self, f: &File, name: &OsStr) -> io::Result<()> {
        let meta = f.metadata()?;
        let path = self.path.join(name);
        if !self.trusts(meta.uid()) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "refusing {}: it is owned by uid {}, not by uid {} that sealfs runs as",
                    path.display(),
                    meta.uid(),
                    euid()
                ),
            ));
        }
        if meta.nlink() > 1 {
            return Err(io::Error::other(format!(
                "refusing {}: it has {} hard links, so writing it could change another file",
                path.display(),
                meta.nlink()
            )));
        }
        Ok(())
    }

    /// The (device, inode) of `name` in here, not following a symlink.
    pub fn identity_of(&self, name: impl AsRef<OsStr>) -> io::Result<(u64, u64)> {
        let name = name.as_ref();
        check_name(name)?;
        let st = nix::sys::stat::fstatat(&self.dir, name, fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)?;
        // dev_t is i32 on macOS: only compared for equality.
        Ok((st.st_dev as u64, st.st_ino as u64))
    }

    /// What changes when `name` in here is written, replaced or removed
    /// (not following a symlink): device, inode, size, and modification
    /// and change times to the nanosecond. `None` if it does not exist.
    pub fn stamp_of(&self, name: impl AsRef<OsStr>) -> io::Result<Option<FileStamp>> {
        let name = name.as_ref();
        check_name(name)?;
        match nix::sys::stat::fstatat(&self.dir, name, fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(FileStamp([
                i128::from(st.st_dev),
                i128::from(st.st_ino),
                i128::from(st.st_size),
                i128::from(st.st_mtime),
                i128::from(st.st_mtime_nsec),
                i128::from(st.st_ctime),
                i128::from(st.st_ctime_nsec),
            ]))),
            Err(nix::errno::Errno::ENOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Sets the times of `name` in here to now, not following a symlink: a
    /// change the kernel reports to whoever watches it. (Both to now, for
    /// which write access is enough; any other time needs its owner.)
    pub fn touch(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        use nix::sys::stat::{utimensat, UtimensatFlags};
        use nix::sys::time::TimeSpec;
        let name = name.as_ref();
        check_name(name)?;
        utimensat(
            &self.dir,
            name,
            &TimeSpec::UTIME_NOW,
            &TimeSpec::UTIME_NOW,
            UtimensatFlags::NoFollowSymlink,
        )?;
        Ok(())
    }

    /// Opens the regular file `name` for reading (O_NOFOLLOW).
    pub fn open_read(&self, name: impl AsRef<OsStr>) -> io::Result<File> {
        self.open_at(name.as_ref(), OFlag::O_RDONLY)
    }

    /// Opens `name` for reading and writing, creating it 0600 if
    /// missing (O_NOFOLLOW): a lock file.
    pub fn open_or_create(&self, name: impl AsRef<OsStr>) -> io::Result<File> {
        let name = name.as_ref();
        let f = self.open_at(name, OFlag::O_RDWR | OFlag::O_CREAT)?;
        self.check_writable_file(&f, name)?;
        Ok(f)
    }

    /// Opens `name` for appending, creating it 0600 if missing
    /// (O_NOFOLLOW|O_APPEND|O_CREAT): a log.
    pub fn open_append(&self, name: impl AsRef<OsStr>) -> io::Result<File> {
        let name = name.as_ref();
        let f = self.open_at(name, OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CREAT)?;
        self.check_writable_file(&f, name)?;
        Ok(f)
    }

    /// Creates a new 0600 file named `<prefix><random>.tmp`, failing
    /// rather than reusing anything that exists under that name.
    pub fn create_temp(&self, prefix: &str) -> io::Result<(File, OsString)> {
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(io::Error::other)?;
        let name = OsString::from(format!("{prefix}{}.tmp", crate::hex::hex(&suffix)));
        let f = self.open_at(&name, OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL)?;
        Ok((f, name))
    }

    /// Renames `from` in here to `to` in `to_dir` (renameat: a symlink
    /// is moved or replaced as itself, never followed).
    pub fn rename(
        &self,
        from: impl AsRef<OsStr>,
        to_dir: &PrivateDir,
        to: impl AsRef<OsStr>,
    ) -> io::Result<()> {
        let (from, to) = (from.as_ref(), to.as_ref());
        check_name(from)?;
        check_name(to)?;
        fcntl::renameat(&self.dir, from, &to_dir.dir, to).map_err(io::Error::from)
    }

    /// Links `from` in here as `to` in `to_dir`, failing if `to`
    /// exists (linkat without AT_SYMLINK_FOLLOW).
    pub fn hard_link(
        &self,
        from: impl AsRef<OsStr>,
        to_dir: &PrivateDir,
        to: impl AsRef<OsStr>,
    ) -> io::Result<()> {
        let (from, to) = (from.as_ref(), to.as_ref());
        check_name(from)?;
        check_name(to)?;
        nix::unistd::linkat(&self.dir, from, &to_dir.dir, to, fcntl::AtFlags::empty())
            .map_err(io::Error::from)
    }

    /// Removes the entry `name` in here (a symlink is removed itself).
    pub fn remove_file(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        let name = name.as_ref();
        check_name(name)?;
        nix::unistd::unlinkat(&self.dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir)
            .map_err(io::Error::from)
    }

    /// The names in this directory (without `.` and `..`).
    pub fn entries(&self) -> io::Result<Vec<OsString>> {
        let mut d = nix::dir::Dir::openat(&self.dir, ".", DIR_FLAGS, Mode::empty())?;
        let mut names = Vec::new();
        for entry in d.iter() {
            let entry = entry?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name != "." && name != ".." {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    /// Flushes entry changes (create, rename, unlink) to disk.
    pub fn sync(&self) -> io::Result<()> {
        self.dir.sync_all()
    }

    /// Flushes everything written to the file system this directory is
    /// on (syncfs): one flush for many files.
    #[cfg(target_os = "linux")]
    pub fn sync_filesystem(&self) -> io::Result<()> {
        nix::unistd::syncfs(&self.dir).map_err(io::Error::from)
    }
}
