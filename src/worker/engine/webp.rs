//! Still WebP decoding through libwebp, which scales while it decodes (shrink-on-load, as
//! imgproxy asks libvips for): a thumbnail of a big WebP never holds its full-size pixels.
//! Animations stay with the `image` crate's decoder, which walks their frames.

use std::ffi::c_int;

use image::{DynamicImage, RgbImage, RgbaImage};
use libwebp_sys::{
    VP8StatusCode, WEBP_CSP_MODE, WebPDecode, WebPDecoderConfig, WebPFreeDecBuffer,
    WebPGetFeatures, WebPInitDecoderConfig, WebPRGBABuffer,
};

use super::EngineError;
use crate::worker::options::ImageFormat;

/// Decodes a still WebP, `preshrink` times smaller than stored (1 = full size). The scaled
/// size is rounded up, so it never falls below what the plan needs. `probed` is the size the
/// resolution limit was checked against: a file whose bitstream claims another is refused
/// before anything is allocated.
///
/// # Errors
/// [`EngineError::Corrupt`] when libwebp rejects the data or the sizes disagree.
#[allow(unsafe_code)] // FFI: see the SAFETY comments inside
pub fn decode(
    source: &[u8],
    preshrink: f64,
    probed: (u32, u32),
) -> Result<DynamicImage, EngineError> {
    let corrupt = |reason: String| EngineError::corrupt(ImageFormat::Webp, reason);
    // SAFETY: an all-zero config is a valid starting point (plain integers and null
    // pointers); WebPInitDecoderConfig then fills in the defaults and checks the ABI.
    let mut config: WebPDecoderConfig = unsafe { std::mem::zeroed() };
    if !unsafe { WebPInitDecoderConfig(&mut config) } {
        return Err(corrupt("libwebp ABI mismatch".into()));
    }
    // SAFETY: the pointer and length describe `source`, which outlives the call.
    let status = unsafe { WebPGetFeatures(source.as_ptr(), source.len(), &mut config.input) };
    check(status).map_err(corrupt)?;

    let (width, height) = (config.input.width, config.input.height);
    if (i64::from(width), i64::from(height)) != (i64::from(probed.0), i64::from(probed.1)) {
        return Err(corrupt(format!(
            "bitstream is {width}x{height}, header said {}x{}",
            probed.0, probed.1
        )));
    }
    let (width, height) = scaled(width, height, preshrink).ok_or_else(|| {
        corrupt(format!(
            "bad size {}x{}",
            config.input.width, config.input.height
        ))
    })?;
    if (width, height) != (config.input.width, config.input.height) {
        config.options.use_scaling = 1;
        config.options.scaled_width = width;
        config.options.scaled_height = height;
    }

    let has_alpha = config.input.has_alpha != 0;
    let channels: usize = if has_alpha { 4 } else { 3 };
    // Both are positive `c_int`s (checked by `scaled`).
    let (w, h) = (width as usize, height as usize);
    let mut pixels = vec![0u8; w * h * channels];
    config.output.colorspace = if has_alpha {
        WEBP_CSP_MODE::MODE_RGBA
    } else {
        WEBP_CSP_MODE::MODE_RGB
    };
    config.output.is_external_memory = 1;
    config.output.u.RGBA = WebPRGBABuffer {
        rgba: pixels.as_mut_ptr(),
        stride: c_int::try_from(w * channels).map_err(|e| corrupt(e.to_string()))?,
        size: pixels.len(),
    };
    // SAFETY: `source` is valid for the call; the output buffer is `pixels`, exactly
    // stride × height bytes, which libwebp writes and never frees (external memory).
    let status = unsafe { WebPDecode(source.as_ptr(), source.len(), &mut config) };
    // SAFETY: frees only what libwebp allocated itself for the output (nothing with
    // external memory); `pixels` stays ours.
    unsafe { WebPFreeDecBuffer(&mut config.output) };
    check(status).map_err(corrupt)?;

    let (w, h) = (width.unsigned_abs(), height.unsigned_abs());
    Ok(if has_alpha {
        DynamicImage::ImageRgba8(RgbaImage::from_raw(w, h, pixels).expect("sized above"))
    } else {
        DynamicImage::ImageRgb8(RgbImage::from_raw(w, h, pixels).expect("sized above"))
    })
}

/// The decoded size for a stored `width` × `height` shrunk by `preshrink`, rounded up;
/// `None` for sizes libwebp should never report.
fn scaled(width: c_int, height: c_int, preshrink: f64) -> Option<(c_int, c_int)> {
    if width <= 0 || height <= 0 {
        return None;
    }
    if preshrink <= 1.0 {
        return Some((width, height));
    }
    // The result is ≤ the stored size, so it fits a c_int.
    let shrink = |n: c_int| ((f64::from(n) / preshrink).ceil() as c_int).clamp(1, n);
    Some((shrink(width), shrink(height)))
}

fn check(status: VP8StatusCode) -> Result<(), String> {
    match status {
        VP8StatusCode::VP8_STATUS_OK => Ok(()),
        other => Err(format!("libwebp: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(width: u32, height: u32, alpha: bool) -> Vec<u8> {
        let image = if alpha {
            DynamicImage::ImageRgba8(RgbaImage::from_fn(width, height, |x, _| {
                image::Rgba([if x < width / 2 { 255 } else { 0 }, 0, 255, 128])
            }))
        } else {
            DynamicImage::ImageRgb8(RgbImage::from_fn(width, height, |x, _| {
                image::Rgb([if x < width / 2 { 255 } else { 0 }, 0, 255])
            }))
        };
        let (bytes, layout) = if alpha {
            (image.to_rgba8().into_raw(), webp::PixelLayout::Rgba)
        } else {
            (image.to_rgb8().into_raw(), webp::PixelLayout::Rgb)
        };
        webp::Encoder::new(&bytes, layout, width, height)
            .encode_lossless()
            .to_vec()
    }

    #[test]
    fn decodes_at_full_size_and_scaled() {
        let source = encode(301, 200, false);
        let full = decode(&source, 1.0, (301, 200)).unwrap();
        assert_eq!((full.width(), full.height()), (301, 200));
        let quarter = decode(&source, 4.0, (301, 200)).unwrap();
        assert_eq!((quarter.width(), quarter.height()), (76, 50));
        let rgb = quarter.to_rgb8();
        assert_eq!(rgb.get_pixel(5, 25).0, [255, 0, 255]);
        assert_eq!(rgb.get_pixel(70, 25).0, [0, 0, 255]);
    }

    #[test]
    fn keeps_alpha() {
        let image = decode(&encode(40, 20, true), 2.0, (40, 20)).unwrap();
        assert_eq!((image.width(), image.height()), (20, 10));
        assert_eq!(image.to_rgba8().get_pixel(2, 5).0[3], 128);
    }

    #[test]
    fn garbage_is_corrupt_not_a_crash() {
        let source = encode(64, 64, false);
        for cut in [0, 10, 30, source.len() / 2] {
            assert!(decode(&source[..cut], 2.0, (64, 64)).is_err(), "{cut}");
        }
        assert!(decode(b"RIFF\0\0\0\0WEBPVP8 ", 1.0, (1, 1)).is_err());
        assert!(
            decode(&source, 1.0, (8, 8)).is_err(),
            "a size other than the probed one"
        );
    }

    #[test]
    fn scaled_sizes_round_up_and_stay_in_range() {
        assert_eq!(scaled(6000, 4000, 20.0), Some((300, 200)));
        assert_eq!(scaled(6001, 4001, 20.0), Some((301, 201)));
        assert_eq!(scaled(3, 1, 1000.0), Some((1, 1)));
        assert_eq!(scaled(30, 10, 0.5), Some((30, 10)));
        assert_eq!(scaled(0, 10, 2.0), None);
    }
}
