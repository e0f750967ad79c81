//! scribefs: mount an S3 bucket, first of all a Scribe Ledger segment bucket, as a directory.
//!
//! Layers, one module each, dependencies pointing one way (docs/ARCHITECTURE.md has the table,
//! which a test checks against the sources):
//! `cli` (parsing, config, commands) -> `fs` (FUSE) -> `cache` (reads) and `upload` (writes)
//! -> `store` (S3); `segment` holds the ledger's key scheme and segment API, over `store`;
//! `metrics` is a leaf that the layers report into; `devserver` (feature `devserver`) is the
//! local S3 server that the quickstart, the tests and the benchmarks share.

pub mod cache;
pub mod cli;
// Not needed to mount: built for the quickstart, tests and benchmarks only (Cargo.toml).
#[cfg(feature = "devserver")]
pub mod devserver;
pub mod fs;
pub mod metrics;
pub mod segment;
pub mod store;
pub mod upload;
