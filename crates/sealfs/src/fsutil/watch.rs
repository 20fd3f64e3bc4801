//! Whether anything happened to chosen files of checked directories since
//! the last look, from the kernel's change notification (Linux, inotify):
//! one `read` that finds nothing when nothing did.
//!
//! The kernel queues an event for every `write`, truncation, creation,
//! removal, rename and attribute change before the system call that made
//! it returns. Some files are watched by name in their directory; the
//! files this process keeps open (the index and its log) are also watched
//! as files, whose events follow them whatever name or link they are
//! written through, and must stay the files this process has open: any
//! creation, removal or rename of their names ends the watch for good, as
//! does a watched file or directory moved or removed. The caller then
//! looks by other means. Lost events (the queue overflowed: nobody read it
//! while others wrote a lot) count as a change, and the watch goes on only
//! if every watched directory and file is still where it was.
//!
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
use std::path::{Path, PathBuf};
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

/// Whether this process has the file `path`, which is `id` (device,
/// inode), open through any of its handles. Only handles whose link names
/// that path are looked at (reading a link reaches no file system), so
/// none on another file system, which might not answer, is followed.
fn open_here(path: &Path, id: (u64, u64)) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let link = entry?.path();
        // A handle closed meanwhile is not the one.
        if std::fs::read_link(&link).is_ok_and(|to| to == path) {
            if let Ok(m) = std::fs::metadata(&link) {
                if m.is_file() && (m.dev(), m.ino()) == id {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

/// Where something watched is, and what it was there at set-up.
struct Place {
    path: PathBuf,
    id: (u64, u64),
}

impl Place {
    fn still_there(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id)
    }
}

/// What is watched in each directory and file: every way its entries can
/// change, and the directory or file itself going away.
const WATCHED: AddWatchFlags = AddWatchFlags::IN_MODIFY
    .union(AddWatchFlags::IN_ATTRIB)
    .union(AddWatchFlags::IN_CLOSE_WRITE)
    .union(AddWatchFlags::IN_CREATE)
    .union(AddWatchFlags::IN_DELETE)
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_MOVE_SELF);

/// Events after which nothing can be told.
const ENDS: AddWatchFlags = AddWatchFlags::IN_IGNORED
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_MOVE_SELF)
    .union(AddWatchFlags::IN_UNMOUNT);

/// Events that change which file a name leads to.
const RENAMES: AddWatchFlags = AddWatchFlags::IN_CREATE
    .union(AddWatchFlags::IN_DELETE)
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_MOVED_TO);

/// Watches named entries of some directories, and some files.
pub(crate) struct DirWatch {
    /// Names whose events count as changes.
    names: Vec<OsString>,
    /// Names of the files watched as files: they must keep leading there.
    fixed: Vec<OsString>,
    /// The watched directories and files, checked again after lost events.
    places: Vec<Place>,
    state: Mutex<State>,
}

struct State {
    inotify: Inotify,
    /// Moves on at every look that found a change.
    generation: u64,
    /// Nothing can be told from here on (see the module's docs).
    broken: bool,
}

impl DirWatch {
    /// Watches the entries called `names` in each of `dirs`, through the
    /// directories' handles (what was checked is what is watched), and the
    /// `files`, which must be files this process has open. `Unsupported`
    /// where a directory is not on a local file system, or a name in
    /// `files` does not lead to a file open here; `NotFound` where it
    /// leads nowhere.
    pub(crate) fn new(
        dirs: &[&PrivateDir],
        files: &[(&PrivateDir, &str)],
        names: Vec<OsString>,
    ) -> io::Result<DirWatch> {
        let unsupported = |why: String| io::Error::new(io::ErrorKind::Unsupported, why);
        for dir in dirs {
            if !local(dir)? {
                return Err(unsupported(format!(
                    "{} is not on a local file system",
                    dir.path.display()
                )));
            }
        }
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        let mut places = Vec::new();
        for dir in dirs {
            let at = format!("/proc/self/fd/{}", dir.dir.as_raw_fd());
            inotify.add_watch(at.as_str(), WATCHED | AddWatchFlags::IN_ONLYDIR)?;
            let path = dir.real_path()?;
            let id = {
                use std::os::unix::fs::MetadataExt;
                let m = dir.dir.metadata()?;
                (m.dev(), m.ino())
            };
            places.push(Place { path, id });
        }
        // Looked up through the directory's handle, never opened: closing
        // a handle of the index would drop every lock this process's
        // SQLite connections hold on it (POSIX record locks are per
        // process and file). Checked after the watch is set: a file put in
        // its place before is not the one open here, one put after is an
        // event that ends the watch.
        for (dir, name) in files {
            super::check_name(name.as_ref())?;
            let at = format!("/proc/self/fd/{}/{name}", dir.dir.as_raw_fd());
            inotify.add_watch(at.as_str(), WATCHED | AddWatchFlags::IN_DONT_FOLLOW)?;
            let place = Place {
                path: dir.real_path()?.join(name),
                id: dir.identity_of(name)?,
            };
            if !open_here(&place.path, place.id)? {
                return Err(unsupported(format!(
                    "{} is not the file this process has open",
                    dir.join(name).display()
                )));
            }
            places.push(place);
        }
        Ok(DirWatch {
            names,
            fixed: files.iter().map(|(_, name)| (*name).into()).collect(),
            places,
            state: Mutex::new(State {
                inotify,
                generation: 0,
                broken: false,
            }),
        })
    }

    /// A number that differs from the last one returned whenever one of
    /// the watched entries was written, truncated, had its attributes
    /// changed, or (a name watched in a directory only) was created,
    /// removed or renamed in between, or events were lost. `None` once the
    /// watch ended (see the module's docs), or the queue cannot be read:
    /// the caller must look by other means.
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
                        let named =
                            |names: &[OsString]| e.name.as_ref().is_some_and(|n| names.contains(n));
                        if e.mask.intersects(ENDS)
                            || (e.mask.intersects(RENAMES) && named(&self.fixed))
                        {
                            state.broken = true;
                            return None;
                        }
                        // Lost events may have been any of the above: go
                        // on only where nothing moved.
                        if e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW)
                            && !self.places.iter().all(Place::still_there)
                        {
                            state.broken = true;
                            return None;
                        }
                        // An event of a watched file itself has no name.
                        changed |= e.name.is_none() || named(&self.names);
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

    /// Ends the watch: the caller knows of a change it cannot report (a
    /// commit it could not mark).
    pub(crate) fn end(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.broken = true;
        }
    }
}
