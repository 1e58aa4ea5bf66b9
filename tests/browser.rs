//! The point of cache-on-write, in a real browser: headless Chromium loads the example page
//! (examples/web) whose images are not in the bucket yet, falls back to the proxy once, and on
//! the next visit loads every image straight from a real SeaweedFS bucket with anonymous read,
//! with no request reaching the proxy; with format negotiation on, in the variant it decodes.

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

/// One visit of `page` in a fresh browser profile: each image's state once all have settled.
async fn visit(driver: &Driver, page: &str) -> serde_json::Value {
    let session = driver.session().await;
    session.goto(page).await;
    session.wait_for(SETTLED, Duration::from_secs(60)).await;
    let states = session.eval(STATES).await;
    session.close().await;
    states
}

/// Waits until `key` is in the bucket (uploads land in the background): its content type.
async fn stored(weed: &Seaweed, key: &str) -> String {
    let client = weed.client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client
            .head_object()
            .bucket(seaweed::BUCKET)
            .key(key)
            .send()
            .await
        {
            Ok(head) => return head.content_type().unwrap_or_default().to_owned(),
            Err(_) => assert!(Instant::now() < deadline, "{key} was never stored"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const SETTLED: &str = "return document.body.dataset.ready === 'true' && [...document.images].every(\
     i => i.complete && (i.naturalWidth > 0 || i.dataset.source === 'broken'))";
const STATES: &str =
    "return [...document.images].map(i => [i.dataset.source, i.naturalWidth, i.currentSrc])";

#[tokio::test(flavor = "multi_thread")]
async fn images_fall_back_once_then_come_from_the_bucket() {
    let weed = Seaweed::start().await;
    let upstream = Upstream::start().await;
    let store = Arc::new(s3_store(
        &weed.endpoint,
        seaweed::BUCKET,
        seaweed::ACCESS_KEY,
        seaweed::SECRET_KEY,
    ));
    let proxy = Proxy::start(config(&upstream, &[]), store).await;

    let paths = ["/png/a", "/png/b", "/png/c", "/png/d"];
    let missing = "/status/missing/404";
    let images: Vec<_> = paths
        .iter()
        .chain([&missing])
        .map(|p| serde_json::json!({"cached_url": weed.public_url(&key(p)), "proxy_url": proxy.url(p), "alt": p}))
        .collect();
    let page = serve_page(serde_json::to_string(&images).unwrap()).await;
    let driver = Driver::start().await;

    // First visit: nothing is in the bucket; every image renders through the proxy.
    let states = visit(&driver, &page).await;
    for (i, path) in paths.iter().enumerate() {
        assert_eq!(states[i][0], "proxy", "{path}: {states}");
        assert_eq!(states[i][1], 48, "{path} rendered at its natural width");
    }
    assert_eq!(states[paths.len()][0], "broken", "{states}");

    // The uploads land in the background.
    for path in paths {
        stored(&weed, &key(path)).await;
    }
    let before = proxied(&proxy.metrics().await);

    // Second visit, fresh profile: every stored image comes from the bucket.
    let states = visit(&driver, &page).await;
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

/// Format variants, bucket first. The page offers each image as a `<picture>` with the AVIF
/// and WebP variants `imgproxy-cache url` names; Chromium decodes both, so it loads the AVIF
/// source. The first visit finds none of them and falls back once to the proxy, which renders
/// for Chromium's own `Accept` and stores that very variant, even for an image whose baseline
/// and WebP variant are already in the bucket; the second visit, with a fresh profile, loads
/// every image from the bucket (AVIF for the still ones, WebP for the animated one, which AVIF
/// is never chosen for) with no request reaching the proxy but the missing image's one.
#[cfg(feature = "worker")]
#[tokio::test(flavor = "multi_thread")]
async fn each_image_comes_from_the_bucket_in_the_variant_the_browser_decodes() {
    use common::worker::{Sources, Worker, animated_gif, loopback_ok, still_png};
    use imgproxy_cache::cache::variant::Negotiation;
    use imgproxy_cache::settings::FromVars;
    use imgproxy_cache::url_builder::{BuiltUrl, UrlRequest, UrlSettings, build};

    let weed = Seaweed::start().await;
    let sources = Sources::start(
        vec![("still.png", still_png()), ("moving.gif", animated_gif())],
        vec![],
    )
    .await;
    let vars = [
        ("IMGPROXY_AUTO_WEBP", "true"),
        ("IMGPROXY_AUTO_AVIF", "true"),
    ];
    // Animations kept (at imgproxy's default of 1 frame a GIF is a still image).
    let mut worker_vars = vec![("IMGPROXY_MAX_ANIMATION_FRAMES", "10")];
    worker_vars.extend_from_slice(&vars);
    let worker = Worker::start(loopback_ok(&worker_vars)).await;
    let store = Arc::new(s3_store(
        &weed.endpoint,
        seaweed::BUCKET,
        seaweed::ACCESS_KEY,
        seaweed::SECRET_KEY,
    ));
    let proxy = Proxy::start(config_for(&worker.url(""), &vars), store).await;
    let settings = UrlSettings {
        signature_size: 32,
        proxy_base_url: proxy.url(""),
        cache_base_url: Some(weed.public_url("")),
        negotiation: Negotiation::from_vars(vars.map(|(k, v)| (k.into(), v.into()))).unwrap(),
        ..UrlSettings::default()
    };
    let url = |source: &str, options: &str| -> BuiltUrl {
        let request = UrlRequest {
            source: sources.url(source),
            options: options.into(),
            ..UrlRequest::default()
        };
        build(&request, &settings).unwrap()
    };
    // (image, its width, the format stored for Chromium)
    let images = [
        (url("still.png", "rs:fit:40:40"), 40, "image/avif"),
        (url("moving.gif", "rs:fit:40:40"), 24, "image/webp"),
        (url("still.png", "rs:fit:30:30"), 30, "image/avif"),
    ];
    let missing = url("missing.png", "rs:fit:40:40");
    for (image, ..) in &images {
        let types: Vec<_> = image.variants.iter().map(|v| (v.mime, v.class)).collect();
        assert_eq!(
            types,
            [("image/avif", "avif-webp"), ("image/webp", "webp")],
            "{image:?}"
        );
    }

    // The third image's baseline and WebP variant are in the bucket; its AVIF one is not.
    let partial = &images[2].0;
    for accept in ["*/*", "image/webp,*/*"] {
        let response = request(http::Method::GET, &partial.proxy_url, &[("accept", accept)]).await;
        assert_eq!(response.status(), 200);
    }
    assert_eq!(stored(&weed, &partial.key).await, "image/png");
    assert_eq!(stored(&weed, &partial.variants[1].key).await, "image/webp");

    let mut entries: Vec<_> = images
        .iter()
        .map(|(image, ..)| (image, "an image"))
        .collect();
    entries.push((&missing, "missing"));
    let entries: Vec<_> = entries
        .into_iter()
        .map(|(image, alt)| {
            let mut entry = serde_json::to_value(image).unwrap();
            entry["alt"] = alt.into();
            entry
        })
        .collect();
    let page = serve_page(serde_json::to_string(&entries).unwrap()).await;
    let driver = Driver::start().await;

    // First visit: no AVIF variant is stored; each image falls back once to the proxy.
    let states = visit(&driver, &page).await;
    for (i, (image, width, _)) in images.iter().enumerate() {
        assert_eq!(states[i][0], "proxy", "{image:?}: {states}");
        assert_eq!(states[i][1], *width, "{states}");
        assert_eq!(states[i][2], image.proxy_url.as_str(), "{states}");
    }
    assert_eq!(states[images.len()][0], "broken", "{states}");

    // What the proxy stored for Chromium is the variant its AVIF source names.
    for (image, _, format) in &images {
        assert_eq!(
            stored(&weed, &image.variants[0].key).await,
            *format,
            "{image:?}"
        );
    }
    let before = proxied(&proxy.metrics().await);

    // Second visit, fresh profile: every image from the bucket, through its AVIF source.
    let states = visit(&driver, &page).await;
    for (i, (image, width, _)) in images.iter().enumerate() {
        assert_eq!(states[i][0], "cache", "{image:?}: {states}");
        assert_eq!(states[i][1], *width, "{states}");
        let avif_source = image.variants[0].cached_url.as_deref().unwrap();
        assert_eq!(states[i][2], avif_source, "{states}");
    }
    assert_eq!(states[images.len()][0], "broken", "{states}");
    let after = proxied(&proxy.metrics().await);
    assert_eq!(
        after - before,
        1.0,
        "only the missing image's one fallback reached the proxy"
    );
    // Renders: two to store the third image's baseline and WebP variant, three on the first
    // visit, and the missing source asked once per visit.
    assert_eq!(sources.requests(), 2 + 3 + 2, "no render twice, no retry");
    proxy.shutdown().await;
    worker.shutdown().await;
}
