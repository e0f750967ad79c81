//! `scribefs-devserver proxy` carries S3 traffic whole and counts it, in front of servers that
//! know nothing of the emulation: an un-emulated dev server, and s3s-fs (the s3s project's
//! file-backed S3 server, served in-process). Through the real S3Store over HTTP, GETs return
//! the object's bytes and each is one request on the proxy's count; a PUT body sent by hand
//! arrives whole and each PUT on a kept-alive connection is told apart; an unreachable upstream
//! closes the client's connection.
//!
//! How long a transfer takes on the emulated link (latency + size / bandwidth, never less) is
//! not timed here: the pacing schedule is checked on paused tokio time by the unit tests of
//! `devserver::pacing`'s users (`emulation.rs`, `proxy/pump.rs`), and the wall-clock check of
//! the whole link, dev server and proxy, is `cargo bench --bench emulation`.

mod common;

use std::time::Duration;

use common::link::{
    ANSWER, MIB, Setup, big_object, dev_server_behind_proxy, get_range, instant_sink, put_head,
    s3s_fs_behind_proxy, start_proxy,
};
use scribefs::devserver::proxy::ProxyStats;
use scribefs::store::get_bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// GETs of the 8 MiB object through the proxy: whole, a range, and the whole again on the same
/// connection. Each returns the object's bytes, and the proxy counts each as one request.
async fn gets_arrive_whole_and_are_counted(setup: Setup, what: &str) {
    let (key, data) = big_object();
    setup.put(key, data.clone()).await;
    let len = data.len() as u64;
    // The first GET reads the whole object (checked against its MD5 ETag by S3Store).
    let whole = get_bytes(&setup.proxied, key, None).await.unwrap();
    assert!(whole == data, "{what}: the whole object differs");
    get_range(&setup.proxied, key.into(), 4096..8192, data.clone()).await;
    get_range(&setup.proxied, key.into(), 1..len, data.clone()).await;
    let stats = setup.proxy.shutdown().await;
    assert_eq!(stats.requests, 3, "{what}: {stats:?}");
    assert_eq!(stats.upstream_unreachable, 0, "{what}: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_server_behind_the_proxy_gets_arrive_whole_and_are_counted() {
    gets_arrive_whole_and_are_counted(dev_server_behind_proxy().await, "proxy + dev server").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3s_fs_behind_the_proxy_gets_arrive_whole_and_are_counted() {
    gets_arrive_whole_and_are_counted(s3s_fs_behind_proxy().await, "proxy + s3s-fs").await;
}

/// Reads one answer of the sink, whose end is the blank line after its headers. The sink
/// answers only once it has read the whole request: a body cut short never gets one.
async fn read_answer(socket: &mut TcpStream) {
    let mut answer = vec![0u8; ANSWER.len()];
    tokio::time::timeout(Duration::from_secs(30), socket.read_exact(&mut answer))
        .await
        .expect("no answer: the body did not arrive whole")
        .unwrap();
    assert_eq!(answer, ANSWER);
}

/// Three PUTs of 8 MiB on one kept-alive connection, through the proxy to an upstream that
/// answers each once it has read the whole request: every body arrives whole, and each request
/// and answer is told from the byte stream (three requests on one connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_bodies_arrive_whole_and_each_request_is_counted() {
    const PUTS: u64 = 3;
    let body = vec![7u8; 8 * MIB];
    let head = put_head(body.len());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = listener.local_addr().unwrap();
    tokio::spawn(instant_sink(listener, head.len() + body.len()));
    let proxy = start_proxy(sink_addr).await;
    let mut client = TcpStream::connect(proxy.local_addr()).await.unwrap();
    client.set_nodelay(true).unwrap();
    for _ in 0..PUTS {
        client.write_all(head.as_bytes()).await.unwrap();
        client.write_all(&body).await.unwrap();
        read_answer(&mut client).await;
    }
    drop(client);
    let stats = proxy.shutdown().await;
    assert_eq!(
        stats,
        ProxyStats {
            connections: 1,
            requests: PUTS,
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
