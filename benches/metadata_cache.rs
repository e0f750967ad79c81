//! The metadata cache at a bucket's size: fills it with N object versions (default 1,000,000;
//! `SCRIBEFS_BENCH_ENTRIES`), then, as a remount would, opens it afresh and looks every
//! version up in batches of 1000 (one listing page each), in listing order. Prints the time per
//! batch (median, 99th percentile, worst), the whole pass, and the bytes on disk per entry.
//!
//! `cargo bench --bench metadata_cache` (release). Local disk only; stops on its own.

use std::time::{Duration, Instant, UNIX_EPOCH};

use scribefs::cache::{MetadataCache, ObjectVersionId, StoredMetadata};

const BATCH: usize = 1000;

/// CPU time of the calling thread: on a machine shared with other work, wall time also
/// counts the waits for a core.
fn thread_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own and nothing else.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// What scribefs itself writes on a file: mode, owner, times (s3fs's headers).
fn entry(i: u64) -> (String, ObjectVersionId, StoredMetadata) {
    let key = format!("bench/dir{:04}/file-{i:08}.dat", i / 1000);
    let version = ObjectVersionId {
        etag: format!(
            "\"{:032x}\"",
            u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ),
        last_modified: UNIX_EPOCH + Duration::from_secs(1_700_000_000 + i),
        size: 4096 + i % 100_000,
    };
    let stored = StoredMetadata {
        metadata: [
            ("mode", "33188".to_string()),
            ("uid", "1000".to_string()),
            ("gid", "1000".to_string()),
            ("mtime", format!("{}", 1_700_000_000 + i)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
        content_type: None,
    };
    (key, version, stored)
}

fn main() {
    // The cache says why it dropped anything (a full queue, a failed write) at warn/debug.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let entries: u64 = std::env::var("SCRIBEFS_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temporary directory");
    let budget = 64 << 30;
    let started = Instant::now();
    {
        let cache = MetadataCache::open(dir.path(), "bench", budget).expect("open");
        for first in (0..entries).step_by(BATCH) {
            cache.put_many(
                (first..(first + BATCH as u64).min(entries))
                    .map(entry)
                    .collect(),
            );
            // Keeps the queue from dropping: the bench measures the file, not the queue.
            if first % (16 * BATCH as u64) == 0 {
                cache.flush();
            }
        }
        cache.flush();
    }
    let filled = started.elapsed();
    let cache = MetadataCache::open(dir.path(), "bench", budget).expect("reopen");
    let path = cache.path().to_path_buf();
    let mut times = Vec::new();
    let mut cpu = Duration::ZERO;
    let mut hits = 0usize;
    let pass = Instant::now();
    for first in (0..entries).step_by(BATCH) {
        let wanted: Vec<(String, ObjectVersionId)> = (first..(first + BATCH as u64).min(entries))
            .map(|i| {
                let (key, version, _) = entry(i);
                (key, version)
            })
            .collect();
        let at = Instant::now();
        let cpu_at = thread_cpu();
        let answers = cache.get_many(&wanted);
        cpu += thread_cpu() - cpu_at;
        times.push(at.elapsed());
        hits += answers.iter().filter(|a| a.is_some()).count();
    }
    let whole = pass.elapsed();
    times.sort();
    let file = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let used = cache.used_bytes();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("entries                  {entries}");
    println!("fill (put_many, queued)  {:.1} s", filled.as_secs_f64());
    println!(
        "get_many of {BATCH}: median {:.2} ms, p99 {:.2} ms, worst {:.2} ms",
        ms(times[times.len() / 2]),
        ms(times[times.len() * 99 / 100]),
        ms(times[times.len() - 1])
    );
    println!(
        "all {entries} looked up     {:.2} s ({:.2} us an entry, key building excluded: {:.2} s in get_many)",
        whole.as_secs_f64(),
        times.iter().sum::<Duration>().as_secs_f64() * 1e6 / entries as f64,
        times.iter().sum::<Duration>().as_secs_f64()
    );
    println!(
        "CPU in get_many           {:.2} s ({:.2} ms a batch of {BATCH})",
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1000.0 / times.len() as f64
    );
    println!("hits                     {hits}");
    println!(
        "on disk                  {file} bytes ({:.1} an entry; tables {:.1} an entry)",
        file as f64 / entries as f64,
        used as f64 / entries as f64
    );
    assert_eq!(hits as u64, entries, "every entry found");
}
