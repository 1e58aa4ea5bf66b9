//! The servers the benchmark runs in its own process: a fixed-body upstream, and a real S3
//! server (s3s over memory, SigV4) behind a front that can delay every call and counts PUTs per key.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::memstore::MemStore;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use imgproxy_cache::body::BoxError;
use tokio::net::TcpListener;

pub const ACCESS_KEY: &str = "bench-access-key";
pub const SECRET_KEY: &str = "bench-secret-key";
pub const BUCKET: &str = "bench";

/// Serves `handler` on a fresh 127.0.0.1 port for the rest of the run.
async fn serve<F, Fut, B>(handler: F) -> SocketAddr
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

/// The same bytes for any path: `/50k/..`, `/500k/..`, `/1m/..`; `/health` answers 200.
pub async fn upstream() -> SocketAddr {
    let bodies: Arc<HashMap<&'static str, Bytes>> = Arc::new(HashMap::from([
        ("50k", Bytes::from(vec![0x5a; 50 * 1024])),
        ("500k", Bytes::from(vec![0x5a; 500 * 1024])),
        ("1m", Bytes::from(vec![0x5a; 1024 * 1024])),
    ]));
    serve(move |req: Request<Incoming>| {
        let bodies = bodies.clone();
        async move {
            let kind = req.uri().path().split('/').nth(1).unwrap_or_default();
            let body = bodies
                .get(kind)
                .cloned()
                .unwrap_or_else(|| Bytes::from_static(b"ok"));
            Ok(Response::builder()
                .header("content-type", "image/jpeg")
                .header("cache-control", "max-age=31536000, public")
                .body(Full::new(body))
                .expect("static response"))
        }
    })
    .await
}

/// Counts what reached the S3 server.
#[derive(Default)]
pub struct S3Stats {
    pub puts_by_key: Mutex<HashMap<String, u64>>,
    pub heads: AtomicU64,
}

impl S3Stats {
    pub fn reset(&self) {
        self.puts_by_key.lock().expect("not poisoned").clear();
        self.heads.store(0, Ordering::SeqCst);
    }

    /// (PUT requests, distinct keys PUT).
    pub fn puts(&self) -> (u64, u64) {
        let map = self.puts_by_key.lock().expect("not poisoned");
        (map.values().sum(), map.len() as u64)
    }
}

/// The S3 stand-in: one store behind two fronts, a healthy one and a slow one.
pub struct S3 {
    pub healthy: Front,
    /// Waits [`SLOW_S3_DELAY`] before every call.
    pub slow: Front,
    store: MemStore,
}

/// One way into the S3 stand-in, counting what reached it.
#[derive(Clone)]
pub struct Front {
    pub endpoint: String,
    pub stats: Arc<S3Stats>,
}

/// What the slow front adds to every S3 call.
pub const SLOW_S3_DELAY: Duration = Duration::from_millis(500);

impl S3 {
    /// Forgets every stored object (between runs, so the map does not grow for the whole run).
    pub fn clear(&self) {
        self.store.clear();
    }
}

/// Starts the S3 stand-in on a thread of its own at idle CPU priority (`SCHED_IDLE`). In
/// production the bucket is another machine: its work (SigV4 checks, hashing every body) takes
/// nothing from the cores the proxy and its upstream share. Here it must share them, so it takes
/// only what they leave; on the benchmark's runtime it would delay the upstream's answers instead.
pub fn s3() -> S3 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("s3-stand-in".into())
        .spawn(move || {
            idle_priority();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a one-thread runtime");
            runtime.block_on(async move {
                let store = MemStore::default();
                let mut builder = s3s::service::S3ServiceBuilder::new(store.clone());
                builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
                let service = builder.build();
                let s3 = S3 {
                    healthy: front(service.clone(), Duration::ZERO).await,
                    slow: front(service, SLOW_S3_DELAY).await,
                    store,
                };
                tx.send(s3).expect("the bench waits for S3");
                std::future::pending::<()>().await
            })
        })
        .expect("spawn the S3 thread");
    rx.recv().expect("the S3 thread starts")
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

/// Serves `service` on a port of its own, waiting `delay` before every call.
async fn front(service: s3s::service::S3Service, delay: Duration) -> Front {
    let stats = Arc::new(S3Stats::default());
    let st = stats.clone();
    let addr = serve(move |req: Request<Incoming>| {
        let (service, st) = (service.clone(), st.clone());
        async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
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
                _ => {}
            }
            let response = match service.call(req.map(s3s::Body::from)).await {
                Ok(response) => {
                    response.map(|b| b.map_err(|e| -> BoxError { e.to_string().into() }).boxed())
                }
                Err(e) => Response::builder()
                    .status(500)
                    .body(
                        Full::new(Bytes::from(format!("{e:?}")))
                            .map_err(|n| match n {})
                            .boxed(),
                    )
                    .expect("static response"),
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
