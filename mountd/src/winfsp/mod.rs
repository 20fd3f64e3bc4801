//! The WinFsp adapter (Windows): translates WinFsp requests into [`SealFs`]
//! calls and [`FsError`] into NTSTATUS. No decisions here.
//!
//! WinFsp names files by path (`\global\key`, `\principal\alice\key`,
//! `\session\<id>\key`); every request walks its path from the root with
//! [`SealFs::lookup`], one component at a time, as the kernel does for FUSE.
//!
//! Who asks: Windows has no uid or gid to pass on, so every request is made
//! as `Caller { uid: 0, gid: 0, pid }`, where `pid` is the requesting
//! process when WinFsp reports one (opens, creates and renames; a handle
//! keeps its opener's) and 0 otherwise (deletions, attribute changes).
//! uid 0 is read-write everywhere in [`SealFs`]: on Windows the daemon
//! serves the user it runs as, and only that user. The mount's security
//! descriptor grants access to that user alone, and Windows checks it on
//! every open. Per-uid rules and the policy file are a Unix feature.
//!
//! Nothing is cached across callers or requests: the file info timeout is 0,
//! which also keeps file data out of the Windows cache manager, so each read
//! reaches [`SealFs`] and no plaintext stays in the system cache.

use std::ffi::c_void;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use ::winfsp::constants::FspCleanupFlags;
use ::winfsp::filesystem::{
    DirBuffer, DirInfo, DirMarker, FileInfo, FileSecurity, FileSystemContext, OpenFileInfo,
    VolumeInfo, WideNameInfo,
};
use ::winfsp::{FspError, Result as FspResult, U16CStr};
use sealfs::audit::Caller;
use windows::Win32::Foundation::{
    STATUS_ACCESS_DENIED, STATUS_BUFFER_TOO_SMALL, STATUS_DIRECTORY_NOT_EMPTY, STATUS_DISK_FULL,
    STATUS_END_OF_FILE, STATUS_FILE_IS_A_DIRECTORY, STATUS_FILE_TOO_LARGE, STATUS_INVALID_HANDLE,
    STATUS_IO_DEVICE_ERROR, STATUS_MEDIA_WRITE_PROTECTED, STATUS_NOT_A_DIRECTORY, STATUS_NO_MEMORY,
    STATUS_OBJECT_NAME_COLLISION, STATUS_OBJECT_NAME_INVALID, STATUS_OBJECT_NAME_NOT_FOUND,
    STATUS_QUOTA_EXCEEDED, STATUS_SUCCESS, STATUS_TOO_MANY_OPENED_FILES,
};
use windows::Win32::Storage::FileSystem::{
    FILE_APPEND_DATA, FILE_ATTRIBUTE_DIRECTORY, FILE_ATTRIBUTE_NORMAL, FILE_ATTRIBUTE_READONLY,
    FILE_READ_DATA, FILE_WRITE_DATA, INVALID_FILE_ATTRIBUTES,
};

mod volume;

use crate::fs::{AccessMask, Attr, FileKind, FsError, OpenMode, SealFs, ROOT_INO};
pub use volume::run;

/// `FILE_DIRECTORY_FILE` create option (ntioapi.h): create a directory.
const FILE_DIRECTORY_FILE: u32 = 0x0000_0001;

const SECTOR_SIZE: u16 = 4096;

/// Reported as both capacity and free space: the vault has no fixed size,
/// and Explorer refuses to copy onto a volume that reports no free space.
const NOMINAL_VOLUME_SIZE: u64 = 1 << 30;

impl From<FsError> for FspError {
    fn from(e: FsError) -> Self {
        let status = match e {
            FsError::NotFound => STATUS_OBJECT_NAME_NOT_FOUND,
            FsError::Denied | FsError::NotPermitted => STATUS_ACCESS_DENIED,
            FsError::ReadOnly => STATUS_MEDIA_WRITE_PROTECTED,
            FsError::TooLarge => STATUS_FILE_TOO_LARGE,
            FsError::Invalid => STATUS_OBJECT_NAME_INVALID,
            FsError::Exists => STATUS_OBJECT_NAME_COLLISION,
            FsError::NotEmpty => STATUS_DIRECTORY_NOT_EMPTY,
            FsError::IsDir => STATUS_FILE_IS_A_DIRECTORY,
            FsError::NotDir => STATUS_NOT_A_DIRECTORY,
            FsError::BadHandle => STATUS_INVALID_HANDLE,
            FsError::Io => STATUS_IO_DEVICE_ERROR,
            FsError::TooManyOpen | FsError::TooManyOpenInSystem => STATUS_TOO_MANY_OPENED_FILES,
            FsError::Quota => STATUS_QUOTA_EXCEEDED,
            FsError::NoSpace => STATUS_DISK_FULL,
            FsError::NoMemory => STATUS_NO_MEMORY,
        };
        status.into()
    }
}

pub struct WinFspAdapter {
    fs: Arc<SealFs>,
    /// Self-relative security descriptor served for every file and directory.
    security: Arc<[u8]>,
}

/// One open of a file or directory.
pub struct FileCtx {
    ino: u64,
    open: Open,
}

enum Open {
    Dir(DirBuffer),
    /// The [`SealFs`] handle, when the file was opened for its data; taken
    /// (released) when the last Windows handle to this open is closed.
    File(Mutex<Option<u64>>),
}

impl FileCtx {
    fn new(attr: &Attr, fh: Option<u64>) -> Self {
        let open = match attr.kind {
            FileKind::Directory => Open::Dir(DirBuffer::new()),
            FileKind::File => Open::File(Mutex::new(fh)),
        };
        FileCtx {
            ino: attr.ino,
            open,
        }
    }

    fn is_dir(&self) -> bool {
        matches!(self.open, Open::Dir(_))
    }

    fn fh(&self) -> Option<u64> {
        match &self.open {
            Open::File(fh) => *fh.lock().unwrap_or_else(|e| e.into_inner()),
            Open::Dir(_) => None,
        }
    }

    fn take_fh(&self) -> Option<u64> {
        match &self.open {
            Open::File(fh) => fh.lock().unwrap_or_else(|e| e.into_inner()).take(),
            Open::Dir(_) => None,
        }
    }
}

/// Paths that are not valid UTF-16 cannot name scopes or keys.
fn path_str(path: &U16CStr, bad: FsError) -> Result<String, FsError> {
    path.to_string().map_err(|_| bad)
}

/// `\a\b\c` -> (`\a\b`, `c`).
fn split(path: &str) -> Result<(&str, &str), FsError> {
    match path.rsplit_once('\\') {
        Some((dir, name)) if !name.is_empty() => Ok((dir, name)),
        _ => Err(FsError::Invalid),
    }
}

fn attributes(kind: FileKind, perm: u16) -> u32 {
    match kind {
        FileKind::Directory => FILE_ATTRIBUTE_DIRECTORY.0,
        FileKind::File if perm & 0o200 == 0 => FILE_ATTRIBUTE_READONLY.0,
        FileKind::File => FILE_ATTRIBUTE_NORMAL.0,
    }
}

/// 100 ns intervals since 1601-01-01 (FILETIME).
fn filetime(t: SystemTime) -> u64 {
    const UNIX_EPOCH_AS_FILETIME: u64 = 116_444_736_000_000_000;
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    UNIX_EPOCH_AS_FILETIME + d.as_secs() * 10_000_000 + u64::from(d.subsec_nanos() / 100)
}

fn fill(fi: &mut FileInfo, a: &Attr) {
    let t = filetime(a.mtime);
    *fi = FileInfo {
        file_attributes: attributes(a.kind, a.perm),
        file_size: a.size,
        allocation_size: a.size.next_multiple_of(u64::from(SECTOR_SIZE)),
        creation_time: t,
        last_access_time: t,
        last_write_time: t,
        change_time: t,
        index_number: a.ino,
        ..FileInfo::default()
    };
}

/// The open mode a Windows open's granted access amounts to.
fn open_mode(granted_access: u32) -> OpenMode {
    let write_data = granted_access & FILE_WRITE_DATA.0 != 0;
    let append_data = granted_access & FILE_APPEND_DATA.0 != 0;
    OpenMode {
        read: granted_access & FILE_READ_DATA.0 != 0,
        write: write_data || append_data,
        truncate: false,
        append: append_data && !write_data,
        // WinFsp's create carries its disposition separately; a create
        // there replaces, as before.
        exclusive: false,
    }
}

impl WinFspAdapter {
    pub fn new(fs: Arc<SealFs>, security: Arc<[u8]>) -> Self {
        WinFspAdapter { fs, security }
    }

    /// The caller of the request being served (see the module docs).
    fn caller(&self) -> Caller {
        #[expect(
            unsafe_code,
            reason = "WinFsp exposes the requesting process only through this call"
        )]
        // SAFETY: called only while serving a `FileSystemContext` callback on
        // a WinFsp dispatcher thread, as `with_operation_request` requires;
        // its closure runs only when that thread's operation context and
        // request are set, which is all FspFileSystemOperationProcessIdF reads.
        let pid = unsafe {
            self.with_operation_request(|_| winfsp_sys::FspFileSystemOperationProcessIdF())
        };
        Caller {
            uid: 0,
            gid: 0,
            pid: pid.unwrap_or(0),
        }
    }

    /// Looks `path` up from the root one component at a time, runs `f` on
    /// it, then gives the lookups back (SealFs counts them as the kernel
    /// would). With `keep`, the final one stays held: a file context owns
    /// it until `close`.
    fn walk_then<T>(
        &self,
        c: &Caller,
        path: &str,
        keep: bool,
        f: impl FnOnce(&Attr) -> Result<T, FsError>,
    ) -> Result<T, FsError> {
        let mut held = Vec::new();
        let mut result = self.fs.getattr(c, ROOT_INO);
        for name in path.split('\\').filter(|n| !n.is_empty()) {
            result = result.and_then(|parent| self.fs.lookup(c, parent.ino, name));
            match &result {
                Ok(a) => held.push(a.ino),
                Err(_) => break,
            }
        }
        let out = result.and_then(|attr| f(&attr));
        if keep && out.is_ok() {
            held.pop();
        }
        for ino in held.into_iter().rev() {
            self.fs.forget(ino, 1);
        }
        out
    }

    fn walk(&self, c: &Caller, path: &str) -> Result<Attr, FsError> {
        self.walk_then(c, path, false, |a| Ok(*a))
    }

    /// Length of a handle's content: what its opener reads and writes.
    fn handle_len(&self, fh: u64) -> Result<u64, FsError> {
        self.fs.read(fh, 0, usize::MAX, true, |b| b.len() as u64)
    }

    fn info(&self, ctx: &FileCtx, fi: &mut FileInfo) -> FspResult<()> {
        let mut attr = self.fs.getattr(&self.caller(), ctx.ino)?;
        if let Some(fh) = ctx.fh() {
            // Includes this handle's writes not committed yet.
            attr.size = self.handle_len(fh)?;
        }
        fill(fi, &attr);
        Ok(())
    }

    /// Copies the security descriptor into WinFsp's buffer; returns its size.
    fn put_descriptor(&self, buf: Option<&mut [c_void]>) -> FspResult<u64> {
        let sd = &self.security;
        if let Some(buf) = buf {
            if buf.len() < sd.len() {
                // Never happens (WinFsp offers 1 KiB or more; the descriptor
                // is under 300 bytes). Fail closed: the crate cannot pass the
                // needed size back with an error.
                return Err(STATUS_BUFFER_TOO_SMALL.into());
            }
            #[expect(
                unsafe_code,
                reason = "WinFsp hands the security descriptor buffer as a raw pointer"
            )]
            // SAFETY: `buf` is WinFsp's descriptor buffer, `buf.len()` bytes
            // long (`c_void` is one byte), and `sd.len()` bytes fit in it; the
            // two do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(sd.as_ptr(), buf.as_mut_ptr().cast::<u8>(), sd.len())
            };
        }
        Ok(sd.len() as u64)
    }

    fn release(&self, ctx: &FileCtx) {
        if let Some(fh) = ctx.take_fh() {
            // Windows close cannot fail: a commit error can only be logged.
            if let Err(e) = self.fs.release(fh) {
                tracing::warn!(error = %e, "changes not saved on close");
            }
        }
    }
}

impl FileSystemContext for WinFspAdapter {
    type FileContext = FileCtx;

    fn get_security_by_name(
        &self,
        file_name: &U16CStr,
        security_descriptor: Option<&mut [c_void]>,
        _reparse_point_resolver: impl FnOnce(&U16CStr) -> Option<FileSecurity>,
    ) -> FspResult<FileSecurity> {
        let attr = self.walk(&self.caller(), &path_str(file_name, FsError::NotFound)?)?;
        Ok(FileSecurity {
            reparse: false,
            sz_security_descriptor: self.put_descriptor(security_descriptor)?,
            attributes: attributes(attr.kind, attr.perm),
        })
    }

    fn open(
        &self,
        file_name: &U16CStr,
        _create_options: u32,
        granted_access: u32,
        file_info: &mut OpenFileInfo,
    ) -> FspResult<FileCtx> {
        let c = self.caller();
        let mode = open_mode(granted_access);
        let path = path_str(file_name, FsError::NotFound)?;
        let (attr, fh) = self.walk_then(&c, &path, true, |attr| {
            let fh = match attr.kind {
                FileKind::File if mode.read || mode.write => {
                    Some(self.fs.open(&c, attr.ino, mode)?)
                }
                // Directories, and opens for attributes, security or deletion
                // only (as stat(2) is not an open on Unix).
                _ => None,
            };
            Ok((*attr, fh))
        })?;
        fill(file_info.as_mut(), &attr);
        Ok(FileCtx::new(&attr, fh))
    }

    fn close(&self, ctx: FileCtx) {
        self.release(&ctx);
        // The lookup this context held since open or create.
        self.fs.forget(ctx.ino, 1);
    }

    fn create(
        &self,
        file_name: &U16CStr,
        create_options: u32,
        granted_access: u32,
        _file_attributes: u32,
        _security_descriptor: Option<&[c_void]>,
        _allocation_size: u64,
        _extra_buffer: Option<&[u8]>,
        _extra_buffer_is_reparse_point: bool,
        file_info: &mut OpenFileInfo,
    ) -> FspResult<FileCtx> {
        let c = self.caller();
        let path = path_str(file_name, FsError::Invalid)?;
        let (dir, name) = split(&path)?;
        let parent = self.walk(&c, dir)?;
        let (attr, fh) = if create_options & FILE_DIRECTORY_FILE != 0 {
            (self.fs.mkdir(&c, parent.ino, name)?, None)
        } else {
            let (attr, fh) = self
                .fs
                .create(&c, parent.ino, name, open_mode(granted_access))?;
            (attr, Some(fh))
        };
        fill(file_info.as_mut(), &attr);
        Ok(FileCtx::new(&attr, fh))
    }

    /// The last handle to an open is closed: commit and wipe (close(2)),
    /// then delete if asked. Windows cleanup cannot fail: errors are logged.
    fn cleanup(&self, ctx: &FileCtx, file_name: Option<&U16CStr>, flags: u32) {
        self.release(ctx);
        if !FspCleanupFlags::FspCleanupDelete.is_flagged(flags) {
            return;
        }
        let Some(file_name) = file_name else {
            return;
        };
        let c = self.caller();
        let deleted = path_str(file_name, FsError::NotFound).and_then(|path| {
            let (dir, name) = split(&path)?;
            let parent = self.walk(&c, dir)?;
            if ctx.is_dir() {
                self.fs.rmdir(&c, parent.ino, name)
            } else {
                self.fs.unlink(&c, parent.ino, name)
            }
        });
        if let Err(e) = deleted {
            tracing::warn!(error = %e, "delete on close failed");
        }
    }

    fn flush(&self, ctx: Option<&FileCtx>, file_info: &mut FileInfo) -> FspResult<()> {
        let Some(ctx) = ctx else {
            return Ok(()); // the whole volume: nothing is buffered beyond handles
        };
        if let Some(fh) = ctx.fh() {
            self.fs.flush(fh)?;
        }
        self.info(ctx, file_info)
    }

    fn get_file_info(&self, ctx: &FileCtx, file_info: &mut FileInfo) -> FspResult<()> {
        self.info(ctx, file_info)
    }

    fn get_security(
        &self,
        _ctx: &FileCtx,
        security_descriptor: Option<&mut [c_void]>,
    ) -> FspResult<u64> {
        self.put_descriptor(security_descriptor)
    }

    fn overwrite(
        &self,
        ctx: &FileCtx,
        _file_attributes: u32,
        _replace_file_attributes: bool,
        _allocation_size: u64,
        _extra_buffer: Option<&[u8]>,
        file_info: &mut FileInfo,
    ) -> FspResult<()> {
        self.fs
            .setattr(&self.caller(), ctx.ino, ctx.fh(), Some(0), false)?;
        self.info(ctx, file_info)
    }

    fn read_directory(
        &self,
        ctx: &FileCtx,
        _pattern: Option<&U16CStr>,
        marker: DirMarker,
        buffer: &mut [u8],
    ) -> FspResult<u32> {
        let Open::Dir(dir) = &ctx.open else {
            return Err(FsError::NotDir.into());
        };
        match dir.acquire(marker.is_none(), None) {
            Ok(lock) => {
                let c = self.caller();
                for e in self.fs.readdir(&c, ctx.ino)?.iter() {
                    // Windows lists no "." or ".." in a volume's root.
                    if ctx.ino == ROOT_INO && (e.name == "." || e.name == "..") {
                        continue;
                    }
                    let mut info: DirInfo = DirInfo::new();
                    if info.set_name(e.name).is_err() {
                        continue; // longer than a Windows name can be
                    }
                    match self.fs.getattr(&c, e.ino) {
                        Ok(a) => fill(info.file_info_mut(), &a),
                        Err(_) => info.file_info_mut().file_attributes = attributes(e.kind, 0),
                    }
                    lock.write(&mut info)?;
                }
            }
            // Filled by an earlier call of this enumeration: serve from it.
            Err(e) if e.to_ntstatus() == STATUS_SUCCESS.0 => {}
            Err(e) => return Err(e),
        }
        Ok(dir.read(marker, buffer))
    }

    fn rename(
        &self,
        _ctx: &FileCtx,
        file_name: &U16CStr,
        new_file_name: &U16CStr,
        replace_if_exists: bool,
    ) -> FspResult<()> {
        let c = self.caller();
        let from = path_str(file_name, FsError::NotFound)?;
        let to = path_str(new_file_name, FsError::Invalid)?;
        let (from_dir, from_name) = split(&from)?;
        let (to_dir, to_name) = split(&to)?;
        let from_parent = self.walk(&c, from_dir)?;
        let to_parent = self.walk(&c, to_dir)?;
        self.fs.rename(
            &c,
            from_parent.ino,
            from_name,
            to_parent.ino,
            to_name,
            !replace_if_exists,
        )?;
        Ok(())
    }

    /// Timestamps are not stored (as with utimes(2) through FUSE); setting or
    /// clearing the read-only attribute is a mode change, which SealFs refuses.
    fn set_basic_info(
        &self,
        ctx: &FileCtx,
        file_attributes: u32,
        _creation_time: u64,
        _last_access_time: u64,
        _last_write_time: u64,
        _last_change_time: u64,
        file_info: &mut FileInfo,
    ) -> FspResult<()> {
        let c = self.caller();
        let current = self.fs.getattr(&c, ctx.ino)?;
        let readonly = FILE_ATTRIBUTE_READONLY.0;
        let changes_mode = !ctx.is_dir()
            && file_attributes != INVALID_FILE_ATTRIBUTES
            && file_attributes != 0
            && file_attributes & readonly != attributes(current.kind, current.perm) & readonly;
        self.fs.setattr(&c, ctx.ino, ctx.fh(), None, changes_mode)?;
        self.info(ctx, file_info)
    }

    /// Validates a deletion now; it happens in [`Self::cleanup`].
    fn set_delete(&self, ctx: &FileCtx, _file_name: &U16CStr, delete_file: bool) -> FspResult<()> {
        if !delete_file {
            return Ok(());
        }
        let c = self.caller();
        let write = AccessMask {
            write: true,
            ..AccessMask::default()
        };
        self.fs.access_check(&c, ctx.ino, write)?;
        if ctx.is_dir()
            && self
                .fs
                .readdir(&c, ctx.ino)?
                .iter()
                .any(|e| e.name != "." && e.name != "..")
        {
            return Err(FsError::NotEmpty.into());
        }
        Ok(())
    }

    fn set_file_size(
        &self,
        ctx: &FileCtx,
        new_size: u64,
        set_allocation_size: bool,
        file_info: &mut FileInfo,
    ) -> FspResult<()> {
        let c = self.caller();
        if set_allocation_size {
            // Allocation is not stored; it changes the content only when
            // set below the end of the file, which it then truncates.
            let size = match ctx.fh() {
                Some(fh) => self.handle_len(fh)?,
                None => self.fs.getattr(&c, ctx.ino)?.size,
            };
            if new_size >= size {
                return self.info(ctx, file_info);
            }
        }
        self.fs
            .setattr(&c, ctx.ino, ctx.fh(), Some(new_size), false)?;
        self.info(ctx, file_info)
    }

    fn read(&self, ctx: &FileCtx, buffer: &mut [u8], offset: u64) -> FspResult<u32> {
        let fh = ctx.fh().ok_or(FsError::BadHandle)?;
        let want = buffer.len();
        let n = self.fs.read(fh, offset, want, true, |data| {
            buffer[..data.len()].copy_from_slice(data);
            data.len()
        })?;
        if n == 0 && want > 0 {
            return Err(STATUS_END_OF_FILE.into());
        }
        Ok(n as u32)
    }

    fn write(
        &self,
        ctx: &FileCtx,
        buffer: &[u8],
        offset: u64,
        write_to_eof: bool,
        constrained_io: bool,
        file_info: &mut FileInfo,
    ) -> FspResult<u32> {
        let fh = ctx.fh().ok_or(FsError::BadHandle)?;
        let end = self.handle_len(fh)?;
        let offset = if write_to_eof { end } else { offset };
        let data = if constrained_io {
            // Paging I/O never extends a file.
            let room = usize::try_from(end.saturating_sub(offset)).unwrap_or(usize::MAX);
            &buffer[..buffer.len().min(room)]
        } else {
            buffer
        };
        let n = if data.is_empty() {
            0
        } else {
            self.fs.write(fh, offset, data)?
        };
        self.info(ctx, file_info)?;
        Ok(n as u32)
    }

    fn get_volume_info(&self, out_volume_info: &mut VolumeInfo) -> FspResult<()> {
        out_volume_info.total_size = NOMINAL_VOLUME_SIZE;
        out_volume_info.free_size = NOMINAL_VOLUME_SIZE;
        out_volume_info.set_volume_label("sealfs");
        Ok(())
    }
}
