//! The processing engine end to end: generated sources in every input format go through
//! `process`, and the results are decoded again and checked — sizes, pixel colours,
//! formats — never just "it returned Ok".
// Tests of the bundled worker, or of the binary running it.
#![cfg(feature = "worker")]

use std::io::Cursor;

use image::{DynamicImage, ImageFormat as Fmt, Rgb, RgbImage, Rgba, RgbaImage};
use imgproxy_cache::worker::engine::{self, EngineConfig, EngineError, Job, Processed};
use imgproxy_cache::worker::options::{Defaults, ImageFormat, ProcessingOptions, ResizingType};

// === fixtures ===

/// A test card: four quadrants in distinct colours, so orientation and crop position show.
/// Top-left red, top-right green, bottom-left blue, bottom-right yellow.
fn card(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        match (x < width / 2, y < height / 2) {
            (true, true) => Rgb([220, 30, 30]),
            (false, true) => Rgb([30, 200, 30]),
            (true, false) => Rgb([30, 30, 220]),
            (false, false) => Rgb([230, 230, 30]),
        }
    })
}

const RED: [u8; 3] = [220, 30, 30];
const GREEN: [u8; 3] = [30, 200, 30];
const BLUE: [u8; 3] = [30, 30, 220];
const YELLOW: [u8; 3] = [230, 230, 30];

fn encode_with(image: &DynamicImage, format: Fmt) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image
        .write_to(&mut out, format)
        .expect("test fixture encodes");
    out.into_inner()
}

fn jpeg(image: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(image)
        .expect("test fixture encodes");
    out
}

/// Inserts an `APP1 Exif` segment holding only an orientation tag right after SOI.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"MM\0*\0\0\0\x08\0\x01".to_vec();
    tiff.extend([0x01, 0x12, 0, 3, 0, 0, 0, 1]);
    tiff.extend(orientation.to_be_bytes());
    tiff.extend([0, 0, 0, 0, 0, 0]);
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend(tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend([0xFF, 0xE1]);
    out.extend(u16::try_from(app1.len() + 2).unwrap().to_be_bytes());
    out.extend(app1);
    out.extend(&jpeg[2..]);
    out
}

fn options() -> ProcessingOptions {
    ProcessingOptions::new(&Defaults::default())
}

fn resize_opts(rt: ResizingType, width: u32, height: u32) -> ProcessingOptions {
    let mut po = options();
    po.resizing_type = rt;
    po.width = width;
    po.height = height;
    po
}

fn run(source: &[u8], po: &ProcessingOptions, format: Option<ImageFormat>) -> Processed {
    run_with(source, po, format, &EngineConfig::default()).expect("processing succeeds")
}

fn run_with(
    source: &[u8],
    po: &ProcessingOptions,
    format: Option<ImageFormat>,
    config: &EngineConfig,
) -> Result<Processed, EngineError> {
    let job = Job {
        source,
        options: po,
        format,
        accept: None,
        deadline: engine::Deadline::NONE,
    };
    engine::process(&job, config)
}

fn decode(bytes: &[u8]) -> DynamicImage {
    image::load_from_memory(bytes).expect("result decodes")
}

fn assert_near<const N: usize>(actual: [u8; N], expected: [u8; N], tolerance: u8, what: &str) {
    let ok = actual
        .iter()
        .zip(expected)
        .all(|(a, e)| a.abs_diff(e) <= tolerance);
    assert!(
        ok,
        "{what}: got {actual:?}, expected {expected:?} ±{tolerance}"
    );
}

fn pixel(image: &DynamicImage, x: u32, y: u32) -> [u8; 3] {
    let p = image.to_rgb8().get_pixel(x, y).0;
    [p[0], p[1], p[2]]
}

// === geometry ===

/// resizing type, width, height, enlarge, dpr → expected result size.
type SizeCase = (ResizingType, u32, u32, bool, f64, (u32, u32));

/// Result sizes for every resizing type × enlarge × dpr on an odd-sized source, checked
/// against values worked out by hand from imgproxy's rules (not from our own function).
#[test]
fn result_sizes_match_imgproxy_rules() {
    use ResizingType::*;
    let source = encode_with(&DynamicImage::ImageRgb8(card(101, 67)), Fmt::Png);
    #[rustfmt::skip]
    let cases: &[SizeCase] = &[
        // shrinking
        (Fit, 50, 50, false, 1.0, (50, 33)),
        (Fit, 50, 50, false, 2.0, (100, 66)),
        (Fit, 50, 50, true, 2.0, (100, 66)),
        (Fill, 50, 50, false, 1.0, (50, 50)),
        (Fill, 50, 50, false, 2.0, (67, 67)),
        (Fill, 50, 50, true, 2.0, (100, 100)),
        (FillDown, 50, 50, false, 1.0, (50, 50)),
        (FillDown, 50, 50, false, 2.0, (67, 67)),
        (Force, 50, 50, false, 1.0, (50, 50)),
        (Force, 50, 50, false, 2.0, (67, 67)),
        (Force, 50, 50, true, 2.0, (100, 100)),
        (Auto, 50, 50, false, 1.0, (50, 50)),
        (Auto, 30, 60, false, 1.0, (30, 20)),
        // enlarging is off by default
        (Fit, 300, 300, false, 1.0, (101, 67)),
        (Fit, 300, 300, true, 1.0, (300, 199)),
        (Fit, 300, 300, false, 2.0, (101, 67)),
        (Fit, 300, 300, true, 2.0, (600, 398)),
        (Fill, 300, 300, false, 1.0, (101, 67)),
        (Fill, 300, 300, true, 1.0, (300, 300)),
        (FillDown, 300, 300, false, 1.0, (67, 67)),
        (FillDown, 300, 150, false, 1.0, (101, 51)),
        (Force, 300, 300, false, 1.0, (67, 67)),
        (Force, 300, 300, true, 1.0, (300, 300)),
        // 0 = auto
        (Fit, 0, 40, false, 1.0, (60, 40)),
        (Fit, 0, 40, false, 2.0, (101, 67)),
        (Fit, 0, 40, true, 2.0, (121, 80)),
        (Fill, 40, 0, false, 1.0, (40, 27)),
        (Force, 40, 0, false, 1.0, (40, 67)),
        (Fit, 0, 0, false, 1.0, (101, 67)),
    ];
    for &(rt, w, h, enlarge, dpr, expected) in cases {
        let mut po = resize_opts(rt, w, h);
        po.enlarge = enlarge;
        po.dpr = dpr;
        let out = decode(&run(&source, &po, Some(ImageFormat::Png)).bytes);
        assert_eq!(
            (out.width(), out.height()),
            expected,
            "{rt:?} {w}x{h} enlarge={enlarge} dpr={dpr}"
        );
    }
}

/// A portrait odd-sized JPEG goes through the DCT-scaled path and still lands on the
/// exact sizes.
#[test]
fn jpeg_shrink_on_load_keeps_exact_sizes() {
    let source = jpeg(&card(1001, 1503), 90);
    for (rt, w, h, expected) in [
        (ResizingType::Fit, 100, 100, (67, 100)),
        (ResizingType::Fill, 100, 100, (100, 100)),
        (ResizingType::Fit, 0, 500, (333, 500)),
        (ResizingType::Force, 123, 45, (123, 45)),
    ] {
        let out = decode(&run(&source, &resize_opts(rt, w, h), None).bytes);
        assert_eq!((out.width(), out.height()), expected, "{rt:?} {w}x{h}");
    }
}

/// After an 8× shrink-on-load, the quadrant colours are still where they belong.
#[test]
fn shrunk_jpeg_keeps_content_in_place() {
    let source = jpeg(&card(1600, 1200), 95);
    let out = decode(&run(&source, &resize_opts(ResizingType::Fit, 160, 160), None).bytes);
    assert_eq!((out.width(), out.height()), (160, 120));
    assert_near(pixel(&out, 40, 30), RED, 12, "top-left");
    assert_near(pixel(&out, 120, 30), GREEN, 12, "top-right");
    assert_near(pixel(&out, 40, 90), BLUE, 12, "bottom-left");
    assert_near(pixel(&out, 120, 90), YELLOW, 12, "bottom-right");
}

/// EXIF orientations 1–8: each source is stored transformed so that applying its tag
/// gives back the test card; the result must show the card upright.
#[test]
fn exif_orientations_are_applied() {
    let card = DynamicImage::ImageRgb8(card(64, 32));
    for orientation in 1..=8u8 {
        // Store the inverse transform; 5 and 7 are their own inverses, 6 and 8 swap.
        let inverse = match orientation {
            6 => 8,
            8 => 6,
            o => o,
        };
        let mut stored = card.clone();
        stored.apply_orientation(image::metadata::Orientation::from_exif(inverse).unwrap());
        let source = with_exif_orientation(&jpeg(&stored.to_rgb8(), 95), orientation.into());
        let out = decode(&run(&source, &options(), Some(ImageFormat::Png)).bytes);
        assert_eq!(
            (out.width(), out.height()),
            (64, 32),
            "orientation {orientation}"
        );
        assert_near(
            pixel(&out, 8, 8),
            RED,
            20,
            &format!("orientation {orientation} top-left"),
        );
        assert_near(
            pixel(&out, 56, 8),
            GREEN,
            20,
            &format!("orientation {orientation} top-right"),
        );
        assert_near(
            pixel(&out, 8, 24),
            BLUE,
            20,
            &format!("orientation {orientation} bottom-left"),
        );
    }
}

/// `auto_rotate:false` leaves the stored pixels as they are.
#[test]
fn auto_rotate_off_ignores_exif() {
    let stored = DynamicImage::ImageRgb8(card(64, 32)).rotate90();
    let source = with_exif_orientation(&jpeg(&stored.to_rgb8(), 95), 6);
    let mut po = options();
    po.auto_rotate = false;
    let out = decode(&run(&source, &po, None).bytes);
    assert_eq!((out.width(), out.height()), (32, 64));
}

// === formats ===

/// Every input format we claim decodes, and is resized.
#[test]
fn each_input_format_decodes() {
    let card = DynamicImage::ImageRgb8(card(40, 30));
    let rgba = DynamicImage::ImageRgba8(card.to_rgba8());
    let sources = [
        ("jpeg", jpeg(&card.to_rgb8(), 90)),
        ("png", encode_with(&card, Fmt::Png)),
        (
            "png16",
            encode_with(&DynamicImage::ImageRgb16(card.to_rgb16()), Fmt::Png),
        ),
        ("gif", encode_with(&rgba, Fmt::Gif)),
        ("webp-lossless", encode_with(&rgba, Fmt::WebP)),
        (
            "webp-lossy",
            webp::Encoder::from_rgb(card.as_bytes(), 40, 30)
                .encode(80.0)
                .to_vec(),
        ),
        ("bmp", encode_with(&card, Fmt::Bmp)),
        ("tiff", encode_with(&card, Fmt::Tiff)),
        ("ico", encode_with(&rgba, Fmt::Ico)),
        (
            "avif",
            libavif::encode_rgb8(40, 30, card.as_bytes())
                .unwrap()
                .to_vec(),
        ),
    ];
    for (name, source) in sources {
        let out = run(
            &source,
            &resize_opts(ResizingType::Fit, 20, 20),
            Some(ImageFormat::Png),
        );
        let img = decode(&out.bytes);
        assert_eq!((img.width(), img.height()), (20, 15), "{name}");
        assert_near(pixel(&img, 4, 3), RED, 40, name);
        assert_near(pixel(&img, 15, 11), YELLOW, 40, name);
    }
}

/// Each output format starts with its magic bytes and decodes back to the right size.
#[test]
fn each_output_format_is_valid() {
    let source = jpeg(&card(80, 60), 90);
    for (format, magic) in [
        (ImageFormat::Jpeg, &b"\xFF\xD8\xFF"[..]),
        (ImageFormat::Png, &b"\x89PNG"[..]),
        (ImageFormat::Webp, &b"RIFF"[..]),
        (ImageFormat::Gif, &b"GIF8"[..]),
        (ImageFormat::Bmp, &b"BM"[..]),
        (ImageFormat::Tiff, &b"II*\0"[..]),
        (ImageFormat::Ico, &b"\0\0\x01\0"[..]),
    ] {
        let out = run(
            &source,
            &resize_opts(ResizingType::Fit, 40, 40),
            Some(format),
        );
        assert_eq!(out.format, format);
        assert!(out.bytes.starts_with(magic), "{format} magic");
        let img = decode(&out.bytes);
        assert_eq!((img.width(), img.height()), (40, 30), "{format}");
        assert_near(pixel(&img, 5, 5), RED, 40, format.as_str());
    }
    let avif = run(
        &source,
        &resize_opts(ResizingType::Fit, 40, 40),
        Some(ImageFormat::Avif),
    );
    assert_eq!(avif.format, ImageFormat::Avif);
    assert_eq!(&avif.bytes[4..8], b"ftyp");
    let decoded = libavif::decode_rgb(&avif.bytes).expect("AVIF decodes");
    assert_eq!((decoded.width(), decoded.height()), (40, 30));
    let (r, g, b, _) = decoded.pixel(5, 5);
    assert_near([r, g, b], RED, 40, "avif");
}

/// No format asked for: the source's own if it's a preferred one, else JPEG (or PNG with
/// alpha); with auto WebP and a browser that accepts it, WebP.
#[test]
fn output_format_defaults() {
    let card = DynamicImage::ImageRgb8(card(40, 30));
    let png = encode_with(&card, Fmt::Png);
    assert_eq!(run(&png, &options(), None).format, ImageFormat::Png);
    let bmp = encode_with(&card, Fmt::Bmp);
    assert_eq!(run(&bmp, &options(), None).format, ImageFormat::Jpeg);
    let config = EngineConfig {
        auto_webp: true,
        ..EngineConfig::default()
    };
    let job = Job {
        source: &png,
        options: &options(),
        format: None,
        accept: Some("image/avif,image/webp,*/*"),
        deadline: engine::Deadline::NONE,
    };
    assert_eq!(
        engine::process(&job, &config).unwrap().format,
        ImageFormat::Webp
    );
}

/// `max_bytes` lowers the quality until the result fits.
#[test]
fn max_bytes_is_honoured() {
    // Noise compresses badly, so quality matters a lot.
    let mut seed = 1u32;
    let noisy = RgbImage::from_fn(200, 200, |_, _| {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let v = seed.to_be_bytes();
        Rgb([v[0], v[1], v[2]])
    });
    let source = encode_with(&DynamicImage::ImageRgb8(noisy), Fmt::Png);
    for format in [ImageFormat::Jpeg, ImageFormat::Webp] {
        let full = run(&source, &options(), Some(format)).bytes.len() as u64;
        let mut po = options();
        po.max_bytes = full / 2;
        let small = run(&source, &po, Some(format));
        assert!(
            (small.bytes.len() as u64) <= po.max_bytes,
            "{format}: {} > {}",
            small.bytes.len(),
            po.max_bytes
        );
        decode(&small.bytes);
    }
}

/// Transparent PNG → JPEG drops alpha; → PNG keeps it.
#[test]
fn alpha_survives_where_the_format_allows() {
    let rgba = RgbaImage::from_fn(20, 20, |x, _| {
        if x < 10 {
            Rgba([255, 0, 0, 255])
        } else {
            Rgba([0, 0, 255, 0])
        }
    });
    let source = encode_with(&DynamicImage::ImageRgba8(rgba), Fmt::Png);
    let png = decode(&run(&source, &options(), None).bytes);
    assert_eq!(png.to_rgba8().get_pixel(15, 5).0[3], 0);
    let jpeg = decode(&run(&source, &options(), Some(ImageFormat::Jpeg)).bytes);
    assert!(!jpeg.color().has_alpha());
}

// === limits and broken input ===

/// Results are bounded like sources: enlarging, extending or padding past
/// `IMGPROXY_MAX_SRC_RESOLUTION` in area, or past `IMGPROXY_MAX_RESULT_DIMENSION` on a side, is
/// a quick 422 before any pixel of the result exists; results within the limits are made.
#[test]
fn results_are_bounded_like_sources() {
    let png = encode_with(&DynamicImage::ImageRgb8(card(100, 100)), Fmt::Png);
    let svg = br#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10" fill="red"/></svg>"#;
    let mut enlarged = resize_opts(ResizingType::Fit, 20_000, 20_000);
    enlarged.enlarge = true;
    let mut padded = options();
    padded.padding.top = 4000;
    padded.padding.right = 4000;
    padded.padding.bottom = 4000;
    padded.padding.left = 4000;
    let config = EngineConfig::default();
    for (source, po, what) in [
        (&png[..], &enlarged, "enlarged PNG"),
        (
            &svg[..],
            &resize_opts(ResizingType::Fit, 20_000, 20_000),
            "vector",
        ),
        (&png[..], &padded, "padding"),
    ] {
        let started = std::time::Instant::now();
        let err = run_with(source, po, Some(ImageFormat::Png), &config).unwrap_err();
        assert!(
            matches!(err, EngineError::ResultTooBig { .. }),
            "{what}: {err}"
        );
        assert_eq!(err.status(), 422, "{what}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{what}"
        );
    }

    // Within the area limit: made, at the asked size.
    let mut fine = resize_opts(ResizingType::Fit, 2000, 2000);
    fine.enlarge = true;
    let out = decode(&run(&png, &fine, Some(ImageFormat::Png)).bytes);
    assert_eq!((out.width(), out.height()), (2000, 2000));

    // A per-side limit.
    let sided = EngineConfig {
        max_result_dimension: 1500,
        ..EngineConfig::default()
    };
    let err = run_with(&png, &fine, Some(ImageFormat::Png), &sided).unwrap_err();
    assert!(matches!(err, EngineError::ResultTooBig { .. }), "{err}");
    let mut ok = resize_opts(ResizingType::Fit, 1500, 0);
    ok.enlarge = true;
    assert!(run_with(&png, &ok, Some(ImageFormat::Png), &sided).is_ok());
}

/// A header claiming 60 MP is refused from the header alone.
#[test]
fn resolution_limit_is_enforced_before_decoding() {
    // An 8000×8000 PNG of one colour is tiny on the wire.
    let big = RgbImage::new(8000, 8000);
    let source = encode_with(&DynamicImage::ImageRgb8(big), Fmt::Png);
    let err = run_with(&source, &options(), None, &EngineConfig::default()).unwrap_err();
    assert!(matches!(err, EngineError::SourceTooBig { .. }), "{err}");
    assert_eq!(err.status(), 422);
    let info = engine::probe(&source).unwrap();
    assert_eq!((info.width, info.height, info.frames), (8000, 8000, 1));
}

/// Truncated files of every format give an error, never a panic.
#[test]
fn truncated_sources_are_errors() {
    let card = DynamicImage::ImageRgb8(card(64, 48));
    for source in [
        jpeg(&card.to_rgb8(), 90),
        encode_with(&card, Fmt::Png),
        encode_with(&card, Fmt::Gif),
        encode_with(&card, Fmt::WebP),
        encode_with(&card, Fmt::Bmp),
        encode_with(&card, Fmt::Tiff),
    ] {
        for cut in [1, 8, 16, 40, source.len() / 3, source.len() / 2] {
            let result = run_with(&source[..cut], &options(), None, &EngineConfig::default());
            if let Err(e) = result {
                assert_eq!(e.status(), 422, "{e}");
            }
        }
    }
}

#[test]
fn garbage_is_unsupported() {
    let err = run_with(
        b"<html>nope</html>",
        &options(),
        None,
        &EngineConfig::default(),
    )
    .unwrap_err();
    assert!(matches!(err, EngineError::UnsupportedSource));
    assert_eq!(err.status(), 422);
}

// === animation ===

/// A 3-frame GIF with distinct delays.
fn animated_gif() -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new(&mut out);
        encoder
            .set_repeat(image::codecs::gif::Repeat::Infinite)
            .unwrap();
        for (i, colour) in [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
            .into_iter()
            .enumerate()
        {
            let frame = RgbaImage::from_pixel(30, 20, Rgba([colour[0], colour[1], colour[2], 255]));
            let delay = image::Delay::from_numer_denom_ms(100 * (i as u32 + 1), 1);
            encoder
                .encode_frame(image::Frame::from_parts(frame, 0, 0, delay))
                .unwrap();
        }
    }
    out
}

fn gif_frames(bytes: &[u8]) -> Vec<(u32, u32, u32)> {
    use image::AnimationDecoder;
    let decoder = image::codecs::gif::GifDecoder::new(Cursor::new(bytes)).unwrap();
    decoder
        .into_frames()
        .map(|f| {
            let f = f.unwrap();
            let (n, d) = f.delay().numer_denom_ms();
            (f.buffer().width(), f.buffer().height(), n / d)
        })
        .collect()
}

/// With frames allowed, a GIF stays animated: frame count, order, delays, resized frames.
#[test]
fn animated_gif_keeps_frames_and_delays() {
    let config = EngineConfig {
        max_animation_frames: 10,
        ..EngineConfig::default()
    };
    let source = animated_gif();
    assert_eq!(engine::probe(&source).unwrap().frames, 3);
    let out = run_with(
        &source,
        &resize_opts(ResizingType::Fit, 15, 15),
        None,
        &config,
    )
    .unwrap();
    assert_eq!(out.format, ImageFormat::Gif);
    assert_eq!(
        gif_frames(&out.bytes),
        vec![(15, 10, 100), (15, 10, 200), (15, 10, 300)]
    );
}

/// `IMGPROXY_MAX_ANIMATION_FRAMES` truncates; the default (1) gives a still first frame.
#[test]
fn animation_frame_limit_truncates() {
    let source = animated_gif();
    let config = EngineConfig {
        max_animation_frames: 2,
        ..EngineConfig::default()
    };
    let out = run_with(&source, &options(), None, &config).unwrap();
    assert_eq!(gif_frames(&out.bytes).len(), 2);
    let still = run(&source, &options(), Some(ImageFormat::Png));
    let img = decode(&still.bytes);
    assert_near(pixel(&img, 5, 5), [255, 0, 0], 2, "first frame");
}

/// Animated GIF → animated WebP keeps frames and timing.
#[test]
fn animated_gif_to_webp() {
    use image::AnimationDecoder;
    let config = EngineConfig {
        max_animation_frames: 10,
        ..EngineConfig::default()
    };
    let out = run_with(
        &animated_gif(),
        &options(),
        Some(ImageFormat::Webp),
        &config,
    )
    .unwrap();
    assert_eq!(out.format, ImageFormat::Webp);
    assert_eq!(engine::probe(&out.bytes).unwrap().frames, 3);
    let decoder = image::codecs::webp::WebPDecoder::new(Cursor::new(&out.bytes[..])).unwrap();
    let delays: Vec<u32> = decoder
        .into_frames()
        .map(|f| {
            let (n, d) = f.unwrap().delay().numer_denom_ms();
            n / d
        })
        .collect();
    assert_eq!(delays, vec![100, 200, 300]);
}

/// Frames count against the resolution limit when animation is kept.
#[test]
fn animation_resolution_counts_all_frames() {
    let config = EngineConfig {
        max_animation_frames: 10,
        // 30×20×3 = 1800 px: allow 2 frames' worth only.
        max_src_resolution: 0.0013,
        ..EngineConfig::default()
    };
    let err = run_with(&animated_gif(), &options(), None, &config).unwrap_err();
    assert!(matches!(err, EngineError::SourceTooBig { .. }), "{err}");
}

// === robustness ===

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Random bytes never panic `probe` or `process`.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = engine::probe(&bytes);
            let _ = run_with(&bytes, &options(), None, &EngineConfig::default());
        }

        /// Valid headers followed by random bytes (the interesting case for decoders).
        #[test]
        fn corrupted_images_never_panic(
            which in 0usize..5,
            cut in 0usize..4096,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        ) {
            let card = DynamicImage::ImageRgb8(super::card(24, 16));
            let mut source = match which {
                0 => jpeg(&card.to_rgb8(), 80),
                1 => encode_with(&card, Fmt::Png),
                2 => encode_with(&card, Fmt::Gif),
                3 => encode_with(&card, Fmt::WebP),
                _ => encode_with(&card, Fmt::Tiff),
            };
            for (at, byte) in flips {
                let len = source.len();
                source[at % len] ^= byte;
            }
            source.truncate(cut.max(1));
            if let Err(e) = run_with(&source, &options(), None, &EngineConfig::default()) {
                prop_assert!(e.status() == 422 || e.status() == 500, "{e}");
            }
        }
    }
}

// === colour ===

/// Inserts an ICC profile as `APP2 ICC_PROFILE` segments right after SOI.
fn with_icc(jpeg: &[u8], icc: &[u8]) -> Vec<u8> {
    let chunks: Vec<&[u8]> = icc.chunks(60_000).collect();
    let mut out = jpeg[..2].to_vec();
    for (i, chunk) in chunks.iter().enumerate() {
        let mut body = b"ICC_PROFILE\0".to_vec();
        body.push(u8::try_from(i + 1).unwrap());
        body.push(u8::try_from(chunks.len()).unwrap());
        body.extend(*chunk);
        out.extend([0xFF, 0xE2]);
        out.extend(u16::try_from(body.len() + 2).unwrap().to_be_bytes());
        out.extend(body);
    }
    out.extend(&jpeg[2..]);
    out
}

/// A ProPhoto-tagged photo comes out in sRGB: colours within a small tolerance of the
/// sRGB original, while the raw ProPhoto numbers would be far off (washed out).
#[test]
fn icc_profiles_are_converted_to_srgb() {
    use moxcms::{ColorProfile, Layout, TransformOptions};
    let colours = [
        [200u8, 40, 40],
        [40, 160, 60],
        [50, 70, 190],
        [230, 200, 60],
    ];
    let srgb_card = RgbImage::from_fn(64, 64, |x, y| {
        Rgb(colours[usize::from(x >= 32) + 2 * usize::from(y >= 32)])
    });
    let prophoto = ColorProfile::new_pro_photo_rgb();
    let to_prophoto = ColorProfile::new_srgb()
        .create_transform_8bit(
            Layout::Rgb,
            &prophoto,
            Layout::Rgb,
            TransformOptions::default(),
        )
        .unwrap();
    let mut stored = srgb_card.clone();
    to_prophoto
        .transform(srgb_card.as_raw(), &mut stored)
        .unwrap();
    let icc = prophoto.encode().unwrap();

    // Sanity: the stored numbers differ visibly from the sRGB ones.
    let raw = stored.get_pixel(10, 10).0;
    assert!(
        raw.iter().zip(colours[0]).any(|(a, b)| a.abs_diff(b) > 25),
        "{raw:?}"
    );

    let jpeg_source = with_icc(&jpeg(&stored, 98), &icc);
    let mut png_source = Vec::new();
    {
        let mut encoder = image::codecs::png::PngEncoder::new(&mut png_source);
        image::ImageEncoder::set_icc_profile(&mut encoder, icc.clone()).unwrap();
        image::ImageEncoder::write_image(
            encoder,
            stored.as_raw(),
            64,
            64,
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    }
    for (name, source) in [("jpeg", jpeg_source), ("png", png_source)] {
        let out = decode(&run(&source, &options(), Some(ImageFormat::Png)).bytes);
        for (i, (x, y)) in [(10, 10), (50, 10), (10, 50), (50, 50)]
            .into_iter()
            .enumerate()
        {
            assert_near(
                pixel(&out, x, y),
                colours[i],
                6,
                &format!("{name} colour {i}"),
            );
        }
    }
}

// === pixel operations in the pipeline ===

fn gravity(
    kind: imgproxy_cache::worker::options::GravityKind,
) -> imgproxy_cache::worker::options::Gravity {
    imgproxy_cache::worker::options::Gravity {
        kind,
        x: 0.0,
        y: 0.0,
    }
}

/// `crop` before resize picks the quadrant its gravity names.
#[test]
fn crop_gravity_picks_the_named_quadrant() {
    use imgproxy_cache::worker::options::GravityKind::*;
    let source = encode_with(&DynamicImage::ImageRgb8(card(100, 60)), Fmt::Png);
    for (kind, colour) in [
        (NorthWest, RED),
        (NorthEast, GREEN),
        (SouthWest, BLUE),
        (SouthEast, YELLOW),
    ] {
        let mut po = options();
        po.crop.width = 40.0;
        po.crop.height = 20.0;
        po.crop.gravity = Some(gravity(kind));
        let out = decode(&run(&source, &po, None).bytes);
        assert_eq!((out.width(), out.height()), (40, 20), "{kind:?}");
        for (x, y) in [(0, 0), (39, 0), (0, 19), (39, 19)] {
            assert_near(
                pixel(&out, x, y),
                colour,
                0,
                &format!("{kind:?} at {x},{y}"),
            );
        }
    }
}

/// `fill` crops the overflow by the main gravity: `we` keeps the left half's colours.
#[test]
fn fill_crops_by_gravity() {
    use imgproxy_cache::worker::options::GravityKind::*;
    let source = encode_with(&DynamicImage::ImageRgb8(card(200, 100)), Fmt::Png);
    let mut po = resize_opts(ResizingType::Fill, 50, 50);
    po.gravity = gravity(West);
    let out = decode(&run(&source, &po, None).bytes);
    assert_eq!((out.width(), out.height()), (50, 50));
    assert_near(pixel(&out, 5, 5), RED, 4, "west top");
    assert_near(pixel(&out, 45, 45), BLUE, 4, "west bottom");
    po.gravity = gravity(East);
    let out = decode(&run(&source, &po, None).bytes);
    assert_near(pixel(&out, 5, 5), GREEN, 4, "east top");
}

/// Smart crop finds the detailed region even when it is off-centre.
#[test]
fn smart_crop_finds_off_centre_detail() {
    use imgproxy_cache::worker::options::GravityKind::*;
    // Flat grey with a busy checkerboard patch at the right edge.
    let img = RgbImage::from_fn(300, 100, |x, y| {
        if x >= 220 && (x / 4 + y / 4) % 2 == 0 {
            Rgb([250, 20, 20])
        } else if x >= 220 {
            Rgb([20, 20, 250])
        } else {
            Rgb([128, 128, 128])
        }
    });
    let source = encode_with(&DynamicImage::ImageRgb8(img), Fmt::Png);
    let mut po = resize_opts(ResizingType::Fill, 100, 100);
    po.gravity = gravity(Smart);
    let out = decode(&run(&source, &po, None).bytes).to_rgb8();
    let grey = out.pixels().filter(|p| p.0 == [128, 128, 128]).count();
    assert!(grey < 100 * 100 / 4, "smart crop kept {grey} flat pixels");
}

/// `extend` grows the canvas to the requested size; JPEG flattens it onto white, and
/// `background` picks the colour.
#[test]
fn extend_and_background() {
    let source = encode_with(&DynamicImage::ImageRgb8(card(50, 30)), Fmt::Png);
    let mut po = resize_opts(ResizingType::Fit, 100, 100);
    po.extend.enabled = true;
    let out = decode(&run(&source, &po, Some(ImageFormat::Jpeg)).bytes);
    assert_eq!((out.width(), out.height()), (100, 100));
    assert_near(
        pixel(&out, 50, 5),
        [255, 255, 255],
        3,
        "extended area is white",
    );
    assert_near(pixel(&out, 30, 40), RED, 16, "image centred (JPEG)");
    po.background = Some(imgproxy_cache::worker::options::Color { r: 0, g: 0, b: 255 });
    let out = decode(&run(&source, &po, Some(ImageFormat::Png)).bytes);
    assert!(!out.color().has_alpha());
    assert_near(pixel(&out, 50, 5), [0, 0, 255], 0, "background colour");
}

/// Padding is added around the result (scaled by dpr), transparent in PNG.
#[test]
fn padding_adds_borders() {
    let source = encode_with(&DynamicImage::ImageRgb8(card(40, 40)), Fmt::Png);
    let mut po = options();
    po.padding.top = 5;
    po.padding.left = 10;
    let out = decode(&run(&source, &po, None).bytes);
    assert_eq!((out.width(), out.height()), (50, 45));
    assert_eq!(out.to_rgba8().get_pixel(2, 2).0[3], 0);
    assert_near(pixel(&out, 12, 7), RED, 0, "image offset by padding");
}

/// Trim removes a uniform border before resizing.
#[test]
fn trim_removes_borders() {
    let img = RgbImage::from_fn(80, 60, |x, y| {
        if (20..60).contains(&x) && (10..50).contains(&y) {
            Rgb([200, 0, 0])
        } else {
            Rgb([255, 255, 255])
        }
    });
    let source = encode_with(&DynamicImage::ImageRgb8(img), Fmt::Png);
    let mut po = options();
    po.trim.enabled = true;
    let out = decode(&run(&source, &po, None).bytes);
    assert_eq!((out.width(), out.height()), (40, 40));
}

/// The configured watermark — a PNG or an SVG (drawn at its own size) — is drawn where its
/// gravity says, with the URL's opacity; one that isn't an image is refused by the start-up check.
#[test]
fn watermark_is_drawn() {
    use imgproxy_cache::worker::options::GravityKind::*;
    let png = encode_with(
        &DynamicImage::ImageRgba8(RgbaImage::from_pixel(10, 10, Rgba([0, 0, 0, 255]))),
        Fmt::Png,
    );
    let svg = br#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10" fill="black"/></svg>"#.to_vec();
    let source = encode_with(
        &DynamicImage::ImageRgb8(RgbImage::from_pixel(60, 40, Rgb([255, 255, 255]))),
        Fmt::Png,
    );
    for (what, mark) in [("png", png), ("svg", svg)] {
        engine::check_watermark(&mark).expect("a usable watermark");
        let config = EngineConfig {
            watermark: Some(std::sync::Arc::new(mark)),
            ..EngineConfig::default()
        };
        let mut po = options();
        po.watermark.enabled = true;
        po.watermark.position = gravity(SouthEast);
        let out = decode(&run_with(&source, &po, None, &config).unwrap().bytes);
        assert_near(
            pixel(&out, 55, 35),
            [0, 0, 0],
            0,
            &format!("{what}: mark in the corner"),
        );
        assert_near(
            pixel(&out, 5, 5),
            [255, 255, 255],
            0,
            &format!("{what}: rest untouched"),
        );
        po.watermark.opacity = 0.5;
        let out = decode(&run_with(&source, &po, None, &config).unwrap().bytes);
        assert_near(
            pixel(&out, 55, 35),
            [128, 128, 128],
            2,
            &format!("{what}: half opacity"),
        );
    }
    assert!(engine::check_watermark(b"not an image").is_err());
}

/// Effects run: blur softens a hard edge, pixelate makes blocks.
#[test]
fn blur_and_pixelate_change_pixels() {
    let source = encode_with(&DynamicImage::ImageRgb8(card(40, 40)), Fmt::Png);
    let mut po = options();
    po.blur = 3.0;
    let out = decode(&run(&source, &po, None).bytes);
    let edge = pixel(&out, 19, 5);
    assert!(edge != RED && edge != GREEN, "blurred edge {edge:?}");
    let mut po = options();
    po.pixelate = 8;
    let img = RgbImage::from_fn(32, 32, |x, y| Rgb([(x * 8) as u8, (y * 8) as u8, 0]));
    let source = encode_with(&DynamicImage::ImageRgb8(img), Fmt::Png);
    let out = decode(&run(&source, &po, None).bytes);
    assert_eq!(pixel(&out, 0, 0), pixel(&out, 7, 7));
    assert_ne!(pixel(&out, 0, 0), pixel(&out, 8, 8));
}

/// CMYK JPEGs (Adobe, as Photoshop writes them) decode to the right colours through the
/// fallback decoder.
#[test]
fn cmyk_jpeg_decodes() {
    // Adobe CMYK is stored inverted: 255 = no ink. Full magenta + yellow = red.
    let (w, h) = (32usize, 16usize);
    let pixels: Vec<u8> = std::iter::repeat_n([255u8, 0, 0, 255], w * h)
        .flatten()
        .collect();
    let image = turbojpeg::Image {
        pixels: pixels.as_slice(),
        width: w,
        pitch: w * 4,
        height: h,
        format: turbojpeg::PixelFormat::CMYK,
    };
    let mut compressor = turbojpeg::Compressor::new().unwrap();
    compressor.set_quality(95).unwrap();
    compressor.set_subsamp(turbojpeg::Subsamp::None).unwrap();
    let source = compressor.compress_to_vec(image).unwrap();
    let out = decode(&run(&source, &options(), Some(ImageFormat::Png)).bytes);
    assert_eq!((out.width(), out.height()), (32, 16));
    assert_near(pixel(&out, 16, 8), [255, 0, 0], 30, "CMYK red");
}

/// AVIF can't be smaller than 16 px: like imgproxy, such results fall back to JPEG (or
/// PNG with alpha).
#[test]
fn tiny_avif_falls_back() {
    let source = jpeg(&card(40, 30), 90);
    let out = run(
        &source,
        &resize_opts(ResizingType::Fit, 10, 10),
        Some(ImageFormat::Avif),
    );
    assert_eq!(out.format, ImageFormat::Jpeg);
    assert_eq!(decode(&out.bytes).width(), 10);
}

/// HEIC and JPEG XL sources are refused with 422 (see docs/engine.md).
#[test]
fn unsupported_formats_are_422() {
    for source in [
        &b"\0\0\0\x18ftypheic\0\0\0\0mif1heic"[..],
        &b"\xFF\x0A\xFA\x7F"[..],
    ] {
        let err = run_with(source, &options(), None, &EngineConfig::default()).unwrap_err();
        assert_eq!(err.status(), 422, "{err}");
    }
}

// === SVG ===

/// `viewBox 0 0 100 50`: left half red, right half blue, no width or height.
const TWO_COLOURS: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 50"><rect width="50" height="50" fill="#f00"/><rect x="50" width="50" height="50" fill="#00f"/></svg>"##;

fn rgba(image: &DynamicImage, x: u32, y: u32) -> [u8; 4] {
    image.to_rgba8().get_pixel(x, y).0
}

/// With no format asked for (or `svg`), the result is the SVG itself, sanitised: no script,
/// no event handler, no external reference — and resizing options don't apply to it. The
/// sanitised document still draws the same shapes as the original.
#[test]
fn svg_results_are_sanitised_svg_that_draws_the_same() {
    let source = br##"<?xml version="1.0"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="100" height="50" onload="alert('onload')">
  <script type="text/javascript">alert('script')</script>
  <rect width="50" height="50" fill="#f00" onmouseover="alert('hover')"/>
  <rect x="50" width="50" height="50" fill="#00f"/>
  <image x="0" y="0" width="100" height="50" xlink:href="http://192.0.2.1/tracker.png"/>
  <image x="0" y="0" width="100" height="50" href="https://192.0.2.1/other.png"/>
</svg>"##;
    let mut resized = resize_opts(ResizingType::Fit, 10, 10);
    resized.blur = 3.0;
    for (po, format) in [
        (options(), None),
        (options(), Some(ImageFormat::Svg)),
        (resized, None),
    ] {
        let out = run(source, &po, format);
        assert_eq!(out.format, ImageFormat::Svg);
        let text = String::from_utf8(out.bytes.clone()).expect("SVG is text");
        for gone in [
            "<script",
            "alert",
            "onload",
            "onmouseover",
            "192.0.2.1",
            "<image",
        ] {
            assert!(!text.contains(gone), "{gone} survived: {text}");
        }
        assert!(text.contains("<svg"), "{text}");

        let original = decode(&run(source, &options(), Some(ImageFormat::Png)).bytes);
        let sanitised = decode(&run(&out.bytes, &options(), Some(ImageFormat::Png)).bytes);
        assert_eq!((sanitised.width(), sanitised.height()), (100, 50));
        for (x, y, colour) in [(25, 25, [255, 0, 0, 255]), (75, 25, [0, 0, 255, 255])] {
            assert_eq!(rgba(&sanitised, x, y), colour, "sanitised at {x},{y}");
            assert_eq!(rgba(&original, x, y), rgba(&sanitised, x, y), "at {x},{y}");
        }
    }
}

/// A raster format renders the vector at the result's scale (imgproxy's scale-on-load):
/// the edge between the halves is sharp at 4×, which an enlarged 100×50 raster can't be.
#[test]
fn svg_to_png_is_rendered_at_scale() {
    let out = run(
        TWO_COLOURS.as_bytes(),
        &resize_opts(ResizingType::Fit, 400, 0),
        Some(ImageFormat::Png),
    );
    assert_eq!(out.format, ImageFormat::Png);
    let image = decode(&out.bytes);
    assert_eq!((image.width(), image.height()), (400, 200));
    assert_near(rgba(&image, 50, 100), [255, 0, 0, 255], 0, "left");
    assert_near(rgba(&image, 350, 100), [0, 0, 255, 255], 0, "right");
    assert_near(
        rgba(&image, 199, 100),
        [255, 0, 0, 255],
        2,
        "left of the edge",
    );
    assert_near(
        rgba(&image, 201, 100),
        [0, 0, 255, 255],
        2,
        "right of the edge",
    );

    // Shrinking renders small too; JPEG flattens the transparent corners onto white.
    let source = r##"<svg xmlns="http://www.w3.org/2000/svg" width="300" height="300"><circle cx="150" cy="150" r="100" fill="#0f0"/></svg>"##;
    let out = run(
        source.as_bytes(),
        &resize_opts(ResizingType::Fit, 30, 30),
        Some(ImageFormat::Jpeg),
    );
    let image = decode(&out.bytes);
    assert_eq!((image.width(), image.height()), (30, 30));
    assert_near(pixel(&image, 15, 15), [0, 255, 0], 8, "circle");
    assert_near(pixel(&image, 1, 1), [255, 255, 255], 8, "background");
}

/// Auto WebP/AVIF never replace the SVG result (imgproxy converts SVG only when a format is
/// asked for); enforce replaces an asked-for raster format, as for any source.
#[test]
fn svg_negotiation_follows_imgproxy() {
    let config = EngineConfig {
        auto_webp: true,
        auto_avif: true,
        enforce_webp: true,
        ..EngineConfig::default()
    };
    let po = options();
    let job = |format| Job {
        source: TWO_COLOURS.as_bytes(),
        options: &po,
        format,
        accept: Some("image/avif,image/webp,*/*"),
        deadline: engine::Deadline::NONE,
    };
    let out = engine::process(&job(None), &config).unwrap();
    assert_eq!(out.format, ImageFormat::Svg);
    let out = engine::process(&job(Some(ImageFormat::Png)), &config).unwrap();
    assert_eq!(out.format, ImageFormat::Webp);
    assert!(out.bytes.starts_with(b"RIFF"));
}

/// An SVG declaring 100000 × 100000 is refused from its size alone, in both treatments,
/// without a canvas being allocated; broken documents are 422 too.
#[test]
fn huge_and_broken_svgs_are_422() {
    let huge = br#"<svg xmlns="http://www.w3.org/2000/svg" width="100000" height="100000"><rect width="100%" height="100%"/></svg>"#;
    for format in [None, Some(ImageFormat::Png)] {
        let started = std::time::Instant::now();
        let err = run_with(huge, &options(), format, &EngineConfig::default()).unwrap_err();
        assert!(matches!(err, EngineError::SourceTooBig { .. }), "{err}");
        assert_eq!(err.status(), 422);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
    assert_eq!(
        engine::probe(huge)
            .map(|i| (i.format, i.width, i.height))
            .ok(),
        Some((ImageFormat::Svg, 100_000, 100_000))
    );
    for broken in [
        &b"<svg this is not XML <<<"[..],
        br#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect></svg>"#,
        br#"<html><body><svg xmlns="http://www.w3.org/2000/svg"/></body></html>"#,
    ] {
        assert!(matches!(
            engine::probe(broken),
            Err(EngineError::Corrupt { .. })
        ));
        for format in [None, Some(ImageFormat::Png)] {
            let err = run_with(broken, &options(), format, &EngineConfig::default()).unwrap_err();
            assert_eq!(err.status(), 422, "{err}");
        }
    }
}

// === metadata ===

/// The formats a result carries EXIF in (AVIF, GIF, BMP, TIFF and ICO results carry none).
const EXIF_FORMATS: [ImageFormat; 3] = [ImageFormat::Jpeg, ImageFormat::Png, ImageFormat::Webp];

fn ascii_field(tag: exif::Tag, text: &str) -> exif::Field {
    exif::Field {
        tag,
        ifd_num: exif::In::PRIMARY,
        value: exif::Value::Ascii(vec![text.as_bytes().to_vec()]),
    }
}

/// EXIF as a camera writes it: Copyright "© Test", Artist "Someone", Make "Cam", the given
/// Orientation, and an embedded thumbnail (IFD1).
fn camera_exif(orientation: u16) -> Vec<u8> {
    use exif::{In, Tag, Value};
    let fields = [
        ascii_field(Tag::Copyright, "© Test"),
        ascii_field(Tag::Artist, "Someone"),
        ascii_field(Tag::Make, "Cam"),
        exif::Field {
            tag: Tag::Orientation,
            ifd_num: In::PRIMARY,
            value: Value::Short(vec![orientation]),
        },
        exif::Field {
            tag: Tag::Compression,
            ifd_num: In::THUMBNAIL,
            value: Value::Short(vec![6]),
        },
    ];
    let thumbnail = jpeg(&card(8, 4), 80);
    let mut writer = exif::experimental::Writer::new();
    for field in &fields {
        writer.push_field(field);
    }
    writer.set_jpeg(&thumbnail, In::THUMBNAIL);
    let mut out = Cursor::new(Vec::new());
    writer.write(&mut out, false).expect("fixture EXIF writes");
    out.into_inner()
}

/// Encodes with the `image` crate's encoder for `format`, carrying `exif`.
fn encode_with_exif(image: &RgbImage, format: Fmt, exif: &[u8]) -> Vec<u8> {
    use image::ImageEncoder;
    let mut out = Vec::new();
    let (w, h, raw) = (image.width(), image.height(), image.as_raw());
    let color = image::ExtendedColorType::Rgb8;
    let written = match format {
        Fmt::Jpeg => {
            let mut e = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95);
            e.set_exif_metadata(exif.to_vec()).unwrap();
            e.write_image(raw, w, h, color)
        }
        Fmt::Png => {
            let mut e = image::codecs::png::PngEncoder::new(&mut out);
            e.set_exif_metadata(exif.to_vec()).unwrap();
            e.write_image(raw, w, h, color)
        }
        _ => {
            let mut e = image::codecs::webp::WebPEncoder::new_lossless(&mut out);
            e.set_exif_metadata(exif.to_vec()).unwrap();
            e.write_image(raw, w, h, color)
        }
    };
    written.expect("test fixture encodes");
    out
}

/// A landscape 64×32 JPEG whose EXIF (see [`camera_exif`]) says "turn 90° clockwise".
fn camera_jpeg() -> Vec<u8> {
    encode_with_exif(&card(64, 32), Fmt::Jpeg, &camera_exif(6))
}

/// The EXIF the `image` crate's decoder finds in a result, parsed; checks the result still
/// decodes, and that no EXIF container marker is left when there is none.
fn exif_of(bytes: &[u8]) -> Option<exif::Exif> {
    use image::ImageDecoder;
    decode(bytes);
    let mut decoder = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .unwrap()
        .into_decoder()
        .unwrap();
    let Some(raw) = decoder.exif_metadata().expect("metadata reads") else {
        for marker in [&b"Exif\0\0"[..], b"eXIf", b"EXIF"] {
            assert!(
                !bytes.windows(marker.len()).any(|w| w == marker),
                "{marker:?} left in a result without EXIF"
            );
        }
        return None;
    };
    Some(
        exif::Reader::new()
            .read_raw(raw)
            .expect("the result's EXIF parses"),
    )
}

fn exif_text(exif: &exif::Exif, tag: exif::Tag) -> Option<String> {
    match &exif.get_field(tag, exif::In::PRIMARY)?.value {
        exif::Value::Ascii(strings) => Some(String::from_utf8_lossy(strings.first()?).into()),
        _ => None,
    }
}

fn metadata_opts(strip_metadata: bool, keep_copyright: bool) -> ProcessingOptions {
    let mut po = options();
    po.strip_metadata = strip_metadata;
    po.keep_copyright = keep_copyright;
    po
}

/// Defaults (`strip_metadata` and `keep_copyright` on): the source's Copyright and Artist,
/// and only those, reach JPEG, PNG and WebP results.
#[test]
fn default_results_keep_only_copyright_and_artist() {
    let source = camera_jpeg();
    for format in EXIF_FORMATS {
        let out = run(&source, &options(), Some(format));
        let exif = exif_of(&out.bytes).unwrap_or_else(|| panic!("{format:?}: no EXIF"));
        assert_eq!(
            exif_text(&exif, exif::Tag::Copyright).as_deref(),
            Some("© Test")
        );
        assert_eq!(
            exif_text(&exif, exif::Tag::Artist).as_deref(),
            Some("Someone")
        );
        assert_eq!(exif_text(&exif, exif::Tag::Make), None, "{format:?}");
        assert_eq!(exif.fields().count(), 2, "{format:?}: only the two tags");
    }
}

/// `kcr:0` with stripping on: no EXIF at all.
#[test]
fn keep_copyright_off_strips_all_exif() {
    let source = camera_jpeg();
    for format in EXIF_FORMATS {
        let out = run(&source, &metadata_opts(true, false), Some(format));
        assert!(exif_of(&out.bytes).is_none(), "{format:?}");
    }
}

/// `sm:0`: the source's EXIF is kept, but the pixels were turned upright, so the
/// Orientation says 1 (else viewers turn them again); the stale thumbnail is gone.
#[test]
fn strip_metadata_off_keeps_exif_with_orientation_reset() {
    let source = camera_jpeg();
    for format in EXIF_FORMATS {
        let out = run(&source, &metadata_opts(false, true), Some(format));
        let image = decode(&out.bytes);
        assert_eq!(
            (image.width(), image.height()),
            (32, 64),
            "{format:?}: portrait"
        );
        // Turned clockwise: the source's bottom-left corner is now top-left.
        assert_near(
            pixel(&image, 4, 4),
            BLUE,
            30,
            &format!("{format:?} top-left"),
        );
        let exif = exif_of(&out.bytes).unwrap_or_else(|| panic!("{format:?}: no EXIF"));
        assert_eq!(exif_text(&exif, exif::Tag::Make).as_deref(), Some("Cam"));
        assert_eq!(
            exif_text(&exif, exif::Tag::Copyright).as_deref(),
            Some("© Test")
        );
        let orientation = exif.get_field(exif::Tag::Orientation, exif::In::PRIMARY);
        assert_eq!(
            orientation.and_then(|f| f.value.get_uint(0)),
            Some(1),
            "{format:?}"
        );
        assert!(
            exif.fields().all(|f| f.ifd_num == exif::In::PRIMARY),
            "{format:?}: thumbnail IFD dropped"
        );
    }
}

/// `sm:0` with `auto_rotate:false`: the pixels stay as stored, so the Orientation stays
/// for the viewer to apply.
#[test]
fn unrotated_results_keep_the_orientation() {
    let mut po = metadata_opts(false, true);
    po.auto_rotate = false;
    let out = run(&camera_jpeg(), &po, Some(ImageFormat::Jpeg));
    let image = decode(&out.bytes);
    assert_eq!((image.width(), image.height()), (64, 32));
    let exif = exif_of(&out.bytes).expect("EXIF kept");
    let orientation = exif.get_field(exif::Tag::Orientation, exif::In::PRIMARY);
    assert_eq!(orientation.and_then(|f| f.value.get_uint(0)), Some(6));
}

/// EXIF in PNG (`eXIf`) and WebP (`EXIF`) sources is read too.
#[test]
fn png_and_webp_sources_carry_their_exif() {
    for source_format in [Fmt::Png, Fmt::WebP] {
        let source = encode_with_exif(&card(64, 32), source_format, &camera_exif(6));
        let out = run(&source, &options(), Some(ImageFormat::Jpeg));
        let exif = exif_of(&out.bytes).unwrap_or_else(|| panic!("{source_format:?}: no EXIF"));
        assert_eq!(
            exif_text(&exif, exif::Tag::Artist).as_deref(),
            Some("Someone")
        );
    }
}

/// A source without EXIF gives results without EXIF, whatever the options.
#[test]
fn sources_without_exif_give_results_without_exif() {
    let sources = [
        jpeg(&card(64, 32), 90),
        encode_with(&DynamicImage::ImageRgb8(card(64, 32)), Fmt::Png),
    ];
    for source in &sources {
        for (sm, kcr) in [(true, true), (true, false), (false, true), (false, false)] {
            for format in EXIF_FORMATS {
                let out = run(source, &metadata_opts(sm, kcr), Some(format));
                assert!(
                    exif_of(&out.bytes).is_none(),
                    "sm {sm} kcr {kcr} {format:?}"
                );
            }
        }
    }
}

/// Broken EXIF costs the metadata, never the job.
#[test]
fn broken_exif_does_not_fail_the_job() {
    let pixels = jpeg(&card(64, 32), 90);
    let broken: [&[u8]; 4] = [
        b"garbage",
        b"MM\0*",
        b"MM\0*\x7f\xff\xff\xff",
        b"II*\0\x08\0\0\0\xff\xff",
    ];
    for exif in broken {
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend(exif);
        let mut source = pixels[..2].to_vec();
        source.extend([0xFF, 0xE1]);
        source.extend(u16::try_from(app1.len() + 2).unwrap().to_be_bytes());
        source.extend(app1);
        source.extend(&pixels[2..]);
        for (sm, kcr) in [(true, true), (false, true)] {
            for format in EXIF_FORMATS {
                let out = run(&source, &metadata_opts(sm, kcr), Some(format));
                assert!(exif_of(&out.bytes).is_none(), "{exif:?} sm {sm} {format:?}");
            }
        }
    }
}
