//! A real mount under load: parallel writers and readers, a 1 GiB file, an upload that fails at
//! close, and the memory a mount holds after walking a large tree.

mod common;

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::IntoRawFd;
use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use common::mount::Mount;
use scribefs::store::PutOptions;
use scribefs::store::memory::StoredObject;

const MIB: usize = 1 << 20;

/// xorshift64*: a fast, seedable stream of bytes standing in for /dev/urandom.
struct Noise(u64);

impl Noise {
    fn new(seed: u64) -> Self {
        Noise(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn fill(&mut self, words: &mut [u64]) {
        for word in words {
            *word = self.next();
        }
    }

    fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut noise = Noise::new(seed);
        let mut data = Vec::with_capacity(len + 8);
        while data.len() < len {
            data.extend_from_slice(&noise.next().to_le_bytes());
        }
        data.truncate(len);
        data
    }
}

/// A buffer of whole words, seen as bytes for I/O: generating and hashing word by word keeps
/// a 1 GiB stream fast in an unoptimized test build.
struct Words(Vec<u64>);

impl Words {
    fn bytes(&self) -> &[u8] {
        // SAFETY: any u64 is 8 initialized bytes; the slice covers exactly the Vec's elements.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast(), self.0.len() * 8) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and any byte pattern is a valid u64.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast(), self.0.len() * 8) }
    }
}

/// A 64-bit streaming hash over words (FNV-like multiply, with a rotation to mix high bits down).
#[derive(Default, Debug, PartialEq, Eq)]
struct Hash64 {
    state: u64,
    words: u64,
}

impl Hash64 {
    fn update(&mut self, words: &[u64]) {
        for word in words {
            self.state = (self.state ^ word)
                .wrapping_mul(0x0000_0100_0000_01B3)
                .rotate_left(29);
        }
        self.words += words.len() as u64;
    }
}

/// close(2) with its result: dropping a `File` throws the close-to-S3 error away.
fn close(file: File) -> io::Result<()> {
    let fd = file.into_raw_fd();
    // SAFETY: `fd` came from `into_raw_fd`, so it is open and owned by nobody else.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[test]
fn eight_threads_write_and_read_their_own_files_at_once() {
    // 6 MiB in 5 MiB parts: every file is a multipart upload of two parts.
    let mount = Mount::new(&["--part-size", "5M"]);
    std::fs::create_dir(mount.path("par")).unwrap();
    std::thread::scope(|scope| {
        for thread in 0..8u64 {
            let mount = &mount;
            scope.spawn(move || {
                let path = mount.path(&format!("par/file-{thread}"));
                let data = Noise::bytes(thread + 1, 6 * MIB);
                let mut file = File::create(&path).unwrap();
                for chunk in data.chunks(128 * 1024) {
                    file.write_all(chunk).unwrap();
                }
                close(file).unwrap();
                let back = std::fs::read(&path).unwrap();
                assert!(back == data, "thread {thread} read back other bytes");
            });
        }
    });
    let bucket = mount.server.bucket("test");
    for thread in 0..8u64 {
        let object = bucket.object(&format!("par/file-{thread}")).unwrap();
        assert!(object.data.as_ref() == Noise::bytes(thread + 1, 6 * MIB).as_slice());
    }
    assert!(bucket.pending_upload_ids().is_empty());
}

#[test]
fn a_one_gib_file_reads_back_the_bytes_written() {
    const SIZE: usize = 1 << 30;
    let mount = Mount::new(&[]);
    let path = mount.path("gib.bin");
    let mut noise = Noise::new(0x5EED);
    let mut written = Hash64::default();
    let mut chunk = Words(vec![0; MIB / 8]);
    let mut file = File::create(&path).unwrap();
    for _ in 0..SIZE / MIB {
        noise.fill(&mut chunk.0);
        written.update(&chunk.0);
        file.write_all(chunk.bytes()).unwrap();
    }
    close(file).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), SIZE as u64);

    let mut read = Hash64::default();
    let mut file = File::open(&path).unwrap();
    for _ in 0..SIZE / MIB {
        file.read_exact(chunk.bytes_mut()).unwrap();
        read.update(&chunk.0);
    }
    assert_eq!(
        file.read(chunk.bytes_mut()).unwrap(),
        0,
        "no bytes past the end"
    );
    assert_eq!(read, written);
    let bucket = mount.server.bucket("test");
    assert_eq!(bucket.object("gib.bin").unwrap().data.len(), SIZE);
    assert!(bucket.pending_upload_ids().is_empty());
}

#[test]
fn an_upload_that_fails_at_close_reports_it_and_leaves_nothing() {
    let mount = Mount::new(&["--max-retries", "1"]);
    std::fs::create_dir(mount.path("d")).unwrap();
    let path = mount.path("d/doomed");
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    file.write_all(b"bytes S3 will refuse").unwrap();
    mount.server.set_fail_rate(1.0);
    let closed = close(file);
    mount.server.set_fail_rate(0.0);
    let error = closed.expect_err("close must report the failed upload");
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");

    let bucket = mount.server.bucket("test");
    assert!(bucket.object("d/doomed").is_none());
    assert!(bucket.pending_upload_ids().is_empty());
    assert_eq!(
        std::fs::metadata(&path).unwrap_err().raw_os_error(),
        Some(libc::ENOENT)
    );
    let names: Vec<_> = std::fs::read_dir(mount.path("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(names.is_empty(), "listed: {names:?}");
    // The name is free again: a new file there uploads normally.
    std::fs::write(&path, b"second try").unwrap();
    assert_eq!(
        bucket.object("d/doomed").unwrap().data.as_ref(),
        b"second try"
    );
}

/// Resident memory of the process serving `mount_dir`, in KiB.
fn mount_rss_kib(mount_dir: &Path) -> u64 {
    let output = Command::new("pgrep")
        .arg("-f")
        .arg(mount_dir)
        .output()
        .unwrap();
    let pids = String::from_utf8(output.stdout).unwrap();
    let pid = pids.lines().next().expect("the mount process runs");
    assert_eq!(pids.lines().count(), 1, "one process serves the mount");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `find -ls` over the mount (a lookup and stat of every entry): the number of entries.
fn find(mount: &Mount) -> usize {
    mount.sh_ok("find . -ls | wc -l").trim().parse().unwrap()
}

#[test]
fn walking_a_large_tree_twice_does_not_grow_memory() {
    const DIRS: usize = 20;
    const PER_DIR: usize = 1000;
    let mount = Mount::new(&[]);
    let bucket = mount.server.bucket("test");
    for dir in 0..DIRS {
        for file in 0..PER_DIR {
            let key = format!("tree/dir-{dir:02}/file-{file:04}");
            bucket.insert(&key, StoredObject::new(Bytes::new(), PutOptions::default()));
        }
    }
    // ".", "tree", the directories and the files.
    let entries = 2 + DIRS + DIRS * PER_DIR;
    assert_eq!(find(&mount), entries);
    let first = mount_rss_kib(mount.root());
    assert_eq!(find(&mount), entries);
    let second = mount_rss_kib(mount.root());
    // Generous: the second walk may only touch memory the first one already used.
    assert!(
        second <= first + first / 8 + 4 * 1024,
        "RSS grew from {first} KiB to {second} KiB"
    );
}

#[test]
fn a_file_closed_by_another_thread_of_the_opener_is_in_s3_when_close_returns() {
    use std::io::Write;
    use std::os::fd::IntoRawFd;
    let mount = Mount::new(&[]);
    for round in 0..5 {
        let name = format!("threaded-{round}.bin");
        let mut file = std::fs::File::create(mount.path(&name)).unwrap();
        file.write_all(b"written by one thread, closed by another")
            .unwrap();
        let fd = file.into_raw_fd();
        // SAFETY: the fd is ours alone; it is closed exactly once, in that thread.
        let closed = std::thread::spawn(move || unsafe { libc::close(fd) })
            .join()
            .unwrap();
        assert_eq!(closed, 0);
        let object = mount.server.bucket("test").object(&name);
        assert!(
            object.is_some(),
            "round {round}: close returned before the upload"
        );
    }
}
