//! Connection settings for an S3 bucket. Field names match Scribe Ledger's `S3Config`, so a
//! ledger's `[storage.s3]` table works here unchanged.

use serde::Deserialize;

use super::StoreError;

pub const DEFAULT_REGION: &str = "us-east-1";
pub const DEFAULT_POOL_SIZE: usize = 512;
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// Extra attempts of one request for the `segments` and `uploads` commands and for library
/// users: a command run by a person or a script reports its failure and can be run again.
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// Extra attempts of one request for a mount (10 attempts in all, as mountpoint-s3 makes):
/// nobody can run a failed `close()` again, so a transient fault must not reach the
/// application. A request fails for good only if all 10 attempts fail: with 20% of requests
/// failing at random that is 0.2^10 = 1e-7, so a `cp -a` of 200 files (about 1,000 requests)
/// loses one in 10,000 runs, against 1 in 2 with 3 retries (0.2^4 = 1.6e-3 a request). A
/// dead server still surfaces: one that refuses connections is gone after 3 attempts
/// (`retry::GONE_AFTER`), and any call is bounded by twice the request timeout
/// (`RetryPolicy::from_config`).
pub const MOUNT_MAX_RETRIES: u32 = 9;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    pub bucket: String,
    /// `None`: the profile's region if it names one, else [`DEFAULT_REGION`], corrected by the
    /// bucket's own answer (`x-amz-bucket-region`) at the first HeadBucket.
    pub region: Option<String>,
    /// Custom endpoint (MinIO, the dev server); `None` uses AWS's.
    pub endpoint: Option<String>,
    /// Static credentials; when both are `None` the AWS default chain is used
    /// (environment, profile, instance metadata).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most non-AWS servers.
    pub path_style: bool,
    /// Upper bound on concurrent connections (and so on concurrent requests) to S3.
    pub pool_size: usize,
    /// Per-attempt timeout of one request.
    pub timeout_secs: u64,
    /// Extra attempts after the first for retryable failures.
    pub max_retries: u32,
    /// Profile of ~/.aws/config for the default chain (not a ledger field, so not in the file).
    #[serde(skip)]
    pub profile: Option<String>,
    /// Unsigned requests, for public buckets: no credentials at all.
    #[serde(skip)]
    pub no_sign_request: bool,
    /// Check each download of a whole single-part object against its MD5 ETag; off for a
    /// store whose ETags are not MD5s of the data.
    #[serde(skip)]
    pub check_etag_md5: bool,
    /// Headers a bucket's policy may demand: encryption, storage class, who pays, who owns.
    #[serde(skip)]
    pub requests: RequestOptions,
    /// How uploaded bodies are protected on the way.
    #[serde(skip)]
    pub upload_checksums: UploadChecksums,
}

/// The checksum each PutObject and UploadPart carries, which the server checks before it stores
/// anything (BadDigest otherwise).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UploadChecksums {
    /// `x-amz-checksum-crc32c` per request, and a multipart upload declared CRC32C FULL_OBJECT,
    /// completed with the whole object's CRC: AWS S3 and current S3-compatible servers.
    #[default]
    Crc32c,
    /// `Content-MD5`, for servers that know no flexible checksums (older MinIO, Ceph, ...).
    Md5,
    /// None: TLS and TCP checksums only.
    Off,
}

/// Server-side encryption of written objects: S3's values of `x-amz-server-side-encryption`.
pub const SSE_VALUES: &[&str] = &["AES256", "aws:kms", "aws:kms:dsse"];

/// Storage classes an object can be written with (`x-amz-storage-class`).
pub const STORAGE_CLASSES: &[&str] = &[
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "GLACIER_IR",
    "OUTPOSTS",
    "SNOW",
    "EXPRESS_ONEZONE",
];

/// What every request (or every write) carries beyond the call itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestOptions {
    /// One of [`SSE_VALUES`], sent with PutObject, CreateMultipartUpload and CopyObject.
    pub sse: Option<String>,
    /// The KMS key of `aws:kms` encryption; the bucket's default key when `None`.
    pub sse_kms_key_id: Option<String>,
    /// One of [`STORAGE_CLASSES`], sent with the same writes.
    pub storage_class: Option<String>,
    /// `x-amz-request-payer: requester` on every request: the bucket's owner bills us.
    pub requester_pays: bool,
    /// `x-amz-expected-bucket-owner` on every request: S3 refuses (403) if another account
    /// owns the bucket.
    pub expected_bucket_owner: Option<String>,
    /// Put before the SDK's User-Agent, to tell this mount's requests apart in access logs.
    pub user_agent_prefix: Option<String>,
}

impl RequestOptions {
    /// Checks the values against what S3 accepts, naming the option at fault.
    pub fn validate(&self) -> Result<(), StoreError> {
        if let Some(sse) = &self.sse
            && !SSE_VALUES.contains(&sse.as_str())
        {
            return Err(StoreError::Config(format!(
                "sse {sse:?} is not one of {}",
                SSE_VALUES.join(", ")
            )));
        }
        if self.sse_kms_key_id.is_some()
            && !self
                .sse
                .as_deref()
                .is_some_and(|s| s.starts_with("aws:kms"))
        {
            return Err(StoreError::Config(
                "sse_kms_key_id needs sse aws:kms or aws:kms:dsse".into(),
            ));
        }
        if let Some(class) = &self.storage_class
            && !STORAGE_CLASSES.contains(&class.as_str())
        {
            return Err(StoreError::Config(format!(
                "storage_class {class:?} is not one of {}",
                STORAGE_CLASSES.join(", ")
            )));
        }
        if let Some(owner) = &self.expected_bucket_owner
            && !(owner.len() == 12 && owner.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(StoreError::Config(format!(
                "expected_bucket_owner {owner:?} is not a 12-digit AWS account id"
            )));
        }
        if let Some(prefix) = &self.user_agent_prefix
            && (prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
        {
            return Err(StoreError::Config(format!(
                "user_agent_prefix {prefix:?} must be printable ASCII"
            )));
        }
        Ok(())
    }
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            bucket: String::new(),
            region: None,
            endpoint: None,
            access_key_id: None,
            secret_access_key: None,
            path_style: false,
            pool_size: DEFAULT_POOL_SIZE,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            max_retries: DEFAULT_MAX_RETRIES,
            profile: None,
            no_sign_request: false,
            check_etag_md5: true,
            requests: RequestOptions::default(),
            upload_checksums: UploadChecksums::default(),
        }
    }
}

impl S3Config {
    /// Checks what a client cannot work without, naming the field at fault.
    pub fn validate(&self) -> Result<(), StoreError> {
        if self.bucket.trim().is_empty() {
            return Err(StoreError::Config(
                "bucket name is empty: set --bucket, S3_BUCKET or bucket in [storage.s3]".into(),
            ));
        }
        if self.region.as_ref().is_some_and(|r| r.trim().is_empty()) {
            return Err(StoreError::Config("region is empty".into()));
        }
        if self.pool_size == 0 {
            return Err(StoreError::Config("pool_size must be at least 1".into()));
        }
        if self.timeout_secs == 0 {
            return Err(StoreError::Config("timeout_secs must be at least 1".into()));
        }
        if let Some(endpoint) = &self.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(StoreError::Config(format!(
                "endpoint {endpoint:?} must start with http:// or https://"
            )));
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return Err(StoreError::Config(
                "access_key_id and secret_access_key must be given together".into(),
            ));
        }
        self.requests.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_bucket_is_refused_by_name() {
        let err = S3Config::default().validate().unwrap_err();
        assert!(err.to_string().contains("bucket"), "{err}");
        let config = S3Config {
            bucket: "b".into(),
            ..Default::default()
        };
        assert!(config.validate().is_ok());
    }

    #[test]
    fn half_credentials_and_bad_endpoints_are_refused() {
        let base = S3Config {
            bucket: "b".into(),
            ..Default::default()
        };
        let half = S3Config {
            access_key_id: Some("k".into()),
            ..base.clone()
        };
        assert!(half.validate().is_err());
        let bad = S3Config {
            endpoint: Some("localhost:9000".into()),
            ..base.clone()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("endpoint"));
        let zero_pool = S3Config {
            pool_size: 0,
            ..base
        };
        assert!(zero_pool.validate().is_err());
    }

    #[test]
    fn request_options_are_checked_by_name() {
        let with = |requests: RequestOptions| {
            S3Config {
                bucket: "b".into(),
                requests,
                ..Default::default()
            }
            .validate()
        };
        let kms = RequestOptions {
            sse: Some("aws:kms".into()),
            sse_kms_key_id: Some("arn:aws:kms:us-east-1:111122223333:key/k".into()),
            storage_class: Some("STANDARD_IA".into()),
            requester_pays: true,
            expected_bucket_owner: Some("111122223333".into()),
            user_agent_prefix: Some("backup/1.0".into()),
        };
        assert!(with(kms.clone()).is_ok());
        for (bad, named) in [
            (
                RequestOptions {
                    sse: Some("kms".into()),
                    ..Default::default()
                },
                "sse",
            ),
            (
                RequestOptions {
                    sse: Some("AES256".into()),
                    ..kms.clone()
                },
                "sse_kms_key_id",
            ),
            (
                RequestOptions {
                    storage_class: Some("COLD".into()),
                    ..Default::default()
                },
                "storage_class",
            ),
            (
                RequestOptions {
                    expected_bucket_owner: Some("12".into()),
                    ..Default::default()
                },
                "expected_bucket_owner",
            ),
            (
                RequestOptions {
                    user_agent_prefix: Some("a\nb".into()),
                    ..Default::default()
                },
                "user_agent_prefix",
            ),
        ] {
            let err = with(bad).unwrap_err().to_string();
            assert!(err.contains(named), "{err}");
        }
    }
}
