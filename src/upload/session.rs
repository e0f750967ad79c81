//! One multipart upload in progress, shared by streaming and staged uploads: creates the upload
//! when the first part is ready, runs parts as tasks bounded by a semaphore, remembers the first
//! failure, completes with the parts sorted, and aborts (explicitly, or from `Drop`) so that no
//! upload is left behind on S3.

use std::collections::HashMap;
use std::mem;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::task::{self, JoinError, JoinSet};

use super::budget::{self, Reservation, UploadSlot};
use super::buffers::PartBuffers;
use super::part_size::{S3_MAX_OBJECT_SIZE, S3_MAX_PARTS};
use super::{StoreOperation, UploadConfig, UploadError, WriteBudget};
use crate::store::{CompletedPart, ObjectStore, PutOptions, PutOutput, StoreResult};

static ABORT_FAILURES: AtomicU64 = AtomicU64::new(0);

/// How many AbortMultipartUpload calls failed in this process. Each one leaves parts on S3 that
/// cost storage until a bucket lifecycle rule removes them.
pub fn abort_failures() -> u64 {
    ABORT_FAILURES.load(Ordering::Relaxed)
}

/// One PutObject, its failure tagged with the call and key.
pub(super) async fn put_object(
    store: &dyn ObjectStore,
    key: &str,
    body: Bytes,
    options: PutOptions,
) -> Result<PutOutput, UploadError> {
    store
        .put(key, body, options)
        .await
        .map_err(|e| UploadError::store(StoreOperation::PutObject, key, e))
}

/// An upload id and the runtime to abort it on if the owner is dropped.
struct Created {
    upload_id: String,
    /// Always set in practice (parts are tokio tasks); `None` only outside any tokio runtime.
    runtime: Option<Handle>,
}

pub(super) struct MultipartSession {
    store: Arc<dyn ObjectStore>,
    key: String,
    options: PutOptions,
    /// `Some` from CreateMultipartUpload until Complete or Abort: while set, dropping aborts.
    created: Option<Created>,
    in_flight: JoinSet<StoreResult<CompletedPart>>,
    part_of_task: HashMap<task::Id, u32>,
    /// A permit per part in flight; a part's body is freed when its task ends, with its permit.
    permits: Arc<Semaphore>,
    /// The mount's memory for buffers and parts in flight, shared with its other uploads.
    budget: Option<Arc<WriteBudget>>,
    completed: Vec<CompletedPart>,
    parts_sent: u32,
    bytes_sent: u64,
    /// The first failure: sticky, every later call returns it.
    failure: Option<UploadError>,
}

impl MultipartSession {
    pub(super) fn new(
        store: Arc<dyn ObjectStore>,
        key: String,
        options: PutOptions,
        config: &UploadConfig,
    ) -> Self {
        MultipartSession {
            store,
            key,
            options,
            created: None,
            in_flight: JoinSet::new(),
            part_of_task: HashMap::new(),
            permits: Arc::new(Semaphore::new(config.max_parts_in_flight())),
            budget: config.budget().cloned(),
            completed: Vec::new(),
            parts_sent: 0,
            bytes_sent: 0,
            failure: None,
        }
    }

    pub(super) fn store(&self) -> &dyn ObjectStore {
        self.store.as_ref()
    }

    pub(super) fn key(&self) -> &str {
        &self.key
    }

    pub(super) fn options(&self) -> &PutOptions {
        &self.options
    }

    /// Points the session at another key, possible only before CreateMultipartUpload (which
    /// names the key) was sent. The write there is not conditional: like the rename that moved
    /// it, it replaces what the new name holds.
    pub(super) fn retarget(&mut self, key: &str) -> bool {
        if self.created.is_some() || self.parts_sent > 0 {
            return false;
        }
        self.key = key.to_string();
        self.options.if_none_match = false;
        true
    }

    /// Whether any part has been handed to S3 (and so whether finishing means Complete or Put).
    pub(super) fn has_parts(&self) -> bool {
        self.parts_sent > 0
    }

    /// The number the next part sent will get.
    pub(super) fn next_part_number(&self) -> u32 {
        self.parts_sent + 1
    }

    /// Collects parts that have finished, without waiting; returns the sticky failure if any.
    pub(super) fn check(&mut self) -> Result<(), UploadError> {
        while let Some(joined) = self.in_flight.try_join_next_with_id() {
            self.record(joined);
        }
        self.failure.clone().map_or(Ok(()), Err)
    }

    /// The pool of part buffers of the mount's budget, if the upload has one.
    pub(super) fn buffers(&self) -> Option<&Arc<PartBuffers>> {
        self.budget.as_ref().map(|budget| budget.buffers())
    }

    /// Memory for a buffer of `bytes` from the mount's budget (see [`budget`]).
    pub(super) async fn reserve(&self, bytes: u64) -> Reservation {
        budget::reserve(self.budget.as_ref(), bytes).await
    }

    /// Grows `held` to `bytes` from the mount's budget, in line at the place of `slot`'s
    /// upload (see [`WriteBudget::grow`]).
    pub(super) async fn grow(&self, held: &mut Reservation, bytes: u64, slot: Option<&UploadSlot>) {
        budget::grow(self.budget.as_ref(), held, bytes, slot).await;
    }

    /// Sends the next part, which holds `memory` of the budget until its request ends. Waits
    /// while `max_parts_in_flight` parts are running, which is what bounds memory: the caller
    /// cannot fill another buffer until this returns. Takes no more of the budget, so the last
    /// part of a close never waits behind writers waiting for memory.
    pub(super) async fn send_part(
        &mut self,
        body: Bytes,
        memory: Reservation,
    ) -> Result<(), UploadError> {
        self.check()?;
        let part_number = self.next_part_number();
        let size = self.bytes_sent + body.len() as u64;
        if part_number > S3_MAX_PARTS || size > S3_MAX_OBJECT_SIZE {
            return Err(self.fail(UploadError::TooLarge { size }));
        }
        let upload_id = self.ensure_created().await?;
        // The semaphore is never closed; should that change, a closed one fails the upload.
        let permit = match Arc::clone(&self.permits).acquire_owned().await {
            Ok(permit) => permit,
            Err(closed) => {
                let message = closed.to_string();
                return Err(self.fail(UploadError::PartTaskLost {
                    part_number,
                    message,
                }));
            }
        };
        // A part may have failed while this one waited for its slot: do not send after a failure.
        self.check()?;
        let store = Arc::clone(&self.store);
        let key = self.key.clone();
        let handle = self.in_flight.spawn(async move {
            let _slot = (permit, memory);
            store.upload_part(&key, &upload_id, part_number, body).await
        });
        self.part_of_task.insert(handle.id(), part_number);
        self.parts_sent = part_number;
        self.bytes_sent = size;
        Ok(())
    }

    /// Waits for every part, then CompleteMultipartUpload. On error the upload is still open:
    /// the caller must `abort`.
    pub(super) async fn complete(&mut self) -> Result<PutOutput, UploadError> {
        while let Some(joined) = self.in_flight.join_next_with_id().await {
            self.record(joined);
        }
        self.check()?;
        let Some(upload_id) = self.created.as_ref().map(|c| c.upload_id.clone()) else {
            return Err(UploadError::InvalidConfig(
                "complete called before any part".into(),
            ));
        };
        let mut parts = mem::take(&mut self.completed);
        parts.sort_by_key(|part| part.part_number);
        let output = self
            .store
            .complete_multipart(&self.key, &upload_id, parts, self.options.if_none_match)
            .await
            .map_err(|e| {
                self.fail(UploadError::store(
                    StoreOperation::CompleteMultipartUpload,
                    &self.key,
                    e,
                ))
            })?;
        self.created = None;
        Ok(output)
    }

    /// Cancels the parts in flight, waits for them to stop, and aborts the upload if one was
    /// created. A failed abort is logged and counted: the caller's error is the original cause.
    /// The upload id is forgotten only after the abort call, so if this future is cancelled
    /// midway, `Drop` still aborts.
    pub(super) async fn abort(&mut self) {
        stop_parts(&mut self.in_flight).await;
        self.part_of_task.clear();
        let Some(upload_id) = self.created.as_ref().map(|c| c.upload_id.clone()) else {
            return;
        };
        abort_multipart(&self.store, &self.key, &upload_id).await;
        self.created = None;
    }

    async fn ensure_created(&mut self) -> Result<String, UploadError> {
        if let Some(created) = &self.created {
            return Ok(created.upload_id.clone());
        }
        let upload_id = self
            .store
            .create_multipart(&self.key, self.options.clone())
            .await
            .map_err(|e| {
                self.fail(UploadError::store(
                    StoreOperation::CreateMultipartUpload,
                    &self.key,
                    e,
                ))
            })?;
        let runtime = Handle::try_current().ok();
        self.created = Some(Created {
            upload_id: upload_id.clone(),
            runtime,
        });
        Ok(upload_id)
    }

    fn record(&mut self, joined: Result<(task::Id, StoreResult<CompletedPart>), JoinError>) {
        match joined {
            Ok((id, Ok(part))) => {
                self.part_of_task.remove(&id);
                self.completed.push(part);
            }
            Ok((id, Err(error))) => {
                let part_number = self.part_of_task.remove(&id).unwrap_or_default();
                let operation = StoreOperation::UploadPart { part_number };
                self.fail(UploadError::store(operation, &self.key, error));
            }
            Err(join_error) => {
                let part_number = self
                    .part_of_task
                    .remove(&join_error.id())
                    .unwrap_or_default();
                let message = join_error.to_string();
                self.fail(UploadError::PartTaskLost {
                    part_number,
                    message,
                });
            }
        }
    }

    /// Remembers the first failure and returns `error` for the caller to pass on.
    fn fail(&mut self, error: UploadError) -> UploadError {
        if self.failure.is_none() {
            self.failure = Some(error.clone());
        }
        error
    }
}

/// Dropping a session whose upload was neither completed nor aborted (the owner was dropped, or
/// the future finishing it was cancelled) spawns the abort: nothing can be awaited in `drop`, and
/// skipping it would leave parts on S3 that are billed and invisible.
impl Drop for MultipartSession {
    fn drop(&mut self) {
        let Some(created) = self.created.take() else {
            return;
        };
        let tasks = mem::take(&mut self.in_flight);
        let store = Arc::clone(&self.store);
        let key = mem::take(&mut self.key);
        match created.runtime {
            Some(runtime) => {
                runtime.spawn(abort_upload(store, key, created.upload_id, tasks));
            }
            None => {
                ABORT_FAILURES.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    key,
                    upload_id = created.upload_id,
                    "no runtime to abort upload on"
                );
            }
        }
    }
}

async fn abort_upload(
    store: Arc<dyn ObjectStore>,
    key: String,
    upload_id: String,
    mut tasks: JoinSet<StoreResult<CompletedPart>>,
) {
    stop_parts(&mut tasks).await;
    abort_multipart(&store, &key, &upload_id).await;
}

/// Cancels part tasks and waits until they are gone: a part still uploading could land after
/// the abort and be kept by S3.
async fn stop_parts(tasks: &mut JoinSet<StoreResult<CompletedPart>>) {
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

/// How long the writer whose upload failed waits for its abort before the error reaches it.
/// The abort is retried like any request (10 attempts for a mount), but a server that is gone
/// would hold the writer's EIO for another 16 s on average: past this wait the abort goes on
/// in the background instead, as one that failed does. A live server answers it well within.
pub(super) const INLINE_ABORT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Aborts the upload; if that fails (after the store's own retries) or takes longer than
/// [`INLINE_ABORT_WAIT`], the abort goes on in the background ([`super::abort_retry`]) until
/// it succeeds or the process ends.
async fn abort_multipart(store: &Arc<dyn ObjectStore>, key: &str, upload_id: &str) {
    let result = match tokio::time::timeout(
        INLINE_ABORT_WAIT,
        store.abort_multipart(key, upload_id),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(crate::store::StoreError::Timeout(INLINE_ABORT_WAIT)),
    };
    match result {
        Ok(()) => tracing::debug!(key, upload_id, "aborted multipart upload"),
        Err(error) if error.is_not_found() => {
            tracing::debug!(key, upload_id, "multipart upload already gone")
        }
        Err(error) => {
            ABORT_FAILURES.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                key,
                upload_id,
                %error,
                "AbortMultipartUpload failed: retrying in the background"
            );
            super::abort_retry::retry_in_background(Arc::clone(store), key, upload_id);
        }
    }
}
