//! Per-pixel effects: `sharpen`, `pixelate`, and `flatten` (imgproxy's
//! `background`).

use std::sync::OnceLock;

use image::{Rgba, RgbaImage};

use super::blur::gaussian;
use super::{has_transparency, pixels, pixels_mut, premultiply, unpremultiply};

/// libvips `sharpen`'s defaults, which imgproxy keeps (it only sets sigma):
/// lightness differences under `X1` are flat areas and left alone, above it
/// they are amplified with slope `M2`, capped at `Y2` brighter and `Y3`
/// darker. Units are CIE L\* (0..=100).
const X1: f64 = 2.0;
const M1: f64 = 0.0;
const M2: f64 = 3.0;
const Y2: f64 = 10.0;
const Y3: f64 = 20.0;
/// `sharpen` cuts its Gaussian at 10 % of the peak (`gaussblur` at 20 %).
const SHARPEN_MIN_AMPL: f32 = 0.1;
/// L\* is carried as libvips LabS does: 0..=100 scaled to 0..=32767.
const L_SCALE: f64 = 327.67;

/// `img` sharpened like libvips `sharpen` with this `sigma` (imgproxy's
/// `sharpen`): an unsharp mask on lightness only, with a dead zone so flat
/// areas and noise stay as they are. `sigma` ≤ 0 (or NaN) returns the image.
///
/// libvips converts to L\*a\*b\*, sharpens L\* and converts back. We compute
/// L\* per pixel from tables, and apply the change by scaling the pixel's
/// linear RGB to the new luminance: the chromaticity stays put (so hue and
/// saturation do, within gamut), which is what keeping a\*/b\* aims at, for a
/// fraction of the cost — and only pixels near edges are touched at all.
pub fn sharpen(img: &RgbaImage, sigma: f32) -> RgbaImage {
    let mut out = img.clone();
    if sigma.is_nan() || sigma <= 0.0 || out.width() == 0 || out.height() == 0 {
        return out;
    }
    let (w, h) = (out.width() as usize, out.height() as usize);
    let alpha = has_transparency(&out);
    if alpha {
        premultiply(&mut out);
    }
    let t = tables();
    let lightness: Vec<u16> = pixels(&out).iter().map(|p| t.lightness(*p)).collect();
    let blurred = gaussian::<u16, 1>(lightness.clone(), w, h, sigma, SHARPEN_MIN_AMPL);
    for ((p, &l), &b) in pixels_mut(&mut out)
        .iter_mut()
        .zip(&lightness)
        .zip(&blurred)
    {
        let delta = t.curve[(i32::from(l) - i32::from(b) + 32767) as usize];
        if delta != 0 {
            let target = (i32::from(l) + i32::from(delta)).clamp(0, 32767);
            t.relight(p, target as usize);
        }
    }
    if alpha {
        unpremultiply(&mut out);
    }
    out
}

/// Colour tables for [`sharpen`], built once.
struct Tables {
    /// sRGB byte → linear light.
    linear: [f32; 256],
    /// Luminance Y (0..=1, in 1/65535 steps) → L\* in LabS units.
    l_of_y: Vec<u16>,
    /// L\* in LabS units → luminance Y.
    y_of_l: Vec<f32>,
    /// Linear light (0..=1 in 1/16383 steps) → sRGB byte.
    encode: Vec<u8>,
    /// Lightness difference (LabS, offset by 32767) → change (LabS).
    curve: Vec<i16>,
}

const ENCODE_STEPS: f32 = 16383.0;

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let linear = std::array::from_fn(|i| {
            let c = i as f64 / 255.0;
            (if c <= 0.04045 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }) as f32
        });
        let l_of_y = (0..=65535u32)
            .map(|i| {
                let y = f64::from(i) / 65535.0;
                let f = if y > 0.008856 {
                    y.cbrt()
                } else {
                    7.787 * y + 16.0 / 116.0
                };
                ((116.0 * f - 16.0).max(0.0) * L_SCALE).round() as u16
            })
            .collect();
        let y_of_l = (0..=32767u32)
            .map(|i| {
                let l = f64::from(i) / L_SCALE;
                let f = (l + 16.0) / 116.0;
                (if f > 0.206893 {
                    f * f * f
                } else {
                    (f - 16.0 / 116.0) / 7.787
                }) as f32
            })
            .collect();
        let encode = (0..=ENCODE_STEPS as u32)
            .map(|i| {
                let v = f64::from(i) / f64::from(ENCODE_STEPS);
                let c = if v <= 0.0031308 {
                    12.92 * v
                } else {
                    1.055 * v.powf(1.0 / 2.4) - 0.055
                };
                (c * 255.0).round().clamp(0.0, 255.0) as u8
            })
            .collect();
        let curve = (0..65535i32)
            .map(|i| {
                let v = f64::from(i - 32767) / L_SCALE;
                let y = if v < -X1 {
                    (v + X1) * M2 - X1 * M1
                } else if v < X1 {
                    v * M1
                } else {
                    (v - X1) * M2 + X1 * M1
                };
                (y.clamp(-Y3, Y2) * L_SCALE).round() as i16
            })
            .collect();
        Tables {
            linear,
            l_of_y,
            y_of_l,
            encode,
            curve,
        }
    })
}

impl Tables {
    fn luminance(&self, p: [u8; 4]) -> f32 {
        let [r, g, b] = [0, 1, 2].map(|c| self.linear[usize::from(p[c])]);
        0.2126 * r + 0.7152 * g + 0.0722 * b
    }

    fn lightness(&self, p: [u8; 4]) -> u16 {
        self.l_of_y[(self.luminance(p).clamp(0.0, 1.0) * 65535.0).round() as usize]
    }

    /// Moves the pixel's luminance to that of L\* `target`, keeping its
    /// chromaticity (greys for black, which has none).
    fn relight(&self, p: &mut [u8; 4], target: usize) {
        let (from, to) = (self.luminance(*p), self.y_of_l[target]);
        let lin: [f32; 3] = if from > 1e-6 {
            [0, 1, 2].map(|c| self.linear[usize::from(p[c])] * (to / from))
        } else {
            [to; 3]
        };
        for c in 0..3 {
            p[c] = self.encode[(lin[c].clamp(0.0, 1.0) * ENCODE_STEPS).round() as usize];
        }
    }
}

/// `img` as blocks of `size × size` pixels, each the average of its block
/// (imgproxy's `pixelate`). Blocks start at the top-left; partial blocks at
/// the right and bottom average over the image mirrored past its edge, as
/// libvips does. `size` is capped at the longer side; ≤ 1 returns the image.
pub fn pixelate(img: &RgbaImage, size: u32) -> RgbaImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let p = size.min(img.width().max(img.height())) as usize;
    if p <= 1 || w == 0 || h == 0 {
        return img.clone();
    }
    let cols = axis_weights(w, p);
    let rows = axis_weights(h, p);
    let src = pixels(img);
    let mut out = img.clone();
    let dst = pixels_mut(&mut out);
    let area = (p * p) as u64;
    let mut sums = vec![[0u64; 4]; cols.len()];
    for (by, row_weights) in rows.iter().enumerate() {
        sums.iter_mut().for_each(|s| *s = [0; 4]);
        for &(sy, wy) in row_weights {
            let line = &src[sy * w..(sy + 1) * w];
            for (sum, col_weights) in sums.iter_mut().zip(&cols) {
                for &(sx, wx) in col_weights {
                    let weight = wy * wx;
                    for c in 0..4 {
                        sum[c] += weight * u64::from(line[sx][c]);
                    }
                }
            }
        }
        let means: Vec<[u8; 4]> = sums
            .iter()
            .map(|s| s.map(|v| ((v + area / 2) / area).min(255) as u8))
            .collect();
        for y in by * p..((by + 1) * p).min(h) {
            for (x, d) in dst[y * w..(y + 1) * w].iter_mut().enumerate() {
                *d = means[x / p];
            }
        }
    }
    out
}

/// For each block of `p` along an axis of length `n`: the source positions it
/// averages (mirrored past the end) and how often each occurs.
fn axis_weights(n: usize, p: usize) -> Vec<Vec<(usize, u64)>> {
    let mirror = |i: usize| {
        let m = i % (2 * n);
        if m < n { m } else { 2 * n - 1 - m }
    };
    let mut counts = vec![0u64; n];
    (0..n.div_ceil(p))
        .map(|b| {
            let mut touched = Vec::new();
            for i in b * p..(b + 1) * p {
                let m = mirror(i);
                if counts[m] == 0 {
                    touched.push(m);
                }
                counts[m] += 1;
            }
            touched.sort_unstable();
            touched
                .into_iter()
                .map(|m| (m, std::mem::take(&mut counts[m])))
                .collect()
        })
        .collect()
}

/// Composites `img` onto an opaque `background` (its alpha is ignored): every
/// pixel ends up opaque, `colour × alpha + background × (1 − alpha)`.
pub fn flatten(img: &mut RgbaImage, background: Rgba<u8>) {
    let bg = background.0.map(u32::from);
    for p in pixels_mut(img) {
        let a = u32::from(p[3]);
        if a == 255 {
            continue;
        }
        for c in 0..3 {
            p[c] = ((u32::from(p[c]) * a + bg[c] * (255 - a) + 127) / 255) as u8;
        }
        p[3] = 255;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::engine::ops::testutil::{assert_close, coord_card, px};

    /// A dark-grey / light-grey vertical edge.
    fn edge(w: u32, h: u32) -> RgbaImage {
        RgbaImage::from_fn(w, h, |x, _| {
            if x < w / 2 {
                Rgba([80, 80, 80, 255])
            } else {
                Rgba([170, 170, 170, 255])
            }
        })
    }

    /// Sharpening overshoots on both sides of an edge (darker on the dark
    /// side, brighter on the bright side), caps the overshoot, and leaves flat
    /// areas exactly alone.
    #[test]
    fn sharpen_hardens_an_edge() {
        let img = edge(40, 5);
        let out = sharpen(&img, 1.0);
        let (dark, bright) = (px(&out, 19, 2), px(&out, 20, 2));
        assert!(dark[0] < 80 && bright[0] > 170, "{dark:?} {bright:?}");
        // Greys stay grey.
        assert!(dark[0] == dark[1] && dark[1] == dark[2]);
        // At most 20 L* darker / 10 L* brighter: ~50 / ~25 in sRGB bytes here.
        assert!(dark[0] > 30 && bright[0] < 200, "{dark:?} {bright:?}");
        for x in [0, 5, 14, 25, 34, 39] {
            assert_eq!(px(&out, x, 2), px(&img, x, 2), "x = {x}");
        }
    }

    /// Gentle gradients (under the 2 L* dead zone) are untouched; colour
    /// keeps its hue when the lightness changes.
    #[test]
    fn sharpen_dead_zone_and_hue() {
        let ramp = RgbaImage::from_fn(64, 4, |x, _| {
            Rgba([100 + x as u8 / 8, 100 + x as u8 / 8, 100 + x as u8 / 8, 255])
        });
        assert_eq!(sharpen(&ramp, 1.0), ramp);
        let img = RgbaImage::from_fn(40, 5, |x, _| {
            if x < 20 {
                Rgba([40, 20, 10, 255])
            } else {
                Rgba([200, 100, 50, 255])
            }
        });
        let out = sharpen(&img, 1.5);
        let b = px(&out, 20, 2);
        assert!(b[0] > 200, "{b:?}");
        // Still twice as red as green, green twice blue (linear scaling keeps
        // chromaticity; in sRGB bytes the ratios drift only slightly).
        assert!(
            (f32::from(b[0]) / f32::from(b[1]) - 2.0).abs() < 0.25,
            "{b:?}"
        );
        assert!(
            (f32::from(b[1]) / f32::from(b[2]) - 2.0).abs() < 0.3,
            "{b:?}"
        );
    }

    #[test]
    fn sharpen_degenerate() {
        let img = edge(10, 10);
        for s in [0.0, -2.0, f32::NAN] {
            assert_eq!(sharpen(&img, s), img);
        }
        assert_eq!(sharpen(&img, f32::INFINITY).dimensions(), (10, 10));
        assert_eq!(sharpen(&RgbaImage::new(0, 0), 1.0).dimensions(), (0, 0));
        let clear = RgbaImage::from_pixel(6, 6, Rgba([9, 9, 9, 0]));
        assert_eq!(
            sharpen(&clear, 1.0),
            RgbaImage::from_pixel(6, 6, Rgba([0, 0, 0, 0]))
        );
    }

    /// Every block is uniform and holds its block's mean; partial blocks
    /// average over the mirrored edge.
    #[test]
    fn pixelate_makes_uniform_blocks() {
        let img = coord_card(10, 7);
        let out = pixelate(&img, 4);
        assert_eq!(out.dimensions(), (10, 7));
        for by in 0..2 {
            for bx in 0..3 {
                let first = px(&out, bx * 4, by * 4);
                for y in by * 4..((by + 1) * 4).min(7) {
                    for x in bx * 4..((bx + 1) * 4).min(10) {
                        assert_eq!(px(&out, x, y), first, "block ({bx}, {by})");
                    }
                }
            }
        }
        // Block (0, 0): x and y 0..4 → means 1.5 → 2 (rounded half up).
        assert_eq!(px(&out, 0, 0), [2, 2, 7, 255]);
        // Block (2, 1): x 8, 9, then mirrored 9, 8 → 8.5 → 9; y 4, 5, 6, 6 → 5.25 → 5.
        assert_eq!(px(&out, 9, 6), [9, 5, 7, 255]);
    }

    #[test]
    fn pixelate_degenerate() {
        let img = coord_card(5, 3);
        assert_eq!(pixelate(&img, 0), img);
        assert_eq!(pixelate(&img, 1), img);
        // Capped at the longer side: one block for everything.
        let out = pixelate(&img, 1000);
        assert!(out.pixels().all(|p| p.0 == px(&out, 0, 0)));
        // 5 × 3 with size 5: rows 0, 1, 2, 2, 1 → mean 1.2 → 1; columns 0..5 → 2.
        assert_eq!(px(&out, 0, 0), [2, 1, 7, 255]);
        assert_eq!(pixelate(&RgbaImage::new(0, 9), 3).dimensions(), (0, 9));
        let line = RgbaImage::from_pixel(1000, 1, Rgba([3, 4, 5, 6]));
        assert_eq!(pixelate(&line, u32::MAX), line);
    }

    /// Flatten blends with the background by alpha, within ±1.
    #[test]
    fn flatten_blends_onto_the_background() {
        let mut img = RgbaImage::from_raw(
            4,
            1,
            vec![
                200, 100, 0, 255, 200, 100, 0, 0, 200, 100, 0, 128, 0, 0, 0, 64,
            ],
        )
        .unwrap();
        flatten(&mut img, Rgba([0, 50, 250, 17]));
        assert_eq!(px(&img, 0, 0), [200, 100, 0, 255]);
        assert_eq!(px(&img, 1, 0), [0, 50, 250, 255]);
        // 200·128/255 + 0 = 100.4; 100·128/255 + 50·127/255 = 75.1; 0 + 250·127/255 = 124.5
        assert_close(px(&img, 2, 0), [100, 75, 125, 255], 1);
        assert_close(px(&img, 3, 0), [0, 37, 187, 255], 1);
    }
}
