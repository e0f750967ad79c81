//! Standard output of the commands, and what a closed one means.
//!
//! A reader that stops reading (`scribefs segments ls | head -1`) closes the pipe, and our next
//! write fails with EPIPE (Rust ignores SIGPIPE, so no signal comes). That is not an error of
//! ours: the command ends quietly with status 0, as `--help` does (clap ignores it too), instead
//! of `println!`'s panic or a "Broken pipe" line. A command whose only product is its output
//! stops there ([`CliError::StdoutClosed`]); one with other work or an exit status to report
//! (aborting uploads, copying files, verifying segments) goes on without its output
//! ([`unless_closed`]), so `| head` never hides a failure or leaves a job half done.
//!
//! Why not SIGPIPE's default action instead, as C tools have it: the mount process writes to
//! pipes and sockets of its own (the readiness pipe to a parent that may be gone, syslog, S3
//! connections), where EPIPE is an error to handle, and the signal would kill a live mount.

use std::io::Write;

use super::CliError;

/// The error of a failed write to standard output: [`CliError::StdoutClosed`] for EPIPE.
pub(super) fn stdout_error(error: std::io::Error) -> CliError {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        CliError::StdoutClosed
    } else {
        CliError::Io(format!("cannot write to standard output: {error}"))
    }
}

/// Writes `bytes` to standard output and flushes.
pub(super) fn write_all(bytes: &[u8]) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

/// `println!` that reports a closed standard output instead of panicking.
pub(super) fn line(text: std::fmt::Arguments) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

/// `result` with a closed standard output counted as success: for output a command can do
/// without (its work goes on, and its exit status still tells how it went).
pub(super) fn unless_closed(result: Result<(), CliError>) -> Result<(), CliError> {
    match result {
        Err(CliError::StdoutClosed) => Ok(()),
        other => other,
    }
}
