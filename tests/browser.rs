//! The point of cache-on-write, in a real browser: headless Chromium loads the example page
//! (examples/web) whose images are not in the bucket yet, falls back to the proxy once, and on
//! the next visit loads every image straight from a real SeaweedFS bucket with anonymous read,
//! with no request reaching the proxy.

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::browser::Driver;
use common::seaweed::{self, Seaweed};
use common::*;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use imgproxy_cache::cache::s3::S3Store;

/// Serves examples/web and the given images.json on a loopback port.
async fn serve_page(images_json: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let images = Arc::new(images_json);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let images = images.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let images = images.clone();
                    async move {
                        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/web");
                        let (body, ty) = match req.uri().path() {
                            "/" => (
                                std::fs::read(format!("{dir}/index.html")).unwrap(),
                                "text/html",
                            ),
                            "/imgproxy-cache.js" => (
                                std::fs::read(format!("{dir}/imgproxy-cache.js")).unwrap(),
                                "text/javascript",
                            ),
                            "/images.json" => (images.as_bytes().to_vec(), "application/json"),
                            _ => (b"not found".to_vec(), "text/plain"),
                        };
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("content-type", ty)
                                .header("cache-control", "no-store")
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}/")
}

fn proxied(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("imgproxy_cache_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

const SETTLED: &str = "return document.body.dataset.ready === 'true' && [...document.images].every(\
     i => i.complete && (i.naturalWidth > 0 || i.dataset.source === 'broken'))";
const STATES: &str = "return [...document.images].map(i => [i.dataset.source, i.naturalWidth])";

#[tokio::test(flavor = "multi_thread")]
async fn images_fall_back_once_then_come_from_the_bucket() {
    let weed = Seaweed::start().await;
    let upstream = Upstream::start().await;
    let store = Arc::new(S3Store::new(weed.client(), seaweed::BUCKET, &weed.endpoint));
    let proxy = Proxy::start(config(&upstream, &[]), store).await;

    let paths = ["/png/a", "/png/b", "/png/c", "/png/d"];
    let missing = "/status/missing/404";
    let images: Vec<_> = paths
        .iter()
        .chain([&missing])
        .map(|p| serde_json::json!({"cached": weed.public_url(&key(p)), "proxy": proxy.url(p), "alt": p}))
        .collect();
    let page = serve_page(serde_json::to_string(&images).unwrap()).await;
    let driver = Driver::start().await;

    // First visit: nothing is in the bucket; every image renders through the proxy.
    let first = driver.session().await;
    first.goto(&page).await;
    first.wait_for(SETTLED, Duration::from_secs(60)).await;
    let states = first.eval(STATES).await;
    first.close().await;
    for (i, path) in paths.iter().enumerate() {
        assert_eq!(states[i][0], "proxy", "{path}: {states}");
        assert_eq!(states[i][1], 48, "{path} rendered at its natural width");
    }
    assert_eq!(states[paths.len()][0], "broken", "{states}");

    // The uploads land in the background.
    let client = weed.client();
    let deadline = Instant::now() + Duration::from_secs(30);
    for path in paths {
        while client
            .head_object()
            .bucket(seaweed::BUCKET)
            .key(key(path))
            .send()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "{path} was never stored");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let before = proxied(&proxy.metrics().await);

    // Second visit, fresh profile: every stored image comes from the bucket.
    let second = driver.session().await;
    second.goto(&page).await;
    second.wait_for(SETTLED, Duration::from_secs(60)).await;
    let states = second.eval(STATES).await;
    second.close().await;
    for (i, path) in paths.iter().enumerate() {
        assert_eq!(states[i][0], "cache", "{path}: {states}");
        assert_eq!(states[i][1], 48);
    }
    assert_eq!(states[paths.len()][0], "broken");
    let after = proxied(&proxy.metrics().await);
    assert_eq!(
        after - before,
        1.0,
        "only the missing image's one fallback reached the proxy"
    );

    // No loops: the missing image was asked of the proxy once per visit.
    let upstream_hits = upstream.requests.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        upstream_hits,
        paths.len() + 2,
        "4 renders + 1 missing per visit, and no retries"
    );
    proxy.shutdown().await;
}
