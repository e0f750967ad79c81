//! Serving: the accept loop, one hyper HTTP/1.1 connection task per client, and the request
//! wrapper that sits in front of s3s. Per request it answers control paths itself, counts the S3
//! operation, waits the emulated latency, injects a fault if one is drawn, and wraps the bodies
//! for bandwidth pacing.
//!
//! Shutdown is graceful: the loop stops accepting, each connection finishes its in-flight
//! request and closes, and whatever is still open after [`SHUTDOWN_GRACE`] is aborted.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use s3s::service::S3Service;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::accept::accept_until_shutdown;
use super::control;
use super::emulation::{BoxError, Emulation, Fault, Paced, ResponseBody};
use super::pacing::Pacer;
use super::recorded::Recorder;
use super::region;
use super::stats::{Counters, Operation, classify};

/// How long shutdown waits for in-flight requests before cutting connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What every connection shares.
pub(crate) struct Shared {
    pub s3: S3Service,
    pub counters: Counters,
    pub recorder: Recorder,
    /// The buckets' region, if one is enforced.
    pub region: Option<String>,
    pub emulation: Emulation,
}

/// The hyper service of one connection: the shared state plus this connection's pacer.
#[derive(Clone)]
struct ConnectionService {
    shared: Arc<Shared>,
    pacer: Option<Arc<Pacer>>,
}

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        Box::pin(handle(self.shared.clone(), self.pacer.clone(), request))
    }
}

/// Answers one request. An `Err` makes hyper close the connection without a response.
async fn handle(
    shared: Arc<Shared>,
    pacer: Option<Arc<Pacer>>,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, BoxError> {
    if control::is_control(&request) {
        let response = control::answer(&request, &shared.counters);
        return Ok(response.map(|body| ResponseBody::new(body, None, None)));
    }
    let operation = classify(request.method(), request.uri(), request.headers());
    shared.counters.count(operation);
    shared.recorder.record(
        operation,
        request.method(),
        request.uri(),
        request.headers(),
    );
    let latency = shared.emulation.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(bucket_region) = &shared.region
        && let Some(signed) = region::signed_region(request.headers())
        && signed != bucket_region
    {
        let response = region::wrong_region(request.method(), bucket_region, signed);
        return Ok(response.map(|body| ResponseBody::new(body, pacer, None)));
    }

    let fault = shared.emulation.draw_fault(operation);
    match fault {
        Some(Fault::DropConnection) => return Err("connection dropped by fault injection".into()),
        Some(f) => {
            if let Some(error) = f.s3_error() {
                let response = error.to_http_response().unwrap_or_else(|_| {
                    let mut plain = Response::new(s3s::Body::empty());
                    *plain.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    plain
                });
                return Ok(response.map(|body| ResponseBody::new(body, pacer, None)));
            }
        }
        None => {}
    }

    let request = request.map(|body| match &pacer {
        Some(p) => s3s::Body::http_body_unsync(Paced::new(body, Some(p.clone()))),
        None => s3s::Body::from(body),
    });
    let mut response = shared.s3.call(request).await.map_err(BoxError::from)?;
    if operation == Operation::HeadBucket
        && let Some(bucket_region) = &shared.region
    {
        region::add_region(response.headers_mut(), bucket_region);
    }

    let mut cut_after = None;
    if fault == Some(Fault::CutBody) {
        let size = hyper::body::Body::size_hint(response.body())
            .exact()
            .unwrap_or(0);
        // Only a successful body of two bytes or more can be cut midway; otherwise break the
        // connection before the answer instead.
        if !response.status().is_success() || size < 2 {
            return Err("connection dropped by fault injection".into());
        }
        cut_after = Some(size / 2);
    }
    Ok(response.map(|body| ResponseBody::new(body, pacer, cut_after)))
}

/// Serves connections until `shutdown` fires (or its sender is dropped), then drains.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    let per_connection = shutdown.clone();
    let mut connections = accept_until_shutdown(listener, shutdown, |stream| {
        let service = ConnectionService {
            pacer: shared.emulation.pacer(),
            shared: shared.clone(),
        };
        serve_connection(stream, service, per_connection.clone())
    })
    .await;
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "aborting connections still open after the grace period"
        );
        connections.abort_all();
    }
}

async fn serve_connection(
    stream: TcpStream,
    service: ConnectionService,
    mut shutdown: watch::Receiver<bool>,
) {
    // Small requests must not wait for Nagle's algorithm: S3 latency is what we emulate.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = shutdown.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "connection ended with an error");
    }
}
