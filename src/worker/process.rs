//! The CPU step of a request, run on a blocking thread: the engine's header probe (format,
//! size — the decompression-bomb check), then `raw` and skip-processing pass-through, or the
//! engine itself.

use bytes::Bytes;

use super::engine::{self, Deadline, EngineConfig, EngineError, Job};
use super::fetch::Fetched;
use super::options::{ImageFormat, ProcessingOptions};

/// What the processing step gets.
pub struct Input {
    pub source: Fetched,
    pub options: ProcessingOptions,
    /// The URL's extension or `format` option; `None` lets the engine choose.
    pub format: Option<ImageFormat>,
    /// The request's `Accept`, for auto/enforce WebP/AVIF.
    pub accept: Option<String>,
    /// When the request stops waiting (see [`Deadline`]).
    pub deadline: Deadline,
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

impl From<EngineError> for ProcessError {
    fn from(e: EngineError) -> Self {
        ProcessError {
            status: e.status(),
            message: e.to_string(),
        }
    }
}

/// Runs the step.
///
/// # Errors
/// See [`ProcessError`]: the engine's errors with their statuses.
pub fn run(input: Input, config: &EngineConfig) -> Result<Output, ProcessError> {
    let Input {
        source,
        options,
        format,
        accept,
        deadline,
    } = input;
    if options.raw {
        // As imgproxy: the source as-is, no checks; labelled by its real format if we know it.
        let format = engine::probe(&source.bytes).ok().map(|info| info.format);
        return Ok(pass_through(source, format));
    }
    let info = engine::probe(&source.bytes)?;
    // imgproxy checks one frame's size at download time, whatever happens next; the engine
    // checks again with the frames it will load.
    let megapixels = f64::from(info.width) * f64::from(info.height) / 1_000_000.0;
    if megapixels > config.max_src_resolution {
        return Err(EngineError::SourceTooBig {
            megapixels,
            limit: config.max_src_resolution,
        }
        .into());
    }
    let skip = (format.is_none() || format == Some(info.format))
        && options.skip_processing.contains(&info.format);
    // imgproxy sanitises SVG even when skipping processing; the engine's SVG result is
    // exactly that (see engine::svg).
    if skip && info.format != ImageFormat::Svg {
        return Ok(pass_through(source, Some(info.format)));
    }
    let job = Job {
        source: &source.bytes,
        options: &options,
        format,
        accept: accept.as_deref(),
        deadline,
    };
    let processed = engine::process(&job, config)?;
    Ok(Output {
        bytes: Bytes::from(processed.bytes),
        content_type: processed.format.mime_type().to_owned(),
        extension: processed.format.extension(),
    })
}

fn pass_through(source: Fetched, format: Option<ImageFormat>) -> Output {
    let content_type = match format {
        Some(f) => f.mime_type().to_owned(),
        None => source
            .content_type
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "application/octet-stream".to_owned()),
    };
    Output {
        bytes: source.bytes,
        content_type,
        extension: format.map_or("", ImageFormat::extension),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::FromVars;
    use crate::worker::config::WorkerConfig;

    /// A 68-byte PNG whose header claims 100000 × 100000 pixels.
    const BOMB_PNG_HEX: &str = "89504e470d0a1a0a0000000d49484452000186a0000186a0080200000027309c9f0000000b49444154789c6360800100000a00017f80745e0000000049454e44ae426082";

    fn bomb() -> Vec<u8> {
        (0..BOMB_PNG_HEX.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&BOMB_PNG_HEX[i..i + 2], 16).unwrap())
            .collect()
    }

    fn input(bytes: Vec<u8>, options: ProcessingOptions) -> Input {
        Input {
            source: Fetched {
                bytes: Bytes::from(bytes),
                content_type: Some("text/plain".into()),
            },
            options,
            format: None,
            accept: None,
            deadline: Deadline::NONE,
        }
    }

    #[test]
    fn bombs_are_refused_before_decoding_even_when_skipped() {
        let config = WorkerConfig::from_vars(Vec::new()).unwrap();
        let engine = &config.processing;
        let mut options = ProcessingOptions::new(&config.parser.defaults);
        let err = run(input(bomb(), options.clone()), engine).err().unwrap();
        assert_eq!(err.status, 422);
        options.skip_processing = vec![ImageFormat::Png];
        let err = run(input(bomb(), options.clone()), engine).err().unwrap();
        assert_eq!(err.status, 422);
        // `raw` streams the source untouched, as imgproxy does, labelled by its real format.
        options.raw = true;
        let out = run(input(bomb(), options), engine).ok().unwrap();
        assert_eq!(out.content_type, "image/png");
        assert_eq!(out.bytes, bomb());
    }
}
