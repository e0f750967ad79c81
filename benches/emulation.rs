//! The emulated link against the wall clock: does a transfer of a known size take the latency
//! plus size / bandwidth on its connection, no more and no less? Checked for the dev server's
//! own emulation and for `scribefs-devserver proxy` in front of an un-emulated dev server and
//! of s3s-fs, through the real S3Store over HTTP: an 8 MiB GET, a 4 KiB ranged GET (one
//! latency, not a chunk or a timer tick more), 4 parallel GETs on 4 connections (as long as
//! one: the bandwidth is per connection), and an 8 MiB PUT body through the proxy to a server
//! that answers at once. `cargo bench --bench emulation`; prints each time and exits non-zero
//! (a panic naming the check) when one is out of bounds. `cargo test --all-targets` builds it
//! but runs nothing timed.
//!
//! A benchmark and not a test: it times the machine. The tests check the same schedule on
//! paused tokio time (`devserver::emulation`, `devserver::proxy::pump`) and the proxy's bytes
//! and counts (`tests/emulation_proxy.rs`).
//!
//! The bounds: the lower one is exact (an emulated link must never be faster than the link it
//! claims); the upper one allows 25% + 15 ms for a busy machine, and takes the best of a few
//! tries so one descheduled run does not fail it. Behind the proxy, a server may be slower than
//! the link on its own (s3s-fs in a debug build reads its files 4 KiB at a time): the same GETs
//! are then timed straight from the server too, and the upper bound is the latency on top of the
//! server's own best time when that is longer. The proxy cannot make its server faster; what it
//! must not do is add more than the link. The timed GETs skip the object's first byte:
//! S3Store checks a whole object against its MD5 ETag, and its MD5 would be timed.

#![allow(dead_code)]

#[path = "../tests/common/devserver.rs"]
mod devserver;
#[path = "../tests/common/link.rs"]
mod link;
#[path = "../tests/common/s3s_fs.rs"]
mod s3s_fs;

use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, join_all};
use link::{
    BYTES_PER_SEC, LATENCY, MIB, READERS, big_object, get_range, instant_sink, parallel_objects,
    put_head,
};
use scribefs::store::s3::S3Store;
use scribefs::store::{ObjectStore, PutOptions, get_bytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Timed rounds of each check; the best one is held against the upper bound.
const TRIES: usize = 3;

/// What one request of `bytes` body bytes takes on the emulated link.
fn expected(bytes: usize) -> Duration {
    LATENCY + Duration::from_secs_f64(bytes as f64 / BYTES_PER_SEC as f64)
}

/// Checks the times a transfer of `bytes` took against the link; `server_alone` is the best time
/// the server took for it with no link in between (zero for a server emulating the link itself).
fn assert_within(took: &[Duration], bytes: usize, server_alone: Duration, what: &str) {
    let expected = expected(bytes);
    let fastest = *took.iter().min().unwrap();
    println!("{what}: took {took:?}, expected {expected:?} (server alone {server_alone:?})");
    let slowest_allowed =
        expected.max(LATENCY + server_alone).mul_f64(1.25) + Duration::from_millis(15);
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

/// Times TRIES rounds of `round` on `store` and, interleaved with them, on `server_alone` if
/// given, so that both see the same load on the machine. Returns the times through `store` and
/// the best time of the server alone (zero without it).
async fn time_rounds<R>(
    store: &S3Store,
    server_alone: Option<&S3Store>,
    round: R,
) -> (Vec<Duration>, Duration)
where
    R: for<'s> Fn(&'s S3Store) -> BoxFuture<'s, ()>,
{
    let mut took = Vec::new();
    let mut alone = Vec::new();
    for _ in 0..TRIES {
        if let Some(server) = server_alone {
            let start = Instant::now();
            round(server).await;
            alone.push(start.elapsed());
        }
        let start = Instant::now();
        round(store).await;
        took.push(start.elapsed());
    }
    (took, alone.into_iter().min().unwrap_or_default())
}

/// A GET of the big object takes latency + 8 MiB / bandwidth, and a 4 KiB ranged GET one
/// round trip. The object must be stored.
async fn check_single_gets(store: &S3Store, server_alone: Option<&S3Store>, what: &str) {
    let (key, data) = big_object();
    // The first request also opens the connection; time only warm ones.
    for store in std::iter::once(store).chain(server_alone) {
        assert_eq!(get_bytes(store, key, Some(0..1)).await.unwrap().len(), 1);
    }
    let (took, alone) = time_rounds(store, server_alone, |store| {
        get_range(store, key.into(), 1..data.len() as u64, data.clone())
    })
    .await;
    assert_within(&took, data.len() - 1, alone, &format!("{what}: 8 MiB GET"));
    let (took, alone) = time_rounds(store, server_alone, |store| {
        get_range(store, key.into(), 4096..8192, data.clone())
    })
    .await;
    assert_within(&took, 4096, alone, &format!("{what}: 4 KiB ranged GET"));
}

/// READERS GETs at once, on READERS connections, take as long as one alone. The objects must
/// be stored.
async fn check_parallel_gets(store: &S3Store, server_alone: Option<&S3Store>, what: &str) {
    let objects = parallel_objects();
    // Open READERS connections first, so each timed GET has its own warm one.
    for store in std::iter::once(store).chain(server_alone) {
        let warm = objects
            .iter()
            .map(|(key, _)| get_bytes(store, key, Some(0..1)));
        for got in join_all(warm).await {
            assert_eq!(got.unwrap().len(), 1);
        }
    }
    let (took, alone) = time_rounds(store, server_alone, |store| {
        let gets = objects
            .iter()
            .map(|(key, data)| get_range(store, key.clone(), 1..4 * MIB as u64, data.clone()));
        join_all(gets).map(|_| ()).boxed()
    })
    .await;
    assert_within(
        &took,
        4 * MIB - 1,
        alone,
        &format!("{what}: {READERS} parallel 4 MiB GETs"),
    );
}

async fn dev_server() {
    let (server, store) = link::emulating_dev_server().await;
    let bucket = server.bucket(link::BUCKET).unwrap();
    let (key, data) = big_object();
    let objects = std::iter::once((key.to_string(), data)).chain(parallel_objects());
    for (key, data) in objects {
        bucket.put(&key, data, PutOptions::default()).await.unwrap();
    }
    check_single_gets(&store, None, "dev server").await;
    check_parallel_gets(&store, None, "dev server").await;
    server.shutdown().await;
}

async fn behind_the_proxy(setup: link::Setup, what: &str) {
    let (key, data) = big_object();
    setup.put(key, data).await;
    for (key, data) in parallel_objects() {
        setup.put(&key, data).await;
    }
    check_single_gets(&setup.proxied, Some(&setup.direct), what).await;
    check_parallel_gets(&setup.proxied, Some(&setup.direct), what).await;
}

/// A PUT of 8 MiB through the proxy, to an upstream that answers at once, takes latency + size /
/// bandwidth: the request body is paced like a response body, and the answer waits the latency.
async fn put_through_the_proxy() {
    let body = vec![7u8; 8 * MIB];
    let head = put_head(body.len());
    let request_len = head.len() + body.len();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = listener.local_addr().unwrap();
    tokio::spawn(instant_sink(listener, request_len));
    let proxy = link::start_proxy(sink_addr).await;
    let mut client = TcpStream::connect(proxy.local_addr()).await.unwrap();
    client.set_nodelay(true).unwrap();
    let mut took = Vec::new();
    for _ in 0..TRIES {
        let start = Instant::now();
        client.write_all(head.as_bytes()).await.unwrap();
        client.write_all(&body).await.unwrap();
        let mut answer = vec![0u8; link::ANSWER.len()];
        client.read_exact(&mut answer).await.unwrap();
        took.push(start.elapsed());
    }
    assert_within(
        &took,
        request_len,
        Duration::ZERO,
        "proxy: 8 MiB PUT to an instant upstream",
    );
    drop(client);
    proxy.shutdown().await;
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it, and
    // a test run must time nothing.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("emulation: timed only by `cargo bench --bench emulation`");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        dev_server().await;
        behind_the_proxy(link::dev_server_behind_proxy().await, "proxy + dev server").await;
        behind_the_proxy(link::s3s_fs_behind_proxy().await, "proxy + s3s-fs").await;
        put_through_the_proxy().await;
    });
    println!("emulation: every transfer within the link's bounds");
}
