//! The body a client gets: the upstream's, chunk by chunk as it arrives, with a deadline for
//! an upstream that stalls mid-body, feeding the cache's [`Fill`] when the response is stored.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::body::BoxError;
use crate::cache::Fill;

/// The upstream body with an idle timeout and an optional [`Fill`].
pub struct ProxyBody {
    inner: Incoming,
    idle: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    /// Dropped unfinished (the fill then counts the result `incomplete`) when the body fails,
    /// stalls or is dropped before its end.
    fill: Option<Fill>,
}

impl ProxyBody {
    pub fn new(inner: Incoming, idle_timeout: Duration, fill: Option<Fill>) -> ProxyBody {
        ProxyBody {
            inner,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            idle_timeout,
            fill,
        }
    }

    fn complete(&mut self) {
        if let Some(fill) = self.fill.take() {
            fill.finish();
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
            this.fill = None;
            return Poll::Ready(Some(Err(Stalled(this.idle_timeout).into())));
        };
        match frame {
            Some(Ok(frame)) => {
                this.idle.as_mut().reset(Instant::now() + this.idle_timeout);
                if let (Some(data), Some(fill)) = (frame.data_ref(), this.fill.as_mut())
                    && !fill.push(data)
                {
                    this.fill = None;
                }
                // hyper stops polling once the body says it has ended, so the copy must be
                // completed on the last chunk rather than on a final `None`.
                if this.inner.is_end_stream() {
                    this.complete();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                this.fill = None;
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
