//! imgproxy-cache: a cache-on-write reverse proxy for imgproxy.
//!
//! A request arrives at [`proxy::run`]'s accept loop, which hands each connection to one of
//! the serving threads ([`proxy::threads`], one per core), with the deadlines of
//! [`proxy::conn`] on its socket; there [`proxy::handler`] forwards it to the upstream
//! (imgproxy) through [`proxy::upstream`] and streams the answer back through [`proxy::tee`].
//! When [`cache::policy`] says the response may be stored, the tee keeps a copy under a byte
//! reservation from [`cache::queue`] and, once the body is complete, offers it to the queue,
//! which uploads it in the background ([`cache::upload`]) to a [`cache::store`]: S3
//! ([`cache::s3`]) or a local directory ([`cache::fs`]), under the key from [`cache::key`].
//!
//! - [`server`]: the one server kit both servers run on.
//! - [`settings`]: the settings kit both configs share.
//! - [`proxy`]: the server, its settings ([`proxy::config`]).
//! - [`cache`]: keys, the storing policy, stores, and the upload queue.
//! - [`metrics`]: Prometheus metric names, declared once.
//! - [`body`]: the response body type and the short uncached answers.
//! - [`telemetry`]: logging set-up.
//! - [`url_builder`]: signed imgproxy URLs and cached URLs, for `imgproxy-cache url`.
//! - [`worker`]: the bundled imgproxy-compatible worker: URLs, signatures, fetching and the
//!   image engine; behind the default-on `worker` cargo feature, so that
//!   `--no-default-features` builds the proxy alone, without the image codecs.
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
pub mod url_builder;
#[cfg(feature = "worker")]
pub mod worker;
