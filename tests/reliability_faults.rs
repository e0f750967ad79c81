//! Real mounts against a dev server that goes away: killed (SIGKILL) during a write and during
//! reads, then started again on the same `--root`; and a server that accepts connections but
//! never answers. Each test prints what it measured.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::mount::scrape;
use common::proc_server::{PlainMount, ProcServer, free_port, scribefs_at};
use scribefs::store::{PutOptions, get_bytes};

const BUCKET: &str = "test";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect()
}

/// Waits until `check` holds, up to `limit`; returns whether it did.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A mount with 5 MiB parts that logs to a file, and that file.
fn mount_with_log(server: &ProcServer) -> (PlainMount, tempfile::NamedTempFile) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let log_path = log.path().to_str().unwrap().to_string();
    let args = ["--part-size", "5M", "--log-file", &log_path];
    (PlainMount::new(&server.endpoint(), BUCKET, &args), log)
}

#[test]
fn server_killed_during_a_write_gives_eio_leaves_nothing_and_the_same_cp_then_succeeds() {
    // 4 MB/s per connection: the 48 MiB copy takes seconds, so the kill lands mid-write.
    let mut server = ProcServer::start(BUCKET, &["--bandwidth-mbps", "32"]);
    let rt = runtime();
    let store = server.store(&rt, BUCKET);
    let (mount, log) = mount_with_log(&server);
    let source = tempfile::NamedTempFile::new().unwrap();
    let data = pattern(48 << 20, 7);
    std::fs::write(source.path(), &data).unwrap();

    let mut cp = Command::new("cp")
        .arg(source.path())
        .arg(mount.path("big"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill once the multipart upload exists and a part is on its way to the server (the
    // server counts a request when it arrives: CreateMultipartUpload, then UploadPart).
    assert!(eventually(Duration::from_secs(30), || {
        rt.block_on(store.list_uploads(""))
            .is_ok_and(|u| !u.is_empty())
    }));
    common::wait::until("an UploadPart reached the server", || {
        server.stats().multipart >= 2
    });
    assert!(
        cp.try_wait().unwrap().is_none(),
        "cp finished before the kill"
    );
    server.kill();
    let killed = Instant::now();
    let output = cp.wait_with_output().unwrap();
    let to_error = killed.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "cp succeeded with the server down"
    );
    assert!(stderr.contains("Input/output error"), "{stderr}");
    // A safety net, not the target (scripts/server_kill.sh measures that): a call ends within
    // 2 x --timeout-secs whatever the server does, then the writer waits at most 2 s for the
    // abort before it gets EIO.
    assert!(to_error < Duration::from_secs(62), "EIO after {to_error:?}");
    // The server is gone, not stumbling: each call that failed for good made at most 3
    // attempts, the last refused (a part in flight breaks, the next attempts are refused).
    let text = std::fs::read_to_string(log.path()).unwrap();
    let given_up: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("S3 request failed"))
        .collect();
    assert!(!given_up.is_empty(), "{text}");
    for line in &given_up {
        assert!(line.contains("attempts=3 "), "{line}");
        assert!(line.contains("unreachable"), "{line}");
    }

    server.restart();
    // The abort that failed while the server was down is retried until it succeeds.
    let mut left = Vec::new();
    let cleaned = eventually(Duration::from_secs(40), || {
        left = rt.block_on(store.list_uploads("")).unwrap_or_default();
        left.is_empty()
    });
    let cleaned_after = killed.elapsed();
    assert!(cleaned, "uploads left behind: {left:?}");
    let object = rt.block_on(store.head("big"));
    assert!(
        object.unwrap_err().is_not_found(),
        "an object was left behind"
    );
    eprintln!(
        "server killed mid-write: EIO after {:.2}s, objects left 0, uploads left 0 (all aborted {:.1}s after the kill)",
        to_error.as_secs_f64(),
        cleaned_after.as_secs_f64()
    );

    // Same mount, same command: works now.
    let output = Command::new("cp")
        .arg(source.path())
        .arg(mount.path("big"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stored = rt.block_on(get_bytes(store.as_ref(), "big", None)).unwrap();
    assert!(stored == data, "the copy after the outage differs");
    assert!(rt.block_on(store.list_uploads("")).unwrap().is_empty());
}

#[test]
fn an_abort_still_failing_at_unmount_is_logged_with_its_id_and_uploads_abort_cleans_it() {
    let mut server = ProcServer::start(BUCKET, &["--bandwidth-mbps", "32"]);
    let rt = runtime();
    let store = server.store(&rt, BUCKET);
    let (mount, log) = mount_with_log(&server);
    let source = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(source.path(), pattern(32 << 20, 9)).unwrap();
    let mut cp = Command::new("cp")
        .arg(source.path())
        .arg(mount.path("leaky"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut pending = Vec::new();
    assert!(eventually(Duration::from_secs(30), || {
        pending = rt.block_on(store.list_uploads("")).unwrap_or_default();
        !pending.is_empty()
    }));
    server.kill();
    assert!(!cp.wait().unwrap().success());
    // Unmounted while the server is still down: the abort cannot succeed before exit.
    let dir = mount.root().to_path_buf();
    drop(mount);
    let upload_id = &pending[0].upload_id;
    let mut text = String::new();
    let logged = eventually(Duration::from_secs(20), || {
        text = std::fs::read_to_string(log.path()).unwrap_or_default();
        text.contains("still not aborted at exit")
    });
    assert!(logged, "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("still not aborted at exit"))
        .unwrap();
    assert!(line.contains(upload_id.as_str()), "{line}");
    assert!(!common::mount::is_mounted(&dir));

    server.restart();
    assert_eq!(rt.block_on(store.list_uploads("")).unwrap().len(), 1);
    let output = scribefs_at(&server.endpoint())
        .env("S3_BUCKET", BUCKET)
        .args(["uploads", "abort"])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains(upload_id.as_str()));
    assert!(rt.block_on(store.list_uploads("")).unwrap().is_empty());
}

#[test]
fn server_killed_during_reads_gives_eio_and_reads_work_again_when_it_returns() {
    let mut server = ProcServer::start(BUCKET, &[]);
    let rt = runtime();
    let store = server.store(&rt, BUCKET);
    let data = pattern(3 << 20, 3);
    for name in ["one", "two"] {
        rt.block_on(store.put(name, data.clone().into(), PutOptions::default()))
            .unwrap();
    }
    // Default options, and the metrics, which count every attempt by operation and outcome.
    let addr = format!("127.0.0.1:{}", free_port());
    let mount = PlainMount::new(&server.endpoint(), BUCKET, &["--metrics-addr", &addr]);
    assert_eq!(std::fs::read(mount.path("one")).unwrap(), data);

    server.kill();
    let killed = Instant::now();
    let error = std::fs::read(mount.path("two")).unwrap_err();
    let to_error = killed.elapsed();
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    // Nothing hangs: a listing fails (or answers from its cache) too.
    let started = Instant::now();
    let _ = std::fs::read_dir(mount.root()).map(|d| d.count());
    let listing = started.elapsed();
    // The server is gone, not stumbling: every call that met it made exactly 3 attempts
    // without an answer (refused, or a pooled connection found closed, then refused), not the
    // 10 a server answering 5xx gets. The time to EIO is that of 2 pauses, 0.3 s at most a
    // call (the kernel may ask for a page twice).
    let metrics = scrape(&addr);
    let failed = |op: &str| -> f64 {
        metrics
            .iter()
            .filter(|(line, _)| {
                line.starts_with("scribefs_s3_requests_total{")
                    && line.contains(&format!("operation=\"{op}\""))
                    && (line.contains("outcome=\"connection\"")
                        || line.contains("outcome=\"unreachable\""))
            })
            .map(|(_, count)| *count)
            .sum()
    };
    let refused: Vec<(&String, f64)> = metrics
        .iter()
        .filter(|(line, _)| {
            line.starts_with("scribefs_s3_requests_total{")
                && line.contains("outcome=\"unreachable\"")
        })
        .map(|(line, count)| (line, *count))
        .collect();
    let gets = failed("GetObject");
    assert!(gets >= 3.0, "{refused:?}");
    for op in ["GetObject", "HeadObject", "ListObjectsV2"] {
        assert_eq!(failed(op) % 3.0, 0.0, "{op}: {refused:?}");
    }
    eprintln!(
        "server killed during reads: EIO after {:.2}s, listing {:.2}s, refused attempts {refused:?}",
        to_error.as_secs_f64(),
        listing.as_secs_f64()
    );

    server.restart();
    assert_eq!(std::fs::read(mount.path("two")).unwrap(), data);
    assert_eq!(std::fs::read(mount.path("one")).unwrap(), data);
}

/// Accepts connections and never answers, like a wedged proxy.
fn silent_server() -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        let mut held = Vec::new();
        for socket in listener.incoming().flatten() {
            held.push(socket);
            if held.len() > 64 {
                break;
            }
        }
    });
    (addr, thread)
}

fn mount_against(endpoint: &str, args: &[&str]) -> (std::process::Output, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let output = scribefs_at(endpoint)
        .arg("mount")
        .arg(BUCKET)
        .arg(dir.path())
        .args(args)
        .output()
        .unwrap();
    (output, started.elapsed())
}

#[test]
fn a_server_that_never_answers_fails_the_mount_within_the_connect_timeout() {
    let (addr, _thread) = silent_server();
    let endpoint = format!("http://{addr}");
    let (output, took) = mount_against(&endpoint, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        took < Duration::from_secs(15),
        "default check took {took:?}"
    );
    assert!(
        took >= Duration::from_secs(9),
        "default check took {took:?}"
    );
    assert!(stderr.contains("--connect-timeout-secs"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");

    let (output, took) = mount_against(&endpoint, &["--connect-timeout-secs", "1"]);
    assert!(!output.status.success());
    assert!(took < Duration::from_secs(5), "1 s check took {took:?}");
    eprintln!(
        "silent server: mount gave up after {:.2}s with --connect-timeout-secs 1",
        took.as_secs_f64()
    );

    let help = scribefs_at(&endpoint)
        .args(["mount", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--connect-timeout-secs"), "{help}");
}

/// Nobody listens at the endpoint: the server is gone, and the mount says so after the 3
/// attempts of its bucket check (0.3 s of pauses at most), not after the 10 a stumbling server
/// gets. `scripts/dead-server.sh` measures the time.
#[test]
fn a_mount_against_a_closed_port_gives_up_after_3_refused_attempts() {
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let (output, took) = mount_against(&endpoint, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot reach the S3 endpoint"), "{stderr}");
    assert!(stderr.contains("Connection refused"), "{stderr}");
    assert!(stderr.contains("gave up after 3 attempts"), "{stderr}");
    eprintln!("closed port: mount failed after {:.2}s", took.as_secs_f64());
}

#[test]
fn uploads_ls_and_abort_by_prefix_and_age() {
    let server = ProcServer::start(BUCKET, &[]);
    let rt = runtime();
    let store = server.store(&rt, BUCKET);
    for key in ["data/x", "data/y\nz", "other/w"] {
        rt.block_on(store.create_multipart(key, PutOptions::default()))
            .unwrap();
    }
    let uploads = |args: &[&str]| {
        let output = scribefs_at(&server.endpoint())
            .env("S3_BUCKET", BUCKET)
            .arg("uploads")
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let all = uploads(&["ls"]);
    assert_eq!(all.lines().count(), 3, "{all}");
    assert!(all.contains("\tdata/y\\nz\n"), "{all}");
    assert_eq!(uploads(&["ls", "--prefix", "data/"]).lines().count(), 2);
    assert_eq!(uploads(&["ls", "--older-than", "1h"]), "");
    assert_eq!(uploads(&["abort", "--older-than", "1d"]), "");
    let aborted = uploads(&["abort", "--prefix", "data/"]);
    assert_eq!(aborted.lines().count(), 2, "{aborted}");
    assert!(
        aborted.lines().all(|l| l.starts_with("aborted ")),
        "{aborted}"
    );
    let left = rt.block_on(store.list_uploads("")).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].key, "other/w");
    // `--older-than 1s` selects it once it is more than a second old, by the same clock.
    let initiated = left[0].initiated;
    common::wait::until("the upload is more than a second old", || {
        std::time::SystemTime::now()
            .duration_since(initiated)
            .is_ok_and(|age| age > Duration::from_secs(1))
    });
    assert_eq!(uploads(&["abort", "--older-than", "1s"]).lines().count(), 1);
    assert!(rt.block_on(store.list_uploads("")).unwrap().is_empty());

    let bad = scribefs_at(&server.endpoint())
        .env("S3_BUCKET", BUCKET)
        .args(["uploads", "ls", "--older-than", "soon"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert_eq!(String::from_utf8_lossy(&bad.stderr).lines().count(), 1);
    let _ = std::io::stderr().flush();
}
