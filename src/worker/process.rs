//! The CPU step of a request, run on a blocking thread: pass-through for `raw` (and, until the
//! engine lands, for everything).

use bytes::Bytes;

use super::fetch::Fetched;
use super::options::{ImageFormat, ProcessingOptions};

/// What the processing step gets.
pub struct Input {
    pub source: Fetched,
    pub options: ProcessingOptions,
    pub format: Option<ImageFormat>,
    pub accept: Option<String>,
}

/// An encoded result and how to label it.
pub struct Output {
    pub bytes: Bytes,
    pub content_type: String,
    /// For `Content-Disposition`; empty when the format is unknown (a `raw` non-image).
    pub extension: &'static str,
}

/// Why processing failed, with imgproxy's status.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ProcessError {
    pub status: u16,
    pub message: String,
}

/// Runs the step.
///
/// # Errors
/// See [`ProcessError`].
pub fn run(input: Input) -> Result<Output, ProcessError> {
    Ok(Output {
        content_type: input
            .source
            .content_type
            .unwrap_or_else(|| "application/octet-stream".to_owned()),
        bytes: input.source.bytes,
        extension: "",
    })
}
