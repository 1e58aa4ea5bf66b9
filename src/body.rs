//! The one body type the proxy and the worker answer with, its constructors, and the short
//! uncached answers both give.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every response body: streamed from the upstream, or small and complete.
pub type Body = BoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// What a cache may do with one of our short answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// `no-store`: nothing may keep it (the proxy's own health, metrics and error answers,
    /// which change from one second to the next).
    Nothing,
    /// `no-cache`: kept only to ask again before reuse (imgproxy's error answers, which the
    /// worker follows).
    Revalidated,
}

impl Keep {
    fn cache_control(self) -> &'static str {
        match self {
            Keep::Nothing => "no-store",
            Keep::Revalidated => "no-cache",
        }
    }
}

/// A small complete answer no cache reuses unasked: health, metrics, errors.
pub fn uncached(
    status: StatusCode,
    content_type: &'static str,
    keep: Keep,
    body: impl Into<Bytes>,
) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, content_type)
        .header(CACHE_CONTROL, keep.cache_control())
        .body(full(body))
        .expect("a status, static headers and a body always make a response")
}
