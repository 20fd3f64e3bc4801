//! Locked memory for plaintext: page-aligned regions of their own, so
//! unlocking one buffer never unlocks another's pages (two heap buffers can
//! share a page; two regions never do). The one place this crate uses
//! `unsafe`.
//!
//! Regions come from a small pool: a freed region is wiped and kept
//! (still locked) for the next open of its size class, up to
//! [`POOL_BYTES`], so a steady stream of opens costs no system calls.
//! When the memlock limit is reached a new region fails with
//! [`NoMemory`], and the caller refuses the open (`ENOMEM`) rather than
//! hold plaintext in memory that may be swapped, unless the daemon was
//! told to serve unlocked ([`set_allow_unlocked`]; one warning then).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use zeroize::Zeroize;

/// Freed regions kept locked for reuse, at most this many bytes in all.
pub const POOL_BYTES: usize = 1 << 20;

static ALLOW_UNLOCKED: AtomicBool = AtomicBool::new(false);
/// Bytes of regions mapped now (in use or pooled), and the most there may
/// be: a root daemon has no memlock limit of its own (CAP_IPC_LOCK).
static MAPPED: AtomicUsize = AtomicUsize::new(0);
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);

/// At most `bytes` of plaintext regions at once, whatever the memlock
/// limit; past it new regions fail with [`NoMemory`].
pub fn set_limit(bytes: usize) {
    LIMIT.store(bytes, Ordering::Relaxed);
}

/// Counts `len` more bytes mapped, or refuses them past the limit.
#[cfg_attr(
    not(unix),
    expect(
        dead_code,
        reason = "only the Unix regions are counted against the limit"
    )
)]
fn reserve(len: usize) -> Result<(), NoMemory> {
    let before = MAPPED.fetch_add(len, Ordering::Relaxed);
    if before.saturating_add(len) > LIMIT.load(Ordering::Relaxed) {
        MAPPED.fetch_sub(len, Ordering::Relaxed);
        return Err(NoMemory);
    }
    Ok(())
}

#[cfg_attr(
    not(unix),
    expect(
        dead_code,
        reason = "only the Unix regions are counted against the limit"
    )
)]
fn release(len: usize) {
    MAPPED.fetch_sub(len, Ordering::Relaxed);
}
static WARNED: AtomicBool = AtomicBool::new(false);

/// Serve from unlocked memory when locking fails (warns once), instead of
/// failing with [`NoMemory`].
pub fn set_allow_unlocked(allow: bool) {
    ALLOW_UNLOCKED.store(allow, Ordering::Relaxed);
}

/// Memory could not be locked (the memlock limit is reached) or mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoMemory;

/// A page-aligned region of its own, locked unless the daemon allows
/// otherwise; wiped when dropped (before it is unlocked or reused).
pub struct Region {
    mem: imp::Mem,
    /// Names this region for [`wipe_watch`].
    #[cfg(test)]
    id: u64,
}

impl Region {
    /// An empty region (no pages).
    pub fn empty() -> Self {
        Self::of(imp::Mem::empty())
    }

    fn of(mem: imp::Mem) -> Self {
        Region {
            mem,
            #[cfg(test)]
            id: wipe_watch::next_id(),
        }
    }

    /// A zeroed region of at least `len` bytes (whole pages).
    pub fn new(len: usize) -> Result<Self, NoMemory> {
        if len == 0 {
            return Ok(Self::empty());
        }
        let class = size_class(len);
        if let Some(mem) = pool_take(class) {
            return Ok(Self::of(mem));
        }
        Ok(Self::of(imp::Mem::map(class)?))
    }

    pub fn len(&self) -> usize {
        self.mem.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether its pages are locked in RAM.
    pub fn locked(&self) -> bool {
        self.mem.locked()
    }

    pub fn bytes(&self) -> &[u8] {
        self.mem.bytes()
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        self.mem.bytes_mut()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // Wiped while still locked, so no plaintext can reach swap after.
        self.mem.bytes_mut().zeroize();
        #[cfg(test)]
        wipe_watch::observe(self);
        let mem = std::mem::replace(&mut self.mem, imp::Mem::empty());
        if mem.len() > 0 {
            pool_give(mem);
        }
    }
}

/// The system's page size.
pub fn page_size() -> usize {
    imp::page_size()
}

/// Sizes are powers of two pages, so a freed region fits the next open of
/// its class.
fn size_class(len: usize) -> usize {
    let page = imp::page_size();
    len.div_ceil(page).next_power_of_two() * page
}

/// Freed regions, wiped and still locked, by size.
static POOL: Mutex<Vec<imp::Mem>> = Mutex::new(Vec::new());

fn pool_take(class: usize) -> Option<imp::Mem> {
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let at = pool.iter().position(|m| m.len() == class)?;
    Some(pool.swap_remove(at))
}

fn pool_give(mem: imp::Mem) {
    if !mem.locked() {
        return; // dropped: unmapped (an unlocked region is not worth keeping)
    }
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let pooled: usize = pool.iter().map(imp::Mem::len).sum();
    if pooled + mem.len() <= POOL_BYTES {
        pool.push(mem);
    }
}

/// Locking failed for a region: the caller's error, or (allowed) a warning
/// once and unlocked memory.
fn lock_failed(e: impl std::fmt::Display) -> Result<(), NoMemory> {
    if !ALLOW_UNLOCKED.load(Ordering::Relaxed) {
        return Err(NoMemory);
    }
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(error = %e, "cannot lock plaintext buffers in memory (raise RLIMIT_MEMLOCK); serving unlocked as --allow-unlocked-memory says");
    }
    Ok(())
}

#[cfg(unix)]
mod imp {
    #![expect(
        unsafe_code,
        reason = "anonymous mappings, mlock and madvise are libc calls; each block says why it is sound"
    )]

    use std::num::NonZeroUsize;
    use std::ptr::NonNull;

    use nix::sys::mman::{self, MapFlags, ProtFlags};

    use super::NoMemory;

    pub(super) fn page_size() -> usize {
        nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .and_then(|p| usize::try_from(p).ok())
            .unwrap_or(4096)
    }

    /// An anonymous private mapping owned by this value alone.
    pub(super) struct Mem {
        ptr: NonNull<u8>,
        len: usize,
        locked: bool,
    }

    // SAFETY: `Mem` owns its mapping exclusively (no aliasing pointers are
    // handed out beyond borrows of `self`), like a `Box<[u8]>`.
    unsafe impl Send for Mem {}
    unsafe impl Sync for Mem {}

    impl Mem {
        pub(super) fn empty() -> Self {
            Mem {
                ptr: NonNull::dangling(),
                len: 0,
                locked: false,
            }
        }

        /// Maps `len` (a multiple of the page size, > 0) zeroed bytes and
        /// locks them.
        pub(super) fn map(len: usize) -> Result<Self, NoMemory> {
            let size = NonZeroUsize::new(len).ok_or(NoMemory)?;
            super::reserve(len)?;
            // SAFETY: a new anonymous private mapping at an address the
            // kernel chooses; nothing else refers to it.
            let ptr = unsafe {
                mman::mmap_anonymous(
                    None,
                    size,
                    ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                    MapFlags::MAP_PRIVATE,
                )
            }
            .map_err(|_| {
                super::release(len);
                NoMemory
            })?;
            // From here dropping `mem` unmaps it and gives the bytes back.
            let mut mem = Mem {
                ptr: ptr.cast(),
                len,
                locked: false,
            };
            // SAFETY: `ptr..ptr+len` is the mapping made above.
            match unsafe { mman::mlock(ptr, len) } {
                Ok(()) => mem.locked = true,
                Err(e) => super::lock_failed(e)?, // `mem` is unmapped on return
            }
            Ok(mem)
        }

        pub(super) fn len(&self) -> usize {
            self.len
        }

        pub(super) fn locked(&self) -> bool {
            self.locked
        }

        pub(super) fn bytes(&self) -> &[u8] {
            // SAFETY: the mapping is `len` readable bytes, alive as long
            // as `self`; an empty `Mem` gives an empty slice.
            unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
        }

        pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
            // SAFETY: as in `bytes`, and `&mut self` makes it exclusive.
            unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
        }
    }

    impl Drop for Mem {
        fn drop(&mut self) {
            if self.len == 0 {
                return;
            }
            let ptr = self.ptr.cast();
            // SAFETY: the range is this value's own mapping, no longer
            // borrowed; unmapping also unlocks it.
            unsafe {
                if self.locked {
                    let _ = mman::munlock(ptr, self.len);
                }
                let _ = mman::munmap(ptr, self.len);
            }
            super::release(self.len);
        }
    }
}

#[cfg(not(unix))]
mod imp {
    use super::NoMemory;

    pub(super) fn page_size() -> usize {
        4096
    }

    /// Heap memory, not locked (no mlock here): the daemon warns once.
    pub(super) struct Mem {
        buf: Box<[u8]>,
    }

    impl Mem {
        pub(super) fn empty() -> Self {
            Mem {
                buf: Box::default(),
            }
        }

        pub(super) fn map(len: usize) -> Result<Self, NoMemory> {
            super::lock_failed("memory locking is not implemented on this platform")?;
            Ok(Mem {
                buf: vec![0; len].into_boxed_slice(),
            })
        }

        pub(super) fn len(&self) -> usize {
            self.buf.len()
        }

        pub(super) fn locked(&self) -> bool {
            false
        }

        pub(super) fn bytes(&self) -> &[u8] {
            &self.buf
        }

        pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
            &mut self.buf
        }
    }
}

/// Test hook: a test names one region it wants watched, and the drop of that
/// region (and no other) records whether all its bytes were zero at the
/// point it is unlocked. Keyed by region, so tests running in parallel and
/// dropping their own regions cannot answer for each other.
#[cfg(test)]
pub(crate) mod wipe_watch {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    use super::Region;

    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    /// Watched buffer id -> `None` while alive, `Some(all zero)` once dropped.
    static WATCHED: Mutex<BTreeMap<u64, Option<bool>>> = Mutex::new(BTreeMap::new());

    /// What became of a watched buffer.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Fate {
        /// Not dropped (yet).
        Alive,
        /// Dropped; every byte of its allocation was zero before the unlock.
        Wiped,
        /// Dropped with a non-zero byte left in it.
        Dirty,
    }

    pub(super) fn next_id() -> u64 {
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    }

    fn with<R>(f: impl FnOnce(&mut BTreeMap<u64, Option<bool>>) -> R) -> R {
        f(&mut WATCHED.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Starts watching `buf`; returns the id to ask [`fate`] about.
    pub(crate) fn watch(region: &Region) -> u64 {
        with(|m| m.insert(region.id, None));
        region.id
    }

    /// Called by `Region::drop` after the wipe, before the pages are
    /// unlocked, pooled or unmapped.
    pub(super) fn observe(region: &Region) {
        with(|m| {
            if let Some(slot) = m.get_mut(&region.id) {
                *slot = Some(region.bytes().iter().all(|&b| b == 0));
            }
        });
    }

    /// What happened to watched buffer `id` (watching it ends once dropped).
    pub(crate) fn fate(id: u64) -> Fate {
        with(|m| match m.get(&id).copied().flatten() {
            None => Fate::Alive,
            Some(clean) => {
                m.remove(&id);
                if clean {
                    Fate::Wiped
                } else {
                    Fate::Dirty
                }
            }
        })
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn regions_are_page_aligned_locked_and_reused_wiped() {
        let page = imp::page_size();
        let mut a = Region::new(10).unwrap();
        assert_eq!(a.len(), page);
        assert_eq!(a.bytes().as_ptr() as usize % page, 0);
        assert!(
            a.locked(),
            "tests run as root, or with room under the memlock limit"
        );
        a.bytes_mut()[..5].copy_from_slice(b"plain");
        let at = a.bytes().as_ptr() as usize;
        drop(a);
        // The next region of that class may be the same pages: wiped.
        let b = Region::new(page).unwrap();
        if b.bytes().as_ptr() as usize == at {
            assert!(b.bytes().iter().all(|&x| x == 0));
        }
        assert_eq!(Region::new(page + 1).unwrap().len(), 2 * page);
        assert_eq!(Region::new(0).unwrap().len(), 0);
    }
}
