//! The worker's resource limits end to end: the real worker on 127.0.0.1:0 (its `run_with`)
//! downloading crafted sources from a real loopback server — size arithmetic bombs, an AVIF
//! with a decoy size, CPU bombs that no timeout can interrupt, and downloads that together
//! would hold more bytes than the budget.
// Tests of the bundled worker, or of the binary running it.
#![cfg(feature = "worker")]

mod common;

use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::get;
use common::worker::{Sources, Worker, loopback_ok};
use http::StatusCode;

// ===== fixtures =====

fn png(width: u32, height: u32) -> Bytes {
    let mut out = Vec::new();
    image::RgbImage::from_pixel(width, height, image::Rgb([200, 100, 50]))
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out.into()
}

/// A grey progressive JPEG of `side` × `side` whose last scan is repeated until it has
/// `scans` scans. libjpeg-turbo only warns about the repeated scans and decodes each one, a
/// pass over every block: a few hundred kilobytes that keep a core busy for tens of seconds.
fn progressive_bomb(side: usize, scans: usize) -> Bytes {
    let pixels = vec![128u8; side * side];
    let mut compressor = turbojpeg::Compressor::new().unwrap();
    compressor.set_subsamp(turbojpeg::Subsamp::Gray).unwrap();
    compressor.set_progressive(true).unwrap();
    let jpeg = compressor
        .compress_to_vec(turbojpeg::Image {
            pixels: pixels.as_slice(),
            width: side,
            pitch: side,
            height: side,
            format: turbojpeg::PixelFormat::GRAY,
        })
        .unwrap();
    let found = scan_ranges(&jpeg);
    let last = found.last().unwrap().clone();
    let mut out = jpeg[..last.end].to_vec();
    for _ in found.len()..scans {
        out.extend_from_slice(&jpeg[last.clone()]);
    }
    out.extend_from_slice(&[0xFF, 0xD9]);
    out.into()
}

/// Each scan of a JPEG: its SOS segment and the entropy-coded data after it.
fn scan_ranges(jpeg: &[u8]) -> Vec<Range<usize>> {
    let mut scans = Vec::new();
    let mut at = 2;
    while jpeg[at + 1] != 0xD9 {
        let len = usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
        if jpeg[at + 1] != 0xDA {
            at += 2 + len;
            continue;
        }
        let mut end = at + 2 + len;
        while !(jpeg[end] == 0xFF && jpeg[end + 1] != 0 && !(0xD0..=0xD7).contains(&jpeg[end + 1]))
        {
            end += 1;
        }
        scans.push(at..end);
        at = end;
    }
    scans
}

/// `feMorphology` with a 60 px radius over a 2000 × 2000 canvas: 4 MP × 121² reads, some
/// minutes of one core inside a single resvg call.
const MORPHOLOGY_BOMB: &str = r#"<svg xmlns="http://www.w3.org/2000/svg" width="2000" height="2000"><filter id="f" x="0" y="0" width="1" height="1"><feMorphology operator="dilate" radius="60"/></filter><rect width="2000" height="2000" fill="red" filter="url(#f)"/></svg>"#;

/// A real `width` × `height` AVIF with a decoy: a top-level `free` box right after `ftyp`
/// holding an `ispe` that claims 10 × 10. The item locations are moved past the inserted box,
/// so libavif still reads the real image; a probe taking the first `ispe` bytes in the file
/// sees 10 × 10.
fn decoy_avif(width: u32, height: u32) -> Bytes {
    let rgb = vec![90u8; (width * height * 3) as usize];
    let avif = libavif::encode_rgb8(width, height, &rgb).unwrap().to_vec();
    let mut decoy = Vec::new();
    decoy.extend_from_slice(&24u32.to_be_bytes());
    decoy.extend_from_slice(b"free");
    decoy.extend_from_slice(b"ispe\0\0\0\0");
    decoy.extend_from_slice(&10u32.to_be_bytes());
    decoy.extend_from_slice(&10u32.to_be_bytes());
    let ftyp_end = u32::from_be_bytes(avif[0..4].try_into().unwrap()) as usize;
    let mut out = avif[..ftyp_end].to_vec();
    out.extend_from_slice(&decoy);
    out.extend_from_slice(&avif[ftyp_end..]);
    let (_, meta) = boxes(&out, 0..out.len())
        .into_iter()
        .find(|(kind, _)| kind == b"meta")
        .expect("a meta box");
    // `meta` is a full box: 4 bytes of version and flags before its children.
    let (_, iloc) = boxes(&out, meta.start + 4..meta.end)
        .into_iter()
        .find(|(kind, _)| kind == b"iloc")
        .expect("an iloc box");
    shift_item_locations(&mut out[iloc], decoy.len() as u64);
    out.into()
}

/// The boxes directly inside `range`: type and content.
fn boxes(data: &[u8], range: Range<usize>) -> Vec<([u8; 4], Range<usize>)> {
    let mut out = Vec::new();
    let mut at = range.start;
    while at + 8 <= range.end {
        let size = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        out.push((data[at + 4..at + 8].try_into().unwrap(), at + 8..at + size));
        at += size;
    }
    out
}

/// Adds `delta` to every file offset in an `iloc` box's content (ISO/IEC 14496-12 §8.11.3).
fn shift_item_locations(iloc: &mut [u8], delta: u64) {
    let read = |b: &[u8], at: usize, n: usize| {
        b[at..at + n]
            .iter()
            .fold(0u64, |v, byte| v << 8 | u64::from(*byte))
    };
    let write = |b: &mut [u8], at: usize, n: usize, v: u64| {
        for i in 0..n {
            b[at + i] = (v >> (8 * (n - 1 - i))) as u8;
        }
    };
    let version = iloc[0];
    let offset_size = usize::from(iloc[4] >> 4);
    let length_size = usize::from(iloc[4] & 15);
    let base_size = usize::from(iloc[5] >> 4);
    let index_size = if version >= 1 {
        usize::from(iloc[5] & 15)
    } else {
        0
    };
    let id_size = if version < 2 { 2 } else { 4 };
    let mut at = 6;
    let items = read(iloc, at, id_size);
    at += id_size;
    for _ in 0..items {
        at += id_size;
        let method = if version >= 1 {
            at += 2;
            read(iloc, at - 2, 2) & 15
        } else {
            0
        };
        at += 2; // data reference index
        let shift_base = method == 0 && base_size > 0;
        if shift_base {
            let base = read(iloc, at, base_size);
            write(iloc, at, base_size, base + delta);
        }
        at += base_size;
        let extents = read(iloc, at, 2);
        at += 2;
        for _ in 0..extents {
            at += index_size;
            if method == 0 && !shift_base {
                let offset = read(iloc, at, offset_size);
                write(iloc, at, offset_size, offset + delta);
            }
            at += offset_size + length_size;
        }
    }
}

// ===== item 7: size arithmetic =====

/// Paddings whose sides summed past `u32::MAX` (wrapping to 0 in release builds) and an
/// enlarging fill or min-width whose scaled image — before the result crop cuts it to a
/// sliver — would be gigapixels: all refused with a 4xx before a pixel exists, quickly.
#[tokio::test]
async fn geometry_bombs_are_refused_before_allocating() {
    let sources = Sources::start(vec![("a.png", png(2, 2))], vec![]).await;
    let worker = Worker::start(loopback_ok(&[])).await;
    let source = sources.url("a.png");
    for options in [
        "rs:fit:1:1/pd:4294967295:4294967295:0:0",
        "pd:0:2147483648:0:2147483648",
        "pd:65535:65535:65535:65535",
        "rs:fill:50000:1:1",
        "rs:fit:1:1/mw:50000",
        "rs:fill:1:60000:1/ex:1",
        "ex:1:ce:1e300:0/rs:fit:10:10",
    ] {
        let started = Instant::now();
        let (status, _, body) = get(&worker.plain_url(options, &format!("{source}@png"))).await;
        assert!(
            status.is_client_error(),
            "{options}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        assert!(started.elapsed() < Duration::from_secs(2), "{options}");
    }
    // Sizes within the limits still work.
    let (status, _, _) = get(&worker.plain_url("pd:10/rs:fill:300:200:1", &source)).await;
    assert_eq!(status, StatusCode::OK);
    worker.shutdown().await;
}

// ===== item 8: AVIF =====

/// An AVIF whose first `ispe` bytes claim 10 × 10 while the image is 64 × 64, past a
/// 0.001 MP limit: the size that counts is the primary item's, so it is refused (422)
/// rather than decoded. The same file is processed when the limit allows its real size.
#[tokio::test]
async fn avif_decoy_size_does_not_pass_the_limit() {
    let sources = Sources::start(vec![("decoy.avif", decoy_avif(64, 64))], vec![]).await;
    let source = format!("{}@png", sources.url("decoy.avif"));
    let worker = Worker::start(loopback_ok(&[("IMGPROXY_MAX_SRC_RESOLUTION", "0.001")])).await;
    let (status, _, body) = get(&worker.plain_url("rs:fit:32:32", &source)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body:?}");
    worker.shutdown().await;

    let worker = Worker::start(loopback_ok(&[])).await;
    let (status, _, body) = get(&worker.plain_url("rs:fit:32:32", &source)).await;
    assert_eq!(status, StatusCode::OK);
    let image = image::load_from_memory(&body).unwrap();
    assert_eq!((image.width(), image.height()), (32, 32));
    worker.shutdown().await;
}

// ===== item 9: CPU bombs =====

/// Four CPU bombs at once — two progressive JPEGs with 5000 scans, two SVGs with a large
/// `feMorphology` — on a worker with two CPU slots: each is refused by its limit (scans,
/// filter work) instead of holding a slot for minutes, so a normal request sent right after
/// them is answered within IMGPROXY_TIMEOUT + 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_bombs_leave_room_for_normal_requests() {
    const TIMEOUT: u64 = 5;
    let sources = Sources::start(
        vec![
            ("scans.jpg", progressive_bomb(2000, 5000)),
            ("filter.svg", Bytes::from_static(MORPHOLOGY_BOMB.as_bytes())),
            ("ok.png", png(300, 200)),
        ],
        vec![],
    )
    .await;
    let worker = Worker::start(loopback_ok(&[
        ("IMGPROXY_CONCURRENCY", "2"),
        ("IMGPROXY_TIMEOUT", &TIMEOUT.to_string()),
    ]))
    .await;
    let bombs: Vec<_> = ["scans.jpg", "filter.svg", "scans.jpg", "filter.svg"]
        .into_iter()
        .map(|name| {
            // At its own size: a thumbnail would render the filter small and cheap.
            let url = worker.plain_url("q:80", &format!("{}@png", sources.url(name)));
            tokio::spawn(async move { (name, get(&url).await.0) })
        })
        .collect();
    // Every bomb has been downloaded (and so is in line for a slot) before the normal one.
    while sources.requests() < 4 {
        tokio::task::yield_now().await;
    }
    let started = Instant::now();
    let normal = tokio::time::timeout(
        Duration::from_secs(TIMEOUT + 1),
        get(&worker.plain_url("rs:fit:30:20", &sources.url("ok.png"))),
    )
    .await
    .expect("the normal request is answered within IMGPROXY_TIMEOUT + 1 s");
    assert_eq!(normal.0, StatusCode::OK, "after {:?}", started.elapsed());
    for bomb in bombs {
        let (name, status) = bomb.await.unwrap();
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name}");
    }
    worker.shutdown().await;
}

// ===== item 10: source bytes in flight =====

/// With IMGPROXY_MAX_SOURCE_BYTES_IN_FLIGHT at 48 MiB, a download of 32 MiB that is still
/// arriving holds its bytes, so a second 32 MiB download waits for room instead of being
/// held beside it; it goes ahead once the first is done. A source bigger than the whole
/// budget is refused at once (422).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_share_one_byte_budget() {
    const MIB: usize = 1024 * 1024;
    let sources = Sources::start(
        vec![("fast.bin", Bytes::from(vec![0u8; 32 * MIB]))],
        vec![("slow.bin", 32 * MIB), ("big.bin", 64 * MIB)],
    )
    .await;
    let config = loopback_ok(&[
        (
            "IMGPROXY_MAX_SOURCE_BYTES_IN_FLIGHT",
            &(48 * MIB).to_string(),
        ),
        ("IMGPROXY_DOWNLOAD_TIMEOUT", "60"),
        ("IMGPROXY_TIMEOUT", "60"),
    ]);
    let worker = Worker::start(config).await;

    let slow_url = worker.plain_url("rs:fit:10:10", &sources.url("held/slow.bin"));
    let slow = tokio::spawn(async move { get(&slow_url).await.0 });
    // All but its last byte handed over: more than any socket buffers hold, so the worker
    // has started reading it, and so has reserved its bytes.
    sources.almost_sent().await;

    let fast_url = worker.plain_url("rs:fit:10:10", &sources.url("fast.bin"));
    let mut fast = tokio::spawn(async move { get(&fast_url).await.0 });
    assert!(
        tokio::time::timeout(Duration::from_secs(1), &mut fast)
            .await
            .is_err(),
        "the second download finished while the first held the budget"
    );

    sources.open_gate();
    // Zero bytes are no image: both are refused by the engine, after being downloaded.
    assert_eq!(slow.await.unwrap(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fast.await.unwrap(), StatusCode::UNPROCESSABLE_ENTITY);

    let started = Instant::now();
    let (status, _, body) =
        get(&worker.plain_url("rs:fit:10:10", &sources.url("held/big.bin"))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    worker.shutdown().await;
}
