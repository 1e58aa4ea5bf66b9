//! The proxy end to end: a real upstream, a real S3 server, the real server loop.

mod common;

use common::*;
use http::{Method, StatusCode};
use http_body_util::BodyExt;

/// A 200 is streamed back unchanged and stored under md5(path) with the upstream's type and
/// cache control, byte for byte.
#[tokio::test]
async fn stores_each_success_under_the_md5_of_its_path() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let proxy = Proxy::start(config(&upstream, &[]), s3.stores()).await;

    let path = "/ok/rs:fit:300:300/plain/https://example.com/a%20b.jpg@webp";
    let (status, headers, body) = get(&proxy.url(&format!("{path}?query=ignored"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, body_for(path));
    assert_eq!(headers["content-type"], "image/jpeg");
    proxy.shutdown().await;

    let (stored, content_type, cache_control) = s3.object(&key(path)).await.expect("stored");
    assert_eq!(stored, body);
    assert_eq!(content_type, "image/jpeg");
    assert_eq!(cache_control.as_deref(), Some("max-age=31536000, public"));
    assert_eq!(s3.keys().await, vec![key(path)]);
}

/// Without `Content-Length` the copy is complete when the upstream ends the body.
#[tokio::test]
async fn stores_chunked_responses_once_complete() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let proxy = Proxy::start(config(&upstream, &[]), s3.stores()).await;
    let path = "/chunked/x";
    let (status, headers, body) = get(&proxy.url(path)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!headers.contains_key("content-length"));
    proxy.shutdown().await;
    assert_eq!(s3.object(&key(path)).await.expect("stored").0, body);
}

/// The client receives the first bytes while the upstream is still holding back the rest:
/// the proxy streams instead of buffering.
#[tokio::test]
async fn streams_before_the_upstream_has_finished() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let proxy = Proxy::start(config(&upstream, &[]), s3.stores()).await;
    let path = "/gated/x";
    let mut body = request(Method::GET, &proxy.url(path), &[])
        .await
        .into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(!first.is_empty());
    // Only now may the upstream send its second half.
    upstream.release();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!([first, rest].concat(), body_for(path));
    proxy.shutdown().await;
    assert_eq!(
        s3.object(&key(path)).await.expect("stored").0,
        body_for(path)
    );
}

/// Every never-store rule over real HTTP: the client gets the upstream's answer, the bucket
/// stays empty.
#[tokio::test]
async fn never_stores_what_must_not_be_shared() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let proxy = Proxy::start(config(&upstream, &[]), s3.stores()).await;

    type Case = (
        Method,
        &'static str,
        &'static [(&'static str, &'static str)],
        u16,
    );
    let cases: &[Case] = &[
        (Method::HEAD, "/ok/head", &[], 200),
        (Method::POST, "/ok/post", &[], 200),
        (Method::GET, "/status/206", &[], 206),
        (Method::GET, "/status/304", &[], 304),
        (Method::GET, "/status/404", &[], 404),
        (Method::GET, "/status/500", &[], 500),
        (
            Method::GET,
            "/vary/accept",
            &[("accept", "image/webp")],
            200,
        ),
        (Method::GET, "/nostore/x", &[], 200),
        (Method::GET, "/html/x", &[], 200),
        (Method::GET, "/svg/x", &[], 200),
        (Method::GET, "/ttl/3600", &[], 200),
    ];
    for (method, path, headers, status) in cases {
        let response = request(method.clone(), &proxy.url(path), headers).await;
        assert_eq!(response.status().as_u16(), *status, "{method} {path}");
        response.into_body().collect().await.unwrap();
    }
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"imgproxy_cache_uploads_total{outcome="skipped_vary"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"imgproxy_cache_not_cacheable_total{reason="vary"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"imgproxy_cache_not_cacheable_total{reason="status"}"#
        ),
        4.0
    );
    for reason in ["content_type", "unsanitized_svg", "short_lived"] {
        let series = format!(r#"imgproxy_cache_not_cacheable_total{{reason="{reason}"}}"#);
        assert_eq!(metric(&metrics, &series), 1.0, "{series}");
    }
    proxy.shutdown().await;
    assert_eq!(s3.keys().await, Vec::<String>::new());
    assert_eq!(s3.puts(), 0);
}

/// An SVG the worker marked as sanitised is stored, with STORE_SVG at its default; so is any
/// SVG with `always`, and none with `never`. A result that may live for MIN_STORE_MAX_AGE_SECS
/// is stored.
#[tokio::test]
async fn stores_vouched_svg_and_long_lived_results() {
    for (rule, stored) in [
        ("sanitized", vec!["/svgsanitized/x", "/ttl/86400"]),
        ("always", vec!["/svg/x", "/svgsanitized/x", "/ttl/86400"]),
        ("never", vec!["/ttl/86400"]),
    ] {
        let upstream = Upstream::start().await;
        let s3 = S3::start().await;
        let proxy = Proxy::start(config(&upstream, &[("STORE_SVG", rule)]), s3.stores()).await;
        for path in ["/svg/x", "/svgsanitized/x", "/ttl/86400"] {
            assert_eq!(get(&proxy.url(path)).await.0, StatusCode::OK);
        }
        proxy.shutdown().await;
        let mut want: Vec<String> = stored.iter().map(|p| key(p)).collect();
        let mut got = s3.keys().await;
        want.sort();
        got.sort();
        assert_eq!(got, want, "STORE_SVG={rule}");
    }
}

/// A body framed by nothing but the end of the connection cannot be told from one cut short:
/// the client gets what came, nothing is stored.
#[tokio::test]
async fn never_stores_a_body_without_framing() {
    let url = raw_upstream(
        b"HTTP/1.1 200 OK\r\ncontent-type: image/jpeg\r\ncache-control: max-age=31536000\r\n\
          connection: close\r\n\r\nhalf an ima",
    )
    .await;
    let s3 = S3::start().await;
    let proxy = Proxy::start(config_for(&url, &[]), s3.stores()).await;
    let (status, body) = try_get(&proxy.url("/cut/x")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"half an ima");
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"imgproxy_cache_not_cacheable_total{reason="unframed"}"#
        ),
        1.0
    );
    proxy.shutdown().await;
    assert_eq!(s3.puts(), 0);
}

/// A client's own `X-Forwarded-For`, `X-Real-IP` and `Forwarded` never reach the upstream as
/// if true; from a peer in TRUSTED_PROXIES the list is kept and extended.
#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let claims = [
        ("x-forwarded-for", "6.6.6.6"),
        ("x-real-ip", "6.6.6.6"),
        ("forwarded", "for=6.6.6.6"),
    ];
    let seen = |proxy: &Proxy| {
        let url = proxy.url("/echo/x");
        async move {
            let response = request(Method::GET, &url, &claims).await;
            let body = response.into_body().collect().await.unwrap().to_bytes();
            String::from_utf8(body.to_vec()).unwrap()
        }
    };

    let proxy = Proxy::start(config(&upstream, &[]), s3.stores()).await;
    assert_eq!(
        seen(&proxy).await,
        "x-forwarded-for: 127.0.0.1\nx-real-ip: \nforwarded: "
    );
    proxy.shutdown().await;

    let trusted = [("TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1")];
    let proxy = Proxy::start(config(&upstream, &trusted), s3.stores()).await;
    assert_eq!(
        seen(&proxy).await,
        "x-forwarded-for: 6.6.6.6, 127.0.0.1\nx-real-ip: 6.6.6.6\nforwarded: for=6.6.6.6"
    );
    proxy.shutdown().await;
}

/// Many clients missing one key at once make one render and one copy, and that copy is counted
/// against the byte budget while it is being made.
#[tokio::test]
async fn concurrent_misses_of_one_key_make_one_copy() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let proxy = Proxy::start(config(&upstream, &[]), s3.stores()).await;
    let path = "/gated/popular";
    let mut bodies = Vec::new();
    for _ in 0..10 {
        let mut body = request(Method::GET, &proxy.url(path), &[])
            .await
            .into_body();
        // The first half has streamed through: the copy, if any, is under way.
        body.frame().await.unwrap().unwrap();
        bodies.push(body);
    }
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(&metrics, "imgproxy_cache_upload_queue_bytes"),
        2.0 * body_for(path).len() as f64,
        "one copy, held against the budget: the chunks, and the result they are joined into"
    );
    assert_eq!(
        metric(
            &metrics,
            r#"imgproxy_cache_lookups_total{result="coalesced"}"#
        ),
        9.0
    );
    assert_eq!(
        upstream.requests.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    upstream.release();
    for body in bodies {
        body.collect().await.unwrap();
    }
    proxy.shutdown().await;
    assert_eq!(s3.puts(), 1);
    assert_eq!(s3.object(&key(path)).await.unwrap().0, body_for(path));
}

/// A body cut short by the upstream reaches the client as an error and is not stored.
#[tokio::test]
async fn never_stores_a_truncated_body() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let proxy = Proxy::start(config(&upstream, &[]), s3.stores()).await;
    let result = try_get(&proxy.url("/truncate/x")).await;
    assert!(
        result.is_err(),
        "the client must see the cut, got {result:?}"
    );
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"imgproxy_cache_not_cacheable_total{reason="incomplete"}"#
        ),
        1.0
    );
    proxy.shutdown().await;
    assert_eq!(s3.puts(), 0);
}

/// An upstream that cuts every body cannot flood the log: 10 cut bodies, each counted, one
/// warning line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_bodies_are_each_counted_and_logged_once_per_interval() {
    let upstream = Upstream::start().await;
    let mut proxy = ProxyProcess::start(&upstream.url(), &[]);
    for i in 0..10 {
        assert!(
            try_get(&proxy.url(&format!("/truncate/{i}")))
                .await
                .is_err()
        );
    }
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"imgproxy_cache_not_cacheable_total{reason="incomplete"}"#
        ),
        10.0
    );
    let log = proxy.stop();
    let lines = log.lines().filter(|l| l.contains("failed midway")).count();
    assert_eq!(lines, 1, "{log}");
}

/// An upstream that goes silent mid-body is cut after UPSTREAM_TIMEOUT_SECS; nothing stored.
#[tokio::test]
async fn cuts_a_stalled_body_and_stores_nothing() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let proxy = Proxy::start(
        config(&upstream, &[("UPSTREAM_TIMEOUT_SECS", "1")]),
        s3.stores(),
    )
    .await;
    let result = try_get(&proxy.url("/stall/x")).await;
    assert!(
        result.is_err(),
        "the client must see the cut, got {result:?}"
    );
    proxy.shutdown().await;
    assert_eq!(s3.puts(), 0);
}

/// Bodies above MAX_CACHEABLE_BYTES stream to the client whole, with or without a length,
/// and are not stored.
#[tokio::test]
async fn oversize_bodies_stream_whole_but_are_not_stored() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let cap = (BIG / 2).to_string();
    let proxy = Proxy::start(
        config(&upstream, &[("MAX_CACHEABLE_BYTES", &cap)]),
        s3.stores(),
    )
    .await;
    for path in ["/big/x", "/bigchunked/x"] {
        let (status, _, body) = get(&proxy.url(path)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.len(), BIG, "{path}");
    }
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"imgproxy_cache_not_cacheable_total{reason="too_large"}"#
        ),
        2.0
    );
    proxy.shutdown().await;
    assert_eq!(s3.puts(), 0);
}

/// 50 concurrent requests for one path store it once, in every dedup mode.
#[tokio::test]
async fn fifty_identical_requests_make_one_put() {
    for dedup in ["head", "conditional"] {
        let upstream = Upstream::start().await;
        let s3 = S3::start().await;
        let proxy = Proxy::start(config(&upstream, &[("UPLOAD_DEDUP", dedup)]), s3.stores()).await;
        let url = proxy.url("/ok/popular.jpg");
        let clients = (0..50).map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url).await })
        });
        for client in clients {
            let (status, _, body) = client.await.unwrap();
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body, body_for("/ok/popular.jpg"));
        }
        // One more, after the upload: known to exist, no store call at all.
        get(&url).await;
        proxy.shutdown().await;
        assert_eq!(s3.puts(), 1, "dedup={dedup}");
        assert!(s3.heads() <= 1, "dedup={dedup}: {} HEADs", s3.heads());
    }
}

/// Conditional PUT never overwrites: an object already in the bucket stays as it was.
#[tokio::test]
async fn conditional_put_keeps_an_existing_object() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let path = "/ok/existing.jpg";
    let existing = bytes::Bytes::from_static(b"stored by another replica");
    s3.put(&key(path), existing.clone()).await;
    // Without bucket reads, so the proxy renders the key and the upload meets the object.
    let proxy = Proxy::start(
        config(
            &upstream,
            &[("UPLOAD_DEDUP", "conditional"), ("BUCKET_READS", "false")],
        ),
        s3.stores(),
    )
    .await;
    get(&proxy.url(path)).await;
    proxy.shutdown().await;
    assert_eq!(s3.heads(), 0, "conditional mode needs no HEAD");
    assert_eq!(s3.puts(), 2, "ours was sent, and refused with 412");
    assert_eq!(s3.object(&key(path)).await.unwrap().0, existing);
}

/// S3 answering 500 twice, then OK: stored after retries.
#[tokio::test]
async fn retries_transient_s3_errors() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    s3.faults
        .fail_puts
        .store(2, std::sync::atomic::Ordering::SeqCst);
    let proxy = Proxy::start(config(&upstream, &[]), s3.stores()).await;
    let path = "/ok/retried.jpg";
    get(&proxy.url(path)).await;
    proxy.shutdown().await;
    assert_eq!(s3.puts(), 3);
    assert_eq!(
        s3.object(&key(path)).await.expect("stored").0,
        body_for(path)
    );
}

/// A body damaged between the proxy and S3 is never stored: every PUT carries the SHA-256 of
/// its payload inside the SigV4 signature, and the server checks it. The damaged attempt
/// fails and the retry stores the intact bytes.
#[tokio::test]
async fn a_body_damaged_on_the_way_is_refused_by_s3() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    s3.faults
        .corrupt_puts
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let proxy = Proxy::start(config(&upstream, &[]), s3.stores()).await;
    let path = "/ok/damaged-in-flight.jpg";
    let (status, _, body) = get(&proxy.url(path)).await;
    assert_eq!((status, &body), (StatusCode::OK, &body_for(path)));
    proxy.shutdown().await;
    assert_eq!(s3.puts(), 2, "the damaged PUT failed and was retried");
    assert_eq!(s3.object(&key(path)).await.expect("stored").0, body);
}

/// AccessDenied is permanent: one PUT per upload, no hammering.
#[tokio::test]
async fn permanent_s3_errors_are_not_retried() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    s3.faults
        .deny_puts
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let proxy = Proxy::start(
        config(&upstream, &[("UPLOAD_MAX_ATTEMPTS", "5")]),
        s3.stores(),
    )
    .await;
    for i in 0..3 {
        let (status, _, _) = get(&proxy.url(&format!("/ok/denied-{i}"))).await;
        assert_eq!(status, StatusCode::OK);
    }
    proxy.shutdown().await;
    assert_eq!(s3.puts(), 3);
}

/// With S3 unreachable, clients still get their images; the uploads fail in the background.
#[tokio::test]
async fn s3_down_does_not_touch_clients() {
    let upstream = Upstream::start().await;
    // A port that refuses connections: bind, learn the port, close.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let store = std::sync::Arc::new(s3_store(
        &format!("http://{dead}"),
        BUCKET,
        ACCESS_KEY,
        SECRET_KEY,
    ));
    let proxy = Proxy::start(config(&upstream, &[("UPLOAD_MAX_ATTEMPTS", "2")]), store).await;
    for i in 0..5 {
        let path = format!("/ok/down-{i}");
        let (status, _, body) = get(&proxy.url(&path)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, body_for(&path));
    }
    let report = proxy.shutdown().await;
    assert_eq!(
        report.abandoned, 0,
        "failed uploads end, they are not left hanging"
    );
}

/// S3 hanging on every call: responses complete anyway (they never wait for S3), the byte cap
/// bounds what is held, and the excess is dropped and counted.
#[tokio::test]
async fn a_full_queue_drops_new_results_and_stays_bounded() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    s3.faults
        .hold
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let size = body_for("/ok/held-0").len();
    // A render takes twice its size while it runs (its chunks, and the result they are joined
    // into), then its size until its upload ends: room for two waiting uploads, not three.
    let cap = (size * 3 + size / 2).to_string();
    let proxy = Proxy::start(
        config(
            &upstream,
            &[
                ("UPLOAD_QUEUE_MAX_BYTES", &cap),
                ("MAX_CACHEABLE_BYTES", &cap),
            ],
        ),
        s3.stores(),
    )
    .await;
    for i in 0..6 {
        let path = format!("/ok/held-{i}");
        let (status, _, body) = get(&proxy.url(&path)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, body_for(&path));
    }
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"imgproxy_cache_uploads_total{outcome="dropped_full"}"#
        ),
        4.0
    );
    assert_eq!(metric(&metrics, "imgproxy_cache_upload_queue_depth"), 2.0);
    assert_eq!(
        metric(&metrics, "imgproxy_cache_upload_queue_bytes"),
        (2 * size) as f64
    );
    s3.release();
    proxy.shutdown().await;
    // The two that had room are stored whole; the four dropped left nothing behind.
    let mut want = vec![key("/ok/held-0"), key("/ok/held-1")];
    want.sort();
    let mut keys = s3.keys().await;
    keys.sort();
    assert_eq!(keys, want);
    for path in ["/ok/held-0", "/ok/held-1"] {
        assert_eq!(s3.object(&key(path)).await.unwrap().0, body_for(path));
    }
}

/// SIGTERM-style shutdown: the listener closes, queued uploads still finish.
#[tokio::test]
async fn shutdown_drains_pending_uploads() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    s3.faults
        .hold
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let mut proxy = Proxy::start(config(&upstream, &[]), s3.stores()).await;
    let paths: Vec<String> = (0..4).map(|i| format!("/ok/drain-{i}")).collect();
    for path in &paths {
        get(&proxy.url(path)).await;
    }
    proxy.begin_shutdown();
    // The listener is gone once shutdown has begun.
    while tokio::net::TcpStream::connect(proxy.addr).await.is_ok() {
        tokio::task::yield_now().await;
    }
    s3.release();
    let report = proxy.shutdown().await;
    assert_eq!(report.abandoned, 0);
    for path in &paths {
        assert!(
            s3.object(&key(path)).await.is_some(),
            "{path} was not drained"
        );
    }
}

/// When S3 never answers, shutdown gives up at SHUTDOWN_TIMEOUT_SECS and says how many
/// uploads were left undone.
#[tokio::test]
async fn shutdown_reports_uploads_left_at_the_deadline() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    s3.faults
        .hold
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let proxy = Proxy::start(
        config(&upstream, &[("SHUTDOWN_TIMEOUT_SECS", "1")]),
        s3.stores(),
    )
    .await;
    for i in 0..3 {
        get(&proxy.url(&format!("/ok/stuck-{i}"))).await;
    }
    let report = proxy.shutdown().await;
    assert_eq!(report.abandoned, 3);
}

/// The local directory store (no S3_BUCKET) gets the same objects.
#[tokio::test]
async fn local_store_keeps_plain_files() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().to_str().unwrap();
    let config = config(
        &upstream,
        &[("CACHE_DIR", cache_dir), ("S3_FOLDER", "thumbs/")],
    );
    let store = imgproxy_cache::cache::open_store(&config.storage, config.upload.timeout)
        .await
        .unwrap();
    let proxy = Proxy::start(config, store).await;
    let path = "/ok/local.jpg";
    let (_, _, body) = get(&proxy.url(path)).await;
    proxy.shutdown().await;
    let file = dir.path().join("thumbs").join(key(path));
    assert_eq!(std::fs::read(file).unwrap(), body);
}

/// An upstream that is down: 502 with a short body, never a hang or a crash.
#[tokio::test]
async fn upstream_down_is_a_502() {
    let upstream = Upstream::start().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = config(&upstream, &[]);
    config.upstream = format!("http://{dead}").parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(
        imgproxy_cache::cache::fs::FsStore::open(
            dir.path(),
            imgproxy_cache::cache::fs::DEFAULT_MAX_BYTES,
        )
        .unwrap(),
    );
    let proxy = Proxy::start(config, store).await;
    let (status, headers, body) = get(&proxy.url("/ok/x")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers["cache-control"], "no-store");
    assert!(!body.is_empty() && body.len() < 200);
    proxy.shutdown().await;
}

/// Malformed HTTP gets a 400 from the proxy itself; the upstream never sees it.
#[tokio::test]
async fn malformed_requests_get_400() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(
        imgproxy_cache::cache::fs::FsStore::open(
            dir.path(),
            imgproxy_cache::cache::fs::DEFAULT_MAX_BYTES,
        )
        .unwrap(),
    );
    let proxy = Proxy::start(config(&upstream, &[]), store).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /ok/x HTTP/1.1\r\nHost: a\r\nbroken header line\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(
        upstream.requests.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    proxy.shutdown().await;
}

/// The proxy's own health endpoint reports the upstream and the store without reaching
/// imgproxy's URL space; metrics are served in the Prometheus text format.
#[tokio::test]
async fn health_and_metrics_endpoints() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let proxy = Proxy::start(config(&upstream, &[]), s3.stores()).await;
    let (status, headers, body) = get(&proxy.url("/_imgproxy-cache/health")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(health["upstream"], "ok");
    assert!(health["store"].as_str().unwrap().contains(BUCKET));

    get(&proxy.url("/ok/counted")).await;
    let metrics = proxy.metrics().await;
    // The image only: the proxy's own endpoints are not counted.
    assert_eq!(
        metric(&metrics, r#"imgproxy_cache_requests_total{status="200"}"#),
        1.0
    );
    assert!(metrics.contains("imgproxy_cache_upstream_latency_seconds_bucket"));
    assert_eq!(
        upstream.requests.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "health checked /health once"
    );
    proxy.shutdown().await;
}

/// Start-up waits for the upstream's /health and gives up after the timeout.
#[tokio::test]
async fn waits_for_a_healthy_upstream_and_gives_up_in_time() {
    use imgproxy_cache::proxy::upstream::Upstream as Client;
    use std::time::Duration;
    let upstream = Upstream::start().await;
    let up = Client::new(upstream.url().parse().unwrap(), Duration::from_secs(1));
    up.wait_healthy(Duration::from_secs(1)).await.unwrap();

    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let down = Client::new(
        format!("http://{dead}").parse().unwrap(),
        Duration::from_secs(1),
    );
    let err = down
        .wait_healthy(Duration::from_millis(600))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("could not be reached"), "{err}");
}

/// HEAD dedup: an object already in the bucket costs one HEAD and no PUT.
#[tokio::test]
async fn head_dedup_skips_the_put_for_an_existing_object() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let path = "/ok/already-there.jpg";
    let existing = bytes::Bytes::from_static(b"stored earlier");
    s3.put(&key(path), existing.clone()).await;
    // Without bucket reads, so the proxy renders the key and the upload meets the object.
    let proxy = Proxy::start(
        config(
            &upstream,
            &[("UPLOAD_DEDUP", "head"), ("BUCKET_READS", "false")],
        ),
        s3.stores(),
    )
    .await;
    get(&proxy.url(path)).await;
    proxy.shutdown().await;
    assert_eq!(s3.heads(), 1);
    assert_eq!(s3.puts(), 1, "only the set-up PUT");
    assert_eq!(s3.object(&key(path)).await.unwrap().0, existing);
}

/// Uploads run on their own thread at a lower CPU priority, so a saturated CPU serves
/// clients first: every thread named `upload` in this process has the default `UPLOAD_NICE`.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn uploads_run_at_a_lower_cpu_priority() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let proxy = Proxy::start(config(&upstream, &[]), s3.stores()).await;
    // Answered, so the proxy and its upload runtime are up.
    let (status, _, _) = get(&proxy.url("/ok/priority.jpg")).await;
    assert_eq!(status, StatusCode::OK);
    let mut nices = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if comm.trim() != "upload" {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        // Fields after the parenthesised name: state is field 3, nice is field 19.
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let nice: i32 = after_name.split(' ').nth(16).unwrap().parse().unwrap();
        nices.push(nice);
    }
    proxy.shutdown().await;
    assert!(!nices.is_empty(), "no upload thread found");
    assert!(nices.iter().all(|&n| n == 10), "{nices:?}");
}

/// Each phase of a client connection has its own limit: a head that stops halfway is cut at
/// CLIENT_HEADER_TIMEOUT_SECS, while an idle keep-alive connection lives longer than that,
/// until CLIENT_KEEPALIVE_TIMEOUT_SECS.
#[tokio::test]
async fn client_deadlines_follow_the_connection_phase() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let limits = [
        ("CLIENT_HEADER_TIMEOUT_SECS", "1"),
        ("CLIENT_KEEPALIVE_TIMEOUT_SECS", "3"),
    ];
    let proxy = Proxy::start(config(&upstream, &limits), s3.stores()).await;
    let slack = std::time::Duration::from_millis(1500);

    // Half a head, then nothing: closed after the header limit.
    let mut half = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    half.write_all(b"GET /ok/x HTTP/1.1\r\nhost: p")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(1) + slack,
        half.read_to_end(&mut rest),
    )
    .await;
    assert!(
        read.is_ok(),
        "a half head was still open after {:?}",
        started.elapsed()
    );

    // A keep-alive connection idle for longer than the header limit still serves...
    let mut kept = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let ask = b"GET /ok/kept HTTP/1.1\r\nhost: p\r\n\r\n";
    for round in 0..2 {
        kept.write_all(ask).await.unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 16384];
        // The answer is complete when its tail is the whole body.
        let body = body_for("/ok/kept");
        while !answer.ends_with(&body) {
            let n = kept.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed in round {round}");
            answer.extend_from_slice(&buf[..n]);
        }
        assert!(answer.starts_with(b"HTTP/1.1 200"));
        if round == 0 {
            // Idle past the header limit, well short of the keep-alive one.
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
    }
    // ...and is closed, without error, once the keep-alive limit has passed.
    let idle_from = std::time::Instant::now();
    let mut after = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(3) + slack,
        kept.read_to_end(&mut after),
    )
    .await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "idle connection still open after {:?}: {read:?}",
        idle_from.elapsed()
    );
    assert!(idle_from.elapsed() >= std::time::Duration::from_secs(2));
    let metrics = proxy.metrics().await;
    for reason in ["header_timeout", "idle_timeout"] {
        let series =
            format!(r#"imgproxy_cache_client_connections_closed_total{{reason="{reason}"}}"#);
        assert!(metric(&metrics, &series) >= 1.0, "{series}");
    }
    proxy.shutdown().await;
}

/// HTTP/2 with prior knowledge (h2c) is not spoken: the preface gets an HTTP/1 error, not a
/// SETTINGS frame that would open 200 streams on one connection.
#[tokio::test]
async fn http2_prior_knowledge_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let proxy = Proxy::start(config(&upstream, &[]), s3.stores()).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut answer),
    )
    .await;
    assert!(read.is_ok(), "the connection stayed open");
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 "),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    proxy.shutdown().await;
}
