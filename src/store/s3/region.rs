//! Which region requests are signed for. Without one given, the profile's `region` (read from
//! the AWS files only), else `us-east-1`; a bucket elsewhere answers a request with its own in
//! `x-amz-bucket-region` (see `errors::bucket_region`), and the store then swaps its [`Target`]
//! for one in that region, once, for every later request of the process.

use aws_sdk_s3::config::Region;

use super::lean::Lean;

/// Where requests go: the client, its region, and the server as the user knows it.
pub(super) struct Target {
    pub client: aws_sdk_s3::Client,
    pub region: String,
    pub endpoint: String,
    /// HeadObject and whole GetObject outside the SDK's orchestrator; `None` when switched off.
    pub lean: Option<Lean>,
}

impl Target {
    /// The same client signing for `region`; an AWS endpoint name follows the region, an
    /// endpoint the user gave is kept.
    pub fn in_region(&self, region: &str) -> Target {
        let config = self
            .client
            .config()
            .to_builder()
            .region(Region::new(region.to_string()))
            .build();
        let endpoint = if self.endpoint.ends_with(".amazonaws.com") {
            endpoint_name(None, region)
        } else {
            self.endpoint.clone()
        };
        Target {
            client: aws_sdk_s3::Client::from_conf(config),
            region: region.to_string(),
            endpoint,
            lean: self.lean.as_ref().map(Lean::for_new_region),
        }
    }
}

/// The server as messages name it: the endpoint given, or AWS's regional one.
pub(super) fn endpoint_name(endpoint: Option<&str>, region: &str) -> String {
    match endpoint {
        Some(endpoint) => endpoint.to_string(),
        None => format!("https://s3.{region}.amazonaws.com"),
    }
}

/// The `region` of the profile in use (`~/.aws/config`, or `AWS_CONFIG_FILE`), read from the
/// files only: the SDK's full region chain would also ask instance metadata, which costs
/// seconds of timeouts on any machine outside EC2.
pub(super) async fn profile_region(profile: Option<&str>) -> Option<String> {
    use aws_config::meta::region::ProvideRegion;
    let mut provider = aws_config::profile::ProfileFileRegionProvider::builder();
    if let Some(profile) = profile {
        provider = provider.profile_name(profile);
    }
    let region = provider.build().region().await?;
    Some(region.as_ref().to_string())
}
