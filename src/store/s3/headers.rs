//! Headers that go with every request of a mount, whatever the operation: who pays
//! (`x-amz-request-payer`), who must own the bucket (`x-amz-expected-bucket-owner`), and the
//! user's User-Agent prefix. One interceptor adds them, so no call site can forget one; the
//! write-only headers (encryption, storage class) are set per operation in `s3.rs`, where
//! the SDK types them.

use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;

use crate::store::config::RequestOptions;

/// The headers [`BucketHeaders`] signs into every request, for requests sent outside the SDK.
pub(super) fn signed_headers(options: &RequestOptions) -> Vec<(&'static str, String)> {
    let mut headers = Vec::new();
    if options.requester_pays {
        headers.push(("x-amz-request-payer", "requester".to_string()));
    }
    if let Some(owner) = &options.expected_bucket_owner {
        headers.push(("x-amz-expected-bucket-owner", owner.clone()));
    }
    headers
}

#[derive(Debug, Clone)]
pub(super) struct BucketHeaders {
    /// Who pays and the expected owner: [`signed_headers`], signed into every request.
    signed: Vec<(&'static str, String)>,
    user_agent_prefix: Option<String>,
}

impl BucketHeaders {
    pub fn new(options: &RequestOptions) -> Self {
        BucketHeaders {
            signed: signed_headers(options),
            user_agent_prefix: options.user_agent_prefix.clone(),
        }
    }
}

impl Intercept for BucketHeaders {
    fn name(&self) -> &'static str {
        "BucketHeaders"
    }

    /// Before signing, so that SigV4 covers them: a proxy cannot strip who pays.
    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let headers = context.request_mut().headers_mut();
        for (name, value) in &self.signed {
            headers.try_insert(*name, value.clone())?;
        }
        Ok(())
    }

    /// After signing: SigV4 leaves User-Agent unsigned, and the SDK sets it while signing.
    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(prefix) = &self.user_agent_prefix else {
            return Ok(());
        };
        let headers = context.request_mut().headers_mut();
        let agent = match headers.get("user-agent") {
            Some(sdk) => format!("{prefix} {sdk}"),
            None => prefix.clone(),
        };
        headers.try_insert("user-agent", agent)?;
        Ok(())
    }
}
