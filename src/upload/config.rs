//! How big parts are and how many go at once: the two numbers that bound upload memory.

use std::sync::Arc;

use super::UploadError;
use super::budget::WriteBudget;
use super::part_size::{S3_MAX_PART_SIZE, S3_MIN_PART_SIZE, part_size_for};

/// Part size and parallelism of uploads. Fields are private so that every value in use has
/// passed the S3 limit checks in [`UploadConfig::new`].
#[derive(Debug, Clone)]
pub struct UploadConfig {
    part_size: u64,
    max_parts_in_flight: usize,
    /// The memory all uploads of the mount share for parts in flight, if bounded.
    budget: Option<Arc<WriteBudget>>,
}

impl UploadConfig {
    pub const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;
    /// 15: an upload alone on the default budget (16 parts) sends all but the part it fills.
    /// At 20 ms and 25 MB/s per connection a lone 1 GiB write took 9.8-11.0 s with 8 in flight
    /// (mountpoint-s3: 5.9-6.4 s), 6.5-8.0 s with 15. Many writers are bounded by the budget.
    pub const DEFAULT_MAX_PARTS_IN_FLIGHT: usize = 15;

    /// `part_size` is the size of the first parts (later ones grow, see `part_size_for`); it must
    /// lie within S3's 5 MiB..=5 GiB, and at least one part must be allowed in flight.
    pub fn new(part_size: u64, max_parts_in_flight: usize) -> Result<Self, UploadError> {
        if !(S3_MIN_PART_SIZE..=S3_MAX_PART_SIZE).contains(&part_size) {
            return Err(UploadError::InvalidConfig(format!(
                "part size {part_size} is outside S3's {S3_MIN_PART_SIZE}..={S3_MAX_PART_SIZE}"
            )));
        }
        if max_parts_in_flight == 0 {
            return Err(UploadError::InvalidConfig(
                "max_parts_in_flight must be at least 1".into(),
            ));
        }
        Ok(UploadConfig {
            part_size,
            max_parts_in_flight,
            budget: None,
        })
    }

    /// Parts in flight also draw on `budget`, shared with other uploads.
    pub fn with_budget(mut self, budget: Option<Arc<WriteBudget>>) -> Self {
        self.budget = budget;
        self
    }

    pub fn budget(&self) -> Option<&Arc<WriteBudget>> {
        self.budget.as_ref()
    }

    /// Parts smaller than S3 allows, for tests on `MemoryStore::with_min_part_size`.
    #[cfg(test)]
    pub fn with_small_parts(part_size: u64, max_parts_in_flight: usize) -> Self {
        assert!(part_size > 0 && max_parts_in_flight > 0);
        UploadConfig {
            part_size,
            max_parts_in_flight,
            budget: None,
        }
    }

    pub fn part_size(&self) -> u64 {
        self.part_size
    }

    pub fn max_parts_in_flight(&self) -> usize {
        self.max_parts_in_flight
    }

    /// The most body bytes one upload holds while sending part `part_number`: the parts in
    /// flight plus the one being filled, (max_parts_in_flight + 1) × part size.
    pub fn memory_bound(&self, part_number: u32) -> u64 {
        (self.max_parts_in_flight as u64 + 1) * part_size_for(part_number, self.part_size)
    }
}

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig {
            part_size: Self::DEFAULT_PART_SIZE,
            max_parts_in_flight: Self::DEFAULT_MAX_PARTS_IN_FLIGHT,
            budget: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        let default = UploadConfig::default();
        let checked =
            UploadConfig::new(default.part_size(), default.max_parts_in_flight()).unwrap();
        assert_eq!(
            (checked.part_size(), checked.max_parts_in_flight()),
            (default.part_size(), default.max_parts_in_flight())
        );
        assert_eq!(default.memory_bound(1), 16 * 8 * 1024 * 1024);
        // On a large machine the default budget holds one lone upload at its full width.
        let budget = WriteBudget::default_bytes(24 << 30, 256 << 20, default.part_size());
        assert_eq!(budget, default.memory_bound(1));
    }

    #[test]
    fn rejects_parts_s3_would_refuse() {
        assert!(UploadConfig::new(S3_MIN_PART_SIZE - 1, 4).is_err());
        assert!(UploadConfig::new(S3_MAX_PART_SIZE + 1, 4).is_err());
        assert!(UploadConfig::new(S3_MIN_PART_SIZE, 4).is_ok());
        assert!(UploadConfig::new(S3_MAX_PART_SIZE, 4).is_ok());
    }

    #[test]
    fn rejects_zero_parts_in_flight() {
        assert!(matches!(
            UploadConfig::new(S3_MIN_PART_SIZE, 0),
            Err(UploadError::InvalidConfig(_))
        ));
    }
}
