//! S3's multipart limits and the part size schedule that keeps a stream of unknown length inside
//! them.
//!
//! A multipart upload has at most 10,000 parts, every part but the last is at least 5 MiB, no
//! part exceeds 5 GiB and the object is at most 5 TiB. A writer streaming a file does not know
//! its final size, so it cannot pick one part size up front: 8 MiB parts would stop at 78 GiB,
//! 512 MiB parts would make every small file's buffer huge. Instead the part size doubles every
//! [`PARTS_PER_TIER`] parts, so the part size stays near a thousandth of the bytes written so far
//! and 10,000 parts reach past 5 TiB even from the 5 MiB minimum (see the tests).

pub use crate::store::limits::{
    S3_MAX_OBJECT_SIZE, S3_MAX_PART_SIZE, S3_MAX_PARTS, S3_MIN_PART_SIZE,
};
/// The part size doubles after every this many parts. 900 rather than a rounder 1000: with 1000,
/// ten tiers from a 5 MiB base sum to only 4.88 TiB, short of S3's 5 TiB object limit.
pub const PARTS_PER_TIER: u32 = 900;

/// The size of part `part_number` (1-based; 0 counts as 1) when parts start at `base` bytes:
/// `base` for parts 1..=900, twice that for 901..=1800, and so on, never above 5 GiB.
pub fn part_size_for(part_number: u32, base: u64) -> u64 {
    let tier = part_number.saturating_sub(1) / PARTS_PER_TIER;
    let multiplier = 1u64.checked_shl(tier).unwrap_or(u64::MAX);
    base.saturating_mul(multiplier).min(S3_MAX_PART_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;
    const GIB: u64 = 1024 * MIB;

    fn sum_of_all_parts(base: u64) -> u64 {
        (1..=S3_MAX_PARTS).map(|n| part_size_for(n, base)).sum()
    }

    #[test]
    fn tier_boundaries() {
        let base = 8 * MIB;
        let table = [
            (0, base),
            (1, base),
            (900, base),
            (901, 2 * base),
            (1800, 2 * base),
            (1801, 4 * base),
            (2700, 4 * base),
            (2701, 8 * base),
            (7200, 128 * base),
            (7201, 256 * base),
            (8100, 256 * base),
            (8101, 512 * base),
            (9000, 512 * base),
            // 1024 × 8 MiB would be 8 GiB: capped at S3's largest part.
            (9001, S3_MAX_PART_SIZE),
            (10_000, S3_MAX_PART_SIZE),
            (u32::MAX, S3_MAX_PART_SIZE),
        ];
        for (part_number, expected) in table {
            assert_eq!(
                part_size_for(part_number, base),
                expected,
                "part {part_number}"
            );
        }
    }

    #[test]
    fn the_minimum_base_reaches_the_cap_exactly_in_the_last_tier() {
        assert_eq!(part_size_for(9000, S3_MIN_PART_SIZE), 2560 * MIB);
        assert_eq!(part_size_for(9001, S3_MIN_PART_SIZE), 5 * GIB);
        assert_eq!(part_size_for(10_000, S3_MIN_PART_SIZE), 5 * GIB);
    }

    #[test]
    fn a_huge_base_is_capped_from_the_first_part() {
        assert_eq!(part_size_for(1, 6 * GIB), S3_MAX_PART_SIZE);
        assert_eq!(part_size_for(1, u64::MAX), S3_MAX_PART_SIZE);
    }

    #[test]
    fn ten_thousand_parts_hold_more_than_five_tib_from_any_valid_base() {
        for base in [
            S3_MIN_PART_SIZE,
            8 * MIB,
            16 * MIB,
            100 * MIB,
            S3_MAX_PART_SIZE,
        ] {
            let total = sum_of_all_parts(base);
            assert!(
                total > S3_MAX_OBJECT_SIZE,
                "base {base}: 10,000 parts hold only {total}"
            );
        }
    }

    #[test]
    fn a_thousand_part_tier_would_fall_short_from_the_minimum_base() {
        // The reason PARTS_PER_TIER is 900: doubling every 1000 parts from 5 MiB ends below 5 TiB.
        let total: u64 = (0..S3_MAX_PARTS)
            .map(|i| (S3_MIN_PART_SIZE << (i / 1000)).min(S3_MAX_PART_SIZE))
            .sum();
        assert!(total < S3_MAX_OBJECT_SIZE);
    }

    #[test]
    fn sizes_never_shrink_and_respect_s3_limits() {
        let base = S3_MIN_PART_SIZE;
        let mut previous = 0;
        for part_number in 1..=S3_MAX_PARTS {
            let size = part_size_for(part_number, base);
            assert!(size >= previous, "part {part_number} shrank");
            assert!((S3_MIN_PART_SIZE..=S3_MAX_PART_SIZE).contains(&size));
            previous = size;
        }
    }
}
