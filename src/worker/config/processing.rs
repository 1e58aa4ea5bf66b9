//! The processing section: the engine's limits, format negotiation and watermark. What it
//! reads is an [`EngineConfig`], whose `Default` holds the defaults; nothing is copied later.

use std::sync::Arc;

use base64::Engine as _;

use super::env::Env;
use super::parse::{formats, megapixels};
use crate::settings::{SettingsError, boolean, invalid, number, positive};
use crate::worker::engine::{self, EngineConfig};
use crate::worker::options::Defaults;

impl Env {
    /// The engine's settings, with the option `defaults` the URL parser uses too.
    pub(super) fn processing(&self, defaults: Defaults) -> Result<EngineConfig, SettingsError> {
        let d = EngineConfig::default();
        let max_src_resolution = megapixels(
            "IMGPROXY_MAX_SRC_RESOLUTION",
            self.imgproxy_max_src_resolution.as_deref(),
            d.max_src_resolution,
        )?;
        if max_src_resolution <= 0.0 {
            return Err(invalid(
                "IMGPROXY_MAX_SRC_RESOLUTION",
                &max_src_resolution.to_string(),
                "must be greater than 0",
            ));
        }
        let max_animation_frames = positive(
            "IMGPROXY_MAX_ANIMATION_FRAMES",
            number(
                "IMGPROXY_MAX_ANIMATION_FRAMES",
                self.imgproxy_max_animation_frames.as_deref(),
                d.max_animation_frames,
            )?,
        )?;
        let watermark = self.watermark()?;
        Ok(EngineConfig {
            defaults,
            max_src_resolution,
            max_result_dimension: number(
                "IMGPROXY_MAX_RESULT_DIMENSION",
                self.imgproxy_max_result_dimension.as_deref(),
                d.max_result_dimension,
            )?,
            max_jpeg_scans: number(
                "IMGPROXY_MAX_JPEG_SCANS",
                self.imgproxy_max_jpeg_scans.as_deref(),
                d.max_jpeg_scans,
            )?,
            max_svg_filter_megapixels: megapixels(
                "IMGPROXY_MAX_SVG_FILTER_MEGAPIXELS",
                self.imgproxy_max_svg_filter_megapixels.as_deref(),
                d.max_svg_filter_megapixels,
            )?,
            max_animation_frames,
            max_animation_frame_resolution: megapixels(
                "IMGPROXY_MAX_ANIMATION_FRAME_RESOLUTION",
                self.imgproxy_max_animation_frame_resolution.as_deref(),
                d.max_animation_frame_resolution,
            )?,
            auto_webp: boolean(
                "IMGPROXY_AUTO_WEBP",
                self.imgproxy_auto_webp.as_deref(),
                d.auto_webp,
            )?,
            enforce_webp: boolean(
                "IMGPROXY_ENFORCE_WEBP",
                self.imgproxy_enforce_webp.as_deref(),
                d.enforce_webp,
            )?,
            auto_avif: boolean(
                "IMGPROXY_AUTO_AVIF",
                self.imgproxy_auto_avif.as_deref(),
                d.auto_avif,
            )?,
            enforce_avif: boolean(
                "IMGPROXY_ENFORCE_AVIF",
                self.imgproxy_enforce_avif.as_deref(),
                d.enforce_avif,
            )?,
            watermark: watermark.map(Arc::new),
            watermark_opacity: self.watermark_opacity(d.watermark_opacity)?,
            preferred_formats: match &self.imgproxy_preferred_formats {
                None => d.preferred_formats,
                Some(raw) => {
                    let formats = formats("IMGPROXY_PREFERRED_FORMATS", raw)?;
                    if formats.is_empty() {
                        return Err(invalid(
                            "IMGPROXY_PREFERRED_FORMATS",
                            raw,
                            "at least one format is needed",
                        ));
                    }
                    formats
                }
            },
        })
    }

    /// The watermark image from `IMGPROXY_WATERMARK_DATA` (first) or `_PATH`, checked once
    /// here so a bad one stops start-up instead of failing every `watermark` request.
    fn watermark(&self) -> Result<Option<Vec<u8>>, SettingsError> {
        let watermark = match (&self.imgproxy_watermark_data, &self.imgproxy_watermark_path) {
            (Some(data), _) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .map_err(|e| {
                        // The image itself would be a useless wall of text in the message.
                        invalid(
                            "IMGPROXY_WATERMARK_DATA",
                            "(base64 data)",
                            format!("not base64: {e}"),
                        )
                    })?,
            ),
            (None, Some(path)) => Some(
                std::fs::read(path)
                    .map_err(|e| invalid("IMGPROXY_WATERMARK_PATH", path, e.to_string()))?,
            ),
            (None, None) => None,
        };
        if let Some(image) = &watermark {
            let (var, shown) = match &self.imgproxy_watermark_path {
                Some(path) if self.imgproxy_watermark_data.is_none() => {
                    ("IMGPROXY_WATERMARK_PATH", path.as_str())
                }
                _ => ("IMGPROXY_WATERMARK_DATA", "(base64 data)"),
            };
            engine::check_watermark(image)
                .map_err(|e| invalid(var, shown, format!("not a usable image: {e}")))?;
        }
        Ok(watermark)
    }

    fn watermark_opacity(&self, default: f64) -> Result<f64, SettingsError> {
        let Some(raw) = &self.imgproxy_watermark_opacity else {
            return Ok(default);
        };
        raw.trim()
            .parse::<f64>()
            .ok()
            .filter(|o| *o > 0.0 && *o <= 1.0)
            .ok_or_else(|| invalid("IMGPROXY_WATERMARK_OPACITY", raw, "must be > 0 and ≤ 1"))
    }
}

#[cfg(test)]
mod tests {
    use crate::settings::FromVars;
    use crate::worker::config::WorkerConfig;
    use crate::worker::engine::EngineConfig;
    use crate::worker::options::ImageFormat;

    #[test]
    fn engine_config_carries_the_worker_settings() {
        let config = WorkerConfig::from_vars(
            [
                ("IMGPROXY_MAX_SRC_RESOLUTION", "2.5"),
                ("IMGPROXY_AUTO_AVIF", "true"),
                // A 2×2 PNG.
                (
                    "IMGPROXY_WATERMARK_DATA",
                    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAEElEQVR4nGP4z8AARAwQCgAf7gP9i18U1AAAAABJRU5ErkJggg==",
                ),
                ("IMGPROXY_WATERMARK_OPACITY", "0.5"),
                ("IMGPROXY_PREFERRED_FORMATS", "webp,png"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        )
        .unwrap();
        let engine = &config.processing;
        assert_eq!(engine.max_src_resolution, 2.5);
        assert!(engine.auto_avif && !engine.auto_webp);
        assert_eq!(
            engine.watermark.as_deref().map(|w| &w[1..4]),
            Some(&b"PNG"[..])
        );
        assert_eq!(engine.watermark_opacity, 0.5);
        assert_eq!(
            engine.preferred_formats,
            vec![ImageFormat::Webp, ImageFormat::Png]
        );
        let defaults = WorkerConfig::from_vars(Vec::new()).unwrap();
        let engine = &defaults.processing;
        assert_eq!(
            engine.preferred_formats,
            EngineConfig::default().preferred_formats
        );
        assert_eq!(engine.watermark_opacity, 1.0);
    }
}
