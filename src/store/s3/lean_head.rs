//! HeadObject the lean way (`lean`), for the one call a cold `ls -l` makes per object.
//!
//! It decides a 2xx whose fields all parse the way the SDK parses them ([`object_meta`]), an
//! error status (HEAD answers carry no body, so the status alone classifies, as in
//! `errors::classify`), a broken connection and its own timeout. A bucket that names another
//! region is undecided, 400 and 403 are refusals.

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;

use super::errors::{CallContext, classify};
use super::lean::{Answer, Lean, object_meta};
use crate::store::ObjectMeta;

impl Lean {
    pub async fn head(&self, client: &Client, context: &CallContext<'_>) -> Answer<ObjectMeta> {
        match self.send(client, "HEAD", context).await {
            Ok(response) => read_answer(context.key, &response, context),
            Err(answer) => answer,
        }
    }
}

fn read_answer(
    key: &str,
    response: &HttpResponse,
    context: &CallContext<'_>,
) -> Answer<ObjectMeta> {
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        // A bucket in another region says so in a header: the SDK's path follows it.
        if response.headers().get("x-amz-bucket-region").is_some() {
            return Answer::Undecided;
        }
        if status == 400 || status == 403 {
            return Answer::Refused;
        }
        return Answer::Decided(Err(classify(status, None, "", context)));
    }
    match object_meta(key, response.headers()) {
        Some(meta) => Answer::Decided(Ok(meta)),
        None => Answer::Undecided,
    }
}

#[cfg(test)]
mod tests {
    use super::super::lean::tests::{response, test_context};
    use super::*;
    use crate::store::StoreError;

    fn answer(status: u16, headers: &[(&str, &str)]) -> Answer<ObjectMeta> {
        read_answer("k", &response(status, headers, b""), &test_context())
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
}
