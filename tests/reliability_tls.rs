//! https endpoints verify certificates: a server whose certificate no trusted root signed is
//! refused at the mount's first request, at once and in one line naming the cause, and
//! accepted once the certificate is trusted (AWS_CA_BUNDLE, as the AWS CLI reads it, or
//! SSL_CERT_FILE, as the SDK's rustls client reads it). The https endpoint is a TLS proxy (`common::tls`) in front of
//! a dev server. These machines set AWS_CA_BUNDLE and SSL_CERT_FILE, so every command here
//! sets or removes them explicitly.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::devserver::Server;
use common::mount::{BUCKET, is_mounted};
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
fn a_self_signed_certificate_is_refused_at_once_in_one_line() {
    let server = Server::start(&[BUCKET]);
    let proxy = proxy_for(&server);
    let dir = tempfile::tempdir().unwrap();
    let system = Path::new("/etc/ssl/certs/ca-certificates.crt");
    for trust in [
        vec![],
        vec![("SSL_CERT_FILE", system)],
        vec![("AWS_CA_BUNDLE", system)],
    ] {
        let started = Instant::now();
        let output = mount(&proxy.endpoint, dir.path(), &trust);
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{trust:?}: mounted");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(&format!(
                "the TLS certificate of {} is not trusted",
                proxy.endpoint
            )),
            "{trust:?}: {stderr}"
        );
        assert!(stderr.contains("UnknownIssuer"), "{stderr}");
        assert!(stderr.contains("AWS_CA_BUNDLE"), "{stderr}");
        // Not a transient fault: no retries, no backoff.
        assert!(!stderr.contains("attempts"), "{stderr}");
        assert!(took < Duration::from_secs(5), "{trust:?}: took {took:?}");
        eprintln!("{trust:?}: refused in {took:?}: {}", stderr.trim_end());
    }
    assert!(!is_mounted(dir.path()));
    assert_eq!(server.stats().total(), 0, "a request went through");
}

#[test]
fn the_certificate_is_accepted_once_trusted_by_aws_ca_bundle_or_ssl_cert_file() {
    let server = Server::start(&[BUCKET]);
    let proxy = proxy_for(&server);
    for var in ["AWS_CA_BUNDLE", "SSL_CERT_FILE"] {
        let dir = tempfile::tempdir().unwrap();
        let output = mount(&proxy.endpoint, dir.path(), &[(var, &proxy.cert)]);
        assert!(
            output.status.success(),
            "{var}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let name = format!("over-tls-{var}");
        std::fs::write(dir.path().join(&name), var).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(&name)).unwrap(),
            var
        );
        unmount(dir.path());
        let object = server.bucket(BUCKET).object(&name).unwrap();
        assert_eq!(&object.data[..], var.as_bytes());
    }
}

#[test]
fn an_aws_ca_bundle_that_is_no_certificate_is_refused_by_name() {
    let server = Server::start(&[BUCKET]);
    let proxy = proxy_for(&server);
    let dir = tempfile::tempdir().unwrap();
    let junk = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(junk.path(), "not a certificate\n").unwrap();
    let missing = dir.path().join("missing.pem");
    for (bundle, says) in [
        (junk.path(), "no PEM certificate"),
        (missing.as_path(), "No such file"),
    ] {
        let output = mount(&proxy.endpoint, dir.path(), &[("AWS_CA_BUNDLE", bundle)]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(&format!("AWS_CA_BUNDLE={}", bundle.display())),
            "{stderr}"
        );
        assert!(stderr.contains(says), "{stderr}");
    }
    assert_eq!(server.stats().total(), 0);
}
