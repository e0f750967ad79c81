//! The memory every upload of a mount may hold, together: the buffer each writer is filling and
//! the parts being sent, counted in KiB by one semaphore. A writer takes its buffer's share
//! before it fills it; the share travels with the buffer when it becomes a part and comes back
//! when the part's request ends. So many writers at once wait for memory instead of each
//! holding its own (max_parts_in_flight + 1) × part size.
//!
//! The semaphore hands memory out first come, first served, and no one ever waits while
//! holding memory it got from it: a buffer that must grow and cannot at once gives its share
//! back and queues for the whole new size ([`WriteBudget::grow`]). Every share held then
//! belongs to a buffer being filled, a part in flight (which ends on its own) or a close in
//! progress (which needs no more): memory always comes back, so writers that all want more
//! cannot stall one another, and a close never waits behind a writer waiting for memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::part_size::S3_MIN_PART_SIZE;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

#[derive(Debug)]
pub struct WriteBudget {
    kib: Arc<Semaphore>,
    total_kib: u32,
    waiting: AtomicUsize,
    /// Streaming uploads open on this budget now (see [`UploadSlot::part_size`]).
    uploads: Arc<AtomicUsize>,
}

/// One streaming upload counted among those sharing a budget until dropped.
#[derive(Debug)]
pub struct UploadSlot {
    uploads: Arc<AtomicUsize>,
    total: u64,
}

impl UploadSlot {
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
    permit: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    pub fn bytes(&self) -> u64 {
        self.kib() as u64 * KIB
    }

    fn kib(&self) -> usize {
        self.permit.as_ref().map_or(0, |p| p.num_permits())
    }
}

impl WriteBudget {
    /// A budget of `bytes`, rounded down to whole KiB (at least 1).
    pub fn new(bytes: u64) -> Arc<WriteBudget> {
        let total_kib = (bytes / KIB).clamp(1, u64::from(u32::MAX)) as u32;
        Arc::new(WriteBudget {
            kib: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
            waiting: AtomicUsize::new(0),
            uploads: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The default budget of a mount on a machine with `machine_memory` bytes (or its cgroup's
    /// limit) whose block cache keeps `cache_bytes`: an eighth of what the cache leaves, at
    /// least one upload at full speed ((parts in flight + 1) × part size, so a single writer
    /// is never slowed) and at most 32 parts (at 8 MiB, 256 MiB: 32 parts in flight already
    /// saturate a link; more memory would only be faulted in and freed).
    pub fn default_bytes(
        machine_memory: u64,
        cache_bytes: u64,
        part_size: u64,
        max_parts_in_flight: usize,
    ) -> u64 {
        let one_upload = (max_parts_in_flight as u64 + 1).saturating_mul(part_size);
        let most = part_size.saturating_mul(32).max(one_upload);
        (machine_memory.saturating_sub(cache_bytes) / 8).clamp(one_upload, most)
    }

    /// Counts a streaming upload among those sharing the budget for as long as the slot lives.
    pub fn enter_upload(&self) -> UploadSlot {
        self.uploads.fetch_add(1, Ordering::Relaxed);
        UploadSlot {
            uploads: Arc::clone(&self.uploads),
            total: self.total_bytes(),
        }
    }

    pub fn total_bytes(&self) -> u64 {
        u64::from(self.total_kib) * KIB
    }

    pub fn total_mib(&self) -> u64 {
        self.total_bytes() / MIB
    }

    /// Bytes nobody holds now.
    pub fn available_bytes(&self) -> u64 {
        self.kib.available_permits() as u64 * KIB
    }

    /// Uploads waiting for memory from this budget now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Waits in line until `bytes` are free and holds them until the reservation drops. More
    /// than the whole budget takes the whole budget rather than waiting for ever.
    pub async fn reserve(&self, bytes: u64) -> Reservation {
        self.reserve_kib(self.kib_for(bytes)).await
    }

    /// Makes `held` at least `bytes`: at once if the memory is free and nobody is waiting for
    /// it, else by giving back what `held` has and waiting in line for all of it. Waiting
    /// while holding could leave every writer holding part of the budget and waiting for the
    /// rest.
    pub async fn grow(&self, held: &mut Reservation, bytes: u64) {
        let wanted = self.kib_for(bytes);
        let have = held.kib() as u32;
        if wanted <= have {
            return;
        }
        if let Ok(more) = Arc::clone(&self.kib).try_acquire_many_owned(wanted - have) {
            match &mut held.permit {
                Some(permit) => permit.merge(more),
                None => held.permit = Some(more),
            }
            return;
        }
        *held = Reservation::default();
        *held = self.reserve_kib(wanted).await;
    }

    fn kib_for(&self, bytes: u64) -> u32 {
        bytes.div_ceil(KIB).min(u64::from(self.total_kib)) as u32
    }

    async fn reserve_kib(&self, kib: u32) -> Reservation {
        if let Ok(permit) = Arc::clone(&self.kib).try_acquire_many_owned(kib) {
            return Reservation {
                permit: Some(permit),
            };
        }
        let _waiting = Waiting::new(&self.waiting);
        // `None` only if the semaphore were closed, which nothing does: the memory then goes
        // unaccounted rather than failing a write.
        Reservation {
            permit: Arc::clone(&self.kib).acquire_many_owned(kib).await.ok(),
        }
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
pub(super) async fn grow(budget: Option<&Arc<WriteBudget>>, held: &mut Reservation, bytes: u64) {
    if let Some(budget) = budget {
        budget.grow(held, bytes).await;
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
        budget.grow(&mut held, 4 * MIB).await;
        budget.grow(&mut held, 2 * MIB).await;
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
            budget.grow(&mut held, 8 * MIB).await;
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

    #[test]
    fn the_default_is_an_eighth_of_what_the_cache_leaves_within_one_upload_and_32_parts() {
        const GIB: u64 = 1 << 30;
        let part = 8 * MIB;
        let default = |memory, cache| WriteBudget::default_bytes(memory, cache, part, 8);
        assert_eq!(default(24 * GIB, 256 * MIB), 256 * MIB);
        assert_eq!(default(2 * GIB, 256 * MIB), 224 * MIB);
        assert_eq!(default(GIB, 256 * MIB), 96 * MIB);
        assert_eq!(default(512 * MIB, 256 * MIB), 72 * MIB);
        assert_eq!(default(0, 256 * MIB), 72 * MIB);
        // Larger parts: still one upload at full speed, and 32 of them at most.
        assert_eq!(
            WriteBudget::default_bytes(24 * GIB, 256 * MIB, 64 * MIB, 8),
            2 * GIB
        );
        assert_eq!(
            WriteBudget::default_bytes(GIB, 0, 64 * MIB, 8),
            9 * 64 * MIB
        );
    }
}
