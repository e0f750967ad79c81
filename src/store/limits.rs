//! S3's hard limits, in one place: every layer that sizes a part, an object, a copy or a key
//! checks against these constants instead of repeating the numbers.

/// Every multipart part but the last is at least this large.
pub const S3_MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// No part is larger than this.
pub const S3_MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// A multipart upload has at most this many parts, numbered from 1.
pub const S3_MAX_PARTS: u32 = 10_000;
/// No object is larger than this.
pub const S3_MAX_OBJECT_SIZE: u64 = 5 * 1024 * 1024 * 1024 * 1024;
/// Largest single PutObject, and largest source of a single CopyObject.
pub const S3_MAX_PUT_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// Longest key, in bytes of its UTF-8 encoding.
pub const S3_MAX_KEY_LEN: usize = 1024;
