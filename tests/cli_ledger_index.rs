//! `scribefs segments find` with its local index (the `segment_keys` table of the bucket's
//! metadata database), on the dev server and on moto: an entry answers only for the segment
//! version it was read at, new segments are indexed on the way, and a deleted or damaged
//! index file never changes the answer. On the dev server, request counts are exact, and
//! segments over 100 MB show that `--max-in-flight-mib` bounds what find, verify, pull and
//! push hold, and that pull streams large files.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use scribefs::segment::codec::demo_segment;
use scribefs::segment::{meta_key, segment_key};
use scribefs::store::PutOptions;

use common::backend::CliTarget;

macro_rules! for_each_target {
    ($($case:ident),* $(,)?) => {
        mod devserver {
            $(
                #[test]
                fn $case() {
                    let target = crate::common::backend::CliTarget::devserver(&["ledger"]);
                    crate::$case(&crate::Ledger::new(target));
                }
            )*
        }

        mod moto {
            $(
                #[test]
                fn $case() {
                    let target = crate::common::backend::CliTarget::moto(stringify!($case));
                    crate::$case(&crate::Ledger::new(target));
                }
            )*
        }
    };
}

for_each_target!(
    a_replaced_segment_is_found_under_its_new_content,
    a_segment_added_after_indexing_is_found,
    a_deleted_or_damaged_index_still_answers_right,
    verify_changed_catches_a_segment_corrupted_after_it_was_verified,
);

struct Ledger {
    target: CliTarget,
    /// $XDG_CACHE_HOME of every command: the index lives below it.
    cache: tempfile::TempDir,
}

impl Ledger {
    fn new(target: CliTarget) -> Ledger {
        Ledger {
            target,
            cache: tempfile::tempdir().unwrap(),
        }
    }

    fn command(&self) -> Command {
        let mut command = self.target.scribefs();
        command.env("XDG_CACHE_HOME", self.cache.path());
        command
    }

    /// Archives a segment whose keys are `keys` (plus a few demo ones), through the CLI.
    fn archive(&self, id: u64, keys: &[&str], seed: u64) {
        let mut segment = demo_segment(id, 3, seed);
        for key in keys {
            segment
                .data
                .insert(key.as_bytes().to_vec(), format!("{id}:{seed}").into_bytes());
        }
        segment.size = segment.data.iter().map(|(k, v)| k.len() + v.len()).sum();
        let archived = segment.archive(seed.is_multiple_of(2), 1).unwrap();
        let file = self.cache.path().join("upload.bin");
        std::fs::write(&file, &archived.body).unwrap();
        let mut command = self.command();
        command
            .args(["segments", "put", &format!("{id:x}")])
            .arg(&file);
        let output = command.output().unwrap();
        assert!(output.status.success(), "{output:?}");
    }

    /// Stores `body` under `key` through the library's S3 client (segments with sidecars).
    fn put(&self, key: &str, body: &[u8]) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let store = scribefs::cli::connect(&self.target.config).await.unwrap();
            store
                .put(key, Bytes::copy_from_slice(body), PutOptions::default())
                .await
                .unwrap();
        });
    }

    /// `verify` with `args`: (success, stdout, stderr), and the GETs it made on the dev server.
    fn verify(&self, args: &[&str]) -> (bool, String, String, Option<u64>) {
        if let Some(server) = self.target.server() {
            server.reset_stats();
        }
        let mut command = self.command();
        command.args(["segments", "verify"]).args(args);
        let output = command.output().unwrap();
        let gets = self.target.server().map(|s| s.stats().get);
        (
            output.status.success(),
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8(output.stderr).unwrap(),
            gets,
        )
    }

    fn find(&self, key: &str, extra: &[&str]) -> String {
        let mut command = self.command();
        command.args(["segments", "find", key]).args(extra);
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "find {key} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// (LIST, GET) requests of `find KEY`, on the dev server; moto counts nothing.
    fn find_counted(&self, key: &str, expected: &str) -> Option<(u64, u64)> {
        let server = self.target.server();
        if let Some(server) = server {
            server.reset_stats();
        }
        assert_eq!(self.find(key, &[]), expected, "find {key}");
        server.map(|s| {
            let stats = s.stats();
            (stats.list, stats.get)
        })
    }

    /// The database files the index lives in.
    fn index_files(&self) -> Vec<PathBuf> {
        let dir = self.cache.path().join("scribefs").join("metadata");
        let files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| is_database(p))
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        files
    }
}

fn is_database(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "sqlite")
}

fn a_replaced_segment_is_found_under_its_new_content(ledger: &Ledger) {
    ledger.archive(1, &["alpha"], 1);
    ledger.archive(2, &["beta"], 2);
    ledger.archive(3, &["gamma"], 3);
    // Cold: every segment read, and indexed.
    if let Some(counts) = ledger.find_counted("alpha", "0000000000000001\n") {
        assert_eq!(counts, (1, 3));
    }
    // Warm: only the holder is fetched.
    if let Some(counts) = ledger.find_counted("alpha", "0000000000000001\n") {
        assert_eq!(counts, (1, 1));
    }
    if let Some(counts) = ledger.find_counted("absent", "") {
        assert_eq!(counts, (1, 0));
    }
    // Segment 1 now holds beta and no longer alpha: its old entry must not answer.
    ledger.archive(1, &["beta"], 11);
    if let Some(counts) = ledger.find_counted("alpha", "") {
        assert_eq!(counts, (1, 1), "only the replaced segment is read again");
    }
    assert_eq!(
        ledger.find("beta", &[]),
        "0000000000000002\n0000000000000001\n"
    );
    if let Some(counts) = ledger.find_counted("beta", "0000000000000002\n0000000000000001\n") {
        assert_eq!(counts, (1, 2));
    }
    assert_eq!(
        ledger.find("beta", &["--no-index"]),
        "0000000000000002\n0000000000000001\n"
    );
}

fn a_segment_added_after_indexing_is_found(ledger: &Ledger) {
    ledger.archive(0x10, &["shared"], 1);
    ledger.archive(0x20, &["other"], 2);
    assert_eq!(ledger.find("shared", &[]), "0000000000000010\n");
    ledger.archive(0x30, &["shared"], 3);
    ledger.archive(0x05, &["shared"], 4);
    if let Some(counts) = ledger.find_counted(
        "shared",
        "0000000000000030\n0000000000000010\n0000000000000005\n",
    ) {
        assert_eq!(
            counts,
            (1, 3),
            "the indexed holder and the two new segments"
        );
    }
    if let Some(counts) = ledger.find_counted("other", "0000000000000020\n") {
        assert_eq!(counts, (1, 1));
    }
}

fn a_deleted_or_damaged_index_still_answers_right(ledger: &Ledger) {
    for id in 1..=4u64 {
        ledger.archive(id, &[if id % 2 == 0 { "even" } else { "odd" }], id);
    }
    assert_eq!(
        ledger.find("even", &[]),
        "0000000000000004\n0000000000000002\n"
    );
    for file in ledger.index_files() {
        std::fs::remove_file(file).unwrap();
    }
    assert_eq!(
        ledger.find("odd", &[]),
        "0000000000000003\n0000000000000001\n"
    );
    // Rebuilt by that search: a warm one reads only the holders.
    if let Some(counts) = ledger.find_counted("even", "0000000000000004\n0000000000000002\n") {
        assert_eq!(counts, (1, 2));
    }
    for file in ledger.index_files() {
        let size = std::fs::metadata(&file).unwrap().len() as usize;
        std::fs::write(&file, vec![0x5a; size.max(4096)]).unwrap();
    }
    assert_eq!(
        ledger.find("odd", &[]),
        "0000000000000003\n0000000000000001\n"
    );
    if let Some(counts) = ledger.find_counted("even", "0000000000000004\n0000000000000002\n") {
        assert_eq!(
            counts,
            (1, 2),
            "the damaged file was started afresh and rebuilt"
        );
    }
}

fn verify_changed_catches_a_segment_corrupted_after_it_was_verified(ledger: &Ledger) {
    let mut archived = Vec::new();
    for id in 1..=3u64 {
        let segment = demo_segment(id, 5, id).archive(id == 2, 1).unwrap();
        ledger.put(&segment_key(id), &segment.body);
        ledger.put(&meta_key(id), &segment.metadata_json());
        archived.push(segment);
    }
    let skipped = |n: usize| format!("{n} skipped (unchanged since verified on this machine)");
    let (ok, out, _, gets) = ledger.verify(&["--changed"]);
    assert!(ok);
    assert_eq!(out, format!("ok: 3 segment(s) verified, {}\n", skipped(0)));
    assert!(gets.is_none_or(|g| g == 6));
    let (ok, out, _, gets) = ledger.verify(&["--changed"]);
    assert!(ok);
    assert_eq!(out, format!("ok: 0 segment(s) verified, {}\n", skipped(3)));
    assert!(gets.is_none_or(|g| g == 0), "{gets:?}");

    // Corrupted after it was verified: its version moved, so it is checked, and again on
    // every run until it passes.
    ledger.put(&segment_key(2), b"not a segment");
    for _ in 0..2 {
        let (ok, out, err, gets) = ledger.verify(&["--changed"]);
        assert!(!ok);
        assert!(out.starts_with("segment 0000000000000002: "), "{out}");
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(
            err.contains(&format!("1 of 1 segment(s) are bad, {}", skipped(2))),
            "{err}"
        );
        assert!(gets.is_none_or(|g| g == 2), "{gets:?}");
    }
    // A sidecar whose version changed is checked again too.
    let mut sidecar = archived[2].metadata_json().to_vec();
    sidecar.push(b'\n');
    ledger.put(&meta_key(3), &sidecar);
    let (ok, _, err, _) = ledger.verify(&["--changed"]);
    assert!(!ok);
    assert!(
        err.contains(&format!("1 of 2 segment(s) are bad, {}", skipped(1))),
        "{err}"
    );

    ledger.put(&segment_key(2), &archived[1].body);
    let (ok, out, _, _) = ledger.verify(&["--changed"]);
    assert!(ok);
    assert_eq!(out, format!("ok: 1 segment(s) verified, {}\n", skipped(2)));
    // A plain verify checks everything.
    let (ok, out, _, gets) = ledger.verify(&[]);
    assert!(ok);
    assert_eq!(out, "ok: 3 segment(s) verified\n");
    assert!(gets.is_none_or(|g| g == 6));
}

/// What one run of the CLI left: its stdout and its stderr.
struct Measured {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Measured {
    /// A number the command's debug lines give as `field=N`.
    fn peak(&self, field: &str) -> u64 {
        let line = self
            .stderr
            .lines()
            .find(|l| l.contains(&format!("{field}=")))
            .unwrap_or_else(|| panic!("no {field} in {}", self.stderr));
        let value = line.split(&format!("{field}=")).nth(1).unwrap();
        let value = value.strip_prefix("Some(").unwrap_or(value);
        let digits: String = value.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap()
    }

    /// The most bytes of segments the command held at once.
    fn peak_in_flight(&self) -> u64 {
        self.peak("peak_bytes")
    }

    /// The command's peak RSS (its own VmHWM: a child's rusage would count the memory of the
    /// test process it was forked from).
    fn peak_rss(&self) -> u64 {
        self.peak("peak_rss_bytes")
    }
}

impl Ledger {
    /// Runs `scribefs ARGS` with the debug lines of find, verify, pull and push on.
    fn measured(&self, args: &[&str]) -> Measured {
        let mut command = self.command();
        command
            .args([
                "--log-level",
                "scribefs::cli::ledger=debug,scribefs::cli::bulk=debug",
            ])
            .args(args);
        let output = command.output().unwrap();
        Measured {
            success: output.status.success(),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    }
}

impl Ledger {
    /// `segments pull` into a new directory with `args`; it must succeed.
    fn pull(&self, args: &[&str]) -> (tempfile::TempDir, Measured) {
        let copy = tempfile::tempdir().unwrap();
        let dir = copy.path().to_str().unwrap();
        let run = self.measured(&[&["segments", "pull", dir], args].concat());
        assert!(run.success, "{}", run.stderr);
        (copy, run)
    }
}

/// A plain segment of `entries` values of 1 MiB each (101: more than 100 MB stored).
fn large_segment(id: u64, entries: usize) -> scribefs::segment::codec::ArchivedSegment {
    let mut segment = demo_segment(id, 0, id);
    for n in 0..entries {
        let value = vec![(id as u8).wrapping_add(n as u8); 1 << 20];
        segment
            .data
            .insert(format!("big:{n:04}").into_bytes(), value);
    }
    segment.size = segment.data.iter().map(|(k, v)| k.len() + v.len()).sum();
    segment.archive(false, 1).unwrap()
}

/// `find` and `verify` hold no more bytes of segments at once than `--max-in-flight-mib`
/// (a segment larger than all of it alone), whatever `--parallel`: checked exactly on the
/// command's own count, and on its peak RSS against a run whose budget lets all three in.
#[test]
fn segments_larger_than_100_mb_stay_within_the_in_flight_budget() {
    const MIB: u64 = 1 << 20;
    let ledger = Ledger::new(CliTarget::devserver(&["ledger"]));
    let mut sizes = Vec::new();
    for id in 1..=3u64 {
        let segment = large_segment(id, 101);
        assert!(segment.body.len() > 100_000_000);
        ledger.put(&segment_key(id), &segment.body);
        ledger.put(&meta_key(id), &segment.metadata_json());
        sizes.push((
            segment.body.len() as u64,
            segment.metadata_json().len() as u64,
        ));
    }
    let largest = sizes.iter().map(|(data, _)| *data).max().unwrap();
    let largest_pair = sizes.iter().map(|(d, m)| d + m).max().unwrap();
    let all_data: u64 = sizes.iter().map(|(data, _)| *data).sum();

    let verify = ledger.measured(&[
        "segments",
        "verify",
        "--parallel",
        "8",
        "--max-in-flight-mib",
        "64",
    ]);
    assert!(verify.success, "{}", verify.stderr);
    assert_eq!(verify.stdout, "ok: 3 segment(s) verified\n");
    assert_eq!(
        verify.peak_in_flight(),
        largest_pair,
        "one segment at a time"
    );

    let narrow = ledger.measured(&[
        "segments",
        "find",
        "absent",
        "--no-index",
        "--parallel",
        "8",
        "--max-in-flight-mib",
        "64",
    ]);
    assert!(narrow.success, "{}", narrow.stderr);
    assert_eq!(narrow.peak_in_flight(), largest, "one segment at a time");

    let wide = ledger.measured(&[
        "segments",
        "find",
        "big:0000",
        "--no-index",
        "--parallel",
        "8",
        "--max-in-flight-mib",
        "1024",
    ]);
    assert!(wide.success, "{}", wide.stderr);
    assert_eq!(
        wide.stdout,
        "0000000000000003\n0000000000000002\n0000000000000001\n"
    );
    assert_eq!(wide.peak_in_flight(), all_data, "all three at once");

    // Memory follows the count: the stored segment and its decoded copy, and the process's
    // own (well under 64 MiB), against all three stored at once.
    for run in [&verify, &narrow] {
        assert!(
            run.peak_rss() < 2 * largest + 64 * MIB,
            "peak RSS {} MiB",
            run.peak_rss() / MIB
        );
    }
    assert!(
        wide.peak_rss() > all_data,
        "peak RSS {} MiB",
        wide.peak_rss() / MIB
    );
}

/// pull streams each file to disk, and push's uploads share one `--max-in-flight-mib`
/// budget: with 8 jobs over three segments of 106 MB, neither holds a segment, and push's
/// peak follows its budget.
#[test]
fn pull_and_push_of_segments_larger_than_100_mb_stay_bounded() {
    const MIB: u64 = 1 << 20;
    let ledger = Ledger::new(CliTarget::devserver(&["ledger"]));
    let local = tempfile::tempdir().unwrap();
    for id in 1..=3u64 {
        let segment = large_segment(id, 101);
        let data = scribefs::segment::file_name(id, scribefs::segment::SegmentFile::Data);
        std::fs::write(local.path().join(data), &segment.body).unwrap();
        let meta = scribefs::segment::file_name(id, scribefs::segment::SegmentFile::Meta);
        std::fs::write(local.path().join(meta), segment.metadata_json()).unwrap();
    }
    let dir = local.path().to_str().unwrap();
    let push = |budget: &str| {
        let run = ledger.measured(&[
            "segments",
            "push",
            dir,
            "--jobs",
            "8",
            "--max-in-flight-mib",
            budget,
        ]);
        assert!(run.success, "{}", run.stderr);
        run.peak_rss()
    };
    let narrow = push("32");
    let (copy, pull) = ledger.pull(&["--jobs", "8"]);
    for id in 1..=3u64 {
        let name = scribefs::segment::file_name(id, scribefs::segment::SegmentFile::Data);
        let pulled = std::fs::read(copy.path().join(&name)).unwrap();
        assert!(
            pulled == std::fs::read(local.path().join(&name)).unwrap(),
            "{name}"
        );
    }
    // Objects now identical are skipped: delete them so the second push copies again.
    for id in 1..=3u64 {
        ledger.put(&segment_key(id), b"older");
    }
    let wide = push("1024");
    // The process's own memory is well under 64 MiB; a segment is 106 MB.
    assert!(
        narrow < 32 * MIB + 64 * MIB,
        "push peak RSS {} MiB",
        narrow / MIB
    );
    assert!(
        pull.peak_rss() < 64 * MIB,
        "pull peak RSS {} MiB",
        pull.peak_rss() / MIB
    );
    assert!(
        wide > narrow + 64 * MIB,
        "push peak RSS {} MiB with a 1024 MiB budget, {} MiB with 32",
        wide / MIB,
        narrow / MIB
    );
}

/// pull holds no more than `--max-in-flight-mib` of files at once, whatever `--jobs`: files
/// of up to 16 MiB are read whole (their MD5 is checked before a byte is written) and count
/// in it; a segment over 100 MB streams beside them. Checked on the command's own count and
/// on its peak RSS (24 files of 4 MiB would be 96 MiB at once with 64 jobs).
#[test]
fn pull_holds_no_more_than_its_in_flight_budget() {
    const MIB: u64 = 1 << 20;
    let ledger = Ledger::new(CliTarget::devserver(&["ledger"]));
    let mut rng = fastrand::Rng::with_seed(25);
    let mut files = Vec::new();
    for id in 1..=24u64 {
        let mut body = vec![0u8; 4 << 20];
        rng.fill(&mut body);
        ledger.put(&segment_key(id), &body);
        files.push((id, body));
    }
    let big = large_segment(100, 101);
    assert!(big.body.len() > 100_000_000);
    ledger.put(&segment_key(100), &big.body);
    files.push((100, big.body));
    let (copy, pull) = ledger.pull(&["--jobs", "64", "--max-in-flight-mib", "8"]);
    for (id, body) in &files {
        let name = scribefs::segment::file_name(*id, scribefs::segment::SegmentFile::Data);
        let pulled = std::fs::read(copy.path().join(&name)).unwrap();
        assert!(pulled == *body, "{name}");
    }
    let peak = pull.peak_in_flight();
    assert!((4 * MIB..=8 * MIB).contains(&peak), "peak {peak} bytes");
    assert!(
        pull.peak_rss() < 8 * MIB + 64 * MIB,
        "pull peak RSS {} MiB",
        pull.peak_rss() / MIB
    );
}
