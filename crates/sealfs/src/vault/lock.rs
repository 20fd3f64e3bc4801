//! The exclusive writer lock of a vault directory.

use std::fs::File;
use std::time::{Duration, Instant};

use super::{io, VaultError, LOCK_FILE};
use crate::fsutil;

/// The exclusive writer lock of a vault, released on drop (and by the kernel
/// if the process dies).
pub(super) struct WriteLock(
    #[expect(dead_code, reason = "held for its drop, which releases the lock")] File,
);

/// Takes the writer lock, waiting at most `timeout` for another holder.
pub(super) fn write_lock(
    dir: &fsutil::PrivateDir,
    timeout: Duration,
) -> Result<WriteLock, VaultError> {
    let path = dir.join(LOCK_FILE);
    let f = dir
        .open_lock_file(LOCK_FILE)
        .map_err(io("open the lock file", &path))?;
    let deadline = Instant::now() + timeout;
    // Writers hold the lock for a commit (a few ms): poll finely, so a
    // waiter gets it about as soon as a blocking lock would.
    let mut pause = Duration::from_micros(20);
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(WriteLock(f)),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(2));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(VaultError::LockTimeout { path, timeout })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("lock", &path)(e)),
        }
    }
}
