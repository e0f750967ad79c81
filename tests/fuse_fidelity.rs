//! A file is what it was, with default options: a tree copied in with `cp -a` comes back after
//! a remount with its symlinks, modes and times, so `diff -r` is equal and a second `rsync -a`
//! sends nothing; a second mount of the bucket sees the first one's chmod once its TTL ran
//! out; and of two exclusive creates of one name from two mounts, the second gets EEXIST and
//! the first one's bytes stay (at open for an O_EXCL segment, at close otherwise).

mod common;

use std::path::Path;
use std::process::Command;

use common::devserver::Server;
use common::mount::{Mount, scribefs};
use common::proc_server::PlainMount;

/// Another mount of the same server's bucket (another process on the same machine).
fn second_mount(server: &Server, args: &[&str]) -> PlainMount {
    PlainMount::with(scribefs(server), "test", args)
}

/// The tree: a symlink, a 0600 file, a 0750 directory, a file with mtime 2020-09-13,
/// 40 log files and a 21 MB file.
fn make_tree(mount: &Mount, root: &Path) {
    mount.sh_ok(&format!(
        "cd {} && mkdir -p src/private src/logs && cd src && \
         echo secret > private/key && chmod 600 private/key && chmod 750 private && \
         echo old > old.txt && touch -m -d @1600000000 old.txt && \
         ln -s old.txt link && \
         for i in $(seq 1 40); do echo line $i > logs/app-$i.log; done && \
         head -c 21000000 /dev/urandom > big.bin",
        root.display()
    ));
}

/// Regular files rsync -a would send again (0 when every size and mtime is kept).
fn rsync_would_send(mount: &Mount, work: &Path) -> usize {
    let out = mount.sh_ok(&format!(
        "rsync -a --dry-run --itemize-changes {}/src/ dst/",
        work.display()
    ));
    out.lines().filter(|l| l.starts_with(">f")).count()
}

#[test]
fn a_tree_copied_in_with_cp_a_comes_back_whole_after_a_remount() {
    let work = tempfile::tempdir().unwrap();
    let mut mount = Mount::new(&[]);
    make_tree(&mount, work.path());
    let src = work.path().join("src");
    mount.sh_ok(&format!(
        "cp -a {} dst && diff -r {} dst",
        src.display(),
        src.display()
    ));
    assert_eq!(rsync_would_send(&mount, work.path()), 0);
    mount.unmount();
    let server = std::mem::replace(&mut mount.server, Server::start(&[]));
    let mount = Mount::on(server, "test", &[]);
    // Looked up by name before any listing: the symlink must be one (the stat, then
    // readlink sequence).
    assert!(
        std::fs::symlink_metadata(mount.path("dst/link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    mount.sh_ok(&format!("diff -r {} dst", src.display()));
    let stat =
        mount.sh_ok("cd dst && stat -c '%a %Y' private/key private old.txt && stat -c %F link");
    let lines: Vec<&str> = stat.lines().collect();
    assert!(lines[0].starts_with("600 "), "{stat}");
    assert!(lines[1].starts_with("750 "), "{stat}");
    assert_eq!(lines[2], "644 1600000000", "{stat}");
    assert_eq!(lines[3], "symbolic link", "{stat}");
    assert_eq!(
        rsync_would_send(&mount, work.path()),
        0,
        "a second rsync -a sends nothing"
    );
}

#[test]
fn a_second_mount_sees_the_first_ones_chmod_after_the_ttl() {
    let a = Mount::new(&[]);
    a.sh_ok("echo data > f");
    let b = second_mount(&a.server, &[]);
    assert_eq!(b.sh_ok("stat -c %a f"), "644\n");
    a.sh_ok("chmod 600 f");
    // Persisted within METADATA_DELAY, seen by B once its TTL (1 s) ran out.
    common::wait::until("B saw A's chmod", || b.sh_ok("stat -c %a f") == "600\n");
    assert_eq!(std::fs::read_to_string(b.path("f")).unwrap(), "data\n");
}

/// Two mounts of a segment bucket (B trusts its listing for 10 s) and B's listing of the
/// empty directory: a mount A and a mount B that believes every segment name free.
fn two_segment_mounts() -> (Mount, PlainMount) {
    let args = ["--layout", "segments", "--metadata-ttl", "10"];
    let a = Mount::new(&args);
    let b = second_mount(&a.server, &args);
    assert_eq!(b.sh_ok("ls | wc -l"), "0\n");
    (a, b)
}

fn stored_segment(a: &Mount, name: &str) -> Vec<u8> {
    a.server
        .bucket("test")
        .object(&format!("segments/{name}"))
        .unwrap()
        .data
        .to_vec()
}

/// B listed the directory before A wrote segment 0x42, so B believes the name free for its
/// TTL. A plain create of a new segment is exclusive too (segments are immutable) but asks
/// nothing at open: its conditional upload fails at close with EEXIST; A's segment stays.
#[test]
fn a_new_segment_made_elsewhere_meanwhile_fails_at_close_with_eexist_and_the_first_stays() {
    let (a, b) = two_segment_mounts();
    let name = "segment-0000000000000042.bin";
    std::fs::write(a.path(name), b"written by A").unwrap();
    let script = format!(
        "import os\n\
         fd = os.open('{name}', os.O_CREAT | os.O_WRONLY)\n\
         os.write(fd, b'written by B')\n\
         try:\n    os.close(fd)\nexcept OSError as e:\n    print(e.errno)\n"
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .current_dir(b.root())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        libc::EEXIST.to_string(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stored_segment(&a, name), b"written by A");
    assert_eq!(
        std::fs::read(a.path(name)).unwrap(),
        b"written by A".to_vec()
    );
}

/// The same two mounts, and a shell with `noclobber` on B: bash opens with O_CREAT|O_EXCL and
/// ignores errors at close, so the name must be refused at open. It is, for one HEAD and no
/// upload; A's bytes stay.
#[test]
fn noclobber_on_another_mount_is_refused_at_open_for_one_head() {
    let (a, b) = two_segment_mounts();
    let name = "segment-0000000000000042.bin";
    std::fs::write(a.path(name), b"written by A").unwrap();
    a.server.reset_stats();
    let out = b.sh(&format!("set -o noclobber; echo from-B > {name}"));
    assert!(!out.status.success(), "the shell's redirection succeeded");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot overwrite existing file"),
        "{stderr}"
    );
    assert_eq!(
        a.server.stats(),
        scribefs::devserver::RequestStats {
            head: 1,
            ..Default::default()
        }
    );
    assert_eq!(stored_segment(&a, name), b"written by A");

    // A name nobody took: the same one HEAD, then the upload at close.
    a.server.reset_stats();
    let free = "segment-0000000000000043.bin";
    b.sh_ok(&format!("set -o noclobber; echo from-B > {free}"));
    let stats = a.server.stats();
    assert_eq!((stats.head, stats.put), (1, 1), "{stats:?}");
    assert_eq!(stored_segment(&a, free), b"from-B\n");
}

/// The keys layout keeps the old bargain: an O_EXCL create of a name the mount believes free
/// asks nothing at open; the conditional upload at close finds the name taken.
#[test]
fn an_exclusive_create_in_the_keys_layout_asks_nothing_at_open() {
    let args = ["--metadata-ttl", "10"];
    let a = Mount::new(&args);
    let b = second_mount(&a.server, &args);
    assert_eq!(b.sh_ok("ls | wc -l"), "0\n");
    std::fs::write(a.path("lock"), b"A").unwrap();
    a.server.reset_stats();
    let script = "import os\n\
         fd = os.open('lock', os.O_CREAT | os.O_EXCL | os.O_WRONLY)\n\
         print('opened')\n\
         os.write(fd, b'B')\n\
         try:\n    os.close(fd)\nexcept OSError as e:\n    print(e.errno)\n";
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .current_dir(b.root())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("opened\n{}\n", libc::EEXIST),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats = a.server.stats();
    assert_eq!((stats.head, stats.put), (0, 1), "{stats:?}");
    assert_eq!(
        a.server
            .bucket("test")
            .object("lock")
            .unwrap()
            .data
            .as_ref(),
        b"A"
    );
}

/// A directory rename copies each object; a copy of a multipart object has a new ETag, which
/// the moved names must take, or reads pinned to the old one would be ESTALE until the TTL.
#[test]
fn a_large_file_reads_back_at_once_after_its_directory_is_renamed() {
    let mount = Mount::new(&["--metadata-ttl", "60"]);
    let out = mount.sh_ok(
        "local=$(mktemp) && head -c 20000000 /dev/urandom > $local && mkdir d && \
         cp $local d/big && mv d e && cmp $local e/big && rm $local && echo same",
    );
    assert_eq!(out, "same\n");
}
