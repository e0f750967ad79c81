//! What the real `scribefs` binary writes on standard output when nobody reads it, and the text
//! it generates about itself: shell completions and manual pages.
//!
//! A closed standard output (`scribefs segments ls | head -1` once `head` has gone) must end a
//! command quietly: no panic, no "Broken pipe" line, status 0. The tests close the pipe's read
//! end before the command starts, so its first write fails with EPIPE every time, not only when
//! the scheduler lets the reader go first.

mod common;

use std::process::{Command, Output, Stdio};

use clap::CommandFactory;
use common::backend::scribefs_bare;
use common::devserver::Server;
use scribefs::cli::args::Cli;
use scribefs::devserver::DevServerConfig;

const BUCKET: &str = "output";
/// Ids of the demo segments the dev server seeds (0x1000 + i*7 + (i%3)*2).
const SEEDED: [&str; 3] = ["1000", "1009", "1012"];

fn seeded_server() -> Server {
    Server::start_with(DevServerConfig {
        seed_segments: SEEDED.len(),
        ..DevServerConfig::for_tests(&[BUCKET])
    })
}

/// `scribefs` against `server`'s bucket, with nothing of our environment.
fn scribefs_at(server: &Server) -> Command {
    let mut command = scribefs_bare();
    command
        .env("S3_ENDPOINT", server.endpoint())
        .env("S3_BUCKET", BUCKET)
        .env("S3_PATH_STYLE", "true")
        .env("S3_ACCESS_KEY_ID", common::devserver::ACCESS_KEY)
        .env("S3_SECRET_ACCESS_KEY", common::devserver::SECRET_KEY);
    command
}

/// Runs `command` with a standard output whose reader is already gone.
fn run_with_closed_stdout(mut command: Command) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    command
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped());
    command.output().expect("scribefs runs")
}

fn run(mut command: Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .expect("scribefs runs")
}

#[test]
fn a_closed_stdout_ends_every_command_quietly() {
    let server = seeded_server();
    let id = SEEDED[0];
    let commands: &[&[&str]] = &[
        &["segments", "ls"],
        &["segments", "get", id],
        &["segments", "cat", id],
        &["segments", "cat", id, "--format", "raw"],
        &["segments", "health"],
        &["segments", "verify"],
        &["completions", "bash"],
        &["man"],
        &["man", "mount"],
        &["--help"],
        &["mount", "--help"],
    ];
    for args in commands {
        // The same command with a reader: it has output to lose, so the test can fail.
        let mut command = scribefs_at(&server);
        command.args(*args);
        let read = run(command);
        assert!(read.status.success(), "{args:?}: {read:?}");
        assert!(!read.stdout.is_empty(), "{args:?} prints nothing");

        let mut command = scribefs_at(&server);
        command.args(*args);
        let output = run_with_closed_stdout(command);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr, "", "{args:?}");
        assert_eq!(output.status.code(), Some(0), "{args:?}");
    }
}

/// `verify | head`: the check goes on past a closed output, and its status still counts the
/// bad segments that nobody saw.
#[test]
fn verify_still_fails_on_a_bad_segment_when_stdout_is_closed() {
    let server = seeded_server();
    let key = format!("segments/segment-{:0>16}.bin", SEEDED[1]);
    let store = server.bucket(BUCKET);
    let runtime = &server.runtime;
    runtime.block_on(async {
        use scribefs::store::{ObjectStore, PutOptions};
        store
            .put(
                &key,
                bytes::Bytes::from_static(b"not a segment"),
                PutOptions::default(),
            )
            .await
            .expect("put");
    });
    let mut command = scribefs_at(&server);
    command.args(["segments", "verify"]);
    let output = run_with_closed_stdout(command);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("1 of 3 segment(s) are bad"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// Every long option of a command, as clap knows it (new options included).
fn long_options(command: &clap::Command) -> Vec<String> {
    command
        .get_arguments()
        .filter_map(|arg| arg.get_long())
        .filter(|long| *long != "help" && *long != "version")
        .map(|long| format!("--{long}"))
        .collect()
}

#[test]
fn completions_are_scripts_that_know_the_commands_and_options() {
    let mut cli = Cli::command();
    cli.build();
    let mount = cli.find_subcommand("mount").expect("mount command");
    for shell in ["bash", "zsh", "fish"] {
        // No bucket and no endpoint: generating text needs no configuration.
        let mut command = scribefs_bare();
        command.args(["completions", shell]);
        let output = run(command);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{shell}: {stderr}");
        assert_eq!(stderr, "", "{shell}");
        let script = String::from_utf8(output.stdout).expect("UTF-8");
        for word in ["scribefs", "mount", "segments", "uploads"] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
        // fish names options without their dashes (`-l metadata-ttl`).
        for option in long_options(mount) {
            let name = option.trim_start_matches('-');
            assert!(script.contains(name), "{shell}: no {option}");
        }
    }
    // bash itself must accept the script (bash is on every machine the tests run on).
    let mut command = scribefs_bare();
    command.args(["completions", "bash"]);
    let script = run(command).stdout;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("scribefs.bash");
    std::fs::write(&path, script).expect("write");
    let checked = Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .expect("bash runs");
    assert!(checked.status.success(), "{checked:?}");
}

#[test]
fn an_unknown_shell_is_refused_with_the_valid_ones() {
    let mut command = scribefs_bare();
    command.args(["completions", "tcsh"]);
    let output = run(command);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("scribefs: error: "), "{stderr}");
    for shell in ["bash", "zsh", "fish"] {
        assert!(stderr.contains(shell), "{stderr}");
    }
}

/// How roff spells `--metadata-ttl`: `\-\-metadata\-ttl`.
fn roff(option: &str) -> String {
    option.replace('-', "\\-")
}

#[test]
fn man_pages_describe_every_command_and_option() {
    // Built, as for --help: each command then has the global options it accepts.
    let mut cli = Cli::command();
    cli.build();
    let mut command = scribefs_bare();
    command.arg("man");
    let output = run(command);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let page = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(page.contains(".TH scribefs 1"), "{page}");
    for sub in cli.get_subcommands().filter(|s| s.get_name() != "help") {
        assert!(
            page.contains(&format!("scribefs\\-{}(1)", sub.get_name())),
            "scribefs(1) does not refer to scribefs-{}(1)",
            sub.get_name()
        );
    }
    for name in ["mount", "segments"] {
        let sub = cli.find_subcommand(name).expect("command");
        let mut command = scribefs_bare();
        command.args(["man", name]);
        let output = run(command);
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        let page = String::from_utf8(output.stdout).expect("UTF-8");
        assert!(page.contains(&format!(".TH scribefs-{name} 1")), "{page}");
        // The command's own options and the global ones (connection, logging).
        for option in long_options(sub) {
            assert!(
                page.contains(&roff(&option)),
                "scribefs-{name}(1) lacks {option}"
            );
        }
    }
    // What scripts/install.sh installs: a page per command.
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("man1");
    let mut command = scribefs_bare();
    command.arg("man").arg("--out-dir").arg(&out);
    let output = run(command);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    for page in ["scribefs.1", "scribefs-mount.1", "scribefs-segments-ls.1"] {
        let text = std::fs::read_to_string(out.join(page)).expect(page);
        assert!(text.contains(".TH "), "{page}");
    }
    let mut command = scribefs_bare();
    command.args(["man", "nosuch"]);
    let output = run(command);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("nosuch"), "{stderr}");
}
