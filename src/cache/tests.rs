//! Reader tests on the in-memory store, wrapped in `FaultyStore` to log GETs (and their ranges)
//! and to fail or hold them on demand.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::store::faulty::{FaultyStore, Op};
use crate::store::memory::MemoryStore;
use crate::store::{ObjectStore, PutOptions, StoreError};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

type Store = FaultyStore<MemoryStore>;

fn store() -> Store {
    FaultyStore::new(MemoryStore::new())
}

/// A store whose GETs wait until the test releases them.
fn gated_store() -> Store {
    let store = store();
    store.hold(Op::Get);
    store
}

/// Deterministic bytes that differ at every offset within 251 and between seeds.
fn content(len: u64, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed)
        .collect::<Vec<u8>>()
        .into()
}

struct Fixture {
    store: Arc<Store>,
    path: ReadPath,
}

impl Fixture {
    fn new(store: Store, budget: u64, config: ReaderConfig) -> Self {
        let store = Arc::new(store);
        let path = ReadPath::new(store.clone(), BlockCache::new(budget), config);
        Fixture { store, path }
    }

    fn with_block_size(block_size: u64) -> Self {
        let config = ReaderConfig {
            block_size,
            ..ReaderConfig::default()
        };
        Fixture::new(store(), 256 * MIB, config)
    }

    async fn put(&self, key: &str, data: Bytes) -> ObjectVersion {
        let size = data.len() as u64;
        let etag = self
            .store
            .inner()
            .put(key, data, PutOptions::default())
            .await
            .unwrap()
            .etag;
        ObjectVersion::new(key, etag, size)
    }
}

#[tokio::test]
async fn reads_across_block_boundaries_and_stop_at_eof() {
    let bs = 4 * KIB;
    let f = Fixture::with_block_size(bs);
    let size = 10 * bs + 123;
    let data = content(size, 1);
    let reader = f.path.open(f.put("obj", data.clone()).await);

    let spanning = reader.read(bs - 10, 20).await.unwrap();
    assert_eq!(spanning, data.slice((bs - 10) as usize..(bs + 10) as usize));
    assert_eq!(
        f.store.get_ranges(),
        vec![0..2 * bs],
        "two missing blocks, one GET"
    );

    let tail = reader.read(size - 5, 100).await.unwrap();
    assert_eq!(tail, data.slice((size - 5) as usize..));
    assert_eq!(
        f.store.get_ranges()[1],
        10 * bs..size,
        "the last block is short"
    );

    let gets_before = f.store.calls(Op::Get);
    assert!(reader.read(size, 10).await.unwrap().is_empty());
    assert!(reader.read(size + 1000, 10).await.unwrap().is_empty());
    assert!(reader.read(0, 0).await.unwrap().is_empty());
    assert_eq!(
        f.store.calls(Op::Get),
        gets_before,
        "nothing to fetch at or after EOF"
    );

    let empty = f.path.open(f.put("empty", Bytes::new()).await);
    assert!(empty.read(0, 4096).await.unwrap().is_empty());
    assert_eq!(f.store.calls(Op::Get), gets_before);
}

#[tokio::test]
async fn a_small_file_read_whole_costs_one_get_and_a_reread_none() {
    let f = Fixture::with_block_size(MIB);
    let data = content(300 * KIB, 2);
    let reader = f.path.open(f.put("small", data.clone()).await);
    assert_eq!(reader.read(0, MIB as u32).await.unwrap(), data);
    assert_eq!(f.store.get_ranges(), vec![0..300 * KIB]);

    assert_eq!(reader.read(0, MIB as u32).await.unwrap(), data);
    assert_eq!(reader.read(1000, 10).await.unwrap(), data.slice(1000..1010));
    let other_handle = f.path.open(reader.object().clone());
    assert_eq!(
        other_handle.read(0, 4096).await.unwrap(),
        data.slice(..4096)
    );
    assert_eq!(f.store.calls(Op::Get), 1, "every later read is a cache hit");
    assert_eq!(f.path.cache().stats().hits, 3);
}

#[tokio::test]
async fn a_multi_block_file_read_in_one_call_costs_one_get() {
    let f = Fixture::with_block_size(64 * KIB);
    let data = content(64 * KIB * 3 + 500, 3);
    let reader = f.path.open(f.put("multi", data.clone()).await);
    assert_eq!(reader.read(0, 1 << 20).await.unwrap(), data);
    assert_eq!(f.store.get_ranges(), vec![0..data.len() as u64]);
    assert_eq!(
        f.path.cache().stats().blocks_held,
        4,
        "split into blocks as it arrived"
    );
}

#[tokio::test]
async fn concurrent_readers_of_one_block_make_one_get() {
    let f = Fixture::new(gated_store(), 64 * MIB, ReaderConfig::default());
    let data = content(100 * KIB, 4);
    let object = f.put("shared", data.clone()).await;
    let readers: Vec<_> = (0..4)
        .map(|_| Arc::new(f.path.open(object.clone())))
        .collect();
    let tasks: Vec<_> = readers
        .iter()
        .enumerate()
        .map(|(i, reader)| {
            let reader = reader.clone();
            tokio::spawn(async move { reader.read(i as u64 * 1000, 500).await })
        })
        .collect();
    while f.path.cache().stats().shared_misses < 3 {
        tokio::task::yield_now().await;
    }
    f.store.release(Op::Get, 100);
    for (i, task) in tasks.into_iter().enumerate() {
        let at = i * 1000;
        assert_eq!(task.await.unwrap().unwrap(), data.slice(at..at + 500));
    }
    assert_eq!(f.store.calls(Op::Get), 1);
}

#[tokio::test]
async fn bytes_held_stay_within_the_budget() {
    let budget = 4 * MIB;
    let config = ReaderConfig {
        block_size: 256 * KIB,
        ..ReaderConfig::default()
    };
    let f = Fixture::new(store(), budget, config);
    let data = content(16 * MIB, 5);
    let reader = f.path.open(f.put("big", data.clone()).await);
    let mut offset = 0;
    while offset < data.len() as u64 {
        let got = reader.read(offset, 128 * KIB as u32).await.unwrap();
        assert_eq!(
            got,
            data.slice(offset as usize..offset as usize + got.len())
        );
        assert!(f.path.cache().stats().bytes_held <= budget);
        offset += got.len() as u64;
    }
    for i in 0..50u64 {
        let at = (i * 7_919_777) % data.len() as u64;
        let got = reader.read(at, 200_000).await.unwrap();
        assert_eq!(got, data.slice(at as usize..at as usize + got.len()));
        assert!(f.path.cache().stats().bytes_held <= budget);
    }
    let stats = f.path.cache().stats();
    assert!(stats.evictions > 0);
    assert!(
        reader.window_bytes() <= budget / 2,
        "the window is capped at half the budget"
    );
    assert!(f.path.stats().peak_window_bytes <= budget / 2);
}

#[tokio::test]
async fn a_sequential_read_prefetches_and_fetches_each_block_once() {
    let f = Fixture::with_block_size(MIB);
    let size = 40 * MIB;
    let data = content(size, 6);
    let reader = f.path.open(f.put("seq", data.clone()).await);
    let mut offset = 0;
    while offset < size {
        let got = reader.read(offset, 128 * KIB as u32).await.unwrap();
        assert_eq!(
            got,
            data.slice(offset as usize..offset as usize + got.len())
        );
        offset += got.len() as u64;
    }

    let mut fetched_per_block = BTreeMap::new();
    for range in f.store.get_ranges() {
        assert_eq!(range.start % MIB, 0, "GETs cover whole blocks");
        for block in range.start / MIB..range.end.div_ceil(MIB) {
            *fetched_per_block.entry(block).or_insert(0) += 1;
        }
    }
    assert_eq!(fetched_per_block.len(), 40);
    assert!(
        fetched_per_block.values().all(|&n| n == 1),
        "{fetched_per_block:?}"
    );

    let stats = f.path.stats();
    assert_eq!(stats.reads, 320);
    assert!(stats.reader_waits <= 8, "{stats:?}");
    assert!(
        f.store.calls(Op::Get) < 40,
        "prefetch GETs span several blocks: {stats:?}"
    );
    assert!(stats.prefetch_gets > 0);
    assert_eq!(stats.window_resets, 0);
    assert!(
        reader.window_bytes() >= 32 * MIB,
        "the window grew: {}",
        reader.window_bytes()
    );
}

#[tokio::test]
async fn random_jumps_reset_the_window() {
    let f = Fixture::with_block_size(MIB);
    let data = content(40 * MIB, 7);
    let reader = f.path.open(f.put("jumpy", data.clone()).await);
    for i in 0..24 {
        reader.read(i * 128 * KIB, 128 * KIB as u32).await.unwrap();
    }
    assert!(reader.window_bytes() >= 4 * MIB);

    assert_eq!(
        reader.read(30 * MIB, 4096).await.unwrap(),
        data.slice(30 * MIB as usize..30 * MIB as usize + 4096)
    );
    assert_eq!(reader.window_bytes(), 0);
    assert_eq!(f.path.stats().window_resets, 1);

    let gets_before = f.store.get_ranges().len();
    // All beyond the blocks the sequential start prefetched (up to block 7).
    let scattered = [15, 33, 12, 38, 20, 27];
    for (n, block) in scattered.iter().enumerate() {
        let at = block * MIB + 777;
        assert_eq!(
            reader.read(at, 1000).await.unwrap(),
            data.slice(at as usize..at as usize + 1000)
        );
        assert_eq!(reader.window_bytes(), 0);
        assert_eq!(f.path.stats().window_resets, 2 + n as u64);
    }
    let at = 15 * MIB + 777;
    reader.read(at, 1000).await.unwrap();
    // A jumping read into a block the cache holds, or a large one, goes through the blocks.
    reader.read(2 * MIB + 5, 4096).await.unwrap();
    reader.read(36 * MIB, 512 * KIB as u32).await.unwrap();

    // (The sequential start's last prefetches may land among these: only ranges count.)
    let gets: Vec<_> = f.store.get_ranges().split_off(gets_before);
    let exact = gets.iter().filter(|r| r.end - r.start == 1000).count();
    assert_eq!(
        exact,
        scattered.len() + 1,
        "each small jumping read fetches exactly its bytes, uncached: {gets:?}"
    );
    assert_eq!(f.path.stats().exact_gets, scattered.len() as u64 + 2);
    assert!(gets.contains(&(36 * MIB..37 * MIB)), "{gets:?}");
    assert!(!gets.iter().any(|r| r.contains(&(2 * MIB))), "{gets:?}");
    assert!(
        gets.iter()
            .all(|r| r.end - r.start == 1000 || r.end - r.start == MIB),
        "{gets:?}"
    );
}

#[tokio::test]
async fn a_replaced_object_fails_the_next_uncached_block_with_precondition_failed() {
    let f = Fixture::with_block_size(MIB);
    let old = content(8 * MIB, 8);
    let reader = f.path.open(f.put("moving", old.clone()).await);
    assert_eq!(reader.read(0, 4096).await.unwrap(), old.slice(..4096));

    f.store
        .inner()
        .put("moving", content(8 * MIB, 9), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        reader.read(100, 4096).await.unwrap(),
        old.slice(100..4196),
        "cached: old version"
    );
    for _ in 0..2 {
        let error = reader.read(5 * MIB, 4096).await.unwrap_err();
        assert!(
            matches!(error, StoreError::PreconditionFailed(_)),
            "{error:?}"
        );
    }
    let block_5_gets = f
        .store
        .get_ranges()
        .iter()
        .filter(|r| r.start == 5 * MIB)
        .count();
    assert_eq!(block_5_gets, 2, "the failure was not cached: asked again");
    assert!(
        f.path
            .cache()
            .get(&BlockId {
                key: "moving".into(),
                etag: reader.object().etag.clone(),
                index: 5
            })
            .is_none()
    );
}

#[tokio::test]
async fn a_failed_get_reaches_every_waiting_reader_and_is_not_cached() {
    let f = Fixture::new(gated_store(), 64 * MIB, ReaderConfig::default());
    let data = content(3 * MIB, 10);
    let object = f.put("flaky", data.clone()).await;
    f.store.fail_next(Op::Get, 1, || StoreError::Server {
        status: 503,
        message: "injected".into(),
    });
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let reader = f.path.open(object.clone());
            tokio::spawn(async move { reader.read(MIB, 1000).await })
        })
        .collect();
    while f.path.cache().stats().shared_misses < 2 {
        tokio::task::yield_now().await;
    }
    f.store.release(Op::Get, 100);
    for task in tasks {
        let error = task.await.unwrap().unwrap_err();
        assert!(
            matches!(error, StoreError::Server { status: 503, .. }),
            "{error:?}"
        );
    }
    assert_eq!(f.store.calls(Op::Get), 1);

    let reader = f.path.open(object);
    let at = MIB as usize;
    assert_eq!(
        reader.read(MIB, 1000).await.unwrap(),
        data.slice(at..at + 1000)
    );
    assert_eq!(f.store.calls(Op::Get), 2);
}

#[tokio::test]
async fn a_body_broken_mid_run_keeps_the_blocks_that_arrived_whole() {
    let bs = 64 * KIB;
    let f = Fixture::with_block_size(bs);
    let data = content(4 * bs, 11);
    let reader = f.path.open(f.put("cut", data.clone()).await);
    // Blocks 0 and 1 arrive whole, then the body breaks.
    f.store.cut_get_bodies_after(2 * bs, 1);
    let error = reader.read(0, 4 * bs as u32).await.unwrap_err();
    assert!(matches!(error, StoreError::Connection(_)), "{error:?}");
    assert_eq!(f.store.calls(Op::Get), 1);

    assert_eq!(
        reader.read(0, 2 * bs as u32).await.unwrap(),
        data.slice(..2 * bs as usize)
    );
    assert_eq!(f.store.calls(Op::Get), 1, "blocks 0 and 1 were cached");
    assert_eq!(
        reader.read(2 * bs, 2 * bs as u32).await.unwrap(),
        data.slice(2 * bs as usize..)
    );
    assert_eq!(f.store.get_ranges()[1], 2 * bs..4 * bs);
}

#[tokio::test]
async fn a_reader_refetches_a_block_whose_fetcher_gave_up() {
    let f = Fixture::with_block_size(MIB);
    let data = content(100 * KIB, 13);
    let object = f.put("orphan", data.clone()).await;
    let id = BlockId {
        key: object.key.clone(),
        etag: object.etag.clone(),
        index: 0,
    };
    let Lookup::Claimed(ticket) = f.path.cache().lookup_or_claim(id) else {
        panic!("an empty cache hands out the claim");
    };
    let reader = f.path.open(object);
    let give_up = async {
        while f.path.cache().stats().shared_misses < 1 {
            tokio::task::yield_now().await;
        }
        drop(ticket);
    };
    let (read, ()) = tokio::join!(reader.read(10, 20), give_up);
    assert_eq!(read.unwrap(), data.slice(10..30));
    assert_eq!(f.store.get_ranges(), vec![0..100 * KIB]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_reads_return_exactly_the_objects_bytes(
        size in 0u64..60_000,
        block_size in 1u64..20_000,
        budget in 0u64..120_000,
        reads in proptest::collection::vec((0u64..62_000, 0u32..30_000), 1..24),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let config = ReaderConfig { block_size, max_window_bytes: 8 * block_size, max_parallel_gets: 3, max_parallel_gets_total: 3 };
            let f = Fixture::new(store(), budget, config);
            let data = content(size, 12);
            let reader = f.path.open(f.put("p", data.clone()).await);
            for (offset, len) in reads {
                let got = reader.read(offset, len).await.unwrap();
                let start = offset.min(size) as usize;
                let end = offset.saturating_add(u64::from(len)).min(size) as usize;
                prop_assert_eq!(got, data.slice(start..end.max(start)));
                prop_assert!(f.path.cache().stats().bytes_held <= budget);
            }
            Ok(())
        })?;
    }
}

/// Waits for the disk tier's writer to have written `writes` blocks in all.
async fn disk_writes(disk: &DiskCache, writes: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while disk.stats().writes < writes {
        assert!(std::time::Instant::now() < deadline, "{:?}", disk.stats());
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn the_disk_tier_serves_what_it_holds_and_each_gap_is_one_get() {
    let bs = 4 * KIB;
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskCache::open(dir.path(), 64 * MIB, bs).unwrap();
    let store = Arc::new(store());
    let data = content(4 * bs, 3);
    let etag = store
        .inner()
        .put("obj", data.clone(), PutOptions::default())
        .await
        .unwrap()
        .etag;
    let object = ObjectVersion::new("obj", etag, 4 * bs);
    let id = |index: u64| BlockId {
        key: "obj".into(),
        etag: object.etag.clone(),
        index,
    };
    for index in [0, 2] {
        let range = object.block_range(bs, index);
        disk.put(
            &id(index),
            data.slice(range.start as usize..range.end as usize),
        );
    }
    disk_writes(&disk, 2).await;

    let config = ReaderConfig {
        block_size: bs,
        ..ReaderConfig::default()
    };
    let cold = ReadPath::new(
        store.clone(),
        BlockCache::with_disk(MIB, Some(disk.clone())),
        config.clone(),
    );
    let read = cold
        .open(object.clone())
        .read(0, 4 * bs as u32)
        .await
        .unwrap();
    assert_eq!(read, data);
    assert_eq!(store.get_ranges(), vec![bs..2 * bs, 3 * bs..4 * bs]);
    assert_eq!(disk.stats().hits, 2);

    // What S3 sent went to disk too: a fresh memory cache reads it all without a GET.
    disk_writes(&disk, 4).await;
    let warm = ReadPath::new(
        store.clone(),
        BlockCache::with_disk(MIB, Some(disk.clone())),
        config,
    );
    let read = warm.open(object).read(0, 4 * bs as u32).await.unwrap();
    assert_eq!(read, data);
    assert_eq!(store.calls(Op::Get), 2);
    disk.close();
}

/// Yields until every spawned prefetch has landed (the in-memory store answers at once).
async fn settle() {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_sequential_read_leaves_no_prefetched_block_unread() {
    let bs = 4 * KIB;
    let f = Fixture::with_block_size(bs);
    let size = 64 * bs;
    let reader = f.path.open(f.put("obj", content(size, 3)).await);
    let mut offset = 0;
    while offset < size {
        let got = reader.read(offset, bs as u32).await.unwrap();
        offset += got.len() as u64;
        settle().await;
    }
    let stats = f.path.cache().stats();
    assert!(stats.prefetches > 0, "the reader prefetched");
    assert_eq!(stats.unread_prefetch_bytes, 0, "{stats:?}");
    assert_eq!(stats.prefetch_wasted, 0);
}

/// Prefetch GETs grow with the readers streaming: each sequential reader may keep
/// `max_parallel_gets` in flight, all of them together no more than the total; a reader that
/// closes gives its share back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prefetch_gets_grow_with_streaming_readers() {
    let config = ReaderConfig {
        block_size: 64 * KIB,
        max_window_bytes: 4 * MIB,
        max_parallel_gets: 2,
        max_parallel_gets_total: 6,
    };
    let f = Fixture::new(store(), 256 * MIB, config);
    f.store.delay(Op::Get, std::time::Duration::from_millis(5));
    let mut readers = Vec::new();
    for i in 0..4u8 {
        let data = content(8 * MIB, i);
        readers.push((
            f.path.open(f.put(&format!("r{i}"), data.clone()).await),
            data,
        ));
    }
    let reads = readers.iter().map(|(reader, data)| async move {
        let mut offset = 0;
        while offset < data.len() as u64 {
            let got = reader.read(offset, 128 * KIB as u32).await.unwrap();
            assert_eq!(
                got,
                data.slice(offset as usize..offset as usize + got.len())
            );
            offset += got.len() as u64;
        }
    });
    futures::future::join_all(reads).await;
    assert_eq!(f.path.streaming_readers(), 4);
    // Demand GETs (one per reader at most) come on top of the prefetch GETs.
    let most = f.store.max_in_flight(Op::Get) as usize;
    assert!(
        most > 2 + 4,
        "prefetch did not grow past one reader's share: {most}"
    );
    assert!(most <= 6 + 4, "more than the total in flight: {most}");
    drop(readers);
    assert_eq!(f.path.streaming_readers(), 0);
}
