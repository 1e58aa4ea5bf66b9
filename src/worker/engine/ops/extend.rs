//! Placing an image on a larger canvas: imgproxy's `extend` and
//! `extend_aspect_ratio`, and the `embed` primitive `pad` shares.

use image::{Rgba, RgbaImage};

use super::gravity::calc_position;
use super::{blit, canvas};
use crate::worker::options::Gravity;

/// `img` on a `width × height` canvas of `background`, placed by `gravity`
/// (offsets in pixels or fractions of the canvas; `fp` centres the image on
/// the point). A 0 side keeps the image's side. When the canvas is no larger
/// on either side the image comes back unchanged.
///
/// As in imgproxy, a canvas larger on one side only but *smaller* on the
/// other cuts the image on that side (at the right/bottom); the pipeline only
/// asks for that when its own sizes already agree.
pub fn extend(
    img: &RgbaImage,
    width: u32,
    height: u32,
    gravity: &Gravity,
    background: Rgba<u8>,
) -> RgbaImage {
    extend_scaled(img, width, height, gravity, background, 1.0)
}

/// [`extend`] with pixel offsets multiplied by `offset_scale` (the dpr, as
/// imgproxy does after resizing).
pub fn extend_scaled(
    img: &RgbaImage,
    width: u32,
    height: u32,
    gravity: &Gravity,
    background: Rgba<u8>,
    offset_scale: f64,
) -> RgbaImage {
    let (iw, ih) = img.dimensions();
    if width <= iw && height <= ih {
        return img.clone();
    }
    let w = if width == 0 { iw } else { width };
    let h = if height == 0 { ih } else { height };
    let (left, top) = calc_position(w, h, iw, ih, gravity, offset_scale, false);
    embed(img, w, h, left, top, background)
}

/// A `width × height` canvas of `background` with `img`'s top-left corner at
/// (`left`, `top`); whatever falls outside is cut. Canvases beyond
/// [`super::MAX_CANVAS_PIXELS`] are clipped.
pub fn embed(
    img: &RgbaImage,
    width: u32,
    height: u32,
    left: i64,
    top: i64,
    background: Rgba<u8>,
) -> RgbaImage {
    let mut out = canvas(width, height, background);
    blit(&mut out, img, left, top);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::engine::ops::testutil::{coord_card, px};
    use crate::worker::options::GravityKind;

    const BG: Rgba<u8> = Rgba([1, 2, 3, 4]);

    fn g(kind: GravityKind, x: f64, y: f64) -> Gravity {
        Gravity { kind, x, y }
    }

    /// Where the image's (0, 0) pixel lands, checking that the canvas around
    /// it is background and the image is intact.
    fn placed(kind: GravityKind, x: f64, y: f64) -> (u32, u32) {
        let img = coord_card(21, 11);
        let out = extend(&img, 101, 61, &g(kind, x, y), BG);
        assert_eq!(out.dimensions(), (101, 61));
        let pos = out
            .enumerate_pixels()
            .find(|(_, _, p)| p.0 != BG.0)
            .map(|(x, y, _)| (x, y))
            .expect("image is on the canvas");
        assert_eq!(px(&out, pos.0 + 20, pos.1 + 10), [20, 10, 7, 255]);
        let image_pixels = out.pixels().filter(|p| p.0 != BG.0).count();
        assert_eq!(image_pixels, 21 * 11, "{kind:?}");
        pos
    }

    /// Each gravity on an odd canvas: centre at round((101-21+1)/2) = 40 (half
    /// to even), round((61-11+1)/2) = 26; edges flush; offsets inward.
    #[test]
    fn gravities_place_the_image() {
        use GravityKind::*;
        assert_eq!(placed(Center, 0.0, 0.0), (40, 26));
        assert_eq!(placed(North, 0.0, 0.0), (40, 0));
        assert_eq!(placed(South, 0.0, 0.0), (40, 50));
        assert_eq!(placed(East, 0.0, 0.0), (80, 26));
        assert_eq!(placed(West, 0.0, 0.0), (0, 26));
        assert_eq!(placed(NorthEast, 0.0, 0.0), (80, 0));
        assert_eq!(placed(NorthWest, 0.0, 0.0), (0, 0));
        assert_eq!(placed(SouthEast, 0.0, 0.0), (80, 50));
        assert_eq!(placed(SouthWest, 0.0, 0.0), (0, 50));
        assert_eq!(placed(SouthEast, 4.0, 6.0), (76, 44));
        assert_eq!(placed(Center, -0.1, 5.0), (30, 31));
        assert_eq!(placed(FocusPoint, 0.25, 0.75), (15, 41));
        assert_eq!(placed(West, -1e15, 1e15), (0, 50));
    }

    #[test]
    fn sizes() {
        let img = coord_card(21, 11);
        assert_eq!(extend(&img, 21, 11, &Gravity::CENTER, BG), img);
        assert_eq!(extend(&img, 10, 5, &Gravity::CENTER, BG), img);
        // 0 keeps the side.
        assert_eq!(
            extend(&img, 0, 30, &Gravity::CENTER, BG).dimensions(),
            (21, 30)
        );
        // Wider but shorter: imgproxy cuts the bottom.
        let out = extend(&img, 31, 5, &Gravity::CENTER, BG);
        assert_eq!(out.dimensions(), (31, 5));
        assert_eq!(px(&out, 6, 0), [0, 0, 7, 255]);
        assert_eq!(px(&out, 5, 0), BG.0);
        assert_eq!(
            extend(&RgbaImage::new(0, 0), 3, 2, &Gravity::CENTER, BG).dimensions(),
            (3, 2)
        );
    }

    #[test]
    fn offset_scale_multiplies_pixel_offsets() {
        let img = coord_card(21, 11);
        let out = extend_scaled(&img, 101, 61, &g(GravityKind::NorthWest, 3.0, 2.0), BG, 2.0);
        assert_eq!(px(&out, 6, 4), [0, 0, 7, 255]);
        assert_eq!(px(&out, 5, 4), BG.0);
    }
}
