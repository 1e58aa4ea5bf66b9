//! SeaweedFS in its one-process `mini` mode, for the tests that need what s3s-fs lacks: anonymous public reads
//! for the browser. Started bound to loopback only (`-ip`, `-ip.bind`) with telemetry off. `mini`
//! opens fixed ports besides the S3 one, so the tests of one binary take turns: each holds
//! the instance it started, and the next one starts when it is gone.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, OwnedMutexGuard};

pub const BUCKET: &str = "public";
pub const ACCESS_KEY: &str = "weed-access-key";
pub const SECRET_KEY: &str = "weed-secret-key";

pub struct Seaweed {
    child: Child,
    pub endpoint: String,
    _dir: tempfile::TempDir,
    /// This binary's turn, released once the child is gone.
    _turn: OwnedMutexGuard<()>,
}

/// Whose turn it is to run SeaweedFS in this test binary.
static TURN: LazyLock<Arc<Mutex<()>>> = LazyLock::new(Arc::default);

fn weed_bin() -> PathBuf {
    let bin = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/weed"));
    assert!(
        bin.exists(),
        "{} is missing: run scripts/setup",
        bin.display()
    );
    bin
}

impl Seaweed {
    /// Starts SeaweedFS (`mini`, loopback only, telemetry off) with bucket [`BUCKET`] readable by anyone, and waits until its S3 API
    /// answers.
    pub async fn start() -> Seaweed {
        let turn = TURN.clone().lock_owned().await;
        let dir = tempfile::tempdir().unwrap();
        let config = serde_json::json!({
            "identities": [
                {
                    "name": "admin",
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]
                },
                {"name": "anonymous", "actions": [format!("Read:{BUCKET}")]}
            ]
        });
        let config_path = dir.path().join("s3.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(weed_bin())
            .arg("mini")
            .arg(format!("-dir={}", data.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-s3.port={port}"))
            .arg(format!("-s3.config={}", config_path.display()))
            .arg("-master.telemetry=false")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start SeaweedFS (scripts/setup installs it)");
        let weed = Seaweed {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            _dir: dir,
            _turn: turn,
        };
        let client = weed.client();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if client.list_buckets().send().await.is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "SeaweedFS did not start within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The first bucket creation can race the filer's start; retry briefly.
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(e) = client.create_bucket().bucket(BUCKET).send().await {
            assert!(Instant::now() < deadline, "cannot create the bucket: {e:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        weed
    }

    pub fn client(&self) -> aws_sdk_s3::Client {
        super::client_with(&self.endpoint, ACCESS_KEY, SECRET_KEY)
    }

    /// The anonymous URL of an object: what a browser loads.
    pub fn public_url(&self, key: &str) -> String {
        format!("{}/{BUCKET}/{key}", self.endpoint)
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
