//! Embedded ICC profiles → sRGB (moxcms), so wide-gamut photos (ProPhoto, Display P3, Adobe
//! RGB) don't come out washed out once the profile is gone. Results carry no profile:
//! browsers treat untagged images as sRGB, which is what the pixels then are.

use image::DynamicImage;
use moxcms::{ColorProfile, DataColorSpace, Layout, TransformOptions};

/// Converts `image` (RGB8 or RGBA8) from `icc` to sRGB in place. Profiles that aren't RGB,
/// can't be parsed, or describe sRGB already leave the pixels untouched: a broken profile
/// must not cost the image, and browsers ignore such profiles too.
pub fn to_srgb(image: &mut DynamicImage, icc: &[u8]) {
    let Ok(profile) = ColorProfile::new_from_slice(icc) else {
        return;
    };
    if profile.color_space != DataColorSpace::Rgb || is_srgb(&profile) {
        return;
    }
    let srgb = ColorProfile::new_srgb();
    let (layout, data): (Layout, &mut [u8]) = match image {
        DynamicImage::ImageRgb8(rgb) => (Layout::Rgb, rgb.as_mut()),
        DynamicImage::ImageRgba8(rgba) => (Layout::Rgba, rgba.as_mut()),
        _ => return,
    };
    let Ok(transform) =
        profile.create_transform_8bit(layout, &srgb, layout, TransformOptions::default())
    else {
        return;
    };
    let source = data.to_vec();
    // A failed transform leaves the unconverted pixels, like a viewer without colour management.
    if transform.transform(&source, data).is_err() {
        data.copy_from_slice(&source);
    }
}

/// Profiles whose primaries and white point match sRGB's (within rounding of the s15Fixed16
/// encoding): converting would only cost time.
fn is_srgb(profile: &ColorProfile) -> bool {
    let srgb = ColorProfile::new_srgb();
    let close = |a: f64, b: f64| (a - b).abs() < 0.002;
    let same_xyz =
        |a: &moxcms::Xyzd, b: &moxcms::Xyzd| close(a.x, b.x) && close(a.y, b.y) && close(a.z, b.z);
    same_xyz(&profile.red_colorant, &srgb.red_colorant)
        && same_xyz(&profile.green_colorant, &srgb.green_colorant)
        && same_xyz(&profile.blue_colorant, &srgb.blue_colorant)
        && profile.red_trc.is_some()
        && trc_is_srgb(profile)
}

/// sRGB's tone curve is a parametric curve in modern profiles and a table (often 1024
/// entries) in older ones; a table counts as sRGB when it follows the sRGB function.
fn trc_is_srgb(profile: &ColorProfile) -> bool {
    let srgb = ColorProfile::new_srgb();
    match (profile.red_trc.as_ref(), srgb.red_trc.as_ref()) {
        (Some(ours), Some(reference)) if ours == reference => true,
        (Some(moxcms::ToneReprCurve::Lut(table)), _) if table.len() >= 256 => {
            let last = table.len() - 1;
            [0.1, 0.25, 0.5, 0.75, 0.9].iter().all(|&v: &f64| {
                let index = (v * last as f64).round() as usize;
                let encoded = index as f64 / last as f64;
                let expected = if encoded <= 0.04045 {
                    encoded / 12.92
                } else {
                    ((encoded + 0.055) / 1.055).powf(2.4)
                };
                (f64::from(table[index]) / 65535.0 - expected).abs() < 0.01
            })
        }
        _ => false,
    }
}
