//! The S3 operations, on top of s3s: requests arrive parsed and authenticated, each handler
//! works on the bucket's [`MemoryStore`] and writes changed keys through to disk.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use super::buckets::{Bucket, Buckets, Removal};
use super::conditions::{self, etag_dto, stored_etag};
use super::listing;
use crate::store::checksum::{base64_of, crc32c, crc32c_header};
use crate::store::memory::StoredObject;
use crate::store::{CompletedPart as StoreCompletedPart, ObjectStore, PutOptions, StoreError};
use md5::{Digest, Md5};

/// S3's largest single PUT; bodies are collected in memory, so this bounds the buffer.
use crate::store::limits::S3_MAX_PUT_SIZE as MAX_PUT_SIZE;
/// S3's answer for objects stored without a content type.
const DEFAULT_CONTENT_TYPE: &str = "binary/octet-stream";

pub(crate) struct DevS3 {
    buckets: Arc<Buckets>,
    /// Fraction (f64 bits) of uploaded bodies that arrive with one byte flipped.
    corrupt_rate: Arc<AtomicU64>,
    /// Fraction (f64 bits) of GET bodies sent with one byte flipped.
    corrupt_get_rate: Arc<AtomicU64>,
}

impl DevS3 {
    pub fn new(
        buckets: Arc<Buckets>,
        corrupt_rate: Arc<AtomicU64>,
        corrupt_get_rate: Arc<AtomicU64>,
    ) -> Self {
        DevS3 {
            buckets,
            corrupt_rate,
            corrupt_get_rate,
        }
    }

    /// Emulates a body damaged on the way (a faulty NIC or proxy): flips one byte of `data`
    /// as often as the corruption rate says, before the server checks or stores it.
    fn maybe_corrupt(&self, data: Bytes) -> Bytes {
        flip_a_byte(data, &self.corrupt_rate)
    }

    fn bucket(&self, name: &str) -> S3Result<Arc<Bucket>> {
        self.buckets
            .get(name)
            .ok_or_else(|| s3_error!(NoSuchBucket, "The specified bucket does not exist"))
    }
}

/// Flips one byte of `data` (the middle one) as often as `rate` (f64 bits) says.
fn flip_a_byte(data: Bytes, rate: &AtomicU64) -> Bytes {
    let rate = f64::from_bits(rate.load(Ordering::Relaxed));
    if data.is_empty() || rate <= 0.0 || fastrand::f64() >= rate {
        return data;
    }
    let mut damaged = data.to_vec();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x20;
    Bytes::from(damaged)
}

fn no_such_key() -> S3Error {
    s3_error!(NoSuchKey, "The specified key does not exist.")
}

fn persist_error(error: io::Error) -> S3Error {
    S3Error::with_source(S3ErrorCode::InternalError, Box::new(error))
}

/// Maps the store's errors for a call on `upload_id`.
fn upload_error(error: StoreError) -> S3Error {
    match error {
        StoreError::NotFound(_) => s3_error!(
            NoSuchUpload,
            "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed."
        ),
        StoreError::InvalidRequest(message) if message.contains("smaller") => {
            S3Error::with_message(S3ErrorCode::EntityTooSmall, message)
        }
        StoreError::InvalidRequest(message) if message.contains("part number") => {
            S3Error::with_message(S3ErrorCode::InvalidArgument, message)
        }
        StoreError::InvalidRequest(message) => {
            S3Error::with_message(S3ErrorCode::InvalidPart, message)
        }
        other => S3Error::with_source(S3ErrorCode::InternalError, Box::new(other)),
    }
}

fn to_dto_metadata(metadata: &crate::store::UserMetadata) -> Option<Metadata> {
    (!metadata.is_empty()).then(|| {
        metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    })
}

fn from_dto_metadata(metadata: Option<Metadata>) -> crate::store::UserMetadata {
    metadata
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect()
}

/// Reads a request body into memory, refusing more than S3 would take in one PUT.
async fn collect_body(body: Option<StreamingBlob>, length_hint: Option<i64>) -> S3Result<Bytes> {
    let Some(mut body) = body else {
        return Ok(Bytes::new());
    };
    let hint = length_hint.and_then(|l| u64::try_from(l).ok()).unwrap_or(0);
    if hint > MAX_PUT_SIZE {
        return Err(s3_error!(EntityTooLarge));
    }
    // The hint is only a hint: cap the up-front allocation.
    let mut buffer = BytesMut::with_capacity(hint.min(64 * 1024 * 1024) as usize);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| S3Error::with_source(S3ErrorCode::IncompleteBody, e))?;
        if (buffer.len() + chunk.len()) as u64 > MAX_PUT_SIZE {
            return Err(s3_error!(EntityTooLarge));
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer.freeze())
}

fn part_number(number: i32) -> S3Result<u32> {
    u32::try_from(number)
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| {
            s3_error!(
                InvalidArgument,
                "Part number must be an integer between 1 and 10000, inclusive"
            )
        })
}

#[async_trait::async_trait]
impl S3 for DevS3 {
    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let buckets = self
            .buckets
            .all()
            .into_iter()
            .map(|(name, bucket)| s3s::dto::Bucket {
                name: Some(name),
                creation_date: Some(Timestamp::from(bucket.created)),
                bucket_region: None,
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            ..Default::default()
        }))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.bucket(&req.input.bucket)?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.bucket(&req.input.bucket)?;
        // An empty LocationConstraint means us-east-1.
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let name = req.input.bucket;
        match self.buckets.create(&name) {
            Ok(true) => Ok(S3Response::new(CreateBucketOutput {
                location: Some(format!("/{name}")),
            })),
            Ok(false) => Err(s3_error!(BucketAlreadyOwnedByYou)),
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                Err(s3_error!(InvalidBucketName, "{e}"))
            }
            Err(e) => Err(persist_error(e)),
        }
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        match self
            .buckets
            .remove(&req.input.bucket)
            .map_err(persist_error)?
        {
            Removal::Removed => Ok(S3Response::new(DeleteBucketOutput::default())),
            Removal::Missing => Err(s3_error!(NoSuchBucket)),
            Removal::NotEmpty => Err(s3_error!(BucketNotEmpty)),
        }
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        let bucket = self.bucket(&input.bucket)?;
        let object = bucket.store.object(&input.key).ok_or_else(no_such_key)?;
        conditions::check(
            &object,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let range = conditions::resolve_range(input.range.as_ref(), object.data.len() as u64)?;
        Ok(S3Response::new(HeadObjectOutput {
            accept_ranges: Some("bytes".into()),
            content_length: Some((range.bytes.end - range.bytes.start) as i64),
            content_range: range.content_range,
            content_type: Some(content_type_of(&object)),
            e_tag: Some(etag_dto(&object.etag)),
            last_modified: Some(Timestamp::from(object.last_modified)),
            metadata: to_dto_metadata(&object.metadata),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let bucket = self.bucket(&input.bucket)?;
        let object = bucket.store.object(&input.key).ok_or_else(no_such_key)?;
        conditions::check(
            &object,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let range = conditions::resolve_range(input.range.as_ref(), object.data.len() as u64)?;
        // A GET body damaged on the way (after the server read it intact), as often as the
        // GET corruption rate says: what a client's download check must catch.
        let body = flip_a_byte(
            object
                .data
                .slice(range.bytes.start as usize..range.bytes.end as usize),
            &self.corrupt_get_rate,
        );
        Ok(S3Response::new(GetObjectOutput {
            accept_ranges: Some("bytes".into()),
            content_length: Some(body.len() as i64),
            content_range: range.content_range,
            content_type: Some(content_type_of(&object)),
            e_tag: Some(etag_dto(&object.etag)),
            last_modified: Some(Timestamp::from(object.last_modified)),
            metadata: to_dto_metadata(&object.metadata),
            body: Some(StreamingBlob::new(s3s::Body::from(body))),
            ..Default::default()
        }))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        let bucket = self.bucket(&input.bucket)?;
        let data = self.maybe_corrupt(collect_body(input.body, input.content_length).await?);
        let digest = checked_digest(&data, input.content_md5.as_deref())?;
        check_crc32c(&data, input.checksum_crc32c.as_deref())?;
        // Conditional writes (If-None-Match: *, If-Match) are checked, not made atomic: enough
        // for a dev server with one writer per key.
        let current = bucket.store.object(&input.key);
        conditions::check_write(
            current.as_ref(),
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
        )?;
        let options = PutOptions {
            metadata: from_dto_metadata(input.metadata),
            content_type: input.content_type,
            ..Default::default()
        };
        let size = data.len() as i64;
        let put = bucket
            .store
            .put_with_digest(&input.key, data, digest, options);
        bucket
            .persist_or_undo(&input.key, current)
            .await
            .map_err(persist_error)?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(etag_dto(&put.etag)),
            size: Some(size),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let bucket = self.bucket(&req.input.bucket)?;
        delete_key(&bucket, &req.input.key).await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let bucket = self.bucket(&req.input.bucket)?;
        let quiet = req.input.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for identifier in req.input.delete.objects {
            match delete_key(&bucket, &identifier.key).await {
                Ok(()) if quiet => {}
                Ok(()) => deleted.push(DeletedObject {
                    key: Some(identifier.key),
                    ..Default::default()
                }),
                Err(error) => errors.push(s3s::dto::Error {
                    code: Some(error.code().as_str().to_string()),
                    key: Some(identifier.key),
                    message: error.message().map(str::to_string),
                    version_id: None,
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let input = req.input;
        let CopySource::Bucket {
            bucket: source_bucket,
            key: source_key,
            ..
        } = &input.copy_source
        else {
            return Err(s3_error!(
                NotImplemented,
                "only bucket/key copy sources are supported"
            ));
        };
        let source = self
            .bucket(source_bucket)?
            .store
            .object(source_key)
            .ok_or_else(no_such_key)?;
        let destination = self.bucket(&input.bucket)?;
        conditions::check_copy_source(
            &source,
            input.copy_source_if_match.as_ref(),
            input.copy_source_if_none_match.as_ref(),
        )?;
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if !replace && **source_bucket == *input.bucket && **source_key == *input.key {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes."
            ));
        }
        let options = if replace {
            PutOptions {
                metadata: from_dto_metadata(input.metadata),
                content_type: input.content_type,
                ..Default::default()
            }
        } else {
            PutOptions {
                metadata: source.metadata.clone(),
                content_type: source.content_type.clone(),
                ..Default::default()
            }
        };
        let object = StoredObject::new(source.data, options);
        let result = CopyObjectResult {
            e_tag: Some(etag_dto(&object.etag)),
            last_modified: Some(Timestamp::from(object.last_modified)),
            ..Default::default()
        };
        let previous = destination.store.object(&input.key);
        destination.store.insert(&input.key, object);
        destination
            .persist_or_undo(&input.key, previous)
            .await
            .map_err(persist_error)?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(result),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let bucket = self.bucket(&req.input.bucket)?;
        listing::list_v2(&bucket.store, req.input)
            .await
            .map(S3Response::new)
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let bucket = self.bucket(&req.input.bucket)?;
        listing::list_v1(&bucket.store, req.input)
            .await
            .map(S3Response::new)
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let bucket = self.bucket(&req.input.bucket)?;
        Ok(S3Response::new(listing::list_uploads(
            &bucket.store,
            req.input,
        )?))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        let bucket = self.bucket(&input.bucket)?;
        let options = PutOptions {
            metadata: from_dto_metadata(input.metadata),
            content_type: input.content_type,
            ..Default::default()
        };
        let upload_id = bucket
            .store
            .create_multipart(&input.key, options)
            .await
            .map_err(upload_error)?;
        bucket
            .persist_upload(&upload_id)
            .await
            .map_err(persist_error)?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload_id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        let bucket = self.bucket(&input.bucket)?;
        let number = part_number(input.part_number)?;
        let data = self.maybe_corrupt(collect_body(input.body, input.content_length).await?);
        let digest = checked_digest(&data, input.content_md5.as_deref())?;
        check_crc32c(&data, input.checksum_crc32c.as_deref())?;
        let part = bucket
            .store
            .upload_part_with_digest(&input.key, &input.upload_id, number, data.clone(), digest)
            .map_err(upload_error)?;
        bucket
            .persist_part(&input.upload_id, number, &data)
            .await
            .map_err(persist_error)?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(etag_dto(&part.etag)),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let bucket = self.bucket(&input.bucket)?;
        let requested = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default();
        if requested.is_empty() {
            return Err(s3_error!(
                MalformedXML,
                "The XML you provided did not list any parts"
            ));
        }
        let mut parts = Vec::with_capacity(requested.len());
        for part in requested {
            let number = part_number(part.part_number.unwrap_or(0))?;
            if parts
                .last()
                .is_some_and(|p: &StoreCompletedPart| p.part_number >= number)
            {
                return Err(s3_error!(
                    InvalidPartOrder,
                    "The list of parts was not in ascending order."
                ));
            }
            let etag = part
                .e_tag
                .map(|e| stored_etag(e.value()))
                .unwrap_or_default();
            parts.push(StoreCompletedPart {
                part_number: number,
                etag,
                crc32c: None,
            });
        }
        let current = bucket.store.object(&input.key);
        conditions::check_write(current.as_ref(), None, input.if_none_match.as_ref())?;
        let exclusive = input.if_none_match.is_some();
        let put = bucket
            .store
            .complete_multipart(&input.key, &input.upload_id, parts, exclusive)
            .await
            .map_err(upload_error)?;
        // A whole-object checksum is checked against the assembled object. Not atomic as on
        // S3 (there the object never appears): enough to catch a client's wrong combination.
        if let Some(object) = bucket.store.object(&input.key)
            && let Err(mismatch) = check_crc32c(&object.data, input.checksum_crc32c.as_deref())
        {
            bucket
                .store
                .restore_unless_changed(&input.key, Some(&object), current);
            return Err(mismatch);
        }
        let persisted = bucket.persist_or_undo(&input.key, current).await;
        // The upload is used up in memory either way; its parts on disk go with it.
        bucket
            .forget_upload(&input.upload_id)
            .await
            .map_err(persist_error)?;
        persisted.map_err(persist_error)?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            location: Some(format!("/{}/{}", input.bucket, input.key)),
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: Some(etag_dto(&put.etag)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        let bucket = self.bucket(&input.bucket)?;
        bucket
            .store
            .abort_multipart(&input.key, &input.upload_id)
            .await
            .map_err(upload_error)?;
        bucket
            .forget_upload(&input.upload_id)
            .await
            .map_err(persist_error)?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }
}

/// The body's MD5 (its ETag), hashed once. As S3: a body whose Content-MD5 does not match
/// what arrived is refused, never stored.
fn checked_digest(data: &[u8], expected: Option<&str>) -> S3Result<[u8; 16]> {
    let digest: [u8; 16] = Md5::digest(data).into();
    match expected {
        Some(expected) if expected.trim() != base64_of(&digest) => Err(s3_error!(
            BadDigest,
            "The Content-MD5 you specified did not match what we received."
        )),
        _ => Ok(digest),
    }
}

/// As S3: a body whose `x-amz-checksum-crc32c` does not match what arrived is refused.
fn check_crc32c(data: &[u8], expected: Option<&str>) -> S3Result<()> {
    match expected {
        Some(expected) if expected.trim() != crc32c_header(crc32c(data)) => Err(s3_error!(
            BadDigest,
            "The CRC32C you specified did not match the calculated checksum."
        )),
        _ => Ok(()),
    }
}

fn content_type_of(object: &StoredObject) -> String {
    object
        .content_type
        .clone()
        .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_string())
}

async fn delete_key(bucket: &Bucket, key: &str) -> S3Result<()> {
    let previous = bucket.store.object(key);
    bucket
        .store
        .delete(key)
        .await
        .map_err(|e| S3Error::with_source(S3ErrorCode::InternalError, Box::new(e)))?;
    bucket
        .persist_or_undo(key, previous)
        .await
        .map_err(persist_error)
}
