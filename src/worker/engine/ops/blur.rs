//! Gaussian blur (imgproxy's `blur`), and the separable Gaussian machinery
//! `sharpen` reuses.
//!
//! `sigma` means what it means to libvips `gaussblur`: the Gaussian's
//! standard deviation in pixels, with the kernel cut where it falls below
//! 0.2 of its peak, integer weights, edges repeated; below 0.2 nothing
//! happens. Two strategies, both separable (rows, then columns):
//!
//! - Up to [`MAX_KERNEL_RADIUS`]: libvips' own kernel, convolved directly, so
//!   small blurs match it exactly (a handful of taps per pixel).
//! - Beyond: three box blurs whose combined variance equals the variance of
//!   that truncated kernel. Box sums run in O(1) per pixel whatever the
//!   radius, and three passes are within a few percent of a Gaussian; since
//!   libvips truncates its kernel at 20 % (≈ 1.8 σ), matching *its* variance
//!   rather than σ² keeps our blur looking as strong as imgproxy's.
//!
//! Colour is blurred premultiplied when the image has transparency, as
//! imgproxy does, so invisible colour doesn't bleed into visible pixels.

use image::RgbaImage;

use super::{has_transparency, premultiply, unpremultiply};

/// Kernels wider than `2 × 4 + 1` taps (sigma above ~2.5 for `blur`) switch
/// to box passes: measured on 24 MP, a 9-tap kernel costs about what the
/// three box passes cost, and every further tap costs more.
pub const MAX_KERNEL_RADIUS: usize = 4;
/// libvips `gaussblur`'s `min_ampl`: where the kernel is cut.
pub(crate) const BLUR_MIN_AMPL: f32 = 0.2;

/// `img` blurred with a Gaussian of standard deviation `sigma` (see the module
/// doc). `sigma` below 0.2 (or NaN) returns the image unchanged.
pub fn blur(img: &RgbaImage, sigma: f32) -> RgbaImage {
    let mut out = img.clone();
    if sigma.is_nan() || sigma < 0.2 || out.width() == 0 || out.height() == 0 {
        return out;
    }
    let alpha = has_transparency(&out);
    if alpha {
        premultiply(&mut out);
    }
    let (w, h) = out.dimensions();
    let raw = gaussian::<u8, 4>(out.into_raw(), w as usize, h as usize, sigma, BLUR_MIN_AMPL);
    out = RgbaImage::from_raw(w, h, raw).expect("the blur keeps the buffer's size");
    if alpha {
        unpremultiply(&mut out);
    }
    out
}

/// A channel value the passes can work on.
pub(crate) trait Sample: Copy {
    fn get(self) -> u32;
    /// From a value already in range.
    fn put(v: u32) -> Self;
    /// `sum / d`, rounded: sums of bytes fit 32-bit fixed point, which
    /// vectorises; wider samples need 64 bits.
    #[inline]
    fn divide(sum: u32, d: Divider) -> Self {
        Self::put(d.div(sum))
    }
}

impl Sample for u8 {
    fn get(self) -> u32 {
        u32::from(self)
    }
    fn put(v: u32) -> Self {
        v.min(255) as u8
    }
    #[inline]
    fn divide(sum: u32, d: Divider) -> Self {
        // sum ≤ 255 · d, so sum · ⌈2^24 / d⌉ + 2^23 < 2^32.
        (sum.wrapping_mul(d.small).wrapping_add(1 << 23) >> 24) as u8
    }
}

impl Sample for u16 {
    fn get(self) -> u32 {
        u32::from(self)
    }
    fn put(v: u32) -> Self {
        v.min(65535) as u16
    }
}

/// How a sigma gets blurred.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Plan {
    /// Nothing to do (a 1-tap kernel).
    Copy,
    /// Direct convolution with integer weights, centre in the middle.
    Kernel(Vec<u32>),
    /// Three box passes of these radii.
    Boxes([usize; 3]),
}

impl Plan {
    /// libvips `gaussmat` (integer precision) for `sigma` cut at `min_ampl`,
    /// or boxes of the same variance when that kernel is too long.
    pub(crate) fn new(sigma: f32, min_ampl: f32) -> Self {
        let sigma = f64::from(sigma);
        let two_sigma2 = 2.0 * sigma * sigma;
        let amplitude = |x: usize| (-((x * x) as f64) / two_sigma2).exp();
        // libvips stops at the first x below min_ampl (or 8σ) and keeps x - 1.
        let max_x = (8.0 * sigma).clamp(0.0, 10_000.0) as usize;
        let first_below = (0..max_x)
            .find(|&x| amplitude(x) < f64::from(min_ampl))
            .unwrap_or(max_x);
        let radius = first_below.saturating_sub(1);
        if radius == 0 {
            return Self::Copy;
        }
        let weight = |x: usize| (20.0 * amplitude(x)).round_ties_even() as u32;
        if radius <= MAX_KERNEL_RADIUS {
            return Self::Kernel(
                (0..=2 * radius)
                    .map(|i| weight(i.abs_diff(radius)))
                    .collect(),
            );
        }
        let (mut sum, mut moment) = (0.0, 0.0);
        for x in 0..=radius {
            let (w, n) = (f64::from(weight(x)), if x == 0 { 1.0 } else { 2.0 });
            sum += n * w;
            moment += n * w * (x * x) as f64;
        }
        Self::Boxes(box_radii(moment / sum))
    }
}

/// Radii of three boxes whose variances add up to `variance` (the
/// Kutskir/Wells construction: widths `wl` and `wl + 2`, as many of each as
/// gets closest).
fn box_radii(variance: f64) -> [usize; 3] {
    let ideal = (4.0 * variance + 1.0).sqrt(); // 12 V / 3 + 1
    let mut wl = ideal.floor() as i64;
    if wl % 2 == 0 {
        wl -= 1;
    }
    let wl = wl.max(1);
    let m = ((12.0 * variance - (3 * wl * wl + 12 * wl + 9) as f64) / (-4 * wl - 4) as f64).round()
        as i64;
    std::array::from_fn(|i| {
        let width = if (i as i64) < m { wl } else { wl + 2 };
        ((width - 1) / 2) as usize
    })
}

/// Blurs interleaved `C`-channel `data` (`w × h`): rows in place, then the
/// columns into a second buffer (ping-ponging for box passes), returning
/// whichever buffer holds the result — no full-image copies beyond that.
pub(crate) fn gaussian<T: Sample, const C: usize>(
    mut data: Vec<T>,
    w: usize,
    h: usize,
    sigma: f32,
    min_ampl: f32,
) -> Vec<T> {
    let plan = Plan::new(sigma, min_ampl);
    if plan == Plan::Copy || w == 0 || h == 0 || data.len() != w * h * C {
        return data;
    }
    let stride = w * C;
    let mut line = Vec::new();
    for row in data.chunks_exact_mut(stride) {
        match &plan {
            Plan::Kernel(k) => kernel_row::<T, C>(row, k, &mut line),
            Plan::Boxes(radii) => {
                for &r in radii {
                    box_row::<T, C>(row, r, &mut line);
                }
            }
            Plan::Copy => {}
        }
    }
    let mut out = vec![T::put(0); data.len()];
    match &plan {
        Plan::Kernel(k) => kernel_columns(&data, &mut out, stride, h, k),
        Plan::Boxes(radii) => {
            for &r in radii {
                box_columns(&data, &mut out, stride, h, r);
                std::mem::swap(&mut data, &mut out);
            }
            std::mem::swap(&mut data, &mut out);
        }
        Plan::Copy => {}
    }
    out
}

/// Divides by a fixed divisor with a multiply and a shift, rounding.
#[derive(Clone, Copy)]
pub(crate) struct Divider {
    wide: u64,
    small: u32,
}

impl Divider {
    fn new(d: u32) -> Self {
        let d = u64::from(d.max(1));
        Self {
            wide: ((1 << 32) + d / 2) / d,
            small: (((1 << 24) + d / 2) / d) as u32,
        }
    }

    #[inline]
    fn div(self, v: u32) -> u32 {
        ((u64::from(v) * self.wide + (1 << 31)) >> 32) as u32
    }
}

/// Fills `padded` with `row` widened by `r` repeated edge pixels on each side.
fn pad_row<T: Sample, const C: usize>(row: &[T], r: usize, padded: &mut Vec<u32>) {
    padded.clear();
    let (first, last) = (&row[..C], &row[row.len() - C..]);
    for _ in 0..r {
        padded.extend(first.iter().map(|v| v.get()));
    }
    padded.extend(row.iter().map(|v| v.get()));
    for _ in 0..r {
        padded.extend(last.iter().map(|v| v.get()));
    }
}

fn kernel_row<T: Sample, const C: usize>(row: &mut [T], kernel: &[u32], padded: &mut Vec<u32>) {
    let r = kernel.len() / 2;
    pad_row::<T, C>(row, r, padded);
    let div = Divider::new(kernel.iter().sum());
    for (x, out) in row.chunks_exact_mut(C).enumerate() {
        let window = &padded[x * C..(x + kernel.len()) * C];
        let mut acc = [0u32; C];
        for (k, px) in kernel.iter().zip(window.chunks_exact(C)) {
            for c in 0..C {
                acc[c] += k * px[c];
            }
        }
        for c in 0..C {
            out[c] = T::divide(acc[c], div);
        }
    }
}

fn box_row<T: Sample, const C: usize>(row: &mut [T], r: usize, values: &mut Vec<u32>) {
    if r == 0 || row.len() < C {
        return;
    }
    values.clear();
    values.extend(row.iter().map(|v| v.get()));
    let px = values.as_chunks::<C>().0;
    let out = row.as_chunks_mut::<C>().0;
    let last = px.len() - 1;
    let div = Divider::new((2 * r + 1) as u32);
    // The window centred on 0: r + 1 copies of the first pixel (edges
    // repeat), then pixels 1..=r, the last one repeated past the end.
    let inside = r.min(last);
    let mut sum: [u32; C] = std::array::from_fn(|c| {
        let body: u32 = px[1..=inside].iter().map(|p| p[c]).sum();
        (r as u32 + 1) * px[0][c] + body + (r - inside) as u32 * px[last][c]
    });
    for (x, o) in out.iter_mut().enumerate() {
        let (add, sub) = (&px[(x + r + 1).min(last)], &px[x.saturating_sub(r)]);
        for c in 0..C {
            o[c] = T::divide(sum[c], div);
            sum[c] = sum[c] + add[c] - sub[c];
        }
    }
}

/// Vertical kernel pass from `src` into `dst`, `stride` values per row.
fn kernel_columns<T: Sample>(src: &[T], dst: &mut [T], stride: usize, h: usize, kernel: &[u32]) {
    let r = kernel.len() / 2;
    let div = Divider::new(kernel.iter().sum());
    let mut acc = vec![0u32; stride];
    for (y, out) in dst.chunks_exact_mut(stride).enumerate() {
        acc.fill(0);
        for (i, &k) in kernel.iter().enumerate() {
            let sy = (y + i).saturating_sub(r).min(h - 1);
            for (a, v) in acc.iter_mut().zip(&src[sy * stride..(sy + 1) * stride]) {
                *a += k * v.get();
            }
        }
        for (o, &a) in out.iter_mut().zip(&acc) {
            *o = T::divide(a, div);
        }
    }
}

/// Vertical box pass from `src` into `dst` with running column sums.
fn box_columns<T: Sample>(src: &[T], dst: &mut [T], stride: usize, h: usize, r: usize) {
    let row = |y: usize| &src[y * stride..(y + 1) * stride];
    let div = Divider::new((2 * r + 1) as u32);
    // As in `box_row`: the first row r + 1 times, rows 1..=r, the last row
    // for whatever of the window lies past the end.
    let inside = r.min(h - 1);
    let mut sum: Vec<u32> = row(0).iter().map(|v| (r as u32 + 1) * v.get()).collect();
    for y in 1..=inside {
        for (s, v) in sum.iter_mut().zip(row(y)) {
            *s += v.get();
        }
    }
    for (s, v) in sum.iter_mut().zip(row(h - 1)) {
        *s += (r - inside) as u32 * v.get();
    }
    for (y, out) in dst.chunks_exact_mut(stride).enumerate() {
        for (o, &s) in out.iter_mut().zip(&sum) {
            *o = T::divide(s, div);
        }
        let (add, sub) = ((y + r + 1).min(h - 1), y.saturating_sub(r));
        for ((s, a), d) in sum.iter_mut().zip(row(add)).zip(row(sub)) {
            *s = *s + a.get() - d.get();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::engine::ops::testutil::{assert_close, px};
    use image::Rgba;

    /// Black left half, white right half, `w × h`.
    fn edge(w: u32, h: u32) -> RgbaImage {
        RgbaImage::from_fn(w, h, |x, _| {
            if x < w / 2 {
                Rgba([0, 0, 0, 255])
            } else {
                Rgba([255; 4])
            }
        })
    }

    /// Width of the ramp between near-black and near-white along row 0.
    fn ramp_width(img: &RgbaImage) -> usize {
        (0..img.width())
            .filter(|&x| (10..=245).contains(&px(img, x, 0)[0]))
            .count()
    }

    /// libvips' kernels for common sigmas: radius from the 0.2 cut, weights
    /// round(20·exp(−x²/2σ²)).
    #[test]
    fn kernels_match_libvips_gaussmat() {
        assert_eq!(Plan::new(0.5, 0.2), Plan::Copy);
        assert_eq!(Plan::new(1.0, 0.2), Plan::Kernel(vec![12, 20, 12]));
        assert_eq!(
            Plan::new(2.0, 0.2),
            Plan::Kernel(vec![6, 12, 18, 20, 18, 12, 6])
        );
        // sharpen's default: sigma 0.5 cut at 0.1.
        assert_eq!(Plan::new(0.5, 0.1), Plan::Kernel(vec![3, 20, 3]));
        assert!(matches!(Plan::new(10.0, 0.2), Plan::Boxes(_)));
    }

    /// Three boxes reproduce the target variance within a box step.
    #[test]
    fn box_radii_match_variance() {
        for v in [4.0, 17.3, 100.0, 2500.0] {
            let got: f64 = box_radii(v)
                .iter()
                .map(|&r| ((2 * r + 1).pow(2) - 1) as f64 / 12.0)
                .sum();
            assert!(
                (got - v).abs() <= 0.35 * v.sqrt() + 1.0,
                "variance {v}: got {got}"
            );
        }
    }

    /// Blur softens a hard edge, more for a larger sigma; flat areas stay
    /// exactly flat; the mean is preserved across the edge.
    #[test]
    fn blur_softens_an_edge() {
        let img = edge(201, 9);
        assert_eq!(ramp_width(&img), 0);
        let soft = blur(&img, 2.0);
        let softer = blur(&img, 20.0);
        assert!(ramp_width(&soft) >= 4, "{}", ramp_width(&soft));
        assert!(ramp_width(&softer) > 3 * ramp_width(&soft));
        for out in [&soft, &softer] {
            assert_eq!(px(out, 0, 4), [0, 0, 0, 255]);
            assert_eq!(px(out, 200, 4), [255; 4]);
            // Symmetric around the edge at x = 100 (between 99 and 100).
            let (l, r) = (px(out, 95, 4)[0], px(out, 104, 4)[0]);
            assert!((i32::from(l) + i32::from(r) - 255).abs() <= 2, "{l} + {r}");
        }
    }

    /// A single bright pixel spreads like a Gaussian with libvips' kernel for
    /// sigma 1: weights 12/20/12 per axis.
    #[test]
    fn small_sigma_is_libvips_exact() {
        let mut img = RgbaImage::from_pixel(5, 5, Rgba([0, 0, 0, 255]));
        img.put_pixel(2, 2, Rgba([255, 255, 255, 255]));
        let out = blur(&img, 1.0);
        let centre = 255.0 * (20.0 / 44.0) * (20.0 / 44.0);
        let side = 255.0 * (12.0 / 44.0) * (20.0 / 44.0);
        let corner = 255.0 * (12.0 / 44.0) * (12.0 / 44.0);
        let grey = |v: f64| {
            let v = v.round() as u8;
            [v, v, v, 255]
        };
        assert_close(px(&out, 2, 2), grey(centre), 1);
        assert_close(px(&out, 1, 2), grey(side), 1);
        assert_close(px(&out, 3, 3), grey(corner), 1);
        assert_eq!(px(&out, 0, 0), [0, 0, 0, 255]);
    }

    /// Transparent pixels' colour doesn't bleed: red at alpha 0 next to opaque
    /// blue blurs to blue with fading alpha, never purple.
    #[test]
    fn blur_is_premultiplied() {
        let img = RgbaImage::from_fn(40, 3, |x, _| {
            if x < 20 {
                Rgba([255, 0, 0, 0])
            } else {
                Rgba([0, 0, 255, 255])
            }
        });
        let out = blur(&img, 3.0);
        for x in 15..25 {
            let p = px(&out, x, 1);
            if p[3] > 0 {
                assert!(p[0] <= 1 && p[2] >= 250, "x={x}: {p:?}");
            }
        }
        assert!(px(&out, 19, 1)[3] > 0 && px(&out, 20, 1)[3] < 255);
    }

    #[test]
    fn degenerate_sigmas_and_sizes() {
        let img = edge(10, 10);
        for s in [0.0, -1.0, f32::NAN, 0.1] {
            assert_eq!(blur(&img, s), img);
        }
        for s in [f32::INFINITY, 1e9] {
            let out = blur(&img, s);
            assert_eq!(out.dimensions(), (10, 10));
        }
        assert_eq!(blur(&RgbaImage::new(0, 7), 5.0).dimensions(), (0, 7));
        assert_eq!(blur(&RgbaImage::new(1, 1), 50.0).dimensions(), (1, 1));
    }
}
