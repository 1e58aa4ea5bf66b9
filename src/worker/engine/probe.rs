//! [`probe`]: format, dimensions and frame count from an image's headers, without
//! decoding pixels, so a decompression bomb is refused in microseconds.

use std::io::Cursor;

use super::{EngineError, SourceInfo};
use crate::worker::options::ImageFormat;

/// Recognises the format from magic bytes (never from the URL: sources lie).
pub fn sniff(source: &[u8]) -> Option<ImageFormat> {
    let starts = |magic: &[u8]| source.starts_with(magic);
    if starts(b"\xFF\xD8\xFF") {
        Some(ImageFormat::Jpeg)
    } else if starts(b"\x89PNG\r\n\x1a\n") {
        Some(ImageFormat::Png)
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        Some(ImageFormat::Gif)
    } else if starts(b"RIFF") && source.get(8..12) == Some(b"WEBP") {
        Some(ImageFormat::Webp)
    } else if source.get(4..8) == Some(b"ftyp") {
        isobmff_format(source)
    } else if starts(b"BM") && source.len() >= 26 {
        Some(ImageFormat::Bmp)
    } else if starts(b"II*\0") || starts(b"MM\0*") {
        Some(ImageFormat::Tiff)
    } else if starts(b"\0\0\x01\0") && source.len() >= 6 {
        Some(ImageFormat::Ico)
    } else if starts(b"\xFF\x0A") || starts(b"\0\0\0\x0CJXL \r\n\x87\n") {
        Some(ImageFormat::Jxl)
    } else if looks_like_svg(source) {
        Some(ImageFormat::Svg)
    } else {
        None
    }
}

/// AVIF and HEIC share the ISO base media container; the `ftyp` brands tell them apart.
fn isobmff_format(source: &[u8]) -> Option<ImageFormat> {
    let size = u32::from_be_bytes(source.get(0..4)?.try_into().ok()?) as usize;
    let ftyp = source.get(8..size.clamp(8, source.len().min(256)))?;
    let brands: Vec<&[u8]> = ftyp.chunks_exact(4).collect();
    if brands.iter().any(|b| *b == b"avif" || *b == b"avis") {
        Some(ImageFormat::Avif)
    } else if brands.iter().any(|b| {
        matches!(
            *b,
            b"heic" | b"heix" | b"hevc" | b"heim" | b"heis" | b"mif1"
        )
    }) {
        Some(ImageFormat::Heic)
    } else {
        None
    }
}

/// SVG is text: an optional BOM/XML prolog/comments, then an `<svg` element early on.
fn looks_like_svg(source: &[u8]) -> bool {
    let head = &source[..source.len().min(4096)];
    let Ok(text) = std::str::from_utf8(head).or_else(|e| {
        // A multi-byte character may be cut at the 4 KiB boundary.
        std::str::from_utf8(&head[..e.valid_up_to()])
    }) else {
        return false;
    };
    let text = text.trim_start_matches('\u{feff}').trim_start();
    text.starts_with('<') && text.contains("<svg")
}

/// Reads only headers: format, dimensions, frame count. Cheap; used to refuse bombs
/// before decoding. SVG has no header: its size needs the document parsed (no pixels are
/// drawn), see [`super::svg::dimensions`].
///
/// # Errors
/// [`EngineError::UnsupportedSource`] for unknown bytes, [`EngineError::Corrupt`] when the
/// headers of a known format can't be read.
pub fn probe(source: &[u8]) -> Result<SourceInfo, EngineError> {
    let format = sniff(source).ok_or(EngineError::UnsupportedSource)?;
    let (width, height) = match format {
        ImageFormat::Avif => super::avif::dimensions(source)?,
        ImageFormat::Svg => super::svg::dimensions(source)?,
        ImageFormat::Heic | ImageFormat::Jxl => {
            return Err(EngineError::UnsupportedVariant {
                format,
                reason: "no decoder for this format".into(),
            });
        }
        _ => raster_dimensions(source, format)?,
    };
    let frames = match format {
        ImageFormat::Gif => gif_frames(source)?,
        ImageFormat::Webp => webp_frames(source),
        _ => 1,
    };
    if width == 0 || height == 0 {
        return Err(EngineError::corrupt(format, "zero width or height"));
    }
    Ok(SourceInfo {
        format,
        width,
        height,
        frames,
    })
}

/// `image` reads only the headers in `into_dimensions` for every raster format we use it for.
fn raster_dimensions(source: &[u8], format: ImageFormat) -> Result<(u32, u32), EngineError> {
    let image_format =
        super::decode::image_crate_format(format).ok_or(EngineError::UnsupportedSource)?;
    image::ImageReader::with_format(Cursor::new(source), image_format)
        .into_dimensions()
        .map_err(|e| EngineError::corrupt(format, e))
}

/// Counts frames without decompressing them (LZW data is skipped, not decoded).
fn gif_frames(source: &[u8]) -> Result<u32, EngineError> {
    let mut options = gif::DecodeOptions::new();
    options.skip_frame_decoding(true);
    let mut decoder = options
        .read_info(Cursor::new(source))
        .map_err(|e| EngineError::corrupt(ImageFormat::Gif, e))?;
    let mut frames = 0u32;
    loop {
        match decoder.read_next_frame() {
            Ok(Some(_)) => frames = frames.saturating_add(1),
            Ok(None) => break,
            // A truncated tail still leaves the frames before it usable, as in browsers.
            Err(_) if frames > 0 => break,
            Err(e) => return Err(EngineError::corrupt(ImageFormat::Gif, e)),
        }
    }
    Ok(frames.max(1))
}

/// Counts `ANMF` chunks of an animated WebP by walking the RIFF chunk list.
fn webp_frames(source: &[u8]) -> u32 {
    let mut at = 12usize;
    let mut frames = 0u32;
    while let Some(header) = source.get(at..at + 8) {
        let size = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if &header[0..4] == b"ANMF" {
            frames = frames.saturating_add(1);
        }
        // Chunks are padded to an even size.
        at = at
            .saturating_add(8)
            .saturating_add(size)
            .saturating_add(size & 1);
    }
    frames.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_magic_bytes() {
        assert_eq!(sniff(b"\xFF\xD8\xFF\xE0rest"), Some(ImageFormat::Jpeg));
        assert_eq!(sniff(b"GIF89a...."), Some(ImageFormat::Gif));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(ImageFormat::Webp));
        assert_eq!(
            sniff(b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf"),
            Some(ImageFormat::Avif)
        );
        assert_eq!(
            sniff(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic"),
            Some(ImageFormat::Heic)
        );
        assert_eq!(
            sniff(b"\xef\xbb\xbf<?xml version=\"1.0\"?>\n<svg xmlns=\"\"/>"),
            Some(ImageFormat::Svg)
        );
        assert_eq!(sniff(b"<html><body>not an image</body></html>"), None);
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn unknown_bytes_are_unsupported() {
        assert!(matches!(
            probe(b"hello world"),
            Err(EngineError::UnsupportedSource)
        ));
    }
}
