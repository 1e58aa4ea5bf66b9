//! The HTTP contract between the bundled worker and the proxy: what the worker says in its
//! responses that the proxy acts on. They run as separate processes, so this is all either
//! knows of the other.

/// The header with which the bundled worker marks an SVG result it sanitised itself (scripts,
/// event handlers and foreign references removed). imgproxy's `raw` results are never marked.
pub const SANITIZED_SVG_HEADER: &str = "x-imgproxy-cache-sanitized-svg";
