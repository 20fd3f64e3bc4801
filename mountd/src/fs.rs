//! What the mount means, independent of FUSE or WinFsp: the tree of scopes
//! and keys, the per-request permission decisions, open file handles, and
//! the audit trail. Adapters (`fuse.rs`, `winfsp.rs`) only translate.
//!
//! ```text
//! /                      root
//! /global/<key>          VaultScope::Global
//! /principal/<id>/<key>  VaultScope::Principal
//! /session/<id>/<key>    VaultScope::Session
//! ```
//!
//! Lookup, getattr and readdir read only the index; a value is decrypted
//! only by `open`, into a buffer owned by that handle and wiped on release.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use sealfs::audit::{AuditLog, Caller, Event};
use sealfs::ScopeId;
use sealfs::{
    Chain, ErrorKind, SecretKey, SecretStore, SensitiveBytes, StoreError, VaultRef, VaultScope,
};

use crate::buffer::{BufError, LockedBuf};
use crate::policy::{Access, Policy, Rules, Who};

pub const ROOT_INO: u64 = 1;
const GLOBAL_INO: u64 = 2;
const PRINCIPAL_INO: u64 = 3;
const SESSION_INO: u64 = 4;

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

/// Whether a READ of `size` bytes at `offset` from content of `len` bytes
/// may be the kernel filling its page cache (a fault of a private `mmap`;
/// reads are otherwise direct I/O): such reads are whole, aligned pages,
/// never past the last page of the file. A direct read can look the same
/// (a false positive costs one invalidation); a page fill never looks
/// otherwise.
fn may_fill_page_cache(offset: u64, size: usize, len: usize) -> bool {
    let page = crate::memlock::page_size() as u64;
    let end = offset.saturating_add(size as u64);
    size > 0
        && len > 0
        && offset.is_multiple_of(page)
        && (size as u64).is_multiple_of(page)
        && end <= (len as u64).div_ceil(page) * page
}

fn buf_error(e: BufError) -> FsError {
    match e {
        BufError::TooLarge => FsError::TooLarge,
        BufError::NoMemory => FsError::NoMemory,
    }
}

/// An open directory: its listing, and the uid whose handle slot it holds
/// (none for root and the vault owner).
type OpenDir = (Arc<Listing>, Option<u32>);

/// One open-handle slot of a uid ([`SealFs::handle_slot`]), given back if
/// dropped before a handle takes it.
struct Slot<'a> {
    fs: &'a SealFs,
    uid: Option<u32>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(uid) = self.uid {
            self.fs.free_slot(uid);
        }
    }
}

/// The two kinds of scope directory under the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScopeKind {
    Principal,
    Session,
}

impl ScopeKind {
    fn name(self) -> &'static str {
        match self {
            ScopeKind::Principal => "principal",
            ScopeKind::Session => "session",
        }
    }

    fn scope(self, id: ScopeId) -> VaultScope {
        match self {
            ScopeKind::Principal => VaultScope::Principal(id),
            ScopeKind::Session => VaultScope::Session(id),
        }
    }

    fn of(scope: &VaultScope) -> Option<Self> {
        match scope {
            VaultScope::Global => None,
            VaultScope::Principal(_) => Some(ScopeKind::Principal),
            VaultScope::Session(_) => Some(ScopeKind::Session),
        }
    }
}

/// What an inode stands for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Node {
    Root,
    Kind(ScopeKind),
    Scope(VaultScope),
    Secret(VaultRef),
}

/// Inode numbers, never reused. The kernel's lookup count of each is kept,
/// and an inode it has forgotten is dropped, so memory stays flat however
/// many names come and go.
struct Inodes {
    by_ino: HashMap<u64, Node>,
    by_node: HashMap<Node, u64>,
    lookups: HashMap<u64, u64>,
    next: u64,
}

impl Inodes {
    fn new() -> Self {
        let mut i = Inodes {
            by_ino: HashMap::new(),
            by_node: HashMap::new(),
            lookups: HashMap::new(),
            next: SESSION_INO + 1,
        };
        for (ino, node) in [
            (ROOT_INO, Node::Root),
            (GLOBAL_INO, Node::Scope(VaultScope::Global)),
            (PRINCIPAL_INO, Node::Kind(ScopeKind::Principal)),
            (SESSION_INO, Node::Kind(ScopeKind::Session)),
        ] {
            i.by_ino.insert(ino, node.clone());
            i.by_node.insert(node, ino);
        }
        i
    }

    fn ino(&mut self, node: Node) -> u64 {
        if let Some(ino) = self.by_node.get(&node) {
            return *ino;
        }
        let ino = self.next;
        self.next += 1;
        self.by_ino.insert(ino, node.clone());
        self.by_node.insert(node, ino);
        ino
    }

    fn node(&self, ino: u64) -> Option<Node> {
        self.by_ino.get(&ino).cloned()
    }

    /// The inode `node` has, or a stand-in number if it has none yet (for
    /// directory listings, which do not count as lookups).
    fn peek(&self, node: &Node) -> u64 {
        self.by_node.get(node).copied().unwrap_or(u64::MAX)
    }

    /// The kernel now holds one more reference (a lookup, create or mkdir
    /// reply).
    fn remember(&mut self, ino: u64) {
        *self.lookups.entry(ino).or_default() += 1;
    }

    /// The kernel dropped `n` references.
    fn forget(&mut self, ino: u64, n: u64) {
        if ino <= SESSION_INO {
            return;
        }
        let left = self.lookups.get(&ino).map_or(0, |c| c.saturating_sub(n));
        if left > 0 {
            self.lookups.insert(ino, left);
            return;
        }
        self.lookups.remove(&ino);
        if let Some(node) = self.by_ino.remove(&ino) {
            self.by_node.remove(&node);
        }
    }

    /// Drops `ino` unless the kernel holds a reference to it.
    fn drop_unreferenced(&mut self, ino: u64) {
        if ino > SESSION_INO && !self.lookups.contains_key(&ino) {
            if let Some(node) = self.by_ino.remove(&ino) {
                self.by_node.remove(&node);
            }
        }
    }

    fn len(&self) -> usize {
        self.by_ino.len()
    }

    /// The inode of `from` now names `to` (what the kernel expects after a
    /// rename); an inode `to` had before is forgotten.
    fn rename(&mut self, from: &Node, to: &Node) {
        if let Some(old) = self.by_node.remove(to) {
            self.by_ino.remove(&old);
        }
        if let Some(ino) = self.by_node.remove(from) {
            self.by_ino.insert(ino, to.clone());
            self.by_node.insert(to.clone(), ino);
        }
    }
}

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
}

/// One entry of a directory listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirEntry<'a> {
    pub ino: u64,
    pub kind: FileKind,
    pub name: &'a str,
}

/// A directory listing, packed: the names share one buffer, so a scope of
/// 100,000 keys costs about 2 MiB while an `ls` reads it, not one
/// allocation per name.
#[derive(Debug, Default)]
pub struct Listing {
    names: String,
    /// Per entry: where its name ends in `names`, its inode, its kind.
    entries: Vec<(usize, u64, FileKind)>,
}

impl Listing {
    fn push(&mut self, ino: u64, kind: FileKind, name: &str) {
        self.names.push_str(name);
        self.entries.push((self.names.len(), ino, kind));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<DirEntry<'_>> {
        let &(end, ino, kind) = self.entries.get(i)?;
        let start = i.checked_sub(1).map_or(0, |p| self.entries[p].0);
        Some(DirEntry {
            ino,
            kind,
            name: &self.names[start..end],
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = DirEntry<'_>> {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

/// How a file is being opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenMode {
    pub read: bool,
    pub write: bool,
    pub truncate: bool,
    pub append: bool,
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
}

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
        }
    }
}

struct Handle {
    ino: u64,
    vault_ref: VaultRef,
    caller: Caller,
    buf: LockedBuf,
    writable: bool,
    append: bool,
    /// Changed since the last commit.
    dirty: bool,
    /// Made by `create`: the secret does not exist until the first commit.
    created: bool,
    /// A write failed (too large): nothing of this handle is committed.
    poisoned: bool,
    /// The secret is read-once, and stays so when this handle commits.
    once: bool,
}

/// The store as [`SealFs`] reaches it, and the only way it does: every
/// request that makes the vault decrypt a value passes here, whatever code
/// path made it, and is counted and logged at debug level (`-v`) with the
/// ref, never the value. The tests count decryptions by this.
struct Counted {
    inner: Arc<dyn SecretStore>,
    decrypts: AtomicU64,
}

impl Counted {
    fn decrypting(&self, op: &'static str, r: &VaultRef) {
        let n = self.decrypts.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::debug!(op, vault_ref = %r, decryptions = n, "decrypting a value");
    }
}

impl SecretStore for Counted {
    fn list(
        &self,
        scope: Option<&VaultScope>,
    ) -> std::result::Result<Vec<sealfs::Entry>, StoreError> {
        self.inner.list(scope)
    }
    fn read(&self, r: &VaultRef) -> std::result::Result<(SensitiveBytes, bool), StoreError> {
        self.decrypting("read", r);
        self.inner.read(r)
    }
    fn entry(&self, r: &VaultRef) -> std::result::Result<Option<sealfs::Entry>, StoreError> {
        self.inner.entry(r)
    }
    fn exists(&self, r: &VaultRef) -> std::result::Result<bool, StoreError> {
        self.inner.exists(r)
    }
    fn for_each_key(
        &self,
        scope: &VaultScope,
        f: &mut dyn FnMut(SecretKey),
    ) -> std::result::Result<(), StoreError> {
        self.inner.for_each_key(scope, f)
    }
    fn scopes(&self) -> std::result::Result<Vec<sealfs::ScopeInfo>, StoreError> {
        self.inner.scopes()
    }
    fn scope(
        &self,
        scope: &VaultScope,
    ) -> std::result::Result<Option<sealfs::ScopeInfo>, StoreError> {
        self.inner.scope(scope)
    }
    fn put_with(
        &self,
        r: &VaultRef,
        value: SensitiveBytes,
        options: sealfs::PutOptions,
    ) -> std::result::Result<sealfs::Entry, StoreError> {
        self.inner.put_with(r, value, options)
    }
    fn delete(&self, r: &VaultRef) -> std::result::Result<(), StoreError> {
        self.inner.delete(r)
    }
    /// The vault re-seals the value for its new name: a decryption too.
    fn rename(
        &self,
        from: &VaultRef,
        to: &VaultRef,
        no_replace: bool,
    ) -> std::result::Result<sealfs::Entry, StoreError> {
        self.decrypting("rename", from);
        self.inner.rename(from, to, no_replace)
    }
    fn create_scope(
        &self,
        scope: &VaultScope,
        owner_uid: Option<u32>,
    ) -> std::result::Result<(), StoreError> {
        self.inner.create_scope(scope, owner_uid)
    }
    fn remove_scope(&self, scope: &VaultScope) -> std::result::Result<(), StoreError> {
        self.inner.remove_scope(scope)
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
    /// private `mmap`): dropped from it at their last close.
    cached_inos: Mutex<std::collections::HashSet<u64>>,
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

    /// Resolves `name` in `parent`. A successful lookup is a reference the
    /// kernel holds until it calls [`SealFs::forget`].
    pub fn lookup(&self, c: &Caller, parent: u64, name: &str) -> Result<Attr> {
        let attr = self.lookup_inner(c, parent, name)?;
        lock(&self.inodes).remember(attr.ino);
        Ok(attr)
    }

    /// The kernel forgot `n` lookups of `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        lock(&self.inodes).forget(ino, n);
    }

    /// How many inodes are known (for memory checks).
    pub fn inode_count(&self) -> usize {
        lock(&self.inodes).len()
    }

    fn lookup_inner(&self, c: &Caller, parent: u64, name: &str) -> Result<Attr> {
        match self.node(parent)? {
            Node::Root => match name {
                "principal" => Ok(self.dir_attr(PRINCIPAL_INO, 0o755, 0, 0)),
                "session" => Ok(self.dir_attr(SESSION_INO, 0o755, 0, 0)),
                "global" => {
                    let access = self.access(c, &VaultScope::Global)?;
                    if !access.can_read() {
                        return self.deny(c, "lookup", "global", FsError::NotFound);
                    }
                    Ok(self.scope_dir_attr(c, GLOBAL_INO, access))
                }
                _ => Err(FsError::NotFound),
            },
            Node::Kind(kind) => {
                let id = ScopeId::new(name).map_err(|_| FsError::NotFound)?;
                let scope = kind.scope(id);
                let exists = self.scope_exists(&scope)?;
                if !exists && self.rules.is_admin(c.uid) {
                    return Err(FsError::NotFound);
                }
                // A scope that does not exist costs an ordinary caller what
                // a hidden one does (an access decision, an audited
                // denial), so timing a lookup does not tell them apart.
                let access = self.access(c, &scope)?;
                if !exists || !access.can_read() {
                    return self.deny(c, "lookup", scope.to_string(), FsError::NotFound);
                }
                let ino = self.ino(Node::Scope(scope));
                Ok(self.scope_dir_attr(c, ino, access))
            }
            Node::Scope(scope) => {
                let key = SecretKey::new(name).map_err(|_| FsError::NotFound)?;
                let r = VaultRef::new(scope.clone(), key);
                let access = self.access(c, &scope)?;
                if !access.can_read() {
                    if self.vault.exists(&r).map_err(|e| from_store(&e))? {
                        return self.deny(c, "lookup", r.to_string(), FsError::NotFound);
                    }
                    return Err(FsError::NotFound);
                }
                let ino = self.ino(Node::Secret(r.clone()));
                let attr = self.secret_attr(c, ino, &r, access, true);
                if attr.is_err() {
                    // A name that is not there gets no inode: the kernel
                    // never holds (or forgets) one for a failed lookup.
                    lock(&self.inodes).drop_unreferenced(ino);
                }
                attr
            }
            Node::Secret(_) => Err(FsError::NotDir),
        }
    }

    pub fn getattr(&self, c: &Caller, ino: u64) -> Result<Attr> {
        match self.node(ino)? {
            Node::Root => Ok(self.dir_attr(ROOT_INO, 0o755, 0, 0)),
            Node::Kind(_) => Ok(self.dir_attr(ino, 0o755, 0, 0)),
            Node::Scope(scope) => {
                let access = self.access(c, &scope)?;
                if !access.can_read() || !self.scope_exists(&scope)? {
                    return Err(FsError::NotFound);
                }
                Ok(self.scope_dir_attr(c, ino, access))
            }
            Node::Secret(r) => {
                let access = self.access(c, r.scope())?;
                if !access.can_read() {
                    return Err(FsError::NotFound);
                }
                self.secret_attr(c, ino, &r, access, false)
            }
        }
    }

    /// The entries `c` may see in directory `ino`, with `.` and `..`.
    pub fn readdir(&self, c: &Caller, ino: u64) -> Result<Listing> {
        let node = self.node(ino)?;
        let mut out = Listing::default();
        let parent = match &node {
            Node::Scope(scope) => match ScopeKind::of(scope) {
                None => ROOT_INO,
                Some(ScopeKind::Principal) => PRINCIPAL_INO,
                Some(ScopeKind::Session) => SESSION_INO,
            },
            _ => ROOT_INO,
        };
        match node {
            Node::Root => {
                out.push(ino, FileKind::Directory, ".");
                out.push(parent, FileKind::Directory, "..");
                if self.access(c, &VaultScope::Global)?.can_read() {
                    out.push(GLOBAL_INO, FileKind::Directory, "global");
                }
                out.push(PRINCIPAL_INO, FileKind::Directory, "principal");
                out.push(SESSION_INO, FileKind::Directory, "session");
            }
            Node::Kind(kind) => {
                out.push(ino, FileKind::Directory, ".");
                out.push(parent, FileKind::Directory, "..");
                for info in self.vault.scopes().map_err(|e| from_store(&e))? {
                    if ScopeKind::of(&info.scope) != Some(kind) || info.scope.is_reserved() {
                        continue;
                    }
                    let readable =
                        self.rules.is_admin(c.uid) || self.access(c, &info.scope)?.can_read();
                    if readable {
                        let name = info
                            .scope
                            .id()
                            .expect("principal and session scopes have ids")
                            .to_string();
                        let ino = self.ino(Node::Scope(info.scope));
                        out.push(ino, FileKind::Directory, &name);
                    }
                }
            }
            Node::Scope(scope) => {
                if !self.access(c, &scope)?.can_read() {
                    return self.deny(c, "readdir", scope.to_string(), FsError::NotFound);
                }
                out.push(ino, FileKind::Directory, ".");
                out.push(parent, FileKind::Directory, "..");
                self.vault
                    .for_each_key(&scope, &mut |key| {
                        // The inodes lock is a leaf, taken only briefly.
                        let node = Node::Secret(VaultRef::new(scope.clone(), key));
                        let ino = lock(&self.inodes).peek(&node);
                        if let Node::Secret(r) = &node {
                            out.push(ino, FileKind::File, r.key().as_str());
                        }
                    })
                    .map_err(|e| from_store(&e))?;
            }
            Node::Secret(_) => return Err(FsError::NotDir),
        }
        Ok(out)
    }

    /// Takes the listing of directory `ino` for `c` once; [`SealFs::listing`]
    /// serves it to each readdir, [`SealFs::releasedir`] drops it.
    /// Takes one of the caller's handle slots: a listing held open is
    /// memory the daemon keeps for it, like a file's buffer.
    pub fn opendir(&self, c: &Caller, ino: u64) -> Result<u64> {
        let slot = self.handle_slot(c, "a directory")?;
        let entries = self.readdir(c, ino)?;
        let uid = slot.uid;
        std::mem::forget(slot); // freed at releasedir
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.dirs).insert(fh, (Arc::new(entries), uid));
        Ok(fh)
    }

    /// The listing of an open directory (the caller skips to its offset).
    pub fn listing(&self, fh: u64) -> Result<Arc<Listing>> {
        lock(&self.dirs)
            .get(&fh)
            .map(|(l, _)| Arc::clone(l))
            .ok_or(FsError::BadHandle)
    }

    pub fn releasedir(&self, fh: u64) {
        let removed = lock(&self.dirs).remove(&fh);
        if let Some((_, Some(uid))) = removed {
            self.free_slot(uid);
        }
    }

    /// Takes one of `c`'s open-handle slots (`EMFILE`, audited, when its
    /// cap is reached); given back when the handle is released, or when
    /// the returned slot is dropped unused.
    fn handle_slot(&self, c: &Caller, target: &str) -> Result<Slot<'_>> {
        if self.rules.is_admin(c.uid) {
            return Ok(Slot {
                fs: self,
                uid: None,
            });
        }
        let refused = {
            let mut guard = lock(&self.handles_by_uid);
            let (counts, total) = &mut *guard;
            let n = counts.entry(c.uid).or_default();
            if *n >= self.opts.max_handles_per_uid {
                FsError::TooManyOpen
            } else if *total >= self.opts.max_handles {
                FsError::TooManyOpenInSystem
            } else {
                *n += 1;
                *total += 1;
                return Ok(Slot {
                    fs: self,
                    uid: Some(c.uid),
                });
            }
        };
        self.deny(c, "open", target, refused)
    }

    fn free_slot(&self, uid: u32) {
        let mut guard = lock(&self.handles_by_uid);
        let (counts, total) = &mut *guard;
        if let Some(n) = counts.get_mut(&uid) {
            *n -= 1;
            *total -= 1;
            if *n == 0 {
                counts.remove(&uid);
            }
        }
    }

    fn new_handle(&self, h: Handle, slot: Slot<'_>) -> u64 {
        std::mem::forget(slot); // now the handle's, freed at release
        *lock(&self.handles_by_ino).entry(h.ino).or_default() += 1;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, Arc::new(Mutex::new(h)));
        fh
    }

    /// A plaintext buffer for `c`'s open of `target`, or `ENOMEM` (audited)
    /// when no locked memory is left.
    fn buffer(
        &self,
        c: &Caller,
        target: &str,
        made: std::result::Result<LockedBuf, crate::memlock::NoMemory>,
    ) -> Result<LockedBuf> {
        made.or_else(|_| self.deny(c, "open", target, FsError::NoMemory))
    }

    fn handle(&self, fh: u64) -> Result<Arc<Mutex<Handle>>> {
        lock(&self.handles)
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle)
    }

    /// Opens secret `ino`. Reading decrypts the value once, into memory
    /// owned by the returned handle.
    pub fn open(&self, c: &Caller, ino: u64, mode: OpenMode) -> Result<u64> {
        let r = match self.node(ino)? {
            Node::Secret(r) => r,
            _ => return Err(FsError::IsDir),
        };
        let target = r.to_string();
        let access = self.access(c, r.scope())?;
        if !access.can_read() {
            return self.deny(c, "open", target, FsError::NotFound);
        }
        if mode.write {
            self.check_writable()?;
            if !access.can_write() {
                return self.deny(c, "open", target, FsError::Denied);
            }
        }
        let slot = self.handle_slot(c, &target)?;
        let writable = mode.write;
        let once = if writable {
            let entry = self.vault.entry(&r).map_err(|e| from_store(&e))?;
            let once = entry.ok_or(FsError::NotFound)?.once;
            if once && !mode.truncate {
                // Reading it to update it would consume it; what a writer
                // stores must stay read-once, so only a replacement (O_TRUNC)
                // is allowed.
                return self.deny(c, "open", target, FsError::NotPermitted);
            }
            once
        } else {
            false
        };
        let buf = if writable {
            let current = if mode.truncate {
                None
            } else {
                match self.vault.read(&r) {
                    Ok((v, consumed)) => {
                        if consumed {
                            self.record(self.event(c, "consume", target.clone()));
                        }
                        Some(v)
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound => return Err(FsError::NotFound),
                    Err(e) => return self.fail(c, "open", target, &e),
                }
            };
            let value = current.as_ref().map_or(&[][..], |v| v.expose());
            self.buffer(
                c,
                &target,
                LockedBuf::with_value(value, self.opts.max_value_size),
            )?
        } else {
            match self.vault.read(&r) {
                Ok((value, consumed)) => {
                    self.record(self.event(
                        c,
                        if consumed { "consume" } else { "open" },
                        target.clone(),
                    ));
                    self.buffer(c, &target, LockedBuf::adopt(value))?
                }
                Err(e) if e.kind() == ErrorKind::NotFound => return Err(FsError::NotFound),
                Err(e) => return self.fail(c, "open", target, &e),
            }
        };
        let dirty = mode.truncate && writable;
        Ok(self.new_handle(
            Handle {
                ino,
                vault_ref: r,
                caller: *c,
                buf,
                writable,
                append: mode.append,
                dirty,
                created: false,
                poisoned: false,
                once,
            },
            slot,
        ))
    }

    fn fail<T>(&self, c: &Caller, op: &str, target: String, e: &StoreError) -> Result<T> {
        let err = from_store(e);
        self.record(self.event(c, op, target).failed(err.name()));
        Err(err)
    }

    /// Calls `f` with up to `size` bytes of the handle's content at `offset`.
    pub fn read<R>(
        &self,
        fh: u64,
        offset: u64,
        size: usize,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        let h = self.handle(fh)?;
        let h = lock(&h);
        let content = h.buf.content();
        if may_fill_page_cache(offset, size, content.len()) {
            self.cached_inos
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(h.ino);
        }
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(content.len());
        let end = start.saturating_add(size).min(content.len());
        Ok(f(&content[start..end]))
    }

    /// Writes into the handle's buffer; visible to others only once
    /// committed (flush or release).
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<usize> {
        let h = self.handle(fh)?;
        let mut h = lock(&h);
        if !h.writable {
            return Err(FsError::BadHandle);
        }
        let offset = if h.append {
            h.buf.len()
        } else {
            usize::try_from(offset).map_err(|_| FsError::TooLarge)?
        };
        if let Err(e) = h.buf.write_at(offset, data) {
            h.poisoned = true;
            let c = h.caller;
            let target = h.vault_ref.to_string();
            return self.deny(&c, "write", target, buf_error(e));
        }
        h.dirty = true;
        Ok(data.len())
    }

    /// Commits the handle's content if it changed (called on close(2), so
    /// the writer sees the outcome).
    pub fn flush(&self, fh: u64) -> Result<()> {
        let h = self.handle(fh)?;
        let mut h = lock(&h);
        self.commit(&mut h)
    }

    /// Stores the handle's content if it changed. Access is decided again
    /// here: a grant removed (and the policy reloaded) since the open stops
    /// the write with `EACCES`, and nothing changes.
    ///
    /// An empty content is stored as an empty value, at the close that
    /// reports it, as POSIX has a file emptied at once: `: > key`,
    /// `truncate -s 0` and an `O_TRUNC` open never keep the old value. (A
    /// shell's `echo x > key` closes a duplicate of the truncated file
    /// before writing, so it stores the empty value, then `x`.)
    fn commit(&self, h: &mut Handle) -> Result<()> {
        if h.poisoned {
            // The writer was told at write(2); close(2) says it again.
            return Err(FsError::TooLarge);
        }
        if !h.dirty {
            return Ok(());
        }
        let op = if h.created { "create" } else { "write" };
        let target = h.vault_ref.to_string();
        let allowed = self.check_writable().is_ok()
            && self.access(&h.caller, h.vault_ref.scope())?.can_write();
        if !allowed {
            h.dirty = false;
            let c = h.caller;
            return self.deny(&c, op, target, FsError::Denied);
        }
        if let Err(e) = self.session_quota(&h.caller, &h.vault_ref, h.buf.len() as u64) {
            h.dirty = false;
            let c = h.caller;
            return self.deny(&c, op, target, e);
        }
        let value = SensitiveBytes::from_slice(h.buf.content());
        let options = sealfs::PutOptions {
            once: h.once,
            allow_empty: true,
        };
        match self.vault.put_with(&h.vault_ref, value, options) {
            Ok(_) => {
                h.dirty = false;
                h.created = false;
                self.record(self.event(&h.caller, op, target));
                Ok(())
            }
            Err(e) => {
                h.dirty = false;
                self.fail(&h.caller, op, target, &e)
            }
        }
    }

    /// A write into a session that a (non-admin) uid created through the
    /// mount counts against that uid's quota: the secrets (`EDQUOT`) and
    /// bytes (`ENOSPC`) of all the sessions it created. Counted from the
    /// index, so it holds across restarts.
    fn session_quota(&self, writer: &Caller, target: &VaultRef, new: u64) -> Result<()> {
        let scope = target.scope();
        if !matches!(scope, VaultScope::Session(_)) || self.rules.is_admin(writer.uid) {
            return Ok(());
        }
        let owner = self
            .vault
            .scope(scope)
            .map_err(|e| from_store(&e))?
            .and_then(|s| s.owner_uid);
        let Some(owner) = owner.filter(|o| !self.rules.is_admin(*o)) else {
            return Ok(());
        };
        let (mut count, mut bytes, mut replaced) = (0usize, 0u64, None);
        for info in self.vault.scopes().map_err(|e| from_store(&e))? {
            if !matches!(info.scope, VaultScope::Session(_)) || info.owner_uid != Some(owner) {
                continue;
            }
            let mut keys = Vec::new();
            self.vault
                .for_each_key(&info.scope, &mut |k| keys.push(k))
                .map_err(|e| from_store(&e))?;
            for key in keys {
                let r = VaultRef::new(info.scope.clone(), key);
                if let Some(e) = self.vault.entry(&r).map_err(|e| from_store(&e))? {
                    if r == *target {
                        replaced = Some(e.len);
                    }
                    count += 1;
                    bytes += e.len;
                }
            }
        }
        let (count, bytes) = match replaced {
            Some(old) => (count, bytes - old + new),
            None => (count + 1, bytes + new),
        };
        if count > self.opts.max_session_secrets_per_uid {
            return Err(FsError::Quota);
        }
        if bytes > self.opts.max_session_bytes_per_uid {
            return Err(FsError::NoSpace);
        }
        Ok(())
    }

    /// Closes a handle: commits pending changes and wipes its buffer.
    pub fn release(&self, fh: u64) -> Result<()> {
        let h = lock(&self.handles).remove(&fh).ok_or(FsError::BadHandle)?;
        let mut h = lock(&h);
        if !self.rules.is_admin(h.caller.uid) {
            self.free_slot(h.caller.uid);
        }
        {
            let mut by_ino = lock(&self.handles_by_ino);
            if let Some(n) = by_ino.get_mut(&h.ino) {
                *n -= 1;
                if *n == 0 {
                    by_ino.remove(&h.ino);
                }
            }
        }
        self.commit(&mut h)
    }

    /// Whether any handle of inode `ino` is open.
    pub fn is_open(&self, ino: u64) -> bool {
        lock(&self.handles_by_ino).contains_key(&ino)
    }

    /// After the last close of `ino`: whether the kernel may hold pages of
    /// it (then forgotten here; the adapter drops them). Asking the kernel
    /// to drop pages also drops its cached attributes, so it is asked only
    /// when a read looked like a page-cache fill.
    pub fn take_cached(&self, ino: u64) -> bool {
        !self.is_open(ino) && lock(&self.cached_inos).remove(&ino)
    }

    /// Creates secret `name` in scope directory `parent`, open for writing.
    pub fn create(
        &self,
        c: &Caller,
        parent: u64,
        name: &str,
        mode: OpenMode,
    ) -> Result<(Attr, u64)> {
        let scope = match self.node(parent)? {
            Node::Scope(s) => s,
            Node::Root | Node::Kind(_) => return Err(FsError::NotPermitted),
            Node::Secret(_) => return Err(FsError::NotDir),
        };
        let target = format!("{scope}/{name}");
        self.require_write(c, "create", &target, &scope)?;
        // A directory inode kept (a cwd) after its session was removed:
        // creating there would bring the session back without its owner.
        if !self.scope_exists(&scope)? {
            return Err(FsError::NotFound);
        }
        let Ok(key) = SecretKey::new(name) else {
            return self.deny(c, "create", target, FsError::Invalid);
        };
        let r = VaultRef::new(scope, key);
        if self.vault.exists(&r).map_err(|e| from_store(&e))? {
            // O_CREAT|O_EXCL on an existing name (plain O_CREAT is an open).
            return Err(FsError::Exists);
        }
        let slot = self.handle_slot(c, &target)?;
        let buf = self.buffer(
            c,
            &target,
            LockedBuf::with_value(&[], self.opts.max_value_size),
        )?;
        let ino = self.ino(Node::Secret(r.clone()));
        lock(&self.inodes).remember(ino);
        let fh = self.new_handle(
            Handle {
                ino,
                vault_ref: r,
                caller: *c,
                buf,
                writable: true,
                append: mode.append,
                dirty: true,
                created: true,
                poisoned: false,
                once: false,
            },
            slot,
        );
        Ok((
            self.file_attr(c, ino, 0, SystemTime::now(), Access::ReadWrite),
            fh,
        ))
    }

    fn secret_in(&self, parent: u64, name: &str) -> Result<VaultRef> {
        match self.node(parent)? {
            Node::Scope(scope) => {
                let key = SecretKey::new(name).map_err(|_| FsError::NotFound)?;
                Ok(VaultRef::new(scope, key))
            }
            Node::Secret(_) => Err(FsError::NotDir),
            _ => Err(FsError::NotPermitted),
        }
    }

    pub fn unlink(&self, c: &Caller, parent: u64, name: &str) -> Result<()> {
        let r = self.secret_in(parent, name)?;
        let target = r.to_string();
        self.require_write(c, "delete", &target, r.scope())?;
        match self.vault.delete(&r) {
            Ok(()) => {
                self.record(self.event(c, "delete", target));
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Err(FsError::NotFound),
            Err(e) => self.fail(c, "delete", target, &e),
        }
    }

    /// Renames a secret, within or across scopes (re-sealed for the new slot).
    pub fn rename(
        &self,
        c: &Caller,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        no_replace: bool,
    ) -> Result<()> {
        if matches!(self.node(parent)?, Node::Kind(_) | Node::Root) {
            // Scope directories are not renamed: their names are the scopes.
            return Err(FsError::NotPermitted);
        }
        let from = self.secret_in(parent, name)?;
        let to_scope = match self.node(new_parent)? {
            Node::Scope(s) => s,
            Node::Secret(_) => return Err(FsError::NotDir),
            _ => return Err(FsError::NotPermitted),
        };
        let target = from.to_string();
        self.require_write(c, "rename", &target, from.scope())?;
        self.require_write(c, "rename", &format!("{to_scope}/{new_name}"), &to_scope)?;
        let Ok(key) = SecretKey::new(new_name) else {
            return self.deny(c, "rename", target, FsError::Invalid);
        };
        let to = VaultRef::new(to_scope, key);
        if to.scope() != from.scope() {
            let moved = self
                .vault
                .entry(&from)
                .map_err(|e| from_store(&e))?
                .ok_or(FsError::NotFound)?;
            if let Err(e) = self.session_quota(c, &to, moved.len) {
                return self.deny(c, "rename", target, e);
            }
        }
        match self.vault.rename(&from, &to, no_replace) {
            Ok(_) => {
                lock(&self.inodes).rename(&Node::Secret(from), &Node::Secret(to.clone()));
                self.record(self.event(c, "rename", target).to(to.to_string()));
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Err(FsError::NotFound),
            Err(e) => self.fail(c, "rename", target, &e),
        }
    }

    /// `mkdir session/<id>` (root, the vault owner, the user whose
    /// namespace `<id>` is in, or a `create` grant; the caller owns it) or
    /// `mkdir principal/<id>` (that principal, root or the vault owner).
    ///
    /// A scope the caller may not see answers as one it may not create,
    /// whether it exists or not (`EACCES`, never `EEXIST`); both paths look
    /// the scope up, so their timing differs only by the decision itself.
    pub fn mkdir(&self, c: &Caller, parent: u64, name: &str) -> Result<Attr> {
        let kind = match self.node(parent)? {
            Node::Kind(k) => k,
            Node::Secret(_) => return Err(FsError::NotDir),
            _ => return Err(FsError::NotPermitted),
        };
        self.check_writable()?;
        let target = format!("{}:{name}", kind.name());
        let Ok(id) = ScopeId::new(name) else {
            return self.deny(c, "mkdir", target, FsError::Invalid);
        };
        let allowed = match kind {
            ScopeKind::Session => self.with_who(c, |policy, who| {
                self.rules.may_create_session(policy, who, &id)
            }),
            ScopeKind::Principal => {
                self.rules.is_admin(c.uid) || self.rules.is_principal(c.uid, id.as_str())
            }
        };
        let scope = kind.scope(id);
        if scope.is_reserved() {
            return self.deny(c, "mkdir", target, FsError::Denied);
        }
        let exists = self
            .vault
            .scope(&scope)
            .map_err(|e| from_store(&e))?
            .is_some();
        // The same work whether it exists or not (an access decision, then
        // the answer), so neither the errno nor the time tells.
        let visible = self.access(c, &scope)?.can_read();
        if exists {
            if visible {
                return Err(FsError::Exists);
            }
            return self.deny(c, "mkdir", target, FsError::Denied);
        }
        if !allowed {
            return self.deny(c, "mkdir", target, FsError::Denied);
        }
        if kind == ScopeKind::Session && !self.rules.is_admin(c.uid) {
            let owned = self
                .vault
                .scopes()
                .map_err(|e| from_store(&e))?
                .iter()
                .filter(|s| matches!(s.scope, VaultScope::Session(_)) && s.owner_uid == Some(c.uid))
                .count();
            if owned >= self.opts.max_sessions_per_uid {
                return self.deny(c, "mkdir", target, FsError::Quota);
            }
        }
        match self.vault.create_scope(&scope, Some(c.uid)) {
            Ok(()) => {
                self.record(self.event(c, "mkdir", scope.to_string()));
                let ino = self.ino(Node::Scope(scope));
                lock(&self.inodes).remember(ino);
                Ok(self.scope_dir_attr(c, ino, Access::ReadWrite))
            }
            Err(e) => self.fail(c, "mkdir", target, &e),
        }
    }

    pub fn rmdir(&self, c: &Caller, parent: u64, name: &str) -> Result<()> {
        let kind = match self.node(parent)? {
            Node::Kind(k) => k,
            Node::Secret(_) => return Err(FsError::NotDir),
            _ => return Err(FsError::NotPermitted),
        };
        let id = ScopeId::new(name).map_err(|_| FsError::NotFound)?;
        let scope = kind.scope(id);
        let target = scope.to_string();
        self.require_write(c, "rmdir", &target, &scope)?;
        match self.vault.remove_scope(&scope) {
            Ok(()) => {
                self.record(self.event(c, "rmdir", target));
                Ok(())
            }
            Err(e) => self.fail(c, "rmdir", target, &e),
        }
    }

    /// Truncation (`truncate -s`, `ftruncate`); mode and owner changes are
    /// refused: modes and owners are computed per caller.
    pub fn setattr(
        &self,
        c: &Caller,
        ino: u64,
        fh: Option<u64>,
        size: Option<u64>,
        changes_owner_or_mode: bool,
    ) -> Result<Attr> {
        if changes_owner_or_mode {
            return Err(FsError::NotPermitted);
        }
        if let Some(size) = size {
            let size = usize::try_from(size).map_err(|_| FsError::TooLarge)?;
            match fh.map(|fh| self.handle(fh)).transpose()? {
                Some(h) => {
                    let mut h = lock(&h);
                    if !h.writable {
                        return Err(FsError::BadHandle);
                    }
                    if let Err(e) = h.buf.set_len(size) {
                        h.poisoned = true;
                        return Err(buf_error(e));
                    }
                    h.dirty = true;
                }
                None => {
                    // truncate(2) by path: open, resize, commit, close. To
                    // nothing, the value need not be read (nor a read-once
                    // secret consumed): it is an O_TRUNC open.
                    let mode = OpenMode {
                        write: true,
                        truncate: size == 0,
                        ..OpenMode::default()
                    };
                    let fh = self.open(c, ino, mode)?;
                    let resized = self.setattr(c, ino, Some(fh), Some(size as u64), false);
                    let committed = self.release(fh);
                    resized?;
                    committed?;
                }
            }
        }
        self.getattr(c, ino)
    }

    /// `access(2)`: answered from the same rules as every other request.
    pub fn access_check(&self, c: &Caller, ino: u64, mask: AccessMask) -> Result<()> {
        let node = self.node(ino)?;
        let scope = match &node {
            Node::Root | Node::Kind(_) => {
                if mask.write {
                    self.check_writable()?;
                    // New entries appear only as scopes under principal/ and
                    // session/ (mkdir decides who); the root takes none.
                    if node == Node::Root && !self.rules.is_admin(c.uid) {
                        return Err(FsError::Denied);
                    }
                }
                return Ok(());
            }
            Node::Scope(s) => s.clone(),
            Node::Secret(r) => r.scope().clone(),
        };
        let access = self.access(c, &scope)?;
        if !access.can_read() {
            return Err(FsError::NotFound);
        }
        if mask.write && self.opts.read_only {
            return Err(FsError::ReadOnly);
        }
        if (mask.write && !access.can_write()) || (mask.execute && matches!(node, Node::Secret(_)))
        {
            return Err(FsError::Denied);
        }
        Ok(())
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
        assert_eq!(fs.read(fh, 1, 3, |b| b.to_vec()).unwrap(), b"lph");
        assert_eq!(fs.read(fh, 9, 3, |b| b.to_vec()).unwrap(), b"");
        assert_eq!(wipe_watch::fate(buffer), Fate::Alive);
        fs.release(fh).unwrap();
        assert_eq!(fs.open_handles(), 0);
        assert_eq!(
            wipe_watch::fate(buffer),
            Fate::Wiped,
            "release drops this handle's buffer, all zeros before it is unlocked"
        );
        assert_eq!(fs.read(fh, 0, 5, |b| b.len()), Err(FsError::BadHandle));

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
        assert_eq!(names, [".", "..", "principal", "session"]);
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
    fn reads_that_may_fill_the_page_cache_are_told_apart() {
        let page = crate::memlock::page_size();
        // A fault of a private mapping: whole pages, within the last page.
        assert!(may_fill_page_cache(0, page, 40));
        assert!(may_fill_page_cache(0, 4 * page, 3 * page + 100));
        assert!(may_fill_page_cache(page as u64, page, 2 * page));
        // cat's 128 KiB read of a small secret, a read past the end, an
        // unaligned read, an empty file: direct I/O, nothing cached.
        assert!(!may_fill_page_cache(0, 128 << 10, 40));
        assert!(!may_fill_page_cache(page as u64, page, 40));
        assert!(!may_fill_page_cache(1, page, 2 * page));
        assert!(!may_fill_page_cache(0, 100, 40));
        assert!(!may_fill_page_cache(0, page, 0));
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
