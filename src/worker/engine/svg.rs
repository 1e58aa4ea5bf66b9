//! SVG sources, treated as imgproxy treats them: with no result format asked for (or
//! `svg`), the source comes back as SVG — unprocessed, since a vector needs no resizing, but
//! sanitised; with a raster format asked for, it is rendered at the scale the result needs
//! ("scale on load": a 100 px icon asked at 400 px is drawn at 400 px, never enlarged from
//! 100) and goes through the normal pipeline.
//!
//! Parsing is `usvg`'s, and sanitising is parsing plus writing the parsed tree back with
//! `usvg`'s own writer: the tree holds only what renders (shapes, text, paint, clip paths,
//! masks, filters, `data:` images), so scripts, event handlers, `<foreignObject>`, `<style>` and
//! every external reference are gone by construction rather than by a block list.
//!
//! Nothing the source names is ever read: `<image>` hrefs resolve only from `data:` URLs and
//! there is no resources directory. The only files read are the machine's own fonts
//! (`FONTS`), which `<text>` is laid out with: the sanitised SVG keeps it as `<text>`
//! (not paths), and rasterised results draw it. `usvg` drops text no font can lay out, so
//! on a machine with no fonts at all `<text>` is missing from both (see docs/engine.md).

use image::{DynamicImage, RgbaImage};
use resvg::tiny_skia;

use super::decode::Decoded;
use super::geometry;
use super::{EngineConfig, EngineError, Job, Processed, SourceInfo};
use crate::worker::options::{ImageFormat, ProcessingOptions, Rotate};

/// Largest raster image embedded in an SVG (`<image href="data:...">`) that is rendered;
/// bigger ones are left out. `resvg` decodes embedded images with no size check of its own,
/// so a 68-byte PNG claiming 10 gigapixels would otherwise be one allocation away from
/// aborting the worker. 50 MP is `IMGPROXY_MAX_SRC_RESOLUTION`'s default.
pub const MAX_EMBEDDED_IMAGE_MEGAPIXELS: f64 = 50.0;

/// What an SVG source becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// Returned as sanitised SVG: no format was asked for, or `svg` was. imgproxy does this
    /// whatever `IMGPROXY_AUTO_*`/`ENFORCE_*` say (they only replace an asked-for format).
    Vector,
    /// Rendered to pixels, because a raster format was asked for.
    Raster,
}

/// Picks the [`Treatment`] from the format asked for in the URL.
pub fn treatment(requested: Option<ImageFormat>) -> Treatment {
    match requested {
        None | Some(ImageFormat::Svg) => Treatment::Vector,
        Some(_) => Treatment::Raster,
    }
}

/// A loaded SVG source: either the finished result or pixels for the pipeline.
pub enum Loaded {
    Vector(Processed),
    Raster(Decoded),
}

/// The intrinsic size in pixels (from `width`/`height`/`viewBox`, as `usvg` resolves them),
/// for [`super::probe()`].
///
/// # Errors
/// [`EngineError::Corrupt`] when the source isn't UTF-8 XML with an `<svg>` root of a
/// valid size.
pub fn dimensions(source: &[u8]) -> Result<(u32, u32), EngineError> {
    Ok(intrinsic_size(&parse(source)?))
}

/// Turns a probed SVG source into its result ([`Treatment::Vector`]) or into pixels at the
/// scale the job's plan needs ([`Treatment::Raster`]).
///
/// # Errors
/// [`EngineError::Corrupt`] for a source that doesn't parse; [`EngineError::InvalidSize`]
/// when no canvas can be allocated for the render.
pub fn load(
    job: &Job<'_>,
    info: &SourceInfo,
    config: &EngineConfig,
) -> Result<Loaded, EngineError> {
    let tree = parse(job.source)?;
    match treatment(job.format) {
        Treatment::Vector => Ok(Loaded::Vector(Processed {
            bytes: write(&tree).into_bytes(),
            format: ImageFormat::Svg,
        })),
        Treatment::Raster => {
            // Vectors always enlarge: an oversized result is refused before it is rendered.
            let po = job.options;
            let (w, h) = super::pipeline::oriented_size(info.width, info.height, 1, po.rotate);
            let plan = super::geometry::plan(w, h, po, true);
            super::pipeline::check_result_size(&plan, po, 1, config)?;
            let max_pixels = config.max_src_resolution * 1_000_000.0;
            let (width, height) = render_size(info.width, info.height, job.options, max_pixels);
            job.deadline.check("rendering")?;
            let image = render(&tree, width, height, config.max_svg_filter_megapixels)?;
            Ok(Loaded::Raster(Decoded::still(image, true)))
        }
    }
}

/// An SVG watermark drawn at its own size (capped at `max_pixels`), as imgproxy takes them.
///
/// # Errors
/// [`EngineError::Corrupt`] for a broken document, [`EngineError::SvgTooComplex`] past
/// `max_filter_megapixels`.
pub fn rasterise(
    source: &[u8],
    max_pixels: f64,
    max_filter_megapixels: f64,
) -> Result<DynamicImage, EngineError> {
    let tree = parse(source)?;
    let (width, height) = intrinsic_size(&tree);
    let pixels = f64::from(width) * f64::from(height);
    let scale = if pixels > max_pixels {
        (max_pixels / pixels).sqrt()
    } else {
        1.0
    };
    render(
        &tree,
        geometry::scale(width, scale).max(1),
        geometry::scale(height, scale).max(1),
        max_filter_megapixels,
    )
}

/// `usvg` on hostile input, with its own limits (at most 1,000,000 elements after `<use>`
/// expansion, nesting at most 1024 deep) and ours ([`options`]). A panic inside the parser
/// costs this source, not the worker: [`super::probe`] runs outside the engine's own guard.
fn parse(source: &[u8]) -> Result<usvg::Tree, EngineError> {
    let corrupt = |reason: String| EngineError::corrupt(ImageFormat::Svg, reason);
    std::panic::catch_unwind(|| usvg::Tree::from_data(source, &options()))
        .map_err(|_| corrupt("the SVG parser failed".into()))?
        .map_err(|e| corrupt(e.to_string()))
}

/// The machine's fonts, scanned once on first use: `fontdb`'s list of font directories
/// (`/usr/share/fonts`, `/usr/local/share/fonts`, `~/.fonts`, `~/.local/share/fonts`), read
/// without fontconfig. Only the faces' names are kept; a face's file is read again when text
/// is laid out with it. Empty on a machine without fonts.
static FONTS: std::sync::LazyLock<std::sync::Arc<fontdb::Database>> =
    std::sync::LazyLock::new(|| {
        let mut db = fontdb::Database::new();
        db.load_system_fonts();
        set_generic_families(&mut db);
        std::sync::Arc::new(db)
    });

/// Points `serif`, `sans-serif` and `monospace` at installed fonts (and so text with no
/// `font-family`: `usvg` sets it in Times New Roman, falling back to serif). fontdb's
/// defaults are Windows' Times New Roman, Arial and Courier New, and without fontconfig
/// nothing aliases them to what is installed.
fn set_generic_families(db: &mut fontdb::Database) {
    let installed = |names: &[&str]| {
        names.iter().find_map(|name| {
            db.faces()
                .flat_map(|face| &face.families)
                .find(|(family, _)| family.eq_ignore_ascii_case(name))
                .map(|(family, _)| family.clone())
        })
    };
    let any = db
        .faces()
        .find_map(|face| face.families.first())
        .map(|(family, _)| family.clone());
    let serif = installed(&[
        "Times New Roman",
        "DejaVu Serif",
        "Liberation Serif",
        "Noto Serif",
        "Nimbus Roman",
    ]);
    let sans = installed(&[
        "Arial",
        "DejaVu Sans",
        "Liberation Sans",
        "Noto Sans",
        "Nimbus Sans",
    ]);
    let mono = installed(&[
        "Courier New",
        "DejaVu Sans Mono",
        "Liberation Mono",
        "Noto Sans Mono",
        "Nimbus Mono PS",
    ]);
    if let Some(family) = serif
        .clone()
        .or_else(|| sans.clone())
        .or_else(|| any.clone())
    {
        db.set_serif_family(family);
    }
    if let Some(family) = sans.or(serif).or_else(|| any.clone()) {
        db.set_sans_serif_family(family);
    }
    if let Some(family) = mono.or(any) {
        db.set_monospace_family(family);
    }
}

/// Parsing options under which nothing the source names is ever loaded.
fn options() -> usvg::Options<'static> {
    let data_urls = usvg::ImageHrefResolver::default_data_resolver();
    usvg::Options {
        fontdb: FONTS.clone(),
        // Relative hrefs would be resolved against this directory: none.
        resources_dir: None,
        image_href_resolver: usvg::ImageHrefResolver {
            resolve_data: Box::new(move |mime, data, opts| {
                embedded_image_fits(&data)
                    .then(|| data_urls(mime, data, opts))
                    .flatten()
            }),
            // Anything that isn't a data: URL — file paths, http(s) URLs — is left out. The
            // default resolver would open it as a local file.
            resolve_string: Box::new(|_, _| None),
        },
        ..usvg::Options::default()
    }
}

/// Whether an image embedded as a `data:` URL may be decoded when rendering: headers that
/// can't be read, or that claim more than [`MAX_EMBEDDED_IMAGE_MEGAPIXELS`], are refused.
/// Nested SVG documents parse under these same [`options`].
fn embedded_image_fits(data: &[u8]) -> bool {
    match super::probe::sniff(data) {
        Some(ImageFormat::Svg) => true,
        Some(_) => super::probe(data).is_ok_and(|info| {
            f64::from(info.width) * f64::from(info.height) / 1_000_000.0
                <= MAX_EMBEDDED_IMAGE_MEGAPIXELS
        }),
        // `usvg` ignores data it doesn't recognise.
        None => true,
    }
}

/// Writes the parsed tree, which holds nothing but what renders, with text kept as text.
/// Unindented: the result is served, not read.
fn write(tree: &usvg::Tree) -> String {
    tree.to_string(&usvg::WriteOptions {
        indent: usvg::Indent::None,
        preserve_text: true,
        ..usvg::WriteOptions::default()
    })
}

/// The tree's size rounded to whole pixels, at least 1 × 1 (`usvg` guarantees a positive,
/// finite size; absurd sizes saturate and are refused by the resolution check).
fn intrinsic_size(tree: &usvg::Tree) -> (u32, u32) {
    let size = tree.size();
    let px = |v: f32| (v.round() as u32).max(1);
    (px(size.width()), px(size.height()))
}

/// The size to render a `width` × `height` SVG at: the scale the plan shrinks or enlarges
/// the source by (vectors may always enlarge), so the pipeline's resize is a no-op for
/// uniform scaling. Trimming needs the source at its own size, as in imgproxy. The result
/// never exceeds `max_pixels`: past it the pipeline enlarges the capped render instead.
fn render_size(width: u32, height: u32, po: &ProcessingOptions, max_pixels: f64) -> (u32, u32) {
    let mut scale = if po.trim.enabled {
        1.0
    } else {
        let quarter = matches!(po.rotate, Rotate::R90 | Rotate::R270);
        let (w, h) = if quarter {
            (height, width)
        } else {
            (width, height)
        };
        let plan = geometry::plan(w, h, po, true);
        // The larger scale, so neither axis has to be enlarged from the render. Rounded by
        // the plan's own rule, so a uniform scale gives exactly the plan's scaled size.
        plan.wscale.max(plan.hscale)
    };
    let pixels = f64::from(width) * f64::from(height);
    if pixels * scale * scale > max_pixels {
        scale = (max_pixels / pixels).sqrt();
    }
    (
        geometry::scale(width, scale).max(1),
        geometry::scale(height, scale).max(1),
    )
}

/// Draws the whole viewport onto a `width` × `height` canvas, as straight (not
/// premultiplied) RGBA; fully opaque renders become RGB, like decoded stills. Refused first
/// when its filters need more than `max_filter_megapixels` of work ([`filter_work`]).
fn render(
    tree: &usvg::Tree,
    width: u32,
    height: u32,
    max_filter_megapixels: f64,
) -> Result<DynamicImage, EngineError> {
    let invalid = || EngineError::InvalidSize {
        width: width.into(),
        height: height.into(),
    };
    let size = tree.size();
    let scale = (width as f32 / size.width()).max(height as f32 / size.height());
    let canvas = Canvas {
        width: f64::from(width),
        height: f64::from(height),
    };
    let megapixels = filter_work(tree.root(), scale, canvas) / 1_000_000.0;
    if megapixels > max_filter_megapixels {
        return Err(EngineError::SvgTooComplex {
            megapixels,
            limit: max_filter_megapixels,
        });
    }
    let mut pixmap = tiny_skia::Pixmap::new(width, height).ok_or_else(invalid)?;
    let transform = tiny_skia::Transform::from_scale(
        width as f32 / size.width(),
        height as f32 / size.height(),
    );
    resvg::render(tree, transform, &mut pixmap.as_mut());

    // tiny-skia's pixels are premultiplied RGBA: divide the colour back out, in place.
    let mut pixels = pixmap.take();
    for px in pixels.chunks_exact_mut(4) {
        let alpha = u32::from(px[3]);
        if alpha != 0 && alpha != 255 {
            for c in &mut px[..3] {
                // Premultiplied colour never exceeds alpha, so this stays within 0..=255.
                *c = ((u32::from(*c) * 255 + alpha / 2) / alpha).min(255) as u8;
            }
        }
    }
    let rgba = RgbaImage::from_raw(width, height, pixels).ok_or_else(invalid)?;
    Ok(if rgba.pixels().all(|p| p.0[3] == 255) {
        DynamicImage::ImageRgb8(DynamicImage::ImageRgba8(rgba).to_rgb8())
    } else {
        DynamicImage::ImageRgba8(rgba)
    })
}

/// The render's canvas, which bounds every filter region (resvg clips regions to it).
#[derive(Clone, Copy)]
struct Canvas {
    width: f64,
    height: f64,
}

/// An upper bound on the pixels resvg reads to draw `group`'s filters and those below it,
/// rendered at `scale` (canvas pixels per user unit of `group`'s document): for every filter
/// primitive, its filter region (clipped to the canvas) × the pixels one output pixel reads. Nested SVG documents
/// (`<image>` of `data:image/svg+xml`) count at their own scale; clip paths, masks and
/// patterns are walked too.
fn filter_work(group: &usvg::Group, scale: f32, canvas: Canvas) -> f64 {
    let mut work = 0.0;
    if !group.filters().is_empty() {
        let ts = group.abs_transform();
        let s = f64::from(scale) * f64::from(ts.sx.hypot(ts.ky).max(ts.kx.hypot(ts.sy)));
        for filter in group.filters() {
            // The filter region in canvas pixels, clipped to the canvas as resvg clips it.
            let rect = filter.rect();
            let region = (f64::from(rect.width()) * s).clamp(1.0, canvas.width)
                * (f64::from(rect.height()) * s).clamp(1.0, canvas.height);
            for primitive in filter.primitives() {
                work += region * reads_per_pixel(primitive.kind(), s, canvas);
            }
        }
    }
    for node in group.children() {
        match node {
            usvg::Node::Group(child) => work += filter_work(child, scale, canvas),
            usvg::Node::Image(image) => {
                if let usvg::ImageKind::SVG(inner) = image.kind() {
                    let ts = image.abs_transform();
                    let placed = ts.sx.hypot(ts.ky).max(ts.kx.hypot(ts.sy));
                    let fit = (image.size().width() / inner.size().width())
                        .max(image.size().height() / inner.size().height());
                    work += filter_work(inner.root(), scale * placed * fit, canvas);
                }
            }
            _ => {}
        }
        node.subroots(|root| {
            if !matches!(node, usvg::Node::Image(_)) {
                work += filter_work(root, scale, canvas);
            }
        });
    }
    work
}

/// Pixels one output pixel of a primitive reads, at `scale` canvas pixels per user unit.
fn reads_per_pixel(kind: &usvg::filter::Kind, scale: f64, canvas: Canvas) -> f64 {
    use usvg::filter::Kind;
    match kind {
        // resvg clamps each radius to the canvas.
        Kind::Morphology(m) => {
            let side = |r: f32, max: f64| 2.0 * (f64::from(r) * scale).round().min(max) + 1.0;
            side(m.radius_x().get(), canvas.width) * side(m.radius_y().get(), canvas.height)
        }
        Kind::ConvolveMatrix(m) => f64::from(m.matrix().columns()) * f64::from(m.matrix().rows()),
        Kind::Turbulence(t) => f64::from(t.num_octaves().max(1)),
        // Box or IIR blurs, lighting, compositing: a few reads per pixel, whatever the
        // radius.
        _ => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::options::{Defaults, ResizingType};

    fn svg(size: &str, body: &str) -> Vec<u8> {
        format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" {size}>{body}</svg>"#
        )
        .into_bytes()
    }

    fn pixel(image: &DynamicImage, x: u32, y: u32) -> [u8; 4] {
        image.to_rgba8().get_pixel(x, y).0
    }

    /// Parses and writes back: the sanitised document, as [`load`] returns it.
    fn sanitise(source: &[u8]) -> Result<Vec<u8>, EngineError> {
        Ok(write(&parse(source)?).into_bytes())
    }

    fn parsed(source: &[u8]) -> usvg::Tree {
        parse(source).expect("fixture parses")
    }

    #[test]
    fn size_comes_from_width_height_or_view_box() {
        assert_eq!(
            dimensions(&svg(r#"width="30" height="20""#, "")).unwrap(),
            (30, 20)
        );
        assert_eq!(
            dimensions(&svg(r#"viewBox="0 0 100 50""#, "")).unwrap(),
            (100, 50)
        );
        // Units resolve at 96 dpi; a width alone keeps the viewBox's aspect ratio.
        assert_eq!(
            dimensions(&svg(r#"width="1in" height="0.5in""#, "")).unwrap(),
            (96, 48)
        );
        assert_eq!(
            dimensions(&svg(r#"width="200" viewBox="0 0 100 50""#, "")).unwrap(),
            (200, 100)
        );
        // A root without the SVG namespace is read as SVG, as browsers' inline SVG is; the
        // sanitised result carries the namespace, so it displays as an image.
        let bare = b"<svg width='10' height='10'/>";
        assert_eq!(dimensions(bare).unwrap(), (10, 10));
        let out = String::from_utf8(sanitise(bare).unwrap()).unwrap();
        assert!(
            out.contains(r#"xmlns="http://www.w3.org/2000/svg""#),
            "{out}"
        );
    }

    #[test]
    fn broken_sources_are_corrupt_not_panics() {
        for source in [
            &b"<svg width='10' height='10' <<<"[..],
            b"<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'>",
            b"<html><body><svg/></body></html>",
            b"<svg xmlns='http://www.w3.org/2000/svg' width='0' height='10'/>",
            b"<svg xmlns='http://www.w3.org/2000/svg' width='-5' height='-5'/>",
            b"<svg xmlns='http://www.w3.org/2000/svg' \xff\xfe/>",
            b"",
        ] {
            let err = dimensions(source).expect_err(&String::from_utf8_lossy(source));
            assert!(matches!(err, EngineError::Corrupt { .. }), "{err}");
            assert_eq!(err.status(), 422);
        }
    }

    /// Entity expansion can't blow up: the parser refuses it quickly.
    #[test]
    fn entity_bombs_are_refused() {
        let mut doc = String::from("<?xml version=\"1.0\"?><!DOCTYPE svg [<!ENTITY a0 \"lol\">");
        for i in 1..10 {
            let prev = format!("&a{};", i - 1).repeat(10);
            doc.push_str(&format!("<!ENTITY a{i} \"{prev}\">"));
        }
        doc.push_str("]><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"><text>&a9;</text></svg>");
        let started = std::time::Instant::now();
        let _ = dimensions(doc.as_bytes());
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn sanitised_output_keeps_shapes_only() {
        let source = svg(
            r#"width="20" height="10" onload="alert(1)""#,
            r#"<script>alert(2)</script>
               <rect width="10" height="10" fill="red" onclick="alert(3)"/>
               <image href="http://example.com/x.png" width="10" height="10"/>
               <foreignObject width="10" height="10"><p>hi</p></foreignObject>
               <a href="javascript:alert(4)"><rect x="10" width="10" height="10" fill="blue"/></a>"#,
        );
        let out = String::from_utf8(sanitise(&source).unwrap()).unwrap();
        for gone in [
            "script",
            "alert",
            "onload",
            "onclick",
            "example.com",
            "foreignObject",
            "javascript",
        ] {
            assert!(!out.contains(gone), "{gone} survived: {out}");
        }
        let image = render(&parsed(out.as_bytes()), 20, 10, f64::INFINITY).unwrap();
        assert_eq!(pixel(&image, 5, 5), [255, 0, 0, 255]);
        assert_eq!(pixel(&image, 15, 5), [0, 0, 255, 255]);
    }

    /// `<text>` survives sanitising as text, not paths, and scripts still don't. Needs a font
    /// on the machine: `usvg` drops text it can't lay out.
    #[test]
    fn sanitised_output_keeps_text_as_text() {
        let source = br#"<svg xmlns="http://www.w3.org/2000/svg" width="100" height="40"><text x="5" y="30" font-size="20">Hello</text><script>alert(1)</script></svg>"#;
        assert!(
            !FONTS.is_empty(),
            "no fonts installed: text can't be laid out"
        );
        let out = String::from_utf8(sanitise(source).unwrap()).unwrap();
        assert!(!out.contains("script") && !out.contains("alert"), "{out}");
        let text = out.find("<text").expect("a <text> element");
        let hello = out[text..].find("Hello").expect("Hello inside it") + text;
        let end = out[text..].find("</text>").expect("</text>") + text;
        assert!(hello < end, "{out}");
        assert!(!out.contains("<path"), "text was written as paths: {out}");
        // The written document parses again with its text.
        assert!(
            sanitise(out.as_bytes())
                .unwrap()
                .windows(5)
                .any(|w| w == b"Hello")
        );
    }

    /// Rasterised, the text is drawn: dark pixels where the glyphs are, none elsewhere.
    #[test]
    fn text_renders_with_an_installed_font() {
        let source = svg(
            r#"width="100" height="40""#,
            r#"<text x="5" y="30" font-size="30" font-family="sans-serif">Hi</text>"#,
        );
        assert!(!FONTS.is_empty(), "no fonts installed: text can't be drawn");
        let image = render(&parsed(&source), 100, 40, f64::INFINITY)
            .unwrap()
            .to_rgba8();
        let inked = image.pixels().filter(|p| p.0[3] > 128).count();
        assert!(inked > 30, "{inked} pixels drawn");
        assert!(
            image
                .pixels()
                .all(|p| p.0[..3] == [0, 0, 0] || p.0[3] == 0 || p.0[3] < 255)
        );
        assert_eq!(pixel(&DynamicImage::ImageRgba8(image), 95, 2), [0, 0, 0, 0]);
    }

    /// The generic families point at installed fonts, whatever fontdb's defaults were.
    #[test]
    fn generic_families_resolve_to_installed_fonts() {
        if FONTS.is_empty() {
            return;
        }
        for family in [
            fontdb::Family::Serif,
            fontdb::Family::SansSerif,
            fontdb::Family::Monospace,
        ] {
            let query = fontdb::Query {
                families: &[family],
                ..fontdb::Query::default()
            };
            assert!(FONTS.query(&query).is_some(), "{family:?}");
        }
    }

    /// The default `usvg` resolver opens hrefs as local files; ours never does.
    #[test]
    fn local_files_are_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("red.png");
        image::RgbImage::from_pixel(4, 4, image::Rgb([255, 0, 0]))
            .save(&path)
            .unwrap();
        let source = svg(
            r#"width="4" height="4""#,
            &format!(r#"<image href="{}" width="4" height="4"/>"#, path.display()),
        );
        let image = render(&parsed(&source), 4, 4, f64::INFINITY).unwrap();
        assert_eq!(pixel(&image, 2, 2), [0, 0, 0, 0]);
        assert!(
            !String::from_utf8(sanitise(&source).unwrap())
                .unwrap()
                .contains("image")
        );
    }

    fn data_url(mime: &str, bytes: &[u8]) -> String {
        use base64::Engine as _;
        format!(
            "data:{mime};base64,{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    }

    /// `data:` images render; one whose header claims 10 gigapixels is left out instead of
    /// being decoded.
    #[test]
    fn embedded_images_render_within_limits() {
        let mut png = Vec::new();
        image::RgbImage::from_pixel(4, 4, image::Rgb([0, 255, 0]))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let source = svg(
            r#"width="4" height="4""#,
            &format!(
                r#"<image href="{}" width="4" height="4"/>"#,
                data_url("image/png", &png)
            ),
        );
        let image = render(&parsed(&source), 4, 4, f64::INFINITY).unwrap();
        assert_eq!(pixel(&image, 2, 2), [0, 255, 0, 255]);

        const BOMB: &str = "89504e470d0a1a0a0000000d49484452000186a0000186a0080200000027309c9f0000000b49444154789c6360800100000a00017f80745e0000000049454e44ae426082";
        let bomb: Vec<u8> = (0..BOMB.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&BOMB[i..i + 2], 16).unwrap())
            .collect();
        let source = svg(
            r#"width="4" height="4""#,
            &format!(
                r#"<image href="{}" width="4" height="4"/>"#,
                data_url("image/png", &bomb)
            ),
        );
        let image = render(&parsed(&source), 4, 4, f64::INFINITY).unwrap();
        assert_eq!(pixel(&image, 2, 2), [0, 0, 0, 0]);
        assert!(!embedded_image_fits(&bomb));
        assert!(embedded_image_fits(&png));
    }

    fn po(rt: ResizingType, width: u32, height: u32) -> ProcessingOptions {
        let mut po = ProcessingOptions::new(&Defaults::default());
        po.resizing_type = rt;
        po.width = width;
        po.height = height;
        po
    }

    #[test]
    fn renders_at_the_plans_scale() {
        let max = 50e6;
        assert_eq!(
            render_size(100, 50, &po(ResizingType::Fit, 400, 0), max),
            (400, 200)
        );
        assert_eq!(
            render_size(100, 50, &po(ResizingType::Fit, 20, 20), max),
            (20, 10)
        );
        // Fill: the source covers the box, the crop comes later.
        assert_eq!(
            render_size(100, 50, &po(ResizingType::Fill, 200, 200), max),
            (400, 200)
        );
        // Force: the larger axis scale, so nothing is enlarged from the render.
        assert_eq!(
            render_size(100, 50, &po(ResizingType::Force, 200, 200), max),
            (400, 200)
        );
        // A quarter turn swaps which side the box constrains.
        let mut rotated = po(ResizingType::Fit, 50, 0);
        rotated.rotate = Rotate::R90;
        assert_eq!(render_size(100, 50, &rotated, max), (100, 50));
        // Sizes that don't divide evenly round as the plan does.
        let plan = geometry::plan(101, 67, &po(ResizingType::Fit, 50, 50), true);
        assert_eq!(
            render_size(101, 67, &po(ResizingType::Fit, 50, 50), max),
            (plan.scaled_width, plan.scaled_height)
        );
        // dpr enlarges a vector past its intrinsic size without `enlarge`.
        let mut dpr = po(ResizingType::Fit, 100, 0);
        dpr.dpr = 2.0;
        assert_eq!(render_size(100, 50, &dpr, max), (200, 100));
        // No resize asked: the intrinsic size.
        assert_eq!(
            render_size(100, 50, &po(ResizingType::Fit, 0, 0), max),
            (100, 50)
        );
    }

    #[test]
    fn render_never_exceeds_the_pixel_budget() {
        let (w, h) = render_size(100, 100, &po(ResizingType::Fit, 20000, 20000), 50e6);
        assert!(u64::from(w) * u64::from(h) <= 50_000_000, "{w}x{h}");
        assert!(w >= 7000 && w == h, "{w}x{h}");
    }

    #[test]
    fn treatment_follows_the_asked_format() {
        assert_eq!(treatment(None), Treatment::Vector);
        assert_eq!(treatment(Some(ImageFormat::Svg)), Treatment::Vector);
        assert_eq!(treatment(Some(ImageFormat::Png)), Treatment::Raster);
        assert_eq!(treatment(Some(ImageFormat::Webp)), Treatment::Raster);
    }

    /// Half-transparent paint comes out straight, not premultiplied.
    #[test]
    fn pixels_are_unpremultiplied() {
        let source = svg(
            r#"width="2" height="2""#,
            r#"<rect width="2" height="2" fill="rgb(200,100,50)" fill-opacity="0.5"/>"#,
        );
        let [r, g, b, a] = pixel(
            &render(&parsed(&source), 2, 2, f64::INFINITY).unwrap(),
            1,
            1,
        );
        assert!((i32::from(a) - 128).abs() <= 1, "{a}");
        for (got, want) in [(r, 200), (g, 100), (b, 50)] {
            assert!((i32::from(got) - want).abs() <= 2, "{r},{g},{b}");
        }
    }
}
