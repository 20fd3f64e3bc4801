//! `templates/<name>`: a template (`sealfs::template`) rendered afresh on
//! every open into the handle's locked buffer, for a caller who may read
//! every ref it names; a ref that is missing or expired fails the open
//! (`EIO`, audited with the ref) rather than rendering a hole.

use std::sync::Arc;

use sealfs::audit::Caller;
use sealfs::template::{self, LoadError, RenderError, Template, MAX_RENDERED_SIZE};
use sealfs::{SecretKey, SecretStore};

use super::handles::Handle;
use super::{from_store, lock, Attr, FsError, OpenMode, Result, SealFs};
use crate::buffer::LockedBuf;
use crate::policy::Access;

/// How the audit log names template `name`.
pub(super) fn target(name: &SecretKey) -> String {
    format!("template:{name}")
}

impl SealFs {
    /// Template `name`, if it exists and `c` may see it; `Ok(None)` if it
    /// exists but `c` may not. A caller sees a template only if it may
    /// read every ref in it; one that names no ref (all its text is its
    /// own) only root and the vault owner see.
    pub(super) fn template_for(&self, c: &Caller, name: &SecretKey) -> Result<Option<Template>> {
        let t = match template::load(&self.vault, name) {
            Ok(Some(t)) => t,
            Ok(None) => return Err(FsError::NotFound),
            Err(LoadError::Store(e)) => return Err(from_store(&e)),
            Err(e) => {
                tracing::warn!(error = %e, "a stored template does not parse");
                return Err(FsError::Io);
            }
        };
        let refs = t.refs();
        if refs.is_empty() && !self.rules.is_admin(c.uid) {
            return Ok(None);
        }
        for r in &refs {
            if !self.access(c, r.scope())?.can_read() {
                return Ok(None);
            }
        }
        Ok(Some(t))
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
        if self.template_for(c, name)?.is_none() {
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
        let Some(t) = self.template_for(c, &name)? else {
            return self.deny(c, "open", target, FsError::NotFound);
        };
        if mode.write {
            return self.deny(c, "open", target, FsError::Denied);
        }
        let slot = self.handle_slot(c, &target)?;
        let rendered = match template::render_from(&self.vault, &t, MAX_RENDERED_SIZE) {
            Ok(out) => {
                self.record(self.event(c, "open", target.clone()));
                for r in t.refs() {
                    self.record(self.event(c, "render", r.to_string()).to(target.clone()));
                }
                out
            }
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
