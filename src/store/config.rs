//! Connection settings for an S3 bucket. Field names match Scribe Ledger's `S3Config`, so a
//! ledger's `[storage.s3]` table works here unchanged.

use serde::Deserialize;

use super::StoreError;

pub const DEFAULT_REGION: &str = "us-east-1";
pub const DEFAULT_POOL_SIZE: usize = 128;
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// Extra attempts of one request for the `segments` and `uploads` commands and for library
/// users: a command run by a person or a script reports its failure and can be run again.
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// Extra attempts of one request for a mount (10 attempts in all, as mountpoint-s3 makes):
/// nobody can run a failed `close()` again, so a transient fault must not reach the
/// application. A request fails for good only if all 10 attempts fail: with 20% of requests
/// failing at random that is 0.2^10 = 1e-7, so a `cp -a` of 200 files (about 1,000 requests)
/// loses one in 10,000 runs, against 1 in 2 with 3 retries (0.2^4 = 1.6e-3 a request). A
/// dead server still surfaces: the pauses of 9 retries add up to 32.7 s at most, and a call
/// is bounded by twice the request timeout (`RetryPolicy::from_config`).
pub const MOUNT_MAX_RETRIES: u32 = 9;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    pub bucket: String,
    pub region: String,
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
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            bucket: String::new(),
            region: DEFAULT_REGION.to_string(),
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
        if self.region.trim().is_empty() {
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
        Ok(())
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
}
