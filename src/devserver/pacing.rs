//! Per-connection bandwidth pacing, shared by the dev server's bodies (`emulation`) and the TCP
//! proxy (`proxy`), so that both emulate the same link by the same rules.
//!
//! Every connection (the proxy: every connection and direction) owns a [`Pacer`] that hands out
//! transmit slots; a chunk is released only when its slot comes up. Slots follow an ideal
//! schedule, not the timer: tokio sleeps wake on 1 ms ticks (and later on a busy machine), so a
//! chunk released late lets the next ones go at once until the stream is back on schedule.
//! Restarting the schedule at every late wake-up instead made each 16 KiB chunk cost a whole
//! tick, capping a connection at about 10 MB/s whatever the setting. Likewise a chunk due less
//! than one tick from now goes at once: waiting for the tick made a 4 KiB body (41 us at
//! 100 MB/s) take about 1 ms, 5% of every small GET at 20 ms latency. The schedule still counts
//! its slot, so over a body the rate is exact.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Paced streams release at most this much at a time, so a big chunk does not arrive as a burst.
pub(crate) const PACE_CHUNK: usize = 16 * 1024;
/// How far a stream that fell behind its schedule may catch up in one burst. A receiver that
/// stalls (a full socket buffer, a slow reader) must not bank unlimited credit; a real TCP
/// stream likewise bursts only what its buffers hold.
const MAX_CATCH_UP: Duration = Duration::from_millis(10);
/// tokio's timer resolution: a chunk due sooner than this is released at once.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// Hands out transmit slots on one link at a fixed byte rate.
pub(crate) struct Pacer {
    bytes_per_sec: u64,
    next_free: Mutex<Instant>,
}

impl Pacer {
    pub(crate) fn new(bytes_per_sec: u64) -> Self {
        Pacer {
            bytes_per_sec,
            next_free: Mutex::new(Instant::now()),
        }
    }

    /// Reserves the link for `len` bytes and tells when they may be released: `None` for now
    /// (behind schedule, or due within a timer tick), else the instant to sleep until. The first
    /// chunk of a body (a request or a response) starts no earlier than now, since an idle link
    /// banks no credit; later chunks continue the schedule, so timer overshoot is made up
    /// rather than lost.
    pub(crate) fn slot(&self, len: usize, first_of_body: bool) -> Option<Instant> {
        let due = self.reserve(len, first_of_body);
        (due > Instant::now() + TIMER_TICK).then_some(due)
    }

    /// Waits for the slot of `len` bytes (see [`Pacer::slot`]).
    pub(crate) async fn wait_slot(&self, len: usize, first_of_body: bool) {
        if let Some(due) = self.slot(len, first_of_body) {
            tokio::time::sleep_until(due).await;
        }
    }

    /// Returns when `len` bytes reserved now are through.
    fn reserve(&self, len: usize, first_of_body: bool) -> Instant {
        let transmit = Duration::from_secs_f64(len as f64 / self.bytes_per_sec as f64);
        let mut next_free = self
            .next_free
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let now = Instant::now();
        let earliest = if first_of_body {
            now
        } else {
            now.checked_sub(MAX_CATCH_UP).unwrap_or(now)
        };
        let done = (*next_free).max(earliest) + transmit;
        *next_free = done;
        done
    }
}

/// What the tests of paced streams (`emulation`, `proxy`) check a transfer's time against.
/// They run on paused tokio time (`start_paused`), which moves only while every task waits on
/// the timer, so `took` is the schedule's own time whatever the machine's load: shorter than
/// the link's by at most the tick within which a last chunk may go early, and longer by no
/// more than the timer's rounding of the last waits.
#[cfg(test)]
pub(crate) fn assert_takes_about(took: Duration, expected: Duration) {
    assert!(
        took + TIMER_TICK >= expected,
        "{took:?} beats the link ({expected:?})"
    );
    assert!(
        took <= expected + 2 * TIMER_TICK,
        "took {took:?}, slower than the link ({expected:?}) by more than the timer's rounding"
    );
}
