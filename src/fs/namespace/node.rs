//! One node: a name in a directory with one kind, and what we know of it. Fields are private to
//! the namespace module; everything outside reads them through accessors and changes them
//! through the namespace's transitions.

use std::borrow::Cow;
use std::time::{Instant, SystemTime};

use super::coverage::Coverage;
use super::open_file::{DeferredDelete, OpenFile, WriteStatus};
use crate::store::UserMetadata;

pub type Ino = u64;
pub const ROOT_INO: Ino = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    File,
    Directory,
}

/// What we know of an object's Content-Type. A metadata change is a CopyObject with REPLACE,
/// which replaces the Content-Type too, so it must be carried over: from a HEAD if unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentType {
    /// Seen in a listing only: a metadata change must HEAD first.
    Unknown,
    /// As this mount uploaded it or a HEAD/GET reported it (`None`: the server's default).
    Known(Option<MimeType>),
}

/// A Content-Type as a node keeps it. Nearly every object of a bucket has one of a few types
/// (S3 gives `binary/octet-stream` to an object put without one), so those are kept as static
/// strings: a million nodes that learnt theirs from a HEAD then hold no copy of it each (some
/// 40 bytes of heap a node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MimeType(pub(super) Cow<'static, str>);

const COMMON_MIME_TYPES: &[&str] = &[
    "binary/octet-stream",
    "application/octet-stream",
    "application/x-directory",
    "application/json",
    "text/plain",
    "text/plain; charset=utf-8",
];

impl From<String> for MimeType {
    fn from(value: String) -> Self {
        match COMMON_MIME_TYPES.iter().find(|common| **common == value) {
            Some(common) => MimeType(Cow::Borrowed(common)),
            None => MimeType(Cow::Owned(value)),
        }
    }
}

impl From<MimeType> for String {
    fn from(value: MimeType) -> Self {
        value.0.into_owned()
    }
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
    pub content_type: ContentType,
    /// The object's LastModified as S3 reported it (a listing or a HEAD); `None` when this
    /// mount wrote the object and has not been told yet. A metadata change by another client
    /// (a CopyObject onto itself) keeps the ETag but moves it.
    pub last_modified: Option<SystemTime>,
}

impl Attrs {
    /// Whether `other` (what S3 says now) is the version these attributes describe: same
    /// ETag and size, and the same LastModified to the second (HEAD's HTTP date has no
    /// fractions), unless ours is not known yet.
    pub fn same_version(&self, other: &Attrs) -> bool {
        let seconds = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .ok()
        };
        self.etag == other.etag
            && self.size == other.size
            && match (self.last_modified, other.last_modified) {
                (None, _) => true,
                (Some(ours), Some(theirs)) => seconds(ours) == seconds(theirs),
                (Some(_), None) => false,
            }
    }
}

impl Attrs {
    pub fn directory() -> Self {
        Attrs {
            size: 0,
            mtime: SystemTime::now(),
            etag: None,
            metadata: UserMetadata::new(),
            content_type: ContentType::Unknown,
            last_modified: None,
        }
    }

    /// A new local file: nothing uploaded yet, uploaded later with no Content-Type.
    pub fn new_file(metadata: UserMetadata) -> Self {
        Attrs {
            size: 0,
            mtime: SystemTime::now(),
            etag: None,
            metadata,
            content_type: ContentType::Known(None),
            last_modified: None,
        }
    }
}

/// Where a node's truth lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// In S3 (a file made here and not uploaded yet says so in its open-file record:
    /// [`WriteStatus::Created`]).
    Remote,
    /// A directory made here whose marker the server refused; it lives until it has children.
    LocalDirectory,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub(super) ino: Ino,
    pub(super) parent: Ino,
    pub(super) name: Box<str>,
    pub(super) kind: Kind,
    /// Object key for a file; prefix ending in `/` for a directory (root: the mount prefix).
    pub(super) key: Box<str>,
    pub(super) attrs: Attrs,
    pub(super) origin: Origin,
    /// When `attrs` were last confirmed by S3; `None` means never (local state).
    pub(super) validated: Option<Instant>,
    /// References the kernel holds (each lookup or readdirplus entry adds one, forget removes).
    pub(super) lookups: u64,
    /// Directory streams that listed the node and have not handed it to the kernel yet.
    pub(super) pins: u32,
    /// Whether the node is still reachable by its name (false after unlink or replacement).
    pub(super) linked: bool,
    /// What only nodes this mount opened or changed carry (most nodes, entries of listings,
    /// have none): kept apart so an entry costs little.
    pub(super) local: Option<Box<Local>>,
    /// For a directory listed here: which of its names a listing confirmed, and when.
    pub(super) coverage: Option<Box<Coverage>>,
}

/// A node's state that only files opened or changed here have.
#[derive(Debug, Clone)]
pub struct Local {
    /// ETag whose bytes the kernel may keep in its page cache across opens.
    pub(super) page_cache_etag: Option<String>,
    /// What this mount has open of the file: handles, write status, pending uploads and the
    /// deletes that wait for its last close.
    pub(super) open: OpenFile,
    /// Replaced by a rename onto its name: its open readers get ESTALE.
    pub(super) replaced: bool,
    /// Since when `attrs.metadata` holds a chmod/chown/utimens not yet copied onto the object.
    pub(super) metadata_dirty: Option<Instant>,
}

impl Node {
    pub(super) fn new(ino: Ino, parent: Ino, name: &str, kind: Kind, key: String) -> Node {
        Node {
            ino,
            parent,
            name: name.into(),
            kind,
            key: key.into_boxed_str(),
            attrs: Attrs::directory(),
            origin: Origin::Remote,
            validated: None,
            lookups: 0,
            pins: 0,
            linked: true,
            local: None,
            coverage: None,
        }
    }

    /// The local state, made when first needed.
    pub(super) fn local_mut(&mut self) -> &mut Local {
        self.local.get_or_insert_with(|| {
            Box::new(Local {
                page_cache_etag: None,
                open: OpenFile::CLOSED,
                replaced: false,
                metadata_dirty: None,
            })
        })
    }

    fn local_or_default(&self) -> &Local {
        static NONE: Local = Local {
            page_cache_etag: None,
            open: OpenFile::CLOSED,
            replaced: false,
            metadata_dirty: None,
        };
        self.local.as_deref().unwrap_or(&NONE)
    }

    pub(super) fn page_cache_etag(&self) -> Option<&str> {
        self.local_or_default().page_cache_etag.as_deref()
    }

    /// The kernel's cached pages are of another version now.
    pub(super) fn forget_page_cache(&mut self) {
        if let Some(local) = &mut self.local {
            local.page_cache_etag = None;
        }
    }

    pub(super) fn metadata_dirty_since(&self) -> Option<Instant> {
        self.local_or_default().metadata_dirty
    }

    pub(super) fn set_metadata_dirty(&mut self, since: Option<Instant>) {
        if since.is_some() || self.local.is_some() {
            self.local_mut().metadata_dirty = since;
        }
    }

    pub(super) fn deletes_at_close(&self) -> &[DeferredDelete] {
        self.open_file().deletes_at_close()
    }

    pub(super) fn take_deletes_at_close(&mut self) -> Vec<DeferredDelete> {
        self.local
            .as_mut()
            .map(|local| local.open.take_deletes_at_close())
            .unwrap_or_default()
    }

    /// What this mount has open of the node (nothing, for most nodes).
    pub fn open_file(&self) -> &OpenFile {
        &self.local_or_default().open
    }

    pub(super) fn open_file_mut(&mut self) -> &mut OpenFile {
        &mut self.local_mut().open
    }

    /// Which names a listing confirmed (nothing, for a directory never listed).
    pub(super) fn coverage(&self) -> &Coverage {
        static NONE: Coverage = Coverage::NONE;
        self.coverage.as_deref().unwrap_or(&NONE)
    }

    pub(super) fn coverage_mut(&mut self) -> &mut Coverage {
        self.coverage.get_or_insert_with(Box::default)
    }

    pub(super) fn clear_coverage(&mut self) {
        self.coverage = None;
    }

    pub fn ino(&self) -> Ino {
        self.ino
    }
    pub fn parent(&self) -> Ino {
        self.parent
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn kind(&self) -> Kind {
        self.kind
    }
    pub fn key(&self) -> &str {
        &self.key
    }
    pub fn attrs(&self) -> &Attrs {
        &self.attrs
    }
    pub fn origin(&self) -> Origin {
        self.origin
    }
    pub fn linked(&self) -> bool {
        self.linked
    }
    /// A file or directory that exists only here (made here and not uploaded yet, or a
    /// directory whose marker the server refused).
    pub fn is_local(&self) -> bool {
        self.origin != Origin::Remote || self.write_status() == WriteStatus::Created
    }
    pub fn write_status(&self) -> WriteStatus {
        self.open_file().status()
    }
    pub fn is_open_for_writing(&self) -> bool {
        self.open_file().is_open_for_writing()
    }
    /// Whether this mount has the file open (for reading or writing).
    pub fn is_open(&self) -> bool {
        self.open_file().is_open()
    }
    pub fn replaced(&self) -> bool {
        self.local_or_default().replaced
    }
    pub fn metadata_dirty(&self) -> bool {
        self.metadata_dirty_since().is_some()
    }
}
