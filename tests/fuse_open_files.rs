//! Open files on a real mount keep their bytes, as on a local file system: log rotation
//! (renaming a file a daemon keeps appending to), a new file or its directory renamed while
//! open, a file unlinked while open for writing or read by another process. Each case is the
//! shell one-liner a user would run; what S3 holds afterwards is checked in the bucket itself,
//! so "the old name never comes back" and "nothing is left in S3" are exact.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::mount::Mount;
use scribefs::devserver::RequestStats;
use scribefs::store::PutOptions;
use scribefs::store::memory::StoredObject;

fn mounted() -> Mount {
    Mount::new(&["--metadata-ttl", "60"])
}

/// The object's bytes in the bucket, or `None`.
fn object(mount: &Mount, key: &str) -> Option<String> {
    let bucket = mount.server.bucket("test");
    let object = bucket.object(key)?;
    Some(String::from_utf8_lossy(&object.data).into_owned())
}

/// Waits (5 s at most) until `key` is gone from the bucket: a deferred DELETE runs at the
/// file's release, which the kernel sends just after close(2) returned.
fn gone_from_bucket(mount: &Mount, key: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if mount.server.bucket("test").object(key).is_none() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn keys(mount: &Mount) -> Vec<String> {
    mount.server.bucket("test").keys()
}

/// No multipart upload is left (an abort runs at release, just after close returned).
fn no_pending_uploads(mount: &Mount) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while mount.server.bucket("test").pending_uploads() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        mount.server.bucket("test").pending_uploads(),
        0,
        "a multipart upload was left behind"
    );
}

#[test]
fn log_rotation_keeps_writing_to_the_renamed_file() {
    let mount = mounted();
    mount.sh_ok(
        "echo first > app.log; exec 3>>app.log; echo second >&3; mv app.log app.log.1; \
         echo third >&3; exec 3>&-",
    );
    assert_eq!(
        object(&mount, "app.log.1").as_deref(),
        Some("first\nsecond\nthird\n")
    );
    assert!(
        gone_from_bucket(&mount, "app.log"),
        "the old name came back"
    );
    assert_eq!(mount.sh_ok("cat app.log.1"), "first\nsecond\nthird\n");
    assert!(!mount.path("app.log").exists());
    no_pending_uploads(&mount);
}

/// The rename costs its COPY at once; the old object's DELETE waits for the last close, which
/// checks it is still the version renamed away (one HEAD) and uploads the new bytes once.
#[test]
fn renaming_an_open_file_costs_a_copy_now_and_head_delete_at_close() {
    let mount = mounted();
    mount.sh_ok("echo first > app.log");
    mount.server.reset_stats();
    mount
        .sh_ok("exec 3>>app.log; echo second >&3; mv app.log app.log.1; echo third >&3; exec 3>&-");
    assert!(gone_from_bucket(&mount, "app.log"));
    let stats = mount.server.stats();
    let expected = RequestStats {
        // Staging the appended file seeds from the object.
        get: 1,
        copy: 1,
        // The shell's `>&3` dups and closes: each close by the opener uploads what changed.
        put: stats.put,
        head: 1,
        delete: 1,
        ..Default::default()
    };
    assert_eq!(stats, expected);
    assert!((1..=3).contains(&stats.put), "{stats:?}");
}

#[test]
fn a_new_file_renamed_while_open_takes_its_later_writes() {
    let mount = mounted();
    mount.sh_ok("exec 4>new.log; echo alpha >&4; mv new.log new.log.1; echo beta >&4; exec 4>&-");
    assert_eq!(
        object(&mount, "new.log.1").as_deref(),
        Some("alpha\nbeta\n")
    );
    assert!(gone_from_bucket(&mount, "new.log"));
    no_pending_uploads(&mount);
}

#[test]
fn renaming_the_directory_of_an_open_file_moves_its_upload() {
    let mount = mounted();
    mount.sh_ok("mkdir d; exec 5>d/x; echo one >&5; mv d e; echo two >&5; exec 5>&-");
    assert_eq!(object(&mount, "e/x").as_deref(), Some("one\ntwo\n"));
    assert!(gone_from_bucket(&mount, "d/x"));
    assert!(
        keys(&mount).iter().all(|k| !k.starts_with("d/")),
        "{:?}",
        keys(&mount)
    );
    assert_eq!(mount.sh_ok("cat e/x"), "one\ntwo\n");
    no_pending_uploads(&mount);
}

/// A streaming upload whose multipart upload already started (20 MiB, parts of 8 MiB) is
/// completed where it began and moved: the new name gets every byte, the old one nothing.
#[test]
fn a_large_file_renamed_while_streaming_is_completed_and_moved() {
    let mount = mounted();
    mount.server.reset_stats();
    mount.sh_ok(
        "exec 6>big.bin; head -c 20000000 /dev/urandom > /tmp/scribefs-big-$$; \
         head -c 12000000 /tmp/scribefs-big-$$ >&6; mv big.bin moved.bin; \
         tail -c +12000001 /tmp/scribefs-big-$$ >&6; exec 6>&-; \
         cmp /tmp/scribefs-big-$$ moved.bin; rm /tmp/scribefs-big-$$",
    );
    assert_eq!(
        mount
            .server
            .bucket("test")
            .object("moved.bin")
            .unwrap()
            .data
            .len(),
        20_000_000
    );
    assert!(gone_from_bucket(&mount, "big.bin"));
    no_pending_uploads(&mount);
    // Moving the completed upload: one COPY and one DELETE, nothing else.
    let stats = mount.server.stats();
    assert_eq!(
        (stats.copy, stats.delete, stats.put),
        (1, 1, 0),
        "{stats:?}"
    );
}

#[test]
fn a_file_unlinked_while_open_for_writing_takes_writes_and_leaves_nothing() {
    let mount = mounted();
    let out = mount.sh_ok(
        "exec 6>gone.log; echo a >&6; rm gone.log; echo b >&6 && echo written; \
         cat /proc/self/fd/6 2>/dev/null; exec 6>&-; ls",
    );
    assert!(out.starts_with("written"), "{out}");
    assert!(!out.contains("gone.log"), "{out}");
    assert!(gone_from_bucket(&mount, "gone.log"));
    // A large one, past the first part: its multipart upload is aborted, not completed.
    mount.sh_ok(
        "exec 7>large.bin; head -c 20000000 /dev/zero >&7; rm large.bin; \
         head -c 1000 /dev/zero >&7; exec 7>&-",
    );
    assert!(gone_from_bucket(&mount, "large.bin"));
    assert!(keys(&mount).is_empty(), "{:?}", keys(&mount));
    no_pending_uploads(&mount);
}

/// Puts an object straight into the bucket, so nothing of it is in the mount's caches.
fn seed(mount: &Mount, key: &str, data: Vec<u8>) {
    let object = StoredObject::new(Bytes::from(data), PutOptions::default());
    mount.server.bucket("test").insert(key, object);
}

#[test]
fn a_reader_reads_to_the_end_of_a_file_removed_under_it() {
    let mount = mounted();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    seed(&mount, "big.bin", data);
    let out =
        mount.sh_ok("exec 7<big.bin; head -c 100 <&7 >/dev/null; rm big.bin; cat <&7 | wc -c");
    assert_eq!(out.trim(), "2999900");
    assert!(!mount.path("big.bin").exists());
    assert!(
        gone_from_bucket(&mount, "big.bin"),
        "deleted at the last close"
    );
}

/// Our defined answer for a file replaced by a rename while open for reading: ESTALE for what
/// the descriptor reads next, never ENOENT and never bytes of the new file.
#[test]
fn a_reader_of_a_file_replaced_by_a_rename_gets_estale() {
    let mount = mounted();
    seed(&mount, "a", vec![7; 20_000_000]);
    seed(&mount, "b", b"new\n".to_vec());
    let out = mount.sh("exec 7<a; head -c 100 <&7 >/dev/null; mv b a; cat <&7 > /dev/null");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Stale file handle"),
        "status {:?}, stderr {stderr}",
        out.status
    );
    assert_eq!(mount.sh_ok("cat a"), "new\n");
}
