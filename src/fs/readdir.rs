//! readdir, streamed: a directory of any size is handed to the kernel page by page, so the
//! memory a listing takes is bounded by a few pages, not by the directory.
//!
//! A directory handle holds a [`DirStream`]: the batch of entries the kernel is reading now and
//! where the next batch comes from.
//!
//! - **From S3.** A producer task lists the prefix one ListObjectsV2 page at a time (1000 keys)
//!   and installs each page in the namespace as it arrives (names it did not return in its range
//!   are gone). The next page's LIST is sent as soon as a page's continuation token is known,
//!   before that page is installed, so the LISTs follow one another back to back. With stored
//!   metadata on (`--posix-metadata`), the HEADs of a page's names start at once, while the
//!   next page is being listed; the page goes out when they are done, so `ls -l` shows modes
//!   and owners, and the link stays busy. The producer runs at most [`PAGES_AHEAD`] pages
//!   (and one LIST) ahead of the kernel.
//! - **From memory.** When a complete listing of the directory is fresh (the TTL has not run
//!   out since it ended), batches are read from the namespace in name order, with no request.
//! - **The `entries/` view.** The root's own stream (either of the above), each batch's
//!   segments handed out as the view's files: `ls entries/` lists what `ls` of the root lists,
//!   as it goes, a few pages at a time.
//!
//! A batch is the namespace's linked children in the page's key range, read right after the
//! page went in: names this mount is writing are merged in, and a name another operation removed
//! before the batch is handed out is left out. Every node of a page is *pinned* from the moment its page is
//! installed until the batch after it is asked for, so pruning (the namespace's node limit)
//! cannot drop a name between the LIST that found it and the kernel taking its reference: no
//! listing is ever short because of a limit. A LIST that fails fails the readdir with its errno.
//!
//! Offsets are positions in the stream: the kernel reads a batch in several calls and asks for
//! the position after the last entry it took. Asking for an earlier position (rewinddir, seekdir)
//! starts the listing again and skips to it.

use std::sync::{Arc, Weak};

use tokio::sync::mpsc;

use super::Fs;
use super::attr::{Attr, attr_of};
use super::error::{FsError, FsResult};
use super::lookup::ListedEntries;
use super::namespace::{Ino, Kind, ListedPage};
use crate::store::ListRequest;

/// LIST pages prepared (listed, installed, their metadata fetched) ahead of the kernel's reads:
/// enough names queued for the HEAD window to stay full on a 20 ms link (ARCHITECTURE.md).
pub const PAGES_AHEAD: usize = 8;
/// Entries per batch when reading from memory.
const MEMORY_BATCH: usize = 1000;

/// One entry of a listing, as readdir hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: Ino,
    pub kind: Kind,
    pub name: String,
    /// The offset the kernel passes back to continue after this entry.
    pub next_offset: u64,
    /// Attributes as of opendir, for readdirplus.
    pub attr: Attr,
    /// Whether `attr` may be cached by the kernel; when not, readdirplus gives it with a zero
    /// TTL, so a `stat` comes back as a lookup (the `entries/` view's unrendered sizes).
    pub attr_known: bool,
}

/// An open directory handle's listing.
pub(super) struct DirStream {
    dir: Ino,
    /// The stream position (offset) of `batch[0]`.
    start: u64,
    batch: Arc<Vec<DirEntry>>,
    /// The nodes of `batch`, held until the kernel asks for the next one.
    pins: Pins,
    source: Source,
}

enum Source {
    /// Another directory's stream, each batch mapped by the view `dir` belongs to.
    Mapped(Box<DirStream>),
    /// A fresh complete listing in the namespace: names after this one.
    Memory { after: Option<String>, done: bool },
    /// LIST pages from the producer task; closed after the last one.
    Remote(mpsc::Receiver<FsResult<PreparedPage>>),
}

/// One LIST page installed in the namespace, its nodes pinned.
struct PreparedPage {
    pins: Pins,
    /// The HEADs of the page's stored metadata, done before the page goes out.
    metadata: Option<tokio::task::JoinHandle<()>>,
}

/// Nodes pinned in the namespace, unpinned when dropped. Never dropped with the namespace
/// locked.
struct Pins {
    fs: Weak<Fs>,
    inos: Vec<Ino>,
}

impl Pins {
    fn none() -> Pins {
        Pins {
            fs: Weak::new(),
            inos: Vec::new(),
        }
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        if !self.inos.is_empty()
            && let Some(fs) = self.fs.upgrade()
        {
            fs.ns().unpin(&self.inos);
        }
    }
}

impl DirStream {
    /// The stream of a view's directory `dir`, mapping `inner`'s batches (see `view.rs`).
    pub(super) fn mapped(dir: Ino, inner: DirStream) -> DirStream {
        DirStream {
            dir,
            start: 0,
            batch: Arc::new(Vec::new()),
            pins: Pins::none(),
            source: Source::Mapped(Box::new(inner)),
        }
    }
}

impl Fs {
    /// A stream over `dir` from its start: from memory when a complete listing is fresh, else
    /// from S3 (its first page already on its way).
    pub(super) fn dir_stream(&self, dir: Ino) -> DirStream {
        let source = if self.ns().listed_completely(dir) {
            Source::Memory {
                after: None,
                done: false,
            }
        } else {
            let (sender, receiver) = mpsc::channel(PAGES_AHEAD - 1);
            if let Some(fs) = self.this.upgrade() {
                tokio::spawn(async move { fs.produce_pages(dir, sender).await });
            }
            Source::Remote(receiver)
        };
        DirStream {
            dir,
            start: 0,
            batch: Arc::new(Vec::new()),
            pins: Pins::none(),
            source,
        }
    }

    /// The entries from stream position `offset` on: the batch that holds it and its index
    /// there (past the end: an empty batch).
    pub(super) async fn read_stream(
        &self,
        stream: &mut DirStream,
        offset: u64,
    ) -> FsResult<(Arc<Vec<DirEntry>>, usize)> {
        if offset < stream.start {
            // rewinddir or seekdir to an earlier position: list again from the start.
            *stream = match &stream.source {
                Source::Mapped(inner) => DirStream::mapped(stream.dir, self.dir_stream(inner.dir)),
                _ => self.dir_stream(stream.dir),
            };
        }
        loop {
            let end = stream.start + stream.batch.len() as u64;
            if offset < end {
                return Ok((stream.batch.clone(), (offset - stream.start) as usize));
            }
            if !self.next_batch(stream).await? {
                return Ok((Arc::new(Vec::new()), 0));
            }
        }
    }

    /// Replaces the stream's batch with the next one; false at the end of the directory.
    async fn next_batch(&self, stream: &mut DirStream) -> FsResult<bool> {
        let first = stream.start == 0 && stream.batch.is_empty();
        let position = stream.start + stream.batch.len() as u64;
        let (inos, pins) = match &mut stream.source {
            Source::Mapped(inner) => {
                let view = self.view_of(stream.dir).ok_or(FsError::BadHandle)?;
                let mut entries = if first {
                    view.leading_entries(self)?
                } else {
                    Vec::new()
                };
                let leading = entries.len();
                // An inner batch may map to nothing (sidecars only): take the next one.
                while entries.len() <= leading {
                    if !Box::pin(self.next_batch(inner)).await? {
                        break;
                    }
                    entries.extend(view.map_batch(self, &inner.batch));
                }
                if entries.is_empty() {
                    return Ok(false);
                }
                for (i, entry) in entries.iter_mut().enumerate() {
                    entry.next_offset = position + i as u64 + 1;
                }
                stream.start = position;
                stream.batch = Arc::new(entries);
                return Ok(true);
            }
            Source::Memory { after, done } => {
                if *done {
                    return Ok(false);
                }
                let inos = {
                    let mut ns = self.ns();
                    let inos = ns.children_after(stream.dir, after.as_deref(), MEMORY_BATCH);
                    ns.pin(&inos);
                    inos
                };
                let pins = Pins {
                    fs: self.this.clone(),
                    inos: inos.clone(),
                };
                *done = inos.len() < MEMORY_BATCH;
                if let Some(ino) = inos.last() {
                    *after = self.ns().get(*ino).map(|node| node.name().to_string());
                }
                if self.config.posix_metadata {
                    self.fetch_metadata_of(inos.clone()).await;
                }
                (inos, pins)
            }
            Source::Remote(pages) => {
                let Some(page) = pages.recv().await else {
                    return Ok(false);
                };
                let page = page?;
                if let Some(metadata) = page.metadata {
                    // A failed HEAD leaves the mount's defaults; a panic would be a bug.
                    let _ = metadata.await;
                }
                // The page's nodes as the producer found them right after installing it (local
                // names in its range included); a name removed since is filtered out below, and
                // one created since may or may not show, as POSIX allows for readdir.
                (page.pins.inos.clone(), page.pins)
            }
        };
        let mut entries = self.entries_of(stream.dir, &inos, first);
        for (i, entry) in entries.iter_mut().enumerate() {
            entry.next_offset = position + i as u64 + 1;
        }
        // The old batch's pins go only now: the kernel has taken its entries.
        stream.pins = pins;
        stream.start = position;
        stream.batch = Arc::new(entries);
        Ok(true)
    }

    /// Directory entries of the linked nodes among `inos` (with `.`, `..` and the root's
    /// `entries/` first when `first`), in the layout's order.
    fn entries_of(&self, dir: Ino, inos: &[Ino], first: bool) -> Vec<DirEntry> {
        let ns = self.ns();
        let mut entries = Vec::with_capacity(inos.len() + 3);
        if first && let Ok(node) = ns.directory(dir) {
            let parent = ns.get(node.parent()).unwrap_or(node);
            for (name, node) in [(".", node), ("..", parent)] {
                entries.push(DirEntry {
                    ino: node.ino(),
                    kind: Kind::Directory,
                    name: name.into(),
                    next_offset: 0,
                    attr_known: true,
                    attr: attr_of(node, &self.config),
                });
            }
        }
        let mut children: Vec<DirEntry> = inos
            .iter()
            .filter_map(|ino| ns.get(*ino))
            .filter(|node| node.linked() && node.parent() == dir)
            .map(|node| DirEntry {
                ino: node.ino(),
                kind: node.kind(),
                name: node.name().to_string(),
                next_offset: 0,
                attr_known: true,
                attr: attr_of(node, &self.config),
            })
            .collect();
        drop(ns);
        if first {
            children.extend(self.view_entries_in(dir));
        }
        let layout = &self.config.layout;
        children.sort_by_cached_key(|entry| layout.sort_key(&entry.name));
        entries.extend(children);
        entries
    }

    /// Lists `dir` page by page into `pages`, each installed and pinned, its metadata on the
    /// way; stops after the last page, at the first error, or when the stream is dropped.
    async fn produce_pages(self: Arc<Self>, dir: Ino, pages: mpsc::Sender<FsResult<PreparedPage>>) {
        let prefix = self.ns().directory(dir).map(|node| node.key().to_string());
        let prefix = match prefix {
            Ok(prefix) => prefix,
            Err(e) => {
                let _ = pages.send(Err(e)).await;
                return;
            }
        };
        let mut request = ListRequest {
            prefix: prefix.clone(),
            delimiter: Some("/".into()),
            ..Default::default()
        };
        let started = self.config.clock.now();
        let mut after: Option<String> = None;
        let mut next = Some(self.list_in_background(&prefix, &request));
        while let Some(listing) = next.take() {
            let listed = match listing.finish().await {
                Ok(listed) => listed,
                Err(e) => {
                    let _ = pages.send(Err(e)).await;
                    return;
                }
            };
            let (entries, through, token) = listed;
            // The next page's LIST goes out before this one is installed and handed over, so
            // the link never waits for the namespace or the kernel.
            if let Some(token) = token {
                request.continuation_token = Some(token);
                next = Some(self.list_in_background(&prefix, &request));
            }
            let page = ListedPage {
                after: after.clone(),
                through: through.clone(),
                entries,
                started: Some(started),
                at: Some(self.config.clock.now()),
            };
            let inos = {
                let mut ns = self.ns();
                ns.listed(dir, page);
                let inos = ns.children_in_range(dir, after.as_deref(), through.as_deref());
                ns.pin(&inos);
                inos
            };
            let metadata = self.config.posix_metadata.then(|| {
                let fs = self.clone();
                let inos = inos.clone();
                tokio::spawn(async move { fs.fetch_metadata_of(inos).await })
            });
            let prepared = PreparedPage {
                pins: Pins {
                    fs: self.this.clone(),
                    inos,
                },
                metadata,
            };
            if pages.send(Ok(prepared)).await.is_err() {
                return;
            }
            after = through;
        }
    }

    fn list_in_background(self: &Arc<Self>, prefix: &str, request: &ListRequest) -> PageListing {
        let (fs, prefix, request) = (self.clone(), prefix.to_string(), request.clone());
        PageListing(tokio::spawn(async move {
            fs.list_one_page(&prefix, &request).await
        }))
    }
}

/// A LIST page being fetched by a task of its own; dropped unfinished (the reader went away),
/// the request is abandoned.
struct PageListing(tokio::task::JoinHandle<FsResult<ListedEntries>>);

impl PageListing {
    async fn finish(mut self) -> FsResult<ListedEntries> {
        match (&mut self.0).await {
            Ok(listed) => listed,
            // Only a panic ends the task early (nothing aborts it while awaited): a bug, EIO.
            Err(e) => Err(FsError::Io(std::io::Error::other(e.to_string()))),
        }
    }
}

impl Drop for PageListing {
    fn drop(&mut self) {
        self.0.abort();
    }
}
