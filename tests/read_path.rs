//! The read path end to end: lookups before the upstream (memory, bucket), one render per key
//! under a stampede, and hits answered as an HTTP cache answers them. A real upstream that
//! streams on purpose slowly, a real S3 server, the real server loop.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use http::{Method, StatusCode};
use http_body_util::BodyExt;

fn renders(upstream: &Upstream) -> usize {
    upstream.requests.load(Ordering::SeqCst)
}

/// Waits until the proxy's metric `series` reaches `at_least` (a state the test observes, not
/// a guess at how long something takes); fails after 10 s.
async fn until_metric(proxy: &Proxy, series: &str, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let value = metric(&proxy.metrics().await, series);
        if value >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} stayed at {value}, below {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

const COALESCED: &str = r#"imgproxy_cache_lookups_total{result="coalesced"}"#;

/// 50 clients ask for one new key while it renders: the upstream is asked once, every client
/// gets 200 and the same bytes, streamed as they come; the client that caused the render
/// leaving after its first chunk breaks no one.
#[tokio::test]
async fn a_stampede_on_a_new_key_renders_it_once() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let proxy = Proxy::start(config(&upstream, &[]), s3.stores()).await;
    let path = "/gated/stampede.jpg";
    let want = body_for(path);

    let mut leader = request(Method::GET, &proxy.url(path), &[])
        .await
        .into_body();
    // The first half is out; the upstream holds the rest until released.
    leader.frame().await.unwrap().unwrap();
    let followers: Vec<_> = (0..49)
        .map(|_| {
            let url = proxy.url(path);
            tokio::spawn(async move {
                let response = request(Method::GET, &url, &[]).await;
                let status = response.status();
                let x_cache = response.headers()["x-cache"].clone();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (status, x_cache, body)
            })
        })
        .collect();
    until_metric(&proxy, COALESCED, 49.0).await;
    drop(leader);
    upstream.release();
    for follower in followers {
        let (status, x_cache, body) = follower.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(x_cache, "COALESCED");
        assert_eq!(body, want);
    }
    assert_eq!(renders(&upstream), 1);
    proxy.shutdown().await;
    assert_eq!(s3.object(&key(path)).await.expect("stored").0, want);
    assert_eq!(s3.puts(), 1);
}

/// Repeats of a stored key never reach the upstream, and are answered as a cache answers:
/// `X-Cache`, `ETag` with `If-None-Match` → 304, `HEAD` without a body, one `Range` → 206 (or
/// 416), `Age`.
#[tokio::test]
async fn repeats_are_hits_with_proper_http() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let proxy = Proxy::start(config(&upstream, &[]), s3.stores()).await;
    let path = "/ok/repeated.jpg";
    let want = body_for(path);

    let (status, headers, body) = get(&proxy.url(path)).await;
    assert_eq!((status, &body), (StatusCode::OK, &want));
    assert_eq!(headers["x-cache"], "MISS");
    let etag = headers["etag"].to_str().unwrap().to_owned();
    for _ in 0..20 {
        let (status, headers, body) = get(&proxy.url(path)).await;
        assert_eq!((status, &body), (StatusCode::OK, &want));
        assert_eq!(headers["x-cache"], "HIT memory");
        assert_eq!(headers["content-type"], "image/jpeg");
        assert_eq!(headers["cache-control"], "max-age=31536000, public");
        assert_eq!(headers["content-length"], want.len().to_string().as_str());
        assert_eq!(headers["etag"], etag.as_str());
        assert!(headers["age"].to_str().unwrap().parse::<u64>().unwrap() < 60);
        assert_eq!(headers["content-security-policy"], "script-src 'none'");
        assert_eq!(headers["x-content-type-options"], "nosniff");
    }
    assert_eq!(renders(&upstream), 1);

    let head = request(Method::HEAD, &proxy.url(path), &[]).await;
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(
        head.headers()["content-length"],
        want.len().to_string().as_str()
    );
    assert!(
        head.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty()
    );

    let ranged = request(Method::GET, &proxy.url(path), &[("range", "bytes=10-19")]).await;
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        ranged.headers()["content-range"],
        format!("bytes 10-19/{}", want.len()).as_str()
    );
    let part = ranged.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(part, want.slice(10..20));

    let past = format!("bytes={}-", want.len());
    let unsatisfiable = request(Method::GET, &proxy.url(path), &[("range", &past)]).await;
    assert_eq!(unsatisfiable.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    let revalidated = request(Method::GET, &proxy.url(path), &[("if-none-match", &etag)]).await;
    assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(revalidated.headers()["etag"], etag.as_str());
    assert!(
        revalidated
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty()
    );
    assert_eq!(renders(&upstream), 1, "no answer above needed the upstream");
    proxy.shutdown().await;
}

/// A range asked of a key nobody has rendered yet: the proxy renders the whole result (and
/// stores it), and answers the range from it.
#[tokio::test]
async fn a_range_on_a_miss_renders_the_whole_result_once() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let proxy = Proxy::start(config(&upstream, &[]), s3.stores()).await;
    let path = "/ok/ranged-first.jpg";
    let want = body_for(path);
    let ranged = request(Method::GET, &proxy.url(path), &[("range", "bytes=-5")]).await;
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(ranged.headers()["x-cache"], "MISS");
    let tail = ranged.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(tail, want.slice(want.len() - 5..));
    let (_, headers, body) = get(&proxy.url(path)).await;
    assert_eq!(
        (headers["x-cache"].to_str().unwrap(), body),
        ("HIT memory", want.clone())
    );
    assert_eq!(renders(&upstream), 1);
    proxy.shutdown().await;
    assert_eq!(s3.object(&key(path)).await.expect("stored").0, want);
}

/// An object another machine put in the bucket is served from there, with its stored type,
/// without a render; and a restarted proxy finds what the last one stored.
#[tokio::test]
async fn what_the_bucket_holds_costs_no_render() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let theirs = "/ok/put-by-another-machine.jpg";
    let their_body = bytes::Bytes::from_static(b"rendered elsewhere");
    s3.put(&key(theirs), their_body.clone()).await;

    let proxy = Proxy::start(config(&upstream, &[]), s3.stores()).await;
    let (status, headers, body) = get(&proxy.url(theirs)).await;
    assert_eq!((status, body), (StatusCode::OK, their_body.clone()));
    assert_eq!(headers["x-cache"], "HIT bucket");
    assert_eq!(headers["content-type"], "image/jpeg");
    assert_eq!(renders(&upstream), 0);
    // Promoted: the next one comes from memory.
    let (_, headers, _) = get(&proxy.url(theirs)).await;
    assert_eq!(headers["x-cache"], "HIT memory");

    let ours = "/ok/stored-before-restart.jpg";
    get(&proxy.url(ours)).await;
    proxy.shutdown().await;
    assert_eq!(renders(&upstream), 1);

    let restarted = Proxy::start(config(&upstream, &[]), s3.stores()).await;
    let (status, headers, body) = get(&restarted.url(ours)).await;
    assert_eq!((status, body), (StatusCode::OK, body_for(ours)));
    assert_eq!(headers["x-cache"], "HIT bucket");
    assert_eq!(headers["cache-control"], "max-age=31536000, public");
    assert_eq!(renders(&upstream), 1, "the restart cost no render");
    restarted.shutdown().await;
    assert_eq!(
        s3.puts(),
        2,
        "the set-up PUT and ours; the hits stored nothing"
    );
}

/// imgproxy down: stored keys are still served; a new key gets a 502 at once.
#[tokio::test]
async fn with_the_upstream_down_stored_keys_are_served() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let stored = "/ok/survives.jpg";
    s3.put(&key(stored), body_for(stored)).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = config(&upstream, &[]);
    config.upstream = format!("http://{dead}").parse().unwrap();
    let proxy = Proxy::start(config, s3.stores()).await;
    let (status, _, body) = get(&proxy.url(stored)).await;
    assert_eq!((status, body), (StatusCode::OK, body_for(stored)));
    let started = Instant::now();
    let (status, _, _) = get(&proxy.url("/ok/never-rendered.jpg")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    proxy.shutdown().await;
}

/// A bucket that holds every request: a lookup gives up at `STORE_READ_TIMEOUT_MS` and the
/// upstream renders; the client sees no error.
#[tokio::test]
async fn a_stuck_bucket_costs_a_miss_at_most_the_read_timeout() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    s3.faults.hold.store(true, Ordering::SeqCst);
    let proxy = Proxy::start(
        config(&upstream, &[("STORE_READ_TIMEOUT_MS", "200")]),
        s3.stores(),
    )
    .await;
    let path = "/ok/bucket-stuck.jpg";
    let started = Instant::now();
    let (status, headers, body) = get(&proxy.url(path)).await;
    let took = started.elapsed();
    assert_eq!((status, body), (StatusCode::OK, body_for(path)));
    assert_eq!(headers["x-cache"], "MISS");
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_millis(1000), "{took:?}");
    s3.release();
    proxy.shutdown().await;
}

/// Results that may not be stored don't hold followers: each asks the upstream itself and
/// gets its own answer.
#[tokio::test]
async fn followers_of_an_answer_that_is_not_stored_ask_for_themselves() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let proxy = Proxy::start(config(&upstream, &[]), s3.stores()).await;
    let path = "/nostore/private.jpg";
    for _ in 0..3 {
        let (status, headers, body) = get(&proxy.url(path)).await;
        assert_eq!((status, body), (StatusCode::OK, body_for(path)));
        assert_eq!(headers["x-cache"], "MISS");
        assert!(
            headers
                .get_all("cache-control")
                .iter()
                .any(|v| v == "no-store")
        );
    }
    assert_eq!(renders(&upstream), 3);
    proxy.shutdown().await;
    assert!(s3.keys().await.is_empty());
}

/// With `CACHE_DIR` beside a bucket, a result goes to the disk tier too, and is served from
/// there (memory off here) — also by a restarted proxy, which asks the bucket nothing.
#[tokio::test]
async fn the_disk_tier_serves_what_it_holds_across_a_restart() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let dir = tempfile::tempdir().unwrap();
    let no_memory = [("MEMORY_CACHE_MAX_BYTES", "0")];
    let path = "/ok/on-disk.jpg";
    let want = body_for(path);
    {
        let stores = s3.stores_with_disk(dir.path());
        let proxy = Proxy::start(config(&upstream, &no_memory), stores).await;
        let (_, headers, body) = get(&proxy.url(path)).await;
        assert_eq!(
            (headers["x-cache"].to_str().unwrap(), body),
            ("MISS", want.clone())
        );
        until("the disk tier's copy", async || {
            metric(&proxy.metrics().await, "imgproxy_cache_disk_entries") >= 1.0
        })
        .await;
        let (_, headers, body) = get(&proxy.url(path)).await;
        assert_eq!(
            (headers["x-cache"].to_str().unwrap(), body),
            ("HIT disk", want.clone())
        );
        proxy.shutdown().await;
    }
    let gets = s3.gets();
    let stores = s3.stores_with_disk(dir.path());
    let restarted = Proxy::start(config(&upstream, &no_memory), stores).await;
    let (_, headers, body) = get(&restarted.url(path)).await;
    assert_eq!(
        (headers["x-cache"].to_str().unwrap(), body),
        ("HIT disk", want)
    );
    assert_eq!(s3.gets(), gets, "the bucket was not asked");
    assert_eq!(renders(&upstream), 1);
    restarted.shutdown().await;
}

/// Purge: only with the admin token; it empties memory and the bucket, and the next request
/// renders again. Without a token configured the endpoint does not exist.
#[tokio::test]
async fn purge_removes_a_key_from_every_tier() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let token = "a-long-enough-admin-token";
    let proxy = Proxy::start(config(&upstream, &[("ADMIN_TOKEN", token)]), s3.stores()).await;
    let path = "/ok/purged.jpg";
    get(&proxy.url(path)).await;
    until("the upload", async || s3.object(&key(path)).await.is_some()).await;
    let purge_url = proxy.url(&format!("/_imgproxy-cache/cache{path}"));

    let anonymous = request(Method::DELETE, &purge_url, &[]).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let wrong = request(
        Method::DELETE,
        &purge_url,
        &[("authorization", "Bearer wrong-token-of-some-length")],
    )
    .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let bearer = format!("Bearer {token}");
    let get_it = request(Method::GET, &purge_url, &[("authorization", &bearer)]).await;
    assert_eq!(get_it.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(s3.object(&key(path)).await.is_some(), "nothing purged yet");

    let purged = request(Method::DELETE, &purge_url, &[("authorization", &bearer)]).await;
    assert_eq!(purged.status(), StatusCode::OK);
    let report: serde_json::Value =
        serde_json::from_slice(&purged.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(report["key"], key(path));
    assert_eq!(report["memory"], true);
    assert_eq!(report["bucket"], true);
    assert!(s3.object(&key(path)).await.is_none());
    let (_, headers, _) = get(&proxy.url(path)).await;
    assert_eq!(headers["x-cache"], "MISS");
    assert_eq!(renders(&upstream), 2);
    proxy.shutdown().await;

    let closed = Proxy::start(config(&upstream, &[]), s3.stores()).await;
    let response = request(
        Method::DELETE,
        &closed.url(&format!("/_imgproxy-cache/cache{path}")),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    closed.shutdown().await;
}

/// Puts an object the way the proxy would have stored it `age` ago, allowed `max_age`.
async fn put_rendered(s3: &S3, key: &str, body: &'static [u8], age: Duration, max_age: u64) {
    let stored_at = std::time::SystemTime::now() - age;
    let secs = stored_at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    s3.client()
        .put_object()
        .bucket(BUCKET)
        .key(key)
        .content_type("image/jpeg")
        .cache_control(format!("max-age={max_age}"))
        .metadata("stored-at", secs.to_string())
        .body(bytes::Bytes::from_static(body).into())
        .send()
        .await
        .unwrap();
}

/// A stale result is served at once while one background render replaces it everywhere; the
/// next request gets the new one.
#[tokio::test]
async fn a_stale_result_is_served_while_it_is_rendered_again() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let path = "/ok/went-stale.jpg";
    put_rendered(
        &s3,
        &key(path),
        b"old rendering",
        Duration::from_secs(7200),
        3600,
    )
    .await;
    let proxy = Proxy::start(config(&upstream, &[]), s3.stores()).await;

    let (status, headers, body) = get(&proxy.url(path)).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"old rendering"[..]));
    assert_eq!(headers["x-cache"], "STALE bucket");
    assert!(headers["age"].to_str().unwrap().parse::<u64>().unwrap() >= 7200);
    until("the bucket's copy replaced", async || {
        s3.object(&key(path))
            .await
            .is_some_and(|(b, ..)| b == body_for(path))
    })
    .await;
    let (_, headers, body) = get(&proxy.url(path)).await;
    assert_eq!(
        (headers["x-cache"].to_str().unwrap(), body),
        ("HIT memory", body_for(path))
    );
    assert_eq!(renders(&upstream), 1, "one refresh");
    proxy.shutdown().await;
}

/// With the upstream down a stale result is still served (and stays).
#[tokio::test]
async fn a_stale_result_is_served_when_the_upstream_is_down() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let path = "/ok/stale-and-alone.jpg";
    put_rendered(
        &s3,
        &key(path),
        b"old rendering",
        Duration::from_secs(7200),
        3600,
    )
    .await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = config(&upstream, &[]);
    config.upstream = format!("http://{dead}").parse().unwrap();
    let proxy = Proxy::start(config, s3.stores()).await;
    for _ in 0..3 {
        let (status, headers, body) = get(&proxy.url(path)).await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"old rendering"[..]));
        assert!(headers["x-cache"].to_str().unwrap().starts_with("STALE"));
    }
    proxy.shutdown().await;
    assert_eq!(
        s3.object(&key(path)).await.unwrap().0,
        &b"old rendering"[..]
    );
}

/// The name a browser saves an image under (imgproxy's `Content-Disposition`) is kept with
/// the result: on a hit, and on the object in the bucket, which browsers read first.
#[tokio::test]
async fn the_saved_file_name_travels_with_the_result() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let proxy = Proxy::start(config(&upstream, &[]), s3.stores()).await;
    let path = "/named/photo.jpg";
    let want = "inline; filename=\"named.jpg\"";
    let (_, miss, _) = get(&proxy.url(path)).await;
    let (_, hit, _) = get(&proxy.url(path)).await;
    assert_eq!(hit["x-cache"], "HIT memory");
    for headers in [miss, hit] {
        assert_eq!(headers["content-disposition"], want);
    }
    proxy.shutdown().await;
    let head = s3
        .client()
        .head_object()
        .bucket(BUCKET)
        .key(key(path))
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_disposition(), Some(want));
}

/// A bucket that takes 2 s to answer a GET: the first misses cost the read timeout each, then
/// the breaker opens and a miss costs nothing more; no client sees an error.
#[tokio::test]
async fn a_slow_bucket_costs_a_timeout_until_the_breaker_opens() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    s3.faults.get_delay_ms.store(2000, Ordering::SeqCst);
    let proxy = Proxy::start(
        config(
            &upstream,
            &[
                ("STORE_READ_TIMEOUT_MS", "200"),
                ("STORE_READ_BREAKER_FAILURES", "2"),
            ],
        ),
        s3.stores(),
    )
    .await;
    let mut took = Vec::new();
    for i in 0..6 {
        let path = format!("/ok/slow-bucket-{i}");
        let started = Instant::now();
        let (status, _, body) = get(&proxy.url(&path)).await;
        took.push(started.elapsed());
        assert_eq!((status, body), (StatusCode::OK, body_for(&path)));
    }
    for slow in &took[..2] {
        assert!(*slow >= Duration::from_millis(200), "{took:?}");
    }
    for fast in &took[2..] {
        assert!(*fast < Duration::from_millis(150), "{took:?}");
    }
    let metrics = proxy.metrics().await;
    assert_eq!(metric(&metrics, "imgproxy_cache_bucket_breaker_state"), 1.0);
    assert_eq!(
        metric(
            &metrics,
            r#"imgproxy_cache_bucket_reads_total{result="skipped"}"#
        ),
        4.0
    );
    proxy.shutdown().await;
}

/// A stored object too large to hold in the copy budget is streamed from the bucket to its
/// client alone: never rendered again for want of memory.
#[tokio::test]
async fn a_stored_object_too_large_to_share_is_still_served_from_the_bucket() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let path = "/ok/large-in-the-bucket.jpg";
    let large = bytes::Bytes::from(vec![3u8; 5000]);
    s3.put(&key(path), large.clone()).await;
    let proxy = Proxy::start(
        config(
            &upstream,
            &[
                ("MAX_CACHEABLE_BYTES", "1000"),
                ("UPLOAD_QUEUE_MAX_BYTES", "4000"),
            ],
        ),
        s3.stores(),
    )
    .await;
    for _ in 0..2 {
        let (status, headers, body) = get(&proxy.url(path)).await;
        assert_eq!((status, body), (StatusCode::OK, large.clone()));
        assert_eq!(headers["x-cache"], "HIT bucket");
    }
    assert_eq!(renders(&upstream), 0);
    proxy.shutdown().await;
}
