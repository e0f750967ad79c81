//! The memory every upload of a mount may hold, together: the buffer each writer is filling and
//! the parts being sent, counted in KiB. A writer takes its buffer's share before it fills it;
//! the share travels with the buffer when it becomes a part and comes back when the part's
//! request ends. So many writers at once wait for memory instead of each holding its own
//! (max_parts_in_flight + 1) × part size.
//!
//! **Who gets memory first: the upload that came first.** Each streaming upload is numbered
//! when it starts, and free memory goes to the waiting request of the oldest upload; requests
//! of anything else (a staged file, the CLI's transfers) are numbered when they ask, so they
//! queue in the order they asked. Serving requests in the order they arrive would instead
//! give every writer one buffer in turn: 32 writers then advance in step and all finish at the
//! end (the first of 32 × 64 MiB after 4.8 s, the last at 10.4 s), each holding an open
//! multipart upload all along; served by age, they finish one after another from the first
//! second, as mountpoint-s3's do. So that a long upload cannot starve a newer one, a request
//! that has waited [`AGING`] goes before any other, oldest request first. A request that does
//! not fit in what is free holds back those behind it, so a whole part is never starved by
//! small ones.
//!
//! No one ever waits while holding memory it got from the budget: a buffer that must grow and
//! cannot at once gives its share back and queues for the whole new size
//! ([`WriteBudget::grow`]). Every share held then belongs to a buffer being filled, a part in
//! flight (which ends on its own) or a close in progress (which needs no more): memory always
//! comes back, so writers that all want more cannot stall one another, and a close never waits
//! behind a writer waiting for memory.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::buffers::PartBuffers;
use super::part_size::S3_MIN_PART_SIZE;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// How long a request for memory may wait before it goes ahead of older uploads' requests.
pub const AGING: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct WriteBudget {
    ledger: Arc<Ledger>,
    total_kib: u32,
    /// Numbers uploads as they start and other requests as they ask: lower goes first.
    arrivals: AtomicU64,
    waiting: AtomicUsize,
    /// Streaming uploads open on this budget now (see [`UploadSlot::part_size`]).
    uploads: Arc<AtomicUsize>,
    /// Part buffers kept for reuse, within the budget's size.
    buffers: Arc<PartBuffers>,
}

/// One streaming upload counted among those sharing a budget until dropped.
#[derive(Debug)]
pub struct UploadSlot {
    uploads: Arc<AtomicUsize>,
    total: u64,
    priority: u64,
}

impl UploadSlot {
    /// The upload's place in line for memory: its number, given when it started.
    pub fn priority(&self) -> u64 {
        self.priority
    }

    /// The size of the next buffer to fill, given the uploads sharing the budget now
    /// ([`crowded_part_size`]).
    pub fn part_size(&self, part_size: u64) -> u64 {
        let others = self.uploads.load(Ordering::Relaxed).saturating_sub(1);
        crowded_part_size(others, part_size, self.total)
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        self.uploads.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The size of the next buffer of an upload while `uploads` others share a budget of `total`
/// bytes: `part_size`, unless two buffers of it for each of them would not fit, then no more
/// than S3's minimum (parts of one upload may differ in size; each is at least the minimum). Each writer fills one buffer while it sends another; with many writers
/// the buffers being filled would take the whole budget and parts would wait for each other
/// (32 writers of 64 MiB on a 256 MiB budget at 20 ms and 200 Mbit/s: 18.8 s with 8 MiB
/// parts, 11.4 s with 5 MiB). A lone writer keeps its larger parts, which it needs for speed.
pub fn crowded_part_size(uploads: usize, part_size: u64, total: u64) -> u64 {
    let wanted = (uploads as u64 + 1)
        .saturating_mul(2)
        .saturating_mul(part_size);
    if wanted > total {
        part_size.min(S3_MIN_PART_SIZE)
    } else {
        part_size
    }
}

/// Memory held from a [`WriteBudget`] (none for an upload without one); given back on drop.
#[derive(Debug, Default)]
pub struct Reservation {
    kib: u32,
    ledger: Option<Arc<Ledger>>,
}

impl Reservation {
    pub fn bytes(&self) -> u64 {
        u64::from(self.kib) * KIB
    }

    fn kib(&self) -> u32 {
        self.kib
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(ledger) = self.ledger.take() {
            ledger.release(self.kib);
        }
    }
}

/// The budget's free KiB and the requests waiting for some, under one lock.
#[derive(Debug)]
struct Ledger {
    state: Mutex<LedgerState>,
}

#[derive(Debug)]
struct LedgerState {
    available: u32,
    /// By (priority, arrival): the first is the oldest upload's earliest request.
    waiters: BTreeMap<(u64, u64), Waiter>,
    arrivals: u64,
}

#[derive(Debug)]
struct Waiter {
    kib: u32,
    since: Instant,
    granted: oneshot::Sender<()>,
}

impl Ledger {
    /// Counters and a queue: a panic while the lock is held leaves nothing half done that
    /// matters more than a stuck writer would, so a poisoned lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, LedgerState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn release(&self, kib: u32) {
        let mut state = self.lock();
        state.available += kib;
        state.grant_waiters();
    }
}

impl LedgerState {
    /// Takes `kib` at once if they are free and nobody waits before this request.
    fn try_take(&mut self, kib: u32) -> bool {
        let free = self.waiters.is_empty() && self.available >= kib;
        if free {
            self.available -= kib;
        }
        free
    }

    /// Hands free memory to waiting requests: first any that waited [`AGING`], earliest
    /// first, then by priority; stops at the first that does not fit.
    fn grant_waiters(&mut self) {
        loop {
            let now = Instant::now();
            let aged = self
                .waiters
                .iter()
                .filter(|(_, waiter)| now.duration_since(waiter.since) >= AGING)
                .min_by_key(|((_, arrival), _)| *arrival)
                .map(|(key, _)| *key);
            let Some(key) = aged.or_else(|| self.waiters.keys().next().copied()) else {
                return;
            };
            let Some(kib) = self.waiters.get(&key).map(|waiter| waiter.kib) else {
                return;
            };
            if kib > self.available {
                return;
            }
            if let Some(waiter) = self.waiters.remove(&key) {
                self.available -= kib;
                // The receiver lives as long as the request is in the queue (see `Queued`).
                if waiter.granted.send(()).is_err() {
                    self.available += kib;
                }
            }
        }
    }
}

/// A request in the queue; taken out again if the future waiting for it is dropped, and its
/// memory given back if it was granted but never received.
struct Queued {
    ledger: Arc<Ledger>,
    key: (u64, u64),
    kib: u32,
    granted: Option<oneshot::Receiver<()>>,
}

impl Queued {
    async fn granted(mut self) -> Reservation {
        if let Some(granted) = self.granted.as_mut() {
            // The sender is only dropped after a send, or with the budget, which this holds.
            let _ = granted.await;
        }
        self.granted = None;
        Reservation {
            kib: self.kib,
            ledger: Some(Arc::clone(&self.ledger)),
        }
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        let Some(mut granted) = self.granted.take() else {
            return;
        };
        let mut state = self.ledger.lock();
        if state.waiters.remove(&self.key).is_none() && granted.try_recv().is_ok() {
            state.available += self.kib;
            state.grant_waiters();
        }
    }
}

impl WriteBudget {
    /// The fewest parts in flight a budget must leave one upload: every budget (the default or
    /// `--max-memory-target`) holds at least this + 1 parts. At 20 ms and 100 MB/s per
    /// connection a 512 MiB write ran at 99 MiB/s with 4 in flight, 138 with 8.
    pub const FULL_SPEED_PARTS_IN_FLIGHT: usize = 8;

    /// A budget of `bytes`, rounded down to whole KiB (at least 1).
    pub fn new(bytes: u64) -> Arc<WriteBudget> {
        let total_kib = (bytes / KIB).clamp(1, u64::from(u32::MAX)) as u32;
        Arc::new(WriteBudget {
            ledger: Arc::new(Ledger {
                state: Mutex::new(LedgerState {
                    available: total_kib,
                    waiters: BTreeMap::new(),
                    arrivals: 0,
                }),
            }),
            total_kib,
            arrivals: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            uploads: Arc::new(AtomicUsize::new(0)),
            buffers: PartBuffers::new(u64::from(total_kib) * KIB),
        })
    }

    /// The default budget of a mount on a machine with `machine_memory` bytes (or its cgroup's
    /// limit) whose block cache keeps `cache_bytes`: an eighth of what the cache leaves, at
    /// least [`WriteBudget::least_bytes`] and at most 16 parts (at 8 MiB, 128 MiB: about 25 parts of S3's
    /// minimum in flight, as many as mountpoint-s3 keeps; with more, 32 writers of 64 MiB were
    /// slower, 8.6-9.7 s against 8.4 s, the memory only faulted in and freed).
    pub fn default_bytes(machine_memory: u64, cache_bytes: u64, part_size: u64) -> u64 {
        let least = Self::least_bytes(part_size);
        let most = part_size.saturating_mul(16).max(least);
        (machine_memory.saturating_sub(cache_bytes) / 8).clamp(least, most)
    }

    /// The smallest budget a mount may have: one upload at full speed, a part being filled
    /// and [`Self::FULL_SPEED_PARTS_IN_FLIGHT`] sent, so a lone writer never crawls.
    pub fn least_bytes(part_size: u64) -> u64 {
        (Self::FULL_SPEED_PARTS_IN_FLIGHT as u64 + 1).saturating_mul(part_size)
    }

    /// Counts a streaming upload among those sharing the budget for as long as the slot lives.
    pub fn enter_upload(&self) -> UploadSlot {
        self.uploads.fetch_add(1, Ordering::Relaxed);
        UploadSlot {
            uploads: Arc::clone(&self.uploads),
            total: self.total_bytes(),
            priority: self.next_arrival(),
        }
    }

    /// The part buffers of the uploads on this budget.
    pub fn buffers(&self) -> &Arc<PartBuffers> {
        &self.buffers
    }

    pub fn total_bytes(&self) -> u64 {
        u64::from(self.total_kib) * KIB
    }

    pub fn total_mib(&self) -> u64 {
        self.total_bytes() / MIB
    }

    /// Bytes nobody holds now.
    pub fn available_bytes(&self) -> u64 {
        u64::from(self.ledger.lock().available) * KIB
    }

    fn next_arrival(&self) -> u64 {
        self.arrivals.fetch_add(1, Ordering::Relaxed)
    }

    /// Uploads waiting for memory from this budget now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Waits in line, behind every request that asked before it, until `bytes` are free, and
    /// holds them until the reservation drops. More than the whole budget takes the whole
    /// budget rather than waiting for ever.
    pub async fn reserve(&self, bytes: u64) -> Reservation {
        let priority = self.next_arrival();
        self.reserve_kib(priority, self.kib_for(bytes)).await
    }

    /// Makes `held` at least `bytes`: at once if the memory is free and nobody is waiting for
    /// it, else by giving back what `held` has and waiting in line for all of it, at the place
    /// of `slot`'s upload (or as a new request). Waiting while holding could leave every
    /// writer holding part of the budget and waiting for the rest.
    pub async fn grow(&self, held: &mut Reservation, bytes: u64, slot: Option<&UploadSlot>) {
        let wanted = self.kib_for(bytes);
        let have = held.kib();
        if wanted <= have {
            return;
        }
        if self.ledger.lock().try_take(wanted - have) {
            if held.ledger.is_none() {
                held.ledger = Some(Arc::clone(&self.ledger));
            }
            held.kib = wanted;
            return;
        }
        *held = Reservation::default();
        let priority = match slot {
            Some(slot) => slot.priority,
            None => self.next_arrival(),
        };
        *held = self.reserve_kib(priority, wanted).await;
    }

    fn kib_for(&self, bytes: u64) -> u32 {
        bytes.div_ceil(KIB).min(u64::from(self.total_kib)) as u32
    }

    async fn reserve_kib(&self, priority: u64, kib: u32) -> Reservation {
        let queued = {
            let mut state = self.ledger.lock();
            if state.try_take(kib) {
                return Reservation {
                    kib,
                    ledger: Some(Arc::clone(&self.ledger)),
                };
            }
            let (sender, receiver) = oneshot::channel();
            let key = (priority, state.arrivals);
            state.arrivals += 1;
            state.waiters.insert(
                key,
                Waiter {
                    kib,
                    since: Instant::now(),
                    granted: sender,
                },
            );
            // An older upload's request may go before those already waiting.
            state.grant_waiters();
            Queued {
                ledger: Arc::clone(&self.ledger),
                key,
                kib,
                granted: Some(receiver),
            }
        };
        let _waiting = Waiting::new(&self.waiting);
        queued.granted().await
    }
}

/// `budget`'s [`WriteBudget::reserve`], or nothing to hold for an upload without a budget.
pub(super) async fn reserve(budget: Option<&Arc<WriteBudget>>, bytes: u64) -> Reservation {
    match budget {
        Some(budget) => budget.reserve(bytes).await,
        None => Reservation::default(),
    }
}

/// `budget`'s [`WriteBudget::grow`], or nothing for an upload without a budget.
pub(super) async fn grow(
    budget: Option<&Arc<WriteBudget>>,
    held: &mut Reservation,
    bytes: u64,
    slot: Option<&UploadSlot>,
) {
    if let Some(budget) = budget {
        budget.grow(held, bytes, slot).await;
    }
}

/// Counts one upload waiting for memory while alive, also when its future is dropped: in its
/// budget, and in the metrics' gauge.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        crate::metrics::registry().waiting_for_memory(true);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        crate::metrics::registry().waiting_for_memory(false);
    }
}

#[cfg(test)]
mod tests {
    /// A lone writer keeps its parts; once two buffers each no longer fit, parts drop to S3's
    /// minimum, never below a smaller configured size; the slot counts while it lives.
    #[test]
    fn many_writers_get_smaller_parts_and_a_lone_writer_keeps_its_own() {
        use super::{S3_MIN_PART_SIZE, WriteBudget, crowded_part_size};
        let mib = 1u64 << 20;
        assert_eq!(crowded_part_size(0, 8 * mib, 256 * mib), 8 * mib);
        assert_eq!(crowded_part_size(15, 8 * mib, 256 * mib), 8 * mib);
        assert_eq!(crowded_part_size(16, 8 * mib, 256 * mib), S3_MIN_PART_SIZE);
        assert_eq!(crowded_part_size(100, 1024, 4096), 1024);
        // Two 8 MiB buffers each: four writers fit in 64 MiB, a fifth does not.
        let budget = WriteBudget::new(64 * mib);
        let slots: Vec<_> = (0..4).map(|_| budget.enter_upload()).collect();
        assert_eq!(slots[0].part_size(8 * mib), 8 * mib);
        let fifth = budget.enter_upload();
        assert_eq!(slots[0].part_size(8 * mib), S3_MIN_PART_SIZE);
        assert_eq!(fifth.part_size(8 * mib), S3_MIN_PART_SIZE);
        drop(slots);
        assert_eq!(fifth.part_size(8 * mib), 8 * mib);
    }

    use super::*;
    use std::time::Duration;

    /// Waits (on the event, not a clock) until `n` uploads wait on `budget`.
    async fn until_waiting(budget: &WriteBudget, n: usize) {
        while budget.waiting() != n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn reservations_wait_for_memory_and_give_it_back() {
        let budget = WriteBudget::new(16 * MIB);
        let first = budget.reserve(8 * MIB).await;
        let second = budget.reserve(5 * MIB).await;
        assert_eq!(budget.available_bytes(), 3 * MIB);
        let third = tokio::spawn({
            let budget = Arc::clone(&budget);
            async move { budget.reserve(8 * MIB).await.bytes() }
        });
        until_waiting(&budget, 1).await;
        assert!(!third.is_finished(), "got memory the budget did not have");
        drop(first);
        assert_eq!(third.await.unwrap(), 8 * MIB);
        drop(second);
        assert_eq!(budget.available_bytes(), 16 * MIB);
        // Larger than the whole budget: takes all of it instead of waiting for ever.
        let huge = budget.reserve(64 * MIB).await;
        assert_eq!((huge.bytes(), budget.available_bytes()), (16 * MIB, 0));
    }

    #[tokio::test]
    async fn small_buffers_count_in_kib() {
        let budget = WriteBudget::new(MIB);
        let small = budget.reserve(100).await;
        assert_eq!(small.bytes(), KIB);
        assert_eq!(budget.available_bytes(), MIB - KIB);
        assert_eq!(Reservation::default().bytes(), 0);
    }

    #[tokio::test]
    async fn growing_takes_more_while_it_is_free() {
        let budget = WriteBudget::new(8 * MIB);
        let mut held = budget.reserve(MIB).await;
        budget.grow(&mut held, 4 * MIB, None).await;
        budget.grow(&mut held, 2 * MIB, None).await;
        assert_eq!(held.bytes(), 4 * MIB);
        assert_eq!(budget.available_bytes(), 4 * MIB);
        drop(held);
        assert_eq!(budget.available_bytes(), 8 * MIB);
    }

    /// Two buffers hold half the budget each and both want all of it: neither may keep its
    /// half while it waits, or neither ever gets the rest.
    #[tokio::test]
    async fn buffers_that_all_want_more_do_not_stall_each_other() {
        let budget = WriteBudget::new(8 * MIB);
        let grow_to_all = |budget: Arc<WriteBudget>| async move {
            let mut held = budget.reserve(4 * MIB).await;
            tokio::task::yield_now().await;
            budget.grow(&mut held, 8 * MIB, None).await;
            held.bytes()
        };
        let both = futures::future::join(
            tokio::spawn(grow_to_all(Arc::clone(&budget))),
            tokio::spawn(grow_to_all(Arc::clone(&budget))),
        );
        let (a, b) = tokio::time::timeout(Duration::from_secs(10), both)
            .await
            .expect("two growing buffers stalled each other");
        assert_eq!((a.unwrap(), b.unwrap()), (8 * MIB, 8 * MIB));
        assert_eq!(budget.available_bytes(), 8 * MIB);
    }

    /// First come, first served: a small request that would fit in what is free waits behind
    /// an earlier large one, so a writer wanting a whole part is not starved by small files.
    #[tokio::test]
    async fn memory_goes_in_the_order_it_was_asked_for() {
        let budget = WriteBudget::new(8 * MIB);
        let held = budget.reserve(6 * MIB).await;
        let ask = |bytes: u64| {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move { budget.reserve(bytes).await })
        };
        let large = ask(4 * MIB);
        until_waiting(&budget, 1).await;
        let small = ask(MIB);
        until_waiting(&budget, 2).await;
        assert!(!small.is_finished(), "a later request went first");
        drop(held);
        let (large, small) = (large.await.unwrap(), small.await.unwrap());
        assert_eq!((large.bytes(), small.bytes()), (4 * MIB, MIB));
        assert_eq!(budget.waiting(), 0);
    }

    /// Asks `budget` for `bytes` in a task, at the place of `slot`'s upload.
    fn ask_for(
        budget: &Arc<WriteBudget>,
        slot: Arc<UploadSlot>,
        bytes: u64,
    ) -> tokio::task::JoinHandle<Reservation> {
        let budget = Arc::clone(budget);
        tokio::spawn(async move {
            let mut held = Reservation::default();
            budget.grow(&mut held, bytes, Some(&slot)).await;
            held
        })
    }

    type Asked = tokio::task::JoinHandle<Reservation>;

    /// On a full 8 MiB budget, a younger upload asks for 4 MiB, then, `between` later, an
    /// older upload for all 8; then the memory is freed.
    async fn younger_then_older(between: Duration) -> (Arc<WriteBudget>, Asked, Asked) {
        let budget = WriteBudget::new(8 * MIB);
        let older = Arc::new(budget.enter_upload());
        let younger = Arc::new(budget.enter_upload());
        let held = budget.reserve(8 * MIB).await;
        let young = ask_for(&budget, younger, 4 * MIB);
        until_waiting(&budget, 1).await;
        tokio::time::sleep(between).await;
        let old = ask_for(&budget, older, 8 * MIB);
        until_waiting(&budget, 2).await;
        drop(held);
        (budget, young, old)
    }

    /// Free memory goes to the oldest upload's request, though a younger upload asked first:
    /// writers then finish one after another instead of all together at the end.
    #[tokio::test(start_paused = true)]
    async fn memory_goes_to_the_oldest_upload_first() {
        let (budget, young, old) = younger_then_older(Duration::ZERO).await;
        let old = old.await.unwrap();
        assert_eq!(old.bytes(), 8 * MIB);
        assert!(!young.is_finished(), "the younger upload went first");
        drop(old);
        assert_eq!(young.await.unwrap().bytes(), 4 * MIB);
        assert_eq!(budget.available_bytes(), 8 * MIB);
    }

    /// A request that has waited `AGING` goes before an older upload's, so a long upload
    /// cannot starve a newer one.
    #[tokio::test(start_paused = true)]
    async fn a_request_that_waited_long_goes_first() {
        let (budget, young, old) = younger_then_older(AGING).await;
        assert_eq!(young.await.unwrap().bytes(), 4 * MIB);
        assert!(!old.is_finished());
        assert_eq!(budget.waiting(), 1);
    }

    /// A request given up while it waits, or after it was granted but before it ran, leaves
    /// no memory behind.
    #[tokio::test(start_paused = true)]
    async fn a_request_given_up_gives_its_memory_back() {
        let budget = WriteBudget::new(8 * MIB);
        let slot = Arc::new(budget.enter_upload());
        let held = budget.reserve(8 * MIB).await;
        let waiting = ask_for(&budget, Arc::clone(&slot), 8 * MIB);
        until_waiting(&budget, 1).await;
        waiting.abort();
        let _ = waiting.await;
        drop(held);
        assert_eq!(budget.available_bytes(), 8 * MIB, "given up while waiting");

        let held = budget.reserve(8 * MIB).await;
        let granted = ask_for(&budget, slot, 8 * MIB);
        until_waiting(&budget, 1).await;
        drop(held);
        // Granted under the lock; on this one thread the task has not run since.
        assert_eq!(budget.available_bytes(), 0);
        granted.abort();
        let _ = granted.await;
        assert_eq!(budget.available_bytes(), 8 * MIB, "given up once granted");
    }

    #[test]
    fn the_default_is_an_eighth_of_what_the_cache_leaves_within_one_upload_and_16_parts() {
        const GIB: u64 = 1 << 30;
        let part = 8 * MIB;
        let default = |memory, cache| WriteBudget::default_bytes(memory, cache, part);
        assert_eq!(default(24 * GIB, 256 * MIB), 128 * MIB);
        assert_eq!(default(2 * GIB, 256 * MIB), 128 * MIB);
        assert_eq!(default(GIB, 256 * MIB), 96 * MIB);
        assert_eq!(default(512 * MIB, 256 * MIB), 72 * MIB);
        assert_eq!(default(0, 256 * MIB), 72 * MIB);
        // Larger parts: still one upload at full speed, and 16 of them at most.
        assert_eq!(
            WriteBudget::default_bytes(24 * GIB, 256 * MIB, 64 * MIB),
            GIB
        );
        assert_eq!(WriteBudget::default_bytes(GIB, 0, 64 * MIB), 9 * 64 * MIB);
    }
}
