//! Open files: a value is decrypted into a handle's locked buffer on
//! open, served by read, edited by write, committed on flush, wiped on
//! release.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use sealfs::audit::Caller;
use sealfs::{ErrorKind, SecretKey, SecretStore, SensitiveBytes, StoreError, VaultRef, VaultScope};

use super::{from_store, lock, Attr, FsError, Node, OpenMode, Result, SealFs};
use crate::buffer::{BufError, LockedBuf};
use crate::policy::Access;

pub(super) fn buf_error(e: BufError) -> FsError {
    match e {
        BufError::TooLarge => FsError::TooLarge,
        BufError::NoMemory => FsError::NoMemory,
    }
}

/// One open-handle slot of a uid ([`SealFs::handle_slot`]), given back if
/// dropped before a handle takes it.
pub(super) struct Slot<'a> {
    pub(super) fs: &'a SealFs,
    pub(super) uid: Option<u32>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(uid) = self.uid {
            self.fs.free_slot(uid);
        }
    }
}

pub(super) struct Handle {
    pub(super) ino: u64,
    pub(super) vault_ref: VaultRef,
    pub(super) caller: Caller,
    /// Shared with the reads being answered from it, so none holds this
    /// handle's lock while its reply goes out: a close then waits for no
    /// reply. Wiped when the handle and those replies are done with it;
    /// a write to a buffer a read still shares copies it first.
    pub(super) buf: Arc<LockedBuf>,
    pub(super) writable: bool,
    pub(super) append: bool,
    /// Changed since the last commit.
    pub(super) dirty: bool,
    /// Made by `create`: the secret does not exist until the first commit.
    pub(super) created: bool,
    /// A write failed (too large): nothing of this handle is committed.
    pub(super) poisoned: bool,
    /// The secret is read-once, and stays so when this handle commits.
    pub(super) once: bool,
    /// For a secret in a session: the session's end as it was at open. A
    /// session ended and made again since is another session, which this
    /// handle's value must not reach.
    pub(super) session_end: Option<Option<SystemTime>>,
    /// Made by an `O_EXCL` create: the first commit requires the name to
    /// be free still.
    pub(super) exclusive: bool,
    /// The version this handle last stored: its next commit amends it
    /// (a shell's `>` stores the emptied file, then the content), so
    /// history keeps what was there before the open, not each step.
    pub(super) stored: Option<u64>,
    /// The executable of the process that opened it for writing, taken at
    /// the open (at the commit, that process may be gone and its pid
    /// another's): kept with what it stores.
    pub(super) exe: Option<String>,
}

impl Handle {
    /// A read-only handle on `buf`.
    pub(super) fn reader(
        ino: u64,
        vault_ref: VaultRef,
        caller: Caller,
        buf: Arc<LockedBuf>,
    ) -> Self {
        Handle {
            ino,
            vault_ref,
            caller,
            buf,
            writable: false,
            append: false,
            dirty: false,
            created: false,
            poisoned: false,
            once: false,
            session_end: None,
            exclusive: false,
            stored: None,
            exe: None,
        }
    }

    /// The buffer to write into: this handle's own, copied first if a read
    /// being answered still shares it.
    fn buf_mut(&mut self) -> std::result::Result<&mut LockedBuf, BufError> {
        if Arc::get_mut(&mut self.buf).is_none() {
            let copy = self.buf.try_clone().map_err(|_| BufError::NoMemory)?;
            self.buf = Arc::new(copy);
        }
        Ok(Arc::get_mut(&mut self.buf).expect("just made unshared"))
    }
}

/// The store as [`SealFs`] reaches it, and the only way it does: every
/// request that makes the vault decrypt a value passes here, whatever code
/// path made it, and is counted and logged at debug level (`-v`) with the
/// ref, never the value. The tests count decryptions by this.
pub(super) struct Counted {
    pub(super) inner: Arc<dyn SecretStore>,
    pub(super) decrypts: AtomicU64,
}

impl Counted {
    pub(super) fn decrypting(&self, op: &'static str, r: &VaultRef) {
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
    fn create_scope_until(
        &self,
        scope: &VaultScope,
        owner_uid: Option<u32>,
        expires: Option<std::time::SystemTime>,
    ) -> std::result::Result<(), StoreError> {
        self.inner.create_scope_until(scope, owner_uid, expires)
    }
    fn end_session(&self, scope: &VaultScope) -> std::result::Result<(), StoreError> {
        self.inner.end_session(scope)
    }
    fn sweep_expired(&self) -> std::result::Result<(), StoreError> {
        self.inner.sweep_expired()
    }
    fn remove_scope(&self, scope: &VaultScope) -> std::result::Result<(), StoreError> {
        self.inner.remove_scope(scope)
    }
    fn history(&self, r: &VaultRef) -> std::result::Result<Vec<sealfs::Version>, StoreError> {
        self.inner.history(r)
    }
    fn get_version(&self, r: &VaultRef, n: u64) -> std::result::Result<SensitiveBytes, StoreError> {
        self.decrypting("get_version", r);
        self.inner.get_version(r, n)
    }
    fn versioned_keys(
        &self,
        scope: &VaultScope,
    ) -> std::result::Result<Vec<SecretKey>, StoreError> {
        self.inner.versioned_keys(scope)
    }
    fn records_scope_owners(&self) -> bool {
        self.inner.records_scope_owners()
    }
}

impl SealFs {
    /// Takes one of `c`'s open-handle slots (`EMFILE`, audited, when its
    /// cap is reached); given back when the handle is released, or when
    /// the returned slot is dropped unused.
    pub(super) fn handle_slot(&self, c: &Caller, target: &str) -> Result<Slot<'_>> {
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

    pub(super) fn free_slot(&self, uid: u32) {
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

    pub(super) fn new_handle(&self, h: Handle, slot: Slot<'_>) -> u64 {
        std::mem::forget(slot); // now the handle's, freed at release
        *lock(&self.handles_by_ino).entry(h.ino).or_default() += 1;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, Arc::new(Mutex::new(h)));
        fh
    }

    /// A plaintext buffer for `c`'s open of `target`, or `ENOMEM` (audited)
    /// when no locked memory is left.
    pub(super) fn buffer(
        &self,
        c: &Caller,
        target: &str,
        made: std::result::Result<LockedBuf, crate::memlock::NoMemory>,
    ) -> Result<LockedBuf> {
        made.or_else(|_| self.deny(c, "open", target, FsError::NoMemory))
    }

    pub(super) fn handle(&self, fh: u64) -> Result<Arc<Mutex<Handle>>> {
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
            Node::Version(r, n) => return self.open_version(c, ino, r, n, mode),
            Node::Template(name) => return self.open_template(c, ino, name, mode),
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
        let session_end = if writable {
            self.session_end(r.scope())?
        } else {
            None
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
                buf: Arc::new(buf),
                writable,
                append: mode.append,
                dirty,
                created: false,
                poisoned: false,
                once,
                session_end,
                exclusive: false,
                stored: None,
                exe: writable.then(|| sealfs::audit::exe_of(c.pid)).flatten(),
            },
            slot,
        ))
    }

    /// Opens version `n` of `r`, read-only, under the rules of `r` itself.
    fn open_version(
        &self,
        c: &Caller,
        ino: u64,
        r: VaultRef,
        n: u64,
        mode: OpenMode,
    ) -> Result<u64> {
        let target = format!("{r}@{n}");
        if !self.access(c, r.scope())?.can_read() {
            return self.deny(c, "open", target, FsError::NotFound);
        }
        if mode.write {
            return self.deny(c, "open", target, FsError::Denied);
        }
        let slot = self.handle_slot(c, &target)?;
        let buf = match self.vault.get_version(&r, n) {
            Ok(value) => {
                self.record(self.event(c, "open", target.clone()));
                self.buffer(c, &target, LockedBuf::adopt(value))?
            }
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(FsError::NotFound),
            Err(e) => return self.fail(c, "open", target, &e),
        };
        Ok(self.new_handle(Handle::reader(ino, r, *c, Arc::new(buf)), slot))
    }

    pub(super) fn fail<T>(
        &self,
        c: &Caller,
        op: &str,
        target: String,
        e: &StoreError,
    ) -> Result<T> {
        let err = from_store(e);
        self.record(self.event(c, op, target).failed(err.name()));
        Err(err)
    }

    /// Calls `f` with up to `size` bytes of the handle's content at
    /// `offset`. `direct`: the adapter knows this read comes from a
    /// caller's read(2) on a direct-I/O handle, never from the kernel
    /// filling its page cache.
    pub fn read<R>(
        &self,
        fh: u64,
        offset: u64,
        size: usize,
        direct: bool,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        let buf = {
            let h = self.handle(fh)?;
            let h = lock(&h);
            // A read that may fill the page cache is not bounded by this
            // handle's content: the kernel's idea of the size may be older
            // (a value shrunk since its attributes were cached).
            if !direct {
                self.cached_inos
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(h.ino);
            }
            Arc::clone(&h.buf)
        };
        let content = buf.content();
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
        if let Err(e) = h.buf_mut().and_then(|b| b.write_at(offset, data)) {
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
    pub(super) fn commit(&self, h: &mut Handle) -> Result<()> {
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
        // What the handle's value may still go to: the secret it edits, if
        // it is still there (not removed, moved, expired or ended with its
        // session since the open: writing would bring it back), in the
        // session it was opened in, keeping the lifetime the secret has now.
        let current = if h.created {
            None
        } else {
            match self.vault.entry(&h.vault_ref) {
                Ok(Some(e)) => Some(e),
                Ok(None) => {
                    h.dirty = false;
                    let c = h.caller;
                    return self.deny(&c, op, target, FsError::NotFound);
                }
                Err(e) => {
                    h.dirty = false;
                    return self.fail(&h.caller, op, target, &e);
                }
            }
        };
        if h.session_end.is_some() && self.session_end(h.vault_ref.scope())? != h.session_end {
            h.dirty = false;
            let c = h.caller;
            return self.deny(&c, op, target, FsError::NotFound);
        }
        let value = SensitiveBytes::from_slice(h.buf.content());
        let options = sealfs::PutOptions {
            once: h.once,
            allow_empty: true,
            // Atomic O_EXCL: another creator may have got there between
            // create and this first commit.
            expect: (h.created && h.exclusive).then_some(sealfs::Expected::Absent),
            expires: current.and_then(|e| e.expires),
            amends: h.stored,
            writer: Some(sealfs::Writer {
                source: sealfs::WriteSource::Mount,
                uid: Some(h.caller.uid),
                exe: h.exe.clone(),
            }),
            ..sealfs::PutOptions::default()
        };
        match self.vault.put_with(&h.vault_ref, value, options) {
            Ok(entry) => {
                h.dirty = false;
                h.created = false;
                h.stored = Some(entry.version);
                self.record(self.event(&h.caller, op, target));
                Ok(())
            }
            Err(e) => {
                h.dirty = false;
                self.fail(&h.caller, op, target, &e)
            }
        }
    }

    /// For a session scope, its end (`Some(None)`: it has none); `None` for
    /// other scopes.
    fn session_end(&self, scope: &VaultScope) -> Result<Option<Option<SystemTime>>> {
        if !matches!(scope, VaultScope::Session(_)) {
            return Ok(None);
        }
        let info = self.vault.scope(scope).map_err(|e| from_store(&e))?;
        Ok(Some(info.and_then(|s| s.expires)))
    }

    /// A write into a session that a (non-admin) uid created through the
    /// mount counts against that uid's quota: the secrets (`EDQUOT`) and
    /// bytes (`ENOSPC`) of all the sessions it created. Counted from the
    /// index, so it holds across restarts.
    pub(super) fn session_quota(&self, writer: &Caller, target: &VaultRef, new: u64) -> Result<()> {
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
    /// after a read the adapter could not tell from a page-cache fill.
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
            Node::Root
            | Node::Kind(_)
            | Node::History(_)
            | Node::Versions(_)
            | Node::Templates
            | Node::Template(_) => return Err(FsError::NotPermitted),
            Node::Secret(_) | Node::Version(..) => return Err(FsError::NotDir),
        };
        let target = format!("{scope}/{name}");
        self.require_write(c, "create", &target, &scope)?;
        // A directory inode kept (a cwd) after its session was removed:
        // creating there would bring the session back without its owner.
        if !self.scope_exists(&scope)? {
            return Err(FsError::NotFound);
        }
        let Ok(key) = SecretKey::new(name).map(|k| (!k.is_reserved()).then_some(k)) else {
            return self.deny(c, "create", target, FsError::Invalid);
        };
        let Some(key) = key else {
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
        let session_end = self.session_end(r.scope())?;
        let ino = self.ino(Node::Secret(r.clone()));
        lock(&self.inodes).remember(ino);
        let fh = self.new_handle(
            Handle {
                ino,
                vault_ref: r,
                caller: *c,
                buf: Arc::new(buf),
                writable: true,
                append: mode.append,
                dirty: true,
                created: true,
                poisoned: false,
                once: false,
                session_end,
                exclusive: mode.exclusive,
                stored: None,
                exe: sealfs::audit::exe_of(c.pid),
            },
            slot,
        );
        Ok((
            self.file_attr(c, ino, 0, SystemTime::now(), Access::ReadWrite),
            fh,
        ))
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
                    if let Err(e) = h.buf_mut().and_then(|b| b.set_len(size)) {
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
}
