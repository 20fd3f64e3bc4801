//! Owner-only files and directories, and durable atomic replacement.
//!
//! Everything sealfs writes goes through here so that modes (0700 for
//! directories, 0600 for files) and fsync ordering are decided in one place.
//!
//! Inside the vault, identity and audit directories, [`PrivateDir`] is the
//! way in: a directory opened once with O_NOFOLLOW and checked once (owner,
//! mode), whose files and subdirectories are reached only relative to its
//! descriptor, never through a symlink. [`check_vault_dir`] is the check
//! `Vault::open` makes first, including the refusal of a directory another
//! uid owns (root on a user's vault) without `--allow-foreign-vault-dir`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

/// Mode of every directory sealfs creates (Unix).
#[cfg(unix)]
pub(crate) const DIR_MODE: u32 = 0o700;
/// Mode of every file sealfs creates (Unix).
#[cfg(unix)]
pub(crate) const FILE_MODE: u32 = 0o600;

/// Creates `dir` and any missing parents with mode 0700. Existing directories
/// are left as they are (`doctor` reports their modes).
pub(crate) fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    b.mode(DIR_MODE);
    b.create(dir)
}

/// Creates a new 0600 file with a random name in `dir`; fails rather than
/// reuse an existing file.
pub(crate) fn create_temp_file(dir: &Path, prefix: &str) -> io::Result<(File, PathBuf)> {
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(io::Error::other)?;
    let path = dir.join(format!("{prefix}{}.tmp", crate::hex::hex(&suffix)));
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    o.mode(FILE_MODE);
    Ok((o.open(&path)?, path))
}

/// Flushes a directory entry change (create, rename, unlink) to disk.
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Writes `bytes` to a temp file in `tmp_dir`, fsyncs it and renames it over
/// `dest` (same file system). A crash leaves the old file or the new one,
/// plus at worst a stray temp file in `tmp_dir`.
pub(crate) fn write_atomic(
    tmp_dir: &Path,
    dest: &Path,
    bytes: &[u8],
    mode: Option<u32>,
) -> io::Result<()> {
    let (mut f, tmp) = create_temp_file(tmp_dir, ".sealfs-")?;
    let result = (|| {
        #[cfg(unix)]
        if let Some(mode) = mode {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        #[cfg(not(unix))]
        let _ = mode;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, dest)?;
        fsync_dir(parent_dir(dest))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The mode bits of `path` (without following a final symlink).
#[cfg(all(unix, test))]
pub(crate) fn mode_of(path: &Path) -> io::Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(fs::symlink_metadata(path)?.permissions().mode() & 0o7777)
}

// ---------------------------------------------------------------------------
// Directories opened once, checked once, and used only through their handle.
//
// Root may run sealfs on a vault directory that a user owns, and anyone who
// can write the vault directory (a synced folder, a backup) may plant
// symlinks in it. So nothing inside the vault, identity or audit directory
// is reached by path: each directory is opened once with
// O_DIRECTORY|O_NOFOLLOW, checked once (a directory, not a symlink, owned by
// this process's effective uid or root, or by the uid the caller explicitly
// allowed, and not writable by group or others), and every file or
// subdirectory in it is then opened, created, renamed or removed with the
// *at() calls relative to that descriptor, with O_NOFOLLOW. A symlink where a
// file or directory should be is an error naming it, never followed.
// ---------------------------------------------------------------------------

/// The message of every refused symlink.
fn symlink_refused(path: &Path) -> io::Error {
    io::Error::other(format!("refusing to follow the symlink {}", path.display()))
}

/// `path` without trailing slashes (and `.` components): `dir/` would make
/// the kernel follow a final symlink even with O_NOFOLLOW.
fn strip_trailing_slashes(path: &Path) -> PathBuf {
    let clean: PathBuf = path.components().collect();
    if clean.as_os_str().is_empty() {
        path.to_owned()
    } else {
        clean
    }
}

/// A single path component: not empty, no separator, not `.` or `..`.
fn check_name(name: &std::ffi::OsStr) -> io::Result<()> {
    let b = name.as_encoded_bytes();
    let separator = b.contains(&b'/') || (cfg!(windows) && b.contains(&b'\\'));
    if b.is_empty() || b == b"." || b == b".." || separator {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain file name"),
        ));
    }
    Ok(())
}

/// Refuses `path` if it is a symlink (a missing path is fine). For files
/// another library opens by path, such as `index.sqlite3` before SQLite
/// opens it.
pub(crate) fn refuse_symlink(path: &Path) -> io::Result<()> {
    let path = strip_trailing_slashes(path);
    match fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_symlink() => Err(symlink_refused(&path)),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Opens `path` for reading without following a final symlink (the audit
/// log for `sealfs audit-log` and the console). Only a regular file is
/// accepted.
pub fn open_read_nofollow(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    o.custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK);
    let f = match o.open(path) {
        Ok(f) => f,
        #[cfg(unix)]
        Err(e) if is_symlink_errno(&e) => return Err(symlink_refused(path)),
        Err(e) => return Err(e),
    };
    if !f.metadata()?.is_file() {
        return Err(io::Error::other(format!(
            "refusing {}: not a regular file",
            path.display()
        )));
    }
    Ok(f)
}

/// The errno an O_NOFOLLOW open of a symlink fails with (ELOOP; EMLINK on
/// FreeBSD).
#[cfg(unix)]
fn is_symlink_errno(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(n) if n == nix::libc::ELOOP || n == nix::libc::EMLINK)
}

/// This process's effective uid.
#[cfg(unix)]
pub(crate) fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// `uid 1001 (alice)`, or `uid 1001` when it has no name: for messages.
pub fn describe_uid(uid: u32) -> String {
    #[cfg(unix)]
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name);
    #[cfg(not(unix))]
    let name: Option<String> = None;
    match name {
        Some(name) => format!("uid {uid} ({name})"),
        None => format!("uid {uid}"),
    }
}

/// Checks the vault directory once, before anything in it is touched, and
/// returns its handle:
///
/// - a symlink is refused (`refusing to follow the symlink <dir>`), also
///   with `allow_foreign_owner`;
/// - it must be owned by this process's effective uid. Another owner, in
///   particular a user's directory when sealfs runs as root, is refused
///   unless `allow_foreign_owner` (`--allow-foreign-vault-dir`) says so;
/// - it must not be writable by its group or others.
///
/// A missing directory is an error of kind `NotFound`.
pub(crate) fn check_vault_dir(path: &Path, allow_foreign_owner: bool) -> io::Result<PrivateDir> {
    let dir = PrivateDir::open_unchecked(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = dir.dir.metadata()?;
        let (owner, me) = (meta.uid(), euid());
        if owner != me && !allow_foreign_owner {
            let who = if me == 0 {
                "root must not work in a directory another user controls".to_owned()
            } else {
                format!("this process runs as uid {me}")
            };
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "refusing the vault directory {}: it is owned by uid {owner} and {who}; pass --allow-foreign-vault-dir (SEALFS_ALLOW_FOREIGN_VAULT_DIR=1) if this is intended",
                    dir.path.display()
                ),
            ));
        }
        check_mode(&dir.path, meta.mode())?;
        Ok(PrivateDir {
            trusted_uid: owner,
            ..dir
        })
    }
    #[cfg(not(unix))]
    {
        let _ = allow_foreign_owner;
        Ok(dir)
    }
}

/// Opens (creating it, 0700, if `create`) the vault directory and checks it
/// as [`check_vault_dir`] does; `Ok(None)` if it is missing and `!create`.
pub(crate) fn open_vault_dir(
    path: &Path,
    create: bool,
    allow_foreign_owner: bool,
) -> io::Result<Option<PrivateDir>> {
    match check_vault_dir(path, allow_foreign_owner) {
        Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
            create_private_dir_all(path)?;
            check_vault_dir(path, allow_foreign_owner).map(Some)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        other => other.map(Some),
    }
}

/// A directory's mode must not let its group or others write it.
#[cfg(unix)]
fn check_mode(path: &Path, mode: u32) -> io::Result<()> {
    let loose = mode & 0o022;
    if loose == 0 {
        return Ok(());
    }
    let who = match loose {
        0o020 => "its group",
        0o002 => "others",
        _ => "its group and others",
    };
    let advice = if mode & 0o1000 != 0 {
        // /tmp and the like: shared on purpose, so no chmod advice.
        "; use a directory of your own".to_owned()
    } else {
        format!("; run `chmod go-w {}`", path.display())
    };
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "refusing {}: it is writable by {who} (mode {:04o}){advice}",
            path.display(),
            mode & 0o7777,
        ),
    ))
}

/// A directory opened once with O_DIRECTORY|O_NOFOLLOW and checked once;
/// everything in it is reached through this handle with O_NOFOLLOW, so a
/// symlink planted inside is refused, never followed, and renaming the
/// directory away does not redirect what sealfs does.
///
/// Who may own it: this process's effective uid or root; any uid when the
/// caller passes `allow_foreign_owner` (then files and subdirectories may
/// also belong to that uid). Never writable by its group or others.
///
/// On other platforms (Windows) it is a path with the same operations and
/// only the symlink check.
#[derive(Debug)]
pub struct PrivateDir {
    path: PathBuf,
    #[cfg(unix)]
    dir: File,
    /// Besides the effective uid and root, files and subdirectories in here
    /// may be owned by this uid (the owner of the directory first checked).
    #[cfg(unix)]
    trusted_uid: u32,
}

/// What [`PrivateDir::stamp_of`] saw of a file: equal stamps mean the
/// file was not written, replaced or truncated in between (to the
/// resolution of the file system's timestamps).
#[cfg(unix)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp([i128; 7]);

/// The [`FileStamp`] of `path` (not following a symlink), `None` if it
/// does not exist: for a file opened by path (the index, by SQLite).
#[cfg(unix)]
pub(crate) fn stamp_of_path(path: &Path) -> io::Result<Option<FileStamp>> {
    use std::os::unix::fs::MetadataExt;
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(FileStamp([
            i128::from(m.dev()),
            i128::from(m.ino()),
            i128::from(m.size()),
            i128::from(m.mtime()),
            i128::from(m.mtime_nsec()),
            i128::from(m.ctime()),
            i128::from(m.ctime_nsec()),
        ]))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(unix)]
mod unix_dir;

#[cfg(target_os = "linux")]
mod watch;
#[cfg(target_os = "linux")]
pub(crate) use watch::DirWatch;

#[cfg(not(unix))]
mod other_dir;

impl PrivateDir {
    /// Creates `path` and any missing parents (0700), then opens and checks
    /// it as [`PrivateDir::open`] does.
    pub fn create(path: &Path, allow_foreign_owner: bool) -> io::Result<PrivateDir> {
        match PrivateDir::open(path, allow_foreign_owner) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                create_private_dir_all(path)?;
                PrivateDir::open(path, allow_foreign_owner)
            }
            other => other,
        }
    }

    /// The path this directory was opened at (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the opened directory really is, as an absolute path with no
    /// symlinks: read off the handle on Linux (a parent symlink swapped
    /// after the open cannot change it), else resolved from the path.
    pub fn real_path(&self) -> io::Result<PathBuf> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            std::fs::read_link(format!("/proc/self/fd/{}", self.dir.as_raw_fd()))
        }
        #[cfg(not(target_os = "linux"))]
        {
            std::fs::canonicalize(&self.path)
        }
    }

    /// Whether `path()` still names the directory this handle opened (what
    /// opens by path, SQLite, reaches the same directory). Not a guarantee
    /// against a rename racing the caller, a check that one did not
    /// happen before it.
    pub fn still_at_path(&self) -> io::Result<bool> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let (opened, named) = (self.dir.metadata()?, std::fs::symlink_metadata(&self.path)?);
            Ok(opened.dev() == named.dev() && opened.ino() == named.ino())
        }
        #[cfg(not(unix))]
        {
            Ok(true)
        }
    }

    /// `path()/name`, for messages.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// Refuses a symlink at the SQLite database `name` in here or at its
    /// `-wal`, `-shm` or `-journal` file: SQLite opens them by path, and
    /// would follow a symlinked database file (and create a dangling one's
    /// target). Call before SQLite opens the database.
    pub fn refuse_sqlite_symlinks(&self, name: &str) -> io::Result<()> {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            self.refuse_symlink(format!("{name}{suffix}"))?;
        }
        Ok(())
    }

    /// Opens the lock file `name` (created 0600; O_NOFOLLOW).
    pub fn open_lock_file(&self, name: impl AsRef<std::ffi::OsStr>) -> io::Result<File> {
        self.open_or_create(name)
    }

    /// The whole regular file `name` (O_NOFOLLOW).
    pub fn read(&self, name: impl AsRef<std::ffi::OsStr>) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut self.open_read(name)?, &mut bytes)?;
        Ok(bytes)
    }

    /// Writes `bytes` to a temp file in `tmp`, fsyncs it and renames it over
    /// `name` in this directory, then syncs this directory: `name` is whole
    /// or as before. The temp file is removed on failure.
    pub fn write_atomic(
        &self,
        tmp: &PrivateDir,
        name: impl AsRef<std::ffi::OsStr>,
        bytes: &[u8],
    ) -> io::Result<()> {
        let (mut f, tmp_name) = tmp.create_temp(".sealfs-")?;
        let result = f
            .write_all(bytes)
            .and_then(|()| f.sync_all())
            .and_then(|()| tmp.rename(&tmp_name, self, name))
            .and_then(|()| self.sync());
        if result.is_err() {
            let _ = tmp.remove_file(&tmp_name);
        }
        result
    }

    /// Writes each of `files` (name, bytes) as [`Self::write_atomic`] does,
    /// so a crash leaves each one whole, old or new; on Linux with one
    /// flush of the file system for all of them (syncfs) instead of two
    /// per file, which is what a listing of thousands of records costs.
    pub fn write_atomic_many(&self, tmp: &PrivateDir, files: &[(String, &[u8])]) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if files.len() > 1 {
            let mut temps = Vec::with_capacity(files.len());
            let mut write_all = || {
                for (_, bytes) in files {
                    let (mut f, name) = tmp.create_temp(".sealfs-")?;
                    temps.push(name);
                    f.write_all(bytes)?;
                }
                tmp.sync_filesystem()?;
                for (t, (name, _)) in temps.iter().zip(files) {
                    tmp.rename(t, self, name)?;
                }
                self.sync()
            };
            let result = write_all();
            if result.is_err() {
                for t in &temps {
                    let _ = tmp.remove_file(t);
                }
            }
            return result;
        }
        for (name, bytes) in files {
            self.write_atomic(tmp, name, bytes)?;
        }
        Ok(())
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::{symlink, PermissionsExt};

    use super::*;

    /// A directory outside "the vault" with one file, to check it is untouched.
    fn canary(root: &Path) -> PathBuf {
        let c = root.join("canary");
        fs::create_dir(&c).unwrap();
        fs::write(c.join("keep"), b"canary").unwrap();
        c
    }

    fn assert_canary_intact(c: &Path) {
        let names: Vec<_> = fs::read_dir(c)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            ["keep"],
            "files appeared in or vanished from {}",
            c.display()
        );
        assert_eq!(fs::read(c.join("keep")).unwrap(), b"canary");
    }

    fn private(root: &Path, name: &str) -> PathBuf {
        let d = root.join(name);
        create_private_dir_all(&d).unwrap();
        d
    }

    /// Many files written at once each hold their new bytes, replace what
    /// was there, and leave no temporary file behind.
    #[test]
    fn many_files_written_at_once_are_whole_and_leave_no_temporaries() {
        let root = tempfile::tempdir().unwrap();
        let d = PrivateDir::open(&private(root.path(), "vault"), false).unwrap();
        let tmp = d.subdir("tmp", true).unwrap();
        let out = d.subdir("out", true).unwrap();
        out.write_atomic(&tmp, "f1", b"old").unwrap();
        let bodies: Vec<Vec<u8>> = (0..50).map(|i| format!("body {i}").into_bytes()).collect();
        let files: Vec<(String, &[u8])> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| (format!("f{i}"), b.as_slice()))
            .collect();
        out.write_atomic_many(&tmp, &files).unwrap();
        for (name, body) in &files {
            assert_eq!(out.read(name).unwrap(), *body);
        }
        assert_eq!(out.entries().unwrap().len(), 50);
        assert!(tmp.entries().unwrap().is_empty());
    }

    #[test]
    fn a_symlinked_subdirectory_is_refused_and_its_target_untouched() {
        let root = tempfile::tempdir().unwrap();
        let c = canary(root.path());
        let v = private(root.path(), "vault");
        symlink(&c, v.join("tmp")).unwrap();
        let d = PrivateDir::open(&v, false).unwrap();
        for create in [false, true] {
            let err = d.subdir("tmp", create).unwrap_err().to_string();
            assert_eq!(
                err,
                format!("refusing to follow the symlink {}", v.join("tmp").display())
            );
        }
        assert_canary_intact(&c);
    }

    #[test]
    fn symlinked_files_are_refused_for_every_kind_of_open() {
        let root = tempfile::tempdir().unwrap();
        let c = canary(root.path());
        let v = private(root.path(), "vault");
        symlink(c.join("keep"), v.join("lock")).unwrap();
        symlink(c.join("new"), v.join("dangling")).unwrap();
        let d = PrivateDir::open(&v, false).unwrap();
        for name in ["lock", "dangling"] {
            let want = format!("refusing to follow the symlink {}", v.join(name).display());
            assert_eq!(d.open_lock_file(name).unwrap_err().to_string(), want);
            assert_eq!(d.open_append(name).unwrap_err().to_string(), want);
            assert_eq!(d.open_read(name).unwrap_err().to_string(), want);
            assert_eq!(d.refuse_symlink(name).unwrap_err().to_string(), want);
            assert_eq!(refuse_symlink(&v.join(name)).unwrap_err().to_string(), want);
            assert_eq!(
                open_read_nofollow(&v.join(name)).unwrap_err().to_string(),
                want
            );
        }
        assert_canary_intact(&c);
    }

    #[test]
    fn a_hard_linked_or_non_regular_file_is_not_written() {
        let root = tempfile::tempdir().unwrap();
        let c = canary(root.path());
        let v = private(root.path(), "vault");
        fs::hard_link(c.join("keep"), v.join("audit.log")).unwrap();
        fs::create_dir(v.join("lock")).unwrap();
        let d = PrivateDir::open(&v, false).unwrap();
        let err = d.open_append("audit.log").unwrap_err().to_string();
        assert!(err.contains("2 hard links"), "{err}");
        let err = d.open_lock_file("lock").unwrap_err().to_string();
        assert!(
            err.contains("Is a directory") || err.contains("not a regular file"),
            "{err}"
        );
        fs::remove_file(v.join("audit.log")).unwrap();
        assert_canary_intact(&c);
    }

    #[test]
    fn the_vault_directory_itself_is_checked() {
        let root = tempfile::tempdir().unwrap();
        let c = canary(root.path());
        let link = root.path().join("link");
        symlink(&c, &link).unwrap();
        for p in [link.clone(), link.join(""), link.join(".")] {
            for allow in [false, true] {
                let err = check_vault_dir(&p, allow).unwrap_err().to_string();
                assert_eq!(
                    err,
                    format!("refusing to follow the symlink {}", link.display())
                );
            }
        }
        let v = private(root.path(), "vault");
        for (mode, who) in [
            (0o770, "its group"),
            (0o702, "others"),
            (0o777, "its group and others"),
        ] {
            fs::set_permissions(&v, fs::Permissions::from_mode(mode)).unwrap();
            let err = check_vault_dir(&v, true).unwrap_err().to_string();
            assert_eq!(
                err,
                format!(
                    "refusing {}: it is writable by {who} (mode {mode:04o}); run `chmod go-w {}`",
                    v.display(),
                    v.display()
                )
            );
        }
        fs::set_permissions(&v, fs::Permissions::from_mode(0o1777)).unwrap();
        let err = PrivateDir::open(&v, false).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "refusing {}: it is writable by its group and others (mode 1777); use a directory of your own",
                v.display()
            )
        );
        fs::set_permissions(&v, fs::Permissions::from_mode(0o700)).unwrap();
        check_vault_dir(&v, false).unwrap();
        assert!(matches!(
            open_vault_dir(&root.path().join("none"), false, false),
            Ok(None)
        ));
        let made = open_vault_dir(&root.path().join("new/vault"), true, false).unwrap();
        assert!(made.is_some());
        assert_eq!(mode_of(&root.path().join("new/vault")).unwrap(), 0o700);
        assert_canary_intact(&c);
    }

    #[test]
    fn another_owner_needs_the_explicit_flag() {
        if euid() != 0 {
            eprintln!("skipped: needs root to chown");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let v = private(root.path(), "vault");
        fs::create_dir(v.join("objects")).unwrap();
        std::os::unix::fs::chown(&v, Some(1301), Some(1301)).unwrap();
        std::os::unix::fs::chown(v.join("objects"), Some(1301), Some(1301)).unwrap();
        let err = check_vault_dir(&v, false).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "refusing the vault directory {}: it is owned by uid 1301 and root must not work in a directory another user controls; pass --allow-foreign-vault-dir (SEALFS_ALLOW_FOREIGN_VAULT_DIR=1) if this is intended",
                v.display()
            )
        );
        let d = check_vault_dir(&v, true).unwrap();
        assert_eq!(d.trusted_uid(), 1301);
        // Its entries may belong to that owner, but not to a third uid.
        d.subdir("objects", false).unwrap();
        fs::create_dir(v.join("tmp")).unwrap();
        std::os::unix::fs::chown(v.join("tmp"), Some(1302), Some(1302)).unwrap();
        let err = d.subdir("tmp", false).unwrap_err().to_string();
        assert!(err.contains("owned by uid 1302"), "{err}");
    }

    #[test]
    fn the_handle_keeps_working_on_the_directory_it_opened() {
        let root = tempfile::tempdir().unwrap();
        let c = canary(root.path());
        let v = private(root.path(), "vault");
        let d = PrivateDir::open(&v, false).unwrap();
        let tmp = d.subdir("tmp", true).unwrap();
        let (_, name) = tmp.create_temp(".x-").unwrap();
        // Swapped for a symlink after it was opened: the handle still
        // lists and removes in the directory it opened.
        fs::rename(v.join("tmp"), v.join("moved")).unwrap();
        symlink(&c, v.join("tmp")).unwrap();
        assert_eq!(tmp.entries().unwrap(), [name]);
        for n in tmp.entries().unwrap() {
            tmp.remove_file(n).unwrap();
        }
        assert!(tmp.remove_file("keep").is_err());
        assert_eq!(fs::read_dir(v.join("moved")).unwrap().count(), 0);
        assert_canary_intact(&c);
    }

    #[test]
    fn write_atomic_renames_between_handles() {
        let root = tempfile::tempdir().unwrap();
        let v = private(root.path(), "vault");
        let d = PrivateDir::open(&v, false).unwrap();
        let (tmp, objects) = (
            d.subdir("tmp", true).unwrap(),
            d.subdir("objects", true).unwrap(),
        );
        let fan = objects.subdir("ab", true).unwrap();
        fan.write_atomic(&tmp, "abcd", b"one").unwrap();
        fan.write_atomic(&tmp, "abcd", b"two").unwrap();
        assert_eq!(fan.read("abcd").unwrap(), b"two");
        assert_eq!(mode_of(&v.join("objects/ab")).unwrap(), 0o700);
        assert_eq!(mode_of(&v.join("objects/ab/abcd")).unwrap(), 0o600);
        assert!(tmp.entries().unwrap().is_empty());
        for bad in ["", ".", "..", "a/b"] {
            assert_eq!(
                fan.open_read(bad).unwrap_err().kind(),
                io::ErrorKind::InvalidInput,
                "{bad:?}"
            );
        }
    }
}
