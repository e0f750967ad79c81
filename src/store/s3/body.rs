//! GET bodies as the store hands them on: streamed while holding their connection permit, or,
//! for a whole small object with an MD5 ETag, read in full and checked first.

use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use md5::{Digest, Md5};
use tokio::sync::OwnedSemaphorePermit;

use crate::store::checksum::hex;
use crate::store::{ByteStream, StoreError};

/// Whether a GET answer's ETag is the MD5 of its bytes: not so for objects encrypted with
/// SSE-KMS or SSE-C (S3's documented exceptions; SSE-S3 keeps the MD5).
pub(super) fn etag_is_content_md5(
    output: &aws_sdk_s3::operation::get_object::GetObjectOutput,
) -> bool {
    use aws_sdk_s3::types::ServerSideEncryption;
    let kms = matches!(
        output.server_side_encryption(),
        Some(ServerSideEncryption::AwsKms | ServerSideEncryption::AwsKmsDsse)
    );
    !kms && output.sse_customer_algorithm().is_none()
}

/// Why a checked body was refused.
pub(super) enum Mismatch {
    /// It broke or ended short: a connection fault, retryable.
    Body(StoreError),
    /// It arrived whole with this (hex) MD5, not the expected one.
    Digest(String),
}

/// Reads a body of `size` bytes, hashing it as it arrives (so the check adds little to the
/// transfer), and returns it only if its MD5 is `expected` (lower-case hex).
pub(super) async fn collect_checked(
    mut sdk_body: SdkByteStream,
    size: u64,
    expected: &str,
    what: &str,
) -> Result<Bytes, Mismatch> {
    let mut body = BytesMut::with_capacity(size as usize);
    let mut digest = Md5::new();
    while let Some(chunk) = sdk_body.next().await {
        let chunk = chunk.map_err(|e| {
            let message = format!("{what}: body broke: {}", DisplayErrorContext(&e));
            Mismatch::Body(StoreError::Connection(message))
        })?;
        digest.update(&chunk);
        body.extend_from_slice(&chunk);
    }
    if body.len() as u64 != size {
        let message = format!("{what}: body ended at byte {} of {size}", body.len());
        return Err(Mismatch::Body(StoreError::Connection(message)));
    }
    let actual = hex(&digest.finalize());
    if actual != expected {
        return Err(Mismatch::Digest(actual));
    }
    Ok(body.freeze())
}

/// Adapts the SDK body into ours, holding the connection permit until the body ends, fails or
/// is dropped.
pub(super) fn permit_holding_body(
    body: SdkByteStream,
    permit: OwnedSemaphorePermit,
    what: String,
) -> ByteStream {
    let state = Some((body, permit));
    Box::pin(
        futures::stream::unfold(state, move |state| {
            let what = what.clone();
            async move {
                let (mut body, permit) = state?;
                match body.next().await {
                    Some(Ok(chunk)) => Some((Ok(chunk), Some((body, permit)))),
                    Some(Err(err)) => {
                        let message = format!("{what}: body broke: {}", DisplayErrorContext(&err));
                        Some((Err(StoreError::Connection(message)), None))
                    }
                    None => None,
                }
            }
        })
        .fuse(),
    )
}
