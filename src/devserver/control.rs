//! The control path, outside the S3 namespace (no bucket may be called `_scribefs`):
//!
//! - `GET  /_scribefs/stats`       -> the request counts as a JSON object;
//! - `POST /_scribefs/stats/reset` -> zeroes them and answers with the counts just cleared.
//!
//! Control requests are not authenticated, not counted, not delayed and never fail on purpose.
//! [`request_stats`] is the matching client: plain HTTP/1.1 over a std `TcpStream`, so shell
//! tools and benches need nothing else.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, Request, Response, StatusCode};

use super::stats::{Counters, RequestStats};

pub const CONTROL_PREFIX: &str = "/_scribefs/";
pub const STATS_PATH: &str = "/_scribefs/stats";
pub const RESET_PATH: &str = "/_scribefs/stats/reset";

/// Control answers never carry more than this (a stats object is ~150 bytes).
const MAX_CONTROL_RESPONSE: u64 = 64 * 1024;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) fn is_control<B>(request: &Request<B>) -> bool {
    request.uri().path().starts_with(CONTROL_PREFIX)
}

/// Answers a control request.
pub(crate) fn answer<B>(request: &Request<B>, counters: &Counters) -> Response<s3s::Body> {
    let path = request.uri().path();
    let method = request.method();
    let stats = match (path, method) {
        (STATS_PATH, &Method::GET) => counters.snapshot(),
        (RESET_PATH, &Method::POST) => counters.reset(),
        (STATS_PATH, _) | (RESET_PATH, _) => {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        }
        _ => return plain(StatusCode::NOT_FOUND, "unknown control path\n"),
    };
    match serde_json::to_vec(&stats) {
        Ok(json) => {
            let mut response = Response::new(s3s::Body::from(Bytes::from(json)));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode stats\n"),
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<s3s::Body> {
    let mut response = Response::new(s3s::Body::from(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}

/// Reads (or, with `reset`, reads and zeroes) the counts of the dev server at `addr`.
pub fn request_stats(addr: SocketAddr, reset: bool) -> io::Result<RequestStats> {
    let body = control_request(addr, reset)?;
    serde_json::from_slice(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Sends one control request and returns the body of its 200 answer.
pub fn control_request(addr: SocketAddr, reset: bool) -> io::Result<Vec<u8>> {
    let (method, path) = if reset {
        ("POST", RESET_PATH)
    } else {
        ("GET", STATS_PATH)
    };
    let mut stream = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT)?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream
        .take(MAX_CONTROL_RESPONSE)
        .read_to_end(&mut response)?;
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("malformed HTTP response"))?;
    let head = String::from_utf8_lossy(&response[..split]);
    let status_line = head.lines().next().unwrap_or("");
    if status_line.split_whitespace().nth(1) != Some("200") {
        return Err(bad(&format!("dev server answered {status_line:?}")));
    }
    Ok(response[split + 4..].to_vec())
}
