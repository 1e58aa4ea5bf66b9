//! What a hostile client can do to the proxy, tried on the real binary in a process of its
//! own, so its peak memory is its own.

mod common;

use std::time::{Duration, Instant};

use common::*;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Each test here loads both cores and measures time: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Polls the proxy's metrics until `series` reaches `want`, for at most `within`.
async fn wait_for_metric(proxy: &ProxyProcess, series: &str, want: f64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = metric(&proxy.metrics().await, series);
        if got >= want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {got}, not {want}, after {within:?}\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// 2 × MAX_CONNECTIONS sockets that never send a byte and 50 clients that ask for 8 MiB and
/// never read it: a normal client is still served at once, every silent socket is closed
/// within the header deadline, every stuck client is cut off at the write deadline, and the
/// process stays within its byte budget. A stuck client slows no render: the results that fit
/// the budget are read from the upstream whole and stored whole; the rest stream uncopied, and
/// nothing partial is ever stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_stuck_clients_lock_nobody_out() {
    let _alone = ONE_AT_A_TIME.lock().await;
    const PLACES: usize = 100;
    const HEADER: Duration = Duration::from_secs(2);
    const WRITE: Duration = Duration::from_secs(2);
    let upstream = Upstream::start().await;
    let proxy = ProxyProcess::start(
        &upstream.url(),
        &[
            ("MAX_CONNECTIONS", &PLACES.to_string()),
            ("CLIENT_HEADER_TIMEOUT_SECS", "2"),
            ("CLIENT_WRITE_TIMEOUT_SECS", "2"),
            // Room for 8 cut-off copies of 8 MiB and the normal clients' small ones.
            ("UPLOAD_QUEUE_MAX_BYTES", "68157440"),
        ],
    );

    let opened = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..2 * PLACES {
        silent.push(TcpStream::connect(proxy.addr).await.unwrap());
    }
    let mut stuck = Vec::new();
    for i in 0..50 {
        // A small receive window, so the proxy's writes stall after a few KiB.
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(proxy.addr).await.unwrap();
        let head = format!("GET /huge/{i} HTTP/1.1\r\nhost: proxy\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        stuck.push(stream);
    }

    // Served at once: the longest-idle silent sockets make room.
    let asked = Instant::now();
    let (status, _, body) = get(&proxy.url("/ok/now")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, body_for("/ok/now"));
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );

    // Every silent socket is closed by the header deadline. The deadline runs from the
    // accept, and a loaded two-core machine may accept the last of 250 sockets a second or
    // two after they connected, so the slack is three seconds: without the deadline a silent
    // socket stays open for good.
    for mut socket in silent {
        let left =
            (opened + HEADER + Duration::from_secs(3)).saturating_duration_since(Instant::now());
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(left, socket.read(&mut byte)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "a silent socket was still open {:?} after it connected: {read:?}",
            opened.elapsed()
        );
    }
    eprintln!(
        "the last silent socket was closed {:?} after the first connected",
        opened.elapsed()
    );

    // Every stuck client is cut off, and what it received is less than the body.
    wait_for_metric(
        &proxy,
        r#"imgproxy_cache_client_connections_closed_total{reason="write_timeout"}"#,
        50.0,
        WRITE + Duration::from_secs(10),
    )
    .await;
    for mut stream in stuck {
        let mut received = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received));
        let ended = read.await.expect("the proxy closed the connection");
        assert!(ended.is_ok() || received.len() < common::HUGE, "{ended:?}");
        assert!(received.len() < common::HUGE);
    }

    // And a normal client, after all of it.
    let (status, _, _) = get(&proxy.url("/ok/after")).await;
    assert_eq!(status, StatusCode::OK);

    // The renders that fit the budget were copied whole (the stuck client behind each slowed
    // nothing); the rest were never copied.
    let metrics = proxy.metrics().await;
    let uncopied = metric(
        &metrics,
        r#"imgproxy_cache_uploads_total{outcome="dropped_full"}"#,
    );
    let peak = proxy.peak_rss_mib();
    eprintln!("peak RSS with silent and stuck clients: {peak:.0} MiB");
    assert!(peak <= 65.0 + 64.0, "peak RSS {peak:.0} MiB");
    let mut proxy = proxy;
    proxy.stop();
    assert!(proxy.stored(&key("/ok/now")), "the store works");
    let mut stored = 0.0;
    for i in 0..50 {
        let len = proxy.stored_len(&key(&format!("/huge/{i}")));
        assert!(
            len.is_none_or(|len| len == common::HUGE as u64),
            "a partial copy was stored: {len:?}"
        );
        stored += f64::from(u8::from(len.is_some()));
    }
    assert!(stored >= 1.0, "no render that fit the budget was stored");
    assert_eq!(stored + uncopied, 50.0, "{}", proxy.log());
}

/// 200 concurrent misses of 8 MiB each, held mid-body, with a 64 MiB budget: only the copies
/// that fit are made, the rest stream uncopied, and the peak stays within budget + 64 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_in_flight_stay_within_the_byte_budget() {
    let _alone = ONE_AT_A_TIME.lock().await;
    const CLIENTS: usize = 200;
    let upstream = Upstream::start().await;
    let proxy = ProxyProcess::start(&upstream.url(), &[("UPLOAD_QUEUE_MAX_BYTES", "67108864")]);

    let (halfway_tx, mut halfway) = tokio::sync::mpsc::channel(CLIENTS);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let url = proxy.url(&format!("/hugegated/{i}"));
            let halfway = halfway_tx.clone();
            tokio::spawn(async move {
                let response = request(Method::GET, &url, &[]).await;
                assert_eq!(response.status(), StatusCode::OK);
                let mut body = response.into_body();
                let mut received = 0;
                let mut told = false;
                while let Some(frame) = body.frame().await {
                    received += frame.unwrap().into_data().map_or(0, |d| d.len());
                    if !told && received >= common::HUGE / 2 {
                        told = true;
                        halfway.send(()).await.unwrap();
                    }
                }
                received
            })
        })
        .collect();
    for _ in 0..CLIENTS {
        halfway.recv().await.unwrap();
    }
    // Every body is half through the proxy and held there.
    let held = proxy.peak_rss_mib();
    upstream.release();
    for client in clients {
        assert_eq!(client.await.unwrap(), common::HUGE);
    }
    let metrics = proxy.metrics().await;
    let peak = proxy.peak_rss_mib();
    let dropped = metric(
        &metrics,
        r#"imgproxy_cache_uploads_total{outcome="dropped_full"}"#,
    );
    let mut proxy = proxy;
    proxy.stop();
    eprintln!("peak RSS: {held:.0} MiB while held, {peak:.0} MiB in all; {dropped} uncopied");
    assert!(
        held <= 64.0 + 64.0 && peak <= 64.0 + 64.0,
        "peak RSS {held:.0} MiB while held, {peak:.0} MiB in all"
    );
    // 64 MiB holds 8 copies of 8 MiB; everything else streamed uncopied.
    assert!(
        dropped >= (CLIENTS - 8) as f64,
        "only {dropped} results went uncopied"
    );
}

/// 10 000 distinct 100 KB results through a 64 MiB memory tier: it fills, evicts as it goes,
/// and the process stays within the tier, the copy budget and 64 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_tier_stays_within_its_bytes() {
    let _alone = ONE_AT_A_TIME.lock().await;
    const RESULTS: usize = 10_000;
    const CLIENTS: usize = 16;
    let upstream = Upstream::start().await;
    let proxy = ProxyProcess::start(
        &upstream.url(),
        &[
            ("MEMORY_CACHE_MAX_BYTES", "67108864"),
            ("UPLOAD_QUEUE_MAX_BYTES", "16777216"),
            ("CACHE_DIR_MAX_BYTES", "67108864"),
        ],
    );
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (next, base) = (next.clone(), proxy.url(""));
            tokio::spawn(async move {
                let client = http_client();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= RESULTS {
                        return;
                    }
                    let uri = format!("{base}/kb100/{i}").parse().unwrap();
                    let response = client.get(uri).await.unwrap();
                    assert_eq!(response.status(), StatusCode::OK);
                    let body = response.into_body().collect().await.unwrap().to_bytes();
                    assert_eq!(body.len(), 100_000);
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let metrics = proxy.metrics().await;
    let held = metric(&metrics, "imgproxy_cache_memory_bytes");
    let evicted = metric(&metrics, "imgproxy_cache_memory_evictions_total");
    let peak = proxy.peak_rss_mib();
    let mut proxy = proxy;
    proxy.stop();
    eprintln!("memory tier {held} bytes, {evicted} evicted; peak RSS {peak:.0} MiB");
    assert!(held <= 67_108_864.0, "{held}");
    // Past 64 MiB of results the tier made room (a result that found the copy budget taken by
    // uploads waiting for the disk streamed uncopied, so not all 10 000 went through it).
    assert!(held >= 60_000_000.0 && evicted >= 100.0, "{metrics}");
    assert!(peak <= 64.0 + 16.0 + 64.0, "peak RSS {peak:.0} MiB");
}
