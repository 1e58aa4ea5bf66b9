//! The URL parser's section: signatures, presets, allowed options and the option defaults
//! (`IMGPROXY_QUALITY`, `IMGPROXY_FORMAT_QUALITY`, metadata and rotation).

use std::collections::BTreeMap;

use super::env::Env;
use super::parse::formats;
use crate::settings::{SettingsError, boolean, invalid, list, number};
use crate::worker::options::{
    DEFAULT_FORMAT_QUALITY, DEFAULT_QUALITY, Defaults, FormatError, ImageFormat,
};
use crate::worker::presets::{DEFAULT_PRESETS_SEPARATOR, Presets};
use crate::worker::signature::{DEFAULT_SIGNATURE_SIZE, SignatureVerifier};
use crate::worker::source::DEFAULT_BASE_URL;
use crate::worker::url::{
    DEFAULT_ARGUMENTS_SEPARATOR, DEFAULT_BASE64_URL_INCLUDES_FILENAME, DEFAULT_ONLY_PRESETS,
    ParserConfig, ParserConfigError,
};

impl Env {
    pub(super) fn parser(&self) -> Result<ParserConfig, SettingsError> {
        let signature_size = number(
            "IMGPROXY_SIGNATURE_SIZE",
            self.imgproxy_signature_size.as_deref(),
            DEFAULT_SIGNATURE_SIZE,
        )?;
        let signature = SignatureVerifier::from_env(
            self.imgproxy_key.as_deref().unwrap_or(""),
            self.imgproxy_salt.as_deref().unwrap_or(""),
            signature_size,
            self.imgproxy_trusted_signatures.as_deref().unwrap_or(""),
        )
        // The message names the variable; it never contains key material.
        .map_err(|e| SettingsError::Refused(e.to_string()))?;

        let arguments_separator = self
            .imgproxy_arguments_separator
            .clone()
            .unwrap_or_else(|| DEFAULT_ARGUMENTS_SEPARATOR.to_owned());
        let mut presets = Presets::default();
        if let Some(list) = &self.imgproxy_presets {
            let separator = self
                .imgproxy_presets_separator
                .as_deref()
                .unwrap_or(DEFAULT_PRESETS_SEPARATOR);
            presets
                .add_list(list, separator, &arguments_separator)
                .map_err(|e| invalid("IMGPROXY_PRESETS", list, e.to_string()))?;
        }
        if let Some(path) = &self.imgproxy_presets_path {
            let contents = std::fs::read_to_string(path)
                .map_err(|e| invalid("IMGPROXY_PRESETS_PATH", path, e.to_string()))?;
            presets
                .add_file(&contents, &arguments_separator)
                .map_err(|e| invalid("IMGPROXY_PRESETS_PATH", path, e.to_string()))?;
        }

        let parser = ParserConfig {
            signature,
            defaults: self.defaults()?,
            presets,
            only_presets: boolean(
                "IMGPROXY_ONLY_PRESETS",
                self.imgproxy_only_presets.as_deref(),
                DEFAULT_ONLY_PRESETS,
            )?,
            allowed_options: list(
                self.imgproxy_allowed_processing_options
                    .as_deref()
                    .unwrap_or(""),
            )
            .map(str::to_owned)
            .collect(),
            arguments_separator,
            base_url: self
                .imgproxy_base_url
                .clone()
                .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned()),
            base64_url_includes_filename: boolean(
                "IMGPROXY_BASE64_URL_INCLUDES_FILENAME",
                self.imgproxy_base64_url_includes_filename.as_deref(),
                DEFAULT_BASE64_URL_INCLUDES_FILENAME,
            )?,
        };
        parser.validate().map_err(|e| {
            let (var, value) = match e {
                ParserConfigError::EmptyArgumentsSeparator => {
                    ("IMGPROXY_ARGUMENTS_SEPARATOR", String::new())
                }
                ParserConfigError::InvalidPreset { ref name, .. } => {
                    ("IMGPROXY_PRESETS", name.clone())
                }
            };
            invalid(var, &value, e.to_string())
        })?;
        Ok(parser)
    }

    fn defaults(&self) -> Result<Defaults, SettingsError> {
        let d = Defaults::default();
        let quality: u8 = number(
            "IMGPROXY_QUALITY",
            self.imgproxy_quality.as_deref(),
            DEFAULT_QUALITY,
        )?;
        if !(1..=100).contains(&quality) {
            return Err(invalid(
                "IMGPROXY_QUALITY",
                &quality.to_string(),
                "must be within 1..=100",
            ));
        }
        let mut format_quality: BTreeMap<ImageFormat, u8> =
            DEFAULT_FORMAT_QUALITY.into_iter().collect();
        if let Some(raw) = &self.imgproxy_format_quality {
            for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let bad =
                    |why: &str| invalid("IMGPROXY_FORMAT_QUALITY", raw, format!("`{pair}`: {why}"));
                let (format, q) = pair
                    .split_once('=')
                    .ok_or_else(|| bad("expected format=quality"))?;
                let format: ImageFormat = format
                    .trim()
                    .parse()
                    .map_err(|e: FormatError| bad(&e.to_string()))?;
                let q: u8 = q
                    .trim()
                    .parse()
                    .ok()
                    .filter(|q| (1..=100).contains(q))
                    .ok_or_else(|| bad("quality must be within 1..=100"))?;
                format_quality.insert(format, q);
            }
        }
        Ok(Defaults {
            quality,
            format_quality,
            strip_metadata: boolean(
                "IMGPROXY_STRIP_METADATA",
                self.imgproxy_strip_metadata.as_deref(),
                d.strip_metadata,
            )?,
            keep_copyright: boolean(
                "IMGPROXY_KEEP_COPYRIGHT",
                self.imgproxy_keep_copyright.as_deref(),
                d.keep_copyright,
            )?,
            strip_color_profile: boolean(
                "IMGPROXY_STRIP_COLOR_PROFILE",
                self.imgproxy_strip_color_profile.as_deref(),
                d.strip_color_profile,
            )?,
            auto_rotate: boolean(
                "IMGPROXY_AUTO_ROTATE",
                self.imgproxy_auto_rotate.as_deref(),
                d.auto_rotate,
            )?,
            enforce_thumbnail: boolean(
                "IMGPROXY_ENFORCE_THUMBNAIL",
                self.imgproxy_enforce_thumbnail.as_deref(),
                d.enforce_thumbnail,
            )?,
            return_attachment: boolean(
                "IMGPROXY_RETURN_ATTACHMENT",
                self.imgproxy_return_attachment.as_deref(),
                d.return_attachment,
            )?,
            skip_processing_formats: formats(
                "IMGPROXY_SKIP_PROCESSING_FORMATS",
                self.imgproxy_skip_processing_formats
                    .as_deref()
                    .unwrap_or(""),
            )?,
        })
    }
}
