//! The order of operations for one job, following imgproxy's pipeline: limits → decode
//! (shrink-on-load) → ICC to sRGB → orient → crop → scale → result crop → flatten → encode.

use image::{DynamicImage, Rgba, RgbaImage};

use super::decode::{self, Decoded};
use super::encode::{self, EncodeParams};
use super::format::{self, FormatInputs};
use super::geometry::{self, Plan};
use super::{EngineConfig, EngineError, Job, Processed, SourceInfo, exif_out, ops, probe};
use crate::worker::options::{
    Color, Flip, ImageFormat, Padding, ProcessingOptions, Rotate, Watermark,
};

/// AVIF can't encode images smaller than this on either side; imgproxy falls back to PNG or
/// JPEG below it.
const AVIF_MIN_DIMENSION: u32 = 16;

/// Runs a job; see [`super::process`].
pub fn run(job: &Job<'_>, config: &EngineConfig) -> Result<Processed, EngineError> {
    let info = probe(job.source)?;
    let po = job.options;

    // Animation is kept only when allowed and the requested format (if any) can hold it.
    let keep_animation = config.max_animation_frames > 1
        && info.frames > 1
        && job.format.is_none_or(format::supports_animation);
    let frames = if keep_animation {
        info.frames.min(config.max_animation_frames)
    } else {
        1
    };
    check_resolution(&info, frames, config)?;
    job.deadline.check("decoding")?;

    let vector = info.format == ImageFormat::Svg;
    let decoded = if vector {
        match super::svg::load(job, &info, config)? {
            super::svg::Loaded::Vector(processed) => return Ok(processed),
            super::svg::Loaded::Raster(decoded) => decoded,
        }
    } else {
        let preshrink = preshrink(job.source, &info, po);
        decode::decode(job.source, &info, preshrink, frames, config)?
    };
    let orientation = effective_orientation(po, decoded.orientation);
    let (src_w, src_h) = oriented_size(info.width, info.height, orientation, po.rotate);
    let plan = geometry::plan(src_w, src_h, po, vector);
    check_result_size(&plan, po, decoded.frames.len(), config)?;

    let animated = decoded.frames.len() > 1;
    let expect_alpha = po.background.is_none()
        && (decoded.has_alpha || po.padding.is_enabled() || po.extend.enabled);
    let mut out_format = format::choose(
        &FormatInputs {
            requested: job.format,
            accept: job.accept,
            source: info.format,
            animated,
            expect_alpha,
        },
        config,
    );
    if !encode::can_save(out_format) {
        return Err(EngineError::UnsupportedOutput(out_format));
    }

    let Decoded {
        frames: mut images,
        delays,
        loop_count,
        icc,
        exif,
        ..
    } = decoded;
    if !format::supports_animation(out_format) {
        images.truncate(1);
    }

    let watermark = match (&config.watermark, po.watermark.enabled) {
        // Checked at start-up, so this failing is ours, not the source's: 500 (`Encode`).
        (Some(data), true) => {
            Some(
                decode_watermark(data, config).map_err(|e| EngineError::Encode {
                    format: ImageFormat::Png,
                    reason: format!("watermark image: {e}"),
                })?,
            )
        }
        _ => None,
    };
    let ctx = FrameContext {
        po,
        plan: &plan,
        orientation,
        src_width: src_w,
        src_height: src_h,
        out_format,
        icc: icc.as_deref(),
        trim: po.trim.enabled && !animated,
        watermark: watermark
            .as_ref()
            .map(|mark| (mark, effective_watermark(po, config))),
        config,
    };
    let images = images
        .into_iter()
        .map(|image| {
            job.deadline.check("processing a frame")?;
            transform(image, &ctx)
        })
        .collect::<Result<Vec<_>, _>>()?;
    job.deadline.check("encoding")?;

    let (width, height) = (images[0].width(), images[0].height());
    if out_format == ImageFormat::Avif
        && (width < AVIF_MIN_DIMENSION || height < AVIF_MIN_DIMENSION)
    {
        out_format = if images[0].color().has_alpha() {
            ImageFormat::Png
        } else {
            ImageFormat::Jpeg
        };
    }

    let exif = exif_out::for_result(
        exif.as_deref(),
        po,
        &exif_out::ResultImage {
            format: out_format,
            width,
            height,
            turned: orientation != 1
                || po.rotate != Rotate::R0
                || po.flip.horizontal
                || po.flip.vertical,
        },
    );
    if let exif_out::ResultExif::Omit(why) = &exif {
        tracing::debug!(?why, "result carries no EXIF");
    }
    let params = EncodeParams {
        format: out_format,
        quality: po.quality_for(out_format, &config.defaults),
        delays: if images.len() > 1 { delays } else { Vec::new() },
        loop_count,
        exif: exif.into_block(),
    };
    let bytes = encode::encode_fitting(&images, &params, po.max_bytes)?;
    Ok(Processed {
        bytes,
        format: out_format,
    })
}

/// How much smaller the decoder may deliver the source (shrink-on-load; 1 = full size).
/// JPEG and still WebP decoders can; trim needs the full-size pixels to find the edges.
fn preshrink(source: &[u8], info: &SourceInfo, po: &ProcessingOptions) -> f64 {
    let stored_orientation = match info.format {
        _ if po.trim.enabled => return 1.0,
        ImageFormat::Jpeg => super::jpeg::segments(source)
            .exif
            .map_or(1, super::metadata::orientation),
        ImageFormat::Webp if info.frames <= 1 => decode::webp_metadata(source)
            .exif
            .map_or(1, |exif| super::metadata::orientation(&exif)),
        _ => return 1.0,
    };
    let orientation = effective_orientation(po, stored_orientation);
    let (w, h) = oriented_size(info.width, info.height, orientation, po.rotate);
    geometry::preshrink(w, h, &geometry::plan(w, h, po, false))
}

/// The watermark image as RGBA, from any source format (SVG drawn at its own size).
pub(super) fn decode_watermark(
    data: &[u8],
    config: &EngineConfig,
) -> Result<RgbaImage, EngineError> {
    let info = probe(data)?;
    if info.format == ImageFormat::Svg {
        let image = super::svg::rasterise(
            data,
            super::DEFAULT_MAX_SRC_RESOLUTION * 1_000_000.0,
            config.max_svg_filter_megapixels,
        )?;
        return Ok(into_rgba(image));
    }
    let decoded = decode::decode(data, &info, 1.0, 1, config)?;
    let first = decoded
        .frames
        .into_iter()
        .next()
        .expect("decode returns at least one frame");
    Ok(into_rgba(first))
}

/// `IMGPROXY_WATERMARK_OPACITY` multiplies the URL's opacity.
fn effective_watermark(po: &ProcessingOptions, config: &EngineConfig) -> Watermark {
    Watermark {
        opacity: po.watermark.opacity * config.watermark_opacity,
        ..po.watermark
    }
}

/// imgproxy's `CheckDimensions`: the loaded frames together must stay under
/// `max_src_resolution`, unless a per-frame limit is set for animations.
fn check_resolution(
    info: &SourceInfo,
    frames: u32,
    config: &EngineConfig,
) -> Result<(), EngineError> {
    let frame_mp = f64::from(info.width) * f64::from(info.height) / 1_000_000.0;
    if frames > 1 && config.max_animation_frame_resolution > 0.0 {
        if frame_mp > config.max_animation_frame_resolution {
            return Err(EngineError::FrameTooBig {
                megapixels: frame_mp,
                limit: config.max_animation_frame_resolution,
            });
        }
    } else if frame_mp * f64::from(frames.max(1)) > config.max_src_resolution {
        return Err(EngineError::SourceTooBig {
            megapixels: frame_mp * f64::from(frames.max(1)),
            limit: config.max_src_resolution,
        });
    }
    Ok(())
}

/// Refuses a plan whose canvas (extend, padding and frames counted) would pass
/// `IMGPROXY_MAX_RESULT_DIMENSION` or, in area, `IMGPROXY_MAX_SRC_RESOLUTION`: an enlarged
/// or padded result is bounded like a source, before any of its pixels exist. The scaled
/// image before the result crop (fill enlarging past the box, `min-width`) is held once
/// per frame too, so its area is bounded the same way.
///
/// All sums and products are done in `u64`/`f64` from `u32` parts: none can wrap (a padding
/// of `u32::MAX` on both sides once summed to 0 in `u32`).
pub(crate) fn check_result_size(
    plan: &Plan,
    po: &ProcessingOptions,
    frames: usize,
    config: &EngineConfig,
) -> Result<(), EngineError> {
    let axis = |scaled: u32, crop: u32, target: u32, extend_ar: u32, padding: [u32; 2]| {
        let mut n = u64::from(if crop > 0 { crop.min(scaled) } else { scaled });
        if po.extend.enabled {
            n = n.max(u64::from(target));
        }
        n.max(u64::from(extend_ar)) + u64::from(padding[0]) + u64::from(padding[1])
    };
    let [top, right, bottom, left] = plan.padding;
    let width = axis(
        plan.scaled_width,
        plan.result_crop_width,
        plan.target_width,
        plan.extend_ar_width,
        [right, left],
    );
    let height = axis(
        plan.scaled_height,
        plan.result_crop_height,
        plan.target_height,
        plan.extend_ar_height,
        [top, bottom],
    );
    let frames = u32::try_from(frames.max(1)).unwrap_or(u32::MAX);
    let too_big = |width: u64, height: u64, limit: String| EngineError::ResultTooBig {
        width,
        height,
        frames,
        limit,
    };
    let side = u64::from(config.max_result_dimension);
    if side > 0 && width.max(height) > side {
        return Err(too_big(
            width,
            height,
            format!("IMGPROXY_MAX_RESULT_DIMENSION is {side}"),
        ));
    }
    let area_limit = |width: u64, height: u64, frames: u32| {
        let megapixels = width as f64 * height as f64 * f64::from(frames) / 1_000_000.0;
        if megapixels > config.max_src_resolution {
            Err(too_big(
                width,
                height,
                format!(
                    "{megapixels:.1} MP > IMGPROXY_MAX_SRC_RESOLUTION {} MP",
                    config.max_src_resolution
                ),
            ))
        } else {
            Ok(())
        }
    };
    area_limit(width, height, frames)?;
    area_limit(
        u64::from(plan.scaled_width),
        u64::from(plan.scaled_height),
        1,
    )
}

/// The EXIF orientation to apply: none when `auto_rotate` is off.
fn effective_orientation(po: &ProcessingOptions, exif: u8) -> u8 {
    if po.auto_rotate { exif } else { 1 }
}

/// Orientations 5–8 and quarter-turn rotations swap width and height.
pub(crate) fn oriented_size(
    width: u32,
    height: u32,
    orientation: u8,
    rotate: Rotate,
) -> (u32, u32) {
    let exif_quarter = matches!(orientation, 5..=8);
    let rotate_quarter = matches!(rotate, Rotate::R90 | Rotate::R270);
    if exif_quarter != rotate_quarter {
        (height, width)
    } else {
        (width, height)
    }
}

/// Per-frame inputs that are the same for every frame.
struct FrameContext<'a> {
    po: &'a ProcessingOptions,
    plan: &'a Plan,
    orientation: u8,
    /// Oriented source size (the plan's coordinate space).
    src_width: u32,
    src_height: u32,
    out_format: ImageFormat,
    /// The source's ICC profile, converted from before anything else touches the pixels.
    icc: Option<&'a [u8]>,
    /// Trim borders first (never for animations, as in imgproxy).
    trim: bool,
    /// The decoded watermark and its effective opacity, when one is asked for.
    watermark: Option<(&'a RgbaImage, Watermark)>,
    /// The limits a trimmed frame's new plan is checked against.
    config: &'a EngineConfig,
}

/// imgproxy's transparent canvas for extend and padding; flattened later if the result
/// format has no alpha or a background is set.
const TRANSPARENT: Rgba<u8> = Rgba([0, 0, 0, 0]);

fn transform(mut image: DynamicImage, ctx: &FrameContext<'_>) -> Result<DynamicImage, EngineError> {
    let po = ctx.po;
    if let Some(icc) = ctx.icc {
        super::color::to_srgb(&mut image, icc);
    }
    let mut image = orient(image, ctx.orientation, po.rotate, po.flip);

    // Trimming changes the source size, so the plan is redone on the trimmed image
    // (trim also turned shrink-on-load off, so the image is at full size).
    let trimmed_plan;
    let (plan, src_width, src_height) = if ctx.trim {
        image = rgba_op(image, |rgba| ops::trim(&rgba, &po.trim));
        trimmed_plan = geometry::plan(image.width(), image.height(), po, false);
        check_result_size(&trimmed_plan, po, 1, ctx.config)?;
        (&trimmed_plan, image.width(), image.height())
    } else {
        (ctx.plan, ctx.src_width, ctx.src_height)
    };

    // The image may be smaller than the plan's source (shrink-on-load): the crop and its
    // pixel offsets scale with it.
    if plan.crop_width > 0 || plan.crop_height > 0 {
        let sx = f64::from(image.width()) / f64::from(src_width);
        let sy = f64::from(image.height()) / f64::from(src_height);
        let w = geometry::scale(plan.crop_width, sx);
        let h = geometry::scale(plan.crop_height, sy);
        let w = if plan.crop_width > 0 { w.max(1) } else { 0 };
        let h = if plan.crop_height > 0 { h.max(1) } else { 0 };
        let gravity = po.crop.gravity.unwrap_or(po.gravity);
        image = rgba_op(image, |rgba| {
            ops::crop_scaled(&rgba, w, h, &gravity, sx.min(sy))
        });
    }

    image = super::resize::resize(image, plan.scaled_width, plan.scaled_height)?;

    if plan.result_crop_width > 0 || plan.result_crop_height > 0 {
        let (w, h) = (plan.result_crop_width, plan.result_crop_height);
        if w.min(image.width()) < image.width() || h.min(image.height()) < image.height() {
            image = rgba_op(image, |rgba| {
                ops::crop_scaled(&rgba, w, h, &po.gravity, plan.dpr_scale)
            });
        }
    }

    if po.blur > 0.0 {
        image = rgba_op(image, |rgba| ops::blur(&rgba, po.blur));
    }
    if po.sharpen > 0.0 {
        image = rgba_op(image, |rgba| ops::sharpen(&rgba, po.sharpen));
    }
    if po.pixelate > 1 {
        image = rgba_op(image, |rgba| ops::pixelate(&rgba, po.pixelate));
    }

    if po.extend.enabled
        && (plan.target_width > image.width() || plan.target_height > image.height())
    {
        let (w, h) = (plan.target_width, plan.target_height);
        image = rgba_op(image, |rgba| {
            ops::extend_scaled(&rgba, w, h, &po.extend.gravity, TRANSPARENT, plan.dpr_scale)
        });
    }
    if po.extend_aspect_ratio.enabled && plan.extend_ar_width > 0 && plan.extend_ar_height > 0 {
        let (w, h) = (plan.extend_ar_width, plan.extend_ar_height);
        image = rgba_op(image, |rgba| {
            ops::extend_scaled(
                &rgba,
                w,
                h,
                &po.extend_aspect_ratio.gravity,
                TRANSPARENT,
                plan.dpr_scale,
            )
        });
    }
    if po.padding.is_enabled() {
        let [top, right, bottom, left] = plan.padding;
        let padding = Padding {
            top,
            right,
            bottom,
            left,
        };
        image = rgba_op(image, |rgba| ops::pad(&rgba, &padding, TRANSPARENT));
    }

    image = fit_format_limits(image, ctx.out_format)?;

    let flatten = po.background.is_some() || !format::supports_alpha(ctx.out_format);
    if flatten && image.color().has_alpha() {
        let bg = po.background.unwrap_or(Color::WHITE);
        let mut rgba = into_rgba(image);
        ops::flatten(&mut rgba, Rgba([bg.r, bg.g, bg.b, 255]));
        image = DynamicImage::ImageRgb8(DynamicImage::ImageRgba8(rgba).to_rgb8());
    }

    if let Some((mark, wm)) = &ctx.watermark {
        let mut rgba = into_rgba(image);
        ops::watermark_scaled(&mut rgba, mark, wm, plan.dpr_scale);
        image = DynamicImage::ImageRgba8(rgba);
        if !format::supports_alpha(ctx.out_format) || po.background.is_some() {
            image = DynamicImage::ImageRgb8(image.to_rgb8());
        }
    }
    Ok(image)
}

/// Runs an `RgbaImage` operation and keeps the image RGB when it was RGB and stayed opaque
/// (resizing and encoding three channels is a quarter cheaper than four).
fn rgba_op(image: DynamicImage, op: impl FnOnce(RgbaImage) -> RgbaImage) -> DynamicImage {
    let was_opaque = !image.color().has_alpha();
    let out = op(into_rgba(image));
    if was_opaque && out.pixels().all(|p| p.0[3] == 255) {
        DynamicImage::ImageRgb8(DynamicImage::ImageRgba8(out).to_rgb8())
    } else {
        DynamicImage::ImageRgba8(out)
    }
}

fn into_rgba(image: DynamicImage) -> RgbaImage {
    match image {
        DynamicImage::ImageRgba8(rgba) => rgba,
        other => other.to_rgba8(),
    }
}

/// Largest side some formats can hold (libwebp 16383, AVIF/HEIF 16384, GIF 65535, ICO 256):
/// bigger results are scaled down to fit, as imgproxy does.
fn fit_format_limits(
    image: DynamicImage,
    format: ImageFormat,
) -> Result<DynamicImage, EngineError> {
    let max_side = match format {
        ImageFormat::Webp => 16383,
        ImageFormat::Avif => 16384,
        ImageFormat::Gif => 65535,
        ImageFormat::Ico => 256,
        _ => return Ok(image),
    };
    let longest = image.width().max(image.height());
    if longest <= max_side {
        return Ok(image);
    }
    let scale = f64::from(max_side) / f64::from(longest);
    let (w, h) = (
        geometry::scale(image.width(), scale).max(1),
        geometry::scale(image.height(), scale).max(1),
    );
    super::resize::resize(image, w, h)
}

/// Applies the EXIF orientation, then the `rotate` option, then `flip`.
fn orient(mut image: DynamicImage, orientation: u8, rotate: Rotate, flip: Flip) -> DynamicImage {
    if let Some(o) = image::metadata::Orientation::from_exif(orientation) {
        image.apply_orientation(o);
    }
    image = match rotate {
        Rotate::R0 => image,
        Rotate::R90 => image.rotate90(),
        Rotate::R180 => image.rotate180(),
        Rotate::R270 => image.rotate270(),
    };
    if flip.horizontal {
        image = image.fliph();
    }
    if flip.vertical {
        image = image.flipv();
    }
    image
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::options::{Defaults, ResizingType};

    fn webp(width: u32, height: u32) -> Vec<u8> {
        let pixels = vec![128u8; (width * height * 3) as usize];
        webp::Encoder::new(&pixels, webp::PixelLayout::Rgb, width, height)
            .encode(80.0)
            .to_vec()
    }

    fn fit(width: u32, height: u32) -> ProcessingOptions {
        let mut po = ProcessingOptions::new(&Defaults::default());
        po.resizing_type = ResizingType::Fit;
        po.width = width;
        po.height = height;
        po
    }

    /// What `transform` allocates for a plan, step by step, modelled independently of
    /// [`check_result_size`]: the largest canvas (w, h) any step makes.
    fn canvases(plan: &Plan, po: &ProcessingOptions) -> Vec<(u64, u64)> {
        let mut steps = Vec::new();
        let (mut w, mut h) = (u64::from(plan.scaled_width), u64::from(plan.scaled_height));
        steps.push((w, h));
        if plan.result_crop_width > 0 {
            w = w.min(u64::from(plan.result_crop_width));
        }
        if plan.result_crop_height > 0 {
            h = h.min(u64::from(plan.result_crop_height));
        }
        let (tw, th) = (u64::from(plan.target_width), u64::from(plan.target_height));
        if po.extend.enabled && (tw > w || th > h) {
            (w, h) = (if tw == 0 { w } else { tw }, if th == 0 { h } else { th });
            steps.push((w, h));
        }
        let (ew, eh) = (
            u64::from(plan.extend_ar_width),
            u64::from(plan.extend_ar_height),
        );
        if po.extend_aspect_ratio.enabled && ew > 0 && eh > 0 && (ew > w || eh > h) {
            (w, h) = (ew, eh);
            steps.push((w, h));
        }
        if po.padding.is_enabled() {
            let [top, right, bottom, left] = plan.padding.map(u64::from);
            steps.push((w + left + right, h + top + bottom));
        }
        steps
    }

    fn extreme_u32() -> impl proptest::strategy::Strategy<Value = u32> {
        use proptest::prelude::*;
        prop_oneof![
            Just(0),
            Just(1),
            Just(2),
            Just(65_535),
            Just(1 << 31),
            Just(u32::MAX - 1),
            Just(u32::MAX),
            0..10_000u32,
            any::<u32>(),
        ]
    }

    fn extreme_f64() -> impl proptest::strategy::Strategy<Value = f64> {
        use proptest::prelude::*;
        prop_oneof![
            Just(f64::MIN_POSITIVE),
            Just(1e-9),
            Just(0.5),
            Just(1.0),
            Just(3.0),
            Just(1e9),
            Just(f64::MAX),
            0.001..20.0f64,
        ]
    }

    fn extreme_crop() -> impl proptest::strategy::Strategy<Value = f64> {
        use proptest::prelude::*;
        prop_oneof![Just(0.0), Just(1e-12), 0.0..1.0f64, extreme_f64()]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]

        /// Every numeric option at its extremes, through the plan and the size check: a plan
        /// that passes never makes a canvas past the limits, and nothing panics (this crate's
        /// tests run with overflow checks on).
        #[test]
        fn passing_plans_stay_within_the_limits(
            src in (extreme_u32(), extreme_u32()),
            size in (extreme_u32(), extreme_u32(), extreme_u32(), extreme_u32()),
            scale in (extreme_f64(), extreme_f64(), extreme_f64()),
            crop in (extreme_crop(), extreme_crop()),
            padding in (extreme_u32(), extreme_u32(), extreme_u32(), extreme_u32()),
            flags in (0..5usize, proptest::prelude::any::<[bool; 4]>()),
            frames in 1..4usize,
            max_result_dimension in proptest::prop_oneof![
                proptest::strategy::Just(0u32),
                1..20_000u32
            ],
        ) {
            let config = EngineConfig {
                max_result_dimension,
                ..EngineConfig::default()
            };
            // Any source that passes the resolution check: the height is cut to fit.
            let src_w = src.0.clamp(1, 50_000_000);
            let src_h = src.1.clamp(1, 50_000_000 / src_w);
            let info = SourceInfo {
                format: ImageFormat::Png,
                width: src_w,
                height: src_h,
                frames: 1,
            };
            proptest::prop_assert!(check_resolution(&info, 1, &config).is_ok());
            let mut po = ProcessingOptions::new(&Defaults::default());
            (po.width, po.height, po.min_width, po.min_height) = size;
            (po.dpr, po.zoom_x, po.zoom_y) = scale;
            (po.crop.width, po.crop.height) = crop;
            (po.padding.top, po.padding.right, po.padding.bottom, po.padding.left) = padding;
            po.resizing_type = [
                ResizingType::Fit,
                ResizingType::Fill,
                ResizingType::FillDown,
                ResizingType::Force,
                ResizingType::Auto,
            ][flags.0];
            let [enlarge, extend, extend_ar, vector] = flags.1;
            po.enlarge = enlarge;
            po.extend.enabled = extend;
            po.extend_aspect_ratio.enabled = extend_ar;

            let plan = geometry::plan(src_w, src_h, &po, vector);
            if check_result_size(&plan, &po, frames, &config).is_ok() {
                let max_pixels = config.max_src_resolution * 1e6;
                for (step, (w, h)) in canvases(&plan, &po).into_iter().enumerate() {
                    proptest::prop_assert!(
                        w as f64 * h as f64 <= max_pixels,
                        "step {step}: {w}x{h} for {plan:?}"
                    );
                }
                let (w, h) = *canvases(&plan, &po).last().expect("at least the scaled size");
                proptest::prop_assert!(w as f64 * h as f64 * frames as f64 <= max_pixels);
                if max_result_dimension > 0 {
                    proptest::prop_assert!(w.max(h) <= u64::from(max_result_dimension));
                }
            }
        }
    }

    #[test]
    fn still_webp_and_jpeg_shrink_on_load_others_do_not() {
        let source = webp(2000, 1000);
        let info = probe(&source).unwrap();
        assert_eq!(preshrink(&source, &info, &fit(200, 200)), 10.0);
        assert_eq!(preshrink(&source, &info, &fit(4000, 0)), 1.0);
        let mut trim = fit(200, 200);
        trim.trim.enabled = true;
        assert_eq!(
            preshrink(&source, &info, &trim),
            1.0,
            "trim needs all pixels"
        );

        let png = {
            let mut out = Vec::new();
            image::RgbImage::new(2000, 1000)
                .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
                .unwrap();
            out
        };
        assert_eq!(preshrink(&png, &probe(&png).unwrap(), &fit(200, 200)), 1.0);
    }

    #[test]
    fn shrunk_webp_lands_on_exact_sizes() {
        let source = webp(1001, 1503);
        let config = EngineConfig::default();
        for (po, expected) in [(fit(100, 100), (67, 100)), (fit(0, 500), (333, 500))] {
            let job = Job {
                source: &source,
                options: &po,
                format: Some(ImageFormat::Png),
                accept: None,
                deadline: super::super::Deadline::NONE,
            };
            let out = super::super::process(&job, &config).unwrap();
            let image = image::load_from_memory(&out.bytes).unwrap();
            assert_eq!((image.width(), image.height()), expected);
        }
    }
}
