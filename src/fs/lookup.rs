//! Names to inodes: lookup, getattr and forget, revalidated a directory at a time.
//!
//! A name is answered without a request when the namespace knows it within the TTL (a node
//! confirmed, a listing that covered it, a remembered miss, a node this mount is writing). When
//! it does not, the name's *directory* is revalidated, not the name: one LIST answers a thousand
//! names, where a HEAD answers one.
//!
//! - A directory known to be small (its last complete listing fit in [`SMALL_DIRECTORY`]
//!   entries), or never listed, is listed from the start: all pages when small, the first page
//!   when never listed. A miss in a directory this mount made is answered from its (empty)
//!   listing until the TTL runs out.
//! - A large directory is listed in a window: one page starting just before the name, which
//!   also answers the 999 names after it, so `ls -l` or `cp -r` walking it in order pay one
//!   LIST per thousand names, and the work per lookup is bounded whatever the directory's size.
//! - Only a name the window could not settle (the page ended at it) costs HEAD `key` and LIST
//!   `key/` (max-keys 1) in parallel. A prefix wins over an object of the same name, as `ls`
//!   cannot show both.
//!
//! Lookups of one directory that find it stale wait for one listing (a gate per directory)
//! instead of each sending their own.

use std::collections::BTreeMap;

use super::attr::{Attr, attr_of};
use super::error::{FsError, FsResult};
use super::namespace::{Answer, Attrs, ContentType, Ino, Kind, ListedPage, MimeType, ROOT_INO};
use super::{Fs, LayoutKind};
use crate::store::{ListRequest, ObjectMeta, ObjectSummary};

/// A directory whose last complete listing had at most this many entries is relisted whole.
pub const SMALL_DIRECTORY: usize = 5_000;

pub(super) fn summary_attrs(object: &ObjectSummary) -> Attrs {
    Attrs {
        size: object.size,
        mtime: object.last_modified,
        etag: Some(object.etag.clone()),
        metadata: Default::default(),
        content_type: ContentType::Unknown,
        last_modified: Some(object.last_modified),
    }
}

pub(super) fn meta_attrs(meta: ObjectMeta) -> Attrs {
    Attrs {
        size: meta.size,
        mtime: meta.last_modified,
        etag: Some(meta.etag),
        metadata: meta.metadata,
        content_type: ContentType::Known(meta.content_type.map(MimeType::from)),
        last_modified: Some(meta.last_modified),
    }
}

/// Where a listing starts.
#[derive(Clone, Copy)]
enum From<'a> {
    Start,
    /// Just before this name: the window that holds it and the names after it.
    Name(&'a str),
}

/// One LIST page's entries (name, kind, attributes), the last key it covers and its
/// continuation token.
pub(super) type ListedEntries = (Vec<(String, Kind, Attrs)>, Option<String>, Option<String>);

impl Fs {
    /// Resolves `name` in `parent` and takes a kernel reference on the result.
    pub async fn lookup(&self, parent: Ino, name: &str) -> FsResult<Attr> {
        // A name no directory can hold is ENAMETOOLONG, as locally, not ENOENT.
        if let Err(FsError::NameTooLong) = self.config.layout.check_new_name(name, false) {
            return Err(FsError::NameTooLong);
        }
        let ino = self.resolve_with_metadata(parent, name).await?;
        let mut ns = self.ns();
        ns.remembered(ino);
        Ok(attr_of(ns.node(ino)?, &self.config))
    }

    pub fn forget(&self, ino: Ino, count: u64) {
        self.ns().forgot(ino, count);
    }

    /// Attributes of `ino`: from the namespace while fresh, else revalidated through its
    /// directory like a lookup (a directory's own attributes never need a request).
    pub async fn getattr(&self, ino: Ino) -> FsResult<Attr> {
        let (parent, name) = {
            let ns = self.ns();
            let node = ns.node(ino)?;
            let trusted = ino == ROOT_INO || node.kind() == Kind::Directory || ns.is_current(ino);
            if trusted {
                return Ok(attr_of(node, &self.config));
            }
            (node.parent(), node.name().to_string())
        };
        let found = self.resolve(parent, &name).await?;
        if self.config.posix_metadata && self.config.layout.kind == LayoutKind::Keys {
            // Revalidated: another client's chmod moved its LastModified, so look again.
            self.fetch_metadata_of(vec![found]).await;
        }
        let ns = self.ns();
        if found != ino {
            // The name is another node now (its kind changed): this one is gone.
            return Err(FsError::NotFound);
        }
        Ok(attr_of(ns.node(ino)?, &self.config))
    }

    /// `resolve` for what the user will look at (lookup): the name comes with its stored
    /// metadata (type, mode, owner, times), so a symlink is never answered as a regular file.
    /// With `posix_metadata` (the default in the keys layout) every name whose metadata this
    /// mount has not seen is fetched (the metadata cache, else one HEAD); without it, only a
    /// file met for the first time by a lookup is HEADed (it costs nothing more than the
    /// listing's ignorance), and names a listing introduced show the mount's defaults.
    async fn resolve_with_metadata(&self, parent: Ino, name: &str) -> FsResult<Ino> {
        let keys = self.config.layout.kind == LayoutKind::Keys;
        let first_contact =
            keys && self.ns().child(parent, name).is_none() && self.known(parent, name)?.is_none();
        let ino = self.resolve(parent, name).await?;
        let wanted = keys
            && (self.config.posix_metadata
                || (first_contact && self.ns().node(ino)?.kind() == Kind::File));
        if wanted {
            self.fetch_metadata_of(vec![ino]).await;
        }
        Ok(ino)
    }

    /// Finds (or refreshes) the inode of `parent/name` without taking a reference.
    pub(super) async fn resolve(&self, parent: Ino, name: &str) -> FsResult<Ino> {
        if let Some(answer) = self.known(parent, name)? {
            return answer;
        }
        if !self.config.layout.shows(name, false) && !self.config.layout.shows(name, true) {
            return Err(FsError::NotFound);
        }
        let _gate = self.listing_gates.enter(parent).await;
        // Another lookup may have listed the directory while this one waited.
        if let Some(answer) = self.known(parent, name)? {
            return answer;
        }
        let small = self
            .ns()
            .last_listing_len(parent)
            .is_none_or(|len| len <= SMALL_DIRECTORY);
        if small {
            let max_pages = match self.ns().last_listing_len(parent) {
                Some(len) => len / 1000 + 2,
                None => 1,
            };
            self.list_pages(parent, From::Start, max_pages).await?;
            if let Some(answer) = self.known(parent, name)? {
                return answer;
            }
        }
        self.list_pages(parent, From::Name(name), 1).await?;
        if let Some(answer) = self.known(parent, name)? {
            return answer;
        }
        self.resolve_remote(parent, name).await
    }

    /// What the namespace can answer about `parent/name` without a request.
    fn known(&self, parent: Ino, name: &str) -> FsResult<Option<FsResult<Ino>>> {
        Ok(match self.ns().answer(parent, name)? {
            Answer::Found(ino) => Some(Ok(ino)),
            Answer::Missing => Some(Err(FsError::NotFound)),
            Answer::Unknown => None,
        })
    }

    async fn resolve_remote(&self, parent: Ino, name: &str) -> FsResult<Ino> {
        let key = self.ns().child_key(parent, name, Kind::File)?;
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
        let at = self.config.clock.now();
        let (head, is_dir) = futures::join!(head, list);
        let mut is_dir = is_dir?;
        if is_dir && self.ns().delete_waiting_below(&dir_prefix) {
            is_dir = self.has_live_keys_below(&dir_prefix).await?;
        }
        let file = match head {
            Ok(meta) => Some(meta),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        };
        let found = match (is_dir, file) {
            (true, file) => {
                if file.is_some() {
                    tracing::warn!(key, "object is shadowed by a directory of the same name");
                }
                Some((Kind::Directory, Attrs::directory()))
            }
            (false, Some(meta)) if self.config.layout.shows(name, false) => {
                self.remember_metadata(&meta);
                Some((Kind::File, meta_attrs(meta)))
            }
            _ => None,
        };
        self.ns()
            .looked_up(parent, name, found, at)
            .ok_or(FsError::NotFound)
    }

    /// Whether some key below `prefix` is not an unlinked file whose DELETE waits for its last
    /// close here (one LIST; only asked when such a file lies below). Past one page, yes.
    pub(super) async fn has_live_keys_below(&self, prefix: &str) -> FsResult<bool> {
        let request = ListRequest {
            prefix: prefix.to_string(),
            ..Default::default()
        };
        let page = self.store.list(request).await?;
        let ns = self.ns();
        Ok(page.next_continuation_token.is_some()
            || page.objects.iter().any(|o| !ns.delete_waiting(&o.key)))
    }

    /// Lists up to `max_pages` pages of `dir` from `from` and installs what they say, together,
    /// as of when the last page arrived: a listing that takes longer than the TTL (100,000
    /// entries at 20 ms a page) must not be stale before it is used. So another client's
    /// change shows at most TTL + the listing's duration later.
    async fn list_pages(&self, dir: Ino, from: From<'_>, max_pages: usize) -> FsResult<()> {
        let prefix = self.ns().directory(dir)?.key().to_string();
        let after = match from {
            From::Start => None,
            From::Name(name) => window_start(name),
        };
        let mut request = ListRequest {
            prefix: prefix.clone(),
            delimiter: Some("/".into()),
            start_after: after.as_ref().map(|a| format!("{prefix}{a}")),
            ..Default::default()
        };
        let started = self.config.clock.now();
        let mut entries = Vec::new();
        let mut through = None;
        for _ in 0..max_pages {
            let (page, last, token) = self.list_one_page(&prefix, &request).await?;
            entries.extend(page);
            through = last;
            match token {
                Some(token) => {
                    request.continuation_token = Some(token);
                    request.start_after = None;
                }
                None => break,
            }
        }
        // Pages in a row hold a name once, but a directory `n/` shadows the object `n` across
        // page ends too.
        let mut by_name = BTreeMap::new();
        for (name, kind, attrs) in entries {
            match by_name.get(&name) {
                Some((Kind::Directory, _)) => {}
                _ => {
                    by_name.insert(name, (kind, attrs));
                }
            }
        }
        let page = ListedPage {
            started: Some(started),
            at: Some(self.config.clock.now()),
            after,
            through,
            entries: by_name
                .into_iter()
                .map(|(name, (kind, attrs))| (name, kind, attrs))
                .collect(),
        };
        self.ns().listed(dir, page);
        Ok(())
    }

    /// One LIST page of the directory `prefix`: its entries as names the layout shows, the
    /// last key it covered (relative; `None` when it was the last page) and the token of the
    /// next page.
    pub(super) async fn list_one_page(
        &self,
        prefix: &str,
        request: &ListRequest,
    ) -> FsResult<ListedEntries> {
        let page = self.store.list(request.clone()).await?;
        let mut entries = BTreeMap::new();
        let mut skipped = 0usize;
        for common in &page.common_prefixes {
            let name = common[prefix.len()..].trim_end_matches('/');
            if self.config.layout.shows(name, true) {
                entries.insert(name.to_string(), (Kind::Directory, Attrs::directory()));
            } else if !name.is_empty() {
                skipped += 1;
            }
        }
        for object in &page.objects {
            let name = &object.key[prefix.len()..];
            if name.is_empty() {
                continue; // the directory's own marker
            }
            if !self.config.layout.shows(name, false) {
                skipped += 1;
                continue;
            }
            if let Some((Kind::Directory, _)) = entries.get(name) {
                tracing::warn!(key = %object.key, "object is shadowed by a directory of the same name");
                continue;
            }
            entries.insert(name.to_string(), (Kind::File, summary_attrs(object)));
        }
        let through = page
            .next_continuation_token
            .as_ref()
            .and_then(|_| last_relative(&page, prefix));
        // A subdirectory whose only keys are unlinked files still open here is gone.
        let suspects: Vec<String> = {
            let ns = self.ns();
            entries
                .iter()
                .filter(|(name, (kind, _))| {
                    *kind == Kind::Directory && ns.delete_waiting_below(&format!("{prefix}{name}/"))
                })
                .map(|(name, _)| name.clone())
                .collect()
        };
        for name in suspects {
            if !self
                .has_live_keys_below(&format!("{prefix}{name}/"))
                .await?
            {
                entries.remove(&name);
            }
        }
        if skipped > 0 && self.config.layout.kind == LayoutKind::Keys {
            tracing::warn!(
                count = skipped,
                prefix,
                "keys whose names cannot be file names are not shown"
            );
        }
        let entries = entries
            .into_iter()
            .map(|(name, (kind, attrs))| (name, kind, attrs))
            .collect();
        Ok((entries, through, page.next_continuation_token))
    }
}

/// The key to start a window after, relative to the directory: the name without its last
/// character, so the page begins at the name (as a file or a directory) and the names after it.
fn window_start(name: &str) -> Option<String> {
    let mut chars = name.chars();
    chars.next_back()?;
    let start = chars.as_str();
    (!start.is_empty()).then(|| start.to_string())
}

/// The last key or common prefix of a page, relative to `prefix`.
fn last_relative(page: &crate::store::ListPage, prefix: &str) -> Option<String> {
    let last_object = page.objects.last().map(|o| o.key.as_str());
    let last_prefix = page.common_prefixes.last().map(String::as_str);
    let last = last_object.max(last_prefix)?;
    last.strip_prefix(prefix).map(str::to_string)
}
