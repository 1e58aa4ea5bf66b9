//! The worker started through its real `run_with` on 127.0.0.1:0, and a loopback source server
//! for the limit tests: fixed bodies by path, plus bodies that stop before their last byte
//! until the test opens a gate.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::channel::Channel;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use imgproxy_cache::body::{Body, BoxError};
use imgproxy_cache::settings::FromVars;
use imgproxy_cache::worker::config::WorkerConfig;
use imgproxy_cache::worker::fetch::Fetcher;
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

/// A worker on 127.0.0.1:0.
pub struct Worker {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// A worker config from `vars`, with a short graceful stop; loopback sources stay refused, as
/// by default.
pub fn worker_config(vars: &[(&str, &str)]) -> WorkerConfig {
    let mut all = vec![("IMGPROXY_GRACEFUL_STOP_TIMEOUT", "5")];
    all.extend_from_slice(vars);
    WorkerConfig::from_vars(all.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
}

/// [`worker_config`] in which a loopback source server may be downloaded from.
pub fn loopback_ok(vars: &[(&str, &str)]) -> WorkerConfig {
    let mut all = vec![("IMGPROXY_ALLOW_LOOPBACK_SOURCE_ADDRESSES", "true")];
    all.extend_from_slice(vars);
    worker_config(&all)
}

impl Worker {
    pub async fn start(config: WorkerConfig) -> Worker {
        let fetcher = Fetcher::new(&config.fetch, None);
        Worker::start_with(config, fetcher).await
    }

    pub async fn start_with(config: WorkerConfig, fetcher: Fetcher) -> Worker {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(imgproxy_cache::worker::server::run_with(
            listener,
            config,
            fetcher,
            async {
                let _ = stopped.await;
            },
        ));
        Worker {
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// `http://<worker><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `http://<worker>/unsafe/<options>/plain/<source>` (no options segment when empty).
    pub fn plain_url(&self, options: &str, source: &str) -> String {
        let options = if options.is_empty() {
            String::new()
        } else {
            format!("{options}/")
        };
        self.url(&format!("/unsafe/{options}plain/{source}"))
    }

    /// `GET` [`Worker::plain_url`].
    pub async fn get_plain(&self, options: &str, source: &str) -> (StatusCode, HeaderMap, Bytes) {
        super::get(&self.plain_url(options, source)).await
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the worker stops within its graceful stop timeout")
            .unwrap();
    }
}

/// A body that stops before its last byte until [`Sources::open_gate`].
struct Held {
    len: usize,
}

/// Serves `/<name>` from fixed bodies, and `/held/<name>` as a gated body with a
/// `Content-Length`.
pub struct Sources {
    pub addr: SocketAddr,
    gate: Arc<Notify>,
    /// Notified once a held body has been handed over up to its last byte.
    almost_sent: Arc<Notify>,
    requests: Arc<AtomicUsize>,
}

const CHUNK: usize = 64 * 1024;

impl Sources {
    /// `bodies` by name; `held` names bodies of that many zero bytes served gated.
    pub async fn start(bodies: Vec<(&str, Bytes)>, held: Vec<(&str, usize)>) -> Sources {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies: Arc<HashMap<String, Bytes>> = Arc::new(
            bodies
                .into_iter()
                .map(|(name, body)| (format!("/{name}"), body))
                .collect(),
        );
        let held: Arc<HashMap<String, Held>> = Arc::new(
            held.into_iter()
                .map(|(name, len)| (format!("/held/{name}"), Held { len }))
                .collect(),
        );
        let sources = Sources {
            addr,
            gate: Arc::default(),
            almost_sent: Arc::default(),
            requests: Arc::default(),
        };
        let (gate, almost_sent, requests) = (
            sources.gate.clone(),
            sources.almost_sent.clone(),
            sources.requests.clone(),
        );
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (bodies, held) = (bodies.clone(), held.clone());
                let (gate, almost_sent, requests) =
                    (gate.clone(), almost_sent.clone(), requests.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        requests.fetch_add(1, Ordering::SeqCst);
                        let path = req.uri().path().to_owned();
                        let response = if let Some(body) = bodies.get(&path) {
                            Response::new(Full::new(body.clone()).map_err(|n| match n {}).boxed())
                        } else if let Some(Held { len }) = held.get(&path) {
                            held_body(*len, gate.clone(), almost_sent.clone())
                        } else {
                            let mut r: Response<Body> = Response::new(
                                Full::new(Bytes::new()).map_err(|n| match n {}).boxed(),
                            );
                            *r.status_mut() = http::StatusCode::NOT_FOUND;
                            r
                        };
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        sources
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    /// Waits until a held body has been handed to its connection up to its last byte.
    pub async fn almost_sent(&self) {
        self.almost_sent.notified().await;
    }

    /// Lets every held body started so far send its last byte.
    pub fn open_gate(&self) {
        self.gate.notify_waiters();
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn held_body(len: usize, gate: Arc<Notify>, almost_sent: Arc<Notify>) -> Response<Body> {
    let (mut tx, body) = Channel::<Bytes, BoxError>::new(1);
    tokio::spawn(async move {
        let opened = gate.notified();
        tokio::pin!(opened);
        opened.as_mut().enable();
        let mut left = len - 1;
        while left > 0 {
            let n = left.min(CHUNK);
            if tx.send_data(Bytes::from(vec![0u8; n])).await.is_err() {
                return;
            }
            left -= n;
        }
        almost_sent.notify_one();
        opened.await;
        let _ = tx.send_data(Bytes::from_static(b"\0")).await;
    });
    Response::builder()
        .header("content-length", len)
        .body(body.boxed())
        .unwrap()
}

/// A 48×32 PNG gradient.
pub fn still_png() -> Bytes {
    let image = image::RgbImage::from_fn(48, 32, |x, y| {
        image::Rgb([(x * 5) as u8, (y * 7) as u8, 90])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner().into()
}

/// A 24×16 GIF of two frames: what AVIF is never chosen for.
pub fn animated_gif() -> Bytes {
    let mut out = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new(&mut out);
        for colour in [[255, 0, 0], [0, 0, 255]] {
            let frame = image::RgbaImage::from_pixel(
                24,
                16,
                image::Rgba([colour[0], colour[1], colour[2], 255]),
            );
            let delay = image::Delay::from_numer_denom_ms(100, 1);
            encoder
                .encode_frame(image::Frame::from_parts(frame, 0, 0, delay))
                .unwrap();
        }
    }
    out.into()
}
