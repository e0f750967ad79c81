//! Emulation of a real, remote S3: a delay before each response, a per-connection bandwidth cap
//! and random failures. Everything here wraps the s3s service from outside, so the S3 logic never
//! knows it is being slowed down or broken.
//!
//! Bandwidth is paced per connection, like a TCP stream: bodies in both directions release each
//! chunk only when the connection's [`Pacer`] gives it a slot (the rules are in `pacing`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use s3s::{S3Error, S3ErrorCode};
use tokio::time::Sleep;

use super::pacing::{PACE_CHUNK, Pacer};
use super::stats::Operation;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The emulation knobs, changeable while the server runs.
pub(crate) struct Emulation {
    latency_nanos: AtomicU64,
    fail_rate_bits: AtomicU64,
    bandwidth_bytes_per_sec: Option<u64>,
}

/// How an injected failure shows itself to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// 500 with an S3 `InternalError` XML body.
    InternalError,
    /// 503 with an S3 `SlowDown` XML body.
    SlowDown,
    /// The connection closes before any response byte.
    DropConnection,
    /// A GET answers its headers and part of the body, then the connection aborts.
    CutBody,
}

impl Emulation {
    pub fn new(latency: Duration, fail_rate: f64, bandwidth_bytes_per_sec: Option<u64>) -> Self {
        let emulation = Emulation {
            latency_nanos: AtomicU64::new(0),
            fail_rate_bits: AtomicU64::new(0),
            bandwidth_bytes_per_sec: bandwidth_bytes_per_sec.filter(|b| *b > 0),
        };
        emulation.set_latency(latency);
        emulation.set_fail_rate(fail_rate);
        emulation
    }

    pub fn latency(&self) -> Duration {
        Duration::from_nanos(self.latency_nanos.load(Ordering::Relaxed))
    }

    pub fn set_latency(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latency_nanos.store(nanos, Ordering::Relaxed);
    }

    pub fn fail_rate(&self) -> f64 {
        f64::from_bits(self.fail_rate_bits.load(Ordering::Relaxed))
    }

    /// Clamped to [0, 1]; NaN means no failures.
    pub fn set_fail_rate(&self, rate: f64) {
        let rate = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        self.fail_rate_bits.store(rate.to_bits(), Ordering::Relaxed);
    }

    /// A fresh pacer for a new connection, if bandwidth is capped.
    pub fn pacer(&self) -> Option<Arc<Pacer>> {
        self.bandwidth_bytes_per_sec
            .map(|rate| Arc::new(Pacer::new(rate)))
    }

    /// Decides whether this request fails, and how. Only GETs of objects can have their body cut.
    pub fn draw_fault(&self, operation: Operation) -> Option<Fault> {
        let rate = self.fail_rate();
        if rate <= 0.0 || fastrand::f64() >= rate {
            return None;
        }
        let kinds = if operation == Operation::Get { 4 } else { 3 };
        Some(match fastrand::u8(0..kinds) {
            0 => Fault::InternalError,
            1 => Fault::SlowDown,
            2 => Fault::DropConnection,
            _ => Fault::CutBody,
        })
    }
}

impl Fault {
    /// The S3 error a response-level fault answers with; `None` for the connection-level ones.
    pub fn s3_error(self) -> Option<S3Error> {
        match self {
            Fault::InternalError => Some(S3Error::with_message(
                S3ErrorCode::InternalError,
                "We encountered an internal error. Please try again. (injected by scribefs-devserver)",
            )),
            Fault::SlowDown => Some(S3Error::with_message(
                S3ErrorCode::SlowDown,
                "Please reduce your request rate. (injected by scribefs-devserver)",
            )),
            Fault::DropConnection | Fault::CutBody => None,
        }
    }
}

/// A body whose data frames are released no faster than the connection's pacer allows.
pub(crate) struct Paced<B> {
    inner: B,
    pacer: Option<Arc<Pacer>>,
    /// The part of the last inner chunk not yet released.
    rest: Bytes,
    /// A chunk waiting for its transmit slot.
    waiting: Option<(Pin<Box<Sleep>>, Bytes)>,
    /// Whether a chunk of this body has been scheduled yet.
    started: bool,
}

impl<B> Paced<B> {
    pub fn new(inner: B, pacer: Option<Arc<Pacer>>) -> Self {
        Paced {
            inner,
            pacer,
            rest: Bytes::new(),
            waiting: None,
            started: false,
        }
    }

    fn held(&self) -> u64 {
        (self.rest.len() + self.waiting.as_ref().map_or(0, |(_, chunk)| chunk.len())) as u64
    }
}

impl<B> Body for Paced<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(pacer) = this.pacer.clone() else {
            return Pin::new(&mut this.inner).poll_frame(cx).map_err(Into::into);
        };
        loop {
            if let Some((sleep, chunk)) = &mut this.waiting {
                ready!(sleep.as_mut().poll(cx));
                let chunk = std::mem::take(chunk);
                this.waiting = None;
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if this.rest.is_empty() {
                match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => this.rest = data,
                        Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
                    },
                    Some(Err(error)) => return Poll::Ready(Some(Err(error.into()))),
                    None => return Poll::Ready(None),
                }
                continue;
            }
            let chunk = this.rest.split_to(this.rest.len().min(PACE_CHUNK));
            let slot = pacer.slot(chunk.len(), !this.started);
            this.started = true;
            let Some(due) = slot else {
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            };
            this.waiting = Some((Box::pin(tokio::time::sleep_until(due)), chunk));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held() == 0 && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let held = self.held();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + held);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + held);
        }
        hint
    }
}

/// A response body: paced, and for a [`Fault::CutBody`] aborted after `cut_after` bytes while
/// still announcing the full length, so the client sees a connection broken mid-body.
pub(crate) struct ResponseBody {
    inner: Paced<s3s::Body>,
    cut_after: Option<u64>,
    /// Holds the abort back until hyper has flushed what was sent (it drops unflushed bytes).
    abort_delay: Option<Pin<Box<Sleep>>>,
}

/// Long enough for hyper to flush the head and the partial body to the socket.
const ABORT_DELAY: Duration = Duration::from_millis(20);

impl ResponseBody {
    pub fn new(inner: s3s::Body, pacer: Option<Arc<Pacer>>, cut_after: Option<u64>) -> Self {
        ResponseBody {
            inner: Paced::new(inner, pacer),
            cut_after,
            abort_delay: None,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(left) = this.cut_after else {
            return Pin::new(&mut this.inner).poll_frame(cx);
        };
        if left == 0 {
            let delay = this
                .abort_delay
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(ABORT_DELAY)));
            ready!(delay.as_mut().poll(cx));
            return Poll::Ready(Some(Err("body cut off by fault injection".into())));
        }
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            other => return Poll::Ready(other),
        };
        match frame.into_data() {
            Ok(mut data) => {
                let send = (data.len() as u64).min(left);
                data.truncate(send as usize);
                this.cut_after = Some(left - send);
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Err(frame) => Poll::Ready(Some(Ok(frame))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.cut_after.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devserver::pacing::assert_takes_about;

    async fn next_frame(body: &mut ResponseBody) -> Option<Result<Frame<Bytes>, BoxError>> {
        std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
    }

    #[test]
    fn fail_rate_is_clamped_and_drawn() {
        let emulation = Emulation::new(Duration::ZERO, 7.0, None);
        assert_eq!(emulation.fail_rate(), 1.0);
        assert!((0..50).all(|_| emulation.draw_fault(Operation::Put).is_some()));
        assert!((0..50).all(|_| emulation.draw_fault(Operation::Put) != Some(Fault::CutBody)));
        emulation.set_fail_rate(f64::NAN);
        assert!((0..50).all(|_| emulation.draw_fault(Operation::Get).is_none()));
    }

    #[tokio::test]
    async fn cut_body_delivers_a_prefix_then_fails() {
        let body = s3s::Body::from(Bytes::from(vec![7u8; 100_000]));
        let mut cut = ResponseBody::new(body, None, Some(40_000));
        assert_eq!(cut.size_hint().exact(), Some(100_000));
        let mut received = 0;
        let error = loop {
            match next_frame(&mut cut).await {
                Some(Ok(frame)) => received += frame.into_data().map_or(0, |d| d.len()),
                Some(Err(error)) => break error,
                None => panic!("body ended without the injected error"),
            }
        };
        assert_eq!(received, 40_000);
        assert!(error.to_string().contains("fault injection"));
    }

    #[tokio::test]
    async fn paced_body_keeps_every_byte_in_order() {
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let body = s3s::Body::from(Bytes::from(data.clone()));
        let pacer = Arc::new(Pacer::new(100 * 1024 * 1024));
        let mut paced = ResponseBody::new(body, Some(pacer), None);
        assert_eq!(paced.size_hint().exact(), Some(200_000));
        let mut collected = Vec::new();
        while let Some(frame) = next_frame(&mut paced).await {
            let chunk = frame.unwrap().into_data().unwrap();
            assert!(chunk.len() <= PACE_CHUNK);
            collected.extend_from_slice(&chunk);
        }
        assert_eq!(collected, data);
    }

    async fn drain(body: &mut Paced<s3s::Body>) -> usize {
        let mut received = 0;
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
        {
            received += frame.unwrap().into_data().map_or(0, |d| d.len());
        }
        received
    }

    /// The rate holds although every timer wake-up is late (1 ms ticks for 164 µs chunks), and
    /// a second body on the same link waits for the first: the link is shared per connection.
    /// On paused tokio time: the timer keeps its 1 ms ticks, the machine's load is not timed.
    #[tokio::test(start_paused = true)]
    async fn paced_bodies_keep_the_link_rate_despite_timer_ticks() {
        let rate = 100_000_000;
        let pacer = Arc::new(Pacer::new(rate));
        let size = 4 * 1024 * 1024;
        let expected = Duration::from_secs_f64(size as f64 / rate as f64);
        let start = tokio::time::Instant::now();
        let mut first = Paced::new(
            s3s::Body::from(Bytes::from(vec![1u8; size])),
            Some(pacer.clone()),
        );
        assert_eq!(drain(&mut first).await, size);
        assert_takes_about(start.elapsed(), expected);

        let second = Paced::new(
            s3s::Body::from(Bytes::from(vec![2u8; size])),
            Some(pacer.clone()),
        );
        let third = Paced::new(s3s::Body::from(Bytes::from(vec![3u8; size])), Some(pacer));
        let start = tokio::time::Instant::now();
        let (a, b) = tokio::join!(async move { drain(&mut { second }).await }, async move {
            drain(&mut { third }).await
        });
        assert_eq!((a, b), (size, size));
        assert_takes_about(start.elapsed(), expected * 2);
    }
}
