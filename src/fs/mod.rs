//! `fs/` turns file system operations into S3 calls. [`Fs`] is an async core that knows no
//! fuser types, so tests drive it directly on any [`ObjectStore`]; `fuse` is the thin adapter
//! the kernel talks to.
//!
//! Round trips are the cost that matters (10-100 ms each on real S3), so every operation has a
//! request budget, written next to it and tested by counting requests on the dev server:
//!
//! | operation | requests |
//! |---|---|
//! | `ls -l` of a directory of N entries whose metadata is known (segments layout, `--posix-metadata off`, versions in the metadata cache) | ceil(N/1000) LIST, no HEAD, no FUSE lookup (readdirplus) |
//! | first `ls -l` on a machine, keys layout with stored metadata (the default) | ceil(N/1000) LIST + at most N HEAD |
//! | lookup/stat of a name in a directory listed within the TTL, or made here | 0 |
//! | lookups in a directory whose listing expired | 1 LIST for the directory (small) or for the 1000 names from the one asked (large) |
//! | lookup of a name a windowed LIST could not settle | 1 HEAD + 1 LIST in parallel |
//! | open + read of a small file | 1 GET (an expired node learns its ETag from that GET) |
//! | create + write + close a small new file in a listed directory | 1 PUT |
//! | `O_EXCL` create of a segment (segments layout), name not known here | + 1 HEAD at open (`EEXIST` there if the segment exists); keys layout: 0 at open |
//! | create + write + close a large file | 1 create + N parts + 1 complete |
//! | unlink | 1 DELETE |
//! | mkdir | 1 PUT (the `dir/` marker) |
//! | rmdir | 1 LIST + 1 DELETE |
//! | `ls entries/` (segments layout) | what `ls` of the root costs |
//! | `cat entries/segment-<id>.jsonl` | 1 GET of the `.bin` + 1 GET of the sidecar (1 MiB blocks for larger ones); 0 when its rendering is cached |
//! | rename of a file | 1 COPY + 1 DELETE (the COPY carries pending metadata changes) |
//! | rename of a file open here | 1 COPY now; 1 HEAD + 1 DELETE of the old object at its last close (+1 COPY + 1 DELETE if its multipart upload had started) |
//! | unlink of a file open here | 0 now; 1 HEAD + 1 DELETE at its last close |
//! | chmod/chown/utimens of a closed file | 0 at once; 1 COPY within [`METADATA_DELAY`] unless a rename or fsync carries it first (+1 HEAD if the Content-Type is unknown) |

pub mod error;
pub mod layout;
pub mod namespace;

mod attr;
pub mod clock;
mod dir;
mod entries;
mod file;
pub mod fuse;
mod gates;
mod handles;
mod head_window;
mod lookup;
mod metadata;
mod process;
mod readahead;
mod readdir;
mod special;
mod view;
mod write_handle;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use crate::cache::{BlockCache, ReadPath, ReaderConfig};
use crate::store::ObjectStore;
use clock::Clock;
use handles::Handles;

pub use attr::{Attr, FileType, SetAttr};
pub use error::{FsError, FsResult};
use gates::Gates;
pub use layout::{Layout, LayoutKind};
pub use metadata::METADATA_DELAY;
use namespace::Namespace;
pub use namespace::{Ino, Kind, ROOT_INO};
pub use readdir::DirEntry;
pub use special::Caller;

/// What a mount is configured with (the CLI builds it from flags).
#[derive(Debug, Clone)]
pub struct FsConfig {
    pub layout: Layout,
    pub read_only: bool,
    pub uid: u32,
    pub gid: u32,
    pub dir_mode: u16,
    pub file_mode: u16,
    /// How long metadata (attributes, listings, negative lookups) is trusted; `None` = for ever.
    pub metadata_ttl: Option<Duration>,
    /// How long a name found missing stays missing without a request: `None` = as long as
    /// `metadata_ttl`; `Some(None)` = for ever.
    pub negative_metadata_ttl: Option<Option<Duration>>,
    pub cache_bytes: u64,
    pub block_size: u64,
    pub part_size: u64,
    pub max_parts_in_flight: usize,
    /// Memory all uploads together may hold in parts being sent (`--max-memory-target` less
    /// the block cache); `None`: each upload keeps only its own bound.
    pub write_budget_bytes: Option<u64>,
    pub staging_dir: PathBuf,
    /// Let writers replace existing segments (segments layout only).
    pub allow_overwrite: bool,
    /// Show the decoded `entries/` directory in the root's listing (segments layout); it is
    /// reachable by name either way.
    pub list_entries: bool,
    /// Directories with more entries than this are not renamed (EXDEV, so `mv` copies instead).
    pub rename_dir_limit: usize,
    /// Show every name with its stored s3fs metadata (mode, owner, type, times): lookups and
    /// listings fetch what they lack (parallel HEADs; listings do not carry it). On by default
    /// in the keys layout; off shows the mount's defaults for names only listed.
    pub posix_metadata: bool,
    /// What HEADs told of object versions, kept across mounts: a known version needs no HEAD.
    pub metadata_cache: Option<std::sync::Arc<crate::cache::MetadataCache>>,
    /// The disk tier below the block cache (`--cache-dir`), already opened and locked.
    pub disk_cache: Option<crate::cache::DiskCache>,
    /// Nodes kept before those the kernel does not reference are pruned (`--max-cached-nodes`);
    /// never a limit on what a listing shows.
    pub max_cached_nodes: usize,
    /// The most metadata HEADs a listing keeps in flight (the connection pool); the window
    /// that adapts below it starts smaller (see `head_window`).
    pub max_heads_in_flight: usize,
    /// The clock TTLs are measured with; tests move it instead of sleeping.
    pub clock: Clock,
}

impl FsConfig {
    pub fn new(layout: Layout) -> Self {
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let posix_metadata = layout.kind == LayoutKind::Keys;
        FsConfig {
            layout,
            read_only: false,
            uid,
            gid,
            dir_mode: 0o755,
            file_mode: 0o644,
            metadata_ttl: Some(Duration::from_secs(1)),
            negative_metadata_ttl: None,
            cache_bytes: 256 << 20,
            block_size: 1 << 20,
            part_size: crate::upload::UploadConfig::DEFAULT_PART_SIZE,
            max_parts_in_flight: crate::upload::UploadConfig::DEFAULT_MAX_PARTS_IN_FLIGHT,
            write_budget_bytes: None,
            staging_dir: std::env::temp_dir(),
            allow_overwrite: false,
            list_entries: false,
            rename_dir_limit: 1000,
            posix_metadata,
            metadata_cache: None,
            disk_cache: None,
            max_cached_nodes: namespace::DEFAULT_NODE_LIMIT,
            max_heads_in_flight: crate::store::DEFAULT_POOL_SIZE,
            clock: Clock::default(),
        }
    }

    /// The TTL the kernel gets for entries and attributes.
    pub fn kernel_ttl(&self) -> Duration {
        self.metadata_ttl
            .unwrap_or(Duration::from_secs(365 * 24 * 3600))
    }
}

/// The file system core: the namespace, open handles, over one object store.
pub struct Fs {
    store: Arc<dyn ObjectStore>,
    config: FsConfig,
    /// What this mount knows about names; the one owner of nodes, listings and misses.
    namespace: Mutex<Namespace>,
    /// One listing of a directory at a time: lookups that find it stale wait for that LIST
    /// instead of sending their own.
    listing_gates: Gates,
    /// One metadata persist or rename of a node at a time.
    metadata_gates: Gates,
    reads: ReadPath,
    /// What each open handle number holds.
    handles: Mutex<Handles>,
    /// Signalled whenever a write handle's release starts: what waits for the release of a
    /// file every descriptor of which saw a close waits for this, then for its upload.
    released: tokio::sync::Notify,
    /// The read-only trees beside the namespace (the segments layout's `entries/`), which
    /// `fuse.rs` hands their operations to (`view.rs`).
    views: Vec<Box<dyn view::View>>,
    /// Per directory, the order its files are being opened in, for cross-file prefetch.
    streams: Mutex<readahead::Streams>,
    /// The memory the mount's uploads share for parts in flight.
    write_budget: Option<Arc<crate::upload::WriteBudget>>,
    /// How many metadata HEADs are in flight, adapted to the server's answers.
    head_window: head_window::HeadWindow,
    /// For the background tasks that persist delayed metadata changes.
    this: Weak<Fs>,
}

impl Fs {
    pub fn new(store: Arc<dyn ObjectStore>, config: FsConfig) -> Arc<Fs> {
        let reader_config = ReaderConfig {
            block_size: config.block_size,
            ..ReaderConfig::default()
        };
        let reads = ReadPath::new(
            store.clone(),
            BlockCache::with_disk(config.cache_bytes, config.disk_cache.clone()),
            reader_config,
        );
        Arc::new_cyclic(|this| Fs {
            namespace: Mutex::new(
                Namespace::new(
                    &config.layout.root_prefix,
                    config.metadata_ttl,
                    config.clock.clone(),
                )
                .with_miss_ttl(config.negative_metadata_ttl.unwrap_or(config.metadata_ttl))
                .with_node_limit(config.max_cached_nodes),
            ),
            write_budget: config
                .write_budget_bytes
                .map(crate::upload::WriteBudget::new),
            head_window: head_window::HeadWindow::new(config.max_heads_in_flight),
            listing_gates: Gates::default(),
            metadata_gates: Gates::default(),
            store,
            views: views(&config),
            config,
            reads,
            handles: Mutex::new(Handles::default()),
            released: tokio::sync::Notify::new(),
            streams: Mutex::new(readahead::Streams::default()),
            this: this.clone(),
        })
    }

    pub fn config(&self) -> &FsConfig {
        &self.config
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    fn ns(&self) -> MutexGuard<'_, Namespace> {
        lock(&self.namespace)
    }

    fn handles(&self) -> MutexGuard<'_, Handles> {
        lock(&self.handles)
    }

    fn new_handle(&self) -> u64 {
        self.handles().reserve()
    }

    fn check_writable(&self) -> FsResult<()> {
        if self.config.read_only {
            Err(FsError::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// Waits for every open writer to finish its upload, persists every pending metadata
    /// change and runs the deletes that waited for open files (used at unmount).
    pub async fn flush_all(&self) {
        let writers = self.handles().drain_writers();
        for (number, ino, writer) in writers {
            let mut writer = writer.lock().await;
            if let Err(e) = self.finish_write(&mut writer, true).await {
                tracing::error!(ino, error = %e, "upload at unmount failed");
            }
            let deletes = self.ns().handle_released(ino, number);
            self.run_deferred_deletes(deletes).await;
        }
        self.persist_all_metadata().await;
        let deletes = self.ns().take_all_deferred_deletes();
        self.run_deferred_deletes(deletes).await;
    }
}

/// The views the mount's layout has.
fn views(config: &FsConfig) -> Vec<Box<dyn view::View>> {
    match config.layout.kind {
        LayoutKind::Segments => vec![Box::new(entries::EntriesView::new(config.list_entries))],
        LayoutKind::Keys => Vec::new(),
    }
}

/// Locks a std mutex, recovering from poisoning: no critical section here leaves state
/// half-updated across a panic point.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

#[cfg(test)]
mod tests;
