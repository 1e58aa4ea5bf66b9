//! `s3://bucket/key[?version]` sources through the AWS SDK, with the AWS default credential
//! chain (environment, shared files, web identity, ECS/EC2 roles) and an optional assumed role.
//! The S3 endpoint is the operator's, so it is not subject to the source address policy.

use std::time::Duration;

use aws_sdk_s3::error::{DisplayErrorContext, SdkError};

use super::budget::ByteBudget;
use super::{FetchError, Fetched};
use crate::aws::{self, AddressingStyle, AssumeRole, ClientSettings, Endpoint, RegionChoice};
use crate::worker::config::{FALLBACK_S3_REGION, FetchConfig, S3SourceConfig};

/// Reads objects from S3 or an S3-compatible store.
pub struct S3Source {
    client: aws_sdk_s3::Client,
    query_separator: String,
    max_size: u64,
}

impl S3Source {
    /// Wraps a client built elsewhere (tests build one with static credentials).
    pub fn new(client: aws_sdk_s3::Client, config: &FetchConfig) -> S3Source {
        S3Source {
            client,
            query_separator: config.query_separator.clone(),
            max_size: config.max_src_file_size,
        }
    }

    /// Builds the client from the AWS default chain and `IMGPROXY_S3_*`.
    pub async fn from_config(s3: &S3SourceConfig, config: &FetchConfig) -> S3Source {
        let style = if s3.path_style {
            AddressingStyle::Path
        } else {
            AddressingStyle::Virtual
        };
        let (client, _) = aws::client(&ClientSettings {
            region: match &s3.region {
                Some(region) => RegionChoice::Fixed(region),
                None => RegionChoice::FromChainOr(FALLBACK_S3_REGION),
            },
            endpoint: s3.endpoint.as_deref().map(|url| Endpoint { url, style }),
            assume_role: s3.assume_role_arn.as_deref().map(|arn| AssumeRole {
                arn,
                external_id: s3.assume_role_external_id.as_ref().map(|id| id.0.as_str()),
                session_name: "imgproxy-cache-worker",
            }),
            call_timeout: config.download_timeout,
        })
        .await;
        S3Source::new(client, config)
    }

    /// Downloads the object `url` names.
    ///
    /// # Errors
    /// 404-class errors for a bad URL or missing object, [`FetchError::Status`] with the
    /// store's status, [`FetchError::TooBig`] past the cap.
    pub async fn fetch(&self, url: &str, budget: &ByteBudget) -> Result<Fetched, FetchError> {
        let (bucket, key, version) = split_url(url, &self.query_separator)
            .ok_or_else(|| FetchError::BadUrl(format!("{url}: expected s3://bucket/key")))?;
        let output = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .set_version_id(version.map(str::to_owned))
            .send()
            .await
            .map_err(|e| sdk_error(url, e))?;
        let declared = output.content_length.and_then(|l| u64::try_from(l).ok());
        if declared.is_some_and(|len| len > self.max_size) {
            return Err(FetchError::TooBig(self.max_size));
        }
        let content_type = output.content_type.clone();
        let mut body = output.body;
        let mut buf = budget.start(declared, self.max_size).await?;
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.map_err(|e| FetchError::Unreachable(format!("{url}: reading body: {e}")))?;
            buf.append(&chunk).await?;
        }
        Ok(Fetched {
            bytes: buf.into_bytes(),
            content_type,
        })
    }
}

/// `s3://bucket/key?version` → bucket, key, version (imgproxy's `GetBucketAndKey`: the key is
/// taken literally, the query separator cuts the version off).
pub fn split_url<'a>(
    url: &'a str,
    query_separator: &str,
) -> Option<(&'a str, &'a str, Option<&'a str>)> {
    let rest = url
        .get(..5)?
        .eq_ignore_ascii_case("s3://")
        .then(|| &url[5..])?;
    let (bucket, key) = rest.split_once('/')?;
    let key = key.trim_start_matches('/');
    let (key, version) = match query_separator {
        "" => (key, None),
        sep => match key.split_once(sep) {
            Some((key, version)) => (key, Some(version).filter(|v| !v.is_empty())),
            None => (key, None),
        },
    };
    (!bucket.is_empty() && !key.is_empty()).then_some((bucket, key, version))
}

fn sdk_error<E>(url: &str, error: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> FetchError
where
    E: std::error::Error + Send + Sync + 'static,
{
    let status = error.raw_response().map(|r| r.status().as_u16());
    match (&error, status) {
        (SdkError::TimeoutError(_), _) => FetchError::Timeout(Duration::ZERO),
        (_, Some(status)) => {
            tracing::debug!(%url, status, error = %DisplayErrorContext(&error), "S3 source failed");
            FetchError::Status(status)
        }
        _ => FetchError::Unreachable(format!("{url}: {}", DisplayErrorContext(&error))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_like_imgproxy() {
        assert_eq!(
            split_url("s3://bucket/dir/key.png", "?"),
            Some(("bucket", "dir/key.png", None))
        );
        assert_eq!(
            split_url("S3://b/k.png?v123", "?"),
            Some(("b", "k.png", Some("v123")))
        );
        assert_eq!(
            split_url("s3://b/k?x.png", ""),
            Some(("b", "k?x.png", None))
        );
        assert_eq!(split_url("s3://b/", "?"), None);
        assert_eq!(split_url("s3:///k", "?"), None);
        assert_eq!(split_url("s3://b", "?"), None);
        assert_eq!(split_url("http://b/k", "?"), None);
    }
}
