//! [`ObjectReader`]: reads one object version, for one open file handle, through the shared
//! [`BlockCache`], prefetching ahead of sequential readers.
//!
//! A read maps to the blocks it covers. Each block is a cache hit, a fetch already under way to
//! join, or a miss; consecutive misses are claimed together and fetched with one ranged GET, so a
//! small file read whole costs exactly one request. Then, if the handle reads sequentially (see
//! the `pattern` module), the next `window` blocks that are neither cached nor in flight
//! are claimed and fetched in spawned tasks. The reader only ever waits for the blocks it needs,
//! which may be blocks a prefetch is already fetching (single-flight makes it join that GET).
//!
//! Prefetch is advisory and bounded: each prefetch GET holds a permit of a semaphore shared by
//! every reader of a [`ReadPath`]; when none is free the prefetch is skipped, never queued, and
//! the next read tries again. The GETs allowed grow with the readers streaming now
//! (`max_parallel_gets` each, up to `max_parallel_gets_total`), so four sequential readers each
//! keep as many GETs in flight as one alone would; the bytes they may speculate stay bounded by
//! the cache ([`BlockCache::may_prefetch`]). Prefetch GETs cover `window / max_parallel_gets` blocks each, and
//! a short piece at the window's end waits until it has grown to that size (or reaches the end
//! of the object), so a steady sequential reader issues few, large GETs.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::block::{BlockCache, FetchTicket, Lookup, PendingBlock};
use super::block_id::BlockId;
use super::fetch::{ObjectVersion, fetch_range, fetch_run};
use super::pattern::{Access, AccessPattern};
use crate::metrics::{ReadPathCounters, ReadPathSource};
use crate::store::{GetRequest, ObjectMeta, ObjectStore, StoreError, StoreResult};

const MIB: u64 = 1024 * 1024;

/// Jumping reads up to this fraction of a block are fetched exactly (see `is_exact_read`).
const EXACT_READ_FRACTION: u64 = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderConfig {
    /// Unit of caching and of GET ranges. Objects up to this size are one block.
    pub block_size: u64,
    /// Furthest a sequential reader prefetches ahead; also capped at half the cache budget so
    /// that prefetched blocks are not evicted before they are read.
    pub max_window_bytes: u64,
    /// Prefetch GETs in flight at once for each reader streaming sequentially (and for the
    /// mount's cross-file prefetch when none is).
    pub max_parallel_gets: usize,
    /// Prefetch GETs in flight at once across all readers of a [`ReadPath`], however many.
    pub max_parallel_gets_total: usize,
}

impl Default for ReaderConfig {
    fn default() -> Self {
        ReaderConfig {
            block_size: MIB,
            max_window_bytes: 64 * MIB,
            max_parallel_gets: 16,
            max_parallel_gets_total: 64,
        }
    }
}

/// A snapshot of the read path's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    pub reads: u64,
    pub read_bytes: u64,
    /// Reads that had to wait for at least one block (a fetch of their own or one they joined).
    pub reader_waits: u64,
    /// Total time reads spent waiting for blocks: starvation, as opposed to throughput.
    pub reader_wait_nanos: u64,
    /// Non-sequential reads that dropped a stream's prefetch window.
    pub window_resets: u64,
    /// The largest prefetch window any reader reached.
    pub peak_window_bytes: u64,
    /// GETs issued for blocks a reader was waiting for.
    pub demand_gets: u64,
    pub prefetch_gets: u64,
    /// Prefetches not issued because all prefetch permits were taken, or because unread
    /// prefetched bytes already fill half the cache.
    pub prefetch_skipped: u64,
    /// Random reads fetched as exactly their range, uncached.
    pub exact_gets: u64,
}

#[derive(Default)]
struct ReadCounters {
    reads: AtomicU64,
    read_bytes: AtomicU64,
    reader_waits: AtomicU64,
    reader_wait_nanos: AtomicU64,
    window_resets: AtomicU64,
    peak_window_bytes: AtomicU64,
    demand_gets: AtomicU64,
    prefetch_gets: AtomicU64,
    prefetch_skipped: AtomicU64,
    exact_gets: AtomicU64,
}

struct PathShared {
    store: Arc<dyn ObjectStore>,
    cache: BlockCache,
    config: ReaderConfig,
    max_window_blocks: u64,
    prefetch_permits: Arc<Semaphore>,
    /// Readers whose prefetch window is open: each one is owed `max_parallel_gets` GETs.
    streaming_readers: AtomicUsize,
    counters: ReadCounters,
}

/// What the readers of one mount share: the store, the block cache, the prefetch permits and
/// the counters. Cheap to clone.
#[derive(Clone)]
pub struct ReadPath {
    shared: Arc<PathShared>,
}

impl ReadPath {
    /// `cache` must be used with `config.block_size` only. A zero block size or parallelism is
    /// raised to one.
    pub fn new(store: Arc<dyn ObjectStore>, cache: BlockCache, config: ReaderConfig) -> Self {
        let config = ReaderConfig {
            block_size: config.block_size.max(1),
            max_window_bytes: config.max_window_bytes,
            max_parallel_gets: config.max_parallel_gets.clamp(1, Semaphore::MAX_PERMITS),
            max_parallel_gets_total: config
                .max_parallel_gets_total
                .clamp(config.max_parallel_gets.max(1), Semaphore::MAX_PERMITS),
        };
        let max_window_blocks =
            config.max_window_bytes.min(cache.budget_bytes() / 2) / config.block_size;
        let path = ReadPath {
            shared: Arc::new(PathShared {
                store,
                cache,
                prefetch_permits: Arc::new(Semaphore::new(config.max_parallel_gets_total)),
                streaming_readers: AtomicUsize::new(0),
                max_window_blocks,
                config,
                counters: ReadCounters::default(),
            }),
        };
        // The metrics registry reads our counters when scraped; it holds the path weakly, so
        // an unmounted file system's path goes away with it.
        let source: Arc<dyn ReadPathSource> = path.shared.clone();
        crate::metrics::register_read_path(Arc::downgrade(&source));
        path
    }

    /// A reader for one open handle of `object`.
    pub fn open(&self, object: ObjectVersion) -> ObjectReader {
        let pattern =
            AccessPattern::new(self.shared.config.block_size, self.shared.max_window_blocks);
        ObjectReader {
            path: self.clone(),
            object: Arc::new(object),
            pattern: Mutex::new(pattern),
            streaming: AtomicBool::new(false),
        }
    }

    /// GETs the first block of `key`'s current version without If-Match, keeps it in the cache
    /// and returns that version's metadata. A file opened after its attributes expired learns
    /// its ETag from the GET its first read needs anyway, instead of from a HEAD before it.
    pub async fn fetch_current(&self, key: &str) -> StoreResult<ObjectMeta> {
        let shared = &self.shared;
        shared.counters.demand_gets.fetch_add(1, Ordering::Relaxed);
        let request = GetRequest {
            key: key.to_string(),
            range: Some(0..shared.config.block_size),
            if_match: None,
        };
        let output = shared.store.get(request).await?;
        let meta = output.meta.clone();
        let first_block = ObjectVersion::from(&meta).block_range(shared.config.block_size, 0);
        let range = output.range.clone();
        let bytes = output.collect().await?;
        if range == first_block && bytes.len() as u64 == first_block.end {
            let id = BlockId {
                key: key.to_string(),
                etag: meta.etag.clone(),
                index: 0,
            };
            shared.cache.insert(id, bytes);
        }
        Ok(meta)
    }

    /// Fetches a whole small object ahead of its open (cross-file prefetch), with one GET
    /// holding a prefetch permit. Skipped, never queued, when no permit is free or any block is
    /// already cached or being fetched. Returns the fetch's task, which ends with whether the
    /// object's first block arrived (the GET, pinned to the ETag, confirmed that version).
    pub fn prefetch_object(&self, object: ObjectVersion) -> Option<tokio::task::JoinHandle<bool>> {
        let shared = &self.shared;
        let blocks = object.block_count(shared.config.block_size);
        if blocks == 0 {
            return None;
        }
        let permit = self.prefetch_permit(object.size)?;
        let id = |index| BlockId {
            key: object.key.clone(),
            etag: object.etag.clone(),
            index,
        };
        let block_size = shared.config.block_size;
        let tickets: Vec<FetchTicket> = (0..blocks)
            .map_while(|index| {
                let len = object.block_len(block_size, index);
                shared.cache.claim_for_prefetch(id(index), len)
            })
            .collect();
        if tickets.is_empty() {
            return None;
        }
        shared
            .counters
            .prefetch_gets
            .fetch_add(1, Ordering::Relaxed);
        let path = self.clone();
        let first = id(0);
        Some(tokio::spawn(async move {
            let shared = &path.shared;
            let block_size = shared.config.block_size;
            fetch_run(shared.store.as_ref(), &object, block_size, tickets).await;
            drop(permit);
            shared.cache.is_cached_or_pending(&first)
        }))
    }

    /// A prefetch permit for `bytes` more, if one is free and speculation is below its bound
    /// ([`BlockCache::may_prefetch`]); a refusal is counted as a skipped prefetch.
    fn prefetch_permit(&self, bytes: u64) -> Option<OwnedSemaphorePermit> {
        let shared = &self.shared;
        let permit = Arc::clone(&shared.prefetch_permits)
            .try_acquire_owned()
            .ok()
            .filter(|_| self.prefetch_gets_in_flight() <= self.prefetch_gets_allowed())
            .filter(|_| shared.cache.may_prefetch(bytes));
        if permit.is_none() {
            shared
                .counters
                .prefetch_skipped
                .fetch_add(1, Ordering::Relaxed);
        }
        permit
    }

    /// Whether every prefetch permit is taken (further prefetches would be skipped).
    pub fn prefetch_permits_exhausted(&self) -> bool {
        self.prefetch_gets_in_flight() >= self.prefetch_gets_allowed()
    }

    fn prefetch_gets_in_flight(&self) -> usize {
        let shared = &self.shared;
        shared.config.max_parallel_gets_total - shared.prefetch_permits.available_permits()
    }

    /// `max_parallel_gets` per streaming reader (at least one's worth), up to the total.
    fn prefetch_gets_allowed(&self) -> usize {
        let config = &self.shared.config;
        let readers = self.shared.streaming_readers.load(Ordering::Relaxed).max(1);
        config
            .max_parallel_gets
            .saturating_mul(readers)
            .min(config.max_parallel_gets_total)
    }

    /// Sequential readers streaming right now (window open).
    pub fn streaming_readers(&self) -> usize {
        self.shared.streaming_readers.load(Ordering::Relaxed)
    }

    pub fn cache(&self) -> &BlockCache {
        &self.shared.cache
    }

    pub fn config(&self) -> &ReaderConfig {
        &self.shared.config
    }

    pub fn stats(&self) -> ReadStats {
        self.shared.stats()
    }
}

impl PathShared {
    fn stats(&self) -> ReadStats {
        let c = &self.counters;
        ReadStats {
            reads: c.reads.load(Ordering::Relaxed),
            read_bytes: c.read_bytes.load(Ordering::Relaxed),
            reader_waits: c.reader_waits.load(Ordering::Relaxed),
            reader_wait_nanos: c.reader_wait_nanos.load(Ordering::Relaxed),
            window_resets: c.window_resets.load(Ordering::Relaxed),
            peak_window_bytes: c.peak_window_bytes.load(Ordering::Relaxed),
            demand_gets: c.demand_gets.load(Ordering::Relaxed),
            prefetch_gets: c.prefetch_gets.load(Ordering::Relaxed),
            prefetch_skipped: c.prefetch_skipped.load(Ordering::Relaxed),
            exact_gets: c.exact_gets.load(Ordering::Relaxed),
        }
    }
}

impl ReadPathSource for PathShared {
    fn read_path_counters(&self) -> ReadPathCounters {
        let cache = self.cache.stats();
        let reads = self.stats();
        ReadPathCounters {
            cache_hits: cache.hits,
            cache_hit_bytes: cache.hit_bytes,
            cache_misses: cache.misses,
            cache_miss_bytes: cache.miss_bytes,
            cache_prefetch_bytes: cache.prefetch_bytes,
            cache_evictions: cache.evictions,
            cache_prefetch_wasted: cache.prefetch_wasted,
            cache_unread_prefetch_bytes: cache.unread_prefetch_bytes,
            cache_bytes: cache.bytes_held,
            cache_blocks: cache.blocks_held,
            reads: reads.reads,
            read_bytes: reads.read_bytes,
            demand_gets: reads.demand_gets,
            prefetch_gets: reads.prefetch_gets,
            prefetch_skipped: reads.prefetch_skipped,
            window_resets: reads.window_resets,
            peak_window_bytes: reads.peak_window_bytes,
        }
    }
}

/// A block a read needs: already in hand, or to be awaited.
enum Slot {
    Ready(Bytes),
    Waiting(u64, PendingBlock),
}

/// Reads one object version. Several reads may run at once on one reader.
pub struct ObjectReader {
    path: ReadPath,
    object: Arc<ObjectVersion>,
    pattern: Mutex<AccessPattern>,
    /// Counted in the path's `streaming_readers` while its window is open.
    streaming: AtomicBool,
}

impl Drop for ObjectReader {
    fn drop(&mut self) {
        self.set_streaming(false);
    }
}

impl ObjectReader {
    pub fn object(&self) -> &ObjectVersion {
        &self.object
    }

    /// How far ahead this reader currently prefetches.
    pub fn window_bytes(&self) -> u64 {
        self.pattern().window_blocks() * self.path.shared.config.block_size
    }

    /// Up to `len` bytes at `offset`: fewer at the end of the object, none at or after it. Fails
    /// with PreconditionFailed if a block must be fetched and the object is no longer this
    /// version.
    pub async fn read(&self, offset: u64, len: u32) -> StoreResult<Bytes> {
        let shared = &self.path.shared;
        let block_size = shared.config.block_size;
        let size = self.object.size;
        if len == 0 || offset >= size {
            return Ok(Bytes::new());
        }
        let end = offset.saturating_add(u64::from(len)).min(size);
        shared.counters.reads.fetch_add(1, Ordering::Relaxed);

        let (access, window_blocks, prefetch_range) = self.observe(offset, end);
        let first = offset / block_size;
        let last = (end - 1) / block_size;
        if access == Access::Jump && self.is_exact_read(first, last, end - offset) {
            shared.counters.exact_gets.fetch_add(1, Ordering::Relaxed);
            let bytes = fetch_range(shared.store.as_ref(), &self.object, offset..end).await?;
            shared
                .counters
                .read_bytes
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            return Ok(bytes);
        }
        let slots = self.claim_needed(first, last);
        if window_blocks > 0 {
            let reached = self.prefetch(prefetch_range, window_blocks);
            self.pattern().note_prefetched(reached);
        }

        let waited_since = slots
            .iter()
            .any(|s| matches!(s, Slot::Waiting(..)))
            .then(Instant::now);
        let mut blocks = Vec::with_capacity(slots.len());
        for slot in slots {
            blocks.push(match slot {
                Slot::Ready(block) => block,
                Slot::Waiting(index, pending) => self.resolve(index, pending).await?,
            });
        }
        if let Some(since) = waited_since {
            let nanos = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
            shared.counters.reader_waits.fetch_add(1, Ordering::Relaxed);
            shared
                .counters
                .reader_wait_nanos
                .fetch_add(nanos, Ordering::Relaxed);
        }
        let bytes = self.assemble(first, offset..end, blocks)?;
        shared
            .counters
            .read_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes)
    }

    fn pattern(&self) -> MutexGuard<'_, AccessPattern> {
        // The pattern is a few integers updated together: a poisoned lock still holds a usable one.
        self.pattern
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// A small read that jumped away from the stream, of blocks nobody holds or fetches, is
    /// fetched as exactly its range and not cached: a random reader pays one round trip per
    /// read, not one plus a whole block's transfer (1 MiB is 10 ms at 100 MB/s, half again
    /// the 20 ms round trip). Should it turn sequential, the next read starts the window.
    fn is_exact_read(&self, first: u64, last: u64, len: u64) -> bool {
        let cache = &self.path.shared.cache;
        len <= self.path.shared.config.block_size / EXACT_READ_FRACTION
            && (first..=last).all(|index| !cache.is_cached_or_pending(&self.block_id(index)))
    }

    /// Feeds the access pattern; returns how the read relates to the stream, the prefetch
    /// window and the blocks left to prefetch.
    fn observe(&self, offset: u64, end: u64) -> (Access, u64, std::ops::Range<u64>) {
        let counters = &self.path.shared.counters;
        let mut pattern = self.pattern();
        let access = pattern.observe(offset, end);
        if access == Access::Jump {
            counters.window_resets.fetch_add(1, Ordering::Relaxed);
        }
        let window = pattern.window_blocks();
        let window_bytes = window * self.path.shared.config.block_size;
        counters
            .peak_window_bytes
            .fetch_max(window_bytes, Ordering::Relaxed);
        self.set_streaming(window > 0);
        (access, window, pattern.prefetch_range())
    }

    fn set_streaming(&self, streaming: bool) {
        if self.streaming.swap(streaming, Ordering::Relaxed) == streaming {
            return;
        }
        let readers = &self.path.shared.streaming_readers;
        if streaming {
            readers.fetch_add(1, Ordering::Relaxed);
        } else {
            readers.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn block_id(&self, index: u64) -> BlockId {
        BlockId {
            key: self.object.key.clone(),
            etag: self.object.etag.clone(),
            index,
        }
    }

    /// Looks up blocks `first..=last`, claiming runs of consecutive misses and fetching each run
    /// with one GET.
    fn claim_needed(&self, first: u64, last: u64) -> Vec<Slot> {
        let cache = &self.path.shared.cache;
        let mut slots = Vec::new();
        let mut run: Vec<FetchTicket> = Vec::new();
        for index in first..=last {
            match cache.lookup_or_claim(self.block_id(index)) {
                Lookup::Hit(block) => {
                    self.spawn_demand(std::mem::take(&mut run));
                    slots.push(Slot::Ready(block));
                }
                Lookup::Pending(pending) => {
                    self.spawn_demand(std::mem::take(&mut run));
                    slots.push(Slot::Waiting(index, pending));
                }
                Lookup::Claimed(ticket) => {
                    slots.push(Slot::Waiting(index, ticket.subscribe()));
                    run.push(ticket);
                }
            }
        }
        self.spawn_demand(run);
        slots
    }

    /// Demand GETs take no prefetch permit: the kernel already bounds how many reads are in
    /// flight, and a reader must never queue behind speculation.
    fn spawn_demand(&self, tickets: Vec<FetchTicket>) {
        if !tickets.is_empty() {
            self.path
                .shared
                .counters
                .demand_gets
                .fetch_add(1, Ordering::Relaxed);
            self.spawn_fetch(tickets, None);
        }
    }

    /// Fetches in a task of its own, so that a cancelled read does not waste a GET other readers
    /// may be waiting on, and the block still lands in the cache.
    fn spawn_fetch(&self, tickets: Vec<FetchTicket>, permit: Option<OwnedSemaphorePermit>) {
        let store = Arc::clone(&self.path.shared.store);
        let object = Arc::clone(&self.object);
        let block_size = self.path.shared.config.block_size;
        tokio::spawn(async move {
            fetch_run(store.as_ref(), &object, block_size, tickets).await;
            drop(permit);
        });
    }

    /// Claims and fetches the missing blocks of `range`; returns how far it got (blocks below
    /// are fetched, being fetched, or were skipped as already present).
    fn prefetch(&self, range: std::ops::Range<u64>, window_blocks: u64) -> u64 {
        let shared = &self.path.shared;
        let cache = &shared.cache;
        let block_count = self.object.block_count(shared.config.block_size);
        let stop = range.end.min(block_count);
        let mut index = range.start;
        let piece_blocks = (window_blocks / shared.config.max_parallel_gets as u64).max(1);
        while index < stop {
            if cache.is_cached_or_pending(&self.block_id(index)) {
                index += 1;
                continue;
            }
            let mut piece_end = index + 1;
            while piece_end < stop
                && piece_end - index < piece_blocks
                && !cache.is_cached_or_pending(&self.block_id(piece_end))
            {
                piece_end += 1;
            }
            if piece_end - index < piece_blocks && piece_end == stop && stop < block_count {
                // A short piece at the window's edge: let it grow into a full-sized GET.
                return index;
            }
            let block_size = shared.config.block_size;
            let piece_bytes = (piece_end - index) * block_size;
            let Some(permit) = self.path.prefetch_permit(piece_bytes) else {
                return index;
            };
            // Another reader may have claimed some of the piece since the check above: stop the
            // run at the first block already taken so the GET stays one contiguous range.
            let tickets: Vec<FetchTicket> = (index..piece_end)
                .map_while(|i| {
                    let len = self.object.block_len(block_size, i);
                    cache.claim_for_prefetch(self.block_id(i), len)
                })
                .collect();
            index += (tickets.len() as u64).max(1);
            if !tickets.is_empty() {
                shared
                    .counters
                    .prefetch_gets
                    .fetch_add(1, Ordering::Relaxed);
                self.spawn_fetch(tickets, Some(permit));
            }
        }
        index
    }

    /// The outcome of a fetch the read is waiting on; if that fetch was abandoned (its task
    /// cancelled), the block is fetched again, single-flight as ever.
    async fn resolve(&self, index: u64, pending: PendingBlock) -> StoreResult<Bytes> {
        if let Some(outcome) = pending.wait().await {
            return outcome;
        }
        let shared = &self.path.shared;
        let range = self.object.block_range(shared.config.block_size, index);
        shared
            .cache
            .get_or_fetch(self.block_id(index), || {
                shared.counters.demand_gets.fetch_add(1, Ordering::Relaxed);
                fetch_range(shared.store.as_ref(), &self.object, range)
            })
            .await
    }

    /// Cuts `wanted` out of consecutive blocks starting at block `first`.
    fn assemble(
        &self,
        first: u64,
        wanted: std::ops::Range<u64>,
        blocks: Vec<Bytes>,
    ) -> StoreResult<Bytes> {
        let block_size = self.path.shared.config.block_size;
        let mut pieces = Vec::with_capacity(blocks.len());
        for (index, block) in (first..).zip(blocks) {
            let range = self.object.block_range(block_size, index);
            if block.len() as u64 != range.end - range.start {
                return Err(StoreError::Storage(format!(
                    "cached block {index} of {} has {} bytes, expected {}",
                    self.object.key,
                    block.len(),
                    range.end - range.start
                )));
            }
            let from = wanted.start.max(range.start) - range.start;
            let to = wanted.end.min(range.end) - range.start;
            pieces.push(block.slice(from as usize..to as usize));
        }
        if pieces.len() == 1 {
            return Ok(pieces.swap_remove(0));
        }
        let mut joined = BytesMut::with_capacity((wanted.end - wanted.start) as usize);
        for piece in pieces {
            joined.extend_from_slice(&piece);
        }
        Ok(joined.freeze())
    }
}
