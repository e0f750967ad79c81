//! [`BlockCache`]: an LRU of fixed-size blocks of object versions, bounded by a byte budget, whose
//! misses are single-flight.
//!
//! One mutex guards both the LRU and the in-flight map, so "is it cached, is someone fetching it,
//! or is it mine to fetch" is decided atomically: two readers missing the same block can never
//! both fetch it. The fetcher holds a [`FetchTicket`]; everyone else holds a [`PendingBlock`], a
//! `watch` receiver on which the ticket publishes the one outcome. Completing a ticket inserts the
//! block (on success) and removes the in-flight entry under the same lock, so a newcomer sees
//! either the cached block or the fetch in progress, never a gap that would start a second GET.
//!
//! Errors are delivered to every waiter but never cached: the next reader fetches again. A
//! ticket dropped without an outcome (its task cancelled or panicked) closes the channel; its
//! waiters see that as "abandoned" and race to claim the block afresh instead of failing.
//!
//! No lock is held across an await: the mutex guards only map and list operations.
//!
//! Prefetched blocks nobody has read yet wait in a pool of their own, apart from the LRU of
//! blocks that were read. Eviction takes read blocks first: a sequential reader's consumed
//! blocks are the least likely to be wanted again (the page cache holds them), while a
//! prefetched block evicted before its reader arrives costs a demand GET and a stall. With four
//! streams each 64 MiB ahead in a 256 MiB cache, one shared LRU evicted a quarter of the
//! prefetched bytes unread. Speculation itself is bounded: prefetch claims are refused once
//! unread and in-flight prefetched bytes reach half the budget ([`BlockCache::may_prefetch`]).
//!
//! The budget counts what a block costs in memory, not only its bytes ([`footprint`]): a
//! million tiny objects (ledger segments of a few entries, their sidecars, `entries/`
//! renderings) are a million LRU entries whose keys and bookkeeping outweigh their data, and
//! counted by data alone they grew the mount past its budget with the number of objects read.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lru::LruCache;
use tokio::sync::watch;

use super::block_id::BlockId;
use super::disk::DiskCache;
use crate::store::{StoreError, StoreResult};

/// A snapshot of the cache's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    pub hit_bytes: u64,
    /// Lookups that found nothing and started a fetch.
    pub misses: u64,
    /// Bytes that demand fetches brought in.
    pub miss_bytes: u64,
    /// Lookups that found the block being fetched and joined that fetch.
    pub shared_misses: u64,
    /// Blocks fetched ahead of any reader (prefetch claims).
    pub prefetches: u64,
    pub prefetch_bytes: u64,
    /// Blocks dropped to stay within the budget.
    pub evictions: u64,
    /// Of those, prefetched blocks dropped before anyone read them.
    pub prefetch_wasted: u64,
    /// Prefetched bytes held that nobody has read yet.
    pub unread_prefetch_bytes: u64,
    pub bytes_held: u64,
    pub blocks_held: u64,
    pub budget_bytes: u64,
}

/// What a lookup found.
pub enum Lookup {
    Hit(Bytes),
    /// Someone is fetching the block: wait for their outcome.
    Pending(PendingBlock),
    /// Nobody has it: the caller must fetch it and complete the ticket.
    Claimed(FetchTicket),
}

/// The published outcome of a fetch. Errors are shared behind an `Arc` because `StoreError` is
/// not `Clone`; each waiter gets its own copy of the same variant.
type Outcome = Option<Result<Bytes, Arc<StoreError>>>;

struct InFlight {
    /// Distinguishes this fetch from a later one of the same block, so a stale ticket never
    /// removes its successor's entry.
    generation: u64,
    outcome: watch::Receiver<Outcome>,
}

/// A prefetched block no reader has asked for yet, and since when it waits.
struct Unread {
    block: Bytes,
    since: Instant,
}

/// A prefetched block unread for this long, while speculation is at its bound, is taken as
/// abandoned (its reader closed the file or jumped away) and moved to the read LRU's cold end.
const UNREAD_PATIENCE: Duration = Duration::from_secs(5);

/// What one cached block costs beside its bytes and its key's: the LRU node (key, value and
/// links), the map's slot, and the heap headers of the key's strings and the bytes' allocation.
/// Measured as the growth of a mount's RSS per cached tiny object, rounded up.
const BLOCK_ENTRY_OVERHEAD: u64 = 256;

/// The bytes a cached block counts against the budget.
fn footprint(id: &BlockId, block_len: usize) -> u64 {
    (block_len + id.key.len() + id.etag.len()) as u64 + BLOCK_ENTRY_OVERHEAD
}

struct State {
    /// Blocks someone has read (or inserted for reading), least recently used first.
    blocks: LruCache<BlockId, Bytes>,
    /// Prefetched blocks nobody has read yet, oldest first.
    unread: LruCache<BlockId, Unread>,
    /// Bytes of both pools together.
    held_bytes: u64,
    /// Their [`footprint`]s: what the budget bounds.
    charged_bytes: u64,
    unread_bytes: u64,
    /// Bytes claimed by prefetches still under way.
    prefetching_bytes: u64,
    in_flight: HashMap<BlockId, InFlight>,
    next_generation: u64,
}

impl State {
    fn contains(&self, id: &BlockId) -> bool {
        self.blocks.contains(id) || self.unread.contains(id)
    }

    /// The block, marked most recently used; an unread prefetched block moves to the read LRU.
    fn take_for_reading(&mut self, id: &BlockId) -> Option<Bytes> {
        if let Some(block) = self.blocks.get(id) {
            return Some(block.clone());
        }
        let unread = self.unread.pop(id)?;
        self.unread_bytes -= unread.block.len() as u64;
        self.blocks.put(id.clone(), unread.block.clone());
        Some(unread.block)
    }

    fn remove(&mut self, id: &BlockId) {
        if let Some(old) = self.blocks.pop(id) {
            self.uncharge(id, old.len());
        }
        if let Some(old) = self.unread.pop(id) {
            self.uncharge(id, old.block.len());
            self.unread_bytes -= old.block.len() as u64;
        }
    }

    fn uncharge(&mut self, id: &BlockId, len: usize) {
        self.held_bytes -= len as u64;
        self.charged_bytes -= footprint(id, len);
    }
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    hit_bytes: AtomicU64,
    misses: AtomicU64,
    miss_bytes: AtomicU64,
    shared_misses: AtomicU64,
    prefetches: AtomicU64,
    prefetch_bytes: AtomicU64,
    evictions: AtomicU64,
    prefetch_wasted: AtomicU64,
    unread_prefetch_bytes: AtomicU64,
    bytes_held: AtomicU64,
    blocks_held: AtomicU64,
}

struct Shared {
    budget_bytes: u64,
    state: Mutex<State>,
    counters: Counters,
    /// The tier below: consulted before S3 on a miss, and given every block S3 sends.
    disk: Option<DiskCache>,
}

/// A cheaply clonable handle; clones share the same blocks.
///
/// Every user of one cache must agree on the block size: the [`BlockId`] says which block, not
/// how large blocks are.
#[derive(Clone)]
pub struct BlockCache {
    shared: Arc<Shared>,
}

impl BlockCache {
    pub fn new(budget_bytes: u64) -> Self {
        BlockCache::with_disk(budget_bytes, None)
    }

    /// A memory cache of `budget_bytes` over an optional disk tier.
    pub fn with_disk(budget_bytes: u64, disk: Option<DiskCache>) -> Self {
        let state = State {
            // The byte budget, not an entry count, bounds the cache.
            blocks: LruCache::unbounded(),
            unread: LruCache::unbounded(),
            held_bytes: 0,
            charged_bytes: 0,
            unread_bytes: 0,
            prefetching_bytes: 0,
            in_flight: HashMap::new(),
            next_generation: 0,
        };
        BlockCache {
            shared: Arc::new(Shared {
                budget_bytes,
                state: Mutex::new(state),
                counters: Counters::default(),
                disk,
            }),
        }
    }

    pub fn budget_bytes(&self) -> u64 {
        self.shared.budget_bytes
    }

    pub fn disk(&self) -> Option<&DiskCache> {
        self.shared.disk.as_ref()
    }

    /// The cached block, marked most recently used.
    pub fn get(&self, id: &BlockId) -> Option<Bytes> {
        let mut state = self.state();
        let found = state.take_for_reading(id);
        self.publish_sizes(&state);
        drop(state);
        if let Some(block) = &found {
            self.count_hit(block);
        }
        found
    }

    /// Stores a block (replacing any cached copy), then evicts least recently used blocks until
    /// the cache is within budget. A block larger than the whole budget is not kept.
    /// The block is also queued for the disk tier, if there is one.
    pub fn insert(&self, id: BlockId, block: Bytes) {
        if let Some(disk) = self.disk() {
            disk.put(&id, block.clone());
        }
        let mut state = self.state();
        self.store_block(&mut state, id, block, false);
    }

    /// The block from the cache, or from the fetch already under way for it, or else from
    /// `fetch`, which is called only when nobody else is fetching the block. A fetch error goes to
    /// every caller waiting on it and is not cached.
    pub async fn get_or_fetch<F, Fut>(&self, id: BlockId, fetch: F) -> StoreResult<Bytes>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = StoreResult<Bytes>>,
    {
        let ticket = loop {
            match self.lookup_or_claim(id.clone()) {
                Lookup::Hit(block) => return Ok(block),
                Lookup::Pending(pending) => match pending.wait().await {
                    Some(outcome) => return outcome,
                    // The fetcher went away without an answer: try to claim it ourselves.
                    None => continue,
                },
                Lookup::Claimed(ticket) => break ticket,
            }
        };
        let outcome = fetch().await;
        ticket.publish(&outcome);
        outcome
    }

    /// Stores bytes derived from an object (not the object's own, such as a decoded segment)
    /// within the memory budget only: the disk tier holds what S3 sent and nothing else.
    pub fn insert_in_memory(&self, id: BlockId, block: Bytes) {
        let mut state = self.state();
        self.store_block(&mut state, id, block, false);
    }

    /// Looks a block up for a reader that needs it now: a hit, a fetch to join, or a claim.
    pub fn lookup_or_claim(&self, id: BlockId) -> Lookup {
        let mut state = self.state();
        if let Some(block) = state.take_for_reading(&id) {
            self.publish_sizes(&state);
            drop(state);
            self.count_hit(&block);
            return Lookup::Hit(block);
        }
        if let Some(in_flight) = state.in_flight.get(&id) {
            let outcome = in_flight.outcome.clone();
            drop(state);
            self.shared
                .counters
                .shared_misses
                .fetch_add(1, Ordering::Relaxed);
            return Lookup::Pending(PendingBlock { outcome });
        }
        let ticket = self.claim(&mut state, id, 0);
        drop(state);
        self.shared.counters.misses.fetch_add(1, Ordering::Relaxed);
        Lookup::Claimed(ticket)
    }

    /// Whether `bytes` more may be prefetched: unread and in-flight prefetched bytes stay within
    /// half the budget, so speculation never crowds out what readers need now. At the bound,
    /// blocks unread for `UNREAD_PATIENCE` are given up first (moved where eviction finds
    /// them), so an abandoned stream cannot hold the room for ever.
    pub fn may_prefetch(&self, bytes: u64) -> bool {
        let limit = self.shared.budget_bytes / 2;
        let mut state = self.state();
        loop {
            if state.unread_bytes + state.prefetching_bytes + bytes <= limit {
                return true;
            }
            let stale = state
                .unread
                .peek_lru()
                .is_some_and(|(_, oldest)| oldest.since.elapsed() >= UNREAD_PATIENCE);
            if !stale {
                return false;
            }
            if let Some((id, oldest)) = state.unread.pop_lru() {
                state.unread_bytes -= oldest.block.len() as u64;
                state.blocks.put(id.clone(), oldest.block);
                state.blocks.demote(&id);
            }
            self.publish_sizes(&state);
        }
    }

    /// Claims a block of `len` bytes for prefetching if it is neither cached nor being fetched.
    /// Counts no hit: nobody has read it yet. The bytes count against [`BlockCache::may_prefetch`]
    /// until the fetch ends.
    pub fn claim_for_prefetch(&self, id: BlockId, len: u64) -> Option<FetchTicket> {
        let mut state = self.state();
        if state.contains(&id) || state.in_flight.contains_key(&id) {
            return None;
        }
        let ticket = self.claim(&mut state, id, len.max(1));
        drop(state);
        self.shared
            .counters
            .prefetches
            .fetch_add(1, Ordering::Relaxed);
        Some(ticket)
    }

    /// Whether the block is cached or being fetched (no LRU or counter side effects).
    pub fn is_cached_or_pending(&self, id: &BlockId) -> bool {
        let state = self.state();
        state.contains(id) || state.in_flight.contains_key(id)
    }

    pub fn stats(&self) -> CacheStats {
        let c = &self.shared.counters;
        CacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            hit_bytes: c.hit_bytes.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            miss_bytes: c.miss_bytes.load(Ordering::Relaxed),
            shared_misses: c.shared_misses.load(Ordering::Relaxed),
            prefetches: c.prefetches.load(Ordering::Relaxed),
            prefetch_bytes: c.prefetch_bytes.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            prefetch_wasted: c.prefetch_wasted.load(Ordering::Relaxed),
            unread_prefetch_bytes: c.unread_prefetch_bytes.load(Ordering::Relaxed),
            bytes_held: c.bytes_held.load(Ordering::Relaxed),
            blocks_held: c.blocks_held.load(Ordering::Relaxed),
            budget_bytes: self.shared.budget_bytes,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent before anything can panic.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn count_hit(&self, block: &Bytes) {
        let c = &self.shared.counters;
        c.hits.fetch_add(1, Ordering::Relaxed);
        c.hit_bytes.fetch_add(block.len() as u64, Ordering::Relaxed);
    }

    /// `prefetch_len` is nonzero for a prefetch claim: the bytes it will bring, held against
    /// the speculation bound until the fetch ends.
    fn claim(&self, state: &mut State, id: BlockId, prefetch_len: u64) -> FetchTicket {
        let generation = state.next_generation;
        state.next_generation += 1;
        state.prefetching_bytes += prefetch_len;
        let (sender, outcome) = watch::channel(None);
        state.in_flight.insert(
            id.clone(),
            InFlight {
                generation,
                outcome,
            },
        );
        FetchTicket {
            cache: self.clone(),
            id,
            generation,
            prefetch_len,
            sender: Some(sender),
        }
    }

    /// Stores a block in the read LRU, or with `unread` in the prefetched pool, after evicting
    /// what it needs room for: least recently read blocks first, unread prefetched blocks only
    /// when no read block is left. A block whose footprint exceeds the whole budget is not kept.
    fn store_block(&self, state: &mut State, id: BlockId, block: Bytes, unread: bool) {
        let c = &self.shared.counters;
        let len = block.len() as u64;
        let charge = footprint(&id, block.len());
        state.remove(&id);
        if charge <= self.shared.budget_bytes {
            while state.charged_bytes + charge > self.shared.budget_bytes {
                if let Some((evicted_id, evicted)) = state.blocks.pop_lru() {
                    state.uncharge(&evicted_id, evicted.len());
                } else if let Some((evicted_id, evicted)) = state.unread.pop_lru() {
                    c.prefetch_wasted.fetch_add(1, Ordering::Relaxed);
                    state.unread_bytes -= evicted.block.len() as u64;
                    state.uncharge(&evicted_id, evicted.block.len());
                } else {
                    break;
                }
                c.evictions.fetch_add(1, Ordering::Relaxed);
            }
            if unread {
                let since = Instant::now();
                state.unread.put(id, Unread { block, since });
                state.unread_bytes += len;
            } else {
                state.blocks.put(id, block);
            }
            state.held_bytes += len;
            state.charged_bytes += charge;
        }
        self.publish_sizes(state);
    }

    fn publish_sizes(&self, state: &State) {
        let c = &self.shared.counters;
        c.bytes_held.store(state.held_bytes, Ordering::Relaxed);
        c.unread_prefetch_bytes
            .store(state.unread_bytes, Ordering::Relaxed);
        c.blocks_held.store(
            (state.blocks.len() + state.unread.len()) as u64,
            Ordering::Relaxed,
        );
    }

    /// Ends a fetch: caches the block on success and retires the in-flight entry, atomically.
    /// A prefetched block goes to the unread pool unless a reader already waits on it.
    fn finish(&self, ticket: &FetchTicket, outcome: Option<&StoreResult<Bytes>>) {
        let mut state = self.state();
        state.prefetching_bytes = state.prefetching_bytes.saturating_sub(ticket.prefetch_len);
        if let Some(Ok(block)) = outcome {
            let c = &self.shared.counters;
            let len = block.len() as u64;
            let prefetch = ticket.prefetch_len > 0;
            if prefetch {
                c.prefetch_bytes.fetch_add(len, Ordering::Relaxed);
            } else {
                c.miss_bytes.fetch_add(len, Ordering::Relaxed);
            }
            let unread = prefetch && !ticket.has_waiters();
            self.store_block(&mut state, ticket.id.clone(), block.clone(), unread);
        }
        if state
            .in_flight
            .get(&ticket.id)
            .is_some_and(|f| f.generation == ticket.generation)
        {
            state.in_flight.remove(&ticket.id);
        }
    }
}

/// The right, and the duty, to fetch one block. Publish the outcome with [`FetchTicket::complete`];
/// dropping the ticket unpublished retires the claim and lets the waiters retry.
pub struct FetchTicket {
    cache: BlockCache,
    id: BlockId,
    generation: u64,
    /// Nonzero for a prefetch: the bytes held against the speculation bound.
    prefetch_len: u64,
    sender: Option<watch::Sender<Outcome>>,
}

impl FetchTicket {
    /// Whether a reader waits on this fetch (beyond the in-flight entry's own receiver).
    fn has_waiters(&self) -> bool {
        self.sender
            .as_ref()
            .is_some_and(|sender| sender.receiver_count() > 1)
    }

    pub fn id(&self) -> &BlockId {
        &self.id
    }

    /// The cache this ticket will fill (and through it, the disk tier).
    pub fn cache(&self) -> &BlockCache {
        &self.cache
    }

    /// A waiter on this ticket's outcome, for the claimer itself when another task fetches.
    pub fn subscribe(&self) -> PendingBlock {
        match &self.sender {
            Some(sender) => PendingBlock {
                outcome: sender.subscribe(),
            },
            // Unreachable in practice (the sender goes only when the ticket is consumed); a
            // closed channel means "abandoned", which waiters handle by retrying.
            None => PendingBlock {
                outcome: watch::channel(None).1,
            },
        }
    }

    /// Publishes the fetch's outcome to every waiter, caching the block on success.
    pub fn complete(self, outcome: StoreResult<Bytes>) {
        self.publish(&outcome);
    }

    fn publish(mut self, outcome: &StoreResult<Bytes>) {
        self.cache.finish(&self, Some(outcome));
        let shared = match outcome {
            Ok(block) => Ok(block.clone()),
            Err(error) => Err(Arc::new(duplicate_error(error))),
        };
        if let Some(sender) = self.sender.take() {
            // send_replace stores the value even when nobody is subscribed yet.
            sender.send_replace(Some(shared));
        }
    }
}

impl Drop for FetchTicket {
    fn drop(&mut self) {
        if self.sender.is_some() {
            self.cache.finish(self, None);
        }
    }
}

/// A fetch someone else is running; [`PendingBlock::wait`] returns its outcome.
pub struct PendingBlock {
    outcome: watch::Receiver<Outcome>,
}

impl PendingBlock {
    /// The fetch's outcome, or `None` if the fetcher gave up without one (cancelled): the block
    /// is then unclaimed and the caller should look it up again.
    pub async fn wait(mut self) -> Option<StoreResult<Bytes>> {
        let outcome = self.outcome.wait_for(Option::is_some).await.ok()?;
        match outcome.as_ref()? {
            Ok(block) => Some(Ok(block.clone())),
            Err(error) => Some(Err(duplicate_error(error))),
        }
    }
}

/// A copy of a store error with the same variant, so every waiter can match on the kind
/// (PreconditionFailed above all). I/O errors keep their kind and message.
pub(crate) fn duplicate_error(error: &StoreError) -> StoreError {
    match error {
        StoreError::NotFound(m) => StoreError::NotFound(m.clone()),
        StoreError::NoSuchBucket(m) => StoreError::NoSuchBucket(m.clone()),
        StoreError::AccessDenied(m) => StoreError::AccessDenied(m.clone()),
        StoreError::Credentials(m) => StoreError::Credentials(m.clone()),
        StoreError::RegionMoved(m) => StoreError::RegionMoved(m.clone()),
        StoreError::PreconditionFailed(m) => StoreError::PreconditionFailed(m.clone()),
        StoreError::KeyConflict(k, o) => StoreError::KeyConflict(k.clone(), o.clone()),
        StoreError::InvalidRequest(m) => StoreError::InvalidRequest(m.clone()),
        StoreError::ChecksumMismatch {
            key,
            expected,
            actual,
        } => StoreError::ChecksumMismatch {
            key: key.clone(),
            expected: expected.clone(),
            actual: actual.clone(),
        },
        StoreError::UntrustedCertificate { endpoint, reason } => StoreError::UntrustedCertificate {
            endpoint: endpoint.clone(),
            reason: reason.clone(),
        },
        StoreError::Throttled(m) => StoreError::Throttled(m.clone()),
        StoreError::Server { status, message } => StoreError::Server {
            status: *status,
            message: message.clone(),
        },
        StoreError::Timeout(after) => StoreError::Timeout(*after),
        StoreError::Connection(m) => StoreError::Connection(m.clone()),
        StoreError::Unreachable(m) => StoreError::Unreachable(m.clone()),
        StoreError::Config(m) => StoreError::Config(m.clone()),
        StoreError::Io(io) => StoreError::Io(std::io::Error::new(io.kind(), io.to_string())),
        StoreError::RetriesExhausted { attempts, source } => StoreError::RetriesExhausted {
            attempts: *attempts,
            source: Box::new(duplicate_error(source)),
        },
        StoreError::Storage(m) => StoreError::Storage(m.clone()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::sync::Semaphore;

    use super::*;

    fn id(index: u64) -> BlockId {
        BlockId {
            key: "k".into(),
            etag: "\"e\"".into(),
            index,
        }
    }

    fn block(len: usize, fill: u8) -> Bytes {
        Bytes::from(vec![fill; len])
    }

    /// What a test block of `len` bytes counts against the budget.
    fn charged(len: usize) -> u64 {
        footprint(&id(0), len)
    }

    #[test]
    fn evicts_least_recently_used_until_within_budget() {
        let cache = BlockCache::new(3 * charged(100));
        cache.insert(id(0), block(100, 0));
        cache.insert(id(1), block(100, 1));
        cache.insert(id(2), block(100, 2));
        assert!(
            cache.get(&id(0)).is_some(),
            "touch 0 so that 1 is the oldest"
        );
        cache.insert(id(3), block(100, 3));
        assert!(cache.get(&id(1)).is_none());
        for kept in [0, 2, 3] {
            assert!(cache.get(&id(kept)).is_some(), "block {kept}");
        }
        let stats = cache.stats();
        assert_eq!(stats.bytes_held, 300);
        assert_eq!(stats.blocks_held, 3);
        assert_eq!(stats.evictions, 1);
    }

    fn prefetch(cache: &BlockCache, index: u64, len: usize) {
        let ticket = cache
            .claim_for_prefetch(id(index), len as u64)
            .expect("unclaimed");
        ticket.complete(Ok(block(len, index as u8)));
    }

    #[test]
    fn read_blocks_are_evicted_before_unread_prefetched_ones() {
        let cache = BlockCache::new(4 * charged(100));
        cache.insert(id(0), block(100, 0));
        prefetch(&cache, 1, 100);
        prefetch(&cache, 2, 100);
        cache.insert(id(3), block(100, 3));
        assert_eq!(cache.stats().unread_prefetch_bytes, 200);
        // Over budget: the read blocks 0 and 3 go, oldest first, before any unread one.
        cache.insert(id(4), block(100, 4));
        cache.insert(id(5), block(100, 5));
        assert!(!cache.is_cached_or_pending(&id(0)));
        assert!(!cache.is_cached_or_pending(&id(3)));
        assert!(cache.is_cached_or_pending(&id(1)));
        assert!(cache.is_cached_or_pending(&id(2)));
        assert_eq!(cache.stats().prefetch_wasted, 0);
        // Read, block 1 joins the LRU (as its newest) and no longer counts as unread.
        assert!(cache.get(&id(1)).is_some());
        assert_eq!(cache.stats().unread_prefetch_bytes, 100);
        // Only when no read block is left does an unread one go, and it counts as wasted.
        let big = BlockCache::new(2 * charged(100));
        prefetch(&big, 0, 100);
        prefetch(&big, 1, 100);
        big.insert(id(2), block(100, 2));
        assert_eq!(big.stats().prefetch_wasted, 1);
        assert!(!big.is_cached_or_pending(&id(0)));
    }

    #[test]
    fn speculation_stops_at_half_the_budget_counting_fetches_under_way() {
        let cache = BlockCache::new(1000);
        assert!(cache.may_prefetch(500));
        assert!(!cache.may_prefetch(501));
        let in_flight = cache.claim_for_prefetch(id(0), 300).expect("unclaimed");
        assert!(cache.may_prefetch(200));
        assert!(!cache.may_prefetch(201), "300 under way count");
        in_flight.complete(Ok(block(300, 0)));
        assert!(!cache.may_prefetch(201), "300 unread still count");
        assert!(cache.get(&id(0)).is_some());
        assert!(cache.may_prefetch(500), "read blocks do not count");
    }

    #[tokio::test]
    async fn a_prefetch_a_reader_waited_on_counts_as_read() {
        let cache = BlockCache::new(1000);
        let ticket = cache.claim_for_prefetch(id(0), 100).expect("unclaimed");
        let Lookup::Pending(waiter) = cache.lookup_or_claim(id(0)) else {
            panic!("the prefetch is under way");
        };
        ticket.complete(Ok(block(100, 0)));
        assert!(waiter.wait().await.is_some_and(|b| b.is_ok()));
        assert_eq!(cache.stats().unread_prefetch_bytes, 0);
        assert!(cache.may_prefetch(500));
    }

    #[test]
    fn a_block_larger_than_the_budget_is_not_kept_and_evicts_nothing() {
        let cache = BlockCache::new(charged(150));
        cache.insert(id(0), block(100, 0));
        cache.insert(id(1), block(200, 1));
        assert!(cache.get(&id(1)).is_none());
        assert!(cache.get(&id(0)).is_some());
        assert_eq!(cache.stats().bytes_held, 100);
    }

    /// A million tiny objects read once (sidecars, `entries/` renderings) must not hold a
    /// million entries because their bytes alone are few: each counts its key and bookkeeping.
    #[test]
    fn tiny_blocks_count_their_keys_and_bookkeeping() {
        let budget = 1 << 20;
        let cache = BlockCache::new(budget);
        let tiny = |n: u64| BlockId {
            key: format!("segments/segment-{n:016x}.meta.json"),
            etag: "\"0123456789abcdef0123456789abcdef\"".into(),
            index: 0,
        };
        for n in 0..100_000u64 {
            cache.insert(tiny(n), block(60, 0));
        }
        let stats = cache.stats();
        // 60 bytes of data, 77 of key and ETag, 256 of bookkeeping: 2,668 blocks, not 17,476.
        let each = footprint(&tiny(0), 60);
        assert_eq!(each, 393);
        assert_eq!(stats.blocks_held, budget / each, "{stats:?}");
    }

    #[test]
    fn replacing_a_block_accounts_its_new_size() {
        let cache = BlockCache::new(1000);
        cache.insert(id(0), block(100, 0));
        cache.insert(id(0), block(40, 1));
        assert_eq!(cache.stats().bytes_held, 40);
        assert_eq!(cache.get(&id(0)), Some(block(40, 1)));
    }

    #[test]
    fn blocks_of_another_etag_are_other_blocks() {
        let cache = BlockCache::new(1000);
        cache.insert(id(0), block(10, 0));
        let other_version = BlockId {
            etag: "\"f\"".into(),
            ..id(0)
        };
        assert!(cache.get(&other_version).is_none());
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_fetch() {
        let cache = BlockCache::new(1 << 20);
        let calls = AtomicUsize::new(0);
        let gate = Semaphore::new(0);
        let fetch = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            let _open = gate.acquire().await.unwrap();
            Ok(block(64, 7))
        };
        let waiters = async {
            while cache.stats().shared_misses < 3 {
                tokio::task::yield_now().await;
            }
            gate.add_permits(1);
        };
        let (a, b, c, d, ()) = tokio::join!(
            cache.get_or_fetch(id(0), fetch),
            cache.get_or_fetch(id(0), fetch),
            cache.get_or_fetch(id(0), fetch),
            cache.get_or_fetch(id(0), fetch),
            waiters
        );
        for result in [a, b, c, d] {
            assert_eq!(result.unwrap(), block(64, 7));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let stats = cache.stats();
        assert_eq!(
            (stats.misses, stats.shared_misses, stats.miss_bytes),
            (1, 3, 64)
        );
        assert_eq!(
            cache.get_or_fetch(id(0), fetch).await.unwrap(),
            block(64, 7)
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1, "now a hit");
    }

    #[tokio::test]
    async fn an_error_reaches_every_waiter_and_is_not_cached() {
        let cache = BlockCache::new(1 << 20);
        let calls = AtomicUsize::new(0);
        let gate = Semaphore::new(0);
        let failing = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            let _open = gate.acquire().await.unwrap();
            Err(StoreError::PreconditionFailed("k".into()))
        };
        let release = async {
            while cache.stats().shared_misses < 2 {
                tokio::task::yield_now().await;
            }
            gate.add_permits(1);
        };
        let (a, b, c, ()) = tokio::join!(
            cache.get_or_fetch(id(0), failing),
            cache.get_or_fetch(id(0), failing),
            cache.get_or_fetch(id(0), failing),
            release
        );
        for result in [a, b, c] {
            assert!(
                matches!(result, Err(StoreError::PreconditionFailed(_))),
                "{result:?}"
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(cache.get(&id(0)).is_none());
        let retried = cache
            .get_or_fetch(id(0), || async { Ok(block(8, 1)) })
            .await;
        assert_eq!(retried.unwrap(), block(8, 1));
    }

    #[tokio::test]
    async fn a_waiter_takes_over_when_the_fetcher_is_cancelled() {
        let cache = BlockCache::new(1 << 20);
        let Lookup::Claimed(ticket) = cache.lookup_or_claim(id(0)) else {
            panic!("an empty cache must hand out the claim");
        };
        let Lookup::Pending(pending) = cache.lookup_or_claim(id(0)) else {
            panic!("a claimed block must be pending");
        };
        drop(ticket);
        assert!(pending.wait().await.is_none(), "abandoned, not failed");
        let fetched = cache
            .get_or_fetch(id(0), || async { Ok(block(4, 9)) })
            .await;
        assert_eq!(fetched.unwrap(), block(4, 9));
    }

    #[tokio::test]
    async fn a_stale_ticket_does_not_retire_its_successor() {
        let cache = BlockCache::new(1 << 20);
        let Lookup::Claimed(first) = cache.lookup_or_claim(id(0)) else {
            panic!("claim expected");
        };
        first.complete(Err(StoreError::Timeout(std::time::Duration::from_secs(1))));
        let Lookup::Claimed(second) = cache.lookup_or_claim(id(0)) else {
            panic!("errors are not cached: claim expected");
        };
        assert!(cache.is_cached_or_pending(&id(0)));
        assert!(cache.claim_for_prefetch(id(0), 1).is_none());
        second.complete(Ok(block(3, 3)));
        assert_eq!(cache.get(&id(0)), Some(block(3, 3)));
    }

    #[test]
    fn duplicated_errors_keep_their_kind() {
        let io = StoreError::Io(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "pipe"));
        let StoreError::Io(copy) = duplicate_error(&io) else {
            panic!("kind changed")
        };
        assert_eq!(copy.kind(), std::io::ErrorKind::BrokenPipe);
        let wrapped = StoreError::RetriesExhausted {
            attempts: 3,
            source: Box::new(StoreError::Throttled("slow down".into())),
        };
        let copy = duplicate_error(&wrapped);
        assert!(matches!(
            copy,
            StoreError::RetriesExhausted { attempts: 3, .. }
        ));
        assert!(matches!(copy.root(), StoreError::Throttled(m) if m == "slow down"));
    }
}
