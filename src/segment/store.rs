use std::sync::Arc;

use bytes::Bytes;

use super::{SEGMENTS_PREFIX, SegmentFile, meta_key, parse_file_name, segment_key};
use crate::store::{ListRequest, ObjectStore, ObjectSummary, PutOptions, StoreResult, get_bytes};

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
        let files = self.list_files().await?;
        let mut ids: Vec<u64> = files
            .into_iter()
            .filter_map(|(id, file)| (file == SegmentFile::Data).then_some(id))
            .collect();
        ids.dedup();
        Ok(ids)
    }

    /// Every segment file (data and sidecar) in the bucket, sorted by id then data before
    /// sidecar, across all listing pages. Stray keys under `segments/` are skipped.
    pub async fn list_files(&self) -> StoreResult<Vec<(u64, SegmentFile)>> {
        let listed = self.list_versions().await?;
        Ok(listed.into_iter().map(|(id, file, _)| (id, file)).collect())
    }

    /// Every segment data object, ascending by id, with what the listing tells of its version
    /// (ETag, LastModified, size), across all listing pages.
    pub async fn list_data_versions(&self) -> StoreResult<Vec<(u64, ObjectSummary)>> {
        let listed = self.list_versions().await?;
        Ok(listed
            .into_iter()
            .filter_map(|(id, file, object)| (file == SegmentFile::Data).then_some((id, object)))
            .collect())
    }

    /// [`Self::list_files`] with each file's listing entry. Of two keys naming the same file
    /// (other hex lengths or cases), the first listed is kept.
    pub async fn list_versions(&self) -> StoreResult<Vec<(u64, SegmentFile, ObjectSummary)>> {
        let mut request = ListRequest {
            prefix: format!("{SEGMENTS_PREFIX}segment-"),
            ..Default::default()
        };
        let mut files = Vec::new();
        loop {
            let page = self.store.list(request.clone()).await?;
            let next = page.next_continuation_token;
            files.extend(page.objects.into_iter().filter_map(|o| {
                let (id, file) = o
                    .key
                    .strip_prefix(SEGMENTS_PREFIX)
                    .and_then(parse_file_name)?;
                Some((id, file, o))
            }));
            match next {
                Some(token) => request.continuation_token = Some(token),
                None => break,
            }
        }
        // Keys of other hex lengths or cases do not sort by id.
        files.sort_by_key(|(id, file, _)| (*id, *file));
        files.dedup_by_key(|(id, file, _)| (*id, *file));
        Ok(files)
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
        memory
            .put(&meta_key(8), Bytes::new(), PutOptions::default())
            .await
            .unwrap();
        let files = segments.list_files().await.unwrap();
        assert_eq!(files.len(), 7);
        assert_eq!(
            files[..3],
            [
                (7, SegmentFile::Data),
                (7, SegmentFile::Meta),
                (8, SegmentFile::Meta)
            ]
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
