//! One request: forward it, stream the answer back, and copy what may be stored.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime};

use http::header::{CACHE_CONTROL, CONTENT_TYPE, RANGE};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::headers::{forwarded_for, strip_hop_by_hop};
use super::internal;
use super::tee::{ProxyBody, Tee, not_stored};
use super::upstream::{Upstream, UpstreamError};
use crate::body::{Body, full};
use crate::cache::policy::{self, Cacheable, NotCacheable};
use crate::cache::queue::UploadQueue;
use crate::cache::{Store, cache_key};
use crate::metrics::{Metrics, StatusLabel};
use crate::proxy::config::Config;

/// What every request needs, built once.
pub struct State {
    pub config: Config,
    pub upstream: Upstream,
    pub queue: Arc<UploadQueue>,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    /// Advice on a reason that may mean nothing gets stored is logged once per reason
    /// (across serving threads); the metric counts every case.
    hinted: Arc<Hinted>,
}

#[derive(Default)]
struct Hinted {
    vary: AtomicBool,
    short_lived: AtomicBool,
}

impl State {
    pub fn new(
        config: Config,
        queue: Arc<UploadQueue>,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
    ) -> State {
        let upstream = Upstream::new(config.upstream.clone(), config.upstream_timeout);
        State {
            config,
            upstream,
            queue,
            store,
            metrics,
            hinted: Arc::default(),
        }
    }

    /// The same state with an upstream connection pool of its own, for one serving thread.
    pub fn for_thread(&self) -> State {
        State {
            config: self.config.clone(),
            upstream: Upstream::new(self.config.upstream.clone(), self.config.upstream_timeout),
            queue: self.queue.clone(),
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            hinted: self.hinted.clone(),
        }
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
    let method = request.method().clone();
    let ranged = request.headers().contains_key(RANGE);
    let key = cache_key(&state.config.key_prefix, request.uri().path());
    strip_hop_by_hop(request.headers_mut());
    forwarded_for(
        request.headers_mut(),
        client.ip(),
        &state.config.trusted_proxies,
    );

    let started = Instant::now();
    let upstream = state.upstream.forward(request).await;
    state
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
            return plain(status, "imgproxy-cache: the image server is unavailable\n");
        }
    };

    let (mut parts, body) = response.into_parts();
    // Decided before the hop-by-hop headers go: the body's framing is one of them.
    let verdict = policy::decide(
        &method,
        ranged,
        parts.status,
        &parts.headers,
        &state.config.store,
        SystemTime::now(),
    );
    strip_hop_by_hop(&mut parts.headers);
    let tee = match verdict {
        Cacheable::Yes { expected_len } => match state.queue.reserve(&key, expected_len) {
            // Stored already, being copied or uploaded by another request, or no room to
            // hold it: stream without copying.
            Err(early) => {
                state.queue.record(&key, early);
                None
            }
            Ok(reservation) => Some(Tee::new(
                key,
                header_string(&parts.headers, &CONTENT_TYPE).unwrap_or_default(),
                header_string(&parts.headers, &CACHE_CONTROL),
                expected_len,
                state.config.store.max_bytes,
                reservation,
                state.queue.clone(),
                state.metrics.clone(),
            )),
        },
        Cacheable::No(reason) => {
            refused(state, &key, reason);
            None
        }
    };
    let body = ProxyBody::new(body, state.config.upstream_timeout, tee);
    Response::from_parts(parts, body.boxed())
}

fn refused(state: &State, key: &str, reason: NotCacheable) {
    if reason == NotCacheable::Vary {
        state.metrics.upload("skipped_vary");
        if !state.hinted.vary.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                %key,
                "the upstream answered with `Vary: Accept` (IMGPROXY_AUTO_WEBP/AVIF or \
                 ENFORCE_*): such results are never stored; put the format in the URL \
                 (`@webp`, `.avif`, `f:webp`) to make them cacheable"
            );
        }
    }
    if reason == NotCacheable::ShortLived && !state.hinted.short_lived.swap(true, Ordering::Relaxed)
    {
        tracing::warn!(
            %key,
            min_secs = state.config.store.min_max_age.as_secs(),
            "a result allowed to live less than MIN_STORE_MAX_AGE_SECS was not stored (an \
             `expires` URL, or a short IMGPROXY_TTL); lower the setting if short-lived \
             results may stay in the bucket for good"
        );
    }
    not_stored(&state.metrics, key, reason);
}

fn header_string(headers: &http::HeaderMap, name: &http::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A short text answer of our own (never from the upstream), not to be cached anywhere.
pub fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(CACHE_CONTROL, "no-store")
        .body(full(text))
        .expect("static headers are valid")
}
