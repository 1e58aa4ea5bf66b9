//! The proxy's own endpoints, under a prefix that no imgproxy URL can use: imgproxy's first
//! segment is a signature and the rest must decode to a source URL, which `health`,
//! `metrics` and `cache` never do.
//!
//! - `GET /_imgproxy-cache/health`, `GET /_imgproxy-cache/metrics`: open.
//! - `DELETE /_imgproxy-cache/cache/<request path>`: purges the result of `<request path>`
//!   (the path as the client sent it to the proxy, without the query) from every tier and the
//!   bucket. Only with `Authorization: Bearer <ADMIN_TOKEN>`; without a configured token the
//!   endpoint answers 404, as if it did not exist.

use http::header::{ALLOW, AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use subtle::ConstantTimeEq;

use super::handler::State;
use crate::body::{Body, Keep, uncached};

pub const PREFIX: &str = "/_imgproxy-cache/";
pub const HEALTH_PATH: &str = "/_imgproxy-cache/health";
pub const METRICS_PATH: &str = "/_imgproxy-cache/metrics";
/// The purge endpoint: this prefix, then the request path to purge.
pub const CACHE_PATH: &str = "/_imgproxy-cache/cache/";

pub fn is_internal(path: &str) -> bool {
    path.starts_with(PREFIX)
}

pub async fn handle<B>(request: &Request<B>, state: &State) -> Response<Body> {
    match request.uri().path() {
        HEALTH_PATH => health(state).await,
        METRICS_PATH => {
            state.shared.cache.record_usage();
            uncached(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                Keep::Nothing,
                state.shared.metrics.encode(),
            )
        }
        path if path.starts_with(CACHE_PATH) && state.shared.config.admin_token.is_some() => {
            purge(request, state).await
        }
        _ => not_found(),
    }
}

fn not_found() -> Response<Body> {
    uncached(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        Keep::Nothing,
        "imgproxy-cache: no such endpoint\n",
    )
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    uncached(status, "text/plain; charset=utf-8", Keep::Nothing, body)
}

/// Whether `request` carries `Authorization: Bearer <token>`, compared in constant time.
fn authorized<B>(request: &Request<B>, token: &str) -> bool {
    let Some(given) = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
    else {
        return false;
    };
    bool::from(given.ct_eq(token.as_bytes()))
}

/// `DELETE /_imgproxy-cache/cache/<path>`: what was removed, per tier, as JSON; 502 when a
/// tier could not be asked (it may still hold the result).
async fn purge<B>(request: &Request<B>, state: &State) -> Response<Body> {
    let Some(token) = &state.shared.config.admin_token else {
        return not_found();
    };
    if !authorized(request, &token.0) {
        let mut response = text(
            StatusCode::UNAUTHORIZED,
            "imgproxy-cache: a valid Authorization: Bearer token is needed\n",
        );
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    if request.method() != Method::DELETE {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "imgproxy-cache: purge with DELETE\n",
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("DELETE"));
        return response;
    }
    // Keep the `/` that starts the purged path.
    let path = &request.uri().path()[CACHE_PATH.len() - 1..];
    let purged = state.shared.cache.purge(path).await;
    let tier = |result: &Option<Result<bool, crate::cache::store::StoreError>>| match result {
        None => serde_json::Value::Null,
        Some(Ok(removed)) => serde_json::Value::Bool(*removed),
        Some(Err(error)) => serde_json::Value::String(error.to_string()),
    };
    let failed = [&purged.disk, &purged.bucket]
        .iter()
        .any(|r| matches!(r, Some(Err(_))));
    tracing::info!(keys = ?purged.keys, %path, "purged");
    let body = serde_json::json!({
        "path": path,
        "key": purged.keys[0],
        "keys": purged.keys,
        "memory": purged.memory,
        "disk": tier(&purged.disk),
        "bucket": tier(&purged.bucket),
    })
    .to_string();
    let status = if failed {
        StatusCode::BAD_GATEWAY
    } else {
        StatusCode::OK
    };
    uncached(status, "application/json", Keep::Nothing, body)
}

/// 200 when the upstream answers its own health check, 503 otherwise; the body says which
/// part is unwell so an operator needs no second request.
async fn health(state: &State) -> Response<Body> {
    let upstream = state.upstream.health().await;
    let status = if upstream.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "proxy": "ok",
        "upstream": match upstream {
            Ok(()) => "ok".to_owned(),
            Err(e) => e.to_string(),
        },
        "store": state.shared.cache.describe(),
        "upload_queue": state.shared.cache.pending(),
    })
    .to_string();
    uncached(status, "application/json", Keep::Nothing, body)
}
