//! A file edited in place: random writes, appends, overwrites of an existing object, truncation.
//!
//! S3 cannot change part of an object, so the whole file lives in a local staging file (seeded
//! from the object when it exists) and is uploaded whole on close or fsync. The staging file is
//! anonymous: created unlinked in the staging directory (O_TMPFILE where supported, else unlinked
//! right after creation), so it disappears when dropped and even when the process dies. All file
//! I/O runs on tokio's blocking pool, never on the async workers.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;

use super::budget;
use super::part_size::{S3_MAX_OBJECT_SIZE, part_size_for};
use super::session::{MultipartSession, put_object};
use super::{StoreOperation, UploadConfig, UploadError};
use crate::store::{GetRequest, ObjectStore, PutOptions, PutOutput};

/// Downloaded bytes are written to the staging file in batches of this size.
const DOWNLOAD_BATCH: usize = 1024 * 1024;

pub struct StagedFile {
    file: Arc<File>,
    size: u64,
    dirty: bool,
}

impl StagedFile {
    /// An empty file, dirty: S3 does not hold it (or holds other content, for O_TRUNC).
    pub async fn create_empty(staging_dir: &Path) -> Result<Self, UploadError> {
        let file = anonymous_file(staging_dir).await?;
        Ok(StagedFile {
            file,
            size: 0,
            dirty: true,
        })
    }

    /// A clean copy of the object `key` as it is at `etag`: the download fails with
    /// PreconditionFailed if the object has changed since. Memory use is one batch, not the file.
    pub async fn from_object(
        store: &dyn ObjectStore,
        key: &str,
        etag: &str,
        size: u64,
        staging_dir: &Path,
    ) -> Result<Self, UploadError> {
        let file = anonymous_file(staging_dir).await?;
        let request = GetRequest {
            key: key.to_string(),
            range: None,
            if_match: Some(etag.to_string()),
        };
        let get_failed = |e| UploadError::store(StoreOperation::GetObject, key, e);
        let mut body = store.get(request).await.map_err(get_failed)?.body;
        let mut batch = Vec::with_capacity(DOWNLOAD_BATCH.min(size as usize));
        let mut written = 0u64;
        while let Some(chunk) = body.next().await {
            batch.extend_from_slice(&chunk.map_err(get_failed)?);
            if batch.len() >= DOWNLOAD_BATCH {
                written += write_batch(&file, written, &mut batch).await?;
            }
        }
        written += write_batch(&file, written, &mut batch).await?;
        if written != size {
            let key = key.to_string();
            return Err(UploadError::SizeMismatch {
                key,
                expected: size,
                actual: written,
            });
        }
        Ok(StagedFile {
            file,
            size,
            dirty: false,
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the content differs from what S3 last received from (or gave to) this file.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Writes `data` at `offset`, extending the file (with zeros in any gap) if needed.
    pub async fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), UploadError> {
        if data.is_empty() {
            return Ok(());
        }
        let end = offset.saturating_add(data.len() as u64);
        if end > S3_MAX_OBJECT_SIZE {
            return Err(UploadError::TooLarge { size: end });
        }
        let file = Arc::clone(&self.file);
        let data = data.to_vec();
        blocking(move || file.write_all_at(&data, offset)).await?;
        self.size = self.size.max(end);
        self.dirty = true;
        Ok(())
    }

    /// Up to `len` bytes from `offset`: fewer at the end of the file, none past it.
    pub async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes, UploadError> {
        let available = self.size.saturating_sub(offset);
        let len = len.min(usize::try_from(available).unwrap_or(usize::MAX));
        if len == 0 {
            return Ok(Bytes::new());
        }
        Ok(read_range(&self.file, offset, len).await?)
    }

    /// Truncates or extends (with zeros) to `size` bytes.
    pub async fn set_len(&mut self, size: u64) -> Result<(), UploadError> {
        if size > S3_MAX_OBJECT_SIZE {
            return Err(UploadError::TooLarge { size });
        }
        if size == self.size {
            return Ok(());
        }
        let file = Arc::clone(&self.file);
        blocking(move || file.set_len(size)).await?;
        self.size = size;
        self.dirty = true;
        Ok(())
    }

    /// Uploads the whole file to `key`: one PutObject up to one part, else a multipart upload
    /// read from the file part by part, so memory stays within `config.memory_bound`; each part
    /// takes its share of the mount's write budget before it is read. On success
    /// the file is clean; on failure the multipart upload is aborted and the key is untouched.
    pub async fn upload(
        &mut self,
        store: Arc<dyn ObjectStore>,
        key: &str,
        options: PutOptions,
        config: UploadConfig,
    ) -> Result<PutOutput, UploadError> {
        let base = config.part_size();
        let output = if self.size <= part_size_for(1, base) {
            // Held until the PutObject ends: the body is in memory that long.
            let _memory = budget::reserve(config.budget(), self.size).await;
            let body = self.read_at(0, self.size as usize).await?;
            put_object(store.as_ref(), key, body, options).await?
        } else {
            let mut session = MultipartSession::new(store, key.to_string(), options, &config);
            let result = self.upload_parts(&mut session, base).await;
            if result.is_err() {
                session.abort().await;
            }
            result?
        };
        self.dirty = false;
        Ok(output)
    }

    async fn upload_parts(
        &self,
        session: &mut MultipartSession,
        base: u64,
    ) -> Result<PutOutput, UploadError> {
        let mut offset = 0;
        while offset < self.size {
            let part_size = part_size_for(session.next_part_number(), base);
            let len = part_size.min(self.size - offset);
            let memory = session.reserve(len).await;
            let body = read_range(&self.file, offset, len as usize).await?;
            session.send_part(body, memory).await?;
            offset += len;
        }
        session.complete().await
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(io::Error::other)?
}

async fn anonymous_file(staging_dir: &Path) -> io::Result<Arc<File>> {
    let dir = PathBuf::from(staging_dir);
    Ok(Arc::new(
        blocking(move || tempfile::tempfile_in(dir)).await?,
    ))
}

async fn read_range(file: &Arc<File>, offset: u64, len: usize) -> io::Result<Bytes> {
    let file = Arc::clone(file);
    blocking(move || {
        let mut buffer = vec![0; len];
        file.read_exact_at(&mut buffer, offset)?;
        Ok(Bytes::from(buffer))
    })
    .await
}

/// Writes and empties `batch` at `offset`; returns how many bytes it wrote.
async fn write_batch(file: &Arc<File>, offset: u64, batch: &mut Vec<u8>) -> io::Result<u64> {
    if batch.is_empty() {
        return Ok(0);
    }
    let file = Arc::clone(file);
    let data = std::mem::take(batch);
    let len = data.len() as u64;
    let data = blocking(move || file.write_all_at(&data, offset).map(|()| data)).await?;
    // Reuse the allocation for the next batch.
    *batch = data;
    batch.clear();
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::faulty::{FaultyStore, Op as StoreOp, injected_error};
    use crate::store::memory::MemoryStore;
    use proptest::prelude::*;

    const PART: u64 = 512;

    type Store = FaultyStore<MemoryStore>;

    fn store(min_part_size: u64) -> Arc<Store> {
        Arc::new(FaultyStore::new(MemoryStore::with_min_part_size(
            min_part_size,
        )))
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
            .collect()
    }

    fn config(limit: usize) -> UploadConfig {
        UploadConfig::with_small_parts(PART, limit)
    }

    async fn seeded(store: &Arc<Store>, key: &str, data: &[u8], dir: &Path) -> StagedFile {
        let put = store
            .inner()
            .put(key, Bytes::copy_from_slice(data), PutOptions::default());
        let etag = put.await.unwrap().etag;
        StagedFile::from_object(store.as_ref(), key, &etag, data.len() as u64, dir)
            .await
            .unwrap()
    }

    async fn read_all(file: &StagedFile) -> Vec<u8> {
        file.read_at(0, file.size() as usize + 10)
            .await
            .unwrap()
            .to_vec()
    }

    /// Applies a write to a model of the file the way pwrite does.
    fn model_write(model: &mut Vec<u8>, offset: usize, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if model.len() < offset + data.len() {
            model.resize(offset + data.len(), 0);
        }
        model[offset..offset + data.len()].copy_from_slice(data);
    }

    #[tokio::test]
    async fn empty_file_uploads_an_empty_object() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(PART);
        let mut file = StagedFile::create_empty(dir.path()).await.unwrap();
        assert!(file.is_dirty());
        assert_eq!(file.size(), 0);
        file.upload(store.clone(), "new", PutOptions::default(), config(2))
            .await
            .unwrap();
        assert!(!file.is_dirty());
        assert!(store.inner().object("new").unwrap().data.is_empty());
        let calls = |op| store.calls(op);
        assert_eq!(
            (calls(StoreOp::Put), calls(StoreOp::CreateMultipart)),
            (1, 0)
        );
    }

    #[tokio::test]
    async fn a_seeded_file_reads_as_the_object_and_is_clean() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(PART);
        let data = pattern(3 * 1024 * 1024 + 5, 1);
        let file = seeded(&store, "seed", &data, dir.path()).await;
        assert!(!file.is_dirty());
        assert_eq!(file.size(), data.len() as u64);
        assert_eq!(read_all(&file).await, data);
        assert_eq!(file.read_at(10, 5).await.unwrap(), data[10..15]);
        assert!(file.read_at(data.len() as u64, 5).await.unwrap().is_empty());
        assert!(
            file.read_at(data.len() as u64 + 100, 5)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_changed_object_is_not_staged() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(PART);
        store
            .inner()
            .put("moved", Bytes::from_static(b"v1"), PutOptions::default())
            .await
            .unwrap();
        let stale = store.inner().head("moved").await.unwrap().etag;
        store
            .inner()
            .put("moved", Bytes::from_static(b"v2"), PutOptions::default())
            .await
            .unwrap();
        let error = StagedFile::from_object(store.as_ref(), "moved", &stale, 2, dir.path())
            .await
            .err()
            .unwrap();
        assert!(matches!(
            error.store_error(),
            Some(crate::store::StoreError::PreconditionFailed(_))
        ));
    }

    #[tokio::test]
    async fn a_wrong_size_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(PART);
        let etag = store
            .inner()
            .put("sized", Bytes::from_static(b"abc"), PutOptions::default())
            .await
            .unwrap()
            .etag;
        let error = StagedFile::from_object(store.as_ref(), "sized", &etag, 4, dir.path())
            .await
            .err()
            .unwrap();
        assert!(matches!(
            error,
            UploadError::SizeMismatch {
                expected: 4,
                actual: 3,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn edits_of_an_existing_object_upload_as_the_model() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(PART);
        let mut model = pattern(2000, 3);
        let mut file = seeded(&store, "edited", &model, dir.path()).await;

        for (offset, data) in [
            (100, pattern(50, 9)),
            (1990, pattern(30, 4)),
            (0, pattern(1, 8)),
        ] {
            file.write_at(offset as u64, &data).await.unwrap();
            model_write(&mut model, offset, &data);
        }
        file.set_len(1500).await.unwrap();
        model.truncate(1500);
        file.set_len(2600).await.unwrap();
        model.resize(2600, 0);
        file.write_at(3000, b"tail").await.unwrap();
        model_write(&mut model, 3000, b"tail");
        assert!(file.is_dirty());
        assert_eq!(read_all(&file).await, model);

        file.upload(store.clone(), "edited", PutOptions::default(), config(2))
            .await
            .unwrap();
        assert!(!file.is_dirty());
        assert_eq!(store.inner().object("edited").unwrap().data, model);
        let calls = |op| store.calls(op);
        assert_eq!(
            (
                calls(StoreOp::CreateMultipart),
                calls(StoreOp::UploadPart),
                calls(StoreOp::CompleteMultipart)
            ),
            (1, 6, 1)
        );
        assert_eq!(store.inner().pending_uploads(), 0);
    }

    #[tokio::test]
    async fn setting_the_same_length_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(PART);
        let mut file = seeded(&store, "same", b"abc", dir.path()).await;
        file.set_len(3).await.unwrap();
        file.write_at(1, b"").await.unwrap();
        assert!(!file.is_dirty());
    }

    #[tokio::test]
    async fn a_failed_upload_aborts_and_keeps_the_old_object() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(PART);
        let original = pattern(3000, 5);
        let mut file = seeded(&store, "kept", &original, dir.path()).await;
        file.write_at(0, b"changed").await.unwrap();
        store.fail_part(4, injected_error);
        let error = file
            .upload(store.clone(), "kept", PutOptions::default(), config(2))
            .await
            .unwrap_err();
        assert_eq!(
            error.failed_operation(),
            Some(StoreOperation::UploadPart { part_number: 4 })
        );
        assert!(file.is_dirty());
        assert_eq!(store.inner().pending_uploads(), 0);
        assert_eq!(store.inner().object("kept").unwrap().data, original);
    }

    #[tokio::test]
    async fn parts_in_flight_never_exceed_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(PART);
        // Parts take a while, as over a network, so the limit is actually reached.
        store.delay(StoreOp::UploadPart, std::time::Duration::from_millis(5));
        let data = pattern(20 * PART as usize, 6);
        let mut file = StagedFile::create_empty(dir.path()).await.unwrap();
        file.write_at(0, &data).await.unwrap();
        file.upload(store.clone(), "bounded", PutOptions::default(), config(3))
            .await
            .unwrap();
        assert_eq!(store.inner().object("bounded").unwrap().data, data);
        let most = store.max_in_flight(StoreOp::UploadPart);
        assert!(
            (2..=3).contains(&most),
            "{most} parts in flight with a limit of 3"
        );
    }

    /// Each part read from the staging file takes its share of the mount's budget first:
    /// with a budget of two parts, no more than two are in memory, and all of it comes back.
    #[tokio::test]
    async fn parts_read_for_upload_share_the_budget() {
        const BIG: u64 = 64 * 1024;
        let dir = tempfile::tempdir().unwrap();
        let store = store(BIG);
        store.delay(StoreOp::UploadPart, std::time::Duration::from_millis(5));
        let data = pattern(6 * BIG as usize + 7, 2);
        let mut file = StagedFile::create_empty(dir.path()).await.unwrap();
        file.write_at(0, &data).await.unwrap();
        let budget = crate::upload::WriteBudget::new(2 * BIG);
        let config = UploadConfig::with_small_parts(BIG, 4).with_budget(Some(budget.clone()));
        file.upload(store.clone(), "shared", PutOptions::default(), config)
            .await
            .unwrap();
        assert_eq!(store.inner().object("shared").unwrap().data, data);
        assert_eq!(store.max_in_flight(StoreOp::UploadPart), 2);
        assert_eq!(budget.available_bytes(), budget.total_bytes());
    }

    #[tokio::test]
    async fn sizes_past_s3s_limit_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = StagedFile::create_empty(dir.path()).await.unwrap();
        let too_large = S3_MAX_OBJECT_SIZE + 1;
        assert!(matches!(
            file.set_len(too_large).await,
            Err(UploadError::TooLarge { .. })
        ));
        assert!(matches!(
            file.write_at(S3_MAX_OBJECT_SIZE, b"x").await,
            Err(UploadError::TooLarge { size }) if size == too_large
        ));
        assert_eq!(file.size(), 0);
    }

    #[tokio::test]
    async fn the_staging_file_never_appears_in_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(PART);
        let file = seeded(&store, "anon", b"abc", dir.path()).await;
        let mut empty = StagedFile::create_empty(dir.path()).await.unwrap();
        empty.write_at(0, b"data").await.unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        drop((file, empty));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Write { offset: usize, data: Vec<u8> },
        SetLen(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0usize..4000, proptest::collection::vec(any::<u8>(), 0..700))
                .prop_map(|(offset, data)| Op::Write { offset, data }),
            1 => (0usize..4500).prop_map(Op::SetLen),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn random_edits_upload_as_the_model(
            initial in proptest::collection::vec(any::<u8>(), 0..3000),
            ops in proptest::collection::vec(op(), 0..12),
            limit in 1usize..4,
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let (uploaded, model) = runtime.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let store = store(PART);
                let mut file = seeded(&store, "p", &initial, dir.path()).await;
                let mut model = initial.clone();
                for op in &ops {
                    match op {
                        Op::Write { offset, data } => {
                            file.write_at(*offset as u64, data).await.unwrap();
                            model_write(&mut model, *offset, data);
                        }
                        Op::SetLen(size) => {
                            file.set_len(*size as u64).await.unwrap();
                            model.resize(*size, 0);
                        }
                    }
                    assert_eq!(file.size(), model.len() as u64);
                }
                assert_eq!(read_all(&file).await, model);
                file.upload(store.clone(), "p", PutOptions::default(), config(limit)).await.unwrap();
                assert_eq!(store.inner().pending_uploads(), 0);
                (store.inner().object("p").unwrap().data, model)
            });
            prop_assert_eq!(uploaded, model);
        }
    }
}
