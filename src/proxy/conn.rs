//! One client connection's clock: deadlines a client cannot stretch, and a place in
//! `MAX_CONNECTIONS` that an idle connection gives up when a new client needs it.
//!
//! The proxy speaks HTTP/1.1 only (see [`super::run`]), so a connection is a plain cycle of
//! request head, response, idle. Each phase has its own limit, enforced on the socket by
//! [`ClientIo`]:
//! - a new connection must send its whole first request head within
//!   `CLIENT_HEADER_TIMEOUT_SECS`, and any later head within that time of its first byte;
//! - between requests it may stay idle for `CLIENT_KEEPALIVE_TIMEOUT_SECS`;
//! - while answering, the client must take some bytes every `CLIENT_WRITE_TIMEOUT_SECS`.
//!
//! hyper's own `header_read_timeout` is not used: it starts when the connection begins to wait
//! for a request, so it would bound the keep-alive wait and the head by the same time.
//!
//! Connections that are waiting for a request (new or idle) sit in an [`IdlePool`], oldest
//! first. When every place is taken, the accept loop asks the oldest of them to close, as nginx
//! reuses its idle keep-alive connections: silent sockets cannot lock anyone out.

use std::io;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use lru::LruCache;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use super::metrics::{CloseReason, Metrics};
use crate::proxy::config::ClientTimeouts;

/// The connections waiting for a request, oldest first.
pub struct IdlePool {
    waiting: Mutex<LruCache<u64, Arc<Notify>>>,
    next_id: AtomicU64,
}

impl IdlePool {
    /// A pool for at most `max_connections` connections.
    pub fn new(max_connections: usize) -> IdlePool {
        let cap = NonZeroUsize::new(max_connections).unwrap_or(NonZeroUsize::MIN);
        IdlePool {
            waiting: Mutex::new(LruCache::new(cap)),
            next_id: AtomicU64::new(0),
        }
    }

    /// Asks the connection that has waited longest to close; `false` when none is waiting.
    pub fn evict_oldest(&self) -> bool {
        match self.lock().pop_lru() {
            Some((_, notify)) => {
                notify.notify_one();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<u64, Arc<Notify>>> {
        self.waiting
            .lock()
            .expect("no code panics while holding this lock")
    }
}

/// Where a connection is in its cycle.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Accepted; nothing received yet.
    New { since: Instant },
    /// Between two requests.
    Idle { since: Instant },
    /// Part of a request head has arrived.
    Head { since: Instant },
    /// A request is being answered.
    Busy,
}

/// Why a connection's read side gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadLimit {
    Header,
    KeepAlive,
}

/// One connection's phase, shared by its socket, its service and its response bodies.
pub struct Tracker {
    id: u64,
    phase: Mutex<Phase>,
    timeouts: ClientTimeouts,
    pool: Arc<IdlePool>,
    evict: Arc<Notify>,
    metrics: Arc<Metrics>,
}

impl Tracker {
    /// A newly accepted connection, waiting for its first request.
    pub fn new(pool: Arc<IdlePool>, timeouts: ClientTimeouts, metrics: Arc<Metrics>) -> Tracker {
        let tracker = Tracker {
            id: pool.next_id.fetch_add(1, Ordering::Relaxed),
            phase: Mutex::new(Phase::New {
                since: Instant::now(),
            }),
            timeouts,
            pool,
            evict: Arc::new(Notify::new()),
            metrics,
        };
        tracker.enter_pool();
        tracker
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase
            .lock()
            .expect("no code panics while holding this lock")
    }

    fn enter_pool(&self) {
        self.pool.lock().put(self.id, self.evict.clone());
    }

    fn leave_pool(&self) {
        self.pool.lock().pop(&self.id);
    }

    /// Bytes arrived from the client: a request head has begun, if none had.
    fn received(&self) {
        let mut phase = self.phase();
        if let Phase::New { .. } | Phase::Idle { .. } = *phase {
            *phase = Phase::Head {
                since: Instant::now(),
            };
            drop(phase);
            self.leave_pool();
        }
    }

    /// A whole request head has arrived and is being answered.
    pub fn busy(&self) {
        let mut phase = self.phase();
        let was_waiting = matches!(*phase, Phase::New { .. } | Phase::Idle { .. });
        *phase = Phase::Busy;
        drop(phase);
        if was_waiting {
            self.leave_pool();
        }
    }

    /// The response is done with; the connection waits for the next request.
    fn idle(&self) {
        let mut phase = self.phase();
        if let Phase::Busy = *phase {
            *phase = Phase::Idle {
                since: Instant::now(),
            };
            drop(phase);
            self.enter_pool();
        }
    }

    /// When the read side must have heard from the client, and which limit that is.
    fn read_deadline(&self) -> Option<(Instant, ReadLimit)> {
        match *self.phase() {
            Phase::New { since } | Phase::Head { since } => {
                Some((since + self.timeouts.header, ReadLimit::Header))
            }
            Phase::Idle { since } => Some((since + self.timeouts.keep_alive, ReadLimit::KeepAlive)),
            Phase::Busy => None,
        }
    }

    /// Resolves when the accept loop needs this connection's place.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }

    /// Whether the connection may be closed for a new client now: only while it waits for a
    /// request that has not begun. Counted when it is.
    pub fn give_up_place(&self) -> bool {
        let waiting = matches!(*self.phase(), Phase::New { .. } | Phase::Idle { .. });
        if waiting {
            self.metrics.client_closed(CloseReason::Evicted);
        }
        waiting
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.leave_pool();
    }
}

/// The client's socket, with the connection's deadlines on its reads and writes.
pub struct ClientIo<T> {
    inner: T,
    tracker: Arc<Tracker>,
    read_timer: Option<Pin<Box<Sleep>>>,
    write_timer: Option<Pin<Box<Sleep>>>,
    /// A write is waiting for the client and `write_timer` runs for it.
    write_stalled: bool,
}

impl<T> ClientIo<T> {
    pub fn new(inner: T, tracker: Arc<Tracker>) -> ClientIo<T> {
        ClientIo {
            inner,
            tracker,
            read_timer: None,
            write_timer: None,
            write_stalled: false,
        }
    }

    /// A read found nothing: wait for the phase's deadline, if it has one.
    fn poll_read_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some((deadline, limit)) = self.tracker.read_deadline() else {
            return Poll::Pending;
        };
        ready!(timer_at(&mut self.read_timer, deadline).poll(cx));
        match limit {
            // The end of an idle keep-alive connection is an orderly close, not an error.
            ReadLimit::KeepAlive => {
                self.tracker.metrics.client_closed(CloseReason::IdleTimeout);
                Poll::Ready(Ok(()))
            }
            ReadLimit::Header => {
                self.tracker
                    .metrics
                    .client_closed(CloseReason::HeaderTimeout);
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no complete request head within {:?} (CLIENT_HEADER_TIMEOUT_SECS)",
                        self.tracker.timeouts.header
                    ),
                )))
            }
        }
    }

    /// A write could not proceed: start the write deadline, or fail once it has passed.
    fn poll_write_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if !self.write_stalled {
            self.write_stalled = true;
            let deadline = Instant::now() + self.tracker.timeouts.write;
            timer_at(&mut self.write_timer, deadline);
        }
        let timer = self
            .write_timer
            .as_mut()
            .expect("a stalled write has its timer");
        ready!(timer.as_mut().poll(cx));
        self.tracker
            .metrics
            .client_closed(CloseReason::WriteTimeout);
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the client took no bytes for {:?} (CLIENT_WRITE_TIMEOUT_SECS)",
                self.tracker.timeouts.write
            ),
        ))
    }

    fn on_write<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match polled {
            Poll::Pending => self.poll_write_deadline(cx).map(Err),
            ready => {
                self.write_stalled = false;
                ready
            }
        }
    }
}

/// `slot`'s timer, set to `deadline` (created on first use, then reused).
fn timer_at(slot: &mut Option<Pin<Box<Sleep>>>, deadline: Instant) -> Pin<&mut Sleep> {
    match slot {
        Some(timer) => {
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            timer.as_mut()
        }
        None => slot
            .insert(Box::pin(tokio::time::sleep_until(deadline)))
            .as_mut(),
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ClientIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending => this.poll_read_deadline(cx),
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.tracker.received();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ClientIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.on_write(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.on_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.on_write(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.on_write(cx, polled)
    }
}

/// A response body that tells the connection when the response is done with: hyper drops it
/// once the last byte is written, or without polling it at all (HEAD, errors).
pub struct Answered<B> {
    inner: B,
    tracker: Arc<Tracker>,
}

impl<B> Answered<B> {
    pub fn new(inner: B, tracker: Arc<Tracker>) -> Answered<B> {
        Answered { inner, tracker }
    }
}

impl<B: HttpBody<Data = Bytes> + Unpin> HttpBody for Answered<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Answered<B> {
    fn drop(&mut self) {
        self.tracker.idle();
    }
}
