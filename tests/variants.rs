//! Format variants through the real proxy in front of the real bundled worker, over s3s-fs:
//! every `IMGPROXY_AUTO_*`/`IMGPROXY_ENFORCE_*` setting × real browsers' `Accept` headers ×
//! a still and an animated source × a format in the URL or none. Every answer is one its
//! `Accept` allows and the very bytes the worker gives that `Accept` directly; a repeat costs
//! no render; and there are as many renders as there are `Accept` classes.

#![cfg(feature = "worker")]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;

use common::worker::{Sources, Worker, animated_gif, loopback_ok, still_png};
use common::{Proxy, S3, config_for, key, metric, request};

/// Real `Accept` headers for images, and two corner cases.
const ACCEPTS: [(&str, Option<&str>); 8] = [
    (
        "Chrome",
        Some("image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"),
    ),
    (
        "Firefox",
        Some("image/avif,image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5"),
    ),
    (
        "Safari 17",
        Some(
            "image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,video/*;q=0.8,\
             image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5",
        ),
    ),
    (
        "Safari 15",
        Some("image/webp,image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5"),
    ),
    ("curl", Some("*/*")),
    ("JPEG only", Some("image/jpeg")),
    ("no Accept", None),
    // imgproxy ignores q-values: `q=0` still names the format.
    (
        "q-values",
        Some("image/png, image/webp;q=0.5, image/avif;q=0"),
    ),
];

/// The settings under test: the formats each negotiates, and whether it enforces them.
const SETTINGS: [&[&str]; 6] = [
    &["IMGPROXY_AUTO_WEBP"],
    &["IMGPROXY_AUTO_AVIF"],
    &["IMGPROXY_AUTO_WEBP", "IMGPROXY_AUTO_AVIF"],
    &["IMGPROXY_ENFORCE_WEBP"],
    &["IMGPROXY_ENFORCE_AVIF"],
    &["IMGPROXY_ENFORCE_WEBP", "IMGPROXY_ENFORCE_AVIF"],
];

/// `vars` with animations kept (`IMGPROXY_MAX_ANIMATION_FRAMES` above 1; at imgproxy's default
/// of 1 a GIF is processed as a still image), for the worker only: the proxy needs no such
/// setting.
fn animated<'a>(vars: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all = vec![("IMGPROXY_MAX_ANIMATION_FRAMES", "10")];
    all.extend_from_slice(vars);
    all
}

/// The class the issue's facts give: which negotiated formats `accept` names that the URL
/// leaves open (a format in the URL closes the `AUTO_` ones, not the `ENFORCE_` ones).
fn expected_class(settings: &[&str], accept: Option<&str>, format_in_url: bool) -> String {
    let accept = accept.unwrap_or("");
    let mut class = Vec::new();
    for format in ["avif", "webp"] {
        let upper = format.to_uppercase();
        let enforce = settings.contains(&format!("IMGPROXY_ENFORCE_{upper}").as_str());
        let auto = settings.contains(&format!("IMGPROXY_AUTO_{upper}").as_str());
        let open = enforce || (auto && !format_in_url);
        if open && accept.contains(&format!("image/{format}")) {
            class.push(format);
        }
    }
    if class.is_empty() {
        "none".into()
    } else {
        class.join("-")
    }
}

async fn fetch(url: &str, accept: Option<&str>) -> (StatusCode, http::HeaderMap, Bytes) {
    let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
    let response = request(Method::GET, url, &headers).await;
    let (parts, body) = response.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .map_or("", |v| v.to_str().unwrap_or_default())
}

async fn until_stored(proxy: &Proxy, stored: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = proxy.metrics().await;
        let done = metric(
            &metrics,
            r#"imgproxy_cache_uploads_total{outcome="stored"}"#,
        );
        if done >= stored {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{done} of {stored} stored:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accept_class_gets_its_own_result_and_repeats_cost_nothing() {
    let sources = Sources::start(
        vec![("still.png", still_png()), ("moving.gif", animated_gif())],
        vec![],
    )
    .await;
    for settings in SETTINGS {
        let vars: Vec<(&str, &str)> = settings.iter().map(|&name| (name, "true")).collect();
        let worker = Worker::start(loopback_ok(&animated(&vars))).await;
        let s3 = S3::start().await;
        let proxy = Proxy::start(config_for(&worker.url(""), &vars), s3.stores()).await;

        let mut paths = Vec::new();
        for source in ["still.png", "moving.gif"] {
            for extension in ["", "@jpg"] {
                let source = format!("{}{extension}", sources.url(source));
                paths.push((
                    format!("/unsafe/rs:fit:20:20/plain/{source}"),
                    !extension.is_empty(),
                ));
            }
        }

        let mut classes = BTreeSet::new();
        let mut first = Vec::new();
        for (path, format_in_url) in &paths {
            for (browser, accept) in ACCEPTS {
                let case = format!("{settings:?}, {browser}, {path}");
                let (status, headers, body) = fetch(&proxy.url(path), accept).await;
                assert_eq!(status, StatusCode::OK, "{case}");
                let direct = fetch(&worker.url(path), accept).await;
                assert_eq!(direct.0, StatusCode::OK, "{case}");
                let content_type = header(&headers, "content-type").to_owned();
                assert_eq!(content_type, header(&direct.1, "content-type"), "{case}");
                assert!(body == direct.2, "{case}: not the worker's bytes");
                if path.contains("moving.gif") {
                    assert_ne!(content_type, "image/avif", "{case}: AVIF for an animation");
                }
                for format in ["webp", "avif"] {
                    if content_type == format!("image/{format}") {
                        assert!(
                            accept.unwrap_or("").contains(&format!("image/{format}")),
                            "{case}: {content_type} for an Accept without it"
                        );
                    }
                }
                let class = expected_class(settings, accept, *format_in_url);
                let seen = classes.contains(&(path.clone(), class.clone()));
                let served = if seen { "HIT memory" } else { "MISS" };
                assert_eq!(
                    header(&headers, "x-cache"),
                    format!("{served}; variant={class}"),
                    "{case}"
                );
                assert!(header(&headers, "vary").contains("Accept"), "{case}");
                classes.insert((path.clone(), class));
                first.push((case, accept, path.clone(), body));
            }
        }
        let renders = || async {
            metric(
                &proxy.metrics().await,
                r#"imgproxy_cache_lookups_total{result="miss"}"#,
            )
        };
        assert_eq!(
            renders().await,
            classes.len() as f64,
            "{settings:?}: one render per class"
        );

        // Again: every answer from the cache, the same bytes, no render.
        for (case, accept, path, body) in &first {
            let (status, headers, again) = fetch(&proxy.url(path), *accept).await;
            assert_eq!(status, StatusCode::OK, "{case}");
            assert!(header(&headers, "x-cache").starts_with("HIT"), "{case}");
            assert!(again == *body, "{case}: other bytes on a repeat");
        }
        assert_eq!(
            renders().await,
            classes.len() as f64,
            "{settings:?}: a repeat rendered"
        );

        // Every class went to the bucket under its variant key; a fixed format under AUTO_
        // alone keeps the plain key.
        until_stored(&proxy, classes.len() as f64).await;
        let stored: BTreeSet<String> = s3.keys().await.into_iter().collect();
        let wanted: BTreeSet<String> = classes
            .iter()
            .map(|(path, class)| match class.as_str() {
                "none" => key(path),
                class => format!("{}-{class}", key(path)),
            })
            .collect();
        assert_eq!(stored, wanted, "{settings:?}");
        if settings.iter().all(|s| s.starts_with("IMGPROXY_AUTO_")) {
            for (path, format_in_url) in &paths {
                if *format_in_url {
                    assert!(stored.contains(&key(path)), "{settings:?}: {path}");
                }
            }
        }
        proxy.shutdown().await;
        worker.shutdown().await;
    }
}

/// A purge removes every class of the path from memory and the bucket: the next request of
/// each class renders again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_every_variant() {
    let sources = Sources::start(vec![("still.png", still_png())], vec![]).await;
    let vars = [
        ("IMGPROXY_AUTO_WEBP", "true"),
        ("IMGPROXY_AUTO_AVIF", "true"),
    ];
    let worker = Worker::start(loopback_ok(&vars)).await;
    let s3 = S3::start().await;
    let token = "a-long-enough-admin-token";
    let mut proxy_vars = vars.to_vec();
    proxy_vars.push(("ADMIN_TOKEN", token));
    let proxy = Proxy::start(config_for(&worker.url(""), &proxy_vars), s3.stores()).await;
    let path = format!("/unsafe/rs:fit:20:20/plain/{}", sources.url("still.png"));
    let browsers = [ACCEPTS[0].1, ACCEPTS[3].1, ACCEPTS[4].1];
    for accept in browsers {
        fetch(&proxy.url(&path), accept).await;
    }
    until_stored(&proxy, 3.0).await;
    let plain = key(&path);
    let variants = [
        plain.clone(),
        format!("{plain}-webp"),
        format!("{plain}-avif-webp"),
    ];
    assert_eq!(
        s3.keys().await.into_iter().collect::<BTreeSet<_>>(),
        variants.iter().cloned().collect::<BTreeSet<_>>()
    );

    let bearer = format!("Bearer {token}");
    let purged = request(
        Method::DELETE,
        &proxy.url(&format!("/_imgproxy-cache/cache{path}")),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(purged.status(), StatusCode::OK);
    let report: serde_json::Value =
        serde_json::from_slice(&purged.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(report["key"], plain);
    assert_eq!(report["memory"], true);
    assert_eq!(report["bucket"], true);
    assert!(s3.keys().await.is_empty(), "{report}");
    for accept in browsers {
        let (_, headers, _) = fetch(&proxy.url(&path), accept).await;
        assert!(
            header(&headers, "x-cache").starts_with("MISS; variant="),
            "{accept:?}"
        );
    }
    proxy.shutdown().await;
    worker.shutdown().await;
}

/// A remote imgproxy told of by `UPSTREAM_NEGOTIATION` is asked with each class's own
/// `Accept`, whatever the browser sent; and one that answers WebP to a class without it
/// (an upstream that negotiates more than the proxy knows) has that answer served, not stored.
#[tokio::test]
async fn a_remote_upstream_is_asked_with_the_class_and_never_trusted_beyond_it() {
    const WEBP: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: image/webp\r\nvary: Accept\r\n\
        cache-control: max-age=31536000\r\ncontent-length: 4\r\nconnection: close\r\n\r\nRIFF";
    let (upstream, heads) = common::recording_upstream(WEBP).await;
    let s3 = S3::start().await;
    let proxy = Proxy::start(
        config_for(
            &upstream,
            &[("UPSTREAM_NEGOTIATION", "auto_webp,auto_avif")],
        ),
        s3.stores(),
    )
    .await;
    let path = "/unsafe/rs:fit:20:20/plain/http://images.example/a.jpg";
    for (_, accept) in ACCEPTS {
        let (status, headers, body) = fetch(&proxy.url(path), accept).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], b"RIFF");
        assert!(header(&headers, "x-cache").contains("; variant="));
        assert!(header(&headers, "vary").contains("Accept"));
    }
    let sent: BTreeSet<String> = heads
        .lock()
        .unwrap()
        .iter()
        .filter_map(|head| {
            head.lines()
                .find_map(|l| l.strip_prefix("accept: ").map(str::to_owned))
        })
        .collect();
    let wanted: BTreeSet<String> = ["image/avif,image/webp,*/*", "image/webp,*/*", "*/*"]
        .map(String::from)
        .into();
    assert_eq!(sent, wanted, "the Accept headers the upstream saw");
    let metrics = proxy.metrics().await;
    assert!(
        metric(
            &metrics,
            r#"imgproxy_cache_not_cacheable_total{reason="variant_format"}"#
        ) >= 1.0,
        "{metrics}"
    );
    until_stored(&proxy, 2.0).await;
    let stored: BTreeSet<String> = s3.keys().await.into_iter().collect();
    let plain = key(path);
    assert_eq!(
        stored,
        [format!("{plain}-webp"), format!("{plain}-avif-webp")].into(),
        "a WebP under the plain key, or a class missing"
    );
    proxy.shutdown().await;
}
