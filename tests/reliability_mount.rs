//! Real mounts under hostile conditions: the mount killed with SIGKILL mid-write, keys no file
//! system would allow, a secret that must never reach a log, random server faults, an object
//! replaced under a reader, and a file-backed S3 server (s3s-fs) unlike AWS.

mod common;

use std::io::{Read, Write};
use std::os::fd::IntoRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::devserver::{ACCESS_KEY, Server};
use common::fs_server::FsServer;
use common::mount::{BUCKET, Mount, assert_fails_with, is_mounted, put_directly, scribefs};
use common::proc_server::{PlainMount, unmount};
use scribefs::devserver::DevServerConfig;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed) ^ (i >> 13) as u8)
        .collect()
}

fn object(server: &Server, key: &str) -> Option<Vec<u8>> {
    server.bucket(BUCKET).object(key).map(|o| o.data.to_vec())
}

#[test]
fn kill_9_of_the_mount_mid_write_leaves_old_objects_and_a_new_mount_recovers_the_dir() {
    let server = Server::start(&[BUCKET]);
    let old = pattern(1 << 20, 1);
    put_directly(&server, "streamed", &old);
    put_directly(&server, "staged", &old);
    let dir = tempfile::tempdir().unwrap();
    let staging = tempfile::tempdir().unwrap();
    let mut child = scribefs(&server)
        .arg("mount")
        .arg(BUCKET)
        .arg(dir.path())
        .args(["--foreground", "--part-size", "5M", "--staging-dir"])
        .arg(staging.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::wait::until("the mount came up", || is_mounted(dir.path()));

    // One writer streams a replacement (O_TRUNC), one edits in place (staged), both unfinished.
    let mut streamed = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(dir.path().join("streamed"))
        .unwrap();
    streamed.write_all(&pattern(12 << 20, 2)).unwrap();
    let mut staged = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("staged"))
        .unwrap();
    staged.write_all(b"edited in place").unwrap();
    // Kill mid-upload: once the streamed file's multipart upload exists (its first part is full).
    common::wait::until("the streamed write began its multipart upload", || {
        server.bucket(BUCKET).pending_uploads() >= 1
    });
    let uploads_before = server.bucket(BUCKET).pending_uploads();

    child.kill().unwrap();
    child.wait().unwrap();
    assert!(streamed.write_all(b"more").is_err() || streamed.sync_all().is_err());
    // SAFETY: the fds are ours; closing them on the dead mount reports ENOTCONN, ignored.
    unsafe {
        libc::close(streamed.into_raw_fd());
        libc::close(staged.into_raw_fd());
    }

    assert_eq!(
        object(&server, "streamed"),
        Some(old.clone()),
        "partial object"
    );
    assert_eq!(
        object(&server, "staged"),
        Some(old.clone()),
        "partial object"
    );
    let staging_files: Vec<_> = std::fs::read_dir(staging.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        staging_files.is_empty(),
        "staging files left: {staging_files:?}"
    );
    eprintln!(
        "mount killed mid-write: old objects intact, {} multipart upload(s) left open (the crash left nobody to abort them; see `scribefs uploads abort`)",
        uploads_before
    );

    // The mount point is dead (ENOTCONN); a new mount recovers it instead of refusing.
    assert!(is_mounted(dir.path()));
    let stat = std::fs::metadata(dir.path()).unwrap_err();
    assert_eq!(stat.raw_os_error(), Some(libc::ENOTCONN));
    let output = scribefs(&server)
        .arg("mount")
        .arg(BUCKET)
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(std::fs::read(dir.path().join("streamed")).unwrap(), old);
    // A live mount is still refused.
    let output = scribefs(&server)
        .arg("mount")
        .arg(BUCKET)
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("already a mount point"));
    unmount(dir.path());
}

#[test]
fn hostile_keys_never_escape_crash_or_hang_find_and_ls() {
    let server = Server::start(&[BUCKET]);
    let long = "L".repeat(300);
    let deep = format!("deep/{}leaf", "d/".repeat(999));
    let keys = [
        "../x".to_string(),
        "a/../../b".to_string(),
        "a//b".to_string(),
        "/rooted".to_string(),
        ".".to_string(),
        "..".to_string(),
        "./dot".to_string(),
        "c/./d".to_string(),
        format!("{long}/f"),
        format!("long/{long}"),
        "new\nline".to_string(),
        "tab\tname".to_string(),
        "file".to_string(),
        "file/child".to_string(),
        "ok".to_string(),
        deep,
    ];
    for key in &keys {
        put_directly(&server, key, key.as_bytes());
    }
    // `ls -R` names every directory by its full path: 1000 levels cost ~500,000 path component
    // lookups, which the kernel answers from its cache only while the TTL lasts.
    let mount = Mount::on(server, BUCKET, &["--metadata-ttl", "60"]);
    let parent = mount.root().parent().unwrap().to_path_buf();

    for script in ["timeout 120 find . -print0", "timeout 120 ls -laR ."] {
        let started = Instant::now();
        let output = mount.sh(script);
        let took = started.elapsed();
        let code = output.status.code();
        // find and ls exit 1 on entries they could not read; 124 would be the timeout.
        assert!(
            matches!(code, Some(0) | Some(1)),
            "`{script}`: {code:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        eprintln!("hostile keys: `{script}` took {:.1}s", took.as_secs_f64());
        if script.contains("find") {
            let paths: Vec<String> = output
                .stdout
                .split(|b| *b == 0)
                .filter(|p| !p.is_empty())
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            for path in &paths {
                assert!(path == "." || path.starts_with("./"), "{path:?}");
                assert!(
                    !path
                        .split('/')
                        .skip(1)
                        .any(|c| c == ".." || c == "." || c.is_empty()),
                    "{path:?} escapes or is not a plain path"
                );
            }
            assert!(paths.contains(&"./ok".to_string()), "{paths:?}");
            assert!(
                paths.contains(&"./file/child".to_string()),
                "directory wins: {paths:?}"
            );
            assert!(paths.contains(&"./new\nline".to_string()), "{paths:?}");
            assert!(
                paths
                    .iter()
                    .any(|p| p.ends_with("/leaf") && p.matches('/').count() == 1001),
                "the 1000-level key is reachable"
            );
            assert!(
                !paths.iter().any(|p| p.contains(&long)),
                "300-byte names are skipped"
            );
        }
    }
    // Still alive; `../x` and `a/../../b` did not become names beside the mount point.
    assert_eq!(std::fs::read(mount.path("ok")).unwrap(), b"ok");
    for escaped in ["x", "b", "rooted"] {
        assert!(!parent.join(escaped).exists(), "{escaped} appeared outside");
    }
    assert!(std::fs::read_dir(mount.root()).unwrap().all(|e| {
        let name = e.unwrap().file_name();
        name != "." && name != ".." && !name.is_empty()
    }));
}

#[test]
fn debug_logs_never_contain_the_secret_and_the_mount_is_private() {
    let secret = "Zq9-unique-secret-value-7Hk2";
    let mut config = DevServerConfig::for_tests(&[BUCKET]);
    config.secret_key = secret.to_string();
    let server = Server::start_with(config);
    let log = tempfile::NamedTempFile::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mount = |extra: &[&str]| {
        scribefs(&server)
            .env("S3_SECRET_ACCESS_KEY", secret)
            .env("RUST_LOG", "debug")
            .arg("mount")
            .arg(BUCKET)
            .arg(dir.path())
            .arg("--log-file")
            .arg(log.path())
            .args(extra)
            .output()
            .unwrap()
    };
    let output = mount(&[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let run = |script: &str| {
        Command::new("bash")
            .arg("-c")
            .arg(script)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    // Writes, reads, listings, errors and retries all log at debug.
    assert!(
        run("mkdir d && echo hi > d/f && cat d/f && ls -l d && mv d/f d/g && rm d/g")
            .status
            .success()
    );
    assert!(!run("cat missing").status.success());
    server.set_fail_rate(0.5);
    let _ = run("for i in 1 2 3 4 5 6; do echo $i > r$i; cat r$i; done");
    server.set_fail_rate(0.0);

    // Private: no allow_other, and another user is refused.
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(dir.path().to_str().unwrap()))
        .unwrap();
    assert!(!line.contains("allow_other"), "{line}");
    if unsafe { libc::geteuid() } == 0 {
        let other = Command::new("setpriv")
            .args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                "ls",
            ])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(!other.status.success(), "another user could list the mount");
        let refused = String::from_utf8_lossy(&other.stderr);
        assert!(refused.contains("Permission denied"), "{refused}");
    }
    unmount(dir.path());

    // A refused secret must not be echoed either.
    let wrong = scribefs(&server)
        .env("S3_SECRET_ACCESS_KEY", "wrong-secret-value-Pq3")
        .env("RUST_LOG", "debug")
        .arg("mount")
        .arg(BUCKET)
        .arg(dir.path())
        .arg("--foreground")
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    let wrong_text = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong_text.contains("wrong-secret-value-Pq3"));

    let text = std::fs::read_to_string(log.path()).unwrap();
    assert!(text.contains("DEBUG"), "debug logging was not on");
    // The log does show which credentials signed (the key id, which is not secret), so a
    // secret logged beside it would be caught by the next line.
    assert!(
        text.contains(ACCESS_KEY),
        "the debug log never names the access key id"
    );
    assert!(!text.contains(secret), "the secret key is in the debug log");
}

/// The issue's scenario with default options (only the log file named): `cp -a` of 200 files
/// of 64 KiB into a mount while 10%, then 20%, of requests fail (500, 503, dropped connections,
/// cut GET bodies), then `cp -a` back out through a fresh mount with a cold cache, faults still
/// on: byte-identical, and no tool sees an error. One run makes about 1,000 requests; a request
/// fails for good only when all 10 attempts of a mount fail (0.2^10 = 1e-7). With the old
/// default of 3 retries (0.2^4 = 1.6e-3) 13 runs of 20 passed at 20% (the issue saw 2 of 10),
/// so the two 20% runs here fail that default more often than not. `scripts/fault-copy.sh
/// RATE 20` is the 20-run measurement of docs/RELIABILITY.md.
#[test]
fn with_default_options_cp_a_of_200_files_round_trips_at_10_and_20_percent_faults() {
    let source = tempfile::tempdir().unwrap();
    for i in 0..200 {
        let sub = source.path().join(format!("d{}", i % 10));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("f{i}")), pattern(64 << 10, i as u8)).unwrap();
    }
    for rate in [0.1, 0.1, 0.2, 0.2] {
        let server = Server::start(&[BUCKET]);
        server.set_fail_rate(rate);
        let logs = tempfile::tempdir().unwrap();
        let log_in = logs.path().join("in.log");
        let log_out = logs.path().join("out.log");
        let mount = PlainMount::with(
            scribefs(&server),
            BUCKET,
            &["--log-file", log_in.to_str().unwrap()],
        );
        let copy_in = mount.sh(&format!("cp -a {}/. ./tree", source.path().display()));
        drop(mount);
        // A cold metadata cache: the second mount knows nothing the first one saw.
        let cold = tempfile::tempdir().unwrap();
        let mut command = scribefs(&server);
        command.env("XDG_CACHE_HOME", cold.path());
        let mount = PlainMount::with(command, BUCKET, &["--log-file", log_out.to_str().unwrap()]);
        let back = tempfile::tempdir().unwrap();
        let copy_out = mount.sh(&format!("cp -a ./tree/. {}/", back.path().display()));
        drop(mount);
        let stats = server.stats();
        server.set_fail_rate(0.0);
        for (what, output) in [("cp -a in", &copy_in), ("cp -a out", &copy_out)] {
            assert!(
                output.status.success() && output.stderr.is_empty(),
                "fail rate {rate}: {what}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let diff = Command::new("diff")
            .arg("-r")
            .arg(source.path())
            .arg(back.path())
            .output()
            .unwrap();
        assert!(
            diff.status.success(),
            "fail rate {rate}: the copy differs: {}",
            String::from_utf8_lossy(&diff.stdout)
        );
        let log =
            std::fs::read_to_string(&log_in).unwrap() + &std::fs::read_to_string(&log_out).unwrap();
        // The defaults were the mount's (the mount line lists its connection settings), and
        // faults did happen and were retried: at these rates a run without a retry is
        // impossible in practice (0.9^1000).
        assert!(log.contains("max_retries=9"), "{log}");
        let retries = log.matches("retrying S3 call").count();
        assert!(retries > 0, "no request was retried: {stats:?}");
        assert!(!log.contains("S3 request failed"), "{log}");
        eprintln!("fail rate {rate}: {retries} retries, byte-identical, {stats:?}");
    }
}

#[test]
fn uploads_damaged_on_the_way_are_refused_and_sent_again_never_stored() {
    let mut mount = Mount::new(&["--max-retries", "10", "--part-size", "5M"]);
    let source = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for i in 0..40 {
        let data = pattern(1000 + i * 3001, i as u8);
        std::fs::write(source.path().join(format!("f{i}")), &data).unwrap();
        files.push((format!("f{i}"), data));
    }
    let big = pattern(12 << 20, 99);
    std::fs::write(source.path().join("big"), &big).unwrap();
    files.push(("big".to_string(), big));
    // 30% of uploaded bodies arrive with a flipped byte.
    mount.server.set_corrupt_rate(0.3);
    mount.server.reset_stats();
    mount.sh_ok(&format!("cp {}/* .", source.path().display()));
    mount.server.set_corrupt_rate(0.0);
    let stats = mount.server.stats();
    for (name, data) in &files {
        assert!(
            object(&mount.server, name).as_ref() == Some(data),
            "{name} differs in S3"
        );
    }
    // 40 PutObjects and 1 + 3 + 1 multipart calls succeeded; refused bodies were sent again.
    assert!(
        stats.put + stats.multipart > 45,
        "no body was damaged: {stats:?}"
    );
    eprintln!("corrupt rate 0.3: {stats:?}");
    mount.unmount();
}

#[test]
fn an_object_replaced_under_a_streaming_reader_fails_the_read_never_mixes() {
    let size = 48 << 20;
    let old = pattern(size, 10);
    let new = pattern(size, 200);
    let server = Server::start(&[BUCKET]);
    put_directly(&server, "big", &old);
    let mount = Mount::on(server, BUCKET, &["--cache-size-mib", "8"]);

    let mut file = std::fs::File::open(mount.path("big")).unwrap();
    let mut read = vec![0u8; 4 << 20];
    file.read_exact(&mut read).unwrap();
    put_directly(&mount.server, "big", &new);
    let mut chunk = vec![0u8; 1 << 20];
    let error = loop {
        match file.read(&mut chunk) {
            Ok(0) => break None,
            Ok(n) => read.extend_from_slice(&chunk[..n]),
            Err(e) => break Some(e),
        }
    };
    assert!(
        read[..] == old[..read.len()],
        "bytes of the new version were returned"
    );
    let error = error.expect("reading past the cache after a replacement must fail");
    assert!(
        matches!(error.raw_os_error(), Some(libc::ESTALE) | Some(libc::EIO)),
        "{error}"
    );
    drop(file);
    // A new open after the metadata TTL (1 s) sees the new version whole.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(std::fs::read(mount.path("big")).unwrap() == new);
}

#[test]
fn tools_work_on_a_file_backed_server() {
    let server = FsServer::start(&[BUCKET]);
    let mount = PlainMount::new(&server.endpoint, BUCKET, &["--metadata-ttl", "30"]);
    let source = tempfile::tempdir().unwrap();
    for (path, body) in [
        ("a/one", "1"),
        ("a/b/two", "22"),
        ("a/b/c/three", "333"),
        ("top", "t"),
    ] {
        let file = source.path().join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, body).unwrap();
    }
    let back = tempfile::tempdir().unwrap();
    mount.sh_ok(&format!(
        "cp -a {src}/. ./tree && cp -a ./tree/. {back}/ && diff -r {src} {back}",
        src = source.path().display(),
        back = back.path().display()
    ));
    let archive = tempfile::tempdir().unwrap();
    mount.sh_ok(&format!(
        "rsync -a {src}/ ./synced/ && diff -r {src} ./synced && tar -cf {tar}/t.tar -C ./synced . && mkdir untarred && tar -xf {tar}/t.tar -C untarred && diff -r {src} untarred",
        src = source.path().display(),
        tar = archive.path().display()
    ));
    // s3s-fs never lists `dir/` markers: an empty directory made here stays visible anyway.
    mount.sh_ok("mkdir -p x/y/z && test -d x/y/z && mkdir empty && test -d empty && ls -d empty");
    mount.sh_ok("mv tree/top tree/top2 && test \"$(cat tree/top2)\" = t && test ! -e tree/top");
    mount.sh_ok("echo r > x/y/z/r && mv x/y/z/r x/moved && test \"$(cat x/moved)\" = r");
    mount.sh_ok("rmdir empty && test ! -e empty && rm x/moved && rmdir x/y/z x/y");
    // The objects are files on the server's disk.
    let on_disk = server.root.path().join(BUCKET).join("tree/a/b/c/three");
    assert_eq!(std::fs::read_to_string(on_disk).unwrap(), "333");

    // `a` beside `a/b`: the mount saw no `plain` when it listed; another client made it a
    // file since. mkdir plain gets one clear errno (the server's bare 500 is classified by the
    // store layer as a key conflict, not retried as a transient fault).
    mount.sh_ok("ls >/dev/null");
    std::fs::write(server.root.path().join(BUCKET).join("plain"), "p").unwrap();
    let output = mount.sh("mkdir plain/");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("File exists"), "{stderr}");
}

/// `cat` of small files whose GET bodies the server damages: each gives the file's own bytes
/// (the damage caught, the GET sent once more) or fails with EIO, never other bytes.
#[test]
fn downloads_damaged_on_the_way_are_never_returned_nor_written_back() {
    let mut mount = Mount::new(&[]);
    let files: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| (format!("f{i}"), pattern(3000 + i * 1001, i as u8)))
        .collect();
    for (name, data) in &files {
        put_directly(&mount.server, name, data);
    }

    // Every body damaged: the first GET and the one more both fail the check.
    mount.server.set_corrupt_get_rate(1.0);
    mount.server.reset_stats();
    assert_fails_with(&mount, "cat f0 > /dev/null", "Input/output error");
    // 4 GETs: the kernel asks twice (its read-ahead, then the page itself after that failed),
    // and each ask is a GET plus the one fresh GET after the mismatch.
    assert_eq!(mount.server.stats().get, 4, "{:?}", mount.server.stats());
    // Appending reads the object into a staging file first: never the damaged bytes, so
    // they are never written back.
    mount.server.reset_stats();
    assert_fails_with(&mount, "echo more >> f1", "Input/output error");
    let stats = mount.server.stats();
    assert_eq!(
        (stats.get, stats.put, stats.multipart),
        (2, 0, 0),
        "{stats:?}"
    );
    assert_eq!(object(&mount.server, "f1").as_ref(), Some(&files[1].1));

    // 70% of the bodies damaged: right bytes or EIO, file by file.
    mount.server.set_corrupt_get_rate(0.7);
    mount.server.reset_stats();
    let (mut right, mut refused) = (0, 0);
    for (name, data) in &files[1..] {
        let output = Command::new("cat").arg(mount.path(name)).output().unwrap();
        if output.status.success() {
            assert!(output.stdout == *data, "{name}: cat returned other bytes");
            right += 1;
        } else {
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.contains("Input/output error"), "{name}: {stderr}");
            assert!(output.stdout.is_empty(), "{name}: bytes before the error");
            refused += 1;
        }
    }
    let stats = mount.server.stats();
    mount.server.set_corrupt_get_rate(0.0);
    eprintln!("corrupt get rate 0.7: {right} right, {refused} EIO, {stats:?}");
    assert!(right > 0, "no file survived one retry: {stats:?}");

    // Undamaged again: every file reads back, f0 included.
    for (name, data) in &files {
        assert!(std::fs::read(mount.path(name)).unwrap() == *data, "{name}");
    }
    mount.unmount();
}
