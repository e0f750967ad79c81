//! Turns the SDK's errors into [`StoreError`]s. The SDK's `Display` says little ("service
//! error"), so classification works only from typed facts: the [`SdkError`] variant, the S3 error
//! code (`ProvideErrorMetadata::code`) and the HTTP status of the raw response. HEAD answers
//! carry no body, hence no code, so the status is always the fallback.

use std::time::Duration;

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::store::StoreError;

/// What a failed call was about, so that every message names the operation, key, bucket and
/// server involved.
pub(super) struct CallContext<'a> {
    pub op: &'static str,
    pub key: &'a str,
    pub bucket: &'a str,
    pub endpoint: &'a str,
    pub region: &'a str,
    /// The user chose the region: a bucket elsewhere is an error to explain, not to follow.
    pub region_given: bool,
    /// What supplies the credentials ("profile \"prod\"", ...).
    pub credentials: &'a str,
    /// The per-attempt timeout, reported by [`StoreError::Timeout`].
    pub timeout: Duration,
}

impl CallContext<'_> {
    fn what(&self) -> String {
        if self.key.is_empty() {
            format!(
                "{} on bucket {:?} at {}",
                self.op, self.bucket, self.endpoint
            )
        } else {
            format!(
                "{} {:?} on bucket {:?} at {}",
                self.op, self.key, self.bucket, self.endpoint
            )
        }
    }
}

/// Classifies any SDK error of any operation.
pub(super) fn from_sdk_error<E, R>(err: SdkError<E, R>, context: &CallContext<'_>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + HasStatus + 'static,
{
    // The SDK's full context (with the Debug form of the raw response) goes to the debug log
    // only: in a message a user reads it would bury the one line that matters.
    tracing::debug!(call = %context.what(), error = %DisplayErrorContext(&err), "S3 call failed");
    if let SdkError::DispatchFailure(failure) = &err
        && let Some(connector) = failure.as_connector_error()
        && let Some(reason) = super::tls::refused_certificate(connector)
    {
        return StoreError::UntrustedCertificate {
            endpoint: context.endpoint.to_string(),
            reason,
        };
    }
    if let Some(failure) = credentials_failure(&err) {
        return StoreError::Credentials(format!(
            "no AWS credentials from {}: {}",
            context.credentials,
            causes(failure)
        ));
    }
    if let Some(actual) = bucket_region(&err).filter(|r| r != context.region) {
        let advice = if context.region_given {
            format!("pass --region {actual}, or leave --region out to have it found")
        } else {
            format!("pass --region {actual}")
        };
        return StoreError::InvalidRequest(format!(
            "{}: the bucket is in region {actual}, not {}: {advice}",
            context.what(),
            context.region
        ));
    }
    let detail = causes(&err);
    match &err {
        SdkError::ConstructionFailure(_) => StoreError::InvalidRequest(format!(
            "{}: the request could not be built: {detail}",
            context.what()
        )),
        SdkError::TimeoutError(_) => StoreError::Timeout(context.timeout),
        SdkError::DispatchFailure(failure) if failure.is_timeout() => {
            StoreError::Timeout(context.timeout)
        }
        SdkError::DispatchFailure(failure) if failure.is_user() => {
            StoreError::InvalidRequest(format!("{}: {detail}", context.what()))
        }
        SdkError::DispatchFailure(_) if could_not_connect(&err) => {
            StoreError::Unreachable(format!(
                "{}: cannot connect to {}: {detail}",
                context.what(),
                context.endpoint
            ))
        }
        SdkError::DispatchFailure(_) => StoreError::Connection(format!(
            "{}: cannot talk to {}: {detail}",
            context.what(),
            context.endpoint
        )),
        // The answer arrived but could not be read: for a success status that means the
        // connection broke while its body was arriving.
        SdkError::ResponseError(response) => {
            let status = response.raw().status_code();
            if (200..300).contains(&status) {
                StoreError::Connection(format!(
                    "{}: the answer from {} was cut short: {detail}",
                    context.what(),
                    context.endpoint
                ))
            } else {
                classify(status, None, &detail, context)
            }
        }
        SdkError::ServiceError(service) => {
            let message = service.err().message().unwrap_or(&detail);
            classify(
                service.raw().status_code(),
                service.err().code(),
                message,
                context,
            )
        }
        _ => StoreError::Storage(format!("{}: {detail}", context.what())),
    }
}

/// The credentials error a call failed with, if that is why: the SDK reports a provider that
/// could give none (no keys anywhere, a failing `credential_process`, an expired SSO token) as a
/// dispatch failure, which would otherwise read as a network problem.
fn credentials_failure<'e>(
    err: &'e (dyn std::error::Error + 'static),
) -> Option<&'e (dyn std::error::Error + 'static)> {
    use aws_credential_types::provider::error::CredentialsError;
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(error) = current {
        if error.downcast_ref::<CredentialsError>().is_some() {
            return Some(error);
        }
        current = error.source();
    }
    None
}

/// The region a bucket says it is in (`x-amz-bucket-region`), sent by S3 with the 301 or 400
/// that answers a request signed for another region.
pub(super) fn bucket_region<E, R: HasStatus>(err: &SdkError<E, R>) -> Option<String> {
    let raw = match err {
        SdkError::ServiceError(service) => service.raw(),
        SdkError::ResponseError(response) => response.raw(),
        _ => return None,
    };
    raw.header("x-amz-bucket-region")
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string)
}

/// A 500 that says nothing (no message in the error body): file-backed servers answer so when
/// their file system refuses an operation, unlike AWS and MinIO, which always explain a 500.
pub(super) fn is_bare_server_error<E, R>(err: &SdkError<E, R>) -> bool
where
    E: ProvideErrorMetadata,
    R: HasStatus,
{
    match err {
        SdkError::ServiceError(service) => {
            service.raw().status_code() == 500
                && service.err().message().is_none_or(|m| m.trim().is_empty())
        }
        _ => false,
    }
}

/// The error and its causes by their `Display`, joined with ": ".
/// Whether the call failed because no connection could be made: nobody listens at the endpoint
/// (refused) or no route leads there. A connection reset or closed once made is not this: a
/// server that drops a request may answer the next one.
fn could_not_connect(err: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind;
    let mut current = Some(err);
    while let Some(error) = current {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
                    | ErrorKind::AddrNotAvailable
            )
        {
            return true;
        }
        current = error.source();
    }
    false
}

fn causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The HTTP status (and headers) of a raw response, whatever response type the SDK hands over.
pub(super) trait HasStatus {
    fn status_code(&self) -> u16;
    fn header(&self, name: &str) -> Option<&str>;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers().get(name)
    }
}

/// The S3 error code decides when there is one; otherwise the HTTP status does.
pub(super) fn classify(
    status: u16,
    code: Option<&str>,
    message: &str,
    context: &CallContext<'_>,
) -> StoreError {
    let what = context.what();
    let with_code = match code {
        Some(code) => format!("{what}: {code}: {message}"),
        None => format!("{what}: HTTP {status}: {message}"),
    };
    match code {
        Some("NoSuchKey") | Some("NotFound") => return StoreError::NotFound(context.key.into()),
        Some("NoSuchUpload") => {
            return StoreError::NotFound(format!("multipart upload of {}", context.key));
        }
        Some("NoSuchBucket") => return StoreError::NoSuchBucket(context.bucket.into()),
        // MinIO's answers for a key that is both an object and a prefix of others.
        Some("XMinioParentIsObject") => {
            return StoreError::KeyConflict(context.key.into(), "a parent of it".into());
        }
        Some("XMinioObjectExistsAsDirectory") => {
            return StoreError::KeyConflict(context.key.into(), format!("{}/", context.key));
        }
        Some("PreconditionFailed") => return StoreError::PreconditionFailed(context.key.into()),
        Some(
            "SlowDown"
            | "Throttling"
            | "ThrottlingException"
            | "RequestLimitExceeded"
            | "TooManyRequests"
            | "RequestThrottled",
        ) => return StoreError::Throttled(with_code),
        // S3 closes uploads whose body stops arriving (HTTP 400): sending again may work.
        Some("RequestTimeout") => return StoreError::Connection(with_code),
        // The body was damaged on the way (its Content-MD5 does not match): send it again.
        Some("BadDigest") => return StoreError::Connection(with_code),
        // CompleteMultipartUpload and CopyObject can fail inside a 200 answer.
        Some("InternalError") if status < 500 => {
            return StoreError::Server {
                status: 500,
                message: with_code,
            };
        }
        _ => {}
    }
    match status {
        403 => StoreError::AccessDenied(format!(
            "{with_code} (check the access key and secret, and that they may use this bucket)"
        )),
        404 => StoreError::NotFound(context.key.into()),
        412 => StoreError::PreconditionFailed(context.key.into()),
        429 => StoreError::Throttled(with_code),
        500..=599 => StoreError::Server {
            status,
            message: with_code,
        },
        301 | 307 => StoreError::InvalidRequest(format!(
            "{with_code} (the bucket is probably in another region than {:?})",
            context.region
        )),
        400..=499 => StoreError::InvalidRequest(with_code),
        _ => StoreError::Storage(with_code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> CallContext<'static> {
        CallContext {
            op: "GET",
            key: "a/b",
            bucket: "bkt",
            endpoint: "http://127.0.0.1:1",
            region: "us-east-1",
            region_given: true,
            credentials: "profile \"test\"",
            timeout: Duration::from_secs(5),
        }
    }

    fn kind(status: u16, code: Option<&str>) -> StoreError {
        classify(status, code, "msg", &context())
    }

    #[test]
    fn codes_decide_before_statuses() {
        assert!(matches!(kind(404, Some("NoSuchKey")), StoreError::NotFound(k) if k == "a/b"));
        assert!(
            matches!(kind(404, Some("NoSuchBucket")), StoreError::NoSuchBucket(b) if b == "bkt")
        );
        assert!(matches!(
            kind(503, Some("SlowDown")),
            StoreError::Throttled(_)
        ));
        assert!(matches!(
            kind(400, Some("RequestTimeout")),
            StoreError::Connection(_)
        ));
        assert!(matches!(
            kind(200, Some("InternalError")),
            StoreError::Server { status: 500, .. }
        ));
        assert!(matches!(
            kind(404, Some("NoSuchUpload")),
            StoreError::NotFound(_)
        ));
    }

    #[test]
    fn statuses_classify_codeless_answers() {
        assert!(matches!(kind(404, None), StoreError::NotFound(_)));
        assert!(matches!(kind(412, None), StoreError::PreconditionFailed(_)));
        assert!(matches!(
            kind(416, Some("InvalidRange")),
            StoreError::InvalidRequest(_)
        ));
        assert!(matches!(kind(400, None), StoreError::InvalidRequest(_)));
        assert!(matches!(kind(429, None), StoreError::Throttled(_)));
        assert!(matches!(
            kind(503, None),
            StoreError::Server { status: 503, .. }
        ));
        assert!(matches!(
            kind(500, Some("InternalError")),
            StoreError::Server { status: 500, .. }
        ));
        assert!(
            matches!(kind(301, Some("PermanentRedirect")), StoreError::InvalidRequest(m) if m.contains("region"))
        );
    }

    #[test]
    fn access_denied_says_what_to_check() {
        let err = kind(403, Some("SignatureDoesNotMatch"));
        let StoreError::AccessDenied(message) = err else {
            panic!("{err:?}")
        };
        assert!(
            message.contains("check the access key and secret"),
            "{message}"
        );
        assert!(
            message.contains("bkt") && message.contains("127.0.0.1:1"),
            "{message}"
        );
    }

    #[test]
    fn only_transient_classes_are_retryable() {
        for (status, code) in [
            (500, None),
            (503, Some("SlowDown")),
            (429, None),
            (400, Some("RequestTimeout")),
            (400, Some("BadDigest")),
        ] {
            assert!(kind(status, code).is_retryable(), "{status} {code:?}");
        }
        for status in [400, 403, 404, 412, 416] {
            assert!(!kind(status, None).is_retryable(), "{status}");
        }
    }
}
