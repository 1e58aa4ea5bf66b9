//! The proxy benchmark: imgproxy-cache against nginx `proxy_pass` and the bare upstream, on the
//! same machine, in one run, plus the upload path under S3 trouble. Run it with `scripts/bench`
//! (which installs nginx and wrk and builds in release mode); `--smoke` is the short version CI
//! runs so the benchmark keeps working.
//!
//! Every number is the median of `--reps` runs, with the min–max range beside it.

mod load;
mod memstore;
mod procs;
mod servers;

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Parser;
use load::Sample;
use procs::{Nginx, Proxy};

#[derive(Parser)]
struct Args {
    /// The proxy binary to measure.
    #[arg(long, default_value = "target/release/imgproxy-cache")]
    proxy_bin: PathBuf,
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// Runs per measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// A quick pass over every scenario with tiny sizes: keeps the benchmark from rotting.
    #[arg(long)]
    smoke: bool,
    /// Where results.md and proxy-bench.png go.
    #[arg(long, default_value = "bench")]
    out: PathBuf,
    /// Body sizes for the miss-path table (default: 50k and 500k).
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<String>,
    /// Connection counts for the miss-path table (default: 1, 16 and 64).
    #[arg(long, value_delimiter = ',')]
    conns: Vec<usize>,
    /// Only the miss-path table: skip S3 trouble, backlog and duplicates.
    #[arg(long)]
    miss_only: bool,
    /// Extra `NAME=value` settings for every proxy started (to measure a setting's effect).
    #[arg(long = "proxy-env", value_parser = parse_env)]
    proxy_env: Vec<(String, String)>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not NAME=value"))
}

/// One measurement repeated: median and range of each figure.
struct Stat {
    samples: Vec<Sample>,
}

impl Stat {
    fn median(&self, f: impl Fn(&Sample) -> f64) -> f64 {
        let mut v: Vec<f64> = self.samples.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    fn range(&self, f: impl Fn(&Sample) -> f64 + Copy) -> (f64, f64) {
        let v = self.samples.iter().map(f);
        (
            v.clone().fold(f64::INFINITY, f64::min),
            v.fold(0.0, f64::max),
        )
    }

    fn cell(&self, f: impl Fn(&Sample) -> f64 + Copy, digits: usize) -> String {
        let (lo, hi) = self.range(f);
        format!("{:.d$} ({lo:.d$}–{hi:.d$})", self.median(f), d = digits)
    }
}

/// Pause of each connection between requests in the S3-trouble runs, in ms (16 connections:
/// at most ~1 600 requests/s, well inside what the proxy stores on 2 cores).
const TROUBLE_PAUSE_MS: u64 = 10;

struct Check {
    what: String,
    pass: bool,
}

#[tokio::main]
async fn main() {
    let mut args = Args::parse();
    if args.smoke {
        args.secs = 1;
        args.reps = 1;
    }
    assert!(
        args.proxy_bin.exists(),
        "{} not found: build it first",
        args.proxy_bin.display()
    );
    let upstream = servers::upstream().await;
    let s3 = servers::s3().await;
    let nginx = Nginx::start(upstream).await;
    let extra: Vec<(&str, String)> = args
        .proxy_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    // The extra settings come last, so they override the defaults here.
    let s3_env = |endpoint: &str| {
        [
            vec![
                ("UPSTREAM_URL", format!("http://{upstream}")),
                ("S3_BUCKET", servers::BUCKET.to_owned()),
                ("S3_ENDPOINT", endpoint.to_owned()),
                ("S3_REGION", "us-east-1".to_owned()),
                ("AWS_ACCESS_KEY_ID", servers::ACCESS_KEY.to_owned()),
                ("AWS_SECRET_ACCESS_KEY", servers::SECRET_KEY.to_owned()),
            ],
            extra.clone(),
        ]
        .concat()
    };
    let dead_s3 = format!("http://127.0.0.1:{}", procs::free_port());

    let mut report = String::new();
    let mut checks = Vec::new();
    let mut chart = String::new();
    let _ = writeln!(report, "{}\n", header());

    // 1 + 2. Throughput and latency: direct, nginx, proxy with uploads to a healthy S3.
    let concurrencies: &[usize] = match (&args.conns[..], args.smoke) {
        ([], true) => &[1, 16],
        ([], false) => &[1, 16, 64],
        (chosen, _) => chosen,
    };
    let default_sizes: &[&str] = if args.smoke {
        &["50k"]
    } else {
        &["50k", "500k"]
    };
    let chosen_sizes: Vec<&str> = args.sizes.iter().map(String::as_str).collect();
    let sizes = if chosen_sizes.is_empty() {
        default_sizes
    } else {
        &chosen_sizes[..]
    };
    let _ = writeln!(
        report,
        "### Miss path: requests/s and latency (median of {} × {} s runs, min–max)\n\n\
         CPU is the server's own (nginx: master and workers; imgproxy-cache: the whole \
         process, uploads included), per request. Stored: results that reached S3 during \
         the run.\n\n\
         | body | conc. | target | req/s | p50 ms | p99 ms | CPU µs/req | stored |\n\
         |---|---|---|---|---|---|---|---|",
        args.reps, args.secs
    );
    let mut run = 0;
    for size in sizes {
        for &c in concurrencies {
            let mut stats: [Stat; 3] = std::array::from_fn(|_| Stat { samples: vec![] });
            for _ in 0..args.reps {
                // Interleaved, so a noisy moment hurts every target alike.
                for (t, stat) in stats.iter_mut().enumerate() {
                    run += 1;
                    let id = format!("r{run}");
                    let sample = match t {
                        0 => load::wrk(&format!("http://{upstream}"), size, &id, c, args.secs),
                        1 => {
                            let cpu = nginx.cpu_secs();
                            let mut sample = load::wrk(&nginx.url(""), size, &id, c, args.secs);
                            sample.cpu_us = (nginx.cpu_secs() - cpu) * 1e6 / sample.requests;
                            sample
                        }
                        _ => {
                            let proxy = Proxy::start(&args.proxy_bin, &s3_env(&s3.endpoint)).await;
                            s3.stats.reset();
                            let cpu = proxy.cpu_secs();
                            let mut sample = load::wrk(&proxy.url(""), size, &id, c, args.secs);
                            sample.cpu_us = (proxy.cpu_secs() - cpu) * 1e6 / sample.requests;
                            sample.stored_pct = s3.stats.puts().1 as f64 * 100.0 / sample.requests;
                            proxy.stop();
                            s3.clear();
                            sample
                        }
                    };
                    stat.samples.push(sample);
                }
            }
            for (name, stat) in ["direct", "nginx proxy_pass", "imgproxy-cache"]
                .iter()
                .zip(&stats)
            {
                let measured = |f: fn(&Sample) -> f64, digits| {
                    if stat.median(f) > 0.0 {
                        stat.cell(f, digits)
                    } else {
                        "—".to_owned()
                    }
                };
                let _ = writeln!(
                    report,
                    "| {size} | {c} | {name} | {} | {} | {} | {} | {} |",
                    stat.cell(|s| s.rps, 0),
                    stat.cell(|s| s.p50_ms, 3),
                    stat.cell(|s| s.p99_ms, 3),
                    measured(|s| s.cpu_us, 0),
                    measured(|s| s.stored_pct, 0).replace(" (", " % ("),
                );
            }
            let (direct, nginx_s, proxy_s) = (&stats[0], &stats[1], &stats[2]);
            if *size == "50k" {
                let _ = writeln!(
                    chart,
                    "c={c} {:.0} {:.0} {:.0}",
                    direct.median(|s| s.rps),
                    nginx_s.median(|s| s.rps),
                    proxy_s.median(|s| s.rps)
                );
            }
            if c >= 16 {
                let ratio = proxy_s.median(|s| s.rps) / nginx_s.median(|s| s.rps);
                checks.push(Check {
                    what: format!(
                        "{size} c={c}: imgproxy-cache throughput {ratio:.2}× nginx (target ≥ 1.10×)"
                    ),
                    pass: ratio >= 1.10,
                });
            }
            if c == 1 {
                let base = direct.median(|s| s.p50_ms);
                let ours = proxy_s.median(|s| s.p50_ms) - base;
                let theirs = nginx_s.median(|s| s.p50_ms) - base;
                checks.push(Check {
                    what: format!(
                        "{size} c=1: added p50 latency {:.3} ms vs nginx {:.3} ms (target ≤ nginx)",
                        ours, theirs
                    ),
                    pass: ours <= theirs,
                });
            }
        }
    }

    if args.miss_only {
        finish(&args.out, report, &checks, &chart);
        return;
    }

    // 3. S3 slow (every call +500 ms) and S3 down: the client must not notice. Measured at a
    // steady load the machine carries with uploads on: at saturation, the work a healthy S3
    // makes possible (storing results) takes CPU that trouble frees, so the comparison would
    // measure that work instead of whether trouble reaches clients.
    let _ = writeln!(
        report,
        "\n### Client latency under S3 trouble (50k bodies, 16 connections, each pausing \
         ~{TROUBLE_PAUSE_MS} ms between requests)\n\n\
         | S3 | req/s | p50 ms | p99 ms | CPU µs/req | stored |\n|---|---|---|---|---|---|"
    );
    let conditions = [
        ("healthy", 0, &s3.endpoint),
        ("slow (+500 ms per call)", 500, &s3.endpoint),
        ("down (connection refused)", 0, &dead_s3),
    ];
    let mut stats: [Stat; 3] = std::array::from_fn(|_| Stat { samples: vec![] });
    for _ in 0..args.reps {
        // Interleaved, so a noisy moment hurts every condition alike.
        for ((_, delay, endpoint), stat) in conditions.iter().zip(stats.iter_mut()) {
            run += 1;
            s3.delay_ms
                .store(*delay, std::sync::atomic::Ordering::SeqCst);
            let env = [
                s3_env(endpoint),
                vec![("SHUTDOWN_TIMEOUT_SECS", "2".to_owned())],
            ]
            .concat();
            let proxy = Proxy::start(&args.proxy_bin, &env).await;
            s3.stats.reset();
            let cpu = proxy.cpu_secs();
            let mut sample = load::wrk_paced(
                &proxy.url(""),
                "50k",
                &format!("r{run}"),
                16,
                args.secs,
                load::Pace::PauseMs(TROUBLE_PAUSE_MS),
            );
            sample.cpu_us = (proxy.cpu_secs() - cpu) * 1e6 / sample.requests;
            sample.stored_pct = s3.stats.puts().1 as f64 * 100.0 / sample.requests;
            proxy.stop();
            s3.clear();
            stat.samples.push(sample);
        }
    }
    let mut p99 = Vec::new();
    for ((name, ..), stat) in conditions.iter().zip(&stats) {
        let _ = writeln!(
            report,
            "| {name} | {} | {} | {} | {} | {} |",
            stat.cell(|s| s.rps, 0),
            stat.cell(|s| s.p50_ms, 3),
            stat.cell(|s| s.p99_ms, 3),
            stat.cell(|s| s.cpu_us, 0),
            stat.cell(|s| s.stored_pct, 0).replace(" (", " % ("),
        );
        p99.push((name, stat.median(|s| s.p99_ms)));
    }
    s3.delay_ms.store(0, std::sync::atomic::Ordering::SeqCst);
    for (name, value) in &p99[1..] {
        let change = value / p99[0].1 - 1.0;
        checks.push(Check {
            what: format!(
                "S3 {name}: client p99 changes by {:+.1}% (target within ±5%)",
                change * 100.0
            ),
            pass: change.abs() <= 0.05,
        });
    }

    // 4. Backlog: S3 down, many unique 1 MB results; memory must stay near the byte cap.
    let (count, cap_mib) = if args.smoke { (50, 16) } else { (1000, 64) };
    let env = [
        s3_env(&dead_s3),
        vec![
            (
                "UPLOAD_QUEUE_MAX_BYTES",
                (cap_mib * 1024 * 1024).to_string(),
            ),
            ("MAX_CACHEABLE_BYTES", (2 * 1024 * 1024).to_string()),
            ("SHUTDOWN_TIMEOUT_SECS", "2".to_owned()),
        ],
    ]
    .concat();
    let proxy = Proxy::start(&args.proxy_bin, &env).await;
    let base = proxy.url("/1m/backlog-");
    let ok = load::fire(count, 16, move |i| format!("{base}{i}")).await;
    let rss = proxy.peak_rss_mib();
    let metrics = load_metrics(&proxy).await;
    let drops = metric(
        &metrics,
        r#"imgproxy_cache_uploads_total{outcome="dropped_full"}"#,
    );
    proxy.stop();
    let _ = writeln!(
        report,
        "\n### Backlog: S3 down, {count} unique 1 MB results\n\n\
         | answered 200 | queue byte cap | peak RSS | results dropped |\n|---|---|---|---|\n\
         | {ok}/{count} | {cap_mib} MiB | {rss:.0} MiB | {drops:.0} |"
    );
    checks.push(Check {
        what: format!(
            "backlog: peak RSS {rss:.0} MiB ≤ cap {cap_mib} MiB + 64 MiB; {drops:.0} drops counted"
        ),
        pass: rss <= (cap_mib + 64) as f64 && ok == count,
    });

    // 5. Duplicates: many requests over few keys; each key must be PUT once.
    let (total, keys) = if args.smoke { (500, 10) } else { (10_000, 100) };
    let _ = writeln!(
        report,
        "\n### Duplicates: {total} requests over {keys} keys, 16 connections\n\n\
         | dedup | PUTs | keys | PUTs per key | HEADs |\n|---|---|---|---|---|"
    );
    for mode in ["head", "conditional"] {
        s3.stats.reset();
        let env = [
            s3_env(&s3.endpoint),
            vec![("UPLOAD_DEDUP", mode.to_owned())],
        ]
        .concat();
        let proxy = Proxy::start(&args.proxy_bin, &env).await;
        let base = proxy.url(&format!("/50k/dup-{mode}-"));
        load::fire(total, 16, move |i| format!("{base}{}", i % keys)).await;
        proxy.stop();
        let (puts, distinct) = s3.stats.puts();
        let heads = s3.stats.heads.load(std::sync::atomic::Ordering::SeqCst);
        let per_key = puts as f64 / distinct.max(1) as f64;
        let _ = writeln!(
            report,
            "| {mode} | {puts} | {distinct} | {per_key:.3} | {heads} |"
        );
        checks.push(Check {
            what: format!("duplicates ({mode}): {per_key:.3} PUTs per key (target ≤ 1.02)"),
            pass: per_key <= 1.02 && distinct == keys as u64,
        });
    }

    finish(&args.out, report, &checks, &chart);
}

/// Appends the targets, prints the report and writes results.md and the chart.
fn finish(out: &std::path::Path, mut report: String, checks: &[Check], chart: &str) {
    let _ = writeln!(report, "\n### Targets\n");
    for check in checks {
        let _ = writeln!(
            report,
            "- {} {}",
            if check.pass { "PASS" } else { "MISS" },
            check.what
        );
    }
    print!("{report}");
    std::fs::create_dir_all(out).expect("create the output directory");
    std::fs::write(out.join("results.md"), &report).expect("write results.md");
    draw_chart(out, chart);
}

async fn load_metrics(proxy: &Proxy) -> String {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let uri = proxy
        .url("/_imgproxy-cache/metrics")
        .parse()
        .expect("valid URL");
    match client.get(uri).await {
        Ok(response) => {
            use http_body_util::BodyExt;
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            String::from_utf8_lossy(&body).into_owned()
        }
        Err(_) => String::new(),
    }
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Date, machine and commit, so a table can be traced to where it came from.
fn header() -> String {
    let run = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split(':')
                .nth(1)
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_default();
    format!(
        "Run {} on {} × {cpu}, commit {}; load: wrk {}.",
        run("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        run("nproc", &[]),
        run("git", &["rev-parse", "--short", "HEAD"]),
        run("sh", &["-c", "wrk -v 2>&1 | head -1 | cut -d' ' -f2"]),
    )
}

/// A grouped bar chart of the 50k throughput table, via gnuplot when it is installed.
fn draw_chart(out: &std::path::Path, rows: &str) {
    let data = out.join("proxy-bench.dat");
    std::fs::write(&data, format!("# conc direct nginx imgproxy-cache\n{rows}"))
        .expect("write chart data");
    let script = format!(
        "set terminal pngcairo size 800,450\nset output '{png}'\nset title 'Requests/s, 50 KB bodies (higher is better)'\n\
         set style data histograms\nset style histogram clustered gap 1\nset style fill solid 0.8\n\
         set key top left\nset yrange [0:*]\nset grid ytics\n\
         plot '{dat}' using 2:xtic(1) title 'direct', '' using 3 title 'nginx proxy\\_pass', '' using 4 title 'imgproxy-cache'\n",
        png = out.join("proxy-bench.png").display(),
        dat = data.display()
    );
    let script_path = out.join("proxy-bench.gp");
    std::fs::write(&script_path, script).expect("write the gnuplot script");
    let status = std::process::Command::new("gnuplot")
        .arg(&script_path)
        .status();
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("gnuplot failed or is missing: no chart drawn");
    }
}
