//! Differential property test: random sequences of file system calls applied to a real mount
//! and to a local directory must give the same results (success or errno, bytes read) and
//! leave the same tree. Every call opens, acts and closes, so close-to-S3 semantics apply and
//! each close's result is compared too. The only accepted differences are the ones listed in
//! docs/SEMANTICS.md ("Documented differences"); this test looks at none of them (modes,
//! owners, link counts, files held open across calls).

mod common;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;

use common::mount::Mount;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Names chosen to meet S3's ordering traps: `a-` sorts between `a` and `a/`.
const NAMES: [&str; 4] = ["a", "b", "a-", "d"];

#[derive(Debug, Clone)]
enum Op {
    /// Open with O_CREAT|O_TRUNC, write, close.
    Create(String, Vec<u8>),
    /// Open with O_CREAT|O_EXCL, write, close.
    CreateNew(String, Vec<u8>),
    /// Open O_RDWR, write at an offset, read the whole file back through the same handle.
    WriteRead(String, u64, Vec<u8>),
    /// Open an existing file for writing, write at an offset, close.
    WriteAt(String, u64, Vec<u8>),
    Append(String, Vec<u8>),
    /// Open for writing, ftruncate, close.
    Truncate(String, u64),
    /// truncate(2) by path, no open file.
    TruncatePath(String, u64),
    Read(String),
    /// Kind and size as stat shows them.
    Stat(String),
    Unlink(String),
    Mkdir(String),
    Rmdir(String),
    Rename(String, String),
}

/// What a call returned: the bytes read (empty for other calls), or the errno.
type Outcome = Result<Vec<u8>, i32>;

/// A path of one or two components, each level equally likely, so that second-level calls
/// often find their parent.
fn path() -> impl Strategy<Value = String> {
    let name = || prop::sample::select(&NAMES[..]);
    prop_oneof![
        name().prop_map(str::to_string),
        (name(), name()).prop_map(|(parent, child)| format!("{parent}/{child}")),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    // Mostly a few bytes; sometimes enough to cross page boundaries.
    let data = || {
        prop_oneof![
            4 => prop::collection::vec(any::<u8>(), 0..24),
            1 => prop::collection::vec(any::<u8>(), 4000..9000),
        ]
    };
    let offset = || prop_oneof![4 => 0..40u64, 1 => 4090..8200u64];
    prop_oneof![
        3 => (path(), data()).prop_map(|(p, d)| Op::Create(p, d)),
        1 => (path(), data()).prop_map(|(p, d)| Op::CreateNew(p, d)),
        2 => (path(), offset(), data()).prop_map(|(p, o, d)| Op::WriteAt(p, o, d)),
        1 => (path(), offset(), data()).prop_map(|(p, o, d)| Op::WriteRead(p, o, d)),
        2 => (path(), data()).prop_map(|(p, d)| Op::Append(p, d)),
        1 => (path(), offset()).prop_map(|(p, n)| Op::Truncate(p, n)),
        1 => (path(), offset()).prop_map(|(p, n)| Op::TruncatePath(p, n)),
        2 => path().prop_map(Op::Read),
        1 => path().prop_map(Op::Stat),
        1 => path().prop_map(Op::Unlink),
        3 => path().prop_map(Op::Mkdir),
        1 => path().prop_map(Op::Rmdir),
        2 => (path(), path()).prop_map(|(a, b)| Op::Rename(a, b)),
    ]
}

/// close(2) with its result: dropping a `File` would throw away the error close-to-S3 reports.
fn close(file: File) -> io::Result<()> {
    let fd = file.into_raw_fd();
    // SAFETY: `fd` came from `into_raw_fd`, so it is open and owned by nobody else.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn truncate(path: &Path, len: u64) -> io::Result<()> {
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call.
    if unsafe { libc::truncate(path.as_ptr(), len as libc::off_t) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Runs `act` on the opened file, then closes it; the first error wins.
fn with_file(
    options: &OpenOptions,
    path: &Path,
    act: impl FnOnce(&mut File) -> io::Result<Vec<u8>>,
) -> io::Result<Vec<u8>> {
    let mut file = options.open(path)?;
    let result = act(&mut file);
    let closed = close(file);
    let out = result?;
    closed?;
    Ok(out)
}

fn apply(root: &Path, op: &Op) -> Outcome {
    let result = match op {
        Op::Create(p, data) => with_file(
            OpenOptions::new().write(true).create(true).truncate(true),
            &root.join(p),
            |f| f.write_all(data).map(|_| Vec::new()),
        ),
        Op::CreateNew(p, data) => with_file(
            OpenOptions::new().write(true).create_new(true),
            &root.join(p),
            |f| f.write_all(data).map(|_| Vec::new()),
        ),
        Op::WriteRead(p, offset, data) => with_file(
            OpenOptions::new().read(true).write(true),
            &root.join(p),
            |f| {
                f.write_all_at(data, *offset)?;
                let mut back = Vec::new();
                f.seek(SeekFrom::Start(0))?;
                f.read_to_end(&mut back)?;
                Ok(back)
            },
        ),
        Op::WriteAt(p, offset, data) => {
            with_file(OpenOptions::new().write(true), &root.join(p), |f| {
                f.write_all_at(data, *offset).map(|_| Vec::new())
            })
        }
        Op::Append(p, data) => with_file(OpenOptions::new().append(true), &root.join(p), |f| {
            f.write_all(data).map(|_| Vec::new())
        }),
        Op::Truncate(p, len) => with_file(OpenOptions::new().write(true), &root.join(p), |f| {
            f.set_len(*len).map(|_| Vec::new())
        }),
        Op::TruncatePath(p, len) => truncate(&root.join(p), *len).map(|_| Vec::new()),
        Op::Read(p) => std::fs::read(root.join(p)),
        Op::Stat(p) => std::fs::metadata(root.join(p)).map(|m| {
            format!(
                "dir={} size={}",
                m.is_dir(),
                if m.is_dir() { 0 } else { m.len() }
            )
            .into_bytes()
        }),
        Op::Unlink(p) => std::fs::remove_file(root.join(p)).map(|_| Vec::new()),
        Op::Mkdir(p) => std::fs::create_dir(root.join(p)).map(|_| Vec::new()),
        Op::Rmdir(p) => std::fs::remove_dir(root.join(p)).map(|_| Vec::new()),
        Op::Rename(from, to) => std::fs::rename(root.join(from), root.join(to)).map(|_| Vec::new()),
    };
    result.map_err(|e| e.raw_os_error().unwrap_or(-1))
}

/// What a tree walk found at one path: a directory, a file's contents, or an errno.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    Directory,
    File(Vec<u8>),
    Error(i32),
}

/// Every path below `root` with what it holds.
fn tree(root: &Path) -> BTreeMap<String, Found> {
    fn errno(e: io::Error) -> Found {
        Found::Error(e.raw_os_error().unwrap_or(-1))
    }
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Found>) {
        let relative = |path: &Path| {
            path.strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                out.insert(relative(dir), errno(e));
                return;
            }
        };
        for entry in entries {
            let path = match entry {
                Ok(entry) => entry.path(),
                Err(e) => {
                    out.insert(relative(dir), errno(e));
                    continue;
                }
            };
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_dir() => {
                    out.insert(relative(&path), Found::Directory);
                    walk(root, &path, out);
                }
                Ok(_) => {
                    let found = std::fs::read(&path).map_or_else(errno, Found::File);
                    out.insert(relative(&path), found);
                }
                Err(e) => {
                    out.insert(relative(&path), errno(e));
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn run_case(mounted: &Path, local: &Path, ops: &[Op]) -> Result<(), TestCaseError> {
    std::fs::create_dir(mounted).unwrap();
    std::fs::create_dir(local).unwrap();
    for (step, op) in ops.iter().enumerate() {
        let expected = apply(local, op);
        let actual = apply(mounted, op);
        prop_assert_eq!(actual, expected, "step {}: {:?}", step, op);
    }
    prop_assert_eq!(tree(mounted), tree(local), "final tree");
    Ok(())
}

#[test]
fn a_mount_behaves_like_a_local_directory() {
    differential(&[]);
}

/// Every lookup, stat and listing goes to S3: the paths that refresh from the store.
#[test]
fn a_mount_without_metadata_cache_behaves_like_a_local_directory() {
    differential(&["--metadata-ttl", "0"]);
}

fn differential(args: &[&str]) {
    let mount = Mount::new(args);
    let local = tempfile::tempdir().unwrap();
    let config = Config {
        // 24 cases keep the run short; PROPTEST_CASES=1000 for a longer hunt.
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(24),
        max_shrink_iters: 256,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let case = std::sync::atomic::AtomicUsize::new(0);
    let result = runner.run(&prop::collection::vec(op_strategy(), 1..30), |ops| {
        // Each case (and each shrinking attempt) starts in a fresh directory on both sides.
        let name = format!("case-{}", case.fetch_add(1, Ordering::Relaxed));
        run_case(&mount.path(&name), &local.path().join(&name), &ops)
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

/// Renaming gives the object a new ETag when S3 computes it afresh (a multipart source becomes
/// a single-part copy); reads after the rename must use the new one.
#[test]
fn a_renamed_multipart_file_stays_readable() {
    let mount = Mount::new(&["--part-size", "5M", "--metadata-ttl", "60"]);
    let data: Vec<u8> = (0..11u32 << 20).map(|i| (i % 253) as u8).collect();
    std::fs::write(mount.path("big"), &data).unwrap();
    let bucket = mount.server.bucket("test");
    assert!(bucket.object("big").unwrap().etag.ends_with("-3\""));
    std::fs::rename(mount.path("big"), mount.path("moved")).unwrap();
    assert!(std::fs::read(mount.path("moved")).unwrap() == data);
    std::fs::read_dir(mount.root()).unwrap().for_each(drop);
    assert!(std::fs::read(mount.path("moved")).unwrap() == data);
}

/// truncate(2) and chmod of a closed file change its ETag; a later `ls` within the TTL must not
/// bring the old one back from the cached listing.
#[test]
fn truncate_and_chmod_by_path_survive_a_listing() {
    use std::os::unix::fs::PermissionsExt;
    let mount = Mount::new(&["--metadata-ttl", "60"]);
    std::fs::write(mount.path("f"), b"0123456789").unwrap();
    std::fs::read_dir(mount.root()).unwrap().for_each(drop);
    truncate(&mount.path("f"), 4).unwrap();
    std::fs::read_dir(mount.root()).unwrap().for_each(drop);
    assert_eq!(std::fs::read(mount.path("f")).unwrap(), b"0123");
    std::fs::set_permissions(mount.path("f"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::read_dir(mount.root()).unwrap().for_each(drop);
    assert_eq!(std::fs::read(mount.path("f")).unwrap(), b"0123");
    let mode = std::fs::metadata(mount.path("f"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// A file open for writing is newer here than in S3: once its attributes expire, stat and the
/// kernel's O_APPEND offset must still see the local size, not the object's.
#[test]
fn an_open_file_keeps_its_local_size_after_the_ttl() {
    let mount = Mount::new(&["--metadata-ttl", "0"]);
    let path = mount.path("log");
    std::fs::write(&path, b"abc").unwrap();
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(b"de").unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 5);
    file.write_all(b"fg").unwrap();
    close(file).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"abcdefg");

    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    file.write_all_at(b"XYZW", 5).unwrap();
    let mut back = Vec::new();
    file.read_to_end(&mut back).unwrap();
    close(file).unwrap();
    assert_eq!(back, b"abcdeXYZW");
}
