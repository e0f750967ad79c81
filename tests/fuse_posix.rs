//! POSIX objects the way s3fs stores them, through real mounts: symlinks, FIFOs and device
//! nodes, owners, modes and times, and the same `stat` for a tree written by s3fs and read by
//! scribefs, and the other way round.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::devserver::{ACCESS_KEY, SECRET_KEY, Server};
use common::mount::{
    BUCKET, Mount, assert_fails_with, free_local_addr, is_mounted, metadata_copies_done,
};

#[test]
fn symlinks_are_objects_whose_body_is_the_target() {
    let mount = Mount::new(&["--metadata-ttl", "60"]);
    mount.sh_ok("echo hello > target.txt && ln -s target.txt link && ln -s /etc/hostname abs");
    assert_eq!(
        mount.sh_ok("readlink link; cat link"),
        "target.txt\nhello\n"
    );
    assert_eq!(mount.sh_ok("stat -c %F link"), "symbolic link\n");
    assert_eq!(mount.sh_ok("readlink abs"), "/etc/hostname\n");
    let object = mount.server.bucket(BUCKET).object("link").unwrap();
    assert_eq!(object.data.as_ref(), b"target.txt");
    assert_eq!(
        object.metadata["mode"],
        (libc::S_IFLNK | 0o777).to_string(),
        "s3fs's type bits"
    );
    // lchown changes the link, not its target.
    mount.sh_ok("chown -h 1234:99 link");
    assert_eq!(
        mount.sh_ok("stat -c '%u %g' link target.txt"),
        "1234 99\n0 0\n"
    );
    // A loop is the kernel's ELOOP.
    mount.sh_ok("ln -s loop-b loop-a && ln -s loop-a loop-b");
    assert_fails_with(&mount, "cat loop-a", "Too many levels of symbolic links");
    // A symlink over an existing name is EEXIST.
    assert_fails_with(&mount, "ln -s x target.txt", "File exists");
}

#[test]
fn fifos_work_like_local_ones_and_special_files_keep_their_type() {
    let mount = Mount::new(&["--metadata-ttl", "60"]);
    mount.sh_ok("mkfifo pipe && mknod chr c 1 3 && mknod blk b 7 0");
    assert_eq!(
        mount.sh_ok("stat -c '%F %t:%T' pipe chr blk"),
        "fifo 0:0\ncharacter special file 1:3\nblock special file 7:0\n"
    );
    // The kernel carries a FIFO's data: a writer and a reader meet in the mount.
    let out = mount.sh_ok("(echo through the fifo > pipe &) ; cat pipe");
    assert_eq!(out, "through the fifo\n");
    let store = mount.server.bucket(BUCKET);
    let pipe = store.object("pipe").unwrap();
    assert!(pipe.data.is_empty());
    assert_eq!(
        libc::S_IFIFO,
        pipe.metadata["mode"].parse::<u32>().unwrap() & libc::S_IFMT
    );
    let chr = store.object("chr").unwrap();
    assert_eq!(
        chr.metadata["rdev"],
        libc::makedev(1, 3).to_string(),
        "the device number"
    );
    // Hard links cannot be stored: refused, never a silent copy.
    assert_fails_with(&mount, "ln chr hard", "Operation not permitted");
    assert!(store.object("hard").is_none());
}

#[test]
fn names_and_keys_that_are_too_long_are_enametoolong() {
    let mount = Mount::new(&[]);
    let long_name = "n".repeat(256);
    assert_fails_with(&mount, &format!("touch {long_name}"), "File name too long");
    // 5 directories of 200 bytes and a 100-byte name: a key over S3's 1024 bytes.
    let dirs: Vec<String> = (0..5).map(|i| format!("{i}{}", "d".repeat(199))).collect();
    let path = dirs.join("/");
    mount.sh_ok(&format!("mkdir -p {path}"));
    assert_fails_with(
        &mount,
        &format!("touch {path}/{}", "f".repeat(100)),
        "File name too long",
    );
}

#[test]
fn ctime_follows_chmod_and_utimens_honours_omit() {
    let mount = Mount::new(&["--metadata-ttl", "60"]);
    mount.sh_ok("echo x > f && touch -m -d @1000000000 f");
    let before: u64 = mount.sh_ok("stat -c %Z f").trim().parse().unwrap();
    common::wait::past_second(before);
    mount.sh_ok("chmod 600 f");
    let after: u64 = mount.sh_ok("stat -c %Z f").trim().parse().unwrap();
    assert!(after > before, "chmod moves ctime: {before} -> {after}");
    // touch -a changes atime only (UTIME_OMIT for mtime): the mtime stays.
    mount.sh_ok("touch -a f");
    assert_eq!(mount.sh_ok("stat -c %Y f"), "1000000000\n");
}

/// A passwd file for s3fs with the dev server's keys.
fn s3fs_passwd(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("s3fs.passwd");
    std::fs::write(&path, format!("{ACCESS_KEY}:{SECRET_KEY}\n")).unwrap();
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    std::fs::set_permissions(&path, perms).unwrap();
    path
}

/// s3fs mounted on the dev server's bucket at `dir`, until dropped.
struct S3fs {
    dir: tempfile::TempDir,
}

impl S3fs {
    fn mount(server: &Server, work: &Path) -> S3fs {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = server.endpoint();
        let status = Command::new("s3fs")
            .arg(BUCKET)
            .arg(dir.path())
            .args(["-o", &format!("url={endpoint}")])
            .args(["-o", "use_path_request_style", "-o", "endpoint=us-east-1"])
            .args([
                "-o",
                &format!("passwd_file={}", s3fs_passwd(work).display()),
            ])
            .args(["-o", "stat_cache_expire=1"])
            .stdin(Stdio::null())
            .status()
            .expect("s3fs runs (apt install s3fs)");
        assert!(status.success(), "s3fs failed to mount");
        common::wait::until("s3fs came up", || {
            is_mounted(dir.path()) && std::fs::read_dir(dir.path()).is_ok()
        });
        S3fs { dir }
    }

    fn sh(&self, script: &str) -> String {
        let output = Command::new("bash")
            .arg("-c")
            .arg(script)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "s3fs: `{script}`: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for S3fs {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while is_mounted(self.dir.path()) && Instant::now() < deadline {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg(self.dir.path())
                .output();
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Builds the same tree of every kind, owner, mode and time on whichever mount runs `sh`.
const MAKE_TREE: &str = "mkdir -p dir/sub && echo data > dir/file && chmod 640 dir/file \
    && chown 1234:99 dir/file && touch -m -d @1600000000 dir/file \
    && ln -s file dir/link && mkfifo dir/fifo && chmod 600 dir/fifo && chmod 750 dir/sub";

/// `stat` of every entry of the tree, in a stable order, with the fields both sides keep.
const STAT_TREE: &str = "cd dir && for f in file link fifo sub; do \
    stat -c '%n %F %a %u %g %s' $f; done; stat -c '%n %Y' file; readlink link";

#[test]
fn a_tree_written_by_s3fs_shows_the_same_stat_in_scribefs_and_back() {
    if Command::new("s3fs").arg("--version").output().is_err() {
        panic!("s3fs is not installed: scripts/lib.sh installs it");
    }
    let work = tempfile::tempdir().unwrap();
    // s3fs writes, scribefs reads with default options: by name first (stat), then after a
    // listing.
    let server = Server::start(&[BUCKET]);
    let s3fs = S3fs::mount(&server, work.path());
    s3fs.sh(MAKE_TREE);
    let by_s3fs = s3fs.sh(STAT_TREE);
    drop(s3fs);
    let scribefs = Mount::on(server, BUCKET, &[]);
    assert_eq!(scribefs.sh_ok(STAT_TREE), by_s3fs);
    assert_eq!(
        scribefs.sh_ok(&format!("ls -l dir >/dev/null; {STAT_TREE}")),
        by_s3fs
    );
    drop(scribefs);

    // scribefs writes, s3fs reads.
    let metrics = free_local_addr();
    let mut scribefs = Mount::new(&["--metrics-addr", &metrics]);
    scribefs.sh_ok(MAKE_TREE);
    let by_scribefs = scribefs.sh_ok(STAT_TREE);
    metadata_copies_done(&metrics);
    scribefs.unmount();
    let s3fs = S3fs::mount(&scribefs.server, work.path());
    assert_eq!(s3fs.sh(STAT_TREE), by_scribefs);
}

/// Runs `script` in the mount as user `nobody` (uid and gid 65534, no groups).
fn as_nobody(mount: &Mount, script: &str) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "bash",
            "-c",
        ])
        .arg(script)
        .current_dir(mount.root())
        .output()
        .expect("setpriv runs (util-linux)")
}

#[test]
fn with_allow_other_the_stored_modes_are_enforced_also_after_a_fresh_mount() {
    let metrics = free_local_addr();
    let mut mount = Mount::new(&["--allow-other", "--metrics-addr", &metrics]);
    mount.sh_ok("echo secret > private && chmod 600 private && echo open > public");
    let denied = as_nobody(&mount, "cat private");
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("Permission denied"),
        "{denied:?}"
    );
    assert_eq!(as_nobody(&mount, "cat public").stdout, b"open\n");
    // Only root changes an owner.
    let chown = as_nobody(&mount, "chown 65534 public");
    assert!(!chown.status.success(), "a non-owner changed the owner");
    metadata_copies_done(&metrics);
    mount.unmount();

    let server = std::mem::replace(&mut mount.server, Server::start(&[BUCKET]));
    let fresh = Mount::on(server, BUCKET, &["--allow-other"]);
    assert_eq!(fresh.sh_ok("stat -c %a private"), "600\n");
    let denied = as_nobody(&fresh, "cat private");
    assert!(
        !denied.status.success(),
        "a fresh mount showed a 0600 file to another user"
    );
    let listed = as_nobody(&fresh, "ls -l");
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("-rw------- 1 root root"),
        "{listed:?}"
    );
}
