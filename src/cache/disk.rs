//! [`DiskCache`]: the optional disk tier below the memory [`BlockCache`](super::BlockCache)
//! (`scribefs mount --cache-dir DIR --cache-dir-size MIB`), so blocks read once are read again
//! from local disk, also after a remount.
//!
//! # Layout and keys
//!
//! ```text
//! DIR/.lock                  flock'ed by the one mount using DIR
//! DIR/blocks/ab/ab12...ef    one file per block, named by MD5(key, ETag, block size, index)
//! DIR/tmp/                   files being written, renamed into blocks/ when complete
//! ```
//!
//! A block file starts with a header that repeats its key, ETag, block size and index, and a
//! CRC-32 over header and data. A lookup returns a block only if all of them match what the
//! reader asked for: a replaced object has another ETag and so other files (a changed object is
//! never served stale), a name collision cannot return another block, and a block damaged on disk
//! (bit rot, a crash before the data reached the disk: nothing is fsynced) is deleted and fetched
//! from S3 again, never returned.
//!
//! # Bounds
//!
//! Files are evicted least recently used first until their sizes, rounded up to 4 KiB, fit
//! `budget_bytes`. Recency survives remounts through each file's mtime, set on every hit. Writes
//! go through a queue of [`WRITE_QUEUE`] blocks to one writer thread; when it is full the block is
//! simply not cached (the tier is best effort), so memory stays bounded and readers never wait
//! for the disk to write.
//!
//! # Sharing
//!
//! A second mount on the same DIR is refused with [`DiskError::Locked`] (an exclusive flock on
//! `DIR/.lock`, released when the mount process exits): one process owns the index.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::Bytes;
use lru::LruCache;
use md5::{Digest, Md5};

use super::block_id::BlockId;

/// Blocks waiting for the writer thread at most.
pub const WRITE_QUEUE: usize = 16;
const MAGIC: &[u8; 16] = b"scribefs-block1\n";
/// Magic, block size, index, data length, key length, ETag length, CRC.
const HEADER: usize = 16 + 8 + 8 + 8 + 4 + 4 + 4;
/// What a file costs on disk: whole file system blocks.
const DISK_UNIT: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error(
        "cache dir {0} is in use by another scribefs mount; give each mount its own --cache-dir"
    )]
    Locked(PathBuf),
    #[error("cache dir {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A snapshot of the disk tier's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskStats {
    pub hits: u64,
    pub hit_bytes: u64,
    /// Blocks written to disk.
    pub writes: u64,
    /// Blocks not written because the queue was full.
    pub writes_skipped: u64,
    pub evictions: u64,
    /// Files found damaged (checksum, header or length) and deleted.
    pub corrupt: u64,
    pub bytes_held: u64,
    pub files_held: u64,
    pub budget_bytes: u64,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    hit_bytes: AtomicU64,
    writes: AtomicU64,
    writes_skipped: AtomicU64,
    evictions: AtomicU64,
    corrupt: AtomicU64,
}

struct Index {
    /// File name -> bytes it costs on disk.
    files: LruCache<String, u64>,
    held: u64,
}

struct Shared {
    dir: PathBuf,
    block_size: u64,
    budget_bytes: u64,
    index: Mutex<Index>,
    counters: Counters,
    writer: Mutex<Option<SyncSender<(BlockId, Bytes)>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Holds the flock for as long as the cache lives.
    _lock: File,
}

/// A cheaply clonable handle on one cache directory.
#[derive(Clone)]
pub struct DiskCache {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for DiskCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskCache")
            .field("dir", &self.shared.dir)
            .field("budget_bytes", &self.shared.budget_bytes)
            .finish()
    }
}

impl DiskCache {
    /// Opens (creating) `dir` for blocks of `block_size`, takes its lock, and indexes the blocks
    /// a previous mount left, evicting down to `budget_bytes` if the budget shrank.
    pub fn open(dir: &Path, budget_bytes: u64, block_size: u64) -> Result<DiskCache, DiskError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DiskError::Io { path, source }
        };
        for sub in ["blocks", "tmp"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(io(&dir.join(sub)))?;
        }
        let lock_path = dir.join(".lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        // SAFETY: flock on an fd we own; no memory is touched.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let error = std::io::Error::last_os_error();
            return Err(if error.kind() == std::io::ErrorKind::WouldBlock {
                DiskError::Locked(dir.to_path_buf())
            } else {
                DiskError::Io {
                    path: lock_path,
                    source: error,
                }
            });
        }
        // Leftovers of a crash mid-write: never renamed, so never indexed.
        if let Ok(entries) = std::fs::read_dir(dir.join("tmp")) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let index = scan(&dir.join("blocks")).map_err(io(&dir.join("blocks")))?;
        let (sender, receiver) = std::sync::mpsc::sync_channel(WRITE_QUEUE);
        let cache = DiskCache {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                block_size,
                budget_bytes,
                index: Mutex::new(index),
                counters: Counters::default(),
                writer: Mutex::new(Some(sender)),
                writer_thread: Mutex::new(None),
                _lock: lock,
            }),
        };
        cache.evict_to(budget_bytes);
        let writer = cache.clone();
        let thread = std::thread::Builder::new()
            .name("scribefs-disk-cache".into())
            .spawn(move || {
                for (id, data) in receiver {
                    writer.write(&id, &data);
                }
            })
            .map_err(io(dir))?;
        *lock_ignoring_poison(&cache.shared.writer_thread) = Some(thread);
        Ok(cache)
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The block if it is on disk intact; `expected_len` is its length in the object. Blocking
    /// I/O: call from a blocking context. A damaged file is deleted and reported as a miss.
    pub fn get(&self, id: &BlockId, expected_len: u64) -> Option<Bytes> {
        let name = self.file_name(id);
        lock_ignoring_poison(&self.shared.index).files.get(&name)?;
        let path = self.path_of(&name);
        match read_block(&path, id, self.shared.block_size, expected_len) {
            Ok(Some(data)) => {
                // Recency for the next mount's index.
                if let Ok(file) = File::options().write(true).open(&path) {
                    let _ = file.set_modified(SystemTime::now());
                }
                let c = &self.shared.counters;
                c.hits.fetch_add(1, Ordering::Relaxed);
                c.hit_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                Some(data)
            }
            // Evicted between the index check and the open: a plain miss.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Ok(None) | Err(_) => {
                tracing::warn!(file = %path.display(), key = %id.key, block = id.index,
                    "damaged block in the disk cache; deleted, fetching it again");
                self.shared.counters.corrupt.fetch_add(1, Ordering::Relaxed);
                self.forget(&name);
                None
            }
        }
    }

    /// Whether the index lists the block (no I/O, no LRU change): lets a reader skip the
    /// blocking lookup when the disk cannot have anything.
    pub fn may_hold(&self, id: &BlockId) -> bool {
        lock_ignoring_poison(&self.shared.index)
            .files
            .contains(&self.file_name(id))
    }

    /// Queues a block for writing; skipped when the queue is full or the block is known.
    /// Never blocks.
    pub fn put(&self, id: &BlockId, data: Bytes) {
        if self.may_hold(id) {
            return;
        }
        let sender = lock_ignoring_poison(&self.shared.writer).clone();
        let Some(sender) = sender else { return };
        if let Err(TrySendError::Full(_)) = sender.try_send((id.clone(), data)) {
            self.shared
                .counters
                .writes_skipped
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes what is queued, then stops the writer (at unmount). Blocking.
    pub fn close(&self) {
        lock_ignoring_poison(&self.shared.writer).take();
        let thread = lock_ignoring_poison(&self.shared.writer_thread).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    pub fn stats(&self) -> DiskStats {
        let c = &self.shared.counters;
        let index = lock_ignoring_poison(&self.shared.index);
        DiskStats {
            hits: c.hits.load(Ordering::Relaxed),
            hit_bytes: c.hit_bytes.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            writes_skipped: c.writes_skipped.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            corrupt: c.corrupt.load(Ordering::Relaxed),
            bytes_held: index.held,
            files_held: index.files.len() as u64,
            budget_bytes: self.shared.budget_bytes,
        }
    }

    /// The file of a block: MD5 of everything that identifies it (the header holds the same,
    /// so a collision is detected, not served).
    pub fn file_name(&self, id: &BlockId) -> String {
        let mut hash = Md5::new();
        for part in [id.key.as_bytes(), id.etag.as_bytes()] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part);
        }
        hash.update(self.shared.block_size.to_le_bytes());
        hash.update(id.index.to_le_bytes());
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Where a block's file lives.
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.shared
            .dir
            .join("blocks")
            .join(name.get(..2).unwrap_or("00"))
            .join(name)
    }

    /// The writer thread's work: temp file, rename, index, evict.
    fn write(&self, id: &BlockId, data: &[u8]) {
        let name = self.file_name(id);
        let cost = on_disk(HEADER + id.key.len() + id.etag.len() + data.len());
        if cost > self.shared.budget_bytes
            || lock_ignoring_poison(&self.shared.index)
                .files
                .contains(&name)
        {
            return;
        }
        let tmp = self.shared.dir.join("tmp").join(&name);
        let path = self.path_of(&name);
        let written = (|| {
            let mut file = File::create(&tmp)?;
            file.write_all(&encode_header(id, self.shared.block_size, data))?;
            file.write_all(id.key.as_bytes())?;
            file.write_all(id.etag.as_bytes())?;
            file.write_all(data)?;
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            tracing::warn!(error = %e, dir = %self.shared.dir.display(), "cannot write to the disk cache");
            let _ = std::fs::remove_file(&tmp);
            return;
        }
        self.shared.counters.writes.fetch_add(1, Ordering::Relaxed);
        {
            let mut index = lock_ignoring_poison(&self.shared.index);
            if let Some(old) = index.files.put(name, cost) {
                index.held -= old;
            }
            index.held += cost;
        }
        self.evict_to(self.shared.budget_bytes);
    }

    /// Deletes least recently used files until `budget` bytes are held at most.
    fn evict_to(&self, budget: u64) {
        let mut victims = Vec::new();
        {
            let mut index = lock_ignoring_poison(&self.shared.index);
            while index.held > budget {
                let Some((name, cost)) = index.files.pop_lru() else {
                    break;
                };
                index.held -= cost;
                victims.push(name);
            }
        }
        self.shared
            .counters
            .evictions
            .fetch_add(victims.len() as u64, Ordering::Relaxed);
        for name in victims {
            let _ = std::fs::remove_file(self.path_of(&name));
        }
    }

    fn forget(&self, name: &str) {
        let mut index = lock_ignoring_poison(&self.shared.index);
        if let Some(cost) = index.files.pop(name) {
            index.held -= cost;
        }
        drop(index);
        let _ = std::fs::remove_file(self.path_of(name));
    }
}

fn lock_ignoring_poison<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its state consistent before anything can panic.
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

fn on_disk(len: usize) -> u64 {
    (len as u64).div_ceil(DISK_UNIT) * DISK_UNIT
}

fn encode_header(id: &BlockId, block_size: u64, data: &[u8]) -> Vec<u8> {
    let mut header = Vec::with_capacity(HEADER);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&block_size.to_le_bytes());
    header.extend_from_slice(&id.index.to_le_bytes());
    header.extend_from_slice(&(data.len() as u64).to_le_bytes());
    header.extend_from_slice(&(id.key.len() as u32).to_le_bytes());
    header.extend_from_slice(&(id.etag.len() as u32).to_le_bytes());
    let crc = checksum(&header, id, data);
    header.extend_from_slice(&crc.to_le_bytes());
    header
}

fn checksum(header: &[u8], id: &BlockId, data: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(header);
    crc.update(id.key.as_bytes());
    crc.update(id.etag.as_bytes());
    crc.update(data);
    crc.finalize()
}

/// `Ok(None)` when the file is not exactly the block asked for, intact.
fn read_block(
    path: &Path,
    id: &BlockId,
    block_size: u64,
    expected_len: u64,
) -> std::io::Result<Option<Bytes>> {
    let mut file = File::open(path)?;
    let names = id.key.len() + id.etag.len();
    let want = (HEADER + names) as u64 + expected_len;
    if file.metadata()?.len() != want {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(want as usize);
    file.read_to_end(&mut bytes)?;
    if bytes.len() as u64 != want {
        return Ok(None);
    }
    let data = bytes.split_off(HEADER + names);
    let mut expected = encode_header(id, block_size, &data);
    // The CRC computed over what was asked for must equal the stored one.
    expected.truncate(HEADER - 4);
    let stored_crc = &bytes[HEADER - 4..HEADER];
    let matches = bytes[..HEADER - 4] == expected[..]
        && &bytes[HEADER..] == [id.key.as_bytes(), id.etag.as_bytes()].concat().as_slice()
        && stored_crc == checksum(&expected, id, &data).to_le_bytes();
    Ok(matches.then(|| Bytes::from(data)))
}

/// Indexes the block files under `blocks`, least recently used (oldest mtime) first.
fn scan(blocks: &Path) -> std::io::Result<Index> {
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    for shard in std::fs::read_dir(blocks)?.flatten() {
        let Ok(files) = std::fs::read_dir(shard.path()) else {
            continue;
        };
        for file in files.flatten() {
            let Ok(meta) = file.metadata() else { continue };
            let Some(name) = file.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if meta.is_file() && seen.insert(name.clone()) {
                let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                found.push((used, name, on_disk(meta.len() as usize)));
            }
        }
    }
    found.sort();
    let mut index = Index {
        files: LruCache::unbounded(),
        held: 0,
    };
    for (_, name, cost) in found {
        index.held += cost;
        index.files.put(name, cost);
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(key: &str, etag: &str, index: u64) -> BlockId {
        BlockId {
            key: key.into(),
            etag: etag.into(),
            index,
        }
    }

    fn wait_for_writes(cache: &DiskCache, writes: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while cache.stats().writes < writes {
            assert!(std::time::Instant::now() < deadline, "{:?}", cache.stats());
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn blocks_survive_a_reopen_and_other_etags_miss() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path(), 1 << 20, 4096).unwrap();
        let block = Bytes::from(vec![7u8; 4096]);
        cache.put(&id("a", "\"1\"", 0), block.clone());
        cache.put(&id("a", "\"1\"", 1), Bytes::from_static(b"tail"));
        wait_for_writes(&cache, 2);
        cache.close();
        drop(cache);

        let cache = DiskCache::open(dir.path(), 1 << 20, 4096).unwrap();
        assert_eq!(cache.stats().files_held, 2);
        assert_eq!(cache.get(&id("a", "\"1\"", 0), 4096), Some(block));
        assert_eq!(
            cache.get(&id("a", "\"1\"", 1), 4),
            Some(Bytes::from_static(b"tail"))
        );
        assert_eq!(cache.get(&id("a", "\"2\"", 0), 4096), None, "another ETag");
        assert_eq!(cache.get(&id("b", "\"1\"", 0), 4096), None);
        // Another block size names other files.
        cache.close();
        drop(cache);
        let other = DiskCache::open(dir.path(), 1 << 20, 8192).unwrap();
        assert_eq!(other.get(&id("a", "\"1\"", 1), 4), None);
        assert_eq!(other.stats().corrupt, 0);
    }

    #[test]
    fn a_damaged_file_is_deleted_and_never_returned() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path(), 1 << 20, 4096).unwrap();
        let block = id("k", "\"e\"", 3);
        cache.put(&block, Bytes::from(vec![1u8; 1000]));
        wait_for_writes(&cache, 1);
        let path = cache.path_of(&cache.file_name(&block));
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(cache.get(&block, 1000), None);
        assert_eq!(cache.stats().corrupt, 1);
        assert!(!path.exists());
        assert_eq!(cache.stats().files_held, 0);
        // A wrong length is damage too, and so is a truncated file.
        cache.put(&block, Bytes::from(vec![1u8; 1000]));
        wait_for_writes(&cache, 2);
        assert_eq!(cache.get(&block, 999), None);
        assert_eq!(cache.stats().corrupt, 2);
    }

    #[test]
    fn eviction_keeps_the_byte_budget_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        // Each block costs two 4 KiB units (header + 4096 bytes): three fit in 24 KiB.
        let cache = DiskCache::open(dir.path(), 24 * 1024, 4096).unwrap();
        for index in 0..3 {
            cache.put(&id("k", "\"e\"", index), Bytes::from(vec![0u8; 4096]));
        }
        wait_for_writes(&cache, 3);
        assert!(
            cache.get(&id("k", "\"e\"", 0), 4096).is_some(),
            "0 is now recent"
        );
        cache.put(&id("k", "\"e\"", 3), Bytes::from(vec![0u8; 4096]));
        wait_for_writes(&cache, 4);
        let stats = cache.stats();
        assert_eq!(
            (stats.files_held, stats.bytes_held, stats.evictions),
            (3, 24 * 1024, 1)
        );
        assert!(
            cache.get(&id("k", "\"e\"", 1), 4096).is_none(),
            "1 was the oldest"
        );
        for kept in [0, 2, 3] {
            assert!(cache.get(&id("k", "\"e\"", kept), 4096).is_some(), "{kept}");
        }
        let on_disk: u64 = walk(&dir.path().join("blocks"));
        assert!(on_disk <= 24 * 1024, "{on_disk}");
        // A smaller budget at the next open evicts down to it.
        cache.close();
        drop(cache);
        let cache = DiskCache::open(dir.path(), 8 * 1024, 4096).unwrap();
        assert_eq!(cache.stats().files_held, 1);
        assert_eq!(walk(&dir.path().join("blocks")), 8 * 1024);
    }

    fn walk(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| {
                if e.path().is_dir() {
                    walk(&e.path())
                } else {
                    on_disk(e.metadata().unwrap().len() as usize)
                }
            })
            .sum()
    }

    #[test]
    fn a_second_open_of_the_same_dir_is_refused_until_the_first_goes() {
        let dir = tempfile::tempdir().unwrap();
        let first = DiskCache::open(dir.path(), 1 << 20, 4096).unwrap();
        let error = DiskCache::open(dir.path(), 1 << 20, 4096).unwrap_err();
        assert!(matches!(error, DiskError::Locked(_)), "{error}");
        assert!(
            error
                .to_string()
                .contains("in use by another scribefs mount")
        );
        first.close();
        drop(first);
        DiskCache::open(dir.path(), 1 << 20, 4096).unwrap();
    }
}
