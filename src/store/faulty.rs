//! The shared test double for everything that must survive S3 failures: a store wrapper (usually
//! over `MemoryStore`) that fails chosen calls and reports what it was asked. Unit tests and
//! integration tests both use it; there is no other counting or failing store.
//!
//! Every call goes through `enter`, which counts it per operation, tracks how many
//! calls of that operation are in flight, decides whether it fails, and may hold it (a gate
//! released by the test, or a delay standing in for a network round trip). A fault names an
//! operation, a window of call numbers (and for UploadPart optionally a part number) and the
//! error to return; a body cut makes the next GETs break after a number of bytes. GET ranges are
//! logged so read-path tests can check exactly what was fetched.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::Semaphore;

use super::{
    ByteStream, CompletedPart, CopyMetadata, GetObjectOutput, GetRequest, ListPage, ListRequest,
    ObjectMeta, ObjectStore, PendingUpload, PutOptions, PutOutput, StoreError, StoreResult,
};

/// The operations of [`ObjectStore`], one per method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Head,
    Get,
    Put,
    CreateMultipart,
    UploadPart,
    CompleteMultipart,
    AbortMultipart,
    Copy,
    Delete,
    List,
    HeadBucket,
    ListUploads,
}

/// A plain server error (500) to inject where the kind of failure does not matter.
pub fn injected_error() -> StoreError {
    StoreError::Server {
        status: 500,
        message: "injected fault".into(),
    }
}

type MakeError = Arc<dyn Fn() -> StoreError + Send + Sync>;

struct Fault {
    op: Op,
    /// Call numbers (1-based, counted since the store was made) that fail, inclusive.
    first: u32,
    last: u32,
    /// For UploadPart: only calls sending this part fail.
    part_number: Option<u32>,
    error: MakeError,
}

#[derive(Default)]
struct State {
    calls: HashMap<Op, u32>,
    in_flight: HashMap<Op, u32>,
    max_in_flight: HashMap<Op, u32>,
    faults: Vec<Fault>,
    /// Cut the next `.1` GET bodies after `.0` bytes.
    body_cut: Option<(u64, u32)>,
    /// Every GET's range, in call order; a whole-object GET is `0..u64::MAX`.
    get_ranges: Vec<Range<u64>>,
    /// Calls of these operations wait for (and use up) a permit.
    gates: HashMap<Op, Arc<Semaphore>>,
    delays: HashMap<Op, Duration>,
    /// Injected errors that were throttles, for [`ObjectStore::throttled_answers`].
    throttled: u64,
}

pub struct FaultyStore<S> {
    inner: S,
    state: Mutex<State>,
}

impl<S> FaultyStore<S> {
    fn state(&self) -> MutexGuard<'_, State> {
        // Only counters and settings live here; a panicking test thread cannot break them.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

impl<S: ObjectStore> FaultyStore<S> {
    pub fn new(inner: S) -> Self {
        FaultyStore {
            inner,
            state: Mutex::new(State::default()),
        }
    }

    /// The wrapped store, for setting up and inspecting objects without counting calls.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Calls of `op` made so far.
    pub fn calls(&self, op: Op) -> u32 {
        self.state().calls.get(&op).copied().unwrap_or(0)
    }

    /// The most calls of `op` that were in flight at once.
    pub fn max_in_flight(&self, op: Op) -> u32 {
        self.state().max_in_flight.get(&op).copied().unwrap_or(0)
    }

    /// The range of every GET so far, in call order (`0..u64::MAX` for a whole object).
    pub fn get_ranges(&self) -> Vec<Range<u64>> {
        self.state().get_ranges.clone()
    }

    /// Fails the `k`-th call of `op` from now on (1 = the next one).
    pub fn fail_call(
        &self,
        op: Op,
        k: u32,
        error: impl Fn() -> StoreError + Send + Sync + 'static,
    ) {
        self.add_fault(op, k, k, None, Arc::new(error));
    }

    /// Fails the next `n` calls of `op`.
    pub fn fail_next(
        &self,
        op: Op,
        n: u32,
        error: impl Fn() -> StoreError + Send + Sync + 'static,
    ) {
        if n > 0 {
            self.add_fault(op, 1, n, None, Arc::new(error));
        }
    }

    /// Fails every call of `op` from now on.
    pub fn fail_always(&self, op: Op, error: impl Fn() -> StoreError + Send + Sync + 'static) {
        self.add_fault(op, 1, u32::MAX, None, Arc::new(error));
    }

    /// Fails every UploadPart of part `part_number` from now on.
    pub fn fail_part(
        &self,
        part_number: u32,
        error: impl Fn() -> StoreError + Send + Sync + 'static,
    ) {
        self.add_fault(
            Op::UploadPart,
            1,
            u32::MAX,
            Some(part_number),
            Arc::new(error),
        );
    }

    /// The next `times` GETs deliver `after` bytes of their body, then a Connection error.
    pub fn cut_get_bodies_after(&self, after: u64, times: u32) {
        self.state().body_cut = (times > 0).then_some((after, times));
    }

    /// Holds every later call of `op` until [`release`](Self::release) lets it through.
    pub fn hold(&self, op: Op) {
        self.state().gates.insert(op, Arc::new(Semaphore::new(0)));
    }

    /// Lets `calls` held calls of `op` (waiting now or arriving later) through.
    pub fn release(&self, op: Op, calls: usize) {
        if let Some(gate) = self.state().gates.get(&op) {
            gate.add_permits(calls);
        }
    }

    /// Each later call of `op` takes `delay`, as over a network, so that concurrent callers
    /// really overlap.
    pub fn delay(&self, op: Op, delay: Duration) {
        self.state().delays.insert(op, delay);
    }

    fn add_fault(
        &self,
        op: Op,
        from_now: u32,
        to_now: u32,
        part_number: Option<u32>,
        error: MakeError,
    ) {
        let mut state = self.state();
        let done = state.calls.get(&op).copied().unwrap_or(0);
        state.faults.push(Fault {
            op,
            first: done.saturating_add(from_now),
            last: done.saturating_add(to_now),
            part_number,
            error,
        });
    }

    /// Counts a call of `op`, holds it at its gate and for its delay, then returns the injected
    /// error if this call must fail. The returned guard keeps the call counted as in flight.
    async fn enter(&self, op: Op, part_number: Option<u32>) -> StoreResult<InFlight<'_, S>> {
        let (verdict, gate, delay) = {
            let mut state = self.state();
            let count = state.calls.entry(op).or_insert(0);
            *count += 1;
            let call = *count;
            let in_flight = state.in_flight.entry(op).or_insert(0);
            *in_flight += 1;
            let now = *in_flight;
            let most = state.max_in_flight.entry(op).or_insert(0);
            *most = (*most).max(now);
            state
                .faults
                .retain(|fault| fault.op != op || fault.last >= call);
            let verdict = match state.faults.iter().find(|f| {
                f.op == op
                    && (f.first..=f.last).contains(&call)
                    && f.part_number.is_none_or(|n| Some(n) == part_number)
            }) {
                Some(fault) => Err((fault.error)()),
                None => Ok(()),
            };
            if matches!(verdict, Err(StoreError::Throttled(_))) {
                state.throttled += 1;
            }
            (
                verdict,
                state.gates.get(&op).cloned(),
                state.delays.get(&op).copied(),
            )
        };
        let guard = InFlight { store: self, op };
        if let Some(gate) = gate {
            // The gate is never closed, so acquiring only waits.
            if let Ok(permit) = gate.acquire().await {
                permit.forget();
            }
        }
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        verdict.map(|()| guard)
    }

    fn take_body_cut(&self) -> Option<u64> {
        let mut state = self.state();
        let (after, times) = state.body_cut?;
        state.body_cut = (times > 1).then_some((after, times - 1));
        Some(after)
    }
}

/// Counts a call out of flight however it ends (even when its future is dropped).
struct InFlight<'a, S> {
    store: &'a FaultyStore<S>,
    op: Op,
}

impl<S> Drop for InFlight<'_, S> {
    fn drop(&mut self) {
        if let Some(n) = self.store.state().in_flight.get_mut(&self.op) {
            *n -= 1;
        }
    }
}

/// Passes `after` bytes of `body` through, then ends it with a Connection error.
fn cut_body(body: ByteStream, after: u64) -> ByteStream {
    let state = Some((body, after));
    Box::pin(
        futures::stream::unfold(state, |state| async move {
            let (mut body, left) = state?;
            match body.next().await {
                Some(Ok(chunk)) if (chunk.len() as u64) < left => {
                    let left = left - chunk.len() as u64;
                    Some((Ok(chunk), Some((body, left))))
                }
                Some(Ok(chunk)) if left > 0 => {
                    Some((Ok(chunk.slice(..left as usize)), Some((body, 0))))
                }
                Some(Ok(_)) => {
                    let err = StoreError::Connection("injected fault: GET body cut".into());
                    Some((Err(err), None))
                }
                other => other.map(|item| (item, Some((body, left)))),
            }
        })
        .fuse(),
    )
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for FaultyStore<S> {
    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        let _call = self.enter(Op::Head, None).await?;
        self.inner.head(key).await
    }

    async fn get(&self, request: GetRequest) -> StoreResult<GetObjectOutput> {
        let range = request.range.clone().unwrap_or(0..u64::MAX);
        self.state().get_ranges.push(range);
        let _call = self.enter(Op::Get, None).await?;
        let mut output = self.inner.get(request).await?;
        if let Some(after) = self.take_body_cut() {
            output.body = cut_body(output.body, after);
        }
        Ok(output)
    }

    async fn put(&self, key: &str, body: Bytes, options: PutOptions) -> StoreResult<PutOutput> {
        let _call = self.enter(Op::Put, None).await?;
        self.inner.put(key, body, options).await
    }

    async fn create_multipart(&self, key: &str, options: PutOptions) -> StoreResult<String> {
        let _call = self.enter(Op::CreateMultipart, None).await?;
        self.inner.create_multipart(key, options).await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
    ) -> StoreResult<CompletedPart> {
        let _call = self.enter(Op::UploadPart, Some(part_number)).await?;
        self.inner
            .upload_part(key, upload_id, part_number, body)
            .await
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        if_none_match: bool,
    ) -> StoreResult<PutOutput> {
        let _call = self.enter(Op::CompleteMultipart, None).await?;
        self.inner
            .complete_multipart(key, upload_id, parts, if_none_match)
            .await
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> StoreResult<()> {
        let _call = self.enter(Op::AbortMultipart, None).await?;
        self.inner.abort_multipart(key, upload_id).await
    }

    async fn copy(
        &self,
        source_key: &str,
        dest_key: &str,
        metadata: CopyMetadata,
    ) -> StoreResult<PutOutput> {
        let _call = self.enter(Op::Copy, None).await?;
        self.inner.copy(source_key, dest_key, metadata).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        let _call = self.enter(Op::Delete, None).await?;
        self.inner.delete(key).await
    }

    async fn list(&self, request: ListRequest) -> StoreResult<ListPage> {
        let _call = self.enter(Op::List, None).await?;
        self.inner.list(request).await
    }

    async fn head_bucket(&self) -> StoreResult<()> {
        let _call = self.enter(Op::HeadBucket, None).await?;
        self.inner.head_bucket().await
    }

    async fn list_uploads(&self, prefix: &str) -> StoreResult<Vec<PendingUpload>> {
        let _call = self.enter(Op::ListUploads, None).await?;
        self.inner.list_uploads(prefix).await
    }

    fn throttled_answers(&self) -> u64 {
        self.state().throttled + self.inner.throttled_answers()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::get_bytes;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn fails_exactly_the_chosen_call() {
        let store = FaultyStore::new(MemoryStore::new());
        store
            .put("k", Bytes::from_static(b"v"), PutOptions::default())
            .await
            .unwrap();
        store.fail_call(Op::Head, 2, || {
            StoreError::Timeout(std::time::Duration::from_secs(1))
        });
        assert!(store.head("k").await.is_ok());
        assert!(matches!(store.head("k").await, Err(StoreError::Timeout(_))));
        assert!(store.head("k").await.is_ok());
        assert_eq!(store.calls(Op::Head), 3);
        assert_eq!(store.calls(Op::Put), 1);
    }

    #[tokio::test]
    async fn cuts_a_body_after_n_bytes() {
        let store = FaultyStore::new(MemoryStore::new());
        let data = Bytes::from(vec![7u8; 200_000]);
        store
            .put("k", data.clone(), PutOptions::default())
            .await
            .unwrap();
        store.cut_get_bodies_after(70_000, 1);
        let mut output = store.get(GetRequest::whole("k")).await.unwrap();
        let mut received = 0;
        let err = loop {
            match output.body.next().await {
                Some(Ok(chunk)) => received += chunk.len(),
                Some(Err(err)) => break err,
                None => panic!("the body was not cut"),
            }
        };
        assert_eq!(received, 70_000);
        assert!(matches!(err, StoreError::Connection(_)));
        assert!(output.body.next().await.is_none());
        assert_eq!(get_bytes(&store, "k", None).await.unwrap(), data);
    }
}
