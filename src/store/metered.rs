//! [`Metered`]: counts every request of the store it wraps (by operation and outcome, with its
//! latency), the body bytes moved, and the uploads in flight, into [`crate::metrics`]. Placed
//! under the retry layer, it sees each HTTP attempt, as the server and the bill do.

use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::{
    CompletedPart, CopyMetadata, GetObjectOutput, GetRequest, ListPage, ListRequest, ObjectMeta,
    ObjectStore, PendingUpload, PutOptions, PutOutput, StoreError, StoreResult,
};
use crate::metrics::registry;

pub struct Metered<S> {
    inner: S,
}

impl<S> Metered<S> {
    pub fn new(inner: S) -> Self {
        Metered { inner }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }
}

/// The outcome label of a result.
pub fn outcome<T>(result: &StoreResult<T>) -> &'static str {
    let Err(err) = result else { return "ok" };
    match err.root() {
        StoreError::NotFound(_) => "not_found",
        StoreError::NoSuchBucket(_) => "no_such_bucket",
        StoreError::AccessDenied(_) => "access_denied",
        StoreError::Credentials(_) => "no_credentials",
        StoreError::PreconditionFailed(_) => "precondition_failed",
        StoreError::InvalidRequest(_) => "invalid_request",
        StoreError::Throttled(_) => "throttled",
        StoreError::Server { .. } => "server_error",
        StoreError::Timeout(_) => "timeout",
        StoreError::Connection(_) => "connection",
        StoreError::Unreachable(_) => "unreachable",
        _ => "error",
    }
}

async fn timed<T>(
    operation: &'static str,
    call: impl Future<Output = StoreResult<T>>,
) -> StoreResult<T> {
    let started = Instant::now();
    let result = call.await;
    registry().s3_request(operation, outcome(&result), started.elapsed());
    result
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for Metered<S> {
    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        timed("HeadObject", self.inner.head(key)).await
    }

    async fn get(&self, request: GetRequest) -> StoreResult<GetObjectOutput> {
        let mut output = timed("GetObject", self.inner.get(request)).await?;
        output.body = output
            .body
            .inspect(|chunk| {
                if let Ok(bytes) = chunk {
                    registry().add_bytes_read(bytes.len() as u64);
                }
            })
            .boxed();
        Ok(output)
    }

    async fn put(&self, key: &str, body: Bytes, options: PutOptions) -> StoreResult<PutOutput> {
        let len = body.len() as u64;
        registry().upload_started();
        let result = timed("PutObject", self.inner.put(key, body, options)).await;
        registry().upload_ended();
        if result.is_ok() {
            registry().add_bytes_written(len);
        }
        result
    }

    async fn create_multipart(&self, key: &str, options: PutOptions) -> StoreResult<String> {
        let result = timed(
            "CreateMultipartUpload",
            self.inner.create_multipart(key, options),
        )
        .await;
        if result.is_ok() {
            registry().upload_started();
        }
        result
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
    ) -> StoreResult<CompletedPart> {
        let len = body.len() as u64;
        let result = timed(
            "UploadPart",
            self.inner.upload_part(key, upload_id, part_number, body),
        )
        .await;
        if result.is_ok() {
            registry().add_bytes_written(len);
        }
        result
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        if_none_match: bool,
    ) -> StoreResult<PutOutput> {
        let result = timed(
            "CompleteMultipartUpload",
            self.inner
                .complete_multipart(key, upload_id, parts, if_none_match),
        )
        .await;
        if result.is_ok() {
            registry().upload_ended();
        }
        result
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> StoreResult<()> {
        let result = timed(
            "AbortMultipartUpload",
            self.inner.abort_multipart(key, upload_id),
        )
        .await;
        if result.is_ok() {
            registry().upload_ended();
        }
        result
    }

    async fn copy(
        &self,
        source_key: &str,
        dest_key: &str,
        metadata: CopyMetadata,
    ) -> StoreResult<PutOutput> {
        timed(
            "CopyObject",
            self.inner.copy(source_key, dest_key, metadata),
        )
        .await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        timed("DeleteObject", self.inner.delete(key)).await
    }

    async fn list(&self, request: ListRequest) -> StoreResult<ListPage> {
        timed("ListObjectsV2", self.inner.list(request)).await
    }

    async fn head_bucket(&self) -> StoreResult<()> {
        timed("HeadBucket", self.inner.head_bucket()).await
    }

    async fn list_uploads(&self, prefix: &str) -> StoreResult<Vec<PendingUpload>> {
        timed("ListMultipartUploads", self.inner.list_uploads(prefix)).await
    }
}
