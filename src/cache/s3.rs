//! The S3 store: Tigris, AWS S3, SeaweedFS, MinIO, R2 — anything that speaks S3 with SigV4.
//!
//! Retries belong to the upload queue, which knows which calls are worth repeating, so the
//! SDK's own retry layer is turned off here and every error is sorted into transient or
//! permanent instead. Lookups (GETs) and uploads (PUTs) skip the SDK's call pipeline: see
//! [`super::s3_http`].

use std::time::Duration;

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use super::object::{Object, Reading};
use super::s3_http::{Bucket, Got, Refusal};
use super::store::{PutMode, PutOutcome, Store, StoreError};
use crate::aws::{self, AssumeRole, ClientSettings, Endpoint, RegionChoice, Signing};
use crate::cache::config::S3Config;

pub struct S3Store {
    client: aws_sdk_s3::Client,
    http: Bucket,
    bucket: String,
    endpoint: String,
}

impl S3Store {
    /// Wraps a client built elsewhere (tests build one with static credentials) for `bucket`
    /// at `endpoint`, the address the client was built for; lookups sign as `signing` says,
    /// which must be what the client was built with.
    pub fn new(
        client: aws_sdk_s3::Client,
        signing: Signing,
        bucket: impl Into<String>,
        endpoint: Endpoint<'_>,
    ) -> S3Store {
        let bucket = bucket.into();
        S3Store {
            http: Bucket::new(signing, &bucket, endpoint),
            client,
            bucket,
            endpoint: endpoint.url.to_owned(),
        }
    }

    /// Builds a client from the AWS default credential chain, with the role in
    /// `S3_ASSUME_ROLE_ARN` assumed on top when set.
    pub async fn from_config(config: &S3Config, call_timeout: Duration) -> S3Store {
        let (client, signing) = aws::client(&ClientSettings {
            region: RegionChoice::Fixed(&config.region),
            endpoint: Some(Endpoint {
                url: &config.endpoint,
                style: config.style,
            }),
            assume_role: config.assume_role_arn.as_deref().map(|arn| AssumeRole {
                arn,
                external_id: config.assume_role_external_id.as_deref(),
                session_name: "imgproxy-cache",
            }),
            call_timeout,
        })
        .await;
        S3Store::new(
            client,
            signing,
            &config.bucket,
            Endpoint {
                url: &config.endpoint,
                style: config.style,
            },
        )
    }
}

#[async_trait::async_trait]
impl Store for S3Store {
    fn describe(&self) -> String {
        format!("s3 bucket {} at {}", self.bucket, self.endpoint)
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        match head {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
            Err(e) => Err(classify("HEAD", e)),
        }
    }

    async fn put(
        &self,
        key: &str,
        object: &Object,
        mode: PutMode,
    ) -> Result<PutOutcome, StoreError> {
        match self
            .http
            .put(key, object, mode == PutMode::IfAbsent)
            .await?
        {
            Ok(()) => Ok(PutOutcome::Stored),
            Err(refusal) if mode == PutMode::IfAbsent && refusal.status == 412 => {
                Ok(PutOutcome::AlreadyExists)
            }
            Err(refusal) => Err(refused(refusal)),
        }
    }

    async fn read(&self, key: &str) -> Result<Option<Reading>, StoreError> {
        match self.http.get(key).await? {
            Got::Found(reading) => Ok(Some(reading)),
            Got::Absent => Ok(None),
            Got::Refused(refusal) => Err(refused(refusal)),
        }
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        // S3 answers a DELETE the same whether or not the key was there.
        let existed = self.exists(key).await?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify("DELETE", e))?;
        Ok(existed)
    }
}

/// The user metadata that keeps when a result was rendered, in seconds since the Unix epoch,
/// as a PUT sends it and a GET answers with it.
pub(super) const STORED_AT_HEADER: &str = "x-amz-meta-stored-at";

/// Whether a refused GET means "no such object". A bucket answers 404 `NoSuchKey` when the
/// caller may list it, and 403 `AccessDenied` when it may not (S3 does not tell a caller without
/// `s3:ListBucket` whether a key exists). A 403 for bad credentials and a 404 for a missing
/// bucket are errors: no key will ever be found there, and the breaker should hear of it.
pub(super) fn absent(status: Option<u16>, code: Option<&str>) -> bool {
    match (status, code) {
        (_, Some("NoSuchKey")) => true,
        (_, Some("NoSuchBucket")) => false,
        // A 404 without an S3 error body (some gateways and CDNs answer so) is still a miss.
        (Some(404), _) => true,
        (Some(403), None | Some("AccessDenied")) => true,
        _ => false,
    }
}

type HttpResponse = aws_sdk_s3::config::http::HttpResponse;

fn status_of<E>(e: &SdkError<E, HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

/// Sorts an SDK error into "try again" or "a human must act".
fn classify<E>(op: &str, e: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = status_of(&e);
    let code = e.code().map(str::to_owned);
    let message = format!("{op} failed: {}", DisplayErrorContext(&e));
    match e {
        SdkError::ConstructionFailure(_) => StoreError::permanent(message, None),
        SdkError::ServiceError(_) => match verdict(status.unwrap_or(0), code.as_deref()) {
            Verdict::Transient => StoreError::transient(message),
            Verdict::Permanent(hint) => StoreError::permanent(message, hint),
        },
        // Timeouts, connection failures, unreadable responses: the network may recover.
        _ => StoreError::transient(message),
    }
}

/// Sorts a refusal of [`super::s3_http`] as [`classify`] sorts the SDK's.
fn refused(refusal: Refusal) -> StoreError {
    match verdict(refusal.status.as_u16(), refusal.code.as_deref()) {
        Verdict::Transient => StoreError::transient(refusal.message),
        Verdict::Permanent(hint) => StoreError::permanent(refusal.message, hint),
    }
}

enum Verdict {
    Transient,
    Permanent(Option<&'static str>),
}

/// The S3 error codes and statuses that no retry can fix, with what to check.
fn verdict(status: u16, code: Option<&str>) -> Verdict {
    match (status, code) {
        (501, _) | (_, Some("NotImplemented")) => Verdict::Permanent(Some(
            "the store does not support this request (conditional PUT?): set UPLOAD_DEDUP=head",
        )),
        (_, Some("SlowDown" | "Throttling" | "ThrottlingException" | "RequestTimeout"))
        | (_, Some("InternalError" | "ServiceUnavailable" | "ConditionalRequestConflict"))
        | (408 | 429 | 500..=599, _) => Verdict::Transient,
        (_, Some("NoSuchBucket")) => Verdict::Permanent(Some(
            "the bucket does not exist: check S3_BUCKET, S3_ENDPOINT and S3_REGION",
        )),
        (_, Some("InvalidAccessKeyId" | "SignatureDoesNotMatch")) => Verdict::Permanent(Some(
            "the credentials were refused: check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the role",
        )),
        (403, _) => Verdict::Permanent(Some(
            "access denied: the credentials need s3:PutObject and s3:GetObject on the bucket \
             (and s3:ListBucket for HEAD dedup, or set UPLOAD_DEDUP=conditional)",
        )),
        (301, _) | (_, Some("PermanentRedirect" | "AuthorizationHeaderMalformed")) => {
            Verdict::Permanent(Some(
                "wrong region or endpoint: check S3_REGION and S3_ENDPOINT",
            ))
        }
        _ => Verdict::Permanent(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_only_what_time_can_fix() {
        let transient = [
            (503, Some("SlowDown")),
            (500, None),
            (429, None),
            (400, Some("RequestTimeout")),
        ];
        for (status, code) in transient {
            assert!(
                matches!(verdict(status, code), Verdict::Transient),
                "{status} {code:?}"
            );
        }
        let permanent = [
            (501, Some("NotImplemented")),
            (403, Some("AccessDenied")),
            (404, Some("NoSuchBucket")),
            (403, Some("InvalidAccessKeyId")),
            (400, Some("InvalidArgument")),
        ];
        for (status, code) in permanent {
            assert!(
                matches!(verdict(status, code), Verdict::Permanent(_)),
                "{status} {code:?}"
            );
        }
    }

    #[test]
    fn a_missing_key_is_absent_but_a_refusal_is_not() {
        let absent_ones = [
            (Some(404), Some("NoSuchKey")),
            (Some(404), None),
            (Some(403), Some("AccessDenied")),
            (Some(403), None),
        ];
        for (status, code) in absent_ones {
            assert!(absent(status, code), "{status:?} {code:?}");
        }
        let errors = [
            (Some(404), Some("NoSuchBucket")),
            (Some(403), Some("InvalidAccessKeyId")),
            (Some(403), Some("SignatureDoesNotMatch")),
            (Some(500), Some("InternalError")),
            (Some(503), Some("SlowDown")),
            (Some(400), None),
            (None, None),
        ];
        for (status, code) in errors {
            assert!(!absent(status, code), "{status:?} {code:?}");
        }
    }
}
