//! Real servers on 127.0.0.1:0 for the integration tests: an upstream that can misbehave on
//! purpose, an S3 server (s3s-fs, SigV4) behind a front that can fail or hold requests, and the
//! proxy itself: in process through `proxy::run` over a store the test built (`main` also
//! opens the store from the settings and waits for the upstream's health first), or as the real
//! binary (`ProxyProcess`) where the whole start-up matters.
#![allow(dead_code)] // each test binary uses a different part of this kit

pub mod browser;
pub mod seaweed;
#[cfg(feature = "worker")]
pub mod worker;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::channel::Channel;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use imgproxy_cache::aws::{AddressingStyle, Endpoint, tune};
use imgproxy_cache::body::{Body, BoxError};
use imgproxy_cache::cache::DrainReport;
use imgproxy_cache::cache::s3::S3Store;
use imgproxy_cache::cache::{Store, Stores};
use imgproxy_cache::proxy::config::Config;
use imgproxy_cache::settings::FromVars;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;

pub const BUCKET: &str = "results";
pub const ACCESS_KEY: &str = "test-access-key";
pub const SECRET_KEY: &str = "test-secret-key";

// ===== the upstream =====

/// A stand-in for imgproxy. Paths choose its behaviour:
/// `/ok/..` 200 image with length, `/kb100/..` a 100 KB one, `/named/..` one with a
/// `Content-Disposition`, `/chunked/..` without length, `/vary/..` with
/// `Vary: Accept`, `/nostore/..` with `no-store`, `/status/N` an empty N, `/truncate/..` a body
/// cut short, `/big/..` and `/bigchunked/..` 200 KiB, `/gated/..` half a body then waits for
/// [`Upstream::release`], `/stall/..` half a body then nothing, `/huge/..` [`HUGE`] bytes,
/// `/hugegated/..` half of them then waits for the release, `/html/..` a `text/html` page,
/// `/svg/..` an SVG and `/svgsanitized/..` one marked as the worker marks its own,
/// `/ttl/N` an image with `max-age=N`, `/echo/..` the `X-Forwarded-For`, `X-Real-IP` and
/// `Forwarded` it was sent, `/health` 200.
pub struct Upstream {
    pub addr: SocketAddr,
    gate: Arc<Semaphore>,
    pub requests: Arc<AtomicUsize>,
}

pub const BIG: usize = 200 * 1024;
pub const HUGE: usize = 8 * 1024 * 1024;

/// One shared buffer for every `/kb100/` body (100 KB).
pub fn kb100() -> Bytes {
    static BODY: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    BODY.get_or_init(|| Bytes::from(vec![5u8; 100_000])).clone()
}

/// One shared buffer for every `/huge/` body, so the upstream itself holds no copies.
fn huge() -> Bytes {
    static HUGE_BODY: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    HUGE_BODY
        .get_or_init(|| Bytes::from(vec![9u8; HUGE]))
        .clone()
}

/// The body the upstream sends for `path`: unique per path, so keys and bytes can be matched.
pub fn body_for(path: &str) -> Bytes {
    Bytes::from(format!("image bytes for {path} ").repeat(64))
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gate = Arc::new(Semaphore::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (g, r) = (gate.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (g, r) = (g.clone(), r.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let (g, r) = (g.clone(), r.clone());
                        async move { Ok::<_, Infallible>(upstream_answer(req, &g, &r)) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            gate,
            requests,
        }
    }

    /// Lets every `/gated/` response finish.
    pub fn release(&self) {
        self.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn upstream_answer(
    req: Request<Incoming>,
    gate: &Arc<Semaphore>,
    requests: &AtomicUsize,
) -> Response<Body> {
    requests.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_owned();
    let body = body_for(&path);
    let kind = path.split('/').nth(1).unwrap_or_default().to_owned();
    let with_len = |b: http::response::Builder, body: Bytes| {
        b.header("content-length", body.len())
            .body(Full::new(body).map_err(|n| match n {}).boxed())
            .unwrap()
    };
    let img = || {
        Response::builder()
            .header("content-type", "image/jpeg")
            .header("cache-control", "max-age=31536000, public")
    };
    match kind.as_str() {
        "health" => with_len(
            Response::builder(),
            Bytes::from_static(b"imgproxy is running"),
        ),
        "ok" => with_len(img(), body),
        "png" => with_len(
            Response::builder()
                .header("content-type", "image/png")
                .header("cache-control", "max-age=31536000, public"),
            Bytes::from_static(include_bytes!("../fixtures/gradient.png")),
        ),
        "vary" => with_len(img().header("vary", "Accept"), body),
        "nostore" => with_len(img().header("cache-control", "no-store"), body),
        "status" => {
            let code: u16 = path.rsplit('/').next().unwrap().parse().unwrap();
            with_len(img().status(code), body)
        }
        "big" => with_len(img(), Bytes::from(vec![7u8; BIG])),
        "kb100" => with_len(img(), kb100()),
        "named" => with_len(
            img().header("content-disposition", "inline; filename=\"named.jpg\""),
            body,
        ),
        "huge" => with_len(img(), huge()),
        "hugegated" => {
            let huge = huge();
            img()
                .header("content-length", HUGE)
                .body(chunks(
                    vec![huge.slice(..HUGE / 2)],
                    Tail::Gate(gate.clone(), huge.slice(HUGE / 2..)),
                ))
                .unwrap()
        }
        "html" => with_len(
            Response::builder()
                .header("content-type", "text/html; charset=utf-8")
                .header("cache-control", "max-age=31536000, public"),
            Bytes::from_static(b"<script>alert(document.domain)</script>"),
        ),
        "svg" | "svgsanitized" => {
            let mut b = Response::builder()
                .header("content-type", "image/svg+xml")
                .header("cache-control", "max-age=31536000, public");
            if kind == "svgsanitized" {
                b = b.header(imgproxy_cache::contract::SANITIZED_SVG_HEADER, "1");
            }
            with_len(
                b,
                Bytes::from_static(b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>"),
            )
        }
        "ttl" => {
            let secs = path.rsplit('/').next().unwrap();
            with_len(
                Response::builder()
                    .header("content-type", "image/jpeg")
                    .header("cache-control", format!("max-age={secs}, public")),
                body,
            )
        }
        "echo" => {
            let seen = ["x-forwarded-for", "x-real-ip", "forwarded"]
                .map(|name| {
                    let values: Vec<&str> = req
                        .headers()
                        .get_all(name)
                        .iter()
                        .map(|v| v.to_str().unwrap())
                        .collect();
                    format!("{name}: {}", values.join(" | "))
                })
                .join("\n");
            with_len(
                Response::builder().header("content-type", "text/plain"),
                Bytes::from(seen),
            )
        }
        "chunked" => img()
            .body(chunks(vec![body.slice(..10), body.slice(10..)], Tail::End))
            .unwrap(),
        "bigchunked" => {
            let big = Bytes::from(vec![7u8; BIG]);
            let parts = (0..BIG / 8192)
                .map(|i| big.slice(i * 8192..(i + 1) * 8192))
                .collect();
            img().body(chunks(parts, Tail::End)).unwrap()
        }
        "truncate" => img()
            .header("content-length", body.len())
            .body(chunks(vec![body.slice(..body.len() / 2)], Tail::Fail))
            .unwrap(),
        "gated" => img()
            .header("content-length", body.len())
            .body(chunks(
                vec![body.slice(..body.len() / 2)],
                Tail::Gate(gate.clone(), body.slice(body.len() / 2..)),
            ))
            .unwrap(),
        "stall" => img()
            .header("content-length", body.len())
            .body(chunks(vec![body.slice(..body.len() / 2)], Tail::Never))
            .unwrap(),
        _ => with_len(
            Response::builder().status(404),
            Bytes::from_static(b"no such route"),
        ),
    }
}

/// How a streamed upstream body ends after its first chunks.
enum Tail {
    End,
    /// An error: hyper closes the connection before `Content-Length` bytes were sent.
    Fail,
    /// Waits for the gate, then sends the rest.
    Gate(Arc<Semaphore>, Bytes),
    Never,
}

fn chunks(parts: Vec<Bytes>, tail: Tail) -> Body {
    let (mut tx, body) = Channel::<Bytes, BoxError>::new(4);
    tokio::spawn(async move {
        for part in parts {
            if tx.send_data(part).await.is_err() {
                return;
            }
        }
        match tail {
            Tail::End => {}
            Tail::Fail => tx.abort("upstream failed mid-body".into()),
            Tail::Gate(gate, rest) => {
                let _open = gate.acquire().await;
                let _ = tx.send_data(rest).await;
            }
            // Keeps the body open, sending nothing, for as long as the test runs.
            Tail::Never => std::future::pending::<()>().await,
        }
    });
    body.boxed()
}

// ===== the S3 server =====

/// s3s-fs (a real S3 protocol implementation with SigV4) on loopback, behind a front that
/// counts requests and can fail or hold them on purpose.
pub struct S3 {
    pub endpoint: String,
    pub faults: Arc<Faults>,
    _dir: tempfile::TempDir,
}

pub struct Faults {
    pub puts: AtomicUsize,
    pub heads: AtomicUsize,
    /// The next this-many PUTs answer 500 InternalError.
    pub fail_puts: AtomicUsize,
    /// The next this-many PUTs (after `fail_puts`) answer 503 SlowDown.
    pub slow_down_puts: AtomicUsize,
    /// Every PUT answers 403 AccessDenied.
    pub deny_puts: std::sync::atomic::AtomicBool,
    /// Every PUT answers 404 NoSuchBucket.
    pub missing_bucket_puts: std::sync::atomic::AtomicBool,
    /// While set, object requests wait for [`S3::release`].
    pub hold: std::sync::atomic::AtomicBool,
    /// The next this-many PUT bodies get one byte flipped on the way to the server.
    pub corrupt_puts: AtomicUsize,
    pub gets: AtomicUsize,
    /// The next this-many object GETs answer 500 InternalError.
    pub fail_gets: AtomicUsize,
    /// Every object GET answers 403 AccessDenied, as a bucket does for a missing key to a
    /// caller without s3:ListBucket.
    pub deny_gets: std::sync::atomic::AtomicBool,
    /// Object GETs are answered this many milliseconds late.
    pub get_delay_ms: std::sync::atomic::AtomicU64,
    /// Object GET bodies stop after their first half; the rest never comes.
    pub stall_get_bodies: std::sync::atomic::AtomicBool,
    gate: Semaphore,
}

impl S3 {
    pub async fn start() -> S3 {
        let dir = tempfile::tempdir().unwrap();
        let fs = s3s_fs::FileSystem::new(dir.path()).unwrap();
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let faults = Arc::new(Faults::default());

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let f = faults.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                // s3s never sets it; without it keep-alive requests wait 40 ms for delayed ACKs.
                let _ = stream.set_nodelay(true);
                let (service, f) = (service.clone(), f.clone());
                tokio::spawn(async move {
                    let front = service_fn(move |req: Request<Incoming>| {
                        let (service, f) = (service.clone(), f.clone());
                        async move { f.answer(req, &service).await }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), front)
                        .await;
                });
            }
        });
        let s3 = S3 {
            endpoint,
            faults,
            _dir: dir,
        };
        s3.client()
            .create_bucket()
            .bucket(BUCKET)
            .send()
            .await
            .unwrap();
        s3
    }

    pub fn client(&self) -> aws_sdk_s3::Client {
        client_for(&self.endpoint)
    }

    pub fn store(&self) -> Arc<dyn Store> {
        Arc::new(s3_store(&self.endpoint, BUCKET, ACCESS_KEY, SECRET_KEY))
    }

    /// The bucket as the proxy opens it: one client for uploads, another for lookups.
    pub fn stores(&self) -> Stores {
        Stores::bucket(self.store(), self.store())
    }

    /// [`S3::stores`] with a disk tier of 64 MiB (and so the upload spool) in `dir`.
    pub fn stores_with_disk(&self, dir: &std::path::Path) -> Stores {
        let mut stores = self.stores();
        stores.disk = Some(Arc::new(
            imgproxy_cache::cache::fs::FsStore::open(dir, 64 << 20).unwrap(),
        ));
        stores
    }

    /// The object under `key`: body, content type, cache control.
    pub async fn object(&self, key: &str) -> Option<(Bytes, String, Option<String>)> {
        let out = self
            .client()
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .ok()?;
        let content_type = out.content_type.clone().unwrap_or_default();
        let cache_control = out.cache_control.clone();
        let body = out.body.collect().await.unwrap().into_bytes();
        Some((body, content_type, cache_control))
    }

    /// Stores an object directly, as another replica would have.
    pub async fn put(&self, key: &str, body: Bytes) {
        self.client()
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .content_type("image/jpeg")
            .body(body.into())
            .send()
            .await
            .unwrap();
    }

    pub async fn keys(&self) -> Vec<String> {
        let out = self
            .client()
            .list_objects_v2()
            .bucket(BUCKET)
            .send()
            .await
            .unwrap();
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    }

    pub fn puts(&self) -> usize {
        self.faults.puts.load(Ordering::SeqCst)
    }

    pub fn heads(&self) -> usize {
        self.faults.heads.load(Ordering::SeqCst)
    }

    pub fn gets(&self) -> usize {
        self.faults.gets.load(Ordering::SeqCst)
    }

    pub fn release(&self) {
        self.faults.hold.store(false, Ordering::SeqCst);
        self.faults.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }
}

/// The store over `bucket` at `endpoint` with static credentials, as the proxy opens it.
pub fn s3_store(endpoint: &str, bucket: &str, access_key: &str, secret_key: &str) -> S3Store {
    S3Store::new(
        client_with(endpoint, access_key, secret_key),
        imgproxy_cache::aws::Signing::fixed(access_key, secret_key, "us-east-1"),
        bucket,
        Endpoint {
            url: endpoint,
            style: AddressingStyle::Path,
        },
    )
}

/// A client with static test credentials, built explicitly so no environment leaks in.
pub fn client_for(endpoint: &str) -> aws_sdk_s3::Client {
    client_with(endpoint, ACCESS_KEY, SECRET_KEY)
}

pub fn client_with(endpoint: &str, access_key: &str, secret_key: &str) -> aws_sdk_s3::Client {
    let builder = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            access_key, secret_key, None, None, "tests",
        ))
        .http_client(imgproxy_cache::aws::http_client());
    let endpoint = Endpoint {
        url: endpoint,
        style: AddressingStyle::Path,
    };
    aws_sdk_s3::Client::from_conf(tune(builder, Some(endpoint), Duration::from_secs(5)).build())
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            puts: AtomicUsize::new(0),
            heads: AtomicUsize::new(0),
            fail_puts: AtomicUsize::new(0),
            slow_down_puts: AtomicUsize::new(0),
            deny_puts: Default::default(),
            missing_bucket_puts: Default::default(),
            hold: Default::default(),
            corrupt_puts: AtomicUsize::new(0),
            gets: AtomicUsize::new(0),
            fail_gets: AtomicUsize::new(0),
            deny_gets: Default::default(),
            get_delay_ms: Default::default(),
            stall_get_bodies: Default::default(),
            gate: Semaphore::new(0),
        }
    }
}

impl Faults {
    async fn answer(
        &self,
        req: Request<Incoming>,
        service: &s3s::service::S3Service,
    ) -> Result<Response<s3s::Body>, s3s::HttpError> {
        // Object requests have a key after the bucket; bucket set-up and listing pass freely.
        let object = req
            .uri()
            .path()
            .trim_start_matches('/')
            .split_once('/')
            .is_some_and(|(_, key)| !key.is_empty());
        if object {
            match *req.method() {
                Method::PUT => self.puts.fetch_add(1, Ordering::SeqCst),
                Method::HEAD => self.heads.fetch_add(1, Ordering::SeqCst),
                Method::GET => self.gets.fetch_add(1, Ordering::SeqCst),
                _ => 0,
            };
            if self.hold.load(Ordering::SeqCst) {
                let _open = self.gate.acquire().await;
            }
            if req.method() == Method::GET {
                return self.answer_get(req, service).await;
            }
            if req.method() == Method::PUT {
                let failing = self
                    .fail_puts
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if failing {
                    return Ok(s3_error(500, "InternalError"));
                }
                let slowing = self
                    .slow_down_puts
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if slowing {
                    return Ok(s3_error(503, "SlowDown"));
                }
                if self.deny_puts.load(Ordering::SeqCst) {
                    return Ok(s3_error(403, "AccessDenied"));
                }
                if self.missing_bucket_puts.load(Ordering::SeqCst) {
                    return Ok(s3_error(404, "NoSuchBucket"));
                }
                let corrupting = self
                    .corrupt_puts
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if corrupting {
                    let (parts, body) = req.into_parts();
                    let mut body = body.collect().await.unwrap().to_bytes().to_vec();
                    let middle = body.len() / 2;
                    body[middle] ^= 0xFF;
                    let req = Request::from_parts(parts, s3s::Body::from(Bytes::from(body)));
                    return service.call(req).await;
                }
            }
        }
        service.call(req.map(s3s::Body::from)).await
    }
}

impl Faults {
    async fn answer_get(
        &self,
        req: Request<Incoming>,
        service: &s3s::service::S3Service,
    ) -> Result<Response<s3s::Body>, s3s::HttpError> {
        let delay = self.get_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let failing = self
            .fail_gets
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Ok(s3_error(500, "InternalError"));
        }
        if self.deny_gets.load(Ordering::SeqCst) {
            return Ok(s3_error(403, "AccessDenied"));
        }
        let response = service.call(req.map(s3s::Body::from)).await?;
        if !self.stall_get_bodies.load(Ordering::SeqCst) || response.status() != StatusCode::OK {
            return Ok(response);
        }
        // The head as the server sent it (its Content-Length included), half the body.
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let half = chunks(vec![body.slice(..body.len() / 2)], Tail::Never);
        Ok(Response::from_parts(parts, s3s::Body::http_body(half)))
    }
}

fn s3_error(status: u16, code: &str) -> Response<s3s::Body> {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected</Message></Error>"
    );
    Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .body(s3s::Body::from(xml))
        .unwrap()
}

// ===== the proxy =====

pub struct Proxy {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<DrainReport>,
}

/// The proxy's configuration for tests: fast retries, everything else as documented.
pub fn config(upstream: &Upstream, extra: &[(&str, &str)]) -> Config {
    config_for(&upstream.url(), extra)
}

/// [`config`] for an upstream at `url`.
pub fn config_for(url: &str, extra: &[(&str, &str)]) -> Config {
    let mut vars = std::collections::BTreeMap::from([
        ("UPSTREAM_URL".to_owned(), url.to_owned()),
        ("UPLOAD_RETRY_BASE_MS".to_owned(), "10".to_owned()),
        ("UPLOAD_RETRY_MAX_MS".to_owned(), "50".to_owned()),
        ("SHUTDOWN_TIMEOUT_SECS".to_owned(), "20".to_owned()),
    ]);
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config::from_vars(vars).unwrap()
}

impl Proxy {
    pub async fn start(config: Config, stores: impl Into<Stores>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(imgproxy_cache::proxy::run(
            listener,
            config,
            stores.into(),
            async {
                let _ = stopped.await;
            },
        ));
        Proxy {
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// Signals shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down and waits until every request and upload has finished.
    pub async fn shutdown(mut self) -> DrainReport {
        self.begin_shutdown();
        self.task.await.unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn metrics(&self) -> String {
        let (status, _, body) = get(&self.url("/_imgproxy-cache/metrics")).await;
        assert_eq!(status, StatusCode::OK);
        String::from_utf8(body.to_vec()).unwrap()
    }
}

/// The value of one metric line, e.g. `imgproxy_cache_uploads_total{outcome="stored"}`; 0
/// when the series does not exist yet.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

// ===== an upstream that speaks raw HTTP/1.x =====

/// Answers every request with `response`, byte for byte, then closes the connection: for
/// framings hyper never produces itself. Returns its URL.
pub async fn raw_upstream(response: &'static [u8]) -> String {
    recording_upstream(response).await.0
}

/// [`raw_upstream`], and the request heads it received, in order.
#[allow(dead_code)]
pub async fn recording_upstream(
    response: &'static [u8],
) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let received = heads.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let received = received.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                received
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                let _ = stream.write_all(response).await;
            });
        }
    });
    (url, heads)
}

// ===== the proxy as a process of its own =====

/// The real `imgproxy-cache` binary with a local store in a temporary directory, for what
/// only a process of its own can show (its peak memory). Killed when dropped.
pub struct ProxyProcess {
    child: std::process::Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    log: Arc<std::sync::Mutex<String>>,
}

impl ProxyProcess {
    /// Starts it in front of `upstream` with the settings `extra` and waits for its "ready".
    pub fn start(upstream: &str, extra: &[(&str, &str)]) -> ProxyProcess {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_imgproxy-cache"))
            .env_clear()
            .env("IMGPROXY_BIND", "127.0.0.1:0")
            .env("UPSTREAM_URL", upstream)
            .env("CACHE_DIR", dir.path().join("store"))
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .envs(extra.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(std::sync::Mutex::new(String::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line)
                    && entry["message"] == "ready"
                {
                    let addr = entry["addr"].as_str().unwrap().parse().unwrap();
                    let _ = ready_tx.send(addr);
                }
                let mut log = lines.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = ready_rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("the proxy did not get ready: {}", log.lock().unwrap()));
        ProxyProcess {
            child,
            addr,
            dir,
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The most memory the process has held (`VmHWM`), in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.status("VmHWM") / 1024.0
    }

    /// The threads the process runs now.
    pub fn threads(&self) -> f64 {
        self.status("Threads")
    }

    /// A number from `/proc/PID/status` (`kB` dropped).
    fn status(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in\n{status}"))
    }

    /// Whether the local store holds an object under `key`.
    pub fn stored(&self, key: &str) -> bool {
        self.stored_len(key).is_some()
    }

    /// The length of the object the local store holds under `key`.
    pub fn stored_len(&self, key: &str) -> Option<u64> {
        let file = self.dir.path().join("store").join(key);
        file.metadata()
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    pub async fn metrics(&self) -> String {
        let (status, _, body) = get(&self.url("/_imgproxy-cache/metrics")).await;
        assert_eq!(status, StatusCode::OK);
        String::from_utf8(body.to_vec()).unwrap()
    }

    /// Stops it with SIGTERM (uploads drain) and waits; returns what it logged.
    pub fn stop(&mut self) -> String {
        // SAFETY: a signal to our own child, whose pid we hold until `wait` below.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
        self.log.lock().unwrap().clone()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Kills it with SIGKILL, as a crash or the OOM killer would, and waits.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `done` says so (a state the test observes, polled, never a guess at how long
/// something takes); fails after 30 s.
pub async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ===== namespaces =====

/// Set in the child that [`in_namespace`] re-runs a test in.
const IN_NAMESPACE: &str = "IMGPROXY_CACHE_TEST_IN_NAMESPACE";

/// Runs `body` in new user and `namespace` namespaces (`--net`, `--mount`; `unshare` needs
/// no privileges for them) after the shell `setup` ran there as the namespace's root: the
/// test binary re-runs the test `name` inside and checks that the child ran it and passed.
pub fn in_namespace(
    name: &str,
    namespace: &str,
    setup: &str,
    body: impl std::future::Future<Output = ()>,
) {
    if std::env::var_os(IN_NAMESPACE).is_some() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        return runtime.block_on(body);
    }
    let script = format!("{setup} && exec \"$@\"");
    let output = std::process::Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            namespace,
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .arg(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(IN_NAMESPACE, "1")
        .output()
        .expect("unshare (util-linux) runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains(&format!("test {name} ... ok")),
        "the run in a namespace failed: {}\n{stdout}\n{stderr}",
        output.status
    );
}

// ===== a client =====

pub fn http_client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub async fn request(method: Method, url: &str, headers: &[(&str, &str)]) -> Response<Incoming> {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    http_client()
        .request(req.body(Empty::new()).unwrap())
        .await
        .unwrap()
}

/// A GET that reads the whole body, or the error that cut it (at the head or mid-body).
pub async fn try_get(url: &str) -> Result<(StatusCode, Bytes), BoxError> {
    let req = Request::get(url).body(Empty::new()).unwrap();
    let response = http_client().request(req).await?;
    let status = response.status();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}

/// A GET that reads the whole body.
pub async fn get(url: &str) -> (StatusCode, http::HeaderMap, Bytes) {
    let response = request(Method::GET, url, &[]).await;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

pub fn key(path: &str) -> String {
    imgproxy_cache::cache::cache_key("", path)
}
