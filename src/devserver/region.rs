//! The bucket's region, as AWS S3 enforces it: a request signed for another region is answered
//! `301 PermanentRedirect` with the bucket's own region in `x-amz-bucket-region`, and every
//! HeadBucket answer names it. With no region configured, any region is accepted (as most
//! S3-compatible servers do).

use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper::{HeaderMap, Method, Response, StatusCode};

pub const BUCKET_REGION_HEADER: &str = "x-amz-bucket-region";

/// The region a SigV4 request was signed for: the third field of the credential scope in
/// `Authorization: AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/s3/aws4_request, ...`.
pub(crate) fn signed_region(headers: &HeaderMap) -> Option<&str> {
    let auth = headers.get(hyper::header::AUTHORIZATION)?.to_str().ok()?;
    let credential = auth.split("Credential=").nth(1)?;
    let scope = credential.split([',', ' ']).next()?;
    scope.split('/').nth(2)
}

/// What S3 answers a request signed for `signed` when the bucket lives in `region`.
pub(crate) fn wrong_region(method: &Method, region: &str, signed: &str) -> Response<s3s::Body> {
    let body = if method == Method::HEAD {
        s3s::Body::empty()
    } else {
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>PermanentRedirect</Code>\
             <Message>The bucket you are attempting to access must be addressed using the \
             specified endpoint (signed for {signed}, the bucket is in {region}).</Message>\
             <Region>{region}</Region></Error>"
        );
        s3s::Body::from(Bytes::from(xml))
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
    add_region(response.headers_mut(), region);
    response
}

pub(crate) fn add_region(headers: &mut HeaderMap, region: &str) {
    if let Ok(value) = HeaderValue::from_str(region) {
        headers.insert(BUCKET_REGION_HEADER, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signed_region_is_read_from_the_credential_scope() {
        let mut headers = HeaderMap::new();
        headers.insert(
            hyper::header::AUTHORIZATION,
            HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=devkey/20261206/eu-west-2/s3/aws4_request, \
                 SignedHeaders=host, Signature=abc",
            ),
        );
        assert_eq!(signed_region(&headers), Some("eu-west-2"));
        assert_eq!(signed_region(&HeaderMap::new()), None);
    }
}
