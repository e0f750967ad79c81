//! The disk tier (`--cache-dir`, `--cache-dir-size`) through real mounts of a dev server: a
//! second mount re-reads from disk with no GET, a changed object is fetched again, a damaged
//! cache file is detected and fetched again, the folder stays within its budget, and a second
//! mount on a folder in use is refused.

mod common;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::devserver::Server;
use common::mount::{BUCKET, is_mounted, put_directly, scribefs, unmount_by};
use scribefs::segment::codec::demo_segments;
use scribefs::segment::{SegmentFile, file_name, meta_key, segment_key};

/// A mount of `server` with a cache folder; unmounted (and its process gone) on drop.
struct CachedMount {
    dir: tempfile::TempDir,
    cache: PathBuf,
}

impl CachedMount {
    fn new(server: &Server, cache: &Path, extra: &[&str]) -> CachedMount {
        let dir = tempfile::tempdir().unwrap();
        let output = mount_command(server, dir.path(), cache)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "mount failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(is_mounted(dir.path()));
        CachedMount {
            dir,
            cache: cache.to_path_buf(),
        }
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(name)).unwrap()
    }

    /// Unmounts, then waits until the mount process released the folder: by then it has written
    /// every queued block.
    fn unmount(self) {
        drop(self);
    }
}

impl Drop for CachedMount {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        unmount_by(self.dir.path(), deadline);
        while is_locked(&self.cache) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `scribefs mount BUCKET DIR --cache-dir CACHE`.
fn mount_command(server: &Server, dir: &Path, cache: &Path) -> Command {
    let mut command = scribefs(server);
    command
        .arg("mount")
        .arg(BUCKET)
        .arg(dir)
        .arg("--cache-dir")
        .arg(cache);
    command
}

/// Whether a mount process holds the folder's lock.
fn is_locked(cache: &Path) -> bool {
    let Ok(file) = std::fs::File::open(cache.join(".lock")) else {
        return false;
    };
    // SAFETY: flock on an fd we own; closing the file releases our probe's lock.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) != 0 }
}

fn block_files(cache: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for shard in std::fs::read_dir(cache.join("blocks")).unwrap().flatten() {
        for file in std::fs::read_dir(shard.path()).unwrap().flatten() {
            files.push(file.path());
        }
    }
    files.sort();
    files
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    fastrand::Rng::with_seed(seed).fill(&mut data);
    data
}

/// Ledger-encoded segments (plain and gzip, non-contiguous ids) and one of 5 MiB + 3 bytes.
fn ledger_server() -> (Server, Vec<(String, Vec<u8>)>) {
    let server = Server::start(&[BUCKET]);
    let mut files = Vec::new();
    for segment in demo_segments(5, 9).unwrap() {
        put_directly(&server, &segment_key(segment.id), &segment.body);
        put_directly(&server, &meta_key(segment.id), &segment.metadata_json());
        files.push((file_name(segment.id, SegmentFile::Data), segment.body));
    }
    let big = random_bytes(5 * 1024 * 1024 + 3, 77);
    put_directly(&server, &segment_key(0xb16), &big);
    files.push((file_name(0xb16, SegmentFile::Data), big));
    (server, files)
}

#[test]
fn a_second_mount_rereads_segments_from_disk_without_a_get() {
    let (server, files) = ledger_server();
    let cache = tempfile::tempdir().unwrap();
    let args = ["--layout", "segments", "--metadata-ttl", "indefinite"];
    let first = CachedMount::new(&server, cache.path(), &args);
    for (name, body) in &files {
        assert!(first.read(name) == *body, "{name}");
    }
    first.unmount();
    // 5 one-block segments and the 6 blocks of the big one.
    assert_eq!(block_files(cache.path()).len(), 11);

    let second = CachedMount::new(&server, cache.path(), &args);
    server.reset_stats();
    for (name, body) in &files {
        assert!(second.read(name) == *body, "{name}");
    }
    let stats = server.stats();
    assert_eq!(stats.get, 0, "{stats:?}");
}

#[test]
fn a_changed_object_is_fetched_again_and_an_unchanged_one_is_not() {
    let server = Server::start(&[BUCKET]);
    put_directly(&server, "a.bin", b"version one");
    put_directly(&server, "b.bin", b"stays the same");
    let cache = tempfile::tempdir().unwrap();
    let first = CachedMount::new(&server, cache.path(), &[]);
    assert_eq!(first.read("a.bin"), b"version one");
    assert_eq!(first.read("b.bin"), b"stays the same");
    first.unmount();

    // Same length, other bytes: only the ETag tells them apart.
    put_directly(&server, "a.bin", b"version two");
    let second = CachedMount::new(&server, cache.path(), &[]);
    server.reset_stats();
    assert_eq!(second.read("a.bin"), b"version two");
    assert_eq!(second.read("b.bin"), b"stays the same");
    assert_eq!(server.stats().get, 1, "{:?}", server.stats());
}

#[test]
fn a_damaged_cache_file_is_detected_and_fetched_again() {
    let server = Server::start(&[BUCKET]);
    let body = random_bytes(300_000, 5);
    put_directly(&server, "data.bin", &body);
    let cache = tempfile::tempdir().unwrap();
    let first = CachedMount::new(&server, cache.path(), &[]);
    assert!(first.read("data.bin") == body);
    first.unmount();

    let files = block_files(cache.path());
    assert_eq!(files.len(), 1);
    let mut stored = std::fs::read(&files[0]).unwrap();
    let middle = stored.len() - 1000;
    stored[middle] ^= 0x40;
    std::fs::write(&files[0], &stored).unwrap();

    let second = CachedMount::new(&server, cache.path(), &[]);
    server.reset_stats();
    assert!(second.read("data.bin") == body, "damaged bytes were served");
    assert_eq!(server.stats().get, 1);
    second.unmount();

    // The refetched block replaced the damaged file: a third mount reads it from disk.
    let third = CachedMount::new(&server, cache.path(), &[]);
    server.reset_stats();
    assert!(third.read("data.bin") == body);
    assert_eq!(server.stats().get, 0);
}

#[test]
fn the_folder_stays_within_its_size() {
    let server = Server::start(&[BUCKET]);
    let bodies: Vec<Vec<u8>> = (0..4).map(|n| random_bytes(2 << 20, n)).collect();
    for (n, body) in bodies.iter().enumerate() {
        put_directly(&server, &format!("f{n}"), body);
    }
    let cache = tempfile::tempdir().unwrap();
    let mount = CachedMount::new(&server, cache.path(), &["--cache-dir-size", "3"]);
    for (n, body) in bodies.iter().enumerate() {
        assert!(mount.read(&format!("f{n}")) == *body);
    }
    mount.unmount();
    // 1 MiB blocks plus a header each: two fit in 3 MiB, three do not.
    let files = block_files(cache.path());
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(bytes <= 3 << 20, "{bytes}");
}

/// `scribefs mount` with `--cache-dir cache` must fail, mount nothing, and say why in one
/// line; returns that line.
fn refused_mount(server: &Server, cache: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let output = mount_command(server, dir.path(), cache).output().unwrap();
    assert!(!output.status.success());
    assert!(!is_mounted(dir.path()));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr
}

#[test]
fn a_second_mount_on_a_folder_in_use_is_refused_in_one_line() {
    let server = Server::start(&[BUCKET]);
    let cache = tempfile::tempdir().unwrap();
    let _first = CachedMount::new(&server, cache.path(), &[]);
    let line = refused_mount(&server, cache.path());
    assert!(line.contains("in use by another scribefs mount"), "{line}");
}

#[test]
fn a_cache_dir_that_cannot_be_a_folder_is_one_line() {
    let server = Server::start(&[BUCKET]);
    let file = tempfile::NamedTempFile::new().unwrap();
    let line = refused_mount(&server, file.path());
    assert!(
        line.contains(&format!("cache dir {}", file.path().display())),
        "{line}"
    );
}
