//! The servers the benchmark runs in its own process: an upstream that counts what reaches it
//! (fixed bodies, and a slow render that streams), and a real S3 server (s3s over memory,
//! SigV4) behind fronts that can delay or fail calls and count PUTs per key.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::memstore::MemStore;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use imgproxy_cache::body::BoxError;
use tokio::net::TcpListener;

pub const ACCESS_KEY: &str = "bench-access-key";
pub const SECRET_KEY: &str = "bench-secret-key";
pub const BUCKET: &str = "bench";

/// Serves `handler` on a fresh 127.0.0.1 port for the rest of the run, on the runtime it is
/// called on.
pub async fn serve<F, Fut, B>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("bound");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service_fn(handler))
                    .await;
            });
        }
    });
    addr
}

/// How long the slow render (`/slow/..`) thinks before its head, like imgproxy decoding and
/// resizing a photo.
pub const RENDER_DELAY: Duration = Duration::from_millis(300);
/// The slow render's body comes in this many chunks ...
pub const RENDER_CHUNKS: usize = 10;
/// ... this far apart: the body streams over about 100 ms.
pub const RENDER_CHUNK_GAP: Duration = Duration::from_millis(10);
/// The slow render's body length: 50 KB.
pub const RENDER_BYTES: usize = 50 * 1024;

/// The slow render's bytes: not one repeated byte, so a client that got a chunk twice or out of
/// order is caught.
pub fn render_body() -> Bytes {
    (0..RENDER_BYTES).map(|i| (i % 251) as u8).collect()
}

/// The suffix of a body kind whose answers say `no-store`: a true miss with nothing to upload.
pub const NO_STORE: &str = "-nostore";

/// The benchmark's upstream, standing in for imgproxy.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    /// Requests that reached it, `/health` not counted: what a cache in front saves.
    pub requests: Arc<AtomicU64>,
}

impl Upstream {
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

/// The same bytes for any path under `/50k/..`, `/500k/..`, `/1m/..`; `/slow/..` answers after
/// [`RENDER_DELAY`] and streams [`render_body`] in [`RENDER_CHUNKS`] chunks; `/health` answers
/// 200. Every answer may be stored for a year, but those under a kind ending in [`NO_STORE`]
/// (`/50k-nostore/..`): the same bodies, answered `Cache-Control: no-store`.
pub async fn upstream() -> Upstream {
    let bodies: Arc<HashMap<&'static str, Bytes>> = Arc::new(HashMap::from([
        ("50k", Bytes::from(vec![0x5a; 50 * 1024])),
        ("500k", Bytes::from(vec![0x5a; 500 * 1024])),
        ("1m", Bytes::from(vec![0x5a; 1024 * 1024])),
        ("slow", render_body()),
    ]));
    let requests = Arc::new(AtomicU64::new(0));
    let counter = requests.clone();
    let addr = serve(move |req: Request<Incoming>| {
        let (bodies, counter) = (bodies.clone(), counter.clone());
        async move {
            let kind = req.uri().path().split('/').nth(1).unwrap_or_default();
            if kind != "health" {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            let (kind, cache_control) = match kind.strip_suffix(NO_STORE) {
                Some(kind) => (kind, "no-store"),
                None => (kind, "max-age=31536000, public"),
            };
            let body = bodies
                .get(kind)
                .cloned()
                .unwrap_or_else(|| Bytes::from_static(b"ok"));
            let response = Response::builder()
                .header("content-type", "image/jpeg")
                .header("cache-control", cache_control)
                .header("content-length", body.len());
            let body = if kind == "slow" {
                tokio::time::sleep(RENDER_DELAY).await;
                slow_body(body)
            } else {
                Full::new(body).map_err(|n| match n {}).boxed()
            };
            Ok(response.body(body).expect("static response"))
        }
    })
    .await;
    Upstream { addr, requests }
}

/// `body` in [`RENDER_CHUNKS`] chunks, the first at once, the rest [`RENDER_CHUNK_GAP`] apart.
fn slow_body(body: Bytes) -> http_body_util::combinators::BoxBody<Bytes, Infallible> {
    let size = body.len().div_ceil(RENDER_CHUNKS);
    let chunks = futures_util::stream::unfold((body, true), move |(mut rest, first)| async move {
        if rest.is_empty() {
            return None;
        }
        if !first {
            tokio::time::sleep(RENDER_CHUNK_GAP).await;
        }
        let chunk = rest.split_to(size.min(rest.len()));
        Some((Ok::<_, Infallible>(Frame::data(chunk)), (rest, false)))
    });
    StreamBody::new(chunks).boxed()
}

/// Counts what reached the S3 server.
#[derive(Default)]
pub struct S3Stats {
    pub puts_by_key: Mutex<HashMap<String, u64>>,
    pub heads: AtomicU64,
    pub gets: AtomicU64,
}

impl S3Stats {
    pub fn reset(&self) {
        self.puts_by_key.lock().expect("not poisoned").clear();
        self.heads.store(0, Ordering::SeqCst);
        self.gets.store(0, Ordering::SeqCst);
    }

    /// (PUT requests, distinct keys PUT).
    pub fn puts(&self) -> (u64, u64) {
        let map = self.puts_by_key.lock().expect("not poisoned");
        (map.values().sum(), map.len() as u64)
    }
}

/// What a front does to the calls that pass through it.
#[derive(Debug, Clone)]
enum Trouble {
    None,
    /// Every call waits this long first.
    DelayAll(Duration),
    /// Every GET (a lookup) waits this long first; uploads pass as they are.
    DelayReads(Duration),
    /// Every GET is answered 503 at once, as by a bucket that is down for reads; uploads pass.
    FailReads,
    /// Every call is answered 503 at once while the switch is on: a bucket that goes down and
    /// comes back.
    Switched(Arc<AtomicBool>),
}

/// The S3 stand-in: one store behind several fronts.
pub struct S3 {
    pub healthy: Front,
    /// Waits [`SLOW_S3_DELAY`] before every call.
    pub slow: Front,
    /// Waits [`LOOKUP_DELAY`] before every GET: a bucket a region away, for lookups.
    pub slow_reads: Front,
    /// Answers every GET 503 at once: lookups fail (the breaker opens), uploads work.
    pub failing_reads: Front,
    /// Answers every call 503 while [`S3::down`] is set.
    #[allow(dead_code, reason = "the soak's; the benchmark does not use it")]
    pub switched: Front,
    /// The switch of the `switched` front.
    #[allow(dead_code, reason = "the soak's; the benchmark does not use it")]
    pub down: Arc<AtomicBool>,
    store: MemStore,
    /// The threads the stand-in runs on, for its CPU time.
    threads: [libc::pid_t; 2],
}

/// One way into the S3 stand-in, counting what reached it.
#[derive(Clone)]
pub struct Front {
    pub endpoint: String,
    pub stats: Arc<S3Stats>,
}

/// What the slow front adds to every S3 call.
pub const SLOW_S3_DELAY: Duration = Duration::from_millis(500);
/// What the slow-reads front adds to every GET: a bucket in another region.
pub const LOOKUP_DELAY: Duration = Duration::from_millis(20);

impl S3 {
    /// Forgets every stored object (between runs, so the map does not grow for the whole run).
    pub fn clear(&self) {
        self.store.clear();
    }

    /// Every stored object of the bench bucket: (key, body), in no order.
    #[allow(dead_code, reason = "the soak's; the benchmark does not use it")]
    pub fn objects(&self) -> Vec<(String, Bytes)> {
        self.store.objects(BUCKET)
    }

    /// CPU seconds the stand-in's two threads have used so far.
    pub fn cpu_secs(&self) -> f64 {
        self.threads
            .iter()
            .map(|tid| crate::procs::stat_cpu_secs(&format!("/proc/self/task/{tid}/stat")))
            .sum()
    }
}

/// Starts the S3 stand-in on two threads of its own.
///
/// In production the bucket is another machine: its work (SigV4 checks, hashing every body)
/// takes nothing from the cores the proxy and its upstream share. Here it must share them, so
/// uploads (PUT, HEAD) are served at idle CPU priority (`SCHED_IDLE`): they take only what the
/// others leave, and on the benchmark's runtime they would delay the upstream's answers
/// instead. Lookups (GET) cannot wait for an idle core: a proxy's miss waits for its lookup,
/// and a lookup starved for hundreds of ms would be a timeout, open the breaker and turn the
/// measured misses into misses without a lookup. So the fronts, and the GETs, run on a thread
/// at normal priority: the stand-in's CPU for a lookup is taken from the proxy's cores, which
/// counts against the proxy (the tables give that CPU per request).
pub fn s3() -> S3 {
    let (idle_tx, idle_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("s3-uploads".into())
        .spawn(move || {
            idle_priority();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a one-thread runtime");
            idle_tx
                .send((runtime.handle().clone(), gettid()))
                .expect("the bench waits for S3");
            runtime.block_on(std::future::pending::<()>())
        })
        .expect("spawn the S3 upload thread");
    let (uploads, uploads_tid) = idle_rx.recv().expect("the S3 upload thread starts");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("s3-fronts".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a one-thread runtime");
            runtime.block_on(async move {
                let store = MemStore::default();
                let mut builder = s3s::service::S3ServiceBuilder::new(store.clone());
                builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
                let service = builder.build();
                let at = |trouble| front(service.clone(), uploads.clone(), trouble);
                let down = Arc::new(AtomicBool::new(false));
                let s3 = S3 {
                    healthy: at(Trouble::None).await,
                    slow: at(Trouble::DelayAll(SLOW_S3_DELAY)).await,
                    slow_reads: at(Trouble::DelayReads(LOOKUP_DELAY)).await,
                    failing_reads: at(Trouble::FailReads).await,
                    switched: at(Trouble::Switched(down.clone())).await,
                    down,
                    store,
                    threads: [uploads_tid, gettid()],
                };
                tx.send(s3).expect("the bench waits for S3");
                std::future::pending::<()>().await
            })
        })
        .expect("spawn the S3 front thread");
    rx.recv().expect("the S3 front thread starts")
}

fn gettid() -> libc::pid_t {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

/// `SCHED_IDLE` for the calling thread: it runs only when no normal thread wants the core.
fn idle_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscall on the calling thread (pid 0) with a valid, initialised param.
    let result = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    assert_eq!(
        result,
        0,
        "SCHED_IDLE for the S3 stand-in: {}",
        std::io::Error::last_os_error()
    );
}

type S3Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

fn plain(status: u16, text: String) -> Response<S3Body> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(text)).map_err(|n| match n {}).boxed())
        .expect("static response")
}

/// Serves `service` on a port of its own with `trouble`: GETs on this thread, everything else
/// on the `uploads` runtime.
async fn front(
    service: s3s::service::S3Service,
    uploads: tokio::runtime::Handle,
    trouble: Trouble,
) -> Front {
    let stats = Arc::new(S3Stats::default());
    let st = stats.clone();
    let addr = serve(move |req: Request<Incoming>| {
        let (service, uploads, st) = (service.clone(), uploads.clone(), st.clone());
        let trouble = trouble.clone();
        async move {
            let read = req.method() == http::Method::GET;
            match (trouble, read) {
                (Trouble::DelayAll(delay), _) | (Trouble::DelayReads(delay), true) => {
                    tokio::time::sleep(delay).await;
                }
                (Trouble::Switched(down), _) if down.load(Ordering::SeqCst) => {
                    return Ok(plain(503, "<Error><Code>SlowDown</Code></Error>".into()));
                }
                (Trouble::FailReads, true) => {
                    st.gets.fetch_add(1, Ordering::SeqCst);
                    return Ok(plain(
                        503,
                        "<Error><Code>ServiceUnavailable</Code></Error>".into(),
                    ));
                }
                _ => {}
            }
            match *req.method() {
                http::Method::PUT => {
                    let key = req.uri().path().to_owned();
                    *st.puts_by_key
                        .lock()
                        .expect("not poisoned")
                        .entry(key)
                        .or_default() += 1;
                }
                http::Method::HEAD => {
                    st.heads.fetch_add(1, Ordering::SeqCst);
                }
                http::Method::GET => {
                    st.gets.fetch_add(1, Ordering::SeqCst);
                }
                _ => {}
            }
            let req = req.map(s3s::Body::from);
            let answered = if read {
                service.call(req).await
            } else {
                let call = uploads.spawn(async move { service.call(req).await });
                match call.await {
                    Ok(answered) => answered,
                    Err(e) => return Ok(plain(500, format!("the upload thread: {e}"))),
                }
            };
            let response = match answered {
                Ok(response) => {
                    response.map(|b| b.map_err(|e| -> BoxError { e.to_string().into() }).boxed())
                }
                Err(e) => plain(500, format!("{e:?}")),
            };
            Ok(response)
        }
    })
    .await;
    Front {
        endpoint: format!("http://{addr}"),
        stats,
    }
}
