//! `scribefs segments pull DIR` / `push DIR`: whole-ledger copies that skip identical files and
//! resume, checked file by file and request by request against the dev server.

mod common;

use std::path::Path;
use std::process::Command;

use common::devserver::Server;
use common::mount::{BUCKET, put_directly, scribefs};

const OTHER: &str = "copy";

fn run_ok(mut command: Command) -> String {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn bulk(server: &Server, bucket: &str, verb: &str, dir: &Path) -> String {
    let mut command = scribefs(server);
    command
        .args(["--bucket", bucket, "segments", verb])
        .arg(dir)
        .args(["--jobs", "4"]);
    run_ok(command)
}

fn last_line(out: &str) -> &str {
    out.lines().last().unwrap()
}

/// A dev server whose bucket `test` holds `count` segments and their sidecars; `copy` is empty.
fn server_with_segments(count: u64) -> Server {
    let server = Server::start(&[BUCKET, OTHER]);
    for id in 0..count {
        let data: Vec<u8> = (0..1000 + id * 777)
            .map(|i| (i * (id + 3) % 256) as u8)
            .collect();
        put_directly(&server, &format!("segments/segment-{id:016x}.bin"), &data);
        let meta = format!("{{\"id\":{id},\"size\":{}}}", data.len());
        put_directly(
            &server,
            &format!("segments/segment-{id:016x}.meta.json"),
            meta.as_bytes(),
        );
    }
    server
}

fn segment_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn pull_copies_everything_once_then_only_what_changed() {
    let server = server_with_segments(4);
    put_directly(&server, "not-a-segment.txt", b"left alone");
    let keys: Vec<String> = server
        .bucket(BUCKET)
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("segments/"))
        .collect();
    assert_eq!(keys.len(), 8);
    let dir = tempfile::tempdir().unwrap();
    server.reset_stats();
    let out = bulk(&server, BUCKET, "pull", dir.path());
    assert!(last_line(&out).starts_with("pulled 8 files"), "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("copied ")).count(), 8);
    assert_eq!(server.stats().get, 8);
    for key in &keys {
        let name = key.strip_prefix("segments/").unwrap();
        let local = std::fs::read(dir.path().join(name)).unwrap();
        assert_eq!(
            local,
            server.bucket(BUCKET).object(key).unwrap().data.as_ref()
        );
    }
    assert_eq!(segment_files(dir.path()).len(), 8);

    // Nothing changed: one listing, no GET.
    server.reset_stats();
    let out = bulk(&server, BUCKET, "pull", dir.path());
    assert!(
        last_line(&out).starts_with("pulled 0 files (0 bytes), 8 identical skipped, 0 failed"),
        "{out}"
    );
    assert_eq!(server.stats().get, 0);
    assert_eq!(server.stats().list, 1);

    // An interrupted run: one file missing (a partial left behind), one of the right size
    // but different bytes. Only those two are fetched again.
    let names = segment_files(dir.path());
    let gone = dir.path().join(&names[0]);
    let partial = dir.path().join(format!(".{}.partial", names[0]));
    std::fs::rename(&gone, &partial).unwrap();
    let damaged = dir.path().join(&names[1]);
    let mut bytes = std::fs::read(&damaged).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&damaged, &bytes).unwrap();
    server.reset_stats();
    let out = bulk(&server, BUCKET, "pull", dir.path());
    assert!(last_line(&out).starts_with("pulled 2 files"), "{out}");
    assert_eq!(server.stats().get, 2);
    assert!(!partial.exists());
    let key = format!("segments/{}", names[1]);
    assert_eq!(
        std::fs::read(&damaged).unwrap(),
        server.bucket(BUCKET).object(&key).unwrap().data.as_ref()
    );
}

#[test]
fn push_uploads_what_the_bucket_lacks_including_multipart_files() {
    let server = server_with_segments(3);
    let dir = tempfile::tempdir().unwrap();
    bulk(&server, BUCKET, "pull", dir.path());
    // A segment big enough for a multipart upload (parts of 8 MiB).
    let big: Vec<u8> = (0..(9 << 20) + 17).map(|i| (i % 241) as u8).collect();
    std::fs::write(dir.path().join("segment-00000000000fffff.bin"), &big).unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"not a segment").unwrap();

    server.reset_stats();
    let out = bulk(&server, OTHER, "push", dir.path());
    assert!(last_line(&out).starts_with("pushed 7 files"), "{out}");
    let stats = server.stats();
    assert_eq!(stats.put, 6);
    // CreateMultipartUpload, two UploadParts, CompleteMultipartUpload.
    assert_eq!(stats.multipart, 4, "{stats:?}");
    let other = server.bucket(OTHER);
    assert_eq!(other.keys().len(), 7);
    assert!(other.object("segments/notes.txt").is_none());
    let stored = other
        .object("segments/segment-00000000000fffff.bin")
        .unwrap();
    assert!(stored.etag.contains("-2"), "{}", stored.etag);
    assert_eq!(stored.data.as_ref(), big.as_slice());

    // Everything is there: a listing and nothing else, the multipart file included.
    server.reset_stats();
    let out = bulk(&server, OTHER, "push", dir.path());
    assert!(last_line(&out).contains("7 identical skipped"), "{out}");
    let stats = server.stats();
    assert_eq!((stats.put, stats.multipart, stats.list), (0, 0, 1));

    // And back: a pull of the multipart object into a copy of the directory skips it too.
    server.reset_stats();
    let out = bulk(&server, OTHER, "pull", dir.path());
    assert!(last_line(&out).contains("7 identical skipped"), "{out}");
    assert_eq!(server.stats().get, 0);
}
