//! GET bodies as the store hands them on: streamed while holding their connection permit, or,
//! for a whole small object with an MD5 ETag, read in full and checked first. The same for the
//! SDK's GET and the lean one (`lean_get`): both give a [`Fetched`].

use std::ops::Range;

use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;
use md5::{Digest, Md5};
use tokio::sync::OwnedSemaphorePermit;

use crate::store::checksum::hex;
use crate::store::{ByteStream, ObjectMeta, StoreError};

/// A GET body as it arrives; an error says why it broke.
pub(super) type RawBody = BoxStream<'static, Result<Bytes, String>>;

/// A GET's answer before its body is handed on.
pub(super) struct Fetched {
    pub meta: ObjectMeta,
    /// The bytes of the object the body holds.
    pub range: Range<u64>,
    /// Whether the ETag is the MD5 of the object ([`etag_is_content_md5`]).
    pub md5_etag: bool,
    pub body: RawBody,
}

/// The SDK's body as a [`RawBody`].
pub(super) fn sdk_body(body: SdkByteStream) -> RawBody {
    futures::stream::unfold(body, |mut body| async move {
        let chunk = body.next().await?;
        Some((chunk.map_err(|e| DisplayErrorContext(&e).to_string()), body))
    })
    .boxed()
}

/// Whether a GET answer's ETag is the MD5 of its bytes, from its `x-amz-server-side-encryption`
/// and whether it names an SSE-C algorithm: not so for objects encrypted with SSE-KMS or SSE-C
/// (S3's documented exceptions; SSE-S3 keeps the MD5).
pub(super) fn etag_is_content_md5(encryption: Option<&str>, customer_key: bool) -> bool {
    let kms = matches!(encryption, Some("aws:kms" | "aws:kms:dsse"));
    !kms && !customer_key
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
    mut raw: RawBody,
    size: u64,
    expected: &str,
    what: &str,
) -> Result<Bytes, Mismatch> {
    let mut body = BytesMut::with_capacity(size as usize);
    let mut digest = Md5::new();
    while let Some(chunk) = raw.next().await {
        let chunk = chunk.map_err(|reason| {
            let message = format!("{what}: body broke: {reason}");
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

/// Adapts a raw body into ours, holding the connection permit until the body ends, fails or
/// is dropped.
pub(super) fn permit_holding_body(
    body: RawBody,
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
                    Some(Err(reason)) => {
                        let message = format!("{what}: body broke: {reason}");
                        Some((Err(StoreError::Connection(message)), None))
                    }
                    None => None,
                }
            }
        })
        .fuse(),
    )
}
