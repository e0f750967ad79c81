//! The namespace: the one owner of what this mount knows about names - nodes (inodes), which
//! names of each directory a listing confirmed, and remembered misses - behind one lock.
//!
//! Everything outside this module reads nodes through accessors and changes them through named
//! transitions (`listed`, `looked_up`, `created`, `uploaded`, `removed`, `renamed`, ...), each of
//! which updates the node, its directory's view and the misses together. A listing entry *is*
//! a node (a node the kernel holds no reference to is just an entry), so there is no second
//! copy of a name's attributes to keep in step.
//!
//! **Inode numbers.** An inode names one name in one directory with one kind: when a name changes
//! kind (a file replaced by a directory) it gets a new number, so the kernel never sees a file
//! turn into a directory. Numbers stay stable while the kernel holds a reference; nodes the
//! kernel does not reference (and no directory stream is about to hand out) are dropped when
//! the table grows past its node limit (their directories then forget that they were listed),
//! so walking a huge tree stays bounded by what the kernel holds, and no listing is ever cut
//! short by it: readdir hands out what it pinned.
//!
//! **Freshness.** A name is answered without a request when its node was confirmed within the
//! TTL, when a listing within the TTL covered it (a hit or a definite miss), or when a miss was
//! remembered within the TTL. Nodes this mount is writing, and directories it made whose marker
//! the server refused, are local truth and never expire.

mod coverage;
mod node;
mod open_file;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime};

pub use node::{Attrs, ContentType, Ino, Kind, MimeType, Node, Origin, ROOT_INO};
pub use open_file::{
    Access, DeferredDelete, OpenFile, PendingUpload, ReleaseWait, UploadInFlight, WriteStatus,
};

use super::clock::Clock;
use super::error::{FsError, FsResult};
use crate::store::UserMetadata;

/// Nodes kept before those the kernel does not reference are dropped (see ARCHITECTURE.md for
/// what one costs); `--max-cached-nodes` sets it.
pub const DEFAULT_NODE_LIMIT: usize = 300_000;
/// Misses remembered outside listings.
const MAX_MISSES: usize = 10_000;

/// What the namespace can say about a name without asking S3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Found(Ino),
    Missing,
    /// Not known within the TTL: S3 must be asked.
    Unknown,
}

/// Some stores answer a write without an ETag (and a HEAD could not find it either): the
/// version is then unknown, and the next open learns it from its first GET, pinning nothing
/// to an empty ETag.
fn known_etag(etag: String) -> Option<String> {
    (!etag.is_empty()).then_some(etag)
}

/// A file after another in its directory, as cross-file prefetch sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sibling {
    pub ino: Ino,
    pub name: String,
    pub key: String,
    pub etag: String,
    pub size: u64,
    /// Confirmed within the TTL: its ETag may pin a fetch.
    pub fresh: bool,
}

/// One LIST page (or a whole listing) of a directory, ready to be installed.
#[derive(Debug, Default)]
pub struct ListedPage {
    /// The listing started after this relative key (exclusive); `None`: from the start.
    pub after: Option<String>,
    /// The last relative key or common prefix returned, when more may follow; `None`: the end.
    pub through: Option<String>,
    pub entries: Vec<(String, Kind, Attrs)>,
    /// When the first request was sent: what this mount changed since is newer than the page.
    pub started: Option<Instant>,
    /// When the last page arrived; the listing is trusted for the TTL from then.
    pub at: Option<Instant>,
}

pub struct Namespace {
    /// Boxed: the table then holds a pointer per slot, not a node, so its spare capacity
    /// (up to half of it after a growth) costs 16 bytes a slot instead of a node's size.
    nodes: HashMap<Ino, Box<Node>>,
    /// Linked children of each directory, by name (sorted, so a listed range is a range here).
    children: HashMap<Ino, BTreeMap<Box<str>, Ino>>,
    misses: HashMap<(Ino, String), Instant>,
    next: Ino,
    ttl: Option<Duration>,
    /// How long a remembered miss is trusted (`--negative-metadata-ttl`).
    miss_ttl: Option<Duration>,
    clock: Clock,
    /// Keys whose DELETE waits in some node's `deletes_at_close`, counted: their objects are
    /// still in S3, but no listing or HEAD may bring their names back.
    waiting_deletes: HashMap<String, u32>,
    /// Nodes kept before unreferenced ones are pruned.
    node_limit: usize,
    /// The table size that triggers the next prune.
    prune_at: usize,
}

impl Namespace {
    pub fn new(root_prefix: &str, ttl: Option<Duration>, clock: Clock) -> Self {
        let mut root = Node::new(
            ROOT_INO,
            ROOT_INO,
            "",
            Kind::Directory,
            root_prefix.to_string(),
        );
        root.lookups = 1;
        Namespace {
            nodes: HashMap::from([(ROOT_INO, Box::new(root))]),
            children: HashMap::new(),
            misses: HashMap::new(),
            next: ROOT_INO + 1,
            ttl,
            miss_ttl: ttl,
            clock,
            waiting_deletes: HashMap::new(),
            node_limit: DEFAULT_NODE_LIMIT,
            prune_at: DEFAULT_NODE_LIMIT,
        }
    }

    /// Prunes unreferenced nodes past `limit` nodes instead of [`DEFAULT_NODE_LIMIT`].
    pub fn with_node_limit(mut self, limit: usize) -> Self {
        self.node_limit = limit.max(1);
        self.prune_at = self.node_limit;
        self
    }

    /// Misses trusted for `ttl` instead of the metadata TTL.
    pub fn with_miss_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.miss_ttl = ttl;
        self
    }

    /// Whether something confirmed at `at` may still be trusted.
    pub fn fresh(&self, at: Option<Instant>) -> bool {
        self.fresh_for(at, self.ttl)
    }

    fn fresh_for(&self, at: Option<Instant>, ttl: Option<Duration>) -> bool {
        match (at, ttl) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(at), Some(ttl)) => self.clock.since(at) < ttl,
        }
    }

    // ----- queries -----

    pub fn get(&self, ino: Ino) -> Option<&Node> {
        self.nodes.get(&ino).map(|node| &**node)
    }

    /// The node, or ENOENT.
    pub fn node(&self, ino: Ino) -> FsResult<&Node> {
        self.get(ino).ok_or(FsError::NotFound)
    }

    pub fn child(&self, parent: Ino, name: &str) -> Option<&Node> {
        let ino = self.children.get(&parent)?.get(name)?;
        self.get(*ino)
    }

    /// The key (file) or prefix (directory) a child of `parent` named `name` has.
    pub fn child_key(&self, parent: Ino, name: &str, kind: Kind) -> FsResult<String> {
        let parent = self.directory(parent)?;
        Ok(match kind {
            Kind::File => format!("{}{name}", parent.key),
            Kind::Directory => format!("{}{name}/", parent.key),
        })
    }

    /// The key a new child would get: ENAMETOOLONG past S3's 1,024 bytes.
    pub fn new_child_key(&self, parent: Ino, name: &str, kind: Kind) -> FsResult<String> {
        let key = self.child_key(parent, name, kind)?;
        if key.len() > crate::store::limits::S3_MAX_KEY_LEN {
            return Err(FsError::NameTooLong);
        }
        Ok(key)
    }

    /// The directory node `ino`, or ENOENT / ENOTDIR.
    pub fn directory(&self, ino: Ino) -> FsResult<&Node> {
        let node = self.node(ino)?;
        if node.kind != Kind::Directory {
            return Err(FsError::NotDirectory);
        }
        Ok(node)
    }

    /// Answers `parent/name` from what is known within the TTL.
    pub fn answer(&self, parent: Ino, name: &str) -> FsResult<Answer> {
        let dir = self.directory(parent)?;
        if let Some(node) = self.child(parent, name)
            && (node.is_local()
                || node.is_open_for_writing()
                || node.metadata_dirty()
                || self.fresh(node.validated))
        {
            return Ok(Answer::Found(node.ino));
        }
        // A listing covered the name. `listed` unlinks every covered child it did not see
        // unless the child changed here after the listing started, so a child still linked
        // exists, even one whose own validation (a GET or an upload made while the listing
        // ran) is older than the listing's; an absent one is a miss, trusted for the miss TTL.
        let covered = dir.coverage().covering(name);
        match self.child(parent, name) {
            Some(node) if self.fresh(covered) => return Ok(Answer::Found(node.ino)),
            None if self.fresh_for(covered, self.miss_ttl) => return Ok(Answer::Missing),
            _ => {}
        }
        let missed = self.misses.get(&(parent, name.to_string())).copied();
        if self.fresh_for(missed, self.miss_ttl) {
            return Ok(Answer::Missing);
        }
        Ok(Answer::Unknown)
    }

    /// Whether `ino` is what its name resolves to within the TTL, with no request: its
    /// attributes may be trusted. Unlinked nodes (open files) are their own truth.
    pub fn is_current(&self, ino: Ino) -> bool {
        self.get(ino).is_some_and(|node| {
            !node.linked || self.answer(node.parent, &node.name).ok() == Some(Answer::Found(ino))
        })
    }

    /// Whether the whole directory was listed within the TTL.
    pub fn listed_completely(&self, dir: Ino) -> bool {
        self.get(dir)
            .is_some_and(|d| self.fresh(d.coverage().complete_at()))
    }

    /// Entries of the directory's last complete listing, if it had one.
    pub fn last_listing_len(&self, dir: Ino) -> Option<usize> {
        self.get(dir).and_then(|d| d.coverage().complete_len())
    }

    /// The linked children of `dir`, by name.
    pub fn children(&self, dir: Ino) -> impl Iterator<Item = &Node> {
        self.children
            .get(&dir)
            .into_iter()
            .flat_map(|names| names.values())
            .filter_map(|ino| self.get(*ino))
    }

    /// Up to `count` files of `dir` after `name` in name order, with what a prefetch needs.
    pub fn siblings_after(&self, dir: Ino, name: &str, count: usize) -> Vec<Sibling> {
        use std::ops::Bound::{Excluded, Unbounded};
        let Some(names) = self.children.get(&dir) else {
            return Vec::new();
        };
        names
            .range::<str, _>((Excluded(name), Unbounded))
            .filter_map(|(_, ino)| self.get(*ino))
            .filter(|n| n.kind == Kind::File && !n.is_local())
            .filter_map(|n| {
                Some(Sibling {
                    ino: n.ino,
                    name: n.name.to_string(),
                    key: n.key.to_string(),
                    etag: n.attrs.etag.clone()?,
                    size: n.attrs.size,
                    fresh: self.fresh(n.validated),
                })
            })
            .take(count)
            .collect()
    }

    pub fn has_local_children(&self, dir: Ino) -> bool {
        self.children(dir).any(|c| c.is_local())
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    // ----- transitions: what S3 told us -----

    /// A LIST page of `dir` arrived: its entries are the truth for its range as of `page.at`.
    /// Names in the range that it did not return are gone (unless they are local).
    pub fn listed(&mut self, dir: Ino, page: ListedPage) {
        let Some(at) = page.at else { return };
        let started = page.started.unwrap_or(at);
        if self.get(dir).is_none_or(|d| d.kind != Kind::Directory) {
            return;
        }
        // Before the page goes in, so that nothing it brings is dropped before it is used.
        self.prune_if_large();
        let count = page.entries.len();
        let range = KeyRange {
            after: page.after,
            through: page.through,
        };
        // What the range held before the page: only those can be gone. A first listing of a
        // directory finds nothing here, and skips the search below.
        let before = self.children_in_range(dir, range.after.as_deref(), range.through.as_deref());
        let mut returned = Vec::with_capacity(count);
        for (name, kind, attrs) in page.entries {
            if kind == Kind::File && self.key_delete_waiting(dir, &name) {
                // Unlinked here while open: its object waits for the last close, the name is
                // gone.
                continue;
            }
            // Removed or changed here while the listing ran: this mount knows better.
            let removed_since = !self.misses.is_empty()
                && self
                    .misses
                    .get(&(dir, name.clone()))
                    .is_some_and(|missed| *missed >= started);
            let changed_since = self
                .child(dir, &name)
                .is_some_and(|n| n.validated.is_some_and(|v| v >= started));
            if !removed_since && !changed_since {
                self.upsert_remote(dir, &name, kind, attrs, at, true);
            }
            returned.push(name);
        }
        let gone: Vec<String> = if before.is_empty() {
            Vec::new()
        } else {
            returned.sort_unstable();
            before
                .into_iter()
                .filter_map(|ino| self.get(ino))
                .filter(|c| c.linked() && c.parent == dir)
                .filter(|c| !c.is_local() && !c.is_open_for_writing() && !c.metadata_dirty())
                .filter(|c| returned.binary_search_by(|r| (**r).cmp(&*c.name)).is_err())
                .filter(|c| c.validated.is_none_or(|v| v < started))
                .map(|c| c.name.to_string())
                .collect()
        };
        for name in gone {
            self.unlink(dir, &name);
        }
        self.misses
            .retain(|(d, name), _| *d != dir || !range.covers_name(name));
        if let Some(node) = self.nodes.get_mut(&dir) {
            node.coverage_mut()
                .add(range.after, range.through, (started, at), count);
        }
    }

    /// The linked children of `dir` whose keys (relative to it, `name/` for a directory) lie
    /// in (`after`, `through`], in that key order: what one LIST page of the range shows,
    /// with what this mount holds locally in it.
    pub fn children_in_range(
        &self,
        dir: Ino,
        after: Option<&str>,
        through: Option<&str>,
    ) -> Vec<Ino> {
        use std::ops::Bound::{Included, Unbounded};
        let Some(names) = self.children.get(&dir) else {
            return Vec::new();
        };
        let range = KeyRange {
            after: after.map(str::to_string),
            through: through.map(str::to_string),
        };
        // A directory `n` sorts as `n/`, after names `n` + a byte below `/`: the only names
        // below `after` that can lie in the range are directories that are prefixes of it.
        let lower = after.map(|a| a.trim_end_matches('/'));
        let prefixes = after.into_iter().flat_map(|a| {
            a.char_indices()
                .skip(1)
                .map(move |(i, _)| &a[..i])
                .filter_map(|prefix| names.get(prefix))
        });
        let upper = through.map_or(Unbounded, Included);
        let lower = lower.map_or(Unbounded, Included);
        let mut found: Vec<(Cow<'_, str>, Ino)> = prefixes
            .chain(names.range::<str, _>((lower, upper)).map(|(_, ino)| ino))
            .filter_map(|ino| self.get(*ino))
            .map(|node| (relative_key(node), node.ino))
            .filter(|(key, _)| range.holds(key))
            .collect();
        found.sort_unstable();
        found.dedup();
        found.into_iter().map(|(_, ino)| ino).collect()
    }

    /// Up to `count` linked children of `dir` after the name `after`, in name order.
    pub fn children_after(&self, dir: Ino, after: Option<&str>, count: usize) -> Vec<Ino> {
        use std::ops::Bound::{Excluded, Unbounded};
        let Some(names) = self.children.get(&dir) else {
            return Vec::new();
        };
        let lower = after.map_or(Unbounded, Excluded);
        names
            .range::<str, _>((lower, Unbounded))
            .map(|(_, ino)| *ino)
            .take(count)
            .collect()
    }

    /// A directory stream holds these nodes until it hands them to the kernel: they are not
    /// pruned meanwhile.
    pub fn pin(&mut self, inos: &[Ino]) {
        for ino in inos {
            if let Some(node) = self.nodes.get_mut(ino) {
                node.pins += 1;
            }
        }
    }

    pub fn unpin(&mut self, inos: &[Ino]) {
        for ino in inos {
            if let Some(node) = self.nodes.get_mut(ino) {
                node.pins = node.pins.saturating_sub(1);
            }
        }
    }

    /// A HEAD/LIST pair answered for one name: `Some` is what exists, `None` a miss.
    pub fn looked_up(
        &mut self,
        parent: Ino,
        name: &str,
        found: Option<(Kind, Attrs)>,
        at: Instant,
    ) -> Option<Ino> {
        self.prune_if_large();
        let found = found
            .filter(|(kind, _)| *kind == Kind::Directory || !self.key_delete_waiting(parent, name));
        match found {
            Some((kind, attrs)) => self.upsert_remote(parent, name, kind, attrs, at, false),
            None => {
                let stale = self
                    .child(parent, name)
                    .is_some_and(|n| !n.is_local() && !n.is_open_for_writing());
                if stale {
                    self.unlink(parent, name);
                }
                self.remember_miss(parent, name, at);
                None
            }
        }
    }

    /// A HEAD or GET reported the object's current attributes.
    pub fn refreshed(&mut self, ino: Ino, attrs: Attrs, at: Instant) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            if node.metadata_dirty() && node.attrs.etag == attrs.etag {
                // Our newer metadata is on its way to the object.
                node.validated = Some(at);
                return;
            }
            if node.attrs.etag != attrs.etag {
                node.forget_page_cache();
            }
            node.attrs = attrs;
            node.validated = Some(at);
            node.set_metadata_dirty(None);
        }
    }

    /// A HEAD sent beside a listing reported a file's metadata: kept if it is the version the
    /// listing found.
    pub fn metadata_seen(&mut self, ino: Ino, attrs: Attrs, at: Instant) {
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        match node.kind {
            Kind::File if node.attrs.etag == attrs.etag => self.refreshed(ino, attrs, at),
            // A directory's marker object: its metadata, the directory's own attributes stay.
            Kind::Directory if !node.metadata_dirty() => {
                node.attrs.metadata = attrs.metadata;
                node.attrs.content_type = attrs.content_type;
            }
            _ => {}
        }
    }

    /// A HEAD found no object (a directory without a marker): nothing more to fetch for it.
    pub fn metadata_seen_none(&mut self, ino: Ino) {
        if let Some(node) = self.nodes.get_mut(&ino)
            && node.kind == Kind::Directory
        {
            node.attrs.content_type = ContentType::Known(None);
        }
    }

    /// A GET pinned to `etag` succeeded at `at`: that version was current then.
    pub fn confirmed(&mut self, ino: Ino, etag: &str, at: Instant) {
        if let Some(node) = self.nodes.get_mut(&ino)
            && node.attrs.etag.as_deref() == Some(etag)
            && node.validated.is_none_or(|v| v < at)
        {
            node.validated = Some(at);
        }
    }

    /// A HEAD found the object gone: forget the name, keep the number for open handles.
    pub fn vanished(&mut self, ino: Ino) {
        let Some(node) = self.nodes.get(&ino) else {
            return;
        };
        let (parent, name, linked) = (node.parent, node.name.to_string(), node.linked);
        if linked && self.child(parent, &name).is_some_and(|n| n.ino == ino) {
            self.unlink(parent, &name);
            self.remember_miss(parent, &name, self.clock.now());
        }
    }

    // ----- transitions: what this mount did -----

    /// A file created here, open through `handle`: it exists only here until its upload
    /// succeeds.
    pub fn created(&mut self, parent: Ino, name: &str, attrs: Attrs, handle: u64) -> FsResult<Ino> {
        let key = self.new_child_key(parent, name, Kind::File)?;
        let ino = self.insert_fresh(parent, name, Kind::File, key);
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.attrs = attrs;
            node.lookups = 1;
            node.local_mut().open = OpenFile::created(handle);
        }
        Ok(ino)
    }

    /// A directory made here (its marker uploaded, or refused and kept locally). It is known
    /// to be empty, so lookups in it need no request until the TTL runs out.
    pub fn made_directory(&mut self, parent: Ino, name: &str, origin: Origin) -> FsResult<Ino> {
        let key = self.new_child_key(parent, name, Kind::Directory)?;
        let ino = self.insert_fresh(parent, name, Kind::Directory, key);
        let now = self.clock.now();
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.origin = origin;
            node.validated = Some(now);
            node.lookups = 1;
            node.coverage_mut().add(None, None, (now, now), 0);
        }
        Ok(ino)
    }

    /// An object this mount stored whole (a symlink, a special file): it exists in S3 now.
    /// Takes a kernel reference, as the reply is an entry.
    pub fn stored(&mut self, parent: Ino, name: &str, attrs: Attrs) -> FsResult<Ino> {
        let key = self.new_child_key(parent, name, Kind::File)?;
        self.overwritten(&key);
        let ino = self
            .upsert_remote(parent, name, Kind::File, attrs, self.clock.now(), false)
            .ok_or(FsError::NotFound)?;
        self.remembered(ino);
        Ok(ino)
    }

    /// Handle `handle` was opened on an existing file.
    pub fn handle_opened(&mut self, ino: Ino, handle: u64, access: Access) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.open_file_mut().opened(handle, access);
        }
    }

    /// A close(2) of a descriptor of `handle` was seen.
    pub fn handle_flushed(&mut self, ino: Ino, handle: u64) {
        if let Some(node) = self.nodes.get_mut(&ino)
            && node.local.is_some()
        {
            node.open_file_mut().flushed(handle);
        }
    }

    /// A write handle's release began: its last upload is in flight, and operations that must
    /// act on the closed file await it, until the returned value is dropped. Also returns the
    /// uploads of the file's releases that began earlier, for this one to await first.
    pub fn release_started(
        &mut self,
        ino: Ino,
        handle: u64,
    ) -> Option<(UploadInFlight, Vec<PendingUpload>)> {
        self.nodes
            .get_mut(&ino)
            .filter(|node| node.local.is_some())
            .and_then(|node| node.open_file_mut().releasing(handle))
    }

    /// A handle's release is done (a writer's last upload landed or was abandoned). Returns the
    /// deletes that waited for the file's last close here.
    pub fn handle_released(&mut self, ino: Ino, handle: u64) -> Vec<DeferredDelete> {
        if let Some(node) = self.nodes.get_mut(&ino)
            && node.local.is_some()
        {
            node.open_file_mut().released(handle);
        }
        self.closed(ino)
    }

    /// What an operation that must act on `ino` closed waits for first.
    pub fn release_wait(&self, ino: Ino) -> ReleaseWait {
        self.nodes
            .get(&ino)
            .map_or(ReleaseWait::Nothing, |node| node.open_file().release_wait())
    }

    /// The write handles of `ino` whose release has not begun.
    pub fn live_writers(&self, ino: Ino) -> Vec<u64> {
        self.nodes
            .get(&ino)
            .map(|node| node.open_file().live_writers())
            .unwrap_or_default()
    }

    fn closed(&mut self, ino: Ino) -> Vec<DeferredDelete> {
        let deletes = match self.nodes.get_mut(&ino) {
            Some(node) if !node.is_open() => node.take_deletes_at_close(),
            _ => Vec::new(),
        };
        for delete in &deletes {
            self.stop_waiting(&delete.key);
        }
        self.free_if_unused(ino);
        deletes
    }

    /// Whether the file `dir/name`'s object is one a deferred delete will remove.
    fn key_delete_waiting(&self, dir: Ino, name: &str) -> bool {
        !self.waiting_deletes.is_empty()
            && self
                .child_key(dir, name, Kind::File)
                .is_ok_and(|key| self.delete_waiting(&key))
    }

    /// Whether a deferred delete waits for some key below the directory prefix `prefix`.
    pub fn delete_waiting_below(&self, prefix: &str) -> bool {
        self.waiting_deletes
            .keys()
            .any(|key| key.starts_with(prefix))
    }

    /// Whether `key`'s object is one a deferred delete will remove: gone for this mount.
    pub fn delete_waiting(&self, key: &str) -> bool {
        self.waiting_deletes.contains_key(key)
    }

    fn wait_for_close(&mut self, ino: Ino, delete: DeferredDelete) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            *self.waiting_deletes.entry(delete.key.clone()).or_default() += 1;
            node.open_file_mut().wait_for_close(delete);
        }
    }

    fn stop_waiting(&mut self, key: &str) {
        if let Some(count) = self.waiting_deletes.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                self.waiting_deletes.remove(key);
            }
        }
    }

    /// `key` (at `etag`) is to be deleted once `ino` is no longer open here; a node that is
    /// not open has it handed back to delete now.
    pub fn delete_at_close(
        &mut self,
        ino: Ino,
        key: String,
        etag: Option<String>,
    ) -> Option<DeferredDelete> {
        let delete = DeferredDelete { key, etag };
        match self.nodes.get(&ino) {
            Some(node) if node.is_open() => {
                self.wait_for_close(ino, delete);
                None
            }
            _ => Some(delete),
        }
    }

    /// Whether a deferred delete may go now. Not when a linked name holds its key again: a file
    /// in S3 there is newer (kept); one being written there takes the delete over, so it still
    /// happens if that file is unlinked before its upload replaces the object.
    pub fn may_delete(&mut self, delete: &DeferredDelete) -> bool {
        let Some(holder) = self.linked_at_key(&delete.key) else {
            return true;
        };
        if self
            .nodes
            .get(&holder)
            .is_some_and(|n| n.write_status() == WriteStatus::Created && n.is_open())
        {
            self.wait_for_close(holder, delete.clone());
        }
        false
    }

    /// Every deferred delete of every node (unmount: nothing stays open).
    pub fn take_all_deferred_deletes(&mut self) -> Vec<DeferredDelete> {
        self.waiting_deletes.clear();
        self.nodes
            .values_mut()
            .flat_map(|node| node.take_deletes_at_close())
            .collect()
    }

    /// Open files below the directory prefix `prefix`: (inode, key, ETag).
    pub fn open_files_below(&self, prefix: &str) -> Vec<(Ino, String, Option<String>)> {
        self.nodes
            .values()
            .filter(|n| n.kind == Kind::File && n.linked && n.is_open())
            .filter(|n| !n.is_local() && n.key.starts_with(prefix))
            .map(|n| (n.ino, n.key.to_string(), n.attrs.etag.clone()))
            .collect()
    }

    /// The linked file whose key is `key`, found by walking the names below the root.
    fn linked_at_key(&self, key: &str) -> Option<Ino> {
        let root = self.nodes.get(&ROOT_INO)?;
        let relative = key.strip_prefix(&*root.key)?;
        let mut ino = ROOT_INO;
        for name in relative.split('/') {
            ino = *self.children.get(&ino)?.get(name)?;
        }
        (self.nodes.get(&ino)?.kind == Kind::File).then_some(ino)
    }

    /// Data was written through an open handle: the size grows to `end`, and `metadata` (the
    /// file's without stored times, which become the upload's) goes with the upload.
    pub fn data_written(&mut self, ino: Ino, end: u64, metadata: UserMetadata) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.attrs.size = node.attrs.size.max(end);
            node.attrs.mtime = SystemTime::now();
            node.attrs.metadata = metadata;
        }
    }

    /// An open file's local size changed (truncate, O_TRUNC); S3 learns at upload.
    pub fn truncated(&mut self, ino: Ino, size: u64) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.attrs.size = size;
            node.attrs.mtime = SystemTime::now();
        }
    }

    /// The object now holds what this mount wrote: `etag`, `size` bytes, `metadata`, and no
    /// Content-Type (we never send one).
    pub fn uploaded(&mut self, ino: Ino, etag: String, size: u64, metadata: UserMetadata) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.attrs.etag = known_etag(etag);
            node.attrs.size = size;
            // The object's LastModified, which a later HEAD or listing shows, is about now.
            node.attrs.mtime = SystemTime::now();
            node.attrs.metadata = metadata;
            node.attrs.content_type = ContentType::Known(None);
            node.attrs.last_modified = None;
            if node.local.is_some() {
                node.open_file_mut().uploaded();
            }
            node.validated = Some(self.clock.now());
            node.set_metadata_dirty(None);
        }
        if let Some(key) = self.nodes.get(&ino).map(|n| n.key.to_string()) {
            self.overwritten(&key);
        }
    }

    /// This mount wrote a new object at `key`: it replaced the object a deferred delete of the
    /// key meant, whichever node's last close was to delete it.
    fn overwritten(&mut self, key: &str) {
        if self.waiting_deletes.remove(key).is_some() {
            for node in self.nodes.values_mut() {
                if let Some(local) = &mut node.local {
                    local.open.forget_deletes_of(key);
                }
            }
        }
    }

    /// The upload of a file failed. A file that existed only here is gone at once: other opens
    /// see no file, and forget may free the node.
    pub fn upload_failed(&mut self, ino: Ino) {
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        if node.local.is_none() || !node.open_file_mut().upload_failed() {
            return;
        }
        let (parent, name, linked) = (node.parent, node.name.to_string(), node.linked);
        if linked {
            self.unlink(parent, &name);
            self.remember_miss(parent, &name, self.clock.now());
        }
    }

    /// chmod/chown/utimens: `metadata` is what the object must carry. `dirty` says it is not
    /// on the object yet; `etag` is the object's new ETag when it is.
    pub fn attrs_changed(
        &mut self,
        ino: Ino,
        metadata: UserMetadata,
        etag: Option<String>,
        dirty: bool,
    ) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.attrs.metadata = metadata;
            if let Some(etag) = etag {
                node.attrs.etag = Some(etag);
                node.attrs.last_modified = None;
                node.validated = Some(self.clock.now());
            }
            let dirty_since = match (dirty, node.metadata_dirty_since()) {
                (true, Some(since)) => Some(since),
                (true, None) => Some(self.clock.now()),
                (false, _) => None,
            };
            node.set_metadata_dirty(dirty_since);
        }
    }

    /// Takes a pending metadata change for persisting: (key, metadata, content type, ETag).
    /// Whoever takes it copies it onto the object; it is no longer pending meanwhile.
    pub fn take_dirty_metadata(
        &mut self,
        ino: Ino,
    ) -> Option<(String, UserMetadata, ContentType, Option<String>)> {
        let node = self.nodes.get_mut(&ino)?;
        node.metadata_dirty_since()?;
        node.set_metadata_dirty(None);
        Some((
            node.key.to_string(),
            node.attrs.metadata.clone(),
            node.attrs.content_type.clone(),
            node.attrs.etag.clone(),
        ))
    }

    /// Puts back a change whose persisting failed, so a later attempt (or unmount) retries it.
    pub fn metadata_still_dirty(&mut self, ino: Ino) {
        if let Some(node) = self.nodes.get_mut(&ino)
            && !node.metadata_dirty()
        {
            node.set_metadata_dirty(Some(Instant::now()));
        }
    }

    /// The object's metadata change landed (by a CopyObject onto itself), as `etag`.
    pub fn metadata_persisted(&mut self, ino: Ino, etag: String, content_type: ContentType) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.attrs.etag = known_etag(etag);
            node.attrs.content_type = content_type;
            // The copy moved LastModified: the next listing tells it.
            node.attrs.last_modified = None;
            node.validated = Some(self.clock.now());
        }
        self.free_if_unused(ino);
    }

    /// Nodes whose metadata is not on their objects yet, oldest change first.
    pub fn dirty_metadata(&self) -> Vec<(Ino, Instant)> {
        let mut dirty: Vec<(Ino, Instant)> = self
            .nodes
            .values()
            .filter_map(|n| n.metadata_dirty_since().map(|since| (n.ino, since)))
            .collect();
        dirty.sort_by_key(|(_, since)| *since);
        dirty
    }

    /// `parent/name` was deleted here (unlink, rmdir).
    pub fn removed(&mut self, parent: Ino, name: &str) {
        self.unlink(parent, name);
        self.remember_miss(parent, name, self.clock.now());
    }

    /// `parent/name` now lives at `new_parent/new_name` (replacing what was there). `etag` is a
    /// renamed file's new ETag (a copy may change it).
    pub fn renamed(
        &mut self,
        parent: Ino,
        name: &str,
        new_parent: Ino,
        new_name: &str,
        etag: Option<String>,
    ) -> FsResult<()> {
        let ino = self.child(parent, name).ok_or(FsError::NotFound)?.ino;
        let kind = self.node(ino)?.kind;
        let new_key = self.new_child_key(new_parent, new_name, kind)?;
        if kind == Kind::File && etag.is_some() {
            // The rename's COPY is the object there now. (A file not uploaded yet replaces
            // it only with its upload, or, if unlinked first, never: the delete still waits.)
            self.overwritten(&new_key);
        }
        let target = self.child(new_parent, new_name).map(|n| n.ino);
        if let Some(node) = target.and_then(|t| self.nodes.get_mut(&t)) {
            node.local_mut().replaced = true;
        }
        self.unlink(new_parent, new_name);
        if let Some(names) = self.children.get_mut(&parent) {
            names.remove(name);
        }
        self.remember_miss(parent, name, self.clock.now());
        self.misses.remove(&(new_parent, new_name.to_string()));
        let Some(node) = self.nodes.get_mut(&ino) else {
            return Ok(());
        };
        let old_key = std::mem::replace(&mut node.key, new_key.as_str().into());
        node.parent = new_parent;
        node.name = new_name.into();
        node.forget_page_cache();
        if let Some(etag) = etag {
            node.attrs.etag = known_etag(etag);
            node.attrs.last_modified = None;
            node.validated = Some(self.clock.now());
        }
        if kind == Kind::Directory {
            // Keys below changed: rewrite them, and let the moved tree be listed afresh.
            for other in self.nodes.values_mut() {
                if other.ino != ino && other.key.starts_with(&*old_key) {
                    other.key = format!("{new_key}{}", &other.key[old_key.len()..]).into();
                    other.clear_coverage();
                }
            }
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.clear_coverage();
            }
        }
        self.children
            .entry(new_parent)
            .or_default()
            .insert(new_name.into(), ino);
        Ok(())
    }

    /// A directory rename copied the object now at `key` (the file's new key): the copy's
    /// ETag (new for a multipart source) and a LastModified the next listing tells.
    pub fn copied(&mut self, key: &str, etag: String) {
        let Some(ino) = self.linked_at_key(key) else {
            return;
        };
        if let Some(node) = self.nodes.get_mut(&ino) {
            let etag = known_etag(etag);
            if node.attrs.etag != etag {
                node.attrs.etag = etag;
                node.forget_page_cache();
            }
            node.attrs.last_modified = None;
        }
    }

    /// The kernel took a reference (lookup, create, mkdir, readdirplus entry).
    pub fn remembered(&mut self, ino: Ino) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.lookups += 1;
        }
    }

    /// The kernel dropped `count` references. A linked node stays as its directory's entry;
    /// an unlinked one is freed once nothing uses it.
    pub fn forgot(&mut self, ino: Ino, count: u64) {
        if ino == ROOT_INO {
            return;
        }
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.lookups = node.lookups.saturating_sub(count);
        }
        self.free_if_unused(ino);
    }

    /// A read open of `ino` at `etag`: whether the kernel may keep the pages it cached.
    pub fn opened_for_reading(&mut self, ino: Ino, etag: &str) -> bool {
        let Some(node) = self.nodes.get_mut(&ino) else {
            return false;
        };
        let same = node.page_cache_etag() == Some(etag);
        node.local_mut().page_cache_etag = Some(etag.to_string());
        same
    }

    // ----- internals -----

    /// Records what S3 says exists at `parent/name`, keeping the inode if the kind is unchanged
    /// (a new one otherwise). Local state wins: a file being written or a metadata change not
    /// yet persisted is newer than any listing. A listing carries no user metadata, so the
    /// metadata known for the same object version is kept.
    fn upsert_remote(
        &mut self,
        parent: Ino,
        name: &str,
        kind: Kind,
        mut attrs: Attrs,
        at: Instant,
        from_listing: bool,
    ) -> Option<Ino> {
        if let Some(node) = self.child(parent, name)
            && node.kind == kind
        {
            let ino = node.ino;
            let keep_local = node.write_status() == WriteStatus::Created
                || node.is_open_for_writing()
                || node.metadata_dirty();
            let same_data = node.attrs.etag == attrs.etag;
            let same_version = node.attrs.same_version(&attrs);
            if let Some(node) = self.nodes.get_mut(&ino) {
                if keep_local {
                    return Some(ino);
                }
                // A listing, or a lookup of a directory (whose marker it did not HEAD), says
                // nothing of the metadata: keep what we know of an unchanged version. A
                // moved LastModified (another client's chmod) makes it unknown again.
                if (from_listing || kind == Kind::Directory) && same_version {
                    attrs.metadata = std::mem::take(&mut node.attrs.metadata);
                    attrs.content_type =
                        std::mem::replace(&mut node.attrs.content_type, ContentType::Unknown);
                    if kind == Kind::Directory {
                        attrs.mtime = node.attrs.mtime;
                    }
                }
                if !same_data {
                    node.forget_page_cache();
                }
                node.attrs = attrs;
                node.origin = Origin::Remote;
                node.validated = Some(at);
            }
            return Some(ino);
        }
        // No parent directory any more: nothing to attach the name to.
        let key = self.child_key(parent, name, kind).ok()?;
        let ino = self.insert_fresh(parent, name, kind, key);
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.attrs = attrs;
            node.validated = Some(at);
        }
        self.misses.remove(&(parent, name.to_string()));
        Some(ino)
    }

    /// A new node at `parent/name`, replacing (unlinking) whatever was there.
    fn insert_fresh(&mut self, parent: Ino, name: &str, kind: Kind, key: String) -> Ino {
        self.unlink(parent, name);
        self.misses.remove(&(parent, name.to_string()));
        let ino = self.next;
        self.next += 1;
        self.nodes
            .insert(ino, Box::new(Node::new(ino, parent, name, kind, key)));
        self.children
            .entry(parent)
            .or_default()
            .insert(name.into(), ino);
        ino
    }

    /// Takes `parent/name` out of the namespace. The node lives on while the kernel references
    /// it or a handle has it open (open files keep working).
    fn unlink(&mut self, parent: Ino, name: &str) {
        let Some(ino) = self
            .children
            .get_mut(&parent)
            .and_then(|names| names.remove(name))
        else {
            return;
        };
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.linked = false;
            node.clear_coverage();
            // The name is gone: a metadata change not yet on its object has nothing to go to.
            node.set_metadata_dirty(None);
        }
        self.free_if_unused(ino);
    }

    fn free_if_unused(&mut self, ino: Ino) {
        let unused = self.nodes.get(&ino).is_some_and(|n| {
            !n.linked
                && n.lookups == 0
                && !n.is_open()
                && !n.metadata_dirty()
                && n.deletes_at_close().is_empty()
        });
        if unused {
            self.nodes.remove(&ino);
            self.children.remove(&ino);
        }
    }

    fn remember_miss(&mut self, parent: Ino, name: &str, at: Instant) {
        if self.misses.len() >= MAX_MISSES {
            self.misses.clear();
        }
        self.misses.insert((parent, name.to_string()), at);
    }

    /// Bounds memory: past the node limit, nodes that are only directory entries (no kernel
    /// reference, no local state, no directory stream holding them) are dropped, and their
    /// directories forget they were listed, so a dropped name is asked of S3 again rather than
    /// answered as missing. What must stay (the kernel's references) may exceed the limit: the
    /// next prune then waits until as many nodes again have come, so the scans cost O(1) per
    /// node added, whatever the kernel holds.
    fn prune_if_large(&mut self) {
        if self.nodes.len() <= self.prune_at {
            return;
        }
        let dead: Vec<(Ino, Ino, String)> = self
            .nodes
            .values()
            .filter(|n| {
                n.ino != ROOT_INO
                    && n.lookups == 0
                    && n.pins == 0
                    && !n.is_open()
                    && !n.is_local()
                    && !n.metadata_dirty()
                    && n.deletes_at_close().is_empty()
                    && self.children.get(&n.ino).is_none_or(|c| c.is_empty())
            })
            .map(|n| (n.ino, n.parent, n.name.to_string()))
            .collect();
        for (ino, parent, name) in dead {
            self.nodes.remove(&ino);
            self.children.remove(&ino);
            if let Some(names) = self.children.get_mut(&parent)
                && names.get(name.as_str()) == Some(&ino)
            {
                names.remove(name.as_str());
            }
            if let Some(dir) = self.nodes.get_mut(&parent) {
                dir.clear_coverage();
            }
        }
        self.prune_at = self.nodes.len() + self.node_limit;
        tracing::debug!(nodes = self.nodes.len(), "pruned unreferenced nodes");
    }
}

/// A node's key relative to its directory: its name, and `name/` for a directory, which is
/// where a LIST page puts it.
fn relative_key(node: &Node) -> Cow<'_, str> {
    match node.kind {
        Kind::File => Cow::Borrowed(&node.name),
        Kind::Directory => Cow::Owned(format!("{}/", node.name)),
    }
}

/// The relative keys (`after`, `through`] one LIST page covers.
struct KeyRange {
    after: Option<String>,
    through: Option<String>,
}

impl KeyRange {
    fn holds(&self, relative: &str) -> bool {
        self.after.as_deref().is_none_or(|a| a < relative)
            && self.through.as_deref().is_none_or(|t| relative <= t)
    }

    /// Whether both forms of `name` (a file, a directory) lie in the range.
    fn covers_name(&self, name: &str) -> bool {
        self.holds(name) && self.holds(&format!("{name}/"))
    }
}

#[cfg(test)]
mod tests;
