//! The server section: request deadlines, processing slots and the bound on requests in
//! flight.

use std::time::Duration;

use super::defaults::{
    DEFAULT_MAX_CLIENTS, DEFAULT_READ_REQUEST_TIMEOUT_SECS, DEFAULT_REQUESTS_QUEUE_SIZE,
    DEFAULT_TIMEOUT_SECS, DEFAULT_TTL_SECS, UNLIMITED_CLIENTS,
};
use super::env::Env;
use super::parse::secs;
use crate::settings::{SettingsError, number, positive};

/// Time and capacity limits of the server.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    pub timeout: Duration,
    pub read_request_timeout: Duration,
    pub graceful_stop_timeout: Duration,
    /// Images processed at once (CPU-bound jobs on blocking threads).
    pub concurrency: usize,
    /// Requests in flight at once, all stages; one more is refused with 429.
    pub max_in_flight: usize,
    pub ttl: u64,
}

impl Env {
    pub(super) fn server(&self) -> Result<ServerLimits, SettingsError> {
        let timeout = secs(
            "IMGPROXY_TIMEOUT",
            self.imgproxy_timeout.as_deref(),
            DEFAULT_TIMEOUT_SECS,
        )?;
        let read_request_timeout = secs(
            "IMGPROXY_READ_REQUEST_TIMEOUT",
            self.imgproxy_read_request_timeout.as_deref(),
            DEFAULT_READ_REQUEST_TIMEOUT_SECS,
        )?;
        let graceful_stop_timeout = secs(
            "IMGPROXY_GRACEFUL_STOP_TIMEOUT",
            self.imgproxy_graceful_stop_timeout.as_deref(),
            timeout.as_secs() * 2,
        )?;
        let concurrency = self.concurrency()?;
        let ttl = number(
            "IMGPROXY_TTL",
            self.imgproxy_ttl.as_deref(),
            DEFAULT_TTL_SECS,
        )?;
        let queue: usize = number(
            "IMGPROXY_REQUESTS_QUEUE_SIZE",
            self.imgproxy_requests_queue_size.as_deref(),
            DEFAULT_REQUESTS_QUEUE_SIZE,
        )?;
        let max_clients: usize = number(
            "IMGPROXY_MAX_CLIENTS",
            self.imgproxy_max_clients.as_deref(),
            DEFAULT_MAX_CLIENTS,
        )?;
        let max_in_flight = match (queue, max_clients) {
            (0, 0) => UNLIMITED_CLIENTS,
            (0, clients) => clients.min(UNLIMITED_CLIENTS),
            (queue, _) => concurrency.saturating_add(queue).min(UNLIMITED_CLIENTS),
        };
        Ok(ServerLimits {
            timeout,
            read_request_timeout,
            graceful_stop_timeout,
            concurrency,
            max_in_flight,
            ttl,
        })
    }

    fn concurrency(&self) -> Result<usize, SettingsError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // IMGPROXY_WORKERS is imgproxy's newer name; it wins when both are set, as there.
        let (var, raw) = match (&self.imgproxy_workers, &self.imgproxy_concurrency) {
            (Some(w), _) => ("IMGPROXY_WORKERS", Some(w)),
            (None, c) => ("IMGPROXY_CONCURRENCY", c.as_ref()),
        };
        positive(var, number(var, raw.map(String::as_str), cores)?)
    }
}
