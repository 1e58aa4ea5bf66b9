//! imgproxy's size arithmetic as a pure function: from the (oriented) source size and the
//! options to every size the pipeline needs — crop, scale, result crop, extend, padding.
//! It mirrors the order and rounding of imgproxy's `prepare` step so results match
//! pixel-for-pixel in size; nothing here touches pixels.

use crate::worker::options::{ProcessingOptions, ResizingType};

/// The sizes one frame goes through, all in the oriented (display) coordinate space.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// Crop applied before scaling; 0 = that axis isn't cropped.
    pub crop_width: u32,
    pub crop_height: u32,
    /// Scale factors applied to the (cropped) source.
    pub wscale: f64,
    pub hscale: f64,
    /// The dpr actually applied (lowered when it would enlarge a non-enlargeable image).
    pub dpr_scale: f64,
    /// Requested size × dpr × zoom; 0 = not requested.
    pub target_width: u32,
    pub target_height: u32,
    /// Size right after scaling.
    pub scaled_width: u32,
    pub scaled_height: u32,
    /// Crop after scaling (fill types); 0 = that axis isn't cropped.
    pub result_crop_width: u32,
    pub result_crop_height: u32,
    /// Canvas for `extend_aspect_ratio`; 0 = not extended.
    pub extend_ar_width: u32,
    pub extend_ar_height: u32,
    /// Padding per side in result pixels (dpr applied).
    pub padding: [u32; 4],
}

/// `round(a * scale)`, keeping 0 as "unset" like imgproxy's `imath.Scale`.
pub fn scale(a: u32, scale: f64) -> u32 {
    if a == 0 {
        0
    } else {
        clamp_u32((f64::from(a) * scale).round())
    }
}

/// Like [`scale`] with round-half-to-even, imgproxy's `imath.ScaleToEven`.
pub fn scale_to_even(a: u32, scale: f64) -> u32 {
    if a == 0 {
        0
    } else {
        clamp_u32((f64::from(a) * scale).round_ties_even())
    }
}

fn clamp_u32(v: f64) -> u32 {
    // `as` saturates and maps NaN to 0: exactly the clamp we want for sizes.
    v as u32
}

fn min_non_zero(a: u32, b: u32) -> u32 {
    match (a, b) {
        (0, b) => b,
        (a, 0) => a,
        (a, b) => a.min(b),
    }
}

/// A crop dimension: pixels when ≥ 1, a fraction of the source below 1, 0 = none.
fn crop_size(orig: u32, crop: f64) -> u32 {
    if crop <= 0.0 {
        0
    } else if crop >= 1.0 {
        clamp_u32(crop)
    } else {
        scale(orig, crop).max(1)
    }
}

/// Computes every size for a `src_width` × `src_height` image that is already oriented
/// (EXIF orientation and `rotate` applied). `vector` sources (SVG) may always enlarge.
pub fn plan(src_width: u32, src_height: u32, po: &ProcessingOptions, vector: bool) -> Plan {
    let crop_width = crop_size(src_width, po.crop.width);
    let crop_height = crop_size(src_height, po.crop.height);
    let width_to_scale = min_non_zero(crop_width, src_width);
    let height_to_scale = min_non_zero(crop_height, src_height);

    let (wscale, hscale, dpr_scale) = calc_scale(width_to_scale, height_to_scale, po, vector);

    let target_width = scale(po.width, dpr_scale * po.zoom_x);
    let target_height = scale(po.height, dpr_scale * po.zoom_y);
    let scaled_width = scale(width_to_scale, wscale).max(1);
    let scaled_height = scale(height_to_scale, hscale).max(1);

    let (mut result_crop_width, mut result_crop_height) = (target_width, target_height);
    if po.resizing_type == ResizingType::FillDown && !po.enlarge {
        let diff_w = f64::from(target_width) / f64::from(scaled_width);
        let diff_h = f64::from(target_height) / f64::from(scaled_height);
        if diff_w > diff_h && diff_w > 1.0 {
            result_crop_height = scale(
                scaled_width,
                f64::from(target_height) / f64::from(target_width),
            );
            result_crop_width = scaled_width;
        } else if diff_h > diff_w && diff_h > 1.0 {
            result_crop_width = scale(
                scaled_height,
                f64::from(target_width) / f64::from(target_height),
            );
            result_crop_height = scaled_height;
        }
    }

    let (mut extend_ar_width, mut extend_ar_height) = (0, 0);
    if po.extend_aspect_ratio.enabled && target_width > 0 && target_height > 0 {
        let out_width = min_non_zero(scaled_width, result_crop_width);
        let out_height = min_non_zero(scaled_height, result_crop_height);
        let diff_w = f64::from(target_width) / f64::from(out_width);
        let diff_h = f64::from(target_height) / f64::from(out_height);
        if diff_h > diff_w {
            extend_ar_height = scale(
                out_width,
                f64::from(target_height) / f64::from(target_width),
            );
            extend_ar_width = out_width;
        } else if diff_w > diff_h {
            extend_ar_width = scale(
                out_height,
                f64::from(target_width) / f64::from(target_height),
            );
            extend_ar_height = out_height;
        }
    }

    let padding = if po.padding.is_enabled() {
        let p = &po.padding;
        [p.top, p.right, p.bottom, p.left].map(|side| scale_to_even(side, dpr_scale))
    } else {
        [0; 4]
    };

    Plan {
        crop_width,
        crop_height,
        wscale,
        hscale,
        dpr_scale,
        target_width,
        target_height,
        scaled_width,
        scaled_height,
        result_crop_width,
        result_crop_height,
        extend_ar_width,
        extend_ar_height,
        padding,
    }
}

/// imgproxy's `calcScale`: shrink factors per axis from the resizing type, then zoom, the
/// enlarge rule (which also caps dpr), min-width/min-height, and finally dpr.
fn calc_scale(width: u32, height: u32, po: &ProcessingOptions, vector: bool) -> (f64, f64, f64) {
    let (src_w, src_h) = (f64::from(width), f64::from(height));
    let dst_w = if po.width == 0 {
        src_w
    } else {
        f64::from(po.width)
    };
    let dst_h = if po.height == 0 {
        src_h
    } else {
        f64::from(po.height)
    };

    let mut wshrink = if dst_w == src_w { 1.0 } else { src_w / dst_w };
    let mut hshrink = if dst_h == src_h { 1.0 } else { src_h / dst_h };

    if wshrink != 1.0 || hshrink != 1.0 {
        let mut rt = po.resizing_type;
        if rt == ResizingType::Auto {
            let same_orientation = (src_w - src_h >= 0.0) == (dst_w - dst_h >= 0.0);
            rt = if same_orientation {
                ResizingType::Fill
            } else {
                ResizingType::Fit
            };
        }
        if po.width == 0 && rt != ResizingType::Force {
            wshrink = hshrink;
        } else if po.height == 0 && rt != ResizingType::Force {
            hshrink = wshrink;
        } else if rt == ResizingType::Fit {
            wshrink = wshrink.max(hshrink);
            hshrink = wshrink;
        } else if matches!(rt, ResizingType::Fill | ResizingType::FillDown) {
            wshrink = wshrink.min(hshrink);
            hshrink = wshrink;
        }
    }

    wshrink /= po.zoom_x;
    hshrink /= po.zoom_y;

    let mut dpr_scale = po.dpr;
    if !po.enlarge && !vector {
        let min_shrink = wshrink.min(hshrink);
        if min_shrink < 1.0 {
            wshrink /= min_shrink;
            hshrink /= min_shrink;
            if !po.extend.enabled {
                dpr_scale /= min_shrink;
            }
        }
        // Past this dpr the image would be enlarged.
        dpr_scale = dpr_scale.min(wshrink.min(hshrink));
    }

    if po.min_width > 0 {
        let min_shrink = src_w / f64::from(po.min_width);
        if min_shrink < wshrink {
            hshrink /= wshrink / min_shrink;
            wshrink = min_shrink;
        }
    }
    if po.min_height > 0 {
        let min_shrink = src_h / f64::from(po.min_height);
        if min_shrink < hshrink {
            wshrink /= hshrink / min_shrink;
            hshrink = min_shrink;
        }
    }

    wshrink /= dpr_scale;
    hshrink /= dpr_scale;
    // Never below one pixel.
    wshrink = wshrink.min(src_w);
    hshrink = hshrink.min(src_h);

    (1.0 / wshrink, 1.0 / hshrink, dpr_scale)
}

/// How many times smaller than the source a decoder may deliver the image (≥ 1): the smaller
/// of the two axis shrinks the plan asks for, imgproxy's scale-on-load rule.
pub fn preshrink(src_width: u32, src_height: u32, plan: &Plan) -> f64 {
    let wshrink = f64::from(src_width) / f64::from(scale(src_width, plan.wscale).max(1));
    let hshrink = f64::from(src_height) / f64::from(scale(src_height, plan.hscale).max(1));
    wshrink.min(hshrink).max(1.0)
}

/// The libjpeg DCT scale denominator (1, 2, 4 or 8) for a [`preshrink`], chosen as
/// imgproxy/libvips do: the largest power of two not above it, so the decoded image is never
/// smaller than the result needs.
pub fn jpeg_shrink(preshrink: f64) -> u32 {
    match preshrink {
        s if s >= 8.0 => 8,
        s if s >= 4.0 => 4,
        s if s >= 2.0 => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::options::Defaults;

    fn po(rt: ResizingType, w: u32, h: u32) -> ProcessingOptions {
        let mut po = ProcessingOptions::new(&Defaults::default());
        po.resizing_type = rt;
        po.width = w;
        po.height = h;
        po
    }

    /// The visible result size before extend/padding.
    fn out(p: &Plan) -> (u32, u32) {
        (
            min_non_zero(p.scaled_width, p.result_crop_width),
            min_non_zero(p.scaled_height, p.result_crop_height),
        )
    }

    #[test]
    fn fit_keeps_aspect_inside_box() {
        let p = plan(1001, 667, &po(ResizingType::Fit, 300, 300), false);
        assert_eq!(out(&p), (300, 200));
    }

    #[test]
    fn zero_dimension_is_auto() {
        assert_eq!(
            out(&plan(1001, 667, &po(ResizingType::Fit, 0, 100), false)),
            (150, 100)
        );
        assert_eq!(
            out(&plan(1001, 667, &po(ResizingType::Fill, 500, 0), false)),
            (500, 333)
        );
        assert_eq!(
            out(&plan(1001, 667, &po(ResizingType::Fit, 0, 0), false)),
            (1001, 667)
        );
    }

    #[test]
    fn fill_covers_and_crops() {
        let p = plan(1001, 667, &po(ResizingType::Fill, 300, 300), false);
        assert_eq!((p.scaled_width, p.scaled_height), (450, 300));
        assert_eq!(out(&p), (300, 300));
    }

    #[test]
    fn force_ignores_aspect() {
        assert_eq!(
            out(&plan(1001, 667, &po(ResizingType::Force, 300, 300), false)),
            (300, 300)
        );
    }

    #[test]
    fn no_enlarge_by_default() {
        assert_eq!(
            out(&plan(101, 67, &po(ResizingType::Fit, 300, 300), false)),
            (101, 67)
        );
        // fill without enlarge still crops to the requested aspect ratio only up to the image size
        assert_eq!(
            out(&plan(101, 67, &po(ResizingType::Fill, 300, 300), false)),
            (101, 67)
        );
        let mut o = po(ResizingType::Fit, 300, 300);
        o.enlarge = true;
        assert_eq!(out(&plan(101, 67, &o, false)), (300, 199));
    }

    #[test]
    fn fill_down_shrinks_the_box() {
        let p = plan(101, 67, &po(ResizingType::FillDown, 300, 150), false);
        assert_eq!(out(&p), (101, 51));
    }

    #[test]
    fn auto_picks_fill_or_fit_by_orientation() {
        // landscape source, landscape box: fill
        assert_eq!(
            out(&plan(1000, 500, &po(ResizingType::Auto, 300, 200), false)),
            (300, 200)
        );
        // landscape source, portrait box: fit
        assert_eq!(
            out(&plan(1000, 500, &po(ResizingType::Auto, 200, 300), false)),
            (200, 100)
        );
    }

    #[test]
    fn dpr_multiplies_but_never_enlarges() {
        let mut o = po(ResizingType::Fit, 300, 300);
        o.dpr = 2.0;
        assert_eq!(out(&plan(1001, 667, &o, false)), (600, 400));
        // capped at the source size when it would enlarge
        assert_eq!(out(&plan(401, 267, &o, false)), (401, 267));
        o.enlarge = true;
        assert_eq!(out(&plan(401, 267, &o, false)), (600, 400));
    }

    #[test]
    fn min_width_enlarges_then_crops_to_the_set_size() {
        // imgproxy: "when both width and min-width are set, the final image is cropped
        // according to width".
        let mut o = po(ResizingType::Fit, 100, 100);
        o.min_width = 200;
        let p = plan(1000, 500, &o, false);
        assert_eq!((p.scaled_width, p.scaled_height), (200, 100));
        assert_eq!(out(&p), (100, 100));
        let mut o = po(ResizingType::Fit, 0, 100);
        o.min_width = 300;
        let p = plan(1000, 500, &o, false);
        assert_eq!((p.scaled_width, p.scaled_height), (300, 150));
        assert_eq!(out(&p), (300, 100));
    }

    #[test]
    fn zoom_scales_after_resizing_type() {
        let mut o = po(ResizingType::Fit, 300, 300);
        o.zoom_x = 0.5;
        o.zoom_y = 0.5;
        assert_eq!(out(&plan(1000, 500, &o, false)), (150, 75));
    }

    #[test]
    fn crop_before_resize_changes_the_scale_base() {
        let mut o = po(ResizingType::Fit, 100, 0);
        o.crop.width = 500.0;
        o.crop.height = 0.5;
        let p = plan(1000, 800, &o, false);
        assert_eq!((p.crop_width, p.crop_height), (500, 400));
        assert_eq!(out(&p), (100, 80));
    }

    #[test]
    fn extend_aspect_ratio_canvas() {
        let mut o = po(ResizingType::Fit, 300, 300);
        o.extend_aspect_ratio.enabled = true;
        let p = plan(1000, 500, &o, false);
        assert_eq!((p.extend_ar_width, p.extend_ar_height), (300, 300));
    }

    #[test]
    fn padding_is_scaled_by_dpr() {
        let mut o = po(ResizingType::Fit, 100, 100);
        o.dpr = 2.0;
        o.padding.top = 5;
        o.padding.left = 3;
        assert_eq!(plan(1000, 1000, &o, false).padding, [10, 0, 0, 6]);
    }

    #[test]
    fn preshrink_never_undershoots() {
        let shrinks = |rt, w, h| {
            let p = plan(6000, 4000, &po(rt, w, h), false);
            let pre = preshrink(6000, 4000, &p);
            ((pre * 1000.0).round() / 1000.0, jpeg_shrink(pre))
        };
        assert_eq!(shrinks(ResizingType::Fit, 300, 300), (20.0, 8));
        assert_eq!(shrinks(ResizingType::Fit, 1200, 0), (5.0, 4));
        // Fill: the axis that is cut decides, so the other one keeps enough pixels.
        assert_eq!(shrinks(ResizingType::Fill, 300, 300), (13.333, 8));
        assert_eq!(shrinks(ResizingType::Fit, 4000, 0), (1.5, 1));
        // Enlarging never asks a decoder for more than the source.
        let mut up = po(ResizingType::Fit, 9000, 0);
        up.enlarge = true;
        assert_eq!(preshrink(6000, 4000, &plan(6000, 4000, &up, false)), 1.0);
    }
}
