//! The ledger's segment index (`segments find`): per segment id, the version (ETag,
//! LastModified, size) it was read at and the hashes of its keys
//! (`segment::index`). An entry answers only for that very version, so a replaced
//! segment is fetched again. It lives in the bucket's database as the `segment_keys` table; a
//! damaged file is started afresh (the index is rebuilt from S3 as segments are read). Its
//! rows count against the database's bound like the mounts' entries: each carries the write
//! `seq`, and past the bound the oldest written rows of every table go, whoever writes.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::ObjectVersionId;
use super::database::{self, Refused, meta_number, set_meta_number};
use super::record::{row_check, stored_version, version_columns};
use super::writer::{start_sweep, sweep_step};

/// Page cache of the index's connection (SQLite's, in KiB).
const CACHE_KIB: u32 = 8 << 10;

pub struct LedgerIndex {
    path: PathBuf,
    scope: String,
    conn: Connection,
    /// Bytes the database may hold (`--metadata-cache-size-mib`).
    budget: u64,
}

/// The row key of a segment id (SQLite integers are signed).
fn id_column(id: u64) -> i64 {
    i64::from_le_bytes(id.to_le_bytes())
}

/// The check of one row: its id, version and hashes.
fn check(id: u64, etag: &[u8], modified: i64, size: i64, hashes: &[u8]) -> i64 {
    row_check(&format!("{id:016x}"), etag, &[modified, size], hashes)
}

/// The check of a verified row: its id and both versions (a damaged row reads as "not
/// verified").
fn verified_check(id: u64, data: &ObjectVersionId, meta: &ObjectVersionId) -> i64 {
    let (d_etag, d_modified, d_size) = version_columns(data);
    let (m_etag, m_modified, m_size) = version_columns(meta);
    row_check(
        &format!("{id:016x}"),
        &d_etag,
        &[d_modified, d_size, m_modified, m_size],
        &m_etag,
    )
}

impl LedgerIndex {
    /// Opens the index of `scope` (endpoint and bucket) in `dir`, whose database may hold
    /// `budget` bytes; a file that is damaged or not ours is started afresh.
    pub fn open(dir: &Path, scope: &str, budget: u64) -> std::io::Result<LedgerIndex> {
        std::fs::create_dir_all(dir)?;
        let path = database::path_of(dir, scope);
        let conn = match database::open(&path, scope, CACHE_KIB) {
            Ok(conn) => conn,
            Err(Refused::Untrusted(why)) => {
                tracing::warn!(path = %path.display(), why, "ledger index not trusted: started afresh");
                database::remove(&path);
                database::open(&path, scope, CACHE_KIB).map_err(refused_error)?
            }
            Err(Refused::Failed(e)) => return Err(std::io::Error::other(e)),
        };
        Ok(LedgerIndex {
            path,
            scope: scope.to_string(),
            conn,
            budget,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key hashes of each segment at the version asked for, where this very version was
    /// indexed. A row whose check fails reads as not indexed. One read transaction.
    pub fn get_many(&mut self, wanted: &[(u64, ObjectVersionId)]) -> Vec<Option<Vec<u64>>> {
        let found = self.try_get_many(wanted);
        self.or_failed(found, || vec![None; wanted.len()])
    }

    fn try_get_many(
        &mut self,
        wanted: &[(u64, ObjectVersionId)],
    ) -> rusqlite::Result<Vec<Option<Vec<u64>>>> {
        let tx = self.conn.transaction()?;
        let mut found = Vec::with_capacity(wanted.len());
        {
            let mut select = tx.prepare_cached(
                "SELECT etag, modified, size, hashes, chk FROM segment_keys WHERE id = ?1",
            )?;
            for (id, version) in wanted {
                let row = select
                    .query_row([id_column(*id)], |r| {
                        Ok((
                            stored_version(r, 0)?,
                            r.get::<_, Vec<u8>>(3)?,
                            r.get::<_, i64>(4)?,
                        ))
                    })
                    .optional()?;
                let (etag, modified, size) = version_columns(version);
                found.push(row.and_then(|((e, m, s), hashes, chk)| {
                    let same = e == etag && m == modified && s == size;
                    let sound = chk == check(*id, &e, m, s, &hashes);
                    (same && sound).then(|| decode(&hashes)).flatten()
                }));
            }
        }
        tx.commit()?;
        Ok(found)
    }

    /// Records the key hashes of segments read at these versions, replacing older versions'
    /// rows. One transaction.
    pub fn put_many(&mut self, entries: &[(u64, ObjectVersionId, Vec<u64>)]) {
        if entries.is_empty() {
            return;
        }
        if let Err(e) = self
            .try_put_many(entries)
            .and_then(|()| self.keep_within_bound())
        {
            self.failed(&e);
        }
    }

    fn try_put_many(
        &mut self,
        entries: &[(u64, ObjectVersionId, Vec<u64>)],
    ) -> rusqlite::Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut seq = meta_number(&tx, "next_seq")?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO segment_keys (id, etag, modified, size, hashes, seq, chk)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for (id, version, hashes) in entries {
                let (etag, modified, size) = version_columns(version);
                let blob = encode(hashes);
                let chk = check(*id, &etag, modified, size, &blob);
                insert.execute(rusqlite::params![
                    id_column(*id),
                    etag,
                    modified,
                    size,
                    blob,
                    seq,
                    chk
                ])?;
                seq += 1;
            }
        }
        set_meta_number(&tx, "next_seq", seq)?;
        tx.commit()
    }

    /// Whether each segment was found intact at exactly these versions of its data file and
    /// sidecar. One read transaction; any failure reads as "not verified".
    pub fn verified(&mut self, wanted: &[(u64, ObjectVersionId, ObjectVersionId)]) -> Vec<bool> {
        let found = self.try_verified(wanted);
        self.or_failed(found, || vec![false; wanted.len()])
    }

    fn try_verified(
        &mut self,
        wanted: &[(u64, ObjectVersionId, ObjectVersionId)],
    ) -> rusqlite::Result<Vec<bool>> {
        let tx = self.conn.transaction()?;
        let mut found = Vec::with_capacity(wanted.len());
        {
            let mut select = tx.prepare_cached(
                "SELECT data_etag, data_modified, data_size, meta_etag, meta_modified,
                 meta_size, chk FROM verified_segments WHERE id = ?1",
            )?;
            for (id, data, meta) in wanted {
                let row = select
                    .query_row([id_column(*id)], |r| {
                        Ok((
                            stored_version(r, 0)?,
                            stored_version(r, 3)?,
                            r.get::<_, i64>(6)?,
                        ))
                    })
                    .optional()?;
                // The very versions (not just their check), and a sound row.
                found.push(row.is_some_and(|(d, m, chk)| {
                    d == version_columns(data)
                        && m == version_columns(meta)
                        && chk == verified_check(*id, data, meta)
                }));
            }
        }
        tx.commit()?;
        Ok(found)
    }

    /// Records segments found intact at these versions, and forgets those found bad (so
    /// they are checked again until they pass). One transaction.
    pub fn record_verified(
        &mut self,
        passed: &[(u64, ObjectVersionId, ObjectVersionId)],
        failed: &[u64],
    ) {
        if passed.is_empty() && failed.is_empty() {
            return;
        }
        let recorded = self.try_record_verified(passed, failed);
        if let Err(e) = recorded.and_then(|()| self.keep_within_bound()) {
            self.failed(&e);
        }
    }

    fn try_record_verified(
        &mut self,
        passed: &[(u64, ObjectVersionId, ObjectVersionId)],
        failed: &[u64],
    ) -> rusqlite::Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut seq = meta_number(&tx, "next_seq")?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO verified_segments (id, data_etag, data_modified,
                 data_size, meta_etag, meta_modified, meta_size, seq, chk)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for (id, data, meta) in passed {
                let (d_etag, d_modified, d_size) = version_columns(data);
                let (m_etag, m_modified, m_size) = version_columns(meta);
                insert.execute(rusqlite::params![
                    id_column(*id),
                    d_etag,
                    d_modified,
                    d_size,
                    m_etag,
                    m_modified,
                    m_size,
                    seq,
                    verified_check(*id, data, meta)
                ])?;
                seq += 1;
            }
            let mut delete = tx.prepare_cached("DELETE FROM verified_segments WHERE id = ?1")?;
            for id in failed {
                delete.execute([id_column(*id)])?;
            }
        }
        set_meta_number(&tx, "next_seq", seq)?;
        tx.commit()
    }

    /// Past the bound, deletes the oldest written rows of every table (the mounts' entries
    /// too), as a mount's writer does, a chunk per transaction.
    fn keep_within_bound(&mut self) -> rusqlite::Result<()> {
        if let Some(mut sweep) = start_sweep(&self.conn, self.budget)? {
            while !sweep_step(&mut self.conn, &mut sweep, self.budget)? {}
        }
        Ok(())
    }

    /// Segments indexed (for tests and benchmarks).
    pub fn entries(&self) -> u64 {
        self.conn
            .query_row("SELECT count(*) FROM segment_keys", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_or(0, |n| u64::try_from(n).unwrap_or(0))
    }

    /// What a read found, or `fallback` (nothing known) when it failed.
    fn or_failed<T>(&mut self, result: rusqlite::Result<T>, fallback: impl FnOnce() -> T) -> T {
        result.unwrap_or_else(|e| {
            self.failed(&e);
            fallback()
        })
    }

    /// A read or write failed: a damaged file is started afresh so this run's segments index
    /// it again; any other failure is logged and the index asked nothing more useful.
    fn failed(&mut self, error: &rusqlite::Error) {
        tracing::warn!(path = %self.path.display(), %error, "ledger index failed");
        if database::is_damage(error) {
            database::remove(&self.path);
            if let Ok(conn) = database::open(&self.path, &self.scope, CACHE_KIB) {
                self.conn = conn;
            }
        }
    }
}

/// The hashes as stored: 8 little-endian bytes each.
fn encode(hashes: &[u64]) -> Vec<u8> {
    hashes.iter().flat_map(|h| h.to_le_bytes()).collect()
}

/// The stored hashes back, or `None` if the blob is not a whole number of sorted hashes.
fn decode(bytes: &[u8]) -> Option<Vec<u64>> {
    if !bytes.len().is_multiple_of(8) {
        return None;
    }
    let hashes: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    hashes.is_sorted().then_some(hashes)
}

fn refused_error(refused: Refused) -> std::io::Error {
    match refused {
        Refused::Untrusted(why) => std::io::Error::other(why),
        Refused::Failed(e) => std::io::Error::other(e),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    fn version(etag: &str, second: u64) -> ObjectVersionId {
        ObjectVersionId {
            etag: etag.to_string(),
            last_modified: SystemTime::UNIX_EPOCH + Duration::from_secs(second),
            size: 100,
        }
    }

    #[test]
    fn an_entry_answers_only_for_its_version_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = LedgerIndex::open(dir.path(), "test bucket", 1 << 30).unwrap();
        index.put_many(&[
            (7, version("\"aa\"", 10), vec![1, 5, 9]),
            (u64::MAX, version("\"bb\"", 10), vec![]),
        ]);
        drop(index);
        let mut index = LedgerIndex::open(dir.path(), "test bucket", 1 << 30).unwrap();
        assert_eq!(index.entries(), 2);
        let found = index.get_many(&[
            (7, version("\"aa\"", 10)),
            (7, version("\"ab\"", 10)),
            (7, version("\"aa\"", 11)),
            (u64::MAX, version("\"bb\"", 10)),
            (8, version("\"aa\"", 10)),
        ]);
        assert_eq!(
            found,
            vec![Some(vec![1, 5, 9]), None, None, Some(vec![]), None]
        );
        assert_eq!(decode(&encode(&[3, 2])), None);
        assert_eq!(decode(&[0; 7]), None);
    }
}
