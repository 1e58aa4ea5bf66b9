//! [`parse_path`]: turns an imgproxy request path into a verified
//! [`ParsedRequest`] — signature, processing options (presets included), and
//! source — as a pure function of the path, the config, and the current time.

use std::str::FromStr;

use super::error::ParseError;
use super::options::{
    Color, Defaults, Extend, FormatError, Gravity, GravityKind, ImageFormat, ProcessingOptions,
    ResizingType, Rotate,
};
use super::presets::{DEFAULT_PRESET, Presets};
use super::signature::SignatureVerifier;
use super::source::{self, DEFAULT_BASE_URL, Source};

/// `IMGPROXY_ARGUMENTS_SEPARATOR`: separates an option's name and arguments.
pub const DEFAULT_ARGUMENTS_SEPARATOR: &str = ":";

/// `IMGPROXY_ONLY_PRESETS`: the segment after the signature is a list of preset names.
pub const DEFAULT_ONLY_PRESETS: bool = false;

/// `IMGPROXY_BASE64_URL_INCLUDES_FILENAME`: the last segment of a base64 source is a
/// cosmetic file name.
pub const DEFAULT_BASE64_URL_INCLUDES_FILENAME: bool = false;

/// Options applied per request, preset expansions included. Bounds the work a
/// long URL or a preset referencing other presets many times can cause.
const MAX_OPTIONS: usize = 512;

/// Presets nested deeper than this are refused, whatever the preset count.
const MAX_PRESET_DEPTH: usize = 16;

/// Everything [`parse_path`] needs from the configuration.
#[derive(Debug, Clone)]
pub struct ParserConfig {
    /// Default: signing off (no key/salt), any signature segment passes.
    pub signature: SignatureVerifier,
    pub defaults: Defaults,
    pub presets: Presets,
    pub only_presets: bool,
    /// `IMGPROXY_ALLOWED_PROCESSING_OPTIONS`; empty allows every option. Names
    /// match as written in the URL (list `rs` and `resize` to allow both), as in
    /// imgproxy. Options inside presets are always allowed.
    pub allowed_options: Vec<String>,
    /// Must not be empty; [`ParserConfig::validate`] checks.
    pub arguments_separator: String,
    pub base_url: String,
    pub base64_url_includes_filename: bool,
}

impl Default for ParserConfig {
    fn default() -> Self {
        Self {
            signature: SignatureVerifier::default(),
            defaults: Defaults::default(),
            presets: Presets::default(),
            only_presets: DEFAULT_ONLY_PRESETS,
            allowed_options: Vec::new(),
            arguments_separator: DEFAULT_ARGUMENTS_SEPARATOR.to_owned(),
            base_url: DEFAULT_BASE_URL.to_owned(),
            base64_url_includes_filename: DEFAULT_BASE64_URL_INCLUDES_FILENAME,
        }
    }
}

/// A configuration [`parse_path`] can't work with; fail start-up on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParserConfigError {
    #[error("IMGPROXY_ARGUMENTS_SEPARATOR must not be empty")]
    EmptyArgumentsSeparator,
    #[error("preset `{name}` is invalid: {source}")]
    InvalidPreset { name: String, source: ParseError },
}

impl ParserConfig {
    /// Checks the separator and applies every preset once, so a bad or
    /// cyclic preset fails start-up instead of every request that uses it.
    ///
    /// # Errors
    /// The first problem found.
    pub fn validate(&self) -> Result<(), ParserConfigError> {
        if self.arguments_separator.is_empty() {
            return Err(ParserConfigError::EmptyArgumentsSeparator);
        }
        for name in self.presets.names() {
            // `now = 0` never counts as expired: an `expires` in a preset is
            // checked per request, not at start-up.
            let mut applier = Applier::new(self, 0);
            let mut options = ProcessingOptions::new(&self.defaults);
            applier.presets(&mut options, &[name]).map_err(|source| {
                ParserConfigError::InvalidPreset {
                    name: name.to_owned(),
                    source,
                }
            })?;
        }
        Ok(())
    }
}

/// A verified, fully parsed processing request.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedRequest {
    pub options: ProcessingOptions,
    pub source: Source,
    /// The format to produce: the URL's extension, else the `format` option;
    /// `None` lets the worker choose (keep the source's, or negotiate). A `raw`
    /// request ignores the extension, as imgproxy does.
    pub output_format: Option<ImageFormat>,
}

/// Parses `path`: the request path with the query cut off and
/// `IMGPROXY_PATH_PREFIX` stripped, i.e. `/<signature>/<options>/<source>`.
/// `now` is the current time in unix seconds, for `expires`.
///
/// # Errors
/// See [`ParseError`]; `status()` gives the HTTP status.
pub fn parse_path(path: &str, cfg: &ParserConfig, now: i64) -> Result<ParsedRequest, ParseError> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let (signature, rest) = match path.find('/') {
        Some(end) if end > 0 => path.split_at(end),
        _ => {
            return Err(ParseError::invalid_path(
                "expected /<signature>/<options>/<source>",
            ));
        }
    };
    // imgproxy signs the repaired path, so repair before verifying.
    let rest = fix_path(rest);
    cfg.signature.verify(signature, &rest)?;

    let segments: Vec<&str> = rest.strip_prefix('/').unwrap_or(&rest).split('/').collect();
    let sep = cfg.arguments_separator.as_str();
    let mut applier = Applier::new(cfg, now);
    let mut options = ProcessingOptions::new(&cfg.defaults);
    if cfg.presets.get(DEFAULT_PRESET).is_some() {
        applier.presets(&mut options, &[DEFAULT_PRESET])?;
    }

    let source_segments = if cfg.only_presets {
        let (names, source) = segments
            .split_first()
            .ok_or_else(|| ParseError::invalid_path("no presets segment"))?;
        applier.presets(&mut options, &names.split(sep).collect::<Vec<_>>())?;
        source
    } else {
        if segments
            .first()
            .is_some_and(|s| ResizingType::parse(s).is_some())
        {
            return Err(ParseError::invalid_path(
                "the basic URL format (/fill/300/200/...) was removed in imgproxy 3",
            ));
        }
        // Options run up to the first segment without a separator.
        let count = segments.iter().take_while(|s| s.contains(sep)).count();
        let (option_segments, source) = segments.split_at(count);
        for segment in option_segments {
            applier.segment(&mut options, segment, false)?;
        }
        source
    };

    let (source, extension) = source::decode(
        source_segments,
        &cfg.base_url,
        cfg.base64_url_includes_filename,
    )?;
    let output_format = match extension.filter(|_| !options.raw) {
        Some(ext) => Some(format("extension", &ext)?),
        None => options.format,
    };
    Ok(ParsedRequest {
        options,
        source,
        output_format,
    })
}

/// Undoes two rewrites some CDNs and proxies apply, as imgproxy does before
/// checking the signature: `%3A` for `:` in the options, and `scheme:/x` for
/// `scheme://x` at the start of a plain source URL.
fn fix_path(path: &str) -> String {
    let (options, plain) = match path.split_once("/plain/") {
        Some((options, plain)) => (options, Some(plain)),
        None => (path, None),
    };
    let mut fixed = options.replace("%3A", ":");
    if let Some(plain) = plain {
        fixed.push_str("/plain/");
        match plain.split_once(":/") {
            // imgproxy's pattern is looser (any non-space prefix); limiting it
            // to a real scheme avoids rewriting `:/` later in the URL.
            Some((scheme, rest))
                if !scheme.is_empty()
                    && scheme
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
                    && rest.chars().next().is_some_and(|c| c != '/') =>
            {
                let slashes = if scheme == "local" { ":///" } else { "://" };
                fixed.extend([scheme, slashes, rest]);
            }
            _ => fixed.push_str(plain),
        }
    }
    fixed
}

/// Applies option segments to [`ProcessingOptions`], tracking the preset chain
/// and the work budget.
struct Applier<'a> {
    cfg: &'a ParserConfig,
    now: i64,
    budget: usize,
    /// Presets being applied, outermost first: a repeat is a cycle.
    chain: Vec<&'a str>,
}

impl<'a> Applier<'a> {
    fn new(cfg: &'a ParserConfig, now: i64) -> Self {
        Self {
            cfg,
            now,
            budget: MAX_OPTIONS,
            chain: Vec::new(),
        }
    }

    fn segment(
        &mut self,
        po: &mut ProcessingOptions,
        segment: &'a str,
        from_preset: bool,
    ) -> Result<(), ParseError> {
        let mut parts = segment.split(self.cfg.arguments_separator.as_str());
        let name = parts.next().unwrap_or_default();
        let allowed = &self.cfg.allowed_options;
        if !from_preset && !allowed.is_empty() && !allowed.iter().any(|a| a == name) {
            return Err(ParseError::ForbiddenOption(name.to_owned()));
        }
        self.budget = self
            .budget
            .checked_sub(1)
            .ok_or_else(|| ParseError::invalid_path("too many processing options"))?;
        let args: Vec<&'a str> = parts.collect();
        self.option(po, name, &args)
    }

    fn presets(&mut self, po: &mut ProcessingOptions, names: &[&'a str]) -> Result<(), ParseError> {
        let presets: &'a Presets = &self.cfg.presets;
        for &name in names.iter().filter(|n| !n.is_empty()) {
            let segments = presets
                .get(name)
                .ok_or_else(|| ParseError::UnknownPreset(name.to_owned()))?;
            // imgproxy skips a recursive use with a warning; an error makes
            // the broken preset visible (and `validate` catches it at start-up).
            if self.chain.contains(&name) {
                return Err(ParseError::RecursivePreset(name.to_owned()));
            }
            if self.chain.len() >= MAX_PRESET_DEPTH {
                return Err(ParseError::invalid_arg(
                    "preset",
                    format!("presets nest deeper than {MAX_PRESET_DEPTH}"),
                ));
            }
            self.chain.push(name);
            for segment in segments {
                self.segment(po, segment, true)?;
            }
            self.chain.pop();
        }
        Ok(())
    }

    /// Applies one option; `args` has at least one element (maybe empty).
    fn option(
        &mut self,
        po: &mut ProcessingOptions,
        name: &str,
        args: &[&'a str],
    ) -> Result<(), ParseError> {
        let a = |option, max| Args::new(option, args, max);
        match name {
            "resize" | "rs" => resize(po, &a("resize", 8)?),
            "size" | "s" => size(po, &a("size", 7)?),
            "resizing_type" | "rt" => {
                let a = a("resizing_type", 1)?;
                set(&mut po.resizing_type, a.map(0, resizing_type)?);
                Ok(())
            }
            "width" | "w" => set_ok(&mut po.width, a("width", 1)?.int(0)),
            "height" | "h" => set_ok(&mut po.height, a("height", 1)?.int(0)),
            "min-width" | "mw" => set_ok(&mut po.min_width, a("min-width", 1)?.int(0)),
            "min-height" | "mh" => set_ok(&mut po.min_height, a("min-height", 1)?.int(0)),
            "zoom" | "z" => {
                let a = a("zoom", 2)?;
                if let Some(z) = a.float(0, |z| z > 0.0)? {
                    (po.zoom_x, po.zoom_y) = (z, z);
                }
                set_ok(&mut po.zoom_y, a.float(1, |z| z > 0.0))
            }
            "dpr" => set_ok(&mut po.dpr, a("dpr", 1)?.float(0, |d| d > 0.0)),
            "enlarge" | "el" => flag(&mut po.enlarge, &a("enlarge", 1)?),
            "extend" | "ex" => extend(&mut po.extend, &a("extend", 4)?),
            "extend_aspect_ratio" | "extend_ar" | "exar" => {
                extend(&mut po.extend_aspect_ratio, &a("extend_aspect_ratio", 4)?)
            }
            "gravity" | "g" => gravity(&mut po.gravity, &a("gravity", 3)?, crop_gravity),
            "crop" | "c" => crop(po, &a("crop", 5)?),
            "trim" | "t" => trim(po, &a("trim", 4)?),
            "padding" | "pd" => padding(po, &a("padding", 4)?),
            "auto_rotate" | "ar" => flag(&mut po.auto_rotate, &a("auto_rotate", 1)?),
            "rotate" | "rot" => {
                let a = a("rotate", 1)?;
                let rotate = |s: &str| {
                    let degrees = s.parse().ok();
                    degrees
                        .and_then(Rotate::from_degrees)
                        .ok_or("a multiple of 90")
                };
                set_ok(&mut po.rotate, a.map(0, rotate))
            }
            "flip" | "fl" => {
                let a = a("flip", 2)?;
                set(&mut po.flip.horizontal, a.boolean(0));
                set(&mut po.flip.vertical, a.boolean(1));
                Ok(())
            }
            "background" | "bg" => background(po, &a("background", 3)?),
            "blur" | "bl" => set_ok(&mut po.blur, a("blur", 1)?.sigma(0)),
            "sharpen" | "sh" => set_ok(&mut po.sharpen, a("sharpen", 1)?.sigma(0)),
            "pixelate" | "pix" => set_ok(&mut po.pixelate, a("pixelate", 1)?.int(0)),
            "watermark" | "wm" => watermark(po, &a("watermark", 7)?),
            "strip_metadata" | "sm" => flag(&mut po.strip_metadata, &a("strip_metadata", 1)?),
            "keep_copyright" | "kcr" => flag(&mut po.keep_copyright, &a("keep_copyright", 1)?),
            "strip_color_profile" | "scp" => {
                flag(&mut po.strip_color_profile, &a("strip_color_profile", 1)?)
            }
            "enforce_thumbnail" | "eth" => {
                flag(&mut po.enforce_thumbnail, &a("enforce_thumbnail", 1)?)
            }
            "quality" | "q" => set_ok(&mut po.quality, a("quality", 1)?.map(0, quality)),
            "format_quality" | "fq" => format_quality(po, &a("format_quality", usize::MAX)?),
            "max_bytes" | "mb" => set_ok(&mut po.max_bytes, a("max_bytes", 1)?.int(0)),
            "format" | "f" | "ext" => {
                let a = a("format", 1)?;
                if let Some(name) = a.get(0) {
                    po.format = Some(format(a.option, name)?);
                }
                Ok(())
            }
            "skip_processing" | "skp" => {
                let a = a("skip_processing", usize::MAX)?;
                for name in a.list.iter().filter(|n| !n.is_empty()) {
                    let f = format(a.option, name)?;
                    if !po.skip_processing.contains(&f) {
                        po.skip_processing.push(f);
                    }
                }
                Ok(())
            }
            "raw" => flag(&mut po.raw, &a("raw", 1)?),
            "cachebuster" | "cb" => {
                let a = a("cachebuster", 1)?;
                set(&mut po.cachebuster, a.get(0).map(str::to_owned));
                Ok(())
            }
            "expires" | "exp" => expires(po, &a("expires", 1)?, self.now),
            "filename" | "fn" => filename(po, &a("filename", 2)?),
            "return_attachment" | "att" => {
                flag(&mut po.return_attachment, &a("return_attachment", 1)?)
            }
            "preset" | "pr" => self.presets(po, args),
            "max_src_resolution"
            | "msr"
            | "max_src_file_size"
            | "msfs"
            | "max_animation_frames"
            | "maf"
            | "max_animation_frame_resolution"
            | "mafr"
            | "max_result_dimension"
            | "mrd" => Err(ParseError::SecurityOption(name.to_owned())),
            _ => Err(ParseError::UnknownOption(name.to_owned())),
        }
    }
}

/// One option's arguments. An empty argument leaves its value unchanged; a
/// missing one too.
struct Args<'s> {
    /// Canonical option name, for error messages.
    option: &'static str,
    list: &'s [&'s str],
}

impl<'s> Args<'s> {
    fn new(option: &'static str, list: &'s [&'s str], max: usize) -> Result<Self, ParseError> {
        if list.len() > max {
            return Err(ParseError::invalid_arg(
                option,
                format!("takes at most {max} arguments, got {}", list.len()),
            ));
        }
        Ok(Self { option, list })
    }

    /// The arguments from `from` on, as another option's (`size` inside `resize`).
    fn tail(&self, from: usize) -> Self {
        Self {
            option: self.option,
            list: self.list.get(from..).unwrap_or_default(),
        }
    }

    fn len(&self) -> usize {
        self.list.len()
    }

    fn get(&self, i: usize) -> Option<&'s str> {
        self.list.get(i).copied().filter(|s| !s.is_empty())
    }

    fn err(&self, reason: impl Into<String>) -> ParseError {
        ParseError::invalid_arg(self.option, reason)
    }

    /// Converts argument `i` if present; on failure `convert` says what a
    /// valid value looks like.
    fn map<T>(
        &self,
        i: usize,
        convert: impl FnOnce(&str) -> Result<T, &'static str>,
    ) -> Result<Option<T>, ParseError> {
        self.get(i)
            .map(|s| convert(s).map_err(|expected| self.err(format!("`{s}` is not {expected}"))))
            .transpose()
    }

    /// A non-negative integer that fits `T`.
    fn int<T: FromStr>(&self, i: usize) -> Result<Option<T>, ParseError> {
        self.map(i, |s| {
            s.parse().map_err(|_| "a non-negative integer in range")
        })
    }

    /// A finite number accepted by `valid`.
    fn float(&self, i: usize, valid: impl Fn(f64) -> bool) -> Result<Option<f64>, ParseError> {
        self.map(i, |s| {
            s.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && valid(*v))
                .ok_or("a number in range")
        })
    }

    /// A blur/sharpen sigma: non-negative and representable as `f32`.
    fn sigma(&self, i: usize) -> Result<Option<f32>, ParseError> {
        // Rounding to f32 is intended (imgproxy parses these as 32-bit); only
        // values that overflow to infinity are refused.
        let to_f32 = |v: f64| v as f32;
        Ok(self
            .float(i, |v| v >= 0.0 && to_f32(v).is_finite())?
            .map(to_f32))
    }

    /// imgproxy reads anything but its true spellings as false (with a
    /// warning) rather than refusing the URL; we match that.
    fn boolean(&self, i: usize) -> Option<bool> {
        self.get(i)
            .map(|s| matches!(s, "1" | "t" | "T" | "true" | "TRUE" | "True"))
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

fn flag(field: &mut bool, a: &Args<'_>) -> Result<(), ParseError> {
    set(field, a.boolean(0));
    Ok(())
}

fn set_ok<T>(field: &mut T, value: Result<Option<T>, ParseError>) -> Result<(), ParseError> {
    set(field, value?);
    Ok(())
}

fn resizing_type(s: &str) -> Result<ResizingType, &'static str> {
    ResizingType::parse(s).ok_or("one of fit, fill, fill-down, force, auto")
}

fn quality(s: &str) -> Result<u8, &'static str> {
    s.parse()
        .ok()
        .filter(|q| *q <= 100)
        .ok_or("a quality in 0..=100")
}

fn format(option: &'static str, name: &str) -> Result<ImageFormat, ParseError> {
    name.parse().map_err(|e| match e {
        FormatError::Best => ParseError::Unsupported(e.to_string()),
        FormatError::Unknown(_) => ParseError::invalid_arg(option, e.to_string()),
    })
}

fn resize(po: &mut ProcessingOptions, a: &Args<'_>) -> Result<(), ParseError> {
    set(&mut po.resizing_type, a.map(0, resizing_type)?);
    size(po, &a.tail(1))
}

fn size(po: &mut ProcessingOptions, a: &Args<'_>) -> Result<(), ParseError> {
    set(&mut po.width, a.int(0)?);
    set(&mut po.height, a.int(1)?);
    set(&mut po.enlarge, a.boolean(2));
    // As in imgproxy, an empty "extend" skips the extend gravity too.
    if a.get(3).is_some() {
        extend(&mut po.extend, &a.tail(3))?;
    }
    Ok(())
}

/// Gravity offsets are capped at [`MAX_CANVAS_SIDE`] pixels either way.
fn extend(e: &mut Extend, a: &Args<'_>) -> Result<(), ParseError> {
    set(&mut e.enabled, a.boolean(0));
    if a.len() > 1 {
        let mut g = e.gravity;
        gravity(&mut g, &a.tail(1), |k| {
            !matches!(k, GravityKind::Smart | GravityKind::Replicate)
        })?;
        let limit = f64::from(MAX_CANVAS_SIDE);
        if g.x.abs() > limit || g.y.abs() > limit {
            return Err(a.err("gravity offsets are at most 65535 pixels either way"));
        }
        e.gravity = g;
    }
    Ok(())
}

fn crop_gravity(kind: GravityKind) -> bool {
    kind != GravityKind::Replicate
}

/// `kind[:x[:y]]`; `sm` takes no offsets, `fp` requires both coordinates.
fn gravity(
    g: &mut Gravity,
    a: &Args<'_>,
    allowed: fn(GravityKind) -> bool,
) -> Result<(), ParseError> {
    let kind = match a.get(0) {
        None => g.kind,
        Some(s) => GravityKind::parse(s)
            .filter(|&k| allowed(k))
            .ok_or_else(|| a.err(format!("`{s}` is not a gravity allowed here")))?,
    };
    match kind {
        GravityKind::Smart if a.len() > 1 => Err(a.err("smart gravity takes no offsets")),
        GravityKind::Smart => {
            *g = Gravity {
                kind,
                x: 0.0,
                y: 0.0,
            };
            Ok(())
        }
        GravityKind::FocusPoint => {
            let unit = |v: f64| (0.0..=1.0).contains(&v);
            let (Some(x), Some(y), 3) = (a.float(1, unit)?, a.float(2, unit)?, a.len()) else {
                return Err(a.err("focus point gravity needs x and y in 0..=1"));
            };
            *g = Gravity { kind, x, y };
            Ok(())
        }
        _ if a.len() > 3 => Err(a.err("gravity takes at most 2 offsets")),
        _ => {
            set(&mut g.x, a.float(1, |_| true)?);
            set(&mut g.y, a.float(2, |_| true)?);
            g.kind = kind;
            Ok(())
        }
    }
}

fn crop(po: &mut ProcessingOptions, a: &Args<'_>) -> Result<(), ParseError> {
    set(&mut po.crop.width, a.float(0, |v| v >= 0.0)?);
    set(&mut po.crop.height, a.float(1, |v| v >= 0.0)?);
    let gravity_args = a.tail(2);
    if gravity_args.list.iter().any(|s| !s.is_empty()) {
        // Without its own gravity yet, the crop starts from the main one.
        let mut g = po.crop.gravity.unwrap_or(po.gravity);
        gravity(&mut g, &gravity_args, crop_gravity)?;
        po.crop.gravity = Some(g);
    }
    Ok(())
}

fn trim(po: &mut ProcessingOptions, a: &Args<'_>) -> Result<(), ParseError> {
    if let Some(threshold) = a.float(0, |v| v >= 0.0)? {
        po.trim.enabled = true;
        po.trim.threshold = threshold;
    }
    if let Some(color) = a.map(1, |s| Color::from_hex(s).ok_or("a hex colour"))? {
        po.trim.color = Some(color);
    }
    set(&mut po.trim.equal_horizontal, a.boolean(2));
    set(&mut po.trim.equal_vertical, a.boolean(3));
    Ok(())
}

/// The largest padding per side and the largest pixel offset of an `extend` gravity a URL
/// may ask for. No result format we write holds a side longer than 65535 pixels (JPEG's and
/// GIF's limit; WebP and AVIF stop sooner), so a larger padding or offset can never give a
/// valid result: it is refused at parse time, before any size is computed from it. This is
/// stricter than imgproxy, which takes any `int`.
pub const MAX_CANVAS_SIDE: u32 = 65_535;

/// CSS order: one value sets all sides, the second right and left, then
/// bottom, then left. Each side at most [`MAX_CANVAS_SIDE`].
fn padding(po: &mut ProcessingOptions, a: &Args<'_>) -> Result<(), ParseError> {
    let side = |i| {
        a.map(i, |s| {
            s.parse::<u32>()
                .ok()
                .filter(|v| *v <= MAX_CANVAS_SIDE)
                .ok_or("a non-negative integer up to 65535")
        })
    };
    let p = &mut po.padding;
    if let Some(v) = side(0)? {
        (p.top, p.right, p.bottom, p.left) = (v, v, v, v);
    }
    if let Some(v) = side(1)? {
        (p.right, p.left) = (v, v);
    }
    set(&mut p.bottom, side(2)?);
    set(&mut p.left, side(3)?);
    Ok(())
}

/// `hex`, `r:g:b`, or empty to keep transparency (imgproxy's documented meaning).
fn background(po: &mut ProcessingOptions, a: &Args<'_>) -> Result<(), ParseError> {
    match a.len() {
        1 => {
            po.background = a.map(0, |s| Color::from_hex(s).ok_or("a hex colour"))?;
        }
        3 => {
            let mut c = po.background.unwrap_or(Color::WHITE);
            set(&mut c.r, a.int(0)?);
            set(&mut c.g, a.int(1)?);
            set(&mut c.b, a.int(2)?);
            po.background = Some(c);
        }
        n => return Err(a.err(format!("takes 1 (hex) or 3 (r:g:b) arguments, got {n}"))),
    }
    Ok(())
}

fn watermark(po: &mut ProcessingOptions, a: &Args<'_>) -> Result<(), ParseError> {
    let wm = &mut po.watermark;
    if let Some(opacity) = a.float(0, |o| (0.0..=1.0).contains(&o))? {
        wm.enabled = opacity > 0.0;
        wm.opacity = opacity;
    }
    let position = |s: &str| {
        GravityKind::parse(s)
            .filter(|k| !matches!(k, GravityKind::Smart | GravityKind::FocusPoint))
            .ok_or("a watermark position")
    };
    set(&mut wm.position.kind, a.map(1, position)?);
    set(&mut wm.position.x, a.float(2, |_| true)?);
    set(&mut wm.position.y, a.float(3, |_| true)?);
    set(&mut wm.scale, a.float(4, |s| s >= 0.0)?);
    // Arguments 6 and 7 exist in imgproxy Pro only; ignored, as imgproxy does.
    Ok(())
}

/// `format:quality` pairs.
fn format_quality(po: &mut ProcessingOptions, a: &Args<'_>) -> Result<(), ParseError> {
    if a.list.iter().all(|s| s.is_empty()) {
        return Ok(());
    }
    if !a.len().is_multiple_of(2) {
        return Err(a.err("expects format:quality pairs"));
    }
    for pair in a.list.chunks_exact(2) {
        let pair_args = Args {
            option: a.option,
            list: pair,
        };
        let Some(name) = pair_args.get(0) else {
            continue;
        };
        let f = format(a.option, name)?;
        if let Some(q) = pair_args.map(1, quality)? {
            po.format_quality.insert(f, q);
        }
    }
    Ok(())
}

fn expires(po: &mut ProcessingOptions, a: &Args<'_>, now: i64) -> Result<(), ParseError> {
    let Some(at) = a.map(0, |s| s.parse::<i64>().map_err(|_| "a unix timestamp"))? else {
        return Ok(());
    };
    // 0 (or below) means "never", as in imgproxy.
    if at > 0 && at < now {
        return Err(ParseError::Expired { expires: at, now });
    }
    po.expires = (at > 0).then_some(at);
    Ok(())
}

fn filename(po: &mut ProcessingOptions, a: &Args<'_>) -> Result<(), ParseError> {
    use base64::Engine as _;
    let Some(name) = a.get(0) else { return Ok(()) };
    po.filename = if a.boolean(1).unwrap_or(false) {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(name)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| a.err("encoded file name is not UTF-8 in unpadded base64url"))?
    } else {
        name.to_owned()
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::options::{Crop, Padding};
    use crate::worker::presets::DEFAULT_PRESETS_SEPARATOR;
    use crate::worker::signature::SignatureError;
    use crate::worker::source::Scheme;

    /// A fixed "now" (2023-11-14) so expiry tests don't depend on the clock.
    const NOW: i64 = 1_700_000_000;
    const SRC: &str = "plain/http://images.dev/lorem/ipsum.jpg";

    fn unvalidated(list: &str) -> ParserConfig {
        let mut cfg = ParserConfig::default();
        cfg.presets
            .add_list(list, DEFAULT_PRESETS_SEPARATOR, DEFAULT_ARGUMENTS_SEPARATOR)
            .unwrap();
        cfg
    }

    fn with_presets(list: &str) -> ParserConfig {
        let cfg = unvalidated(list);
        cfg.validate().unwrap();
        cfg
    }

    fn parse_with(cfg: &ParserConfig, rest: &str) -> Result<ParsedRequest, ParseError> {
        parse_path(&format!("/unsafe{rest}"), cfg, NOW)
    }

    fn parse(rest: &str) -> Result<ParsedRequest, ParseError> {
        parse_with(&ParserConfig::default(), rest)
    }

    /// Options from `/unsafe/<options>/<plain source>`.
    fn opts(options: &str) -> ProcessingOptions {
        parse(&format!("/{options}/{SRC}"))
            .unwrap_or_else(|e| panic!("{options}: {e}"))
            .options
    }

    fn err(options: &str) -> ParseError {
        parse(&format!("/{options}/{SRC}")).expect_err(options)
    }

    /// Asserts `options` is refused as a bad argument of `option`.
    fn bad_arg(options: &str, option: &str) {
        match err(options) {
            ParseError::InvalidArgument { option: o, .. } => assert_eq!(o, option, "{options}"),
            e => panic!("{options}: expected a bad `{option}` argument, got {e:?}"),
        }
    }

    fn defaults() -> ProcessingOptions {
        ProcessingOptions::new(&Defaults::default())
    }

    // === imgproxy's documented example and signing ===

    const DOCS_KEY: &str = "736563726574";
    const DOCS_SALT: &str = "68656C6C6F";

    fn check_docs_example(req: &ParsedRequest) {
        assert_eq!(req.options.resizing_type, ResizingType::Fill);
        assert_eq!((req.options.width, req.options.height), (300, 400));
        assert!(!req.options.enlarge);
        assert_eq!(req.options.gravity.kind, GravityKind::Smart);
        assert_eq!(req.source.url, "http://example.com/images/curiosity.jpg");
        assert_eq!(req.source.scheme, Scheme::Http);
        assert_eq!(req.output_format, Some(ImageFormat::Png));
    }

    // The signed vector from imgproxy's "Signing the URL" guide parses to what
    // the guide describes; any change to the signed part is refused with 403.
    #[test]
    fn docs_signed_example() {
        let cfg = ParserConfig {
            signature: SignatureVerifier::from_env(DOCS_KEY, DOCS_SALT, 32, "").unwrap(),
            ..ParserConfig::default()
        };
        let rest =
            "/rs:fill:300:400:0/g:sm/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn.png";
        let req = parse_path(
            &format!("/oKfUtW34Dvo2BGQehJFR4Nr0_rIjOtdtzJ3QFsUcXH8{rest}"),
            &cfg,
            NOW,
        )
        .unwrap();
        check_docs_example(&req);

        let tampered = rest.replace("300", "301");
        let e = parse_path(
            &format!("/oKfUtW34Dvo2BGQehJFR4Nr0_rIjOtdtzJ3QFsUcXH8{tampered}"),
            &cfg,
            NOW,
        )
        .unwrap_err();
        assert_eq!(e, ParseError::InvalidSignature(SignatureError::Mismatch));
        assert_eq!(e.status(), 403);
        let e = parse_path(&format!("/unsafe{rest}"), &cfg, NOW).unwrap_err();
        assert_eq!(e.status(), 403);
    }

    // The three spellings of the example in imgproxy's "Generating the URL"
    // guide (long names, short names, base64 source) mean the same request.
    #[test]
    fn docs_generating_the_url_examples() {
        let cfg = with_presets("sharp=sh:0.5");
        let sig = "/AfrOrF3gWeDA6VOlDG4TzxMv39O7MXnF4CXpKUwGqRM";
        for rest in [
            "/preset:sharp/resize:fill:300:400:0/gravity:sm/plain/http://example.com/images/curiosity.jpg@png",
            "/pr:sharp/rs:fill:300:400:0/g:sm/plain/http://example.com/images/curiosity.jpg@png",
            "/pr:sharp/rs:fill:300:400:0/g:sm/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn.png",
        ] {
            let req = parse_path(&format!("{sig}{rest}"), &cfg, NOW).unwrap();
            check_docs_example(&req);
            assert_eq!(req.options.sharpen, 0.5);
        }
    }

    // Key rotation end to end: URLs signed with the old or the new pair pass.
    #[test]
    fn rotated_keys_verify_whole_paths() {
        let cfg = ParserConfig {
            signature: SignatureVerifier::from_env("6f6c64,6e6577", "73616c74,73616c74", 32, "")
                .unwrap(),
            ..ParserConfig::default()
        };
        let rest = format!("/w:10/{SRC}");
        for (key, salt) in [(b"old", b"salt"), (b"new", b"salt")] {
            let signer =
                crate::worker::signature::Signer::new(key.to_vec(), salt.to_vec(), 32).unwrap();
            let path = format!("/{}{rest}", signer.sign(&rest));
            assert_eq!(parse_path(&path, &cfg, NOW).unwrap().options.width, 10);
        }
    }

    // CDNs that turn `:` into `%3A` or collapse `://` must not break signatures:
    // imgproxy verifies the repaired path, and so do we.
    #[test]
    fn repaired_paths_verify_and_parse() {
        let cfg = ParserConfig {
            signature: SignatureVerifier::from_env(DOCS_KEY, DOCS_SALT, 32, "").unwrap(),
            ..ParserConfig::default()
        };
        let signer = cfg.signature.signer().unwrap();
        let rest = "/rs:fit:100/plain/http://images.dev/a.jpg";
        let mangled = "/rs%3Afit%3A100/plain/http:/images.dev/a.jpg";
        let req = parse_path(&format!("/{}{mangled}", signer.sign(rest)), &cfg, NOW).unwrap();
        assert_eq!(req.options.width, 100);
        assert_eq!(req.source.url, "http://images.dev/a.jpg");

        assert_eq!(
            fix_path("/plain/local:/img/a.png"),
            "/plain/local:///img/a.png"
        );
        assert_eq!(fix_path("/plain/https://x/a:/b"), "/plain/https://x/a:/b");
        assert_eq!(fix_path("/w%3A1/aHR0cA"), "/w:1/aHR0cA");
        assert_eq!(fix_path("/w:1/plain/x%3Ay"), "/w:1/plain/x%3Ay");
    }

    // === path shape ===

    #[test]
    fn path_shape_errors() {
        let cfg = ParserConfig::default();
        for path in [
            "",
            "/",
            "//w:1/plain/http://x/a",
            "/unsafe",
            "unsafe",
            "/unsafe/",
            "/unsafe/w:1",
        ] {
            let e = parse_path(path, &cfg, NOW).unwrap_err();
            assert!(matches!(e, ParseError::InvalidPath(_)), "{path:?}: {e:?}");
            assert_eq!(e.status(), 404);
        }
        // Without the leading slash the path is still understood.
        assert!(parse_path(&format!("_/{SRC}"), &cfg, NOW).is_ok());
    }

    #[test]
    fn no_options_at_all() {
        let req = parse(&format!("/{SRC}")).unwrap();
        assert_eq!(req.options, defaults());
        assert_eq!(req.output_format, None);
    }

    #[test]
    fn basic_url_format_is_refused() {
        let e = parse("/fill/300/400/sm/0/aHR0cDovL2V4YW1w").unwrap_err();
        assert!(matches!(e, ParseError::InvalidPath(_)), "{e:?}");
    }

    #[test]
    fn unknown_and_security_options() {
        assert_eq!(
            err("adjust:1:2:3"),
            ParseError::UnknownOption("adjust".into())
        );
        assert_eq!(err("W:100"), ParseError::UnknownOption("W".into()));
        for o in [
            "msr:1",
            "max_src_resolution:1",
            "msfs:1",
            "maf:1",
            "mafr:1",
            "mrd:1",
        ] {
            let e = err(o);
            assert!(matches!(e, ParseError::SecurityOption(_)), "{o}: {e:?}");
            assert_eq!(e.status(), 403);
        }
    }

    // === every option, every alias ===

    #[test]
    fn resize_and_size() {
        for name in ["resize", "rs"] {
            let po = opts(&format!("{name}:fill-down:100:200:1:1:so:5:6"));
            assert_eq!(po.resizing_type, ResizingType::FillDown);
            assert_eq!((po.width, po.height, po.enlarge), (100, 200, true));
            assert!(po.extend.enabled);
            assert_eq!(
                po.extend.gravity,
                Gravity {
                    kind: GravityKind::South,
                    x: 5.0,
                    y: 6.0
                }
            );
        }
        for name in ["size", "s"] {
            let po = opts(&format!("{name}:100:200:t:1:noea"));
            assert_eq!((po.width, po.height, po.enlarge), (100, 200, true));
            assert_eq!(po.extend.gravity.kind, GravityKind::NorthEast);
        }
        // Empty arguments keep what earlier options set.
        let po = opts("rs:fill:100:200/rs::::1/s::50");
        assert_eq!(po.resizing_type, ResizingType::Fill);
        assert_eq!((po.width, po.height, po.enlarge), (100, 50, true));
        // An empty "extend" skips its gravity, like imgproxy.
        assert_eq!(opts("s:1:1:0::xx").extend, Extend::default());
        bad_arg("rs:fit:1:1:0:0:ce:0:0:9", "resize");
        bad_arg("s:1:1:0:0:ce:0:0:9", "size");
        bad_arg("rs:crop:100", "resize");
        bad_arg("rs:fit:-1", "resize");
        bad_arg("s:1:1:0:1:sm", "size");
    }

    #[test]
    fn resizing_type() {
        for (arg, rt) in [
            ("fit", ResizingType::Fit),
            ("fill", ResizingType::Fill),
            ("fill-down", ResizingType::FillDown),
            ("force", ResizingType::Force),
            ("auto", ResizingType::Auto),
        ] {
            assert_eq!(opts(&format!("resizing_type:{arg}")).resizing_type, rt);
            assert_eq!(opts(&format!("rt:{arg}")).resizing_type, rt);
        }
        bad_arg("rt:Fill", "resizing_type");
        bad_arg("rt:fill:1", "resizing_type");
    }

    #[test]
    fn dimensions() {
        for (names, get) in [
            (
                ["width", "w"],
                (|p: &ProcessingOptions| p.width) as fn(&ProcessingOptions) -> u32,
            ),
            (["height", "h"], |p| p.height),
            (["min-width", "mw"], |p| p.min_width),
            (["min-height", "mh"], |p| p.min_height),
        ] {
            for name in names {
                assert_eq!(get(&opts(&format!("{name}:250"))), 250);
                assert_eq!(get(&opts(&format!("{name}:+7"))), 7);
                // Later options override earlier; empty keeps.
                assert_eq!(get(&opts(&format!("{name}:1/{name}:2/{name}:"))), 2);
                for bad in ["-1", "1.5", "x", "99999999999", "1:2"] {
                    assert!(
                        matches!(
                            err(&format!("{name}:{bad}")),
                            ParseError::InvalidArgument { .. }
                        ),
                        "{name}:{bad}"
                    );
                }
            }
        }
    }

    #[test]
    fn zoom_and_dpr() {
        for name in ["zoom", "z"] {
            let po = opts(&format!("{name}:1.5"));
            assert_eq!((po.zoom_x, po.zoom_y), (1.5, 1.5));
            let po = opts(&format!("{name}:2:3"));
            assert_eq!((po.zoom_x, po.zoom_y), (2.0, 3.0));
            assert_eq!(opts(&format!("{name}::3")).zoom_x, 1.0);
        }
        bad_arg("z:0", "zoom");
        bad_arg("z:1:-1", "zoom");
        bad_arg("z:1:1:1", "zoom");
        bad_arg("z:inf", "zoom");
        bad_arg("z:NaN", "zoom");
        assert_eq!(opts("dpr:2").dpr, 2.0);
        bad_arg("dpr:0", "dpr");
        bad_arg("dpr:-2", "dpr");
    }

    #[test]
    fn booleans() {
        for t in ["1", "t", "T", "true", "TRUE", "True"] {
            assert!(opts(&format!("enlarge:{t}")).enlarge, "{t}");
            assert!(opts(&format!("el:{t}")).enlarge, "{t}");
        }
        for f in ["0", "f", "F", "false", "FALSE", "False", "yes", "on"] {
            assert!(!opts(&format!("el:1/el:{f}")).enlarge, "{f}");
        }
        assert!(opts("el:1/el:").enlarge);
        bad_arg("el:1:1", "enlarge");
    }

    #[test]
    fn boolean_options_and_aliases() {
        type Get = fn(&ProcessingOptions) -> bool;
        let table: [(&[&str], Get); 8] = [
            (&["auto_rotate", "ar"], |p| p.auto_rotate),
            (&["strip_metadata", "sm"], |p| p.strip_metadata),
            (&["keep_copyright", "kcr"], |p| p.keep_copyright),
            (&["strip_color_profile", "scp"], |p| p.strip_color_profile),
            (&["enforce_thumbnail", "eth"], |p| p.enforce_thumbnail),
            (&["return_attachment", "att"], |p| p.return_attachment),
            (&["raw"], |p| p.raw),
            (&["enlarge", "el"], |p| p.enlarge),
        ];
        for (names, get) in table {
            for name in names {
                assert!(get(&opts(&format!("{name}:1"))), "{name}");
                assert!(!get(&opts(&format!("{name}:0"))), "{name}");
                assert!(matches!(
                    err(&format!("{name}:1:1")),
                    ParseError::InvalidArgument { .. }
                ));
            }
        }
    }

    #[test]
    fn extend_options() {
        for name in ["extend", "ex"] {
            let po = opts(&format!("{name}:1:fp:0.25:0.75"));
            assert!(po.extend.enabled);
            assert_eq!(
                po.extend.gravity,
                Gravity {
                    kind: GravityKind::FocusPoint,
                    x: 0.25,
                    y: 0.75
                }
            );
        }
        for name in ["extend_aspect_ratio", "extend_ar", "exar"] {
            let po = opts(&format!("{name}:1:we:-3"));
            assert!(po.extend_aspect_ratio.enabled && !po.extend.enabled);
            assert_eq!(
                po.extend_aspect_ratio.gravity,
                Gravity {
                    kind: GravityKind::West,
                    x: -3.0,
                    y: 0.0
                }
            );
        }
        bad_arg("ex:1:sm", "extend");
        bad_arg("ex:1:re", "extend");
        bad_arg("ex:1:ce:1:1:1", "extend");
        bad_arg("ex:1:ce:65536:0", "extend");
        bad_arg("exar:1:ce:0:-1e300", "extend_aspect_ratio");
        assert_eq!(opts("ex:1:ce:-65535:65535").extend.gravity.x, -65535.0);
        bad_arg("exar:1:fp:2:0", "extend_aspect_ratio");
    }

    #[test]
    fn gravity_forms() {
        for name in ["gravity", "g"] {
            for (arg, kind) in [
                ("ce", GravityKind::Center),
                ("no", GravityKind::North),
                ("so", GravityKind::South),
                ("ea", GravityKind::East),
                ("we", GravityKind::West),
                ("noea", GravityKind::NorthEast),
                ("nowe", GravityKind::NorthWest),
                ("soea", GravityKind::SouthEast),
                ("sowe", GravityKind::SouthWest),
                ("sm", GravityKind::Smart),
            ] {
                assert_eq!(opts(&format!("{name}:{arg}")).gravity.kind, kind);
            }
        }
        assert_eq!(
            opts("g:soea:10:-20").gravity,
            Gravity {
                kind: GravityKind::SouthEast,
                x: 10.0,
                y: -20.0
            }
        );
        assert_eq!(
            opts("g:fp:0.5:1").gravity,
            Gravity {
                kind: GravityKind::FocusPoint,
                x: 0.5,
                y: 1.0
            }
        );
        // Offsets survive a later kind-only gravity (imgproxy keeps them too)...
        assert_eq!(
            opts("g:no:5:6/g:so").gravity,
            Gravity {
                kind: GravityKind::South,
                x: 5.0,
                y: 6.0
            }
        );
        // ...but smart gravity resets them.
        assert_eq!(
            opts("g:no:5:6/g:sm").gravity,
            Gravity {
                kind: GravityKind::Smart,
                x: 0.0,
                y: 0.0
            }
        );
        for bad in [
            "g:re",
            "g:obj",
            "g:sm:1",
            "g:fp:0.5",
            "g:fp:0.5:1.5",
            "g:fp::0.5",
            "g:no:1:2:3",
            "g:no:x",
        ] {
            bad_arg(bad, "gravity");
        }
    }

    #[test]
    fn crop_forms() {
        for name in ["crop", "c"] {
            let po = opts(&format!("{name}:100:0.5"));
            assert_eq!(
                po.crop,
                Crop {
                    width: 100.0,
                    height: 0.5,
                    gravity: None
                }
            );
        }
        let po = opts("g:no:1:2/c:10:20:ea");
        assert_eq!(
            po.crop.gravity,
            Some(Gravity {
                kind: GravityKind::East,
                x: 1.0,
                y: 2.0
            })
        );
        assert_eq!(po.gravity.kind, GravityKind::North);
        assert_eq!(
            opts("c:10:20:fp:0.1:0.2").crop.gravity.unwrap().kind,
            GravityKind::FocusPoint
        );
        assert_eq!(
            opts("c:10:20:sm").crop.gravity.unwrap().kind,
            GravityKind::Smart
        );
        assert_eq!(
            opts("c:10:20/c::30").crop,
            Crop {
                width: 10.0,
                height: 30.0,
                gravity: None
            }
        );
        bad_arg("c:-1", "crop");
        bad_arg("c:1:1:re", "crop");
        bad_arg("c:1:1:ce:0:0:0", "crop");
    }

    #[test]
    fn trim_forms() {
        for name in ["trim", "t"] {
            let po = opts(&format!("{name}:5:ff0000:1:t"));
            assert!(po.trim.enabled);
            assert_eq!(po.trim.threshold, 5.0);
            assert_eq!(po.trim.color, Some(Color { r: 255, g: 0, b: 0 }));
            assert!(po.trim.equal_horizontal && po.trim.equal_vertical);
        }
        let po = opts("t:0");
        assert!(po.trim.enabled && po.trim.color.is_none());
        bad_arg("t:-1", "trim");
        bad_arg("t:1:red", "trim");
        bad_arg("t:1:fff:1:1:1", "trim");
    }

    #[test]
    fn padding_is_css_like() {
        let p = |o: &str| opts(o).padding;
        let pad = |top, right, bottom, left| Padding {
            top,
            right,
            bottom,
            left,
        };
        assert_eq!(p("padding:10"), pad(10, 10, 10, 10));
        assert_eq!(p("pd:10:20"), pad(10, 20, 10, 20));
        assert_eq!(p("pd:10:20:30"), pad(10, 20, 30, 20));
        assert_eq!(p("pd:10:20:30:40"), pad(10, 20, 30, 40));
        assert_eq!(p("pd:10/pd::5"), pad(10, 5, 10, 5));
        assert!(p("pd:10").is_enabled());
        assert!(!p("pd:10/pd:0").is_enabled());
        bad_arg("pd:1:2:3:4:5", "padding");
        assert_eq!(p("pd:65535"), pad(65535, 65535, 65535, 65535));
        bad_arg("pd:65536", "padding");
        bad_arg("pd:0:2147483648:0:2147483648", "padding");
        bad_arg("pd:4294967295:4294967295:0:0", "padding");
        bad_arg("pd:-1", "padding");
    }

    #[test]
    fn rotate_and_flip() {
        for name in ["rotate", "rot"] {
            assert_eq!(opts(&format!("{name}:90")).rotate, Rotate::R90);
        }
        assert_eq!(opts("rot:-90").rotate, Rotate::R270);
        assert_eq!(opts("rot:540").rotate, Rotate::R180);
        bad_arg("rot:45", "rotate");
        bad_arg("rot:90.0", "rotate");
        for name in ["flip", "fl"] {
            let po = opts(&format!("{name}:1:0"));
            assert!(po.flip.horizontal && !po.flip.vertical);
        }
        let po = opts("fl:1/fl::1");
        assert!(po.flip.horizontal && po.flip.vertical);
        bad_arg("fl:1:1:1", "flip");
    }

    #[test]
    fn background_forms() {
        let red = Some(Color { r: 255, g: 0, b: 0 });
        for name in ["background", "bg"] {
            assert_eq!(opts(&format!("{name}:255:0:0")).background, red);
            assert_eq!(opts(&format!("{name}:ff0000")).background, red);
            assert_eq!(opts(&format!("{name}:f00")).background, red);
        }
        // An empty background turns flattening off.
        assert_eq!(opts("bg:fff/bg:").background, None);
        assert_eq!(
            opts("bg:::0").background,
            Some(Color {
                r: 255,
                g: 255,
                b: 0
            })
        );
        bad_arg("bg:256:0:0", "background");
        bad_arg("bg:1:2", "background");
        bad_arg("bg:ff00", "background");
        bad_arg("bg:-1:0:0", "background");
    }

    #[test]
    fn effects() {
        for name in ["blur", "bl"] {
            assert_eq!(opts(&format!("{name}:2.5")).blur, 2.5);
        }
        for name in ["sharpen", "sh"] {
            assert_eq!(opts(&format!("{name}:0.7")).sharpen, 0.7);
        }
        for name in ["pixelate", "pix"] {
            assert_eq!(opts(&format!("{name}:8")).pixelate, 8);
        }
        bad_arg("bl:-1", "blur");
        bad_arg("bl:1e39", "blur");
        bad_arg("sh:x", "sharpen");
        bad_arg("pix:1.5", "pixelate");
    }

    #[test]
    fn watermark_forms() {
        for name in ["watermark", "wm"] {
            let wm = opts(&format!("{name}:0.5:soea:10:20:0.6")).watermark;
            assert!(wm.enabled);
            assert_eq!(wm.opacity, 0.5);
            assert_eq!(
                wm.position,
                Gravity {
                    kind: GravityKind::SouthEast,
                    x: 10.0,
                    y: 20.0
                }
            );
            assert_eq!(wm.scale, 0.6);
        }
        assert_eq!(
            opts("wm:1:re").watermark.position.kind,
            GravityKind::Replicate
        );
        assert!(!opts("wm:1/wm:0").watermark.enabled);
        // Pro-only trailing arguments are accepted and ignored.
        assert!(opts("wm:1:ce:0:0:0:x:y").watermark.enabled);
        bad_arg("wm:1.5", "watermark");
        bad_arg("wm:1:sm", "watermark");
        bad_arg("wm:1:fp", "watermark");
        bad_arg("wm:1:ce:0:0:-1", "watermark");
        bad_arg("wm:1:ce:0:0:0:0:0:0", "watermark");
    }

    #[test]
    fn quality_options() {
        for name in ["quality", "q"] {
            assert_eq!(opts(&format!("{name}:55")).quality, 55);
        }
        assert_eq!(opts("q:0").quality, 0);
        bad_arg("q:101", "quality");
        bad_arg("q:-1", "quality");
        for name in ["format_quality", "fq"] {
            let po = opts(&format!("{name}:jpg:70:webp:60"));
            assert_eq!(po.format_quality.get(&ImageFormat::Jpeg), Some(&70));
            assert_eq!(po.format_quality.get(&ImageFormat::Webp), Some(&60));
            assert_eq!(po.format_quality.get(&ImageFormat::Avif), Some(&63));
        }
        assert_eq!(opts("fq:").format_quality, defaults().format_quality);
        bad_arg("fq:jpg", "format_quality");
        bad_arg("fq:jpg:70:png", "format_quality");
        bad_arg("fq:xyz:70", "format_quality");
        bad_arg("fq:jpg:101", "format_quality");
        for name in ["max_bytes", "mb"] {
            assert_eq!(opts(&format!("{name}:10240")).max_bytes, 10240);
        }
        bad_arg("mb:-5", "max_bytes");
    }

    #[test]
    fn format_option_and_extension() {
        for name in ["format", "f", "ext"] {
            let req = parse(&format!("/{name}:webp/{SRC}")).unwrap();
            assert_eq!(req.options.format, Some(ImageFormat::Webp));
            assert_eq!(req.output_format, Some(ImageFormat::Webp));
        }
        // The extension wins over the option, as in imgproxy.
        let req = parse(&format!("/f:webp/{SRC}@avif")).unwrap();
        assert_eq!(
            (req.options.format, req.output_format),
            (Some(ImageFormat::Webp), Some(ImageFormat::Avif))
        );
        // `raw` ignores the extension.
        assert_eq!(
            parse(&format!("/raw:1/{SRC}@png")).unwrap().output_format,
            None
        );
        bad_arg("f:xyz", "format");
        let best = err("f:best");
        assert!(matches!(best, ParseError::Unsupported(_)), "{best:?}");
        assert_eq!(best.status(), 404);
        let e = parse(&format!("/{SRC}@xyz")).unwrap_err();
        assert!(
            matches!(e, ParseError::InvalidArgument { ref option, .. } if option == "extension")
        );
    }

    #[test]
    fn skip_processing() {
        for name in ["skip_processing", "skp"] {
            let po = opts(&format!("{name}:jpg:png/{name}:jpeg:svg"));
            assert_eq!(
                po.skip_processing,
                [ImageFormat::Jpeg, ImageFormat::Png, ImageFormat::Svg]
            );
        }
        bad_arg("skp:jpg:png:bad_format", "skip_processing");
    }

    #[test]
    fn handling_options() {
        for name in ["cachebuster", "cb"] {
            assert_eq!(opts(&format!("{name}:v123")).cachebuster, "v123");
        }
        bad_arg("cb:1:2", "cachebuster");
        for name in ["filename", "fn"] {
            assert_eq!(opts(&format!("{name}:puppy")).filename, "puppy");
            // "cHVwcHkgJiBraXR0ZW4" is base64url for "puppy & kitten".
            assert_eq!(
                opts(&format!("{name}:cHVwcHkgJiBraXR0ZW4:1")).filename,
                "puppy & kitten"
            );
        }
        assert_eq!(opts("fn:cHVwcHk:0").filename, "cHVwcHk");
        bad_arg("fn:***:1", "filename");
        bad_arg("fn:_w:1", "filename");
        bad_arg("fn:a:1:1", "filename");
    }

    #[test]
    fn expires() {
        for name in ["expires", "exp"] {
            assert_eq!(
                opts(&format!("{name}:32503669200")).expires,
                Some(32_503_669_200)
            );
            let e = err(&format!("{name}:1609448400"));
            assert_eq!(
                e,
                ParseError::Expired {
                    expires: 1_609_448_400,
                    now: NOW
                }
            );
            assert_eq!(e.status(), 404);
        }
        assert_eq!(opts(&format!("exp:{NOW}")).expires, Some(NOW));
        assert_eq!(opts("exp:0").expires, None);
        bad_arg("exp:soon", "expires");
    }

    // === presets ===

    #[test]
    fn presets_apply_in_order() {
        let cfg = with_presets("test1=rt:fill,test2=bl:0.2/q:50");
        let po = parse_with(&cfg, &format!("/preset:test1:test2/{SRC}"))
            .unwrap()
            .options;
        assert_eq!(po.resizing_type, ResizingType::Fill);
        assert_eq!((po.blur, po.quality), (0.2, 50));
        let po = parse_with(&cfg, &format!("/pr:test2/q:70/{SRC}"))
            .unwrap()
            .options;
        assert_eq!(po.quality, 70);
        let po = parse_with(&cfg, &format!("/q:70/pr:test2/{SRC}"))
            .unwrap()
            .options;
        assert_eq!(po.quality, 50);
        assert_eq!(
            parse_with(&cfg, &format!("/pr:nope/{SRC}")).unwrap_err(),
            ParseError::UnknownPreset("nope".into())
        );
    }

    #[test]
    fn default_preset_applies_first() {
        let cfg = with_presets("default=rt:fill/bl:0.2/q:50");
        let po = parse_with(&cfg, &format!("/quality:70/{SRC}"))
            .unwrap()
            .options;
        assert_eq!(po.resizing_type, ResizingType::Fill);
        assert_eq!((po.blur, po.quality), (0.2, 70));
        // Even with no options at all.
        assert_eq!(
            parse_with(&cfg, &format!("/{SRC}"))
                .unwrap()
                .options
                .quality,
            50
        );
    }

    #[test]
    fn nested_presets_and_diamonds_are_fine() {
        let cfg = with_presets("a=pr:b:c,b=pr:d/w:1,c=pr:d/h:2,d=q:9");
        let po = parse_with(&cfg, &format!("/pr:a:a/{SRC}")).unwrap().options;
        assert_eq!((po.width, po.height, po.quality), (1, 2, 9));
    }

    // A preset reaching itself must error rather than loop, both at start-up
    // validation and per request.
    #[test]
    fn recursive_presets_error() {
        let cfg = unvalidated("self=pr:self,a=w:1/pr:b,b=pr:a");
        let e = cfg.validate().unwrap_err();
        assert!(
            matches!(
                e,
                ParserConfigError::InvalidPreset {
                    source: ParseError::RecursivePreset(_),
                    ..
                }
            ),
            "{e:?}"
        );
        for (preset, culprit) in [("self", "self"), ("a", "a"), ("b", "b")] {
            assert_eq!(
                parse_with(&cfg, &format!("/pr:{preset}/{SRC}")).unwrap_err(),
                ParseError::RecursivePreset(culprit.into())
            );
        }
    }

    #[test]
    fn preset_depth_and_work_are_bounded() {
        // A 21-deep chain has no cycle but exceeds the depth limit.
        let chain: Vec<String> = (0..20).map(|i| format!("p{i}=pr:p{}", i + 1)).collect();
        let cfg = unvalidated(&format!("{},p20=w:1", chain.join(",")));
        assert!(cfg.validate().is_err());
        let e = parse_with(&cfg, &format!("/pr:p0/{SRC}")).unwrap_err();
        assert!(matches!(e, ParseError::InvalidArgument { .. }), "{e:?}");
        // Exponential fan-out (4^10 expansions) runs into the work budget.
        let fan: Vec<String> = (0..10)
            .map(|i| format!("f{i}=pr:f{0}:f{0}:f{0}:f{0}", i + 1))
            .collect();
        let cfg = unvalidated(&format!("{},f10=w:1", fan.join(",")));
        let e = parse_with(&cfg, &format!("/pr:f0/{SRC}")).unwrap_err();
        assert!(matches!(e, ParseError::InvalidPath(_)), "{e:?}");
        // So does a URL with too many options.
        let many = "w:1/".repeat(MAX_OPTIONS + 1);
        assert!(matches!(
            parse(&format!("/{many}{SRC}")).unwrap_err(),
            ParseError::InvalidPath(_)
        ));
        assert!(parse(&format!("/{}{SRC}", "w:1/".repeat(MAX_OPTIONS))).is_ok());
    }

    #[test]
    fn invalid_preset_fails_validation() {
        let mut cfg = ParserConfig::default();
        cfg.presets.add_list("bad=w:x", ",", ":").unwrap();
        let e = cfg.validate().unwrap_err();
        assert_eq!(
            e.to_string(),
            "preset `bad` is invalid: invalid `width` argument: `x` is not a non-negative integer in range"
        );
        let cfg = ParserConfig {
            arguments_separator: String::new(),
            ..ParserConfig::default()
        };
        assert_eq!(
            cfg.validate(),
            Err(ParserConfigError::EmptyArgumentsSeparator)
        );
    }

    #[test]
    fn only_presets_mode() {
        let mut cfg = with_presets("test1=bl:0.2,test2=q:50");
        cfg.only_presets = true;
        let po = parse_with(&cfg, &format!("/test1:test2/{SRC}"))
            .unwrap()
            .options;
        assert_eq!((po.blur, po.quality), (0.2, 50));
        let enc = "aHR0cDovL2ltYWdlcy5kZXYvbG9yZW0vaXBzdW0uanBnP3BhcmFtPXZhbHVl";
        let req = parse_with(&cfg, &format!("/test1:test2/{enc}.png")).unwrap();
        assert_eq!(
            req.source.url,
            "http://images.dev/lorem/ipsum.jpg?param=value"
        );
        assert_eq!(req.output_format, Some(ImageFormat::Png));
        // Option syntax is just an unknown preset name here.
        assert_eq!(
            parse_with(&cfg, &format!("/w:100/{SRC}")).unwrap_err(),
            ParseError::UnknownPreset("w".into())
        );
    }

    #[test]
    fn allowed_options() {
        let mut cfg = with_presets("test1=bl:0.2");
        cfg.allowed_options = ["w", "h", "pr"].map(String::from).to_vec();
        for (options, expected) in [
            ("w:100/h:200", None),
            ("w:100/h:200/blur:10", Some("blur")),
            ("w:100/h:200/pr:test1", None),
            ("w:100/h:200/pr:test1/blur:10", Some("blur")),
            ("width:100", Some("width")),
            ("nonsense:1", Some("nonsense")),
        ] {
            let got = parse_with(&cfg, &format!("/{options}/{SRC}")).err();
            assert_eq!(
                got,
                expected.map(|o| ParseError::ForbiddenOption(o.into())),
                "{options}"
            );
        }
    }

    #[test]
    fn custom_arguments_separator() {
        let mut cfg = ParserConfig {
            arguments_separator: ",".into(),
            ..ParserConfig::default()
        };
        cfg.presets.add_list("p=q,42;o=w,7", ";", ",").unwrap();
        cfg.validate().unwrap();
        let po = parse_with(&cfg, &format!("/size,100,100,1/pr,p,o/{SRC}"))
            .unwrap()
            .options;
        assert_eq!(
            (po.width, po.height, po.enlarge, po.quality),
            (7, 100, true, 42)
        );
        // With `,` as separator, `w:100` is not an option but the source start.
        assert!(parse_with(&cfg, "/w:100/plain/http://x/a").is_err());
    }

    // === sources through the whole parser ===

    #[test]
    fn source_forms() {
        let req = parse("/w:10/plain/http://images.dev/lorem/ipsum.jpg@png").unwrap();
        assert_eq!(
            (req.source.url.as_str(), req.output_format),
            ("http://images.dev/lorem/ipsum.jpg", Some(ImageFormat::Png))
        );
        let req = parse("/plain/http%3A%2F%2Fimages.dev%2Fa.jpg%3Fx%3D1%26y%3D2@webp").unwrap();
        assert_eq!(req.source.url, "http://images.dev/a.jpg?x=1&y=2");
        let req = parse("/w:10/aHR0cHM6Ly9p/bWFnZXMuZGV2/L2EuanBn.jpg").unwrap();
        assert_eq!(
            (req.source.url.as_str(), req.source.scheme),
            ("https://images.dev/a.jpg", Scheme::Https)
        );
        assert_eq!(req.output_format, Some(ImageFormat::Jpeg));
        let req = parse("/plain/s3://bucket/key.png").unwrap();
        assert_eq!(req.source.scheme, Scheme::S3);
        let e = parse("/enc/abcdef").unwrap_err();
        assert!(matches!(e, ParseError::Unsupported(_)));
        let e = parse("/plain/ftp://x/a.png").unwrap_err();
        assert!(matches!(e, ParseError::Unsupported(_)));

        let cfg = ParserConfig {
            base_url: "http://images.dev/".into(),
            base64_url_includes_filename: true,
            ..ParserConfig::default()
        };
        let req = parse_with(&cfg, "/w:1/bG9yZW0vaXBzdW0uanBn.png/puppy.jpg").unwrap();
        assert_eq!(req.source.url, "http://images.dev/lorem/ipsum.jpg");
        assert_eq!(req.output_format, Some(ImageFormat::Png));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        // No input makes the parser panic, whatever the bytes.
        #[test]
        fn parse_path_never_panics_on_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let path = String::from_utf8_lossy(&bytes);
            let _ = parse_path(&path, &ParserConfig::default(), NOW);
        }

        // Inputs shaped like real URLs reach the option parsers, including
        // presets, signing, and other separators.
        #[test]
        fn parse_path_never_panics_on_url_like_input(
            sig in "[A-Za-z0-9_-]{0,44}",
            options in proptest::collection::vec("[a-z_:-]{1,6}(:[-+.a-zA-Z0-9%]{0,5}){0,4}", 0..6),
            source in "(plain/)?[a-zA-Z0-9:/%@._=-]{0,40}",
            now in proptest::prelude::any::<i64>(),
            signed in proptest::prelude::any::<bool>(),
        ) {
            let mut cfg = unvalidated("default=q:1,a=pr:b/w:5,b=h:4,c=pr:c");
            if signed {
                cfg.signature = SignatureVerifier::from_env(DOCS_KEY, DOCS_SALT, 8, "").unwrap();
            }
            let path = format!("/{sig}/{}/{source}", options.join("/"));
            let _ = parse_path(&path, &cfg, now);
            cfg.only_presets = true;
            let _ = parse_path(&path, &cfg, now);
        }
    }
}
