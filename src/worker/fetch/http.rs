//! HTTP(S) sources through one pooled client whose DNS resolver vets every address
//! ([`super::address`]). Redirects are followed here, hop by hop, so each hop's host is vetted
//! the same way and checked against `IMGPROXY_ALLOWED_SOURCES` ([`super::allowed`]), and
//! capped at `IMGPROXY_MAX_REDIRECTS`. The body is read with a byte counter
//! and dropped — closing the connection — the moment it passes `IMGPROXY_MAX_SRC_FILE_SIZE`.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION, USER_AGENT};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::address::{self, Denied, DnsPool, VettingResolver};
use super::allowed::{self, AllowedSource};
use super::budget::ByteBudget;
use super::{FetchError, Fetched};
use crate::worker::config::{AddressPolicy, FetchConfig};

/// Time allowed to open a TCP connection to a source (the download timeout still applies).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle pooled connection to a source is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle pooled connections kept per source host.
pub const POOL_MAX_IDLE_PER_HOST: usize = 16;

type Connector = HttpsConnector<HttpConnector<VettingResolver>>;

/// Downloads `http://` and `https://` sources.
pub struct HttpSource {
    client: Client<Connector, Empty<Bytes>>,
    policy: AddressPolicy,
    /// Checked on every hop: an allowed source must not redirect anywhere else.
    allowed_sources: Vec<AllowedSource>,
    max_redirects: usize,
    max_size: u64,
    user_agent: HeaderValue,
}

impl HttpSource {
    pub fn new(config: &FetchConfig) -> HttpSource {
        let mut http = HttpConnector::new_with_resolver(VettingResolver {
            policy: config.addresses,
            pool: DnsPool::new(address::DNS_THREADS),
        });
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let connector = crate::tls::https(http);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .build(connector);
        HttpSource {
            client,
            policy: config.addresses,
            allowed_sources: config.allowed_sources.clone(),
            max_redirects: config.max_redirects,
            max_size: config.max_src_file_size,
            user_agent: HeaderValue::from_str(&config.user_agent)
                .expect("IMGPROXY_USER_AGENT was validated as a header value"),
        }
    }

    /// Downloads `url`, following redirects.
    ///
    /// # Errors
    /// See [`FetchError`]; the caller applies the download timeout.
    pub async fn fetch(&self, url: &str, budget: &ByteBudget) -> Result<Fetched, FetchError> {
        let mut url = parse(url)?;
        let mut redirects = 0;
        loop {
            let uri = self.vet(&url)?;
            let request = Request::get(uri)
                .header(USER_AGENT, self.user_agent.clone())
                .body(Empty::new())
                .map_err(|e| FetchError::BadUrl(e.to_string()))?;
            let response = self.client.request(request).await.map_err(connect_error)?;
            let status = response.status();
            if status == StatusCode::OK {
                return self.read(response, budget).await;
            }
            if !status.is_redirection() || status == StatusCode::NOT_MODIFIED {
                return Err(FetchError::Status(status.as_u16()));
            }
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or(FetchError::Status(status.as_u16()))?;
            if redirects >= self.max_redirects {
                return Err(FetchError::TooManyRedirects(redirects));
            }
            redirects += 1;
            url = url
                .join(location)
                .map_err(|e| FetchError::BadUrl(format!("redirect to {location:?}: {e}")))?;
            tracing::debug!(%url, redirects, "following a source redirect");
        }
    }

    /// Checks one hop: http(s) only, admitted by `IMGPROXY_ALLOWED_SOURCES`, and an IP-literal
    /// host against the address policy (host names are vetted by the resolver when the
    /// connection is made).
    fn vet(&self, url: &url::Url) -> Result<Uri, FetchError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchError::BadUrl(format!(
                "{url}: only http and https can be followed"
            )));
        }
        if !allowed::is_allowed(&self.allowed_sources, url.as_str(), "") {
            return Err(FetchError::NotAllowed(url.to_string()));
        }
        let host = url
            .host_str()
            .ok_or_else(|| FetchError::BadUrl(format!("{url}: no host")))?;
        if let Some(ip) = address::literal_ip(host) {
            address::check(&self.policy, ip)?;
        }
        let mut url = url.clone();
        url.set_fragment(None);
        url.as_str()
            .parse()
            .map_err(|e| FetchError::BadUrl(format!("{url}: {e}")))
    }

    async fn read(
        &self,
        response: http::Response<hyper::body::Incoming>,
        budget: &ByteBudget,
    ) -> Result<Fetched, FetchError> {
        let declared = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|len| len > self.max_size) {
            // Not a byte of the body is read; dropping the response closes the connection.
            return Err(FetchError::TooBig(self.max_size));
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = response.into_body();
        let mut buf = budget.start(declared, self.max_size).await?;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| FetchError::Unreachable(format!("reading body: {e}")))?;
            if let Some(chunk) = frame.data_ref() {
                buf.append(chunk).await?;
            }
        }
        Ok(Fetched {
            bytes: buf.into_bytes(),
            content_type,
        })
    }
}

/// Parses a source URL the way a browser would: spaces and other characters that can't
/// appear in a URI are percent-encoded, numeric hosts (`2130706433`) normalised to dotted
/// form — so the address check sees what the connection will use.
pub(super) fn parse(url: &str) -> Result<url::Url, FetchError> {
    url::Url::parse(url).map_err(|e| FetchError::BadUrl(format!("{url:?}: {e}")))
}

/// Finds an address refusal in a client error's chain, else calls the source unreachable.
fn connect_error(error: hyper_util::client::legacy::Error) -> FetchError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = source {
        if let Some(denied) = e.downcast_ref::<Denied>() {
            return FetchError::AddressDenied(denied.clone());
        }
        source = e.source();
    }
    FetchError::Unreachable(format!("{error:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::FromVars;

    #[test]
    fn urls_are_normalised_before_vetting() {
        assert_eq!(
            parse("http://2130706433/a b.jpg").unwrap().as_str(),
            "http://127.0.0.1/a%20b.jpg"
        );
        assert_eq!(
            parse("http://0x7f.1/").unwrap().host_str(),
            Some("127.0.0.1")
        );
        assert!(parse("http://[::1/").is_err());
    }

    #[test]
    fn literal_loopback_is_refused_before_connecting() {
        let config = crate::worker::config::WorkerConfig::from_vars(Vec::new())
            .unwrap()
            .fetch;
        let source = HttpSource::new(&config);
        for url in [
            "http://127.0.0.1/",
            "http://[::1]:8080/",
            "http://0.0.0.0/",
            "http://[::ffff:127.0.0.1]/",
        ] {
            let err = source.vet(&parse(url).unwrap()).unwrap_err();
            assert!(matches!(err, FetchError::AddressDenied(_)), "{url}: {err}");
        }
        assert!(source.vet(&parse("http://10.0.0.1/a").unwrap()).is_ok());
        assert!(matches!(
            source.vet(&parse("file:///etc/passwd").unwrap()),
            Err(FetchError::BadUrl(_))
        ));
    }
}
