//! One request: ask the cache, forward what it can't answer, stream the answer back.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::RANGE;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::headers::{forwarded_for, strip_hop_by_hop};
use super::internal;
use super::metrics::{Metrics, StatusLabel};
use super::relay::ProxyBody;
use super::upstream::{Upstream, UpstreamError};
use crate::body::{Body, Keep, uncached};
use crate::cache::{Cache, Lookup};
use crate::proxy::config::Config;

/// What a serving thread answers requests with: the process-wide part, and an upstream
/// connection pool of the thread's own.
pub struct State {
    pub shared: Arc<Shared>,
    pub upstream: Upstream,
}

/// What every serving thread shares, built once.
pub struct Shared {
    pub config: Config,
    pub cache: Arc<Cache>,
    pub metrics: Arc<Metrics>,
}

impl State {
    pub fn new(config: Config, cache: Arc<Cache>, metrics: Arc<Metrics>) -> State {
        let shared = Shared {
            config,
            cache,
            metrics,
        };
        State::with_pool(Arc::new(shared))
    }

    /// The same shared state with an upstream connection pool of its own, for one serving
    /// thread.
    pub fn for_thread(&self) -> State {
        State::with_pool(self.shared.clone())
    }

    fn with_pool(shared: Arc<Shared>) -> State {
        let upstream = Upstream::new(
            shared.config.upstream.clone(),
            shared.config.upstream_timeout,
        );
        State { shared, upstream }
    }
}

pub async fn handle(
    request: Request<Incoming>,
    state: Arc<State>,
    client: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    if internal::is_internal(request.uri().path()) {
        // Not counted: scrapes and health probes would drown the traffic they measure.
        return Ok(internal::handle(&request, &state).await);
    }
    let response = forward(request, &state, client).await;
    state
        .shared
        .metrics
        .requests
        .get_or_create(&StatusLabel {
            status: response.status().as_u16(),
        })
        .inc();
    Ok(response)
}

async fn forward(
    mut request: Request<Incoming>,
    state: &State,
    client: SocketAddr,
) -> Response<Body> {
    let shared = &state.shared;
    let ranged = request.headers().contains_key(RANGE);
    let Lookup::Miss(miss) = shared
        .cache
        .lookup(request.method(), request.uri().path(), ranged);
    strip_hop_by_hop(request.headers_mut());
    forwarded_for(
        request.headers_mut(),
        client.ip(),
        &shared.config.trusted_proxies,
    );

    let started = Instant::now();
    let upstream = state.upstream.forward(request).await;
    shared
        .metrics
        .upstream_latency
        .observe(started.elapsed().as_secs_f64());
    let response = match upstream {
        Ok(response) => response,
        Err(error) => {
            tracing::warn!(%error, upstream = %state.upstream.base(), "upstream request failed");
            let status = match error {
                UpstreamError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::BAD_GATEWAY,
            };
            return uncached(
                status,
                "text/plain; charset=utf-8",
                Keep::Nothing,
                "imgproxy-cache: the image server is unavailable\n",
            );
        }
    };

    let (mut parts, body) = response.into_parts();
    let verdict = miss.decide(parts.status, &parts.headers, SystemTime::now());
    strip_hop_by_hop(&mut parts.headers);
    let fill = verdict.fill(&parts.headers);
    let body = ProxyBody::new(body, shared.config.upstream_timeout, fill);
    Response::from_parts(parts, body.boxed())
}
