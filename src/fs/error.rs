//! The file system's error type and the one place every error becomes an errno. The matches
//! are exhaustive on purpose: a new variant anywhere below forces a decision here.

use crate::store::StoreError;
use crate::upload::UploadError;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDirectory,
    #[error("is a directory")]
    IsDirectory,
    #[error("directory not empty")]
    NotEmpty,
    #[error("invalid name {0:?}")]
    InvalidName(String),
    #[error("name too long")]
    NameTooLong,
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("read-only file system")]
    ReadOnly,
    #[error("operation not permitted: {0}")]
    NotPermitted(String),
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    #[error("bad file handle")]
    BadHandle,
    /// The open file's object was replaced or removed by a rename onto its name or by another
    /// client: what the descriptor was reading is gone.
    #[error("stale file handle: the open file was replaced")]
    Stale,
    #[error("no such attribute")]
    NoAttribute,
    /// The mount keeps no extended attributes at all: ENOSYS, after which the kernel stops
    /// asking (`ls -l` would otherwise cost two requests per file).
    #[error("no extended attributes on this mount")]
    NoXattrs,
    #[error("too many entries: {0}")]
    TooMany(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Upload(#[from] UploadError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A segment in `entries/` that does not decode or match its sidecar.
    #[error(transparent)]
    Entries(#[from] crate::segment::entries::EntriesError),
}

pub type FsResult<T> = Result<T, FsError>;

impl FsError {
    pub fn errno(&self) -> libc::c_int {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotDirectory => libc::ENOTDIR,
            FsError::IsDirectory => libc::EISDIR,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::InvalidName(_) => libc::EINVAL,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::InvalidArgument(_) => libc::EINVAL,
            FsError::ReadOnly => libc::EROFS,
            FsError::NotPermitted(_) => libc::EPERM,
            FsError::Unsupported(_) => libc::ENOTSUP,
            FsError::BadHandle => libc::EBADF,
            FsError::Stale => libc::ESTALE,
            FsError::NoXattrs => libc::ENOSYS,
            FsError::NoAttribute => libc::ENODATA,
            // EXDEV makes `mv` fall back to copying, which is what a too-large rename wants.
            FsError::TooMany(_) => libc::EXDEV,
            FsError::Store(e) => store_errno(e),
            FsError::Upload(e) => upload_errno(e),
            FsError::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
            FsError::Entries(_) => libc::EIO,
        }
    }
}

/// S3 failures as the file system reports them.
pub fn store_errno(error: &StoreError) -> libc::c_int {
    match error {
        StoreError::NotFound(_) => libc::ENOENT,
        StoreError::NoSuchBucket(_) => libc::ENOENT,
        StoreError::AccessDenied(_) | StoreError::Credentials(_) => libc::EACCES,
        // The object changed under an open file: its data here is no longer the object's.
        StoreError::PreconditionFailed(_) => libc::ESTALE,
        // A file-backed server cannot keep `a` beside `a/b`: the name is taken, in its way.
        StoreError::KeyConflict(..) => libc::EEXIST,
        StoreError::InvalidRequest(_) => libc::EIO,
        // A download damaged on the way, twice: the bytes are not the object's.
        StoreError::ChecksumMismatch { .. } => libc::EIO,
        StoreError::UntrustedCertificate { .. } => libc::EIO,
        StoreError::Throttled(_) => libc::EIO,
        StoreError::Server { .. } => libc::EIO,
        StoreError::Timeout(_) => libc::ETIMEDOUT,
        StoreError::Connection(_) | StoreError::Unreachable(_) | StoreError::RegionMoved(_) => {
            libc::EIO
        }
        StoreError::Config(_) => libc::EIO,
        StoreError::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
        StoreError::RetriesExhausted { source, .. } => store_errno(source),
        StoreError::Storage(_) => libc::EIO,
    }
}

fn upload_errno(error: &UploadError) -> libc::c_int {
    match error {
        UploadError::Store(failure) => store_errno(&failure.source),
        UploadError::OutOfOrder { .. } => libc::EINVAL,
        UploadError::TooLarge { .. } => libc::EFBIG,
        UploadError::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
        UploadError::PartTaskLost { .. } => libc::EIO,
        // The object changed while it was being copied into the staging file.
        UploadError::SizeMismatch { .. } => libc::ESTALE,
        UploadError::InvalidConfig(_) => libc::EINVAL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_the_errno_a_user_expects() {
        assert_eq!(
            FsError::from(StoreError::NotFound("k".into())).errno(),
            libc::ENOENT
        );
        assert_eq!(
            FsError::from(StoreError::AccessDenied("k".into())).errno(),
            libc::EACCES
        );
        assert_eq!(
            FsError::from(StoreError::PreconditionFailed("k".into())).errno(),
            libc::ESTALE
        );
        let exhausted = StoreError::RetriesExhausted {
            attempts: 4,
            source: Box::new(StoreError::Server {
                status: 500,
                message: "x".into(),
            }),
        };
        assert_eq!(FsError::from(exhausted).errno(), libc::EIO);
        assert_eq!(FsError::ReadOnly.errno(), libc::EROFS);
        assert_eq!(FsError::NotEmpty.errno(), libc::ENOTEMPTY);
    }
}
