//! Pixels → bytes in the result format: libjpeg-turbo for JPEG, libwebp for WebP, libaom
//! (through libavif) for AVIF, the `image` crate's encoders for PNG, GIF, BMP, TIFF, ICO.
//! Also `max_bytes`: re-encode at lower quality until the result fits, as imgproxy does.
//! The EXIF block [`super::exif_out`] chose goes into JPEG, PNG and WebP results (counted
//! against `max_bytes`, as in imgproxy).

use std::io::Cursor;
use std::time::Duration;

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{DynamicImage, ImageEncoder};

use super::EngineError;
use crate::worker::options::ImageFormat;

/// libaom speed for AVIF: 9 is the on-the-fly class (~75 ms per megapixel on one core);
/// imgproxy's default (IMGPROXY_AVIF_SPEED=9) too.
pub const DEFAULT_AVIF_SPEED: u8 = 9;

/// imgproxy never goes below this quality when shrinking towards `max_bytes`.
const MIN_MAX_BYTES_QUALITY: u8 = 10;

/// What the encoder needs besides pixels.
pub struct EncodeParams {
    pub format: ImageFormat,
    /// 1..=100.
    pub quality: u8,
    /// Animation timing, one per frame; empty for stills.
    pub delays: Vec<Duration>,
    /// 0 = forever.
    pub loop_count: u16,
    /// TIFF-structured EXIF for the result (see [`super::exif_out`]); ignored by formats
    /// that don't carry it.
    pub exif: Option<Vec<u8>>,
}

/// Whether `format` has a quality knob (and so honours `max_bytes`).
pub fn supports_quality(format: ImageFormat) -> bool {
    matches!(
        format,
        ImageFormat::Jpeg | ImageFormat::Webp | ImageFormat::Avif
    )
}

/// Whether we can write `format` at all.
pub fn can_save(format: ImageFormat) -> bool {
    matches!(
        format,
        ImageFormat::Jpeg
            | ImageFormat::Png
            | ImageFormat::Webp
            | ImageFormat::Avif
            | ImageFormat::Gif
            | ImageFormat::Bmp
            | ImageFormat::Tiff
            | ImageFormat::Ico
    )
}

/// Encodes, then for `max_bytes` > 0 lowers the quality the way imgproxy does (×0.25, ×0.5
/// or ×0.75 depending on how far off the size is) until it fits or quality hits 10.
///
/// # Errors
/// [`EngineError::Encode`] when an encoder fails, [`EngineError::UnsupportedOutput`] for a
/// format we can't write.
pub fn encode_fitting(
    frames: &[DynamicImage],
    params: &EncodeParams,
    max_bytes: u64,
) -> Result<Vec<u8>, EngineError> {
    let mut quality = params.quality;
    loop {
        let bytes = encode(frames, params.format, quality, params)?;
        let len = bytes.len() as u64;
        if max_bytes == 0
            || !supports_quality(params.format)
            || len <= max_bytes
            || quality <= MIN_MAX_BYTES_QUALITY
        {
            return Ok(bytes);
        }
        let delta = len as f64 / max_bytes as f64;
        let factor = if delta > 3.0 {
            0.25
        } else if delta > 1.5 {
            0.5
        } else {
            0.75
        };
        // Truncation as in imgproxy; never 0, which encoders treat specially.
        quality = ((f64::from(quality) * factor) as u8).max(1);
    }
}

fn encode(
    frames: &[DynamicImage],
    format: ImageFormat,
    quality: u8,
    params: &EncodeParams,
) -> Result<Vec<u8>, EngineError> {
    let first = frames
        .first()
        .ok_or_else(|| EngineError::encode(format, "no frames"))?;
    let exif = params.exif.as_deref();
    match format {
        ImageFormat::Jpeg => {
            let bytes = jpeg(first, quality)?;
            Ok(match exif {
                Some(exif) => super::embed::jpeg(bytes, exif),
                None => bytes,
            })
        }
        ImageFormat::Webp => {
            let bytes = if frames.len() > 1 {
                webp_animated(frames, quality, params)?
            } else {
                webp(first, quality)?
            };
            Ok(exif
                .and_then(|exif| super::embed::webp(&bytes, exif))
                .unwrap_or(bytes))
        }
        ImageFormat::Avif => avif(first, quality),
        ImageFormat::Png => png(first, exif),
        ImageFormat::Gif => gif(frames, params),
        ImageFormat::Bmp | ImageFormat::Tiff | ImageFormat::Ico => with_image_crate(first, format),
        other => Err(EngineError::UnsupportedOutput(other)),
    }
}

fn jpeg(image: &DynamicImage, quality: u8) -> Result<Vec<u8>, EngineError> {
    let err = |e: turbojpeg::Error| EngineError::encode(ImageFormat::Jpeg, e);
    // JPEG has no alpha: callers flatten first; this is the last line of defence.
    let rgb = match image {
        DynamicImage::ImageRgb8(rgb) => std::borrow::Cow::Borrowed(rgb),
        other => std::borrow::Cow::Owned(other.to_rgb8()),
    };
    let mut compressor = turbojpeg::Compressor::new().map_err(err)?;
    compressor
        .set_quality(i32::from(quality.clamp(1, 100)))
        .map_err(err)?;
    // libvips' default chroma subsampling: 4:2:0 below quality 90, 4:4:4 from 90 up.
    compressor
        .set_subsamp(if quality >= 90 {
            turbojpeg::Subsamp::None
        } else {
            turbojpeg::Subsamp::Sub2x2
        })
        .map_err(err)?;
    // imgproxy always asks libjpeg for optimised Huffman tables: ~5% smaller for little time.
    compressor.set_optimize(true).map_err(err)?;
    let (width, height) = (rgb.width() as usize, rgb.height() as usize);
    let image = turbojpeg::Image {
        pixels: rgb.as_raw().as_slice(),
        width,
        pitch: width * 3,
        height,
        format: turbojpeg::PixelFormat::RGB,
    };
    compressor.compress_to_vec(image).map_err(err)
}

/// The libwebp configuration imgproxy uses: lossy at `quality`, default method (4).
fn webp_config(quality: u8) -> Result<webp::WebPConfig, EngineError> {
    let mut config = webp::WebPConfig::new()
        .map_err(|()| EngineError::encode(ImageFormat::Webp, "libwebp version mismatch"))?;
    config.quality = f32::from(quality.clamp(1, 100));
    config.lossless = 0;
    Ok(config)
}

fn webp(image: &DynamicImage, quality: u8) -> Result<Vec<u8>, EngineError> {
    let (layout, raw, width, height) = webp_layout(image);
    let config = webp_config(quality)?;
    let encoder = webp::Encoder::new(raw, layout, width, height);
    let memory = encoder
        .encode_advanced(&config)
        .map_err(|e| EngineError::encode(ImageFormat::Webp, format!("{e:?}")))?;
    Ok(memory.to_vec())
}

fn webp_layout(image: &DynamicImage) -> (webp::PixelLayout, &[u8], u32, u32) {
    match image {
        DynamicImage::ImageRgba8(rgba) => (
            webp::PixelLayout::Rgba,
            rgba.as_raw(),
            rgba.width(),
            rgba.height(),
        ),
        DynamicImage::ImageRgb8(rgb) => (
            webp::PixelLayout::Rgb,
            rgb.as_raw(),
            rgb.width(),
            rgb.height(),
        ),
        // Decode normalises every frame to RGB8/RGBA8.
        _ => (webp::PixelLayout::Rgb, &[], 0, 0),
    }
}

fn webp_animated(
    frames: &[DynamicImage],
    quality: u8,
    params: &EncodeParams,
) -> Result<Vec<u8>, EngineError> {
    let (width, height) = (frames[0].width(), frames[0].height());
    let config = webp_config(quality)?;
    let mut encoder = webp::AnimEncoder::new(width, height, &config);
    encoder.set_loop_count(i32::from(params.loop_count));
    let mut timestamp = 0i32;
    for (i, frame) in frames.iter().enumerate() {
        let (layout, raw, w, h) = webp_layout(frame);
        if (w, h) != (width, height) {
            return Err(EngineError::encode(
                ImageFormat::Webp,
                "frames differ in size",
            ));
        }
        encoder.add_frame(webp::AnimFrame::new(raw, layout, w, h, timestamp, None));
        let delay = params.delays.get(i).copied().unwrap_or(DEFAULT_FRAME_DELAY);
        timestamp = timestamp.saturating_add(i32::try_from(delay.as_millis()).unwrap_or(i32::MAX));
    }
    let memory = encoder
        .try_encode()
        .map_err(|e| EngineError::encode(ImageFormat::Webp, format!("{e:?}")))?;
    let mut bytes = memory.to_vec();
    let last = params
        .delays
        .get(frames.len() - 1)
        .copied()
        .unwrap_or(DEFAULT_FRAME_DELAY);
    set_last_frame_duration(&mut bytes, last);
    Ok(bytes)
}

/// The `webp` crate closes animations with an end timestamp of 0, so libwebp has to guess
/// the last frame's duration; write the real one into the last `ANMF` chunk (bytes 12..15
/// of its payload, 24-bit little-endian milliseconds).
fn set_last_frame_duration(webp: &mut [u8], duration: Duration) {
    let mut at = 12usize;
    let mut last_anmf = None;
    while let Some(header) = webp.get(at..at + 8) {
        let size = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if &header[0..4] == b"ANMF" {
            last_anmf = Some(at + 8);
        }
        at = at
            .saturating_add(8)
            .saturating_add(size)
            .saturating_add(size & 1);
    }
    let millis = u32::try_from(duration.as_millis())
        .unwrap_or(u32::MAX)
        .min(0xFF_FFFF);
    if let Some(field) = last_anmf.and_then(|payload| webp.get_mut(payload + 12..payload + 15)) {
        field.copy_from_slice(&millis.to_le_bytes()[..3]);
    }
}

/// imgproxy's frame delay when the source has none.
pub const DEFAULT_FRAME_DELAY: Duration = Duration::from_millis(40);

fn avif(image: &DynamicImage, quality: u8) -> Result<Vec<u8>, EngineError> {
    let err = |e: libavif::Error| EngineError::encode(ImageFormat::Avif, format!("{e:?}"));
    let raw: &[u8] = match image {
        DynamicImage::ImageRgb8(rgb) => rgb.as_raw(),
        DynamicImage::ImageRgba8(rgba) => rgba.as_raw(),
        _ => {
            return Err(EngineError::encode(
                ImageFormat::Avif,
                "unexpected pixel type",
            ));
        }
    };
    let pixels = libavif::RgbPixels::new(image.width(), image.height(), raw).map_err(err)?;
    // 4:2:0 like imgproxy's default (IMGPROXY_AVIF_SUBSAMPLE=auto below quality 90).
    let yuv = if quality >= 90 {
        libavif::YuvFormat::Yuv444
    } else {
        libavif::YuvFormat::Yuv420
    };
    let avif_image = pixels.to_image(yuv);
    let mut encoder = libavif::Encoder::new();
    encoder
        .set_quality(quality.clamp(1, 100))
        .set_alpha_quality(quality.clamp(1, 100))
        .set_speed(DEFAULT_AVIF_SPEED)
        .set_max_threads(1);
    let data = encoder.encode(&avif_image).map_err(err)?;
    Ok(data.to_vec())
}

fn png(image: &DynamicImage, exif: Option<&[u8]>) -> Result<Vec<u8>, EngineError> {
    let mut out = Vec::new();
    // zlib level 6 with adaptive filtering is what libvips writes for imgproxy.
    let mut encoder =
        PngEncoder::new_with_quality(&mut out, CompressionType::Default, FilterType::Adaptive);
    if let Some(exif) = exif {
        // An `eXIf` chunk before the image data. The PNG encoder accepts EXIF; were it
        // ever refused, the result would go out without (metadata never costs a result).
        let _ = encoder.set_exif_metadata(exif.to_vec());
    }
    encoder
        .write_image(
            image.as_bytes(),
            image.width(),
            image.height(),
            image.color().into(),
        )
        .map_err(|e| EngineError::encode(ImageFormat::Png, e))?;
    Ok(out)
}

fn gif(frames: &[DynamicImage], params: &EncodeParams) -> Result<Vec<u8>, EngineError> {
    let err = |e: image::ImageError| EngineError::encode(ImageFormat::Gif, e);
    let mut out = Vec::new();
    {
        let mut encoder =
            image::codecs::gif::GifEncoder::new_with_speed(&mut out, GIF_QUANTIZER_SPEED);
        let repeat = match params.loop_count {
            0 => image::codecs::gif::Repeat::Infinite,
            n => image::codecs::gif::Repeat::Finite(n),
        };
        encoder.set_repeat(repeat).map_err(err)?;
        for (i, frame) in frames.iter().enumerate() {
            let delay = params.delays.get(i).copied().unwrap_or(DEFAULT_FRAME_DELAY);
            let delay = image::Delay::from_saturating_duration(delay);
            encoder
                .encode_frame(image::Frame::from_parts(frame.to_rgba8(), 0, 0, delay))
                .map_err(err)?;
        }
    }
    Ok(out)
}

/// NeuQuant sampling factor (1 best … 30 fastest): 10 is the `gif` crate's own balance.
const GIF_QUANTIZER_SPEED: i32 = 10;

fn with_image_crate(image: &DynamicImage, format: ImageFormat) -> Result<Vec<u8>, EngineError> {
    let target =
        super::decode::image_crate_format(format).ok_or(EngineError::UnsupportedOutput(format))?;
    let mut out = Cursor::new(Vec::new());
    // ICO stores PNGs that readers expect to be RGBA.
    let rgba;
    let image = if format == ImageFormat::Ico {
        rgba = DynamicImage::ImageRgba8(image.to_rgba8());
        &rgba
    } else {
        image
    };
    image
        .write_to(&mut out, target)
        .map_err(|e| EngineError::encode(format, e))?;
    Ok(out.into_inner())
}
