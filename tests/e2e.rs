//! The shipped setup end to end: docker/entrypoint runs the real supervisord with the shipped
//! supervisord.conf (paths and ports from the environment), which runs the bundled worker and
//! the proxy; results land in a real SeaweedFS bucket and are read back anonymously over plain
//! HTTP, as a browser would.
// Tests of the bundled worker, or of the binary running it.
#![cfg(feature = "worker")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use common::seaweed::{self, Seaweed};
use common::*;
use http::StatusCode;
use tokio::net::{TcpListener, TcpStream};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The container's process tree, started as the Dockerfile starts it.
struct Stack {
    child: Child,
    bind: String,
    run_dir: tempfile::TempDir,
}

impl Stack {
    async fn start(s3_endpoint: &str, images: &Path) -> Stack {
        let run_dir = tempfile::tempdir().unwrap();
        let bind = format!("127.0.0.1:{}", free_port());
        let path = format!(
            "{}:{}",
            repo(".venv/bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let child = Command::new(repo("docker/entrypoint"))
            .env_clear()
            .env("PATH", path)
            .env("HOME", run_dir.path())
            .env("IMGPROXY_CACHE_BIN", env!("CARGO_BIN_EXE_imgproxy-cache"))
            .env("IMGPROXY_CACHE_SUPERVISOR_CONF", repo("supervisord.conf"))
            .env(
                "IMGPROXY_CACHE_EXIT_LISTENER",
                repo("docker/exit-listener.py"),
            )
            .env("IMGPROXY_CACHE_RUN_DIR", run_dir.path())
            .env(
                "IMGPROXY_CACHE_WORKER_BIND",
                format!("127.0.0.1:{}", free_port()),
            )
            .env("IMGPROXY_BIND", &bind)
            .env("IMGPROXY_LOCAL_FILESYSTEM_ROOT", images)
            .env("S3_BUCKET", seaweed::BUCKET)
            .env("S3_ENDPOINT", s3_endpoint)
            .env("S3_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", seaweed::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", seaweed::SECRET_KEY)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("SHUTDOWN_TIMEOUT_SECS", "20")
            .spawn()
            .expect("run docker/entrypoint");
        let stack = Stack {
            child,
            bind,
            run_dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((StatusCode::OK, _)) = try_get(&stack.url("/_imgproxy-cache/health")).await {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the stack did not become healthy"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stack
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.bind)
    }

    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status();
        assert!(ok.is_ok_and(|s| s.success()));
    }

    /// The worker's pid, as supervisord knows it.
    fn worker_pid(&self) -> u32 {
        // As an operator would: the shipped config, whose socket path comes from the environment.
        let out = Command::new(repo(".venv/bin/supervisorctl"))
            .arg("-c")
            .arg(repo("supervisord.conf"))
            .env("IMGPROXY_CACHE_RUN_DIR", self.run_dir.path())
            .args(["pid", "worker"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim().parse().unwrap_or_else(|_| {
            panic!(
                "no worker pid: {text:?} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    async fn wait(mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the stack did not stop");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Stack {
    /// A failed assertion must not leave supervisord and its children running.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string())
                .status();
            let _ = self.child.wait();
        }
    }
}

/// A TCP front that holds every new connection for `delay` before passing it on: S3 calls
/// through it are still pending when the test sends SIGTERM.
async fn slow_front(target: String, delay: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let target = target.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if let Ok(mut outbound) = TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread")]
async fn supervised_proxy_and_worker_store_results_and_stop_together() {
    let weed = Seaweed::start().await;
    let images = tempfile::tempdir().unwrap();
    for name in ["a.png", "b.png", "c.png"] {
        std::fs::write(
            images.path().join(name),
            include_bytes!("fixtures/gradient.png"),
        )
        .unwrap();
    }
    let paths = [
        (
            "/insecure/rs:fit:24:24/plain/local:///a.png@png",
            "image/png",
        ),
        (
            "/insecure/rs:fill:16:16/plain/local:///b.png@jpg",
            "image/jpeg",
        ),
        ("/insecure/w:20/plain/local:///c.png@webp", "image/webp"),
    ];

    // Several images through the proxy; S3 answers slowly, so uploads are still pending when
    // SIGTERM comes, and the drain must finish them.
    let weed_addr = weed.endpoint.trim_start_matches("http://").to_owned();
    let slow_s3 = slow_front(weed_addr, Duration::from_millis(1500)).await;
    let stack = Stack::start(&slow_s3, images.path()).await;
    let mut served = Vec::new();
    for (path, content_type) in paths {
        let (status, headers, body) = get(&stack.url(path)).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{path}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(headers["content-type"], content_type, "{path}");
        served.push((path, content_type, body));
    }
    stack.signal("TERM");
    assert!(
        stack.wait().await.success(),
        "a SIGTERM stop is a clean stop"
    );
    for (path, content_type, body) in &served {
        // Anonymous, plain HTTP: what a browser does with the cached URL.
        let (status, headers, stored) = get(&weed.public_url(&key(path))).await;
        assert_eq!(status, StatusCode::OK, "{path} was not stored");
        assert_eq!(
            &stored, body,
            "{path}: stored bytes differ from the response"
        );
        assert_eq!(headers["content-type"], *content_type);
    }

    // When the worker dies, supervisord stops everything and the container exits non-zero.
    let stack = Stack::start(&weed.endpoint, images.path()).await;
    let pid = stack.worker_pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = stack.wait().await;
    assert_eq!(status.code(), Some(1), "{status:?}");
}
