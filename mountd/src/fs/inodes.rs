//! Inode numbers for the nodes of the tree: stable while the kernel holds
//! a reference, forgotten when it lets go.

use std::collections::HashMap;

use sealfs::ScopeId;
use sealfs::{SecretKey, VaultRef, VaultScope};

use super::{GLOBAL_INO, LAST_FIXED_INO, PRINCIPAL_INO, ROOT_INO, SESSION_INO, TEMPLATES_INO};

/// The two kinds of scope directory under the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScopeKind {
    Principal,
    Session,
}

impl ScopeKind {
    pub(super) fn name(self) -> &'static str {
        match self {
            ScopeKind::Principal => "principal",
            ScopeKind::Session => "session",
        }
    }

    pub(super) fn scope(self, id: ScopeId) -> VaultScope {
        match self {
            ScopeKind::Principal => VaultScope::Principal(id),
            ScopeKind::Session => VaultScope::Session(id),
        }
    }

    pub(super) fn of(scope: &VaultScope) -> Option<Self> {
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
    /// `<scope>/.history`: the scope's secrets with earlier versions.
    History(VaultScope),
    /// `<scope>/.history/<key>`: its versions.
    Versions(VaultRef),
    /// `<scope>/.history/<key>/<N>`: version N, read-only.
    Version(VaultRef, u64),
    /// `templates/`: the templates the caller may render.
    Templates,
    /// `templates/<name>`: a template, rendered on open.
    Template(SecretKey),
}

/// Inode numbers, never reused. The kernel's lookup count of each is kept,
/// and an inode it has forgotten is dropped, so memory stays flat however
/// many names come and go.
pub(super) struct Inodes {
    by_ino: HashMap<u64, Node>,
    by_node: HashMap<Node, u64>,
    lookups: HashMap<u64, u64>,
    next: u64,
}

impl Inodes {
    pub(super) fn new() -> Self {
        let mut i = Inodes {
            by_ino: HashMap::new(),
            by_node: HashMap::new(),
            lookups: HashMap::new(),
            next: LAST_FIXED_INO + 1,
        };
        for (ino, node) in [
            (ROOT_INO, Node::Root),
            (GLOBAL_INO, Node::Scope(VaultScope::Global)),
            (PRINCIPAL_INO, Node::Kind(ScopeKind::Principal)),
            (SESSION_INO, Node::Kind(ScopeKind::Session)),
            (TEMPLATES_INO, Node::Templates),
        ] {
            i.by_ino.insert(ino, node.clone());
            i.by_node.insert(node, ino);
        }
        i
    }

    pub(super) fn ino(&mut self, node: Node) -> u64 {
        if let Some(ino) = self.by_node.get(&node) {
            return *ino;
        }
        let ino = self.next;
        self.next += 1;
        self.by_ino.insert(ino, node.clone());
        self.by_node.insert(node, ino);
        ino
    }

    pub(super) fn node(&self, ino: u64) -> Option<Node> {
        self.by_ino.get(&ino).cloned()
    }

    /// The inode `node` has, or a stand-in number if it has none yet (for
    /// directory listings, which do not count as lookups).
    pub(super) fn peek(&self, node: &Node) -> u64 {
        self.by_node.get(node).copied().unwrap_or(u64::MAX)
    }

    /// The kernel now holds one more reference (a lookup, create or mkdir
    /// reply).
    pub(super) fn remember(&mut self, ino: u64) {
        *self.lookups.entry(ino).or_default() += 1;
    }

    /// The kernel dropped `n` references.
    pub(super) fn forget(&mut self, ino: u64, n: u64) {
        if ino <= LAST_FIXED_INO {
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
    pub(super) fn drop_unreferenced(&mut self, ino: u64) {
        if ino > LAST_FIXED_INO && !self.lookups.contains_key(&ino) {
            if let Some(node) = self.by_ino.remove(&ino) {
                self.by_node.remove(&node);
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        self.by_ino.len()
    }

    /// The inode of `from` now names `to` (what the kernel expects after a
    /// rename); an inode `to` had before is forgotten.
    pub(super) fn rename(&mut self, from: &Node, to: &Node) {
        if let Some(old) = self.by_node.remove(to) {
            self.by_ino.remove(&old);
        }
        if let Some(ino) = self.by_node.remove(from) {
            self.by_ino.insert(ino, to.clone());
            self.by_node.insert(to.clone(), ino);
        }
    }
}
