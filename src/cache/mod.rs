//! The cache: what the proxy asks before and after calling the upstream. [`Cache`] owns the
//! protocol — the key, the lookup through the tiers, single flight, the storing policy's
//! verdict, the copy, the upload queue and its drain — so `proxy/` only moves bytes.
//!
//! - `key`: the key rule (MD5 of the path, under `S3_FOLDER`); `variant`: the key of each
//!   `Accept` class when the upstream negotiates WebP/AVIF.
//! - `policy`: whether a response may be stored (pure: takes `now`); `freshness`: whether a
//!   stored one may be served as it is (pure).
//! - `object`: a stored result and its metadata, as every tier keeps them.
//! - `memory`: the memory tier (byte-weighted, `quick_cache`).
//! - `flight`: one render or store read per key, its body fed to every request for the key.
//! - `fill`: the copy of a response streamed to one client (no `Content-Length`, so not shared).
//! - `known`: keys this process has seen stored (the first dedup).
//! - `queue` and `upload`: the bounded upload queue, its retries and dedup against the store.
//! - `store`, `s3`, `fs`: the [`Store`] trait and its two implementations (a bucket; the local
//!   directory, which is the disk tier); `guard`: lookups in the bucket behind a timeout and a
//!   circuit breaker; `disk_guard`: the same breaker in front of the disk tier, which a
//!   failing `CACHE_DIR` then bypasses.
//! - `metrics`: the cache's metrics, with enum labels; `log_interval`: a warning that could
//!   repeat per request, logged at most once per interval.
//!
//! A lookup ([`Cache::lookup`]) asks memory, then the flights in progress, then — as the key's
//! new leader — the disk tier and the bucket; what it finds there is fed into the leader's
//! flight, so requests that come meanwhile share the read. A new tier is another [`Store`]
//! asked in `read_tiers` and written by `landed`.

pub mod config;
mod disk_guard;
mod fill;
pub mod flight;
pub mod freshness;
pub mod fs;
pub mod guard;
pub mod key;
mod known;
mod log_interval;
pub mod memory;
pub mod metrics;
pub mod object;
pub mod policy;
mod queue;
pub mod s3;
pub mod s3_http;
pub mod store;
mod upload;
pub mod variant;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, Method, StatusCode};
use tokio::sync::Semaphore;

use config::{DiskConfig, ReadConfig, StorageConfig, UploadConfig};
pub use fill::Fill;
pub use flight::{Attached, Follower};
use flight::{Flights, Leader, Publisher, Release, Role, Source};
pub use freshness::{Freshness, freshness};
use guard::{Guarded, ReadGuard};
pub use key::cache_key;
use known::KnownKeys;
use log_interval::LogInterval;
use memory::Memory;
use metrics::{CacheMetrics, DiskOp, LookupResult, Outcome};
pub use object::{Meta, Object, Reading};
use policy::{Cacheable, NotCacheable, Rules};
pub use queue::{DrainReport, Uploader};
use queue::{DropReason, Hold, Offer, Then, UploadQueue};
pub use store::{PutMode, Store};
use variant::{Negotiation, Variant};

/// Where results are kept, below the memory tier.
#[derive(Clone)]
pub struct Stores {
    /// Where uploads go, and the last tier read: the bucket, or the local directory when there
    /// is no bucket.
    pub last: Arc<dyn Store>,
    /// The same store, for lookups. A bucket's is a client of its own: an HTTP client keeps
    /// its connections on the runtime that opened them, so lookups (on the serving threads)
    /// and uploads (on the upload thread) must not share a pool, or an upload would run its
    /// I/O on a serving thread, and fail once the serving threads stop at shutdown.
    pub last_reads: Arc<dyn Store>,
    /// Which tier `last` is.
    pub last_tier: Tier,
    /// The disk tier in front of a bucket (`CACHE_DIR` set with `S3_BUCKET`); its `.spool`
    /// holds the uploads waiting for the bucket.
    pub disk: Option<Arc<fs::FsStore>>,
}

impl Stores {
    /// A bucket alone, reached through one client for uploads and another for lookups.
    pub fn bucket(uploads: Arc<dyn Store>, lookups: Arc<dyn Store>) -> Stores {
        Stores {
            last: uploads,
            last_reads: lookups,
            last_tier: Tier::Bucket,
            disk: None,
        }
    }

    /// A local directory alone.
    pub fn local(store: Arc<dyn Store>) -> Stores {
        Stores {
            last: store.clone(),
            last_reads: store,
            last_tier: Tier::Disk,
            disk: None,
        }
    }

    /// The stores in one line (health endpoint, start-up log).
    pub fn describe(&self) -> String {
        match &self.disk {
            Some(disk) => format!(
                "{}, with a disk tier in {}",
                self.last.describe(),
                disk.describe()
            ),
            None => self.last.describe(),
        }
    }
}

/// A store alone, as a bucket read and written through one client (tests that don't mind it).
impl From<Arc<dyn Store>> for Stores {
    fn from(store: Arc<dyn Store>) -> Stores {
        Stores::bucket(store.clone(), store)
    }
}

impl<S: Store> From<Arc<S>> for Stores {
    fn from(store: Arc<S>) -> Stores {
        Stores::bucket(store.clone(), store)
    }
}

/// Opens the stores `storage` names: S3 when `S3_BUCKET` is set, with the disk tier in
/// `CACHE_DIR` in front when that is set too; else `CACHE_DIR` alone. A call to the bucket may
/// take `call_timeout` (`UPLOAD_TIMEOUT_SECS`).
///
/// # Errors
/// The directory in `CACHE_DIR` cannot be used (the error names the path).
pub async fn open_store(
    storage: &StorageConfig,
    call_timeout: Duration,
) -> std::io::Result<Stores> {
    Ok(match storage {
        StorageConfig::Local(disk) => Stores::local(open_disk(disk).await?),
        StorageConfig::S3(s3, disk) => {
            let mut stores = Stores::bucket(
                Arc::new(s3::S3Store::from_config(s3, call_timeout).await),
                Arc::new(s3::S3Store::from_config(s3, call_timeout).await),
            );
            if let Some(disk) = disk {
                stores.disk = Some(open_disk(disk).await?);
            }
            stores
        }
    })
}

/// Opens the disk tier (walking what it holds already, which takes a while for a big one).
async fn open_disk(disk: &DiskConfig) -> std::io::Result<Arc<fs::FsStore>> {
    let (dir, max_bytes) = (disk.dir.clone(), disk.max_bytes);
    let store = tokio::task::spawn_blocking(move || fs::FsStore::open(dir, max_bytes))
        .await
        .map_err(std::io::Error::other)??;
    Ok(Arc::new(store))
}

/// A tier that holds finished results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Memory,
    Disk,
    Bucket,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Memory => "memory",
            Tier::Disk => "disk",
            Tier::Bucket => "bucket",
        }
    }
}

/// Disk-tier writes running at once; past it a result is not copied to disk (it is in the
/// bucket or on its way there).
const DISK_WRITES_MAX: usize = 4;

/// The one object the proxy talks to about stored results, shared by every serving thread.
pub struct Cache {
    key_prefix: String,
    negotiation: Negotiation,
    rules: Rules,
    read: ReadConfig,
    memory: Memory,
    stores: Stores,
    /// The bucket's lookups, behind their timeout and breaker; `None` without a bucket or with
    /// `BUCKET_READS=false`.
    bucket: Option<ReadGuard>,
    flights: Arc<Flights>,
    queue: UploadQueue,
    metrics: Arc<CacheMetrics>,
    disk_writes: Arc<Semaphore>,
    /// The disk tier in front of the bucket, bypassed while it fails.
    disk_guard: Arc<disk_guard::DiskGuard>,
    /// Keys of stale results being rendered again in the background: one at a time per key.
    refreshing: Arc<Mutex<HashSet<String>>>,
    /// Advice on a reason that may mean nothing gets stored is logged once per reason; the
    /// metric counts every case.
    hinted: Hinted,
    /// "Result body failed midway", at most once per interval.
    midway_log: LogInterval,
}

#[derive(Default)]
struct Hinted {
    vary: AtomicBool,
    short_lived: AtomicBool,
    variant: AtomicBool,
}

/// What the cache has for a request, asked before the upstream is called.
pub enum Lookup {
    /// A complete result in memory.
    Hit(Hit),
    /// A result found in the disk tier or the bucket: its head, and its body as it is read.
    Stored(Attached, Tier),
    /// A render or a read of a lower tier is in flight for the key: wait for its head, then
    /// stream its body.
    Join(Joining),
    /// Nothing to serve from here: forward the request, then [`Miss::decide`] on the answer.
    Miss(Miss),
}

/// What [`Cache::purge`] removed: per tier, whether any of the keys was there (`None`: no
/// such tier; an error: the tier could not be asked, and may still hold one).
#[derive(Debug)]
pub struct Purged {
    /// The plain key, then the key of every format variant.
    pub keys: Vec<String>,
    pub memory: bool,
    pub disk: Option<Result<bool, store::StoreError>>,
    pub bucket: Option<Result<bool, store::StoreError>>,
}

/// A result found in memory.
pub struct Hit {
    pub object: Arc<Object>,
    pub freshness: Freshness,
}

/// A request that found a flight for its key.
pub struct Joining {
    follower: Follower,
    /// What the request becomes when the flight can't serve it.
    fallback: Miss,
    timeout: Duration,
}

/// What a request that joined a flight gets.
pub enum Joined {
    /// The flight's head and a reader of its body from the first byte.
    Attached(Attached, Tier),
    /// A follower of a render by another request.
    Coalesced(Attached),
    /// The flight can't serve it: ask the upstream.
    Miss(Miss),
}

impl Joining {
    /// Waits at most `COALESCE_TIMEOUT_SECS` for the flight's head.
    pub async fn attach(self) -> Joined {
        let Joining {
            follower,
            fallback,
            timeout,
        } = self;
        match follower.attach(timeout).await {
            Ok(attached) => match attached.source {
                Source::Upstream => {
                    fallback.counted(LookupResult::Coalesced);
                    Joined::Coalesced(attached)
                }
                Source::Disk => {
                    fallback.counted(LookupResult::HitDisk);
                    Joined::Attached(attached, Tier::Disk)
                }
                Source::Bucket => {
                    fallback.counted(LookupResult::HitBucket);
                    Joined::Attached(attached, Tier::Bucket)
                }
            },
            Err(why) => {
                tracing::debug!(key = %fallback.key, ?why, "flight released a follower");
                fallback.counted(LookupResult::Released);
                Joined::Miss(fallback)
            }
        }
    }
}

/// A request the upstream must answer; remembers what the storing decision needs of it.
pub struct Miss {
    cache: Arc<Cache>,
    key: String,
    /// The `Accept` class the key is for, and what the stored result may be.
    variant: Variant,
    method: Method,
    ranged: bool,
    /// The request leads the key's flight: its followers wait for this answer.
    leader: Option<Leader>,
    /// A background rendering of a stale result: its copy replaces the stored one.
    refresh: Option<Refreshing>,
}

/// A key being rendered again in the background; dropping it lets the next stale hit of the
/// key start another.
pub struct Refreshing {
    keys: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl Drop for Refreshing {
    fn drop(&mut self) {
        self.keys
            .lock()
            .expect("no code panics while holding this lock")
            .remove(&self.key);
    }
}

impl Cache {
    /// A cache over `stores`, keyed under `key_prefix` (one key per `Accept` class of what
    /// the upstream negotiates), storing what `rules` allow, reading as `read` says. The
    /// upload queue starts on its own thread; the returned [`Uploader`] drains it at shutdown.
    pub fn start(
        stores: Stores,
        key_prefix: String,
        negotiation: Negotiation,
        rules: Rules,
        read: ReadConfig,
        upload: UploadConfig,
        metrics: Arc<CacheMetrics>,
    ) -> (Arc<Cache>, Uploader) {
        let known = Arc::new(KnownKeys::new(upload.known_keys_capacity));
        let (queue, uploader) = UploadQueue::start(
            stores.last.clone(),
            stores.disk.clone(),
            upload,
            known,
            metrics.clone(),
        );
        let memory = Memory::new(
            read.memory_max_bytes,
            read.memory_max_object_bytes.min(rules.max_bytes),
            metrics.memory_evictions.clone(),
        );
        let bucket = (stores.last_tier == Tier::Bucket && read.bucket_reads).then(|| {
            ReadGuard::new(
                stores.last_reads.clone(),
                read.guard,
                metrics.bucket_reads.clone(),
            )
        });
        let disk_guard = Arc::new(disk_guard::DiskGuard::new(&read.guard));
        let cache = Cache {
            key_prefix,
            negotiation,
            rules,
            read,
            memory,
            stores,
            bucket,
            flights: Arc::default(),
            queue,
            metrics,
            disk_writes: Arc::new(Semaphore::new(DISK_WRITES_MAX)),
            disk_guard,
            refreshing: Arc::default(),
            hinted: Hinted::default(),
            midway_log: LogInterval::new(),
        };
        (Arc::new(cache), uploader)
    }

    /// What a request for `path` with `accept` (its first `Accept` header) may get: the key's
    /// class, and the `Accept` to ask the upstream with.
    pub fn variant(&self, path: &str, accept: Option<&http::HeaderValue>) -> Variant {
        self.negotiation.variant(path, accept)
    }

    fn key(&self, path: &str, variant: &Variant) -> String {
        variant.key(&cache_key(&self.key_prefix, path))
    }

    /// Where `method path` can be answered from, for a request of `variant` (see
    /// [`Cache::variant`]). `ranged`: the request has a `Range` header.
    ///
    /// `GET` and `HEAD` read through the tiers: memory, then a flight in progress, then (as
    /// the key's new leader) the disk tier and the bucket. Any other method goes to the
    /// upstream untouched. A `HEAD` never leads a render: when no tier has the key it goes to
    /// the upstream as it came, and the followers it gathered ask for themselves.
    pub async fn lookup(
        self: &Arc<Self>,
        method: &Method,
        path: &str,
        variant: Variant,
        ranged: bool,
    ) -> Lookup {
        let key = self.key(path, &variant);
        let class = variant.class();
        let miss = |leader| Miss {
            cache: self.clone(),
            key: key.clone(),
            variant,
            method: method.clone(),
            ranged,
            leader,
            refresh: None,
        };
        if method != Method::GET && method != Method::HEAD {
            self.metrics.lookup(LookupResult::Bypass, None);
            return Lookup::Miss(miss(None));
        }
        if let Some(object) = self.memory.get(&key) {
            self.metrics.lookup(LookupResult::HitMemory, class);
            let freshness = freshness(&object.meta, SystemTime::now());
            return Lookup::Hit(Hit { object, freshness });
        }
        let leader = match self.flights.join(&key) {
            Role::Follower(follower) => {
                return Lookup::Join(Joining {
                    follower,
                    fallback: miss(None),
                    timeout: self.read.coalesce_timeout,
                });
            }
            Role::Leader(leader) => leader,
        };
        let leader = match self.read_tiers(&key, leader).await {
            Ok((attached, tier)) => {
                let result = match tier {
                    Tier::Disk => LookupResult::HitDisk,
                    _ => LookupResult::HitBucket,
                };
                self.metrics.lookup(result, class);
                return Lookup::Stored(attached, tier);
            }
            Err(leader) => leader,
        };
        self.metrics.lookup(LookupResult::Miss, class);
        if method == Method::HEAD {
            leader.release(Release::NotStorable);
            return Lookup::Miss(miss(None));
        }
        Lookup::Miss(miss(Some(leader)))
    }

    /// Asks the disk tier, then the bucket, for `key`. Found: the leader's flight is fed from
    /// that store, and the leader reads it like any follower.
    async fn read_tiers(
        self: &Arc<Self>,
        key: &str,
        leader: Leader,
    ) -> Result<(Attached, Tier), Leader> {
        let mut local = Vec::with_capacity(2);
        if let Some(disk) = &self.stores.disk
            && let Some(ticket) = self.disk_guard.admit(DiskOp::Read, &self.metrics)
        {
            local.push((disk.clone() as Arc<dyn Store>, Some(ticket)));
        }
        if self.stores.last_tier == Tier::Disk {
            local.push((self.stores.last_reads.clone(), None));
        }
        for (disk, ticket) in local {
            let timeout = self.read.guard.read_timeout;
            let read = tokio::time::timeout(timeout, disk.read(key)).await;
            let failure = match &read {
                Ok(Ok(_)) => None,
                Ok(Err(error)) => Some(error.to_string()),
                Err(_) => Some(format!("no answer within {timeout:?}")),
            };
            match (ticket, failure) {
                (Some(ticket), None) => ticket.succeeded(),
                (Some(ticket), Some(error)) => {
                    ticket.failed(key, &error, &self.metrics);
                }
                (None, Some(error)) => tracing::debug!(%key, %error, "local store read failed"),
                (None, None) => {}
            }
            let Ok(Ok(Some(reading))) = read else {
                continue;
            };
            return Ok((
                self.publish_reading(key, leader, reading, Tier::Disk),
                Tier::Disk,
            ));
        }
        if let Some(bucket) = &self.bucket
            && let Guarded::Found(reading) = bucket.read(key).await
        {
            let attached = self.publish_reading(key, leader, reading, Tier::Bucket);
            return Ok((attached, Tier::Bucket));
        }
        Err(leader)
    }

    /// Feeds the leader's flight from a store's reading, and answers the leader from it. An
    /// object too large to hold (above `MAX_CACHEABLE_BYTES`), or one that finds the budget
    /// full, streams to the leader alone instead, neither shared nor promoted: a stored result
    /// is never rendered again for want of memory. Its followers then ask for themselves.
    fn publish_reading(
        self: &Arc<Self>,
        key: &str,
        leader: Leader,
        reading: Reading,
        tier: Tier,
    ) -> Attached {
        let source = match tier {
            Tier::Disk => Source::Disk,
            _ => Source::Bucket,
        };
        let held = (reading.len <= self.rules.max_bytes)
            .then(|| self.queue.hold_twice(reading.len))
            .flatten();
        let Some((chunks, hold)) = held else {
            tracing::debug!(%key, len = reading.len, "stored object streamed unshared: too large or no room");
            leader.release(Release::NoRoom);
            return Attached {
                meta: Arc::new(reading.meta),
                len: reading.len,
                source,
                body: reading.body,
            };
        };
        let publisher = leader.publish(reading.meta, reading.len, source, Some(chunks));
        let attached = publisher.attached();
        let pump = Pump {
            cache: self.clone(),
            publisher,
            hold,
        };
        tokio::spawn(pump.run(reading.body));
        attached
    }

    /// The stores, in one line (health endpoint, start-up log).
    pub fn describe(&self) -> String {
        self.stores.describe()
    }

    /// A background `GET` of `path`, to replace its stale stored result; `None` when one is
    /// already under way. The caller sends it upstream and reads the answer to its end, with
    /// no client: the copy replaces the result in memory, the disk tier and the bucket.
    pub fn refresh(self: &Arc<Self>, path: &str, variant: Variant) -> Option<Miss> {
        let key = self.key(path, &variant);
        let fresh = self
            .refreshing
            .lock()
            .expect("no code panics while holding this lock")
            .insert(key.clone());
        fresh.then(|| Miss {
            cache: self.clone(),
            key: key.clone(),
            variant,
            method: Method::GET,
            ranged: false,
            leader: None,
            refresh: Some(Refreshing {
                keys: self.refreshing.clone(),
                key,
            }),
        })
    }

    /// Removes the result for `path` from every tier and the bucket. A render of it in flight
    /// right now still lands afterwards.
    pub async fn purge(&self, path: &str) -> Purged {
        let keys = variant::every_key(&cache_key(&self.key_prefix, path));
        let mut memory = false;
        let mut disk = None;
        let mut last = Ok(false);
        for key in &keys {
            memory |= self.memory.remove(key);
            self.queue.forget(key);
            if let Some(store) = &self.stores.disk {
                disk = Some(either(disk.unwrap_or(Ok(false)), store.delete(key).await));
            }
            last = either(last, self.stores.last.delete(key).await);
        }
        self.record_memory();
        let (disk, bucket) = match self.stores.last_tier {
            Tier::Disk => (Some(last), None),
            _ => (disk, Some(last)),
        };
        Purged {
            keys,
            memory,
            disk,
            bucket,
        }
    }

    /// Uploads waiting or running right now.
    pub fn pending(&self) -> usize {
        self.queue.pending()
    }

    /// Counts and logs a response that is not stored, for `reason`.
    fn not_stored(&self, key: &str, reason: NotCacheable) {
        self.metrics.not_cacheable(reason);
        tracing::debug!(%key, reason = reason.as_str(), "response not stored");
    }

    /// A response the policy refused: counted, with one-time advice where the reason may
    /// mean that nothing at all gets stored.
    fn refused(&self, key: &str, reason: NotCacheable) {
        match reason {
            NotCacheable::Vary => {
                self.metrics.upload(Outcome::SkippedVary);
                if !self.hinted.vary.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        %key,
                        "the upstream answered with a `Vary` the proxy cannot key on: such \
                         results are never stored. For `Vary: Accept` (IMGPROXY_AUTO_WEBP/AVIF, \
                         IMGPROXY_ENFORCE_*), give the proxy the same IMGPROXY_* variables, or \
                         UPSTREAM_NEGOTIATION for a remote imgproxy"
                    );
                }
            }
            NotCacheable::Variant if !self.hinted.variant.swap(true, Ordering::Relaxed) => {
                tracing::warn!(
                    %key,
                    "a WebP or AVIF result answered a request whose `Accept` class does not \
                     name that format, so it was not stored: the upstream negotiates a format \
                     the proxy was not told of (UPSTREAM_NEGOTIATION, IMGPROXY_AUTO_*, \
                     IMGPROXY_ENFORCE_*), or IMGPROXY_PREFERRED_FORMATS keeps WebP/AVIF sources"
                );
            }
            NotCacheable::ShortLived if !self.hinted.short_lived.swap(true, Ordering::Relaxed) => {
                tracing::warn!(
                    %key,
                    min_secs = self.rules.min_max_age.as_secs(),
                    "a result allowed to live less than MIN_STORE_MAX_AGE_SECS was not stored \
                     (an `expires` URL, or a short IMGPROXY_TTL); lower the setting if \
                     short-lived results may stay in the bucket for good"
                );
            }
            _ => {}
        }
        self.not_stored(key, reason);
    }

    /// A flight's body arrived whole: memory first (so the next request finds it there
    /// before the flight is gone), then the stores below that don't have it yet.
    fn landed(self: &Arc<Self>, publisher: Publisher, hold: Hold, object: Object) {
        let key = publisher.key().to_owned();
        let source = publisher.source();
        self.hold_in_memory(&key, &object);
        publisher.land();
        match source {
            Source::Upstream => {
                let then = self.copy_to_disk_later(&key, &object);
                self.queue.offer_held(&key, hold, object, then);
            }
            Source::Bucket => {
                drop(hold);
                self.queue.remember(&key);
                if let Some(disk) = &self.stores.disk {
                    self.write_disk(disk.clone(), &key, object);
                }
            }
            Source::Disk => {}
        }
    }

    /// A result the upstream rendered, complete: into memory now, and into the disk tier once
    /// the upload queue has it (what it returns is for [`UploadQueue::offer`]).
    fn rendered(self: &Arc<Self>, key: &str, object: &Object) -> Then {
        self.hold_in_memory(key, object);
        self.copy_to_disk_later(key, object)
    }

    /// The copy of a result into the disk tier in front of a bucket, if there is one, to run
    /// once the result is in the upload spool ([`Then`]); on the runtime this is called on.
    fn copy_to_disk_later(self: &Arc<Self>, key: &str, object: &Object) -> Then {
        if self.stores.disk.is_none() {
            return Box::new(|| {});
        }
        let (cache, key, object) = (self.clone(), key.to_owned(), object.clone());
        let runtime = tokio::runtime::Handle::current();
        Box::new(move || {
            let _on = runtime.enter();
            if let Some(disk) = &cache.stores.disk {
                cache.write_disk(disk.clone(), &key, object);
            }
        })
    }

    /// Copies a result into the disk tier in the background, when a write slot is free and
    /// the tier is not bypassed.
    fn write_disk(&self, disk: Arc<fs::FsStore>, key: &str, object: Object) {
        let Ok(slot) = self.disk_writes.clone().try_acquire_owned() else {
            tracing::debug!(%key, "disk tier busy, result not copied to it");
            return;
        };
        let Some(ticket) = self.disk_guard.admit(DiskOp::Write, &self.metrics) else {
            return;
        };
        let (key, metrics) = (key.to_owned(), self.metrics.clone());
        tokio::spawn(async move {
            match disk.put(&key, &object, PutMode::Overwrite).await {
                Ok(_) => ticket.succeeded(),
                Err(error) => ticket.failed(&key, &error, &metrics),
            }
            drop(slot);
        });
    }

    /// Puts a finished result in the memory tier (if it is admitted there).
    fn hold_in_memory(&self, key: &str, object: &Object) {
        self.memory.insert(key, Arc::new(object.clone()));
        self.record_memory();
    }

    /// Brings the gauges of what the tiers hold up to date (before a scrape).
    pub fn record_usage(&self) {
        self.record_memory();
        let usage = match (&self.stores.disk, self.stores.last_tier) {
            (Some(disk), _) => Some(disk.usage()),
            (None, Tier::Disk) => self.stores.last.usage(),
            (None, _) => None,
        };
        if let Some(usage) = usage {
            let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            self.metrics.disk_bytes.set(gauge(usage.bytes));
            self.metrics.disk_entries.set(gauge(usage.entries));
            let counted = self.metrics.disk_evictions.get();
            self.metrics
                .disk_evictions
                .inc_by(usage.evictions.saturating_sub(counted));
        }
    }

    fn record_memory(&self) {
        let (bytes, entries) = self.memory.usage();
        self.metrics
            .memory_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.metrics
            .memory_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
    }
}

/// Two deletes as one: removed if either removed something; the first error if one failed.
fn either(
    a: Result<bool, store::StoreError>,
    b: Result<bool, store::StoreError>,
) -> Result<bool, store::StoreError> {
    Ok(a? | b?)
}

impl Miss {
    /// Counts how this request's lookup ended, under its class when formats are negotiated.
    fn counted(&self, result: LookupResult) {
        self.cache.metrics.lookup(result, self.variant.class());
    }

    /// Whether this request leads its key's flight. A leader asks the upstream for the whole
    /// result: the caller removes `Range`, `If-Range`, `If-None-Match` and `If-Modified-Since`
    /// before forwarding, and answers the client's own conditions from the flight.
    pub fn leads(&self) -> bool {
        self.leader.is_some()
    }

    /// The upstream answered with `status` and `headers`, as received (the body's framing is
    /// among the hop-by-hop headers): may the response be stored?
    pub fn decide(self, status: StatusCode, headers: &HeaderMap, now: SystemTime) -> Verdict {
        let ranged = self.ranged && !self.leads();
        let verdict = policy::decide(
            &self.method,
            ranged,
            status,
            headers,
            &self.cache.rules,
            &self.variant,
            now,
        );
        if let Cacheable::No(reason) = verdict {
            self.cache.refused(&self.key, reason);
        }
        Verdict {
            miss: self,
            verdict,
            now,
        }
    }
}

/// A decided response, waiting for its end-to-end headers.
pub struct Verdict {
    miss: Miss,
    verdict: Cacheable,
    now: SystemTime,
}

/// How a decided response's body reaches its client.
pub enum Reply {
    /// Straight from the upstream to this client, through the copy when there is one.
    Direct(Option<Fill>),
    /// Through the key's flight: run the [`Pump`] on the upstream body and answer this client
    /// (and every follower) from the flight.
    Shared(Pump),
}

impl Verdict {
    /// How the body goes on; `headers` are the ones that go with the object (hop-by-hop ones
    /// removed). A leader's storable answer with a length is shared through the flight; one
    /// without a length is copied as it streams to the leader alone; anything else streams
    /// uncopied, and the followers ask the upstream themselves.
    pub fn reply(self, headers: &HeaderMap) -> Reply {
        let Verdict { miss, verdict, now } = self;
        let Miss {
            cache,
            key,
            leader,
            refresh,
            ..
        } = miss;
        let expected_len = match verdict {
            Cacheable::Yes { expected_len } => expected_len,
            Cacheable::No(_) => {
                if let Some(leader) = leader {
                    leader.release(Release::NotStorable);
                }
                return Reply::Direct(None);
            }
        };
        let meta = Meta::from_headers(headers, now);
        match (leader, expected_len) {
            (Some(leader), Some(len)) => match cache.queue.hold_twice(len) {
                Some((chunks, hold)) => {
                    let publisher = leader.publish(meta, len, Source::Upstream, Some(chunks));
                    Reply::Shared(Pump {
                        cache,
                        publisher,
                        hold,
                    })
                }
                None => {
                    leader.release(Release::NoRoom);
                    cache.queue.record(&key, Offer::Dropped(DropReason::Bytes));
                    Reply::Direct(None)
                }
            },
            (leader, expected_len) => {
                if let Some(leader) = leader {
                    leader.release(Release::NoLength);
                }
                let reserved = match refresh {
                    Some(_) => cache.queue.reserve_replacing(&key, expected_len),
                    None => cache.queue.reserve(&key, expected_len),
                };
                match reserved {
                    Err(early) => {
                        cache.queue.record(&key, early);
                        Reply::Direct(None)
                    }
                    Ok(reservation) => Reply::Direct(Some(Fill::new(
                        cache,
                        key,
                        meta,
                        expected_len,
                        reservation,
                        refresh,
                    ))),
                }
            }
        }
    }
}

/// Feeds a flight from a body, on a task of its own: the render goes on whoever leaves.
pub struct Pump {
    cache: Arc<Cache>,
    publisher: Publisher,
    hold: Hold,
}

impl Pump {
    /// The flight's head, and a reader of its body from the first byte.
    pub fn attached(&self) -> Attached {
        self.publisher.attached()
    }

    /// Reads `body` into the flight to its end, then stores the result.
    pub async fn run<E: std::fmt::Display>(
        mut self,
        body: impl Stream<Item = Result<Bytes, E>> + Send,
    ) {
        let key = self.publisher.key().to_owned();
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let pushed = match chunk {
                Ok(chunk) => self.publisher.push(chunk).map_err(|e| e.to_string()),
                Err(error) => Err(error.to_string()),
            };
            if let Err(error) = pushed {
                if self.cache.midway_log.should_log() {
                    tracing::warn!(%key, %error, quiet_for = ?log_interval::LOG_INTERVAL, "result body failed midway; more are counted (not_cacheable, reason incomplete), not logged, for a while");
                }
                self.cache.not_stored(&key, NotCacheable::Incomplete);
                return;
            }
        }
        match self.publisher.complete() {
            Some(object) => self.cache.landed(self.publisher, self.hold, object),
            None => self.cache.not_stored(&key, NotCacheable::Incomplete),
        }
    }
}
