//! imgproxy-cache: a reverse proxy for imgproxy that streams every result back and stores it in
//! S3-compatible storage, plus a bundled imgproxy-compatible image server.
//!
//! One binary, two processes (`main.rs`): the proxy (`imgproxy-cache`, the default command) and
//! the bundled worker (`imgproxy-cache worker`). In the container the worker is the proxy's
//! upstream, reached over HTTP on loopback exactly like a real imgproxy; the two share no
//! memory, and what the worker tells the proxy travels in headers ([`contract`]).
//!
//! **Where a request goes.** [`proxy::run`] accepts connections through the [`server`] kit and
//! hands each to a serving thread ([`proxy::threads`], one per core) with the deadlines of
//! [`proxy::conn`] on its socket. [`proxy::handler`] asks the cache first
//! ([`cache::Cache::lookup`]): a hit, or a render of the same key in flight, is answered from
//! the stored metadata ([`proxy::hit`]); on a miss it forwards the request to imgproxy
//! ([`proxy::upstream`]) and streams the answer back ([`proxy::relay`]). The proxy's own
//! endpoints (health, metrics, purge) are [`proxy::internal`].
//!
//! **Where a result is kept.** The cache looks a key up in memory ([`cache::memory`]), among
//! the renders in flight ([`cache::flight`]: one per key, streamed to every request for it),
//! in the disk tier ([`cache::fs`]) and in the bucket ([`cache::s3`], its lookups and uploads
//! the signed requests of [`cache::s3_http`], lookups behind the timeout and breaker of
//! [`cache::guard`]). It decides from the response head whether a result may be
//! stored ([`cache::policy`]) and whether a stored one is still fresh ([`mod@cache::freshness`]),
//! feeds a render's body to its readers under one byte budget, and hands the complete result
//! to the tiers and to its upload queue, which stores it in the background, with retries and
//! dedup, in a [`cache::Store`]: a bucket (its client from [`aws`]) or the local directory,
//! under the key from [`cache::key`].
//!
//! **Where a new tier goes.** In `cache/`, as another [`cache::Store`] that
//! [`cache::Cache::lookup`] reads through and a finished render writes to. Nothing in `proxy/`
//! changes for it.
//!
//! The modules:
//! - [`proxy`]: the proxy server: settings ([`proxy::config`]), serving threads, client
//!   deadlines, forwarding, hop-by-hop headers ([`proxy::headers`]), metrics
//!   ([`proxy::metrics`]) and its own endpoints.
//! - [`cache`]: the cache the proxy asks: keys, the storing policy, freshness, single flight,
//!   the tiers (memory, disk, bucket), the upload queue, and their settings
//!   ([`cache::config`]).
//! - `worker`: the bundled imgproxy-compatible image server: settings, URLs, sources, the image
//!   engine. Behind the default-on `worker` cargo feature: `--no-default-features` builds the
//!   proxy alone, without the image codecs.
//! - [`server`]: the one accept loop both servers run on: connection places, every connection
//!   task tracked, graceful shutdown within a deadline.
//! - [`settings`]: the one settings kit both configs use: table rows (for `--help` and the
//!   README), the error that names variable, value and why, the shared parsers.
//! - [`aws`]: the one S3 client builder, for the store and the worker's `s3://` sources.
//! - [`signature`]: imgproxy URL signatures, for the worker and `imgproxy-cache url`.
//! - [`body`]: the one response body type, and the short uncached answers.
//! - [`telemetry`]: logging set-up.
//! - [`tls`]: the one TLS client set-up of our own hyper clients.
//! - [`url_builder`]: signed imgproxy URLs and cached URLs, for `imgproxy-cache url`.
//! - `fuzzing` (hidden): what each fuzz target in `fuzz/` does with its input, shared with
//!   the corpus replay test.

#![deny(unsafe_code)]

pub mod aws;
pub mod body;
pub mod cache;
pub mod contract;
#[cfg(feature = "worker")]
#[doc(hidden)]
pub mod fuzzing;
pub mod proxy;
pub mod server;
pub mod settings;
pub mod signature;
pub mod telemetry;
pub mod tls;
pub mod url_builder;
#[cfg(feature = "worker")]
pub mod worker;
