//! The local S3 server that the quickstart, the tests and the benchmarks share.
//!
//! - Protocol: [s3s] parses requests, checks SigV4 signatures against one access/secret key
//!   pair and writes the XML; `s3` implements the operations scribefs, s3fs and rclone use.
//! - Data: each bucket is a [`MemoryStore`], which keeps S3's key semantics (`a` and `a/b`
//!   coexist, `dir/` is an ordinary key, byte-order listings). With a root directory every
//!   change is written through to disk (`persist`) and loaded back at start.
//! - Realism: `emulation` adds latency before each response, a per-connection bandwidth cap
//!   and random failures (500, 503, dropped connections, bodies cut midway).
//! - The same link in front of any other server: `proxy` (`scribefs-devserver proxy`), a TCP
//!   proxy pacing by the same rules (`pacing`), to check this emulation against another S3.
//! - Observability: requests are counted by operation ([`RequestStats`]), readable in process
//!   and over HTTP at `GET /_scribefs/stats` ([`control`]).
//!
//! Bind it to loopback only: s3s sets no body-size or rate limits.

mod accept;
mod buckets;
mod conditions;
pub mod control;
mod emulation;
mod listing;
mod pacing;
mod persist;
mod persist_uploads;
pub mod proxy;
mod recorded;
mod region;
mod s3;
mod seed;
mod seed_objects;
mod server;
pub mod signals;
mod stats;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::store::memory::MemoryStore;
use buckets::Buckets;
use emulation::Emulation;
use server::Shared;

pub use control::request_stats;
pub use recorded::{MAX_RECORDED, RecordedRequest};
pub use region::BUCKET_REGION_HEADER;
pub use seed::SEED as SEGMENT_SEED;
pub use seed_objects::{SEEDED_BODY, SeedShape};
pub use stats::{Operation, RequestStats, classify};

#[derive(Debug, Clone)]
pub struct DevServerConfig {
    /// Persist every bucket under this directory; `None` keeps everything in memory.
    pub root: Option<PathBuf>,
    pub listen: SocketAddr,
    pub access_key: String,
    pub secret_key: String,
    /// Buckets to create at start (buckets found under `root` are loaded as well).
    pub buckets: Vec<String>,
    /// Demo Scribe Ledger segments to put into every bucket that has none yet.
    pub seed_segments: usize,
    /// Many small objects to put into every bucket at each start, in memory only
    /// ([`SeedShape`]; see [`DevServer::seed_objects`]).
    pub seed_objects: Vec<SeedShape>,
    /// Delay before each S3 response's first byte.
    pub latency: Duration,
    /// Per-connection cap on body bytes per second, both directions.
    pub bandwidth_bytes_per_sec: Option<u64>,
    /// Fraction in [0, 1] of S3 requests that fail on purpose.
    pub fail_rate: f64,
    /// The buckets' region, enforced as AWS does (requests signed for another get a 301
    /// naming it); `None` accepts any.
    pub region: Option<String>,
}

impl DevServerConfig {
    /// 127.0.0.1 on a free port, keys `devkey`/`devsecret`, in memory, no emulation.
    pub fn for_tests(buckets: &[&str]) -> Self {
        DevServerConfig {
            root: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            access_key: "devkey".to_string(),
            secret_key: "devsecret".to_string(),
            buckets: buckets.iter().map(|b| b.to_string()).collect(),
            seed_segments: 0,
            seed_objects: Vec::new(),
            latency: Duration::ZERO,
            bandwidth_bytes_per_sec: None,
            fail_rate: 0.0,
            region: None,
        }
    }
}

/// A running dev server. Dropping it stops the server too, without waiting for the drain.
pub struct DevServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    buckets: Arc<Buckets>,
    corrupt_rate: Arc<AtomicU64>,
    corrupt_get_rate: Arc<AtomicU64>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl DevServer {
    /// Loads (or creates) the buckets, seeds them, binds `config.listen` and starts serving.
    pub async fn start(config: DevServerConfig) -> io::Result<DevServer> {
        if !(0.0..=1.0).contains(&config.fail_rate) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "fail rate must be between 0 and 1, got {}",
                    config.fail_rate
                ),
            ));
        }
        let root = config.root.clone();
        let names = config.buckets.clone();
        let buckets = tokio::task::spawn_blocking(move || Buckets::open(root, &names))
            .await
            .map_err(io::Error::other)??;
        let buckets = Arc::new(buckets);
        for (_, bucket) in buckets.all() {
            seed::seed_bucket(&bucket, config.seed_segments).await?;
            for &shape in &config.seed_objects {
                let bucket = bucket.clone();
                tokio::task::spawn_blocking(move || seed_objects::seed_objects(&bucket, shape))
                    .await
                    .map_err(io::Error::other)??;
            }
        }

        let corrupt_rate = Arc::new(AtomicU64::new(0));
        let corrupt_get_rate = Arc::new(AtomicU64::new(0));
        let mut builder = S3ServiceBuilder::new(s3::DevS3::new(
            buckets.clone(),
            corrupt_rate.clone(),
            corrupt_get_rate.clone(),
        ));
        builder.set_auth(SimpleAuth::from_single(
            config.access_key.clone(),
            config.secret_key.clone(),
        ));
        let shared = Arc::new(Shared {
            s3: builder.build(),
            counters: Default::default(),
            recorder: Default::default(),
            region: config.region.clone(),
            emulation: Emulation::new(
                config.latency,
                config.fail_rate,
                config.bandwidth_bytes_per_sec,
            ),
        });

        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(server::accept_loop(listener, shared.clone(), shutdown_rx));
        Ok(DevServer {
            addr,
            shared,
            buckets,
            corrupt_rate,
            corrupt_get_rate,
            shutdown,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, the endpoint URL for S3 clients (path-style addressing).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> RequestStats {
        self.shared.counters.snapshot()
    }

    /// Zeroes the counts and forgets the recorded requests.
    pub fn reset_stats(&self) {
        self.shared.counters.reset();
        self.shared.recorder.clear();
    }

    /// The last requests (at most [`MAX_RECORDED`]) since the last reset, oldest first, with
    /// their headers.
    pub fn recorded_requests(&self) -> Vec<RecordedRequest> {
        self.shared.recorder.snapshot()
    }

    /// Clamped to [0, 1].
    pub fn set_fail_rate(&self, rate: f64) {
        self.shared.emulation.set_fail_rate(rate);
    }

    /// Fraction of uploaded bodies (PutObject, UploadPart) that arrive with one byte flipped,
    /// as a faulty network or NIC would deliver them. Clamped to [0, 1].
    pub fn set_corrupt_rate(&self, rate: f64) {
        store_rate(&self.corrupt_rate, rate);
    }

    /// Fraction of GET bodies sent with one byte flipped (the middle byte of the range), as a
    /// faulty network would deliver them. Clamped to [0, 1].
    pub fn set_corrupt_get_rate(&self, rate: f64) {
        store_rate(&self.corrupt_get_rate, rate);
    }

    pub fn set_latency(&self, latency: Duration) {
        self.shared.emulation.set_latency(latency);
    }

    /// Direct access to a bucket's data, e.g. to act as "another client" in tests. Changes made
    /// this way bypass persistence, counting and emulation.
    pub fn bucket(&self, name: &str) -> Option<Arc<MemoryStore>> {
        self.buckets.get(name).map(|b| b.store.clone())
    }

    /// Puts `shape`'s small objects into bucket `name` straight into memory (not under the
    /// root, not counted as requests); returns how many keys were added, keeping keys the
    /// bucket already holds. A few seconds of CPU per million keys: call it from a blocking
    /// context (e.g. `spawn_blocking`), not from a task the server's runtime needs.
    pub fn seed_objects(&self, name: &str, shape: SeedShape) -> io::Result<u64> {
        let bucket = self.buckets.get(name).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("no bucket {name:?}"))
        })?;
        seed_objects::seed_objects(&bucket, shape)
    }

    /// Names of all buckets, in order.
    pub fn bucket_names(&self) -> Vec<String> {
        self.buckets
            .all()
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    }

    /// Creates a bucket (persisted if the server has a root); an existing one is kept.
    pub fn create_bucket(&self, name: &str) {
        if let Err(error) = self.buckets.create(name) {
            tracing::warn!(bucket = name, %error, "cannot create bucket");
        }
    }

    /// Stops accepting, lets in-flight requests finish, and returns when all connections closed.
    pub async fn shutdown(self) {
        // Receivers may all be gone already if the loop ended; nothing else to tell them then.
        let _ = self.shutdown.send(true);
        if let Err(error) = self.task.await {
            tracing::warn!(%error, "dev server task failed");
        }
    }
}

/// Stores `rate`, clamped to [0, 1] (NaN counts as 0), as f64 bits.
fn store_rate(target: &AtomicU64, rate: f64) {
    let rate = if rate.is_nan() {
        0.0
    } else {
        rate.clamp(0.0, 1.0)
    };
    target.store(rate.to_bits(), std::sync::atomic::Ordering::Relaxed);
}
