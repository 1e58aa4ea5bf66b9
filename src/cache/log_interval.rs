//! A warning that could repeat once per request — a queue that stays full, upstream bodies
//! that keep failing — let through at most once per [`LOG_INTERVAL`], so a hostile client or
//! upstream cannot flood the log. The metrics count every occurrence.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The shortest time between two lines of one repeated warning.
pub const LOG_INTERVAL: Duration = Duration::from_secs(5);

pub struct LogInterval {
    started: Instant,
    /// Milliseconds since `started` of the last line; `u64::MAX` before the first.
    last_ms: AtomicU64,
}

impl LogInterval {
    pub fn new() -> LogInterval {
        LogInterval {
            started: Instant::now(),
            last_ms: AtomicU64::new(u64::MAX),
        }
    }

    /// Whether a line is due now: the first one, then one per [`LOG_INTERVAL`].
    pub fn should_log(&self) -> bool {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == u64::MAX || now.saturating_sub(last) >= LOG_INTERVAL.as_millis() as u64;
        due && self
            .last_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_passes_and_repeats_wait_for_the_interval() {
        let log = LogInterval::new();
        assert!(log.should_log());
        assert!(!log.should_log());
        assert!(!log.should_log());
    }
}
