//! The upload queue: bounded by count and by bytes, deduplicated, drained on shutdown.
//!
//! Before a request handler copies a body it takes a [`Reservation`] with
//! [`UploadQueue::reserve`]: the key is then in flight (a second copy of the same key is never
//! made), and every byte the copy holds is taken from `UPLOAD_QUEUE_MAX_BYTES` before it is
//! copied. So one byte budget bounds copies in flight, waiting uploads and running ones alike;
//! past it, bodies stream without a copy. [`UploadQueue::offer`] hands the complete copy on and
//! never waits. One dispatcher task feeds at most `UPLOAD_CONCURRENCY` uploads at a time into a
//! `TaskTracker`, so "every upload finished" is observable.
//!
//! With a spool (`CACHE_DIR` next to a bucket) a result is written to `CACHE_DIR/.spool`
//! before it waits, and the job that waits holds only its file's name: a crash, a restart
//! or a bucket outage loses nothing, and memory stays bounded whatever the backlog (the
//! spool is bounded by `CACHE_DIR_MAX_BYTES`). A spooled upload that fails for a reason time
//! can fix (its retries spent) waits the longest retry delay (`UPLOAD_RETRY_MAX_MS`) and is
//! queued again, so an outage costs one round of tries per result per pause, never a loop.
//! At shutdown what is left stays in the spool for the next start, which queues it first.
//!
//! Dedup runs cheapest first: keys known to be stored (a bounded LRU) cost nothing; a key
//! already waiting or uploading is not queued twice; the upload itself then asks the store
//! (HEAD, or a conditional PUT).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::UploadConfig;
use super::fs::{Damage, FsStore, SpoolFile};
use super::known::KnownKeys;
use super::log_interval::LogInterval;
use super::metrics::{CacheMetrics, Outcome, SpoolEvent};
use super::store::{Object, Store};
use super::upload::{UploadOutcome, upload};

/// What [`UploadQueue::offer`] did with a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Queued,
    Skipped(Skip),
    Dropped(DropReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Stored earlier by this process.
    Known,
    /// The same key is already waiting or uploading.
    InFlight,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// `UPLOAD_QUEUE_CAPACITY` uploads are waiting.
    Full,
    /// `UPLOAD_QUEUE_MAX_BYTES` are held by copies in flight and by waiting or running
    /// uploads.
    Bytes,
    /// Shutdown has begun; no new work is taken.
    Closed,
}

impl Offer {
    /// The metric label, for results that did not go into the queue.
    pub fn outcome(self) -> Option<Outcome> {
        match self {
            Offer::Queued => None,
            Offer::Skipped(Skip::Known) => Some(Outcome::SkippedKnown),
            Offer::Skipped(Skip::InFlight) => Some(Outcome::SkippedInFlight),
            Offer::Dropped(DropReason::Closed) => Some(Outcome::DroppedShutdown),
            Offer::Dropped(_) => Some(Outcome::DroppedFull),
        }
    }
}

/// What a shutdown left undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DrainReport {
    /// Uploads held in memory still waiting or running when `SHUTDOWN_TIMEOUT_SECS` ran
    /// out: lost.
    pub abandoned: usize,
    /// Spooled uploads not done by then: kept in the spool for the next start.
    pub kept: usize,
}

/// What the caller does once a result offered for upload is in the spool, or is not going
/// there: its copy into the disk tier, which must not come first. A crash between the two
/// would leave a result on disk that no spool file uploads, served from disk ever after and
/// never stored in the bucket.
pub type Then = Box<dyn FnOnce() + Send>;

/// The handle request handlers share.
pub struct UploadQueue {
    tx: mpsc::Sender<Job>,
    bytes: Arc<Semaphore>,
    shared: Arc<Shared>,
}

/// State that both the handlers and the uploads touch.
struct Shared {
    store: Arc<dyn Store>,
    /// The disk tier whose `.spool` holds waiting results, when there is one.
    spool: Option<Arc<FsStore>>,
    /// Where spool writes run: on the upload runtime, tracked with the uploads, so a shutdown
    /// waits for them (the serving threads stop first, and would drop them half done).
    spool_writes: (tokio::runtime::Handle, TaskTracker),
    /// Where spooled jobs are sent: by a spool write when it is done, by a paused job when it
    /// goes back. Taken at shutdown, so the channel ends once the writes in flight (which
    /// hold clones) are done, and a spooled job that fails after that stays in the spool.
    requeue: Mutex<Option<mpsc::UnboundedSender<Job>>>,
    /// Files in the spool this process queued (written or resumed) and has not removed;
    /// what a drain reports as kept.
    spooled: AtomicUsize,
    /// Jobs whose result is held in memory; what a drain that times out reports as abandoned.
    in_memory: AtomicUsize,
    config: UploadConfig,
    metrics: Arc<CacheMetrics>,
    in_flight: Mutex<HashSet<String>>,
    known: Arc<KnownKeys>,
    /// Jobs accepted and not yet finished; what a timed-out drain reports.
    pending: AtomicUsize,
    /// The hint for a permanent error is logged once, not once per upload.
    hinted: AtomicBool,
    /// Drops since the last "queue full" line.
    drops_unlogged: AtomicUsize,
    drop_log: LogInterval,
}

impl Shared {
    /// Counts (and for drops, logs at most once per interval) what became of a result.
    fn record(&self, key: &str, offer: Offer) {
        let Some(outcome) = offer.outcome() else {
            return;
        };
        self.metrics.upload(outcome);
        match offer {
            Offer::Queued => {}
            Offer::Skipped(_) => {
                tracing::debug!(%key, outcome = outcome.as_str(), "upload skipped");
            }
            Offer::Dropped(why) => {
                // Under a backlog drops come by the thousand per second: one line per
                // interval with the count, not one per result (the metric counts each).
                let dropped = self.drops_unlogged.fetch_add(1, Ordering::Relaxed) + 1;
                if self.drop_log.should_log() {
                    self.drops_unlogged.fetch_sub(dropped, Ordering::Relaxed);
                    tracing::warn!(%key, reason = ?why, dropped, "upload queue full, results dropped");
                }
            }
        }
    }
}

/// Lowers the calling thread's CPU priority to `nice` (`UPLOAD_NICE`). Linux keeps a nice
/// value per thread; elsewhere, or if refused, uploads keep the normal priority.
#[allow(unsafe_code)] // FFI: see the SAFETY comments inside
fn lower_thread_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    if nice > 0 {
        // SAFETY: plain syscalls on the calling thread's own id; no memory is involved.
        let result = unsafe {
            let tid = libc::gettid() as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, nice)
        };
        if result != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "uploads keep the normal CPU priority"
            );
        }
    }
}

/// The background half: the dispatcher and the uploads it started, on a runtime of their own.
pub struct Uploader {
    /// One worker thread at a lower CPU priority: upload CPU work (hashing, request signing,
    /// TLS) never runs on the threads that serve clients, never takes more than one core,
    /// and yields to them when the CPU is short.
    runtime: Option<tokio::runtime::Runtime>,
    dispatcher: tokio::task::JoinHandle<()>,
    tracker: TaskTracker,
    closing: CancellationToken,
    abort: CancellationToken,
    shared: Arc<Shared>,
}

struct Job {
    key: String,
    payload: Payload,
    /// A fresh rendering of a stale result: it replaces what the store holds, so no dedup.
    replace: bool,
    _reservation: Reservation,
}

impl Job {
    /// A job for a result held in memory, counted as such until it ends.
    fn in_memory(key: String, object: Object, replace: bool, reservation: Reservation) -> Job {
        reservation.shared.in_memory.fetch_add(1, Ordering::Relaxed);
        Job {
            key,
            payload: Payload::Memory(object),
            replace,
            _reservation: reservation,
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if matches!(self.payload, Payload::Memory(_)) {
            self._reservation
                .shared
                .in_memory
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// What handing a job held in memory to the dispatcher came to.
fn sent(result: Result<(), mpsc::error::TrySendError<Job>>) -> Offer {
    match result {
        Ok(()) => Offer::Queued,
        Err(mpsc::error::TrySendError::Full(_)) => Offer::Dropped(DropReason::Full),
        Err(mpsc::error::TrySendError::Closed(_)) => Offer::Dropped(DropReason::Closed),
    }
}

/// Where a job's result is.
enum Payload {
    Memory(Object),
    /// In the spool: read (and checked) when its upload starts.
    Spooled(SpoolFile),
}

/// Bytes taken from the upload budget (`UPLOAD_QUEUE_MAX_BYTES`) for one copy, from its first
/// byte until its upload ends; dropping it gives them back.
pub struct Hold {
    bytes: OwnedSemaphorePermit,
    budget: Arc<Semaphore>,
    shared: Arc<Shared>,
}

impl Hold {
    /// Makes sure `len` bytes are held; `false` when the budget has no room for them.
    pub fn grow(&mut self, len: usize) -> bool {
        let held = self.bytes.num_permits();
        if len <= held {
            return true;
        }
        // MAX_CACHEABLE_BYTES fits a u32 (config), and callers stop copying past it.
        let Ok(more) = u32::try_from(len - held) else {
            return false;
        };
        match self.budget.clone().try_acquire_many_owned(more) {
            Ok(permit) => {
                self.bytes.merge(permit);
                self.shared.metrics.queue_bytes.inc_by(i64::from(more));
                true
            }
            Err(_) => false,
        }
    }
}

impl Hold {
    /// Splits `len` bytes off into a hold of their own (`None` when fewer are held).
    pub fn split(&mut self, len: usize) -> Option<Hold> {
        let bytes = self.bytes.split(len)?;
        Some(Hold {
            bytes,
            budget: self.budget.clone(),
            shared: self.shared.clone(),
        })
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let held = i64::try_from(self.bytes.num_permits()).unwrap_or(i64::MAX);
        self.shared.metrics.queue_bytes.dec_by(held);
    }
}

/// A result's claim on the upload path, from the first copied byte until its upload ends:
/// the key stays in flight and the bytes stay taken. Dropping it gives both back, however the
/// result ends (copy cut short, stored, failed, abandoned, or refused by a full channel).
pub struct Reservation {
    key: String,
    hold: Hold,
    /// See [`Job::replace`].
    replace: bool,
    /// Offered and accepted: counted in `pending` and the queue depth.
    queued: bool,
    shared: Arc<Shared>,
}

impl Reservation {
    /// Makes sure `len` bytes are held; `false` when the budget has no room for them.
    pub fn hold(&mut self, len: usize) -> bool {
        self.hold.grow(len)
    }

    /// Gives the held bytes back (the result is in the spool now); the key stays in flight.
    fn release_bytes(&mut self) {
        let none = self.hold.split(0).expect("zero bytes are always held");
        drop(std::mem::replace(&mut self.hold, none));
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut in_flight = self
            .shared
            .in_flight
            .lock()
            .expect("no code panics while holding this lock");
        in_flight.remove(&self.key);
        drop(in_flight);
        if self.queued {
            self.shared.pending.fetch_sub(1, Ordering::Relaxed);
            self.shared.metrics.queue_depth.dec();
        }
    }
}

impl UploadQueue {
    /// Starts the dispatcher on the current runtime.
    /// With `spool`, results wait in its `.spool` (and those it holds from before are queued
    /// first).
    pub fn start(
        store: Arc<dyn Store>,
        spool: Option<Arc<FsStore>>,
        config: UploadConfig,
        known: Arc<KnownKeys>,
        metrics: Arc<CacheMetrics>,
    ) -> (UploadQueue, Uploader) {
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let (spooled_tx, spooled_rx) = mpsc::unbounded_channel();
        let nice = config.nice;
        let permits = usize::try_from(config.queue_max_bytes)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        let tracker = TaskTracker::new();
        let closing = CancellationToken::new();
        let abort = CancellationToken::new();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("upload")
            .on_thread_start(move || lower_thread_priority(nice))
            .max_blocking_threads(super::fs::MAX_BLOCKING_THREADS)
            .enable_all()
            .build()
            .expect("a one-thread runtime can be built whenever the process can start threads");
        let shared = Arc::new(Shared {
            store,
            spool,
            requeue: Mutex::new(Some(spooled_tx)),
            spool_writes: (runtime.handle().clone(), tracker.clone()),
            spooled: AtomicUsize::new(0),
            in_memory: AtomicUsize::new(0),
            metrics,
            in_flight: Mutex::new(HashSet::new()),
            known,
            pending: AtomicUsize::new(0),
            hinted: AtomicBool::new(false),
            drops_unlogged: AtomicUsize::new(0),
            drop_log: LogInterval::new(),
            config,
        });
        let dispatcher = runtime.spawn(dispatch(
            rx,
            spooled_rx,
            shared.clone(),
            tracker.clone(),
            closing.clone(),
            abort.clone(),
        ));
        let queue = UploadQueue {
            tx,
            bytes: Arc::new(Semaphore::new(permits)),
            shared: shared.clone(),
        };
        queue.resume();
        let uploader = Uploader {
            runtime: Some(runtime),
            dispatcher,
            tracker,
            closing,
            abort,
            shared,
        };
        (queue, uploader)
    }

    /// Claims the upload path for `key` before its body is copied, with `len` bytes up front
    /// when the length is known; the copy then grows the claim with [`Reservation::hold`].
    ///
    /// # Errors
    /// What becomes of the result instead, when it is not to be copied: already stored, being
    /// copied or uploaded by another request, or no room (the body then streams uncopied).
    pub fn reserve(&self, key: &str, len: Option<u64>) -> Result<Reservation, Offer> {
        self.reserve_for(key, len, false)
    }

    /// [`UploadQueue::reserve`] for a fresh rendering of a stale result, which replaces the
    /// stored one: known keys are not skipped, and the upload overwrites.
    ///
    /// # Errors
    /// As [`UploadQueue::reserve`], except that a known key is no reason.
    pub fn reserve_replacing(&self, key: &str, len: Option<u64>) -> Result<Reservation, Offer> {
        self.reserve_for(key, len, true)
    }

    fn reserve_for(
        &self,
        key: &str,
        len: Option<u64>,
        replace: bool,
    ) -> Result<Reservation, Offer> {
        if !replace && self.shared.known.contains(key) {
            return Err(Offer::Skipped(Skip::Known));
        }
        if self.tx.capacity() == 0 {
            return Err(Offer::Dropped(DropReason::Full));
        }
        let hold = self.hold(len.unwrap_or(0))?;
        let mut reservation = self.claim(key, hold)?;
        reservation.replace = replace;
        Ok(reservation)
    }

    /// Takes `len` bytes from the budget for a copy that is not (yet) claimed for an upload:
    /// a render shared by the requests that wait for it, which may turn out stored already.
    ///
    /// # Errors
    /// No room: [`DropReason::Bytes`].
    pub fn hold(&self, len: u64) -> Result<Hold, Offer> {
        // MAX_CACHEABLE_BYTES fits a u32 (config), and the policy enforced it.
        let up_front = u32::try_from(len).map_err(|_| Offer::Dropped(DropReason::Bytes))?;
        let bytes = self
            .bytes
            .clone()
            .try_acquire_many_owned(up_front)
            .map_err(|_| Offer::Dropped(DropReason::Bytes))?;
        self.shared.metrics.queue_bytes.inc_by(i64::from(up_front));
        Ok(Hold {
            bytes,
            budget: self.bytes.clone(),
            shared: self.shared.clone(),
        })
    }

    /// The budget a shared flight of `len` bytes needs: one hold for its chunks, which the
    /// flight keeps until its last reader is done, and one for the whole object they are
    /// joined into at the end (memory tier, upload). `None` without room for both.
    pub fn hold_twice(&self, len: u64) -> Option<(Hold, Hold)> {
        let mut hold = self.hold(len.checked_mul(2)?).ok()?;
        let chunks = hold.split(usize::try_from(len).ok()?)?;
        Some((chunks, hold))
    }

    /// Puts `key` in flight on the upload path with the bytes of `hold`.
    ///
    /// # Errors
    /// The key is already waiting or uploading: [`Skip::InFlight`].
    fn claim(&self, key: &str, hold: Hold) -> Result<Reservation, Offer> {
        let fresh = self
            .shared
            .in_flight
            .lock()
            .expect("no code panics while holding this lock")
            .insert(key.to_owned());
        if !fresh {
            return Err(Offer::Skipped(Skip::InFlight));
        }
        Ok(Reservation {
            key: key.to_owned(),
            hold,
            replace: false,
            queued: false,
            shared: self.shared.clone(),
        })
    }

    /// Hands a complete result, copied under `hold`, to the background, unless it is known to
    /// be stored or already on its way. Never waits.
    pub fn offer_held(&self, key: &str, hold: Hold, object: Object, then: Then) -> Offer {
        let offer = if self.shared.known.contains(key) {
            Err(Offer::Skipped(Skip::Known))
        } else {
            self.claim(key, hold)
        };
        match offer {
            Ok(reservation) => self.offer(reservation, object, then),
            Err(offer) => {
                self.record(key, offer);
                then();
                offer
            }
        }
    }

    /// Hands a complete result, copied under `reservation`, to the background. Never waits:
    /// with a spool, the result is written to it on the blocking pool, and a result the spool
    /// cannot take waits in memory as it would without one. `then` runs once the result is in
    /// the spool (or is not going there).
    pub fn offer(&self, mut reservation: Reservation, object: Object, then: Then) -> Offer {
        let key = reservation.key.clone();
        let offer = if !reservation.replace && self.shared.known.contains(&key) {
            Offer::Skipped(Skip::Known)
        } else if !reservation.hold(object.body.len()) {
            Offer::Dropped(DropReason::Bytes)
        } else if self.tx.is_closed() {
            Offer::Dropped(DropReason::Closed)
        } else {
            reservation.queued = true;
            self.shared.pending.fetch_add(1, Ordering::Relaxed);
            self.shared.metrics.queue_depth.inc();
            match &self.shared.spool {
                Some(spool) => {
                    self.spool(spool.clone(), key.clone(), object, reservation, then);
                    self.record(&key, Offer::Queued);
                    return Offer::Queued;
                }
                None => {
                    let replace = reservation.replace;
                    sent(self.tx.try_send(Job::in_memory(
                        key.clone(),
                        object,
                        replace,
                        reservation,
                    )))
                }
            }
        };
        self.record(&key, offer);
        then();
        offer
    }

    /// Writes a result to the spool, then queues a job that holds only its file's name; a
    /// result the spool cannot take is queued in memory instead.
    fn spool(
        &self,
        spool: Arc<FsStore>,
        key: String,
        object: Object,
        mut reservation: Reservation,
        then: Then,
    ) {
        let Some(spooled) = self.shared.spooled_sender() else {
            self.record(&key, Offer::Dropped(DropReason::Closed));
            then();
            return;
        };
        let (tx, shared) = (self.tx.clone(), self.shared.clone());
        let (runtime, tracker) = &self.shared.spool_writes;
        tracker.spawn_on(
            async move {
                let replace = reservation.replace;
                match spool.spool(&key, &object, replace).await {
                    Ok(file) => {
                        shared.metrics.spooled(SpoolEvent::Written);
                        shared.metrics.spool_files.inc();
                        shared.spooled.fetch_add(1, Ordering::Relaxed);
                        reservation.release_bytes();
                        let job = Job {
                            key,
                            payload: Payload::Spooled(file),
                            replace,
                            _reservation: reservation,
                        };
                        // Closed at shutdown: the file stays for the next start.
                        let _ = spooled.send(job);
                        then();
                    }
                    Err(error) => {
                        shared.metrics.spooled(SpoolEvent::WriteFailed);
                        if shared.drop_log.should_log() {
                            tracing::warn!(%key, %error, "cannot write to the upload spool; the result waits in memory");
                        }
                        let job = Job::in_memory(key.clone(), object, replace, reservation);
                        let offer = sent(tx.try_send(job));
                        shared.record(&key, offer);
                        then();
                    }
                }
            },
            runtime,
        );
    }

    /// Queues what the spool held at start-up, each key in flight until its upload ends.
    fn resume(&self) {
        let Some(spool) = &self.shared.spool else {
            return;
        };
        for file in spool.take_resumed() {
            let Ok(hold) = self.hold(0) else { continue };
            let Ok(mut reservation) = self.claim(&file.key, hold) else {
                continue;
            };
            reservation.queued = true;
            reservation.replace = file.replace;
            self.shared.pending.fetch_add(1, Ordering::Relaxed);
            self.shared.spooled.fetch_add(1, Ordering::Relaxed);
            self.shared.metrics.queue_depth.inc();
            self.shared.metrics.spool_files.inc();
            self.shared.metrics.spooled(SpoolEvent::Resumed);
            let job = Job {
                key: file.key.clone(),
                replace: file.replace,
                payload: Payload::Spooled(file),
                _reservation: reservation,
            };
            if let Some(spooled) = self.shared.spooled_sender() {
                let _ = spooled.send(job);
            }
        }
    }

    /// Counts (and for drops, logs at most once per interval) what became of a result.
    pub fn record(&self, key: &str, offer: Offer) {
        self.shared.record(key, offer);
    }

    /// Remembers that `key` is in the store (read from it), so no upload of it is tried.
    pub fn remember(&self, key: &str) {
        self.shared.known.remember(key);
    }

    /// Forgets that `key` is in the store (it was purged), so the next result is uploaded.
    pub fn forget(&self, key: &str) {
        self.shared.known.forget(key);
    }

    /// Uploads waiting or running right now.
    pub fn pending(&self) -> usize {
        self.shared.pending.load(Ordering::Relaxed)
    }
}

impl Uploader {
    /// Stops taking new work, finishes what was queued within `timeout`, and abandons the
    /// rest; spooled uploads not finished stay in the spool.
    pub async fn drain(mut self, timeout: Duration) -> DrainReport {
        self.closing.cancel();
        let tracker = self.tracker.clone();
        let dispatcher = &mut self.dispatcher;
        let finished = tokio::time::timeout(timeout, async move {
            let _ = dispatcher.await;
            tracker.close();
            tracker.wait().await;
        })
        .await;
        let abandoned = if finished.is_ok() {
            0
        } else {
            let abandoned = self.shared.in_memory.load(Ordering::Relaxed);
            self.abort.cancel();
            self.tracker.close();
            self.tracker.wait().await;
            abandoned
        };
        let kept = self.shared.spooled.load(Ordering::Relaxed);
        if kept > 0 {
            self.shared.metrics.spooled_n(SpoolEvent::Kept, kept as u64);
        }
        DrainReport { abandoned, kept }
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        // Dropping a runtime blocks until its tasks stop, which async code must not do;
        // by now every upload has finished or been abandoned.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn dispatch(
    mut rx: mpsc::Receiver<Job>,
    mut spooled_rx: mpsc::UnboundedReceiver<Job>,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    closing: CancellationToken,
    abort: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(shared.config.concurrency));
    let (mut memory_open, mut spool_open, mut closed) = (true, true, false);
    while memory_open || spool_open {
        let job = tokio::select! {
            biased;
            () = abort.cancelled() => return,
            // Closing lets the jobs already queued through; new offers see `Closed`, and
            // spooled jobs that fail stay in the spool.
            () = closing.cancelled(), if !closed => {
                closed = true;
                rx.close();
                shared.requeue.lock().expect("no code panics while holding this lock").take();
                continue;
            }
            job = rx.recv(), if memory_open => match job {
                Some(job) => job,
                None => {
                    memory_open = false;
                    continue;
                }
            },
            job = spooled_rx.recv(), if spool_open => match job {
                Some(job) => job,
                None => {
                    spool_open = false;
                    continue;
                }
            },
        };
        let slot = tokio::select! {
            () = abort.cancelled() => return,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let shared = shared.clone();
        let (abort, closing) = (abort.clone(), closing.clone());
        let paused = tracker.clone();
        tracker.spawn(async move {
            let again = tokio::select! {
                () = abort.cancelled() => {
                    shared.metrics.upload(Outcome::Abandoned);
                    tracing::warn!(key = %job.key, "upload abandoned at shutdown");
                    false
                }
                again = run_job(&shared, &job) => again,
            };
            drop(slot);
            if again {
                paused.spawn(async move {
                    tokio::select! {
                        () = closing.cancelled() => {}
                        () = tokio::time::sleep(shared.config.retry_max) => {
                            if let Some(requeue) = shared.spooled_sender() {
                                let _ = requeue.send(job);
                            }
                        }
                    }
                });
            }
        });
    }
}

/// Runs one job; `true` when it is a spooled one to try again later (its file stays).
async fn run_job(shared: &Shared, job: &Job) -> bool {
    let started = Instant::now();
    let key = &job.key;
    let spooled;
    let (object, file) = match &job.payload {
        Payload::Memory(object) => (object, None),
        Payload::Spooled(file) => {
            let spool = shared
                .spool
                .as_ref()
                .expect("spooled jobs come from a spool");
            match spool.unspool(file).await {
                Ok(object) => {
                    spooled = object;
                    (&spooled, Some((spool, file)))
                }
                Err(Damage::Corrupt(why)) => {
                    shared.metrics.spooled(SpoolEvent::Damaged);
                    tracing::warn!(%key, path = %file.path().display(), why, "damaged spool file removed, not uploaded");
                    shared.unspooled(spool, file).await;
                    return false;
                }
                Err(Damage::Io(error)) => {
                    tracing::warn!(%key, %error, "cannot read the upload spool; trying again later");
                    return true;
                }
            }
        }
    };
    let bytes = object.body.len();
    let outcome = upload(
        &*shared.store,
        key,
        object,
        job.replace,
        &shared.config,
        &shared.metrics,
    )
    .await;
    let duration_ms = started.elapsed().as_millis() as u64;
    if let (UploadOutcome::Failed { error, .. }, Some(_)) = (&outcome, file)
        && error.is_transient()
    {
        if shared.drop_log.should_log() {
            tracing::warn!(%key, %error, pause = ?shared.config.retry_max, "spooled upload failed; it stays in the spool and is tried again");
        }
        return true;
    }
    shared.metrics.upload(outcome.label());
    if let Some((spool, file)) = file {
        shared.unspooled(spool, file).await;
    }
    match &outcome {
        UploadOutcome::Stored { attempts } | UploadOutcome::Exists { attempts } => {
            // Remember before the ticket releases the key, so no repeat slips in between.
            shared.known.remember(key);
            tracing::info!(%key, bytes, attempts, duration_ms, outcome = outcome.label().as_str(), "upload");
        }
        UploadOutcome::Failed { attempts, error } => match error.hint {
            Some(hint) if !shared.hinted.swap(true, Ordering::Relaxed) => {
                tracing::error!(%key, bytes, attempts, duration_ms, %error, hint, "upload failed");
            }
            _ => tracing::warn!(%key, bytes, attempts, duration_ms, %error, "upload failed"),
        },
    }
    false
}

impl Shared {
    /// Where spooled jobs go; `None` once shutdown has begun.
    fn spooled_sender(&self) -> Option<mpsc::UnboundedSender<Job>> {
        self.requeue
            .lock()
            .expect("no code panics while holding this lock")
            .clone()
    }

    /// Removes a spool file whose upload is over.
    async fn unspooled(&self, spool: &FsStore, file: &SpoolFile) {
        spool.remove_spooled(file.clone()).await;
        self.spooled.fetch_sub(1, Ordering::Relaxed);
        self.metrics.spool_files.dec();
    }
}
