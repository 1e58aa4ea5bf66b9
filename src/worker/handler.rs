//! One request: route it (health, HEAD, processing), and for a processing request run the
//! stages — parse and verify the path, check the source is allowed, take a place (429 when
//! none), download, wait for a CPU slot, process on a blocking thread — all within
//! `IMGPROXY_TIMEOUT` (503). [`Failure`] is the one place errors become statuses and bodies.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use subtle::ConstantTimeEq;

use super::capacity::{Capacity, Full};
use super::config::WorkerConfig;
use super::engine::{Deadline, EngineConfig};
use super::error::ParseError;
use super::fetch::{FetchError, Fetcher};
use super::process::{self, ProcessError};
use super::respond::{self, ImageHeaders, X_REQUEST_ID};
use super::url::parse_path;
use crate::body::{Body, empty, full};

/// imgproxy's health answer.
pub const HEALTH_BODY: &str = "imgproxy is running";

/// What every request needs, built once.
pub struct State {
    pub config: WorkerConfig,
    pub fetcher: Fetcher,
    pub capacity: Capacity,
    /// Shared with the blocking tasks.
    pub engine: Arc<EngineConfig>,
}

impl State {
    pub fn new(config: WorkerConfig, fetcher: Fetcher) -> State {
        let capacity = Capacity::new(config.server.max_in_flight, config.server.concurrency);
        let engine = Arc::new(config.processing.clone());
        State {
            config,
            fetcher,
            capacity,
            engine,
        }
    }
}

/// Why a processing request failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Parse(#[from] ParseError),
    #[error("{0}")]
    Fetch(#[from] FetchError),
    #[error("processing failed: {0}")]
    Process(#[from] ProcessError),
    #[error("missing or wrong Authorization (IMGPROXY_SECRET)")]
    Secret,
    #[error("every place is taken (IMGPROXY_MAX_CLIENTS / IMGPROXY_REQUESTS_QUEUE_SIZE)")]
    Full(#[from] Full),
    #[error("the request did not finish within {0:?} (IMGPROXY_TIMEOUT)")]
    Timeout(Duration),
    #[error("the processing task failed: {0}")]
    Crashed(String),
}

impl Failure {
    pub fn status(&self) -> u16 {
        match self {
            Failure::Parse(e) => e.status(),
            Failure::Fetch(e) => e.status(),
            Failure::Process(e) => e.status,
            Failure::Secret => 403,
            Failure::Full(_) => 429,
            Failure::Timeout(_) => 503,
            Failure::Crashed(_) => 500,
        }
    }

    /// The body: imgproxy's short public message, plus — for URL errors, which are the
    /// client's own doing — what exactly was wrong, so a bad option is named.
    pub fn public_message(&self) -> String {
        match self {
            Failure::Parse(ParseError::InvalidSignature(_)) | Failure::Secret => "Forbidden".into(),
            Failure::Parse(e) => format!("Invalid URL: {e}"),
            Failure::Fetch(e) => e.public_message().into(),
            Failure::Process(e) if e.status == 422 => format!("Invalid source image: {e}"),
            Failure::Process(_) | Failure::Crashed(_) => "Internal error".into(),
            Failure::Full(_) => "Too many requests".into(),
            Failure::Timeout(_) => "Request timed out".into(),
        }
    }
}

/// Entry point for every request on every connection.
pub async fn handle(
    request: Request<hyper::body::Incoming>,
    state: Arc<State>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let id = respond::request_id(request.headers().get(&X_REQUEST_ID));
    let mut response = route(&request, &state).await;
    let headers = response.headers_mut();
    if let Ok(id) = HeaderValue::from_str(&id) {
        headers.insert(X_REQUEST_ID, id);
    }
    if let Some(origin) = state
        .config
        .allow_origin
        .as_deref()
        .and_then(|o| HeaderValue::from_str(o).ok())
    {
        headers.insert("access-control-allow-origin", origin);
        headers.insert(
            "access-control-allow-methods",
            HeaderValue::from_static("GET, OPTIONS"),
        );
    }
    tracing::debug!(
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
        status = response.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    Ok(response)
}

async fn route(request: &Request<hyper::body::Incoming>, state: &Arc<State>) -> Response<Body> {
    let path = request.uri().path();
    let prefix = state.config.path_prefix.as_str();
    let under_prefix = path
        .strip_prefix(prefix)
        .is_some_and(|rest| rest.starts_with('/'));
    let method = request.method();
    if method == Method::GET
        && (path.strip_prefix(prefix) == Some("/health")
            || state.config.health_check_path.as_deref() == Some(path))
    {
        return health();
    }
    match *method {
        Method::HEAD | Method::OPTIONS if under_prefix => status_only(StatusCode::OK),
        Method::GET if path.strip_prefix(prefix) == Some("/favicon.ico") => respond::text(404, " "),
        Method::GET if path == prefix || path.strip_prefix(prefix) == Some("/") => landing(),
        Method::GET if under_prefix => match process_request(request, state).await {
            Ok(response) => response,
            Err(failure) => {
                let status = failure.status();
                if status >= 500 {
                    tracing::warn!(path, status, error = %failure, "request failed");
                } else {
                    tracing::info!(path, status, error = %failure, "request refused");
                }
                respond::text(status, &failure.public_message())
            }
        },
        _ => respond::text(404, " "),
    }
}

fn health() -> Response<Body> {
    Response::builder()
        .header(CONTENT_TYPE, "text/plain")
        .header(CACHE_CONTROL, "no-cache")
        .body(full(Bytes::from_static(HEALTH_BODY.as_bytes())))
        .expect("a static response is valid")
}

fn landing() -> Response<Body> {
    Response::builder()
        .header(CONTENT_TYPE, "text/html")
        .body(full(Bytes::from_static(
            b"<!doctype html><title>imgproxy-cache worker</title><p>imgproxy-compatible image server.</p>",
        )))
        .expect("a static response is valid")
}

fn status_only(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(empty());
    *response.status_mut() = status;
    response
}

async fn process_request(
    request: &Request<hyper::body::Incoming>,
    state: &Arc<State>,
) -> Result<Response<Body>, Failure> {
    let config = &state.config;
    if let Some(secret) = &config.secret {
        let expected = format!("Bearer {}", secret.0);
        let given = request
            .headers()
            .get(AUTHORIZATION)
            .map_or(&b""[..], HeaderValue::as_bytes);
        if !bool::from(given.ct_eq(expected.as_bytes())) {
            return Err(Failure::Secret);
        }
    }
    // `path()` is the raw path with the query already cut, exactly as imgproxy signs it.
    let path = &request.uri().path()[config.path_prefix.len()..];
    let now = unix_now();
    let parsed = parse_path(path, &config.parser, now)?;
    state.fetcher.check_allowed(&parsed.source)?;
    let admitted = state.capacity.admit()?;
    let accept = request
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);

    let timeout = config.server.timeout;
    let deadline = Deadline::at(Instant::now() + timeout);
    let work = async {
        let source = state.fetcher.fetch(&parsed.source).await?;
        let slot = admitted.cpu_slot().await;
        let engine = state.engine.clone();
        let input = process::Input {
            source,
            options: parsed.options.clone(),
            format: parsed.output_format,
            accept,
            deadline,
        };
        // The slot moves into the blocking task: it is released when the CPU work ends,
        // not when this request stops waiting for it — a freed slot would let more jobs
        // burn CPU than `IMGPROXY_CONCURRENCY` says. Instead the job gives up by itself at
        // the deadline, between stages (see engine::deadline); each stage is bounded by
        // the engine's limits.
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            process::run(input, &engine)
        })
        .await
        .map_err(|e| Failure::Crashed(e.to_string()))?
        .map_err(Failure::from)
    };
    let output = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| Failure::Timeout(timeout))??;

    let options = &parsed.options;
    Ok(respond::image(
        output.bytes,
        ImageHeaders {
            content_type: &output.content_type,
            content_disposition: respond::content_disposition(
                &options.filename,
                &parsed.source.url,
                output.extension,
                options.return_attachment,
            ),
            cache_control: respond::cache_control(config.server.ttl, options.expires, now),
            vary_accept: config.processing.negotiates_format(),
            processed: !options.raw,
        },
    ))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
