//! The storage layer's one error type. Every S3 failure is classified here, once, from the SDK's
//! typed errors and HTTP status codes; the layers above only match on variants.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key (or the bucket, for bucket-level calls) does not exist: HTTP 404.
    #[error("not found: {0}")]
    NotFound(String),
    #[error("bucket {0:?} does not exist")]
    NoSuchBucket(String),
    /// HTTP 403: bad credentials, a refused signature, or a policy that forbids the call.
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// No credentials could be had (none configured, a failing `credential_process`, an expired
    /// SSO session): the message names where they were looked for.
    #[error("{0}")]
    Credentials(String),
    /// The bucket answered that it lives in another region, and requests are signed for that
    /// one from now on: sending the same request again will work.
    #[error("the bucket is in region {0}: asking there")]
    RegionMoved(String),
    /// HTTP 412: the object changed since its ETag was read (If-Match failed).
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    /// The store cannot hold this key beside another one (`a` and `a/b` on a file-backed
    /// server): the first name is the key written, the second the one in its way.
    #[error(
        "{0:?} cannot be stored beside {1:?} on this server (a key that is both a file and a directory prefix)"
    )]
    KeyConflict(String, String),
    /// A downloaded body differs from the digest the server stored for it (the MD5 ETag of a
    /// single-part object): damaged on the way. The bytes are never returned; `Retrying` sends
    /// the GET once more, then gives up with this.
    #[error(
        "GET {key:?}: the bytes received do not match the object's MD5 ETag {expected} (got {actual}): damaged on the way, or a store whose ETags are no MD5s (--no-etag-check)"
    )]
    ChecksumMismatch {
        key: String,
        expected: String,
        actual: String,
    },
    /// The TLS handshake failed because the server's certificate is not trusted (unknown
    /// issuer, expired, wrong name): retrying cannot fix it, trusting its CA can.
    #[error(
        "the TLS certificate of {endpoint} is not trusted ({reason}): set AWS_CA_BUNDLE (or SSL_CERT_FILE) to a PEM file holding its CA"
    )]
    UntrustedCertificate { endpoint: String, reason: String },
    /// HTTP 400 and other answers that retrying cannot fix.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// 429/503 SlowDown and friends: retryable.
    #[error("throttled by the server: {0}")]
    Throttled(String),
    /// HTTP 5xx other than throttling: retryable.
    #[error("server error (HTTP {status}): {message}")]
    Server { status: u16, message: String },
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    /// The connection broke once made (reset, closed before the answer, body cut short):
    /// retryable.
    #[error("connection error: {0}")]
    Connection(String),
    /// No connection could be made at all: nobody listens at the endpoint (refused) or there is
    /// no route to it. Retryable, but `Retrying` takes a few of these in a row for a server
    /// that is gone and stops early.
    #[error("cannot connect: {0}")]
    Unreachable(String),
    /// Bad configuration found when building a client (missing bucket, bad endpoint, ...).
    #[error("configuration error: {0}")]
    Config(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A retryable error that kept happening until the retry budget ran out.
    #[error("{source} (gave up after {attempts} attempts)")]
    RetriesExhausted {
        attempts: u32,
        #[source]
        source: Box<StoreError>,
    },
    /// Anything the SDK reported that fits no other class.
    #[error("storage error: {0}")]
    Storage(String),
}

impl StoreError {
    /// Whether sending the same request again may succeed: throttling, 5xx, timeouts, broken
    /// and refused connections. 400/403/404/412 never are.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Throttled(_)
                | StoreError::Server { .. }
                | StoreError::Timeout(_)
                | StoreError::Connection(_)
                | StoreError::Unreachable(_)
                | StoreError::RegionMoved(_)
        )
    }

    /// The error underneath any retry wrapper, for callers that branch on the kind.
    pub fn root(&self) -> &StoreError {
        match self {
            StoreError::RetriesExhausted { source, .. } => source.root(),
            other => other,
        }
    }

    pub fn is_checksum_mismatch(&self) -> bool {
        matches!(self.root(), StoreError::ChecksumMismatch { .. })
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self.root(), StoreError::NotFound(_))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;
