//! `scribefs-devserver proxy`: a TCP proxy that puts an emulated network link in front of any
//! server: each response waits a latency before its first byte, and each connection carries at
//! most a given rate in each direction, paced by the same rules as the dev server's own
//! emulation (`pacing`). The bench's S3-like profile is the dev server emulating the link
//! itself; the same link in front of another S3 implementation (s3s-fs), which knows nothing of
//! it, checks that emulation against a second opinion.
//!
//! It parses no protocol: one upstream connection per client connection, and requests and
//! responses told apart by which way the bytes flow (`turns`).

mod pump;
mod turns;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::accept::accept_until_shutdown;
use super::pacing::Pacer;
use pump::Pump;
use turns::{Direction, Turns};

/// How long a connection to the upstream may take before the client's connection is closed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub listen: SocketAddr,
    pub upstream: SocketAddr,
    /// Delay before the first byte of each response.
    pub latency: Duration,
    /// Cap on bytes per second, per connection and direction; `None` (or 0) is unlimited.
    pub bandwidth_bytes_per_sec: Option<u64>,
}

/// What the proxy has forwarded so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Client connections accepted.
    pub connections: u64,
    /// Requests forwarded (see `turns` for how one is told from the byte stream).
    pub requests: u64,
    /// Client connections closed because the upstream could not be reached.
    pub upstream_unreachable: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
    upstream_unreachable: AtomicU64,
}

/// What every connection shares.
struct Link {
    upstream: SocketAddr,
    latency: Duration,
    bandwidth_bytes_per_sec: Option<u64>,
    counters: Counters,
}

/// A running proxy. Dropping it stops accepting too; [`Proxy::shutdown`] also waits for that.
pub struct Proxy {
    addr: SocketAddr,
    link: Arc<Link>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Binds `config.listen` and starts forwarding.
    pub async fn start(config: ProxyConfig) -> io::Result<Proxy> {
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let link = Arc::new(Link {
            upstream: config.upstream,
            latency: config.latency,
            bandwidth_bytes_per_sec: config.bandwidth_bytes_per_sec.filter(|rate| *rate > 0),
            counters: Counters::default(),
        });
        let (shutdown, shutdown_seen) = watch::channel(false);
        let accepting = link.clone();
        let task = tokio::spawn(async move {
            let connections = accept_until_shutdown(listener, shutdown_seen, |client| {
                accepting
                    .counters
                    .connections
                    .fetch_add(1, Ordering::Relaxed);
                serve_connection(client, accepting.clone())
            })
            .await;
            // Unlike the dev server, the proxy has no request of its own to finish: dropping the
            // set aborts the connections, and what their clients had in flight is theirs to retry.
            drop(connections);
        });
        Ok(Proxy {
            addr,
            link,
            shutdown,
            task,
        })
    }

    /// The address it listens on (the real port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> ProxyStats {
        self.link.counters.snapshot()
    }

    /// Stops accepting, closes every connection, and returns the final counts.
    pub async fn shutdown(self) -> ProxyStats {
        let Proxy {
            link,
            shutdown,
            task,
            ..
        } = self;
        let _ = shutdown.send(true);
        if let Err(error) = task.await {
            tracing::warn!(%error, "the proxy's accept loop failed");
        }
        link.counters.snapshot()
    }
}

impl Counters {
    fn snapshot(&self) -> ProxyStats {
        ProxyStats {
            connections: self.connections.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            upstream_unreachable: self.upstream_unreachable.load(Ordering::Relaxed),
        }
    }
}

/// Forwards one client connection over a fresh upstream connection until either side ends.
async fn serve_connection(mut client: TcpStream, link: Arc<Link>) {
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(link.upstream))
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()));
    let mut upstream = match connected {
        Ok(upstream) => upstream,
        Err(error) => {
            link.counters
                .upstream_unreachable
                .fetch_add(1, Ordering::Relaxed);
            // Dropping the client's socket closes its connection.
            tracing::warn!(
                "cannot reach the upstream {}: {error}; closing the client's connection",
                link.upstream
            );
            return;
        }
    };
    // Small requests and responses must not wait for Nagle's algorithm: the latency is ours to add.
    for socket in [&client, &upstream] {
        if let Err(error) = socket.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    }
    let turns = Mutex::new(Turns::default());
    let pump = |direction| Pump {
        direction,
        latency: link.latency,
        pacer: link.bandwidth_bytes_per_sec.map(Pacer::new),
        turns: &turns,
        requests: &link.counters.requests,
    };
    let (to_upstream, to_client) = (pump(Direction::ToUpstream), pump(Direction::ToClient));
    let (client_read, client_write) = client.split();
    let (upstream_read, upstream_write) = upstream.split();
    let requests = to_upstream.run(client_read, upstream_write);
    let responses = to_client.run(upstream_read, client_write);
    tokio::pin!(requests, responses);
    // An error one way ends both: the other would wait for a peer that is gone. An orderly end
    // one way (a half-close) lets the other finish.
    let result = tokio::select! {
        sent = &mut requests => match sent {
            Ok(()) => responses.await,
            Err(error) => Err(error),
        },
        answered = &mut responses => match answered {
            Ok(()) => requests.await,
            Err(error) => Err(error),
        },
    };
    if let Err(error) = result {
        tracing::debug!(%error, "a proxied connection ended with an error");
    }
}
