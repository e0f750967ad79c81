//! Where log lines go: standard error (foreground, or the `--log-file` a background mount's
//! parent opened as its stderr) or syslog (a background mount without `--log-file`).
//!
//! The level is `--log-level`, else `RUST_LOG`, else the command's default.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;

/// The socket syslog daemons (rsyslog, journald) read.
pub const DEFAULT_SYSLOG_SOCKET: &str = "/dev/log";

pub enum Target {
    Stderr,
    Syslog(PathBuf),
}

/// Installs the global subscriber. `directives` is `--log-level`, which beats `RUST_LOG`.
pub fn init(directives: Option<&str>, default: &str, target: Target) {
    let filter = match directives {
        Some(text) => tracing_subscriber::EnvFilter::try_new(text).ok(),
        None => tracing_subscriber::EnvFilter::try_from_default_env().ok(),
    }
    .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let syslog = match target {
        Target::Syslog(path) => Syslog::connect(&path),
        Target::Stderr => None,
    };
    let _ = match syslog {
        // syslog stamps each line itself.
        Some(syslog) => builder
            .with_writer(syslog)
            .with_ansi(false)
            .without_time()
            .try_init(),
        None => builder
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}

/// Sends each event as one RFC 3164 datagram, `<PRI>scribefs[PID]: message`, facility daemon.
#[derive(Clone)]
pub struct Syslog {
    socket: Arc<Mutex<UnixDatagram>>,
    path: PathBuf,
}

impl Syslog {
    /// `None` when no syslog daemon listens at `path` (a container, a minimal system).
    pub fn connect(path: &Path) -> Option<Syslog> {
        let socket = UnixDatagram::unbound().ok()?;
        socket.connect(path).ok()?;
        Some(Syslog {
            socket: Arc::new(Mutex::new(socket)),
            path: path.to_path_buf(),
        })
    }

    fn send(&self, severity: u8, message: &[u8]) {
        const FACILITY_DAEMON: u8 = 3;
        let text = String::from_utf8_lossy(message);
        let datagram = format!(
            "<{}>scribefs[{}]: {}",
            FACILITY_DAEMON * 8 + severity,
            std::process::id(),
            text.trim_end()
        );
        let Ok(mut socket) = self.socket.lock() else {
            return;
        };
        if socket.send(datagram.as_bytes()).is_ok() {
            return;
        }
        // The daemon may have restarted and made a new socket: reconnect once.
        if let Ok(fresh) = UnixDatagram::unbound()
            && fresh.connect(&self.path).is_ok()
        {
            let _ = fresh.send(datagram.as_bytes());
            *socket = fresh;
        }
    }
}

/// One event's bytes, sent when the formatter drops the writer.
pub struct SyslogLine {
    syslog: Syslog,
    severity: u8,
    buffer: Vec<u8>,
}

impl Write for SyslogLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine {
    fn drop(&mut self) {
        if !self.buffer.is_empty() {
            self.syslog.send(self.severity, &self.buffer);
        }
    }
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = SyslogLine;

    fn make_writer(&'a self) -> SyslogLine {
        self.line(6)
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> SyslogLine {
        let severity = match *meta.level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        self.line(severity)
    }
}

impl Syslog {
    fn line(&self, severity: u8) -> SyslogLine {
        SyslogLine {
            syslog: self.clone(),
            severity,
            buffer: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_become_datagrams_with_their_severity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let syslog = Syslog::connect(&path).unwrap();
        let mut line = syslog.line(4);
        line.write_all(b"WARN something failed\n").unwrap();
        drop(line);
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        let expected = format!(
            "<28>scribefs[{}]: WARN something failed",
            std::process::id()
        );
        assert_eq!(text, expected);
        assert!(Syslog::connect(&dir.path().join("absent")).is_none());
    }
}
