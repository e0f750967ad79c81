//! The fan-out of metadata HEADs: how many a mount keeps in flight, adapted to the server.
//!
//! A listing with stored metadata on asks one HEAD per name it has no metadata for. At 20 ms a
//! request, a fixed fan-out either leaves the link idle (too few) or hammers a server that
//! answers 503 SlowDown (too many). So the window works as TCP's congestion window does:
//!
//! - **Slow start.** Every HEAD that comes back adds one to the window, so it doubles each round
//!   trip while the server keeps up, from [`INITIAL`] to the mount's connection pool.
//! - **Additive increase, multiplicative decrease.** A throttled answer (the store counts them,
//!   retried or not) halves the window, at most once per window of completions so that one
//!   burst of 503s is one cut, never below [`MIN`]; from then on the window grows by one per
//!   window of HEADs that come back.
//!
//! One window per mount: every listing's HEADs share it, as they share the server's patience.
//! Permits are a FIFO semaphore; a cut takes permits away as they come back (`debt`), so
//! HEADs already in flight finish.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::registry;

/// HEADs in flight at first, before the server has answered any.
pub const INITIAL: usize = 32;
/// The window never shrinks below this: a throttling server still gets a few.
pub const MIN: usize = 4;

pub struct HeadWindow {
    permits: Arc<Semaphore>,
    state: Mutex<WindowState>,
    max: usize,
}

struct WindowState {
    /// The window, fractional so that additive increase can add 1/window per completion.
    limit: f64,
    /// Permits the window grants now: `limit` rounded down.
    granted: usize,
    /// Permits still to take away as they come back, after a cut.
    debt: usize,
    slow_start: bool,
    /// Completions since the last cut (none yet: as many as can be): the next cut waits for a
    /// window's worth.
    since_cut: usize,
}

/// A HEAD's place in the window; give it back with [`HeadWindow::finish`].
pub struct WindowSlot {
    permit: OwnedSemaphorePermit,
    throttled_before: u64,
}

impl HeadWindow {
    /// A window that grows up to `max` HEADs in flight (the connection pool).
    pub fn new(max: usize) -> HeadWindow {
        let max = max.max(MIN);
        let initial = INITIAL.clamp(MIN, max);
        registry().set_metadata_heads_window(initial);
        HeadWindow {
            permits: Arc::new(Semaphore::new(initial)),
            state: Mutex::new(WindowState {
                limit: initial as f64,
                granted: initial,
                debt: 0,
                slow_start: true,
                since_cut: usize::MAX,
            }),
            max,
        }
    }

    /// HEADs the window allows in flight now.
    #[cfg(test)]
    fn limit(&self) -> usize {
        self.state().granted
    }

    /// Waits for a place in the window. `throttled_so_far` is the store's count of throttled
    /// answers now, so that [`finish`](Self::finish) can tell whether any came meanwhile.
    pub async fn enter(&self, throttled_so_far: u64) -> WindowSlot {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("the window's semaphore is never closed"));
        WindowSlot {
            permit,
            throttled_before: throttled_so_far,
        }
    }

    /// A HEAD came back; `throttled_so_far` is the store's count of throttled answers now.
    pub fn finish(&self, slot: WindowSlot, throttled_so_far: u64) {
        let mut state = self.state();
        state.since_cut = state.since_cut.saturating_add(1);
        if throttled_so_far > slot.throttled_before {
            if state.since_cut >= state.granted {
                let cut_to = ((state.limit / 2.0).floor() as usize).max(MIN);
                tracing::info!(
                    from = state.granted,
                    to = cut_to,
                    "S3 asked to slow down: fewer metadata HEADs in flight"
                );
                state.debt += state.granted.saturating_sub(cut_to);
                state.limit = cut_to as f64;
                state.granted = cut_to;
                state.slow_start = false;
                state.since_cut = 0;
                registry().set_metadata_heads_window(cut_to);
                let forgotten = self.permits.forget_permits(state.debt);
                state.debt -= forgotten;
            }
        } else if state.granted < self.max {
            state.limit += if state.slow_start {
                1.0
            } else {
                1.0 / state.limit
            };
            state.limit = state.limit.min(self.max as f64);
            let granted_before = state.granted;
            while state.granted < state.limit.floor() as usize {
                state.granted += 1;
                if state.debt > 0 {
                    state.debt -= 1;
                } else {
                    self.permits.add_permits(1);
                }
            }
            if state.granted != granted_before {
                registry().set_metadata_heads_window(state.granted);
            }
        }
        if state.debt > 0 {
            state.debt -= 1;
            slot.permit.forget();
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, WindowState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `n` HEADs one after another through the window, `throttled` telling which were.
    async fn run(window: &HeadWindow, throttles: &mut u64, outcomes: &[bool]) {
        for throttled in outcomes {
            let slot = window.enter(*throttles).await;
            if *throttled {
                *throttles += 1;
            }
            window.finish(slot, *throttles);
        }
    }

    #[tokio::test]
    async fn slow_start_grows_by_one_per_answer_up_to_the_pool() {
        let window = HeadWindow::new(100);
        assert_eq!(window.limit(), INITIAL);
        let mut throttles = 0;
        run(&window, &mut throttles, &[false; 10]).await;
        assert_eq!(window.limit(), INITIAL + 10);
        run(&window, &mut throttles, &[false; 500]).await;
        assert_eq!(window.limit(), 100);
        assert_eq!(window.permits.available_permits(), 100);
    }

    #[tokio::test]
    async fn a_throttled_answer_halves_the_window_once_per_window_then_growth_is_additive() {
        let window = HeadWindow::new(256);
        let mut throttles = 0;
        run(&window, &mut throttles, &[false; 96]).await;
        assert_eq!(window.limit(), 128);
        run(&window, &mut throttles, &[true]).await;
        assert_eq!(window.limit(), 64);
        // More throttles within the same window of completions: no second cut.
        run(&window, &mut throttles, &[true; 10]).await;
        assert_eq!(window.limit(), 64);
        // A window of successes later, another throttle cuts again.
        run(&window, &mut throttles, &[false; 64]).await;
        run(&window, &mut throttles, &[true]).await;
        assert_eq!(window.limit(), 32);
        // Additive now: 32 answers add about one.
        run(&window, &mut throttles, &[false; 33]).await;
        assert_eq!(window.limit(), 33);
        assert_eq!(window.permits.available_permits(), 33);
    }

    #[tokio::test]
    async fn the_window_never_drops_below_its_floor() {
        let window = HeadWindow::new(64);
        let mut throttles = 0;
        for _ in 0..20 {
            run(&window, &mut throttles, &[true]).await;
            run(&window, &mut throttles, &[false; MIN]).await;
        }
        assert!(window.limit() >= MIN, "{}", window.limit());
    }

    /// A cut while HEADs are in flight takes their permits as they come back: the ones in
    /// flight finish, and no more than the new window start after them.
    #[tokio::test]
    async fn a_cut_with_heads_in_flight_takes_permits_back_as_they_return() {
        let window = HeadWindow::new(INITIAL);
        let mut slots = Vec::new();
        for _ in 0..INITIAL {
            slots.push(window.enter(0).await);
        }
        assert_eq!(window.permits.available_permits(), 0);
        let mut returned = slots.into_iter();
        for _ in 0..INITIAL - 1 {
            window.finish(returned.next().unwrap(), 0);
        }
        // The last one was throttled: the window halves though every permit but one is free.
        window.finish(returned.next().unwrap(), 1);
        assert_eq!(window.limit(), INITIAL / 2);
        assert_eq!(window.permits.available_permits(), INITIAL / 2);
    }
}
