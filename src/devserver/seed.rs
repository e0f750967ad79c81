//! Seeding buckets with demo Scribe Ledger segments (data object plus `.meta.json` sidecar), so
//! the quickstart and benchmarks have realistic content. A bucket that already holds segments
//! (e.g. restarted with `--root`) is left alone.

use std::io;

use bytes::Bytes;

use super::buckets::Bucket;
use crate::segment::codec::demo_segments;
use crate::segment::{SEGMENTS_PREFIX, meta_key, segment_key};
use crate::store::{ListRequest, ObjectStore, PutOptions};

/// Fixed so every seeded server holds the same bytes.
pub const SEED: u64 = 0x5eed;

/// Puts `count` demo segments into `bucket` unless it has segments already; returns how many
/// were written.
pub(crate) async fn seed_bucket(bucket: &Bucket, count: usize) -> io::Result<usize> {
    if count == 0 {
        return Ok(0);
    }
    let probe = ListRequest {
        prefix: format!("{SEGMENTS_PREFIX}segment-"),
        max_keys: Some(1),
        ..Default::default()
    };
    let existing = bucket.store.list(probe).await.map_err(io::Error::other)?;
    if !existing.objects.is_empty() {
        return Ok(0);
    }
    let segments = demo_segments(count, SEED).map_err(io::Error::other)?;
    for segment in &segments {
        let files = [
            (
                segment_key(segment.id),
                Bytes::from(segment.body.clone()),
                "application/octet-stream",
            ),
            (
                meta_key(segment.id),
                Bytes::from(segment.metadata_json()),
                "application/json",
            ),
        ];
        for (key, body, content_type) in files {
            let options = PutOptions {
                content_type: Some(content_type.to_string()),
                ..Default::default()
            };
            bucket
                .store
                .put(&key, body, options)
                .await
                .map_err(io::Error::other)?;
            bucket.persist(&key).await?;
        }
    }
    Ok(segments.len())
}
