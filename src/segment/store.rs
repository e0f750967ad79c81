use std::sync::Arc;

use bytes::Bytes;

use super::{SEGMENTS_PREFIX, meta_key, parse_segment_key, segment_key};
use crate::store::{ListRequest, ObjectStore, PutOptions, StoreResult, get_bytes};

/// The ledger's segment operations on raw bytes, over any object store.
#[derive(Clone)]
pub struct SegmentStore {
    store: Arc<dyn ObjectStore>,
}

impl SegmentStore {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        SegmentStore { store }
    }

    pub async fn put_segment(&self, id: u64, data: Bytes) -> StoreResult<()> {
        self.store
            .put(&segment_key(id), data, PutOptions::default())
            .await
            .map(drop)
    }

    /// The segment's bytes, or `None` if there is no such segment.
    pub async fn get_segment(&self, id: u64) -> StoreResult<Option<Bytes>> {
        optional(get_bytes(self.store.as_ref(), &segment_key(id), None).await)
    }

    pub async fn put_metadata(&self, id: u64, json: Bytes) -> StoreResult<()> {
        let options = PutOptions {
            content_type: Some("application/json".into()),
            ..Default::default()
        };
        self.store.put(&meta_key(id), json, options).await.map(drop)
    }

    pub async fn get_metadata(&self, id: u64) -> StoreResult<Option<Bytes>> {
        optional(get_bytes(self.store.as_ref(), &meta_key(id), None).await)
    }

    /// Deletes the segment and its sidecar; deleting a missing segment succeeds, as in S3.
    pub async fn delete_segment(&self, id: u64) -> StoreResult<()> {
        self.store.delete(&segment_key(id)).await?;
        self.store.delete(&meta_key(id)).await
    }

    /// Every segment id in the bucket, ascending, across all listing pages. Keys under
    /// `segments/` that are not segment data keys (sidecars, stray files) are skipped.
    pub async fn list_segments(&self) -> StoreResult<Vec<u64>> {
        let mut request = ListRequest {
            prefix: format!("{SEGMENTS_PREFIX}segment-"),
            ..Default::default()
        };
        let mut ids = Vec::new();
        loop {
            let page = self.store.list(request.clone()).await?;
            ids.extend(
                page.objects
                    .iter()
                    .filter_map(|o| parse_segment_key(&o.key)),
            );
            match page.next_continuation_token {
                Some(token) => request.continuation_token = Some(token),
                None => break,
            }
        }
        // Keys of other hex lengths or cases do not sort by id.
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// One HeadBucket: is the bucket there and may we use it.
    pub async fn health_check(&self) -> StoreResult<()> {
        self.store.head_bucket().await
    }
}

fn optional(result: StoreResult<Bytes>) -> StoreResult<Option<Bytes>> {
    match result {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn round_trip_missing_delete_and_list_on_memory_store() {
        let memory = Arc::new(MemoryStore::new());
        let segments = SegmentStore::new(memory.clone());
        assert_eq!(segments.get_segment(7).await.unwrap(), None);
        for id in [300, 7, 0x1_0000_0000] {
            segments
                .put_segment(id, Bytes::from(format!("seg {id}")))
                .await
                .unwrap();
            segments
                .put_metadata(id, Bytes::from_static(b"{}"))
                .await
                .unwrap();
        }
        memory
            .put("segments/notes.txt", Bytes::new(), PutOptions::default())
            .await
            .unwrap();
        assert_eq!(
            segments.list_segments().await.unwrap(),
            vec![7, 300, 0x1_0000_0000]
        );
        assert_eq!(segments.get_segment(7).await.unwrap().unwrap(), "seg 7");
        segments.delete_segment(7).await.unwrap();
        assert_eq!(segments.get_segment(7).await.unwrap(), None);
        assert_eq!(segments.get_metadata(7).await.unwrap(), None);
        segments.delete_segment(7).await.unwrap();
        assert_eq!(
            segments.list_segments().await.unwrap(),
            vec![300, 0x1_0000_0000]
        );
        segments.health_check().await.unwrap();
    }
}
