//! The response body: passes each upstream chunk to the client as it arrives and, for a
//! cacheable response, keeps a copy that goes to the upload queue once the body is complete.
//!
//! The copy never delays the client: chunks are forwarded first-come, the copy is capped at
//! `MAX_CACHEABLE_BYTES` (past it the copy is dropped and streaming goes on), every byte it
//! holds is first taken from the upload budget (without room the copy is dropped), and the
//! hand-off to the queue never waits.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::body::BoxError;
use crate::cache::policy::NotCacheable;
use crate::cache::queue::{DropReason, Offer, Reservation, UploadQueue};
use crate::cache::store::Object;
use crate::metrics::{Metrics, ReasonLabel};

/// A copy in progress, and where it goes when complete.
pub struct Tee {
    key: String,
    content_type: String,
    cache_control: Option<String>,
    /// `Content-Length`, when the upstream gave one: the copy must reach it exactly.
    expected_len: Option<u64>,
    max_bytes: u64,
    /// The key's claim on the upload path and the bytes `buf` may use.
    reservation: Reservation,
    queue: Arc<UploadQueue>,
    metrics: Arc<Metrics>,
    buf: BytesMut,
}

impl Tee {
    /// A copy under `reservation`, which already holds `expected_len` bytes when it is known.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        key: String,
        content_type: String,
        cache_control: Option<String>,
        expected_len: Option<u64>,
        max_bytes: u64,
        reservation: Reservation,
        queue: Arc<UploadQueue>,
        metrics: Arc<Metrics>,
    ) -> Tee {
        // The policy capped the announced length; without one the copy grows as it goes.
        let capacity = expected_len.map_or(0, |n| n as usize);
        Tee {
            key,
            content_type,
            cache_control,
            expected_len,
            max_bytes,
            reservation,
            queue,
            metrics,
            buf: BytesMut::with_capacity(capacity),
        }
    }

    fn not_cacheable(&self, reason: NotCacheable) {
        not_stored(&self.metrics, &self.key, reason);
    }

    /// Adds a chunk; `false` when the copy must be given up (too large, or no budget left).
    fn push(&mut self, chunk: &Bytes) -> bool {
        let needed = self.buf.len() + chunk.len();
        if needed as u64 > self.max_bytes {
            self.not_cacheable(NotCacheable::TooLarge);
            return false;
        }
        if needed > self.buf.capacity() && !self.grow(needed) {
            self.queue
                .record(&self.key, Offer::Dropped(DropReason::Bytes));
            return false;
        }
        self.buf.extend_from_slice(chunk);
        true
    }

    /// Makes room for `needed` bytes, holding budget for all the capacity allocated: doubling
    /// when the budget allows, exactly `needed` when only that fits.
    fn grow(&mut self, needed: usize) -> bool {
        let doubled = (self.buf.capacity() * 2).min(self.max_bytes as usize);
        let capacity = if doubled > needed && self.reservation.hold(doubled) {
            doubled
        } else if self.reservation.hold(needed) {
            needed
        } else {
            return false;
        };
        let mut grown = BytesMut::with_capacity(capacity);
        grown.extend_from_slice(&self.buf);
        self.buf = grown;
        true
    }

    fn finish(self) {
        let len = self.buf.len() as u64;
        if self.expected_len.is_some_and(|expected| expected != len) {
            self.not_cacheable(NotCacheable::Incomplete);
            return;
        }
        let object = Object {
            body: self.buf.freeze(),
            content_type: self.content_type,
            cache_control: self.cache_control,
        };
        self.queue.offer(self.reservation, object);
    }
}

/// Counts and logs a response that is not stored, for `reason`.
pub fn not_stored(metrics: &Metrics, key: &str, reason: NotCacheable) {
    metrics
        .not_cacheable
        .get_or_create(&ReasonLabel {
            reason: reason.as_str(),
        })
        .inc();
    tracing::debug!(%key, reason = reason.as_str(), "response not stored");
}

/// The upstream body with an idle timeout and an optional [`Tee`].
pub struct ProxyBody {
    inner: Incoming,
    idle: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    tee: Option<Tee>,
}

impl ProxyBody {
    pub fn new(inner: Incoming, idle_timeout: Duration, tee: Option<Tee>) -> ProxyBody {
        ProxyBody {
            inner,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            idle_timeout,
            tee,
        }
    }

    fn give_up(&mut self, reason: NotCacheable) {
        if let Some(tee) = self.tee.take() {
            tee.not_cacheable(reason);
        }
    }

    fn complete(&mut self) {
        if let Some(tee) = self.tee.take() {
            tee.finish();
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the upstream sent nothing for {0:?} in the middle of the body")]
pub struct Stalled(Duration);

impl HttpBody for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let Poll::Ready(frame) = polled else {
            ready!(this.idle.as_mut().poll(cx));
            this.give_up(NotCacheable::Incomplete);
            return Poll::Ready(Some(Err(Stalled(this.idle_timeout).into())));
        };
        match frame {
            Some(Ok(frame)) => {
                this.idle.as_mut().reset(Instant::now() + this.idle_timeout);
                if let (Some(data), Some(tee)) = (frame.data_ref(), this.tee.as_mut())
                    && !tee.push(data)
                {
                    this.tee = None;
                }
                // hyper stops polling once the body says it has ended, so the copy must be
                // completed on the last chunk rather than on a final `None`.
                if this.inner.is_end_stream() {
                    this.complete();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                this.give_up(NotCacheable::Incomplete);
                Poll::Ready(Some(Err(e.into())))
            }
            None => {
                this.complete();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ProxyBody {
    /// The client went away (or hyper gave up) before the body was complete.
    fn drop(&mut self) {
        self.give_up(NotCacheable::Incomplete);
    }
}
