//! Owner-only files and directories, and durable atomic replacement.
//!
//! Everything sealfs writes goes through here so that modes (0700 for
//! directories, 0600 for files) and fsync ordering are decided in one place.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

pub const DIR_MODE: u32 = 0o700;
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and any missing parents with mode 0700. Existing directories
/// are left as they are (`doctor` reports their modes).
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    b.mode(DIR_MODE);
    b.create(dir)
}

/// Opens `path` for reading and writing, creating it 0600 if missing.
pub fn open_private_file(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    o.mode(FILE_MODE);
    o.open(path)
}

/// Creates a new 0600 file with a random name in `dir`; fails rather than
/// reuse an existing file.
pub fn create_temp_file(dir: &Path, prefix: &str) -> io::Result<(File, PathBuf)> {
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(io::Error::other)?;
    let path = dir.join(format!("{prefix}{}.tmp", crate::crypto::hex(&suffix)));
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    o.mode(FILE_MODE);
    Ok((o.open(&path)?, path))
}

/// Flushes a directory entry change (create, rename, unlink) to disk.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
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
pub fn write_atomic(
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
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The mode bits of `path` (without following a final symlink).
#[cfg(unix)]
pub fn mode_of(path: &Path) -> io::Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(fs::symlink_metadata(path)?.permissions().mode() & 0o7777)
}
