//! The worker's settings: imgproxy's `IMGPROXY_*` variables with imgproxy's defaults, read
//! once, validated, then immutable.
//!
//! Every variable has a `DEFAULT_*` constant (here or next to the code that uses it) and a row
//! in [`SETTINGS`], which feeds `imgproxy-cache worker --help` and the README table, with how
//! closely it follows imgproxy. A bad value stops start-up with an error naming the variable and
//! the value — where imgproxy would silently ignore it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;

use super::options::{DEFAULT_FORMAT_QUALITY, DEFAULT_QUALITY, Defaults, ImageFormat};
use super::presets::{DEFAULT_PRESETS_SEPARATOR, Presets};
use super::signature::{DEFAULT_SIGNATURE_SIZE, SignatureVerifier};
use super::source::DEFAULT_BASE_URL;
use super::url::{
    DEFAULT_ARGUMENTS_SEPARATOR, DEFAULT_BASE64_URL_INCLUDES_FILENAME, DEFAULT_ONLY_PRESETS,
    ParserConfig,
};
use crate::config::LogFormat;

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
/// `IMGPROXY_MAX_SRC_RESOLUTION`: megapixels a source may have (all frames counted).
pub const DEFAULT_MAX_SRC_RESOLUTION_MP: f64 = 50.0;
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
/// `IMGPROXY_MAX_ANIMATION_FRAMES`: frames of an animation that are processed.
pub const DEFAULT_MAX_ANIMATION_FRAMES: u32 = 1;
/// `IMGPROXY_MAX_ANIMATION_FRAME_RESOLUTION`: megapixels per frame of an animation; 0 checks
/// the whole animation against `IMGPROXY_MAX_SRC_RESOLUTION` instead.
pub const DEFAULT_MAX_ANIMATION_FRAME_RESOLUTION_MP: f64 = 0.0;
/// `IMGPROXY_MAX_RESULT_DIMENSION`: pixels a result may have on either side; 0 = no per-side
/// limit (the result's area is still capped by `IMGPROXY_MAX_SRC_RESOLUTION`).
pub const DEFAULT_MAX_RESULT_DIMENSION: u32 = 0;
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
/// `IMGPROXY_AUTO_WEBP` / `IMGPROXY_ENFORCE_WEBP` / `IMGPROXY_AUTO_AVIF` /
/// `IMGPROXY_ENFORCE_AVIF`: negotiate the output format from `Accept`.
pub const DEFAULT_FORMAT_NEGOTIATION: bool = false;
/// `IMGPROXY_WATERMARK_OPACITY`: base opacity of the watermark image.
pub const DEFAULT_WATERMARK_OPACITY: f64 = 1.0;
/// `IMGPROXY_USER_AGENT`: sent to HTTP sources; `%current_version` is replaced.
pub const DEFAULT_USER_AGENT: &str = "imgproxy-cache/%current_version";

/// How closely a variable follows imgproxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compat {
    /// Same name, same default, same meaning.
    Yes,
    /// Same name; the default or part of the meaning differs (the row says how).
    Partial,
    /// Ours alone: a limit imgproxy doesn't have (imgproxy ignores the variable).
    Ours,
}

impl Compat {
    pub fn as_str(self) -> &'static str {
        match self {
            Compat::Yes => "yes",
            Compat::Partial => "partial",
            Compat::Ours => "no (ours)",
        }
    }
}

/// One row of the settings table.
pub struct Setting {
    pub name: &'static str,
    pub default: &'static str,
    pub compat: Compat,
    pub meaning: &'static str,
}

const fn yes(name: &'static str, default: &'static str, meaning: &'static str) -> Setting {
    Setting {
        name,
        default,
        compat: Compat::Yes,
        meaning,
    }
}

const fn partial(name: &'static str, default: &'static str, meaning: &'static str) -> Setting {
    Setting {
        name,
        default,
        compat: Compat::Partial,
        meaning,
    }
}

const fn ours(name: &'static str, default: &'static str, meaning: &'static str) -> Setting {
    Setting {
        name,
        default,
        compat: Compat::Ours,
        meaning,
    }
}

/// Every environment variable the worker reads, for `--help` and the README.
pub const SETTINGS: &[Setting] = &[
    yes(
        "IMGPROXY_BIND",
        DEFAULT_BIND,
        "Address to listen on (`:PORT` = all interfaces).",
    ),
    yes(
        "IMGPROXY_PATH_PREFIX",
        "(empty)",
        "URL path prefix of every endpoint.",
    ),
    yes(
        "IMGPROXY_TIMEOUT",
        "10",
        "Seconds for a whole request, queue wait included (503 past it).",
    ),
    yes(
        "IMGPROXY_READ_REQUEST_TIMEOUT",
        "10",
        "Seconds to receive a request head.",
    ),
    yes(
        "IMGPROXY_GRACEFUL_STOP_TIMEOUT",
        "2 × IMGPROXY_TIMEOUT",
        "Seconds to finish requests on SIGTERM/SIGINT.",
    ),
    partial(
        "IMGPROXY_CONCURRENCY",
        "number of CPUs",
        "Images processed at once (imgproxy: 2 × CPUs, and downloads count too). Alias `IMGPROXY_WORKERS`.",
    ),
    yes(
        "IMGPROXY_REQUESTS_QUEUE_SIZE",
        "0",
        "When > 0, requests beyond CONCURRENCY + this get 429.",
    ),
    partial(
        "IMGPROXY_MAX_CLIENTS",
        "2048",
        "Requests in flight at once; one more gets 429 (imgproxy holds it in the backlog). 0 = 65536.",
    ),
    yes(
        "IMGPROXY_TTL",
        "31536000",
        "`Cache-Control: max-age` of results, capped by `expires`.",
    ),
    yes(
        "IMGPROXY_SECRET",
        "(empty)",
        "When set, requests need `Authorization: Bearer <secret>` (403 otherwise).",
    ),
    yes(
        "IMGPROXY_ALLOW_ORIGIN",
        "(empty)",
        "When set, CORS `Access-Control-Allow-Origin` for results.",
    ),
    yes(
        "IMGPROXY_HEALTH_CHECK_PATH",
        "(empty)",
        "Extra path answered like `/health`.",
    ),
    partial(
        "IMGPROXY_USER_AGENT",
        DEFAULT_USER_AGENT,
        "User-Agent sent to HTTP sources.",
    ),
    yes(
        "IMGPROXY_KEY",
        "(empty)",
        "Hex signing key(s), comma-separated for rotation; empty = no signature check.",
    ),
    yes(
        "IMGPROXY_SALT",
        "(empty)",
        "Hex salt(s), paired with the keys.",
    ),
    yes(
        "IMGPROXY_SIGNATURE_SIZE",
        "32",
        "Bytes of the HMAC kept in signatures (1–32).",
    ),
    yes(
        "IMGPROXY_TRUSTED_SIGNATURES",
        "(empty)",
        "Signatures accepted for any path.",
    ),
    yes(
        "IMGPROXY_ALLOWED_PROCESSING_OPTIONS",
        "(empty = all)",
        "Processing options a URL may use.",
    ),
    yes(
        "IMGPROXY_ARGUMENTS_SEPARATOR",
        ":",
        "Separates an option's name and arguments.",
    ),
    yes(
        "IMGPROXY_PRESETS",
        "(empty)",
        "`name=opt/opt,name2=...`; `default` applies to every request.",
    ),
    yes(
        "IMGPROXY_PRESETS_SEPARATOR",
        ",",
        "Separates definitions in IMGPROXY_PRESETS.",
    ),
    partial(
        "IMGPROXY_PRESETS_PATH",
        "(empty)",
        "File with one preset a line (imgproxy: the `-presets` flag).",
    ),
    yes(
        "IMGPROXY_ONLY_PRESETS",
        "false",
        "The options segment is a list of preset names.",
    ),
    yes(
        "IMGPROXY_BASE_URL",
        "(empty)",
        "Prepended to source URLs that don't start with it.",
    ),
    yes(
        "IMGPROXY_BASE64_URL_INCLUDES_FILENAME",
        "false",
        "The last segment of a base64 source is a file name.",
    ),
    partial(
        "IMGPROXY_MAX_SRC_RESOLUTION",
        "50",
        "Megapixels a source may have, checked from its header (422); results may not be larger either.",
    ),
    yes(
        "IMGPROXY_MAX_RESULT_DIMENSION",
        "0",
        "Pixels a result may have on either side (422 past it); 0 = no per-side limit.",
    ),
    partial(
        "IMGPROXY_MAX_SRC_FILE_SIZE",
        "0",
        "Bytes a source may have, enforced while downloading (422). 0 = 536870912.",
    ),
    ours(
        "IMGPROXY_MAX_SOURCE_BYTES_IN_FLIGHT",
        "268435456",
        "Bytes all downloaded sources may hold at once, until their processing ends; a download waits for room (504 past the download timeout), a bigger source is refused (422).",
    ),
    ours(
        "IMGPROXY_MAX_JPEG_SCANS",
        "100",
        "Scans a progressive JPEG may have (422 past it; 0 = no limit): each is a pass over the whole image.",
    ),
    ours(
        "IMGPROXY_MAX_SVG_FILTER_MEGAPIXELS",
        "2000",
        "Filter work an SVG render may need, in megapixels read (canvas × pixels read per output pixel, summed over primitives); 422 past it.",
    ),
    yes(
        "IMGPROXY_MAX_ANIMATION_FRAMES",
        "1",
        "Frames of an animation that are processed.",
    ),
    yes(
        "IMGPROXY_MAX_ANIMATION_FRAME_RESOLUTION",
        "0",
        "Megapixels per animation frame; 0 = count all frames against MAX_SRC_RESOLUTION.",
    ),
    yes(
        "IMGPROXY_MAX_REDIRECTS",
        "10",
        "Redirects followed per source.",
    ),
    yes(
        "IMGPROXY_DOWNLOAD_TIMEOUT",
        "5",
        "Seconds to download a source (504 past it).",
    ),
    partial(
        "IMGPROXY_ALLOWED_SOURCES",
        "(empty = all)",
        "Comma-separated source URL prefixes, `*` = any run of chars within one URL part; matched on the parsed URL (the host whole, the path after `..` is resolved) and on every redirect hop, not on the raw text.",
    ),
    yes(
        "IMGPROXY_ALLOW_LOOPBACK_SOURCE_ADDRESSES",
        "false",
        "Allow sources resolving to loopback or 0.0.0.0.",
    ),
    yes(
        "IMGPROXY_ALLOW_LINK_LOCAL_SOURCE_ADDRESSES",
        "false",
        "Allow sources resolving to link-local addresses.",
    ),
    yes(
        "IMGPROXY_ALLOW_PRIVATE_SOURCE_ADDRESSES",
        "true",
        "Allow sources resolving to private networks.",
    ),
    partial(
        "IMGPROXY_LOCAL_FILESYSTEM_ROOT",
        "(empty = off)",
        "Directory served by `local:///path`; nothing outside it, regular files only, no symlink followed (imgproxy follows them).",
    ),
    yes(
        "IMGPROXY_SOURCE_URL_QUERY_SEPARATOR",
        "?",
        "Cuts the version/query off `s3://` and `local://` URLs.",
    ),
    yes(
        "IMGPROXY_USE_S3",
        "false",
        "Serve `s3://bucket/key[?version]` (AWS default credential chain).",
    ),
    yes(
        "IMGPROXY_S3_REGION",
        "(AWS env, else us-west-1)",
        "Region of the S3 client.",
    ),
    yes("IMGPROXY_S3_ENDPOINT", "(AWS)", "S3-compatible endpoint."),
    yes(
        "IMGPROXY_S3_ENDPOINT_USE_PATH_STYLE",
        "true",
        "Path-style addressing with a custom endpoint.",
    ),
    yes(
        "IMGPROXY_S3_ASSUME_ROLE_ARN",
        "(empty)",
        "Role assumed on top of the credential chain.",
    ),
    yes(
        "IMGPROXY_S3_ASSUME_ROLE_EXTERNAL_ID",
        "(empty)",
        "External id for that role.",
    ),
    yes("IMGPROXY_QUALITY", "80", "Default output quality (1–100)."),
    yes(
        "IMGPROXY_FORMAT_QUALITY",
        "webp=79,avif=63,jxl=77",
        "Per-format default quality.",
    ),
    partial(
        "IMGPROXY_STRIP_METADATA",
        "true",
        "Strip EXIF/XMP/IPTC. `false` keeps the source's EXIF (Orientation 1 once auto-rotated, no thumbnail) in JPEG, PNG and WebP results; XMP and IPTC are never kept.",
    ),
    partial(
        "IMGPROXY_KEEP_COPYRIGHT",
        "true",
        "When stripping, keep the source's EXIF Copyright and Artist (JPEG, PNG, WebP results); IPTC/XMP copyright is not kept.",
    ),
    yes(
        "IMGPROXY_STRIP_COLOR_PROFILE",
        "true",
        "Convert to sRGB and drop the profile.",
    ),
    yes(
        "IMGPROXY_AUTO_ROTATE",
        "true",
        "Rotate by EXIF orientation.",
    ),
    yes(
        "IMGPROXY_ENFORCE_THUMBNAIL",
        "false",
        "Prefer embedded thumbnails (HEIC/AVIF).",
    ),
    yes(
        "IMGPROXY_RETURN_ATTACHMENT",
        "false",
        "`Content-Disposition: attachment` by default.",
    ),
    yes(
        "IMGPROXY_SKIP_PROCESSING_FORMATS",
        "(empty)",
        "Source formats passed through unprocessed.",
    ),
    yes(
        "IMGPROXY_AUTO_WEBP",
        "false",
        "WebP when `Accept` allows it and no format is asked for; adds `Vary: Accept`.",
    ),
    yes(
        "IMGPROXY_ENFORCE_WEBP",
        "false",
        "WebP when `Accept` allows it, even over an asked format.",
    ),
    yes(
        "IMGPROXY_AUTO_AVIF",
        "false",
        "Like AUTO_WEBP, for AVIF (preferred over WebP).",
    ),
    yes(
        "IMGPROXY_ENFORCE_AVIF",
        "false",
        "Like ENFORCE_WEBP, for AVIF.",
    ),
    yes(
        "IMGPROXY_WATERMARK_DATA",
        "(empty)",
        "Base64 watermark image for the `watermark` option.",
    ),
    yes(
        "IMGPROXY_WATERMARK_PATH",
        "(empty)",
        "Watermark image file (when WATERMARK_DATA is unset).",
    ),
    yes(
        "IMGPROXY_WATERMARK_OPACITY",
        "1",
        "Base watermark opacity (0 < x ≤ 1), multiplied with the URL's.",
    ),
    yes(
        "IMGPROXY_PREFERRED_FORMATS",
        "jpeg,png,gif",
        "Output formats kept as-is; other sources become the first of these.",
    ),
    partial(
        "IMGPROXY_LOG_FORMAT",
        "pretty",
        "`pretty`/`structured` (text) or `json`; `gcp` is not offered.",
    ),
];

/// The raw environment as `envy` reads it; every value is text and parsed below, so a bad one
/// is reported with its variable name.
#[derive(Deserialize, Default)]
struct Env {
    imgproxy_bind: Option<String>,
    imgproxy_path_prefix: Option<String>,
    imgproxy_timeout: Option<String>,
    imgproxy_read_request_timeout: Option<String>,
    imgproxy_graceful_stop_timeout: Option<String>,
    imgproxy_concurrency: Option<String>,
    imgproxy_workers: Option<String>,
    imgproxy_requests_queue_size: Option<String>,
    imgproxy_max_clients: Option<String>,
    imgproxy_ttl: Option<String>,
    imgproxy_secret: Option<String>,
    imgproxy_allow_origin: Option<String>,
    imgproxy_health_check_path: Option<String>,
    imgproxy_user_agent: Option<String>,
    imgproxy_key: Option<String>,
    imgproxy_salt: Option<String>,
    imgproxy_signature_size: Option<String>,
    imgproxy_trusted_signatures: Option<String>,
    imgproxy_allowed_processing_options: Option<String>,
    imgproxy_arguments_separator: Option<String>,
    imgproxy_presets: Option<String>,
    imgproxy_presets_separator: Option<String>,
    imgproxy_presets_path: Option<String>,
    imgproxy_only_presets: Option<String>,
    imgproxy_base_url: Option<String>,
    imgproxy_base64_url_includes_filename: Option<String>,
    imgproxy_max_src_resolution: Option<String>,
    imgproxy_max_result_dimension: Option<String>,
    imgproxy_max_src_file_size: Option<String>,
    imgproxy_max_source_bytes_in_flight: Option<String>,
    imgproxy_max_jpeg_scans: Option<String>,
    imgproxy_max_svg_filter_megapixels: Option<String>,
    imgproxy_max_animation_frames: Option<String>,
    imgproxy_max_animation_frame_resolution: Option<String>,
    imgproxy_max_redirects: Option<String>,
    imgproxy_download_timeout: Option<String>,
    imgproxy_allowed_sources: Option<String>,
    imgproxy_allow_loopback_source_addresses: Option<String>,
    imgproxy_allow_link_local_source_addresses: Option<String>,
    imgproxy_allow_private_source_addresses: Option<String>,
    imgproxy_local_filesystem_root: Option<String>,
    imgproxy_source_url_query_separator: Option<String>,
    imgproxy_use_s3: Option<String>,
    imgproxy_s3_region: Option<String>,
    imgproxy_s3_endpoint: Option<String>,
    imgproxy_s3_endpoint_use_path_style: Option<String>,
    imgproxy_s3_assume_role_arn: Option<String>,
    imgproxy_s3_assume_role_external_id: Option<String>,
    imgproxy_quality: Option<String>,
    imgproxy_format_quality: Option<String>,
    imgproxy_strip_metadata: Option<String>,
    imgproxy_keep_copyright: Option<String>,
    imgproxy_strip_color_profile: Option<String>,
    imgproxy_auto_rotate: Option<String>,
    imgproxy_enforce_thumbnail: Option<String>,
    imgproxy_return_attachment: Option<String>,
    imgproxy_skip_processing_formats: Option<String>,
    imgproxy_auto_webp: Option<String>,
    imgproxy_enforce_webp: Option<String>,
    imgproxy_auto_avif: Option<String>,
    imgproxy_enforce_avif: Option<String>,
    imgproxy_watermark_data: Option<String>,
    imgproxy_watermark_path: Option<String>,
    imgproxy_watermark_opacity: Option<String>,
    imgproxy_preferred_formats: Option<String>,
    imgproxy_log_format: Option<String>,
}

/// Validated worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Socket address to listen on, `:PORT` expanded.
    pub bind: String,
    /// Without a trailing `/`; empty for none.
    pub path_prefix: String,
    pub server: ServerLimits,
    pub parser: ParserConfig,
    pub fetch: FetchConfig,
    pub processing: ProcessingConfig,
    /// `Authorization: Bearer <secret>` required when set. Never logged.
    pub secret: Option<Secret>,
    pub allow_origin: Option<String>,
    /// An extra health path (prefix included), besides `<prefix>/health`.
    pub health_check_path: Option<String>,
    pub log_format: LogFormat,
}

/// A value kept out of `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

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

/// Everything the source fetchers need.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    pub download_timeout: Duration,
    /// Bytes a source may have; always > 0 ([`HARD_MAX_SRC_FILE_SIZE`] stands in for 0).
    pub max_src_file_size: u64,
    /// See [`DEFAULT_MAX_SOURCE_BYTES_IN_FLIGHT`]; always > 0.
    pub max_source_bytes_in_flight: u64,
    pub max_redirects: usize,
    pub allowed_sources: Vec<super::fetch::allowed::AllowedSource>,
    pub addresses: AddressPolicy,
    pub user_agent: String,
    /// Canonical path of `IMGPROXY_LOCAL_FILESYSTEM_ROOT`, when `local://` is on.
    pub local_root: Option<PathBuf>,
    pub query_separator: String,
    pub s3: Option<S3SourceConfig>,
}

/// Which resolved source addresses may be connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPolicy {
    pub allow_loopback: bool,
    pub allow_link_local: bool,
    pub allow_private: bool,
}

impl Default for AddressPolicy {
    fn default() -> Self {
        AddressPolicy {
            allow_loopback: DEFAULT_ALLOW_LOOPBACK_SOURCE_ADDRESSES,
            allow_link_local: DEFAULT_ALLOW_LINK_LOCAL_SOURCE_ADDRESSES,
            allow_private: DEFAULT_ALLOW_PRIVATE_SOURCE_ADDRESSES,
        }
    }
}

/// `s3://` sources.
#[derive(Clone, PartialEq, Eq)]
pub struct S3SourceConfig {
    /// `None`: the AWS environment's region, else [`FALLBACK_S3_REGION`].
    pub region: Option<String>,
    /// `None`: AWS itself.
    pub endpoint: Option<String>,
    pub path_style: bool,
    pub assume_role_arn: Option<String>,
    pub assume_role_external_id: Option<Secret>,
}

impl std::fmt::Debug for S3SourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3SourceConfig")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("path_style", &self.path_style)
            .field("assume_role_arn", &self.assume_role_arn)
            .finish_non_exhaustive()
    }
}

/// Settings of the processing step (the engine's limits and format negotiation).
#[derive(Debug, Clone)]
pub struct ProcessingConfig {
    pub max_src_resolution_mp: f64,
    pub max_result_dimension: u32,
    /// See [`crate::worker::engine::DEFAULT_MAX_JPEG_SCANS`].
    pub max_jpeg_scans: u32,
    /// See [`crate::worker::engine::DEFAULT_MAX_SVG_FILTER_MEGAPIXELS`].
    pub max_svg_filter_megapixels: f64,
    pub max_animation_frames: u32,
    pub max_animation_frame_resolution_mp: f64,
    pub auto_webp: bool,
    pub enforce_webp: bool,
    pub auto_avif: bool,
    pub enforce_avif: bool,
    /// The decoded watermark image, shared by every request.
    pub watermark: Option<Arc<Vec<u8>>>,
    /// Multiplied with the URL's watermark opacity; within (0, 1].
    pub watermark_opacity: f64,
    /// `None`: the engine's default (`jpeg,png,gif`).
    pub preferred_formats: Option<Vec<ImageFormat>>,
}

impl ProcessingConfig {
    /// Whether results depend on the request's `Accept` header (and so need `Vary: Accept`).
    pub fn negotiates_format(&self) -> bool {
        self.auto_webp || self.enforce_webp || self.auto_avif || self.enforce_avif
    }
}

/// A setting that could not be used; the message names the variable and the value.
#[derive(Debug, thiserror::Error)]
pub enum WorkerConfigError {
    #[error("{0}")]
    Parse(String),
    #[error("{var}={value:?} is not valid: {why}")]
    Invalid {
        var: &'static str,
        value: String,
        why: String,
    },
}

fn invalid(var: &'static str, value: &str, why: impl Into<String>) -> WorkerConfigError {
    WorkerConfigError::Invalid {
        var,
        value: value.to_owned(),
        why: why.into(),
    }
}

impl WorkerConfig {
    /// Reads the process environment.
    ///
    /// # Errors
    /// A variable that cannot be parsed or fails validation.
    pub fn from_env() -> Result<WorkerConfig, WorkerConfigError> {
        WorkerConfig::from_iter(std::env::vars())
    }

    /// Reads settings from `(NAME, value)` pairs, so tests never touch the process environment.
    ///
    /// # Errors
    /// A variable that cannot be parsed or fails validation.
    // Named like the proxy's `Config::from_iter`; not a collection, so not `FromIterator`.
    #[allow(clippy::should_implement_trait)]
    pub fn from_iter<I>(vars: I) -> Result<WorkerConfig, WorkerConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        // Empty values count as unset, as in imgproxy (and a shell `FOO= cmd`). The query
        // separator is the exception: imgproxy lets it be set to empty on purpose.
        let vars = vars
            .into_iter()
            .filter(|(k, v)| !v.is_empty() || k == "IMGPROXY_SOURCE_URL_QUERY_SEPARATOR");
        let env: Env =
            envy::from_iter(vars).map_err(|e| WorkerConfigError::Parse(e.to_string()))?;
        env.validate()
    }
}

impl Env {
    fn validate(self) -> Result<WorkerConfig, WorkerConfigError> {
        let bind = expand_bind(self.imgproxy_bind.as_deref().unwrap_or(DEFAULT_BIND))?;
        let path_prefix = url_path(self.imgproxy_path_prefix.as_deref().unwrap_or(""));
        let health_check_path = self
            .imgproxy_health_check_path
            .as_deref()
            .map(url_path)
            .filter(|p| !p.is_empty())
            .map(|p| format!("{path_prefix}{p}"));

        let timeout = seconds(
            "IMGPROXY_TIMEOUT",
            &self.imgproxy_timeout,
            DEFAULT_TIMEOUT_SECS,
        )?;
        let server = ServerLimits {
            timeout,
            read_request_timeout: seconds(
                "IMGPROXY_READ_REQUEST_TIMEOUT",
                &self.imgproxy_read_request_timeout,
                DEFAULT_READ_REQUEST_TIMEOUT_SECS,
            )?,
            graceful_stop_timeout: seconds(
                "IMGPROXY_GRACEFUL_STOP_TIMEOUT",
                &self.imgproxy_graceful_stop_timeout,
                timeout.as_secs() * 2,
            )?,
            concurrency: self.concurrency()?,
            max_in_flight: 0,
            ttl: number("IMGPROXY_TTL", &self.imgproxy_ttl, DEFAULT_TTL_SECS)?,
        };
        let queue: usize = number(
            "IMGPROXY_REQUESTS_QUEUE_SIZE",
            &self.imgproxy_requests_queue_size,
            DEFAULT_REQUESTS_QUEUE_SIZE,
        )?;
        let max_clients: usize = number(
            "IMGPROXY_MAX_CLIENTS",
            &self.imgproxy_max_clients,
            DEFAULT_MAX_CLIENTS,
        )?;
        let max_in_flight = match (queue, max_clients) {
            (0, 0) => UNLIMITED_CLIENTS,
            (0, clients) => clients.min(UNLIMITED_CLIENTS),
            (queue, _) => server
                .concurrency
                .saturating_add(queue)
                .min(UNLIMITED_CLIENTS),
        };
        let server = ServerLimits {
            max_in_flight,
            ..server
        };

        let parser = self.parser()?;
        let fetch = self.fetch()?;
        let processing = self.processing()?;
        let log_format = match self.imgproxy_log_format.as_deref() {
            None | Some("pretty" | "structured") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(invalid(
                    "IMGPROXY_LOG_FORMAT",
                    other,
                    "expected pretty, structured or json",
                ));
            }
        };
        Ok(WorkerConfig {
            bind,
            path_prefix,
            server,
            parser,
            fetch,
            processing,
            secret: self.imgproxy_secret.map(Secret),
            allow_origin: self.imgproxy_allow_origin,
            health_check_path,
            log_format,
        })
    }

    fn concurrency(&self) -> Result<usize, WorkerConfigError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // IMGPROXY_WORKERS is imgproxy's newer name; it wins when both are set, as there.
        let (var, raw) = match (&self.imgproxy_workers, &self.imgproxy_concurrency) {
            (Some(w), _) => ("IMGPROXY_WORKERS", Some(w.clone())),
            (None, c) => ("IMGPROXY_CONCURRENCY", c.clone()),
        };
        match number::<usize>(var, &raw, cores)? {
            0 => Err(invalid(var, "0", "must be at least 1")),
            n => Ok(n),
        }
    }

    fn parser(&self) -> Result<ParserConfig, WorkerConfigError> {
        let signature_size = number(
            "IMGPROXY_SIGNATURE_SIZE",
            &self.imgproxy_signature_size,
            DEFAULT_SIGNATURE_SIZE,
        )?;
        let signature = SignatureVerifier::from_env(
            self.imgproxy_key.as_deref().unwrap_or(""),
            self.imgproxy_salt.as_deref().unwrap_or(""),
            signature_size,
            self.imgproxy_trusted_signatures.as_deref().unwrap_or(""),
        )
        // The message names the variable; it never contains key material.
        .map_err(|e| WorkerConfigError::Parse(e.to_string()))?;

        let arguments_separator = self
            .imgproxy_arguments_separator
            .clone()
            .unwrap_or_else(|| DEFAULT_ARGUMENTS_SEPARATOR.to_owned());
        let mut presets = Presets::default();
        if let Some(list) = &self.imgproxy_presets {
            let separator = self
                .imgproxy_presets_separator
                .as_deref()
                .unwrap_or(DEFAULT_PRESETS_SEPARATOR);
            presets
                .add_list(list, separator, &arguments_separator)
                .map_err(|e| invalid("IMGPROXY_PRESETS", list, e.to_string()))?;
        }
        if let Some(path) = &self.imgproxy_presets_path {
            let contents = std::fs::read_to_string(path)
                .map_err(|e| invalid("IMGPROXY_PRESETS_PATH", path, e.to_string()))?;
            presets
                .add_file(&contents, &arguments_separator)
                .map_err(|e| invalid("IMGPROXY_PRESETS_PATH", path, e.to_string()))?;
        }

        let parser = ParserConfig {
            signature,
            defaults: self.defaults()?,
            presets,
            only_presets: boolean(
                "IMGPROXY_ONLY_PRESETS",
                &self.imgproxy_only_presets,
                DEFAULT_ONLY_PRESETS,
            )?,
            allowed_options: list(&self.imgproxy_allowed_processing_options),
            arguments_separator,
            base_url: self
                .imgproxy_base_url
                .clone()
                .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned()),
            base64_url_includes_filename: boolean(
                "IMGPROXY_BASE64_URL_INCLUDES_FILENAME",
                &self.imgproxy_base64_url_includes_filename,
                DEFAULT_BASE64_URL_INCLUDES_FILENAME,
            )?,
        };
        parser.validate().map_err(|e| {
            let (var, value) = match e {
                super::url::ParserConfigError::EmptyArgumentsSeparator => {
                    ("IMGPROXY_ARGUMENTS_SEPARATOR", String::new())
                }
                super::url::ParserConfigError::InvalidPreset { ref name, .. } => {
                    ("IMGPROXY_PRESETS", name.clone())
                }
            };
            invalid(var, &value, e.to_string())
        })?;
        Ok(parser)
    }

    fn defaults(&self) -> Result<Defaults, WorkerConfigError> {
        let d = Defaults::default();
        let quality: u8 = number("IMGPROXY_QUALITY", &self.imgproxy_quality, DEFAULT_QUALITY)?;
        if !(1..=100).contains(&quality) {
            return Err(invalid(
                "IMGPROXY_QUALITY",
                &quality.to_string(),
                "must be within 1..=100",
            ));
        }
        let mut format_quality: BTreeMap<ImageFormat, u8> =
            DEFAULT_FORMAT_QUALITY.into_iter().collect();
        if let Some(raw) = &self.imgproxy_format_quality {
            for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let bad =
                    |why: &str| invalid("IMGPROXY_FORMAT_QUALITY", raw, format!("`{pair}`: {why}"));
                let (format, q) = pair
                    .split_once('=')
                    .ok_or_else(|| bad("expected format=quality"))?;
                let format: ImageFormat = format
                    .trim()
                    .parse()
                    .map_err(|e: super::options::FormatError| bad(&e.to_string()))?;
                let q: u8 = q
                    .trim()
                    .parse()
                    .ok()
                    .filter(|q| (1..=100).contains(q))
                    .ok_or_else(|| bad("quality must be within 1..=100"))?;
                format_quality.insert(format, q);
            }
        }
        Ok(Defaults {
            quality,
            format_quality,
            strip_metadata: boolean(
                "IMGPROXY_STRIP_METADATA",
                &self.imgproxy_strip_metadata,
                d.strip_metadata,
            )?,
            keep_copyright: boolean(
                "IMGPROXY_KEEP_COPYRIGHT",
                &self.imgproxy_keep_copyright,
                d.keep_copyright,
            )?,
            strip_color_profile: boolean(
                "IMGPROXY_STRIP_COLOR_PROFILE",
                &self.imgproxy_strip_color_profile,
                d.strip_color_profile,
            )?,
            auto_rotate: boolean(
                "IMGPROXY_AUTO_ROTATE",
                &self.imgproxy_auto_rotate,
                d.auto_rotate,
            )?,
            enforce_thumbnail: boolean(
                "IMGPROXY_ENFORCE_THUMBNAIL",
                &self.imgproxy_enforce_thumbnail,
                d.enforce_thumbnail,
            )?,
            return_attachment: boolean(
                "IMGPROXY_RETURN_ATTACHMENT",
                &self.imgproxy_return_attachment,
                d.return_attachment,
            )?,
            skip_processing_formats: formats(
                "IMGPROXY_SKIP_PROCESSING_FORMATS",
                &self.imgproxy_skip_processing_formats,
            )?,
        })
    }

    fn fetch(&self) -> Result<FetchConfig, WorkerConfigError> {
        let max_src_file_size = match number(
            "IMGPROXY_MAX_SRC_FILE_SIZE",
            &self.imgproxy_max_src_file_size,
            DEFAULT_MAX_SRC_FILE_SIZE,
        )? {
            0 => HARD_MAX_SRC_FILE_SIZE,
            n => n.min(HARD_MAX_SRC_FILE_SIZE),
        };
        let local_root = match &self.imgproxy_local_filesystem_root {
            None => None,
            Some(root) => {
                let canonical = std::fs::canonicalize(root).map_err(|e| {
                    invalid(
                        "IMGPROXY_LOCAL_FILESYSTEM_ROOT",
                        root,
                        format!("cannot use it: {e}"),
                    )
                })?;
                if !canonical.is_dir() {
                    return Err(invalid(
                        "IMGPROXY_LOCAL_FILESYSTEM_ROOT",
                        root,
                        "not a directory",
                    ));
                }
                Some(canonical)
            }
        };
        let s3 = if boolean("IMGPROXY_USE_S3", &self.imgproxy_use_s3, DEFAULT_USE_S3)? {
            let endpoint = match &self.imgproxy_s3_endpoint {
                None => None,
                // imgproxy assumes http:// for a bare host.
                Some(e) if e.starts_with("http://") || e.starts_with("https://") => Some(e.clone()),
                Some(e) => Some(format!("http://{e}")),
            };
            if let Some(e) = &endpoint
                && e.parse::<http::Uri>().map_or(true, |u| u.host().is_none())
            {
                return Err(invalid("IMGPROXY_S3_ENDPOINT", e, "not a URL with a host"));
            }
            Some(S3SourceConfig {
                region: self.imgproxy_s3_region.clone(),
                endpoint,
                path_style: boolean(
                    "IMGPROXY_S3_ENDPOINT_USE_PATH_STYLE",
                    &self.imgproxy_s3_endpoint_use_path_style,
                    DEFAULT_S3_ENDPOINT_USE_PATH_STYLE,
                )?,
                assume_role_arn: self.imgproxy_s3_assume_role_arn.clone(),
                assume_role_external_id: self
                    .imgproxy_s3_assume_role_external_id
                    .clone()
                    .map(Secret),
            })
        } else {
            None
        };
        let user_agent = self
            .imgproxy_user_agent
            .as_deref()
            .unwrap_or(DEFAULT_USER_AGENT)
            .replace("%current_version", env!("CARGO_PKG_VERSION"));
        if http::HeaderValue::from_str(&user_agent).is_err() {
            return Err(invalid(
                "IMGPROXY_USER_AGENT",
                &user_agent,
                "not a valid header value",
            ));
        }
        Ok(FetchConfig {
            download_timeout: seconds(
                "IMGPROXY_DOWNLOAD_TIMEOUT",
                &self.imgproxy_download_timeout,
                DEFAULT_DOWNLOAD_TIMEOUT_SECS,
            )?,
            max_src_file_size,
            max_source_bytes_in_flight: match number(
                "IMGPROXY_MAX_SOURCE_BYTES_IN_FLIGHT",
                &self.imgproxy_max_source_bytes_in_flight,
                DEFAULT_MAX_SOURCE_BYTES_IN_FLIGHT,
            )? {
                0 => {
                    return Err(invalid(
                        "IMGPROXY_MAX_SOURCE_BYTES_IN_FLIGHT",
                        "0",
                        "must be at least 1",
                    ));
                }
                n => n,
            },
            max_redirects: number(
                "IMGPROXY_MAX_REDIRECTS",
                &self.imgproxy_max_redirects,
                DEFAULT_MAX_REDIRECTS,
            )?,
            allowed_sources: super::fetch::allowed::parse_list(
                self.imgproxy_allowed_sources.as_deref().unwrap_or(""),
            )
            .map_err(|(entry, why)| invalid("IMGPROXY_ALLOWED_SOURCES", &entry, why.to_string()))?,
            addresses: AddressPolicy {
                allow_loopback: boolean(
                    "IMGPROXY_ALLOW_LOOPBACK_SOURCE_ADDRESSES",
                    &self.imgproxy_allow_loopback_source_addresses,
                    DEFAULT_ALLOW_LOOPBACK_SOURCE_ADDRESSES,
                )?,
                allow_link_local: boolean(
                    "IMGPROXY_ALLOW_LINK_LOCAL_SOURCE_ADDRESSES",
                    &self.imgproxy_allow_link_local_source_addresses,
                    DEFAULT_ALLOW_LINK_LOCAL_SOURCE_ADDRESSES,
                )?,
                allow_private: boolean(
                    "IMGPROXY_ALLOW_PRIVATE_SOURCE_ADDRESSES",
                    &self.imgproxy_allow_private_source_addresses,
                    DEFAULT_ALLOW_PRIVATE_SOURCE_ADDRESSES,
                )?,
            },
            user_agent,
            local_root,
            query_separator: self
                .imgproxy_source_url_query_separator
                .clone()
                .unwrap_or_else(|| DEFAULT_SOURCE_URL_QUERY_SEPARATOR.to_owned()),
            s3,
        })
    }

    fn processing(&self) -> Result<ProcessingConfig, WorkerConfigError> {
        let max_src_resolution_mp = megapixels(
            "IMGPROXY_MAX_SRC_RESOLUTION",
            &self.imgproxy_max_src_resolution,
            DEFAULT_MAX_SRC_RESOLUTION_MP,
        )?;
        if max_src_resolution_mp <= 0.0 {
            return Err(invalid(
                "IMGPROXY_MAX_SRC_RESOLUTION",
                &max_src_resolution_mp.to_string(),
                "must be greater than 0",
            ));
        }
        let max_animation_frames: u32 = number(
            "IMGPROXY_MAX_ANIMATION_FRAMES",
            &self.imgproxy_max_animation_frames,
            DEFAULT_MAX_ANIMATION_FRAMES,
        )?;
        if max_animation_frames == 0 {
            return Err(invalid(
                "IMGPROXY_MAX_ANIMATION_FRAMES",
                "0",
                "must be at least 1",
            ));
        }
        let watermark = match (&self.imgproxy_watermark_data, &self.imgproxy_watermark_path) {
            (Some(data), _) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .map_err(|e| {
                        // The image itself would be a useless wall of text in the message.
                        invalid(
                            "IMGPROXY_WATERMARK_DATA",
                            "(base64 data)",
                            format!("not base64: {e}"),
                        )
                    })?,
            ),
            (None, Some(path)) => Some(
                std::fs::read(path)
                    .map_err(|e| invalid("IMGPROXY_WATERMARK_PATH", path, e.to_string()))?,
            ),
            (None, None) => None,
        };
        if let Some(image) = &watermark {
            let (var, shown) = match &self.imgproxy_watermark_path {
                Some(path) if self.imgproxy_watermark_data.is_none() => {
                    ("IMGPROXY_WATERMARK_PATH", path.as_str())
                }
                _ => ("IMGPROXY_WATERMARK_DATA", "(base64 data)"),
            };
            crate::worker::engine::check_watermark(image)
                .map_err(|e| invalid(var, shown, format!("not a usable image: {e}")))?;
        }
        Ok(ProcessingConfig {
            max_src_resolution_mp,
            max_result_dimension: number(
                "IMGPROXY_MAX_RESULT_DIMENSION",
                &self.imgproxy_max_result_dimension,
                DEFAULT_MAX_RESULT_DIMENSION,
            )?,
            max_jpeg_scans: number(
                "IMGPROXY_MAX_JPEG_SCANS",
                &self.imgproxy_max_jpeg_scans,
                crate::worker::engine::DEFAULT_MAX_JPEG_SCANS,
            )?,
            max_svg_filter_megapixels: megapixels(
                "IMGPROXY_MAX_SVG_FILTER_MEGAPIXELS",
                &self.imgproxy_max_svg_filter_megapixels,
                crate::worker::engine::DEFAULT_MAX_SVG_FILTER_MEGAPIXELS,
            )?,
            max_animation_frames,
            max_animation_frame_resolution_mp: megapixels(
                "IMGPROXY_MAX_ANIMATION_FRAME_RESOLUTION",
                &self.imgproxy_max_animation_frame_resolution,
                DEFAULT_MAX_ANIMATION_FRAME_RESOLUTION_MP,
            )?,
            auto_webp: boolean(
                "IMGPROXY_AUTO_WEBP",
                &self.imgproxy_auto_webp,
                DEFAULT_FORMAT_NEGOTIATION,
            )?,
            enforce_webp: boolean(
                "IMGPROXY_ENFORCE_WEBP",
                &self.imgproxy_enforce_webp,
                DEFAULT_FORMAT_NEGOTIATION,
            )?,
            auto_avif: boolean(
                "IMGPROXY_AUTO_AVIF",
                &self.imgproxy_auto_avif,
                DEFAULT_FORMAT_NEGOTIATION,
            )?,
            enforce_avif: boolean(
                "IMGPROXY_ENFORCE_AVIF",
                &self.imgproxy_enforce_avif,
                DEFAULT_FORMAT_NEGOTIATION,
            )?,
            watermark: watermark.map(Arc::new),
            watermark_opacity: self.watermark_opacity()?,
            preferred_formats: match &self.imgproxy_preferred_formats {
                None => None,
                Some(raw) => {
                    let formats = formats("IMGPROXY_PREFERRED_FORMATS", &Some(raw.clone()))?;
                    if formats.is_empty() {
                        return Err(invalid(
                            "IMGPROXY_PREFERRED_FORMATS",
                            raw,
                            "at least one format is needed",
                        ));
                    }
                    Some(formats)
                }
            },
        })
    }

    fn watermark_opacity(&self) -> Result<f64, WorkerConfigError> {
        let Some(raw) = &self.imgproxy_watermark_opacity else {
            return Ok(DEFAULT_WATERMARK_OPACITY);
        };
        raw.trim()
            .parse::<f64>()
            .ok()
            .filter(|o| *o > 0.0 && *o <= 1.0)
            .ok_or_else(|| invalid("IMGPROXY_WATERMARK_OPACITY", raw, "must be > 0 and ≤ 1"))
    }
}

/// Go's `strconv.ParseBool` words, which imgproxy accepts.
fn boolean(
    var: &'static str,
    raw: &Option<String>,
    default: bool,
) -> Result<bool, WorkerConfigError> {
    match raw.as_deref() {
        None => Ok(default),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some(other) => Err(invalid(var, other, "expected true or false")),
    }
}

fn number<T: std::str::FromStr>(
    var: &'static str,
    raw: &Option<String>,
    default: T,
) -> Result<T, WorkerConfigError> {
    match raw.as_deref() {
        None => Ok(default),
        Some(s) => s
            .trim()
            .parse()
            .map_err(|_| invalid(var, s, "expected a non-negative whole number")),
    }
}

fn seconds(
    var: &'static str,
    raw: &Option<String>,
    default: u64,
) -> Result<Duration, WorkerConfigError> {
    match number(var, raw, default)? {
        0 => Err(invalid(var, "0", "must be at least 1 second")),
        n => Ok(Duration::from_secs(n)),
    }
}

/// A megapixel count, fractions allowed (`0.5`), as imgproxy's `MegaInt`.
fn megapixels(
    var: &'static str,
    raw: &Option<String>,
    default: f64,
) -> Result<f64, WorkerConfigError> {
    match raw.as_deref() {
        None => Ok(default),
        Some(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| invalid(var, s, "expected a number of megapixels")),
    }
}

fn list(raw: &Option<String>) -> Vec<String> {
    raw.as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn formats(var: &'static str, raw: &Option<String>) -> Result<Vec<ImageFormat>, WorkerConfigError> {
    list(raw)
        .iter()
        .map(|f| {
            f.parse().map_err(|e: super::options::FormatError| {
                invalid(var, raw.as_deref().unwrap_or(""), e.to_string())
            })
        })
        .collect()
}

/// imgproxy's `URLPath`: drop query and fragment and a trailing `/`, ensure a leading `/`.
fn url_path(raw: &str) -> String {
    let path = raw.split(['?', '#']).next().unwrap_or("");
    let path = path.strip_suffix('/').unwrap_or(path);
    if path.is_empty() || path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    }
}

/// `:8080` → `0.0.0.0:8080` (Go's meaning); anything else must be `host:port`.
fn expand_bind(raw: &str) -> Result<String, WorkerConfigError> {
    let addr = match raw.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => raw.to_owned(),
    };
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(addr),
        _ => Err(invalid("IMGPROXY_BIND", raw, "expected HOST:PORT or :PORT")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<WorkerConfig, WorkerConfigError> {
        WorkerConfig::from_iter(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_are_imgproxys() {
        let c = config(&[]).unwrap();
        assert_eq!(c.bind, "0.0.0.0:8080");
        assert_eq!(c.path_prefix, "");
        assert_eq!(c.server.timeout, Duration::from_secs(10));
        assert_eq!(c.server.graceful_stop_timeout, Duration::from_secs(20));
        assert_eq!(c.server.ttl, 31_536_000);
        assert_eq!(c.server.max_in_flight, 2048);
        assert!(c.server.concurrency >= 1);
        assert_eq!(c.fetch.download_timeout, Duration::from_secs(5));
        assert_eq!(c.fetch.max_redirects, 10);
        assert_eq!(c.fetch.max_src_file_size, HARD_MAX_SRC_FILE_SIZE);
        assert_eq!(c.fetch.addresses, AddressPolicy::default());
        assert!(!c.fetch.addresses.allow_loopback && !c.fetch.addresses.allow_link_local);
        assert!(c.fetch.addresses.allow_private);
        assert!(c.fetch.local_root.is_none() && c.fetch.s3.is_none());
        assert_eq!(c.processing.max_src_resolution_mp, 50.0);
        assert_eq!(c.processing.max_animation_frames, 1);
        assert!(!c.processing.negotiates_format());
        assert!(!c.parser.signature.is_enabled());
        assert_eq!(c.parser.defaults, Defaults::default());
        assert!(c.fetch.user_agent.starts_with("imgproxy-cache/0."));
    }

    #[test]
    fn values_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(&[
            ("IMGPROXY_BIND", "127.0.0.1:8081"),
            ("IMGPROXY_PATH_PREFIX", "imgs/"),
            ("IMGPROXY_KEY", "736563726574"),
            ("IMGPROXY_SALT", "68656C6C6F"),
            ("IMGPROXY_CONCURRENCY", "3"),
            ("IMGPROXY_REQUESTS_QUEUE_SIZE", "5"),
            ("IMGPROXY_MAX_SRC_RESOLUTION", "0.5"),
            ("IMGPROXY_MAX_SRC_FILE_SIZE", "1000"),
            ("IMGPROXY_ALLOW_LOOPBACK_SOURCE_ADDRESSES", "t"),
            ("IMGPROXY_ALLOW_PRIVATE_SOURCE_ADDRESSES", "FALSE"),
            (
                "IMGPROXY_LOCAL_FILESYSTEM_ROOT",
                dir.path().to_str().unwrap(),
            ),
            ("IMGPROXY_USE_S3", "1"),
            ("IMGPROXY_S3_ENDPOINT", "127.0.0.1:9000"),
            ("IMGPROXY_FORMAT_QUALITY", "webp=50,jpeg=90"),
            ("IMGPROXY_SKIP_PROCESSING_FORMATS", "svg, gif"),
            ("IMGPROXY_AUTO_AVIF", "true"),
            ("IMGPROXY_PRESETS", "small=rs:fit:100:100,default=q:70"),
            ("IMGPROXY_WATERMARK_DATA", PNG_2X2_BASE64),
            ("IMGPROXY_HEALTH_CHECK_PATH", "ping"),
        ])
        .unwrap();
        assert_eq!(c.bind, "127.0.0.1:8081");
        assert_eq!(c.path_prefix, "/imgs");
        assert_eq!(c.health_check_path.as_deref(), Some("/imgs/ping"));
        assert!(c.parser.signature.is_enabled());
        assert_eq!(c.server.concurrency, 3);
        assert_eq!(c.server.max_in_flight, 8);
        assert_eq!(c.processing.max_src_resolution_mp, 0.5);
        assert_eq!(c.fetch.max_src_file_size, 1000);
        assert!(c.fetch.addresses.allow_loopback && !c.fetch.addresses.allow_private);
        assert_eq!(
            c.fetch.local_root,
            Some(std::fs::canonicalize(dir.path()).unwrap())
        );
        let s3 = c.fetch.s3.unwrap();
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(s3.path_style);
        assert_eq!(c.parser.defaults.format_quality[&ImageFormat::Webp], 50);
        assert_eq!(c.parser.defaults.format_quality[&ImageFormat::Jpeg], 90);
        assert_eq!(c.parser.defaults.format_quality[&ImageFormat::Avif], 63);
        assert_eq!(
            c.parser.defaults.skip_processing_formats,
            vec![ImageFormat::Svg, ImageFormat::Gif]
        );
        assert!(c.processing.negotiates_format());
        assert_eq!(c.parser.presets.get("small").unwrap(), ["rs:fit:100:100"]);
        assert_eq!(
            c.processing.watermark.as_deref().map(|w| &w[..8]),
            Some(&b"\x89PNG\r\n\x1a\n"[..])
        );
    }

    /// A valid 2×2 PNG.
    const PNG_2X2_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAEElEQVR4nGP4z8AARAwQCgAf7gP9i18U1AAAAABJRU5ErkJggg==";

    /// A watermark that isn't an image stops start-up, naming the variable (and the path).
    #[test]
    fn unusable_watermarks_stop_start_up() {
        let msg = config(&[("IMGPROXY_WATERMARK_DATA", "aGVsbG8=")])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("IMGPROXY_WATERMARK_DATA") && msg.contains("not a usable image"),
            "{msg}"
        );
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "hello").unwrap();
        let path = file.path().to_str().unwrap();
        let msg = config(&[("IMGPROXY_WATERMARK_PATH", path)])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("IMGPROXY_WATERMARK_PATH") && msg.contains(path),
            "{msg}"
        );
    }

    #[test]
    fn workers_is_an_alias_and_max_clients_zero_stays_bounded() {
        let c = config(&[("IMGPROXY_WORKERS", "7"), ("IMGPROXY_MAX_CLIENTS", "0")]).unwrap();
        assert_eq!(c.server.concurrency, 7);
        assert_eq!(c.server.max_in_flight, UNLIMITED_CLIENTS);
    }

    #[test]
    fn errors_name_the_variable_and_the_value() {
        let cases: &[(&str, &str)] = &[
            ("IMGPROXY_BIND", "localhost"),
            ("IMGPROXY_TIMEOUT", "soon"),
            ("IMGPROXY_TIMEOUT", "0"),
            ("IMGPROXY_CONCURRENCY", "0"),
            ("IMGPROXY_MAX_CLIENTS", "-1"),
            ("IMGPROXY_ALLOW_LOOPBACK_SOURCE_ADDRESSES", "yes"),
            ("IMGPROXY_MAX_SRC_RESOLUTION", "lots"),
            ("IMGPROXY_MAX_SRC_RESOLUTION", "0"),
            ("IMGPROXY_MAX_ANIMATION_FRAMES", "0"),
            ("IMGPROXY_QUALITY", "101"),
            ("IMGPROXY_FORMAT_QUALITY", "webp=0"),
            ("IMGPROXY_FORMAT_QUALITY", "bogus=50"),
            ("IMGPROXY_SKIP_PROCESSING_FORMATS", "bogus"),
            ("IMGPROXY_LOCAL_FILESYSTEM_ROOT", "/definitely/not/here"),
            ("IMGPROXY_ALLOWED_SOURCES", "example.com/"),
            ("IMGPROXY_ALLOWED_SOURCES", "ftp://example.com/"),
            ("IMGPROXY_PRESETS", "broken"),
            ("IMGPROXY_PRESETS_PATH", "/definitely/not/here.txt"),
            ("IMGPROXY_WATERMARK_PATH", "/definitely/not/here.png"),
            ("IMGPROXY_LOG_FORMAT", "gcp"),
            ("IMGPROXY_USER_AGENT", "bad\nagent"),
            ("IMGPROXY_WATERMARK_OPACITY", "1.5"),
            ("IMGPROXY_PREFERRED_FORMATS", "png,bogus"),
        ];
        for (var, value) in cases {
            let msg = config(&[(var, value)]).unwrap_err().to_string();
            assert!(msg.contains(var), "{msg:?} should name {var}");
            let shown = value.trim().escape_debug().to_string();
            assert!(msg.contains(&shown), "{msg:?} should show {value:?}");
        }
    }

    #[test]
    fn signing_errors_name_the_variable_without_the_key() {
        let msg = config(&[("IMGPROXY_KEY", "zz-secret"), ("IMGPROXY_SALT", "00")])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("IMGPROXY_KEY"), "{msg}");
        assert!(!msg.contains("zz-secret"), "{msg}");
        let msg = config(&[("IMGPROXY_SIGNATURE_SIZE", "33")])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("IMGPROXY_SIGNATURE_SIZE"), "{msg}");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let c = config(&[
            ("IMGPROXY_SECRET", "very-secret"),
            ("IMGPROXY_USE_S3", "true"),
            ("IMGPROXY_S3_ASSUME_ROLE_EXTERNAL_ID", "external-secret"),
        ])
        .unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains("very-secret") && !debug.contains("external-secret"));
    }

    #[test]
    fn every_env_field_has_a_settings_row() {
        // The README and --help are generated from SETTINGS; a variable read but not listed
        // would be invisible to users.
        let names: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
        let source = include_str!("config.rs");
        let env_struct = source
            .split("struct Env {")
            .nth(1)
            .and_then(|s| s.split('}').next())
            .unwrap();
        for field in env_struct
            .lines()
            .filter_map(|l| l.trim().split(':').next())
        {
            if field.is_empty() || field == "imgproxy_workers" {
                continue;
            }
            let var = field.to_ascii_uppercase();
            assert!(names.contains(&var.as_str()), "{var} has no SETTINGS row");
        }
    }

    #[test]
    fn url_paths_are_normalised_like_imgproxy() {
        assert_eq!(url_path(""), "");
        assert_eq!(url_path("/"), "");
        assert_eq!(url_path("imgs/"), "/imgs");
        assert_eq!(url_path("/a/b?x#y"), "/a/b");
    }
}
