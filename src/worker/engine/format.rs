//! Which format the result is written in, by imgproxy's rules: an explicit format (URL
//! extension or `format` option) wins unless `enforce_*` overrides it for a client that
//! accepts WebP/AVIF; with none, `auto_*` picks from `Accept`, then the source format if it
//! is a preferred one, then the first preferred format that can hold the image.

use super::EngineConfig;
use super::encode::can_save;
use crate::worker::options::ImageFormat;

/// `IMGPROXY_PREFERRED_FORMATS`: formats a source may keep as the result format; the first
/// that fits is used for the others.
pub const DEFAULT_PREFERRED_FORMATS: [ImageFormat; 3] =
    [ImageFormat::Jpeg, ImageFormat::Png, ImageFormat::Gif];

/// What the choice depends on besides configuration.
#[derive(Debug, Clone, Copy)]
pub struct FormatInputs<'a> {
    /// From the URL's extension or the `format` option.
    pub requested: Option<ImageFormat>,
    /// The request's `Accept` header.
    pub accept: Option<&'a str>,
    pub source: ImageFormat,
    /// The source has (and we keep) more than one frame.
    pub animated: bool,
    /// The result will have transparent pixels unless flattened.
    pub expect_alpha: bool,
}

pub fn supports_animation(format: ImageFormat) -> bool {
    matches!(format, ImageFormat::Gif | ImageFormat::Webp)
}

pub fn supports_alpha(format: ImageFormat) -> bool {
    !matches!(format, ImageFormat::Jpeg | ImageFormat::Bmp)
}

/// Picks the result format.
pub fn choose(inputs: &FormatInputs<'_>, config: &EngineConfig) -> ImageFormat {
    let accepts = |mime: &str| inputs.accept.is_some_and(|a| a.contains(mime));
    let prefer_avif = accepts("image/avif") && (config.auto_avif || config.enforce_avif);
    let enforce_avif = accepts("image/avif") && config.enforce_avif;
    let prefer_webp = accepts("image/webp") && (config.auto_webp || config.enforce_webp);
    let enforce_webp = accepts("image/webp") && config.enforce_webp;

    match inputs.requested {
        None if prefer_avif && !inputs.animated => ImageFormat::Avif,
        None if prefer_webp => ImageFormat::Webp,
        None if config.preferred_formats.contains(&inputs.source) && can_save(inputs.source) => {
            inputs.source
        }
        None => best_preferred(inputs, config),
        Some(_) if enforce_avif && !inputs.animated => ImageFormat::Avif,
        Some(_) if enforce_webp => ImageFormat::Webp,
        Some(requested) => requested,
    }
}

fn best_preferred(inputs: &FormatInputs<'_>, config: &EngineConfig) -> ImageFormat {
    let preferred = config
        .preferred_formats
        .iter()
        .copied()
        .filter(|&f| can_save(f))
        .collect::<Vec<_>>();
    preferred
        .iter()
        .copied()
        .find(|&f| {
            (!inputs.animated || supports_animation(f))
                && (!inputs.expect_alpha || supports_alpha(f))
        })
        .or_else(|| preferred.first().copied())
        .unwrap_or(ImageFormat::Jpeg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(requested: Option<ImageFormat>, accept: Option<&str>) -> FormatInputs<'_> {
        FormatInputs {
            requested,
            accept,
            source: ImageFormat::Jpeg,
            animated: false,
            expect_alpha: false,
        }
    }

    #[test]
    fn explicit_format_wins_without_enforce() {
        let config = EngineConfig {
            auto_webp: true,
            ..EngineConfig::default()
        };
        let i = inputs(Some(ImageFormat::Png), Some("image/webp,*/*"));
        assert_eq!(choose(&i, &config), ImageFormat::Png);
    }

    #[test]
    fn auto_formats_follow_accept() {
        let config = EngineConfig {
            auto_webp: true,
            auto_avif: true,
            ..EngineConfig::default()
        };
        assert_eq!(
            choose(&inputs(None, Some("image/avif,image/webp")), &config),
            ImageFormat::Avif
        );
        assert_eq!(
            choose(&inputs(None, Some("image/webp")), &config),
            ImageFormat::Webp
        );
        assert_eq!(
            choose(&inputs(None, Some("image/png")), &config),
            ImageFormat::Jpeg
        );
        assert_eq!(choose(&inputs(None, None), &config), ImageFormat::Jpeg);
        // AVIF can't hold animation: WebP instead.
        let mut anim = inputs(None, Some("image/avif,image/webp"));
        anim.animated = true;
        anim.source = ImageFormat::Gif;
        assert_eq!(choose(&anim, &config), ImageFormat::Webp);
    }

    #[test]
    fn enforce_overrides_explicit() {
        let config = EngineConfig {
            enforce_webp: true,
            ..EngineConfig::default()
        };
        assert_eq!(
            choose(&inputs(Some(ImageFormat::Png), Some("image/webp")), &config),
            ImageFormat::Webp
        );
        assert_eq!(
            choose(&inputs(Some(ImageFormat::Png), Some("image/png")), &config),
            ImageFormat::Png
        );
    }

    #[test]
    fn source_format_kept_when_preferred_else_best_fit() {
        let config = EngineConfig::default();
        let mut i = inputs(None, None);
        i.source = ImageFormat::Png;
        assert_eq!(choose(&i, &config), ImageFormat::Png);
        i.source = ImageFormat::Webp;
        assert_eq!(choose(&i, &config), ImageFormat::Jpeg);
        i.expect_alpha = true;
        assert_eq!(choose(&i, &config), ImageFormat::Png);
        i.animated = true;
        assert_eq!(choose(&i, &config), ImageFormat::Gif);
    }
}
