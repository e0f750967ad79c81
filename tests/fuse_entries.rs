//! The segments layout's decoded `entries/` directory through a real mount, over segments made
//! by the ledger's own encoding (bincode, gzip when archived, `.meta.json` sidecars): what
//! `ls`, `cat`, `wc -l`, `grep`, `head` and `stat` see, what it costs in requests, that a
//! replaced segment is decoded again, that a bad one is EIO, and that nothing there is writable.

mod common;

use std::collections::HashMap;

use common::devserver::Server;
use common::mount::{BUCKET, Mount, assert_fails_with, delete_directly, put_directly};
use scribefs::devserver::{DevServerConfig, RequestStats, SeedShape};
use scribefs::segment::codec::{ArchivedSegment, Segment, demo_segment};
use scribefs::segment::entries::render_jsonl;
use scribefs::segment::{SegmentFile, file_name};

fn store(server: &Server, segment: &ArchivedSegment) {
    put_directly(
        server,
        &format!("segments/{}", file_name(segment.id, SegmentFile::Data)),
        &segment.body,
    );
    put_directly(
        server,
        &format!("segments/{}", file_name(segment.id, SegmentFile::Meta)),
        &segment.metadata_json(),
    );
}

/// Non-contiguous ids, plain and gzip.
fn ledger(server: &Server) -> Vec<ArchivedSegment> {
    let segments: Vec<ArchivedSegment> = [(0x10u64, false), (0x13, true), (0x2a, false)]
        .iter()
        .map(|&(id, compress)| {
            demo_segment(id, 50 + id as usize, 7)
                .archive(compress, 1_760_000_000)
                .unwrap()
        })
        .collect();
    for segment in &segments {
        store(server, segment);
    }
    segments
}

fn jsonl_name(id: u64) -> String {
    format!("entries/segment-{id:016x}.jsonl")
}

fn expected(segment: &ArchivedSegment) -> Vec<u8> {
    render_jsonl(
        segment.id,
        &segment.body,
        Some(segment.metadata_json().as_slice()),
    )
    .unwrap()
    .to_vec()
}

fn mount_segments(server: Server, extra: &[&str]) -> Mount {
    let mut args = vec!["--layout", "segments"];
    args.extend_from_slice(extra);
    Mount::on(server, BUCKET, &args)
}

#[test]
fn entries_decode_plain_and_gzip_segments_for_unix_tools() {
    let server = Server::start(&[BUCKET]);
    let segments = ledger(&server);
    let mount = mount_segments(server, &[]);

    let listed = mount.sh_ok("ls entries");
    let want: Vec<String> = segments
        .iter()
        .map(|s| format!("segment-{:016x}.jsonl", s.id))
        .collect();
    assert_eq!(listed.lines().collect::<Vec<_>>(), want);

    for segment in &segments {
        let name = jsonl_name(segment.id);
        let want = expected(segment);
        let cat = mount.sh(&format!("cat {name}"));
        assert!(cat.status.success(), "{name}: {cat:?}");
        assert!(cat.stdout == want, "cat {name} is not the rendering");
        // Sizes agree with the bytes, and lines with the sidecar's entry count.
        let size = mount.sh_ok(&format!("stat -c %s {name}"));
        assert_eq!(size.trim(), want.len().to_string());
        let lines = mount.sh_ok(&format!("wc -l < {name}"));
        assert_eq!(lines.trim(), segment.metadata.entry_count.to_string());
        let first = mount.sh_ok(&format!("head -n 1 {name}"));
        assert!(first.starts_with(r#"{"key":"tx:"#), "{first}");
    }
    // grep across the directory finds a key in the one segment that holds it.
    let wanted = format!("tx:{:08x}:000003", 0x13);
    let found = mount.sh_ok(&format!("grep -l '\"{wanted}\"' entries/*.jsonl"));
    assert_eq!(found.trim(), jsonl_name(0x13));
    // The raw segment is still the stored bytes (gzip for an archived one).
    let raw = mount.sh(&format!("cat {}", file_name(0x13, SegmentFile::Data)));
    assert!(raw.stdout == segments[1].body);
    assert!(mount.sh_ok("ls -l entries").contains("-r--r--r--"));
}

#[test]
fn entries_cost_one_get_per_object_once_and_ls_costs_none() {
    let server = Server::start(&[BUCKET]);
    let segments = ledger(&server);
    let mount = mount_segments(server, &["--metadata-ttl", "60"]);
    mount.sh_ok("ls");
    mount.server.reset_stats();

    mount.sh_ok("ls entries");
    let stats = mount.server.stats();
    assert_eq!((stats.get, stats.head, stats.list), (0, 0, 0), "{stats:?}");

    let name = jsonl_name(segments[1].id);
    mount.sh_ok(&format!("cat {name} > /dev/null"));
    let stats = mount.server.stats();
    assert_eq!((stats.get, stats.head, stats.list), (2, 0, 0), "{stats:?}");

    // Decoded once: stat, a second cat and grep make no request.
    mount.server.reset_stats();
    mount.sh_ok(&format!(
        "stat {name} > /dev/null; cat {name} | grep -c key > /dev/null"
    ));
    let stats = mount.server.stats();
    assert_eq!((stats.get, stats.head, stats.list), (0, 0, 0), "{stats:?}");
}

#[test]
fn a_replaced_segment_is_decoded_again_after_the_ttl() {
    let server = Server::start(&[BUCKET]);
    let segments = ledger(&server);
    let mount = mount_segments(server, &["--metadata-ttl", "0.2"]);
    let name = jsonl_name(0x2a);
    assert!(mount.sh(&format!("cat {name}")).stdout == expected(&segments[2]));

    let mut data = HashMap::new();
    data.insert(b"only-key".to_vec(), b"new value".to_vec());
    let replaced = Segment {
        segment_id: 0x2a,
        timestamp: 1,
        size: 17,
        data,
    }
    .archive(true, 2)
    .unwrap();
    store(&mount.server, &replaced);
    std::thread::sleep(std::time::Duration::from_millis(400));
    let cat = mount.sh_ok(&format!("cat {name}"));
    assert_eq!(cat, "{\"key\":\"only-key\",\"value\":\"new value\"}\n");
    assert_eq!(
        mount.sh_ok(&format!("stat -c %s {name}")).trim(),
        cat.len().to_string()
    );
}

#[test]
fn bad_segments_are_eio_and_the_others_still_read() {
    let server = Server::start(&[BUCKET]);
    let segments = ledger(&server);
    // A truncated gzip stream under a sidecar that says it is compressed.
    let broken = &segments[1];
    put_directly(
        &server,
        &format!("segments/{}", file_name(broken.id, SegmentFile::Data)),
        &broken.body[..broken.body.len() / 2],
    );
    // A sidecar that miscounts the entries.
    let mut lying = segments[2].metadata.clone();
    lying.entry_count += 1;
    put_directly(
        &server,
        &format!("segments/{}", file_name(0x2a, SegmentFile::Meta)),
        &serde_json::to_vec(&lying).unwrap(),
    );
    let mount = mount_segments(server, &[]);
    assert_fails_with(
        &mount,
        &format!("cat {}", jsonl_name(0x13)),
        "Input/output error",
    );
    assert_fails_with(
        &mount,
        &format!("cat {}", jsonl_name(0x2a)),
        "Input/output error",
    );
    assert!(mount.sh(&format!("cat {}", jsonl_name(0x10))).stdout == expected(&segments[0]));
    // A segment without its sidecar still decodes (nothing to check it against).
    delete_directly(
        &mount.server,
        &format!("segments/{}", file_name(0x10, SegmentFile::Meta)),
    );
    let plain = render_jsonl(0x10, &segments[0].body, None).unwrap();
    assert!(mount.sh(&format!("cat {}", jsonl_name(0x10))).stdout == plain);
    assert_fails_with(
        &mount,
        "cat entries/segment-00000000000000ff.jsonl",
        "No such file",
    );
    assert_fails_with(&mount, "cat entries/segment-2a.jsonl", "No such file");
}

#[test]
fn entries_are_read_only_and_unlisted_unless_asked() {
    let server = Server::start(&[BUCKET]);
    ledger(&server);
    let mount = mount_segments(server, &[]);
    assert!(!mount.sh_ok("ls -a").contains("entries"));
    let name = jsonl_name(0x10);
    for script in [
        format!("echo x > {name}"),
        format!("rm {name}"),
        format!("touch {name}"),
        format!("chmod 600 {name}"),
        "touch entries/new.jsonl".to_string(),
        "mkdir entries/sub".to_string(),
        "rmdir entries".to_string(),
        format!("mv {name} entries/other.jsonl"),
    ] {
        assert_fails_with(&mount, &script, "Read-only file system");
    }
    assert_eq!(
        mount.sh_ok(&format!(
            "python3 -c 'import os; print(os.getxattr(\"{name}\", \"user.scribe.segment_id\").decode())'"
        )),
        "16\n"
    );
    drop(mount);

    let server = Server::start(&[BUCKET]);
    ledger(&server);
    let mount = mount_segments(server, &["--list-entries"]);
    assert!(mount.sh_ok("ls").lines().any(|name| name == "entries"));
    // A backup of the mount copies the decoded view only when it is listed.
    let backup = tempfile::tempdir().unwrap();
    mount.sh_ok(&format!("cp -r . {}", backup.path().display()));
    assert!(backup.path().join(jsonl_name(0x2a)).exists());
}

#[test]
fn a_50_mb_segment_decodes_through_the_mount() {
    let server = Server::start(&[BUCKET]);
    let big = demo_segment(0x77, 330_000, 3).archive(true, 1).unwrap();
    store(&server, &big);
    let mount = mount_segments(server, &[]);
    let name = jsonl_name(0x77);
    let lines = mount.sh_ok(&format!("wc -l < {name}"));
    assert_eq!(lines.trim(), "330000");
    let sum = mount.sh_ok(&format!("sha256sum < {name}"));
    let local = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(local.path(), expected(&big)).unwrap();
    let want = mount.sh_ok(&format!("sha256sum < {}", local.path().display()));
    assert_eq!(sum, want);
}

/// `ls entries/` of 2,500 segments (5,000 keys: 5 LIST pages) costs what `ls` of the root
/// costs, request for request: the root's listing, no GET of any segment and no HEAD. (`ls -l`
/// decodes each segment for its true size: a size is never shown before it is known.)
#[test]
fn listing_entries_costs_what_listing_the_root_costs() {
    const SEGMENTS: u64 = 2500;
    let server = Server::start_with(DevServerConfig {
        seed_objects: vec![SeedShape::Segments { count: SEGMENTS }],
        ..DevServerConfig::for_tests(&[BUCKET])
    });
    // A TTL shorter than the pause between steps: each listing starts cold.
    let mount = mount_segments(server, &["--metadata-ttl", "0.3"]);
    let count = |script: &str| -> (usize, RequestStats) {
        std::thread::sleep(std::time::Duration::from_millis(400));
        mount.server.reset_stats();
        let lines = mount.sh_ok(&format!("LC_ALL=C {script}")).lines().count();
        (lines, mount.server.stats())
    };
    let (root_lines, root_cost) = count("ls");
    let (entries_lines, entries_cost) = count("ls entries");
    assert_eq!(root_lines, 2 * entries_lines);
    assert_eq!(entries_cost, root_cost);
    assert_eq!((root_cost.list, root_cost.get, root_cost.head), (5, 0, 0));
}
