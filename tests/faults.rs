//! Nothing lost: with a disk tier beside the bucket, results waiting for upload are spooled
//! on disk, so a bucket outage longer than the memory queue, a SIGTERM with the bucket down,
//! and a `kill -9` all end with every result in the bucket, byte for byte — and a damaged
//! spool file is never uploaded. Real servers throughout: s3s-fs behind a front that fails
//! PUTs on purpose, the proxy in-process or as its own process.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

/// Makes every PUT fail (500 InternalError) until [`bucket_back`]: a bucket outage as the
/// upload path sees it.
fn bucket_down(s3: &S3) {
    s3.faults.fail_puts.store(usize::MAX / 2, Ordering::SeqCst);
}

fn bucket_back(s3: &S3) {
    s3.faults.fail_puts.store(0, Ordering::SeqCst);
}

/// Every path is in the bucket with the bytes the client got, and nothing else is.
async fn bucket_holds_exactly(s3: &S3, paths: &[String]) {
    let mut want: Vec<String> = paths.iter().map(|p| key(p)).collect();
    want.sort();
    let mut keys = s3.keys().await;
    keys.sort();
    assert_eq!(keys, want);
    for path in paths {
        let (body, content_type, _) = s3.object(&key(path)).await.unwrap();
        assert!(
            body == expected(path),
            "{path}: {} bytes stored, not what the client got",
            body.len()
        );
        assert_eq!(content_type, "image/jpeg", "{path}");
    }
}

/// What the upstream answers for `path`.
fn expected(path: &str) -> bytes::Bytes {
    if path.starts_with("/kb100/") {
        kb100()
    } else {
        body_for(path)
    }
}

fn paths(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("/ok/{prefix}-{i}.jpg")).collect()
}

async fn fetch_all(url: impl Fn(&str) -> String, paths: &[String]) {
    for path in paths {
        let (status, _, body) = get(&url(path)).await;
        assert_eq!(status, http::StatusCode::OK, "{path}");
        assert!(
            body == expected(path),
            "{path}: {} bytes, not what the upstream sent",
            body.len()
        );
    }
}

/// The settings that point a proxy process at `s3`, with its disk tier in `dir`.
fn s3_env<'a>(s3: &'a S3, dir: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("S3_BUCKET", BUCKET),
        ("S3_ENDPOINT", &s3.endpoint),
        ("S3_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("CACHE_DIR", dir),
        ("UPLOAD_RETRY_BASE_MS", "10"),
        ("UPLOAD_RETRY_MAX_MS", "50"),
    ]
}

/// How many results the proxy has written to its spool.
fn spooled(metrics: &str) -> f64 {
    metric(
        metrics,
        r#"imgproxy_cache_upload_spool_total{event="written"}"#,
    )
}

/// The spool file of the result stored under `path`.
fn spool_file(dir: &std::path::Path, path: &str) -> std::path::PathBuf {
    dir.join(".spool")
        .join(hex::encode(Sha256::digest(key(path).as_bytes())))
}

/// S3 answering 500 InternalError twice, then 503 SlowDown twice, then OK: the client gets its
/// result as ever, the upload is retried four times and stored, and the metrics say so.
#[tokio::test]
async fn s3_errors_and_slow_down_are_retried_until_stored() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    s3.faults.fail_puts.store(2, Ordering::SeqCst);
    s3.faults.slow_down_puts.store(2, Ordering::SeqCst);
    let settings = [
        ("UPLOAD_MAX_ATTEMPTS", "5"),
        ("UPLOAD_RETRY_BASE_MS", "10"),
        ("UPLOAD_RETRY_MAX_MS", "50"),
    ];
    let proxy = Proxy::start(config(&upstream, &settings), s3.stores()).await;
    let paths = paths("slowed-down", 1);
    fetch_all(|p| proxy.url(p), &paths).await;
    // The proxy's own account: the bucket has the object a moment before the proxy has read
    // the answer to its PUT.
    let stored = r#"imgproxy_cache_uploads_total{outcome="stored"}"#;
    until("the result stored", async || {
        metric(&proxy.metrics().await, stored) == 1.0
    })
    .await;
    let metrics = proxy.metrics().await;
    assert_eq!(metric(&metrics, "imgproxy_cache_upload_retries_total"), 4.0);
    proxy.shutdown().await;
    assert_eq!(
        s3.puts(),
        5,
        "two 500s, two 503s, then the one that stored it"
    );
    bucket_holds_exactly(&s3, &paths).await;
}

/// An upstream that cuts a body, goes silent mid-body or answers 503: each client gets what
/// the upstream sent (a cut as a cut, the 503 as it came), and none of it is kept in any tier
/// — memory, disk, spool or bucket — so asking again goes to the upstream again.
#[tokio::test]
async fn an_upstream_that_cuts_stalls_or_fails_leaves_nothing_in_any_tier() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(
        config(&upstream, &[("UPSTREAM_TIMEOUT_SECS", "1")]),
        s3.stores_with_disk(dir.path()),
    )
    .await;
    for round in 1..=2 {
        let before = upstream.requests.load(Ordering::SeqCst);
        for path in ["/truncate/cut.jpg", "/stall/silent.jpg"] {
            let result = try_get(&proxy.url(path)).await;
            assert!(result.is_err(), "round {round}, {path}: got {result:?}");
        }
        let (status, headers, body) = get(&proxy.url("/status/503")).await;
        assert_eq!(status, http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, body_for("/status/503"));
        assert_eq!(headers["x-cache"], "MISS", "round {round}");
        let asked = upstream.requests.load(Ordering::SeqCst) - before;
        assert_eq!(asked, 3, "round {round}: every ask reached the upstream");
    }
    let metrics = proxy.metrics().await;
    for gauge in [
        "imgproxy_cache_memory_entries",
        "imgproxy_cache_disk_entries",
        "imgproxy_cache_upload_spool_files",
        "imgproxy_cache_upload_queue_depth",
    ] {
        assert_eq!(metric(&metrics, gauge), 0.0, "{gauge}");
    }
    let not_cacheable = |reason: &str| {
        metric(
            &metrics,
            &format!(r#"imgproxy_cache_not_cacheable_total{{reason="{reason}"}}"#),
        )
    };
    assert_eq!(not_cacheable("incomplete"), 4.0);
    assert_eq!(not_cacheable("status"), 2.0);
    proxy.shutdown().await;
    assert_eq!(s3.puts(), 0);
    assert!(s3.keys().await.is_empty());
    let files = files_under(dir.path());
    assert!(
        files.iter().all(|f| f.ends_with(".lock")),
        "the disk tier holds {files:?}"
    );
}

/// Every file under `dir`, directories left out.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// A disk tier under load cannot grow the process's threads without bound: 64 clients at once,
/// first writing 192 results into the disk tier and spool, then reading them back from it
/// (no memory tier), and the threads stay within what the runtimes may keep — each runtime's
/// blocking pool capped at `MAX_BLOCKING_THREADS`, where tokio's default would let it grow to
/// one thread per waiting file call (512).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_disk_tier_keeps_the_threads_bounded() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = s3_env(&s3, dir.path().to_str().unwrap());
    env.push(("MEMORY_CACHE_MAX_BYTES", "0"));
    let proxy = Arc::new(ProxyProcess::start(&upstream.url(), &env));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let blocking = imgproxy_cache::cache::fs::MAX_BLOCKING_THREADS;
    // The main runtime (a worker a core, its blocking pool used only at start-up and for the
    // signal), a serving runtime a core, the upload runtime (one worker): each with its pool.
    let bound = 1 + cores + 4 + cores * (1 + blocking) + (1 + blocking);
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (proxy, done) = (proxy.clone(), done.clone());
        tokio::spawn(async move {
            let mut most = 0.0f64;
            while !done.load(Ordering::SeqCst) {
                most = most.max(proxy.threads());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            most
        })
    };
    let paths: Vec<String> = (0..192).map(|i| format!("/kb100/busy-{i}.jpg")).collect();
    for round in ["written", "read back"] {
        let fetches = futures_util::stream::iter(&paths).map(|path| {
            let url = proxy.url(path);
            async move {
                let (status, _, body) = get(&url).await;
                assert_eq!(status, http::StatusCode::OK, "{round}: {path}");
                assert!(body == kb100(), "{round}: {path}: {} bytes", body.len());
            }
        });
        fetches.buffer_unordered(64).collect::<Vec<()>>().await;
    }
    let hits = metric(
        &proxy.metrics().await,
        r#"imgproxy_cache_lookups_total{result="hit_disk"}"#,
    );
    done.store(true, Ordering::SeqCst);
    let most = sampler.await.unwrap();
    assert!(hits > 0.0, "the second round read the disk tier");
    assert!(
        most <= bound as f64,
        "{most} threads at most, more than the {bound} the runtimes may keep"
    );
}

/// S3 refusing for good — 403 AccessDenied, 404 NoSuchBucket: every client is served as ever,
/// each upload is tried once (no retries hammer a bucket that will not take it) and counted
/// as failed, nothing is left in the spool, and the log names what to check once, not once
/// per result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_that_refuses_for_good_is_not_retried_and_the_hint_is_logged_once() {
    let upstream = Upstream::start().await;
    for (refusal, hint) in [
        ("AccessDenied", "the credentials need s3:PutObject"),
        ("NoSuchBucket", "check S3_BUCKET, S3_ENDPOINT and S3_REGION"),
    ] {
        let s3 = S3::start().await;
        let flag = match refusal {
            "AccessDenied" => &s3.faults.deny_puts,
            _ => &s3.faults.missing_bucket_puts,
        };
        flag.store(true, Ordering::SeqCst);
        let dir = tempfile::tempdir().unwrap();
        let mut env = s3_env(&s3, dir.path().to_str().unwrap());
        env.push(("UPLOAD_MAX_ATTEMPTS", "5"));
        let mut proxy = ProxyProcess::start(&upstream.url(), &env);
        let paths = paths(&format!("refused-{refusal}"), 5);
        fetch_all(|p| proxy.url(p), &paths).await;
        let failed = r#"imgproxy_cache_uploads_total{outcome="failed"}"#;
        // A failed upload is counted, then its spool file removed: wait for both. A refusal
        // taken for a passing fault would keep the files, and this would time out.
        until("every upload failed and left the spool", async || {
            let metrics = proxy.metrics().await;
            metric(&metrics, failed) == 5.0
                && metric(&metrics, "imgproxy_cache_upload_spool_files") == 0.0
        })
        .await;
        let metrics = proxy.metrics().await;
        assert_eq!(s3.puts(), 5, "{refusal}: one PUT per result");
        assert_eq!(metric(&metrics, "imgproxy_cache_upload_retries_total"), 0.0);
        let log = proxy.stop();
        let hinted = log.lines().filter(|l| l.contains(hint)).count();
        assert_eq!(hinted, 1, "{refusal}: the hint once in\n{log}");
        assert!(s3.keys().await.is_empty());
    }
}

/// An outage with 30 results and room for 2 in the memory queue: every one is spooled, none
/// dropped, and all reach the bucket once it is back. Without the spool 28 would be dropped.
#[tokio::test]
async fn a_bucket_outage_longer_than_the_memory_queue_loses_nothing() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(
        config(&upstream, &[("UPLOAD_QUEUE_CAPACITY", "2")]),
        s3.stores_with_disk(dir.path()),
    )
    .await;
    bucket_down(&s3);
    let paths = paths("outage", 30);
    fetch_all(|p| proxy.url(p), &paths).await;
    until("every result spooled", async || {
        spooled(&proxy.metrics().await) >= 30.0
    })
    .await;
    until("uploads tried and failed during the outage", async || {
        s3.puts() >= 60
    })
    .await;
    assert!(s3.keys().await.is_empty());
    bucket_back(&s3);
    until("every result stored", async || s3.keys().await.len() == 30).await;
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"imgproxy_cache_uploads_total{outcome="dropped_full"}"#
        ),
        0.0
    );
    until("the spool emptied", async || {
        metric(&proxy.metrics().await, "imgproxy_cache_upload_spool_files") == 0.0
    })
    .await;
    // Nothing is left to upload, so the drain ends at once, not at its deadline (20 s).
    let report = tokio::time::timeout(Duration::from_secs(10), proxy.shutdown())
        .await
        .expect("a drain with nothing left ends at once");
    assert_eq!((report.abandoned, report.kept), (0, 0));
    bucket_holds_exactly(&s3, &paths).await;
    let left = std::fs::read_dir(dir.path().join(".spool"))
        .unwrap()
        .count();
    assert_eq!(left, 0, "spool files left after their uploads");
}

/// SIGTERM while the bucket is down: the drain reports what it keeps, the files stay, and
/// the next start uploads them.
#[tokio::test]
async fn what_a_shutdown_cannot_upload_waits_in_the_spool_for_the_next_start() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let dir = tempfile::tempdir().unwrap();
    let short = [("SHUTDOWN_TIMEOUT_SECS", "1")];
    let proxy = Proxy::start(config(&upstream, &short), s3.stores_with_disk(dir.path())).await;
    bucket_down(&s3);
    let paths = paths("shutdown", 5);
    fetch_all(|p| proxy.url(p), &paths).await;
    until("every result spooled", async || {
        spooled(&proxy.metrics().await) >= 5.0
    })
    .await;
    let report = proxy.shutdown().await;
    assert_eq!((report.abandoned, report.kept), (0, 5));
    assert!(s3.keys().await.is_empty());
    for path in &paths {
        assert!(spool_file(dir.path(), path).is_file(), "{path} kept");
    }
    bucket_back(&s3);
    let renders = upstream.requests.load(Ordering::SeqCst);
    let restarted = Proxy::start(config(&upstream, &short), s3.stores_with_disk(dir.path())).await;
    until("the kept results stored", async || {
        s3.keys().await.len() == 5
    })
    .await;
    assert_eq!(
        metric(
            &restarted.metrics().await,
            r#"imgproxy_cache_upload_spool_total{event="resumed"}"#
        ),
        5.0
    );
    assert_eq!(
        upstream.requests.load(Ordering::SeqCst),
        renders,
        "nothing rendered again"
    );
    restarted.shutdown().await;
    bucket_holds_exactly(&s3, &paths).await;
}

/// `kill -9` with uploads waiting (the bucket down), then a damaged spool file (a byte
/// flipped) and a torn one (cut short): after the restart the whole ones are stored, the
/// damaged ones are counted, removed and never uploaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_the_spool_is_uploaded_and_damaged_files_never_are() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().to_str().unwrap();
    bucket_down(&s3);
    let paths = paths("killed", 6);
    let mut first = ProxyProcess::start(&upstream.url(), &s3_env(&s3, cache_dir));
    fetch_all(|p| first.url(p), &paths).await;
    until("every result spooled", async || {
        spooled(&first.metrics().await) >= 6.0
    })
    .await;
    first.kill();
    assert!(s3.keys().await.is_empty());

    let flipped = spool_file(dir.path(), &paths[0]);
    let mut bytes = std::fs::read(&flipped).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&flipped, bytes).unwrap();
    let torn = spool_file(dir.path(), &paths[1]);
    let len = std::fs::metadata(&torn).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&torn)
        .unwrap()
        .set_len(len / 2)
        .unwrap();

    bucket_back(&s3);
    let mut second = ProxyProcess::start(&upstream.url(), &s3_env(&s3, cache_dir));
    // Counted once it is ready: its start-up health check is a request too.
    let renders = upstream.requests.load(Ordering::SeqCst);
    until("the whole results stored", async || {
        s3.keys().await.len() == 4
    })
    .await;
    until("the spool emptied", async || {
        metric(&second.metrics().await, "imgproxy_cache_upload_spool_files") == 0.0
    })
    .await;
    let metrics = second.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"imgproxy_cache_upload_spool_total{event="damaged"}"#
        ),
        2.0
    );
    assert_eq!(upstream.requests.load(Ordering::SeqCst), renders);
    assert!(!flipped.exists() && !torn.exists());
    second.stop();
    bucket_holds_exactly(&s3, &paths[2..]).await;
}

/// `kill -9` with PUTs provably in flight (the bucket holds them unanswered): the next start
/// uploads every result from the spool, and one that reached the bucket meanwhile is not stored
/// twice — the bucket ends up with each result once, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_mid_upload_is_stored_after_the_restart() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env = s3_env(&s3, dir.path().to_str().unwrap());
    s3.faults.hold.store(true, Ordering::SeqCst);
    let paths = paths("kill-mid-put", 3);
    let mut first = ProxyProcess::start(&upstream.url(), &env);
    fetch_all(|p| first.url(p), &paths).await;
    until("the uploads in flight", async || s3.puts() >= 3).await;
    first.kill();
    s3.release();

    let mut second = ProxyProcess::start(&upstream.url(), &env);
    until("every result stored", async || s3.keys().await.len() == 3).await;
    until("the spool emptied", async || {
        metric(&second.metrics().await, "imgproxy_cache_upload_spool_files") == 0.0
    })
    .await;
    second.stop();
    bucket_holds_exactly(&s3, &paths).await;
}

/// `kill -9` while the disk tier and the spool are being written (16 clients at a time on
/// 100 KB results, killed once 40 were answered, with others being written to disk): the next
/// start serves every key whole — from the disk tier or rendered again, never a torn or mixed
/// object — and the bucket ends up holding exactly what the clients got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_while_the_disk_tier_is_written_never_serves_or_uploads_a_partial_object() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = s3_env(&s3, dir.path().to_str().unwrap());
    // Every second-round answer comes from the disk tier or the upstream.
    env.push(("MEMORY_CACHE_MAX_BYTES", "0"));
    let paths: Vec<String> = (0..160)
        .map(|i| format!("/kb100/mid-write-{i}.jpg"))
        .collect();
    let mut first = ProxyProcess::start(&upstream.url(), &env);
    let answered = Arc::new(AtomicUsize::new(0));
    let load = {
        let (base, paths, answered) = (first.url(""), paths.clone(), answered.clone());
        tokio::spawn(async move {
            let fetches = futures_util::stream::iter(paths).map(|path| {
                let (url, answered) = (format!("{base}{path}"), answered.clone());
                async move {
                    if let Ok((status, body)) = try_get(&url).await {
                        assert_eq!(status, http::StatusCode::OK, "{url}");
                        assert!(body == kb100(), "{url}: {} bytes", body.len());
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
            fetches.buffer_unordered(16).collect::<Vec<()>>().await;
        })
    };
    // A result reaches the disk tier a moment after its client has it (once it is in the
    // spool), so wait for the tier too: the kill must find some written and some in progress.
    until("40 answered, some in the disk tier", async || {
        answered.load(Ordering::SeqCst) >= 40
            && metric(&first.metrics().await, "imgproxy_cache_disk_entries") >= 1.0
    })
    .await;
    first.kill();
    load.await.unwrap();

    let mut second = ProxyProcess::start(&upstream.url(), &env);
    let mut from_disk = 0;
    for path in &paths {
        let (status, headers, body) = get(&second.url(path)).await;
        assert_eq!(status, http::StatusCode::OK, "{path}");
        assert!(body == kb100(), "{path}: {} bytes served", body.len());
        from_disk += usize::from(headers["x-cache"] == "HIT disk");
    }
    assert!(
        from_disk > 0,
        "nothing the first process wrote was read back"
    );
    until("every result stored", async || {
        s3.keys().await.len() == paths.len()
    })
    .await;
    second.stop();
    bucket_holds_exactly(&s3, &paths).await;
}

/// Reads `response`'s body until at least `bytes` have come, then hangs up.
async fn leave_after(response: http::Response<hyper::body::Incoming>, bytes: usize) {
    use http_body_util::BodyExt;
    let mut body = response.into_body();
    let mut received = 0;
    while received < bytes {
        let frame = body.frame().await.expect("the body goes on").unwrap();
        received += frame.into_data().map_or(0, |d| d.len());
    }
}

/// Clients that hang up mid-body (8 MiB results, the upstream holding their second half).
/// One alone: nothing partial ever reaches the bucket or the disk tier — asked again, the key
/// is served whole. One with a follower on the same key: the follower gets the whole body, and
/// the result is stored whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_mid_body_leaves_nothing_partial_and_followers_unharmed() {
    use http_body_util::BodyExt;
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(config(&upstream, &[]), s3.stores_with_disk(dir.path())).await;
    let whole = vec![9u8; HUGE];
    let (alone, shared) = ("/hugegated/left-alone", "/hugegated/left-with-a-follower");

    let response = request(http::Method::GET, &proxy.url(alone), &[]).await;
    leave_after(response, 1 << 20).await;

    let leader = request(http::Method::GET, &proxy.url(shared), &[]).await;
    let follower = {
        let url = proxy.url(shared);
        tokio::spawn(async move {
            let response = request(http::Method::GET, &url, &[]).await;
            response.into_body().collect().await.unwrap().to_bytes()
        })
    };
    until("the follower on the leader's flight", async || {
        metric(
            &proxy.metrics().await,
            r#"imgproxy_cache_lookups_total{result="coalesced"}"#,
        ) >= 1.0
    })
    .await;
    leave_after(leader, 1 << 20).await;
    upstream.release();
    let got = follower.await.unwrap();
    assert!(got == whole, "the follower got {} bytes", got.len());
    until("the shared result stored", async || {
        s3.keys().await.contains(&key(shared))
    })
    .await;
    assert!(s3.object(&key(shared)).await.unwrap().0 == whole);

    // Asked again, the lone client's key is whole wherever it comes from.
    let (status, headers, body) = get(&proxy.url(alone)).await;
    assert_eq!(status, http::StatusCode::OK);
    assert!(
        body == whole,
        "{:?}: {} bytes",
        headers.get("x-cache"),
        body.len()
    );
    proxy.shutdown().await;
    for key in s3.keys().await {
        let stored = s3.object(&key).await.unwrap().0;
        assert!(stored == whole, "{key}: {} bytes stored", stored.len());
    }
}

/// `CACHE_DIR` removed at run time: every client still gets its result, every result still
/// reaches the bucket, the failures are counted and the tier is bypassed instead of failing
/// once per request; once the directory is back, the tier is used again.
#[tokio::test]
async fn a_failing_cache_dir_is_bypassed_and_clients_never_notice() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    let stores = s3.stores_with_disk(&cache_dir);
    let settings = [
        ("MEMORY_CACHE_MAX_BYTES", "0"),
        ("STORE_READ_BREAKER_FAILURES", "2"),
        ("STORE_READ_BREAKER_SECS", "1"),
    ];
    let proxy = Proxy::start(config(&upstream, &settings), stores).await;
    let before = paths("before", 1);
    fetch_all(|p| proxy.url(p), &before).await;
    until("the first result on disk and in the bucket", async || {
        metric(&proxy.metrics().await, "imgproxy_cache_disk_entries") >= 1.0
            && s3.keys().await.len() == 1
    })
    .await;

    std::fs::remove_dir_all(&cache_dir).unwrap();
    let during = paths("during", 20);
    fetch_all(|p| proxy.url(p), &during).await;
    // The result the tier lost is read from the bucket.
    let (_, headers, body) = get(&proxy.url(&before[0])).await;
    assert_eq!(
        (headers["x-cache"].to_str().unwrap(), body),
        ("HIT bucket", body_for(&before[0]))
    );
    until("every result stored", async || s3.keys().await.len() == 21).await;
    let metrics = proxy.metrics().await;
    let errors = metric(&metrics, r#"imgproxy_cache_disk_errors_total{op="write"}"#);
    let bypassed = metric(&metrics, "imgproxy_cache_disk_bypassed_total");
    assert!(errors >= 2.0, "{errors} write errors counted");
    assert!(
        bypassed >= 1.0 && errors < 20.0,
        "{errors} failed writes and {bypassed} bypassed for 20 results"
    );

    for sub in ["", ".meta", ".tmp", ".spool"] {
        std::fs::create_dir_all(cache_dir.join(sub)).unwrap();
    }
    let mut n = 0;
    until("the tier used again", async || {
        n += 1;
        fetch_all(|p| proxy.url(p), &[format!("/ok/after-{n}.jpg")]).await;
        metric(&proxy.metrics().await, "imgproxy_cache_disk_entries") >= 1.0
    })
    .await;
    proxy.shutdown().await;
    let mut all = before;
    all.extend(during);
    all.extend((1..=n).map(|i| format!("/ok/after-{i}.jpg")));
    bucket_holds_exactly(&s3, &all).await;
}

/// The path a small disk tier is mounted at, inside the test's mount namespace.
const SMALL_DISK: &str = "/tmp/imgproxy-cache-test-small-disk";

/// `CACHE_DIR` on a 512 KiB tmpfs that fills up (ENOSPC): every client still gets its result
/// and every result reaches the bucket; the failures are counted and the tier bypassed. Runs
/// in a mount namespace of its own (`unshare`).
#[test]
fn a_full_cache_dir_is_bypassed_and_clients_never_notice() {
    std::fs::create_dir_all(SMALL_DISK).unwrap();
    in_namespace(
        "a_full_cache_dir_is_bypassed_and_clients_never_notice",
        "--mount",
        &format!("mount -t tmpfs -o size=512k tmpfs {SMALL_DISK}"),
        full_cache_dir(),
    );
}

async fn full_cache_dir() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let cache_dir = std::path::Path::new(SMALL_DISK).join("cache");
    let settings = [("STORE_READ_BREAKER_FAILURES", "2")];
    let proxy = Proxy::start(
        config(&upstream, &settings),
        s3.stores_with_disk(&cache_dir),
    )
    .await;
    // 100 KB results, each written twice (the tier's copy, the spool file): the disk is full
    // after a few.
    let paths = (0..24)
        .map(|i| format!("/kb100/full-{i}"))
        .collect::<Vec<_>>();
    fetch_all(|p| proxy.url(p), &paths).await;
    until("every result stored", async || s3.keys().await.len() == 24).await;
    let metrics = proxy.metrics().await;
    let errors = metric(&metrics, r#"imgproxy_cache_disk_errors_total{op="write"}"#);
    let unspooled = metric(
        &metrics,
        r#"imgproxy_cache_upload_spool_total{event="write_failed"}"#,
    );
    let bypassed = metric(&metrics, "imgproxy_cache_disk_bypassed_total");
    assert!(
        errors >= 1.0 && unspooled >= 1.0 && bypassed >= 1.0,
        "{errors} write errors, {unspooled} not spooled, {bypassed} bypassed"
    );
    proxy.shutdown().await;
    bucket_holds_exactly(&s3, &paths).await;
}

/// `CACHE_DIR` turned read-only at run time (a read-only bind mount over it, in a mount
/// namespace of its own: the lock file the proxy holds open for writing keeps the directory's
/// own mount from being remounted): every client still gets its result, results already on
/// disk are still served from it, every new result reaches the bucket, the failed writes are
/// counted and the tier bypassed for writes; once it is writable again, it is written again.
#[test]
fn a_read_only_cache_dir_is_bypassed_and_clients_never_notice() {
    in_namespace(
        "a_read_only_cache_dir_is_bypassed_and_clients_never_notice",
        "--mount",
        "true",
        read_only_cache_dir(),
    );
}

fn mount(args: &[&str]) {
    let status = std::process::Command::new("mount")
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "mount {args:?}: {status}");
}

async fn read_only_cache_dir() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    let settings = [
        ("MEMORY_CACHE_MAX_BYTES", "0"),
        ("STORE_READ_BREAKER_FAILURES", "2"),
        ("STORE_READ_BREAKER_SECS", "1"),
    ];
    let proxy = Proxy::start(
        config(&upstream, &settings),
        s3.stores_with_disk(&cache_dir),
    )
    .await;
    let before = paths("before-ro", 1);
    fetch_all(|p| proxy.url(p), &before).await;
    until("the first result on disk and in the bucket", async || {
        metric(&proxy.metrics().await, "imgproxy_cache_disk_entries") >= 1.0
            && s3.keys().await.len() == 1
    })
    .await;

    let target = cache_dir.to_str().unwrap();
    mount(&["--bind", target, target]);
    mount(&["-o", "remount,bind,ro", target]);
    assert!(
        std::fs::write(cache_dir.join("probe"), b"x").is_err(),
        "the directory is read-only"
    );
    let during = paths("during-ro", 20);
    fetch_all(|p| proxy.url(p), &during).await;
    // What is on disk is still read from it.
    let (_, headers, body) = get(&proxy.url(&before[0])).await;
    assert_eq!(
        (headers["x-cache"].to_str().unwrap(), body),
        ("HIT disk", body_for(&before[0]))
    );
    until("every result stored", async || s3.keys().await.len() == 21).await;
    let metrics = proxy.metrics().await;
    let errors = metric(&metrics, r#"imgproxy_cache_disk_errors_total{op="write"}"#);
    let unspooled = metric(
        &metrics,
        r#"imgproxy_cache_upload_spool_total{event="write_failed"}"#,
    );
    let bypassed = metric(&metrics, "imgproxy_cache_disk_bypassed_total");
    assert!(
        errors >= 2.0 && unspooled >= 1.0 && bypassed >= 1.0 && errors < 20.0,
        "{errors} write errors, {unspooled} not spooled, {bypassed} bypassed for 20 results"
    );

    let status = std::process::Command::new("umount")
        .args(["--lazy", target])
        .status()
        .unwrap();
    assert!(status.success(), "umount {target}: {status}");
    let mut n = 0;
    until("the tier written again", async || {
        n += 1;
        fetch_all(|p| proxy.url(p), &[format!("/ok/after-ro-{n}.jpg")]).await;
        metric(&proxy.metrics().await, "imgproxy_cache_disk_entries") >= 2.0
    })
    .await;
    proxy.shutdown().await;
    let mut all = before;
    all.extend(during);
    all.extend((1..=n).map(|i| format!("/ok/after-ro-{i}.jpg")));
    bucket_holds_exactly(&s3, &all).await;
}

/// Every S3 call held (far longer than any client waits): clients are answered within the
/// lookup timeout, the breaker then spares them even that, and every result is stored once
/// the bucket answers again.
#[tokio::test]
async fn a_bucket_that_does_not_answer_costs_clients_at_most_the_lookup_timeout() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let dir = tempfile::tempdir().unwrap();
    let settings = [
        ("STORE_READ_TIMEOUT_MS", "300"),
        ("STORE_READ_BREAKER_FAILURES", "2"),
    ];
    let proxy = Proxy::start(
        config(&upstream, &settings),
        s3.stores_with_disk(dir.path()),
    )
    .await;
    s3.faults.hold.store(true, Ordering::SeqCst);
    let paths = paths("held", 10);
    let mut waits = Vec::new();
    for path in &paths {
        let started = std::time::Instant::now();
        let fetched = fetch_all(|p| proxy.url(p), std::slice::from_ref(path));
        tokio::time::timeout(Duration::from_secs(10), fetched)
            .await
            .expect("answered while S3 holds every call");
        waits.push(started.elapsed());
    }
    // A held call costs until the test releases it: no client waited for S3 beyond the
    // lookup's timeout (300 ms), and once the breaker opened not even that.
    assert!(
        waits.iter().all(|wait| *wait < Duration::from_secs(1)),
        "client waits {waits:?}"
    );
    assert!(
        waits[5..]
            .iter()
            .all(|wait| *wait < Duration::from_millis(100)),
        "client waits once the breaker opened {waits:?}"
    );
    assert!(s3.keys().await.is_empty());
    s3.release();
    until("every result stored", async || s3.keys().await.len() == 10).await;
    proxy.shutdown().await;
    bucket_holds_exactly(&s3, &paths).await;
}
