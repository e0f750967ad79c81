//! Scribe Ledger's segment key scheme and its segment API on top of any [`ObjectStore`](crate::store::ObjectStore).
//!
//! The ledger archives segment `id` as `segments/segment-{id:016x}.bin` with a JSON sidecar
//! `segments/segment-{id:016x}.meta.json`. [`codec`] is the ledger's encoding (demo and test
//! data); [`entries`] decodes and checks stored segments for `scribefs segments cat/find/verify`.

pub mod codec;
pub mod entries;
pub mod index;
mod store;

pub use store::{ListedFile, SegmentStore};

/// The prefix every segment key lives under.
pub const SEGMENTS_PREFIX: &str = "segments/";
const FILE_STEM: &str = "segment-";
const DATA_SUFFIX: &str = ".bin";
const META_SUFFIX: &str = ".meta.json";

/// Which of a segment's two objects a name refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SegmentFile {
    Data,
    Meta,
}

/// `segment-{id:016x}.bin` or `.meta.json`: the file name inside `segments/`.
pub fn file_name(id: u64, file: SegmentFile) -> String {
    match file {
        SegmentFile::Data => format!("{FILE_STEM}{id:016x}{DATA_SUFFIX}"),
        SegmentFile::Meta => format!("{FILE_STEM}{id:016x}{META_SUFFIX}"),
    }
}

pub fn segment_key(id: u64) -> String {
    format!("{SEGMENTS_PREFIX}{}", file_name(id, SegmentFile::Data))
}

pub fn meta_key(id: u64) -> String {
    format!("{SEGMENTS_PREFIX}{}", file_name(id, SegmentFile::Meta))
}

/// Parses a segment data key (`segments/segment-<hex>.bin`). Any hex length and case is
/// accepted, as the ledger's own parser does; sidecars, empty ids and non-hex ids are not.
pub fn parse_segment_key(key: &str) -> Option<u64> {
    match parse_file_name(key.strip_prefix(SEGMENTS_PREFIX)?)? {
        (id, SegmentFile::Data) => Some(id),
        (_, SegmentFile::Meta) => None,
    }
}

/// Parses a file name inside `segments/`: a data file or a sidecar, with its id.
pub fn parse_file_name(name: &str) -> Option<(u64, SegmentFile)> {
    let rest = name.strip_prefix(FILE_STEM)?;
    let (hex, file) = if let Some(hex) = rest.strip_suffix(META_SUFFIX) {
        (hex, SegmentFile::Meta)
    } else {
        (rest.strip_suffix(DATA_SUFFIX)?, SegmentFile::Data)
    };
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok().map(|id| (id, file))
}

/// Parses a segment id as a user types it: hex, with or without `0x`.
pub fn parse_id(text: &str) -> Option<u64> {
    let hex = text.strip_prefix("0x").unwrap_or(text);
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sixteen_lowercase_hex_digits() {
        assert_eq!(segment_key(42), "segments/segment-000000000000002a.bin");
        assert_eq!(meta_key(42), "segments/segment-000000000000002a.meta.json");
        assert_eq!(
            segment_key(u64::MAX),
            "segments/segment-ffffffffffffffff.bin"
        );
    }

    #[test]
    fn parsing_accepts_any_hex_length_and_case() {
        assert_eq!(
            parse_segment_key("segments/segment-000000000000002a.bin"),
            Some(42)
        );
        assert_eq!(parse_segment_key("segments/segment-2A.bin"), Some(42));
        assert_eq!(parse_segment_key("segments/segment-0.bin"), Some(0));
        assert_eq!(parse_segment_key(&segment_key(u64::MAX)), Some(u64::MAX));
    }

    #[test]
    fn parsing_rejects_sidecars_empty_and_non_hex_ids() {
        assert_eq!(
            parse_segment_key("segments/segment-000000000000002a.meta.json"),
            None
        );
        assert_eq!(parse_segment_key("segments/segment-.bin"), None);
        assert_eq!(parse_segment_key("segments/segment-xyz.bin"), None);
        assert_eq!(parse_segment_key("segments/segment-+2a.bin"), None);
        assert_eq!(parse_segment_key("segments/segment-2a.bin.tmp"), None);
        assert_eq!(parse_segment_key("other/segment-2a.bin"), None);
        assert_eq!(
            parse_segment_key("segments/segment-1ffffffffffffffff.bin"),
            None
        );
    }

    #[test]
    fn file_names_round_trip() {
        for id in [0, 1, 0xdead_beef, u64::MAX] {
            for file in [SegmentFile::Data, SegmentFile::Meta] {
                assert_eq!(parse_file_name(&file_name(id, file)), Some((id, file)));
            }
        }
        assert_eq!(parse_id("0x2a"), Some(42));
        assert_eq!(parse_id("2A"), Some(42));
        assert_eq!(parse_id("zz"), None);
        assert_eq!(parse_id(""), None);
    }
}
