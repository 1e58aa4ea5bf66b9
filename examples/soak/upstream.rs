//! The soak's upstream: a different body for every path, so a listing can tell whether an
//! object holds its own path's bytes, and the ways an upstream fails.
//!
//! - `/img/..`: 200 at once, 4–64 KiB of [`body_for`] the path, storable for a year;
//! - `/slow/..`: the same after [`RENDER_DELAY`], streamed in 10 chunks 10 ms apart (the
//!   stampedes' renders);
//! - `/err/..`: 500 with [`ERROR_BODY`];
//! - `/cut/..`: 200 announcing 64 KiB, then the connection dropped after 16 KiB;
//! - `/health`: 200.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use imgproxy_cache::body::BoxError;
use md5::{Digest, Md5};

use crate::servers::serve;

/// How long a `/slow/..` render thinks before its head.
pub const RENDER_DELAY: Duration = Duration::from_millis(300);
/// What `/err/..` answers.
pub const ERROR_BODY: &[u8] = b"upstream failed";
/// What `/cut/..` announces, and how much of it it sends.
const CUT_ANNOUNCED: usize = 64 * 1024;
const CUT_SENT: usize = 16 * 1024;

/// Answers that may be stored: the bucket must hold these and only these.
pub fn storable(path: &str) -> bool {
    path.starts_with("/img/") || path.starts_with("/slow/")
}

/// The bytes the upstream answers for `path`: 4–64 KiB, a function of the path alone.
pub fn body_for(path: &str) -> Bytes {
    let digest = Md5::digest(path.as_bytes());
    let mut x = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes")) | 1;
    let len = 4096 + (x % (60 * 1024)) as usize;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// `chunks` as a body, `gap` apart, ending in an error when `cut`.
fn chunked(chunks: Vec<Bytes>, gap: Duration, cut: bool) -> Body {
    let frames = futures_util::stream::unfold(
        (chunks.into_iter(), true),
        move |(mut rest, first)| async move {
            if !first {
                tokio::time::sleep(gap).await;
            }
            match rest.next() {
                Some(chunk) => Some((Ok(Frame::data(chunk)), (rest, false))),
                None if cut => Some((Err("cut on purpose".into()), (rest, false))),
                None => None,
            }
        },
    );
    StreamBody::new(frames).boxed()
}

/// Starts the upstream on a loopback port of its own; returns its address.
pub async fn start() -> SocketAddr {
    serve(|req: Request<Incoming>| async move {
        let path = req.uri().path().to_owned();
        let kind = path.split('/').nth(1).unwrap_or_default();
        let response = Response::builder()
            .header("content-type", "image/jpeg")
            .header("cache-control", "max-age=31536000, public");
        let response = match kind {
            "img" | "slow" => {
                let body = body_for(&path);
                let response = response.header("content-length", body.len());
                if kind == "slow" {
                    tokio::time::sleep(RENDER_DELAY).await;
                    let step = body.len().div_ceil(10);
                    let chunks = body.chunks(step).map(Bytes::copy_from_slice).collect();
                    response.body(chunked(chunks, Duration::from_millis(10), false))
                } else {
                    response.body(chunked(vec![body], Duration::ZERO, false))
                }
            }
            "cut" => response
                .header("content-length", CUT_ANNOUNCED)
                .body(chunked(
                    vec![Bytes::from(vec![7u8; CUT_SENT])],
                    Duration::from_millis(5),
                    true,
                )),
            "err" => Response::builder()
                .status(500)
                .header("content-type", "text/plain")
                .body(chunked(
                    vec![Bytes::from_static(ERROR_BODY)],
                    Duration::ZERO,
                    false,
                )),
            _ => Response::builder().body(chunked(
                vec![Bytes::from_static(b"ok")],
                Duration::ZERO,
                false,
            )),
        };
        Ok::<_, Infallible>(response.expect("static response"))
    })
    .await
}
