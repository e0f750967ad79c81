//! The write path's one error type. Store failures keep the S3 call that failed and the key, so
//! the error a user finally sees names the cause; every variant is `Clone` (sources behind `Arc`)
//! because a failed upload returns the same error to every later call.

use std::fmt;
use std::io;
use std::ops::Deref;
use std::sync::Arc;

use crate::store::StoreError;

/// The S3 call behind an [`UploadError::Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOperation {
    PutObject,
    CreateMultipartUpload,
    UploadPart { part_number: u32 },
    CompleteMultipartUpload,
    GetObject,
}

impl fmt::Display for StoreOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreOperation::PutObject => f.write_str("PutObject"),
            StoreOperation::CreateMultipartUpload => f.write_str("CreateMultipartUpload"),
            StoreOperation::UploadPart { part_number } => write!(f, "UploadPart {part_number}"),
            StoreOperation::CompleteMultipartUpload => f.write_str("CompleteMultipartUpload"),
            StoreOperation::GetObject => f.write_str("GetObject"),
        }
    }
}

/// An S3 call of the write path that failed: which call, on which key, and what S3 said.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation} of {key:?} failed: {source}")]
pub struct StoreFailure {
    pub operation: StoreOperation,
    pub key: String,
    #[source]
    pub source: Arc<StoreError>,
}

/// A `StoreFailure` is S3's error with context: code that maps store errors (to errno, say)
/// takes it as the `StoreError` it wraps.
impl Deref for StoreFailure {
    type Target = StoreError;

    fn deref(&self) -> &StoreError {
        &self.source
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum UploadError {
    /// A streaming upload only takes the next byte: the fs layer stages such files instead.
    #[error(
        "write at offset {got}, but the upload holds {expected} bytes (sequential writes only)"
    )]
    OutOfOrder { expected: u64, got: u64 },
    #[error(transparent)]
    Store(StoreFailure),
    /// Reading or writing the local staging file failed.
    #[error("staging file I/O failed: {0}")]
    Io(#[source] Arc<io::Error>),
    /// The object would pass S3's 5 TiB limit (and with it the 10,000-part limit).
    #[error("object would reach {size} bytes, more than S3 stores in one object")]
    TooLarge { size: u64 },
    /// A part's task ended without an answer from S3 (it panicked or was cancelled).
    #[error("the task uploading part {part_number} ended without a result: {message}")]
    PartTaskLost { part_number: u32, message: String },
    /// The object's body did not have the size its metadata promised.
    #[error("{key:?} should have {expected} bytes but the download gave {actual}")]
    SizeMismatch {
        key: String,
        expected: u64,
        actual: u64,
    },
    #[error("invalid upload configuration: {0}")]
    InvalidConfig(String),
}

impl UploadError {
    pub(crate) fn store(operation: StoreOperation, key: &str, source: StoreError) -> Self {
        UploadError::Store(StoreFailure {
            operation,
            key: key.to_string(),
            source: Arc::new(source),
        })
    }

    /// The S3 call that failed, if this is a store failure.
    pub fn failed_operation(&self) -> Option<StoreOperation> {
        match self {
            UploadError::Store(failure) => Some(failure.operation),
            _ => None,
        }
    }

    /// The S3 error underneath, for callers that map error kinds (403, 412, ...) to errno.
    pub fn store_error(&self) -> Option<&StoreError> {
        match self {
            UploadError::Store(failure) => Some(failure),
            _ => None,
        }
    }
}

impl From<io::Error> for UploadError {
    fn from(error: io::Error) -> Self {
        UploadError::Io(Arc::new(error))
    }
}
