//! Process-wide counters in Prometheus' text format, served by `--metrics-addr` ([`http`]).
//!
//! - S3 requests (one per HTTP attempt) by operation and outcome, with a latency histogram,
//!   and the bytes they moved: recorded by `store::metered::Metered`.
//! - Uploads in flight: PUTs and multipart uploads begun and not yet completed or aborted.
//! - FUSE operations by type and errno: [`fuse_op`], called by the FUSE adapter.
//! - Block cache and read path: read at scrape time from the [`ReadPathSource`]s that the read
//!   paths registered ([`register_read_path`]).
//!
//! A leaf: the modules that have something to count report into it (`store::metered`,
//! `fs::fuse`, `cache::reader`) and it imports none of them, so the registry can be used (and
//! tested) without a store, a cache or a mount.

pub mod http;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, Weak};
use std::time::Duration;

/// Upper bounds of the S3 latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default, Clone)]
struct Latency {
    count: u64,
    seconds: f64,
    buckets: [u64; LATENCY_BUCKETS.len()],
}

#[derive(Default)]
pub struct Registry {
    s3: Mutex<BTreeMap<(&'static str, &'static str), Latency>>,
    fuse: Mutex<BTreeMap<(&'static str, i32), u64>>,
    s3_bytes_read: AtomicU64,
    s3_bytes_written: AtomicU64,
    uploads_in_flight: AtomicI64,
    uploads_waiting_for_memory: AtomicI64,
    metadata_heads_window: AtomicU64,
    metadata_copies_pending: AtomicI64,
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::default);

/// The process' registry.
pub fn registry() -> &'static Registry {
    &REGISTRY
}

/// The counters of one read path (a mount's block cache and its readers), read at scrape time.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadPathCounters {
    pub cache_hits: u64,
    pub cache_hit_bytes: u64,
    pub cache_misses: u64,
    pub cache_miss_bytes: u64,
    pub cache_prefetch_bytes: u64,
    pub cache_evictions: u64,
    pub cache_prefetch_wasted: u64,
    pub cache_unread_prefetch_bytes: u64,
    pub cache_bytes: u64,
    pub cache_blocks: u64,
    pub reads: u64,
    pub read_bytes: u64,
    pub demand_gets: u64,
    pub prefetch_gets: u64,
    pub prefetch_skipped: u64,
    pub window_resets: u64,
    /// A maximum, not a sum, when read paths are added up.
    pub peak_window_bytes: u64,
}

impl ReadPathCounters {
    fn add(&mut self, other: &ReadPathCounters) {
        self.cache_hits += other.cache_hits;
        self.cache_hit_bytes += other.cache_hit_bytes;
        self.cache_misses += other.cache_misses;
        self.cache_miss_bytes += other.cache_miss_bytes;
        self.cache_prefetch_bytes += other.cache_prefetch_bytes;
        self.cache_evictions += other.cache_evictions;
        self.cache_prefetch_wasted += other.cache_prefetch_wasted;
        self.cache_unread_prefetch_bytes += other.cache_unread_prefetch_bytes;
        self.cache_bytes += other.cache_bytes;
        self.cache_blocks += other.cache_blocks;
        self.reads += other.reads;
        self.read_bytes += other.read_bytes;
        self.demand_gets += other.demand_gets;
        self.prefetch_gets += other.prefetch_gets;
        self.prefetch_skipped += other.prefetch_skipped;
        self.window_resets += other.window_resets;
        self.peak_window_bytes = self.peak_window_bytes.max(other.peak_window_bytes);
    }
}

/// Something that can say its read path counters now: the read path keeps its counters where
/// it updates them (atomics on its hot path) and the registry asks at scrape time, instead of
/// the read path pushing every hit here.
pub trait ReadPathSource: Send + Sync {
    fn read_path_counters(&self) -> ReadPathCounters;
}

/// The read paths of the process, held weakly: a read path dropped with its mount stops being
/// counted without telling anyone.
static READ_PATHS: Mutex<Vec<Weak<dyn ReadPathSource>>> = Mutex::new(Vec::new());

/// Adds a read path to those the metrics sum (one per mounted file system).
pub fn register_read_path(source: Weak<dyn ReadPathSource>) {
    if let Ok(mut paths) = READ_PATHS.lock() {
        paths.retain(|weak| weak.strong_count() > 0);
        paths.push(source);
    }
}

/// Counts one FUSE operation (`"lookup"`, `"read"`, ...) and how it ended: `errno` 0 for
/// success, else the errno the kernel got.
pub fn fuse_op(operation: &'static str, errno: i32) {
    registry().fuse_op(operation, errno);
}

impl Registry {
    pub fn s3_request(&self, operation: &'static str, outcome: &'static str, took: Duration) {
        let Ok(mut map) = self.s3.lock() else { return };
        let entry = map.entry((operation, outcome)).or_default();
        let seconds = took.as_secs_f64();
        entry.count += 1;
        entry.seconds += seconds;
        for (bound, count) in LATENCY_BUCKETS.iter().zip(entry.buckets.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
    }

    pub fn fuse_op(&self, operation: &'static str, errno: i32) {
        if let Ok(mut map) = self.fuse.lock() {
            *map.entry((operation, errno)).or_default() += 1;
        }
    }

    pub fn add_bytes_read(&self, n: u64) {
        self.s3_bytes_read.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_bytes_written(&self, n: u64) {
        self.s3_bytes_written.fetch_add(n, Ordering::Relaxed);
    }

    pub fn upload_started(&self) {
        self.uploads_in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn upload_ended(&self) {
        self.uploads_in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// An upload began (`true`) or stopped (`false`) waiting for its share of the write budget.
    pub fn waiting_for_memory(&self, waiting: bool) {
        let change = if waiting { 1 } else { -1 };
        self.uploads_waiting_for_memory
            .fetch_add(change, Ordering::Relaxed);
    }

    /// The metadata HEADs a mount now allows in flight (its adaptive window).
    pub fn set_metadata_heads_window(&self, heads: usize) {
        self.metadata_heads_window
            .store(heads as u64, Ordering::Relaxed);
    }

    /// A delayed metadata copy (chmod, chown, utimens of a closed file) was scheduled
    /// (`true`) or has run (`false`): tests wait for none pending instead of sleeping.
    pub fn metadata_copy_pending(&self, pending: bool) {
        let change = if pending { 1 } else { -1 };
        self.metadata_copies_pending
            .fetch_add(change, Ordering::Relaxed);
    }

    /// Requests of `operation` with `outcome` so far.
    pub fn s3_requests(&self, operation: &str, outcome: &str) -> u64 {
        self.s3.lock().map_or(0, |map| {
            map.iter()
                .filter(|((op, out), _)| *op == operation && *out == outcome)
                .map(|(_, l)| l.count)
                .sum()
        })
    }

    /// Everything, in Prometheus' text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let s3 = self.s3.lock().map(|m| m.clone()).unwrap_or_default();
        header(
            &mut out,
            "scribefs_s3_requests_total",
            "counter",
            "S3 requests (HTTP attempts) by operation and outcome",
        );
        for ((op, outcome), l) in &s3 {
            let _ = writeln!(
                out,
                "scribefs_s3_requests_total{{operation=\"{op}\",outcome=\"{outcome}\"}} {}",
                l.count
            );
        }
        header(
            &mut out,
            "scribefs_s3_request_duration_seconds",
            "histogram",
            "S3 request latency up to the response headers",
        );
        for ((op, outcome), l) in &s3 {
            let labels = format!("operation=\"{op}\",outcome=\"{outcome}\"");
            for (bound, count) in LATENCY_BUCKETS.iter().zip(l.buckets.iter()) {
                let _ = writeln!(
                    out,
                    "scribefs_s3_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "scribefs_s3_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                l.count
            );
            let _ = writeln!(
                out,
                "scribefs_s3_request_duration_seconds_sum{{{labels}}} {}",
                l.seconds
            );
            let _ = writeln!(
                out,
                "scribefs_s3_request_duration_seconds_count{{{labels}}} {}",
                l.count
            );
        }
        counter(
            &mut out,
            "scribefs_s3_bytes_read_total",
            "Object bytes received from S3 (GET bodies)",
            self.s3_bytes_read.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "scribefs_s3_bytes_written_total",
            "Object bytes sent to S3 (PUT and UploadPart bodies)",
            self.s3_bytes_written.load(Ordering::Relaxed),
        );
        header(
            &mut out,
            "scribefs_uploads_in_flight",
            "gauge",
            "PUTs and multipart uploads begun and not yet finished",
        );
        let _ = writeln!(
            out,
            "scribefs_uploads_in_flight {}",
            self.uploads_in_flight.load(Ordering::Relaxed)
        );
        gauge(
            &mut out,
            "scribefs_uploads_waiting_for_memory",
            "Uploads waiting for their share of the mount's write budget",
            self.uploads_waiting_for_memory
                .load(Ordering::Relaxed)
                .max(0) as u64,
        );
        gauge(
            &mut out,
            "scribefs_metadata_heads_window",
            "Metadata HEADs a listing may keep in flight now: grows while S3 keeps up, halves at SlowDown",
            self.metadata_heads_window.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "scribefs_metadata_copies_pending",
            "Delayed metadata copies (chmod, chown, utimens of a closed file) not yet run",
            self.metadata_copies_pending.load(Ordering::Relaxed).max(0) as u64,
        );
        let fuse = self.fuse.lock().map(|m| m.clone()).unwrap_or_default();
        header(
            &mut out,
            "scribefs_fuse_operations_total",
            "counter",
            "FUSE requests by operation and errno (0: success)",
        );
        for ((op, errno), count) in &fuse {
            let _ = writeln!(
                out,
                "scribefs_fuse_operations_total{{operation=\"{op}\",errno=\"{errno}\"}} {count}"
            );
        }
        render_read_paths(&mut out);
        out
    }

    /// One log line of the main counters, for the unmount.
    pub fn summary(&self) -> String {
        let s3 = self.s3.lock().map(|m| m.clone()).unwrap_or_default();
        let mut by_op: BTreeMap<&str, u64> = BTreeMap::new();
        let mut failed = 0;
        for ((op, outcome), l) in &s3 {
            *by_op.entry(op).or_default() += l.count;
            if *outcome != "ok" {
                failed += l.count;
            }
        }
        let requests: Vec<String> = by_op.iter().map(|(op, n)| format!("{op}={n}")).collect();
        let reads = read_path_totals();
        let fuse_ops: u64 = self.fuse.lock().map_or(0, |m| m.values().sum());
        format!(
            "s3 requests [{}] not ok={failed}; s3 bytes read={} written={}; cache hits={} misses={} evictions={}; fuse ops={fuse_ops}",
            requests.join(" "),
            self.s3_bytes_read.load(Ordering::Relaxed),
            self.s3_bytes_written.load(Ordering::Relaxed),
            reads.cache_hits,
            reads.cache_misses,
            reads.cache_evictions,
        )
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

/// The block cache and read path counters summed over the read paths alive now.
fn read_path_totals() -> ReadPathCounters {
    // Upgraded first and asked after the lock is released: a source's counters may take locks
    // of their own (the block cache's).
    let alive: Vec<_> = READ_PATHS.lock().map_or_else(
        |_| Vec::new(),
        |paths| paths.iter().filter_map(Weak::upgrade).collect(),
    );
    let mut total = ReadPathCounters::default();
    for path in alive {
        total.add(&path.read_path_counters());
    }
    total
}

fn render_read_paths(out: &mut String) {
    let c = read_path_totals();
    counter(
        out,
        "scribefs_cache_hits_total",
        "Block lookups answered from the cache",
        c.cache_hits,
    );
    counter(
        out,
        "scribefs_cache_hit_bytes_total",
        "Bytes of blocks found in the cache",
        c.cache_hit_bytes,
    );
    counter(
        out,
        "scribefs_cache_misses_total",
        "Block lookups that started a fetch",
        c.cache_misses,
    );
    counter(
        out,
        "scribefs_cache_miss_bytes_total",
        "Bytes demand fetches brought in",
        c.cache_miss_bytes,
    );
    counter(
        out,
        "scribefs_cache_prefetched_bytes_total",
        "Bytes fetched ahead of readers",
        c.cache_prefetch_bytes,
    );
    counter(
        out,
        "scribefs_cache_evictions_total",
        "Blocks evicted to stay within the budget",
        c.cache_evictions,
    );
    counter(
        out,
        "scribefs_cache_prefetch_wasted_total",
        "Prefetched blocks evicted before anyone read them",
        c.cache_prefetch_wasted,
    );
    gauge(
        out,
        "scribefs_cache_unread_prefetch_bytes",
        "Prefetched bytes held that nobody has read yet",
        c.cache_unread_prefetch_bytes,
    );
    gauge(
        out,
        "scribefs_cache_bytes",
        "Bytes the block cache holds",
        c.cache_bytes,
    );
    gauge(
        out,
        "scribefs_cache_blocks",
        "Blocks the block cache holds",
        c.cache_blocks,
    );
    counter(
        out,
        "scribefs_reads_total",
        "Reads served by the read path",
        c.reads,
    );
    counter(
        out,
        "scribefs_read_bytes_total",
        "Bytes served by the read path",
        c.read_bytes,
    );
    counter(
        out,
        "scribefs_read_demand_gets_total",
        "GETs issued for blocks a reader waited for",
        c.demand_gets,
    );
    counter(
        out,
        "scribefs_read_prefetch_gets_total",
        "GETs issued ahead of readers",
        c.prefetch_gets,
    );
    counter(
        out,
        "scribefs_read_prefetch_skipped_total",
        "Prefetches not issued: no permit free, or unread prefetched bytes at half the cache",
        c.prefetch_skipped,
    );
    counter(
        out,
        "scribefs_read_window_resets_total",
        "Non-sequential reads that dropped a prefetch window",
        c.window_resets,
    );
    gauge(
        out,
        "scribefs_prefetch_window_peak_bytes",
        "The largest prefetch window any reader reached",
        c.peak_window_bytes,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_render_as_counters_and_a_histogram() {
        let registry = Registry::default();
        registry.s3_request("GetObject", "ok", Duration::from_millis(3));
        registry.s3_request("GetObject", "ok", Duration::from_millis(300));
        registry.s3_request("HeadObject", "not_found", Duration::from_millis(1));
        registry.fuse_op("lookup", libc::ENOENT);
        registry.add_bytes_read(42);
        registry.metadata_copy_pending(true);
        registry.metadata_copy_pending(true);
        registry.metadata_copy_pending(false);
        let text = registry.render();
        for line in [
            "scribefs_s3_requests_total{operation=\"GetObject\",outcome=\"ok\"} 2",
            "scribefs_s3_requests_total{operation=\"HeadObject\",outcome=\"not_found\"} 1",
            "scribefs_s3_request_duration_seconds_bucket{operation=\"GetObject\",outcome=\"ok\",le=\"0.005\"} 1",
            "scribefs_s3_request_duration_seconds_bucket{operation=\"GetObject\",outcome=\"ok\",le=\"0.5\"} 2",
            "scribefs_s3_request_duration_seconds_count{operation=\"GetObject\",outcome=\"ok\"} 2",
            "scribefs_fuse_operations_total{operation=\"lookup\",errno=\"2\"} 1",
            "scribefs_s3_bytes_read_total 42",
            "scribefs_metadata_copies_pending 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        assert_eq!(registry.s3_requests("GetObject", "ok"), 2);
        assert!(
            registry.summary().contains("GetObject=2"),
            "{}",
            registry.summary()
        );
    }

    struct Fixed(ReadPathCounters);

    impl ReadPathSource for Fixed {
        fn read_path_counters(&self) -> ReadPathCounters {
            self.0
        }
    }

    #[test]
    fn registered_read_paths_are_summed_while_they_live() {
        // Distinctive numbers: other tests of this binary may register real read paths.
        let counters = ReadPathCounters {
            cache_hits: 1_000_003,
            peak_window_bytes: u64::MAX - 1,
            ..Default::default()
        };
        let source: std::sync::Arc<dyn ReadPathSource> = std::sync::Arc::new(Fixed(counters));
        register_read_path(std::sync::Arc::downgrade(&source));
        let totals = read_path_totals();
        assert!(totals.cache_hits >= 1_000_003, "{totals:?}");
        assert_eq!(
            totals.peak_window_bytes,
            u64::MAX - 1,
            "a maximum, not a sum"
        );
        assert!(
            Registry::default()
                .render()
                .contains("scribefs_prefetch_window_peak_bytes 18446744073709551614")
        );
        drop(source);
        assert!(read_path_totals().peak_window_bytes < u64::MAX - 1);
    }
}
