//! Borders around the result (imgproxy's `padding`), in CSS order.

use image::{Rgba, RgbaImage};

use super::extend::embed;
use super::gravity::scale_even;
use crate::worker::options::Padding;

/// `img` with `padding` pixels of `background` added on each side.
pub fn pad(img: &RgbaImage, padding: &Padding, background: Rgba<u8>) -> RgbaImage {
    if !padding.is_enabled() {
        return img.clone();
    }
    let width = img
        .width()
        .saturating_add(padding.left)
        .saturating_add(padding.right);
    let height = img
        .height()
        .saturating_add(padding.top)
        .saturating_add(padding.bottom);
    embed(
        img,
        width,
        height,
        i64::from(padding.left),
        i64::from(padding.top),
        background,
    )
}

/// Padding in output pixels: imgproxy multiplies each side by the dpr,
/// rounding half to even.
pub fn scale_padding(padding: &Padding, dpr: f64) -> Padding {
    let side = |v: u32| scale_even(i64::from(v), dpr).clamp(0, i64::from(u32::MAX)) as u32;
    Padding {
        top: side(padding.top),
        right: side(padding.right),
        bottom: side(padding.bottom),
        left: side(padding.left),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::engine::ops::testutil::{coord_card, px};

    const BG: Rgba<u8> = Rgba([200, 100, 50, 255]);

    /// The image sits at (left, top); each border is background.
    #[test]
    fn pads_each_side() {
        let img = coord_card(5, 3);
        let p = Padding {
            top: 1,
            right: 2,
            bottom: 3,
            left: 4,
        };
        let out = pad(&img, &p, BG);
        assert_eq!(out.dimensions(), (11, 7));
        assert_eq!(px(&out, 4, 1), [0, 0, 7, 255]);
        assert_eq!(px(&out, 8, 3), [4, 2, 7, 255]);
        for (x, y) in [(3, 1), (4, 0), (9, 3), (8, 4), (0, 0), (10, 6)] {
            assert_eq!(px(&out, x, y), BG.0, "({x}, {y})");
        }
        let image_pixels = out.pixels().filter(|p| p.0 != BG.0).count();
        assert_eq!(image_pixels, 15);
    }

    #[test]
    fn no_padding_and_extremes() {
        let img = coord_card(5, 3);
        assert_eq!(pad(&img, &Padding::default(), BG), img);
        let empty = pad(
            &RgbaImage::new(0, 0),
            &Padding {
                top: 1,
                right: 1,
                bottom: 1,
                left: 1,
            },
            BG,
        );
        assert_eq!(empty.dimensions(), (2, 2));
    }

    #[test]
    fn padding_scales_with_dpr_half_to_even() {
        let p = Padding {
            top: 1,
            right: 3,
            bottom: 5,
            left: 0,
        };
        assert_eq!(
            scale_padding(&p, 1.5),
            Padding {
                top: 2,
                right: 4,
                bottom: 8,
                left: 0
            }
        );
        assert_eq!(
            scale_padding(&p, 2.5),
            Padding {
                top: 2,
                right: 8,
                bottom: 12,
                left: 0
            }
        );
    }
}
