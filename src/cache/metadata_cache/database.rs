//! The machine's database of one bucket: one SQLite file per endpoint and bucket, in WAL mode,
//! so every mount of the bucket on this machine reads and writes it at once, each write a
//! crash-safe transaction.
//!
//! Each kind of data is a table of its own (a keyspace): `object_versions` and `own_uploads`
//! here; another (a ledger's segment index) is one more `CREATE TABLE IF NOT EXISTS` in
//! [`KEYSPACES`], created by the first open that knows it and unseen by those that do not.
//! [`SCHEMA_VERSION`] changes only when an existing table changes its layout; a file of
//! another version, another application, another bucket, or no database at all is not
//! trusted but started afresh (it is a cache: S3 holds the truth).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};

/// `PRAGMA application_id`: "SCBF" (scribefs), so a SQLite file of another program is
/// never read as ours.
const APPLICATION_ID: i32 = 0x5343_4246;
/// `PRAGMA user_version` of the tables below.
const SCHEMA_VERSION: i32 = 1;

/// Every table, created if missing at each open.
///
/// - `meta`: the bucket the file belongs to, and the write sequence (`next_seq`, `min_seq`).
/// - `object_versions`: what a HEAD told of one version of a key (ETag, LastModified in
///   seconds, size). One row per key, keyed by the key itself so that the keys of one listing
///   page sit side by side on disk. `seq` orders rows by when they were written, for eviction.
///   `chk` is a CRC32 of the rest: a row damaged on disk reads as a miss.
/// - `own_uploads`: what this machine wrote or copied, until a listing tells its
///   LastModified (see `uploads`).
/// - `segment_keys`: the ledger index of `segments find` (see `ledger_index`): per segment id,
///   the version read and the sorted hashes of its keys.
/// - `verified_segments`: per segment id, the versions of its data file and sidecar that
///   `segments verify` last found intact (see `ledger_index`).
///
/// Every table but `meta` counts against the file's bound, and its rows carry the `seq` they
/// were written at: a sweep deletes the oldest of all of them alike.
const KEYSPACES: &str = "
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value ANY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS object_versions (
    key TEXT PRIMARY KEY,
    etag BLOB NOT NULL,
    modified INTEGER NOT NULL,
    size INTEGER NOT NULL,
    stored BLOB NOT NULL,
    seq INTEGER NOT NULL,
    chk INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS own_uploads (
    key TEXT PRIMARY KEY,
    etag BLOB NOT NULL,
    size INTEGER NOT NULL,
    stored BLOB NOT NULL,
    started INTEGER NOT NULL,
    finished INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    chk INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS segment_keys (
    id INTEGER PRIMARY KEY,
    etag BLOB NOT NULL,
    modified INTEGER NOT NULL,
    size INTEGER NOT NULL,
    hashes BLOB NOT NULL,
    seq INTEGER NOT NULL,
    chk INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS verified_segments (
    id INTEGER PRIMARY KEY,
    data_etag BLOB NOT NULL,
    data_modified INTEGER NOT NULL,
    data_size INTEGER NOT NULL,
    meta_etag BLOB NOT NULL,
    meta_modified INTEGER NOT NULL,
    meta_size INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    chk INTEGER NOT NULL
);
";

/// How long a write waits for the other mount's transaction before giving up on its batch.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a file was not trusted.
#[derive(Debug)]
pub enum Refused {
    /// Not ours, or damaged: start afresh.
    Untrusted(String),
    /// Could not be opened at all (permissions, disk): no cache this mount.
    Failed(rusqlite::Error),
}

impl From<rusqlite::Error> for Refused {
    fn from(error: rusqlite::Error) -> Refused {
        if is_damage(&error) {
            Refused::Untrusted(error.to_string())
        } else {
            Refused::Failed(error)
        }
    }
}

/// Errors that mean the file itself cannot be trusted.
pub fn is_damage(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

/// The file of `scope` (endpoint and bucket) in `dir`.
pub fn path_of(dir: &Path, scope: &str) -> PathBuf {
    dir.join(format!("bucket-{:016x}.sqlite", fnv(scope)))
}

/// A stable 64-bit FNV-1a hash, for the file name.
pub fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Opens the file at `path` for `scope`, making it if new. `cache_kib` bounds this
/// connection's page cache.
pub fn open(path: &Path, scope: &str, cache_kib: u32) -> Result<Connection, Refused> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // A new file: free pages can be given back when the bound is lowered. Set before the
    // journal mode and any table, or it does not take.
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    if pages == 0 {
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")?;
    }
    // Readers never wait for the writer, nor it for them; NORMAL syncs at checkpoints only:
    // a crash keeps every committed transaction, a power cut may lose the last few (never
    // the file's consistency).
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Refused::Untrusted(format!("journal mode {mode}")));
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = NORMAL; PRAGMA cache_size = -{cache_kib};
         PRAGMA journal_size_limit = 16777216;"
    ))?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let application: i32 = tx.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    let version: i32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let tables: i64 = tx.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
    if application == 0 && version == 0 && tables == 0 {
        tx.execute_batch(&format!(
            "PRAGMA application_id = {APPLICATION_ID};
             PRAGMA user_version = {SCHEMA_VERSION};"
        ))?;
        tx.execute_batch(KEYSPACES)?;
        tx.execute(
            "INSERT INTO meta (name, value) VALUES ('scope', ?1)",
            [scope],
        )?;
    } else if application != APPLICATION_ID || version != SCHEMA_VERSION {
        return Err(Refused::Untrusted(format!(
            "application {application:#x}, schema {version}"
        )));
    } else {
        tx.execute_batch(KEYSPACES)?;
        let owner: Option<String> = tx
            .query_row("SELECT value FROM meta WHERE name = 'scope'", [], |r| {
                r.get(0)
            })
            .optional()?;
        if owner.as_deref() != Some(scope) {
            return Err(Refused::Untrusted(format!("the cache of {owner:?}")));
        }
    }
    tx.commit()?;
    Ok(conn)
}

/// Removes the file and its WAL and shared-memory companions. A mount still using them keeps
/// its open copy; the next open starts afresh.
pub fn remove(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(name));
    }
}

/// Bytes the tables use (pages not on the free list), and the file's size in pages.
pub fn used_bytes(conn: &Connection) -> rusqlite::Result<(u64, u64)> {
    let number = |pragma: &str| -> rusqlite::Result<u64> {
        let value: i64 = conn.query_row(pragma, [], |r| r.get(0))?;
        Ok(u64::try_from(value).unwrap_or(0))
    };
    let pages = number("PRAGMA page_count")?;
    let free = number("PRAGMA freelist_count")?;
    let size = number("PRAGMA page_size")?;
    Ok((pages.saturating_sub(free) * size, pages * size))
}

/// A number kept in `meta`.
pub fn meta_number(conn: &Connection, name: &str) -> rusqlite::Result<i64> {
    conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
        r.get(0)
    })
    .optional()
    .map(|v| v.unwrap_or(0))
}

pub fn set_meta_number(conn: &Connection, name: &str, value: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (name, value) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        rusqlite::params![name, value],
    )
    .map(drop)
}
