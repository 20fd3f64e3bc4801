//! Whether anything happened to chosen files of checked directories since
//! the last look, from the kernel's change notification (Linux, inotify):
//! one `read` that finds nothing when nothing did.
//!
//! The kernel queues an event for every `write`, truncation, creation,
//! removal, rename and attribute change made through any path or handle,
//! before the system call that made it returns. So once another process's
//! commit is acknowledged, the next look here sees it. What it does not
//! see: writes through a shared `mmap` (SQLite writes its database and log
//! with `pwrite`; only its shared-memory file is mapped, and it is not
//! watched), and writes made on another machine to a network file system.

use std::ffi::OsString;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Mutex;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::PrivateDir;

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
    .union(AddWatchFlags::IN_MOVE_SELF)
    .union(AddWatchFlags::IN_ONLYDIR);

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
    /// directories' handles (what was checked is what is watched).
    pub(crate) fn new(dirs: &[&PrivateDir], names: Vec<OsString>) -> io::Result<DirWatch> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        for dir in dirs {
            inotify.add_watch(
                format!("/proc/self/fd/{}", dir.dir.as_raw_fd()).as_str(),
                WATCHED,
            )?;
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
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
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
                        // An overflow has no name: it counts, as does any
                        // event of a watched entry.
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
