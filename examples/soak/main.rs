//! The soak run: the proxy binary for minutes under mixed load — misses, hits, stampedes on new
//! keys, upstream errors and cut bodies, slow clients and clients that leave mid-body — while the
//! bucket goes down and comes back every `--flap-secs`. Its resident memory, open file
//! descriptors, spool and tiers are sampled every second. At the end the bucket is listed: every object must be
//! byte for byte what its clients received, and every result a client received whole must be
//! there. Run it with `scripts/soak [SECONDS]`; the summary lands in `bench/soak.md` and the
//! chart in `bench/soak.png`.
//!
//! The bucket is the benchmark's S3 stand-in (s3s over memory, SigV4 checked); "down" is every
//! call answered 503 `SlowDown`. The proxy has a disk tier and its upload spool in a temporary
//! `CACHE_DIR`.

// The benchmark's processes and servers; the soak uses part of them.
#[allow(dead_code, reason = "the soak uses part of the benchmark's code")]
#[path = "../bench/load.rs"]
mod load;
#[allow(dead_code, reason = "the soak uses part of the benchmark's code")]
#[path = "../bench/memstore.rs"]
mod memstore;
#[allow(dead_code, reason = "the soak uses part of the benchmark's code")]
#[path = "../bench/procs.rs"]
mod procs;
#[allow(dead_code, reason = "the soak uses part of the benchmark's code")]
#[path = "../bench/servers.rs"]
mod servers;

mod clients;
mod sampler;
mod upstream;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser;
use clients::Tally;
use procs::Proxy;
use sampler::Sample;

#[derive(Parser)]
struct Args {
    /// Seconds of load.
    #[arg(default_value_t = 300)]
    secs: u64,
    /// The proxy binary to run.
    #[arg(long, default_value = "target/release/imgproxy-cache")]
    proxy_bin: PathBuf,
    /// Seconds the bucket stays up, then down, then up...: 30, or a fifth of a shorter run.
    #[arg(long)]
    flap_secs: Option<u64>,
    /// Extra `NAME=value` settings for the proxy (to soak a setting).
    #[arg(long = "proxy-env", value_parser = parse_env)]
    proxy_env: Vec<(String, String)>,
    /// Where soak.md, soak.csv and soak.png go.
    #[arg(long, default_value = "bench")]
    out: PathBuf,
}

/// The goal for memory and descriptors: at the end at most this much above minute 1.
const FLAT_WITHIN: f64 = 1.10;
/// Shorter runs report memory and descriptors without judging them: the memory tier is still
/// filling up.
const JUDGED_FROM_SECS: u64 = 120;
/// How long the end waits for every result to reach the bucket once it is back for good.
const DRAIN_DEADLINE: Duration = Duration::from_secs(180);

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let run = Duration::from_secs(args.secs);
    let flap = Duration::from_secs(args.flap_secs.unwrap_or((args.secs / 5).clamp(1, 30)));
    std::fs::create_dir_all(&args.out).expect("create the output directory");

    let s3 = servers::s3();
    let upstream = upstream::start().await;
    let cache_dir = tempfile::tempdir().expect("a temporary CACHE_DIR");
    let mut env = vec![
        ("UPSTREAM_URL", format!("http://{upstream}")),
        ("S3_BUCKET", servers::BUCKET.to_owned()),
        ("S3_ENDPOINT", s3.switched.endpoint.clone()),
        ("S3_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", servers::ACCESS_KEY.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", servers::SECRET_KEY.to_owned()),
        ("CACHE_DIR", cache_dir.path().display().to_string()),
        // Small enough that the run evicts, large enough for an outage's spool.
        ("CACHE_DIR_MAX_BYTES", (512u64 << 20).to_string()),
        // A bucket that comes back is probed again soon, as an operator would tune it
        // for outages of seconds.
        ("STORE_READ_BREAKER_SECS", "5".to_owned()),
    ];
    env.extend(args.proxy_env.iter().map(|(k, v)| (k.as_str(), v.clone())));
    let proxy = Proxy::start(&args.proxy_bin, &env).await;
    println!(
        "soak: {}s, bucket up/down every {}s, proxy pid {}",
        args.secs,
        flap.as_secs(),
        proxy.pid()
    );

    let started = Instant::now();
    let tally = Arc::new(Tally::default());
    let sampling = sampler::start(
        proxy.pid(),
        proxy.url("/_imgproxy-cache/metrics"),
        s3.down.clone(),
        started,
    );
    let flapping = tokio::spawn(flap_bucket(s3.down.clone(), flap));
    clients::run(proxy.port, tally.clone(), started + run).await;
    flapping.abort();
    s3.down.store(false, Ordering::SeqCst);
    let samples = sampling.stop().await;
    let load_secs = started.elapsed().as_secs_f64();

    let drained = drain(&s3, &tally).await;
    let check = check_bucket(&s3, &tally);
    let spool_files = metric(&proxy, "imgproxy_cache_upload_spool_files").await;
    let metrics = proxy_metrics(&proxy).await;
    proxy.stop();

    let report = report(
        &args,
        flap,
        load_secs,
        &tally,
        &samples,
        &check,
        drained,
        spool_files,
        &metrics,
    );
    print!("{}", report.text);
    std::fs::write(args.out.join("soak.md"), &report.text).expect("write soak.md");
    sampler::write_csv(&args.out.join("soak.csv"), &samples);
    sampler::chart(&args.out, &samples);
    if !report.passed {
        eprintln!("soak: FAILED");
        std::process::exit(1);
    }
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    let (name, value) = s.split_once('=').ok_or("expected NAME=value")?;
    Ok((name.to_owned(), value.to_owned()))
}

/// Up for `every`, down for `every`, and so on, until aborted.
async fn flap_bucket(down: Arc<std::sync::atomic::AtomicBool>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let was = down.fetch_xor(true, Ordering::SeqCst);
        println!("soak: bucket {}", if was { "back up" } else { "down" });
    }
}

/// Waits until every result a client received whole is in the bucket (or the deadline passes);
/// returns how long that took.
async fn drain(s3: &servers::S3, tally: &Tally) -> Option<Duration> {
    let start = Instant::now();
    let wanted = tally.must_store();
    loop {
        let stored: std::collections::HashSet<String> =
            s3.objects().into_iter().map(|(key, _)| key).collect();
        if wanted.keys().all(|key| stored.contains(key)) {
            return Some(start.elapsed());
        }
        if start.elapsed() > DRAIN_DEADLINE {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What the bucket listing showed.
struct Check {
    objects: usize,
    /// Results clients received whole that are not in the bucket.
    lost: Vec<String>,
    /// Objects whose bytes are not what their path's clients received.
    wrong: Vec<String>,
    /// Objects under a key no client asked for, or for an answer that must not be stored.
    unexpected: Vec<String>,
}

fn check_bucket(s3: &servers::S3, tally: &Tally) -> Check {
    let objects = s3.objects();
    let asked = tally.asked();
    let stored: HashMap<&str, &bytes::Bytes> =
        objects.iter().map(|(k, b)| (k.as_str(), b)).collect();
    let mut check = Check {
        objects: objects.len(),
        lost: Vec::new(),
        wrong: Vec::new(),
        unexpected: Vec::new(),
    };
    for (key, body) in &objects {
        match asked.get(key) {
            Some(path) if upstream::storable(path) => {
                if **body != upstream::body_for(path) {
                    check.wrong.push(path.clone());
                }
            }
            Some(path) => check.unexpected.push(path.clone()),
            None => check.unexpected.push(key.clone()),
        }
    }
    for (key, path) in tally.must_store() {
        if !stored.contains_key(key.as_str()) {
            check.lost.push(path);
        }
    }
    check
}

/// One series' value, 0 when absent.
async fn metric(proxy: &Proxy, series: &str) -> f64 {
    proxy_metrics(proxy)
        .await
        .get(series)
        .copied()
        .unwrap_or(0.0)
}

/// The proxy's metrics: each series (name and labels) with its value.
async fn proxy_metrics(proxy: &Proxy) -> BTreeMap<String, f64> {
    let text = load::body(&proxy.url("/_imgproxy-cache/metrics"))
        .await
        .unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The metrics the summary shows: what the uploads, the spool and the disk tier went through.
const REPORTED: &[&str] = &[
    "imgproxy_cache_uploads_total",
    "imgproxy_cache_upload_retries_total",
    "imgproxy_cache_upload_spool_total",
    "imgproxy_cache_lookups_total",
    "imgproxy_cache_disk_evictions_total",
    "imgproxy_cache_disk_errors_total",
    "imgproxy_cache_disk_bypassed_total",
];

struct Report {
    text: String,
    passed: bool,
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &Args,
    flap: Duration,
    load_secs: f64,
    tally: &Tally,
    samples: &[Sample],
    check: &Check,
    drained: Option<Duration>,
    spool_files: f64,
    metrics: &BTreeMap<String, f64>,
) -> Report {
    let warm = sampler::warm_up(args.secs);
    let (rss_start, rss_end) = sampler::flatness(samples, warm, |s| s.rss_kib as f64 / 1024.0);
    let (fds_start, fds_end) = sampler::flatness(samples, warm, |s| s.fds as f64);
    let errors = tally.errors();
    let judged = args.secs >= JUDGED_FROM_SECS;
    let rss_ok = !judged || rss_end <= rss_start * FLAT_WITHIN;
    let fds_ok = !judged || fds_end <= fds_start * FLAT_WITHIN;
    let listing_ok = check.lost.is_empty() && check.wrong.is_empty() && check.unexpected.is_empty();
    let drain_ok = drained.is_some() && spool_files == 0.0;
    let passed = rss_ok && fds_ok && errors == 0 && listing_ok && drain_ok;
    let mark = |ok: bool| if ok { "pass" } else { "FAIL" };
    let flat_mark = |ok: bool| {
        if judged {
            mark(ok)
        } else {
            "not judged (short run)"
        }
    };

    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Soak: {}s of mixed load, the bucket down and up every {}s\n",
        args.secs,
        flap.as_secs()
    );
    let _ = writeln!(
        t,
        "Proxy: `{}`; {load_secs:.0}s of load; disk tier and spool in a temporary `CACHE_DIR` \
         (512 MiB). Memory and descriptors: median of the {}s after warm-up ({}s) against the median \
         of the last {}s.\n",
        args.proxy_bin.display(),
        sampler::WINDOW_SECS,
        warm,
        sampler::WINDOW_SECS
    );
    let _ = writeln!(t, "| check | goal | result | |\n|---|---|---:|---|");
    let _ = writeln!(
        t,
        "| resident memory (MiB), after warm-up → end | ≤ +10 % | {rss_start:.1} → {rss_end:.1} ({:+.1} %) | {} |",
        (rss_end / rss_start - 1.0) * 100.0,
        flat_mark(rss_ok)
    );
    let _ = writeln!(
        t,
        "| open file descriptors, after warm-up → end | ≤ +10 % | {fds_start:.0} → {fds_end:.0} | {} |",
        flat_mark(fds_ok)
    );
    let _ = writeln!(
        t,
        "| client errors | 0 | {errors} | {} |",
        mark(errors == 0)
    );
    let _ = writeln!(
        t,
        "| results received whole but not in the bucket | 0 | {} of {} | {} |",
        check.lost.len(),
        tally.must_store().len(),
        mark(check.lost.is_empty())
    );
    let _ = writeln!(
        t,
        "| objects not byte-identical to what clients got | 0 | {} of {} | {} |",
        check.wrong.len(),
        check.objects,
        mark(check.wrong.is_empty())
    );
    let _ = writeln!(
        t,
        "| objects that must not be there (errors, cut bodies, unknown keys) | 0 | {} | {} |",
        check.unexpected.len(),
        mark(check.unexpected.is_empty())
    );
    let _ = writeln!(
        t,
        "| everything stored once the bucket is back | ≤ {}s, spool empty | {} | {} |\n",
        DRAIN_DEADLINE.as_secs(),
        match drained {
            Some(d) => format!("{:.1}s, {spool_files} spool files left", d.as_secs_f64()),
            None => format!("not within the deadline, {spool_files} spool files left"),
        },
        mark(drain_ok)
    );
    let _ = writeln!(t, "| requests | outcome | count |\n|---|---|---:|");
    for ((kind, outcome), n) in tally.counts() {
        let _ = writeln!(t, "| {kind} | {outcome} | {n} |");
    }
    let _ = writeln!(
        t,
        "\n| proxy metric (non-zero series) | value |\n|---|---:|"
    );
    for (series, value) in metrics {
        let reported = REPORTED.iter().any(|name| series.starts_with(name));
        if reported && *value != 0.0 {
            let _ = writeln!(t, "| `{series}` | {value} |");
        }
    }
    for (what, list) in [
        ("lost", &check.lost),
        ("wrong", &check.wrong),
        ("unexpected", &check.unexpected),
    ] {
        if !list.is_empty() {
            let shown: Vec<_> = list.iter().take(10).collect();
            let _ = writeln!(t, "\n{what} (first {}): {shown:?}", shown.len());
        }
    }
    let shown = tally.first_errors();
    if !shown.is_empty() {
        let _ = writeln!(t, "\nfirst client errors: {shown:#?}");
    }
    Report { text: t, passed }
}
