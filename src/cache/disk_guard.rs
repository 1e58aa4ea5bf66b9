//! The disk tier's health: a `CACHE_DIR` that fails at run time (full, read-only, removed) is
//! bypassed, never in a client's way.
//!
//! Reads and copies of the disk tier in front of a bucket each go through a [`Breaker`], the
//! bucket's own state machine with the same settings (`STORE_READ_BREAKER_FAILURES` failures
//! in a row open it for `STORE_READ_BREAKER_SECS`, then one probe). While it is open the tier
//! is skipped: lookups go on to the bucket, results go to the bucket only. Each failure is
//! counted; the log has one line when the tier is bypassed and one when it works again, not
//! one per request. The upload spool, in the same directory, falls back to memory on its own
//! (`queue`).

use std::fmt::Display;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use super::guard::{Admission, Breaker, Change, GuardConfig};
use super::metrics::{CacheMetrics, DiskOp};

pub struct DiskGuard {
    /// Reads and writes apart: a full or read-only disk still reads, and its working reads
    /// must not keep resetting the count of its failing writes.
    reads: Mutex<Breaker>,
    writes: Mutex<Breaker>,
}

/// One admitted operation; dropped unsettled (its task was cancelled), it gives a probe's
/// place to the next operation.
pub struct Ticket {
    guard: Arc<DiskGuard>,
    op: DiskOp,
    admission: Option<Admission>,
}

impl DiskGuard {
    pub fn new(config: &GuardConfig) -> DiskGuard {
        let breaker = || Mutex::new(Breaker::new(config.breaker_failures, config.breaker_open));
        DiskGuard {
            reads: breaker(),
            writes: breaker(),
        }
    }

    /// Whether the tier may be used for `op` now; `None` (counted) while it is bypassed.
    pub fn admit(self: &Arc<Self>, op: DiskOp, metrics: &CacheMetrics) -> Option<Ticket> {
        let (admission, _) = self.lock(op).admit(Instant::now());
        if admission == Admission::Skip {
            metrics.disk_bypassed.inc();
            return None;
        }
        Some(Ticket {
            guard: self.clone(),
            op,
            admission: Some(admission),
        })
    }

    fn lock(&self, op: DiskOp) -> std::sync::MutexGuard<'_, Breaker> {
        match op {
            DiskOp::Read => &self.reads,
            DiskOp::Write => &self.writes,
        }
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Ticket {
    /// The operation worked (a miss is a working read).
    pub fn succeeded(mut self) {
        let Some(admission) = self.admission.take() else {
            return;
        };
        if self.guard.lock(self.op).succeeded(admission) == Some(Change::Closed) {
            tracing::info!(op = self.op.as_str(), "the disk tier works again");
        }
    }

    /// The operation failed: counted, and logged when it opens the breaker.
    pub fn failed(mut self, key: &str, error: &dyn Display, metrics: &CacheMetrics) {
        let Some(admission) = self.admission.take() else {
            return;
        };
        let op = self.op;
        metrics.disk_error(op);
        let change = self.guard.lock(op).failed(admission, Instant::now());
        match change {
            Some(Change::Opened | Change::Reopened) => tracing::warn!(
                %key,
                op = op.as_str(),
                %error,
                "the disk tier (CACHE_DIR) is failing; it is bypassed for a while, results go to the bucket only"
            ),
            _ => tracing::debug!(%key, op = op.as_str(), %error, "disk tier operation failed"),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(admission) = self.admission.take() {
            self.guard
                .lock(self.op)
                .abandoned(admission, Instant::now());
        }
    }
}
