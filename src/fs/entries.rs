//! The segments layout's read-only `entries/` directory: for every segment `segment-<id>.bin`
//! in the mount's root, `entries/segment-<id>.jsonl` holds its entries decoded as JSON Lines
//! (`segment::entries` defines the format), so `grep`, `jq`, `wc -l` and `head` work on the
//! ledger's contents while `segment-<id>.bin` stays the stored bytes that backups copy.
//!
//! The root lists `entries` only with `--list-entries`; by default it is reachable by name
//! alone, so `cp -a` and `rsync -a` of the mount copy the stored segments and nothing else.
//!
//! # How it is served
//!
//! The view lives beside the namespace, not in it: no S3 key backs these names, so they get
//! inode numbers above any the namespace hands out ([`VIEW_INO_BASE`]), and it plugs in behind
//! the [`View`] seam (`view.rs`), which `fuse.rs` consults once per operation. The segment
//! list is the root's own listing (no extra LIST). A file's size is its rendered length, which
//! only decoding tells, so:
//!
//! - `ls entries/` costs what `ls` of the root costs; `readdirplus` hands out the entries
//!   whose rendering is not cached with a zero TTL, so a `stat` comes back as a lookup;
//! - a lookup (or `stat`) renders the segment: its `.bin` and `.meta.json` are read through the
//!   block cache (1 GET each for a small segment, none when cached), decoded, checked against
//!   the sidecar, and the JSON Lines kept in the block cache's memory budget, keyed by both
//!   objects' ETags, so a replaced segment is decoded again and never served stale;
//! - open and read then cost no request: an open handle holds the rendered bytes until
//!   release (each at most [`segment::entries::MAX_DECODED_BYTES`] decoded).
//!
//! A segment that does not decode, or does not match its sidecar, gives EIO on lookup and
//! one log line naming it; `scribefs segments verify` says why in full.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};

use super::attr::{Attr, FileType, attr_of};
use super::error::{FsError, FsResult};
use super::handles::Handle;
use super::namespace::{Ino, Kind, ROOT_INO};
use super::readdir::{DirEntry, DirStream};
use super::view::{View, ViewFuture};
use super::{Fs, lock};
use crate::cache::BlockId;
use crate::segment::entries::{jsonl_file_name, parse_jsonl_file_name, render_jsonl};
use crate::segment::{self, SegmentFile};

/// The directory's name in the mount's root (no segment file can have it).
pub const ENTRIES_DIR: &str = "entries";

/// Inodes of the view start here, far above the namespace's (which count up from 2).
const VIEW_INO_BASE: Ino = 1 << 62;
const ENTRIES_DIR_INO: Ino = VIEW_INO_BASE;

/// Whole objects are read in pieces of this size (the reader prefetches ahead of them).
const READ_PIECE: u32 = 8 << 20;

/// The segments layout's `entries/` view.
pub(super) struct EntriesView {
    /// Whether the root's listing shows `entries` (`--list-entries`).
    listed_in_root: bool,
    state: Mutex<ViewState>,
}

/// The view's inodes and open handles.
#[derive(Default)]
struct ViewState {
    ino_of: HashMap<u64, Ino>,
    segment_of: HashMap<Ino, u64>,
    open: HashMap<u64, Bytes>,
}

impl ViewState {
    fn ino(&mut self, segment_id: u64) -> Ino {
        let next = ENTRIES_DIR_INO + 1 + self.ino_of.len() as u64;
        let ino = *self.ino_of.entry(segment_id).or_insert(next);
        self.segment_of.insert(ino, segment_id);
        ino
    }
}

/// A rendered segment and the `.bin` node it came from.
struct Rendered {
    jsonl: Bytes,
    bin: Ino,
}

impl EntriesView {
    pub(super) fn new(listed_in_root: bool) -> EntriesView {
        EntriesView {
            listed_in_root,
            state: Mutex::new(ViewState::default()),
        }
    }

    fn segment_of(&self, ino: Ino) -> FsResult<u64> {
        lock(&self.state)
            .segment_of
            .get(&ino)
            .copied()
            .ok_or(FsError::NotFound)
    }

    async fn file_attr_of(&self, fs: &Fs, id: u64) -> FsResult<Attr> {
        let rendered = fs.render(id).await?;
        let bin = attr_of(fs.ns().node(rendered.bin)?, &fs.config);
        let ino = lock(&self.state).ino(id);
        Ok(file_attr(ino, &bin, Some(rendered.jsonl.len() as u64)))
    }
}

impl View for EntriesView {
    fn owns(&self, ino: Ino) -> bool {
        ino >= VIEW_INO_BASE
    }

    fn names(&self, parent: Ino, name: &str) -> bool {
        parent == ROOT_INO && name == ENTRIES_DIR
    }

    fn lookup<'a>(&'a self, fs: &'a Fs, parent: Ino, name: &'a str) -> ViewFuture<'a, Attr> {
        Box::pin(async move {
            // A name no directory can hold is ENAMETOOLONG, as in the namespace's directories.
            if let Err(FsError::NameTooLong) = fs.config.layout.check_new_name(name, false) {
                return Err(FsError::NameTooLong);
            }
            if self.names(parent, name) {
                return Ok(dir_attr(fs));
            }
            if parent != ENTRIES_DIR_INO {
                return Err(FsError::NotDirectory);
            }
            match parse_jsonl_file_name(name) {
                Some(id) if jsonl_file_name(id) == name => self.file_attr_of(fs, id).await,
                _ => Err(FsError::NotFound),
            }
        })
    }

    fn getattr<'a>(&'a self, fs: &'a Fs, ino: Ino) -> ViewFuture<'a, Attr> {
        Box::pin(async move {
            if ino == ENTRIES_DIR_INO {
                return Ok(dir_attr(fs));
            }
            self.file_attr_of(fs, self.segment_of(ino)?).await
        })
    }

    /// The rendering is taken once, here.
    fn open<'a>(&'a self, fs: &'a Fs, ino: Ino, flags: i32) -> ViewFuture<'a, u64> {
        Box::pin(async move {
            if ino == ENTRIES_DIR_INO {
                return Err(FsError::IsDirectory);
            }
            if flags & libc::O_ACCMODE != libc::O_RDONLY {
                return Err(FsError::ReadOnly);
            }
            let rendered = fs.render(self.segment_of(ino)?).await?;
            let handle = fs.new_handle();
            lock(&self.state).open.insert(handle, rendered.jsonl);
            Ok(handle)
        })
    }

    fn read(&self, handle: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        let state = lock(&self.state);
        let jsonl = state.open.get(&handle).ok_or(FsError::BadHandle)?;
        let start = (offset.min(jsonl.len() as u64)) as usize;
        let end = start.saturating_add(size as usize).min(jsonl.len());
        Ok(jsonl.slice(start..end))
    }

    fn release(&self, handle: u64) {
        lock(&self.state).open.remove(&handle);
    }

    /// The root's stream, its segments handed out as the view's files as its pages come (see
    /// `readdir.rs`).
    fn opendir(&self, fs: &Fs, ino: Ino) -> FsResult<DirStream> {
        if ino != ENTRIES_DIR_INO {
            return Err(FsError::NotDirectory);
        }
        Ok(DirStream::mapped(ino, fs.dir_stream(ROOT_INO)))
    }

    /// The view's files for the segments among a batch of the root's entries, in its order.
    /// A size is known only when the rendering is cached (see the module's comment).
    fn map_batch(&self, fs: &Fs, batch: &[DirEntry]) -> Vec<DirEntry> {
        let mut files: Vec<DirEntry> = Vec::new();
        let mut state = lock(&self.state);
        let mut last_id = None;
        for entry in batch.iter().filter(|entry| entry.kind == Kind::File) {
            let Some((id, SegmentFile::Data)) = segment::parse_file_name(&entry.name) else {
                continue;
            };
            // Two spellings of one id (fewer digits, upper case) are one segment.
            if last_id.replace(id) == Some(id) {
                continue;
            }
            let ino = state.ino(id);
            let cached = fs.cached_rendering(id);
            files.push(DirEntry {
                ino,
                kind: Kind::File,
                name: jsonl_file_name(id),
                next_offset: 0,
                attr_known: cached.is_some(),
                attr: file_attr(ino, &entry.attr, cached.as_ref().map(|c| c.len() as u64)),
            });
        }
        files
    }

    fn leading_entries(&self, fs: &Fs) -> FsResult<Vec<DirEntry>> {
        let root = attr_of(fs.ns().node(ROOT_INO)?, &fs.config);
        Ok(vec![
            dot_entry(".", dir_attr(fs), 1),
            dot_entry("..", root, 2),
        ])
    }

    /// The view's entry in the root's listing, with `--list-entries`.
    fn entry_in(&self, fs: &Fs, dir: Ino) -> Option<DirEntry> {
        (dir == ROOT_INO && self.listed_in_root).then(|| DirEntry {
            ino: ENTRIES_DIR_INO,
            kind: Kind::Directory,
            name: ENTRIES_DIR.into(),
            next_offset: 0,
            attr_known: true,
            attr: dir_attr(fs),
        })
    }

    /// The view's files carry the segment id xattr, like the segments they decode.
    fn getxattr(&self, ino: Ino, name: &str) -> FsResult<Vec<u8>> {
        if !name.starts_with(super::file::USER_XATTR_PREFIX) {
            return Err(FsError::XattrNamespaceUnsupported);
        }
        match self.segment_of(ino) {
            Ok(id) if name == super::file::SEGMENT_ID_XATTR => Ok(id.to_string().into_bytes()),
            _ => Err(FsError::NoAttribute),
        }
    }

    fn listxattr(&self, ino: Ino) -> FsResult<Vec<u8>> {
        Ok(match self.segment_of(ino) {
            Ok(_) => [super::file::SEGMENT_ID_XATTR.as_bytes(), &[0]].concat(),
            Err(_) => Vec::new(),
        })
    }
}

fn dir_attr(fs: &Fs) -> Attr {
    Attr {
        ino: ENTRIES_DIR_INO,
        kind: Kind::Directory,
        file_type: FileType::Directory,
        size: 0,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        perm: 0o555,
        uid: fs.config.uid,
        gid: fs.config.gid,
        rdev: 0,
    }
}

/// What the view needs of the mount: segments rendered from the namespace's files through the
/// block cache.
impl Fs {
    /// The segment's JSON Lines: from the cache when both objects are unchanged, else read,
    /// decoded, checked and cached.
    async fn render(&self, id: u64) -> FsResult<Rendered> {
        let bin = self.resolve_segment_file(id, SegmentFile::Data).await?;
        let meta = match self.resolve_segment_file(id, SegmentFile::Meta).await {
            Ok(ino) => Some(ino),
            Err(FsError::NotFound) => None,
            Err(e) => return Err(e),
        };
        let (bin_handle, bin_reader) = self.open_reader(bin).await?;
        let meta_reader = match meta {
            Some(ino) => match self.open_reader(ino).await {
                Ok(opened) => Some(opened),
                Err(e) => {
                    self.release_reader(bin_handle);
                    return Err(e);
                }
            },
            None => None,
        };
        let cache_id = rendering_id(
            &bin_reader.object().key,
            &bin_reader.object().etag,
            meta_reader
                .as_ref()
                .map_or("", |(_, reader)| reader.object().etag.as_str()),
        );
        let result = match self.reads.cache().get(&cache_id) {
            Some(jsonl) => Ok(jsonl),
            None => {
                self.decode(
                    id,
                    &bin_reader,
                    meta_reader.as_ref().map(|(_, r)| r.as_ref()),
                    cache_id,
                )
                .await
            }
        };
        self.release_reader(bin_handle);
        if let Some((handle, _)) = meta_reader {
            self.release_reader(handle);
        }
        Ok(Rendered {
            jsonl: result?,
            bin,
        })
    }

    async fn decode(
        &self,
        id: u64,
        bin: &crate::cache::ObjectReader,
        meta: Option<&crate::cache::ObjectReader>,
        cache_id: BlockId,
    ) -> FsResult<Bytes> {
        let stored = read_whole(bin).await?;
        let sidecar = match meta {
            Some(reader) => Some(read_whole(reader).await?),
            None => None,
        };
        // Decoding a large segment takes a while of CPU: off the async workers.
        let rendered =
            tokio::task::spawn_blocking(move || render_jsonl(id, &stored, sidecar.as_deref()))
                .await
                .map_err(|e| FsError::Io(std::io::Error::other(e)))?;
        let jsonl = rendered.inspect_err(|e| {
            tracing::warn!(segment = %format!("{id:016x}"), error = %e,
                "segment does not decode; entries/ answers EIO for it");
        })?;
        self.reads.cache().insert_in_memory(cache_id, jsonl.clone());
        Ok(jsonl)
    }

    /// The rendering of segment `id` if the cache holds one for the versions the namespace
    /// trusts now (no request).
    fn cached_rendering(&self, id: u64) -> Option<Bytes> {
        let (key, bin_etag, meta_etag) = {
            let ns = self.ns();
            let current = |file| {
                let node = ns.child(ROOT_INO, &segment::file_name(id, file))?;
                ns.is_current(node.ino()).then_some(())?;
                Some((node.key().to_string(), node.attrs().etag.clone()?))
            };
            let (key, bin_etag) = current(SegmentFile::Data)?;
            let meta_etag = current(SegmentFile::Meta).map_or(String::new(), |(_, etag)| etag);
            (key, bin_etag, meta_etag)
        };
        self.reads
            .cache()
            .get(&rendering_id(&key, &bin_etag, &meta_etag))
    }

    /// The root's file for segment `id`: its canonical name, else any name with that id
    /// (segment names may use fewer digits or upper case).
    async fn resolve_segment_file(&self, id: u64, file: SegmentFile) -> FsResult<Ino> {
        match self.resolve(ROOT_INO, &segment::file_name(id, file)).await {
            Err(FsError::NotFound) => {}
            other => return other,
        }
        let ns = self.ns();
        ns.children(ROOT_INO)
            .find(|node| {
                node.kind() == Kind::File
                    && segment::parse_file_name(node.name()) == Some((id, file))
            })
            .map(|node| node.ino())
            .ok_or(FsError::NotFound)
    }

    /// A reader pinned to the file's current version, as `open` would make it.
    async fn open_reader(
        &self,
        ino: Ino,
    ) -> FsResult<(u64, std::sync::Arc<crate::cache::ObjectReader>)> {
        let opened = self.open_for_reading(ino).await?;
        let reader = self
            .handles()
            .reader(opened.handle)
            .map(|(_, reader)| reader)
            .ok_or(FsError::BadHandle)?;
        Ok((opened.handle, reader))
    }

    /// Closes a reader the view opened for decoding, like a release.
    fn release_reader(&self, handle: u64) {
        let Some(Handle::Reader { ino, .. }) = self.handles().remove(handle) else {
            return;
        };
        let deletes = self.ns().handle_released(ino, handle);
        if let (false, Some(fs), Ok(runtime)) = (
            deletes.is_empty(),
            self.this.upgrade(),
            tokio::runtime::Handle::try_current(),
        ) {
            runtime.spawn(async move { fs.run_deferred_deletes(deletes).await });
        }
    }
}

/// Where a rendering is cached: under both objects' versions (`meta_etag` is empty without a
/// sidecar), and under a key with a NUL, which no key this mount shows has, so no object's
/// blocks share it.
fn rendering_id(bin_key: &str, bin_etag: &str, meta_etag: &str) -> BlockId {
    BlockId {
        key: format!("\0entries\0{bin_key}"),
        etag: format!("{bin_etag}\n{meta_etag}"),
        index: 0,
    }
}

async fn read_whole(reader: &crate::cache::ObjectReader) -> FsResult<Bytes> {
    let size = reader.object().size;
    let mut whole = BytesMut::with_capacity(size as usize);
    while (whole.len() as u64) < size {
        let piece = reader.read(whole.len() as u64, READ_PIECE).await?;
        if piece.is_empty() {
            break;
        }
        whole.extend_from_slice(&piece);
    }
    Ok(whole.freeze())
}

fn file_attr(ino: Ino, bin: &Attr, size: Option<u64>) -> Attr {
    Attr {
        ino,
        kind: Kind::File,
        file_type: FileType::Regular,
        size: size.unwrap_or(0),
        perm: 0o444,
        rdev: 0,
        ..bin.clone()
    }
}

fn dot_entry(name: &str, attr: Attr, next_offset: u64) -> DirEntry {
    DirEntry {
        ino: attr.ino,
        kind: Kind::Directory,
        name: name.into(),
        next_offset,
        attr_known: true,
        attr,
    }
}
