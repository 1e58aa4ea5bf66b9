//! The bundled imgproxy-compatible worker.
//!
//! A request reaches [`server::run`]'s accept loop and goes to [`handler::handle`], which
//! routes it (health, HEAD, processing). A processing request is parsed and verified by
//! [`url::parse_path`], its source is downloaded by [`fetch`] within the limits of
//! [`capacity`], processed on a blocking thread by [`process`], and answered through
//! [`respond`].
//!
//! Request side (pure functions):
//! - [`url`]: `parse_path`, the entry point — splits off and verifies the
//!   signature, applies presets and options, decodes the source.
//! - [`signature`]: HMAC-SHA256 URL signatures with key rotation and trusted
//!   signatures; also signs paths for the `url` CLI.
//! - [`options`]: `ProcessingOptions`, the types of its fields, and the
//!   config-dependent `Defaults`.
//! - [`presets`]: named option sets from `IMGPROXY_PRESETS` / `IMGPROXY_PRESETS_PATH`.
//! - [`source`]: decodes `plain/...` and base64 sources into a URL and scheme.
//! - [`error`]: `ParseError` and its mapping to HTTP status codes.
//! - [`engine`]: the processing engine; [`engine::ops`] holds its pure pixel
//!   operations (crop, gravity, extend, trim, orientation, effects, watermark).
//!
//! Server side:
//! - [`config`]: every `IMGPROXY_*` variable the worker reads, its default and validation.
//! - [`server`]: the worker's sources, hyper builder and connection limit on the shared
//!   server kit ([`crate::server`]).
//! - [`handler`]: routing, the stages of a processing request, and error → status mapping.
//! - [`capacity`]: requests in flight (429 past the limit) and CPU slots.
//! - [`fetch`]: http(s), `s3://` and `local://` sources with SSRF, size and time limits.
//! - [`process`]: the CPU step: the engine's header probe, then raw/skip pass-through or the
//!   engine.
//! - [`respond`]: response headers (`Content-Disposition`, `Cache-Control`, request ids).

pub mod capacity;
pub mod config;
pub mod engine;
pub mod error;
pub mod fetch;
pub mod handler;
pub mod options;
pub mod presets;
pub mod process;
pub mod respond;
pub mod server;
pub mod source;
pub mod url;

// Signing lives outside the worker so the proxy-only build keeps `imgproxy-cache url`.
pub use crate::signature;
