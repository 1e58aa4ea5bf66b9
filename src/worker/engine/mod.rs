//! The bundled worker's processing engine: source bytes + [`ProcessingOptions`] → encoded
//! result, with imgproxy's geometry and format rules. CPU-bound and synchronous; the HTTP
//! layer runs [`process`] on a blocking thread.
//!
//! A job flows through these modules in order:
//! - [`mod@probe`]: format, size and frame count from headers; limits are enforced here first.
//! - [`geometry`]: imgproxy's size arithmetic (fit/fill/force/auto, dpr, zoom, enlarge, ...).
//! - [`svg`]: SVG sources — sanitised SVG results, or rendered at the plan's scale.
//! - [`decode`] (with [`jpeg`] and [`webp`] for shrink-on-load in libjpeg-turbo and libwebp,
//!   [`avif`] for libavif under our limits, and [`metadata`] for EXIF):
//!   pixels of every kept frame.
//! - [`color`]: embedded ICC profiles → sRGB.
//! - [`pipeline`]: per-frame orientation, crop, resize, result crop, flatten.
//! - [`resize`]: Lanczos3 resampling.
//! - [`ops`]: pure pixel operations on `RgbaImage` (gravity crop, smart crop, extend, pad,
//!   trim, effects, flatten, watermark) with imgproxy's placement rules.
//! - [`mod@format`]: which format the result is written in.
//! - [`exif_out`]: which of the source's EXIF the result keeps (`strip_metadata`,
//!   `keep_copyright`), written back as a TIFF block.
//! - [`encode`]: the encoders, quality and `max_bytes`; [`embed`] puts the EXIF block into
//!   JPEG and WebP results.
//! - [`error`]: [`EngineError`] and its HTTP status.

pub mod avif;
pub mod color;
pub mod deadline;
pub mod decode;
pub mod embed;
pub mod encode;
pub mod error;
pub mod exif_out;
pub mod format;
pub mod geometry;
pub mod jpeg;
pub mod metadata;
pub mod ops;
pub mod pipeline;
pub mod probe;
pub mod resize;
pub mod svg;
pub mod webp;

use std::sync::Arc;

pub use deadline::Deadline;
pub use error::EngineError;
pub use probe::probe;

use crate::worker::options::{Defaults, ImageFormat, ProcessingOptions};

/// `IMGPROXY_MAX_SRC_RESOLUTION`: megapixels a source may have (all loaded frames counted).
pub const DEFAULT_MAX_SRC_RESOLUTION: f64 = 50.0;
/// `IMGPROXY_MAX_RESULT_DIMENSION`: pixels a result may have on either side; 0 = no per-side
/// limit. Whatever it is, a result's area (canvas, frames counted) may not pass
/// `max_src_resolution`: what may not be decoded may not be produced by enlarging either.
pub const DEFAULT_MAX_RESULT_DIMENSION: u32 = 0;

/// `IMGPROXY_MAX_ANIMATION_FRAMES`: frames of an animation that are processed; 1 turns
/// animations into stills (their first frame).
pub const DEFAULT_MAX_ANIMATION_FRAMES: u32 = 1;
/// `IMGPROXY_MAX_ANIMATION_FRAME_RESOLUTION`: megapixels per frame of an animation; 0 = off
/// (then the whole animation counts against `IMGPROXY_MAX_SRC_RESOLUTION`).
pub const DEFAULT_MAX_ANIMATION_FRAME_RESOLUTION: f64 = 0.0;

/// `IMGPROXY_AUTO_WEBP` / `IMGPROXY_ENFORCE_WEBP` / `IMGPROXY_AUTO_AVIF` /
/// `IMGPROXY_ENFORCE_AVIF`: off, as in imgproxy, so a result never depends on `Accept` unless
/// asked to (and so needs no `Vary: Accept`).
pub const DEFAULT_FORMAT_NEGOTIATION: bool = false;

/// `IMGPROXY_WATERMARK_OPACITY`: opacity of the configured watermark, 0..=1.
pub const DEFAULT_WATERMARK_OPACITY: f64 = 1.0;

/// `IMGPROXY_MAX_JPEG_SCANS`: scans a progressive JPEG may have; 0 = no limit. Each scan is a
/// pass over every block of the image inside one libjpeg-turbo call that nothing can stop, so
/// thousands of empty scans are a CPU bomb of a few hundred kilobytes. Encoders write about
/// 10 (libjpeg's progression) to 20 (mozjpeg's optimised scans); 100 leaves room for any real
/// file.
pub const DEFAULT_MAX_JPEG_SCANS: u32 = 100;

/// `IMGPROXY_MAX_SVG_FILTER_MEGAPIXELS`: how much filter work an SVG render may need, in
/// millions of pixels read (for each filter primitive: the canvas it covers × the pixels it
/// reads per output pixel — `(2r+1)²` for `feMorphology`, the kernel for
/// `feConvolveMatrix`, the octaves for `feTurbulence`). resvg draws filters in one call that
/// nothing can stop; `feMorphology` with a large radius on a full-size canvas takes hours.
/// 2000 is a few seconds of one core and some forty full-canvas drop shadows at 50 MP.
pub const DEFAULT_MAX_SVG_FILTER_MEGAPIXELS: f64 = 2000.0;

/// How the engine behaves: the `IMGPROXY_*` settings that concern pixels.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Quality defaults (`IMGPROXY_QUALITY`, `IMGPROXY_FORMAT_QUALITY`, ...).
    pub defaults: Defaults,
    /// See [`DEFAULT_MAX_SRC_RESOLUTION`].
    pub max_src_resolution: f64,
    /// See [`DEFAULT_MAX_RESULT_DIMENSION`].
    pub max_result_dimension: u32,
    /// See [`DEFAULT_MAX_ANIMATION_FRAMES`].
    pub max_animation_frames: u32,
    /// See [`DEFAULT_MAX_ANIMATION_FRAME_RESOLUTION`].
    pub max_animation_frame_resolution: f64,
    /// `IMGPROXY_AUTO_WEBP`: WebP when no format is asked for and `Accept` has `image/webp`.
    pub auto_webp: bool,
    /// `IMGPROXY_ENFORCE_WEBP`: WebP for such clients even when a format is asked for.
    pub enforce_webp: bool,
    /// `IMGPROXY_AUTO_AVIF`, as `auto_webp` for `image/avif` (preferred over WebP).
    pub auto_avif: bool,
    /// `IMGPROXY_ENFORCE_AVIF`, as `enforce_webp` for `image/avif`.
    pub enforce_avif: bool,
    /// The encoded watermark image (`IMGPROXY_WATERMARK_DATA`/`_PATH`, read by the HTTP layer).
    pub watermark: Option<Arc<Vec<u8>>>,
    /// `IMGPROXY_PREFERRED_FORMATS` (default `jpeg,png,gif`): see [`format::choose`].
    pub preferred_formats: Vec<ImageFormat>,
    /// `IMGPROXY_WATERMARK_OPACITY` (default 1): multiplied with the URL's opacity.
    pub watermark_opacity: f64,
    /// See [`DEFAULT_MAX_JPEG_SCANS`].
    pub max_jpeg_scans: u32,
    /// See [`DEFAULT_MAX_SVG_FILTER_MEGAPIXELS`].
    pub max_svg_filter_megapixels: f64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            defaults: Defaults::default(),
            max_src_resolution: DEFAULT_MAX_SRC_RESOLUTION,
            max_result_dimension: DEFAULT_MAX_RESULT_DIMENSION,
            max_animation_frames: DEFAULT_MAX_ANIMATION_FRAMES,
            max_animation_frame_resolution: DEFAULT_MAX_ANIMATION_FRAME_RESOLUTION,
            auto_webp: DEFAULT_FORMAT_NEGOTIATION,
            enforce_webp: DEFAULT_FORMAT_NEGOTIATION,
            auto_avif: DEFAULT_FORMAT_NEGOTIATION,
            enforce_avif: DEFAULT_FORMAT_NEGOTIATION,
            watermark: None,
            preferred_formats: format::DEFAULT_PREFERRED_FORMATS.to_vec(),
            watermark_opacity: DEFAULT_WATERMARK_OPACITY,
            max_jpeg_scans: DEFAULT_MAX_JPEG_SCANS,
            max_svg_filter_megapixels: DEFAULT_MAX_SVG_FILTER_MEGAPIXELS,
        }
    }
}

impl EngineConfig {
    /// Whether results depend on the request's `Accept` header (and so need `Vary: Accept`).
    pub fn negotiates_format(&self) -> bool {
        self.auto_webp || self.enforce_webp || self.auto_avif || self.enforce_avif
    }
}

/// What [`probe()`] learns from a source's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceInfo {
    pub format: ImageFormat,
    /// As stored, before EXIF orientation.
    pub width: u32,
    pub height: u32,
    /// 1 for still images.
    pub frames: u32,
}

/// One processing request.
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    pub source: &'a [u8],
    pub options: &'a ProcessingOptions,
    /// Format from the URL extension or `format` option.
    pub format: Option<ImageFormat>,
    /// The request's Accept header, for auto/enforce WebP/AVIF.
    pub accept: Option<&'a str>,
    /// When to give up between stages (the request's `IMGPROXY_TIMEOUT`).
    pub deadline: Deadline,
}

/// An encoded result.
#[derive(Debug, Clone)]
pub struct Processed {
    pub bytes: Vec<u8>,
    pub format: ImageFormat,
}

/// Checks a watermark image (`IMGPROXY_WATERMARK_DATA`/`_PATH`) once, at start-up, so a bad one
/// stops the worker instead of failing every `watermark` request.
///
/// # Errors
/// Why the image can't be used.
pub fn check_watermark(data: &[u8]) -> Result<(), EngineError> {
    pipeline::decode_watermark(data, &EngineConfig::default()).map(drop)
}

/// Runs one job. CPU-bound and synchronous: the HTTP layer runs it on a blocking thread.
/// Enforces `max_src_resolution` and the animation limits from the headers (via [`probe()`])
/// before decoding pixels.
///
/// # Errors
/// See [`EngineError`]; [`EngineError::status`] maps each to the HTTP status.
pub fn process(job: &Job<'_>, config: &EngineConfig) -> Result<Processed, EngineError> {
    // Decoders are fed hostile input; a bug in one must cost one request, not the worker.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pipeline::run(job, config)))
        .unwrap_or_else(|panic| {
            let reason = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            Err(EngineError::Internal(reason))
        })
}
