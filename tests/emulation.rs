//! The dev server's S3 emulation is faithful: through the real S3Store over HTTP, a transfer of a
//! known size takes the emulated latency plus size / bandwidth on its connection, no more and no
//! less, and parallel connections each get the full per-connection bandwidth (as behind a
//! network link to S3, not a shared pipe). The checks and their bounds are in `common::link`;
//! `tests/emulation_proxy.rs` runs the same checks through `scribefs-devserver proxy`.
//!
//! A pacer that loses its timer overshoot (the old bug: each 16 KiB chunk waited at least a
//! whole 1 ms timer tick, capping a connection near 10 MB/s) took eight times the expected time
//! here. Uploads are paced by the same body wrapper (its unit test checks the rate); timing a
//! PUT here would time the debug build's SHA-256 and MD5 of the body instead.

mod common;

use common::link::{
    BUCKET, BYTES_PER_SEC, LATENCY, big_object, check_parallel_gets, check_single_gets,
    parallel_objects, store_at,
};
use scribefs::devserver::{DevServer, DevServerConfig};
use scribefs::store::memory::MemoryStore;
use scribefs::store::s3::S3Store;
use scribefs::store::{ObjectStore, PutOptions};

async fn start() -> (DevServer, S3Store) {
    let config = DevServerConfig {
        latency: LATENCY,
        bandwidth_bytes_per_sec: Some(BYTES_PER_SEC),
        ..DevServerConfig::for_tests(&[BUCKET])
    };
    let server = DevServer::start(config).await.unwrap();
    let store = store_at(server.endpoint()).await;
    (server, store)
}

async fn put(bucket: &MemoryStore, key: &str, data: bytes::Bytes) {
    bucket.put(key, data, PutOptions::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_takes_latency_plus_size_over_bandwidth() {
    let (server, store) = start().await;
    let (key, data) = big_object();
    put(&server.bucket(BUCKET).unwrap(), key, data).await;
    check_single_gets(&store, None, "dev server").await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_connections_each_get_the_full_bandwidth() {
    let (server, store) = start().await;
    let bucket = server.bucket(BUCKET).unwrap();
    for (key, data) in parallel_objects() {
        put(&bucket, &key, data).await;
    }
    check_parallel_gets(&store, None, "dev server").await;
    server.shutdown().await;
}
