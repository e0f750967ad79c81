//! An object store held in memory with S3's key semantics, for fast unit and property tests and
//! as the data model behind the dev server. ETags are MD5 hex digests like S3's (multipart ones
//! end in `-N`), so a put with new content always yields a new ETag.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use md5::{Digest, Md5};

use super::limits::{S3_MAX_PARTS, S3_MIN_PART_SIZE};
use super::listing::list_page;
use super::{
    CompletedPart, CopyMetadata, GetObjectOutput, GetRequest, ListPage, ListRequest, ObjectMeta,
    ObjectStore, ObjectSummary, PendingUpload, PutOptions, PutOutput, StoreError, StoreResult,
    UserMetadata,
};

/// GET bodies are streamed in chunks of this size, as a network body would arrive.
const BODY_CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct StoredObject {
    pub data: Bytes,
    pub etag: String,
    pub last_modified: SystemTime,
    pub metadata: UserMetadata,
    pub content_type: Option<String>,
}

impl StoredObject {
    pub fn new(data: Bytes, options: PutOptions) -> Self {
        let etag = format!("\"{}\"", hex(&Md5::digest(&data)));
        Self::with_etag(data, etag, options)
    }

    fn with_etag(data: Bytes, etag: String, options: PutOptions) -> Self {
        StoredObject {
            data,
            etag,
            last_modified: SystemTime::now(),
            metadata: options.metadata,
            content_type: options.content_type,
        }
    }

    fn meta(&self, key: &str) -> ObjectMeta {
        ObjectMeta {
            key: key.to_string(),
            size: self.data.len() as u64,
            etag: self.etag.clone(),
            last_modified: self.last_modified,
            metadata: self.metadata.clone(),
            content_type: self.content_type.clone(),
        }
    }
}

struct Upload {
    key: String,
    options: PutOptions,
    initiated: SystemTime,
    /// Part number -> (ETag, MD5 digest, body).
    parts: BTreeMap<u32, (String, [u8; 16], Bytes)>,
}

pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, StoredObject>>,
    uploads: Mutex<HashMap<String, Upload>>,
    next_upload: AtomicU64,
    min_part_size: u64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::with_min_part_size(S3_MIN_PART_SIZE)
    }

    /// A store that accepts smaller multipart parts than S3 does, so tests stay small.
    pub fn with_min_part_size(min_part_size: u64) -> Self {
        MemoryStore {
            objects: Mutex::new(BTreeMap::new()),
            uploads: Mutex::new(HashMap::new()),
            next_upload: AtomicU64::new(1),
            min_part_size,
        }
    }

    fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, StoredObject>> {
        // A panic while holding the lock cannot leave the map half-updated: recover it.
        self.objects
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn uploads(&self) -> std::sync::MutexGuard<'_, HashMap<String, Upload>> {
        self.uploads
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Stores an object as given (ETag and time included), e.g. when loading persisted data.
    pub fn insert(&self, key: &str, object: StoredObject) {
        self.objects().insert(key.to_string(), object);
    }

    /// Inserts under one lock with the existence check, so of two exclusive creates of one
    /// key exactly one wins.
    fn insert_unless_exists(
        &self,
        key: &str,
        object: StoredObject,
        exclusive: bool,
    ) -> StoreResult<()> {
        let mut objects = self.objects();
        if exclusive && objects.contains_key(key) {
            return Err(StoreError::PreconditionFailed(key.to_string()));
        }
        objects.insert(key.to_string(), object);
        Ok(())
    }

    /// Sets `key` back to `previous` unless it changed since `written` was read: undoes a
    /// change that could not be made durable without clobbering a later one.
    pub fn restore_unless_changed(
        &self,
        key: &str,
        written: Option<&StoredObject>,
        previous: Option<StoredObject>,
    ) {
        let mut objects = self.objects();
        let unchanged = match (objects.get(key), written) {
            (None, None) => true,
            (Some(now), Some(written)) => {
                now.etag == written.etag && now.last_modified == written.last_modified
            }
            _ => false,
        };
        if !unchanged {
            return;
        }
        match previous {
            Some(previous) => objects.insert(key.to_string(), previous),
            None => objects.remove(key),
        };
    }

    /// The stored object, for callers that need more than HEAD returns.
    pub fn object(&self, key: &str) -> Option<StoredObject> {
        self.objects().get(key).cloned()
    }

    pub fn keys(&self) -> Vec<String> {
        self.objects().keys().cloned().collect()
    }

    /// Multipart uploads started and neither completed nor aborted: each one costs storage on S3.
    pub fn pending_uploads(&self) -> usize {
        self.uploads().len()
    }

    /// The pending multipart uploads as `(key, upload id)`, sorted, for ListMultipartUploads.
    pub fn pending_upload_ids(&self) -> Vec<(String, String)> {
        self.pending()
            .into_iter()
            .map(|u| (u.key, u.upload_id))
            .collect()
    }

    /// The pending multipart uploads with their start times, sorted by key then id.
    pub fn pending(&self) -> Vec<PendingUpload> {
        let mut pending: Vec<PendingUpload> = self
            .uploads()
            .iter()
            .map(|(id, upload)| PendingUpload {
                key: upload.key.clone(),
                upload_id: id.clone(),
                initiated: upload.initiated,
            })
            .collect();
        pending.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
        pending
    }

    /// What a pending upload was started with, for persisting it: key, options, start time.
    pub fn upload_header(&self, upload_id: &str) -> Option<(String, PutOptions, SystemTime)> {
        self.uploads()
            .get(upload_id)
            .map(|u| (u.key.clone(), u.options.clone(), u.initiated))
    }

    /// Brings back a pending upload as persisted (e.g. by the dev server across a restart), with
    /// its parts; later upload ids never repeat a restored one.
    pub fn restore_upload(
        &self,
        upload_id: &str,
        key: &str,
        options: PutOptions,
        initiated: SystemTime,
        parts: Vec<(u32, Bytes)>,
    ) {
        let parts = parts
            .into_iter()
            .map(|(number, body)| {
                let digest: [u8; 16] = Md5::digest(&body).into();
                (number, (format!("\"{}\"", hex(&digest)), digest, body))
            })
            .collect();
        if let Some(n) = upload_id
            .strip_prefix("upload-")
            .and_then(|n| n.parse::<u64>().ok())
        {
            self.next_upload.fetch_max(n + 1, Ordering::Relaxed);
        }
        let upload = Upload {
            key: key.to_string(),
            options,
            initiated,
            parts,
        };
        self.uploads().insert(upload_id.to_string(), upload);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn no_such_upload(upload_id: &str) -> StoreError {
    StoreError::NotFound(format!("multipart upload {upload_id}"))
}

/// Splits `data` into network-sized chunks as one body stream.
pub fn chunked_body(data: Bytes) -> super::ByteStream {
    let chunks: Vec<StoreResult<Bytes>> = (0..data.len())
        .step_by(BODY_CHUNK)
        .map(|at| Ok(data.slice(at..(at + BODY_CHUNK).min(data.len()))))
        .collect();
    Box::pin(futures::stream::iter(chunks))
}

impl MemoryStore {
    /// `put` of a body whose MD5 the caller already computed (the dev server, which checks
    /// Content-MD5 with it): hashing twice doubled the server's CPU per upload.
    pub fn put_with_digest(
        &self,
        key: &str,
        body: Bytes,
        digest: [u8; 16],
        options: PutOptions,
    ) -> PutOutput {
        let object = StoredObject::with_etag(body, format!("\"{}\"", hex(&digest)), options);
        let etag = object.etag.clone();
        self.insert(key, object);
        PutOutput { etag }
    }

    /// `upload_part` of a body whose MD5 the caller already computed.
    pub fn upload_part_with_digest(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
        digest: [u8; 16],
    ) -> StoreResult<CompletedPart> {
        if !(1..=S3_MAX_PARTS).contains(&part_number) {
            return Err(StoreError::InvalidRequest(format!(
                "part number {part_number}"
            )));
        }
        let etag = format!("\"{}\"", hex(&digest));
        let mut uploads = self.uploads();
        let upload = uploads
            .get_mut(upload_id)
            .filter(|u| u.key == key)
            .ok_or_else(|| no_such_upload(upload_id))?;
        upload
            .parts
            .insert(part_number, (etag.clone(), digest, body));
        Ok(CompletedPart {
            part_number,
            etag,
            crc32c: None,
        })
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        self.objects()
            .get(key)
            .map(|o| o.meta(key))
            .ok_or_else(|| StoreError::NotFound(key.to_string()))
    }

    async fn get(&self, request: GetRequest) -> StoreResult<GetObjectOutput> {
        let object = self
            .object(&request.key)
            .ok_or_else(|| StoreError::NotFound(request.key.clone()))?;
        if let Some(expected) = &request.if_match
            && *expected != object.etag
        {
            return Err(StoreError::PreconditionFailed(request.key.clone()));
        }
        let size = object.data.len() as u64;
        let range = match request.range {
            None => 0..size,
            Some(r) if r.start >= size || r.start >= r.end => {
                return Err(StoreError::InvalidRequest(format!(
                    "range {}..{} not satisfiable for {} ({size} bytes)",
                    r.start, r.end, request.key
                )));
            }
            Some(r) => r.start..r.end.min(size),
        };
        let body = object.data.slice(range.start as usize..range.end as usize);
        Ok(GetObjectOutput {
            meta: object.meta(&request.key),
            range,
            body: chunked_body(body),
        })
    }

    async fn put(&self, key: &str, body: Bytes, options: PutOptions) -> StoreResult<PutOutput> {
        let exclusive = options.if_none_match;
        let object = StoredObject::new(body, options);
        let etag = object.etag.clone();
        self.insert_unless_exists(key, object, exclusive)?;
        Ok(PutOutput { etag })
    }

    async fn create_multipart(&self, key: &str, options: PutOptions) -> StoreResult<String> {
        let upload_id = format!(
            "upload-{}",
            self.next_upload.fetch_add(1, Ordering::Relaxed)
        );
        let upload = Upload {
            key: key.to_string(),
            options,
            initiated: SystemTime::now(),
            parts: BTreeMap::new(),
        };
        self.uploads().insert(upload_id.clone(), upload);
        Ok(upload_id)
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
    ) -> StoreResult<CompletedPart> {
        // Hash before taking the lock: parts of one upload arrive in parallel.
        let digest: [u8; 16] = Md5::digest(&body).into();
        self.upload_part_with_digest(key, upload_id, part_number, body, digest)
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        if_none_match: bool,
    ) -> StoreResult<PutOutput> {
        if if_none_match && self.object(key).is_some() {
            return Err(StoreError::PreconditionFailed(key.to_string()));
        }
        if parts.is_empty() {
            return Err(StoreError::InvalidRequest("complete with no parts".into()));
        }
        // Validate under the lock, then assemble outside it: only cheap clones of the parts.
        let (bodies, digests, options) = {
            let mut uploads = self.uploads();
            let upload = uploads
                .get(upload_id)
                .filter(|u| u.key == key)
                .ok_or_else(|| no_such_upload(upload_id))?;
            let mut bodies = Vec::with_capacity(parts.len());
            let mut digests = Vec::with_capacity(parts.len() * 16);
            for (i, part) in parts.iter().enumerate() {
                if i > 0 && parts[i - 1].part_number >= part.part_number {
                    return Err(StoreError::InvalidRequest(
                        "parts not in ascending order".into(),
                    ));
                }
                let (_, digest, body) = upload
                    .parts
                    .get(&part.part_number)
                    .filter(|(etag, _, _)| *etag == part.etag)
                    .ok_or_else(|| {
                        StoreError::InvalidRequest(format!("invalid part {}", part.part_number))
                    })?;
                if i + 1 < parts.len() && (body.len() as u64) < self.min_part_size {
                    return Err(StoreError::InvalidRequest(format!(
                        "part {} is smaller than the minimum part size",
                        part.part_number
                    )));
                }
                digests.extend_from_slice(digest);
                bodies.push(body.clone());
            }
            let options = upload.options.clone();
            uploads.remove(upload_id);
            (bodies, digests, options)
        };
        let total = bodies.iter().map(Bytes::len).sum();
        let mut data = Vec::with_capacity(total);
        // Each part is freed as soon as it is copied: the upload holds the object once, not twice,
        // and the object's pages can be the parts' just freed ones.
        for body in bodies {
            data.extend_from_slice(&body);
        }
        // S3's multipart ETag: the MD5 of the parts' MD5s, then the part count.
        let etag = format!("\"{}-{}\"", hex(&Md5::digest(&digests)), parts.len());
        self.insert(
            key,
            StoredObject::with_etag(Bytes::from(data), etag.clone(), options),
        );
        Ok(PutOutput { etag })
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> StoreResult<()> {
        let mut uploads = self.uploads();
        match uploads.get(upload_id) {
            Some(upload) if upload.key == key => {
                uploads.remove(upload_id);
                Ok(())
            }
            _ => Err(no_such_upload(upload_id)),
        }
    }

    async fn copy(
        &self,
        source_key: &str,
        dest_key: &str,
        metadata: CopyMetadata,
    ) -> StoreResult<PutOutput> {
        let source = self
            .object(source_key)
            .ok_or_else(|| StoreError::NotFound(source_key.to_string()))?;
        let options = match metadata {
            CopyMetadata::Keep => PutOptions {
                metadata: source.metadata,
                content_type: source.content_type,
                ..Default::default()
            },
            CopyMetadata::Replace(metadata) => PutOptions {
                metadata,
                content_type: source.content_type,
                ..Default::default()
            },
            CopyMetadata::ReplaceKnown {
                metadata,
                content_type,
                source_etag,
            } => {
                if source_etag.is_some_and(|etag| etag != source.etag) {
                    return Err(StoreError::PreconditionFailed(source_key.to_string()));
                }
                PutOptions {
                    metadata,
                    content_type,
                    ..Default::default()
                }
            }
        };
        self.put(dest_key, source.data, options).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.objects().remove(key);
        Ok(())
    }

    async fn list(&self, request: ListRequest) -> StoreResult<ListPage> {
        let objects = self.objects();
        Ok(list_page(&objects, &request, |key, object| ObjectSummary {
            key: key.to_string(),
            size: object.data.len() as u64,
            etag: object.etag.clone(),
            last_modified: object.last_modified,
        }))
    }

    async fn head_bucket(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn list_uploads(&self, prefix: &str) -> StoreResult<Vec<PendingUpload>> {
        let mut pending = self.pending();
        pending.retain(|u| u.key.starts_with(prefix));
        Ok(pending)
    }
}
