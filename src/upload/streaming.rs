//! A new file written front to back, streamed into S3 as it is written.
//!
//! Writes fill a buffer of one part; a full buffer becomes a part as soon as the next byte
//! arrives (so a file of exactly one part is still a single PutObject), and parts run in parallel
//! on a [`MultipartSession`](super::session). A file that never fills a part is one PutObject at
//! `finish`.
//!
//! The buffer counts in the mount's write budget: it takes its share before it grows, and the
//! share goes with it when it becomes a part. It grows geometrically up to an eighth of a part
//! (1 MiB with 8 MiB parts) so that small files stay small, then takes a whole part at once: a
//! writer that has to wait for memory keeps at most that eighth outside the budget
//! (see [`WriteBudget::grow`](super::WriteBudget::grow)).

use std::sync::Arc;

use super::budget::{Reservation, UploadSlot};
use super::buffers::PartBuffer;
use super::part_size::{S3_MAX_OBJECT_SIZE, part_size_for};
use super::session::{MultipartSession, put_object};
use super::{UploadConfig, UploadError};
use crate::store::{ObjectStore, PutOptions, PutOutput};

/// A sequential upload of one object. Finish it with [`finish`](Self::finish) (the object exists
/// when it returns `Ok`) or [`abort`](Self::abort). Dropping it unfinished spawns the abort of its
/// multipart upload, if one was created, on the runtime that created it.
pub struct StreamingUpload {
    /// Boxed: the handle moves around (into fs state, back out of `into_unsent`) and stays small.
    session: Box<MultipartSession>,
    base_part_size: u64,
    /// The part being filled; never longer than the current part size. A whole part's buffer
    /// comes from the budget's pool and goes back there once its request ends.
    buffer: PartBuffer,
    /// The buffer's share of the mount's write budget: its capacity.
    buffer_memory: Reservation,
    written: u64,
    /// Counted among the uploads sharing the budget while this one lives; it sizes each buffer.
    slot: Option<UploadSlot>,
    /// The size of the buffer being filled, fixed when it started.
    buffer_part_size: usize,
}

impl StreamingUpload {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        key: String,
        options: PutOptions,
        config: UploadConfig,
    ) -> Self {
        StreamingUpload {
            session: Box::new(MultipartSession::new(store, key, options, &config)),
            base_part_size: config.part_size(),
            buffer: PartBuffer::default(),
            buffer_memory: Reservation::default(),
            written: 0,
            slot: config.budget().map(|budget| budget.enter_upload()),
            buffer_part_size: 0,
        }
    }

    pub fn key(&self) -> &str {
        self.session.key()
    }

    /// The metadata the object will be created with.
    pub fn metadata(&self) -> &crate::store::UserMetadata {
        &self.session.options().metadata
    }

    /// Makes the upload's object `key` instead (a file renamed while being written). Only
    /// before anything left for S3: returns false once the multipart upload exists, and the
    /// caller moves the completed object instead.
    pub fn retarget(&mut self, key: &str) -> bool {
        self.session.retarget(key)
    }

    /// Bytes accepted so far: the offset the next write must start at.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Appends `data`, which must start where the previous write ended. Returns at once with the
    /// upload's error if a part has failed; waits while the maximum of parts is in flight.
    pub async fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), UploadError> {
        self.session.check()?;
        if offset != self.written {
            return Err(UploadError::OutOfOrder {
                expected: self.written,
                got: offset,
            });
        }
        let end = self.written.saturating_add(data.len() as u64);
        if end > S3_MAX_OBJECT_SIZE {
            return Err(UploadError::TooLarge { size: end });
        }
        let mut rest = data;
        while !rest.is_empty() {
            if self.buffer.is_empty() {
                self.buffer_part_size = self.current_part_size();
            }
            let part_size = self.buffer_part_size;
            if self.buffer.len() == part_size {
                self.send_buffer().await?;
                continue;
            }
            let take = (part_size - self.buffer.len()).min(rest.len());
            self.grow_buffer(take, part_size).await;
            self.buffer.extend_from_slice(&rest[..take]);
            self.written += take as u64;
            rest = &rest[take..];
        }
        Ok(())
    }

    /// Makes the object visible: one PutObject if no part was sent (an empty file becomes an
    /// empty object), else the last part and CompleteMultipartUpload. On any error the multipart
    /// upload is aborted and nothing appears at the key.
    pub async fn finish(mut self) -> Result<PutOutput, UploadError> {
        let result = self.finish_or_fail().await;
        if result.is_err() {
            self.session.abort().await;
        }
        result
    }

    /// The bytes written so far, if none has left for S3 yet (the file is still within its first
    /// part): lets the fs layer switch a file to staging when a write is not sequential. Once a
    /// part is sent (or the upload failed), gives the upload back.
    pub fn into_unsent(self) -> Result<Vec<u8>, StreamingUpload> {
        let all_buffered = self.buffer.len() as u64 == self.written;
        if self.session.has_parts() || !all_buffered {
            return Err(self);
        }
        Ok(self.buffer.into_vec())
    }

    /// Drops the data and aborts the multipart upload, waiting for the abort.
    pub async fn abort(mut self) {
        self.session.abort().await;
    }

    async fn finish_or_fail(&mut self) -> Result<PutOutput, UploadError> {
        self.session.check()?;
        if !self.session.has_parts() {
            let body = std::mem::take(&mut self.buffer).into_bytes();
            let options = self.session.options().clone();
            return put_object(self.session.store(), self.session.key(), body, options).await;
        }
        if !self.buffer.is_empty() {
            self.send_buffer().await?;
        }
        self.session.complete().await
    }

    async fn send_buffer(&mut self) -> Result<(), UploadError> {
        let body = std::mem::take(&mut self.buffer).into_bytes();
        let memory = std::mem::take(&mut self.buffer_memory);
        self.session.send_part(body, memory).await
    }

    /// The size of a buffer that starts now: smaller while many uploads share the budget.
    fn current_part_size(&self) -> usize {
        let base = match &self.slot {
            Some(slot) => slot.part_size(self.base_part_size),
            None => self.base_part_size,
        };
        let size = part_size_for(self.session.next_part_number(), base);
        usize::try_from(size).unwrap_or(usize::MAX)
    }

    /// Grows the buffer, after taking its share of the budget, geometrically up to an eighth of
    /// a part, then to the whole part at once, never past it: so it never holds more than the
    /// memory bound counts, no byte is copied by a reallocation past that eighth, and small
    /// files stay small. Once a part has gone the file is large: the next buffer takes the
    /// whole part from the start.
    async fn grow_buffer(&mut self, additional: usize, part_size: usize) {
        let needed = self.buffer.len() + additional;
        if needed <= self.buffer.capacity() {
            return;
        }
        let small = part_size / 8;
        let target = if self.session.has_parts() || needed > small {
            part_size
        } else {
            needed.max(self.buffer.capacity() * 2).min(small)
        };
        self.session
            .grow(&mut self.buffer_memory, target as u64, self.slot.as_ref())
            .await;
        if let (true, Some(buffers)) = (target == part_size, self.session.buffers()) {
            let mut whole = buffers.take(part_size);
            whole.extend_from_slice(&self.buffer);
            self.buffer = whole;
            return;
        }
        let filled = self.buffer.len();
        self.buffer.reserve_exact(target - filled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::UserMetadata;
    use crate::store::faulty::{FaultyStore, Op, injected_error};
    use crate::store::memory::MemoryStore;
    use crate::upload::StoreOperation;
    use crate::upload::session::abort_failures;
    use proptest::prelude::*;

    const PART: u64 = 1024;

    type Store = FaultyStore<MemoryStore>;

    fn store(min_part_size: u64) -> Arc<Store> {
        Arc::new(FaultyStore::new(MemoryStore::with_min_part_size(
            min_part_size,
        )))
    }

    fn upload(store: &Arc<Store>, key: &str, max_in_flight: usize) -> StreamingUpload {
        let config = UploadConfig::with_small_parts(PART, max_in_flight);
        StreamingUpload::new(
            store.clone(),
            key.to_string(),
            PutOptions::default(),
            config,
        )
    }

    /// Calls of Put, CreateMultipart, UploadPart and CompleteMultipart so far.
    fn upload_calls(store: &Store) -> (u32, u32, u32, u32) {
        let calls = |op| store.calls(op);
        (
            calls(Op::Put),
            calls(Op::CreateMultipart),
            calls(Op::UploadPart),
            calls(Op::CompleteMultipart),
        )
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// Writes `data` in chunks of `chunk` bytes, stopping at the first error.
    async fn write_all(
        upload: &mut StreamingUpload,
        data: &[u8],
        chunk: usize,
    ) -> Result<(), UploadError> {
        for (i, piece) in data.chunks(chunk).enumerate() {
            upload.write((i * chunk) as u64, piece).await?;
        }
        Ok(())
    }

    fn is_part_failure(error: &UploadError, part_number: u32) -> bool {
        error.failed_operation() == Some(StoreOperation::UploadPart { part_number })
    }

    #[tokio::test]
    async fn small_file_is_one_put_and_no_multipart_call() {
        let store = store(PART);
        let mut metadata = UserMetadata::new();
        metadata.insert("owner".into(), "ledger".into());
        let options = PutOptions {
            metadata: metadata.clone(),
            content_type: Some("a/b".into()),
            ..Default::default()
        };
        let config = UploadConfig::with_small_parts(PART, 4);
        let mut upload = StreamingUpload::new(store.clone(), "small".into(), options, config);
        let data = pattern(700);
        write_all(&mut upload, &data, 100).await.unwrap();
        assert_eq!(upload.bytes_written(), 700);
        let output = upload.finish().await.unwrap();

        let object = store.inner().object("small").unwrap();
        assert_eq!(object.data, data);
        assert_eq!(object.etag, output.etag);
        assert_eq!(object.metadata, metadata);
        assert_eq!(object.content_type.as_deref(), Some("a/b"));
        assert_eq!(upload_calls(&store), (1, 0, 0, 0));
    }

    #[tokio::test]
    async fn a_file_of_exactly_one_part_is_still_one_put() {
        let store = store(PART);
        let mut upload = upload(&store, "one-part", 4);
        let data = pattern(PART as usize);
        write_all(&mut upload, &data, 256).await.unwrap();
        upload.finish().await.unwrap();
        assert_eq!(store.inner().object("one-part").unwrap().data, data);
        let calls = |op| store.calls(op);
        assert_eq!((calls(Op::Put), calls(Op::CreateMultipart)), (1, 0));
    }

    #[tokio::test]
    async fn empty_file_becomes_an_empty_object() {
        let store = store(PART);
        upload(&store, "empty", 4).finish().await.unwrap();
        assert!(store.inner().object("empty").unwrap().data.is_empty());
        let calls = |op| store.calls(op);
        assert_eq!((calls(Op::Put), calls(Op::CreateMultipart)), (1, 0));
    }

    #[tokio::test]
    async fn large_file_streams_as_parts() {
        let store = store(PART);
        let mut upload = upload(&store, "large", 4);
        let data = pattern(10 * PART as usize);
        write_all(&mut upload, &data, 333).await.unwrap();
        let output = upload.finish().await.unwrap();

        let object = store.inner().object("large").unwrap();
        assert_eq!(object.data, data);
        assert!(output.etag.ends_with("-10\""), "{}", output.etag);
        assert_eq!(upload_calls(&store), (0, 1, 10, 1));
        assert_eq!(store.inner().pending_uploads(), 0);
    }

    #[tokio::test]
    async fn a_short_last_part_is_sent_at_finish() {
        let store = store(PART);
        let mut upload = upload(&store, "ragged", 2);
        let data = pattern(3 * PART as usize + 17);
        write_all(&mut upload, &data, 1000).await.unwrap();
        upload.finish().await.unwrap();
        assert_eq!(store.inner().object("ragged").unwrap().data, data);
        assert_eq!(store.calls(Op::UploadPart), 4);
    }

    #[tokio::test]
    async fn out_of_order_writes_are_refused_and_harmless() {
        let store = store(PART);
        let mut upload = upload(&store, "seq", 4);
        upload.write(0, b"0123456789").await.unwrap();
        for offset in [5, 11, 0] {
            match upload.write(offset, b"x").await {
                Err(UploadError::OutOfOrder { expected: 10, got }) => assert_eq!(got, offset),
                other => panic!("write at {offset}: {other:?}"),
            }
        }
        upload.write(10, b"ab").await.unwrap();
        upload.finish().await.unwrap();
        assert_eq!(
            store.inner().object("seq").unwrap().data,
            &b"0123456789ab"[..]
        );
    }

    #[tokio::test]
    async fn a_failed_part_aborts_the_upload_and_leaves_no_object() {
        let store = store(PART);
        store.fail_part(3, injected_error);
        let mut upload = upload(&store, "broken", 4);
        let data = pattern(10 * PART as usize);
        let written = write_all(&mut upload, &data, 512).await;
        let finished = upload.finish().await;

        let error = written.err().or(finished.err()).unwrap();
        assert!(is_part_failure(&error, 3), "{error}");
        assert!(error.to_string().contains("UploadPart 3"), "{error}");
        assert!(error.store_error().is_some());
        assert_eq!(store.inner().pending_uploads(), 0);
        assert!(store.inner().object("broken").is_none());
        assert_eq!(store.calls(Op::AbortMultipart), 1);
    }

    #[tokio::test]
    async fn after_a_part_fails_every_write_fails_at_once() {
        let store = store(PART);
        store.fail_part(1, injected_error);
        let mut upload = upload(&store, "sticky", 1);
        let data = pattern(2 * PART as usize);
        upload.write(0, &data).await.unwrap();
        // Sending part 2 waits for part 1's slot, and so sees part 1 fail.
        let first = upload.write(data.len() as u64, b"x").await.unwrap_err();
        assert!(is_part_failure(&first, 1), "{first}");

        let parts_before = store.calls(Op::UploadPart);
        let again = upload.write(data.len() as u64, b"x").await.unwrap_err();
        assert!(is_part_failure(&again, 1), "{again}");
        let wrong_offset = upload.write(0, b"x").await.unwrap_err();
        assert!(is_part_failure(&wrong_offset, 1), "{wrong_offset}");
        assert_eq!(store.calls(Op::UploadPart), parts_before);

        let finished = upload.finish().await.unwrap_err();
        assert!(is_part_failure(&finished, 1), "{finished}");
        assert_eq!(store.inner().pending_uploads(), 0);
        assert!(store.inner().object("sticky").is_none());
    }

    #[tokio::test]
    async fn unsent_bytes_can_be_taken_back_until_a_part_leaves() {
        let store = store(PART);
        let mut upload = upload(&store, "unsent", 4);
        let data = pattern(PART as usize);
        upload.write(0, &data[..100]).await.unwrap();
        upload.write(100, &data[100..]).await.unwrap();
        let Ok(unsent) = upload.into_unsent() else {
            panic!("nothing was sent")
        };
        assert_eq!(unsent, data);
        assert_eq!(store.calls(Op::CreateMultipart), 0);
    }

    #[tokio::test]
    async fn sent_bytes_cannot_be_taken_back() {
        let store = store(PART);
        let mut upload = upload(&store, "sent", 4);
        let data = pattern(PART as usize + 1);
        upload.write(0, &data).await.unwrap();
        let Err(upload) = upload.into_unsent() else {
            panic!("a part was sent")
        };
        assert_eq!(upload.bytes_written(), data.len() as u64);
        upload.finish().await.unwrap();
        assert_eq!(store.inner().object("sent").unwrap().data, data);
        assert_eq!(store.calls(Op::CreateMultipart), 1);
    }

    #[tokio::test]
    async fn bytes_lost_to_a_failed_create_are_not_handed_back() {
        let store = store(PART);
        store.fail_always(Op::CreateMultipart, injected_error);
        let mut upload = upload(&store, "lost", 4);
        let data = pattern(PART as usize + 1);
        assert!(upload.write(0, &data).await.is_err());
        assert!(upload.into_unsent().is_err());
    }

    #[tokio::test]
    async fn a_failed_complete_aborts_the_upload() {
        let store = store(PART);
        store.fail_always(Op::CompleteMultipart, injected_error);
        let mut upload = upload(&store, "incomplete", 4);
        write_all(&mut upload, &pattern(5 * PART as usize), 700)
            .await
            .unwrap();
        let error = upload.finish().await.unwrap_err();
        assert_eq!(
            error.failed_operation(),
            Some(StoreOperation::CompleteMultipartUpload)
        );
        assert_eq!(store.inner().pending_uploads(), 0);
        assert!(store.inner().object("incomplete").is_none());
    }

    #[tokio::test]
    async fn a_failed_create_is_sticky_and_leaves_nothing() {
        let store = store(PART);
        store.fail_always(Op::CreateMultipart, injected_error);
        let mut upload = upload(&store, "uncreated", 4);
        let error = write_all(&mut upload, &pattern(3 * PART as usize), 700)
            .await
            .unwrap_err();
        assert_eq!(
            error.failed_operation(),
            Some(StoreOperation::CreateMultipartUpload)
        );
        let finished = upload.finish().await.unwrap_err();
        assert_eq!(
            finished.failed_operation(),
            Some(StoreOperation::CreateMultipartUpload)
        );
        assert_eq!(store.calls(Op::UploadPart), 0);
        assert!(store.inner().object("uncreated").is_none());
    }

    #[tokio::test]
    async fn a_failed_put_reports_the_put() {
        let store = store(PART);
        store.fail_always(Op::Put, injected_error);
        let mut upload = upload(&store, "unput", 4);
        upload.write(0, b"hello").await.unwrap();
        let error = upload.finish().await.unwrap_err();
        assert_eq!(error.failed_operation(), Some(StoreOperation::PutObject));
        assert!(store.inner().object("unput").is_none());
    }

    #[tokio::test]
    async fn a_failed_abort_is_counted_and_the_cause_is_returned() {
        let store = store(PART);
        store.fail_part(2, injected_error);
        store.fail_always(Op::AbortMultipart, injected_error);
        let before = abort_failures();
        let mut upload = upload(&store, "orphan", 4);
        let written = write_all(&mut upload, &pattern(4 * PART as usize), 1000).await;
        let finished = upload.finish().await;
        let error = written.err().or(finished.err()).unwrap();
        assert!(is_part_failure(&error, 2), "{error}");
        assert!(abort_failures() > before);
        assert!(store.inner().object("orphan").is_none());
    }

    /// A server gone for good holds the abort through all its retries: the writer gets its
    /// error after [`INLINE_ABORT_WAIT`], and the abort goes on in the background.
    #[tokio::test(start_paused = true)]
    async fn a_failed_upload_waits_for_its_abort_only_so_long() {
        let store = store(PART);
        store.fail_part(2, injected_error);
        store.hold(Op::AbortMultipart);
        let mut upload = upload(&store, "abort-held", 4);
        let written = write_all(&mut upload, &pattern(4 * PART as usize), 1000).await;
        let started = tokio::time::Instant::now();
        // Without the bound the held abort would never let finish() return (virtual time).
        let finished = tokio::time::timeout(std::time::Duration::from_secs(600), upload.finish())
            .await
            .expect("finish() waited for the abort without bound");
        let error = written.err().or(finished.err()).unwrap();
        assert!(is_part_failure(&error, 2), "{error}");
        assert_eq!(started.elapsed(), crate::upload::session::INLINE_ABORT_WAIT);
        let pending = crate::upload::pending_aborts();
        assert!(
            pending.iter().any(|(key, _)| key == "abort-held"),
            "{pending:?}"
        );
        assert_eq!(store.calls(Op::AbortMultipart), 1);
    }

    #[tokio::test]
    async fn explicit_abort_leaves_nothing() {
        let store = store(PART);
        let mut upload = upload(&store, "abandoned", 4);
        write_all(&mut upload, &pattern(5 * PART as usize), 1000)
            .await
            .unwrap();
        upload.abort().await;
        assert_eq!(store.inner().pending_uploads(), 0);
        assert!(store.inner().object("abandoned").is_none());
        assert_eq!(store.calls(Op::AbortMultipart), 1);
    }

    #[tokio::test]
    async fn dropping_an_unfinished_upload_aborts_it() {
        let store = store(PART);
        let mut upload = upload(&store, "dropped", 4);
        write_all(&mut upload, &pattern(5 * PART as usize), 1000)
            .await
            .unwrap();
        assert_eq!(store.inner().pending_uploads(), 1);
        drop(upload);
        // The abort runs as a spawned task; give it the runtime (bounded wait, not a timing test).
        for _ in 0..1000 {
            if store.inner().pending_uploads() == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(store.inner().pending_uploads(), 0);
        assert!(store.inner().object("dropped").is_none());
    }

    #[tokio::test]
    async fn dropping_a_small_unfinished_upload_calls_nothing() {
        let store = store(PART);
        let mut upload = upload(&store, "tiny", 4);
        upload.write(0, b"abc").await.unwrap();
        drop(upload);
        tokio::task::yield_now().await;
        let calls = |op| store.calls(op);
        assert_eq!(
            (
                calls(Op::Put),
                calls(Op::CreateMultipart),
                calls(Op::AbortMultipart)
            ),
            (0, 0, 0)
        );
    }

    #[tokio::test]
    async fn parts_in_flight_never_exceed_the_limit() {
        for limit in [1, 2, 3] {
            let store = store(PART);
            // Parts take a while, as over a network, so the limit is actually reached.
            store.delay(Op::UploadPart, std::time::Duration::from_millis(5));
            let mut upload = upload(&store, "bounded", limit);
            let data = pattern(20 * PART as usize);
            write_all(&mut upload, &data, 4096).await.unwrap();
            upload.finish().await.unwrap();
            assert_eq!(store.inner().object("bounded").unwrap().data, data);
            let most = store.max_in_flight(Op::UploadPart) as usize;
            assert!(
                most <= limit,
                "{most} parts in flight with a limit of {limit}"
            );
            assert!(most >= limit.min(2), "parts never overlapped: {most}");
        }
    }

    /// A lone upload on a budget the size of the default (16 parts) sends all of it but the
    /// part it fills: 15 at once, the default cap, and never more.
    #[tokio::test]
    async fn a_lone_upload_uses_the_whole_default_budget() {
        let store = store(PART);
        store.delay(Op::UploadPart, std::time::Duration::from_millis(50));
        let lone = UploadConfig::DEFAULT_MAX_PARTS_IN_FLIGHT;
        let budget = crate::upload::WriteBudget::new((lone as u64 + 1) * PART);
        let config = UploadConfig::with_small_parts(PART, lone).with_budget(Some(budget.clone()));
        let mut upload =
            StreamingUpload::new(store.clone(), "lone".into(), PutOptions::default(), config);
        let data = pattern(40 * PART as usize);
        write_all(&mut upload, &data, 4096).await.unwrap();
        upload.finish().await.unwrap();
        assert_eq!(store.inner().object("lone").unwrap().data, data);
        assert_eq!(store.max_in_flight(Op::UploadPart) as usize, lone);
        assert_eq!(budget.available_bytes(), budget.total_bytes());
    }

    fn budgeted(
        store: &Arc<Store>,
        key: &str,
        part: u64,
        budget: &Arc<crate::upload::WriteBudget>,
    ) -> StreamingUpload {
        let config = UploadConfig::with_small_parts(part, 4).with_budget(Some(budget.clone()));
        StreamingUpload::new(store.clone(), key.into(), PutOptions::default(), config)
    }

    /// Uploads sharing a write budget hold no more buffers and parts in flight together than
    /// it allows, and all of them still finish whole.
    #[tokio::test]
    async fn uploads_sharing_a_budget_wait_for_memory() {
        for budget_parts in [1u64, 3] {
            let store = store(PART);
            store.delay(Op::UploadPart, std::time::Duration::from_millis(5));
            let budget = crate::upload::WriteBudget::new(budget_parts * PART);
            let writers = (0..4).map(|i| {
                let mut upload = budgeted(&store, &format!("w{i}"), PART, &budget);
                async move {
                    let data = pattern(12 * PART as usize);
                    write_all(&mut upload, &data, 4096).await.unwrap();
                    upload.finish().await.unwrap();
                    data
                }
            });
            let written = futures::future::join_all(writers).await;
            for (i, data) in written.iter().enumerate() {
                assert_eq!(&store.inner().object(&format!("w{i}")).unwrap().data, data);
            }
            let most = u64::from(store.max_in_flight(Op::UploadPart));
            assert!(
                most <= budget_parts,
                "{most} parts in flight, budget {budget_parts}"
            );
            assert_eq!(budget.available_bytes(), budget.total_bytes());
        }
    }

    /// A whole part's buffer comes from the budget's pool and goes back there once the store
    /// is done with its body, so a second upload fills the first's buffers, not new ones.
    #[tokio::test]
    async fn part_buffers_are_reused_across_uploads() {
        let store = store(PART);
        let budget = crate::upload::WriteBudget::new(8 * PART);
        for key in ["first", "second"] {
            let mut upload = budgeted(&store, key, PART, &budget);
            let data = pattern(4 * PART as usize + 10);
            write_all(&mut upload, &data, 100).await.unwrap();
            upload.finish().await.unwrap();
            assert_eq!(store.inner().object(key).unwrap().data, data);
        }
        let counts = budget.buffers().counts();
        assert_eq!((counts.taken, counts.reused), (10, 5), "{counts:?}");
        assert_eq!(counts.idle_bytes, 5 * PART);
    }

    /// The fairness the shared budget needs: a writer waiting on a full budget does not hold
    /// up the close of a writer already uploading, which needs no more memory than it holds.
    /// Once that close is done its memory goes to the one waiting. Both a close that is one
    /// PutObject and one that sends the last part and completes.
    #[tokio::test]
    async fn a_writer_waiting_for_memory_does_not_block_another_close() {
        const BIG: u64 = 64 * 1024;
        for (case, length) in [("put", BIG), ("multipart", 2 * BIG + 100)] {
            let store = store(BIG);
            let budget = crate::upload::WriteBudget::new(BIG + BIG / 8);
            let first_key = format!("{case}-first");
            let data = pattern(length as usize);
            let mut first = budgeted(&store, &first_key, BIG, &budget);
            let mut second = budgeted(&store, &format!("{case}-second"), BIG, &budget);
            let run = async {
                write_all(&mut first, &data, BIG as usize).await.unwrap();
                let waiting = tokio::spawn(async move {
                    second.write(0, &pattern(BIG as usize)).await.unwrap();
                    second.finish().await.unwrap()
                });
                while budget.waiting() == 0 {
                    tokio::task::yield_now().await;
                }
                assert!(
                    budget.available_bytes() < BIG,
                    "{case}: the budget is not full"
                );
                first.finish().await.unwrap();
                assert_eq!(store.inner().object(&first_key).unwrap().data, data);
                waiting.await.unwrap();
            };
            tokio::time::timeout(std::time::Duration::from_secs(10), run)
                .await
                .unwrap_or_else(|_| panic!("{case}: the close waited behind the waiting writer"));
            assert_eq!(
                store
                    .inner()
                    .object(&format!("{case}-second"))
                    .unwrap()
                    .data,
                pattern(BIG as usize)
            );
            assert_eq!(budget.available_bytes(), budget.total_bytes());
        }
    }

    /// Writers still in their first part, each holding a small buffer of a budget too small
    /// for all of them to grow: each gives its share back while it waits for a whole part,
    /// so none of them waits for ever, and the buffers never hold more than the budget.
    #[tokio::test]
    async fn writers_growing_their_first_buffer_do_not_stall_each_other() {
        const BIG: u64 = 64 * 1024;
        let store = store(BIG);
        let budget = crate::upload::WriteBudget::new(BIG);
        let writers = (0..8).map(|i| {
            let mut upload = budgeted(&store, &format!("g{i}"), BIG, &budget);
            async move {
                let data = pattern(3 * BIG as usize + i);
                for (n, piece) in data.chunks(3000).enumerate() {
                    upload.write((n * 3000) as u64, piece).await.unwrap();
                    tokio::task::yield_now().await;
                }
                upload.finish().await.unwrap();
                data
            }
        });
        let all = futures::future::join_all(writers);
        let written = tokio::time::timeout(std::time::Duration::from_secs(30), all)
            .await
            .expect("writers growing their buffers stalled each other");
        for (i, data) in written.iter().enumerate() {
            assert_eq!(&store.inner().object(&format!("g{i}")).unwrap().data, data);
        }
        assert_eq!(store.max_in_flight(Op::UploadPart), 1);
        assert_eq!(budget.available_bytes(), budget.total_bytes());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn any_split_of_writes_gives_the_same_object(
            len in 0usize..6000,
            chunks in proptest::collection::vec(1usize..1500, 1..20),
            part in 64u64..700,
            limit in 1usize..4,
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let data = pattern(len);
            let object = runtime.block_on(async {
                let store = store(part);
                let config = UploadConfig::with_small_parts(part, limit);
                let mut upload =
                    StreamingUpload::new(store.clone(), "p".into(), PutOptions::default(), config);
                let mut offset = 0;
                for size in chunks.iter().cycle() {
                    if offset >= len {
                        break;
                    }
                    let end = (offset + size).min(len);
                    upload.write(offset as u64, &data[offset..end]).await.unwrap();
                    offset = end;
                }
                upload.finish().await.unwrap();
                assert_eq!(store.inner().pending_uploads(), 0);
                store.inner().object("p").unwrap().data
            });
            prop_assert_eq!(object, data);
        }
    }
}
