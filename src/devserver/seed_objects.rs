//! Seeding a bucket with many small objects at once, for tests and benchmarks at scale: a
//! million keys take a few seconds and 350 to 600 bytes of memory each.
//!
//! Three shapes ([`SeedShape`]): ledger segments that `scribefs segments verify` accepts, a tree
//! of directories, and one flat directory. Objects go straight into the bucket's
//! [`MemoryStore`](crate::store::memory::MemoryStore): they are never written under `--root`
//! (a file per object would cost minutes and gigabytes), so they are made again at each start.
//! A key the bucket already holds (e.g. loaded from `--root`) keeps its stored version.

use std::fmt;
use std::io;
use std::str::FromStr;
use std::time::SystemTime;

use bytes::Bytes;

use super::buckets::Bucket;
use crate::segment::codec::Segment;
use crate::segment::{meta_key, segment_key};
use crate::store::PutOptions;
use crate::store::memory::StoredObject;

/// The body every tree and flat object shares (one allocation for the whole bucket).
pub const SEEDED_BODY: &[u8] = b"scribefs seed\n";

/// What to put into a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedShape {
    /// `count` ledger segments of one entry each, with their sidecars (two keys per segment):
    /// `segments/segment-{id:016x}.bin` and `.meta.json`, ids `0..count`.
    Segments { count: u64 },
    /// `dirs` directories of `per_dir` objects: `tree/d0000/f000000`, the file number counting
    /// on across directories (`tree/d0001/f001000` follows `tree/d0000/f000999`).
    Tree { dirs: u64, per_dir: u64 },
    /// `count` objects in one directory: `flat/f0000000` ...
    Flat { count: u64 },
}

impl SeedShape {
    /// How many keys the shape makes.
    pub fn keys(&self) -> u64 {
        match *self {
            SeedShape::Segments { count } => count.saturating_mul(2),
            SeedShape::Tree { dirs, per_dir } => dirs.saturating_mul(per_dir),
            SeedShape::Flat { count } => count,
        }
    }
}

/// Parses `segments:N`, `tree:DxF` or `flat:N` (digits may be grouped with `_`).
impl FromStr for SeedShape {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not segments:N, tree:DIRSxFILES or flat:N");
        let (kind, size) = text.split_once(':').ok_or_else(bad)?;
        let number = |n: &str| n.replace('_', "").parse::<u64>().map_err(|_| bad());
        match kind {
            "segments" => Ok(SeedShape::Segments {
                count: number(size)?,
            }),
            "flat" => Ok(SeedShape::Flat {
                count: number(size)?,
            }),
            "tree" => {
                let (dirs, per_dir) = size.split_once('x').ok_or_else(bad)?;
                Ok(SeedShape::Tree {
                    dirs: number(dirs)?,
                    per_dir: number(per_dir)?,
                })
            }
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for SeedShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeedShape::Segments { count } => write!(f, "segments:{count}"),
            SeedShape::Tree { dirs, per_dir } => write!(f, "tree:{dirs}x{per_dir}"),
            SeedShape::Flat { count } => write!(f, "flat:{count}"),
        }
    }
}

/// Puts `shape`'s objects into `bucket`; returns how many keys were added (keys already there
/// are kept). CPU-bound for a few seconds per million keys: call it from a blocking context.
pub(crate) fn seed_objects(bucket: &Bucket, shape: SeedShape) -> io::Result<u64> {
    let now = SystemTime::now();
    let mut added = 0u64;
    let mut put = |key: String, object: StoredObject| {
        if bucket.store.object(&key).is_none() {
            bucket.store.insert(&key, object);
            added += 1;
        }
    };
    match shape {
        SeedShape::Segments { count } => {
            for id in 0..count {
                let (body, sidecar) = tiny_segment(id)?;
                put(segment_key(id), stored(body, now));
                put(meta_key(id), stored(sidecar, now));
            }
        }
        SeedShape::Tree { dirs, per_dir } => {
            let shared = stored(Bytes::from_static(SEEDED_BODY), now);
            let dir_width = digits(dirs).max(4);
            let file_width = digits(dirs.saturating_mul(per_dir)).max(6);
            for dir in 0..dirs {
                for n in dir * per_dir..(dir + 1) * per_dir {
                    put(
                        format!("tree/d{dir:0dir_width$}/f{n:0file_width$}"),
                        shared.clone(),
                    );
                }
            }
        }
        SeedShape::Flat { count } => {
            let shared = stored(Bytes::from_static(SEEDED_BODY), now);
            let width = digits(count).max(7);
            for n in 0..count {
                put(format!("flat/f{n:0width$}"), shared.clone());
            }
        }
    }
    Ok(added)
}

/// The stored form of `body`: its MD5 as ETag, no metadata, no content type (each would cost
/// an allocation per object).
fn stored(body: Bytes, now: SystemTime) -> StoredObject {
    let mut object = StoredObject::new(body, PutOptions::default());
    object.last_modified = now;
    object
}

/// A segment of one entry, archived uncompressed as the ledger does, and its sidecar.
fn tiny_segment(id: u64) -> io::Result<(Bytes, Bytes)> {
    let key = format!("tx:{id:016x}").into_bytes();
    let value = b"{}".to_vec();
    let segment = Segment {
        segment_id: id,
        timestamp: id.wrapping_mul(60).wrapping_add(1_760_000_000),
        size: key.len() + value.len(),
        data: [(key, value)].into(),
    };
    let archived = segment
        .archive(false, segment.timestamp.wrapping_add(3600))
        .map_err(io::Error::other)?;
    let sidecar = archived.metadata_json();
    Ok((Bytes::from(archived.body), Bytes::from(sidecar)))
}

/// Decimal digits of the largest number below `n` (at least 1).
fn digits(n: u64) -> usize {
    n.saturating_sub(1)
        .checked_ilog10()
        .map_or(1, |d| d as usize + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::entries::decode_checked;

    #[test]
    fn shapes_parse_and_print_back() {
        for text in ["segments:500001", "tree:1000x1000", "flat:1000000"] {
            assert_eq!(text.parse::<SeedShape>().unwrap().to_string(), text);
        }
        assert_eq!(
            "flat:1_000_000".parse::<SeedShape>().unwrap(),
            SeedShape::Flat { count: 1_000_000 }
        );
        for bad in ["flat", "flat:", "flat:-1", "tree:10", "tree:axb", "cube:3"] {
            assert!(bad.parse::<SeedShape>().is_err(), "{bad}");
        }
        assert_eq!(SeedShape::Segments { count: 3 }.keys(), 6);
        assert_eq!(
            SeedShape::Tree {
                dirs: 3,
                per_dir: 4
            }
            .keys(),
            12
        );
    }

    #[test]
    fn tiny_segments_pass_the_ledgers_checks() {
        for id in [0, 1, 0xdead_beef, u64::MAX] {
            let (body, sidecar) = tiny_segment(id).unwrap();
            let entries = decode_checked(id, &body, Some(&sidecar)).unwrap();
            assert_eq!(
                entries.get(format!("tx:{id:016x}").as_bytes()),
                Some(&b"{}"[..])
            );
        }
    }

    #[test]
    fn widths_cover_the_largest_number() {
        assert_eq!(digits(0), 1);
        assert_eq!(digits(10), 1);
        assert_eq!(digits(11), 2);
        assert_eq!(digits(1_000_000), 6);
        assert_eq!(digits(1_000_001), 7);
    }
}
