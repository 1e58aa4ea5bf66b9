//! The order of operations for one job, following imgproxy's pipeline: limits → decode
//! (shrink-on-load) → ICC to sRGB → orient → crop → scale → result crop → flatten → encode.

use image::DynamicImage;

use super::decode::{self, Decoded};
use super::encode::{self, EncodeParams};
use super::format::{self, FormatInputs};
use super::geometry::{self, Plan};
use super::{EngineConfig, EngineError, Job, Processed, SourceInfo, probe};
use crate::worker::options::{Flip, ImageFormat, ProcessingOptions, Rotate};

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

    let jpeg_shrink = if info.format == ImageFormat::Jpeg && !po.trim.enabled {
        let segments = super::jpeg::segments(job.source);
        let orientation = segments.exif.map_or(1, super::metadata::orientation);
        let (w, h) = oriented_size(
            info.width,
            info.height,
            effective_orientation(po, orientation),
            po.rotate,
        );
        geometry::jpeg_shrink(w, h, &geometry::plan(w, h, po, false))
    } else {
        1
    };

    let decoded = decode::decode(job.source, &info, jpeg_shrink, frames)?;
    let orientation = effective_orientation(po, decoded.orientation);
    let (src_w, src_h) = oriented_size(info.width, info.height, orientation, po.rotate);
    let plan = geometry::plan(src_w, src_h, po, false);

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
        ..
    } = decoded;
    if !format::supports_animation(out_format) {
        images.truncate(1);
    }

    let ctx = FrameContext {
        po,
        plan: &plan,
        orientation,
        src_width: src_w,
        src_height: src_h,
        out_format,
        icc: icc.as_deref(),
    };
    let images = images
        .into_iter()
        .map(|image| transform(image, &ctx))
        .collect::<Result<Vec<_>, _>>()?;

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

    let params = EncodeParams {
        format: out_format,
        quality: po.quality_for(out_format, &config.defaults),
        delays: if images.len() > 1 { delays } else { Vec::new() },
        loop_count,
    };
    let bytes = encode::encode_fitting(&images, &params, po.max_bytes)?;
    Ok(Processed {
        bytes,
        format: out_format,
    })
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

/// The EXIF orientation to apply: none when `auto_rotate` is off.
fn effective_orientation(po: &ProcessingOptions, exif: u8) -> u8 {
    if po.auto_rotate { exif } else { 1 }
}

/// Orientations 5–8 and quarter-turn rotations swap width and height.
fn oriented_size(width: u32, height: u32, orientation: u8, rotate: Rotate) -> (u32, u32) {
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
}

fn transform(mut image: DynamicImage, ctx: &FrameContext<'_>) -> Result<DynamicImage, EngineError> {
    let po = ctx.po;
    let plan = ctx.plan;
    if let Some(icc) = ctx.icc {
        super::color::to_srgb(&mut image, icc);
    }
    let mut image = orient(image, ctx.orientation, po.rotate, po.flip);

    // The image may be smaller than the plan's source (shrink-on-load): crop sizes scale.
    if plan.crop_width > 0 || plan.crop_height > 0 {
        let sx = f64::from(image.width()) / f64::from(ctx.src_width);
        let sy = f64::from(image.height()) / f64::from(ctx.src_height);
        let w = if plan.crop_width > 0 {
            geometry::scale(plan.crop_width, sx).max(1)
        } else {
            image.width()
        };
        let h = if plan.crop_height > 0 {
            geometry::scale(plan.crop_height, sy).max(1)
        } else {
            image.height()
        };
        image = centre_crop(image, w, h);
    }

    image = super::resize::resize(image, plan.scaled_width, plan.scaled_height)?;

    if plan.result_crop_width > 0 || plan.result_crop_height > 0 {
        let w = if plan.result_crop_width > 0 {
            plan.result_crop_width
        } else {
            image.width()
        };
        let h = if plan.result_crop_height > 0 {
            plan.result_crop_height
        } else {
            image.height()
        };
        image = centre_crop(image, w, h);
    }

    if !format::supports_alpha(ctx.out_format) && image.color().has_alpha() {
        image = DynamicImage::ImageRgb8(image.to_rgb8());
    }
    Ok(image)
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

/// Crops `width` × `height` (clamped to the image) around the centre, imgproxy's default
/// gravity: `(outer - inner + 1) / 2` rounded half to even.
fn centre_crop(image: DynamicImage, width: u32, height: u32) -> DynamicImage {
    let width = width.min(image.width());
    let height = height.min(image.height());
    if (width, height) == (image.width(), image.height()) {
        return image;
    }
    let left = (f64::from(image.width() - width + 1) / 2.0).round_ties_even() as u32;
    let top = (f64::from(image.height() - height + 1) / 2.0).round_ties_even() as u32;
    let left = left.min(image.width() - width);
    let top = top.min(image.height() - height);
    image.crop_imm(left, top, width, height)
}
