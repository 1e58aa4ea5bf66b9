//! The request side of the bundled imgproxy-compatible worker: everything that
//! turns a request path into a verified, parsed request, as pure functions.
//!
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

pub mod engine;
pub mod error;
pub mod options;
pub mod presets;
pub mod signature;
pub mod source;
pub mod url;
