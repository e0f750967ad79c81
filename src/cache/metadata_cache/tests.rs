use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, UNIX_EPOCH};

use super::*;

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

fn entry(i: u64) -> VersionEntry {
    (
        format!("dir/key{i:08}"),
        version(&format!("\"{i:032x}\""), 1_700_000_000 + i),
        stored(&i.to_string()),
    )
}

fn wanted(entries: &[VersionEntry]) -> Vec<(String, ObjectVersionId)> {
    entries
        .iter()
        .map(|(k, v, _)| (k.clone(), v.clone()))
        .collect()
}

#[test]
fn an_entry_answers_only_its_version_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cache = MetadataCache::open(dir.path(), "e b", 1 << 30).unwrap();
    cache.put("k", &version("\"a\"", 100), &stored("33188"));
    cache.flush();
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
    let mut bigger = version("\"a\"", 100);
    bigger.size = 4;
    assert_eq!(cache.get("k", &bigger), None, "another size");
    let mut fractional = version("\"a\"", 100);
    fractional.last_modified += Duration::from_millis(500);
    assert!(cache.get("k", &fractional).is_some(), "seconds only");
    assert_eq!(cache.get("other", &version("\"a\"", 100)), None);
    drop(cache);
    let again = MetadataCache::open(dir.path(), "e b", 1 << 30).unwrap();
    assert_eq!(
        again.get("k", &version("\"a\"", 100)),
        Some(stored("33188"))
    );
    let other = MetadataCache::open(dir.path(), "e other", 1 << 30).unwrap();
    assert_eq!(other.entries(), 0, "another bucket's cache is another file");
    assert_eq!(again.entries(), 1, "and leaves this one alone");
}

#[test]
fn a_batch_answers_each_in_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let cache = MetadataCache::open(dir.path(), "s", 1 << 30).unwrap();
    let entries: Vec<VersionEntry> = (0..3000).map(entry).collect();
    cache.put_many(entries.iter().step_by(2).cloned().collect());
    cache.flush();
    // Asked in reverse order, so the answers must be put back in place.
    let mut asked = wanted(&entries);
    asked.reverse();
    let answers = cache.get_many(&asked);
    for ((key, _), answer) in asked.iter().zip(&answers) {
        let i: u64 = key["dir/key".len()..].parse().unwrap();
        let expected = i.is_multiple_of(2).then(|| stored(&i.to_string()));
        assert_eq!(*answer, expected, "{key}");
    }
    assert_eq!(cache.entries(), 1500);
}

#[test]
fn garbage_or_another_programs_file_is_started_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let path = database::path_of(dir.path(), "s");
    std::fs::write(&path, "garbage\n".repeat(1000)).unwrap();
    let cache = MetadataCache::open(dir.path(), "s", 1 << 30).unwrap();
    assert_eq!(cache.entries(), 0);
    cache.put("a", &version("\"1\"", 1), &stored("1"));
    cache.flush();
    assert!(cache.get("a", &version("\"1\"", 1)).is_some());
    drop(cache);

    // A SQLite file, but not ours.
    database::remove(&path);
    let other = Connection::open(&path).unwrap();
    other
        .execute_batch(
            "CREATE TABLE object_versions (key TEXT); INSERT INTO object_versions VALUES ('a');",
        )
        .unwrap();
    drop(other);
    let cache = MetadataCache::open(dir.path(), "s", 1 << 30).unwrap();
    assert_eq!(cache.entries(), 0);
    assert!(cache.get("a", &version("\"1\"", 1)).is_none());
}

/// Overwrites `len` bytes at `at` with a pattern that is no valid row or page.
fn damage(path: &Path, at: u64, len: usize) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(&vec![0xa5; len], at).unwrap();
}

#[test]
fn a_damaged_file_never_answers_wrong_and_is_started_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let entries: Vec<VersionEntry> = (0..5000).map(entry).collect();
    let path = {
        let cache = MetadataCache::open(dir.path(), "s", 1 << 30).unwrap();
        cache.put_many(entries.clone());
        cache.flush();
        cache.path().to_path_buf()
    };
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size > 64 * 4096, "{size} bytes: checkpointed into the file");
    // Bytes inside row contents (which SQLite's structure checks do not cover), and whole
    // pages further on.
    for at in (8192..size).step_by(24_000) {
        damage(&path, at + 1000, 40);
    }
    damage(&path, size / 2, 3 * 4096);
    let cache = MetadataCache::open(dir.path(), "s", 1 << 30).unwrap();
    let mut right = 0;
    for chunk in entries.chunks(1000) {
        let answers = cache.get_many(&wanted(chunk));
        for ((_, _, expected), answer) in chunk.iter().zip(answers) {
            if let Some(answer) = answer {
                assert_eq!(answer, *expected, "a damaged row answered");
                right += 1;
            }
        }
    }
    assert!(right < entries.len(), "the damage was seen");
    drop(cache);
    // Whatever the damage made of it, the next opens answer only what is right.
    let cache = MetadataCache::open(dir.path(), "s", 1 << 30).unwrap();
    for chunk in entries.chunks(1000) {
        for ((_, _, expected), answer) in chunk.iter().zip(cache.get_many(&wanted(chunk))) {
            assert!(answer.is_none_or(|a| a == *expected));
        }
    }
    cache.put("new", &version("\"n\"", 1), &stored("1"));
    cache.flush();
    drop(cache);
    let cache = MetadataCache::open(dir.path(), "s", 1 << 30).unwrap();
    assert!(
        cache.get("new", &version("\"n\"", 1)).is_some(),
        "the file (or its fresh start) is written again"
    );

    // A file cut short.
    drop(cache);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(size / 3).unwrap();
    drop(file);
    let cache = MetadataCache::open(dir.path(), "s", 1 << 30).unwrap();
    for chunk in entries.chunks(1000) {
        for ((_, _, expected), answer) in chunk.iter().zip(cache.get_many(&wanted(chunk))) {
            assert!(answer.is_none_or(|a| a == *expected));
        }
    }
}

/// Writes entries `0..n` in batches of 500, then one more at a time until `settled` (the sweep
/// runs between writes; more writes let it finish), and returns the first `n`.
fn fill(cache: &MetadataCache, n: u64, settled: impl Fn() -> bool) -> Vec<VersionEntry> {
    let entries: Vec<VersionEntry> = (0..n).map(entry).collect();
    for chunk in entries.chunks(500) {
        cache.put_many(chunk.to_vec());
        cache.flush();
    }
    for _ in 0..200 {
        if settled() {
            break;
        }
        cache.put_many(vec![entry(n)]);
        cache.flush();
    }
    entries
}

#[test]
fn the_tables_stay_within_the_bound_keeping_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let budget = 1 << 20;
    let cache = MetadataCache::open(dir.path(), "s", budget).unwrap();
    let entries = fill(&cache, 40_000, || cache.used_bytes() <= budget);
    assert!(
        cache.used_bytes() <= budget,
        "{} bytes, {} entries",
        cache.used_bytes(),
        cache.entries()
    );
    let newest = cache.get_many(&wanted(&entries[39_000..]));
    assert!(newest.iter().all(Option::is_some), "the newest are kept");
    let oldest = cache.get_many(&wanted(&entries[..1000]));
    assert!(oldest.iter().all(Option::is_none), "the oldest went");
    let kept = cache.entries();
    assert!(kept > 3000, "{kept} kept: the bound is used, not emptied");
    drop(cache);
    let file = std::fs::metadata(database::path_of(dir.path(), "s"))
        .unwrap()
        .len();
    assert!(
        file <= budget + budget / 4 + (64 << 10),
        "{file} bytes on disk"
    );
}

#[test]
fn a_lowered_bound_shrinks_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let entries: Vec<VersionEntry> = (0..30_000).map(entry).collect();
    {
        let cache = MetadataCache::open(dir.path(), "s", 1 << 30).unwrap();
        cache.put_many(entries.clone());
        cache.flush();
    }
    let path = database::path_of(dir.path(), "s");
    let budget = 256 << 10;
    let cache = MetadataCache::open(dir.path(), "s", budget).unwrap();
    for _ in 0..200 {
        cache.put_many(vec![entry(30_000)]);
        cache.flush();
        if std::fs::metadata(&path).unwrap().len() <= budget + budget / 4 + (64 << 10) {
            break;
        }
    }
    assert!(cache.used_bytes() <= budget);
    let vacuum: i64 = lock(&cache.reader)
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .unwrap();
    assert_eq!(vacuum, 2, "incremental");
    let file = std::fs::metadata(&path).unwrap().len();
    assert!(
        file <= budget + budget / 4 + (64 << 10),
        "{file} bytes on disk"
    );
}

#[test]
fn two_handles_of_one_bucket_both_read_and_write() {
    let dir = tempfile::tempdir().unwrap();
    let first = MetadataCache::open(dir.path(), "s", 1 << 30).unwrap();
    let second = MetadataCache::open(dir.path(), "s", 1 << 30).unwrap();
    first.put("a", &version("\"1\"", 1), &stored("1"));
    first.flush();
    second.put("b", &version("\"2\"", 2), &stored("2"));
    second.flush();
    assert!(second.get("a", &version("\"1\"", 1)).is_some());
    assert!(first.get("b", &version("\"2\"", 2)).is_some());
    drop((first, second));
    let third = MetadataCache::open(dir.path(), "s", 1 << 30).unwrap();
    assert_eq!(third.entries(), 2);
}

/// Runs this test binary's test `name` alone with `role` in the environment: the child side
/// of a test that needs another process.
fn child(name: &str, role: &str, dir: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            &format!("cache::metadata_cache::tests::{name}"),
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ROLE, role)
        .env(CHILD_DIR, dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

const CHILD_ROLE: &str = "SCRIBEFS_METADATA_CACHE_TEST_CHILD";
const CHILD_DIR: &str = "SCRIBEFS_METADATA_CACHE_TEST_DIR";

fn child_role() -> Option<(String, PathBuf)> {
    Some((
        std::env::var(CHILD_ROLE).ok()?,
        std::env::var_os(CHILD_DIR)?.into(),
    ))
}

/// Reads the child's output until a line with `prefix`.
fn wait_for_line(lines: &mut impl Iterator<Item = std::io::Result<String>>, prefix: &str) {
    let mut said = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        // The harness may print its own words first on the line.
        if line.contains(prefix) {
            return;
        }
        said.push(line);
    }
    panic!("the child ended before saying {prefix:?}: {said:#?}");
}

#[test]
fn another_process_reads_and_writes_the_same_file() {
    if let Some((role, dir)) = child_role() {
        assert_eq!(role, "second mount");
        let cache = MetadataCache::open(&dir, "s", 1 << 30).unwrap();
        assert_eq!(cache.get("a", &version("\"1\"", 1)), Some(stored("1")));
        cache.put("b", &version("\"2\"", 2), &stored("2"));
        cache.flush();
        println!("written");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let first = MetadataCache::open(dir.path(), "s", 1 << 30).unwrap();
    first.put("a", &version("\"1\"", 1), &stored("1"));
    first.flush();
    let mut other = child(
        "another_process_reads_and_writes_the_same_file",
        "second mount",
        dir.path(),
    );
    let mut lines = BufReader::new(other.stdout.take().unwrap()).lines();
    wait_for_line(&mut lines, "written");
    assert!(other.wait().unwrap().success());
    assert_eq!(first.get("b", &version("\"2\"", 2)), Some(stored("2")));
}

#[test]
fn a_writer_killed_mid_write_leaves_a_cache_that_opens() {
    if let Some((role, dir)) = child_role() {
        assert_eq!(role, "writer");
        let cache = MetadataCache::open(&dir, "s", 1 << 30).unwrap();
        for round in 0u64.. {
            cache.put_many((round * 2000..(round + 1) * 2000).map(entry).collect());
            cache.flush();
            println!("flushed {round}");
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut writer = child(
        "a_writer_killed_mid_write_leaves_a_cache_that_opens",
        "writer",
        dir.path(),
    );
    let mut lines = BufReader::new(writer.stdout.take().unwrap()).lines();
    wait_for_line(&mut lines, "flushed 5");
    // SIGKILL while the loop writes the next rounds.
    writer.kill().unwrap();
    writer.wait().unwrap();
    let cache = MetadataCache::open(dir.path(), "s", 1 << 30).unwrap();
    let committed: Vec<VersionEntry> = (0..6 * 2000).map(entry).collect();
    for chunk in committed.chunks(1000) {
        assert!(
            cache.get_many(&wanted(chunk)).iter().all(Option::is_some),
            "every flushed entry survives"
        );
    }
    cache.put("after", &version("\"1\"", 1), &stored("1"));
    cache.flush();
    assert!(cache.get("after", &version("\"1\"", 1)).is_some());
}

fn upload(key: &str, etag: &str, started: u64, finished: u64) -> OwnUpload {
    OwnUpload {
        key: key.into(),
        etag: etag.into(),
        size: Some(3),
        stored: stored("33261"),
        started: UNIX_EPOCH + Duration::from_millis(started),
        finished: UNIX_EPOCH + Duration::from_millis(finished),
    }
}

#[test]
fn an_upload_is_adopted_by_the_listing_that_shows_it_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let cache = MetadataCache::open(dir.path(), "s", 1 << 30).unwrap();
    cache.record_uploads(vec![
        upload("mine", "\"e\"", 100_400, 101_200),
        upload("copied-onto-itself", "\"e\"", 100_400, 101_200),
        upload("replaced", "\"e\"", 100_400, 101_200),
    ]);
    cache.flush();
    drop(cache);
    let cache = MetadataCache::open(dir.path(), "s", 1 << 30).unwrap();
    let listed = vec![
        ("mine".to_string(), version("\"e\"", 101)),
        // Another client's CopyObject onto itself keeps the ETag, moves LastModified.
        ("copied-onto-itself".to_string(), version("\"e\"", 110)),
        ("replaced".to_string(), version("\"f\"", 101)),
    ];
    let answers = cache.get_many(&listed);
    assert_eq!(answers, vec![Some(stored("33261")), None, None]);
    cache.flush();
    drop(cache);
    let cache = MetadataCache::open(dir.path(), "s", 1 << 30).unwrap();
    assert_eq!(cache.entries(), 1, "adopted as a version entry");
    assert_eq!(
        cache.get("mine", &version("\"e\"", 101)),
        Some(stored("33261"))
    );
    let uploads: i64 = lock(&cache.reader)
        .query_row("SELECT count(*) FROM own_uploads", [], |r| r.get(0))
        .unwrap();
    assert_eq!(uploads, 1, "the adopted and the superseded upload are gone");
    assert_eq!(
        cache.get("replaced", &version("\"e\"", 101)),
        Some(stored("33261")),
        "a listing older than the upload does not drop it"
    );
}

/// Segments `0..n` indexed with 500 key hashes each (about 4 KiB a row).
fn index_segments(index: &mut LedgerIndex, ids: std::ops::Range<u64>) {
    let rows: Vec<(u64, ObjectVersionId, Vec<u64>)> = ids
        .map(|id| {
            (
                id,
                version("\"s\"", id),
                (0..500).map(|h| h * 7 + id).collect(),
            )
        })
        .collect();
    for chunk in rows.chunks(64) {
        index.put_many(chunk);
    }
}

/// The ledger index's rows and a mount's entries share one bound and one age: whichever
/// writes past it, the oldest written rows of both go first.
#[test]
fn the_ledger_index_counts_against_the_bound_and_its_oldest_rows_go_first() {
    let dir = tempfile::tempdir().unwrap();
    let budget = 1 << 20;
    let mut index = LedgerIndex::open(dir.path(), "s", budget).unwrap();
    // 1,000 rows of 4 KiB: four times the bound, written by the index alone.
    index_segments(&mut index, 0..1000);
    let used = database::used_bytes(&database::open(index.path(), "s", 64).unwrap())
        .unwrap()
        .0;
    assert!(used <= budget, "{used} bytes used");
    let kept = index.entries();
    assert!((100..1000).contains(&kept), "{kept} rows kept");
    let asked = |ids: std::ops::Range<u64>| -> Vec<(u64, ObjectVersionId)> {
        ids.map(|id| (id, version("\"s\"", id))).collect()
    };
    assert!(
        index.get_many(&asked(0..100)).iter().all(Option::is_none),
        "the oldest went"
    );
    assert!(
        index
            .get_many(&asked(990..1000))
            .iter()
            .all(Option::is_some),
        "the newest stay"
    );

    // A mount writing past the bound now sweeps the index's rows, older than its own.
    let cache = MetadataCache::open(dir.path(), "s", budget).unwrap();
    let entries = fill(&cache, 20_000, || {
        index.entries() == 0 && cache.used_bytes() <= budget
    });
    assert_eq!(index.entries(), 0, "the index's rows were the oldest");
    assert!(cache.used_bytes() <= budget, "{} bytes", cache.used_bytes());
    let newest = cache.get_many(&wanted(&entries[19_500..]));
    assert!(
        newest.iter().all(Option::is_some),
        "the mount's newest are kept"
    );
}
