//! `mlock`/`munlock` of plaintext buffers: the one place this crate uses
//! `unsafe`. A failure (memlock limit reached) is reported once as a
//! warning; the buffer still works, it may just be swapped.
#![allow(unsafe_code)]

#[cfg(unix)]
static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

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
                if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(error = %e, "cannot lock plaintext buffers in memory (raise RLIMIT_MEMLOCK); continuing unlocked");
                }
                false
            }
        }
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// Undoes [`lock`].
pub fn unlock(buf: &[u8]) {
    #[cfg(unix)]
    if !buf.is_empty() {
        let ptr = std::ptr::NonNull::from(buf).cast::<std::ffi::c_void>();
        // SAFETY: as in `lock`; the range was locked by `lock`.
        let _ = unsafe { nix::sys::mman::munlock(ptr, buf.len()) };
    }
    #[cfg(not(unix))]
    let _ = buf;
}
