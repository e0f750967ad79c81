//! Every numeric option of the real `scribefs` binary through bad values: each must be refused
//! before anything runs, with exit status 2 and one line on stderr that starts
//! `scribefs: error:` and names the option, never a panic. Good values at the edges of each
//! range must get past parsing (the command then fails for another reason: the mount point does
//! not exist, or nothing listens at the endpoint). No mount and no S3 server is needed.

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Nothing listens there: a command that gets past parsing fails at its first request.
const DEAD_ENDPOINT: &str = "http://127.0.0.1:9";
const NO_DIR: &str = "/nonexistent/scribefs-cli-bounds";

/// The binary with a clean environment: no SCRIBEFS_* or RUST_LOG of the caller, static keys
/// (no credential chain lookup) and an endpoint that refuses connections.
fn scribefs() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_scribefs"));
    command
        .env_clear()
        .env("HOME", std::env::temp_dir())
        .env("S3_ENDPOINT", DEAD_ENDPOINT)
        .env("S3_REGION", "us-east-1")
        .env("S3_PATH_STYLE", "true")
        .env("S3_ACCESS_KEY_ID", "k")
        .env("S3_SECRET_ACCESS_KEY", "s")
        .stdin(Stdio::null());
    command
}

fn run(mut command: Command) -> Output {
    command.output().expect("scribefs runs")
}

/// The command must be refused at parsing: exit 2, one `scribefs: error:` line naming `name`.
fn assert_refused(command: Command, name: &str) -> String {
    let description = format!("{command:?}");
    let output = run(command);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !stderr.contains("panicked") && !stdout.contains("panicked"),
        "{description}: {stderr}"
    );
    assert_eq!(output.status.code(), Some(2), "{description}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{description}: {stderr:?}");
    assert!(
        stderr.starts_with("scribefs: error: "),
        "{description}: {stderr:?}"
    );
    assert!(
        stderr.contains(name),
        "{description}: {stderr:?} names no {name}"
    );
    stderr.trim_end().to_string()
}

/// The command must get past parsing: it fails later (exit 1), for a reason other than a value.
fn assert_parsed(command: Command) {
    let description = format!("{command:?}");
    let output = run(command);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{description}: {stderr}");
    assert_eq!(output.status.code(), Some(1), "{description}: {stderr}");
    assert!(!stderr.contains("out of range"), "{description}: {stderr}");
}

/// `scribefs mount b NO_DIR` with `extra`; global options are accepted there too.
fn mount(extra: &[&str]) -> Command {
    let mut command = scribefs();
    command.args(["mount", "b", NO_DIR]).args(extra);
    command
}

/// Bad for every numeric option: negative, overflowing, not a number at all.
const ALWAYS_BAD: &[&str] = &[
    "-1",
    "-99999999999999999999",
    "99999999999999999999",
    "1e30",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "garbage",
    "",
    " ",
    "0x10",
];

/// (flag, values bad for it besides [`ALWAYS_BAD`], values good for it).
const MOUNT_OPTIONS: &[(&str, &[&str], &[&str])] = &[
    ("--max-retries", &["101", "1.5"], &["0", "3", "100"]),
    ("--timeout-secs", &["0", "86401", "0.5"], &["1", "86400"]),
    ("--pool-size", &["0", "4097", "2.5"], &["1", "4096"]),
    ("--rename-dir-limit", &["1000001", "1.5"], &["0", "1000000"]),
    (
        "--max-cached-nodes",
        &["99", "100000001", "1.5"],
        &["100", "100000000"],
    ),
    ("--uid", &["4294967295", "4294967296"], &["0", "4294967294"]),
    ("--gid", &["4294967295"], &["0", "1000"]),
    (
        "--dir-mode",
        &["999", "10000", "8"],
        &["0", "755", "0o7777"],
    ),
    ("--file-mode", &["17777", "9"], &["644", "0"]),
    (
        "--cache-size-mib",
        &["0", "1048577", "99999999999999", "1.5"],
        &["1", "1048576"],
    ),
    ("--cache-size", &["0", "17592186044416"], &["64"]),
    (
        "--cache-dir-size",
        &["0", "67108865", "17592186044416"],
        &["1", "67108864"],
    ),
    (
        "--metadata-cache-size-mib",
        &["0", "1048577", "1.5"],
        &["1", "1048576"],
    ),
    (
        "--block-size",
        &[
            "0",
            "1K",
            "4095",
            "257M",
            "99999999999",
            "1.5M",
            "-1M",
            "8X",
        ],
        &["4K", "4096", "1M", "1MiB", "256M", "256MB"],
    ),
    (
        "--metadata-ttl",
        &["1e20", "31536001", "-0.5", "soon", "1s", "infinite"],
        &["0", "0.2", "1", "31536000", "indefinite"],
    ),
    (
        "--part-size",
        &["0", "1M", "5242879", "5121M", "6G", "1T", "5.5M"],
        &["5M", "5MiB", "5242880", "8M", "5G"],
    ),
    ("--connect-timeout-secs", &["0", "3601"], &["1", "3600"]),
];

#[test]
fn every_mount_option_refuses_bad_values_in_one_line() {
    for (flag, bad, _) in MOUNT_OPTIONS {
        for value in ALWAYS_BAD.iter().chain(bad.iter()) {
            // Joined, and as a separate argument, where `-1` or `-1M` must not read as flags.
            assert_refused(mount(&[&format!("{flag}={value}")]), flag);
            assert_refused(mount(&[flag, value]), flag);
        }
    }
}

#[test]
fn every_mount_option_accepts_the_edges_of_its_range() {
    for (flag, _, good) in MOUNT_OPTIONS {
        for value in *good {
            assert_parsed(mount(&[flag, value]));
        }
    }
}

/// An option of a command other than mount.
struct Case {
    /// The arguments before the option.
    command: &'static [&'static str],
    flag: &'static str,
    /// Values bad for it besides [`ALWAYS_BAD`].
    bad: &'static [&'static str],
    good: &'static [&'static str],
}

const COMMAND_OPTIONS: &[Case] = &[
    Case {
        command: &["segments", "find", "k"],
        flag: "--parallel",
        bad: &["0", "1025"],
        good: &["1", "1024"],
    },
    Case {
        command: &["segments", "verify"],
        flag: "--parallel",
        bad: &["0"],
        good: &["8"],
    },
    Case {
        command: &["segments", "find", "k"],
        flag: "--max-in-flight-mib",
        bad: &["0", "1048577"],
        good: &["1", "1048576"],
    },
    Case {
        command: &["segments", "pull", "/tmp"],
        flag: "--jobs",
        bad: &["0", "4097"],
        good: &["1"],
    },
    Case {
        command: &["segments", "push", NO_DIR],
        flag: "--jobs",
        bad: &["0"],
        good: &["4096"],
    },
    Case {
        command: &["uploads", "ls"],
        flag: "--older-than",
        bad: &["3651d", "99999999999999999999d", "-1h", "7w", "d", "1.5h"],
        good: &["0", "90", "30m", "24h", "3650d"],
    },
    Case {
        command: &["uploads", "abort"],
        flag: "--older-than",
        bad: &["x"],
        good: &["7d"],
    },
];

#[test]
fn segments_and_uploads_options_refuse_bad_values_in_one_line() {
    for case in COMMAND_OPTIONS {
        for value in ALWAYS_BAD.iter().chain(case.bad) {
            let mut scribefs = scribefs();
            // Joined, and separate (`--jobs -1`).
            scribefs
                .args(case.command)
                .arg(format!("{}={value}", case.flag));
            assert_refused(scribefs, case.flag);
            let mut scribefs = self::scribefs();
            scribefs.args(case.command).args([case.flag, value]);
            assert_refused(scribefs, case.flag);
        }
    }
}

/// A forgotten value is not taken for the flag after it without a word either.
#[test]
fn a_missing_value_is_refused_naming_the_option() {
    let line = assert_refused(mount(&["--part-size", "--read-only"]), "--part-size");
    assert!(line.contains("--read-only is not a size"), "{line}");
}

#[test]
fn segments_and_uploads_options_accept_good_values() {
    for case in COMMAND_OPTIONS {
        for value in case.good {
            let mut scribefs = scribefs();
            scribefs
                .args(["--bucket", "b", "--max-retries", "0", "--timeout-secs", "5"])
                .args(case.command)
                .args([case.flag, value]);
            assert_parsed(scribefs);
        }
    }
}

/// The mount helper's `-o`, the SCRIBEFS_* variable, the `[mount]` key and the `[storage.s3]`
/// key get the same check as the flag.
#[test]
fn every_spelling_of_an_option_gets_the_same_bounds() {
    let line = assert_refused(mount(&["--part-size", "1M"]), "--part-size");
    assert_eq!(
        line,
        "scribefs: error: --part-size 1M is out of range: 5 MiB to 5 GiB"
    );

    let mut helper = scribefs();
    helper.args(["b", NO_DIR, "-o", "ro,part_size=1M"]);
    assert_eq!(assert_refused(helper, "--part-size"), line);

    let mut env = mount(&[]);
    env.env("SCRIBEFS_PART_SIZE", "1M");
    assert_eq!(assert_refused(env, "--part-size"), line);

    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "mount.toml", "[mount]\ncache_size_mib = -1\n");
    let mut file = mount(&["--config"]);
    file.arg(&config);
    assert_refused(file, "--cache-size-mib");

    let config = write(dir.path(), "ttl.toml", "[mount]\nmetadata_ttl = 1e20\n");
    let mut file = mount(&["--config"]);
    file.arg(&config);
    assert_refused(file, "--metadata-ttl");

    for (key, value) in [
        ("pool_size", "0"),
        ("pool_size", "-1"),
        ("timeout_secs", "99999999999999999999"),
        ("max_retries", "nan"),
        ("max_retries", "\"many\""),
    ] {
        let text = format!("[storage.s3]\nbucket = \"b\"\n{key} = {value}\n");
        let config = write(dir.path(), "s3.toml", &text);
        let mut command = scribefs();
        command
            .arg("--config")
            .arg(&config)
            .args(["segments", "ls"]);
        assert_refused(command, key);
    }
}

#[test]
fn a_bad_log_filter_is_refused_in_one_line() {
    for filter in ["verbose", "warning", "debg,hyper=info", "scribefs=loud", ""] {
        assert_refused(mount(&[&format!("--log-level={filter}")]), "--log-level");
    }
    let mut helper = scribefs();
    helper.args(["b", NO_DIR, "-o", "log_level=foo=bar"]);
    assert_refused(helper, "--log-level");
    let mut env = mount(&[]);
    env.env("SCRIBEFS_LOG_LEVEL", "chatty");
    assert_refused(env, "--log-level");
    let mut rust_log = mount(&[]);
    rust_log.env("RUST_LOG", "chatty");
    assert_refused(rust_log, "RUST_LOG");
    for good in ["debug", "warn,scribefs::cache=debug", "hyper=info"] {
        assert_parsed(mount(&["--log-level", good]));
        let mut rust_log = mount(&[]);
        rust_log.env("RUST_LOG", good);
        assert_parsed(rust_log);
    }
}

/// Errors clap finds itself keep the lines that help: the missing arguments and the usage line,
/// the list of valid values.
#[test]
fn clap_errors_keep_their_useful_lines() {
    let mut bare = scribefs();
    bare.arg("mount");
    let output = run(bare);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("scribefs: error: the following required arguments were not provided:"),
        "{stderr}"
    );
    assert!(
        stderr.contains("<BUCKET>") && stderr.contains("<DIR>"),
        "{stderr}"
    );
    assert!(stderr.contains("Usage: scribefs mount"), "{stderr}");

    let output = run(mount(&["--layout", "tree"]));
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("scribefs: error: "), "{stderr}");
    assert!(
        stderr.lines().next().unwrap().contains("--layout"),
        "{stderr}"
    );
    assert!(
        stderr.contains("[possible values: keys, segments]"),
        "{stderr}"
    );

    // Errors of the -o rewriting are errors like the others.
    let mut helper = scribefs();
    helper.args(["b", NO_DIR, "-o", "bogus"]);
    assert_refused(helper, "bogus");
}

#[test]
fn help_and_version_exit_0_and_a_closed_stdout_is_quiet() {
    for args in [
        &["--help"][..],
        &["--version"],
        &["mount", "--help"],
        &["help"],
    ] {
        let output = run({
            let mut command = scribefs();
            command.args(args);
            command
        });
        assert_eq!(output.status.code(), Some(0), "{args:?}");
        assert!(!output.stdout.is_empty(), "{args:?}");
        assert!(output.stderr.is_empty(), "{args:?}");
        // `scribefs --help | head -0`: the reader is gone before anything is written.
        let mut command = scribefs();
        command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
        assert_eq!(output.status.code(), Some(0), "{args:?}");
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}
