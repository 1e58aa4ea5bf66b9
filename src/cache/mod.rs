//! The cache: what the proxy asks before and after calling the upstream. [`Cache`] owns the
//! protocol — the key, the storing policy's verdict, the copy ([`Fill`]), the upload queue and
//! its drain — so `proxy/` only moves bytes.
//!
//! - `key`: the key rule (MD5 of the path, under `S3_FOLDER`).
//! - `policy`: whether a response may be stored (pure: takes `now`).
//! - `fill`: the copy of one response as it streams.
//! - `known`: keys this process has seen stored (the first dedup).
//! - `queue` and `upload`: the bounded upload queue, its retries and dedup against the store.
//! - `store`, `s3`, `fs`: the [`Store`] trait and its two implementations (a bucket, a local
//!   directory).
//! - `metrics`: the cache's metrics, with enum labels.
//!
//! A new tier (memory, disk) is another [`Store`]-like layer that [`Cache::lookup`] asks before
//! it answers [`Lookup::Miss`].

pub mod config;
mod fill;
pub mod fs;
pub mod key;
mod known;
pub mod metrics;
pub mod object;
pub mod policy;
mod queue;
pub mod s3;
pub mod store;
mod upload;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, Method, StatusCode};

use config::{StorageConfig, UploadConfig};
pub use fill::Fill;
pub use key::cache_key;
use known::KnownKeys;
use metrics::{CacheMetrics, Outcome};
pub use object::{Meta, Object, Reading};
use policy::{Cacheable, NotCacheable, Rules};
use queue::UploadQueue;
pub use queue::{DrainReport, Uploader};
pub use store::Store;

/// Opens the store `storage` names: S3 when `S3_BUCKET` is set, else `CACHE_DIR`. A call to
/// the bucket may take `call_timeout` (`UPLOAD_TIMEOUT_SECS`).
///
/// # Errors
/// The local directory cannot be created.
pub async fn open_store(
    storage: &StorageConfig,
    call_timeout: Duration,
) -> std::io::Result<Arc<dyn Store>> {
    Ok(match storage {
        StorageConfig::Local { dir } => Arc::new(fs::FsStore::open(dir, fs::DEFAULT_MAX_BYTES)?),
        StorageConfig::S3(s3) => Arc::new(s3::S3Store::from_config(s3, call_timeout).await),
    })
}

/// The one object the proxy talks to about storing, shared by every serving thread.
pub struct Cache {
    key_prefix: String,
    rules: Rules,
    store: Arc<dyn Store>,
    queue: UploadQueue,
    metrics: Arc<CacheMetrics>,
    /// Advice on a reason that may mean nothing gets stored is logged once per reason; the
    /// metric counts every case.
    hinted: Hinted,
}

#[derive(Default)]
struct Hinted {
    vary: AtomicBool,
    short_lived: AtomicBool,
}

/// What the cache has for a request, asked before the upstream is called.
pub enum Lookup {
    /// Nothing to serve from here: forward the request, then [`Miss::decide`] on the answer.
    /// (The read path adds a hit, and joining a fill already in flight.)
    Miss(Miss),
}

/// A request the upstream must answer; remembers what the storing decision needs of it.
pub struct Miss {
    cache: Arc<Cache>,
    key: String,
    method: Method,
    ranged: bool,
}

impl Cache {
    /// A cache over `store`, keyed under `key_prefix`, storing what `rules` allow. The upload
    /// queue starts on its own thread; the returned [`Uploader`] drains it at shutdown.
    pub fn start(
        store: Arc<dyn Store>,
        key_prefix: String,
        rules: Rules,
        upload: UploadConfig,
        metrics: Arc<CacheMetrics>,
    ) -> (Arc<Cache>, Uploader) {
        let known = Arc::new(KnownKeys::new(upload.known_keys_capacity));
        let (queue, uploader) = UploadQueue::start(store.clone(), upload, known, metrics.clone());
        let cache = Cache {
            key_prefix,
            rules,
            store,
            queue,
            metrics,
            hinted: Hinted::default(),
        };
        (Arc::new(cache), uploader)
    }

    /// Where `method path` can be answered from. `ranged`: the request has a `Range` header.
    pub fn lookup(self: &Arc<Self>, method: &Method, path: &str, ranged: bool) -> Lookup {
        Lookup::Miss(Miss {
            cache: self.clone(),
            key: cache_key(&self.key_prefix, path),
            method: method.clone(),
            ranged,
        })
    }

    /// The store, in one line (health endpoint, start-up log).
    pub fn describe(&self) -> String {
        self.store.describe()
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
                        "the upstream answered with `Vary: Accept` (IMGPROXY_AUTO_WEBP/AVIF or \
                         ENFORCE_*): such results are never stored; put the format in the URL \
                         (`@webp`, `.avif`, `f:webp`) to make them cacheable"
                    );
                }
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
}

impl Miss {
    /// The upstream answered with `status` and `headers`, as received (the body's framing is
    /// among the hop-by-hop headers): may the response be stored?
    pub fn decide(self, status: StatusCode, headers: &HeaderMap, now: SystemTime) -> Verdict {
        let verdict = policy::decide(
            &self.method,
            self.ranged,
            status,
            headers,
            &self.cache.rules,
            now,
        );
        if let Cacheable::No(reason) = verdict {
            self.cache.refused(&self.key, reason);
        }
        Verdict {
            miss: self,
            verdict,
        }
    }
}

/// A decided response, waiting for its end-to-end headers.
pub struct Verdict {
    miss: Miss,
    verdict: Cacheable,
}

impl Verdict {
    /// The fill to feed the body through, for a response to be stored; `headers` are the
    /// ones that go with the object (hop-by-hop ones removed). `None` streams the body
    /// uncopied: not storable, stored already, being copied by another request, or no room
    /// to hold it.
    pub fn fill(self, headers: &HeaderMap) -> Option<Fill> {
        let Cacheable::Yes { expected_len } = self.verdict else {
            return None;
        };
        let Miss { cache, key, .. } = self.miss;
        match cache.queue.reserve(&key, expected_len) {
            Err(early) => {
                cache.queue.record(&key, early);
                None
            }
            Ok(reservation) => Some(Fill::new(
                cache,
                key,
                header_string(headers, &CONTENT_TYPE).unwrap_or_default(),
                header_string(headers, &CACHE_CONTROL),
                expected_len,
                reservation,
            )),
        }
    }
}

fn header_string(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
