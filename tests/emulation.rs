//! The dev server's S3 emulation is faithful: through the real S3Store over HTTP, a transfer of a
//! known size takes the emulated latency plus size / bandwidth on its connection, no more and no
//! less, and parallel connections each get the full per-connection bandwidth (as behind a
//! network link to S3, not a shared pipe).
//!
//! The bounds: the lower one is exact (the server must never be faster than the link it
//! emulates); the upper one allows 25% + 15 ms for a busy machine, and takes the best of a few
//! tries so one descheduled run does not fail it. A pacer that loses its timer overshoot (the old
//! bug: each 16 KiB chunk waited at least a whole 1 ms timer tick, capping a connection near
//! 10 MB/s) took eight times the expected time here. Uploads are paced by the same body wrapper
//! (its unit test checks the rate); timing a PUT here would time the debug build's SHA-256 and
//! MD5 of the body instead. For the same reason the timed GETs skip the object's first byte:
//! S3Store checks a whole object against its MD5 ETag, and would time that hash too.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::join_all;
use scribefs::devserver::{DevServer, DevServerConfig};
use scribefs::store::config::S3Config;
use scribefs::store::s3::S3Store;
use scribefs::store::{ObjectStore, PutOptions, get_bytes};

const BUCKET: &str = "emulated";
const MIB: usize = 1024 * 1024;
const LATENCY: Duration = Duration::from_millis(20);
/// `--bandwidth-mbps 800`, the bench's S3-like profile.
const BYTES_PER_SEC: u64 = 100_000_000;
const TRIES: usize = 3;

async fn start() -> (DevServer, S3Store) {
    let config = DevServerConfig {
        latency: LATENCY,
        bandwidth_bytes_per_sec: Some(BYTES_PER_SEC),
        ..DevServerConfig::for_tests(&[BUCKET])
    };
    let server = DevServer::start(config).await.unwrap();
    let store = S3Store::new(&S3Config {
        bucket: BUCKET.to_string(),
        endpoint: Some(server.endpoint()),
        access_key_id: Some("devkey".into()),
        secret_access_key: Some("devsecret".into()),
        path_style: true,
        ..S3Config::default()
    })
    .await
    .unwrap();
    (server, store)
}

/// What one request of `bytes` body bytes takes on an emulated link.
fn expected(bytes: usize) -> Duration {
    LATENCY + Duration::from_secs_f64(bytes as f64 / BYTES_PER_SEC as f64)
}

fn assert_within(took: &[Duration], bytes: usize, what: &str) {
    let expected = expected(bytes);
    let fastest = *took.iter().min().unwrap();
    eprintln!("{what}: took {took:?}, expected {expected:?}");
    let slowest_allowed = expected.mul_f64(1.25) + Duration::from_millis(15);
    for t in took {
        assert!(
            *t >= expected.mul_f64(0.98),
            "{what}: took {t:?}, faster than the emulated link allows ({expected:?})"
        );
    }
    assert!(
        fastest <= slowest_allowed,
        "{what}: best of {took:?} is slower than latency + size/bandwidth ({expected:?})"
    );
}

fn body(size: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..size)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect::<Vec<u8>>(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_takes_latency_plus_size_over_bandwidth() {
    let (server, store) = start().await;
    let data = body(8 * MIB, 1);
    server
        .bucket(BUCKET)
        .unwrap()
        .put("big", data.clone(), PutOptions::default())
        .await
        .unwrap();
    // The first request also opens the connection; time only warm ones.
    assert_eq!(get_bytes(&store, "big", Some(0..1)).await.unwrap().len(), 1);

    let mut took = Vec::new();
    for _ in 0..TRIES {
        let start = Instant::now();
        let got = get_bytes(&store, "big", Some(1..data.len() as u64))
            .await
            .unwrap();
        took.push(start.elapsed());
        assert_eq!(got, data.slice(1..));
    }
    assert_within(&took, data.len() - 1, "8 MiB GET");

    // A small ranged read is one round trip: the latency, not a chunk or a timer tick more.
    let mut took = Vec::new();
    for _ in 0..TRIES {
        let start = Instant::now();
        let got = get_bytes(&store, "big", Some(4096..8192)).await.unwrap();
        took.push(start.elapsed());
        assert_eq!(got, data.slice(4096..8192));
    }
    assert_within(&took, 4096, "4 KiB ranged GET");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_connections_each_get_the_full_bandwidth() {
    const READERS: usize = 4;
    let (server, store) = start().await;
    let bucket = server.bucket(BUCKET).unwrap();
    let mut data = Vec::new();
    for i in 0..READERS {
        let object = body(4 * MIB, i as u8);
        bucket
            .put(&format!("part-{i}"), object.clone(), PutOptions::default())
            .await
            .unwrap();
        data.push(object);
    }
    let keys: Vec<String> = (0..READERS).map(|i| format!("part-{i}")).collect();
    // Open READERS connections first, so each timed GET has its own warm one.
    let warm = keys.iter().map(|key| get_bytes(&store, key, Some(0..1)));
    for got in join_all(warm).await {
        assert_eq!(got.unwrap().len(), 1);
    }

    let mut took = Vec::new();
    for _ in 0..TRIES {
        let start = Instant::now();
        let gets = keys
            .iter()
            .map(|key| get_bytes(&store, key, Some(1..4 * MIB as u64)));
        let results = join_all(gets).await;
        took.push(start.elapsed());
        for (got, want) in results.into_iter().zip(&data) {
            assert_eq!(got.unwrap(), want.slice(1..));
        }
    }
    // All together take as long as one alone: the bandwidth is per connection, not shared.
    assert_within(&took, 4 * MIB - 1, "4 parallel 4 MiB GETs");
    server.shutdown().await;
}
