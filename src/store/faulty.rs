//! A store wrapper that fails chosen calls, for tests of everything that must survive S3
//! failures. It counts calls per operation; a fault names an operation, a window of call numbers
//! and the error to return; a body cut makes the next GETs break after a number of bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::{
    ByteStream, CompletedPart, GetObjectOutput, GetRequest, ListPage, ListRequest, ObjectMeta,
    ObjectStore, PutOptions, PutOutput, StoreError, StoreResult, UserMetadata,
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
}

type MakeError = Arc<dyn Fn() -> StoreError + Send + Sync>;

struct Fault {
    op: Op,
    /// Call numbers (1-based, counted since the store was made) that fail, inclusive.
    first: u32,
    last: u32,
    error: MakeError,
}

#[derive(Default)]
struct State {
    calls: HashMap<Op, u32>,
    faults: Vec<Fault>,
    /// Cut the next `.1` GET bodies after `.0` bytes.
    body_cut: Option<(u64, u32)>,
}

pub struct FaultyStore<S> {
    inner: S,
    state: Mutex<State>,
}

impl<S: ObjectStore> FaultyStore<S> {
    pub fn new(inner: S) -> Self {
        FaultyStore {
            inner,
            state: Mutex::new(State::default()),
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Calls of `op` made so far.
    pub fn calls(&self, op: Op) -> u32 {
        self.state().calls.get(&op).copied().unwrap_or(0)
    }

    /// Fails the `k`-th call of `op` from now on (1 = the next one).
    pub fn fail_call(
        &self,
        op: Op,
        k: u32,
        error: impl Fn() -> StoreError + Send + Sync + 'static,
    ) {
        self.add_fault(op, k, k, Arc::new(error));
    }

    /// Fails the next `n` calls of `op`.
    pub fn fail_next(
        &self,
        op: Op,
        n: u32,
        error: impl Fn() -> StoreError + Send + Sync + 'static,
    ) {
        if n > 0 {
            self.add_fault(op, 1, n, Arc::new(error));
        }
    }

    /// The next `times` GETs deliver `after` bytes of their body, then a Connection error.
    pub fn cut_get_bodies_after(&self, after: u64, times: u32) {
        self.state().body_cut = (times > 0).then_some((after, times));
    }

    fn add_fault(&self, op: Op, from_now: u32, to_now: u32, error: MakeError) {
        let mut state = self.state();
        let done = state.calls.get(&op).copied().unwrap_or(0);
        state.faults.push(Fault {
            op,
            first: done + from_now,
            last: done + to_now,
            error,
        });
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Only counters live here; a panicking test thread cannot leave them inconsistent.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Counts a call of `op` and returns the injected error if this call must fail.
    fn enter(&self, op: Op) -> StoreResult<()> {
        let mut state = self.state();
        let count = state.calls.entry(op).or_insert(0);
        *count += 1;
        let call = *count;
        state
            .faults
            .retain(|fault| fault.op != op || fault.last >= call);
        match state
            .faults
            .iter()
            .find(|f| f.op == op && (f.first..=f.last).contains(&call))
        {
            Some(fault) => Err((fault.error)()),
            None => Ok(()),
        }
    }

    fn take_body_cut(&self) -> Option<u64> {
        let mut state = self.state();
        let (after, times) = state.body_cut?;
        state.body_cut = (times > 1).then_some((after, times - 1));
        Some(after)
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
        self.enter(Op::Head)?;
        self.inner.head(key).await
    }

    async fn get(&self, request: GetRequest) -> StoreResult<GetObjectOutput> {
        self.enter(Op::Get)?;
        let mut output = self.inner.get(request).await?;
        if let Some(after) = self.take_body_cut() {
            output.body = cut_body(output.body, after);
        }
        Ok(output)
    }

    async fn put(&self, key: &str, body: Bytes, options: PutOptions) -> StoreResult<PutOutput> {
        self.enter(Op::Put)?;
        self.inner.put(key, body, options).await
    }

    async fn create_multipart(&self, key: &str, options: PutOptions) -> StoreResult<String> {
        self.enter(Op::CreateMultipart)?;
        self.inner.create_multipart(key, options).await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
    ) -> StoreResult<CompletedPart> {
        self.enter(Op::UploadPart)?;
        self.inner
            .upload_part(key, upload_id, part_number, body)
            .await
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> StoreResult<PutOutput> {
        self.enter(Op::CompleteMultipart)?;
        self.inner.complete_multipart(key, upload_id, parts).await
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> StoreResult<()> {
        self.enter(Op::AbortMultipart)?;
        self.inner.abort_multipart(key, upload_id).await
    }

    async fn copy(
        &self,
        source_key: &str,
        dest_key: &str,
        metadata: Option<UserMetadata>,
    ) -> StoreResult<PutOutput> {
        self.enter(Op::Copy)?;
        self.inner.copy(source_key, dest_key, metadata).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.enter(Op::Delete)?;
        self.inner.delete(key).await
    }

    async fn list(&self, request: ListRequest) -> StoreResult<ListPage> {
        self.enter(Op::List)?;
        self.inner.list(request).await
    }

    async fn head_bucket(&self) -> StoreResult<()> {
        self.enter(Op::HeadBucket)?;
        self.inner.head_bucket().await
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
