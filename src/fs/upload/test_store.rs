//! A test double for this module only: a `MemoryStore` that fails chosen calls, counts calls and
//! measures how many parts upload at the same time.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::store::memory::MemoryStore;
use crate::store::{
    CompletedPart, GetObjectOutput, GetRequest, ListPage, ListRequest, ObjectMeta, ObjectStore,
    PutOptions, PutOutput, StoreError, StoreResult, UserMetadata,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fail {
    Put,
    Create,
    Part(u32),
    Complete,
    Abort,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Calls {
    pub puts: usize,
    pub creates: usize,
    pub parts: usize,
    pub completes: usize,
    pub aborts: usize,
    pub gets: usize,
}

pub struct TestStore {
    pub memory: MemoryStore,
    failures: Mutex<HashSet<Fail>>,
    calls: Mutex<Calls>,
    parts_in_flight: AtomicUsize,
    max_parts_in_flight: AtomicUsize,
    part_delay: Duration,
}

impl TestStore {
    pub fn new(min_part_size: u64) -> Arc<Self> {
        Self::with_part_delay(min_part_size, Duration::ZERO)
    }

    /// Each part takes `part_delay`, as over a network: the writer (or a staged file's reads)
    /// keeps going meanwhile, so the limit on parts in flight is actually reached.
    pub fn with_part_delay(min_part_size: u64, part_delay: Duration) -> Arc<Self> {
        Arc::new(TestStore {
            memory: MemoryStore::with_min_part_size(min_part_size),
            failures: Mutex::new(HashSet::new()),
            calls: Mutex::new(Calls::default()),
            parts_in_flight: AtomicUsize::new(0),
            max_parts_in_flight: AtomicUsize::new(0),
            part_delay,
        })
    }

    pub fn fail(&self, failure: Fail) {
        self.failures.lock().unwrap().insert(failure);
    }

    pub fn calls(&self) -> Calls {
        *self.calls.lock().unwrap()
    }

    pub fn max_parts_in_flight(&self) -> usize {
        self.max_parts_in_flight.load(Ordering::SeqCst)
    }

    fn count(&self, add: impl FnOnce(&mut Calls)) {
        add(&mut self.calls.lock().unwrap());
    }

    fn injected(&self, failure: Fail) -> StoreResult<()> {
        if self.failures.lock().unwrap().contains(&failure) {
            return Err(StoreError::Server {
                status: 500,
                message: format!("{failure:?}"),
            });
        }
        Ok(())
    }
}

/// Decrements the in-flight count however the part's future ends (even when cancelled).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl ObjectStore for TestStore {
    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        self.memory.head(key).await
    }

    async fn get(&self, request: GetRequest) -> StoreResult<GetObjectOutput> {
        self.count(|c| c.gets += 1);
        self.memory.get(request).await
    }

    async fn put(&self, key: &str, body: Bytes, options: PutOptions) -> StoreResult<PutOutput> {
        self.count(|c| c.puts += 1);
        self.injected(Fail::Put)?;
        self.memory.put(key, body, options).await
    }

    async fn create_multipart(&self, key: &str, options: PutOptions) -> StoreResult<String> {
        self.count(|c| c.creates += 1);
        self.injected(Fail::Create)?;
        self.memory.create_multipart(key, options).await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
    ) -> StoreResult<CompletedPart> {
        self.count(|c| c.parts += 1);
        let now = self.parts_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let _in_flight = InFlight(&self.parts_in_flight);
        self.max_parts_in_flight.fetch_max(now, Ordering::SeqCst);
        // Let the other part tasks start, as a network round trip would.
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        if !self.part_delay.is_zero() {
            tokio::time::sleep(self.part_delay).await;
        }
        self.injected(Fail::Part(part_number))?;
        self.memory
            .upload_part(key, upload_id, part_number, body)
            .await
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> StoreResult<PutOutput> {
        self.count(|c| c.completes += 1);
        self.injected(Fail::Complete)?;
        self.memory.complete_multipart(key, upload_id, parts).await
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> StoreResult<()> {
        self.count(|c| c.aborts += 1);
        self.injected(Fail::Abort)?;
        self.memory.abort_multipart(key, upload_id).await
    }

    async fn copy(
        &self,
        source_key: &str,
        dest_key: &str,
        metadata: Option<UserMetadata>,
    ) -> StoreResult<PutOutput> {
        self.memory.copy(source_key, dest_key, metadata).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.memory.delete(key).await
    }

    async fn list(&self, request: ListRequest) -> StoreResult<ListPage> {
        self.memory.list(request).await
    }

    async fn head_bucket(&self) -> StoreResult<()> {
        self.memory.head_bucket().await
    }
}
