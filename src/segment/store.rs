use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::stream::{BoxStream, Stream, StreamExt};

use super::{SEGMENTS_PREFIX, SegmentFile, file_name, meta_key, parse_file_name, segment_key};
use crate::store::{
    GetObjectOutput, GetRequest, ListRequest, ObjectStore, PutOptions, StoreResult, get_bytes,
};

/// Listing pages that may wait, listed, while the caller works on the current one: enough to
/// hide a LIST's round trip behind the work on a page, and no more, so memory stays at a few
/// pages (1,000 keys each) whatever the bucket holds.
const PAGES_AHEAD: usize = 1;

/// A segment file as the listing names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedFile {
    pub id: u64,
    pub file: SegmentFile,
    /// The name under `segments/` as stored, e.g. `segment-000000000000002a.bin`.
    pub name: String,
    pub size: u64,
    pub etag: String,
    /// With the ETag and size, the version of the file: what the ledger index is keyed by.
    pub last_modified: SystemTime,
}

impl ListedFile {
    /// Spelled as the ledger writes it (16 lowercase hex digits), so it lists in id order.
    fn is_canonical(&self) -> bool {
        self.name == file_name(self.id, self.file)
    }
}

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

    /// The segment's or sidecar's GET response, its size known before its body is read (to
    /// hold memory for it first), or `None` if there is no such file.
    pub async fn open(&self, id: u64, file: SegmentFile) -> StoreResult<Option<GetObjectOutput>> {
        let key = match file {
            SegmentFile::Data => segment_key(id),
            SegmentFile::Meta => meta_key(id),
        };
        optional(self.store.get(GetRequest::whole(key)).await)
    }

    /// Deletes the segment and its sidecar; deleting a missing segment succeeds, as in S3.
    pub async fn delete_segment(&self, id: u64) -> StoreResult<()> {
        self.store.delete(&segment_key(id)).await?;
        self.store.delete(&meta_key(id)).await
    }

    /// Every segment file (data and sidecar), a listing page at a time, in the order S3 lists
    /// them; keys under `segments/` that are not segment files are skipped. The next page is
    /// listed while the caller works on this one; at most [`PAGES_AHEAD`] wait, so memory does
    /// not grow with the bucket. A failed LIST is the last item.
    pub fn file_pages(&self) -> impl Stream<Item = StoreResult<Vec<ListedFile>>> + Send + 'static {
        let (pages, receiver) = tokio::sync::mpsc::channel(PAGES_AHEAD);
        let lister = tokio::spawn(list_pages(self.store.clone(), pages));
        // Held by the stream: a caller that stops early stops the listing too.
        let lister = AbortOnDrop(lister);
        futures::stream::unfold((receiver, lister), |(mut receiver, lister)| async move {
            let page = receiver.recv().await?;
            Some((page, (receiver, lister)))
        })
        // Ended for good: asked again (a merge that reads past the end), it stays ended.
        .fuse()
    }

    /// Every segment file, ascending by id then data before sidecar, a listing page at a time:
    /// the ledger's own keys (16 lowercase hex digits) list in id order and stream through;
    /// keys spelled otherwise (another hex length or case, which the ledger never writes) are
    /// held until the end and come last, ascending (of two naming the same file, the first
    /// listed), so only they cost memory.
    pub fn files_in_order(&self) -> BoxStream<'static, StoreResult<Vec<ListedFile>>> {
        let state = InOrder {
            pages: self.file_pages().boxed(),
            strays: Some(BTreeMap::new()),
        };
        futures::stream::unfold(state, |mut state| async move {
            match state.pages.next().await {
                Some(Ok(page)) => {
                    let mut in_order = Vec::with_capacity(page.len());
                    for listed in page {
                        if listed.is_canonical() {
                            in_order.push(listed);
                        } else if let Some(strays) = &mut state.strays {
                            strays.entry((listed.id, listed.file)).or_insert(listed);
                        }
                    }
                    Some((Ok(in_order), state))
                }
                Some(Err(error)) => {
                    state.strays = None;
                    Some((Err(error), state))
                }
                None => {
                    let strays = state.strays.take()?;
                    (!strays.is_empty()).then(|| (Ok(strays.into_values().collect()), state))
                }
            }
        })
        .fuse()
        .boxed()
    }

    /// Every segment id in the bucket, ascending, across all listing pages. Keys under
    /// `segments/` that are not segment data keys (sidecars, stray files) are skipped.
    /// Collects them all (8 bytes each): [`Self::files_in_order`] streams.
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
        let mut files = Vec::new();
        let mut pages = std::pin::pin!(self.file_pages());
        while let Some(page) = pages.next().await {
            files.extend(page?.into_iter().map(|listed| (listed.id, listed.file)));
        }
        // Keys of other hex lengths or cases do not sort by id.
        files.sort_unstable();
        files.dedup();
        Ok(files)
    }

    /// One HeadBucket: is the bucket there and may we use it.
    pub async fn health_check(&self) -> StoreResult<()> {
        self.store.head_bucket().await
    }
}

/// Lists `segments/segment-*` page by page into `pages` until the last page, a failure, or
/// the receiver is gone.
async fn list_pages(
    store: Arc<dyn ObjectStore>,
    pages: tokio::sync::mpsc::Sender<StoreResult<Vec<ListedFile>>>,
) {
    let mut request = ListRequest {
        prefix: format!("{SEGMENTS_PREFIX}segment-"),
        ..Default::default()
    };
    loop {
        let (page, next) = match store.list(request.clone()).await {
            Ok(page) => (Ok(listed_files(page.objects)), page.next_continuation_token),
            Err(error) => (Err(error), None),
        };
        if pages.send(page).await.is_err() {
            return;
        }
        match next {
            Some(token) => request.continuation_token = Some(token),
            None => return,
        }
    }
}

fn listed_files(objects: Vec<crate::store::ObjectSummary>) -> Vec<ListedFile> {
    objects
        .into_iter()
        .filter_map(|object| {
            let name = object.key.strip_prefix(SEGMENTS_PREFIX)?;
            let (id, file) = parse_file_name(name)?;
            Some(ListedFile {
                id,
                file,
                name: name.to_string(),
                size: object.size,
                etag: object.etag,
                last_modified: object.last_modified,
            })
        })
        .collect()
}

/// The state of [`SegmentStore::files_in_order`]: the pages, and the keys spelled otherwise
/// held for the end (`None` once they were handed out or the listing failed).
struct InOrder {
    pages: BoxStream<'static, StoreResult<Vec<ListedFile>>>,
    strays: Option<BTreeMap<(u64, SegmentFile), ListedFile>>,
}

/// Aborts the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn optional<T>(result: StoreResult<T>) -> StoreResult<Option<T>> {
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

    #[tokio::test]
    async fn files_stream_page_by_page_in_id_order_and_other_spellings_last() {
        let memory = Arc::new(MemoryStore::new());
        let segments = SegmentStore::new(memory.clone());
        // 2,400 keys: three listing pages.
        for id in (0..1200).rev() {
            for key in [segment_key(id), meta_key(id)] {
                memory
                    .put(&key, Bytes::from_static(b"x"), PutOptions::default())
                    .await
                    .unwrap();
            }
        }
        for stray in ["segment-2A.bin", "segment-5.meta.json", "segment-7f.bin"] {
            let key = format!("{SEGMENTS_PREFIX}{stray}");
            memory
                .put(&key, Bytes::new(), PutOptions::default())
                .await
                .unwrap();
        }
        let pages: Vec<Vec<ListedFile>> = segments
            .files_in_order()
            .map(|page| page.unwrap())
            .collect()
            .await;
        assert!(pages.len() >= 4, "{} pages", pages.len());
        let files: Vec<(u64, SegmentFile)> = pages
            .into_iter()
            .flatten()
            .map(|listed| (listed.id, listed.file))
            .collect();
        assert_eq!(files.len(), 2403);
        assert!(files[..2400].windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            files[2400..],
            [
                (5, SegmentFile::Meta),
                (0x2a, SegmentFile::Data),
                (0x7f, SegmentFile::Data)
            ]
        );
        let listed: Vec<ListedFile> = segments
            .file_pages()
            .map(|page| page.unwrap())
            .concat()
            .await;
        assert_eq!(listed.len(), 2403);
        assert_eq!(listed[0].name, "segment-0000000000000000.bin");
        assert_eq!(listed[0].size, 1);
        let stored = memory.object(&segment_key(0)).unwrap();
        assert_eq!(listed[0].etag, stored.etag);
        assert_eq!(listed[0].last_modified, stored.last_modified);

        // A merge may ask again after the end: the streams stay ended.
        let mut in_order = segments.files_in_order();
        while in_order.next().await.is_some() {}
        assert!(in_order.next().await.is_none());
        let mut pages = std::pin::pin!(segments.file_pages());
        while pages.next().await.is_some() {}
        assert!(pages.next().await.is_none());
    }
}
