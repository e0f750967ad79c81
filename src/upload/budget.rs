//! The memory every upload of a mount may hold in parts being sent, together: a semaphore
//! counted in MiB. A part takes its size from it before it goes and gives it back when its
//! request ends, so many writers at once wait for memory instead of each holding its own
//! (max_parts_in_flight + 1) × part size. A writer never waits on itself: its own parts in
//! flight finish and give their share back, and a part larger than the whole budget takes
//! the whole budget rather than waiting for ever.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

const MIB: u64 = 1 << 20;

#[derive(Debug)]
pub struct WriteBudget {
    mib: Arc<Semaphore>,
    total_mib: u32,
}

impl WriteBudget {
    /// A budget of `bytes`, rounded down to whole MiB (at least 1).
    pub fn new(bytes: u64) -> Arc<WriteBudget> {
        let total_mib = (bytes / MIB).clamp(1, u64::from(u32::MAX >> 3)) as u32;
        Arc::new(WriteBudget {
            mib: Arc::new(Semaphore::new(total_mib as usize)),
            total_mib,
        })
    }

    pub fn total_bytes(&self) -> u64 {
        u64::from(self.total_mib) * MIB
    }

    /// Bytes not held by any part now.
    pub fn available_bytes(&self) -> u64 {
        self.mib.available_permits() as u64 * MIB
    }

    /// Waits until a part of `bytes` fits, and holds its share until the permit drops.
    /// `None` only if the semaphore were closed, which nothing does: the part then goes
    /// unaccounted rather than failing a write.
    pub async fn reserve(&self, bytes: u64) -> Option<OwnedSemaphorePermit> {
        let wanted = bytes.div_ceil(MIB).clamp(1, u64::from(self.total_mib)) as u32;
        Arc::clone(&self.mib).acquire_many_owned(wanted).await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parts_wait_for_memory_and_give_it_back() {
        let budget = WriteBudget::new(16 * MIB);
        let first = budget.reserve(8 * MIB).await;
        let second = budget.reserve(5 * MIB).await;
        assert_eq!(budget.available_bytes(), 3 * MIB);
        let third = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            budget.reserve(8 * MIB),
        )
        .await;
        assert!(third.is_err(), "a part got memory the budget did not have");
        drop(first);
        let third = budget.reserve(8 * MIB).await;
        drop((second, third));
        assert_eq!(budget.available_bytes(), 16 * MIB);
        // Larger than the whole budget: takes all of it instead of waiting for ever.
        let huge = budget.reserve(64 * MIB).await;
        assert_eq!(budget.available_bytes(), 0);
        drop(huge);
    }
}
