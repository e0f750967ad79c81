//! The file system's monotonic clock. TTLs, listings and delays are measured against it, so a
//! test can move time forward (`advance`) instead of sleeping through a TTL; a mount uses the
//! system's clock unmoved.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Nanoseconds added to the system's monotonic clock.
    offset: Arc<AtomicU64>,
}

impl Clock {
    pub fn now(&self) -> Instant {
        Instant::now() + Duration::from_nanos(self.offset.load(Ordering::Relaxed))
    }

    /// How long ago `at` was (zero for a time in the future).
    pub fn since(&self, at: Instant) -> Duration {
        self.now().saturating_duration_since(at)
    }

    /// Moves this clock (and every clone of it) forward.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.offset.fetch_add(nanos, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_every_clone() {
        let clock = Clock::default();
        let copy = clock.clone();
        let before = copy.now();
        clock.advance(Duration::from_secs(3600));
        assert!(copy.since(before) >= Duration::from_secs(3600));
        assert_eq!(
            clock.since(clock.now() + Duration::from_secs(5)),
            Duration::ZERO
        );
    }
}
