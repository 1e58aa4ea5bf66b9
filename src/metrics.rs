//! Prometheus metrics: every name is declared and described once, here.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// The proxy's metrics, shared by the request path and the upload queue.
pub struct Metrics {
    registry: Registry,
    /// Proxied responses, by status (502/504 included when the upstream failed); the proxy's
    /// own endpoints are not counted.
    pub requests: Family<StatusLabel, Counter>,
    /// Time from forwarding a request to the upstream's response head.
    pub upstream_latency: Histogram,
    /// Results handed to the upload path, by what became of them: `stored`,
    /// `skipped_exists`, `skipped_known`, `skipped_in_flight`, `skipped_vary`, `dropped_full`,
    /// `failed`, `abandoned` (shutdown came first).
    pub uploads: Family<OutcomeLabel, Counter>,
    /// Responses not offered for storage, by reason (see `cache::policy`).
    pub not_cacheable: Family<ReasonLabel, Counter>,
    /// Store calls repeated after a transient error.
    pub upload_retries: Counter,
    /// Uploads waiting or running.
    pub queue_depth: Gauge,
    /// Bytes held by uploads waiting or running.
    pub queue_bytes: Gauge,
    /// Client connections the proxy closed on its own, by reason: `header_timeout`,
    /// `idle_timeout`, `write_timeout`, `evicted` (idle, and its place was needed).
    pub client_closed: Family<ReasonLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("imgproxy_cache");
        let requests = Family::<StatusLabel, Counter>::default();
        registry.register(
            "requests",
            "Responses sent to clients, by status",
            requests.clone(),
        );
        // 1 ms .. ~16 s: thumbnails take tens of milliseconds, 24 MP sources seconds.
        let upstream_latency = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "upstream_latency_seconds",
            "Time until the upstream's response head",
            upstream_latency.clone(),
        );
        let uploads = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "uploads",
            "Results offered for storage, by outcome",
            uploads.clone(),
        );
        let not_cacheable = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "not_cacheable",
            "Responses not offered for storage, by reason",
            not_cacheable.clone(),
        );
        let upload_retries = Counter::default();
        registry.register(
            "upload_retries",
            "Store calls repeated after a transient error",
            upload_retries.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "upload_queue_depth",
            "Uploads waiting or running",
            queue_depth.clone(),
        );
        let queue_bytes = Gauge::default();
        registry.register(
            "upload_queue_bytes",
            "Bytes held by uploads waiting or running",
            queue_bytes.clone(),
        );
        let client_closed = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "client_connections_closed",
            "Client connections closed by the proxy, by reason",
            client_closed.clone(),
        );
        Metrics {
            registry,
            requests,
            upstream_latency,
            uploads,
            not_cacheable,
            upload_retries,
            queue_depth,
            queue_bytes,
            client_closed,
        }
    }

    pub fn upload(&self, outcome: &'static str) {
        self.uploads.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn client_closed(&self, reason: &'static str) {
        self.client_closed
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// The text exposition format, for `GET /_imgproxy-cache/metrics`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
