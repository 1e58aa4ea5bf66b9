//! The worker end to end over real HTTP: the real server loop on 127.0.0.1:0, a source server
//! on loopback that misbehaves on purpose, s3s-fs for `s3://`, temp dirs for `local://`.
//!
//! The source server is itself on loopback, which the worker refuses by default: tests that
//! need a download to succeed set `IMGPROXY_ALLOW_LOOPBACK_SOURCE_ADDRESSES=true`, SSRF tests
//! keep the default to prove the refusal.
// Tests of the bundled worker, or of the binary running it.
#![cfg(feature = "worker")]

mod common;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::worker::{Worker, loopback_ok, worker_config};
use common::{get, request};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::channel::Channel;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use imgproxy_cache::body::{Body, BoxError};
use imgproxy_cache::worker::fetch::Fetcher;
use imgproxy_cache::worker::fetch::s3::S3Source;
use imgproxy_cache::worker::signature::Signer;
use tokio::net::TcpListener;

/// A valid 2×2 RGB PNG.
const PNG: &[u8] = &hex::<73>(
    "89504e470d0a1a0a0000000d4948445200000002000000020802000000fdd49a730000001049444154789c63f8cfc000440c100a001fee03fd8b5f14d40000000049454e44ae426082",
);
/// 68 bytes whose header claims 100000 × 100000 pixels (10 gigapixels).
const BOMB_PNG: &[u8] = &hex::<68>(
    "89504e470d0a1a0a0000000d49484452000186a0000186a0080200000027309c9f0000000b49444154789c6360800100000a00017f80745e0000000049454e44ae426082",
);
/// 35 bytes: a GIF whose screen and only frame claim 65535 × 65535 pixels.
const BOMB_GIF: &[u8] =
    &hex::<35>("474946383961ffffffff800000000000ffffff2c00000000ffffffff0002024401003b");

const fn hex<const N: usize>(s: &str) -> [u8; N] {
    let b = s.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = nibble(b[2 * i]) << 4 | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

const fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        _ => c - b'a' + 10,
    }
}

/// Size of `/huge` and `/huge-declared`.
const HUGE: usize = 64 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

// ===== a source server that misbehaves =====

/// Routes: `/img/<name>` a PNG, `/bomb.png`, `/bomb.gif`, `/huge` 64 MiB chunked,
/// `/huge-declared` 64 MiB with Content-Length, `/slow` answers after 30 s, `/status/N`,
/// `/redirect-loopback` → 127.0.0.1, `/redirect-link-local` → 169.254.169.254,
/// `/redirect-private` → 10.255.255.1, `/redirect-chain/N` → N more redirects then a PNG,
/// `/redirect?to=URL` → URL.
struct Source {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    /// Body bytes handed to the connection by `/huge*`.
    sent: Arc<AtomicUsize>,
    /// Set when the reader went away before the whole `/huge*` body was sent.
    cut_off: Arc<AtomicBool>,
}

impl Source {
    async fn start() -> Source {
        Source::start_on("127.0.0.1:0").await
    }

    async fn start_on(bind: &str) -> Source {
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let source = Source {
            addr,
            requests: Arc::default(),
            sent: Arc::default(),
            cut_off: Arc::default(),
        };
        let (requests, sent, cut_off) = (
            source.requests.clone(),
            source.sent.clone(),
            source.cut_off.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (requests, sent, cut_off) = (requests.clone(), sent.clone(), cut_off.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        requests.fetch_add(1, Ordering::SeqCst);
                        let (sent, cut_off) = (sent.clone(), cut_off.clone());
                        async move { Ok::<_, Infallible>(answer(req, addr, sent, cut_off).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        source
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn full_body(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|n| match n {}).boxed()
}

async fn answer(
    req: Request<Incoming>,
    addr: SocketAddr,
    sent: Arc<AtomicUsize>,
    cut_off: Arc<AtomicBool>,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let png = |bytes: &'static [u8]| {
        Response::builder()
            .header("content-type", "image/png")
            .body(full_body(bytes))
            .unwrap()
    };
    let redirect = |to: String| {
        Response::builder()
            .status(302)
            .header("location", to)
            .body(full_body(Bytes::new()))
            .unwrap()
    };
    match path.as_str() {
        p if p.starts_with("/img/") => png(PNG),
        "/bomb.png" => png(BOMB_PNG),
        "/bomb.gif" => Response::builder()
            .header("content-type", "image/gif")
            .body(full_body(BOMB_GIF))
            .unwrap(),
        "/huge" | "/huge-declared" => {
            let mut response = Response::builder().header("content-type", "image/png");
            if path == "/huge-declared" {
                response = response.header("content-length", HUGE);
            }
            let (mut tx, body) = Channel::<Bytes, BoxError>::new(1);
            tokio::spawn(async move {
                let chunk = Bytes::from(vec![0u8; CHUNK]);
                for _ in 0..HUGE / CHUNK {
                    if tx.send_data(chunk.clone()).await.is_err() {
                        cut_off.store(true, Ordering::SeqCst);
                        return;
                    }
                    sent.fetch_add(CHUNK, Ordering::SeqCst);
                }
            });
            response.body(body.boxed()).unwrap()
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            png(PNG)
        }
        "/redirect-loopback" => redirect(format!("http://{addr}/img/a.png")),
        "/redirect-localhost" => redirect(format!("http://localhost:{}/img/a.png", addr.port())),
        "/redirect-link-local" => redirect("http://169.254.169.254/latest/meta-data/".into()),
        "/redirect-private" => redirect("http://10.255.255.1/a.png".into()),
        "/redirect" => redirect(query.strip_prefix("to=").unwrap_or_default().to_owned()),
        p if p.starts_with("/redirect-chain/") => {
            let n: usize = p.rsplit('/').next().unwrap().parse().unwrap();
            if n == 0 {
                png(PNG)
            } else {
                redirect(format!("/redirect-chain/{}", n - 1))
            }
        }
        p if p.starts_with("/status/") => {
            let code: u16 = p.rsplit('/').next().unwrap().parse().unwrap();
            Response::builder()
                .status(code)
                .body(full_body("source says no"))
                .unwrap()
        }
        _ => Response::builder()
            .status(404)
            .body(full_body("no such route"))
            .unwrap(),
    }
}

// ===== the worker =====

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
}

fn text(body: &Bytes) -> String {
    String::from_utf8_lossy(body).into_owned()
}

// ===== endpoints =====

/// `/health` answers like imgproxy; HEAD on any path is an empty 200; unknown methods 404.
#[tokio::test]
async fn health_head_and_request_ids() {
    let worker = Worker::start(worker_config(&[])).await;
    let (status, headers, body) = get(&worker.url("/health")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "imgproxy is running");
    assert_eq!(header(&headers, "content-type"), "text/plain");
    assert_eq!(header(&headers, "cache-control"), "no-cache");
    assert_eq!(header(&headers, "x-request-id").len(), 21);

    let head = request(Method::HEAD, &worker.url("/anything/at/all"), &[]).await;
    assert_eq!(head.status(), StatusCode::OK);
    assert!(
        head.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty()
    );

    // A safe incoming id is reused; an unsafe one is replaced.
    let r = request(
        Method::GET,
        &worker.url("/health"),
        &[("x-request-id", "abc-123_X")],
    )
    .await;
    assert_eq!(header(r.headers(), "x-request-id"), "abc-123_X");
    let r = request(
        Method::GET,
        &worker.url("/health"),
        &[("x-request-id", "a<b>")],
    )
    .await;
    assert_ne!(header(r.headers(), "x-request-id"), "a<b>");

    let r = request(Method::POST, &worker.url("/health"), &[]).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    worker.shutdown().await;
}

/// With a path prefix, endpoints live under it and nothing else answers.
#[tokio::test]
async fn path_prefix_is_honoured() {
    let source = Source::start().await;
    let worker = Worker::start(loopback_ok(&[("IMGPROXY_PATH_PREFIX", "/imgs")])).await;
    assert_eq!(get(&worker.url("/imgs/health")).await.0, StatusCode::OK);
    assert_eq!(get(&worker.url("/health")).await.0, StatusCode::NOT_FOUND);
    let path = format!("/imgs/unsafe/plain/{}", source.url("/img/a.png"));
    assert_eq!(get(&worker.url(&path)).await.0, StatusCode::OK);
    let path = format!("/unsafe/plain/{}", source.url("/img/a.png"));
    assert_eq!(get(&worker.url(&path)).await.0, StatusCode::NOT_FOUND);
    worker.shutdown().await;
}

// ===== success and headers =====

/// A processed image carries imgproxy's headers; the query string is ignored.
#[tokio::test]
async fn success_headers_follow_imgproxy() {
    let source = Source::start().await;
    let worker = Worker::start(loopback_ok(&[])).await;
    let url = worker.url(&format!(
        "/unsafe/rs:fit:2:2/plain/{}?ignored=1",
        source.url("/img/puppy.png")
    ));
    let (status, headers, body) = get(&url).await;
    assert_eq!(status, StatusCode::OK, "{}", text(&body));
    assert_eq!(header(&headers, "content-type"), "image/png");
    assert_eq!(
        header(&headers, "content-disposition"),
        "inline; filename=\"puppy.png\""
    );
    assert_eq!(
        header(&headers, "cache-control"),
        "max-age=31536000, public"
    );
    assert!(headers.get("vary").is_none());
    assert_eq!(header(&headers, "content-length"), body.len().to_string());
    assert!(body.starts_with(b"\x89PNG"));

    // filename + attachment, and `expires` capping the max-age.
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 100;
    let (status, headers, _) = worker
        .get_plain(
            &format!("fn:cat/att:1/exp:{expires}"),
            &source.url("/img/puppy.png"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        header(&headers, "content-disposition"),
        "attachment; filename=\"cat.png\""
    );
    let max_age: u64 = header(&headers, "cache-control")
        .strip_prefix("max-age=")
        .and_then(|s| s.strip_suffix(", public"))
        .unwrap()
        .parse()
        .unwrap();
    assert!((95..=100).contains(&max_age), "{max_age}");
    worker.shutdown().await;
}

/// `Vary: Accept` appears exactly when format negotiation is on.
#[tokio::test]
async fn vary_accept_only_with_negotiation() {
    let source = Source::start().await;
    for (var, vary) in [
        ("IMGPROXY_AUTO_WEBP", true),
        ("IMGPROXY_ENFORCE_AVIF", true),
        ("IMGPROXY_QUALITY", false),
    ] {
        let value = if vary { "true" } else { "80" };
        let worker = Worker::start(loopback_ok(&[(var, value)])).await;
        let (status, headers, _) = worker.get_plain("", &source.url("/img/a.png")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers.get("vary").is_some(), vary, "{var}");
        if vary {
            assert_eq!(header(&headers, "vary"), "Accept");
        }
        worker.shutdown().await;
    }
}

/// `raw` returns the source bytes untouched.
#[tokio::test]
async fn raw_passes_the_source_through() {
    let source = Source::start().await;
    let worker = Worker::start(loopback_ok(&[])).await;
    let (status, headers, body) = worker.get_plain("raw:1", &source.url("/img/a.png")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], PNG);
    assert_eq!(header(&headers, "content-type"), "image/png");
    worker.shutdown().await;
}

// ===== signatures =====

/// Key rotation over HTTP: URLs signed with either configured pair pass, others get 403.
#[tokio::test]
async fn signature_rotation() {
    let source = Source::start().await;
    let worker = Worker::start(loopback_ok(&[
        ("IMGPROXY_KEY", "6b657931,6b657932"),
        ("IMGPROXY_SALT", "73616c7431,73616c7432"),
    ]))
    .await;
    let path = format!("/rs:fit:2:2/plain/{}", source.url("/img/a.png"));
    for (key, salt) in [(&b"key1"[..], &b"salt1"[..]), (b"key2", b"salt2")] {
        let signature = Signer::new(key.to_vec(), salt.to_vec(), 32)
            .unwrap()
            .sign(&path);
        let (status, _, body) = get(&worker.url(&format!("/{signature}{path}"))).await;
        assert_eq!(status, StatusCode::OK, "{}", text(&body));
    }
    let forged = Signer::new(b"key3".to_vec(), b"salt1".to_vec(), 32)
        .unwrap()
        .sign(&path);
    for signature in [forged.as_str(), "unsafe", "_"] {
        let (status, headers, body) = get(&worker.url(&format!("/{signature}{path}"))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{signature}");
        assert_eq!(text(&body), "Forbidden");
        assert_eq!(header(&headers, "cache-control"), "no-cache");
    }
    // Refused before any download.
    assert_eq!(source.requests(), 2);
    worker.shutdown().await;
}

/// The docs vector from imgproxy's documentation verifies over HTTP (the source itself is
/// unreachable here, so a 404 after the signature check is the proof).
#[tokio::test]
async fn docs_signature_vector_passes_the_check() {
    let worker = Worker::start(worker_config(&[
        ("IMGPROXY_KEY", "736563726574"),
        ("IMGPROXY_SALT", "68656C6C6F"),
        ("IMGPROXY_ALLOWED_SOURCES", "https://allowed.invalid/"),
    ]))
    .await;
    let path =
        "/rs:fill:300:400:0/g:sm/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn.png";
    let (good, _, body) = get(&worker.url(&format!(
        "/oKfUtW34Dvo2BGQehJFR4Nr0_rIjOtdtzJ3QFsUcXH8{path}"
    )))
    .await;
    assert_eq!(good, StatusCode::NOT_FOUND);
    assert_eq!(text(&body), "Invalid source URL");
    let (bad, _, _) = get(&worker.url(&format!(
        "/oKfUtW34Dvo2BGQehJFR4Nr0_rIjOtdtzJ3QFsUcXHA{path}"
    )))
    .await;
    assert_eq!(bad, StatusCode::FORBIDDEN);
    worker.shutdown().await;
}

/// `IMGPROXY_SECRET` demands the bearer token.
#[tokio::test]
async fn secret_is_required_when_set() {
    let source = Source::start().await;
    let worker = Worker::start(loopback_ok(&[("IMGPROXY_SECRET", "s3cret")])).await;
    let url = worker.url(&format!("/unsafe/plain/{}", source.url("/img/a.png")));
    assert_eq!(request(Method::GET, &url, &[]).await.status(), 403);
    let wrong = request(Method::GET, &url, &[("authorization", "Bearer nope")]).await;
    assert_eq!(wrong.status(), 403);
    let right = request(Method::GET, &url, &[("authorization", "Bearer s3cret")]).await;
    assert_eq!(right.status(), 200);
    worker.shutdown().await;
}

// ===== 404: URL problems and missing sources =====

/// Bad paths, unknown options, bad arguments, expired URLs, Pro-only features and refused
/// sources are all 404s, with bodies that say what was wrong.
#[tokio::test]
async fn url_errors_are_404_naming_the_problem() {
    let source = Source::start().await;
    let worker = Worker::start(loopback_ok(&[(
        "IMGPROXY_ALLOWED_SOURCES",
        &format!("http://{}/img/", source.addr),
    )]))
    .await;
    let img = source.url("/img/a.png");
    let cases = [
        (format!("/unsafe/bogus:1/plain/{img}"), "bogus"),
        (format!("/unsafe/w:abc/plain/{img}"), "width"),
        (format!("/unsafe/exp:1/plain/{img}"), "expired"),
        ("/unsafe/rs:fit:1:1/enc/abcdef".to_owned(), "Pro"),
        ("/unsafe/plain/ftp://x/a.png".to_owned(), "scheme"),
        ("/unsafe".to_owned(), "Invalid URL"),
    ];
    for (path, needle) in &cases {
        let (status, headers, body) = get(&worker.url(path)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(text(&body).contains(needle), "{path}: {}", text(&body));
        assert_eq!(header(&headers, "content-type"), "text/plain");
        assert_eq!(header(&headers, "cache-control"), "no-cache");
    }
    // Not in IMGPROXY_ALLOWED_SOURCES: refused without a download.
    let (status, _, body) = worker.get_plain("", &source.url("/redirect-chain/0")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(text(&body), "Invalid source URL");
    assert_eq!(source.requests(), 0);
    worker.shutdown().await;
}

/// A source's 4xx becomes 404, its 5xx becomes 500; disabled schemes are 404.
#[tokio::test]
async fn source_statuses_map_like_imgproxy() {
    let source = Source::start().await;
    let worker = Worker::start(loopback_ok(&[])).await;
    for (code, expected) in [(404, 404), (403, 404), (410, 404), (500, 500), (503, 500)] {
        let (status, _, body) = worker
            .get_plain("", &source.url(&format!("/status/{code}")))
            .await;
        assert_eq!(status.as_u16(), expected, "source {code}");
        assert_eq!(text(&body), "Source image is unreachable");
    }
    for url in ["s3://bucket/key.png", "local:///a.png"] {
        let (status, _, _) = worker.get_plain("", url).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{url}");
    }
    // Nothing listens on port 1.
    let (status, _, _) = worker.get_plain("", "http://127.0.0.1:1/a.png").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    worker.shutdown().await;
}

/// Redirects are followed up to IMGPROXY_MAX_REDIRECTS and no further.
#[tokio::test]
async fn redirects_are_capped() {
    let source = Source::start().await;
    let worker = Worker::start(loopback_ok(&[("IMGPROXY_MAX_REDIRECTS", "3")])).await;
    let (status, _, _) = worker.get_plain("", &source.url("/redirect-chain/3")).await;
    assert_eq!(status, StatusCode::OK);
    let before = source.requests();
    let (status, _, _) = worker.get_plain("", &source.url("/redirect-chain/4")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        source.requests() - before,
        4,
        "the 4th redirect is not followed"
    );
    worker.shutdown().await;
}

// ===== SSRF =====

/// By default loopback sources are refused — by IP literal, by a DNS name resolving to
/// loopback (`localhost`), and as `0.0.0.0` — without a single request reaching them.
#[tokio::test]
async fn loopback_sources_are_refused_by_default() {
    let source = Source::start().await;
    let worker = Worker::start(worker_config(&[])).await;
    let port = source.addr.port();
    for url in [
        format!("http://127.0.0.1:{port}/img/a.png"),
        format!("http://localhost:{port}/img/a.png"),
        format!("http://0.0.0.0:{port}/img/a.png"),
        format!("http://%5B::ffff:127.0.0.1%5D:{port}/img/a.png"),
        format!("http://2130706433:{port}/img/a.png"),
    ] {
        let (status, _, body) = worker.get_plain("", &url).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{url}");
        assert_eq!(text(&body), "Invalid source URL", "{url}");
    }
    assert_eq!(source.requests(), 0);
    worker.shutdown().await;

    // The same names work once loopback is allowed: the refusal above was the policy.
    let worker = Worker::start(loopback_ok(&[])).await;
    let (status, _, _) = worker
        .get_plain("", &format!("http://localhost:{port}/img/a.png"))
        .await;
    assert_eq!(status, StatusCode::OK);
    worker.shutdown().await;
}

/// Every redirect hop is vetted on its resolved address: a source that redirects to the
/// cloud metadata address (link-local) or to a private network (with private sources
/// switched off) is refused without the hop being made. Redirects *to loopback* are proven
/// by `redirects_to_loopback_are_refused`, which needs a first hop that is not loopback.
#[tokio::test]
async fn redirect_hops_are_vetted() {
    let source = Source::start().await;
    // Loopback on so the first hop can reach the test server; private off.
    let worker = Worker::start(loopback_ok(&[(
        "IMGPROXY_ALLOW_PRIVATE_SOURCE_ADDRESSES",
        "false",
    )]))
    .await;
    for path in ["/redirect-link-local", "/redirect-private"] {
        let before = source.requests();
        let started = Instant::now();
        let (status, _, body) = worker.get_plain("", &source.url(path)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(text(&body), "Invalid source URL", "{path}");
        assert_eq!(source.requests() - before, 1, "{path}");
        // Refused, not timed out connecting to an unroutable address.
        assert!(started.elapsed() < Duration::from_secs(2), "{path}");
    }
    for path in ["/redirect-loopback", "/redirect-localhost"] {
        let (status, _, _) = worker.get_plain("", &source.url(path)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    worker.shutdown().await;
}

/// Set in the child process that `redirects_to_loopback_are_refused` runs in its own network.
/// A private address that exists only inside that network, on its loopback interface.
const PRIVATE_ADDR: &str = "10.77.0.1";

/// A source on a private address (allowed by default) that redirects to 127.0.0.1, to
/// `localhost` or to `[::1]` is refused, and the loopback server never sees a request; with
/// loopback allowed the same redirects are followed, so the refusal was the policy.
///
/// Our servers bind loopback only, so the private source runs in a network namespace of its
/// own (`unshare --user --map-root-user --net`, which needs no privileges): its only
/// interface is `lo`, with 10.77.0.1 added. Nothing in it can reach another machine. The test
/// re-runs itself in that namespace and checks that the child ran and passed.
#[test]
fn redirects_to_loopback_are_refused() {
    in_isolated_network(
        "redirects_to_loopback_are_refused",
        &[PRIVATE_ADDR],
        redirects_to_loopback_in_isolated_network(),
    );
}

/// Runs `body` in a network namespace whose only interface is `lo`, with `addresses` added to
/// it: the test binary re-runs the test `name` inside it and checks that the child passed.
fn in_isolated_network(name: &str, addresses: &[&str], body: impl Future<Output = ()>) {
    let mut script = "ip link set lo up".to_owned();
    for address in addresses {
        let (prefix, flags) = if address.contains(':') {
            (128, " nodad")
        } else {
            (32, "")
        };
        script += &format!(" && ip addr add {address}/{prefix} dev lo{flags}");
    }
    common::in_namespace(name, "--net", &script, body);
}

async fn redirects_to_loopback_in_isolated_network() {
    let private = Source::start_on(&format!("{PRIVATE_ADDR}:0")).await;
    let target = Source::start().await;
    let port = target.addr.port();
    let redirects = [
        format!("http://127.0.0.1:{port}/img/a.png"),
        format!("http://localhost:{port}/img/a.png"),
        format!("http://[::1]:{port}/img/a.png"),
    ];
    // `?` escaped: plain sources are percent-unescaped, and a raw `?` would end the path.
    let via_private = |to: &str| private.url(&format!("/redirect%3Fto={to}"));

    // imgproxy's defaults: private sources allowed, loopback refused.
    let worker = Worker::start(worker_config(&[])).await;
    let (status, _, _) = worker.get_plain("", &private.url("/img/a.png")).await;
    assert_eq!(status, StatusCode::OK, "the private first hop is allowed");
    for to in &redirects {
        let before = private.requests();
        let (status, _, body) = worker.get_plain("", &via_private(to)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{to}");
        assert_eq!(text(&body), "Invalid source URL", "{to}");
        assert_eq!(
            private.requests() - before,
            1,
            "{to}: the redirect was served"
        );
    }
    assert_eq!(target.requests(), 0, "no request reached loopback");
    worker.shutdown().await;

    // ::1 listens on its own socket; 127.0.0.1 serves the first two.
    let worker = Worker::start(loopback_ok(&[])).await;
    for to in &redirects[..2] {
        let (status, _, _) = worker.get_plain("", &via_private(to)).await;
        assert_eq!(status, StatusCode::OK, "{to}");
    }
    assert_eq!(target.requests(), 2);
    worker.shutdown().await;
}

/// Addresses the namespace of `ipv6_forms_of_refused_addresses_are_refused` puts on `lo`: IPv6
/// forms that carry a loopback, link-local or private IPv4 address, and the private ranges
/// imgproxy doesn't count (carrier-grade NAT, benchmarking, reserved, site-local).
const EMBEDDING_ADDRS: &[&str] = &[
    "64:ff9b::7f00:1",    // NAT64 of 127.0.0.1
    "2002:7f00:1::1",     // 6to4 of 127.0.0.1
    "::127.0.0.1",        // IPv4-compatible 127.0.0.1
    "64:ff9b::a9fe:a9fe", // NAT64 of 169.254.169.254
    "2002:a9fe:a9fe::1",  // 6to4 of 169.254.169.254
    "100.64.0.1",         // carrier-grade NAT
    "198.18.0.1",         // benchmarking
    "240.0.0.1",          // reserved
    "fec0::1",            // site-local
    "64:ff9b::a00:1",     // NAT64 of 10.0.0.1
    "2002:a00:1::1",      // 6to4 of 10.0.0.1
];

/// Source URLs on IP literals of every missing SSRF class are refused as "Invalid source URL"
/// without the source being contacted: NAT64, 6to4 and IPv4-compatible forms of loopback and
/// link-local addresses under the defaults, and carrier-grade NAT, benchmarking, reserved,
/// site-local and the embedded forms of private addresses with private sources off. With every switch on the
/// same URLs are served, so each source was reachable and the refusal was the policy.
///
/// The addresses exist only inside a network namespace of the test's own (see
/// `redirects_to_loopback_are_refused`), so nothing can leave the machine.
#[test]
fn ipv6_forms_of_refused_addresses_are_refused() {
    in_isolated_network(
        "ipv6_forms_of_refused_addresses_are_refused",
        EMBEDDING_ADDRS,
        embedded_addresses_in_isolated_network(),
    );
}

async fn embedded_addresses_in_isolated_network() {
    let mut sources = Vec::new();
    for addr in EMBEDDING_ADDRS {
        let ip: std::net::IpAddr = addr.parse().unwrap();
        let source = Source::start_on(&SocketAddr::new(ip, 0).to_string()).await;
        // Brackets escaped: plain sources are percent-unescaped.
        let url = match ip {
            std::net::IpAddr::V4(_) => source.url("/img/a.png"),
            std::net::IpAddr::V6(v6) => {
                format!("http://%5B{v6}%5D:{}/img/a.png", source.addr.port())
            }
        };
        sources.push((*addr, source, url));
    }
    // imgproxy's defaults: loopback and link-local refused, whatever the IPv6 wrapping.
    let worker = Worker::start(worker_config(&[])).await;
    refused(&worker, &sources, &EMBEDDING_ADDRS[..5]).await;
    worker.shutdown().await;

    // Private sources off (loopback and link-local on, so only the private class decides).
    let worker = Worker::start(worker_config(&[
        ("IMGPROXY_ALLOW_LOOPBACK_SOURCE_ADDRESSES", "true"),
        ("IMGPROXY_ALLOW_LINK_LOCAL_SOURCE_ADDRESSES", "true"),
        ("IMGPROXY_ALLOW_PRIVATE_SOURCE_ADDRESSES", "false"),
    ]))
    .await;
    refused(&worker, &sources, &EMBEDDING_ADDRS[5..]).await;
    worker.shutdown().await;

    let worker = Worker::start(worker_config(&[
        ("IMGPROXY_ALLOW_LOOPBACK_SOURCE_ADDRESSES", "true"),
        ("IMGPROXY_ALLOW_LINK_LOCAL_SOURCE_ADDRESSES", "true"),
        ("IMGPROXY_ALLOW_PRIVATE_SOURCE_ADDRESSES", "true"),
    ]))
    .await;
    for (_, source, url) in &sources {
        let (status, _, body) = worker.get_plain("", url).await;
        assert_eq!(status, StatusCode::OK, "{url}: {}", text(&body));
        assert_eq!(source.requests(), 1, "{url}");
    }
    worker.shutdown().await;
}

/// Asserts that each source whose address is in `which` is refused as "Invalid source URL"
/// and never contacted.
async fn refused(worker: &Worker, sources: &[(&str, Source, String)], which: &[&str]) {
    let mut checked = 0;
    for (_, source, url) in sources.iter().filter(|(addr, _, _)| which.contains(addr)) {
        let (status, _, body) = worker.get_plain("", url).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{url}");
        assert_eq!(text(&body), "Invalid source URL", "{url}");
        assert_eq!(source.requests(), 0, "{url} was contacted");
        checked += 1;
    }
    assert_eq!(checked, which.len());
}

/// Source host names are resolved on the fetcher's own DNS threads, not on the runtime's
/// blocking pool that image jobs use: with that pool's only thread held, a source named
/// `localhost` is still resolved and downloaded (the source sees the request). Through
/// tokio's `lookup_host` the lookup would wait behind the held thread until the download
/// timed out.
#[test]
fn dns_lookups_do_not_wait_for_the_blocking_pool() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let source = Source::start().await;
        let worker = Worker::start(loopback_ok(&[("IMGPROXY_DOWNLOAD_TIMEOUT", "3")])).await;
        let (held, hold) = std::sync::mpsc::channel::<()>();
        let (started, is_started) = tokio::sync::oneshot::channel::<()>();
        let blocker = tokio::task::spawn_blocking(move || {
            let _ = started.send(());
            let _ = hold.recv();
        });
        is_started.await.unwrap();

        let url = format!("http://localhost:{}/img/a.png", source.addr.port());
        let request = tokio::spawn({
            let url = worker.url(&format!("/unsafe/plain/{url}"));
            async move { get(&url).await }
        });
        let deadline = Instant::now() + Duration::from_secs(2);
        while source.requests() == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let reached = source.requests();
        // Processing needs the blocking pool too: let it go before judging.
        drop(held);
        blocker.await.unwrap();
        let (status, _, body) = request.await.unwrap();
        assert_eq!(reached, 1, "the download waited for the blocking pool");
        assert_eq!(status, StatusCode::OK, "{}", text(&body));
        worker.shutdown().await;
    });
}

// ===== IMGPROXY_ALLOWED_SOURCES =====

/// The allow-list is matched on the parsed URL, not its raw text: a `*` in the host can't
/// swallow a `?`, `#` or `\` that ends the real host, a pattern without a trailing `/` still
/// means the whole host (`img.example.com@127.0.0.1` is host 127.0.0.1), and a path prefix is
/// matched after `..` is resolved, as the request will be sent. Each is answered 404 "Invalid
/// source URL" and the source server sees no request; imgproxy's raw match let all of them
/// reach it.
#[tokio::test]
async fn allowed_sources_match_the_parsed_url() {
    let source = Source::start().await;
    let port = source.addr.port();
    let allowed =
        format!("http://*.example.com/,http://img.example.com,http://127.0.0.1:{port}/img/");
    let worker = Worker::start(loopback_ok(&[("IMGPROXY_ALLOWED_SOURCES", &allowed)])).await;
    for url in [
        format!("http://127.0.0.1:{port}%3F.example.com/img/a.png"),
        format!("http://127.0.0.1:{port}%23.example.com/img/a.png"),
        format!("http://127.0.0.1:{port}%5C.example.com/img/a.png"),
        // `@` escaped: in the plain form a raw one starts the extension.
        format!("http://img.example.com%40127.0.0.1:{port}/img/a.png"),
        format!("http://127.0.0.1:{port}/img/../redirect-chain/0"),
        // `%25` is unescaped by the plain form: the URL parser sees `%2e%2e`, a `..`.
        format!("http://127.0.0.1:{port}/img/%252e%252e/redirect-chain/0"),
    ] {
        let (status, _, body) = worker.get_plain("", &url).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{url}");
        assert_eq!(text(&body), "Invalid source URL", "{url}");
        assert_eq!(source.requests(), 0, "{url} reached the source");
    }
    let (status, _, body) = worker.get_plain("", &source.url("/img/a.png")).await;
    assert_eq!(status, StatusCode::OK, "{}", text(&body));
    worker.shutdown().await;
}

/// Every redirect hop must be allowed too: an allowed source that redirects to another host,
/// or to a path of its own host outside the allowed prefix, is refused without that hop being
/// made; redirects that stay within the allowed prefix are followed.
#[tokio::test]
async fn redirect_hops_are_checked_against_allowed_sources() {
    let source = Source::start().await;
    let port = source.addr.port();
    let allowed = format!("http://127.0.0.1:{port}/redirect");
    let worker = Worker::start(loopback_ok(&[("IMGPROXY_ALLOWED_SOURCES", &allowed)])).await;
    for to in [
        format!("http://localhost:{port}/img/a.png"),
        format!("http://127.0.0.1:{port}/img/a.png"),
    ] {
        let before = source.requests();
        let url = source.url(&format!("/redirect%3Fto={to}"));
        let (status, _, body) = worker.get_plain("", &url).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{to}");
        assert_eq!(text(&body), "Invalid source URL", "{to}");
        assert_eq!(
            source.requests() - before,
            1,
            "{to}: the refused hop was made"
        );
    }
    let (status, _, body) = worker.get_plain("", &source.url("/redirect-chain/2")).await;
    assert_eq!(status, StatusCode::OK, "{}", text(&body));
    worker.shutdown().await;
}

/// imgproxy's documented example `s3://,https://*.example.com/,local://` plus a path prefix
/// (`http://127.0.0.1:PORT/img/`) work through the real worker: `s3://` and `local://` admit
/// their whole scheme, the prefix admits what is under it and nothing else.
#[tokio::test]
async fn allowed_sources_documented_examples() {
    let s3 = common::S3::start().await;
    s3.client()
        .put_object()
        .bucket(common::BUCKET)
        .key("images/a.png")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(PNG))
        .send()
        .await
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("in.png"), PNG).unwrap();
    let source = Source::start().await;
    let port = source.addr.port();
    let allowed = format!("s3://,https://*.example.com/,local://,http://127.0.0.1:{port}/img/");
    let config = loopback_ok(&[
        ("IMGPROXY_ALLOWED_SOURCES", &allowed),
        (
            "IMGPROXY_LOCAL_FILESYSTEM_ROOT",
            root.path().to_str().unwrap(),
        ),
    ]);
    let s3_source = S3Source::new(common::client_for(&s3.endpoint), &config.fetch);
    let fetcher = Fetcher::new(&config.fetch, Some(s3_source));
    let worker = Worker::start_with(config, fetcher).await;
    for url in [
        format!("s3://{}/images/a.png", common::BUCKET),
        "local:///in.png".to_owned(),
        source.url("/img/a.png"),
    ] {
        let (status, _, body) = worker.get_plain("", &url).await;
        assert_eq!(status, StatusCode::OK, "{url}: {}", text(&body));
    }
    for url in [source.url("/status/500"), source.url("/imgs/a.png")] {
        let (status, _, body) = worker.get_plain("", &url).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{url}");
        assert_eq!(text(&body), "Invalid source URL", "{url}");
    }
    assert_eq!(source.requests(), 1);
    worker.shutdown().await;
}

// ===== size and time limits =====

/// A source past IMGPROXY_MAX_SRC_FILE_SIZE is 422, and the download stops early: the source
/// server sees the connection closed long before it sent everything — for a chunked body
/// (counted while streaming) and for a declared Content-Length (refused before reading).
#[tokio::test]
async fn oversize_downloads_are_cut_off_early() {
    let source = Source::start().await;
    let worker = Worker::start(loopback_ok(&[("IMGPROXY_MAX_SRC_FILE_SIZE", "1048576")])).await;
    for path in ["/huge", "/huge-declared"] {
        source.sent.store(0, Ordering::SeqCst);
        source.cut_off.store(false, Ordering::SeqCst);
        let (status, _, body) = worker.get_plain("", &source.url(path)).await;
        assert_eq!(status.as_u16(), 422, "{path}");
        assert_eq!(text(&body), "Invalid source image");
        // The sender notices the closed connection once the socket buffers fill.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !source.cut_off.load(Ordering::SeqCst) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            source.cut_off.load(Ordering::SeqCst),
            "{path}: connection stayed open"
        );
        let sent = source.sent.load(Ordering::SeqCst);
        assert!(sent < HUGE / 4, "{path}: {sent} of {HUGE} bytes were sent");
    }
    worker.shutdown().await;
}

/// A slow source hits IMGPROXY_DOWNLOAD_TIMEOUT: 504.
#[tokio::test]
async fn slow_source_is_a_gateway_timeout() {
    let source = Source::start().await;
    let worker = Worker::start(loopback_ok(&[("IMGPROXY_DOWNLOAD_TIMEOUT", "1")])).await;
    let started = Instant::now();
    let (status, _, _) = worker.get_plain("", &source.url("/slow")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(worker);
}

/// The whole request is bounded by IMGPROXY_TIMEOUT: 503.
#[tokio::test]
async fn whole_request_timeout_is_503() {
    let source = Source::start().await;
    let worker = Worker::start(loopback_ok(&[
        ("IMGPROXY_TIMEOUT", "1"),
        ("IMGPROXY_DOWNLOAD_TIMEOUT", "20"),
    ]))
    .await;
    let started = Instant::now();
    let (status, headers, _) = worker.get_plain("", &source.url("/slow")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&headers, "cache-control"), "no-cache");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(worker);
}

/// With every place taken, the next request is refused at once with 429.
#[tokio::test]
async fn full_worker_answers_429() {
    let source = Source::start().await;
    let worker = Worker::start(loopback_ok(&[("IMGPROXY_MAX_CLIENTS", "1")])).await;
    let slow = worker.url(&format!("/unsafe/plain/{}", source.url("/slow")));
    let hanging = tokio::spawn(async move { get(&slow).await });
    let deadline = Instant::now() + Duration::from_secs(5);
    while source.requests() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let (status, _, body) = worker.get_plain("", &source.url("/img/a.png")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(text(&body), "Too many requests");
    assert!(started.elapsed() < Duration::from_secs(1));
    // Health checks are not processing requests and still answer.
    assert_eq!(get(&worker.url("/health")).await.0, StatusCode::OK);
    hanging.abort();
    drop(worker);
}

// ===== decompression bombs (need the engine's header probe) =====

/// A tiny file whose header claims gigapixels is refused with 422 in milliseconds, before
/// any pixel is decoded.
#[tokio::test]
async fn bombs_are_refused_from_the_header() {
    let source = Source::start().await;
    let worker = Worker::start(loopback_ok(&[])).await;
    for path in ["/bomb.png", "/bomb.gif"] {
        let started = Instant::now();
        let (status, _, body) = worker.get_plain("rs:fit:10:10", &source.url(path)).await;
        assert_eq!(status.as_u16(), 422, "{path}: {}", text(&body));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{path} took {:?}",
            started.elapsed()
        );
    }
    worker.shutdown().await;
}

// ===== local:// =====

/// `local://` serves files under the root and nothing else: `..`, `%2e%2e` (decoded by the
/// plain source form into `..`), a double-encoded `%252e%252e`, encoded slashes, absolute
/// paths and symlinks pointing out are all 404.
#[tokio::test]
async fn local_sources_never_escape_the_root() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.png"), PNG).unwrap();
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("imgs")).unwrap();
    std::fs::write(root.path().join("imgs/in.png"), PNG).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret.png"),
        root.path().join("out.png"),
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("outdir")).unwrap();
    let worker = Worker::start(worker_config(&[(
        "IMGPROXY_LOCAL_FILESYSTEM_ROOT",
        root.path().to_str().unwrap(),
    )]))
    .await;

    let (status, _, body) = worker.get_plain("", "local:///imgs/in.png").await;
    assert_eq!(status, StatusCode::OK, "{}", text(&body));
    assert!(body.starts_with(b"\x89PNG"));

    let secret = outside.path().join("secret.png");
    let secret = secret.to_str().unwrap();
    let up = "../".repeat(16);
    let attempts = [
        format!("local:///{up}{secret}"),
        format!("local:///imgs/{up}{}", &secret[1..]),
        format!("local:///%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e{secret}"),
        format!("local:///%252e%252e/%252e%252e{secret}"),
        format!("local:///..%2f..%2f..%2f..%2f..%2f..{secret}"),
        format!("local://{secret}"),
        "local:///out.png".to_owned(),
        "local:///outdir/secret.png".to_owned(),
        "local:///imgs".to_owned(),
    ];
    for attempt in &attempts {
        let (status, _, body) = worker.get_plain("", attempt).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{attempt}: {}", text(&body));
        assert!(!body.starts_with(b"\x89PNG"), "{attempt} leaked the file");
    }
    // Base64 sources go through the same check.
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("local:///{up}{}", &secret[1..]));
    let (status, _, _) = get(&worker.url(&format!("/unsafe/{encoded}.png"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    worker.shutdown().await;
}

/// `local://` opens without blocking and without following links: a FIFO under the root is
/// answered 404 at once (opening it used to block a thread until a writer came, and the
/// request until the download timeout), a symlink is refused whether it points out of the
/// root or inside it, and regular files, also behind `..`, are still served.
#[tokio::test]
async fn local_sources_open_only_regular_files_without_links() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.png"), PNG).unwrap();
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("imgs")).unwrap();
    std::fs::write(root.path().join("imgs/in.png"), PNG).unwrap();
    let fifo = root.path().join("imgs/pipe.png");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let link = |target: &std::path::Path, name: &str| {
        std::os::unix::fs::symlink(target, root.path().join(name)).unwrap()
    };
    link(&outside.path().join("secret.png"), "out.png");
    link(&root.path().join("imgs/in.png"), "alias.png");
    link(&root.path().join("imgs"), "imgs-alias");
    let worker = Worker::start(worker_config(&[(
        "IMGPROXY_LOCAL_FILESYSTEM_ROOT",
        root.path().to_str().unwrap(),
    )]))
    .await;

    let started = Instant::now();
    let fifo_answer = worker.get_plain("", "local:///imgs/pipe.png").await;
    let fifo_took = started.elapsed();
    // Frees a reader the old code left blocked in open(2), so a failing run ends; with none
    // waiting this fails with ENXIO, which is the expected case.
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo);
    assert_eq!(
        fifo_answer.0,
        StatusCode::NOT_FOUND,
        "{}",
        text(&fifo_answer.2)
    );
    assert!(
        fifo_took < Duration::from_secs(1),
        "the FIFO took {fifo_took:?}"
    );

    for url in [
        "local:///out.png",
        "local:///alias.png",
        "local:///imgs-alias/in.png",
    ] {
        let (status, _, body) = worker.get_plain("", url).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{url}: {}", text(&body));
        assert!(!body.starts_with(b"\x89PNG"), "{url} was served");
    }
    for url in ["local:///imgs/in.png", "local:///imgs/../imgs/./in.png"] {
        let (status, _, body) = worker.get_plain("", url).await;
        assert_eq!(status, StatusCode::OK, "{url}: {}", text(&body));
        assert!(body.starts_with(b"\x89PNG"), "{url}");
    }
    worker.shutdown().await;
}

// ===== s3:// =====

/// `s3://bucket/key` downloads through a real S3 implementation (s3s-fs with SigV4); a
/// missing key is 404.
#[tokio::test]
async fn s3_sources() {
    let s3 = common::S3::start().await;
    s3.client()
        .put_object()
        .bucket(common::BUCKET)
        .key("images/a.png")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(PNG))
        .content_type("image/png")
        .send()
        .await
        .unwrap();
    let config = worker_config(&[]);
    let s3_source = S3Source::new(common::client_for(&s3.endpoint), &config.fetch);
    let fetcher = Fetcher::new(&config.fetch, Some(s3_source));
    let worker = Worker::start_with(config, fetcher).await;
    let (status, headers, body) = worker
        .get_plain("", &format!("s3://{}/images/a.png", common::BUCKET))
        .await;
    assert_eq!(status, StatusCode::OK, "{}", text(&body));
    assert!(body.starts_with(b"\x89PNG"));
    assert_eq!(
        header(&headers, "content-disposition"),
        "inline; filename=\"a.png\""
    );
    let (status, _, _) = worker
        .get_plain("", &format!("s3://{}/images/missing.png", common::BUCKET))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    worker.shutdown().await;
}

// ===== documentation =====

/// The README and `imgproxy-cache worker --help` list every variable the worker reads,
/// with its compatibility.
#[test]
fn docs_and_help_list_every_worker_setting() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("## The bundled worker")
        .expect("README has a worker section");
    let docs = &readme[start..];
    let docs = &docs[..docs[2..].find("\n## ").map_or(docs.len(), |end| end + 2)];
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_imgproxy-cache"))
        .args(["worker", "--help"])
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for setting in imgproxy_cache::worker::config::SETTINGS {
        let row = format!("| `{}` |", setting.name);
        let line = docs.lines().find(|l| l.starts_with(&row));
        let line =
            line.unwrap_or_else(|| panic!("the README's worker section lacks {}", setting.name));
        assert!(
            line.contains(&format!("| {} |", setting.compat.as_str())),
            "{line}"
        );
        assert!(help.contains(setting.name), "--help lacks {}", setting.name);
    }
}

/// A bad worker setting stops start-up with exit code 2, naming the variable and the value.
#[test]
fn worker_config_errors_name_the_variable() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_imgproxy-cache"))
        .arg("worker")
        .env_clear()
        .env("IMGPROXY_MAX_SRC_RESOLUTION", "huge")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("IMGPROXY_MAX_SRC_RESOLUTION") && stderr.contains("huge"),
        "{stderr}"
    );
}

// ===== processing through the engine =====

/// The result format follows the URL's extension, or `Accept` when auto WebP is on, and the
/// headers follow the result, not the source.
#[tokio::test]
async fn result_format_drives_the_headers() {
    let source = Source::start().await;
    let worker = Worker::start(loopback_ok(&[])).await;
    let (status, headers, body) = worker
        .get_plain(
            "rs:fit:1:1",
            &format!("{}@webp", source.url("/img/puppy.png")),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{}", text(&body));
    assert_eq!(header(&headers, "content-type"), "image/webp");
    assert_eq!(
        header(&headers, "content-disposition"),
        "inline; filename=\"puppy.webp\""
    );
    assert!(body.starts_with(b"RIFF"));
    worker.shutdown().await;

    let worker = Worker::start(loopback_ok(&[("IMGPROXY_AUTO_WEBP", "true")])).await;
    let url = worker.url(&format!("/unsafe/plain/{}", source.url("/img/puppy.png")));
    let response = request(Method::GET, &url, &[("accept", "image/webp,*/*")]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(response.headers(), "content-type"), "image/webp");
    assert_eq!(header(response.headers(), "vary"), "Accept");
    let response = request(Method::GET, &url, &[("accept", "image/png")]).await;
    assert_eq!(header(response.headers(), "content-type"), "image/png");
    worker.shutdown().await;
}

// ===== SVG =====

/// A `local://` SVG comes back as sanitised `image/svg+xml` by default — also when
/// `IMGPROXY_SKIP_PROCESSING_FORMATS` names svg, as in imgproxy — and as PNG when `@png`
/// or `f:png` asks for it.
#[tokio::test]
async fn svg_sources_over_http() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(
        root.path().join("logo.svg"),
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20" onload="alert(1)"><script>alert(2)</script><rect width="20" height="20" fill="#f00"/><rect x="20" width="20" height="20" fill="#00f"/></svg>"##,
    )
    .unwrap();
    std::fs::write(
        root.path().join("huge.svg"),
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="100000" height="100000"/>"#,
    )
    .unwrap();
    let root = root.path().to_str().unwrap();
    let skip_svg = [("IMGPROXY_SKIP_PROCESSING_FORMATS", "svg")];
    for extra in [&[][..], &skip_svg[..]] {
        let mut vars = vec![("IMGPROXY_LOCAL_FILESYSTEM_ROOT", root)];
        vars.extend_from_slice(extra);
        let worker = Worker::start(worker_config(&vars)).await;
        let (status, headers, body) = worker.get_plain("rs:fit:10:10", "local:///logo.svg").await;
        assert_eq!(status, StatusCode::OK, "{}", text(&body));
        assert_eq!(header(&headers, "content-type"), "image/svg+xml");
        assert_eq!(
            header(&headers, "content-disposition"),
            "inline; filename=\"logo.svg\""
        );
        let svg = text(&body);
        assert!(svg.contains("<svg") && svg.contains("<path"), "{svg}");
        assert!(!svg.contains("alert") && !svg.contains("onload"), "{svg}");
        // Marked as sanitised, so the proxy may store it; `raw` is the source as it came, and
        // is not marked.
        let marker = imgproxy_cache::contract::SANITIZED_SVG_HEADER;
        assert_eq!(header(&headers, marker), "1");
        let (status, headers, body) = worker.get_plain("raw:1", "local:///logo.svg").await;
        assert_eq!(status, StatusCode::OK);
        assert!(text(&body).contains("alert"));
        assert!(!headers.contains_key(marker));

        for (options, source) in [
            ("rs:fit:80:0", "local:///logo.svg@png"),
            ("rs:fit:80:0/f:png", "local:///logo.svg"),
        ] {
            let (status, headers, body) = worker.get_plain(options, source).await;
            assert_eq!(status, StatusCode::OK, "{}", text(&body));
            assert_eq!(header(&headers, "content-type"), "image/png");
            let image = image::load_from_memory(&body).unwrap().to_rgba8();
            assert_eq!(image.dimensions(), (80, 40));
            assert_eq!(image.get_pixel(20, 20).0, [255, 0, 0, 255]);
            assert_eq!(image.get_pixel(60, 20).0, [0, 0, 255, 255]);
        }

        // A declared size over IMGPROXY_MAX_SRC_RESOLUTION is refused from the size alone.
        let started = Instant::now();
        let (status, _, body) = worker.get_plain("", "local:///huge.svg").await;
        assert_eq!(status.as_u16(), 422, "{}", text(&body));
        assert!(started.elapsed() < Duration::from_secs(1));
        worker.shutdown().await;
    }
}
