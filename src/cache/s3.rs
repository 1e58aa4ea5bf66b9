//! The S3 store: Tigris, AWS S3, SeaweedFS, MinIO, R2 — anything that speaks S3 with SigV4.
//!
//! Retries belong to the upload queue, which knows which calls are worth repeating, so the
//! SDK's own retry layer is turned off here and every error is sorted into transient or
//! permanent instead.

use std::time::Duration;

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;

use super::object::{Meta, Object, Reading};
use super::store::{PutMode, PutOutcome, Store, StoreError};
use crate::aws::{self, AssumeRole, ClientSettings, Endpoint, RegionChoice};
use crate::cache::config::S3Config;

pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    endpoint: String,
}

impl S3Store {
    /// Wraps a client built elsewhere (tests build one with static credentials).
    pub fn new(
        client: aws_sdk_s3::Client,
        bucket: impl Into<String>,
        endpoint: impl Into<String>,
    ) -> S3Store {
        S3Store {
            client,
            bucket: bucket.into(),
            endpoint: endpoint.into(),
        }
    }

    /// Builds a client from the AWS default credential chain, with the role in
    /// `S3_ASSUME_ROLE_ARN` assumed on top when set.
    pub async fn from_config(config: &S3Config, call_timeout: Duration) -> S3Store {
        let client = aws::client(&ClientSettings {
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
        S3Store::new(client, &config.bucket, &config.endpoint)
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
        // Integrity: the SigV4 signature covers the SHA-256 of the payload, which the server
        // checks before it stores anything; a Content-MD5 on top would hash every body twice.
        let mut put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(object.body.clone()))
            .content_length(object.body.len() as i64)
            .content_type(&object.meta.content_type)
            .set_cache_control(object.meta.cache_control.clone())
            .set_content_disposition(object.meta.content_disposition.clone())
            .metadata(STORED_AT, object.meta.stored_at.to_string());
        if mode == PutMode::IfAbsent {
            put = put.if_none_match("*");
        }
        match put.send().await {
            Ok(_) => Ok(PutOutcome::Stored),
            Err(e) if mode == PutMode::IfAbsent && status_of(&e) == Some(412) => {
                Ok(PutOutcome::AlreadyExists)
            }
            Err(e) => Err(classify("PUT", e)),
        }
    }

    async fn read(&self, key: &str) -> Result<Option<Reading>, StoreError> {
        let got = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        let out = match got {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some() && absent(status_of(&e), e.code()) => {
                return Ok(None);
            }
            Err(e) => return Err(classify("GET", e)),
        };
        // An object someone else put has no `stored-at`: it was stored when it was modified.
        let stored_at = out
            .metadata
            .as_ref()
            .and_then(|m| m.get(STORED_AT))
            .and_then(|v| v.parse::<u64>().ok())
            .or_else(|| {
                let modified = out.last_modified?;
                u64::try_from(modified.secs()).ok()
            })
            .unwrap_or(0);
        let meta = Meta {
            content_type: out.content_type.unwrap_or_default(),
            cache_control: out.cache_control,
            stored_at,
            content_disposition: out.content_disposition,
        };
        // `content_length` is the answer's `Content-Length` header: the length of what is
        // still to come, which the reader checks the body against.
        let len = out
            .content_length
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| StoreError::transient("GET: no Content-Length in the answer"))?;
        // `ByteStream` hands over each chunk as hyper receives it: nothing here holds the
        // whole body (tests/bucket_reads.rs reads the first half of a body whose second half
        // never comes).
        let body = futures_util::stream::unfold(out.body, |mut body| async move {
            let chunk = body.next().await?;
            Some((
                chunk.map_err(|e| StoreError::transient(format!("GET body: {e}"))),
                body,
            ))
        });
        Ok(Some(Reading {
            meta,
            len,
            body: Box::pin(body),
        }))
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

/// The user metadata (`x-amz-meta-stored-at`) that keeps when a result was rendered, in
/// seconds since the Unix epoch.
const STORED_AT: &str = "stored-at";

/// Whether a refused GET means "no such object". A bucket answers 404 `NoSuchKey` when the
/// caller may list it, and 403 `AccessDenied` when it may not (S3 does not tell a caller without
/// `s3:ListBucket` whether a key exists). A 403 for bad credentials and a 404 for a missing
/// bucket are errors: no key will ever be found there, and the breaker should hear of it.
fn absent(status: Option<u16>, code: Option<&str>) -> bool {
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
