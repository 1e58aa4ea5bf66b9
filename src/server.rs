//! The one server kit, for the proxy and the worker: accept on an already-bound listener
//! within a bounded number of places, hand each connection to the caller, and on shutdown
//! let every connection finish its request within a deadline.
//!
//! Every connection task is spawned through the kit's [`TaskTracker`], so "all connections
//! ended" is something shutdown waits for, not something it hopes for. Where a task runs
//! is the caller's choice: the worker serves on the runtime that accepts, the proxy on its
//! per-core threads ([`crate::proxy::threads`]).

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::server::graceful::{GracefulConnection, GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

/// Pause after a failed `accept` (e.g. out of file descriptors) before the next one.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// What the accept loop does once every place is taken.
pub enum WhenFull {
    /// Accept nobody until a connection ends: newcomers wait in the listen backlog. The
    /// worker keeps more places than request slots, so a client past the limit still gets
    /// in quickly and is told 429.
    Wait,
    /// Accept the newcomer, ask `make_room` to free a place, and serve it once one is free.
    /// The proxy closes its longest-idle connection, as nginx reuses idle keep-alives, so
    /// silent sockets cannot lock anyone out.
    MakeRoom(Box<dyn Fn() + Send + Sync>),
}

/// How a server admits connections and how long it gives them at shutdown.
pub struct Limits {
    /// Most connections open at once.
    pub max_connections: usize,
    pub when_full: WhenFull,
    /// Time from the shutdown signal for open requests to finish.
    pub stop_timeout: Duration,
    /// The setting `stop_timeout` comes from, for the log line when it runs out.
    pub stop_setting: &'static str,
}

/// One accepted connection (`TCP_NODELAY` set), and the place it holds.
pub struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub place: Place,
}

/// A connection's place in `max_connections` and its part in graceful shutdown.
pub struct Place {
    permit: OwnedSemaphorePermit,
    watcher: Watcher,
    peer: SocketAddr,
}

impl Place {
    /// Serves `connection` until it ends, or until `cut` resolves (the connection is closed
    /// then); on shutdown it finishes the request in progress and closes. The place is free
    /// again when this returns.
    pub fn serve<C>(
        self,
        connection: C,
        cut: impl Future<Output = ()> + Send,
    ) -> impl Future<Output = ()> + Send
    where
        C: GracefulConnection + Send,
        C::Error: Display,
    {
        // Watched here, not in the returned future: the watch starts at once.
        let connection = self.watcher.watch(connection);
        let (permit, peer) = (self.permit, self.peer);
        async move {
            tokio::select! {
                ended = connection => if let Err(error) = ended {
                    tracing::debug!(%error, client = %peer, "connection ended with an error");
                },
                () = cut => {}
            }
            drop(permit);
        }
    }
}

/// How shutdown went.
pub struct Stopped {
    /// When the time for requests ran out or will: what is left of it belongs to the caller's
    /// own clean-up (the proxy's upload drain).
    pub deadline: Instant,
}

/// Accepts on `listener` until `shutdown` completes, giving each connection to `start`, which
/// spawns its task through the tracker it is given (on whichever runtime it likes). Then
/// waits, within `limits.stop_timeout`, for every such task to end.
pub async fn serve<F>(
    listener: TcpListener,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    mut start: F,
) -> Stopped
where
    F: FnMut(Accepted, &TaskTracker),
{
    let places = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let tasks = TaskTracker::new();
    tokio::pin!(shutdown);

    loop {
        let waited = match limits.when_full {
            WhenFull::Wait => Some(tokio::select! {
                () = &mut shutdown => break,
                permit = places.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            }),
            WhenFull::MakeRoom(_) => None,
        };
        let (stream, peer) = tokio::select! {
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
        let permit = match waited {
            Some(permit) => permit,
            None => match places.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    if let WhenFull::MakeRoom(make_room) = &limits.when_full {
                        make_room();
                    }
                    // A place frees when the evicted connection closes, or any other ends.
                    tokio::select! {
                        () = &mut shutdown => break,
                        permit = places.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                    }
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let place = Place {
            permit,
            watcher: graceful.watcher(),
            peer,
        };
        start(
            Accepted {
                stream,
                peer,
                place,
            },
            &tasks,
        );
    }

    drop(listener);
    tracing::info!("shutting down: finishing requests in flight");
    let deadline = Instant::now() + limits.stop_timeout;
    tasks.close();
    let finished = async {
        graceful.shutdown().await;
        tasks.wait().await;
    };
    if tokio::time::timeout_at(deadline, finished).await.is_err() {
        tracing::warn!("requests still open at {} were cut", limits.stop_setting);
    } else {
        tracing::info!("all requests finished");
    }
    Stopped { deadline }
}
