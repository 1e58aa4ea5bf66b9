//! The upstream: imgproxy or the bundled worker, reached through one pooled client.

use std::time::Duration;

use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::{Body, empty};

/// Time allowed to connect to the upstream; it is on the same machine.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Limit for one `GET /health`, at start-up and for our own health endpoint.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Most an upstream connection buffers of a body before the client has taken it. hyper's
/// default (~400 KiB) would let a few hundred streaming connections hold 100 MB between them;
/// 64 KiB still reads a typical result in one or two calls.
pub const READ_BUFFER_MAX: usize = 64 * 1024;
/// Pause between two start-up health checks.
pub const HEALTH_POLL_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("the upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the upstream could not be reached: {0}")]
    Unreachable(#[from] hyper_util::client::legacy::Error),
    #[error("the upstream answered /health with {0}")]
    Unhealthy(StatusCode),
}

#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpConnector, Body>,
    base: Uri,
    timeout: Duration,
}

impl Upstream {
    /// `timeout` limits the wait for a response head.
    pub fn new(base: Uri, timeout: Duration) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .http1_max_buf_size(READ_BUFFER_MAX)
            .build(connector);
        Upstream {
            client,
            base,
            timeout,
        }
    }

    pub fn base(&self) -> &Uri {
        &self.base
    }

    /// The upstream URL for a request path and query.
    fn uri_for(&self, path_and_query: Option<&PathAndQuery>) -> Uri {
        let base_path = self.base.path().trim_end_matches('/');
        let tail = path_and_query.map_or("/", PathAndQuery::as_str);
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = format!("{base_path}{tail}").parse().ok();
        Uri::from_parts(parts).unwrap_or_else(|_| self.base.clone())
    }

    /// Sends a client's request on, with its path and query, to the upstream.
    ///
    /// # Errors
    /// No response head within the timeout, or no connection.
    pub async fn forward<B>(
        &self,
        mut request: Request<B>,
    ) -> Result<Response<Incoming>, UpstreamError>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + Sync + 'static,
        B::Error: Into<crate::body::BoxError>,
    {
        *request.uri_mut() = self.uri_for(request.uri().path_and_query());
        // The pooled client speaks HTTP/1.1 to the upstream whatever the client spoke to us.
        *request.version_mut() = Version::HTTP_11;
        let request = request.map(|b| b.map_err(Into::into).boxed());
        self.send(request, self.timeout).await
    }

    async fn send(
        &self,
        request: Request<Body>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        tokio::time::timeout(timeout, self.client.request(request))
            .await
            .map_err(|_| UpstreamError::Timeout(timeout))?
            .map_err(UpstreamError::Unreachable)
    }

    /// One `GET /health`.
    ///
    /// # Errors
    /// No answer, or an answer other than 200.
    pub async fn health(&self) -> Result<(), UpstreamError> {
        let uri = self.uri_for(Some(&PathAndQuery::from_static("/health")));
        let request = Request::get(uri)
            .body(empty())
            .expect("a GET with a valid URI is valid");
        let response = self.send(request, HEALTH_TIMEOUT).await?;
        match response.status() {
            StatusCode::OK => Ok(()),
            status => Err(UpstreamError::Unhealthy(status)),
        }
    }

    /// Polls `GET /health` until it answers 200 or `within` has passed.
    ///
    /// # Errors
    /// The last failure, when the upstream never became healthy in time.
    pub async fn wait_healthy(&self, within: Duration) -> Result<(), UpstreamError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let error = match self.health().await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if tokio::time::Instant::now() + HEALTH_POLL_INTERVAL > deadline {
                return Err(error);
            }
            tracing::debug!(%error, "upstream not ready yet");
            tokio::time::sleep(HEALTH_POLL_INTERVAL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_queries_are_appended_to_the_base() {
        let up = Upstream::new(
            "http://127.0.0.1:8081".parse().unwrap(),
            Duration::from_secs(1),
        );
        let pq = PathAndQuery::from_static("/sig/rs:fit:10/plain/http://x/a%20b.jpg?x=1");
        assert_eq!(
            up.uri_for(Some(&pq)).to_string(),
            "http://127.0.0.1:8081/sig/rs:fit:10/plain/http://x/a%20b.jpg?x=1"
        );
        let up = Upstream::new(
            "http://10.0.0.1/imgproxy/".parse().unwrap(),
            Duration::from_secs(1),
        );
        assert_eq!(up.uri_for(Some(&pq)).authority().unwrap(), "10.0.0.1");
        assert!(up.uri_for(Some(&pq)).path().starts_with("/imgproxy/sig/"));
    }
}
