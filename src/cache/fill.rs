//! A fill: the copy of one storable response, taken as its body streams to the client, and
//! handed to the upload queue once it is complete.
//!
//! The copy never delays the client: the caller forwards each chunk whatever `push` says; the
//! copy is capped at `MAX_CACHEABLE_BYTES` (past it the copy is given up and streaming goes
//! on); every byte it holds is first taken from the upload budget (without room the copy is
//! given up); and the hand-off to the queue never waits. A fill that is dropped before
//! [`Fill::finish`] stores nothing: a partial body is never stored.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::object::{Meta, Object};
use super::policy::NotCacheable;
use super::queue::{DropReason, Offer, Reservation};
use super::{Cache, Refreshing};

/// A copy in progress, and where it goes when complete.
pub struct Fill {
    cache: Arc<Cache>,
    key: String,
    meta: Option<Meta>,
    /// Held until the copy ends, when it renders a stale result again.
    _refresh: Option<Refreshing>,
    /// `Content-Length`, when the upstream gave one: the copy must reach it exactly.
    expected_len: Option<u64>,
    /// The key's claim on the upload path and the bytes `buf` may use; `None` once the fill
    /// has ended (finished or given up), so a drop after that counts nothing.
    reservation: Option<Reservation>,
    buf: BytesMut,
}

impl Fill {
    /// A copy under `reservation`, which already holds `expected_len` bytes when it is known.
    pub(super) fn new(
        cache: Arc<Cache>,
        key: String,
        meta: Meta,
        expected_len: Option<u64>,
        reservation: Reservation,
        refresh: Option<Refreshing>,
    ) -> Fill {
        // The policy capped the announced length; without one the copy grows as it goes.
        let capacity = expected_len.map_or(0, |n| n as usize);
        Fill {
            cache,
            key,
            meta: Some(meta),
            _refresh: refresh,
            expected_len,
            reservation: Some(reservation),
            buf: BytesMut::with_capacity(capacity),
        }
    }

    /// Adds a chunk. `false` when the copy has been given up (too large, or no budget left):
    /// the body streams on, and the fill can be dropped.
    pub fn push(&mut self, chunk: &Bytes) -> bool {
        if self.reservation.is_none() {
            return false;
        }
        let needed = self.buf.len() + chunk.len();
        if needed as u64 > self.cache.rules.max_bytes {
            self.give_up(NotCacheable::TooLarge);
            return false;
        }
        if needed > self.buf.capacity() && !self.grow(needed) {
            self.reservation = None;
            self.cache
                .queue
                .record(&self.key, Offer::Dropped(DropReason::Bytes));
            return false;
        }
        self.buf.extend_from_slice(chunk);
        true
    }

    /// Makes room for `needed` bytes, holding budget for all the capacity allocated: doubling
    /// when the budget allows, exactly `needed` when only that fits.
    fn grow(&mut self, needed: usize) -> bool {
        let Some(reservation) = self.reservation.as_mut() else {
            return false;
        };
        let max = usize::try_from(self.cache.rules.max_bytes).unwrap_or(usize::MAX);
        let doubled = (self.buf.capacity() * 2).min(max);
        let capacity = if doubled > needed && reservation.hold(doubled) {
            doubled
        } else if reservation.hold(needed) {
            needed
        } else {
            return false;
        };
        let mut grown = BytesMut::with_capacity(capacity);
        grown.extend_from_slice(&self.buf);
        self.buf = grown;
        true
    }

    /// The body is complete: the copy goes to the upload queue, if it is whole.
    pub fn finish(mut self) {
        let Some(reservation) = self.reservation.take() else {
            return;
        };
        let len = self.buf.len() as u64;
        if self.expected_len.is_some_and(|expected| expected != len) {
            self.cache.not_stored(&self.key, NotCacheable::Incomplete);
            return;
        }
        let Some(meta) = self.meta.take() else {
            return;
        };
        let object = Object {
            body: std::mem::take(&mut self.buf).freeze(),
            meta,
        };
        let then = self.cache.rendered(&self.key, &object);
        self.cache.queue.offer(reservation, object, then);
    }

    fn give_up(&mut self, reason: NotCacheable) {
        if self.reservation.take().is_some() {
            self.cache.not_stored(&self.key, reason);
        }
    }
}

impl Drop for Fill {
    /// The body ended early: the upstream failed or stalled, or the client went away.
    fn drop(&mut self) {
        self.give_up(NotCacheable::Incomplete);
    }
}
