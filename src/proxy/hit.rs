//! Answering a request from a stored result, as an HTTP cache would: validators, `HEAD`,
//! one byte range, `Age` (RFC 9110 §13–14, RFC 9111 §5.1).
//!
//! [`plan`] is pure: it takes the request's headers, the stored [`Meta`], the body's length and
//! `now`, and decides the status, the headers and which bytes to send. [`respond`] then builds
//! the response from that plan and the body, in memory or still streaming.
//!
//! **`X-Cache`** says where an answer came from:
//!
//! | value | meaning |
//! |---|---|
//! | `HIT memory`, `HIT disk`, `HIT bucket` | a fresh stored result, from that tier |
//! | `COALESCED` | a follower of a render in flight: the bytes of another request's render |
//! | `STALE memory`, `STALE disk`, `STALE bucket` | a stale stored result, served while it is rendered again or because the upstream failed |
//! | `MISS` | from the upstream; the result may be stored |
//! | `BYPASS` | from the upstream, no lookup made (not a `GET` or `HEAD`) |
//!
//! **Which answer** (in the order RFC 9110 §13.2.2 evaluates the conditions):
//! 1. `If-None-Match` naming the stored `ETag` (weak comparison, a list, or `*`) → `304` with
//!    `ETag`, `Cache-Control`, `Age` and `X-Cache`, and no body headers. It wins over `Range`.
//! 2. `Range` with `If-Range` that isn't our strong `ETag` (a weak tag, another tag, a date:
//!    we send no `Last-Modified`, so no date can match) → `200` with the whole body.
//! 3. `Range: bytes=a-b`, `a-` or `-n`, one range only, `b` clamped to the last byte →
//!    `206` with `Content-Range: bytes a-b/len`. A range that starts at or past the end, or
//!    `-0`, → `416` with `Content-Range: bytes */len` and no body.
//! 4. Anything else → `200` with the whole body. That includes several ranges, another unit
//!    and a malformed header: RFC 9110 §14.2 lets a server ignore `Range`, and browsers ask
//!    an image for one range at most, so a multipart answer would be code nobody runs.
//!
//! A `416` carries `Content-Range`, `Accept-Ranges`, `Content-Length: 0` and `X-Cache` only:
//! with the object's `Cache-Control` a shared cache could keep the `416` in the object's place.
//!
//! `HEAD` gets exactly the headers `GET` would (RFC 9110 §9.3.2), a `206`'s included, as nginx
//! does, and no body. Only `GET` and `HEAD` are looked up, so any other method is answered as
//! `GET`.
//!
//! An empty object has no byte to point at: `a-` and `a-b` start past its end and get `416`;
//! `-n` (n > 0) is satisfiable by RFC 9110 §14.1.1 yet a `206` can't describe zero bytes, so it
//! gets the whole (empty) body as `200`.
//!
//! A body is held to the length the plan was made for: one that ends short, runs past it or
//! fails mid-stream ends the response body with an error, so hyper aborts the connection and
//! the client never takes a cut body for a complete one.

use std::fmt;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::header::{
    ACCEPT_RANGES, AGE, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE,
    CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, IF_RANGE, RANGE,
    X_CONTENT_TYPE_OPTIONS,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;

use crate::body::{self, BoxError};
pub use crate::cache::Tier;
use crate::cache::object::{Chunks, Meta, unix_secs};

/// The header that says where an answer came from (see the module doc for its values).
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// What a stored object whose `Content-Type` can't be sent is sent as (RFC 9110 §8.3).
const UNKNOWN_TYPE: HeaderValue = HeaderValue::from_static("application/octet-stream");

/// Where the answer's bytes come from, as `X-Cache` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// A fresh stored result.
    Hit(Tier),
    /// A follower of a render in flight.
    Coalesced,
    /// A stale stored result (stale-while-revalidate, stale-if-error).
    Stale(Tier),
    /// From the upstream, for a request that looked the key up (and may store the result).
    Miss,
    /// From the upstream, with no lookup: not a `GET` or `HEAD`.
    Bypass,
}

impl Served {
    /// The `X-Cache` value.
    pub fn x_cache(self) -> &'static str {
        match self {
            Served::Hit(Tier::Memory) => "HIT memory",
            Served::Hit(Tier::Disk) => "HIT disk",
            Served::Hit(Tier::Bucket) => "HIT bucket",
            Served::Coalesced => "COALESCED",
            Served::Stale(Tier::Memory) => "STALE memory",
            Served::Stale(Tier::Disk) => "STALE disk",
            Served::Stale(Tier::Bucket) => "STALE bucket",
            Served::Miss => "MISS",
            Served::Bypass => "BYPASS",
        }
    }
}

impl fmt::Display for Served {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.x_cache())
    }
}

/// Which bytes of the stored body an answer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// `304`, `416`, and every `HEAD`.
    None,
    Whole,
    /// Both ends inside the body.
    Range {
        start: u64,
        end_inclusive: u64,
    },
}

/// Why a request with a `Range` header gets the whole body, for the debug log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeIgnored {
    /// More than one range: a multipart answer isn't worth building.
    Several,
    /// A unit other than `bytes`.
    OtherUnit,
    /// Not `bytes=` and one range-spec, or `Range` given twice.
    Malformed,
    /// `If-Range` doesn't name the stored body (RFC 9110 §13.1.5).
    IfRange,
    /// `-n` on an empty body: all of it is nothing, which a `206` can't say.
    Empty,
}

impl RangeIgnored {
    pub fn as_str(self) -> &'static str {
        match self {
            RangeIgnored::Several => "several ranges",
            RangeIgnored::OtherUnit => "not a byte range",
            RangeIgnored::Malformed => "malformed",
            RangeIgnored::IfRange => "if-range does not match",
            RangeIgnored::Empty => "empty body",
        }
    }
}

/// How to answer one request from a stored result.
#[derive(Debug, Clone)]
pub struct Plan {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub content: Content,
    /// Set when the request asked for a range and gets the whole body instead.
    pub ignored: Option<RangeIgnored>,
    /// The stored body's length, which [`respond`] holds the body to.
    len: u64,
}

impl Plan {
    /// The stored body's length the plan was made for.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Decides how to answer a `method` request with `request`'s headers from the stored result
/// described by `meta`, whose body is `len` bytes long (see the module doc for the rules).
pub fn plan(
    method: &Method,
    request: &HeaderMap,
    meta: &Meta,
    len: u64,
    now: SystemTime,
    served: Served,
) -> Plan {
    let etag = meta.etag(len);
    let x_cache = HeaderValue::from_static(served.x_cache());
    let mut headers = HeaderMap::new();
    headers.insert(
        ETAG,
        HeaderValue::from_str(&etag).expect("an ETag of hex digits and quotes is a header value"),
    );
    if let Some(cache_control) = meta
        .cache_control
        .as_deref()
        .and_then(|value| HeaderValue::from_str(value).ok())
    {
        headers.insert(CACHE_CONTROL, cache_control);
    }
    if let Some(disposition) = meta
        .content_disposition
        .as_deref()
        .and_then(|value| HeaderValue::from_str(value).ok())
    {
        headers.insert(CONTENT_DISPOSITION, disposition);
    }
    // RFC 9111 §5.1: a clock that went back gives 0, not a wrapped number.
    let age = unix_secs(now).saturating_sub(meta.stored_at);
    headers.insert(AGE, HeaderValue::from(age));
    headers.insert(X_CACHE, x_cache.clone());

    if none_match(request, &etag) {
        return Plan {
            status: StatusCode::NOT_MODIFIED,
            headers,
            content: Content::None,
            ignored: None,
            len,
        };
    }
    let (status, content, ignored) = match asked_range(request, &etag, len) {
        Asked::Whole(ignored) => (StatusCode::OK, Content::Whole, ignored),
        Asked::Range(start, end_inclusive) => {
            let range = content_range(format!("bytes {start}-{end_inclusive}/{len}"));
            headers.insert(CONTENT_RANGE, range);
            let content = Content::Range {
                start,
                end_inclusive,
            };
            (StatusCode::PARTIAL_CONTENT, content, None)
        }
        Asked::Unsatisfiable => return unsatisfiable(len, x_cache),
    };
    let content_type = HeaderValue::from_str(&meta.content_type)
        .ok()
        .filter(|value| !value.is_empty())
        .unwrap_or(UNKNOWN_TYPE);
    headers.insert(CONTENT_TYPE, content_type);
    // A stored result is an image, never a document, whoever put it in the bucket: no script
    // in it runs, and no browser guesses another type for it.
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("script-src 'none'"),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(sent_len(content, len)));
    let content = if method == Method::HEAD {
        Content::None
    } else {
        content
    };
    Plan {
        status,
        headers,
        content,
        ignored,
        len,
    }
}

/// The `416` for a range past the end of a `len`-byte body. It says nothing about the body but
/// its length and must not be kept in the body's place, so it carries no validator, age or
/// cache-control.
fn unsatisfiable(len: u64, x_cache: HeaderValue) -> Plan {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_RANGE, content_range(format!("bytes */{len}")));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(0u64));
    headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(X_CACHE, x_cache);
    Plan {
        status: StatusCode::RANGE_NOT_SATISFIABLE,
        headers,
        content: Content::None,
        ignored: None,
        len,
    }
}

fn content_range(text: String) -> HeaderValue {
    HeaderValue::try_from(text).expect("`bytes`, digits, `-`, `/` and `*` make a header value")
}

/// How many bytes `content` is of a `len`-byte body.
fn sent_len(content: Content, len: u64) -> u64 {
    match content {
        Content::None => 0,
        Content::Whole => len,
        Content::Range {
            start,
            end_inclusive,
        } => end_inclusive - start + 1,
    }
}

/// Whether `If-None-Match` names the body tagged `etag`: weak comparison (RFC 9110 §13.1.2).
/// A malformed field names nothing, so it gets the full answer, which is always correct.
fn none_match(request: &HeaderMap, etag: &str) -> bool {
    let mut any = false;
    for value in request.get_all(IF_NONE_MATCH) {
        let value = value.as_bytes();
        if trim_ows(value) == b"*" {
            return true;
        }
        let Some(matched) = any_tag(value, |tag| tag.opaque == etag.as_bytes()) else {
            return false;
        };
        any |= matched;
    }
    any
}

/// One entity-tag (RFC 9110 §8.8.3), its opaque part with the quotes.
struct Tag<'a> {
    weak: bool,
    opaque: &'a [u8],
}

/// Whether any tag of the list `value` satisfies `test`; `None` when the list is malformed.
fn any_tag(mut value: &[u8], test: impl Fn(&Tag) -> bool) -> Option<bool> {
    let mut matched = false;
    loop {
        // Empty list elements are allowed (RFC 9110 §5.6.1).
        while let [b' ' | b'\t' | b',', rest @ ..] = value {
            value = rest;
        }
        if value.is_empty() {
            return Some(matched);
        }
        let (tag, rest) = entity_tag(value)?;
        matched |= test(&tag);
        value = trim_ows(rest);
        match value {
            [] => return Some(matched),
            [b',', ..] => {}
            _ => return None,
        }
    }
}

/// The entity-tag `value` starts with, and what follows it.
fn entity_tag(value: &[u8]) -> Option<(Tag<'_>, &[u8])> {
    let (weak, quoted) = match value.strip_prefix(b"W/") {
        Some(quoted) => (true, quoted),
        None => (false, value),
    };
    let [b'"', inner @ ..] = quoted else {
        return None;
    };
    let close = inner.iter().position(|&byte| byte == b'"')?;
    // etagc: %x21 / %x23-7E / obs-text.
    if !inner[..close]
        .iter()
        .all(|&byte| byte == 0x21 || byte >= 0x23 && byte != 0x7f)
    {
        return None;
    }
    let tag = Tag {
        weak,
        opaque: &quoted[..close + 2],
    };
    Some((tag, &inner[close + 1..]))
}

fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// What the request's `Range` asks of a `len`-byte body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    /// No range, or one we don't honour (and why).
    Whole(Option<RangeIgnored>),
    Range(u64, u64),
    Unsatisfiable,
}

/// One byte-range-spec as written (RFC 9110 §14.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `a-b`
    Span(u64, u64),
    /// `a-`
    From(u64),
    /// `-n`
    Suffix(u64),
}

fn asked_range(request: &HeaderMap, etag: &str, len: u64) -> Asked {
    let mut ranges = request.get_all(RANGE).iter();
    let Some(range) = ranges.next() else {
        return Asked::Whole(None);
    };
    if ranges.next().is_some() {
        return Asked::Whole(Some(RangeIgnored::Malformed));
    }
    if request.contains_key(IF_RANGE) && !if_range_matches(request, etag) {
        return Asked::Whole(Some(RangeIgnored::IfRange));
    }
    let spec = match parse_range(range.as_bytes()) {
        Ok(spec) => spec,
        Err(ignored) => return Asked::Whole(Some(ignored)),
    };
    let last = len.checked_sub(1);
    match (spec, last) {
        (Spec::Suffix(0), _) => Asked::Unsatisfiable,
        (Spec::Suffix(_), None) => Asked::Whole(Some(RangeIgnored::Empty)),
        (Spec::Suffix(n), Some(last)) => Asked::Range(len - n.min(len), last),
        (Spec::From(start) | Spec::Span(start, _), Some(last)) if start <= last => {
            let end = match spec {
                Spec::Span(_, end) => end.min(last),
                _ => last,
            };
            Asked::Range(start, end)
        }
        (Spec::From(_) | Spec::Span(..), _) => Asked::Unsatisfiable,
    }
}

/// `If-Range` holds exactly one strong entity-tag equal to `etag` (strong comparison, RFC 9110
/// §13.1.5). A date never matches: we send no `Last-Modified` to compare it with.
fn if_range_matches(request: &HeaderMap, etag: &str) -> bool {
    let mut values = request.get_all(IF_RANGE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    match entity_tag(trim_ows(value.as_bytes())) {
        Some((tag, rest)) => rest.is_empty() && !tag.weak && tag.opaque == etag.as_bytes(),
        None => false,
    }
}

/// `bytes=` and a single range-spec; the unit is case-insensitive (RFC 9110 §14.1).
fn parse_range(value: &[u8]) -> Result<Spec, RangeIgnored> {
    let equals = value
        .iter()
        .position(|&byte| byte == b'=')
        .ok_or(RangeIgnored::Malformed)?;
    let (unit, set) = (&value[..equals], &value[equals + 1..]);
    if !unit.eq_ignore_ascii_case(b"bytes") {
        return Err(if unit.is_empty() {
            RangeIgnored::Malformed
        } else {
            RangeIgnored::OtherUnit
        });
    }
    let mut specs = set
        .split(|&byte| byte == b',')
        .map(trim_ows)
        .filter(|spec| !spec.is_empty());
    let spec = specs.next().ok_or(RangeIgnored::Malformed)?;
    if specs.next().is_some() {
        return Err(RangeIgnored::Several);
    }
    let dash = spec
        .iter()
        .position(|&byte| byte == b'-')
        .ok_or(RangeIgnored::Malformed)?;
    let (first, last) = (&spec[..dash], &spec[dash + 1..]);
    let number = |digits: &[u8]| number(digits).ok_or(RangeIgnored::Malformed);
    match (first.is_empty(), last.is_empty()) {
        (true, true) => Err(RangeIgnored::Malformed),
        (true, false) => Ok(Spec::Suffix(number(last)?)),
        (false, true) => Ok(Spec::From(number(first)?)),
        (false, false) => {
            let (first, last) = (number(first)?, number(last)?);
            // RFC 9110 §14.1.1: last-pos before first-pos makes the spec invalid.
            if last < first {
                return Err(RangeIgnored::Malformed);
            }
            Ok(Spec::Span(first, last))
        }
    }
}

/// 1*DIGIT; a number too large for `u64` is `u64::MAX`, which is past any body's end (or
/// covers all of it), exactly what the written number means.
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |n, &digit| {
        n.saturating_mul(10).saturating_add(u64::from(digit - b'0'))
    }))
}

/// Where a hit's body comes from.
pub enum Source {
    /// A complete body in memory (the memory tier): ranges are zero-copy slices of it.
    Memory(Bytes),
    /// A body still arriving: a store read, or a render in flight. The range is cut from it as
    /// it streams.
    Stream(Chunks),
}

/// Builds the response `plan` describes, its body from `source`.
///
/// The body is held to the plan's length: a body that ends short of it, or runs past it, or
/// whose stream fails, ends with an error, so hyper aborts the response rather than present
/// a cut body as complete.
pub fn respond(plan: Plan, source: Source) -> Response<body::Body> {
    let range = match plan.content {
        Content::None => None,
        Content::Whole => Some((0, plan.len)),
        Content::Range {
            start,
            end_inclusive,
        } => Some((start, end_inclusive + 1)),
    };
    let body = match (range, source) {
        (None, _) => body::empty(),
        (Some((start, stop)), Source::Memory(bytes)) if bytes.len() as u64 == plan.len => {
            // Both ends are inside `bytes`: the plan made them from its length.
            body::full(bytes.slice(start as usize..stop as usize))
        }
        (Some((start, stop)), Source::Memory(bytes)) => {
            // Not the body the plan was made for; the cut reports how it differs.
            let once = futures_util::stream::iter([Ok::<_, BoxError>(bytes)]);
            Cut::new(once, start, stop, plan.len).boxed()
        }
        (Some((start, stop)), Source::Stream(chunks)) => {
            Cut::new(chunks, start, stop, plan.len).boxed()
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = plan.status;
    *response.headers_mut() = plan.headers;
    response
}

/// How a streamed body failed to be the body its plan was made for.
#[derive(Debug, thiserror::Error)]
pub enum CutError {
    #[error("the stored body ended after {got} of its {len} bytes")]
    Short { got: u64, len: u64 },
    #[error("the stored body runs past its {len} bytes")]
    Long { len: u64 },
}

/// The bytes `start..stop` of a `len`-byte body that arrives as `inner`, as a response body.
///
/// Bytes before `start` are skipped. After `stop` the body ends and `inner` is dropped, unless
/// `stop` is the body's end: then it waits for `inner`'s own end, so a stream that runs past
/// its length is an error rather than a silent cut.
struct Cut<S> {
    /// `None` once the wanted bytes are out or the stream failed. In a `Mutex` only so the
    /// body is `Sync`, as [`body::Body`] must be, for streams that aren't (like [`Chunks`]):
    /// it is never locked, `get_mut` reaches through it.
    inner: Option<Mutex<S>>,
    /// How far into the body `inner` has come.
    offset: u64,
    start: u64,
    stop: u64,
    len: u64,
}

impl<S> Cut<S> {
    fn new(inner: S, start: u64, stop: u64, len: u64) -> Cut<S> {
        Cut {
            inner: Some(Mutex::new(inner)),
            offset: 0,
            start,
            stop,
            len,
        }
    }
}

impl<S, E> http_body::Body for Cut<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(inner) = this.inner.as_mut() else {
                return Poll::Ready(None);
            };
            // Nothing ever locks it, so nothing can have poisoned it.
            let inner = inner.get_mut().unwrap_or_else(PoisonError::into_inner);
            let chunk = match ready!(inner.poll_next_unpin(cx)) {
                Some(Ok(chunk)) => chunk,
                Some(Err(error)) => {
                    this.inner = None;
                    return Poll::Ready(Some(Err(error.into())));
                }
                None => {
                    this.inner = None;
                    if this.offset < this.stop {
                        let short = CutError::Short {
                            got: this.offset,
                            len: this.len,
                        };
                        return Poll::Ready(Some(Err(short.into())));
                    }
                    return Poll::Ready(None);
                }
            };
            let chunk_start = this.offset;
            this.offset = chunk_start.saturating_add(chunk.len() as u64);
            if this.offset > this.len {
                this.inner = None;
                return Poll::Ready(Some(Err(CutError::Long { len: this.len }.into())));
            }
            if this.offset >= this.stop && this.stop < this.len {
                this.inner = None;
            }
            let from = this.start.max(chunk_start);
            let to = this.stop.min(this.offset);
            if from < to {
                // Both ends lie inside `chunk`, which spans `chunk_start..offset`.
                let piece = chunk.slice((from - chunk_start) as usize..(to - chunk_start) as usize);
                return Poll::Ready(Some(Ok(Frame::data(piece))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // hyper checks this against `Content-Length`, which is the whole cut.
        let sent = self.offset.clamp(self.start, self.stop) - self.start;
        SizeHint::with_exact(self.stop - self.start - sent)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::Waker;
    use std::time::{Duration, UNIX_EPOCH};

    use http_body::Body as _;
    use proptest::prelude::*;

    use super::*;
    use crate::cache::store::StoreError;

    const STORED: u64 = 1_700_000_000;
    const BODY: &[u8] = b"0123456789";

    fn meta() -> Meta {
        Meta {
            content_type: "image/webp".into(),
            cache_control: Some("public, max-age=31536000".into()),
            stored_at: STORED,
            content_disposition: None,
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// Request headers; a name given twice is two fields.
    fn request(fields: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            headers.append(name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn plan_for(method: Method, fields: &[(&str, &str)], len: u64) -> Plan {
        let served = Served::Hit(Tier::Memory);
        plan(
            &method,
            &request(fields),
            &meta(),
            len,
            at(STORED + 42),
            served,
        )
    }

    fn get(fields: &[(&str, &str)]) -> Plan {
        plan_for(Method::GET, fields, BODY.len() as u64)
    }

    fn header<'a>(plan: &'a Plan, name: &str) -> Option<&'a str> {
        plan.headers.get(name).map(|value| value.to_str().unwrap())
    }

    fn etag() -> String {
        meta().etag(BODY.len() as u64)
    }

    fn names(headers: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<_> = headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Polls `body` to its end, with a waker that does nothing: every stream here is ready or
    /// wakes itself at once, so a body still pending after many polls is stuck.
    fn drain<B>(mut body: B) -> (Vec<u8>, Option<BoxError>)
    where
        B: http_body::Body<Data = Bytes, Error = BoxError> + Unpin,
    {
        let mut cx = Context::from_waker(Waker::noop());
        let (mut data, mut pending) = (Vec::new(), 0);
        loop {
            match Pin::new(&mut body).poll_frame(&mut cx) {
                Poll::Pending => {
                    pending += 1;
                    assert!(pending < 10_000, "the body never ends");
                }
                Poll::Ready(None) => return (data, None),
                Poll::Ready(Some(Err(error))) => return (data, Some(error)),
                Poll::Ready(Some(Ok(frame))) => {
                    pending = 0;
                    data.extend_from_slice(&frame.into_data().unwrap());
                }
            }
        }
    }

    /// A store read that makes its reader wait before every item, and says when it is dropped.
    struct Stutter {
        items: VecDeque<Result<Bytes, StoreError>>,
        ready: bool,
        dropped: Arc<AtomicBool>,
    }

    impl Stutter {
        fn chunks<T: Into<Bytes>>(items: Vec<Result<T, &str>>) -> (Chunks, Arc<AtomicBool>) {
            let dropped = Arc::new(AtomicBool::new(false));
            let items = items
                .into_iter()
                .map(|item| item.map(Into::into).map_err(StoreError::transient))
                .collect();
            let stutter = Stutter {
                items,
                ready: false,
                dropped: dropped.clone(),
            };
            (Box::pin(stutter), dropped)
        }
    }

    impl Stream for Stutter {
        type Item = Result<Bytes, StoreError>;

        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            if !self.ready {
                self.ready = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.ready = false;
            Poll::Ready(self.items.pop_front())
        }
    }

    impl Drop for Stutter {
        fn drop(&mut self) {
            self.dropped.store(true, Ordering::SeqCst);
        }
    }

    // === plan ===

    /// A plain hit sends the stored headers, its length, a validator, its age and the two
    /// that keep a stored result an image, and nothing else (`Date` is hyper's).
    #[test]
    fn a_hit_carries_the_stored_headers() {
        let plan = get(&[]);
        assert_eq!(plan.status, StatusCode::OK);
        assert_eq!(plan.content, Content::Whole);
        assert_eq!(plan.ignored, None);
        assert_eq!(header(&plan, "content-type"), Some("image/webp"));
        assert_eq!(
            header(&plan, "cache-control"),
            Some("public, max-age=31536000")
        );
        assert_eq!(header(&plan, "content-length"), Some("10"));
        assert_eq!(header(&plan, "etag"), Some(etag().as_str()));
        assert_eq!(header(&plan, "accept-ranges"), Some("bytes"));
        assert_eq!(header(&plan, "age"), Some("42"));
        assert_eq!(header(&plan, "x-cache"), Some("HIT memory"));
        assert_eq!(
            header(&plan, "content-security-policy"),
            Some("script-src 'none'")
        );
        assert_eq!(header(&plan, "x-content-type-options"), Some("nosniff"));
        assert_eq!(plan.headers.len(), 9, "{:?}", plan.headers);
    }

    /// Each way of serving has its own `X-Cache` value, the tier named.
    #[test]
    fn x_cache_names_what_served_it() {
        let cases = [
            (Served::Hit(Tier::Memory), "HIT memory"),
            (Served::Hit(Tier::Disk), "HIT disk"),
            (Served::Hit(Tier::Bucket), "HIT bucket"),
            (Served::Coalesced, "COALESCED"),
            (Served::Stale(Tier::Memory), "STALE memory"),
            (Served::Stale(Tier::Disk), "STALE disk"),
            (Served::Stale(Tier::Bucket), "STALE bucket"),
        ];
        for (served, expected) in cases {
            let plan = plan(&Method::GET, &request(&[]), &meta(), 10, at(STORED), served);
            assert_eq!(header(&plan, "x-cache"), Some(expected));
            assert_eq!(served.to_string(), expected);
        }
    }

    /// `Age` counts whole seconds since the render, and a clock that went back gives 0.
    #[test]
    fn age_counts_whole_seconds_from_the_render() {
        let cases = [
            (at(STORED) + Duration::from_millis(42_900), "42"),
            (at(STORED), "0"),
            (at(STORED - 100), "0"),
            (UNIX_EPOCH, "0"),
            (at(STORED + 86_400 * 400), "34560000"),
        ];
        for (now, expected) in cases {
            let plan = plan(
                &Method::GET,
                &request(&[]),
                &meta(),
                10,
                now,
                Served::Coalesced,
            );
            assert_eq!(header(&plan, "age"), Some(expected), "now {now:?}");
        }
    }

    /// `If-None-Match` matches by weak comparison, in a list, across fields, or as `*`; a
    /// malformed field matches nothing.
    #[test]
    fn if_none_match_answers_304_when_it_names_the_body() {
        let tag = etag();
        let weak = format!("W/{tag}");
        let other_len = meta().etag(11);
        let cases: Vec<(Vec<String>, bool)> = vec![
            (vec![tag.clone()], true),
            (vec![weak.clone()], true),
            (vec!["*".into()], true),
            (vec![" * ".into()], true),
            (vec![format!("\"a\", {tag}")], true),
            (vec![format!("W/\"a\",{weak}")], true),
            (vec![format!(" ,, {tag} ,")], true),
            (vec!["\"a\"".into(), tag.clone()], true),
            (vec!["\"a\"".into()], false),
            (vec![other_len], false),
            (vec![tag.trim_matches('"').into()], false),
            (vec![tag[..tag.len() - 1].into()], false),
            (vec![format!("{tag} junk")], false),
            (vec![format!("{tag}, junk")], false),
            (vec![format!("w/{tag}")], false),
            (vec!["\"a b\"".into()], false),
            (vec!["".into()], false),
        ];
        for (values, matches) in cases {
            let fields: Vec<_> = values
                .iter()
                .map(|value| ("if-none-match", value.as_str()))
                .collect();
            let plan = get(&fields);
            let expected = if matches {
                StatusCode::NOT_MODIFIED
            } else {
                StatusCode::OK
            };
            assert_eq!(plan.status, expected, "{values:?}");
        }
    }

    /// A `304` carries the validator, freshness and age, and no body or body headers.
    #[test]
    fn a_304_has_no_body_headers() {
        let plan = get(&[("if-none-match", &etag())]);
        assert_eq!(plan.status, StatusCode::NOT_MODIFIED);
        assert_eq!(plan.content, Content::None);
        assert_eq!(
            names(&plan.headers),
            ["age", "cache-control", "etag", "x-cache"]
        );
    }

    /// `If-None-Match` is evaluated before `Range` and `If-Range` (RFC 9110 §13.2.2).
    #[test]
    fn if_none_match_wins_over_range() {
        let tag = etag();
        let requests = [
            vec![("if-none-match", tag.as_str()), ("range", "bytes=0-1")],
            vec![("if-none-match", "*"), ("range", "bytes=50-")],
            vec![
                ("if-none-match", tag.as_str()),
                ("range", "bytes=0-1"),
                ("if-range", tag.as_str()),
            ],
        ];
        for fields in requests {
            for method in [Method::GET, Method::HEAD] {
                let plan = plan_for(method, &fields, 10);
                assert_eq!(plan.status, StatusCode::NOT_MODIFIED, "{fields:?}");
            }
        }
    }

    #[derive(Clone, Copy)]
    enum Expect {
        Part(u64, u64),
        Unsatisfiable,
        Whole(Option<RangeIgnored>),
    }

    fn check_range(plan: &Plan, len: u64, expect: &Expect, case: &str) {
        match *expect {
            Expect::Part(start, end_inclusive) => {
                assert_eq!(plan.status, StatusCode::PARTIAL_CONTENT, "{case}");
                let content = Content::Range {
                    start,
                    end_inclusive,
                };
                assert_eq!(plan.content, content, "{case}");
                let range = format!("bytes {start}-{end_inclusive}/{len}");
                assert_eq!(
                    header(plan, "content-range"),
                    Some(range.as_str()),
                    "{case}"
                );
                let length = (end_inclusive - start + 1).to_string();
                assert_eq!(header(plan, "content-length"), Some(length.as_str()));
                assert_eq!(header(plan, "content-type"), Some("image/webp"));
                assert!(plan.headers.contains_key("etag"), "{case}");
            }
            Expect::Unsatisfiable => {
                assert_eq!(plan.status, StatusCode::RANGE_NOT_SATISFIABLE, "{case}");
                assert_eq!(plan.content, Content::None, "{case}");
                let range = format!("bytes */{len}");
                assert_eq!(
                    header(plan, "content-range"),
                    Some(range.as_str()),
                    "{case}"
                );
                assert_eq!(
                    names(&plan.headers),
                    [
                        "accept-ranges",
                        "content-length",
                        "content-range",
                        "x-cache"
                    ],
                    "{case}"
                );
                assert_eq!(header(plan, "content-length"), Some("0"));
            }
            Expect::Whole(ignored) => {
                assert_eq!(plan.status, StatusCode::OK, "{case}");
                assert_eq!(plan.content, Content::Whole, "{case}");
                assert_eq!(plan.ignored, ignored, "{case}");
                let length = len.to_string();
                assert_eq!(header(plan, "content-length"), Some(length.as_str()));
                assert!(!plan.headers.contains_key("content-range"), "{case}");
            }
        }
    }

    /// One byte range → 206 (end clamped), past the end → 416, anything else → the whole body
    /// and the reason it was ignored.
    #[test]
    fn range_requests() {
        use Expect::*;
        use RangeIgnored::*;
        let cases = [
            ("bytes=0-4", Part(0, 4)),
            ("bytes=5-", Part(5, 9)),
            ("bytes=-3", Part(7, 9)),
            ("bytes=-10", Part(0, 9)),
            ("bytes=-30", Part(0, 9)),
            ("bytes=2-100", Part(2, 9)),
            ("bytes=0-0", Part(0, 0)),
            ("bytes=9-9", Part(9, 9)),
            ("bytes=0-", Part(0, 9)),
            ("BYTES=1-2", Part(1, 2)),
            ("bytes= 1-2 ,", Part(1, 2)),
            ("bytes=,1-2", Part(1, 2)),
            ("bytes=0-99999999999999999999999", Part(0, 9)),
            ("bytes=-99999999999999999999999", Part(0, 9)),
            ("bytes=10-", Unsatisfiable),
            ("bytes=10-20", Unsatisfiable),
            ("bytes=-0", Unsatisfiable),
            ("bytes=99999999999999999999-", Unsatisfiable),
            ("bytes=0-1,3-4", Whole(Some(Several))),
            ("bytes=0-1, 10-", Whole(Some(Several))),
            ("items=0-1", Whole(Some(OtherUnit))),
            ("bytes =0-1", Whole(Some(OtherUnit))),
            ("bytes=4-2", Whole(Some(Malformed))),
            ("bytes=a-b", Whole(Some(Malformed))),
            ("bytes=1", Whole(Some(Malformed))),
            ("bytes=-", Whole(Some(Malformed))),
            ("bytes=", Whole(Some(Malformed))),
            ("bytes=,", Whole(Some(Malformed))),
            ("bytes=1-2-3", Whole(Some(Malformed))),
            ("bytes=+1-2", Whole(Some(Malformed))),
            ("bytes=1 -2", Whole(Some(Malformed))),
            ("0-1", Whole(Some(Malformed))),
            ("=0-1", Whole(Some(Malformed))),
        ];
        for (range, expect) in cases {
            check_range(&get(&[("range", range)]), 10, &expect, range);
        }
    }

    /// Two `Range` fields are one malformed request, not a choice.
    #[test]
    fn two_range_fields_get_the_whole_body() {
        let plan = get(&[("range", "bytes=0-1"), ("range", "bytes=2-3")]);
        check_range(
            &plan,
            10,
            &Expect::Whole(Some(RangeIgnored::Malformed)),
            "two",
        );
    }

    /// `If-Range` honours the range only for our strong `ETag`; otherwise the whole body, even
    /// when the range could not be satisfied. Without `Range` it is ignored.
    #[test]
    fn if_range_needs_the_strong_etag() {
        use Expect::*;
        let tag = etag();
        let weak = format!("W/{tag}");
        let padded = format!(" {tag} ");
        let trailing = format!("{tag}, \"a\"");
        let ignored = Whole(Some(RangeIgnored::IfRange));
        let cases = [
            ("bytes=0-4", tag.as_str(), Part(0, 4)),
            ("bytes=0-4", padded.as_str(), Part(0, 4)),
            ("bytes=20-", tag.as_str(), Unsatisfiable),
            ("bytes=0-4", weak.as_str(), ignored),
            ("bytes=0-4", "\"other\"", Whole(Some(RangeIgnored::IfRange))),
            ("bytes=0-4", trailing.as_str(), ignored),
            ("bytes=0-4", "Wed, 21 Oct 2015 07:28:00 GMT", ignored),
            ("bytes=20-", "\"other\"", Whole(Some(RangeIgnored::IfRange))),
        ];
        for (range, if_range, expect) in cases {
            let plan = get(&[("range", range), ("if-range", if_range)]);
            check_range(&plan, 10, &expect, &format!("{range} / {if_range}"));
        }
        let plan = get(&[("if-range", "\"other\"")]);
        check_range(&plan, 10, &Whole(None), "if-range alone");
        let plan = get(&[
            ("range", "bytes=0-4"),
            ("if-range", &tag),
            ("if-range", &tag),
        ]);
        check_range(&plan, 10, &ignored, "two if-range fields");
    }

    /// `HEAD` gets the status and headers `GET` would, `Content-Length` included, and no body;
    /// any other method is answered as `GET`.
    #[test]
    fn head_is_get_without_the_body() {
        let tag = etag();
        let requests = [
            vec![],
            vec![("range", "bytes=2-5")],
            vec![("range", "bytes=20-")],
            vec![("range", "bytes=0-1,2-3")],
            vec![("if-none-match", tag.as_str())],
        ];
        for fields in requests {
            let get = plan_for(Method::GET, &fields, 10);
            let head = plan_for(Method::HEAD, &fields, 10);
            assert_eq!(head.status, get.status, "{fields:?}");
            assert_eq!(head.headers, get.headers, "{fields:?}");
            assert_eq!(head.content, Content::None, "{fields:?}");
            let post = plan_for(Method::POST, &fields, 10);
            assert_eq!((post.status, post.content), (get.status, get.content));
        }
        let head = plan_for(Method::HEAD, &[("range", "bytes=2-5")], 10);
        assert_eq!(header(&head, "content-length"), Some("4"));
    }

    /// An empty body: no range can point into it (416), except a suffix, which gets all of
    /// it (nothing) as a 200.
    #[test]
    fn an_empty_body() {
        use Expect::*;
        let cases = [
            ("bytes=0-", Unsatisfiable),
            ("bytes=0-5", Unsatisfiable),
            ("bytes=-0", Unsatisfiable),
            ("bytes=-5", Whole(Some(RangeIgnored::Empty))),
            ("bytes=0-1,2-3", Whole(Some(RangeIgnored::Several))),
        ];
        for (range, expect) in cases {
            let plan = plan_for(Method::GET, &[("range", range)], 0);
            check_range(&plan, 0, &expect, range);
        }
        let plan = plan_for(Method::GET, &[], 0);
        check_range(&plan, 0, &Whole(None), "no range");
        let (data, error) = drain(respond(plan, Source::Memory(Bytes::new())).into_body());
        assert!(data.is_empty() && error.is_none());
    }

    /// Stored headers that can't be sent don't break the answer: an unsendable type is sent
    /// as bytes, an unsendable or absent `Cache-Control` is left out.
    #[test]
    fn unsendable_stored_headers() {
        let cases = [
            (
                "",
                Some("max-age=60"),
                "application/octet-stream",
                Some("max-age=60"),
            ),
            ("image/\npng", None, "application/octet-stream", None),
            ("image/png", Some("max-age=1\r\n"), "image/png", None),
        ];
        for (content_type, cache_control, sent_type, sent_control) in cases {
            let meta = Meta {
                content_type: content_type.into(),
                cache_control: cache_control.map(str::to_string),
                stored_at: STORED,
                content_disposition: None,
            };
            let plan = plan(
                &Method::GET,
                &request(&[]),
                &meta,
                10,
                at(STORED),
                Served::Hit(Tier::Disk),
            );
            assert_eq!(plan.status, StatusCode::OK);
            assert_eq!(header(&plan, "content-type"), Some(sent_type));
            assert_eq!(header(&plan, "cache-control"), sent_control);
        }
    }

    // === respond ===

    /// From memory, the whole body and a range are the stored bytes themselves, not copies.
    #[test]
    fn memory_bodies_are_slices_of_the_stored_bytes() {
        let stored = Bytes::from(BODY.to_vec());
        let cases = [(vec![], 0, 10), (vec![("range", "bytes=2-5")], 2, 6)];
        for (fields, start, stop) in cases {
            let plan = get(&fields);
            let (status, headers) = (plan.status, plan.headers.clone());
            let response = respond(plan, Source::Memory(stored.clone()));
            assert_eq!(response.status(), status);
            assert_eq!(response.headers(), &headers);
            let mut body = response.into_body();
            assert_eq!(body.size_hint().exact(), Some(stop - start));
            let mut cx = Context::from_waker(Waker::noop());
            let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) else {
                panic!("a body in memory is ready at once");
            };
            let data = frame.into_data().unwrap();
            assert_eq!(&data[..], &BODY[start as usize..stop as usize]);
            assert_eq!(data.as_ptr(), stored[start as usize..].as_ptr(), "copied");
        }
    }

    /// Answers without content send nothing, and let go of a store read at once.
    #[test]
    fn no_content_sends_nothing_and_drops_the_stream() {
        let tag = etag();
        let cases = [
            plan_for(Method::HEAD, &[], 10),
            plan_for(Method::HEAD, &[("range", "bytes=1-2")], 10),
            get(&[("if-none-match", tag.as_str())]),
            get(&[("range", "bytes=10-")]),
        ];
        for plan in cases {
            let (chunks, dropped) = Stutter::chunks(vec![Ok(BODY)]);
            let response = respond(plan.clone(), Source::Stream(chunks));
            assert!(dropped.load(Ordering::SeqCst));
            let body = response.into_body();
            assert!(body.is_end_stream());
            let (data, error) = drain(body);
            assert!(data.is_empty() && error.is_none());
            let body = respond(plan, Source::Memory(Bytes::from_static(BODY))).into_body();
            let (data, error) = drain(body);
            assert!(data.is_empty() && error.is_none());
        }
    }

    /// A body in memory that isn't as long as the plan says fails instead of being sent as if
    /// it were complete.
    #[test]
    fn a_memory_body_of_another_length_fails() {
        let cases: [(&[u8], &str); 3] = [
            (b"012345678", "ended after 9 of its 10 bytes"),
            (b"0123456789a", "runs past its 10 bytes"),
            (b"", "ended after 0 of its 10 bytes"),
        ];
        for (stored, message) in cases {
            let response = respond(get(&[]), Source::Memory(Bytes::from_static(stored)));
            let (_, error) = drain(response.into_body());
            let error = error.expect("a body of another length fails");
            assert!(error.downcast_ref::<CutError>().is_some());
            assert!(error.to_string().contains(message), "{error}");
        }
    }

    /// A read that fails mid-body ends the body with that error, after what it had sent.
    #[test]
    fn a_stream_error_ends_the_body_with_it() {
        let (chunks, _) = Stutter::chunks(vec![Ok("01234"), Err("connection reset")]);
        let (data, error) = drain(respond(get(&[]), Source::Stream(chunks)).into_body());
        assert_eq!(data, b"01234");
        assert_eq!(error.unwrap().to_string(), "connection reset");

        // Before the range starts, too.
        let (chunks, _) = Stutter::chunks(vec![Ok("01"), Err("connection reset")]);
        let plan = get(&[("range", "bytes=5-")]);
        let (data, error) = drain(respond(plan, Source::Stream(chunks)).into_body());
        assert_eq!(data, b"");
        assert_eq!(error.unwrap().to_string(), "connection reset");
    }

    /// A read that ends short of the wanted bytes, or runs past the announced length, fails.
    #[test]
    fn a_stream_of_another_length_fails() {
        type Items = Vec<Result<&'static [u8], &'static str>>;
        let cases: [(&str, Items, &[u8], &str); 4] = [
            (
                "",
                vec![Ok(b"012"), Ok(b"345")],
                b"012345",
                "ended after 6 of its 10",
            ),
            (
                "bytes=4-8",
                vec![Ok(b"012"), Ok(b"345")],
                b"45",
                "ended after 6 of its 10",
            ),
            ("", vec![Ok(BODY), Ok(b"a")], BODY, "runs past its 10 bytes"),
            (
                "bytes=8-",
                vec![Ok(b"0123456789a")],
                b"",
                "runs past its 10 bytes",
            ),
        ];
        for (range, items, sent, message) in cases {
            let (chunks, _) = Stutter::chunks(items);
            let plan = get(&[("range", range)]);
            let (data, error) = drain(respond(plan, Source::Stream(chunks)).into_body());
            assert_eq!(data, sent, "{range:?}");
            let error = error.expect("a stream of another length fails");
            assert!(error.to_string().contains(message), "{range:?}: {error}");
        }
    }

    /// A range that ends before the body does stops reading after its last byte: what follows
    /// (here a failure) is never read, and the read is let go.
    #[test]
    fn a_range_stops_reading_after_its_last_byte() {
        let (chunks, dropped) = Stutter::chunks(vec![Ok("012"), Ok("3456"), Err("never read")]);
        let plan = get(&[("range", "bytes=2-4")]);
        let mut body = respond(plan, Source::Stream(chunks)).into_body();
        let mut cx = Context::from_waker(Waker::noop());
        let mut data = Vec::new();
        while !body.is_end_stream() {
            if let Poll::Ready(frame) = Pin::new(&mut body).poll_frame(&mut cx) {
                let frame = frame.expect("the body ends after its last byte").unwrap();
                data.extend_from_slice(&frame.into_data().unwrap());
            }
        }
        assert_eq!(data, b"234");
        assert!(dropped.load(Ordering::SeqCst));
        assert!(drain(body).1.is_none());
    }

    /// Splits `whole` at `cuts` (sorted, repeats make empty chunks).
    fn chunked(whole: &Bytes, mut cuts: Vec<usize>) -> Vec<Result<Bytes, &'static str>> {
        cuts.iter_mut().for_each(|cut| *cut %= whole.len() + 1);
        cuts.sort_unstable();
        let mut from = 0;
        let mut chunks = Vec::new();
        for cut in cuts.into_iter().chain([whole.len()]) {
            chunks.push(Ok(whole.slice(from..cut)));
            from = cut;
        }
        chunks
    }

    proptest! {
        /// For any chunking and any range, the streamed body is the slice the plan names,
        /// as long as its `Content-Length`, the same as from memory.
        #[test]
        fn a_streamed_range_is_the_slice(
            whole in proptest::collection::vec(any::<u8>(), 0..300),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
            first in 0u64..320,
            last in 0u64..320,
            form in 0u8..4,
        ) {
            let whole = Bytes::from(whole);
            let len = whole.len() as u64;
            let range = match form {
                0 => format!("bytes={first}-{}", first.max(last)),
                1 => format!("bytes={first}-"),
                2 => format!("bytes=-{last}"),
                _ => String::new(),
            };
            let plan = get_len(&range, len);
            let expected: &[u8] = match plan.content {
                Content::Whole => &whole,
                Content::Range { start, end_inclusive } => {
                    &whole[start as usize..=end_inclusive as usize]
                }
                Content::None => &[],
            };
            let length: u64 = plan.headers[CONTENT_LENGTH].to_str().unwrap().parse().unwrap();
            prop_assert_eq!(length, expected.len() as u64);

            let (chunks, _) = Stutter::chunks(chunked(&whole, cuts));
            let body = respond(plan.clone(), Source::Stream(chunks)).into_body();
            prop_assert_eq!(body.size_hint().exact(), Some(length));
            let (streamed, error) = drain(body);
            prop_assert!(error.is_none(), "{:?}", error);
            prop_assert_eq!(&streamed[..], expected);

            let memory = respond(plan, Source::Memory(whole.clone()));
            let (from_memory, error) = drain(memory.into_body());
            prop_assert!(error.is_none());
            prop_assert_eq!(&from_memory[..], expected);
        }
    }

    fn get_len(range: &str, len: u64) -> Plan {
        let fields: &[(&str, &str)] = if range.is_empty() {
            &[]
        } else {
            &[("range", range)]
        };
        plan_for(Method::GET, fields, len)
    }
}
