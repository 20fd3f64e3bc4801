//! `sealfs-bench bare-fs`: the floor an open through a FUSE mount can reach
//! on this machine. A fuser file system that does nothing but answer:
//! `global/k0000..` with fixed 64-byte content, mounted with the options,
//! kernel flags, open flags, cache TTL and thread count of `sealfs-mountd`
//! (without `--allow-other`), so the ratio of sealfs to it is sealfs's own
//! work per open.

use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result};
use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, Request, SessionACL,
};

/// `sealfs-mountd`'s TTL for a mount without `--allow-other`.
const TTL: Duration = Duration::from_secs(1);
const ROOT: u64 = 1;
const SCOPE: u64 = 2;
/// Inode of file `k0000`; file `i` is `FIRST_FILE + i`.
const FIRST_FILE: u64 = 3;

struct BareFs {
    files: u64,
    uid: u32,
    gid: u32,
}

impl BareFs {
    fn content(&self, ino: u64) -> Vec<u8> {
        crate::value64((ino - FIRST_FILE) as usize)
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (kind, perm, nlink, size) = match ino {
            ROOT | SCOPE => (FileType::Directory, 0o700, 2, 0),
            i if i >= FIRST_FILE && i < FIRST_FILE + self.files => {
                (FileType::RegularFile, 0o600, 1, 64)
            }
            _ => return None,
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            flags: 0,
            blksize: 4096,
        })
    }

    fn child(&self, parent: u64, name: &OsStr) -> Option<u64> {
        let name = name.to_str()?;
        match parent {
            ROOT if name == "global" => Some(SCOPE),
            SCOPE => {
                let i: u64 = name.strip_prefix('k')?.parse().ok()?;
                (i < self.files && name == crate::name(i as usize)).then_some(FIRST_FILE + i)
            }
            _ => None,
        }
    }
}

impl Filesystem for BareFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_ATOMIC_O_TRUNC);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.child(parent.0, name).and_then(|i| self.attr(i)) {
            Some(a) => reply.entry(&TTL, &a, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino.0 < FIRST_FILE {
            return reply.error(Errno::EISDIR);
        }
        // What sealfs-mountd answers a read-only open.
        reply.opened(
            FileHandle(ino.0),
            FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NOFLUSH,
        );
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let content = self.content(ino.0);
        let start = (offset as usize).min(content.len());
        let end = (start + size as usize).min(content.len());
        reply.data(&content[start..end]);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries: Vec<(u64, FileType, String)> = match ino.0 {
            ROOT => vec![(SCOPE, FileType::Directory, "global".into())],
            SCOPE => (0..self.files)
                .map(|i| {
                    (
                        FIRST_FILE + i,
                        FileType::RegularFile,
                        crate::name(i as usize),
                    )
                })
                .collect(),
            _ => return reply.error(Errno::ENOTDIR),
        };
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

/// Mounts the bare fs on `mountpoint` and serves it until SIGTERM/SIGINT
/// (the unmount then happens as the session drops).
pub(crate) fn run(mountpoint: &Path, files: usize, threads: usize) -> Result<()> {
    let fs = BareFs {
        files: files as u64,
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
    };
    let mut config = Config::default();
    // sealfs-mountd's options (daemon/unix.rs), read-write, owner only.
    config.mount_options = vec![
        MountOption::FSName("barefs".into()),
        MountOption::Subtype("barefs".into()),
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::NoExec,
        MountOption::NoAtime,
        MountOption::RW,
    ];
    config.acl = SessionACL::Owner;
    config.n_threads = Some(threads);
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .context("cannot install signal handlers")?;
    let session = fuser::spawn_mount(fs, mountpoint, &config)
        .with_context(|| format!("cannot mount on {}", mountpoint.display()))?;
    signals.forever().next();
    // Already unmounted from outside (umount, then the signal): nothing to do.
    let _ = session.umount_and_join();
    Ok(())
}
