//! Differential property test: random sequences of file system calls applied to a real mount
//! and to a local directory must give the same results (success or errno, bytes read) and
//! leave the same tree after every step: type, size, contents, mode (setuid, setgid and sticky
//! bits included), owner, group and symlink target of every entry, and the same order of
//! times (a call that moves a file's mtime or ctime locally moves it to "now" in the mount
//! too; one that leaves it locally leaves it in the mount; an explicit time is kept to the
//! second). Every call opens, acts and closes, so close-to-S3 semantics apply and each
//! close's result is compared too. One phase runs as root, one as an unprivileged user on a
//! mount with `--allow-other`, where EACCES and EPERM must match the local ones.
//!
//! The accepted differences, listed in docs/SEMANTICS.md ("Documented differences"), are what
//! S3 and the s3fs format cannot hold, and this test looks at none of them:
//! - atime (S3 has none) and sub-second times (s3fs's headers hold seconds);
//! - link counts and hard links (an object has one key; `link` is `EPERM`, tested in
//!   tests/fuse_posix.rs), and the size of a directory;
//! - the times after a truncate to the file's current size (POSIX moves them only when the
//!   size changes);
//! - a directory's own mtime and ctime when entries are added or removed (that would be a
//!   PUT of its marker per change), and the times of the files below a renamed directory
//!   (each key is copied as it is, and S3 gives the copy a new LastModified);
//! - files held open across calls.

mod common;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::mount::Mount;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

/// Names chosen to meet S3's ordering traps: `a-` sorts between `a` and `a/`.
const NAMES: [&str; 4] = ["a", "b", "a-", "d"];
/// Symlink targets: names in the same directory, a deeper path, a missing name and the
/// directory itself (so `a/a/a` loops). None leaves the case's directory.
const TARGETS: [&str; 5] = ["a", "b", "d/a", "missing", "."];
/// Modes for chmod, with setuid, setgid and sticky bits. None has the sticky bit together
/// with setuid or setgid: without `default_permissions` the kernel drops the sticky bit of a
/// file whose setuid bit a chown clears (documented; the fixed sequence below checks 07777 on
/// a mount with `--default-permissions`).
const MODES: [u32; 9] = [
    0o644, 0o600, 0o755, 0o000, 0o4755, 0o2755, 0o1777, 0o6711, 0o6777,
];
/// The unprivileged user of the second phase (`nobody`).
const NOBODY: u32 = 65534;
/// Owners for chown; `None` leaves it unchanged (-1).
const OWNERS: [Option<u32>; 4] = [None, Some(0), Some(NOBODY), Some(1234)];

#[derive(Debug, Clone, Copy)]
enum Time {
    Now,
    Omit,
    /// Seconds since the epoch, in the past.
    At(i64),
}

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
    /// Type, size, mode and owner as stat (following symlinks) shows them.
    Stat(String),
    /// The same as lstat shows them.
    Lstat(String),
    Unlink(String),
    Mkdir(String),
    Rmdir(String),
    Rename(String, String),
    /// symlink(target, path).
    Symlink(String, String),
    Readlink(String),
    Mkfifo(String, u32),
    /// chmod(2), following symlinks.
    Chmod(String, u32),
    /// chown(2), following symlinks.
    Chown(String, Option<u32>, Option<u32>),
    Lchown(String, Option<u32>, Option<u32>),
    /// utimensat(2) with atime and mtime; `true` for AT_SYMLINK_NOFOLLOW.
    Utimens(String, Time, Time, bool),
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

fn time() -> impl Strategy<Value = Time> {
    prop_oneof![
        1 => Just(Time::Now),
        1 => Just(Time::Omit),
        1 => (1_000_000_000..1_600_000_000i64).prop_map(Time::At),
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
    let mode = || prop::sample::select(&MODES[..]);
    let owner = || prop::sample::select(&OWNERS[..]);
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
        1 => path().prop_map(Op::Lstat),
        1 => path().prop_map(Op::Unlink),
        3 => path().prop_map(Op::Mkdir),
        1 => path().prop_map(Op::Rmdir),
        3 => (path(), path()).prop_map(|(a, b)| Op::Rename(a, b)),
        2 => (prop::sample::select(&TARGETS[..]), path())
            .prop_map(|(t, p)| Op::Symlink(t.to_string(), p)),
        1 => path().prop_map(Op::Readlink),
        1 => (path(), mode()).prop_map(|(p, m)| Op::Mkfifo(p, m & 0o777)),
        2 => (path(), mode()).prop_map(|(p, m)| Op::Chmod(p, m)),
        1 => (path(), owner(), owner()).prop_map(|(p, u, g)| Op::Chown(p, u, g)),
        1 => (path(), owner(), owner()).prop_map(|(p, u, g)| Op::Lchown(p, u, g)),
        2 => (path(), time(), time(), any::<bool>())
            .prop_map(|(p, a, m, nofollow)| Op::Utimens(p, a, m, nofollow)),
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

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)
}

/// The result of a libc call that returns 0 or -1 with errno.
fn checked(result: libc::c_int) -> io::Result<()> {
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn truncate(path: &Path, len: u64) -> io::Result<()> {
    let path = c_path(path)?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call.
    checked(unsafe { libc::truncate(path.as_ptr(), len as libc::off_t) })
}

fn mkfifo(path: &Path, mode: u32) -> io::Result<()> {
    let path = c_path(path)?;
    // SAFETY: as for `truncate`.
    checked(unsafe { libc::mkfifo(path.as_ptr(), mode as libc::mode_t) })
}

fn utimens(path: &Path, atime: Time, mtime: Time, nofollow: bool) -> io::Result<()> {
    let spec = |time: Time| match time {
        Time::Now => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Time::Omit => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Time::At(secs) => libc::timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
    };
    let times = [spec(atime), spec(mtime)];
    let flags = if nofollow {
        libc::AT_SYMLINK_NOFOLLOW
    } else {
        0
    };
    let path = c_path(path)?;
    // SAFETY: `path` and `times` outlive the call; `times` holds the two entries it reads.
    checked(unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), times.as_ptr(), flags) })
}

/// Runs `act` on the opened file, then closes it; the first error wins. Opens are
/// non-blocking, so opening a FIFO gives the same answer (ENXIO, or EOF) on both sides
/// instead of waiting for a peer.
fn with_file(
    options: &mut OpenOptions,
    path: &Path,
    act: impl FnOnce(&mut File) -> io::Result<Vec<u8>>,
) -> io::Result<Vec<u8>> {
    let mut file = options.custom_flags(libc::O_NONBLOCK).open(path)?;
    let result = act(&mut file);
    let closed = close(file);
    let out = result?;
    closed?;
    Ok(out)
}

fn describe(meta: &std::fs::Metadata) -> Vec<u8> {
    format!(
        "type={:o} size={} mode={:o} owner={}:{}",
        meta.mode() & libc::S_IFMT,
        if meta.is_dir() { 0 } else { meta.len() },
        meta.mode() & 0o7777,
        meta.uid(),
        meta.gid()
    )
    .into_bytes()
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
        Op::Read(p) => with_file(OpenOptions::new().read(true), &root.join(p), |f| {
            let mut back = Vec::new();
            f.read_to_end(&mut back)?;
            Ok(back)
        }),
        Op::Stat(p) => std::fs::metadata(root.join(p)).map(|m| describe(&m)),
        Op::Lstat(p) => std::fs::symlink_metadata(root.join(p)).map(|m| describe(&m)),
        Op::Unlink(p) => std::fs::remove_file(root.join(p)).map(|_| Vec::new()),
        Op::Mkdir(p) => std::fs::create_dir(root.join(p)).map(|_| Vec::new()),
        Op::Rmdir(p) => std::fs::remove_dir(root.join(p)).map(|_| Vec::new()),
        Op::Rename(from, to) => std::fs::rename(root.join(from), root.join(to)).map(|_| Vec::new()),
        Op::Symlink(target, p) => {
            std::os::unix::fs::symlink(target, root.join(p)).map(|_| Vec::new())
        }
        Op::Readlink(p) => {
            std::fs::read_link(root.join(p)).map(|t| t.as_os_str().as_bytes().to_vec())
        }
        Op::Mkfifo(p, mode) => mkfifo(&root.join(p), *mode).map(|_| Vec::new()),
        Op::Chmod(p, mode) => {
            std::fs::set_permissions(root.join(p), std::fs::Permissions::from_mode(*mode))
                .map(|_| Vec::new())
        }
        Op::Chown(p, uid, gid) => {
            std::os::unix::fs::chown(root.join(p), *uid, *gid).map(|_| Vec::new())
        }
        Op::Lchown(p, uid, gid) => {
            std::os::unix::fs::lchown(root.join(p), *uid, *gid).map(|_| Vec::new())
        }
        Op::Utimens(p, atime, mtime, nofollow) => {
            utimens(&root.join(p), *atime, *mtime, *nofollow).map(|_| Vec::new())
        }
    };
    result.map_err(|e| e.raw_os_error().unwrap_or(-1))
}

/// What a tree walk found at one path: its lstat (type, size, mode, owner) and what it holds
/// (a file's contents, a symlink's target), or an errno.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    Entry { stat: String, holds: Outcome },
    Error(i32),
}

/// A non-directory's times, in the order the test compares them.
#[derive(Debug, Clone, Copy)]
struct Times {
    mtime: SystemTime,
    ctime: SystemTime,
    size: u64,
}

/// What a walk saw: every path below the root with what it holds, and the times of the
/// non-directories.
#[derive(Debug)]
struct Tree {
    found: BTreeMap<String, Found>,
    times: BTreeMap<String, Times>,
}

fn time_of(secs: i64, nanos: i64) -> SystemTime {
    UNIX_EPOCH + Duration::new(secs as u64, nanos as u32)
}

fn errno(e: io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

/// Every path below `root` with what it holds. Symlinks are not followed.
fn tree(root: &Path) -> Tree {
    fn walk(root: &Path, dir: &Path, out: &mut Tree) {
        let relative = |path: &Path| {
            path.strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                out.found.insert(relative(dir), Found::Error(errno(e)));
                return;
            }
        };
        for entry in entries {
            let path = match entry {
                Ok(entry) => entry.path(),
                Err(e) => {
                    out.found.insert(relative(dir), Found::Error(errno(e)));
                    continue;
                }
            };
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                Err(e) => {
                    out.found.insert(relative(&path), Found::Error(errno(e)));
                    continue;
                }
            };
            let stat = String::from_utf8(describe(&meta)).unwrap();
            let kind = meta.file_type();
            let holds = if kind.is_file() {
                std::fs::read(&path).map_err(errno)
            } else if kind.is_symlink() {
                std::fs::read_link(&path)
                    .map(|t| t.as_os_str().as_bytes().to_vec())
                    .map_err(errno)
            } else {
                Ok(Vec::new())
            };
            out.found
                .insert(relative(&path), Found::Entry { stat, holds });
            if kind.is_dir() {
                walk(root, &path, out);
            } else {
                let times = Times {
                    mtime: time_of(meta.mtime(), meta.mtime_nsec()),
                    ctime: time_of(meta.ctime(), meta.ctime_nsec()),
                    size: meta.len(),
                };
                out.times.insert(relative(&path), times);
            }
        }
    }
    let mut out = Tree {
        found: BTreeMap::new(),
        times: BTreeMap::new(),
    };
    walk(root, root, &mut out);
    out
}

/// Checks that the mount moved each non-directory's mtime and ctime when and only when the
/// local call did, to "now" (the second the step began, or later) or to the explicit time
/// the local side shows. `moved` is a successful rename, whose target had the source's times.
fn check_times(
    step: usize,
    local: (&Tree, &Tree),
    mounted: (&Tree, &Tree),
    began: SystemTime,
    moved: Option<(&str, &str)>,
    truncate: bool,
) -> Result<(), TestCaseError> {
    let before = |tree: &Tree, path: &str| {
        let path = match moved {
            Some((from, to)) if path == to => from.to_string(),
            _ => path.to_string(),
        };
        tree.times.get(&path).copied()
    };
    let second = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs();
    for (path, after) in &local.1.times {
        let Some(mount_after) = mounted.1.times.get(path) else {
            continue;
        };
        if moved.is_some_and(|(_, to)| path.starts_with(&format!("{to}/"))) {
            // Documented: a directory rename copies each key as it is, and S3 gives the copy
            // the time of the rename as LastModified.
            continue;
        }
        let local_before = before(local.0, path);
        let mount_before = before(mounted.0, path);
        for field in ["mtime", "ctime"] {
            let get = |t: &Times| if field == "mtime" { t.mtime } else { t.ctime };
            let (now_local, now_mount) = (get(after), get(mount_after));
            let was_local = local_before.as_ref().map(get);
            let was_mount = mount_before.as_ref().map(get);
            // POSIX moves the times at truncate only when the size changes (Linux moves them
            // anyway): a truncate to the current size may leave them.
            let same_size = local_before.is_some_and(|b| b.size == after.size);
            if truncate && same_size && was_mount.map(second) == Some(second(now_mount)) {
                continue;
            }
            if was_local == Some(now_local) {
                prop_assert_eq!(
                    was_mount.map(second),
                    Some(second(now_mount)),
                    "step {}: {} of {} moved in the mount only",
                    step,
                    field,
                    path
                );
            } else if second(now_local) < second(began) - 2 {
                prop_assert_eq!(
                    second(now_mount),
                    second(now_local),
                    "step {}: {} of {} set explicitly",
                    step,
                    field,
                    path
                );
            } else {
                // Moved to now, or (a path whose times the walk did not see before, such as a
                // file renamed through a symlinked directory) the same second as the local side.
                prop_assert!(
                    second(now_mount) >= second(began) || second(now_mount) == second(now_local),
                    "step {}: {} of {} did not move to now in the mount ({:?} -> {:?})",
                    step,
                    field,
                    path,
                    was_mount,
                    now_mount
                );
            }
        }
    }
    Ok(())
}

fn run_ops(mounted: &Path, local: &Path, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut local_tree = tree(local);
    let mut mounted_tree = tree(mounted);
    prop_assert_eq!(&mounted_tree.found, &local_tree.found, "initial tree");
    for (step, op) in ops.iter().enumerate() {
        let began = SystemTime::now();
        let expected = apply(local, op);
        let actual = apply(mounted, op);
        prop_assert_eq!(&actual, &expected, "step {}: {:?}", step, op);
        let local_after = tree(local);
        let mounted_after = tree(mounted);
        prop_assert_eq!(
            &mounted_after.found,
            &local_after.found,
            "tree after step {}: {:?}",
            step,
            op
        );
        let moved = match op {
            Op::Rename(from, to) if expected.is_ok() => Some((from.as_str(), to.as_str())),
            _ => None,
        };
        check_times(
            step,
            (&local_tree, &local_after),
            (&mounted_tree, &mounted_after),
            began,
            moved,
            matches!(op, Op::Truncate(..) | Op::TruncatePath(..)),
        )
        .map_err(|e| TestCaseError::fail(format!("{e} after {op:?}")))?;
        local_tree = local_after;
        mounted_tree = mounted_after;
    }
    Ok(())
}

fn run_case(mounted: &Path, local: &Path, ops: &[Op]) -> Result<(), TestCaseError> {
    std::fs::create_dir(mounted).unwrap();
    std::fs::create_dir(local).unwrap();
    run_ops(mounted, local, ops)
}

#[test]
fn a_mount_behaves_like_a_local_directory() {
    differential(&[], Phase::Root);
}

/// Every lookup, stat and listing goes to S3: the paths that refresh from the store.
#[test]
fn a_mount_without_metadata_cache_behaves_like_a_local_directory() {
    differential(&["--metadata-ttl", "0"], Phase::Root);
}

/// An unprivileged user on a mount with `--allow-other` meets the same EACCES and EPERM as
/// in a local directory, in a tree of files and directories of root and of its own.
#[test]
fn an_unprivileged_user_meets_the_same_permissions_as_locally() {
    differential(&["--allow-other"], Phase::Nobody);
}

/// The edge cases random sequences meet only sometimes, in one fixed sequence: each op's
/// local result is the errno named (so the sequence tests what it says), and the mount must
/// agree with it and with the local tree and times after every step.
#[test]
fn the_posix_edge_cases_match_a_local_directory() {
    let s = |v: &str| v.to_string();
    let steps: Vec<(Op, Option<i32>)> = vec![
        (Op::Create(s("a"), b"one".to_vec()), None),
        (Op::CreateNew(s("a"), b"two".to_vec()), Some(libc::EEXIST)),
        (Op::Mkdir(s("d")), None),
        (Op::Mkdir(s("b")), None),
        (Op::Create(s("b/a"), b"x".to_vec()), None),
        // Over an existing file, over an empty directory; not over a non-empty one.
        (Op::Create(s("a-"), b"three".to_vec()), None),
        (Op::Rename(s("a-"), s("a")), None),
        (Op::Rename(s("d"), s("b")), Some(libc::ENOTEMPTY)),
        (Op::Mkdir(s("a-")), None),
        (Op::Rename(s("d"), s("a-")), None),
        // Type mismatches, and a directory into its own subtree.
        (Op::Rename(s("a"), s("b")), Some(libc::EISDIR)),
        (Op::Rename(s("b"), s("a")), Some(libc::ENOTDIR)),
        (Op::Rename(s("b"), s("b/d")), Some(libc::EINVAL)),
        // Symlinks: readlink, lstat, through a link, a loop, lchown of the link only.
        (Op::Symlink(s("a"), s("d")), None),
        (Op::Readlink(s("d")), None),
        (Op::Lstat(s("d")), None),
        (Op::Append(s("d"), b"+".to_vec()), None),
        (Op::Symlink(s("d"), s("b/d")), None),
        (Op::Read(s("b/d")), Some(libc::ELOOP)),
        (Op::Lchown(s("d"), Some(1234), Some(99)), None),
        (Op::Symlink(s("a"), s("a-")), Some(libc::EEXIST)),
        // A FIFO keeps its type through chmod; opening it for writing without a reader.
        (Op::Mkfifo(s("a-/a"), 0o640), None),
        (Op::Chmod(s("a-/a"), 0o4600), None),
        (Op::Stat(s("a-/a")), None),
        (Op::WriteAt(s("a-/a"), 0, b"x".to_vec()), Some(libc::ENXIO)),
        // Modes with setuid, setgid and sticky bits, owners, and times.
        (Op::Chmod(s("a"), 0o7777), None),
        (Op::Chown(s("a"), Some(NOBODY), None), None),
        (Op::Chmod(s("b"), 0o2775), None),
        (Op::Mkdir(s("b/b")), None),
        (Op::Create(s("b/a-"), Vec::new()), None),
        (
            Op::Utimens(s("a"), Time::Omit, Time::At(1_500_000_000), false),
            None,
        ),
        (Op::Utimens(s("a"), Time::Now, Time::Omit, false), None),
        (Op::Utimens(s("b/a"), Time::Omit, Time::Now, false), None),
        (Op::TruncatePath(s("a"), 2), None),
        (Op::Rename(s("a"), s("a-/b")), None),
        // Names of 255 bytes are fine; longer ones are ENAMETOOLONG, also where none exists.
        (Op::Create("n".repeat(255), b"long".to_vec()), None),
        (Op::Stat("n".repeat(256)), Some(libc::ENAMETOOLONG)),
        (Op::Chmod("n".repeat(256), 0o600), Some(libc::ENAMETOOLONG)),
        (
            Op::Create("n".repeat(256), Vec::new()),
            Some(libc::ENAMETOOLONG),
        ),
        (
            Op::Rename(s("b/a"), "n".repeat(256)),
            Some(libc::ENAMETOOLONG),
        ),
        (
            Op::Rename(s("b"), "n".repeat(256)),
            Some(libc::ENAMETOOLONG),
        ),
    ];
    let mount = Mount::new(&["--default-permissions"]);
    let local = tempfile::tempdir().unwrap();
    let (mounted, local) = (mount.path("edge"), local.path().join("edge"));
    std::fs::create_dir(&mounted).unwrap();
    std::fs::create_dir(&local).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    for (step, (op, errno)) in steps.iter().enumerate() {
        // Replays the steps so far on a scratch directory to learn this one's local result.
        let here = scratch.path().join(step.to_string());
        std::fs::create_dir(&here).unwrap();
        let mut last = Ok(Vec::new());
        for (earlier, _) in &steps[..=step] {
            last = apply(&here, earlier);
        }
        assert_eq!(last.err(), *errno, "step {step}: {op:?} locally");
    }
    let ops: Vec<Op> = steps.into_iter().map(|(op, _)| op).collect();
    run_ops(&mounted, &local, &ops).unwrap();
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Root,
    Nobody,
}

/// The tree the unprivileged phase starts from, made by root: a world-writable sticky
/// directory holding a 0600 file of root, a directory of root and one of `nobody`, each with
/// a file of the other owner, and a file of `nobody`.
fn seed_for_nobody(dir: &Path) {
    use std::os::unix::fs::chown;
    let file = |path: &str, mode: u32, owner: u32| {
        std::fs::write(dir.join(path), format!("{path} of {owner}")).unwrap();
        std::fs::set_permissions(dir.join(path), std::fs::Permissions::from_mode(mode)).unwrap();
        chown(dir.join(path), Some(owner), Some(owner)).unwrap();
    };
    let directory = |path: &str, mode: u32, owner: u32| {
        std::fs::create_dir(dir.join(path)).unwrap();
        std::fs::set_permissions(dir.join(path), std::fs::Permissions::from_mode(mode)).unwrap();
        chown(dir.join(path), Some(owner), Some(owner)).unwrap();
    };
    std::fs::create_dir(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    file("a", 0o600, 0);
    directory("b", 0o755, 0);
    file("b/a", 0o644, 0);
    directory("d", 0o755, NOBODY);
    file("d/b", 0o666, 0);
    file("a-", 0o644, NOBODY);
}

/// Drops this thread's credentials to `nobody` (uid and gid 65534, no groups). The raw
/// system calls change the calling thread only (glibc's wrappers would change every thread
/// of the test process), and a uid other than 0 drops the capabilities too.
fn become_nobody() {
    let nobody = NOBODY as libc::c_long;
    // SAFETY: plain system calls with integer arguments and a null, empty group list.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()),
            0
        );
        assert_eq!(
            libc::syscall(libc::SYS_setresgid, nobody, nobody, nobody),
            0
        );
        assert_eq!(
            libc::syscall(libc::SYS_setresuid, nobody, nobody, nobody),
            0
        );
    }
}

/// A runner seeded from `DIFFERENTIAL_SEED=<u64>` when set, else from the clock; the seed is
/// returned so a failure names it and the same cases can be replayed.
fn runner(cases: u32) -> (TestRunner, u64) {
    let config = Config {
        // PROPTEST_CASES=1000 for a longer hunt.
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        max_shrink_iters: 256,
        failure_persistence: None,
        ..Config::default()
    };
    let seed = std::env::var("DIFFERENTIAL_SEED")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            now.as_secs() ^ u64::from(now.subsec_nanos())
        });
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
    (TestRunner::new_with_rng(config, rng), seed)
}

fn differential(args: &[&str], phase: Phase) {
    let mount = Mount::new(args);
    let local = tempfile::tempdir().unwrap();
    if phase == Phase::Nobody {
        // nobody must reach the case directories on both sides (the mount's root is 0755).
        std::fs::set_permissions(local.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // 24 cases of each phase keep the run well under two minutes.
    let (mut runner, seed) = runner(24);
    let case = std::sync::atomic::AtomicUsize::new(0);
    let result = runner.run(&prop::collection::vec(op_strategy(), 1..30), |ops| {
        // Each case (and each shrinking attempt) starts in a fresh directory on both sides.
        let name = format!("case-{}", case.fetch_add(1, Ordering::Relaxed));
        let (mounted, local) = (mount.path(&name), local.path().join(&name));
        match phase {
            Phase::Root => run_case(&mounted, &local, &ops),
            Phase::Nobody => {
                seed_for_nobody(&mounted);
                seed_for_nobody(&local);
                std::thread::scope(|scope| {
                    scope
                        .spawn(|| {
                            become_nobody();
                            run_ops(&mounted, &local, &ops)
                        })
                        .join()
                        .unwrap()
                })
            }
        }
    });
    if let Err(failure) = result {
        panic!("{failure}\nreplay with DIFFERENTIAL_SEED={seed}");
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
