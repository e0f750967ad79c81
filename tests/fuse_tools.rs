//! What users run on a mount: coreutils, rsync, tar, sha256sum, find, dd, truncate, shell
//! redirections, read-only mounts, other clients changing the bucket, attribute persistence,
//! mount failures and shutdown. Every test has its own mount (and dev server); every comparison
//! is byte for byte.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::devserver::Server;
use common::mount::{
    BUCKET, Mount, assert_fails_with, delete_directly, free_local_addr, is_mounted,
    metadata_copies_done, mount_pid, put_directly, scribefs,
};

const MIB: usize = 1024 * 1024;

/// Deterministic pseudo-random bytes.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut data = vec![0u8; len];
    rng.fill(&mut data);
    data
}

/// A local tree with the shapes that trip file systems up: nesting, a few MB of random bytes,
/// an empty file, names with spaces, an empty directory.
fn local_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("a/b/c")).unwrap();
    std::fs::create_dir_all(root.join("dir with space/inner")).unwrap();
    std::fs::create_dir_all(root.join("empty dir")).unwrap();
    std::fs::write(root.join("big.bin"), random_bytes(3 * MIB + 12345, 1)).unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    std::fs::write(root.join("file with spaces.txt"), b"spaces in the name\n").unwrap();
    std::fs::write(root.join("a/top.txt"), b"top\n").unwrap();
    std::fs::write(root.join("a/run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(root.join("a/run.sh"), PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(root.join("a/secret"), b"private\n").unwrap();
    std::fs::set_permissions(root.join("a/secret"), PermissionsExt::from_mode(0o600)).unwrap();

    std::fs::write(root.join("a/b/mid.bin"), random_bytes(70_000, 2)).unwrap();
    // An old mtime, so preserving it is visible.
    run_ok(
        Command::new("touch")
            .args(["-d", "2020-05-06 07:08:09 UTC"])
            .arg(root.join("a/b/mid.bin")),
    );
    std::fs::write(root.join("a/b/c/deep.txt"), b"deep down\n").unwrap();
    std::fs::write(
        root.join("dir with space/inner/name with  two spaces"),
        random_bytes(4096, 3),
    )
    .unwrap();
    dir
}

/// Every file and directory below `root`, relative, with the file bytes (None for directories).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let relative = path.strip_prefix(root).unwrap().to_path_buf();
            let file_type = entry.file_type().unwrap();
            if file_type.is_dir() {
                out.insert(relative, None);
                walk(root, &path, out);
            } else {
                assert!(file_type.is_file(), "{} is not a file", path.display());
                out.insert(relative, Some(std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// `mode mtime name` of every file below `root` (what `cp -a` and `rsync -a` preserve).
fn modes_and_mtimes(root: &Path) -> String {
    run_ok(
        Command::new("bash")
            .arg("-c")
            .arg("find . -type f -print0 | sort -z | xargs -0 stat -c '%a %Y %n'")
            .current_dir(root),
    )
}

/// The two trees hold the same names, kinds and bytes; `diff -r` agrees.
fn assert_same_tree(expected: &Path, actual: &Path) {
    let (want, got) = (snapshot(expected), snapshot(actual));
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "names differ between {} and {}",
        expected.display(),
        actual.display()
    );
    for (path, bytes) in &want {
        assert!(
            *bytes == got[path],
            "{} differs between {} and {}",
            path.display(),
            expected.display(),
            actual.display()
        );
    }
    run_ok(Command::new("diff").arg("-r").arg(expected).arg(actual));
}

fn run_ok(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn quote(path: &Path) -> String {
    format!("'{}'", path.display())
}

fn object_bytes(mount: &Mount, key: &str) -> Vec<u8> {
    mount
        .server
        .bucket(BUCKET)
        .object(key)
        .unwrap_or_else(|| panic!("{key} is not in the bucket"))
        .data
        .to_vec()
}

#[test]
fn cp_a_into_the_mount_and_back_out_keeps_every_byte() {
    let mount = Mount::new(&[]);
    let local = local_tree();
    mount.sh_ok(&format!("cp -a {}/. tree", quote(local.path())));
    assert_same_tree(local.path(), &mount.path("tree"));
    assert_eq!(
        modes_and_mtimes(&mount.path("tree")),
        modes_and_mtimes(local.path())
    );

    // What cp wrote is what S3 holds.
    for (path, bytes) in snapshot(local.path()) {
        if let Some(bytes) = bytes {
            let key = format!("tree/{}", path.display());
            assert!(object_bytes(&mount, &key) == bytes, "{key} differs in S3");
        }
    }

    let out = tempfile::tempdir().unwrap();
    mount.sh_ok(&format!("cp -a tree {}", quote(&out.path().join("copy"))));
    assert_same_tree(local.path(), &out.path().join("copy"));
    assert_eq!(
        modes_and_mtimes(&out.path().join("copy")),
        modes_and_mtimes(local.path())
    );
    run_ok(
        Command::new("cmp")
            .arg(local.path().join("big.bin"))
            .arg(mount.path("tree/big.bin")),
    );
}

#[test]
fn cat_and_ls_l_show_contents_and_sizes() {
    let mount = Mount::new(&[]);
    let data = random_bytes(1_500_000, 4);
    std::fs::write(mount.path("random.bin"), &data).unwrap();
    mount.sh_ok("printf 'line one\\nline two\\n' > 'two lines.txt' && : > empty");

    let cat = mount.sh("cat random.bin");
    assert!(cat.status.success());
    assert!(cat.stdout == data, "cat returned other bytes");
    assert_eq!(mount.sh_ok("cat 'two lines.txt'"), "line one\nline two\n");

    let listing = mount.sh_ok("ls -l");
    let sizes: BTreeMap<String, u64> = listing
        .lines()
        .filter(|l| l.starts_with('-'))
        .map(|line| {
            // mode links owner group size month day time name...
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields[8..].join(" "), fields[4].parse().unwrap())
        })
        .collect();
    assert_eq!(
        sizes,
        BTreeMap::from([
            ("empty".to_string(), 0),
            ("random.bin".to_string(), data.len() as u64),
            ("two lines.txt".to_string(), 18),
        ]),
        "ls -l printed:\n{listing}"
    );
}

#[test]
fn mkdir_p_mv_and_rm_r_change_the_bucket() {
    let mount = Mount::new(&[]);
    mount.sh_ok("mkdir -p a/b/c && echo deep > a/b/c/f && echo top > a/f");
    assert!(mount.path("a/b/c").is_dir());
    assert_eq!(object_bytes(&mount, "a/b/c/f"), b"deep\n");

    // A file, within a directory and across directories.
    mount.sh_ok("mv a/f a/g && mv a/g a/b/moved");
    assert!(!mount.path("a/f").exists());
    assert_eq!(std::fs::read(mount.path("a/b/moved")).unwrap(), b"top\n");
    assert_eq!(object_bytes(&mount, "a/b/moved"), b"top\n");
    assert!(mount.server.bucket(BUCKET).object("a/f").is_none());

    // A directory with everything below it.
    mount.sh_ok("mv a/b x");
    assert!(!mount.path("a/b").exists());
    assert_eq!(std::fs::read(mount.path("x/c/f")).unwrap(), b"deep\n");
    assert_eq!(std::fs::read(mount.path("x/moved")).unwrap(), b"top\n");
    let keys = mount.server.bucket(BUCKET).keys();
    assert!(
        keys.iter().all(|k| !k.starts_with("a/b/")),
        "old keys left behind: {keys:?}"
    );

    mount.sh_ok("rm -r x a");
    assert_eq!(mount.sh_ok("ls -A"), "");
    assert_eq!(mount.server.bucket(BUCKET).keys(), Vec::<String>::new());
}

#[test]
fn rsync_a_into_the_mount_and_back_out() {
    let mount = Mount::new(&[]);
    let local = local_tree();
    // rsync writes `.name.XXXXXX` temporaries and renames them into place.
    mount.sh_ok(&format!("rsync -a {}/ tree/", quote(local.path())));
    assert_same_tree(local.path(), &mount.path("tree"));
    assert_eq!(
        modes_and_mtimes(&mount.path("tree")),
        modes_and_mtimes(local.path())
    );
    let keys = mount.server.bucket(BUCKET).keys();
    assert!(
        keys.iter()
            .all(|k| !k.rsplit('/').next().unwrap_or("").starts_with('.')),
        "rsync temporaries left in the bucket: {keys:?}"
    );

    // A second run changes one file and must again exit 0.
    std::fs::write(local.path().join("a/top.txt"), b"changed\n").unwrap();
    mount.sh_ok(&format!("rsync -a {}/ tree/", quote(local.path())));
    assert_eq!(object_bytes(&mount, "tree/a/top.txt"), b"changed\n");

    let out = tempfile::tempdir().unwrap();
    mount.sh_ok(&format!("rsync -a tree/ {}/", quote(out.path())));
    assert_same_tree(local.path(), out.path());
    assert_eq!(modes_and_mtimes(out.path()), modes_and_mtimes(local.path()));
}

#[test]
fn tar_out_of_and_into_the_mount() {
    let mount = Mount::new(&[]);
    let local = local_tree();
    let scratch = tempfile::tempdir().unwrap();
    let archive = scratch.path().join("tree.tar");
    run_ok(
        Command::new("tar")
            .arg("cf")
            .arg(&archive)
            .arg("-C")
            .arg(local.path())
            .arg("."),
    );

    // Unpack into the mount, pack from the mount, unpack that locally.
    mount.sh_ok(&format!(
        "mkdir unpacked && tar xf {} -C unpacked",
        quote(&archive)
    ));
    assert_same_tree(local.path(), &mount.path("unpacked"));
    let repacked = scratch.path().join("repacked.tar");
    mount.sh_ok(&format!("tar cf {} -C unpacked .", quote(&repacked)));
    let out = scratch.path().join("out");
    std::fs::create_dir(&out).unwrap();
    run_ok(
        Command::new("tar")
            .arg("xf")
            .arg(&repacked)
            .arg("-C")
            .arg(&out),
    );
    assert_same_tree(local.path(), &out);

    // An archive written into the mount reads back the same.
    mount.sh_ok(&format!("tar cf in-mount.tar -C {} .", quote(local.path())));
    let back = scratch.path().join("back");
    std::fs::create_dir(&back).unwrap();
    run_ok(
        Command::new("tar")
            .arg("xf")
            .arg(mount.path("in-mount.tar"))
            .arg("-C")
            .arg(&back),
    );
    assert_same_tree(local.path(), &back);
}

#[test]
fn sha256sum_c_verifies_files_on_the_mount() {
    let mount = Mount::new(&[]);
    let local = local_tree();
    let sums = run_ok(
        Command::new("bash")
            .arg("-c")
            .arg("find . -type f -print0 | sort -z | xargs -0 sha256sum")
            .current_dir(local.path()),
    );
    mount.sh_ok(&format!("cp -r {}/. .", quote(local.path())));
    std::fs::write(mount.path("SHA256SUMS"), &sums).unwrap();
    let checked = mount.sh_ok("sha256sum -c SHA256SUMS");
    assert_eq!(checked.matches(": OK").count(), sums.lines().count());

    // A changed byte is caught.
    mount.sh_ok("printf X | dd of=a/b/mid.bin bs=1 seek=100 conv=notrunc status=none");
    let output = mount.sh("sha256sum -c --quiet SHA256SUMS");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("a/b/mid.bin: FAILED"));
}

#[test]
fn find_lists_every_file_and_directory() {
    let mount = Mount::new(&[]);
    let local = local_tree();
    mount.sh_ok(&format!("cp -r {}/. .", quote(local.path())));
    let list = |dir: &Path| {
        let out = run_ok(Command::new("find").arg(".").current_dir(dir));
        let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    assert_eq!(list(mount.root()), list(local.path()));
    let files = mount.sh_ok("find . -type f | sort");
    assert!(files.contains("./dir with space/inner/name with  two spaces\n"));
    let dirs = mount.sh_ok("find . -type d | sort");
    assert!(dirs.contains("./empty dir\n"));
}

#[test]
fn dd_conv_notrunc_writes_in_place_like_on_a_local_file() {
    let mount = Mount::new(&[]);
    let local = tempfile::tempdir().unwrap();
    let original = random_bytes(2 * MIB + 777, 5);
    std::fs::write(mount.path("f.bin"), &original).unwrap();
    std::fs::write(local.path().join("f.bin"), &original).unwrap();
    std::fs::write(local.path().join("patch"), random_bytes(10_000, 6)).unwrap();

    // Inside the file, across its end, and past its end (a hole).
    for (seek, count) in [(1000, 3), (2 * MIB / 512 + 1, 20), (6000, 2)] {
        let dd = |target: &Path| {
            format!(
                "dd if={} of={} bs=512 seek={seek} count={count} conv=notrunc status=none",
                quote(&local.path().join("patch")),
                quote(target)
            )
        };
        mount.sh_ok(&dd(&mount.path("f.bin")));
        run_ok(
            Command::new("bash")
                .arg("-c")
                .arg(dd(&local.path().join("f.bin"))),
        );
        let want = std::fs::read(local.path().join("f.bin")).unwrap();
        assert!(
            std::fs::read(mount.path("f.bin")).unwrap() == want,
            "after dd seek={seek} the mount differs"
        );
        assert!(
            object_bytes(&mount, "f.bin") == want,
            "S3 differs after seek={seek}"
        );
    }
    run_ok(
        Command::new("cmp")
            .arg(local.path().join("f.bin"))
            .arg(mount.path("f.bin")),
    );
}

#[test]
fn truncate_shrinks_and_grows() {
    let mount = Mount::new(&[]);
    let data = random_bytes(100_000, 7);
    std::fs::write(mount.path("t"), &data).unwrap();

    mount.sh_ok("truncate -s 1234 t");
    assert!(std::fs::read(mount.path("t")).unwrap() == data[..1234]);
    assert!(object_bytes(&mount, "t") == data[..1234]);

    mount.sh_ok("truncate -s 5000 t");
    let mut grown = data[..1234].to_vec();
    grown.resize(5000, 0);
    assert!(std::fs::read(mount.path("t")).unwrap() == grown);
    assert!(object_bytes(&mount, "t") == grown);
    assert_eq!(mount.sh_ok("stat -c %s t"), "5000\n");

    mount.sh_ok("truncate -s 0 t");
    assert_eq!(std::fs::read(mount.path("t")).unwrap(), b"");
    assert_eq!(object_bytes(&mount, "t"), b"");
}

#[test]
fn append_with_shell_redirection() {
    let mount = Mount::new(&[]);
    mount.sh_ok("echo one > log.txt");
    mount.sh_ok("echo two >> log.txt");
    mount.sh_ok("for i in 3 4 5; do echo line $i >> log.txt; done");
    let want = "one\ntwo\nline 3\nline 4\nline 5\n";
    assert_eq!(mount.sh_ok("cat log.txt"), want);
    assert_eq!(object_bytes(&mount, "log.txt"), want.as_bytes());
    // Appending to a multi-megabyte file keeps its head.
    let big = random_bytes(3 * MIB, 8);
    std::fs::write(mount.path("big"), &big).unwrap();
    mount.sh_ok("echo tail >> big");
    let mut want = big.clone();
    want.extend_from_slice(b"tail\n");
    assert!(object_bytes(&mount, "big") == want);
}

#[test]
fn rmdir_of_a_non_empty_directory_fails_with_enotempty() {
    let mount = Mount::new(&[]);
    mount.sh_ok("mkdir -p d/sub && echo x > d/f && mkdir e");
    assert_fails_with(&mount, "rmdir d", "Directory not empty");
    assert!(mount.path("d/f").exists());
    mount.sh_ok("rm d/f");
    assert_fails_with(&mount, "rmdir d", "Directory not empty");
    mount.sh_ok("rmdir d/sub d e");
    assert_eq!(mount.sh_ok("ls -A"), "");
    assert_eq!(mount.server.bucket(BUCKET).keys(), Vec::<String>::new());
}

#[test]
fn read_only_mount_refuses_every_change_with_erofs() {
    let server = Server::start(&[BUCKET]);
    put_directly(&server, "keep.txt", b"keep\n");
    put_directly(&server, "dir/inner.txt", b"inner\n");
    let mount = Mount::on(server, BUCKET, &["--read-only"]);
    assert_eq!(mount.sh_ok("cat keep.txt dir/inner.txt"), "keep\ninner\n");
    for script in [
        "echo x > new.txt",
        "echo x >> keep.txt",
        "echo x > keep.txt",
        "rm keep.txt",
        "mkdir newdir",
        "rmdir dir",
        "mv keep.txt moved.txt",
        "truncate -s 0 keep.txt",
        "chmod 600 keep.txt",
        "touch keep.txt",
        "cp keep.txt copy.txt",
    ] {
        assert_fails_with(&mount, script, "Read-only file system");
    }
    assert_eq!(
        mount.server.bucket(BUCKET).keys(),
        vec!["dir/inner.txt".to_string(), "keep.txt".to_string()]
    );
    assert_eq!(object_bytes(&mount, "keep.txt"), b"keep\n");
}

#[test]
fn changes_by_another_client_show_after_the_ttl() {
    let server = Server::start(&[BUCKET]);
    put_directly(&server, "changed.txt", b"old contents\n");
    put_directly(&server, "deleted.txt", b"soon gone\n");
    put_directly(&server, "dir/deleted-too.txt", b"gone\n");
    let mount = Mount::on(server, BUCKET, &["--metadata-ttl", "1"]);
    assert_eq!(
        mount.sh_ok("ls; ls dir; cat changed.txt deleted.txt"),
        "changed.txt\ndeleted.txt\ndir\ndeleted-too.txt\nold contents\nsoon gone\n"
    );

    // Misses are cached too, and expire the same way.
    assert_fails_with(&mount, "stat added.txt dir/added-too.txt", "No such file");

    put_directly(&mount.server, "changed.txt", b"new and longer contents\n");
    put_directly(&mount.server, "added.txt", b"added\n");
    put_directly(&mount.server, "dir/added-too.txt", b"added too\n");
    delete_directly(&mount.server, "deleted.txt");
    delete_directly(&mount.server, "dir/deleted-too.txt");
    std::thread::sleep(Duration::from_millis(1600));

    assert_eq!(
        mount.sh_ok("ls; ls dir"),
        "added.txt\nchanged.txt\ndir\nadded-too.txt\n"
    );
    assert_eq!(mount.sh_ok("cat changed.txt"), "new and longer contents\n");
    assert_eq!(mount.sh_ok("stat -c %s changed.txt"), "24\n");
    assert_eq!(
        mount.sh_ok("cat added.txt dir/added-too.txt"),
        "added\nadded too\n"
    );
    assert_fails_with(&mount, "cat deleted.txt", "No such file or directory");
    assert_fails_with(
        &mount,
        "stat dir/deleted-too.txt",
        "No such file or directory",
    );
}

/// A second mount of the same server's bucket (dropped before the server), for "after a
/// remount" checks.
struct SecondMount {
    dir: tempfile::TempDir,
}

impl SecondMount {
    fn new(server: &Server, args: &[&str]) -> SecondMount {
        let dir = tempfile::tempdir().unwrap();
        run_ok(
            scribefs(server)
                .arg("mount")
                .arg(BUCKET)
                .arg(dir.path())
                .args(args),
        );
        assert!(is_mounted(dir.path()));
        SecondMount { dir }
    }

    fn sh_ok(&self, script: &str) -> String {
        run_ok(
            Command::new("bash")
                .arg("-c")
                .arg(script)
                .current_dir(self.dir.path()),
        )
    }
}

impl Drop for SecondMount {
    fn drop(&mut self) {
        unmount(self.dir.path());
    }
}

fn unmount(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while is_mounted(dir) && Instant::now() < deadline {
        let _ = Command::new("fusermount3").arg("-u").arg(dir).output();
        if is_mounted(dir) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    if is_mounted(dir) {
        let _ = Command::new("fusermount3").arg("-uz").arg(dir).output();
    }
}

#[test]
fn chmod_chown_touch_persist_as_s3fs_metadata_across_a_remount() {
    let metrics = free_local_addr();
    let mut mount = Mount::new(&["--metrics-addr", &metrics]);
    mount.sh_ok("echo data > f.txt && mkdir d");
    mount.sh_ok(
        "chmod 600 f.txt && chown 1234:99 f.txt && touch -d '2001-02-03 04:05:06 UTC' f.txt",
    );
    mount.sh_ok("chmod 700 d");
    assert_eq!(
        mount.sh_ok("stat -c '%a %u %g %Y' f.txt"),
        "600 1234 99 981173106\n"
    );

    // A closed file's metadata reaches S3 by the delayed copy (within METADATA_DELAY).
    metadata_copies_done(&metrics);
    let object = mount.server.bucket(BUCKET).object("f.txt").unwrap();
    assert_eq!(
        object.data.as_ref(),
        b"data\n",
        "metadata changes keep the bytes"
    );
    let meta = |name: &str| object.metadata.get(name).cloned();
    assert_eq!(meta("mode"), Some((libc::S_IFREG | 0o600).to_string()));
    assert_eq!(meta("uid"), Some("1234".into()));
    assert_eq!(meta("gid"), Some("99".into()));
    assert_eq!(meta("mtime"), Some("981173106".into()));
    let marker = mount.server.bucket(BUCKET).object("d/").unwrap();
    assert_eq!(
        marker.metadata.get("mode"),
        Some(&(libc::S_IFDIR | 0o700).to_string())
    );

    // Still shown once the listings that do not carry metadata were refreshed.
    std::thread::sleep(Duration::from_millis(1600));
    assert_eq!(
        mount.sh_ok("ls -l > /dev/null; stat -c '%a %u %g %Y' f.txt; stat -c %a d"),
        "600 1234 99 981173106\n700\n"
    );

    mount.unmount();
    let again = SecondMount::new(&mount.server, &[]);
    assert_eq!(
        again.sh_ok("stat -c '%a %u %g %Y' f.txt; cat f.txt"),
        "600 1234 99 981173106\ndata\n"
    );
}

/// `scribefs mount` that must fail: its exit status and the lines of its stderr.
fn failed_mount(command: &mut Command) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let output = command.arg(dir.path()).output().unwrap();
    let mounted = is_mounted(dir.path());
    if mounted {
        unmount(dir.path());
    }
    assert!(!mounted, "the mount went live");
    assert!(!output.status.success(), "scribefs mount exited 0");
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn mount_failures_exit_non_zero_with_one_line_naming_the_cause() {
    let server = Server::start(&[BUCKET]);

    let lines = failed_mount(scribefs(&server).arg("mount").arg("no-such-bucket"));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("no-such-bucket"), "{lines:?}");

    let lines = failed_mount(
        scribefs(&server)
            .env("S3_SECRET_ACCESS_KEY", "bad")
            .arg("mount")
            .arg(BUCKET),
    );
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains(common::devserver::ACCESS_KEY) && lines[0].contains("secret"),
        "the line should name the access key and point at the secret: {lines:?}"
    );

    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let lines = failed_mount(
        scribefs(&server)
            .env("S3_ENDPOINT", &endpoint)
            .args(["--max-retries", "1"])
            .arg("mount")
            .arg(BUCKET),
    );
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains(&endpoint), "{lines:?}");
}

fn wait_for_exit(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "mount process {pid} did not exit"
    );
}

#[test]
fn sigterm_with_a_file_open_for_writing_uploads_what_was_written() {
    use std::io::Write;
    let mount = Mount::new(&[]);
    std::fs::write(mount.path("closed.txt"), b"closed before\n").unwrap();
    let written = random_bytes(300_000, 9);
    let mut open = std::fs::File::create(mount.path("open.bin")).unwrap();
    open.write_all(&written).unwrap();
    // Past the 8 MiB part size: a multipart upload is under way.
    let big = random_bytes(9 * MIB + 100, 10);
    let mut open_big = std::fs::File::create(mount.path("open-big.bin")).unwrap();
    open_big.write_all(&big).unwrap();

    let pid = mount_pid(mount.root());
    // SAFETY: kill only sends a signal to the process we found serving our mount.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    wait_for_exit(pid);
    assert!(!is_mounted(mount.root()));
    drop(open);
    drop(open_big);

    assert_eq!(object_bytes(&mount, "closed.txt"), b"closed before\n");
    assert!(
        object_bytes(&mount, "open.bin") == written,
        "bytes written before SIGTERM are not in S3"
    );
    assert!(object_bytes(&mount, "open-big.bin") == big);
    assert_eq!(mount.server.bucket(BUCKET).pending_uploads(), 0);
}

#[test]
fn fusermount_u_after_writing_leaves_every_file_in_s3() {
    let mut mount = Mount::new(&[]);
    let local = local_tree();
    mount.sh_ok(&format!("cp -r {}/. .", quote(local.path())));
    let pid = mount_pid(mount.root());
    run_ok(Command::new("fusermount3").arg("-u").arg(mount.root()));
    wait_for_exit(pid);
    mount.unmount();

    let store = mount.server.bucket(BUCKET);
    for (path, bytes) in snapshot(local.path()) {
        let key = path.to_string_lossy().to_string();
        match bytes {
            Some(bytes) => assert!(
                store
                    .object(&key)
                    .is_some_and(|o| o.data.as_ref() == bytes.as_slice()),
                "{key} is missing or differs in S3"
            ),
            None => assert!(
                store
                    .keys()
                    .iter()
                    .any(|k| k.starts_with(&format!("{key}/"))),
                "directory {key} left nothing in S3"
            ),
        }
    }
    assert_eq!(store.pending_uploads(), 0);
}

#[test]
fn mv_of_a_directory_above_the_rename_limit_falls_back_to_copying() {
    let mount = Mount::new(&["--rename-dir-limit", "5"]);
    mount.sh_ok("mkdir small big && for i in 1 2 3; do echo $i > small/f$i; done");
    mount.sh_ok("for i in 1 2 3 4 5 6 7 8; do echo $i > big/f$i; done");
    let renamed = std::fs::rename(mount.path("big"), mount.path("big2"));
    assert_eq!(renamed.unwrap_err().raw_os_error(), Some(libc::EXDEV));
    // mv copies and deletes instead; the result is the same tree.
    mount.sh_ok("mv small small2 && mv big big2");
    assert_eq!(mount.sh_ok("ls"), "big2\nsmall2\n");
    assert_eq!(mount.sh_ok("cat big2/f8 small2/f3"), "8\n3\n");
    let keys = mount.server.bucket(BUCKET).keys();
    assert!(
        keys.iter()
            .all(|k| k.starts_with("big2/") || k.starts_with("small2/")),
        "{keys:?}"
    );
    assert_eq!(keys.iter().filter(|k| k.starts_with("big2/f")).count(), 8);
}

#[test]
fn mounting_over_a_live_mount_is_refused() {
    let mount = Mount::new(&[]);
    mount.sh_ok("echo kept > f");
    let output = scribefs(&mount.server)
        .arg("mount")
        .arg(BUCKET)
        .arg(mount.root())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "a second mount stacked on the first"
    );
    assert!(stderr.contains("already a mount point"), "{stderr}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let wanted = mount.root().to_string_lossy().to_string();
    assert_eq!(
        mounts
            .lines()
            .filter(|l| l.split(' ').nth(4) == Some(wanted.as_str()))
            .count(),
        1
    );
    assert_eq!(mount.sh_ok("cat f"), "kept\n");
}

#[test]
fn chmod_right_after_close_is_never_lost() {
    // The kernel sends release after close returns, so a chmod can race the handle's release.
    let mount = Mount::new(&[]);
    mount.sh_ok("umask 077; for i in $(seq 1 40); do : > f$i; chmod 644 f$i; echo x > g$i; chmod 640 g$i; done");
    // A closed file's mode reaches S3 by the delayed copy; an empty new file's, when the chmod
    // came before its release, with the upload its last close makes.
    let store = mount.server.bucket(BUCKET);
    let stored = |name: String, mode: u32| {
        store
            .object(&name)
            .and_then(|o| o.metadata.get("mode").cloned())
            == Some((libc::S_IFREG | mode).to_string())
    };
    common::wait::until("every chmod reached S3", || {
        (1..=40).all(|i| stored(format!("f{i}"), 0o644) && stored(format!("g{i}"), 0o640))
    });
    let modes = mount.sh_ok("stat -c %a f1 g1 f40 g40");
    assert_eq!(modes, "644\n640\n644\n640\n");
}

#[test]
fn an_early_close_of_an_empty_new_file_leaves_no_object_the_last_close_decides() {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let mount = Mount::new(&["--metadata-ttl", "60"]);
    let bucket = mount.server.bucket(BUCKET);
    let path = CString::new(mount.path("out").as_os_str().as_bytes()).unwrap();
    // What GNU dd does with `of=`: open the output, dup it onto another descriptor and close
    // the original, which the mount sees as a FLUSH of a new file with nothing written.
    // SAFETY: plain descriptor calls on a path we own; every result is checked.
    unsafe {
        let fd = libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
            0o644,
        );
        assert!(fd >= 0);
        let kept = libc::dup(fd);
        assert!(kept >= 0);
        assert_eq!(libc::close(fd), 0);
        assert!(
            bucket.object("out").is_none(),
            "the early close uploaded an empty object"
        );
        let data = b"written after the early close";
        assert_eq!(
            libc::write(kept, data.as_ptr().cast(), data.len()),
            data.len() as isize
        );
        assert_eq!(libc::close(kept), 0, "the last close uploads");
    }
    assert_eq!(
        bucket.object("out").unwrap().data.as_ref(),
        b"written after the early close"
    );
    // `touch` of a new file still makes an (empty) object, at its last close.
    mount.sh_ok("touch empty && dd if=/dev/zero of=dd.out bs=64k count=4 conv=fsync 2>/dev/null");
    assert_eq!(bucket.object("dd.out").unwrap().data.len(), 256 * 1024);
    // Its last close is the release the kernel sends after `touch` exits.
    common::wait::until("`empty` was uploaded", || bucket.object("empty").is_some());
    assert_eq!(bucket.object("empty").unwrap().data.len(), 0);
}
