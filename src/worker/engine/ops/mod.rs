//! The engine's pure pixel operations: functions from `RgbaImage` (straight,
//! non-premultiplied sRGB + alpha) to `RgbaImage`, with imgproxy v3's rules for
//! where things land. Nothing here decodes, encodes, or knows about requests;
//! the pipeline decides what to call and in which order.
//!
//! - [`gravity`](mod@gravity): `calc_position`, imgproxy's placement rule shared by crop,
//!   extend and watermark (anchors, offsets in pixels or fractions, focus
//!   points, clamping), and how a gravity turns with the image.
//! - [`crop`](mod@crop): `crop` / `crop_scaled`, cutting a window chosen by gravity.
//! - [`smart`](mod@smart): the content-aware window behind `g:sm` (attention map).
//! - [`extend`](mod@extend): `extend` / `extend_scaled` and `embed`, placing an image on a
//!   canvas.
//! - [`pad`](mod@pad): `pad`, borders in CSS order.
//! - [`trim`](mod@trim): `trim` / `find_trim`, removing uniform borders.
//! - [`orient`](mod@orient): `rotate`, `flip`, `orient` (EXIF 1..=8), on whole pixels.
//! - [`blur`](mod@blur): the Gaussian machinery and `blur`.
//! - [`effects`](mod@effects): `sharpen`, `pixelate`, `flatten`.
//! - [`watermark`](mod@watermark): `watermark` / `watermark_scaled`: scale, place or tile, blend.
//!
//! Every function accepts any input — 0-sized images, absurd offsets, NaN or
//! zero parameters — without panicking. Canvases that would exceed
//! [`MAX_CANVAS_PIXELS`] are clipped at the right and bottom rather than
//! aborting on allocation; the pipeline's resolution limit rejects such
//! requests long before that.
//!
//! Hot loops work on the raw byte slice viewed as `[[u8; 4]]` pixels, never
//! through bounds-checked `get_pixel`.

pub mod blur;
pub mod crop;
pub mod effects;
pub mod extend;
pub mod gravity;
pub mod orient;
pub mod pad;
pub mod smart;
pub mod trim;
pub mod watermark;

pub use blur::blur;
pub use crop::{crop, crop_scaled};
pub use effects::{flatten, pixelate, sharpen};
pub use extend::{embed, extend, extend_scaled};
pub use gravity::{calc_position, rotate_and_flip_gravity};
pub use orient::{flip, orient, rotate};
pub use pad::{pad, scale_padding};
pub use smart::smart_crop;
pub use trim::{find_trim, trim};
pub use watermark::{watermark, watermark_scaled};

use image::{Rgba, RgbaImage};

/// Largest canvas (in pixels) an operation will allocate: 2^28 pixels, 1 GiB
/// of RGBA. Far above imgproxy's default 50 MP source limit, low enough that
/// an absurd `extend`/`padding` clips instead of aborting the process.
pub const MAX_CANVAS_PIXELS: u64 = 1 << 28;

/// The image's bytes as pixels.
pub(crate) fn pixels(img: &RgbaImage) -> &[[u8; 4]] {
    img.as_raw().as_chunks::<4>().0
}

/// The image's bytes as mutable pixels.
pub(crate) fn pixels_mut(img: &mut RgbaImage) -> &mut [[u8; 4]] {
    let raw: &mut [u8] = img;
    raw.as_chunks_mut::<4>().0
}

/// Clips `width × height` so it fits [`MAX_CANVAS_PIXELS`], keeping the width
/// when possible.
pub(crate) fn clip_canvas(width: u32, height: u32) -> (u32, u32) {
    let (w, h) = (u64::from(width), u64::from(height));
    if w * h <= MAX_CANVAS_PIXELS {
        return (width, height);
    }
    let w = w.min(MAX_CANVAS_PIXELS);
    let h = (MAX_CANVAS_PIXELS / w).min(h);
    // Both fit in u32: w ≤ 2^28 and h ≤ the original height.
    (w as u32, h as u32)
}

/// A `width × height` canvas (clipped by [`clip_canvas`]) filled with `fill`.
pub(crate) fn canvas(width: u32, height: u32, fill: Rgba<u8>) -> RgbaImage {
    let (w, h) = clip_canvas(width, height);
    let raw = fill.0.repeat(w as usize * h as usize);
    RgbaImage::from_raw(w, h, raw).expect("the buffer holds exactly w * h pixels")
}

/// Copies the `width × height` window of `src` at (`left`, `top`) into a new
/// image. Parts of the window outside `src` stay transparent black.
pub(crate) fn extract(src: &RgbaImage, left: i64, top: i64, width: u32, height: u32) -> RgbaImage {
    let mut out = canvas(width, height, Rgba([0, 0, 0, 0]));
    blit(&mut out, src, left.saturating_neg(), top.saturating_neg());
    out
}

/// Copies `src` into `dst` with its top-left corner at (`x`, `y`), clipping
/// whatever falls outside `dst`. Row-wise `copy_from_slice`, no blending.
pub(crate) fn blit(dst: &mut RgbaImage, src: &RgbaImage, x: i64, y: i64) {
    let (dw, dh) = (i64::from(dst.width()), i64::from(dst.height()));
    let (sw, sh) = (i64::from(src.width()), i64::from(src.height()));
    let x0 = x.clamp(0, dw);
    let y0 = y.clamp(0, dh);
    let x1 = x.saturating_add(sw).clamp(0, dw);
    let y1 = y.saturating_add(sh).clamp(0, dh);
    if x0 >= x1 || y0 >= y1 {
        return;
    }
    // All of these are within 0..=dw/dh or 0..=sw/sh, so they fit usize.
    let (dw, sw) = (dw as usize, sw as usize);
    let cols = (x1 - x0) as usize;
    let sx = (x0 - x) as usize;
    let src_px = pixels(src);
    let dst_px = pixels_mut(dst);
    for dy in y0..y1 {
        let sy = (dy - y) as usize;
        let d = dy as usize * dw + x0 as usize;
        let s = sy * sw + sx;
        dst_px[d..d + cols].copy_from_slice(&src_px[s..s + cols]);
    }
}

/// Whether any pixel is not fully opaque (so premultiplication matters).
pub(crate) fn has_transparency(img: &RgbaImage) -> bool {
    pixels(img).iter().any(|p| p[3] != 255)
}

/// Multiplies colour by alpha, rounding: the form blurs and resamplers need so
/// transparent pixels don't bleed their (invisible) colour.
pub(crate) fn premultiply(img: &mut RgbaImage) {
    for p in pixels_mut(img) {
        let a = u32::from(p[3]);
        if a != 255 {
            for c in &mut p[..3] {
                *c = mul_div255(u32::from(*c), a);
            }
        }
    }
}

/// Inverse of [`premultiply`] (clamped: blurring can leave colour > alpha by
/// rounding).
pub(crate) fn unpremultiply(img: &mut RgbaImage) {
    for p in pixels_mut(img) {
        let a = u32::from(p[3]);
        if a == 0 {
            p[..3].fill(0);
        } else if a != 255 {
            for c in &mut p[..3] {
                *c = ((u32::from(*c) * 255 + a / 2) / a).min(255) as u8;
            }
        }
    }
}

/// `round(a * b / 255)` for `a, b ≤ 255`, exact.
#[inline]
pub(crate) fn mul_div255(a: u32, b: u32) -> u8 {
    let t = a * b + 128;
    (((t >> 8) + t) >> 8) as u8
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Test cards shared by the operation tests.
    use image::{Rgba, RgbaImage};

    /// Nine distinct opaque colours, row-major: NW, N, NE, W, C, E, SW, S, SE.
    pub const GRID: [[u8; 4]; 9] = [
        [255, 0, 0, 255],
        [0, 255, 0, 255],
        [0, 0, 255, 255],
        [255, 255, 0, 255],
        [0, 255, 255, 255],
        [255, 0, 255, 255],
        [128, 0, 0, 255],
        [0, 128, 0, 255],
        [0, 0, 128, 255],
    ];

    /// A `width × height` card split into a 3 × 3 grid of [`GRID`] colours
    /// (region boundaries at thirds, rounded down).
    pub fn grid_card(width: u32, height: u32) -> RgbaImage {
        RgbaImage::from_fn(width, height, |x, y| {
            let col = (x * 3 / width.max(1)).min(2);
            let row = (y * 3 / height.max(1)).min(2);
            Rgba(GRID[(row * 3 + col) as usize])
        })
    }

    /// An image where every pixel encodes its own coordinates (r = x, g = y),
    /// so any copy can be traced back to its source position.
    pub fn coord_card(width: u32, height: u32) -> RgbaImage {
        RgbaImage::from_fn(width, height, |x, y| Rgba([x as u8, y as u8, 7, 255]))
    }

    pub fn px(img: &RgbaImage, x: u32, y: u32) -> [u8; 4] {
        img.get_pixel(x, y).0
    }

    /// Asserts two colours agree within ±`tol` per channel.
    #[track_caller]
    pub fn assert_close(got: [u8; 4], want: [u8; 4], tol: u8) {
        let ok = got.iter().zip(want).all(|(g, w)| g.abs_diff(w) <= tol);
        assert!(ok, "got {got:?}, want {want:?} ±{tol}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mul_div255_is_exact() {
        for a in 0..=255u32 {
            for b in 0..=255u32 {
                let want = (f64::from(a * b) / 255.0).round() as u8;
                assert_eq!(mul_div255(a, b), want, "{a} * {b}");
            }
        }
    }

    #[test]
    fn premultiply_round_trips_opaque_and_clears_transparent() {
        let mut img = RgbaImage::from_raw(
            3,
            1,
            vec![10, 20, 30, 255, 200, 100, 50, 0, 200, 100, 50, 128],
        )
        .unwrap();
        premultiply(&mut img);
        assert_eq!(&img.as_raw()[..8], &[10, 20, 30, 255, 0, 0, 0, 0]);
        assert_eq!(&img.as_raw()[8..], &[100, 50, 25, 128]);
        unpremultiply(&mut img);
        assert_eq!(&img.as_raw()[8..], &[199, 100, 50, 128]);
    }

    #[test]
    fn canvas_clips_absurd_sizes() {
        let (w, h) = clip_canvas(u32::MAX, u32::MAX);
        assert!(u64::from(w) * u64::from(h) <= MAX_CANVAS_PIXELS);
        assert_eq!(clip_canvas(300, 200), (300, 200));
    }

    #[test]
    fn blit_clips_on_every_side() {
        let src = testutil::coord_card(4, 4);
        let mut dst = canvas(3, 3, Rgba([9, 9, 9, 9]));
        blit(&mut dst, &src, -2, 1);
        assert_eq!(testutil::px(&dst, 0, 0), [9, 9, 9, 9]);
        assert_eq!(testutil::px(&dst, 0, 1), [2, 0, 7, 255]);
        assert_eq!(testutil::px(&dst, 1, 2), [3, 1, 7, 255]);
        assert_eq!(testutil::px(&dst, 2, 2), [9, 9, 9, 9]);
        blit(&mut dst, &src, i64::MIN, i64::MAX);
        blit(&mut dst, &src, i64::MAX, i64::MIN);
    }
}

#[cfg(test)]
mod properties {
    //! Random sizes and parameters through every operation: no panics, and
    //! output sizes follow from the inputs.
    use super::*;
    use crate::worker::options::{Color, Flip, Gravity, GravityKind, Padding, Trim, Watermark};
    use proptest::prelude::*;

    fn kind() -> impl Strategy<Value = GravityKind> {
        use GravityKind::*;
        prop::sample::select(vec![
            Center, North, South, East, West, NorthEast, NorthWest, SouthEast, SouthWest, Smart,
            FocusPoint, Replicate,
        ])
    }

    fn coord() -> impl Strategy<Value = f64> {
        prop_oneof![
            -1.0..1.0f64,
            -500.0..500.0f64,
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(-1e300),
        ]
    }

    fn gravity() -> impl Strategy<Value = Gravity> {
        (kind(), coord(), coord()).prop_map(|(kind, x, y)| Gravity { kind, x, y })
    }

    fn image() -> impl Strategy<Value = RgbaImage> {
        (0u32..40, 0u32..40, any::<u64>()).prop_map(|(w, h, seed)| {
            RgbaImage::from_fn(w, h, |x, y| {
                let v = seed
                    .wrapping_mul(u64::from(x * 131 + y * 7 + 1))
                    .rotate_left(x % 64);
                Rgba(v.to_le_bytes()[..4].try_into().expect("4 of 8 bytes"))
            })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn geometry_never_panics(
            img in image(),
            w in 0u32..80,
            h in 0u32..80,
            g in gravity(),
            scale in prop_oneof![Just(1.0f64), 0.1..4.0f64],
            pad in (0u32..20, 0u32..20, 0u32..20, 0u32..20),
        ) {
            let (iw, ih) = img.dimensions();
            let out = crop_scaled(&img, w, h, &g, scale);
            let side = |want: u32, have: u32| if want == 0 { have } else { want.min(have) };
            prop_assert_eq!(out.dimensions(), (side(w, iw), side(h, ih)));

            let bg = Rgba([1, 2, 3, 4]);
            let out = extend_scaled(&img, w, h, &g, bg, scale);
            if w <= iw && h <= ih {
                prop_assert_eq!(out.dimensions(), (iw, ih));
            } else {
                prop_assert_eq!(out.dimensions(), (if w == 0 { iw } else { w }, if h == 0 { ih } else { h }));
            }

            let p = Padding { top: pad.0, right: pad.1, bottom: pad.2, left: pad.3 };
            let out = pad::pad(&img, &p, bg);
            prop_assert_eq!(out.dimensions(), (iw + pad.1 + pad.3, ih + pad.0 + pad.2));

            let (left, top) = calc_position(w, h, iw, ih, &g, scale, false);
            prop_assert!(left >= 0 && top >= 0 || iw > w || ih > h);
        }

        #[test]
        fn orientation_never_panics(img in image(), deg in any::<u16>(), o in any::<u8>(), fh: bool, fv: bool) {
            let (iw, ih) = img.dimensions();
            let out = rotate(img.clone(), deg);
            let turned = (deg / 90) % 2 == 1;
            prop_assert_eq!(out.dimensions(), if turned { (ih, iw) } else { (iw, ih) });
            let out = orient(img.clone(), o);
            prop_assert_eq!(out.dimensions(), if (5..=8).contains(&o) { (ih, iw) } else { (iw, ih) });
            let out = flip(img.clone(), &Flip { horizontal: fh, vertical: fv });
            prop_assert_eq!(out.dimensions(), (iw, ih));
            // Flipping twice is the identity.
            prop_assert_eq!(flip(out, &Flip { horizontal: fh, vertical: fv }), img);
        }

        #[test]
        fn trim_never_grows(img in image(), threshold in prop_oneof![0.0..300.0f64, Just(f64::NAN)], colour: Option<(u8, u8, u8)>, eh: bool, ev: bool) {
            let t = Trim {
                enabled: true,
                threshold,
                color: colour.map(|(r, g, b)| Color { r, g, b }),
                equal_horizontal: eh,
                equal_vertical: ev,
            };
            let out = trim::trim(&img, &t);
            prop_assert!(out.width() <= img.width() && out.height() <= img.height());
            if let Some((l, t, w, h)) = find_trim(&img, threshold, None, eh, ev) {
                prop_assert!(l + w <= img.width() && t + h <= img.height() && w > 0 && h > 0);
            }
        }

        #[test]
        fn effects_keep_sizes(
            img in image(),
            sigma in prop_oneof![0.0..30.0f32, Just(f32::NAN), Just(f32::INFINITY), Just(-1.0)],
            size in prop_oneof![0u32..50, Just(u32::MAX)],
            bg: (u8, u8, u8, u8),
        ) {
            let dims = img.dimensions();
            prop_assert_eq!(blur(&img, sigma).dimensions(), dims);
            prop_assert_eq!(sharpen(&img, sigma).dimensions(), dims);
            prop_assert_eq!(pixelate(&img, size).dimensions(), dims);
            let mut flat = img.clone();
            flatten(&mut flat, Rgba([bg.0, bg.1, bg.2, bg.3]));
            prop_assert!(pixels(&flat).iter().all(|p| p[3] == 255));
        }

        #[test]
        fn watermark_never_panics(
            mut img in image(),
            mark in image(),
            position in gravity(),
            opacity in prop_oneof![0.0..1.5f64, Just(f64::NAN)],
            scale in prop_oneof![Just(0.0f64), 0.01..3.0f64, Just(f64::INFINITY)],
            offset_scale in 0.5..3.0f64,
        ) {
            let dims = img.dimensions();
            let wm = Watermark { enabled: true, opacity, position, scale };
            watermark_scaled(&mut img, &mark, &wm, offset_scale);
            prop_assert_eq!(img.dimensions(), dims);
        }
    }
}
