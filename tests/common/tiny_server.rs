//! A minimal HTTP/1.1 server on loopback that answers every request with the same small object
//! and counts how many requests it is serving at once. It lets tests see what the client puts on
//! the wire (concurrency) and measure client overhead without a slow server in the way.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct TinyServer {
    pub endpoint: String,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TinyServer {
    /// Serves `body` to every request; `pause` is spent between the headers and the body, so
    /// a request counts as in flight while its body is still to come.
    pub async fn start(body: Vec<u8>, pause: Duration) -> TinyServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let in_flight = Arc::new(AtomicUsize::new(0));
        let max_in_flight = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::clone(&connections);
        let counters = (
            Arc::clone(&in_flight),
            Arc::clone(&max_in_flight),
            Arc::clone(&requests),
        );
        let body = Arc::new(body);
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let counters = (counters.0.clone(), counters.1.clone(), counters.2.clone());
                tokio::spawn(serve(socket, Arc::clone(&body), pause, counters));
            }
        });
        TinyServer {
            endpoint,
            in_flight,
            max_in_flight,
            requests,
            connections,
            task,
        }
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for TinyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Counters = (Arc<AtomicUsize>, Arc<AtomicUsize>, Arc<AtomicUsize>);

async fn serve(mut socket: TcpStream, body: Arc<Vec<u8>>, pause: Duration, counters: Counters) {
    let (in_flight, max_in_flight, requests) = counters;
    socket.set_nodelay(true).unwrap();
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // Requests here carry no body: one ends at the blank line after its headers.
        let end = loop {
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let is_head = buffer.starts_with(b"HEAD ");
        buffer.drain(..end);
        requests.fetch_add(1, Ordering::SeqCst);
        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        max_in_flight.fetch_max(now, Ordering::SeqCst);
        let headers = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: \"tiny\"\r\n\
             Last-Modified: Wed, 01 Jan 2025 00:00:00 GMT\r\n\r\n",
            body.len()
        );
        let mut ok = socket.write_all(headers.as_bytes()).await.is_ok();
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        if ok && !is_head {
            ok = socket.write_all(&body).await.is_ok();
        }
        in_flight.fetch_sub(1, Ordering::SeqCst);
        if !ok {
            return;
        }
    }
}
