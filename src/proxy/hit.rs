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
//!    and a malformed header: RFC 9110 §14.2 lets a server ignore `Range`, and one whole body
//!    costs us less than a multipart one costs to build and the client to parse.
//!
//! `HEAD` gets exactly the headers `GET` would (RFC 9110 §9.3.2), a `206`'s included, as nginx
//! does, and no body. Only `GET` and `HEAD` are looked up, so any other method is answered as
//! `GET`.
//!
//! An empty object has no byte to point at: `a-` and `a-b` start past its end and get `416`;
//! `-n` (n > 0) is satisfiable by RFC 9110 §14.1.1 yet a `206` can't describe zero bytes, so it
//! gets the whole (empty) body as `200`.

use std::fmt;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::header::{
    ACCEPT_RANGES, AGE, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG,
    IF_NONE_MATCH, IF_RANGE, RANGE,
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
