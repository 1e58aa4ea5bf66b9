//! The worker's settings: imgproxy's `IMGPROXY_*` variables with imgproxy's defaults, read
//! once, validated, then immutable.
//!
//! Every variable has a `DEFAULT_*` constant (in `defaults.rs`, or next to the code that uses
//! it: the engine's in [`crate::worker::engine`]) and a row in [`SETTINGS`] (`table.rs`),
//! which feeds `imgproxy-cache worker --help` and the README table, with how closely it
//! follows imgproxy. A bad value stops start-up with a [`SettingsError`] naming the variable
//! and the value — where imgproxy would silently ignore it.
//!
//! The raw variables are `env.rs`'s; each section of [`WorkerConfig`] is read in a file of its
//! own: `server.rs`, `parser.rs`, `fetch.rs` and `processing.rs` (straight into the engine's
//! [`EngineConfig`]), with the imgproxy-only value parsers in `parse.rs` and the shared ones
//! in [`crate::settings`].

mod defaults;
mod env;
mod fetch;
mod parse;
mod parser;
mod processing;
mod server;
mod table;

pub use defaults::*;
pub use fetch::{AddressPolicy, FetchConfig, S3SourceConfig};
pub use server::ServerLimits;
pub use table::{Compat, SETTINGS};

use env::Env;
use parse::url_path;

use super::engine::EngineConfig;
use super::url::ParserConfig;
use crate::settings::{FromVars, SettingsError, expand_bind, invalid, read};
use crate::telemetry::LogFormat;

/// Validated worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Socket address to listen on, `:PORT` expanded.
    pub bind: String,
    /// Without a trailing `/`; empty for none.
    pub path_prefix: String,
    pub server: ServerLimits,
    pub parser: ParserConfig,
    pub fetch: FetchConfig,
    /// The engine's settings, read straight into its own type.
    pub processing: EngineConfig,
    /// `Authorization: Bearer <secret>` required when set. Never logged.
    pub secret: Option<Secret>,
    pub allow_origin: Option<String>,
    /// An extra health path (prefix included), besides `<prefix>/health`.
    pub health_check_path: Option<String>,
    pub log_format: LogFormat,
}

/// A value kept out of `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl FromVars for WorkerConfig {
    fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, SettingsError> {
        // imgproxy lets the query separator be set to empty on purpose.
        read::<Env>(vars, &["IMGPROXY_SOURCE_URL_QUERY_SEPARATOR"])?.validate()
    }
}

impl Env {
    fn validate(self) -> Result<WorkerConfig, SettingsError> {
        let bind = expand_bind(
            "IMGPROXY_BIND",
            self.imgproxy_bind.as_deref().unwrap_or(DEFAULT_BIND),
        )?;
        let path_prefix = url_path(self.imgproxy_path_prefix.as_deref().unwrap_or(""));
        let health_check_path = self
            .imgproxy_health_check_path
            .as_deref()
            .map(url_path)
            .filter(|p| !p.is_empty())
            .map(|p| format!("{path_prefix}{p}"));
        let server = self.server()?;
        let parser = self.parser()?;
        let fetch = self.fetch()?;
        let processing = self.processing(parser.defaults.clone())?;
        let log_format = match self.imgproxy_log_format.as_deref() {
            None | Some("pretty" | "structured") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(invalid(
                    "IMGPROXY_LOG_FORMAT",
                    other,
                    "expected pretty, structured or json",
                ));
            }
        };
        Ok(WorkerConfig {
            bind,
            path_prefix,
            server,
            parser,
            fetch,
            processing,
            secret: self.imgproxy_secret.map(Secret),
            allow_origin: self.imgproxy_allow_origin,
            health_check_path,
            log_format,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::worker::options::{Defaults, ImageFormat};

    fn config(vars: &[(&str, &str)]) -> Result<WorkerConfig, SettingsError> {
        WorkerConfig::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_are_imgproxys() {
        let c = config(&[]).unwrap();
        assert_eq!(c.bind, "0.0.0.0:8080");
        assert_eq!(c.path_prefix, "");
        assert_eq!(c.server.timeout, Duration::from_secs(10));
        assert_eq!(c.server.graceful_stop_timeout, Duration::from_secs(20));
        assert_eq!(c.server.ttl, 31_536_000);
        assert_eq!(c.server.max_in_flight, 2048);
        assert!(c.server.concurrency >= 1);
        assert_eq!(c.fetch.download_timeout, Duration::from_secs(5));
        assert_eq!(c.fetch.max_redirects, 10);
        assert_eq!(c.fetch.max_src_file_size, HARD_MAX_SRC_FILE_SIZE);
        assert_eq!(c.fetch.addresses, AddressPolicy::default());
        assert!(!c.fetch.addresses.allow_loopback && !c.fetch.addresses.allow_link_local);
        assert!(c.fetch.addresses.allow_private);
        assert!(c.fetch.local_root.is_none() && c.fetch.s3.is_none());
        assert_eq!(c.processing.max_src_resolution, 50.0);
        assert_eq!(c.processing.max_animation_frames, 1);
        assert!(!c.processing.negotiates_format());
        assert!(!c.parser.signature.is_enabled());
        assert_eq!(c.parser.defaults, Defaults::default());
        assert!(c.fetch.user_agent.starts_with("imgproxy-cache/0."));
    }

    #[test]
    fn values_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(&[
            ("IMGPROXY_BIND", "127.0.0.1:8081"),
            ("IMGPROXY_PATH_PREFIX", "imgs/"),
            ("IMGPROXY_KEY", "736563726574"),
            ("IMGPROXY_SALT", "68656C6C6F"),
            ("IMGPROXY_CONCURRENCY", "3"),
            ("IMGPROXY_REQUESTS_QUEUE_SIZE", "5"),
            ("IMGPROXY_MAX_SRC_RESOLUTION", "0.5"),
            ("IMGPROXY_MAX_SRC_FILE_SIZE", "1000"),
            ("IMGPROXY_ALLOW_LOOPBACK_SOURCE_ADDRESSES", "t"),
            ("IMGPROXY_ALLOW_PRIVATE_SOURCE_ADDRESSES", "FALSE"),
            (
                "IMGPROXY_LOCAL_FILESYSTEM_ROOT",
                dir.path().to_str().unwrap(),
            ),
            ("IMGPROXY_USE_S3", "1"),
            ("IMGPROXY_S3_ENDPOINT", "127.0.0.1:9000"),
            ("IMGPROXY_FORMAT_QUALITY", "webp=50,jpeg=90"),
            ("IMGPROXY_SKIP_PROCESSING_FORMATS", "svg, gif"),
            ("IMGPROXY_AUTO_AVIF", "true"),
            ("IMGPROXY_PRESETS", "small=rs:fit:100:100,default=q:70"),
            ("IMGPROXY_WATERMARK_DATA", PNG_2X2_BASE64),
            ("IMGPROXY_HEALTH_CHECK_PATH", "ping"),
        ])
        .unwrap();
        assert_eq!(c.bind, "127.0.0.1:8081");
        assert_eq!(c.path_prefix, "/imgs");
        assert_eq!(c.health_check_path.as_deref(), Some("/imgs/ping"));
        assert!(c.parser.signature.is_enabled());
        assert_eq!(c.server.concurrency, 3);
        assert_eq!(c.server.max_in_flight, 8);
        assert_eq!(c.processing.max_src_resolution, 0.5);
        assert_eq!(c.fetch.max_src_file_size, 1000);
        assert!(c.fetch.addresses.allow_loopback && !c.fetch.addresses.allow_private);
        assert_eq!(
            c.fetch.local_root,
            Some(std::fs::canonicalize(dir.path()).unwrap())
        );
        let s3 = c.fetch.s3.unwrap();
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(s3.path_style);
        assert_eq!(c.parser.defaults.format_quality[&ImageFormat::Webp], 50);
        assert_eq!(c.parser.defaults.format_quality[&ImageFormat::Jpeg], 90);
        assert_eq!(c.parser.defaults.format_quality[&ImageFormat::Avif], 63);
        assert_eq!(
            c.parser.defaults.skip_processing_formats,
            vec![ImageFormat::Svg, ImageFormat::Gif]
        );
        assert!(c.processing.negotiates_format());
        assert_eq!(c.parser.presets.get("small").unwrap(), ["rs:fit:100:100"]);
        assert_eq!(
            c.processing.watermark.as_deref().map(|w| &w[..8]),
            Some(&b"\x89PNG\r\n\x1a\n"[..])
        );
    }

    /// A valid 2×2 PNG.
    const PNG_2X2_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAEElEQVR4nGP4z8AARAwQCgAf7gP9i18U1AAAAABJRU5ErkJggg==";

    /// A watermark that isn't an image stops start-up, naming the variable (and the path).
    #[test]
    fn unusable_watermarks_stop_start_up() {
        let msg = config(&[("IMGPROXY_WATERMARK_DATA", "aGVsbG8=")])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("IMGPROXY_WATERMARK_DATA") && msg.contains("not a usable image"),
            "{msg}"
        );
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "hello").unwrap();
        let path = file.path().to_str().unwrap();
        let msg = config(&[("IMGPROXY_WATERMARK_PATH", path)])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("IMGPROXY_WATERMARK_PATH") && msg.contains(path),
            "{msg}"
        );
    }

    #[test]
    fn workers_is_an_alias_and_max_clients_zero_stays_bounded() {
        let c = config(&[("IMGPROXY_WORKERS", "7"), ("IMGPROXY_MAX_CLIENTS", "0")]).unwrap();
        assert_eq!(c.server.concurrency, 7);
        assert_eq!(c.server.max_in_flight, UNLIMITED_CLIENTS);
    }

    #[test]
    fn errors_name_the_variable_and_the_value() {
        let cases: &[(&str, &str)] = &[
            ("IMGPROXY_BIND", "localhost"),
            ("IMGPROXY_TIMEOUT", "soon"),
            ("IMGPROXY_TIMEOUT", "0"),
            ("IMGPROXY_CONCURRENCY", "0"),
            ("IMGPROXY_MAX_CLIENTS", "-1"),
            ("IMGPROXY_ALLOW_LOOPBACK_SOURCE_ADDRESSES", "yes"),
            ("IMGPROXY_MAX_SRC_RESOLUTION", "lots"),
            ("IMGPROXY_MAX_SRC_RESOLUTION", "0"),
            ("IMGPROXY_MAX_ANIMATION_FRAMES", "0"),
            ("IMGPROXY_QUALITY", "101"),
            ("IMGPROXY_FORMAT_QUALITY", "webp=0"),
            ("IMGPROXY_FORMAT_QUALITY", "bogus=50"),
            ("IMGPROXY_SKIP_PROCESSING_FORMATS", "bogus"),
            ("IMGPROXY_LOCAL_FILESYSTEM_ROOT", "/definitely/not/here"),
            ("IMGPROXY_ALLOWED_SOURCES", "example.com/"),
            ("IMGPROXY_ALLOWED_SOURCES", "ftp://example.com/"),
            ("IMGPROXY_PRESETS", "broken"),
            ("IMGPROXY_PRESETS_PATH", "/definitely/not/here.txt"),
            ("IMGPROXY_WATERMARK_PATH", "/definitely/not/here.png"),
            ("IMGPROXY_LOG_FORMAT", "gcp"),
            ("IMGPROXY_USER_AGENT", "bad\nagent"),
            ("IMGPROXY_WATERMARK_OPACITY", "1.5"),
            ("IMGPROXY_PREFERRED_FORMATS", "png,bogus"),
        ];
        for (var, value) in cases {
            let msg = config(&[(var, value)]).unwrap_err().to_string();
            assert!(msg.contains(var), "{msg:?} should name {var}");
            let shown = value.trim().escape_debug().to_string();
            assert!(msg.contains(&shown), "{msg:?} should show {value:?}");
        }
    }

    #[test]
    fn signing_errors_name_the_variable_without_the_key() {
        let msg = config(&[("IMGPROXY_KEY", "zz-secret"), ("IMGPROXY_SALT", "00")])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("IMGPROXY_KEY"), "{msg}");
        assert!(!msg.contains("zz-secret"), "{msg}");
        let msg = config(&[("IMGPROXY_SIGNATURE_SIZE", "33")])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("IMGPROXY_SIGNATURE_SIZE"), "{msg}");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let c = config(&[
            ("IMGPROXY_SECRET", "very-secret"),
            ("IMGPROXY_USE_S3", "true"),
            ("IMGPROXY_S3_ASSUME_ROLE_EXTERNAL_ID", "external-secret"),
        ])
        .unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains("very-secret") && !debug.contains("external-secret"));
    }

    #[test]
    fn every_env_field_has_a_settings_row() {
        // The README and --help are generated from SETTINGS; a variable read but not listed
        // would be invisible to users.
        let names: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
        let source = include_str!("env.rs");
        let env_struct = source
            .split("struct Env {")
            .nth(1)
            .and_then(|s| s.split('}').next())
            .unwrap();
        for field in env_struct
            .lines()
            .filter_map(|l| l.trim().trim_start_matches("pub(super) ").split(':').next())
        {
            if field.is_empty() || field == "imgproxy_workers" {
                continue;
            }
            let var = field.to_ascii_uppercase();
            assert!(names.contains(&var.as_str()), "{var} has no SETTINGS row");
        }
    }

    #[test]
    fn url_paths_are_normalised_like_imgproxy() {
        assert_eq!(url_path(""), "");
        assert_eq!(url_path("/"), "");
        assert_eq!(url_path("imgs/"), "/imgs");
        assert_eq!(url_path("/a/b?x#y"), "/a/b");
    }
}
