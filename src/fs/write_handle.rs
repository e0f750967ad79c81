//! A write handle's own state: the data not yet in S3 (streaming to a multipart upload, or
//! staged in a local file) and the object version its writes apply to. What the file *is* (key,
//! metadata, linked) is its namespace node's; how its uploads run is `file.rs`'s.

use std::time::SystemTime;

use super::namespace::Ino;
use crate::upload::{StagedFile, StreamingUpload};

/// The object version a write handle's writes apply to: staging is seeded from it. It names a
/// version, not where the next upload goes - the node's key at upload time decides that, so a
/// rename while the file is open moves the upload with it.
#[derive(Debug, Clone)]
pub(super) struct BaseVersion {
    pub(super) key: String,
    pub(super) etag: String,
    pub(super) size: u64,
}

/// The part of an open file that is the handle's own: the data not yet in S3, the version it
/// applies to, and who opened it. Everything else (key, metadata, linked) is the node's.
pub(super) struct WriteHandle {
    pub(super) ino: Ino,
    pub(super) state: WriteState,
    pub(super) base: Option<BaseVersion>,
    /// The key that must not exist in S3 when this handle first uploads there (O_EXCL, a new
    /// segment): that upload is conditional, and another client's object at the key makes it
    /// EEXIST. A rename moves the file elsewhere, where it replaces what is there, as rename does.
    pub(super) create_only: Option<String>,
    /// The process (thread group) that opened the handle. A FLUSH from another process is the
    /// close of a descriptor it inherited (fork, then exec closes it): uploading then would
    /// put half a file in S3 in the middle of the opener's writes, so only the opener's closes
    /// upload (and the last close, release, always does).
    pub(super) opener: u32,
    /// No upload of this handle's data began before this (open, or the last upload's end):
    /// the start of the window in which S3 dates the next one (see `object_landed`).
    pub(super) upload_since: SystemTime,
}

impl WriteHandle {
    /// A file created by this handle to which nothing has been written yet.
    pub(super) fn is_new_and_empty(&self) -> bool {
        self.base.is_none()
            && match &self.state {
                WriteState::Clean => true,
                WriteState::Streaming(upload) => upload.bytes_written() == 0,
                WriteState::Staged(_) => false,
            }
    }

    /// Whether a write at `offset` can go on streaming (or start to).
    pub(super) fn is_sequential(&self, offset: u64) -> bool {
        match &self.state {
            // A forward jump (cp writing a sparse file) streams zeros: S3 has no holes.
            WriteState::Streaming(upload) => upload.bytes_written() <= offset,
            // A clean handle on an empty object can stream from the start.
            WriteState::Clean => offset == 0 && self.base.as_ref().is_none_or(|b| b.size == 0),
            WriteState::Staged(_) => false,
        }
    }
}

pub(super) enum WriteState {
    /// Nothing written since open or the last successful flush.
    Clean,
    Streaming(StreamingUpload),
    Staged(StagedFile),
}
