//! Whole-object GetObject the lean way (`lean`): the call `segments find` and `verify` make per
//! segment, where the SDK's orchestrator cost half of a cold `find`'s CPU.
//!
//! It decides:
//! - a 200 without Content-Range whose headers parse as the SDK parses them ([`object_meta`])
//!   and that says its Content-Length: the body streams, and fails as the SDK's body fails (a
//!   `Connection` error, which the retry layer resumes) when it breaks, ends short of that
//!   length or runs past it, or brings no byte for the SDK's stalled-stream grace period;
//! - an error status with an S3 error body (`<Error><Code>`, `<Message>`) or none, classified
//!   as `errors::from_sdk_error` classifies the SDK's service error (`errors::classify` by code,
//!   else by status);
//! - a broken connection, and its own timeout.
//!
//! Undecided (the SDK's GetObject is sent): any other 2xx, a redirect or other 1xx/3xx, a
//! bucket that names another region, an error body that is not S3's XML or is larger than
//! [`MAX_ERROR_BODY`]. 400 and 403 are refusals.

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::{ByteStream as SdkByteStream, SdkBody};
use aws_smithy_runtime_api::client::stalled_stream_protection::DEFAULT_GRACE_PERIOD;
use aws_smithy_xml::decode::{Document, try_data};
use futures::StreamExt;

use super::body::{Fetched, RawBody, etag_is_content_md5};
use super::errors::{CallContext, classify};
use super::lean::{Answer, Lean, object_meta, single};
use crate::store::StoreError;

/// Error bodies are a few hundred bytes; one larger than this is not S3's, and goes to the SDK.
const MAX_ERROR_BODY: usize = 64 << 10;

impl Lean {
    pub async fn get(&self, client: &Client, context: &CallContext<'_>) -> Answer<Fetched> {
        let response = match self.send(client, "GET", context).await {
            Ok(response) => response,
            Err(answer) => return answer,
        };
        let status = response.status().as_u16();
        if status == 200 {
            return read_object(context.key, response);
        }
        if status < 400 || response.headers().get("x-amz-bucket-region").is_some() {
            return Answer::Undecided;
        }
        if status == 400 || status == 403 {
            return Answer::Refused;
        }
        let body = match tokio::time::timeout(
            context.timeout,
            read_error_body(response.into_body()),
        )
        .await
        {
            Ok(Some(body)) => body,
            Ok(None) | Err(_) => return Answer::Undecided,
        };
        match error_answer(status, &body, context) {
            Some(error) => Answer::Decided(Err(error)),
            None => Answer::Undecided,
        }
    }
}

/// The error an error status and its body stand for, if the body is S3's.
fn error_answer(status: u16, body: &[u8], context: &CallContext<'_>) -> Option<StoreError> {
    let (code, message) = error_code(body)?;
    let code = code.or_else(|| (status == 404).then(|| "NotFound".to_string()));
    let message = message.as_deref().or(code.as_deref()).unwrap_or_default();
    Some(classify(status, code.as_deref(), message, context))
}

/// A 200's object and body, or undecided.
fn read_object(key: &str, response: HttpResponse) -> Answer<Fetched> {
    let headers = response.headers();
    if headers.get("content-range").is_some() {
        return Answer::Undecided;
    }
    let (Some(meta), Ok(Some(_)), Ok(sse), Ok(customer_key)) = (
        object_meta(key, headers),
        single(headers, "content-length"),
        single(headers, "x-amz-server-side-encryption"),
        single(headers, "x-amz-server-side-encryption-customer-algorithm"),
    ) else {
        return Answer::Undecided;
    };
    let md5_etag = etag_is_content_md5(sse, customer_key.is_some());
    let size = meta.size;
    let body = checked_body(response.into_body(), size, DEFAULT_GRACE_PERIOD);
    Answer::Decided(Ok(Fetched {
        meta,
        range: 0..size,
        md5_etag,
        body,
    }))
}

/// The body of a 200, failing where it breaks, stalls for `grace`, or its length is not
/// `length`: a short body must never pass for the whole object.
fn checked_body(body: SdkBody, length: u64, grace: Duration) -> RawBody {
    let state = Some((SdkByteStream::new(body), 0u64));
    futures::stream::unfold(state, move |state| async move {
        let (mut body, received) = state?;
        let Ok(next) = tokio::time::timeout(grace, body.next()).await else {
            let stalled = format!("no byte for {grace:?} after byte {received} of {length}");
            return Some((Err(stalled), None));
        };
        match next {
            Some(Ok(chunk)) => {
                let received = received + chunk.len() as u64;
                if received > length {
                    let long = format!("more than the {length} bytes of its Content-Length");
                    return Some((Err(long), None));
                }
                Some((Ok(chunk), Some((body, received))))
            }
            Some(Err(err)) => Some((Err(DisplayErrorContext(&err).to_string()), None)),
            None if received < length => {
                Some((Err(format!("ended at byte {received} of {length}")), None))
            }
            None => None,
        }
    })
    .boxed()
}

/// An error answer's body, if it arrives whole and within [`MAX_ERROR_BODY`]. Read to its end,
/// so that the connection is kept for the next request.
async fn read_error_body(body: SdkBody) -> Option<Vec<u8>> {
    let mut body = SdkByteStream::new(body);
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.ok()?;
        if bytes.len() + chunk.len() > MAX_ERROR_BODY {
            return None;
        }
        bytes.extend_from_slice(&chunk);
    }
    Some(bytes)
}

/// An S3 error body's code and message, read as the SDK reads S3's (unwrapped REST-XML)
/// errors; an empty body has neither (the SDK then names a 404 `NotFound`). `None` when the
/// body is not an XML `<Error>` (a proxy's page, say).
fn error_code(body: &[u8]) -> Option<(Option<String>, Option<String>)> {
    if body.is_empty() {
        return Some((None, None));
    }
    let mut document = Document::try_from(body).ok()?;
    let mut root = document.root_element().ok()?;
    if !root.start_el().matches("Error") {
        return None;
    }
    let (mut code, mut message) = (None, None);
    while let Some(mut tag) = root.next_tag() {
        match tag.start_el().local() {
            "Code" => code = Some(try_data(&mut tag).ok()?.into_owned()),
            "Message" => message = Some(try_data(&mut tag).ok()?.into_owned()),
            _ => {}
        }
    }
    Some((code, message))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use futures::TryStreamExt;

    use super::super::lean::tests::{response, test_context};
    use super::*;

    const FOUND: [(&str, &str); 4] = [
        ("etag", "\"0cc175b9c0f1b6a831c399e269772661\""),
        ("content-length", "1"),
        ("last-modified", "Mon, 07 Dec 2026 06:00:00 GMT"),
        ("x-amz-meta-mode", "33188"),
    ];

    fn object(headers: &[(&str, &str)], body: &'static [u8]) -> Answer<Fetched> {
        read_object("k", response(200, headers, body))
    }

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        FOUND.iter().chain(extra).copied().collect()
    }

    async fn collect(body: RawBody) -> Result<Bytes, String> {
        let chunks: Vec<Bytes> = body.try_collect().await?;
        Ok(chunks.concat().into())
    }

    #[tokio::test]
    async fn a_200_is_read_as_the_sdk_reads_it() {
        let Answer::Decided(Ok(fetched)) = object(&FOUND, b"a") else {
            panic!("a plain 200 is decided");
        };
        assert_eq!((fetched.meta.size, fetched.range), (1, 0..1));
        assert_eq!(
            fetched.meta.metadata.get("mode").map(String::as_str),
            Some("33188")
        );
        assert!(fetched.md5_etag);
        assert_eq!(collect(fetched.body).await.unwrap(), "a");
        for (sse, md5) in [
            ("AES256", true),
            ("aws:kms", false),
            ("aws:kms:dsse", false),
        ] {
            let Answer::Decided(Ok(fetched)) =
                object(&with(&[("x-amz-server-side-encryption", sse)]), b"a")
            else {
                panic!("{sse} is decided");
            };
            assert_eq!(fetched.md5_etag, md5, "{sse}");
        }
        let customer = with(&[("x-amz-server-side-encryption-customer-algorithm", "AES256")]);
        let Answer::Decided(Ok(fetched)) = object(&customer, b"a") else {
            panic!("SSE-C is decided");
        };
        assert!(!fetched.md5_etag);
    }

    #[test]
    fn a_200_the_sdk_would_read_otherwise_is_handed_to_it() {
        let no_length: Vec<_> = FOUND
            .iter()
            .copied()
            .filter(|(n, _)| *n != "content-length")
            .collect();
        assert!(matches!(object(&no_length, b"a"), Answer::Undecided));
        let ranged = with(&[("content-range", "bytes 0-0/1")]);
        assert!(matches!(object(&ranged, b"a"), Answer::Undecided));
        let twice = with(&[("x-amz-server-side-encryption", "AES256")]);
        let twice = [
            twice.as_slice(),
            &[("x-amz-server-side-encryption", "aws:kms")],
        ]
        .concat();
        assert!(matches!(object(&twice, b"a"), Answer::Undecided));
        assert!(matches!(object(&FOUND[1..], b"a"), Answer::Undecided));
    }

    #[tokio::test]
    async fn a_body_must_be_as_long_as_its_content_length() {
        let long = checked_body(SdkBody::from("abc"), 2, Duration::from_secs(1));
        let err = collect(long).await.unwrap_err();
        assert!(err.contains("more than the 2 bytes"), "{err}");
        let short = checked_body(SdkBody::from("abc"), 5, Duration::from_secs(1));
        assert_eq!(collect(short).await.unwrap_err(), "ended at byte 3 of 5");
        let exact = checked_body(SdkBody::from("abc"), 3, Duration::from_secs(1));
        assert_eq!(collect(exact).await.unwrap(), "abc");
        let empty = checked_body(SdkBody::empty(), 0, Duration::from_secs(1));
        assert_eq!(collect(empty).await.unwrap(), "");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_fails_after_the_grace_period() {
        let (mut sender, receiver) =
            futures::channel::mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::io::Error>>(1);
        let body = SdkBody::from_body_1_x(http_body_util::StreamBody::new(receiver));
        let mut stalled = checked_body(body, 10, Duration::from_secs(20));
        sender
            .try_send(Ok(hyper::body::Frame::data(Bytes::from_static(b"abc"))))
            .unwrap();
        assert_eq!(stalled.next().await.unwrap().unwrap(), "abc");
        let err = stalled.next().await.unwrap().unwrap_err();
        assert!(
            err.starts_with("no byte for 20s after byte 3 of 10"),
            "{err}"
        );
        assert!(stalled.next().await.is_none());
        drop(sender);
    }

    #[test]
    fn error_bodies_are_read_as_the_sdk_reads_them() {
        let slow_down = b"<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message><RequestId>1</RequestId></Error>";
        let (code, message) = error_code(slow_down).unwrap();
        assert_eq!(code.as_deref(), Some("SlowDown"));
        assert_eq!(message.as_deref(), Some("Please reduce your request rate."));
        assert_eq!(error_code(b""), Some((None, None)));
        assert_eq!(error_code(b"<html>bad gateway"), None);
        assert_eq!(error_code(b"not xml at all"), None);
    }

    #[test]
    fn error_answers_are_classified_or_handed_to_the_sdk() {
        let context = test_context();
        let answer = |status: u16, body: &[u8]| error_answer(status, body, &context);
        let no_such_key = b"<Error><Code>NoSuchKey</Code><Message>gone</Message></Error>";
        assert!(matches!(
            answer(404, no_such_key),
            Some(StoreError::NotFound(_))
        ));
        assert!(matches!(answer(404, b""), Some(StoreError::NotFound(_))));
        let no_bucket = b"<Error><Code>NoSuchBucket</Code></Error>";
        assert!(matches!(
            answer(404, no_bucket),
            Some(StoreError::NoSuchBucket(_))
        ));
        let slow = b"<Error><Code>SlowDown</Code></Error>";
        assert!(matches!(answer(503, slow), Some(StoreError::Throttled(_))));
        assert!(matches!(
            answer(500, b""),
            Some(StoreError::Server { status: 500, .. })
        ));
        assert!(answer(502, b"<html>").is_none());
    }
}
