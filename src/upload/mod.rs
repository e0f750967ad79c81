//! The write path's data mechanisms, independent of FUSE: how bytes written to a file become an
//! S3 object.
//!
//! Two ways, chosen by the fs layer per open file:
//!
//! - [`StreamingUpload`]: a new file written front to back streams into S3 while it is written.
//!   Writes fill a one-part buffer; full parts go up in parallel; `finish` sends what is left.
//! - [`StagedFile`]: anything else (random writes, appends, overwrites, truncate) edits a local,
//!   anonymous staging file seeded from the object, uploaded whole by [`StagedFile::upload`].
//!
//! Both keep the design's promises:
//!
//! - **Nothing partial is ever visible.** Data goes either in one PutObject or in a multipart
//!   upload that S3 only turns into an object at CompleteMultipartUpload; until then readers see
//!   the old object or none.
//! - **Success means S3 has the whole object.** `finish` and `upload` return `Ok` only after the
//!   Put or the Complete succeeded; the fs layer calls them from flush/fsync so errors reach the
//!   caller as EIO instead of vanishing in release.
//! - **A failed multipart upload is aborted, never leaked.** Its parts are invisible but billed.
//!   On any failure the parts in flight are cancelled and awaited, then AbortMultipartUpload is
//!   called; if that fails too it is logged and counted ([`abort_failures`]), retried in the
//!   background with capped backoff until it succeeds or the process ends ([`pending_aborts`]),
//!   and the error returned still names the original cause. An upload dropped unfinished (its handle dropped,
//!   or the future finishing it cancelled) spawns the same abort from `Drop`, on the runtime that
//!   created the upload, because `drop` cannot await.
//! - **Memory is bounded.** An upload holds the part being filled plus at most
//!   `max_parts_in_flight` parts being sent: (max_parts_in_flight + 1) × part size, where the part
//!   size is that of the current part ([`UploadConfig::memory_bound`]): 128 MiB with the defaults
//!   (8 MiB parts, 15 in flight) for files up to 7 GiB. A semaphore permit travels with each part's
//!   task, so the writer waits for a free slot before it can fill another buffer. Staged uploads
//!   read the staging file one part at a time under the same bound. All uploads of a mount
//!   together hold at most its [`WriteBudget`] (by default a share of the machine's memory, or
//!   `--max-memory-target` less the block cache): the buffers being filled and the parts in
//!   flight, so many writers at once wait for memory, the oldest upload first, instead of
//!   adding up. No one waits while holding memory, so a close never waits behind them.
//!   Buffers whose part was sent are kept for the next of the same size ([`PartBuffers`]),
//!   within the budget's size, instead of being freed and faulted in again.
//!
//! Further choices:
//!
//! - **Lazy CreateMultipartUpload.** The upload is created only when the first part is full and
//!   more data follows. Most files are small: they cost one PutObject instead of Create + Part +
//!   Complete, and a file closed without data never leaves an upload to abort.
//! - **Sticky errors.** Parts upload in the background, so a failure is noticed after the write
//!   that caused it returned. Once a part has failed the object can never be completed, so every
//!   later write and `finish` returns that same error at once instead of buffering and sending
//!   data that is doomed: the application learns early and the bandwidth is not wasted.
//! - **Growing parts.** A stream's length is unknown, so the part size doubles every 900 parts
//!   ([`part_size_for`]): 10,000 parts then cover S3's 5 TiB object limit from any allowed base,
//!   while small and medium files keep small parts.
//! - **S3's minimum part size.** Every part but the last is at least 5 MiB, so
//!   [`UploadConfig::new`] refuses a smaller part size; tests on `MemoryStore::with_min_part_size`
//!   use a test-only constructor.

mod abort_retry;
mod budget;
mod buffers;
mod config;
mod error;
pub mod part_size;
mod session;
mod staged;
mod streaming;

pub use abort_retry::{pending_aborts, settle_pending_aborts};
pub use budget::{Reservation, WriteBudget};
pub use buffers::{PartBuffer, PartBuffers, PoolCounts};
pub use config::UploadConfig;
pub use error::{StoreFailure, StoreOperation, UploadError};
pub use part_size::part_size_for;
pub use session::abort_failures;
pub use staged::StagedFile;
pub use streaming::StreamingUpload;
