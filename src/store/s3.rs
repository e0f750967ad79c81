//! [`ObjectStore`] over aws-sdk-s3, for AWS S3 and S3-compatible servers (MinIO, Garage, the dev
//! server).
//!
//! - **One try per call.** The SDK's own retries are disabled: [`super::retry::Retrying`] retries
//!   with our classification and resumes broken GET bodies, which the SDK cannot do.
//! - **Bounded connections.** Every request holds a permit of a semaphore of `pool_size`; a GET
//!   keeps it until its body stream ends or is dropped. No more than `pool_size` requests are
//!   therefore on the wire at once, so hyper never needs more than `pool_size` connections.
//! - **Timeouts.** `timeout_secs` bounds connecting and each attempt up to the response headers;
//!   a body that stalls mid-way is caught by the SDK's stalled-stream protection (kept on).
//! - **Integrity.** PutObject and UploadPart carry a checksum the server checks (BadDigest,
//!   retried) before it stores a body damaged on the way: CRC32C by default (a multipart upload
//!   is declared CRC32C FULL_OBJECT and completed with the object's CRC, combined from the
//!   parts'), Content-MD5 for servers without flexible checksums (`--upload-checksums md5`).
//!   A GET whose answer covers a whole object of at most [`MAX_VERIFIED_BODY`] bytes with a
//!   plain MD5 ETag (single-part, not SSE-KMS/SSE-C) is read in full and checked before it is
//!   returned (`ChecksumMismatch`).
//! - **Errors** are classified in `errors` from typed SDK facts, never from display strings.
//! - **Small requests are fast.** The SDK's default hyper client sets `TCP_NODELAY` (smithy
//!   http-client 1.5 does so by default), so a small GET is not held back by Nagle's algorithm.

mod body;
mod encoding;
mod errors;
mod headers;
mod lean;
mod lean_get;
mod lean_head;
mod region;
mod sigv4;
pub mod tls;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream as SdkByteStream, DateTime};
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumType, CompletedMultipartUpload, EncodingType, MetadataDirective,
    ServerSideEncryption, StorageClass,
};
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use self::body::{
    Fetched, Mismatch, collect_checked, etag_is_content_md5, permit_holding_body, sdk_body,
};
use self::encoding::{decode_listing_value, encode_copy_source};
use self::errors::{CallContext, HasStatus, from_sdk_error, is_bare_server_error};
use self::lean::{Lean, LeanShared};
use self::region::{Target, endpoint_name, profile_region};
use super::checksum::{content_md5, crc32c, crc32c_combine, crc32c_header, etag_md5};
use super::config::{DEFAULT_REGION, RequestOptions, S3Config, UploadChecksums};
use super::{
    ByteStream, CompletedPart, CopyMetadata, GetObjectOutput, GetRequest, ListPage, ListRequest,
    ObjectMeta, ObjectStore, ObjectSummary, PartCrc, PendingUpload, PutOptions, PutOutput,
    StoreError, StoreResult, UserMetadata,
};

/// A GET answer covering a whole object up to this size is read in full and checked against
/// the object's MD5 ETag before the caller sees a byte; larger bodies stream unchecked (the
/// block cache reads large objects in ranges, which no stored digest covers).
pub const MAX_VERIFIED_BODY: u64 = 16 << 20;

/// At most this many parents of a key are checked when a write may have hit a key conflict.
const MAX_CONFLICT_PROBES: usize = 16;

/// The [`ObjectMeta`] of an SDK HeadObject or GetObject output (the two share no trait), of
/// `size` bytes; a missing ETag fails the calling function.
macro_rules! sdk_object_meta {
    ($store:expr, $op:literal, $key:expr, $output:expr, $size:expr) => {
        ObjectMeta {
            key: $key.to_string(),
            size: $size,
            etag: $output
                .e_tag()
                .ok_or_else(|| $store.missing($op, $key, "ETag"))?
                .to_string(),
            last_modified: system_time($output.last_modified()),
            metadata: user_metadata($output.metadata()),
            content_type: $output.content_type().map(str::to_string),
        }
    };
}

pub struct S3Store {
    /// The client and the region it signs for. Replaced once when a bucket whose region was
    /// not given answers that it lives in another one.
    target: RwLock<Arc<Target>>,
    /// The region came from the user (flag, environment, file): it is never changed.
    region_given: bool,
    bucket: String,
    /// What supplies the credentials, for the message when they cannot be had.
    credentials: String,
    timeout: Duration,
    permits: Arc<Semaphore>,
    check_etag_md5: bool,
    requests: RequestOptions,
    checksums: UploadChecksums,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let target = self.target();
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .field("endpoint", &target.endpoint)
            .field("region", &target.region)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// Builds a client; nothing is sent yet (call [`ObjectStore::head_bucket`] to check access,
    /// which also finds the bucket's region when none was given). Static keys are used when
    /// given, else the AWS default chain: environment, profile files (static keys,
    /// `credential_process`, SSO, assumed roles), web identity, ECS and instance metadata.
    pub async fn new(config: &S3Config) -> StoreResult<S3Store> {
        config.validate()?;
        let timeout = Duration::from_secs(config.timeout_secs);
        let profile = config
            .profile
            .clone()
            .or_else(|| std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty()));
        let region = match &config.region {
            Some(region) => region.clone(),
            None => profile_region(profile.as_deref())
                .await
                .unwrap_or_else(|| DEFAULT_REGION.to_string()),
        };
        let mut loader =
            aws_config::defaults(BehaviorVersion::latest()).region(Region::new(region.clone()));
        let bundle = tls::bundle_from_env()?;
        if let Some(bundle) = &bundle {
            loader = loader.http_client(tls::sdk_client(bundle.clone()));
        }
        if let Some(profile) = &config.profile {
            loader = loader.profile_name(profile);
        }
        let credentials = if config.no_sign_request {
            loader = loader.no_credentials();
            "none (unsigned requests)".to_string()
        } else if let (Some(key), Some(secret)) = (&config.access_key_id, &config.secret_access_key)
        {
            loader = loader.credentials_provider(Credentials::new(
                key.clone(),
                secret.clone(),
                None,
                None,
                "scribefs-config",
            ));
            format!("the configured access key {key}")
        } else {
            match &profile {
                Some(profile) => format!("profile {profile:?}"),
                None => "the AWS default chain (environment, ~/.aws files, web identity, ECS, instance metadata)".to_string(),
            }
        };
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.path_style)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(timeout)
                    .operation_attempt_timeout(timeout)
                    .build(),
            )
            // Checksums only where an operation requires them: several S3-compatible servers
            // reject the flexible-checksum headers the SDK adds by default, and a full-object
            // checksum sent with a ranged GET would fail validation.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .interceptor(headers::BucketHeaders::new(&config.requests));
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint.clone());
        }
        let lean = lean_requests_enabled().then(|| {
            let shared = LeanShared::new(
                tls::connector(bundle, None, None),
                shared.credentials_provider(),
                headers::signed_headers(&config.requests),
                config.requests.user_agent_prefix.as_deref(),
            );
            Lean::new(Arc::new(shared))
        });
        let target = Target {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            endpoint: endpoint_name(config.endpoint.as_deref(), &region),
            region,
            lean,
        };
        Ok(S3Store {
            target: RwLock::new(Arc::new(target)),
            region_given: config.region.is_some(),
            bucket: config.bucket.clone(),
            credentials,
            timeout,
            permits: Arc::new(Semaphore::new(config.pool_size)),
            check_etag_md5: config.check_etag_md5,
            requests: config.requests.clone(),
            checksums: config.upload_checksums,
        })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn endpoint(&self) -> String {
        self.target().endpoint.clone()
    }

    /// The region requests are signed for (the bucket's, once a HeadBucket has found it).
    pub fn region(&self) -> String {
        self.target().region.clone()
    }

    /// The SDK client, for callers (tests, tools) that need a call the trait does not offer.
    pub fn client(&self) -> aws_sdk_s3::Client {
        self.target().client.clone()
    }

    fn target(&self) -> Arc<Target> {
        // A poisoned lock still holds a whole Arc: writers only swap it.
        Arc::clone(&self.target.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Signs for `region` from now on: a bucket whose region was not given told us its own.
    fn move_to_region(&self, region: &str) {
        let mut target = self.target.write().unwrap_or_else(|e| e.into_inner());
        if target.region == region {
            return;
        }
        tracing::info!(bucket = %self.bucket, from = %target.region, to = region, "the bucket is in another region: signing for its own");
        *target = Arc::new(target.in_region(region));
    }

    /// HeadObject through the SDK: every HEAD the lean path does not decide.
    async fn sdk_head(&self, target: &Target, key: &str) -> StoreResult<ObjectMeta> {
        let output = target
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.error("HEAD", key, e))?;
        Ok(sdk_object_meta!(
            self,
            "HEAD",
            key,
            output,
            length(output.content_length())
        ))
    }

    /// GetObject through the SDK: ranged and conditional GETs, and every whole GET the lean
    /// path does not decide.
    async fn sdk_get(
        &self,
        target: &Target,
        key: &str,
        range: Option<String>,
        if_match: Option<String>,
    ) -> StoreResult<Fetched> {
        let output = target
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_range(range)
            .set_if_match(if_match)
            .send()
            .await
            .map_err(|e| self.error("GET", key, e))?;
        let body_length = length(output.content_length());
        let (range, size) = match output.content_range() {
            Some(value) => parse_content_range(value)
                .ok_or_else(|| self.missing("GET", key, "valid Content-Range"))?,
            None => (0..body_length, body_length),
        };
        let meta = sdk_object_meta!(self, "GET", key, output, size);
        let md5_etag = etag_is_content_md5(
            output.server_side_encryption().map(|e| e.as_str()),
            output.sse_customer_algorithm().is_some(),
        );
        Ok(Fetched {
            meta,
            range,
            md5_etag,
            body: sdk_body(output.body),
        })
    }

    async fn permit(&self) -> StoreResult<OwnedSemaphorePermit> {
        // The semaphore is never closed, so this fails only if that invariant is broken.
        Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Storage("connection pool closed".into()))
    }

    fn error<E, R>(&self, op: &'static str, key: &str, err: SdkError<E, R>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + HasStatus + 'static,
    {
        if !self.region_given
            && let Some(region) = errors::bucket_region(&err)
            && region != self.target().region
        {
            self.move_to_region(&region);
            return StoreError::RegionMoved(region);
        }
        let target = self.target();
        from_sdk_error(err, &self.context(op, key, &target))
    }

    fn context<'a>(
        &'a self,
        op: &'static str,
        key: &'a str,
        target: &'a Target,
    ) -> CallContext<'a> {
        CallContext {
            op,
            key,
            bucket: &self.bucket,
            endpoint: &target.endpoint,
            region: &target.region,
            region_given: self.region_given,
            credentials: &self.credentials,
            timeout: self.timeout,
        }
    }

    /// The ETag of a successful write. Some servers (file-backed ones, for `dir/` markers) answer
    /// 2xx without one: the write still succeeded, so ask a HEAD; if even that cannot say, the
    /// write is reported with an empty ETag rather than as a failure.
    async fn etag_or_head(
        &self,
        op: &'static str,
        key: &str,
        etag: Option<&str>,
    ) -> StoreResult<PutOutput> {
        if let Some(etag) = etag.filter(|e| !e.is_empty()) {
            return Ok(PutOutput {
                etag: etag.to_string(),
            });
        }
        let etag = match self.head(key).await {
            Ok(meta) => meta.etag,
            Err(error) => {
                tracing::debug!(op, key, %error, "answer without an ETag, and no HEAD either");
                String::new()
            }
        };
        Ok(PutOutput { etag })
    }

    /// A write of `key` answered with a bare 500 (no message: what file-backed servers such as
    /// s3s-fs send when the file system refuses) may have failed because the key cannot live
    /// beside another (`a` and `a/b`). If such a key is there, that is the error, and it is not
    /// retryable; otherwise the 500 stands. AWS and MinIO explain their 500s, so they are never
    /// probed.
    async fn write_error(&self, key: &str, error: StoreError, bare: bool) -> StoreError {
        if !bare {
            return error;
        }
        match self.conflicting_key(key).await {
            Some(other) => {
                tracing::warn!(
                    key,
                    other,
                    "the server cannot store this key beside another one"
                );
                StoreError::KeyConflict(key.to_string(), other)
            }
            None => error,
        }
    }

    /// An object that is a parent directory of `key`, or (for a file key) a key below `key/`.
    async fn conflicting_key(&self, key: &str) -> Option<String> {
        let trimmed = key.trim_end_matches('/');
        let mut parents: Vec<&str> = trimmed
            .match_indices('/')
            .map(|(i, _)| &trimmed[..i])
            .collect();
        if key.ends_with('/') {
            parents.push(trimmed);
        }
        // Nearest parents first; a very deep key is not probed all the way up.
        for parent in parents.into_iter().rev().take(MAX_CONFLICT_PROBES) {
            if !parent.is_empty() && self.head(parent).await.is_ok() {
                return Some(parent.to_string());
            }
        }
        if key.ends_with('/') {
            return None;
        }
        let below = ListRequest {
            prefix: format!("{key}/"),
            max_keys: Some(1),
            ..Default::default()
        };
        let page = self.list(below).await.ok()?;
        let child = page.objects.first().map(|o| o.key.clone());
        child.or_else(|| page.common_prefixes.first().cloned())
    }

    fn missing(&self, op: &'static str, key: &str, what: &str) -> StoreError {
        StoreError::Storage(format!(
            "{op} {key:?} on bucket {:?} at {}: the answer carried no {what}",
            self.bucket,
            self.target().endpoint
        ))
    }
}

impl S3Store {
    fn content_md5(&self, body: &[u8]) -> Option<String> {
        (self.checksums == UploadChecksums::Md5).then(|| content_md5(body))
    }

    fn crc32c(&self, body: &[u8]) -> Option<u32> {
        (self.checksums == UploadChecksums::Crc32c).then(|| crc32c(body))
    }

    /// Named beside the value (`x-amz-sdk-checksum-algorithm`): S3 needs only the value, some
    /// servers (moto) keep it only when named. A value set here keeps the SDK from hashing the
    /// body again or switching to aws-chunked encoding.
    fn checksum_algorithm(&self) -> Option<ChecksumAlgorithm> {
        (self.checksums == UploadChecksums::Crc32c).then_some(ChecksumAlgorithm::Crc32C)
    }

    fn sse(&self) -> Option<ServerSideEncryption> {
        self.requests.sse.as_deref().map(ServerSideEncryption::from)
    }

    fn storage_class(&self) -> Option<StorageClass> {
        self.requests
            .storage_class
            .as_deref()
            .map(StorageClass::from)
    }
}

/// HEADs and whole GETs go the lean way (`lean`) unless `SCRIBEFS_LEAN_HEAD=0` (the name it
/// had when only HEADs went so): a switch to compare the two paths in a benchmark, or to rule
/// the lean one out when chasing a problem.
fn lean_requests_enabled() -> bool {
    std::env::var("SCRIBEFS_LEAN_HEAD").map_or(true, |v| v != "0")
}

/// `Range: bytes=a-b` with an inclusive end, from a half-open range.
fn range_header(key: &str, range: &Range<u64>) -> StoreResult<String> {
    if range.start >= range.end {
        return Err(StoreError::InvalidRequest(format!(
            "empty range {}..{} for {key}",
            range.start, range.end
        )));
    }
    Ok(format!("bytes={}-{}", range.start, range.end - 1))
}

/// Parses `Content-Range: bytes a-b/size` into the half-open range and the object size.
fn parse_content_range(value: &str) -> Option<(Range<u64>, u64)> {
    let (span, size) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let (first, last): (u64, u64) = (first.trim().parse().ok()?, last.trim().parse().ok()?);
    let size = size.trim().parse().ok()?;
    (first <= last).then_some((first..last + 1, size))
}

fn system_time(time: Option<&DateTime>) -> SystemTime {
    time.and_then(|t| SystemTime::try_from(*t).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

fn user_metadata(metadata: Option<&HashMap<String, String>>) -> UserMetadata {
    metadata
        .into_iter()
        .flatten()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
        .collect()
}

fn sdk_metadata(metadata: UserMetadata) -> Option<HashMap<String, String>> {
    (!metadata.is_empty()).then(|| metadata.into_iter().collect())
}

fn length(value: Option<i64>) -> u64 {
    value.map_or(0, |v| v.max(0) as u64)
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        let _permit = self.permit().await?;
        let target = self.target();
        let Some(lean) = &target.lean else {
            return self.sdk_head(&target, key).await;
        };
        let context = self.context("HEAD", key, &target);
        let answer = lean.head(&target.client, &context).await;
        lean.settle(answer, async || self.sdk_head(&target, key).await)
            .await
    }

    async fn get(&self, request: GetRequest) -> StoreResult<GetObjectOutput> {
        let key = request.key.as_str();
        let range = request
            .range
            .as_ref()
            .map(|r| range_header(key, r))
            .transpose()?;
        let permit = self.permit().await?;
        let target = self.target();
        let sdk = async || {
            self.sdk_get(&target, key, range.clone(), request.if_match.clone())
                .await
        };
        let fetched = match &target.lean {
            // The lean GET reads whole objects only: ranges and conditions stay with the SDK.
            Some(lean) if request.range.is_none() && request.if_match.is_none() => {
                let context = self.context("GET", key, &target);
                let answer = lean.get(&target.client, &context).await;
                lean.settle(answer, sdk).await?
            }
            _ => sdk().await?,
        };
        let Fetched {
            meta,
            range,
            md5_etag,
            body,
        } = fetched;
        let what = format!("GET {key:?} from {}", target.endpoint);
        let whole = range == (0..meta.size) && meta.size <= MAX_VERIFIED_BODY;
        let digest = (self.check_etag_md5 && whole && md5_etag)
            .then(|| etag_md5(&meta.etag))
            .flatten();
        let Some(expected) = digest else {
            let body = permit_holding_body(body, permit, what);
            return Ok(GetObjectOutput { meta, range, body });
        };
        let body = collect_checked(body, meta.size, &expected, &what).await;
        drop(permit);
        let body = body.map_err(|mismatch| match mismatch {
            Mismatch::Body(error) => error,
            Mismatch::Digest(actual) => StoreError::ChecksumMismatch {
                key: key.to_string(),
                expected: meta.etag.clone(),
                actual,
            },
        })?;
        let body: ByteStream = Box::pin(futures::stream::iter(
            (!body.is_empty()).then_some(Ok(body)),
        ));
        Ok(GetObjectOutput { meta, range, body })
    }

    /// Bodies are sent with UNSIGNED-PAYLOAD: the signed checksum header (CRC32C, or Content-MD5)
    /// already binds the body (the server checks it), and hashing it again for SigV4 cost a
    /// fifth of the CPU of a write (SHA-256 beside MD5, profiled with perf on a 512 MiB dd).
    async fn put(&self, key: &str, body: Bytes, options: PutOptions) -> StoreResult<PutOutput> {
        let _permit = self.permit().await?;
        let output = self
            .client()
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .set_content_md5(self.content_md5(&body))
            .set_checksum_crc32_c(self.crc32c(&body).map(crc32c_header))
            .set_checksum_algorithm(self.checksum_algorithm())
            .body(SdkByteStream::from(body))
            .set_metadata(sdk_metadata(options.metadata))
            .set_content_type(options.content_type)
            .set_if_none_match(options.if_none_match.then(|| "*".to_string()))
            .set_server_side_encryption(self.sse())
            .set_ssekms_key_id(self.requests.sse_kms_key_id.clone())
            .set_storage_class(self.storage_class())
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| (is_bare_server_error(&e), self.error("PUT", key, e)));
        let output = match output {
            Ok(output) => output,
            Err((bare, error)) => return Err(self.write_error(key, error, bare).await),
        };
        drop(_permit);
        self.etag_or_head("PUT", key, output.e_tag()).await
    }

    async fn create_multipart(&self, key: &str, options: PutOptions) -> StoreResult<String> {
        let _permit = self.permit().await?;
        let output = self
            .client()
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .set_metadata(sdk_metadata(options.metadata))
            .set_content_type(options.content_type)
            .set_server_side_encryption(self.sse())
            .set_ssekms_key_id(self.requests.sse_kms_key_id.clone())
            .set_storage_class(self.storage_class())
            .set_checksum_algorithm(self.checksum_algorithm())
            .set_checksum_type(
                (self.checksums == UploadChecksums::Crc32c).then_some(ChecksumType::FullObject),
            )
            .send()
            .await
            .map_err(|e| {
                (
                    is_bare_server_error(&e),
                    self.error("CreateMultipartUpload", key, e),
                )
            });
        let output = match output {
            Ok(output) => output,
            Err((bare, error)) => return Err(self.write_error(key, error, bare).await),
        };
        let upload_id = output
            .upload_id()
            .ok_or_else(|| self.missing("CreateMultipartUpload", key, "upload id"))?;
        Ok(upload_id.to_string())
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
    ) -> StoreResult<CompletedPart> {
        let number = i32::try_from(part_number)
            .map_err(|_| StoreError::InvalidRequest(format!("part number {part_number}")))?;
        let crc32c = self.crc32c(&body).map(|crc32c| PartCrc {
            crc32c,
            len: body.len() as u64,
        });
        let _permit = self.permit().await?;
        let output = self
            .client()
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .set_content_md5(self.content_md5(&body))
            .set_checksum_crc32_c(crc32c.map(|c| crc32c_header(c.crc32c)))
            .set_checksum_algorithm(self.checksum_algorithm())
            .body(SdkByteStream::from(body))
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| self.error("UploadPart", key, e))?;
        let etag = output
            .e_tag()
            .ok_or_else(|| self.missing("UploadPart", key, "ETag"))?;
        Ok(CompletedPart {
            part_number,
            etag: etag.to_string(),
            crc32c,
        })
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        if_none_match: bool,
    ) -> StoreResult<PutOutput> {
        // The whole object's CRC32C, combined from the parts' in order; only when every part
        // was sent with one (an upload begun by another client may not have been).
        let full_crc = parts.iter().try_fold(None, |whole: Option<u32>, part| {
            let crc = part.crc32c?;
            Some(Some(match whole {
                None => crc.crc32c,
                Some(before) => crc32c_combine(before, crc.crc32c, crc.len),
            }))
        });
        let full_crc = full_crc.flatten();
        let mut sdk_parts = Vec::with_capacity(parts.len());
        for part in parts {
            let number = i32::try_from(part.part_number).map_err(|_| {
                StoreError::InvalidRequest(format!("part number {}", part.part_number))
            })?;
            sdk_parts.push(
                aws_sdk_s3::types::CompletedPart::builder()
                    .part_number(number)
                    .e_tag(part.etag)
                    .set_checksum_crc32_c(
                        part.crc32c
                            .filter(|_| full_crc.is_some())
                            .map(|c| crc32c_header(c.crc32c)),
                    )
                    .build(),
            );
        }
        let upload = CompletedMultipartUpload::builder()
            .set_parts(Some(sdk_parts))
            .build();
        let _permit = self.permit().await?;
        let output = self
            .client()
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(upload)
            .set_if_none_match(if_none_match.then(|| "*".to_string()))
            .set_checksum_crc32_c(full_crc.map(crc32c_header))
            .set_checksum_type(full_crc.map(|_| ChecksumType::FullObject))
            .send()
            .await
            .map_err(|e| {
                (
                    is_bare_server_error(&e),
                    self.error("CompleteMultipartUpload", key, e),
                )
            });
        let output = match output {
            Ok(output) => output,
            Err((bare, error)) => return Err(self.write_error(key, error, bare).await),
        };
        let etag = output
            .e_tag()
            .ok_or_else(|| self.missing("CompleteMultipartUpload", key, "ETag"))?;
        Ok(PutOutput {
            etag: etag.to_string(),
        })
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> StoreResult<()> {
        let _permit = self.permit().await?;
        self.client()
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| self.error("AbortMultipartUpload", key, e))?;
        Ok(())
    }

    async fn copy(
        &self,
        source_key: &str,
        dest_key: &str,
        metadata: CopyMetadata,
    ) -> StoreResult<PutOutput> {
        let mut request = self
            .client()
            .copy_object()
            .bucket(&self.bucket)
            .key(dest_key)
            .copy_source(encode_copy_source(&self.bucket, source_key))
            // A copy is a new object: without these it would lose the mount's encryption.
            .set_server_side_encryption(self.sse())
            .set_ssekms_key_id(self.requests.sse_kms_key_id.clone())
            .set_storage_class(self.storage_class());
        let replacement = match metadata {
            CopyMetadata::Keep => None,
            CopyMetadata::Replace(metadata) => {
                // REPLACE replaces the Content-Type too: carry the source's over, and pin the
                // source version so type and data come from the same object.
                let source = {
                    let _permit = self.permit().await?;
                    self.client()
                        .head_object()
                        .bucket(&self.bucket)
                        .key(source_key)
                        .send()
                        .await
                        .map_err(|e| self.error("CopyObject (HEAD of source)", source_key, e))?
                };
                Some((
                    metadata,
                    source.content_type().map(str::to_string),
                    source.e_tag().map(str::to_string),
                ))
            }
            CopyMetadata::ReplaceKnown {
                metadata,
                content_type,
                source_etag,
            } => Some((metadata, content_type, source_etag)),
        };
        if let Some((metadata, content_type, source_etag)) = replacement {
            request = request
                .metadata_directive(MetadataDirective::Replace)
                .set_metadata(Some(metadata.into_iter().collect()))
                .set_content_type(content_type)
                .set_copy_source_if_match(source_etag);
        }
        let _permit = self.permit().await?;
        let output = request.send().await.map_err(|e| {
            (
                is_bare_server_error(&e),
                self.error("CopyObject", source_key, e),
            )
        });
        let output = match output {
            Ok(output) => output,
            Err((bare, error)) => return Err(self.write_error(dest_key, error, bare).await),
        };
        drop(_permit);
        let etag = output
            .copy_object_result()
            .and_then(|result| result.e_tag());
        self.etag_or_head("CopyObject", dest_key, etag).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        let _permit = self.permit().await?;
        self.client()
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.error("DELETE", key, e))?;
        Ok(())
    }

    async fn list(&self, request: ListRequest) -> StoreResult<ListPage> {
        let max_keys = request
            .max_keys
            .map(|n| i32::try_from(n).unwrap_or(i32::MAX));
        let output = {
            let _permit = self.permit().await?;
            self.client()
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&request.prefix)
                .set_delimiter(request.delimiter.clone())
                .set_continuation_token(request.continuation_token.clone())
                .set_start_after(request.start_after.clone())
                .set_max_keys(max_keys)
                // Keys may hold characters XML 1.0 cannot carry; ask for them URL-encoded.
                .encoding_type(EncodingType::Url)
                .send()
                .await
                .map_err(|e| self.error("LIST", &request.prefix, e))?
        };
        // Decode only if the server says it encoded: some servers ignore the request.
        let encoded = output.encoding_type() == Some(&EncodingType::Url);
        let decode = |value: &str| -> StoreResult<String> {
            if !encoded {
                return Ok(value.to_string());
            }
            decode_listing_value(value).ok_or_else(|| {
                StoreError::Storage(format!(
                    "LIST {:?} on bucket {:?}: key {value:?} is not valid URL-encoded UTF-8",
                    request.prefix, self.bucket
                ))
            })
        };
        let mut objects = Vec::with_capacity(output.contents().len());
        for object in output.contents() {
            let Some(key) = object.key() else { continue };
            objects.push(ObjectSummary {
                key: decode(key)?,
                size: length(object.size()),
                etag: object.e_tag().unwrap_or_default().to_string(),
                last_modified: system_time(object.last_modified()),
            });
        }
        let mut common_prefixes = Vec::with_capacity(output.common_prefixes().len());
        for prefix in output.common_prefixes() {
            if let Some(prefix) = prefix.prefix() {
                common_prefixes.push(decode(prefix)?);
            }
        }
        let next_continuation_token = match output.is_truncated() {
            Some(true) => output.next_continuation_token().map(str::to_string),
            _ => None,
        };
        Ok(ListPage {
            objects,
            common_prefixes,
            next_continuation_token,
        })
    }

    async fn list_uploads(&self, prefix: &str) -> StoreResult<Vec<PendingUpload>> {
        let mut uploads = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        loop {
            let output = {
                let _permit = self.permit().await?;
                self.client()
                    .list_multipart_uploads()
                    .bucket(&self.bucket)
                    .prefix(prefix)
                    .set_key_marker(key_marker.clone())
                    .set_upload_id_marker(id_marker.clone())
                    .encoding_type(EncodingType::Url)
                    .send()
                    .await
                    .map_err(|e| self.error("ListMultipartUploads", prefix, e))?
            };
            let encoded = output.encoding_type() == Some(&EncodingType::Url);
            let decode = |value: &str| -> StoreResult<String> {
                if !encoded {
                    return Ok(value.to_string());
                }
                decode_listing_value(value).ok_or_else(|| {
                    StoreError::Storage(format!(
                        "ListMultipartUploads {prefix:?} on bucket {:?}: key {value:?} is not valid URL-encoded UTF-8",
                        self.bucket
                    ))
                })
            };
            for upload in output.uploads() {
                let (Some(key), Some(upload_id)) = (upload.key(), upload.upload_id()) else {
                    continue;
                };
                uploads.push(PendingUpload {
                    key: decode(key)?,
                    upload_id: upload_id.to_string(),
                    initiated: system_time(upload.initiated()),
                });
            }
            let next_key = output.next_key_marker().filter(|m| !m.is_empty());
            match (output.is_truncated(), next_key) {
                (Some(true), Some(next)) => {
                    key_marker = Some(decode(next)?);
                    id_marker = output.next_upload_id_marker().map(str::to_string);
                }
                _ => break,
            }
        }
        uploads.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
        Ok(uploads)
    }

    /// Also finds the bucket's region when none was given: a bucket asked in the wrong region
    /// answers with its own in `x-amz-bucket-region` (301 or 400); [`Self::error`] then signs
    /// for that region, and the question is asked there at once (any other call is sent again
    /// by `Retrying`).
    async fn head_bucket(&self) -> StoreResult<()> {
        let _permit = self.permit().await?;
        let mut moved = false;
        loop {
            let err = match self
                .client()
                .head_bucket()
                .bucket(&self.bucket)
                .send()
                .await
            {
                Ok(_) => return Ok(()),
                Err(err) => self.error("HeadBucket", "", err),
            };
            return Err(match err {
                StoreError::RegionMoved(_) if !moved => {
                    moved = true;
                    continue;
                }
                StoreError::NotFound(_) => StoreError::NoSuchBucket(self.bucket.clone()),
                other => other,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_become_inclusive_headers() {
        assert_eq!(range_header("k", &(0..4096)).unwrap(), "bytes=0-4095");
        assert_eq!(range_header("k", &(10..11)).unwrap(), "bytes=10-10");
        assert!(matches!(
            range_header("k", &(5..5)),
            Err(StoreError::InvalidRequest(_))
        ));
    }

    #[test]
    fn content_ranges_parse_to_half_open_ranges() {
        assert_eq!(parse_content_range("bytes 0-99/1000"), Some((0..100, 1000)));
        assert_eq!(parse_content_range("bytes 5-5/6"), Some((5..6, 6)));
        assert_eq!(parse_content_range("bytes */1000"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }

    #[tokio::test]
    async fn construction_checks_the_config_first() {
        let err = S3Store::new(&S3Config::default()).await.unwrap_err();
        assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    }
}
