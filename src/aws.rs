//! The one S3 client builder, for the store (`cache::s3`) and the worker's `s3://` sources.
//!
//! Both want the same things from the SDK: rustls with ring (no cmake in the build), no SDK
//! retries (the store's upload queue retries what is worth it; a source fails fast and the
//! client asks again), a bounded connect and call time, the AWS default credential chain with
//! an optional role assumed on top, and, for an S3-compatible endpoint, its addressing style.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    Builder, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    SharedCredentialsProvider, SharedHttpClient,
};
use aws_smithy_http_client::tls;

/// Time allowed to open a connection to the S3 endpoint.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How object URLs are formed at the S3 endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressingStyle {
    /// `https://endpoint/bucket/key`: works with every S3-compatible server.
    Path,
    /// `https://bucket.endpoint/key`: what AWS recommends for new buckets.
    Virtual,
}

/// Where the region comes from.
#[derive(Debug, Clone, Copy)]
pub enum RegionChoice<'a> {
    /// The operator named one.
    Fixed(&'a str),
    /// The AWS chain's (`AWS_REGION`, the profile), else this one: the SDK refuses to sign
    /// without a region.
    FromChainOr(&'static str),
}

/// An S3-compatible server instead of AWS itself.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'a> {
    pub url: &'a str,
    pub style: AddressingStyle,
}

/// A role to assume on top of the credentials the chain finds.
#[derive(Clone, Copy)]
pub struct AssumeRole<'a> {
    pub arn: &'a str,
    /// A shared secret between the role's owner and us: never logged.
    pub external_id: Option<&'a str>,
    /// Names our sessions in the role owner's CloudTrail.
    pub session_name: &'a str,
}

/// Everything that differs between our S3 clients.
#[derive(Clone, Copy)]
pub struct ClientSettings<'a> {
    pub region: RegionChoice<'a>,
    /// `None`: AWS itself.
    pub endpoint: Option<Endpoint<'a>>,
    pub assume_role: Option<AssumeRole<'a>>,
    /// Longest one call attempt may take.
    pub call_timeout: Duration,
}

/// Who signs the S3 calls we make without the SDK (the bucket lookups of
/// [`crate::cache::s3_http`]), for which region: what the SDK client was built with. The SDK's
/// config no longer hands its credentials provider out, so it travels beside the client.
#[derive(Clone, Debug)]
pub struct Signing {
    /// `None`: anonymous calls.
    pub credentials: Option<SharedCredentialsProvider>,
    pub region: String,
}

impl Signing {
    /// Static credentials, as tests and static-key deployments have them.
    pub fn fixed(access_key: &str, secret_key: &str, region: &str) -> Signing {
        Signing {
            credentials: Some(SharedCredentialsProvider::new(Credentials::new(
                access_key, secret_key, None, None, "static",
            ))),
            region: region.to_owned(),
        }
    }
}

/// Builds a client from the AWS default credential chain (environment, shared files, web
/// identity, ECS task role, EC2 instance role), with `settings.assume_role` assumed on top, and
/// the same credentials and region for our own calls.
pub async fn client(settings: &ClientSettings<'_>) -> (aws_sdk_s3::Client, Signing) {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http_client());
    if let RegionChoice::Fixed(region) = settings.region {
        loader = loader.region(Region::new(region.to_owned()));
    }
    let base = loader.load().await;
    let mut builder = Builder::from(&base);
    if let (RegionChoice::FromChainOr(fallback), None) = (settings.region, base.region()) {
        builder = builder.region(Region::new(fallback));
    }
    let mut credentials = base.credentials_provider();
    if let Some(assume) = &settings.assume_role {
        let mut role = aws_config::sts::AssumeRoleProvider::builder(assume.arn)
            .session_name(assume.session_name)
            .configure(&base);
        if let Some(id) = assume.external_id {
            role = role.external_id(id);
        }
        let role = SharedCredentialsProvider::new(role.build().await);
        builder = builder.credentials_provider(role.clone());
        credentials = Some(role);
    }
    let config = tune(builder, settings.endpoint, settings.call_timeout).build();
    let signing = Signing {
        credentials,
        region: config
            .region()
            .map_or(FALLBACK_REGION, |r| r.as_ref())
            .to_owned(),
    };
    (aws_sdk_s3::Client::from_conf(config), signing)
}

/// The region signed for when the chain finds none (the SDK refuses to sign then; our own
/// calls use S3's default).
const FALLBACK_REGION: &str = "us-east-1";

/// The HTTP(S) client for S3 calls: rustls with ring (no cmake in the build), system roots.
pub fn http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// The settings every S3 client of ours needs, whatever its credentials (tests bring static
/// ones to a builder of their own).
pub fn tune(builder: Builder, endpoint: Option<Endpoint<'_>>, call_timeout: Duration) -> Builder {
    let builder = builder
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(call_timeout)
                .build(),
        );
    match endpoint {
        Some(endpoint) => builder
            .endpoint_url(endpoint.url)
            .force_path_style(endpoint.style == AddressingStyle::Path)
            // Integrity comes from the signed payload hash; the newer CRC trailers are not
            // understood by every S3 implementation.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired),
        None => builder,
    }
}
