//! The emulated link of the bench's S3-like profile (20 ms, `--bandwidth-mbps 800`) and the
//! timed GETs that check a server, or the proxy in front of one, against it: a transfer of a
//! known size takes the latency plus size / bandwidth on its connection, no more and no less.
//!
//! The bounds: the lower one is exact (an emulated link must never be faster than the link it
//! claims); the upper one allows 25% + 15 ms for a busy machine, and takes the best of a few
//! tries so one descheduled run does not fail it. Behind the proxy, a server may be slower than
//! the link on its own (s3s-fs in a debug build reads its files 4 KiB at a time): the same GETs
//! are then timed straight from the server too, and the upper bound is the latency on top of the
//! server's own best time when that is longer. The proxy cannot make its server faster; what it
//! must not do is add more than the link. The timed GETs skip the object's first byte:
//! S3Store checks a whole object against its MD5 ETag, and a debug build's MD5 would be timed.

use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, join_all};
use scribefs::store::config::S3Config;
use scribefs::store::get_bytes;
use scribefs::store::s3::S3Store;

use super::devserver::{ACCESS_KEY, SECRET_KEY};

pub const BUCKET: &str = "emulated";
pub const MIB: usize = 1024 * 1024;
pub const LATENCY: Duration = Duration::from_millis(20);
/// `--bandwidth-mbps 800`, the bench's S3-like profile.
pub const BYTES_PER_SEC: u64 = 100_000_000;
pub const TRIES: usize = 3;
/// How many readers the parallel check runs, each on its own connection.
pub const READERS: usize = 4;

/// An S3Store on BUCKET at `endpoint` (`http://ADDR`), with the dev server's keys.
pub async fn store_at(endpoint: String) -> S3Store {
    S3Store::new(&S3Config {
        bucket: BUCKET.to_string(),
        endpoint: Some(endpoint),
        access_key_id: Some(ACCESS_KEY.into()),
        secret_access_key: Some(SECRET_KEY.into()),
        path_style: true,
        ..S3Config::default()
    })
    .await
    .unwrap()
}

/// What one request of `bytes` body bytes takes on the emulated link.
pub fn expected(bytes: usize) -> Duration {
    LATENCY + Duration::from_secs_f64(bytes as f64 / BYTES_PER_SEC as f64)
}

/// Checks the times a transfer of `bytes` took against the link; `server_alone` is the best time
/// the server took for it with no link in between (zero for a server emulating the link itself).
pub fn assert_within(took: &[Duration], bytes: usize, server_alone: Duration, what: &str) {
    let expected = expected(bytes);
    let fastest = *took.iter().min().unwrap();
    eprintln!("{what}: took {took:?}, expected {expected:?} (server alone {server_alone:?})");
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

pub fn body(size: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..size)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect::<Vec<u8>>(),
    )
}

/// The object [`check_single_gets`] reads: 8 MiB.
pub fn big_object() -> (&'static str, Bytes) {
    ("big", body(8 * MIB, 1))
}

/// The objects [`check_parallel_gets`] reads: 4 MiB each.
pub fn parallel_objects() -> Vec<(String, Bytes)> {
    (0..READERS)
        .map(|i| (format!("part-{i}"), body(4 * MIB, i as u8)))
        .collect()
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

/// One GET of `range` of `key`, checking the bytes against `data`.
fn get_range(store: &S3Store, key: String, range: Range<u64>, data: Bytes) -> BoxFuture<'_, ()> {
    async move {
        let got = get_bytes(store, &key, Some(range.clone())).await.unwrap();
        assert_eq!(got, data.slice(range.start as usize..range.end as usize));
    }
    .boxed()
}

/// A GET of the big object takes latency + 8 MiB / bandwidth, and a 4 KiB ranged GET one
/// round trip: the latency, not a chunk or a timer tick more. The object must be stored.
/// `server_alone` reaches the same server with no link in between, when the link is a proxy.
pub async fn check_single_gets(store: &S3Store, server_alone: Option<&S3Store>, what: &str) {
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

/// READERS GETs at once, on READERS connections, take as long as one alone: the bandwidth is
/// per connection, as behind a network link to S3, not a shared pipe. The objects must be stored.
/// `server_alone` reaches the same server with no link in between, when the link is a proxy.
pub async fn check_parallel_gets(store: &S3Store, server_alone: Option<&S3Store>, what: &str) {
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
