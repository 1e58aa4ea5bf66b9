//! Cutting a window out of an image, placed by gravity (imgproxy's `crop`
//! option and the final crop of `fill` resizing).

use image::RgbaImage;

use super::gravity::calc_position;
use super::{extract, smart};
use crate::worker::options::{Gravity, GravityKind};

/// The `width × height` window of `img` that `gravity` picks. A 0 side means
/// the full side, larger sides clamp to the image; when nothing is cut the
/// image comes back unchanged. Offsets are in source pixels (or fractions).
/// `GravityKind::Smart` chooses the window by content ([`smart::smart_crop`]).
pub fn crop(img: &RgbaImage, width: u32, height: u32, gravity: &Gravity) -> RgbaImage {
    crop_scaled(img, width, height, gravity, 1.0)
}

/// [`crop`] with pixel offsets multiplied by `offset_scale`: imgproxy scales
/// the gravity offsets of the crop after resizing by the dpr.
pub fn crop_scaled(
    img: &RgbaImage,
    width: u32,
    height: u32,
    gravity: &Gravity,
    offset_scale: f64,
) -> RgbaImage {
    let (iw, ih) = img.dimensions();
    let side = |want: u32, have: u32| if want == 0 { have } else { want.min(have) };
    let (cw, ch) = (side(width, iw), side(height, ih));
    if cw >= iw && ch >= ih {
        return img.clone();
    }
    if gravity.kind == GravityKind::Smart {
        return smart::smart_crop(img, cw, ch);
    }
    let (left, top) = calc_position(iw, ih, cw, ch, gravity, offset_scale, false);
    extract(img, left, top, cw, ch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::engine::ops::testutil::{GRID, coord_card, grid_card, px};

    fn g(kind: GravityKind, x: f64, y: f64) -> Gravity {
        Gravity { kind, x, y }
    }

    /// A just-under-a-third window on a 3×3 colour grid (odd 99×63 canvas) lands
    /// wholly inside the region its gravity names: every pixel of the crop
    /// has that region's colour.
    #[test]
    fn each_gravity_picks_its_grid_region() {
        use GravityKind::*;
        let card = grid_card(99, 63);
        let cases = [
            (NorthWest, 0),
            (North, 1),
            (NorthEast, 2),
            (West, 3),
            (Center, 4),
            (East, 5),
            (SouthWest, 6),
            (South, 7),
            (SouthEast, 8),
        ];
        for (kind, region) in cases {
            let out = crop(&card, 31, 19, &g(kind, 0.0, 0.0));
            assert_eq!(out.dimensions(), (31, 19));
            assert!(out.pixels().all(|p| p.0 == GRID[region]), "{kind:?}");
        }
    }

    /// Exact positions, traced through a coordinate card: offsets move the
    /// window inwards from edges, fractions are of the image size, fp centres
    /// on the point, and everything clamps to the image.
    #[test]
    fn offsets_and_focus_points_land_exactly() {
        use GravityKind::*;
        let card = coord_card(101, 61);
        let origin = |kind, x, y| {
            let out = crop(&card, 21, 11, &g(kind, x, y));
            assert_eq!(out.dimensions(), (21, 11));
            let p = px(&out, 0, 0);
            // The window is contiguous: its far corner is 20/10 further.
            assert_eq!(px(&out, 20, 10)[..2], [p[0] + 20, p[1] + 10]);
            (p[0], p[1])
        };
        assert_eq!(origin(Center, 0.0, 0.0), (40, 26));
        assert_eq!(origin(Center, 7.0, -3.0), (47, 23));
        assert_eq!(origin(NorthEast, 7.0, 3.0), (73, 3));
        assert_eq!(origin(SouthWest, 7.0, 3.0), (7, 47));
        assert_eq!(origin(South, 0.1, 0.0), (50, 50));
        assert_eq!(origin(West, 1e12, -1e12), (80, 0));
        assert_eq!(origin(FocusPoint, 0.25, 0.75), (15, 41));
        assert_eq!(origin(FocusPoint, 0.0, 1.0), (0, 50));
    }

    /// Offset scaling (dpr) applies to pixel offsets only.
    #[test]
    fn offset_scale_multiplies_pixel_offsets() {
        let card = coord_card(101, 61);
        let out = crop_scaled(&card, 21, 11, &g(GravityKind::NorthWest, 5.0, 0.1), 2.0);
        assert_eq!(px(&out, 0, 0)[..2], [10, 6]);
    }

    /// 0 means "whole side"; oversize clamps; no cut returns the input.
    #[test]
    fn sizes_clamp() {
        let card = coord_card(40, 30);
        assert_eq!(crop(&card, 0, 10, &Gravity::CENTER).dimensions(), (40, 10));
        assert_eq!(
            crop(&card, 500, 10, &Gravity::CENTER).dimensions(),
            (40, 10)
        );
        assert_eq!(crop(&card, 0, 0, &Gravity::CENTER), card);
        assert_eq!(crop(&card, 40, 300, &Gravity::CENTER), card);
        let empty = RgbaImage::new(0, 0);
        assert_eq!(crop(&empty, 10, 10, &Gravity::CENTER).dimensions(), (0, 0));
        let line = RgbaImage::new(0, 5);
        assert_eq!(crop(&line, 10, 2, &Gravity::CENTER).dimensions(), (0, 2));
    }
}
