//! The defaults of the worker's own settings, each with its variable and meaning. The
//! engine's (resolution, animation, result size, scans, SVG filters, format negotiation,
//! watermark opacity) are [`crate::worker::engine`]'s, and the URL parser's sit beside the
//! parser; [`super::SETTINGS`] shows them all.

/// `IMGPROXY_BIND`: imgproxy's default, every interface on 8080. Our supervisor config sets
/// `127.0.0.1:8081` so only the proxy reaches the worker.
pub const DEFAULT_BIND: &str = ":8080";
/// `IMGPROXY_TIMEOUT`: seconds for a whole request, queue wait included; past it → 503.
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;
/// `IMGPROXY_READ_REQUEST_TIMEOUT`: seconds a client gets to send its request head.
pub const DEFAULT_READ_REQUEST_TIMEOUT_SECS: u64 = 10;
/// `IMGPROXY_DOWNLOAD_TIMEOUT`: seconds for fetching a source, redirects and body included;
/// past it → 504.
pub const DEFAULT_DOWNLOAD_TIMEOUT_SECS: u64 = 5;
/// `IMGPROXY_REQUESTS_QUEUE_SIZE`: requests allowed to wait for a processing slot on top of
/// `IMGPROXY_CONCURRENCY`; 0 leaves the bound to `IMGPROXY_MAX_CLIENTS`.
pub const DEFAULT_REQUESTS_QUEUE_SIZE: usize = 0;
/// `IMGPROXY_MAX_CLIENTS`: requests in flight (downloading, waiting or processing) at once;
/// one more is answered 429.
pub const DEFAULT_MAX_CLIENTS: usize = 2048;
/// `IMGPROXY_MAX_CLIENTS=0` means "no limit" in imgproxy; we still bound it, at this.
pub const UNLIMITED_CLIENTS: usize = 65_536;
/// `IMGPROXY_TTL`: seconds in `Cache-Control: max-age=…, public` of every result.
pub const DEFAULT_TTL_SECS: u64 = 31_536_000;
/// `IMGPROXY_MAX_SRC_FILE_SIZE`: bytes a source may have; 0 = no configured limit.
pub const DEFAULT_MAX_SRC_FILE_SIZE: u64 = 0;
/// `IMGPROXY_MAX_SOURCE_BYTES_IN_FLIGHT`: bytes all downloaded sources together may hold, from
/// the first byte read until the request's processing ends (imgproxy bounds this by
/// downloading inside its `IMGPROXY_WORKERS` slots; we download before taking a CPU slot, so
/// the bytes are bounded instead). Without it, `IMGPROXY_MAX_CLIENTS` × `MAX_SRC_FILE_SIZE`
/// could be held. 256 MiB: a fair share of a 1 GiB machine beside the decoded pixels
/// (`IMGPROXY_CONCURRENCY` × up to 200 MiB at 50 MP), and dozens of ordinary sources at once.
/// A source bigger than the whole budget is refused (422); one that fits waits for room,
/// within `IMGPROXY_DOWNLOAD_TIMEOUT`.
pub const DEFAULT_MAX_SOURCE_BYTES_IN_FLIGHT: u64 = 256 * 1024 * 1024;
/// The ceiling when `IMGPROXY_MAX_SRC_FILE_SIZE` is 0: the worker holds a source in memory, so
/// "unlimited" still has to end somewhere.
pub const HARD_MAX_SRC_FILE_SIZE: u64 = 512 * 1024 * 1024;
/// `IMGPROXY_MAX_REDIRECTS`: redirects followed per source download.
pub const DEFAULT_MAX_REDIRECTS: usize = 10;
/// `IMGPROXY_ALLOW_LOOPBACK_SOURCE_ADDRESSES`: sources on 127.0.0.0/8, ::1 or 0.0.0.0.
pub const DEFAULT_ALLOW_LOOPBACK_SOURCE_ADDRESSES: bool = false;
/// `IMGPROXY_ALLOW_LINK_LOCAL_SOURCE_ADDRESSES`: sources on 169.254.0.0/16 (cloud metadata!)
/// or fe80::/10.
pub const DEFAULT_ALLOW_LINK_LOCAL_SOURCE_ADDRESSES: bool = false;
/// `IMGPROXY_ALLOW_PRIVATE_SOURCE_ADDRESSES`: sources on RFC 1918 / fc00::/7 networks.
pub const DEFAULT_ALLOW_PRIVATE_SOURCE_ADDRESSES: bool = true;
/// `IMGPROXY_SOURCE_URL_QUERY_SEPARATOR`: cuts the object version (S3) or query (local) off
/// a non-HTTP source URL.
pub const DEFAULT_SOURCE_URL_QUERY_SEPARATOR: &str = "?";
/// `IMGPROXY_USE_S3`: serve `s3://bucket/key` sources.
pub const DEFAULT_USE_S3: bool = false;
/// `IMGPROXY_S3_ENDPOINT_USE_PATH_STYLE`: `endpoint/bucket/key` addressing for a custom endpoint.
pub const DEFAULT_S3_ENDPOINT_USE_PATH_STYLE: bool = true;
/// Region used when neither `IMGPROXY_S3_REGION` nor the AWS environment names one (imgproxy's).
pub const FALLBACK_S3_REGION: &str = "us-west-1";
/// `IMGPROXY_USER_AGENT`: sent to HTTP sources; `%current_version` is replaced.
pub const DEFAULT_USER_AGENT: &str = "imgproxy-cache/%current_version";
