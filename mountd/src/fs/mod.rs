//! What the mount means, independent of FUSE or WinFsp: the tree of scopes
//! and keys, the per-request permission decisions, open file handles, and
//! the audit trail. Adapters (`fuse.rs`, `winfsp/`) only translate.
//!
//! ```text
//! /                      root
//! /global/<key>          VaultScope::Global
//! /principal/<id>/<key>  VaultScope::Principal
//! /session/<id>/<key>    VaultScope::Session
//! /templates/<name>      a template (sealfs::template), rendered on open
//! ```
//!
//! Lookup, getattr and readdir read only the index; a value is decrypted
//! only by `open`, into a buffer owned by that handle and wiped on release.
//! Templates are the exception: to know who may see one, lookup and
//! readdir need its refs, read from the template itself (never a value)
//! once per stored version of it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use sealfs::audit::{AuditLog, Caller, Event};
use sealfs::{Chain, ErrorKind, SecretStore, StoreError, VaultRef, VaultScope};

use crate::policy::{Access, Policy, Rules, Who};

mod handles;
mod inodes;
mod namespace;
mod templates;

use handles::{Counted, Handle};
use inodes::Inodes;
pub use inodes::{Node, ScopeKind};
pub use namespace::{DirEntry, Listing};

pub const ROOT_INO: u64 = 1;
const GLOBAL_INO: u64 = 2;
const PRINCIPAL_INO: u64 = 3;
const SESSION_INO: u64 = 4;
const TEMPLATES_INO: u64 = 5;
/// The last of the inodes that always exist.
const LAST_FIXED_INO: u64 = TEMPLATES_INO;

/// Why an operation failed; adapters map these to errno or NTSTATUS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("permission denied")]
    Denied,
    #[error("read-only file system")]
    ReadOnly,
    #[error("value too large")]
    TooLarge,
    #[error("invalid argument")]
    Invalid,
    #[error("file exists")]
    Exists,
    #[error("directory not empty")]
    NotEmpty,
    #[error("operation not permitted")]
    NotPermitted,
    #[error("is a directory")]
    IsDir,
    #[error("not a directory")]
    NotDir,
    #[error("bad file handle")]
    BadHandle,
    #[error("input/output error")]
    Io,
    #[error("too many open files")]
    TooManyOpen,
    #[error("disk quota exceeded")]
    Quota,
    #[error("no space left on device")]
    NoSpace,
    #[error("cannot allocate memory")]
    NoMemory,
    #[error("too many open files in system")]
    TooManyOpenInSystem,
}

impl FsError {
    /// The errno name, for the audit log.
    pub fn name(self) -> &'static str {
        match self {
            FsError::NotFound => "ENOENT",
            FsError::Denied => "EACCES",
            FsError::ReadOnly => "EROFS",
            FsError::TooLarge => "EFBIG",
            FsError::Invalid => "EINVAL",
            FsError::Exists => "EEXIST",
            FsError::NotEmpty => "ENOTEMPTY",
            FsError::NotPermitted => "EPERM",
            FsError::IsDir => "EISDIR",
            FsError::NotDir => "ENOTDIR",
            FsError::BadHandle => "EBADF",
            FsError::Io => "EIO",
            FsError::TooManyOpen => "EMFILE",
            FsError::Quota => "EDQUOT",
            FsError::NoSpace => "ENOSPC",
            FsError::NoMemory => "ENOMEM",
            FsError::TooManyOpenInSystem => "ENFILE",
        }
    }
}

/// The one mapping of a store error to what the caller sees; anything
/// unexpected is logged (with its causes) and answered EIO.
fn from_store(e: &StoreError) -> FsError {
    match e.kind() {
        ErrorKind::NotFound => FsError::NotFound,
        ErrorKind::TooLarge => FsError::TooLarge,
        ErrorKind::InvalidInput => FsError::Invalid,
        ErrorKind::Exists => FsError::Exists,
        ErrorKind::NotEmpty => FsError::NotEmpty,
        ErrorKind::Unsupported => FsError::NotPermitted,
        ErrorKind::Denied => FsError::Denied,
        _ => {
            tracing::error!(error = %Chain(e), "vault operation failed");
            FsError::Io
        }
    }
}

/// An open directory: its listing, and the uid whose handle slot it holds
/// (none for root and the vault owner).
type OpenDir = (Arc<Listing>, Option<u32>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Directory,
    File,
}

/// Attributes as the caller sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: FileKind,
    pub size: u64,
    pub mtime: SystemTime,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    /// Not to be cached by the kernel at all (a template's size is its
    /// rendering's, known only once a handle has rendered it).
    pub uncached: bool,
}

/// How a file is being opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenMode {
    pub read: bool,
    pub write: bool,
    pub truncate: bool,
    pub append: bool,
    /// `O_EXCL` with `O_CREAT`: the first commit stores only if no secret
    /// has appeared under the name meanwhile (another host, another
    /// process); else that close fails with `EEXIST`.
    pub exclusive: bool,
}

/// What `access(2)` asks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccessMask {
    pub read: bool,
    pub write: bool,
    pub execute: bool,
}

/// Mount-wide settings.
#[derive(Debug, Clone)]
pub struct Options {
    pub read_only: bool,
    pub max_value_size: usize,
    /// Open file and directory handles one uid may hold (root and the
    /// vault owner are not limited); over it, `EMFILE`.
    pub max_handles_per_uid: usize,
    /// Open handles all those uids together may hold (a user with many
    /// uids, e.g. a subordinate-id range, gets one set of per-uid caps per
    /// uid; this bounds the daemon); over it, `ENFILE`.
    pub max_handles: usize,
    /// Sessions one uid may have created through the mount; over it,
    /// `EDQUOT`.
    pub max_sessions_per_uid: usize,
    /// Secrets in the sessions one uid created; over it, `EDQUOT`.
    pub max_session_secrets_per_uid: usize,
    /// Bytes of values in the sessions one uid created; over it, `ENOSPC`.
    pub max_session_bytes_per_uid: u64,
    /// How long a session made with `mkdir` lasts (where the store keeps
    /// lifetimes: the local vault).
    pub session_ttl: Duration,
}

/// [`Options::session_ttl`] unless told otherwise: a working day and then
/// some, so a session made in the morning is there for the day's runs.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(24 * 3600);

impl Default for Options {
    fn default() -> Self {
        Options {
            read_only: false,
            max_value_size: sealfs::DEFAULT_MAX_VALUE_SIZE,
            max_handles_per_uid: 64,
            max_handles: 4096,
            max_sessions_per_uid: 32,
            max_session_secrets_per_uid: 256,
            max_session_bytes_per_uid: 4 << 20,
            session_ttl: DEFAULT_SESSION_TTL,
        }
    }
}

/// The file system. `Send + Sync`: adapters call it from many threads.
pub struct SealFs {
    vault: Counted,
    rules: Rules,
    policy: RwLock<Arc<Policy>>,
    audit: AuditLog,
    opts: Options,
    inodes: Mutex<Inodes>,
    handles: Mutex<HashMap<u64, Arc<Mutex<Handle>>>>,
    /// Open handles per uid (not counted for root and the vault owner),
    /// and their total.
    handles_by_uid: Mutex<(HashMap<u32, usize>, usize)>,
    /// Open handles per inode: at the last close, the adapter drops what
    /// the kernel may have cached of it.
    handles_by_ino: Mutex<HashMap<u64, usize>>,
    /// Inodes with a read that may have filled the kernel's page cache (a
    /// mapping's faults, readahead): dropped from it at their last close.
    cached_inos: Mutex<std::collections::HashSet<u64>>,
    /// Each template's refs, by name, with the version and time of the
    /// template they were read from: lookup, getattr, access and readdir
    /// decide who sees a template from these, decrypting it only when it
    /// has changed.
    template_refs: Mutex<HashMap<sealfs::SecretKey, templates::Known>>,
    /// Listings taken at opendir, served in pieces by readdir: a large
    /// scope is read from the index once per `ls`, not once per piece.
    dirs: Mutex<HashMap<u64, OpenDir>>,
    next_fh: AtomicU64,
    mounted_at: SystemTime,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

type Result<T> = std::result::Result<T, FsError>;

impl SealFs {
    pub fn new(
        vault: Arc<dyn SecretStore>,
        owner_uid: u32,
        policy: Policy,
        audit: AuditLog,
        opts: Options,
    ) -> Self {
        SealFs {
            vault: Counted {
                inner: vault,
                decrypts: AtomicU64::new(0),
            },
            rules: Rules::new(owner_uid),
            policy: RwLock::new(Arc::new(policy)),
            audit,
            opts,
            inodes: Mutex::new(Inodes::new()),
            handles: Mutex::new(HashMap::new()),
            handles_by_uid: Mutex::new((HashMap::new(), 0)),
            handles_by_ino: Mutex::new(HashMap::new()),
            cached_inos: Mutex::new(std::collections::HashSet::new()),
            template_refs: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            mounted_at: SystemTime::now(),
        }
    }

    /// The store, counting what it decrypts like every other use.
    pub fn vault(&self) -> &dyn SecretStore {
        &self.vault
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Replaces the policy (SIGHUP). Takes effect on the next request.
    pub fn set_policy(&self, policy: Policy) {
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
        self.rules.forget_names();
    }

    /// Audits a policy reload (`failure`: why it failed, so only the
    /// built-in rules now apply).
    pub fn record_policy_reload(&self, path: &std::path::Path, failure: Option<&str>) {
        let event = Event::new(
            "mount",
            "policy-reload",
            path.display().to_string(),
            Caller::current(),
        );
        self.record(match failure {
            None => event,
            Some(why) => event.failed(why),
        });
    }

    /// Writes folded audit records whose window has ended (called a few
    /// times a second by the daemon).
    pub fn audit_tick(&self) {
        self.audit.tick();
    }

    /// Removes expired secrets and sessions, if any has expired (called
    /// every few seconds by the daemon, so one is gone from the vault
    /// directory within a minute of its end even if nothing writes).
    pub fn sweep_expired(&self) {
        if let Err(e) = self.vault.sweep_expired() {
            tracing::warn!(error = %sealfs::Chain(&e), "could not remove expired secrets; trying again later");
        }
    }

    /// How many file handles are open (each owns a plaintext buffer).
    pub fn open_handles(&self) -> usize {
        lock(&self.handles).len()
    }

    /// How many values the store was asked to decrypt since the mount
    /// started (reads, and renames, which re-seal).
    pub fn decryptions(&self) -> u64 {
        self.vault.decrypts.load(Ordering::Relaxed)
    }

    fn record(&self, event: Event) {
        self.audit.record(&event);
    }

    fn event(&self, c: &Caller, op: &str, target: impl Into<String>) -> Event {
        Event::new("mount", op, target, *c)
    }

    /// Records a denial and returns `err`.
    fn deny<T>(&self, c: &Caller, op: &str, target: impl Into<String>, err: FsError) -> Result<T> {
        self.record(self.event(c, op, target).denied(err.name()));
        Err(err)
    }

    fn node(&self, ino: u64) -> Result<Node> {
        lock(&self.inodes).node(ino).ok_or(FsError::NotFound)
    }

    fn ino(&self, node: Node) -> u64 {
        lock(&self.inodes).ino(node)
    }

    /// What `c` may do in `scope`, decided now.
    fn access(&self, c: &Caller, scope: &VaultScope) -> Result<Access> {
        // sealfs's own secrets: never through the mount, not even to root.
        if scope.is_reserved() {
            return Ok(Access::None);
        }
        if self.rules.is_admin(c.uid) {
            return Ok(Access::ReadWrite);
        }
        let owner = match scope {
            VaultScope::Session(_) => self
                .vault
                .scope(scope)
                .map_err(|e| from_store(&e))?
                .and_then(|s| s.owner_uid),
            _ => None,
        };
        Ok(self.with_who(c, |policy, who| {
            self.rules.access(policy, who, scope, owner)
        }))
    }

    /// Runs `f` with the policy in force and the caller as the rules see it
    /// (supplementary groups looked up only when a grant names a group).
    fn with_who<T>(&self, c: &Caller, f: impl FnOnce(&Policy, &Who<'_>) -> T) -> T {
        let policy = Arc::clone(&self.policy.read().unwrap_or_else(|e| e.into_inner()));
        let groups = if policy.uses_groups() {
            supplementary_groups(c.pid)
        } else {
            Vec::new()
        };
        let who = Who {
            uid: c.uid,
            gid: c.gid,
            groups: &groups,
        };
        f(&policy, &who)
    }

    fn check_writable(&self) -> Result<()> {
        if self.opts.read_only {
            Err(FsError::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// Access for a write to `scope`: EROFS on a read-only mount, ENOENT if
    /// the caller cannot even see the scope, EACCES if it can only read.
    fn require_write(&self, c: &Caller, op: &str, target: &str, scope: &VaultScope) -> Result<()> {
        self.check_writable()?;
        match self.access(c, scope)? {
            Access::ReadWrite | Access::Create => Ok(()),
            Access::Read => self.deny(c, op, target, FsError::Denied),
            Access::None => self.deny(c, op, target, FsError::NotFound),
        }
    }

    fn dir_attr(&self, ino: u64, perm: u16, uid: u32, gid: u32) -> Attr {
        Attr {
            ino,
            kind: FileKind::Directory,
            size: 0,
            mtime: self.mounted_at,
            perm,
            uid,
            gid,
            nlink: 2,
            uncached: false,
        }
    }

    /// Directories of the tree: root-owned 0755, except scope directories,
    /// which belong to the caller (0700, or 0500 when read-only to them).
    fn scope_dir_attr(&self, c: &Caller, ino: u64, access: Access) -> Attr {
        let perm = if access.can_write() && !self.opts.read_only {
            0o700
        } else {
            0o500
        };
        self.dir_attr(ino, perm, c.uid, c.gid)
    }

    fn file_attr(
        &self,
        c: &Caller,
        ino: u64,
        size: u64,
        mtime: SystemTime,
        access: Access,
    ) -> Attr {
        // Owned by the caller and private, so ssh, libpq, gpg and netrc
        // readers accept the file as it is.
        let perm = if access.can_write() && !self.opts.read_only {
            0o600
        } else {
            0o400
        };
        Attr {
            ino,
            kind: FileKind::File,
            size,
            mtime,
            perm,
            uid: c.uid,
            gid: c.gid,
            nlink: 1,
            uncached: false,
        }
    }

    /// Attributes of the secret `r` (inode `ino`) for `c`, who may read it:
    /// from the index, or from a handle that is creating it.
    /// `by_name`: a lookup, which sees a secret being created but not one
    /// that is gone while a handle still holds it open (as an unlinked file
    /// keeps working through its descriptor but has no name).
    fn secret_attr(
        &self,
        c: &Caller,
        ino: u64,
        r: &VaultRef,
        access: Access,
        by_name: bool,
    ) -> Result<Attr> {
        if let Some(e) = self.vault.entry(r).map_err(|e| from_store(&e))? {
            return Ok(self.file_attr(c, ino, e.len, e.updated, access));
        }
        // Not in the index: being created, or a read-once secret consumed by
        // an open that is still in progress (cat's fstat must still work).
        let handles = lock(&self.handles);
        for h in handles.values() {
            let h = lock(h);
            if h.ino == ino && (h.created || !by_name) {
                return Ok(self.file_attr(c, ino, h.buf.len() as u64, SystemTime::now(), access));
            }
        }
        Err(FsError::NotFound)
    }

    fn scope_exists(&self, scope: &VaultScope) -> Result<bool> {
        Ok(self
            .vault
            .scope(scope)
            .map_err(|e| from_store(&e))?
            .is_some())
    }
}

/// The supplementary groups of process `pid`, from /proc.
fn supplementary_groups(pid: u32) -> Vec<u32> {
    #[cfg(target_os = "linux")]
    {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            return Vec::new();
        };
        status
            .lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .map(|g| {
                g.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memlock::wipe_watch::{self, Fate};
    use sealfs::SensitiveBytes;
    use sealfs::VaultConfig;

    const ROOT: Caller = Caller {
        uid: 0,
        gid: 0,
        pid: 1,
    };

    fn fs() -> (tempfile::TempDir, SealFs) {
        let dir = tempfile::tempdir().unwrap();
        let vault = sealfs::Vault::open(VaultConfig::new(dir.path().join("vault"))).unwrap();
        let audit = AuditLog::open(&dir.path().join("audit.log")).unwrap();
        let opts = Options {
            read_only: false,
            max_value_size: 1024,
            ..Options::default()
        };
        (
            dir,
            SealFs::new(Arc::new(vault), 1, Policy::default(), audit, opts),
        )
    }

    /// The value the vault holds for `r` now.
    fn stored(fs: &SealFs, r: &str) -> Vec<u8> {
        fs.vault()
            .read(&r.parse().unwrap())
            .unwrap()
            .0
            .expose()
            .to_vec()
    }

    fn put(fs: &SealFs, r: &str, v: &[u8]) {
        fs.vault()
            .put(&r.parse().unwrap(), SensitiveBytes::from_slice(v))
            .unwrap();
    }

    /// Watches the plaintext buffer of handle `fh` (`buffer::wipe_watch`).
    fn watch_buffer(fs: &SealFs, fh: u64) -> u64 {
        let h = fs.handle(fh).unwrap();
        let h = lock(&h);
        wipe_watch::watch(h.buf.region())
    }

    #[test]
    fn only_open_decrypts_and_release_drops_the_buffer() {
        let (_dir, fs) = fs();
        put(&fs, "global/a", b"alpha");
        put(&fs, "principal:bob/b", b"beta");
        let global = fs.lookup(&ROOT, ROOT_INO, "global").unwrap();
        let a = fs.lookup(&ROOT, global.ino, "a").unwrap();
        assert_eq!(a.size, 5);
        fs.getattr(&ROOT, a.ino).unwrap();
        for ino in [ROOT_INO, global.ino, PRINCIPAL_INO] {
            fs.readdir(&ROOT, ino).unwrap();
        }
        assert_eq!(fs.decryptions(), 0);
        let read = OpenMode {
            read: true,
            ..OpenMode::default()
        };
        let fh = fs.open(&ROOT, a.ino, read).unwrap();
        assert_eq!(fs.decryptions(), 1);
        assert_eq!(fs.open_handles(), 1);
        let buffer = watch_buffer(&fs, fh);
        assert_eq!(fs.read(fh, 1, 3, true, |b| b.to_vec()).unwrap(), b"lph");
        assert_eq!(fs.read(fh, 9, 3, true, |b| b.to_vec()).unwrap(), b"");
        assert_eq!(wipe_watch::fate(buffer), Fate::Alive);
        fs.release(fh).unwrap();
        assert_eq!(fs.open_handles(), 0);
        assert_eq!(
            wipe_watch::fate(buffer),
            Fate::Wiped,
            "release drops this handle's buffer, all zeros before it is unlocked"
        );
        assert_eq!(
            fs.read(fh, 0, 5, true, |b| b.len()),
            Err(FsError::BadHandle)
        );

        // A write-open decrypts once to keep the current value; a truncating
        // one needs none; committing seals without decrypting.
        let write = OpenMode {
            write: true,
            ..OpenMode::default()
        };
        let fh = fs.open(&ROOT, a.ino, write).unwrap();
        assert_eq!(fs.decryptions(), 2);
        let buffer = watch_buffer(&fs, fh);
        fs.write(fh, 5, b"!").unwrap();
        fs.release(fh).unwrap();
        assert_eq!(wipe_watch::fate(buffer), Fate::Wiped);
        let truncate = OpenMode {
            write: true,
            truncate: true,
            ..OpenMode::default()
        };
        let fh = fs.open(&ROOT, a.ino, truncate).unwrap();
        fs.write(fh, 0, b"x").unwrap();
        fs.release(fh).unwrap();
        assert_eq!(fs.decryptions(), 2);
    }

    #[test]
    fn forgotten_inodes_are_dropped_and_remembered_ones_kept() {
        const N: usize = 50;
        let (_dir, fs) = fs();
        for i in 0..N {
            put(&fs, &format!("global/k{i}"), b"v");
        }
        put(&fs, "principal:bob/b", b"beta");
        let baseline = fs.inode_count();
        let mut inos: Vec<u64> = (0..N)
            .map(|i| fs.lookup(&ROOT, GLOBAL_INO, &format!("k{i}")).unwrap().ino)
            .collect();
        inos.push(fs.lookup(&ROOT, PRINCIPAL_INO, "bob").unwrap().ino);
        assert_eq!(fs.inode_count(), baseline + N + 1);
        for &ino in &inos {
            fs.forget(ino, 1);
        }
        assert_eq!(fs.inode_count(), baseline, "every forgotten inode dropped");
        assert_eq!(fs.getattr(&ROOT, inos[0]), Err(FsError::NotFound));

        // Three lookups of one name: forgetting two keeps the inode.
        let ino = fs.lookup(&ROOT, GLOBAL_INO, "k0").unwrap().ino;
        for _ in 0..2 {
            assert_eq!(fs.lookup(&ROOT, GLOBAL_INO, "k0").unwrap().ino, ino);
        }
        fs.forget(ino, 2);
        assert_eq!(fs.inode_count(), baseline + 1, "one lookup still held");
        assert_eq!(fs.getattr(&ROOT, ino).unwrap().size, 1);
        fs.forget(ino, 1);
        assert_eq!(fs.inode_count(), baseline);

        // The fixed inodes stay whatever the kernel says.
        for ino in [ROOT_INO, GLOBAL_INO, PRINCIPAL_INO, SESSION_INO] {
            fs.forget(ino, 1);
        }
        assert_eq!(fs.inode_count(), baseline);
        fs.getattr(&ROOT, GLOBAL_INO).unwrap();

        // Failed lookups (`test -e missing`) leave no inode behind.
        for i in 0..N {
            assert_eq!(
                fs.lookup(&ROOT, GLOBAL_INO, &format!("missing{i}")),
                Err(FsError::NotFound)
            );
        }
        assert_eq!(fs.inode_count(), baseline, "failed lookups kept inodes");
    }

    #[test]
    fn writes_become_visible_on_flush_and_failed_writes_commit_nothing() {
        let (_dir, fs) = fs();
        put(&fs, "global/k", b"old");
        let k = fs.lookup(&ROOT, GLOBAL_INO, "k").unwrap();
        let write = OpenMode {
            write: true,
            truncate: true,
            ..OpenMode::default()
        };
        let fh = fs.open(&ROOT, k.ino, write).unwrap();
        fs.write(fh, 0, b"new").unwrap();
        assert_eq!(stored(&fs, "global/k"), b"old");
        fs.flush(fh).unwrap();
        assert_eq!(stored(&fs, "global/k"), b"new");
        fs.release(fh).unwrap();

        let fh = fs.open(&ROOT, k.ino, write).unwrap();
        fs.write(fh, 0, &[b'x'; 1000]).unwrap();
        assert_eq!(fs.write(fh, 1000, &[b'x'; 100]), Err(FsError::TooLarge));
        assert_eq!(fs.release(fh), Err(FsError::TooLarge));
        assert_eq!(stored(&fs, "global/k"), b"new");

        let (attr, fh) = fs.create(&ROOT, GLOBAL_INO, "fresh", write).unwrap();
        assert_eq!(
            fs.getattr(&ROOT, attr.ino).unwrap().size,
            0,
            "visible while being created"
        );
        fs.write(fh, 0, b"v").unwrap();
        fs.release(fh).unwrap();
        assert_eq!(fs.getattr(&ROOT, attr.ino).unwrap().size, 1);
        assert_eq!(
            fs.create(&ROOT, GLOBAL_INO, "Bad", write).unwrap_err(),
            FsError::Invalid
        );
    }

    #[test]
    fn callers_without_grants_see_nothing() {
        let (_dir, fs) = fs();
        put(&fs, "global/a", b"alpha");
        let stranger = Caller {
            uid: 1234,
            gid: 1234,
            pid: 1,
        };
        assert_eq!(
            fs.lookup(&stranger, ROOT_INO, "global").unwrap_err(),
            FsError::NotFound
        );
        let names: Vec<String> = fs
            .readdir(&stranger, ROOT_INO)
            .unwrap()
            .iter()
            .map(|e| e.name.to_owned())
            .collect();
        assert_eq!(names, [".", "..", "principal", "session", "templates"]);
        assert_eq!(
            fs.getattr(&stranger, GLOBAL_INO).unwrap_err(),
            FsError::NotFound
        );
        let owner = Caller {
            uid: 1,
            gid: 1,
            pid: 1,
        };
        assert_eq!(fs.lookup(&owner, GLOBAL_INO, "a").unwrap().uid, 1);
    }

    #[test]
    fn only_reads_that_may_fill_the_page_cache_leave_pages_to_drop() {
        let (_dir, fs) = fs();
        put(&fs, "global/a", b"alpha");
        let global = fs.lookup(&ROOT, ROOT_INO, "global").unwrap();
        let a = fs.lookup(&ROOT, global.ino, "a").unwrap();
        let read = OpenMode {
            read: true,
            ..OpenMode::default()
        };
        // A caller's read(2) of a whole page, direct I/O: nothing cached.
        let fh = fs.open(&ROOT, a.ino, read).unwrap();
        fs.read(fh, 0, 4096, true, |b| b.len()).unwrap();
        fs.release(fh).unwrap();
        assert!(!fs.take_cached(a.ino));
        // A read that may fill the page cache, whatever its shape (the
        // kernel's size may be older than the value): dropped at the last
        // close, not before.
        let fh = fs.open(&ROOT, a.ino, read).unwrap();
        let other = fs.open(&ROOT, a.ino, read).unwrap();
        fs.read(fh, 0, 3 * 4096, false, |b| b.len()).unwrap();
        fs.release(fh).unwrap();
        assert!(!fs.take_cached(a.ino), "another handle is still open");
        fs.release(other).unwrap();
        assert!(fs.take_cached(a.ino));
        assert!(!fs.take_cached(a.ino), "asked once");
    }

    #[test]
    fn a_listing_packs_names_and_gives_each_back_whole() {
        let (_d, fs) = fs();
        for k in ["b", "a", "ccc", "dd"] {
            put(&fs, &format!("global/{k}"), b"v");
        }
        let global = fs.lookup(&ROOT, ROOT_INO, "global").unwrap();
        let seen = fs.lookup(&ROOT, global.ino, "dd").unwrap();
        let listing = fs.readdir(&ROOT, global.ino).unwrap();
        let names: Vec<&str> = listing.iter().map(|e| e.name).collect();
        assert_eq!(names, [".", "..", "a", "b", "ccc", "dd"]);
        assert_eq!(listing.len(), 6);
        // Looked-up names keep their inode; the others get a stand-in.
        assert_eq!(listing.get(5).unwrap().ino, seen.ino);
        assert_eq!(listing.get(2).unwrap().ino, u64::MAX);
        assert_eq!(listing.get(0).unwrap().ino, global.ino);
        assert_eq!(listing.get(1).unwrap().ino, ROOT_INO);
        assert!(listing.get(6).is_none());
    }
}
