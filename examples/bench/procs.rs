//! The processes under test: the proxy binary and nginx, each started on its own loopback
//! port and stopped at the end of a measurement.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::load;

/// A free loopback port (the listener is closed again; the port is reused at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Polls `url` until it answers 200: start-up, not a measurement.
pub async fn wait_ready(url: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while load::status(url).await != Some(200) {
        assert!(
            Instant::now() < deadline,
            "{url} did not come up within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub struct Proxy {
    child: Child,
    pub port: u16,
}

impl Proxy {
    /// Starts the proxy binary with a clean environment plus `env`.
    pub async fn start(bin: &Path, env: &[(&str, String)]) -> Proxy {
        let port = free_port();
        let child = Command::new(bin)
            .env_clear()
            .env("IMGPROXY_BIND", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .env("HOME", "/nonexistent")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let proxy = Proxy { child, port };
        wait_ready(
            &proxy.url("/_imgproxy-cache/health"),
            Duration::from_secs(30),
        )
        .await;
        proxy
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Peak resident memory so far, in MiB (`VmHWM`).
    pub fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    }

    /// CPU seconds (user + system) the proxy has used so far, upload thread included.
    pub fn cpu_secs(&self) -> f64 {
        cpu_secs(self.child.id())
    }

    /// SIGTERM, then waits: the proxy drains its uploads before it exits.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

pub struct Nginx {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// nginx as people run it in front of imgproxy: `proxy_pass` with keep-alive upstream
    /// connections, two workers (one per core), no disk cache.
    pub async fn start(upstream: std::net::SocketAddr) -> Nginx {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let conf = format!(
            "worker_processes 2;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {dir};\n  proxy_temp_path {dir};\n\
               upstream up {{ server {upstream}; keepalive 128; }}\n\
               server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://up;\n\
                   proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n",
            dir = dir.path().display()
        );
        let conf_path: PathBuf = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let child = Command::new(nginx_bin())
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(dir.path())
            .arg("-g")
            .arg("daemon off;")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx (scripts/bench installs it)");
        let nginx = Nginx {
            child,
            port,
            _dir: dir,
        };
        wait_ready(
            &format!("http://127.0.0.1:{port}/health"),
            Duration::from_secs(10),
        )
        .await;
        nginx
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// CPU seconds nginx has used so far: the master and its workers.
    pub fn cpu_secs(&self) -> f64 {
        let master = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
            .unwrap_or_default();
        cpu_secs(master)
            + children
                .split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .map(cpu_secs)
                .sum::<f64>()
    }
}

/// User + system CPU seconds of a process, from `/proc/<pid>/stat` (0 if it is gone).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised name; utime and stime are fields 14 and 15.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0.0;
    };
    let ticks: f64 = rest
        .split(' ')
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<f64>().ok())
        .sum();
    // SAFETY: sysconf only reads a constant of the system.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / per_sec
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-QUIT")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn nginx_bin() -> &'static str {
    if Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}
