//! Whole-pixel geometry: quarter-turn rotations, flips, and EXIF
//! orientation.
//!
//! 180° turns and flips work in place on the owned buffer; quarter turns go
//! through a tiled transpose so both the reads and the writes stay in cache.

use image::RgbaImage;

use super::{pixels, pixels_mut};
use crate::worker::options::Flip;

/// Side of the square tiles quarter turns copy through (64 × 64 × 4 bytes =
/// 16 KiB in and out: within L1/L2).
const TILE: usize = 64;

/// `img` turned clockwise by `degrees`, taken as imgproxy does: whole quarter
/// turns (`degrees / 90`), modulo a full turn, so 0/90/180/270 are exact.
pub fn rotate(img: RgbaImage, degrees: u16) -> RgbaImage {
    match (degrees / 90) % 4 {
        1 => remap(&img, Turn::Clockwise),
        2 => rotate180(img),
        3 => remap(&img, Turn::CounterClockwise),
        _ => img,
    }
}

/// `img` mirrored left-right and/or top-bottom.
pub fn flip(mut img: RgbaImage, flip: &Flip) -> RgbaImage {
    if flip.horizontal && flip.vertical {
        return rotate180(img);
    }
    let w = img.width() as usize;
    if w == 0 {
        return img;
    }
    if flip.horizontal {
        pixels_mut(&mut img)
            .chunks_exact_mut(w)
            .for_each(<[[u8; 4]]>::reverse);
    }
    if flip.vertical {
        let px = pixels_mut(&mut img);
        let h = px.len() / w;
        for y in 0..h / 2 {
            let (head, tail) = px.split_at_mut((h - 1 - y) * w);
            head[y * w..(y + 1) * w].swap_with_slice(&mut tail[..w]);
        }
    }
    img
}

/// `img` turned upright for an EXIF `Orientation` value: 1 = as stored,
/// 2 = mirrored, 3 = 180°, 4 = mirrored top-bottom, 5 = transposed,
/// 6 = needs 90° clockwise, 7 = transversed, 8 = needs 90° counter-clockwise.
/// Anything else is left as is.
///
/// As imgproxy: turn clockwise by 180 (3, 4), 90 (5, 6) or 270 (7, 8), then
/// mirror left-right for the mirrored values (2, 4, 5, 7).
pub fn orient(img: RgbaImage, exif_orientation: u8) -> RgbaImage {
    let horizontal = Flip {
        horizontal: true,
        vertical: false,
    };
    match exif_orientation {
        2 => flip(img, &horizontal),
        3 => rotate180(img),
        4 => flip(
            img,
            &Flip {
                horizontal: false,
                vertical: true,
            },
        ),
        5 => remap(&img, Turn::Transpose),
        6 => remap(&img, Turn::Clockwise),
        7 => remap(&img, Turn::Transverse),
        8 => remap(&img, Turn::CounterClockwise),
        _ => img,
    }
}

fn rotate180(mut img: RgbaImage) -> RgbaImage {
    pixels_mut(&mut img).reverse();
    img
}

/// The geometry of a quarter-turn family member: each swaps width and height.
#[derive(Clone, Copy)]
enum Turn {
    Clockwise,
    CounterClockwise,
    /// Mirror across the main diagonal: (x, y) → (y, x).
    Transpose,
    /// Mirror across the anti-diagonal.
    Transverse,
}

/// Builds the `h × w` result of `turn`.
fn remap(img: &RgbaImage, turn: Turn) -> RgbaImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    // Output is h wide and w tall; each closure maps source (x, y) to the
    // output index. One monomorphised copy per turn keeps the inner loop free
    // of the match.
    match turn {
        Turn::Clockwise => remap_with(img, |x, y| x * h + (h - 1 - y)),
        Turn::CounterClockwise => remap_with(img, |x, y| (w - 1 - x) * h + y),
        Turn::Transpose => remap_with(img, |x, y| x * h + y),
        Turn::Transverse => remap_with(img, |x, y| (w - 1 - x) * h + (h - 1 - y)),
    }
}

/// Copies every source pixel (x, y) to output index `place(x, y)`, a
/// 64 × 64 tile at a time so reads and writes both stay in cache.
fn remap_with(img: &RgbaImage, place: impl Fn(usize, usize) -> usize) -> RgbaImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = RgbaImage::new(img.height(), img.width());
    let src = pixels(img);
    let dst = pixels_mut(&mut out);
    for ty in (0..h).step_by(TILE) {
        for tx in (0..w).step_by(TILE) {
            for y in ty..(ty + TILE).min(h) {
                let row = &src[y * w..(y + 1) * w];
                for x in tx..(tx + TILE).min(w) {
                    dst[place(x, y)] = row[x];
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::engine::ops::testutil::{coord_card, px};
    use image::Rgba;

    const MARK: [u8; 4] = [255, 0, 0, 255];
    const PLAIN: [u8; 4] = [0, 0, 0, 255];

    /// A 5×3 card (odd, non-square) with one marked pixel at `at`.
    fn marked(at: (u32, u32)) -> RgbaImage {
        RgbaImage::from_fn(5, 3, |x, y| Rgba(if (x, y) == at { MARK } else { PLAIN }))
    }

    fn mark_of(img: &RgbaImage) -> (u32, u32) {
        let found: Vec<_> = img
            .enumerate_pixels()
            .filter(|(_, _, p)| p.0 == MARK)
            .map(|(x, y, _)| (x, y))
            .collect();
        assert_eq!(found.len(), 1);
        found[0]
    }

    /// The camera's top-left corner (where the scene's top-left is) must end
    /// up at the top-left after `orient`. For each EXIF value, the stored
    /// image keeps that corner at a different place (CIPA DC-008 table).
    #[test]
    fn all_exif_orientations_put_the_scene_corner_top_left() {
        // Stored as a 5×3 image for 1-4 (landscape) and as 5×3 that displays
        // 3×5 for 5-8. `corner` is where the scene's top-left is stored.
        let cases = [
            (1, (0, 0)),
            (2, (4, 0)),
            (3, (4, 2)),
            (4, (0, 2)),
            (5, (0, 0)),
            (6, (0, 2)),
            (7, (4, 2)),
            (8, (4, 0)),
        ];
        for (orientation, corner) in cases {
            let out = orient(marked(corner), orientation);
            let want_dims = if orientation >= 5 { (3, 5) } else { (5, 3) };
            assert_eq!(out.dimensions(), want_dims, "orientation {orientation}");
            assert_eq!(mark_of(&out), (0, 0), "orientation {orientation}");
        }
    }

    /// A second corner pins down the mirror: the scene's top-right.
    #[test]
    fn all_exif_orientations_put_the_scene_top_right_corner_top_right() {
        let cases = [
            (1, (4, 0)),
            (2, (0, 0)),
            (3, (0, 2)),
            (4, (4, 2)),
            (5, (0, 2)),
            (6, (0, 0)),
            (7, (4, 0)),
            (8, (4, 2)),
        ];
        for (orientation, corner) in cases {
            let out = orient(marked(corner), orientation);
            assert_eq!(
                mark_of(&out),
                (out.width() - 1, 0),
                "orientation {orientation}"
            );
        }
    }

    #[test]
    fn unknown_orientations_leave_the_image() {
        for o in [0, 9, 255] {
            assert_eq!(orient(marked((1, 1)), o), marked((1, 1)));
        }
    }

    /// Clockwise turns, checked pixel by pixel on a coordinate card, and four
    /// quarter turns make a full one.
    #[test]
    fn rotations() {
        let card = coord_card(70, 67); // bigger than a tile on one side
        let r90 = rotate(card.clone(), 90);
        assert_eq!(r90.dimensions(), (67, 70));
        // Clockwise: the source's bottom-left comes to the top-left.
        assert_eq!(px(&r90, 0, 0)[..2], [0, 66]);
        assert_eq!(px(&r90, 66, 0)[..2], [0, 0]);
        assert_eq!(px(&r90, 10, 20)[..2], [20, 56]);
        let r180 = rotate(card.clone(), 180);
        assert_eq!(px(&r180, 0, 0)[..2], [69, 66]);
        let r270 = rotate(card.clone(), 270);
        assert_eq!(px(&r270, 0, 0)[..2], [69, 0]);
        let full = rotate(rotate(rotate(rotate(card.clone(), 90), 90), 90), 90);
        assert_eq!(full, card);
        assert_eq!(rotate(card.clone(), 360), card);
        assert_eq!(rotate(card.clone(), 450), r90);
        assert_eq!(rotate(card.clone(), 45), card);
    }

    #[test]
    fn flips() {
        let card = coord_card(5, 3);
        let h = flip(
            card.clone(),
            &Flip {
                horizontal: true,
                vertical: false,
            },
        );
        assert_eq!(px(&h, 0, 1)[..2], [4, 1]);
        let v = flip(
            card.clone(),
            &Flip {
                horizontal: false,
                vertical: true,
            },
        );
        assert_eq!(px(&v, 1, 0)[..2], [1, 2]);
        assert_eq!(px(&v, 1, 1)[..2], [1, 1]);
        let both = flip(
            card.clone(),
            &Flip {
                horizontal: true,
                vertical: true,
            },
        );
        assert_eq!(both, rotate(card.clone(), 180));
        assert_eq!(flip(card.clone(), &Flip::default()), card);
    }

    #[test]
    fn empty_images() {
        for d in [0, 90, 180, 270] {
            assert_eq!(
                rotate(RgbaImage::new(0, 4), d).dimensions(),
                if d % 180 == 0 { (0, 4) } else { (4, 0) }
            );
        }
        for o in 1..=8 {
            let _ = orient(RgbaImage::new(3, 0), o);
        }
        let both = Flip {
            horizontal: true,
            vertical: true,
        };
        assert_eq!(flip(RgbaImage::new(0, 0), &both).dimensions(), (0, 0));
        assert_eq!(
            flip(
                RgbaImage::new(2, 0),
                &Flip {
                    horizontal: true,
                    vertical: true
                }
            )
            .dimensions(),
            (2, 0)
        );
    }
}
