//! One benchmark job of the worker's engine, run in its own process so its peak RSS is its
//! own. `scripts/bench-engine` runs every job here and in libvips and prints the table.
//!
//! Usage: `engine_bench <job> <corpus-dir> [iterations]`; prints one JSON line.

use std::time::Instant;

use imgproxy_cache::worker::engine::{self, EngineConfig, Job};
use imgproxy_cache::worker::options::{Defaults, ImageFormat, ProcessingOptions, ResizingType};

/// The jobs, shared by name with `scripts/bench_engine.py`: (name, file, resizing type,
/// width, height, output format).
const JOBS: &[(&str, &str, ResizingType, u32, u32, ImageFormat)] = &[
    (
        "coffee 300x300 fit jpeg",
        "big_coffee.jpg",
        ResizingType::Fit,
        300,
        300,
        ImageFormat::Jpeg,
    ),
    (
        "coffee 300x300 fit webp",
        "big_coffee.jpg",
        ResizingType::Fit,
        300,
        300,
        ImageFormat::Webp,
    ),
    (
        "coffee 1200w jpeg",
        "big_coffee.jpg",
        ResizingType::Fit,
        1200,
        0,
        ImageFormat::Jpeg,
    ),
    (
        "coffee 300x300 fill jpeg",
        "big_coffee.jpg",
        ResizingType::Fill,
        300,
        300,
        ImageFormat::Jpeg,
    ),
    (
        "rocket 300x300 fit jpeg",
        "big_rocket.jpg",
        ResizingType::Fit,
        300,
        300,
        ImageFormat::Jpeg,
    ),
    (
        "rocket 300x300 fit webp",
        "big_rocket.jpg",
        ResizingType::Fit,
        300,
        300,
        ImageFormat::Webp,
    ),
    (
        "rocket 1200w jpeg",
        "big_rocket.jpg",
        ResizingType::Fit,
        1200,
        0,
        ImageFormat::Jpeg,
    ),
    (
        "rocket 300x300 fill jpeg",
        "big_rocket.jpg",
        ResizingType::Fill,
        300,
        300,
        ImageFormat::Jpeg,
    ),
    (
        "hubble png 300x300 fit",
        "mid_hubble.png",
        ResizingType::Fit,
        300,
        300,
        ImageFormat::Png,
    ),
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: engine_bench <job|list> <corpus-dir> [iterations]");
        std::process::exit(2);
    }
    if args[1] == "list" {
        for (name, ..) in JOBS {
            println!("{name}");
        }
        return;
    }
    let &(name, file, rt, width, height, format) = JOBS
        .iter()
        .find(|j| j.0 == args[1])
        .unwrap_or_else(|| panic!("unknown job {:?}", args[1]));
    let iterations: usize = args
        .get(3)
        .map_or(10, |n| n.parse().expect("iterations is a number"));
    let source =
        std::fs::read(std::path::Path::new(&args[2]).join(file)).expect("corpus file readable");

    let mut po = ProcessingOptions::new(&Defaults::default());
    po.resizing_type = rt;
    po.width = width;
    po.height = height;
    let config = EngineConfig::default();
    let job = Job {
        source: &source,
        options: &po,
        format: Some(format),
        accept: None,
        deadline: imgproxy_cache::worker::engine::Deadline::NONE,
    };

    let mut times = Vec::with_capacity(iterations);
    let mut out_len = 0;
    // One warm-up run, not counted.
    for i in 0..=iterations {
        let start = Instant::now();
        let out = engine::process(&job, &config).expect("benchmark job succeeds");
        if i > 0 {
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        out_len = out.bytes.len();
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{{\"job\":\"{name}\",\"median_ms\":{median:.1},\"peak_rss_kb\":{},\"out_bytes\":{out_len}}}",
        peak_rss_kb()
    );
}

/// `VmHWM` from /proc: the process's peak resident set.
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
