//! Bucket reads before the upstream, against a real S3 server (s3s-fs behind a front that can
//! fail, slow down or stall GETs): what a lookup finds, what counts as a miss, and that a sick
//! bucket costs one read timeout and then nothing while the breaker skips it.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use imgproxy_cache::cache::guard::{BreakerState, Failure, GuardConfig, Guarded, ReadGuard};
use imgproxy_cache::cache::metrics::BucketRead;
use imgproxy_cache::cache::store::{ErrorKind, PutMode};
use imgproxy_cache::cache::{Meta, Object, Reading, Store};
use imgproxy_cache::proxy::metrics::Metrics;

use common::{BUCKET, S3, metric};

const TIMEOUT: Duration = Duration::from_millis(300);

/// A guard over `store` with the read timeout above, its metrics in a registry of their own.
fn guarded(store: Arc<dyn Store>, failures: u32, open: Duration) -> (Arc<ReadGuard>, Metrics) {
    let metrics = Metrics::new();
    let config = GuardConfig {
        read_timeout: TIMEOUT,
        breaker_failures: failures,
        breaker_open: open,
    };
    let guard = ReadGuard::new(store, config, metrics.cache.bucket_reads.clone());
    (Arc::new(guard), metrics)
}

/// Polls the guard (not a fixed sleep) until its breaker reports `state`.
async fn wait_for(guard: &ReadGuard, state: BreakerState) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while guard.state() != state {
        assert!(Instant::now() < deadline, "the breaker never got {state:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads a body to its end: the bytes, and the error that ended it early.
async fn drain(reading: Reading) -> (Vec<u8>, Option<String>) {
    let mut body = reading.body;
    let mut got = Vec::new();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) => got.extend_from_slice(&chunk),
            Err(e) => return (got, Some(e.message)),
        }
    }
    (got, None)
}

fn expect_found(guarded: Guarded) -> Reading {
    match guarded {
        Guarded::Found(reading) => reading,
        other => panic!("expected found, got {:?}", other.result()),
    }
}

fn expect_failure(guarded: Guarded) -> Failure {
    match guarded {
        Guarded::Failed(failure) => failure,
        other => panic!("expected failed, got {:?}", other.result()),
    }
}

// A stored object comes back with the metadata it was stored with, and one put by someone
// else (no `stored-at`) gets its `Last-Modified` as the time it was stored.
#[tokio::test]
async fn a_found_object_streams_with_its_stored_metadata() {
    let s3 = S3::start().await;
    let store = s3.store();
    let body = Bytes::from((0..300_000u32).map(|i| i as u8).collect::<Vec<_>>());
    let meta = Meta {
        content_type: "image/avif".into(),
        cache_control: Some("max-age=3600, public".into()),
        stored_at: 1_700_000_000,
        content_disposition: None,
    };
    let object = Object {
        meta: meta.clone(),
        body: body.clone(),
    };
    store
        .put("ours", &object, PutMode::Overwrite)
        .await
        .unwrap();
    s3.put("theirs", Bytes::from_static(b"jpeg")).await;
    let (guard, metrics) = guarded(store, 5, Duration::from_secs(30));

    let reading = expect_found(guard.read("ours").await);
    assert_eq!(reading.meta, meta);
    assert_eq!(reading.len, body.len() as u64);
    let (got, error) = drain(reading).await;
    assert_eq!(error, None);
    assert!(got == body, "the body came back changed");

    let reading = expect_found(guard.read("theirs").await);
    assert_eq!(reading.meta.content_type, "image/jpeg");
    let now = imgproxy_cache::cache::object::unix_secs(std::time::SystemTime::now());
    assert!(
        reading.meta.stored_at.abs_diff(now) < 60,
        "stored_at {} is not the object's Last-Modified (now {now})",
        reading.meta.stored_at
    );
    assert_eq!(drain(reading).await, (b"jpeg".to_vec(), None));

    let text = metrics.encode();
    assert_eq!(
        metric(
            &text,
            r#"imgproxy_cache_bucket_reads_total{result="found"}"#
        ),
        2.0
    );
    assert_eq!(
        metric(&text, "imgproxy_cache_bucket_read_seconds_count"),
        2.0
    );
}

// The SDK hands the body over as it arrives (the first half of a body whose second half never
// comes is read), Content-Length is the announced length, and a stalled body ends in an error
// after one read timeout, which counts against the bucket.
#[tokio::test]
async fn the_body_streams_and_a_stall_ends_it_with_an_error() {
    let s3 = S3::start().await;
    let store = s3.store();
    let body = Bytes::from(vec![5u8; 256 * 1024]);
    let object = Object {
        meta: Meta {
            content_type: "image/png".into(),
            cache_control: None,
            stored_at: 1,
            content_disposition: None,
        },
        body: body.clone(),
    };
    store.put("k", &object, PutMode::Overwrite).await.unwrap();
    s3.faults.stall_get_bodies.store(true, Ordering::SeqCst);
    let (guard, metrics) = guarded(store, 1, Duration::from_secs(30));

    let reading = expect_found(guard.read("k").await);
    assert_eq!(reading.len, body.len() as u64);
    let mut chunks = reading.body;
    let mut got = 0;
    let mut last = Instant::now();
    let error = loop {
        let next = tokio::time::timeout(Duration::from_secs(5), chunks.next()).await;
        match next
            .expect("the guard let a stalled body hang")
            .expect("a stalled body ends with an error, not quietly")
        {
            Ok(chunk) => {
                got += chunk.len();
                last = Instant::now();
            }
            Err(e) => break e,
        }
    };
    let waited = last.elapsed();
    assert_eq!(got, body.len() / 2, "the half that was sent was streamed");
    assert!(
        error.message.contains("no chunk within"),
        "{}",
        error.message
    );
    assert!(
        waited >= TIMEOUT && waited < TIMEOUT + Duration::from_millis(200),
        "{waited:?}"
    );
    assert!(chunks.next().await.is_none(), "nothing after the error");
    assert_eq!(guard.state(), BreakerState::Open);
    let text = metrics.encode();
    assert_eq!(
        metric(&text, "imgproxy_cache_bucket_read_body_failures_total"),
        1.0
    );
    assert_eq!(metric(&text, "imgproxy_cache_bucket_breaker_state"), 1.0);
}

// The "Bucket down or 2 s slow" line of issue #15: each lookup before the breaker opens costs
// one read timeout, not the bucket's 2 s; after that lookups skip it in microseconds, without
// a request to the bucket.
#[tokio::test]
async fn a_slow_bucket_costs_one_timeout_then_is_skipped() {
    let s3 = S3::start().await;
    s3.faults.get_delay_ms.store(2000, Ordering::SeqCst);
    let (guard, metrics) = guarded(s3.store(), 2, Duration::from_secs(30));

    for _ in 0..2 {
        let started = Instant::now();
        let failure = expect_failure(guard.read("slow").await);
        let took = started.elapsed();
        assert!(matches!(failure, Failure::Timeout(t) if t == TIMEOUT));
        assert!(
            took >= TIMEOUT && took < TIMEOUT + Duration::from_millis(200),
            "{took:?}"
        );
    }
    assert_eq!(guard.state(), BreakerState::Open);
    let asked = s3.gets();
    for _ in 0..20 {
        let started = Instant::now();
        let guarded = guard.read("slow").await;
        let took = started.elapsed();
        assert_eq!(guarded.result(), BucketRead::Skipped);
        assert!(took < Duration::from_millis(5), "{took:?}");
    }
    assert_eq!(s3.gets(), asked, "skipped lookups asked the bucket");

    let text = metrics.encode();
    let reads = |result: &str| {
        metric(
            &text,
            &format!(r#"imgproxy_cache_bucket_reads_total{{result="{result}"}}"#),
        )
    };
    assert_eq!((reads("failed"), reads("skipped")), (2.0, 20.0));
    assert_eq!(metric(&text, "imgproxy_cache_bucket_breaker_state"), 1.0);
}

// 500s open the breaker after N in a row; once the open period has passed one probe goes
// through, and a bucket that answers again closes it.
#[tokio::test]
async fn failures_open_the_breaker_and_a_good_probe_closes_it() {
    let s3 = S3::start().await;
    s3.faults.fail_gets.store(1000, Ordering::SeqCst);
    let (guard, metrics) = guarded(s3.store(), 3, Duration::from_millis(200));

    for n in 0..3 {
        assert_eq!(guard.state(), BreakerState::Closed, "open after {n}");
        match expect_failure(guard.read("k").await) {
            Failure::Store(e) => assert_eq!(e.kind, ErrorKind::Transient, "{e}"),
            other => panic!("{other}"),
        }
    }
    assert_eq!(guard.state(), BreakerState::Open);
    let asked = s3.gets();
    assert_eq!(guard.read("k").await.result(), BucketRead::Skipped);
    assert_eq!(s3.gets(), asked);

    s3.faults.fail_gets.store(0, Ordering::SeqCst);
    wait_for(&guard, BreakerState::HalfOpen).await;
    assert_eq!(guard.read("k").await.result(), BucketRead::Missing);
    assert_eq!(s3.gets(), asked + 1, "the probe asked the bucket once");
    assert_eq!(guard.state(), BreakerState::Closed);
    assert_eq!(guard.read("k").await.result(), BucketRead::Missing);
    assert_eq!(
        metric(&metrics.encode(), "imgproxy_cache_bucket_breaker_state"),
        0.0
    );
}

// While the probe runs every other lookup still skips; a failed probe opens the breaker for
// another period; a probe whose caller gave up hands its place to the next lookup.
#[tokio::test]
async fn one_probe_at_a_time_and_a_failed_or_dropped_probe_does_not_close_it() {
    let s3 = S3::start().await;
    s3.faults.fail_gets.store(1000, Ordering::SeqCst);
    let (guard, metrics) = guarded(s3.store(), 1, Duration::from_millis(200));
    expect_failure(guard.read("k").await);
    wait_for(&guard, BreakerState::HalfOpen).await;

    // A slow, failing probe; the others skip while it runs.
    s3.faults.get_delay_ms.store(150, Ordering::SeqCst);
    let asked = s3.gets();
    let probe = tokio::spawn({
        let guard = guard.clone();
        async move { guard.read("k").await.result() }
    });
    let deadline = Instant::now() + Duration::from_secs(3);
    while s3.gets() == asked {
        assert!(
            Instant::now() < deadline,
            "the probe never reached the bucket"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(
        metric(&metrics.encode(), "imgproxy_cache_bucket_breaker_state"),
        2.0
    );
    for _ in 0..5 {
        assert_eq!(guard.read("other").await.result(), BucketRead::Skipped);
    }
    assert_eq!(probe.await.unwrap(), BucketRead::Failed);
    assert_eq!(s3.gets(), asked + 1);
    assert_eq!(guard.state(), BreakerState::Open);
    assert_eq!(guard.read("k").await.result(), BucketRead::Skipped);

    // A probe dropped before the bucket answered: the next lookup probes instead.
    wait_for(&guard, BreakerState::HalfOpen).await;
    s3.faults.get_delay_ms.store(1000, Ordering::SeqCst);
    let gave_up = tokio::time::timeout(Duration::from_millis(50), guard.read("k")).await;
    assert!(gave_up.is_err());
    assert_eq!(guard.state(), BreakerState::HalfOpen);
    s3.faults.get_delay_ms.store(0, Ordering::SeqCst);
    s3.faults.fail_gets.store(0, Ordering::SeqCst);
    assert_eq!(guard.read("k").await.result(), BucketRead::Missing);
    assert_eq!(guard.state(), BreakerState::Closed);
}

// 404 and 403 AccessDenied (a bucket without s3:ListBucket) are misses, answers that keep the
// breaker closed; refused credentials are a failure, with no retry to hope for.
#[tokio::test]
async fn missing_keys_are_misses_and_refusals_are_failures() {
    let s3 = S3::start().await;
    let (guard, _metrics) = guarded(s3.store(), 1, Duration::from_secs(30));
    assert_eq!(guard.read("nothing").await.result(), BucketRead::Missing);
    s3.faults.deny_gets.store(true, Ordering::SeqCst);
    assert_eq!(guard.read("nothing").await.result(), BucketRead::Missing);
    assert_eq!(guard.state(), BreakerState::Closed);
    s3.faults.deny_gets.store(false, Ordering::SeqCst);

    let wrong = common::s3_store(&s3.endpoint, BUCKET, "test-access-key", "not-the-secret");
    let (guard, _metrics) = guarded(Arc::new(wrong), 1, Duration::from_secs(30));
    match expect_failure(guard.read("nothing").await) {
        Failure::Store(e) => assert_eq!(e.kind, ErrorKind::Permanent, "{e}"),
        other => panic!("{other}"),
    }
    assert_eq!(guard.state(), BreakerState::Open);
    // (A missing bucket, 404 NoSuchBucket on S3, is an error too: `cache::s3`'s unit tests
    // show it; s3s-fs answers NoSuchKey there.)
}
