//! The cache's metrics, declared and described once, here; the proxy registers them beside its
//! own (`proxy::metrics`). Labels are enums, so a value can't be misspelt at a call site.

use std::fmt::Write;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::policy::NotCacheable;

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
        metrics
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
