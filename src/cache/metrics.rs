//! The cache's metrics, declared and described once, here; the proxy registers them beside its
//! own (`proxy::metrics`). Labels are enums, so a value can't be misspelt at a call site.

use std::fmt::Write;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::policy::NotCacheable;
use super::variant::Class;

/// What became of a result handed to the upload path: the `outcome` label of
/// `imgproxy_cache_uploads_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    Stored,
    /// The store had it already (HEAD, or a conditional PUT refused).
    SkippedExists,
    /// Stored earlier by this process.
    SkippedKnown,
    /// Another request of the same key is copying or uploading it.
    SkippedInFlight,
    /// `Vary: Accept`: the result depends on the client's `Accept` (also counted as
    /// `not_cacheable{reason="vary"}`).
    SkippedVary,
    /// No room: `UPLOAD_QUEUE_CAPACITY` or `UPLOAD_QUEUE_MAX_BYTES` reached.
    DroppedFull,
    /// Shutdown had begun.
    DroppedShutdown,
    Failed,
    /// Shutdown's deadline came first.
    Abandoned,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Stored => "stored",
            Outcome::SkippedExists => "skipped_exists",
            Outcome::SkippedKnown => "skipped_known",
            Outcome::SkippedInFlight => "skipped_in_flight",
            Outcome::SkippedVary => "skipped_vary",
            Outcome::DroppedFull => "dropped_full",
            Outcome::DroppedShutdown => "dropped_shutdown",
            Outcome::Failed => "failed",
            Outcome::Abandoned => "abandoned",
        }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

impl EncodeLabelValue for NotCacheable {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// How a lookup before the upstream ended: the `result` label of
/// `imgproxy_cache_lookups_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum LookupResult {
    HitMemory,
    HitDisk,
    HitBucket,
    /// Joined a render in flight for the key.
    Coalesced,
    /// Waited for a flight that could not serve it (not storable, no room, or
    /// `COALESCE_TIMEOUT_SECS`), then asked the upstream.
    Released,
    /// No tier had it: the request renders it.
    Miss,
    /// Not a `GET` or `HEAD`: straight to the upstream.
    Bypass,
}

impl LookupResult {
    pub fn as_str(self) -> &'static str {
        match self {
            LookupResult::HitMemory => "hit_memory",
            LookupResult::HitDisk => "hit_disk",
            LookupResult::HitBucket => "hit_bucket",
            LookupResult::Coalesced => "coalesced",
            LookupResult::Released => "released",
            LookupResult::Miss => "miss",
            LookupResult::Bypass => "bypass",
        }
    }
}

impl EncodeLabelValue for LookupResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabel {
    result: LookupResult,
}

/// An `Accept` class, as a label value.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct ClassValue(Class);

impl EncodeLabelValue for ClassValue {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.0.name())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VariantLookupLabel {
    variant: ClassValue,
    result: LookupResult,
}

/// What happened to a result in the upload spool (`CACHE_DIR/.spool`): the `event` label of
/// `imgproxy_cache_upload_spool_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum SpoolEvent {
    /// Written to the spool on its way to the bucket.
    Written,
    /// Found in the spool at start-up and queued again.
    Resumed,
    /// Could not be written (the disk is full of waiting results, or failing): held in
    /// memory instead, as without a spool.
    WriteFailed,
    /// Damaged (cut short, a checksum that does not match): removed, never uploaded.
    Damaged,
    /// Still waiting at shutdown: left in the spool for the next start.
    Kept,
}

impl SpoolEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            SpoolEvent::Written => "written",
            SpoolEvent::Resumed => "resumed",
            SpoolEvent::WriteFailed => "write_failed",
            SpoolEvent::Damaged => "damaged",
            SpoolEvent::Kept => "kept",
        }
    }
}

impl EncodeLabelValue for SpoolEvent {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// A disk-tier operation that failed: the `op` label of `imgproxy_cache_disk_errors_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum DiskOp {
    Read,
    Write,
}

impl DiskOp {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskOp::Read => "read",
            DiskOp::Write => "write",
        }
    }
}

impl EncodeLabelValue for DiskOp {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DiskOpLabel {
    op: DiskOp,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SpoolLabel {
    event: SpoolEvent,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: NotCacheable,
}

pub struct CacheMetrics {
    /// Results handed to the upload path, by [`Outcome`].
    uploads: Family<OutcomeLabel, Counter>,
    /// Responses not offered for storage, by [`NotCacheable`] reason.
    not_cacheable: Family<ReasonLabel, Counter>,
    /// Store calls repeated after a transient error.
    pub upload_retries: Counter,
    /// Uploads waiting or running.
    pub queue_depth: Gauge,
    /// Bytes held by copies in flight and by uploads waiting or running.
    pub queue_bytes: Gauge,
    /// The upload spool, by [`SpoolEvent`].
    spool: Family<SpoolLabel, Counter>,
    /// Results in the upload spool right now.
    pub spool_files: Gauge,

    // The read path.
    /// Lookups before the upstream, by [`LookupResult`].
    lookups: Family<LookupLabel, Counter>,
    /// The same, by `Accept` class, when formats are negotiated.
    variant_lookups: Family<VariantLookupLabel, Counter>,
    /// Bytes held by the memory tier (bodies, metadata, keys and an estimate of overhead).
    pub memory_bytes: Gauge,
    pub memory_entries: Gauge,
    /// Results the memory tier pushed out to make room.
    pub memory_evictions: Counter,
    /// Bytes the disk tier holds (in whole file-system blocks), at the last scrape.
    pub disk_bytes: Gauge,
    pub disk_entries: Gauge,
    /// Results the disk tier removed to make room.
    pub disk_evictions: Counter,
    /// Disk-tier reads and copies that failed, by [`DiskOp`].
    disk_errors: Family<DiskOpLabel, Counter>,
    /// Disk-tier reads and copies skipped while the tier was failing (`disk_guard`).
    pub disk_bypassed: Counter,
    /// Lookups in the bucket before the upstream (`cache::guard`).
    pub bucket_reads: BucketReadMetrics,
}

impl CacheMetrics {
    /// The cache's metrics, registered in `registry`.
    pub fn register(registry: &mut Registry) -> CacheMetrics {
        let metrics = CacheMetrics {
            uploads: Family::default(),
            not_cacheable: Family::default(),
            upload_retries: Counter::default(),
            queue_depth: Gauge::default(),
            queue_bytes: Gauge::default(),
            spool: Family::default(),
            spool_files: Gauge::default(),
            lookups: Family::default(),
            variant_lookups: Family::default(),
            memory_bytes: Gauge::default(),
            memory_entries: Gauge::default(),
            memory_evictions: Counter::default(),
            disk_bytes: Gauge::default(),
            disk_entries: Gauge::default(),
            disk_evictions: Counter::default(),
            disk_errors: Family::default(),
            disk_bypassed: Counter::default(),
            bucket_reads: BucketReadMetrics::default(),
        };
        registry.register(
            "uploads",
            "Results offered for storage, by outcome",
            metrics.uploads.clone(),
        );
        registry.register(
            "not_cacheable",
            "Responses not offered for storage, by reason",
            metrics.not_cacheable.clone(),
        );
        registry.register(
            "upload_retries",
            "Store calls repeated after a transient error",
            metrics.upload_retries.clone(),
        );
        registry.register(
            "upload_queue_depth",
            "Uploads waiting or running",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "upload_queue_bytes",
            "Bytes held by uploads waiting or running",
            metrics.queue_bytes.clone(),
        );
        registry.register(
            "upload_spool",
            "Results in the upload spool (CACHE_DIR with a bucket), by event",
            metrics.spool.clone(),
        );
        registry.register(
            "upload_spool_files",
            "Results waiting for the bucket in the upload spool",
            metrics.spool_files.clone(),
        );
        registry.register(
            "lookups",
            "Lookups before the upstream, by result",
            metrics.lookups.clone(),
        );
        registry.register(
            "variant_lookups",
            "Lookups before the upstream, by Accept class (when WebP/AVIF are negotiated) and result",
            metrics.variant_lookups.clone(),
        );
        registry.register(
            "memory_bytes",
            "Bytes held by the memory tier",
            metrics.memory_bytes.clone(),
        );
        registry.register(
            "memory_entries",
            "Results held by the memory tier",
            metrics.memory_entries.clone(),
        );
        registry.register(
            "memory_evictions",
            "Results the memory tier evicted to make room",
            metrics.memory_evictions.clone(),
        );
        registry.register(
            "disk_bytes",
            "Bytes held by the disk tier, in whole file-system blocks",
            metrics.disk_bytes.clone(),
        );
        registry.register(
            "disk_entries",
            "Results held by the disk tier",
            metrics.disk_entries.clone(),
        );
        registry.register(
            "disk_evictions",
            "Results the disk tier removed to make room",
            metrics.disk_evictions.clone(),
        );
        registry.register(
            "disk_errors",
            "Disk-tier reads and copies that failed, by operation",
            metrics.disk_errors.clone(),
        );
        registry.register(
            "disk_bypassed",
            "Disk-tier reads and copies skipped while the tier was failing",
            metrics.disk_bypassed.clone(),
        );
        metrics.bucket_reads.register(registry);
        metrics
    }

    /// Counts a lookup, and under its `Accept` class when formats are negotiated.
    pub fn lookup(&self, result: LookupResult, class: Option<Class>) {
        self.lookups.get_or_create(&LookupLabel { result }).inc();
        if let Some(class) = class {
            self.variant_lookups
                .get_or_create(&VariantLookupLabel {
                    variant: ClassValue(class),
                    result,
                })
                .inc();
        }
    }

    pub fn disk_error(&self, op: DiskOp) {
        self.disk_errors.get_or_create(&DiskOpLabel { op }).inc();
    }

    pub fn spooled(&self, event: SpoolEvent) {
        self.spooled_n(event, 1);
    }

    pub fn spooled_n(&self, event: SpoolEvent, n: u64) {
        self.spool.get_or_create(&SpoolLabel { event }).inc_by(n);
    }

    pub fn upload(&self, outcome: Outcome) {
        self.uploads.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn not_cacheable(&self, reason: NotCacheable) {
        self.not_cacheable
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }
}

// ===== bucket reads =====

/// What a lookup in the bucket came to: the `result` label of `imgproxy_cache_bucket_reads_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum BucketRead {
    /// The bucket holds the key; its body is being read.
    Found,
    /// No such key (404, or 403 from a bucket that hides which keys exist).
    Missing,
    /// An error, or no answer within `STORE_READ_TIMEOUT_MS`.
    Failed,
    /// Not asked: the breaker is open after repeated failures.
    Skipped,
}

impl BucketRead {
    pub fn as_str(self) -> &'static str {
        match self {
            BucketRead::Found => "found",
            BucketRead::Missing => "missing",
            BucketRead::Failed => "failed",
            BucketRead::Skipped => "skipped",
        }
    }
}

impl EncodeLabelValue for BucketRead {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BucketReadLabel {
    result: BucketRead,
}

/// The bucket-read guard's metrics. Cloning shares them (every metric is a handle).
#[derive(Clone)]
pub struct BucketReadMetrics {
    /// Lookups, by [`BucketRead`].
    reads: Family<BucketReadLabel, Counter>,
    /// Time until the bucket's answer head (or the timeout) for every lookup that asked it.
    latency: Histogram,
    /// Found objects whose body failed, stalled, or did not match its length.
    pub body_failures: Counter,
    /// The breaker: 0 closed, 1 open, 2 half-open (one probe read let through).
    pub breaker_state: Gauge,
}

impl Default for BucketReadMetrics {
    fn default() -> Self {
        BucketReadMetrics {
            reads: Family::default(),
            // 1 ms .. ~4 s: a healthy bucket answers in milliseconds, the read timeout is
            // hundreds of them.
            latency: Histogram::new(exponential_buckets(0.001, 2.0, 13)),
            body_failures: Counter::default(),
            breaker_state: Gauge::default(),
        }
    }
}

impl BucketReadMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "bucket_reads",
            "Lookups in the bucket before the upstream, by result",
            self.reads.clone(),
        );
        registry.register(
            "bucket_read_seconds",
            "Time until the bucket answered a lookup (or the read timeout)",
            self.latency.clone(),
        );
        registry.register(
            "bucket_read_body_failures",
            "Objects found in the bucket whose body failed, stalled or came out the wrong length",
            self.body_failures.clone(),
        );
        registry.register(
            "bucket_breaker_state",
            "The bucket-read breaker: 0 closed, 1 open (lookups skipped), 2 half-open (one probe)",
            self.breaker_state.clone(),
        );
    }

    /// Counts one lookup; `took` is `None` for one that did not ask the bucket.
    pub fn read(&self, result: BucketRead, took: Option<std::time::Duration>) {
        self.reads.get_or_create(&BucketReadLabel { result }).inc();
        if let Some(took) = took {
            self.latency.observe(took.as_secs_f64());
        }
    }
}
