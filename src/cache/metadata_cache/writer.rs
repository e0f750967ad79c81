//! The one thread that writes the file for this mount: callers queue what they learned and go
//! on (a listing never waits for a disk write); the thread commits what is queued in one
//! transaction and keeps the file within its bound.
//!
//! The queue is bounded in bytes ([`QUEUE_BYTES`]): past it, new entries are dropped (a cache
//! may forget; the object costs its HEAD again). Past the bound on disk, a sweep deletes the
//! oldest written entries (lowest `seq`), a chunk of keys per transaction, so the other mount
//! and this one's queued writes never wait long for it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::{Connection, TransactionBehavior, params};

use super::database::{self, is_damage, meta_number, set_meta_number, used_bytes};
use super::record::{encode_stored, row_check, size_column, version_columns};
use super::uploads::OwnUpload;
use super::{ObjectVersionId, StoredMetadata};

/// Bytes of entries waiting in the queue at most.
pub const QUEUE_BYTES: u64 = 16 << 20;
/// Keys a sweep looks at per transaction.
const SWEEP_CHUNK: usize = 2000;
/// Jobs merged into one transaction at most.
const JOBS_PER_TRANSACTION: usize = 64;

/// A version entry to write.
pub type VersionEntry = (String, ObjectVersionId, StoredMetadata);

pub enum Job {
    Versions(Vec<VersionEntry>),
    Uploads(Vec<OwnUpload>),
    /// Listed versions that are recorded uploads: each becomes a version entry, and its upload
    /// record (named by key and start second) goes.
    Adopt(Vec<(VersionEntry, i64)>),
    /// Upload records (key, start second) that a later write replaced.
    Forget(Vec<(String, i64)>),
    /// Answered once everything queued before it is committed.
    Flush(std::sync::mpsc::Sender<()>),
}

impl Job {
    fn bytes(&self) -> u64 {
        let entry = |key: &str, stored: &StoredMetadata| {
            let metadata: usize = stored.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
            (key.len() + metadata + 96) as u64
        };
        match self {
            Job::Versions(entries) => entries.iter().map(|(k, _, s)| entry(k, s)).sum(),
            Job::Uploads(uploads) => uploads.iter().map(|u| entry(&u.key, &u.stored)).sum(),
            Job::Adopt(entries) => entries.iter().map(|((k, _, s), _)| entry(k, s)).sum(),
            Job::Forget(keys) => keys.iter().map(|(k, _)| k.len() as u64 + 32).sum(),
            Job::Flush(_) => 0,
        }
    }
}

/// The sending side, held by the cache.
pub struct Writer {
    queue: Mutex<Option<SyncSender<(Job, u64)>>>,
    queued: Arc<AtomicU64>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    pub fn start(conn: Connection, path: PathBuf, budget: u64, dark: Arc<AtomicBool>) -> Writer {
        // The byte bound is the real one; the count only keeps the channel's own array small.
        let (send, receive) = std::sync::mpsc::sync_channel(4096);
        let queued = Arc::new(AtomicU64::new(0));
        let thread = {
            let queued = queued.clone();
            std::thread::Builder::new()
                .name("metadata-cache".into())
                .spawn(move || {
                    Thread {
                        conn,
                        path,
                        budget,
                        dark,
                        queued,
                        sweep: None,
                    }
                    .run(receive)
                })
        };
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(e) => {
                tracing::warn!(error = %e, "metadata cache writer not started: nothing learned is kept");
                None
            }
        };
        Writer {
            queue: Mutex::new(thread.as_ref().map(|_| send)),
            queued,
            thread: Mutex::new(thread),
        }
    }

    /// Queues `job`, or drops it when the queue is full or the writer gone. Returns whether it
    /// was queued.
    pub fn send(&self, job: Job) -> bool {
        let bytes = job.bytes();
        if self.queued.load(Ordering::Relaxed) + bytes > QUEUE_BYTES {
            tracing::debug!(bytes, "metadata cache queue full: entries dropped");
            return false;
        }
        let queue = super::lock(&self.queue);
        let Some(queue) = queue.as_ref() else {
            return false;
        };
        self.queued.fetch_add(bytes, Ordering::Relaxed);
        match queue.try_send((job, bytes)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(bytes, Ordering::Relaxed);
                false
            }
        }
    }

    /// Waits until everything queued so far is committed (or dropped by a failure).
    pub fn flush(&self) {
        let (done, wait) = std::sync::mpsc::channel();
        let sent = {
            let queue = super::lock(&self.queue);
            queue
                .as_ref()
                .is_some_and(|q| q.send((Job::Flush(done), 0)).is_ok())
        };
        if sent {
            let _ = wait.recv();
        }
    }

    /// Lets the thread commit what is queued, then joins it.
    pub fn stop(&self) {
        super::lock(&self.queue).take();
        if let Some(thread) = super::lock(&self.thread).take() {
            let _ = thread.join();
        }
    }
}

/// Deleting entries written before `cutoff`, key by key from after `after`.
pub(super) struct Sweep {
    cutoff: i64,
    after: Option<String>,
}

struct Thread {
    conn: Connection,
    path: PathBuf,
    budget: u64,
    dark: Arc<AtomicBool>,
    queued: Arc<AtomicU64>,
    sweep: Option<Sweep>,
}

impl Thread {
    fn run(mut self, receive: Receiver<(Job, u64)>) {
        loop {
            let first = if self.sweep.is_some() {
                match receive.try_recv() {
                    Ok(job) => Some(job),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => return,
                }
            } else {
                match receive.recv() {
                    Ok(job) => Some(job),
                    Err(_) => return,
                }
            };
            let written = match first {
                Some(first) => {
                    let mut jobs = vec![first];
                    while jobs.len() < JOBS_PER_TRANSACTION {
                        match receive.try_recv() {
                            Ok(job) => jobs.push(job),
                            Err(_) => break,
                        }
                    }
                    self.write(jobs)
                }
                None => Ok(()),
            };
            // A step of the sweep after every transaction, so steady writes cannot starve it.
            let outcome = written.and_then(|()| self.sweep_step());
            if let Err(e) = outcome.and_then(|()| self.check_bound()) {
                if is_damage(&e) {
                    tracing::warn!(path = %self.path.display(), error = %e, "metadata cache damaged: dropped, the next mount starts it afresh");
                    self.dark.store(true, Ordering::Relaxed);
                    database::remove(&self.path);
                    // Answer the flushes still queued, drop the rest.
                    while let Ok((job, bytes)) = receive.recv() {
                        self.queued.fetch_sub(bytes, Ordering::Relaxed);
                        drop(job);
                    }
                    return;
                }
                tracing::warn!(path = %self.path.display(), error = %e, "metadata cache write failed; those entries are not kept");
            }
        }
    }

    /// Commits `jobs` in one transaction, then answers the flushes among them.
    fn write(&mut self, jobs: Vec<(Job, u64)>) -> rusqlite::Result<()> {
        let mut flushes = Vec::new();
        let bytes: u64 = jobs.iter().map(|(_, b)| b).sum();
        let result = self.commit(jobs, &mut flushes);
        self.queued.fetch_sub(bytes, Ordering::Relaxed);
        for flush in flushes {
            let _ = flush.send(());
        }
        result
    }

    fn commit(
        &mut self,
        jobs: Vec<(Job, u64)>,
        flushes: &mut Vec<std::sync::mpsc::Sender<()>>,
    ) -> rusqlite::Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut seq = meta_number(&tx, "next_seq")?;
        for (job, _) in jobs {
            match job {
                Job::Versions(entries) => {
                    for entry in &entries {
                        put_version(&tx, entry, seq)?;
                        seq += 1;
                    }
                }
                Job::Uploads(uploads) => {
                    for upload in &uploads {
                        put_upload(&tx, upload, seq)?;
                        seq += 1;
                    }
                }
                Job::Adopt(adopted) => {
                    for (entry, started) in &adopted {
                        put_version(&tx, entry, seq)?;
                        seq += 1;
                        forget_upload(&tx, &entry.0, *started)?;
                    }
                }
                Job::Forget(keys) => {
                    for (key, started) in &keys {
                        forget_upload(&tx, key, *started)?;
                    }
                }
                Job::Flush(done) => flushes.push(done),
            }
        }
        set_meta_number(&tx, "next_seq", seq)?;
        tx.commit()
    }

    /// Starts a sweep when the tables outgrow the bound.
    fn check_bound(&mut self) -> rusqlite::Result<()> {
        if self.sweep.is_none() {
            self.sweep = start_sweep(&self.conn, self.budget)?;
        }
        Ok(())
    }

    /// One step of the sweep under way, if any.
    fn sweep_step(&mut self) -> rusqlite::Result<()> {
        if let Some(sweep) = self.sweep.as_mut()
            && sweep_step(&mut self.conn, sweep, self.budget)?
        {
            self.sweep = None;
        }
        Ok(())
    }
}

/// A sweep, if the tables outgrew `budget`: the oldest written share of the entries goes,
/// enough to bring them to three quarters of the bound (a quarter at least).
pub(super) fn start_sweep(conn: &Connection, budget: u64) -> rusqlite::Result<Option<Sweep>> {
    let (used, _) = used_bytes(conn)?;
    if used <= budget {
        return Ok(None);
    }
    let first = meta_number(conn, "min_seq")?;
    let next = meta_number(conn, "next_seq")?;
    let share = (1.0 - 0.75 * budget as f64 / used as f64).max(0.25);
    let span = ((next - first) as f64 * share).ceil() as i64;
    tracing::debug!(
        used,
        budget,
        share,
        "metadata cache over its bound: oldest entries go"
    );
    Ok(Some(Sweep {
        cutoff: first + span.max(1),
        after: None,
    }))
}

/// Deletes the swept entries among the next chunk of keys; at the end (`Ok(true)`), the
/// uploads and the ledger index's rows of the same age too, and gives free pages back if the
/// file is well past the bound.
pub(super) fn sweep_step(
    conn: &mut Connection,
    sweep: &mut Sweep,
    budget: u64,
) -> rusqlite::Result<bool> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut scanned = 0;
    let mut old = Vec::new();
    {
        let mut chunk = match &sweep.after {
            None => {
                tx.prepare_cached("SELECT key, seq FROM object_versions ORDER BY key LIMIT ?1")?
            }
            Some(_) => tx.prepare_cached(
                "SELECT key, seq FROM object_versions WHERE key > ?2 ORDER BY key LIMIT ?1",
            )?,
        };
        let mut rows = match &sweep.after {
            None => chunk.query(params![SWEEP_CHUNK as i64])?,
            Some(after) => chunk.query(params![SWEEP_CHUNK as i64, after])?,
        };
        while let Some(row) = rows.next()? {
            let key: String = row.get(0)?;
            let seq: i64 = row.get(1)?;
            scanned += 1;
            if seq < sweep.cutoff {
                old.push(key.clone());
            }
            sweep.after = Some(key);
        }
    }
    {
        let mut delete = tx.prepare_cached("DELETE FROM object_versions WHERE key = ?1")?;
        for key in &old {
            delete.execute([key])?;
        }
    }
    let done = scanned < SWEEP_CHUNK;
    if done {
        // One row per segment, a few hundred thousand at most: one statement each.
        for table in ["own_uploads", "segment_keys", "verified_segments"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE seq < ?1"),
                [sweep.cutoff],
            )?;
        }
        let first = meta_number(&tx, "min_seq")?;
        set_meta_number(&tx, "min_seq", first.max(sweep.cutoff))?;
    }
    tx.commit()?;
    if done {
        let (used, file) = used_bytes(conn)?;
        if file > budget.max(used) + budget / 4 {
            // Only pages past the bound go back: the rest are reused by the next writes.
            let pages = (file - budget.max(used)) / 4096;
            // The pragma frees a page per step: step it to the end.
            let mut vacuum = conn.prepare(&format!("PRAGMA incremental_vacuum({pages})"))?;
            let mut steps = vacuum.query([])?;
            while steps.next()?.is_some() {}
            drop(steps);
            drop(vacuum);
            // The file itself shrinks when the WAL is copied back into it.
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        }
    }
    Ok(done)
}

fn put_version(
    tx: &rusqlite::Transaction<'_>,
    (key, version, stored): &VersionEntry,
    seq: i64,
) -> rusqlite::Result<()> {
    let (etag, modified, size) = version_columns(version);
    let stored = encode_stored(stored);
    let chk = row_check(key, &etag, &[modified, size], &stored);
    // An unchanged row is left as it is: no page is written for it.
    tx.prepare_cached(
        "INSERT INTO object_versions (key, etag, modified, size, stored, seq, chk)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (key) DO UPDATE SET etag = excluded.etag, modified = excluded.modified,
             size = excluded.size, stored = excluded.stored, seq = excluded.seq,
             chk = excluded.chk
         WHERE chk != excluded.chk OR etag != excluded.etag OR modified != excluded.modified
             OR size != excluded.size OR stored != excluded.stored",
    )?
    .execute(params![key, etag, modified, size, stored, seq, chk])
    .map(drop)
}

fn put_upload(
    tx: &rusqlite::Transaction<'_>,
    upload: &OwnUpload,
    seq: i64,
) -> rusqlite::Result<()> {
    let etag = super::record::etag_bytes(&upload.etag);
    // -1: not known (a copy).
    let size = upload.size.map_or(-1, size_column);
    let (started, finished) = upload.window();
    let stored = encode_stored(&upload.stored);
    let chk = row_check(&upload.key, &etag, &[size, started, finished], &stored);
    tx.prepare_cached(
        "INSERT OR REPLACE INTO own_uploads (key, etag, size, stored, started, finished, seq, chk)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        upload.key, etag, size, stored, started, finished, seq, chk
    ])
    .map(drop)
}

fn forget_upload(tx: &rusqlite::Transaction<'_>, key: &str, started: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM own_uploads WHERE key = ?1 AND started = ?2")?
        .execute(params![key, started])
        .map(drop)
}
