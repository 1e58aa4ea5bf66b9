//! The worker's settings table: every variable it reads, its default, how closely it follows
//! imgproxy, and its meaning. It feeds `imgproxy-cache worker --help` and the README's worker
//! section (a test keeps the README in step).

use super::defaults::{DEFAULT_BIND, DEFAULT_USER_AGENT};
use crate::settings::{Setting, row};

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

const fn yes(name: &'static str, default: &'static str, meaning: &'static str) -> Setting<Compat> {
    row(name, default, meaning).with_compat(Compat::Yes)
}

const fn partial(
    name: &'static str,
    default: &'static str,
    meaning: &'static str,
) -> Setting<Compat> {
    row(name, default, meaning).with_compat(Compat::Partial)
}

const fn ours(name: &'static str, default: &'static str, meaning: &'static str) -> Setting<Compat> {
    row(name, default, meaning).with_compat(Compat::Ours)
}

/// Every environment variable the worker reads, for `--help` and the README.
pub const SETTINGS: &[Setting<Compat>] = &[
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
