//! The value parsers only imgproxy's variables need, built on [`crate::settings`]'s.

use std::time::Duration;

use crate::settings::{SettingsError, invalid, list, number, parsed, seconds};
use crate::worker::options::{FormatError, ImageFormat};

/// Whole seconds, at least 1, as imgproxy's timeouts.
pub(super) fn secs(
    var: &'static str,
    raw: Option<&str>,
    default: u64,
) -> Result<Duration, SettingsError> {
    seconds(var, number(var, raw, default)?)
}

/// A megapixel count, fractions allowed (`0.5`), as imgproxy's `MegaInt`.
pub(super) fn megapixels(
    var: &'static str,
    raw: Option<&str>,
    default: f64,
) -> Result<f64, SettingsError> {
    parsed(
        var,
        raw,
        default,
        |v: &f64| v.is_finite() && *v >= 0.0,
        "expected a number of megapixels",
    )
}

/// A comma-separated list of image formats (`png, webp`).
pub(super) fn formats(var: &'static str, raw: &str) -> Result<Vec<ImageFormat>, SettingsError> {
    list(raw)
        .map(|f| {
            f.parse()
                .map_err(|e: FormatError| invalid(var, raw, e.to_string()))
        })
        .collect()
}

/// imgproxy's `URLPath`: drop query and fragment and a trailing `/`, ensure a leading `/`.
pub(super) fn url_path(raw: &str) -> String {
    let path = raw.split(['?', '#']).next().unwrap_or("");
    let path = path.strip_suffix('/').unwrap_or(path);
    if path.is_empty() || path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    }
}
