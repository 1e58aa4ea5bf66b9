//! The proxy server on the shared server kit ([`crate::server`]): connections go to the
//! per-core threads with their deadlines, and the upload drain follows the shutdown.

pub mod config;
pub mod conn;
pub mod handler;
pub mod headers;
pub mod hit;
pub mod internal;
pub mod metrics;
pub mod relay;
pub mod threads;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::cache::{Cache, DrainReport, Stores};
use crate::proxy::config::Config;
use crate::server::{self, Accepted, Limits, WhenFull};
use conn::{Answered, ClientIo, IdlePool, Tracker};
use handler::State;
use metrics::Metrics;
use threads::ServeThreads;

/// Most a client connection buffers: the largest request head it accepts, and the response
/// bytes queued for a client that is slow to take them (hyper's default is ~400 KiB).
pub const CLIENT_BUFFER_MAX: usize = 64 * 1024;

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
    stores: impl Into<Stores>,
    shutdown: impl Future<Output = ()>,
) -> DrainReport {
    let metrics = Arc::new(Metrics::new());
    let (cache, uploader) = Cache::start(
        stores.into(),
        config.key_prefix.clone(),
        config.negotiation.clone(),
        config.store,
        config.read.clone(),
        config.upload.clone(),
        metrics.cache.clone(),
    );
    let idle = Arc::new(IdlePool::new(config.max_connections));
    let evict = idle.clone();
    let limits = Limits {
        max_connections: config.max_connections,
        when_full: WhenFull::MakeRoom(Box::new(move || {
            evict.evict_oldest();
        })),
        stop_timeout: config.shutdown_timeout,
        stop_setting: "SHUTDOWN_TIMEOUT_SECS",
    };
    let timeouts = config.client;
    let state = State::new(config, cache, metrics.clone());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut threads = ServeThreads::start(cores, state);

    let mut builder = http1::Builder::new();
    // `conn` enforces the head deadline itself; hyper's would also cut idle keep-alives.
    builder
        .header_read_timeout(None)
        .max_buf_size(CLIENT_BUFFER_MAX);

    let start = |accepted: Accepted, tasks: &tokio_util::task::TaskTracker| {
        let Accepted {
            stream,
            peer: client,
            place,
        } = accepted;
        // The socket moves to the serving thread's own I/O driver.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%error, %client, "connection lost before it was handed over");
                return;
            }
        };
        let (thread, state) = threads.pick();
        let state = state.clone();
        let builder = builder.clone();
        let tracker = Arc::new(Tracker::new(idle.clone(), timeouts, metrics.clone()));
        let connection = async move {
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
            // A request that began just as its place was asked for is still served.
            let evicted = async {
                loop {
                    tracker.evicted().await;
                    if tracker.give_up_place() {
                        return;
                    }
                }
            };
            place
                .serve(builder.serve_connection(io, service), evicted)
                .await;
        };
        tasks.spawn_on(connection, thread);
    };
    let stopped = server::serve(listener, limits, shutdown, start).await;
    drop(threads);
    let left = stopped
        .deadline
        .saturating_duration_since(tokio::time::Instant::now());
    let report = uploader.drain(left).await;
    if report.abandoned > 0 {
        tracing::warn!(
            abandoned = report.abandoned,
            kept_in_spool = report.kept,
            "uploads left undone at shutdown"
        );
    } else if report.kept > 0 {
        tracing::info!(
            kept_in_spool = report.kept,
            "uploads not finished are kept in the spool for the next start"
        );
    } else {
        tracing::info!("all uploads finished");
    }
    report
}
