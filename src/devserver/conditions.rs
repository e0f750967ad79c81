//! Conditional requests and byte ranges, evaluated as S3 does (RFC 9110 order): If-Match, then
//! If-Unmodified-Since when there is no If-Match (412 on failure); If-None-Match, then
//! If-Modified-Since when there is no If-None-Match (304 on failure).

use std::ops::Range as ByteRange;
use std::time::SystemTime;

use s3s::dto::{ETag, ETagCondition, Range, Timestamp};
use s3s::{S3Result, s3_error};
use time::OffsetDateTime;

use crate::store::memory::StoredObject;

/// The store keeps ETags quoted, as S3 sends them; s3s wants the bare value.
pub(crate) fn etag_dto(stored: &str) -> ETag {
    ETag::Strong(stored.trim_matches('"').to_string())
}

/// The store's (quoted) form of a bare ETag value.
pub(crate) fn stored_etag(value: &str) -> String {
    format!("\"{}\"", value.trim_matches('"'))
}

fn matches(condition: &ETagCondition, stored: &str) -> bool {
    match condition {
        ETagCondition::Any => true,
        ETagCondition::ETag(etag) => etag.value() == stored.trim_matches('"'),
    }
}

/// HTTP dates carry whole seconds: compare at that precision.
fn whole_seconds(time: SystemTime) -> OffsetDateTime {
    let time = OffsetDateTime::from(time);
    time.replace_nanosecond(0).unwrap_or(time)
}

fn failed() -> s3s::S3Error {
    s3_error!(
        PreconditionFailed,
        "At least one of the pre-conditions you specified did not hold"
    )
}

/// Preconditions of GET and HEAD.
pub(crate) fn check(
    object: &StoredObject,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let modified = whole_seconds(object.last_modified);
    match (if_match, if_unmodified_since) {
        (Some(condition), _) if !matches(condition, &object.etag) => return Err(failed()),
        (None, Some(since)) if modified > OffsetDateTime::from(since.clone()) => {
            return Err(failed());
        }
        _ => {}
    }
    match (if_none_match, if_modified_since) {
        (Some(condition), _) if matches(condition, &object.etag) => Err(s3_error!(NotModified)),
        (None, Some(since)) if modified <= OffsetDateTime::from(since.clone()) => {
            Err(s3_error!(NotModified))
        }
        _ => Ok(()),
    }
}

/// Preconditions of a PUT: If-Match needs the object with that ETag, If-None-Match `*` needs
/// no object.
pub(crate) fn check_write(
    current: Option<&StoredObject>,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> S3Result<()> {
    if let Some(condition) = if_match {
        match current {
            Some(object) if matches(condition, &object.etag) => {}
            Some(_) => return Err(failed()),
            None => return Err(s3_error!(NoSuchKey)),
        }
    }
    if let (Some(condition), Some(object)) = (if_none_match, current)
        && matches(condition, &object.etag)
    {
        return Err(failed());
    }
    Ok(())
}

/// `x-amz-copy-source-if-match` / `-if-none-match`: both answer 412 when they fail.
pub(crate) fn check_copy_source(
    source: &StoredObject,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> S3Result<()> {
    let match_failed = if_match.is_some_and(|c| !matches(c, &source.etag));
    let none_match_failed = if_none_match.is_some_and(|c| matches(c, &source.etag));
    if match_failed || none_match_failed {
        Err(failed())
    } else {
        Ok(())
    }
}

/// The bytes a response covers and, for a range request, its Content-Range.
pub(crate) struct ResolvedRange {
    pub bytes: ByteRange<u64>,
    pub content_range: Option<String>,
}

pub(crate) fn resolve_range(range: Option<&Range>, size: u64) -> S3Result<ResolvedRange> {
    let Some(range) = range else {
        return Ok(ResolvedRange {
            bytes: 0..size,
            content_range: None,
        });
    };
    let bytes = range
        .check(size)
        .map_err(|_| s3_error!(InvalidRange, "The requested range is not satisfiable"))?;
    let content_range = format!("bytes {}-{}/{size}", bytes.start, bytes.end - 1);
    Ok(ResolvedRange {
        bytes,
        content_range: Some(content_range),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PutOptions;
    use bytes::Bytes;
    use s3s::S3ErrorCode;
    use std::time::Duration;

    fn object() -> StoredObject {
        StoredObject::new(Bytes::from_static(b"0123456789"), PutOptions::default())
    }

    fn code(result: S3Result<()>) -> Option<S3ErrorCode> {
        result.err().map(|e| e.code().clone())
    }

    #[test]
    fn etag_conditions_follow_rfc_order() {
        let o = object();
        let same = ETagCondition::ETag(etag_dto(&o.etag));
        let other = ETagCondition::ETag(ETag::Strong("nope".into()));
        assert_eq!(code(check(&o, Some(&same), None, None, None)), None);
        assert_eq!(
            code(check(&o, Some(&other), None, None, None)),
            Some(S3ErrorCode::PreconditionFailed)
        );
        assert_eq!(
            code(check(&o, None, Some(&same), None, None)),
            Some(S3ErrorCode::NotModified)
        );
        assert_eq!(
            code(check(&o, None, Some(&ETagCondition::Any), None, None)),
            Some(S3ErrorCode::NotModified)
        );
        assert_eq!(code(check(&o, None, Some(&other), None, None)), None);
        let past = Timestamp::from(o.last_modified - Duration::from_secs(3600));
        // If-Match wins over a failing If-Unmodified-Since.
        assert_eq!(code(check(&o, Some(&same), None, None, Some(&past))), None);
        assert_eq!(
            code(check(&o, None, None, None, Some(&past))),
            Some(S3ErrorCode::PreconditionFailed)
        );
        assert_eq!(code(check(&o, None, None, Some(&past), None)), None);
        let now = Timestamp::from(o.last_modified);
        assert_eq!(
            code(check(&o, None, None, Some(&now), None)),
            Some(S3ErrorCode::NotModified)
        );
    }

    #[test]
    fn conditional_writes() {
        let o = object();
        let same = ETagCondition::ETag(etag_dto(&o.etag));
        assert_eq!(
            code(check_write(None, None, Some(&ETagCondition::Any))),
            None
        );
        assert_eq!(
            code(check_write(Some(&o), None, Some(&ETagCondition::Any))),
            Some(S3ErrorCode::PreconditionFailed)
        );
        assert_eq!(code(check_write(Some(&o), Some(&same), None)), None);
        assert_eq!(
            code(check_write(None, Some(&same), None)),
            Some(S3ErrorCode::NoSuchKey)
        );
    }

    #[test]
    fn ranges_are_clipped_and_described() {
        let r = resolve_range(
            Some(&Range::Int {
                first: 2,
                last: Some(100),
            }),
            10,
        )
        .unwrap();
        assert_eq!(
            (r.bytes, r.content_range.as_deref()),
            (2..10, Some("bytes 2-9/10"))
        );
        let r = resolve_range(Some(&Range::Suffix { length: 3 }), 10).unwrap();
        assert_eq!(r.bytes, 7..10);
        assert!(
            resolve_range(
                Some(&Range::Int {
                    first: 10,
                    last: None
                }),
                10
            )
            .is_err()
        );
        assert_eq!(resolve_range(None, 0).unwrap().bytes, 0..0);
        assert_eq!(stored_etag("abc"), "\"abc\"");
        assert_eq!(etag_dto("\"abc\"").value(), "abc");
    }
}
