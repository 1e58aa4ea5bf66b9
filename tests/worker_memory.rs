//! Peak memory of the worker while size-arithmetic bombs run against it. The worker runs in
//! this test process (its real `run_with` on 127.0.0.1:0) and this file holds this one test,
//! so the process's peak resident set (VmHWM in /proc/self/status, reset through
//! /proc/self/clear_refs just before the requests) is the worker's plus this test's small
//! client and source server.
// Tests of the bundled worker, or of the binary running it.
#![cfg(feature = "worker")]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::get;
use common::worker::{Sources, Worker, loopback_ok};

/// The ceiling for the worker's peak RSS while the bombs run.
const PEAK_LIMIT_KIB: u64 = 300 * 1024;

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Resets VmHWM to the current resident set (Linux: `5` → clear_refs).
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").expect("VmHWM can be reset");
}

/// Each bomb answers 4xx within a second, and the process never holds more than 300 MiB:
/// paddings summing past `u32::MAX` (0 once wrapped, then a canvas of up to 1 GiB) and
/// enlarging fills whose scaled image before the crop would be gigapixels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geometry_bombs_keep_peak_memory_bounded() {
    let mut png = Vec::new();
    image::RgbImage::from_pixel(64, 64, image::Rgb([1, 2, 3]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let sources = Sources::start(vec![("a.png", Bytes::from(png))], vec![]).await;
    let worker = Worker::start(loopback_ok(&[])).await;
    let source = format!("{}@png", sources.url("a.png"));
    // Warm up: the first request builds what every later one reuses.
    assert!(
        get(&worker.plain_url("rs:fit:10:10", &source))
            .await
            .0
            .is_success()
    );

    reset_peak_rss();
    let before = peak_rss_kib();
    for options in [
        "rs:fit:1:1/pd:4294967295:4294967295:0:0",
        "pd:0:2147483648:0:2147483648",
        "rs:fill:50000:1:1",
        "rs:fit:1:1/mw:50000",
    ] {
        let started = Instant::now();
        let (status, _, _) = get(&worker.plain_url(options, &source)).await;
        assert!(status.is_client_error(), "{options}: {status}");
        assert!(started.elapsed() < Duration::from_secs(1), "{options}");
    }
    let peak = peak_rss_kib();
    assert!(
        peak < PEAK_LIMIT_KIB,
        "peak RSS {peak} KiB (before the bombs: {before} KiB)"
    );
    eprintln!("peak RSS while the bombs ran: {peak} KiB (before: {before} KiB)");
    worker.shutdown().await;
}
