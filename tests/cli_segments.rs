//! The real `scribefs segments` binary against both S3 servers: every case in [`cases`] runs as
//! `devserver::<case>` (a dev server of its own) and `moto::<case>` (a fresh moto bucket).
//! Errors must be one line on standard error and a non-zero exit status. Cases that need the
//! dev server (two buckets, fault injection) are in [`devserver_only`]; cases that need no
//! server at all are in [`offline`].

mod common;

use std::path::Path;
use std::process::{Command, Output};

macro_rules! for_each_target {
    ($($case:ident),* $(,)?) => {
        mod devserver {
            $(
                #[test]
                fn $case() {
                    let target = crate::common::backend::CliTarget::devserver(&["cli"]);
                    crate::cases::$case(&target);
                }
            )*
        }

        mod moto {
            $(
                #[test]
                fn $case() {
                    let target = crate::common::backend::CliTarget::moto(stringify!($case));
                    crate::cases::$case(&target);
                }
            )*
        }
    };
}

for_each_target!(
    put_ls_get_rm_round_trip,
    get_to_stdout,
    health_reports_the_bucket,
    missing_bucket_is_one_line,
    refused_credentials_are_one_line,
    bad_id_is_refused,
    empty_bucket_flag_is_refused,
);

fn run(mut command: Command) -> Output {
    command.output().expect("scribefs runs")
}

/// Runs `command`, which must succeed; returns its standard output.
fn run_ok(command: Command) -> Vec<u8> {
    let description = format!("{command:?}");
    let output = run(command);
    assert!(
        output.status.success(),
        "{description} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// The command must fail with exactly one line on standard error; returns that line.
fn one_line_error(command: Command) -> String {
    let description = format!("{command:?}");
    let output = run(command);
    assert!(!output.status.success(), "{description} succeeded");
    assert_ne!(output.status.code(), Some(0));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(
        stderr.lines().count(),
        1,
        "{description}: not one line: {stderr:?}"
    );
    assert!(stderr.ends_with('\n'), "{stderr:?}");
    assert!(stderr.starts_with("scribefs: error: "), "{stderr:?}");
    stderr.trim_end().to_string()
}

fn write_file(dir: &Path, name: &str, data: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    fastrand::Rng::with_seed(seed).fill(&mut data);
    data
}

mod cases {
    use std::path::Path;

    use super::common::backend::{CliTarget, Kind};
    use super::common::moto;
    use super::{one_line_error, random_bytes, run_ok, write_file};

    fn segments(target: &CliTarget, args: &[&dyn AsRef<std::ffi::OsStr>]) -> std::process::Command {
        let mut command = target.scribefs();
        command.arg("segments");
        for arg in args {
            command.arg(arg);
        }
        command
    }

    fn ls(target: &CliTarget) -> Vec<String> {
        let stdout = run_ok(segments(target, &[&"ls"]));
        let text = String::from_utf8(stdout).unwrap();
        let ids: Vec<String> = text.lines().map(str::to_string).collect();
        for id in &ids {
            assert!(
                id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
                "not 16 lowercase hex digits: {id:?}"
            );
        }
        ids
    }

    fn read(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    pub fn put_ls_get_rm_round_trip(target: &CliTarget) {
        let dir = tempfile::tempdir().unwrap();
        let big = random_bytes(3 * 1024 * 1024 + 5, 1);
        let every_byte: Vec<u8> = (0..=255u8).collect();
        let big_file = write_file(dir.path(), "big.bin", &big);
        let bytes_file = write_file(dir.path(), "bytes.bin", &every_byte);
        assert!(ls(target).is_empty());

        run_ok(segments(target, &[&"put", &"2a", &big_file]));
        // Upper case and a 0x prefix name the same kind of id.
        run_ok(segments(target, &[&"put", &"0xABC", &bytes_file]));
        assert_eq!(ls(target), ["000000000000002a", "0000000000000abc"]);

        let out = dir.path().join("out.bin");
        run_ok(segments(target, &[&"get", &"000000000000002a", &out]));
        assert!(read(&out) == big, "segment 2a came back different");
        run_ok(segments(target, &[&"get", &"abc", &out]));
        assert_eq!(read(&out), every_byte);

        run_ok(segments(target, &[&"rm", &"2a"]));
        assert_eq!(ls(target), ["0000000000000abc"]);
        let line = one_line_error(segments(target, &[&"get", &"2a", &out]));
        assert!(line.contains("000000000000002a"), "{line}");
        assert!(line.contains("not found"), "{line}");
        assert!(line.contains(&target.config.bucket), "{line}");
        // A failed get leaves the previous download alone.
        assert_eq!(read(&out), every_byte);
        // Removing what is gone succeeds, as a delete does in S3.
        run_ok(segments(target, &[&"rm", &"2a"]));
    }

    pub fn get_to_stdout(target: &CliTarget) {
        let dir = tempfile::tempdir().unwrap();
        let every_byte: Vec<u8> = (0..=255u8).rev().chain(0..=255u8).collect();
        let file = write_file(dir.path(), "bytes.bin", &every_byte);
        run_ok(segments(target, &[&"put", &"ffffffffffffffff", &file]));
        let stdout = run_ok(segments(target, &[&"get", &"ffffffffffffffff"]));
        assert_eq!(stdout, every_byte);
        assert_eq!(ls(target), ["ffffffffffffffff"]);
        let missing = one_line_error(segments(target, &[&"get", &"7"]));
        assert!(missing.contains("0000000000000007"), "{missing}");
    }

    pub fn health_reports_the_bucket(target: &CliTarget) {
        let stdout = String::from_utf8(run_ok(segments(target, &[&"health"]))).unwrap();
        assert!(stdout.starts_with("ok"), "{stdout}");
        assert!(stdout.contains(&target.config.bucket), "{stdout}");
    }

    pub fn missing_bucket_is_one_line(target: &CliTarget) {
        for command in ["health", "ls"] {
            let mut scribefs = segments(target, &[&command]);
            scribefs.env("S3_BUCKET", "no-such-bucket-for-cli");
            let line = one_line_error(scribefs);
            assert!(line.contains("\"no-such-bucket-for-cli\""), "{line}");
            assert!(line.contains("does not exist"), "{line}");
        }
    }

    /// The dev server checks signatures, so a wrong secret is refused; moto checks nothing
    /// unless IAM is on, so its refusing instance stands in (it knows no keys at all).
    pub fn refused_credentials_are_one_line(target: &CliTarget) {
        let mut scribefs = segments(target, &[&"health"]);
        match target.kind {
            Kind::DevServer => scribefs.env("S3_SECRET_ACCESS_KEY", "not-the-secret"),
            Kind::Moto => scribefs.env("S3_ENDPOINT", &moto::checking_credentials().endpoint),
        };
        let line = one_line_error(scribefs);
        assert!(line.contains("access denied"), "{line}");
        assert!(line.contains("check the access key and secret"), "{line}");
        assert!(line.contains(&target.config.bucket), "{line}");
    }

    pub fn bad_id_is_refused(target: &CliTarget) {
        let dir = tempfile::tempdir().unwrap();
        let file = write_file(dir.path(), "x", b"x");
        for args in [
            vec!["get", "zz"],
            vec!["rm", "zz"],
            vec!["put", "zz", file.to_str().unwrap()],
            vec!["get", "1ffffffffffffffff"],
        ] {
            let mut scribefs = target.scribefs();
            scribefs.arg("segments").args(&args);
            let line = one_line_error(scribefs);
            assert!(line.contains(args[1]), "{line}");
            assert!(line.contains("hex"), "{line}");
        }
        assert!(ls(target).is_empty());
    }

    pub fn empty_bucket_flag_is_refused(target: &CliTarget) {
        let mut scribefs = target.scribefs();
        scribefs.args(["--bucket", "", "segments", "ls"]);
        let line = one_line_error(scribefs);
        assert!(line.contains("bucket"), "{line}");
    }
}

/// Failures found before any request is answered.
mod offline {
    use super::common::backend::scribefs_bare;
    use super::common::moto::free_port;
    use super::{one_line_error, write_file};

    #[test]
    fn refused_connection_names_the_endpoint() {
        let endpoint = format!("http://127.0.0.1:{}", free_port());
        for command in ["health", "ls"] {
            let mut scribefs = scribefs_bare();
            scribefs
                .args(["--endpoint-url", &endpoint, "--bucket", "b"])
                .args(["--force-path-style", "--max-retries", "1"])
                .env("S3_ACCESS_KEY_ID", "k")
                .env("S3_SECRET_ACCESS_KEY", "s")
                .args(["segments", command]);
            let line = one_line_error(scribefs);
            assert!(line.contains(&endpoint), "{line}");
            assert!(line.contains("gave up after 2 attempts"), "{line}");
        }
    }

    #[test]
    fn unknown_key_in_the_config_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let config = write_file(
            dir.path(),
            "scribefs.toml",
            b"[storage.s3]\nbucket = \"b\"\nendpoit = \"http://127.0.0.1:1\"\n",
        );
        let mut scribefs = scribefs_bare();
        scribefs
            .arg("--config")
            .arg(&config)
            .args(["segments", "ls"]);
        let line = one_line_error(scribefs);
        assert!(line.contains("endpoit"), "{line}");
        assert!(line.contains("scribefs.toml"), "{line}");
    }

    #[test]
    fn empty_bucket_everywhere_is_refused() {
        let mut scribefs = scribefs_bare();
        scribefs.env("S3_BUCKET", "").args(["segments", "health"]);
        let line = one_line_error(scribefs);
        assert!(line.contains("bucket"), "{line}");
    }
}

/// Cases that need a dev server: two buckets at once, or fault injection.
mod devserver_only {
    use std::path::PathBuf;

    use bytes::Bytes;
    use scribefs::devserver::SeedShape;
    use scribefs::store::PutOptions;
    use scribefs::store::memory::StoredObject;

    use super::common::backend::{CliTarget, scribefs_bare};
    use super::common::devserver::{ACCESS_KEY, SECRET_KEY};
    use super::common::moto::free_port;
    use super::{random_bytes, run_ok, write_file};

    fn ls_of(mut command: std::process::Command) -> String {
        command.args(["segments", "ls"]);
        String::from_utf8(run_ok(command)).unwrap()
    }

    /// `[storage.s3]` alone, env over the file, flags over env: each layer is seen by which
    /// bucket's segment `ls` shows, and a closed port where a lower layer must not be used.
    #[test]
    fn flags_beat_env_beat_config_file() {
        let target = CliTarget::devserver(&["one", "two"]);
        let endpoint = target.config.endpoint.clone().unwrap();
        let closed = format!("http://127.0.0.1:{}", free_port());
        let dir = tempfile::tempdir().unwrap();
        let data = write_file(dir.path(), "data", b"segment");
        for (bucket, id) in [("one", "1"), ("two", "2")] {
            let mut put = target.scribefs();
            put.args(["--bucket", bucket, "segments", "put", id])
                .arg(&data);
            run_ok(put);
        }
        let config_file = |endpoint: &str, bucket: &str| -> PathBuf {
            let text = format!(
                "[node]\nid = 1\n\n[storage.s3]\nbucket = \"{bucket}\"\nendpoint = \"{endpoint}\"\n\
                 access_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"\n\
                 path_style = true\nmax_retries = 0\n"
            );
            write_file(dir.path(), &format!("{bucket}.toml"), text.as_bytes())
        };

        let mut file_only = scribefs_bare();
        file_only.arg("--config").arg(config_file(&endpoint, "one"));
        assert_eq!(ls_of(file_only), "0000000000000001\n");

        let mut env_over_file = scribefs_bare();
        env_over_file
            .arg("--config")
            .arg(config_file(&closed, "one"))
            .env("S3_ENDPOINT", &endpoint)
            .env("S3_BUCKET", "two");
        assert_eq!(ls_of(env_over_file), "0000000000000002\n");

        let mut flags_over_env = scribefs_bare();
        flags_over_env
            .arg("--config")
            .arg(config_file(&closed, "one"))
            .env("S3_ENDPOINT", &closed)
            .env("S3_BUCKET", "one")
            .args(["--endpoint-url", &endpoint, "--bucket", "two"]);
        assert_eq!(ls_of(flags_over_env), "0000000000000002\n");

        // Without the flag, the env's closed port is used: the layer really was overridden.
        let mut env_only = scribefs_bare();
        env_only
            .arg("--config")
            .arg(config_file(&endpoint, "one"))
            .env("S3_ENDPOINT", &closed)
            .args(["segments", "ls"]);
        let output = env_only.output().unwrap();
        assert!(!output.status.success());
        assert!(String::from_utf8_lossy(&output.stderr).contains(&closed));
    }

    /// Past one listing page, `ls`, `verify`, `pull` and `push` work page by page and miss
    /// nothing: a key spelled otherwise that lists among the ledger's keys (17 hex digits, id
    /// 0x600, listed between 0x60 and 0x61) comes last in `ls`.
    #[test]
    fn ls_verify_pull_and_push_go_through_every_page() {
        const SEGMENTS: u64 = 1_500;
        let target = CliTarget::devserver(&["many"]);
        let server = target.server().unwrap();
        let shape = SeedShape::Segments { count: SEGMENTS };
        assert_eq!(server.seed_objects("many", shape), 2 * SEGMENTS);
        let stray = StoredObject::new(Bytes::from_static(b"x"), PutOptions::default());
        server
            .bucket("many")
            .insert("segments/segment-00000000000000600.bin", stray);
        let scribefs = |args: &[&str]| {
            let mut command = target.scribefs();
            command.arg("segments").args(args);
            command
        };

        let listed = String::from_utf8(run_ok(scribefs(&["ls"]))).unwrap();
        let mut expected: String = (0..SEGMENTS).map(|id| format!("{id:016x}\n")).collect();
        expected.push_str("0000000000000600\n");
        assert!(
            listed == expected,
            "ls printed {} lines",
            listed.lines().count()
        );

        let verified = scribefs(&["verify", "--parallel", "16"]).output().unwrap();
        assert!(!verified.status.success());
        assert_eq!(
            String::from_utf8_lossy(&verified.stdout),
            "segment 0000000000000600: has no sidecar segment-0000000000000600.meta.json\n"
        );
        let stderr = String::from_utf8_lossy(&verified.stderr);
        assert!(stderr.contains("1 of 1501 segment(s) are bad"), "{stderr}");

        let dir = tempfile::tempdir().unwrap();
        let into = dir.path().to_str().unwrap();
        let summary = |output: Vec<u8>| {
            let text = String::from_utf8(output).unwrap();
            text.lines().last().unwrap_or_default().to_string()
        };
        let pulled = summary(run_ok(scribefs(&["pull", into, "--jobs", "16"])));
        assert!(pulled.starts_with("pulled 3001 files"), "{pulled}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3001);
        let again = summary(run_ok(scribefs(&["pull", into])));
        assert!(again.starts_with("pulled 0 files"), "{again}");
        assert!(again.contains("3001 identical skipped"), "{again}");
        // Push finds every remote ETag by walking the listing beside the sorted names.
        let pushed = summary(run_ok(scribefs(&["push", into])));
        assert!(pushed.starts_with("pushed 0 files"), "{pushed}");
        assert!(pushed.contains("3001 identical skipped"), "{pushed}");
    }

    /// The done-when through the binary: at a 20 % failure rate with 8 retries, 100
    /// puts and 100 gets all succeed and every byte matches.
    #[test]
    fn fail_rate_0_2_with_8_retries_loses_nothing() {
        const SEGMENTS: u64 = 100;
        const PARALLEL: u64 = 6;
        let target = CliTarget::devserver(&["faults"]);
        let server = target.server().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let body = |id: u64| random_bytes(10_000 + (id as usize * 7919) % 90_000, id);
        let scribefs = |args: &[&str]| {
            let mut command = target.scribefs();
            command.args(["--max-retries", "8", "segments"]).args(args);
            command
        };
        let files: Vec<PathBuf> = (0..SEGMENTS)
            .map(|id| write_file(dir.path(), &format!("in-{id}"), &body(id)))
            .collect();
        server.set_fail_rate(0.2);
        server.reset_stats();
        // Each worker takes every PARALLEL-th segment.
        let each_worker = |work: &(dyn Fn(u64) + Sync)| {
            std::thread::scope(|scope| {
                for worker in 0..PARALLEL {
                    scope.spawn(move || {
                        for id in (worker..SEGMENTS).step_by(PARALLEL as usize) {
                            work(id);
                        }
                    });
                }
            });
        };
        each_worker(&|id| {
            let path = files[id as usize].to_str().unwrap();
            run_ok(scribefs(&["put", &format!("{:x}", id * 5), path]));
        });
        each_worker(&|id| {
            let out = dir.path().join(format!("out-{id}"));
            run_ok(scribefs(&[
                "get",
                &format!("{:x}", id * 5),
                out.to_str().unwrap(),
            ]));
            assert!(
                std::fs::read(&out).unwrap() == body(id),
                "segment {id} came back different"
            );
        });
        let stats = server.stats();
        // 200 calls at a 20 % rate: faults happened and were retried.
        assert!(stats.put > SEGMENTS && stats.get > SEGMENTS, "{stats:?}");
        server.set_fail_rate(0.0);
        let listed = ls_of(target.scribefs());
        let expected: String = (0..SEGMENTS)
            .map(|id| format!("{:016x}\n", id * 5))
            .collect();
        assert_eq!(listed, expected);
    }
}
