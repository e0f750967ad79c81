//! Requests sent without the SDK's orchestrator: the HEAD of every object a cold `ls -l` shows
//! (`lean_head`) and the whole-object GET of every segment `segments find`/`verify` read
//! (`lean_get`).
//!
//! **Why.** `perf` of a cold `ls -l` showed about 170 µs of CPU per HEAD, and of a cold
//! `segments find` about 190 µs per GET, half of it in the SDK's orchestrator: interceptors, the
//! endpoint rules run again for every call, identity resolution, and their allocations. On two
//! cores that, not the network, bounded a million requests. This path sends the same request
//! with the parts that matter only:
//! - **Where to.** Once per region the SDK presigns a HEAD of a probe key (nothing is sent):
//!   its URL is the bucket's, by the SDK's own endpoint rules and every setting they read
//!   (`--endpoint`, path style, FIPS, dual stack, `AWS_ENDPOINT_URL_S3`), and its credential
//!   scope names the signing region and service.
//! - **Who.** Credentials are asked for once and kept until shortly before they expire.
//! - **Signed** with SigV4 written out for a bodiless request (`sigv4`, checked against
//!   aws-sigv4, the SDK's signer); sent through the same kind of connector (TLS trust, proxy)
//!   as the SDK's requests.
//!
//! **What it decides.** Only answers it reads in full (each operation's module says which).
//! Anything else comes back [`Answer::Undecided`], and the caller sends the SDK's call, which
//! handles it the one way it always has: a bucket that names another region, credentials that
//! cannot be had, a header sent twice or not in UTF-8, a presigned URL that is not plain SigV4
//! for "s3" (S3 Express, SigV4a). A refusal (400, 403) is [`Answer::Refused`]: the SDK's call is
//! sent, and if it succeeds the lean path is switched off ([`Lean::distrust`]). A decided answer
//! is therefore the same value or `StoreError` the SDK path would give.

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

use super::errors::{CallContext, from_sdk_error};
use super::sigv4::{self, Keys};
use crate::store::{ObjectMeta, StoreResult, UserMetadata};

/// Credentials without an expiry are asked for again after this long, as the SDK's identity
/// cache does, so that a rotated profile or `credential_process` is picked up.
const UNDATED_CREDENTIALS_TTL: Duration = Duration::from_secs(15 * 60);
/// Dated credentials are renewed this long before they expire.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

const META_PREFIX: &str = "x-amz-meta-";
/// The key the SDK presigns to show where a bucket's requests go; nothing is sent for it.
const PROBE_KEY: &str = "scribefs-route-probe";

/// What one lean request came to.
pub(super) enum Answer<T> {
    Decided(StoreResult<T>),
    /// Not an answer this path reads: send the SDK's call instead.
    Undecided,
    /// Refused (400, 403): send the SDK's call, and if that succeeds, call
    /// [`Lean::distrust`] ([`Lean::settle`] does both).
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

/// The lean requests of one bucket in one region (the store makes a new one when it moves).
pub(super) struct Lean {
    shared: Arc<LeanShared>,
    /// `Some(None)` once the presigned URL showed a route this path does not take.
    route: OnceCell<Option<Route>>,
    /// Set when the server refused a lean request that the SDK's then got through.
    distrusted: AtomicBool,
}

impl Lean {
    pub fn new(shared: Arc<LeanShared>) -> Self {
        Lean {
            shared,
            route: OnceCell::new(),
            distrusted: AtomicBool::new(false),
        }
    }

    /// The server refused a lean request that the SDK's got through: something in this path's
    /// request differs from the SDK's for this server, so the SDK sends every HEAD and GET
    /// from now on.
    pub fn distrust(&self) {
        if !self.distrusted.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "a request sent outside the SDK was refused where the SDK's was not: HEADs and GETs go through the SDK from now on (slower cold listings and scans)"
            );
        }
    }

    /// The same path for another region: its route is learnt again, from the new client.
    pub fn for_new_region(&self) -> Self {
        Lean::new(Arc::clone(&self.shared))
    }

    /// The lean answer, or the SDK's (`sdk`) where the lean path has none; an SDK success
    /// after a refusal switches the lean path off.
    pub async fn settle<T>(
        &self,
        answer: Answer<T>,
        sdk: impl AsyncFnOnce() -> StoreResult<T>,
    ) -> StoreResult<T> {
        match answer {
            Answer::Decided(answer) => answer,
            Answer::Undecided => sdk().await,
            Answer::Refused => {
                let answer = sdk().await;
                if answer.is_ok() {
                    self.distrust();
                }
                answer
            }
        }
    }

    /// Sends a bodiless `method` request for the context's key and bucket, and waits for its
    /// answer's headers (at most the context's timeout). `Err` holds what the caller answers
    /// when there is no response to read.
    pub async fn send<T>(
        &self,
        client: &aws_sdk_s3::Client,
        method: &'static str,
        context: &CallContext<'_>,
    ) -> Result<HttpResponse, Answer<T>> {
        let (bucket, key, timeout) = (context.bucket, context.key, context.timeout);
        if self.distrusted.load(Ordering::Relaxed) {
            return Err(Answer::Undecided);
        }
        let route = self.route.get_or_init(|| learn_route(client, bucket)).await;
        let Some(route) = route else {
            return Err(Answer::Undecided);
        };
        let keys = match &self.shared.credentials {
            Some(cache) => match cache.keys().await {
                Some(keys) => Some(keys),
                None => return Err(Answer::Undecided),
            },
            None => None,
        };
        let Some(request) = self.signed_request(method, route, key, keys.as_deref()) else {
            return Err(Answer::Undecided);
        };
        match tokio::time::timeout(timeout, self.shared.connector.call(request)).await {
            Err(_) => Err(Answer::Decided(Err(crate::store::StoreError::Timeout(
                timeout,
            )))),
            Ok(Err(failure)) => {
                // A dispatch failure carries no operation error: any operation's type will do.
                let err = SdkError::<HeadObjectError, HttpResponse>::dispatch_failure(failure);
                Err(Answer::Decided(Err(from_sdk_error(err, context))))
            }
            Ok(Ok(response)) => Ok(response),
        }
    }

    fn signed_request(
        &self,
        method: &'static str,
        route: &Route,
        key: &str,
        keys: Option<&Keys>,
    ) -> Option<HttpRequest> {
        let encoded = fmt_string(key, EncodingStrategy::Greedy);
        let mut request = http::Request::builder()
            .method(method)
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
                method,
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
    tracing::debug!(?route, "lean request route");
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

/// An object's metadata from the headers of a 2xx HEAD or GET answer, read as the SDK reads
/// them; `None` where the SDK would read them otherwise or fail (no ETag, a header sent twice
/// or not UTF-8, a size or date that does not parse). No Content-Length reads as size 0, as
/// the SDK's `None` does in `S3Store`.
pub(super) fn object_meta(key: &str, headers: &Headers) -> Option<ObjectMeta> {
    let (Ok(Some(etag)), Ok(length), Ok(modified), Ok(content_type)) = (
        single(headers, "etag"),
        single(headers, "content-length"),
        single(headers, "last-modified"),
        single(headers, "content-type"),
    ) else {
        return None;
    };
    if etag.is_empty() {
        return None;
    }
    let size = match length.map(str::parse::<u64>) {
        None => 0,
        Some(Ok(size)) => size,
        Some(Err(_)) => return None,
    };
    let last_modified = match modified {
        None => SystemTime::UNIX_EPOCH,
        Some(value) => DateTime::from_str(value, DateTimeFormat::HttpDate)
            .ok()
            .and_then(|t| SystemTime::try_from(t).ok())?,
    };
    let mut metadata = UserMetadata::new();
    for (name, _) in headers.iter_bytes() {
        let Some(suffix) = name.strip_prefix(META_PREFIX) else {
            continue;
        };
        let Ok(Some(value)) = single(headers, name) else {
            return None;
        };
        metadata.insert(suffix.to_ascii_lowercase(), value.to_string());
    }
    Some(ObjectMeta {
        key: key.to_string(),
        size,
        etag: etag.to_string(),
        last_modified,
        metadata,
        content_type: content_type.map(str::to_string),
    })
}

/// A header the SDK reads as one value: trimmed, `Ok(None)` when absent, `Err` when it is sent
/// twice or is not UTF-8 (the SDK fails such an answer, so the lean path does not read it).
pub(super) fn single<'h>(headers: &'h Headers, name: &str) -> Result<Option<&'h str>, ()> {
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

/// Credentials asked for once and kept until shortly before they expire. Every request reads
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
pub(super) mod tests {
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

    pub fn test_context() -> CallContext<'static> {
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

    /// A response with `status`, `headers` and `body`, as the connector hands it over.
    pub fn response(status: u16, headers: &[(&str, &str)], body: &'static [u8]) -> HttpResponse {
        let mut response = http::Response::builder().status(status);
        for (name, value) in headers {
            response = response.header(*name, *value);
        }
        HttpResponse::try_from(response.body(SdkBody::from(body)).unwrap()).unwrap()
    }

    /// A lean path without credentials.
    fn unsigned() -> Lean {
        let connector = super::super::tls::connector(None, None, None);
        Lean::new(Arc::new(LeanShared::new(connector, None, vec![], None)))
    }

    #[tokio::test]
    async fn a_distrusted_path_leaves_every_request_to_the_sdk() {
        let lean = unsigned();
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .build();
        let client = aws_sdk_s3::Client::from_conf(config);
        let context = test_context();
        lean.distrust();
        for method in ["HEAD", "GET"] {
            let sent = lean.send::<()>(&client, method, &context).await;
            assert!(matches!(sent, Err(Answer::Undecided)));
        }
        assert!(lean.route.get().is_none(), "no route was asked for");
    }

    #[tokio::test]
    async fn a_refusal_the_sdk_gets_past_distrusts_the_path() {
        let lean = unsigned();
        let failed = lean
            .settle(Answer::<u8>::Refused, async || {
                Err(crate::store::StoreError::AccessDenied("no".into()))
            })
            .await;
        assert!(failed.is_err());
        assert!(!lean.distrusted.load(Ordering::Relaxed), "both refused");
        let undecided = lean.settle(Answer::Undecided, async || Ok(1)).await;
        assert_eq!(undecided.unwrap(), 1);
        assert!(!lean.distrusted.load(Ordering::Relaxed), "nothing refused");
        let answered = lean.settle(Answer::Refused, async || Ok(2)).await;
        assert_eq!(answered.unwrap(), 2);
        assert!(lean.distrusted.load(Ordering::Relaxed));
    }
}
