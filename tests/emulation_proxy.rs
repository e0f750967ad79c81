//! `scribefs-devserver proxy` emulates the same link as the dev server's own emulation, in front
//! of servers that know nothing of it: an un-emulated dev server, and s3s-fs (the s3s project's
//! file-backed S3 server, served in-process). Through the real S3Store over HTTP, the checks
//! `tests/emulation.rs` makes of the dev server hold through the proxy with the same bounds
//! (`common::link`): a GET takes latency + size / bandwidth and never less, a small ranged GET one
//! latency, and parallel connections each get the full bandwidth.
//!
//! A request body is paced too. Timing an S3 PUT would time the debug build's hashing of the body
//! (client and server), so the PUT check sends an HTTP PUT by hand to an upstream that answers at
//! once: what is timed is the proxy's forwarding alone.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::devserver::{ACCESS_KEY, SECRET_KEY};
use common::link::{
    BUCKET, BYTES_PER_SEC, LATENCY, MIB, TRIES, assert_within, big_object, check_parallel_gets,
    check_single_gets, parallel_objects, store_at,
};
use scribefs::devserver::proxy::{Proxy, ProxyConfig, ProxyStats};
use scribefs::devserver::{DevServer, DevServerConfig};
use scribefs::store::s3::S3Store;
use scribefs::store::{ObjectStore, PutOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The server behind the proxy, kept alive for the test (never read, only held).
enum Upstream {
    DevServer {
        _server: DevServer,
    },
    /// s3s-fs serves from this directory for as long as the test's runtime runs.
    S3sFs {
        _root: tempfile::TempDir,
    },
}

struct Setup {
    _upstream: Upstream,
    /// Straight to the upstream: for putting the objects, untimed.
    direct: S3Store,
    proxy: Proxy,
    /// Through the proxy.
    proxied: S3Store,
}

async fn start_proxy(upstream: SocketAddr) -> Proxy {
    Proxy::start(ProxyConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        upstream,
        latency: LATENCY,
        bandwidth_bytes_per_sec: Some(BYTES_PER_SEC),
    })
    .await
    .unwrap()
}

fn endpoint(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// A dev server with no emulation of its own, behind the proxy.
async fn dev_server_behind_proxy() -> Setup {
    let server = DevServer::start(DevServerConfig::for_tests(&[BUCKET]))
        .await
        .unwrap();
    let addr = server.local_addr();
    behind_proxy(Upstream::DevServer { _server: server }, addr).await
}

/// s3s-fs over a fresh root, behind the proxy.
async fn s3s_fs_behind_proxy() -> Setup {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join(BUCKET)).unwrap();
    let service = common::s3s_fs::service(root.path(), ACCESS_KEY, SECRET_KEY).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(common::s3s_fs::serve(listener, service));
    behind_proxy(Upstream::S3sFs { _root: root }, addr).await
}

async fn behind_proxy(upstream: Upstream, addr: SocketAddr) -> Setup {
    let proxy = start_proxy(addr).await;
    Setup {
        _upstream: upstream,
        direct: store_at(endpoint(addr)).await,
        proxied: store_at(endpoint(proxy.local_addr())).await,
        proxy,
    }
}

impl Setup {
    async fn put(&self, key: &str, data: bytes::Bytes) {
        self.direct
            .put(key, data, PutOptions::default())
            .await
            .unwrap();
    }

    /// The GETs of the single-GET check and the 4 KiB reads: one warm-up, then TRIES of each.
    async fn check_single_gets(self, what: &str) {
        let (key, data) = big_object();
        self.put(key, data).await;
        check_single_gets(&self.proxied, Some(&self.direct), what).await;
        let stats = self.proxy.shutdown().await;
        assert_eq!(stats.requests, 1 + 2 * TRIES as u64, "{what}: {stats:?}");
        assert_eq!(stats.upstream_unreachable, 0);
    }

    async fn check_parallel_gets(self, what: &str) {
        for (key, data) in parallel_objects() {
            self.put(&key, data).await;
        }
        check_parallel_gets(&self.proxied, Some(&self.direct), what).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_server_behind_the_proxy_a_get_takes_latency_plus_size_over_bandwidth() {
    dev_server_behind_proxy()
        .await
        .check_single_gets("proxy + dev server")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3s_fs_behind_the_proxy_a_get_takes_latency_plus_size_over_bandwidth() {
    s3s_fs_behind_proxy()
        .await
        .check_single_gets("proxy + s3s-fs")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_server_behind_the_proxy_parallel_connections_each_get_the_full_bandwidth() {
    dev_server_behind_proxy()
        .await
        .check_parallel_gets("proxy + dev server")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3s_fs_behind_the_proxy_parallel_connections_each_get_the_full_bandwidth() {
    s3s_fs_behind_proxy()
        .await
        .check_parallel_gets("proxy + s3s-fs")
        .await;
}

const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

/// An upstream that reads requests of `request_len` bytes on one connection and answers each at
/// once, so that nothing but the proxy's forwarding is timed.
async fn instant_sink(listener: TcpListener, request_len: usize) {
    let Ok((mut socket, _)) = listener.accept().await else {
        return;
    };
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let mut received = 0;
        while received < request_len {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => received += read,
            }
        }
        if socket.write_all(ANSWER).await.is_err() {
            return;
        }
    }
}

/// Reads one answer of the sink, whose end is the blank line after its headers.
async fn read_answer(socket: &mut TcpStream) {
    let mut answer = vec![0u8; ANSWER.len()];
    socket.read_exact(&mut answer).await.unwrap();
    assert_eq!(answer, ANSWER);
}

/// A PUT of 8 MiB through the proxy, to an upstream that answers at once, takes latency + size /
/// bandwidth: the request body is paced like a response body, and the answer waits the latency.
/// Several on one kept-alive connection: each request and answer is told from the byte stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_body_is_paced_and_its_answer_waits_the_latency() {
    let body = vec![7u8; 8 * MIB];
    let head = format!(
        "PUT /{BUCKET}/big HTTP/1.1\r\nHost: s3\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let request_len = head.len() + body.len();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = listener.local_addr().unwrap();
    tokio::spawn(instant_sink(listener, request_len));
    let proxy = start_proxy(sink_addr).await;
    let mut client = TcpStream::connect(proxy.local_addr()).await.unwrap();
    client.set_nodelay(true).unwrap();

    let mut took = Vec::new();
    for _ in 0..TRIES {
        let start = Instant::now();
        client.write_all(head.as_bytes()).await.unwrap();
        client.write_all(&body).await.unwrap();
        read_answer(&mut client).await;
        took.push(start.elapsed());
    }
    assert_within(
        &took,
        request_len,
        Duration::ZERO,
        "8 MiB PUT to an instant upstream",
    );
    drop(client);
    let stats = proxy.shutdown().await;
    assert_eq!(
        stats,
        ProxyStats {
            connections: 1,
            requests: TRIES as u64,
            upstream_unreachable: 0
        }
    );
}

/// An upstream that refuses connections: the client's connection is closed (no bytes, no hang),
/// and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_closes_the_client_connection() {
    let refused = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused_addr = refused.local_addr().unwrap();
    drop(refused);
    let proxy = start_proxy(refused_addr).await;
    let mut client = TcpStream::connect(proxy.local_addr()).await.unwrap();
    let _ = client
        .write_all(b"GET / HTTP/1.1\r\nHost: s3\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer))
        .await
        .expect("the client's connection stayed open");
    // Closed either cleanly or by a reset (the request may still be unread): never answered.
    assert!(read.map_or(true, |n| n == 0), "got {answer:?}");
    assert_eq!(proxy.shutdown().await.upstream_unreachable, 1);
}
