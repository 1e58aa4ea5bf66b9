//! The proxy's settings: read once from the environment, validated, then immutable.
//!
//! Every setting has a `DEFAULT_*` constant here and a row in [`SETTINGS`], which feeds
//! `--help` and the README table (a test keeps the README in step). A bad value stops start-up
//! with a [`SettingsError`] that names the variable and the value. The table type, the error
//! and the parsers come from [`crate::settings`], which the worker's config shares.

use std::time::Duration;

use http::Uri;
use ipnet::IpNet;
use serde::Deserialize;

use crate::aws::AddressingStyle;
use crate::cache::config::{
    DedupMode, DiskConfig, ReadConfig, S3Config, StorageConfig, UploadConfig,
};
use crate::cache::guard::GuardConfig;
use crate::cache::policy::{Rules, SvgRule};
use crate::cache::variant::{Mode, Negotiation, UrlShape};
use crate::settings::{
    FromVars, Setting, SettingsError, boolean, expand_bind, invalid, list, positive, read, row,
    seconds,
};
use crate::telemetry::LogFormat;

/// `IMGPROXY_BIND`: where the proxy listens. `:8080` means every interface, as in the Go sidecar.
pub const DEFAULT_BIND: &str = ":8080";
/// `UPSTREAM_URL`: imgproxy (or the bundled worker) that does the processing.
pub const DEFAULT_UPSTREAM_URL: &str = "http://127.0.0.1:8081";
/// `UPSTREAM_NEGOTIATION`: which formats the upstream picks from the request's `Accept`. Unset
/// (the default), the proxy reads imgproxy's own `IMGPROXY_AUTO_WEBP`, `IMGPROXY_AUTO_AVIF`,
/// `IMGPROXY_ENFORCE_WEBP` and `IMGPROXY_ENFORCE_AVIF`, which the bundled worker in the same
/// container also reads; set, it wins over them (for a remote imgproxy configured elsewhere).
pub const DEFAULT_UPSTREAM_NEGOTIATION: &str = "(the IMGPROXY_AUTO_*/ENFORCE_* flags)";
/// `UPSTREAM_TIMEOUT_SECS`: limit for the upstream's response head, and for any silence
/// between two body chunks. imgproxy's own whole-request limit is 10 s by default.
pub const DEFAULT_UPSTREAM_TIMEOUT_SECS: u64 = 60;
/// `HEALTH_CHECK_TIMEOUT_IN_SEC`: how long start-up waits for the upstream's `GET /health`.
pub const DEFAULT_HEALTH_CHECK_TIMEOUT_IN_SEC: u64 = 30;
/// `MAX_CONNECTIONS`: client connections served at once. When all are taken, a new client
/// takes the place of the connection that has been idle longest; with none idle, it waits in
/// the backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// `CLIENT_HEADER_TIMEOUT_SECS`: a new connection's first request head, and any request head
/// once its first byte has arrived, must be complete within this time. An image URL's head is
/// a few hundred bytes; 10 s is ample on the slowest mobile link and short enough that silent
/// sockets cannot hold places for long.
pub const DEFAULT_CLIENT_HEADER_TIMEOUT_SECS: u64 = 10;
/// `CLIENT_KEEPALIVE_TIMEOUT_SECS`: an idle connection between two requests is closed after
/// this time. Longer than the 60 s idle timeout of an AWS load balancer, which must never find
/// its connection closed by the target (it would answer 502), and nginx's 75 s default.
pub const DEFAULT_CLIENT_KEEPALIVE_TIMEOUT_SECS: u64 = 75;
/// `CLIENT_WRITE_TIMEOUT_SECS`: a client that accepts no byte of a response for this long is
/// cut off, and the result it was receiving is not stored. Any live client, on any link, takes
/// some bytes within seconds.
pub const DEFAULT_CLIENT_WRITE_TIMEOUT_SECS: u64 = 30;
/// `S3_ENDPOINT`: Tigris, the Go sidecar's default.
pub const DEFAULT_S3_ENDPOINT: &str = "https://fly.storage.tigris.dev";
/// `S3_REGION`: Tigris accepts `auto`; AWS users set their bucket's region.
pub const DEFAULT_S3_REGION: &str = "auto";
/// `S3_ADDRESSING_STYLE`: `path` (`endpoint/bucket/key`, the Go sidecar's choice) or `virtual`.
pub const DEFAULT_S3_ADDRESSING_STYLE: AddressingStyle = AddressingStyle::Path;
/// `CACHE_DIR`: the local store used when `S3_BUCKET` is not set. With a bucket, the disk tier
/// in front of it is off unless `CACHE_DIR` is set.
pub const DEFAULT_CACHE_DIR: &str = "./cache";
/// `CACHE_DIR_MAX_BYTES`: the directory's size, past which the least recently used results go.
/// 1 GiB holds about 19 000 results of 50 KB (each counted in whole 4 KiB blocks, as the file
/// system stores it) and suits a Fly volume of 2 GB or more, leaving the file system its room.
pub const DEFAULT_CACHE_DIR_MAX_BYTES: u64 = 1 << 30;
/// The smallest `CACHE_DIR_MAX_BYTES` accepted: below it hardly a result would fit.
const MIN_CACHE_DIR_MAX_BYTES: u64 = 1 << 20;
/// `MAX_CACHEABLE_BYTES`: bigger responses still stream to the client but are not stored.
pub const DEFAULT_MAX_CACHEABLE_BYTES: u64 = 16 * 1024 * 1024;
/// `MIN_STORE_MAX_AGE_SECS`: results that may be kept for less (by `max-age`, `s-maxage` or
/// `Expires`) are not stored, because the bucket keeps objects for good. imgproxy's default
/// TTL is a year, so ordinary results pass; a URL with `expires` answers with the seconds it
/// has left, and a TTL set short on purpose says results must not live long. A day keeps both
/// out of the bucket while costing a deployment with a TTL of a day or more nothing.
pub const DEFAULT_MIN_STORE_MAX_AGE_SECS: u64 = 86_400;
/// `STORE_SVG`: which SVG results are stored. `sanitized`: only those the bundled worker
/// sanitised (it marks them); imgproxy's `raw` results and any unmarked SVG are not, since an
/// SVG can carry scripts that would run on the bucket's origin.
pub const DEFAULT_STORE_SVG: SvgRule = SvgRule::Sanitized;
/// `MEMORY_CACHE_MAX_BYTES`: the memory tier's size. A 512 MB Fly machine runs imgproxy (or
/// the worker: a render holds its decoded source, up to ~100 MB for a 24 MP photo) beside the
/// proxy, whose own bounds (`UPLOAD_QUEUE_MAX_BYTES`, connection buffers) are a cap, rarely a
/// use; 64 MiB keeps about 1 300 results of 50 KB, the hot set of most sites, and leaves the
/// rest to the disk tier and the bucket.
pub const DEFAULT_MEMORY_CACHE_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// `MEMORY_CACHE_MAX_OBJECT_BYTES`: larger results are served from the disk tier or the bucket
/// instead; a few of them would push thousands of thumbnails out of memory.
pub const DEFAULT_MEMORY_CACHE_MAX_OBJECT_BYTES: u64 = 4 * 1024 * 1024;
/// `COALESCE_TIMEOUT_SECS`: how long a request waits for the head of the same key's render in
/// flight before it asks the upstream itself: imgproxy's own limit for one request
/// (`IMGPROXY_TIMEOUT`, 10 s by default), past which that render has failed anyway.
pub const DEFAULT_COALESCE_TIMEOUT_SECS: u64 = 10;
/// `BUCKET_READS`: look a key up in the bucket before rendering it. A hit saves a render; a
/// true miss costs one GET on the way (see the benchmark in the README).
pub const DEFAULT_BUCKET_READS: bool = true;
/// `STORE_READ_TIMEOUT_MS`: how long the bucket (or the disk tier) may take to answer a
/// lookup, and to send each body chunk after that; past it the lookup is a miss and the
/// upstream renders. A bucket in the machine's region answers a GET's head in tens of
/// milliseconds and rarely takes over 200; 300 ms stays clear of that tail, so a healthy bucket
/// is almost never cut short, and is still short next to the render a miss costs anyway. A
/// bucket in another region (several round trips for a new TLS connection) needs more.
pub const DEFAULT_STORE_READ_TIMEOUT_MS: u64 = 300;
/// `STORE_READ_BREAKER_FAILURES`: consecutive failed lookups that open the breaker, which then
/// skips the bucket. One slow answer or a dropped connection should not cost the bucket for a
/// whole open period (during which every request re-renders); five in a row is a bucket in
/// trouble, and at any real request rate takes well under a second to see.
pub const DEFAULT_STORE_READ_BREAKER_FAILURES: u32 = 5;
/// `STORE_READ_BREAKER_SECS`: how long an open breaker skips the bucket before one probe read.
/// An outage then costs one probe (at most one timeout) per 30 s, and a recovered bucket is
/// read again within 30 s.
pub const DEFAULT_STORE_READ_BREAKER_SECS: u64 = 30;
/// `ADMIN_TOKEN`: unset, the admin endpoints (purge) answer 404. A token must be at least
/// [`MIN_ADMIN_TOKEN_LEN`] characters: anyone who guesses it can empty the cache.
pub const DEFAULT_ADMIN_TOKEN: &str = "";
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;
/// `TRUSTED_PROXIES`: peers whose `X-Forwarded-For` is believed. None by default: a client's
/// own claims about its address are replaced by the address it connects from.
pub const DEFAULT_TRUSTED_PROXIES: &str = "";
/// `UPLOAD_QUEUE_CAPACITY`: uploads waiting for a free slot; more are dropped.
pub const DEFAULT_UPLOAD_QUEUE_CAPACITY: usize = 1024;
/// `UPLOAD_QUEUE_MAX_BYTES`: bytes held by waiting or running uploads; more are dropped.
pub const DEFAULT_UPLOAD_QUEUE_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// `UPLOAD_CONCURRENCY`: uploads in flight to the store at once.
pub const DEFAULT_UPLOAD_CONCURRENCY: usize = 8;
/// `UPLOAD_MAX_ATTEMPTS`: tries per store call (HEAD or PUT) before an upload is given up.
pub const DEFAULT_UPLOAD_MAX_ATTEMPTS: usize = 5;
/// `UPLOAD_RETRY_BASE_MS`: first backoff delay; it doubles per attempt, with jitter.
pub const DEFAULT_UPLOAD_RETRY_BASE_MS: u64 = 200;
/// `UPLOAD_RETRY_MAX_MS`: ceiling for one backoff delay.
pub const DEFAULT_UPLOAD_RETRY_MAX_MS: u64 = 10_000;
/// `UPLOAD_TIMEOUT_SECS`: limit for one store call (one attempt).
pub const DEFAULT_UPLOAD_TIMEOUT_SECS: u64 = 30;
/// `UPLOAD_DEDUP`: how an upload learns that the object already exists. Conditional PUT costs
/// one round trip instead of two and is supported by S3, Tigris, R2, SeaweedFS and MinIO.
pub const DEFAULT_UPLOAD_DEDUP: DedupMode = DedupMode::Conditional;
/// `UPLOAD_NICE`: CPU priority of the upload thread, 0 (the process's own) to 19 (lowest).
/// When the CPU is saturated, clients are served first and uploads get the leftovers: at 10 a
/// busy 2-core machine still stores hundreds of results a second, more than an imgproxy busy on
/// the same cores produces, while a proxy that is itself the bottleneck keeps its clients fast.
pub const DEFAULT_UPLOAD_NICE: i32 = 10;
/// `KNOWN_KEYS_CAPACITY`: keys remembered as stored, so repeats cost no store call at all.
pub const DEFAULT_KNOWN_KEYS_CAPACITY: usize = 100_000;
/// `SHUTDOWN_TIMEOUT_SECS`: time given to in-flight requests and queued uploads on SIGTERM.
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 30;
/// `LOG_FORMAT`: `text` for people, `json` for log pipelines.
pub const DEFAULT_LOG_FORMAT: LogFormat = LogFormat::Text;

/// Every environment variable the proxy reads, for `--help` and the README.
pub const SETTINGS: &[Setting] = &[
    row(
        "IMGPROXY_BIND",
        DEFAULT_BIND,
        "Address the proxy listens on (`:PORT` = all interfaces).",
    ),
    row(
        "UPSTREAM_URL",
        DEFAULT_UPSTREAM_URL,
        "imgproxy or the bundled worker.",
    ),
    row(
        "UPSTREAM_NEGOTIATION",
        DEFAULT_UPSTREAM_NEGOTIATION,
        "Formats the upstream picks from `Accept`, stored per class: a list of `auto_webp`, \
         `auto_avif`, `enforce_webp`, `enforce_avif`, or `none`. Wins over the IMGPROXY_* flags.",
    ),
    row(
        "UPSTREAM_TIMEOUT_SECS",
        "60",
        "Limit for the upstream's response head and for each gap between body chunks.",
    ),
    row(
        "HEALTH_CHECK_TIMEOUT_IN_SEC",
        "30",
        "Start-up waits this long for the upstream's `GET /health`.",
    ),
    row(
        "MAX_CONNECTIONS",
        "4096",
        "Client connections served at once; at the limit, the longest-idle one makes room.",
    ),
    row(
        "CLIENT_HEADER_TIMEOUT_SECS",
        "10",
        "Limit for a request head, from its first byte (from accept on a new connection).",
    ),
    row(
        "CLIENT_KEEPALIVE_TIMEOUT_SECS",
        "75",
        "An idle connection between requests is closed after this.",
    ),
    row(
        "CLIENT_WRITE_TIMEOUT_SECS",
        "30",
        "A client that takes no response byte for this long is cut off.",
    ),
    row(
        "S3_BUCKET",
        "(unset)",
        "Bucket for results. Unset: results go to the local store in `CACHE_DIR`.",
    ),
    row(
        "S3_FOLDER",
        "(empty)",
        "Key prefix, joined to the hash with no separator (`images/` gives `images/<md5>`).",
    ),
    row(
        "S3_ENDPOINT",
        DEFAULT_S3_ENDPOINT,
        "S3-compatible endpoint (Tigris, AWS, SeaweedFS, MinIO, R2).",
    ),
    row("S3_REGION", DEFAULT_S3_REGION, "Signing region."),
    row(
        "S3_ADDRESSING_STYLE",
        "path",
        "`path` or `virtual` (bucket in the host name).",
    ),
    row(
        "S3_ASSUME_ROLE_ARN",
        "(unset)",
        "Role to assume on top of the default AWS credential chain.",
    ),
    row(
        "S3_ASSUME_ROLE_EXTERNAL_ID",
        "(unset)",
        "External id for that role.",
    ),
    row(
        "CACHE_DIR",
        "(./cache without a bucket; unset with one)",
        "Directory of the local store; with `S3_BUCKET`, of the disk tier in front of the bucket and of the upload spool. A directory of its own.",
    ),
    row(
        "CACHE_DIR_MAX_BYTES",
        "1073741824",
        "Size of `CACHE_DIR`; the least recently used results are removed past it.",
    ),
    row(
        "MAX_CACHEABLE_BYTES",
        "16777216",
        "Largest response stored; bigger ones stream through unstored.",
    ),
    row(
        "MIN_STORE_MAX_AGE_SECS",
        "86400",
        "Results whose `max-age`/`s-maxage`/`Expires` allows less are not stored (the bucket keeps objects for good).",
    ),
    row(
        "STORE_SVG",
        "sanitized",
        "`sanitized`: only SVG the bundled worker sanitised; `always`: every SVG (the upstream sanitises all, no `raw`); `never`.",
    ),
    row(
        "MEMORY_CACHE_MAX_BYTES",
        "67108864",
        "Memory tier size (0 turns it off): results served without a store read.",
    ),
    row(
        "MEMORY_CACHE_MAX_OBJECT_BYTES",
        "4194304",
        "Largest result the memory tier holds.",
    ),
    row(
        "COALESCE_TIMEOUT_SECS",
        "10",
        "A request for a key being rendered waits this long for that render's head, then asks the upstream itself.",
    ),
    row(
        "BUCKET_READS",
        "true",
        "Look keys up in the bucket before rendering them.",
    ),
    row(
        "STORE_READ_TIMEOUT_MS",
        "300",
        "Limit for a store's answer to a lookup, and for each body chunk after it; slower counts as a miss.",
    ),
    row(
        "STORE_READ_BREAKER_FAILURES",
        "5",
        "Failed bucket lookups in a row that open the breaker: the bucket is then skipped. The same for the disk tier's reads and copies.",
    ),
    row(
        "STORE_READ_BREAKER_SECS",
        "30",
        "How long an open breaker skips the bucket (or the disk tier) before one probe.",
    ),
    row(
        "ADMIN_TOKEN",
        "(unset)",
        "Bearer token for `DELETE /_imgproxy-cache/cache/<path>` (purge); unset, the endpoint answers 404. At least 16 characters.",
    ),
    row(
        "TRUSTED_PROXIES",
        "(empty)",
        "Comma-separated CIDRs (or addresses) of fronts whose `X-Forwarded-For` is kept and extended; anyone else's is replaced.",
    ),
    row(
        "UPLOAD_QUEUE_CAPACITY",
        "1024",
        "Uploads waiting for a free upload slot; when full, new results are dropped.",
    ),
    row(
        "UPLOAD_QUEUE_MAX_BYTES",
        "268435456",
        "Bytes held by copies of results in flight and by waiting or running uploads; past it results stream uncopied.",
    ),
    row("UPLOAD_CONCURRENCY", "8", "Store calls in flight at once."),
    row(
        "UPLOAD_MAX_ATTEMPTS",
        "5",
        "Tries per store call; only errors that can pass are retried.",
    ),
    row(
        "UPLOAD_RETRY_BASE_MS",
        "200",
        "First retry delay; doubles per attempt, with jitter.",
    ),
    row("UPLOAD_RETRY_MAX_MS", "10000", "Longest retry delay."),
    row("UPLOAD_TIMEOUT_SECS", "30", "Limit for one store call."),
    row(
        "UPLOAD_DEDUP",
        "conditional",
        "`conditional`: one PUT with `If-None-Match: *`; `head`: HEAD, then PUT if missing; `none`: always PUT.",
    ),
    row(
        "UPLOAD_NICE",
        "10",
        "CPU priority of the upload thread, 0 (as the proxy) to 19 (lowest): a saturated CPU serves clients first.",
    ),
    row(
        "KNOWN_KEYS_CAPACITY",
        "100000",
        "Keys remembered as stored (0 turns the memory off).",
    ),
    row(
        "SHUTDOWN_TIMEOUT_SECS",
        "30",
        "On SIGTERM/SIGINT: time to finish requests and drain uploads.",
    ),
    row("LOG_FORMAT", "text", "`text` or `json`."),
    row(
        "RUST_LOG",
        "info",
        "Log filter, e.g. `imgproxy_cache=debug`.",
    ),
];

/// The raw environment, as `envy` reads it (field `foo_bar` is variable `FOO_BAR`).
#[derive(Deserialize)]
struct Env {
    imgproxy_bind: Option<String>,
    upstream_url: Option<String>,
    upstream_timeout_secs: Option<u64>,
    health_check_timeout_in_sec: Option<u64>,
    max_connections: Option<usize>,
    client_header_timeout_secs: Option<u64>,
    client_keepalive_timeout_secs: Option<u64>,
    client_write_timeout_secs: Option<u64>,
    s3_bucket: Option<String>,
    s3_folder: Option<String>,
    s3_endpoint: Option<String>,
    s3_region: Option<String>,
    s3_addressing_style: Option<String>,
    s3_assume_role_arn: Option<String>,
    s3_assume_role_external_id: Option<String>,
    cache_dir: Option<String>,
    cache_dir_max_bytes: Option<u64>,
    max_cacheable_bytes: Option<u64>,
    min_store_max_age_secs: Option<u64>,
    store_svg: Option<String>,
    memory_cache_max_bytes: Option<u64>,
    memory_cache_max_object_bytes: Option<u64>,
    coalesce_timeout_secs: Option<u64>,
    bucket_reads: Option<String>,
    store_read_timeout_ms: Option<u64>,
    store_read_breaker_failures: Option<u32>,
    store_read_breaker_secs: Option<u64>,
    admin_token: Option<String>,
    trusted_proxies: Option<String>,
    upload_queue_capacity: Option<usize>,
    upload_queue_max_bytes: Option<u64>,
    upload_concurrency: Option<usize>,
    upload_max_attempts: Option<usize>,
    upload_retry_base_ms: Option<u64>,
    upload_retry_max_ms: Option<u64>,
    upload_timeout_secs: Option<u64>,
    upload_dedup: Option<String>,
    upload_nice: Option<i32>,
    known_keys_capacity: Option<usize>,
    shutdown_timeout_secs: Option<u64>,
    log_format: Option<String>,
}

/// Validated proxy settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Socket address to listen on, after `:PORT` was expanded.
    pub bind: String,
    /// Base URL of imgproxy; request paths and queries are appended to it.
    pub upstream: Uri,
    pub upstream_timeout: Duration,
    pub health_check_timeout: Duration,
    pub max_connections: usize,
    pub client: ClientTimeouts,
    /// Where results go.
    pub storage: StorageConfig,
    /// Prepended to every key, as is (`S3_FOLDER`).
    pub key_prefix: String,
    /// Which formats the upstream negotiates: one key per `Accept` class.
    pub negotiation: Negotiation,
    /// What may be stored: size, lifetime, SVG.
    pub store: Rules,
    /// The read path: memory tier, single flight, store reads.
    pub read: ReadConfig,
    /// `TRUSTED_PROXIES`.
    pub trusted_proxies: Vec<IpNet>,
    /// `ADMIN_TOKEN`, when the admin endpoints are on.
    pub admin_token: Option<Secret>,
    pub upload: UploadConfig,
    pub shutdown_timeout: Duration,
    pub log_format: LogFormat,
}

/// A value that must never reach a log line: its `Debug` says only that it is set.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(hidden)")
    }
}

/// How long a client may take; see the `DEFAULT_CLIENT_*` constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    pub header: Duration,
    pub keep_alive: Duration,
    pub write: Duration,
}

impl FromVars for Config {
    fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, SettingsError> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let negotiation = Negotiation::from_vars(vars.iter().cloned())?;
        read::<Env>(vars, &[])?.validate(negotiation)
    }
}

impl Env {
    fn validate(self, negotiation: Negotiation) -> Result<Config, SettingsError> {
        let bind = expand_bind(
            "IMGPROXY_BIND",
            self.imgproxy_bind.as_deref().unwrap_or(DEFAULT_BIND),
        )?;
        let upstream_raw = self
            .upstream_url
            .unwrap_or_else(|| DEFAULT_UPSTREAM_URL.into());
        let upstream = parse_base_url("UPSTREAM_URL", &upstream_raw, &["http"])?;

        let max_bytes = self
            .cache_dir_max_bytes
            .unwrap_or(DEFAULT_CACHE_DIR_MAX_BYTES);
        if max_bytes < MIN_CACHE_DIR_MAX_BYTES {
            return Err(invalid(
                "CACHE_DIR_MAX_BYTES",
                &max_bytes.to_string(),
                format!("must be at least {MIN_CACHE_DIR_MAX_BYTES}"),
            ));
        }
        let disk = |dir: String| DiskConfig { dir, max_bytes };
        let storage = match self.s3_bucket {
            None => StorageConfig::Local(disk(
                self.cache_dir.unwrap_or_else(|| DEFAULT_CACHE_DIR.into()),
            )),
            Some(bucket) => {
                let endpoint = self
                    .s3_endpoint
                    .unwrap_or_else(|| DEFAULT_S3_ENDPOINT.into());
                parse_base_url("S3_ENDPOINT", &endpoint, &["http", "https"])?;
                StorageConfig::S3(
                    S3Config {
                        bucket,
                        endpoint,
                        region: self.s3_region.unwrap_or_else(|| DEFAULT_S3_REGION.into()),
                        style: choice(
                            "S3_ADDRESSING_STYLE",
                            self.s3_addressing_style,
                            DEFAULT_S3_ADDRESSING_STYLE,
                            &[
                                ("path", AddressingStyle::Path),
                                ("virtual", AddressingStyle::Virtual),
                            ],
                        )?,
                        assume_role_arn: self.s3_assume_role_arn,
                        assume_role_external_id: self.s3_assume_role_external_id,
                    },
                    self.cache_dir.map(disk),
                )
            }
        };

        let key_prefix = self.s3_folder.unwrap_or_default();
        if key_prefix.split('/').any(|part| part == "..") || key_prefix.starts_with('/') {
            return Err(invalid(
                "S3_FOLDER",
                &key_prefix,
                "must be a relative prefix without `..` parts",
            ));
        }

        let max_cacheable_bytes = self
            .max_cacheable_bytes
            .unwrap_or(DEFAULT_MAX_CACHEABLE_BYTES);
        let queue_max_bytes = self
            .upload_queue_max_bytes
            .unwrap_or(DEFAULT_UPLOAD_QUEUE_MAX_BYTES);
        // The queue accounts bytes in u32 permits; a single result must fit in one.
        if max_cacheable_bytes == 0 || max_cacheable_bytes > u64::from(u32::MAX) {
            return Err(invalid(
                "MAX_CACHEABLE_BYTES",
                &max_cacheable_bytes.to_string(),
                "must be between 1 and 4294967295",
            ));
        }
        if queue_max_bytes < max_cacheable_bytes {
            return Err(invalid(
                "UPLOAD_QUEUE_MAX_BYTES",
                &queue_max_bytes.to_string(),
                "must be at least MAX_CACHEABLE_BYTES, or no large result could ever be queued",
            ));
        }

        let upload = UploadConfig {
            queue_capacity: positive(
                "UPLOAD_QUEUE_CAPACITY",
                self.upload_queue_capacity
                    .unwrap_or(DEFAULT_UPLOAD_QUEUE_CAPACITY),
            )?,
            queue_max_bytes,
            concurrency: positive(
                "UPLOAD_CONCURRENCY",
                self.upload_concurrency
                    .unwrap_or(DEFAULT_UPLOAD_CONCURRENCY),
            )?,
            max_attempts: positive(
                "UPLOAD_MAX_ATTEMPTS",
                self.upload_max_attempts
                    .unwrap_or(DEFAULT_UPLOAD_MAX_ATTEMPTS),
            )?,
            retry_base: Duration::from_millis(
                self.upload_retry_base_ms
                    .unwrap_or(DEFAULT_UPLOAD_RETRY_BASE_MS),
            ),
            retry_max: Duration::from_millis(
                self.upload_retry_max_ms
                    .unwrap_or(DEFAULT_UPLOAD_RETRY_MAX_MS),
            ),
            timeout: seconds(
                "UPLOAD_TIMEOUT_SECS",
                self.upload_timeout_secs
                    .unwrap_or(DEFAULT_UPLOAD_TIMEOUT_SECS),
            )?,
            dedup: choice(
                "UPLOAD_DEDUP",
                self.upload_dedup,
                DEFAULT_UPLOAD_DEDUP,
                &[
                    ("head", DedupMode::Head),
                    ("conditional", DedupMode::Conditional),
                    ("none", DedupMode::None),
                ],
            )?,
            nice: match self.upload_nice.unwrap_or(DEFAULT_UPLOAD_NICE) {
                nice @ 0..=19 => nice,
                other => {
                    return Err(invalid(
                        "UPLOAD_NICE",
                        &other.to_string(),
                        "must be between 0 and 19",
                    ));
                }
            },
            known_keys_capacity: self
                .known_keys_capacity
                .unwrap_or(DEFAULT_KNOWN_KEYS_CAPACITY),
        };

        let read = ReadConfig {
            memory_max_bytes: self
                .memory_cache_max_bytes
                .unwrap_or(DEFAULT_MEMORY_CACHE_MAX_BYTES),
            memory_max_object_bytes: self
                .memory_cache_max_object_bytes
                .unwrap_or(DEFAULT_MEMORY_CACHE_MAX_OBJECT_BYTES),
            coalesce_timeout: seconds(
                "COALESCE_TIMEOUT_SECS",
                self.coalesce_timeout_secs
                    .unwrap_or(DEFAULT_COALESCE_TIMEOUT_SECS),
            )?,
            bucket_reads: boolean(
                "BUCKET_READS",
                self.bucket_reads.as_deref(),
                DEFAULT_BUCKET_READS,
            )?,
            guard: GuardConfig {
                read_timeout: Duration::from_millis(positive(
                    "STORE_READ_TIMEOUT_MS",
                    self.store_read_timeout_ms
                        .unwrap_or(DEFAULT_STORE_READ_TIMEOUT_MS),
                )?),
                breaker_failures: positive(
                    "STORE_READ_BREAKER_FAILURES",
                    self.store_read_breaker_failures
                        .unwrap_or(DEFAULT_STORE_READ_BREAKER_FAILURES),
                )?,
                breaker_open: seconds(
                    "STORE_READ_BREAKER_SECS",
                    self.store_read_breaker_secs
                        .unwrap_or(DEFAULT_STORE_READ_BREAKER_SECS),
                )?,
            },
        };

        let admin_token = match self.admin_token.filter(|t| !t.is_empty()) {
            Some(token) if token.chars().count() < MIN_ADMIN_TOKEN_LEN => {
                return Err(invalid(
                    "ADMIN_TOKEN",
                    "(hidden)",
                    format!("must be at least {MIN_ADMIN_TOKEN_LEN} characters"),
                ));
            }
            token => token.map(Secret),
        };

        Ok(Config {
            bind,
            read,
            admin_token,
            upstream,
            upstream_timeout: seconds(
                "UPSTREAM_TIMEOUT_SECS",
                self.upstream_timeout_secs
                    .unwrap_or(DEFAULT_UPSTREAM_TIMEOUT_SECS),
            )?,
            health_check_timeout: Duration::from_secs(
                self.health_check_timeout_in_sec
                    .unwrap_or(DEFAULT_HEALTH_CHECK_TIMEOUT_IN_SEC),
            ),
            max_connections: positive(
                "MAX_CONNECTIONS",
                self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            )?,
            client: ClientTimeouts {
                header: seconds(
                    "CLIENT_HEADER_TIMEOUT_SECS",
                    self.client_header_timeout_secs
                        .unwrap_or(DEFAULT_CLIENT_HEADER_TIMEOUT_SECS),
                )?,
                keep_alive: seconds(
                    "CLIENT_KEEPALIVE_TIMEOUT_SECS",
                    self.client_keepalive_timeout_secs
                        .unwrap_or(DEFAULT_CLIENT_KEEPALIVE_TIMEOUT_SECS),
                )?,
                write: seconds(
                    "CLIENT_WRITE_TIMEOUT_SECS",
                    self.client_write_timeout_secs
                        .unwrap_or(DEFAULT_CLIENT_WRITE_TIMEOUT_SECS),
                )?,
            },
            storage,
            key_prefix,
            negotiation,
            store: Rules {
                max_bytes: max_cacheable_bytes,
                min_max_age: Duration::from_secs(
                    self.min_store_max_age_secs
                        .unwrap_or(DEFAULT_MIN_STORE_MAX_AGE_SECS),
                ),
                svg: choice(
                    "STORE_SVG",
                    self.store_svg,
                    DEFAULT_STORE_SVG,
                    &[
                        ("sanitized", SvgRule::Sanitized),
                        ("always", SvgRule::Always),
                        ("never", SvgRule::Never),
                    ],
                )?,
            },
            trusted_proxies: cidrs(
                "TRUSTED_PROXIES",
                self.trusted_proxies
                    .as_deref()
                    .unwrap_or(DEFAULT_TRUSTED_PROXIES),
            )?,
            upload,
            shutdown_timeout: Duration::from_secs(
                self.shutdown_timeout_secs
                    .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT_SECS),
            ),
            log_format: choice(
                "LOG_FORMAT",
                self.log_format,
                DEFAULT_LOG_FORMAT,
                &[("text", LogFormat::Text), ("json", LogFormat::Json)],
            )?,
        })
    }
}

/// The variables that say which formats the upstream negotiates: read by the proxy and by
/// `imgproxy-cache url`, which prints the keys a page may load.
#[derive(Deserialize)]
struct NegotiationEnv {
    upstream_negotiation: Option<String>,
    imgproxy_auto_webp: Option<String>,
    imgproxy_auto_avif: Option<String>,
    imgproxy_enforce_webp: Option<String>,
    imgproxy_enforce_avif: Option<String>,
    imgproxy_arguments_separator: Option<String>,
    imgproxy_base64_url_includes_filename: Option<String>,
}

impl FromVars for Negotiation {
    /// `UPSTREAM_NEGOTIATION` when set, else imgproxy's own flags, and the parts of its URL
    /// syntax that say where a format is written.
    fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, SettingsError> {
        const VAR: &str = "UPSTREAM_NEGOTIATION";
        let env = read::<NegotiationEnv>(vars, &[])?;
        let flag = |var, raw: &Option<String>| boolean(var, raw.as_deref(), false);
        let (webp, avif) = match &env.upstream_negotiation {
            Some(raw) => {
                let mut flags = [false; 4];
                for item in list(raw) {
                    let i = match item.to_ascii_lowercase().as_str() {
                        "auto_webp" => 0,
                        "enforce_webp" => 1,
                        "auto_avif" => 2,
                        "enforce_avif" => 3,
                        "none" => continue,
                        _ => {
                            return Err(invalid(
                                VAR,
                                raw,
                                format!(
                                    "`{item}` is not one of auto_webp, enforce_webp, auto_avif, \
                                     enforce_avif, none"
                                ),
                            ));
                        }
                    };
                    flags[i] = true;
                }
                (
                    Mode::from_flags(flags[0], flags[1]),
                    Mode::from_flags(flags[2], flags[3]),
                )
            }
            None => (
                Mode::from_flags(
                    flag("IMGPROXY_AUTO_WEBP", &env.imgproxy_auto_webp)?,
                    flag("IMGPROXY_ENFORCE_WEBP", &env.imgproxy_enforce_webp)?,
                ),
                Mode::from_flags(
                    flag("IMGPROXY_AUTO_AVIF", &env.imgproxy_auto_avif)?,
                    flag("IMGPROXY_ENFORCE_AVIF", &env.imgproxy_enforce_avif)?,
                ),
            ),
        };
        let defaults = UrlShape::default();
        Ok(Negotiation {
            webp,
            avif,
            url: UrlShape {
                separator: env
                    .imgproxy_arguments_separator
                    .clone()
                    .filter(|s| !s.is_empty())
                    .unwrap_or(defaults.separator),
                base64_includes_filename: flag(
                    "IMGPROXY_BASE64_URL_INCLUDES_FILENAME",
                    &env.imgproxy_base64_url_includes_filename,
                )?,
            },
        })
    }
}

/// One of a fixed set of words, compared without regard to case.
fn choice<T: Copy>(
    var: &'static str,
    value: Option<String>,
    default: T,
    options: &[(&'static str, T)],
) -> Result<T, SettingsError> {
    let Some(value) = value else {
        return Ok(default);
    };
    options
        .iter()
        .find(|(word, _)| word.eq_ignore_ascii_case(value.trim()))
        .map(|(_, t)| *t)
        .ok_or_else(|| invalid(var, &value, "not one of the accepted words (see --help)"))
}

/// A comma-separated list of networks (`10.0.0.0/8`, `fdaa::/16`) or single addresses.
fn cidrs(var: &'static str, raw: &str) -> Result<Vec<IpNet>, SettingsError> {
    list(raw)
        .map(|item| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| {
                    invalid(
                        var,
                        raw,
                        "expected comma-separated networks such as 10.0.0.0/8 or addresses",
                    )
                })
        })
        .collect()
}

/// A base URL: scheme in `schemes`, a host, and no query (paths are appended to it).
fn parse_base_url(var: &'static str, raw: &str, schemes: &[&str]) -> Result<Uri, SettingsError> {
    let uri: Uri = raw.parse().map_err(|_| invalid(var, raw, "not a URL"))?;
    match uri.scheme_str() {
        Some(s) if schemes.contains(&s) => {}
        _ if schemes.len() == 1 => return Err(invalid(var, raw, "must start with http://")),
        _ => return Err(invalid(var, raw, "must start with http:// or https://")),
    }
    if uri.host().is_none() {
        return Err(invalid(var, raw, "has no host"));
    }
    if uri.query().is_some() {
        return Err(invalid(var, raw, "must not have a query"));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, SettingsError> {
        Config::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_select_the_local_store_and_go_compatible_bind() {
        let c = config(&[]).unwrap();
        assert_eq!(c.bind, "0.0.0.0:8080");
        assert_eq!(c.upstream, "http://127.0.0.1:8081/");
        assert_eq!(
            c.storage,
            StorageConfig::Local(DiskConfig {
                dir: "./cache".into(),
                max_bytes: DEFAULT_CACHE_DIR_MAX_BYTES,
            })
        );
        assert_eq!(c.upload.dedup, DedupMode::Conditional);
        assert_eq!(c.health_check_timeout, Duration::from_secs(30));
    }

    /// The defaults `--help` and the README show are the ones the code uses.
    #[test]
    fn documented_defaults_are_the_real_defaults() {
        let documented: Vec<(&str, &str)> = SETTINGS
            .iter()
            .filter(|s| !s.default.starts_with('(') && s.name != "RUST_LOG")
            .map(|s| (s.name, s.default))
            .collect();
        let bucket = [("S3_BUCKET", "b")];
        let explicit = config(&[&documented[..], &bucket].concat()).unwrap();
        let implicit = config(&bucket).unwrap();
        assert_eq!(format!("{explicit:?}"), format!("{implicit:?}"));
        // And the local store's directory, which only shows without a bucket.
        let local = config(&[("CACHE_DIR", DEFAULT_CACHE_DIR)]).unwrap();
        assert_eq!(format!("{local:?}"), format!("{:?}", config(&[]).unwrap()));
    }

    #[test]
    fn a_bucket_selects_s3_with_tigris_defaults() {
        let c = config(&[("S3_BUCKET", "images"), ("S3_FOLDER", "thumbs/")]).unwrap();
        let StorageConfig::S3(s3, None) = c.storage else {
            panic!("expected s3 without a disk tier")
        };
        assert_eq!(s3.endpoint, "https://fly.storage.tigris.dev");
        assert_eq!(s3.region, "auto");
        assert_eq!(s3.style, AddressingStyle::Path);
        assert_eq!(c.key_prefix, "thumbs/");
    }

    #[test]
    fn errors_name_the_variable_and_the_value() {
        let cases: &[(&str, &str)] = &[
            ("UPLOAD_CONCURRENCY", "many"),
            ("UPLOAD_CONCURRENCY", "0"),
            ("UPSTREAM_URL", "ftp://x"),
            ("IMGPROXY_BIND", "localhost"),
            ("S3_ADDRESSING_STYLE", "sideways"),
            ("UPLOAD_DEDUP", "maybe"),
            ("UPLOAD_NICE", "20"),
            ("UPLOAD_NICE", "-5"),
            ("S3_FOLDER", "../up"),
            ("CLIENT_HEADER_TIMEOUT_SECS", "0"),
            ("CLIENT_WRITE_TIMEOUT_SECS", "soon"),
            ("STORE_SVG", "sometimes"),
            ("TRUSTED_PROXIES", "10.0.0.0/8, fly"),
            ("TRUSTED_PROXIES", "10.0.0.0/33"),
        ];
        for (var, value) in cases {
            let mut vars = vec![(*var, *value)];
            if var.starts_with("S3_") {
                vars.push(("S3_BUCKET", "b"));
            }
            let msg = config(&vars).unwrap_err().to_string();
            assert!(msg.contains(var), "{msg:?} should name {var}");
            assert!(msg.contains(value), "{msg:?} should show {value:?}");
        }
    }

    #[test]
    fn queue_byte_cap_must_hold_one_result() {
        let err = config(&[
            ("MAX_CACHEABLE_BYTES", "1000"),
            ("UPLOAD_QUEUE_MAX_BYTES", "999"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("UPLOAD_QUEUE_MAX_BYTES"), "{err}");
    }

    #[test]
    fn debug_output_never_shows_the_external_id() {
        let c = config(&[
            ("S3_BUCKET", "b"),
            ("S3_ASSUME_ROLE_ARN", "arn:aws:iam::1:role/r"),
            ("S3_ASSUME_ROLE_EXTERNAL_ID", "very-secret-id"),
        ])
        .unwrap();
        assert!(!format!("{c:?}").contains("very-secret-id"));
    }

    /// The proxy reads imgproxy's own flags; `UPSTREAM_NEGOTIATION` wins over them; a bad
    /// value names the variable and the word.
    #[test]
    fn negotiation_comes_from_imgproxys_flags_or_the_explicit_setting() {
        let c = config(&[]).unwrap();
        assert!(!c.negotiation.is_on());
        let c = config(&[
            ("IMGPROXY_AUTO_WEBP", "true"),
            ("IMGPROXY_ENFORCE_AVIF", "1"),
            ("IMGPROXY_ARGUMENTS_SEPARATOR", "|"),
        ])
        .unwrap();
        assert_eq!(
            (c.negotiation.webp, c.negotiation.avif),
            (Mode::Auto, Mode::Enforce)
        );
        assert_eq!(c.negotiation.url.separator, "|");
        let c = config(&[
            ("IMGPROXY_AUTO_WEBP", "true"),
            ("UPSTREAM_NEGOTIATION", "Enforce_WebP, auto_avif"),
        ])
        .unwrap();
        assert_eq!(
            (c.negotiation.webp, c.negotiation.avif),
            (Mode::Enforce, Mode::Auto)
        );
        let c = config(&[
            ("IMGPROXY_AUTO_WEBP", "true"),
            ("UPSTREAM_NEGOTIATION", "none"),
        ])
        .unwrap();
        assert!(!c.negotiation.is_on());
        let err = config(&[("UPSTREAM_NEGOTIATION", "auto_jxl")]).unwrap_err();
        assert!(err.to_string().contains("UPSTREAM_NEGOTIATION"), "{err}");
        assert!(err.to_string().contains("auto_jxl"), "{err}");
        let err = config(&[("IMGPROXY_AUTO_AVIF", "yes")]).unwrap_err();
        assert!(err.to_string().contains("IMGPROXY_AUTO_AVIF"), "{err}");
    }
}
