//! The proxy server: accept loop, graceful shutdown, and the upload drain that follows it.

pub mod config;
pub mod conn;
pub mod handler;
pub mod headers;
pub mod internal;
pub mod tee;
pub mod threads;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::cache::Store;
use crate::cache::queue::{DrainReport, UploadQueue};
use crate::metrics::Metrics;
use crate::proxy::config::Config;
use conn::{Answered, ClientIo, IdlePool, Tracker};
use handler::State;
use threads::ServeThreads;

/// Most a client connection buffers: the largest request head it accepts, and the response
/// bytes queued for a client that is slow to take them (hyper's default is ~400 KiB).
pub const CLIENT_BUFFER_MAX: usize = 64 * 1024;
/// Pause after a failed `accept` (e.g. out of file descriptors) before the next one.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves the proxy on `listener` until `shutdown` completes, then finishes in-flight requests
/// and drains the upload queue, all within `SHUTDOWN_TIMEOUT_SECS`.
///
/// Clients speak HTTP/1.1 (or 1.0) only. Browsers never send HTTP/2 without TLS, and the
/// fronts this runs behind (Fly.io's edge, AWS load balancers, CDNs) speak HTTP/1.1 to their
/// backends by default; without h2c there are no stream floods, resets or idle streams to
/// bound, and every connection follows the one cycle [`conn`] puts deadlines on.
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
    let idle = Arc::new(IdlePool::new(config.max_connections));
    let timeouts = config.client;
    let state = State::new(config, Arc::new(queue), store, metrics.clone());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut threads = ServeThreads::start(cores, state);

    let mut builder = http1::Builder::new();
    // `conn` enforces the head deadline itself; hyper's would also cut idle keep-alives.
    builder
        .header_read_timeout(None)
        .max_buf_size(CLIENT_BUFFER_MAX);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);

    loop {
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
        let permit = match connections.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // Every place is taken: the longest-waiting idle connection makes room, if
                // there is one; otherwise the first connection to end does.
                idle.evict_oldest();
                tokio::select! {
                    () = &mut shutdown => break,
                    permit = connections.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                }
            }
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
        let tracker = Arc::new(Tracker::new(idle.clone(), timeouts, metrics.clone()));
        thread.spawn(async move {
            let stream = match tokio::net::TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(%error, %client, "connection could not be served");
                    return;
                }
            };
            let io = TokioIo::new(ClientIo::new(stream, tracker.clone()));
            let answered = tracker.clone();
            let service = service_fn(move |request| {
                answered.busy();
                let (state, answered) = (state.clone(), answered.clone());
                async move {
                    let response = handler::handle(request, state, client).await?;
                    Ok::<_, std::convert::Infallible>(
                        response.map(|body| Answered::new(body, answered)),
                    )
                }
            });
            let connection = watcher.watch(builder.serve_connection(io, service));
            tokio::pin!(connection);
            let ended = loop {
                tokio::select! {
                    ended = &mut connection => break ended,
                    // A request that began just as its place was asked for is still served.
                    () = tracker.evicted() => if tracker.give_up_place() {
                        break Ok(());
                    },
                }
            };
            if let Err(error) = ended {
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
