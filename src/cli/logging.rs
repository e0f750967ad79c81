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

/// Checks a log filter the way `--log-level` and `RUST_LOG` are read, so that a typo is refused
/// instead of silently logging at the default level (or not at all).
///
/// EnvFilter alone takes a bare word for a target name: `verbose` or `warning` would enable
/// "all events of the target `warning`", that is nothing. So a directive without `=`, `::` or a
/// span filter must be a level; a whole crate is named as `hyper=debug`.
pub fn parse_filter(text: &str) -> Result<String, FilterError> {
    if text.trim().is_empty() {
        return Err(FilterError::Empty);
    }
    for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let names_target = directive.contains(['=', '[', '{']) || directive.contains("::");
        if !names_target
            && directive
                .parse::<tracing::level_filters::LevelFilter>()
                .is_err()
        {
            return Err(FilterError::NotALevel(directive.to_string()));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(text)
        .map_err(|e| FilterError::Syntax(e.to_string()))?;
    Ok(text.to_string())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("is not a log filter: it is empty")]
    Empty,
    #[error(
        "is not a log filter: {0:?} is not a level (error, warn, info, debug, trace, off); \
         name a target as TARGET=LEVEL"
    )]
    NotALevel(String),
    #[error("is not a log filter: {0}")]
    Syntax(String),
}

/// The filter in force: `directives` (`--log-level`, already checked by [`parse_filter`]), else
/// `RUST_LOG` when set, else `default`. A bad `RUST_LOG` is an error naming it.
pub fn filter(
    directives: Option<&str>,
    default: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<tracing_subscriber::EnvFilter, String> {
    let text = match directives {
        Some(text) => text.to_string(),
        None => match env("RUST_LOG").filter(|v| !v.trim().is_empty()) {
            Some(text) => {
                parse_filter(&text).map_err(|e| format!("RUST_LOG={text:?} {e}"))?;
                text
            }
            None => default.to_string(),
        },
    };
    tracing_subscriber::EnvFilter::builder()
        .parse(&text)
        .map_err(|e| format!("log filter {text:?}: {e}"))
}

/// Installs the global subscriber with `filter` (see [`filter`]).
pub fn init(filter: tracing_subscriber::EnvFilter, target: Target) {
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
    fn log_filters_are_levels_or_target_directives() {
        for good in [
            "warn",
            "INFO",
            "off",
            "warn,scribefs::cache=debug",
            "hyper=debug",
            "scribefs::cli",
            "info,[mount]=debug",
        ] {
            assert_eq!(parse_filter(good), Ok(good.to_string()), "{good}");
        }
        for bad in [
            "",
            " ",
            "verbose",
            "warning",
            "debg,hyper=info",
            "scribefs=loud",
        ] {
            assert!(parse_filter(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_bad_rust_log_is_an_error_naming_it() {
        let env =
            |value: &'static str| move |name: &str| (name == "RUST_LOG").then(|| value.into());
        let err = filter(None, "warn", &env("chatty")).unwrap_err();
        assert!(
            err.starts_with("RUST_LOG=\"chatty\" is not a log filter"),
            "{err}"
        );
        assert!(filter(None, "warn", &env("debug")).is_ok());
        assert!(filter(None, "warn", &env("")).is_ok());
        // --log-level beats RUST_LOG, which is then not looked at.
        assert!(filter(Some("info"), "warn", &env("chatty")).is_ok());
    }

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
