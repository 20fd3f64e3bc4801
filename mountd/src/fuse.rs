//! The FUSE adapter (Linux, and macOS through macFUSE): translates `fuser`
//! requests into [`SealFs`] calls and errors into errno. No decisions here.

use std::ffi::OsStr;
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, KernelConfig, LockOwner, Notifier, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use sealfs::audit::Caller;

use crate::fs::{AccessMask, Attr, FileKind, FsError, OpenMode, SealFs};

/// How long the kernel may cache entries and attributes.
///
/// With `allow_other`, zero: owner and mode are computed per caller and
/// permissions are decided per request, so nothing one caller looked up may
/// be served from the kernel's cache to another. Without it only the
/// mounting user can reach the mount, so there is no other caller to leak
/// to, and one second of caching saves a lookup and a getattr per open; a
/// `sealfs set` shows its new size within that second (the content is
/// always fresh: every open decrypts again).
pub fn cache_ttl(allow_other: bool) -> Duration {
    if allow_other {
        Duration::ZERO
    } else {
        Duration::from_secs(1)
    }
}

pub struct FuseAdapter {
    fs: Arc<SealFs>,
    ttl: Duration,
    /// Ask the kernel to allow shared mappings of direct-I/O files
    /// (`FUSE_DIRECT_IO_ALLOW_MMAP`): on read-only mounts, where no
    /// mapping can write.
    shared_mmap: bool,
    /// Set once the session is mounted ([`FuseAdapter::notifier_slot`]).
    notifier: Arc<OnceLock<Notifier>>,
    /// Inodes whose pages the kernel is to drop, sent by a thread of
    /// their own: the kernel's invalidation waits for pages being read
    /// in, whose READs the request threads must stay free to answer.
    drop_pages: Mutex<mpsc::Sender<u64>>,
}

impl FuseAdapter {
    pub fn new(fs: Arc<SealFs>, ttl: Duration, read_only: bool) -> Self {
        let notifier: Arc<OnceLock<Notifier>> = Arc::new(OnceLock::new());
        let (drop_pages, inodes) = mpsc::channel::<u64>();
        let slot = Arc::clone(&notifier);
        // Ends when the adapter (the sender) is dropped.
        std::thread::spawn(move || {
            for ino in inodes {
                if let Some(n) = slot.get() {
                    let _ = n.inval_inode(INodeNo(ino), 0, 0);
                }
            }
        });
        FuseAdapter {
            fs,
            ttl,
            shared_mmap: read_only,
            notifier,
            drop_pages: Mutex::new(drop_pages),
        }
    }

    /// Where the daemon puts the mounted session's notifier, with which
    /// the last close of a file drops its pages from the kernel's cache.
    pub fn notifier_slot(&self) -> Arc<OnceLock<Notifier>> {
        Arc::clone(&self.notifier)
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

fn errno(e: FsError) -> Errno {
    match e {
        FsError::NotFound => Errno::ENOENT,
        FsError::Denied => Errno::EACCES,
        FsError::ReadOnly => Errno::EROFS,
        FsError::TooLarge => Errno::EFBIG,
        FsError::Invalid => Errno::EINVAL,
        FsError::Exists => Errno::EEXIST,
        FsError::NotEmpty => Errno::ENOTEMPTY,
        FsError::NotPermitted => Errno::EPERM,
        FsError::IsDir => Errno::EISDIR,
        FsError::NotDir => Errno::ENOTDIR,
        FsError::BadHandle => Errno::EBADF,
        FsError::Io => Errno::EIO,
        FsError::TooManyOpen => Errno::EMFILE,
        FsError::Quota => Errno::EDQUOT,
        FsError::NoSpace => Errno::ENOSPC,
        FsError::NoMemory => Errno::ENOMEM,
        FsError::TooManyOpenInSystem => Errno::ENFILE,
    }
}

/// Replies to a request that returns nothing but success or an errno.
fn answer(reply: ReplyEmpty, result: Result<(), FsError>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

/// How long the kernel may keep `a`: not at all if it says so.
fn ttl_of(ttl: &Duration, a: &Attr) -> Duration {
    if a.uncached {
        Duration::ZERO
    } else {
        *ttl
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind: match a.kind {
            FileKind::Directory => FileType::Directory,
            FileKind::File => FileType::RegularFile,
        },
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        flags: 0,
        blksize: 4096,
    }
}

/// Names that are not UTF-8 cannot be scopes or keys.
fn name_str(name: &OsStr) -> Result<&str, FsError> {
    name.to_str().ok_or(FsError::NotFound)
}

fn open_mode(flags: i32) -> OpenMode {
    let acc = flags & libc_o::ACCMODE;
    OpenMode {
        read: acc == libc_o::RDONLY || acc == libc_o::RDWR,
        write: acc == libc_o::WRONLY || acc == libc_o::RDWR,
        truncate: flags & libc_o::TRUNC != 0,
        append: flags & libc_o::APPEND != 0,
        exclusive: flags & libc_o::EXCL != 0,
    }
}

/// open(2) flag bits, from nix's re-export of libc.
mod libc_o {
    use nix::fcntl::OFlag;
    pub(super) const ACCMODE: i32 = OFlag::O_ACCMODE.bits();
    pub(super) const RDONLY: i32 = OFlag::O_RDONLY.bits();
    pub(super) const WRONLY: i32 = OFlag::O_WRONLY.bits();
    pub(super) const EXCL: i32 = OFlag::O_EXCL.bits();
    pub(super) const RDWR: i32 = OFlag::O_RDWR.bits();
    pub(super) const TRUNC: i32 = OFlag::O_TRUNC.bits();
    pub(super) const APPEND: i32 = OFlag::O_APPEND.bits();
}

/// (exchange, no-replace) from renameat2 flags; macOS has neither.
fn rename_flags(flags: RenameFlags) -> (bool, bool) {
    #[cfg(target_os = "linux")]
    {
        (
            flags.contains(RenameFlags::RENAME_EXCHANGE),
            flags.contains(RenameFlags::RENAME_NOREPLACE),
        )
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = flags;
        (false, false)
    }
}

/// Direct I/O: reads always come to us (so the per-request checks hold) and
/// no plaintext stays in the kernel's page cache.
const OPEN_FLAGS: FopenFlags = FopenFlags::FOPEN_DIRECT_IO;

/// A read-only open has nothing to flush: skip the FLUSH request on close.
fn open_flags(mode: OpenMode) -> FopenFlags {
    if mode.write {
        OPEN_FLAGS
    } else {
        OPEN_FLAGS | FopenFlags::FOPEN_NOFLUSH
    }
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // O_TRUNC arrives with open() instead of as a separate truncate to
        // an empty value, which the vault would refuse.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_ATOMIC_O_TRUNC);
        // Some runtimes map small files shared. A shared read-only mapping
        // fills the page cache like a private one, and the last close
        // drops those pages (`release`). Older kernels (before 6.6) keep
        // refusing shared mappings (ENODEV).
        if self.shared_mmap {
            let _ = config.add_capabilities(fuser::InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP);
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match name_str(name).and_then(|n| self.fs.lookup(&caller(req), parent.0, n)) {
            Ok(a) => reply.entry(&ttl_of(&self.ttl, &a), &file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(&caller(req), ino.0) {
            Ok(a) => reply.attr(&ttl_of(&self.ttl, &a), &file_attr(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let changes = mode.is_some() || uid.is_some() || gid.is_some();
        match self
            .fs
            .setattr(&caller(req), ino.0, fh.map(|f| f.0), size, changes)
        {
            Ok(a) => reply.attr(&ttl_of(&self.ttl, &a), &file_attr(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let name = match name.to_str() {
            Some(n) => n,
            None => return reply.error(Errno::EINVAL),
        };
        match self.fs.mkdir(&caller(req), parent.0, name) {
            Ok(a) => reply.entry(&ttl_of(&self.ttl, &a), &file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        answer(
            reply,
            name_str(name).and_then(|n| self.fs.unlink(&caller(req), parent.0, n)),
        )
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        answer(
            reply,
            name_str(name).and_then(|n| self.fs.rmdir(&caller(req), parent.0, n)),
        )
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (exchange, no_replace) = rename_flags(flags);
        if exchange {
            return reply.error(Errno::EINVAL);
        }
        let (Some(from), Some(to)) = (name.to_str(), newname.to_str()) else {
            return reply.error(Errno::EINVAL);
        };
        answer(
            reply,
            self.fs
                .rename(&caller(req), parent.0, from, newparent.0, to, no_replace),
        )
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mode = open_mode(flags.0);
        match self.fs.open(&caller(req), ino.0, mode) {
            Ok(fh) => reply.opened(FileHandle(fh), open_flags(mode)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut reply = Some(reply);
        // Linux sends the caller's lock owner with a direct-I/O read
        // (`fuse_send_read`) and none with the reads that fill the page
        // cache (a mapping's faults, readahead, splice): only those may
        // leave pages to drop at the last close. (Not known of macFUSE.)
        let direct = cfg!(target_os = "linux") && lock_owner.is_some();
        let sent = self.fs.read(fh.0, offset, size as usize, direct, |bytes| {
            if let Some(r) = reply.take() {
                r.data(bytes);
            }
        });
        if let (Err(e), Some(r)) = (sent, reply) {
            r.error(errno(e));
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.fs.write(fh.0, offset, data) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        answer(reply, self.fs.flush(fh.0))
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        answer(reply, self.fs.release(fh.0));
        // Reads are direct I/O, but a private mmap fills the page cache:
        // once the last handle is gone, nothing of the plaintext stays
        // there. (Sent after the reply, outside the request.)
        if self.fs.take_cached(ino.0) {
            let _ = self
                .drop_pages
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .send(ino.0);
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        answer(reply, self.fs.flush(fh.0))
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(&caller(req), ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.fs.listing(fh.0) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(e)),
        };
        // Each readdir starts where the last one stopped, without walking
        // the entries before it (a scope may hold 100,000).
        let mut i = usize::try_from(offset).unwrap_or(usize::MAX);
        while let Some(e) = entries.get(i) {
            let kind = match e.kind {
                FileKind::Directory => FileType::Directory,
                FileKind::File => FileType::RegularFile,
            };
            i += 1;
            if reply.add(INodeNo(e.ino), i as u64, kind, e.name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, 4096, 128, 0);
    }

    // Extended attributes: there are none. Answered quietly (`ls -l` asks
    // for `security.selinux` on every file): no value, no names, and
    // setting one is not supported.
    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::NO_XATTR);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOTSUP);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::NO_XATTR);
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let mask = AccessMask {
            read: mask.contains(AccessFlags::R_OK),
            write: mask.contains(AccessFlags::W_OK),
            execute: mask.contains(AccessFlags::X_OK),
        };
        answer(reply, self.fs.access_check(&caller(req), ino.0, mask))
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let Some(name) = name.to_str() else {
            return reply.error(Errno::EINVAL);
        };
        match self
            .fs
            .create(&caller(req), parent.0, name, open_mode(flags))
        {
            Ok((a, fh)) => reply.created(
                &self.ttl,
                &file_attr(&a),
                Generation(0),
                FileHandle(fh),
                OPEN_FLAGS,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allow_other_mount_lets_the_kernel_cache_nothing() {
        // What one caller looked up must not be served to another.
        assert_eq!(cache_ttl(true), Duration::ZERO);
        assert_eq!(cache_ttl(false), Duration::from_secs(1));
    }
}
