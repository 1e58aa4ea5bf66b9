//! The worker's responses and imgproxy's header rules, as pure functions: request ids,
//! `Content-Disposition`, `Cache-Control` (with `expires`), `Vary`, and the short text/plain
//! error answers.

use bytes::Bytes;
use http::header::{
    CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE, HeaderName, VARY,
};
use http::{HeaderValue, Response, StatusCode};

use crate::body::{Body, Keep, full, uncached};
use crate::contract::SANITIZED_SVG_HEADER;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Incoming request ids longer than this are replaced, whatever their characters.
const MAX_REQUEST_ID_LEN: usize = 128;
/// Length of generated ids (nanoid's default).
const REQUEST_ID_LEN: usize = 21;
/// The filename imgproxy uses when the source URL has none.
const FALLBACK_FILENAME: &str = "image";

/// The id to answer with: the incoming `X-Request-ID` when it is safe to echo (only
/// `[A-Za-z0-9_-]`, as imgproxy requires, and not absurdly long), else a fresh random one.
pub fn request_id(incoming: Option<&HeaderValue>) -> String {
    let safe = |id: &&str| {
        !id.is_empty()
            && id.len() <= MAX_REQUEST_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    match incoming.and_then(|v| v.to_str().ok()).filter(safe) {
        Some(id) => id.to_owned(),
        None => new_request_id(),
    }
}

fn new_request_id() -> String {
    const ALPHABET: &[u8; 64] = b"_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    (0..REQUEST_ID_LEN)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect()
}

/// imgproxy's `Content-Disposition`: the `filename` option if given, else the last path
/// segment of the source URL without its extension (`image` if there is none), then the
/// result's extension; `"` is escaped as `%22`.
pub fn content_disposition(
    filename: &str,
    source_url: &str,
    extension: &str,
    attachment: bool,
) -> String {
    let name = if filename.is_empty() {
        source_stem(source_url)
    } else {
        filename.to_owned()
    };
    let kind = if attachment { "attachment" } else { "inline" };
    let dot = if extension.is_empty() { "" } else { "." };
    format!(
        "{kind}; filename=\"{}{dot}{extension}\"",
        name.replace('"', "%22")
    )
}

/// The file name of a source URL without its extension, decoded.
fn source_stem(source_url: &str) -> String {
    let path = match url::Url::parse(source_url) {
        Ok(url) => url.path().to_owned(),
        Err(_) => return FALLBACK_FILENAME.to_owned(),
    };
    let last = path.rsplit('/').next().unwrap_or_default();
    let last = percent_encoding::percent_decode_str(last)
        .decode_utf8_lossy()
        .into_owned();
    if last.is_empty() {
        return FALLBACK_FILENAME.to_owned();
    }
    // Go's filepath.Ext: from the last dot of the last element ("a.tar.gz" → "a.tar").
    match last.rfind('.') {
        Some(dot) => last[..dot].to_owned(),
        None => last,
    }
}

/// imgproxy's `Cache-Control` for a result: `max-age=<ttl>, public`, where an `expires`
/// timestamp lowers the ttl to the seconds left; `no-cache` when nothing is left.
pub fn cache_control(ttl: u64, expires: Option<i64>, now: i64) -> String {
    let ttl = match expires {
        Some(at) => ttl.min(at.saturating_sub(now).max(0) as u64),
        None => ttl,
    };
    if ttl > 0 {
        format!("max-age={ttl}, public")
    } else {
        "no-cache".to_owned()
    }
}

/// What an image response needs besides its bytes.
pub struct ImageHeaders<'a> {
    pub content_type: &'a str,
    pub content_disposition: String,
    pub cache_control: String,
    /// `Vary: Accept` when the result depends on it (auto/enforce WebP/AVIF on).
    pub vary_accept: bool,
    /// The bytes came out of the engine rather than straight from the source (`raw`): an SVG
    /// among them was sanitised, and is marked so the proxy may store it.
    pub processed: bool,
}

/// A 200 with an image.
pub fn image(bytes: Bytes, headers: ImageHeaders<'_>) -> Response<Body> {
    let mut builder = Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_LENGTH, bytes.len())
        .header(CACHE_CONTROL, headers.cache_control)
        // Results are images, never documents: keep a crafted SVG from running scripts.
        .header("content-security-policy", "script-src 'none'");
    builder = match HeaderValue::from_str(headers.content_type) {
        Ok(v) => builder.header(CONTENT_TYPE, v),
        Err(_) => builder.header(CONTENT_TYPE, "application/octet-stream"),
    };
    // A filename from the URL may hold bytes a header can't carry; leave the header out then.
    if let Ok(v) = HeaderValue::from_str(&headers.content_disposition) {
        builder = builder.header(CONTENT_DISPOSITION, v);
    }
    if headers.vary_accept {
        builder = builder.header(VARY, "Accept");
    }
    if headers.processed && headers.content_type.starts_with("image/svg") {
        builder = builder.header(SANITIZED_SVG_HEADER, "1");
    }
    builder
        .body(full(bytes))
        .expect("an image response from valid parts is valid")
}

/// A short text/plain answer, uncached as imgproxy's errors are.
pub fn text(status: u16, message: &str) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    uncached(
        status,
        "text/plain",
        Keep::Revalidated,
        Bytes::copy_from_slice(message.as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_reused_only_when_safe() {
        let hv = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(request_id(Some(&hv("abc-DEF_123"))), "abc-DEF_123");
        for unsafe_id in ["", "a b", "a\"b", "<script>", &"x".repeat(129)] {
            let id = request_id(Some(&hv(unsafe_id)));
            assert_ne!(id, unsafe_id);
            assert_eq!(id.len(), 21);
        }
        let fresh = request_id(None);
        assert!(
            fresh
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        );
        assert_ne!(fresh, request_id(None));
    }

    #[test]
    fn content_disposition_follows_imgproxy() {
        let cd = content_disposition;
        assert_eq!(
            cd("", "https://x.io/a/puppy.png", "webp", false),
            "inline; filename=\"puppy.webp\""
        );
        assert_eq!(
            cd("", "https://x.io/a/archive.tar.gz?x=1", "jpg", true),
            "attachment; filename=\"archive.tar.jpg\""
        );
        assert_eq!(
            cd("", "https://x.io/", "png", false),
            "inline; filename=\"image.png\""
        );
        assert_eq!(
            cd("", "https://x.io/my%20cat", "png", false),
            "inline; filename=\"my cat.png\""
        );
        assert_eq!(
            cd("my \"best\" cat", "https://x.io/a.jpg", "png", false),
            "inline; filename=\"my %22best%22 cat.png\""
        );
        assert_eq!(
            cd("", "local:///dir/file.jpeg", "jpg", false),
            "inline; filename=\"file.jpg\""
        );
        assert_eq!(
            cd("", "s3://bucket/key", "", false),
            "inline; filename=\"key\""
        );
    }

    #[test]
    fn cache_control_is_capped_by_expires() {
        assert_eq!(
            cache_control(31_536_000, None, 0),
            "max-age=31536000, public"
        );
        assert_eq!(
            cache_control(3600, Some(1_000 + 60), 1_000),
            "max-age=60, public"
        );
        assert_eq!(
            cache_control(30, Some(1_000 + 60), 1_000),
            "max-age=30, public"
        );
        assert_eq!(cache_control(3600, Some(1_000), 1_000), "no-cache");
        assert_eq!(cache_control(0, None, 0), "no-cache");
        assert_eq!(cache_control(10, Some(i64::MIN), i64::MAX), "no-cache");
    }

    #[test]
    fn errors_are_plain_and_uncached() {
        let r = text(404, "Invalid URL");
        assert_eq!(r.status(), 404);
        assert_eq!(r.headers()[CONTENT_TYPE], "text/plain");
        assert_eq!(r.headers()[CACHE_CONTROL], "no-cache");
    }
}
