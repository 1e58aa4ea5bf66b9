//! Resampling with `fast_image_resize` (SIMD Lanczos3, imgproxy's default filter), with
//! alpha premultiplied so transparent pixels don't bleed colour into their neighbours.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, RgbImage, RgbaImage};

use super::EngineError;

/// Resizes an RGB8 or RGBA8 image to exactly `width` × `height` (both ≥ 1).
///
/// # Errors
/// [`EngineError::InvalidSize`] for a zero-sized target.
pub fn resize(image: DynamicImage, width: u32, height: u32) -> Result<DynamicImage, EngineError> {
    if width == 0 || height == 0 {
        return Err(EngineError::InvalidSize {
            width: width.into(),
            height: height.into(),
        });
    }
    if (image.width(), image.height()) == (width, height) {
        return Ok(image);
    }
    let (pixel_type, buffer): (PixelType, &[u8]) = match &image {
        DynamicImage::ImageRgb8(rgb) => (PixelType::U8x3, rgb.as_raw()),
        DynamicImage::ImageRgba8(rgba) => (PixelType::U8x4, rgba.as_raw()),
        // Decode normalises to RGB8/RGBA8; anything else is widened rather than refused.
        other => return resize(DynamicImage::ImageRgba8(other.to_rgba8()), width, height),
    };
    let src = ImageRef::new(image.width(), image.height(), buffer, pixel_type)
        .expect("buffer length matches the image's own dimensions");
    let mut dst = Image::new(width, height, pixel_type);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3));
    Resizer::new()
        .resize(&src, &mut dst, &options)
        .expect("source and destination share a pixel type and are non-empty");
    let pixels = dst.into_vec();
    Ok(match pixel_type {
        PixelType::U8x3 => DynamicImage::ImageRgb8(
            RgbImage::from_raw(width, height, pixels).expect("resizer output is width*height*3"),
        ),
        _ => DynamicImage::ImageRgba8(
            RgbaImage::from_raw(width, height, pixels).expect("resizer output is width*height*4"),
        ),
    })
}
