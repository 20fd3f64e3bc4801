//! `mlock`/`munlock` of plaintext buffers: the one place this crate uses
//! `unsafe`. A failure (memlock limit reached) is reported once as a
//! warning; the buffer still works, it may just be swapped.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};

static WARNED: AtomicBool = AtomicBool::new(false);

/// Locks the pages of `buf` into RAM; `false` if that was not possible.
pub fn lock(buf: &[u8]) -> bool {
    if buf.is_empty() {
        return false;
    }
    #[cfg(unix)]
    {
        let ptr = std::ptr::NonNull::from(buf).cast::<std::ffi::c_void>();
        // SAFETY: `ptr..ptr+len` is a live allocation owned by the caller for
        // as long as it stays locked; mlock only changes paging attributes.
        match unsafe { nix::sys::mman::mlock(ptr, buf.len()) } {
            Ok(()) => true,
            Err(e) => {
                if !WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "cannot lock plaintext buffers in memory (raise RLIMIT_MEMLOCK); continuing unlocked");
                }
                false
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = &WARNED;
        false
    }
}

/// Undoes [`lock`].
pub fn unlock(buf: &[u8]) {
    if buf.is_empty() {
        return;
    }
    #[cfg(unix)]
    {
        let ptr = std::ptr::NonNull::from(buf).cast::<std::ffi::c_void>();
        // SAFETY: as in `lock`; the range was locked by `lock`.
        let _ = unsafe { nix::sys::mman::munlock(ptr, buf.len()) };
    }
}
