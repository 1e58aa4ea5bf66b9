//! Guarded reads from the bucket: the lookup the read path makes before it calls the upstream
//! must never cost more than a short wait, however sick the bucket is.
//!
//! [`ReadGuard::read`] gives the bucket `read_timeout` (`STORE_READ_TIMEOUT_MS`) to answer, and
//! the same again for every body chunk after that. Behind it a circuit breaker counts
//! consecutive failures: after `breaker_failures` of them the bucket is not asked at all for
//! `breaker_open`, then one probe read goes through while every other lookup still skips; the
//! probe's result closes the breaker or opens it again. So an outage costs the clients that
//! were already waiting one timeout each, and after that one probe per open period — never one
//! timeout per request.
//!
//! The breaker is a small state machine of our own ([`Breaker`], time passed in). The crates
//! that offer one either let every call through once the open period ends (failsafe) instead
//! of one probe, or read the clock themselves, which makes the state machine untestable
//! without sleeping.

use std::fmt::Display;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;

use super::metrics::{BucketRead, BucketReadMetrics};
use super::object::{Chunks, Reading};
use super::store::{Store, StoreError};

/// How a [`ReadGuard`] guards its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardConfig {
    /// `STORE_READ_TIMEOUT_MS`: for the answer, and for each body chunk after it.
    pub read_timeout: Duration,
    /// `STORE_READ_BREAKER_FAILURES`: consecutive failures that open the breaker; 0 counts as 1.
    pub breaker_failures: u32,
    /// `STORE_READ_BREAKER_SECS`: how long an open breaker skips the store.
    pub breaker_open: Duration,
}

/// What a guarded lookup came to.
pub enum Guarded {
    /// The object, its body still to be read. The body ends with an `Err` when a chunk takes
    /// longer than the read timeout, the bucket fails, or the bytes do not add up to
    /// [`Reading::len`]: the caller must then treat the read as failed (never serve or store
    /// what came so far as the whole object).
    Found(Reading),
    /// No such key: a success, as far as the breaker is concerned.
    Missing,
    /// The bucket failed or did not answer in time; counted against it.
    Failed(Failure),
    /// Not asked: the breaker is open.
    Skipped,
}

impl Guarded {
    /// The metric label, and a short name for logs.
    pub fn result(&self) -> BucketRead {
        match self {
            Guarded::Found(_) => BucketRead::Found,
            Guarded::Missing => BucketRead::Missing,
            Guarded::Failed(_) => BucketRead::Failed,
            Guarded::Skipped => BucketRead::Skipped,
        }
    }
}

/// Why a lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("the bucket did not answer within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Store(StoreError),
}

impl Failure {
    /// The failure with what an operator should check, for the warning that opens the breaker.
    fn explained(&self) -> String {
        match self {
            Failure::Store(StoreError {
                hint: Some(hint), ..
            }) => format!("{self} ({hint})"),
            _ => self.to_string(),
        }
    }
}

/// Reads from one store, each bounded by the read timeout, behind a circuit breaker.
pub struct ReadGuard {
    store: Arc<dyn Store>,
    read_timeout: Duration,
    shared: Arc<Shared>,
}

/// What the guard and the bodies it hands out share: a body's end is what settles the read
/// it belongs to.
struct Shared {
    breaker: Mutex<Breaker>,
    metrics: BucketReadMetrics,
    /// The store, in one line, for the log lines about the breaker.
    describe: String,
}

impl ReadGuard {
    pub fn new(store: Arc<dyn Store>, config: GuardConfig, metrics: BucketReadMetrics) -> Self {
        metrics.breaker_state.set(BreakerState::Closed.gauge());
        let shared = Shared {
            breaker: Mutex::new(Breaker::new(config.breaker_failures, config.breaker_open)),
            metrics,
            describe: store.describe(),
        };
        ReadGuard {
            store,
            read_timeout: config.read_timeout,
            shared: Arc::new(shared),
        }
    }

    /// Looks `key` up, waiting at most the read timeout for the answer.
    ///
    /// A found object counts for the breaker when its body has been read: whole (a success),
    /// or failed (a failure). While the breaker is half-open the read that probes it is the
    /// only one that asks the bucket; if it is dropped before it settles, the next read
    /// probes instead.
    pub async fn read(&self, key: &str) -> Guarded {
        let admission = self.shared.admit();
        if admission == Admission::Skip {
            self.shared.metrics.read(BucketRead::Skipped, None);
            return Guarded::Skipped;
        }
        let permit = Permit {
            shared: self.shared.clone(),
            admission,
            settled: false,
        };
        let started = Instant::now();
        let answer = tokio::time::timeout(self.read_timeout, self.store.read(key)).await;
        let took = Some(started.elapsed());
        let guarded = match answer {
            Ok(Ok(None)) => {
                permit.succeed();
                Guarded::Missing
            }
            Ok(Ok(Some(reading))) => Guarded::Found(self.guard_body(reading, permit)),
            Ok(Err(error)) => {
                let failure = Failure::Store(error);
                tracing::debug!(%key, error = %failure, "bucket read failed");
                permit.fail(&failure.explained());
                Guarded::Failed(failure)
            }
            Err(_elapsed) => {
                let failure = Failure::Timeout(self.read_timeout);
                tracing::debug!(%key, error = %failure, "bucket read failed");
                permit.fail(&failure.explained());
                Guarded::Failed(failure)
            }
        };
        self.shared.metrics.read(guarded.result(), took);
        guarded
    }

    /// The breaker's state as of now. An open breaker whose open period has passed reports
    /// [`BreakerState::HalfOpen`]: the next read will be its probe.
    pub fn state(&self) -> BreakerState {
        self.shared.state()
    }

    /// Wraps the body so that a stall, an error, or a length that does not match ends it with
    /// an `Err`, and its end settles `permit`.
    fn guard_body(&self, reading: Reading, permit: Permit) -> Reading {
        let Reading { meta, len, body } = reading;
        // Nothing to wait for: a consumer that knows the length may never poll an empty body.
        let permit = if len == 0 {
            permit.succeed();
            None
        } else {
            Some(permit)
        };
        let body = GuardedBody {
            inner: body,
            len,
            got: 0,
            chunk_timeout: self.read_timeout,
            permit,
            metrics: self.shared.metrics.clone(),
            ended: false,
        };
        Reading {
            meta,
            len,
            body: Box::pin(futures_util::stream::unfold(body, GuardedBody::next)),
        }
    }
}

/// A found object's body, as the guard hands it on.
struct GuardedBody {
    inner: Chunks,
    len: u64,
    got: u64,
    chunk_timeout: Duration,
    /// Settled when the last byte arrives (not when the stream ends: a consumer that counts
    /// bytes may stop there) or when the body fails.
    permit: Option<Permit>,
    metrics: BucketReadMetrics,
    /// After an `Err` the stream is over, whatever the inner one would still send.
    ended: bool,
}

impl GuardedBody {
    async fn next(mut self) -> Option<(Result<bytes::Bytes, StoreError>, GuardedBody)> {
        if self.ended {
            return None;
        }
        let failure = match tokio::time::timeout(self.chunk_timeout, self.inner.next()).await {
            Ok(Some(Ok(chunk))) => {
                self.got += chunk.len() as u64;
                if self.got <= self.len {
                    if self.got == self.len
                        && let Some(permit) = self.permit.take()
                    {
                        permit.succeed();
                    }
                    return Some((Ok(chunk), self));
                }
                format!(
                    "GET body: more than the {} bytes announced ({} so far)",
                    self.len, self.got
                )
            }
            Ok(None) if self.got == self.len => return None,
            Ok(None) => format!("GET body: ended after {} of {} bytes", self.got, self.len),
            Ok(Some(Err(error))) => error.to_string(),
            Err(_elapsed) => format!(
                "GET body: no chunk within {:?} ({} of {} bytes read)",
                self.chunk_timeout, self.got, self.len
            ),
        };
        self.ended = true;
        self.metrics.body_failures.inc();
        if let Some(permit) = self.permit.take() {
            permit.fail(&failure);
        }
        Some((Err(StoreError::transient(failure)), self))
    }
}

/// One admitted read, until its outcome is known. Dropped unsettled (the read was cancelled),
/// it tells the breaker so, which lets another read probe in its place.
struct Permit {
    shared: Arc<Shared>,
    admission: Admission,
    settled: bool,
}

impl Permit {
    fn succeed(mut self) {
        self.settled = true;
        let admission = self.admission;
        self.shared
            .step(None, |breaker, _| breaker.succeeded(admission));
    }

    fn fail(mut self, error: &dyn Display) {
        self.settled = true;
        let admission = self.admission;
        self.shared
            .step(Some(error), |breaker, now| breaker.failed(admission, now));
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.settled {
            let admission = self.admission;
            self.shared.step(None, |breaker, now| {
                breaker.abandoned(admission, now);
                None
            });
        }
    }
}

impl Shared {
    fn admit(&self) -> Admission {
        let mut admission = Admission::Skip;
        self.step(None, |breaker, now| {
            let (admitted, change) = breaker.admit(now);
            admission = admitted;
            change
        });
        admission
    }

    /// Moves the breaker one step; a change of state moves the gauge under the same lock (so
    /// two changes can't leave it showing the older one) and is logged once. `error`: what
    /// the read that caused the step failed with.
    fn step(
        &self,
        error: Option<&dyn Display>,
        step: impl FnOnce(&mut Breaker, Instant) -> Option<Change>,
    ) {
        let now = Instant::now();
        let (change, failures, open_secs) = {
            // The breaker is plain data changed in single steps: a panic elsewhere while the
            // lock was held cannot have left it half-changed.
            let mut breaker = self
                .breaker
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let change = step(&mut breaker, now);
            if change.is_some() {
                self.metrics.breaker_state.set(breaker.state(now).gauge());
            }
            (
                change,
                breaker.failures_to_open,
                breaker.open_for.as_secs_f64(),
            )
        };
        let Some(change) = change else { return };
        let error = error.map(ToString::to_string).unwrap_or_default();
        match change {
            Change::Opened => tracing::warn!(
                store = %self.describe,
                failures,
                open_secs,
                %error,
                "bucket reads keep failing: lookups skip the bucket for a while, then one probes it"
            ),
            Change::HalfOpened => {
                tracing::debug!(store = %self.describe, "bucket breaker: one read probes the bucket");
            }
            // Still down: the warning stands, so this is no news at the default level.
            Change::Reopened => tracing::debug!(
                store = %self.describe,
                open_secs,
                %error,
                "bucket breaker: the probe failed, skipping the bucket again"
            ),
            Change::Closed => {
                tracing::info!(store = %self.describe, "bucket reads succeed again: breaker closed");
            }
        }
    }

    fn state(&self) -> BreakerState {
        self.breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .state(Instant::now())
    }
}

// === the breaker ===

/// The breaker's state, as the gauge and [`ReadGuard::state`] report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// The bucket is asked.
    Closed,
    /// The bucket is skipped until the open period ends.
    Open,
    /// One read probes the bucket (or the next one will); the others skip.
    HalfOpen,
}

impl BreakerState {
    /// The value of `imgproxy_cache_bucket_breaker_state`.
    pub fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

/// What the breaker lets a read do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: ask the bucket.
    Call,
    /// The one read that tries the bucket after an open period.
    Probe,
    /// Don't ask.
    Skip,
}

/// A change of state, for the log line and the gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Closed → open: too many failures in a row.
    Opened,
    /// Open → half-open: a probe was let through.
    HalfOpened,
    /// Half-open → open: the probe failed.
    Reopened,
    /// Half-open → closed: the probe succeeded.
    Closed,
}

/// Consecutive-failure circuit breaker with a single probe. Pure: every call takes `now`.
///
/// Outcomes of reads admitted while closed that arrive after the breaker opened are ignored:
/// only the probe decides whether an open breaker closes.
#[derive(Debug)]
pub struct Breaker {
    failures_to_open: u32,
    open_for: Duration,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    /// Half-open with no probe running once `until` has passed.
    Open {
        until: Instant,
    },
    Probing,
}

impl Breaker {
    pub fn new(failures_to_open: u32, open_for: Duration) -> Breaker {
        Breaker {
            failures_to_open: failures_to_open.max(1),
            open_for,
            state: State::Closed { failures: 0 },
        }
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if now < until => BreakerState::Open,
            State::Open { .. } | State::Probing => BreakerState::HalfOpen,
        }
    }

    /// Whether a read may ask the bucket now; a read admitted as [`Admission::Probe`] must be
    /// settled ([`Breaker::succeeded`], [`Breaker::failed`]) or [`Breaker::abandoned`].
    pub fn admit(&mut self, now: Instant) -> (Admission, Option<Change>) {
        match self.state {
            State::Closed { .. } => (Admission::Call, None),
            State::Open { until } if now < until => (Admission::Skip, None),
            State::Open { .. } => {
                self.state = State::Probing;
                (Admission::Probe, Some(Change::HalfOpened))
            }
            State::Probing => (Admission::Skip, None),
        }
    }

    /// A read admitted as `admission` got an answer (a miss is an answer).
    pub fn succeeded(&mut self, admission: Admission) -> Option<Change> {
        match (admission, self.state) {
            (Admission::Call, State::Closed { .. }) => {
                self.state = State::Closed { failures: 0 };
                None
            }
            (Admission::Probe, State::Probing) => {
                self.state = State::Closed { failures: 0 };
                Some(Change::Closed)
            }
            _ => None,
        }
    }

    /// A read admitted as `admission` failed or timed out.
    pub fn failed(&mut self, admission: Admission, now: Instant) -> Option<Change> {
        match (admission, self.state) {
            (Admission::Call, State::Closed { failures }) => {
                let failures = failures + 1;
                if failures >= self.failures_to_open {
                    self.state = State::Open {
                        until: now + self.open_for,
                    };
                    Some(Change::Opened)
                } else {
                    self.state = State::Closed { failures };
                    None
                }
            }
            (Admission::Probe, State::Probing) => {
                self.state = State::Open {
                    until: now + self.open_for,
                };
                Some(Change::Reopened)
            }
            _ => None,
        }
    }

    /// A read admitted as `admission` was dropped before its outcome was known: a probe's
    /// place goes to the next read.
    pub fn abandoned(&mut self, admission: Admission, now: Instant) {
        if admission == Admission::Probe && self.state == State::Probing {
            self.state = State::Open { until: now };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: Duration = Duration::from_secs(30);

    fn opened(t0: Instant) -> Breaker {
        let mut breaker = Breaker::new(3, OPEN);
        for _ in 0..2 {
            assert_eq!(breaker.admit(t0), (Admission::Call, None));
            assert_eq!(breaker.failed(Admission::Call, t0), None);
        }
        assert_eq!(breaker.admit(t0).0, Admission::Call);
        assert_eq!(breaker.failed(Admission::Call, t0), Some(Change::Opened));
        breaker
    }

    // N consecutive failures open it; the open period skips; its end lets exactly one probe
    // through, and the probe's success closes it.
    #[test]
    fn opens_after_consecutive_failures_and_closes_on_a_good_probe() {
        let t0 = Instant::now();
        let mut breaker = opened(t0);
        assert_eq!(breaker.state(t0), BreakerState::Open);
        let almost = t0 + OPEN - Duration::from_millis(1);
        assert_eq!(breaker.admit(almost), (Admission::Skip, None));
        assert_eq!(breaker.state(almost), BreakerState::Open);

        let later = t0 + OPEN;
        assert_eq!(breaker.state(later), BreakerState::HalfOpen);
        assert_eq!(
            breaker.admit(later),
            (Admission::Probe, Some(Change::HalfOpened))
        );
        // Others skip while the probe runs, however late it gets.
        assert_eq!(breaker.admit(later), (Admission::Skip, None));
        assert_eq!(breaker.admit(later + OPEN * 10), (Admission::Skip, None));
        assert_eq!(breaker.succeeded(Admission::Probe), Some(Change::Closed));
        assert_eq!(breaker.state(later), BreakerState::Closed);
        assert_eq!(breaker.admit(later), (Admission::Call, None));
    }

    #[test]
    fn a_success_resets_the_count() {
        let t0 = Instant::now();
        let mut breaker = Breaker::new(3, OPEN);
        for _ in 0..10 {
            assert_eq!(breaker.failed(Admission::Call, t0), None);
            assert_eq!(breaker.failed(Admission::Call, t0), None);
            assert_eq!(breaker.succeeded(Admission::Call), None);
        }
        assert_eq!(breaker.state(t0), BreakerState::Closed);
    }

    #[test]
    fn a_failed_probe_reopens_for_a_full_period() {
        let t0 = Instant::now();
        let mut breaker = opened(t0);
        let t1 = t0 + OPEN + Duration::from_secs(5);
        assert_eq!(breaker.admit(t1).0, Admission::Probe);
        assert_eq!(breaker.failed(Admission::Probe, t1), Some(Change::Reopened));
        assert_eq!(breaker.admit(t1 + OPEN / 2), (Admission::Skip, None));
        assert_eq!(breaker.state(t1 + OPEN / 2), BreakerState::Open);
        assert_eq!(breaker.admit(t1 + OPEN).0, Admission::Probe);
    }

    // A probe whose read was cancelled must not leave the breaker waiting for it forever.
    #[test]
    fn an_abandoned_probe_hands_over_to_the_next_read() {
        let t0 = Instant::now();
        let mut breaker = opened(t0);
        let t1 = t0 + OPEN;
        assert_eq!(breaker.admit(t1).0, Admission::Probe);
        breaker.abandoned(Admission::Probe, t1);
        assert_eq!(breaker.state(t1), BreakerState::HalfOpen);
        assert_eq!(breaker.admit(t1).0, Admission::Probe);
        assert_eq!(breaker.admit(t1).0, Admission::Skip);
        // An abandoned ordinary read changes nothing.
        breaker.abandoned(Admission::Call, t1);
        assert_eq!(breaker.admit(t1).0, Admission::Skip);
    }

    // Reads that were admitted before it opened and answer late don't decide anything.
    #[test]
    fn late_answers_of_ordinary_reads_are_ignored_while_open() {
        let t0 = Instant::now();
        let mut breaker = opened(t0);
        assert_eq!(breaker.succeeded(Admission::Call), None);
        assert_eq!(breaker.state(t0), BreakerState::Open);
        let t1 = t0 + OPEN;
        assert_eq!(breaker.admit(t1).0, Admission::Probe);
        assert_eq!(breaker.failed(Admission::Call, t1), None);
        assert_eq!(breaker.succeeded(Admission::Call), None);
        assert_eq!(breaker.state(t1), BreakerState::HalfOpen);
        assert_eq!(breaker.succeeded(Admission::Probe), Some(Change::Closed));
    }

    /// A store whose every read finds an object announced as `len` bytes whose body is
    /// `chunks`.
    struct Canned {
        len: u64,
        chunks: Vec<&'static [u8]>,
    }

    #[async_trait::async_trait]
    impl Store for Canned {
        fn describe(&self) -> String {
            "canned".into()
        }
        async fn exists(&self, _: &str) -> Result<bool, StoreError> {
            Ok(true)
        }
        async fn put(
            &self,
            _: &str,
            _: &crate::cache::Object,
            _: crate::cache::store::PutMode,
        ) -> Result<crate::cache::store::PutOutcome, StoreError> {
            Err(StoreError::permanent("read-only", None))
        }
        async fn read(&self, _: &str) -> Result<Option<Reading>, StoreError> {
            let chunks = self.chunks.iter().map(|c| Ok(bytes::Bytes::from_static(c)));
            Ok(Some(Reading {
                meta: crate::cache::Meta {
                    content_type: "image/png".into(),
                    cache_control: None,
                    stored_at: 1,
                    content_disposition: None,
                },
                len: self.len,
                body: Box::pin(futures_util::stream::iter(chunks.collect::<Vec<_>>())),
            }))
        }
        async fn delete(&self, _: &str) -> Result<bool, StoreError> {
            Ok(false)
        }
    }

    /// Reads the guarded body of `store`'s object: the chunks, then the error that ended it.
    async fn body_of(store: Canned) -> (Vec<u8>, Option<StoreError>, BucketReadMetrics) {
        let metrics = BucketReadMetrics::default();
        let guard = ReadGuard::new(
            Arc::new(store),
            GuardConfig {
                read_timeout: Duration::from_millis(300),
                breaker_failures: 5,
                breaker_open: Duration::from_secs(30),
            },
            metrics.clone(),
        );
        let Guarded::Found(reading) = guard.read("k").await else {
            panic!("the canned store always finds");
        };
        let mut body = reading.body;
        let mut got = Vec::new();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => got.extend_from_slice(&chunk),
                Err(e) => {
                    assert!(body.next().await.is_none(), "nothing after the error");
                    return (got, Some(e), metrics);
                }
            }
        }
        (got, None, metrics)
    }

    // A body that doesn't add up to its announced length must not pass for the whole object.
    #[tokio::test]
    async fn a_body_of_the_wrong_length_ends_with_an_error() {
        let (got, error, metrics) = body_of(Canned {
            len: 6,
            chunks: vec![b"abc", b"def"],
        })
        .await;
        assert_eq!((got.as_slice(), error.is_none()), (&b"abcdef"[..], true));
        assert_eq!(metrics.body_failures.get(), 0);

        let (got, error, metrics) = body_of(Canned {
            len: 6,
            chunks: vec![b"abc"],
        })
        .await;
        assert_eq!(got, b"abc");
        assert!(error.unwrap().message.contains("ended after 3 of 6"));
        assert_eq!(metrics.body_failures.get(), 1);

        let (got, error, _) = body_of(Canned {
            len: 4,
            chunks: vec![b"abc", b"def"],
        })
        .await;
        assert_eq!(got, b"abc", "the chunk that overflows is not passed on");
        assert!(error.unwrap().message.contains("more than the 4 bytes"));

        let (got, error, _) = body_of(Canned {
            len: 0,
            chunks: vec![],
        })
        .await;
        assert_eq!((got.len(), error.is_none()), (0, true));
    }

    #[test]
    fn zero_failures_means_one() {
        let t0 = Instant::now();
        let mut breaker = Breaker::new(0, OPEN);
        assert_eq!(breaker.admit(t0).0, Admission::Call);
        assert_eq!(breaker.failed(Admission::Call, t0), Some(Change::Opened));
    }
}
