//! The inode table: which number names which object or prefix, and what we last knew of it.
//!
//! An inode names one name in one directory with one kind: when a name changes kind (a file
//! replaced by a directory), it gets a new inode, so the kernel never sees a file turn into a
//! directory under the same number. Numbers stay stable while the kernel holds a lookup
//! reference and are freed by `forget`, so walking a huge tree does not grow memory for ever.

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use crate::store::UserMetadata;

pub type Ino = u64;
pub const ROOT_INO: Ino = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    File,
    Directory,
}

/// What S3 (or this mount) says about a file or directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attrs {
    pub size: u64,
    pub mtime: SystemTime,
    /// The object's ETag; `None` for implicit directories and files not yet uploaded.
    pub etag: Option<String>,
    /// Mode, owner and times persisted as s3fs-compatible `x-amz-meta-*` headers.
    pub metadata: UserMetadata,
}

impl Attrs {
    pub fn directory() -> Self {
        Attrs {
            size: 0,
            mtime: SystemTime::now(),
            etag: None,
            metadata: UserMetadata::new(),
        }
    }
}

/// Where a node's truth lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// In S3.
    Remote,
    /// Created through this mount and not uploaded yet: it exists only while being written.
    Writing,
    /// A directory made here whose marker the server refused; it lives until it has children.
    LocalDirectory,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub ino: Ino,
    pub parent: Ino,
    pub name: String,
    pub kind: Kind,
    /// Object key for a file; prefix ending in `/` for a directory (root: the mount prefix).
    pub key: String,
    pub attrs: Attrs,
    pub origin: Origin,
    /// When `attrs` were last confirmed by S3; `None` means never (local state).
    pub validated: Option<Instant>,
    /// References the kernel holds (each lookup adds one, forget removes).
    pub lookups: u64,
    /// ETag whose bytes the kernel may keep in its page cache across opens.
    pub page_cache_etag: Option<String>,
    /// Whether the node is still reachable by its name (false after unlink or replacement).
    pub linked: bool,
}

pub struct InodeTable {
    nodes: HashMap<Ino, Node>,
    by_name: HashMap<(Ino, String), Ino>,
    next: Ino,
}

impl InodeTable {
    pub fn new(root_prefix: &str) -> Self {
        let root = Node {
            ino: ROOT_INO,
            parent: ROOT_INO,
            name: String::new(),
            kind: Kind::Directory,
            key: root_prefix.to_string(),
            attrs: Attrs::directory(),
            origin: Origin::Remote,
            validated: None,
            lookups: 1,
            page_cache_etag: None,
            linked: true,
        };
        InodeTable {
            nodes: HashMap::from([(ROOT_INO, root)]),
            by_name: HashMap::new(),
            next: 2,
        }
    }

    pub fn get(&self, ino: Ino) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    pub fn get_mut(&mut self, ino: Ino) -> Option<&mut Node> {
        self.nodes.get_mut(&ino)
    }

    pub fn child(&self, parent: Ino, name: &str) -> Option<&Node> {
        let ino = self.by_name.get(&(parent, name.to_string()))?;
        self.nodes.get(ino)
    }

    /// The key (file) or prefix (directory) a child of `parent` named `name` has.
    pub fn child_key(&self, parent: Ino, name: &str, kind: Kind) -> Option<String> {
        let parent = self.nodes.get(&parent)?;
        Some(match kind {
            Kind::File => format!("{}{name}", parent.key),
            Kind::Directory => format!("{}{name}/", parent.key),
        })
    }

    /// Records what is known of `parent/name`, keeping its inode if the kind is unchanged and
    /// giving a fresh one otherwise. Returns the inode number.
    pub fn upsert(
        &mut self,
        parent: Ino,
        name: &str,
        kind: Kind,
        attrs: Attrs,
        origin: Origin,
        validated: Option<Instant>,
    ) -> Ino {
        if let Some(node) = self.child(parent, name) {
            if node.kind == kind {
                let ino = node.ino;
                if let Some(node) = self.nodes.get_mut(&ino) {
                    node.attrs = attrs;
                    node.origin = origin;
                    node.validated = validated;
                }
                return ino;
            }
            self.unlink(parent, name);
        }
        let key = self.child_key(parent, name, kind).unwrap_or_default();
        let ino = self.next;
        self.next += 1;
        let node = Node {
            ino,
            parent,
            name: name.to_string(),
            kind,
            key,
            attrs,
            origin,
            validated,
            lookups: 0,
            page_cache_etag: None,
            linked: true,
        };
        self.nodes.insert(ino, node);
        self.by_name.insert((parent, name.to_string()), ino);
        ino
    }

    /// `upsert` of attributes from a listing, which carries no user metadata: the metadata
    /// known for the same object version (same ETag; directories have none) is kept, so a
    /// chmod made here or seen by a HEAD does not revert to the defaults on the next `ls`.
    pub fn upsert_listed(
        &mut self,
        parent: Ino,
        name: &str,
        kind: Kind,
        mut attrs: Attrs,
        validated: Option<Instant>,
    ) -> Ino {
        if let Some(node) = self.child(parent, name)
            && node.kind == kind
            && node.attrs.etag == attrs.etag
            && attrs.metadata.is_empty()
        {
            attrs.metadata = node.attrs.metadata.clone();
        }
        self.upsert(parent, name, kind, attrs, Origin::Remote, validated)
    }

    /// Takes `parent/name` out of the namespace. The node itself lives on while the kernel
    /// still holds references to it (open files keep working), and is freed by `forget`.
    pub fn unlink(&mut self, parent: Ino, name: &str) {
        if let Some(ino) = self.by_name.remove(&(parent, name.to_string())) {
            let free = match self.nodes.get_mut(&ino) {
                Some(node) => {
                    node.linked = false;
                    node.lookups == 0
                }
                None => false,
            };
            if free {
                self.nodes.remove(&ino);
            }
        }
    }

    /// Moves a node to a new parent and name, rewriting the keys of everything below it.
    pub fn rename(&mut self, parent: Ino, name: &str, new_parent: Ino, new_name: &str) {
        self.unlink(new_parent, new_name);
        let Some(ino) = self.by_name.remove(&(parent, name.to_string())) else {
            return;
        };
        let Some(kind) = self.nodes.get(&ino).map(|n| n.kind) else {
            return;
        };
        let new_key = self
            .child_key(new_parent, new_name, kind)
            .unwrap_or_default();
        if let Some(node) = self.nodes.get_mut(&ino) {
            let old_key = std::mem::replace(&mut node.key, new_key.clone());
            node.parent = new_parent;
            node.name = new_name.to_string();
            if kind == Kind::Directory {
                for other in self.nodes.values_mut() {
                    if other.ino != ino && other.key.starts_with(&old_key) {
                        other.key = format!("{new_key}{}", &other.key[old_key.len()..]);
                    }
                }
            }
        }
        self.by_name.insert((new_parent, new_name.to_string()), ino);
    }

    /// The kernel took a reference (lookup, create, mkdir, readdirplus entry).
    pub fn remember(&mut self, ino: Ino) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.lookups += 1;
        }
    }

    /// The kernel dropped `count` references; an unreferenced node leaves memory (the name
    /// stays resolvable: a later lookup finds it again, under a new number).
    pub fn forget(&mut self, ino: Ino, count: u64) {
        if ino == ROOT_INO {
            return;
        }
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        node.lookups = node.lookups.saturating_sub(count);
        if node.lookups > 0 || node.origin == Origin::Writing {
            return;
        }
        let (parent, name, linked) = (node.parent, node.name.clone(), node.linked);
        self.nodes.remove(&ino);
        if linked && self.by_name.get(&(parent, name.clone())) == Some(&ino) {
            self.by_name.remove(&(parent, name));
        }
    }

    /// Children of `parent` this table knows of (files being written, fresh mkdirs...).
    pub fn children(&self, parent: Ino) -> impl Iterator<Item = &Node> {
        self.nodes
            .values()
            .filter(move |n| n.parent == parent && n.linked && n.ino != ROOT_INO)
    }

    /// Drops every node the kernel holds no reference to and that has no local state, e.g.
    /// the entries a plain readdir created. Their names stay resolvable by lookup.
    pub fn prune_unreferenced(&mut self) {
        let dead: Vec<Ino> = self
            .nodes
            .values()
            .filter(|n| n.ino != ROOT_INO && n.lookups == 0 && n.origin == Origin::Remote)
            .map(|n| n.ino)
            .collect();
        for ino in dead {
            if let Some(node) = self.nodes.remove(&ino) {
                let name = (node.parent, node.name);
                if self.by_name.get(&name) == Some(&ino) {
                    self.by_name.remove(&name);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(size: u64) -> Attrs {
        Attrs {
            size,
            ..Attrs::directory()
        }
    }

    #[test]
    fn numbers_are_stable_and_kind_changes_get_new_ones() {
        let mut table = InodeTable::new("p/");
        let a = table.upsert(ROOT_INO, "a", Kind::File, file(1), Origin::Remote, None);
        assert_eq!(table.get(a).unwrap().key, "p/a");
        let again = table.upsert(ROOT_INO, "a", Kind::File, file(2), Origin::Remote, None);
        assert_eq!(a, again);
        assert_eq!(table.get(a).unwrap().attrs.size, 2);
        let dir = table.upsert(
            ROOT_INO,
            "a",
            Kind::Directory,
            Attrs::directory(),
            Origin::Remote,
            None,
        );
        assert_ne!(a, dir);
        assert_eq!(table.get(dir).unwrap().key, "p/a/");
    }

    #[test]
    fn forget_frees_nodes_and_unlinked_nodes_live_while_referenced() {
        let mut table = InodeTable::new("");
        let a = table.upsert(ROOT_INO, "a", Kind::File, file(1), Origin::Remote, None);
        table.remember(a);
        table.unlink(ROOT_INO, "a");
        assert!(
            table.get(a).is_some(),
            "open/looked-up node must survive unlink"
        );
        assert!(table.child(ROOT_INO, "a").is_none());
        table.forget(a, 1);
        assert!(table.get(a).is_none());
        for i in 0..1000 {
            let ino = table.upsert(
                ROOT_INO,
                &format!("f{i}"),
                Kind::File,
                file(0),
                Origin::Remote,
                None,
            );
            table.remember(ino);
            table.forget(ino, 1);
        }
        assert_eq!(table.len(), 1, "only the root remains");
    }

    #[test]
    fn listings_keep_the_metadata_of_the_same_version() {
        let mut table = InodeTable::new("");
        let with_mode = Attrs {
            etag: Some("\"v1\"".into()),
            metadata: UserMetadata::from([("mode".to_string(), "33152".to_string())]),
            ..file(1)
        };
        let a = table.upsert(ROOT_INO, "a", Kind::File, with_mode, Origin::Remote, None);
        let listed = |etag: &str| Attrs {
            etag: Some(etag.into()),
            ..file(1)
        };
        table.upsert_listed(ROOT_INO, "a", Kind::File, listed("\"v1\""), None);
        assert_eq!(table.get(a).unwrap().attrs.metadata["mode"], "33152");
        table.upsert_listed(ROOT_INO, "a", Kind::File, listed("\"v2\""), None);
        assert!(table.get(a).unwrap().attrs.metadata.is_empty());
    }

    #[test]
    fn renaming_a_directory_rewrites_keys_below_it() {
        let mut table = InodeTable::new("");
        let d = table.upsert(
            ROOT_INO,
            "d",
            Kind::Directory,
            Attrs::directory(),
            Origin::Remote,
            None,
        );
        let f = table.upsert(d, "f", Kind::File, file(1), Origin::Remote, None);
        table.rename(ROOT_INO, "d", ROOT_INO, "e");
        assert_eq!(table.get(d).unwrap().key, "e/");
        assert_eq!(table.get(f).unwrap().key, "e/f");
        assert!(table.child(ROOT_INO, "d").is_none());
        assert_eq!(table.child(ROOT_INO, "e").unwrap().ino, d);
    }
}
