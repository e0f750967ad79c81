//! Part buffers kept for reuse. A mount streaming many files fills and sends one part buffer
//! after another, each of the same few sizes (the part size, or S3's minimum while many writers
//! share the budget). Freeing each buffer when its request ends and allocating the next gives
//! its pages back to the kernel and faults fresh, zeroed ones in again: on 32 writers of
//! 64 MiB that is 2 GiB of page faults and zeroing, and on a VM that hands freed memory back to
//! the host, a second fault there too. So a buffer whose part has been sent goes back here,
//! and the next buffer of the same size is taken from here.
//!
//! The pool recycles allocations, not memory rights: every buffer taken is still paid for by a
//! [`Reservation`](super::Reservation) of the write budget, handed out in the budget's order.
//! What it bounds is the memory it causes: buffers out (taken, not yet back) plus buffers idle
//! here never exceed its limit (the budget's size), because a new allocation first frees idle
//! buffers until it fits. Buffers out are all reserved, so they fit by themselves. Idle buffers
//! are freed after [`IDLE_LIFETIME`], so a mount that stopped writing gives the memory back.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

/// How long an unused buffer is kept.
pub const IDLE_LIFETIME: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct PartBuffers {
    state: Mutex<PoolState>,
    limit: u64,
}

#[derive(Debug, Default)]
struct PoolState {
    /// Oldest first.
    idle: Vec<IdleBuffer>,
    idle_bytes: u64,
    /// Capacity of the buffers taken and not yet back.
    out_bytes: u64,
    /// Whether a task is freeing idle buffers as they expire.
    trimming: bool,
    taken: u64,
    reused: u64,
}

#[derive(Debug)]
struct IdleBuffer {
    buffer: Vec<u8>,
    since: Instant,
}

/// How many buffers were taken from a pool, and how many of them were reused ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolCounts {
    pub taken: u64,
    pub reused: u64,
    pub idle_bytes: u64,
}

impl PartBuffers {
    /// A pool whose buffers, out and idle together, stay within `limit` bytes.
    pub fn new(limit: u64) -> Arc<PartBuffers> {
        Arc::new(PartBuffers {
            state: Mutex::new(PoolState::default()),
            limit,
        })
    }

    /// An empty buffer of exactly `capacity` bytes: an idle one if there is one that size,
    /// else a new one, after freeing the idle buffers it would not fit beside.
    pub fn take(self: &Arc<Self>, capacity: usize) -> PartBuffer {
        let mut freed = Vec::new();
        let reused = {
            let mut state = self.lock();
            state.taken += 1;
            state.out_bytes += capacity as u64;
            let found = state
                .idle
                .iter()
                .rposition(|idle| idle.buffer.capacity() == capacity);
            match found {
                Some(index) => {
                    let idle = state.idle.remove(index);
                    state.idle_bytes -= capacity as u64;
                    state.reused += 1;
                    Some(idle.buffer)
                }
                None => {
                    while state.out_bytes + state.idle_bytes > self.limit && !state.idle.is_empty()
                    {
                        let oldest = state.idle.remove(0);
                        state.idle_bytes -= oldest.buffer.capacity() as u64;
                        freed.push(oldest.buffer);
                    }
                    None
                }
            }
        };
        drop(freed);
        let buffer = reused.unwrap_or_else(|| Vec::with_capacity(capacity));
        PartBuffer {
            buffer,
            home: Some(Arc::clone(self)),
        }
    }

    pub fn counts(&self) -> PoolCounts {
        let state = self.lock();
        PoolCounts {
            taken: state.taken,
            reused: state.reused,
            idle_bytes: state.idle_bytes,
        }
    }

    fn give_back(self: &Arc<Self>, mut buffer: Vec<u8>) {
        let capacity = buffer.capacity() as u64;
        let start_trimming = {
            let mut state = self.lock();
            state.out_bytes = state.out_bytes.saturating_sub(capacity);
            if state.out_bytes + state.idle_bytes + capacity > self.limit {
                None
            } else {
                buffer.clear();
                state.idle.push(IdleBuffer {
                    buffer: std::mem::take(&mut buffer),
                    since: Instant::now(),
                });
                state.idle_bytes += capacity;
                let start = !state.trimming;
                state.trimming = true;
                Some(start)
            }
        };
        drop(buffer);
        if start_trimming == Some(true) {
            self.start_trimming();
        }
    }

    /// Frees the idle buffers as they expire, until none is left. Outside a runtime (a drop on
    /// a plain thread) no task can run: the buffers then stay until the next take or give back
    /// starts one.
    fn start_trimming(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.lock().trimming = false;
            return;
        };
        let pool = Arc::downgrade(self);
        runtime.spawn(trim_until_empty(pool));
    }

    /// Frees the buffers idle for `IDLE_LIFETIME`; returns when the next one expires, if any.
    fn free_expired(&self, now: Instant) -> Option<Instant> {
        let mut state = self.lock();
        let expired = state
            .idle
            .iter()
            .take_while(|idle| now.duration_since(idle.since) >= IDLE_LIFETIME)
            .count();
        let freed: Vec<IdleBuffer> = state.idle.drain(..expired).collect();
        state.idle_bytes -= freed
            .iter()
            .map(|idle| idle.buffer.capacity() as u64)
            .sum::<u64>();
        let next = state.idle.first().map(|idle| idle.since + IDLE_LIFETIME);
        state.trimming = next.is_some();
        drop(state);
        drop(freed);
        next
    }

    /// The state is counters and a list: a panic while it is held leaves nothing half done
    /// that matters, so a poisoned lock is used as it is.
    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

async fn trim_until_empty(pool: Weak<PartBuffers>) {
    let mut next = Instant::now() + IDLE_LIFETIME;
    loop {
        tokio::time::sleep_until(next).await;
        let Some(pool) = pool.upgrade() else { return };
        match pool.free_expired(Instant::now()) {
            Some(at) => next = at,
            None => return,
        }
    }
}

/// A buffer that goes back to its pool when dropped (or a plain one, without a pool).
#[derive(Debug, Default)]
pub struct PartBuffer {
    buffer: Vec<u8>,
    home: Option<Arc<PartBuffers>>,
}

impl PartBuffer {
    /// The bytes as a request body; the buffer goes back to the pool when the last clone of
    /// the body is dropped.
    pub fn into_bytes(self) -> Bytes {
        if self.home.is_none() {
            return Bytes::from(self.into_vec());
        }
        Bytes::from_owner(self)
    }

    /// The bytes as a plain vector, which leaves the pool for good.
    pub fn into_vec(mut self) -> Vec<u8> {
        let buffer = std::mem::take(&mut self.buffer);
        if let Some(home) = self.home.take() {
            let mut state = home.lock();
            state.out_bytes = state.out_bytes.saturating_sub(buffer.capacity() as u64);
        }
        buffer
    }
}

impl From<Vec<u8>> for PartBuffer {
    fn from(buffer: Vec<u8>) -> Self {
        PartBuffer { buffer, home: None }
    }
}

impl std::ops::Deref for PartBuffer {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.buffer
    }
}

impl std::ops::DerefMut for PartBuffer {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buffer
    }
}

impl AsRef<[u8]> for PartBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for PartBuffer {
    fn drop(&mut self) {
        if let Some(home) = self.home.take() {
            home.give_back(std::mem::take(&mut self.buffer));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn a_buffer_sent_as_a_body_comes_back_when_the_last_clone_drops() {
        let pool = PartBuffers::new(64 * MIB as u64);
        let mut buffer = pool.take(8 * MIB);
        buffer.extend_from_slice(b"part");
        let address = buffer.as_ptr();
        let body = buffer.into_bytes();
        let retry = body.clone();
        assert_eq!(&retry[..], b"part");
        drop(body);
        assert_eq!(pool.counts().idle_bytes, 0, "a clone still holds it");
        drop(retry);
        assert_eq!(pool.counts().idle_bytes, 8 * MIB as u64);
        let again = pool.take(8 * MIB);
        assert_eq!(again.as_ptr(), address, "the same allocation is reused");
        assert!(again.is_empty());
        assert_eq!(again.capacity(), 8 * MIB);
        assert_eq!(
            pool.counts(),
            PoolCounts {
                taken: 2,
                reused: 1,
                idle_bytes: 0
            }
        );
    }

    #[test]
    fn only_a_buffer_of_the_same_size_is_reused() {
        let pool = PartBuffers::new(64 * MIB as u64);
        drop(pool.take(8 * MIB));
        let smaller = pool.take(5 * MIB);
        assert_eq!(smaller.capacity(), 5 * MIB);
        assert_eq!(pool.counts().reused, 0);
        assert_eq!(pool.counts().idle_bytes, 8 * MIB as u64);
    }

    /// Buffers out plus buffers idle stay within the limit: a new size first frees idle ones,
    /// and a buffer that would not fit beside the others is freed rather than kept.
    #[test]
    fn out_and_idle_together_stay_within_the_limit() {
        let pool = PartBuffers::new(16 * MIB as u64);
        drop(pool.take(8 * MIB));
        drop(pool.take(4 * MIB));
        assert_eq!(pool.counts().idle_bytes, 12 * MIB as u64);
        let a = pool.take(5 * MIB);
        assert_eq!(
            pool.counts().idle_bytes,
            4 * MIB as u64,
            "the oldest made room"
        );
        let b = pool.take(5 * MIB);
        let c = pool.take(5 * MIB);
        assert_eq!(pool.counts().idle_bytes, 0, "15 MiB out, nothing else fits");
        drop((a, b, c));
        assert_eq!(pool.counts().idle_bytes, 15 * MIB as u64);
        let d = pool.take(2 * MIB);
        assert_eq!(pool.counts().idle_bytes, 10 * MIB as u64);
        let e = pool.take(5 * MIB);
        assert_eq!(pool.counts().reused, 1);
        drop((d, e));
        assert_eq!(pool.counts().idle_bytes, 12 * MIB as u64);
        // More out than the limit (the pool does not refuse a buffer): what comes back while
        // that is so is freed.
        let small = PartBuffers::new(8 * MIB as u64);
        let (a, b) = (small.take(5 * MIB), small.take(5 * MIB));
        drop(a);
        assert_eq!(small.counts().idle_bytes, 0);
        drop(b);
        assert_eq!(small.counts().idle_bytes, 5 * MIB as u64);
    }

    #[test]
    fn a_buffer_that_leaves_as_a_vector_no_longer_counts() {
        let pool = PartBuffers::new(8 * MIB as u64);
        let mut buffer = pool.take(8 * MIB);
        buffer.extend_from_slice(b"unsent");
        assert_eq!(buffer.into_vec(), b"unsent");
        drop(pool.take(8 * MIB));
        assert_eq!(pool.counts().idle_bytes, 8 * MIB as u64);
        assert_eq!(
            PartBuffer::from(b"plain".to_vec()).into_bytes(),
            &b"plain"[..]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_buffers_are_freed_after_their_lifetime() {
        let pool = PartBuffers::new(64 * MIB as u64);
        drop(pool.take(MIB));
        tokio::time::sleep(IDLE_LIFETIME / 2).await;
        drop(pool.take(2 * MIB));
        assert_eq!(pool.counts().idle_bytes, 3 * MIB as u64);
        tokio::time::sleep(IDLE_LIFETIME / 2 + Duration::from_millis(1)).await;
        assert_eq!(
            pool.counts().idle_bytes,
            2 * MIB as u64,
            "the first expired"
        );
        tokio::time::sleep(IDLE_LIFETIME).await;
        assert_eq!(pool.counts().idle_bytes, 0);
        drop(pool.take(MIB));
        tokio::time::sleep(IDLE_LIFETIME + Duration::from_millis(1)).await;
        assert_eq!(pool.counts().idle_bytes, 0, "trimming starts again");
    }
}
