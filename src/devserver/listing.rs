//! ListObjectsV2, ListObjects (v1) and ListMultipartUploads answers. Paging itself is
//! `store::listing::list_page` (through [`MemoryStore`]); this module translates between its
//! [`ListRequest`]/[`ListPage`] and the S3 wire types: opaque continuation tokens, v1 markers,
//! `encoding-type=url`.

use s3s::dto::*;
use s3s::{S3Result, s3_error};

use super::conditions::etag_dto;
use crate::store::listing::MAX_KEYS_PER_PAGE;
use crate::store::memory::MemoryStore;
use crate::store::{ListPage, ListRequest, ObjectStore};

/// Continuation tokens are the hex of the last key returned: opaque to clients and safe in XML
/// and query strings whatever bytes the key holds.
fn encode_token(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_token(token: &str) -> S3Result<String> {
    let invalid = || {
        s3_error!(
            InvalidArgument,
            "The continuation token provided is incorrect"
        )
    };
    if !token.len().is_multiple_of(2) {
        return Err(invalid());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|at| {
            token
                .get(at..at + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(invalid)?;
    String::from_utf8(bytes).map_err(|_| invalid())
}

fn max_keys(requested: Option<i32>) -> S3Result<u32> {
    match requested {
        None => Ok(MAX_KEYS_PER_PAGE),
        Some(n) => u32::try_from(n)
            .map_err(|_| s3_error!(InvalidArgument, "max-keys must be a non-negative integer")),
    }
}

/// Applies `encoding-type=url` (when asked) to a key or prefix in the answer.
struct Encoder {
    url: bool,
}

impl Encoder {
    fn new(encoding_type: Option<&EncodingType>) -> Self {
        Encoder {
            url: encoding_type.is_some_and(|e| e.as_str() == EncodingType::URL),
        }
    }

    fn encode(&self, text: &str) -> String {
        if !self.url {
            return text.to_string();
        }
        let mut encoded = String::with_capacity(text.len());
        for byte in text.bytes() {
            if byte.is_ascii_alphanumeric() || b"-_.~/".contains(&byte) {
                encoded.push(byte as char);
            } else {
                encoded.push_str(&format!("%{byte:02X}"));
            }
        }
        encoded
    }

    fn contents(&self, page: &ListPage) -> Vec<Object> {
        page.objects
            .iter()
            .map(|o| Object {
                key: Some(self.encode(&o.key)),
                size: Some(o.size as i64),
                e_tag: Some(etag_dto(&o.etag)),
                last_modified: Some(Timestamp::from(o.last_modified)),
                storage_class: Some(ObjectStorageClass::from_static(
                    ObjectStorageClass::STANDARD,
                )),
                ..Default::default()
            })
            .collect()
    }

    fn prefixes(&self, page: &ListPage) -> Vec<CommonPrefix> {
        page.common_prefixes
            .iter()
            .map(|p| CommonPrefix {
                prefix: Some(self.encode(p)),
            })
            .collect()
    }
}

pub(crate) async fn list_v2(
    store: &MemoryStore,
    input: ListObjectsV2Input,
) -> S3Result<ListObjectsV2Output> {
    let max = max_keys(input.max_keys)?;
    // A continuation token wins over start-after, as in S3.
    let resume_after = match &input.continuation_token {
        Some(token) => Some(decode_token(token)?),
        None => input.start_after.clone().filter(|s| !s.is_empty()),
    };
    let request = ListRequest {
        prefix: input.prefix.clone().unwrap_or_default(),
        delimiter: input.delimiter.clone().filter(|d| !d.is_empty()),
        continuation_token: resume_after,
        start_after: None,
        max_keys: Some(max),
    };
    let page = store.list(request).await.map_err(internal)?;
    let encoder = Encoder::new(input.encoding_type.as_ref());
    let key_count = (page.objects.len() + page.common_prefixes.len()) as i32;
    Ok(ListObjectsV2Output {
        name: Some(input.bucket),
        prefix: Some(encoder.encode(input.prefix.as_deref().unwrap_or(""))),
        delimiter: input.delimiter.as_deref().map(|d| encoder.encode(d)),
        max_keys: Some(max.min(MAX_KEYS_PER_PAGE) as i32),
        key_count: Some(key_count),
        continuation_token: input.continuation_token,
        start_after: input.start_after.as_deref().map(|s| encoder.encode(s)),
        is_truncated: Some(page.next_continuation_token.is_some()),
        next_continuation_token: page.next_continuation_token.as_deref().map(encode_token),
        contents: Some(encoder.contents(&page)),
        common_prefixes: Some(encoder.prefixes(&page)),
        encoding_type: input.encoding_type,
        ..Default::default()
    })
}

pub(crate) async fn list_v1(
    store: &MemoryStore,
    input: ListObjectsInput,
) -> S3Result<ListObjectsOutput> {
    let max = max_keys(input.max_keys)?;
    let request = ListRequest {
        prefix: input.prefix.clone().unwrap_or_default(),
        delimiter: input.delimiter.clone().filter(|d| !d.is_empty()),
        // A v1 marker is a plain key (or common prefix): list strictly after it.
        continuation_token: input.marker.clone().filter(|m| !m.is_empty()),
        start_after: None,
        max_keys: Some(max),
    };
    let page = store.list(request).await.map_err(internal)?;
    let encoder = Encoder::new(input.encoding_type.as_ref());
    Ok(ListObjectsOutput {
        name: Some(input.bucket),
        prefix: Some(encoder.encode(input.prefix.as_deref().unwrap_or(""))),
        delimiter: input.delimiter.as_deref().map(|d| encoder.encode(d)),
        marker: Some(encoder.encode(input.marker.as_deref().unwrap_or(""))),
        max_keys: Some(max.min(MAX_KEYS_PER_PAGE) as i32),
        is_truncated: Some(page.next_continuation_token.is_some()),
        // S3 sends NextMarker only with a delimiter; sending it always is allowed and simpler
        // for clients, which otherwise fall back to the last key.
        next_marker: page
            .next_continuation_token
            .as_deref()
            .map(|m| encoder.encode(m)),
        contents: Some(encoder.contents(&page)),
        common_prefixes: Some(encoder.prefixes(&page)),
        encoding_type: input.encoding_type,
        ..Default::default()
    })
}

pub(crate) fn list_uploads(
    store: &MemoryStore,
    input: ListMultipartUploadsInput,
) -> S3Result<ListMultipartUploadsOutput> {
    let max = match input.max_uploads {
        None => MAX_KEYS_PER_PAGE as usize,
        Some(n) => usize::try_from(n)
            .map_err(|_| {
                s3_error!(
                    InvalidArgument,
                    "max-uploads must be a non-negative integer"
                )
            })?
            .min(MAX_KEYS_PER_PAGE as usize),
    };
    let prefix = input.prefix.clone().unwrap_or_default();
    let key_marker = input.key_marker.clone().unwrap_or_default();
    let id_marker = input.upload_id_marker.clone().unwrap_or_default();
    let mut pending = store
        .pending()
        .into_iter()
        .filter(|u| u.key.starts_with(&prefix))
        .filter(|u| {
            key_marker.is_empty()
                || u.key > key_marker
                || (u.key == key_marker && u.upload_id > id_marker)
        })
        .peekable();
    let mut uploads = Vec::new();
    while uploads.len() < max {
        let Some(upload) = pending.next() else {
            break;
        };
        uploads.push(upload);
    }
    let truncated = pending.peek().is_some();
    let encoder = Encoder::new(input.encoding_type.as_ref());
    let (next_key_marker, next_upload_id_marker) = match uploads.last() {
        Some(last) if truncated => (
            Some(encoder.encode(&last.key)),
            Some(last.upload_id.clone()),
        ),
        _ => (None, None),
    };
    Ok(ListMultipartUploadsOutput {
        bucket: Some(input.bucket),
        prefix: Some(encoder.encode(&prefix)),
        key_marker: input.key_marker,
        upload_id_marker: input.upload_id_marker,
        max_uploads: Some(max as i32),
        is_truncated: Some(truncated),
        next_key_marker,
        next_upload_id_marker,
        uploads: Some(
            uploads
                .into_iter()
                .map(|upload| MultipartUpload {
                    key: Some(encoder.encode(&upload.key)),
                    upload_id: Some(upload.upload_id),
                    initiated: Some(Timestamp::from(upload.initiated)),
                    storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                    ..Default::default()
                })
                .collect(),
        ),
        encoding_type: input.encoding_type,
        ..Default::default()
    })
}

fn internal(error: crate::store::StoreError) -> s3s::S3Error {
    s3s::S3Error::with_source(s3s::S3ErrorCode::InternalError, Box::new(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_any_key() {
        for key in ["", "a/b", "dir/", "é\u{1}<&>"] {
            assert_eq!(decode_token(&encode_token(key)).unwrap(), key);
        }
        assert!(decode_token("abc").is_err());
        assert!(decode_token("zz").is_err());
        assert!(decode_token("ff").is_err());
    }

    #[test]
    fn url_encoding_keeps_slashes_and_escapes_the_rest() {
        let url = Encoder { url: true };
        assert_eq!(url.encode("a b/c+d%é"), "a%20b/c%2Bd%25%C3%A9");
        assert_eq!(Encoder { url: false }.encode("a b"), "a b");
    }
}
