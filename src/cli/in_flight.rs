//! What bounds the memory of `segments find` and `verify` whatever their `--parallel`: the
//! stored bytes of the segments being fetched or waiting to be decoded count in one budget
//! (`--max-in-flight-mib`, the uploads' KiB semaphore), taken before each GET from the sizes
//! the listing showed, and at most one decode per core runs at once (decoding is CPU work; a
//! decode holds the segment's decoded bytes beside the stored ones).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::upload::{Reservation, WriteBudget};

/// Default of `--max-in-flight-mib`: 32 segments of 8 MiB, which at 20 ms a request keep the
/// link as busy as more would, at a memory cost any machine has.
pub const DEFAULT_MIB: u64 = 256;

pub struct InFlight {
    budget: Arc<WriteBudget>,
    decoders: Semaphore,
    /// Bytes of the segments held now, and the most held at once (reported at debug level,
    /// and what the tests check): not rounded to the budget, so one segment larger than the
    /// whole budget shows as itself.
    held: AtomicU64,
    peak: AtomicU64,
}

/// Bytes of segments held in flight; given back on drop.
pub struct Held<'a> {
    owner: &'a InFlight,
    bytes: u64,
    _reservation: Reservation,
}

impl InFlight {
    pub fn new(bytes: u64) -> InFlight {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        InFlight {
            budget: WriteBudget::new(bytes),
            decoders: Semaphore::new(cores),
            held: AtomicU64::new(0),
            peak: AtomicU64::new(0),
        }
    }

    /// Waits until `bytes` are free (all of the budget for more than it) and holds them.
    pub async fn reserve(&self, bytes: u64) -> Held<'_> {
        let reservation = self.budget.reserve(bytes).await;
        self.count(bytes);
        Held {
            owner: self,
            bytes,
            _reservation: reservation,
        }
    }

    /// Makes `held` at least `bytes` (the object grew since the listing, or its size was not
    /// listed), giving back what it has while it waits, so no holder waits on another.
    pub async fn grow<'a>(&'a self, held: &mut Held<'a>, bytes: u64) {
        if bytes > held.bytes {
            *held = self.reserve(0).await;
            *held = self.reserve(bytes).await;
        }
    }

    /// One of the decode slots (one per core).
    pub async fn decoding(&self) -> Option<SemaphorePermit<'_>> {
        // Never closed: `None` would only mean one decode more at once.
        self.decoders.acquire().await.ok()
    }

    /// The most bytes of segments held at once so far.
    pub fn peak_bytes(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    fn count(&self, bytes: u64) {
        let now = self.held.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.owner.held.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// The process's peak resident memory (VmHWM), in bytes: what the budget is there to bound,
/// reported beside it. `None` where /proc does not tell.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;

    #[tokio::test]
    async fn segments_wait_for_the_budget_and_the_peak_counts_their_bytes() {
        let in_flight = InFlight::new(MIB);
        let first = in_flight.reserve(600 * KIB).await;
        let over = in_flight.reserve(600 * KIB).now_or_never();
        assert!(over.is_none(), "past the budget: waits");
        let mut second = in_flight.reserve(300 * KIB).await;
        assert_eq!(in_flight.peak_bytes(), 900 * KIB);
        drop(first);
        // Larger than the whole budget: it takes all of it, and counts as itself.
        in_flight.grow(&mut second, 3 * MIB).await;
        assert!(in_flight.reserve(1).now_or_never().is_none(), "alone");
        assert_eq!(in_flight.peak_bytes(), 3 * MIB);
        drop(second);
        assert!(in_flight.reserve(MIB).now_or_never().is_some());
        assert!(peak_rss_bytes().is_some_and(|rss| rss > 0));
    }
}
