//! The source section: download limits, allowed sources and addresses, `local://` and
//! `s3://`.

use std::path::PathBuf;
use std::time::Duration;

use super::Secret;
use super::defaults::{
    DEFAULT_ALLOW_LINK_LOCAL_SOURCE_ADDRESSES, DEFAULT_ALLOW_LOOPBACK_SOURCE_ADDRESSES,
    DEFAULT_ALLOW_PRIVATE_SOURCE_ADDRESSES, DEFAULT_DOWNLOAD_TIMEOUT_SECS, DEFAULT_MAX_REDIRECTS,
    DEFAULT_MAX_SOURCE_BYTES_IN_FLIGHT, DEFAULT_MAX_SRC_FILE_SIZE,
    DEFAULT_S3_ENDPOINT_USE_PATH_STYLE, DEFAULT_SOURCE_URL_QUERY_SEPARATOR, DEFAULT_USE_S3,
    DEFAULT_USER_AGENT, HARD_MAX_SRC_FILE_SIZE,
};
use super::env::Env;
use super::parse::secs;
use crate::settings::{SettingsError, boolean, invalid, number, positive};

/// Everything the source fetchers need.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    pub download_timeout: Duration,
    /// Bytes a source may have; always > 0 ([`HARD_MAX_SRC_FILE_SIZE`] stands in for 0).
    pub max_src_file_size: u64,
    /// See [`DEFAULT_MAX_SOURCE_BYTES_IN_FLIGHT`]; always > 0.
    pub max_source_bytes_in_flight: u64,
    pub max_redirects: usize,
    pub allowed_sources: Vec<crate::worker::fetch::allowed::AllowedSource>,
    pub addresses: AddressPolicy,
    pub user_agent: String,
    /// Canonical path of `IMGPROXY_LOCAL_FILESYSTEM_ROOT`, when `local://` is on.
    pub local_root: Option<PathBuf>,
    pub query_separator: String,
    pub s3: Option<S3SourceConfig>,
}

/// Which resolved source addresses may be connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPolicy {
    pub allow_loopback: bool,
    pub allow_link_local: bool,
    pub allow_private: bool,
}

impl Default for AddressPolicy {
    fn default() -> Self {
        AddressPolicy {
            allow_loopback: DEFAULT_ALLOW_LOOPBACK_SOURCE_ADDRESSES,
            allow_link_local: DEFAULT_ALLOW_LINK_LOCAL_SOURCE_ADDRESSES,
            allow_private: DEFAULT_ALLOW_PRIVATE_SOURCE_ADDRESSES,
        }
    }
}

/// `s3://` sources.
#[derive(Clone, PartialEq, Eq)]
pub struct S3SourceConfig {
    /// `None`: the AWS environment's region, else [`super::FALLBACK_S3_REGION`].
    pub region: Option<String>,
    /// `None`: AWS itself.
    pub endpoint: Option<String>,
    pub path_style: bool,
    pub assume_role_arn: Option<String>,
    pub assume_role_external_id: Option<Secret>,
}

impl std::fmt::Debug for S3SourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3SourceConfig")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("path_style", &self.path_style)
            .field("assume_role_arn", &self.assume_role_arn)
            .finish_non_exhaustive()
    }
}

impl Env {
    pub(super) fn fetch(&self) -> Result<FetchConfig, SettingsError> {
        let max_src_file_size = match number(
            "IMGPROXY_MAX_SRC_FILE_SIZE",
            self.imgproxy_max_src_file_size.as_deref(),
            DEFAULT_MAX_SRC_FILE_SIZE,
        )? {
            0 => HARD_MAX_SRC_FILE_SIZE,
            n => n.min(HARD_MAX_SRC_FILE_SIZE),
        };
        let local_root = match &self.imgproxy_local_filesystem_root {
            None => None,
            Some(root) => {
                let canonical = std::fs::canonicalize(root).map_err(|e| {
                    invalid(
                        "IMGPROXY_LOCAL_FILESYSTEM_ROOT",
                        root,
                        format!("cannot use it: {e}"),
                    )
                })?;
                if !canonical.is_dir() {
                    return Err(invalid(
                        "IMGPROXY_LOCAL_FILESYSTEM_ROOT",
                        root,
                        "not a directory",
                    ));
                }
                Some(canonical)
            }
        };
        let s3 = if boolean(
            "IMGPROXY_USE_S3",
            self.imgproxy_use_s3.as_deref(),
            DEFAULT_USE_S3,
        )? {
            let endpoint = match &self.imgproxy_s3_endpoint {
                None => None,
                // imgproxy assumes http:// for a bare host.
                Some(e) if e.starts_with("http://") || e.starts_with("https://") => Some(e.clone()),
                Some(e) => Some(format!("http://{e}")),
            };
            if let Some(e) = &endpoint
                && e.parse::<http::Uri>().map_or(true, |u| u.host().is_none())
            {
                return Err(invalid("IMGPROXY_S3_ENDPOINT", e, "not a URL with a host"));
            }
            Some(S3SourceConfig {
                region: self.imgproxy_s3_region.clone(),
                endpoint,
                path_style: boolean(
                    "IMGPROXY_S3_ENDPOINT_USE_PATH_STYLE",
                    self.imgproxy_s3_endpoint_use_path_style.as_deref(),
                    DEFAULT_S3_ENDPOINT_USE_PATH_STYLE,
                )?,
                assume_role_arn: self.imgproxy_s3_assume_role_arn.clone(),
                assume_role_external_id: self
                    .imgproxy_s3_assume_role_external_id
                    .clone()
                    .map(Secret),
            })
        } else {
            None
        };
        let user_agent = self
            .imgproxy_user_agent
            .as_deref()
            .unwrap_or(DEFAULT_USER_AGENT)
            .replace("%current_version", env!("CARGO_PKG_VERSION"));
        if http::HeaderValue::from_str(&user_agent).is_err() {
            return Err(invalid(
                "IMGPROXY_USER_AGENT",
                &user_agent,
                "not a valid header value",
            ));
        }
        Ok(FetchConfig {
            download_timeout: secs(
                "IMGPROXY_DOWNLOAD_TIMEOUT",
                self.imgproxy_download_timeout.as_deref(),
                DEFAULT_DOWNLOAD_TIMEOUT_SECS,
            )?,
            max_src_file_size,
            max_source_bytes_in_flight: positive(
                "IMGPROXY_MAX_SOURCE_BYTES_IN_FLIGHT",
                number(
                    "IMGPROXY_MAX_SOURCE_BYTES_IN_FLIGHT",
                    self.imgproxy_max_source_bytes_in_flight.as_deref(),
                    DEFAULT_MAX_SOURCE_BYTES_IN_FLIGHT,
                )?,
            )?,
            max_redirects: number(
                "IMGPROXY_MAX_REDIRECTS",
                self.imgproxy_max_redirects.as_deref(),
                DEFAULT_MAX_REDIRECTS,
            )?,
            allowed_sources: crate::worker::fetch::allowed::parse_list(
                self.imgproxy_allowed_sources.as_deref().unwrap_or(""),
            )
            .map_err(|(entry, why)| invalid("IMGPROXY_ALLOWED_SOURCES", &entry, why.to_string()))?,
            addresses: AddressPolicy {
                allow_loopback: boolean(
                    "IMGPROXY_ALLOW_LOOPBACK_SOURCE_ADDRESSES",
                    self.imgproxy_allow_loopback_source_addresses.as_deref(),
                    DEFAULT_ALLOW_LOOPBACK_SOURCE_ADDRESSES,
                )?,
                allow_link_local: boolean(
                    "IMGPROXY_ALLOW_LINK_LOCAL_SOURCE_ADDRESSES",
                    self.imgproxy_allow_link_local_source_addresses.as_deref(),
                    DEFAULT_ALLOW_LINK_LOCAL_SOURCE_ADDRESSES,
                )?,
                allow_private: boolean(
                    "IMGPROXY_ALLOW_PRIVATE_SOURCE_ADDRESSES",
                    self.imgproxy_allow_private_source_addresses.as_deref(),
                    DEFAULT_ALLOW_PRIVATE_SOURCE_ADDRESSES,
                )?,
            },
            user_agent,
            local_root,
            query_separator: self
                .imgproxy_source_url_query_separator
                .clone()
                .unwrap_or_else(|| DEFAULT_SOURCE_URL_QUERY_SEPARATOR.to_owned()),
            s3,
        })
    }
}
