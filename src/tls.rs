//! The one TLS client set-up for our own hyper clients (the bucket lookups of
//! [`crate::cache::s3_http`] and the worker's `https://` sources): rustls with ring, as the S3
//! SDK's client has it (no cmake in the build), and the system's root certificates.

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;

/// `http` wrapped so that it speaks TLS to `https://` URLs (and plain HTTP to `http://` ones).
/// Without system roots every `https://` call fails, as it should, and one warning says why.
pub fn https<R>(http: HttpConnector<R>) -> HttpsConnector<HttpConnector<R>> {
    let tls = hyper_rustls::HttpsConnectorBuilder::new();
    let tls = match tls.with_provider_and_native_roots(rustls::crypto::ring::default_provider()) {
        Ok(tls) => tls,
        Err(error) => {
            tracing::warn!(%error, "no system CA certificates: https calls will fail");
            let config = rustls::ClientConfig::builder_with_provider(
                rustls::crypto::ring::default_provider().into(),
            )
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
        }
    };
    tls.https_or_http().enable_http1().wrap_connector(http)
}
