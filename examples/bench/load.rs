//! Load: wrk for throughput and latency (a C load generator outside our process), a small
//! fixed-count client for the scenarios that count effects rather than time, and the stampede:
//! many clients asking for one key at the same instant.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// One wrk run.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Requests answered in the run.
    pub requests: f64,
    /// CPU time the server under test used per request, in µs (0 when not measured).
    pub cpu_us: f64,
    /// Share of the answered requests whose result reached S3 during the run, in %
    /// (0 when not measured).
    pub stored_pct: f64,
    /// Share of the answered requests whose lookup the bucket answered (found or missing), in %
    /// (0 when not measured): below 100 means lookups failed or were skipped.
    pub looked_up_pct: f64,
    /// CPU time the S3 stand-in used per request, in µs (0 when not measured).
    pub s3_cpu_us: f64,
    /// Every latency wrk recorded: (µs, how many requests took that long), by value.
    pub latency_us: Vec<(u64, u64)>,
}

/// Every request of a wrk run gets its own path — `/<size>/<run>-<thread>-<n>` — so every
/// request through the proxy is a new key and a new upload.
const UNIQUE_PATHS: &str = r#"
local threads = 0
function setup(thread) threads = threads + 1; thread:set("tid", threads) end
function init(args) prefix = args[1] .. args[2] .. "-" .. tid .. "-"; n = 0 end
function request() n = n + 1; return wrk.format(nil, prefix .. n) end
"#;

/// Every request a new imgproxy URL of the same render: `args[1]` (the signature and options,
/// ending in `cb:`, imgproxy's cache buster), then a unique value, then `args[3]` (the source).
const RENDER_PATHS: &str = r#"
local threads = 0
function setup(thread) threads = threads + 1; thread:set("tid", threads) end
function init(args) prefix = args[1] .. args[2] .. "-" .. tid .. "-"; source = args[3]; n = 0 end
function request() n = n + 1; return wrk.format(nil, prefix .. n .. source) end
"#;

/// Requests cycle over a fixed set of keys — `/<size>/<run>-<i>` for `i` below `args[3]` — each
/// wrk thread starting at its own place in the cycle, so that every key is asked for as often.
const CYCLED_PATHS: &str = r#"
local threads = 0
function setup(thread) threads = threads + 1; thread:set("tid", threads) end
function init(args)
  prefix = args[1] .. args[2] .. "-"; keys = tonumber(args[3]); n = (tid * 7919) % keys
end
function request() n = (n + 1) % keys; return wrk.format(nil, prefix .. n) end
"#;

/// Prints every latency wrk recorded, so runs can be pooled: one `latency-us <µs> <count>` line
/// per distinct value.
const HISTOGRAM: &str = r#"
function done(summary, latency, requests)
  for i = 1, #latency do
    local us, count = latency(i)
    io.write(string.format("latency-us %d %d\n", us, count))
  end
end
"#;

/// Added to [`UNIQUE_PATHS`] for a paced run: each connection waits `args[3]` ms on average
/// (uniformly 0.5–1.5×, so connections do not fall into step) before each request. The
/// latency wrk reports starts when a request is sent, so the pause is not in it.
const PACED: &str = r#"
function delay() return pause * (0.5 + math.random()) end
local base_init = init
function init(args) base_init(args); pause = tonumber(args[3]); math.randomseed(tid) end
"#;

/// How hard a wrk run pushes.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// Each connection sends its next request as soon as the last one is answered: the
    /// machine is saturated and the result is its capacity.
    Flat,
    /// Each connection pauses about this many ms between requests: a steady load the
    /// machine can carry, where latency shows what the server does rather than how busy
    /// the CPU is.
    PauseMs(u64),
}

/// Runs wrk against `base` (scheme, host, port) for `secs` with `connections` connections,
/// every request a new path.
pub fn wrk(base: &str, size: &str, run_id: &str, connections: usize, secs: u64) -> Sample {
    wrk_paced(base, size, run_id, connections, secs, Pace::Flat)
}

/// [`wrk`] at a chosen pace.
pub fn wrk_paced(
    base: &str,
    size: &str,
    run_id: &str,
    connections: usize,
    secs: u64,
    pace: Pace,
) -> Sample {
    let (script, pause) = match pace {
        Pace::Flat => (format!("{UNIQUE_PATHS}{HISTOGRAM}"), 0),
        Pace::PauseMs(ms) => (format!("{UNIQUE_PATHS}{PACED}{HISTOGRAM}"), ms),
    };
    run_wrk(
        base,
        &script,
        &[&format!("/{size}/"), run_id, &pause.to_string()],
        run_id,
        connections,
        secs,
    )
}

/// wrk against an imgproxy-compatible server: every request `options` + a unique cache buster +
/// `source`, so every request is a new URL (a true miss for a cache) of the same render.
pub fn wrk_renders(
    base: &str,
    options: &str,
    source: &str,
    run_id: &str,
    connections: usize,
    secs: u64,
) -> Sample {
    let script = format!("{RENDER_PATHS}{HISTOGRAM}");
    let options = format!("{}/cb:", options.trim_end_matches('/'));
    run_wrk(
        base,
        &script,
        &[&options, run_id, source],
        run_id,
        connections,
        secs,
    )
}

/// wrk over the `keys` paths [`key_path`] names for `size` and `set`, cycled.
pub fn wrk_cycled(
    base: &str,
    size: &str,
    set: &str,
    keys: usize,
    connections: usize,
    secs: u64,
) -> Sample {
    let script = format!("{CYCLED_PATHS}{HISTOGRAM}");
    let args = [&format!("/{size}/"), set, &keys.to_string()];
    run_wrk(
        base,
        &script,
        &args,
        &format!("{set}-cycled"),
        connections,
        secs,
    )
}

/// The path of key `i` of a cycled set, as [`wrk_cycled`] asks for it.
pub fn key_path(size: &str, set: &str, i: usize) -> String {
    format!("/{size}/{set}-{i}")
}

fn run_wrk(
    base: &str,
    script: &str,
    script_args: &[&str],
    run_id: &str,
    connections: usize,
    secs: u64,
) -> Sample {
    // A file per run: runs may go at the same time.
    let script_path = std::env::temp_dir().join(format!(
        "imgproxy-cache-bench-{}-{run_id}.lua",
        std::process::id()
    ));
    std::fs::write(&script_path, script).expect("write wrk script");
    let threads = connections.clamp(1, 2);
    let out = Command::new("wrk")
        .args(["-t", &threads.to_string(), "-c", &connections.to_string()])
        .args(["-d", &format!("{secs}s"), "--latency", "-s"])
        .arg(&script_path)
        .arg(base)
        .arg("--")
        .args(script_args)
        .output()
        .expect("run wrk (scripts/bench installs it)");
    let _ = std::fs::remove_file(&script_path);
    let text = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&text).unwrap_or_else(|| panic!("unreadable wrk output:\n{text}"))
}

fn parse_wrk(text: &str) -> Option<Sample> {
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    let percentile = |p: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(p).map(str::trim))
            .and_then(duration_ms)
    };
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))?
        .0
        .trim()
        .parse()
        .ok()?;
    let latency_us = text
        .lines()
        .filter_map(|l| {
            let mut fields = l.strip_prefix("latency-us ")?.split(' ');
            Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
        })
        .collect();
    Some(Sample {
        latency_us,
        rps,
        p50_ms: percentile("50%")?,
        p99_ms: percentile("99%")?,
        requests,
        ..Sample::default()
    })
}

/// wrk's `1.23ms`, `456.00us`, `1.50s`.
fn duration_ms(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

/// The status of one GET, or `None` when nothing answered.
pub async fn status(url: &str) -> Option<u16> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = client.get(url.parse().ok()?).await.ok()?;
    let status = response.status().as_u16();
    response.into_body().collect().await.ok()?;
    Some(status)
}

/// The body of one GET as text, or `None` when nothing answered.
#[allow(dead_code, reason = "the soak's; the benchmark does not use it")]
pub async fn body(url: &str) -> Option<String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = client.get(url.parse().ok()?).await.ok()?;
    let body = response.into_body().collect().await.ok()?.to_bytes();
    String::from_utf8(body.to_vec()).ok()
}

/// Sends `total` GETs, `concurrency` at a time, to the URLs `url(i)` makes; returns how many
/// answered 200 with a whole body.
pub async fn fire(
    total: usize,
    concurrency: usize,
    url: impl Fn(usize) -> String + Send + Sync + 'static,
) -> usize {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let next = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let url = Arc::new(url);
    let workers = (0..concurrency).map(|_| {
        let (client, next, ok, url) = (client.clone(), next.clone(), ok.clone(), url.clone());
        tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= total {
                    return;
                }
                let Ok(uri) = url(i).parse() else { continue };
                if let Ok(response) = client.get(uri).await {
                    let good = response.status() == 200;
                    if response.into_body().collect().await.is_ok() && good {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        })
    });
    for worker in workers.collect::<Vec<_>>() {
        let _ = worker.await;
    }
    ok.load(Ordering::SeqCst)
}

/// What one client of a stampede saw, times from the moment all were let go.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub status: u16,
    /// The answer's `X-Cache`: who rendered (`MISS`) and who waited (nginx: `HIT`; ours:
    /// `COALESCED`).
    pub x_cache: String,
    /// Until the answer's first body byte.
    pub first_byte: Duration,
    /// Until its last.
    pub done: Duration,
    /// The body was `expected`, byte for byte.
    pub intact: bool,
}

/// `clients` clients, each on a connection of its own opened beforehand, send `GET path` to
/// `addr` at the same instant and read the whole answer.
pub async fn stampede(
    addr: SocketAddr,
    path: &str,
    clients: usize,
    expected: Bytes,
) -> Vec<Arrival> {
    let mut senders = Vec::with_capacity(clients);
    for _ in 0..clients {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect for the stampede");
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                .await
                .expect("HTTP/1 handshake");
        tokio::spawn(connection);
        senders.push(sender);
    }
    let (go, _) = tokio::sync::broadcast::channel::<Instant>(1);
    let runs: Vec<_> = senders
        .into_iter()
        .map(|mut sender| {
            let mut start = go.subscribe();
            let (path, expected) = (path.to_owned(), expected.clone());
            tokio::spawn(async move {
                let start = start.recv().await.expect("the stampede starts");
                let request = Request::get(path)
                    .header("host", addr.to_string())
                    .body(Empty::new())
                    .expect("valid request");
                let response = sender.send_request(request).await.expect("an answer");
                let status = response.status().as_u16();
                let x_cache = response
                    .headers()
                    .get("x-cache")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let mut body = response.into_body();
                let mut first_byte = None;
                let mut got = Vec::with_capacity(expected.len());
                while let Some(frame) = body.frame().await {
                    let Ok(data) = frame.expect("the body arrives").into_data() else {
                        continue;
                    };
                    if first_byte.is_none() && !data.is_empty() {
                        first_byte = Some(start.elapsed());
                    }
                    got.extend_from_slice(&data);
                }
                let done = start.elapsed();
                Arrival {
                    status,
                    x_cache,
                    first_byte: first_byte.unwrap_or(done),
                    done,
                    intact: got == expected,
                }
            })
        })
        .collect();
    // Every client subscribed above, so each gets the start even if its task has not run yet;
    // one that runs late counts the delay in its times, as a client would.
    let _ = go.send(Instant::now());
    let mut arrivals = Vec::with_capacity(clients);
    for run in runs {
        arrivals.push(run.await.expect("a stampede client"));
    }
    arrivals
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_wrk_output() {
        let out = "  Latency Distribution\n     50%  412.00us\n     75%  1.2ms\n     99%    3.50ms\n\
                   49383 requests in 5.00s, 2.36GB read\nRequests/sec:   9876.54\n\
                   latency-us 412 3\nlatency-us 3500 1\n";
        let s = super::parse_wrk(out).unwrap();
        assert_eq!((s.rps, s.p50_ms, s.p99_ms), (9876.54, 0.412, 3.5));
        assert_eq!(s.requests, 49383.0);
        assert_eq!(s.latency_us, vec![(412, 3), (3500, 1)]);
    }
}
