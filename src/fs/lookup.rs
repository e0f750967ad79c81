//! Names to inodes: lookup, getattr and forget, with the metadata cache that makes them cheap.
//!
//! A name is answered, cheapest first, from: a node this mount is writing or confirmed within
//! the TTL; the parent's complete listing if it is fresh (a hit or a definite miss, no request);
//! the negative cache; and only then S3, with HEAD `key` and LIST `key/` (max-keys 1) sent in
//! parallel. A prefix wins over an object of the same name, as `ls` cannot show both.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use super::attr::{Attr, attr_of};
use super::error::{FsError, FsResult};
use super::inode::{Attrs, Ino, Kind, Origin};
use super::{Fs, lock};
use crate::store::{ListRequest, ObjectSummary};

/// A directory's children as of one complete listing.
pub(super) struct Listing {
    pub entries: BTreeMap<String, (Kind, Attrs)>,
    pub at: Instant,
}

/// Complete listings by directory inode, bounded in total entries.
#[derive(Default)]
pub(super) struct Listings {
    by_dir: HashMap<Ino, Listing>,
    entries: usize,
}

/// Most directory entries kept across all cached listings (about 200 bytes each).
const MAX_LISTED_ENTRIES: usize = 500_000;
/// Most remembered misses.
const MAX_NEGATIVE_ENTRIES: usize = 10_000;

impl Listings {
    pub fn get(&self, dir: Ino) -> Option<&Listing> {
        self.by_dir.get(&dir)
    }

    pub fn insert(&mut self, dir: Ino, listing: Listing) {
        if self.entries + listing.entries.len() > MAX_LISTED_ENTRIES {
            self.by_dir.clear();
            self.entries = 0;
        }
        self.entries += listing.entries.len();
        if let Some(old) = self.by_dir.insert(dir, listing) {
            self.entries -= old.entries.len();
        }
    }

    /// Keeps a cached listing true after a change made through this mount.
    pub fn update(&mut self, dir: Ino, name: &str, entry: Option<(Kind, Attrs)>) {
        if let Some(listing) = self.by_dir.get_mut(&dir) {
            let had = match entry {
                Some(entry) => listing.entries.insert(name.to_string(), entry).is_some(),
                None => listing.entries.remove(name).is_some(),
            };
            match (had, listing.entries.contains_key(name)) {
                (false, true) => self.entries += 1,
                (true, false) => self.entries -= 1,
                _ => {}
            }
        }
    }

    pub fn remove(&mut self, dir: Ino) {
        if let Some(old) = self.by_dir.remove(&dir) {
            self.entries -= old.entries.len();
        }
    }
}

#[derive(Default)]
pub(super) struct NegativeCache {
    misses: HashMap<(Ino, String), Instant>,
}

impl NegativeCache {
    fn get(&self, dir: Ino, name: &str) -> Option<Instant> {
        self.misses.get(&(dir, name.to_string())).copied()
    }

    fn insert(&mut self, dir: Ino, name: &str) {
        if self.misses.len() >= MAX_NEGATIVE_ENTRIES {
            self.misses.clear();
        }
        self.misses.insert((dir, name.to_string()), Instant::now());
    }

    pub fn remove(&mut self, dir: Ino, name: &str) {
        self.misses.remove(&(dir, name.to_string()));
    }
}

pub(super) fn summary_attrs(object: &ObjectSummary) -> Attrs {
    Attrs {
        size: object.size,
        mtime: object.last_modified,
        etag: Some(object.etag.clone()),
        metadata: Default::default(),
    }
}

impl Fs {
    /// Resolves `name` in `parent` and takes a kernel reference on the result.
    pub async fn lookup(&self, parent: Ino, name: &str) -> FsResult<Attr> {
        let ino = self.resolve(parent, name).await?;
        let mut inodes = self.inodes();
        inodes.remember(ino);
        let node = inodes.get(ino).ok_or(FsError::NotFound)?;
        Ok(attr_of(node, &self.config))
    }

    pub fn forget(&self, ino: Ino, count: u64) {
        self.inodes().forget(ino, count);
    }

    pub async fn getattr(&self, ino: Ino) -> FsResult<Attr> {
        let key = {
            let inodes = self.inodes();
            let node = inodes.get(ino).ok_or(FsError::NotFound)?;
            let stale = node.kind == Kind::File
                && node.origin == Origin::Remote
                && node.linked
                && !self.fresh(node.validated)
                && !self.is_open_for_writing(ino);
            if !stale {
                return Ok(attr_of(node, &self.config));
            }
            node.key.clone()
        };
        match self.store.head(&key).await {
            Ok(meta) => {
                let mut inodes = self.inodes();
                let node = inodes.get_mut(ino).ok_or(FsError::NotFound)?;
                node.attrs = Attrs {
                    size: meta.size,
                    mtime: meta.last_modified,
                    etag: Some(meta.etag),
                    metadata: meta.metadata,
                };
                node.validated = Some(Instant::now());
                Ok(attr_of(node, &self.config))
            }
            Err(e) if e.is_not_found() => {
                // Deleted behind our back: forget the name, keep the number for open handles.
                let mut inodes = self.inodes();
                if let Some((parent, name)) = inodes.get(ino).map(|n| (n.parent, n.name.clone())) {
                    inodes.unlink(parent, &name);
                }
                Err(FsError::NotFound)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Finds (or refreshes) the inode of `parent/name` without taking a reference.
    pub(super) async fn resolve(&self, parent: Ino, name: &str) -> FsResult<Ino> {
        let parent_prefix = {
            let inodes = self.inodes();
            let dir = inodes.get(parent).ok_or(FsError::NotFound)?;
            if dir.kind != Kind::Directory {
                return Err(FsError::NotDirectory);
            }
            if let Some(node) = inodes.child(parent, name)
                && (node.origin != Origin::Remote
                    || self.fresh(node.validated)
                    || self.is_open_for_writing(node.ino))
            {
                return Ok(node.ino);
            }
            dir.key.clone()
        };
        if !self.config.layout.shows(name, false) && !self.config.layout.shows(name, true) {
            return Err(FsError::NotFound);
        }
        if let Some(answer) = self.answer_from_listing(parent, name) {
            return answer;
        }
        if lock(&self.negative)
            .get(parent, name)
            .is_some_and(|at| self.fresh(Some(at)))
        {
            return Err(FsError::NotFound);
        }
        self.resolve_remote(parent, &parent_prefix, name).await
    }

    /// Answers from the parent's listing if it is fresh: Some(hit or definite miss).
    fn answer_from_listing(&self, parent: Ino, name: &str) -> Option<FsResult<Ino>> {
        let listings = lock(&self.listings);
        let listing = listings.get(parent).filter(|l| self.fresh(Some(l.at)))?;
        let answer = match listing.entries.get(name) {
            Some((kind, attrs)) => Ok(self.inodes().upsert_listed(
                parent,
                name,
                *kind,
                attrs.clone(),
                Some(listing.at),
            )),
            None => Err(FsError::NotFound),
        };
        Some(answer)
    }

    async fn resolve_remote(&self, parent: Ino, parent_prefix: &str, name: &str) -> FsResult<Ino> {
        let key = format!("{parent_prefix}{name}");
        let dir_prefix = format!("{key}/");
        let want_dirs = self.config.layout.shows(name, true);
        let head = self.store.head(&key);
        let list = async {
            if !want_dirs {
                return Ok(false);
            }
            let request = ListRequest {
                prefix: dir_prefix.clone(),
                delimiter: Some("/".into()),
                max_keys: Some(1),
                ..Default::default()
            };
            self.store
                .list(request)
                .await
                .map(|page| !page.objects.is_empty() || !page.common_prefixes.is_empty())
        };
        let (head, is_dir) = futures::join!(head, list);
        let now = Instant::now();
        let is_dir = is_dir?;
        let file = match head {
            Ok(meta) => Some(meta),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        };
        let shows_file = self.config.layout.shows(name, false);
        let ino = match (is_dir, file) {
            (true, file) => {
                if file.is_some() {
                    tracing::warn!(key, "object is shadowed by a directory of the same name");
                }
                self.inodes().upsert(
                    parent,
                    name,
                    Kind::Directory,
                    Attrs::directory(),
                    Origin::Remote,
                    Some(now),
                )
            }
            (false, Some(meta)) if shows_file => {
                let attrs = Attrs {
                    size: meta.size,
                    mtime: meta.last_modified,
                    etag: Some(meta.etag),
                    metadata: meta.metadata,
                };
                self.inodes()
                    .upsert(parent, name, Kind::File, attrs, Origin::Remote, Some(now))
            }
            _ => {
                lock(&self.negative).insert(parent, name);
                return Err(FsError::NotFound);
            }
        };
        Ok(ino)
    }

    /// Lists a directory completely (every page) and caches the result; returns its entries.
    pub(super) async fn list_directory(
        &self,
        dir: Ino,
    ) -> FsResult<BTreeMap<String, (Kind, Attrs)>> {
        if let Some(listing) = lock(&self.listings)
            .get(dir)
            .filter(|l| self.fresh(Some(l.at)))
        {
            return Ok(listing.entries.clone());
        }
        let prefix = {
            let inodes = self.inodes();
            let node = inodes.get(dir).ok_or(FsError::NotFound)?;
            if node.kind != Kind::Directory {
                return Err(FsError::NotDirectory);
            }
            node.key.clone()
        };
        let started = Instant::now();
        let mut entries = BTreeMap::new();
        let mut skipped = HashSet::new();
        let mut request = ListRequest {
            prefix: prefix.clone(),
            delimiter: Some("/".into()),
            ..Default::default()
        };
        loop {
            let page = self.store.list(request.clone()).await?;
            for common in &page.common_prefixes {
                let name = common[prefix.len()..].trim_end_matches('/');
                if self.config.layout.shows(name, true) {
                    let old =
                        entries.insert(name.to_string(), (Kind::Directory, Attrs::directory()));
                    if let Some((Kind::File, _)) = old {
                        tracing::warn!(key = %common, "object is shadowed by a directory of the same name");
                    }
                } else if !name.is_empty() {
                    skipped.insert(common.clone());
                }
            }
            for object in &page.objects {
                let name = &object.key[prefix.len()..];
                if name.is_empty() {
                    continue; // the directory's own marker
                }
                if !self.config.layout.shows(name, false) {
                    skipped.insert(object.key.clone());
                    continue;
                }
                if let Some((Kind::Directory, _)) = entries.get(name) {
                    tracing::warn!(key = %object.key, "object is shadowed by a directory of the same name");
                    continue;
                }
                entries.insert(name.to_string(), (Kind::File, summary_attrs(object)));
            }
            match page.next_continuation_token {
                Some(token) => request.continuation_token = Some(token),
                None => break,
            }
        }
        if !skipped.is_empty() && self.config.layout.kind == super::LayoutKind::Keys {
            tracing::warn!(
                count = skipped.len(),
                prefix,
                "keys whose names cannot be file names are not shown"
            );
        }
        lock(&self.listings).insert(
            dir,
            Listing {
                entries: entries.clone(),
                at: started,
            },
        );
        Ok(entries)
    }

    /// Records a change made through this mount in the caches, so it shows at once.
    pub(super) fn note_child(&self, parent: Ino, name: &str, entry: Option<(Kind, Attrs)>) {
        lock(&self.listings).update(parent, name, entry);
        lock(&self.negative).remove(parent, name);
    }
}
