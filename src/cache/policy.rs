//! What may be stored: a pure decision over the request and the response head.
//!
//! An object in the bucket is served to every browser that computes its key, with no further
//! negotiation, so only a complete, final, shared representation may go there.

use http::header::{CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, VARY};
use http::{HeaderMap, Method, StatusCode};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotCacheable {
    /// Only GET results are images; HEAD has no body to store.
    Method,
    /// Anything but 200: errors, 206 partial content, 304 revalidations.
    Status,
    /// A `Range` request may be answered with a slice.
    Range,
    /// `Cache-Control: no-store`, `private`, `no-cache` or `max-age=0` from the upstream.
    CacheControl,
    /// `Vary` on a request header other than `Accept-Encoding` (imgproxy's `Vary: Accept` for
    /// WebP/AVIF negotiation): one key cannot hold every variant.
    Vary,
    /// A compressed body would need `Content-Encoding` on the object; images never do.
    Encoded,
    /// Without a type, the bucket would serve `binary/octet-stream`, which browsers refuse.
    NoContentType,
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
            NotCacheable::Encoded => "content_encoding",
            NotCacheable::NoContentType => "no_content_type",
            NotCacheable::Fallback => "fallback",
            NotCacheable::TooLarge => "too_large",
            NotCacheable::Incomplete => "incomplete",
        }
    }
}

/// Decides whether the response to a `method` request (with a `Range` header when
/// `ranged`) may be stored.
pub fn decide(
    method: &Method,
    ranged: bool,
    status: StatusCode,
    response: &HeaderMap,
    max_bytes: u64,
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
    if varies_beyond_encoding(response) {
        return no(N::Vary);
    }
    if response
        .get(CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        return no(N::Encoded);
    }
    if response.get(CONTENT_TYPE).is_none_or(|v| v.is_empty()) {
        return no(N::NoContentType);
    }
    if response.contains_key("fallback-image") {
        return no(N::Fallback);
    }
    let expected_len = match response.get(CONTENT_LENGTH) {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|s| s.parse::<u64>().ok()) {
            Some(len) if len > max_bytes => return no(N::TooLarge),
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

fn varies_beyond_encoding(headers: &HeaderMap) -> bool {
    header_tokens(headers, &VARY).any(|name| !name.eq_ignore_ascii_case("accept-encoding"))
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
            MAX,
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

        let mut chunked = image(&[]);
        chunked.remove(CONTENT_LENGTH);
        assert_eq!(
            verdict(Method::GET, &[], 200, chunked),
            Cacheable::Yes { expected_len: None }
        );
    }
}
