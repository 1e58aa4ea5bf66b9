//! Removing uniform borders (imgproxy's `trim`), with libvips `find_trim`'s
//! rules:
//!
//! - Alpha is first flattened onto magenta (255, 0, 255), as imgproxy does,
//!   so transparent borders trim against a transparent top-left pixel.
//! - The background is the given colour, or else the (flattened) top-left
//!   pixel.
//! - Noise is ignored with a 3 × 3 median per channel (edges repeat).
//! - A pixel is content when any channel's median differs from the
//!   background by *more than* `threshold`.
//! - The result is the bounding box of content; `equal_horizontal` /
//!   `equal_vertical` trim both sides by the smaller of the two amounts.
//! - An image with no content comes back unchanged.
//!
//! Speed: the median test needs no sorting. "Median > bg + t" is "at least 5
//! of the 9 neighbours > bg + t", so each pixel gets a 6-bit code (above /
//! below, per channel), the codes are widened to 4-bit counters in a `u32`,
//! and summing the 3 × 3 block tests all six medians at once.

use image::RgbaImage;

use super::{extract, pixels};
use crate::worker::options::Trim;

/// Colour that alpha is flattened onto before looking for borders.
const FLATTEN_ONTO: [u8; 3] = [255, 0, 255];

/// `img` without its uniform borders (see the module doc). `trim.enabled` is
/// the caller's business: this always trims.
pub fn trim(img: &RgbaImage, trim: &Trim) -> RgbaImage {
    let colour = trim.color.map(|c| [c.r, c.g, c.b]);
    match find_trim(
        img,
        trim.threshold,
        colour,
        trim.equal_horizontal,
        trim.equal_vertical,
    ) {
        Some((left, top, width, height)) if (width, height) != img.dimensions() => {
            extract(img, i64::from(left), i64::from(top), width, height)
        }
        _ => img.clone(),
    }
}

/// The content box `(left, top, width, height)` [`trim`] keeps, or `None`
/// when the image is empty or all background.
pub fn find_trim(
    img: &RgbaImage,
    threshold: f64,
    background: Option<[u8; 3]>,
    equal_horizontal: bool,
    equal_vertical: bool,
) -> Option<(u32, u32, u32, u32)> {
    let (iw, ih) = (img.width() as usize, img.height() as usize);
    if iw == 0 || ih == 0 {
        return None;
    }
    let px = pixels(img);
    let bg = background.unwrap_or_else(|| flatten(px[0]));
    let limits = Limits::new(bg, threshold);
    let code_row = |y: usize| -> Vec<u32> {
        px[y * iw..(y + 1) * iw]
            .iter()
            .map(|&p| limits.code(flatten(p)))
            .collect()
    };
    // The three rows of codes the last content row needed: the scans move one
    // row at a time, so each row's codes are usually computed once, and memory
    // stays at three rows.
    let mut recent: Vec<(usize, Vec<u32>)> = Vec::with_capacity(3);
    let mut content_row = |y: usize| -> Vec<bool> {
        let ys = [y.saturating_sub(1), y, (y + 1).min(ih - 1)];
        recent.retain(|(i, _)| ys.contains(i));
        for &r in &ys {
            if !recent.iter().any(|(i, _)| *i == r) {
                recent.push((r, code_row(r)));
            }
        }
        let row = |r: usize| {
            let (_, codes) = recent.iter().find(|(i, _)| *i == r).expect("cached above");
            codes.as_slice()
        };
        let [a, b, c] = ys.map(row);
        let column: Vec<u32> = (0..iw).map(|x| a[x] + b[x] + c[x]).collect();
        (0..iw)
            .map(|x| {
                let sum = column[x.saturating_sub(1)] + column[x] + column[(x + 1).min(iw - 1)];
                // A counter ≥ 5 (of 9) sets its top bit once 3 is added.
                (sum + 0x0033_3333) & 0x0088_8888 != 0
            })
            .collect()
    };

    let top = (0..ih).find(|&y| content_row(y).contains(&true))?;
    let bottom = (top..ih).rev().find(|&y| content_row(y).contains(&true))?;
    let (mut left, mut right) = (iw, 0);
    for y in top..=bottom {
        let row = content_row(y);
        if let Some(l) = row.iter().position(|&c| c) {
            left = left.min(l);
            right = right.max(
                row.iter()
                    .rposition(|&c| c)
                    .expect("has a first, has a last"),
            );
        }
    }
    let (mut left, mut top) = (left as u32, top as u32);
    let (mut width, mut height) = (right as u32 + 1 - left, bottom as u32 + 1 - top);
    if equal_horizontal {
        let cut_right = iw as u32 - left - width;
        width += left.saturating_sub(cut_right) + cut_right.saturating_sub(left);
        left = left.min(cut_right);
    }
    if equal_vertical {
        let cut_bottom = ih as u32 - top - height;
        height += top.saturating_sub(cut_bottom) + cut_bottom.saturating_sub(top);
        top = top.min(cut_bottom);
    }
    Some((left, top, width, height))
}

/// The colour a pixel shows over [`FLATTEN_ONTO`].
fn flatten(p: [u8; 4]) -> [u8; 3] {
    let a = u32::from(p[3]);
    std::array::from_fn(|i| {
        super::mul_div255(u32::from(p[i]), a)
            + super::mul_div255(u32::from(FLATTEN_ONTO[i]), 255 - a)
    })
}

/// Per channel, the values above and below which a pixel differs from the
/// background by more than the threshold.
struct Limits {
    /// `v > above[c]` counts as brighter than the background.
    above: [i32; 3],
    /// `v < below[c]` counts as darker.
    below: [i32; 3],
}

impl Limits {
    fn new(bg: [u8; 3], threshold: f64) -> Self {
        // |v - bg| > t for integer v ⟺ v > bg + floor(t) or v < bg - floor(t)
        // (t ≥ 0; a negative or NaN threshold counts as 0).
        let t = if threshold >= 0.0 {
            threshold.min(1024.0).floor() as i32
        } else {
            0
        };
        Self {
            above: bg.map(|b| i32::from(b) + t),
            below: bg.map(|b| i32::from(b) - t),
        }
    }

    /// Six 4-bit counters (one per channel and direction), each 0 or 1.
    fn code(&self, p: [u8; 3]) -> u32 {
        let mut code = 0;
        for (c, &v) in p.iter().enumerate() {
            let v = i32::from(v);
            if v > self.above[c] {
                code |= 1 << (8 * c);
            }
            if v < self.below[c] {
                code |= 1 << (8 * c + 4);
            }
        }
        code
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::engine::ops::testutil::{coord_card, px};
    use crate::worker::options::Color;
    use image::Rgba;

    /// `w × h` of `bg` with a `cw × ch` block of `fg` at (`x`, `y`).
    fn framed(
        w: u32,
        h: u32,
        bg: [u8; 4],
        fg: [u8; 4],
        (x, y, cw, ch): (u32, u32, u32, u32),
    ) -> RgbaImage {
        RgbaImage::from_fn(w, h, |px, py| {
            Rgba(if (x..x + cw).contains(&px) && (y..y + ch).contains(&py) {
                fg
            } else {
                bg
            })
        })
    }

    fn opts(threshold: f64) -> Trim {
        Trim {
            enabled: true,
            threshold,
            ..Trim::default()
        }
    }

    /// The content box of a block on a white border, with its colour intact.
    #[test]
    fn finds_the_content_box() {
        let img = framed(61, 41, [255; 4], [10, 200, 30, 255], (7, 5, 20, 9));
        assert_eq!(
            find_trim(&img, 10.0, None, false, false),
            Some((7, 5, 20, 9))
        );
        let out = trim(&img, &opts(10.0));
        assert_eq!(out.dimensions(), (20, 9));
        assert!(out.pixels().all(|p| p.0 == [10, 200, 30, 255]));
    }

    /// Differences at or under the threshold are background; single-pixel
    /// specks are removed by the median.
    #[test]
    fn threshold_and_noise() {
        let mut img = framed(
            40,
            30,
            [100, 100, 100, 255],
            [111, 100, 100, 255],
            (10, 10, 5, 5),
        );
        assert_eq!(find_trim(&img, 11.0, None, false, false), None);
        assert_eq!(
            find_trim(&img, 10.0, None, false, false),
            Some((10, 10, 5, 5))
        );
        img.put_pixel(35, 2, Rgba([0, 0, 0, 255]));
        img.put_pixel(1, 28, Rgba([255, 255, 255, 255]));
        assert_eq!(
            find_trim(&img, 10.0, None, false, false),
            Some((10, 10, 5, 5))
        );
    }

    /// An explicit colour replaces the top-left pixel as background: trimming
    /// red off an image whose corner is blue keeps the blue.
    #[test]
    fn explicit_colour() {
        let mut img = framed(30, 30, [255, 0, 0, 255], [0, 0, 0, 255], (10, 10, 10, 10));
        for x in 0..3 {
            for y in 0..3 {
                img.put_pixel(x, y, Rgba([0, 0, 255, 255]));
            }
        }
        let t = Trim {
            color: Some(Color { r: 255, g: 0, b: 0 }),
            ..opts(10.0)
        };
        let out = trim(&img, &t);
        assert_eq!(out.dimensions(), (20, 20));
        assert_eq!(px(&out, 0, 0), [0, 0, 255, 255]);
    }

    /// Equal trims cut both sides by the smaller amount.
    #[test]
    fn equal_sides() {
        let img = framed(50, 40, [0, 0, 0, 255], [255; 4], (5, 12, 30, 10));
        // left 5, right 15 → 5 each; top 12, bottom 18 → 12 each.
        assert_eq!(
            find_trim(&img, 10.0, None, true, false),
            Some((5, 12, 40, 10))
        );
        assert_eq!(
            find_trim(&img, 10.0, None, false, true),
            Some((5, 12, 30, 16))
        );
        let img = framed(50, 40, [0, 0, 0, 255], [255; 4], (20, 25, 10, 10));
        assert_eq!(
            find_trim(&img, 10.0, None, true, true),
            Some((20, 5, 10, 30))
        );
    }

    /// Transparent borders trim: alpha is flattened first.
    #[test]
    fn transparent_borders() {
        let img = framed(30, 20, [0, 0, 0, 0], [0, 0, 0, 255], (3, 4, 5, 6));
        assert_eq!(
            find_trim(&img, 10.0, None, false, false),
            Some((3, 4, 5, 6))
        );
    }

    /// Nothing to trim, nothing to look at, or nonsense thresholds: no panic,
    /// image back unchanged.
    #[test]
    fn degenerate_inputs() {
        let flat = framed(9, 9, [5; 4], [5; 4], (0, 0, 0, 0));
        assert_eq!(trim(&flat, &opts(10.0)), flat);
        assert_eq!(
            trim(&RgbaImage::new(0, 3), &opts(10.0)).dimensions(),
            (0, 3)
        );
        let card = coord_card(20, 20);
        for t in [f64::NAN, -5.0, f64::INFINITY, 0.0] {
            let _ = trim(&card, &opts(t));
        }
        let one = RgbaImage::from_pixel(1, 1, Rgba([1, 2, 3, 4]));
        assert_eq!(trim(&one, &opts(0.0)), one);
    }
}
