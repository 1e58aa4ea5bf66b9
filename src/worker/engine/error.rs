//! [`EngineError`]: why a source could not be turned into a result, and the HTTP status
//! imgproxy answers with for each reason.

use crate::worker::options::ImageFormat;

/// Everything that can stop [`process`](super::process) or [`probe`](fn@super::probe).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The source's resolution (all frames counted) exceeds `IMGPROXY_MAX_SRC_RESOLUTION`.
    #[error("source image resolution is too big: {megapixels:.1} MP > {limit} MP")]
    SourceTooBig { megapixels: f64, limit: f64 },
    /// The result would pass `IMGPROXY_MAX_RESULT_DIMENSION` or, in area,
    /// `IMGPROXY_MAX_SRC_RESOLUTION` (found from the plan, before any pixel is made).
    #[error("result image is too big: {width}x{height} × {frames} frame(s) ({limit})")]
    ResultTooBig {
        width: u64,
        height: u64,
        frames: u32,
        limit: String,
    },
    /// One frame of an animation exceeds `IMGPROXY_MAX_ANIMATION_FRAME_RESOLUTION`.
    #[error("source image frame resolution is too big: {megapixels:.1} MP > {limit} MP")]
    FrameTooBig { megapixels: f64, limit: f64 },
    /// More frames than the engine agrees to hold at once (a hard cap on top of
    /// `IMGPROXY_MAX_ANIMATION_FRAMES`, which only truncates).
    #[error("source image has too many frames: {frames}")]
    TooManyFrames { frames: u32 },
    /// The bytes are not an image format we can read.
    #[error("unsupported source image format")]
    UnsupportedSource,
    /// We recognise the format but cannot read this variant of it.
    #[error("unsupported {format} variant: {reason}")]
    UnsupportedVariant { format: ImageFormat, reason: String },
    /// The requested result format cannot be written.
    #[error("can't save images as {0}")]
    UnsupportedOutput(ImageFormat),
    /// The source claims to be an image but its data is broken or truncated.
    #[error("corrupt {format} image: {reason}")]
    Corrupt { format: ImageFormat, reason: String },
    /// Our encoder failed on pixels we produced: our bug, not the source's.
    #[error("can't encode {format}: {reason}")]
    Encode { format: ImageFormat, reason: String },
    /// A bug of ours surfaced as a panic inside the pipeline (caught, never propagated).
    #[error("internal processing error: {0}")]
    Internal(String),
    /// The geometry asked for an image with no pixels or an absurd size.
    #[error("invalid result size {width}x{height}")]
    InvalidSize { width: u64, height: u64 },
    /// Rendering the SVG's filters would take more work than
    /// `IMGPROXY_MAX_SVG_FILTER_MEGAPIXELS` allows.
    #[error(
        "SVG filters need {megapixels:.0} MP of work > IMGPROXY_MAX_SVG_FILTER_MEGAPIXELS {limit}"
    )]
    SvgTooComplex { megapixels: f64, limit: f64 },
    /// The request's deadline (`IMGPROXY_TIMEOUT`) passed; the job stopped before `stage`.
    #[error("the request timed out before {stage} (IMGPROXY_TIMEOUT)")]
    TimedOut { stage: &'static str },
}

impl EngineError {
    /// The status imgproxy answers with: 422 for anything wrong with the source or the
    /// request's image, 500 for our own encoder failures.
    pub fn status(&self) -> u16 {
        match self {
            Self::Encode { .. } | Self::Internal(_) => 500,
            // Nobody is waiting by then; the HTTP layer answered 503 itself.
            Self::TimedOut { .. } => 503,
            Self::SourceTooBig { .. }
            | Self::ResultTooBig { .. }
            | Self::FrameTooBig { .. }
            | Self::TooManyFrames { .. }
            | Self::UnsupportedSource
            | Self::UnsupportedVariant { .. }
            | Self::UnsupportedOutput(_)
            | Self::Corrupt { .. }
            | Self::InvalidSize { .. }
            | Self::SvgTooComplex { .. } => 422,
        }
    }

    pub(crate) fn corrupt(format: ImageFormat, reason: impl ToString) -> Self {
        Self::Corrupt {
            format,
            reason: reason.to_string(),
        }
    }

    pub(crate) fn encode(format: ImageFormat, reason: impl ToString) -> Self {
        Self::Encode {
            format,
            reason: reason.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_imgproxy() {
        assert_eq!(EngineError::UnsupportedSource.status(), 422);
        assert_eq!(
            EngineError::SourceTooBig {
                megapixels: 60.0,
                limit: 50.0
            }
            .status(),
            422
        );
        assert_eq!(EngineError::corrupt(ImageFormat::Png, "eof").status(), 422);
        assert_eq!(EngineError::encode(ImageFormat::Webp, "oom").status(), 500);
    }
}
