//! The emulated link of the bench's S3-like profile (20 ms, `--bandwidth-mbps 800`), the objects
//! sent over it, and the set-ups that put it in front of a server: the dev server's own
//! emulation, or `scribefs-devserver proxy` in front of an un-emulated dev server or of s3s-fs.
//! Shared by `tests/emulation_proxy.rs` (bytes and counts) and `benches/emulation.rs` (times),
//! which includes this file by path.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use scribefs::devserver::proxy::{Proxy, ProxyConfig};
use scribefs::devserver::{DevServer, DevServerConfig};
use scribefs::store::config::S3Config;
use scribefs::store::s3::S3Store;
use scribefs::store::{ObjectStore, PutOptions, get_bytes};
use tokio::net::TcpListener;

use super::devserver::{ACCESS_KEY, SECRET_KEY};

pub const BUCKET: &str = "emulated";
pub const MIB: usize = 1024 * 1024;
pub const LATENCY: Duration = Duration::from_millis(20);
/// `--bandwidth-mbps 800`, the bench's S3-like profile.
pub const BYTES_PER_SEC: u64 = 100_000_000;
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

pub fn body(size: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..size)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect::<Vec<u8>>(),
    )
}

/// The object the single-GET checks read: 8 MiB.
pub fn big_object() -> (&'static str, Bytes) {
    ("big", body(8 * MIB, 1))
}

/// The objects the parallel checks read: 4 MiB each.
pub fn parallel_objects() -> Vec<(String, Bytes)> {
    (0..READERS)
        .map(|i| (format!("part-{i}"), body(4 * MIB, i as u8)))
        .collect()
}

/// One GET of `range` of `key`, checking the bytes against `data`.
pub fn get_range(
    store: &S3Store,
    key: String,
    range: Range<u64>,
    data: Bytes,
) -> BoxFuture<'_, ()> {
    async move {
        let got = get_bytes(store, &key, Some(range.clone())).await.unwrap();
        assert_eq!(got, data.slice(range.start as usize..range.end as usize));
    }
    .boxed()
}

/// A dev server emulating the link itself, and a store on it.
pub async fn emulating_dev_server() -> (DevServer, S3Store) {
    let config = DevServerConfig {
        latency: LATENCY,
        bandwidth_bytes_per_sec: Some(BYTES_PER_SEC),
        ..DevServerConfig::for_tests(&[BUCKET])
    };
    let server = DevServer::start(config).await.unwrap();
    let store = store_at(server.endpoint()).await;
    (server, store)
}

/// The proxy emulating the link in front of `upstream`.
pub async fn start_proxy(upstream: SocketAddr) -> Proxy {
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

/// The server behind the proxy, kept alive for the set-up (never read, only held).
pub enum Upstream {
    DevServer {
        _server: DevServer,
    },
    /// s3s-fs serves from this directory for as long as the runtime runs.
    S3sFs {
        _root: tempfile::TempDir,
    },
}

pub struct Setup {
    _upstream: Upstream,
    /// Straight to the upstream: for putting the objects, and the server's own time.
    pub direct: S3Store,
    pub proxy: Proxy,
    /// Through the proxy.
    pub proxied: S3Store,
}

/// A dev server with no emulation of its own, behind the proxy.
pub async fn dev_server_behind_proxy() -> Setup {
    let server = DevServer::start(DevServerConfig::for_tests(&[BUCKET]))
        .await
        .unwrap();
    let addr = server.local_addr();
    behind_proxy(Upstream::DevServer { _server: server }, addr).await
}

/// s3s-fs over a fresh root, behind the proxy.
pub async fn s3s_fs_behind_proxy() -> Setup {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join(BUCKET)).unwrap();
    let service = super::s3s_fs::service(root.path(), ACCESS_KEY, SECRET_KEY).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(super::s3s_fs::serve(listener, service));
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
    /// Puts an object straight into the upstream, past the proxy.
    pub async fn put(&self, key: &str, data: Bytes) {
        self.direct
            .put(key, data, PutOptions::default())
            .await
            .unwrap();
    }
}

/// The answer of [`instant_sink`].
pub const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

/// An upstream that reads requests of `request_len` bytes on one connection and answers each at
/// once, so that nothing but the proxy's forwarding is at work.
pub async fn instant_sink(listener: TcpListener, request_len: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// The head of an HTTP PUT of `len` body bytes, as the PUT checks send it by hand.
pub fn put_head(len: usize) -> String {
    format!("PUT /{BUCKET}/big HTTP/1.1\r\nHost: s3\r\nContent-Length: {len}\r\n\r\n")
}
