//! `scribefs segments cat / find / verify` against the dev server over HTTP, on segments made by
//! the ledger's own encoding (bincode, gzip when archived, `.meta.json` sidecars): plain and
//! gzip, non-contiguous ids, one of about 50 MB, and every kind of bad input.

mod common;

use std::collections::HashMap;
use std::process::{Command, Output};

use bytes::Bytes;
use scribefs::segment::codec::{ArchivedSegment, Segment, demo_segment, demo_segments};
use scribefs::segment::{meta_key, segment_key};
use scribefs::store::{ObjectStore, PutOptions};

use common::backend::CliTarget;

const BUCKET: &str = "ledger";

struct Ledger {
    target: CliTarget,
}

impl Ledger {
    fn new() -> Ledger {
        Ledger {
            target: CliTarget::devserver(&[BUCKET]),
        }
    }

    fn put(&self, key: &str, body: &[u8]) {
        let server = self.target.server().unwrap();
        let store = server.bucket(BUCKET);
        server
            .runtime
            .block_on(store.put(key, Bytes::copy_from_slice(body), PutOptions::default()))
            .unwrap();
    }

    fn archive(&self, segment: &ArchivedSegment) {
        self.put(&segment_key(segment.id), &segment.body);
        self.put(&meta_key(segment.id), &segment.metadata_json());
    }

    fn segments(&self, args: &[&str]) -> Output {
        let mut command: Command = self.target.scribefs();
        command.arg("segments").args(args);
        command.output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.segments(args);
        assert!(
            output.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Fails, with exactly one line on stderr; returns (stdout, that line).
    fn fails(&self, args: &[&str]) -> (String, String) {
        let output = self.segments(args);
        assert!(!output.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr:?}");
        assert!(stderr.starts_with("scribefs: error: "), "{stderr:?}");
        (
            String::from_utf8(output.stdout).unwrap(),
            stderr.trim_end().to_string(),
        )
    }

    fn stats(&self) -> scribefs::devserver::RequestStats {
        self.target.server().unwrap().stats()
    }

    fn reset_stats(&self) {
        self.target.server().unwrap().reset_stats()
    }
}

/// Parses `cat` output back into raw entries, checking the documented shape of every line.
fn entries_of(jsonl: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    use base64::Engine;
    let field = |object: &serde_json::Map<String, serde_json::Value>, name: &str| match (
        object.get(name),
        object.get(&format!("{name}_base64")),
    ) {
        (Some(text), None) => text.as_str().unwrap().as_bytes().to_vec(),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap())
            .unwrap(),
        other => panic!("{name}: {other:?}"),
    };
    jsonl
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let object = value.as_object().unwrap();
            assert_eq!(object.len(), 2, "{line}");
            (field(object, "key"), field(object, "value"))
        })
        .collect()
}

fn sorted(data: &HashMap<Vec<u8>, Vec<u8>>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut entries: Vec<_> = data.clone().into_iter().collect();
    entries.sort();
    entries
}

/// A segment as the ledger builds it: `size` is the sum of key and value lengths.
fn segment_of(segment_id: u64, timestamp: u64, data: HashMap<Vec<u8>, Vec<u8>>) -> Segment {
    let size = data.iter().map(|(k, v)| k.len() + v.len()).sum();
    Segment {
        segment_id,
        timestamp,
        data,
        size,
    }
}

fn hex(id: u64) -> String {
    format!("{id:016x}")
}

#[test]
fn cat_decodes_plain_and_gzip_segments_and_raw_is_the_stored_bytes() {
    let ledger = Ledger::new();
    let archived = demo_segments(6, 11).unwrap();
    for segment in &archived {
        ledger.archive(segment);
    }
    assert!(archived.iter().any(|s| s.metadata.is_compressed));
    assert!(archived.iter().any(|s| !s.metadata.is_compressed));
    for segment in &archived {
        let id = hex(segment.id);
        let decoded = demo_segment(segment.id, segment.metadata.entry_count, 11);
        ledger.reset_stats();
        let jsonl = ledger.ok(&["cat", &id]);
        // The segment and its sidecar, nothing else.
        assert_eq!((ledger.stats().get, ledger.stats().total()), (2, 2));
        assert_eq!(jsonl.lines().count(), segment.metadata.entry_count);
        assert_eq!(entries_of(&jsonl), sorted(&decoded.data));
        assert_eq!(ledger.ok(&["cat", &id]), jsonl, "stable output");
        let raw = ledger.segments(&["cat", &id, "--format", "raw"]);
        assert!(raw.status.success());
        assert!(raw.stdout == segment.body, "raw bytes of {id} differ");
    }
    let (_, line) = ledger.fails(&["cat", "77"]);
    assert!(
        line.contains("0000000000000077") && line.contains("not found"),
        "{line}"
    );
}

#[test]
fn binary_keys_are_base64_and_found_with_base64() {
    let ledger = Ledger::new();
    let mut data = HashMap::new();
    data.insert(vec![0xff, 0x00, 0x01], b"binary key".to_vec());
    data.insert(b"text".to_vec(), vec![0xc3, 0x28]);
    let segment = segment_of(0x51, 7, data);
    ledger.archive(&segment.archive(true, 8).unwrap());
    let jsonl = ledger.ok(&["cat", "51"]);
    assert_eq!(
        jsonl,
        "{\"key\":\"text\",\"value_base64\":\"wyg=\"}\n\
         {\"key_base64\":\"/wAB\",\"value\":\"binary key\"}\n"
    );
    assert_eq!(
        ledger.ok(&["find", "--base64", "/wAB"]),
        "0000000000000051\n"
    );
    assert_eq!(ledger.ok(&["find", "text"]), "0000000000000051\n");
    let (_, line) = ledger.fails(&["find", "--base64", "!!"]);
    assert!(line.contains("not base64"), "{line}");
}

#[test]
fn find_lists_holders_newest_first_with_one_get_per_segment() {
    let ledger = Ledger::new();
    // Non-contiguous ids; the shared key lives in three of them.
    let ids = [0x10u64, 0x13, 0x2a, 0x100, 0x1005];
    for (n, id) in ids.iter().enumerate() {
        let mut segment = demo_segment(*id, 20, 5);
        if n % 2 == 0 {
            segment
                .data
                .insert(b"shared".to_vec(), format!("v{n}").into_bytes());
        }
        segment.size = segment.data.iter().map(|(k, v)| k.len() + v.len()).sum();
        ledger.archive(&segment.archive(n == 2, 1).unwrap());
    }
    ledger.reset_stats();
    assert_eq!(
        ledger.ok(&["find", "shared", "--parallel", "2"]),
        "0000000000001005\n000000000000002a\n0000000000000010\n"
    );
    let stats = ledger.stats();
    assert_eq!((stats.list, stats.get, stats.total()), (1, 5, 6));
    assert_eq!(
        ledger.ok(&["find", "tx:0000002a:000003"]),
        "000000000000002a\n"
    );
    assert_eq!(ledger.ok(&["find", "absent"]), "");
}

#[test]
fn a_50_mb_segment_cats_finds_and_verifies() {
    let ledger = Ledger::new();
    let mut rng = fastrand::Rng::with_seed(50);
    let mut data = HashMap::new();
    for n in 0..50_000u32 {
        let value: String = (0..1000).map(|_| rng.alphanumeric()).collect();
        data.insert(format!("big:{n:08}").into_bytes(), value.into_bytes());
    }
    let segment = segment_of(0xb16, 1, data);
    let archived = segment.archive(false, 2).unwrap();
    assert!(archived.body.len() > 50_000_000, "{}", archived.body.len());
    ledger.archive(&archived);
    let jsonl = ledger.ok(&["cat", "b16"]);
    assert_eq!(jsonl.lines().count(), 50_000);
    assert_eq!(entries_of(&jsonl), sorted(&segment.data));
    assert_eq!(ledger.ok(&["find", "big:00049999"]), "0000000000000b16\n");
    assert_eq!(ledger.ok(&["verify"]), "ok: 1 segment(s) verified\n");
}

#[test]
fn verify_reports_each_bad_segment_once_and_fails() {
    let ledger = Ledger::new();
    let good = demo_segments(4, 3).unwrap();
    for segment in &good {
        ledger.archive(segment);
    }
    ledger.reset_stats();
    assert_eq!(ledger.ok(&["verify"]), "ok: 4 segment(s) verified\n");
    let stats = ledger.stats();
    assert_eq!((stats.list, stats.get, stats.total()), (1, 8, 9));

    // Truncated gzip, with the sidecar of the whole segment.
    let gz = demo_segment(0x9001, 60, 1).archive(true, 5).unwrap();
    ledger.put(&segment_key(gz.id), &gz.body[..gz.body.len() / 2]);
    ledger.put(&meta_key(gz.id), &gz.metadata_json());
    // Bytes that are not a bincode Segment.
    let junk = demo_segment(0x9002, 5, 1).archive(false, 5).unwrap();
    ledger.put(
        &segment_key(junk.id),
        b"\x02\x90\0\0\0\0\0\0not bincode at all",
    );
    ledger.put(&meta_key(junk.id), &junk.metadata_json());
    // A sidecar whose entry count is off by one.
    let mut off = demo_segment(0x9003, 9, 1).archive(false, 5).unwrap();
    off.metadata.entry_count = 10;
    ledger.archive(&off);
    // A sidecar without its segment, a segment without its sidecar, a sidecar that is no JSON.
    let lone = demo_segment(0x9004, 3, 1).archive(false, 5).unwrap();
    ledger.put(&meta_key(lone.id), &lone.metadata_json());
    let bare = demo_segment(0x9005, 3, 1).archive(true, 5).unwrap();
    ledger.put(&segment_key(bare.id), &bare.body);
    let garbled = demo_segment(0x9006, 3, 1).archive(false, 5).unwrap();
    ledger.put(&segment_key(garbled.id), &garbled.body);
    ledger.put(&meta_key(garbled.id), b"{\"segment_id\": 36870,");

    let (stdout, summary) = ledger.fails(&["verify", "--parallel", "3"]);
    assert!(summary.contains("6 of 10 segment(s) are bad"), "{summary}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{stdout}");
    let expected = [
        (0x9001, "not a complete gzip stream"),
        (0x9002, "not a bincode Segment"),
        (0x9003, "entry_count is 10 in the sidecar, 9 in the segment"),
        (0x9004, "has no segment segment-0000000000009004.bin"),
        (0x9005, "has no sidecar segment-0000000000009005.meta.json"),
        (0x9006, "sidecar is not valid JSON"),
    ];
    for (line, (id, reason)) in lines.iter().zip(expected) {
        assert!(
            line.starts_with(&format!("segment {}: ", hex(id))),
            "{line}"
        );
        assert!(line.contains(reason), "{line} lacks {reason:?}");
    }

    // Named ids: the good ones pass, a bad one and an absent one are reported.
    assert_eq!(
        ledger.ok(&["verify", &hex(good[0].id), &format!("{:x}", good[2].id)]),
        "ok: 2 segment(s) verified\n"
    );
    let (stdout, summary) = ledger.fails(&["verify", &hex(good[1].id), "9003", "abcdef"]);
    assert!(summary.contains("2 of 3"), "{summary}");
    assert!(
        stdout.contains("segment 0000000000009003: does not match its sidecar"),
        "{stdout}"
    );
    assert!(
        stdout.contains("segment 0000000000abcdef: no such segment"),
        "{stdout}"
    );
    let (_, line) = ledger.fails(&["verify", "xyz"]);
    assert!(line.contains("\"xyz\"") && line.contains("hex"), "{line}");
}

#[test]
fn cat_of_a_bad_segment_is_one_line_naming_it() {
    let ledger = Ledger::new();
    let gz = demo_segment(0x77, 60, 1).archive(true, 5).unwrap();
    ledger.put(&segment_key(gz.id), &gz.body[..gz.body.len() - 9]);
    ledger.put(&meta_key(gz.id), &gz.metadata_json());
    let (stdout, line) = ledger.fails(&["cat", "77"]);
    assert_eq!(stdout, "");
    assert!(
        line.contains("segment 0000000000000077: ") && line.contains("gzip"),
        "{line}"
    );
    // find reports the unreadable segment and fails, after printing what it found.
    let good = demo_segment(0x78, 4, 1).archive(false, 5).unwrap();
    ledger.archive(&good);
    let output = ledger.segments(&["find", "tx:00000078:000001"]);
    assert!(!output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "0000000000000078\n"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("segment 0000000000000077: "), "{stderr}");
    assert!(
        stderr.contains("1 segment(s) could not be searched"),
        "{stderr}"
    );
}

/// `cat ... | head`: a reader that stops early ends the command quietly, in both formats.
#[test]
fn a_reader_that_stops_early_is_not_an_error() {
    use std::io::Read;
    let ledger = Ledger::new();
    let segment = demo_segment(0x4e, 20_000, 2);
    let archived = segment.archive(false, 1).unwrap();
    assert!(archived.body.len() > 2 << 20);
    ledger.archive(&archived);
    for format in ["jsonl", "raw"] {
        let mut command = ledger.target.scribefs();
        command
            .args(["segments", "cat", "4e", "--format", format])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn().unwrap();
        let mut head = [0u8; 100];
        child.stdout.take().unwrap().read_exact(&mut head).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{format}: {output:?}");
        assert_eq!(String::from_utf8_lossy(&output.stderr), "", "{format}");
    }
}
