//! Request budgets of a real mount, counted on the dev server: each operation in the table of
//! `src/fs/mod.rs` (and docs/SEMANTICS.md) costs exactly the requests listed there. The
//! metadata TTL is 60 s so nothing expires while a test runs.

mod common;

use bytes::Bytes;
use common::mount::Mount;
use scribefs::devserver::RequestStats;
use scribefs::store::PutOptions;
use scribefs::store::memory::StoredObject;

const TTL: &[&str] = &["--metadata-ttl", "60"];

fn mounted() -> Mount {
    Mount::new(TTL)
}

/// Puts objects straight into the bucket, as another client would.
fn seed(mount: &Mount, keys: impl IntoIterator<Item = String>) {
    let bucket = mount.server.bucket("test");
    for key in keys {
        let data = Bytes::from(format!("contents of {key}"));
        bucket.insert(&key, StoredObject::new(data, PutOptions::default()));
    }
}

/// Lists `dir` through the mount (a plain `ls`), so its listing is cached.
fn ls(mount: &Mount, dir: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(mount.path(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Runs `step` and returns the requests it made.
fn measure(mount: &Mount, step: impl FnOnce()) -> RequestStats {
    mount.server.reset_stats();
    step();
    mount.server.stats()
}

fn only(f: impl FnOnce(&mut RequestStats)) -> RequestStats {
    let mut expected = RequestStats::default();
    f(&mut expected);
    expected
}

#[test]
fn creating_a_small_file_in_a_listed_directory_is_one_put() {
    let mount = mounted();
    seed(&mount, ["d/existing".to_string()]);
    assert_eq!(ls(&mount, "d"), vec!["existing"]);
    let stats = measure(&mount, || {
        std::fs::write(mount.path("d/new.txt"), b"small file\n").unwrap();
    });
    assert_eq!(stats, only(|s| s.put = 1), "create + write + close");
    let object = mount.server.bucket("test").object("d/new.txt").unwrap();
    assert_eq!(object.data.as_ref(), b"small file\n");
}

#[test]
fn reading_a_small_file_in_a_listed_directory_is_one_get() {
    let mount = mounted();
    seed(&mount, ["d/a".to_string(), "d/b".to_string()]);
    assert_eq!(ls(&mount, "d"), vec!["a", "b"]);
    let stats = measure(&mount, || {
        assert_eq!(
            std::fs::read(mount.path("d/b")).unwrap(),
            b"contents of d/b"
        );
    });
    assert_eq!(stats, only(|s| s.get = 1), "open + read + close");
}

#[test]
fn ls_l_of_2500_entries_is_three_lists_and_no_head() {
    let mount = mounted();
    seed(&mount, (0..2500).map(|i| format!("big/file-{i:05}")));
    // The directory itself is looked up before counting starts.
    assert!(std::fs::metadata(mount.path("big")).unwrap().is_dir());
    let mut sizes = 0;
    let stats = measure(&mount, || {
        for entry in std::fs::read_dir(mount.path("big")).unwrap() {
            let entry = entry.unwrap();
            let meta = std::fs::metadata(entry.path()).unwrap();
            assert!(meta.is_file());
            sizes += meta.len();
        }
    });
    let expected_sizes: u64 = (0..2500)
        .map(|i| format!("contents of big/file-{i:05}").len() as u64)
        .sum();
    assert_eq!(sizes, expected_sizes, "sizes come from the listing");
    assert_eq!(stats, only(|s| s.list = 3), "2500 entries = 3 pages");
}

#[test]
fn stat_of_a_listed_entry_is_free() {
    let mount = mounted();
    seed(&mount, ["d/a".to_string(), "d/sub/x".to_string()]);
    assert_eq!(ls(&mount, "d"), vec!["a", "sub"]);
    let stats = measure(&mount, || {
        assert_eq!(std::fs::metadata(mount.path("d/a")).unwrap().len(), 15);
        assert!(std::fs::metadata(mount.path("d/sub")).unwrap().is_dir());
        assert_eq!(
            std::fs::metadata(mount.path("d/missing"))
                .unwrap_err()
                .raw_os_error(),
            Some(libc::ENOENT),
            "a miss is answered by the listing too"
        );
    });
    assert_eq!(stats, RequestStats::default());
}

#[test]
fn unlink_is_one_delete() {
    let mount = mounted();
    seed(&mount, ["d/a".to_string()]);
    ls(&mount, "d");
    let stats = measure(&mount, || std::fs::remove_file(mount.path("d/a")).unwrap());
    assert_eq!(stats, only(|s| s.delete = 1));
    assert!(mount.server.bucket("test").object("d/a").is_none());
    assert!(ls(&mount, "d").is_empty());
}

#[test]
fn mkdir_is_one_put_of_the_marker() {
    let mount = mounted();
    seed(&mount, ["d/a".to_string()]);
    ls(&mount, "d");
    let stats = measure(&mount, || std::fs::create_dir(mount.path("d/sub")).unwrap());
    assert_eq!(stats, only(|s| s.put = 1));
    assert!(mount.server.bucket("test").object("d/sub/").is_some());
}

#[test]
fn rmdir_of_an_empty_directory_is_one_list_and_one_delete() {
    let mount = mounted();
    seed(&mount, ["d/a".to_string(), "d/sub/".to_string()]);
    assert_eq!(ls(&mount, "d"), vec!["a", "sub"]);
    let stats = measure(&mount, || std::fs::remove_dir(mount.path("d/sub")).unwrap());
    assert_eq!(stats, only(|s| (s.list, s.delete) = (1, 1)));
    assert!(mount.server.bucket("test").object("d/sub/").is_none());
}

#[test]
fn rename_of_a_file_is_one_copy_and_one_delete() {
    let mount = mounted();
    seed(&mount, ["d/a".to_string()]);
    ls(&mount, "d");
    let stats = measure(&mount, || {
        std::fs::rename(mount.path("d/a"), mount.path("d/b")).unwrap()
    });
    assert_eq!(stats, only(|s| (s.copy, s.delete) = (1, 1)));
    let bucket = mount.server.bucket("test");
    assert!(bucket.object("d/a").is_none());
    assert_eq!(
        bucket.object("d/b").unwrap().data.as_ref(),
        b"contents of d/a"
    );
    assert_eq!(ls(&mount, "d"), vec!["b"]);
}

#[test]
fn chmod_of_a_closed_file_is_one_head_and_one_copy() {
    use std::os::unix::fs::PermissionsExt;
    let mount = mounted();
    seed(&mount, ["d/a".to_string()]);
    ls(&mount, "d");
    let stats = measure(&mount, || {
        std::fs::set_permissions(mount.path("d/a"), std::fs::Permissions::from_mode(0o600)).unwrap()
    });
    assert_eq!(stats, only(|s| (s.head, s.copy) = (1, 1)));
    let mode = std::fs::metadata(mount.path("d/a"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o600);
}

#[test]
fn lookup_of_an_unlisted_name_is_one_head_and_one_list() {
    let mount = mounted();
    seed(&mount, ["d/a".to_string()]);
    let stats = measure(&mount, || {
        assert_eq!(std::fs::metadata(mount.path("d")).unwrap().len(), 0);
    });
    assert_eq!(stats, only(|s| (s.head, s.list) = (1, 1)));
}

#[test]
fn a_large_file_is_one_create_its_parts_and_one_complete() {
    let mount = Mount::new(&["--metadata-ttl", "60", "--part-size", "5M"]);
    ls(&mount, "");
    let data: Vec<u8> = (0..12u32 << 20).map(|i| (i % 251) as u8).collect();
    let stats = measure(&mount, || {
        std::fs::write(mount.path("large"), &data).unwrap()
    });
    // 12 MiB in 5 MiB parts: 3 parts.
    assert_eq!(stats, only(|s| s.multipart = 1 + 3 + 1));
    let object = mount.server.bucket("test").object("large").unwrap();
    assert!(object.data.as_ref() == data.as_slice());
}

#[test]
fn a_fork_while_a_file_is_written_uploads_nothing_before_the_openers_close() {
    use std::io::Write;
    let mount = mounted();
    ls(&mount, "");
    let stats = measure(&mount, || {
        let mut file = std::fs::File::create(mount.path("f")).unwrap();
        file.write_all(b"first half, ").unwrap();
        // The child inherits the descriptor; exec closes it, which the mount sees as a FLUSH.
        let status = std::process::Command::new("true").status().unwrap();
        assert!(status.success());
        assert!(
            mount.server.bucket("test").object("f").is_none(),
            "half a file was uploaded"
        );
        file.write_all(b"second half").unwrap();
        file.sync_all().unwrap();
    });
    assert_eq!(stats, only(|s| s.put = 1));
    let object = mount.server.bucket("test").object("f").unwrap();
    assert_eq!(object.data.as_ref(), b"first half, second half");
}
