//! What may be stored: a pure decision over the request and the response head.
//!
//! An object in the bucket is served to every browser that computes its key, with no further
//! negotiation, so only a complete, final, shared representation may go there.

use std::time::{Duration, SystemTime};

use http::header::{
    CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, DATE, EXPIRES,
    TRANSFER_ENCODING, VARY,
};
use http::{HeaderMap, Method, StatusCode};

use super::variant::Variant;
use crate::contract::SANITIZED_SVG_HEADER;

/// What the operator decided about storing; from the `MAX_CACHEABLE_BYTES`,
/// `MIN_STORE_MAX_AGE_SECS` and `STORE_SVG` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    pub max_bytes: u64,
    /// Results that may be kept for less than this are not stored: the bucket keeps objects
    /// for good.
    pub min_max_age: Duration,
    pub svg: SvgRule,
}

/// Which SVG results may be stored. An SVG is a document that can carry scripts; opened from
/// the bucket's own origin (without the worker's `Content-Security-Policy`) it would run them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SvgRule {
    /// Only results marked with [`SANITIZED_SVG_HEADER`] (the bundled worker's sanitiser).
    Sanitized,
    /// Every SVG: the upstream sanitises all of them (imgproxy with `IMGPROXY_SANITIZE_SVG`
    /// on and `raw` never used).
    Always,
    Never,
}

/// The verdict on one response, decided from its head before the body flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cacheable {
    /// Copy the body as it streams; `expected_len` is the `Content-Length`, when given, that
    /// the copy must reach to count as complete.
    Yes {
        expected_len: Option<u64>,
    },
    No(NotCacheable),
}

/// Why a response is not stored. The label goes into the log line and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotCacheable {
    /// Only GET results are images; HEAD has no body to store.
    Method,
    /// Anything but 200: errors, 206 partial content, 304 revalidations.
    Status,
    /// A `Range` request may be answered with a slice.
    Range,
    /// `Cache-Control: no-store`, `private`, `no-cache` or `max-age=0` from the upstream.
    CacheControl,
    /// `Vary` on a request header other than `Accept-Encoding`, or on `Accept` when the proxy
    /// does not know which formats the upstream negotiates: one key cannot hold every variant.
    Vary,
    /// A WebP or AVIF result for an `Accept` class that does not name the format (nor does
    /// the URL): some client of the class might not decode it.
    Variant,
    /// A compressed body would need `Content-Encoding` on the object; images never do.
    Encoded,
    /// Without a type, the bucket would serve `binary/octet-stream`, which browsers refuse.
    NoContentType,
    /// Not an image (`text/html` from a `raw` source, say): served from the bucket's origin
    /// it could be a page of the attacker's choosing.
    ContentType,
    /// An SVG that no sanitiser vouched for (see [`SvgRule`]).
    UnsanitizedSvg,
    /// `max-age` (or `Expires`) allows less than `MIN_STORE_MAX_AGE_SECS`: an `expires` URL or
    /// a short TTL, which a stored object would outlive.
    ShortLived,
    /// Neither `Content-Length` nor chunked framing: the body ends when the connection does,
    /// so a cut connection cannot be told from a complete body.
    Unframed,
    /// imgproxy marked the body as its fallback image.
    Fallback,
    /// `Content-Length` (or the bytes seen so far) above `MAX_CACHEABLE_BYTES`.
    TooLarge,
    /// The body ended early, failed, or the client went away before it was complete.
    Incomplete,
}

impl NotCacheable {
    pub fn as_str(self) -> &'static str {
        match self {
            NotCacheable::Method => "method",
            NotCacheable::Status => "status",
            NotCacheable::Range => "range",
            NotCacheable::CacheControl => "cache_control",
            NotCacheable::Vary => "vary",
            NotCacheable::Variant => "variant_format",
            NotCacheable::Encoded => "content_encoding",
            NotCacheable::NoContentType => "no_content_type",
            NotCacheable::ContentType => "content_type",
            NotCacheable::UnsanitizedSvg => "unsanitized_svg",
            NotCacheable::ShortLived => "short_lived",
            NotCacheable::Unframed => "unframed",
            NotCacheable::Fallback => "fallback",
            NotCacheable::TooLarge => "too_large",
            NotCacheable::Incomplete => "incomplete",
        }
    }
}

/// Decides whether the response to a `method` request (with a `Range` header when
/// `ranged`) of `variant` may be stored, at `now`. `response` are the headers as the upstream
/// sent them, framing (`Transfer-Encoding`) included.
pub fn decide(
    method: &Method,
    ranged: bool,
    status: StatusCode,
    response: &HeaderMap,
    rules: &Rules,
    variant: &Variant,
    now: SystemTime,
) -> Cacheable {
    use NotCacheable as N;
    let no = Cacheable::No;
    if method != Method::GET {
        return no(N::Method);
    }
    if status != StatusCode::OK {
        return no(N::Status);
    }
    if ranged {
        return no(N::Range);
    }
    if forbids_storing(response) {
        return no(N::CacheControl);
    }
    let keyed_by_accept = variant.class().is_some();
    let keyable = |name: &str| {
        name.eq_ignore_ascii_case("accept-encoding")
            || (keyed_by_accept && name.eq_ignore_ascii_case("accept"))
    };
    if !header_tokens(response, &VARY).all(keyable) {
        return no(N::Vary);
    }
    if response
        .get(CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        return no(N::Encoded);
    }
    let Some(content_type) = response.get(CONTENT_TYPE).filter(|v| !v.is_empty()) else {
        return no(N::NoContentType);
    };
    match media_type(content_type.as_bytes()) {
        Media::Svg => match rules.svg {
            SvgRule::Always => {}
            SvgRule::Sanitized if response.contains_key(SANITIZED_SVG_HEADER) => {}
            SvgRule::Sanitized | SvgRule::Never => return no(N::UnsanitizedSvg),
        },
        Media::Image => {}
        Media::Other => return no(N::ContentType),
    }
    if !variant.admits(content_type.as_bytes()) {
        return no(N::Variant);
    }
    if response.contains_key("fallback-image") {
        return no(N::Fallback);
    }
    if lifetime(response, now).is_some_and(|left| left < rules.min_max_age) {
        return no(N::ShortLived);
    }
    let chunked = header_tokens(response, &TRANSFER_ENCODING)
        .last()
        .is_some_and(|coding| coding.eq_ignore_ascii_case("chunked"));
    let expected_len = match response.get(CONTENT_LENGTH) {
        None if chunked => None,
        None => return no(N::Unframed),
        Some(v) => match v.to_str().ok().and_then(|s| s.parse::<u64>().ok()) {
            Some(len) if len > rules.max_bytes => return no(N::TooLarge),
            Some(len) => Some(len),
            // hyper refuses malformed lengths before we get here; stay safe regardless.
            None => return no(N::Incomplete),
        },
    };
    Cacheable::Yes { expected_len }
}

fn forbids_storing(headers: &HeaderMap) -> bool {
    header_tokens(headers, &CACHE_CONTROL).any(|directive| {
        let directive = directive.to_ascii_lowercase();
        matches!(directive.as_str(), "no-store" | "private" | "no-cache")
            || directive.starts_with("private=")
            || directive.starts_with("no-cache=")
            || directive == "max-age=0"
            || directive == "s-maxage=0"
    })
}

/// The kinds of `Content-Type` that matter for storing.
enum Media {
    Svg,
    Image,
    Other,
}

/// Classifies a `Content-Type` value by its media type (parameters ignored).
fn media_type(value: &[u8]) -> Media {
    let essence = value.split(|&b| b == b';').next().unwrap_or_default();
    let essence = essence.trim_ascii();
    let Some(slash) = essence.iter().position(|&b| b == b'/') else {
        return Media::Other;
    };
    let (kind, subtype) = (&essence[..slash], &essence[slash + 1..]);
    if !kind.eq_ignore_ascii_case(b"image") || subtype.is_empty() {
        return Media::Other;
    }
    // `image/svg+xml` is the registered type; `image/svg` turns up in the wild.
    let svg = subtype.len() >= 3 && subtype[..3].eq_ignore_ascii_case(b"svg");
    if svg { Media::Svg } else { Media::Image }
}

/// How long the response may be kept (RFC 9111 §4.2.1): `s-maxage` for a shared cache, else
/// `max-age`, else `Expires` less `Date` (or `now`). `None` when it says nothing; an
/// unreadable `Expires` means already expired.
fn lifetime(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(max_age) = max_age(|| header_tokens(headers, &CACHE_CONTROL)) {
        return Some(max_age);
    }
    let expires = headers.get(EXPIRES)?;
    let date = |v: &http::HeaderValue| httpdate::parse_http_date(v.to_str().ok()?).ok();
    let Some(expires) = date(expires) else {
        return Some(Duration::ZERO);
    };
    let base = headers.get(DATE).and_then(date).unwrap_or(now);
    Some(expires.duration_since(base).unwrap_or(Duration::ZERO))
}

/// `s-maxage`, else `max-age`, among the Cache-Control directives `directives` yields; an
/// unreadable value is 0.
pub(super) fn max_age<'a, I: Iterator<Item = &'a str>>(
    directives: impl Fn() -> I,
) -> Option<Duration> {
    let directive = |name: &str| {
        directives().find_map(|d| {
            let (key, value) = d.split_once('=')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().trim_matches('"').parse::<u64>().unwrap_or(0))
        })
    };
    directive("s-maxage")
        .or_else(|| directive("max-age"))
        .map(Duration::from_secs)
}

/// The comma-separated, trimmed, non-empty items of every value of `name`.
fn header_tokens<'a>(
    headers: &'a HeaderMap,
    name: &http::header::HeaderName,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("*").split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = 1000;
    const RULES: Rules = Rules {
        max_bytes: MAX,
        min_max_age: Duration::from_secs(3600),
        svg: SvgRule::Sanitized,
    };

    fn now() -> SystemTime {
        httpdate::parse_http_date("Tue, 01 Dec 2026 12:00:00 GMT").unwrap()
    }

    fn image(extra: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, "image/webp".parse().unwrap());
        h.insert(CONTENT_LENGTH, "10".parse().unwrap());
        for (k, v) in extra {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn verdict(
        method: Method,
        req: &[(&'static str, &'static str)],
        status: u16,
        resp: HeaderMap,
    ) -> Cacheable {
        let ranged = req.iter().any(|(k, _)| k.eq_ignore_ascii_case("range"));
        decide(
            &method,
            ranged,
            StatusCode::from_u16(status).unwrap(),
            &resp,
            &RULES,
            &Variant::Fixed,
            now(),
        )
    }

    #[test]
    fn a_plain_image_is_stored_with_its_length() {
        assert_eq!(
            verdict(
                Method::GET,
                &[],
                200,
                image(&[("cache-control", "max-age=31536000, public")])
            ),
            Cacheable::Yes {
                expected_len: Some(10)
            }
        );
    }

    #[test]
    fn every_never_store_case_says_why() {
        use NotCacheable as N;
        let cases = [
            (verdict(Method::HEAD, &[], 200, image(&[])), N::Method),
            (verdict(Method::POST, &[], 200, image(&[])), N::Method),
            (verdict(Method::GET, &[], 206, image(&[])), N::Status),
            (verdict(Method::GET, &[], 304, image(&[])), N::Status),
            (verdict(Method::GET, &[], 404, image(&[])), N::Status),
            (verdict(Method::GET, &[], 500, image(&[])), N::Status),
            (
                verdict(Method::GET, &[("range", "bytes=0-1")], 200, image(&[])),
                N::Range,
            ),
            (
                verdict(
                    Method::GET,
                    &[],
                    200,
                    image(&[("cache-control", "no-store")]),
                ),
                N::CacheControl,
            ),
            (
                verdict(
                    Method::GET,
                    &[],
                    200,
                    image(&[("cache-control", "public, Private")]),
                ),
                N::CacheControl,
            ),
            (
                verdict(
                    Method::GET,
                    &[],
                    200,
                    image(&[("cache-control", "max-age=0")]),
                ),
                N::CacheControl,
            ),
            (
                verdict(Method::GET, &[], 200, image(&[("vary", "Accept")])),
                N::Vary,
            ),
            (
                verdict(
                    Method::GET,
                    &[],
                    200,
                    image(&[("vary", "accept-encoding"), ("vary", "Accept")]),
                ),
                N::Vary,
            ),
            (
                verdict(Method::GET, &[], 200, image(&[("vary", "*")])),
                N::Vary,
            ),
            (
                verdict(
                    Method::GET,
                    &[],
                    200,
                    image(&[("content-encoding", "gzip")]),
                ),
                N::Encoded,
            ),
            (
                verdict(Method::GET, &[], 200, image(&[("fallback-image", "1")])),
                N::Fallback,
            ),
        ];
        for (i, (got, want)) in cases.into_iter().enumerate() {
            assert_eq!(got, Cacheable::No(want), "case {i}");
        }
    }

    #[test]
    fn vary_on_accept_encoding_alone_is_safe() {
        let got = verdict(Method::GET, &[], 200, image(&[("vary", "Accept-Encoding")]));
        assert!(matches!(got, Cacheable::Yes { .. }));
    }

    #[test]
    fn missing_type_and_oversize_are_refused() {
        let mut untyped = image(&[]);
        untyped.remove(CONTENT_TYPE);
        assert_eq!(
            verdict(Method::GET, &[], 200, untyped),
            Cacheable::No(NotCacheable::NoContentType)
        );

        let mut big = image(&[]);
        big.insert(CONTENT_LENGTH, (MAX + 1).to_string().parse().unwrap());
        assert_eq!(
            verdict(Method::GET, &[], 200, big),
            Cacheable::No(NotCacheable::TooLarge)
        );

        let mut chunked = image(&[("transfer-encoding", "chunked")]);
        chunked.remove(CONTENT_LENGTH);
        assert_eq!(
            verdict(Method::GET, &[], 200, chunked),
            Cacheable::Yes { expected_len: None }
        );
    }

    #[test]
    fn a_body_without_framing_is_refused() {
        let mut unframed = image(&[]);
        unframed.remove(CONTENT_LENGTH);
        assert_eq!(
            verdict(Method::GET, &[], 200, unframed),
            Cacheable::No(NotCacheable::Unframed)
        );
    }

    #[test]
    fn only_images_are_stored_and_svg_only_when_vouched_for() {
        let typed = |t: &'static str, extra: &[(&'static str, &'static str)]| {
            let mut h = image(extra);
            h.insert(CONTENT_TYPE, t.parse().unwrap());
            verdict(Method::GET, &[], 200, h)
        };
        let no = |r| Cacheable::No(r);
        assert_eq!(typed("text/html", &[]), no(NotCacheable::ContentType));
        assert_eq!(typed("image", &[]), no(NotCacheable::ContentType));
        assert_eq!(typed("image/", &[]), no(NotCacheable::ContentType));
        assert_eq!(typed("application/xml", &[]), no(NotCacheable::ContentType));
        assert_eq!(typed("imagex/png", &[]), no(NotCacheable::ContentType));
        assert!(matches!(
            typed("IMAGE/PNG; q=1", &[]),
            Cacheable::Yes { .. }
        ));
        assert_eq!(
            typed("image/svg+xml", &[]),
            no(NotCacheable::UnsanitizedSvg)
        );
        assert_eq!(
            typed("Image/SVG+XML; charset=utf-8", &[]),
            no(NotCacheable::UnsanitizedSvg)
        );
        let marked = [(SANITIZED_SVG_HEADER, "1")];
        assert!(matches!(
            typed("image/svg+xml", &marked),
            Cacheable::Yes { .. }
        ));
    }

    #[test]
    fn short_lived_results_are_refused() {
        let cc = |v: &'static str| verdict(Method::GET, &[], 200, image(&[("cache-control", v)]));
        let short = Cacheable::No(NotCacheable::ShortLived);
        assert_eq!(cc("max-age=3599, public"), short);
        assert!(matches!(cc("max-age=3600, public"), Cacheable::Yes { .. }));
        // A shared cache goes by s-maxage first.
        assert_eq!(cc("max-age=31536000, s-maxage=60"), short);
        assert!(matches!(
            cc("max-age=60, s-maxage=7200"),
            Cacheable::Yes { .. }
        ));
        assert_eq!(cc("max-age=junk"), short);

        let expires = |e: &'static str| verdict(Method::GET, &[], 200, image(&[("expires", e)]));
        assert_eq!(expires("Tue, 01 Dec 2026 12:30:00 GMT"), short);
        assert_eq!(expires("yesterday"), short);
        assert!(matches!(
            expires("Wed, 02 Dec 2026 12:00:00 GMT"),
            Cacheable::Yes { .. }
        ));
        // Nothing said about lifetime: stored.
        assert!(matches!(cc("public"), Cacheable::Yes { .. }));
    }

    /// With the key carrying the `Accept` class, `Vary: Accept` is no obstacle; any other
    /// `Vary`, or a negotiated format the class does not name, still is.
    #[test]
    fn a_negotiated_variant_is_stored_under_its_class() {
        use crate::cache::variant::{Mode, Negotiation};
        let negotiation = Negotiation {
            webp: Mode::Auto,
            avif: Mode::Auto,
            ..Negotiation::default()
        };
        let accept = |a: &'static str| {
            negotiation.variant("/s/plain/a.jpg", Some(&http::HeaderValue::from_static(a)))
        };
        let decide_for = |variant: &Variant, resp: &HeaderMap| {
            decide(
                &Method::GET,
                false,
                StatusCode::OK,
                resp,
                &RULES,
                variant,
                now(),
            )
        };
        let webp = accept("image/webp");
        let none = accept("*/*");
        assert_eq!(
            decide_for(&webp, &image(&[("vary", "Accept")])),
            Cacheable::Yes {
                expected_len: Some(10)
            }
        );
        assert_eq!(
            decide_for(&webp, &image(&[("vary", "Accept, Cookie")])),
            Cacheable::No(NotCacheable::Vary)
        );
        assert_eq!(
            decide_for(&none, &image(&[("vary", "Accept")])),
            Cacheable::No(NotCacheable::Variant)
        );
        let mut jpeg = image(&[("vary", "Accept")]);
        jpeg.insert(CONTENT_TYPE, "image/jpeg".parse().unwrap());
        assert!(matches!(decide_for(&none, &jpeg), Cacheable::Yes { .. }));
    }
}
