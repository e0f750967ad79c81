//! HeadObject without the SDK's orchestrator, for the one call a cold `ls -l` makes per object.
//!
//! **Why.** In the keys layout every object a listing shows needs its stored metadata, one
//! HEAD each when this machine has not seen it. `perf` of a cold `ls -l` showed about 170 µs
//! of mount CPU per HEAD, 45% of it in the SDK's orchestrator: interceptors, the endpoint
//! rules run again for every call, identity resolution, and their allocations. On two cores
//! that, not the network, bounded a million HEADs. This path sends the same request with the
//! parts that matter only:
//! - **Where to.** Once per region the SDK presigns a HEAD of a probe key (nothing is sent):
//!   its URL is the bucket's, by the SDK's own endpoint rules and every setting they read
//!   (`--endpoint`, path style, FIPS, dual stack, `AWS_ENDPOINT_URL_S3`), and its credential
//!   scope names the signing region and service.
//! - **Who.** Credentials are asked for once and kept until shortly before they expire.
//! - **Signed** by aws-sigv4, the SDK's own signer, with S3's settings; sent through the same
//!   kind of connector (TLS trust, proxy) as the SDK's requests.
//!
//! **What it decides.** Only answers it reads in full: a 2xx whose fields all parse the way the
//! SDK parses them, an error status (HEAD answers carry no body, so the status alone
//! classifies, as in `errors::classify`), a broken connection and its own timeout. Anything
//! else comes back [`Answer::Undecided`], and the caller sends the SDK's HeadObject, which
//! handles it the one way it always has: a bucket that names another region, credentials
//! that cannot be had, a header sent twice or not in UTF-8, a presigned URL that is not plain SigV4 for "s3" (S3 Express, SigV4a). A decided answer is
//! therefore the same `ObjectMeta` or `StoreError` the SDK path would give.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_s3::config::http::{HttpRequest, HttpResponse};
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::head_object::HeadObjectError;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::{DateTime, DateTimeFormat, SdkBody};
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_http::label::{EncodingStrategy, fmt_string};
use aws_smithy_http_client::Connector;
use aws_smithy_runtime_api::client::http::HttpConnector;
use aws_smithy_runtime_api::client::identity::Identity;
use aws_smithy_runtime_api::http::Headers;
use tokio::sync::{Mutex, OnceCell};

use super::errors::{CallContext, classify, from_sdk_error};
use crate::store::{ObjectMeta, StoreError, StoreResult, UserMetadata};

/// Credentials without an expiry are asked for again after this long, as the SDK's identity
/// cache does, so that a rotated profile or `credential_process` is picked up.
const UNDATED_CREDENTIALS_TTL: Duration = Duration::from_secs(15 * 60);
/// Dated credentials are renewed this long before they expire.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

const META_PREFIX: &str = "x-amz-meta-";
/// The key the SDK presigns to show where a bucket's requests go; nothing is sent for it.
const PROBE_KEY: &str = "scribefs-route-probe";

/// What one lean HEAD came to.
pub(super) enum Answer {
    Decided(StoreResult<ObjectMeta>),
    /// Not an answer this path reads: send the SDK's HeadObject instead.
    Undecided,
}

/// What all regions of a store share: the connector, the credentials, the fixed headers.
pub(super) struct LeanShared {
    connector: Connector,
    credentials: Option<CredentialCache>,
    /// Headers every request carries (who pays, the expected owner), signed.
    signed_headers: Vec<(&'static str, String)>,
    user_agent: String,
}

impl LeanShared {
    pub fn new(
        connector: Connector,
        provider: Option<SharedCredentialsProvider>,
        signed_headers: Vec<(&'static str, String)>,
        user_agent_prefix: Option<&str>,
    ) -> Self {
        let own = concat!("scribefs/", env!("CARGO_PKG_VERSION"));
        LeanShared {
            connector,
            credentials: provider.map(CredentialCache::new),
            signed_headers,
            user_agent: match user_agent_prefix {
                Some(prefix) => format!("{prefix} {own}"),
                None => own.to_string(),
            },
        }
    }
}

/// Where a bucket's requests go in one region, learnt from a presigned URL.
#[derive(Debug, PartialEq, Eq)]
struct Route {
    /// The URL of the probe key without `/PROBE_KEY`: the bucket's, without a trailing `/`.
    base: String,
    signing_region: String,
}

/// The lean HEAD of one bucket in one region (the store makes a new one when it moves).
pub(super) struct LeanHead {
    shared: Arc<LeanShared>,
    /// `Some(None)` once the presigned URL showed a route this path does not take.
    route: OnceCell<Option<Route>>,
}

impl LeanHead {
    pub fn new(shared: Arc<LeanShared>) -> Self {
        LeanHead {
            shared,
            route: OnceCell::new(),
        }
    }

    /// The same path for another region: its route is learnt again, from the new client.
    pub fn for_new_region(&self) -> Self {
        LeanHead::new(Arc::clone(&self.shared))
    }

    pub async fn head(
        &self,
        client: &aws_sdk_s3::Client,
        bucket: &str,
        key: &str,
        timeout: Duration,
        context: &CallContext<'_>,
    ) -> Answer {
        let route = self.route.get_or_init(|| learn_route(client, bucket)).await;
        let Some(route) = route else {
            return Answer::Undecided;
        };
        let identity = match &self.shared.credentials {
            Some(cache) => match cache.identity().await {
                Some(identity) => Some(identity),
                None => return Answer::Undecided,
            },
            None => None,
        };
        let Some(request) = self.signed_request(route, key, identity.as_ref()) else {
            return Answer::Undecided;
        };
        let response =
            match tokio::time::timeout(timeout, self.shared.connector.call(request)).await {
                Err(_) => return Answer::Decided(Err(StoreError::Timeout(timeout))),
                Ok(Err(failure)) => {
                    let err = SdkError::<HeadObjectError, HttpResponse>::dispatch_failure(failure);
                    return Answer::Decided(Err(from_sdk_error(err, context)));
                }
                Ok(Ok(response)) => response,
            };
        read_answer(key, &response, context)
    }

    fn signed_request(
        &self,
        route: &Route,
        key: &str,
        identity: Option<&Identity>,
    ) -> Option<HttpRequest> {
        let uri = format!(
            "{}/{}",
            route.base,
            fmt_string(key, EncodingStrategy::Greedy)
        );
        let mut request = http::Request::builder()
            .method("HEAD")
            .uri(&uri)
            .body(SdkBody::empty())
            .ok()?;
        let headers = request.headers_mut();
        for (name, value) in &self.shared.signed_headers {
            headers.insert(*name, http::HeaderValue::from_str(value).ok()?);
        }
        if let Some(identity) = identity {
            let mut settings = SigningSettings::default();
            // S3's signing: the path is signed as sent (no second encoding, no `..` folding),
            // and the payload hash travels as x-amz-content-sha256.
            settings.percent_encoding_mode = PercentEncodingMode::Single;
            settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
            let params = v4::SigningParams::builder()
                .identity(identity)
                .region(&route.signing_region)
                .name("s3")
                .time(SystemTime::now())
                .settings(settings)
                .build()
                .ok()?
                .into();
            let signable = SignableRequest::new(
                "HEAD",
                &uri,
                request
                    .headers()
                    .iter()
                    .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?))),
                SignableBody::Bytes(&[]),
            )
            .ok()?;
            let (instructions, _signature) = sign(signable, &params).ok()?.into_parts();
            instructions.apply_to_request_http1x(&mut request);
        }
        request.headers_mut().insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_str(&self.shared.user_agent).ok()?,
        );
        HttpRequest::try_from(request).ok()
    }
}

/// Asks the SDK to presign a HEAD of the probe key, and reads the route off its URL.
async fn learn_route(client: &aws_sdk_s3::Client, bucket: &str) -> Option<Route> {
    let config = PresigningConfig::expires_in(Duration::from_secs(60)).ok()?;
    let presigned = client
        .head_object()
        .bucket(bucket)
        .key(PROBE_KEY)
        .presigned(config)
        .await
        .ok()?;
    let route = route_of(presigned.uri());
    tracing::debug!(?route, "lean HEAD route");
    route
}

/// The bucket's URL and signing region in a presigned URL of the probe key, if it is signed
/// with plain SigV4 for "s3".
fn route_of(presigned: &str) -> Option<Route> {
    let (path, query) = presigned.split_once('?')?;
    let base = path.strip_suffix(PROBE_KEY)?.strip_suffix('/')?;
    let mut algorithm = None;
    let mut scope = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("X-Amz-Algorithm", value)) => algorithm = Some(value),
            Some(("X-Amz-Credential", value)) => scope = Some(value.replace("%2F", "/")),
            _ => {}
        }
    }
    if algorithm? != "AWS4-HMAC-SHA256" {
        return None;
    }
    // KEY-ID/DATE/REGION/SERVICE/aws4_request
    let scope = scope?;
    let mut parts = scope.rsplit('/');
    let (terminator, service, region) = (parts.next()?, parts.next()?, parts.next()?);
    if terminator != "aws4_request" || service != "s3" || region.is_empty() {
        return None;
    }
    Some(Route {
        base: base.to_string(),
        signing_region: region.to_string(),
    })
}

fn read_answer(key: &str, response: &HttpResponse, context: &CallContext<'_>) -> Answer {
    let status = response.status().as_u16();
    let headers = response.headers();
    if !(200..300).contains(&status) {
        // A bucket in another region says so in a header: the SDK's path follows it.
        if headers.get("x-amz-bucket-region").is_some() {
            return Answer::Undecided;
        }
        return Answer::Decided(Err(classify(status, None, "", context)));
    }
    let (Ok(Some(etag)), Ok(length), Ok(modified), Ok(content_type)) = (
        single(headers, "etag"),
        single(headers, "content-length"),
        single(headers, "last-modified"),
        single(headers, "content-type"),
    ) else {
        return Answer::Undecided;
    };
    if etag.is_empty() {
        return Answer::Undecided;
    }
    let size = match length.map(str::parse::<u64>) {
        None => 0,
        Some(Ok(size)) => size,
        Some(Err(_)) => return Answer::Undecided,
    };
    let last_modified = match modified {
        None => SystemTime::UNIX_EPOCH,
        Some(value) => match DateTime::from_str(value, DateTimeFormat::HttpDate)
            .ok()
            .and_then(|t| SystemTime::try_from(t).ok())
        {
            Some(time) => time,
            None => return Answer::Undecided,
        },
    };
    let mut metadata = UserMetadata::new();
    for (name, _) in headers.iter_bytes() {
        let Some(suffix) = name.strip_prefix(META_PREFIX) else {
            continue;
        };
        let Ok(Some(value)) = single(headers, name) else {
            return Answer::Undecided;
        };
        metadata.insert(suffix.to_ascii_lowercase(), value.to_string());
    }
    Answer::Decided(Ok(ObjectMeta {
        key: key.to_string(),
        size,
        etag: etag.to_string(),
        last_modified,
        metadata,
        content_type: content_type.map(str::to_string),
    }))
}

/// A header the SDK reads as one value: trimmed, `Ok(None)` when absent, `Err` when it is sent
/// twice or is not UTF-8 (the SDK fails such an answer, so the lean path does not read it).
fn single<'h>(headers: &'h Headers, name: &str) -> Result<Option<&'h str>, ()> {
    let mut values = headers.get_all_bytes(name);
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(());
    }
    std::str::from_utf8(first)
        .map(|v| Some(v.trim()))
        .map_err(|_| ())
}

/// Credentials asked for once and kept until shortly before they expire. Every HEAD reads
/// them, so the read is a shared lock; one caller at a time renews them.
struct CredentialCache {
    provider: SharedCredentialsProvider,
    current: RwLock<Option<(Identity, Instant)>>,
    renewing: Mutex<()>,
}

impl CredentialCache {
    fn new(provider: SharedCredentialsProvider) -> Self {
        CredentialCache {
            provider,
            current: RwLock::new(None),
            renewing: Mutex::new(()),
        }
    }

    fn fresh(&self) -> Option<Identity> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        match current.as_ref() {
            Some((identity, renew_at)) if Instant::now() < *renew_at => Some(identity.clone()),
            _ => None,
        }
    }

    /// `None` when the provider fails: the SDK's path then reports why, in its words.
    async fn identity(&self) -> Option<Identity> {
        if let Some(identity) = self.fresh() {
            return Some(identity);
        }
        let _renewing = self.renewing.lock().await;
        if let Some(identity) = self.fresh() {
            return Some(identity);
        }
        let credentials = self.provider.provide_credentials().await.ok()?;
        let renew_at = Instant::now() + lifetime(&credentials);
        let identity = Identity::from(credentials);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) =
            Some((identity.clone(), renew_at));
        Some(identity)
    }
}

fn lifetime(credentials: &Credentials) -> Duration {
    match credentials.expiry() {
        None => UNDATED_CREDENTIALS_TTL,
        Some(expiry) => expiry
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .saturating_sub(EXPIRY_MARGIN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_presigned_sigv4_url_gives_the_bucket_url_and_signing_region() {
        let path_style = "http://127.0.0.1:9000/demo/scribefs-route-probe?x-id=HeadObject&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20261207%2Feu-west-1%2Fs3%2Faws4_request&X-Amz-Date=20261207T000000Z";
        assert_eq!(
            route_of(path_style),
            Some(Route {
                base: "http://127.0.0.1:9000/demo".into(),
                signing_region: "eu-west-1".into(),
            })
        );
        let virtual_host = "https://demo.s3.us-east-1.amazonaws.com/scribefs-route-probe?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20261207%2Fus-east-1%2Fs3%2Faws4_request";
        assert_eq!(
            route_of(virtual_host).map(|r| r.base),
            Some("https://demo.s3.us-east-1.amazonaws.com".to_string())
        );
    }

    #[test]
    fn other_signatures_and_services_take_the_sdk_path() {
        let sigv4a = "https://demo.s3.amazonaws.com/scribefs-route-probe?X-Amz-Algorithm=AWS4-ECDSA-P256-SHA256&X-Amz-Credential=AKID%2F20261207%2Fs3%2Faws4_request";
        assert_eq!(route_of(sigv4a), None);
        let express = "https://demo--use1-az4--x-s3.s3express-use1-az4.us-east-1.amazonaws.com/scribefs-route-probe?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20261207%2Fus-east-1%2Fs3express%2Faws4_request";
        assert_eq!(route_of(express), None);
        assert_eq!(
            route_of("http://127.0.0.1:9000/demo/other?X-Amz-Algorithm=AWS4-HMAC-SHA256"),
            None
        );
    }
}
