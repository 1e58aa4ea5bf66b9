//! AVIF through libavif directly (the `libavif` crate's `decode` takes no limits): the
//! container is parsed first, so the size the probe reports and the resolution limit is
//! checked against is the primary item's own `ispe` (not the first `ispe` bytes anywhere in
//! the file), and the decode runs with libavif's size limits set from
//! `IMGPROXY_MAX_SRC_RESOLUTION` instead of its default 268 MP.
//!
//! What libavif cannot bound: libaom sizes its frame buffers from the AV1 sequence header, and
//! libavif compares that with `ispe` only after the frame is decoded. libaom's own cap is a
//! compile-time option (`CONFIG_SIZE_LIMIT`; see docs/engine.md).

use image::{DynamicImage, RgbaImage};
use libavif_sys as sys;

use super::decode::{Decoded, check_size};
use super::{EngineConfig, EngineError};
use crate::worker::options::ImageFormat;

/// libavif's own ceiling for one side (`AVIF_DEFAULT_IMAGE_DIMENSION_LIMIT`), kept.
const DIMENSION_LIMIT: u32 = 32_768;

/// A libavif decoder, destroyed on drop; its IO reads `source`, which must outlive it.
struct Decoder<'a> {
    raw: *mut sys::avifDecoder,
    _source: &'a [u8],
}

#[allow(unsafe_code)] // FFI: see the SAFETY comments inside
impl<'a> Decoder<'a> {
    /// Parses `source`'s container (no pixels) under `max_pixels` (0 = libavif's default).
    fn parse(source: &'a [u8], max_pixels: u32) -> Result<Self, EngineError> {
        // SAFETY: avifDecoderCreate returns a fresh decoder or null.
        let raw = unsafe { sys::avifDecoderCreate() };
        if raw.is_null() {
            return Err(corrupt("libavif could not create a decoder"));
        }
        let decoder = Decoder {
            raw,
            _source: source,
        };
        // SAFETY: `raw` is a valid decoder; the memory IO borrows `source`, which `decoder`
        // borrows for as long as it lives.
        unsafe {
            if max_pixels > 0 {
                (*raw).imageSizeLimit = max_pixels;
            }
            (*raw).imageDimensionLimit = DIMENSION_LIMIT;
            (*raw).maxThreads = 1;
            (*raw).ignoreExif = 1;
            (*raw).ignoreXMP = 1;
            check(sys::avifDecoderSetIOMemory(
                raw,
                source.as_ptr(),
                source.len(),
            ))?;
            check(sys::avifDecoderParse(raw))?;
        }
        Ok(decoder)
    }

    /// The primary image's size as the container states it.
    fn size(&self) -> (u32, u32) {
        // SAFETY: after a successful parse, `image` points at the decoder's image.
        unsafe { ((*(*self.raw).image).width, (*(*self.raw).image).height) }
    }
}

#[allow(unsafe_code)] // FFI: see the SAFETY comments inside
impl Drop for Decoder<'_> {
    fn drop(&mut self) {
        // SAFETY: `raw` came from avifDecoderCreate and is destroyed exactly once.
        unsafe { sys::avifDecoderDestroy(self.raw) };
    }
}

fn corrupt(reason: impl ToString) -> EngineError {
    EngineError::corrupt(ImageFormat::Avif, reason)
}

#[allow(unsafe_code)] // FFI: see the SAFETY comments inside
fn check(result: sys::avifResult) -> Result<(), EngineError> {
    if result == sys::AVIF_RESULT_OK {
        return Ok(());
    }
    // SAFETY: avifResultToString returns a static NUL-terminated string for every value.
    let text = unsafe { std::ffi::CStr::from_ptr(sys::avifResultToString(result)) };
    Err(corrupt(format!("libavif: {}", text.to_string_lossy())))
}

/// The primary image's size, for [`super::probe()`].
///
/// # Errors
/// [`EngineError::Corrupt`] when the container doesn't parse.
pub fn dimensions(source: &[u8]) -> Result<(u32, u32), EngineError> {
    Ok(Decoder::parse(source, 0)?.size())
}

/// Decodes the primary image to RGBA, refusing it before any pixel is decoded when its size
/// isn't `probed` or passes `IMGPROXY_MAX_SRC_RESOLUTION`.
///
/// # Errors
/// [`EngineError::Corrupt`] for broken data, disagreeing sizes or sizes past the limits.
#[allow(unsafe_code)] // FFI: see the SAFETY comments inside
pub fn decode(
    source: &[u8],
    probed: (u32, u32),
    config: &EngineConfig,
) -> Result<Decoded, EngineError> {
    // Saturating: a limit past u32 is libavif's default ceiling anyway.
    let max_pixels = (config.max_src_resolution * 1_000_000.0).min(f64::from(u32::MAX)) as u32;
    let decoder = Decoder::parse(source, max_pixels.max(1))?;
    check_size(ImageFormat::Avif, decoder.size(), probed)?;
    // SAFETY: the decoder parsed; NextImage decodes into its own image, which stays valid
    // until the decoder is destroyed. The RGB buffer is ours, sized for the image it
    // describes (rowBytes × height), and libavif only writes into it.
    let rgba = unsafe {
        check(sys::avifDecoderNextImage(decoder.raw))?;
        let image = (*decoder.raw).image;
        check_size(ImageFormat::Avif, ((*image).width, (*image).height), probed)?;
        let mut rgb = sys::avifRGBImage::default();
        sys::avifRGBImageSetDefaults(&mut rgb, image);
        rgb.format = sys::AVIF_RGB_FORMAT_RGBA;
        rgb.depth = 8;
        let (width, height) = (rgb.width, rgb.height);
        let row = width as usize * 4;
        let mut pixels = vec![0u8; row * height as usize];
        rgb.pixels = pixels.as_mut_ptr();
        rgb.rowBytes = u32::try_from(row).map_err(corrupt)?;
        check(sys::avifImageYUVToRGB(image, &mut rgb))?;
        RgbaImage::from_raw(width, height, pixels)
            .ok_or_else(|| corrupt("unexpected pixel layout"))?
    };
    Ok(Decoded::still(DynamicImage::ImageRgba8(rgba), false))
}
