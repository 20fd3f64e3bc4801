//! `templates/<name>`: a template (`sealfs::template`) rendered afresh on
//! every open into the handle's locked buffer, for a caller who may read
//! every ref it names; a ref that is missing or expired fails the open
//! (`EIO`, audited with the ref) rather than rendering a hole.

use std::sync::Arc;

use sealfs::audit::Caller;
use sealfs::template::{self, LoadError, RenderError, Template, MAX_RENDERED_SIZE};
use sealfs::{SecretKey, SecretStore, VaultRef};

use super::handles::Handle;
use super::{from_store, lock, Attr, FsError, OpenMode, Result, SealFs};
use crate::buffer::LockedBuf;
use crate::policy::Access;

/// How the audit log names template `name`.
pub(super) fn target(name: &SecretKey) -> String {
    format!("template:{name}")
}

/// A template's refs as last read, and which stored version of the
/// template they were read from.
pub(super) struct Known {
    version: u64,
    updated: std::time::SystemTime,
    /// Or why it cannot be used: kept too, so a broken template is not
    /// decrypted again at every request either.
    refs: std::result::Result<Vec<VaultRef>, FsError>,
}

impl SealFs {
    /// The refs of template `name`: from what was read of it before if it
    /// has not changed since (the index says so, without decrypting),
    /// else from the template itself.
    fn refs_of(&self, name: &SecretKey) -> Result<Vec<VaultRef>> {
        let entry = self
            .vault
            .entry(&template::template_ref(name))
            .map_err(|e| from_store(&e))?
            .ok_or(FsError::NotFound)?;
        if let Some(k) = lock(&self.template_refs).get(name) {
            if (k.version, k.updated) == (entry.version, entry.updated) {
                return k.refs.clone();
            }
        }
        let refs = match self.load_template(name) {
            Ok(t) => Ok(t.refs()),
            // Gone since the index was read: nothing to keep.
            Err(FsError::NotFound) => return Err(FsError::NotFound),
            Err(e) => Err(e),
        };
        lock(&self.template_refs).insert(
            name.clone(),
            Known {
                version: entry.version,
                updated: entry.updated,
                refs: refs.clone(),
            },
        );
        refs
    }

    fn load_template(&self, name: &SecretKey) -> Result<Template> {
        match template::load(&self.vault, name) {
            Ok(Some(t)) => Ok(t),
            Ok(None) => Err(FsError::NotFound),
            Err(LoadError::Store(e)) => Err(from_store(&e)),
            Err(e) => {
                tracing::warn!(error = %e, "a stored template cannot be used");
                Err(FsError::Io)
            }
        }
    }

    /// Whether `c` may see a template that names `refs`: only if it may
    /// read every one of them; one that names none (all its text is its
    /// own) only root and the vault owner.
    fn may_see(&self, c: &Caller, refs: &[VaultRef]) -> Result<bool> {
        if refs.is_empty() {
            return Ok(self.rules.is_admin(c.uid));
        }
        for r in refs {
            if !self.access(c, r.scope())?.can_read() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether template `name` exists and `c` may see it (`NotFound` if it
    /// does not exist; `Ok(false)` if `c` may not see it).
    pub(super) fn template_visible(&self, c: &Caller, name: &SecretKey) -> Result<bool> {
        let refs = self.refs_of(name)?;
        self.may_see(c, &refs)
    }

    /// Attributes of template `name` (inode `ino`) for `c`: a read-only
    /// file the kernel does not cache, whose size is that of `c`'s open
    /// rendering (0 before one), so `fstat` after `open` tells the truth.
    /// `op`: the request, audited when the template is hidden from `c`.
    pub(super) fn template_attr(
        &self,
        c: &Caller,
        ino: u64,
        name: &SecretKey,
        op: &str,
    ) -> Result<Attr> {
        if !self.template_visible(c, name)? {
            return self.deny(c, op, target(name), FsError::NotFound);
        }
        let mtime = self
            .vault
            .entry(&template::template_ref(name))
            .map_err(|e| from_store(&e))?
            .map_or(self.mounted_at, |e| e.updated);
        let size = lock(&self.handles)
            .values()
            .filter_map(|h| {
                let h = lock(h);
                (h.ino == ino && h.caller.uid == c.uid).then(|| h.buf.len() as u64)
            })
            .max()
            .unwrap_or(0);
        let mut attr = self.file_attr(c, ino, size, mtime, Access::Read);
        attr.uncached = true;
        Ok(attr)
    }

    /// Opens template `name` for reading: renders it now, from the
    /// current values. The audit log gets one `open` of the template and
    /// one `render` of each ref it read (or of the one that failed).
    pub(super) fn open_template(
        &self,
        c: &Caller,
        ino: u64,
        name: SecretKey,
        mode: OpenMode,
    ) -> Result<u64> {
        let target = target(&name);
        // Decided on the template as it is now, the one that is rendered.
        let t = self.load_template(&name)?;
        let refs = t.refs();
        if !self.may_see(c, &refs)? {
            return self.deny(c, "open", target, FsError::NotFound);
        }
        if mode.write {
            return self.deny(c, "open", target, FsError::Denied);
        }
        let slot = self.handle_slot(c, &target)?;
        let rendered = match template::render_from(&self.vault, &t, MAX_RENDERED_SIZE) {
            Ok(out) => out,
            Err(RenderError::Read { vault_ref, source }) => {
                self.record(
                    self.event(c, "render", vault_ref.to_string())
                        .to(target.clone())
                        .failed(source.to_string()),
                );
                return self.fail_open(c, target);
            }
            Err(e) => {
                tracing::warn!(template = %name, error = %e, "cannot render");
                self.record(
                    self.event(c, "render", target.clone())
                        .failed(e.to_string()),
                );
                return self.fail_open(c, target);
            }
        };
        let buf = self.buffer(c, &target, LockedBuf::adopt(rendered))?;
        self.record(self.event(c, "open", target.clone()));
        for r in refs {
            self.record(self.event(c, "render", r.to_string()).to(target.clone()));
        }
        Ok(self.new_handle(
            Handle::reader(ino, template::template_ref(&name), *c, Arc::new(buf)),
            slot,
        ))
    }

    fn fail_open<T>(&self, c: &Caller, target: String) -> Result<T> {
        self.record(self.event(c, "open", target).failed(FsError::Io.name()));
        Err(FsError::Io)
    }
}
