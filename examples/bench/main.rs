//! The proxy benchmark: imgproxy-cache against nginx and the bare upstream, on the same machine,
//! in one run — the miss path (against nginx `proxy_pass` with its default buffers and tuned as
//! a careful operator tunes it), hits (against nginx `proxy_cache`), a stampede on one new key,
//! what a bucket lookup costs a miss, and the upload path under S3 trouble. Run it with
//! `scripts/bench` (which installs nginx and wrk and builds in release mode); `--smoke` is the
//! short version CI runs so the benchmark keeps working.
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
use load::{Arrival, Sample};
use procs::{Flavour, Nginx, Proxy, Worker};

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
    /// Body kinds for the miss-path table (default: 50k-nostore, 50k and 500k; a kind ending in
    /// `-nostore` is answered `Cache-Control: no-store`, so nothing is uploaded).
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<String>,
    /// Connection counts for the miss-path table (default: 1, 16 and 64).
    #[arg(long, value_delimiter = ',')]
    conns: Vec<usize>,
    /// Run only these scenarios (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Scenario>,
    /// The photos the renders scenario reads (24 MP and ~1 MP JPEGs).
    #[arg(long, default_value = "../shared/corpus")]
    corpus: PathBuf,
    /// What else ran on the machine, for the report's header.
    #[arg(long)]
    note: Option<String>,
    /// Extra `NAME=value` settings for every proxy started (to measure a setting's effect).
    #[arg(long = "proxy-env", value_parser = parse_env)]
    proxy_env: Vec<(String, String)>,
}

/// Settings a scenario gives one of its proxies.
type Settings = &'static [(&'static str, &'static str)];

/// The benchmark's parts, for `--only`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    /// Requests/s and latency of true misses against nginx and the bare upstream (1 and 2).
    Miss,
    /// Requests/s of warm hits against nginx `proxy_cache`.
    Hits,
    /// 50 clients at once on one new key that renders slowly.
    Stampede,
    /// What a bucket lookup adds to a miss: loopback, 20 ms away, breaker open.
    Lookup,
    /// Client latency with S3 healthy, slow and down (3).
    Trouble,
    /// Memory with S3 down and a full queue (4).
    Backlog,
    /// PUTs per key over repeated keys (5).
    Duplicates,
    /// The proxy in front of the bundled worker on real photos, against the worker direct.
    Renders,
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

/// Connections per proxy in the lookup-cost runs, and each one's pause between requests: four
/// proxies at about 200 requests/s each, uploads included, leave the machine room, so latency
/// shows the lookup rather than a queue for the CPU.
const LOOKUP_CONNECTIONS: usize = 4;
const LOOKUP_PAUSE_MS: u64 = 20;

/// Keys in the hit runs (50 KB each: 50 MB, inside the default 64 MiB memory tier).
const HIT_KEYS: usize = 1000;

/// Clients of a stampede.
const STAMPEDE_CLIENTS: usize = 50;

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
        nginx: Nginx::start(upstream.addr, Flavour::DefaultBuffers).await,
        nginx_tuned: Nginx::start(upstream.addr, Flavour::Tuned).await,
        nginx_cache: Nginx::start(upstream.addr, Flavour::Cache).await,
        dead_s3: format!("http://127.0.0.1:{}", procs::free_port()),
        upstream,
        report: match &args.note {
            Some(note) => format!("{}\n\nConditions: {note}\n\n", header()),
            None => format!("{}\n\n", header()),
        },
        checks: Vec::new(),
        chart: String::new(),
        run: 0,
        args,
    };
    if bench.wants(Scenario::Miss) {
        bench.miss_path().await;
    }
    if bench.wants(Scenario::Hits) {
        bench.hits().await;
    }
    if bench.wants(Scenario::Stampede) {
        bench.stampede().await;
    }
    if bench.wants(Scenario::Lookup) {
        bench.lookup_cost().await;
    }
    if bench.wants(Scenario::Trouble) {
        bench.s3_trouble().await;
    }
    if bench.wants(Scenario::Backlog) {
        bench.backlog().await;
    }
    if bench.wants(Scenario::Renders) {
        bench.renders().await;
    }
    if bench.wants(Scenario::Duplicates) {
        bench.duplicates().await;
    }
    finish(&bench.args.out, bench.report, &bench.checks, &bench.chart);
}

/// What every scenario shares: the servers, and the report being written.
struct Bench {
    args: Args,
    upstream: servers::Upstream,
    s3: servers::S3,
    /// nginx `proxy_pass` on its default buffers, as the first benchmark ran it.
    nginx: Nginx,
    /// nginx `proxy_pass` as a careful operator sets it: the anchor.
    nginx_tuned: Nginx,
    /// nginx `proxy_cache`, tuned, for hits and the stampede.
    nginx_cache: Nginx,
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
            ("UPSTREAM_URL", format!("http://{}", self.upstream.addr)),
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

    /// Scenarios 1 and 2, the miss path: throughput and latency of the bare upstream, nginx
    /// (default buffers, and tuned: the anchor), and the proxy with uploads to a healthy S3.
    /// Every request is a new path, so every request through the proxy is a true miss: memory,
    /// then a bucket lookup (answered `NoSuchKey`), then the upstream, then an upload.
    async fn miss_path(&mut self) {
        let concurrencies: Vec<usize> = match (&self.args.conns[..], self.args.smoke) {
            ([], true) => vec![1, 16],
            ([], false) => vec![1, 16, 64],
            (chosen, _) => chosen.to_vec(),
        };
        let sizes: Vec<String> = match (&self.args.sizes[..], self.args.smoke) {
            ([], true) => vec!["50k-nostore".into(), "50k".into()],
            ([], false) => vec!["50k-nostore".into(), "50k".into(), "500k".into()],
            (chosen, _) => chosen.to_vec(),
        };
        let _ = writeln!(
            self.report,
            "### Miss path: requests/s and latency (median of {} × {} s runs, min–max)\n\n\
             Every request a new path: for imgproxy-cache a true miss (memory, a bucket lookup \
             answered NoSuchKey, the upstream, an upload). Bodies marked no-store are answered \
             `Cache-Control: no-store`: the same true miss with nothing to copy or upload. nginx \
             tuned: {}; worker_processes 2 \
             (the cores), keep-alive upstream connections. nginx default buffers: the same \
             without the tuning (`proxy_buffers 8 4k`: a 50 KB body goes partly to a temp \
             file).\n\n\
             CPU is the server's own (nginx: master and workers; imgproxy-cache: the whole \
             process, uploads included), per request; S3 CPU: the S3 stand-in's, per request \
             (its lookups run at normal priority, on these cores). Looked up: the proxy's bucket \
             lookups the bucket answered, found or missing (100 % = none failed or was \
             skipped by the breaker). \
             Stored: results that reached S3 during the run.\n\n\
             | body | conc. | target | req/s | p50 ms | p99 ms | CPU µs/req | S3 CPU µs/req \
             | looked up | stored |\n\
             |---|---|---|---|---|---|---|---|---|---|",
            self.args.reps,
            self.args.secs,
            procs::TUNED
        );
        let names = [
            "direct",
            Flavour::DefaultBuffers.label(),
            Flavour::Tuned.label(),
            "imgproxy-cache",
            "imgproxy-cache, BUCKET_READS=false",
        ];
        let mut ratios = String::new();
        let secs = self.args.secs;
        for size in &sizes {
            let no_store = size.ends_with(servers::NO_STORE);
            let body = size.replace(servers::NO_STORE, " no-store");
            for &c in &concurrencies {
                let mut stats: [Stat; 5] = std::array::from_fn(|_| Stat { samples: vec![] });
                for _ in 0..self.args.reps {
                    // Interleaved, so a noisy moment hurts every target alike.
                    for (t, stat) in stats.iter_mut().enumerate() {
                        let id = self.next_run();
                        let sample = match t {
                            0 => load::wrk(
                                &format!("http://{}", self.upstream.addr),
                                size,
                                &id,
                                c,
                                secs,
                            ),
                            1 | 2 => {
                                let nginx = if t == 1 {
                                    &self.nginx
                                } else {
                                    &self.nginx_tuned
                                };
                                let cpu = nginx.cpu_secs();
                                let mut sample = load::wrk(&nginx.url(""), size, &id, c, secs);
                                sample.cpu_us = (nginx.cpu_secs() - cpu) * 1e6 / sample.requests;
                                sample
                            }
                            3 => self.proxy_miss(&[], size, &id, c).await,
                            // Without the lookup: what the proxy path itself costs.
                            _ if no_store => {
                                let off = [("BUCKET_READS", "false".to_owned())];
                                self.proxy_miss(&off, size, &id, c).await
                            }
                            _ => continue,
                        };
                        stat.samples.push(sample);
                    }
                }
                for (name, stat) in names.iter().zip(&stats) {
                    if stat.samples.is_empty() {
                        continue;
                    }
                    let measured = |f: fn(&Sample) -> f64, digits| {
                        if stat.median(f) > 0.0 {
                            stat.cell(f, digits)
                        } else {
                            "—".to_owned()
                        }
                    };
                    let share = |f: fn(&Sample) -> f64| measured(f, 0).replace(" (", " % (");
                    let _ = writeln!(
                        self.report,
                        "| {body} | {c} | {name} | {} | {} | {} | {} | {} | {} | {} |",
                        stat.cell(|s| s.rps, 0),
                        stat.cell(|s| s.p50_ms, 3),
                        stat.cell(|s| s.p99_ms, 3),
                        measured(|s| s.cpu_us, 0),
                        measured(|s| s.s3_cpu_us, 0),
                        share(|s| s.looked_up_pct),
                        share(|s| s.stored_pct),
                    );
                }
                let [direct, default, tuned, proxy, unlooked] = &stats;
                let rps = |s: &Stat| s.median(|s| s.rps);
                let cpu = |s: &Stat| s.median(|s| s.cpu_us);
                let added = |s: &Stat| s.median(|s| s.p50_ms) - direct.median(|s| s.p50_ms);
                let without_lookup = if unlooked.samples.is_empty() {
                    "—".to_owned()
                } else {
                    format!(
                        "{:.2}× ({:.0} µs)",
                        rps(unlooked) / rps(tuned),
                        cpu(unlooked)
                    )
                };
                let _ = writeln!(
                    ratios,
                    "| {body} | {c} | **{:.2}×** | {without_lookup} | {:.2}× | {:.0} / {:.0} + {:.0} | {:.3} / {:.3} |",
                    rps(proxy) / rps(tuned),
                    rps(proxy) / rps(default),
                    cpu(tuned),
                    cpu(proxy),
                    proxy.median(|s| s.s3_cpu_us),
                    added(tuned),
                    added(proxy),
                );
                if size == "50k" {
                    let _ = writeln!(
                        self.chart,
                        "c={c} {:.0} {:.0} {:.0} {:.0}",
                        rps(direct),
                        rps(default),
                        rps(tuned),
                        rps(proxy)
                    );
                }
                if c >= 16 && no_store {
                    let ratio = rps(proxy) / rps(tuned);
                    self.checks.push(Check {
                        what: format!(
                            "miss {body} c={c}: imgproxy-cache throughput {ratio:.2}× tuned nginx \
                             (target ≥ 1.10×; {:.2}× nginx on default buffers)",
                            rps(proxy) / rps(default)
                        ),
                        pass: ratio >= 1.10,
                    });
                }
                if c >= 16 && !no_store {
                    let (ours, s3) = (cpu(proxy), proxy.median(|s| s.s3_cpu_us));
                    let budget = 1.2 * (cpu(tuned) + s3);
                    self.checks.push(Check {
                        what: format!(
                            "miss {body} c={c}: imgproxy-cache CPU {ours:.0} µs/request, uploads \
                             included (target ≤ 1.2 × (tuned nginx {:.0} + the S3 server {s3:.0}) \
                             = {budget:.0}); {:.0} req/s, {:.2}× tuned nginx",
                            cpu(tuned),
                            rps(proxy),
                            rps(proxy) / rps(tuned)
                        ),
                        pass: ours <= budget,
                    });
                }
                if c == 1 {
                    let (ours, theirs) = (added(proxy), added(tuned));
                    self.checks.push(Check {
                        what: format!(
                            "miss {body} c=1: added p50 latency {ours:.3} ms vs tuned nginx \
                             {theirs:.3} ms (target ≤ nginx)"
                        ),
                        pass: ours <= theirs,
                    });
                }
                let looked_up = proxy.range(|s| s.looked_up_pct).0;
                self.checks.push(Check {
                    what: format!(
                        "miss {body} c={c}: every miss looked the key up in the bucket (lowest \
                         run: {looked_up:.1} % of lookups answered by it)"
                    ),
                    pass: looked_up >= 99.9,
                });
            }
        }
        let _ = writeln!(
            self.report,
            "\n**Ratios** (medians above): req/s of imgproxy-cache over nginx's; CPU µs per \
             request, nginx tuned / ours + the S3 stand-in's; p50 added over direct, ms, nginx \
             tuned / ours. Without lookup: the no-store rows again with `BUCKET_READS=false` \
             (÷ tuned nginx, and our CPU µs per request): the proxy path alone.\n\n\
             | body | conc. | ÷ tuned nginx | without lookup | ÷ nginx, default buffers | CPU µs/req | added p50 |\n\
             |---|---|---|---|---|---|---|\n{ratios}"
        );
    }

    /// One wrk run of new paths through a fresh proxy with `settings`, storing to the healthy
    /// S3: its CPU and the S3 stand-in's per request, the lookups the bucket answered, the
    /// share stored.
    async fn proxy_miss(
        &self,
        settings: &[(&'static str, String)],
        size: &str,
        id: &str,
        c: usize,
    ) -> Sample {
        let proxy = self.proxy(&self.s3.healthy.endpoint, settings).await;
        self.s3.healthy.stats.reset();
        let before = BucketReads::of(&proxy).await;
        let (cpu, s3_cpu) = (proxy.cpu_secs(), self.s3.cpu_secs());
        let mut sample = load::wrk(&proxy.url(""), size, id, c, self.args.secs);
        sample.cpu_us = (proxy.cpu_secs() - cpu) * 1e6 / sample.requests;
        sample.s3_cpu_us = (self.s3.cpu_secs() - s3_cpu) * 1e6 / sample.requests;
        let reads = BucketReads::of(&proxy).await.since(&before);
        sample.looked_up_pct = reads.answered_pct();
        sample.stored_pct = self.s3.healthy.stats.puts().1 as f64 * 100.0 / sample.requests;
        proxy.stop();
        self.s3.clear();
        sample
    }

    /// Scenario: real renders. The proxy in front of the bundled worker, against the worker
    /// direct, on photos from the corpus; every request a new URL (a cache buster) of the same
    /// render, at a load that saturates the worker. What share of a request is the proxy's,
    /// and what share of the results reaches the bucket (counted after the proxy has drained
    /// its queue on SIGTERM).
    async fn renders(&mut self) {
        const CONNECTIONS: usize = 4;
        let _ = writeln!(
            self.report,
            "\n### Real renders: the proxy in front of the bundled worker (median of {} × {} s \
             runs, min–max)\n",
            self.args.reps, self.args.secs
        );
        let corpus = match (self.args.smoke, self.args.corpus.canonicalize()) {
            (false, Ok(corpus)) => corpus,
            (true, _) => {
                let _ = writeln!(
                    self.report,
                    "Skipped in --smoke: it reads the photo corpus."
                );
                return;
            }
            (false, Err(e)) => {
                let _ = writeln!(
                    self.report,
                    "Skipped: no corpus at {} ({e}).",
                    self.args.corpus.display()
                );
                return;
            }
        };
        let _ = writeln!(
            self.report,
            "Every request a new URL of the same render (`cb:` cache buster), {CONNECTIONS} \
             connections: the worker renders 2 at a time (one per core), so it is saturated. \
             The proxy looks each up in the bucket, streams the render back and uploads it. \
             Proxy's share: of the median latency, (proxy − direct) / proxy. Stored: distinct \
             keys in S3 after the proxy drained its queue, over requests answered.\n\n\
             | render | target | req/s | p50 ms | p99 ms | proxy CPU µs/req | proxy's share of p50 | stored |\n\
             |---|---|---|---|---|---|---|---|"
        );
        let worker = Worker::start(&self.args.proxy_bin, &corpus).await;
        let cases = [
            (
                "24 MP JPEG → 300 px",
                "/insecure/rs:fit:300:300",
                "big_rocket.jpg",
            ),
            (
                "0.9 MP JPEG → fit 1200",
                "/insecure/rs:fit:1200:1200",
                "hubble_deep_field.jpg",
            ),
        ];
        for (label, options, file) in cases {
            let source = format!("/plain/local:///{file}");
            let mut direct = Stat { samples: vec![] };
            let mut proxied = Stat { samples: vec![] };
            for _ in 0..self.args.reps {
                let id = self.next_run();
                let base = worker.url("");
                let secs = self.args.secs;
                direct.samples.push(load::wrk_renders(
                    &base,
                    options,
                    &source,
                    &id,
                    CONNECTIONS,
                    secs,
                ));
                let id = self.next_run();
                let proxy = self
                    .proxy(&self.s3.healthy.endpoint, &[("UPSTREAM_URL", base)])
                    .await;
                self.s3.healthy.stats.reset();
                let cpu = proxy.cpu_secs();
                let mut sample =
                    load::wrk_renders(&proxy.url(""), options, &source, &id, CONNECTIONS, secs);
                sample.cpu_us = (proxy.cpu_secs() - cpu) * 1e6 / sample.requests;
                proxy.stop();
                sample.stored_pct = self.s3.healthy.stats.puts().1 as f64 * 100.0 / sample.requests;
                self.s3.clear();
                proxied.samples.push(sample);
            }
            let share = |s: &Stat| {
                (s.median(|s| s.p50_ms) - direct.median(|s| s.p50_ms)) * 100.0
                    / s.median(|s| s.p50_ms)
            };
            let _ = writeln!(
                self.report,
                "| {label} | worker direct | {} | {} | {} | — | — | — |",
                direct.cell(|s| s.rps, 1),
                direct.cell(|s| s.p50_ms, 2),
                direct.cell(|s| s.p99_ms, 2),
            );
            let _ = writeln!(
                self.report,
                "| {label} | imgproxy-cache → worker | {} | {} | {} | {} | {:.1} % | {} |",
                proxied.cell(|s| s.rps, 1),
                proxied.cell(|s| s.p50_ms, 2),
                proxied.cell(|s| s.p99_ms, 2),
                proxied.cell(|s| s.cpu_us, 0),
                share(&proxied),
                proxied.cell(|s| s.stored_pct, 0).replace(" (", " % ("),
            );
            self.checks.push(Check {
                what: format!(
                    "renders {label}: the proxy's share of the median latency {:.1} % (target < 2 %)",
                    share(&proxied)
                ),
                pass: share(&proxied) < 2.0,
            });
            let stored = proxied.range(|s| s.stored_pct).0;
            self.checks.push(Check {
                what: format!(
                    "renders {label}: results stored, lowest run {stored:.1} % (target 100 %)"
                ),
                pass: stored >= 99.5,
            });
        }
    }

    /// Scenario: hits. The same warm keys through the proxy (memory tier) and nginx
    /// `proxy_cache` (tmpfs), cycled; the upstream must see nothing while they are measured.
    async fn hits(&mut self) {
        let keys = if self.args.smoke { 100 } else { HIT_KEYS };
        let concurrencies: &[usize] = if self.args.smoke { &[16] } else { &[16, 64] };
        let secs = self.args.secs;
        let proxy = self.proxy(&self.s3.healthy.endpoint, &[]).await;
        let (ours_set, nginx_set) = (self.next_run(), self.next_run());
        // Warm: every key fetched once through each, and the proxy's uploads finished so they
        // take no CPU from the measured runs.
        self.s3.healthy.stats.reset();
        for (base, set) in [
            (proxy.url(""), &ours_set),
            (self.nginx_cache.url(""), &nginx_set),
        ] {
            let set = set.clone();
            let ok = load::fire(keys, 16, move |i| {
                format!("{base}{}", load::key_path("50k", &set, i))
            })
            .await;
            assert_eq!(ok, keys, "every key warms with a 200");
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.s3.healthy.stats.puts().1 < keys as u64 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let stored = self.s3.healthy.stats.puts().1;
        let _ = writeln!(
            self.report,
            "\n### Hits: {keys} warm keys of 50 KB cycled (median of {} × {secs} s runs, min–max)\n\n\
             Every key fetched once through each before the runs ({stored} of the proxy's \
             {keys} were in the bucket when they started). imgproxy-cache: the defaults \
             (memory tier `MEMORY_CACHE_MAX_BYTES` 64 MiB). nginx: `proxy_cache` on top of the \
             tuned `proxy_pass`: {}. Upstream: requests that reached it during the measured \
             runs (target 0).\n\n\
             | conc. | target | req/s | p50 ms | p99 ms | CPU µs/req | upstream requests |\n\
             |---|---|---|---|---|---|---|",
            self.args.reps,
            procs::CACHE
        );
        let lookups_before = Lookups::of(&proxy).await;
        let mut ratios = String::new();
        for &c in concurrencies {
            let mut stats: [Stat; 2] = std::array::from_fn(|_| Stat { samples: vec![] });
            let mut upstream = [0u64; 2];
            for rep in 0..self.args.reps {
                for k in 0..2 {
                    // The order turns each run, so neither always goes first.
                    let t = (k + rep) % 2;
                    let (url, set, cpu_of): (String, &str, Box<dyn Fn() -> f64>) = if t == 0 {
                        let n = &self.nginx_cache;
                        (n.url(""), &nginx_set, Box::new(|| n.cpu_secs()))
                    } else {
                        (proxy.url(""), &ours_set, Box::new(|| proxy.cpu_secs()))
                    };
                    let before = self.upstream.requests();
                    let cpu = cpu_of();
                    let mut sample = load::wrk_cycled(&url, "50k", set, keys, c, secs);
                    sample.cpu_us = (cpu_of() - cpu) * 1e6 / sample.requests;
                    upstream[t] += self.upstream.requests() - before;
                    stats[t].samples.push(sample);
                }
            }
            let names = [Flavour::Cache.label(), "imgproxy-cache"];
            for ((name, stat), up) in names.iter().zip(&stats).zip(upstream) {
                let _ = writeln!(
                    self.report,
                    "| {c} | {name} | {} | {} | {} | {} | {up} |",
                    stat.cell(|s| s.rps, 0),
                    stat.cell(|s| s.p50_ms, 3),
                    stat.cell(|s| s.p99_ms, 3),
                    stat.cell(|s| s.cpu_us, 0),
                );
            }
            let ratio = stats[1].median(|s| s.rps) / stats[0].median(|s| s.rps);
            let _ = writeln!(
                ratios,
                "| {c} | **{ratio:.2}×** | {:.0} / {:.0} | {} / {} |",
                stats[0].median(|s| s.cpu_us),
                stats[1].median(|s| s.cpu_us),
                upstream[0],
                upstream[1]
            );
            self.checks.push(Check {
                what: format!(
                    "hits c={c}: imgproxy-cache {ratio:.2}× nginx proxy_cache req/s (target ≥ 1.10×)"
                ),
                pass: ratio >= 1.10,
            });
            self.checks.push(Check {
                what: format!(
                    "hits c={c}: upstream requests during the runs: imgproxy-cache {}, nginx {} \
                     (target 0)",
                    upstream[1], upstream[0]
                ),
                pass: upstream == [0, 0],
            });
        }
        let lookups = Lookups::of(&proxy).await.since(&lookups_before);
        proxy.stop();
        self.s3.clear();
        let _ = writeln!(
            self.report,
            "\n**Ratios**: req/s of imgproxy-cache over nginx `proxy_cache`'s; CPU µs per \
             request, nginx / ours; upstream requests, nginx / ours. The proxy's lookups during \
             the runs: {:.0} from memory, {:.0} from the bucket, {:.0} misses.\n\n\
             | conc. | ÷ nginx proxy_cache | CPU µs/req | upstream requests |\n|---|---|---|---|\n{ratios}",
            lookups.hit_memory, lookups.hit_bucket, lookups.miss
        );
    }

    /// Scenario: a stampede. [`STAMPEDE_CLIENTS`] clients ask at the same instant for one new
    /// key whose render takes 300 ms and streams over ~100 ms; a new key each run.
    async fn stampede(&mut self) {
        let reps = if self.args.smoke { 1 } else { 5 };
        let proxy = self.proxy(&self.s3.healthy.endpoint, &[]).await;
        let addrs = [
            format!("127.0.0.1:{}", self.nginx_cache.port),
            format!("127.0.0.1:{}", proxy.port),
        ]
        .map(|a| a.parse().expect("a loopback address"));
        let mut runs: [Vec<Stampede>; 2] = [Vec::new(), Vec::new()];
        for rep in 0..reps {
            for k in 0..2 {
                let t = (k + rep) % 2;
                let path = format!("/slow/{}", self.next_run());
                let before = self.upstream.requests();
                let arrivals =
                    load::stampede(addrs[t], &path, STAMPEDE_CLIENTS, servers::render_body()).await;
                runs[t].push(Stampede::of(arrivals, self.upstream.requests() - before));
            }
        }
        proxy.stop();
        self.s3.clear();
        let _ = writeln!(
            self.report,
            "\n### Stampede: {STAMPEDE_CLIENTS} clients at once on one new key ({} runs, a new \
             key each)\n\n\
             The render waits {} ms, then streams 50 KB in {} chunks {} ms apart. Times from \
             the moment all clients were let go, each on a connection opened beforehand, to the \
             first body byte; the leader is the client whose answer says `X-Cache: MISS`. \
             Median over runs (min–max). nginx: `proxy_cache_lock on` (its waiters poll the \
             cache every 500 ms and get nothing until the whole body is in it).\n\n\
             | target | upstream requests per stampede | leader's first byte ms | followers' \
             first byte, median ms | followers', max ms | last byte, max ms | 200 with the \
             right bytes |\n|---|---|---|---|---|---|---|",
            reps,
            servers::RENDER_DELAY.as_millis(),
            servers::RENDER_CHUNKS,
            servers::RENDER_CHUNK_GAP.as_millis(),
        );
        let names = [Flavour::Cache.label(), "imgproxy-cache"];
        for (name, runs) in names.iter().zip(&runs) {
            let col = |f: fn(&Stampede) -> f64| {
                let v: Vec<f64> = runs.iter().map(f).collect();
                let (lo, hi) = min_max(&v);
                format!("{:.1} ({lo:.1}–{hi:.1})", median(&v))
            };
            let upstream: Vec<String> = runs.iter().map(|r| r.upstream.to_string()).collect();
            let intact: usize = runs.iter().map(|r| r.intact).sum();
            let _ = writeln!(
                self.report,
                "| {name} | {} | {} | {} | {} | {} | {intact}/{} |",
                upstream.join(", "),
                col(|r| r.leader_ms),
                col(|r| r.followers_ms),
                col(|r| r.followers_max_ms),
                col(|r| r.done_max_ms),
                runs.len() * STAMPEDE_CLIENTS,
            );
        }
        for (name, runs) in names.iter().zip(&runs) {
            let gaps: Vec<f64> = runs.iter().map(|r| r.followers_ms - r.leader_ms).collect();
            let gap = median(&gaps);
            let ups: Vec<u64> = runs.iter().map(|r| r.upstream).collect();
            let intact = runs.iter().all(|r| r.intact == STAMPEDE_CLIENTS);
            self.checks.push(Check {
                what: format!(
                    "stampede, {name}: upstream requests per stampede {ups:?} (target 1); \
                     followers' median first byte {gap:+.1} ms from the leader's (target within \
                     10 ms); every client 200 with the right bytes: {intact}"
                ),
                pass: ups.iter().all(|&n| n == 1) && gap.abs() <= 10.0 && intact,
            });
        }
    }

    /// Scenario: what a bucket lookup costs a true miss. Four proxies at once, each under its
    /// own paced wrk, every request a new key: bucket reads off, the bucket on loopback, 20 ms
    /// away, and failing (the breaker open). Paired per run against the proxy without reads.
    async fn lookup_cost(&mut self) {
        let secs = 3 * self.args.secs;
        let conditions: [(&str, servers::Front, Settings); 4] = [
            (
                "bucket reads off (`BUCKET_READS=false`)",
                self.s3.healthy.clone(),
                &[("BUCKET_READS", "false")],
            ),
            ("bucket on loopback", self.s3.healthy.clone(), &[]),
            ("bucket +20 ms per lookup", self.s3.slow_reads.clone(), &[]),
            (
                "breaker open (every lookup answered 503)",
                self.s3.failing_reads.clone(),
                &[],
            ),
        ];
        let _ = writeln!(
            self.report,
            "\n### Cost of a lookup on a true miss (50k bodies; {} × {secs} s runs, the four \
             conditions at once, each with {LOOKUP_CONNECTIONS} connections pausing \
             ~{LOOKUP_PAUSE_MS} ms between requests, every request a new key)\n\n\
             Uploads go to a healthy S3 in every condition; only the lookups differ. p50 and \
             p99: all runs' requests together. Added: each run's p50 (p99) minus the p50 (p99) \
             of the proxy without bucket reads in the same run, median (min…max) over runs. \
             Lookups: what the bucket-read metric counted (found / missing / failed / skipped \
             by the open breaker).\n\n\
             | condition | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | lookups \
             f/m/x/s |\n|---|---|---|---|---|---|---|",
            self.args.reps,
        );
        let mut stats: [Stat; 4] = std::array::from_fn(|_| Stat { samples: vec![] });
        let mut reads = [BucketReads::default(); 4];
        let mut breaker = [0.0; 4];
        for rep in 0..self.args.reps {
            let order: Vec<usize> = (0..conditions.len())
                .map(|k| (k + rep) % conditions.len())
                .collect();
            let mut proxies = Vec::new();
            for &c in &order {
                let (_, front, settings) = &conditions[c];
                let settings: Vec<(&'static str, String)> = settings
                    .iter()
                    .map(|(k, v)| (*k, (*v).to_owned()))
                    .collect();
                proxies.push(self.proxy(&front.endpoint, &settings).await);
            }
            // Warm-up, alike for all: connections opened, and the failing bucket's breaker
            // opened (5 failures).
            for proxy in &proxies {
                let base = proxy.url(&format!("/50k/{}-warm-", self.next_run()));
                load::fire(20, 1, move |i| format!("{base}{i}")).await;
            }
            let before: Vec<BucketReads> = {
                let mut v = Vec::new();
                for proxy in &proxies {
                    v.push(BucketReads::of(proxy).await);
                }
                v
            };
            let ids: Vec<String> = order.iter().map(|_| self.next_run()).collect();
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
                                LOOKUP_CONNECTIONS,
                                secs,
                                load::Pace::PauseMs(LOOKUP_PAUSE_MS),
                            )
                        })
                    })
                    .collect();
                runs.into_iter()
                    .map(|run| run.join().expect("wrk ran"))
                    .collect()
            });
            for ((j, sample), &c) in samples.into_iter().enumerate().zip(&order) {
                let metrics = load_metrics(&proxies[j]).await;
                reads[c].add(&BucketReads::from_text(&metrics).since(&before[j]));
                breaker[c] = metric(&metrics, "imgproxy_cache_bucket_breaker_state");
                stats[c].samples.push(sample);
            }
            for proxy in proxies {
                proxy.stop();
            }
            self.s3.clear();
        }
        let paired = |f: fn(&Sample) -> f64, c: usize| -> Vec<f64> {
            let runs = stats[c].samples.iter().zip(&stats[0].samples);
            runs.map(|(s, off)| f(s) - f(off)).collect()
        };
        let cell = |v: &[f64]| {
            let (lo, hi) = min_max(v);
            format!("{:+.3} ({lo:+.3}…{hi:+.3})", median(v))
        };
        for (c, ((name, _, _), stat)) in conditions.iter().zip(&stats).enumerate() {
            let (p50, p99) = if c == 0 {
                ("—".to_owned(), "—".to_owned())
            } else {
                (
                    cell(&paired(|s| s.p50_ms, c)),
                    cell(&paired(|s| s.p99_ms, c)),
                )
            };
            let r = reads[c];
            let _ = writeln!(
                self.report,
                "| {name} | {} | {:.3} | {:.3} | {p50} | {p99} | {:.0}/{:.0}/{:.0}/{:.0} |",
                stat.cell(|s| s.rps, 0),
                stat.pooled_ms(0.50),
                stat.pooled_ms(0.99),
                r.found,
                r.missing,
                r.failed,
                r.skipped,
            );
        }
        let _ = writeln!(
            self.report,
            "\nThe failing bucket's breaker at the end of each run: {} (1 = open).",
            if breaker[3] == 1.0 {
                "open"
            } else {
                "not open"
            }
        );
        let loopback = median(&paired(|s| s.p50_ms, 1));
        let open = median(&paired(|s| s.p50_ms, 3));
        let far = median(&paired(|s| s.p50_ms, 2));
        self.checks.push(Check {
            what: format!(
                "lookup: added p50 of a miss {loopback:+.3} ms with the bucket on loopback, \
                 {far:+.3} ms 20 ms away (expected ≈ +20), {open:+.3} ms with the breaker open \
                 (target ≈ 0: within ±0.05 ms)"
            ),
            pass: open.abs() <= 0.05 && reads[3].skipped > 0.0,
        });
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
    /// caps (the upload queue's and the memory tier's, both set to the same size here).
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
            (
                "MEMORY_CACHE_MAX_BYTES",
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
             | answered 200 | queue byte cap | memory tier cap | peak RSS | results dropped |\n\
             |---|---|---|---|---|\n\
             | {ok}/{count} | {cap_mib} MiB | {cap_mib} MiB | {rss:.0} MiB | {drops:.0} |"
        );
        self.checks.push(Check {
            what: format!(
                "backlog: peak RSS {rss:.0} MiB ≤ queue cap {cap_mib} MiB + memory tier \
                 {cap_mib} MiB + 64 MiB; {drops:.0} drops counted"
            ),
            pass: rss <= (2 * cap_mib + 64) as f64 && ok == count,
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
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let loadavg: Vec<&str> = loadavg.split_whitespace().take(3).collect();
    let _ = writeln!(report, "\nLoad average at the end: {}.", loadavg.join(" "));
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

/// The proxy's bucket lookups by result (`imgproxy_cache_bucket_reads_total`).
#[derive(Debug, Clone, Copy, Default)]
struct BucketReads {
    found: f64,
    missing: f64,
    failed: f64,
    skipped: f64,
}

impl BucketReads {
    async fn of(proxy: &Proxy) -> BucketReads {
        BucketReads::from_text(&load_metrics(proxy).await)
    }

    fn from_text(text: &str) -> BucketReads {
        let count = |result: &str| {
            metric(
                text,
                &format!("imgproxy_cache_bucket_reads_total{{result=\"{result}\"}}"),
            )
        };
        BucketReads {
            found: count("found"),
            missing: count("missing"),
            failed: count("failed"),
            skipped: count("skipped"),
        }
    }

    fn since(&self, before: &BucketReads) -> BucketReads {
        BucketReads {
            found: self.found - before.found,
            missing: self.missing - before.missing,
            failed: self.failed - before.failed,
            skipped: self.skipped - before.skipped,
        }
    }

    /// Lookups the bucket answered (found or missing), in % of all lookups; 0 when there were
    /// none (the table shows "—", and a miss row that made none fails its check).
    fn answered_pct(&self) -> f64 {
        let answered = self.found + self.missing;
        let all = answered + self.failed + self.skipped;
        if all == 0.0 {
            0.0
        } else {
            answered * 100.0 / all
        }
    }

    fn add(&mut self, more: &BucketReads) {
        self.found += more.found;
        self.missing += more.missing;
        self.failed += more.failed;
        self.skipped += more.skipped;
    }
}

/// The proxy's lookups by where they were answered (`imgproxy_cache_lookups_total`).
struct Lookups {
    hit_memory: f64,
    hit_bucket: f64,
    miss: f64,
}

impl Lookups {
    async fn of(proxy: &Proxy) -> Lookups {
        let text = load_metrics(proxy).await;
        let count = |result: &str| {
            metric(
                &text,
                &format!("imgproxy_cache_lookups_total{{result=\"{result}\"}}"),
            )
        };
        Lookups {
            hit_memory: count("hit_memory"),
            hit_bucket: count("hit_bucket"),
            miss: count("miss"),
        }
    }

    fn since(&self, before: &Lookups) -> Lookups {
        Lookups {
            hit_memory: self.hit_memory - before.hit_memory,
            hit_bucket: self.hit_bucket - before.hit_bucket,
            miss: self.miss - before.miss,
        }
    }
}

/// One stampede, summed up.
struct Stampede {
    /// Requests the upstream received for it.
    upstream: u64,
    leader_ms: f64,
    /// The followers' median first byte.
    followers_ms: f64,
    followers_max_ms: f64,
    done_max_ms: f64,
    /// Clients answered 200 with the right bytes.
    intact: usize,
}

impl Stampede {
    /// The leader is the first client to get its first byte among those answered `MISS` (the
    /// first of all when none says so).
    fn of(mut arrivals: Vec<Arrival>, upstream: u64) -> Stampede {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        arrivals.sort_by_key(|a| a.first_byte);
        let leader = arrivals
            .iter()
            .position(|a| a.x_cache.starts_with("MISS"))
            .unwrap_or(0);
        let intact = arrivals
            .iter()
            .filter(|a| a.status == 200 && a.intact)
            .count();
        let done_max_ms = arrivals.iter().map(|a| ms(a.done)).fold(0.0, f64::max);
        let leader = arrivals.remove(leader);
        let followers: Vec<f64> = arrivals.iter().map(|a| ms(a.first_byte)).collect();
        Stampede {
            upstream,
            leader_ms: ms(leader.first_byte),
            followers_ms: if followers.is_empty() {
                0.0
            } else {
                median(&followers)
            },
            followers_max_ms: followers.iter().copied().fold(0.0, f64::max),
            done_max_ms,
            intact,
        }
    }
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
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let loadavg: Vec<&str> = loadavg.split_whitespace().take(3).collect();
    format!(
        "Run {} on {} × {cpu}, commit {}; load: wrk {}; {}; load average at the start {}.",
        run("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        run("nproc", &[]),
        run("git", &["rev-parse", "--short", "HEAD"]),
        run("sh", &["-c", "wrk -v 2>&1 | head -1 | cut -d' ' -f2"]),
        run("sh", &["-c", "nginx -v 2>&1 | cut -d' ' -f3"]),
        loadavg.join(" "),
    )
}

/// A grouped bar chart of the 50k throughput table, via gnuplot when it is installed.
fn draw_chart(out: &std::path::Path, rows: &str) {
    let data = out.join("proxy-bench.dat");
    std::fs::write(
        &data,
        format!("# conc direct nginx-default-buffers nginx-tuned imgproxy-cache\n{rows}"),
    )
    .expect("write chart data");
    let script = format!(
        "set terminal pngcairo size 800,450\nset output '{png}'\nset title 'Misses: requests/s, 50 KB bodies, every request a new key (higher is better)'\n\
         set style data histograms\nset style histogram clustered gap 1\nset style fill solid 0.8\n\
         set key top left\nset yrange [0:*]\nset grid ytics\n\
         plot '{dat}' using 2:xtic(1) title 'direct', '' using 3 title 'nginx, default buffers', \
         '' using 4 title 'nginx, tuned', '' using 5 title 'imgproxy-cache'\n",
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
