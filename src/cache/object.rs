//! A stored result as every tier holds it: the body, and the metadata a hit is answered from.
//!
//! The metadata is what the upstream said about the result (`Content-Type`, `Cache-Control`)
//! and when it said it. Every tier keeps all three (the bucket as object headers and
//! `x-amz-meta-stored-at`, the disk tier in its metadata file), so freshness and `Age` count
//! from the render, not from when a tier got its copy.

use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::Stream;

use super::store::StoreError;

/// What a hit is answered with, besides the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Copied from the upstream response; never empty for what we store (see `policy`).
    pub content_type: String,
    pub cache_control: Option<String>,
    /// When the upstream answered, in whole seconds since the Unix epoch: the resolution
    /// every tier can keep (S3's `Last-Modified` has no more).
    pub stored_at: u64,
    /// imgproxy's `inline; filename="…"`: the name a browser saves the image under.
    pub content_disposition: Option<String>,
}

impl Meta {
    /// The metadata of a result the upstream answered with `headers` at `stored_at`.
    pub fn from_headers(headers: &http::HeaderMap, stored_at: SystemTime) -> Meta {
        let text = |name: http::header::HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Meta {
            content_type: text(http::header::CONTENT_TYPE).unwrap_or_default(),
            cache_control: text(http::header::CACHE_CONTROL),
            stored_at: unix_secs(stored_at),
            content_disposition: text(http::header::CONTENT_DISPOSITION),
        }
    }

    pub fn stored_time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.stored_at)
    }

    /// The strong validator of the `len`-byte body rendered at `stored_at`, quoted as the
    /// `ETag` header wants it. One key holds one rendering at a time, and a new rendering gets
    /// a new `stored_at`, so the pair names the bytes without hashing them. (Two renderings of
    /// one key in the same second with the same length but different bytes would share it;
    /// imgproxy renders a URL to the same bytes, so that is a repeat, not a change.)
    pub fn etag(&self, len: u64) -> String {
        format!("\"{:x}-{:x}\"", self.stored_at, len)
    }
}

/// Whole seconds since the Unix epoch (0 for a time before it).
pub fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// A complete result: what the upload queue stores and the memory tier holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub meta: Meta,
    pub body: Bytes,
}

impl Object {
    pub fn len(&self) -> u64 {
        self.body.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }
}

/// A body read from a store, chunk by chunk; it ends early with an error when the read fails.
pub type Chunks = Pin<Box<dyn Stream<Item = Result<Bytes, StoreError>> + Send>>;

/// An object found in a store, its body still to be read.
pub struct Reading {
    pub meta: Meta,
    /// The body's length, as the store announced it; a body that ends short of it, or goes
    /// past it, is a failed read.
    pub len: u64,
    pub body: Chunks,
}

impl Reading {
    /// A reading of an object already in memory.
    pub fn whole(object: Object) -> Reading {
        let len = object.len();
        Reading {
            meta: object.meta,
            len,
            body: Box::pin(futures_util::stream::iter([Ok(object.body)])),
        }
    }
}
