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
//! - [`settings`]: the settings kit both configs share: table rows, the error naming
//!   variable and value, the shared parsers.
//! - [`proxy`]: the server, its settings ([`proxy::config`]), request forwarding, hop-by-hop
//!   headers ([`proxy::headers`]) and the proxy's own health and metrics endpoints
//!   ([`proxy::internal`]).
//! - [`cache`]: keys, the storing policy, stores, and the upload queue.
//! - [`metrics`]: Prometheus metric names, declared once.
//! - [`body`]: the response body type.
//! - [`telemetry`]: logging set-up.
//! - [`url_builder`]: signed imgproxy URLs and cached URLs, for `imgproxy-cache url`.
//! - [`worker`]: the bundled imgproxy-compatible worker: URLs, signatures, fetching and the
//!   image engine.
//! - `fuzzing` (hidden): what each fuzz target in `fuzz/` does with its input, shared with
//!   the corpus replay test.

pub mod body;
pub mod cache;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod proxy;
pub mod settings;
pub mod telemetry;
pub mod url_builder;
pub mod worker;
