//! The proxy's Prometheus metrics: its own, declared and described once here, and the cache's
//! (`cache::metrics`), registered beside them in one registry under `imgproxy_cache_`.

use std::fmt::Write;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::cache::metrics::CacheMetrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: u16,
}

/// Why the proxy closed a client connection on its own: the `reason` label of
/// `imgproxy_cache_client_connections_closed_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum CloseReason {
    /// No complete request head within `CLIENT_HEADER_TIMEOUT_SECS`.
    HeaderTimeout,
    /// Idle between requests for `CLIENT_KEEPALIVE_TIMEOUT_SECS`.
    IdleTimeout,
    /// No response byte taken for `CLIENT_WRITE_TIMEOUT_SECS`.
    WriteTimeout,
    /// Idle, and its place was needed for a new connection at `MAX_CONNECTIONS`.
    Evicted,
}

impl EncodeLabelValue for CloseReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::WriteTimeout => "write_timeout",
            CloseReason::Evicted => "evicted",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseLabel {
    reason: CloseReason,
}

pub struct Metrics {
    registry: Registry,
    /// Proxied responses, by status (502/504 included when the upstream failed); the proxy's
    /// own endpoints are not counted.
    pub requests: Family<StatusLabel, Counter>,
    /// Time from forwarding a request to the upstream's response head.
    pub upstream_latency: Histogram,
    /// Client connections the proxy closed on its own, by [`CloseReason`].
    client_closed: Family<CloseLabel, Counter>,
    /// Uploads, results not stored, and the queue.
    pub cache: Arc<CacheMetrics>,
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
        let cache = Arc::new(CacheMetrics::register(&mut registry));
        let client_closed = Family::<CloseLabel, Counter>::default();
        registry.register(
            "client_connections_closed",
            "Client connections closed by the proxy, by reason",
            client_closed.clone(),
        );
        Metrics {
            registry,
            requests,
            upstream_latency,
            client_closed,
            cache,
        }
    }

    pub fn client_closed(&self, reason: CloseReason) {
        self.client_closed
            .get_or_create(&CloseLabel { reason })
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
