//! Object metadata remembered across mounts, so `ls -l` of a bucket this machine has seen
//! before shows stored modes, owners, types and times at listing speed.
//!
//! A listing carries no user metadata (s3fs's `x-amz-meta-mode/uid/gid/mtime`): each object's
//! costs a HEAD. What a HEAD told is kept here, keyed by the object's key and *version* - its
//! ETag, LastModified (to the second) and size - so an entry answers only for the very object
//! it describes. Any change by another client misses: new data has a new ETag, and a metadata
//! change (a CopyObject onto itself, which keeps the ETag) moves LastModified. Objects that
//! carry no metadata at all (written by other tools) are remembered too, so they cost one HEAD
//! per version per machine, once. What this machine wrote or copied is recorded as it lands
//! and becomes an entry when a listing tells its LastModified ([`uploads`]).
//!
//! # On disk
//!
//! A SQLite database per bucket ([`database`]), read a batch at a time: nothing is loaded at
//! mount, a listing page's lookups are one read transaction on this mount's reading connection
//! ([`MetadataCache::get_many`]), and what is learned is queued to one writer thread per mount
//! ([`writer`]), which commits it in transactions and keeps the tables within the bound (the
//! oldest written entries go). WAL mode lets every mount of the bucket on the machine read and
//! write the file at once; a mount killed in the middle of a write leaves the last committed
//! state. A file that is not ours, or is damaged, is started afresh; a row whose checksum does
//! not hold reads as a miss.

mod database;
pub mod ledger_index;
mod record;
pub mod uploads;
mod writer;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use rusqlite::Connection;

use crate::store::UserMetadata;
use database::Refused;
pub use ledger_index::LedgerIndex;
use record::{decode_stored, row_check, version_columns};
pub use uploads::OwnUpload;
use uploads::Verdict;
use writer::{Job, VersionEntry, Writer};

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

/// Page cache of the reading connection (SQLite's, in KiB): some 30 listing pages' worth of
/// rows (137 bytes an entry) stay in memory; the rest is read from the file (the kernel's
/// page cache) as needed. Listings read in key order, so more buys nothing but RSS.
const READ_CACHE_KIB: u32 = 4 << 10;
/// Page cache of the writing connection: writes come a listing page at a time, in key order.
const WRITE_CACHE_KIB: u32 = 2 << 10;

pub struct MetadataCache {
    path: PathBuf,
    reader: Mutex<Connection>,
    writer: Writer,
    /// Set when the file turned out damaged while in use: this mount asks it nothing more.
    dark: Arc<AtomicBool>,
}

impl std::fmt::Debug for MetadataCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataCache")
            .field("path", &self.path)
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// What one lookup found.
enum Found {
    Hit(StoredMetadata),
    /// A recorded upload of this machine, now listed: the entry it becomes, and its start.
    Adopted(StoredMetadata, i64),
    /// A recorded upload that a later write replaced (its start second).
    Superseded(i64),
    Miss,
}

impl MetadataCache {
    /// Opens (or starts) the cache of `scope` (endpoint and bucket) in `dir`, its tables
    /// bounded to `budget` bytes. A file that is damaged or not ours is started afresh.
    pub fn open(dir: &Path, scope: &str, budget: u64) -> std::io::Result<MetadataCache> {
        std::fs::create_dir_all(dir)?;
        // The append-only log of earlier versions: its entries are learned again by HEADs.
        let _ =
            std::fs::remove_file(dir.join(format!("metadata-{:016x}.log", database::fnv(scope))));
        let path = database::path_of(dir, scope);
        let open_both = || -> Result<(Connection, Connection), Refused> {
            let reader = database::open(&path, scope, READ_CACHE_KIB)?;
            let writer = database::open(&path, scope, WRITE_CACHE_KIB)?;
            Ok((reader, writer))
        };
        let (reader, writer) = match open_both() {
            Ok(both) => both,
            Err(Refused::Untrusted(why)) => {
                tracing::warn!(path = %path.display(), why, "metadata cache not trusted: started afresh");
                database::remove(&path);
                open_both().map_err(|e| match e {
                    Refused::Untrusted(why) => std::io::Error::other(why),
                    Refused::Failed(e) => std::io::Error::other(e),
                })?
            }
            Err(Refused::Failed(e)) => return Err(std::io::Error::other(e)),
        };
        let dark = Arc::new(AtomicBool::new(false));
        Ok(MetadataCache {
            writer: Writer::start(writer, path.clone(), budget, dark.clone()),
            path,
            reader: Mutex::new(reader),
            dark,
        })
    }

    /// The metadata of each `(key, version)`, where this machine has seen that very version
    /// (or wrote it: a recorded upload the version matches is adopted here). One read
    /// transaction for the whole batch.
    pub fn get_many(&self, wanted: &[(String, ObjectVersionId)]) -> Vec<Option<StoredMetadata>> {
        let mut answers: Vec<Option<StoredMetadata>> = vec![None; wanted.len()];
        if wanted.is_empty() || self.dark.load(Ordering::Relaxed) {
            return answers;
        }
        let mut adopted = Vec::new();
        let mut superseded = Vec::new();
        let result = {
            let mut conn = lock(&self.reader);
            look_up(&mut conn, wanted, |at, found| match found {
                Found::Hit(stored) => answers[at] = Some(stored),
                Found::Adopted(stored, started) => {
                    let (key, version) = &wanted[at];
                    adopted.push(((key.clone(), version.clone(), stored.clone()), started));
                    answers[at] = Some(stored);
                }
                Found::Superseded(started) => superseded.push((wanted[at].0.clone(), started)),
                Found::Miss => {}
            })
        };
        if let Err(e) = result {
            self.failed(&e);
            return vec![None; wanted.len()];
        }
        if !adopted.is_empty() {
            self.writer.send(Job::Adopt(adopted));
        }
        if !superseded.is_empty() {
            self.writer.send(Job::Forget(superseded));
        }
        answers
    }

    /// [`Self::get_many`] of one.
    pub fn get(&self, key: &str, version: &ObjectVersionId) -> Option<StoredMetadata> {
        self.get_many(&[(key.to_string(), version.clone())])
            .pop()
            .flatten()
    }

    /// Remembers what HEADs told of these versions. Queued: written by the writer thread in
    /// one transaction (dropped if its queue is full).
    pub fn put_many(&self, entries: Vec<VersionEntry>) {
        if !entries.is_empty() && !self.dark.load(Ordering::Relaxed) {
            self.writer.send(Job::Versions(entries));
        }
    }

    /// [`Self::put_many`] of one.
    pub fn put(&self, key: &str, version: &ObjectVersionId, stored: &StoredMetadata) {
        self.put_many(vec![(key.to_string(), version.clone(), stored.clone())]);
    }

    /// Records objects this mount wrote or copied, for the first listing that shows them to
    /// adopt (see [`uploads`]).
    pub fn record_uploads(&self, uploads: Vec<OwnUpload>) {
        if !uploads.is_empty() && !self.dark.load(Ordering::Relaxed) {
            self.writer.send(Job::Uploads(uploads));
        }
    }

    /// Waits until everything handed to the cache so far is on disk (unmount; tests).
    pub fn flush(&self) {
        self.writer.flush();
    }

    /// Version entries in the file (counts them all: for tests and benchmarks).
    pub fn entries(&self) -> u64 {
        lock(&self.reader)
            .query_row("SELECT count(*) FROM object_versions", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_or(0, |n| u64::try_from(n).unwrap_or(0))
    }

    /// Bytes the tables use in the file.
    pub fn used_bytes(&self) -> u64 {
        database::used_bytes(&lock(&self.reader)).map_or(0, |(used, _)| used)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn failed(&self, error: &rusqlite::Error) {
        if database::is_damage(error) {
            if !self.dark.swap(true, Ordering::Relaxed) {
                tracing::warn!(path = %self.path.display(), error = %error, "metadata cache damaged: not used by this mount, started afresh by the next");
                database::remove(&self.path);
            }
        } else {
            tracing::debug!(path = %self.path.display(), error = %error, "metadata cache not read: every listed version costs a HEAD");
        }
    }
}

impl Drop for MetadataCache {
    fn drop(&mut self) {
        self.writer.stop();
    }
}

/// Looks up every wanted version in one read transaction, in key order (the rows of one
/// listing page sit together on disk), telling `found` what each index found.
fn look_up(
    conn: &mut Connection,
    wanted: &[(String, ObjectVersionId)],
    mut found: impl FnMut(usize, Found),
) -> rusqlite::Result<()> {
    let mut order: Vec<usize> = (0..wanted.len()).collect();
    order.sort_by(|a, b| wanted[*a].0.cmp(&wanted[*b].0));
    let tx = conn.transaction()?;
    let mut versions = tx.prepare_cached(
        "SELECT etag, modified, size, stored, chk FROM object_versions WHERE key = ?1",
    )?;
    let mut uploads = tx.prepare_cached(
        "SELECT etag, size, stored, started, finished, chk FROM own_uploads WHERE key = ?1",
    )?;
    for at in order {
        let (key, version) = &wanted[at];
        let (etag, modified, size) = version_columns(version);
        let mut rows = versions.query([key])?;
        if let Some(row) = rows.next()? {
            let row_etag = blob(row.get_ref(0)?);
            let row_modified: i64 = row.get(1)?;
            let row_size: i64 = row.get(2)?;
            let stored = blob(row.get_ref(3)?);
            let chk: i64 = row.get(4)?;
            if row_etag == etag.as_slice() && row_modified == modified && row_size == size {
                let intact = chk == row_check(key, row_etag, &[row_modified, row_size], stored);
                match decode_stored(stored).filter(|_| intact) {
                    Some(stored) => {
                        found(at, Found::Hit(stored));
                        continue;
                    }
                    None => tracing::debug!(key, "metadata cache row damaged: ignored"),
                }
            }
        }
        drop(rows);
        let mut rows = uploads.query([key])?;
        let Some(row) = rows.next()? else {
            found(at, Found::Miss);
            continue;
        };
        let row_etag = blob(row.get_ref(0)?);
        let row_size: i64 = row.get(1)?;
        let stored = blob(row.get_ref(2)?);
        let window: (i64, i64) = (row.get(3)?, row.get(4)?);
        let chk: i64 = row.get(5)?;
        if chk != row_check(key, row_etag, &[row_size, window.0, window.1], stored) {
            found(at, Found::Miss);
            continue;
        }
        let same_data = row_etag == etag.as_slice() && (row_size == size || row_size < 0);
        match (
            uploads::judge(same_data, modified, window),
            decode_stored(stored),
        ) {
            (Verdict::Ours, Some(stored)) => found(at, Found::Adopted(stored, window.0)),
            (Verdict::Superseded, _) => found(at, Found::Superseded(window.0)),
            _ => found(at, Found::Miss),
        }
    }
    drop(versions);
    drop(uploads);
    tx.commit()
}

/// A blob column; any other type (a damaged row) as no bytes, which no check accepts.
fn blob(value: rusqlite::types::ValueRef<'_>) -> &[u8] {
    match value {
        rusqlite::types::ValueRef::Blob(bytes) => bytes,
        _ => &[],
    }
}
