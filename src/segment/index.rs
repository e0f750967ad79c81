//! What `segments find` remembers of a segment: the 64-bit hashes of its keys, sorted, so a
//! later search asks "may this segment hold KEY?" without fetching it. A hash collision is a
//! false positive (one GET more, the decoded segment still decides); a key is never missed.

use super::entries::SegmentEntries;

/// FNV-1a over the key's bytes: stable across runs and machines (the index is on disk).
pub fn key_hash(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The sorted, distinct hashes of every key of a decoded segment.
pub fn key_hashes(entries: &SegmentEntries) -> Vec<u64> {
    let mut hashes: Vec<u64> = entries.iter().map(|(key, _)| key_hash(key)).collect();
    hashes.sort_unstable();
    hashes.dedup();
    hashes
}

/// Whether a segment with these sorted hashes may hold `key`.
pub fn may_hold(hashes: &[u64], key: &[u8]) -> bool {
    hashes.binary_search(&key_hash(key)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_is_by_hash() {
        let mut hashes: Vec<u64> = [b"a".as_slice(), b"bb", b"ccc"]
            .iter()
            .map(|k| key_hash(k))
            .collect();
        hashes.sort_unstable();
        assert!(may_hold(&hashes, b"bb"));
        assert!(!may_hold(&hashes, b"dd"));
        assert_ne!(key_hash(b"ab"), key_hash(b"ba"));
    }
}
