//! Content-aware cropping (`g:sm`): put the window where the picture is
//! interesting.
//!
//! Choice: an *attention map*, in the spirit of libvips' `attention` strategy
//! that imgproxy uses, not an entropy window. Entropy rewards any texture —
//! foliage, noise, JPEG grain in a sky — while what people want kept is the
//! subject: things with edges, strong colour, and people. So:
//!
//! 1. Average the image (premultiplied, so transparent areas count as
//!    nothing) onto a grid of at most 32 × 32 cells. One pass, sampling at
//!    most ~16 × 16 pixels per cell, so the cost is bounded regardless of the
//!    image size; 32 cells per side is also the precision libvips places with.
//! 2. Score each cell (CIE XYZ / L\*a\*b\* of its mean colour):
//!    - *edges*: |5 × Laplacian| of luminance Y over neighbouring cells;
//!    - *skin*: `100 − 100 × distance` between the cell's normalised XYZ
//!      direction and a skin-tone direction (the smartcrop.js vector libvips
//!      uses), only where Y > 5 so dark noise doesn't score;
//!    - *colourfulness*: chroma C\*ab, also only where Y > 5. (libvips scores
//!      the a\* channel alone, which favours reds and *penalises* greens; we
//!      take chroma so a green or blue subject counts as much as a red one.)
//! 3. Blur the score map with a Gaussian whose sigma grows with the crop size
//!    (a tenth of the window's diagonal in cells, at least one cell): a big
//!    window should cover the most interesting *area*, not one sharp cell.
//! 4. Centre the window on the highest-scoring cell and clamp it inside the
//!    image.

use image::RgbaImage;

use super::{extract, pixels};

/// Cells per side of the attention grid (fewer when the image is smaller).
const GRID: u32 = 32;
/// Samples per cell side at most; bounds the cost on huge images.
const SAMPLES_PER_CELL: u32 = 16;

/// The `width × height` window (clamped to the image) that covers the most
/// interesting part of `img`. Returns the image unchanged when nothing is cut.
pub fn smart_crop(img: &RgbaImage, width: u32, height: u32) -> RgbaImage {
    let (iw, ih) = img.dimensions();
    let (cw, ch) = (width.min(iw), height.min(ih));
    if cw >= iw && ch >= ih {
        return img.clone();
    }
    let (left, top) = attention_window(img, cw, ch);
    extract(img, left, top, cw, ch)
}

/// Top-left corner of the `width × height` window [`smart_crop`] would pick.
pub fn attention_window(img: &RgbaImage, width: u32, height: u32) -> (i64, i64) {
    let (iw, ih) = img.dimensions();
    if iw == 0 || ih == 0 {
        return (0, 0);
    }
    let (gw, gh) = (iw.min(GRID) as usize, ih.min(GRID) as usize);
    let means = cell_means(img, gw, gh);
    let scores = blur_grid(
        &score_cells(&means, gw, gh),
        gw,
        gh,
        window_sigma(width, height, iw, ih, gw, gh),
    );
    let best = scores
        .iter()
        .enumerate()
        .fold(
            (0, f32::MIN),
            |acc, (i, &s)| if s > acc.1 { (i, s) } else { acc },
        )
        .0;
    let (cx, cy) = ((best % gw) as u64, (best / gw) as u64);
    // The centre of the winning cell, in image pixels.
    let ax = ((2 * cx + 1) * u64::from(iw) / (2 * gw as u64)) as i64;
    let ay = ((2 * cy + 1) * u64::from(ih) / (2 * gh as u64)) as i64;
    let left = (ax - i64::from(width) / 2).clamp(0, i64::from(iw.saturating_sub(width)));
    let top = (ay - i64::from(height) / 2).clamp(0, i64::from(ih.saturating_sub(height)));
    (left, top)
}

/// Mean premultiplied sRGB colour (0..=1) of each cell, row-major.
fn cell_means(img: &RgbaImage, gw: usize, gh: usize) -> Vec<[f32; 3]> {
    let (iw, ih) = (img.width() as usize, img.height() as usize);
    let step_x = (iw / (gw * SAMPLES_PER_CELL as usize)).max(1);
    let step_y = (ih / (gh * SAMPLES_PER_CELL as usize)).max(1);
    let col_cell: Vec<usize> = (0..iw).step_by(step_x).map(|x| x * gw / iw).collect();
    let px = pixels(img);
    let mut sums = vec![[0u64; 4]; gw * gh];
    for y in (0..ih).step_by(step_y) {
        let row = &px[y * iw..(y + 1) * iw];
        let cells = &mut sums[(y * gh / ih) * gw..][..gw];
        for (&cell, p) in col_cell.iter().zip(row.iter().step_by(step_x)) {
            let a = u64::from(p[3]);
            let s = &mut cells[cell];
            s[0] += u64::from(p[0]) * a;
            s[1] += u64::from(p[1]) * a;
            s[2] += u64::from(p[2]) * a;
            s[3] += 1;
        }
    }
    sums.iter()
        .map(|s| {
            let n = (s[3].max(1) * 255 * 255) as f32;
            [s[0] as f32 / n, s[1] as f32 / n, s[2] as f32 / n]
        })
        .collect()
}

fn srgb_to_linear(c: f32) -> f32 {
    if c <= 0.04045 {
        c / 12.92
    } else {
        ((c + 0.055) / 1.055).powf(2.4)
    }
}

/// CIE XYZ (D65, Y in 0..=100) of an sRGB colour in 0..=1.
fn xyz(rgb: [f32; 3]) -> [f32; 3] {
    let [r, g, b] = rgb.map(srgb_to_linear);
    [
        100.0 * (0.4124 * r + 0.3576 * g + 0.1805 * b),
        100.0 * (0.2126 * r + 0.7152 * g + 0.0722 * b),
        100.0 * (0.0193 * r + 0.1192 * g + 0.9505 * b),
    ]
}

/// Chroma C\*ab of an XYZ colour (D65 white).
fn chroma(xyz: [f32; 3]) -> f32 {
    let f = |t: f32| {
        if t > 0.008856 {
            t.cbrt()
        } else {
            7.787 * t + 16.0 / 116.0
        }
    };
    let (fx, fy, fz) = (f(xyz[0] / 95.047), f(xyz[1] / 100.0), f(xyz[2] / 108.883));
    let (a, b) = (500.0 * (fx - fy), 200.0 * (fy - fz));
    (a * a + b * b).sqrt()
}

/// Per-cell interest: edges + skin + colourfulness (see the module doc).
fn score_cells(means: &[[f32; 3]], gw: usize, gh: usize) -> Vec<f32> {
    // smartcrop.js's skin-tone direction in XYZ.
    const SKIN: [f32; 3] = [0.78, 0.57, 0.44];
    let xyzs: Vec<[f32; 3]> = means.iter().map(|&m| xyz(m)).collect();
    let lum = |x: usize, y: usize| xyzs[y * gw + x][1];
    let mut scores = Vec::with_capacity(gw * gh);
    for y in 0..gh {
        for x in 0..gw {
            let c = xyzs[y * gw + x];
            let laplacian = 4.0 * c[1]
                - lum(x.saturating_sub(1), y)
                - lum((x + 1).min(gw - 1), y)
                - lum(x, y.saturating_sub(1))
                - lum(x, (y + 1).min(gh - 1));
            let mut score = (5.0 * laplacian).abs();
            if c[1] > 5.0 {
                let norm = (c[0] * c[0] + c[1] * c[1] + c[2] * c[2]).sqrt();
                let dist = c
                    .iter()
                    .zip(SKIN)
                    .map(|(v, s)| (v / norm - s).powi(2))
                    .sum::<f32>()
                    .sqrt();
                score += 100.0 - 100.0 * dist + chroma(c);
            }
            scores.push(score);
        }
    }
    scores
}

/// Blur sigma in cells: a tenth of the crop window's diagonal measured in
/// cells, at least one cell.
fn window_sigma(width: u32, height: u32, iw: u32, ih: u32, gw: usize, gh: usize) -> f32 {
    let wx = width as f32 * gw as f32 / iw as f32;
    let wy = height as f32 * gh as f32 / ih as f32;
    ((wx * wx + wy * wy).sqrt() / 10.0).max(1.0)
}

/// Separable Gaussian over the (tiny) score grid, edges clamped.
fn blur_grid(grid: &[f32], gw: usize, gh: usize, sigma: f32) -> Vec<f32> {
    let radius = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f32> = (-radius..=radius)
        .map(|i| (-((i * i) as f32) / (2.0 * sigma * sigma)).exp())
        .collect();
    let pass = |src: &[f32], w: usize, h: usize, horizontal: bool| -> Vec<f32> {
        let mut out = vec![0.0; w * h];
        for y in 0..h {
            for x in 0..w {
                out[y * w + x] = kernel
                    .iter()
                    .zip(-radius..=radius)
                    .map(|(k, d)| {
                        let (sx, sy) = if horizontal {
                            ((x as isize + d).clamp(0, w as isize - 1) as usize, y)
                        } else {
                            (x, (y as isize + d).clamp(0, h as isize - 1) as usize)
                        };
                        k * src[sy * w + sx]
                    })
                    .sum();
            }
        }
        out
    };
    pass(&pass(grid, gw, gh, true), gw, gh, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgba;

    const GREY: [u8; 4] = [128, 128, 128, 255];

    /// A flat grey card with a colourful, high-contrast 40×40 "subject" at
    /// (`sx`, `sy`).
    fn card_with_subject(w: u32, h: u32, sx: u32, sy: u32) -> RgbaImage {
        RgbaImage::from_fn(w, h, |x, y| {
            if (sx..sx + 40).contains(&x) && (sy..sy + 40).contains(&y) {
                let colours = [[220, 30, 30, 255], [20, 40, 220, 255], [240, 220, 20, 255]];
                Rgba(colours[((x / 5 + y / 5) % 3) as usize])
            } else {
                Rgba(GREY)
            }
        })
    }

    fn subject_pixels(img: &RgbaImage) -> usize {
        img.pixels().filter(|p| p.0 != GREY).count()
    }

    /// The subject sits in the bottom-right corner, far from the centre: a
    /// centred 100×100 window would contain none of it; the smart window
    /// contains all of it.
    #[test]
    fn finds_an_off_centre_subject() {
        let card = card_with_subject(301, 203, 240, 150);
        let centred = super::super::crop(&card, 100, 100, &crate::worker::options::Gravity::CENTER);
        assert_eq!(subject_pixels(&centred), 0);
        let out = smart_crop(&card, 100, 100);
        assert_eq!(out.dimensions(), (100, 100));
        assert_eq!(subject_pixels(&out), 1600);
    }

    /// Same, top-left, with a wide window: the subject still wins.
    #[test]
    fn finds_a_subject_top_left_in_a_wide_image() {
        let card = card_with_subject(640, 120, 30, 10);
        let out = smart_crop(&card, 120, 120);
        assert_eq!(subject_pixels(&out), 1600);
    }

    /// Skin tones attract the window even without edges: a smooth skin-coloured
    /// patch on a dark-grey background.
    #[test]
    fn prefers_skin_tones() {
        let card = RgbaImage::from_fn(400, 300, |x, y| {
            let dx = x as f32 - 320.0;
            let dy = y as f32 - 70.0;
            if dx * dx + dy * dy < 40.0 * 40.0 {
                Rgba([224, 172, 140, 255])
            } else {
                Rgba([60, 60, 60, 255])
            }
        });
        let (left, top) = attention_window(&card, 120, 120);
        assert!(
            (240..=280).contains(&left) && (0..=30).contains(&top),
            "{left},{top}"
        );
    }

    /// Colour hidden under full transparency is not content: a subject under
    /// alpha 0 bottom-right loses to a visible one top-left.
    #[test]
    fn transparent_areas_are_ignored() {
        let mut card = card_with_subject(300, 200, 240, 150);
        let visible = card_with_subject(300, 200, 10, 10);
        for (dst, src) in card.pixels_mut().zip(visible.pixels()) {
            if src.0 == GREY {
                dst.0[3] = 0;
            } else {
                *dst = *src;
            }
        }
        let (left, top) = attention_window(&card, 80, 80);
        assert!(left <= 10 && top <= 10, "{left},{top}");
    }

    #[test]
    fn tiny_and_empty_images() {
        assert_eq!(smart_crop(&RgbaImage::new(0, 0), 5, 5).dimensions(), (0, 0));
        assert_eq!(smart_crop(&RgbaImage::new(3, 1), 2, 1).dimensions(), (2, 1));
        assert_eq!(
            smart_crop(&RgbaImage::new(1, 50), 1, 7).dimensions(),
            (1, 7)
        );
    }
}
