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
use std::sync::atomic::Ordering;

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
    /// Run only these scenarios (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Scenario>,
    /// Extra `NAME=value` settings for every proxy started (to measure a setting's effect).
    #[arg(long = "proxy-env", value_parser = parse_env)]
    proxy_env: Vec<(String, String)>,
}

/// The benchmark's parts, for `--only`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    /// Requests/s and latency against nginx and the bare upstream (1 and 2).
    Miss,
    /// Client latency with S3 healthy, slow and down (3).
    Trouble,
    /// Memory with S3 down and a full queue (4).
    Backlog,
    /// PUTs per key over repeated keys (5).
    Duplicates,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not NAME=value"))
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn min_max(values: &[f64]) -> (f64, f64) {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    (lo, values.iter().copied().fold(f64::NEG_INFINITY, f64::max))
}

/// One measurement repeated: median and range of each figure.
struct Stat {
    samples: Vec<Sample>,
}

impl Stat {
    fn median(&self, f: impl Fn(&Sample) -> f64) -> f64 {
        median(&self.samples.iter().map(f).collect::<Vec<_>>())
    }

    fn range(&self, f: impl Fn(&Sample) -> f64 + Copy) -> (f64, f64) {
        min_max(&self.samples.iter().map(f).collect::<Vec<_>>())
    }

    /// The `q` quantile (0–1) of every request of every run together, in ms.
    fn pooled_ms(&self, q: f64) -> f64 {
        let mut all: Vec<(u64, u64)> = self
            .samples
            .iter()
            .flat_map(|s| s.latency_us.iter().copied())
            .collect();
        all.sort_unstable();
        let total: u64 = all.iter().map(|(_, n)| n).sum();
        let rank = (q * total as f64).ceil() as u64;
        let mut seen = 0;
        for (us, n) in all {
            seen += n;
            if seen >= rank {
                return us as f64 / 1000.0;
            }
        }
        0.0
    }

    fn cell(&self, f: impl Fn(&Sample) -> f64 + Copy, digits: usize) -> String {
        let (lo, hi) = self.range(f);
        format!("{:.d$} ({lo:.d$}–{hi:.d$})", self.median(f), d = digits)
    }
}

/// Connections per proxy in the S3-trouble runs, and each one's pause between requests, in ms:
/// about 400 requests/s per proxy, 1 200 in all, well inside what the machine serves and
/// stores on 2 cores.
const TROUBLE_CONNECTIONS: usize = 8;
const TROUBLE_PAUSE_MS: u64 = 20;

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
    let mut bench = Bench {
        s3: servers::s3(),
        nginx: Nginx::start(upstream).await,
        dead_s3: format!("http://127.0.0.1:{}", procs::free_port()),
        upstream,
        report: format!("{}\n\n", header()),
        checks: Vec::new(),
        chart: String::new(),
        run: 0,
        args,
    };
    if bench.wants(Scenario::Miss) {
        bench.miss_path().await;
    }
    if bench.wants(Scenario::Trouble) {
        bench.s3_trouble().await;
    }
    if bench.wants(Scenario::Backlog) {
        bench.backlog().await;
    }
    if bench.wants(Scenario::Duplicates) {
        bench.duplicates().await;
    }
    finish(&bench.args.out, bench.report, &bench.checks, &bench.chart);
}

/// What every scenario shares: the servers, and the report being written.
struct Bench {
    args: Args,
    upstream: std::net::SocketAddr,
    s3: servers::S3,
    nginx: Nginx,
    /// An S3 endpoint where nothing listens: connections are refused.
    dead_s3: String,
    report: String,
    checks: Vec<Check>,
    /// Rows of the chart's data file.
    chart: String,
    /// Counts wrk runs, so that no run asks for a path an earlier run asked for.
    run: usize,
}

impl Bench {
    fn wants(&self, scenario: Scenario) -> bool {
        self.args.only.is_empty() || self.args.only.contains(&scenario)
    }

    fn next_run(&mut self) -> String {
        self.run += 1;
        format!("r{}", self.run)
    }

    /// Starts a proxy storing to `endpoint`: the defaults, then the scenario's `settings`,
    /// then `--proxy-env` (the later of two equal names wins).
    async fn proxy(&self, endpoint: &str, settings: &[(&'static str, String)]) -> Proxy {
        let mut env = vec![
            ("UPSTREAM_URL", format!("http://{}", self.upstream)),
            ("S3_BUCKET", servers::BUCKET.to_owned()),
            ("S3_ENDPOINT", endpoint.to_owned()),
            ("S3_REGION", "us-east-1".to_owned()),
            ("AWS_ACCESS_KEY_ID", servers::ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", servers::SECRET_KEY.to_owned()),
        ];
        env.extend_from_slice(settings);
        env.extend(
            self.args
                .proxy_env
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone())),
        );
        Proxy::start(&self.args.proxy_bin, &env).await
    }

    /// Scenarios 1 and 2, the miss path: throughput and latency of the bare upstream, nginx, and
    /// the proxy with uploads to a healthy S3.
    async fn miss_path(&mut self) {
        let concurrencies: Vec<usize> = match (&self.args.conns[..], self.args.smoke) {
            ([], true) => vec![1, 16],
            ([], false) => vec![1, 16, 64],
            (chosen, _) => chosen.to_vec(),
        };
        let sizes: Vec<String> = match (&self.args.sizes[..], self.args.smoke) {
            ([], true) => vec!["50k".into()],
            ([], false) => vec!["50k".into(), "500k".into()],
            (chosen, _) => chosen.to_vec(),
        };
        let _ = writeln!(
            self.report,
            "### Miss path: requests/s and latency (median of {} × {} s runs, min–max)\n\n\
             CPU is the server's own (nginx: master and workers; imgproxy-cache: the whole \
             process, uploads included), per request. Stored: results that reached S3 during \
             the run.\n\n\
             | body | conc. | target | req/s | p50 ms | p99 ms | CPU µs/req | stored |\n\
             |---|---|---|---|---|---|---|---|",
            self.args.reps, self.args.secs
        );
        let secs = self.args.secs;
        for size in &sizes {
            for &c in &concurrencies {
                let mut stats: [Stat; 3] = std::array::from_fn(|_| Stat { samples: vec![] });
                for _ in 0..self.args.reps {
                    // Interleaved, so a noisy moment hurts every target alike.
                    for (t, stat) in stats.iter_mut().enumerate() {
                        let id = self.next_run();
                        let sample = match t {
                            0 => {
                                load::wrk(&format!("http://{}", self.upstream), size, &id, c, secs)
                            }
                            1 => {
                                let cpu = self.nginx.cpu_secs();
                                let mut sample = load::wrk(&self.nginx.url(""), size, &id, c, secs);
                                sample.cpu_us =
                                    (self.nginx.cpu_secs() - cpu) * 1e6 / sample.requests;
                                sample
                            }
                            _ => {
                                let proxy = self.proxy(&self.s3.healthy.endpoint, &[]).await;
                                self.s3.healthy.stats.reset();
                                let cpu = proxy.cpu_secs();
                                let mut sample = load::wrk(&proxy.url(""), size, &id, c, secs);
                                sample.cpu_us = (proxy.cpu_secs() - cpu) * 1e6 / sample.requests;
                                sample.stored_pct =
                                    self.s3.healthy.stats.puts().1 as f64 * 100.0 / sample.requests;
                                proxy.stop();
                                self.s3.clear();
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
                        self.report,
                        "| {size} | {c} | {name} | {} | {} | {} | {} | {} |",
                        stat.cell(|s| s.rps, 0),
                        stat.cell(|s| s.p50_ms, 3),
                        stat.cell(|s| s.p99_ms, 3),
                        measured(|s| s.cpu_us, 0),
                        measured(|s| s.stored_pct, 0).replace(" (", " % ("),
                    );
                }
                let (direct, nginx, proxy) = (&stats[0], &stats[1], &stats[2]);
                if size == "50k" {
                    let _ = writeln!(
                        self.chart,
                        "c={c} {:.0} {:.0} {:.0}",
                        direct.median(|s| s.rps),
                        nginx.median(|s| s.rps),
                        proxy.median(|s| s.rps)
                    );
                }
                if c >= 16 {
                    let ratio = proxy.median(|s| s.rps) / nginx.median(|s| s.rps);
                    self.checks.push(Check {
                        what: format!(
                            "{size} c={c}: imgproxy-cache throughput {ratio:.2}× nginx (target ≥ 1.10×)"
                        ),
                        pass: ratio >= 1.10,
                    });
                }
                if c == 1 {
                    let base = direct.median(|s| s.p50_ms);
                    let ours = proxy.median(|s| s.p50_ms) - base;
                    let theirs = nginx.median(|s| s.p50_ms) - base;
                    self.checks.push(Check {
                        what: format!(
                            "{size} c=1: added p50 latency {ours:.3} ms vs nginx {theirs:.3} ms (target ≤ nginx)"
                        ),
                        pass: ours <= theirs,
                    });
                }
            }
        }
    }

    /// Scenario 3, S3 trouble: slow (every call +500 ms) and down; the client must not notice.
    ///
    /// The three conditions run at the same time, each its own proxy under its own paced wrk,
    /// so that whatever else happens on the machine (the hypervisor took up to a fifth of the
    /// CPU for seconds at a time in our runs) happens to all three alike, and the only
    /// difference between them is their S3. The pace is a load the machine carries with room to
    /// spare: at saturation, the storing a healthy S3 makes possible would take CPU from the
    /// others, and the comparison would measure that work instead of trouble reaching clients.
    async fn s3_trouble(&mut self) {
        // Three times `--secs`: as the conditions share each run, this takes the wall time three
        // runs after each other would, and the tail gets three times the requests.
        let secs = 3 * self.args.secs;
        let _ = writeln!(
            self.report,
            "\n### Client latency under S3 trouble (50k bodies; {} × {secs} s runs, the three \
             conditions at once, each with {TROUBLE_CONNECTIONS} connections pausing \
             ~{TROUBLE_PAUSE_MS} ms between requests)\n\n\
             p50 and p99: all runs' requests together. p99 per run: the range of each run's own \
             p99. Against healthy: each run's p99 over the healthy proxy's p99 in the same run, \
             median (min…max) over runs; the target is judged on it.\n\n\
             | S3 | req/s | p50 ms | p99 ms | p99 ms per run | p99 against healthy | CPU µs/req \
             | stored |\n|---|---|---|---|---|---|---|---|",
            self.args.reps
        );
        let conditions = [
            ("healthy", Some(self.s3.healthy.clone())),
            ("slow (+500 ms per call)", Some(self.s3.slow.clone())),
            ("down (connection refused)", None),
        ];
        let mut stats: [Stat; 3] = std::array::from_fn(|_| Stat { samples: vec![] });
        for rep in 0..self.args.reps {
            // Started, and loaded, in an order that turns each run, so no condition always
            // goes first.
            let order: Vec<usize> = (0..conditions.len())
                .map(|k| (k + rep) % conditions.len())
                .collect();
            let mut proxies = Vec::new();
            for &c in &order {
                let endpoint = conditions[c]
                    .1
                    .as_ref()
                    .map_or(&self.dead_s3, |f| &f.endpoint);
                let proxy = self
                    .proxy(endpoint, &[("SHUTDOWN_TIMEOUT_SECS", "2".to_owned())])
                    .await;
                proxies.push(proxy);
            }
            let ids: Vec<String> = order.iter().map(|_| self.next_run()).collect();
            for (_, front) in &conditions {
                if let Some(front) = front {
                    front.stats.reset();
                }
            }
            let cpu: Vec<f64> = proxies.iter().map(Proxy::cpu_secs).collect();
            let samples: Vec<Sample> = std::thread::scope(|scope| {
                let runs: Vec<_> = proxies
                    .iter()
                    .zip(&ids)
                    .map(|(proxy, id)| {
                        let url = proxy.url("");
                        scope.spawn(move || {
                            load::wrk_paced(
                                &url,
                                "50k",
                                id,
                                TROUBLE_CONNECTIONS,
                                secs,
                                load::Pace::PauseMs(TROUBLE_PAUSE_MS),
                            )
                        })
                    })
                    .collect();
                runs.into_iter()
                    .map(|run| run.join().expect("wrk ran"))
                    .collect()
            });
            for ((j, mut sample), &c) in samples.into_iter().enumerate().zip(&order) {
                sample.cpu_us = (proxies[j].cpu_secs() - cpu[j]) * 1e6 / sample.requests;
                let stored = conditions[c].1.as_ref().map_or(0, |f| f.stats.puts().1);
                sample.stored_pct = stored as f64 * 100.0 / sample.requests;
                stats[c].samples.push(sample);
            }
            for proxy in proxies {
                proxy.stop();
            }
            self.s3.clear();
        }
        // Each run measured the three at the same moment, so its ratios cancel what the machine
        // did then: the target is judged on them (median over runs), not on pooled numbers.
        let paired: Vec<Vec<f64>> = stats
            .iter()
            .map(|stat| {
                let changes = stat.samples.iter().zip(&stats[0].samples);
                changes.map(|(s, h)| s.p99_ms / h.p99_ms - 1.0).collect()
            })
            .collect();
        let rows = conditions.iter().zip(&stats).zip(&paired).enumerate();
        for (i, (((name, _), stat), changes)) in rows {
            let same_run = if i == 0 {
                "—".to_owned()
            } else {
                let (lo, hi) = min_max(changes);
                format!(
                    "{:+.1} % ({:+.1}…{:+.1})",
                    median(changes) * 100.0,
                    lo * 100.0,
                    hi * 100.0
                )
            };
            let _ = writeln!(
                self.report,
                "| {name} | {} | {:.3} | {:.3} | {:.3}–{:.3} | {same_run} | {} | {} |",
                stat.cell(|s| s.rps, 0),
                stat.pooled_ms(0.50),
                stat.pooled_ms(0.99),
                stat.range(|s| s.p99_ms).0,
                stat.range(|s| s.p99_ms).1,
                stat.cell(|s| s.cpu_us, 0),
                stat.cell(|s| s.stored_pct, 0).replace(" (", " % ("),
            );
        }
        for ((name, _), changes) in conditions.iter().zip(&paired).skip(1) {
            let change = median(changes);
            self.checks.push(Check {
                what: format!(
                    "S3 {name}: client p99 changes by {:+.1}% against healthy in the same run, \
                     median of {} (target within ±5%)",
                    change * 100.0,
                    changes.len()
                ),
                pass: change.abs() <= 0.05,
            });
        }
    }

    /// Scenario 4, backlog: S3 down, many unique 1 MB results; memory must stay near the byte
    /// cap.
    async fn backlog(&mut self) {
        let (count, cap_mib) = if self.args.smoke {
            (50, 16)
        } else {
            (1000, 64)
        };
        let settings = [
            (
                "UPLOAD_QUEUE_MAX_BYTES",
                (cap_mib * 1024 * 1024).to_string(),
            ),
            ("MAX_CACHEABLE_BYTES", (2 * 1024 * 1024).to_string()),
            ("SHUTDOWN_TIMEOUT_SECS", "2".to_owned()),
        ];
        let proxy = self.proxy(&self.dead_s3, &settings).await;
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
            self.report,
            "\n### Backlog: S3 down, {count} unique 1 MB results\n\n\
             | answered 200 | queue byte cap | peak RSS | results dropped |\n|---|---|---|---|\n\
             | {ok}/{count} | {cap_mib} MiB | {rss:.0} MiB | {drops:.0} |"
        );
        self.checks.push(Check {
            what: format!(
                "backlog: peak RSS {rss:.0} MiB ≤ cap {cap_mib} MiB + 64 MiB; {drops:.0} drops counted"
            ),
            pass: rss <= (cap_mib + 64) as f64 && ok == count,
        });
    }

    /// Scenario 5, duplicates: many requests over few keys; each key must be PUT once.
    async fn duplicates(&mut self) {
        let (total, keys) = if self.args.smoke {
            (500, 10)
        } else {
            (10_000, 100)
        };
        let _ = writeln!(
            self.report,
            "\n### Duplicates: {total} requests over {keys} keys, 16 connections\n\n\
             | dedup | PUTs | keys | PUTs per key | HEADs |\n|---|---|---|---|---|"
        );
        for mode in ["head", "conditional"] {
            self.s3.healthy.stats.reset();
            let proxy = self
                .proxy(
                    &self.s3.healthy.endpoint,
                    &[("UPLOAD_DEDUP", mode.to_owned())],
                )
                .await;
            let base = proxy.url(&format!("/50k/dup-{mode}-"));
            load::fire(total, 16, move |i| format!("{base}{}", i % keys)).await;
            proxy.stop();
            let (puts, distinct) = self.s3.healthy.stats.puts();
            let heads = self.s3.healthy.stats.heads.load(Ordering::SeqCst);
            let per_key = puts as f64 / distinct.max(1) as f64;
            let _ = writeln!(
                self.report,
                "| {mode} | {puts} | {distinct} | {per_key:.3} | {heads} |"
            );
            self.checks.push(Check {
                what: format!("duplicates ({mode}): {per_key:.3} PUTs per key (target ≤ 1.02)"),
                pass: per_key <= 1.02 && distinct == keys as u64,
            });
        }
    }
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
