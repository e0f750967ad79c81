//! `store/` talks to S3 and to nothing else: an [`ObjectStore`] trait with the handful of S3
//! calls the file system and the segment API need, and its implementations:
//!
//! - [`s3::S3Store`]: aws-sdk-s3 over HTTP, for real buckets, MinIO and the dev server;
//! - [`memory::MemoryStore`]: in memory, faithful to S3 key semantics, for fast unit tests;
//! - [`retry::Retrying`]: a wrapper adding backoff retries and GET-body resumption to any store;
//! - `faulty::FaultyStore`: a wrapper that fails chosen calls, for failure tests (unit tests,
//!   and with the `test-doubles` feature, integration tests; never in a release build).
//!
//! Nothing here knows about FUSE or inodes: keys are plain S3 keys.

pub mod checksum;
pub mod config;
pub mod error;
#[cfg(any(test, feature = "test-doubles"))]
pub mod faulty;
pub mod limits;
pub mod listing;
pub mod memory;
pub mod metered;
pub mod retry;
pub mod s3;

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;

pub use config::DEFAULT_POOL_SIZE;
pub use error::{StoreError, StoreResult};

/// User metadata (`x-amz-meta-*` headers, names without the prefix, lower case).
pub type UserMetadata = BTreeMap<String, String>;

/// What HEAD (or the first answer of a GET) says about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    /// The ETag as S3 sends it, quotes included.
    pub etag: String,
    pub last_modified: SystemTime,
    pub metadata: UserMetadata,
    /// `None` when the server sent no Content-Type.
    pub content_type: Option<String>,
}

/// One object in a listing page: what ListObjectsV2 returns per key (no user metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSummary {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub last_modified: SystemTime,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListRequest {
    pub prefix: String,
    /// Usually `Some("/")`: group keys below the next delimiter into common prefixes.
    pub delimiter: Option<String>,
    pub continuation_token: Option<String>,
    /// Start after this key (exclusive) when there is no continuation token: lists a window of
    /// a large directory around one name.
    pub start_after: Option<String>,
    /// Keys and common prefixes together, as S3 counts them; `None` means the server's 1000.
    pub max_keys: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// In byte order of the keys.
    pub objects: Vec<ObjectSummary>,
    /// In byte order, each ending with the delimiter.
    pub common_prefixes: Vec<String>,
    /// Present when there are more results: pass it back to get the next page.
    pub next_continuation_token: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetRequest {
    pub key: String,
    /// Half-open byte range; `None` reads the whole object. A range past the end is clipped.
    pub range: Option<Range<u64>>,
    /// Refuse (PreconditionFailed) if the object's ETag is no longer this one.
    pub if_match: Option<String>,
}

impl GetRequest {
    pub fn whole(key: impl Into<String>) -> Self {
        GetRequest {
            key: key.into(),
            ..Default::default()
        }
    }
}

/// A body arriving in chunks; an `Err` item means the transfer broke at that point.
pub type ByteStream = BoxStream<'static, StoreResult<Bytes>>;

pub struct GetObjectOutput {
    /// Metadata of the whole object (size is the full object size, not the range length).
    pub meta: ObjectMeta,
    /// The byte range the body covers.
    pub range: Range<u64>,
    pub body: ByteStream,
}

impl GetObjectOutput {
    /// Collect the whole body into one buffer.
    pub async fn collect(mut self) -> StoreResult<Bytes> {
        let mut buf = BytesMut::with_capacity((self.range.end - self.range.start) as usize);
        while let Some(chunk) = self.body.next().await {
            buf.extend_from_slice(&chunk?);
        }
        Ok(buf.freeze())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    pub metadata: UserMetadata,
    pub content_type: Option<String>,
    /// Create only: the write fails with PreconditionFailed if the key exists
    /// (`If-None-Match: *` on PutObject and CompleteMultipartUpload).
    pub if_none_match: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutput {
    pub etag: String,
}

/// What a CopyObject does with the user metadata and Content-Type of its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyMetadata {
    /// Keep both (MetadataDirective COPY).
    Keep,
    /// Replace the user metadata. S3's REPLACE also replaces the Content-Type, so the store reads
    /// the source's first (one HEAD) and pins the copy to that version.
    Replace(UserMetadata),
    /// Replace the user metadata with the Content-Type the caller already knows (`None`: the
    /// server's default), pinned to `source_etag` if given: no HEAD.
    ReplaceKnown {
        metadata: UserMetadata,
        content_type: Option<String>,
        source_etag: Option<String>,
    },
}

/// A multipart upload that was started and neither completed nor aborted: its parts are
/// invisible but cost storage until someone aborts it (ListMultipartUploads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    pub key: String,
    pub upload_id: String,
    pub initiated: SystemTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    /// 1-based, as S3 numbers parts.
    pub part_number: u32,
    pub etag: String,
    /// The part's CRC32C and length, when it was sent with one: CompleteMultipartUpload
    /// names them, and combines them into the whole object's.
    pub crc32c: Option<PartCrc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartCrc {
    pub crc32c: u32,
    pub len: u64,
}

/// The S3 calls scribefs makes. Implementations must keep S3's semantics: keys are opaque byte
/// strings (`a` and `a/b` coexist, `dir/` is an ordinary key), listings are in byte order, every
/// put yields a new ETag, and a HEAD or GET of a key that exists only as a prefix is NotFound.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    async fn head(&self, key: &str) -> StoreResult<ObjectMeta>;
    async fn get(&self, request: GetRequest) -> StoreResult<GetObjectOutput>;
    async fn put(&self, key: &str, body: Bytes, options: PutOptions) -> StoreResult<PutOutput>;
    /// Starts a multipart upload and returns its upload id.
    async fn create_multipart(&self, key: &str, options: PutOptions) -> StoreResult<String>;
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
    ) -> StoreResult<CompletedPart>;
    /// `parts` must be in ascending part number order. `if_none_match`: create only, as
    /// [`PutOptions::if_none_match`].
    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        if_none_match: bool,
    ) -> StoreResult<PutOutput>;
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> StoreResult<()>;
    /// Server-side copy of a whole object (single CopyObject; callers split above 5 GiB).
    async fn copy(
        &self,
        source_key: &str,
        dest_key: &str,
        metadata: CopyMetadata,
    ) -> StoreResult<PutOutput>;
    /// Deleting a missing key succeeds, as in S3.
    async fn delete(&self, key: &str) -> StoreResult<()>;
    async fn list(&self, request: ListRequest) -> StoreResult<ListPage>;
    /// HeadBucket: does the bucket exist and may we use it.
    async fn head_bucket(&self) -> StoreResult<()>;
    /// Every pending multipart upload of a key starting with `prefix` (all pages), ordered by
    /// key, then upload id.
    async fn list_uploads(&self, prefix: &str) -> StoreResult<Vec<PendingUpload>>;
    /// Answers so far that asked the client to slow down (503 SlowDown, 429), counted per
    /// attempt, retried or not: how a fan-out learns to shrink. 0 where no layer counts them.
    fn throttled_answers(&self) -> u64 {
        0
    }
}

/// Reads a whole object (or a range of it) into memory.
pub async fn get_bytes(
    store: &dyn ObjectStore,
    key: &str,
    range: Option<Range<u64>>,
) -> StoreResult<Bytes> {
    store
        .get(GetRequest {
            key: key.to_string(),
            range,
            if_match: None,
        })
        .await?
        .collect()
        .await
}

/// Lists every page under `prefix` (no delimiter) and returns all object summaries.
pub async fn list_all(store: &dyn ObjectStore, prefix: &str) -> StoreResult<Vec<ObjectSummary>> {
    let request = ListRequest {
        prefix: prefix.to_string(),
        ..Default::default()
    };
    list_every_page(store, request).await
}

/// Follows `request`'s continuation tokens to the last page and returns every object summary
/// (common prefixes are dropped).
pub async fn list_every_page(
    store: &dyn ObjectStore,
    mut request: ListRequest,
) -> StoreResult<Vec<ObjectSummary>> {
    let mut objects = Vec::new();
    loop {
        let page = store.list(request.clone()).await?;
        objects.extend(page.objects);
        match page.next_continuation_token {
            Some(token) => request.continuation_token = Some(token),
            None => return Ok(objects),
        }
    }
}
