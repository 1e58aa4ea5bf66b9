//! imgproxy's placement rule: where an `inner` rectangle goes inside an
//! `outer` one for a gravity, and how a gravity follows the image when the
//! pipeline rotates or flips it before cropping.
//!
//! The rule, as imgproxy v3 applies it to crops, extension and watermarks:
//! - Offsets `x`/`y` with magnitude ≥ 1 are pixels (multiplied by the offset
//!   scale, i.e. the dpr, where the caller passes one); below 1 they are a
//!   fraction of the *outer* size.
//! - Centre is `round((outer - inner + 1) / 2)` plus the offset. Edge anchors
//!   start at that edge and offsets push *inwards*: `ea` moves left as `x`
//!   grows, `so` moves up as `y` grows.
//! - `fp:x:y` centres the inner rectangle on the point
//!   `(round(outer_w * x), round(outer_h * y))`.
//! - The result is clamped so the inner rectangle stays inside the outer one,
//!   or (watermarks: `allow_overflow`) so at least one pixel still overlaps.
//!
//! Rounding is half-to-even everywhere, as Go's `math.RoundToEven`.

use crate::worker::options::{Gravity, GravityKind};

/// Go's `math.RoundToEven` into an integer; saturates, NaN → 0.
pub(crate) fn round_even(v: f64) -> i64 {
    v.round_ties_even() as i64
}

/// `round_even(a * scale)`, with imgproxy's shortcut that 0 stays 0.
pub(crate) fn scale_even(a: i64, scale: f64) -> i64 {
    if a == 0 {
        0
    } else {
        round_even(a as f64 * scale)
    }
}

/// An offset: pixels (times `offset_scale`) when `|v| ≥ 1`, else a fraction
/// of `size`.
pub(crate) fn offset(v: f64, size: i64, offset_scale: f64) -> i64 {
    if v.abs() >= 1.0 {
        round_even(v * offset_scale)
    } else {
        scale_even(size, v)
    }
}

/// Top-left corner of an `inner_w × inner_h` rectangle placed in a
/// `width × height` one by `gravity` (see the module doc for the rule).
///
/// `offset_scale` multiplies pixel offsets (the dpr after resizing; 1.0 for
/// crops before resizing). With `allow_overflow` the rectangle may stick out
/// as long as one pixel overlaps; otherwise it is kept inside (top-left wins
/// when it cannot fit). `Smart` and `Replicate` place like `Center` here.
pub fn calc_position(
    width: u32,
    height: u32,
    inner_w: u32,
    inner_h: u32,
    gravity: &Gravity,
    offset_scale: f64,
    allow_overflow: bool,
) -> (i64, i64) {
    let (w, h) = (i64::from(width), i64::from(height));
    let (iw, ih) = (i64::from(inner_w), i64::from(inner_h));
    let (mut left, mut top);
    if gravity.kind == GravityKind::FocusPoint {
        left = scale_even(w, gravity.x).saturating_sub(iw / 2);
        top = scale_even(h, gravity.y).saturating_sub(ih / 2);
    } else {
        use GravityKind::*;
        let off_x = offset(gravity.x, w, offset_scale);
        let off_y = offset(gravity.y, h, offset_scale);
        let centre = |outer: i64, inner: i64| {
            let span = outer - inner + 1;
            if span == 0 {
                0
            } else {
                round_even(span as f64 / 2.0)
            }
        };
        left = match gravity.kind {
            East | NorthEast | SouthEast => (w - iw).saturating_sub(off_x),
            West | NorthWest | SouthWest => off_x,
            _ => centre(w, iw).saturating_add(off_x),
        };
        top = match gravity.kind {
            North | NorthEast | NorthWest => off_y,
            South | SouthEast | SouthWest => (h - ih).saturating_sub(off_y),
            _ => centre(h, ih).saturating_add(off_y),
        };
    }
    let (min_x, max_x, min_y, max_y) = if allow_overflow {
        (1 - iw, w - 1, 1 - ih, h - 1)
    } else {
        (0, w - iw, 0, h - ih)
    };
    // max-then-min in this order, as imgproxy: when the inner rectangle is
    // larger than the outer one the minimum wins.
    left = left.min(max_x).max(min_x);
    top = top.min(max_y).max(min_y);
    (left, top)
}

/// The gravity that picks the same spot after the image is flipped
/// horizontally (when `flip`) and then turned `angle` degrees clockwise —
/// imgproxy's adjustment for crops applied to an image the pipeline has
/// already auto-rotated. Angles other than 90/180/270 (mod 360) only flip.
pub fn rotate_and_flip_gravity(gravity: &Gravity, angle: u16, flip: bool) -> Gravity {
    use GravityKind::*;
    let mut g = *gravity;
    if flip {
        g.kind = match g.kind {
            East => West,
            West => East,
            NorthWest => NorthEast,
            NorthEast => NorthWest,
            SouthWest => SouthEast,
            SouthEast => SouthWest,
            k => k,
        };
        match g.kind {
            Center | North | South => g.x = -g.x,
            FocusPoint => g.x = 1.0 - g.x,
            _ => {}
        }
    }
    // Turning the picture clockwise turns every anchor clockwise too.
    let turn = |k: GravityKind| match k {
        North => East,
        East => South,
        South => West,
        West => North,
        NorthEast => SouthEast,
        SouthEast => SouthWest,
        SouthWest => NorthWest,
        NorthWest => NorthEast,
        k => k,
    };
    let quarter_turns = match angle % 360 {
        90 => 1,
        180 => 2,
        270 => 3,
        _ => 0,
    };
    // imgproxy's table maps the *requested* gravity on the upright picture to
    // the stored one, i.e. it turns anchors counter-clockwise.
    for _ in 0..(4 - quarter_turns) % 4 {
        g.kind = turn(g.kind);
    }
    let (x, y) = (g.x, g.y);
    match quarter_turns {
        1 => {
            (g.x, g.y) = match g.kind {
                Center | East | West => (y, -x),
                FocusPoint => (y, 1.0 - x),
                _ => (y, x),
            }
        }
        2 => match g.kind {
            Center => (g.x, g.y) = (-x, -y),
            North | South => g.x = -x,
            East | West => g.y = -y,
            FocusPoint => (g.x, g.y) = (1.0 - x, 1.0 - y),
            _ => {}
        },
        3 => {
            (g.x, g.y) = match g.kind {
                Center | North | South => (-y, x),
                FocusPoint => (1.0 - y, x),
                _ => (y, x),
            }
        }
        _ => {}
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(kind: GravityKind, x: f64, y: f64) -> Gravity {
        Gravity { kind, x, y }
    }

    /// Every anchor of a 30×20 window in a 101×61 outer box, no offsets:
    /// centre rounds (101-30+1)/2 = 36 and (61-20+1)/2 = 21.
    #[test]
    fn anchors() {
        use GravityKind::*;
        let cases = [
            (Center, (36, 21)),
            (North, (36, 0)),
            (South, (36, 41)),
            (East, (71, 21)),
            (West, (0, 21)),
            (NorthEast, (71, 0)),
            (NorthWest, (0, 0)),
            (SouthEast, (71, 41)),
            (SouthWest, (0, 41)),
            (Smart, (36, 21)),
        ];
        for (kind, want) in cases {
            assert_eq!(
                calc_position(101, 61, 30, 20, &g(kind, 0.0, 0.0), 1.0, false),
                want,
                "{kind:?}"
            );
        }
    }

    /// Offsets push inwards from edge anchors and right/down from the centre;
    /// fractions are of the outer size; pixel offsets scale with dpr.
    #[test]
    fn offsets() {
        use GravityKind::*;
        assert_eq!(
            calc_position(100, 60, 30, 20, &g(East, 5.0, 3.0), 1.0, false),
            (65, 23)
        );
        assert_eq!(
            calc_position(100, 60, 30, 20, &g(SouthEast, 5.0, 3.0), 1.0, false),
            (65, 37)
        );
        assert_eq!(
            calc_position(100, 60, 30, 20, &g(NorthWest, 5.0, 3.0), 2.0, false),
            (10, 6)
        );
        assert_eq!(
            calc_position(100, 60, 30, 20, &g(Center, -0.1, 0.25), 1.0, false),
            (26, 35)
        );
        // Clamped inside, or kept overlapping by one pixel when overflow is allowed.
        assert_eq!(
            calc_position(100, 60, 30, 20, &g(West, 1e9, -1e9), 1.0, false),
            (70, 0)
        );
        assert_eq!(
            calc_position(100, 60, 30, 20, &g(West, 1e9, -1e9), 1.0, true),
            (99, -19)
        );
        assert_eq!(
            calc_position(
                100,
                60,
                30,
                20,
                &g(West, f64::NAN, f64::INFINITY),
                1.0,
                true
            ),
            (0, 59)
        );
    }

    /// Focus points centre the window on the point, clamped inside.
    #[test]
    fn focus_point() {
        let fp = |x, y| g(GravityKind::FocusPoint, x, y);
        assert_eq!(
            calc_position(100, 60, 30, 20, &fp(0.5, 0.5), 1.0, false),
            (35, 20)
        );
        assert_eq!(
            calc_position(100, 60, 30, 20, &fp(0.75, 0.25), 1.0, false),
            (60, 5)
        );
        assert_eq!(
            calc_position(100, 60, 30, 20, &fp(1.0, 0.0), 1.0, false),
            (70, 0)
        );
    }

    /// Rounding is half-to-even, like Go.
    #[test]
    fn rounding_is_half_even() {
        assert_eq!(round_even(2.5), 2);
        assert_eq!(round_even(3.5), 4);
        assert_eq!(round_even(-1.5), -2);
        assert_eq!(round_even(f64::NAN), 0);
        // (100 - 31 + 1) / 2 = 35; (100 - 30 + 1) / 2 = 35.5 → 36.
        assert_eq!(
            calc_position(100, 1, 31, 1, &Gravity::CENTER, 1.0, false).0,
            35
        );
        assert_eq!(
            calc_position(100, 1, 30, 1, &Gravity::CENTER, 1.0, false).0,
            36
        );
    }

    /// imgproxy's rotation tables: after a 90° auto-rotation, "north" of the
    /// upright picture is the stored image's west, and so on.
    #[test]
    fn gravity_follows_rotation_and_flip() {
        use GravityKind::*;
        assert_eq!(
            rotate_and_flip_gravity(&g(North, 1.0, 2.0), 90, false),
            g(West, 2.0, -1.0)
        );
        assert_eq!(
            rotate_and_flip_gravity(&g(East, 1.0, 2.0), 90, false),
            g(North, 2.0, 1.0)
        );
        assert_eq!(
            rotate_and_flip_gravity(&g(Center, 1.0, 2.0), 90, false),
            g(Center, 2.0, -1.0)
        );
        assert_eq!(
            rotate_and_flip_gravity(&g(NorthWest, 1.0, 2.0), 180, false),
            g(SouthEast, 1.0, 2.0)
        );
        assert_eq!(
            rotate_and_flip_gravity(&g(North, 1.0, 2.0), 270, false),
            g(East, 2.0, 1.0)
        );
        assert_eq!(
            rotate_and_flip_gravity(&g(FocusPoint, 0.2, 0.3), 270, false),
            g(FocusPoint, 0.7, 0.2)
        );
        assert_eq!(
            rotate_and_flip_gravity(&g(FocusPoint, 0.2, 0.3), 0, true),
            g(FocusPoint, 0.8, 0.3)
        );
        assert_eq!(
            rotate_and_flip_gravity(&g(NorthEast, 1.0, 2.0), 0, true),
            g(NorthWest, 1.0, 2.0)
        );
        assert_eq!(
            rotate_and_flip_gravity(&g(North, 1.0, 2.0), 45, false),
            g(North, 1.0, 2.0)
        );
    }
}
