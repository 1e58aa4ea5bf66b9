//! Signed GETs and PUTs of one bucket's objects, without the SDK's call pipeline.
//!
//! Every request that misses memory and disk asks the bucket first, and every result stored
//! is one PUT, so these two calls cost as much as everything else the proxy does. Through the
//! SDK a GET took about 115 µs of CPU on the benchmark machine, and a PUT more: endpoint and
//! auth-scheme resolution, interceptors, the orchestrator, then signing. Here each is one
//! signed request on a plain hyper client: the SDK's own signer (`aws-sigv4`) with the SDK
//! client's credentials provider (so roles, ECS task credentials and rotation work as they do
//! for the SDK's calls), and the answer sorted by the same rules as every other S3 call
//! ([`super::s3`]). A PUT signs the SHA-256 of its body, which the server checks before it
//! stores anything: a body damaged on the way is refused, never stored. Each thread that
//! calls has a connection pool of its own, as each serving thread has for the upstream
//! ([`crate::proxy::threads`]): a lookup never wakes another thread. HEADs and deletes stay on
//! the SDK: they are rare and never on a client's path.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{
    CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE, IF_NONE_MATCH,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};
use thread_local::ThreadLocal;
use tokio::sync::Mutex;

use super::object::{Meta, Object, Reading};
use super::store::StoreError;
use crate::aws::{AddressingStyle, CONNECT_TIMEOUT, Endpoint, Signing};

/// SHA-256 of the empty body, which every GET signs.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// Credentials this close to their expiry are fetched again before they are used.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);
/// How much of an answer's body is read for its S3 error code (or drained after a PUT).
const ERROR_BODY_MAX: usize = 16 * 1024;
/// Idle connections to the bucket are closed after this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What a key's path segment escapes: everything but S3's unreserved characters and `/`.
const KEY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Signed requests to one bucket's objects.
pub struct Bucket {
    /// One client per calling thread: its connections live on that thread's runtime.
    http: ThreadLocal<HttpClient>,
    /// `None`: anonymous requests.
    provider: Option<SharedCredentialsProvider>,
    credentials: Mutex<Option<Credentials>>,
    region: String,
    /// Everything before the key: `https://endpoint/bucket/` or `https://bucket.endpoint/`.
    base: String,
}

/// A GET's answer, before it becomes a [`Reading`].
pub enum Got {
    Found(Reading),
    /// The bucket says the key is not there, in one of the ways [`super::s3`] counts as absent.
    Absent,
    Refused(Refusal),
}

/// An answer that is neither a success nor (for a GET) "not there": its status and S3 error
/// code, for the caller to sort.
pub struct Refusal {
    pub status: StatusCode,
    pub code: Option<String>,
    pub message: String,
}

impl Bucket {
    /// Requests to `bucket` at `endpoint`, signed as `signing` says.
    pub fn new(signing: Signing, bucket: &str, endpoint: Endpoint<'_>) -> Bucket {
        Bucket {
            http: ThreadLocal::new(),
            provider: signing.credentials,
            credentials: Mutex::new(None),
            region: signing.region,
            base: object_base(bucket, endpoint),
        }
    }

    /// The URL of `key`.
    pub fn url(&self, key: &str) -> String {
        format!("{}{}", self.base, utf8_percent_encode(key, KEY))
    }

    /// GETs `key`: the object's head and a body that streams as it arrives.
    ///
    /// # Errors
    /// A transient [`StoreError`] when the bucket cannot be reached or the credentials cannot
    /// be had; the bucket's own refusals come back as [`Got::Refused`].
    pub async fn get(&self, key: &str) -> Result<Got, StoreError> {
        let request = self
            .request(Method::GET, key, HeaderMap::new(), Bytes::new())
            .await?;
        let response = self.send(request).await?;
        let (parts, body) = response.into_parts();
        if parts.status.is_success() {
            return found(&parts.headers, body).map(Got::Found);
        }
        let refusal = refusal("GET", parts.status, body).await;
        if super::s3::absent(Some(parts.status.as_u16()), refusal.code.as_deref()) {
            return Ok(Got::Absent);
        }
        Ok(Got::Refused(refusal))
    }

    /// PUTs `object` under `key` with its metadata; with `if_absent`, only if the key is not
    /// there yet (`If-None-Match: *`: a 412 refusal says it was).
    ///
    /// # Errors
    /// As [`Bucket::get`]; the bucket's refusals come back as `Ok(Err(refusal))`.
    pub async fn put(
        &self,
        key: &str,
        object: &Object,
        if_absent: bool,
    ) -> Result<Result<(), Refusal>, StoreError> {
        let mut headers = HeaderMap::with_capacity(6);
        let value = |v: &str| {
            HeaderValue::from_str(v).map_err(|_| {
                StoreError::permanent(format!("PUT: a header value cannot be sent: {v:?}"), None)
            })
        };
        headers.insert(CONTENT_TYPE, value(&object.meta.content_type)?);
        if let Some(cache_control) = &object.meta.cache_control {
            headers.insert(CACHE_CONTROL, value(cache_control)?);
        }
        if let Some(disposition) = &object.meta.content_disposition {
            headers.insert(CONTENT_DISPOSITION, value(disposition)?);
        }
        headers.insert(
            HeaderName::from_static(super::s3::STORED_AT_HEADER),
            HeaderValue::from(object.meta.stored_at),
        );
        if if_absent {
            headers.insert(IF_NONE_MATCH, HeaderValue::from_static("*"));
        }
        let request = self
            .request(Method::PUT, key, headers, object.body.clone())
            .await?;
        let response = self.send(request).await?;
        let (parts, body) = response.into_parts();
        if parts.status.is_success() {
            // Read to its end, so the connection goes back to the pool.
            let _ = Limited::new(body, ERROR_BODY_MAX).collect().await;
            return Ok(Ok(()));
        }
        Ok(Err(refusal("PUT", parts.status, body).await))
    }

    /// A signed request for `key`, its `headers` and the payload hash among what is signed.
    async fn request(
        &self,
        method: Method,
        key: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, StoreError> {
        let failed = |e: &dyn std::fmt::Display| {
            StoreError::permanent(format!("{method}: cannot build the request: {e}"), None)
        };
        let payload = if body.is_empty() {
            EMPTY_SHA256.to_owned()
        } else {
            hex::encode(Sha256::digest(&body))
        };
        let url = self.url(key);
        let mut builder = Request::builder().method(method.clone()).uri(&url);
        // A GET goes without one, as every S3 client sends it.
        if !body.is_empty() {
            builder = builder.header(CONTENT_LENGTH, body.len());
        }
        let mut request = builder.body(Full::new(body)).map_err(|e| failed(&e))?;
        request.headers_mut().extend(headers);
        if let Some(credentials) = self.credentials(&method).await? {
            self.sign(&mut request, credentials, payload)
                .map_err(|e| failed(&e))?;
        }
        Ok(request)
    }

    async fn send(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, StoreError> {
        let method = request.method().clone();
        self.http
            .get_or(http_client)
            .request(request)
            .await
            .map_err(|e| StoreError::transient(format!("{method}: {e}")))
    }

    /// The provider's credentials, fetched again when they are about to expire.
    async fn credentials(&self, method: &Method) -> Result<Option<Credentials>, StoreError> {
        let Some(provider) = &self.provider else {
            return Ok(None);
        };
        let mut cached = self.credentials.lock().await;
        let fresh = |c: &Credentials| {
            c.expiry()
                .is_none_or(|at| at > SystemTime::now() + REFRESH_BEFORE_EXPIRY)
        };
        if let Some(credentials) = cached.as_ref().filter(|c| fresh(c)) {
            return Ok(Some(credentials.clone()));
        }
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(|e| StoreError::transient(format!("{method}: no credentials: {e}")))?;
        *cached = Some(credentials.clone());
        Ok(Some(credentials))
    }

    /// Signs `request` as S3 wants it: every header it carries, and `payload` (the body's
    /// SHA-256) as `x-amz-content-sha256`.
    fn sign(
        &self,
        request: &mut Request<Full<Bytes>>,
        credentials: Credentials,
        payload: String,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let mut settings = SigningSettings::default();
        // S3 signs the path as sent, once encoded, and wants the payload hash as a header.
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let identity = Identity::from(credentials);
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()?
            .into();
        let uri = request.uri().to_string();
        let headers = request
            .headers()
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)));
        let signable = SignableRequest::new(
            request.method().as_str(),
            uri.as_str(),
            headers,
            SignableBody::Precomputed(payload),
        )?;
        let (instructions, _) = sign(signable, &params)?.into_parts();
        instructions.apply_to_request_http1x(request);
        Ok(())
    }
}

/// What a refused answer says: its status and the `<Code>` of its error document.
async fn refusal(op: &str, status: StatusCode, body: hyper::body::Incoming) -> Refusal {
    let body = Limited::new(body, ERROR_BODY_MAX)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let code = error_code(&body);
    Refusal {
        status,
        message: format!(
            "{op} failed: {status} {}",
            code.as_deref().unwrap_or("(no S3 error code)")
        ),
        code,
    }
}

fn http_client() -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(crate::tls::https(http))
}

/// `https://endpoint/bucket/` (path style) or `https://bucket.endpoint/` (virtual host).
fn object_base(bucket: &str, endpoint: Endpoint<'_>) -> String {
    let url = endpoint.url.trim_end_matches('/');
    match endpoint.style {
        AddressingStyle::Path => format!("{url}/{bucket}/"),
        AddressingStyle::Virtual => match url.split_once("://") {
            Some((scheme, rest)) => format!("{scheme}://{bucket}.{rest}/"),
            None => format!("{bucket}.{url}/"),
        },
    }
}

/// The object of a 2xx answer: its metadata, and its body as a stream checked against
/// `Content-Length` by the reader.
fn found(headers: &HeaderMap, body: hyper::body::Incoming) -> Result<Reading, StoreError> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let len = text(CONTENT_LENGTH)
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| StoreError::transient("GET: no Content-Length in the answer"))?;
    // An object someone else put has no `stored-at`: it was stored when it was modified.
    let stored_at = headers
        .get(super::s3::STORED_AT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .or_else(|| {
            let modified = httpdate::parse_http_date(&text(http::header::LAST_MODIFIED)?).ok()?;
            Some(
                modified
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .ok()?
                    .as_secs(),
            )
        })
        .unwrap_or(0);
    let meta = Meta {
        content_type: text(CONTENT_TYPE).unwrap_or_default(),
        cache_control: text(CACHE_CONTROL),
        stored_at,
        content_disposition: text(CONTENT_DISPOSITION),
    };
    // Each chunk as hyper receives it: nothing here holds the whole body.
    let body = body
        .into_data_stream()
        .map(|chunk| chunk.map_err(|e| StoreError::transient(format!("GET body: {e}"))));
    Ok(Reading {
        meta,
        len,
        body: Box::pin(body),
    })
}

/// The `<Code>` of an S3 error document.
fn error_code(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("<Code>")? + "<Code>".len();
    let end = start + text[start..].find("</Code>")?;
    Some(text[start..end].trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_urls_follow_the_addressing_style() {
        let path = object_base(
            "photos",
            Endpoint {
                url: "http://127.0.0.1:9000/",
                style: AddressingStyle::Path,
            },
        );
        assert_eq!(path, "http://127.0.0.1:9000/photos/");
        let virtual_host = object_base(
            "photos",
            Endpoint {
                url: "https://fly.storage.tigris.dev",
                style: AddressingStyle::Virtual,
            },
        );
        assert_eq!(virtual_host, "https://photos.fly.storage.tigris.dev/");
    }

    #[test]
    fn keys_are_escaped_but_their_slashes_kept() {
        let escaped = utf8_percent_encode("thumbs/a b+c%/0123abcd-avif-webp", KEY).to_string();
        assert_eq!(escaped, "thumbs/a%20b%2Bc%25/0123abcd-avif-webp");
    }

    #[test]
    fn the_error_code_is_read_from_the_document() {
        let body =
            b"<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>x</Message></Error>";
        assert_eq!(error_code(body).as_deref(), Some("NoSuchKey"));
        assert_eq!(error_code(b"not xml"), None);
        assert_eq!(error_code(b"<Code>unterminated"), None);
    }

    /// Credentials are fetched once and kept, and fetched again only when they are about to
    /// expire; with no provider, requests go unsigned.
    #[tokio::test]
    async fn credentials_are_kept_until_they_near_expiry() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        #[derive(Debug)]
        struct Counting {
            calls: Arc<AtomicUsize>,
            lifetime: Duration,
        }
        impl ProvideCredentials for Counting {
            fn provide_credentials<'a>(
                &'a self,
            ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
            where
                Self: 'a,
            {
                self.calls.fetch_add(1, Ordering::SeqCst);
                let expiry = SystemTime::now() + self.lifetime;
                aws_credential_types::provider::future::ProvideCredentials::ready(Ok(
                    Credentials::new("id", "secret", None, Some(expiry), "test"),
                ))
            }
        }
        let endpoint = Endpoint {
            url: "http://127.0.0.1:9",
            style: AddressingStyle::Path,
        };
        for (lifetime, calls_for_three) in [
            (Duration::from_secs(3600), 1),
            (REFRESH_BEFORE_EXPIRY / 2, 3),
        ] {
            let calls = Arc::new(AtomicUsize::new(0));
            let signing = Signing {
                credentials: Some(SharedCredentialsProvider::new(Counting {
                    calls: calls.clone(),
                    lifetime,
                })),
                region: "us-east-1".into(),
            };
            let bucket = Bucket::new(signing, "b", endpoint);
            for _ in 0..3 {
                assert!(bucket.credentials(&Method::GET).await.unwrap().is_some());
            }
            assert_eq!(
                calls.load(Ordering::SeqCst),
                calls_for_three,
                "{lifetime:?}"
            );
        }
        let anonymous = Signing {
            credentials: None,
            region: "us-east-1".into(),
        };
        let bucket = Bucket::new(anonymous, "b", endpoint);
        assert!(bucket.credentials(&Method::GET).await.unwrap().is_none());
    }
}
