//! Whether anything happened to chosen files of checked directories since
//! the last look, from the kernel's change notification (Linux, inotify):
//! one `read` that finds nothing when nothing did.
//!
//! The kernel queues an event for every `write`, truncation, creation,
//! removal, rename and attribute change before the system call that made
//! it returns. Files are watched twice: by name in their directory (a new
//! file created or renamed in their place), and as the files themselves,
//! whose events follow them whatever name or link they are written
//! through; a watched file or directory moved or removed ends the watch.
//! What it does not see: writes through a shared `mmap` (SQLite writes its
//! database and log with `pwrite`; only its shared-memory file is mapped,
//! and it is not watched), and writes that reach the files other than
//! through this kernel (another machine of a network file system, another
//! layer of an overlay): only local file systems are watched.
//!
//! The same event can come before what it reports is visible to readers
//! (SQLite writes a commit's log frames, syncs, then publishes the commit
//! in its shared memory, which makes no event): a writer that wants its
//! commit seen makes one more event after it (the vault touches the log).

use std::ffi::OsString;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Mutex;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::PrivateDir;

/// File systems whose every change goes through this kernel's VFS, so the
/// notification is complete: ext2/3/4, XFS, Btrfs, F2FS, tmpfs.
fn local(dir: &PrivateDir) -> io::Result<bool> {
    use nix::sys::statfs::{
        fstatfs, BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, F2FS_SUPER_MAGIC, TMPFS_MAGIC,
        XFS_SUPER_MAGIC,
    };
    let kind = fstatfs(&dir.dir)?.filesystem_type();
    Ok([
        EXT4_SUPER_MAGIC,
        XFS_SUPER_MAGIC,
        BTRFS_SUPER_MAGIC,
        F2FS_SUPER_MAGIC,
        TMPFS_MAGIC,
    ]
    .contains(&kind))
}

/// What is watched in each directory: every way its entries can change,
/// and the directory itself going away.
const WATCHED: AddWatchFlags = AddWatchFlags::IN_MODIFY
    .union(AddWatchFlags::IN_ATTRIB)
    .union(AddWatchFlags::IN_CLOSE_WRITE)
    .union(AddWatchFlags::IN_CREATE)
    .union(AddWatchFlags::IN_DELETE)
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_MOVE_SELF);

/// Watches the named entries of some directories.
pub(crate) struct DirWatch {
    names: Vec<OsString>,
    state: Mutex<State>,
}

struct State {
    inotify: Inotify,
    /// Moves on at every look that found a change.
    generation: u64,
    /// A watch the kernel dropped (its directory removed, its file system
    /// unmounted): nothing can be told from here on.
    broken: bool,
}

impl DirWatch {
    /// Watches the entries called `names` in each of `dirs`, through the
    /// directories' handles (what was checked is what is watched), and the
    /// existing `files` themselves. `Unsupported` where a directory is not
    /// on a local file system.
    pub(crate) fn new(
        dirs: &[&PrivateDir],
        files: &[(&PrivateDir, &str)],
        names: Vec<OsString>,
    ) -> io::Result<DirWatch> {
        for dir in dirs {
            if !local(dir)? {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("{} is not on a local file system", dir.path.display()),
                ));
            }
        }
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        for dir in dirs {
            let at = format!("/proc/self/fd/{}", dir.dir.as_raw_fd());
            inotify.add_watch(at.as_str(), WATCHED | AddWatchFlags::IN_ONLYDIR)?;
        }
        // Looked up through the directory's handle, never opened: closing
        // a handle of the index would drop every lock this process's
        // SQLite connections hold on it (POSIX record locks are per
        // process and file).
        for (dir, name) in files {
            super::check_name(name.as_ref())?;
            let at = format!("/proc/self/fd/{}/{name}", dir.dir.as_raw_fd());
            inotify.add_watch(at.as_str(), WATCHED | AddWatchFlags::IN_DONT_FOLLOW)?;
        }
        Ok(DirWatch {
            names,
            state: Mutex::new(State {
                inotify,
                generation: 0,
                broken: false,
            }),
        })
    }

    /// A number that differs from the last one returned whenever one of
    /// the watched entries was written, created, removed, renamed or had
    /// its attributes changed in between, or events were lost (the queue
    /// overflowed). `None` once the kernel dropped a watch, or the queue
    /// cannot be read: the caller must look by other means.
    ///
    /// Callers that race are serialised, so none returns a number from
    /// before a change another one has already taken off the queue.
    pub(crate) fn generation(&self) -> Option<u64> {
        // A look that panicked may have taken events off the queue
        // without counting them: nothing can be told after it.
        let mut state = self.state.lock().ok()?;
        if state.broken {
            return None;
        }
        let mut changed = false;
        loop {
            match state.inotify.read_events() {
                Ok(events) => {
                    for e in events {
                        if e.mask.intersects(
                            AddWatchFlags::IN_IGNORED
                                | AddWatchFlags::IN_DELETE_SELF
                                | AddWatchFlags::IN_MOVE_SELF
                                | AddWatchFlags::IN_UNMOUNT,
                        ) {
                            state.broken = true;
                            return None;
                        }
                        // An overflow has no name, nor does an event of a
                        // watched file itself: they count, as does any
                        // event of a watched name in a directory.
                        changed |= e.name.as_ref().is_none_or(|n| self.names.contains(n));
                    }
                }
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(_) => {
                    state.broken = true;
                    return None;
                }
            }
        }
        if changed {
            state.generation += 1;
        }
        Some(state.generation)
    }
}
