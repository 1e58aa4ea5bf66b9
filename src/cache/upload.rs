//! One upload: find out whether the object is already stored, store it if not, retry what can
//! pass with time, and report what happened.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use super::config::{DedupMode, UploadConfig};
use super::metrics::{CacheMetrics, Outcome};
use super::store::{Object, PutMode, PutOutcome, Store, StoreError};

/// What became of one upload. `attempts` counts every store call, HEADs included.
#[derive(Debug)]
pub enum UploadOutcome {
    Stored {
        attempts: u32,
    },
    /// The object was already in the store (HEAD found it, or the conditional PUT got 412).
    Exists {
        attempts: u32,
    },
    Failed {
        attempts: u32,
        error: StoreError,
    },
}

impl UploadOutcome {
    pub fn label(&self) -> Outcome {
        match self {
            UploadOutcome::Stored { .. } => Outcome::Stored,
            UploadOutcome::Exists { .. } => Outcome::SkippedExists,
            UploadOutcome::Failed { .. } => Outcome::Failed,
        }
    }
}

/// Stores `object` under `key` as `config.dedup` says, or over what is there when `replace`.
pub async fn upload(
    store: &dyn Store,
    key: &str,
    object: &Object,
    replace: bool,
    config: &UploadConfig,
    metrics: &CacheMetrics,
) -> UploadOutcome {
    let attempts = AtomicU32::new(0);
    let dedup = if replace {
        DedupMode::None
    } else {
        config.dedup
    };
    let result = async {
        let mode = match dedup {
            DedupMode::Head => {
                if retrying(config, metrics, &attempts, || store.exists(key)).await? {
                    return Ok(PutOutcome::AlreadyExists);
                }
                PutMode::Overwrite
            }
            DedupMode::Conditional => PutMode::IfAbsent,
            DedupMode::None => PutMode::Overwrite,
        };
        retrying(config, metrics, &attempts, || store.put(key, object, mode)).await
    }
    .await;
    let attempts = attempts.into_inner();
    match result {
        Ok(PutOutcome::Stored) => UploadOutcome::Stored { attempts },
        Ok(PutOutcome::AlreadyExists) => UploadOutcome::Exists { attempts },
        Err(error) => UploadOutcome::Failed { attempts, error },
    }
}

/// Runs one store call with a per-attempt timeout, retrying transient errors with exponential
/// backoff and jitter until `max_attempts` calls were made.
async fn retrying<T, F, Fut>(
    config: &UploadConfig,
    metrics: &CacheMetrics,
    attempts: &AtomicU32,
    mut call: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let timeout = config.timeout;
    let attempt = || {
        attempts.fetch_add(1, Ordering::Relaxed);
        let call = call();
        async move {
            tokio::time::timeout(timeout, call)
                .await
                .unwrap_or_else(|_| {
                    Err(StoreError::transient(format!(
                        "no answer within {timeout:?}"
                    )))
                })
        }
    };
    let backoff = ExponentialBuilder::default()
        .with_min_delay(config.retry_base)
        .with_max_delay(config.retry_max.max(config.retry_base))
        .with_max_times(config.max_attempts.saturating_sub(1))
        .with_jitter();
    attempt
        .retry(backoff)
        .when(StoreError::is_transient)
        .notify(|error: &StoreError, delay: Duration| {
            metrics.upload_retries.inc();
            tracing::debug!(%error, ?delay, "store call failed, retrying");
        })
        .await
}
