//! The ledger's on-S3 encoding, used only to produce realistic demo and test segments: a
//! segment is bincode 1.3 of [`Segment`], gzip-compressed when archived with compression, and
//! its sidecar is JSON of [`SegmentMetadata`]. [`super::entries`] decodes stored segments.

use std::collections::HashMap;
use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};

/// The ledger's in-memory segment, field for field (bincode depends on the order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub segment_id: u64,
    pub timestamp: u64,
    pub data: HashMap<Vec<u8>, Vec<u8>>,
    /// Sum of key and value lengths.
    pub size: usize,
}

/// The sidecar the ledger writes beside each archived segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMetadata {
    pub segment_id: u64,
    pub created_at: u64,
    pub archived_at: u64,
    pub original_size: usize,
    pub compressed_size: usize,
    pub is_compressed: bool,
    pub entry_count: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("bincode: {0}")]
    Bincode(#[from] bincode::Error),
    #[error("gzip: {0}")]
    Gzip(#[from] std::io::Error),
}

/// A segment as the ledger's archival puts it into S3: the object body and its sidecar.
#[derive(Debug, Clone)]
pub struct ArchivedSegment {
    pub id: u64,
    pub body: Vec<u8>,
    pub metadata: SegmentMetadata,
}

impl ArchivedSegment {
    pub fn metadata_json(&self) -> Vec<u8> {
        // Serializing a struct of integers and bools cannot fail.
        serde_json::to_vec(&self.metadata).unwrap_or_default()
    }
}

impl Segment {
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        Ok(bincode::serialize(self)?)
    }

    pub fn decode(bytes: &[u8]) -> Result<Segment, CodecError> {
        Ok(bincode::deserialize(bytes)?)
    }

    /// Encodes (and optionally gzips) the segment with its sidecar, as the ledger archives it.
    pub fn archive(&self, compress: bool, archived_at: u64) -> Result<ArchivedSegment, CodecError> {
        let encoded = self.encode()?;
        let body = if compress { gzip(&encoded)? } else { encoded };
        let metadata = SegmentMetadata {
            segment_id: self.segment_id,
            created_at: self.timestamp,
            archived_at,
            original_size: self.size,
            compressed_size: body.len(),
            is_compressed: compress,
            entry_count: self.data.len(),
        };
        Ok(ArchivedSegment {
            id: self.segment_id,
            body,
            metadata,
        })
    }
}

pub fn gzip(data: &[u8]) -> Result<Vec<u8>, CodecError> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::new(6));
    encoder.write_all(data)?;
    Ok(encoder.finish()?)
}

pub fn gunzip(data: &[u8]) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    GzDecoder::new(data).read_to_end(&mut out)?;
    Ok(out)
}

/// A segment with `entries` ledger-like key/value pairs, deterministic in `(id, seed)`.
pub fn demo_segment(id: u64, entries: usize, seed: u64) -> Segment {
    let mut rng = fastrand::Rng::with_seed(seed ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let timestamp = 1_760_000_000 + id * 60;
    let mut data = HashMap::with_capacity(entries);
    for n in 0..entries {
        let key = format!("tx:{id:08x}:{n:06}").into_bytes();
        let amount = rng.u32(1..1_000_000);
        let memo: String = (0..rng.usize(8..120)).map(|_| rng.alphanumeric()).collect();
        let value = format!(
            r#"{{"from":"acct-{:04}","to":"acct-{:04}","amount":{amount},"memo":"{memo}"}}"#,
            rng.u16(0..5000),
            rng.u16(0..5000)
        )
        .into_bytes();
        data.insert(key, value);
    }
    let size = data.iter().map(|(k, v)| k.len() + v.len()).sum();
    Segment {
        segment_id: id,
        timestamp,
        data,
        size,
    }
}

/// `count` archived demo segments with non-contiguous ids; every third is gzip-compressed.
pub fn demo_segments(count: usize, seed: u64) -> Result<Vec<ArchivedSegment>, CodecError> {
    (0..count as u64)
        .map(|i| {
            // Gaps between ids, as a ledger that compacts or skips segments leaves them.
            let id = 0x1000 + i * 7 + (i % 3) * 2;
            let segment = demo_segment(id, 40 + (i as usize * 13) % 200, seed);
            segment.archive(i % 3 == 0, segment.timestamp + 3600)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archived_segments_decode_back() {
        let segments = demo_segments(6, 1).unwrap();
        let mut ids: Vec<u64> = segments.iter().map(|s| s.id).collect();
        ids.dedup();
        assert_eq!(ids.len(), 6);
        assert!(
            ids.windows(2).any(|w| w[1] - w[0] > 1),
            "ids should not be contiguous"
        );
        for archived in &segments {
            let raw = if archived.metadata.is_compressed {
                gunzip(&archived.body).unwrap()
            } else {
                archived.body.clone()
            };
            let segment = Segment::decode(&raw).unwrap();
            assert_eq!(segment.segment_id, archived.id);
            assert_eq!(segment.data.len(), archived.metadata.entry_count);
            assert_eq!(segment.size, archived.metadata.original_size);
            assert_eq!(archived.body.len(), archived.metadata.compressed_size);
            let meta: SegmentMetadata = serde_json::from_slice(&archived.metadata_json()).unwrap();
            assert_eq!(meta, archived.metadata);
        }
        assert!(segments.iter().any(|s| s.metadata.is_compressed));
        assert!(segments.iter().any(|s| !s.metadata.is_compressed));
    }

    #[test]
    fn bincode_layout_is_the_ledgers() {
        let segment = Segment {
            segment_id: 1,
            timestamp: 2,
            data: HashMap::new(),
            size: 0,
        };
        // u64, u64, u64 map length, usize: bincode 1.3 fixed-int little endian.
        let mut expected = vec![1, 0, 0, 0, 0, 0, 0, 0, 2];
        expected.extend([0u8; 7 + 8 + 8]);
        assert_eq!(segment.encode().unwrap(), expected);
    }
}
