//! An https endpoint in front of a test server: a self-signed certificate for 127.0.0.1 made
//! with the openssl CLI, served by a small python3 TLS proxy (`tls_proxy.py`) that forwards
//! each connection to the server's plain http port.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct TlsProxy {
    /// `https://127.0.0.1:PORT`
    pub endpoint: String,
    /// The self-signed certificate (PEM), to trust or not.
    pub cert: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl TlsProxy {
    pub fn start(backend: SocketAddr) -> TlsProxy {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let made = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1"])
            // An end-entity certificate: rustls refuses a CA certificate as a server's own.
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl (scripts/lib.sh installs it)");
        assert!(
            made.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/tls_proxy.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(&cert)
            .arg(&key)
            .arg(backend.port().to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line.trim().parse().expect("the proxy prints its port");
        TlsProxy {
            endpoint: format!("https://127.0.0.1:{port}"),
            cert,
            child,
            _dir: dir,
        }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
