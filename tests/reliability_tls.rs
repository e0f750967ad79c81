//! https endpoints verify certificates: a server whose certificate no trusted root signed is
//! refused at the mount's first request with one line naming the cause, and accepted once
//! the certificate is trusted. The https endpoint is a TLS proxy (`common::tls`) in front of
//! a dev server. These machines set AWS_CA_BUNDLE and SSL_CERT_FILE, so every command here
//! sets or removes them explicitly.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};

use common::devserver::Server;
use common::mount::BUCKET;
use common::proc_server::{scribefs_at, unmount};
use common::tls::TlsProxy;

const TRUST_VARS: [&str; 3] = ["AWS_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"];

/// `scribefs` against `endpoint` with exactly the trust settings in `trust`.
fn scribefs_trusting(endpoint: &str, trust: &[(&str, &Path)]) -> Command {
    let mut command = scribefs_at(endpoint);
    for var in TRUST_VARS {
        command.env_remove(var);
    }
    for (var, value) in trust {
        command.env(var, value);
    }
    command
}

fn mount(endpoint: &str, dir: &Path, trust: &[(&str, &Path)]) -> Output {
    scribefs_trusting(endpoint, trust)
        .arg("mount")
        .arg(BUCKET)
        .arg(dir)
        .output()
        .unwrap()
}

fn proxy_for(server: &Server) -> TlsProxy {
    let addr: SocketAddr = server
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    TlsProxy::start(addr)
}

#[test]
fn a_self_signed_certificate_is_refused_in_one_line() {
    let server = Server::start(&[BUCKET]);
    let proxy = proxy_for(&server);
    let dir = tempfile::tempdir().unwrap();
    let system = Path::new("/etc/ssl/certs/ca-certificates.crt");
    for trust in [
        vec![],
        vec![("SSL_CERT_FILE", system)],
        vec![("AWS_CA_BUNDLE", system)],
    ] {
        let output = mount(&proxy.endpoint, dir.path(), &trust);
        let stderr = String::from_utf8_lossy(&output.stderr);
        eprintln!("{trust:?}: {stderr}");
        assert!(!output.status.success(), "{trust:?}: mounted");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("certificate"), "{stderr}");
    }
    assert_eq!(server.stats().total(), 0, "a request went through");
}

#[test]
fn the_certificate_is_accepted_once_trusted() {
    let server = Server::start(&[BUCKET]);
    let proxy = proxy_for(&server);
    let dir = tempfile::tempdir().unwrap();
    let output = mount(
        &proxy.endpoint,
        dir.path(),
        &[("SSL_CERT_FILE", &proxy.cert)],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(dir.path().join("over-tls"), b"sealed").unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("over-tls")).unwrap(),
        b"sealed"
    );
    unmount(dir.path());
    let object = server.bucket(BUCKET).object("over-tls").unwrap();
    assert_eq!(&object.data[..], b"sealed");
}
