//! Headless Chromium through chromedriver's WebDriver protocol (plain JSON over HTTP on
//! loopback): headless, with background networking, updates, sync and QUIC off, and a fresh
//! profile per session.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

pub struct Driver {
    child: Child,
    base: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

pub struct Session<'a> {
    driver: &'a Driver,
    id: String,
    _profile: tempfile::TempDir,
}

impl Driver {
    pub async fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver (scripts/setup installs chromium-driver)");
        let driver = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: Client::builder(TokioExecutor::new()).build_http(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while driver.call("GET", "/status", None).await.is_none() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        driver
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Option<Value> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = self.http.request(request).await.ok()?;
        let bytes = response.into_body().collect().await.ok()?.to_bytes();
        let value: Value = serde_json::from_slice(&bytes).ok()?;
        Some(value["value"].clone())
    }

    /// A new browser with an empty profile: no cache, no cookies.
    pub async fn session(&self) -> Session<'_> {
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}
        }}});
        let value = self
            .call("POST", "/session", Some(caps))
            .await
            .expect("a session");
        let id = value["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {value}"))
            .to_owned();
        Session {
            driver: self,
            id,
            _profile: profile,
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Session<'_> {
    pub async fn goto(&self, url: &str) {
        self.driver
            .call(
                "POST",
                &format!("/session/{}/url", self.id),
                Some(json!({ "url": url })),
            )
            .await
            .expect("navigate");
    }

    /// Runs `script` (a function body that `return`s) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        self.driver
            .call(
                "POST",
                &format!("/session/{}/execute/sync", self.id),
                Some(json!({ "script": script, "args": [] })),
            )
            .await
            .expect("execute script")
    }

    /// Polls `condition` (a script returning true/false) until true or `within` has passed.
    pub async fn wait_for(&self, condition: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while self.eval(condition).await != Value::Bool(true) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for: {condition}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn close(self) {
        self.driver
            .call("DELETE", &format!("/session/{}", self.id), None)
            .await;
    }
}
