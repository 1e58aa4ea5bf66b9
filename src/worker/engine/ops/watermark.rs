//! Watermarks (imgproxy's `watermark` option): scale the mark, place it by
//! gravity or tile it (`re`), and blend it over the image with an opacity.
//!
//! imgproxy's rules:
//! - `scale` > 0 fits the mark (enlarging if needed) into
//!   `round(width × scale) × round(height × scale)` of the image; 0 keeps it.
//! - A placed mark may stick out of the image (only the overlap is drawn);
//!   offsets follow [`calc_position`] with overflow allowed.
//! - Replicated marks are padded by the offsets (`x` between marks
//!   horizontally, half on each side; `y` vertically), then tiled so that an
//!   odd number of tiles is centred on the image.
//! - Blending is "over" in sRGB, the mark's alpha multiplied by the opacity.

use std::borrow::Cow;

use image::RgbaImage;
use image::imageops::{self, FilterType};

use super::gravity::{calc_position, offset, scale_even};
use super::{mul_div255, pixels, pixels_mut, premultiply, unpremultiply};
use crate::worker::options::{GravityKind, Watermark};

/// Draws `mark` on `img` as `wm` says (no-op unless `wm.enabled`). `wm.opacity`
/// is the effective opacity: the pipeline multiplies in
/// `IMGPROXY_WATERMARK_OPACITY` first. Pixel offsets are used as given.
pub fn watermark(img: &mut RgbaImage, mark: &RgbaImage, wm: &Watermark) {
    watermark_scaled(img, mark, wm, 1.0);
}

/// [`watermark`] with pixel offsets multiplied by `offset_scale` (the dpr).
pub fn watermark_scaled(img: &mut RgbaImage, mark: &RgbaImage, wm: &Watermark, offset_scale: f64) {
    let opacity = if wm.opacity.is_nan() {
        0.0
    } else {
        wm.opacity.clamp(0.0, 1.0)
    };
    let opacity = (opacity * 255.0).round() as u32;
    let (w, h) = img.dimensions();
    if !wm.enabled || opacity == 0 || w == 0 || h == 0 || mark.width() == 0 || mark.height() == 0 {
        return;
    }
    let mark = scaled_mark(mark, wm.scale, w, h);
    let (mw, mh) = (i64::from(mark.width()), i64::from(mark.height()));
    let src = pixels(&mark);
    let (iw, ih) = (i64::from(w), i64::from(h));
    let dst = pixels_mut(img);

    if wm.position.kind == GravityKind::Replicate {
        // Gaps between marks; negative gaps make no sense for a tile.
        let gap_x = offset(wm.position.x, iw, offset_scale).clamp(0, iw);
        let gap_y = offset(wm.position.y, ih, offset_scale).clamp(0, ih);
        let (tw, th) = (mw + gap_x, mh + gap_y);
        let (pad_l, pad_t) = (gap_x / 2, gap_y / 2);
        let odd = |n: i64| if n % 2 == 0 { n + 1 } else { n };
        let (across, down) = (odd((iw + tw - 1) / tw), odd((ih + th - 1) / th));
        let (ox, oy) = ((across * tw - iw) / 2, (down * th - ih) / 2);
        for y in 0..ih {
            let my = (y + oy) % th - pad_t;
            if !(0..mh).contains(&my) {
                continue;
            }
            let row = &mut dst[(y * iw) as usize..((y + 1) * iw) as usize];
            let mark_row = &src[(my * mw) as usize..((my + 1) * mw) as usize];
            for (x, d) in row.iter_mut().enumerate() {
                let mx = (x as i64 + ox) % tw - pad_l;
                if (0..mw).contains(&mx) {
                    blend(d, mark_row[mx as usize], opacity);
                }
            }
        }
        return;
    }

    let (left, top) = calc_position(
        w,
        h,
        mark.width(),
        mark.height(),
        &wm.position,
        offset_scale,
        true,
    );
    // Overlap of the mark with the image, in image coordinates.
    let (x0, y0) = (left.max(0), top.max(0));
    let (x1, y1) = ((left + mw).min(iw), (top + mh).min(ih));
    for y in y0..y1 {
        let my = y - top;
        let row = &mut dst[(y * iw + x0) as usize..(y * iw + x1) as usize];
        let mark_row = &src[(my * mw + x0 - left) as usize..(my * mw + x1 - left) as usize];
        for (d, &s) in row.iter_mut().zip(mark_row) {
            blend(d, s, opacity);
        }
    }
}

/// The mark resized for `scale` relative to a `width × height` image, or the
/// mark itself. Lanczos3 on premultiplied pixels (no dark fringes at
/// transparent edges). Marks are capped at 4× the image per side, which
/// shows the same as any larger mark for every gravity but the corners'
/// far side.
pub fn scaled_mark(mark: &RgbaImage, scale: f64, width: u32, height: u32) -> Cow<'_, RgbaImage> {
    if scale.is_nan() || scale <= 0.0 || scale.is_infinite() {
        return Cow::Borrowed(mark);
    }
    let bw = scale_even(i64::from(width), scale).max(1) as f64;
    let bh = scale_even(i64::from(height), scale).max(1) as f64;
    let (mw, mh) = (f64::from(mark.width()), f64::from(mark.height()));
    let factor = (bw / mw).min(bh / mh);
    let nw = (mw * factor).round().clamp(1.0, 4.0 * f64::from(width)) as u32;
    let nh = (mh * factor).round().clamp(1.0, 4.0 * f64::from(height)) as u32;
    if (nw, nh) == mark.dimensions() {
        return Cow::Borrowed(mark);
    }
    let mut pre = mark.clone();
    premultiply(&mut pre);
    let mut out = imageops::resize(&pre, nw, nh, FilterType::Lanczos3);
    unpremultiply(&mut out);
    Cow::Owned(out)
}

/// `src` over `dst`, `src`'s alpha scaled by `opacity` (0..=255).
#[inline]
fn blend(dst: &mut [u8; 4], src: [u8; 4], opacity: u32) {
    let sa = u32::from(mul_div255(u32::from(src[3]), opacity));
    if sa == 0 {
        return;
    }
    let da = u32::from(dst[3]);
    if da == 255 || sa == 255 {
        for c in 0..3 {
            dst[c] = ((u32::from(src[c]) * sa + u32::from(dst[c]) * (255 - sa) + 127) / 255) as u8;
        }
        dst[3] = (sa + mul_div255(da, 255 - sa) as u32) as u8;
        return;
    }
    // General case: straight alpha on both sides.
    let (sa, da) = (sa as f32 / 255.0, da as f32 / 255.0);
    let out_a = sa + da * (1.0 - sa);
    for c in 0..3 {
        let v = (f32::from(src[c]) * sa + f32::from(dst[c]) * da * (1.0 - sa)) / out_a;
        dst[c] = v.round().clamp(0.0, 255.0) as u8;
    }
    dst[3] = (out_a * 255.0).round() as u8;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::engine::ops::testutil::{assert_close, px};
    use crate::worker::options::Gravity;
    use image::Rgba;

    const WHITE: [u8; 4] = [255; 4];
    const RED: [u8; 4] = [255, 0, 0, 255];

    fn wm(kind: GravityKind, x: f64, y: f64) -> Watermark {
        Watermark {
            enabled: true,
            opacity: 1.0,
            position: Gravity { kind, x, y },
            scale: 0.0,
        }
    }

    fn white(w: u32, h: u32) -> RgbaImage {
        RgbaImage::from_pixel(w, h, Rgba(WHITE))
    }

    /// Bounding box (x, y, w, h) of pixels that are not white.
    fn marked_box(img: &RgbaImage) -> Option<(u32, u32, u32, u32)> {
        let hits: Vec<(u32, u32)> = img
            .enumerate_pixels()
            .filter(|(_, _, p)| p.0 != WHITE)
            .map(|(x, y, _)| (x, y))
            .collect();
        let (x0, x1) = (
            hits.iter().map(|h| h.0).min()?,
            hits.iter().map(|h| h.0).max()?,
        );
        let (y0, y1) = (
            hits.iter().map(|h| h.1).min()?,
            hits.iter().map(|h| h.1).max()?,
        );
        Some((x0, y0, x1 - x0 + 1, y1 - y0 + 1))
    }

    /// Each gravity puts an opaque 10×10 mark where imgproxy would, on an odd
    /// 101×61 image; offsets push inwards; a mark may hang off the edge.
    #[test]
    fn placement() {
        use GravityKind::*;
        let mark = RgbaImage::from_pixel(10, 10, Rgba(RED));
        let cases = [
            (wm(Center, 0.0, 0.0), (46, 26, 10, 10)),
            (wm(North, 0.0, 0.0), (46, 0, 10, 10)),
            (wm(South, 0.0, 0.0), (46, 51, 10, 10)),
            (wm(East, 0.0, 0.0), (91, 26, 10, 10)),
            (wm(West, 0.0, 0.0), (0, 26, 10, 10)),
            (wm(NorthEast, 0.0, 0.0), (91, 0, 10, 10)),
            (wm(NorthWest, 0.0, 0.0), (0, 0, 10, 10)),
            (wm(SouthEast, 5.0, 3.0), (86, 48, 10, 10)),
            (wm(SouthWest, 5.0, 3.0), (5, 48, 10, 10)),
            (wm(NorthWest, -4.0, -6.0), (0, 0, 6, 4)),
            (wm(Center, 0.1, -0.1), (56, 20, 10, 10)),
        ];
        for (opts, want) in cases {
            let mut img = white(101, 61);
            watermark(&mut img, &mark, &opts);
            assert_eq!(marked_box(&img), Some(want), "{:?}", opts.position);
            let (x, y, w, h) = want;
            assert_eq!(px(&img, x + w / 2, y + h / 2), RED);
            let changed = img.pixels().filter(|p| p.0 != WHITE).count();
            assert_eq!(changed, (w * h) as usize);
        }
    }

    /// Offsets scale with the dpr.
    #[test]
    fn offset_scale() {
        let mark = RgbaImage::from_pixel(10, 10, Rgba(RED));
        let mut img = white(101, 61);
        watermark_scaled(&mut img, &mark, &wm(GravityKind::NorthWest, 5.0, 3.0), 2.0);
        assert_eq!(marked_box(&img), Some((10, 6, 10, 10)));
    }

    /// Opacity and the mark's own alpha multiply; blending is "over", ±1.
    #[test]
    fn opacity_blends() {
        let mark = RgbaImage::from_pixel(4, 4, Rgba(RED));
        let mut img = white(4, 4);
        watermark(
            &mut img,
            &mark,
            &Watermark {
                opacity: 0.5,
                ..wm(GravityKind::Center, 0.0, 0.0)
            },
        );
        assert_close(px(&img, 1, 1), [255, 127, 127, 255], 1);

        let half_red = RgbaImage::from_pixel(4, 4, Rgba([255, 0, 0, 128]));
        let mut img = RgbaImage::from_pixel(4, 4, Rgba([0, 0, 255, 255]));
        watermark(
            &mut img,
            &half_red,
            &Watermark {
                opacity: 0.5,
                ..wm(GravityKind::Center, 0.0, 0.0)
            },
        );
        // Effective alpha 64/255 ≈ 0.251: 255·0.251 = 64, blue 255·0.749 = 191.
        assert_close(px(&img, 0, 0), [64, 0, 191, 255], 1);

        // Over a transparent base the mark keeps its colour at its own alpha.
        let mut img = RgbaImage::from_pixel(4, 4, Rgba([0, 0, 0, 0]));
        watermark(&mut img, &half_red, &wm(GravityKind::Center, 0.0, 0.0));
        assert_close(px(&img, 2, 2), [255, 0, 0, 128], 1);

        // Over a half-transparent base: alpha 0.5 + 0.5·0.5 = 0.75, colour
        // (255·0.5 + 0·0.5·0.5) / 0.75 = 170 red, 85 blue.
        let mut img = RgbaImage::from_pixel(4, 4, Rgba([0, 0, 255, 128]));
        watermark(&mut img, &half_red, &wm(GravityKind::Center, 0.0, 0.0));
        assert_close(px(&img, 2, 2), [170, 0, 85, 191], 1);
    }

    /// `re` tiles an odd number of padded marks, centred.
    #[test]
    fn replicate_tiles_centred() {
        let mark = RgbaImage::from_pixel(4, 4, Rgba(RED));
        let mut img = white(40, 20);
        watermark(&mut img, &mark, &wm(GravityKind::Replicate, 4.0, 2.0));
        // Tiles of 8×6 with the mark at (2, 1) inside; 5×5 tiles centred:
        // shifted by (0, 5).
        for y in 0..20u32 {
            for x in 0..40u32 {
                let inside = (2..6).contains(&(x % 8)) && (1..5).contains(&((y + 5) % 6));
                assert_eq!(px(&img, x, y) == RED, inside, "({x}, {y})");
            }
        }
    }

    /// Without gaps, tiles cover everything.
    #[test]
    fn replicate_without_gaps_covers_the_image() {
        let mark = RgbaImage::from_pixel(7, 3, Rgba(RED));
        let mut img = white(30, 10);
        watermark(&mut img, &mark, &wm(GravityKind::Replicate, 0.0, 0.0));
        assert!(img.pixels().all(|p| p.0 == RED));
    }

    /// `scale` fits the mark into a box relative to the image.
    #[test]
    fn scale_fits_into_a_relative_box() {
        let mark = RgbaImage::from_pixel(10, 20, Rgba(RED));
        // 0.5 of 200×100 → box 100×50 → 25×50.
        assert_eq!(scaled_mark(&mark, 0.5, 200, 100).dimensions(), (25, 50));
        // Enlarges too: 0.9 of 300×300 → 135×270.
        assert_eq!(scaled_mark(&mark, 0.9, 300, 300).dimensions(), (135, 270));
        assert_eq!(scaled_mark(&mark, 0.0, 300, 300).dimensions(), (10, 20));
        assert_eq!(
            scaled_mark(&mark, f64::NAN, 300, 300).dimensions(),
            (10, 20)
        );
        let mut img = white(200, 100);
        watermark(
            &mut img,
            &mark,
            &Watermark {
                scale: 0.5,
                ..wm(GravityKind::NorthWest, 0.0, 0.0)
            },
        );
        let (x, y, w, h) = marked_box(&img).unwrap();
        assert_eq!((x, y), (0, 0));
        assert!((24..=26).contains(&w) && (49..=51).contains(&h), "{w}×{h}");
        assert_eq!(px(&img, 12, 25), RED);
    }

    /// Disabled, invisible, off-image, or empty: nothing changes, no panic.
    #[test]
    fn no_ops() {
        let mark = RgbaImage::from_pixel(4, 4, Rgba(RED));
        let img = white(20, 20);
        for opts in [
            Watermark {
                enabled: false,
                ..wm(GravityKind::Center, 0.0, 0.0)
            },
            Watermark {
                opacity: 0.0,
                ..wm(GravityKind::Center, 0.0, 0.0)
            },
            Watermark {
                opacity: f64::NAN,
                ..wm(GravityKind::Center, 0.0, 0.0)
            },
        ] {
            let mut out = img.clone();
            watermark(&mut out, &mark, &opts);
            assert_eq!(out, img);
        }
        for (x, y) in [
            (1e12, 0.0),
            (-1e12, 5.0),
            (f64::INFINITY, f64::NEG_INFINITY),
        ] {
            let mut out = img.clone();
            watermark(&mut out, &mark, &wm(GravityKind::NorthWest, x, y));
            watermark(&mut out, &mark, &wm(GravityKind::Replicate, x, y));
            assert_eq!(out.dimensions(), (20, 20));
        }
        let mut empty = RgbaImage::new(0, 0);
        watermark(&mut empty, &mark, &wm(GravityKind::Center, 0.0, 0.0));
        let mut out = img.clone();
        watermark(
            &mut out,
            &RgbaImage::new(0, 3),
            &wm(GravityKind::Replicate, 0.0, 0.0),
        );
        assert_eq!(out, img);
    }
}
