//! Waiting for an event a test is not told of (a copy landing on the server, a process exiting,
//! the clock's second turning): the condition is polled until it holds. The deadline is generous
//! and only fails the test; a fast machine goes on at once, a slow one waits as long as it needs.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// How often a condition is asked (the pause between asks, not a wait for the event).
const POLL: Duration = Duration::from_millis(10);

/// Polls `check` until it holds; fails the test naming `what` after [`DEADLINE`].
pub fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {DEADLINE:?}");
        std::thread::sleep(POLL);
    }
}

/// The wall clock in whole Unix seconds, as stat and S3 keep times.
pub fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Returns once the wall clock's second is past `second`: a time set now then differs from
/// one set at `second`.
pub fn past_second(second: u64) {
    until("the clock's second turned", || unix_seconds() > second);
}
