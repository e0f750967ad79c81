//! `cache/`: the read path's data mechanisms, independent of FUSE.
//!
//! - [`block::BlockCache`]: an LRU of fixed-size blocks keyed by (key, ETag, block index), bounded
//!   by a byte budget, with single-flight misses: however many readers miss the same block, one
//!   GET fetches it and all of them get its outcome.
//! - [`reader::ObjectReader`]: one per open file handle; reads an object version through the
//!   cache in whole blocks, detects sequential access and prefetches ahead in a growing window.
//! - [`disk::DiskCache`]: the optional disk tier below the memory LRU (`--cache-dir`), keyed
//!   and checksummed per block, bounded in bytes, kept across remounts. A run of missing blocks
//!   is first looked up there ([`fetch`]); only the blocks it lacks are fetched from S3, and
//!   every block S3 sends is queued for it.
//! - [`metadata_cache::MetadataCache`]: what HEADs told of object versions (s3fs metadata), and
//!   what this machine uploaded, in a SQLite file per bucket kept across mounts and shared by
//!   them, so a listing of known versions needs no HEAD.
//! - [`reader::ReadPath`]: what the readers of a mount share (store, cache, prefetch permits,
//!   counters); `ReadPath::open` makes a reader.
//!
//! # How a read is served
//!
//! The object is cut into blocks of `block_size` (1 MiB by default; an object no larger than
//! that is one block). A read looks up the blocks it covers; consecutive misses are claimed
//! together and fetched with ONE ranged GET (requests cost more than bytes: per-request price
//! and first-byte latency), so reading a small file whole costs exactly one GET. The first read
//! of a handle fetches only the blocks it covers: one block is enough for the kernel's first
//! read plus the readahead requests that follow it (128 KiB each), so a reader that turns out to
//! be random pays for 1 MiB, not for a speculative window. From the second sequential read on,
//! the window starts at one block and doubles each time the reader enters a new block, up to
//! `max_window_bytes`; the blocks of the window are prefetched by spawned GETs running in
//! parallel. A read away from the stream resets the window to zero.
//!
//! # Why If-Match
//!
//! Every GET carries `If-Match: <ETag seen at open>`. If the object is replaced while a handle
//! reads it, the next block fetched fails with PreconditionFailed instead of returning bytes of
//! the new version after bytes of the old one: a read stream never mixes two versions. Blocks
//! are keyed by ETag too, so cached blocks of the old version are never served for the new one;
//! they age out of the LRU.
//!
//! # Memory bound
//!
//! At most `cache budget + one block per GET in flight + demand reads in flight` bytes of object
//! data: blocks held by the cache never exceed the budget (a block larger than the budget is
//! handed to its readers but not kept); a GET fills one block at a time and hands each over as
//! it completes, so a prefetch GET in flight holds at most one partial block; and demand GETs
//! cover the blocks of reads the kernel has in flight (each at most its read length plus one
//! block on either side). Speculation is bounded across all readers: prefetch claims stop while
//! unread and in-flight prefetched bytes reach half the budget, and unread prefetched blocks are
//! evicted only after every block that was read, so they are not evicted before their reader
//! reaches them. Each block is its own mapping (`block_buf`), returned to the system on
//! eviction, so the process's resident memory follows the budget instead of the heap's history.

pub mod block;
mod block_buf;
mod block_id;
pub mod disk;
pub mod fetch;
pub mod metadata_cache;
mod pattern;
pub mod reader;

#[cfg(test)]
mod tests;

pub use block::{BlockCache, CacheStats, FetchTicket, Lookup, PendingBlock};
pub use block_id::BlockId;
pub use disk::{DiskCache, DiskError, DiskStats};
pub use fetch::ObjectVersion;
pub use metadata_cache::{MetadataCache, ObjectVersionId, OwnUpload, StoredMetadata};
pub use reader::{ObjectReader, ReadPath, ReadStats, ReaderConfig};
