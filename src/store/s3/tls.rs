//! TLS trust for https endpoints. By default the SDK's rustls client trusts the system roots
//! (`SSL_CERT_FILE`/`SSL_CERT_DIR` when set, as rustls-native-certs reads them). `AWS_CA_BUNDLE`,
//! which the AWS CLI and boto honour but the Rust SDK ignores, names a PEM file whose
//! certificates are then trusted instead, as the CLI does. A certificate the client refuses is
//! told apart from a broken connection, so it is reported at once and not retried.

use aws_sdk_s3::config::{SharedAsyncSleep, SharedHttpClient};
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use aws_smithy_http_client::{Builder, Connector};
use aws_smithy_runtime_api::client::http::HttpConnectorSettings;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::StoreError;

pub const CA_BUNDLE_VAR: &str = "AWS_CA_BUNDLE";

/// The trust store of `AWS_CA_BUNDLE`, or `None` when it is unset (the system roots then). A
/// bundle that cannot be read or holds no certificate is a configuration error naming the file.
pub(super) fn bundle_from_env() -> Result<Option<TlsContext>, StoreError> {
    let Some(path) = std::env::var_os(CA_BUNDLE_VAR).filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let shown = std::path::Path::new(&path).display().to_string();
    let pem = std::fs::read(&path)
        .map_err(|e| StoreError::Config(format!("{CA_BUNDLE_VAR}={shown}: {e}")))?;
    // The SDK panics on a malformed PEM when it builds the connector: check it here first.
    let count = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::Config(format!("{CA_BUNDLE_VAR}={shown}: not a PEM file: {e}")))?
        .len();
    if count == 0 {
        return Err(StoreError::Config(format!(
            "{CA_BUNDLE_VAR}={shown}: no PEM certificate in the file"
        )));
    }
    let context = TlsContext::builder()
        .with_trust_store(TrustStore::empty().with_pem_certificate(pem))
        .build()
        .map_err(|e| StoreError::Config(format!("{CA_BUNDLE_VAR}={shown}: {e}")))?;
    Ok(Some(context))
}

/// An https client trusting only the certificates of `bundle`: the SDK's default https client
/// (aws-smithy-runtime's `default_https_client`) with the trust store replaced, same crypto,
/// proxy from the environment, timeouts from the config.
pub(super) fn sdk_client(bundle: TlsContext) -> SharedHttpClient {
    Builder::new().build_with_connector_fn(move |settings, components| {
        let sleep = components.and_then(|c| c.sleep_impl());
        connector(Some(bundle.clone()), settings, sleep)
    })
}

/// A connector with the trust of `bundle` (the system roots when `None`). The SDK's default
/// client uses no proxy; the client of a bundle takes it from the environment, as the AWS CLI
/// does. The requests sent outside the SDK (`lean`) use one built the same way, so both
/// reach the server alike; their timeouts are the caller's.
pub(super) fn connector(
    bundle: Option<TlsContext>,
    settings: Option<&HttpConnectorSettings>,
    sleep: Option<SharedAsyncSleep>,
) -> Connector {
    let mut builder = Connector::builder().tls_provider(tls::Provider::Rustls(
        tls::rustls_provider::CryptoMode::AwsLc,
    ));
    if let Some(bundle) = bundle {
        builder = builder.tls_context(bundle);
        builder.set_proxy_config(Some(ProxyConfig::from_env()));
    }
    builder.set_connector_settings(settings.cloned());
    builder.set_sleep_impl(sleep);
    builder.build()
}

/// The certificate failure under `err`, if the TLS handshake failed because the client refused
/// the server's certificate. rustls's error travels inside `io::Error`s (two deep, from
/// hyper-rustls), whose `source()` skips their payload, so an I/O error is opened instead.
pub(super) fn refused_certificate(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(err);
    while let Some(current) = next {
        if let Some(tls @ rustls::Error::InvalidCertificate(_)) =
            current.downcast_ref::<rustls::Error>()
        {
            return Some(tls.to_string());
        }
        next = match current.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => current.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::CertificateError;

    #[test]
    fn a_refused_certificate_is_found_two_io_errors_deep_and_nothing_else_is() {
        let tls = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let nested =
            std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, tls));
        let reason = refused_certificate(&nested).unwrap();
        assert!(reason.contains("UnknownIssuer"), "{reason}");

        let alert = std::io::Error::other(rustls::Error::DecryptError);
        assert_eq!(refused_certificate(&alert), None);
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(refused_certificate(&reset), None);
    }
}
