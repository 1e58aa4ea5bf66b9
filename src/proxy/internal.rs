//! The proxy's own endpoints, under a prefix that no imgproxy URL can use: imgproxy's first
//! segment is a signature and the rest must decode to a source URL, which `health` and
//! `metrics` never do.

use http::{Request, Response, StatusCode};

use super::handler::State;
use crate::body::{Body, Keep, uncached};

pub const PREFIX: &str = "/_imgproxy-cache/";
pub const HEALTH_PATH: &str = "/_imgproxy-cache/health";
pub const METRICS_PATH: &str = "/_imgproxy-cache/metrics";

pub fn is_internal(path: &str) -> bool {
    path.starts_with(PREFIX)
}

pub async fn handle<B>(request: &Request<B>, state: &State) -> Response<Body> {
    match request.uri().path() {
        HEALTH_PATH => health(state).await,
        METRICS_PATH => uncached(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Keep::Nothing,
            state.shared.metrics.encode(),
        ),
        _ => uncached(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            Keep::Nothing,
            "imgproxy-cache: no such endpoint\n",
        ),
    }
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
