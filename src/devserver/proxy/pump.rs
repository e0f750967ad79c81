//! One direction of a proxied connection: bytes copied from one socket to the other, paced at
//! the link's rate, with the first bytes of each response held back for the latency.
//!
//! When the latency is counted from: the arrival of the response's first byte from the
//! upstream, not the forwarding of the request's last byte. The dev server sleeps the latency
//! when a request's headers arrive and only then lets s3s work (read the body, hash, answer), so
//! its requests cost latency + body / bandwidth + the server's own work. Counting from the
//! response's arrival adds the latency on top of the upstream's work the same way. Counting
//! from the request's last byte would hide up to one latency of the upstream's work (an s3s-fs
//! PUT's MD5 and rename would be free), flattering a slower server. With an upstream that answers
//! at once both give exactly latency + body / bandwidth. The dev server's latency comes before a
//! PUT's body and the proxy's after it; the sum is the same.

use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::turns::{Direction, Turn, Turns};
use crate::devserver::pacing::{PACE_CHUNK, Pacer};

/// How much one read takes from the source: a few pace chunks, so a stream behind its schedule
/// can catch up from one read.
const READ_BUFFER: usize = 4 * PACE_CHUNK;

/// What one direction of one connection needs besides its two sockets.
pub(super) struct Pump<'a> {
    pub direction: Direction,
    pub latency: Duration,
    /// This direction's own link: `None` copies at full speed.
    pub pacer: Option<Pacer>,
    /// Shared by both directions of the connection.
    pub turns: &'a Mutex<Turns>,
    /// The proxy's count of requests forwarded.
    pub requests: &'a AtomicU64,
}

impl Pump<'_> {
    /// Copies until `from` ends, then closes `to` for writing so the peer sees the end too.
    /// A read or write error ends the copy with that error.
    pub(super) async fn run<R, W>(&self, mut from: R, mut to: W) -> io::Result<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut buffer = vec![0u8; READ_BUFFER];
        loop {
            let read = from.read(&mut buffer).await?;
            if read == 0 {
                // The peer may be gone already; there is nothing left to tell it either way.
                let _ = to.shutdown().await;
                return Ok(());
            }
            let arrived = Instant::now();
            let turn = self.note_turn();
            if turn == Turn::Response && !self.latency.is_zero() {
                tokio::time::sleep_until(arrived + self.latency).await;
            }
            let mut first_of_body = turn.starts_body();
            for chunk in buffer[..read].chunks(PACE_CHUNK) {
                if let Some(pacer) = &self.pacer {
                    pacer.wait_slot(chunk.len(), first_of_body).await;
                }
                first_of_body = false;
                to.write_all(chunk).await?;
            }
        }
    }

    fn note_turn(&self) -> Turn {
        let turn = self
            .turns
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .on_bytes(self.direction);
        if turn == Turn::Request {
            self.requests.fetch_add(1, Ordering::Relaxed);
        }
        turn
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devserver::pacing::assert_takes_about;

    const RATE: u64 = 100_000_000;
    const LATENCY: Duration = Duration::from_millis(20);

    /// Pushes `size` bytes through a pump going `direction` (after `earlier` bytes went the
    /// other way) and returns how long until the last one came out, with what came out.
    async fn through_pump(
        direction: Direction,
        earlier: Option<Direction>,
        size: usize,
    ) -> (Duration, Vec<u8>) {
        let turns = Mutex::new(Turns::default());
        if let Some(earlier) = earlier {
            turns.lock().unwrap().on_bytes(earlier);
        }
        let requests = AtomicU64::new(0);
        let pump = Pump {
            direction,
            latency: LATENCY,
            pacer: Some(Pacer::new(RATE)),
            turns: &turns,
            requests: &requests,
        };
        let (mut sender, pump_in) = tokio::io::duplex(1024 * 1024);
        let (pump_out, mut receiver) = tokio::io::duplex(1024 * 1024);
        let data: Vec<u8> = (0..size as u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let start = Instant::now();
        let send = async move {
            sender.write_all(&sent).await.unwrap();
            drop(sender);
        };
        let receive = async {
            let mut got = Vec::new();
            receiver.read_to_end(&mut got).await.unwrap();
            (start.elapsed(), got)
        };
        let (copied, (took, got), ()) = tokio::join!(pump.run(pump_in, pump_out), receive, send);
        copied.unwrap();
        assert_eq!(got, data, "bytes lost or reordered");
        let expected_requests = u64::from(direction == Direction::ToUpstream);
        assert_eq!(requests.load(Ordering::Relaxed), expected_requests);
        (took, got)
    }

    fn transfer(size: usize) -> Duration {
        Duration::from_secs_f64(size as f64 / RATE as f64)
    }

    /// A request body (a PUT's) is paced like a response body, and waits no latency: the
    /// latency is the server's answer's, not the client's send.
    #[tokio::test(start_paused = true)]
    async fn a_request_is_paced_and_not_delayed() {
        let size = 4 * 1024 * 1024;
        let (took, _) = through_pump(Direction::ToUpstream, None, size).await;
        assert_takes_about(took, transfer(size));
    }

    /// A response waits the latency, then its body is paced.
    #[tokio::test(start_paused = true)]
    async fn a_response_waits_the_latency_then_is_paced() {
        let size = 2 * 1024 * 1024;
        let (took, _) = through_pump(Direction::ToClient, Some(Direction::ToUpstream), size).await;
        assert_takes_about(took, LATENCY + transfer(size));
    }

    /// Bytes from the server that answer nothing are not delayed.
    #[tokio::test(start_paused = true)]
    async fn unprompted_server_bytes_wait_no_latency() {
        let (took, _) = through_pump(Direction::ToClient, None, 4096).await;
        assert!(
            took < Duration::from_millis(1),
            "{took:?}: delayed like a response"
        );
    }
}
