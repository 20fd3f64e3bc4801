//! The tree: lookup, getattr, listings, and the changes to names (create
//! a scope, rename or unlink a key) with their permission checks.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use sealfs::audit::Caller;
use sealfs::ScopeId;
use sealfs::{ErrorKind, SecretKey, SecretStore, VaultRef, VaultScope};

use super::{
    from_store, lock, AccessMask, Attr, FileKind, FsError, Node, Result, ScopeKind, SealFs,
    GLOBAL_INO, PRINCIPAL_INO, ROOT_INO, SESSION_INO, TEMPLATES_INO,
};
use crate::policy::Access;

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
    pub(super) fn push(&mut self, ino: u64, kind: FileKind, name: &str) {
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

impl SealFs {
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

    pub(super) fn lookup_inner(&self, c: &Caller, parent: u64, name: &str) -> Result<Attr> {
        match self.node(parent)? {
            Node::Root => match name {
                "principal" => Ok(self.dir_attr(PRINCIPAL_INO, 0o755, 0, 0)),
                "session" => Ok(self.dir_attr(SESSION_INO, 0o755, 0, 0)),
                "templates" => Ok(self.dir_attr(TEMPLATES_INO, 0o555, 0, 0)),
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
            Node::Scope(scope) if name == SecretKey::HISTORY_DIR => {
                let access = self.access(c, &scope)?;
                if !access.can_read() || !self.scope_exists(&scope)? {
                    return Err(FsError::NotFound);
                }
                let ino = self.ino(Node::History(scope));
                Ok(self.dir_attr(ino, 0o500, c.uid, c.gid))
            }
            Node::History(scope) => {
                let key = SecretKey::new(name).map_err(|_| FsError::NotFound)?;
                let r = VaultRef::new(scope, key);
                self.versions_of(c, &r)?;
                let ino = self.ino(Node::Versions(r));
                Ok(self.dir_attr(ino, 0o500, c.uid, c.gid))
            }
            Node::Versions(r) => {
                let n: u64 = name.parse().map_err(|_| FsError::NotFound)?;
                if n.to_string() != name {
                    return Err(FsError::NotFound);
                }
                let ino = self.ino(Node::Version(r.clone(), n));
                let attr = self.version_attr(c, ino, &r, n);
                if attr.is_err() {
                    // No inode kept for a name that is not there.
                    lock(&self.inodes).drop_unreferenced(ino);
                }
                attr
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
            Node::Templates => {
                let name = SecretKey::new(name).map_err(|_| FsError::NotFound)?;
                let ino = self.ino(Node::Template(name.clone()));
                let attr = self.template_attr(c, ino, &name, "lookup");
                if attr.is_err() {
                    lock(&self.inodes).drop_unreferenced(ino);
                }
                attr
            }
            Node::Secret(_) | Node::Version(..) | Node::Template(_) => Err(FsError::NotDir),
        }
    }

    /// The versions of `r`, if `c` may read its scope: the same rules as
    /// for the secret itself.
    fn versions_of(&self, c: &Caller, r: &VaultRef) -> Result<Vec<sealfs::Version>> {
        if !self.access(c, r.scope())?.can_read() {
            return Err(FsError::NotFound);
        }
        match self.vault.history(r) {
            Ok(v) => Ok(v),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Unsupported) => {
                Err(FsError::NotFound)
            }
            Err(e) => Err(from_store(&e)),
        }
    }

    /// Attributes of version `n` of `r` (inode `ino`): a read-only file.
    fn version_attr(&self, c: &Caller, ino: u64, r: &VaultRef, n: u64) -> Result<Attr> {
        let v = self
            .versions_of(c, r)?
            .into_iter()
            .find(|v| v.version == n)
            .ok_or(FsError::NotFound)?;
        Ok(self.file_attr(c, ino, v.len, v.written, crate::policy::Access::Read))
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
            Node::History(scope) => {
                if !self.access(c, &scope)?.can_read() || !self.scope_exists(&scope)? {
                    return Err(FsError::NotFound);
                }
                Ok(self.dir_attr(ino, 0o500, c.uid, c.gid))
            }
            Node::Versions(r) => {
                self.versions_of(c, &r)?;
                Ok(self.dir_attr(ino, 0o500, c.uid, c.gid))
            }
            Node::Version(r, n) => self.version_attr(c, ino, &r, n),
            Node::Templates => Ok(self.dir_attr(ino, 0o555, 0, 0)),
            Node::Template(name) => self.template_attr(c, ino, &name, "getattr"),
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
            Node::History(scope) => self.ino(Node::Scope(scope.clone())),
            Node::Versions(r) => self.ino(Node::History(r.scope().clone())),
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
                out.push(TEMPLATES_INO, FileKind::Directory, "templates");
            }
            Node::Templates => {
                out.push(ino, FileKind::Directory, ".");
                out.push(parent, FileKind::Directory, "..");
                let names = sealfs::template::names(&self.vault).map_err(|e| from_store(&e))?;
                for name in names {
                    // Hidden or gone since it was listed: not shown.
                    if let Ok(true) = self.template_visible(c, &name) {
                        let ino = lock(&self.inodes).peek(&Node::Template(name.clone()));
                        out.push(ino, FileKind::File, name.as_str());
                    }
                }
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
            Node::History(scope) => {
                if !self.access(c, &scope)?.can_read() {
                    return Err(FsError::NotFound);
                }
                out.push(ino, FileKind::Directory, ".");
                out.push(parent, FileKind::Directory, "..");
                let keys = match self.vault.versioned_keys(&scope) {
                    Ok(keys) => keys,
                    Err(e) if e.kind() == ErrorKind::Unsupported => Vec::new(),
                    Err(e) => return Err(from_store(&e)),
                };
                for key in keys {
                    let node = Node::Versions(VaultRef::new(scope.clone(), key));
                    let ino = lock(&self.inodes).peek(&node);
                    if let Node::Versions(r) = &node {
                        out.push(ino, FileKind::Directory, r.key().as_str());
                    }
                }
            }
            Node::Versions(r) => {
                let versions = self.versions_of(c, &r)?;
                out.push(ino, FileKind::Directory, ".");
                out.push(parent, FileKind::Directory, "..");
                for v in versions {
                    let ino = lock(&self.inodes).peek(&Node::Version(r.clone(), v.version));
                    out.push(ino, FileKind::File, &v.version.to_string());
                }
            }
            Node::Secret(_) | Node::Version(..) | Node::Template(_) => return Err(FsError::NotDir),
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

    pub(super) fn secret_in(&self, parent: u64, name: &str) -> Result<VaultRef> {
        match self.node(parent)? {
            Node::Scope(scope) => {
                let key = SecretKey::new(name).map_err(|_| FsError::NotFound)?;
                Ok(VaultRef::new(scope, key))
            }
            Node::Secret(_) | Node::Version(..) | Node::Template(_) => Err(FsError::NotDir),
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
            // Where scopes record no owner (the fleet), a session made in
            // one's own namespace would be neither one's own nor counted
            // against one's quota, and it would stay in every host's
            // keyrings: only root, the vault owner or a `create` grant.
            ScopeKind::Session if !self.vault.records_scope_owners() => self
                .with_who(c, |policy, who| {
                    self.rules.may_create_unowned_session(policy, who, &id)
                }),
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
        // A session ends after the daemon's --session-ttl, where the store
        // keeps lifetimes (the local vault, which records owners too).
        let expires = (kind == ScopeKind::Session && self.vault.records_scope_owners())
            .then(|| std::time::SystemTime::now() + self.opts.session_ttl);
        match self.vault.create_scope_until(&scope, Some(c.uid), expires) {
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
            Node::Scope(s) | Node::History(s) => s.clone(),
            Node::Secret(r) | Node::Versions(r) | Node::Version(r, _) => r.scope().clone(),
            Node::Templates | Node::Template(_) => {
                if let Node::Template(name) = &node {
                    if !self.template_visible(c, name)? {
                        return Err(FsError::NotFound);
                    }
                }
                // Rendered, never written, never run.
                if mask.write || (mask.execute && node != Node::Templates) {
                    return Err(FsError::Denied);
                }
                return Ok(());
            }
        };
        let access = self.access(c, &scope)?;
        if !access.can_read() {
            return Err(FsError::NotFound);
        }
        if matches!(
            node,
            Node::History(_) | Node::Versions(_) | Node::Version(..)
        ) {
            // History is read-only, to everyone.
            if mask.write || (mask.execute && matches!(node, Node::Version(..))) {
                return Err(FsError::Denied);
            }
            return Ok(());
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
