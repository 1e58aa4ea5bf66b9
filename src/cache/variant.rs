//! Format negotiation: which of the formats the upstream picks from `Accept` a request may
//! get, and the key its result is stored under.
//!
//! imgproxy (and the bundled worker) negotiate WebP and AVIF by looking for the substrings
//! `image/webp` and `image/avif` in the request's `Accept` header, for each format whose
//! `IMGPROXY_AUTO_*` or `IMGPROXY_ENFORCE_*` flag is on; q-values mean nothing to them. With
//! only the `AUTO_` flag, a format written in the URL (`@jpg`, `.png`, `f:png`) is kept;
//! `ENFORCE_` overrides it. So every `Accept` header falls, without loss, into one of four
//! [`Class`]es: which of the negotiated formats it names that the URL leaves open.
//!
//! One class always gets the same result for one path, so each class has its key
//! ([`Variant::key`]): the class with no negotiated format keeps the plain key, `S3_FOLDER +
//! md5(path)`, as when nothing is negotiated, and the others add `-webp`, `-avif` or
//! `-avif-webp`. The upstream is asked with the class's own `Accept`
//! ([`Variant::accept`]), so what it renders is what the key promises even if it reads the
//! header differently from us, and a result in a negotiated format the class does not name
//! is never stored ([`Variant::admits`]).

use http::HeaderValue;

/// How the upstream treats one negotiable format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Never picked from `Accept`.
    #[default]
    Off,
    /// Picked from `Accept` when the URL names no format (`IMGPROXY_AUTO_*`).
    Auto,
    /// Picked from `Accept` even over a format the URL names (`IMGPROXY_ENFORCE_*`).
    Enforce,
}

impl Mode {
    /// The mode of a format from its two imgproxy flags.
    pub fn from_flags(auto: bool, enforce: bool) -> Mode {
        match (auto, enforce) {
            (_, true) => Mode::Enforce,
            (true, false) => Mode::Auto,
            (false, false) => Mode::Off,
        }
    }
}

/// What the proxy needs to know of the upstream's URLs to tell whether one names its format:
/// imgproxy's `IMGPROXY_ARGUMENTS_SEPARATOR` and `IMGPROXY_BASE64_URL_INCLUDES_FILENAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlShape {
    pub separator: String,
    pub base64_includes_filename: bool,
}

impl Default for UrlShape {
    fn default() -> UrlShape {
        UrlShape {
            separator: ":".into(),
            base64_includes_filename: false,
        }
    }
}

/// Which formats the upstream negotiates, and how.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Negotiation {
    pub webp: Mode,
    pub avif: Mode,
    pub url: UrlShape,
}

/// A negotiated format's part of a request: the formats its `Accept` names that the upstream
/// may pick for it. The empty class is the baseline every client accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Class {
    pub avif: bool,
    pub webp: bool,
}

impl Class {
    pub const NONE: Class = Class {
        avif: false,
        webp: false,
    };
    /// Every class, the baseline first.
    pub const ALL: [Class; 4] = [
        Class::NONE,
        Class {
            avif: false,
            webp: true,
        },
        Class {
            avif: true,
            webp: false,
        },
        Class {
            avif: true,
            webp: true,
        },
    ];

    /// The class's name in keys, `X-Cache` and metrics.
    pub fn name(self) -> &'static str {
        match (self.avif, self.webp) {
            (false, false) => "none",
            (false, true) => "webp",
            (true, false) => "avif",
            (true, true) => "avif-webp",
        }
    }

    /// The `Accept` the upstream is asked with: exactly the class's formats.
    fn accept(self) -> HeaderValue {
        HeaderValue::from_static(match (self.avif, self.webp) {
            (false, false) => "*/*",
            (false, true) => "image/webp,*/*",
            (true, false) => "image/avif,*/*",
            (true, true) => "image/avif,image/webp,*/*",
        })
    }
}

/// The format a URL names, as far as negotiation cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    /// None: the upstream picks (from `Accept`, the source, `IMGPROXY_PREFERRED_FORMATS`).
    Nothing,
    Webp,
    Avif,
    /// Another format (`jpg`, `png`, ...).
    Other,
}

/// What one request's result may depend on besides its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Nothing is negotiated: the plain key, and the request goes up as it came.
    Fixed,
    /// Negotiated: the class of the request's `Accept`, and the format its URL names.
    Negotiated { class: Class, named: Named },
}

impl Negotiation {
    /// Whether any format is negotiated.
    pub fn is_on(&self) -> bool {
        self.webp != Mode::Off || self.avif != Mode::Off
    }

    /// The variant of a request for `path` with `accept` (the first `Accept` header, as
    /// imgproxy reads it).
    pub fn variant(&self, path: &str, accept: Option<&HeaderValue>) -> Variant {
        if !self.is_on() {
            return Variant::Fixed;
        }
        let named = named_format(path, &self.url);
        let accept = accept.map_or(&b""[..], HeaderValue::as_bytes);
        let picks = |mode: Mode, mime: &[u8]| {
            let open = match mode {
                Mode::Off => false,
                Mode::Auto => named == Named::Nothing,
                Mode::Enforce => true,
            };
            open && contains(accept, mime)
        };
        Variant::Negotiated {
            class: Class {
                avif: picks(self.avif, b"image/avif"),
                webp: picks(self.webp, b"image/webp"),
            },
            named,
        }
    }
}

impl Variant {
    /// The key for the variant of a result whose plain key is `plain`.
    pub fn key(&self, plain: &str) -> String {
        match self {
            Variant::Negotiated { class, .. } if *class != Class::NONE => {
                format!("{plain}-{}", class.name())
            }
            _ => plain.to_owned(),
        }
    }

    /// The class, when negotiation is on.
    pub fn class(&self) -> Option<Class> {
        match self {
            Variant::Fixed => None,
            Variant::Negotiated { class, .. } => Some(*class),
        }
    }

    /// The `Accept` to send upstream in place of the client's; `None`: leave it.
    pub fn accept(&self) -> Option<HeaderValue> {
        self.class().map(Class::accept)
    }

    /// Whether a result of `content_type` may be stored for this variant: one in WebP or AVIF
    /// only when the class names that format or the URL asked for it. Anything else every
    /// client of the class takes.
    pub fn admits(&self, content_type: &[u8]) -> bool {
        let Variant::Negotiated { class, named } = *self else {
            return true;
        };
        let essence = content_type
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        if essence.eq_ignore_ascii_case(b"image/webp") {
            class.webp || named == Named::Webp
        } else if essence.eq_ignore_ascii_case(b"image/avif") {
            class.avif || named == Named::Avif
        } else {
            true
        }
    }
}

/// Every key a result for `plain` may be stored under, whatever the negotiation: what a purge
/// removes.
pub fn every_key(plain: &str) -> Vec<String> {
    Class::ALL
        .iter()
        .map(|&class| {
            Variant::Negotiated {
                class,
                named: Named::Nothing,
            }
            .key(plain)
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The format an imgproxy URL path names: in its `format`/`f`/`ext` option, or as the
/// extension after the source (`@png` for a plain URL, `.png` for a base64 one), which wins.
/// Formats set by presets are not seen: such a result is then stored once per class, which
/// costs room and renders but never serves a format a client cannot take.
pub fn named_format(path: &str, shape: &UrlShape) -> Named {
    let path = path.strip_prefix('/').unwrap_or(path);
    // The signature, then the options and the source.
    let Some((_, rest)) = path.split_once('/') else {
        return Named::Nothing;
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let sep = shape.separator.as_str();
    let escaped_colon = sep == ":";
    let is_option = |s: &str| {
        !sep.is_empty()
            && (s.contains(sep) || (escaped_colon && s.to_ascii_lowercase().contains("%3a")))
    };
    let count = segments.iter().take_while(|s| is_option(s)).count();
    let (options, source) = segments.split_at(count);
    let mut named = None;
    for option in options {
        let option = if escaped_colon {
            option.replace("%3A", ":").replace("%3a", ":")
        } else {
            (*option).to_owned()
        };
        let mut args = option.split(sep);
        if let (Some("f" | "format" | "ext"), Some(format)) = (args.next(), args.next()) {
            named = Some(classify(format));
        }
    }
    let extension = match source {
        ["plain", rest @ ..] if !rest.is_empty() => {
            rest.join("/").split_once('@').map(|(_, e)| e.to_owned())
        }
        [head @ .., _] if shape.base64_includes_filename && !head.is_empty() => {
            head.concat().split_once('.').map(|(_, e)| e.to_owned())
        }
        _ => source.concat().split_once('.').map(|(_, e)| e.to_owned()),
    };
    match extension.filter(|e| !e.is_empty()) {
        Some(extension) => classify(&extension),
        None => named.unwrap_or(Named::Nothing),
    }
}

fn classify(format: &str) -> Named {
    match format.to_ascii_lowercase().as_str() {
        "" => Named::Nothing,
        "webp" => Named::Webp,
        "avif" => Named::Avif,
        _ => Named::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME: &str = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8";
    const SAFARI_15: &str =
        "image/webp,image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5";

    fn negotiation(webp: Mode, avif: Mode) -> Negotiation {
        Negotiation {
            webp,
            avif,
            url: UrlShape::default(),
        }
    }

    fn class_of(n: &Negotiation, path: &str, accept: &str) -> Class {
        n.variant(path, Some(&HeaderValue::from_str(accept).unwrap()))
            .class()
            .unwrap()
    }

    #[test]
    fn nothing_negotiated_keeps_the_plain_key_and_the_clients_accept() {
        let off = Negotiation::default();
        let variant = off.variant("/sig/rs:fit:100/plain/a.jpg", None);
        assert_eq!(variant, Variant::Fixed);
        assert_eq!(variant.key("k"), "k");
        assert_eq!(variant.accept(), None);
        assert!(variant.admits(b"image/avif"));
    }

    #[test]
    fn the_class_is_what_accept_names_of_the_negotiated_formats() {
        let both = negotiation(Mode::Auto, Mode::Auto);
        let path = "/sig/rs:fit:100/plain/a.jpg";
        let cases = [
            (CHROME, "avif-webp"),
            (SAFARI_15, "webp"),
            ("*/*", "none"),
            ("image/jpeg", "none"),
            ("", "none"),
            ("image/avif;q=0.1", "avif"),
            // imgproxy matches case-sensitively.
            ("IMAGE/WEBP", "none"),
        ];
        for (accept, name) in cases {
            assert_eq!(class_of(&both, path, accept).name(), name, "{accept}");
        }
        let webp_only = negotiation(Mode::Auto, Mode::Off);
        assert_eq!(class_of(&webp_only, path, CHROME).name(), "webp");
    }

    #[test]
    fn a_format_in_the_url_closes_auto_but_not_enforce() {
        let auto = negotiation(Mode::Auto, Mode::Auto);
        let enforce = negotiation(Mode::Enforce, Mode::Auto);
        for path in [
            "/sig/rs:fit:100/plain/a.jpg@png",
            "/sig/rs:fit:100/f:png/plain/a.jpg",
            "/sig/format:jpg/aHR0cDovL2EuanBn.png",
            "/sig/ext%3Apng/plain/a.jpg",
        ] {
            assert_eq!(class_of(&auto, path, CHROME), Class::NONE, "{path}");
            assert_eq!(class_of(&enforce, path, CHROME).name(), "webp", "{path}");
        }
    }

    #[test]
    fn the_extension_wins_over_the_format_option() {
        let shape = UrlShape::default();
        assert_eq!(
            named_format("/s/f:png/plain/a.jpg@webp", &shape),
            Named::Webp
        );
        assert_eq!(named_format("/s/f:avif/plain/a.jpg", &shape), Named::Avif);
        assert_eq!(
            named_format("/s/rs:fit:1/plain/a.jpg", &shape),
            Named::Nothing
        );
        assert_eq!(
            named_format("/s/rs:fit:1/plain/a.jpg@", &shape),
            Named::Nothing
        );
        assert_eq!(named_format("/s/aHR0cDovL2EuanBn", &shape), Named::Nothing);
        assert_eq!(named_format("", &shape), Named::Nothing);
        let filenames = UrlShape {
            base64_includes_filename: true,
            ..UrlShape::default()
        };
        assert_eq!(
            named_format("/s/aHR0cDovL2EuanBn/photo.jpg", &filenames),
            Named::Nothing
        );
        let pipes = UrlShape {
            separator: "|".into(),
            ..UrlShape::default()
        };
        assert_eq!(named_format("/s/f|webp/plain/a:b", &pipes), Named::Webp);
    }

    /// The documented key rule, with its worked vectors.
    #[test]
    fn variant_keys_add_the_class_to_the_plain_key() {
        let both = negotiation(Mode::Auto, Mode::Auto);
        let path = "/sig/rs:fit:100/plain/a.jpg";
        let key = |accept: &str| {
            both.variant(path, Some(&HeaderValue::from_str(accept).unwrap()))
                .key("c9009a400f110797b2710ce2a5bd60a4")
        };
        assert_eq!(key("*/*"), "c9009a400f110797b2710ce2a5bd60a4");
        assert_eq!(key(SAFARI_15), "c9009a400f110797b2710ce2a5bd60a4-webp");
        assert_eq!(key("image/avif"), "c9009a400f110797b2710ce2a5bd60a4-avif");
        assert_eq!(key(CHROME), "c9009a400f110797b2710ce2a5bd60a4-avif-webp");
        assert_eq!(
            every_key("k"),
            ["k", "k-webp", "k-avif", "k-avif-webp"].map(String::from)
        );
    }

    #[test]
    fn the_upstream_is_asked_with_the_class_alone() {
        let both = negotiation(Mode::Auto, Mode::Enforce);
        let accept = |accept: &str| {
            both.variant(
                "/s/plain/a.jpg",
                Some(&HeaderValue::from_str(accept).unwrap()),
            )
            .accept()
            .unwrap()
        };
        assert_eq!(accept(CHROME), "image/avif,image/webp,*/*");
        assert_eq!(accept(SAFARI_15), "image/webp,*/*");
        assert_eq!(accept("text/html"), "*/*");
    }

    #[test]
    fn a_negotiated_format_the_class_does_not_name_is_refused() {
        let both = negotiation(Mode::Auto, Mode::Auto);
        let safari = both.variant("/s/plain/a.jpg", Some(&HeaderValue::from_static(SAFARI_15)));
        assert!(safari.admits(b"image/webp"));
        assert!(safari.admits(b"image/jpeg"));
        assert!(!safari.admits(b"image/avif"));
        assert!(!safari.admits(b"Image/AVIF; charset=x"));
        let named = both.variant("/s/plain/a.jpg@avif", None);
        assert!(named.admits(b"image/avif"));
        assert!(!named.admits(b"image/webp"));
    }
}
