//! What a URL asks the worker to do: [`ProcessingOptions`] and the small types
//! its fields use, with imgproxy's defaults. Config-dependent defaults come in
//! through [`Defaults`] so parsing stays a pure function.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// `IMGPROXY_QUALITY`: used when neither the URL nor the per-format table sets one.
pub const DEFAULT_QUALITY: u8 = 80;

/// `IMGPROXY_FORMAT_QUALITY` (`webp=79,avif=63,jxl=77`): these formats look as good as
/// JPEG 80 at lower settings.
pub const DEFAULT_FORMAT_QUALITY: [(ImageFormat, u8); 3] = [
    (ImageFormat::Webp, 79),
    (ImageFormat::Avif, 63),
    (ImageFormat::Jxl, 77),
];

/// `IMGPROXY_STRIP_METADATA`: strip EXIF/XMP/IPTC from results.
pub const DEFAULT_STRIP_METADATA: bool = true;
/// `IMGPROXY_KEEP_COPYRIGHT`: keep the copyright notice when stripping metadata.
pub const DEFAULT_KEEP_COPYRIGHT: bool = true;
/// `IMGPROXY_STRIP_COLOR_PROFILE`: convert to sRGB and drop the ICC profile.
pub const DEFAULT_STRIP_COLOR_PROFILE: bool = true;
/// `IMGPROXY_AUTO_ROTATE`: rotate by the EXIF orientation.
pub const DEFAULT_AUTO_ROTATE: bool = true;
/// `IMGPROXY_ENFORCE_THUMBNAIL`: prefer an embedded thumbnail over the main image.
pub const DEFAULT_ENFORCE_THUMBNAIL: bool = false;
/// `IMGPROXY_RETURN_ATTACHMENT`: `Content-Disposition: attachment` instead of `inline`.
pub const DEFAULT_RETURN_ATTACHMENT: bool = false;

/// The config-dependent starting point of every request's options.
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    pub quality: u8,
    pub format_quality: BTreeMap<ImageFormat, u8>,
    pub strip_metadata: bool,
    pub keep_copyright: bool,
    pub strip_color_profile: bool,
    pub auto_rotate: bool,
    pub enforce_thumbnail: bool,
    pub return_attachment: bool,
    /// `IMGPROXY_SKIP_PROCESSING_FORMATS` (default empty): source formats passed through.
    pub skip_processing_formats: Vec<ImageFormat>,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            quality: DEFAULT_QUALITY,
            format_quality: DEFAULT_FORMAT_QUALITY.into_iter().collect(),
            strip_metadata: DEFAULT_STRIP_METADATA,
            keep_copyright: DEFAULT_KEEP_COPYRIGHT,
            strip_color_profile: DEFAULT_STRIP_COLOR_PROFILE,
            auto_rotate: DEFAULT_AUTO_ROTATE,
            enforce_thumbnail: DEFAULT_ENFORCE_THUMBNAIL,
            return_attachment: DEFAULT_RETURN_ATTACHMENT,
            skip_processing_formats: Vec::new(),
        }
    }
}

/// Everything a processing URL can ask for. Field names follow imgproxy's
/// option names; each field starts at imgproxy's default.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessingOptions {
    pub resizing_type: ResizingType,
    /// Target width in pixels; 0 means "derive from height and aspect ratio".
    pub width: u32,
    /// Target height in pixels; 0 means "derive from width and aspect ratio".
    pub height: u32,
    pub min_width: u32,
    pub min_height: u32,
    /// Extra scale after resizing, per axis (`zoom:x:y`); always > 0.
    pub zoom_x: f64,
    pub zoom_y: f64,
    /// Multiplies the target size (retina images); always > 0.
    pub dpr: f64,
    pub gravity: Gravity,
    /// Allow upscaling past the source size (off: imgproxy never enlarges by default).
    pub enlarge: bool,
    pub extend: Extend,
    pub extend_aspect_ratio: Extend,
    /// Crop applied before resizing; 0 × 0 (the default) crops nothing.
    pub crop: Crop,
    pub padding: Padding,
    pub trim: Trim,
    pub rotate: Rotate,
    pub flip: Flip,
    /// `None` keeps transparency; `Some` flattens alpha onto this colour.
    pub background: Option<Color>,
    /// Gaussian blur sigma; 0 disables.
    pub blur: f32,
    /// Sharpen sigma; 0 disables.
    pub sharpen: f32,
    /// Pixelation block size in pixels; 0 disables.
    pub pixelate: u32,
    pub watermark: Watermark,
    pub strip_metadata: bool,
    pub keep_copyright: bool,
    pub strip_color_profile: bool,
    pub auto_rotate: bool,
    pub enforce_thumbnail: bool,
    /// 1..=100, or 0 for "use `format_quality`, then the configured default".
    pub quality: u8,
    /// Per-format quality, seeded from [`Defaults::format_quality`].
    pub format_quality: BTreeMap<ImageFormat, u8>,
    /// Lower the quality until the result fits; 0 disables. Only JPEG, WebP
    /// and AVIF honour it in imgproxy.
    pub max_bytes: u64,
    /// Format asked for by the `format` option; the URL's extension, if any,
    /// takes precedence (see `ParsedRequest::output_format`).
    pub format: Option<ImageFormat>,
    /// Source formats passed through untouched.
    pub skip_processing: Vec<ImageFormat>,
    /// Stream the source as-is: no processing, no format from the extension.
    pub raw: bool,
    /// Opaque value that only changes the URL (and so the cache key).
    pub cachebuster: String,
    /// Unix seconds after which the URL is refused; `None` never expires.
    pub expires: Option<i64>,
    /// `Content-Disposition` file name without extension; empty uses the source's.
    /// Already decoded when the URL passed it base64-encoded.
    pub filename: String,
    pub return_attachment: bool,
}

impl ProcessingOptions {
    pub fn new(defaults: &Defaults) -> Self {
        Self {
            resizing_type: ResizingType::Fit,
            width: 0,
            height: 0,
            min_width: 0,
            min_height: 0,
            zoom_x: 1.0,
            zoom_y: 1.0,
            dpr: 1.0,
            gravity: Gravity::CENTER,
            enlarge: false,
            extend: Extend::default(),
            extend_aspect_ratio: Extend::default(),
            crop: Crop::default(),
            padding: Padding::default(),
            trim: Trim::default(),
            rotate: Rotate::R0,
            flip: Flip::default(),
            background: None,
            blur: 0.0,
            sharpen: 0.0,
            pixelate: 0,
            watermark: Watermark::default(),
            strip_metadata: defaults.strip_metadata,
            keep_copyright: defaults.keep_copyright,
            strip_color_profile: defaults.strip_color_profile,
            auto_rotate: defaults.auto_rotate,
            enforce_thumbnail: defaults.enforce_thumbnail,
            quality: 0,
            format_quality: defaults.format_quality.clone(),
            max_bytes: 0,
            format: None,
            skip_processing: defaults.skip_processing_formats.clone(),
            raw: false,
            cachebuster: String::new(),
            expires: None,
            filename: String::new(),
            return_attachment: defaults.return_attachment,
        }
    }

    /// The encoder quality for `format`: the URL's `quality`, else the
    /// format's entry, else the configured default (imgproxy's order).
    pub fn quality_for(&self, format: ImageFormat, defaults: &Defaults) -> u8 {
        [
            self.quality,
            self.format_quality.get(&format).copied().unwrap_or(0),
        ]
        .into_iter()
        .find(|&q| q > 0)
        .unwrap_or(defaults.quality)
    }
}

/// How the image is fitted into width × height.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizingType {
    /// Keep aspect ratio, fit inside the box.
    Fit,
    /// Keep aspect ratio, cover the box, crop the overflow.
    Fill,
    /// Like `Fill`, but shrink the box instead of enlarging the image.
    FillDown,
    /// Ignore the aspect ratio.
    Force,
    /// `Fill` when source and box have the same orientation, else `Fit`.
    Auto,
}

impl ResizingType {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "fit" => Self::Fit,
            "fill" => Self::Fill,
            "fill-down" => Self::FillDown,
            "force" => Self::Force,
            "auto" => Self::Auto,
            _ => return None,
        })
    }
}

/// Where to anchor crops, extension, and watermarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GravityKind {
    Center,
    North,
    South,
    East,
    West,
    NorthEast,
    NorthWest,
    SouthEast,
    SouthWest,
    /// Content-aware: offsets are ignored.
    Smart,
    /// A point given as fractions of the image size in `x`/`y`.
    FocusPoint,
    /// Tile the watermark over the whole image (watermarks only).
    Replicate,
}

impl GravityKind {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ce" => Self::Center,
            "no" => Self::North,
            "so" => Self::South,
            "ea" => Self::East,
            "we" => Self::West,
            "noea" => Self::NorthEast,
            "nowe" => Self::NorthWest,
            "soea" => Self::SouthEast,
            "sowe" => Self::SouthWest,
            "sm" => Self::Smart,
            "fp" => Self::FocusPoint,
            "re" => Self::Replicate,
            _ => return None,
        })
    }
}

/// A gravity kind with its offsets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gravity {
    pub kind: GravityKind,
    /// For [`GravityKind::FocusPoint`]: the point's x as a fraction (0..=1) of the
    /// width. Otherwise an offset from the anchor, in pixels (or a fraction of
    /// the size when below 1, as imgproxy does).
    pub x: f64,
    /// As `x`, vertically.
    pub y: f64,
}

impl Gravity {
    pub const CENTER: Self = Self {
        kind: GravityKind::Center,
        x: 0.0,
        y: 0.0,
    };
}

/// Grow the canvas to the requested size (or aspect ratio) instead of leaving
/// the image smaller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Extend {
    pub enabled: bool,
    pub gravity: Gravity,
}

impl Default for Extend {
    fn default() -> Self {
        Self {
            enabled: false,
            gravity: Gravity::CENTER,
        }
    }
}

/// A crop of the source before resizing.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Crop {
    /// Pixels, or a fraction of the source width when below 1; 0 = full width.
    pub width: f64,
    /// As `width`, vertically.
    pub height: f64,
    /// `None` uses the main [`ProcessingOptions::gravity`].
    pub gravity: Option<Gravity>,
}

/// Removes uniform borders.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trim {
    pub enabled: bool,
    /// Colour distance still counted as background.
    pub threshold: f64,
    /// `None` detects the background colour from the top-left pixel.
    pub color: Option<Color>,
    /// Trim the same amount from left and right.
    pub equal_horizontal: bool,
    /// Trim the same amount from top and bottom.
    pub equal_vertical: bool,
}

impl Default for Trim {
    fn default() -> Self {
        Self {
            enabled: false,
            threshold: 10.0,
            color: None,
            equal_horizontal: false,
            equal_vertical: false,
        }
    }
}

/// Padding added around the result, in CSS order, in pixels (before `dpr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Padding {
    pub top: u32,
    pub right: u32,
    pub bottom: u32,
    pub left: u32,
}

impl Padding {
    /// imgproxy turns padding off when every side is 0.
    pub fn is_enabled(&self) -> bool {
        self.top > 0 || self.right > 0 || self.bottom > 0 || self.left > 0
    }
}

/// Clockwise rotation after EXIF auto-rotation. imgproxy accepts any multiple
/// of 90 (negative too); we keep it normalised to one turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotate {
    R0,
    R90,
    R180,
    R270,
}

impl Rotate {
    /// `None` unless `degrees` is a multiple of 90.
    pub(crate) fn from_degrees(degrees: i64) -> Option<Self> {
        match degrees.rem_euclid(360) {
            0 => Some(Self::R0),
            90 => Some(Self::R90),
            180 => Some(Self::R180),
            270 => Some(Self::R270),
            _ => None,
        }
    }

    pub fn degrees(self) -> u16 {
        match self {
            Self::R0 => 0,
            Self::R90 => 90,
            Self::R180 => 180,
            Self::R270 => 270,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flip {
    pub horizontal: bool,
    pub vertical: bool,
}

/// An sRGB colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Color {
    pub r: u8,
    pub g: u8,
    pub b: u8,
}

impl Color {
    pub const WHITE: Self = Self {
        r: 255,
        g: 255,
        b: 255,
    };

    /// `rgb` or `rrggbb` hex digits, no `#` (imgproxy's hex colour syntax).
    pub(crate) fn from_hex(s: &str) -> Option<Self> {
        if s.len() > 6 {
            return None;
        }
        let digits = s
            .chars()
            .map(|c| c.to_digit(16).and_then(|d| u8::try_from(d).ok()))
            .collect::<Option<Vec<u8>>>()?;
        match digits[..] {
            [r, g, b] => Some(Self {
                r: r * 17,
                g: g * 17,
                b: b * 17,
            }),
            [r1, r0, g1, g0, b1, b0] => Some(Self {
                r: r1 << 4 | r0,
                g: g1 << 4 | g0,
                b: b1 << 4 | b0,
            }),
            _ => None,
        }
    }
}

/// The configured watermark image, placed on the result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Watermark {
    /// Set by a `watermark` option with opacity above 0.
    pub enabled: bool,
    /// 0..=1, multiplied with `IMGPROXY_WATERMARK_OPACITY`.
    pub opacity: f64,
    /// Anchor and offsets; [`GravityKind::Replicate`] tiles it.
    pub position: Gravity,
    /// Size relative to the result's width; 0 keeps the watermark's own size.
    pub scale: f64,
}

impl Default for Watermark {
    fn default() -> Self {
        Self {
            enabled: false,
            opacity: 1.0,
            position: Gravity::CENTER,
            scale: 0.0,
        }
    }
}

/// The image formats imgproxy's open-source build knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ImageFormat {
    Jpeg,
    Png,
    Webp,
    Avif,
    Gif,
    Ico,
    Bmp,
    Tiff,
    Svg,
    Heic,
    Jxl,
}

/// A format name imgproxy wouldn't accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("unknown image format `{0}`")]
    Unknown(String),
    /// `best` picks the smallest encoding: imgproxy Pro only.
    #[error("image format `best` is only available in imgproxy Pro")]
    Best,
}

impl ImageFormat {
    /// Canonical name, as used in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jpeg => "jpeg",
            Self::Png => "png",
            Self::Webp => "webp",
            Self::Avif => "avif",
            Self::Gif => "gif",
            Self::Ico => "ico",
            Self::Bmp => "bmp",
            Self::Tiff => "tiff",
            Self::Svg => "svg",
            Self::Heic => "heic",
            Self::Jxl => "jxl",
        }
    }

    /// File extension for `Content-Disposition` (imgproxy uses `jpg` for JPEG).
    pub fn extension(self) -> &'static str {
        match self {
            Self::Jpeg => "jpg",
            other => other.as_str(),
        }
    }

    /// `Content-Type` of results in this format (imgproxy's table).
    pub fn mime_type(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::Webp => "image/webp",
            Self::Avif => "image/avif",
            Self::Gif => "image/gif",
            Self::Ico => "image/x-icon",
            Self::Bmp => "image/bmp",
            Self::Tiff => "image/tiff",
            Self::Svg => "image/svg+xml",
            Self::Heic => "image/heif",
            Self::Jxl => "image/jxl",
        }
    }
}

impl FromStr for ImageFormat {
    type Err = FormatError;

    /// Names are case-sensitive, as in imgproxy; `jpg` is accepted for JPEG.
    fn from_str(s: &str) -> Result<Self, FormatError> {
        Ok(match s {
            "jpeg" | "jpg" => Self::Jpeg,
            "png" => Self::Png,
            "webp" => Self::Webp,
            "avif" => Self::Avif,
            "gif" => Self::Gif,
            "ico" => Self::Ico,
            "bmp" => Self::Bmp,
            "tiff" => Self::Tiff,
            "svg" => Self::Svg,
            "heic" => Self::Heic,
            "jxl" => Self::Jxl,
            "best" => return Err(FormatError::Best),
            other => return Err(FormatError::Unknown(other.to_owned())),
        })
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_imgproxy() {
        let d = Defaults::default();
        let po = ProcessingOptions::new(&d);
        assert_eq!(po.resizing_type, ResizingType::Fit);
        assert_eq!(
            (po.width, po.height, po.min_width, po.min_height),
            (0, 0, 0, 0)
        );
        assert_eq!((po.zoom_x, po.zoom_y, po.dpr), (1.0, 1.0, 1.0));
        assert_eq!(po.gravity, Gravity::CENTER);
        assert!(!po.enlarge && !po.extend.enabled && !po.extend_aspect_ratio.enabled);
        assert_eq!(
            po.crop,
            Crop {
                width: 0.0,
                height: 0.0,
                gravity: None
            }
        );
        assert!(!po.padding.is_enabled());
        assert_eq!(
            po.trim,
            Trim {
                threshold: 10.0,
                ..Trim::default()
            }
        );
        assert!(!po.trim.enabled && po.trim.color.is_none());
        assert_eq!(po.rotate, Rotate::R0);
        assert_eq!(po.flip, Flip::default());
        assert_eq!(po.background, None);
        assert_eq!(po.watermark.opacity, 1.0);
        assert!(!po.watermark.enabled);
        assert!(po.strip_metadata && po.keep_copyright && po.strip_color_profile && po.auto_rotate);
        assert!(!po.enforce_thumbnail && !po.return_attachment && !po.raw);
        assert_eq!(po.quality, 0);
        assert_eq!(po.format_quality.get(&ImageFormat::Webp), Some(&79));
        assert_eq!(po.format_quality.get(&ImageFormat::Avif), Some(&63));
        assert_eq!(po.format_quality.get(&ImageFormat::Jxl), Some(&77));
        assert_eq!(po.format, None);
        assert_eq!(po.expires, None);
    }

    #[test]
    fn defaults_come_from_config() {
        let d = Defaults {
            strip_metadata: false,
            auto_rotate: false,
            return_attachment: true,
            skip_processing_formats: vec![ImageFormat::Svg],
            ..Defaults::default()
        };
        let po = ProcessingOptions::new(&d);
        assert!(!po.strip_metadata && !po.auto_rotate && po.return_attachment);
        assert_eq!(po.skip_processing, vec![ImageFormat::Svg]);
    }

    #[test]
    fn quality_resolution_order() {
        let d = Defaults::default();
        let mut po = ProcessingOptions::new(&d);
        assert_eq!(po.quality_for(ImageFormat::Jpeg, &d), 80);
        assert_eq!(po.quality_for(ImageFormat::Avif, &d), 63);
        po.quality = 50;
        assert_eq!(po.quality_for(ImageFormat::Avif, &d), 50);
    }

    #[test]
    fn hex_colours() {
        let c = |r, g, b| Some(Color { r, g, b });
        assert_eq!(Color::from_hex("fff"), c(255, 255, 255));
        assert_eq!(Color::from_hex("1a2"), c(0x11, 0xaa, 0x22));
        assert_eq!(Color::from_hex("FF8000"), c(255, 128, 0));
        for bad in ["", "ff", "ffff", "fffffff", "ggg", "#fff", "ｆｆｆ"] {
            assert_eq!(Color::from_hex(bad), None, "{bad}");
        }
    }

    #[test]
    fn rotation_is_normalised() {
        assert_eq!(Rotate::from_degrees(0), Some(Rotate::R0));
        assert_eq!(Rotate::from_degrees(450), Some(Rotate::R90));
        assert_eq!(Rotate::from_degrees(-90), Some(Rotate::R270));
        assert_eq!(Rotate::from_degrees(180).map(Rotate::degrees), Some(180));
        assert_eq!(Rotate::from_degrees(45), None);
    }

    #[test]
    fn format_names() {
        for (name, f) in [
            ("jpg", ImageFormat::Jpeg),
            ("jpeg", ImageFormat::Jpeg),
            ("jxl", ImageFormat::Jxl),
        ] {
            assert_eq!(name.parse(), Ok(f));
        }
        for f in [
            ImageFormat::Jpeg,
            ImageFormat::Png,
            ImageFormat::Webp,
            ImageFormat::Avif,
            ImageFormat::Gif,
            ImageFormat::Ico,
            ImageFormat::Bmp,
            ImageFormat::Tiff,
            ImageFormat::Svg,
            ImageFormat::Heic,
            ImageFormat::Jxl,
        ] {
            assert_eq!(f.as_str().parse(), Ok(f));
            assert!(f.mime_type().starts_with("image/"));
        }
        assert_eq!(ImageFormat::Jpeg.extension(), "jpg");
        assert_eq!(ImageFormat::Ico.mime_type(), "image/x-icon");
        assert_eq!("best".parse::<ImageFormat>(), Err(FormatError::Best));
        assert_eq!(
            "PNG".parse::<ImageFormat>(),
            Err(FormatError::Unknown("PNG".into()))
        );
    }

    #[test]
    fn parse_tables() {
        assert_eq!(
            ResizingType::parse("fill-down"),
            Some(ResizingType::FillDown)
        );
        assert_eq!(ResizingType::parse("crop"), None);
        assert_eq!(GravityKind::parse("nowe"), Some(GravityKind::NorthWest));
        assert_eq!(GravityKind::parse("obj"), None);
    }
}
