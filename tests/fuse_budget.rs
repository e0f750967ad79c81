//! Request budgets of a real mount, counted on the dev server: each operation in the table of
//! `src/fs/mod.rs` (and docs/SEMANTICS.md) costs exactly the requests listed there. The
//! metadata TTL is 60 s so nothing expires while a test runs.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::mount::{Mount, free_local_addr, fuse_ops, metadata_copies_done};
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

/// Without stored metadata (`--posix-metadata off`, the opt-out for speed) a listing is all
/// `ls -l` costs.
#[test]
fn ls_l_of_2500_entries_without_posix_metadata_is_three_lists_and_no_head() {
    let mount = Mount::new(&["--metadata-ttl", "60", "--posix-metadata", "off"]);
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

/// Seeds `n` files as scribefs or s3fs writes them: mode 0600 and an mtime in their headers.
fn seed_with_metadata(mount: &Mount, n: usize) {
    let bucket = mount.server.bucket("test");
    for i in 0..n {
        let key = format!("big/file-{i:05}");
        let options = PutOptions {
            metadata: [
                ("mode".to_string(), (libc::S_IFREG | 0o600).to_string()),
                ("mtime".to_string(), "1600000000".to_string()),
            ]
            .into(),
            ..Default::default()
        };
        bucket.insert(&key, StoredObject::new(Bytes::from(key.clone()), options));
    }
}

/// `ls -l` of the seeded files: (requests, lines showing mode 0600 and the stored mtime).
fn ls_l_stored(mount: &Mount) -> (RequestStats, usize) {
    assert!(std::fs::metadata(mount.path("big")).unwrap().is_dir());
    let mut out = String::new();
    let stats = measure(mount, || {
        out = mount.sh_ok("LC_ALL=C TZ=UTC ls -l --time-style=+%s big");
    });
    let faithful = out
        .lines()
        .filter(|l| l.starts_with("-rw------- ") && l.contains(" 1600000000 "))
        .count();
    (stats, faithful)
}

/// By default every name shows its stored metadata. A machine that never saw the files pays
/// one HEAD each, once: the metadata cache remembers each version, so the next mount's
/// `ls -l` is its LIST pages only.
#[test]
fn ls_l_of_2500_stored_files_is_lists_and_a_head_each_cold_and_lists_only_warm() {
    let mut mount = mounted();
    seed_with_metadata(&mount, 2500);
    let (stats, faithful) = ls_l_stored(&mount);
    assert_eq!(faithful, 2500);
    assert_eq!(stats, only(|s| (s.list, s.head) = (3, 2500)), "cold");
    mount.unmount();
    let server = std::mem::replace(&mut mount.server, common::devserver::Server::start(&[]));
    let warm = Mount::on(server, "test", TTL);
    let (stats, faithful) = ls_l_stored(&warm);
    assert_eq!(faithful, 2500);
    assert_eq!(stats, only(|s| s.list = 3), "warm: LIST pages only");
}

/// The sequence: `stat f` lists the directory (and HEADs f), then `readlink link`
/// meets a name the listing introduced without its metadata: one HEAD, and it is a symlink.
#[test]
fn a_lookup_of_a_listed_name_whose_metadata_is_unknown_is_one_head() {
    let mount = mounted();
    seed(&mount, ["f".to_string()]);
    let link = PutOptions {
        metadata: [("mode".to_string(), (libc::S_IFLNK | 0o777).to_string())].into(),
        ..Default::default()
    };
    let bucket = mount.server.bucket("test");
    bucket.insert("link", StoredObject::new(Bytes::from_static(b"f"), link));
    let stats = measure(&mount, || {
        assert!(std::fs::metadata(mount.path("f")).unwrap().is_file());
    });
    assert_eq!(stats, only(|s| (s.list, s.head) = (1, 1)));
    let stats = measure(&mount, || {
        let meta = std::fs::symlink_metadata(mount.path("link")).unwrap();
        assert!(meta.file_type().is_symlink());
    });
    assert_eq!(stats, only(|s| s.head = 1));
    assert_eq!(
        std::fs::read_link(mount.path("link")).unwrap(),
        std::path::PathBuf::from("f")
    );
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

/// A mount with `args` that serves its metrics, and their address: tests of the delayed
/// metadata copy wait for `scribefs_metadata_copies_pending` to come back to 0.
fn mounted_with_metrics(args: &[&str]) -> (Mount, String) {
    let metrics = free_local_addr();
    (
        Mount::new(&[args, &["--metrics-addr", &metrics]].concat()),
        metrics,
    )
}

/// POSIX: rename sets the moved file's ctime and keeps its mtime. Its COPY carries both, so
/// it stays one COPY and one DELETE, and S3's new LastModified does not become the mtime.
#[test]
fn rename_of_a_file_written_here_carries_its_times_in_the_copy() {
    use std::os::unix::fs::MetadataExt;
    let mount = mounted();
    ls(&mount, "");
    std::fs::write(mount.path("f"), b"data").unwrap();
    let before = std::fs::metadata(mount.path("f")).unwrap();
    // Times are kept to the second: wait for the next one.
    common::wait::past_second(before.ctime() as u64);
    let stats = measure(&mount, || {
        std::fs::rename(mount.path("f"), mount.path("g")).unwrap()
    });
    assert_eq!(stats, only(|s| (s.copy, s.delete) = (1, 1)));
    let after = std::fs::metadata(mount.path("g")).unwrap();
    assert!(after.ctime() > before.ctime(), "rename set the ctime");
    assert_eq!(after.mtime(), before.mtime(), "rename kept the mtime");
    let object = mount.server.bucket("test").object("g").unwrap();
    assert_eq!(object.metadata["mtime"], before.mtime().to_string());
    assert_eq!(object.metadata["ctime"], after.ctime().to_string());
}

/// With stored metadata the listing's HEAD told the Content-Type, so the chmod is one COPY.
#[test]
fn chmod_of_a_listed_file_is_one_copy_within_the_delay() {
    use std::os::unix::fs::PermissionsExt;
    let (mount, metrics) = mounted_with_metrics(TTL);
    seed(&mount, ["d/a".to_string()]);
    let stats = measure(&mount, || {
        ls(&mount, "d");
    });
    // The root's page and `d`'s marker to find `d`, then `d`'s page and `a`'s metadata.
    assert_eq!(stats, only(|s| (s.list, s.head) = (2, 2)));
    let stats = measure(&mount, || {
        std::fs::set_permissions(mount.path("d/a"), std::fs::Permissions::from_mode(0o600)).unwrap()
    });
    assert_eq!(stats, RequestStats::default(), "nothing at once");
    let stats = measure(&mount, || metadata_copies_done(&metrics));
    assert_eq!(stats, only(|s| s.copy = 1));
}

#[test]
fn chmod_of_a_listed_file_is_one_head_and_one_copy_within_the_delay() {
    use std::os::unix::fs::PermissionsExt;
    let (mount, metrics) = mounted_with_metrics(&[TTL, &["--posix-metadata", "off"]].concat());
    seed(&mount, ["d/a".to_string()]);
    ls(&mount, "d");
    let stats = measure(&mount, || {
        std::fs::set_permissions(mount.path("d/a"), std::fs::Permissions::from_mode(0o600)).unwrap()
    });
    assert_eq!(stats, RequestStats::default(), "nothing at once");
    let stats = measure(&mount, || metadata_copies_done(&metrics));
    // Its Content-Type is unknown (only listed): one HEAD carries it over.
    assert_eq!(stats, only(|s| (s.head, s.copy) = (1, 1)));
    let object = mount.server.bucket("test").object("d/a").unwrap();
    assert_eq!(object.metadata["mode"], (libc::S_IFREG | 0o600).to_string());
    let mode = std::fs::metadata(mount.path("d/a"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o600);
}

#[test]
fn chmod_and_utimens_of_a_file_uploaded_here_are_one_copy() {
    use std::os::unix::fs::PermissionsExt;
    let (mount, metrics) = mounted_with_metrics(TTL);
    ls(&mount, "");
    std::fs::write(mount.path("f"), b"data").unwrap();
    let stats = measure(&mount, || {
        std::fs::set_permissions(mount.path("f"), std::fs::Permissions::from_mode(0o640)).unwrap();
        mount.sh_ok("touch -m -d @1700000000 f");
        metadata_copies_done(&metrics);
    });
    assert_eq!(stats, only(|s| s.copy = 1), "merged into one COPY, no HEAD");
    let object = mount.server.bucket("test").object("f").unwrap();
    assert_eq!(object.metadata["mode"], (libc::S_IFREG | 0o640).to_string());
    assert_eq!(object.metadata["mtime"], "1700000000");
}

#[test]
fn first_lookups_in_a_directory_never_listed_are_its_one_list() {
    for (args, heads) in [(&["--posix-metadata", "off"][..], 0), (&[][..], 2)] {
        let mount = Mount::new(&[TTL, args].concat());
        seed(
            &mount,
            ["d/a".to_string(), "f".to_string(), "g".to_string()],
        );
        let stats = measure(&mount, || {
            assert_eq!(std::fs::metadata(mount.path("d")).unwrap().len(), 0);
            assert!(std::fs::metadata(mount.path("missing")).is_err());
            assert!(std::fs::metadata(mount.path("g")).unwrap().is_file());
        });
        // The root's one page answers all three. Without stored metadata, `g` (introduced by
        // that page) costs nothing more; with it, `d`'s marker and `g` are HEADed once each.
        assert_eq!(stats, only(|s| (s.list, s.head) = (1, heads)), "{args:?}");
    }
}

#[test]
fn a_file_met_first_by_a_lookup_is_one_list_and_one_head() {
    let mount = mounted();
    seed(&mount, ["f".to_string()]);
    let stats = measure(&mount, || {
        assert!(std::fs::metadata(mount.path("f")).unwrap().is_file());
    });
    // The HEAD brings its s3fs metadata (mode, owner, mtime), which listings do not carry.
    assert_eq!(stats, only(|s| (s.list, s.head) = (1, 1)));
}

/// A local directory of `n` files of `size` bytes named f-000...
fn local_files(n: usize, size: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..n {
        let data: Vec<u8> = (0..size).map(|b| (b * 7 + i) as u8).collect();
        std::fs::write(dir.path().join(format!("f-{i:03}")), data).unwrap();
    }
    dir
}

/// LISTs allowed beside a workload: `fixed` plus one per TTL period it lasted for each of
/// the `dirs` directories on its paths (the kernel revalidates every component).
fn lists_allowed(fixed: u64, dirs: u64, ttl_secs: f64, elapsed: Duration) -> u64 {
    fixed + dirs * (elapsed.as_secs_f64() / ttl_secs).ceil() as u64
}

const FILES: usize = 100;

#[test]
fn cp_of_small_files_into_a_directory_made_here_is_one_put_each() {
    for ttl in [60.0, 0.2] {
        let mount = Mount::new(&["--metadata-ttl", &ttl.to_string()]);
        let source = local_files(FILES, 4096);
        let started = std::time::Instant::now();
        let stats = measure(&mount, || {
            mount.sh_ok(&format!(
                "mkdir dest && cp {}/* dest/",
                source.path().display()
            ));
        });
        let elapsed = started.elapsed();
        assert_eq!(stats.put, FILES as u64 + 1, "one PUT a file and the marker");
        assert_eq!((stats.head, stats.get, stats.copy), (0, 0, 0), "{stats:?}");
        assert!(
            stats.list <= lists_allowed(1, 2, ttl, elapsed),
            "ttl {ttl}: {} LISTs in {elapsed:?}",
            stats.list
        );
    }
}

#[test]
fn cat_of_small_files_after_a_fresh_mount_is_one_get_each() {
    // At 0.2 s the TTL runs out while `cat` works: stored metadata (its HEADs make the run
    // longer) is left out there, so what is counted is the reads' own revalidation.
    for (ttl, metadata) in [(60.0, "auto"), (0.2, "off")] {
        let ttl_arg = ttl.to_string();
        let mount = Mount::new(&["--metadata-ttl", &ttl_arg, "--posix-metadata", metadata]);
        seed(&mount, (0..FILES).map(|i| format!("d/f-{i:03}")));
        let started = std::time::Instant::now();
        let stats = measure(&mount, || {
            let out = mount.sh_ok("cat d/* | wc -c");
            assert!(out.trim().parse::<u64>().unwrap() > 0);
        });
        let elapsed = started.elapsed();
        assert_eq!(stats.get, FILES as u64, "{stats:?}");
        // Each file's stored metadata and `d`'s marker, once (a fresh machine: nothing
        // remembered).
        let heads = if metadata == "off" {
            0
        } else {
            FILES as u64 + 1
        };
        assert_eq!(stats.head, heads, "{stats:?}");
        assert_eq!((stats.put, stats.copy), (0, 0), "{stats:?}");
        // The root's page (to find `d`) and `d`'s page, then one a TTL period.
        assert!(
            stats.list <= lists_allowed(2, 2, ttl, elapsed),
            "ttl {ttl}: {} LISTs in {elapsed:?}",
            stats.list
        );
    }
}

/// What this machine wrote costs no HEAD after a remount: the metadata cache records each
/// upload as it lands, and the listing that shows it (same ETag and size, LastModified within
/// the upload's time) adopts it. `cp` of 100 files, unmount, mount and `cat` is the root's and
/// `dest`'s LIST pages, `dest`'s own marker HEAD, and a GET a file: at most 103 requests.
#[test]
fn cat_after_a_remount_of_files_copied_in_here_is_one_get_each_and_no_file_head() {
    let mut mount = mounted();
    let source = local_files(FILES, 4096);
    mount.sh_ok(&format!(
        "chmod 600 {0}/* && mkdir dest && cp {0}/* dest/",
        source.path().display()
    ));
    mount.unmount();
    let server = std::mem::replace(&mut mount.server, common::devserver::Server::start(&[]));
    let again = Mount::on(server, "test", TTL);
    let stats = measure(&again, || {
        let out = again.sh_ok("cat dest/* | wc -c");
        assert_eq!(out.trim(), (FILES * 4096).to_string());
    });
    assert_eq!(
        stats,
        only(|s| (s.list, s.head, s.get) = (2, 1, FILES as u64)),
        "no HEAD of a file this machine wrote"
    );
    assert!(stats.total() <= FILES as u64 + 3);
    // And the files show the mode cp gave them (not the mount's default 644), from the cache.
    let modes = again.sh_ok("stat -c %a dest/* | sort -u");
    assert_eq!(modes.trim(), "600");
}

#[test]
fn rsync_of_small_files_into_a_new_directory_is_put_copy_delete_each() {
    for ttl in [60.0, 0.2] {
        let mount = Mount::new(&["--metadata-ttl", &ttl.to_string()]);
        let source = local_files(FILES, 4096);
        let started = std::time::Instant::now();
        let stats = measure(&mount, || {
            mount.sh_ok(&format!("rsync -a {}/ dest/", source.path().display()));
        });
        let elapsed = started.elapsed();
        let n = FILES as u64;
        assert_eq!((stats.copy, stats.delete), (n, n), "{stats:?}");
        assert_eq!((stats.head, stats.get), (0, 0), "{stats:?}");
        // One PUT a file, the marker, and the directory's own times and mode at the end.
        assert!(stats.put <= n + 3, "{stats:?}");
        assert!(
            stats.list <= lists_allowed(1, 2, ttl, elapsed),
            "ttl {ttl}: {} LISTs in {elapsed:?}",
            stats.list
        );
        let out = mount.sh_ok(&format!(
            "diff -r {}/ dest/ && echo same",
            source.path().display()
        ));
        assert_eq!(out.trim(), "same");
    }
}

fn fuse_lookups(addr: &str) -> f64 {
    fuse_ops(addr, "lookup")
}

/// `ls -l` of `n` seeded entries after a fresh mount: its requests, and the FUSE lookups the
/// kernel sent (readdirplus hands it every entry's attributes with its name).
fn ls_l(n: usize, ttl: &str) -> (RequestStats, f64) {
    let addr = free_local_addr();
    let mount = Mount::new(&[
        "--metadata-ttl",
        ttl,
        "--metrics-addr",
        &addr,
        "--posix-metadata",
        "off",
    ]);
    seed(&mount, (0..n).map(|i| format!("big/file-{i:06}")));
    assert!(std::fs::metadata(mount.path("big")).unwrap().is_dir());
    let lookups = fuse_lookups(&addr);
    let stats = measure(&mount, || {
        let out = mount.sh_ok("LC_ALL=C ls -l big | wc -l");
        assert_eq!(
            out.trim().parse::<usize>().unwrap(),
            n + 1,
            "total line + entries"
        );
    });
    // ls -l asks for each file's ACL and security label: the first ENOSYS stops the kernel
    // from asking again, instead of two FUSE round trips per file.
    let xattrs = fuse_ops(&addr, "getxattr") + fuse_ops(&addr, "listxattr");
    assert!(xattrs <= 2.0, "{xattrs} xattr requests");
    (stats, fuse_lookups(&addr) - lookups)
}

#[test]
fn ls_l_of_100000_entries_is_a_hundred_lists_no_head_and_no_lookup() {
    let (stats, lookups) = ls_l(100_000, "60");
    assert_eq!(stats, only(|s| s.list = 100));
    assert_eq!(lookups, 0.0, "readdirplus answered every entry");
    // At the default TTL the listing may expire while ls stats: windows of 1000 names, no HEAD.
    let (stats, _) = ls_l(100_000, "1");
    assert_eq!(stats.head, 0, "{stats:?}");
    assert!(stats.list <= 200, "{stats:?}");
}

#[test]
fn ls_l_of_2500_entries_at_the_default_ttl_makes_no_lookup() {
    let (stats, lookups) = ls_l(2500, "1");
    assert_eq!(stats.head, 0, "{stats:?}");
    assert!(stats.list <= 6, "{stats:?}");
    assert_eq!(lookups, 0.0, "readdirplus answered every entry");
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
