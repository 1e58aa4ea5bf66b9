//! The cache's settings: which store holds results, how to reach an S3 bucket, and how the
//! upload queue works. The proxy's config ([`crate::proxy::config`]) reads them from the
//! environment; [`super::open_store`] opens the store they name.

use std::time::Duration;

use super::guard::GuardConfig;
use crate::aws::AddressingStyle;

/// Which stores hold results.
#[derive(Clone, PartialEq, Eq)]
pub enum StorageConfig {
    /// No `S3_BUCKET`: a directory on this machine.
    Local(DiskConfig),
    /// A bucket, with the disk tier in front of it when `CACHE_DIR` is set.
    S3(S3Config, Option<DiskConfig>),
}

/// The disk tier: `CACHE_DIR`, bounded by `CACHE_DIR_MAX_BYTES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    pub dir: String,
    pub max_bytes: u64,
}

#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    pub endpoint: String,
    pub region: String,
    pub style: AddressingStyle,
    pub assume_role_arn: Option<String>,
    /// A shared secret between the role's owner and us: never logged.
    pub assume_role_external_id: Option<String>,
}

// Hand-written so the external id can never reach a log line through `{:?}`.
impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageConfig::Local(disk) => {
                write!(f, "local directory {} ({} bytes)", disk.dir, disk.max_bytes)
            }
            StorageConfig::S3(s3, disk) => {
                write!(
                    f,
                    "s3 bucket {} at {} (region {}, {:?} style{})",
                    s3.bucket,
                    s3.endpoint,
                    s3.region,
                    s3.style,
                    if s3.assume_role_arn.is_some() {
                        ", assumed role"
                    } else {
                        ""
                    }
                )?;
                if let Some(disk) = disk {
                    write!(f, ", disk tier {} ({} bytes)", disk.dir, disk.max_bytes)?;
                }
                Ok(())
            }
        }
    }
}

/// How an upload avoids writing an object that is already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DedupMode {
    /// HEAD the key first and skip the PUT when it exists: two round trips on a miss.
    Head,
    /// One PUT with `If-None-Match: *`; the store answers 412 when the object exists.
    Conditional,
    /// Always PUT (last writer wins).
    None,
}

/// Settings of the upload queue.
#[derive(Debug, Clone)]
pub struct UploadConfig {
    pub queue_capacity: usize,
    pub queue_max_bytes: u64,
    pub concurrency: usize,
    pub max_attempts: usize,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub timeout: Duration,
    pub dedup: DedupMode,
    /// Nice value of the upload thread (0–19).
    pub nice: i32,
    pub known_keys_capacity: usize,
}

/// Settings of the read path: the memory tier, single flight, reads of the stores.
#[derive(Debug, Clone)]
pub struct ReadConfig {
    /// `MEMORY_CACHE_MAX_BYTES`; 0 turns the memory tier off.
    pub memory_max_bytes: u64,
    /// `MEMORY_CACHE_MAX_OBJECT_BYTES`: larger results are not held in memory.
    pub memory_max_object_bytes: u64,
    /// `COALESCE_TIMEOUT_SECS`: how long a request waits for the head of a render in flight.
    pub coalesce_timeout: Duration,
    /// `BUCKET_READS`: whether the bucket is asked before the upstream.
    pub bucket_reads: bool,
    /// `STORE_READ_TIMEOUT_MS` and the breaker: how lookups in the stores are bounded.
    pub guard: GuardConfig,
}
