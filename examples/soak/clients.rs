//! The soak's clients, all at once until the end of the run, each checking what it got:
//!
//! - misses: a new key each time, 4 × 25/s;
//! - hits: keys fetched before, 4 × 25/s (memory, disk or bucket, or rendered again when
//!   evicted everywhere);
//! - a stampede every 2 s: 16 clients on connections of their own, let go at once on one new
//!   key that renders slowly;
//! - upstream errors, 10/s: half answered 500, half cut mid-body;
//! - 2 slow readers, back to back: a 4 KiB receive buffer, one body frame every 20 ms;
//! - a client that leaves after the first body frame, 5/s.
//!
//! A client whose answer is not what the upstream sent is a client error.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use imgproxy_cache::cache::key::cache_key;
use tokio::net::TcpSocket;

use crate::upstream::{ERROR_BODY, body_for};

/// Longest a client waits for a whole answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// At most this many client errors are kept for the report.
const ERRORS_KEPT: usize = 20;

/// What the clients saw, and which results the bucket must end up holding.
#[derive(Default)]
pub struct Tally {
    counts: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    errors: AtomicU64,
    first_errors: Mutex<Vec<String>>,
    /// Every path asked for, by key.
    asked: Mutex<HashMap<String, String>>,
    /// Paths whose storable answer a client received whole, by key.
    must_store: Mutex<HashMap<String, String>>,
    /// Paths received whole, for the hits.
    fetched: Mutex<Vec<String>>,
    next: AtomicU64,
}

impl Tally {
    /// A path no client asked for before.
    fn fresh(&self, kind: &str) -> String {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let path = format!("/{kind}/{n}");
        self.asked
            .lock()
            .expect("not poisoned")
            .insert(cache_key("", &path), path.clone());
        path
    }

    fn count(&self, kind: &'static str, outcome: &'static str) {
        *self
            .counts
            .lock()
            .expect("not poisoned")
            .entry((kind, outcome))
            .or_default() += 1;
    }

    fn received_whole(&self, kind: &'static str, path: &str) {
        self.count(kind, "ok");
        let new = self
            .must_store
            .lock()
            .expect("not poisoned")
            .insert(cache_key("", path), path.to_owned())
            .is_none();
        if new {
            let mut fetched = self.fetched.lock().expect("not poisoned");
            fetched.push(path.to_owned());
        }
    }

    fn error(&self, kind: &'static str, path: &str, what: impl std::fmt::Display) {
        self.count(kind, "client error");
        self.errors.fetch_add(1, Ordering::SeqCst);
        let mut kept = self.first_errors.lock().expect("not poisoned");
        if kept.len() < ERRORS_KEPT {
            kept.push(format!("{kind} {path}: {what}"));
        }
    }

    /// A path received whole before, picked by `n`.
    fn fetched(&self, n: u64) -> Option<String> {
        let fetched = self.fetched.lock().expect("not poisoned");
        let len = fetched.len() as u64;
        (len > 0).then(|| fetched[(n.wrapping_mul(2_654_435_761) % len) as usize].clone())
    }

    pub fn counts(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        self.counts.lock().expect("not poisoned").clone()
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::SeqCst)
    }

    pub fn first_errors(&self) -> Vec<String> {
        self.first_errors.lock().expect("not poisoned").clone()
    }

    pub fn asked(&self) -> HashMap<String, String> {
        self.asked.lock().expect("not poisoned").clone()
    }

    pub fn must_store(&self) -> HashMap<String, String> {
        self.must_store.lock().expect("not poisoned").clone()
    }
}

type Pool = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

/// Runs every kind of client until `until`.
pub async fn run(port: u16, tally: Arc<Tally>, until: Instant) {
    let pool: Pool = Client::builder(TokioExecutor::new()).build_http();
    let base = format!("http://127.0.0.1:{port}");
    let mut loops = Vec::new();
    let every = |per_sec: u64| Duration::from_millis(1000 / per_sec);
    for _ in 0..4 {
        let (p, b, t) = (pool.clone(), base.clone(), tally.clone());
        loops.push(tokio::spawn(paced(every(25), until, move |_| {
            let (pool, base, t) = (p.clone(), b.clone(), t.clone());
            async move {
                let path = t.fresh("img");
                whole(&pool, &base, "miss", &path, &t).await;
            }
        })));
        let (p, b, t) = (pool.clone(), base.clone(), tally.clone());
        loops.push(tokio::spawn(paced(every(25), until, move |n| {
            let (pool, base, t) = (p.clone(), b.clone(), t.clone());
            async move {
                if let Some(path) = t.fetched(n) {
                    whole(&pool, &base, "hit", &path, &t).await;
                }
            }
        })));
    }
    let t = tally.clone();
    loops.push(tokio::spawn(paced(
        Duration::from_secs(2),
        until,
        move |_| stampede(port, t.clone()),
    )));
    let (p, b, t) = (pool.clone(), base.clone(), tally.clone());
    loops.push(tokio::spawn(paced(every(10), until, move |n| {
        upstream_error(p.clone(), b.clone(), t.clone(), n)
    })));
    for _ in 0..2 {
        let t = tally.clone();
        loops.push(tokio::spawn(paced(Duration::ZERO, until, move |_| {
            slow_reader(port, t.clone(), false)
        })));
    }
    let t = tally.clone();
    loops.push(tokio::spawn(paced(every(5), until, move |_| {
        slow_reader(port, t.clone(), true)
    })));
    for l in loops {
        l.await.expect("a client loop does not panic");
    }
}

/// Calls `f(n)` for n = 0, 1, … every `every` (each call awaited before the next) until `until`.
async fn paced<F, Fut>(every: Duration, until: Instant, f: F)
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0;
    while Instant::now() < until {
        tick.tick().await;
        f(n).await;
        n += 1;
    }
}

/// GET `path`, expecting 200 and exactly the upstream's bytes.
async fn whole(pool: &Pool, base: &str, kind: &'static str, path: &str, t: &Tally) {
    let uri = format!("{base}{path}").parse().expect("a valid URI");
    let got = tokio::time::timeout(CLIENT_TIMEOUT, async {
        let response = pool.get(uri).await.map_err(|e| format!("request: {e}"))?;
        read_whole(response).await
    })
    .await;
    judge(t, kind, path, got);
}

/// A response's status and whole body.
async fn read_whole(
    response: hyper::Response<hyper::body::Incoming>,
) -> Result<(hyper::StatusCode, Bytes), String> {
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((status, body))
}

/// Tallies what a client that must get `path` whole got: the answer, or why there was none.
fn judge(
    t: &Tally,
    kind: &'static str,
    path: &str,
    got: Result<Result<(hyper::StatusCode, Bytes), String>, tokio::time::error::Elapsed>,
) {
    match got {
        Ok(Ok((status, body))) if status == 200 && body == body_for(path) => {
            t.received_whole(kind, path)
        }
        Ok(Ok((status, body))) => t.error(kind, path, format!("{status}, {} bytes", body.len())),
        Ok(Err(e)) => t.error(kind, path, e),
        Err(_) => t.error(kind, path, "timed out"),
    }
}

/// 16 clients on connections of their own, let go at once on one new slow key.
async fn stampede(port: u16, t: Arc<Tally>) {
    const CLIENTS: usize = 16;
    let path = t.fresh("slow");
    let go = Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (go, t, path) = (go.clone(), t.clone(), path.clone());
            tokio::spawn(async move {
                let got = tokio::time::timeout(CLIENT_TIMEOUT, async {
                    let mut sender = connect(port, None).await?;
                    go.wait().await;
                    let response = sender
                        .send_request(get(&path))
                        .await
                        .map_err(|e| format!("request: {e}"))?;
                    read_whole(response).await
                })
                .await;
                judge(&t, "stampede", &path, got);
            })
        })
        .collect();
    for c in clients {
        c.await.expect("a stampede client does not panic");
    }
}

/// An upstream 500 (the client must get it as sent) or a body cut mid-way (the client must see
/// the cut, not a clean end).
async fn upstream_error(pool: Pool, base: String, t: Arc<Tally>, n: u64) {
    let cut = n % 2 == 1;
    let kind = if cut { "cut" } else { "err" };
    let path = t.fresh(kind);
    let uri = format!("{base}{path}").parse().expect("a valid URI");
    let got = tokio::time::timeout(CLIENT_TIMEOUT, async {
        let response = pool.get(uri).await.map_err(|e| format!("request: {e}"))?;
        let status = response.status();
        let body = response.into_body().collect().await.map(|c| c.to_bytes());
        Ok::<_, String>((status, body))
    })
    .await;
    let kind = if cut {
        "upstream cuts the body"
    } else {
        "upstream 500"
    };
    match got {
        Ok(Ok((status, Ok(body)))) if !cut && status == 500 && body == ERROR_BODY => {
            t.count(kind, "passed on")
        }
        Ok(Ok((status, Err(_)))) if cut && status == 200 => t.count(kind, "passed on"),
        Ok(Ok((status, body))) => {
            let body = body.map(|b| b.len());
            t.error(kind, &path, format!("{status}, body {body:?}"))
        }
        Ok(Err(e)) => t.error(kind, &path, e),
        Err(_) => t.error(kind, &path, "timed out"),
    }
}

/// A client with a 4 KiB receive buffer that takes one body frame every 20 ms; when `leaves`,
/// it hangs up after the first frame.
async fn slow_reader(port: u16, t: Arc<Tally>, leaves: bool) {
    let kind = if leaves {
        "leaves mid-body"
    } else {
        "slow reader"
    };
    let path = t.fresh("img");
    let got = tokio::time::timeout(CLIENT_TIMEOUT, async {
        let mut sender = connect(port, Some(4096)).await?;
        let response = sender
            .send_request(get(&path))
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = response.status();
        let mut body = response.into_body();
        let mut received = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("body: {e}"))?;
            if let Some(data) = frame.data_ref() {
                received.extend_from_slice(data);
            }
            if leaves {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok::<_, String>(Some((status, received)))
    })
    .await;
    match got {
        Ok(Ok(None)) => t.count(kind, "left"),
        Ok(Ok(Some((status, body)))) if status == 200 && body == body_for(&path) => {
            t.received_whole(kind, &path)
        }
        Ok(Ok(Some((status, body)))) => {
            t.error(kind, &path, format!("{status}, {} bytes", body.len()))
        }
        Ok(Err(e)) => t.error(kind, &path, e),
        Err(_) => t.error(kind, &path, "timed out"),
    }
}

fn get(path: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(path)
        .header("host", "soak")
        .body(Empty::new())
        .expect("a valid request")
}

/// An HTTP/1 connection of its own, with a receive buffer of `recv_buffer` bytes when given.
async fn connect(
    port: u16,
    recv_buffer: Option<u32>,
) -> Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>, String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    if let Some(size) = recv_buffer {
        socket
            .set_recv_buffer_size(size)
            .map_err(|e| format!("SO_RCVBUF: {e}"))?;
    }
    let stream = socket
        .connect(([127, 0, 0, 1], port).into())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}
