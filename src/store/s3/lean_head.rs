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
//! - **Signed** with SigV4 written out for this one request (`sigv4`, checked against
//!   aws-sigv4, the SDK's signer); sent through the same kind of connector (TLS trust, proxy)
//!   as the SDK's requests.
//!
//! **What it decides.** Only answers it reads in full: a 2xx whose fields all parse the way the
//! SDK parses them, an error status (HEAD answers carry no body, so the status alone
//! classifies, as in `errors::classify`), a broken connection and its own timeout. Anything
//! else comes back [`Answer::Undecided`], and the caller sends the SDK's HeadObject, which
//! handles it the one way it always has: a bucket that names another region, credentials
//! that cannot be had, a header sent twice or not in UTF-8, a presigned URL that is not plain SigV4 for "s3" (S3 Express, SigV4a). A decided answer is
//! therefore the same `ObjectMeta` or `StoreError` the SDK path would give.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_s3::config::http::{HttpRequest, HttpResponse};
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::head_object::HeadObjectError;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::{DateTime, DateTimeFormat, SdkBody};
use aws_smithy_http::label::{EncodingStrategy, fmt_string};
use aws_smithy_http_client::Connector;
use aws_smithy_runtime_api::client::http::HttpConnector;
use aws_smithy_runtime_api::http::Headers;
use tokio::sync::{Mutex, OnceCell};

use super::errors::{CallContext, classify, from_sdk_error};
use super::sigv4::{self, Keys};
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
    /// Refused (400, 403): send the SDK's HeadObject, and if that succeeds, call
    /// [`LeanHead::distrust`].
    Refused,
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
    /// The Host header as SigV4 signs it (no default port) and the path of `base`.
    host: String,
    path: String,
    signing_region: String,
}

/// The lean HEAD of one bucket in one region (the store makes a new one when it moves).
pub(super) struct LeanHead {
    shared: Arc<LeanShared>,
    /// `Some(None)` once the presigned URL showed a route this path does not take.
    route: OnceCell<Option<Route>>,
    /// Set when the server refused a lean HEAD that the SDK's then got through.
    distrusted: AtomicBool,
}

impl LeanHead {
    pub fn new(shared: Arc<LeanShared>) -> Self {
        LeanHead {
            shared,
            route: OnceCell::new(),
            distrusted: AtomicBool::new(false),
        }
    }

    /// The server refused a lean HEAD that the SDK's got through: something in this path's
    /// request differs from the SDK's for this server, so the SDK sends every HEAD from now on.
    pub fn distrust(&self) {
        if !self.distrusted.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "a HEAD sent outside the SDK was refused where the SDK's was not: HEADs go through the SDK from now on (slower cold listings)"
            );
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
        if self.distrusted.load(Ordering::Relaxed) {
            return Answer::Undecided;
        }
        let route = self.route.get_or_init(|| learn_route(client, bucket)).await;
        let Some(route) = route else {
            return Answer::Undecided;
        };
        let keys = match &self.shared.credentials {
            Some(cache) => match cache.keys().await {
                Some(keys) => Some(keys),
                None => return Answer::Undecided,
            },
            None => None,
        };
        let Some(request) = self.signed_request(route, key, keys.as_deref()) else {
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

    fn signed_request(&self, route: &Route, key: &str, keys: Option<&Keys>) -> Option<HttpRequest> {
        let encoded = fmt_string(key, EncodingStrategy::Greedy);
        let mut request = http::Request::builder()
            .method("HEAD")
            .uri(format!("{}/{encoded}", route.base))
            .body(SdkBody::empty())
            .ok()?;
        let headers = request.headers_mut();
        for (name, value) in &self.shared.signed_headers {
            headers.insert(*name, http::HeaderValue::from_str(value).ok()?);
        }
        if let Some(keys) = keys {
            let path = format!("{}/{encoded}", route.path);
            let signature = sigv4::sign(
                keys,
                "HEAD",
                &route.host,
                &path,
                &self.shared.signed_headers,
                &route.signing_region,
                SystemTime::now(),
            );
            for (name, value) in signature {
                headers.insert(name, http::HeaderValue::from_str(&value).ok()?);
            }
        }
        headers.insert(
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
    let uri: http::Uri = base.parse().ok()?;
    let host = match (uri.scheme_str(), uri.host(), uri.port_u16()) {
        (_, None, _) => return None,
        (Some("http"), Some(host), Some(80)) | (Some("https"), Some(host), Some(443)) => {
            host.to_string()
        }
        (_, Some(host), Some(port)) => format!("{host}:{port}"),
        (_, Some(host), None) => host.to_string(),
    };
    Some(Route {
        base: base.to_string(),
        host,
        path: uri.path().trim_end_matches('/').to_string(),
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
        if status == 400 || status == 403 {
            return Answer::Refused;
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
    current: RwLock<Option<(Arc<Keys>, Instant)>>,
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

    fn fresh(&self) -> Option<Arc<Keys>> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        match current.as_ref() {
            Some((keys, renew_at)) if Instant::now() < *renew_at => Some(Arc::clone(keys)),
            _ => None,
        }
    }

    /// `None` when the provider fails: the SDK's path then reports why, in its words.
    async fn keys(&self) -> Option<Arc<Keys>> {
        if let Some(keys) = self.fresh() {
            return Some(keys);
        }
        let _renewing = self.renewing.lock().await;
        if let Some(keys) = self.fresh() {
            return Some(keys);
        }
        let credentials = self.provider.provide_credentials().await.ok()?;
        let renew_at = Instant::now() + lifetime(&credentials);
        let keys = Arc::new(Keys::new(&credentials));
        *self.current.write().unwrap_or_else(|e| e.into_inner()) =
            Some((Arc::clone(&keys), renew_at));
        Some(keys)
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
                host: "127.0.0.1:9000".into(),
                path: "/demo".into(),
                signing_region: "eu-west-1".into(),
            })
        );
        let virtual_host = "https://demo.s3.us-east-1.amazonaws.com/scribefs-route-probe?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20261207%2Fus-east-1%2Fs3%2Faws4_request";
        let route = route_of(virtual_host).unwrap();
        assert_eq!(route.base, "https://demo.s3.us-east-1.amazonaws.com");
        assert_eq!(
            (route.host.as_str(), route.path.as_str()),
            ("demo.s3.us-east-1.amazonaws.com", "")
        );
        let default_port = "https://minio.example:443/b/scribefs-route-probe?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20261207%2Fus-east-1%2Fs3%2Faws4_request";
        assert_eq!(route_of(default_port).unwrap().host, "minio.example");
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

    fn test_context() -> CallContext<'static> {
        CallContext {
            op: "HEAD",
            key: "k",
            bucket: "b",
            endpoint: "http://127.0.0.1:1",
            region: "us-east-1",
            region_given: true,
            credentials: "test",
            timeout: Duration::from_secs(1),
        }
    }

    fn answer(status: u16, headers: &[(&str, &str)]) -> Answer {
        let mut response = http::Response::builder().status(status);
        for (name, value) in headers {
            response = response.header(*name, *value);
        }
        let response = HttpResponse::try_from(response.body(SdkBody::empty()).unwrap()).unwrap();
        let context = test_context();
        read_answer("k", &response, &context)
    }

    #[test]
    fn answers_are_read_as_the_sdk_reads_them_or_handed_to_it() {
        let found = answer(
            200,
            &[
                ("etag", "\"abc\""),
                ("content-length", "42"),
                ("last-modified", "Mon, 07 Dec 2026 06:00:00 GMT"),
                ("x-amz-meta-mode", " 33188 "),
                ("x-amz-meta-list", "a,\"b\""),
            ],
        );
        let Answer::Decided(Ok(meta)) = found else {
            panic!("a plain 200 is decided");
        };
        assert_eq!((meta.size, meta.etag.as_str()), (42, "\"abc\""));
        assert_eq!(meta.metadata.get("mode").map(String::as_str), Some("33188"));
        assert_eq!(
            meta.metadata.get("list").map(String::as_str),
            Some("a,\"b\"")
        );
        assert_eq!(meta.content_type, None);
        assert!(matches!(
            answer(404, &[]),
            Answer::Decided(Err(StoreError::NotFound(_)))
        ));
        assert!(matches!(
            answer(503, &[]),
            Answer::Decided(Err(StoreError::Server { .. }))
        ));
        assert!(matches!(answer(403, &[]), Answer::Refused));
        assert!(matches!(answer(400, &[]), Answer::Refused));
        assert!(matches!(
            answer(301, &[("x-amz-bucket-region", "eu-west-1")]),
            Answer::Undecided
        ));
        let twice = answer(
            200,
            &[
                ("etag", "\"a\""),
                ("x-amz-meta-m", "1"),
                ("x-amz-meta-m", "2"),
            ],
        );
        assert!(matches!(twice, Answer::Undecided));
        let no_etag = answer(200, &[("content-length", "1")]);
        assert!(matches!(no_etag, Answer::Undecided));
        let bad_date = answer(200, &[("etag", "\"a\""), ("last-modified", "yesterday")]);
        assert!(matches!(bad_date, Answer::Undecided));
    }

    #[tokio::test]
    async fn a_distrusted_path_leaves_every_head_to_the_sdk() {
        let shared = LeanShared::new(
            super::super::tls::connector(None, None, None),
            None,
            vec![],
            None,
        );
        let lean = LeanHead::new(Arc::new(shared));
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .build();
        let client = aws_sdk_s3::Client::from_conf(config);
        let context = test_context();
        lean.distrust();
        let answer = lean
            .head(&client, "b", "k", Duration::from_secs(1), &context)
            .await;
        assert!(matches!(answer, Answer::Undecided));
        assert!(lean.route.get().is_none(), "no route was asked for");
    }
}
