//! One request: ask the cache, forward what it can't answer, stream the answer back.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{ACCEPT, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, RANGE, VARY};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyDataStream, BodyExt, Empty};
use hyper::body::Incoming;

use super::headers::{forwarded_for, strip_hop_by_hop};
use super::hit::{self, Served, Source, X_CACHE};
use super::internal;
use super::metrics::{Metrics, StatusLabel};
use super::relay::ProxyBody;
use super::upstream::{Upstream, UpstreamError};
use crate::body::{Body, Keep, uncached};
use crate::cache::variant::Variant;
use crate::cache::{Attached, Cache, Freshness, Joined, Lookup, Reply, Tier, freshness};
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
    let variant = shared
        .cache
        .variant(request.uri().path(), request.headers().get(ACCEPT));
    let lookup = shared
        .cache
        .lookup(request.method(), request.uri().path(), variant, ranged)
        .await;
    let miss = match lookup {
        Lookup::Hit(hit) => {
            let object = &hit.object;
            let served = match hit.freshness {
                Freshness::Fresh => Served::Hit(Tier::Memory),
                Freshness::Stale => {
                    refresh(&request, state, client, variant);
                    Served::Stale(Tier::Memory)
                }
            };
            let plan = hit::plan(
                request.method(),
                request.headers(),
                &object.meta,
                object.len(),
                SystemTime::now(),
                served,
            );
            return labelled(
                hit::respond(plan, Source::Memory(object.body.clone())),
                served,
                variant,
            );
        }
        Lookup::Stored(attached, tier) => {
            let served = stored(&request, state, client, &attached, tier, variant);
            let response = answer(request.method(), request.headers(), attached, served);
            return labelled(response, served, variant);
        }
        Lookup::Join(joining) => match joining.attach().await {
            Joined::Attached(attached, tier) => {
                let served = stored(&request, state, client, &attached, tier, variant);
                let response = answer(request.method(), request.headers(), attached, served);
                return labelled(response, served, variant);
            }
            Joined::Coalesced(attached) => {
                let served = Served::Coalesced;
                let response = answer(request.method(), request.headers(), attached, served);
                return labelled(response, served, variant);
            }
            Joined::Miss(miss) => miss,
        },
        Lookup::Miss(miss) => miss,
    };
    let looked_up = matches!(*request.method(), Method::GET | Method::HEAD);
    let x_cache = if looked_up {
        Served::Miss
    } else {
        Served::Bypass
    };
    // The upstream renders for the request's class, so the result is what its key promises.
    if looked_up && let Some(accept) = variant.accept() {
        request.headers_mut().insert(ACCEPT, accept);
    }
    // A leader asks for the whole result, which its followers share; the client's own
    // conditions are answered from the flight.
    let asked = miss.leads().then(|| {
        let asked = Asked::of(&request);
        for name in [RANGE, IF_RANGE, IF_NONE_MATCH, IF_MODIFIED_SINCE] {
            request.headers_mut().remove(name);
        }
        asked
    });
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
    let timeout = shared.config.upstream_timeout;
    match verdict.reply(&parts.headers) {
        Reply::Direct(fill) => {
            let body = ProxyBody::new(body, timeout, fill);
            let response = Response::from_parts(parts, body.boxed());
            let variant = if looked_up { variant } else { Variant::Fixed };
            labelled(response, x_cache, variant)
        }
        Reply::Shared(pump) => {
            let attached = pump.attached();
            tokio::spawn(pump.run(BodyDataStream::new(ProxyBody::new(body, timeout, None))));
            let asked = asked.expect("only a leader's answer is shared");
            let response = answer(&asked.method, &asked.headers, attached, Served::Miss);
            labelled(response, Served::Miss, variant)
        }
    }
}

/// How an answer from a tier below memory is served: a stale one starts its refresh.
fn stored(
    request: &Request<Incoming>,
    state: &State,
    client: SocketAddr,
    attached: &Attached,
    tier: Tier,
    variant: Variant,
) -> Served {
    match freshness(&attached.meta, SystemTime::now()) {
        Freshness::Fresh => Served::Hit(tier),
        Freshness::Stale => {
            refresh(request, state, client, variant);
            Served::Stale(tier)
        }
    }
}

/// Renders a stale result again in the background (unless that is under way already): the
/// client was served the stale one, which keeps being served while this runs, and stays if
/// the upstream fails.
fn refresh(request: &Request<Incoming>, state: &State, client: SocketAddr, variant: Variant) {
    let shared = &state.shared;
    let Some(miss) = shared.cache.refresh(request.uri().path(), variant) else {
        return;
    };
    let mut renew = Request::new(Empty::<Bytes>::new());
    *renew.uri_mut() = request.uri().clone();
    *renew.headers_mut() = request.headers().clone();
    for name in [RANGE, IF_RANGE, IF_NONE_MATCH, IF_MODIFIED_SINCE] {
        renew.headers_mut().remove(name);
    }
    if let Some(accept) = variant.accept() {
        renew.headers_mut().insert(ACCEPT, accept);
    }
    strip_hop_by_hop(renew.headers_mut());
    forwarded_for(
        renew.headers_mut(),
        client.ip(),
        &shared.config.trusted_proxies,
    );
    let upstream = state.upstream.clone();
    let timeout = shared.config.upstream_timeout;
    tokio::spawn(async move {
        let response = match upstream.forward(renew).await {
            Ok(response) => response,
            Err(error) => {
                tracing::warn!(%error, "the refresh of a stale result failed; it stays");
                return;
            }
        };
        let (mut parts, body) = response.into_parts();
        let verdict = miss.decide(parts.status, &parts.headers, SystemTime::now());
        strip_hop_by_hop(&mut parts.headers);
        // No leader, so never shared: the copy is made as the body is read to its end.
        if let Reply::Direct(fill) = verdict.reply(&parts.headers) {
            let _ = ProxyBody::new(body, timeout, fill).collect().await;
        }
    });
}

/// What of a request an answer from a flight depends on, kept when the request itself goes
/// to the upstream.
struct Asked {
    method: Method,
    /// The conditions: `Range`, `If-Range`, `If-None-Match`.
    headers: HeaderMap,
}

impl Asked {
    fn of(request: &Request<Incoming>) -> Asked {
        let mut headers = HeaderMap::new();
        for name in [RANGE, IF_RANGE, IF_NONE_MATCH] {
            for value in request.headers().get_all(&name) {
                headers.append(name.clone(), value.clone());
            }
        }
        Asked {
            method: request.method().clone(),
            headers,
        }
    }
}

/// Answers from a flight: a render in progress, or a store's object as it is read.
fn answer(
    method: &Method,
    request: &HeaderMap,
    attached: Attached,
    served: Served,
) -> Response<Body> {
    let plan = hit::plan(
        method,
        request,
        &attached.meta,
        attached.len,
        SystemTime::now(),
        served,
    );
    hit::respond(plan, Source::Stream(attached.body))
}

/// Says how the answer was served (`X-Cache`, with the `Accept` class when formats are
/// negotiated, e.g. `HIT memory; variant=avif-webp`) and, as the upstream does then, that it
/// varies with `Accept`.
fn labelled(mut response: Response<Body>, served: Served, variant: Variant) -> Response<Body> {
    let headers = response.headers_mut();
    match variant.class() {
        None => {
            headers.insert(X_CACHE, HeaderValue::from_static(served.x_cache()));
        }
        Some(class) => {
            let value = format!("{served}; variant={}", class.name());
            headers.insert(
                X_CACHE,
                HeaderValue::from_str(&value).expect("names are plain ASCII"),
            );
            if !headers.get_all(VARY).iter().any(|v| {
                v.to_str().is_ok_and(|v| {
                    v.split(',')
                        .any(|t| t.trim().eq_ignore_ascii_case("accept"))
                })
            }) {
                headers.append(VARY, HeaderValue::from_static("Accept"));
            }
        }
    }
    response
}
