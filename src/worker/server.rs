//! The worker's server loop: accept connections on an already-bound listener, serve each
//! with hyper, and on shutdown finish in-flight requests within
//! `IMGPROXY_GRACEFUL_STOP_TIMEOUT`. Every connection task belongs to one [`TaskTracker`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::config::WorkerConfig;
use super::fetch::Fetcher;
use super::fetch::s3::S3Source;
use super::handler::{self, State};

/// Pause after a failed `accept` (e.g. out of file descriptors) before the next one.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
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
    let stop_timeout = config.server.graceful_stop_timeout;
    // More connections than request places, so a client beyond the limit gets a quick 429
    // instead of waiting unseen in the backlog; still bounded.
    let connections = Arc::new(Semaphore::new(
        config
            .server
            .max_in_flight
            .saturating_mul(2)
            .max(MIN_CONNECTIONS),
    ));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.server.read_request_timeout);
    let state = Arc::new(State::new(config, fetcher));
    let graceful = GracefulShutdown::new();
    let tasks = TaskTracker::new();
    tokio::pin!(shutdown);

    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = connections.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let (stream, client) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let service = service_fn(move |request| handler::handle(request, state.clone()));
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tasks.spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %client, "connection ended with an error");
            }
            drop(permit);
        });
    }

    drop(listener);
    tracing::info!("shutting down: finishing requests in flight");
    tasks.close();
    let finished = async {
        graceful.shutdown().await;
        tasks.wait().await;
    };
    if tokio::time::timeout(stop_timeout, finished).await.is_err() {
        tracing::warn!("requests still open at IMGPROXY_GRACEFUL_STOP_TIMEOUT were cut");
    } else {
        tracing::info!("all requests finished");
    }
}
