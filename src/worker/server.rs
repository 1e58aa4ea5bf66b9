//! The worker's server: the sources its config enables, its hyper builder and its connection
//! limit, on the shared server kit ([`crate::server`]), which finishes in-flight requests
//! within `IMGPROXY_GRACEFUL_STOP_TIMEOUT` at shutdown.

use std::future::Future;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use super::config::WorkerConfig;
use super::fetch::Fetcher;
use super::fetch::s3::S3Source;
use super::handler::{self, State};
use crate::server::{self, Accepted, Limits, WhenFull};

/// Open connections never fall below this, however small `IMGPROXY_MAX_CLIENTS` is.
const MIN_CONNECTIONS: usize = 64;

/// Serves the worker on `listener` until `shutdown` completes, with the sources `config`
/// enables (the S3 client from the AWS default credential chain).
pub async fn run(listener: TcpListener, config: WorkerConfig, shutdown: impl Future<Output = ()>) {
    let s3 = match &config.fetch.s3 {
        Some(s3) => Some(S3Source::from_config(s3, &config.fetch).await),
        None => None,
    };
    let fetcher = Fetcher::new(&config.fetch, s3);
    run_with(listener, config, fetcher, shutdown).await;
}

/// [`run`] with a fetcher built by the caller (tests bring an S3 client with static
/// credentials).
pub async fn run_with(
    listener: TcpListener,
    config: WorkerConfig,
    fetcher: Fetcher,
    shutdown: impl Future<Output = ()>,
) {
    // More connections than request places, so a client beyond the limit gets a quick 429
    // instead of waiting unseen in the backlog; still bounded.
    let limits = Limits {
        max_connections: config
            .server
            .max_in_flight
            .saturating_mul(2)
            .max(MIN_CONNECTIONS),
        when_full: WhenFull::Wait,
        stop_timeout: config.server.graceful_stop_timeout,
        stop_setting: "IMGPROXY_GRACEFUL_STOP_TIMEOUT",
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.server.read_request_timeout);
    let state = Arc::new(State::new(config, fetcher));
    server::serve(listener, limits, shutdown, |accepted: Accepted, tasks| {
        let state = state.clone();
        let service = service_fn(move |request| handler::handle(request, state.clone()));
        let connection = builder
            .serve_connection(TokioIo::new(accepted.stream), service)
            .into_owned();
        tasks.spawn(
            accepted
                .place
                .serve(connection, std::future::pending::<()>()),
        );
    })
    .await;
}
