//! Directories larger than any internal limit, through a real mount: every entry shows in `ls`,
//! `ls -l`, `find`, `du` and `rsync -a`, whatever `--max-cached-nodes` is, in both layouts; and
//! one directory past the default limit (300,000) at its real size.

mod common;

use bytes::Bytes;
use common::mount::Mount;
use scribefs::store::PutOptions;
use scribefs::store::memory::StoredObject;

/// Puts empty objects straight into the bucket, as another client would (fast at any count).
fn seed(mount: &Mount, keys: impl IntoIterator<Item = String>) {
    let bucket = mount.server.bucket("test");
    for key in keys {
        bucket.insert(&key, StoredObject::new(Bytes::new(), PutOptions::default()));
    }
}

fn count(mount: &Mount, script: &str) -> usize {
    let out = mount.sh_ok(&format!("set -o pipefail; {script}"));
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{script}: {out}"))
}

fn segment_keys(count: u64) -> impl Iterator<Item = String> {
    (0..count).flat_map(|id| {
        [
            format!("segments/segment-{id:016x}.bin"),
            format!("segments/segment-{id:016x}.meta.json"),
        ]
    })
}

#[test]
fn keys_layout_lists_whole_past_the_node_limit() {
    let mount = Mount::new(&["--max-cached-nodes", "100"]);
    seed(&mount, (0..3_000).map(|i| format!("big/f{i:05}")));
    seed(
        &mount,
        (0..10).flat_map(|d| (0..300).map(move |f| format!("tree/d{d:02}/f{f:04}"))),
    );
    for round in 0..2 {
        assert_eq!(count(&mount, "ls big | wc -l"), 3_000, "round {round}");
        assert_eq!(count(&mount, "ls -l big | grep -c '^-'"), 3_000);
        assert_eq!(count(&mount, "ls -f big | wc -l"), 3_002, ". and ..");
        assert_eq!(count(&mount, "find tree -type f | wc -l"), 3_000);
        assert_eq!(count(&mount, "find . -type f | wc -l"), 6_000);
        assert_eq!(count(&mount, "du -a tree | wc -l"), 3_000 + 10 + 1);
        let dest = tempfile::tempdir().unwrap();
        let sent = count(
            &mount,
            &format!(
                "rsync -a --dry-run --out-format='%n' ./ {}/ | grep -vc '/$'",
                dest.path().display()
            ),
        );
        assert_eq!(sent, 6_000, "files rsync would send");
    }
}

#[test]
fn segments_layout_lists_whole_past_the_node_limit() {
    let mount = Mount::new(&["--layout", "segments", "--max-cached-nodes", "100"]);
    seed(&mount, segment_keys(1_500));
    assert_eq!(count(&mount, "ls | wc -l"), 3_000);
    assert_eq!(count(&mount, "ls -l | grep -c '^-'"), 3_000);
    assert_eq!(count(&mount, "find . -name '*.bin' | wc -l"), 1_500);
}

/// Past today's default limit at its real size: the limit that once emptied such a
/// listing is gone, not just moved.
#[test]
fn a_directory_past_the_default_node_limit_is_listed_whole() {
    let mount = Mount::new(&["--layout", "segments"]);
    seed(&mount, segment_keys(150_001));
    assert_eq!(count(&mount, "ls -f | grep -c '^segment-'"), 300_002);
    assert_eq!(count(&mount, "find . -type f | wc -l"), 300_002);
}
