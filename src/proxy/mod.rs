//! The proxy server: accept loop, graceful shutdown, and the upload drain that follows it.

pub mod handler;
pub mod headers;
pub mod internal;
pub mod tee;
pub mod threads;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::cache::Store;
use crate::cache::queue::{DrainReport, UploadQueue};
use crate::config::Config;
use crate::metrics::Metrics;
use handler::State;
use threads::ServeThreads;

/// Time a client gets to send a complete request head (slow-loris guard).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed `accept` (e.g. out of file descriptors) before the next one.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves the proxy on `listener` until `shutdown` completes, then finishes in-flight requests
/// and drains the upload queue, all within `SHUTDOWN_TIMEOUT_SECS`.
///
/// Returns what the drain left undone.
pub async fn run(
    listener: TcpListener,
    config: Config,
    store: Arc<dyn Store>,
    shutdown: impl Future<Output = ()>,
) -> DrainReport {
    let metrics = Arc::new(Metrics::new());
    let (queue, uploader) =
        UploadQueue::start(store.clone(), config.upload.clone(), metrics.clone());
    let shutdown_timeout = config.shutdown_timeout;
    let connections = Arc::new(Semaphore::new(config.max_connections));
    let state = State::new(config, Arc::new(queue), store, metrics);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut threads = ServeThreads::start(cores, state);

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
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
        // The socket moves to the serving thread's own I/O driver.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%error, %client, "connection lost before it was handed over");
                continue;
            }
        };
        let (thread, state) = threads.pick();
        let state = state.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        thread.spawn(async move {
            let stream = match tokio::net::TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(%error, %client, "connection could not be served");
                    return;
                }
            };
            let service =
                service_fn(move |request| handler::handle(request, state.clone(), client));
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%error, %client, "connection ended with an error");
            }
            drop(permit);
        });
    }

    drop(listener);
    tracing::info!("shutting down: finishing requests, then pending uploads");
    let deadline = tokio::time::Instant::now() + shutdown_timeout;
    if tokio::time::timeout_at(deadline, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still open at the shutdown deadline were cut");
    }
    drop(threads);
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let report = uploader.drain(left).await;
    if report.abandoned > 0 {
        tracing::warn!(
            abandoned = report.abandoned,
            "uploads left undone at shutdown"
        );
    } else {
        tracing::info!("all uploads finished");
    }
    report
}
