//! Source bytes → pixels: one RGB(A) 8-bit image per frame, plus what later stages need
//! from the file (ICC profile, EXIF orientation, animation timing). JPEG goes through
//! libjpeg-turbo and still WebP through libwebp, both with shrink-on-load; everything else
//! through the `image` crate's decoders.

use std::io::Cursor;
use std::time::Duration;

use image::{AnimationDecoder, DynamicImage, ImageDecoder, ImageReader, Limits};

use super::{EngineConfig, EngineError, SourceInfo};
use crate::worker::options::ImageFormat;

/// A decoded source.
pub struct Decoded {
    /// At least one frame; all frames have the same size.
    pub frames: Vec<DynamicImage>,
    /// Per-frame display time, one entry per frame (empty for still images).
    pub delays: Vec<Duration>,
    /// Loop count of an animation; 0 = forever.
    pub loop_count: u16,
    /// The embedded ICC profile, if any.
    pub icc: Option<Vec<u8>>,
    /// EXIF orientation 1..=8 (1 when absent or unreadable).
    pub orientation: u8,
    /// The source's EXIF as a TIFF structure, unparsed: [`super::exif_out`] decides what
    /// the result keeps of it. None also when the decoder doesn't expose it (AVIF, GIF,
    /// TIFF, BMP, ICO sources).
    pub exif: Option<Vec<u8>>,
    /// The source has an alpha channel (even if every pixel is opaque): imgproxy picks
    /// the result format from this.
    pub has_alpha: bool,
}

impl Decoded {
    /// A still image with nothing else from the file (no ICC profile, no orientation), as
    /// rendered sources give.
    pub fn still(image: DynamicImage, has_alpha: bool) -> Self {
        Self {
            frames: vec![image],
            delays: Vec::new(),
            loop_count: 0,
            icc: None,
            orientation: 1,
            exif: None,
            has_alpha,
        }
    }

    /// A still image with the metadata its file carried; the orientation comes from the EXIF.
    fn with_metadata(image: DynamicImage, Embedded { icc, exif }: Embedded) -> Self {
        Self {
            frames: vec![image],
            delays: Vec::new(),
            loop_count: 0,
            icc,
            orientation: exif.as_deref().map_or(1, super::metadata::orientation),
            exif,
            has_alpha: false,
        }
    }
}

/// The `image` crate's name for a format we decode with it.
pub(crate) fn image_crate_format(format: ImageFormat) -> Option<image::ImageFormat> {
    Some(match format {
        ImageFormat::Jpeg => image::ImageFormat::Jpeg,
        ImageFormat::Png => image::ImageFormat::Png,
        ImageFormat::Gif => image::ImageFormat::Gif,
        ImageFormat::Webp => image::ImageFormat::WebP,
        ImageFormat::Bmp => image::ImageFormat::Bmp,
        ImageFormat::Tiff => image::ImageFormat::Tiff,
        ImageFormat::Ico => image::ImageFormat::Ico,
        _ => return None,
    })
}

/// Decodes `source` (already probed as `info`). `preshrink` (≥ 1, see
/// [`super::geometry::preshrink`]) lets JPEG and still WebP decoders deliver a smaller
/// image; `max_frames` > 1 keeps up to that many frames of an animation.
///
/// Every decoder compares the size its own header parser finds with `info`'s before it
/// allocates pixels: the resolution limit was checked against `info`, so a file whose
/// headers disagree (a decoy AVIF `ispe`, a JPEG whose first frame header lies) is refused.
///
/// # Errors
/// [`EngineError::Corrupt`] for broken data or disagreeing sizes,
/// [`EngineError::UnsupportedSource`] for formats without a decoder.
pub fn decode(
    source: &[u8],
    info: &SourceInfo,
    preshrink: f64,
    max_frames: u32,
    config: &EngineConfig,
) -> Result<Decoded, EngineError> {
    let format = info.format;
    let probed = (info.width, info.height);
    let mut decoded = match format {
        ImageFormat::Jpeg => decode_jpeg(
            source,
            super::geometry::jpeg_shrink(preshrink),
            config.max_jpeg_scans,
            probed,
        )?,
        ImageFormat::Webp if info.frames <= 1 => decode_webp(source, info, preshrink)?,
        ImageFormat::Avif => super::avif::decode(source, probed, config)?,
        ImageFormat::Gif | ImageFormat::Webp if max_frames > 1 && info.frames > 1 => {
            decode_animation(source, format, max_frames, probed)?
        }
        _ => decode_still(source, format, probed)?,
    };
    decoded.has_alpha = decoded.frames[0].color().has_alpha();
    // Animation frames are RGBA already and must stay alike; stills are normalised.
    if let [still] = decoded.frames.as_mut_slice() {
        normalise(still);
    }
    Ok(decoded)
}

/// Whether a decoder's `found` size is the `probed` one the limits were checked against.
///
/// # Errors
/// [`EngineError::Corrupt`] naming both sizes.
pub(crate) fn check_size<W, H>(
    format: ImageFormat,
    found: (W, H),
    probed: (u32, u32),
) -> Result<(), EngineError>
where
    W: TryInto<u32> + Copy + std::fmt::Display,
    H: TryInto<u32> + Copy + std::fmt::Display,
{
    let same =
        found.0.try_into().ok() == Some(probed.0) && found.1.try_into().ok() == Some(probed.1);
    if same {
        Ok(())
    } else {
        Err(EngineError::corrupt(
            format,
            format!(
                "the image data is {}x{}, its header said {}x{}",
                found.0, found.1, probed.0, probed.1
            ),
        ))
    }
}

fn decode_jpeg(
    source: &[u8],
    shrink: u32,
    max_scans: u32,
    probed: (u32, u32),
) -> Result<Decoded, EngineError> {
    let segments = super::jpeg::segments(source);
    let orientation = segments.exif.map_or(1, super::metadata::orientation);
    let image = match super::jpeg::decode(source, shrink, max_scans, probed)? {
        Some(image) => image,
        // CMYK/YCCK: the `image` crate converts them to RGB; no shrink-on-load there, and no
        // scan limit of its own, so the scans are counted first.
        None => {
            let scans = super::jpeg::count_scans(source);
            if max_scans > 0 && scans > max_scans as usize {
                return Err(EngineError::corrupt(
                    ImageFormat::Jpeg,
                    format!("{scans} scans, more than IMGPROXY_MAX_JPEG_SCANS ({max_scans})"),
                ));
            }
            decode_with_image_crate(source, ImageFormat::Jpeg, probed)?.0
        }
    };
    Ok(Decoded {
        frames: vec![image],
        delays: Vec::new(),
        loop_count: 0,
        icc: segments.icc,
        orientation,
        exif: segments.exif.map(<[u8]>::to_vec),
        has_alpha: false,
    })
}

fn decode_webp(source: &[u8], info: &SourceInfo, preshrink: f64) -> Result<Decoded, EngineError> {
    let image = super::webp::decode(source, preshrink, (info.width, info.height))?;
    Ok(Decoded::with_metadata(image, webp_metadata(source)))
}

/// The ICC profile and EXIF of a WebP, read from its container chunks without decoding
/// pixels. Broken metadata counts as absent.
pub(crate) fn webp_metadata(source: &[u8]) -> Embedded {
    let Ok(mut decoder) = image::codecs::webp::WebPDecoder::new(Cursor::new(source)) else {
        return Embedded {
            icc: None,
            exif: None,
        };
    };
    Embedded {
        icc: decoder.icc_profile().ok().flatten(),
        exif: decoder.exif_metadata().ok().flatten(),
    }
}

fn decode_still(
    source: &[u8],
    format: ImageFormat,
    probed: (u32, u32),
) -> Result<Decoded, EngineError> {
    let (image, embedded) = decode_with_image_crate(source, format, probed)?;
    Ok(Decoded::with_metadata(image, embedded))
}

fn reader(source: &[u8], format: ImageFormat) -> Result<ImageReader<Cursor<&[u8]>>, EngineError> {
    let image_format = image_crate_format(format).ok_or(EngineError::UnsupportedSource)?;
    let mut reader = ImageReader::with_format(Cursor::new(source), image_format);
    // Resolution was checked by the caller; this only guards against headers that lie.
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(limits);
    Ok(reader)
}

/// The metadata blocks a decoder found besides the pixels.
pub(crate) struct Embedded {
    pub icc: Option<Vec<u8>>,
    pub exif: Option<Vec<u8>>,
}

/// The `image` crate's allocation cap per decode: 50 MP × 4 channels × 16 bit, with slack.
const MAX_DECODE_ALLOC: u64 = 512 * 1024 * 1024;

fn decode_with_image_crate(
    source: &[u8],
    format: ImageFormat,
    probed: (u32, u32),
) -> Result<(DynamicImage, Embedded), EngineError> {
    let corrupt = |e: image::ImageError| EngineError::corrupt(format, e);
    let mut decoder = reader(source, format)?.into_decoder().map_err(corrupt)?;
    check_size(format, decoder.dimensions(), probed)?;
    // Broken metadata must not cost the image: browsers show it too.
    let icc = decoder.icc_profile().ok().flatten();
    let exif = decoder.exif_metadata().ok().flatten();
    let image = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    Ok((image, Embedded { icc, exif }))
}

fn decode_animation(
    source: &[u8],
    format: ImageFormat,
    max_frames: u32,
    probed: (u32, u32),
) -> Result<Decoded, EngineError> {
    let corrupt = |e: image::ImageError| EngineError::corrupt(format, e);
    let cursor = Cursor::new(source);
    let (frames, loop_count, icc, exif) = match format {
        ImageFormat::Gif => {
            let decoder = image::codecs::gif::GifDecoder::new(cursor).map_err(corrupt)?;
            check_size(format, decoder.dimensions(), probed)?;
            let loops = decoder.loop_count();
            (decoder.into_frames(), loops, None, None)
        }
        _ => {
            let mut decoder = image::codecs::webp::WebPDecoder::new(cursor).map_err(corrupt)?;
            check_size(format, decoder.dimensions(), probed)?;
            let icc = decoder.icc_profile().ok().flatten();
            let exif = decoder.exif_metadata().ok().flatten();
            let loops = decoder.loop_count();
            (decoder.into_frames(), loops, icc, exif)
        }
    };
    let mut images = Vec::new();
    let mut delays = Vec::new();
    for frame in frames.take(max_frames as usize) {
        let frame = frame.map_err(corrupt)?;
        delays.push(Duration::from(frame.delay()));
        images.push(DynamicImage::ImageRgba8(frame.into_buffer()));
    }
    if images.is_empty() {
        return Err(EngineError::corrupt(format, "animation without frames"));
    }
    Ok(Decoded {
        frames: images,
        delays,
        loop_count: match loop_count {
            image::metadata::LoopCount::Infinite => 0,
            image::metadata::LoopCount::Finite(n) => u16::try_from(n.get()).unwrap_or(u16::MAX),
        },
        icc,
        orientation: 1,
        exif,
        has_alpha: false,
    })
}

/// Every later stage works on 8-bit RGB or RGBA: grey is widened, 16-bit narrowed, and an
/// alpha channel that is fully opaque is dropped (saves a quarter of the work and lets JPEG
/// results skip flattening).
fn normalise(image: &mut DynamicImage) {
    let has_alpha = image.color().has_alpha();
    *image = match std::mem::take(image) {
        rgb @ DynamicImage::ImageRgb8(_) => rgb,
        DynamicImage::ImageRgba8(rgba) => {
            if rgba.pixels().all(|p| p.0[3] == 255) {
                DynamicImage::ImageRgb8(DynamicImage::ImageRgba8(rgba).to_rgb8())
            } else {
                DynamicImage::ImageRgba8(rgba)
            }
        }
        other if has_alpha => {
            let rgba = other.to_rgba8();
            let mut out = DynamicImage::ImageRgba8(rgba);
            normalise(&mut out);
            out
        }
        other => DynamicImage::ImageRgb8(other.to_rgb8()),
    };
}
