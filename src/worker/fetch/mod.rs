//! Source downloads: one [`Fetcher`] routes a parsed [`Source`] to HTTP(S) ([`http`]),
//! `s3://` ([`s3`]) or `local://` ([`local`]), under the download timeout and the size cap,
//! after the `IMGPROXY_ALLOWED_SOURCES` check ([`allowed`]). SSRF rules live in [`address`].
//!
//! Every way a download can fail is a [`FetchError`], whose [`FetchError::status`] is
//! imgproxy's answer for it.

pub mod address;
pub mod allowed;
pub mod budget;
pub mod http;
pub mod local;
pub mod s3;

use std::time::Duration;

use bytes::Bytes;

use super::config::FetchConfig;
use super::source::{Scheme, Source};
use address::Denied;
use budget::ByteBudget;

/// A downloaded source image.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: Bytes,
    /// The `Content-Type` the source claimed, if any; used only when the format can't be
    /// told from the bytes (`raw` responses).
    pub content_type: Option<String>,
}

/// Why a source could not be had. Messages are for logs; responses carry a short public text.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("source URL is not allowed by IMGPROXY_ALLOWED_SOURCES: {0}")]
    NotAllowed(String),
    #[error("{0}")]
    AddressDenied(#[from] Denied),
    #[error("{0} sources are not enabled ({1})")]
    SchemeDisabled(&'static str, &'static str),
    #[error("invalid source URL: {0}")]
    BadUrl(String),
    #[error("source is unreachable: {0}")]
    Unreachable(String),
    #[error("source answered {0}")]
    Status(u16),
    #[error("source not found: {0}")]
    NotFound(String),
    #[error("stopped after {0} redirects (IMGPROXY_MAX_REDIRECTS)")]
    TooManyRedirects(usize),
    #[error("source download did not finish within {0:?} (IMGPROXY_DOWNLOAD_TIMEOUT)")]
    Timeout(Duration),
    #[error("source is larger than {0} bytes (IMGPROXY_MAX_SRC_FILE_SIZE)")]
    TooBig(u64),
    #[error(
        "source is larger than the {0} bytes all sources may hold at once (IMGPROXY_MAX_SOURCE_BYTES_IN_FLIGHT)"
    )]
    OverBudget(u64),
}

impl FetchError {
    /// imgproxy's status for this failure: a missing, refused or unreachable source is 404, a
    /// source-side 5xx is 500, a timeout 504, a too-big source 422.
    pub fn status(&self) -> u16 {
        match self {
            FetchError::Status(s) if *s >= 500 => 500,
            FetchError::Timeout(_) => 504,
            FetchError::TooBig(_) | FetchError::OverBudget(_) => 422,
            _ => 404,
        }
    }

    /// The short text sent to the client (imgproxy's public messages).
    pub fn public_message(&self) -> &'static str {
        match self {
            FetchError::NotAllowed(_) | FetchError::AddressDenied(_) => "Invalid source URL",
            FetchError::TooBig(_) | FetchError::OverBudget(_) => "Invalid source image",
            _ => "Source image is unreachable",
        }
    }
}

/// Downloads sources; built once, shared by every request.
pub struct Fetcher {
    http: http::HttpSource,
    local: Option<local::LocalSource>,
    s3: Option<s3::S3Source>,
    allowed_sources: Vec<allowed::AllowedSource>,
    query_separator: String,
    timeout: Duration,
    /// `IMGPROXY_MAX_SOURCE_BYTES_IN_FLIGHT`, shared by every download.
    budget: ByteBudget,
}

impl Fetcher {
    /// Builds the fetchers `config` enables; `s3` is the client for `s3://` sources (see
    /// [`s3::S3Source::from_config`]), required when `config.s3` is set.
    pub fn new(config: &FetchConfig, s3: Option<s3::S3Source>) -> Fetcher {
        Fetcher {
            http: http::HttpSource::new(config),
            local: config.local_root.clone().map(|root| local::LocalSource {
                root,
                query_separator: config.query_separator.clone(),
                max_size: config.max_src_file_size,
            }),
            s3,
            allowed_sources: config.allowed_sources.clone(),
            query_separator: config.query_separator.clone(),
            timeout: config.download_timeout,
            budget: ByteBudget::new(config.max_source_bytes_in_flight),
        }
    }

    /// The budget every download takes its bytes from (a handle on the same one).
    pub fn budget(&self) -> ByteBudget {
        self.budget.clone()
    }

    /// Whether `source` passes `IMGPROXY_ALLOWED_SOURCES`.
    ///
    /// # Errors
    /// [`FetchError::NotAllowed`].
    pub fn check_allowed(&self, source: &Source) -> Result<(), FetchError> {
        if allowed::is_allowed(&self.allowed_sources, &source.url, &self.query_separator) {
            Ok(())
        } else {
            Err(FetchError::NotAllowed(source.url.clone()))
        }
    }

    /// Downloads `source` completely, within `IMGPROXY_DOWNLOAD_TIMEOUT`,
    /// `IMGPROXY_MAX_SRC_FILE_SIZE` and the byte budget ([`budget`]), waiting for room in
    /// the budget as part of the download.
    ///
    /// # Errors
    /// See [`FetchError`].
    pub async fn fetch(&self, source: &Source) -> Result<Fetched, FetchError> {
        self.check_allowed(source)?;
        let download = async {
            match source.scheme {
                Scheme::Http | Scheme::Https => self.http.fetch(&source.url, &self.budget).await,
                Scheme::Local => match &self.local {
                    // Read at disk speed with its size known and capped first; its bytes
                    // then count against the budget like any other source's.
                    Some(local) => {
                        let fetched = local.fetch(&source.url).await?;
                        Ok(Fetched {
                            bytes: self.budget.hold(fetched.bytes).await?,
                            ..fetched
                        })
                    }
                    None => Err(FetchError::SchemeDisabled(
                        "local://",
                        "IMGPROXY_LOCAL_FILESYSTEM_ROOT is not set",
                    )),
                },
                Scheme::S3 => match &self.s3 {
                    Some(s3) => s3.fetch(&source.url, &self.budget).await,
                    None => Err(FetchError::SchemeDisabled(
                        "s3://",
                        "IMGPROXY_USE_S3 is off",
                    )),
                },
            }
        };
        tokio::time::timeout(self.timeout, download)
            .await
            .map_err(|_| FetchError::Timeout(self.timeout))?
    }
}

/// Appends `chunk` to `buf` unless that would pass `limit`.
///
/// # Errors
/// [`FetchError::TooBig`]: the caller drops the stream, which closes the connection.
fn append_capped(buf: &mut Vec<u8>, chunk: &[u8], limit: u64) -> Result<(), FetchError> {
    if (buf.len() + chunk.len()) as u64 > limit {
        return Err(FetchError::TooBig(limit));
    }
    buf.extend_from_slice(chunk);
    Ok(())
}

/// A first allocation for a body of `declared` bytes: trusted only up to a few MiB, so a lying
/// `Content-Length` can't make us reserve memory that never arrives.
fn initial_capacity(declared: Option<u64>, limit: u64) -> usize {
    const MAX_PREALLOCATION: u64 = 8 * 1024 * 1024;
    declared
        .unwrap_or(64 * 1024)
        .min(limit)
        .min(MAX_PREALLOCATION) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_imgproxy() {
        assert_eq!(FetchError::Status(404).status(), 404);
        assert_eq!(FetchError::Status(403).status(), 404);
        assert_eq!(FetchError::Status(500).status(), 500);
        assert_eq!(FetchError::Status(503).status(), 500);
        assert_eq!(FetchError::Timeout(Duration::from_secs(1)).status(), 504);
        assert_eq!(FetchError::TooBig(1).status(), 422);
        assert_eq!(FetchError::TooManyRedirects(10).status(), 404);
        assert_eq!(FetchError::Unreachable("x".into()).status(), 404);
        assert_eq!(FetchError::NotAllowed("x".into()).status(), 404);
        assert_eq!(
            FetchError::AddressDenied(Denied::NoAddress("h".into())).status(),
            404
        );
        assert_eq!(FetchError::SchemeDisabled("s3://", "off").status(), 404);
    }

    #[test]
    fn appending_stops_at_the_limit() {
        let mut buf = Vec::new();
        append_capped(&mut buf, b"12345", 10).unwrap();
        append_capped(&mut buf, b"12345", 10).unwrap();
        assert!(matches!(
            append_capped(&mut buf, b"1", 10),
            Err(FetchError::TooBig(10))
        ));
        assert_eq!(buf.len(), 10);
        assert_eq!(initial_capacity(Some(u64::MAX), 100), 100);
        assert_eq!(initial_capacity(Some(u64::MAX), u64::MAX), 8 * 1024 * 1024);
    }
}
