//! Object metadata remembered across mounts, so `ls -l` of a bucket this machine has seen
//! before shows stored modes, owners, types and times at listing speed.
//!
//! A listing carries no user metadata (s3fs's `x-amz-meta-mode/uid/gid/mtime`): each object's
//! costs a HEAD. What a HEAD told is kept here, keyed by the object's key and *version* - its
//! ETag, LastModified (to the second) and size - so an entry answers only for the very object
//! it describes. Any change by another client misses: new data has a new ETag, and a metadata
//! change (a CopyObject onto itself, which keeps the ETag) moves LastModified. Objects that
//! carry no metadata at all (written by other tools) are remembered too, so they cost one HEAD
//! per version per machine, once.
//!
//! # On disk
//!
//! One append-only file per bucket (`metadata-<hash>.log`): a header line naming the endpoint
//! and bucket, then one line per entry, `<crc32 hex> <json>`. Loading stops at the first line
//! whose checksum or JSON does not hold (a crash in the middle of an append, a damaged disk)
//! and cuts the file there, so a damaged or half-written cache is never trusted, only shortened.
//! A file for another bucket (a hash collision) or another format is started afresh.
//!
//! The file is bounded in bytes: past the budget it is rewritten with the most recent entries
//! filling half of it (written to a temporary file, synced, renamed over), so a crash during a
//! rewrite leaves the old file or the new one. One mount at a time writes it (an exclusive
//! flock); a second mount of the same bucket on the machine reads it and keeps what it learns
//! in memory only.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::store::UserMetadata;

const FORMAT: &str = "scribefs-metadata v1";

/// Which version of an object an entry describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersionId {
    pub etag: String,
    pub last_modified: SystemTime,
    pub size: u64,
}

/// What a HEAD told of one object version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMetadata {
    pub metadata: UserMetadata,
    pub content_type: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Record {
    key: String,
    etag: String,
    /// LastModified in whole seconds (HEAD's HTTP date has no fractions).
    modified: u64,
    size: u64,
    metadata: BTreeMap<String, String>,
    content_type: Option<String>,
}

struct Entry {
    record: Record,
    /// Order of the last write, for keeping the newest at a rewrite.
    seq: u64,
    bytes: u64,
}

struct Inner {
    entries: HashMap<String, Entry>,
    seq: u64,
    /// The open file and its size; `None`: memory only (another mount writes the file).
    file: Option<(File, u64)>,
}

pub struct MetadataCache {
    path: PathBuf,
    scope: String,
    budget: u64,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for MetadataCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataCache")
            .field("path", &self.path)
            .field("budget", &self.budget)
            .finish()
    }
}

fn seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A stable 64-bit FNV-1a hash, for the file name.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3)
    })
}

fn line_of(record: &Record) -> std::io::Result<String> {
    let json = serde_json::to_string(record)?;
    Ok(format!("{:08x} {json}\n", crc32fast::hash(json.as_bytes())))
}

fn parse_line(line: &str) -> Option<Record> {
    let (crc, json) = line.split_once(' ')?;
    let crc = u32::from_str_radix(crc, 16).ok()?;
    (crc32fast::hash(json.as_bytes()) == crc)
        .then(|| serde_json::from_str(json).ok())
        .flatten()
}

impl MetadataCache {
    /// Opens (or starts) the cache of `scope` (endpoint and bucket) in `dir`, at most `budget`
    /// bytes on disk.
    pub fn open(dir: &Path, scope: &str, budget: u64) -> std::io::Result<MetadataCache> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("metadata-{:016x}.log", fnv(scope)));
        let cache = MetadataCache {
            path,
            scope: scope.to_string(),
            budget,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                seq: 0,
                file: None,
            }),
        };
        cache.load()?;
        Ok(cache)
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn header(&self) -> String {
        format!("{FORMAT} {}\n", self.scope)
    }

    /// Reads the good prefix of the file, cuts what follows, and keeps the file open for
    /// appends if no other mount holds it.
    fn load(&self) -> std::io::Result<()> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .truncate(false)
            .open(&self.path)?;
        // SAFETY: flock on a descriptor we own; it touches no memory.
        let owned = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        let mut reader = BufReader::new(&file);
        let mut good = 0u64;
        let mut line = String::new();
        let mut records = Vec::new();
        let header_ok = reader.read_line(&mut line).is_ok() && line == self.header();
        if header_ok {
            good = line.len() as u64;
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if !line.ends_with('\n') => break,
                    Ok(n) => match parse_line(line.trim_end_matches('\n')) {
                        Some(record) => {
                            records.push((record, n as u64));
                            good += n as u64;
                        }
                        None => break,
                    },
                }
            }
        }
        let mut inner = self.inner();
        for (record, bytes) in records {
            inner.seq += 1;
            let seq = inner.seq;
            inner
                .entries
                .insert(record.key.clone(), Entry { record, seq, bytes });
        }
        if !owned {
            tracing::info!(path = %self.path.display(), "metadata cache in use by another mount: reading it, not writing");
            return Ok(());
        }
        if !header_ok {
            file.set_len(0)?;
            (&file).write_all(self.header().as_bytes())?;
            good = self.header().len() as u64;
        } else if file.metadata()?.len() != good {
            tracing::warn!(path = %self.path.display(), kept = good, "metadata cache damaged past this point; cut there");
            file.set_len(good)?;
        }
        inner.file = Some((file, good));
        Ok(())
    }

    /// The metadata of `key` at `version`, if this machine has seen that very version.
    pub fn get(&self, key: &str, version: &ObjectVersionId) -> Option<StoredMetadata> {
        let inner = self.inner();
        let record = &inner.entries.get(key)?.record;
        let same = record.etag == version.etag
            && record.size == version.size
            && record.modified == seconds(version.last_modified);
        same.then(|| StoredMetadata {
            metadata: record.metadata.clone().into_iter().collect(),
            content_type: record.content_type.clone(),
        })
    }

    /// Remembers what a HEAD told of `key` at `version`.
    pub fn put(&self, key: &str, version: &ObjectVersionId, stored: &StoredMetadata) {
        let record = Record {
            key: key.to_string(),
            etag: version.etag.clone(),
            modified: seconds(version.last_modified),
            size: version.size,
            metadata: stored.metadata.clone().into_iter().collect(),
            content_type: stored.content_type.clone(),
        };
        let mut inner = self.inner();
        if inner.entries.get(key).is_some_and(|e| e.record == record) {
            return;
        }
        let Ok(line) = line_of(&record) else { return };
        inner.seq += 1;
        let seq = inner.seq;
        let bytes = line.len() as u64;
        inner
            .entries
            .insert(key.to_string(), Entry { record, seq, bytes });
        let Some((file, size)) = inner.file.as_mut() else {
            return;
        };
        if let Err(e) = file.write_all(line.as_bytes()) {
            tracing::warn!(path = %self.path.display(), error = %e, "metadata cache not written; kept in memory only");
            inner.file = None;
            return;
        }
        *size += bytes;
        if *size > self.budget
            && let Err(e) = self.rewrite(&mut inner)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "metadata cache rewrite failed; kept in memory only");
            inner.file = None;
        }
    }

    /// Rewrites the file with the newest entries filling half the budget; the rest are
    /// forgotten, in memory too.
    fn rewrite(&self, inner: &mut Inner) -> std::io::Result<()> {
        let mut newest: Vec<&Entry> = inner.entries.values().collect();
        newest.sort_by_key(|e| std::cmp::Reverse(e.seq));
        let mut kept = Vec::new();
        let mut total = self.header().len() as u64;
        for entry in newest {
            if total + entry.bytes > self.budget / 2 {
                break;
            }
            total += entry.bytes;
            kept.push(entry.record.key.clone());
        }
        let temporary = self.path.with_extension("log.tmp");
        let mut out = File::create(&temporary)?;
        out.write_all(self.header().as_bytes())?;
        for key in kept.iter().rev() {
            if let Some(entry) = inner.entries.get(key) {
                out.write_all(line_of(&entry.record)?.as_bytes())?;
            }
        }
        out.sync_all()?;
        drop(out);
        // The lock is on the old file; take it on the new one before it replaces the old.
        let file = OpenOptions::new().append(true).open(&temporary)?;
        // SAFETY: flock on a descriptor we own; it touches no memory.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        std::fs::rename(&temporary, &self.path)?;
        let keep: std::collections::HashSet<String> = kept.into_iter().collect();
        inner.entries.retain(|key, _| keep.contains(key));
        inner.file = Some((file, total));
        Ok(())
    }

    /// Entries known (for tests and logs).
    pub fn len(&self) -> usize {
        self.inner().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn version(etag: &str, secs: u64) -> ObjectVersionId {
        ObjectVersionId {
            etag: etag.into(),
            last_modified: UNIX_EPOCH + Duration::from_secs(secs),
            size: 3,
        }
    }

    fn stored(mode: &str) -> StoredMetadata {
        StoredMetadata {
            metadata: UserMetadata::from([("mode".to_string(), mode.to_string())]),
            content_type: None,
        }
    }

    #[test]
    fn an_entry_answers_only_its_version_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let cache = MetadataCache::open(dir.path(), "e b", 1 << 20).unwrap();
        cache.put("k", &version("\"a\"", 100), &stored("33188"));
        assert_eq!(
            cache.get("k", &version("\"a\"", 100)),
            Some(stored("33188"))
        );
        assert_eq!(cache.get("k", &version("\"b\"", 100)), None, "new data");
        assert_eq!(
            cache.get("k", &version("\"a\"", 101)),
            None,
            "metadata copy"
        );
        let mut fractional = version("\"a\"", 100);
        fractional.last_modified += Duration::from_millis(500);
        assert!(cache.get("k", &fractional).is_some(), "seconds only");
        drop(cache);
        let again = MetadataCache::open(dir.path(), "e b", 1 << 20).unwrap();
        assert_eq!(
            again.get("k", &version("\"a\"", 100)),
            Some(stored("33188"))
        );
        let other = MetadataCache::open(dir.path(), "e other", 1 << 20).unwrap();
        assert!(other.is_empty(), "another bucket's cache is another file");
    }

    #[test]
    fn a_damaged_or_half_written_tail_is_cut_never_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let cache = MetadataCache::open(dir.path(), "s", 1 << 20).unwrap();
        cache.put("a", &version("\"1\"", 1), &stored("1"));
        cache.put("b", &version("\"2\"", 2), &stored("2"));
        let path = cache.path().to_path_buf();
        drop(cache);
        // Flip a byte inside b's line, then add half a line.
        let mut text = std::fs::read_to_string(&path).unwrap();
        let at = text.rfind("\"2\"").unwrap();
        text.replace_range(at + 1..at + 2, "3");
        text.push_str("0000abcd {\"key\":");
        std::fs::write(&path, text).unwrap();
        let cache = MetadataCache::open(dir.path(), "s", 1 << 20).unwrap();
        assert!(cache.get("a", &version("\"1\"", 1)).is_some());
        assert!(cache.get("b", &version("\"2\"", 2)).is_none());
        assert!(cache.get("b", &version("\"3\"", 2)).is_none());
        cache.put("c", &version("\"3\"", 3), &stored("3"));
        drop(cache);
        let cache = MetadataCache::open(dir.path(), "s", 1 << 20).unwrap();
        assert_eq!(
            cache.len(),
            2,
            "a and c: the damage was cut, appends follow it"
        );
        std::fs::write(&path, "garbage\n").unwrap();
        assert!(
            MetadataCache::open(dir.path(), "s", 1 << 20)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn the_file_stays_within_its_budget_keeping_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let budget = 20_000;
        let cache = MetadataCache::open(dir.path(), "s", budget).unwrap();
        for i in 0..1000u64 {
            cache.put(&format!("key{i}"), &version("\"e\"", i), &stored("1"));
        }
        let size = std::fs::metadata(cache.path()).unwrap().len();
        assert!(size <= budget, "{size} bytes");
        assert!(cache.get("key999", &version("\"e\"", 999)).is_some());
        assert!(cache.get("key0", &version("\"e\"", 0)).is_none());
        let kept = cache.len();
        drop(cache);
        assert_eq!(
            MetadataCache::open(dir.path(), "s", budget).unwrap().len(),
            kept
        );
    }

    #[test]
    fn a_second_mount_reads_the_file_but_does_not_write_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = MetadataCache::open(dir.path(), "s", 1 << 20).unwrap();
        first.put("a", &version("\"1\"", 1), &stored("1"));
        let second = MetadataCache::open(dir.path(), "s", 1 << 20).unwrap();
        assert!(second.get("a", &version("\"1\"", 1)).is_some());
        second.put("b", &version("\"2\"", 2), &stored("2"));
        assert!(second.get("b", &version("\"2\"", 2)).is_some(), "in memory");
        drop((first, second));
        let third = MetadataCache::open(dir.path(), "s", 1 << 20).unwrap();
        assert!(third.get("b", &version("\"2\"", 2)).is_none());
    }
}
