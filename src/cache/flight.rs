//! Single flight: one render (or one read of a lower tier) per key at a time, streamed to every
//! request that asks for the key while it runs.
//!
//! The first request for a key becomes its [`Leader`] and registers a [`Flight`]; every later
//! one, on any serving thread, gets a [`Follower`] of it. When the leader has a storable head
//! it publishes it, and a [`Publisher`] (a task of its own, not the leader's connection) feeds
//! the body into the flight chunk by chunk as it arrives. Every client — the leader's
//! included — reads the chunks with a cursor of its own: a follower that comes in mid-body gets
//! the bytes so far, then waits for the rest; a slow client slows nobody else; a client that
//! leaves stops nothing. The chunks are held once, for all of them, and the whole body was
//! taken from the copy budget before the first byte, so a flight's memory is bounded up front.
//!
//! A head that can't be shared releases the followers instead ([`Release`]): each then asks
//! the upstream itself. That is the safe choice for what is not stored — an error, a
//! `no-store` answer, a result without a length — which is often specific to one request, and
//! is cheap to ask for again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;

use super::object::{Chunks, Meta, Object};
use super::queue::Hold;
use super::store::StoreError;

/// Where a flight's body comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Upstream,
    Disk,
    Bucket,
}

/// Why a flight's followers were sent to the upstream instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The answer may not be stored (its status, `Cache-Control`, `Vary`, type, ...).
    NotStorable,
    /// The answer has no `Content-Length`: its size can't be taken from the budget up front.
    NoLength,
    /// The copy budget had no room for the body.
    NoRoom,
    /// The leader went away before the head (its client left, or its lookup failed).
    Abandoned,
    /// The head did not come within `COALESCE_TIMEOUT_SECS`.
    Timeout,
}

/// The flights in progress, by key.
#[derive(Default)]
pub struct Flights {
    map: Mutex<HashMap<String, Arc<Flight>>>,
}

/// One render or read of a key, and what it has produced so far.
pub struct Flight {
    key: String,
    state: watch::Sender<State>,
}

#[derive(Default)]
struct State {
    head: Head,
    chunks: Vec<Bytes>,
    end: Option<End>,
    /// The budget the chunks were taken from: given back when the last reader is done.
    _held: Option<Hold>,
}

#[derive(Default, Clone)]
enum Head {
    #[default]
    Pending,
    Ready(Ready),
    Released(Release),
}

#[derive(Clone)]
struct Ready {
    meta: Arc<Meta>,
    len: u64,
    source: Source,
}

#[derive(Clone, Copy)]
enum End {
    Complete,
    Failed,
}

/// Either side of a flight, for the request that asked.
pub enum Role {
    Leader(Leader),
    Follower(Follower),
}

impl Flights {
    /// Joins the flight for `key`, or starts one with the caller as its leader.
    pub fn join(self: &Arc<Self>, key: &str) -> Role {
        let mut map = self.lock();
        if let Some(flight) = map.get(key) {
            return Role::Follower(Follower {
                state: flight.state.subscribe(),
            });
        }
        let flight = Arc::new(Flight {
            key: key.to_owned(),
            state: watch::Sender::new(State::default()),
        });
        map.insert(key.to_owned(), flight.clone());
        Role::Leader(Leader {
            flights: self.clone(),
            flight: Some(flight),
        })
    }

    /// Flights in progress.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Flight>>> {
        self.map
            .lock()
            .expect("no code panics while holding this lock")
    }

    /// Forgets `flight`, unless its key already belongs to a newer one.
    fn land(&self, flight: &Arc<Flight>) {
        let mut map = self.lock();
        if map
            .get(&flight.key)
            .is_some_and(|current| Arc::ptr_eq(current, flight))
        {
            map.remove(&flight.key);
        }
    }
}

/// The request a flight waits for: it publishes the head or releases the followers. Dropped
/// undecided, it releases them as [`Release::Abandoned`].
pub struct Leader {
    flights: Arc<Flights>,
    /// `None` once decided.
    flight: Option<Arc<Flight>>,
}

impl Leader {
    /// The head is storable: followers start reading. The body is fed through the returned
    /// [`Publisher`], which must get exactly `len` bytes; `held` is the budget for them, kept
    /// until the last reader is done.
    pub fn publish(
        mut self,
        meta: Meta,
        len: u64,
        source: Source,
        held: Option<Hold>,
    ) -> Publisher {
        let flight = self.flight.take().expect("a leader decides once");
        let ready = Ready {
            meta: Arc::new(meta),
            len,
            source,
        };
        flight.state.send_modify(|state| {
            state.head = Head::Ready(ready.clone());
            state._held = held;
        });
        Publisher {
            flights: self.flights.clone(),
            flight,
            ready,
            received: 0,
            done: false,
        }
    }

    /// The head can't be shared: every follower goes to the upstream on its own.
    pub fn release(mut self, why: Release) {
        self.release_as(why);
    }

    fn release_as(&mut self, why: Release) {
        if let Some(flight) = self.flight.take() {
            flight
                .state
                .send_modify(|state| state.head = Head::Released(why));
            self.flights.land(&flight);
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.release_as(Release::Abandoned);
    }
}

/// Feeds a published flight's body. Dropped before [`Publisher::complete`], it ends the body
/// with an error for every reader: a partial body is never served as whole, nor stored.
pub struct Publisher {
    flights: Arc<Flights>,
    flight: Arc<Flight>,
    ready: Ready,
    received: u64,
    done: bool,
}

/// The body went past the length its head announced.
#[derive(Debug, thiserror::Error)]
#[error("the body is longer than its announced {0} bytes")]
pub struct TooLong(u64);

impl Publisher {
    /// The flight's key.
    pub fn key(&self) -> &str {
        &self.flight.key
    }

    pub fn source(&self) -> Source {
        self.ready.source
    }

    /// The head, and a reader of the body from its first byte: for the leader's own client.
    pub fn attached(&self) -> Attached {
        Attached {
            meta: self.ready.meta.clone(),
            len: self.ready.len,
            source: self.ready.source,
            body: read(self.flight.state.subscribe()),
        }
    }

    /// Adds the next chunk for every reader.
    ///
    /// # Errors
    /// The chunk goes past the announced length; the flight is then failed when the
    /// publisher is dropped.
    pub fn push(&mut self, chunk: Bytes) -> Result<(), TooLong> {
        self.received += chunk.len() as u64;
        if self.received > self.ready.len {
            return Err(TooLong(self.ready.len));
        }
        if !chunk.is_empty() {
            self.flight
                .state
                .send_modify(|state| state.chunks.push(chunk));
        }
        Ok(())
    }

    /// The body has ended: the whole object when it has its announced length, `None` when it
    /// came short. The readers are told only at [`Publisher::land`], so the caller can first
    /// put the object where the next request looks (a client that has read the whole body
    /// and asks again finds it there).
    pub fn complete(&mut self) -> Option<Object> {
        if self.received != self.ready.len {
            return None;
        }
        let body = concat(&self.flight.state.borrow().chunks, self.ready.len);
        Some(Object {
            meta: Meta::clone(&self.ready.meta),
            body,
        })
    }

    /// Ends a [`complete`](Publisher::complete) flight: its readers finish, and a request for
    /// the key from now on starts a new flight.
    pub fn land(mut self) {
        self.done = true;
        self.flight
            .state
            .send_modify(|state| state.end = Some(End::Complete));
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if !self.done {
            self.flight
                .state
                .send_modify(|state| state.end = Some(End::Failed));
        }
        self.flights.land(&self.flight);
    }
}

/// The chunks as one buffer of exactly their length. A body that came in one chunk is copied
/// too: a chunk is a slice of its reader's buffer (hyper's read buffer, a disk read's
/// [`CHUNK`](super::fs::CHUNK)), and an object kept whole would keep all of that buffer
/// alive while the memory tier counts only the body. A soak run's proxy grew by 0.2 MiB/s
/// for as long as it ran, the memory tier holding more than its cap.
///
/// A body of [`OWN_PAGES_FROM`] bytes or more gets anonymous pages of its own rather than heap
/// memory: the memory tier keeps such bodies for minutes among the heap's short-lived buffers,
/// and each one it evicts left a hole the allocator could not give back. In the soak run the
/// proxy's memory grew 10 MiB in 4 minutes while its live heap grew 2 MiB; with these bodies
/// out of the heap (glibc's `mmap_threshold` at 16 KiB tried it) the growth halved. When the
/// kernel refuses a mapping (`vm.max_map_count`) the body goes on the heap as before.
fn concat(chunks: &[Bytes], len: u64) -> Bytes {
    let len = len as usize;
    if len >= OWN_PAGES_FROM
        && let Ok(mut pages) = memmap2::MmapMut::map_anon(len)
    {
        let mut at = 0;
        for chunk in chunks {
            pages[at..at + chunk.len()].copy_from_slice(chunk);
            at += chunk.len();
        }
        if let Ok(pages) = pages.make_read_only() {
            return Bytes::from_owner(pages);
        }
    }
    let mut body = BytesMut::with_capacity(len);
    for chunk in chunks {
        body.extend_from_slice(chunk);
    }
    body.freeze()
}

/// The body size from which [`concat`] maps pages of its own (four pages: below that, a
/// mapping's rounding to whole pages would cost more than the hole it saves).
const OWN_PAGES_FROM: usize = 16 * 1024;

/// A request waiting for a flight's head.
pub struct Follower {
    state: watch::Receiver<State>,
}

/// A flight's head, and a reader of its body from the first byte.
pub struct Attached {
    pub meta: Arc<Meta>,
    pub len: u64,
    pub source: Source,
    pub body: Chunks,
}

impl Follower {
    /// Waits at most `timeout` for the head.
    ///
    /// # Errors
    /// The followers were released, or the head did not come in time: the caller asks the
    /// upstream itself.
    pub async fn attach(mut self, timeout: Duration) -> Result<Attached, Release> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let head = self.state.borrow_and_update().head.clone();
            match head {
                Head::Ready(ready) => {
                    return Ok(Attached {
                        meta: ready.meta,
                        len: ready.len,
                        source: ready.source,
                        body: read(self.state),
                    });
                }
                Head::Released(why) => return Err(why),
                Head::Pending => {}
            }
            match tokio::time::timeout_at(deadline, self.state.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Release::Abandoned),
                Err(_) => return Err(Release::Timeout),
            }
        }
    }
}

/// The flight's body from its first byte, as it arrives.
fn read(state: watch::Receiver<State>) -> Chunks {
    Box::pin(futures_util::stream::unfold(
        Cursor {
            state,
            next: 0,
            ended: false,
        },
        Cursor::advance,
    ))
}

/// One reader's place in a flight's body.
struct Cursor {
    state: watch::Receiver<State>,
    next: usize,
    ended: bool,
}

impl Cursor {
    async fn advance(mut self) -> Option<(Result<Bytes, StoreError>, Cursor)> {
        if self.ended {
            return None;
        }
        let mut flight_gone = false;
        loop {
            let (chunk, end) = {
                let seen = self.state.borrow_and_update();
                (seen.chunks.get(self.next).cloned(), seen.end)
            };
            if let Some(chunk) = chunk {
                self.next += 1;
                return Some((Ok(chunk), self));
            }
            match end {
                Some(End::Complete) => return None,
                // A flight dropped without an end (its publisher always writes one) fails too.
                Some(End::Failed) => {}
                None if flight_gone => {}
                None => {
                    flight_gone = self.state.changed().await.is_err();
                    continue;
                }
            }
            self.ended = true;
            return Some((Err(failed()), self));
        }
    }
}

fn failed() -> StoreError {
    StoreError::transient("the body of this result failed midway")
}

#[cfg(test)]
mod tests {
    use futures_util::TryStreamExt;

    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    #[test]
    fn a_body_that_came_in_one_chunk_does_not_keep_its_readers_buffer() {
        let buffer = Bytes::from(vec![7u8; 64 * 1024]);
        let chunk = buffer.slice(..1000);
        drop(buffer);
        let body = concat(std::slice::from_ref(&chunk), 1000);
        assert_eq!(body, chunk);
        let shares = body.as_ptr() == chunk.as_ptr();
        assert!(
            !shares,
            "the body is a slice of the 64 KiB buffer, which it keeps alive"
        );
    }

    #[test]
    fn a_body_on_pages_of_its_own_holds_every_chunk_in_order() {
        for len in [OWN_PAGES_FROM - 1, OWN_PAGES_FROM, 100_003] {
            let whole: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let chunks: Vec<Bytes> = whole.chunks(7_000).map(Bytes::copy_from_slice).collect();
            let body = concat(&chunks, len as u64);
            assert!(body == whole, "{len} bytes");
        }
    }

    fn meta() -> Meta {
        Meta {
            content_type: "image/png".into(),
            cache_control: None,
            stored_at: 1,
            content_disposition: None,
        }
    }

    fn leader(flights: &Arc<Flights>, key: &str) -> Leader {
        match flights.join(key) {
            Role::Leader(leader) => leader,
            Role::Follower(_) => panic!("{key} already has a flight"),
        }
    }

    fn follower(flights: &Arc<Flights>, key: &str) -> Follower {
        match flights.join(key) {
            Role::Follower(follower) => follower,
            Role::Leader(_) => panic!("{key} has no flight"),
        }
    }

    async fn body(attached: Attached) -> Result<Vec<u8>, StoreError> {
        let chunks: Vec<Bytes> = attached.body.try_collect().await?;
        Ok(chunks.concat())
    }

    #[tokio::test]
    async fn every_reader_gets_the_whole_body_wherever_it_joined() {
        let flights = Arc::new(Flights::default());
        let early = follower_of(&flights, "k");
        let mut publisher = early.0.publish(meta(), 6, Source::Upstream, None);
        let early = tokio::spawn(early.1.attach(WAIT));
        publisher.push(Bytes::from_static(b"abc")).unwrap();
        // Joins mid-body: gets the bytes so far, then the rest.
        let late = tokio::spawn(follower(&flights, "k").attach(WAIT));
        let own = publisher.attached();
        publisher.push(Bytes::from_static(b"def")).unwrap();
        let object = publisher.complete().unwrap();
        assert_eq!(object.body, "abcdef");
        publisher.land();
        for attached in [
            early.await.unwrap().unwrap(),
            late.await.unwrap().unwrap(),
            own,
        ] {
            assert_eq!(attached.len, 6);
            assert_eq!(body(attached).await.unwrap(), b"abcdef");
        }
        assert!(flights.is_empty());
        assert!(matches!(flights.join("k"), Role::Leader(_)));
    }

    fn follower_of(flights: &Arc<Flights>, key: &str) -> (Leader, Follower) {
        let leader = leader(flights, key);
        (leader, follower(flights, key))
    }

    #[tokio::test]
    async fn a_released_or_abandoned_flight_sends_followers_upstream() {
        let flights = Arc::new(Flights::default());
        let (leader, waiting) = follower_of(&flights, "k");
        leader.release(Release::NotStorable);
        assert_eq!(waiting.attach(WAIT).await.err(), Some(Release::NotStorable));
        assert!(flights.is_empty());

        let (leader, waiting) = follower_of(&flights, "k");
        drop(leader);
        assert_eq!(waiting.attach(WAIT).await.err(), Some(Release::Abandoned));
        assert!(flights.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_stops_waiting_for_a_head_at_its_timeout() {
        let flights = Arc::new(Flights::default());
        let (_leader, waiting) = follower_of(&flights, "k");
        let timeout = Duration::from_secs(10);
        let started = tokio::time::Instant::now();
        assert_eq!(waiting.attach(timeout).await.err(), Some(Release::Timeout));
        assert_eq!(started.elapsed(), timeout);
    }

    #[tokio::test]
    async fn a_body_cut_short_fails_every_reader_and_is_not_stored() {
        let flights = Arc::new(Flights::default());
        let (leader, waiting) = follower_of(&flights, "k");
        let mut publisher = leader.publish(meta(), 6, Source::Upstream, None);
        let reader = waiting.attach(WAIT).await.unwrap();
        publisher.push(Bytes::from_static(b"abc")).unwrap();
        assert!(publisher.complete().is_none());
        drop(publisher);
        assert!(body(reader).await.is_err());
        assert!(flights.is_empty());
    }

    #[tokio::test]
    async fn a_body_longer_than_announced_is_refused() {
        let flights = Arc::new(Flights::default());
        let mut publisher = leader(&flights, "k").publish(meta(), 2, Source::Upstream, None);
        let reader = publisher.attached();
        assert!(publisher.push(Bytes::from_static(b"abc")).is_err());
        drop(publisher);
        assert!(body(reader).await.is_err());
    }

    #[tokio::test]
    async fn a_landed_flight_leaves_its_key_to_a_new_one() {
        let flights = Arc::new(Flights::default());
        let first = leader(&flights, "k");
        let other = leader(&flights, "other");
        let mut publisher = first.publish(meta(), 0, Source::Bucket, None);
        assert!(publisher.complete().is_some());
        publisher.land();
        assert_eq!(flights.len(), 1);
        drop(other);
        assert!(flights.is_empty());
    }
}
